"""Compile cni/entrypoint.c into the static CNI plugin binary.

    python cni/build_entrypoint.py [--out build/pywg-cni-entrypoint] [--cc gcc]

The result needs nothing but the kernel: the DaemonSet copies it to /opt/cni/bin (as `pywg-cni`, and
`wg-cni` for configs written for schu/wireguard-cni), where runtimes and Multus execute it. It is
written through a temporary file and a rename, so a runtime never executes half a binary.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "entrypoint.c"
DEFAULT_OUT = HERE.parent / "build" / "pywg-cni-entrypoint"
CFLAGS = [
    "-static",
    "-O2",
    "-std=c11",
    "-D_GNU_SOURCE",
    "-Wall",
    "-Wextra",
    "-fstack-protector-strong",
    "-D_FORTIFY_SOURCE=2",
    "-s",
]


class BuildError(Exception):
    """The compiler failed; the message holds its output."""


def build(out: Path = DEFAULT_OUT, cc: str = "gcc") -> str:
    """Compile to `out` (0755); returns the compiler's diagnostics (empty when it had none)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        done = subprocess.run(
            [cc, *CFLAGS, "-o", temporary, str(SOURCE)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise BuildError(f"{cc} failed with status {done.returncode}:\n{done.stderr}")
        os.chmod(temporary, 0o755)
        os.replace(temporary, out)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return done.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default: {DEFAULT_OUT}")
    parser.add_argument("--cc", default=os.environ.get("CC", "gcc"))
    args = parser.parse_args(argv)
    try:
        diagnostics = build(args.out, args.cc)
    except (BuildError, OSError) as error:
        print(f"build_entrypoint: {error}", file=sys.stderr)
        return 1
    sys.stderr.write(diagnostics)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
