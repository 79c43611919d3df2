#!/usr/bin/env python3
"""Fuzz target: pywg/config/cni_json.py on config.json, the JSON users of the CNI plugin keep in Secrets.

An input is the file's bytes, decoded as `load_config` decodes them; texts that would be read as
wg-quick INI (the first non-space character is not ``{``) are left to fuzz_wgquick_ini.py.
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
    if text.removeprefix("\ufeff").lstrip().startswith("{"):
        check_config(text)


if __name__ == "__main__":
    fuzz(test_one_input)
