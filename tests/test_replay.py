"""Replay window: the kernel's counter self-test sequence, edges, and a naive model."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pywg.core.constants import COUNTER_BITS_TOTAL, COUNTER_WINDOW_SIZE, REJECT_AFTER_MESSAGES
from pywg.core.replay import ReplayWindow
from tests.support.vectors_path import load_vectors

W = COUNTER_WINDOW_SIZE
SEQUENCES = 7  # the 34 numbered steps, then six full-window sweeps


def kernel_vectors() -> dict[str, Any]:
    return load_vectors("replay-window-kernel.json")


def expand(steps: list[dict[str, Any]]) -> list[tuple[int, bool]]:
    """Turn the file's steps and runs into (counter, expected) pairs."""
    out: list[tuple[int, bool]] = []
    for step in steps:
        if "counter" in step:
            out.append((step["counter"], step["expect"]))
            continue
        first, last = step["from"], step["to"]
        direction = 1 if last >= first else -1
        out += [(c, step["expect"]) for c in range(first, last + direction, direction)]
    return out


def test_vector_constants_match_ours() -> None:
    constants = kernel_vectors()["constants"]
    assert constants["COUNTER_BITS_TOTAL"] == COUNTER_BITS_TOTAL
    assert constants["COUNTER_WINDOW_SIZE"] == COUNTER_WINDOW_SIZE
    assert constants["REJECT_AFTER_MESSAGES"] == REJECT_AFTER_MESSAGES


def test_vector_file_is_complete() -> None:
    sequences = kernel_vectors()["sequences"]
    assert [s["step"] for s in sequences[0]["steps"]] == list(range(1, 35))
    assert len(sequences) == SEQUENCES
    assert sum(len(expand(s["steps"])) for s in sequences) == 34 + 6 * (W + 2) - 1


@pytest.mark.parametrize("index", range(SEQUENCES))
def test_kernel_sequence(index: int) -> None:
    sequence = kernel_vectors()["sequences"][index]
    window = ReplayWindow()
    for number, (counter, expected) in enumerate(expand(sequence["steps"]), 1):
        assert window.validate(counter) is expected, f"{sequence['name']}, step {number}: counter {counter}"


def test_window_edge() -> None:
    window = ReplayWindow()
    assert window.validate(100_000)
    assert window.validate(100_000 - W)
    assert not window.validate(100_000 - W - 1)


def test_out_of_range_counters_rejected() -> None:
    window = ReplayWindow()
    assert not window.validate(-1)
    assert not window.validate(REJECT_AFTER_MESSAGES)
    assert not window.validate(1 << 64)
    assert window.validate(REJECT_AFTER_MESSAGES - 1)
    assert not window.validate(REJECT_AFTER_MESSAGES - 1)


def test_reset_forgets_everything() -> None:
    window = ReplayWindow()
    assert window.validate(50_000)
    window.reset()
    assert window.validate(0)
    assert window.validate(50_000)


@pytest.mark.parametrize("jump", [COUNTER_BITS_TOTAL - 64, COUNTER_BITS_TOTAL, COUNTER_BITS_TOTAL * 7 + 3])
def test_jump_clears_stale_ring_bits(jump: int) -> None:
    # Counters a ring apart share a bit; a large jump must not leave the old bits behind.
    window = ReplayWindow()
    start = 4_000
    for c in range(start, start + 64):
        assert window.validate(c)
    for c in range(start + 64 + jump, start + jump - 1, -1):
        assert window.validate(c), c


class NaiveWindow:
    """The same rules without the bitmap: a set of everything accepted."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.highest = -1

    def validate(self, counter: int) -> bool:
        if not 0 <= counter < REJECT_AFTER_MESSAGES or counter in self.seen:
            return False
        if self.highest >= 0 and counter + W < self.highest:
            return False
        self.seen.add(counter)
        self.highest = max(self.highest, counter)
        return True


# Moves that hit the interesting places: replays, the window edge, word and ring boundaries.
deltas = st.one_of(
    st.integers(-W - 70, 70),
    st.sampled_from([-W - 1, -W, -W + 1, 63, 64, 65, 8127, 8128, 8129, 8191, 8192, 8193, 3 * 8192]),
)


@settings(max_examples=300, deadline=None)
@given(start=st.integers(0, 1 << 20), moves=st.lists(deltas, max_size=300))
def test_matches_naive_model(start: int, moves: list[int]) -> None:
    window, naive = ReplayWindow(), NaiveWindow()
    position = start
    for delta in [0, *moves]:
        position = max(0, position + delta)
        assert window.validate(position) is naive.validate(position), position


@settings(max_examples=50, deadline=None)
@given(moves=st.lists(st.integers(-3, 3), max_size=50))
def test_matches_naive_model_near_the_limit(moves: list[int]) -> None:
    window, naive = ReplayWindow(), NaiveWindow()
    position = REJECT_AFTER_MESSAGES - 20
    for delta in moves:
        position += delta
        assert window.validate(position) is naive.validate(position), position
