"""UDP GSO and GRO in pywg/runtime/udp.py: batches go out in one send and come back split, in order,
and every fallback (GSO refused for good, or for one destination, or an unusable source address)
still delivers every datagram.

Over loopback, where the kernel keeps a GSO send whole up to a socket with UDP_GRO. The errors a
NIC or a path would give are injected by replacing `UdpSockets._sendmsg`; one test gets the real
EMSGSIZE from a small MTU in a namespace of its own.
"""

from __future__ import annotations

import errno
import json
import select
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pywg.core.batch import MessageRun
from pywg.native import loader
from pywg.runtime import udp
from pywg.runtime.udp import UDP_SEGMENT, UdpSockets
from tests.support.device_io import joined_run
from tests.support.topology import Topology, ipv6_loopback

pytest_plugins = ["tests.support.topology"]

Ancillary = list[tuple[int, int, bytes]]
LOOPBACK = {4: "127.0.0.1", 6: "::1"}


FAMILIES = [4, pytest.param(6, marks=pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback"))]


@pytest.fixture
def pair() -> Iterator[tuple[UdpSockets, UdpSockets]]:
    sender, receiver = UdpSockets(0), UdpSockets(0)
    try:
        yield sender, receiver
    finally:
        sender.close()
        receiver.close()


class Sends:
    """Replaces UdpSockets._sendmsg: records each send and fails the ones `fail` picks."""

    def __init__(self, fail: Callable[[Ancillary, tuple[str, int]], int | None] | None = None) -> None:
        self.fail = fail
        self.segments: list[int] = []  # per sendmsg: how many datagrams it carried (1 without GSO)

    def __call__(
        self, sock: socket.socket, buffers: list[bytes], ancillary: Ancillary, to: tuple[str, int]
    ) -> None:
        gso = [data for level, kind, data in ancillary if (level, kind) == (udp.SOL_UDP, UDP_SEGMENT)]
        failure = self.fail(ancillary, to) if self.fail else None
        if failure is not None:
            raise OSError(failure, "injected")
        size = udp._SEGMENT.unpack(gso[0])[0] if gso else 0
        self.segments.append(-(-len(buffers[0]) // size) if gso else 1)
        sock.sendmsg(buffers, ancillary, 0, to)


def gso_only(
    code: int, endpoint: tuple[str, int] | None = None
) -> Callable[[Ancillary, tuple[str, int]], int | None]:
    def fail(ancillary: Ancillary, to: tuple[str, int]) -> int | None:
        gso = any((level, kind) == (udp.SOL_UDP, UDP_SEGMENT) for level, kind, _ in ancillary)
        return code if gso and endpoint in (None, to) else None

    return fail


def datagrams(tag: int, sizes: list[int]) -> list[bytes]:
    """Distinct payloads: 4 (a data message: the kernel steers it to the data socket, not the
    handshake socket), a tag byte, the index, then filler up to the size."""
    return [
        (bytes([4, tag]) + i.to_bytes(2, "big") + bytes([i % 251]) * size)[:size]
        for i, size in enumerate(sizes)
    ]


# 100 of 1452 bytes: 45 fill one GSO send (65340 of at most 65507 bytes); then a shorter one, which
# ends its run; then 49 small ones.
SIZES = [1452] * 100 + [700] + [200] * 49


def receive_all(
    receiver: UdpSockets, family: int, count: int
) -> list[tuple[bytes, tuple[str, int], str | None]]:
    sock = receiver.v4 if family == 4 else receiver.v6
    assert sock is not None
    got: list[tuple[bytes, tuple[str, int], str | None]] = []
    while len(got) < count:
        ready, _, _ = select.select([sock], [], [], 2.0)
        if not ready:
            break
        got += receiver.receive(sock, 256)
    return got


def endpoint_of(receiver: UdpSockets, family: int) -> tuple[str, int]:
    return (LOOPBACK[family], receiver.port)


def one_run(
    payloads: list[bytes], to: tuple[str, int], source: str | None
) -> list[tuple[MessageRun, tuple[str, int], str | None]]:
    """`payloads` as the device hands over a run of messages it sealed in one call."""
    return [(joined_run(payloads), to, source)]


@pytest.mark.parametrize("family", FAMILIES)
def test_gso_send_and_gro_receive_round_trip(
    pair: tuple[UdpSockets, UdpSockets], family: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    sender, receiver = pair
    assert sender.gso and receiver.gro, "this kernel (>= 5.12 here) offers both"
    assert sender.describe_offloads().startswith("GSO on, GRO on, recvmmsg/sendmmsg ")
    sends = Sends()
    monkeypatch.setattr(UdpSockets, "_sendmsg", staticmethod(sends))
    seen: list[int] = []  # the GRO segment size of each datagram or batch received (recvmsg or recvmmsg)
    append = udp._append

    load = udp.ReceivedDatagrams.load

    def spy(out: list[udp.Received], memory: Any, start: int, size: int, segment: int, *rest: Any) -> None:
        seen.append(segment)
        append(out, memory, start, size, segment, *rest)

    def spy_load(batch: udp.ReceivedDatagrams, received: int) -> None:
        seen.extend(batch.rx[k].segment for k in range(received))
        load(batch, received)

    monkeypatch.setattr(udp, "_append", spy)
    monkeypatch.setattr(udp.ReceivedDatagrams, "load", spy_load)
    to = endpoint_of(receiver, family)
    payloads = datagrams(1, SIZES)
    assert sender.send_batch(one_run(payloads, to, LOOPBACK[family])) == []
    assert sends.segments == [45, 45, 11, 49]  # the 700-byte one ends the third chunk
    got = receive_all(receiver, family, len(payloads))
    assert [data for data, _, _ in got] == payloads
    assert {(source[1], local) for _, source, local in got} == {(sender.port, LOOPBACK[family])}
    assert max(seen) in (1452, 200) and len(seen) < len(payloads)  # GRO handed over whole runs


def test_runs_break_at_the_limits(
    pair: tuple[UdpSockets, UdpSockets], monkeypatch: pytest.MonkeyPatch
) -> None:
    sender, receiver = pair
    sends = Sends()
    monkeypatch.setattr(UdpSockets, "_sendmsg", staticmethod(sends))
    to = endpoint_of(receiver, 4)
    big = datagrams(2, [9000] * 9)  # 7 fit in 65507 bytes
    mixed = datagrams(3, [100, 100, 200, 100])  # a shorter one ends a run, a larger one starts one
    assert sender.send_batch(one_run(big + mixed, to, None)) == []
    # 7 x 9000; 2 x 9000 + 100; a lone 100 (a plain sendto, not counted here); 200 + 100.
    assert sends.segments == [7, 3, 2]
    got = receive_all(receiver, 4, len(big + mixed))
    assert [data for data, _, _ in got] == big + mixed


@pytest.mark.parametrize("family", FAMILIES)
def test_eio_turns_gso_off_for_good_and_loses_nothing(
    pair: tuple[UdpSockets, UdpSockets], family: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    sender, receiver = pair
    sends = Sends(gso_only(errno.EIO))
    monkeypatch.setattr(UdpSockets, "_sendmsg", staticmethod(sends))
    to = endpoint_of(receiver, family)
    first, second = datagrams(4, SIZES), datagrams(5, SIZES)
    assert sender.send_batch(one_run(first, to, LOOPBACK[family])) == []
    assert not sender.gso
    assert sender.send_batch(one_run(second, to, LOOPBACK[family])) == []
    assert set(sends.segments) == {1}
    got = receive_all(receiver, family, 2 * len(SIZES))
    assert [data for data, _, _ in got] == first + second


def test_emsgsize_turns_gso_off_for_that_destination_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pure Python: every datagram through _sendmsg, to count them (tests/test_udp_mmsg.py: with C).
    sender, small_path, other = UdpSockets(0, native=False), UdpSockets(0), UdpSockets(0)
    try:
        narrow, wide = endpoint_of(small_path, 4), endpoint_of(other, 4)
        sends = Sends(gso_only(errno.EMSGSIZE, narrow))
        monkeypatch.setattr(UdpSockets, "_sendmsg", staticmethod(sends))
        payloads = datagrams(6, SIZES)
        batch = one_run(payloads, narrow, "127.0.0.1") + one_run(payloads, wide, "127.0.0.1")
        assert sender.send_batch(batch) == []
        assert sender.gso and sender.gso_off == {narrow}
        assert sends.segments == [1] * len(payloads) + [45, 45, 11, 49]
        sends.segments.clear()
        assert sender.send_batch(one_run(payloads[:64], narrow, "127.0.0.1")) == []
        assert sends.segments == [1] * 64  # no second try towards it
        assert [d for d, _, _ in receive_all(small_path, 4, len(payloads) + 64)] == payloads + payloads[:64]
        assert [d for d, _, _ in receive_all(other, 4, len(payloads))] == payloads
    finally:
        for sockets in (sender, small_path, other):
            sockets.close()


def test_unusable_source_falls_back_without_blaming_gso(pair: tuple[UdpSockets, UdpSockets]) -> None:
    """The address replies used to leave from is gone: the kernel refuses it, the batch goes out
    without it, and the caller hears which source to forget; GSO stays on for the destination."""
    sender, receiver = pair
    to = endpoint_of(receiver, 4)
    payloads = datagrams(7, SIZES)
    assert sender.send_batch(one_run(payloads, to, "192.0.2.77")) == ["192.0.2.77"]
    assert sender.gso and not sender.gso_off
    assert [d for d, _, _ in receive_all(receiver, 4, len(payloads))] == payloads


def test_lost_on_a_full_queue_like_on_the_wire(
    pair: tuple[UdpSockets, UdpSockets], monkeypatch: pytest.MonkeyPatch
) -> None:
    sender, receiver = pair
    monkeypatch.setattr(UdpSockets, "_sendmsg", staticmethod(Sends(gso_only(errno.ENOBUFS))))
    assert sender.send_batch(one_run(datagrams(8, [100] * 5), endpoint_of(receiver, 4), None)) == []
    assert sender.gso and not sender.gso_off


@pytest.mark.parametrize("native", [False, True])
def test_offload_off_sends_and_receives_one_by_one(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    """Without GSO and GRO: one datagram per system call, or up to 64 with recvmmsg/sendmmsg (C)."""
    if native and not loader.available():
        pytest.fail(f"{loader.unavailable_reason()}; CI builds it (`pip install -e .`)", pytrace=False)
    sender = UdpSockets(0, offload=False, native=native)
    receiver = UdpSockets(0, offload=False, native=native)
    try:
        assert (sender.gso, sender.gro) == (False, False)
        assert (
            sender.describe_offloads() == f"GSO off, GRO off, recvmmsg/sendmmsg {'on' if native else 'off'}"
        )
        sends = Sends()
        monkeypatch.setattr(UdpSockets, "_sendmsg", staticmethod(sends))
        payloads = datagrams(9, SIZES)
        assert sender.send_batch(one_run(payloads, endpoint_of(receiver, 4), "127.0.0.1")) == []
        assert sends.segments == ([] if native else [1] * len(payloads))  # sendmmsg bypasses _sendmsg
        assert [d for d, _, _ in receive_all(receiver, 4, len(payloads))] == payloads
    finally:
        sender.close()
        receiver.close()


SMALL_MTU_SCRIPT = """
import json, select
from tests.support.device_io import joined_run
from pywg.runtime.udp import UdpSockets
sender, receiver = UdpSockets(0), UdpSockets(0)
payloads = [bytes([4, i]) * 726 for i in range(100)]  # 4: data messages, for the data socket
to = ("127.0.0.1", receiver.port)
sender.send_batch([(joined_run(payloads), to, None)])
got = []
while len(got) < len(payloads) and select.select([receiver.v4], [], [], 2.0)[0]:
    got += [d for d, _, _ in receiver.receive(receiver.v4, 256)]
print(json.dumps({"same": got == payloads, "gso": sender.gso, "off": [list(e) for e in sender.gso_off]}))
"""


@pytest.mark.root
def test_real_emsgsize_from_a_small_mtu(topology: Topology) -> None:
    """Datagrams larger than the path MTU: the kernel refuses the GSO send (EMSGSIZE; EINVAL on
    older kernels), the datagrams go one by one and are fragmented, none is lost."""
    host = topology.host("gso")
    host.ip("link", "set", "lo", "mtu", "1300")
    done = host.run([sys.executable, "-c", SMALL_MTU_SCRIPT], timeout=30)
    result = json.loads(done.stdout)
    assert result["same"], "datagrams were lost"
    assert result["gso"] and [address for address, _ in result["off"]] == ["127.0.0.1"]


def test_gso_probe_failure_means_plain_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(udp, "_supports_gso", lambda sock: False)
    monkeypatch.setattr(udp, "_kernel_at_least", lambda version: False)
    sockets = UdpSockets(0)
    try:
        assert (sockets.gso, sockets.gro) == (False, False)
    finally:
        sockets.close()


def test_kernel_version_check() -> None:
    assert udp._kernel_at_least((2, 6))
    assert not udp._kernel_at_least((999, 0))
