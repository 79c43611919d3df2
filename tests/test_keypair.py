"""Keypair slots (kernel noise.c rules) and counter limits."""

from __future__ import annotations

from pywg.core.constants import REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME
from pywg.core.keypair import Keypair, Keypairs


def _keypair(initiator: bool, index: int) -> Keypair:
    return Keypair(bytes([index]) * 32, bytes([index + 1]) * 32, initiator, index, index + 100, 0.0, None)  # type: ignore[arg-type]


def test_initiator_uses_new_keypair_at_once() -> None:
    slots = Keypairs()
    first, second = _keypair(True, 1), _keypair(True, 2)
    assert slots.install(first) == []
    assert slots.install(second) == []
    assert (slots.previous, slots.current, slots.next) == (first, second, None)
    third = _keypair(True, 3)
    assert slots.install(third) == [first]
    assert (slots.previous, slots.current) == (second, third)


def test_responder_waits_for_confirmation() -> None:
    slots = Keypairs()
    current = _keypair(True, 1)
    slots.install(current)
    fresh = _keypair(False, 2)
    assert slots.install(fresh) == []
    assert (slots.previous, slots.current, slots.next) == (None, current, fresh)
    assert slots.received_with(current) == (False, [])
    promoted, dropped = slots.received_with(fresh)
    assert promoted and dropped == []
    assert (slots.previous, slots.current, slots.next) == (current, fresh, None)


def test_initiator_after_unconfirmed_next_demotes_it() -> None:
    slots = Keypairs()
    old_current, unconfirmed = _keypair(True, 1), _keypair(False, 2)
    slots.install(old_current)
    slots.install(unconfirmed)
    newest = _keypair(True, 3)
    assert slots.install(newest) == [old_current]
    assert (slots.previous, slots.current, slots.next) == (unconfirmed, newest, None)


def test_counter_limit_invalidates_sending() -> None:
    keypair = _keypair(True, 1)
    keypair.sending_counter = REJECT_AFTER_MESSAGES - 1
    assert keypair.can_send(1.0)
    assert keypair.seal(b"") is not None
    assert not keypair.can_send(1.0)
    assert keypair.seal(b"") is None and not keypair.sending_valid


def test_age_limits() -> None:
    keypair = _keypair(True, 1)
    assert keypair.can_send(REJECT_AFTER_TIME - 0.001) and keypair.can_receive(REJECT_AFTER_TIME - 0.001)
    assert not keypair.can_send(REJECT_AFTER_TIME) and not keypair.can_receive(REJECT_AFTER_TIME)


def test_seal_open_round_trip_and_zero() -> None:
    sender = _keypair(True, 1)
    receiver = Keypair(sender.receiving_key, sender.sending_key, False, 9, 1, 0.0, None)  # type: ignore[arg-type]
    message = sender.seal(b"x" * 16)
    assert message is not None and message[4:8] == (101).to_bytes(4, "little")
    assert receiver.open(0, message[16:]) == b"x" * 16
    assert receiver.open(1, message[16:]) is None
    receiver.zero()
    assert receiver.receiving_key == bytearray(32) and receiver.open(0, message[16:]) is None
