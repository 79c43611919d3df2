"""What this machine lacks for the tests of each marker (pyproject.toml lists the markers).

`missing(marker, *args)` is None when the tests marked `marker` (with the marker's arguments) can run
here, else the reason they cannot, for tests/conftest.py to skip them with (or, with CI=true, to
fail them). `shared` takes the parts of the shared test material a test needs: `shared("k8s")`;
without arguments, k8s and bin.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from tests.support import vm

CHECKOUT = Path(__file__).resolve().parents[2]
SHARED_ENV = "PYWG_SHARED"


def shared_part(part: str) -> Path:
    """A part of the shared test material (k8s, bin): $PYWG_SHARED_<PART>, else <part> in $PYWG_SHARED,
    else in `shared` beside the checkout."""
    override = os.environ.get(f"{SHARED_ENV}_{part.upper()}")
    if override:
        return Path(override)
    return Path(os.environ.get(SHARED_ENV) or CHECKOUT.parent / "shared") / part


def _missing_root() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, CAP_NET_ADMIN, /var/run/wireguard)"
    try:
        os.close(os.open("/dev/net/tun", os.O_RDWR))
    except OSError as error:
        return f"needs /dev/net/tun, which cannot be opened here ({error.strerror}; modprobe tun)"
    return None


def _missing_vm() -> str | None:
    if shutil.which(vm.QEMU) is None:
        return f"needs {vm.QEMU} (scripts/install-deps.sh installs it)"
    try:
        vm.find_kernel()
    except vm.VmError as error:
        return f"needs a kernel for the VM: {error}"
    return None


def _missing_shared(*parts: str) -> str | None:
    absent = [str(shared_part(part)) for part in parts or ("k8s", "bin") if not shared_part(part).is_dir()]
    if absent:
        return (
            f"needs the shared test material: no {' or '.join(absent)} (put the shared folder beside the "
            f"checkout, or set {SHARED_ENV} to it)"
        )
    return None


_PROBES: dict[str, Callable[..., str | None]] = {
    "root": _missing_root,
    "vm": _missing_vm,
    "shared": _missing_shared,
}
MARKERS = tuple(_PROBES)  # the markers that say what a test needs of the machine


@functools.cache
def missing(marker: str, *args: str) -> str | None:
    """Why tests marked `marker` (with `args`) cannot run here, or None if they can."""
    return _PROBES[marker](*args)
