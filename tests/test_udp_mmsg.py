"""recvmmsg and sendmmsg in C (pywg/native/udpio.c) against real sockets on loopback, and UdpSockets with
the C path's system calls and with pure Python's: the same datagrams, sources and local addresses."""

from __future__ import annotations

import errno
import select
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from pywg.core.batch import MessageRun
from pywg.native import loader
from pywg.runtime import udp
from pywg.runtime.udp import UdpSockets
from tests.support.device_io import joined_run
from tests.support.topology import ipv6_loopback

pytestmark = pytest.mark.skipif(
    not loader.built() or not hasattr(loader.extension()[1], "wg_udp_recv"), reason="C extension not built"
)

LOOPBACK = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}
SLOT = 2048


FAMILIES = [
    socket.AF_INET,
    pytest.param(socket.AF_INET6, marks=pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")),
]


class C:
    """The extension's functions with the buffers they need, as udp.py holds them."""

    def __init__(self, slots: int = 64) -> None:
        self.ffi, self.lib = loader.extension()
        self.headers = self.ffi.new("char[]", self.lib.wg_udp_batch_size())
        self.batch = self.ffi.cast("wg_udp_batch *", self.headers)
        self.pool = self.ffi.new("uint8_t[]", slots * SLOT)
        self.rx = self.ffi.new("wg_udp_rx[]", slots)
        self.error = self.ffi.new("int *")

    def recv(self, sock: socket.socket, n: int) -> list[tuple[bytes, str, int, str | None, bool]]:
        """(data, source address, source port, local address, truncated) per datagram."""
        count = self.lib.wg_udp_recv(self.batch, sock.fileno(), self.pool, SLOT, n, self.rx, self.error)
        assert count >= 0, self.error[0]
        return [self.entry(k) for k in range(count)]

    def entry(self, k: int) -> tuple[bytes, str, int, str | None, bool]:
        rx = self.rx[k]
        family = socket.AF_INET if rx.family == 4 else socket.AF_INET6
        width = 4 if rx.family == 4 else 16
        local = None
        if rx.local_family:
            local_family = socket.AF_INET if rx.local_family == 4 else socket.AF_INET6
            local = socket.inet_ntop(local_family, bytes(rx.local)[: 4 if rx.local_family == 4 else 16])
        data = bytes(self.ffi.buffer(self.pool + rx.offset, rx.length))
        source = socket.inet_ntop(family, bytes(rx.source)[:width])
        return data, source, rx.port, local, bool(rx.truncated)

    def send(self, sock: socket.socket, items: list[tuple[bytes, bytes]]) -> tuple[int, int]:
        """Send (payload, packed wg_udp_target) pairs; (how many went, errno of the next)."""
        payloads = [payload for payload, _ in items]
        joined = b"".join(payloads)
        offsets, position = [], 0
        for payload in payloads:
            offsets.append(position)
            position += len(payload)
        off = self.ffi.new("uint32_t[]", offsets or [0])
        length = self.ffi.new("uint32_t[]", [len(p) for p in payloads] or [0])
        targets = self.ffi.new("wg_udp_target[]", max(1, len(items)))
        self.ffi.memmove(targets, b"".join(target for _, target in items), 40 * len(items))
        buf = self.ffi.from_buffer("uint8_t[]", joined)
        sent = self.lib.wg_udp_send(
            self.batch, sock.fileno(), buf, off, length, targets, len(items), self.error
        )
        return sent, self.error[0]


def receiver(family: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, udp.IP_PKTINFO, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind((LOOPBACK[family], 0))
    sock.setblocking(False)
    return sock


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    made: list[socket.socket] = []
    yield made
    for sock in made:
        sock.close()


def wait(sock: socket.socket) -> None:
    select.select([sock], [], [], 2.0)


@pytest.mark.parametrize("family", FAMILIES)
def test_recv_keeps_order_sizes_sources_and_local_addresses(
    family: int, sockets: list[socket.socket]
) -> None:
    into, out = receiver(family), socket.socket(family, socket.SOCK_DGRAM)
    sockets += [into, out]
    out.bind((LOOPBACK[family], 0))
    payloads = [bytes([i]) * size for i, size in enumerate([1, 148, 92, 1500, 2048, 7, 0, 300])]
    for payload in payloads:
        out.sendto(payload, into.getsockname()[:2])
    wait(into)
    c = C()
    got = c.recv(into, 64)
    assert [data for data, *_ in got] == payloads
    assert {(source, port, local, truncated) for _, source, port, local, truncated in got} == {
        (LOOPBACK[family], out.getsockname()[1], LOOPBACK[family], False)
    }
    assert c.recv(into, 64) == []  # EAGAIN: nothing waiting


def test_recv_takes_at_most_n_and_the_rest_stays_queued(sockets: list[socket.socket]) -> None:
    into, out = receiver(socket.AF_INET), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sockets += [into, out]
    for i in range(100):
        out.sendto(i.to_bytes(2, "big"), into.getsockname())
    wait(into)
    c = C()
    first = c.recv(into, 30)
    rest = c.recv(into, 1000) + c.recv(into, 1000)  # at most WG_UDP_BATCH (64) per call
    assert len(first) == 30 and len(rest) == 70
    assert [int.from_bytes(d, "big") for d, *_ in first + rest] == list(range(100))


def test_recv_marks_truncated_datagrams_and_goes_on(sockets: list[socket.socket]) -> None:
    into, out = receiver(socket.AF_INET), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sockets += [into, out]
    for payload in (b"a" * 100, b"b" * (SLOT + 1), b"c" * SLOT):
        out.sendto(payload, into.getsockname())
    wait(into)
    got = C().recv(into, 64)
    assert [(len(data), truncated) for data, *_, truncated in got] == [
        (100, False),
        (SLOT, True),
        (SLOT, False),
    ]


def test_recv_reports_errors() -> None:
    c = C()
    assert c.lib.wg_udp_recv(c.batch, -1, c.pool, SLOT, 8, c.rx, c.error) == -1
    assert c.error[0] == errno.EBADF


@pytest.mark.parametrize("family", FAMILIES)
def test_send_to_several_endpoints_in_order_with_sources(family: int, sockets: list[socket.socket]) -> None:
    targets = [receiver(family) for _ in range(3)]
    out = socket.socket(family, socket.SOCK_DGRAM)
    sockets += [*targets, out]
    out.bind((LOOPBACK[family], 0))
    items = [
        (
            bytes([i]) * (10 + i),
            udp.target_of(targets[i % 3].getsockname()[:2], LOOPBACK[family] if i % 2 else None),
        )
        for i in range(60)
    ]
    assert all(target is not None for _, target in items)
    assert C().send(out, items) == (60, 0)  # type: ignore[arg-type]
    for k, sock in enumerate(targets):
        wait(sock)
        got = C().recv(sock, 64)
        assert [data for data, *_ in got] == [bytes([i]) * (10 + i) for i in range(k, 60, 3)]
        assert {(source, port) for _, source, port, _, _ in got} == {(LOOPBACK[family], out.getsockname()[1])}


def test_send_stops_at_a_refused_datagram_and_says_why(sockets: list[socket.socket]) -> None:
    into, out = receiver(socket.AF_INET), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sockets += [into, out]
    to = into.getsockname()
    items: list[tuple[bytes, Any]] = [
        (b"first", udp.target_of(to, None)),
        (b"gone", udp.target_of(to, "192.0.2.77")),  # not ours: the kernel refuses the source
        (b"third", udp.target_of(to, "127.0.0.1")),
    ]
    c = C()
    sent, error = c.send(out, items)
    assert (sent, error in udp.SOURCE_GONE) == (1, True)
    assert c.send(out, items[2:]) == (1, 0)
    wait(into)
    assert [data for data, *_ in c.recv(into, 64)] == [b"first", b"third"]


# UdpSockets: the same traffic read with recvmmsg (the C path) and with recvmsg (pure Python).


def make(mmsg: bool, offload: bool = True) -> UdpSockets:
    return UdpSockets(0, offload=offload, native=mmsg)


def singles(
    datagrams: list[tuple[bytes, tuple[str, int], str | None]],
) -> list[tuple[MessageRun, tuple[str, int], str | None]]:
    """Each datagram a run of its own, as the device hands over handshake messages."""
    return [(MessageRun.of(data), to, source) for data, to, source in datagrams]


def drain(sockets: UdpSockets, count: int, limit: int = 256) -> list[udp.Received]:
    got: list[udp.Received] = []
    while len(got) < count:
        ready, _, _ = select.select(sockets.sockets, [], [], 2.0)
        if not ready:
            break
        for sock in ready:
            got += sockets.receive(sock, limit)
    return got


def handshake_like(tag: int, count: int) -> list[bytes]:
    """Type 1 (an initiation's type byte): the kernel steers them to the handshake socket."""
    return [bytes([1, tag]) + i.to_bytes(2, "big") + bytes(144) for i in range(count)]


@pytest.mark.parametrize("mmsg", [True, False])
@pytest.mark.parametrize("family", FAMILIES)
def test_receive_gives_the_same_with_mmsg_on_and_off(
    mmsg: bool, family: int, sockets: list[socket.socket]
) -> None:
    into = make(mmsg)
    out = socket.socket(family, socket.SOCK_DGRAM)
    sockets.append(out)
    out.bind((LOOPBACK[family], 0))
    try:
        assert isinstance(into.io, udp._Mmsg) == mmsg
        assert into.describe_offloads().endswith(f"recvmmsg/sendmmsg {'on' if mmsg else 'off'}")
        payloads = handshake_like(1, 100)
        for payload in payloads:
            out.sendto(payload, (LOOPBACK[family], into.port))
        got = drain(into, len(payloads))
        assert [data for data, _, _ in got] == payloads
        assert all(type(data) is bytes for data, _, _ in got)
        assert {(source, local) for _, source, local in got} == {
            ((LOOPBACK[family], out.getsockname()[1]), LOOPBACK[family])
        }
    finally:
        into.close()


def test_receive_bounds_each_call_and_reuses_its_pool(sockets: list[socket.socket]) -> None:
    into = make(mmsg=True, offload=False)  # no GRO: the data socket uses recvmmsg too
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sockets.append(out)
    try:
        assert into.v4 is not None
        pool = into._pools[into.v4.fileno()]
        assert pool.slots == udp.RECEIVE_SLOTS
        payloads = [bytes([4, i]) + bytes(1000) for i in range(100)]
        for payload in payloads:
            out.sendto(payload, ("127.0.0.1", into.port))
        wait(into.v4)
        first = into.receive(into.v4, 32)
        assert len(first) == 32
        rest = drain(into, 68)
        assert [data for data, _, _ in first + rest] == payloads
        assert into._pools[into.v4.fileno()] is pool
        assert into.receive(into.v4, 32) == []
    finally:
        into.close()


def test_gro_socket_takes_a_few_gro_batches_per_call() -> None:
    sockets = make(mmsg=True)
    try:
        if not sockets.gro:
            pytest.skip("no UDP GRO on this kernel")
        assert {sockets._pools[s.fileno()].slots for s in sockets.data_sockets} == {udp.GRO_SLOTS}
        handshake = sockets.handshake_sockets + sockets.priority_sockets
        assert {sockets._pools[s.fileno()].slots for s in handshake} <= {udp.RECEIVE_SLOTS}
    finally:
        sockets.close()


class Spy:
    """Wraps the C sender: how many datagrams each sendmmsg carried."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls: list[int] = []

    def __call__(self, fd: int, payloads: list[bytes], targets: bytes) -> Iterator[tuple[int, int]]:
        self.calls.append(len(payloads))
        yield from self.real(fd, payloads, targets)


@pytest.mark.parametrize("gso", [True, False])
def test_datagrams_to_several_endpoints_leave_in_sendmmsg_in_order(
    monkeypatch: pytest.MonkeyPatch, gso: bool
) -> None:
    sender = make(mmsg=True, offload=gso)
    receivers = [make(mmsg=True) for _ in range(3)]
    try:
        spy = Spy(sender.io.send)  # type: ignore[attr-defined]
        monkeypatch.setattr(sender.io, "send", spy)
        ends = [("127.0.0.1", r.port) for r in receivers]
        data = [bytes([4, i]) + bytes(200) for i in range(150)]
        # Interleaved endpoints (runs of one), then a run of 40 to one endpoint, then interleaved again.
        batch = [(d, ends[i % 3], "127.0.0.1") for i, d in enumerate(data[:90])]
        batch += [(d, ends[0], "127.0.0.1") for d in data[90:130]]
        batch += [(d, ends[i % 3], None) for i, d in enumerate(data[130:])]
        outbox = [*singles(batch[:90]), (joined_run(data[90:130]), ends[0], "127.0.0.1")]
        assert sender.send_batch(outbox + singles(batch[130:])) == []
        if gso:
            assert spy.calls == [64, 26, 20]  # the run of 40 went with GSO between them
        else:
            assert spy.calls == [64, 64, 22]
        for k, r in enumerate(receivers):
            expected = [d for d, to, _ in batch if to == ends[k]]
            assert [d for d, _, _ in drain(r, len(expected))] == expected
    finally:
        for sockets in (sender, *receivers):
            sockets.close()


def test_unusable_source_in_sendmmsg_falls_back_and_is_reported() -> None:
    sender, into = make(mmsg=True, offload=False), make(mmsg=True)
    try:
        to = ("127.0.0.1", into.port)
        data = [bytes([4, i]) + bytes(100) for i in range(10)]
        batch = [(d, to, "192.0.2.77" if i % 2 else "127.0.0.1") for i, d in enumerate(data)]
        assert sender.send_batch(singles(batch)) == ["192.0.2.77"]
        assert [d for d, _, _ in drain(into, len(data))] == data
    finally:
        sender.close()
        into.close()


def test_not_an_address_is_lost_like_a_plain_send() -> None:
    sender, into = make(mmsg=True, offload=False), make(mmsg=True)
    try:
        to = ("127.0.0.1", into.port)
        batch = [
            (b"\x04one", to, None),
            (b"\x04lost", ("no-such-host.invalid", 1), None),
            (b"\x04two", to, None),
        ]
        assert sender.send_batch(singles(batch)) == []
        assert [d for d, _, _ in drain(into, 2)] == [b"\x04one", b"\x04two"]
    finally:
        sender.close()
        into.close()
