"""WireGuard's primitives, each a thin wrapper over a well-kept library.

HASH and MAC are BLAKE2s from hashlib, HMAC is RFC 2104 over BLAKE2s, AEAD is
ChaCha20-Poly1305 and DH is X25519 from `cryptography`, XAEAD is
XChaCha20-Poly1305 from PyNaCl (used only for cookie replies).
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import CryptoError as _NaclCryptoError

from pywg.core.constants import KEY_LEN, MAC_LEN

_ZERO_KEY = bytes(KEY_LEN)


class CryptoError(Exception):
    """A primitive refused its input: a bad tag or a degenerate DH result."""


def hash_(data: bytes) -> bytes:
    return hashlib.blake2s(data).digest()


def mac(key: bytes, data: bytes) -> bytes:
    """Keyed BLAKE2s with a 16-byte output (MAC1, MAC2, cookies)."""
    return hashlib.blake2s(data, key=key, digest_size=MAC_LEN).digest()


def hmac(key: bytes, data: bytes) -> bytes:
    return _hmac.digest(key, data, hashlib.blake2s)


def kdf(n: int, key: bytes, data: bytes) -> tuple[bytes, ...]:
    """HKDF with HMAC-BLAKE2s: returns n 32-byte outputs (KDF1, KDF2, KDF3)."""
    prk = hmac(key, data)
    outputs: list[bytes] = []
    previous = b""
    for i in range(1, n + 1):
        previous = hmac(prk, previous + bytes([i]))
        outputs.append(previous)
    return tuple(outputs)


# 96-bit nonce: 32 zero bits then the little-endian 64-bit counter (the data path packs it per message).
AEAD_NONCE = struct.Struct("<4xQ")


def aead_nonce(counter: int) -> bytes:
    """96-bit nonce: 32 zero bits then the little-endian 64-bit counter."""
    return AEAD_NONCE.pack(counter)


def aead_encrypt(key: bytes, counter: int, plaintext: bytes, aad: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(aead_nonce(counter), plaintext, aad)


def aead_decrypt(key: bytes, counter: int, ciphertext: bytes, aad: bytes) -> bytes:
    try:
        return ChaCha20Poly1305(key).decrypt(aead_nonce(counter), ciphertext, aad)
    except InvalidTag:
        raise CryptoError("AEAD tag mismatch") from None


def xaead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    return crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key)


def xaead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    try:
        return crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, aad, nonce, key)
    except _NaclCryptoError:
        raise CryptoError("XAEAD tag mismatch") from None


def clamp(private_key: bytes) -> bytes:
    """Curve25519 clamping, as `wg genkey` applies it before printing."""
    key = bytearray(private_key)
    key[0] &= 248
    key[31] = (key[31] & 127) | 64
    return bytes(key)


class StaticKey:
    """An X25519 private key with its public key computed once."""

    __slots__ = ("_private", "private_bytes", "public")

    def __init__(self, private_bytes: bytes) -> None:
        if len(private_bytes) != KEY_LEN:
            raise ValueError(f"a private key is {KEY_LEN} bytes, got {len(private_bytes)}")
        self.private_bytes = bytes(private_bytes)
        self._private = X25519PrivateKey.from_private_bytes(self.private_bytes)
        self.public = self._private.public_key().public_bytes_raw()

    def dh(self, public: bytes) -> bytes:
        return dh(self._private, public)

    def __repr__(self) -> str:  # never show the private half
        return f"StaticKey(public={self.public.hex()[:16]}…)"


def dh(private: X25519PrivateKey, public: bytes) -> bytes:
    """X25519, refusing the all-zero result of a low-order point."""
    if len(public) != KEY_LEN:
        raise CryptoError("public key must be 32 bytes")
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:  # OpenSSL refuses an all-zero shared secret itself
        raise CryptoError("X25519 result is all zero") from None
    if shared == _ZERO_KEY:
        raise CryptoError("X25519 result is all zero")
    return shared


def public_key(private_bytes: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private_bytes).public_key().public_bytes_raw()
