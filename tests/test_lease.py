"""Leases (pywg/core/lease.py): when a carrier may act for a peer, and that what it reports keeps the
same books and timers as the core's own way for the same packet."""

from __future__ import annotations

import pytest

from pywg.core.constants import (
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_ON_RECEIVE_AGE,
)
from pywg.core.device import Device
from pywg.core.lease import lease_for
from pywg.core.peer import Peer
from tests.support.device_io import datagrams_to_send, receive_datagram, send_packet
from tests.support.netsim import Network, connect, ipv4_packet

A = ("192.0.2.1", 51820)
B = ("192.0.2.2", 51820)
A_TO_B = ipv4_packet("10.0.0.1", "10.0.0.2", b"a->b")
B_TO_A = ipv4_packet("10.0.0.2", "10.0.0.1", b"b->a")
MESSAGE_LENGTH = 16 + 32 + 16  # header, A_TO_B (32 bytes: no padding), tag


def _session() -> tuple[Network, Device, Device]:
    """a initiated, b confirmed: both have a current keypair and nothing in flight."""
    net = Network()
    a, b = net.device(A, 1), net.device(B, 2)
    connect(a, b, A, B)
    send_packet(a, A_TO_B)
    net.pump()
    send_packet(b, B_TO_A)
    net.pump()
    return net, a, b


def _peer(device: Device) -> Peer:
    return next(iter(device.peers.values()))


def test_bounds_of_an_initiator_and_a_responder() -> None:
    net, a, b = _session()
    now = net.clock.now
    lease = lease_for(_peer(a), now)
    assert lease is not None and lease.keypair is _peer(a).keypairs.current
    created = lease.keypair.created
    assert (lease.send_until, lease.receive_until) == (
        created + REKEY_AFTER_TIME,
        created + REKEY_ON_RECEIVE_AGE,
    )
    assert lease.counter_limit == REKEY_AFTER_MESSAGES
    lease = lease_for(_peer(b), now)
    assert lease is not None
    created = lease.keypair.created
    assert (lease.send_until, lease.receive_until) == (
        created + REJECT_AFTER_TIME,
        created + REJECT_AFTER_TIME,
    )


def test_after_the_last_minute_handshake_the_initiator_receives_until_the_keypair_ends() -> None:
    net, a, _ = _session()
    peer = _peer(a)
    peer.sent_lastminute_handshake = True
    lease = lease_for(peer, net.clock.now)
    assert lease is not None and lease.receive_until == lease.keypair.created + REJECT_AFTER_TIME


def test_no_lease_without_a_usable_session() -> None:
    net = Network()
    a, b = net.device(A, 1), net.device(B, 2)
    connect(a, b, A, B)
    assert lease_for(_peer(a), net.clock.now) is None  # no keypair yet
    net, a, _ = _session()
    peer = _peer(a)
    peer.staged.append(A_TO_B)  # packets waiting go first, through the core
    assert lease_for(peer, net.clock.now) is None
    peer.staged.clear()
    assert lease_for(peer, net.clock.now + REKEY_ON_RECEIVE_AGE + 1) is None  # past both bounds
    peer.keypairs.current.sending_valid = False
    assert lease_for(peer, net.clock.now) is None


def _books(peer: Peer) -> tuple[object, ...]:
    keypair = peer.keypairs.current
    assert keypair is not None
    return (
        peer.tx_bytes,
        peer.tx_packets,
        peer.rx_bytes,
        peer.rx_packets,
        keypair.sending_counter,
        dict(peer.timers.deadlines),
        peer.timers.need_another_keepalive,
        peer.endpoint,
        peer.endpoint_source,
    )


@pytest.mark.parametrize("persistent_keepalive", [0, 25])
def test_carried_send_keeps_the_books_of_the_core_send(persistent_keepalive: int) -> None:
    books = []
    for carried in (False, True):
        net, a, _ = _session()
        peer = _peer(a)
        peer.set_persistent_keepalive(persistent_keepalive, net.clock.now)
        datagrams_to_send(a)  # the keepalive a new persistent keepalive sends at once
        net.clock.advance(3.0)
        keypair = peer.keypairs.current
        assert keypair is not None
        if carried:  # what the lane does: seal with the next counters, then report them
            keypair.sending_counter += 3
            peer.carried_sent(3, 3 * MESSAGE_LENGTH, net.clock.now)
        else:
            for _ in range(3):
                send_packet(a, A_TO_B)
            sent = datagrams_to_send(a)
            assert [len(datagram[0]) for datagram in sent] == [MESSAGE_LENGTH] * 3
        books.append(_books(peer))
    assert books[0] == books[1]


@pytest.mark.parametrize("data", [True, False], ids=["data", "keepalive"])
def test_carried_receive_keeps_the_books_of_the_core_receive(data: bool) -> None:
    books = []
    for carried in (False, True):
        net, a, b = _session()
        net.clock.advance(2.0)
        peer = _peer(a)
        for _ in range(2):
            if data:
                send_packet(b, B_TO_A)
            else:
                _peer(b).send_keepalive(net.clock.now)
        messages = [message for message, _, _ in datagrams_to_send(b)]
        if carried:
            peer.carried_received(2, sum(map(len, messages)), data, net.clock.now)
        else:
            for message in messages:
                receive_datagram(a, message, B, peer.endpoint_source)
        books.append(_books(peer))
    assert books[0] == books[1]
