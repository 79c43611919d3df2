"""Fault injection (issue #6): what breaks, what must hold afterwards, and how long recovery takes.

Every fault is injected into real processes in network namespaces: the node agent (`python -m
cni.agent --supervise` in a `node` host) hosting Pods' `net1`, wireguard-go as the WireGuard peer in
a `peer` host joined to the node by a veth, `pywg up` daemons, the CNI plugin as runtimes run it, a
real kube-apiserver (tests/support/k8s_cluster.py) and, for the API's misbehaviour (a slow or trickling
answer, which a real server does not give on demand), the fake one (tests/support/k8s_fake.py). Traffic
during a fault is a `Flow`: UDP probes every 10 ms (their gaps and losses time the recovery) beside a
paced TCP stream (it must complete with the sender's SHA-256). Recovery figures are printed
(`pytest -s`) and listed in SECURITY.md, "Faults".

Already covered elsewhere, so not repeated here: kill -9 of the agent worker and an agent restart
with idle tunnels (tests/test_agent.py, tests/test_cni_plugin.py), an unreachable or slow API and
401/403/404 answers at the start of an ADD (tests/test_cni_plugin.py, tests/test_k8s.py).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cni import agent_client
from cni.spec import IO_FAILURE, TRY_AGAIN_LATER
from pywg.runtime.daemon import alive
from pywg.runtime.netns import in_netns
from tests.support.cni_run import (
    ANNOTATION,
    NODE_UNDERLAY,
    PEER_TUNNEL,
    PEER_UNDERLAY,
    CniCall,
    NodeAgent,
    Peer,
    PodKeys,
    cni_args,
    config_json,
    invoke,
    leftovers,
    netns_path,
    silent_resolver,
    start_silent_dns,
)
from tests.support.k8s_cluster import CHECKOUT, RealKubernetes, start_real_kubernetes
from tests.support.k8s_fake import FakeKubernetes
from tests.support.pywg_run import PywgUp, pywg_argv
from tests.support.topology import (
    Host,
    KeyPair,
    Link,
    Topology,
    WireguardGo,
    link,
    run,
    stop_process,
    tunnel_configs,
    wait_until,
)

pytest_plugins = ["tests.support.topology", "tests.support.k8s_fake"]

PEER_V4 = PEER_TUNNEL[0].split("/")[0]
NAMESPACE = "default"
RECOVERY_LIMIT = 10.0  # the CNI issue: after a SIGKILL of the engine, traffic within 10 s
# The peer lost its sessions: the pod's side notices only by the protocol's timer (data sent, nothing
# received for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT = 15 s), then handshakes (REKEY_TIMEOUT 5 s per try).
PEER_RESTART_LIMIT = 30.0
PROBE_INTERVAL = 0.01
FLOW_LIMIT = 180.0  # no flow outlives this, whatever happens


# --- traffic during a fault -----------------------------------------------------------------------

_SINK = r"""
import hashlib, json, selectors, socket, sys, time
address, limit = sys.argv[1], float(sys.argv[2])
family = socket.AF_INET6 if ":" in address else socket.AF_INET
udp = socket.socket(family, socket.SOCK_DGRAM)
udp.bind((address, 0))
listener = socket.socket(family, socket.SOCK_STREAM)
listener.bind((address, 0))
listener.listen(1)
print(udp.getsockname()[1], listener.getsockname()[1], flush=True)
selector = selectors.DefaultSelector()
selector.register(udp, selectors.EVENT_READ)
selector.register(listener, selectors.EVENT_READ)
digest, total, chunks, probes, conn, done = hashlib.sha256(), 0, [], [], None, False
deadline = time.monotonic() + limit
while not done and time.monotonic() < deadline:
    for key, _ in selector.select(0.5):
        now = round(time.monotonic(), 4)
        if key.fileobj is udp:
            probes.append([int.from_bytes(udp.recv(2048)[:8], "big"), now])
        elif key.fileobj is listener:
            conn, _ = listener.accept()
            selector.register(conn, selectors.EVENT_READ)
        else:
            data = conn.recv(1 << 16)
            done = not data
            digest.update(data)
            total += len(data)
            if data:
                chunks.append(now)
print(json.dumps({"bytes": total, "sha256": digest.hexdigest(), "tcp": chunks, "udp": probes}), flush=True)
"""

_SOURCE = r"""
import hashlib, json, os, select, socket, sys, time
address, udp_port, tcp_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
interval, limit = float(sys.argv[4]), float(sys.argv[5])
family = socket.AF_INET6 if ":" in address else socket.AF_INET
udp = socket.socket(family, socket.SOCK_DGRAM)
tcp = socket.create_connection((address, tcp_port), timeout=10)
tcp.setblocking(False)
print("connected", flush=True)
digest, total, pending, seq = hashlib.sha256(), 0, bytearray(), 0
deadline = time.monotonic() + limit
tick = time.monotonic()
while time.monotonic() < deadline:
    if select.select([sys.stdin], [], [], max(0.0, tick - time.monotonic()))[0]:
        break
    tick = max(tick + interval, time.monotonic())
    try:
        udp.sendto(seq.to_bytes(8, "big") + bytes(56), (address, udp_port))
    except OSError:
        pass
    seq += 1
    if len(pending) < 1 << 16:
        chunk = os.urandom(1024)
        digest.update(chunk)
        total += len(chunk)
        pending += chunk
    try:
        del pending[: tcp.send(pending)]
    except (BlockingIOError, InterruptedError):
        pass
tcp.settimeout(max(1.0, deadline - time.monotonic()))
tcp.sendall(pending)
tcp.shutdown(socket.SHUT_WR)
while tcp.recv(1 << 16):
    pass
print(json.dumps({"bytes": total, "sha256": digest.hexdigest(), "probes": seq}), flush=True)
"""


@dataclass
class FlowResult:
    sent: dict[str, Any]
    received: dict[str, Any]

    @property
    def intact(self) -> bool:
        """The TCP stream arrived whole: as many bytes as were sent, with the same SHA-256."""
        return (self.received["bytes"], self.received["sha256"]) == (self.sent["bytes"], self.sent["sha256"])

    @property
    def lost(self) -> int:
        return int(self.sent["probes"]) - len({seq for seq, _ in self.received["udp"]})

    def stall(self, after: float) -> tuple[float, float]:
        """(start, end) of the longest gap between UDP probe arrivals that ends after `after`."""
        times = sorted(t for _, t in self.received["udp"])
        gaps = [(a, b) for a, b in itertools.pairwise(times) if b > after]
        assert gaps, f"no probe arrived after the fault ({len(times)} arrived in all)"
        return max(gaps, key=lambda gap: gap[1] - gap[0])

    def tcp_stall(self, after: float) -> float:
        """The longest gap between TCP arrivals that ends after `after`, in seconds."""
        times = self.received["tcp"]
        return max((b - a for a, b in itertools.pairwise(times) if b > after), default=0.0)


class Flow:
    """UDP probes every PROBE_INTERVAL and a paced TCP stream (about 100 KB/s) from `client` to
    `address` in `server`, until `finish`; both processes are bounded by FLOW_LIMIT."""

    def __init__(self, server: Host, client: Host, address: str) -> None:
        self.sink = server.popen(
            [sys.executable, "-c", _SINK, address, str(FLOW_LIMIT)], stdout=subprocess.PIPE
        )
        ports = _line(self.sink, 20.0).split()
        assert len(ports) == 2, f"the flow's sink did not start: {ports!r}"
        argv = [sys.executable, "-c", _SOURCE, address, *ports, str(PROBE_INTERVAL), str(FLOW_LIMIT)]
        self.errors = client.tmpdir / f"flow-{ports[1]}.err"
        with open(self.errors, "wb") as errors:
            self.source = client.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors)
        if _line(self.source, 20.0) != "connected":
            raise AssertionError(f"the flow's source could not connect: {self.errors.read_text()[-500:]}")

    def running_for(self, seconds: float) -> None:
        time.sleep(seconds)
        assert self.source.poll() is None and self.sink.poll() is None, "the flow ended early"

    def finish(self, timeout: float = 60.0) -> FlowResult:
        assert self.source.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.source.stdin.write(b"stop\n")
            self.source.stdin.close()
        sent = json.loads(_line(self.source, timeout) or "null")
        received = json.loads(_line(self.sink, timeout) or "null")
        assert sent is not None and received is not None, f"the flow did not finish: {sent} {received}"
        return FlowResult(sent, received)

    def stop(self) -> None:
        stop_process(self.source, 2.0)
        stop_process(self.sink, 2.0)


def _line(process: subprocess.Popen[bytes], timeout: float) -> str:
    """One line of `process`'s stdout within `timeout` seconds ("" on EOF or timeout)."""
    stdout = process.stdout
    assert stdout is not None
    found: list[bytes] = []
    reader = threading.Thread(target=lambda: found.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return found[0].decode(errors="replace").strip() if found else ""


@contextlib.contextmanager
def flowing(server: Host, client: Host, address: str) -> Iterator[Flow]:
    flow = Flow(server, client, address)
    try:
        flow.running_for(1.0)
        yield flow
    finally:
        flow.stop()


def report(what: str, figure: str) -> None:
    print(f"\nfaults: {what}: {figure}")


def assert_recovered(result: FlowResult, fault: float, limit: float, what: str) -> None:
    """Traffic flowed again within `limit` s of `fault` (monotonic), no more probes were lost than
    the stall explains, and the TCP stream is intact; reports the figures."""
    start, end = result.stall(fault)
    recovered = end - fault
    report(
        what,
        f"probes flowing again {recovered:.2f} s after the fault; {result.lost} of "
        f"{result.sent['probes']} probes lost; longest TCP stall {result.tcp_stall(fault):.2f} s; "
        f"{result.sent['bytes']} TCP bytes intact: {result.intact}",
    )
    assert recovered <= limit, f"{what}: traffic back only {recovered:.2f} s after the fault"
    assert result.intact, f"{what}: the TCP stream was not delivered whole: {result.sent} {result.received}"
    assert result.lost <= (end - start + 1.0) / PROBE_INTERVAL, f"{what}: {result.lost} probes lost"


# --- the node, its agent, its peer and pods -------------------------------------------------------


@dataclass
class Pod:
    name: str
    host: Host
    wg: PodKeys
    container_id: str = field(default_factory=lambda: secrets.token_hex(32))
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def netns(self) -> str:
        return netns_path(self.host)

    @property
    def address(self) -> str:
        return self.wg.addresses[0].split("/")[0]

    @property
    def args(self) -> str:
        return cni_args(NAMESPACE, self.name, self.container_id, self.uid)


@dataclass
class Lab:
    topology: Topology
    node: Host
    wire: Link
    peer: Peer
    agent: NodeAgent
    pods: list[Pod] = field(default_factory=list)

    def pod(self, name: str) -> Pod:
        """A Pod sandbox with its own WireGuard key and address (the peer knows it after `serve`)."""
        index = len(self.pods) + 2
        pod = Pod(name, self.topology.host(name), PodKeys(KeyPair.generate(), [f"10.1.2.{index}/32"]))
        self.pods.append(pod)
        return pod

    def serve(self) -> None:
        """(Re)configure the peer for every pod made so far: `wg setconf` drops its sessions."""
        self.peer.serve(p.wg for p in self.pods)

    def wireguard(self, pod: Pod) -> dict[str, Any]:
        return config_json(pod.wg, self.peer, [f"{PEER_V4}/32"])

    def netconf(self, pod: Pod) -> dict[str, Any]:
        """A NAD's config with the Pod's WireGuard config inline (no API server needed)."""
        return {
            "cniVersion": "1.1.0",
            "name": "wgnet",
            "type": "pywg-cni",
            "wireguard": self.wireguard(pod),
        }

    def cni(self, command: str, pod: Pod, netconf: dict[str, Any] | None = None) -> CniCall:
        config = netconf if netconf is not None else self.netconf(pod)
        env = self.agent.plugin_env([Path(tempfile.gettempdir())])  # the fake API servers' kubeconfigs
        return invoke(command, config, container_id=pod.container_id, netns=pod.netns, args=pod.args, env=env)

    def leftovers(self, pod: Pod) -> list[str]:
        return leftovers(self.agent, pod.container_id, "net1", pod.netns)

    def connected(self, pod: Pod) -> None:
        assert pod.host.ping(PEER_V4, timeout=10), f"{pod.name} cannot reach the peer through net1"


def make_lab(topology: Topology, prepare: Callable[[Host], None] | None = None) -> Lab:
    """The node with its agent, and the peer. `prepare(node)` runs before the agent exists, so what
    it registers with `node.on_close` is undone after the agent has stopped."""
    node, peer_host = topology.host("node"), topology.host("peer")
    wire = link(node, peer_host, [f"{NODE_UNDERLAY}/24"], [f"{PEER_UNDERLAY}/24"])
    if prepare is not None:
        prepare(node)
    # The fake API servers' kubeconfigs are in temporary directories: the policy lets them be read.
    agent = NodeAgent(node, args=["--config-dir", tempfile.gettempdir()])
    return Lab(topology, node, wire, Peer(peer_host), agent.start())


@pytest.fixture
def lab(topology: Topology) -> Lab:
    return make_lab(topology)


def worker_fds(pid: int) -> set[str]:
    """What the open fds of process `pid` point to."""
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            found.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return found


def no_traceback(agent: NodeAgent) -> None:
    assert "Traceback" not in agent.log(), agent.log()[-3000:]


def traffic_back(pod: Pod, limit: float, what: str) -> None:
    wait_until(lambda: pod.host.ping(PEER_V4, timeout=1), limit, what)


def added(lab: Lab, *names: str) -> list[Pod]:
    """Pods with net1 (CNI ADD, inline config) that have reached the peer."""
    pods = [lab.pod(name) for name in names]
    lab.serve()
    for pod in pods:
        lab.cni("ADD", pod).ok()
        lab.connected(pod)
    return pods


# --- the engine, the agent and the peer die or restart under traffic ------------------------------


def test_agent_worker_sigkill_mid_transfer(lab: Lab) -> None:
    [pod] = added(lab, "pod")
    worker = lab.agent.worker_pid()
    with flowing(lab.peer.host, pod.host, PEER_V4) as flow:
        os.kill(worker, signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: not alive(worker), 5.0, "the agent worker to die")
        assert pod.host.has_link("net1"), "net1 went with the engine"
        traffic_back(pod, RECOVERY_LIMIT + 5.0, "traffic after kill -9 of the agent worker")
        flow.running_for(1.0)
        result = flow.finish()
    assert_recovered(result, killed, RECOVERY_LIMIT, "agent worker SIGKILL mid-transfer (no CNI call)")
    assert [a["running"] for a in lab.agent.attachments()] == [True]
    assert lab.agent.worker_pid() != worker


def _kill_whole_agent(agent: NodeAgent) -> None:
    """SIGKILL the supervisor and the worker at once, as the kubelet kills the agent's container."""
    assert agent.process is not None
    worker = agent.worker_pid()
    os.kill(agent.process.pid, signal.SIGKILL)
    os.kill(worker, signal.SIGKILL)
    agent.process.wait(10)
    wait_until(lambda: not alive(worker), 5.0, "the agent worker to die")
    agent.process = None


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_node_agent_restarted_under_traffic(lab: Lab, how: str) -> None:
    pods = added(lab, "pod-a", "pod-b")
    with contextlib.ExitStack() as stack:
        flows = [stack.enter_context(flowing(lab.peer.host, pod.host, PEER_V4)) for pod in pods]
        stopped = time.monotonic()
        if how == "sigterm":
            lab.agent.terminate()  # SIGTERM to the supervisor: engines stop, links and state stay
        else:
            _kill_whole_agent(lab.agent)
        assert all(pod.host.has_link("net1") for pod in pods)
        restarted = time.monotonic()
        lab.agent.start()
        answering = time.monotonic()
        for pod in pods:
            traffic_back(pod, RECOVERY_LIMIT + 5.0, f"traffic of {pod.name} after the agent's restart")
        flows[0].running_for(1.0)
        results = [flow.finish() for flow in flows]
    report(
        f"node agent {how} and restart",
        f"the old agent was gone {restarted - stopped:.2f} s after the signal; the new one answered "
        f"{answering - restarted:.2f} s after its start",
    )
    for pod, result in zip(pods, results, strict=True):
        assert_recovered(result, stopped, RECOVERY_LIMIT, f"node agent {how} + restart, {pod.name}")
    assert sorted(a["running"] for a in lab.agent.attachments()) == [True, True]
    no_traceback(lab.agent)


def test_peer_restart_under_traffic(lab: Lab) -> None:
    [pod] = added(lab, "pod")
    assert lab.peer.wg is not None
    with flowing(lab.peer.host, pod.host, PEER_V4) as flow:
        restarting = time.monotonic()
        lab.peer.wg.restart()  # wireguard-go loses every session; the pod's side is not told
        traffic_back(pod, PEER_RESTART_LIMIT + 5.0, "traffic after the peer's restart")
        flow.running_for(1.0)
        result = flow.finish()
    assert_recovered(result, restarting, PEER_RESTART_LIMIT, "wireguard-go peer restarted (sessions lost)")


def test_underlay_down_and_up_under_traffic(lab: Lab) -> None:
    [pod] = added(lab, "pod")
    with flowing(lab.peer.host, pod.host, PEER_V4) as flow:
        lab.wire.down()
        time.sleep(3.0)
        # Taken before `ip link set up` returns: probes may flow again before it does, and the
        # outage must still count as the stall that ends after this moment.
        up = time.monotonic()
        lab.wire.up()
        traffic_back(pod, RECOVERY_LIMIT + 5.0, "traffic after the underlay came back")
        flow.running_for(1.0)
        result = flow.finish()
    assert_recovered(result, up, RECOVERY_LIMIT, "underlay veth down 3 s, then up (time from up)")
    no_traceback(lab.agent)


def test_pod_namespace_deleted_under_a_running_engine(lab: Lab) -> None:
    worker = lab.agent.worker_pid()
    idle = worker_fds(worker)
    [pod] = added(lab, "pod")
    tunnel = worker_fds(worker) - idle  # its TUN, UDP sockets, UAPI socket, netlink socket
    assert "/dev/net/tun" in tunnel, tunnel
    pinger = lab.peer.host.popen(["ping", "-n", "-q", "-i", "0.05", "-w", "60", pod.address])
    time.sleep(1.0)
    pod.host.close()  # the runtime deletes the sandbox; its DEL comes later
    deleted = time.monotonic()
    wait_until(lambda: not worker_fds(worker) & tunnel, 15.0, "the engine to close its TUN and sockets")
    report("pod namespace deleted under traffic", f"engine stopped {time.monotonic() - deleted:.2f} s later")
    stop_process(pinger, 2.0)
    assert [a["running"] for a in lab.agent.attachments()] == [False]
    assert "was deleted" in lab.agent.log() and lab.agent.worker_pid() == worker
    lab.cni("DEL", pod).ok()
    assert lab.leftovers(pod) == [] and lab.agent.state_files() == []
    assert not worker_fds(worker) & tunnel and "/dev/net/tun" not in worker_fds(worker)
    no_traceback(lab.agent)


# --- the state directory full or read-only --------------------------------------------------------

STATE_TMPFS_SIZE = "256k"


def _state_on_tmpfs(node: Host) -> None:
    """The agent's state dir (NodeAgent: <node tmpdir>/state) on a tiny tmpfs of its own."""
    state = node.tmpdir / "state"
    state.mkdir(mode=0o700)
    run(["mount", "-t", "tmpfs", "-o", f"size={STATE_TMPFS_SIZE},mode=0700", "pywgt-state", str(state)])
    node.on_close(lambda: _unmount(state))


def _unmount(directory: Path) -> None:
    run(["umount", "-l", str(directory)], check=False)


def _fill(directory: Path) -> Path:
    """Write zeros to `directory`/filler until the filesystem is full."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, bytes(4096))
    finally:
        os.close(fd)
    return filler


def _remount(directory: Path, mode: str) -> None:
    run(["mount", "-o", f"remount,{mode}", str(directory)])


@pytest.fixture
def tmpfs_lab(topology: Topology) -> Lab:
    return make_lab(topology, _state_on_tmpfs)


def _assert_io_failure(call: CniCall, state_dir: Path, why: str) -> None:
    error = call.error("1.1.0")
    assert error["code"] == IO_FAILURE, error
    assert str(state_dir) in error["msg"] and why in error["msg"], error


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_state_dir_full_or_read_only(tmpfs_lab: Lab, fault: str) -> None:
    lab, state = tmpfs_lab, tmpfs_lab.agent.state_dir
    [running] = added(lab, "pod-running")
    kept = sorted(p.name for p in state.iterdir())
    pod = lab.pod("pod-new")
    lab.serve()
    if fault == "full":
        filler = _fill(state)
        kept.append(filler.name)
        why = "No space left on device"
    else:
        _remount(state, "ro")  # possible while the agent runs: it holds no file open for writing
        why = "Read-only file system"

    _assert_io_failure(lab.cni("ADD", pod), state, why)
    assert lab.leftovers(pod) == [] and sorted(p.name for p in state.iterdir()) == sorted(kept)
    lab.cni("DEL", pod).ok()  # the runtime's DEL after the failed ADD

    worker = lab.agent.worker_pid()  # a crash now: the next worker starts and re-attaches all the same
    os.kill(worker, signal.SIGKILL)
    killed = time.monotonic()
    traffic_back(running, RECOVERY_LIMIT, f"traffic after kill -9 of the agent with its state dir {fault}")
    report(
        f"agent worker SIGKILL, state dir {fault}", f"traffic back {time.monotonic() - killed:.2f} s later"
    )
    assert lab.agent.worker_pid() != worker
    if fault == "read-only":  # DEL cannot remove the state: it fails, and the runtime retries it
        _assert_io_failure(lab.cni("DEL", running), state, why)

    filler.unlink() if fault == "full" else _remount(state, "rw")
    lab.cni("DEL", running).ok()
    lab.cni("ADD", pod).ok()  # the same Pod once the node is fixed
    lab.connected(pod)
    lab.cni("DEL", pod).ok()
    assert lab.leftovers(pod) == [] and lab.leftovers(running) == []
    assert sorted(p.name for p in state.iterdir()) == ["agent.lock"]
    no_traceback(lab.agent)


# --- the Kubernetes API during ADD, and ADDs racing -----------------------------------------------


def _api_netconf(lab: Lab, kubeconfig: Path) -> dict[str, Any]:
    return {
        "cniVersion": "1.1.0",
        "name": "wgnet",
        "type": "pywg-cni",
        "kubeConfigPath": str(kubeconfig),
    }


def _publish(fake: FakeKubernetes, lab: Lab, pod: Pod) -> None:
    """The Pod object, annotated with its Secret, and the Secret with its config.json."""
    fake.add_pod(NAMESPACE, pod.name, {ANNOTATION: f"wg-{pod.name}"}, uid=pod.uid)
    fake.add_secret(NAMESPACE, f"wg-{pod.name}", {"config.json": json.dumps(lab.wireguard(pod))})


def test_api_trickling_its_answer_mid_add(lab: Lab, fake_k8s: FakeKubernetes) -> None:
    """The Pod is read, then the Secret's answer comes a byte a second: each recv is quick, the
    answer never ends. The ADD must give up within the client's timeout, retriably. (The fake API
    server: a real one does not trickle on demand.)"""
    pod = lab.pod("pod")
    _publish(fake_k8s, lab, pod)
    fake_k8s.trickle = {"secrets": 1.0}
    started = time.monotonic()
    call = lab.cni("ADD", pod, _api_netconf(lab, fake_k8s.write_kubeconfig("token")))
    took = time.monotonic() - started
    error = call.error("1.1.0")
    report("API answer trickling during ADD", f"CNI error {error['code']} after {took:.2f} s")
    assert error["code"] == TRY_AGAIN_LATER and "did not answer within 5 s" in error["msg"], error
    assert [s.path.split("/")[-2] for s in fake_k8s.seen] == ["pods", "secrets"]
    assert took < 30.0, f"ADD took {took:.1f} s"
    assert lab.leftovers(pod) == [] and lab.agent.state_files() == []
    lab.cni("DEL", pod).ok()


PARALLEL_PODS = 4


@pytest.fixture(scope="module")
def real_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealKubernetes]:
    """A real API server (tests/support/k8s_cluster.py), deploy/rbac.yaml and the agent's ServiceAccount."""
    deploy = CHECKOUT / "deploy"
    with start_real_kubernetes(tmp_path_factory.mktemp("kube-real")) as real:
        real.kubectl("apply", "-f", str(deploy / "rbac.yaml"), "-f", str(deploy / "daemonset.yaml"))
        real.wait_for_rbac(
            "system:serviceaccount:kube-system:pywg-cni", "get", "secrets", NAMESPACE, allowed=True
        )
        yield real


def test_parallel_adds_for_different_pods(lab: Lab, real_api: RealKubernetes, tmp_path: Path) -> None:
    """Plugin processes for several Pods at once (as kubelet runs sandboxes in parallel), each
    reading its own Pod and Secret from a real API server: all succeed, nothing is mixed up, and the
    state they leave brings every tunnel back after a crash."""
    pods = [lab.pod(f"pod-{i}") for i in range(PARALLEL_PODS)]
    lab.serve()
    for pod in pods:
        secret = {
            "metadata": {"name": f"wg-{pod.name}"},
            "stringData": {"config.json": json.dumps(lab.wireguard(pod))},
        }
        real_api.call("POST", f"/api/v1/namespaces/{NAMESPACE}/secrets", secret)
        created = real_api.call(
            "POST",
            f"/api/v1/namespaces/{NAMESPACE}/pods",
            {
                "metadata": {"name": pod.name, "annotations": {ANNOTATION: f"wg-{pod.name}"}},
                "spec": {"containers": [{"name": "main", "image": "your-application-image"}]},
            },
        )
        pod.uid = created["metadata"]["uid"]
    token = real_api.token_for("kube-system", "pywg-cni")
    netconf = _api_netconf(lab, real_api.write_kubeconfig(tmp_path / "pywg-cni.kubeconfig", token))
    calls: dict[str, CniCall] = {}

    def add(pod: Pod) -> None:
        calls[pod.name] = lab.cni("ADD", pod, netconf)

    started = time.monotonic()
    threads = [threading.Thread(target=add, args=(pod,)) for pod in pods]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    report(
        f"{PARALLEL_PODS} parallel ADDs", f"all done {time.monotonic() - started:.2f} s after the first began"
    )
    for pod in pods:
        result = calls[pod.name].ok()
        assert [ip["address"] for ip in result["ips"]] == pod.wg.addresses, result
    attachments = {a["container_id"]: a for a in lab.agent.attachments()}
    assert sorted(attachments) == sorted(pod.container_id for pod in pods)
    assert len({a["listen_port"] for a in attachments.values()}) == PARALLEL_PODS
    for pod in pods:
        att = attachments[pod.container_id]
        assert att["pod"] == f"{NAMESPACE}/{pod.name}" and att["netns"] == pod.netns, att
        state = json.loads((lab.agent.state_dir / f"{att['name']}.json").read_text())
        assert state["complete"] and state["listen_port"] == att["listen_port"], state
        assert pod.wg.keys.private_b64 in state["config"]
        lab.connected(pod)

    worker = lab.agent.worker_pid()
    os.kill(worker, signal.SIGKILL)
    for pod in pods:
        traffic_back(pod, RECOVERY_LIMIT, f"traffic of {pod.name} after kill -9 of the agent")
    restored = {a["container_id"]: a for a in lab.agent.attachments()}
    assert {cid: (a["listen_port"], a["running"]) for cid, a in restored.items()} == {
        cid: (a["listen_port"], True) for cid, a in attachments.items()
    }
    no_traceback(lab.agent)


# --- DEL racing an ADD whose agent crashed --------------------------------------------------------

SLOW_NAME = "wg-peer.pywg-faults.invalid"  # resolved through a DNS server that never answers


def _silent_resolver(node: Host) -> None:
    silent_resolver(node, PEER_UNDERLAY)


def _cni_op(lab: Lab, command: str, pod: Pod, netconf: dict[str, Any]) -> dict[str, Any]:
    """A CNI call through the agent's `cni` op, as the static entrypoint makes it on a node."""
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": pod.container_id,
        "CNI_NETNS": pod.netns,
        "CNI_IFNAME": "net1",
        "CNI_ARGS": pod.args,
        "CNI_PATH": "/opt/cni/bin",
    }
    return agent_client.call("cni", {"env": env, "stdin": json.dumps(netconf)}, lab.agent.socket, 60.0)


def _incomplete_state(lab: Lab) -> bool:
    for path in lab.agent.state_dir.glob("cni*.json"):
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text())["complete"] is False:
                return True
    return False


def _del_until_answered(
    lab: Lab, pod: Pod, netconf: dict[str, Any], limit: float
) -> tuple[dict[str, Any], int]:
    """DEL at once, again while the agent is not back (as the runtime retries): (reply, tries)."""
    deadline, tries = time.monotonic() + limit, 0
    while True:
        tries += 1
        try:
            return _cni_op(lab, "DEL", pod, netconf), tries
        except agent_client.AgentError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextlib.contextmanager
def _api_in_node(lab: Lab, pod: Pod, delay: float) -> Iterator[tuple[FakeKubernetes, dict[str, Any]]]:
    """A fake API server listening in the node's namespace, where the agent runs the plugin, that
    answers after `delay` s (a real one does not answer late on demand); yields it and the network
    config naming it."""
    fake = FakeKubernetes()
    with in_netns(netns_path(lab.node)):
        fake.start()  # its socket belongs to the node's namespace; its thread serves from ours
    try:
        _publish(fake, lab, pod)
        fake.delay = delay
        yield fake, _api_netconf(lab, fake.write_kubeconfig("token"))
    finally:
        fake.stop()


def _add_in_background(lab: Lab, pod: Pod, netconf: dict[str, Any]) -> tuple[threading.Thread, list[Any]]:
    """An ADD through the agent in a thread: (the thread, [its reply or AgentError] once done)."""
    outcome: list[Any] = []

    def add() -> None:
        try:
            outcome.append(_cni_op(lab, "ADD", pod, netconf))
        except agent_client.AgentError as error:
            outcome.append(error)

    thread = threading.Thread(target=add)
    thread.start()
    return thread, outcome


def _stalling_netconf(lab: Lab, pod: Pod, stack: contextlib.ExitStack) -> dict[str, Any]:
    """The Pod's network config with its peer at SLOW_NAME, and the silent DNS server running (for
    a node made with `_silent_resolver`): its ADD stalls in the agent after writing its state."""
    stack.callback(stop_process, start_silent_dns(lab.peer.host, PEER_UNDERLAY), 2.0)
    netconf = lab.netconf(pod)
    netconf["wireguard"]["peers"][0]["endpoint"] = f"{SLOW_NAME}:51820"
    return netconf


def _crashed_add_outcome(adding: threading.Thread, outcome: list[Any]) -> None:
    adding.join(60)
    assert len(outcome) == 1 and isinstance(outcome[0], agent_client.AgentError), outcome
    assert "closed the connection" in str(outcome[0]), outcome  # the entrypoint says: try again later


@pytest.mark.parametrize("crash", ["reading-the-api", "creating-net1"])
def test_del_racing_an_add_whose_agent_crashed(topology: Topology, crash: str) -> None:
    lab = make_lab(topology, _silent_resolver if crash == "creating-net1" else None)
    pod = lab.pod("pod")
    with contextlib.ExitStack() as stack:
        if crash == "reading-the-api":
            fake, netconf = stack.enter_context(_api_in_node(lab, pod, delay=4.0))
            crash_point: Callable[[], bool] = lambda: bool(fake.seen)  # noqa: E731
        else:
            netconf = _stalling_netconf(lab, pod, stack)
            crash_point = lambda: _incomplete_state(lab)  # noqa: E731
        worker = lab.agent.worker_pid()
        adding, outcome = _add_in_background(lab, pod, netconf)
        wait_until(crash_point, 30.0, f"the ADD to be {crash}")
        os.kill(worker, signal.SIGKILL)
        killed = time.monotonic()
        _crashed_add_outcome(adding, outcome)
        reply, tries = _del_until_answered(lab, pod, netconf, 20.0)
        answered = time.monotonic() - killed
    assert reply == {"ok": True, "status": 0, "stdout": ""}, reply
    report(f"DEL after the agent crashed {crash}", f"succeeded {answered:.2f} s after the crash, try {tries}")
    assert lab.leftovers(pod) == [] and lab.agent.state_files() == []
    if crash == "creating-net1":
        assert "its add never completed" in lab.agent.log(), lab.agent.log()[-2000:]
    no_traceback(lab.agent)


def _silent_resolver_and_tmpfs_state(node: Host) -> None:
    _silent_resolver(node)
    _state_on_tmpfs(node)


def test_agent_restarting_on_a_read_only_state_dir_with_a_crashed_add(topology: Topology) -> None:
    """The agent crashes in an ADD, and its state dir is read-only when it starts again: it cannot
    remove the incomplete attachment's state, but it must serve (not crash in a loop), and DEL must
    say why it cannot finish until the directory is writable again."""
    lab = make_lab(topology, _silent_resolver_and_tmpfs_state)
    state = lab.agent.state_dir
    pod = lab.pod("pod")
    with contextlib.ExitStack() as stack:
        netconf = _stalling_netconf(lab, pod, stack)
        worker = lab.agent.worker_pid()
        adding, outcome = _add_in_background(lab, pod, netconf)
        wait_until(lambda: _incomplete_state(lab), 30.0, "the ADD to write its incomplete state")
        _remount(state, "ro")
        os.kill(worker, signal.SIGKILL)
        _crashed_add_outcome(adding, outcome)
        reply, _ = _del_until_answered(lab, pod, netconf, 20.0)
    assert reply["status"] == 1, reply
    _assert_io_failure(CniCall(1, reply["stdout"], ""), state, "Read-only file system")
    assert "its add never completed" in lab.agent.log() and lab.agent.worker_pid() != worker
    _remount(state, "rw")
    assert _cni_op(lab, "DEL", pod, netconf) == {"ok": True, "status": 0, "stdout": ""}
    assert lab.leftovers(pod) == [] and sorted(p.name for p in state.iterdir()) == ["agent.lock"]
    no_traceback(lab.agent)


# --- `pywg up`, the standalone daemon -------------------------------------------------------------

A_UNDER, B_UNDER = "192.0.2.1", "192.0.2.2"
INNER_A, INNER_B = "10.98.0.1/24", "10.98.0.2/24"


def test_pywg_up_sigkill_mid_transfer_then_up_again(topology: Topology) -> None:
    """kill -9 of a `pywg up` daemon: its TUN goes with it, but the dead daemon's UAPI socket and
    state file must not block the next `pywg up` of the same tunnel."""
    a, b = topology.host("a"), topology.host("b")
    link(a, b, [f"{A_UNDER}/24"], [f"{B_UNDER}/24"])
    cfg_a, cfg_b = tunnel_configs(
        KeyPair.generate(), KeyPair.generate(), [INNER_A], [INNER_B], A_UNDER, B_UNDER
    )
    WireguardGo(b, cfg_b).start()
    pywg = PywgUp(a, cfg_a)
    pywg.up()
    inner_b = INNER_B.split("/")[0]
    assert a.ping(inner_b, timeout=10)
    with flowing(b, a, inner_b) as flow:
        daemon = pywg.pid
        os.kill(daemon, signal.SIGKILL)
        killed = time.monotonic()
        wait_until(
            lambda: not alive(daemon) and not a.has_link(pywg.ifname), 10.0, "the daemon and its TUN to go"
        )
        stale = pywg.leftovers()
        pywg.up()  # the runtime's or the user's restart
        up = time.monotonic()
        wait_until(lambda: a.ping(inner_b, timeout=1), RECOVERY_LIMIT, "traffic after `pywg up` again")
        flow.running_for(1.0)
        result = flow.finish()
    report(
        "pywg up SIGKILL, then pywg up again",
        f"`pywg up` took {up - killed:.2f} s after the kill; left: {stale}",
    )
    assert_recovered(result, killed, RECOVERY_LIMIT, "pywg up daemon SIGKILL + pywg up again mid-transfer")
    pywg.down()
    pywg.wait_gone()


def test_pywg_up_namespace_deleted_under_it(topology: Topology) -> None:
    """The TUN's namespace deleted under a running `pywg up --netns` (its UDP socket elsewhere): the
    daemon stops by itself and leaves nothing."""
    node, pod, b = topology.host("node"), topology.host("pod"), topology.host("b")
    link(node, b, [f"{A_UNDER}/24"], [f"{B_UNDER}/24"])
    cfg_a, cfg_b = tunnel_configs(
        KeyPair.generate(), KeyPair.generate(), [INNER_A], [INNER_B], A_UNDER, B_UNDER
    )
    WireguardGo(b, cfg_b).start()
    pywg = PywgUp(node, cfg_a)
    argv = pywg_argv("up", str(pywg.config_path), "--netns", pod.name, "--name", pywg.name)
    node.run([*argv, "--interface", pywg.ifname], timeout=30)
    daemon = pywg.pid
    assert pod.ping(INNER_B.split("/")[0], timeout=10)
    pinger = b.popen(["ping", "-n", "-q", "-i", "0.05", "-w", "60", INNER_A.split("/")[0]])
    time.sleep(1.0)
    pod.close()
    deleted = time.monotonic()
    wait_until(lambda: not alive(daemon), 15.0, "the daemon to stop")
    report(
        "pywg up: TUN namespace deleted under traffic",
        f"daemon exited {time.monotonic() - deleted:.2f} s later",
    )
    stop_process(pinger, 2.0)
    pywg.wait_gone()
    assert "was deleted" in pywg.log() and "Traceback" not in pywg.log(), pywg.log()
