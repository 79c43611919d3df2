"""The check both configuration harnesses make on each text (as tests/test_config.py does).

A text parses and survives being written out and read back in both formats, or it fails with a
`ConfigError`; neither the error nor a warning quotes anything that could be a key.
"""

from __future__ import annotations

from dataclasses import replace

from _common import assert_nothing_key_like

from pywg.config import ConfigError, format_wg_quick, parse_config, to_json


def check_config(text: str) -> None:
    try:
        cfg = parse_config(text)
    except ConfigError as error:
        assert_nothing_key_like(str(error))
        return
    for warning in cfg.warnings:
        assert_nothing_key_like(warning)
    assert parse_config(format_wg_quick(cfg)) == cfg, "the wg-quick round trip changed the config"
    assert parse_config(to_json(cfg)) == replace(cfg, dns=[]), "the JSON round trip changed the config"
