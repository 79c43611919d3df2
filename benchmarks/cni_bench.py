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
import contextlib
import datetime
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from ipaddress import ip_interface, ip_network
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the test suite's helpers (tests/) come from this checkout

from throughput import load_average, machine  # noqa: E402

from cni.build_entrypoint import DEFAULT_OUT as ENTRYPOINT  # noqa: E402
from pywg.config import InterfaceConfig, PeerConfig  # noqa: E402
from pywg.runtime.lab import raise_interrupt, upstream_wireguard_go  # noqa: E402
from pywg.runtime.netns import in_netns  # noqa: E402
from pywg.runtime.uapi_server import query, socket_path  # noqa: E402
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
TARGET_FULL_RSS_MB = 150.0  # 110 idle tunnels in one agent (issue #13)
TARGET_RECOVERY_S = 10.0
TARGET_KEPT = 0.8  # a tunnel's throughput while another tenant attacks, of its throughput alone


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
    """`supervise`: the agent under its supervisor, else alone as the DaemonSet runs it (the kubelet
    restarts it; here the benchmark does)."""

    def __init__(
        self, topology: Topology, fake: FakeKubernetes, supervise: bool = True, agent_args: Sequence[str] = ()
    ) -> None:
        self.host, self.peer = node_with_peer(topology)
        self.topology = topology
        self.fake = fake
        with in_netns(self.host.name):
            fake.start()  # its socket listens on the node's loopback, where the agent looks
        self.kubeconfig = fake.write_kubeconfig("token")
        args = ["--config-dir", str(self.kubeconfig.parent), *agent_args]
        self.agent = NodeAgent(self.host, args=args, supervise=supervise).start()

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
            **self.agent.plugin_env([self.kubeconfig.parent]),
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


def idle_wireguard_go(topology: Topology, count: int, binary: Path, host_name: str) -> dict[str, Any]:
    """`count` processes of the wireguard-go at `binary`, each with an interface, an address and one
    peer, idle, in namespace `host_name`."""
    host = topology.host(host_name)
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
        processes.append(WireguardGo(host, cfg, binary=str(binary)).start())
    time.sleep(5)
    pids = [wg.process.pid for wg in processes if wg.process is not None]
    total = memory_kb(pids)
    for wg in processes:
        wg.stop()
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    return {"processes": len(pids), "total": total, "binary": str(binary), "version": version.split("\n")[0]}


# --- a full node -----------------------------------------------------------------------------------

# 64 KiB of TCP over IPv4 with gso_size 1, behind a virtio_net_hdr, written on net1 with AF_PACKET as
# fast as one process can: the frame that used to become 65,000 packets in the agent (issue #13).
_GSO_FLOOD = r"""
import signal, socket, struct, sys, time
ifname, source, destination, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # to the `finally` below
payload = 65535 - 40
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + payload, 0, 0x4000, 64, 6, 0,
                 socket.inet_aton(source), socket.inet_aton(destination))
tcp = struct.pack("!HHIIBBHHH", 40000, 5201, 1, 0, 5 << 4, 0x18, 65535, 0, 0)
vnet = struct.pack("<BBHHHH", 1, 1, 40, 1, 20, 16)  # NEEDS_CSUM, TCPV4, hdr_len, gso_size 1, csum
frame = vnet + ip + tcp + bytes(payload)
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.setsockopt(263, 15, 1)  # SOL_PACKET, PACKET_VNET_HDR
sent, end = 0, time.monotonic() + seconds
print("ready", flush=True)
try:
    while time.monotonic() < end:
        try:
            sock.sendto(frame, (ifname, 0x0800))
            sent += 1
        except OSError:
            time.sleep(0.001)
finally:
    print(sent, flush=True)
"""


# The kubelet gives a Pod without CPU requests (BestEffort) cpu.shares 2 (cgroup v1) or cpu.weight 1
# (v2), against 1024 / 100 for system services such as the node agent's DaemonSet.
_BEST_EFFORT = {"/sys/fs/cgroup/cpu": ("cpu.shares", "2"), "/sys/fs/cgroup": ("cpu.weight", "1")}


@contextlib.contextmanager
def best_effort_cgroup() -> Iterator[Path | None]:
    """A CPU cgroup with the kubelet's BestEffort share, removed after; None if the machine has no
    CPU controller this can use."""
    for root, (knob, value) in _BEST_EFFORT.items():
        if not (Path(root) / knob).exists() and not (Path(root) / "cgroup.controllers").exists():
            continue
        group = Path(root) / f"pywg-bench-{os.getpid()}"
        try:
            group.mkdir()
            (group / knob).write_text(value)
        except OSError:
            with contextlib.suppress(OSError):
                group.rmdir()
            continue
        try:
            yield group
        finally:
            for _ in range(50):  # the processes in it are gone by now, or going
                try:
                    group.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
        return
    yield None


def add_in_parallel(node: Node, pods: Sequence[Pod], in_flight: int) -> list[float]:
    """ADD through the entrypoint for every Pod, `in_flight` at a time, as a kubelet does; ms each."""

    def add(pod: Pod) -> float:
        pod.container_id = os.urandom(32).hex()
        return node.cni(ENTRYPOINT, "ADD", pod)

    with ThreadPoolExecutor(max_workers=in_flight) as pool:
        return list(pool.map(add, pods))


def unreachable(pods: Sequence[Pod], timeout: float = 10.0) -> list[str]:
    """The Pods whose ping to the peer through net1 gets no reply within `timeout` s."""
    with ThreadPoolExecutor(max_workers=16) as pool:
        answered = list(pool.map(lambda pod: pod.host.ping(PEER_ADDRESS, timeout=timeout), pods))
    return [pod.name for pod, ok in zip(pods, answered, strict=True) if not ok]


def recovery_after_kill(node: Node, pods: Sequence[Pod]) -> dict[str, Any]:
    """kill -9 of the agent, restarted at once (as the kubelet restarts a crashed container): the
    seconds until every Pod's ping through net1 is answered again (ping every 0.2 s, timestamps)."""
    pingers = [
        pod.host.popen(["ping", "-n", "-D", "-i", "0.2", "-W", "1", PEER_ADDRESS], stdout=subprocess.PIPE)
        for pod in pods
    ]
    time.sleep(2)  # every ping answered before the kill
    assert node.agent.process is not None
    worker = node.agent.worker_pid()
    killed = time.time()
    os.kill(worker, signal.SIGKILL)
    node.agent.process.wait()
    node.agent.process = None
    node.agent.start()
    started = time.time() - killed
    time.sleep(15)
    back: list[float | None] = []
    for pinger in pingers:
        pinger.terminate()
        out, _ = pinger.communicate(timeout=10)
        replies = [
            float(line[1:].split("]")[0]) for line in out.decode().splitlines() if line.startswith("[")
        ]
        after = [t for t in replies if t > killed + 0.3]  # a reply already on its way at the kill aside
        back.append(after[0] - killed if after else None)
    missing = sum(1 for b in back if b is None)
    seconds = [b for b in back if b is not None]
    return {
        "pods": len(pods),
        "agent_answering_after_s": round(started, 2),
        "all_back_after_s": None if missing else round(max(seconds), 2),
        "median_back_after_s": round(statistics.median(seconds), 2) if seconds else None,
        "never_back": missing,
    }


def iperf_gbps(pod: Pod, seconds: float) -> float:
    done = pod.host.run(
        ["iperf3", "-c", PEER_ADDRESS, "-t", str(seconds), "-J"], check=True, timeout=seconds + 30
    )
    return json.loads(done.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9


def big_secret(node: Node, pod: Pod, peers: int) -> None:
    """The Pod's Secret with `peers` - 1 more peers (keys of nobody), a /32 each: a hub's config."""
    doc = config_json(pod.keys, node.peer, [f"{PEER_ADDRESS}/32"], keepalive="0s")
    doc["peers"] += [
        {
            "publicKey": KeyPair.generate().public_b64,
            "allowedIPs": [f"10.{100 + i // 65536}.{i // 256 % 256}.{i % 256}/32"],
        }
        for i in range(peers - 1)
    ]
    node.fake.add_secret(NAMESPACE, f"wg-{pod.name}", {"config.json": json.dumps(doc)})


def under_attack(
    node: Node, reference: Pod, hub: Pod, flooder: Pod, fresh: Sequence[Pod], args: argparse.Namespace
) -> dict[str, Any]:
    """`reference`'s TCP throughput alone; then, while `hub`'s Secret of --hub-peers peers is added
    and deleted again and again and `flooder` writes gso_size-1 frames on its net1 (--attack: both,
    or one of them), first `reference`'s throughput again (twice), then the ADDs of `fresh` Pods,
    all at once (the two are measured one after the other, so that neither is the other's load);
    then its throughput alone again. Kept: the mean under attack over the mean alone."""
    best_effort = args.flooder_cpu == "best-effort"
    with best_effort_cgroup() if best_effort else contextlib.nullcontext() as cgroup:
        server = node.peer.host.popen(["iperf3", "-s", "-B", PEER_ADDRESS])
        time.sleep(0.5)
        stop = threading.Event()
        hub_adds: list[float] = []

        def churn() -> None:
            while not stop.is_set():
                hub_adds.append(node.cni(ENTRYPOINT, "ADD", hub))
                node.cni(ENTRYPOINT, "DEL", hub)

        try:
            # Alone before and after the attack, and twice under it: one transfer each way would
            # be as noisy as the effect on this shared machine.
            alone = [iperf_gbps(reference, args.seconds)]
            flood = None
            if args.attack in ("both", "flood"):
                flood_address = flooder.keys.addresses[0].split("/")[0]
                command = [sys.executable, "-c", _GSO_FLOOD, "net1", flood_address, PEER_ADDRESS, "3600"]
                flood = flooder.host.popen(command, stdout=subprocess.PIPE)
                if cgroup is not None:  # the flooding Pod as a BestEffort Pod (--flooder-cpu)
                    (cgroup / "cgroup.procs").write_text(str(flood.pid))
                assert flood.stdout is not None and flood.stdout.readline() == b"ready\n"
            hub.container_id = os.urandom(32).hex()
            churner = threading.Thread(target=churn) if args.attack in ("both", "secret") else None
            if churner is not None:
                churner.start()
            try:
                time.sleep(1)
                attacked = [iperf_gbps(reference, args.seconds) for _ in range(2)]
                adds = add_in_parallel(node, fresh, args.in_flight)
            finally:
                stop.set()
                if churner is not None:
                    churner.join()
                frames = b""
                if flood is not None:
                    flood.terminate()
                    frames, _ = flood.communicate(timeout=30)
            listed = node.agent.call("list")  # the flooder's drop counters come from its UAPI socket
            name = next(a["name"] for a in listed["attachments"] if a["container_id"] == flooder.container_id)
            counters = stats_of(name)
            alone.append(iperf_gbps(reference, args.seconds))
        finally:
            server.terminate()
            server.wait()
        return {
            "attack": args.attack,
            "flooder_cgroup": None if cgroup is None else str(cgroup),
            "reference_gbps_alone": round(statistics.mean(alone), 3),
            "reference_gbps_under_attack": round(statistics.mean(attacked), 3),
            "throughput_kept": round(statistics.mean(attacked) / statistics.mean(alone), 3),
            "raw_gbps": {"alone": alone, "under_attack": attacked},
            "add_ms_under_attack": percentiles(adds),
            "raw_add_ms": adds,
            "hub_peers": args.hub_peers,
            "hub_adds_ms": hub_adds,
            "flood_frames_written": int(frames.split()[-1]) if frames.split() else 0,
            "flooder_drops": {k: v for k, v in counters.items() if k.startswith("drop_")},
        }


def stats_of(name: str) -> dict[str, int]:
    """The `stats=1` counters of an attachment, from its UAPI socket."""
    reply = query(socket_path(name), b"stats=1\n\n").decode()
    return {
        k: int(v)
        for k, v in (line.split("=", 1) for line in reply.splitlines() if "=" in line)
        if v.isdigit()
    }


def full_node(topology: Topology, fake: FakeKubernetes, args: argparse.Namespace) -> dict[str, Any]:
    node = Node(topology, fake, supervise=False)
    say(f"a full node: {args.full} Pods, {args.in_flight} ADDs in flight ...")
    extra = args.in_flight + 3  # Pods added under attack, the hub, the flooder (whose net1 runs)
    pods = node.pods(args.full + extra, keepalive="0s")
    running, hub, flooder, fresh = (
        pods[: args.full],
        pods[args.full],
        pods[args.full + 1],
        pods[args.full + 2 :],
    )
    adds = add_in_parallel(node, running, args.in_flight)
    say("ping through every tunnel ...")
    silent = unreachable(running)
    rss = memory_kb([node.agent.worker_pid()])
    say(f"kill -9 of the agent with {args.full} attachments ...")
    recovery = recovery_after_kill(node, running)
    say("isolation under attack ...")
    add_in_parallel(node, [flooder], 1)
    big_secret(node, hub, args.hub_peers)
    attack = under_attack(node, running[0], hub, flooder, fresh, args)
    return {
        "pods": args.full,
        "in_flight": args.in_flight,
        "add_ms": percentiles(adds),
        "raw_add_ms": adds,
        "unreachable": silent,
        "agent_rss_kb": rss["rss_kb"],
        "agent_pss_kb": rss["pss_kb"],
        "recovery": recovery,
        "attack": attack,
    }


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
    idle, go, debian = (
        report["idle"]["agent"],
        report["idle"]["wireguard_go"],
        report["idle"]["wireguard_go_debian"],
    )
    n = idle["tunnels"]
    rows = (
        ("agent worker, no tunnel", idle["empty"]["worker"]),
        ("agent supervisor", idle["full"]["supervisor"]),
        (f"agent worker, {n} tunnels", idle["full"]["worker"]),
        (f"agent worker + supervisor, {n} tunnels", idle["full"]["total"]),
        (f"{go['processes']} × wireguard-go 2025", go["total"]),
        (f"{debian['processes']} × Debian's wireguard-go", debian["total"]),
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
    if "full_node" in report:
        lines += ["", *render_full_node(report["full_node"])]
    return "\n".join(lines)


def render_full_node(full: dict[str, Any]) -> list[str]:
    add, attack, recovery = full["add_ms"], full["attack"], full["recovery"]
    under = attack["add_ms_under_attack"]
    rss_mb = full["agent_rss_kb"] * 1024 / 1e6
    back = recovery["all_back_after_s"]
    rows = [
        (
            "ADD p95, {in_flight} in flight".format(**full),
            f"{add['p95']} ms (p50 {add['p50']}, max {add['max']})",
            f"≤ {TARGET_P95_MS:g} ms",
        ),
        ("agent RSS, {pods} idle tunnels".format(**full), f"{rss_mb:.1f} MB", f"≤ {TARGET_FULL_RSS_MB:g} MB"),
        ("tunnels answering a ping", f"{full['pods'] - len(full['unreachable'])} of {full['pods']}", "all"),
        (
            "traffic back after kill -9",
            f"{back} s (median {recovery['median_back_after_s']} s)"
            if back is not None
            else f"{recovery['never_back']} never",
            f"≤ {TARGET_RECOVERY_S:g} s",
        ),
        (
            "ADD p95 under attack",
            f"{under['p95']} ms (p50 {under['p50']}, max {under['max']})",
            f"≤ {TARGET_P95_MS:g} ms",
        ),
        (
            "a tunnel's throughput under attack",
            f"{attack['reference_gbps_under_attack']} of {attack['reference_gbps_alone']} Gbit/s "
            f"({attack['throughput_kept']:.0%})",
            f"≥ {TARGET_KEPT:.0%}",
        ),
    ]
    lines = [
        f"a full node: the agent as the DaemonSet runs it, {full['pods']} Pods; attack: a "
        f"{attack['hub_peers']}-peer Secret added and deleted {len(attack['hub_adds_ms'])} times, "
        f"{attack['flood_frames_written']} gso_size-1 frames on another Pod's net1 "
        f"(dropped: {attack['flooder_drops']}; the flooder's CPU: "
        f"{'a BestEffort cgroup share' if attack.get('flooder_cgroup') else 'unlimited'})",
        f"{'':<36} {'measured':<40} target",
    ]
    lines += [f"{label:<36} {value:<40} {target}" for label, value, target in rows]
    return lines


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
            say(
                f"{args.idle} idle tunnels in the agent, then {args.idle} idle wireguard-go of each build ..."
            )
            report["idle"] = {"agent": idle_agent(node, pods[: args.idle])}
            report["idle"]["wireguard_go"] = idle_wireguard_go(
                topology, args.idle, args.wireguard_go, "gonode"
            )
            debian = idle_wireguard_go(topology, args.idle, args.debian_wireguard_go, "debgonode")
            report["idle"]["wireguard_go_debian"] = debian
        if args.full:
            with Topology() as topology:
                report["full_node"] = full_node(topology, fake, args)
    finally:
        fake.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ADD latency and idle memory of pywg-cni on one node.")
    parser.add_argument("--pods", type=int, default=50, help="Pods to ADD and DEL per path (50)")
    parser.add_argument("--idle", type=int, default=20, help="idle tunnels to measure (20)")
    parser.add_argument("--full", type=int, default=110, help="Pods of the full node (110; 0: skip it)")
    parser.add_argument("--in-flight", type=int, default=20, help="ADDs at once on the full node (20)")
    parser.add_argument("--hub-peers", type=int, default=5000, help="peers of the attacking hub's Secret")
    parser.add_argument("--seconds", type=float, default=10.0, help="of each throughput measurement (10)")
    parser.add_argument(
        "--attack", choices=("both", "secret", "flood"), default="both", help="what attacks the full node"
    )
    parser.add_argument(
        "--flooder-cpu",
        choices=("best-effort", "unlimited"),
        default="best-effort",
        help="the flooding Pod's CPU: a BestEffort Pod's cgroup share, as the kubelet gives it "
        "(default), or as much as it takes",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the results")
    parser.add_argument(
        "--wireguard-go",
        type=Path,
        default=upstream_wireguard_go(),
        help="upstream wireguard-go 2025 (%(default)s)",
    )
    parser.add_argument(
        "--debian-wireguard-go",
        type=Path,
        default=shutil.which("wireguard-go") or "/usr/bin/wireguard-go",
        help="Debian's wireguard-go (%(default)s)",
    )
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
        "settings": {
            "pods": args.pods,
            "idle": args.idle,
            "full": args.full,
            "in_flight": args.in_flight,
            "hub_peers": args.hub_peers,
            "seconds": args.seconds,
            "attack": args.attack,
            "flooder_cpu": args.flooder_cpu,
        },
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
