"""The configuration model: what both formats parse into, and what the runtime and the CNI use."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Interface, IPv4Network, IPv6Interface, IPv6Network

from pywg.core.crypto import public_key as _derive_public_key

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
class EndpointSpec:
    """A peer's UDP endpoint as configured: an IP literal or a host name, not yet resolved.

    The runtime resolves it into the core's `Endpoint` (pywg/core/endpoint.py), a socket address.

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
    endpoint: EndpointSpec | None = None
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

    # (private key, its public key): derived once, not at each of the agent's several uses per ADD
    _public: tuple[bytes, bytes] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def public_key(self) -> bytes:
        cached = self._public
        if cached is None or cached[0] is not self.private_key:
            cached = self._public = (self.private_key, _derive_public_key(self.private_key))
        return cached[1]

    @property
    def allowed_prefixes(self) -> list[Network]:
        """Every peer's allowed-IPs prefix once, in order: what is routed through the interface. (A
        dict: a list's `in` made a hub's 5,000 peers quadratic, seconds of the node agent's CPU.)"""
        return list(dict.fromkeys(net for peer in self.peers for net in peer.allowed_ips))
