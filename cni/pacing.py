"""Large configs take turns: a tenant's hub Secret cannot take the node agent from everybody else.

Setting up a config of thousands of peers is seconds of Python in the process that also forwards
every tunnel's packets (one GIL). Done back to back, as a tenant can make happen (Pods re-created,
a Secret rewritten again and again), it would hold the agent all the time. So configs above the
operator's size (`--large-config-bytes`) are set up one at a time, and after each the next one
waits until large configs have had at most `--large-config-share` of the time: after 0.3 s of work
with a share of 0.25, 0.9 s. The first large config after a quiet spell starts at once, so a hub
Pod alone still gets its tunnel in a few seconds; small configs never wait here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager


class LargeConfigLane:
    def __init__(self, threshold: int, share: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        self.threshold = threshold  # bytes of config text from which a config is large
        self.share = share
        self.clock = clock
        self.next_turn = 0.0  # on `clock`: when the next large config may start
        self._lock: asyncio.Lock | None = None  # made on the loop that uses it
        self._started = 0.0

    def large(self, size: int) -> bool:
        return size >= self.threshold

    async def acquire(self) -> None:
        """Wait for the lane and for the share of time of the work before; `release` after."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        await self._lock.acquire()
        delay = self.next_turn - self.clock()
        if delay > 0:
            try:
                await asyncio.sleep(delay)
            except BaseException:
                self._lock.release()
                raise
        self._started = self.clock()

    def release(self) -> None:
        """On the loop: the work is done; the next large config waits for its share."""
        assert self._lock is not None
        ended = self.clock()
        self.next_turn = ended + (ended - self._started) * (1 - self.share) / self.share
        self._lock.release()

    @asynccontextmanager
    async def turn(self, size: int) -> AsyncIterator[None]:
        """Hold the lane for the work of a config of `size` bytes; nothing to wait for if small."""
        if not self.large(size):
            yield
            return
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    @contextmanager
    def turn_from_thread(self, size: int, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
        """`turn`, for a thread other than the loop's (the plugin run inside the agent)."""
        if not self.large(size):
            yield
            return
        asyncio.run_coroutine_threadsafe(self.acquire(), loop).result()
        try:
            yield
        finally:
            loop.call_soon_threadsafe(self.release)
