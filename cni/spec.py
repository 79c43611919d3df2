"""The CNI protocol (spec 1.1.0 and the older result formats it must still print).

Pure code: requests are parsed from an environment mapping and stdin bytes,
results and errors are rendered as the JSON a runtime expects on stdout.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv6Address,
    IPv6Interface,
    ip_address,
    ip_interface,
    ip_network,
)
from typing import Any

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")

# Error codes (SPEC §5 "Error", libcni types.go).
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODING_FAILURE = 6
INVALID_NETWORK_CONFIG = 7
INVALID_NETNS = 8
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
LIMITED_CONNECTIVITY = 51
INTERNAL = 999

_CONTAINER_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "GC": (),
    "STATUS": (),
    "VERSION": (),
}


class CniError(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


@dataclass
class Request:
    command: str
    container_id: str
    netns: str
    ifname: str
    args: dict[str, str]
    path: list[str]
    config: dict[str, Any]

    @property
    def cni_version(self) -> str:
        return str(self.config.get("cniVersion", "0.3.0"))


def parse_request(env: Mapping[str, str], stdin: bytes) -> Request:
    command = env.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(
            INVALID_ENVIRONMENT, f"CNI_COMMAND is {command!r}; expected one of {', '.join(COMMANDS)}"
        )
    missing = [name for name in _REQUIRED_ENV[command] if not env.get(name)]
    if missing:
        raise CniError(INVALID_ENVIRONMENT, f"required environment variables missing: {', '.join(missing)}")
    container_id = env.get("CNI_CONTAINERID", "")
    if container_id and not _CONTAINER_ID.match(container_id):
        raise CniError(
            INVALID_ENVIRONMENT, f"CNI_CONTAINERID {container_id!r} has characters the spec forbids"
        )
    ifname = env.get("CNI_IFNAME", "")
    if ifname and (
        len(ifname) > 15 or "/" in ifname or ifname in (".", "..") or any(c.isspace() for c in ifname)
    ):
        raise CniError(INVALID_ENVIRONMENT, f"CNI_IFNAME {ifname!r} is not a valid interface name")
    config = decode_config(stdin)
    version = str(config.get("cniVersion", "0.3.0"))
    if version not in SUPPORTED_VERSIONS and command != "VERSION":
        raise CniError(
            INCOMPATIBLE_VERSION,
            f"cniVersion {version!r} is not supported; this plugin supports {', '.join(SUPPORTED_VERSIONS)}",
        )
    return Request(
        command=command,
        container_id=container_id,
        netns=env.get("CNI_NETNS", ""),
        ifname=ifname,
        args=parse_cni_args(env.get("CNI_ARGS", "")),
        path=[p for p in env.get("CNI_PATH", "").split(":") if p],
        config=config,
    )


def decode_config(stdin: bytes) -> dict[str, Any]:
    try:
        config = json.loads(stdin.decode("utf-8")) if stdin.strip() else {}
    except RecursionError:
        raise CniError(DECODING_FAILURE, "network configuration on stdin is nested too deeply") from None
    except ValueError as error:  # not UTF-8, not JSON, or a number with more digits than int() takes
        raise CniError(DECODING_FAILURE, f"network configuration on stdin is not JSON: {error}") from None
    if not isinstance(config, dict):
        raise CniError(DECODING_FAILURE, "network configuration on stdin must be a JSON object")
    return config


def parse_cni_args(text: str) -> dict[str, str]:
    """`K=V;K2=V2` as libcni writes it; unknown keys are the caller's to ignore."""
    args: dict[str, str] = {}
    for item in text.split(";"):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CniError(INVALID_ENVIRONMENT, f"CNI_ARGS item {item!r} is not KEY=VALUE")
        args[key] = value
    return args


def version_answer(config_version: str) -> dict[str, Any]:
    return {"cniVersion": config_version or "0.3.0", "supportedVersions": list(SUPPORTED_VERSIONS)}


# Results.
@dataclass
class Interface:
    name: str
    sandbox: str = ""
    mac: str = ""
    mtu: int = 0


@dataclass
class IPConfig:
    address: IPv4Interface | IPv6Interface
    interface: int | None = None
    gateway: IPv4Address | IPv6Address | None = None


@dataclass
class Route:
    dst: Any  # IPv4Network | IPv6Network
    gw: IPv4Address | IPv6Address | None = None
    mtu: int = 0
    advmss: int = 0
    priority: int = 0
    table: int = 0
    scope: int = 0


@dataclass
class Result:
    interfaces: list[Interface] = field(default_factory=list)
    ips: list[IPConfig] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    dns: dict[str, Any] = field(default_factory=dict)

    def render(self, version: str) -> dict[str, Any]:
        """The result in the format of `version` (0.3.x/0.4.0 carry ips[].version)."""
        legacy = version in ("0.3.0", "0.3.1", "0.4.0")
        out: dict[str, Any] = {"cniVersion": version}
        if self.interfaces:
            out["interfaces"] = [_render_interface(i, version == "1.1.0") for i in self.interfaces]
        if self.ips:
            out["ips"] = [_render_ip(ip, legacy) for ip in self.ips]
        if self.routes:
            out["routes"] = [_render_route(r, version == "1.1.0") for r in self.routes]
        out["dns"] = self.dns
        return out


def _render_interface(interface: Interface, extended: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": interface.name}
    if interface.mac:
        out["mac"] = interface.mac
    if interface.mtu and extended:  # interfaces[].mtu came with 1.1.0
        out["mtu"] = interface.mtu
    if interface.sandbox:
        out["sandbox"] = interface.sandbox
    return out


def _render_ip(ip: IPConfig, legacy: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if legacy:
        out["version"] = str(ip.address.version)
    out["address"] = str(ip.address)
    if ip.gateway is not None:
        out["gateway"] = str(ip.gateway)
    if ip.interface is not None:
        out["interface"] = ip.interface
    return out


def _render_route(route: Route, extended: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"dst": str(route.dst)}
    if route.gw is not None:
        out["gw"] = str(route.gw)
    if extended:
        for name in ("mtu", "advmss", "priority", "table", "scope"):
            if getattr(route, name):
                out[name] = getattr(route, name)
    return out


def parse_result(raw: object) -> Result:
    """A prevResult of any supported version."""
    if not isinstance(raw, dict):
        raise CniError(DECODING_FAILURE, "prevResult must be a JSON object")
    try:
        interfaces = [
            Interface(str(i["name"]), str(i.get("sandbox", "")), str(i.get("mac", "")), int(i.get("mtu", 0)))
            for i in raw.get("interfaces", []) or []
        ]
        ips = [
            IPConfig(
                ip_interface(str(i["address"])),
                int(i["interface"]) if i.get("interface") is not None else None,
                ip_address(str(i["gateway"])) if i.get("gateway") else None,
            )
            for i in raw.get("ips", []) or []
        ]
        routes = [
            Route(
                ip_network(str(r["dst"]), strict=False),
                ip_address(str(r["gw"])) if r.get("gw") else None,
                **{k: int(r[k]) for k in ("mtu", "advmss", "priority", "table", "scope") if r.get(k)},
            )
            for r in raw.get("routes", []) or []
        ]
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as error:
        raise CniError(DECODING_FAILURE, f"prevResult is malformed: {error}") from None
    dns = raw.get("dns") or {}
    return Result(interfaces, ips, routes, dns if isinstance(dns, dict) else {})
