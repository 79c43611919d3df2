"""The UAPI unix socket at /var/run/wireguard/NAME.sock, as wireguard-go serves it.

The socket is root-only (created under umask 077); a stale socket left by a
dead process is replaced; deleting the socket stops the engine, as it does
wireguard-go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

from pywg.core import Device, UapiHooks, UapiSession

RUN_DIR = Path("/var/run/wireguard")
_log = logging.getLogger(__name__)


class UapiNameTaken(OSError):
    pass


def socket_path(name: str, run_dir: Path = RUN_DIR) -> Path:
    return run_dir / f"{name}.sock"


def socket_in_use(path: Path) -> bool:
    """True if a live process answers on `path`."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def query(path: Path, request: bytes, timeout: float = 5.0) -> bytes:
    """One request on a UAPI socket, as `wg` makes it: the reply up to its blank line (OSError if
    nothing answers)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        client.connect(str(path))
        client.sendall(request)
        reply = b""
        while not reply.endswith(b"\n\n"):
            chunk = client.recv(65536)
            if not chunk:
                break
            reply += chunk
    return reply


class UapiServer:
    def __init__(
        self,
        name: str,
        device: Device,
        hooks: UapiHooks,
        run_dir: Path = RUN_DIR,
        turn: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
    ) -> None:
        self.name = name
        self.path = socket_path(name, run_dir)
        self._device = device
        self._hooks = hooks
        self._turn = turn  # each request has the device to itself (the engine parks its lane)
        self._server: asyncio.AbstractServer | None = None
        self._listener: socket.socket | None = None
        self._inode: int | None = None

    def bind(self) -> None:
        """Create the listening socket now (before the loop runs), refusing a live name."""
        self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        if self.path.exists():
            if socket_in_use(self.path):
                raise UapiNameTaken(f"UAPI socket {self.path} is in use by another process")
            self.path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o077)
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(old_umask)
        listener.listen(16)
        listener.setblocking(False)
        self._listener = listener
        self._inode = self.path.stat().st_ino

    async def start(self) -> None:
        assert self._listener is not None, "bind() first"
        self._server = await asyncio.start_unix_server(self._serve, sock=self._listener)

    def still_there(self) -> bool:
        """False once someone deleted or replaced our socket file."""
        try:
            return self.path.stat().st_ino == self._inode
        except OSError:
            return False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = UapiSession(self._device, self._hooks)
        try:
            while not session.closed:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                with self._turn():
                    reply = session.feed(chunk)
                if reply:
                    writer.write(reply)
                    await writer.drain()
        except (ConnectionError, OSError) as error:
            _log.debug("UAPI connection ended: %s", error.strerror)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        elif self._listener is not None:
            self._listener.close()
        if self.still_there():
            self.path.unlink(missing_ok=True)
