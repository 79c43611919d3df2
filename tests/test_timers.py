"""The timer schedule (whitepaper §6, kernel timers.c) driven by a fake clock."""

from __future__ import annotations

import itertools
import random

import pytest

from pywg.core.constants import (
    KEEPALIVE_TIMEOUT,
    MESSAGE_DATA,
    MESSAGE_INITIATION,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_TIMEOUT,
    ZERO_KEY_MATERIAL_AFTER,
)
from pywg.core.device import Device
from pywg.core.events import HandshakeGaveUp, KeysZeroed
from pywg.core.messages import message_type
from pywg.core.timers import Timer, Timers
from tests.support.device_io import send_packet, send_packets
from tests.support.netsim import Network, connect, ipv4_packet, sent_of_type

A = ("192.0.2.1", 51820)
B = ("192.0.2.2", 51820)
A_TO_B = ipv4_packet("10.0.0.1", "10.0.0.2", b"a->b")
B_TO_A = ipv4_packet("10.0.0.2", "10.0.0.1", b"b->a")


def _pair(**kwargs: object) -> tuple[Network, Device, Device]:
    net = Network()
    a = net.device(A, 1, **kwargs)
    b = net.device(B, 2, **kwargs)
    connect(a, b, A, B)
    return net, a, b


def test_retries_with_jitter_then_give_up() -> None:
    net, a, _ = _pair()
    net.filter = lambda data, src, dst: None  # B never hears anything
    start = net.clock.now
    send_packet(a, A_TO_B)
    net.advance(200)
    times = [t for t, _ in sent_of_type(net, A, MESSAGE_INITIATION)]
    assert len(times) == 20  # the first plus MAX_TIMER_HANDSHAKES + 1 retries
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(REKEY_TIMEOUT <= gap <= REKEY_TIMEOUT + 0.334 for gap in gaps)
    assert len({round(g, 3) for g in gaps}) > 1  # jitter varies
    gave_up = [e for e in iter(a.next_event, None) if isinstance(e, HandshakeGaveUp)]
    assert len(gave_up) == 1
    peer = next(iter(a.peers.values()))
    assert not peer.staged  # purged on give-up
    # Every initiation was an attempt; each one the retransmit timer found unanswered, a failure.
    assert (peer.handshake_attempts, peer.handshake_failures) == (20, 20)
    assert 90 <= times[-1] - start <= 20 * (REKEY_TIMEOUT + 0.334)


def test_staged_packets_flushed_after_handshake() -> None:
    net, a, _b = _pair()
    packets = [ipv4_packet("10.0.0.1", "10.0.0.2", bytes([i])) for i in range(5)]
    for packet in packets:
        send_packet(a, packet)
    assert len(a.outbox) == 1  # one initiation, rate limited
    a.handle_timers()
    assert len(a.outbox) == 1  # nothing more goes out before the response
    net.pump()
    assert net.delivered[B] == packets


def test_staged_queue_drops_oldest() -> None:
    net, a, _ = _pair()
    net.filter = lambda data, src, dst: None
    packets = [ipv4_packet("10.0.0.1", "10.0.0.2", i.to_bytes(2, "big")) for i in range(130)]
    send_packets(a, packets)
    peer = next(iter(a.peers.values()))
    assert list(peer.staged) == packets[2:]
    assert a.drops["staged_queue_full"] == 2


def test_rekey_after_time_by_initiator_only() -> None:
    net, a, b = _pair()
    send_packet(a, A_TO_B)
    net.pump()
    net.advance(REKEY_AFTER_TIME + 1)
    send_packet(b, B_TO_A)  # the responder does not rekey on age
    net.pump()
    assert len(sent_of_type(net, B, MESSAGE_INITIATION)) == 0
    mark = len(net.sent)
    send_packet(a, A_TO_B)
    net.pump()
    assert len(sent_of_type(net, A, MESSAGE_INITIATION, since=mark)) == 1
    assert net.delivered[B][-1] == A_TO_B


def test_rekey_after_messages() -> None:
    net, a, _ = _pair()
    send_packet(a, A_TO_B)
    net.pump()
    peer = next(iter(a.peers.values()))
    assert peer.keypairs.current is not None
    peer.keypairs.current.sending_counter = REKEY_AFTER_MESSAGES + 1
    net.clock.advance(REKEY_TIMEOUT)  # past the one-initiation-per-5-s limit
    mark = len(net.sent)
    send_packet(a, A_TO_B)
    net.pump()
    assert len(sent_of_type(net, A, MESSAGE_INITIATION, since=mark)) == 1


def test_initiator_rekeys_on_receive_near_reject_time() -> None:
    net, a, b = _pair()
    send_packet(a, A_TO_B)
    net.pump()
    net.clock.advance(166)
    mark = len(net.sent)
    send_packet(b, B_TO_A)
    net.pump()
    assert len(sent_of_type(net, A, MESSAGE_INITIATION, since=mark)) == 1


def test_reject_after_time_starts_new_handshake() -> None:
    net, a, b = _pair()
    send_packet(a, A_TO_B)
    net.pump()
    net.clock.advance(REJECT_AFTER_TIME)
    mark = len(net.sent)
    send_packet(b, B_TO_A)  # B's key is too old to send with: it initiates
    assert [message_type(run.payload) for run, _, _ in b.outbox] == [MESSAGE_INITIATION]
    net.pump()
    assert len(sent_of_type(net, B, MESSAGE_INITIATION, since=mark)) == 1
    assert net.delivered[A][-1] == B_TO_A


def test_passive_keepalive_after_data_received() -> None:
    net, a, _b = _pair()
    send_packet(a, A_TO_B)
    net.pump()
    mark = len(net.sent)
    start = net.clock.now
    net.advance(KEEPALIVE_TIMEOUT + 0.5)
    keepalives = [(t, d) for t, d in sent_of_type(net, B, MESSAGE_DATA, since=mark) if len(d) == 32]
    assert len(keepalives) == 1
    assert keepalives[0][0] - start == KEEPALIVE_TIMEOUT


def test_no_reply_starts_new_handshake_after_15s() -> None:
    net, a, _b = _pair()
    send_packet(a, A_TO_B)
    net.pump()
    net.filter = lambda data, src, dst: None if src == B else src  # B goes silent
    mark = len(net.sent)
    start = net.clock.now
    send_packet(a, A_TO_B)
    net.pump()
    net.advance(16)
    initiations = sent_of_type(net, A, MESSAGE_INITIATION, since=mark)
    assert initiations
    assert KEEPALIVE_TIMEOUT + REKEY_TIMEOUT <= initiations[0][0] - start <= 15.334


def test_persistent_keepalive() -> None:
    net, a, b = _pair()
    peer = a.peers[b.static.public]  # type: ignore[union-attr]
    peer.set_persistent_keepalive(25, net.clock.now)
    net.pump()  # turning it on sends a keepalive, which needs a handshake first
    assert sent_of_type(net, A, MESSAGE_INITIATION)
    mark = len(net.sent)
    start = net.clock.now
    net.advance(101)
    keepalives = [t for t, d in sent_of_type(net, A, MESSAGE_DATA, since=mark) if len(d) == 32]
    assert [round(t - start) for t in keepalives] == [25, 50, 75, 100]


def test_keys_zeroed_after_540s() -> None:
    net, a, b = _pair()
    send_packet(a, A_TO_B)
    net.pump()
    peer = a.peers[b.static.public]  # type: ignore[union-attr]
    net.advance(ZERO_KEY_MATERIAL_AFTER - 1)
    assert peer.keypairs.current is not None
    keypair = peer.keypairs.current
    net.advance(2)
    assert peer.keypairs.all() == []
    assert keypair.sending_key == bytearray(32) and not keypair.sending_valid
    assert any(isinstance(e, KeysZeroed) for e in iter(a.next_event, None))
    assert not any(isinstance(v, type(keypair)) for v in a.indices.values())


def test_hours_of_traffic_keep_working() -> None:
    net, a, b = _pair()
    for minute in range(180):
        send_packet(a, ipv4_packet("10.0.0.1", "10.0.0.2", minute.to_bytes(2, "big")))
        send_packet(b, ipv4_packet("10.0.0.2", "10.0.0.1", minute.to_bytes(2, "big")))
        net.advance(60)
    assert len(net.delivered[B]) == 180 and len(net.delivered[A]) == 180
    peer = a.peers[b.static.public]  # type: ignore[union-attr]
    assert len(peer.keypairs.all()) <= 3
    assert len(a.indices) <= 4 and len(b.indices) <= 4


def _many_peers(count: int) -> tuple[Network, Device]:
    net = Network()
    device = net.device(A, 1)
    for i in range(count):
        device.add_peer(i.to_bytes(32, "big"))
    return net, device


def _walked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How often the device looks at a peer's timers, counted."""
    calls = [0]
    armed_at = Timers.armed_at

    def counted(self: Timers, deadline: float) -> bool:
        calls[0] += 1
        return armed_at(self, deadline)

    monkeypatch.setattr(Timers, "armed_at", counted)
    return calls


def test_a_wake_up_looks_at_the_due_peers_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """With thousands of idle peers, finding the next deadline and the due timers looks at a few
    peers, not all of them (the walk cost 0.9 ms a wake-up with 10,000 and halved throughput)."""
    net, device = _many_peers(3000)
    peers = list(device.peers.values())
    now = net.clock.now
    peers[1234].timers.data_received(now)  # SEND_KEEPALIVE in 10 s
    walked = _walked(monkeypatch)
    for _ in range(100):
        assert device.next_deadline() == now + KEEPALIVE_TIMEOUT
        device.handle_timers()
    assert walked[0] <= 100


def test_the_next_deadline_is_the_earliest_armed_timer() -> None:
    """Timers armed, re-armed, cancelled and fired, peers removed, in random order: the device's
    next deadline is always the earliest timer armed, as a walk over every peer finds it."""
    net, device = _many_peers(50)
    rng = random.Random(7)
    timers = list(Timer)
    for step in range(5000):
        peers = list(device.peers.values())
        peer = rng.choice(peers)
        what = rng.random()
        if what < 0.55:
            peer.timers._arm(rng.choice(timers), net.clock.now + rng.uniform(0.0, 30.0))
        elif what < 0.85:
            peer.timers.cancel(rng.choice(timers))
        elif what < 0.9 and len(peers) > 5:
            device.remove_peer(peer.public_key)
        elif what < 0.95:
            device.add_peer((10_000 + step).to_bytes(32, "big"))
        else:
            net.clock.now += rng.uniform(0.0, 5.0)
            for each in device.peers.values():  # what handle_timers would fire, without its effects
                each.timers.expired(net.clock.now)
        armed = [d for p in device.peers.values() for d in p.timers.deadlines.values()]
        assert device.next_deadline() == (min(armed) if armed else None), step
