"""Where the test vectors live, for every test that reads them.

Two folders:

- the project's own `vectors/` (transcribed RFC, draft and wireguard-go values), beside `tests/`;
- the shared folder of published vector files (Wycheproof, BLAKE2 KAT, Noise), which CI places
  beside the checkout as `shared/vectors`, i.e. `<checkout>/../shared/vectors`. The environment
  variable PYWG_SHARED_VECTORS overrides that location.

A missing folder or file is a test failure with a message saying what is missing and how to
point at it, never a skip: a vector run that silently did nothing would look like a pass.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

SHARED_VECTORS_ENV = "PYWG_SHARED_VECTORS"

_CHECKOUT = Path(__file__).resolve().parents[2]


def project_vectors_dir() -> Path:
    """The checkout's `vectors/` folder."""
    path = _CHECKOUT / "vectors"
    if not path.is_dir():
        pytest.fail(f"the project's test vectors are missing: no folder {path}", pytrace=False)
    return path


def shared_vectors_dir() -> Path:
    """The shared vector folder: $PYWG_SHARED_VECTORS, else `shared/vectors` beside the checkout."""
    override = os.environ.get(SHARED_VECTORS_ENV)
    path = Path(override) if override else _CHECKOUT.parent / "shared" / "vectors"
    if not path.is_dir():
        how = f"{SHARED_VECTORS_ENV} is set to {override!r}" if override else "the default location"
        pytest.fail(
            f"shared test vectors not found at {path} ({how}); place the shared folder beside the "
            f"checkout as shared/vectors, or set {SHARED_VECTORS_ENV} to the folder holding "
            "wycheproof/, blake2/ and noise/",
            pytrace=False,
        )
    return path


def load_json(path: Path) -> Any:
    """Parse one vector file, failing the test (not erroring it) when the file is absent."""
    if not path.is_file():
        pytest.fail(f"test vector file missing: {path}", pytrace=False)
    return json.loads(path.read_text(encoding="utf-8"))


def project_vectors(name: str) -> Any:
    """A JSON file from the project's `vectors/` folder, by file name."""
    return load_json(project_vectors_dir() / name)


def shared_vectors(relative: str) -> Any:
    """A JSON file from the shared folder, by path relative to it (e.g. "wycheproof/x25519_test.json")."""
    return load_json(shared_vectors_dir() / relative)
