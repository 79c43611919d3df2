"""MAC1, MAC2 and cookie replies in isolation: freshness rules and TAI64N."""

from __future__ import annotations

from pywg.core.constants import COOKIE_SECRET_MAX_AGE, COOKIE_VALID_FOR, TAI64_BASE
from pywg.core.cookie import CookieChecker, CookieGenerator, MacState
from pywg.core.messages import INITIATION_MAC1_OFFSET, CookieReply, Initiation
from pywg.core.tai64n import tai64n
from tests.support.netsim import SeededRng, fixed_public

RESPONDER = fixed_public(2)
SOURCE = bytes([192, 0, 2, 1]) + (51820).to_bytes(2, "big")


def _message() -> bytearray:
    return bytearray(Initiation(7, bytes(32), bytes(48), bytes(28)).pack())


def _checker() -> CookieChecker:
    checker = CookieChecker(SeededRng(5))
    checker.set_public_key(RESPONDER)
    return checker


def _cookie_for(generator: CookieGenerator, checker: CookieChecker, now: float) -> None:
    message = _message()
    generator.add_macs(message, INITIATION_MAC1_OFFSET, now)
    reply = checker.create_reply(bytes(message), INITIATION_MAC1_OFFSET, 7, SOURCE, now)
    assert generator.consume_reply(CookieReply.unpack(reply), now)


def test_mac1_required_mac2_only_under_load() -> None:
    checker, generator = _checker(), CookieGenerator(RESPONDER)
    message = _message()
    generator.add_macs(message, INITIATION_MAC1_OFFSET, 0.0)
    assert checker.validate(bytes(message), INITIATION_MAC1_OFFSET, SOURCE, 0.0, False) is (
        MacState.VALID_MAC_BUT_NO_COOKIE
    )
    assert checker.validate(bytes(message), INITIATION_MAC1_OFFSET, SOURCE, 0.0, True) is (
        MacState.VALID_MAC_BUT_NO_COOKIE
    )
    message[INITIATION_MAC1_OFFSET] ^= 1
    assert (
        checker.validate(bytes(message), INITIATION_MAC1_OFFSET, SOURCE, 0.0, False) is MacState.INVALID_MAC
    )


def test_cookie_gives_valid_mac2_from_that_source_only() -> None:
    checker, generator = _checker(), CookieGenerator(RESPONDER)
    _cookie_for(generator, checker, 0.0)
    message = _message()
    generator.add_macs(message, INITIATION_MAC1_OFFSET, 1.0)
    assert checker.validate(bytes(message), INITIATION_MAC1_OFFSET, SOURCE, 1.0, True) is (
        MacState.VALID_MAC_WITH_COOKIE
    )
    elsewhere = bytes([192, 0, 2, 9]) + SOURCE[4:]
    assert checker.validate(bytes(message), INITIATION_MAC1_OFFSET, elsewhere, 1.0, True) is (
        MacState.VALID_MAC_BUT_NO_COOKIE
    )


def test_cookie_used_for_at_most_115_seconds() -> None:
    checker, generator = _checker(), CookieGenerator(RESPONDER)
    _cookie_for(generator, checker, 0.0)
    fresh, stale = _message(), _message()
    generator.add_macs(fresh, INITIATION_MAC1_OFFSET, COOKIE_VALID_FOR - 0.001)
    generator.add_macs(stale, INITIATION_MAC1_OFFSET, COOKIE_VALID_FOR)
    assert fresh[132:148] != bytes(16)
    assert stale[132:148] == bytes(16)


def test_cookie_secret_rotates_every_120_seconds() -> None:
    checker, generator = _checker(), CookieGenerator(RESPONDER)
    _cookie_for(generator, checker, 0.0)
    message = _message()
    generator.add_macs(message, INITIATION_MAC1_OFFSET, 1.0)
    just_before = COOKIE_SECRET_MAX_AGE - 0.001
    assert checker.validate(bytes(message), INITIATION_MAC1_OFFSET, SOURCE, just_before, True) is (
        MacState.VALID_MAC_WITH_COOKIE
    )
    assert checker.validate(bytes(message), INITIATION_MAC1_OFFSET, SOURCE, COOKIE_SECRET_MAX_AGE, True) is (
        MacState.VALID_MAC_BUT_NO_COOKIE
    )


def test_cookie_reply_accepted_once_and_only_for_our_mac1() -> None:
    checker, generator = _checker(), CookieGenerator(RESPONDER)
    message = _message()
    generator.add_macs(message, INITIATION_MAC1_OFFSET, 0.0)
    other = _message()
    other[4] = 9  # a different message, so a different mac1 as AAD
    CookieGenerator(RESPONDER).add_macs(other, INITIATION_MAC1_OFFSET, 0.0)
    wrong = CookieReply.unpack(checker.create_reply(bytes(other), INITIATION_MAC1_OFFSET, 9, SOURCE, 0.0))
    assert not generator.consume_reply(wrong, 0.0)
    right = CookieReply.unpack(checker.create_reply(bytes(message), INITIATION_MAC1_OFFSET, 7, SOURCE, 0.0))
    assert generator.consume_reply(right, 0.0)
    assert not generator.consume_reply(right, 0.0)  # have_sent_mac1 is cleared


def test_tai64n_base_and_whitening() -> None:
    stamp = tai64n(1_700_000_000 * 10**9 + 123_456_789)
    assert int.from_bytes(stamp[:8], "big") == TAI64_BASE + 1_700_000_000
    nanoseconds = int.from_bytes(stamp[8:], "big")
    assert nanoseconds % (1 << 24) == 0 and 123_456_789 - (1 << 24) < nanoseconds <= 123_456_789
    assert tai64n(10**9) < tai64n(2 * 10**9)
