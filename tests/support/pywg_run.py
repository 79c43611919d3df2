"""pywg's own commands as processes in test hosts: `pywg up`/`pywg down`, `pywg-userspace`, `wg`.

`PywgUp(host, config)` writes the configuration to a 0600 file in the host's 0700 directory and keeps
it there (SIGHUP rereads it; `write_config` changes it). `up` runs `pywg up FILE --netns <host> --name
<uapi name> --interface <ifname>` inside the host (so the UDP sockets live there too) the way users do:
it daemonizes and returns once the tunnel is ready. `start_foreground` runs it with --foreground and
waits for the UAPI socket to accept. `Userspace(host)` runs `pywg-userspace IFNAME`, the wireguard-go
drop-in, from its installed console script (absolute path, as wg-quick gets it).

Both register with the host's cleanup: whatever a test leaves running is stopped (SIGTERM, then
SIGKILL), and a UAPI socket nobody serves, a state file and a log are removed. Processes are found by
their UAPI name in argv, which `unique_ifname` makes unique machine-wide. `leftovers` lists what of a
tunnel still exists: tests assert it is empty.

Keys reach pywg and wg only through files; `wg` output is captured, never shown.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pywg.config import InterfaceConfig, format_wg_quick, to_json
from pywg.runtime.daemon import alive
from tests.support.topology import (
    WG_SOCKET_DIR,
    Host,
    PeerStatus,
    _socket_accepts,
    stop_process,
    unique_ifname,
    wait_for_handshake,
    wait_until,
    wg_peers,
)

PYWG_USERSPACE = str(Path(sysconfig.get_path("scripts")) / "pywg-userspace")
STATE_DIR = Path("/run/pywg")
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
PYWG_PREFIX = "pyw"


def pywg_argv(*args: str) -> list[str]:
    """`python -m pywg ARGS...` with this interpreter."""
    return [sys.executable, "-m", "pywg", *args]


def socket_path(name: str) -> Path:
    return WG_SOCKET_DIR / f"{name}.sock"


def pids_with_argument(argument: str) -> list[int]:
    """Live processes that have `argument` as one whole command-line argument (not ourselves)."""
    wanted = argument.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if wanted in argv and alive(int(entry)):
            found.append(int(entry))
    return found


def end_processes(pids: list[int], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, wait up to `timeout`, SIGKILL what is left."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def wg(host: Host, *args: str, check: bool = True, timeout: float = 30.0) -> str:
    """`wg ARGS...` inside `host`; its stdout."""
    return host.run(["wg", *args], check=check, timeout=timeout).stdout


def one_line(text: str) -> str:
    """The only line of `text` (AssertionError naming them all if there are more or none)."""
    lines = text.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0], f"expected exactly one line, got {lines!r}"
    return lines[0]


class _Running:
    """What a pywg process serving UAPI name `name` for `ifname` in `host` may leave behind."""

    def __init__(self, host: Host, ifname: str, name: str) -> None:
        self.host = host
        self.ifname = ifname
        self.name = name
        host.on_close(self.close)

    @property
    def socket_path(self) -> Path:
        return socket_path(self.name)

    def pids(self) -> list[int]:
        return pids_with_argument(self.name)

    def wg(self, *args: str, check: bool = True) -> str:
        return wg(self.host, *args, check=check)

    def leftovers(self) -> list[str]:
        """What of this tunnel still exists: the interface, socket, state file, processes."""
        found = []
        if self.host.has_link(self.ifname):
            found.append(f"interface {self.ifname} in {self.host.name}")
        if self.socket_path.exists():
            found.append(f"UAPI socket {self.socket_path}")
        if (STATE_DIR / f"{self.name}.json").exists():
            found.append(f"state file {STATE_DIR / f'{self.name}.json'}")
        found += [f"process {pid}" for pid in self.pids()]
        return found

    def wait_gone(self, timeout: float = 5.0) -> None:
        """Wait until nothing of the tunnel is left."""
        left: list[str] = []

        def gone() -> bool:
            left[:] = self.leftovers()
            return not left

        try:
            wait_until(gone, timeout, f"{self.ifname}/{self.name} to go away")
        except AssertionError:
            raise AssertionError(f"still there after {timeout} s: {left}") from None

    def close(self) -> None:
        """Stop what still runs; remove the socket if nobody serves it, the state file and log."""
        end_processes(self.pids())
        if self.socket_path.exists() and not _socket_accepts(self.socket_path):
            self.socket_path.unlink(missing_ok=True)
        for leftover in (STATE_DIR / f"{self.name}.json", STATE_DIR / f"{self.name}.log"):
            leftover.unlink(missing_ok=True)


class PywgUp(_Running):
    """`pywg up` of one config file in `host`: interface `ifname`, UAPI name `name`."""

    def __init__(
        self,
        host: Host,
        config: InterfaceConfig | str,
        ifname: str = "wg0",
        name: str | None = None,
        suffix: str = ".conf",
        args: Sequence[str] = (),
    ) -> None:
        super().__init__(host, ifname, name or unique_ifname(PYWG_PREFIX))
        self.config_path = host.tmpdir / f"{self.name}{suffix}"
        self.args = list(args)  # more options of pywg up (e.g. --metrics)
        self.process: subprocess.Popen[bytes] | None = None
        self.write_config(config)

    def __repr__(self) -> str:
        return f"PywgUp({self.ifname!r} as {self.name!r} in {self.host.name!r})"

    def write_config(self, config: InterfaceConfig | str) -> None:
        """(Re)write the config file: a model in the file's format, or text as it is."""
        if isinstance(config, InterfaceConfig):
            json_file = self.config_path.suffix == ".json"
            config = to_json(config) if json_file else format_wg_quick(config)
        self.host.write_secret(self.config_path.name, config)

    def argv(self, foreground: bool = False) -> list[str]:
        argv = pywg_argv("up", str(self.config_path), "--netns", self.host.name)
        argv += ["--name", self.name, "--interface", self.ifname, *self.args]
        return argv + (["--foreground"] if foreground else [])

    def up(self, check: bool = True, timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """`pywg up` (daemon mode); with `check`, AssertionError with its output unless it returned 0."""
        done = self.host.run(self.argv(), check=False, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(
                f"`pywg up` failed with status {done.returncode}: {done.stderr}{done.stdout}{self.log()}"
            )
        return done

    def start_foreground(self, timeout: float = START_TIMEOUT) -> subprocess.Popen[bytes]:
        """`pywg up --foreground`; returns the process once its UAPI socket accepts."""
        log = open(self.host.tmpdir / f"{self.name}.out", "ab")  # noqa: SIM115 (the child keeps it)
        with log:
            process = self.host.popen(self.argv(foreground=True), stdout=log, stderr=subprocess.STDOUT)
        self.process = process

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"{self} exited with status {process.returncode}:\n{self.log()}")
            return _socket_accepts(self.socket_path)

        wait_until(ready, timeout, f"the UAPI socket {self.socket_path}")
        return process

    def down(
        self, check: bool = True, timeout: float = STOP_TIMEOUT + 10
    ) -> subprocess.CompletedProcess[str]:
        argv = pywg_argv("down", self.ifname, "--netns", self.host.name)
        done = self.host.run(argv, check=False, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"`pywg down` failed with status {done.returncode}: {done.stderr}")
        return done

    def state(self) -> dict[str, Any] | None:
        """The state file `pywg up` wrote for `pywg down`, or None."""
        try:
            return dict(json.loads((STATE_DIR / f"{self.name}.json").read_text()))
        except FileNotFoundError:
            return None

    @property
    def pid(self) -> int:
        """The daemon's (or foreground process's) pid, from the state file."""
        state = self.state()
        assert state is not None, f"{self} has no state file"
        return int(state["pid"])

    def log(self) -> str:
        texts = []
        for path in (self.host.tmpdir / f"{self.name}.out", STATE_DIR / f"{self.name}.log"):
            with contextlib.suppress(FileNotFoundError):
                texts.append(path.read_text(errors="replace"))
        return "".join(texts)

    def close(self) -> None:
        if self.process is not None:
            stop_process(self.process, STOP_TIMEOUT)
            self.process = None
        super().close()


class Pywg(PywgUp):
    """A `PywgUp` whose every stop is checked: `start` runs it in the foreground, `daemon` as a
    daemon, and `stop` ends it the matching way (SIGTERM, or `pywg down`) and asserts that it left
    no interface, socket, state file or process and logged no exception."""

    def __init__(
        self,
        host: Host,
        config: InterfaceConfig,
        ifname: str = "wg0",
        name: str | None = None,
        config_format: str = "ini",
    ) -> None:
        super().__init__(host, config, ifname, name, ".json" if config_format == "json" else ".conf")
        self.config = config
        self.daemon_pid: int | None = None

    def __repr__(self) -> str:
        return f"Pywg({self.ifname!r} as {self.name!r} in {self.host.name!r})"

    @property
    def public_key(self) -> bytes:
        return self.config.public_key

    def start(self, timeout: float = START_TIMEOUT) -> Pywg:
        """`pywg up --foreground`; returns once the UAPI socket accepts."""
        self.start_foreground(timeout)
        return self

    def daemon(self, timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """`pywg up`: returns (with its output) once the daemon is ready."""
        done = self.up(timeout=timeout)
        self.daemon_pid = self.pid
        return done

    @property
    def running(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return self.daemon_pid is not None and alive(self.daemon_pid)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """End it and check it removed everything; the foreground process's exit status, or None."""
        status: int | None = None
        if self.process is not None:
            status = stop_process(self.process, timeout)
            self.process = None
        elif self.daemon_pid is not None:
            pid, self.daemon_pid = self.daemon_pid, None
            self.down(timeout=timeout + 5)
            wait_until(lambda: not alive(pid), timeout, f"{self} daemon (pid {pid}) to exit")
        else:
            return None
        assert self.leftovers() == [], f"{self} left {self.leftovers()}"
        assert "Traceback" not in self.log(), f"{self} logged an exception:\n{self.log()}"
        return status

    def peers(self) -> dict[bytes, PeerStatus]:
        return wg_peers(self.host, self.name)

    def wait_for_handshake(self, peer: bytes, after: int = 0, timeout: float = 10.0) -> PeerStatus:
        return wait_for_handshake(self.host, self.name, peer, after, timeout)


class Userspace(_Running):
    """`pywg-userspace IFNAME` in `host`: the interface name is also the UAPI name."""

    def __init__(self, host: Host, ifname: str | None = None) -> None:
        ifname = ifname or unique_ifname(PYWG_PREFIX)
        super().__init__(host, ifname, ifname)
        self.process: subprocess.Popen[bytes] | None = None
        self.out_path = host.tmpdir / f"{ifname}.out"

    def __repr__(self) -> str:
        return f"Userspace({self.ifname!r} in {self.host.name!r})"

    def daemon(self, timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """`pywg-userspace IFNAME` without WG_PROCESS_FOREGROUND: returns once it daemonized."""
        return self.host.run([PYWG_USERSPACE, self.ifname], timeout=timeout)

    def foreground(self, timeout: float = START_TIMEOUT) -> subprocess.Popen[bytes]:
        """WG_PROCESS_FOREGROUND=1 `pywg-userspace IFNAME`; returns once its UAPI socket accepts."""
        with open(self.out_path, "ab") as out:
            process = self.host.popen(
                [PYWG_USERSPACE, self.ifname],
                env={"WG_PROCESS_FOREGROUND": "1"},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.process = process

        def ready() -> bool:
            if process.poll() is not None:
                output = self.out_path.read_text(errors="replace")
                raise AssertionError(f"{self} exited with status {process.returncode}:\n{output}")
            return _socket_accepts(self.socket_path)

        wait_until(ready, timeout, f"the UAPI socket {self.socket_path}")
        return process

    def close(self) -> None:
        if self.process is not None:
            stop_process(self.process, STOP_TIMEOUT)
            self.process = None
        super().close()
