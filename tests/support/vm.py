"""A throwaway QEMU virtual machine that runs one script on this host's own root filesystem.

Used where this machine's kernel lacks something a test needs (the WireGuard module): Debian's kernel,
which scripts/install-deps.sh extracts into KERNEL_CACHE (not into /boot: nothing of the host changes),
boots under software emulation (TCG; this machine's KVM cannot run a stock kernel) from a small
initramfs. Its /init loads the modules the job needs with busybox's insmod, mounts the host's root read
only over virtio-9p (security_model=none) and a writable share for results, gives the chroot fresh
/proc, /sys, /dev and /run (with /run/tmp for scratch: the host's /tmp stays visible, read-only, so a
checkout there works), runs the job's command there, and powers off. The console goes to a
file, so a failure can show it. `run_vm` kills QEMU on every way out.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import stat
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

KERNEL_CACHE = Path(os.environ.get("PYWG_VM_CACHE", "/var/cache/pywg-vm"))
BUSYBOX = Path("/bin/busybox")
QEMU = "qemu-system-x86_64"
# virtio-pci and 9p carry the host's root; the rest is what a job asks for
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p")
MEMORY_MB = 1024
MSIZE = 512 * 1024  # 9p message size: the default 8 KiB makes reading Python's modules crawl
RESULTS_TAG, ROOT_TAG = "results", "hostroot"
CONSOLE_TAIL = 6000


class VmError(Exception):
    """The VM could not be prepared or did not finish; the message says why (with its console)."""


@dataclass(frozen=True)
class Kernel:
    version: str
    vmlinuz: Path
    modules: Path  # lib/modules/<version>


@dataclass
class VmRun:
    status: int | None  # the job's exit status, None if it never reported one
    console: str
    results: Path  # the writable share, as the host sees it
    seconds: float

    def console_tail(self) -> str:
        return self.console[-CONSOLE_TAIL:]


def find_kernel(cache: Path = KERNEL_CACHE) -> Kernel:
    """The newest kernel extracted under `cache` (<cache>/<version>/{vmlinuz, lib/modules/<version>})."""
    found = sorted(cache.glob("*/vmlinuz"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise VmError(f"no kernel in {cache}: run scripts/install-deps.sh (it extracts Debian's there)")
    version = found[-1].parent.name
    modules = found[-1].parent / "lib" / "modules" / version
    if not (modules / "modules.builtin").is_file():
        raise VmError(f"{modules} is incomplete: remove {found[-1].parent} and run scripts/install-deps.sh")
    return Kernel(version, found[-1], modules)


# --- modules ------------------------------------------------------------------------------------


def _module_index(kernel: Kernel) -> dict[str, Path]:
    return {_canonical(p.name[:-3]): p for p in (kernel.modules / "kernel").rglob("*.ko")}


def _canonical(name: str) -> str:
    return name.replace("-", "_")


def _depends(path: Path) -> list[str]:
    """The `depends=` of a module's .modinfo (what depmod would read)."""
    found = re.search(rb"\0depends=([^\0]*)\0", path.read_bytes())
    return [_canonical(d.decode()) for d in found.group(1).split(b",") if d] if found else []


def module_order(kernel: Kernel, wanted: Iterable[str]) -> list[Path]:
    """The module files for `wanted` and everything they depend on, dependencies first; built-in
    modules need nothing."""
    index = _module_index(kernel)
    builtin = _builtin(kernel)
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        name = _canonical(name)
        if name in seen or name in builtin:
            return
        seen.add(name)
        if name not in index:
            raise VmError(f"kernel {kernel.version} has no module {name}")
        for dependency in _depends(index[name]):
            visit(dependency)
        order.append(index[name])

    for name in wanted:
        visit(name)
    return order


def _builtin(kernel: Kernel) -> set[str]:
    """The modules compiled into the kernel (modules.builtin: one path per line)."""
    lines = (kernel.modules / "modules.builtin").read_text().split()
    return {_canonical(Path(line).name.removesuffix(".ko")) for line in lines}


# --- the initramfs --------------------------------------------------------------------------------


class Cpio:
    """A newc archive (what the kernel unpacks as initramfs), written without a cpio binary."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.inode = 1

    def _entry(self, name: str, mode: int, body: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        fields = [self.inode, mode, 0, 0, 1, 0, len(body), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
        self.inode += 1
        self.data += b"070701" + b"".join(b"%08X" % value for value in fields)
        self.data += name.encode() + b"\0"
        self._pad()
        self.data += body
        self._pad()

    def _pad(self) -> None:
        self.data += b"\0" * (-len(self.data) % 4)

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, body: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, body)

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return bytes(self.data)


# cache=loose: nothing changes the shared root while the VM runs, so the page cache may keep what
# Python's imports read through 9p (the agent starts twice). /var/run is a symlink to /run on Debian,
# so the tmpfs on /run gives the job a fresh /var/run/netns and /var/run/wireguard too.
INIT = """#!/bin/busybox sh
export PATH=/bin
busybox mount -t proc proc /proc
busybox mount -t devtmpfs dev /dev
for module in $(busybox cat /modules/order); do
    busybox insmod /modules/$module || echo "vm: insmod $module failed"
done
busybox mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize={msize} {root_tag} /newroot
N=/newroot
busybox mount -t proc proc $N/proc
busybox mount -t sysfs sys $N/sys
busybox mount -t devtmpfs dev $N/dev
busybox mount -t tmpfs -o mode=0755 run $N/run
busybox mkdir -p $N/run/tmp $N/run/results
busybox chmod 1777 $N/run/tmp
busybox mount -t 9p -o trans=virtio,version=9p2000.L,msize={msize} {results_tag} $N/run/results
busybox ip link set lo up
echo "vm: running the job"
busybox chroot $N /usr/bin/env -i {env} /bin/sh -c {command} > /dev/console 2>&1
echo $? > $N/run/results/status
busybox sync
busybox umount $N/run/results
echo "vm: done"
busybox poweroff -f
"""


def build_initramfs(modules: Sequence[Path], env: dict[str, str], command: str) -> bytes:
    """busybox, the modules (loaded in this order) and INIT running `command` with `env`."""
    archive = Cpio()
    for directory in ("bin", "dev", "proc", "newroot", "modules"):
        archive.directory(directory)
    archive.char_device("dev/console", 5, 1)
    archive.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    for path in modules:
        archive.file(f"modules/{path.name}", path.read_bytes())
    archive.file("modules/order", "".join(f"{p.name}\n" for p in modules).encode())
    init = INIT.format(
        msize=MSIZE,
        root_tag=ROOT_TAG,
        results_tag=RESULTS_TAG,
        env=" ".join(shlex.quote(f"{k}={v}") for k, v in env.items()),
        command=shlex.quote(command),
    )
    archive.file("init", init.encode(), 0o755)
    return archive.finish()


# --- running it -----------------------------------------------------------------------------------


def qemu_command(kernel: Kernel, initramfs: Path, results: Path, console: Path) -> list[str]:
    share = "local,security_model=none,multidevs=remap"
    return [
        QEMU,
        *("-machine", "pc", "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", str(MEMORY_MB)),
        *("-nodefaults", "-no-user-config", "-no-reboot", "-display", "none"),
        *("-serial", f"file:{console}"),
        *("-kernel", str(kernel.vmlinuz), "-initrd", str(initramfs)),
        *("-append", "console=ttyS0 panic=-1 quiet rdinit=/init"),
        *("-virtfs", f"{share},path=/,mount_tag={ROOT_TAG},readonly=on"),
        *("-virtfs", f"{share},path={results},mount_tag={RESULTS_TAG}"),
    ]


def run_vm(
    workdir: Path,
    command: str,
    *,
    modules: Iterable[str] = (),
    env: dict[str, str] | None = None,
    timeout: float = 180.0,
) -> VmRun:
    """Boot the VM, run `command` with /bin/sh in the chroot of the host's root, and return its outcome.

    `workdir` (on the host) holds the initramfs, the console log and `results/`, which the job sees as
    /run/results. Raises VmError (with the console) when QEMU fails or `timeout` passes.
    """
    if shutil.which(QEMU) is None:
        raise VmError(f"{QEMU} is missing: run scripts/install-deps.sh")
    kernel = find_kernel()
    results, console = workdir / "results", workdir / "console.log"
    results.mkdir(parents=True, exist_ok=True)
    initramfs = workdir / "initramfs.cpio"
    order = module_order(kernel, [*BOOT_MODULES, *modules])
    initramfs.write_bytes(build_initramfs(order, env or {}, command))
    started = time.monotonic()
    process = subprocess.Popen(
        qemu_command(kernel, initramfs, results, console),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise VmError(f"the VM did not finish within {timeout:g} s; console:\n{_tail(console)}") from None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode != 0:
        raise VmError(
            f"{QEMU} exited with {process.returncode}: {output.decode(errors='replace')[-2000:]}\n"
            f"console:\n{_tail(console)}"
        )
    return VmRun(_status(results), _read(console), results, time.monotonic() - started)


def _status(results: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int((results / "status").read_text())
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tail(path: Path) -> str:
    return _read(path)[-CONSOLE_TAIL:]
