"""Prometheus metrics of tunnels: per peer and per tunnel, served over HTTP by prometheus-client.

`pywg up --metrics ADDRESS:PORT` and the node agent (`--metrics`) serve /metrics; both are off unless
the operator names an address. A scrape takes one snapshot of every tunnel (`sample_device`) on the
loop that owns the devices (`on_loop`), so it never reads a device while the loop changes it, and
turns it into metric families in the HTTP server's thread.

Names follow Prometheus' conventions and, where the data is the same, prometheus_wireguard_exporter's
(what dashboards for kernel WireGuard use): `wireguard_sent_bytes_total`,
`wireguard_received_bytes_total` and `wireguard_latest_handshake_seconds` (Unix time of the last
handshake, 0 for none), with the labels `interface` and `public_key` (the peer's). The node agent adds
`namespace` and `pod`. The exporter's `allowed_ips` label is left out: a hub's peers would make it
long, and a dashboard selects peers by key. What only pywg counts is named `pywg_...`.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer

from pywg.core import encode_key

if TYPE_CHECKING:
    import asyncio

    from pywg.core import Device

T = TypeVar("T")
SAMPLE_TIMEOUT = 5.0  # a scrape waits at most this long for the loop


class MetricsAddressError(ValueError):
    """--metrics is not ADDRESS:PORT; the message says what is expected."""


@dataclass(frozen=True)
class PeerSample:
    public_key: str  # base64, as wg shows it
    rx_bytes: int
    tx_bytes: int
    last_handshake: float  # Unix time, 0: never
    rx_packets: int | None = None  # None: not known (a kernel WireGuard link does not count them)
    tx_packets: int | None = None
    handshake_attempts: int | None = None
    handshake_failures: int | None = None


@dataclass(frozen=True)
class TunnelSample:
    labels: tuple[str, ...]  # values of the collector's tunnel labels, in order
    peers: list[PeerSample]
    drops: dict[str, int] = field(default_factory=dict)


def sample_device(device: Device, labels: tuple[str, ...]) -> TunnelSample:
    """The counters of `device` now; call it on the loop that runs the device."""
    peers = [
        PeerSample(
            public_key=encode_key(peer.public_key),
            rx_bytes=peer.rx_bytes,
            tx_bytes=peer.tx_bytes,
            last_handshake=peer.last_handshake_ns / 1e9,
            rx_packets=peer.rx_packets,
            tx_packets=peer.tx_packets,
            handshake_attempts=peer.handshake_attempts,
            handshake_failures=peer.handshake_failures,
        )
        for peer in device.peers.values()
    ]
    return TunnelSample(labels, peers, dict(device.drops))


def on_loop(loop: asyncio.AbstractEventLoop, work: Callable[[], T], timeout: float = SAMPLE_TIMEOUT) -> T:
    """Run `work` on `loop` (from another thread) and return what it returned."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(work())
        except BaseException as error:
            future.set_exception(error)

    loop.call_soon_threadsafe(run)
    return future.result(timeout)


class TunnelCollector:
    """Per-peer and per-tunnel metric families of what `sample` returns at each scrape."""

    def __init__(self, labels: Sequence[str], sample: Callable[[], Iterable[TunnelSample]]) -> None:
        self.labels = list(labels)
        self.sample = sample

    def describe(self) -> list[Metric]:
        return []  # registering must not take a sample

    def collect(self) -> Iterator[Metric]:
        peer_labels = [*self.labels, "public_key"]
        families = {
            "sent": CounterMetricFamily(
                "wireguard_sent_bytes", "Bytes sent to the peer (UDP payload)", labels=peer_labels
            ),
            "received": CounterMetricFamily(
                "wireguard_received_bytes", "Bytes received from the peer (UDP payload)", labels=peer_labels
            ),
            "handshake": GaugeMetricFamily(
                "wireguard_latest_handshake_seconds",
                "Unix time of the last handshake with the peer (0: none yet)",
                labels=peer_labels,
            ),
            "sent_packets": CounterMetricFamily(
                "pywg_peer_sent_packets", "Datagrams sent to the peer", labels=peer_labels
            ),
            "received_packets": CounterMetricFamily(
                "pywg_peer_received_packets",
                "Authenticated datagrams received from the peer (data, keepalives, handshakes)",
                labels=peer_labels,
            ),
            "attempts": CounterMetricFamily(
                "pywg_peer_handshake_attempts", "Handshake initiations sent to the peer", labels=peer_labels
            ),
            "failures": CounterMetricFamily(
                "pywg_peer_handshake_failures",
                "Handshake initiations the peer did not answer within 5 s",
                labels=peer_labels,
            ),
        }
        drops = CounterMetricFamily(
            "pywg_dropped_packets",
            "Datagrams and packets the tunnel dropped, by reason (pywg stats --explain)",
            labels=[*self.labels, "reason"],
        )
        for tunnel in self.sample():
            for peer in tunnel.peers:
                values = [*tunnel.labels, peer.public_key]
                families["sent"].add_metric(values, peer.tx_bytes)
                families["received"].add_metric(values, peer.rx_bytes)
                families["handshake"].add_metric(values, peer.last_handshake)
                for name, value in (
                    ("sent_packets", peer.tx_packets),
                    ("received_packets", peer.rx_packets),
                    ("attempts", peer.handshake_attempts),
                    ("failures", peer.handshake_failures),
                ):
                    if value is not None:
                        families[name].add_metric(values, value)
            for reason, count in sorted(tunnel.drops.items()):
                drops.add_metric([*tunnel.labels, reason], count)
        yield from families.values()
        yield drops


# --- serving --------------------------------------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """A scrape every few seconds would fill the log."""


def parse_address(text: str) -> tuple[str, int]:
    """("host", port) of ADDRESS:PORT, the address an IP literal ([...] for IPv6), port 0-65535."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise MetricsAddressError(
            f"--metrics {text!r}: expected ADDRESS:PORT, e.g. 127.0.0.1:9587 or [::]:9587"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        family = ipaddress.ip_address(host).version
        port = int(port_text)
    except ValueError:
        raise MetricsAddressError(
            f"--metrics {text!r}: the address must be an IP address ([...] for IPv6) and the port a number"
        ) from None
    if family == 6 and not text.startswith("["):
        raise MetricsAddressError(f"--metrics {text!r}: write an IPv6 address in brackets, e.g. [::]:9587")
    if not 0 <= port <= 65535:
        raise MetricsAddressError(f"--metrics {text!r}: the port must be 0-65535")
    return host, port


class MetricsServer:
    """/metrics of `registry` (a new one by default) on ADDRESS:PORT: bound when made (so a taken
    port is an error at once, before a daemon detaches), served from a daemon thread once `start` is
    called."""

    def __init__(self, address: str, registry: CollectorRegistry | None = None) -> None:
        host, port = parse_address(address)
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=False)

        class Server(ThreadingWSGIServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        app = make_wsgi_app(self.registry)
        self._server = make_server(host, port, app, Server, handler_class=_QuietHandler)
        self.host, self.port = host, int(self._server.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}/metrics"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="pywg-metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
        self._server.server_close()
