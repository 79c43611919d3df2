"""pywg.core.keys and the key subcommands of the CLI, held to wireguard-tools' `wg`.

The comparisons with `wg` run both programs as subprocesses. `wg` (wireguard-tools) must be
on PATH: without it these tests fail and say so, they do not skip.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pywg.cli import parser as cli
from pywg.core import crypto
from pywg.core.keys import (
    KeyFormatError,
    decode_key,
    encode_key,
    generate_preshared_key,
    generate_private_key,
    key_from_hex,
    key_to_hex,
    public_key_for,
)
from tests.support.vectors_path import load_vectors

CHECKOUT = Path(__file__).resolve().parents[1]
BASE64_KEY_LINE = re.compile(r"[A-Za-z0-9+/]{43}=\n")
KEY_00_1F = bytes(range(32))
KEY_00_1F_BASE64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


def fixed_rng(value: bytes) -> Callable[[int], bytes]:
    def rng(n: int) -> bytes:
        assert n == 32
        return value

    return rng


def _is_clamped(key: bytes) -> bool:
    return key[0] & 7 == 0 and key[31] & 0x80 == 0 and key[31] & 0x40 != 0


def _assert_not_echoed(secret: str, message: str) -> None:
    """No run of 6 characters of the rejected text shows up in the message."""
    for i in range(len(secret) - 5):
        assert secret[i : i + 6] not in message, f"the message repeats part of the key text: {message!r}"


# --------------------------------------------------------------------------------------------
# Generation


def test_generate_private_key_clamps_the_rng_bytes() -> None:
    assert generate_private_key(fixed_rng(b"\xff" * 32)) == b"\xf8" + b"\xff" * 30 + b"\x7f"
    assert generate_private_key(fixed_rng(bytes(32))) == bytes(31) + b"\x40"
    key = generate_private_key(fixed_rng(KEY_00_1F))
    assert key == crypto.clamp(KEY_00_1F) and _is_clamped(key)


def test_generate_preshared_key_is_the_rng_bytes_unchanged() -> None:
    assert generate_preshared_key(fixed_rng(b"\xff" * 32)) == b"\xff" * 32
    assert generate_preshared_key(fixed_rng(bytearray(KEY_00_1F))) == KEY_00_1F


@pytest.mark.parametrize("generate", [generate_private_key, generate_preshared_key])
def test_generation_refuses_a_short_rng(generate: Callable[[Callable[[int], bytes]], bytes]) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        generate(lambda n: bytes(n - 1))


def test_public_key_for_matches_rfc7748() -> None:
    v = load_vectors("rfc7748-x25519.json")["diffie_hellman"]
    assert public_key_for(bytes.fromhex(v["alice_private"])) == bytes.fromhex(v["alice_public"])
    assert public_key_for(bytes.fromhex(v["bob_private"])) == bytes.fromhex(v["bob_public"])
    clamped = crypto.clamp(bytes.fromhex(v["alice_private"]))
    assert public_key_for(clamped) == bytes.fromhex(v["alice_public"])


@pytest.mark.parametrize("length", [0, 31, 33])
def test_public_key_for_refuses_wrong_lengths(length: int) -> None:
    with pytest.raises(KeyFormatError, match="private key: a key is 32 bytes"):
        public_key_for(bytes(length))


# --------------------------------------------------------------------------------------------
# Base64 and hex


def test_encode_key_known_values() -> None:
    assert encode_key(KEY_00_1F) == KEY_00_1F_BASE64
    assert encode_key(bytes(32)) == "A" * 43 + "="
    assert encode_key(b"\xff" * 32) == "/" * 42 + "8="


@pytest.mark.parametrize("seed", range(8))
def test_base64_and_hex_round_trip(seed: int) -> None:
    key = crypto.hash_(bytes([seed]))
    text = encode_key(key)
    assert len(text) == 44 and text.endswith("=") and text == base64.b64encode(key).decode()
    assert decode_key(text) == key
    hex_text = key_to_hex(key)
    assert hex_text == key.hex() and len(hex_text) == 64
    assert key_from_hex(hex_text) == key
    assert key_from_hex(hex_text.upper()) == key


@pytest.mark.parametrize("length", [0, 16, 31, 33])
def test_encoders_refuse_wrong_lengths(length: int) -> None:
    with pytest.raises(KeyFormatError, match="a key is 32 bytes"):
        encode_key(bytes(length))
    with pytest.raises(KeyFormatError, match="a key is 32 bytes"):
        key_to_hex(bytes(length))


BAD_BASE64 = {
    "empty": ("", "is empty"),
    "43 characters": (KEY_00_1F_BASE64[:-1], "44 characters of base64, got 43"),
    "45 characters": (KEY_00_1F_BASE64 + "A", "44 characters of base64, got 45"),
    "88 characters": (KEY_00_1F_BASE64 * 2, "got 88"),
    "not base64": (KEY_00_1F_BASE64[:10] + "!" + KEY_00_1F_BASE64[11:], "not base64"),
    "url-safe alphabet": ("-" + KEY_00_1F_BASE64[1:20] + "_" + KEY_00_1F_BASE64[21:], "not base64"),
    "no padding": (KEY_00_1F_BASE64[:-1] + "A", "not base64"),
    "two padding": (KEY_00_1F_BASE64[:-2] + "==", "not base64"),
    "stray bits": (KEY_00_1F_BASE64[:-2] + "9=", "carries bits a key does not have"),
    "trailing newline": (KEY_00_1F_BASE64 + "\n", "whitespace"),
    "leading space": (" " + KEY_00_1F_BASE64, "whitespace"),
    "inner space": (KEY_00_1F_BASE64[:20] + " " + KEY_00_1F_BASE64[21:], "not base64"),
    "non-ASCII": (KEY_00_1F_BASE64[:20] + "é" + KEY_00_1F_BASE64[21:], "not base64"),
    "hex instead": (KEY_00_1F.hex(), "got 64"),
}


@pytest.mark.parametrize("case", sorted(BAD_BASE64))
def test_decode_key_errors_name_the_field_and_hide_the_text(case: str) -> None:
    text, problem = BAD_BASE64[case]
    with pytest.raises(KeyFormatError) as caught:
        decode_key(text, "peer 3 public key")
    message = str(caught.value)
    assert message.startswith("peer 3 public key: ")
    assert problem in message
    _assert_not_echoed(text, message)


def test_decode_key_refuses_non_text() -> None:
    with pytest.raises(KeyFormatError, match="key: expected base64 text, got bytes"):
        decode_key(KEY_00_1F_BASE64.encode())  # type: ignore[arg-type]
    assert issubclass(KeyFormatError, ValueError)


BAD_HEX = {
    "empty": ("", "64 hex digits, got 0"),
    "63 digits": (KEY_00_1F.hex()[:-1], "got 63"),
    "65 digits": (KEY_00_1F.hex() + "0", "got 65"),
    "0x prefix": ("0x" + KEY_00_1F.hex()[:-2], "not hex"),
    "spaces": (KEY_00_1F.hex()[:30] + " " + KEY_00_1F.hex()[31:], "not hex"),
    "letter g": (KEY_00_1F.hex()[:-1] + "g", "not hex"),
    "non-ASCII digit": (KEY_00_1F.hex()[:-1] + "\u0661", "not hex"),
    "base64 instead": (KEY_00_1F_BASE64, "got 44"),
}


@pytest.mark.parametrize("case", sorted(BAD_HEX))
def test_key_from_hex_errors_name_the_field_and_hide_the_text(case: str) -> None:
    text, problem = BAD_HEX[case]
    with pytest.raises(KeyFormatError) as caught:
        key_from_hex(text, "private_key")
    message = str(caught.value)
    assert message.startswith("private_key: ")
    assert problem in message
    _assert_not_echoed(text, message)


# --------------------------------------------------------------------------------------------
# CLI, in process


def _stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="ascii"))


def test_cli_genkey_and_genpsk_print_one_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["genkey"]) == 0
    out = capsys.readouterr().out
    assert BASE64_KEY_LINE.fullmatch(out)
    assert _is_clamped(decode_key(out.strip()))
    assert cli.main(["genpsk"]) == 0
    assert BASE64_KEY_LINE.fullmatch(capsys.readouterr().out)


@pytest.mark.parametrize("trailer", [b"", b"\n", b"\r\n", b"\n\n  \t", b"\x00\x00", b"\n\x00 \v\f"])
def test_cli_pubkey_accepts_what_wg_accepts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], trailer: bytes
) -> None:
    _stdin(monkeypatch, KEY_00_1F_BASE64.encode() + trailer)
    assert cli.main(["pubkey"]) == 0
    assert capsys.readouterr().out == encode_key(public_key_for(KEY_00_1F)) + "\n"


@pytest.mark.parametrize("case", sorted(set(BAD_BASE64) - {"trailing newline"}))  # stdin may end in "\n"
def test_cli_pubkey_bad_input_is_one_line_without_the_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    text = BAD_BASE64[case][0]
    _stdin(monkeypatch, text.encode("utf-8"))
    assert cli.main(["pubkey"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("pywg pubkey: private key: ") and captured.err.count("\n") == 1
    _assert_not_echoed(text.strip(), captured.err)


class _EndlessStream:
    """stdin that never ends: `yes | pywg pubkey` must fail, not read forever."""

    def read(self, n: int) -> bytes:
        return b"y" * n


def test_read_key_from_an_endless_stream_fails() -> None:
    with pytest.raises(cli.CommandError, match="trailing characters"):
        cli.read_key_from(_EndlessStream())  # type: ignore[arg-type]


def test_cli_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 1
    assert "usage: pywg" in capsys.readouterr().err
    assert cli.main(["genkey", "extra"]) == 2
    assert cli.main(["no-such-command"]) == 2
    capsys.readouterr()
    assert cli.main(["--help"]) == 0
    help_text = capsys.readouterr().out
    assert all(name in help_text for name in ("genkey", "genpsk", "pubkey"))


# --------------------------------------------------------------------------------------------
# CLI against `wg`, as subprocesses


def wg_path() -> str:
    path = shutil.which("wg")
    if path is None:
        pytest.fail(
            "`wg` was not found on PATH: install wireguard-tools (Debian: apt-get install "
            "wireguard-tools); these tests compare pywg's key commands with it",
            pytrace=False,
        )
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(CHECKOUT), env.get("PYTHONPATH")) if p)
    return env


def pywg(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "pywg", *args],
        input=stdin,
        capture_output=True,
        cwd=CHECKOUT,
        env=_env(),
        timeout=60,
    )


def wg(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([wg_path(), *args], input=stdin, capture_output=True, timeout=60)


def _ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    text = result.stdout.decode("ascii")
    assert BASE64_KEY_LINE.fullmatch(text), "not one base64 key and a newline"
    return text


def test_pywg_genkey_then_pywg_pubkey_equals_wg_pubkey() -> None:
    for private in [_ok(pywg("genkey")) for _ in range(5)]:
        assert _is_clamped(decode_key(private.strip()))
        assert _ok(pywg("pubkey", stdin=private.encode())) == _ok(wg("pubkey", stdin=private.encode()))


def test_pywg_genkey_piped_into_pywg_pubkey(tmp_path: Path) -> None:
    """The literal pipeline `pywg genkey | tee key | pywg pubkey`, checked against `wg pubkey < key`."""
    wg_path()
    key_file = tmp_path / "key"
    python = sys.executable
    pipeline = f'"{python}" -m pywg genkey | tee "{key_file}" | "{python}" -m pywg pubkey'
    result = subprocess.run(pipeline, shell=True, capture_output=True, cwd=CHECKOUT, env=_env(), timeout=60)
    assert _ok(result) == _ok(wg("pubkey", stdin=key_file.read_bytes()))


def test_wg_genkey_into_pywg_pubkey_equals_wg_pubkey() -> None:
    for private in [_ok(wg("genkey")) for _ in range(5)]:
        assert _ok(pywg("pubkey", stdin=private.encode())) == _ok(wg("pubkey", stdin=private.encode()))


def test_unclamped_private_keys_agree_with_wg() -> None:
    """A preshared key used as a private key is unclamped; both tools clamp before X25519."""
    for private in [_ok(wg("genpsk")), _ok(pywg("genpsk")), encode_key(b"\xff" * 32) + "\n"]:
        assert _ok(pywg("pubkey", stdin=private.encode())) == _ok(wg("pubkey", stdin=private.encode()))


def test_rfc7748_key_through_both_tools() -> None:
    v = load_vectors("rfc7748-x25519.json")["diffie_hellman"]
    private = encode_key(bytes.fromhex(v["alice_private"])).encode() + b"\n"
    expected = encode_key(bytes.fromhex(v["alice_public"])) + "\n"
    assert _ok(pywg("pubkey", stdin=private)) == _ok(wg("pubkey", stdin=private)) == expected


STDIN_CASES = {
    "key": KEY_00_1F_BASE64.encode(),
    "key, CRLF and NULs": KEY_00_1F_BASE64.encode() + b"\r\n\x00\x00 ",
    "empty": b"",
    "short": KEY_00_1F_BASE64[:-1].encode() + b"\n",
    "trailing junk": KEY_00_1F_BASE64.encode() + b"\nxyz\n",
    "leading space": b" " + KEY_00_1F_BASE64.encode(),
    "stray bits": KEY_00_1F_BASE64[:-2].encode() + b"9=",
    "not base64": b"this is not a WireGuard key, honestly it is not\n",
    "binary": bytes(range(200, 256)),
}


@pytest.mark.parametrize("case", sorted(STDIN_CASES))
def test_pubkey_accepts_and_rejects_what_wg_does(case: str) -> None:
    data = STDIN_CASES[case]
    ours, theirs = pywg("pubkey", stdin=data), wg("pubkey", stdin=data)
    assert (ours.returncode == 0) == (theirs.returncode == 0)
    if theirs.returncode == 0:
        assert ours.stdout == theirs.stdout
        return
    assert ours.returncode == 1 and ours.stdout == b""
    err = ours.stderr.decode("utf-8")
    assert err.startswith("pywg pubkey: ") and err.count("\n") == 1
    assert "Traceback" not in err
    _assert_not_echoed(data.decode("latin-1").strip(), err)


@pytest.mark.parametrize("command", ["genkey", "genpsk"])
def test_world_accessible_output_file_warns_like_wg(tmp_path: Path, command: str) -> None:
    for mode, warns in ((0o644, True), (0o604, True), (0o640, False), (0o600, False)):
        results = []
        for tool in (pywg, wg):
            path = tmp_path / f"{tool.__name__}-{command}-{mode:o}"
            path.touch()
            path.chmod(mode)
            with path.open("wb") as out:
                if tool is pywg:
                    run = [sys.executable, "-m", "pywg", command]
                    result = subprocess.run(run, stdout=out, stderr=subprocess.PIPE, cwd=CHECKOUT, env=_env())
                else:
                    result = subprocess.run([wg_path(), command], stdout=out, stderr=subprocess.PIPE)
            assert result.returncode == 0
            assert BASE64_KEY_LINE.fullmatch(path.read_text())
            results.append(result.stderr)
        ours, theirs = results
        assert ours == theirs
        assert (ours == cli.WORLD_ACCESSIBLE_WARNING.encode()) is warns
        assert warns or ours == b""
