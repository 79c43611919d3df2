"""The UDP side: one port on IPv4 and IPv6, with the local address of every datagram.

Replies leave from the address the peer last reached (sticky source, as the
kernel and wireguard-go do on Linux): received datagrams carry IP_PKTINFO /
IPV6_PKTINFO, and sends put it back as a control message. When that address
is gone the send is retried with the source left to the kernel.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
from ipaddress import IPv4Address, IPv6Address

from pywg.endpoint import Endpoint

IP_PKTINFO = 8  # Linux; not exported by Python's socket module
IPV6_RECVPKTINFO = socket.IPV6_RECVPKTINFO
IPV6_PKTINFO = socket.IPV6_PKTINFO
SO_MARK = 36
SOCKET_BUFFER = 7 << 20  # as wireguard-go
_IN_PKTINFO = struct.Struct("=i4s4s")
_IN6_PKTINFO = struct.Struct("=16si")
_CMSG_SPACE = socket.CMSG_SPACE(max(_IN_PKTINFO.size, _IN6_PKTINFO.size))
_BIND_ATTEMPTS = 16
# errnos that mean "this source address is no longer ours / usable".
_SOURCE_GONE = {errno.EINVAL, errno.EADDRNOTAVAIL, errno.ENETUNREACH}
# A received datagram: payload, sender, local address it arrived on.
Received = tuple[bytes, Endpoint, str | None]


class UdpSockets:
    """An IPv4 and an IPv6 socket on the same port; either may be missing
    (IPv6 disabled on the host), never both."""

    def __init__(self, port: int = 0, fwmark: int = 0) -> None:
        self.v4: socket.socket | None = None
        self.v6: socket.socket | None = None
        self.port = 0
        self.fwmark = 0
        self.bind(port)
        if fwmark:
            self.set_fwmark(fwmark)

    @property
    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.v4, self.v6) if s is not None]

    def bind(self, port: int) -> None:
        """(Re)bind both families to `port`; 0 picks one free on both.

        The port already bound is kept as it is: `wg setconf`/`syncconf` repeat an unchanged
        ListenPort, and binding it a second time would fail with EADDRINUSE.
        """
        if port and port == self.port and self.sockets:
            return
        last_error: OSError | None = None
        for _ in range(_BIND_ATTEMPTS if port == 0 else 1):
            try:
                v4, v6, bound = _bind_pair(port)
            except OSError as error:
                last_error = error
                if error.errno != errno.EADDRINUSE:
                    break
                continue
            self.close()
            self.v4, self.v6, self.port = v4, v6, bound
            if self.fwmark:
                self.set_fwmark(self.fwmark)
            return
        assert last_error is not None
        raise last_error

    def set_fwmark(self, mark: int) -> None:
        for sock in self.sockets:
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        self.fwmark = mark

    def receive(self, sock: socket.socket, limit: int) -> list[Received]:
        """Up to `limit` datagrams waiting on `sock`."""
        out: list[Received] = []
        for _ in range(limit):
            try:
                data, ancillary, _flags, address = sock.recvmsg(65535, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # ICMP errors reported on the socket; nothing to read
                continue
            out.append((data, (address[0], address[1]), _local_address(ancillary)))
        return out

    def send(self, data: bytes, endpoint: Endpoint, source: str | None) -> bool:
        """Send; returns False if `source` could not be used (the caller forgets it)."""
        sock = self.v6 if ":" in endpoint[0] else self.v4
        if sock is None:
            return True  # no socket of that family: drop, as the kernel does
        if source is not None:
            try:
                sock.sendmsg([data], [_pktinfo(source)], 0, endpoint)
                return True
            except OSError as error:
                if error.errno not in _SOURCE_GONE:
                    return True
            self._send_plain(sock, data, endpoint)
            return False
        self._send_plain(sock, data, endpoint)
        return True

    @staticmethod
    def _send_plain(sock: socket.socket, data: bytes, endpoint: Endpoint) -> None:
        # Unreachable, no buffer space: a datagram lost, as on the wire.
        with contextlib.suppress(OSError):
            sock.sendto(data, endpoint)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.v4 = self.v6 = None


def _bind_pair(port: int) -> tuple[socket.socket | None, socket.socket | None, int]:
    v6 = _open(socket.AF_INET6, port)
    if v6 is not None:
        port = v6.getsockname()[1]
    try:
        v4 = _open(socket.AF_INET, port)
    except OSError:
        if v6 is not None:
            v6.close()
        raise
    if v4 is None and v6 is None:
        raise OSError(errno.EAFNOSUPPORT, "neither IPv4 nor IPv6 is available")
    if v4 is not None:
        port = v4.getsockname()[1]
    return v4, v6, port


def _open(family: int, port: int) -> socket.socket | None:
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM)
    except OSError as error:
        if error.errno in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
            return None
        raise
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            address = "::"
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            address = "0.0.0.0"
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        sock.setblocking(False)
        sock.bind((address, port))
    except OSError as error:
        sock.close()
        if family == socket.AF_INET6 and error.errno == errno.EADDRNOTAVAIL:
            return None  # IPv6 disabled: keep going with IPv4 alone
        raise
    return sock


def _local_address(ancillary: list[tuple[int, int, bytes]]) -> str | None:
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= _IN_PKTINFO.size:
            _ifindex, spec_dst, _addr = _IN_PKTINFO.unpack_from(data)
            return str(IPv4Address(spec_dst))
        if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(data) >= _IN6_PKTINFO.size:
            address, _ifindex = _IN6_PKTINFO.unpack_from(data)
            return str(IPv6Address(address))
    return None


def _pktinfo(source: str) -> tuple[int, int, bytes]:
    if ":" in source:
        return socket.IPPROTO_IPV6, IPV6_PKTINFO, _IN6_PKTINFO.pack(IPv6Address(source).packed, 0)
    return socket.IPPROTO_IP, IP_PKTINFO, _IN_PKTINFO.pack(0, IPv4Address(source).packed, bytes(4))
