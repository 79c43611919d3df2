"""A node agent serving many tenants (issue #13): what one tenant's Secret, NetworkAttachmentDefinition
or Pod must not do to the node or to the other tenants.

The node agent runs in a `node` host (`python -m cni.agent --supervise`), with a wireguard-go peer
in a `peer` host; each Pod is a host of its own. Requests go to the agent as the plugin sends them
(the `add`, `del` and `cni` ops), or through the plugin as a runtime runs it. What the plugin and
the entrypoint refuse of a network config (agentSocket, files outside the operator's directories,
GC of other networks, sockets not served by root) is in tests/test_cni_plugin.py and
tests/test_entrypoint.py; hostile frames on a TUN in tests/test_offload.py.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cni import agent_client
from cni.spec import INVALID_NETWORK_CONFIG, TRY_AGAIN_LATER
from pywg.runtime.daemon import alive
from tests.support.cni_run import (
    PEER_UNDERLAY,
    NodeAgent,
    Peer,
    PodKeys,
    config_json,
    invoke,
    netns_path,
    node_with_peer,
    silent_resolver,
    start_silent_dns,
)
from tests.support.topology import Host, KeyPair, Topology, wait_until

pytest_plugins = ["tests.support.topology"]

pytestmark = pytest.mark.root

PEER_V4 = "10.1.2.1"
SLOW_NAME = "wg-peer.pywg-tenants.invalid"  # asked of a DNS server that never answers
STOP_BOUND = 5.0  # SIGTERM: the agent is gone well before a stalled operation could end (30 s)


@dataclass
class Pod:
    host: Host
    keys: PodKeys
    container_id: str = field(default_factory=lambda: secrets.token_hex(32))

    @property
    def ref(self) -> dict[str, str]:
        return {"container_id": self.container_id, "ifname": "net1", "netns": netns_path(self.host)}


@dataclass
class Lab:
    topology: Topology
    node: Host
    peer: Peer
    agent: NodeAgent
    count: int = 0

    def pod(self) -> Pod:
        self.count += 1
        address = f"10.1.3.{self.count}/32"
        return Pod(self.topology.host(f"pod{self.count}"), PodKeys(KeyPair.generate(), [address]))

    def config(self, pod: Pod, **overrides: Any) -> dict[str, Any]:
        return config_json(pod.keys, self.peer, [f"{PEER_V4}/32"], **overrides)

    def add(self, pod: Pod, config: dict[str, Any] | None = None) -> dict[str, Any]:
        text = json.dumps(config if config is not None else self.config(pod))
        return self.agent.call(
            "add", **pod.ref, pod=f"default/{pod.host.label}", network="wgnet", config=text
        )

    def serve(self, *pods: Pod) -> None:
        self.peer.serve(pod.keys for pod in pods)


def make_lab(topology: Topology, *agent_args: str, resolver: bool = False) -> Lab:
    node, peer = node_with_peer(topology)
    if resolver:  # before the agent starts: its processes get the node's resolv.conf
        silent_resolver(node, PEER_UNDERLAY)
    return Lab(topology, node, peer, NodeAgent(node, args=agent_args).start())


@pytest.fixture
def lab(topology: Topology) -> Lab:
    return make_lab(topology)


def refused(reply: dict[str, Any], code: int, *words: str) -> None:
    assert reply.get("ok") is False and reply.get("code") == code, reply
    for word in words:
        assert word in reply["msg"], reply


def many_peers(lab: Lab, pod: Pod, count: int) -> dict[str, Any]:
    """The pod's config with `count` more peers (keys of nobody), one /32 each, no endpoint."""
    config = lab.config(pod)
    config["peers"] += [
        {
            "publicKey": KeyPair.generate().public_b64,
            "allowedIPs": [f"10.{100 + i // 65536}.{i // 256 % 256}.{i % 256}/32"],
        }
        for i in range(count)
    ]
    return config


def stalled_add(lab: Lab, pod: Pod) -> tuple[threading.Thread, list[Any]]:
    """An add whose peer is SLOW_NAME, in a thread: (the thread, [its reply or AgentError] once done)."""
    config = lab.config(pod)
    config["peers"][0]["endpoint"] = f"{SLOW_NAME}:51820"
    outcome: list[Any] = []

    def add() -> None:
        try:
            outcome.append(lab.add(pod, config))
        except agent_client.AgentError as error:
            outcome.append(error)

    thread = threading.Thread(target=add)
    thread.start()
    return thread, outcome


# --- isolation of work ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_pod_whose_dns_never_answers_holds_up_no_other_pod(topology: Topology) -> None:
    """Host names are resolved outside any lock, with one deadline: another tenant's ADD, DEL and
    CHECK go through while one ADD waits for DNS, which then fails retriably (code 11) at the deadline."""
    lab = make_lab(topology, "--dns-timeout", "20", resolver=True)
    start_silent_dns(lab.peer.host, PEER_UNDERLAY)
    slow, other = lab.pod(), lab.pod()
    lab.serve(slow, other)
    thread, outcome = stalled_add(lab, slow)
    wait_until(lambda: any(not s["complete"] for s in _states(lab)), 20.0, "the slow add to begin")
    started = time.monotonic()
    assert lab.add(other)["ok"] is True
    assert lab.agent.call("check", **other.ref)["ok"] is True
    assert other.host.ping(PEER_V4, timeout=10)
    assert lab.agent.call("del", **other.ref) == {"ok": True, "removed": True}
    assert thread.is_alive() and not outcome, "the other Pod's operations waited for the slow one"
    thread.join(60)
    refused(outcome[0], TRY_AGAIN_LATER, SLOW_NAME, "no DNS answer within 20 s")
    assert time.monotonic() - started < 40, "the deadline did not hold"
    assert lab.agent.state_files() == [] and lab.agent.attachments() == []


def test_a_host_name_without_an_answer_is_refused_naming_the_peer(lab: Lab) -> None:
    """No answer but a negative one: the config is wrong (code 7), not "try again later"."""
    pod = lab.pod()
    lab.serve(pod)
    config = lab.config(pod)
    config["peers"][0]["endpoint"] = "no-such-host.invalid:51820"
    refused(lab.add(pod, config), INVALID_NETWORK_CONFIG, "peers[0].endpoint", "no-such-host.invalid")
    assert lab.agent.state_files() == [] and lab.agent.attachments() == []


def _states(lab: Lab) -> list[dict[str, Any]]:
    found = []
    for path in lab.agent.state_dir.glob("cni*.json"):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # being replaced
    return found


def test_sigterm_stops_the_agent_at_once_whatever_is_in_flight(topology: Topology) -> None:
    """SIGTERM during an ADD stalled on DNS: the agent is gone within STOP_BOUND (it waited for the
    operation before), the running tunnel keeps its link and comes back with the next agent, and the
    cut-short ADD leaves nothing."""
    lab = make_lab(topology, "--dns-timeout", "60", resolver=True)
    start_silent_dns(lab.peer.host, PEER_UNDERLAY)
    live, slow = lab.pod(), lab.pod()
    lab.serve(live, slow)
    assert lab.add(live)["ok"] is True
    assert live.host.ping(PEER_V4, timeout=10)
    thread, outcome = stalled_add(lab, slow)
    wait_until(lambda: any(not s["complete"] for s in _states(lab)), 20.0, "the slow add to begin")
    worker = lab.agent.worker_pid()
    started = time.monotonic()
    os.kill(worker, signal.SIGTERM)
    wait_until(lambda: not alive(worker), 30.0, "the agent worker to exit")
    took = time.monotonic() - started
    print(f"\nSIGTERM with an ADD stalled on DNS: the agent exited in {took:.2f} s")
    assert took < STOP_BOUND, f"the agent took {took:.1f} s to stop"
    assert live.host.has_link("net1"), "SIGTERM must leave the tunnels' links for the next agent"
    thread.join(30)
    assert isinstance(outcome[0], agent_client.AgentError), outcome
    # The supervisor starts the next worker, which resumes the live tunnel and removes the cut-short one.
    wait_until(lambda: _worker(lab) not in (None, worker), 30.0, "the next agent worker")
    assert live.host.ping(PEER_V4, timeout=10)
    assert [a["container_id"] for a in lab.agent.attachments()] == [live.container_id]
    assert not slow.host.has_link("net1")


def _worker(lab: Lab) -> int | None:
    try:
        return lab.agent.worker_pid()
    except agent_client.AgentError:
        return None


def test_a_thousand_peers_are_applied_whole(lab: Lab) -> None:
    """A hub Pod's Secret: 1,000 peers with a /32 each, a route each, all in the engine; CHECK agrees."""
    pod = lab.pod()
    lab.serve(pod)
    reply = lab.add(pod, many_peers(lab, pod, 1000))
    assert reply["ok"] is True, reply
    routes = pod.host.ip("-4", "route", "show", "dev", "net1", "proto", "static").splitlines()
    assert len(routes) == 1001, len(routes)
    assert lab.agent.call("check", **pod.ref) == {"ok": True, "problems": []}
    assert pod.host.ping(PEER_V4, timeout=10)
    assert lab.agent.call("del", **pod.ref)["removed"] is True


def test_work_per_attachment_is_bounded_by_the_operator(topology: Topology) -> None:
    """Over a limit: CNI code 7 naming it (not 11, which the kubelet retries forever)."""
    lab = make_lab(
        topology,
        "--max-peers",
        "20",
        "--max-prefixes",
        "30",
        "--max-addresses",
        "2",
        "--max-config-bytes",
        "6000",
    )
    pod = lab.pod()
    refused(lab.add(pod, many_peers(lab, pod, 20)), INVALID_NETWORK_CONFIG, "peers: 21 peers", "--max-peers")
    wide = lab.config(pod)
    wide["peers"][0]["allowedIPs"] = [f"10.7.{i}.0/24" for i in range(31)]
    refused(lab.add(pod, wide), INVALID_NETWORK_CONFIG, "allowedIPs: 31 prefixes", "--max-prefixes")
    addresses = lab.config(pod, address=["10.1.3.9/32", "10.1.3.10/32", "10.1.3.11/32"])
    refused(lab.add(pod, addresses), INVALID_NETWORK_CONFIG, "address: 3 addresses", "--max-addresses")
    big = many_peers(lab, pod, 60)  # the size is checked first
    refused(
        lab.add(pod, big),
        INVALID_NETWORK_CONFIG,
        "bytes; this node allows at most 6000",
        "--max-config-bytes",
    )
    assert lab.agent.state_files() == [] and not pod.host.has_link("net1")
    lab.serve(pod)
    assert lab.add(pod, many_peers(lab, pod, 5))["ok"] is True


@pytest.mark.slow
def test_a_secret_of_almost_a_mebibyte_goes_through_the_plugin(lab: Lab) -> None:
    """4,500 peers (as in the issue, ~450 KB) through the plugin a runtime runs, its config inline:
    it used to pass the agent's request limit and come back as code 11, retried forever."""
    pod = lab.pod()
    lab.serve(pod)
    netconf = {
        "cniVersion": "1.1.0",
        "name": "wgnet",
        "type": "pywg-cni",
        "wireguard": many_peers(lab, pod, 4500),
    }
    assert len(json.dumps(netconf)) > 400_000
    call = invoke(
        "ADD", netconf, container_id=pod.container_id, netns=netns_path(pod.host), env=lab.agent.plugin_env()
    )
    call.ok()
    assert pod.host.ping(PEER_V4, timeout=10)
    invoke(
        "DEL", netconf, container_id=pod.container_id, netns=netns_path(pod.host), env=lab.agent.plugin_env()
    ).ok()
    assert lab.agent.attachments() == []


# --- host resources are the operator's ------------------------------------------------------------


def test_udp_ports_come_from_the_operators_range(topology: Topology) -> None:
    """A Secret cannot bind a host port outside the range (listenPort 53 bound 0.0.0.0:53 and [::]:53
    in the node's namespace); inside it, its port is honoured; without one the agent picks one."""
    lab = make_lab(topology, "--port-range", "52100-52101")
    first, second, third = lab.pod(), lab.pod(), lab.pod()
    lab.serve(first, second, third)
    for port in (53, 4789, 51820, 52099, 52102):
        refused(
            lab.add(first, lab.config(first, listenPort=port)),
            INVALID_NETWORK_CONFIG,
            f"listenPort: {port}",
            "52100-52101",
        )
    assert f":{53} " not in lab.node.run(["ss", "-Hlun"]).stdout
    assert lab.add(first, lab.config(first, listenPort=52101))["listen_port"] == 52101
    assert lab.add(second)["listen_port"] == 52100
    refused(lab.add(third), TRY_AGAIN_LATER, "no free UDP port left", "52100-52101")
    refused(
        lab.add(third, lab.config(third, listenPort=52100)),
        INVALID_NETWORK_CONFIG,
        "listenPort 52100 is used by another Pod",
    )
    assert first.host.ping(PEER_V4, timeout=10) and second.host.ping(PEER_V4, timeout=10)
    lab.agent.call("del", **second.ref)
    assert lab.add(third)["listen_port"] == 52100


def test_socket_marks_are_refused_unless_the_operator_allows_them(topology: Topology) -> None:
    """fwmark 0x4000 is kube-proxy's masquerade bit: a Secret must not set it on the node's sockets."""
    lab = make_lab(topology)
    pod = lab.pod()
    refused(lab.add(pod, lab.config(pod, fwmark=16384)), INVALID_NETWORK_CONFIG, "fwmark", "--allow-fwmark")
    assert lab.agent.state_files() == []
    allowing = make_lab(topology, "--allow-fwmark")
    other = allowing.pod()
    assert allowing.add(other, allowing.config(other, fwmark=4660))["ok"] is True
    name = allowing.agent.attachments()[0]["name"]
    shown = subprocess.run(["wg", "show", name, "fwmark"], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "0x1234"


# --- secrets stay secret --------------------------------------------------------------------------


def test_the_agent_cannot_dump_core(lab: Lab) -> None:
    limits = Path(f"/proc/{lab.agent.worker_pid()}/limits").read_text()
    line = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
    assert line.split()[4:6] == ["0", "0"], line


def test_disable_core_dumps_makes_a_process_undumpable() -> None:
    """PR_SET_DUMPABLE 0 shows from outside as /proc/PID/status owned by root: run it as uid 65534."""
    code = (
        "import sys\n"
        "from pywg.runtime.system import disable_core_dumps\n"
        "if sys.argv[1] == '1':\n"
        "    disable_core_dumps()\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    owners = {}
    for flag in ("0", "1"):
        child = subprocess.Popen(
            [*nobody, sys.executable, "-c", code, flag],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd="/",
            env=env,
        )
        try:
            assert child.stdout is not None and child.stdout.readline() == b"ready\n"
            owners[flag] = os.stat(f"/proc/{child.pid}/status").st_uid
            limits = Path(f"/proc/{child.pid}/limits").read_text()
        finally:
            child.kill()
            child.wait()
    assert owners == {"0": 65534, "1": 0}, owners
    assert "Max core file size        0                    0" in limits, limits
