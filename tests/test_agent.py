"""The node agent (cni/agent.py) end to end, in real namespaces.

A `node` host runs `python -m cni.agent --supervise` with a per-test state dir and socket; its UDP
sockets live there. Each Pod sandbox is another host, given to the agent by its /run/netns path, and
the WireGuard peer is wireguard-go in a `peer` host joined to the node by a veth link.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import ip_interface, ip_network
from pathlib import Path
from typing import Any

import pytest

from cni import agent_client
from cni.spec import INTERNAL, INVALID_NETNS, INVALID_NETWORK_CONFIG
from pywg.config import EndpointSpec, InterfaceConfig, PeerConfig, to_json
from pywg.runtime.daemon import alive
from pywg.runtime.uapi_server import socket_path
from tests.support.cni_run import NodeAgent
from tests.support.topology import (
    NETNS_DIR,
    Host,
    KeyPair,
    Topology,
    WireguardGo,
    link,
    run,
    wait_until,
)

pytest_plugins = ["tests.support.topology"]

NODE_IP, PEER_IP = "192.168.77.1", "192.168.77.2"
PEER_PORT = 51820
RECOVERY_LIMIT = 10.0


def netns_path(host: Host) -> str:
    return str(NETNS_DIR / host.name)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


@dataclass
class Pod:
    host: Host
    keys: KeyPair
    config: InterfaceConfig
    container_id: str = field(default_factory=lambda: secrets.token_hex(32))
    ifname: str = "net1"
    reply: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> dict[str, str]:
        return {"container_id": self.container_id, "ifname": self.ifname, "netns": netns_path(self.host)}

    @property
    def pod_name(self) -> str:
        return f"default/{self.host.label}"


@dataclass
class Lab:
    topology: Topology
    node: Host
    peer: Host
    agent: NodeAgent
    peer_keys: KeyPair = field(default_factory=KeyPair.generate)
    wg: WireguardGo | None = None

    def pod(
        self,
        label: str,
        addresses: list[str],
        allowed: list[str],
        endpoint: bool = True,
        listen_port: int | None = None,
    ) -> Pod:
        keys = KeyPair.generate()
        cfg = InterfaceConfig(
            private_key=keys.private,
            addresses=[ip_interface(a) for a in addresses],
            listen_port=listen_port,
            peers=[
                PeerConfig(
                    public_key=self.peer_keys.public,
                    endpoint=EndpointSpec(PEER_IP, PEER_PORT) if endpoint else None,
                    allowed_ips=[ip_network(a) for a in allowed],
                )
            ],
        )
        return Pod(self.topology.host(label), keys, cfg)

    def serve_peer(self, addresses: list[str], pods: list[Pod]) -> None:
        """wireguard-go in `peer` with `addresses`, each pod a peer allowed its own addresses."""
        cfg = InterfaceConfig(
            private_key=self.peer_keys.private,
            addresses=[ip_interface(a) for a in addresses],
            listen_port=PEER_PORT,
            peers=[
                PeerConfig(
                    public_key=pod.keys.public,
                    allowed_ips=[ip_network(f"{a.ip}/{a.max_prefixlen}") for a in pod.config.addresses],
                )
                for pod in pods
            ],
        )
        if self.wg is None:
            self.wg = WireguardGo(self.peer, cfg).start()
        else:
            self.wg.configure(cfg)

    def add(self, pod: Pod, config: str | None = None) -> dict[str, Any]:
        text = config if config is not None else to_json(pod.config)
        reply = self.agent.call("add", **pod.ref, pod=pod.pod_name, network="wgnet", config=text)
        pod.reply = reply
        return reply

    def check(self, pod: Pod) -> dict[str, Any]:
        return self.agent.call("check", **pod.ref)

    def delete(self, pod: Pod) -> dict[str, Any]:
        return self.agent.call("del", **pod.ref)


@pytest.fixture
def lab(topology: Topology) -> Iterator[Lab]:
    node = topology.host("node")
    peer = topology.host("peer")
    link(node, peer, [f"{NODE_IP}/24"], [f"{PEER_IP}/24"])
    yield Lab(topology, node, peer, NodeAgent(node).start())


def assert_gone(lab: Lab, pod: Pod, name: str) -> None:
    """No link in the pod (if its namespace still exists), no UAPI socket, no state file."""
    if (NETNS_DIR / pod.host.name).exists():
        assert not pod.host.has_link(pod.ifname)
    assert not socket_path(name).exists()
    assert f"{name}.json" not in lab.agent.state_files()


def assert_ok(reply: dict[str, Any]) -> dict[str, Any]:
    assert reply.get("ok") is True, reply
    return reply


# --- the whole life of an attachment ------------------------------------------------------------


@pytest.mark.root
def test_add_ping_check_kill_recover_del(lab: Lab) -> None:
    pod = lab.pod("pod-a", ["10.99.0.2/32"], ["10.99.0.1/32"])
    lab.serve_peer(["10.99.0.1/24"], [pod])
    reply = assert_ok(lab.add(pod))
    name = reply["name"]
    expected = "cni" + hashlib.sha256(f"{pod.container_id}/net1".encode()).hexdigest()[:12]
    assert name == expected and len(name) == 15
    assert reply["interface"] == "net1" and reply["addresses"] == ["10.99.0.2/32"]
    assert reply["routes"] == ["10.99.0.1/32"] and reply["listen_port"] > 0

    assert pod.host.ping("10.99.0.1", timeout=10)
    shown = run(["wg", "show", name]).stdout
    assert lab.peer_keys.public_b64 in shown and "latest handshake" in shown
    assert assert_ok(lab.check(pod))["problems"] == []

    # Root only: 0600 socket, 0700 directories, 0600 state holding the key; the key never in the log.
    agent = lab.agent
    assert stat.S_IMODE(agent.socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(agent.socket.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(agent.state_dir.stat().st_mode) == 0o700
    state_file = agent.state_dir / f"{name}.json"
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    assert json.loads(state_file.read_text())["pod"] == "default/pod-a"

    # kill -9 the worker (not the supervisor): the link stays, the tunnel comes back by itself.
    assert agent.process is not None
    worker = agent.worker_pid()
    assert worker != agent.process.pid
    os.kill(worker, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: not alive(worker), 5.0, "the worker to die")
    assert pod.host.has_link("net1")
    wait_until(lambda: pod.host.ping("10.99.0.1", count=1, timeout=1), RECOVERY_LIMIT, "ping after kill -9")
    recovered = time.monotonic() - killed
    print(f"\ntraffic resumed {recovered:.2f} s after kill -9 of the agent worker")
    assert recovered <= RECOVERY_LIMIT
    assert agent.worker_pid() != worker and agent.process.poll() is None
    assert assert_ok(lab.check(pod))["problems"] == []
    assert "re-attached" in agent.log()

    assert assert_ok(lab.delete(pod))["removed"] is True
    assert_gone(lab, pod, name)
    assert_ok(lab.delete(pod))
    assert_ok(agent.call("del", container_id=pod.container_id, ifname="net1"))  # no netns given

    # DEL after the namespace is gone
    other = lab.pod("pod-b", ["10.99.0.3/32"], ["10.99.0.1/32"])
    other_name = assert_ok(lab.add(other))["name"]
    other.host.close()
    assert assert_ok(lab.delete(other))
    assert_gone(lab, other, other_name)
    assert agent.call("list")["attachments"] == []
    for secret in (pod.keys.private_b64, other.keys.private_b64):
        assert secret not in agent.log()


@pytest.mark.root
def test_dual_stack(lab: Lab) -> None:
    pod = lab.pod("pod", ["10.99.0.2/32", "fd99::2/128"], ["10.99.0.1/32", "fd99::1/128"])
    lab.serve_peer(["10.99.0.1/24", "fd99::1/64"], [pod])
    reply = assert_ok(lab.add(pod))
    assert reply["addresses"] == ["10.99.0.2/32", "fd99::2/128"]
    shown = pod.host.ip("addr", "show", "dev", "net1")
    assert "inet 10.99.0.2/32" in shown and "inet6 fd99::2/128" in shown
    assert pod.host.ping("10.99.0.1", timeout=10)
    assert pod.host.ping("fd99::1", timeout=10)
    assert assert_ok(lab.check(pod))["problems"] == []


@pytest.mark.root
def test_address_inside_allowed_ips(lab: Lab) -> None:
    pod = lab.pod("pod", ["10.1.2.3/32"], ["10.1.2.0/24"])
    lab.serve_peer(["10.1.2.1/24"], [pod])
    assert_ok(lab.add(pod))
    assert "dev net1" in pod.host.ip("route", "show", "10.1.2.0/24")
    assert pod.host.ping("10.1.2.1", timeout=10)
    assert assert_ok(lab.check(pod))["problems"] == []


@pytest.mark.root
def test_route_the_pod_has_elsewhere_gets_a_higher_metric(lab: Lab) -> None:
    pod = lab.pod("pod", ["10.99.0.2/32"], ["0.0.0.0/0"])
    gateway = lab.topology.host("gateway")
    link(pod.host, gateway, ["172.30.0.2/24"], ["172.30.0.1/24"])
    pod.host.add_route("default", via="172.30.0.1")
    reply = assert_ok(lab.add(pod))
    assert any("0.0.0.0/0" in w and "metric 4096" in w for w in reply["warnings"]), reply
    routes = pod.host.ip("route", "show", "default").splitlines()
    assert routes[0].startswith("default via 172.30.0.1"), routes
    assert any("dev net1" in r and "metric 4096" in r for r in routes), routes
    assert assert_ok(lab.check(pod))["problems"] == []


@pytest.mark.root
def test_check_reports_a_link_deleted_behind_the_agents_back(lab: Lab) -> None:
    pod = lab.pod("pod", ["10.99.0.2/32"], ["10.99.0.1/32"])
    name = assert_ok(lab.add(pod))["name"]
    pod.host.ip("link", "del", "net1")
    problems: list[str] = []

    def reported() -> bool:
        problems[:] = lab.check(pod)["problems"]
        return any("not running" in p for p in problems)

    wait_until(reported, 5.0, "check to report the stopped engine")
    assert any("net1 does not exist" in p for p in problems), problems
    assert not socket_path(name).exists()
    assert lab.agent.call("status")["tunnels"] == 0
    assert_ok(lab.delete(pod))
    assert_gone(lab, pod, name)


# --- refusals and failures ------------------------------------------------------------------------


@pytest.mark.root
def test_config_reuse_is_refused_naming_the_first_pod(lab: Lab) -> None:
    first = lab.pod("pod-first", ["10.99.0.2/32"], ["10.99.0.1/32"])
    assert_ok(lab.add(first))
    second = lab.pod("pod-second", ["10.99.0.2/32"], ["10.99.0.1/32"])
    reply = lab.add(second, config=to_json(first.config))
    assert reply["ok"] is False and reply["code"] == INVALID_NETWORK_CONFIG
    assert reply["msg"] == (
        "config already in use by pod default/pod-first on this node; each Pod needs its own WireGuard config"
    )
    name = "cni" + hashlib.sha256(f"{second.container_id}/net1".encode()).hexdigest()[:12]
    assert_gone(lab, second, name)
    assert [a["pod"] for a in lab.agent.call("list")["attachments"]] == ["default/pod-first"]


@pytest.mark.root
def test_config_of_a_pod_whose_namespace_is_gone_is_free_again(lab: Lab) -> None:
    old = lab.pod("pod-old", ["10.99.0.2/32"], ["10.99.0.1/32"])
    old_name = assert_ok(lab.add(old))["name"]
    old.host.close()  # the sandbox went, its DEL never came
    new = lab.pod("pod-new", ["10.99.0.2/32"], ["10.99.0.1/32"])
    lab.serve_peer(["10.99.0.1/24"], [old])
    assert_ok(lab.add(new, config=to_json(old.config)))
    assert_gone(lab, old, old_name)
    assert [a["pod"] for a in lab.agent.call("list")["attachments"]] == ["default/pod-new"]
    assert new.host.ping("10.99.0.1", timeout=10)


@pytest.mark.root
def test_failed_adds_leave_nothing(lab: Lab) -> None:
    first = lab.pod("pod-first", ["10.99.0.2/32"], ["10.99.0.1/32"])
    taken_port = assert_ok(lab.add(first))["listen_port"]
    before = lab.agent.state_files()

    bad = lab.pod("pod-bad", ["10.99.0.3/32"], ["10.99.0.1/32"])
    bad_name = "cni" + hashlib.sha256(f"{bad.container_id}/net1".encode()).hexdigest()[:12]
    reply = lab.add(bad, config='{"privateKey": "not a key", "peers": []}')
    assert reply["ok"] is False and reply["code"] == INVALID_NETWORK_CONFIG and "privateKey" in reply["msg"]
    assert_gone(lab, bad, bad_name)

    # The first attachment's UDP port: refused before anything is made.
    bad.config.listen_port = taken_port
    reply = lab.add(bad)
    assert reply["ok"] is False and reply["code"] == INVALID_NETWORK_CONFIG, reply
    assert f"listenPort {taken_port} is used by another Pod" in reply["msg"], reply
    assert_gone(lab, bad, bad_name)

    # Fails after the TUN was made and configured: another process serves its UAPI socket's path.
    bad.config.listen_port = None
    squatter = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        squatter.bind(str(socket_path(bad_name)))
        squatter.listen(1)
        reply = lab.add(bad)
        assert reply["ok"] is False and reply["code"] == INTERNAL and "UAPI" in reply["msg"], reply
        assert not bad.host.has_link(bad.ifname)
        assert f"{bad_name}.json" not in lab.agent.state_files()
    finally:
        squatter.close()
        socket_path(bad_name).unlink(missing_ok=True)

    reply = lab.agent.call(
        "add", **(bad.ref | {"netns": "/run/netns/no-such-ns"}), pod="default/x", config=to_json(bad.config)
    )
    assert reply["ok"] is False and reply["code"] == INVALID_NETNS and "no-such-ns" in reply["msg"]

    assert lab.agent.state_files() == before
    assert len(lab.agent.call("list")["attachments"]) == 1
    assert_ok(lab.delete(bad))  # DEL after a failed ADD
    assert assert_ok(lab.check(first))["problems"] == []


# --- many attachments -----------------------------------------------------------------------------


@pytest.mark.root
def test_gc_removes_what_is_not_valid(lab: Lab) -> None:
    pods = [lab.pod(f"pod-{i}", [f"10.99.0.{i + 2}/32"], ["10.99.0.1/32"]) for i in range(3)]
    names = [assert_ok(lab.add(pod))["name"] for pod in pods]
    keep = pods[0]
    valid = [{"containerID": keep.container_id, "ifname": "net1"}, {"containerID": "x", "ifname": "y"}]
    reply = assert_ok(lab.agent.call("gc", network="wgnet", valid=valid))
    assert sorted(reply["removed"]) == sorted(names[1:]) and reply["errors"] == []
    for pod, name in zip(pods[1:], names[1:], strict=True):
        assert_gone(lab, pod, name)
    assert lab.agent.state_files() == [f"{names[0]}.json"]
    assert assert_ok(lab.check(keep))["problems"] == []


@pytest.mark.root
def test_parallel_adds_for_different_pods(lab: Lab) -> None:
    pods = [lab.pod(f"pod-{i}", [f"10.99.0.{i + 2}/32"], ["10.99.0.1/32"]) for i in range(2)]
    lab.serve_peer(["10.99.0.1/24"], pods)
    replies: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda p=pod: replies.append(lab.add(p))) for pod in pods]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(replies) == 2 and all(r.get("ok") for r in replies), replies
    assert len({r["listen_port"] for r in replies}) == 2
    for pod in pods:
        assert pod.host.ping("10.99.0.1", timeout=10), pod
        assert assert_ok(lab.check(pod))["problems"] == []


@pytest.mark.root
def test_twenty_idle_tunnels_in_one_agent(lab: Lab) -> None:
    worker = lab.agent.worker_pid()
    empty = rss_kib(worker)
    pods = [
        lab.pod(f"pod-{i}", [f"10.200.0.{i + 1}/32"], [f"10.201.{i}.0/24"], endpoint=False) for i in range(20)
    ]
    started = time.monotonic()
    for pod in pods:
        assert_ok(lab.add(pod))
    took = time.monotonic() - started
    status = assert_ok(lab.agent.call("status"))
    assert status["tunnels"] == 20 and status["pid"] == worker
    full = rss_kib(worker)
    print(
        f"\nagent RSS: {empty / 1024:.1f} MiB with no tunnel, {full / 1024:.1f} MiB with 20 idle tunnels "
        f"({(full - empty) / 20:.0f} KiB per tunnel); 20 adds took {took:.1f} s"
    )
    assert full < 512 * 1024
    assert all(pod.host.has_link("net1") for pod in pods)


# --- restarts -------------------------------------------------------------------------------------


@pytest.mark.root
def test_the_supervisor_is_a_bare_interpreter(lab: Lab) -> None:
    """The process kept beside the worker has exec'd cni.supervisor and loaded no engine modules."""
    assert lab.agent.process is not None
    supervisor = lab.agent.process.pid
    argv = Path(f"/proc/{supervisor}/cmdline").read_bytes().split(b"\0")
    assert b"cni.supervisor" in argv
    maps = Path(f"/proc/{supervisor}/maps").read_text()
    assert "uvloop" not in maps and "_hotpath" not in maps and "_cffi_backend" not in maps
    worker = lab.agent.worker_pid()
    print(f"\nsupervisor RSS {rss_kib(supervisor) / 1024:.1f} MiB, worker {rss_kib(worker) / 1024:.1f} MiB")


@pytest.mark.root
def test_restart_resumes_live_pods_and_cleans_up_gone_ones(lab: Lab) -> None:
    live = lab.pod("pod-live", ["10.99.0.2/32"], ["10.99.0.1/32"])
    gone = lab.pod("pod-gone", ["10.99.0.3/32"], ["10.99.0.1/32"])
    lab.serve_peer(["10.99.0.1/24"], [live])
    live_name = assert_ok(lab.add(live))["name"]
    gone_name = assert_ok(lab.add(gone))["name"]
    assert live.host.ping("10.99.0.1", timeout=10)

    lab.agent.terminate()  # SIGTERM: engines stop, links and state stay
    assert live.host.has_link("net1") and gone.host.has_link("net1")
    assert not socket_path(live_name).exists()
    assert len(lab.agent.state_files()) == 2
    gone.host.close()

    lab.agent.start()
    attachments = lab.agent.call("list")["attachments"]
    assert [a["name"] for a in attachments] == [live_name]
    # The gone pod's leftovers are removed while the agent already serves.
    wait_until(lambda: lab.agent.state_files() == [f"{live_name}.json"], 5.0, "the gone pod's state to go")
    assert not socket_path(gone_name).exists()
    assert live.host.ping("10.99.0.1", timeout=RECOVERY_LIMIT)
    assert assert_ok(lab.check(live))["problems"] == []


# --- the client -----------------------------------------------------------------------------------


def test_client_reports_a_missing_agent(tmp_path: Path) -> None:
    with pytest.raises(agent_client.AgentNotRunning, match="node agent is not running"):
        agent_client.call("status", socket_path=tmp_path / "none.sock")


_ENSURE = "import sys; from cni.agent_client import ensure_agent; print(ensure_agent(sys.argv[1]))"


@pytest.mark.root
def test_ensure_agent_starts_one_detached_supervised_agent(topology: Topology) -> None:
    node = topology.host("node")
    sock = node.tmpdir / "ensure" / "agent.sock"
    first = node.run([sys.executable, "-c", _ENSURE, str(sock)], timeout=30).stdout.strip()
    assert first.isdigit(), first
    supervisor = int(first)
    try:
        assert os.getsid(supervisor) == supervisor  # its own session
        assert node.run([sys.executable, "-c", _ENSURE, str(sock)], timeout=30).stdout.strip() == "None"
        status = assert_ok(agent_client.call("status", socket_path=sock))
        assert status["pid"] != supervisor and status["tunnels"] == 0
        log = sock.parent / "agent.log"
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        with socket.socket(socket.AF_UNIX) as probe:
            probe.connect(str(sock))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(supervisor, signal.SIGTERM)
    wait_until(lambda: not alive(supervisor) and not sock.exists(), 15.0, "the agent to stop")
