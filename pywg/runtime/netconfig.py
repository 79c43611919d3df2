"""Interface configuration inside a network namespace: MTU, addresses, link state, routes (iproute2).

Each call enters the namespace with the calling thread (`in_netns`) and runs `ip` there: one
`ip -batch` for everything a call changes, and `ip -j` to list what is there. iproute2 does in C, in
a process of its own, what pyroute2 did in this one with an asyncio loop per request (a node agent
adding twenty Pods at once spent half its CPU there), so thousands of routes cost ~0.2 s and none of
it holds the GIL that this process's engines need. Only the calling thread enters the namespace.

Routes for the allowed IPs are "<prefix> dev <ifname> proto static" in the main table (scope link for
IPv4, as `ip route add PREFIX dev IF` makes them). A route to a prefix that already goes through the
interface — the kernel's own prefix route of an address such as 10.1.2.3/24, or a route added by an
earlier call — is left as it is; a prefix that contains the interface's address gets its route like any
other (address 10.1.2.3/32, allowed IPs 10.1.2.0/24 → route 10.1.2.0/24 dev IF). `remove_routes`
removes only routes with proto static, so it never takes away the kernel's prefix routes.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from ipaddress import IPv4Interface, IPv4Network, IPv6Interface, IPv6Network, ip_interface, ip_network
from socket import AF_INET, AF_INET6
from typing import Any, TypeVar

from pywg.runtime.netns import NamespaceNotFoundError, in_netns, resolve_netns
from pywg.runtime.oserror import DescribedOSError

IPInterface = IPv4Interface | IPv6Interface
IPNetwork = IPv4Network | IPv6Network

IPV6_MIN_MTU = 1280
IPV6_DEFAULT_METRIC = 1024

T = TypeVar("T")


class NetconfigError(DescribedOSError):
    """Configuring an interface failed; the message names the namespace, interface and item."""


class LinkNotFoundError(NetconfigError):
    """The interface does not exist in the namespace."""


class IPv6UnavailableError(NetconfigError):
    """An IPv6 address was requested but IPv6 is disabled on the interface or absent from the kernel."""


class RouteConflictError(NetconfigError, FileExistsError):
    """A route to the same prefix, with the same metric, already goes through another interface."""


@dataclass(frozen=True)
class RouteInfo:
    dst: IPNetwork
    protocol: str  # as `ip route` names it: kernel, static, boot, ...
    metric: int | None


@dataclass
class ConfigureResult:
    routes_added: list[IPNetwork] = field(default_factory=list)
    # already routed through the interface (the kernel's prefix route of an address, an earlier call)
    routes_present: list[IPNetwork] = field(default_factory=list)
    # IPv6 routes left out because IPv6 is disabled there and no IPv6 address was requested
    routes_skipped: list[IPNetwork] = field(default_factory=list)
    # held by another interface with the same metric: added with `shadow_metric` instead
    routes_shadowed: list[IPNetwork] = field(default_factory=list)


def _where(netns: str | None) -> str:
    return f"network namespace {netns!r}" if netns is not None else "the current network namespace"


def _in_namespace(netns: str | None, body: Callable[[], T]) -> T:
    """Run body() with the calling thread inside `netns`; what it spawns (`ip`) runs there too."""
    with in_netns(resolve_netns(netns)):
        return body()


def _ifindex(ifname: str) -> int | None:
    """The index of `ifname` in the calling thread's namespace: an ioctl, not pyroute2's dump of
    every link."""
    try:
        return socket.if_nametoindex(ifname)
    except OSError:  # ENODEV; ValueError never: names come checked
        return None


def _require_ifindex(netns: str | None, ifname: str) -> int:
    index = _ifindex(ifname)
    if index is None:
        raise LinkNotFoundError(errno.ENODEV, f"interface {ifname} does not exist in {_where(netns)}")
    return index


def _ipv6_disabled(ifname: str) -> str | None:
    """Why IPv6 cannot be used on `ifname` in the thread's namespace, or None if it can."""
    if not os.path.isdir("/proc/sys/net/ipv6"):
        return "the kernel has no IPv6 (ipv6.disable=1?)"
    try:
        with open(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6") as f:
            disabled = f.read().strip() != "0"
    except FileNotFoundError:
        return f"IPv6 is not available on {ifname}"
    return f"net.ipv6.conf.{ifname}.disable_ipv6=1" if disabled else None


def _family(net: IPNetwork | IPInterface) -> int:
    return AF_INET6 if net.version == 6 else AF_INET


@cache
def _ip() -> str:
    """iproute2's `ip`, found once: a bare name costs a failed execve per PATH entry at every call."""
    return shutil.which("ip") or "ip"


def _ip_json(args: Sequence[str], missing_ok: bool = False) -> list[dict[str, Any]]:
    """`ip -j ARGS` in the calling thread's namespace; with `missing_ok`, [] for a missing device."""
    done = subprocess.run([_ip(), "-j", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        if missing_ok and "does not exist" in done.stderr:
            return []
        raise NetconfigError(errno.EIO, f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return list(json.loads(done.stdout or "[]"))


def _ip_routes(family: int) -> list[dict[str, Any]]:
    """The main table of one family, as `ip -j route` lists it."""
    return _ip_json(["-6" if family == AF_INET6 else "-4", "route", "show", "table", "main"])


def _ip_addresses(ifname: str) -> set[IPInterface]:
    found = _ip_json(["address", "show", "dev", ifname], missing_ok=True)
    return {
        ip_interface(f"{info['local']}/{info['prefixlen']}")
        for link in found
        for info in link.get("addr_info", [])
        if "local" in info
    }


def _ip_route_dst(route: Mapping[str, Any], family: int) -> IPNetwork:
    dst = str(route.get("dst", "default"))
    if dst == "default":
        return ip_network("::/0" if family == AF_INET6 else "0.0.0.0/0")
    return ip_network(dst, strict=False)


@dataclass
class _MainTable:
    """One listing of a family's main table: what goes through the interface, what holds a prefix."""

    through_us: set[IPNetwork]
    holders: dict[tuple[IPNetwork, int], str]  # (prefix, metric) -> what holds it ("interface eth0")

    @classmethod
    def dump(cls, family: int, ifname: str) -> _MainTable:
        table = cls(set(), {})
        default_metric = IPV6_DEFAULT_METRIC if family == AF_INET6 else 0
        for route in _ip_routes(family):
            dst = _ip_route_dst(route, family)
            if route.get("dev") == ifname:
                table.through_us.add(dst)
                continue
            dev = route.get("dev")
            holder = f"interface {dev}" if dev else f"a {route.get('type', 'multipath')} route"
            table.holders.setdefault((dst, int(route.get("metric", default_metric))), holder)
        return table


def _route_command(verb: str, dst: IPNetwork, ifname: str, metric: int | None) -> str:
    scope = " scope link" if dst.version == 4 else ""
    tail = f" metric {metric}" if metric is not None else ""
    return f"route {verb} {dst} dev {ifname} table main proto static{scope}{tail}\n"


_IP_ERRORS = {
    "File exists": errno.EEXIST,
    "Permission denied": errno.EACCES,
    "Cannot find device": errno.ENODEV,
}


def _run_ip_batch(commands: Sequence[str], what: Callable[[int], str]) -> None:
    """Run `ip -batch -` on `commands` in the calling thread's network namespace.

    Thousands of routes cost ~0.2 s in iproute2 against ~1 ms each through pyroute2 in this process,
    and they take no GIL from the engines this process also runs. `what(i)` names command i in an
    error.
    """
    done = subprocess.run(
        [_ip(), "-batch", "-"], input="".join(commands), capture_output=True, text=True, check=False
    )
    if done.returncode == 0:
        return
    failed = re.search(r"Command failed -:(\d+)", done.stderr)
    reason = done.stderr.strip().splitlines()[0] if done.stderr.strip() else f"exit status {done.returncode}"
    reason = reason.removeprefix("RTNETLINK answers: ").removeprefix("Error: ")
    code = next((c for text, c in _IP_ERRORS.items() if text in done.stderr), errno.EINVAL)
    item = what(int(failed.group(1)) - 1) if failed else "routes"
    raise NetconfigError(code, f"{item}: {reason}")


def _configure(
    netns: str | None,
    ifname: str,
    mtu: int,
    addresses: Sequence[IPInterface],
    routes: Sequence[IPNetwork],
    metric: int | None,
    shadow_metric: int | None,
) -> ConfigureResult:
    where = _where(netns)
    _require_ifindex(netns, ifname)
    wants_ipv6 = [a for a in addresses if a.version == 6]
    ipv6_problem = _ipv6_disabled(ifname)
    if wants_ipv6 and ipv6_problem is not None:
        raise IPv6UnavailableError(
            errno.EAFNOSUPPORT,
            f"cannot add {', '.join(map(str, wants_ipv6))} to {ifname} in {where}: {ipv6_problem}",
        )
    if wants_ipv6 and mtu < IPV6_MIN_MTU:
        raise NetconfigError(
            errno.EINVAL,
            f"MTU {mtu} of {ifname} is below {IPV6_MIN_MTU}: the kernel would disable IPv6 on it",
        )

    # One listing per family, then one batch: linear in the number of routes, however many there are.
    # The addresses' own prefix routes count as ours: the kernel adds them with the addresses.
    result = ConfigureResult()
    tables: dict[int, _MainTable] = {}
    prefixes = {a.network for a in addresses if a.network.prefixlen < a.max_prefixlen}
    to_add: list[tuple[IPNetwork, int | None]] = []
    for dst in dict.fromkeys(routes):
        family = _family(dst)
        if family == AF_INET6 and ipv6_problem is not None:
            result.routes_skipped.append(dst)
            continue
        if family not in tables:
            tables[family] = _MainTable.dump(family, ifname)
        table = tables[family]
        if dst in table.through_us or dst in prefixes:
            result.routes_present.append(dst)
            continue
        wanted = metric if metric is not None else (IPV6_DEFAULT_METRIC if family == AF_INET6 else 0)
        holder = table.holders.get((dst, wanted))
        if holder is None:
            to_add.append((dst, metric))
            result.routes_added.append(dst)
        elif shadow_metric is not None and (dst, shadow_metric) not in table.holders:
            to_add.append((dst, shadow_metric))
            result.routes_shadowed.append(dst)
        else:
            raise RouteConflictError(
                errno.EEXIST,
                f"route {dst} already exists in {where} through {holder}; not adding it through {ifname}"
                " (a different metric= lets both exist)",
            )
    steps = [(f"link set dev {ifname} mtu {mtu}\n", f"setting MTU {mtu}")]
    steps += [
        (f"address replace {a} dev {ifname}{' nodad' if a.version == 6 else ''}\n", f"adding address {a}")
        for a in addresses
    ]
    steps.append((f"link set dev {ifname} up\n", "bringing the link up"))
    steps += [(_route_command("add", dst, ifname, m), f"adding route {dst}") for dst, m in to_add]
    try:
        _run_ip_batch([command for command, _ in steps], lambda i: f"{steps[i][1]} on {ifname} in {where}")
    except NetconfigError as error:
        if error.errno == errno.EACCES and any(a.version == 6 for a in addresses):
            raise IPv6UnavailableError(errno.EACCES, f"{error}: IPv6 is disabled") from None
        raise
    return result


def configure_interface(
    netns: str | None,
    ifname: str,
    mtu: int,
    addresses: Iterable[IPInterface],
    routes: Iterable[IPNetwork],
    *,
    metric: int | None = None,
    shadow_metric: int | None = None,
) -> ConfigureResult:
    """Set the MTU, add the addresses, bring `ifname` up and route every prefix in `routes` through it.

    Idempotent: addresses and routes that are already there are kept. IPv6 addresses get nodad, so they
    are usable at once. If IPv6 is disabled on the interface, IPv6 routes are skipped (and reported in
    the result) unless an IPv6 address is requested, which raises IPv6UnavailableError. A prefix already
    routed through another interface with the same metric (say a pod's default route via eth0) raises
    RouteConflictError, unless `shadow_metric` is given: then such a route is added with that metric
    instead (both exist, the other keeps precedence) and reported in `routes_shadowed`. `metric` sets
    the metric (IPv4 default 0, IPv6 default 1024). One route dump per family and one `ip -batch`
    run, however many routes.
    """
    address_list, route_list = list(addresses), list(routes)
    return _in_namespace(
        netns, lambda: _configure(netns, ifname, mtu, address_list, route_list, metric, shadow_metric)
    )


def remove_routes(netns: str | None, ifname: str, routes: Iterable[IPNetwork]) -> int:
    """Remove the routes configure_interface added for `routes`; return how many were removed.

    Only proto static routes through `ifname` are removed: the kernel's prefix routes stay. Routes or a
    link that are already gone are not an error.
    """
    wanted = set(routes)

    def body() -> int:
        if _ifindex(ifname) is None:
            return 0
        found = [
            (_ip_route_dst(r, family), r.get("metric"))
            for family in {_family(dst) for dst in wanted}
            for r in _ip_routes(family)
            if r.get("dev") == ifname and r.get("protocol") == "static"
        ]
        gone = [(dst, metric) for dst, metric in found if dst in wanted]
        if gone:
            _run_ip_batch(
                [_route_command("del", dst, ifname, metric) for dst, metric in gone],
                lambda i: f"removing route {gone[i][0]} from {ifname} in {_where(netns)}",
            )
        return len(gone)

    return _in_namespace(netns, body)


def remove_addresses(netns: str | None, ifname: str, addresses: Iterable[IPInterface]) -> int:
    """Remove `addresses` from `ifname`; ones already gone are not an error. Returns how many went."""
    wanted = set(addresses)

    def body() -> int:
        if _ifindex(ifname) is None:
            return 0
        gone = [a for a in wanted if a in _ip_addresses(ifname)]
        if gone:
            _run_ip_batch(
                [f"address del {a} dev {ifname}\n" for a in gone],
                lambda i: f"removing {gone[i]} from {ifname} in {_where(netns)}",
            )
        return len(gone)

    return _in_namespace(netns, body)


def delete_link(netns: str | None, ifname: str) -> bool:
    """Delete interface `ifname`; False if it (or its whole namespace) was already gone."""

    def body() -> bool:
        if _ifindex(ifname) is None:
            return False
        try:
            _run_ip_batch([f"link del dev {ifname}\n"], lambda i: f"deleting {ifname} in {_where(netns)}")
        except NetconfigError as error:
            if error.errno == errno.ENODEV:
                return False
            raise
        return True

    try:
        return _in_namespace(netns, body)
    except NamespaceNotFoundError:
        return False


def link_state(netns: str | None, ifname: str) -> tuple[bool, set[str], set[IPInterface]]:
    """(exists, flags as `ip` names them: UP, LOWER_UP, ..., addresses) of `ifname` in `netns`."""

    def body() -> tuple[bool, set[str], set[IPInterface]]:
        links = _ip_json(["link", "show", "dev", ifname], missing_ok=True)
        if not links:
            return False, set(), set()
        return True, set(links[0].get("flags", [])), _ip_addresses(ifname)

    return _in_namespace(netns, body)


def link_exists(netns: str | None, ifname: str) -> bool:
    """True if `ifname` exists in the namespace (False also when the namespace does not exist)."""
    try:
        path = resolve_netns(netns)
    except NamespaceNotFoundError:
        return False
    with in_netns(path):
        return _ifindex(ifname) is not None


def list_routes(netns: str | None, ifname: str) -> list[RouteInfo]:
    """The IPv4 and IPv6 routes of the main table whose output interface is `ifname`."""

    def body() -> list[RouteInfo]:
        _require_ifindex(netns, ifname)
        return [
            RouteInfo(_ip_route_dst(r, family), str(r.get("protocol", "boot")), r.get("metric"))
            for family in (AF_INET, AF_INET6)
            for r in _ip_routes(family)
            if r.get("dev") == ifname
        ]

    return _in_namespace(netns, body)
