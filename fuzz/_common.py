"""What the harnesses share: running under atheris, reading structured inputs, key-leak checks.

Imported inside each harness's `atheris.instrument_imports()` block, so it is instrumented like
the project's modules; it imports none of them, so it cannot import one before the block does.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

import atheris

T = TypeVar("T")

# What pywg/config/fields.py hides in messages: a run of 40 or more base64 or hex characters.
KEY_LIKE = re.compile(r"[A-Za-z0-9+/=_-]{40,}")
# Escapes json.dumps writes: they separate runs, the characters they stand for are not in them.
_ESCAPE = re.compile(r"\\(?:u[0-9a-fA-F]{4}|.)")


def fuzz(test_one_input: Callable[[bytes], None]) -> None:
    """Run `test_one_input` under libFuzzer with this process's command line."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


def assert_nothing_key_like(message: str) -> None:
    """Messages never quote a value that could be a key (SECURITY.md, "No keys in logs")."""
    found = KEY_LIKE.search(_ESCAPE.sub(" ", message))
    assert found is None, f"key-like text in a message: {message!r}"


def _width(limit: int) -> int:
    """Bytes that hold every number below `limit`."""
    return max(1, ((limit - 1).bit_length() + 7) // 8)


class Reader:
    """Cuts an input into small decisions, front to back; an exhausted input reads as zeros.

    Simpler than atheris.FuzzedDataProvider and predictable, so fuzz/seeds.py can write seed
    inputs with `Writer` that mean exactly what they say.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def left(self) -> int:
        return len(self._data) - self._pos

    def int(self, size: int = 1) -> int:
        """An unsigned little-endian integer of `size` bytes."""
        return int.from_bytes(self.bytes(size), "little")

    def below(self, limit: int) -> int:
        """0 <= n < limit, from as few bytes as hold limit - 1."""
        return self.int(_width(limit)) % limit

    def pick(self, choices: Sequence[T]) -> T:
        return choices[self.below(len(choices))]

    def bytes(self, size: int) -> bytes:
        chunk = self._data[self._pos : self._pos + size]
        self._pos += len(chunk)
        return chunk.ljust(size, b"\0")

    def rest(self) -> bytes:
        chunk = self._data[self._pos :]
        self._pos = len(self._data)
        return chunk

    def blob(self, max_size: int = 0xFFFF) -> bytes:
        """A u16 length, then that many bytes (fewer when the input ends)."""
        size = min(self.int(2), max_size)
        chunk = self._data[self._pos : self._pos + size]
        self._pos += len(chunk)
        return chunk


class Writer:
    """Writes what `Reader` reads back, for seed inputs."""

    def __init__(self) -> None:
        self.data = bytearray()

    def int(self, value: int, size: int = 1) -> Writer:
        self.data += value.to_bytes(size, "little")
        return self

    def below(self, value: int, limit: int) -> Writer:
        return self.int(value, _width(limit))

    def bytes(self, data: bytes) -> Writer:
        self.data += data
        return self

    def blob(self, data: bytes) -> Writer:
        return self.int(len(data), 2).bytes(data)
