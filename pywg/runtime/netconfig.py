"""Interface configuration inside a network namespace: MTU, addresses, link state, routes (pyroute2).

Each call opens an rtnetlink socket while the thread is inside the namespace (`in_netns`), does its work
and closes it. pyroute2's synchronous IPRoute runs its own event loop, which is impossible while an
asyncio loop runs in the calling thread; from inside a running loop each call therefore runs in a short
helper thread (it still blocks the caller for the few milliseconds it takes; use asyncio.to_thread to
avoid even that). Either way only the thread doing the work enters the namespace.

Routes for the allowed IPs are "<prefix> dev <ifname> proto static" in the main table (scope link for
IPv4, as `ip route add PREFIX dev IF` makes them). A route to a prefix that already goes through the
interface — the kernel's own prefix route of an address such as 10.1.2.3/24, or a route added by an
earlier call — is left as it is; a prefix that contains the interface's address gets its route like any
other (address 10.1.2.3/32, allowed IPs 10.1.2.0/24 → route 10.1.2.0/24 dev IF). `remove_routes`
removes only routes with proto static, so it never takes away the kernel's prefix routes.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import socket
import subprocess
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Interface, IPv4Network, IPv6Interface, IPv6Network, ip_network
from socket import AF_INET, AF_INET6
from typing import Any, TypeVar, cast

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from pywg.runtime.netns import NamespaceNotFoundError, in_netns, resolve_netns
from pywg.runtime.oserror import DescribedOSError

IPInterface = IPv4Interface | IPv6Interface
IPNetwork = IPv4Network | IPv6Network

RT_TABLE_MAIN = 254
RTPROT_STATIC = 4
IFA_F_NODAD = 0x02
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
    table: int
    protocol: int
    scope: int
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


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _in_thread(work: Callable[[], T]) -> T:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="pywg-netconfig", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return cast(T, outcome["value"])


def _with_iproute(netns: str | None, body: Callable[[IPRoute], T]) -> T:
    """Run body(ipr) with the thread inside `netns` and an IPRoute bound to that namespace."""
    path = resolve_netns(netns)

    def work() -> T:
        with in_netns(path), IPRoute() as ipr:
            return body(ipr)

    return _in_thread(work) if _loop_running() else work()


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


def _route_dst(route: Any) -> IPNetwork:
    dst = route.get("dst") or ("::" if route["family"] == AF_INET6 else "0.0.0.0")
    return ip_network(f"{dst}/{route['dst_len']}", strict=False)


def _routes(ipr: IPRoute, family: int) -> list[Any]:
    return list(ipr.route("dump", family=family))


def _describe_oif(ipr: IPRoute, route: Any) -> str:
    oif = route.get("oif")
    if oif is None:
        return "a multipath or gateway-less route"
    try:
        links = ipr.link("get", index=oif)
    except NetlinkError:
        links = []
    return f"interface {links[0].get('ifname')}" if links else f"ifindex {oif}"


def _metric_of(route: Any) -> int:
    """A route's metric as the kernel compares them (IPv6 routes added without one get 1024)."""
    priority = route.get("priority")
    if priority is not None:
        return int(priority)
    return IPV6_DEFAULT_METRIC if route["family"] == AF_INET6 else 0


@dataclass
class _MainTable:
    """One dump of a family's main table: what goes through the interface, what holds a prefix."""

    through_us: set[IPNetwork]
    holders: dict[tuple[IPNetwork, int], Any]  # (prefix, metric) -> a route of another interface

    @classmethod
    def dump(cls, ipr: IPRoute, family: int, index: int) -> _MainTable:
        table = cls(set(), {})
        for route in _routes(ipr, family):
            if route.get("table") != RT_TABLE_MAIN:
                continue
            dst = _route_dst(route)
            if route.get("oif") == index:
                table.through_us.add(dst)
            else:
                table.holders.setdefault((dst, _metric_of(route)), route)
        return table


def _route_command(verb: str, dst: IPNetwork, ifname: str, metric: int | None) -> str:
    scope = " scope link" if dst.version == 4 else ""
    tail = f" metric {metric}" if metric is not None else ""
    return f"route {verb} {dst} dev {ifname} table main proto static{scope}{tail}\n"


def _run_ip_batch(commands: Sequence[str], what: Callable[[int], str]) -> None:
    """Run `ip -batch -` on `commands` in the calling thread's network namespace.

    Thousands of routes cost ~0.2 s in iproute2 against ~1 ms each through pyroute2 in this process,
    and they take no GIL from the engines this process also runs. `what(i)` names command i in an
    error.
    """
    done = subprocess.run(
        ["ip", "-batch", "-"], input="".join(commands), capture_output=True, text=True, check=False
    )
    if done.returncode == 0:
        return
    failed = re.search(r"Command failed -:(\d+)", done.stderr)
    reason = done.stderr.strip().splitlines()[0] if done.stderr.strip() else f"exit status {done.returncode}"
    reason = reason.removeprefix("RTNETLINK answers: ").removeprefix("Error: ")
    code = errno.EEXIST if "File exists" in reason else errno.EINVAL
    item = what(int(failed.group(1)) - 1) if failed else "routes"
    raise NetconfigError(code, f"{item}: {reason}")


def _configure(
    ipr: IPRoute,
    netns: str | None,
    ifname: str,
    mtu: int,
    addresses: Sequence[IPInterface],
    routes: Sequence[IPNetwork],
    metric: int | None,
    shadow_metric: int | None,
) -> ConfigureResult:
    where = _where(netns)
    index = _require_ifindex(netns, ifname)
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

    def fail(what: str, exc: NetlinkError) -> NetconfigError:
        return NetconfigError(exc.code, f"{what} on {ifname} in {where}: {os.strerror(exc.code)}")

    try:
        ipr.link("set", index=index, mtu=mtu)
    except NetlinkError as exc:
        raise fail(f"setting MTU {mtu}", exc) from exc
    for address in addresses:
        request: dict[str, Any] = {"address": str(address.ip), "prefixlen": address.network.prefixlen}
        if address.version == 6:
            request["flags"] = IFA_F_NODAD
        try:
            ipr.addr("add", index=index, **request)
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                continue
            if address.version == 6 and exc.code in (errno.EACCES, errno.EAFNOSUPPORT):
                raise IPv6UnavailableError(
                    exc.code, f"cannot add {address} to {ifname} in {where}: IPv6 is disabled"
                ) from exc
            raise fail(f"adding address {address}", exc) from exc
    try:
        ipr.link("set", index=index, state="up")
    except NetlinkError as exc:
        raise fail("bringing the link up", exc) from exc

    # One dump per family, then one batch: linear in the number of routes, however many there are.
    result = ConfigureResult()
    tables: dict[int, _MainTable] = {}
    to_add: list[tuple[IPNetwork, int | None]] = []
    for dst in dict.fromkeys(routes):
        family = _family(dst)
        if family == AF_INET6 and ipv6_problem is not None:
            result.routes_skipped.append(dst)
            continue
        if family not in tables:
            tables[family] = _MainTable.dump(ipr, family, index)
        table = tables[family]
        if dst in table.through_us:
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
                f"route {dst} already exists in {where} through {_describe_oif(ipr, holder)}; not adding it"
                f" through {ifname} (a different metric= lets both exist)",
            )
    if to_add:
        _run_ip_batch(
            [_route_command("add", dst, ifname, m) for dst, m in to_add],
            lambda i: f"adding route {to_add[i][0]} on {ifname} in {where}",
        )
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
    return _with_iproute(
        netns,
        lambda ipr: _configure(ipr, netns, ifname, mtu, address_list, route_list, metric, shadow_metric),
    )


def remove_routes(netns: str | None, ifname: str, routes: Iterable[IPNetwork]) -> int:
    """Remove the routes configure_interface added for `routes`; return how many were removed.

    Only proto static routes through `ifname` are removed: the kernel's prefix routes stay. Routes or a
    link that are already gone are not an error.
    """
    wanted = set(routes)

    def body(ipr: IPRoute) -> int:
        index = _ifindex(ifname)
        if index is None:
            return 0
        found = [
            (_route_dst(r), r.get("priority"))
            for family in {_family(dst) for dst in wanted}
            for r in _routes(ipr, family)
            if r.get("oif") == index and r.get("table") == RT_TABLE_MAIN and r["proto"] == RTPROT_STATIC
        ]
        gone = [(dst, metric) for dst, metric in found if dst in wanted]
        if gone:
            _run_ip_batch(
                [_route_command("del", dst, ifname, metric) for dst, metric in gone],
                lambda i: f"removing route {gone[i][0]} from {ifname} in {_where(netns)}",
            )
        return len(gone)

    return _with_iproute(netns, body)


def remove_addresses(netns: str | None, ifname: str, addresses: Iterable[IPInterface]) -> int:
    """Remove `addresses` from `ifname`; ones already gone are not an error. Returns how many went."""
    address_list = list(addresses)

    def body(ipr: IPRoute) -> int:
        index = _ifindex(ifname)
        if index is None:
            return 0
        removed = 0
        for address in address_list:
            try:
                ipr.addr("del", index=index, address=str(address.ip), prefixlen=address.network.prefixlen)
            except NetlinkError as exc:
                if exc.code in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ENODEV):
                    continue
                raise NetconfigError(
                    exc.code, f"removing {address} from {ifname} in {_where(netns)}: {os.strerror(exc.code)}"
                ) from exc
            removed += 1
        return removed

    return _with_iproute(netns, body)


def delete_link(netns: str | None, ifname: str) -> bool:
    """Delete interface `ifname`; False if it (or its whole namespace) was already gone."""

    def body(ipr: IPRoute) -> bool:
        index = _ifindex(ifname)
        if index is None:
            return False
        try:
            ipr.link("del", index=index)
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return False
            raise NetconfigError(
                exc.code, f"deleting {ifname} in {_where(netns)}: {os.strerror(exc.code)}"
            ) from exc
        return True

    try:
        return _with_iproute(netns, body)
    except NamespaceNotFoundError:
        return False


def link_exists(netns: str | None, ifname: str) -> bool:
    """True if `ifname` exists in the namespace (False also when the namespace does not exist)."""
    try:
        path = resolve_netns(netns)
    except NamespaceNotFoundError:
        return False
    with in_netns(path):
        return _ifindex(ifname) is not None


def list_routes(netns: str | None, ifname: str, table: int | None = RT_TABLE_MAIN) -> list[RouteInfo]:
    """The IPv4 and IPv6 routes whose output interface is `ifname`, in `table` (None = every table)."""

    def body(ipr: IPRoute) -> list[RouteInfo]:
        index = _require_ifindex(netns, ifname)
        found = []
        for family in (AF_INET, AF_INET6):
            for r in _routes(ipr, family):
                if r.get("oif") != index or (table is not None and r.get("table") != table):
                    continue
                found.append(
                    RouteInfo(_route_dst(r), int(r.get("table")), r["proto"], r["scope"], r.get("priority"))
                )
        return found

    return _with_iproute(netns, body)
