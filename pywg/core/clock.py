"""The clock the core is given. The core never reads time itself."""

from __future__ import annotations

from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never jumps; drives every timer."""
        ...

    def wall_ns(self) -> int:
        """Nanoseconds since the Unix epoch; for TAI64N and handshake times."""
        ...


class FakeClock:
    """A clock that moves only when told to, for tests and simulations."""

    def __init__(self, start: float = 1000.0, wall_start_ns: int = 1_700_000_000 * 10**9) -> None:
        self.now = start
        self._wall_offset_ns = wall_start_ns - int(start * 1e9)

    def monotonic(self) -> float:
        return self.now

    def wall_ns(self) -> int:
        return int(self.now * 1e9) + self._wall_offset_ns

    def advance(self, seconds: float) -> None:
        self.now += seconds
