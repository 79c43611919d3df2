"""MAC1, MAC2 and cookie replies: WireGuard's DoS mitigation (whitepaper §5.4.4, kernel cookie.c).

`CookieChecker` is the device's side (validate incoming macs, answer with
cookie replies under load); `CookieGenerator` is a peer's side (put macs on
outgoing handshake messages, take in the cookie replies that answer them).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from hmac import compare_digest as _equal

from pywg.core import crypto
from pywg.core.constants import (
    COOKIE_NONCE_LEN,
    COOKIE_SECRET_MAX_AGE,
    COOKIE_VALID_FOR,
    LABEL_COOKIE,
    LABEL_MAC1,
    MAC_LEN,
)
from pywg.core.crypto import CryptoError
from pywg.core.messages import MAC2_DISTANCE, CookieReply

_ZERO_MAC = bytes(MAC_LEN)


class MacState(enum.Enum):
    INVALID_MAC = 0
    VALID_MAC_BUT_NO_COOKIE = 1
    VALID_MAC_WITH_COOKIE = 2


def mac1_key(public_key: bytes) -> bytes:
    return crypto.hash_(LABEL_MAC1 + public_key)


def cookie_key(public_key: bytes) -> bytes:
    return crypto.hash_(LABEL_COOKIE + public_key)


class CookieChecker:
    """Checks macs on handshake messages addressed to our public key."""

    def __init__(self, rng: Callable[[int], bytes]) -> None:
        self._rng = rng
        self._mac1_key = b""
        self._cookie_key = b""
        self._secret = b""
        self._secret_born: float | None = None

    def set_public_key(self, public_key: bytes | None) -> None:
        self._mac1_key = mac1_key(public_key) if public_key else b""
        self._cookie_key = cookie_key(public_key) if public_key else b""

    def validate(
        self, message: bytes, mac1_offset: int, source: bytes, now: float, check_cookie: bool
    ) -> MacState:
        """MAC1 always; MAC2 only when check_cookie (we are under load).

        `source` is the sender's IP address bytes followed by its UDP port,
        big-endian, as the kernel feeds them to the cookie MAC.
        """
        if not self._mac1_key:
            return MacState.INVALID_MAC
        expected = crypto.mac(self._mac1_key, message[:mac1_offset])
        if not _equal(expected, message[mac1_offset : mac1_offset + MAC_LEN]):
            return MacState.INVALID_MAC
        if not check_cookie:
            return MacState.VALID_MAC_BUT_NO_COOKIE
        mac2_offset = mac1_offset + MAC2_DISTANCE
        mac2 = crypto.mac(self._cookie(source, now), message[:mac2_offset])
        if not _equal(mac2, message[mac2_offset : mac2_offset + MAC_LEN]):
            return MacState.VALID_MAC_BUT_NO_COOKIE
        return MacState.VALID_MAC_WITH_COOKIE

    def create_reply(
        self, message: bytes, mac1_offset: int, sender_index: int, source: bytes, now: float
    ) -> bytes:
        """A cookie reply answering `message`, whose mac1 becomes the AAD."""
        nonce = self._rng(COOKIE_NONCE_LEN)
        mac1 = message[mac1_offset : mac1_offset + MAC_LEN]
        encrypted = crypto.xaead_encrypt(self._cookie_key, nonce, self._cookie(source, now), mac1)
        return CookieReply(sender_index, nonce, encrypted).pack()

    def _cookie(self, source: bytes, now: float) -> bytes:
        if self._secret_born is None or now - self._secret_born >= COOKIE_SECRET_MAX_AGE:
            self._secret = self._rng(32)
            self._secret_born = now
        return crypto.mac(self._secret, source)


class CookieGenerator:
    """One peer's macs on what we send it, and the cookie it last gave us."""

    def __init__(self, peer_public_key: bytes) -> None:
        self._mac1_key = mac1_key(peer_public_key)
        self._cookie_key = cookie_key(peer_public_key)
        self._last_mac1_sent = b""
        self._have_sent_mac1 = False
        self._cookie = b""
        self._cookie_born: float | None = None

    def add_macs(self, message: bytearray, mac1_offset: int, now: float) -> None:
        """Fill in mac1 and, while our cookie is fresh enough, mac2."""
        mac1 = crypto.mac(self._mac1_key, bytes(message[:mac1_offset]))
        message[mac1_offset : mac1_offset + MAC_LEN] = mac1
        self._last_mac1_sent = mac1
        self._have_sent_mac1 = True
        mac2_offset = mac1_offset + MAC2_DISTANCE
        if self._cookie_born is not None and now - self._cookie_born < COOKIE_VALID_FOR:
            mac2 = crypto.mac(self._cookie, bytes(message[:mac2_offset]))
        else:
            mac2 = _ZERO_MAC
        message[mac2_offset : mac2_offset + MAC_LEN] = mac2

    def consume_reply(self, reply: CookieReply, now: float) -> bool:
        """Store the cookie if the reply answers the last mac1 we sent."""
        if not self._have_sent_mac1:
            return False
        try:
            cookie = crypto.xaead_decrypt(
                self._cookie_key, reply.nonce, reply.encrypted_cookie, self._last_mac1_sent
            )
        except CryptoError:
            return False
        self._cookie = cookie
        self._cookie_born = now
        self._have_sent_mac1 = False
        return True

    def clear(self) -> None:
        self._cookie = b""
        self._cookie_born = None
        self._have_sent_mac1 = False
