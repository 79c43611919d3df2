"""Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s, the WireGuard handshake (whitepaper §5.4).

`SymmetricState` is the Noise object of that name; `Handshake` is one peer's
handshake in either role. Functions return message *bodies* (ephemeral,
encrypted static, encrypted payload) so the same code runs WireGuard's
framing and the Noise test-suite vector, whose prologue and payloads differ.
Ephemeral keys come from the caller, who owns the random source.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from pywg.core import crypto
from pywg.core.constants import (
    CONSTRUCTION,
    HASH_LEN,
    IDENTIFIER,
    KEY_LEN,
    MIN_INITIATION_INTERVAL,
    TIMESTAMP_LEN,
)
from pywg.core.crypto import CryptoError, StaticKey

_ZERO_PSK = bytes(KEY_LEN)


class SymmetricState:
    """Noise's chaining key and handshake hash."""

    __slots__ = ("chaining_key", "hash")

    def __init__(self, chaining_key: bytes, hash_: bytes) -> None:
        self.chaining_key = chaining_key
        self.hash = hash_

    @classmethod
    def initialize(cls, protocol_name: bytes, prologue: bytes) -> SymmetricState:
        if len(protocol_name) <= HASH_LEN:
            h = protocol_name.ljust(HASH_LEN, b"\x00")
        else:
            h = crypto.hash_(protocol_name)
        state = cls(h, h)
        state.mix_hash(prologue)
        return state

    def copy(self) -> SymmetricState:
        return SymmetricState(self.chaining_key, self.hash)

    def mix_hash(self, data: bytes) -> None:
        self.hash = crypto.hash_(self.hash + data)

    def mix_key(self, input_key_material: bytes) -> bytes:
        self.chaining_key, key = crypto.kdf(2, self.chaining_key, input_key_material)
        return key

    def mix_dh(self, private: X25519PrivateKey | StaticKey, public: bytes) -> bytes:
        if isinstance(private, StaticKey):
            return self.mix_key(private.dh(public))
        return self.mix_key(crypto.dh(private, public))

    def mix_key_and_hash(self, psk: bytes) -> bytes:
        self.chaining_key, tau, key = crypto.kdf(3, self.chaining_key, psk)
        self.mix_hash(tau)
        return key

    def encrypt_and_hash(self, key: bytes, plaintext: bytes) -> bytes:
        ciphertext = crypto.aead_encrypt(key, 0, plaintext, self.hash)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, key: bytes, ciphertext: bytes) -> bytes:
        plaintext = crypto.aead_decrypt(key, 0, ciphertext, self.hash)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[bytes, bytes]:
        first, second = crypto.kdf(2, self.chaining_key, b"")
        return first, second


_INITIAL_STATES: dict[bytes, SymmetricState] = {}


def initial_state(responder_static: bytes, prologue: bytes = IDENTIFIER) -> SymmetricState:
    """State after the prologue and the responder's static key (the IK pre-message)."""
    base = _INITIAL_STATES.get(prologue)
    if base is None:
        base = _INITIAL_STATES.setdefault(prologue, SymmetricState.initialize(CONSTRUCTION, prologue))
    state = base.copy()
    state.mix_hash(responder_static)
    return state


class HandshakeState(enum.Enum):
    ZEROED = 0
    CREATED_INITIATION = 1
    CONSUMED_INITIATION = 2
    CREATED_RESPONSE = 3
    CONSUMED_RESPONSE = 4


@dataclass(slots=True)
class InitiationBody:
    ephemeral: bytes
    encrypted_static: bytes
    encrypted_payload: bytes


@dataclass(slots=True)
class ResponseBody:
    ephemeral: bytes
    encrypted_payload: bytes


class Handshake:
    """One peer's handshake: our static key, theirs, and the optional PSK."""

    def __init__(
        self,
        local: StaticKey | None,
        remote_static: bytes,
        preshared_key: bytes | None = None,
        prologue: bytes = IDENTIFIER,
    ) -> None:
        self.remote_static = remote_static
        self.preshared_key = preshared_key or _ZERO_PSK
        self.prologue = prologue
        self.state = HandshakeState.ZEROED
        self.symmetric: SymmetricState | None = None
        self.local_ephemeral: X25519PrivateKey | None = None
        self.remote_ephemeral = b""
        self.local_index = 0
        self.remote_index = 0
        self.latest_timestamp = bytes(TIMESTAMP_LEN)
        self.last_initiation_consumption: float | None = None
        self.set_local(local)

    def set_local(self, local: StaticKey | None) -> None:
        """(Re)compute DH(our static, their static) once, as the kernel does."""
        self.local = local
        self.precomputed_static_static: bytes | None = None
        if local is not None:
            try:
                self.precomputed_static_static = local.dh(self.remote_static)
            except CryptoError:
                self.precomputed_static_static = None
        self.clear()

    def clear(self) -> None:
        self.state = HandshakeState.ZEROED
        self.symmetric = None
        self.local_ephemeral = None
        self.remote_ephemeral = b""
        self.local_index = 0
        self.remote_index = 0

    # Initiator.
    def create_initiation(
        self, ephemeral_private: bytes, sender_index: int, payload: bytes
    ) -> InitiationBody:
        """-> e, es, s, ss, {payload}. Raises CryptoError if we have no usable keys."""
        local = self._require_keys()
        sym = initial_state(self.remote_static, self.prologue)
        ephemeral = X25519PrivateKey.from_private_bytes(ephemeral_private)
        ephemeral_public = ephemeral.public_key().public_bytes_raw()
        sym.mix_hash(ephemeral_public)
        sym.mix_key(ephemeral_public)
        key = sym.mix_dh(ephemeral, self.remote_static)
        encrypted_static = sym.encrypt_and_hash(key, local.public)
        key = sym.mix_key(self._static_static())
        encrypted_payload = sym.encrypt_and_hash(key, payload)
        self.symmetric = sym
        self.local_ephemeral = ephemeral
        self.local_index = sender_index
        self.state = HandshakeState.CREATED_INITIATION
        return InitiationBody(ephemeral_public, encrypted_static, encrypted_payload)

    def consume_response(self, body: ResponseBody, sender_index: int) -> bytes | None:
        """<- e, ee, se, psk, {payload}. The payload on success, else None; state kept on failure."""
        if self.state is not HandshakeState.CREATED_INITIATION or self.symmetric is None:
            return None
        local = self._require_keys()
        assert self.local_ephemeral is not None
        sym = self.symmetric.copy()
        try:
            sym.mix_hash(body.ephemeral)
            sym.mix_key(body.ephemeral)
            sym.mix_dh(self.local_ephemeral, body.ephemeral)
            sym.mix_dh(local, body.ephemeral)
            key = sym.mix_key_and_hash(self.preshared_key)
            payload = sym.decrypt_and_hash(key, body.encrypted_payload)
        except CryptoError:
            return None
        self.symmetric = sym
        self.remote_ephemeral = body.ephemeral
        self.remote_index = sender_index
        self.state = HandshakeState.CONSUMED_RESPONSE
        return payload

    # Responder.
    def accept_initiation(self, consumed: ConsumedInitiation, sender_index: int, now: float) -> bool:
        """Take over a decrypted initiation unless it is a replay or a flood."""
        replay = consumed.payload <= self.latest_timestamp
        flood = (
            self.last_initiation_consumption is not None
            and now - self.last_initiation_consumption < MIN_INITIATION_INTERVAL
        )
        if replay or flood:
            return False
        self.latest_timestamp = consumed.payload
        self.last_initiation_consumption = now
        self.symmetric = consumed.symmetric
        self.remote_ephemeral = consumed.ephemeral
        self.remote_index = sender_index
        self.local_ephemeral = None
        self.state = HandshakeState.CONSUMED_INITIATION
        return True

    def create_response(
        self, ephemeral_private: bytes, sender_index: int, payload: bytes = b""
    ) -> ResponseBody:
        if self.state is not HandshakeState.CONSUMED_INITIATION or self.symmetric is None:
            raise CryptoError("no consumed initiation to answer")
        sym = self.symmetric
        ephemeral = X25519PrivateKey.from_private_bytes(ephemeral_private)
        ephemeral_public = ephemeral.public_key().public_bytes_raw()
        sym.mix_hash(ephemeral_public)
        sym.mix_key(ephemeral_public)
        sym.mix_dh(ephemeral, self.remote_ephemeral)
        sym.mix_dh(ephemeral, self.remote_static)
        key = sym.mix_key_and_hash(self.preshared_key)
        encrypted_payload = sym.encrypt_and_hash(key, payload)
        self.local_ephemeral = ephemeral
        self.local_index = sender_index
        self.state = HandshakeState.CREATED_RESPONSE
        return ResponseBody(ephemeral_public, encrypted_payload)

    # Both.
    def derive_keys(self) -> tuple[bytes, bytes, bool]:
        """(sending key, receiving key, we are the initiator) after a completed handshake."""
        if self.symmetric is None or self.state not in (
            HandshakeState.CREATED_RESPONSE,
            HandshakeState.CONSUMED_RESPONSE,
        ):
            raise CryptoError("handshake is not complete")
        first, second = self.symmetric.split()
        initiator = self.state is HandshakeState.CONSUMED_RESPONSE
        return (first, second, True) if initiator else (second, first, False)

    @property
    def hash(self) -> bytes:
        return self.symmetric.hash if self.symmetric is not None else b""

    def _require_keys(self) -> StaticKey:
        if self.local is None or self.precomputed_static_static is None:
            raise CryptoError("no private key, or the peer's public key is of low order")
        return self.local

    def _static_static(self) -> bytes:
        assert self.precomputed_static_static is not None
        return self.precomputed_static_static


@dataclass(slots=True)
class ConsumedInitiation:
    """An initiation decrypted up to its payload, not yet bound to a peer's state."""

    remote_static: bytes
    ephemeral: bytes
    payload: bytes
    symmetric: SymmetricState


def consume_initiation(
    local: StaticKey,
    body: InitiationBody,
    find_handshake: Callable[[bytes], Handshake | None],
    prologue: bytes = IDENTIFIER,
) -> tuple[Handshake, ConsumedInitiation] | None:
    """-> e, es, s, ss, {payload} as the responder. None if it does not decrypt
    or names no peer we know; the peer is found by its decrypted static key."""
    sym = initial_state(local.public, prologue)
    try:
        sym.mix_hash(body.ephemeral)
        sym.mix_key(body.ephemeral)
        key = sym.mix_dh(local, body.ephemeral)
        remote_static = sym.decrypt_and_hash(key, body.encrypted_static)
        handshake = find_handshake(remote_static)
        if handshake is None or handshake.precomputed_static_static is None:
            return None
        key = sym.mix_key(handshake.precomputed_static_static)
        payload = sym.decrypt_and_hash(key, body.encrypted_payload)
    except CryptoError:
        return None
    return handshake, ConsumedInitiation(remote_static, body.ephemeral, payload, sym)
