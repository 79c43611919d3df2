"""WireGuard keys: generation, and the two text forms `wg` uses.

Keys are 32 raw bytes. People see them as standard base64 (44 characters ending in "=", as
`wg genkey`, `wg pubkey` and configuration files print them); the UAPI wire protocol carries
them as 64 hex digits. Nothing here reads OS randomness: callers pass `rng(n) -> n bytes`.

Errors about key text name the field and the problem, never the text itself, so a key that
is almost right cannot end up in a log.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable

from pywg.core.constants import KEY_LEN
from pywg.core.crypto import clamp, public_key

Rng = Callable[[int], bytes]

KEY_LEN_BASE64 = 44  # 4 * ceil(32 / 3): 43 significant characters, then one "="
KEY_LEN_HEX = 2 * KEY_LEN

_BASE64_KEY = re.compile(r"[A-Za-z0-9+/]{43}=")
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


class KeyFormatError(ValueError):
    """Key text or bytes of the wrong form. The message names the field, never the key."""


def _random_key(rng: Rng) -> bytes:
    key = rng(KEY_LEN)
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_LEN:
        raise ValueError(f"rng({KEY_LEN}) must return {KEY_LEN} bytes")
    return bytes(key)


def generate_private_key(rng: Rng) -> bytes:
    """32 random bytes, clamped for Curve25519: what `wg genkey` prints."""
    return clamp(_random_key(rng))


def generate_preshared_key(rng: Rng) -> bytes:
    """32 random bytes, unclamped: what `wg genpsk` prints."""
    return _random_key(rng)


def _check_raw(key: bytes, field: str) -> bytes:
    if not isinstance(key, bytes | bytearray):
        raise KeyFormatError(f"{field}: expected {KEY_LEN} bytes, got {type(key).__name__}")
    if len(key) != KEY_LEN:
        raise KeyFormatError(f"{field}: a key is {KEY_LEN} bytes, got {len(key)}")
    return bytes(key)


def public_key_for(private: bytes) -> bytes:
    """The X25519 public key of a private key (clamped or not: X25519 clamps), as `wg pubkey`."""
    return public_key(_check_raw(private, "private key"))


def encode_key(key: bytes) -> str:
    """Standard base64 of a 32-byte key: 44 characters, the last one "="."""
    return base64.b64encode(_check_raw(key, "key")).decode("ascii")


def decode_key(text: str, field: str = "key") -> bytes:
    """The 32 bytes of a base64 key, accepted in exactly the form `wg` accepts.

    That is 43 characters of the standard alphabet then "=", with no surrounding whitespace
    (strip it first if the source allows it) and no stray bits in the last character.
    """
    if not isinstance(text, str):
        raise KeyFormatError(f"{field}: expected base64 text, got {type(text).__name__}")
    if not text:
        raise KeyFormatError(f"{field}: is empty")
    if text.strip() != text:
        raise KeyFormatError(f"{field}: has whitespace before or after the key")
    if len(text) != KEY_LEN_BASE64:
        raise KeyFormatError(
            f"{field}: a key is {KEY_LEN_BASE64} characters of base64, got {len(text)} characters"
        )
    if not _BASE64_KEY.fullmatch(text):
        raise KeyFormatError(
            f"{field}: not base64 (a key uses A-Z, a-z, 0-9, '+' and '/', and ends in one '=')"
        )
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):  # unreachable after the pattern check; kept as a guard
        raise KeyFormatError(f"{field}: not base64") from None
    if len(raw) != KEY_LEN or base64.b64encode(raw).decode("ascii") != text:
        raise KeyFormatError(
            f"{field}: not the base64 of a {KEY_LEN}-byte key (its last character before '=' "
            "carries bits a key does not have)"
        )
    return raw


def key_to_hex(key: bytes) -> str:
    """Lowercase hex of a 32-byte key, as UAPI carries it."""
    return _check_raw(key, "key").hex()


def key_from_hex(text: str, field: str = "key") -> bytes:
    """The 32 bytes of a 64-digit hex key (either case, nothing else), as UAPI carries it."""
    if not isinstance(text, str):
        raise KeyFormatError(f"{field}: expected hex text, got {type(text).__name__}")
    if len(text) != KEY_LEN_HEX:
        raise KeyFormatError(f"{field}: a key is {KEY_LEN_HEX} hex digits, got {len(text)} characters")
    if not _HEX_KEY.fullmatch(text):
        raise KeyFormatError(f"{field}: not hex (a key uses only 0-9 and a-f)")
    return bytes.fromhex(text)
