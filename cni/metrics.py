"""The node agent's Prometheus metrics (`--metrics ADDRESS:PORT`; deploy/daemonset.yaml sets it).

Per attachment and peer, with the labels namespace, pod, interface and public_key (the peer's):
the families of pywg/runtime/metrics.py (`wireguard_sent_bytes_total`,
`wireguard_received_bytes_total`, `wireguard_latest_handshake_seconds` as prometheus_wireguard_exporter
names them; `pywg_peer_*` packets and handshake attempts and failures; `pywg_dropped_packets_total`
per attachment and reason). Kernel-mode attachments report what the kernel counts: bytes and the
last handshake. Per agent:

    pywg_cni_attachments{mode}                      attachments this agent serves
    pywg_cni_operation_duration_seconds{op}         ADD, DEL, CHECK and GC latency (histogram)
    pywg_cni_kubernetes_api_errors_total{operation} failed API requests of the agent's own
                                                    (lease, event, watch)
    pywg_cni_watch_reconnects_total                 Secret watches started again after an error
    pywg_cni_watch_relists_total                    ... read again after 410 Gone
    pywg_cni_events_total{result}                   Event writes (written, failed)

Imported only with --metrics: prometheus-client costs the agent ~10 MB.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from cni import kernel
from cni.live import PodRef
from cni.state import KERNEL, USERSPACE
from pywg.core import encode_key
from pywg.runtime.metrics import (
    MetricsServer,
    PeerSample,
    TunnelCollector,
    TunnelSample,
    on_loop,
    sample_device,
)

if TYPE_CHECKING:
    import asyncio

    from cni.agent import Agent

LABELS = ("namespace", "pod", "interface")
# ADD is 10-300 ms (a kernel link, a thousand routes, DNS); CHECK and DEL a few ms
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_log = logging.getLogger("pywg-cni-agent")


class AgentMetrics:
    """/metrics of one agent: its tunnels (sampled on its loop at each scrape) and its own counters."""

    def __init__(self, agent: Agent, loop: asyncio.AbstractEventLoop, address: str) -> None:
        self.agent, self.loop = agent, loop
        self.server = MetricsServer(address)
        self.durations = Histogram(
            "pywg_cni_operation_duration_seconds",
            "Time the node agent took for an operation, failed ones included",
            ["op"],
            buckets=BUCKETS,
            registry=self.server.registry,
        )
        self.server.registry.register(TunnelCollector(LABELS, self.sample))
        self.server.registry.register(_AgentCollector(self))

    def observe(self, op: str, seconds: float) -> None:
        self.durations.labels(op).observe(seconds)

    def sample(self) -> list[TunnelSample]:
        """Userspace tunnels read on the loop; kernel links asked afterwards, here (netlink)."""
        userspace, links = on_loop(self.loop, self._on_loop)
        for labels, netns, ifname in links:
            try:
                stats = kernel.peer_stats(netns, ifname)
            except OSError as error:  # gone meanwhile
                _log.debug("metrics of %s in %s: %s", ifname, netns, error)
                continue
            peers = [
                PeerSample(encode_key(s.public_key), s.rx_bytes, s.tx_bytes, s.last_handshake) for s in stats
            ]
            userspace.append(TunnelSample(labels, peers))
        return userspace

    def _on_loop(self) -> tuple[list[TunnelSample], list[tuple[tuple[str, ...], str, str]]]:
        samples, links = [], []
        for att in self.agent.attachments.values():
            pod = PodRef.parse(att.pod)
            labels = (pod.namespace, pod.name, att.ifname) if pod else ("", att.pod, att.ifname)
            if att.mode == KERNEL:
                if att.complete:
                    links.append((labels, att.netns, att.ifname))
            elif att.tunnel is not None:
                samples.append(sample_device(att.tunnel.device, labels))
        return samples, links

    def counts(self) -> tuple[dict[str, int], dict[str, int], int, int, int, int]:
        agent = self.agent

        def read() -> tuple[dict[str, int], dict[str, int], int, int, int, int]:
            modes = {KERNEL: 0, USERSPACE: 0}
            for att in agent.attachments.values():
                modes[att.mode] += 1
            events = agent.events.counters if agent.events is not None else None
            return (
                modes,
                dict(agent.api_errors),
                agent.watch_counters.reconnects,
                agent.watch_counters.relists,
                events.written if events else 0,
                events.failed if events else 0,
            )

        return on_loop(self.loop, read)


class _AgentCollector:
    def __init__(self, metrics: AgentMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        modes, errors, reconnects, relists, written, failed = self.metrics.counts()
        attachments = GaugeMetricFamily(
            "pywg_cni_attachments", "Attachments (a Pod's interface) this node agent serves", labels=["mode"]
        )
        for mode, count in sorted(modes.items()):
            attachments.add_metric([mode], count)
        yield attachments
        api = CounterMetricFamily(
            "pywg_cni_kubernetes_api_errors",
            "Failed Kubernetes API requests of the node agent's own, by what they were for",
            labels=["operation"],
        )
        for operation in ("lease", "event", "watch"):
            api.add_metric([operation], errors.get(operation, 0))
        yield api
        yield CounterMetricFamily(
            "pywg_cni_watch_reconnects", "Secret watches started again after an error", value=reconnects
        )
        yield CounterMetricFamily(
            "pywg_cni_watch_relists",
            "Secret watches that read the Secret again after 410 Gone",
            value=relists,
        )
        events = CounterMetricFamily("pywg_cni_events", "Event writes to the API server", labels=["result"])
        events.add_metric(["written"], written)
        events.add_metric(["failed"], failed)
        yield events
