"""Batches where the adapters keep them (pywg/core/batch.py): the C answers equal the Python ones, and the
C path does its Python work once per run, not once per packet.

The device handles runs; the C path's batches (`BufferPackets` for the TUN reader,
`ReceivedDatagrams` for a UDP socket's pool) find the runs in C, seal and open the packets where
they lie, and deliver them from there. Here each C answer is held to the plain-Python batch
(`PacketList`, `DatagramList`) and the Python session on the same input, and a C device fed C
batches must send and deliver exactly what a pure-Python one fed lists does.
"""

from __future__ import annotations

import mmap
import random
import socket
import sys
from array import array
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest

from pywg.core.batch import DatagramList, MessageRun, PacketList, Received
from pywg.core.constants import MESSAGE_DATA
from pywg.core.device import Device
from pywg.core.messages import DATA_HEADER
from pywg.core.transport import PythonCrypto, PythonSession, RxStatus
from pywg.native import hotpath, loader
from pywg.native.hotpath import BufferPackets, CCrypto, COpenedRun
from pywg.runtime import udp
from tests.support.device_io import datagrams_to_send, packets_to_deliver, sealed_messages, send_packet
from tests.support.netsim import Network, connect, ipv4_packet, ipv6_packet

A = ("192.0.2.1", 51820)
B = ("192.0.2.2", 51820)
A_IPS = "10.0.0.1/32,fd00::1/128"
B_IPS = "10.0.0.2/32,fd00::2/128"


@pytest.fixture(autouse=True)
def built() -> None:
    if not loader.built():
        pytest.fail(f"{loader.unavailable_reason()}; CI builds it (`pip install -e .`)", pytrace=False)


def buffer_packets(packets: list[bytes], gap: int = 0) -> BufferPackets:
    """`packets` one after another in a C buffer (with `gap` bytes between them)."""
    batch = BufferPackets(bytearray(sum(map(len, packets)) + gap * len(packets) + 1), max(1, len(packets)))
    position = 0
    for i, packet in enumerate(packets):
        batch.memory[position : position + len(packet)] = packet
        batch.offsets[i], batch.lengths[i] = position, len(packet)
        position += len(packet) + gap
    batch.count = len(packets)
    return batch


def mixed_packets(rng: random.Random, count: int) -> list[bytes]:
    """IPv4 and IPv6 packets to a few destinations in runs, and some that are no IP packet."""
    destinations = ["10.0.0.2", "10.0.0.3", "fd00::2", "fd00::3"]
    packets: list[bytes] = []
    while len(packets) < count:
        kind = rng.random()
        run = rng.randrange(1, 6)
        if kind < 0.1:
            packets += [rng.randbytes(rng.randrange(0, 40)) for _ in range(run)]
            continue
        destination = rng.choice(destinations)
        make = ipv6_packet if ":" in destination else ipv4_packet
        source = "fd00::1" if ":" in destination else "10.0.0.1"
        packets += [make(source, destination, rng.randbytes(rng.randrange(0, 1400))) for _ in range(run)]
    return packets[:count]


@pytest.mark.parametrize("seed", range(8))
def test_destination_runs_match_python(seed: int) -> None:
    packets = mixed_packets(random.Random(seed), 200)
    assert list(buffer_packets(packets, gap=seed).destination_runs()) == list(
        PacketList(packets).destination_runs()
    )
    assert buffer_packets(packets).packets(5, 9) == packets[5:9]


@pytest.mark.parametrize("seed", range(8))
def test_gso_chunks_match_python(seed: int) -> None:
    rng = random.Random(seed)
    sizes = array("I", [rng.choice([1452, 1452, 1452, 700, 80, 1500, 32]) for _ in range(300)])
    for limit in (65507, 65527, 3000):
        in_c = udp._Mmsg().gso_chunks(sizes, limit)
        assert in_c == udp.gso_chunks(sizes, limit) and in_c[-1] == len(sizes)


def sealed(session: Any, packets: Any, start: int, stop: int, counter: int) -> tuple[bytes, list[int]]:
    run = session.seal_run(packets, start, stop, 7, counter, 1420)
    return bytes(run.payload), list(run.sizes)


@pytest.mark.parametrize("seed", range(4))
def test_seal_run_from_a_buffer_matches_python(seed: int) -> None:
    rng = random.Random(seed)
    packets = mixed_packets(rng, 60)
    keys = rng.randbytes(32), rng.randbytes(32)
    reference = sealed(PythonSession(*keys), PacketList(packets), 3, 57, 1000)
    c = CCrypto()
    assert sealed(c.session(*keys), c.packets(packets), 3, 57, 1000) == reference
    assert sealed(c.session(*keys), buffer_packets(packets), 3, 57, 1000) == reference
    # Packets not one after another (the worst-case room is taken on the second try).
    assert sealed(c.session(*keys), buffer_packets(packets, gap=3000), 3, 57, 1000) == reference


def transport_messages(rng: random.Random, key: bytes, count: int) -> list[bytes]:
    """Data messages as they arrive: most authentic, some tampered, replayed, cut, keepalives,
    packets from several inner sources, malformed inner packets."""
    crypto = PythonCrypto()
    sender = crypto.session(key, bytes(32))
    sources = ["10.0.0.1", "10.0.0.1", "10.0.0.9", "fd00::1"]
    messages: list[bytes] = []
    counter = 0
    while len(messages) < count:
        fate = rng.random()
        source = rng.choice(sources)
        make = ipv6_packet if ":" in source else ipv4_packet
        destination = "fd00::2" if ":" in source else "10.0.0.2"
        plain = b"" if fate < 0.05 else make(source, destination, rng.randbytes(rng.randrange(1300)))
        if 0.05 <= fate < 0.08:
            plain = b"\x45" + rng.randbytes(30)  # authentic, but no IP packet inside
        (message,) = sealed_messages(crypto, sender, [plain], 5, counter, 1420)
        counter += 1
        if fate > 0.95:
            message = message[:-1] + bytes([message[-1] ^ 1])
        elif fate > 0.92 and messages:
            message = rng.choice(messages)
        elif fate > 0.9:
            message = message[: rng.randrange(0, 32)]
        messages.append(message)
    return messages


def opened_summary(run: Any, keep: Callable[[bytes], bool]) -> tuple[Any, ...]:
    runs = list(run.source_runs())
    for source, start, stop in runs:
        if keep(source):
            run.keep(start, stop)
    figures = (run.accepted, run.accepted_bytes, run.first_accepted, run.last_accepted, run.data_received)
    return figures, list(run.drop_counts()), runs, run.kept(), run.packets()


def received(messages: list[bytes]) -> list[Received]:
    return [(message, ("192.0.2.1", 51820), None) for message in messages]


@pytest.mark.parametrize("seed", range(6))
def test_open_run_matches_python(seed: int) -> None:
    rng = random.Random(seed)
    key = rng.randbytes(32)
    messages = transport_messages(rng, key, 120)
    allowed = {bytes([10, 0, 0, 1])}

    def keep(source: bytes) -> bool:
        return source in allowed

    python = PythonSession(bytes(32), key).open_run(DatagramList(received(messages)), 10, 110)
    reference = opened_summary(python, keep)
    c_pool = CCrypto().session(bytes(32), key).open_run(pool_datagrams(messages), 10, 110)
    assert isinstance(c_pool, COpenedRun) and opened_summary(c_pool, keep) == reference
    assert reference[1] and reference[3]  # the scenario has drops and deliveries


def pool_datagrams(messages: list[bytes], gro: int = 0, ports: int = 1) -> udp.ReceivedDatagrams:
    """`messages` as wg_udp_recv would have left them in a pool: one per slot, or glued in GRO
    batches of up to `gro` in 64 KiB (all of one size but the last, as the kernel's GRO does);
    from 192.0.2.1, its port changing from slot to slot among `ports`."""
    entries: list[list[bytes]] = []
    for message in messages:
        last = entries[-1] if entries else None
        fits = last and len(last) < gro and sum(map(len, last)) + len(message) < 65536
        if gro and fits and 0 < len(message) <= len(last[0]) == len(last[-1]):
            last.append(message)
        else:
            entries.append([message])
    memory = mmap.mmap(-1, len(entries) * 65536)
    batch = udp.ReceivedDatagrams(memory, len(entries), len(messages))
    for k, glued in enumerate(entries):
        data = b"".join(glued)
        memory[k * 65536 : k * 65536 + len(data)] = data
        entry = batch.rx[k]
        entry.offset, entry.length, entry.port, entry.family = k * 65536, len(data), 51820 + k % ports, 4
        entry.segment = len(glued[0]) if len(glued) > 1 else 0
        entry.source[0:4] = socket.inet_aton("192.0.2.1")
    batch.load(len(entries))
    return batch


@pytest.mark.parametrize("gro", [0, 4])
def test_received_datagrams_match_a_list(gro: int) -> None:
    rng = random.Random(gro)
    key = rng.randbytes(32)
    messages = transport_messages(rng, key, 300)
    messages[7:7] = [b"\x01\x00\x00\x00" + bytes(144), b"", b"\x04\x00\x00\x00" + bytes(20)]  # not data
    crypto = PythonCrypto()
    other = sealed_messages(crypto, crypto.session(key, bytes(32)), [b""] * 3, 99, 0, 1420)
    messages[50:50] = other  # another receiver index in the middle of a run
    batch = pool_datagrams(messages, gro, ports=2)
    assert [batch.data(i) for i in range(len(batch))] == messages
    as_list = [(batch.data(i), *batch.origin(i)) for i in range(len(batch))]
    assert list(batch.runs()) == list(DatagramList(as_list).runs())
    assert {(source, local) for _, source, local in as_list} == {
        (("192.0.2.1", 51820), None),
        (("192.0.2.1", 51821), None),
    }


def device_pair(crypto: Callable[[], Any]) -> tuple[Network, Device, Device]:
    net = Network()
    a = net.device(A, 1, crypto=crypto())
    b = net.device(B, 2, crypto=crypto())
    connect(a, b, A, B, a_ips=A_IPS, b_ips=B_IPS)
    return net, a, b


def wire_run(batches: str) -> tuple[list[bytes], list[bytes], dict[str, int]]:
    """A sends mixed packets to B through the device API, with lists or with C batches; what went
    on the wire, what B delivered, and A's drops."""
    net, a, b = device_pair(CCrypto if batches == "c" else PythonCrypto)
    send_packet(a, ipv4_packet("10.0.0.1", "10.0.0.2"))
    net.pump()
    packets_to_deliver(b)
    rng = random.Random(1)
    wire: list[bytes] = []
    delivered: list[bytes] = []
    for _ in range(5):
        packets = mixed_packets(rng, 150)
        a.send_batch(buffer_packets(packets) if batches == "c" else PacketList(packets))
        messages = [data for data, _, _ in datagrams_to_send(a)]
        wire += messages
        arrived = pool_datagrams(messages, gro=8) if batches == "c" else DatagramList(received(messages))
        b.receive_batch(arrived)
        delivered += packets_to_deliver(b)
    assert not b.drops
    return wire, delivered, dict(a.drops)


def test_a_device_fed_c_batches_does_what_one_fed_lists_does() -> None:
    in_c, in_python = wire_run("c"), wire_run("python")
    assert in_c == in_python
    # Half the destinations have no peer, a tenth of the packets no IP header.
    assert len(in_c[1]) > 300 and set(in_c[2]) == {"no_route", "malformed_inner"}


class CallCounter:
    """Python and C function calls made while it is active (sys.setprofile)."""

    def __init__(self) -> None:
        self.calls = 0

    def __enter__(self) -> CallCounter:
        sys.setprofile(self._count)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setprofile(None)

    def _count(self, frame: FrameType, event: str, arg: Any) -> None:
        if event in ("call", "c_call"):
            self.calls += 1


def sealed_and_delivered(a: Device, b: Device, count: int) -> tuple[CallCounter, CallCounter]:
    """The Python calls of sealing `count` TCP-sized packets to one peer from a TUN batch, and of
    opening and delivering them from a GRO batch."""
    tx = buffer_packets([ipv4_packet("10.0.0.1", "10.0.0.2", bytes(1380)) for _ in range(count)])
    with CallCounter() as sending:
        a.send_batch(tx)
        outbox = a.take_outbox()
    run = outbox[0][0]
    assert len(outbox) == 1 and isinstance(run, MessageRun) and len(run) == count
    rx = pool_datagrams(run.messages(), gro=64)
    offsets, lengths = hotpath._ffi.new("uint32_t[]", count), hotpath._ffi.new("uint32_t[]", count)
    with CallCounter() as receiving:
        b.receive_batch(rx)
        runs = b.take_deliveries()
        delivered = sum(run.inner(offsets, lengths) for run in runs if isinstance(run, COpenedRun))
    assert delivered == count
    return sending, receiving


def calls_for(count: int) -> tuple[int, int]:
    """`sealed_and_delivered` in the steady state: a session up, the scratch buffers grown."""
    net, a, b = device_pair(CCrypto)
    send_packet(a, ipv4_packet("10.0.0.1", "10.0.0.2"))
    net.pump()
    packets_to_deliver(b)
    sealed_and_delivered(a, b, 64)
    sending, receiving = sealed_and_delivered(a, b, count)
    return sending.calls, receiving.calls


def test_python_work_is_per_run_not_per_packet() -> None:
    """64 packets cost the same Python calls as 8: no Python object or call per packet."""
    assert calls_for(64) == calls_for(8)


def test_zeroed_keys_open_nothing_in_place() -> None:
    session = CCrypto().session(bytes(32), bytes(range(32)))
    crypto = PythonCrypto()
    (message,) = sealed_messages(crypto, crypto.session(bytes(range(32)), bytes(32)), [b""], 1, 0, 1420)
    session.zero()
    run = session.open_run(pool_datagrams([message, DATA_HEADER.pack(MESSAGE_DATA, 1, 1)]), 0, 2)
    assert run.accepted == 0 and dict(run.drop_counts()) == {RxStatus.AUTH_FAILED: 1, RxStatus.MALFORMED: 1}
