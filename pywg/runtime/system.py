"""The real clock and random source, handed to the core by adapters."""

from __future__ import annotations

import os
import time


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall_ns(self) -> int:
        return time.time_ns()


def system_rng(n: int) -> bytes:
    return os.urandom(n)
