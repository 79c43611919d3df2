"""TAI64N timestamps as the kernel writes them into handshake initiations."""

from __future__ import annotations

import struct

from pywg.core.constants import TAI64_BASE, TAI64N_WHITENER

_TAI64N = struct.Struct(">QI")


def tai64n(unix_ns: int) -> bytes:
    """12-byte big-endian label for a wall-clock time in ns since the Unix epoch.

    Nanoseconds are rounded down to a multiple of 2^24 (the kernel's whitening),
    so a timestamp does not reveal the sender's clock to the nanosecond.
    """
    seconds, nanoseconds = divmod(unix_ns, 1_000_000_000)
    return _TAI64N.pack(TAI64_BASE + seconds, nanoseconds & ~TAI64N_WHITENER)
