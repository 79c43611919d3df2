"""Where the test vectors live, for every test that reads them: the checkout's `vectors/`.

It holds the vectors transcribed from RFCs, a draft, wireguard-go and the kernel, and the published
vector files (Wycheproof, the BLAKE2s KAT, the Noise vector) in subfolders; vectors/PROVENANCE.md
says where each comes from. A missing file is a test failure naming it, never a skip: a vector run
that silently did nothing would look like a pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

VECTORS_DIR = Path(__file__).resolve().parents[2] / "vectors"


def load_vectors(relative: str) -> Any:
    """A JSON vector file by its path in `vectors/` (e.g. "wycheproof/x25519_test.json")."""
    path = VECTORS_DIR / relative
    if not path.is_file():
        pytest.fail(f"test vector file missing: {path}", pytrace=False)
    return json.loads(path.read_text(encoding="utf-8"))
