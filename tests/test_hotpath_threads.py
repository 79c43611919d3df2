"""The C hot path's crypto threads: a split batch gives exactly the bytes of the sequential one.

`wg_seal_batch` and `wg_open_batch` split the AEAD of a large batch across worker threads
(pywg/native/threads.c). Every comparison here runs the same input with 1 thread and
with 2 and 4 and wants identical outputs, results, replay windows and buffers, and checks that
`wg_parallel_batches()` moved, so a split that never happens fails instead of passing vacuously.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pywg.core.constants import MESSAGE_DATA_MIN_SIZE, REJECT_AFTER_MESSAGES
from pywg.native import loader
from pywg.native.hotpath import (
    COpener,
    CReplayWindow,
    CSealer,
    HotpathError,
    OpenResults,
    PacketBatch,
    SealStop,
)
from tests.test_hotpath import batch_for, ip_packet, keypair, open_python, random_packets, require_built

RECEIVER = 0x1234ABCD
SPLIT = (2, 4)  # thread counts compared with 1
ATTEMPTS = 100  # a worker may wake too late to take part in one call, not in this many
# A batch worth splitting (pywg/native/threads.c SPLIT_MIN_COST: from ~25 packets of 1420 bytes).
BIG = [1420] * 45


def lib() -> Any:
    return loader.extension()[1]


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    """Each test sets the threads it compares; the split itself is tested whether or not the
    host has a CPU to spare (a test of that rule turns it back on)."""
    require_built()
    before = lib().wg_threads()
    lib().wg_split_only_when_spare(0)
    yield
    lib().wg_split_only_when_spare(1)
    lib().wg_set_threads(before)


def two_cpus() -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("this process may run on one CPU only: nothing can run in parallel")


def split_runs(run: Callable[[], Any], threads: int = 2) -> Any:
    """`run()` with `threads` until one call was split across threads; every outcome must match.

    Fails if none was split in ATTEMPTS tries (the counter never moved).
    """
    c = lib()
    c.wg_set_threads(threads)
    first = None
    for _ in range(ATTEMPTS):
        before = c.wg_parallel_batches()
        outcome = run()
        if first is None:
            first = outcome
        assert outcome == first, "two runs of the same input differ"
        if c.wg_parallel_batches() > before:
            return outcome
    pytest.fail(f"no call was split across {threads} threads in {ATTEMPTS} tries")


def sequential(run: Callable[[], Any]) -> Any:
    lib().wg_set_threads(1)
    before = lib().wg_parallel_batches()
    outcome = run()
    assert lib().wg_parallel_batches() == before
    return outcome


def test_no_split_while_every_cpu_is_busy() -> None:
    """A worker on a CPU that other work keeps busy only takes that work's time: with a spinning
    process per CPU, once the pool has looked at the host over a window of that (threads.c
    SPARE_WINDOW_NS, 0.1 s), a batch worth splitting runs on the caller alone."""
    two_cpus()
    run = sealing(bytes(32), random_packets(random.Random(5), BIG), 0, 1420)
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)
    ]
    try:
        time.sleep(0.25)  # all spinning
        lib().wg_split_only_when_spare(1)
        lib().wg_set_threads(2)
        run()  # the pool's look at the host starts a window here at the latest
        time.sleep(0.15)  # and the next call ends it: a window with every CPU busy
        before = lib().wg_parallel_batches()
        for _ in range(ATTEMPTS):
            run()
        assert lib().wg_parallel_batches() == before
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


# The API.


def test_thread_count_is_clamped() -> None:
    c = lib()
    assert c.WG_MAX_THREADS == 4
    assert c.wg_set_threads(0) == 1 and c.wg_threads() == 1
    assert c.wg_set_threads(-5) == 1
    assert c.wg_set_threads(99) == c.WG_MAX_THREADS == c.wg_threads()
    assert c.wg_set_threads(2) == 2 == c.wg_threads()


# Sealing.

SealOutcome = tuple[int, SealStop, list[bytes], list[int], list[int]]


def sealing(
    key: bytes, packets: list[bytes], counter: int, mtu: int, out_size: int | None = None
) -> Callable[[], SealOutcome]:
    """A fresh seal of `packets` per call: count, stop, messages, offsets, lengths."""
    plain = batch_for(packets)
    size = out_size if out_size is not None else sum(len(p) + 64 for p in packets) + 1

    def run() -> SealOutcome:
        out = PacketBatch(max(1, len(packets)), size)
        count, stop = CSealer(key).seal(plain, out, RECEIVER, counter, mtu)
        offsets = [out.offsets[i] for i in range(count)]
        lengths = [out.lengths[i] for i in range(count)]
        return count, stop, out.packets(), offsets, lengths

    return run


@pytest.mark.parametrize("threads", SPLIT)
@pytest.mark.parametrize(("mtu", "seed"), [(1280, 1), (1420, 2), (1500, 3), (9000, 4)])
def test_split_seal_is_byte_identical(mtu: int, seed: int, threads: int) -> None:
    two_cpus()
    rng = random.Random(seed)
    key = rng.randbytes(32)
    sizes = [
        rng.choice([0, 1, 15, 16, 17, mtu - 1, mtu, mtu + 1, rng.randrange(mtu + 100)]) for _ in range(150)
    ]
    run = sealing(key, random_packets(rng, sizes), rng.getrandbits(40), mtu)
    expected = sequential(run)
    assert expected[:2] == (150, SealStop.DONE)
    assert split_runs(run, threads) == expected


@pytest.mark.parametrize("threads", SPLIT)
def test_small_batches_match_too(threads: int) -> None:
    """Batches below the split threshold (all but the last) keep the one-pass loop: same bytes."""
    rng = random.Random(5)
    key = rng.randbytes(32)
    for sizes in ([], [0], [100] * 7, [1420] * 8, [1420] * 20, [60] * 200):
        run = sealing(key, random_packets(rng, sizes), 7, 1420)
        expected = sequential(run)
        lib().wg_set_threads(threads)
        assert run() == expected


@pytest.mark.parametrize("threads", SPLIT)
def test_counter_exhausted_mid_batch(threads: int) -> None:
    two_cpus()
    key = bytes(range(32))
    packets = random_packets(random.Random(6), [1420] * 100)
    run = sealing(key, packets, REJECT_AFTER_MESSAGES - 60, 1420)
    expected = sequential(run)
    assert expected[:2] == (60, SealStop.COUNTER_EXHAUSTED)
    assert split_runs(run, threads) == expected


@pytest.mark.parametrize("threads", SPLIT)
def test_no_space_stops_at_the_same_message(threads: int) -> None:
    two_cpus()
    key = bytes(range(1, 33))
    packets = random_packets(random.Random(7), [1420] * 100)
    run = sealing(key, packets, 0, 1420, out_size=70 * 1452 + 1451)  # room for 70 messages and a bit
    expected = sequential(run)
    assert expected[:2] == (70, SealStop.NO_SPACE)
    assert split_runs(run, threads) == expected


@pytest.mark.parametrize("threads", SPLIT)
def test_bad_input_stops_at_the_same_message(threads: int) -> None:
    two_cpus()
    key = bytes(range(2, 34))
    packets = random_packets(random.Random(8), [1420] * 80)
    plain = batch_for(packets)
    plain.lengths[50] = len(plain.buffer)  # runs past the end of the buffer

    def run() -> SealOutcome:
        out = PacketBatch(80, 80 * 1500)
        count, stop = CSealer(key).seal(plain, out, RECEIVER, 0, 1420)
        return count, stop, out.packets(), [], []

    expected = sequential(run)
    assert expected[:2] == (50, SealStop.BAD_INPUT)
    assert split_runs(run, threads) == expected


@pytest.mark.parametrize("threads", SPLIT)
def test_sealing_over_its_own_input(threads: int) -> None:
    """Input and output in one buffer, each plaintext two messages ahead of where its message goes:
    the one pass reads every plaintext before anything overwrites it; laying all headers out first
    would not, so C keeps the one pass, whatever the thread count."""
    ffi, c = loader.extension()
    rng = random.Random(9)
    n, message = 60, 1420 + 32
    packets = random_packets(rng, [1420] * n)
    initial = bytes(2 * message) + b"".join(packet + bytes(32) for packet in packets)
    key = rng.randbytes(32)

    def run() -> tuple[int, bytes]:
        buffer = bytearray(initial)
        data = ffi.from_buffer("uint8_t[]", buffer, require_writable=True)
        in_off = ffi.new("uint32_t[]", [(i + 2) * message for i in range(n)])
        in_len = ffi.new("uint32_t[]", [1420] * n)
        out_off, out_len, stop = ffi.new("uint32_t[]", n), ffi.new("uint32_t[]", n), ffi.new("int *")
        count = c.wg_seal_batch(
            CSealer(key)._handle, RECEIVER, 0, 1420, data, len(buffer), in_off, in_len, n,
            data, len(buffer), out_off, out_len, stop,
        )  # fmt: skip
        return count, bytes(buffer[: n * message])

    expected = sequential(run)
    assert expected == (n, b"".join(sequential(sealing(key, packets, 0, 1420))[2]))
    lib().wg_set_threads(threads)
    assert run() == expected


# Opening.

OpenOutcome = tuple[int, bytes, bytes, bytes]


def seal_at(key: bytes, packet: bytes, counter: int) -> bytes:
    sealed = PacketBatch(1, len(packet) + 64)
    assert CSealer(key).seal(batch_for([packet]), sealed, RECEIVER, counter, 1420).count == 1
    return sealed.packets()[0]


def mixed_messages(rng: random.Random, key: bytes, count: int = 160) -> list[bytes]:
    """Authentic data, keepalives and non-IP plaintexts among tampered, replayed, too old, cut
    short and wrongly typed messages, with counters that jump the window forward mid-batch."""
    messages: list[bytes] = []
    counter = 20_000
    for _ in range(count):
        fate = rng.choice(
            ["data"] * 8 + ["keepalive", "inner", "tampered", "replay", "old", "short", "type", "jump"]
        )
        counter += 1
        if fate == "jump":
            counter += rng.choice([100, 5000, 9000])
        size = rng.choice([1420, 1420, 1400, rng.randrange(20, 1421)])
        packet = {"keepalive": b"", "inner": bytes([0x05]) + rng.randbytes(size - 1)}.get(
            fate, ip_packet(rng, size)
        )
        message = seal_at(key, packet, 300 if fate == "old" else counter)
        if fate == "tampered":
            bit = rng.randrange(128, 8 * len(message))
            message = bytearray(message)
            message[bit // 8] ^= 1 << (bit % 8)
        elif fate == "replay" and messages:
            message = rng.choice(messages)
        elif fate == "short":
            message = message[: rng.randrange(MESSAGE_DATA_MIN_SIZE)]
        elif fate == "type":
            message = b"\x05" + message[1:]
        messages.append(bytes(message))
    return messages


def opening(
    key: bytes,
    messages: list[bytes],
    mutate: Callable[[PacketBatch], None] | None = None,
    window: list[int] = [],  # noqa: B006 (read only)
) -> Callable[[], OpenOutcome]:
    """A fresh open of `messages` per call (after `mutate` edits the batch, and a window that saw
    `window`): the count accepted, the buffer, the raw results and the window afterwards."""
    ffi, _ = loader.extension()
    opener = COpener(key)

    def run() -> OpenOutcome:
        batch = batch_for(messages)
        if mutate is not None:
            mutate(batch)
        replay = CReplayWindow()
        for counter in window:
            replay.validate(counter)
        results = OpenResults(len(messages))
        accepted = opener.open(batch, replay, results)
        entries = bytes(ffi.buffer(results.entries, len(messages) * ffi.sizeof("wg_rx_result")))
        return accepted, bytes(batch.buffer), entries, bytes(ffi.buffer(replay.state))

    return run


@pytest.mark.parametrize("threads", SPLIT)
@pytest.mark.parametrize("seed", range(4))
def test_split_open_is_identical_on_mixed_batches(seed: int, threads: int) -> None:
    two_cpus()
    rng = random.Random(seed)
    key = rng.randbytes(32)
    messages = mixed_messages(rng, key)
    run = opening(key, messages, window=[19_990, 20_500])
    expected = sequential(run)
    assert split_runs(run, threads) == expected
    # And the statuses are what the pure-Python receive path finds.
    receiver = keypair(key, key)
    receiver.replay.validate(19_990)
    receiver.replay.validate(20_500)
    rows = open_python(receiver, messages)
    ffi, _ = loader.extension()
    size, where = ffi.sizeof("wg_rx_result"), ffi.offsetof("wg_rx_result", "status")
    statuses = [expected[2][size * i + where] for i in range(len(messages))]
    assert statuses == [status for status, _, _ in rows]


@pytest.mark.parametrize("threads", SPLIT)
def test_entries_outside_the_buffer_keep_the_split(threads: int) -> None:
    """Out-of-range entries are skipped by the order check, so the batch still splits."""
    two_cpus()
    rng = random.Random(10)
    key = rng.randbytes(32)
    messages = mixed_messages(rng, key, 80)

    def outside(batch: PacketBatch) -> None:
        batch.offsets[3] = len(batch.buffer) - 10
        batch.lengths[40] = 1 << 25  # longer than WG_MAX_PLAINTEXT
        batch.offsets[41] = (1 << 32) - 20

    run = opening(key, messages, outside)
    expected = sequential(run)
    assert split_runs(run, threads) == expected


@pytest.mark.parametrize("threads", SPLIT)
@pytest.mark.parametrize("layout", ["duplicate", "overlap", "descending"])
def test_overlapping_messages_match_the_sequential_pass(layout: str, threads: int) -> None:
    """In-place decryption of overlapping messages depends on the order: C then keeps the one pass,
    and the outcome must not depend on the thread count."""
    rng = random.Random(11)
    key = rng.randbytes(32)
    messages = [seal_at(key, ip_packet(rng, 1420), counter) for counter in range(60)]

    def edit(batch: PacketBatch) -> None:
        if layout == "duplicate":  # the same message twice: the second sees plaintext
            batch.offsets[30], batch.lengths[30] = batch.offsets[10], batch.lengths[10]
        elif layout == "overlap":
            batch.offsets[20] -= 700
        else:
            batch.offsets[5], batch.offsets[6] = batch.offsets[6], batch.offsets[5]

    run = opening(key, messages, edit)
    expected = sequential(run)
    lib().wg_set_threads(threads)
    assert run() == expected


# Handles, threads, fork.


def test_zeroing_during_split_calls() -> None:
    """zero() from another thread: each call completes correctly or reports the key closed."""
    two_cpus()
    lib().wg_set_threads(2)
    rng = random.Random(12)
    key = rng.randbytes(32)
    packets = random_packets(rng, BIG * 3)
    sealer, opener = CSealer(key), COpener(key)
    expected = sequential(sealing(key, packets, 0, 1420))[2]
    lib().wg_set_threads(2)
    messages = batch_for(expected)
    pristine = bytes(messages.buffer)
    outcomes: list[str] = []

    def work() -> None:
        plain, out, results = batch_for(packets), PacketBatch(len(packets), 3 * 45 * 1500), OpenResults(135)
        for _ in range(2000):
            try:
                sealer.seal(plain, out, RECEIVER, 0, 1420)
                sealed_ok = out.packets() == expected
                messages.buffer[:] = pristine
                accepted = opener.open(messages, CReplayWindow(), results)
            except HotpathError as error:
                assert error.code == -2
                outcomes.append("closed")
                return
            outcomes.append("ok" if sealed_ok and accepted == len(expected) else "garbled")

    worker = threading.Thread(target=work)
    worker.start()
    time.sleep(0.02)
    sealer.zero()
    opener.zero()
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert "garbled" not in outcomes and outcomes[-1] == "closed" and "ok" in outcomes


def test_concurrent_callers_share_the_pool() -> None:
    """Calls from two Python threads at once (one gets the workers, the other runs alone)."""
    two_cpus()
    rng = random.Random(13)
    keys = [rng.randbytes(32), rng.randbytes(32)]
    packets = random_packets(rng, BIG * 2)
    expected = [sequential(sealing(key, packets, 5, 1420)) for key in keys]
    assert [split_runs(sealing(key, packets, 5, 1420)) for key in keys] == expected
    wrong: list[int] = []

    def work(index: int) -> None:
        run = sealing(keys[index], packets, 5, 1420)
        for _ in range(200):
            if run() != expected[index]:
                wrong.append(index)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def crypto_workers() -> int:
    """The pool's worker threads in this process (pthread_setname_np names them pywg-crypto)."""
    names = []
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/comm") as f:
            names.append(f.read().strip())
    return names.count("pywg-crypto")


# What a forked child found (its exit status).
CHILD_OK, CHILD_INHERITED_WORKERS, CHILD_STARTED_NO_WORKER, CHILD_WRONG_BYTES = 0, 10, 11, 12


def test_a_forked_child_seals_with_threads_of_its_own() -> None:
    """fork() while another thread is inside a split call: the child starts without workers (and
    without a held pool lock), then its big batches take the pool, start a worker of its own and
    come out byte for byte right.

    Whether that worker wakes in time to seal part of a batch is up to the scheduler (a busy CPU
    keeps it out of a ~100 us call), so the child checks what the code decides instead: the pool's
    lock was free and its workers started afresh, which shows as a pywg-crypto thread of its own
    (the other tests here prove what a worker that takes part seals)."""
    two_cpus()
    lib().wg_set_threads(2)
    rng = random.Random(14)
    key = rng.randbytes(32)
    packets = random_packets(rng, BIG * 2)
    run = sealing(key, packets, 0, 1420)
    expected = sequential(run)
    lib().wg_set_threads(2)
    assert run() == expected and crypto_workers() >= 1  # the workers exist before the fork
    busy = threading.Event()
    stop = threading.Event()

    def keep_splitting() -> None:
        while not stop.is_set():
            run()
            busy.set()

    background = threading.Thread(target=keep_splitting)
    background.start()
    try:
        busy.wait(10)
        for _ in range(5):
            pid = os.fork()
            if pid == 0:  # the child: only this thread, and no pytest around it
                code = 1  # an exception
                try:
                    if crypto_workers() != 0:
                        code = CHILD_INHERITED_WORKERS
                    elif not all(run() == expected for _ in range(3)):
                        code = CHILD_WRONG_BYTES
                    elif crypto_workers() != 1:
                        code = CHILD_STARTED_NO_WORKER
                    else:
                        code = CHILD_OK
                finally:
                    os._exit(code)
            status = wait_for(pid, 60)
            assert status != CHILD_INHERITED_WORKERS, "the child had pool workers right after fork()"
            assert status != CHILD_STARTED_NO_WORKER, "the child's big batches started no worker of its own"
            assert status != CHILD_WRONG_BYTES, "the child sealed other bytes than the sequential seal"
            assert status == CHILD_OK, f"the child failed (exit status {status})"
    finally:
        stop.set()
        background.join()


def wait_for(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the child hung after fork()")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", 1), ("2", 2), ("4", 4), ("9", 4), ("0", 1), ("", None), ("many", None), (None, None)],
)
def test_pywg_crypto_threads_environment(value: str | None, expected: int | None) -> None:
    """PYWG_CRYPTO_THREADS at import: clamped; unset, empty or not a number: the CPUs this process
    may use, at most WG_MAX_THREADS."""
    env = {k: v for k, v in os.environ.items() if k != "PYWG_CRYPTO_THREADS"}
    if value is not None:
        env["PYWG_CRYPTO_THREADS"] = value
    script = "from pywg.native import loader as c; print(c.crypto_threads(), c.extension()[1].wg_threads())"
    completed = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    default = min(len(os.sched_getaffinity(0)), lib().WG_MAX_THREADS)
    want = default if expected is None else expected
    assert completed.stdout.split() == [str(want), str(want)]
    assert completed.stderr == ""


def test_python_wrappers() -> None:
    lib().wg_set_threads(3)
    assert loader.crypto_threads() == 3
    assert loader.parallel_batches() == lib().wg_parallel_batches() >= 0
