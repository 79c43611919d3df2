"""The real clock and random source, handed to the core by adapters; process hardening."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import time

PR_SET_DUMPABLE = 4


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall_ns(self) -> int:
        return time.time_ns()


def system_rng(n: int) -> bytes:
    return os.urandom(n)


def disable_core_dumps() -> None:
    """No core file of this process, whatever the node's core_pattern: its memory holds private keys.

    RLIMIT_CORE 0 stops the dump; PR_SET_DUMPABLE 0 also keeps unprivileged processes from attaching
    with ptrace or reading /proc/PID/mem, and stays off across setuid.
    """
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"prctl(PR_SET_DUMPABLE, 0): {os.strerror(code)}")
