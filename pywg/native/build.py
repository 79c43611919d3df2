"""cffi builder of `pywg.native._hotpath`, the C hot path (API mode, linked against libcrypto).

setup.py names it in `cffi_modules`, so `pip install -e .` compiles it (it needs gcc, the Python
headers and libssl-dev). `python pywg/native/build.py` compiles it in place by hand. The C lives
beside this file: hotpath.c/hotpath.h (sealing, opening) with threads.c/threads.h (its crypto
threads), offload.c/offload.h (TUN offloads), udpio.c/udpio.h (recvmmsg, sendmmsg) and
batch.c/batch.h (runs of a batch), lane.c/lane.h (the data path without Python);
pywg/native/hotpath.py, pywg/runtime/tun_offload.py, pywg/runtime/udp.py and pywg/runtime/lane.py
are the Python side.
"""

from __future__ import annotations

import re
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).parent

HEADERS = ("hotpath.h", "offload.h", "udpio.h", "batch.h", "lane.h")
SOURCES = ("hotpath.c", "threads.c", "offload.c", "udpio.c", "batch.c", "lane.c")
# Headers of the C alone, not declared to cffi.
PRIVATE_HEADERS = ("threads.h", "udpio_private.h")


def cdef_of(header: str) -> str:
    """A header as cffi's cdef takes it: comments and preprocessor lines out, each `#define WG_...`
    constant as `#define WG_... ...` and each array length named by a macro as `[...]` (the
    compiler fills both in), the declarations as written. So the C headers are the one copy."""
    text = re.sub(r"/\*.*?\*/", "", (HERE / header).read_text(), flags=re.DOTALL)
    lines = []
    for line in text.splitlines():
        directive = re.match(r"\s*#\s*(\w+)\s*(\w*)", line)
        if directive is None:
            lines.append(line)
        elif directive[1] == "define" and directive[2].startswith("WG_"):
            lines.append(f"#define {directive[2]} ...")
    return re.sub(r"\[[A-Z_][A-Z0-9_]*\]", "[...]", "\n".join(lines))


ffibuilder = FFI()
ffibuilder.cdef("\n".join(cdef_of(header) for header in HEADERS))
ffibuilder.set_source(
    "pywg.native._hotpath",
    "\n".join(f'#include "{header}"' for header in HEADERS),
    sources=[str(HERE / name) for name in SOURCES],
    include_dirs=[str(HERE)],
    depends=[str(HERE / name) for name in HEADERS + PRIVATE_HEADERS],
    libraries=["crypto"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-pthread"],
    extra_link_args=["-pthread"],  # threads.c's crypto threads
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(HERE.parents[1]), verbose=True)
