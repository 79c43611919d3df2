"""The entry points: a configuration's text, or a file, in either format."""

from __future__ import annotations

from pathlib import Path

from pywg.config.cni_json import parse_json
from pywg.config.model import ConfigError, InterfaceConfig
from pywg.config.wg_quick import parse_ini


def parse_config(text: str, source: str = "<config>", *, require_address: bool = False) -> InterfaceConfig:
    """Parse a JSON (first non-space character ``{``) or wg-quick INI configuration.

    Raises ConfigError, whose message starts with `source` and then the place of the problem.
    Without an address it is an error with `require_address`, else a warning.
    """
    try:
        if not isinstance(text, str):
            raise ConfigError("expected text")
        body = text.removeprefix("\ufeff")
        if not body.strip():
            raise ConfigError("the configuration is empty")
        is_json = body.lstrip().startswith("{")
        return parse_json(body, require_address) if is_json else parse_ini(body, require_address)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_config(path: str | Path) -> InterfaceConfig:
    """Read and parse a configuration file. OSError from reading it propagates unchanged.
    Every error and warning starts with the file's name."""
    file = Path(path)
    source = str(path)
    data = file.read_bytes()
    mode = file.stat().st_mode
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    cfg = parse_config(text, source=source)
    cfg.warnings = [f"{source}: {warning}" for warning in cfg.warnings]
    if mode & 0o007:
        cfg.warnings.append(f"{source}: the file is world accessible, and it holds a private key")
    return cfg
