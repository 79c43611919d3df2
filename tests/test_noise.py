"""The handshake code against the Noise test-suite vector and in WireGuard's own use."""

from __future__ import annotations

import pytest

from pywg.core import crypto
from pywg.core.crypto import StaticKey
from pywg.core.noise import (
    Handshake,
    HandshakeState,
    InitiationBody,
    ResponseBody,
    consume_initiation,
)
from tests.support.vectors_path import load_vectors


def _noise_vector() -> dict:
    (vector,) = load_vectors("noise/Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s.json")["vectors"]
    return vector


def _transport(key: bytes, counter: int, payload: bytes) -> bytes:
    return crypto.aead_encrypt(key, counter, payload, b"")


def test_noise_ikpsk2_vector() -> None:
    v = _noise_vector()
    h = bytes.fromhex
    prologue = h(v["init_prologue"])
    assert prologue == h(v["resp_prologue"])
    psk = h(v["init_psks"][0])
    initiator_static = StaticKey(h(v["init_static"]))
    responder_static = StaticKey(h(v["resp_static"]))
    assert responder_static.public == h(v["init_remote_static"])
    messages = [(h(m["payload"]), h(m["ciphertext"])) for m in v["messages"]]

    initiator = Handshake(initiator_static, responder_static.public, psk, prologue)
    responder = Handshake(responder_static, initiator_static.public, psk, prologue)

    payload, expected = messages[0]
    body = initiator.create_initiation(h(v["init_ephemeral"]), 1, payload)
    assert body.ephemeral + body.encrypted_static + body.encrypted_payload == expected

    def find(static: bytes) -> Handshake | None:
        return responder if static == initiator_static.public else None

    consumed = consume_initiation(responder_static, body, find, prologue)
    assert consumed is not None
    found, initiation = consumed
    assert found is responder and initiation.payload == payload
    # The vector's payload is no timestamp; accept it as the responder would.
    assert responder.accept_initiation(initiation, 1, now=0.0)

    payload, expected = messages[1]
    response = responder.create_response(h(v["resp_ephemeral"]), 2, payload)
    assert response.ephemeral + response.encrypted_payload == expected
    assert (
        initiator.consume_response(ResponseBody(response.ephemeral, response.encrypted_payload), 2) == payload
    )
    assert initiator.hash == responder.hash == h(v["handshake_hash"])

    i_send, i_recv, i_is_initiator = initiator.derive_keys()
    r_send, r_recv, r_is_initiator = responder.derive_keys()
    assert (i_is_initiator, r_is_initiator) == (True, False)
    assert (i_send, i_recv) == (r_recv, r_send)
    # Transport messages alternate initiator -> responder, responder -> initiator.
    for index, (payload, expected) in enumerate(messages[2:]):
        key = i_send if index % 2 == 0 else r_send
        assert _transport(key, index // 2, payload) == expected


def _pair(psk: bytes | None) -> tuple[StaticKey, StaticKey, Handshake, Handshake]:
    a = StaticKey(crypto.clamp(bytes(range(32))))
    b = StaticKey(crypto.clamp(bytes(range(32, 64))))
    return a, b, Handshake(a, b.public, psk), Handshake(b, a.public, psk)


@pytest.mark.parametrize("psk", [None, bytes([7]) * 32])
def test_wireguard_handshake_both_roles(psk: bytes | None) -> None:
    a, b, ha, hb = _pair(psk)
    timestamp = bytes(11) + b"\x01"
    body = ha.create_initiation(bytes([1]) * 32, 0x1111, timestamp)
    assert len(body.encrypted_static) == 48 and len(body.encrypted_payload) == 28
    consumed = consume_initiation(b, body, lambda s: hb if s == a.public else None)
    assert consumed is not None
    assert hb.accept_initiation(consumed[1], 0x1111, now=10.0)
    response = hb.create_response(bytes([2]) * 32, 0x2222)
    assert len(response.encrypted_payload) == 16
    assert ha.consume_response(response, 0x2222) == b""
    assert ha.state is HandshakeState.CONSUMED_RESPONSE and hb.state is HandshakeState.CREATED_RESPONSE
    a_send, a_recv, _ = ha.derive_keys()
    b_send, b_recv, _ = hb.derive_keys()
    assert a_send == b_recv and a_recv == b_send and a_send != a_recv


def test_psk_mismatch_fails_response() -> None:
    a, b, ha, _ = _pair(bytes([1]) * 32)
    hb = Handshake(b, a.public, bytes([2]) * 32)
    body = ha.create_initiation(bytes([1]) * 32, 1, bytes(11) + b"\x01")
    consumed = consume_initiation(b, body, lambda s: hb)
    assert consumed is not None and hb.accept_initiation(consumed[1], 1, 0.0)
    response = hb.create_response(bytes([2]) * 32, 2)
    assert ha.consume_response(response, 2) is None
    assert ha.state is HandshakeState.CREATED_INITIATION


def test_initiation_replay_and_flood_rejected() -> None:
    _a, b, ha, hb = _pair(None)
    find = lambda s: hb  # noqa: E731
    first = ha.create_initiation(bytes([1]) * 32, 1, bytes(11) + b"\x05")
    consumed = consume_initiation(b, first, find)
    assert consumed is not None and hb.accept_initiation(consumed[1], 1, now=100.0)
    # The same initiation again is a replay, whatever the time.
    again = consume_initiation(b, first, find)
    assert again is not None and not hb.accept_initiation(again[1], 1, now=200.0)
    # A newer timestamp within 20 ms of the last accepted one is a flood.
    newer = consume_initiation(b, ha.create_initiation(bytes([3]) * 32, 2, bytes(11) + b"\x06"), find)
    assert newer is not None
    assert not hb.accept_initiation(newer[1], 2, now=100.01)
    assert hb.accept_initiation(newer[1], 2, now=100.03)


def test_initiation_from_unknown_peer_or_garbage() -> None:
    _a, b, ha, _ = _pair(None)
    body = ha.create_initiation(bytes([1]) * 32, 1, bytes(12))
    assert consume_initiation(b, body, lambda s: None) is None
    broken = InitiationBody(body.ephemeral, bytes(48), body.encrypted_payload)
    assert consume_initiation(b, broken, lambda s: None) is None
    low_order = InitiationBody(bytes(32), body.encrypted_static, body.encrypted_payload)
    assert consume_initiation(b, low_order, lambda s: None) is None


def test_low_order_peer_key_cannot_handshake() -> None:
    local = StaticKey(crypto.clamp(bytes(range(32))))
    handshake = Handshake(local, bytes(32))
    assert handshake.precomputed_static_static is None
    with pytest.raises(crypto.CryptoError):
        handshake.create_initiation(bytes([1]) * 32, 1, bytes(12))
