#!/usr/bin/env python3
"""Fuzz target: the device's receive path, fed the four message types as the engine feeds them.

Every input runs in a fresh, deterministic world on a fake clock: the device under test (DUT)
has a live session with peer A (A initiated, with a preshared key) and an initiation of its own
in flight to peer C. The input is a list of steps (`Reader`): datagrams for the DUT, in batches
(fuzzed bytes; one of the world's real messages with fuzzed mutations, MAC1 recomputed or not,
so mutations get past MAC1 to the Diffie-Hellman and the AEAD; a data message sealed with A's
real session around a fuzzed inner packet and counter, so the replay window and the inner-packet
checks are reached); a round of real traffic between the devices; a clock jump with timers; the
DUT put under load; packets from the DUT's TUN side; A or C sending a packet.

With the C hot path built (and PYWG_NO_EXT unset), every step also runs on a second DUT that
uses it, fed its batches as the engine hands them over (`ReceivedDatagrams` as recvmmsg leaves
them, `BufferPackets`: runs found and opened in place in C); both DUTs
must give identical results. Checked after every step: no exception;
at most one drop per datagram, and exactly one `malformed` for each datagram of no valid type;
every packet delivered is a whole IPv4 or IPv6 packet from an allowed source; every datagram
sent is a well-formed message.
"""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network

import atheris

with atheris.instrument_imports(include=["pywg", "_common"]):
    from _common import Reader, fuzz
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    from pywg.core.batch import DatagramList, Datagrams, Received
    from pywg.core.clock import FakeClock
    from pywg.core.constants import MESSAGE_DATA, MESSAGE_INITIATION, MESSAGE_RESPONSE
    from pywg.core.cookie import mac1_key
    from pywg.core.crypto import aead_nonce, clamp, mac
    from pywg.core.device import Device
    from pywg.core.endpoint import Endpoint
    from pywg.core.messages import DATA_HEADER, mac1_offset, message_type
    from pywg.core.transport import Crypto, PythonCrypto, inner_packet
    from pywg.native import hotpath, loader
    from pywg.runtime.udp import ReceivedDatagrams

A_AT: Endpoint = ("192.0.2.1", 51820)
DUT_AT: Endpoint = ("192.0.2.2", 51820)
C_AT: Endpoint = ("2001:db8::3", 51820)
A_IPS = ("10.0.0.1/32", "fd00::1/128")
C_IPS = ("10.0.0.3/32",)
DUT_IPS = ("10.0.0.2/32", "fd00::2/128")
ALLOWED = [ip_network(net) for net in A_IPS + C_IPS]
PSK = bytes(range(32))
SOURCES: tuple[Endpoint, ...] = (
    A_AT,
    C_AT,
    ("192.0.2.99", 1),
    ("2001:db8::99", 65535),
    ("fe80::1%lo", 51820),  # a scope the C path's batch can name too (ifindex 1)
    ("0.0.0.0", 0),
)
LOCALS = (None, "192.0.2.2", "2001:db8::2")
# (inner source, inner destination): arriving from the peers, and leaving the DUT's TUN.
INNER_FROM_PEERS = (
    ("10.0.0.1", "10.0.0.2"),
    ("10.0.0.99", "10.0.0.2"),
    ("10.0.0.3", "10.0.0.2"),
    ("fd00::1", "fd00::2"),
    ("fd00::99", "fd00::2"),
)
INNER_FROM_TUN = (
    ("10.0.0.2", "10.0.0.1"),
    ("10.0.0.2", "10.0.0.3"),
    ("10.0.0.2", "10.9.9.9"),
    ("fd00::2", "fd00::1"),
    ("fd00::2", "fd00::77"),
)
CLOCK_JUMPS = (0.0, 0.02, 1.0, 5.0, 10.0, 15.0, 25.0, 120.0, 180.0, 540.0)
MAX_STEPS = 48


class SeededRng:
    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def __call__(self, n: int) -> bytes:
        return self._random.randbytes(n)


def ip_packet(source: str, destination: str, payload: bytes) -> bytes:
    """A UDP-less IP packet (protocol 17, whatever the payload): all the device looks at."""
    src, dst = ip_address(source).packed, ip_address(destination).packed
    if len(src) == 4:
        return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, 17, 0, src, dst) + payload
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), 17, 64, src, dst) + payload


def _device(seed: int, clock: FakeClock, crypto: Crypto) -> Device:
    key = clamp(random.Random(seed).randbytes(32))
    return Device(key, clock=clock, rng=SeededRng(seed), crypto=crypto)


def _connect(device: Device, other: Device, at: Endpoint, ips: tuple[str, ...], psk: bytes | None) -> None:
    assert other.public_key is not None
    peer = device.add_peer(other.public_key, psk, at)
    for net in ips:
        device.allowed_ips.insert(ip_network(net), peer)


@dataclass
class World:
    clock: FakeClock
    a: Device
    c: Device
    duts: list[Device]
    # sent by the DUT, not yet delivered
    in_flight: list[tuple[bytes, Endpoint, str | None]] = field(default_factory=list)


def new_world() -> World:
    clock = FakeClock()
    cryptos: list[Crypto] = [PythonCrypto()]
    if loader.available():
        cryptos.append(hotpath.CCrypto())
    world = World(clock, _device(1, clock, PythonCrypto()), _device(3, clock, PythonCrypto()), [])
    world.duts = [_device(2, clock, crypto) for crypto in cryptos]
    for dut in world.duts:
        _connect(dut, world.a, A_AT, A_IPS, PSK)
        _connect(dut, world.c, C_AT, C_IPS, None)
    _connect(world.a, world.duts[0], DUT_AT, DUT_IPS, PSK)
    _connect(world.c, world.duts[0], DUT_AT, DUT_IPS, None)
    send(world.a, [ip_packet("10.0.0.1", "10.0.0.2", b"first")])
    for _ in range(3):  # initiation, response, data
        pump(world)
    assert world.duts[0].peers[world.a.public_key].keypairs.current is not None  # type: ignore[index]
    for dut in world.duts:  # an initiation to C, left in flight
        send(dut, [ip_packet("10.0.0.2", "10.0.0.3", b"to c")])
    observe(world)
    return world


# --------------------------------------------------------------------------------------------
# Invariants


def observe(world: World) -> None:
    """Drain the DUTs: the same outputs from each, all well-formed; keep what they sent."""
    outputs = [_outputs(dut) for dut in world.duts]
    for other in outputs[1:]:
        assert other == outputs[0], f"C and Python data paths differ:\n{other}\n{outputs[0]}"
    sent, delivered, _, _ = outputs[0]
    for data, _, _ in sent:
        assert message_type(data) is not None, f"the device sent a malformed datagram: {data.hex()}"
    for packet in delivered:
        inner = inner_packet(packet) if packet else None
        assert inner is not None and inner[0] == packet, f"delivered a broken packet: {packet.hex()}"
        source = ip_address(inner[1])
        assert any(source in net for net in ALLOWED), f"delivered a packet from {source}"
    world.in_flight += sent


def _outputs(
    dut: Device,
) -> tuple[list[tuple[bytes, Endpoint, str | None]], list[bytes], list[object], dict[str, int]]:
    events = [(type(e).__name__, getattr(e, "endpoint", None)) for e in iter(dut.next_event, None)]
    return sent(dut), delivered(dut), events, dict(dut.drops)


def sent(device: Device) -> list[tuple[bytes, Endpoint, str | None]]:
    """What the device sends, one datagram each."""
    return [(m, endpoint, source) for run, endpoint, source in device.take_outbox() for m in run.messages()]


def delivered(device: Device) -> list[bytes]:
    return [packet for run in device.take_deliveries() for packet in run.packets()]


def send(device: Device, packets: list[bytes]) -> None:
    """Packets from the device's TUN side, in the batch its data path reads."""
    device.send_batch(device.crypto.packets(packets))


def receive(device: Device, batch: list[Received]) -> None:
    """Datagrams from the device's UDP side, in the batch its data path reads."""
    device.receive_batch(
        in_pool(batch) if isinstance(device.crypto, hotpath.CCrypto) else DatagramList(batch)
    )


def deliver(world: World, batch: list[Received]) -> None:
    """One `receive_batch` call on each DUT, and what it may count."""
    dut = world.duts[0]
    dropped, malformed = dut.drops.total(), dut.drops["malformed"]
    for each in world.duts:
        receive(each, batch)
    assert dut.drops.total() - dropped <= len(batch), "more drops than datagrams"
    invalid = sum(1 for data, _, _ in batch if message_type(data) is None)
    assert dut.drops["malformed"] - malformed == invalid, "a datagram of no valid type not counted"
    observe(world)


def pump(world: World) -> None:
    """One round of real traffic: the DUT's datagrams reach A or C, theirs reach the DUT."""
    for data, endpoint, _ in world.in_flight:
        target = {A_AT: world.a, C_AT: world.c}.get(endpoint)
        if target is not None:
            receive(target, [(data, DUT_AT, None)])
    world.in_flight = []
    batch: list[Received] = []
    for device, at in ((world.a, A_AT), (world.c, C_AT)):
        batch += [(data, at, None) for data, _, _ in sent(device)]
        delivered(device)
    deliver(world, batch)


def in_pool(batch: Sequence[Received]) -> Datagrams:
    """`batch` as wg_udp_recv leaves datagrams in a socket's pool, one after another."""
    count = max(1, len(batch))
    pool = ReceivedDatagrams(bytearray(b"".join(data for data, _, _ in batch) or b"\0"), count, count)
    offset = 0
    for k, (data, (address, port), local) in enumerate(batch):
        entry = pool.rx[k]
        entry.offset, entry.length, entry.port = offset, len(data), port
        offset += len(data)
        host, _, scope = address.partition("%")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        entry.family = 6 if family == socket.AF_INET6 else 4
        entry.scope = socket.if_nametoindex(scope) if scope else 0
        packed = socket.inet_pton(family, host)
        entry.source[0 : len(packed)] = packed
        if local is not None:
            family = socket.AF_INET6 if ":" in local else socket.AF_INET
            entry.local_family = 6 if family == socket.AF_INET6 else 4
            packed = socket.inet_pton(family, local)
            entry.local[0 : len(packed)] = packed
    pool.load(len(batch))
    return pool


# --------------------------------------------------------------------------------------------
# Inputs


def inner(reader: Reader, pairs: tuple[tuple[str, str], ...]) -> bytes:
    """Any bytes, or an IP packet with a fuzzed payload, length field or padding."""
    how = reader.below(4)
    payload = reader.blob(1500)
    if how == 0:
        return payload
    packet = bytearray(ip_packet(*reader.pick(pairs), payload))
    if how == 2:  # IPv4 total length or IPv6 payload length
        at = 2 if packet[0] >> 4 == 4 else 4
        packet[at : at + 2] = reader.bytes(2)
    elif how == 3:
        packet += bytes(reader.below(64))
    return bytes(packet)


def mutate(message: bytearray, reader: Reader) -> None:
    at = reader.int(2) % (len(message) + 1)
    how = reader.below(4)
    if how == 0:
        message[at : at + 1] = reader.bytes(1)
    elif how == 1:
        del message[at:]
    elif how == 2:
        message[at:at] = reader.blob(64)
    else:
        size = reader.below(33)
        message[at : at + size] = reader.bytes(size)


def refresh_mac1(message: bytearray) -> None:
    """MAC1 as a sender who knows the DUT's public key would put it on."""
    kind = message_type(bytes(message))
    if kind in (MESSAGE_INITIATION, MESSAGE_RESPONSE):
        offset = mac1_offset(kind)
        message[offset : offset + 16] = mac(MAC1_KEY, bytes(message[:offset]))


def mutated(reader: Reader) -> bytes:
    message = bytearray(reader.pick(TEMPLATES))
    for _ in range(reader.below(4)):
        mutate(message, reader)
    if reader.below(2):
        refresh_mac1(message)
    return bytes(message)


def sealed(reader: Reader) -> bytes:
    """A data message on A's session: authentic, with any counter and any plaintext."""
    counter = reader.int(2) if reader.below(2) else reader.int(8)
    plaintext = inner(reader, INNER_FROM_PEERS)
    return DATA_HEADER.pack(MESSAGE_DATA, A_REMOTE_INDEX, counter) + SEALER.encrypt(
        aead_nonce(counter), plaintext, None
    )


def datagram(reader: Reader) -> bytes:
    how = reader.below(3)
    if how == 0:
        return reader.blob(2048)
    return mutated(reader) if how == 1 else sealed(reader)


# --------------------------------------------------------------------------------------------
# Steps


def step_deliver(world: World, reader: Reader) -> None:
    count = 1 + reader.below(4)
    deliver(world, [(datagram(reader), reader.pick(SOURCES), reader.pick(LOCALS)) for _ in range(count)])


def step_pump(world: World, reader: Reader) -> None:
    pump(world)


def step_timers(world: World, reader: Reader) -> None:
    world.clock.advance(reader.pick(CLOCK_JUMPS) + reader.int() / 16)
    for device in (world.a, world.c, *world.duts):
        device.handle_timers()
    observe(world)


def step_load(world: World, reader: Reader) -> None:
    for dut in world.duts:
        dut.report_handshake_backlog(1 << 20)


def step_tun(world: World, reader: Reader) -> None:
    packets = [inner(reader, INNER_FROM_TUN) for _ in range(1 + reader.below(4))]
    for dut in world.duts:
        send(dut, packets)
    observe(world)


def step_peer_sends(world: World, reader: Reader) -> None:
    sender, source = (world.a, "10.0.0.1") if reader.below(2) else (world.c, "10.0.0.3")
    send(sender, [ip_packet(source, "10.0.0.2", reader.blob(256))])


STEPS: tuple[Callable[[World, Reader], None], ...] = (
    step_deliver,
    step_deliver,
    step_deliver,
    step_pump,
    step_timers,
    step_load,
    step_tun,
    step_peer_sends,
)


def test_one_input(data: bytes) -> None:
    reader = Reader(data)
    world = new_world()
    for _ in range(MAX_STEPS):
        if not reader.left:
            break
        reader.pick(STEPS)(world, reader)


# --------------------------------------------------------------------------------------------
# The world's real messages, made once: every world is the same, so they fit every world.


def _templates() -> tuple[list[bytes], ChaCha20Poly1305, int]:
    world = new_world()
    a, c, dut = world.a, world.c, world.duts[0]
    assert a.public_key is not None and dut.public_key is not None
    (to_c,) = [data for data, endpoint, _ in world.in_flight if endpoint == C_AT]
    receive(c, [(to_c, DUT_AT, None)])
    ((response, _, _),) = sent(c)
    c.report_handshake_backlog(1 << 20)
    receive(c, [(to_c, DUT_AT, None)])
    ((cookie_reply, _, _),) = sent(c)
    send(a, [ip_packet("10.0.0.1", "10.0.0.2", b"v4"), ip_packet("fd00::1", "fd00::2", b"v6")])
    peer = a.peers[dut.public_key]
    peer.send_keepalive(world.clock.now)
    data = [message for message, _, _ in sent(a)]
    keypair = peer.keypairs.current
    assert keypair is not None
    sealer = ChaCha20Poly1305(bytes(keypair.sending_key))
    world.clock.advance(6.0)  # past REKEY_TIMEOUT: A may initiate again
    peer.send_initiation(world.clock.now, is_retry=False)
    ((initiation, _, _),) = sent(a)
    return [initiation, response, cookie_reply, *data], sealer, keypair.remote_index


def _dut_mac1_key() -> bytes:
    public = _device(2, FakeClock(), PythonCrypto()).public_key
    assert public is not None
    return mac1_key(public)


MAC1_KEY = _dut_mac1_key()
TEMPLATES, SEALER, A_REMOTE_INDEX = _templates()

if __name__ == "__main__":
    fuzz(test_one_input)
