"""Live operations (issue 12) against the real kube-apiserver, with the agent's ServiceAccount token
and deploy/rbac.yaml: Secret changes applied to running tunnels, one key one Pod in the whole
cluster (Leases), Events on Pods, metrics.

Each "node" is a network namespace with a node agent of its own (its state directory, its node name)
reaching the API server through tests/support/k8s_live.py's ApiBridge; the plugin runs as Multus runs
it, in the root namespace, reading the Pod and its Secret with the same ServiceAccount kubeconfig.
The WireGuard peer is wireguard-go in a `peer` namespace linked to node-a. Timing options are the
agent's own (--lease-duration, --event-interval, --handshake-failing-after), set short so that the
tests wait seconds, not minutes; waits poll with a deadline, nothing sleeps a race away.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest

from cni.agent import attachment_name
from cni.live import lease_name
from cni.spec import INVALID_NETWORK_CONFIG
from tests.support.cni_run import (
    ANNOTATION,
    CniCall,
    NodeAgent,
    Peer,
    PodKeys,
    cni_args,
    config_json,
    invoke,
    netns_path,
    node_with_peer,
)
from tests.support.k8s_cluster import RealKubernetes, real_k8s  # noqa: F401 (the fixture `cluster` uses)
from tests.support.k8s_live import (
    AGENT_NAMESPACE,
    ApiBridge,
    events,
    install_agent_identity,
    restart_apiserver,
    wait_for_event,
)
from tests.support.scrape import scrape
from tests.support.scrape import value as sample_value
from tests.support.topology import Host, KeyPair, Topology, wait_until, wg_peers

pytest_plugins = ["tests.support.topology"]

pytestmark = [pytest.mark.shared("k8s"), pytest.mark.slow]  # a real API server (~10 s to start)

PEER_V4 = "10.1.2.1"
LEASE_SECONDS = 6
EVENT_SECONDS = 4.0
FAILING_SECONDS = 6.0
LIVE_LIMIT = 10.0  # the bound for a Secret change to be live
METRICS = "127.0.0.1:9587"


@dataclass
class Cluster:
    real: RealKubernetes
    kubeconfig: Path  # the agent's ServiceAccount token, as the DaemonSet's Pod has it


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    real: RealKubernetes = request.getfixturevalue("real_k8s")
    directory = tmp_path_factory.mktemp("agent-identity")
    directory.chmod(0o700)
    return Cluster(real, install_agent_identity(real, directory))


@dataclass
class Pod:
    name: str
    host: Host
    wg: PodKeys
    doc: dict[str, Any]  # its Secret's config.json
    namespace: str
    uid: str = ""
    container_id: str = field(default_factory=lambda: secrets.token_hex(32))

    @property
    def netns(self) -> str:
        return netns_path(self.host)

    @property
    def uapi(self) -> str:
        return attachment_name(self.container_id, "net1")


@dataclass
class Lab:
    cluster: Cluster
    topology: Topology
    peer: Peer
    node: Host
    agent: NodeAgent
    namespace: str
    bridged: set[str] = field(default_factory=set)

    @property
    def real(self) -> RealKubernetes:
        return self.cluster.real

    def start_agent(self, host: Host, name: str, *extra: str, supervise: bool = True) -> NodeAgent:
        if host.name not in self.bridged:
            ApiBridge(host, self.real.port)
            self.bridged.add(host.name)
        args = [
            "--kubeconfig",
            str(self.cluster.kubeconfig),
            "--node-name",
            name,
            "--lease-namespace",
            AGENT_NAMESPACE,
            "--lease-duration",
            str(LEASE_SECONDS),
            "--event-interval",
            str(EVENT_SECONDS),
            "--handshake-failing-after",
            str(FAILING_SECONDS),
            "--metrics",
            METRICS,
            *extra,
        ]
        return NodeAgent(host, args=args, supervise=supervise).start()

    def pod(
        self,
        name: str,
        addresses: list[str],
        allowed: list[str],
        keys: KeyPair | None = None,
        **overrides: Any,
    ) -> Pod:
        """A Pod object with the annotation, its Secret, and a sandbox (a namespace)."""
        wg = PodKeys(keys or KeyPair.generate(), addresses)
        doc = config_json(wg, self.peer, allowed, **overrides)
        pod = Pod(name, self.topology.host(name), wg, doc, self.namespace)
        self.real.call(
            "POST",
            f"/api/v1/namespaces/{self.namespace}/secrets",
            {"metadata": {"name": f"wg-{name}"}, "stringData": {"config.json": json.dumps(doc)}},
        )
        created = self.real.call(
            "POST",
            f"/api/v1/namespaces/{self.namespace}/pods",
            {
                "metadata": {"name": name, "annotations": {ANNOTATION: f"wg-{name}"}},
                "spec": {"containers": [{"name": "main", "image": "busybox"}]},
            },
        )
        pod.uid = created["metadata"]["uid"]
        return pod

    def cni(self, command: str, pod: Pod, agent: NodeAgent | None = None, **extra: Any) -> CniCall:
        agent = agent or self.agent
        return invoke(
            command,
            {
                "cniVersion": "1.1.0",
                "name": "wgnet",
                "type": "pywg-cni",
                "mode": "userspace",  # `wg show` and the metrics below read a userspace tunnel
                "kubeConfigPath": str(self.cluster.kubeconfig),
                **extra,
            },
            container_id=pod.container_id,
            netns=pod.netns,
            args=cni_args(pod.namespace, pod.name, pod.container_id, pod.uid),
            env=agent.plugin_env([self.cluster.kubeconfig.parent]),
        )

    def write_secret(self, pod: Pod, text: str) -> None:
        path = f"/api/v1/namespaces/{pod.namespace}/secrets/wg-{pod.name}"
        secret = self.real.call("GET", path)
        secret.pop("data", None)
        secret["stringData"] = {"config.json": text}
        self.real.call("PUT", path, secret)

    def update(self, pod: Pod, **changes: Any) -> None:
        pod.doc = {**pod.doc, **changes}
        self.write_secret(pod, json.dumps(pod.doc))

    def pod_events(self, pod: Pod, reason: str) -> list[dict[str, Any]]:
        return [
            e for e in events(self.real, pod.namespace, reason) if e["involvedObject"]["name"] == pod.name
        ]


@pytest.fixture
def lab(cluster: Cluster, topology: Topology) -> Iterator[Lab]:
    node, peer = node_with_peer(topology)
    lab = Lab(cluster, topology, peer, node, None, cluster.real.namespace())  # type: ignore[arg-type]
    lab.agent = lab.start_agent(node, "node-a")
    yield lab


def _addresses(pod: Pod) -> set[str]:
    shown = pod.host.run(["ip", "-j", "addr", "show", "dev", "net1"]).stdout
    return {f"{a['local']}/{a['prefixlen']}" for a in json.loads(shown)[0]["addr_info"]}


def _routes(pod: Pod) -> set[str]:
    shown = pod.host.run(["ip", "-j", "route", "show", "dev", "net1"]).stdout
    return {str(ip_network(r["dst"])) for r in json.loads(shown) if r["dst"] != "default"}


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


class Pinger:
    """`ping -i 0.01` (one echo every 10 ms) from a pod until stopped; every reply counted."""

    def __init__(self, pod: Pod, address: str) -> None:
        self.output = pod.host.tmpdir / f"ping-{secrets.token_hex(4)}.txt"
        with open(self.output, "wb") as out:
            self.process = pod.host.popen(["ping", "-n", "-i", "0.01", "-W", "1", address], stdout=out)

    def sequence(self) -> int:
        found = re.findall(r"icmp_seq=(\d+)", self.output.read_text(errors="replace"))
        return int(found[-1]) if found else 0

    def wait_past(self, sequence: int) -> None:
        wait_until(lambda: self.sequence() >= sequence, 30.0, f"ping reply {sequence}")

    def stop(self) -> list[int]:
        """The sequence numbers of the echoes that got no reply, up to the last one answered. (Not
        ping's own summary: it counts the echo in flight when SIGINT comes as lost.)"""
        self.process.send_signal(signal.SIGINT)
        self.process.wait(10)
        answered = {int(n) for n in re.findall(r"icmp_seq=(\d+)", self.output.read_text(errors="replace"))}
        assert answered, self.output.read_text()[-500:]
        return sorted(set(range(min(answered), max(answered) + 1)) - answered)


# --- Secret changes, live -------------------------------------------------------------------------


def test_a_secret_change_is_live_within_10_s_and_an_unchanged_peer_loses_nothing(lab: Lab) -> None:
    pod = lab.pod("pod-a", ["10.1.2.2/32"], [f"{PEER_V4}/32"])
    lab.peer.serve([pod.wg])
    result = lab.cni("ADD", pod).ok()
    assert pod.host.ping(PEER_V4, timeout=10)
    before = wg_peers(lab.node, pod.uapi)[lab.peer.keys.public].latest_handshake
    assert before > 0

    pinger = Pinger(pod, PEER_V4)
    pinger.wait_past(50)
    newcomer = KeyPair.generate()
    peers = [*pod.doc["peers"], {"publicKey": newcomer.public_b64, "allowedIPs": ["10.1.3.0/24"]}]
    lab.update(pod, peers=peers, address=["10.1.2.2/32", "10.1.2.9/32"])
    changed_at = pinger.sequence()

    def live() -> bool:
        return (
            newcomer.public in wg_peers(lab.node, pod.uapi)
            and "10.1.3.0/24" in _routes(pod)
            and "10.1.2.9/32" in _addresses(pod)
        )

    wait_until(live, LIVE_LIMIT, "the changed Secret to be live")
    pinger.wait_past(changed_at + 300)  # 3 s of pings after the change
    last = pinger.sequence()
    lost = pinger.stop()
    assert last >= changed_at + 300 and lost == [], f"no reply to pings {lost}"
    after = wg_peers(lab.node, pod.uapi)[lab.peer.keys.public]
    assert after.latest_handshake == before, "the unchanged peer's session was renewed"

    # CHECK verifies the live config: the new peer's route is expected now.
    assert lab.cni("CHECK", pod, prevResult=result).ok() is None
    pod.host.run(["ip", "route", "del", "10.1.3.0/24", "dev", "net1"])
    failed = lab.cni("CHECK", pod, prevResult=result).error("1.1.0")
    assert "route 10.1.3.0/24 through net1 is missing" in failed["msg"]

    updated = wait_for_event(lab.real, pod.namespace, "ConfigUpdated", 10.0)
    assert updated["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "namespace": pod.namespace,
        "name": pod.name,
        "uid": pod.uid,
    }
    assert "2 peers (1 added, 0 removed, 0 changed)" in updated["message"]
    assert updated["source"] == {"component": "pywg-cni", "host": "node-a"}

    # Removing the newcomer again takes its route and the address away.
    lab.update(pod, peers=pod.doc["peers"][:1], address="10.1.2.2/32")
    wait_until(lambda: newcomer.public not in wg_peers(lab.node, pod.uapi), LIVE_LIMIT, "the peer removed")
    wait_until(lambda: "10.1.2.9/32" not in _addresses(pod), LIVE_LIMIT, "the address removed")
    assert "10.1.3.0/24" not in _routes(pod)
    assert pod.host.ping(PEER_V4)
    assert lab.cni("DEL", pod).ok() is None
    assert lab.agent.attachments() == []


def test_an_invalid_change_is_an_event_and_the_running_config_stays(lab: Lab) -> None:
    lab.agent.terminate()
    lab.agent = lab.start_agent(lab.node, "node-a", "--max-peers", "2")
    pod = lab.pod("pod-b", ["10.1.2.3/32"], [f"{PEER_V4}/32"])
    lab.peer.serve([pod.wg])
    result = lab.cni("ADD", pod).ok()
    assert pod.host.ping(PEER_V4, timeout=10)
    running = set(wg_peers(lab.node, pod.uapi))
    other = lab.pod("pod-b2", ["10.1.2.14/32"], [f"{PEER_V4}/32"])
    lab.cni("ADD", other).ok()

    bad_cidr = [{**pod.doc["peers"][0], "allowedIPs": ["10.1.2.300/32"]}]
    too_many = [*pod.doc["peers"], *({"publicKey": KeyPair.generate().public_b64} for _ in range(2))]
    in_use = f"config already in use by pod {other.namespace}/pod-b2 on this node"
    cases = [
        ("not JSON", "{", "secret"),
        ("a bad key", json.dumps({**pod.doc, "privateKey": "not a key"}), "privateKey"),
        ("a bad CIDR", json.dumps({**pod.doc, "peers": bad_cidr}), "peers[0].allowedIPs"),
        ("a key in use", json.dumps({**pod.doc, "privateKey": other.wg.keys.private_b64}), in_use),
        ("over a limit", json.dumps({**pod.doc, "peers": too_many}), "--max-peers"),
        ("a port outside the range", json.dumps({**pod.doc, "listenPort": 53}), "--port-range"),
    ]
    for number, (what, text, named) in enumerate(cases, start=1):
        lab.write_secret(pod, text)

        def rejected(number: int = number) -> bool:
            found = lab.pod_events(pod, "ConfigRejected")
            return bool(found) and sum(e["count"] for e in found) >= number

        wait_until(rejected, EVENT_SECONDS + LIVE_LIMIT, f"the Event for {what}")
        (event,) = lab.pod_events(pod, "ConfigRejected")
        assert event["type"] == "Warning"
        assert named in event["message"] and "the running config stays" in event["message"], event["message"]
        assert set(wg_peers(lab.node, pod.uapi)) == running
        assert pod.host.ping(PEER_V4)
    assert lab.cni("CHECK", pod, prevResult=result).ok() is None


def test_events_are_rate_limited_with_counts_aggregated(lab: Lab) -> None:
    pod = lab.pod("pod-c", ["10.1.2.4/32"], [f"{PEER_V4}/32"])
    lab.cni("ADD", pod).ok()
    path = f"/api/v1/namespaces/{pod.namespace}/events?watch=true&timeoutSeconds=60"
    writes: list[str] = []
    watcher = subprocess.Popen(
        [
            "curl",
            "-sN",
            "--cacert",
            str(lab.real.ca),
            "-H",
            f"Authorization: Bearer {lab.real.admin_token}",
            lab.real.server + path,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        bursts = 12
        for number in range(bursts):
            lab.write_secret(pod, "{" * (number + 1))  # never valid: one ConfigRejected each

        def all_counted() -> bool:
            found = lab.pod_events(pod, "ConfigRejected")
            return bool(found) and found[0]["count"] == bursts

        wait_until(all_counted, 3 * EVENT_SECONDS + LIVE_LIMIT, "every rejection counted")
    finally:
        watcher.terminate()
        out, _ = watcher.communicate(10)
    for line in out.splitlines():
        event = json.loads(line)
        if event["object"].get("reason") == "ConfigRejected":
            writes.append(event["type"])
    (event,) = lab.pod_events(pod, "ConfigRejected")
    assert writes[0] == "ADDED" and set(writes[1:]) <= {"MODIFIED"}
    # One create, then at most one patch per --event-interval for as long as the burst lasted.
    span = (_time(event["lastTimestamp"]) - _time(event["firstTimestamp"])).total_seconds()
    assert len(writes) <= 2 + span // EVENT_SECONDS, (writes, span)
    assert len(writes) < bursts


def test_a_deleted_secret_keeps_the_tunnel_and_a_recreated_one_is_applied(lab: Lab) -> None:
    pod = lab.pod("pod-d", ["10.1.2.5/32"], [f"{PEER_V4}/32"])
    lab.peer.serve([pod.wg])
    lab.cni("ADD", pod).ok()
    lab.real.call("DELETE", f"/api/v1/namespaces/{pod.namespace}/secrets/wg-{pod.name}")
    event = wait_for_event(lab.real, pod.namespace, "SecretDeleted", LIVE_LIMIT)
    assert "keeps its last config" in event["message"]
    assert pod.host.ping(PEER_V4, timeout=10)

    pod.doc = {**pod.doc, "address": ["10.1.2.5/32", "10.1.2.15/32"]}
    lab.real.call(
        "POST",
        f"/api/v1/namespaces/{pod.namespace}/secrets",
        {"metadata": {"name": f"wg-{pod.name}"}, "stringData": {"config.json": json.dumps(pod.doc)}},
    )
    wait_until(lambda: "10.1.2.15/32" in _addresses(pod), LIVE_LIMIT, "the re-created Secret applied")


def test_a_new_private_key_is_live_and_its_lease_moves(lab: Lab) -> None:
    pod = lab.pod("pod-e", ["10.1.2.6/32"], [f"{PEER_V4}/32"])
    lab.peer.serve([pod.wg])
    lab.cni("ADD", pod).ok()
    assert pod.host.ping(PEER_V4, timeout=10)
    leases = f"/apis/coordination.k8s.io/v1/namespaces/{AGENT_NAMESPACE}/leases"
    old_name = lease_name(pod.wg.keys.public)
    holder = f"{pod.namespace}/{pod.name}"
    assert lab.real.call("GET", f"{leases}/{old_name}")["spec"]["holderIdentity"] == holder

    fresh = KeyPair.generate()
    pod.wg = PodKeys(fresh, pod.wg.addresses)
    lab.peer.serve([pod.wg])  # the peer learns the new public key
    lab.update(pod, privateKey=fresh.private_b64)
    wait_until(lambda: pod.host.ping(PEER_V4, timeout=1), LIVE_LIMIT, "traffic with the new key")
    assert lab.node.run(["wg", "show", pod.uapi, "public-key"]).stdout.strip() == fresh.public_b64
    new_lease = lab.real.call("GET", f"{leases}/{lease_name(fresh.public)}")
    assert new_lease["spec"]["holderIdentity"] == holder
    assert new_lease["metadata"]["annotations"]["pywg.dev/node"] == "node-a"

    def given_up() -> bool:
        return not lab.real.call("GET", f"{leases}/{old_name}")["spec"].get("holderIdentity")

    wait_until(given_up, 10.0, "the old key's Lease given up")


# --- one key, one Pod, cluster-wide ---------------------------------------------------------------


def test_a_key_is_one_pods_in_the_cluster_until_its_node_stops_renewing(lab: Lab) -> None:
    lab.agent.terminate()
    agent_a = lab.start_agent(lab.node, "node-a", supervise=False)  # alone: killed below for good
    node_b = lab.topology.host("node-b")
    agent_b = lab.start_agent(node_b, "node-b", supervise=False)
    keys = KeyPair.generate()
    first = lab.pod("pod-f", ["10.1.2.7/32"], [f"{PEER_V4}/32"], keys=keys)
    lab.cni("ADD", first, agent=agent_a).ok()

    lab.namespace = lab.real.namespace()  # another tenant, same key
    second = lab.pod("pod-g", ["10.1.2.8/32"], [f"{PEER_V4}/32"], keys=keys)
    refused = lab.cni("ADD", second, agent=agent_b).error("1.1.0")
    assert refused["code"] == INVALID_NETWORK_CONFIG
    assert f"config already in use by pod {first.namespace}/pod-f on node node-a" in refused["msg"], refused
    assert agent_b.attachments() == []

    # node-a's agent dies for good: its Lease is taken over once it is --lease-duration old.
    assert agent_a.process is not None
    os.kill(agent_a.process.pid, signal.SIGKILL)
    agent_a.process.wait(10)
    wait_until(
        lambda: lab.cni("ADD", second, agent=agent_b).status == 0,
        LEASE_SECONDS + 20.0,
        "the Lease taken over",
    )
    leases = f"/apis/coordination.k8s.io/v1/namespaces/{AGENT_NAMESPACE}/leases"
    lease = lab.real.call("GET", f"{leases}/{lease_name(keys.public)}")
    assert lease["spec"]["holderIdentity"] == f"{second.namespace}/pod-g"
    assert lease["metadata"]["annotations"]["pywg.dev/node"] == "node-b"
    assert lease["spec"]["leaseTransitions"] >= 1
    assert lab.cni("DEL", second, agent=agent_b).ok() is None
    wait_until(
        lambda: not lab.real.call("GET", f"{leases}/{lease_name(keys.public)}")["spec"].get("holderIdentity"),
        10.0,
        "the Lease given up at DEL",
    )


# --- handshakes -----------------------------------------------------------------------------------


def test_handshake_events_up_failing_recovered(lab: Lab) -> None:
    good = lab.pod("pod-i", ["10.1.2.11/32"], [f"{PEER_V4}/32"])
    lost = lab.pod(
        "pod-k",
        ["10.1.2.13/32"],
        [f"{PEER_V4}/32"],
        peers=[],  # replaced below: a peer at an address nobody answers on
    )
    lost.doc["peers"] = [
        {
            "endpoint": "198.18.0.77:51820",
            "publicKey": lab.peer.keys.public_b64,
            "allowedIPs": [f"{PEER_V4}/32"],
            "persistentKeepalive": "1s",
        }
    ]
    lab.write_secret(lost, json.dumps(lost.doc))
    lab.peer.serve([good.wg, lost.wg])
    lab.cni("ADD", good).ok()
    assert good.host.ping(PEER_V4, timeout=10)
    up = wait_for_event(lab.real, good.namespace, "TunnelUp", LIVE_LIMIT)
    assert up["involvedObject"]["name"] == "pod-i"
    assert f"first handshake with peer {lab.peer.keys.public_b64} (198.18.0.2:51820)" in up["message"]

    # Handshakes to 198.18.0.77 go unanswered (one every 5 s): failing after --handshake-failing-after.
    lab.cni("ADD", lost).ok()
    failing = wait_for_event(lab.real, lost.namespace, "HandshakeFailing", FAILING_SECONDS + 20.0)
    assert failing["type"] == "Warning" and "198.18.0.77:51820" in failing["message"], failing["message"]
    assert failing["involvedObject"]["name"] == "pod-k"
    # The Secret gets the right endpoint: the next attempt reaches the peer.
    lab.update(lost, peers=[{**lost.doc["peers"][0], "endpoint": lab.peer.endpoint}])
    recovered = wait_for_event(lab.real, lost.namespace, "TunnelRecovered", 30.0)
    assert recovered["involvedObject"]["name"] == "pod-k"
    assert lost.host.ping(PEER_V4, timeout=10)


# --- metrics ---------------------------------------------------------------------------------------


def test_metrics_of_the_agent_and_its_tunnels(lab: Lab) -> None:
    pod = lab.pod("pod-j", ["10.1.2.12/32"], [f"{PEER_V4}/32"])
    lab.peer.serve([pod.wg])
    lab.cni("ADD", pod).ok()
    assert pod.host.ping(PEER_V4, count=3, timeout=10)
    url = f"http://{METRICS}/metrics"
    labels = {
        "namespace": pod.namespace,
        "pod": pod.name,
        "interface": "net1",
        "public_key": lab.peer.keys.public_b64,
    }
    before = scrape(lab.node, url)
    shown = wg_peers(lab.node, pod.uapi)[lab.peer.keys.public]
    after = scrape(lab.node, url)
    for name, wg_value in (
        ("wireguard_sent_bytes_total", shown.tx_bytes),
        ("wireguard_received_bytes_total", shown.rx_bytes),
    ):
        assert sample_value(before, name, **labels) <= wg_value <= sample_value(after, name, **labels)
    assert sample_value(after, "wireguard_latest_handshake_seconds", **labels) // 1 == shown.latest_handshake
    assert sample_value(after, "pywg_peer_received_packets_total", **labels) >= 4
    assert sample_value(after, "pywg_peer_handshake_failures_total", **labels) == 0
    assert sample_value(after, "pywg_cni_attachments", mode="userspace") == 1
    assert sample_value(after, "pywg_cni_operation_duration_seconds_count", op="add") == 1
    assert sample_value(after, "pywg_cni_kubernetes_api_errors_total", operation="lease") == 0
    lab.cni("DEL", pod).ok()
    gone = scrape(lab.node, url)
    assert sample_value(gone, "pywg_cni_attachments", mode="userspace") == 0
    assert not [s for s in gone if s.labels.get("pod") == pod.name]


# --- the API server goes away and comes back ------------------------------------------------------


def test_the_watch_survives_an_api_server_restart(lab: Lab) -> None:
    pod = lab.pod("pod-h", ["10.1.2.10/32"], [f"{PEER_V4}/32"])
    lab.cni("ADD", pod).ok()
    restart_apiserver(lab.real)
    lab.update(pod, address=["10.1.2.10/32", "10.1.2.20/32"])
    wait_until(lambda: "10.1.2.20/32" in _addresses(pod), LIVE_LIMIT, "the change after the restart")
