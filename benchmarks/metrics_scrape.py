"""How long a Prometheus scrape of a full node's agent takes: 110 attachments (issue 12's target,
under 50 ms). Not a test: `sudo python3 benchmarks/metrics_scrape.py [--pods 110] [--scrapes 50]
[--json PATH]`; benchmarks/README.md has the figures.

The node of benchmarks/cni_bench.py (the agent alone, as the DaemonSet runs it, a fake API server, a
wireguard-go peer) with `--metrics 127.0.0.1:9587`: --pods Pods are added (20 at a time) and each
pings the peer once, so every peer has counters and a handshake; then /metrics is fetched --scrapes
times from inside the node's namespace, each timed from connect to the last byte (what a Prometheus
server on the node waits), and its size and number of samples noted. The agent's CPU time over all
scrapes (utime + stime of /proc/PID/stat) gives the cost per scrape whatever else loads the machine:
on a shared machine the wall time mostly measures the wait for a core.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cni_bench import ROOT, Node, add_in_parallel, say, unreachable
from throughput import load_average, machine

from pywg.runtime.netns import in_netns
from tests.support.k8s_fake import FakeKubernetes
from tests.support.topology import Topology

DEFAULT_JSON = ROOT / "benchmarks" / "results" / "metrics_scrape.json"
ADDRESS, PORT = "127.0.0.1", 9587
TARGET_MS = 50.0


def scrape() -> tuple[float, bytes]:
    """(milliseconds, body) of one GET /metrics; the calling thread is in the node's namespace."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection(ADDRESS, PORT, timeout=30)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    took = (time.perf_counter() - started) * 1000
    if response.status != 200:
        raise RuntimeError(f"/metrics answered {response.status}")
    return took, body


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    fake = FakeKubernetes()
    try:
        with Topology() as topology:
            node = Node(topology, fake, supervise=False, agent_args=["--metrics", f"{ADDRESS}:{PORT}"])
            say(f"{args.pods} Pods, 20 ADDs at a time ...")
            pods = node.pods(args.pods, keepalive="0s")
            add_in_parallel(node, pods, 20)
            silent = unreachable(pods)
            if silent:
                raise RuntimeError(f"no ping reply through {len(silent)} tunnels: {silent[:5]}")
            say(f"{args.scrapes} scrapes ...")
            pid = node.agent.worker_pid()
            with in_netns(node.host.name):
                scrape()  # the first one imports nothing more, but warms the agent's caches
                cpu_before = cpu_seconds(pid)
                runs = [scrape() for _ in range(args.scrapes)]
                cpu = cpu_seconds(pid) - cpu_before
    finally:
        fake.stop()
    times = sorted(took for took, _ in runs)
    body = runs[-1][1].decode()
    samples = [line for line in body.splitlines() if line and not line.startswith("#")]
    return {
        "pods": args.pods,
        "scrapes": args.scrapes,
        "ms": {
            "p50": round(statistics.median(times), 1),
            "p95": round(times[min(len(times) - 1, round(0.95 * (len(times) - 1)))], 1),
            "max": round(times[-1], 1),
        },
        "agent_cpu_ms_per_scrape": round(cpu * 1000 / args.scrapes, 1),
        "bytes": len(runs[-1][1]),
        "samples": len(samples),
        "target_ms": TARGET_MS,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time a Prometheus scrape of a full node's agent.")
    parser.add_argument("--pods", type=int, default=110, help="attachments (110)")
    parser.add_argument("--scrapes", type=int, default=50, help="scrapes to time (50)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the results")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("metrics_scrape: needs root for network namespaces", file=sys.stderr)
        return 1
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_start": load_average(),
    }
    try:
        report |= measure(args)
    except (RuntimeError, OSError) as error:
        print(f"metrics_scrape: {error}", file=sys.stderr)
        return 1
    report["load_average_end"] = load_average()
    ms = report["ms"]
    cpu = report["agent_cpu_ms_per_scrape"]
    verdict = "met" if ms["p95"] < TARGET_MS else "NOT met"
    print(
        f"scrape of {args.pods} attachments ({report['samples']} samples, {report['bytes']} bytes): "
        f"p50 {ms['p50']} ms, p95 {ms['p95']} ms, max {ms['max']} ms (target p95 < {TARGET_MS:g} ms: "
        f"{verdict}); the agent's CPU {cpu} ms per scrape; load average {report['load_average_start']} "
        f"-> {report['load_average_end']}"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
