"""Detaching into the background once ready, and the state files that let `pywg down` find us.

`detach()` forks twice; the original process waits on a pipe until the
engine says "ready" or reports an error, so `pywg up` exits 0 only when the
tunnel works and non-zero with one line when it does not.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from pywg.runtime.uapi_server import socket_in_use, socket_path

STATE_DIR = Path("/run/pywg")


class Notifier:
    """The daemon's end of the readiness pipe."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def ready(self, message: str) -> None:
        self._send(f"ok {message}")

    def failed(self, message: str) -> None:
        self._send(f"error {message}")

    def _send(self, text: str) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(self._fd, text.encode() + b"\n")
            os.close(self._fd)
        self._fd = None


def detach(log_path: Path | None) -> Notifier | int:
    """In the daemon, return its Notifier; in the caller, wait and return the exit status."""
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child:
        os.close(write_end)
        message = _read_all(read_end)
        os.waitpid(child, 0)
        if message.startswith("ok "):
            print(message[3:])
            return 0
        error = message[6:] if message.startswith("error ") else "the engine exited before it was ready"
        print(error, file=sys.stderr)
        return 1
    os.close(read_end)
    os.setsid()
    if os.fork():
        os._exit(0)
    _redirect_stdio(log_path)
    return Notifier(write_end)


def _read_all(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode(errors="replace").strip()


def private_dir(path: Path) -> None:
    """`path` as a directory only root can enter, also when it existed with a looser mode."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _redirect_stdio(log_path: Path | None) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    target = null
    if log_path is not None:
        private_dir(log_path.parent)
        target = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        os.fchmod(target, 0o600)  # a log left by an older run keeps its mode otherwise
    os.dup2(target, 1)
    os.dup2(target, 2)
    for fd in {null, target}:
        if fd > 2:
            os.close(fd)


@dataclass
class State:
    """What `pywg down` and `pywg reload` need to find a running tunnel. `name` is its UAPI name
    (the state file's name too), `netns` the --netns path it was given (None: where it started),
    `netns_id` the (st_dev, st_ino) of the namespace its interface lives in."""

    name: str
    interface: str
    netns: str | None
    pid: int
    config: str | None
    netns_id: list[int] | None = None

    def save(self, state_dir: Path = STATE_DIR) -> Path:
        private_dir(state_dir)
        path = state_dir / f"{self.name}.json"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(asdict(self), handle)
        return path

    def remove(self, state_dir: Path = STATE_DIR) -> None:
        (state_dir / f"{self.name}.json").unlink(missing_ok=True)

    def namespace(self) -> tuple[int, int] | None:
        """The identity of the interface's namespace (None if it cannot be known any more)."""
        if self.netns_id is not None:
            return (self.netns_id[0], self.netns_id[1])
        # A state file of an older pywg: the --netns path, or else the daemon's own namespace.
        try:
            st = os.stat(self.netns or f"/proc/{self.pid}/ns/net")
        except OSError:
            return None
        return st.st_dev, st.st_ino


def running_tunnels(state_dir: Path = STATE_DIR) -> list[State]:
    """The states of the live `pywg up` tunnels; what dead ones left is removed on the way.

    Raises PermissionError if the state directory cannot be read (only root can).
    """
    try:
        names = sorted(os.listdir(state_dir))  # unlike Path.glob, says when it may not look
    except FileNotFoundError:
        return []
    running = []
    for path in [state_dir / name for name in names if name.endswith(".json")]:
        try:
            state = State(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if alive(state.pid):
            running.append(state)
        else:
            _remove_leftovers(state, path)
    return running


def _remove_leftovers(state: State, path: Path) -> None:
    """What a `pywg up` killed with SIGKILL left: its state file, and its UAPI socket unless a
    live process (a newer tunnel of that name) answers on it. Its TUN went with the process."""
    uapi_socket = socket_path(state.name)
    if not socket_in_use(uapi_socket):
        uapi_socket.unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not zombie(pid)


def zombie(pid: int) -> bool:
    """True if `pid` has exited and waits for its parent to reap it. The daemon's parent is init,
    which in a container may reap late or never: `pywg down` must not wait for that."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return True
    return text[text.rindex(")") + 2] in "ZX"
