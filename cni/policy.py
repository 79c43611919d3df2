"""What the node's operator decides, and no network config, Secret or annotation can change.

Tenants write Secrets, Pods, annotations and often NetworkAttachmentDefinitions; the node agent
serves them all as root. So every host resource an attachment gets (the agent's socket and state
directory, files it reads, UDP ports, socket marks) and every bound on the work one attachment may
cause comes from here: the agent's command line (the DaemonSet's args) or, for the plugin run
directly by a runtime, the runtime's environment.

    --port-range 52000-52999   UDP ports of the Pods' tunnels: allocated from it; a Secret's
                               listenPort is honoured only inside it
    --allow-fwmark             let Secrets set `fwmark` (off: a mark could steer the node's routing,
                               e.g. kube-proxy's masquerade bit 0x4000)
    --config-dir DIR           where staticConfigPath/kubeConfigPath may point (repeatable;
                               default /etc/pywg-cni and the seed plugin's kubeconfig file)
    --max-peers, --max-prefixes, --max-addresses, --max-config-bytes, --dns-timeout
    --large-config-bytes, --large-config-share
                               configs from that size on are set up one at a time, within that
                               share of the time (cni/pacing.py)
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pywg.config import InterfaceConfig

DEFAULT_STATE_DIR = Path("/run/pywg-cni")
DEFAULT_SOCKET = DEFAULT_STATE_DIR / "agent.sock"
SOCKET_ENV = "PYWG_CNI_AGENT_SOCKET"
STATE_DIR_ENV = "PYWG_CNI_STATE_DIR"
CONFIG_DIRS_ENV = "PYWG_CNI_CONFIG_DIRS"
# NetworkAttachmentDefinitions written for schu/wireguard-cni name this kubeconfig; an operator who
# followed that guide put it there for exactly this plugin.
SEED_KUBECONFIG = Path("/etc/kubernetes/wg-cni.kubeconfig")
DEFAULT_CONFIG_DIRS = (Path("/etc/pywg-cni"), SEED_KUBECONFIG)
# Far from 51820 (a node's own WireGuard), 4789/8472 (VXLAN), 6081 (Geneve), 500/4500 (IKE), 53.
DEFAULT_PORT_RANGE = (52000, 52999)
# A hub Pod may have thousands of peers; these admit 5,000 with a /32 each and keep one Secret's
# set-up (parse, resolve, routes, peers) to a few seconds of the agent's time.
DEFAULT_MAX_PEERS = 5000
DEFAULT_MAX_PREFIXES = 20000
DEFAULT_MAX_ADDRESSES = 64
DEFAULT_MAX_CONFIG_BYTES = 1 << 20  # a Kubernetes Secret holds at most 1 MiB
DEFAULT_DNS_TIMEOUT = 10.0
# Configs from this size on (~300 peers) are set up one at a time and together use at most this
# share of the time (cni/pacing.py): a 1,000-peer hub is ~100 KB, a usual Pod's config ~0.5 KB.
DEFAULT_LARGE_CONFIG_BYTES = 32 * 1024
DEFAULT_LARGE_CONFIG_SHARE = 0.1


class PolicyError(ValueError):
    """A value of the operator's options is wrong; the message names the option."""


def configured_socket() -> Path:
    """The agent socket a plugin run by a runtime talks to: $PYWG_CNI_AGENT_SOCKET, else the default."""
    value = os.environ.get(SOCKET_ENV)
    return Path(value) if value else DEFAULT_SOCKET


def configured_state_dir(sock: Path) -> Path:
    """The state directory of an agent the plugin starts: $PYWG_CNI_STATE_DIR, else the socket's."""
    value = os.environ.get(STATE_DIR_ENV)
    return Path(value) if value else sock.parent


def configured_config_dirs() -> tuple[Path, ...]:
    value = os.environ.get(CONFIG_DIRS_ENV)
    if not value:
        return DEFAULT_CONFIG_DIRS
    return tuple(Path(p) for p in value.split(":") if p)


@dataclass(frozen=True)
class NodePolicy:
    """The operator's limits and host resources; `NodePolicy()` is the defaults."""

    port_range: tuple[int, int] = DEFAULT_PORT_RANGE
    allow_fwmark: bool = False
    config_dirs: tuple[Path, ...] = DEFAULT_CONFIG_DIRS
    max_peers: int = DEFAULT_MAX_PEERS
    max_prefixes: int = DEFAULT_MAX_PREFIXES
    max_addresses: int = DEFAULT_MAX_ADDRESSES
    max_config_bytes: int = DEFAULT_MAX_CONFIG_BYTES
    dns_timeout: float = DEFAULT_DNS_TIMEOUT
    large_config_bytes: int = DEFAULT_LARGE_CONFIG_BYTES
    large_config_share: float = DEFAULT_LARGE_CONFIG_SHARE

    @property
    def port_range_text(self) -> str:
        return f"{self.port_range[0]}-{self.port_range[1]}"

    def check(self, cfg: InterfaceConfig) -> None:
        """PolicyError naming the field and the limit where `cfg` asks for more than this node gives."""
        checks = [
            ("peers", len(cfg.peers), self.max_peers, "peers", "--max-peers"),
            (
                "allowedIPs",
                sum(len(p.allowed_ips) for p in cfg.peers),
                self.max_prefixes,
                "prefixes",
                "--max-prefixes",
            ),
            ("address", len(cfg.addresses), self.max_addresses, "addresses", "--max-addresses"),
        ]
        for field_name, count, limit, what, option in checks:
            if count > limit:
                raise PolicyError(
                    f"{field_name}: {count} {what}; this node allows at most {limit} per Pod "
                    f"(the node agent's {option})"
                )
        port = cfg.listen_port
        if port and not self.port_range[0] <= port <= self.port_range[1]:
            raise PolicyError(
                f"listenPort: {port} is outside the UDP ports this node gives Pods ({self.port_range_text}, "
                "the node agent's --port-range); leave it out to get one of them"
            )
        if cfg.fwmark and not self.allow_fwmark:
            raise PolicyError(
                "fwmark: this node does not let Pods mark the node's packets (the node agent runs without "
                "--allow-fwmark); leave it out"
            )

    def config_file(self, key: str, value: str) -> Path:
        """`value` (a network config's `key`) as a path under one of the allowed directories.

        Decided on the path alone, symlinks resolved, before anything reads it: the refusal says
        the same whether or not such a file exists on the node.
        """
        resolved = Path(os.path.realpath(value)) if value and "\0" not in value else None
        for allowed in self.config_dirs:
            base = Path(os.path.realpath(allowed))
            if resolved is not None and (resolved == base or resolved.is_relative_to(base)):
                return resolved
        places = ", ".join(str(p) for p in self.config_dirs) or "none"
        raise PolicyError(
            f"{key}: {value[:200]!r} is not in a place this node's operator allows ({places}; the node "
            "agent's --config-dir)"
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The policy's options, for the agent's command line."""
    group = parser.add_argument_group("policy (what Secrets and network configs cannot change)")
    low, high = DEFAULT_PORT_RANGE
    group.add_argument(
        "--port-range", default=f"{low}-{high}", help="UDP ports of the Pods' tunnels (%(default)s)"
    )
    group.add_argument(
        "--allow-fwmark", action="store_true", help="let Secrets set fwmark (default: refused)"
    )
    group.add_argument(
        "--config-dir",
        action="append",
        type=Path,
        help=f"where staticConfigPath/kubeConfigPath may point; repeatable (default: ${CONFIG_DIRS_ENV} "
        f"split at ':', else {', '.join(map(str, DEFAULT_CONFIG_DIRS))})",
    )
    group.add_argument(
        "--max-peers", type=int, default=DEFAULT_MAX_PEERS, help="per attachment (%(default)s)"
    )
    group.add_argument(
        "--max-prefixes",
        type=int,
        default=DEFAULT_MAX_PREFIXES,
        help="allowed-IPs per attachment (%(default)s)",
    )
    group.add_argument(
        "--max-addresses", type=int, default=DEFAULT_MAX_ADDRESSES, help="per attachment (%(default)s)"
    )
    group.add_argument(
        "--max-config-bytes", type=int, default=DEFAULT_MAX_CONFIG_BYTES, help="per attachment (%(default)s)"
    )
    group.add_argument(
        "--dns-timeout", type=float, default=DEFAULT_DNS_TIMEOUT, help="for all of a config's host names (s)"
    )
    group.add_argument(
        "--large-config-bytes",
        type=int,
        default=DEFAULT_LARGE_CONFIG_BYTES,
        help="configs from this size on are set up one at a time (%(default)s)",
    )
    group.add_argument(
        "--large-config-share",
        type=float,
        default=DEFAULT_LARGE_CONFIG_SHARE,
        help="of the time, at most, that large configs' set-up may take, together (%(default)s)",
    )


def from_arguments(args: argparse.Namespace) -> NodePolicy:
    """The policy of parsed options; PolicyError naming the option when one is wrong."""
    for name in ("max_peers", "max_prefixes", "max_addresses", "max_config_bytes", "large_config_bytes"):
        if getattr(args, name) < 1:
            raise PolicyError(f"--{name.replace('_', '-')} must be at least 1")
    if not args.dns_timeout > 0:
        raise PolicyError("--dns-timeout must be positive")
    if not 0 < args.large_config_share <= 1:
        raise PolicyError("--large-config-share must be more than 0 and at most 1")
    return NodePolicy(
        port_range=parse_port_range(args.port_range),
        allow_fwmark=args.allow_fwmark,
        config_dirs=tuple(args.config_dir) if args.config_dir else configured_config_dirs(),
        max_peers=args.max_peers,
        max_prefixes=args.max_prefixes,
        max_addresses=args.max_addresses,
        max_config_bytes=args.max_config_bytes,
        dns_timeout=args.dns_timeout,
        large_config_bytes=args.large_config_bytes,
        large_config_share=args.large_config_share,
    )


def parse_port_range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    try:
        first, last = int(low), int(high if sep else low)
    except ValueError:
        raise PolicyError(f"--port-range {text!r}: expected FIRST-LAST, e.g. 52000-52999") from None
    if not 1 <= first <= last <= 65535:
        raise PolicyError(f"--port-range {text!r}: expected 1 <= FIRST <= LAST <= 65535")
    return first, last


class PortPool:
    """The operator's port range: hands out ports no attachment holds and that bind on this node.

    Thread-safe: the agent's worker threads take ports while the loop releases them.
    """

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last
        self._held: set[int] = set()
        self._next = first
        self._lock = threading.Lock()

    def __contains__(self, port: int) -> bool:
        return self.first <= port <= self.last

    def hold(self, port: int) -> bool:
        """Mark `port` as an attachment's; False if another one holds it already."""
        with self._lock:
            if port in self._held:
                return False
            self._held.add(port)
            return True

    def release(self, port: int | None) -> None:
        with self._lock:
            self._held.discard(port or 0)

    def take(self, usable: Callable[[int], bool] = lambda port: udp_port_free(port)) -> int | None:
        """A port of the range nobody holds and `usable` accepts, now held; None if none is left."""
        size = self.last - self.first + 1
        with self._lock:
            for offset in range(size):
                port = self.first + (self._next - self.first + offset) % size
                if port not in self._held and usable(port):
                    self._held.add(port)
                    self._next = port + 1 if port < self.last else self.first
                    return port
        return None


def udp_port_free(port: int, families: Sequence[int] = (socket.AF_INET, socket.AF_INET6)) -> bool:
    """True if UDP `port` binds on every address of each family here (as a tunnel's sockets do)."""
    for family in families:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
            except OSError as error:
                if family == socket.AF_INET6 and error.errno == errno.EAFNOSUPPORT:  # no IPv6 on this node
                    continue
                return False
    return True
