"""One rule per value, shared by both formats, and how values are shown in messages.

`where` names the field; every error message starts with it. Messages never contain key
material: key fields are never echoed, and any other echoed value that looks like a key is hidden.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
    ip_address,
)

from pywg.config.model import (
    MAX_FWMARK,
    MAX_KEEPALIVE,
    MAX_MTU,
    MAX_PORT,
    MIN_MTU_IPV4,
    MIN_MTU_IPV6,
    Address,
    ConfigError,
    EndpointSpec,
    InterfaceConfig,
    Network,
    PeerConfig,
)
from pywg.core import KeyFormatError, decode_key

# --------------------------------------------------------------------------------------------
# Showing values in messages


_KEY_LIKE = re.compile(r"[A-Za-z0-9+/=_-]{40,}")  # base64 (44) or hex (64) key text
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]{1,39}")


def show(value: str) -> str:
    """A value for an error message: quoted, escaped, shortened, and hidden if key-like."""
    if _KEY_LIKE.search(value):
        return "(value hidden: it looks like key material)"
    if len(value) > 80:
        value = value[:60] + "…"
    return json.dumps(value)


def _refuse_key_like(text: str, where: str, what: str) -> None:
    """Refuse a key-like value whole, before a parser quotes parts of it in a message."""
    if _KEY_LIKE.search(text):
        raise ConfigError(f"{where}: {show(text)} is not {what}")


def show_name(name: str) -> str:
    return name if _PLAIN_NAME.fullmatch(name) else show(name)


def unknown_key(key: str, known: tuple[str, ...], elsewhere: tuple[str, ...], where_else: str) -> str:
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


def parse_key(text: str, where: str) -> bytes:
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
        raise ConfigError(f"{where}: {show(text)} is not {what}")
    if len(text.lstrip("0")) > 20:  # keeps int() cheap; far above any limit used here
        raise ConfigError(f"{where}: {show(text)} is out of range {low}..{high}")
    return _check_range(int(text), where, low, high)


def _check_range(value: int, where: str, low: int, high: int) -> int:
    if not low <= value <= high:
        shown = str(value) if abs(value) < 10**20 else "the number"
        raise ConfigError(f"{where}: {shown} is out of range {low}..{high}")
    return value


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")


def _ipv4(text: str) -> IPv4Address | None:
    """A dotted quad as ipaddress reads it (no leading zeros), ~5x quicker; None for anything else.

    A hub's Secret has thousands of allowed IPs, parsed in the node agent that forwards every Pod's
    packets."""
    if not _DOTTED_QUAD.fullmatch(text):
        return None
    a, b, c, d = text.split(".")
    return IPv4Address(int(a) << 24 | int(b) << 16 | int(c) << 8 | int(d))


def _split_prefix(text: str, where: str, what: str) -> tuple[IPv4Address | IPv6Address, int | None]:
    """`addr` or `addr/len`, with the reason spelled out when it is neither."""
    text = text.strip()
    if not text:
        raise ConfigError(f"{where}: is empty")
    _refuse_key_like(text, where, what)
    if "," in text:
        raise ConfigError(f"{where}: {show(text)} is not {what} (one per entry; use a list for several)")
    addr_text, slash, len_text = text.partition("/")
    if "%" in addr_text:
        raise ConfigError(f"{where}: {show(text)} is not {what} (a scope id is not allowed here)")
    try:
        addr = _ipv4(addr_text) or ip_address(addr_text)
    except ValueError:
        raise ConfigError(
            f"{where}: {show(text)} is not {what} ({show(addr_text)} is not an IPv4 or IPv6 address)"
        ) from None
    if not slash:
        return addr, None
    if not _DIGITS.fullmatch(len_text):
        raise ConfigError(
            f"{where}: {show(text)} is not {what} (prefix length {show(len_text)} is not a number)"
        )
    prefix = int(len_text) if len(len_text) <= 3 else 1000  # no int() of a huge digit string
    if prefix > addr.max_prefixlen:
        raise ConfigError(
            f"{where}: {show(text)} is not {what} (prefix length {len_text} > {addr.max_prefixlen})"
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
        raise ConfigError(f"{where}: {show(host)} is not an IP address or a valid host name")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        # getaddrinfo would read "10.1" or "0x7f.1" as an IPv4 address in inet_aton's old forms.
        raise ConfigError(f"{where}: {show(host)} is not a valid IPv4 address (nor a host name)")
    return host


def parse_endpoint(text: str, where: str = "endpoint") -> EndpointSpec:
    """``host:port``, ``1.2.3.4:port`` or ``[v6]:port``; host names are checked, not resolved."""
    text = text.strip()
    if not text:
        raise ConfigError(f"{where}: is empty")
    _refuse_key_like(text, where, "an endpoint")
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise ConfigError(f"{where}: {show(text)} has no closing bracket")
        if not rest.startswith(":"):
            raise ConfigError(f"{where}: {show(text)} has no port (write [address]:port)")
        port_text = rest[1:]
        try:
            host = str(IPv6Address(host))
        except ValueError:
            raise ConfigError(f"{where}: {show(text)}: only an IPv6 address goes in brackets") from None
        _, percent, scope = host.partition("%")
        if percent and not _SCOPE.fullmatch(scope):
            raise ConfigError(f"{where}: {show(text)}: the scope must be an interface name or number")
    else:
        if text.count(":") > 1:
            raise ConfigError(
                f"{where}: {show(text)}: an IPv6 address must be in brackets, as in [2001:db8::1]:51820"
            )
        host, colon, port_text = text.rpartition(":")
        if not colon:
            raise ConfigError(f"{where}: {show(text)} has no port (write host:port)")
        try:
            host = str(IPv4Address(host))
        except ValueError:
            host = _check_host_name(host, where)
    if not _DIGITS.fullmatch(port_text):
        raise ConfigError(f"{where}: {show(text)}: the port {show(port_text)} is not a number")
    if len(port_text) > 5 or not 1 <= int(port_text) <= MAX_PORT:
        raise ConfigError(f"{where}: {show(text)}: the port is out of range 1..{MAX_PORT}")
    return EndpointSpec(host, int(port_text))


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
            f'{where}: {show(text)} is neither a number of seconds nor a duration like "25s" or "1m30s"'
        )
    if nanoseconds < 0:
        raise ConfigError(f"{where}: {show(text)} is negative")
    seconds, rest = divmod(nanoseconds, _SECOND)
    if rest:
        raise ConfigError(
            f"{where}: {show(text)} is not a whole number of seconds (keepalive has 1 s resolution)"
        )
    if seconds > MAX_KEEPALIVE:
        raise ConfigError(f"{where}: {show(text)} is {seconds} s, above the maximum {MAX_KEEPALIVE} s")
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
            raise ConfigError(f"{where}: {show(text)} is out of range 0..{MAX_FWMARK}")
        return _check_range(int(text, 16), where, 0, MAX_FWMARK)
    if len(text) > 1 and text.startswith("0") and _DIGITS.fullmatch(text):
        # wg(8) reads a leading 0 as octal; refuse rather than guess.
        raise ConfigError(f"{where}: {show(text)} is ambiguous (octal?); write decimal or 0x hex")
    return _parse_uint(text, where, "a number (decimal or 0x hex)", 0, MAX_FWMARK)


def parse_listen_port(value: str | int, where: str) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        port = _check_range(value, where, 0, MAX_PORT)
    elif isinstance(value, str):
        port = _parse_uint(value, where, "a port number", 0, MAX_PORT)
    else:
        raise ConfigError(f"{where}: expected a port number")
    return port or None  # 0 asks for a random port, as no port at all does


def parse_mtu(value: str | int, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return _check_range(value, where, MIN_MTU_IPV4, MAX_MTU)
    if isinstance(value, str):
        return _parse_uint(value, where, "a number", MIN_MTU_IPV4, MAX_MTU)
    raise ConfigError(f"{where}: expected an integer")


def parse_dns(text: str, where: str) -> str:
    """A name server (IP address) or a search domain, as wg-quick sorts DNS= entries."""
    text = text.strip()
    try:
        return str(ip_address(text))
    except ValueError:
        return _check_host_name(text, where)


def append_address(addresses: list[Address], address: Address, where: str) -> None:
    if any(a.ip == address.ip for a in addresses):
        raise ConfigError(f"{where}: {address.ip} is given twice")
    addresses.append(address)


def check_address_given(
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


# --------------------------------------------------------------------------------------------
# Checks across fields, shared by both formats. The callers pass how to name each place.


def check_across_fields(
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


def add_allowed_ip(peer: PeerConfig, text: str, where: str, warnings: list[str]) -> None:
    network, had_host_bits = _parse_network(text, where)
    if had_host_bits:
        warnings.append(f"{where}: {show(text.strip())} has host bits set; using {network}")
    if network not in peer.allowed_ips:
        peer.allowed_ips.append(network)
