"""A datagram socket pair standing in for a TUN, for the TUN readers and writers: one read, one
frame, as a TUN gives them."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import cast

from pywg.runtime.tun import Tun


@contextmanager
def socket_tun(offloads: int = 0) -> Iterator[tuple[socket.socket, Tun]]:
    """(the kernel's end, a Tun whose fd is ours) with the TUN offload flags `offloads`."""
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    kernel.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    with ours, kernel:
        tun = SimpleNamespace(fd=ours.fileno(), name="fake", dropped_down=0, offloads=offloads)
        yield kernel, cast(Tun, tun)
