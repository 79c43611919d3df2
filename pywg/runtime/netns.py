"""Network namespaces through setns(2), for the code that opens TUNs and configures links.

A network namespace is named either like `ip netns` does (a name under /run/netns) or by a path to a
namespace file (/run/netns/NAME, /proc/PID/ns/net, a bind mount a CNI runtime made). `resolve_netns`
turns either form into a path and checks that it really is a network namespace.

setns(fd, CLONE_NEWNET) moves only the calling thread: other threads of the process (asyncio executors,
pyroute2 helpers, the C hot path's workers) stay where they are, and a thread that is inside another
namespace sees that namespace in everything that looks at "the current namespace": new sockets,
/proc/sys/net, socket.if_nametoindex. A socket or TUN fd keeps the namespace it was created in for its
whole life, so the pattern is: enter, create the fd, leave, use the fd from anywhere. `in_netns` always
returns the thread to the namespace it started in, also when the body raises.

Threads started while inside (including pool workers spawned lazily, e.g. by asyncio.to_thread) inherit
the namespace and stay in it after `in_netns` returns, so keep the body short and start no threads in it.

Python 3.11 has no os.setns, so setns is called through ctypes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from pywg.runtime.oserror import DescribedOSError

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"
THREAD_NETNS = "/proc/thread-self/ns/net"
# ioctl(ns_fd, NS_GET_NSTYPE) returns the CLONE_NEW* type of a namespace file (Linux >= 4.11).
NS_GET_NSTYPE = 0xB703


class NamespaceNotFoundError(DescribedOSError, FileNotFoundError):
    """The named network namespace does not exist (or is not a network namespace)."""


class NamespaceSwitchError(DescribedOSError):
    """setns failed; `in_netns` raises it also if the thread could not return to its namespace."""


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise NamespaceSwitchError(code, f"setns into network namespace {what}: {os.strerror(code)}")


def resolve_netns(spec: str | None) -> str | None:
    """Return the path of network namespace `spec`, or None for the current namespace.

    `spec` is a name under /run/netns (as `ip netns add NAME` creates) or a path containing a slash,
    such as /proc/PID/ns/net. Raises NamespaceNotFoundError, naming `spec`, if there is no such
    network namespace.
    """
    if spec is None:
        return None
    if not spec or "\0" in spec:
        raise NamespaceNotFoundError(errno.ENOENT, f"invalid network namespace name {spec!r}")
    if "/" in spec:
        path = spec
    elif spec in (".", ".."):
        raise NamespaceNotFoundError(errno.ENOENT, f"invalid network namespace name {spec!r}")
    else:
        path = os.path.join(NETNS_RUN_DIR, spec)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NamespaceNotFoundError(
            errno.ENOENT, f"network namespace {spec!r} does not exist ({path} is missing)"
        ) from None
    try:
        try:
            nstype = fcntl.ioctl(fd, NS_GET_NSTYPE)
        except OSError:
            nstype = -1
    finally:
        os.close(fd)
    if nstype != CLONE_NEWNET:
        raise NamespaceNotFoundError(
            errno.EINVAL,
            f"network namespace {spec!r}: {path} is not a network namespace"
            " (a stale /run/netns entry whose mount is gone?)",
        )
    return path


def netns_identity(spec: str | None) -> tuple[int, int]:
    """(st_dev, st_ino) of a network namespace; None means the calling thread's namespace.

    Two namespace files name the same namespace exactly when their identities are equal.
    """
    path = resolve_netns(spec) if spec is not None else THREAD_NETNS
    assert path is not None
    st = os.stat(path)
    return st.st_dev, st.st_ino


def same_netns(path: str | None) -> bool:
    """True if `path` (a name or path, None = current) is the calling thread's network namespace."""
    if path is None:
        return True
    return netns_identity(path) == netns_identity(None)


@contextmanager
def in_netns(path: str | None) -> Iterator[None]:
    """Run the body with the calling thread inside network namespace `path` (a name or a path).

    None, or the namespace the thread is already in, does nothing. On exit, normal or by exception,
    the thread returns to its original namespace (kept open as an fd of /proc/thread-self/ns/net).
    Only the calling thread moves; see the module docstring.
    """
    resolved = resolve_netns(path)
    if resolved is None:
        yield
        return
    original = os.open(THREAD_NETNS, os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(resolved, os.O_RDONLY | os.O_CLOEXEC)
        try:
            here, there = os.fstat(original), os.fstat(target)
            already_there = (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)
            if not already_there:
                _setns(target, repr(path))
        finally:
            os.close(target)
        if already_there:
            yield
            return
        try:
            yield
        finally:
            _setns(original, f"(the original one, on leaving {path!r})")
    finally:
        os.close(original)
