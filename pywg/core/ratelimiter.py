"""Per-source token bucket for handshake messages under load (kernel ratelimiter.c).

Each source may send RATELIMITER_PACKETS_PER_SECOND handshakes a second with a
burst of RATELIMITER_PACKETS_BURSTABLE. An IPv6 source counts as its whole /64,
since one host can pick any address in its subnet.
"""

from __future__ import annotations

from pywg.core.constants import (
    RATELIMITER_GC_INTERVAL,
    RATELIMITER_MAX_ENTRIES,
    RATELIMITER_PACKETS_BURSTABLE,
    RATELIMITER_PACKETS_PER_SECOND,
)

# Tokens are integer microseconds of credit (the kernel counts nanoseconds), so that
# refills add up exactly; only each elapsed interval is rounded, never absolute times.
_USEC_PER_SEC = 1_000_000
PACKET_COST = _USEC_PER_SEC // RATELIMITER_PACKETS_PER_SECOND
TOKEN_MAX = PACKET_COST * RATELIMITER_PACKETS_BURSTABLE
IDLE_LIMIT = 1.0  # seconds; the kernel collects entries idle for longer than this


class _Bucket:
    __slots__ = ("last", "tokens")

    def __init__(self, last: float, tokens: int) -> None:
        self.last = last
        self.tokens = tokens


class RateLimiter:
    """Token buckets keyed by source; call allow() with each handshake's outer source address."""

    __slots__ = ("_buckets", "_last_gc", "max_entries")

    def __init__(self, max_entries: int = RATELIMITER_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._buckets: dict[bytes, _Bucket] = {}
        self._last_gc: float | None = None

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, source_ip: bytes, now: float) -> bool:
        """Whether a handshake from `source_ip` (4 or 16 packed bytes) may be processed now."""
        size = len(source_ip)
        if size == 4:
            key = source_ip
        elif size == 16:
            key = source_ip[:8]  # the /64
        else:
            return False  # neither IPv4 nor IPv6: the kernel refuses other protocols
        self._maybe_gc(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            return self._add(key, now)
        # The burst is part of the bucket's size rather than of its rate (kernel comment).
        elapsed = round((now - bucket.last) * _USEC_PER_SEC)
        tokens = min(TOKEN_MAX, bucket.tokens + elapsed)
        bucket.last = now
        allowed = tokens >= PACKET_COST
        bucket.tokens = tokens - PACKET_COST if allowed else tokens
        return allowed

    def _add(self, key: bytes, now: float) -> bool:
        # A full table refuses new sources rather than evicting old ones, as the kernel does.
        if len(self._buckets) >= self.max_entries:
            return False
        self._buckets[key] = _Bucket(now, TOKEN_MAX - PACKET_COST)
        return True

    def _maybe_gc(self, now: float) -> None:
        """Drop idle buckets, at most once per GC interval (the kernel's periodic work, done lazily)."""
        if self._last_gc is None:
            self._last_gc = now
            return
        if now - self._last_gc < RATELIMITER_GC_INTERVAL:
            return
        self._last_gc = now
        stale = [key for key, bucket in self._buckets.items() if now - bucket.last > IDLE_LIMIT]
        for key in stale:
            del self._buckets[key]
