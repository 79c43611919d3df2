"""Receive-side replay window: the kernel's counter_validate (receive.c), an RFC 6479 ring bitmap.

The ring holds COUNTER_BITS_TOTAL bits as 64-bit words. Only COUNTER_WINDOW_SIZE of
them form the window: the word the newest counter lands in is partly in the
future, so one word's worth is held back ("redundant bits") and advancing the
window only ever clears whole words, never shifts.
"""

from __future__ import annotations

from pywg.core.constants import (
    COUNTER_BITS_TOTAL,
    COUNTER_REDUNDANT_BITS,
    COUNTER_WINDOW_SIZE,
    REJECT_AFTER_MESSAGES,
)

_WORD_SHIFT = COUNTER_REDUNDANT_BITS.bit_length() - 1  # log2(64)
_BIT_MASK = COUNTER_REDUNDANT_BITS - 1
_RING_WORDS = COUNTER_BITS_TOTAL // COUNTER_REDUNDANT_BITS  # 128
_RING_MASK = _RING_WORDS - 1


class ReplayWindow:
    """Anti-replay state of one receiving key; call validate() only after the AEAD succeeded."""

    __slots__ = ("_counter", "_words")

    def __init__(self) -> None:
        self._counter = 0  # highest accepted counter + 1; 0 means nothing seen yet
        self._words = [0] * _RING_WORDS

    def reset(self) -> None:
        self._counter = 0
        self._words = [0] * _RING_WORDS

    def validate(self, counter: int) -> bool:
        """Accept and record `counter` if it is new and inside the window."""
        # The kernel also rejects when its stored counter exceeds REJECT_AFTER_MESSAGES;
        # that cannot happen, since only counters below the limit are ever stored.
        if not 0 <= counter < REJECT_AFTER_MESSAGES:
            return False
        # Shifted by one so that a stored 0 can mean "nothing received yet".
        counter += 1
        current = self._counter
        if counter > current:
            # Most in-order packets stay in the current word; skip the call for those.
            if (counter ^ current) >> _WORD_SHIFT:
                self._advance(current >> _WORD_SHIFT, counter >> _WORD_SHIFT)
            self._counter = counter
        elif counter + COUNTER_WINDOW_SIZE < current:
            return False
        words = self._words
        index = (counter >> _WORD_SHIFT) & _RING_MASK
        bit = 1 << (counter & _BIT_MASK)
        word = words[index]
        if word & bit:
            return False
        words[index] = word | bit
        return True

    def _advance(self, index_current: int, index_new: int) -> None:
        """Clear the words between the old newest word and the new one, at most the whole ring."""
        if index_new - index_current >= _RING_WORDS:
            self._words = [0] * _RING_WORDS
            return
        words = self._words
        for i in range(index_current + 1, index_new + 1):
            words[i & _RING_MASK] = 0
