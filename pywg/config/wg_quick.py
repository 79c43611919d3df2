"""wg-quick INI: ``[Interface]`` / ``[Peer]``, ``Key = Value``, ``#`` comments.

Keys match case-insensitively. Unknown keys are errors, as they are for wg(8). Of wg-quick's own
settings, MTU is applied and ``Table = auto`` (or ``main``) is what pywg does anyway; DNS, the
PreUp/PostUp/PreDown/PostDown hooks and ``SaveConfig = true`` are not applied, with one warning
each; any other Table (``off``, a table) is an error, since pywg would add the routes it forbids.
Errors start with the line and key (``line 9: [Peer] #2 AllowedIPs: ...``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from pywg.config.fields import (
    add_allowed_ip,
    append_address,
    check_across_fields,
    check_address_given,
    parse_address,
    parse_dns,
    parse_endpoint,
    parse_fwmark,
    parse_keepalive,
    parse_key,
    parse_listen_port,
    parse_mtu,
    show,
    show_name,
    unknown_key,
)
from pywg.config.model import ConfigError, InterfaceConfig, PeerConfig

_INI_INTERFACE = ("PrivateKey", "ListenPort", "FwMark", "Address", "DNS", "MTU")
_INI_PEER = ("PublicKey", "PresharedKey", "AllowedIPs", "Endpoint", "PersistentKeepalive")
_INI_LISTS = ("Address", "DNS", "AllowedIPs")  # comma-separated, and may repeat
_INI_HOOKS = ("PreUp", "PostUp", "PreDown", "PostDown")
_INI_WG_QUICK = ("Table", "SaveConfig", *_INI_HOOKS)  # wg-quick's own, read but not kept
_INI_TABLE_AS_PYWG = ("auto", "main")  # what pywg does: AllowedIPs routes in the main table
# What does what pywg does not: wg-quick itself, with pywg as its userspace implementation.
_WG_QUICK_WITH_PYWG = "`wg-quick up` with pywg-userspace as its WG_QUICK_USERSPACE_IMPLEMENTATION"


@dataclass
class _Section:
    kind: str  # "Interface" or "Peer"
    number: int  # 1-based count of sections of this kind
    line: int
    scalars: dict[str, tuple[str, int]] = field(default_factory=dict)
    lists: dict[str, list[tuple[str, int]]] = field(default_factory=dict)

    def where(self, key: str, line: int | None = None) -> str:
        title = "[Interface]" if self.kind == "Interface" else f"[Peer] #{self.number}"
        return f"line {self.line if line is None else line}: {title}{' ' + key if key else ''}"


def _ini_lines(text: str) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(text.split("\n"), start=1):  # wg(8) reads lines with getline
        line = raw.split("#", 1)[0].strip()
        if line:
            yield number, line


def _read_ini(text: str, warnings: list[str]) -> list[_Section]:
    sections: list[_Section] = []
    canonical = {
        "Interface": {name.casefold(): name for name in _INI_INTERFACE + _INI_WG_QUICK},
        "Peer": {name.casefold(): name for name in _INI_PEER},
    }
    for number, line in _ini_lines(text):
        if line.startswith("["):
            name = line[1:-1].strip().casefold() if line.endswith("]") else ""
            if name not in ("interface", "peer"):
                raise ConfigError(f"line {number}: {show(line)} is not [Interface] or [Peer]")
            kind = "Interface" if name == "interface" else "Peer"
            count = sum(1 for s in sections if s.kind == kind) + 1
            if kind == "Interface" and count > 1:
                raise ConfigError(f"line {number}: a second [Interface] section")
            sections.append(_Section(kind, count, number))
            continue
        key_text, equals, value = line.partition("=")
        key_text = "".join(key_text.split())
        if not equals or not key_text:
            raise ConfigError(f"line {number}: expected `Key = Value` or a [Section] header")
        if not sections:
            raise ConfigError(f"line {number}: {show_name(key_text)} comes before any [Interface] or [Peer]")
        section = sections[-1]
        key = canonical[section.kind].get(key_text.casefold())
        if key is None:
            if section.kind == "Interface":
                problem = unknown_key(
                    key_text, _INI_INTERFACE + _INI_WG_QUICK, _INI_PEER, "it belongs in [Peer]"
                )
            else:
                problem = unknown_key(
                    key_text, _INI_PEER, _INI_INTERFACE + _INI_WG_QUICK, "it belongs in [Interface]"
                )
            raise ConfigError(f"{section.where(show_name(key_text), number)}: {problem}")
        if key in _INI_WG_QUICK:
            _wg_quick_setting(key, value.strip(), section.where(key, number), warnings)
            continue
        value = "".join(value.split())  # wg(8) drops all whitespace from a line
        if key in _INI_LISTS:
            section.lists.setdefault(key, []).extend((item, number) for item in value.split(",") if value)
        elif key in section.scalars:
            first = section.scalars[key][1]
            raise ConfigError(f"{section.where(key, number)}: given twice (first on line {first})")
        else:
            section.scalars[key] = (value, number)
    return sections


def _wg_quick_setting(key: str, value: str, where: str, warnings: list[str]) -> None:
    """Table, SaveConfig and the hooks: what pywg does about each, as a warning or an error."""
    if key == "Table":
        if value.casefold() not in _INI_TABLE_AS_PYWG:
            raise ConfigError(
                f"{where}: {show(value)} is not supported: pywg routes every AllowedIPs prefix "
                "through the interface in the main table (Table = auto); remove the line, or use "
                f"{_WG_QUICK_WITH_PYWG}"
            )
    elif key == "SaveConfig":
        if value.casefold() == "true":
            warnings.append(f"{where}: pywg never writes the configuration back to the file; ignored")
    else:
        warnings.append(
            f"{where}: pywg does not run wg-quick's hook commands; not run ({_WG_QUICK_WITH_PYWG} runs them)"
        )


def parse_ini(text: str, require_address: bool) -> InterfaceConfig:
    warnings: list[str] = []
    sections = _read_ini(text, warnings)
    interfaces = [s for s in sections if s.kind == "Interface"]
    if not interfaces:
        raise ConfigError("no [Interface] section (expected a wg-quick INI file or a JSON object)")
    iface = interfaces[0]

    if "PrivateKey" not in iface.scalars:
        raise ConfigError(f"{iface.where('PrivateKey')}: required")
    value, line = iface.scalars["PrivateKey"]
    cfg = InterfaceConfig(private_key=parse_key(value, iface.where("PrivateKey", line)), warnings=warnings)
    for value, line in iface.lists.get("Address", []):
        where = iface.where("Address", line)
        append_address(cfg.addresses, parse_address(value, where), where)
    check_address_given(
        cfg.addresses, iface.where("Address"), "Address = 10.0.0.2/32", require_address, warnings
    )
    for value, line in iface.lists.get("DNS", []):
        cfg.dns.append(parse_dns(value, iface.where("DNS", line)))
    for line in sorted({line for _, line in iface.lists.get("DNS", [])}):
        warnings.append(
            f"{iface.where('DNS', line)}: pywg does not set name servers; ignored "
            f"({_WG_QUICK_WITH_PYWG} sets them)"
        )
    if "ListenPort" in iface.scalars:
        value, line = iface.scalars["ListenPort"]
        cfg.listen_port = parse_listen_port(value, iface.where("ListenPort", line))
    if "FwMark" in iface.scalars:
        value, line = iface.scalars["FwMark"]
        cfg.fwmark = parse_fwmark(value, iface.where("FwMark", line))
    mtu_where = iface.where("MTU")
    if "MTU" in iface.scalars:
        value, line = iface.scalars["MTU"]
        mtu_where = iface.where("MTU", line)
        cfg.mtu = parse_mtu(value, mtu_where)

    peer_sections = [s for s in sections if s.kind == "Peer"]
    for section in peer_sections:
        cfg.peers.append(_parse_ini_peer(section, warnings))

    ini_names = {"publicKey": "PublicKey", "allowedIPs": "AllowedIPs"}

    def peer_where(i: int, name: str) -> str:
        section = peer_sections[i]
        if not name:
            return f"[Peer] #{section.number} (line {section.line})"
        key = ini_names.get(name, name)
        line = section.scalars["PublicKey"][1] if key == "PublicKey" else None
        return section.where(key, line)

    return check_across_fields(cfg, mtu_where, peer_where)


def _parse_ini_peer(section: _Section, warnings: list[str]) -> PeerConfig:
    if "PublicKey" not in section.scalars:
        raise ConfigError(f"{section.where('PublicKey')}: required")
    value, line = section.scalars["PublicKey"]
    peer = PeerConfig(public_key=parse_key(value, section.where("PublicKey", line)))
    if "PresharedKey" in section.scalars:
        value, line = section.scalars["PresharedKey"]
        peer.preshared_key = parse_key(value, section.where("PresharedKey", line)) if value else None
    if "Endpoint" in section.scalars:
        value, line = section.scalars["Endpoint"]
        peer.endpoint = parse_endpoint(value, section.where("Endpoint", line)) if value else None
    for value, line in section.lists.get("AllowedIPs", []):
        add_allowed_ip(peer, value, section.where("AllowedIPs", line), warnings)
    if "PersistentKeepalive" in section.scalars:
        value, line = section.scalars["PersistentKeepalive"]
        peer.persistent_keepalive = parse_keepalive(value, section.where("PersistentKeepalive", line))
    return peer
