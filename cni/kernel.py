"""Kernel WireGuard links for the node agent's `kernel` mode (pyroute2: rtnetlink and WireGuard's
generic netlink).

A link is created in the agent's network namespace under a temporary name and configured there (private
key, listen port, fwmark, peers), so its UDP socket is bound in the node's namespace: the kernel keeps a
WireGuard link's socket in the namespace the link was created in, wherever the link moves. It is then
moved into the Pod's namespace and renamed to the CNI interface name; the agent sets its MTU, addresses
and routes there as it does for a TUN (cni/agent.py `_configure`). The link then needs no process: it
lives in the Pod's namespace and goes with it.

Every function here blocks (netlink round trips); the agent runs them in its worker thread, where no
asyncio loop runs, which pyroute2's synchronous sockets need.
"""

from __future__ import annotations

import errno
import os
import secrets
import threading
from base64 import b64decode
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any

from pyroute2 import IPRoute, WireGuard
from pyroute2.netlink.exceptions import NetlinkError

from pywg.config import InterfaceConfig, PeerConfig
from pywg.core import Endpoint, encode_key
from pywg.runtime.netns import in_netns

KIND = "wireguard"
TEMPORARY_PREFIX = "wgcni"  # + 10 hex digits: 15 characters, the longest interface name
PROBE_PREFIX = "wgprobe"  # + 8 hex digits
# what creating a link of a kind the kernel lacks answers ("Unknown device type" from `ip link`)
NO_WIREGUARD = (errno.EOPNOTSUPP,)
Network = IPv4Network | IPv6Network

_probe_lock = threading.Lock()
_probe_result: list[str | None] = []  # empty until probed; then [None] (available) or [reason]


class KernelError(OSError):
    """A netlink step failed; the message names the step, the link and the namespace."""


@dataclass
class DeviceState:
    """What the kernel reports for a WireGuard link."""

    public_key: bytes | None = None
    listen_port: int = 0
    peers: dict[bytes, set[Network]] = field(default_factory=dict)


def temporary_name() -> str:
    return TEMPORARY_PREFIX + secrets.token_hex(5)


@contextmanager
def _step(what: str) -> Iterator[None]:
    """A netlink error becomes a KernelError saying what was being done."""
    try:
        yield
    except NetlinkError as error:
        raise KernelError(error.code, f"{what}: {os.strerror(error.code)}") from None


# --- is there WireGuard in this kernel? -----------------------------------------------------------


def missing() -> str | None:
    """None when a WireGuard link can be created in this namespace, else why not (probed once)."""
    with _probe_lock:
        if not _probe_result:
            _probe_result.append(_probe())
        return _probe_result[0]


def probed() -> tuple[bool, str | None]:
    """(True, what `missing` returns) once it was probed, else (False, None): no lock, no probe."""
    found = _probe_result[:1]
    return (True, found[0]) if found else (False, None)


def _probe() -> str | None:
    name = PROBE_PREFIX + secrets.token_hex(4)
    with IPRoute() as ipr:
        try:
            ipr.link("add", ifname=name, kind=KIND)
        except NetlinkError as error:
            why = os.strerror(error.code)
            if error.code in NO_WIREGUARD:
                return f"the kernel of this node has no WireGuard (creating a WireGuard link: {why})"
            return f"creating a WireGuard link failed: {why}"
        _delete_wireguard(ipr, name)
    return None


# --- creating ---------------------------------------------------------------------------------------


def create(
    cfg: InterfaceConfig, endpoints: list[Endpoint | None], temporary: str, netns: str, ifname: str
) -> None:
    """Create and configure `temporary` here, then move it into `netns` as `ifname`, still down.

    On failure the link is deleted wherever it got to (by its temporary name: a failed rename leaves
    it so, and `ifname` may then be someone else's), and KernelError is raised.
    """
    try:
        _add_link(temporary)
        _set_device(temporary, cfg, endpoints)
        _move(temporary, netns, ifname)
    except BaseException:
        remove_temporary(temporary)
        delete(netns, temporary)
        raise


def listen_port(netns: str, ifname: str) -> int:
    """The UDP port of `ifname`: a link binds its socket (a free port for 0) only once it is up."""
    with _wireguard_in(netns) as wg:
        return _state(wg, ifname).listen_port


def _add_link(name: str) -> None:
    with IPRoute() as ipr, _step(f"creating WireGuard link {name}"):
        ipr.link("add", ifname=name, kind=KIND)


def _set_device(name: str, cfg: InterfaceConfig, endpoints: list[Endpoint | None]) -> None:
    """Private key, port, fwmark, then one request per peer."""
    with WireGuard() as wg:
        _wg_set(wg, name, "the private key and listen port", **_device_args(cfg))
        for index, (peer, endpoint) in enumerate(zip(cfg.peers, endpoints, strict=True)):
            _wg_set(wg, name, f"peers[{index}]", peer=_peer_args(peer, endpoint))


def _peer_args(peer: PeerConfig, endpoint: Endpoint | None) -> dict[str, Any]:
    args: dict[str, Any] = {
        "public_key": encode_key(peer.public_key),
        "allowed_ips": [str(net) for net in peer.allowed_ips],
        "persistent_keepalive": peer.persistent_keepalive,
    }
    if peer.preshared_key is not None:
        args["preshared_key"] = encode_key(peer.preshared_key)
    if endpoint is not None:
        args["endpoint_addr"], args["endpoint_port"] = endpoint
    return args


def update(netns: str, ifname: str, cfg: InterfaceConfig, endpoints: list[Endpoint | None]) -> None:
    """A live config update of the link `ifname` in `netns`, as `wg syncconf` does it: key, port and
    fwmark set (the kernel keeps everything when they are unchanged), peers that are not in `cfg`
    removed, the others set with their allowed IPs replaced. Unchanged peers keep their sessions.
    `cfg.listen_port` is the port the link is to have."""
    with _wireguard_in(netns) as wg:
        args = _device_args(cfg)
        args.setdefault("fwmark", 0)
        _wg_set(wg, ifname, "the private key and listen port", **args)
        wanted = {peer.public_key for peer in cfg.peers}
        for key in _state(wg, ifname).peers.keys() - wanted:
            _wg_set(
                wg,
                ifname,
                f"removing peer {encode_key(key)}",
                peer={"public_key": encode_key(key), "remove": True},
            )
        for index, (peer, endpoint) in enumerate(zip(cfg.peers, endpoints, strict=True)):
            args = _peer_args(peer, endpoint) | {"replace_allowed_ips": True}
            args.setdefault("preshared_key", encode_key(bytes(32)))  # none: the kernel's all-zero key
            _wg_set(wg, ifname, f"peers[{index}]", peer=args)


@dataclass
class PeerStats:
    public_key: bytes
    rx_bytes: int
    tx_bytes: int
    last_handshake: float  # Unix time, 0: never


def peer_stats(netns: str, ifname: str) -> list[PeerStats]:
    """What the kernel counts for each peer of `ifname` in `netns` (for metrics)."""
    with _wireguard_in(netns) as wg, _step(f"reading WireGuard link {ifname}"):
        messages = list(wg.info(ifname))
    found = []
    for message in messages:
        for peer in message.get_attr("WGDEVICE_A_PEERS") or []:
            stamp = peer.get_attr("WGPEER_A_LAST_HANDSHAKE_TIME")
            seconds = float(stamp["tv_sec"]) + float(stamp["tv_nsec"]) / 1e9 if stamp is not None else 0.0
            found.append(
                PeerStats(
                    _key(peer.get_attr("WGPEER_A_PUBLIC_KEY")),
                    int(peer.get_attr("WGPEER_A_RX_BYTES") or 0),
                    int(peer.get_attr("WGPEER_A_TX_BYTES") or 0),
                    seconds,
                )
            )
    return found


def _device_args(cfg: InterfaceConfig) -> dict[str, Any]:
    args: dict[str, Any] = {"private_key": encode_key(cfg.private_key), "listen_port": cfg.listen_port or 0}
    if cfg.fwmark:
        args["fwmark"] = cfg.fwmark
    return args


def _wg_set(wg: WireGuard, name: str, what: str, **args: Any) -> None:
    with _step(f"setting {what} of WireGuard link {name}"):
        wg.set(name, **args)


def _move(name: str, netns: str, ifname: str) -> None:
    """Into `netns` under its temporary name, then renamed there (a name clash stays inside the Pod)."""
    fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with IPRoute() as ipr, _step(f"moving {name} into {netns}"):
            ipr.link("set", index=_index(ipr, name), net_ns_fd=fd)
    finally:
        os.close(fd)
    with in_netns(netns), IPRoute() as ipr, _step(f"renaming {name} to {ifname} in {netns}"):
        ipr.link("set", index=_index(ipr, name), ifname=ifname)


def _index(ipr: IPRoute, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise KernelError(errno.ENODEV, f"WireGuard link {name} disappeared")
    return int(found[0])


# --- removing -------------------------------------------------------------------------------------


def delete(netns: str, ifname: str) -> bool:
    """Delete WireGuard link `ifname` in `netns`; a link of another kind is left alone. False when
    there was none (or no such namespace)."""
    try:
        with in_netns(netns), IPRoute() as ipr:
            return _delete_wireguard(ipr, ifname)
    except FileNotFoundError:
        return False


def remove_temporary(temporary: str) -> bool:
    """Delete a link left under its temporary name in the agent's namespace (an add cut short)."""
    with IPRoute() as ipr:
        return _delete_wireguard(ipr, temporary)


def _delete_wireguard(ipr: IPRoute, name: str) -> bool:
    found = ipr.link_lookup(ifname=name)
    if not found or _kind(ipr, int(found[0])) != KIND:
        return False
    try:
        ipr.link("del", index=int(found[0]))
    except NetlinkError as error:
        if error.code == errno.ENODEV:
            return False  # gone meanwhile (its namespace went)
        raise KernelError(error.code, f"deleting {name}: {os.strerror(error.code)}") from None
    return True


def _kind(ipr: IPRoute, index: int) -> str | None:
    info = ipr.link("get", index=index)[0].get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


# --- checking -------------------------------------------------------------------------------------


def problems(cfg: InterfaceConfig, netns: str, ifname: str) -> list[str]:
    """What differs between the link `ifname` in `netns` and `cfg`: kind, key, peers, allowed IPs.
    (Its state, addresses and routes are the agent's `link_problems`.)"""
    with in_netns(netns), IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return []  # link_problems reports it
        kind = _kind(ipr, int(found[0]))
    if kind != KIND:
        return [f"{ifname} in {netns} is a {kind or 'plain'} link, not a WireGuard one"]
    with _wireguard_in(netns) as wg:
        state = _state(wg, ifname)
    return _differences(cfg, state, ifname)


@contextmanager
def _wireguard_in(netns: str) -> Iterator[WireGuard]:
    """A WireGuard generic netlink socket in `netns` (a socket answers for its own namespace)."""
    with in_netns(netns):
        wg = WireGuard()
    try:
        yield wg
    finally:
        wg.close()


def _differences(cfg: InterfaceConfig, state: DeviceState, ifname: str) -> list[str]:
    found = []
    if state.public_key != cfg.public_key:
        found.append(f"{ifname} has another private key than the config's")
    wanted = {peer.public_key: set(peer.allowed_ips) for peer in cfg.peers}
    for key in wanted.keys() - state.peers.keys():
        found.append(f"peer {encode_key(key)} is missing from {ifname}")
    for key in state.peers.keys() - wanted.keys():
        found.append(f"{ifname} has peer {encode_key(key)}, which is not in the config")
    for key in wanted.keys() & state.peers.keys():
        if state.peers[key] != wanted[key]:
            shown = ", ".join(sorted(map(str, state.peers[key]))) or "none"
            found.append(f"peer {encode_key(key)} has allowed IPs {shown}, not those of the config")
    return found


def _state(wg: WireGuard, name: str) -> DeviceState:
    """The device as WG_CMD_GET_DEVICE dumps it (several messages when it has many peers)."""
    state = DeviceState()
    with _step(f"reading WireGuard link {name}"):
        messages = list(wg.info(name))
    for message in messages:
        if (public := message.get_attr("WGDEVICE_A_PUBLIC_KEY")) is not None:
            state.public_key = _key(public)
        state.listen_port = message.get_attr("WGDEVICE_A_LISTEN_PORT") or state.listen_port
        for peer in message.get_attr("WGDEVICE_A_PEERS") or []:
            key = _key(peer.get_attr("WGPEER_A_PUBLIC_KEY"))
            allowed = state.peers.setdefault(key, set())
            allowed |= {ip_network(a["addr"]) for a in peer.get_attr("WGPEER_A_ALLOWEDIPS") or []}
    return state


def _key(value: Any) -> bytes:
    """pyroute2 decodes a key attribute to its base64 text."""
    try:
        raw = b64decode(value, validate=True)
    except (TypeError, ValueError):
        raw = b""
    if len(raw) != 32:
        raise KernelError(errno.EPROTO, "the kernel reported a key that is not 32 bytes of base64")
    return raw
