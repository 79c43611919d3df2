"""Keypair slots (kernel noise.c rules) and counter limits."""

from __future__ import annotations

from pywg.core.batch import DatagramList
from pywg.core.constants import REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME
from pywg.core.keypair import PYTHON_CRYPTO, Keypair, Keypairs
from pywg.core.transport import RxStatus
from tests.support.netsim import ipv4_packet


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
    assert len(keypair.seal_run(PYTHON_CRYPTO.packets([b""]), 0, 1, 1420)) == 1
    assert not keypair.can_send(1.0)
    assert len(keypair.seal_run(PYTHON_CRYPTO.packets([b""]), 0, 1, 1420)) == 0 and not keypair.sending_valid


def test_age_limits() -> None:
    keypair = _keypair(True, 1)
    assert keypair.can_send(REJECT_AFTER_TIME - 0.001) and keypair.can_receive(REJECT_AFTER_TIME - 0.001)
    assert not keypair.can_send(REJECT_AFTER_TIME) and not keypair.can_receive(REJECT_AFTER_TIME)


def test_seal_open_round_trip_and_zero() -> None:
    sender = _keypair(True, 1)
    receiver = Keypair(sender.receiving_key, sender.sending_key, False, 9, 1, 0.0, None)  # type: ignore[arg-type]
    packet = ipv4_packet("10.0.0.1", "10.0.0.2", b"x" * 16)
    (message,) = sender.seal_run(PYTHON_CRYPTO.packets([packet]), 0, 1, 1420).messages()
    assert message[4:8] == (101).to_bytes(4, "little") and message[8:16] == bytes(8)  # index, counter 0

    def opened(message: bytes) -> tuple[list[bytes], list[tuple[int, int]]]:
        run = receiver.open_run(DatagramList([(message, ("192.0.2.1", 1), None)]), 0, 1)
        for _, start, stop in run.source_runs():
            run.keep(start, stop)
        return run.packets(), list(run.drop_counts())

    assert opened(message) == ([packet], [])
    assert opened(message) == ([], [(RxStatus.REPLAY, 1)])
    forged = message[:8] + (1).to_bytes(8, "little") + message[16:]  # counter 1: another nonce
    assert opened(forged) == ([], [(RxStatus.AUTH_FAILED, 1)])
    receiver.zero()
    assert receiver.receiving_key == bytearray(32)
    assert opened(sender.seal_run(PYTHON_CRYPTO.packets([packet]), 0, 1, 1420).payload) == (
        [],
        [(RxStatus.AUTH_FAILED, 1)],
    )
