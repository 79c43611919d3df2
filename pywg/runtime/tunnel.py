"""`pywg up`: turn an InterfaceConfig into a running tunnel, reload it, take it down.

Setting up is all-or-nothing: whatever step fails, what the earlier steps
created is removed before the error is reported.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network

from pywg.config import InterfaceConfig
from pywg.core import Device, Endpoint
from pywg.core.constants import DEFAULT_MTU
from pywg.native.hotpath import data_path_crypto
from pywg.runtime import netconfig, tun_offload
from pywg.runtime.engine import Engine
from pywg.runtime.netns import resolve_netns
from pywg.runtime.oserror import describe_os_error
from pywg.runtime.resolve import resolve_endpoints
from pywg.runtime.system import SystemClock, system_rng
from pywg.runtime.tun import Tun, open_tun
from pywg.runtime.uapi_server import UapiNameTaken
from pywg.runtime.udp import UdpSockets

_log = logging.getLogger("pywg")


class SetupError(Exception):
    """One line for the user: what failed and why."""


@dataclass
class Tunnel:
    config: InterfaceConfig
    interface: str
    netns: str | None
    name: str
    tun: Tun
    udp: UdpSockets
    device: Device
    engine: Engine
    routes: list[IPv4Network | IPv6Network] = field(default_factory=list)

    def close(self) -> None:
        """Remove everything: closing the TUN deletes the link with its addresses and routes."""
        self.engine.uapi.close()
        self.tun.close()
        self.udp.close()


def apply_peers(device: Device, cfg: InterfaceConfig, endpoints: list[Endpoint | None]) -> None:
    """Make the device's peers exactly those of `cfg`; unchanged peers keep their sessions."""
    now = device.clock.monotonic()
    wanted = {peer.public_key for peer in cfg.peers}
    for public_key in [key for key in device.peers if key not in wanted]:
        device.remove_peer(public_key)
    for peer_cfg, endpoint in zip(cfg.peers, endpoints, strict=True):
        peer = device.peers.get(peer_cfg.public_key)
        if peer is None:
            peer = device.add_peer(peer_cfg.public_key, peer_cfg.preshared_key, endpoint)
        else:
            peer.preshared_key = peer_cfg.preshared_key
            if endpoint is not None:
                peer.set_endpoint(endpoint)
        current = set(device.allowed_ips.entries_for(peer))
        for network in current - set(peer_cfg.allowed_ips):
            device.allowed_ips.remove(network, peer)
        for network in peer_cfg.allowed_ips:
            if network not in current:
                device.allowed_ips.insert(network, peer)
        if peer.persistent_keepalive != peer_cfg.persistent_keepalive:
            peer.set_persistent_keepalive(peer_cfg.persistent_keepalive, now)


def build_tunnel(cfg: InterfaceConfig, interface: str, netns_spec: str | None, name: str) -> Tunnel:
    """Create and configure everything; on any failure remove what was made and raise SetupError."""
    endpoints = resolve_endpoints(cfg)
    try:
        netns = resolve_netns(netns_spec)
    except OSError as error:
        raise SetupError(str(error)) from None
    where = f" in network namespace {netns_spec}" if netns_spec else ""
    if netconfig.link_exists(netns, interface):
        raise SetupError(f"interface {interface} already exists{where}")
    mtu = cfg.mtu or DEFAULT_MTU
    cleanup = contextlib.ExitStack()
    with cleanup:
        try:
            tun = open_tun(interface, netns, vnet_hdr=tun_offload.available())
        except OSError as error:
            raise SetupError(f"cannot create TUN {interface}{where}: {error}") from None
        cleanup.callback(tun.close)
        routes = cfg.allowed_prefixes
        try:
            netconfig.configure_interface(netns, interface, mtu, cfg.addresses, routes)
        except OSError as error:
            raise SetupError(f"cannot configure {interface}{where}: {error}") from None
        tunnel = tunnel_on_tun(cfg, tun, name, endpoints, routes)
        cleanup.pop_all()
    return tunnel


def tunnel_on_tun(
    cfg: InterfaceConfig,
    tun: Tun,
    name: str,
    endpoints: list[Endpoint | None],
    routes: list[IPv4Network | IPv6Network],
    listen_port: int | None = None,
) -> Tunnel:
    """The UDP sockets, device, engine and UAPI socket for an open TUN whose interface is configured.

    For callers that make the TUN themselves (a persistent one, one re-attached with attach_tun).
    The UDP sockets are opened in the calling thread's namespace, on `listen_port` if given, else
    the config's port, else a free one. On failure what this made is removed, the TUN is left to the
    caller, and SetupError is raised; on success the Tunnel owns the TUN.
    """
    mtu = cfg.mtu or DEFAULT_MTU
    port = listen_port if listen_port is not None else cfg.listen_port or 0
    cleanup = contextlib.ExitStack()
    with cleanup:
        try:
            udp = UdpSockets(port, cfg.fwmark)
        except OSError as error:
            raise SetupError(f"cannot listen on UDP port {port}: {error.strerror or error}") from None
        cleanup.callback(udp.close)
        crypto = data_path_crypto()
        device = Device(cfg.private_key, clock=SystemClock(), rng=system_rng, mtu=mtu, crypto=crypto)
        device.listen_port, device.fwmark = udp.port, cfg.fwmark
        engine = Engine(device, tun, udp, name)
        try:
            engine.uapi.bind()
        except OSError as error:
            advice = "; choose another with --name" if isinstance(error, UapiNameTaken) else ""
            raise SetupError(f"cannot serve UAPI as {name!r}: {describe_os_error(error)}{advice}") from None
        cleanup.callback(engine.uapi.close)
        apply_peers(device, cfg, endpoints)
        cleanup.pop_all()
    return Tunnel(cfg, tun.name, tun.netns, name, tun, udp, device, engine, routes)


def reload_tunnel(tunnel: Tunnel, cfg: InterfaceConfig) -> None:
    """Apply a changed config in place, as `wg syncconf` plus address and route changes."""
    endpoints = resolve_endpoints(cfg)
    with tunnel.engine.turn():
        _reload_device(tunnel, cfg, endpoints)
    _log.info("configuration reloaded: %d peers, %d routes", len(cfg.peers), len(tunnel.routes))


def _reload_device(tunnel: Tunnel, cfg: InterfaceConfig, endpoints: list[Endpoint | None]) -> None:
    device = tunnel.device
    device.set_private_key(cfg.private_key)
    if (cfg.listen_port or 0) not in (0, tunnel.udp.port):
        device.listen_port = tunnel.engine.set_listen_port(cfg.listen_port or 0)
    if cfg.fwmark != tunnel.udp.fwmark:
        tunnel.udp.set_fwmark(cfg.fwmark)
        device.fwmark = cfg.fwmark
    apply_peers(device, cfg, endpoints)
    routes = cfg.allowed_prefixes
    kept = set(routes)
    stale = [route for route in tunnel.routes if route not in kept]
    mtu = cfg.mtu or DEFAULT_MTU
    netconfig.remove_routes(tunnel.netns, tunnel.interface, stale)
    netconfig.remove_addresses(
        tunnel.netns, tunnel.interface, [a for a in tunnel.config.addresses if a not in cfg.addresses]
    )
    netconfig.configure_interface(tunnel.netns, tunnel.interface, mtu, cfg.addresses, routes)
    device.mtu = mtu
    tunnel.config, tunnel.routes = cfg, routes
    tunnel.engine.flush()
