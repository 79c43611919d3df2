"""The `pywg` command line without running tunnels: what its help says, against the README and the code.

(tests/test_cli_up.py runs the commands as root in network namespaces; tests/test_keys.py the key ones.)
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from pywg.cli import CommandError, build_parser
from pywg.cli.parser import DEFAULT_INTERFACE, DROP_REASONS, default_interface
from pywg.core.device import _DROP_REASON
from pywg.runtime.tun_offload import TUN_DROP_REASONS

REPO = Path(__file__).resolve().parent.parent
TUNNEL_COMMANDS = ("up", "down", "reload", "stats")


def _subcommand(name: str) -> argparse.ArgumentParser:
    (action,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    parser = action.choices[name]
    assert isinstance(parser, argparse.ArgumentParser)
    return parser


def _one_spaced(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("command", TUNNEL_COMMANDS)
def test_the_readme_gives_each_command_as_its_help_does(command: str) -> None:
    """The synopsis in `pywg COMMAND --help` (without -h) is written in the README."""
    usage = _one_spaced(_subcommand(command).format_usage()).removeprefix("usage: ").replace(" [-h]", "")
    readme = _one_spaced((REPO / "README.md").read_text())
    assert f"`{usage}`" in readme, f"README.md lacks `{usage}`"


def test_up_help_names_every_argument_as_the_readme_does() -> None:
    text = _one_spaced(_subcommand("up").format_help())
    for metavar in ("CONFIG", "--interface IFNAME", "--netns NS", "--name NAME"):
        assert metavar in text
    assert f"{DEFAULT_INTERFACE} for any other file" in text and "wg0 for a wg-quick file wg0.conf" in text
    assert "the UDP socket stays in the namespace pywg up runs in" in text


def test_every_drop_reason_the_code_counts_is_explained() -> None:
    counted = set(_DROP_REASON.values()) | set(TUN_DROP_REASONS.values())
    for path in (REPO / "pywg").rglob("*.py"):
        counted |= set(re.findall(r'count_drop\(\s*"([a-z_]+)"', path.read_text()))
    assert counted, "found no drop reasons in the code"
    assert sorted(counted - set(DROP_REASONS)) == []
    assert sorted(set(DROP_REASONS) - counted) == [], "explained but never counted"
    help_text = _subcommand("stats").format_help()
    for reason, explanation in DROP_REASONS.items():
        assert f"{reason}  " in help_text and explanation in help_text


@pytest.mark.parametrize(
    ("config", "interface"),
    [("/etc/wireguard/wg0.conf", "wg0"), ("corp-vpn.conf", "corp-vpn"), ("config.json", DEFAULT_INTERFACE)],
)
def test_without_interface_a_wg_quick_file_names_it_as_wg_quick_does(config: str, interface: str) -> None:
    assert default_interface(config) == interface


@pytest.mark.parametrize("config", ["a-much-too-long-name.conf", "my vpn.conf", "/etc/wireguard/.conf"])
def test_a_wg_quick_file_that_cannot_name_an_interface_asks_for_one(config: str) -> None:
    with pytest.raises(CommandError, match=r"give one with --interface$"):
        default_interface(config)
