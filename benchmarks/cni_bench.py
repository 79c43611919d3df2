"""The CNI plugin's cost on a node: ADD latency over 50 Pods, and the memory of 20 idle tunnels (issue #5).

Not a test: `sudo make bench-cni`, or `sudo python3 benchmarks/cni_bench.py [--pods N] [--idle N]
[--json PATH]`. benchmarks/README.md explains the figures. (Not `cni.py`: run as a script, that name
would hide the `cni` package from itself.)

A `node` namespace runs the node agent (`python -m cni.agent --supervise`, as tests/support/cni_run.py's
NodeAgent does) and a fake Kubernetes API (tests/support/k8s_fake.py, on the node's loopback) holding a Pod
and its Secret for each of --pods Pod namespaces; wireguard-go in a `peer` namespace, linked to the
node, is every Pod's WireGuard peer. The plugin runs inside the node's namespace, as a runtime on the
node runs it, with the CNI_* variables and the NetworkAttachmentDefinition's config on stdin, and is
timed from exec to exit:

1. `entrypoint`: the static C entrypoint (`make entrypoint`), which hands the call to the agent;
   ADD for every Pod, each followed by a ping through the new tunnel (ADD → first echo reply), then
   DEL for every Pod;
2. `python`: the same through the `pywg-cni` console script (the plugin in a Python process of its
   own), with new container IDs;
3. idle tunnels: a fresh agent, its RSS with no tunnel, then --idle ADDs (no keepalive, no traffic)
   and the RSS and PSS of its worker and supervisor together; against --idle idle wireguard-go
   processes, one interface and one peer each, in a namespace of their own. PSS shares the pages
   that several processes map among them, so it is the fairer sum for twenty copies of one binary.

Everything runs in namespaces made for the run (tests/support/topology.py) and is removed at the end, also
after a failure, Ctrl-C or SIGTERM. Progress goes to stderr, the report to stdout, the JSON to --json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import ip_interface, ip_network
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the test suite's helpers (tests/) come from this checkout

from throughput import load_average, machine  # noqa: E402

from cni.build_entrypoint import DEFAULT_OUT as ENTRYPOINT  # noqa: E402
from pywg.config import InterfaceConfig, PeerConfig  # noqa: E402
from pywg.runtime.lab import raise_interrupt  # noqa: E402
from pywg.runtime.netns import in_netns  # noqa: E402
from tests.support.cni_run import (  # noqa: E402
    ANNOTATION,
    CNI_PATH,
    PEER_TUNNEL,
    PLUGIN,
    NodeAgent,
    PodKeys,
    cni_args,
    config_json,
    netns_path,
    node_with_peer,
)
from tests.support.k8s_fake import FakeKubernetes  # noqa: E402
from tests.support.topology import OWNER, OWNER_ENV, Host, KeyPair, Topology, WireguardGo  # noqa: E402

DEFAULT_JSON = ROOT / "benchmarks" / "results" / "cni.json"
NAMESPACE = "default"
PEER_ADDRESS = PEER_TUNNEL[0].split("/")[0]
TARGET_P95_MS = 300.0
TARGET_IDLE_MB = 100.0


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class Pod:
    name: str
    host: Host
    keys: PodKeys
    container_id: str = ""
    uid: str = field(default_factory=lambda: os.urandom(16).hex())


@dataclass
class Calls:
    """Milliseconds per call, by what was called."""

    add: list[float] = field(default_factory=list)
    first_echo: list[float] = field(default_factory=list)
    delete: list[float] = field(default_factory=list)


class Node:
    def __init__(self, topology: Topology, fake: FakeKubernetes) -> None:
        self.host, self.peer = node_with_peer(topology)
        self.topology = topology
        self.fake = fake
        with in_netns(self.host.name):
            fake.start()  # its socket listens on the node's loopback, where the agent looks
        self.kubeconfig = fake.write_kubeconfig("token")
        self.agent = NodeAgent(self.host).start()

    def pods(self, count: int, keepalive: str) -> list[Pod]:
        """`count` Pod namespaces, each with its Pod object and Secret, and served by the peer."""
        pods = []
        for i in range(count):
            name = f"bench-{i}"
            keys = PodKeys(KeyPair.generate(), [f"10.1.{2 + i // 200}.{10 + i % 200}/32"])
            pod = Pod(name, self.topology.host(name), keys)
            self.fake.add_pod(NAMESPACE, name, {ANNOTATION: f"wg-{name}"}, uid=pod.uid)
            doc = config_json(keys, self.peer, [f"{PEER_ADDRESS}/32"], keepalive=keepalive)
            self.fake.add_secret(NAMESPACE, f"wg-{name}", {"config.json": json.dumps(doc)})
            pods.append(pod)
        self.peer.serve(pod.keys for pod in pods)
        return pods

    def netconf(self) -> bytes:
        conf = {
            "cniVersion": "1.1.0",
            "name": "wgnet",
            "type": "pywg-cni",
            "kubeConfigPath": str(self.kubeconfig),
            "agentSocket": str(self.agent.socket),
        }
        return json.dumps(conf).encode()

    def cni(self, binary: Path, command: str, pod: Pod) -> float:
        """Run the plugin in the node's namespace; milliseconds from exec to exit."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            OWNER_ENV: OWNER,
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": pod.container_id,
            "CNI_NETNS": netns_path(pod.host),
            "CNI_IFNAME": "net1",
            "CNI_ARGS": cni_args(NAMESPACE, pod.name, pod.container_id, pod.uid),
            "CNI_PATH": CNI_PATH,
        }
        with in_netns(self.host.name):  # the child is forked from this thread, so it runs there
            started = time.perf_counter()
            done = subprocess.run(
                [str(binary)], input=self.netconf(), capture_output=True, env=env, timeout=120, check=False
            )
            took = (time.perf_counter() - started) * 1000
        if done.returncode != 0:
            said = (done.stdout + done.stderr).decode(errors="replace").strip()[-600:]
            raise RuntimeError(f"{command} of {pod.name} through {binary.name}: {said}")
        return took


def add_and_delete(node: Node, pods: Sequence[Pod], binary: Path) -> Calls:
    calls = Calls()
    for pod in pods:
        pod.container_id = os.urandom(32).hex()
        took = node.cni(binary, "ADD", pod)
        started = time.perf_counter()
        if not pod.host.ping(PEER_ADDRESS, timeout=10):
            raise RuntimeError(f"no echo reply through the tunnel of {pod.name}")
        calls.add.append(took)
        calls.first_echo.append(took + (time.perf_counter() - started) * 1000)
    for pod in pods:
        calls.delete.append(node.cni(binary, "DEL", pod))
    if node.agent.attachments():
        raise RuntimeError(f"attachments left after DEL: {node.agent.attachments()}")
    return calls


# --- memory ---------------------------------------------------------------------------------------


def memory_kb(pids: Sequence[int]) -> dict[str, int]:
    """Summed VmRSS (/proc/PID/status) and Pss (/proc/PID/smaps_rollup) of `pids`, in kB."""
    total = {"rss_kb": 0, "pss_kb": 0}
    for pid in pids:
        total["rss_kb"] += _field_kb(f"/proc/{pid}/status", "VmRSS:")
        total["pss_kb"] += _field_kb(f"/proc/{pid}/smaps_rollup", "Pss:")
    return total


def _field_kb(path: str, name: str) -> int:
    with open(path) as handle:
        for line in handle:
            if line.startswith(name):
                return int(line.split()[1])
    raise RuntimeError(f"{path} has no {name}")


def agent_memory(node: Node) -> dict[str, dict[str, int]]:
    """Memory of the agent's worker and of its supervisor, and their sum."""
    assert node.agent.process is not None
    supervisor, worker = node.agent.process.pid, node.agent.worker_pid()
    return {
        "worker": memory_kb([worker]),
        "supervisor": memory_kb([supervisor]),
        "total": memory_kb([worker, supervisor]),
    }


def idle_agent(node: Node, pods: Sequence[Pod]) -> dict[str, Any]:
    """A fresh agent: its memory with no tunnel, then with one idle tunnel per Pod."""
    node.agent.terminate()
    node.agent.start()
    time.sleep(2)
    empty = agent_memory(node)
    for pod in pods:
        pod.container_id = os.urandom(32).hex()
        node.cni(ENTRYPOINT, "ADD", pod)
    status = node.agent.call("status")
    if status.get("tunnels") != len(pods):
        raise RuntimeError(f"the agent runs {status.get('tunnels')} tunnels, not {len(pods)}")
    time.sleep(5)
    full = agent_memory(node)
    for pod in pods:
        node.cni(ENTRYPOINT, "DEL", pod)
    return {"tunnels": len(pods), "empty": empty, "full": full}


def idle_wireguard_go(topology: Topology, count: int) -> dict[str, Any]:
    """`count` wireguard-go processes, each with an interface, an address and one peer, idle."""
    host = topology.host("gonode")
    processes = []
    for i in range(count):
        peer = PeerConfig(
            public_key=KeyPair.generate().public,
            allowed_ips=[ip_network(f"10.3.{i}.0/24")],
        )
        cfg = InterfaceConfig(
            private_key=KeyPair.generate().private,
            addresses=[ip_interface(f"10.2.0.{i + 1}/32")],
            peers=[peer],
        )
        processes.append(WireguardGo(host, cfg).start())
    time.sleep(5)
    pids = [wg.process.pid for wg in processes if wg.process is not None]
    total = memory_kb(pids)
    for wg in processes:
        wg.stop()
    return {"processes": len(pids), "total": total}


# --- figures --------------------------------------------------------------------------------------


def percentiles(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))], 1)

    return {"p50": round(statistics.median(ordered), 1), "p95": at(95), "max": round(ordered[-1], 1)}


def summarize(calls: Calls) -> dict[str, Any]:
    return {
        "add_ms": percentiles(calls.add),
        "add_to_first_echo_ms": percentiles(calls.first_echo),
        "del_ms": percentiles(calls.delete),
        "raw_ms": {"add": calls.add, "first_echo": calls.first_echo, "del": calls.delete},
    }


def render(report: dict[str, Any]) -> str:
    lines = [
        f"pywg-cni on one node, {report['date']}; load average {report['load_average_start']} -> "
        f"{report['load_average_end']}",
        "",
        f"{'path':<24} {'ADD p50/p95/max ms':>22} {'ADD → first echo p50/p95 ms':>28} {'DEL p50/p95 ms':>16}",
    ]
    for label, key in (("static entrypoint (C)", "entrypoint"), ("pywg-cni (Python)", "python")):
        r = report["add"][key]
        add, echo, dele = r["add_ms"], r["add_to_first_echo_ms"], r["del_ms"]
        lines.append(
            f"{label:<24} {add['p50']:>9} / {add['p95']} / {add['max']:<6} "
            f"{echo['p50']:>14} / {echo['p95']:<10} {dele['p50']:>8} / {dele['p95']}"
        )
    idle, go = report["idle"]["agent"], report["idle"]["wireguard_go"]
    n = idle["tunnels"]
    rows = (
        ("agent worker, no tunnel", idle["empty"]["worker"]),
        ("agent supervisor", idle["full"]["supervisor"]),
        (f"agent worker, {n} tunnels", idle["full"]["worker"]),
        (f"agent worker + supervisor, {n} tunnels", idle["full"]["total"]),
        (f"{go['processes']} × wireguard-go", go["total"]),
    )
    lines += ["", f"{'memory of ' + str(n) + ' idle tunnels, MiB':<40} {'RSS':>6} {'PSS':>6}"]
    lines += [f"  {label:<38} {m['rss_kb'] / 1024:6.1f} {m['pss_kb'] / 1024:6.1f}" for label, m in rows]
    p95 = report["add"]["entrypoint"]["add_ms"]["p95"]
    total_kib = idle["full"]["total"]["rss_kb"]  # /proc's kB are KiB
    lines += [
        "",
        f"targets: ADD p95 ≤ {TARGET_P95_MS:g} ms (entrypoint: {p95}); "
        f"{n} tunnels ≤ {TARGET_IDLE_MB:g} MB (agent + supervisor: {total_kib * 1024 / 1e6:.1f} MB)",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace, report: dict[str, Any]) -> None:
    fake = FakeKubernetes()
    try:
        with Topology() as topology:
            node = Node(topology, fake)
            say(f"{args.pods} Pod namespaces ...")
            pods = node.pods(args.pods, keepalive="0s")
            report["add"] = {}
            for key, binary in (("entrypoint", ENTRYPOINT), ("python", PLUGIN)):
                say(f"ADD and DEL of {args.pods} Pods through {binary} ...")
                report["add"][key] = summarize(add_and_delete(node, pods, binary))
            say(f"{args.idle} idle tunnels in the agent, then {args.idle} idle wireguard-go ...")
            report["idle"] = {"agent": idle_agent(node, pods[: args.idle])}
            report["idle"]["wireguard_go"] = idle_wireguard_go(topology, args.idle)
    finally:
        fake.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ADD latency and idle memory of pywg-cni on one node.")
    parser.add_argument("--pods", type=int, default=50, help="Pods to ADD and DEL per path (50)")
    parser.add_argument("--idle", type=int, default=20, help="idle tunnels to measure (20)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the results")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("cni_bench: needs root for network namespaces (sudo make bench-cni)", file=sys.stderr)
        return 1
    if not ENTRYPOINT.exists():
        print(f"cni_bench: {ENTRYPOINT} is missing; `make entrypoint` builds it", file=sys.stderr)
        return 1
    if not 1 <= args.idle <= args.pods:
        parser.error("--idle must be between 1 and --pods")
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {"pods": args.pods, "idle": args.idle},
        "load_average_start": load_average(),
    }
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        run(args, report)
    except (RuntimeError, subprocess.SubprocessError, AssertionError) as error:
        print(f"cni_bench: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cni_bench: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    report["load_average_end"] = load_average()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(render(report))
    say(f"results in {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
