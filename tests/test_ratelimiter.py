"""Rate limiter: the kernel's selftest/ratelimiter.c expectations on a fake clock, plus grouping and GC."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pywg.core.constants import (
    RATELIMITER_MAX_ENTRIES,
    RATELIMITER_PACKETS_BURSTABLE,
    RATELIMITER_PACKETS_PER_SECOND,
)
from pywg.core.ratelimiter import RateLimiter

COST = 1.0 / RATELIMITER_PACKETS_PER_SECOND  # 50 ms

# The kernel's expected_results: (allowed, seconds slept before the attempt).
KERNEL_EXPECTED = [
    *[(True, 0.0)] * RATELIMITER_PACKETS_BURSTABLE,
    (False, 0.0),
    (True, COST),
    (False, 0.0),
    (True, COST * 2),
    (True, 0.0),
    (False, 0.0),
]


def v4(n: int) -> bytes:
    return struct.pack(">I", n)


def v6(*words: int) -> bytes:
    return struct.pack(">4I", *words)


def run_kernel_timings(limiter: RateLimiter, jitter: list[float]) -> None:
    """The kernel's timings_test; `jitter` is how late each attempt runs (the kernel allows 2/3 of a cost)."""
    slept = 0.0
    for i, (expected, sleep) in enumerate(KERNEL_EXPECTED):
        slept += sleep
        now = slept + jitter[i]
        assert limiter.allow(v4(8182), now) is expected, f"v4 step {i}"
        assert limiter.allow(v4(8182 + i + 1), now), f"fresh v4 source at step {i}"
        # The low 64 bits change every step, yet all of these share one /64 and one bucket.
        assert limiter.allow(v6(1212, 289188, i, i), now) is expected, f"v6 step {i}"
        assert limiter.allow(v6(1212 + i + 1, 289188, i, i), now), f"fresh /64 at step {i}"


def test_kernel_timings_exact_clock() -> None:
    run_kernel_timings(RateLimiter(), [0.0] * len(KERNEL_EXPECTED))


@settings(max_examples=100, deadline=None)
@given(
    start=st.floats(0, 1e7),
    jitter=st.lists(
        st.floats(0, COST * 2 / 3, exclude_max=True),
        min_size=len(KERNEL_EXPECTED),
        max_size=len(KERNEL_EXPECTED),
    ),
)
def test_kernel_timings_late_clock(start: float, jitter: list[float]) -> None:
    # Attempts may run up to 2/3 of a packet cost late, as the kernel's test tolerates.
    run_kernel_timings(RateLimiter(), [start + j for j in sorted(jitter)])


def test_kernel_capacity() -> None:
    limiter = RateLimiter()
    assert len(limiter) == 0
    for i in range(RATELIMITER_MAX_ENTRIES + 1):
        assert limiter.allow(v4(i), 0.0) is (i != RATELIMITER_MAX_ENTRIES), i
    assert len(limiter) == RATELIMITER_MAX_ENTRIES


def test_burst_is_capped_after_long_idle() -> None:
    limiter = RateLimiter()
    source = v4(0x0A000001)
    assert limiter.allow(source, 0.0)
    results = [limiter.allow(source, 0.9) for _ in range(RATELIMITER_PACKETS_BURSTABLE + 1)]
    assert results == [True] * RATELIMITER_PACKETS_BURSTABLE + [False]


def test_sustained_rate() -> None:
    limiter = RateLimiter()
    source = v6(0x20010DB8, 0, 0, 1)
    seconds, step = 10, 0.01
    accepted = sum(limiter.allow(source, i * step) for i in range(int(seconds / step)))
    expected = seconds * RATELIMITER_PACKETS_PER_SECOND + RATELIMITER_PACKETS_BURSTABLE
    assert expected - 1 <= accepted <= expected


def test_refusals_do_not_drain_the_bucket() -> None:
    limiter = RateLimiter()
    source = v4(1)
    for _ in range(RATELIMITER_PACKETS_BURSTABLE):
        assert limiter.allow(source, 0.0)
    for _ in range(100):
        assert not limiter.allow(source, 0.0)
    assert limiter.allow(source, COST)


def test_ipv6_grouped_by_64() -> None:
    limiter = RateLimiter()
    for host in range(RATELIMITER_PACKETS_BURSTABLE):
        assert limiter.allow(v6(0x20010DB8, 0xAAAA0000, 0, host), 0.0)
    assert not limiter.allow(v6(0x20010DB8, 0xAAAA0000, 0xFFFFFFFF, 0xFFFFFFFF), 0.0)
    # The neighbouring /64 (last bit of the prefix differs) has its own bucket.
    assert limiter.allow(v6(0x20010DB8, 0xAAAA0001, 0, 0), 0.0)
    assert len(limiter) == 2


def test_ipv4_keyed_by_whole_address() -> None:
    limiter = RateLimiter()
    for _ in range(RATELIMITER_PACKETS_BURSTABLE):
        assert limiter.allow(v4(0x0A000001), 0.0)
    assert not limiter.allow(v4(0x0A000001), 0.0)
    assert limiter.allow(v4(0x0A000002), 0.0)
    # An IPv6 /64 that starts with the same bytes is a different source.
    assert limiter.allow(v6(0x0A000001, 0, 0, 0), 0.0)
    assert len(limiter) == 3


def test_other_lengths_refused() -> None:
    limiter = RateLimiter()
    assert not limiter.allow(b"", 0.0)
    assert not limiter.allow(bytes(6), 0.0)
    assert len(limiter) == 0


def test_gc_drops_idle_entries_at_most_once_per_interval() -> None:
    limiter = RateLimiter()
    a, b, clock = v4(1), v4(2), v4(3)
    assert limiter.allow(a, 0.0)
    assert limiter.allow(b, 0.5)
    assert limiter.allow(clock, 1.0)  # collects, but a is idle exactly 1 s, not more
    assert len(limiter) == 3
    limiter.allow(clock, 1.6)  # a is stale now, but the last collection was 0.6 s ago
    assert len(limiter) == 3
    limiter.allow(clock, 2.0)  # collects a (idle 2 s) and b (idle 1.5 s)
    assert len(limiter) == 1


def test_collected_source_starts_fresh() -> None:
    limiter = RateLimiter()
    source = v4(7)
    for _ in range(RATELIMITER_PACKETS_BURSTABLE):
        assert limiter.allow(source, 0.0)
    assert limiter.allow(v4(8), 1.5)  # collects source
    assert len(limiter) == 1
    for _ in range(RATELIMITER_PACKETS_BURSTABLE):
        assert limiter.allow(source, 1.5)
    assert not limiter.allow(source, 1.5)


@pytest.mark.parametrize("max_entries", [1, 3])
def test_full_table_refuses_new_sources_until_collected(max_entries: int) -> None:
    limiter = RateLimiter(max_entries=max_entries)
    for i in range(max_entries):
        assert limiter.allow(v4(i), 0.0)
    assert not limiter.allow(v4(100), 0.0)
    assert not limiter.allow(v6(1, 2, 3, 4), 0.5)
    assert len(limiter) == max_entries
    assert limiter.allow(v4(0), 0.5)  # known sources are still served
    assert limiter.allow(v4(100), 2.0)  # everything idle > 1 s was collected
    assert len(limiter) == 1
