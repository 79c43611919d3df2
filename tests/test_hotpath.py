"""The C hot path (pywg.native._hotpath) held to the pure-Python reference, byte for byte.

Sealing against one message at a time (tests/support/one_message.py) with `transport.pad`, opening
against one message at a time + `ReplayWindow.validate` + `transport.inner_packet`, the C replay
window against `ReplayWindow` on the kernel's self-test sequence and on generated ones.

CI builds the extension, so an unbuilt one is a failure here, never a skip.
"""

from __future__ import annotations

import random
import runpy
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pywg.core.constants import (
    COUNTER_WINDOW_SIZE,
    KEY_LEN,
    MESSAGE_DATA,
    MESSAGE_DATA_HEADER_SIZE,
    MESSAGE_DATA_MIN_SIZE,
    REJECT_AFTER_MESSAGES,
    TAG_LEN,
)
from pywg.core.messages import message_type, parse_data_header
from pywg.core.replay import ReplayWindow
from pywg.core.transport import inner_packet, pad
from pywg.native import hotpath, loader
from pywg.native.hotpath import (
    COpener,
    CReplayWindow,
    CSealer,
    HotpathError,
    OpenResults,
    PacketBatch,
    RxStatus,
    SealStop,
)
from tests.support.one_message import OneAtATime
from tests.test_replay import deltas, expand, kernel_vectors

BATCH = 64
NEAR_LIMIT = REJECT_AFTER_MESSAGES - 80
PACKAGE = Path(hotpath.__file__).parent
# Rows of the opening comparisons: (status, inner packet or plaintext, source address).
Row = tuple[RxStatus, bytes | None, bytes | None]


def require_built() -> None:
    """Fail (not skip) when the extension is missing: CI builds it, so that is a broken build."""
    if not loader.built():
        pytest.fail(
            f"{loader.unavailable_reason()}. The C hot path tests need it: run `pip install -e .` "
            "in the checkout (CI does).",
            pytrace=False,
        )


def lib() -> Any:
    from pywg.native._hotpath import lib as hotpath_lib

    return hotpath_lib


def keypair(sending_key: bytes, receiving_key: bytes, remote_index: int = 1) -> OneAtATime:
    return OneAtATime(sending_key, receiving_key, remote_index)


def batch_for(packets: list[bytes], overhead: int = 0) -> PacketBatch:
    batch = PacketBatch(max(1, len(packets)), max(1, sum(len(p) + overhead for p in packets)))
    for packet in packets:
        assert batch.append(packet)
    return batch


# Sealing.


def seal_python(key: bytes, packets: list[bytes], receiver: int, counter: int, mtu: int) -> list[bytes]:
    """One message per packet in order, stopping at the first packet the counters refuse."""
    sender = keypair(key, key, receiver)
    sender.sending_counter = counter
    out: list[bytes] = []
    for packet in packets:
        message = sender.seal(pad(packet, mtu))
        if message is None:
            break
        out.append(message)
    return out


def seal_c(
    key: bytes, packets: list[bytes], receiver: int, counter: int, mtu: int
) -> tuple[list[bytes], SealStop]:
    """Seal in batches of BATCH, as an engine would; stops where C stops."""
    sealer = CSealer(key)
    out: list[bytes] = []
    for start in range(0, len(packets), BATCH):
        chunk = packets[start : start + BATCH]
        plain = batch_for(chunk)
        sealed = PacketBatch(BATCH, sum(len(p) + 64 for p in chunk) + 1)
        result = sealer.seal(plain, sealed, receiver, counter, mtu)
        out += sealed.packets()
        counter += result.count
        if result.stop is not SealStop.DONE:
            return out, result.stop
    return out, SealStop.DONE


def random_packets(rng: random.Random, sizes: list[int]) -> list[bytes]:
    pool = rng.randbytes(max(sizes, default=0) + 64)
    return [pool[(offset := rng.randrange(64)) : offset + size] for size in sizes]


def test_constants_match_the_header() -> None:
    require_built()
    c = lib()
    assert c.WG_REJECT_AFTER_MESSAGES == REJECT_AFTER_MESSAGES
    assert (c.WG_HEADER_SIZE, c.WG_TAG_SIZE, c.WG_KEY_SIZE) == (MESSAGE_DATA_HEADER_SIZE, TAG_LEN, KEY_LEN)
    assert c.WG_REPLAY_WORDS == 128
    assert {s: getattr(c, f"WG_SEAL_{s.name}") for s in SealStop} == {s: s.value for s in SealStop}
    assert {s: getattr(c, f"WG_RX_{s.name}") for s in RxStatus} == {s: s.value for s in RxStatus}
    assert (c.WG_ERR_BUSY, c.WG_ERR_CLOSED, c.WG_ERR_CRYPTO, c.WG_ERR_ARGS) == (-1, -2, -3, -4)


@pytest.mark.parametrize("mtu", [1280, 1420, 1500, 9000])
def test_seal_matches_python_for_every_size(mtu: int) -> None:
    require_built()
    rng = random.Random(mtu)
    key = rng.randbytes(32)
    sizes = list(range(mtu + 101))
    rng.shuffle(sizes)
    packets = random_packets(rng, sizes)
    for receiver, counter in [(rng.getrandbits(32), rng.getrandbits(40)), (0xFFFFFFFF, (1 << 63) - 5)]:
        expected = seal_python(key, packets, receiver, counter, mtu)
        got, stop = seal_c(key, packets, receiver, counter, mtu)
        assert stop is SealStop.DONE and len(got) == len(expected) == len(packets)
        mismatched = [len(p) for p, a, b in zip(packets, got, expected, strict=True) if a != b]
        assert mismatched == [], f"MTU {mtu}: C and Python differ for sizes {sorted(mismatched)[:10]}"


@settings(max_examples=200, deadline=None)
@given(
    mtu=st.integers(1280, 9000),
    data=st.data(),
    counter=st.one_of(st.integers(0, (1 << 64) - 1), st.integers(NEAR_LIMIT, REJECT_AFTER_MESSAGES)),
    receiver=st.integers(0, (1 << 32) - 1),
    seed=st.integers(0, 1 << 32),
)
def test_seal_matches_python_random(mtu: int, data: Any, counter: int, receiver: int, seed: int) -> None:
    require_built()
    edges = st.sampled_from([0, 1, 15, 16, 17, mtu - 1, mtu, mtu + 1])
    sizes = data.draw(st.lists(st.one_of(st.integers(0, mtu + 100), edges), max_size=150))
    rng = random.Random(seed)
    key = rng.randbytes(32)
    packets = random_packets(rng, sizes)
    expected = seal_python(key, packets, receiver, counter, mtu)
    got, stop = seal_c(key, packets, receiver, counter, mtu)
    assert got == expected
    assert stop is (SealStop.DONE if len(got) == len(packets) else SealStop.COUNTER_EXHAUSTED)


def test_seal_stops_before_reject_after_messages() -> None:
    require_built()
    key = bytes(range(32))
    packets = [bytes([i]) * 100 for i in range(10)]
    got, stop = seal_c(key, packets, 9, REJECT_AFTER_MESSAGES - 3, 1420)
    assert (len(got), stop) == (3, SealStop.COUNTER_EXHAUSTED)
    assert got == seal_python(key, packets, 9, REJECT_AFTER_MESSAGES - 3, 1420)
    assert parse_data_header(got[-1]) == (9, REJECT_AFTER_MESSAGES - 1)
    for counter in (REJECT_AFTER_MESSAGES, (1 << 64) - 1, 1 << 64):
        result = CSealer(key).seal(batch_for(packets), PacketBatch(10, 10_000), 9, counter, 1420)
        assert result == (0, SealStop.COUNTER_EXHAUSTED)


def test_seal_stops_when_the_output_is_full() -> None:
    require_built()
    key = bytes(32)
    packets = [bytes(100)] * 5  # 100 pads to 112: messages of 144 bytes
    sealer = CSealer(key)
    out = PacketBatch(5, 3 * 144 + 143)
    assert sealer.seal(batch_for(packets), out, 1, 0, 1420) == (3, SealStop.NO_SPACE)
    assert out.packets() == seal_python(key, packets, 1, 0, 1420)[:3]
    assert [out.offsets[i] for i in range(3)] == [0, 144, 288]
    assert out.end == 432
    small = PacketBatch(2, 10_000)  # fewer slots than packets
    assert sealer.seal(batch_for(packets), small, 1, 3, 1420) == (2, SealStop.NO_SPACE)
    assert small.packets() == seal_python(key, packets, 1, 3, 1420)[:2]


def test_seal_rejects_packets_outside_the_buffer() -> None:
    require_built()
    plain = batch_for([bytes(10), bytes(10)])
    plain.lengths[1] = 11  # runs past the end of the 20-byte buffer
    result = CSealer(bytes(32)).seal(plain, PacketBatch(2, 1000), 1, 0, 1420)
    assert result == (1, SealStop.BAD_INPUT)


def test_seal_rejects_mtu_zero_and_wrong_direction() -> None:
    require_built()
    with pytest.raises(HotpathError) as error:
        CSealer(bytes(32)).seal(batch_for([b"x"]), PacketBatch(1, 100), 1, 0, 0)
    assert error.value.code == -4
    results = OpenResults(1)
    opener, sealer = COpener(bytes(32)), CSealer(bytes(32))
    sealer._handle, opener._handle = opener._handle, sealer._handle  # swap directions
    with pytest.raises(HotpathError):
        sealer.seal(batch_for([b"x"]), PacketBatch(1, 100), 1, 0, 1420)
    with pytest.raises(HotpathError):
        opener.open(batch_for([bytes(48)]), CReplayWindow(), results)


# Opening.


def open_python(receiver: OneAtATime, messages: list[bytes]) -> list[Row]:
    """What pywg/core/device.py _receive_data does with each message, as rows."""
    rows: list[Row] = []
    for message in messages:
        if message_type(message) != MESSAGE_DATA:
            rows.append((RxStatus.MALFORMED, None, None))
            continue
        _, counter = parse_data_header(message)
        plaintext = receiver.open(counter, message[MESSAGE_DATA_HEADER_SIZE:])
        if plaintext is None:
            rows.append((RxStatus.AUTH_FAILED, None, None))
        elif not receiver.replay.validate(counter):
            rows.append((RxStatus.REPLAY, None, None))
        elif not plaintext:
            rows.append((RxStatus.KEEPALIVE, b"", None))
        elif (inner := inner_packet(plaintext)) is None:
            rows.append((RxStatus.MALFORMED_INNER, plaintext, None))
        else:
            rows.append((RxStatus.DATA, inner[0], inner[1]))
    return rows


def open_c(opener: COpener, replay: CReplayWindow, messages: list[bytes]) -> list[Row]:
    rows: list[Row] = []
    for start in range(0, len(messages), BATCH):
        batch = batch_for(messages[start : start + BATCH])
        results = OpenResults(BATCH)
        accepted = opener.open(batch, replay, results)
        chunk: list[Row] = []
        for i in range(len(results)):
            status = results.status(i)
            if status is RxStatus.DATA:
                chunk.append((status, bytes(results.inner(i)), results.source(i)))
            elif status in (RxStatus.KEEPALIVE, RxStatus.MALFORMED_INNER):
                chunk.append((status, bytes(results.inner(i)), None))
            else:
                chunk.append((status, None, None))
        assert accepted == sum(s <= RxStatus.MALFORMED_INNER for s, _, _ in chunk)
        rows += chunk
    return rows


def ip_packet(rng: random.Random, size: int) -> bytes:
    """A well-formed IPv4 or IPv6 packet of `size` bytes when it can be one, else random bytes."""
    body = bytearray(rng.randbytes(size))
    kind = rng.randrange(3)
    if kind == 0 and size >= 20:
        body[0] = 0x45
        body[2:4] = size.to_bytes(2, "big")
    elif kind == 1 and 40 <= size <= 40 + 0xFFFF:
        body[0] = 0x60
        body[4:6] = (size - 40).to_bytes(2, "big")
    return bytes(body)


@pytest.mark.parametrize("mtu", [1280, 1420, 9000])
def test_c_opens_what_python_sealed(mtu: int) -> None:
    require_built()
    rng = random.Random(mtu + 1)
    key = rng.randbytes(32)
    packets = [ip_packet(rng, size) for size in range(mtu + 101)]
    messages = seal_python(key, packets, 5, 1000, mtu)
    got = open_c(COpener(key), CReplayWindow(), messages)
    assert got == open_python(keypair(key, key), messages)
    statuses = {status for status, _, _ in got}
    assert statuses == {RxStatus.DATA, RxStatus.KEEPALIVE, RxStatus.MALFORMED_INNER}
    for (status, inner, _), packet in zip(got, packets, strict=True):
        if status is RxStatus.DATA:  # the packet itself, or a random one that parsed, cut to its length
            assert inner is not None and packet.startswith(inner)


@pytest.mark.parametrize("mtu", [1280, 1420, 9000])
def test_python_opens_what_c_sealed(mtu: int) -> None:
    require_built()
    rng = random.Random(mtu + 2)
    key = rng.randbytes(32)
    packets = random_packets(rng, list(range(mtu + 101)))
    messages, _ = seal_c(key, packets, 5, 77, mtu)
    receiver = keypair(key, key)
    for counter, (packet, message) in enumerate(zip(packets, messages, strict=True), 77):
        assert parse_data_header(message) == (5, counter)
        assert receiver.open(counter, message[MESSAGE_DATA_HEADER_SIZE:]) == pad(packet, mtu)


def test_tampered_messages_fail_and_leave_no_trace() -> None:
    require_built()
    rng = random.Random(3)
    key = rng.randbytes(32)
    packets = [ip_packet(rng, size) for size in (0, 1, 20, 60, 1420)]
    opener = COpener(key)
    for message in seal_python(key, packets, 5, 0, 1420):
        for _ in range(40):
            bit = rng.randrange(64, 8 * len(message))  # counter, ciphertext or tag
            tampered = bytearray(message)
            tampered[bit // 8] ^= 1 << (bit % 8)
            replay = CReplayWindow()
            batch = batch_for([bytes(tampered)])
            results = OpenResults(1)
            assert opener.open(batch, replay, results) == 0
            assert results.status(0) is RxStatus.AUTH_FAILED
            # No unauthenticated plaintext is left behind, and the window did not move.
            assert not any(batch.buffer[MESSAGE_DATA_HEADER_SIZE:-TAG_LEN])
            assert open_c(opener, replay, [message])[0][0] is not RxStatus.AUTH_FAILED
        wrong_type = b"\x05" + message[1:]
        cut_short = open_c(opener, CReplayWindow(), [wrong_type, message[:31], message[:-1]])
        cut_tag = RxStatus.AUTH_FAILED if len(message) > MESSAGE_DATA_MIN_SIZE else RxStatus.MALFORMED
        assert [status for status, _, _ in cut_short] == [RxStatus.MALFORMED, RxStatus.MALFORMED, cut_tag]
        # The receiver index is not authenticated (the device routes by it before decrypting).
        other_receiver = message[:4] + b"\x99\x99\x99\x99" + message[8:]
        assert open_c(opener, CReplayWindow(), [other_receiver])[0][0] is not RxStatus.AUTH_FAILED


def test_wrong_key_fails() -> None:
    require_built()
    messages = seal_python(bytes(32), [bytes(100)], 5, 0, 1420)
    assert open_c(COpener(bytes([1]) * 32), CReplayWindow(), messages) == [(RxStatus.AUTH_FAILED, None, None)]


def test_open_marks_messages_outside_the_buffer_malformed() -> None:
    require_built()
    key = bytes(32)
    messages = seal_python(key, [bytes(100), bytes(100)], 5, 0, 1420)
    batch = batch_for(messages)
    batch.offsets[1] = len(batch.buffer) - 10
    results = OpenResults(2)
    assert COpener(key).open(batch, CReplayWindow(), results) == 1
    assert [results.status(0), results.status(1)] == [RxStatus.MALFORMED_INNER, RxStatus.MALFORMED]


# A batch as it might arrive: messages with chosen counters, some tampered, some cut short.
arrivals = st.lists(
    st.tuples(
        st.one_of(st.integers(0, 300), st.integers(COUNTER_WINDOW_SIZE - 10, COUNTER_WINDOW_SIZE + 300)),
        st.sampled_from(["good", "good", "good", "tampered", "short"]),
        st.integers(0, 200),
    ),
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(arrivals=arrivals, seed=st.integers(0, 1 << 32))
def test_open_batches_match_python(arrivals: list[tuple[int, str, int]], seed: int) -> None:
    """Replay runs only for messages that authenticated, in order, exactly as in Python."""
    require_built()
    rng = random.Random(seed)
    key = rng.randbytes(32)
    sender = keypair(key, key)
    messages = []
    for counter, fate, size in arrivals:
        sender.sending_counter = counter
        message = sender.seal(pad(ip_packet(rng, size), 1420))
        assert message is not None
        if fate == "tampered":
            message = message[:-1] + bytes([message[-1] ^ 1])
        elif fate == "short":
            message = message[: rng.randrange(MESSAGE_DATA_MIN_SIZE)]
        messages.append(message)
    assert open_c(COpener(key), CReplayWindow(), messages) == open_python(keypair(key, key), messages)


def inner_plaintexts() -> st.SearchStrategy[bytes]:
    """Plaintexts around the IPv4/IPv6 header rules: version nibble, header length, length field."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        length = draw(st.one_of(st.integers(1, 80), st.sampled_from([19, 20, 21, 39, 40, 41])))
        body = bytearray(draw(st.binary(min_size=length, max_size=length)))
        version = draw(st.sampled_from([4, 6, 4, 6, 0, 5, 15]))
        body[0] = (version << 4) | (body[0] & 0x0F)
        field = draw(st.one_of(st.integers(0, 0xFFFF), st.integers(max(0, length - 45), length + 5)))
        where = 2 if version == 4 else 4
        if length >= where + 2:
            body[where : where + 2] = min(field, 0xFFFF).to_bytes(2, "big")
        return bytes(body)

    return build()


@settings(max_examples=500, deadline=None)
@given(plaintext=inner_plaintexts())
def test_inner_validation_matches_python(plaintext: bytes) -> None:
    require_built()
    key = bytes(range(32))
    message = keypair(key, key).seal(plaintext)  # unpadded on purpose: any length reaches C
    assert message is not None
    [(status, inner, source)] = open_c(COpener(key), CReplayWindow(), [message])
    expected = inner_packet(plaintext)
    if expected is None:
        assert (status, inner, source) == (RxStatus.MALFORMED_INNER, plaintext, None)
    else:
        assert (status, inner, source) == (RxStatus.DATA, *expected)


def test_keepalive_and_inner_offsets() -> None:
    require_built()
    key = bytes(32)
    v6 = bytes([0x60, 0, 0, 0, 0, 8]) + bytes(2) + bytes(range(1, 17)) + bytes(16) + bytes(8)
    messages = seal_python(key, [b"", v6], 5, 0, 1420)
    batch = batch_for(messages)
    results = OpenResults(2)
    assert COpener(key).open(batch, CReplayWindow(), results) == 2
    keepalive, data = results.entries[0], results.entries[1]
    assert (keepalive.status, keepalive.inner_offset, keepalive.source_length) == (RxStatus.KEEPALIVE, 16, 0)
    assert (data.status, data.inner_offset, data.inner_length) == (RxStatus.DATA, 32 + 16, 48)
    assert (data.source_offset, data.source_length) == (32 + 16 + 8, 16)
    assert results.source(1) == bytes(range(1, 17))
    assert (results.counter(0), results.counter(1)) == (0, 1)


# The replay window.


@pytest.mark.parametrize("index", range(7))
def test_replay_kernel_sequence(index: int) -> None:
    require_built()
    sequence = kernel_vectors()["sequences"][index]
    window, reference = CReplayWindow(), ReplayWindow()
    for number, (counter, expected) in enumerate(expand(sequence["steps"]), 1):
        assert reference.validate(counter) is expected
        assert window.validate(counter) is expected, f"{sequence['name']}, step {number}: counter {counter}"


@settings(max_examples=300, deadline=None)
@given(start=st.integers(0, 1 << 20), moves=st.lists(deltas, max_size=300))
def test_replay_matches_python(start: int, moves: list[int]) -> None:
    require_built()
    window, reference = CReplayWindow(), ReplayWindow()
    position = start
    for delta in [0, *moves]:
        position = max(0, position + delta)
        assert window.validate(position) is reference.validate(position), position


@settings(max_examples=100, deadline=None)
@given(start=st.integers(0, (1 << 64) - 1), moves=st.lists(st.integers(-70, 70), max_size=60))
def test_replay_matches_python_anywhere(start: int, moves: list[int]) -> None:
    require_built()
    window, reference = CReplayWindow(), ReplayWindow()
    position = start
    for delta in [0, *moves]:
        position = min(max(0, position + delta), (1 << 64) - 1)
        assert window.validate(position) is reference.validate(position), position


def test_replay_limits_and_reset() -> None:
    require_built()
    window = CReplayWindow()
    assert not window.validate(-1)
    assert not window.validate(REJECT_AFTER_MESSAGES)
    assert not window.validate(1 << 64)
    assert not lib().wg_replay_validate(window.state, REJECT_AFTER_MESSAGES)
    assert window.validate(REJECT_AFTER_MESSAGES - 1)
    assert not window.validate(REJECT_AFTER_MESSAGES - 1)
    window.reset()
    assert window.state.counter == 0 and not any(window.state.words)
    assert window.validate(0)


# Handles, threads, the build.


def test_zeroed_handles_refuse_work() -> None:
    require_built()
    sealer, opener = CSealer(bytes(32)), COpener(bytes(32))
    sealer.zero()
    sealer.zero()  # idempotent
    opener.zero()
    with pytest.raises(HotpathError) as sealed:
        sealer.seal(batch_for([b"x"]), PacketBatch(1, 100), 1, 0, 1420)
    with pytest.raises(HotpathError) as opened:
        opener.open(batch_for([bytes(48)]), CReplayWindow(), OpenResults(1))
    assert sealed.value.code == opened.value.code == -2


def test_bad_keys_rejected() -> None:
    require_built()
    with pytest.raises(ValueError):
        CSealer(bytes(31))
    with pytest.raises(ValueError):
        COpener(bytes(33))


def test_packet_batch_bounds() -> None:
    require_built()
    batch = PacketBatch(2, 10)
    assert batch.append(b"12345") and not batch.append(b"123456") and batch.append(b"")
    assert not batch.append(b"")  # no slot left
    assert batch.packets() == [b"12345", b""] and len(batch) == 2
    assert bytes(batch.view(0)) == b"12345"
    with pytest.raises(BufferError):
        batch.buffer.extend(b"x")  # pinned while C may hold it
    batch.clear()
    assert batch.append(b"0123456789") and batch.end == 10


def test_threads_sharing_a_sealer_never_share_its_context() -> None:
    """Calls overlap with the GIL released; an overlapping call is refused, never garbled."""
    require_built()
    key = bytes(range(32))
    sealer = CSealer(key)
    packets = [bytes([i]) * 1400 for i in range(BATCH)]
    expected = seal_python(key, packets, 3, 0, 1420)
    outcomes: list[str] = []

    def work() -> None:
        plain, out = batch_for(packets), PacketBatch(BATCH, BATCH * 1500)
        for _ in range(150):
            try:
                sealer.seal(plain, out, 3, 0, 1420)
            except HotpathError as error:
                assert error.code == -1
                outcomes.append("busy")
            else:
                outcomes.append("ok" if out.packets() == expected else "garbled")

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert "garbled" not in outcomes and "ok" in outcomes


def test_every_batch_call_releases_the_gil(tmp_path: Path) -> None:
    """cffi's API mode drops the GIL around each call; the builder must keep that default."""
    require_built()
    builder = runpy.run_path(str(PACKAGE / "build.py"))["ffibuilder"]
    builder.emit_c_code(str(tmp_path / "wrapper.c"))
    wrapper = (tmp_path / "wrapper.c").read_text()
    for name in ("wg_seal_batch", "wg_open_batch", "wg_replay_validate"):
        body = wrapper.split(f"\n_cffi_f_{name}(", 1)[1].split("\n}\n", 1)[0]
        released = body.split("Py_BEGIN_ALLOW_THREADS", 1)[1].split("Py_END_ALLOW_THREADS", 1)[0]
        assert f"= {name}(" in released, name


def test_available_honours_pywg_no_ext(monkeypatch: pytest.MonkeyPatch) -> None:
    require_built()
    monkeypatch.delenv(loader.DISABLE_ENV, raising=False)
    assert loader.available() and loader.unavailable_reason() is None
    monkeypatch.setenv(loader.DISABLE_ENV, "0")
    assert loader.available()
    monkeypatch.setenv(loader.DISABLE_ENV, "1")
    assert not loader.available()
    assert loader.DISABLE_ENV in (loader.unavailable_reason() or "")
    CSealer(bytes(32))  # still usable directly, e.g. by these tests and the benchmark


@pytest.mark.parametrize("name", ["hotpath.c", "threads.c"])
def test_c_source_compiles_without_warnings(tmp_path: Path, name: str) -> None:
    require_built()
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc builds the extension; scripts/install-deps.sh installs it", pytrace=False)
    source, output = str(PACKAGE / name), str(tmp_path / name.replace(".c", ".o"))
    command = [gcc, "-O2", "-Wall", "-Wextra", "-Werror", "-c", source, "-o", output]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr
