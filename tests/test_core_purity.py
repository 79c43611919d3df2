"""The protocol core stays sans-I/O: no sockets, event loops, clocks or OS randomness.

The rule is a package boundary. Everything under pywg/core/ imports nothing of pywg outside
pywg/core/ (so none of its adapters: pywg.runtime, pywg.native, pywg.cli, and not cffi, which
only the C hot path needs: the device gets that as an injected Crypto, pywg/core/transport.py),
and none of the standard library's I/O, clock or randomness. The configuration formats
(pywg/config/) are held to the same rule, with the core as the one package they may use.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pywg

PACKAGE = Path(pywg.__file__).parent
# Each sans-I/O package of pywg, and the packages of pywg it may import.
PURE_PACKAGES = {"core": ("pywg.core",), "config": ("pywg.core", "pywg.config")}
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
    "cffi",
}
FORBIDDEN_CALLS = {("os", "urandom"), ("time", "time"), ("time", "monotonic"), ("time", "time_ns")}


def package_files(name: str) -> list[Path]:
    return sorted((PACKAGE / name).rglob("*.py"))


def _absolute(module: str, level: int, package: str) -> str:
    """The module a relative import in `package` (dotted) names."""
    if not level:
        return module
    parts = package.split(".")[: len(package.split(".")) - (level - 1)]
    return ".".join([*parts, module] if module else parts)


def violations(source: str, allowed: tuple[str, ...], package: str = "pywg.core") -> list[str]:
    """What `source`, a module of `package`, imports or calls that a sans-I/O module may not:
    I/O, clocks and randomness, and any pywg module outside the `allowed` packages."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node.module or "", node.level, package)
            # `from pywg import native` imports pywg.native.
            names = [f"{module}.{alias.name}" if module == "pywg" else module for alias in node.names]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            value = node.func.value
            if isinstance(value, ast.Name) and (value.id, node.func.attr) in FORBIDDEN_CALLS:
                found.append(f"calls {value.id}.{node.func.attr}")
            continue
        else:
            continue
        found += [f"imports {n}" for n in names if n.split(".")[0] in FORBIDDEN_MODULES]
        found += [f"imports {n}" for n in names if _outside(n, allowed)]
    return sorted(set(found))


def _outside(name: str, allowed: tuple[str, ...]) -> bool:
    if name != "pywg" and not name.startswith("pywg."):
        return False
    return not any(name == p or name.startswith(p + ".") for p in allowed)


def test_core_is_sans_io() -> None:
    assert any(p.name == "device.py" for p in package_files("core"))
    problems = {
        str(path.relative_to(PACKAGE)): found
        for name, allowed in PURE_PACKAGES.items()
        for path in package_files(name)
        if (found := violations(path.read_text(), allowed, f"pywg.{name}"))
    }
    assert problems == {}


def test_checker_catches_violations() -> None:
    core = PURE_PACKAGES["core"]
    assert violations("import socket", core) == ["imports socket"]
    assert violations("from time import monotonic", core) == ["imports time"]
    assert violations("import os.path", core) == ["imports os.path"]
    assert violations("x = os.urandom(4)", core) == ["calls os.urandom"]
    assert violations("import cffi", core) == ["imports cffi"]
    assert violations("import hashlib", core) == []
    assert violations("from pywg import native", core) == ["imports pywg.native"]
    assert violations("from pywg.native.hotpath import CCrypto", core) == ["imports pywg.native.hotpath"]
    assert violations("from .. import cli", core) == ["imports pywg.cli"]
    assert violations("from ..runtime.udp import UdpSockets", core) == ["imports pywg.runtime.udp"]
    assert violations("import pywg.config", core) == ["imports pywg.config"]
    assert violations("from . import device", core) == []
    assert violations("from pywg.core.transport import PythonCrypto", core) == []
    assert violations("from pywg.core.keys import decode_key", PURE_PACKAGES["config"], "pywg.config") == []
    assert violations("from pywg.runtime import udp", PURE_PACKAGES["config"], "pywg.config") == [
        "imports pywg.runtime"
    ]
