"""pywg.core.crypto against published test vectors.

Vectors transcribed from RFC 7748, RFC 8439, RFC 7693, draft-irtf-cfrg-xchacha-03 and
wireguard-go's kdf_test.go, and the published files (Wycheproof x25519 / chacha20_poly1305 /
xchacha20_poly1305, the BLAKE2s KAT), all in vectors/ (vectors/PROVENANCE.md). Every value
goes through pywg.core.crypto; a wrong byte in a vector file makes a test fail.

Two primitives are narrower in pywg.core.crypto than the vectors: the AEAD takes a 64-bit counter
rather than a 96-bit nonce, and MAC is keyed BLAKE2s with MAC_LEN (16) output bytes. To run
the vectors through the same code, a few tests replace `crypto.aead_nonce` or `crypto.MAC_LEN`
for the duration of one call (`_fixed_nonce`, `_mac_length`). Nonces that a counter can
express (first four bytes zero) also go through the unpatched counter path.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest

from pywg.core import crypto
from pywg.core.crypto import CryptoError, StaticKey
from tests.support.vectors_path import VECTORS_DIR, load_vectors


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def test_every_vector_file_is_the_one_its_provenance_names() -> None:
    """vectors/PROVENANCE.md lists each vector file with its sha256, and the files are those bytes."""
    provenance = (VECTORS_DIR / "PROVENANCE.md").read_text(encoding="utf-8")
    listed = dict(re.findall(r"^\| `([^`]+\.json)` \|.*\| `([0-9a-f]{64})` \|$", provenance, re.MULTILINE))
    present = {str(path.relative_to(VECTORS_DIR)) for path in VECTORS_DIR.rglob("*.json")}
    assert set(listed) == present
    for name, sha256 in listed.items():
        assert hashlib.sha256((VECTORS_DIR / name).read_bytes()).hexdigest() == sha256, name


# --------------------------------------------------------------------------------------------
# Routing vectors through pywg.core.crypto


@contextmanager
def _fixed_nonce(nonce: bytes) -> Iterator[None]:
    """Make crypto.aead_encrypt/decrypt use `nonce` whatever counter they are given."""
    with mock.patch.object(crypto, "aead_nonce", lambda _counter: nonce):
        yield


def _counter_for(nonce: bytes) -> int | None:
    """The counter whose WireGuard nonce is `nonce`, if there is one."""
    if len(nonce) == 12 and nonce[:4] == bytes(4):
        return int.from_bytes(nonce[4:], "little")
    return None


def aead_seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    with _fixed_nonce(nonce):
        sealed = crypto.aead_encrypt(key, 0, plaintext, aad)
    counter = _counter_for(nonce)
    if counter is not None:
        assert crypto.aead_encrypt(key, counter, plaintext, aad) == sealed
    return sealed


def aead_open(key: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
    counter = _counter_for(nonce)
    if counter is not None:
        return crypto.aead_decrypt(key, counter, sealed, aad)
    with _fixed_nonce(nonce):
        return crypto.aead_decrypt(key, 0, sealed, aad)


@contextmanager
def _mac_length(length: int) -> Iterator[None]:
    with mock.patch.object(crypto, "MAC_LEN", length):
        yield


def blake2s(outlen: int, key: bytes, data: bytes) -> bytes:
    """BLAKE2s with any digest length and key, through crypto.mac (crypto.hash_ when plain 32)."""
    if outlen == 32 and not key:
        return crypto.hash_(data)
    with _mac_length(outlen):
        return crypto.mac(key, data)


def _flip_last_bit(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def _wycheproof_cases(document: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    count = 0
    for group in document["testGroups"]:
        for case in group["tests"]:
            count += 1
            yield group, case
    assert count == document["numberOfTests"], "the vector file holds fewer tests than it declares"


def _report(failures: list[str]) -> None:
    assert not failures, f"{len(failures)} vectors failed:\n" + "\n".join(failures[:40])


# --------------------------------------------------------------------------------------------
# X25519: RFC 7748


RFC7748 = "rfc7748-x25519.json"


@pytest.mark.parametrize("index", [0, 1])
def test_x25519_rfc7748_scalar_mult(index: int) -> None:
    vector = load_vectors(RFC7748)["scalar_mult"][index]
    assert StaticKey(h(vector["scalar"])).dh(h(vector["u"])) == h(vector["output"])


def _x25519_iterate(start: bytes, iterations: int, checkpoints: dict[int, bytes]) -> dict[int, bytes]:
    k = u = start
    seen: dict[int, bytes] = {}
    for i in range(1, iterations + 1):
        k, u = StaticKey(k).dh(u), k
        if i in checkpoints:
            seen[i] = k
    return seen


def test_x25519_rfc7748_iterated() -> None:
    iterated = load_vectors(RFC7748)["iterated"]
    expected = {r["iterations"]: h(r["k"]) for r in iterated["results"] if not r["slow"]}
    assert sorted(expected) == [1, 1000]
    assert _x25519_iterate(h(iterated["start"]), max(expected), expected) == expected


def test_x25519_rfc7748_diffie_hellman() -> None:
    v = load_vectors(RFC7748)["diffie_hellman"]
    alice, bob = StaticKey(h(v["alice_private"])), StaticKey(h(v["bob_private"]))
    assert crypto.public_key(h(v["alice_private"])) == alice.public == h(v["alice_public"])
    assert crypto.public_key(h(v["bob_private"])) == bob.public == h(v["bob_public"])
    assert alice.dh(h(v["bob_public"])) == h(v["shared"])
    assert bob.dh(h(v["alice_public"])) == h(v["shared"])


def test_x25519_clamping_matches_the_ladder() -> None:
    """crypto.clamp (what `wg genkey` applies) changes no X25519 result: X25519 clamps anyway."""
    v = load_vectors(RFC7748)
    for vector in v["scalar_mult"]:
        scalar = h(vector["scalar"])
        assert crypto.clamp(scalar) != scalar  # these RFC scalars are unclamped
        assert StaticKey(crypto.clamp(scalar)).dh(h(vector["u"])) == h(vector["output"])
    clamped = crypto.clamp(h(v["diffie_hellman"]["alice_private"]))
    assert clamped[0] & 7 == 0 and clamped[31] & 0x80 == 0 and clamped[31] & 0x40
    assert crypto.public_key(clamped) == h(v["diffie_hellman"]["alice_public"])


def test_x25519_wycheproof() -> None:
    """Valid and acceptable results must match; an all-zero result must raise CryptoError."""
    document = load_vectors("wycheproof/x25519_test.json")
    failures: list[str] = []
    zero_results = 0
    for group, case in _wycheproof_cases(document):
        assert group["curve"] == "curve25519"
        label = f"tcId {case['tcId']} ({case['comment']}, {case['result']})"
        must_reject = "ZeroSharedSecret" in case["flags"]
        if must_reject != (h(case["shared"]) == bytes(32)):
            failures.append(f"{label}: ZeroSharedSecret flag and all-zero result disagree")
            continue
        try:
            shared = StaticKey(h(case["private"])).dh(h(case["public"]))
        except CryptoError:
            if must_reject:
                zero_results += 1
            else:
                failures.append(f"{label}: raised CryptoError, expected {case['shared']}")
            continue
        if must_reject:
            failures.append(f"{label}: returned {shared.hex()} instead of raising CryptoError")
        elif shared != h(case["shared"]):
            failures.append(f"{label}: got {shared.hex()}, expected {case['shared']}")
    _report(failures)
    assert zero_results > 0


def test_x25519_rejects_bad_public_key_lengths() -> None:
    key = StaticKey(bytes(range(32)))
    for length in (0, 31, 33):
        with pytest.raises(CryptoError):
            key.dh(bytes(length))


# --------------------------------------------------------------------------------------------
# ChaCha20-Poly1305: RFC 8439, Wycheproof


def test_aead_nonce_layout() -> None:
    """WireGuard's nonce: 32 zero bits, then the counter as 64-bit little-endian."""
    assert crypto.aead_nonce(0) == bytes(12)
    assert crypto.aead_nonce(1) == bytes(4) + b"\x01" + bytes(7)
    assert crypto.aead_nonce(0x0807060504030201) == h("000000000102030405060708")
    assert crypto.aead_nonce(2**64 - 1) == bytes(4) + b"\xff" * 8
    for counter in (-1, 2**64):
        with pytest.raises((struct.error, ValueError, OverflowError)):
            crypto.aead_nonce(counter)


@pytest.mark.parametrize("name", ["section-2.8.2", "appendix-A.5"])
def test_chacha20poly1305_rfc8439(name: str) -> None:
    (v,) = [v for v in load_vectors("rfc8439-chacha20poly1305.json")["vectors"] if v["name"] == name]
    key, nonce, aad = h(v["key"]), h(v["nonce"]), h(v["aad"])
    plaintext, sealed = h(v["plaintext"]), h(v["ciphertext"]) + h(v["tag"])
    assert nonce == h(v["constant"]) + h(v["iv"])
    assert plaintext.decode("utf-8") == v["plaintext_text"]
    assert aead_seal(key, nonce, plaintext, aad) == sealed
    assert aead_open(key, nonce, sealed, aad) == plaintext
    with pytest.raises(CryptoError):
        aead_open(key, nonce, _flip_last_bit(sealed), aad)
    with pytest.raises(CryptoError):
        aead_open(key, nonce, sealed, aad + b"\x00")


def test_chacha20poly1305_rfc8439_a5_through_counter() -> None:
    """A.5's nonce is 00000000 || 0102030405060708: WireGuard's nonce for one counter value."""
    (v,) = [v for v in load_vectors("rfc8439-chacha20poly1305.json")["vectors"] if v["section"] == "A.5"]
    counter = 0x0807060504030201
    assert crypto.aead_nonce(counter) == h(v["nonce"])
    sealed = h(v["ciphertext"]) + h(v["tag"])
    assert crypto.aead_decrypt(h(v["key"]), counter, sealed, h(v["aad"])) == h(v["plaintext"])
    with pytest.raises(CryptoError):
        crypto.aead_decrypt(h(v["key"]), counter + 1, sealed, h(v["aad"]))


Aead = Callable[[bytes, bytes, bytes, bytes], bytes]


def _check_aead_case(case: dict[str, Any], nonce_size: int, seal: Aead, open_: Aead) -> str | None:
    """One Wycheproof AEAD case; returns a failure description or None."""
    key, nonce, aad, msg = h(case["key"]), h(case["iv"]), h(case["aad"]), h(case["msg"])
    sealed = h(case["ct"]) + h(case["tag"])
    if len(nonce) != nonce_size:
        problems = []
        for what, call in (
            ("seal", lambda: seal(key, nonce, msg, aad)),
            ("open", lambda: open_(key, nonce, sealed, aad)),
        ):
            try:
                call()
            except (CryptoError, ValueError, TypeError):
                continue
            problems.append(f"{what} accepted a {len(nonce)}-byte nonce")
        return "; ".join(problems) or None
    if case["result"] == "valid":
        got = seal(key, nonce, msg, aad)
        if got != sealed:
            return f"sealed to {got.hex()}"
        try:
            opened = open_(key, nonce, sealed, aad)
        except CryptoError:
            return "a valid ciphertext did not open"
        return None if opened == msg else f"opened to {opened.hex()}"
    try:
        opened = open_(key, nonce, sealed, aad)
    except CryptoError:
        return None
    return f"an invalid ciphertext opened (to {opened.hex()})"


def test_chacha20poly1305_wycheproof() -> None:
    document = load_vectors("wycheproof/chacha20_poly1305_test.json")
    assert document["algorithm"] == "CHACHA20-POLY1305"
    failures: list[str] = []
    counter_nonces = 0
    for group, case in _wycheproof_cases(document):
        assert group["keySize"] == 256 and group["tagSize"] == 128
        assert case["result"] in ("valid", "invalid")
        if _counter_for(h(case["iv"])) is not None:
            counter_nonces += 1
        problem = _check_aead_case(case, 12, aead_seal, aead_open)
        if problem:
            failures.append(f"tcId {case['tcId']} ({case['comment']}, {case['result']}): {problem}")
    _report(failures)
    assert counter_nonces > 0  # some cases also went through the unpatched counter path


# --------------------------------------------------------------------------------------------
# XChaCha20-Poly1305: draft-irtf-cfrg-xchacha-03, Wycheproof


def test_xchacha20poly1305_draft_a31() -> None:
    (v,) = load_vectors("xchacha20poly1305-draft.json")["vectors"]
    key, iv, aad, plaintext = h(v["key"]), h(v["iv"]), h(v["aad"]), h(v["plaintext"])
    sealed = h(v["ciphertext"]) + h(v["tag"])
    assert len(iv) == 24 and h(v["fixed_common_part"]) == bytes(4)
    assert plaintext.decode("utf-8") == v["plaintext_text"]
    assert crypto.xaead_encrypt(key, iv, plaintext, aad) == sealed
    assert crypto.xaead_decrypt(key, iv, sealed, aad) == plaintext
    with pytest.raises(CryptoError):
        crypto.xaead_decrypt(key, iv, _flip_last_bit(sealed), aad)
    with pytest.raises(CryptoError):
        crypto.xaead_decrypt(key, _flip_last_bit(iv), sealed, aad)


def test_xchacha20poly1305_wycheproof() -> None:
    document = load_vectors("wycheproof/xchacha20_poly1305_test.json")
    assert document["algorithm"] == "XCHACHA20-POLY1305"
    failures: list[str] = []
    for group, case in _wycheproof_cases(document):
        assert group["keySize"] == 256 and group["tagSize"] == 128
        assert case["result"] in ("valid", "invalid")
        problem = _check_aead_case(case, 24, crypto.xaead_encrypt, crypto.xaead_decrypt)
        if problem:
            failures.append(f"tcId {case['tcId']} ({case['comment']}, {case['result']}): {problem}")
    _report(failures)


# --------------------------------------------------------------------------------------------
# BLAKE2s: RFC 7693, BLAKE2 KAT


def test_blake2s_rfc7693_appendix_b() -> None:
    v = load_vectors("rfc7693-blake2s.json")["appendix_b"]
    assert h(v["input"]) == v["input_text"].encode("ascii")
    assert v["digest_size"] == 32
    assert crypto.hash_(h(v["input"])) == h(v["digest"])


def _selftest_seq(length: int, seed: int) -> bytes:
    a, b = (0xDEAD4BAD * seed) & 0xFFFFFFFF, 1
    out = bytearray()
    for _ in range(length):
        a, b = b, (a + b) & 0xFFFFFFFF
        out.append(b >> 24)
    return bytes(out)


def test_blake2s_rfc7693_appendix_e_selftest() -> None:
    v = load_vectors("rfc7693-blake2s.json")["appendix_e"]
    assert int(v["sequence"]["multiplier"], 16) == 0xDEAD4BAD
    digests = bytearray()
    for outlen in v["digest_sizes"]:
        for inlen in v["input_lengths"]:
            data = _selftest_seq(inlen, inlen)
            digests += blake2s(outlen, b"", data)
            digests += blake2s(outlen, _selftest_seq(outlen, outlen), data)
    assert len(digests) == 2 * len(v["input_lengths"]) * sum(v["digest_sizes"])
    assert crypto.hash_(bytes(digests)) == h(v["grand_hash"])


def _blake2s_kat() -> list[dict[str, str]]:
    entries = load_vectors("blake2/blake2s-kat.json")
    assert len(entries) == 512 and all(e["hash"] == "blake2s" for e in entries)
    return entries


def test_blake2s_kat_unkeyed() -> None:
    entries = [e for e in _blake2s_kat() if not e["key"]]
    assert len(entries) == 256
    failures = [
        f"input of {len(e['in']) // 2} bytes" for e in entries if crypto.hash_(h(e["in"])) != h(e["out"])
    ]
    _report(failures)


def test_blake2s_kat_keyed() -> None:
    entries = [e for e in _blake2s_kat() if e["key"]]
    assert len(entries) == 256
    failures = [
        f"input of {len(e['in']) // 2} bytes"
        for e in entries
        if blake2s(len(e["out"]) // 2, h(e["key"]), h(e["in"])) != h(e["out"])
    ]
    _report(failures)


def test_mac_is_blake2s_with_16_byte_digest_not_a_truncation() -> None:
    """MAC1/MAC2/cookies: the digest length 16 is a BLAKE2s parameter, so it is not out[:16]."""
    for e in _blake2s_kat():
        if e["key"]:
            tag = crypto.mac(h(e["key"]), h(e["in"]))
            assert len(tag) == 16
            assert tag != h(e["out"])[:16]


# --------------------------------------------------------------------------------------------
# HMAC-BLAKE2s KDF: wireguard-go


def test_kdf_wireguard_go() -> None:
    vectors = load_vectors("wireguard-go-kdf.json")["vectors"]
    assert len(vectors) == 3
    for v in vectors:
        key, data = h(v["key"]), h(v["input"])
        assert key == v["key_text"].encode("ascii") and data == v["input_text"].encode("ascii")
        t0, t1, t2 = h(v["t0"]), h(v["t1"]), h(v["t2"])
        assert crypto.kdf(3, key, data) == (t0, t1, t2)
        assert crypto.kdf(2, key, data) == (t0, t1)
        assert crypto.kdf(1, key, data) == (t0,)
