"""Loading the C extension `pywg.native._hotpath`, and whether the engine may use it.

The extension is optional: when it is not built (or libcrypto is missing at run time, or it was
built from older C) pywg runs its pure-Python data path, and `unavailable_reason()` says why in
words; `PYWG_NO_EXT=1` turns a built extension off. `describe()` names the data path in use (for
`pywg version` and the engine's log). `extension()` hands cffi's `ffi` and `lib` to the modules
wrapping the C: pywg/native/hotpath.py (sealing, opening), pywg/runtime/tun_offload.py and
pywg/runtime/udp.py.

At import, the crypto threads of threads.c are set from PYWG_CRYPTO_THREADS (default: the CPUs
this process may use).
"""

from __future__ import annotations

import os
from typing import Any

DISABLE_ENV = "PYWG_NO_EXT"
BUILD_HINT = (
    "build it with `pip install -e .` from the checkout (needs gcc, the Python headers and "
    "libssl-dev; scripts/install-deps.sh installs them)"
)

try:
    from pywg.native._hotpath import ffi as _ffi
    from pywg.native._hotpath import lib as _lib

    _NOT_BUILT: str | None = None
    if not hasattr(_lib, "wg_crypto_version"):  # built from an older hotpath.c
        _ffi = _lib = None
        _NOT_BUILT = f"the C extension pywg.native._hotpath is out of date; re{BUILD_HINT}"
except ImportError as error:  # not compiled, or libcrypto missing at run time
    _ffi = _lib = None
    _NOT_BUILT = f"the C extension pywg.native._hotpath is not built ({error}); {BUILD_HINT}"


class HotpathUnavailable(RuntimeError):
    """The extension is not built."""


def built() -> bool:
    """Whether `pywg.native._hotpath` was compiled and loads."""
    return _NOT_BUILT is None


def unavailable_reason() -> str | None:
    """Why the engine should not use the C path, or None if it may."""
    if _NOT_BUILT is not None:
        return _NOT_BUILT
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return f"the C extension is turned off by {DISABLE_ENV}={os.environ[DISABLE_ENV]}"
    return None


def available() -> bool:
    """Whether the engine may use the C path: it is built and PYWG_NO_EXT is not set."""
    return unavailable_reason() is None


def extension() -> tuple[Any, Any]:
    """cffi's `ffi` and `lib` of pywg.native._hotpath, for the modules wrapping its C; raises
    HotpathUnavailable when it is not built."""
    if _NOT_BUILT is not None:
        raise HotpathUnavailable(_NOT_BUILT)
    return _ffi, _lib


def feature_unavailable_reason(symbol: str, feature: str, disable_env: str) -> str | None:
    """Why an adapter should not use the extension's `symbol` (its `feature`), or None: the C path
    is off, the extension was built before `feature`, or `disable_env` is set."""
    reason = unavailable_reason()
    if reason is not None:
        return reason
    if not hasattr(extension()[1], symbol):
        return f"the C extension predates {feature}"
    if os.environ.get(disable_env, "") not in ("", "0"):
        return f"turned off by {disable_env}={os.environ[disable_env]}"
    return None


def c_description() -> str:
    """The C data path in words: the extension, its OpenSSL and its crypto threads."""
    threads = crypto_threads()
    plural = "s" if threads > 1 else ""
    return f"C hot path (pywg.native._hotpath, OpenSSL {crypto_version()}, {threads} crypto thread{plural})"


def crypto_version() -> str:
    """The version of the libcrypto the extension runs with, e.g. "3.0.15"."""
    ffi, lib = extension()
    return str(ffi.string(lib.wg_crypto_version()).decode()).removeprefix("OpenSSL ")


def describe() -> str:
    """Which data path the engine uses, in words (for `pywg version` and the engine's log)."""
    reason = unavailable_reason()
    return c_description() if reason is None else f"pure Python ({reason})"


# Crypto threads: how many threads one seal or open call may split its AEAD across (hotpath.h).
THREADS_ENV = "PYWG_CRYPTO_THREADS"


def _apply_crypto_threads() -> None:
    """At import: PYWG_CRYPTO_THREADS, or if unset or not a number the CPUs this process may use,
    clamped to 1..WG_MAX_THREADS."""
    if _lib is None or not hasattr(_lib, "wg_set_threads"):
        return
    try:
        wanted = int(os.environ.get(THREADS_ENV, ""))
    except ValueError:
        wanted = len(os.sched_getaffinity(0))
    _lib.wg_set_threads(min(max(wanted, 1), _lib.WG_MAX_THREADS))


def crypto_threads() -> int:
    """Threads one batch call may use (1: sequential)."""
    _, lib = extension()
    return int(lib.wg_threads()) if hasattr(lib, "wg_threads") else 1


def parallel_batches() -> int:
    """Batch calls so far in which a worker thread did part of the work."""
    _, lib = extension()
    return int(lib.wg_parallel_batches()) if hasattr(lib, "wg_parallel_batches") else 0


_apply_crypto_threads()
