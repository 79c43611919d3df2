"""Two or more in-memory devices: handshakes, data, cookies, roaming, drops."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from pywg.core.constants import MESSAGE_INITIATION, MESSAGE_RESPONSE
from pywg.core.device import Device
from pywg.core.events import EndpointChanged, HandshakeCompleted
from pywg.core.messages import message_type
from tests.support.device_io import (
    datagrams_to_send,
    packets_to_deliver,
    receive_datagram,
    send_packet,
    send_packets,
)
from tests.support.netsim import Network, connect, ipv4_packet, ipv6_packet

A = ("192.0.2.1", 51820)
B = ("192.0.2.2", 51820)


def _pair(psk: bytes | None = None, **kwargs: object) -> tuple[Network, Device, Device]:
    net = Network()
    a = net.device(A, 1, **kwargs)
    b = net.device(B, 2, **kwargs)
    connect(a, b, A, B, psk=psk)
    return net, a, b


def _types(net: Network, source: tuple[str, int]) -> list[int | None]:
    return [message_type(data) for data, src, _ in net.sent if src == source]


@pytest.mark.parametrize("psk", [None, bytes(range(32))])
@pytest.mark.parametrize("initiator", ["a", "b"])
def test_handshake_and_data_both_ways(psk: bytes | None, initiator: str) -> None:
    net, a, b = _pair(psk)
    first, second = (a, b) if initiator == "a" else (b, a)
    src, dst = ("10.0.0.1", "10.0.0.2") if first is a else ("10.0.0.2", "10.0.0.1")
    packet = ipv4_packet(src, dst, b"staged until the handshake is done")
    send_packet(first, packet)
    net.pump()
    first_endpoint = A if first is a else B
    second_endpoint = B if first is a else A
    assert net.delivered[second_endpoint] == [packet]
    reply = ipv4_packet(dst, src, b"reply")
    send_packet(second, reply)
    net.pump()
    assert net.delivered[first_endpoint] == [reply]
    assert _types(net, first_endpoint)[0] == MESSAGE_INITIATION
    assert _types(net, second_endpoint)[0] == MESSAGE_RESPONSE
    assert any(isinstance(e, HandshakeCompleted) for e in iter(first.next_event, None))
    assert not a.drops and not b.drops


def test_many_packets_both_families_and_padding() -> None:
    net, a, b = _pair()
    peer_b = a.peers[b.static.public]  # type: ignore[union-attr]
    peer_a = b.peers[a.static.public]  # type: ignore[union-attr]
    a.allowed_ips.insert(ip_network("fd00::2/128"), peer_b)
    b.allowed_ips.insert(ip_network("fd00::1/128"), peer_a)
    packets = [ipv4_packet("10.0.0.1", "10.0.0.2", bytes([i]) * i) for i in range(60)]
    packets += [ipv6_packet("fd00::1", "fd00::2", bytes([i]) * i) for i in range(60)]
    send_packets(a, packets)
    net.pump()
    assert net.delivered[B] == packets
    data_sizes = [len(d) for d, src, _ in net.sent if src == A and message_type(d) == 4]
    assert all((size - 32) % 16 == 0 for size in data_sizes)


def test_padding_never_exceeds_mtu() -> None:
    net, a, _b = _pair(mtu=1420)
    send_packet(a, ipv4_packet("10.0.0.1", "10.0.0.2", bytes(1420 - 28 - 3)))
    net.pump()
    (size,) = [len(d) for d, src, _ in net.sent if src == A and message_type(d) == 4]
    assert size == 32 + 1420
    assert len(net.delivered[B][0]) == 1417


def test_inner_source_outside_allowed_ips_dropped() -> None:
    net, a, b = _pair()
    a.allowed_ips.insert(ip_network("10.9.0.0/24"), a.peers[b.static.public])  # type: ignore[union-attr]
    send_packet(a, ipv4_packet("10.0.0.99", "10.0.0.2"))
    net.pump()
    assert net.delivered[B] == []
    assert b.drops["inner_source_not_allowed"] == 1


def test_no_route_and_no_endpoint_counted() -> None:
    net, a, _ = _pair()
    send_packet(a, ipv4_packet("10.0.0.1", "10.7.7.7"))
    send_packet(a, b"\x45")
    assert a.drops["no_route"] == 1 and a.drops["malformed_inner"] == 1
    other = net.device(("192.0.2.9", 1), 9)
    a.add_peer(other.static.public)  # type: ignore[union-attr]
    a.allowed_ips.insert(ip_network("10.5.0.0/16"), a.peers[other.static.public])  # type: ignore[union-attr]
    send_packet(a, ipv4_packet("10.0.0.1", "10.5.0.1"))
    assert a.drops["no_endpoint"] == 1


def test_roaming_updates_endpoint() -> None:
    net, a, b = _pair()
    send_packet(a, ipv4_packet("10.0.0.1", "10.0.0.2"))
    net.pump()
    moved = ("198.51.100.7", 40000)
    net.move(A, moved)
    send_packet(a, ipv4_packet("10.0.0.1", "10.0.0.2", b"from a new address"))
    net.pump()
    peer_a = b.peers[a.static.public]  # type: ignore[union-attr]
    assert peer_a.endpoint == moved
    assert any(isinstance(e, EndpointChanged) and e.endpoint == moved for e in iter(b.next_event, None))
    reply = ipv4_packet("10.0.0.2", "10.0.0.1", b"follows the roam")
    send_packet(b, reply)
    net.pump()
    assert net.sent[-1][1:] == (B, moved)
    assert net.delivered[moved] == [reply]


def test_replayed_data_dropped() -> None:
    net, a, b = _pair()
    send_packet(a, ipv4_packet("10.0.0.1", "10.0.0.2"))
    net.pump()
    data = next(d for d, src, _ in net.sent if src == A and message_type(d) == 4)
    receive_datagram(b, data, A)
    assert b.drops["replay"] == 1
    assert len(net.delivered[B]) + len(packets_to_deliver(b)) == 1


def test_replayed_initiation_dropped() -> None:
    net, a, b = _pair()
    send_packet(a, ipv4_packet("10.0.0.1", "10.0.0.2"))
    net.pump()
    initiation = next(d for d, src, _ in net.sent if src == A and message_type(d) == 1)
    net.clock.advance(1)
    receive_datagram(b, initiation, A)
    assert b.drops["initiation_replay_or_flood"] == 1
    assert datagrams_to_send(b) == []


def test_forged_mac1_dropped() -> None:
    _net, a, b = _pair()
    send_packet(a, ipv4_packet("10.0.0.1", "10.0.0.2"))
    initiation = bytearray(datagrams_to_send(a)[0][0])
    initiation[120] ^= 1
    receive_datagram(b, bytes(initiation), A)
    assert b.drops["invalid_mac"] == 1
    assert datagrams_to_send(b) == []


def test_cookie_reply_under_load_then_mac2_accepted() -> None:
    net = Network()
    a = net.device(A, 1)
    b = net.device(B, 2, under_load_threshold=1)
    connect(a, b, A, B)
    send_packet(a, ipv4_packet("10.0.0.1", "10.0.0.2"))
    net.pump()
    assert b.drops["cookie_reply_sent"] == 1
    assert _types(net, B) == [3]
    assert net.delivered[B] == []
    # A retries after REKEY_TIMEOUT with a mac2 from the cookie; B lets it in.
    net.advance(5.4)
    assert net.delivered[B] == [ipv4_packet("10.0.0.1", "10.0.0.2")]
    assert b.drops["cookie_reply_sent"] == 1
    initiations = [d for d, src, _ in net.sent if src == A and message_type(d) == 1]
    assert initiations[0][132:148] == bytes(16) and initiations[1][132:148] != bytes(16)


def test_cookie_reply_not_answering_our_mac1_ignored() -> None:
    net = Network()
    a = net.device(A, 1)
    b = net.device(B, 2, under_load_threshold=1)
    connect(a, b, A, B)
    send_packet(a, ipv4_packet("10.0.0.1", "10.0.0.2"))
    initiation = datagrams_to_send(a)[0][0]
    receive_datagram(b, initiation, A)
    reply = bytearray(datagrams_to_send(b)[0][0])
    reply[40] ^= 1
    receive_datagram(a, bytes(reply), B)
    assert a.drops["cookie_reply_invalid"] == 1


def test_per_source_rate_limit_under_load() -> None:
    net = Network()
    b = net.device(B, 2, under_load_threshold=1)
    attackers = []
    for i in range(3):
        endpoint = ("192.0.2.50", 1000 + i)
        a = net.device(endpoint, 10 + i)
        connect(a, b, endpoint, B, a_ips=f"10.1.{i}.1/32")
        attackers.append((a, endpoint))
    # Hand every initiator a cookie, then flood valid initiations from one /32.
    for a, _ in attackers:
        send_packet(a, ipv4_packet("10.1.0.1", "10.0.0.2"))
    net.pump()
    accepted = 0
    for _ in range(20):
        for a, endpoint in attackers:
            peer = next(iter(a.peers.values()))
            peer.last_sent_handshake = None
            peer.send_initiation(net.clock.now, is_retry=False)
            receive_datagram(b, datagrams_to_send(a)[0][0], endpoint)
        accepted += sum(1 for d, _, _ in datagrams_to_send(b) if message_type(d) == 2)
        net.clock.advance(0.001)
    assert b.drops["ratelimited"] > 0
    assert accepted <= 5 + 1  # burst of five, plus what 20 ms of refill allows


def test_malformed_datagrams_of_every_type_and_length() -> None:
    net, a, b = _pair()
    send_packet(a, ipv4_packet("10.0.0.1", "10.0.0.2"))
    net.pump()
    samples = [d for d, _, _ in net.sent]
    dropped_before = sum(b.drops.values())
    count = 0
    for sample in samples:
        for length in range(0, len(sample) + 3):
            datagram = (sample + b"\x00\x00\x00")[:length]
            if datagram == sample:
                continue
            receive_datagram(a, datagram, B)
            receive_datagram(b, datagram, A)
            count += 1
        reserved = bytearray(sample)
        reserved[1] = 1
        receive_datagram(b, bytes(reserved), A)
    assert sum(b.drops.values()) > dropped_before
    assert b.drops["malformed"] >= count // 4


def test_batch_larger_than_staged_queue_is_sent_whole() -> None:
    net, a, _ = _pair()
    send_packet(a, ipv4_packet("10.0.0.1", "10.0.0.2"))
    net.pump()
    packets = [ipv4_packet("10.0.0.1", "10.0.0.2", i.to_bytes(2, "big")) for i in range(1000)]
    send_packets(a, packets)
    net.pump()
    assert net.delivered[B][1:] == packets
    assert not a.drops


def test_peer_counters_count_what_each_side_sent_and_received() -> None:
    net, a, b = _pair()
    peer_b = a.peers[b.static.public]  # type: ignore[union-attr]
    peer_a = b.peers[a.static.public]  # type: ignore[union-attr]
    packets = [ipv4_packet("10.0.0.1", "10.0.0.2", bytes([i]) * i) for i in range(30)]
    send_packets(a, packets)
    net.pump()
    sent_by_a = [d for d, src, _ in net.sent if src == A]
    sent_by_b = [d for d, src, _ in net.sent if src == B]
    # A: an initiation, then the 30 packets (staged during the handshake, sealed in one batch).
    assert peer_b.tx_packets == len(sent_by_a) == 31
    assert peer_b.tx_bytes == sum(map(len, sent_by_a))
    assert peer_a.rx_packets == len(sent_by_a) and peer_a.rx_bytes == peer_b.tx_bytes
    assert peer_a.tx_packets == len(sent_by_b) == 1  # the response
    assert peer_b.rx_packets == 1 and peer_b.rx_bytes == peer_a.tx_bytes
    assert (peer_b.handshake_attempts, peer_b.handshake_failures) == (1, 0)
    assert (peer_a.handshake_attempts, peer_a.handshake_failures) == (0, 0)
