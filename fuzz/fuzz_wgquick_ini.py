#!/usr/bin/env python3
"""Fuzz target: pywg/config/wg_quick.py on wg-quick INI files (``[Interface]``/``[Peer]``).

An input is the file's bytes, decoded as `load_config` decodes them; texts that would be read as
JSON (the first non-space character is ``{``) are left to fuzz_config_json.py.
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["pywg", "_common", "_config_check"]):
    from _common import fuzz
    from _config_check import check_config


def test_one_input(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # load_config refuses it before parsing
    if not text.removeprefix("\ufeff").lstrip().startswith("{"):
        check_config(text)


if __name__ == "__main__":
    fuzz(test_one_input)
