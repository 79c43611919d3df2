"""The UDP side: one port on IPv4 and IPv6, with the local address of every datagram.

Replies leave from the address the peer last reached (sticky source, as the
kernel and wireguard-go do on Linux): received datagrams carry IP_PKTINFO /
IPV6_PKTINFO, and sends put it back as a control message. When that address
is gone the send is retried with the source left to the kernel.

Batching, each with a fallback that never loses a batch (wireguard-go
conn/bind_std.go, conn/features_linux.go, conn/errors_linux.go):
- UDP GSO on send: consecutive datagrams of one size to one endpoint from one
  source (the last may be shorter), at most 64 and 65507 bytes (IPv4) or 65527
  (IPv6), leave in one sendmsg with a UDP_SEGMENT control message. EIO (a
  device without TX checksum offload) turns GSO off for good; EMSGSIZE (or
  EINVAL: a segment over the path MTU) turns it off for that endpoint. Either
  way the batch is sent again datagram by datagram.
- UDP GRO on receive (UDP_GRO, kernel >= 5.12 like wireguard-go): one recvmsg
  may return many datagrams of one sender glued together, with the segment size
  in a control message; they are split again here.
Both are probed once when the sockets are made; the engine logs what is on.
GRO is asked for on the data sockets only: the handshake sockets' datagrams come
from many senders, one or two each, which GRO would not glue anyway.

The system calls are the data path's (`native`: the C path when the extension is available):
with C, recvmmsg and sendmmsg (pywg/native/udpio.c) where GSO and GRO cannot batch: the
handshake and priority sockets, and a data socket without GRO, take up to 64 datagrams per
recvmmsg; a data socket with GRO takes up to GRO_SLOTS (8) GRO batches per recvmmsg, since a
device that does not coalesce (a veth pair, by default) hands it single datagrams; datagrams
that go in no GSO send (handshake messages, several endpoints in one flush, GSO off or
refused) leave up to 64 per sendmmsg. A datagram sendmmsg refuses gets what a lone send gets
(the fallback without its source, or lost as on the wire), and the rest of the batch goes on.
In pure Python one recvmsg_into reads one datagram (or one GRO batch) and one sendmsg sends
one (or one GSO run), so the wire sees the same datagrams either way.

Receive buffers are a bounded pool, mapped once per socket: RECEIVE_SLOTS (64)
slots of 64 KiB (one datagram each), 4 MiB of address space per socket, or
GRO_SLOTS (8) for a data socket with GRO (one GRO batch each, 512 KiB); pages
become resident only as datagrams are written into them (one page per slot for
datagrams of up to 4 KiB; all 16 of a slot for a full GRO batch). The pure-Python
path uses one slot and hands the device each datagram as `bytes`; with recvmmsg
the device gets the call's datagrams where they lie (`ReceivedDatagrams`, GRO
batches cut and runs found in C) and opens them in place, so the engine delivers
what they carried before it reads into the pool again.

Handshake messages have queues of their own, as in the kernel (receive.c):
three sockets of a family share the port through SO_REUSEPORT, and a classic BPF
program on the group steers data messages to the data socket, other datagrams
from known peers' endpoint addresses (`prioritize`) to a priority socket, and
the rest to a handshake socket. A flood of initiations then fills only the
handshake socket's (smaller) buffer: data messages and known peers' handshakes
keep their queues, and the engine reads the two handshake queues in small
batches so the data path gets its turn between them. A flood spoofing a peer's
address lands in the priority socket, which is then no worse than without it.
Where the kernel refuses this, all comes in on the data socket, as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import logging
import mmap
import os
import socket
import struct
from array import array
from collections.abc import Iterable, Iterator, Sequence
from ipaddress import IPv4Address, IPv6Address
from itertools import accumulate
from typing import Protocol

from pywg.core import Endpoint, Outgoing
from pywg.core.batch import MAX_RECEIVE_RUN, DatagramList, Datagrams, MessageRun, Received, split
from pywg.native import hotpath, loader

IP_PKTINFO = 8  # Linux; not exported by Python's socket module
IPV6_RECVPKTINFO = socket.IPV6_RECVPKTINFO
IPV6_PKTINFO = socket.IPV6_PKTINFO
SO_MARK = 36
SOL_UDP = 17
UDP_SEGMENT = 103  # <linux/udp.h>
UDP_GRO = 104
SOCKET_BUFFER = 7 << 20  # as wireguard-go
GSO_MAX_SEGMENTS = 64  # wireguard-go udpSegmentMaxDatagrams; the kernel allows 64 (UDP_MAX_SEGMENTS 128)
# Largest UDP payload in one send (wireguard-go maxIPv4PayloadLen, maxIPv6PayloadLen).
GSO_MAX_PAYLOAD = {socket.AF_INET: (1 << 16) - 1 - 20 - 8, socket.AF_INET6: (1 << 16) - 1 - 8}
GRO_MIN_KERNEL = (5, 12)
# Destinations without GSO after EMSGSIZE, at most this many (then forgotten, and probed again).
GSO_OFF_MAX_DESTINATIONS = 1024
_IN_PKTINFO = struct.Struct("=i4s4s")
_IN6_PKTINFO = struct.Struct("=16si")
_INT = struct.Struct("=i")
_SEGMENT = struct.Struct("=H")
_CMSG_SPACE = socket.CMSG_SPACE(max(_IN_PKTINFO.size, _IN6_PKTINFO.size)) + socket.CMSG_SPACE(_INT.size)
_RECEIVE_SIZE = 65535
RECEIVE_SLOTS = 64  # datagrams per recvmmsg (udpio.h WG_UDP_BATCH) and slots of each socket's pool
# A GRO socket's slots: a recvmmsg then takes at most 8 GRO batches (512 KiB), about UDP_BATCH's bytes.
GRO_SLOTS = 8
GRO_SEGMENTS = 64  # datagrams in one GRO batch at most (the kernel's UDP_GRO_CNT_MAX)
_SLOT = 1 << 16  # a slot holds the largest datagram or GRO batch (_RECEIVE_SIZE)
# udpio.h wg_udp_rx (what recvmmsg found per datagram) and wg_udp_target (where one is sent).
_RX = struct.Struct("=IIIHHBBBB16s16s")
_TARGET = struct.Struct("=16sIHBB16s")
_FAMILY_NUMBER = {socket.AF_INET: 4, socket.AF_INET6: 6}
_BIND_ATTEMPTS = 16
# errnos that mean "this source address is no longer ours / usable".
SOURCE_GONE = {errno.EINVAL, errno.EADDRNOTAVAIL, errno.ENETUNREACH}
# errnos after which a datagram is simply lost, as on the wire (a full queue).
_LOST = {errno.EAGAIN, errno.ENOBUFS}
SO_ATTACH_REUSEPORT_CBPF = 51
# The handshake queue: about 1300 initiations (the kernel queues at most 4096 handshake messages).
HANDSHAKE_SOCKET_BUFFER = 1 << 20
# Known peers' addresses whose handshake messages get the priority socket, per family (the BPF
# program compares them one by one: 3 instructions each for IPv4, 9 for IPv6, of at most 4096).
PRIORITY_MAX = 256
# Where a classic BPF program finds the IP header (SKF_NET_OFF), and the source address's words in it.
_SKF_NET_OFF = -0x100000
_SOURCE_WORDS = {socket.AF_INET: (12,), socket.AF_INET6: (8, 12, 16, 20)}
_log = logging.getLogger("pywg")


def mmsg_unavailable_reason() -> str | None:
    """Why datagrams go one (or one GSO/GRO batch) per system call, or None: recvmmsg/sendmmsg."""
    reason = loader.unavailable_reason()
    if reason is None and not hasattr(loader.extension()[1], "wg_udp_recv"):
        reason = "the C extension predates recvmmsg/sendmmsg"
    return reason


def describe_batching() -> str:
    """For `pywg version`: how datagrams are batched here (GSO/GRO are probed per socket)."""
    reason = mmsg_unavailable_reason()
    mmsg = "recvmmsg/sendmmsg (C)" if reason is None else f"no recvmmsg/sendmmsg ({reason})"
    return f"{mmsg}; UDP GSO/GRO where the kernel offers them"


class UdpSockets:
    """An IPv4 and an IPv6 socket on the same port; either may be missing
    (IPv6 disabled on the host), never both.

    `offload=False` leaves GSO and GRO off (one datagram per system call, or up to 64 with
    recvmmsg/sendmmsg). `native` chooses the system calls (module docstring): C, the default
    when the extension is available, or pure Python.
    """

    def __init__(
        self, port: int = 0, fwmark: int = 0, offload: bool = True, native: bool | None = None
    ) -> None:
        self.v4: socket.socket | None = None
        self.v6: socket.socket | None = None
        # Receive-only (module docstring): indices 1 and 2 of each family's SO_REUSEPORT group.
        self.handshake_sockets: list[socket.socket] = []
        self.priority_sockets: list[socket.socket] = []
        self._priority: frozenset[str] = frozenset()
        self.port = 0
        self.fwmark = 0
        self.offload = offload
        self.gso = False  # UDP_SEGMENT on send; probed in `bind`, off for good after EIO
        self.gro = False  # UDP_GRO on receive; probed in `bind`
        self.gso_off: set[Endpoint] = set()  # destinations that answered EMSGSIZE
        if native is None:
            native = mmsg_unavailable_reason() is None
        self.io: _Calls = _Mmsg() if native else _PerDatagram()
        self._pools: dict[int, _Pool] = {}  # receive buffers by file descriptor, made in `bind`
        self.bind(port)
        if fwmark:
            self.set_fwmark(fwmark)

    @property
    def sockets(self) -> list[socket.socket]:
        return self.data_sockets + self.handshake_sockets + self.priority_sockets

    @property
    def data_sockets(self) -> list[socket.socket]:
        """The sockets that send, and receive data messages: index 0 of each group."""
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
            queues = [q for s in (v4, v6) if s is not None and (q := _queue_sockets(s))]
            self.handshake_sockets = [handshake for handshake, _ in queues]
            self.priority_sockets = [priority for _, priority in queues]
            if self._priority:
                self._steer()
            if self.fwmark:
                self.set_fwmark(self.fwmark)
            self._probe_offloads()
            return
        assert last_error is not None
        raise last_error

    def _probe_offloads(self) -> None:
        """Find out once what the kernel offers these sockets (the engine logs it)."""
        sockets = self.sockets
        self.gso = self.offload and all(_supports_gso(sock) for sock in sockets)
        data = self.data_sockets
        self.gro = self.offload and _kernel_at_least(GRO_MIN_KERNEL) and all(_enable_gro(s) for s in data)
        self.gso_off.clear()
        self._make_pools()

    def _make_pools(self) -> None:
        """A slot per datagram (or GRO batch) of one receive call."""
        gro = self.data_sockets if self.gro else []
        self._pools = {sock.fileno(): self.io.pool(sock in gro) for sock in self.sockets}

    def describe_offloads(self) -> str:
        """What the probe found, for the engine's log: e.g. "GSO on, GRO on, recvmmsg/sendmmsg on"."""
        mmsg = "on" if isinstance(self.io, _Mmsg) else "off"
        return (
            f"GSO {'on' if self.gso else 'off'}, GRO {'on' if self.gro else 'off'}, recvmmsg/sendmmsg {mmsg}"
        )

    def prioritize(self, addresses: Iterable[str]) -> None:
        """Handshake messages from `addresses` (known peers' endpoints) go to the priority sockets."""
        wanted = frozenset(addresses)
        if wanted != self._priority:
            self._priority = wanted
            self._steer()

    def _steer(self) -> None:
        for sock in self.handshake_sockets:  # a program attached to one member serves the group
            try:
                _attach_program(sock, _steering_program(sock.family, self._priority))
            except OSError as error:
                _log.info("handshake messages not steered: %s", os.strerror(error.errno or 0))

    def set_fwmark(self, mark: int) -> None:
        for sock in self.data_sockets:
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        self.fwmark = mark

    # Receiving.
    def receive_batches(self, sock: socket.socket, limit: int) -> Iterator[Datagrams]:
        """Datagrams waiting on `sock`, about `limit` of them (GRO may add up to 63 past it with
        recvmsg, up to GRO_SLOTS * 64 - 1 with recvmmsg), in batches. Each batch lies in the
        socket's pool and is overwritten by the next call: the caller is done with a batch
        (delivered what it opened) before it asks for the next."""
        return self.io.receive(sock, self._pools[sock.fileno()], limit)

    def receive(self, sock: socket.socket, limit: int) -> list[Received]:
        """`receive_batches`, copied out as (bytes, sender, local address)."""
        return [
            (batch.data(i), *batch.origin(i))
            for batch in self.receive_batches(sock, limit)
            for i in range(len(batch))
        ]

    # Sending.
    def send_batch(self, outbox: Sequence[Outgoing]) -> list[str]:
        """Send the runs in order, each in GSO sends where it can; returns the sources that could
        not be used (each once: the caller forgets them)."""
        gone: list[str] = []
        lone: list[tuple[bytes, Endpoint, str | None]] = []  # in no GSO send: one by one or sendmmsg
        for run, endpoint, source in outbox:
            if len(run) > 1 and self.gso and endpoint not in self.gso_off:
                self._send_lone(lone, gone)
                self._send_run(run, endpoint, source, gone)
            elif len(run) == 1:
                lone.append((run.payload, endpoint, source))
            else:
                lone += [(message, endpoint, source) for message in run.messages()]
        self._send_lone(lone, gone)
        return gone

    def _send_run(self, run: MessageRun, endpoint: Endpoint, source: str | None, gone: list[str]) -> None:
        """A MessageRun as it lies: one GSO send per chunk of equal-sized messages."""
        sizes, payload = run.sizes, memoryview(run.payload)
        limit = GSO_MAX_PAYLOAD[socket.AF_INET6 if ":" in endpoint[0] else socket.AF_INET]
        start = offset = 0
        for end in self.io.gso_chunks(sizes, limit):
            length = sum(sizes[start:end])
            chunk = payload[offset : offset + length]
            if end - start == 1:
                sent = self.send(chunk, endpoint, source)
            else:
                sent = self._send_segments(chunk, sizes[start:end], endpoint, source)
            if not sent:
                _forget(gone, source)
            start, offset = end, offset + length

    def _send_lone(self, datagrams: list[tuple[bytes, Endpoint, str | None]], gone: list[str]) -> None:
        """Send and clear `datagrams`, in order (sendmmsg with C)."""
        if len(datagrams) == 1:
            data, endpoint, source = datagrams[0]
            if not self.send(data, endpoint, source):
                _forget(gone, source)
        elif datagrams:
            self.io.send_each(self, datagrams, gone)
        datagrams.clear()

    def _send_segments(
        self, payload: bytes | memoryview, sizes: Sequence[int], endpoint: Endpoint, source: str | None
    ) -> bool:
        """One GSO send of datagrams of `sizes` glued in `payload`; on failure the same datagrams
        one by one (never a lost batch)."""
        sock = self.v6 if ":" in endpoint[0] else self.v4
        if sock is None:
            return True  # no socket of that family: drop, as the kernel does
        ancillary = [(SOL_UDP, UDP_SEGMENT, _SEGMENT.pack(sizes[0]))]
        if source is not None:
            ancillary.append(_pktinfo(source))
        try:
            self._sendmsg(sock, [payload], ancillary, endpoint)
            return True
        except OSError as error:
            failure = error.errno
        if failure in _LOST:
            return True
        sent = True
        for segment in split(payload, sizes):
            sent = self.send(segment, endpoint, source if sent else None) and sent
        self.gso_refused(endpoint, failure or 0, source_kept=sent)
        return sent

    def gso_refused(self, endpoint: Endpoint, failure: int, source_kept: bool) -> None:
        """A GSO send to `endpoint` failed with `failure`: EIO turns GSO off, EMSGSIZE (or EINVAL
        while the source address still works) turns it off towards `endpoint`."""
        if failure == errno.EIO:
            self.gso = False
            _log.info("UDP GSO turned off: the kernel refused it with EIO (no TX checksum offload?)")
        if failure == errno.EMSGSIZE or (failure == errno.EINVAL and source_kept):
            if len(self.gso_off) >= GSO_OFF_MAX_DESTINATIONS:
                self.gso_off.clear()
            self.gso_off.add(endpoint)
            _log.info("UDP GSO turned off towards %s: %s", endpoint, os.strerror(failure))

    def send(self, data: bytes | memoryview, endpoint: Endpoint, source: str | None) -> bool:
        """Send; returns False if `source` could not be used (the caller forgets it)."""
        sock = self.v6 if ":" in endpoint[0] else self.v4
        if sock is None:
            return True  # no socket of that family: drop, as the kernel does
        if source is not None:
            try:
                self._sendmsg(sock, [data], [_pktinfo(source)], endpoint)
                return True
            except OSError as error:
                if error.errno not in SOURCE_GONE:
                    return True
            self._send_plain(sock, data, endpoint)
            return False
        self._send_plain(sock, data, endpoint)
        return True

    @staticmethod
    def _sendmsg(
        sock: socket.socket,
        buffers: list[bytes | memoryview],
        ancillary: list[tuple[int, int, bytes]],
        endpoint: Endpoint,
    ) -> None:
        """Every send with control messages goes through here (tests replace it to inject errors)."""
        sock.sendmsg(buffers, ancillary, 0, endpoint)

    @staticmethod
    def _send_plain(sock: socket.socket, data: bytes | memoryview, endpoint: Endpoint) -> None:
        # Unreachable, no buffer space: a datagram lost, as on the wire.
        with contextlib.suppress(OSError):
            sock.sendto(data, endpoint)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self._pools = {}
        self.v4 = self.v6 = None
        self.handshake_sockets = []
        self.priority_sockets = []


def gso_chunks(sizes: array[int], limit: int) -> list[int]:
    """Where the chunks of datagrams of `sizes` that one GSO send may carry end: at most
    GSO_MAX_SEGMENTS and `limit` bytes, all of the first one's size but the last, which may be
    shorter (the C path's `_Mmsg.gso_chunks` is the same in C, batch.c)."""
    count = len(sizes)
    out: list[int] = []
    start = 0
    while start < count:
        size = total = sizes[start]
        end = start + 1
        while end < count and end - start < GSO_MAX_SEGMENTS:
            length = sizes[end]
            if length > size or total + length > limit:
                break
            total += length
            end += 1
            if length < size:
                break  # a shorter segment can only be the last
        out.append(end)
        start = end
    return out


def _forget(gone: list[str], source: str | None) -> None:
    """`source` could not be used: the caller hears of it once."""
    if source is not None and source not in gone:
        gone.append(source)


class ReceivedDatagrams(hotpath.InBuffer):
    """Datagrams (pywg/core/batch.py) as one recvmmsg left them in a socket's pool: GRO batches cut into
    their datagrams in C, runs found in C, opened in place by the C hot path."""

    __slots__ = ("_ffi", "_lib", "_origin", "_origins", "_run_end", "_run_index", "_rx_view", "rx")

    def __init__(self, memory: mmap.mmap, slots: int, capacity: int) -> None:
        super().__init__(memory, capacity)
        ffi, self._lib = loader.extension()
        self._ffi = ffi
        self.rx = ffi.new("wg_udp_rx[]", slots)
        self._rx_view = memoryview(ffi.buffer(self.rx))
        self._origin = ffi.new("uint32_t[]", capacity)
        self._run_end = ffi.new("uint32_t[]", capacity)
        self._run_index = ffi.new("int64_t[]", capacity)
        self._origins: dict[int, tuple[Endpoint, str | None]] = {}

    def load(self, received: int) -> None:
        """Take what wg_udp_recv reported in `rx` for `received` datagrams (or GRO batches)."""
        self.count = self._lib.wg_rx_datagrams(
            self.rx, received, self.offsets, self.lengths, self._origin, len(self._run_end)
        )
        self._origins.clear()

    def runs(self) -> Iterator[tuple[int, int, int | None]]:
        run_end, run_index = self._run_end, self._run_index
        runs = self._lib.wg_rx_runs(
            self.c_data, self.offsets, self.lengths, self.count, MAX_RECEIVE_RUN, run_end, run_index
        )
        ends, indices = self._ffi.unpack(run_end, runs), self._ffi.unpack(run_index, runs)
        start = 0
        for end, index in zip(ends, indices, strict=True):
            yield start, end, None if index < 0 else index
            start = end

    def data(self, index: int) -> bytes:  # type: ignore[override]
        return self.copy(index)

    def messages(self, start: int, stop: int) -> list[bytes]:
        return self.copies(start, stop)

    def origin(self, index: int) -> tuple[Endpoint, str | None]:
        entry = self._origin[index]
        known = self._origins.get(entry)
        if known is None:
            _, _, scope, port, _, family, _, local_family, _, source, local = _RX.unpack_from(
                self._rx_view, entry * _RX.size
            )
            here = _address_text(local[:4] if local_family == 4 else local) if local_family else None
            known = self._origins[entry] = ((_source_text(family, source, scope), port), here)
        return known


class _Pool:
    """One socket's receive buffers (module docstring): `slots` slots of _SLOT bytes, mapped once,
    each holding a datagram or a GRO batch of up to `segments`; `received` is the batch C fills
    from it (None when Python reads into it, into the first slot)."""

    def __init__(self, slots: int, native: bool, segments: int = 1) -> None:
        self.slots = slots
        # Anonymous and private (not shared with a forked child): resident only where written.
        self.memory = mmap.mmap(-1, slots * _SLOT, flags=mmap.MAP_PRIVATE)
        self.first = memoryview(self.memory)[:_RECEIVE_SIZE]
        self.received = ReceivedDatagrams(self.memory, slots, slots * segments) if native else None


class _Calls(Protocol):
    """The system calls of a data path: how datagrams are received and sent one by one."""

    def pool(self, gro: bool) -> _Pool:
        """The receive buffers of a socket (`gro`: a data socket with UDP_GRO on)."""
        ...

    def receive(self, sock: socket.socket, pool: _Pool, limit: int) -> Iterator[Datagrams]:
        """What `UdpSockets.receive_batches` yields."""
        ...

    def send_each(
        self, udp: UdpSockets, datagrams: list[tuple[bytes, Endpoint, str | None]], gone: list[str]
    ) -> None:
        """Send `datagrams` (at least two, in no GSO send) in order, as `udp.send` would each."""
        ...

    def gso_chunks(self, sizes: array[int], limit: int) -> list[int]:
        """`gso_chunks`."""
        ...


class _PerDatagram:
    """Pure Python: one recvmsg_into per datagram or GRO batch, one send per datagram."""

    def pool(self, gro: bool) -> _Pool:
        return _Pool(1, native=False)

    def receive(self, sock: socket.socket, pool: _Pool, limit: int) -> Iterator[Datagrams]:
        received = _receive_each(sock, pool, limit)
        if received:
            yield DatagramList(received)

    def send_each(
        self, udp: UdpSockets, datagrams: list[tuple[bytes, Endpoint, str | None]], gone: list[str]
    ) -> None:
        for data, endpoint, source in datagrams:
            if not udp.send(data, endpoint, source):
                _forget(gone, source)

    def gso_chunks(self, sizes: array[int], limit: int) -> list[int]:
        return gso_chunks(sizes, limit)


def _receive_each(sock: socket.socket, pool: _Pool, limit: int) -> list[Received]:
    """One recvmsg per datagram or GRO batch, into the pool's first slot."""
    out: list[Received] = []
    for _ in range(limit):
        try:
            size, ancillary, flags, address = sock.recvmsg_into([pool.first], _CMSG_SPACE)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:  # ICMP errors reported on the socket; nothing to read
            continue
        if flags & socket.MSG_TRUNC:
            continue
        local, segment = _parse_ancillary(ancillary)
        _append(out, pool.memory, 0, size, segment, (address[0], address[1]), local)
        if len(out) >= limit:
            break
    return out


def _append(
    out: list[Received],
    memory: mmap.mmap,
    start: int,
    size: int,
    segment: int,
    source: Endpoint,
    local: str | None,
) -> None:
    """The datagram at memory[start:start + size] (or the GRO batch there, split), copied out as bytes."""
    end = start + size
    if segment and size > segment:
        out += [(memory[i : min(i + segment, end)], source, local) for i in range(start, end, segment)]
    else:
        out.append((memory[start:end], source, local))


class _Mmsg:
    """recvmmsg and sendmmsg in C (pywg/native/udpio.c): the message headers and the arrays of one call
    are allocated once; a call handles up to RECEIVE_SLOTS datagrams with the GIL released."""

    def __init__(self) -> None:
        ffi, lib = loader.extension()
        self.ffi, self._lib = ffi, lib
        self._headers = ffi.new("char[]", lib.wg_udp_batch_size())
        self._batch = ffi.cast("wg_udp_batch *", self._headers)
        self._targets = ffi.new("wg_udp_target[]", RECEIVE_SLOTS)
        self._off = ffi.new("uint32_t[]", RECEIVE_SLOTS)
        self._len = ffi.new("uint32_t[]", RECEIVE_SLOTS)
        self._error = ffi.new("int *")

    def pool(self, gro: bool) -> _Pool:
        return _Pool(GRO_SLOTS, True, GRO_SEGMENTS) if gro else _Pool(RECEIVE_SLOTS, True)

    def receive(self, sock: socket.socket, pool: _Pool, limit: int) -> Iterator[Datagrams]:
        """Read with recvmmsg into `pool`: each batch is one call's datagrams where they lie."""
        batch = pool.received
        assert batch is not None
        fd, got = sock.fileno(), 0
        for _ in range(limit):  # each call takes a datagram, or an error reported on the socket
            wanted = min(pool.slots, limit - got)
            count = self._lib.wg_udp_recv(self._batch, fd, batch.c_data, _SLOT, wanted, batch.rx, self._error)
            if count < 0:  # ICMP errors reported on the socket, EINTR: read on
                continue
            batch.load(count)
            got += len(batch)
            if len(batch):
                yield batch
            if count < wanted or got >= limit:  # fewer than asked for: the queue is empty
                break

    def send_each(
        self, udp: UdpSockets, datagrams: list[tuple[bytes, Endpoint, str | None]], gone: list[str]
    ) -> None:
        """Up to RECEIVE_SLOTS per sendmmsg and family."""
        for sock in udp.data_sockets:
            v6 = sock.family == socket.AF_INET6
            mine = [d for d in datagrams if (":" in d[1][0]) == v6]
            for start in range(0, len(mine), RECEIVE_SLOTS):
                self._sendmmsg(udp, sock, mine[start : start + RECEIVE_SLOTS], gone)

    def _sendmmsg(
        self,
        udp: UdpSockets,
        sock: socket.socket,
        datagrams: list[tuple[bytes, Endpoint, str | None]],
        gone: list[str],
    ) -> None:
        """One sendmmsg; a datagram it refuses fares as with `send`: sent again without its
        source if that is gone, else lost, as on the wire."""
        # Without a target (not an address) a datagram is lost, as a plain send would lose it.
        chosen = [(d, target) for d in datagrams if (target := target_of(d[1], d[2])) is not None]
        for index, failure in self.send(
            sock.fileno(), [d[0] for d, _ in chosen], b"".join(t for _, t in chosen)
        ):
            data, endpoint, source = chosen[index][0]
            if source is not None and failure in SOURCE_GONE:
                udp._send_plain(sock, data, endpoint)
                _forget(gone, source)

    def gso_chunks(self, sizes: array[int], limit: int) -> list[int]:
        count = len(sizes)
        ends = self.ffi.new("uint32_t[]", max(1, count))
        sizes_in_c = self.ffi.from_buffer("uint32_t[]", sizes)
        chunks = self._lib.wg_gso_chunks(sizes_in_c, count, GSO_MAX_SEGMENTS, limit, ends)
        return self.ffi.unpack(ends, chunks)  # type: ignore[no-any-return]

    def send(self, fd: int, payloads: list[bytes], targets: bytes) -> Iterator[tuple[int, int]]:
        """Send payloads[k] to the k-th wg_udp_target packed in `targets` (at most RECEIVE_SLOTS);
        yields the (index, errno) of each datagram the kernel refuses before sending the rest, so
        the caller's fallback for it keeps its place in the order."""
        count = len(payloads)
        lengths = [len(payload) for payload in payloads]
        self._len[0:count] = lengths
        self._off[0:count] = list(accumulate(lengths, initial=0))[:count]
        self.ffi.memmove(self._targets, targets, len(targets))
        joined = self.ffi.from_buffer("uint8_t[]", b"".join(payloads))
        start = 0
        while start < count:
            start += self._lib.wg_udp_send(
                self._batch,
                fd,
                joined,
                self._off + start,
                self._len + start,
                self._targets + start,
                count - start,
                self._error,
            )
            if start < count:
                yield start, self._error[0]
                start += 1


@functools.lru_cache(maxsize=1024)
def _source_text(family: int, packed: bytes, scope: int) -> str:
    """A source address as Python's socket module names it (getnameinfo: "fe80::1%eth0" if scoped)."""
    if family == 4:
        return socket.inet_ntop(socket.AF_INET, packed[:4])
    text = socket.inet_ntop(socket.AF_INET6, packed)
    if scope:
        text = socket.getnameinfo((text, 0, 0, scope), socket.NI_NUMERICHOST)[0]
    return text


@functools.lru_cache(maxsize=1024)
def target_of(endpoint: Endpoint, source: str | None) -> bytes | None:
    """The wg_udp_target sending to `endpoint` from `source`; None if `endpoint` is not an address
    (a plain send would fail on it too)."""
    family = socket.AF_INET6 if ":" in endpoint[0] else socket.AF_INET
    try:
        address = socket.getaddrinfo(
            endpoint[0], endpoint[1], family, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST
        )
        packed = socket.inet_pton(family, address[0][4][0].split("%", 1)[0])
    except OSError:
        return None
    scope = address[0][4][3] if family == socket.AF_INET6 else 0
    port = socket.htons(endpoint[1])
    if source is None:
        return _TARGET.pack(packed, scope, port, _FAMILY_NUMBER[family], 0, b"")
    via = socket.AF_INET6 if ":" in source else socket.AF_INET
    return _TARGET.pack(
        packed, scope, port, _FAMILY_NUMBER[family], _FAMILY_NUMBER[via], socket.inet_pton(via, source)
    )


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


def _queue_sockets(data: socket.socket) -> tuple[socket.socket, socket.socket] | None:
    """The handshake and priority sockets sharing `data`'s port; None if the kernel refuses.

    `data` was bound without SO_REUSEPORT, so the kernel picked (or granted) a port nobody else
    held; only then is SO_REUSEPORT set on it, for these two to join. Another socket could join
    only by binding this very port with SO_REUSEPORT as the same user (root); nothing in pywg does,
    and another pywg's data socket, bound without it, gets EADDRINUSE here as before.
    """
    joined: list[socket.socket] = []
    try:
        data.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        for _ in range(2):
            joined.append(_join(data))
        _attach_program(joined[0], _steering_program(data.family, ()))
    except OSError as error:
        for sock in joined:
            sock.close()
        data.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 0)
        _log.info("handshake messages share the data socket: %s", os.strerror(error.errno or 0))
        return None
    return joined[0], joined[1]


def _join(data: socket.socket) -> socket.socket:
    """A receive-only socket in `data`'s SO_REUSEPORT group, with the local-address option."""
    family = data.family
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, HANDSHAKE_SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setblocking(False)
        sock.bind(data.getsockname()[:2])
    except OSError:
        sock.close()
        raise
    return sock


def _steering_program(family: int, priority: Iterable[str]) -> bytes:
    """Classic BPF choosing the socket of the group (0 data, 1 handshake, 2 priority) by the first
    payload byte (4: data) and, for the others, the source address. Instructions: code, jt, jf, k."""
    program = [(0x30, 0, 0, 0), (0x15, 0, 1, 4), (0x06, 0, 0, 0)]  # ldb [0]; jeq #4; ret #0
    offsets = _SOURCE_WORDS[family]
    for packed in sorted(_packed(family, priority))[:PRIORITY_MAX]:
        words = struct.unpack(f"!{len(offsets)}I", packed)
        for i, (offset, word) in enumerate(zip(offsets, words, strict=True)):
            program.append((0x20, 0, 0, (_SKF_NET_OFF + offset) & 0xFFFFFFFF))  # ld [net + offset]
            program.append((0x15, 0, 2 * (len(words) - i) - 1, word))  # jeq: on, or past ret #2
        program.append((0x06, 0, 0, 2))
    program.append((0x06, 0, 0, 1))
    return b"".join(struct.pack("=HBBI", *insn) for insn in program)


def _packed(family: int, addresses: Iterable[str]) -> set[bytes]:
    """The addresses of `family` among `addresses`, packed (others, e.g. with a scope, left out)."""
    packed = set()
    for address in addresses:
        with contextlib.suppress(OSError):
            packed.add(socket.inet_pton(family, address))
    return packed


def _attach_program(sock: socket.socket, program: bytes) -> None:
    """SO_ATTACH_REUSEPORT_CBPF: a struct sock_fprog (length, pointer) to the instructions."""
    code = ctypes.create_string_buffer(program)
    sock.setsockopt(
        socket.SOL_SOCKET,
        SO_ATTACH_REUSEPORT_CBPF,
        struct.pack("HL", len(program) // 8, ctypes.addressof(code)),
    )


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


def _parse_ancillary(ancillary: list[tuple[int, int, bytes]]) -> tuple[str | None, int]:
    """The local address a datagram arrived on, and the GRO segment size (0: not coalesced)."""
    local: str | None = None
    segment = 0
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= _IN_PKTINFO.size:
            _ifindex, spec_dst, _addr = _IN_PKTINFO.unpack_from(data)
            local = _address_text(spec_dst)
        elif level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(data) >= _IN6_PKTINFO.size:
            address, _ifindex = _IN6_PKTINFO.unpack_from(data)
            local = _address_text(address)
        elif level == SOL_UDP and kind == UDP_GRO and len(data) >= _INT.size:
            segment = _INT.unpack_from(data)[0]
    return local, segment


@functools.lru_cache(maxsize=256)
def _address_text(packed: bytes) -> str:
    """A local address as text (a handful of them, one per received datagram: cached)."""
    return str(IPv4Address(packed) if len(packed) == 4 else IPv6Address(packed))


def _supports_gso(sock: socket.socket) -> bool:
    """UDP_SEGMENT is known to this kernel (wireguard-go conn/features_linux.go)."""
    try:
        sock.getsockopt(SOL_UDP, UDP_SEGMENT)
    except OSError:
        return False
    return True


def _enable_gro(sock: socket.socket) -> bool:
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


def _kernel_at_least(version: tuple[int, int]) -> bool:
    release = os.uname().release
    try:
        numbers = tuple(int(part) for part in release.split("-", 1)[0].split(".")[:2])
    except ValueError:
        return False
    return numbers >= version


@functools.lru_cache(maxsize=256)
def _pktinfo(source: str) -> tuple[int, int, bytes]:
    """The control message that sends from `source` (a handful of local addresses: cached)."""
    if ":" in source:
        return socket.IPPROTO_IPV6, IPV6_PKTINFO, _IN6_PKTINFO.pack(IPv6Address(source).packed, 0)
    return socket.IPPROTO_IP, IP_PKTINFO, _IN_PKTINFO.pack(0, IPv4Address(source).packed, bytes(4))
