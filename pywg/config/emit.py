"""A configuration written out again: as wg-quick INI, or as wireguard-cni JSON."""

from __future__ import annotations

import base64
import json
from typing import Any

from pywg.config.model import InterfaceConfig


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
