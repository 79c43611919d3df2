"""The device's data path with either crypto: the C hot path must behave exactly like pure Python.

One seeded in-memory run (tests/support/netsim.py) per crypto: thousands of packets both ways in batches,
IPv4 and IPv6, every size up to past the MTU, losses, replays, tampered and cut messages, packets
the receiver must refuse, rekeys, a counter running out mid-batch. Everything sent and delivered,
the drop counters, the events and the peers' byte counts must be equal byte for byte. The other
tests here pin the device's batch rules (per-run bookkeeping, per-packet allowed-IPs check) and
how the crypto is chosen and reported (`pywg version`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import ip_network
from typing import Any

import pytest

from pywg.cli import parser as cli
from pywg.core.batch import Datagrams, OpenedRun
from pywg.core.constants import MESSAGE_DATA, REJECT_AFTER_MESSAGES
from pywg.core.device import Device
from pywg.core.endpoint import Endpoint
from pywg.core.events import EndpointChanged
from pywg.core.keypair import Keypair
from pywg.core.messages import message_type
from pywg.core.peer import Peer
from pywg.core.timers import Timer
from pywg.core.transport import Crypto, PythonCrypto, PythonSession, RxStatus, pad
from pywg.native import hotpath, loader
from tests.support.device_io import (
    datagram_batch,
    datagrams_to_send,
    packets_to_deliver,
    receive_datagram,
    receive_datagrams,
    send_packet,
    send_packets,
)
from tests.support.netsim import Network, connect, ipv4_packet, ipv6_packet
from tests.support.one_message import OneAtATime

A = ("192.0.2.1", 51820)
B = ("192.0.2.2", 51820)
A_IPS = "10.0.0.1/32,fd00::1/128"
B_IPS = "10.0.0.2/32,fd00::2/128"


def require_built() -> None:
    if not loader.built():
        pytest.fail(f"{loader.unavailable_reason()}; CI builds it (`pip install -e .`)", pytrace=False)


def pair(crypto: Callable[[], Crypto], **kwargs: Any) -> tuple[Network, Device, Device]:
    net = Network()
    a = net.device(A, 1, crypto=crypto(), **kwargs)
    b = net.device(B, 2, crypto=crypto(), **kwargs)
    connect(a, b, A, B, a_ips=A_IPS, b_ips=B_IPS)
    return net, a, b


# The seeded scenario.


@dataclass
class Trace:
    sent: list[tuple[bytes, Endpoint, Endpoint]]
    delivered: dict[Endpoint, list[bytes]]
    drops: list[dict[str, int]]
    events: list[list[tuple[str, bytes]]]
    peers: list[tuple[int, int, int, list[tuple[int, int, bool]]]]


def some_packets(rng: random.Random, source: str, destination: str, count: int) -> list[bytes]:
    """Well-formed packets of every size, and a few the receiver must refuse."""
    v6 = {"10.0.0.1": "fd00::1", "10.0.0.2": "fd00::2"}
    packets = []
    for _ in range(count):
        size = rng.choice([0, 1, 15, 16, 17, 1372, 1392, 1393, 1500, rng.randrange(1500)])
        payload = rng.randbytes(size)
        fate = rng.random()
        if fate < 0.03:  # a source the receiver does not allow for this peer
            packets.append(ipv4_packet("10.9.9.9", destination, payload))
        elif fate < 0.05:  # routable, but no valid IPv4 packet inside: a malformed inner packet
            packet = bytearray(ipv4_packet(source, destination, payload))
            packet[2:4] = (7).to_bytes(2, "big")
            packets.append(bytes(packet))
        elif fate < 0.055:  # no IP packet at all: dropped before sealing
            packets.append(b"\x45" + payload[:10])
        elif fate < 0.06:  # no peer has this address: dropped before sealing
            packets.append(ipv4_packet(source, "10.7.7.7", payload))
        elif fate < 0.4:
            packets.append(ipv6_packet(v6[source], v6[destination], payload))
        else:
            packets.append(ipv4_packet(source, destination, payload))
    return packets


def mangled(rng: random.Random, data: bytes) -> bytes:
    """A copy of a data message, replayed as is or with damage of one kind."""
    fate = rng.randrange(6)
    if fate == 0:
        return data  # a replay
    copy = bytearray(data)
    if fate == 1:
        copy[rng.randrange(16, len(copy))] ^= 1 << rng.randrange(8)  # ciphertext or tag
    elif fate == 2:
        copy[rng.randrange(8, 16)] ^= 1 << rng.randrange(8)  # the counter
    elif fate == 3:
        copy[rng.randrange(4, 8)] ^= 1 << rng.randrange(8)  # the receiver index
    elif fate == 4:
        copy[1] = 1  # reserved byte: not a data message
    else:
        del copy[rng.randrange(len(copy)) :]  # cut short
    return bytes(copy)


def keypairs(peer: Peer) -> list[tuple[int, int, bool]]:
    return [(k.local_index, k.sending_counter, k.sending_valid) for k in peer.keypairs.all()]


def run_scenario(crypto: Callable[[], Crypto], seed: int = 7, steps: int = 40) -> Trace:
    net, a, b = pair(crypto)
    rng = random.Random(seed)
    in_flight: list[tuple[bytes, Endpoint, Endpoint]] = []

    def wire(data: bytes, source: Endpoint, destination: Endpoint) -> Endpoint | None:
        if message_type(data) == MESSAGE_DATA:
            in_flight.append((data, source, destination))
        return None if rng.random() < 0.02 else source

    net.filter = wire
    directions = ((a, "10.0.0.1", "10.0.0.2"), (b, "10.0.0.2", "10.0.0.1"))
    for step in range(steps):
        for device, source, destination in directions:
            send_packets(
                device, some_packets(rng, source, destination, rng.choice([1, 3, 64, 127, 128, 300]))
            )
        net.pump()
        # Old and damaged copies, mixed with fresh ones, in the batches the receivers see.
        for endpoint, device in ((A, a), (B, b)):
            seen = [d for d in in_flight if d[2] == endpoint]
            batch = [(mangled(rng, d), s, None) for d, s, _ in rng.sample(seen, min(40, len(seen)))]
            receive_datagrams(device, batch)
        net.pump()
        if step == steps // 2:  # a's sending counter runs out in the middle of its next batch
            keypair = a.peers[b.public_key].keypairs.current  # type: ignore[index]
            assert keypair is not None
            keypair.sending_counter = REJECT_AFTER_MESSAGES - 5
        net.advance(rng.choice([0.0, 0.5, 3.0, 11.0, 30.0]))
    devices = (a, b)
    return Trace(
        net.sent,
        net.delivered,
        [dict(device.drops) for device in devices],
        [[(type(e).__name__, e.peer.public_key) for e in iter(d.next_event, None)] for d in devices],
        [
            (
                p.rx_bytes,
                p.tx_bytes,
                p.last_handshake_ns,
                [(k.local_index, k.sending_counter, k.sending_valid) for k in p.keypairs.all()],
            )
            for device in devices
            for p in device.peers.values()
        ],
    )


def test_c_and_python_cryptos_send_and_deliver_identical_bytes() -> None:
    require_built()
    python = run_scenario(PythonCrypto)
    c = run_scenario(hotpath.CCrypto)
    assert len(c.sent) == len(python.sent)
    first = next((i for i, (x, y) in enumerate(zip(c.sent, python.sent, strict=True)) if x != y), None)
    assert first is None, f"datagram {first} differs"
    assert c.delivered == python.delivered
    assert c.drops == python.drops
    assert c.events == python.events
    assert c.peers == python.peers
    # The scenario reaches what it means to: lots of traffic, every kind of refusal, rekeys.
    delivered = sum(map(len, python.delivered.values()))
    assert delivered > 5000
    refused = python.drops[0].keys() | python.drops[1].keys()
    expected = {"replay", "decrypt_failed", "unknown_index", "malformed", "malformed_inner"}
    assert expected | {"inner_source_not_allowed", "no_route"} <= refused
    handshakes = [e for events in python.events for e in events if e[0] == "HandshakeCompleted"]
    assert len(handshakes) > 6


def test_scenario_is_deterministic() -> None:
    """The comparison above means something only if a run repeats itself exactly."""
    assert run_scenario(PythonCrypto, steps=6) == run_scenario(PythonCrypto, steps=6)


# Batch rules of the device.


@pytest.fixture(params=["python", "c"])
def crypto(request: pytest.FixtureRequest) -> Callable[[], Crypto]:
    if request.param == "c":
        require_built()
        return hotpath.CCrypto
    return PythonCrypto


def data_messages(net: Network, sender: Endpoint, since: int = 0) -> list[bytes]:
    return [d for d, src, _ in net.sent[since:] if src == sender and message_type(d) == MESSAGE_DATA]


def test_one_batch_moves_the_endpoint_once_to_the_last_accepted_message(crypto: Callable[[], Crypto]) -> None:
    net, a, b = pair(crypto)
    send_packet(a, ipv4_packet("10.0.0.1", "10.0.0.2"))
    net.pump()
    list(iter(b.next_event, None))
    send_packets(a, [ipv4_packet("10.0.0.1", "10.0.0.2", bytes([i])) for i in range(4)])
    messages = [d for d, _, _ in datagrams_to_send(a)]
    forged = messages[3][:-1] + bytes([messages[3][-1] ^ 1])
    roams = [("198.51.100.1", 1), ("198.51.100.2", 2), ("198.51.100.3", 3), ("198.51.100.4", 4)]
    batch = [(m, endpoint, None) for m, endpoint in zip(messages[:3], roams, strict=False)]
    receive_datagrams(b, [*batch, (forged, roams[3], "192.0.2.2")])
    peer = b.peers[a.public_key]  # type: ignore[index]
    assert peer.endpoint == roams[2]  # the last that authenticated; never the forged one
    moved = [e.endpoint for e in iter(b.next_event, None) if isinstance(e, EndpointChanged)]
    assert moved == [roams[2]]
    assert len(packets_to_deliver(b)) == 3
    assert b.drops["decrypt_failed"] == 1


def test_timers_once_per_batch(crypto: Callable[[], Crypto]) -> None:
    """wireguard-go's rule: data_received once per batch, so one batch arms one keepalive."""
    net, a, b = pair(crypto)
    send_packet(a, ipv4_packet("10.0.0.1", "10.0.0.2"))
    net.pump()
    peer = b.peers[a.public_key]  # type: ignore[index]
    peer.timers.cancel(Timer.SEND_KEEPALIVE)
    send_packets(a, [ipv4_packet("10.0.0.1", "10.0.0.2", bytes([i])) for i in range(10)])
    receive_datagrams(b, [(d, A, None) for d, _, _ in datagrams_to_send(a)])
    assert peer.timers.pending(Timer.SEND_KEEPALIVE) and not peer.timers.need_another_keepalive
    assert peer.rx_bytes > 10 * 32


def test_allowed_ips_checked_per_packet_in_a_batch(crypto: Callable[[], Crypto]) -> None:
    net, a, b = pair(crypto)
    a.allowed_ips.insert(ip_network("10.9.0.0/16"), a.peers[b.public_key])  # type: ignore[index]
    send_packet(a, ipv4_packet("10.0.0.1", "10.0.0.2"))
    net.pump()
    good = ipv4_packet("10.0.0.1", "10.0.0.2", b"ok")
    sources = ["10.0.0.1", "10.9.0.1", "10.0.0.1", "10.0.0.1", "10.9.0.2", "10.0.0.1"]
    send_packets(a, [ipv4_packet(s, "10.0.0.2", b"ok") for s in sources])
    net.pump()
    assert net.delivered[B][1:] == [good] * 4
    assert b.drops["inner_source_not_allowed"] == 2


def test_handshake_messages_keep_their_place_in_a_batch(crypto: Callable[[], Crypto]) -> None:
    """Data after a response in the same batch opens with the session that response made."""
    _, a, b = pair(crypto)
    send_packet(a, ipv4_packet("10.0.0.1", "10.0.0.2", b"first"))
    (initiation,) = datagrams_to_send(a)
    receive_datagram(b, initiation[0], A)
    (response,) = datagrams_to_send(b)
    send_packets(b, [ipv4_packet("10.0.0.2", "10.0.0.1", b"x")])  # b has no confirmed session: staged
    assert datagrams_to_send(b) == []
    receive_datagrams(a, [(response[0], B, None)])
    out = datagrams_to_send(a)
    assert [message_type(d) for d, _, _ in out] == [MESSAGE_DATA]
    # The same again in one batch: b's staged packet leaves once a's data confirms the session.
    receive_datagrams(b, [(d, A, None) for d, _, _ in out])
    assert [bytes(p) for p in packets_to_deliver(b)] == [ipv4_packet("10.0.0.1", "10.0.0.2", b"first")]
    assert [message_type(d) for d, _, _ in datagrams_to_send(b)] == [MESSAGE_DATA]


def test_unknown_index_and_expired_keypair_count_every_message(crypto: Callable[[], Crypto]) -> None:
    net, a, b = pair(crypto)
    send_packet(a, ipv4_packet("10.0.0.1", "10.0.0.2"))
    net.pump()
    send_packets(a, [ipv4_packet("10.0.0.1", "10.0.0.2")] * 5)
    messages = [(d, A, None) for d, _, _ in datagrams_to_send(a)]
    unknown = [(d[:4] + b"\xff\xff\xff\xff" + d[8:], source, None) for d, source, _ in messages]
    receive_datagrams(b, unknown)
    assert b.drops["unknown_index"] == 5
    net.clock.advance(200)
    receive_datagrams(b, messages)
    assert b.drops["expired_keypair"] == 5


def test_counter_exhaustion_mid_batch_stops_the_keypair(crypto: Callable[[], Crypto]) -> None:
    net, a, b = pair(crypto)
    send_packet(a, ipv4_packet("10.0.0.1", "10.0.0.2"))
    net.pump()
    peer = a.peers[b.public_key]  # type: ignore[index]
    keypair = peer.keypairs.current
    assert keypair is not None
    keypair.sending_counter = REJECT_AFTER_MESSAGES - 3
    net.clock.advance(6)  # past REKEY_TIMEOUT, so the new handshake may start at once
    since = len(net.sent)
    send_packets(a, [ipv4_packet("10.0.0.1", "10.0.0.2", bytes([i])) for i in range(10)])
    assert keypair.sending_counter == REJECT_AFTER_MESSAGES and not keypair.sending_valid
    assert len(peer.staged) == 7
    net.pump()
    assert len(data_messages(net, A, since)) >= 3 + 7  # the rest went with the new session
    assert net.delivered[B][-7:] == [ipv4_packet("10.0.0.1", "10.0.0.2", bytes([i])) for i in range(3, 10)]


# Keypairs and sessions.


def test_keypair_batches_match_single_calls(crypto: Callable[[], Crypto]) -> None:
    rng = random.Random(5)
    key1, key2 = rng.randbytes(32), rng.randbytes(32)
    made = crypto()
    batch = Keypair(key1, key2, True, 1, 2, 0.0, None, made)  # type: ignore[arg-type]
    single = OneAtATime(key1, key2, 2)
    packets = some_packets(rng, "10.0.0.1", "10.0.0.2", 300)
    sealed = batch.seal_run(made.packets(packets), 0, len(packets), 1420).messages()
    assert sealed == [single.seal(pad(p, 1420)) for p in packets]
    assert batch.sending_counter == single.sending_counter == 300
    receiver = Keypair(key2, key1, False, 2, 1, 0.0, None, made)  # type: ignore[arg-type]
    reference = PythonSession(key2, key1)
    arrivals = sealed + sealed[:10] + [m[:-1] + b"\x00" for m in sealed[10:20]]
    got = opened(receiver.open_run(arriving(made, arrivals), 0, len(arrivals)))
    assert got == opened(reference.open_run(arriving(PythonCrypto(), arrivals), 0, len(arrivals)))
    assert got[0][0] == 300 and dict(got[1])[RxStatus.REPLAY] == 10


def arriving(crypto: Crypto, messages: list[bytes]) -> Datagrams:
    return datagram_batch(crypto, [(message, A, None) for message in messages])


def opened(run: OpenedRun) -> tuple[Any, ...]:
    """What an OpenedRun says, every source run kept: figures, drops, source runs, packets."""
    runs = list(run.source_runs())
    for _, start, stop in runs:
        run.keep(start, stop)
    figures = (run.accepted, run.accepted_bytes, run.first_accepted, run.last_accepted, run.data_received)
    return figures, list(run.drop_counts()), runs, run.packets()


def test_zero_zeroes_the_c_handles() -> None:
    require_built()
    c = hotpath.CCrypto()
    keypair = Keypair(bytes(32), bytes([1]) * 32, True, 1, 2, 0.0, None, c)  # type: ignore[arg-type]
    message = keypair.seal_run(c.packets([b""]), 0, 1, 1420).payload
    session = keypair.session
    assert isinstance(session, hotpath.CSession)
    keypair.zero()
    assert keypair.sending_key == bytearray(32) and not keypair.sending_valid
    with pytest.raises(hotpath.HotpathError) as error:
        session._sealer.seal(hotpath.PacketBatch(1, 1), hotpath.PacketBatch(1, 64), 1, 0, 1420)
    assert error.value.code == -2  # WG_ERR_CLOSED
    assert len(keypair.seal_run(c.packets([b""]), 0, 1, 1420)) == 0
    assert len(session.seal_run(c.packets([b""]), 0, 1, 2, 1, 1420)) == 0  # nothing, whatever the counter
    reference = PythonSession(bytes(32), bytes(32))
    reference.zero()
    closed = opened(keypair.open_run(arriving(c, [message, message[:20]]), 0, 2))
    assert closed == opened(reference.open_run(arriving(PythonCrypto(), [message, message[:20]]), 0, 2))
    assert closed[:2] == ((0, 0, -1, -1, False), [(RxStatus.AUTH_FAILED, 1), (RxStatus.MALFORMED, 1)])


# Choosing and reporting the data path.


def test_netsim_and_engine_follow_pywg_no_ext(monkeypatch: pytest.MonkeyPatch) -> None:
    require_built()
    monkeypatch.delenv(loader.DISABLE_ENV, raising=False)
    assert isinstance(hotpath.data_path_crypto(), hotpath.CCrypto)
    assert isinstance(Network().device(A, 1).crypto, hotpath.CCrypto)
    monkeypatch.setenv(loader.DISABLE_ENV, "1")
    fallback = hotpath.data_path_crypto()
    assert isinstance(fallback, PythonCrypto)
    assert fallback.description == "pure Python (the C extension is turned off by PYWG_NO_EXT=1)"
    assert isinstance(Network().device(A, 1).crypto, PythonCrypto)


def test_version_names_the_data_path(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    require_built()
    monkeypatch.delenv(loader.DISABLE_ENV, raising=False)
    assert cli.main(["version"]) == 0
    out = capsys.readouterr().out
    assert (
        out.startswith("pywg ")
        and f"data path: C hot path (pywg.native._hotpath, OpenSSL {loader.crypto_version()}, " in out
    )
    assert loader.crypto_version()[0].isdigit() and f"{loader.crypto_threads()} crypto thread" in out
    assert "TUN offloads: IFF_VNET_HDR" in out and "UDP batching: recvmmsg/sendmmsg (C)" in out
    monkeypatch.setenv(loader.DISABLE_ENV, "1")
    assert cli.main(["--version"]) == 0
    out = capsys.readouterr().out
    assert "data path: pure Python (the C extension is turned off by PYWG_NO_EXT=1)" in out
    assert "TUN offloads: IFF_VNET_HDR, offloads off (pure Python: the kernel segments faster)" in out
    assert "UDP batching: no recvmmsg/sendmmsg (the C extension is turned off" in out
