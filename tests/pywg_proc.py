"""`pywg up` as a process inside a test host, the way users run it.

`Pywg(host, config).start()` writes the configuration to a 0600 file in the host's directory, runs
`python -m pywg up FILE --netns <host> --name <uapi name> --interface <ifname> --foreground` inside
the host (so its UDP sockets and its TUN live there), waits for its UAPI socket to accept, and
deletes the file. `stop` sends SIGTERM and checks that pywg removed its interface, its socket and
its state file and logged no exception. The host's `close` calls `close`, which stops whatever still
runs and removes what is left without checking, so a failing test leaves nothing behind.

`Pywg.daemon()` brings a tunnel up the other way: `pywg up` without --foreground, which returns once
the daemon is ready; `stop` then runs `pywg down IF --netns NS`.

UAPI names come from `unique_ifname`, so the topology sweep treats a socket a dead run left like a
wireguard-go one, and the process carries PYWGT_OWNER like everything `Host.popen` starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pywg.config import InterfaceConfig, format_wg_quick, to_json
from tests.topology import (
    WG_SOCKET_DIR,
    Host,
    PeerStatus,
    _socket_accepts,
    run,
    stop_process,
    unique_ifname,
    wait_for_handshake,
    wait_until,
    wg_peers,
)

STATE_DIR = Path("/run/pywg")
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


class Pywg:
    """One `pywg up` tunnel: interface `ifname` in `host`, served on UAPI socket `name`."""

    def __init__(
        self,
        host: Host,
        config: InterfaceConfig,
        ifname: str = "wg0",
        name: str | None = None,
        config_format: str = "ini",
    ) -> None:
        self.host = host
        self.config = config
        self.ifname = ifname
        self.name = name or unique_ifname()
        self.config_format = config_format
        self.process: subprocess.Popen[bytes] | None = None
        self.daemon_pid: int | None = None
        self.log_path = host.tmpdir / f"{self.name}.log"
        host.on_close(self.close)

    def __repr__(self) -> str:
        return f"Pywg({self.ifname!r} as {self.name!r} in {self.host.name!r})"

    @property
    def socket_path(self) -> Path:
        return WG_SOCKET_DIR / f"{self.name}.sock"

    @property
    def public_key(self) -> bytes:
        return self.config.public_key

    def log(self) -> str:
        texts = []
        for path in (self.log_path, STATE_DIR / f"{self.name}.log"):
            with contextlib.suppress(FileNotFoundError):
                texts.append(path.read_text(errors="replace"))
        return "".join(texts)

    def _write_config(self) -> Path:
        if self.config_format == "json":
            return self.host.write_secret(f"{self.name}.json", to_json(self.config))
        return self.host.write_secret(f"{self.name}.conf", format_wg_quick(self.config))

    def _up_argv(self, config_path: Path, foreground: bool) -> list[str]:
        argv = [sys.executable, "-m", "pywg", "up", str(config_path), "--netns", self.host.name]
        argv += ["--name", self.name, "--interface", self.ifname]
        return argv + (["--foreground"] if foreground else [])

    def start(self, timeout: float = START_TIMEOUT) -> Pywg:
        """`pywg up --foreground` in the host; returns once the UAPI socket accepts."""
        if self.process is not None or self.daemon_pid is not None:
            raise RuntimeError(f"{self} is already running")
        config_path = self._write_config()
        try:
            with open(self.log_path, "ab") as log:
                self.process = self.host.popen(
                    self._up_argv(config_path, foreground=True), stdout=log, stderr=subprocess.STDOUT
                )
            process = self.process

            def ready() -> bool:
                if process.poll() is not None:
                    raise AssertionError(
                        f"{self} exited with status {process.returncode} before it was ready:\n{self.log()}"
                    )
                return _socket_accepts(self.socket_path)

            wait_until(ready, timeout, f"the UAPI socket {self.socket_path}")
        finally:
            config_path.unlink(missing_ok=True)
        return self

    def daemon(self, timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """`pywg up` without --foreground: returns (with its output) once the daemon is ready."""
        if self.process is not None or self.daemon_pid is not None:
            raise RuntimeError(f"{self} is already running")
        config_path = self._write_config()
        try:
            done = self.host.run(self._up_argv(config_path, foreground=False), check=False, timeout=timeout)
        finally:
            config_path.unlink(missing_ok=True)
        if done.returncode != 0:
            raise AssertionError(f"`pywg up` failed with status {done.returncode}: {done.stderr}{self.log()}")
        self.daemon_pid = self._daemon_pid()
        return done

    def _daemon_pid(self) -> int:
        """The daemon's pid, from the state file `pywg up` wrote for `pywg down`."""
        state = json.loads((STATE_DIR / f"{self.name}.json").read_text())
        assert state["interface"] == self.ifname and state["name"] == self.name, state
        return int(state["pid"])

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else self.daemon_pid

    @property
    def running(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return self.daemon_pid is not None and _alive(self.daemon_pid)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM the foreground process (or `pywg down` the daemon); check it removed everything.

        Returns the foreground process's exit status (None for a daemon).
        """
        status: int | None = None
        if self.process is not None:
            status = stop_process(self.process, timeout)
            self.process = None
        elif self.daemon_pid is not None:
            pid, self.daemon_pid = self.daemon_pid, None
            # From the root namespace, as a user would.
            run(
                [sys.executable, "-m", "pywg", "down", self.ifname, "--netns", self.host.name],
                timeout=timeout + 5,
            )
            wait_until(lambda: not _alive(pid), timeout, f"{self} daemon (pid {pid}) to exit")
        else:
            return None
        assert not self.socket_path.exists(), f"{self} left its UAPI socket {self.socket_path}"
        assert not self.host.has_link(self.ifname), f"{self} left its interface {self.ifname}"
        assert not (STATE_DIR / f"{self.name}.json").exists(), f"{self} left its state file"
        assert "Traceback" not in self.log(), f"{self} logged an exception:\n{self.log()}"
        return status

    def close(self) -> None:
        """For the host's cleanup: stop whatever runs, then remove what may be left, without checks."""
        if self.daemon_pid is not None and _alive(self.daemon_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.daemon_pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            while _alive(self.daemon_pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.daemon_pid, signal.SIGKILL)
        self.daemon_pid = None
        if self.process is not None:
            stop_process(self.process, STOP_TIMEOUT)
            self.process = None
        if self.socket_path.exists() and not _socket_accepts(self.socket_path):
            self.socket_path.unlink(missing_ok=True)
        for leftover in (STATE_DIR / f"{self.name}.json", STATE_DIR / f"{self.name}.log"):
            leftover.unlink(missing_ok=True)

    def peers(self) -> dict[bytes, PeerStatus]:
        return wg_peers(self.host, self.name)

    def wait_for_handshake(self, peer: bytes, after: int = 0, timeout: float = 10.0) -> PeerStatus:
        return wait_for_handshake(self.host, self.name, peer, after, timeout)


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"
