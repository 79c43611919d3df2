"""The OS adapters against the real kernel: namespaces, TUN devices, addresses and routes.

Needs root (CI runs as root). Every namespace, link, fd and process a test creates is removed by a
fixture finalizer, also when the test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import secrets
import select
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_interface, ip_network
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute

from pywg.runtime import netconfig
from pywg.runtime.daemon import State
from pywg.runtime.netconfig import (
    IPv6UnavailableError,
    LinkNotFoundError,
    NetconfigError,
    RouteConflictError,
    configure_interface,
    delete_link,
    link_exists,
    list_routes,
    remove_routes,
)
from pywg.runtime.netns import (
    NamespaceNotFoundError,
    in_netns,
    netns_identity,
    resolve_netns,
    same_netns,
)
from pywg.runtime.tun import (
    IFF_NO_PI,
    IFF_TUN,
    IFF_VNET_HDR,
    TUNGETIFF,
    InterfaceExistsError,
    Tun,
    TunGoneError,
    open_tun,
)
from tests.support.netsim import checksum

IFNAME = "pywg0"


def ip(*args: str, check: bool = True) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def sysctl_in(ns: str, key: str, value: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{key}={value}"], check=True)


def add_veth(ns: str) -> None:
    """pywgveth0 and pywgveth1, up, inside `ns` (deleted with it). This kernel has no dummy driver."""
    ip("-n", ns, "link", "add", "pywgveth0", "type", "veth", "peer", "name", "pywgveth1")
    ip("-n", ns, "link", "set", "pywgveth0", "up")
    ip("-n", ns, "link", "set", "pywgveth1", "up")


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def stays_in_original_netns() -> Iterator[None]:
    before = netns_identity(None)
    yield
    assert netns_identity(None) == before, "a test left the main thread in another network namespace"


def open_fds() -> dict[int, str]:
    fds = {}
    for entry in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the directory fd listdir used, closed by now
            fds[int(entry)] = os.readlink(f"/proc/self/fd/{entry}")
    return fds


@pytest.fixture(autouse=True)
def leaks_no_fds(stays_in_original_netns: None) -> Iterator[None]:
    """Runs after every other fixture's cleanup: TUN fds, namespace fds and netlink sockets are closed."""
    before = open_fds()
    yield
    leaked = {fd: target for fd, target in open_fds().items() if before.get(fd) != target}
    assert not leaked, f"fds left open: {leaked}"


def _new_netns() -> str:
    name = f"pywgtest-{secrets.token_hex(4)}"
    ip("netns", "add", name)
    return name


@pytest.fixture
def netns() -> Iterator[str]:
    name = _new_netns()
    try:
        yield name
    finally:
        ip("netns", "del", name, check=False)


@pytest.fixture
def tuns(netns: str) -> Iterator[Callable[..., Tun]]:
    """open_tun with cleanup; defaults to IFNAME in the test's namespace (closed before it is deleted)."""
    opened: list[Tun] = []

    def make(name: str = IFNAME, ns: str | None = netns, **kwargs: Any) -> Tun:
        tun = open_tun(name, ns, **kwargs)
        opened.append(tun)
        return tun

    yield make
    for tun in opened:
        tun.close()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


# --- packets --------------------------------------------------------------------------------------


def icmp4_echo_request(src: str, dst: str, ident: int, seq: int, payload: bytes = b"pywg") -> bytes:
    icmp = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(icmp),
        0,
        0x4000,
        64,
        1,
        0,
        ip_address(src).packed,
        ip_address(dst).packed,
    )
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + icmp


def icmp6_echo_request(src: str, dst: str, ident: int, seq: int, payload: bytes = b"pywg") -> bytes:
    s, d = ip_address(src).packed, ip_address(dst).packed
    icmp = struct.pack("!BBHHH", 128, 0, 0, ident, seq) + payload
    pseudo = s + d + struct.pack("!I3xB", len(icmp), 58)
    icmp = icmp[:2] + struct.pack("!H", checksum(pseudo + icmp)) + icmp[4:]
    return struct.pack("!IHBB", 6 << 28, len(icmp), 58, 64) + s + d + icmp


def parse_icmp(packet: bytes) -> tuple[str, str, int] | None:
    """(source, destination, ICMP type) of an ICMP or ICMPv6 packet, else None."""
    version = packet[0] >> 4
    if version == 4 and packet[9] == 1:
        ihl = (packet[0] & 0x0F) * 4
        return str(IPv4Address(packet[12:16])), str(IPv4Address(packet[16:20])), packet[ihl]
    if version == 6 and packet[6] == 58:
        return str(IPv6Address(packet[8:24])), str(IPv6Address(packet[24:40])), packet[40]
    return None


def wait_for_icmp(tun: Tun, src: str, dst: str, icmp_type: int, timeout: float = 10.0) -> bytes:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([tun.fd], [], [], 0.1)
        if not ready:
            continue
        for packet in tun.read_batch(64):
            info = parse_icmp(packet)
            seen.append(info)
            if info == (str(ip_address(src)), str(ip_address(dst)), icmp_type):
                return packet
    raise AssertionError(f"no ICMP type {icmp_type} {src} -> {dst} read from the TUN; saw {seen}")


def ping_in(ns: str, target: str, processes: list[subprocess.Popen[bytes]]) -> None:
    processes.append(
        subprocess.Popen(
            ["ip", "netns", "exec", ns, "ping", "-n", "-c", "20", "-i", "0.2", "-W", "1", target],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )


ADDRESSES = [ip_interface("10.1.2.3/32"), ip_interface("192.168.77.1/24"), ip_interface("fd00:1::3/128")]
ROUTES = [
    ip_network("10.1.2.0/24"),  # contains the interface's own address 10.1.2.3
    ip_network("192.168.77.0/24"),  # the kernel's prefix route of 192.168.77.1/24
    ip_network("10.9.0.0/16"),
    ip_network("0.0.0.0/0"),
    ip_network("fd00:1::/64"),  # contains fd00:1::3
    ip_network("::/0"),
]


@pytest.fixture
def configured(netns: str, tuns: Callable[..., Tun]) -> Tun:
    tun = tuns()
    configure_interface(netns, IFNAME, 1420, ADDRESSES, ROUTES)
    return tun


# --- netns ----------------------------------------------------------------------------------------


@pytest.mark.root
def test_resolve_netns_names_and_paths(netns: str) -> None:
    assert resolve_netns(None) is None
    assert resolve_netns(netns) == f"/run/netns/{netns}"
    assert resolve_netns(f"/run/netns/{netns}") == f"/run/netns/{netns}"
    assert resolve_netns(f"/proc/{os.getpid()}/ns/net") == f"/proc/{os.getpid()}/ns/net"


def test_resolve_missing_netns_names_it(tmp_path: Path) -> None:
    missing = f"pywgtest-missing-{secrets.token_hex(4)}"
    with pytest.raises(NamespaceNotFoundError, match=missing):
        resolve_netns(missing)
    with pytest.raises(NamespaceNotFoundError, match="/proc/999999999/ns/net"):
        resolve_netns("/proc/999999999/ns/net")
    regular = tmp_path / "not-a-namespace"
    regular.write_text("")
    with pytest.raises(NamespaceNotFoundError, match="not a network namespace"):
        resolve_netns(str(regular))
    with pytest.raises(NamespaceNotFoundError, match=missing), in_netns(missing):
        pass


@pytest.mark.root
def test_in_netns_enters_and_always_returns(netns: str) -> None:
    original = netns_identity(None)
    add_veth(netns)
    assert same_netns(None)
    assert not same_netns(netns)
    with in_netns(netns):
        assert same_netns(netns)
        assert netns_identity(None) == netns_identity(netns) != original
        assert socket.if_nametoindex("pywgveth0") > 0  # new sockets are made in the namespace
    assert netns_identity(None) == original
    with pytest.raises(OSError):
        socket.if_nametoindex("pywgveth0")

    with pytest.raises(ZeroDivisionError), in_netns(netns):
        _ = 1 / 0
    assert netns_identity(None) == original
    with in_netns(None), in_netns(f"/proc/{os.getpid()}/task/{threading.get_native_id()}/ns/net"):
        assert netns_identity(None) == original  # entering the current namespace is a no-op


@pytest.mark.root
def test_in_netns_moves_only_the_calling_thread(netns: str) -> None:
    original = netns_identity(None)
    entered, observed = threading.Event(), threading.Event()
    seen: list[tuple[int, int]] = []

    def observe() -> None:
        entered.wait(10)
        seen.append(netns_identity(None))
        observed.set()

    worker = threading.Thread(target=observe)  # started before the main thread moves
    worker.start()
    with in_netns(netns):
        entered.set()
        observed.wait(10)
        # A thread started while inside inherits the namespace (clone copies the caller's).
        child: list[tuple[int, int]] = []
        spawned = threading.Thread(target=lambda: child.append(netns_identity(None)))
        spawned.start()
        spawned.join()
    worker.join()
    assert seen == [original]
    assert child == [netns_identity(netns)]


# --- TUN ------------------------------------------------------------------------------------------


@pytest.mark.root
def test_open_tun_in_namespace_from_root(netns: str, tuns: Callable[..., Tun]) -> None:
    tun = tuns()
    assert same_netns(None) and not same_netns(netns)
    assert tun.name == IFNAME and tun.fd >= 0 and tun.is_alive()
    assert f"{tun.ifindex}: {IFNAME}:" in ip("-n", netns, "link", "show", IFNAME)
    assert ip("link", "show", IFNAME, check=False) == ""  # not in the root namespace
    assert fcntl.fcntl(tun.fd, fcntl.F_GETFL) & os.O_NONBLOCK
    flags = struct.unpack_from("H", fcntl.ioctl(tun.fd, TUNGETIFF, bytes(40)), 16)[0]
    assert flags & (IFF_TUN | IFF_NO_PI) == IFF_TUN | IFF_NO_PI and not flags & IFF_VNET_HDR
    assert tun.read_batch(8) == []
    assert link_exists(netns, IFNAME)
    assert not link_exists(None, IFNAME)


@pytest.mark.root
def test_open_tun_with_vnet_hdr(tuns: Callable[..., Tun]) -> None:
    tun = tuns(vnet_hdr=True)
    flags = struct.unpack_from("H", fcntl.ioctl(tun.fd, TUNGETIFF, bytes(40)), 16)[0]
    assert flags & IFF_VNET_HDR and tun.vnet_hdr


@pytest.mark.root
def test_open_tun_in_current_namespace(tuns: Callable[..., Tun]) -> None:
    name = f"pwt{secrets.token_hex(4)}"
    tun = tuns(name, None)
    assert tun.netns is None and tun.is_alive()
    assert link_exists(None, name)
    tun.close()
    assert not link_exists(None, name)
    assert tun.gone_reason() == "closed"


@pytest.mark.root
def test_close_deletes_the_interface(netns: str, tuns: Callable[..., Tun]) -> None:
    tun = tuns()
    tun.close()
    tun.close()  # idempotent
    assert not link_exists(netns, IFNAME)
    assert not tun.is_alive()


@pytest.mark.root
def test_existing_interface_name_is_refused(netns: str, tuns: Callable[..., Tun]) -> None:
    add_veth(netns)
    with pytest.raises(
        InterfaceExistsError, match=f"pywgveth0 already exists in network namespace '{netns}'"
    ):
        tuns("pywgveth0")
    first = tuns()
    with pytest.raises(InterfaceExistsError, match=IFNAME):
        tuns()
    assert first.is_alive()


@pytest.mark.root
def test_open_tun_missing_namespace(tuns: Callable[..., Tun]) -> None:
    missing = f"pywgtest-missing-{secrets.token_hex(4)}"
    with pytest.raises(NamespaceNotFoundError, match=missing):
        tuns(ns=missing)


@pytest.mark.root
def test_invalid_interface_name(tuns: Callable[..., Tun]) -> None:
    with pytest.raises(OSError, match="invalid interface name"):
        tuns("a" * 16)


@pytest.mark.root
def test_missing_tun_device_node_is_created(tmp_path: Path, tuns: Callable[..., Tun]) -> None:
    device = tmp_path / "dev" / "net" / "tun"
    tun = tuns(device_path=str(device))
    st = os.stat(device)
    assert stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (10, 200)
    assert tun.is_alive()


@pytest.mark.root
def test_write_to_a_down_interface_is_dropped(tuns: Callable[..., Tun]) -> None:
    tun = tuns()
    assert tun.write(icmp4_echo_request("10.1.2.77", "10.1.2.3", 1, 1)) is False
    assert tun.dropped_down == 1


@pytest.mark.root
def test_deleted_link_is_detected(netns: str, tuns: Callable[..., Tun]) -> None:
    tun = tuns()
    ip("-n", netns, "link", "del", IFNAME)
    assert not tun.is_alive()
    assert "deleted" in (tun.gone_reason() or "")
    with pytest.raises(TunGoneError) as raised:
        tun.read_batch()
    assert raised.value.errno == errno.EBADFD
    with pytest.raises(TunGoneError):
        tun.write(icmp4_echo_request("10.1.2.77", "10.1.2.3", 1, 1))
    poller = select.poll()
    poller.register(tun.fd, select.POLLIN)
    assert poller.poll(0)[0][1] & select.POLLERR  # an event loop wakes up and reads the error
    assert not link_exists(netns, IFNAME)
    assert delete_link(netns, IFNAME) is False


@pytest.mark.root
def test_delete_link(netns: str, tuns: Callable[..., Tun]) -> None:
    tun = tuns()
    assert delete_link(netns, IFNAME) is True
    assert not tun.is_alive()
    assert delete_link(netns, IFNAME) is False
    assert delete_link(f"pywgtest-missing-{secrets.token_hex(4)}", IFNAME) is False


@pytest.mark.root
def test_deleted_namespace_is_detected(tuns: Callable[..., Tun]) -> None:
    ns = _new_netns()
    try:
        tun = tuns(ns=ns)
        assert tun.is_alive()
    finally:
        ip("netns", "del", ns)
    # Our fds keep the namespace and the interface alive; only its name is gone.
    assert not tun.is_alive()
    assert "namespace" in (tun.gone_reason() or "")


# --- netconfig ------------------------------------------------------------------------------------


@pytest.mark.root
def test_configure_addresses_and_routes(netns: str, configured: Tun) -> None:
    link = ip("-n", netns, "addr", "show", "dev", IFNAME)
    assert "mtu 1420" in link and ",UP," in link
    assert "inet 10.1.2.3/32" in link and "inet 192.168.77.1/24" in link
    assert "inet6 fd00:1::3/128" in link and "tentative" not in link

    routes4 = ip("-n", netns, "-4", "route", "show", "dev", IFNAME)
    assert "10.1.2.0/24 proto static scope link" in routes4  # despite containing 10.1.2.3
    assert "192.168.77.0/24 proto kernel scope link src 192.168.77.1" in routes4
    assert "10.9.0.0/16 proto static" in routes4
    assert "default proto static" in routes4
    routes6 = ip("-n", netns, "-6", "route", "show", "dev", IFNAME)
    assert "fd00:1::/64 proto static" in routes6
    assert "default proto static" in routes6

    found = {r.dst for r in list_routes(netns, IFNAME)}
    assert set(ROUTES) <= found
    with IPRoute() as ipr_root:  # the root namespace does not see them
        assert not ipr_root.link_lookup(ifname=IFNAME)
    with in_netns(netns), IPRoute() as ipr:
        (index,) = ipr.link_lookup(ifname=IFNAME)
        assert index == configured.ifindex
        (link_msg,) = ipr.link("get", index=index)
        assert link_msg.get("mtu") == 1420
        addresses = {(a.get("address"), a["prefixlen"]) for a in ipr.addr("dump", index=index)}
        assert {("10.1.2.3", 32), ("192.168.77.1", 24), ("fd00:1::3", 128)} <= addresses


@pytest.mark.root
def test_configure_is_idempotent(netns: str, configured: Tun) -> None:
    result = configure_interface(netns, IFNAME, 1420, ADDRESSES, ROUTES)
    assert result.routes_added == [] and result.routes_skipped == []
    assert result.routes_present == ROUTES


@pytest.mark.root
def test_configure_reports_kernel_prefix_route_as_present(netns: str, tuns: Callable[..., Tun]) -> None:
    tuns()
    result = configure_interface(netns, IFNAME, 1420, ADDRESSES, ROUTES)
    assert result.routes_present == [ip_network("192.168.77.0/24")]
    assert ip_network("10.1.2.0/24") in result.routes_added


@pytest.mark.root
def test_ping_from_namespace_is_read_in_root(
    configured: Tun, netns: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    # Through the route that contains the interface's own address, and through the default routes.
    for target, source in (
        ("10.1.2.77", "10.1.2.3"),
        ("203.0.113.9", "10.1.2.3"),
        ("fd00:1::77", "fd00:1::3"),
        ("2001:db8::9", "fd00:1::3"),
    ):
        ping_in(netns, target, processes)
        request_type = 8 if ":" not in target else 128
        wait_for_icmp(configured, source, target, request_type)
    assert same_netns(None) and not same_netns(netns)


@pytest.mark.root
def test_packet_written_in_root_is_answered_in_namespace(configured: Tun) -> None:
    assert configured.write(icmp4_echo_request("10.1.2.77", "10.1.2.3", 0x1234, 1))
    wait_for_icmp(configured, "10.1.2.3", "10.1.2.77", 0)  # echo reply
    assert configured.write(icmp6_echo_request("fd00:1::77", "fd00:1::3", 0x1234, 1))
    wait_for_icmp(configured, "fd00:1::3", "fd00:1::77", 129)


@pytest.mark.root
def test_remove_routes_keeps_kernel_routes(netns: str, configured: Tun) -> None:
    gone = [ip_network("10.9.0.0/16"), ip_network("192.168.77.0/24"), ip_network("::/0")]
    assert remove_routes(netns, IFNAME, gone) == 2  # 192.168.77.0/24 is the kernel's, it stays
    found = {r.dst for r in list_routes(netns, IFNAME)}
    assert ip_network("10.9.0.0/16") not in found and ip_network("::/0") not in found
    assert ip_network("192.168.77.0/24") in found and ip_network("10.1.2.0/24") in found
    assert remove_routes(netns, IFNAME, gone) == 0
    assert remove_routes(netns, "nosuchlink", gone) == 0


@pytest.mark.root
def test_ipv6_disabled_namespace(tuns: Callable[..., Tun]) -> None:
    ns = _new_netns()
    try:
        sysctl_in(ns, "net.ipv6.conf.all.disable_ipv6", "1")
        tuns(ns=ns)
        ipv4 = [ip_interface("10.1.2.3/32")]
        result = configure_interface(ns, IFNAME, 1420, ipv4, [ip_network("10.1.2.0/24"), ip_network("::/0")])
        assert result.routes_added == [ip_network("10.1.2.0/24")]
        assert result.routes_skipped == [ip_network("::/0")]
        assert "10.1.2.0/24 proto static" in ip("-n", ns, "-4", "route", "show", "dev", IFNAME)
        with pytest.raises(IPv6UnavailableError, match=rf"fd00:1::3/128 to {IFNAME} .*disable_ipv6=1"):
            configure_interface(ns, IFNAME, 1420, [*ipv4, ip_interface("fd00:1::3/128")], [])
    finally:
        ip("netns", "del", ns)


@pytest.mark.root
def test_ipv6_needs_mtu_1280(netns: str, tuns: Callable[..., Tun]) -> None:
    tuns()
    with pytest.raises(NetconfigError, match="below 1280"):
        configure_interface(netns, IFNAME, 1200, [ip_interface("fd00:1::3/128")], [])
    configure_interface(netns, IFNAME, 1200, [ip_interface("10.1.2.3/32")], [])


@pytest.mark.root
def test_route_through_another_interface_conflicts(netns: str, tuns: Callable[..., Tun]) -> None:
    add_veth(netns)
    ip("-n", netns, "route", "add", "default", "dev", "pywgveth0")
    tuns()
    with pytest.raises(RouteConflictError, match=r"0\.0\.0\.0/0 .* through interface pywgveth0"):
        configure_interface(netns, IFNAME, 1420, [ip_interface("10.1.2.3/32")], [ip_network("0.0.0.0/0")])
    result = configure_interface(
        netns, IFNAME, 1420, [ip_interface("10.1.2.3/32")], [ip_network("0.0.0.0/0")], metric=100
    )
    assert result.routes_added == [ip_network("0.0.0.0/0")]
    assert "default proto static scope link metric 100" in ip("-n", netns, "route", "show", "dev", IFNAME)


@pytest.mark.root
def test_a_route_held_elsewhere_is_shadowed_in_the_same_call(netns: str, tuns: Callable[..., Tun]) -> None:
    add_veth(netns)
    ip("-n", netns, "route", "add", "default", "dev", "pywgveth0")
    tuns()
    wanted = [ip_network("0.0.0.0/0"), ip_network("10.9.0.0/16")]
    result = configure_interface(
        netns, IFNAME, 1420, [ip_interface("10.1.2.3/32")], wanted, shadow_metric=4096
    )
    assert result.routes_shadowed == [ip_network("0.0.0.0/0")]
    assert result.routes_added == [ip_network("10.9.0.0/16")]
    shown = ip("-n", netns, "route", "show", "dev", IFNAME)
    assert "default proto static scope link metric 4096" in shown and "10.9.0.0/16 proto static" in shown
    again = configure_interface(netns, IFNAME, 1420, [], wanted, shadow_metric=4096)
    assert again.routes_present == wanted and not again.routes_added and not again.routes_shadowed
    assert remove_routes(netns, IFNAME, wanted) == 2
    assert "dev pywgveth0" in ip("-n", netns, "route", "show", "default")


@pytest.mark.root
def test_routes_cost_one_dump_per_family_however_many(
    netns: str, tuns: Callable[..., Tun], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Secret with a thousand /32 peers: one route dump per family, not one per route (which made
    configuring quadratic and let one Pod's config hold the node agent for minutes)."""
    tuns()
    dumps: list[int] = []
    dump = netconfig._ip_routes

    def counted(family: int) -> list[Any]:
        dumps.append(family)
        return dump(family)

    monkeypatch.setattr(netconfig, "_ip_routes", counted)
    routes = [ip_network(f"10.{i // 250}.{i % 250}.1/32") for i in range(1000)] + [ip_network("fd00:9::/64")]
    result = configure_interface(netns, IFNAME, 1420, [ip_interface("10.1.2.3/32")], routes)
    assert sorted(dumps) == [socket.AF_INET, socket.AF_INET6]
    assert result.routes_added == routes
    assert set(routes) <= {r.dst for r in list_routes(netns, IFNAME)}
    dumps.clear()
    assert remove_routes(netns, IFNAME, routes) == len(routes)
    assert sorted(dumps) == [socket.AF_INET, socket.AF_INET6]
    assert not set(routes) & {r.dst for r in list_routes(netns, IFNAME)}


@pytest.mark.root
def test_missing_link_and_namespace(netns: str) -> None:
    with pytest.raises(LinkNotFoundError, match=f"nosuchlink does not exist in network namespace '{netns}'"):
        configure_interface(netns, "nosuchlink", 1420, [], [])
    missing = f"pywgtest-missing-{secrets.token_hex(4)}"
    with pytest.raises(NamespaceNotFoundError, match=missing):
        configure_interface(missing, IFNAME, 1420, [], [])
    assert not link_exists(missing, IFNAME)


def test_pywg_up_never_loads_pyroute2() -> None:
    """The daemon configures links with iproute2: pyroute2 (~20 MB once imported) stays out."""
    code = "import sys, pywg.cli, pywg.cli.commands; print('pyroute2' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.root
def test_netconfig_from_a_running_event_loop(netns: str, tuns: Callable[..., Tun]) -> None:
    tuns()

    async def main() -> bool:
        configure_interface(netns, IFNAME, 1420, [ip_interface("10.1.2.3/32")], [ip_network("10.1.2.0/24")])
        return link_exists(netns, IFNAME)

    assert asyncio.run(main())
    assert ip_network("10.1.2.0/24") in {r.dst for r in list_routes(netns, IFNAME)}


def test_state_files_tighten_modes_left_by_an_older_run(tmp_path: Path) -> None:
    state_dir = tmp_path / "pywg"
    state_dir.mkdir(mode=0o755)
    os.chmod(state_dir, 0o755)
    stale = state_dir / "wg0.json"
    stale.write_text("{}")
    os.chmod(stale, 0o644)
    State("wg0", "wg0", None, os.getpid(), None).save(state_dir)
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(stale.stat().st_mode) == 0o600
