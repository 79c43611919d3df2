"""Interface configuration: the model, and parsers for wg-quick INI and wireguard-cni JSON.

Two formats are read, told apart by content (`parse_config`):

* JSON, the `config.json` that schu/wireguard-cni users keep in a Kubernetes Secret
  (``{"address": ..., "privateKey": ..., "peers": [{"endpoint", "publicKey", "allowedIPs",
  "persistentKeepalive": "25s"}]}``), extended with a list of addresses, ``listenPort``,
  ``mtu``, ``fwmark`` and ``peers[].presharedKey``. Keys match case-insensitively and a repeated
  key's last value wins, as with Go's encoding/json. An unknown key is an error naming the
  nearest known one: a misspelt ``allowedIP`` must not leave a peer without allowed IPs.
* wg-quick INI (``[Interface]`` / ``[Peer]``, ``Key = Value``, ``#`` comments, keys matched
  case-insensitively). Unknown keys are errors, as they are for wg(8). Of wg-quick's own
  settings, MTU is applied and ``Table = auto`` (or ``main``) is what pywg does anyway; DNS,
  the PreUp/PostUp/PreDown/PostDown hooks and ``SaveConfig = true`` are not applied, with one
  warning each; any other Table (``off``, a table) is an error, since pywg would add the routes
  it forbids.

A configuration without an address is refused with ``require_address`` (the CNI's case: a Pod's
interface needs one) and otherwise warned about, saying what follows.

This module is pure: it opens no sockets and resolves no names (an endpoint keeps its host
name; the runtime resolves it). `load_config` is the only function that touches a file.

Every error is a `ConfigError` whose message starts with where the problem is: a JSON path
(``peers[0].allowedIPs[1]: ...``) or an INI line and key (``line 9: [Peer] #2 AllowedIPs: ...``).
Messages never contain key material: key fields are never echoed, and any other echoed value
that looks like a key is hidden.
"""

from __future__ import annotations

import base64
import difflib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
    ip_address,
)
from pathlib import Path
from typing import Any

from pywg.core import KeyFormatError, decode_key
from pywg.core.crypto import public_key as _derive_public_key

__all__ = [
    "ConfigError",
    "Endpoint",
    "InterfaceConfig",
    "PeerConfig",
    "format_wg_quick",
    "load_config",
    "parse_address",
    "parse_allowed_ip",
    "parse_config",
    "parse_endpoint",
    "parse_fwmark",
    "parse_keepalive",
    "to_json",
]

Address = IPv4Interface | IPv6Interface
Network = IPv4Network | IPv6Network

MAX_PORT = 0xFFFF
MAX_FWMARK = 0xFFFF_FFFF
MAX_KEEPALIVE = 0xFFFF  # seconds; a u16 on the wire (UAPI, netlink)
MIN_MTU_IPV4 = 576  # RFC 791: every IPv4 host must accept 576-byte datagrams
MIN_MTU_IPV6 = 1280  # RFC 8200 §5; Linux turns IPv6 off on a link below it
MAX_MTU = 65535


class ConfigError(ValueError):
    """A configuration is invalid. The message says where, and never contains key material."""


# --------------------------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class Endpoint:
    """A peer's UDP endpoint as configured: an IP literal or a host name, not yet resolved.

    IPv6 literals are stored without brackets (with a ``%scope`` if one was given).
    """

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass
class PeerConfig:
    public_key: bytes
    preshared_key: bytes | None = field(default=None, repr=False)
    endpoint: Endpoint | None = None
    allowed_ips: list[Network] = field(default_factory=list)
    persistent_keepalive: int = 0  # seconds, 0 = off


@dataclass
class InterfaceConfig:
    private_key: bytes = field(repr=False)
    addresses: list[Address] = field(default_factory=list)
    listen_port: int | None = None  # None: pick a free port
    mtu: int | None = None  # None: the runtime's default
    fwmark: int = 0  # 0 = off
    peers: list[PeerConfig] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)  # wg-quick INI only; kept (and warned about), not applied
    # Things the parser accepted but the user may want to know about (ignored keys, ...).
    warnings: list[str] = field(default_factory=list, compare=False)

    @property
    def public_key(self) -> bytes:
        return _derive_public_key(self.private_key)


# --------------------------------------------------------------------------------------------
# Showing values in messages


_KEY_LIKE = re.compile(r"[A-Za-z0-9+/=_-]{40,}")  # base64 (44) or hex (64) key text
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]{1,39}")


def _show(value: str) -> str:
    """A value for an error message: quoted, escaped, shortened, and hidden if key-like."""
    if _KEY_LIKE.search(value):
        return "(value hidden: it looks like key material)"
    if len(value) > 80:
        value = value[:60] + "…"
    return json.dumps(value)


def _refuse_key_like(text: str, where: str, what: str) -> None:
    """Refuse a key-like value whole, before a parser quotes parts of it in a message."""
    if _KEY_LIKE.search(text):
        raise ConfigError(f"{where}: {_show(text)} is not {what}")


def _show_name(name: str) -> str:
    return name if _PLAIN_NAME.fullmatch(name) else _show(name)


def _unknown_key(key: str, known: tuple[str, ...], elsewhere: tuple[str, ...], where_else: str) -> str:
    """ "unknown key", with the nearest known name (or where the key belongs) if there is one."""
    canonical = {name.casefold(): name for name in known}
    if _KEY_LIKE.search(key):
        return "unknown key"
    if key.casefold() in {name.casefold() for name in elsewhere}:
        return f"unknown key here ({where_else})"
    nearest = difflib.get_close_matches(key.casefold(), canonical, n=1, cutoff=0.6)
    return f"unknown key; did you mean {canonical[nearest[0]]}?" if nearest else "unknown key"


# --------------------------------------------------------------------------------------------
# One rule per value. `where` names the field; every error message starts with it.


def _parse_key(text: str, where: str) -> bytes:
    """A base64 key as wg accepts it; whitespace around it is forgiven (Secrets often have a newline)."""
    try:
        return decode_key(text.strip(), where)
    except KeyFormatError as exc:  # its message names the field and never the key
        raise ConfigError(str(exc)) from None


_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() and int() also take other scripts' digits
_HEX = re.compile(r"0[xX][0-9a-fA-F]+")


def _parse_uint(text: str, where: str, what: str, low: int, high: int) -> int:
    text = text.strip()
    if not _DIGITS.fullmatch(text):
        raise ConfigError(f"{where}: {_show(text)} is not {what}")
    if len(text.lstrip("0")) > 20:  # keeps int() cheap; far above any limit used here
        raise ConfigError(f"{where}: {_show(text)} is out of range {low}..{high}")
    return _check_range(int(text), where, low, high)


def _check_range(value: int, where: str, low: int, high: int) -> int:
    if not low <= value <= high:
        shown = str(value) if abs(value) < 10**20 else "the number"
        raise ConfigError(f"{where}: {shown} is out of range {low}..{high}")
    return value


def _split_prefix(text: str, where: str, what: str) -> tuple[IPv4Address | IPv6Address, int | None]:
    """`addr` or `addr/len`, with the reason spelled out when it is neither."""
    text = text.strip()
    if not text:
        raise ConfigError(f"{where}: is empty")
    _refuse_key_like(text, where, what)
    if "," in text:
        raise ConfigError(f"{where}: {_show(text)} is not {what} (one per entry; use a list for several)")
    addr_text, slash, len_text = text.partition("/")
    if "%" in addr_text:
        raise ConfigError(f"{where}: {_show(text)} is not {what} (a scope id is not allowed here)")
    try:
        addr = ip_address(addr_text)
    except ValueError:
        raise ConfigError(
            f"{where}: {_show(text)} is not {what} ({_show(addr_text)} is not an IPv4 or IPv6 address)"
        ) from None
    if not slash:
        return addr, None
    if not _DIGITS.fullmatch(len_text):
        raise ConfigError(
            f"{where}: {_show(text)} is not {what} (prefix length {_show(len_text)} is not a number)"
        )
    prefix = int(len_text) if len(len_text) <= 3 else 1000  # no int() of a huge digit string
    if prefix > addr.max_prefixlen:
        raise ConfigError(
            f"{where}: {_show(text)} is not {what} (prefix length {len_text} > {addr.max_prefixlen})"
        )
    return addr, prefix


def parse_address(text: str, where: str = "address") -> Address:
    """An interface address, ``10.1.2.3/24``; without a prefix length it is a /32 or /128."""
    addr, prefix = _split_prefix(text, where, "an interface address")
    if prefix is None:
        prefix = addr.max_prefixlen
    return IPv4Interface((addr, prefix)) if addr.version == 4 else IPv6Interface((addr, prefix))


def _parse_network(text: str, where: str) -> tuple[Network, bool]:
    """An allowed-IPs entry, and whether it had host bits set (wg masks them off silently)."""
    addr, prefix = _split_prefix(text, where, "an IP network")
    if prefix is None:
        prefix = addr.max_prefixlen
    cls = IPv4Network if addr.version == 4 else IPv6Network
    network = cls((addr, prefix), strict=False)
    return network, network.network_address != addr


def parse_allowed_ip(text: str, where: str = "allowedIPs") -> Network:
    """An allowed-IPs entry, ``10.9.0.0/24``; host bits are masked off, as wg does."""
    return _parse_network(text, where)[0]


_SCOPE = re.compile(r"[A-Za-z0-9_.-]{1,15}")  # IFNAMSIZ - 1, or a number
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*")


def _check_host_name(host: str, where: str) -> str:
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ConfigError(f"{where}: {_show(host)} is not an IP address or a valid host name")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        # getaddrinfo would read "10.1" or "0x7f.1" as an IPv4 address in inet_aton's old forms.
        raise ConfigError(f"{where}: {_show(host)} is not a valid IPv4 address (nor a host name)")
    return host


def parse_endpoint(text: str, where: str = "endpoint") -> Endpoint:
    """``host:port``, ``1.2.3.4:port`` or ``[v6]:port``; host names are checked, not resolved."""
    text = text.strip()
    if not text:
        raise ConfigError(f"{where}: is empty")
    _refuse_key_like(text, where, "an endpoint")
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise ConfigError(f"{where}: {_show(text)} has no closing bracket")
        if not rest.startswith(":"):
            raise ConfigError(f"{where}: {_show(text)} has no port (write [address]:port)")
        port_text = rest[1:]
        try:
            host = str(IPv6Address(host))
        except ValueError:
            raise ConfigError(f"{where}: {_show(text)}: only an IPv6 address goes in brackets") from None
        _, percent, scope = host.partition("%")
        if percent and not _SCOPE.fullmatch(scope):
            raise ConfigError(f"{where}: {_show(text)}: the scope must be an interface name or number")
    else:
        if text.count(":") > 1:
            raise ConfigError(
                f"{where}: {_show(text)}: an IPv6 address must be in brackets, as in [2001:db8::1]:51820"
            )
        host, colon, port_text = text.rpartition(":")
        if not colon:
            raise ConfigError(f"{where}: {_show(text)} has no port (write host:port)")
        try:
            host = str(IPv4Address(host))
        except ValueError:
            host = _check_host_name(host, where)
    if not _DIGITS.fullmatch(port_text):
        raise ConfigError(f"{where}: {_show(text)}: the port {_show(port_text)} is not a number")
    if len(port_text) > 5 or not 1 <= int(port_text) <= MAX_PORT:
        raise ConfigError(f"{where}: {_show(text)}: the port is out of range 1..{MAX_PORT}")
    return Endpoint(host, int(port_text))


# Go's time.ParseDuration, in nanoseconds per unit.
_GO_UNITS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # µ, micro sign
    "\u03bcs": 1_000,  # μ, Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_GO_COMPONENT = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")
_SECOND = 1_000_000_000


def _parse_go_duration(text: str) -> int | None:
    """Nanoseconds, as Go's time.ParseDuration gives them, or None if it would refuse the text."""
    sign = 1
    if text.startswith(("+", "-")):
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if text == "0":
        return 0
    if not text or len(text) > 64:  # also keeps int() below cheap
        return None
    total = 0
    pos = 0
    while pos < len(text):
        match = _GO_COMPONENT.match(text, pos)
        assert match is not None  # every part of the pattern may be empty
        whole, frac, unit = match.group(1), match.group(2) or "", match.group(3)
        if (not whole and not frac) or unit not in _GO_UNITS:
            return None
        scale = _GO_UNITS[unit]
        total += int(whole or "0") * scale + int(frac or "0") * scale // 10 ** len(frac)
        pos = match.end()
    return sign * total


def parse_keepalive(value: str | int, where: str = "persistentKeepalive") -> int:
    """Persistent keepalive in whole seconds, 0..65535 (0 = off).

    Accepts an integer; a decimal string; ``off``, ``0`` or the empty string (all off); or a Go
    duration string as wireguard-cni uses (``25s``, ``1m30s``, ``1h``). A duration must be a
    whole number of seconds: ``1500ms`` is refused rather than truncated to 1 s (what wgctrl
    does) or rounded, since the keepalive has one-second resolution on every WireGuard.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(f"{where}: expected seconds or a duration string")
    if isinstance(value, int):
        return _check_range(value, where, 0, MAX_KEEPALIVE)
    text = value.strip()
    if text.casefold() in ("", "off"):
        return 0
    if _DIGITS.fullmatch(text):
        return _parse_uint(text, where, "a number", 0, MAX_KEEPALIVE)
    nanoseconds = _parse_go_duration(text)
    if nanoseconds is None:
        raise ConfigError(
            f'{where}: {_show(text)} is neither a number of seconds nor a duration like "25s" or "1m30s"'
        )
    if nanoseconds < 0:
        raise ConfigError(f"{where}: {_show(text)} is negative")
    seconds, rest = divmod(nanoseconds, _SECOND)
    if rest:
        raise ConfigError(
            f"{where}: {_show(text)} is not a whole number of seconds (keepalive has 1 s resolution)"
        )
    if seconds > MAX_KEEPALIVE:
        raise ConfigError(f"{where}: {_show(text)} is {seconds} s, above the maximum {MAX_KEEPALIVE} s")
    return seconds


def parse_fwmark(value: str | int, where: str = "fwmark") -> int:
    """A firewall mark, 0..2**32-1: an integer, a decimal or ``0x`` hex string, or ``off``."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(f"{where}: expected an integer or a 0x... string")
    if isinstance(value, int):
        return _check_range(value, where, 0, MAX_FWMARK)
    text = value.strip()
    if text.casefold() == "off":
        return 0
    if _HEX.fullmatch(text):
        if len(text) > 2 + 16:
            raise ConfigError(f"{where}: {_show(text)} is out of range 0..{MAX_FWMARK}")
        return _check_range(int(text, 16), where, 0, MAX_FWMARK)
    if len(text) > 1 and text.startswith("0") and _DIGITS.fullmatch(text):
        # wg(8) reads a leading 0 as octal; refuse rather than guess.
        raise ConfigError(f"{where}: {_show(text)} is ambiguous (octal?); write decimal or 0x hex")
    return _parse_uint(text, where, "a number (decimal or 0x hex)", 0, MAX_FWMARK)


def _parse_listen_port(value: str | int, where: str) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        port = _check_range(value, where, 0, MAX_PORT)
    elif isinstance(value, str):
        port = _parse_uint(value, where, "a port number", 0, MAX_PORT)
    else:
        raise ConfigError(f"{where}: expected a port number")
    return port or None  # 0 asks for a random port, as no port at all does


def _parse_mtu(value: str | int, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return _check_range(value, where, MIN_MTU_IPV4, MAX_MTU)
    if isinstance(value, str):
        return _parse_uint(value, where, "a number", MIN_MTU_IPV4, MAX_MTU)
    raise ConfigError(f"{where}: expected an integer")


def _parse_dns(text: str, where: str) -> str:
    """A name server (IP address) or a search domain, as wg-quick sorts DNS= entries."""
    text = text.strip()
    try:
        return str(ip_address(text))
    except ValueError:
        return _check_host_name(text, where)


def _append_address(addresses: list[Address], address: Address, where: str) -> None:
    if any(a.ip == address.ip for a in addresses):
        raise ConfigError(f"{where}: {address.ip} is given twice")
    addresses.append(address)


# --------------------------------------------------------------------------------------------
# Checks across fields, shared by both formats. The callers pass how to name each place.


def _finish(
    cfg: InterfaceConfig,
    mtu_where: str,
    peer_where: Callable[[int, str], str],
) -> InterfaceConfig:
    """Cross-field checks; `peer_where(i, field)` names a field of peer i (0-based), or with
    field "" the peer itself."""
    has_ipv6 = any(a.version == 6 for a in cfg.addresses)
    if cfg.mtu is not None and has_ipv6 and cfg.mtu < MIN_MTU_IPV6:
        raise ConfigError(
            f"{mtu_where}: {cfg.mtu} is below {MIN_MTU_IPV6}, the minimum for a link with an IPv6 address"
        )
    own_public = cfg.public_key
    owners: dict[bytes, int] = {}
    routed: dict[Network, int] = {}
    for i, peer in enumerate(cfg.peers):
        if peer.public_key == own_public:
            raise ConfigError(f"{peer_where(i, 'publicKey')}: is this interface's own public key")
        if peer.public_key in owners:
            first = peer_where(owners[peer.public_key], "")
            raise ConfigError(f"{peer_where(i, 'publicKey')}: the same public key as {first}")
        owners[peer.public_key] = i
        for network in peer.allowed_ips:
            if routed.get(network, i) != i:
                cfg.warnings.append(
                    f"{peer_where(i, 'allowedIPs')}: {network} is also allowed for "
                    f"{peer_where(routed[network], '')}; WireGuard gives it to the later peer"
                )
            routed[network] = i
            if cfg.mtu is not None and network.version == 6 and cfg.mtu < MIN_MTU_IPV6:
                cfg.warnings.append(
                    f"{peer_where(i, 'allowedIPs')}: {network} is IPv6 but the MTU {cfg.mtu} is below "
                    f"{MIN_MTU_IPV6}; Linux carries no IPv6 on such a link"
                )
    return cfg


def _add_allowed_ip(peer: PeerConfig, text: str, where: str, warnings: list[str]) -> None:
    network, had_host_bits = _parse_network(text, where)
    if had_host_bits:
        warnings.append(f"{where}: {_show(text.strip())} has host bits set; using {network}")
    if network not in peer.allowed_ips:
        peer.allowed_ips.append(network)


# --------------------------------------------------------------------------------------------
# JSON (wireguard-cni's config.json)


class _JsonObject:
    """A JSON object as its key/value pairs in order, so repeated keys are seen."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        self.pairs = pairs


_JSON_TOP = ("address", "privateKey", "listenPort", "mtu", "fwmark", "peers")
_JSON_PEER = ("endpoint", "publicKey", "presharedKey", "allowedIPs", "persistentKeepalive")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _wrong_type(where: str, expected: str, value: object) -> ConfigError:
    return ConfigError(f"{where}: expected {expected}, got {_json_type(value)}")


def _json_fields(
    obj: _JsonObject, prefix: str, known: tuple[str, ...], warnings: list[str]
) -> dict[str, Any]:
    """Known keys matched case-insensitively (as Go does); the last of repeated keys wins.

    null counts as absent (Go leaves the field alone). An unknown key is an error.
    """
    canonical = {name.casefold(): name for name in known}
    fields: dict[str, Any] = {}
    seen: set[str] = set()
    for key, value in obj.pairs:
        name = canonical.get(key.casefold())
        if name is None:
            if known is _JSON_PEER:
                problem = _unknown_key(key, known, _JSON_TOP, "it belongs at the top level")
            else:
                problem = _unknown_key(key, known, _JSON_PEER, "it belongs in each entry of peers")
            raise ConfigError(f"{prefix}{_show_name(key)}: {problem}")
        if name in seen:
            warnings.append(f"{prefix}{name}: given more than once; the last one is used")
        seen.add(name)
        if value is not None:
            fields[name] = value
    return fields


def _json_str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise _wrong_type(where, "a string", value)
    return value


def _json_list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _wrong_type(where, "an array", value)
    return value


def _json_uint_or_str(value: object, where: str) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _wrong_type(where, "an integer", value)
    return value


def _parse_json(text: str, require_address: bool) -> InterfaceConfig:
    try:
        doc = json.loads(text, object_pairs_hook=_JsonObject)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise ConfigError("invalid JSON: nested too deeply") from None
    except ValueError:  # e.g. a number with more digits than int() accepts
        raise ConfigError("invalid JSON: a number is too long") from None
    if not isinstance(doc, _JsonObject):
        raise _wrong_type("top level", "an object", doc)

    warnings: list[str] = []
    top = _json_fields(doc, "", _JSON_TOP, warnings)
    if "privateKey" not in top:
        raise ConfigError("privateKey: required")
    private_key = _parse_key(_json_str(top["privateKey"], "privateKey"), "privateKey")

    addresses: list[Address] = []
    raw_address = top.get("address", [])
    if isinstance(raw_address, str):
        addresses.append(parse_address(raw_address, "address"))
    elif isinstance(raw_address, list):
        for j, item in enumerate(raw_address):
            where = f"address[{j}]"
            _append_address(addresses, parse_address(_json_str(item, where), where), where)
    else:
        raise _wrong_type("address", "a string or an array of strings", raw_address)
    _check_address_given(addresses, "address", '"address": "10.0.0.2/32"', require_address, warnings)

    cfg = InterfaceConfig(private_key=private_key, addresses=addresses, warnings=warnings)
    if "listenPort" in top:
        cfg.listen_port = _parse_listen_port(_json_uint_or_str(top["listenPort"], "listenPort"), "listenPort")
    if "mtu" in top:
        cfg.mtu = _parse_mtu(_json_uint_or_str(top["mtu"], "mtu"), "mtu")
    if "fwmark" in top:
        cfg.fwmark = parse_fwmark(_json_uint_or_str(top["fwmark"], "fwmark"), "fwmark")

    for i, raw_peer in enumerate(_json_list(top.get("peers", []), "peers")):
        cfg.peers.append(_parse_json_peer(raw_peer, f"peers[{i}]", warnings))

    def peer_where(i: int, name: str) -> str:
        return f"peers[{i}].{name}" if name else f"peers[{i}]"

    return _finish(cfg, "mtu", peer_where)


def _parse_json_peer(raw: object, prefix: str, warnings: list[str]) -> PeerConfig:
    if not isinstance(raw, _JsonObject):
        raise _wrong_type(prefix, "an object", raw)
    fields = _json_fields(raw, prefix + ".", _JSON_PEER, warnings)
    if "publicKey" not in fields:
        raise ConfigError(f"{prefix}.publicKey: required")
    where = f"{prefix}.publicKey"
    peer = PeerConfig(public_key=_parse_key(_json_str(fields["publicKey"], where), where))
    if "presharedKey" in fields:
        where = f"{prefix}.presharedKey"
        psk = _json_str(fields["presharedKey"], where)
        peer.preshared_key = _parse_key(psk, where) if psk.strip() else None
    if "endpoint" in fields:
        where = f"{prefix}.endpoint"
        endpoint = _json_str(fields["endpoint"], where)
        peer.endpoint = parse_endpoint(endpoint, where) if endpoint.strip() else None
    for j, item in enumerate(_json_list(fields.get("allowedIPs", []), f"{prefix}.allowedIPs")):
        where = f"{prefix}.allowedIPs[{j}]"
        _add_allowed_ip(peer, _json_str(item, where), where, warnings)
    if "persistentKeepalive" in fields:
        where = f"{prefix}.persistentKeepalive"
        value = fields["persistentKeepalive"]
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise _wrong_type(where, 'seconds or a duration string like "25s"', value)
        peer.persistent_keepalive = parse_keepalive(value, where)
    return peer


# --------------------------------------------------------------------------------------------
# wg-quick INI

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
                raise ConfigError(f"line {number}: {_show(line)} is not [Interface] or [Peer]")
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
            raise ConfigError(f"line {number}: {_show_name(key_text)} comes before any [Interface] or [Peer]")
        section = sections[-1]
        key = canonical[section.kind].get(key_text.casefold())
        if key is None:
            if section.kind == "Interface":
                problem = _unknown_key(
                    key_text, _INI_INTERFACE + _INI_WG_QUICK, _INI_PEER, "it belongs in [Peer]"
                )
            else:
                problem = _unknown_key(
                    key_text, _INI_PEER, _INI_INTERFACE + _INI_WG_QUICK, "it belongs in [Interface]"
                )
            raise ConfigError(f"{section.where(_show_name(key_text), number)}: {problem}")
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
                f"{where}: {_show(value)} is not supported: pywg routes every AllowedIPs prefix "
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


def _check_address_given(
    addresses: list[Address], where: str, example: str, require: bool, warnings: list[str]
) -> None:
    if addresses:
        return
    if require:
        raise ConfigError(f"{where}: required: the interface needs an address (e.g. {example})")
    warnings.append(
        f"{where}: none given: the interface gets no IP address, so what it sends carries another "
        f"interface's source address, which the peers' AllowedIPs most likely refuse (add e.g. {example})"
    )


def _parse_ini(text: str, require_address: bool) -> InterfaceConfig:
    warnings: list[str] = []
    sections = _read_ini(text, warnings)
    interfaces = [s for s in sections if s.kind == "Interface"]
    if not interfaces:
        raise ConfigError("no [Interface] section (expected a wg-quick INI file or a JSON object)")
    iface = interfaces[0]

    if "PrivateKey" not in iface.scalars:
        raise ConfigError(f"{iface.where('PrivateKey')}: required")
    value, line = iface.scalars["PrivateKey"]
    cfg = InterfaceConfig(private_key=_parse_key(value, iface.where("PrivateKey", line)), warnings=warnings)
    for value, line in iface.lists.get("Address", []):
        where = iface.where("Address", line)
        _append_address(cfg.addresses, parse_address(value, where), where)
    _check_address_given(
        cfg.addresses, iface.where("Address"), "Address = 10.0.0.2/32", require_address, warnings
    )
    for value, line in iface.lists.get("DNS", []):
        cfg.dns.append(_parse_dns(value, iface.where("DNS", line)))
    for line in sorted({line for _, line in iface.lists.get("DNS", [])}):
        warnings.append(
            f"{iface.where('DNS', line)}: pywg does not set name servers; ignored "
            f"({_WG_QUICK_WITH_PYWG} sets them)"
        )
    if "ListenPort" in iface.scalars:
        value, line = iface.scalars["ListenPort"]
        cfg.listen_port = _parse_listen_port(value, iface.where("ListenPort", line))
    if "FwMark" in iface.scalars:
        value, line = iface.scalars["FwMark"]
        cfg.fwmark = parse_fwmark(value, iface.where("FwMark", line))
    mtu_where = iface.where("MTU")
    if "MTU" in iface.scalars:
        value, line = iface.scalars["MTU"]
        mtu_where = iface.where("MTU", line)
        cfg.mtu = _parse_mtu(value, mtu_where)

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

    return _finish(cfg, mtu_where, peer_where)


def _parse_ini_peer(section: _Section, warnings: list[str]) -> PeerConfig:
    if "PublicKey" not in section.scalars:
        raise ConfigError(f"{section.where('PublicKey')}: required")
    value, line = section.scalars["PublicKey"]
    peer = PeerConfig(public_key=_parse_key(value, section.where("PublicKey", line)))
    if "PresharedKey" in section.scalars:
        value, line = section.scalars["PresharedKey"]
        peer.preshared_key = _parse_key(value, section.where("PresharedKey", line)) if value else None
    if "Endpoint" in section.scalars:
        value, line = section.scalars["Endpoint"]
        peer.endpoint = parse_endpoint(value, section.where("Endpoint", line)) if value else None
    for value, line in section.lists.get("AllowedIPs", []):
        _add_allowed_ip(peer, value, section.where("AllowedIPs", line), warnings)
    if "PersistentKeepalive" in section.scalars:
        value, line = section.scalars["PersistentKeepalive"]
        peer.persistent_keepalive = parse_keepalive(value, section.where("PersistentKeepalive", line))
    return peer


# --------------------------------------------------------------------------------------------
# Entry points


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
        return _parse_json(body, require_address) if is_json else _parse_ini(body, require_address)
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


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def _format_duration(seconds: int) -> str:
    """Seconds as Go's Duration.String() writes them: 25s, 1m30s, 1h0m5s."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def format_wg_quick(cfg: InterfaceConfig) -> str:
    """The configuration as a wg-quick INI file (with the private key in it)."""
    lines = ["[Interface]", f"PrivateKey = {_b64(cfg.private_key)}"]
    if cfg.addresses:
        lines.append("Address = " + ", ".join(str(a) for a in cfg.addresses))
    if cfg.listen_port is not None:
        lines.append(f"ListenPort = {cfg.listen_port}")
    if cfg.fwmark:
        lines.append(f"FwMark = 0x{cfg.fwmark:x}")
    if cfg.mtu is not None:
        lines.append(f"MTU = {cfg.mtu}")
    if cfg.dns:
        lines.append("DNS = " + ", ".join(cfg.dns))
    for peer in cfg.peers:
        lines += ["", "[Peer]", f"PublicKey = {_b64(peer.public_key)}"]
        if peer.preshared_key is not None:
            lines.append(f"PresharedKey = {_b64(peer.preshared_key)}")
        if peer.allowed_ips:
            lines.append("AllowedIPs = " + ", ".join(str(n) for n in peer.allowed_ips))
        if peer.endpoint is not None:
            lines.append(f"Endpoint = {peer.endpoint}")
        if peer.persistent_keepalive:
            lines.append(f"PersistentKeepalive = {peer.persistent_keepalive}")
    return "\n".join(lines) + "\n"


def to_json(cfg: InterfaceConfig) -> str:
    """The configuration as wireguard-cni JSON (with the private key in it).

    One address is written as a string and a keepalive as a Go duration, so the output also
    works with schu/wireguard-cni when it uses nothing that plugin lacks. `dns` is not written.
    """
    doc: dict[str, Any] = {}
    if len(cfg.addresses) == 1:
        doc["address"] = str(cfg.addresses[0])
    elif cfg.addresses:
        doc["address"] = [str(a) for a in cfg.addresses]
    doc["privateKey"] = _b64(cfg.private_key)
    if cfg.listen_port is not None:
        doc["listenPort"] = cfg.listen_port
    if cfg.mtu is not None:
        doc["mtu"] = cfg.mtu
    if cfg.fwmark:
        doc["fwmark"] = f"0x{cfg.fwmark:x}"
    peers = []
    for peer in cfg.peers:
        entry: dict[str, Any] = {}
        if peer.endpoint is not None:
            entry["endpoint"] = str(peer.endpoint)
        entry["publicKey"] = _b64(peer.public_key)
        if peer.preshared_key is not None:
            entry["presharedKey"] = _b64(peer.preshared_key)
        entry["allowedIPs"] = [str(n) for n in peer.allowed_ips]
        if peer.persistent_keepalive:
            entry["persistentKeepalive"] = _format_duration(peer.persistent_keepalive)
        peers.append(entry)
    doc["peers"] = peers
    return json.dumps(doc, indent=2) + "\n"
