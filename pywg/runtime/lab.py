"""Network namespaces made for a run and removed after it; the two-namespace lab of the demo.

A `Namespace` is one made for a run (`lo` up), with the processes started in it; `close` removes it
with everything still inside. `add_veth` joins two. The tests' hosts (tests/support/topology.py)
are Namespaces, and so are the two sides of a `Lab`, what `pywg demo` and the benchmarks build a
tunnel in: two fresh namespaces `<prefix>-<tag>-a` and `-b` joined by a veth pair (`veth0` on both
sides). Commands run with a time bound and an environment in which this checkout's pywg is
importable; keys reach pywg and wg only through 0600 files in a 0700 temporary directory; every
namespace, process, UAPI socket and state file made is recorded as it is made, so `Lab.cleanup`
removes exactly that, whatever state a run stopped in. Names carry a random tag: /var/run/wireguard
and /run/pywg are shared by every namespace of the machine.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pywg.core import encode_key, generate_private_key, public_key_for
from pywg.runtime.daemon import STATE_DIR

WG_SOCKET_DIR = Path("/var/run/wireguard")
NETNS_DIR = Path("/run/netns")
CHECKOUT = Path(__file__).resolve().parents[2]
# Upstream wireguard-go of 2025 (batching, UDP GSO/GRO, TUN offloads), built for tests and benchmarks
# into the shared material's bin/ (its README says from what); Debian's build predates all that.
UPSTREAM_WIREGUARD_GO = "wireguard-go-0.0.20250522"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class LabFailed(Exception):
    """A step failed: one line for the user."""


# --------------------------------------------------------------------------------------------
# commands


def child_env(extra: Mapping[str, str] | None = None, drop: Iterable[str] = ()) -> dict[str, str]:
    """Our environment, this checkout importable by `python -m pywg`, plus `extra`, less `drop`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(CHECKOUT), env.get("PYTHONPATH")) if p)
    env["LOG_LEVEL"] = "error"  # wireguard-go
    for name in drop:
        env.pop(name, None)
    env.update(extra or {})
    return env


def upstream_wireguard_go() -> Path:
    """Where upstream wireguard-go 2025 is: in $PYWG_SHARED_BIN, else bin/ of $PYWG_SHARED, else
    shared/bin beside the checkout (the same places the tests look)."""
    override = os.environ.get("PYWG_SHARED_BIN")
    shared_bin = (
        Path(override)
        if override
        else Path(os.environ.get("PYWG_SHARED") or CHECKOUT.parent / "shared") / "bin"
    )
    return shared_bin / UPSTREAM_WIREGUARD_GO


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def why(done: subprocess.CompletedProcess[str]) -> str:
    """The last line a failed command printed, from stderr if there is any."""
    return last_line(done.stderr if done.stderr.strip() else done.stdout)


def attempt(argv: Sequence[str], timeout: float = 10.0) -> subprocess.CompletedProcess[str] | None:
    """Run a command with a time bound; None if it could not start or timed out."""
    try:
        return subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=child_env(),
        )
    except (subprocess.TimeoutExpired, OSError):
        return None


def run(argv: Sequence[str], what: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    """Run a command with a time bound; LabFailed (naming `what`) if it fails or hangs."""
    done = attempt(argv, timeout)
    if done is None:
        raise LabFailed(f"{what} failed: {argv[0]} did not finish within {timeout:.0f} s or did not start")
    if done.returncode != 0:
        raise LabFailed(f"{what} failed: {why(done)}")
    return done


def stop_process(process: subprocess.Popen[Any], timeout: float = 5.0) -> int | None:
    """SIGTERM, wait up to `timeout`, then SIGKILL; close its pipes. Returns the exit status."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout)
    for pipe in (process.stdin, process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()
    return process.returncode


def write_secret(path: Path, text: str) -> Path:
    """A 0600 file: keys reach pywg and wg through these, never argv or environment."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    return path


def pids_with_argument(names: Iterable[str]) -> list[int]:
    """Processes with one of `names` (unique to this run) as a whole command-line argument."""
    wanted = {name.encode() for name in names}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted.intersection(argv):
            found.append(int(entry.name))
    return found


# --------------------------------------------------------------------------------------------
# /proc figures of a running process


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), in seconds."""
    return _stat_cpu(Path(f"/proc/{pid}/stat"))


def thread_cpu_seconds(pid: int, name: str) -> float:
    """utime + stime of the process's threads called `name` (comm), in seconds; threads that
    ended in between are missed."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            if (task / "comm").read_text().strip() == name:
                total += _stat_cpu(task / "stat")
    return total


def _stat_cpu(path: Path) -> float:
    text = path.read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of proc(5)


def status_kb(pid: int, key: str) -> int:
    """A `kB` line of /proc/PID/status (VmHWM, VmRSS)."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    raise LabFailed(f"/proc/{pid}/status has no {key}")


# --------------------------------------------------------------------------------------------
# namespaces


class Namespace:
    """A network namespace made for a run (`ip netns add NAME`, `lo` up), and the processes started
    in it.

    `close` stops those processes (SIGTERM, SIGKILL after 5 s), kills anything else still inside
    and deletes the namespace, its veth ends with it; it returns what could not be removed, and does
    nothing a second time.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.processes: list[subprocess.Popen[bytes]] = []
        self.closed = False
        run(["ip", "netns", "add", name], f"creating network namespace {name}")
        try:
            run(["ip", "-n", name, "link", "set", "lo", "up"], f"bringing up lo in {name}")
        except BaseException:
            self.close()
            raise

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """`argv` wrapped in `ip netns exec NAME`."""
        return ["ip", "netns", "exec", self.name, *argv]

    def spawn(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        stdin: Any = subprocess.DEVNULL,
        stdout: Any = subprocess.DEVNULL,
        stderr: Any = subprocess.DEVNULL,
    ) -> subprocess.Popen[bytes]:
        """A process in the namespace, in a session of its own (Ctrl-C is the caller's); `close`
        stops it. It runs in /: `python -m pywg` puts its working directory first on sys.path,
        and a checkout there would shadow the one `env`'s PYTHONPATH names."""
        if self.closed:
            raise LabFailed(f"network namespace {self.name} is closed")
        process = subprocess.Popen(
            self.exec_argv(argv),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=env,
            start_new_session=True,
            cwd="/",
        )
        self.processes.append(process)
        return process

    def pids(self) -> list[int]:
        """The processes inside the namespace (`ip netns pids`)."""
        done = attempt(["ip", "netns", "pids", self.name], timeout=5)
        return [int(pid) for pid in done.stdout.split()] if done else []

    def stop_processes(self) -> None:
        """Stop the processes `spawn` started, the last first."""
        for process in reversed(self.processes):
            stop_process(process)
        self.processes.clear()

    def close(self) -> list[str]:
        if self.closed:
            return []
        self.closed = True
        return self.remove()

    def remove(self) -> list[str]:
        """Stop the processes, kill anything else inside and delete the namespace (`close` without
        its guard, for subclasses that close more); returns what could not be removed."""
        self.stop_processes()
        return remove_netns(self.name)


def remove_netns(name: str) -> list[str]:
    """Kill whatever runs inside network namespace `name` and delete it; returns what could not be
    removed."""
    done = attempt(["ip", "netns", "pids", name], timeout=5)
    for pid in done.stdout.split() if done else []:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    if (NETNS_DIR / name).exists():
        attempt(["ip", "netns", "delete", name], timeout=10)
    if (NETNS_DIR / name).exists():
        return [f"network namespace {name} could not be deleted"]
    return []


def add_veth(a: Namespace, a_ifname: str, b: Namespace, b_ifname: str, mtu: int | None = None) -> None:
    """A veth pair: `a_ifname` in `a`, its peer `b_ifname` in `b`; down, without addresses."""
    sized = ["mtu", str(mtu)] if mtu is not None else []
    argv = ["ip", "-n", a.name, "link", "add", a_ifname, *sized, "type", "veth", "peer", "name", b_ifname]
    run([*argv, "netns", b.name], f"creating the veth pair {a_ifname} ({a.name}), {b_ifname} ({b.name})")


def tcp_listening(namespace: Namespace, port: int) -> bool:
    """Whether a TCP socket listens on `port` in `namespace` (an iperf3 server, say)."""
    done = attempt(namespace.exec_argv(["ss", "-Hltn", f"sport = :{port}"]), timeout=5)
    return done is not None and bool(done.stdout.strip())


# --------------------------------------------------------------------------------------------
# the two-namespace lab


@dataclass
class Side:
    """One end: a network namespace, its veth0 address and its tunnel addresses."""

    label: str  # "a" or "b"
    netns: str
    private_key: bytes
    underlay: str
    inner: tuple[str, ...]

    @property
    def public_key(self) -> bytes:
        return public_key_for(self.private_key)

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv]


class Lab:
    """Two namespaces joined by a veth pair, and the record of everything made in them.

    Each side's `Namespace` is made by `make_network`; `namespaces` holds them by side label.
    """

    def __init__(
        self, prefix: str, underlay: Mapping[str, str], inner: Mapping[str, tuple[str, ...]]
    ) -> None:
        self.prefix = prefix
        self.tag = secrets.token_hex(3)
        self.sides = {
            label: Side(
                label,
                f"{prefix}-{self.tag}-{label}",
                generate_private_key(os.urandom),
                underlay[label],
                inner[label],
            )
            for label in ("a", "b")
        }
        self.workdir: Path | None = None
        self.namespaces: dict[str, Namespace] = {}
        self.names: list[str] = []  # interface and UAPI names of tunnel processes

    def peer_of(self, side: Side) -> Side:
        return self.sides["b" if side.label == "a" else "a"]

    def make_network(self, prefix_length: int = 24) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-{self.tag}-"))  # mode 0700
        for side in self.sides.values():
            self.namespaces[side.label] = Namespace(side.netns)
        add_veth(self.namespaces["a"], "veth0", self.namespaces["b"], "veth0")
        for side in self.sides.values():
            address = f"{side.underlay}/{prefix_length}"
            run(["ip", "-n", side.netns, "addr", "add", address, "dev", "veth0"], f"adding {address}")
            run(["ip", "-n", side.netns, "link", "set", "veth0", "up"], f"bringing up veth0 in {side.netns}")

    def spawn(
        self, side: Side, argv: Sequence[str], log: Path, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        """A process in `side`'s namespace, output to `log`, in a session of its own (Ctrl-C is ours)."""
        with open(log, "wb") as out:
            return self.namespaces[side.label].spawn(argv, env, stdout=out, stderr=subprocess.STDOUT)

    def configure_wireguard_go(self, side: Side, name: str, port: int, networks: Sequence[str]) -> None:
        """`wg setconf` a running wireguard-go `name` for its peer, from a 0600 file."""
        assert self.workdir is not None
        peer = self.peer_of(side)
        ini = (
            f"[Interface]\nPrivateKey = {encode_key(side.private_key)}\nListenPort = {port}\n\n"
            f"[Peer]\nPublicKey = {encode_key(peer.public_key)}\n"
            f"AllowedIPs = {', '.join(networks)}\nEndpoint = {peer.underlay}:{port}\n"
        )
        path = write_secret(self.workdir / f"{name}.conf", ini)
        run(side.exec_argv(["wg", "setconf", name, str(path)]), f"wg setconf {name}")

    def wait_for_listener(self, side: Side, process: subprocess.Popen[bytes], port: int, what: str) -> None:
        """Until a TCP socket listens on `port` in `side` (an iperf3 server, say)."""
        deadline = time.monotonic() + 5.0
        while True:
            if tcp_listening(self.namespaces[side.label], port):
                return
            if process.poll() is not None:
                raise LabFailed(f"{what} failed: the server exited with status {process.returncode}")
            if time.monotonic() > deadline:
                raise LabFailed(f"{what} failed: the server did not listen within 5 s")
            time.sleep(0.05)

    def forget(self, name: str) -> None:
        """A tunnel's UAPI socket and `pywg up` state, when its process could not remove them."""
        (WG_SOCKET_DIR / f"{name}.sock").unlink(missing_ok=True)
        for suffix in (".json", ".log"):
            (STATE_DIR / f"{name}{suffix}").unlink(missing_ok=True)

    def cleanup(self) -> list[str]:
        """Remove everything this run made, whatever state it is in; return what could not be removed."""
        problems: list[str] = []
        for namespace in self.namespaces.values():
            namespace.stop_processes()
        problems += self._kill_leftovers()
        for namespace in self.namespaces.values():
            problems += namespace.close()
        for name in self.names:
            self.forget(name)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            if self.workdir.exists():
                problems.append(f"{self.workdir} could not be removed")
        return problems

    def _kill_leftovers(self) -> list[str]:
        """Anything of ours still running: a `pywg up` interrupted while it daemonized, say."""
        pids: list[int] = []
        for _ in range(20):
            pids = pids_with_argument(self.names)
            if not pids:
                return []
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        return [f"processes {pids} would not stop"]


def raise_interrupt(signum: int, frame: object) -> None:
    """A SIGTERM handler: stop the way Ctrl-C does, through the cleanup."""
    raise KeyboardInterrupt


def cleanup_uninterrupted(lab: Lab, say: Callable[[str], None]) -> list[str]:
    """Cleanup with Ctrl-C and SIGTERM held off, so a second Ctrl-C cannot leave half of it behind."""
    handlers = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with contextlib.suppress(OSError):  # stdout may be a closed pipe by now
            say("Cleaning up ...")
        return lab.cleanup()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
