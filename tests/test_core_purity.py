"""The protocol core stays sans-I/O: no sockets, event loops, clocks or OS randomness.

Dependencies point inward: the core never imports its adapters either, the C hot path included
(the device gets it as an injected Crypto, pywg/core/transport.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pywg

PACKAGE = Path(pywg.__file__).parent
# Adapters around the core may do I/O; everything else in pywg/ is core.
ADAPTERS = {"cli.py", "__main__.py", "runtime", "hotpath.py", "_hotpath_build.py"}
# Modules of pywg the core must not import (nor cffi, which only the hot path needs).
FORBIDDEN_PYWG = {"pywg.hotpath", "pywg._hotpath", "pywg.runtime", "pywg.cli", "cffi"}
FORBIDDEN_MODULES = {
    "socket",
    "asyncio",
    "uvloop",
    "selectors",
    "select",
    "time",
    "datetime",
    "os",
    "random",
    "secrets",
    "threading",
    "subprocess",
    "ssl",
    "fcntl",
}
FORBIDDEN_CALLS = {("os", "urandom"), ("time", "time"), ("time", "monotonic"), ("time", "time_ns")}


def core_files() -> list[Path]:
    files = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in ADAPTERS:
            continue
        files.append(path)
    return files


def violations(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            # `from pywg import hotpath` imports pywg.hotpath; relative imports are inside pywg.
            module = node.module or ""
            if node.level:
                module = f"pywg.{module}".rstrip(".")
            names = [module] if node.level == 0 else []
            targets = [module, *(f"{module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            value = node.func.value
            if isinstance(value, ast.Name) and (value.id, node.func.attr) in FORBIDDEN_CALLS:
                found.append(f"calls {value.id}.{node.func.attr}")
            continue
        else:
            continue
        found += [f"imports {n}" for n in names if n.split(".")[0] in FORBIDDEN_MODULES]
        found += [f"imports {n}" for n in targets if _adapter(n)]
    return sorted(set(found))


def _adapter(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN_PYWG)


def test_core_is_sans_io() -> None:
    files = core_files()
    assert any(p.name == "device.py" for p in files)
    problems = {str(p.relative_to(PACKAGE)): v for p in files if (v := violations(p.read_text()))}
    assert problems == {}


def test_checker_catches_violations() -> None:
    assert violations("import socket") == ["imports socket"]
    assert violations("from time import monotonic") == ["imports time"]
    assert violations("import os.path") == ["imports os.path"]
    assert violations("x = os.urandom(4)") == ["calls os.urandom"]
    assert violations("import hashlib") == []
    assert violations("from pywg import hotpath") == ["imports pywg.hotpath"]
    assert violations("from pywg.hotpath import CCrypto") == [
        "imports pywg.hotpath",
        "imports pywg.hotpath.CCrypto",
    ]
    assert violations("from . import hotpath") == ["imports pywg.hotpath"]
    assert violations("from .runtime.udp import UdpSockets") == [
        "imports pywg.runtime.udp",
        "imports pywg.runtime.udp.UdpSockets",
    ]
    assert violations("import pywg._hotpath") == ["imports pywg._hotpath"]
    assert violations("from pywg.core.transport import PythonCrypto") == []
