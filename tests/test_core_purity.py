"""The protocol core stays sans-I/O: no sockets, event loops, clocks or OS randomness."""

from __future__ import annotations

import ast
from pathlib import Path

import pywg

PACKAGE = Path(pywg.__file__).parent
# Adapters around the core may do I/O; everything else in pywg/ is core.
ADAPTERS = {"cli.py", "__main__.py", "runtime", "hotpath.py"}
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
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            value = node.func.value
            if isinstance(value, ast.Name) and (value.id, node.func.attr) in FORBIDDEN_CALLS:
                found.append(f"calls {value.id}.{node.func.attr}")
            continue
        else:
            continue
        found += [f"imports {n}" for n in names if n.split(".")[0] in FORBIDDEN_MODULES]
    return found


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
