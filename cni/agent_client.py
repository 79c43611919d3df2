"""Talking to the pywg node agent (cni/agent.py), and starting it when a node has no DaemonSet for it.

    python -m cni.agent_client [--socket PATH] [--json] status|list

prints the agent's status, or its attachments as a table (`--json`: the agent's reply as it came).
Exit status 0, EXIT_NOT_RUNNING when nothing serves the socket, 1 for any other failure.

`call` sends one request line and reads one reply line. `ensure_agent` starts
`python -m cni.agent --supervise` detached (its own session, stdin from /dev/null, stdout and stderr
to a 0600 log file, no inherited fds, CNI_* variables dropped) when the socket does not answer, and
waits until it does. Under Multus thick mode a process started this way still belongs to the
multus-daemon pod's cgroup and PID namespace and dies with it; there the agent belongs in a DaemonSet.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import cni
from cni.policy import DEFAULT_SOCKET, configured_state_dir
from pywg.config import InterfaceConfig

DEFAULT_TIMEOUT = 60.0  # an add may wait behind other adds
START_TIMEOUT = 20.0
PROBE_TIMEOUT = 2.0
MAX_REPLY = 1 << 20
EXIT_NOT_RUNNING = 3
CLI_TIMEOUT = 10.0


class AgentError(Exception):
    """The agent could not be reached or did not answer properly."""


class AgentNotRunning(AgentError):
    """Nothing serves the agent socket."""


def call(
    op: str,
    payload: dict[str, Any] | None = None,
    socket_path: str | os.PathLike[str] = DEFAULT_SOCKET,
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """Send `{"op": op, **payload}` and return the agent's reply (which says ok or not itself)."""
    path = Path(socket_path)
    request = json.dumps({**(payload or {}), "op": op}).encode() + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as error:
            raise AgentNotRunning(
                f"the pywg node agent is not running (nothing serves {path}: {error.strerror}); "
                "start it with `python -m cni.agent --supervise` or deploy its DaemonSet"
            ) from None
        except OSError as error:
            reason = error.strerror or error
            raise AgentError(f"cannot connect to the node agent at {path}: {reason}") from None
        check_peer(sock, path)
        try:
            sock.sendall(request)
            reply = _read_line(sock)
        except TimeoutError:
            raise AgentError(f"the node agent at {path} did not answer {op} within {timeout:g} s") from None
        except OSError as error:
            raise AgentError(f"talking to the node agent at {path}: {error.strerror or error}") from None
    try:
        answer = json.loads(reply)
    except ValueError:
        raise AgentError(f"the node agent at {path} answered {op} with something that is not JSON") from None
    if not isinstance(answer, dict) or "ok" not in answer:
        raise AgentError(f"the node agent at {path} answered {op} without an ok field")
    return answer


def check_peer(sock: socket.socket, path: Path) -> None:
    """The agent runs as root: a socket served by anyone else is not the agent (SO_PEERCRED)."""
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    if uid not in (0, os.getuid()):
        raise AgentError(f"{path} is served by uid {uid}, not by root: not talking to it")


class SocketLink:
    """How the plugin run by a runtime reaches the node agent: the operator's socket
    (cni/policy.py configured_socket), where it starts an agent when none answers."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path

    def call(
        self, op: str, payload: dict[str, Any], start: bool = True, parsed: InterfaceConfig | None = None
    ) -> dict[str, Any]:
        del parsed  # the agent parses what comes over its socket itself
        if start:
            ensure_agent(self.socket_path, configured_state_dir(self.socket_path))
        return call(op, payload, socket_path=self.socket_path)

    def config_turn(self, size: int) -> AbstractContextManager[None]:
        del size  # parsed in this process, and paced by the agent when it gets the add
        return contextlib.nullcontext()


def _read_line(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise AgentError("the node agent closed the connection without a reply")
        chunks.append(chunk)
        size += len(chunk)
        if b"\n" in chunk:
            return b"".join(chunks).split(b"\n", 1)[0]
        if size > MAX_REPLY:
            raise AgentError("the node agent's reply is too long")


def agent_running(socket_path: str | os.PathLike[str] = DEFAULT_SOCKET) -> bool:
    try:
        return bool(call("status", socket_path=socket_path, timeout=PROBE_TIMEOUT).get("ok"))
    except AgentError:
        return False


def ensure_agent(
    socket_path: str | os.PathLike[str] = DEFAULT_SOCKET,
    state_dir: str | os.PathLike[str] | None = None,
    log_path: str | os.PathLike[str] | None = None,
    timeout: float = START_TIMEOUT,
) -> int | None:
    """Make sure an agent answers on `socket_path`; start a supervised one if none does.

    Returns the pid of the supervisor it started, or None if an agent was already running. The
    state dir defaults to the socket's directory, the log to `<state dir>/agent.log`. Concurrent
    callers start one agent between them (a lock file next to the socket). Raises AgentError with
    the end of the log if the agent does not answer within `timeout` seconds.
    """
    path = Path(socket_path)
    if agent_running(path):
        return None
    state = Path(state_dir) if state_dir is not None else path.parent
    log = Path(log_path) if log_path is not None else state / "agent.log"
    for directory in {path.parent, state, log.parent}:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = os.open(path.parent / ".agent-start.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if agent_running(path):
            return None
        process = _start(path, state, log)
        deadline = time.monotonic() + timeout
        while not agent_running(path):
            status = process.poll()
            if status is not None:
                raise AgentError(f"the node agent exited with status {status}: {_log_tail(log)}")
            if time.monotonic() >= deadline:
                raise AgentError(f"the node agent did not answer within {timeout:g} s: {_log_tail(log)}")
            time.sleep(0.05)
        return process.pid
    finally:
        os.close(lock)


def _start(path: Path, state: Path, log: Path) -> subprocess.Popen[bytes]:
    root = str(Path(cni.__file__).resolve().parent.parent)  # so `-m cni.agent` works from any cwd
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o600)
        command = [sys.executable, "-m", "cni.agent", "--supervise"]
        command += ["--state-dir", str(state), "--socket", str(path)]
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            env=env,
            cwd="/",
            close_fds=True,
            start_new_session=True,
        )
    finally:
        os.close(fd)


def _log_tail(log: Path, lines: int = 5) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


# --- the command line --------------------------------------------------------------------------


def format_status(reply: dict[str, Any], socket_path: Path) -> str:
    parts = [f"{reply['tunnels']} userspace tunnel(s) running"]
    if reply.get("kernel_links"):
        parts.append(f"{reply['kernel_links']} kernel interface(s)")
    head = f"node agent pid {reply['pid']} on {socket_path}: {reply['attachments']} attachment(s)"
    return f"{head}; {', '.join(parts)}"


def format_list(attachments: list[dict[str, Any]]) -> str:
    """One row per attachment; the container ID cut to 12 characters, as crictl shows it."""
    if not attachments:
        return "no attachments"
    headers = ("NAME", "POD", "IFNAME", "MODE", "PORT", "RUNNING", "CONTAINER", "NETNS")
    rows = [
        (
            str(att["name"]),
            str(att["pod"] or "-"),
            str(att["ifname"]),
            str(att.get("mode", "userspace")),
            str(att["listen_port"] or "-"),
            "yes" if att["running"] else "no",
            str(att["container_id"])[:12],
            str(att["netns"]),
        )
        for att in attachments
    ]
    widths = [max(len(row[i]) for row in (headers, *rows)) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (headers, *rows)
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cni.agent_client", description="Ask the pywg node agent."
    )
    parser.add_argument(
        "command", choices=("status", "list"), help="status: the agent; list: its attachments"
    )
    parser.add_argument("--socket", type=Path, default=DEFAULT_SOCKET, help=f"default: {DEFAULT_SOCKET}")
    parser.add_argument("--json", action="store_true", help="print the agent's reply as JSON")
    args = parser.parse_args(argv)
    try:
        reply = call(args.command, socket_path=args.socket, timeout=CLI_TIMEOUT)
    except AgentNotRunning as error:
        print(f"agent_client: {error}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    except AgentError as error:
        print(f"agent_client: {error}", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        print(f"agent_client: the agent refused {args.command}: {reply.get('msg', reply)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(reply, indent=2))
    elif args.command == "status":
        print(format_status(reply, args.socket))
    else:
        print(format_list(reply["attachments"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
