"""The kernel-mode scenario that tests/test_kernel_mode.py runs inside its VM (tests/support/vm.py):

    python -m tests.support.kernel_scenario RESULTS_DIR ENTRYPOINT

The VM's root namespace plays the node: the node agent runs there, and ENTRYPOINT (the compiled
cni/entrypoint.c, as the DaemonSet installs it in /opt/cni/bin) is executed for every CNI call exactly as
Multus executes a delegate: CNI_* variables, Multus's CNI_ARGS, the network config on stdin. The peer is
a kernel WireGuard link in a `peer` namespace joined to the node by a veth. Each step is appended to
RESULTS_DIR/steps.jsonl as {"step", "ok", "detail"}; the first failure ends the run (later steps build
on earlier ones). The agent's log is RESULTS_DIR/agent.log.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from cni import agent_client, kernel
from cni.agent import Attachment, StateStore, attachment_name
from pywg.config import parse_config
from pywg.core.keys import encode_key, generate_private_key, public_key_for
from pywg.runtime.netns import netns_identity
from pywg.runtime.resolve import resolve_endpoints

STEPS = (
    "setup",
    "kernel ADD",
    "net1 is a kernel WireGuard link as configured, its socket on the node",
    "ping through net1",
    "a live config update keeps the peer's session",
    "CHECK",
    "a second Pod with the same key is refused",
    "agent restart keeps the link and removes half-made ones",
    "CHECK fails after a peer is removed",
    "DEL",
    "DEL again",
    "failed ADD leaves nothing",
    "auto ADD chooses kernel",
    "GC removes it",
    "DEL after the namespace is gone",
    "nothing left",
)
NODE_IP, PEER_IP = "10.99.0.1", "10.99.0.2"
PEER_PORT = 51820
TAKEN_PORT, CHOSEN_PORT = 52999, 52500  # of the agent's default port range
PEER_TUNNEL_IP = "10.13.13.1"
ALLOWED = "10.13.13.0/24"  # contains the pods' own addresses: routed through net1 all the same
STATE_DIR = Path("/run/pywg-cni")
SOCKET = STATE_DIR / "agent.sock"


def expected_result(netns: str, address: str, allowed: list[str], mtu: int = 1420) -> dict[str, Any]:
    """ADD's CNI 1.1.0 result for a one-address config: the same in kernel and userspace mode."""
    return {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "net1", "mtu": mtu, "sandbox": netns}],
        "ips": [{"address": address, "interface": 0}],
        "routes": [{"dst": net} for net in allowed],
        "dns": {},
    }


class StepFailed(Exception):
    """A step's expectation did not hold; the message says what was seen."""


def expect(condition: bool, detail: str) -> None:
    if not condition:
        raise StepFailed(detail)


class Report:
    """steps.jsonl: one line per step, written as it ends, so a hang still shows how far it got."""

    def __init__(self, results: Path) -> None:
        self.path = results / "steps.jsonl"
        self.done: list[str] = []

    def write(self, step: str, ok: bool, detail: str) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps({"step": step, "ok": ok, "detail": detail}) + "\n")

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        assert name == STEPS[len(self.done)], f"step {name!r} out of order"
        started = time.monotonic()
        try:
            yield
        except Exception as error:
            detail = str(error) if isinstance(error, StepFailed) else traceback.format_exc()
            self.write(name, False, detail)
            raise
        self.done.append(name)
        self.write(name, True, f"{time.monotonic() - started:.1f} s")


# --- commands ---------------------------------------------------------------------------------------


def sh(*argv: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if check and done.returncode != 0:
        raise StepFailed(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


class Keys:
    def __init__(self) -> None:
        self.private = generate_private_key(secrets.token_bytes)
        self.public = public_key_for(self.private)


class Pod:
    def __init__(self, name: str, address: str, psk: bool = False) -> None:
        self.name, self.address = name, address
        self.keys = Keys()
        self.psk = secrets.token_bytes(32) if psk else None
        self.container_id = os.urandom(32).hex()
        sh("ip", "netns", "add", name)
        sh("ip", "link", "set", "lo", "up", netns=name)

    @property
    def netns(self) -> str:
        return f"/var/run/netns/{self.name}"

    def config(self, peer: Keys, **extra: Any) -> dict[str, Any]:
        """The Secret's config.json."""
        return {
            "address": self.address,
            "privateKey": encode_key(self.keys.private),
            "peers": [
                {
                    "endpoint": f"{PEER_IP}:{PEER_PORT}",
                    "publicKey": encode_key(peer.public),
                    "allowedIPs": [ALLOWED],
                    "persistentKeepalive": "25s",
                    **({"presharedKey": encode_key(self.psk)} if self.psk else {}),
                }
            ],
            **extra,
        }


class Cni:
    """Runs the entrypoint as Multus runs a delegate."""

    def __init__(self, entrypoint: Path) -> None:
        self.entrypoint = entrypoint

    def __call__(
        self,
        command: str,
        pod: Pod,
        mode: str,
        wireguard: dict[str, Any],
        netns: str | None = None,
        **extra: Any,
    ) -> tuple[int, Any]:
        netconf = {
            "cniVersion": "1.1.0",
            "name": "wgnet",
            "type": "pywg-cni",
            "mode": mode,
            "wireguard": wireguard,
            **extra,
        }
        env = {
            "PATH": os.environ["PATH"],
            "PYWG_CNI_AGENT_SOCKET": str(SOCKET),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": pod.container_id,
            "CNI_NETNS": pod.netns,
            "CNI_IFNAME": "net1",
            "CNI_PATH": "/opt/cni/bin",
            "CNI_ARGS": f"IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod.name};"
            f"K8S_POD_INFRA_CONTAINER_ID={pod.container_id}",
        }
        done = subprocess.run(
            [str(self.entrypoint)],
            input=json.dumps(netconf),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return done.returncode, json.loads(done.stdout) if done.stdout.strip() else None


class Agent:
    """`python -m cni.agent` in the node namespace, logging to RESULTS_DIR/agent.log."""

    def __init__(self, results: Path) -> None:
        self.log = results / "agent.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                # --allow-fwmark: the scenario checks that a Secret's fwmark reaches the kernel's link.
                [
                    sys.executable,
                    "-m",
                    "cni.agent",
                    "--allow-fwmark",
                    "--state-dir",
                    str(STATE_DIR),
                    "--socket",
                    str(SOCKET),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while not self.answers():
            expect(self.process.poll() is None, f"the agent exited with {self.process.returncode}")
            expect(time.monotonic() < deadline, "the agent did not answer within 120 s")
            time.sleep(0.2)

    def answers(self) -> bool:
        return self.call("status").get("ok", False) if SOCKET.exists() else False

    def call(self, op: str, **payload: Any) -> dict[str, Any]:
        try:
            return agent_client.call(op, payload, socket_path=SOCKET, timeout=60)
        except agent_client.AgentError:
            return {}

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)


# --- the scenario ---------------------------------------------------------------------------------


def setup_peer(pods: list[Pod]) -> Keys:
    """A `peer` namespace behind a veth with a kernel WireGuard link that allows every pod's address."""
    peer = Keys()
    sh("ip", "netns", "add", "peer")
    sh("ip", "link", "add", "veth-node", "type", "veth", "peer", "name", "veth-peer", "netns", "peer")
    sh("ip", "addr", "add", f"{NODE_IP}/24", "dev", "veth-node")
    sh("ip", "link", "set", "veth-node", "up")
    sh("ip", "addr", "add", f"{PEER_IP}/24", "dev", "veth-peer", netns="peer")
    sh("ip", "link", "set", "veth-peer", "up", netns="peer")
    sh("ip", "link", "add", "wg0", "type", "wireguard", netns="peer")
    key_file = key_file_for("peer", peer.private)
    sh("wg", "set", "wg0", "listen-port", str(PEER_PORT), "private-key", key_file, netns="peer")
    for pod in pods:
        allowed = pod.address.split("/")[0] + "/32"
        psk = ["preshared-key", key_file_for(pod.name, pod.psk)] if pod.psk else []
        public = encode_key(pod.keys.public)
        sh("wg", "set", "wg0", "peer", public, "allowed-ips", allowed, *psk, netns="peer")
    sh("ip", "addr", "add", f"{PEER_TUNNEL_IP}/24", "dev", "wg0", netns="peer")
    sh("ip", "link", "set", "wg0", "up", netns="peer")
    return peer


def key_file_for(name: str, key: bytes) -> str:
    """A 0600 file with `key` for `wg set` (keys never go in argv)."""
    path = Path(f"/run/{name}.key")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, encode_key(key).encode() + b"\n")
    os.close(fd)
    return str(path)


def expect_configured(pod: Pod, peer: Keys, fwmark: str, port: int) -> None:
    """`wg show net1 dump` in the Pod: key, port, fwmark; the peer's preshared key, endpoint, allowed
    IPs and keepalive. (Its first line holds the private key: never put it in a message.)"""
    dump = sh("wg", "show", "net1", "dump", netns=pod.name).stdout
    interface, peer_line = (line.split("\t") for line in dump.splitlines())
    expect(interface[1:] == [encode_key(pod.keys.public), str(port), fwmark], f"net1 has {interface[1:]}")
    expect(pod.psk is not None and peer_line[1] == encode_key(pod.psk), "the preshared key differs")
    shown = peer_line[:1] + peer_line[2:4] + peer_line[7:]
    wanted = [encode_key(peer.public), f"{PEER_IP}:{PEER_PORT}", ALLOWED, "25"]
    expect(shown == wanted, f"the peer of net1 is {shown}, not {wanted}")


def half_made(peer: Keys, moved: bool) -> tuple[Pod, str]:
    """What an agent killed in the middle of a kernel add leaves: an incomplete state file and the
    link under its temporary name on the node, or already moved into the Pod and renamed."""
    pod = Pod(f"pod-half-{int(moved)}", f"10.13.13.{20 + moved}/32")
    temporary = kernel.temporary_name()
    sh("ip", "link", "add", temporary, "type", "wireguard")
    if moved:
        sh("ip", "link", "set", temporary, "netns", pod.name, "name", "net1")
    text = json.dumps(pod.config(peer))
    ids = (pod.container_id, "net1", pod.netns, netns_identity(pod.netns), f"default/{pod.name}")
    half = Attachment(*ids, parse_config(text), [None], text=text, mode="kernel", link=temporary)
    StateStore(STATE_DIR).save(half)
    return pod, temporary


def ping(pod: Pod) -> None:
    for _ in range(5):
        if sh("ping", "-c", "1", "-W", "3", PEER_TUNNEL_IP, netns=pod.name, check=False).returncode == 0:
            return
    handshake = sh("wg", "show", "net1", netns=pod.name, check=False).stdout
    raise StepFailed(f"no answer from {PEER_TUNNEL_IP} through net1 of {pod.name}; wg show: {handshake}")


def has_net1(pod: Pod) -> bool:
    return sh("ip", "link", "show", "net1", netns=pod.name, check=False).returncode == 0


def link_details(pod: Pod) -> str:
    return sh("ip", "-d", "link", "show", "net1", netns=pod.name, check=False).stdout


def node_leftovers() -> list[str]:
    """Links the agent makes on the node (temporary or probe), and state files."""
    links = sh("ip", "-o", "link", "show").stdout
    found = [
        line.split(":")[1].strip() for line in links.splitlines() if ": wgcni" in line or ": wgprobe" in line
    ]
    found += [p.name for p in STATE_DIR.glob("cni*.json")]
    return found


def expect_ok(outcome: tuple[int, Any], what: str) -> Any:
    status, output = outcome
    expect(status == 0, f"{what}: exit {status}, {output}")
    return output


def expect_error(outcome: tuple[int, Any], what: str, *fragments: str) -> dict[str, Any]:
    status, output = outcome
    expect(status == 1 and isinstance(output, dict) and "msg" in output, f"{what}: exit {status}, {output}")
    for fragment in fragments:
        expect(fragment in output["msg"], f"{what}: {fragment!r} not in {output['msg']!r}")
    return output


def run(results: Path, entrypoint: Path) -> None:
    report, agent, cni = Report(results), Agent(results), Cni(entrypoint)
    try:
        scenario(report, agent, cni)
    finally:
        agent.stop()


def scenario(report: Report, agent: Agent, cni: Cni) -> None:
    with report.step("setup"):
        pod_a, pod_b = Pod("pod-a", "10.13.13.2/32", psk=True), Pod("pod-b", "10.13.13.3/32")
        peer = setup_peer([pod_a, pod_b])
        agent.start()
    attachments = lifecycle_of_a_kernel_attachment(report, agent, cni, pod_a, peer)
    with report.step("failed ADD leaves nothing"):
        failed_add_leaves_nothing(cni, pod_b, peer)
    auto_gc_and_gone_namespace(report, agent, cni, pod_b, peer)
    with report.step("nothing left"):
        expect(node_leftovers() == [], f"left on the node: {node_leftovers()}")
        expect(agent.call("list").get("attachments") == [], f"the agent still lists {attachments}")


def lifecycle_of_a_kernel_attachment(report: Report, agent: Agent, cni: Cni, pod: Pod, peer: Keys) -> Any:
    wireguard = pod.config(peer, fwmark="0x1234")
    with report.step("kernel ADD"):
        result = expect_ok(cni("ADD", pod, "kernel", wireguard), "ADD")
        wanted = expected_result(pod.netns, pod.address, [ALLOWED])
        expect(result == wanted, f"result {result}, expected {wanted}")
    with report.step("net1 is a kernel WireGuard link as configured, its socket on the node"):
        expect(" wireguard " in link_details(pod), f"net1 is not a WireGuard link: {link_details(pod)}")
        port = int(sh("wg", "show", "net1", "listen-port", netns=pod.name).stdout)
        expect(52000 <= port <= 52999, f"port {port} is not in the agent's default range 52000-52999")
        expect_configured(pod, peer, "0x1234", port)
        listed = agent.call("list")["attachments"]
        expect([(a["mode"], a["listen_port"]) for a in listed] == [("kernel", port)], f"agent lists {listed}")
        expect(f":{port} " in sh("ss", "-Hunl").stdout, f"no UDP socket on port {port} in the node namespace")
    with report.step("ping through net1"):
        ping(pod)
    with report.step("a live config update keeps the peer's session"):
        live_update(pod, peer, wireguard, port)
    with report.step("CHECK"):
        expect_ok(cni("CHECK", pod, "kernel", wireguard, prevResult=result), "CHECK")
    with report.step("a second Pod with the same key is refused"):
        twin = Pod("pod-twin", "10.13.13.9/32")
        expect_error(cni("ADD", twin, "kernel", wireguard), "ADD", "already in use by pod default/pod-a")
        expect(
            sh("ip", "link", "show", "net1", netns=twin.name, check=False).returncode != 0, "twin has net1"
        )
        sh("ip", "netns", "del", twin.name)
    with report.step("agent restart keeps the link and removes half-made ones"):
        agent.stop()
        expect(" wireguard " in link_details(pod), "net1 went with the agent")
        halves = [half_made(peer, moved=False), half_made(peer, moved=True)]
        agent.start()
        expect_ok(cni("CHECK", pod, "kernel", wireguard, prevResult=result), "CHECK after the restart")
        status = agent.call("status")  # after CHECK, which waited for the agent to restore its state
        expect((status.get("kernel_links"), status.get("tunnels")) == (1, 0), f"agent status {status}")
        ping(pod)
        for half, temporary in halves:
            expect(not has_net1(half), f"the half-made net1 in {half.name} is still there")
            expect(sh("ip", "link", "show", temporary, check=False).returncode != 0, f"{temporary} is left")
            sh("ip", "netns", "del", half.name)
        states = [p.name for p in STATE_DIR.glob("cni*.json")]
        expect(states == [f"{attachment_name(pod.container_id, 'net1')}.json"], f"state files {states}")
    with report.step("CHECK fails after a peer is removed"):
        sh("wg", "set", "net1", "peer", encode_key(peer.public), "remove", netns=pod.name)
        expect_error(
            cni("CHECK", pod, "kernel", wireguard, prevResult=result), "CHECK", "is missing from net1"
        )
    with report.step("DEL"):
        expect_ok(cni("DEL", pod, "kernel", wireguard, prevResult=result), "DEL")
        expect(
            sh("ip", "link", "show", "net1", netns=pod.name, check=False).returncode != 0,
            "net1 is still there",
        )
        expect(node_leftovers() == [], f"left on the node: {node_leftovers()}")
    with report.step("DEL again"):
        expect_ok(cni("DEL", pod, "kernel", wireguard, prevResult=result), "second DEL")
    return agent.call("list").get("attachments")


def live_update(pod: Pod, peer: Keys, wireguard: dict[str, Any], port: int) -> None:
    """What the agent does with a changed Secret in kernel mode (cni/kernel.py `update`, then the
    addresses and routes as in userspace): a peer added and taken away again; the existing peer keeps
    its session (the same latest handshake), and the kernel's counters are read for metrics."""
    before = _peer_lines(pod)[encode_key(peer.public)]
    newcomer = encode_key(Keys().public)
    grown = {
        **wireguard,
        "peers": [*wireguard["peers"], {"publicKey": newcomer, "allowedIPs": ["10.14.0.0/24"]}],
    }
    for doc, peers in ((grown, 2), (wireguard, 1)):
        cfg = parse_config(json.dumps(doc))
        kernel.update(pod.netns, "net1", replace(cfg, listen_port=port), resolve_endpoints(cfg))
        lines = _peer_lines(pod)
        expect(len(lines) == peers, f"net1 has {len(lines)} peers after the update, not {peers}")
        expect(lines[encode_key(peer.public)][4] == before[4], "the unchanged peer's session was renewed")
        expect(
            lines[encode_key(peer.public)][1:4] == before[1:4],
            "the unchanged peer's psk, endpoint or IPs changed",
        )
        ping(pod)
    expect(
        sh("wg", "show", "net1", "listen-port", netns=pod.name).stdout.strip() == str(port), "the port moved"
    )
    expect(
        sh("wg", "show", "net1", "fwmark", netns=pod.name).stdout.strip() == "0x1234", "the fwmark changed"
    )
    (stats,) = kernel.peer_stats(pod.netns, "net1")
    expect(stats.public_key == peer.public and stats.rx_bytes > 0 and stats.tx_bytes > 0, f"counters {stats}")
    expect(
        int(stats.last_handshake) == int(before[4]), f"last handshake {stats.last_handshake} vs {before[4]}"
    )


def _peer_lines(pod: Pod) -> dict[str, list[str]]:
    """`wg show net1 dump`'s peer lines by public key (the first line, with the private key, dropped)."""
    dump = sh("wg", "show", "net1", "dump", netns=pod.name).stdout.splitlines()[1:]
    return {line.split("\t")[0]: line.split("\t") for line in dump}


def failed_add_leaves_nothing(cni: Cni, pod: Pod, peer: Keys) -> None:
    """A listenPort of the range that another process holds on the node is refused before anything is
    made; an IPv6 address in a Pod without IPv6 fails after the link was made, configured and moved."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("0.0.0.0", TAKEN_PORT))
        outcome = cni("ADD", pod, "kernel", pod.config(peer, listenPort=TAKEN_PORT))
        expect_error(outcome, "ADD on a taken port", f"listenPort {TAKEN_PORT} is already in use")
    outcome = cni("ADD", pod, "kernel", pod.config(peer, listenPort=51820))
    expect_error(outcome, "ADD on a port outside the range", "listenPort: 51820 is outside", "52000-52999")
    sh("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", netns=pod.name)
    try:
        outcome = cni("ADD", pod, "kernel", pod.config(peer, address=[pod.address, "fd00:9::2/128"]))
        expect_error(outcome, "ADD of an IPv6 address without IPv6", "fd00:9::2/128", "disable")
    finally:
        sh("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=0", netns=pod.name)
    expect(not has_net1(pod), "net1 was left")
    expect(node_leftovers() == [], f"left on the node: {node_leftovers()}")
    expect_ok(cni("DEL", pod, "kernel", pod.config(peer)), "DEL after the failed ADD")


def auto_gc_and_gone_namespace(report: Report, agent: Agent, cni: Cni, pod: Pod, peer: Keys) -> None:
    wireguard = pod.config(peer, listenPort=CHOSEN_PORT)
    with report.step("auto ADD chooses kernel"):
        result = expect_ok(cni("ADD", pod, "auto", wireguard), "ADD")
        port = sh("wg", "show", "net1", "listen-port", netns=pod.name).stdout.strip()
        expect(port == str(CHOSEN_PORT), f"net1 listens on {port}, not the config's {CHOSEN_PORT}")
        wanted = expected_result(pod.netns, pod.address, [ALLOWED])
        expect(result == wanted, f"result {result}, expected {wanted}")
        expect(" wireguard " in link_details(pod), f"auto did not choose kernel: {link_details(pod)}")
        ping(pod)
    with report.step("GC removes it"):
        outcome = cni("GC", pod, "auto", wireguard, **{"cni.dev/valid-attachments": []})
        expect_ok(outcome, "GC")
        expect(
            sh("ip", "link", "show", "net1", netns=pod.name, check=False).returncode != 0, "net1 survived GC"
        )
        expect(agent.call("list").get("attachments") == [], "the agent still lists it")
    with report.step("DEL after the namespace is gone"):
        expect_ok(cni("ADD", pod, "auto", wireguard), "ADD")
        sh("ip", "netns", "del", pod.name)
        expect_ok(cni("DEL", pod, "auto", wireguard), "DEL")
        expect(node_leftovers() == [], f"left on the node: {node_leftovers()}")


def main(argv: list[str]) -> int:
    results, entrypoint = Path(argv[0]), Path(argv[1])
    try:
        run(results, entrypoint)
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
