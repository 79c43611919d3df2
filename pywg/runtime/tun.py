"""TUN devices through /dev/net/tun, created inside a network namespace.

The TUN is created while the calling thread is inside the target namespace (`in_netns`): the kernel ties
the device to the namespace of the task that opened /dev/net/tun. The fd then works from any namespace,
so the engine can keep its UDP socket in the root namespace and the TUN in a pod's.

Lifetime. By default the device is not persistent: closing the fd deletes the interface. A persistent
one (`open_tun(..., persist=True)`, TUNSETPERSIST) outlives the fd and the process, keeping its addresses
and routes (without a reader it just has no carrier and drops what is routed to it); `attach_tun`
re-opens it by name, and `Tun.delete` (TUNSETPERSIST off, then close) removes it. When someone deletes the
interface (`ip link del`), the fd stays open but is detached: read, write and ioctls fail with EBADFD
and poll reports POLLERR, which `Tun` turns into `TunGoneError`. Deleting the namespace's name
(`ip netns del`, a CNI runtime tearing down a pod) does *not* delete the interface: our fds keep the
namespace alive. `Tun.is_alive` therefore also checks that the namespace path still names the namespace
the TUN lives in, so the engine can exit instead of serving an orphaned namespace forever.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import stat
import struct

from pywg.runtime.netns import in_netns, netns_identity, resolve_netns
from pywg.runtime.oserror import DescribedOSError

TUN_DEVICE_PATH = "/dev/net/tun"
TUN_MAJOR, TUN_MINOR = 10, 200

# <linux/if_tun.h>
TUNSETIFF = 0x400454CA
TUNGETIFF = 0x800454D2
TUNSETPERSIST = 0x400454CB
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_TUN_EXCL = 0x8000  # fail with EBUSY instead of attaching to an existing device
# TUNSETOFFLOAD flags: what the kernel may hand a vnet_hdr TUN unfinished (partial checksums,
# TCP and UDP super-packets). USO needs Linux >= 6.2; an older kernel refuses unknown flags with EINVAL.
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40
TUN_OFFLOAD_NAMES = {
    TUN_F_CSUM: "CSUM",
    TUN_F_TSO4: "TSO4",
    TUN_F_TSO6: "TSO6",
    TUN_F_USO4: "USO4",
    TUN_F_USO6: "USO6",
}
# Tried in order until the kernel accepts one (each drops a feature the previous one added).
TUN_OFFLOAD_CHOICES = (
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6,
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
    TUN_F_CSUM,
    0,
)
# <linux/sockios.h>
SIOCGIFNAME = 0x8910
SIOCGIFINDEX = 0x8933

IFNAMSIZ = 16
IFREQ_SIZE = 40
VIRTIO_NET_HDR_LEN = 10  # the default TUNSETVNETHDRSZ
MAX_IP_PACKET = 65535


class TunError(DescribedOSError):
    """Creating or using a TUN failed."""


class InterfaceExistsError(TunError, FileExistsError):
    """An interface with the requested name already exists in the namespace."""


class TunGoneError(TunError):
    """The TUN's interface was deleted (EBADFD/EIO from the fd); the fd is useless now."""


# What a read or write on a TUN whose interface was deleted fails with.
GONE_ERRNOS = (errno.EBADFD, errno.EIO)


def _ifreq_flags(name: str, flags: int) -> bytes:
    return struct.pack("16sH22x", name.encode(), flags)


def _ifindex(sock: socket.socket, name: str) -> int:
    reply = fcntl.ioctl(sock, SIOCGIFINDEX, struct.pack("16si20x", name.encode(), 0))
    return int(struct.unpack_from("i", reply, IFNAMSIZ)[0])


def _ifname(sock: socket.socket, ifindex: int) -> str:
    reply = fcntl.ioctl(sock, SIOCGIFNAME, struct.pack("16si20x", b"", ifindex))
    return reply[:IFNAMSIZ].split(b"\0", 1)[0].decode()


def _exists(sock: socket.socket, name: str) -> bool:
    try:
        _ifindex(sock, name)
    except OSError as exc:
        if exc.errno == errno.ENODEV:
            return False
        raise
    return True


def _check_name(name: str) -> None:
    raw = name.encode()
    if not raw or len(raw) >= IFNAMSIZ or name in (".", "..") or any(c in name for c in "/: \t\n\0"):
        raise TunError(errno.EINVAL, f"invalid interface name {name!r} (1-15 bytes, no '/', ':' or spaces)")


def ensure_tun_device(path: str = TUN_DEVICE_PATH) -> None:
    """Create the TUN character device (c 10 200) at `path` if it is missing, as containers often lack it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISCHR(st.st_mode):
            raise TunError(errno.ENODEV, f"{path} exists but is not a character device")
        return
    try:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(TUN_MAJOR, TUN_MINOR))
    except FileExistsError:
        return  # created concurrently
    except OSError as exc:
        raise TunError(
            exc.errno, f"{path} is missing and creating it (mknod c 10 200) failed: {exc.strerror}"
        ) from exc


class Tun:
    """An open, non-blocking TUN fd (IFF_TUN | IFF_NO_PI): one IP packet per read and per write,
    after a virtio_net_hdr with IFF_VNET_HDR."""

    def __init__(
        self,
        fd: int,
        name: str,
        ifindex: int,
        netns: str | None,
        control: socket.socket,
        vnet_hdr: bool,
        offloads: int = 0,
    ) -> None:
        self.fd = fd
        self.name = name
        self.ifindex = ifindex
        self.netns = netns
        # With vnet_hdr every read starts with a struct virtio_net_hdr and every write needs one
        # (pywg/native/offload.h); `offloads` are the TUN_F_* flags the kernel accepted for it.
        self.vnet_hdr = vnet_hdr
        self.offloads = offloads
        # Every read gets a buffer this large; a packet larger than it is truncated by the kernel.
        self.read_size = MAX_IP_PACKET + (VIRTIO_NET_HDR_LEN if vnet_hdr else 0)
        self.dropped_down = 0  # packets written while the interface was administratively down
        self._control = control  # a socket in the TUN's namespace, for interface ioctls
        self._netns_id = netns_identity(netns) if netns is not None else None
        # True when the interface may be moved to another namespace (`ip link set
        # netns`, as wg-quick users do): then only a detached fd means it is gone.
        self.movable = False
        self.persistent = False  # TUNSETPERSIST is on: closing the fd leaves the interface

    def fileno(self) -> int:
        return self.fd

    def describe_offloads(self) -> str:
        """For the engine's log: e.g. "IFF_VNET_HDR, offloads CSUM TSO4 TSO6"."""
        if not self.vnet_hdr:
            return "no IFF_VNET_HDR: one packet per read and write"
        names = [name for flag, name in TUN_OFFLOAD_NAMES.items() if self.offloads & flag]
        return f"IFF_VNET_HDR, offloads {' '.join(names) or 'none'}"

    def __enter__(self) -> Tun:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f" netns={self.netns}" if self.netns else ""
        return f"<Tun {self.name} ifindex={self.ifindex} fd={self.fd}{where}>"

    def _gone(self, exc: OSError) -> TunGoneError:
        return TunGoneError(exc.errno, f"TUN {self.name} (ifindex {self.ifindex}) is gone: {exc.strerror}")

    def read_batch(self, max_packets: int = 64) -> list[bytes]:
        """Read up to `max_packets` packets, stopping early when the queue is empty (EAGAIN).

        Raises TunGoneError if the interface was deleted and nothing was read in this call.
        """
        packets: list[bytes] = []
        read, fd, size = os.read, self.fd, self.read_size
        try:
            while len(packets) < max_packets:
                packets.append(read(fd, size))
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno not in (errno.EBADFD, errno.EIO):
                raise
            if not packets:
                raise self._gone(exc) from exc
        return packets

    def write(self, packet: bytes | bytearray | memoryview) -> bool:
        """Write one packet. False if the kernel refused it because the interface is down (EIO).

        Raises TunGoneError if the interface was deleted.
        """
        try:
            os.write(self.fd, packet)
        except OSError as exc:
            if exc.errno == errno.EIO:
                self.dropped_down += 1
                return False
            if exc.errno == errno.EBADFD:
                raise self._gone(exc) from exc
            raise
        return True

    def gone_reason(self) -> str | None:
        """None while the TUN is usable; otherwise why the engine should stop serving it."""
        if self.fd < 0:
            return "closed"
        try:
            fcntl.ioctl(self.fd, TUNGETIFF, bytes(IFREQ_SIZE))
        except OSError as exc:
            if exc.errno in (errno.EBADFD, errno.EIO):
                return f"interface {self.name} was deleted"
            raise
        if self.movable:
            return None  # it may live in another namespace now: attached is alive
        try:
            _ifname(self._control, self.ifindex)
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return f"ifindex {self.ifindex} no longer exists in its namespace"
            raise
        if self.netns is not None:
            try:
                current = netns_identity(self.netns)
            except OSError:
                current = None
            if current != self._netns_id:
                return f"network namespace {self.netns} was deleted"
        return None

    def is_alive(self) -> bool:
        """True while the interface exists and its namespace is still reachable by its path."""
        return self.gone_reason() is None

    def set_offloads(self, flags: int) -> None:
        """TUNSETOFFLOAD `flags` (TUN_F_*) on a vnet_hdr TUN: what the kernel may hand it unfinished
        from now on (0: whole packets with finished checksums, each behind a zero header)."""
        try:
            fcntl.ioctl(self.fd, TUNSETOFFLOAD, flags)
        except OSError as exc:
            if exc.errno in (errno.EBADFD, errno.EIO):
                raise self._gone(exc) from exc
            raise TunError(exc.errno, f"TUNSETOFFLOAD {flags:#x} on {self.name}: {exc.strerror}") from exc
        self.offloads = flags

    def set_persist(self, persist: bool) -> None:
        """Turn TUNSETPERSIST on or off: a persistent interface stays when the fd is closed."""
        try:
            fcntl.ioctl(self.fd, TUNSETPERSIST, int(persist))
        except OSError as exc:
            if exc.errno in (errno.EBADFD, errno.EIO):
                raise self._gone(exc) from exc
            raise TunError(exc.errno, f"TUNSETPERSIST {int(persist)} on {self.name}: {exc.strerror}") from exc
        self.persistent = persist

    def close(self) -> None:
        """Close the fd and the control socket. Idempotent.

        Closing deletes the interface unless it is persistent (see `delete`).
        """
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)
        self._control.close()

    def delete(self) -> None:
        """Close the fd and make sure the interface goes with it, persistent or not. Idempotent."""
        if self.fd >= 0 and self.persistent:
            with contextlib.suppress(TunGoneError):  # deleted already
                self.set_persist(False)
        self.close()


def open_tun(
    name: str,
    netns: str | None = None,
    vnet_hdr: bool = False,
    *,
    device_path: str = TUN_DEVICE_PATH,
    persist: bool = False,
) -> Tun:
    """Create TUN interface `name` inside network namespace `netns` (a name or path; None = current).

    The calling thread enters the namespace only while creating the device and returns to its own.
    With `vnet_hdr` the TUN gets IFF_VNET_HDR and the offloads of TUN_OFFLOAD_CHOICES the kernel
    accepts (pywg/runtime/tun_offload.py handles the frames). The interface is created down, with
    no addresses (see netconfig.configure_interface). With `persist` it is made persistent
    (TUNSETPERSIST) before this returns, so it outlives the fd.
    Raises NamespaceNotFoundError, InterfaceExistsError if `name` is taken in that namespace, or
    TunError.
    """
    tun = _open(name, netns, vnet_hdr, device_path, attach=False)
    if persist:
        try:
            tun.set_persist(True)
        except BaseException:
            tun.close()
            raise
    return tun


def attach_tun(
    name: str, netns: str | None = None, vnet_hdr: bool = False, *, device_path: str = TUN_DEVICE_PATH
) -> Tun:
    """Re-open the existing persistent TUN `name` in `netns` (left by a process that ended).

    Its addresses, routes and link state are as they were. Raises NamespaceNotFoundError, TunError
    with ENODEV if there is no such interface, or with EBUSY if another fd is still attached to it
    (another process serves it), or EINVAL if `name` is not a TUN (IFF_TUN) device.
    """
    tun = _open(name, netns, vnet_hdr, device_path, attach=True)
    tun.persistent = True
    return tun


def _open(name: str, netns: str | None, vnet_hdr: bool, device_path: str, attach: bool) -> Tun:
    _check_name(name)
    path = resolve_netns(netns)
    ensure_tun_device(device_path)
    flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0) | (0 if attach else IFF_TUN_EXCL)
    where = f"network namespace {netns!r}" if netns is not None else "the current network namespace"
    with in_netns(path):
        control = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            exists = _exists(control, name)
            if exists and not attach:
                raise InterfaceExistsError(errno.EEXIST, f"interface {name} already exists in {where}")
            if attach and not exists:
                raise TunError(errno.ENODEV, f"there is no TUN {name} to re-attach to in {where}")
            try:
                fd = os.open(device_path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as exc:
                raise TunError(exc.errno, f"cannot open {device_path}: {exc.strerror}") from exc
            try:
                try:
                    reply = fcntl.ioctl(fd, TUNSETIFF, _ifreq_flags(name, flags))
                except OSError as exc:
                    if attach:
                        why = exc.strerror
                        if exc.errno == errno.EBUSY:
                            why = "another process is attached to it"
                        elif exc.errno == errno.EINVAL:
                            why = "it is not a TUN device (or its flags differ)"
                        raise TunError(exc.errno, f"cannot re-attach to {name} in {where}: {why}") from exc
                    if exc.errno in (errno.EBUSY, errno.EINVAL, errno.EEXIST) and _exists(control, name):
                        raise InterfaceExistsError(
                            exc.errno,
                            f"interface {name} already exists in {where} (TUNSETIFF: {exc.strerror})",
                        ) from exc
                    raise TunError(exc.errno, f"TUNSETIFF {name} in {where}: {exc.strerror}") from exc
                actual = reply[:IFNAMSIZ].split(b"\0", 1)[0].decode()
                ifindex = _ifindex(control, actual)
                offloads = _set_offloads(fd) if vnet_hdr else _clear_offloads(fd)
            except BaseException:
                os.close(fd)
                raise
        except BaseException:
            control.close()
            raise
    return Tun(fd, actual, ifindex, path, control, vnet_hdr, offloads)


def _clear_offloads(fd: int) -> int:
    """TUNSETOFFLOAD 0: a persistent TUN keeps the offloads of the last process that served it,
    and super-packets without a virtio_net_hdr would be unusable. Best effort, as before."""
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, TUNSETOFFLOAD, 0)
    return 0


def _set_offloads(fd: int) -> int:
    """TUNSETOFFLOAD with the first of TUN_OFFLOAD_CHOICES the kernel accepts; returns it.

    The header size is set too: a persistent TUN keeps whatever its last owner chose.
    """
    fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VIRTIO_NET_HDR_LEN))
    for flags in TUN_OFFLOAD_CHOICES:
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, flags)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            continue
        return flags
    return 0
