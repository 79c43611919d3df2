"""Helpers for running the installed `pywg-cni` executable the way a container runtime does.

`invoke` runs the console script as a subprocess of the test (so in the root network namespace, as
Multus and podman run plugins) with the CNI_* environment and the network configuration on stdin,
and returns its exit status, stdout and stderr. `NodeAgent` runs `python -m cni.agent --supervise`
inside a `Host` playing the node: the agent's UDP sockets live there, so WireGuard peers are hosts
linked to that node, and nothing of the tests touches the root namespace's links or addresses.
`Peer` is wireguard-go in its own host linked to the node. `leftovers` lists what an attachment
still has on the machine (its link, the agent's state file and record, its UAPI socket).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_interface, ip_network
from pathlib import Path
from typing import Any, Self

from cni import agent_client
from cni.agent import attachment_name
from pywg.config import InterfaceConfig, PeerConfig
from pywg.runtime.uapi_server import socket_path
from tests.support.topology import (
    NETNS_DIR,
    OWNER,
    OWNER_ENV,
    Host,
    KeyPair,
    Topology,
    WireguardGo,
    link,
    stop_process,
    wait_until,
)

PLUGIN = Path(sysconfig.get_path("scripts")) / "pywg-cni"
CNI_PATH = f"{PLUGIN.parent}:/usr/lib/cni:/opt/cni/bin"
NODE_UNDERLAY, PEER_UNDERLAY = "198.18.0.1", "198.18.0.2"
PEER_PORT = 51820
PEER_TUNNEL = ["10.1.2.1/24", "fd00:1:2::1/64"]
ANNOTATION = "wgcni.schu.io/configsecret"


def netns_path(host: Host) -> str:
    return str(NETNS_DIR / host.name)


# --- running the plugin ---------------------------------------------------------------------------


@dataclass
class CniCall:
    """One plugin run: exit status, stdout, stderr; `output` is stdout parsed (None when empty)."""

    status: int
    stdout: str
    stderr: str

    @property
    def output(self) -> Any:
        return json.loads(self.stdout) if self.stdout.strip() else None

    def ok(self) -> Any:
        """The output of a successful run; AssertionError showing everything otherwise."""
        assert self.status == 0, f"exit {self.status}\nstdout: {self.stdout}\nstderr: {self.stderr}"
        assert "Traceback" not in self.stderr, self.stderr
        return self.output

    def error(self, version: str) -> dict[str, Any]:
        """The CNI error object of a failed run, checked for shape: exit 1, one JSON line, no traceback."""
        assert self.status == 1, f"exit {self.status}\nstdout: {self.stdout}\nstderr: {self.stderr}"
        assert "Traceback" not in self.stderr and "Traceback" not in self.stdout, self.stderr
        assert self.stdout.endswith("\n") and self.stdout.count("\n") == 1, self.stdout
        error = json.loads(self.stdout)
        assert set(error) <= {"cniVersion", "code", "msg", "details"}, error
        assert error["cniVersion"] == version and isinstance(error["code"], int), error
        assert isinstance(error["msg"], str) and error["msg"], error
        return error


def cni_args(namespace: str, pod: str, infra_id: str, uid: str) -> str:
    """CNI_ARGS as kubelet's runtime and Multus pass them to a delegate."""
    return (
        f"IgnoreUnknown=true;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod};"
        f"K8S_POD_INFRA_CONTAINER_ID={infra_id};K8S_POD_UID={uid}"
    )


def invoke(
    command: str,
    config: Mapping[str, Any],
    *,
    container_id: str = "",
    netns: str = "",
    ifname: str = "net1",
    args: str = "",
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
) -> CniCall:
    """Run PLUGIN with CNI_COMMAND=`command` and `config` as JSON on stdin; empty variables are unset.

    `env` adds to the environment: what the node's operator gives the runtime (NodeAgent.plugin_env).
    """
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CNI_")}, **(env or {})}
    env[OWNER_ENV] = OWNER  # an agent the plugin might start would be the test session's to sweep
    cni = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_ARGS": args,
        "CNI_PATH": CNI_PATH,
    }
    env.update({k: v for k, v in cni.items() if v})
    done = subprocess.run(
        [str(PLUGIN)],
        input=json.dumps(config).encode(),
        capture_output=True,
        env=env,
        timeout=timeout,
        cwd="/",
        check=False,
    )
    return CniCall(done.returncode, done.stdout.decode(), done.stderr.decode(errors="replace"))


# --- the node agent -------------------------------------------------------------------------------


class NodeAgent:
    """`python -m cni.agent --supervise` inside `node`, with a state dir and socket of its own.

    `stop` (also run when the node closes) deletes every attachment the agent still has, ends the
    supervisor and removes UAPI sockets of attachments nobody serves any more.
    """

    def __init__(
        self, node: Host, socket: Path | None = None, args: Sequence[str] = (), supervise: bool = True
    ) -> None:
        self.node = node
        self.supervise = supervise  # False: the agent alone, as the DaemonSet runs it
        self.state_dir = node.tmpdir / "state"
        self.socket = socket or node.tmpdir / "run" / "agent.sock"
        self.log_path = node.tmpdir / "agent.log"
        self.args = list(args)  # policy options (cni/policy.py)
        self.process: subprocess.Popen[bytes] | None = None
        self.names: set[str] = set()
        node.on_close(self.stop)

    def plugin_env(self, config_dirs: Iterable[Path] = ()) -> dict[str, str]:
        """What the operator tells a runtime's plugin: this agent's socket, where config files may be."""
        env = {"PYWG_CNI_AGENT_SOCKET": str(self.socket)}
        dirs = ":".join(str(d) for d in config_dirs)
        return env | ({"PYWG_CNI_CONFIG_DIRS": dirs} if dirs else {})

    def start(self) -> NodeAgent:
        command = [sys.executable, "-m", "cni.agent", *self.args]
        command += ["--supervise"] if self.supervise else []
        command += ["--state-dir", str(self.state_dir), "--socket", str(self.socket)]
        with open(self.log_path, "ab") as log:
            self.process = self.node.popen(command, stdout=log, stderr=subprocess.STDOUT)
        return self.wait_until_serving()

    def wait_until_serving(self) -> Self:
        """Until the started agent answers on its socket (AssertionError with its log if it exits)."""
        process = self.process
        assert process is not None

        def answers() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the agent exited with {process.returncode}:\n{self.log()}")
            return agent_client.agent_running(self.socket)

        wait_until(answers, 20.0, "the node agent's socket")
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def call(self, op: str, **payload: Any) -> dict[str, Any]:
        reply = agent_client.call(op, payload, socket_path=self.socket, timeout=60.0)
        if op == "add" and reply.get("ok"):
            self.names.add(reply["name"])
        return reply

    def worker_pid(self) -> int:
        return int(self.call("status")["pid"])

    def attachments(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.call("list")["attachments"]
        self.names.update(a["name"] for a in found)
        return found

    def state_files(self) -> list[str]:
        return sorted(p.name for p in self.state_dir.glob("*.json"))

    def terminate(self) -> None:
        """SIGTERM the supervisor (the agent keeps links and state for its next start)."""
        if self.process is not None:
            stop_process(self.process, 15.0)
            self.process = None

    def delete_all(self) -> list[str]:
        """DEL every attachment the agent has; their names."""
        found = self.attachments()
        for att in found:
            self.call("del", container_id=att["container_id"], ifname=att["ifname"])
        return [att["name"] for att in found]

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(agent_client.AgentError):
                self.delete_all()
        self.terminate()
        for name in self.names:
            path = socket_path(name)
            if path.exists() and not agent_client.agent_running(path):
                path.unlink(missing_ok=True)


def leftovers(agent: NodeAgent, container_id: str, ifname: str = "net1", netns: str = "") -> list[str]:
    """What attachment (container_id, ifname) still has: [] when it is completely gone."""
    name = attachment_name(container_id, ifname)
    found = []
    if netns and Path(netns).exists():
        shown = subprocess.run(
            ["ip", "-n", Path(netns).name, "link", "show", "dev", ifname], capture_output=True, check=False
        )
        if shown.returncode == 0:
            found.append(f"link {ifname} in {netns}")
    if f"{name}.json" in agent.state_files():
        found.append(f"state file {name}.json")
    if any(a["container_id"] == container_id and a["ifname"] == ifname for a in agent.attachments()):
        found.append(f"agent attachment {name}")
    if socket_path(name).exists():
        found.append(f"UAPI socket {socket_path(name)}")
    return found


# --- the WireGuard peer ---------------------------------------------------------------------------


@dataclass
class PodKeys:
    """A pod's WireGuard identity and the addresses the peer allows it."""

    keys: KeyPair
    addresses: list[str]


@dataclass
class Peer:
    """wireguard-go in `host` at PEER_UNDERLAY:PEER_PORT with tunnel addresses PEER_TUNNEL."""

    host: Host
    keys: KeyPair = field(default_factory=KeyPair.generate)
    wg: WireguardGo | None = None

    @property
    def endpoint(self) -> str:
        return f"{PEER_UNDERLAY}:{PEER_PORT}"

    def serve(self, pods: Iterable[PodKeys]) -> None:
        """(Re)configure wireguard-go with one WireGuard peer per pod, allowed the pod's addresses."""
        cfg = InterfaceConfig(
            private_key=self.keys.private,
            addresses=[ip_interface(a) for a in PEER_TUNNEL],
            listen_port=PEER_PORT,
            peers=[
                PeerConfig(
                    public_key=pod.keys.public,
                    allowed_ips=[ip_network(ip_interface(a).ip) for a in pod.addresses],
                )
                for pod in pods
            ],
        )
        if self.wg is None:
            self.wg = WireguardGo(self.host, cfg).start()
        else:
            self.wg.configure(cfg)


def node_with_peer(topology: Topology) -> tuple[Host, Peer]:
    """A `node` host and a `peer` host joined by a veth (198.18.0.1/24 - 198.18.0.2/24)."""
    node, peer = topology.host("node"), topology.host("peer")
    link(node, peer, [f"{NODE_UNDERLAY}/24"], [f"{PEER_UNDERLAY}/24"])
    return node, Peer(peer)


def config_json(
    pod: PodKeys,
    peer: Peer,
    allowed: list[str],
    keepalive: str = "25s",
    **overrides: Any,
) -> dict[str, Any]:
    """A Secret's config.json (the wireguard-cni guide's format; a list of addresses when several)."""
    doc: dict[str, Any] = {
        "address": pod.addresses[0] if len(pod.addresses) == 1 else pod.addresses,
        "privateKey": pod.keys.private_b64,
        "peers": [
            {
                "endpoint": peer.endpoint,
                "publicKey": peer.keys.public_b64,
                "allowedIPs": allowed,
                "persistentKeepalive": keepalive,
            }
        ],
    }
    doc.update(overrides)
    return doc


# --- a DNS server that never answers ----------------------------------------------------------------

_SILENT_DNS = r"""
import socket, sys, time
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], 53))
print("ready", flush=True)
time.sleep(float(sys.argv[2]))
"""


def silent_resolver(node: Host, nameserver: str) -> None:
    """`ip netns exec` gives the node's processes /etc/netns/<node>/resolv.conf: `nameserver` (where
    start_silent_dns answers nothing), with glibc's longest timeout. Call it before they start."""
    directory = Path("/etc/netns") / node.name
    directory.mkdir(parents=True)
    node.on_close(lambda: _remove_netns_etc(directory))
    (directory / "resolv.conf").write_text(f"nameserver {nameserver}\noptions timeout:30 attempts:1\n")


def _remove_netns_etc(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    with contextlib.suppress(OSError):
        directory.parent.rmdir()  # /etc/netns, unless another namespace has files there


def start_silent_dns(host: Host, address: str, seconds: float = 120.0) -> subprocess.Popen[bytes]:
    """A process in `host` that takes DNS queries on `address`:53 and never answers; running once
    this returns (the host stops it when it closes)."""
    process = host.popen([sys.executable, "-c", _SILENT_DNS, address, str(seconds)], stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n", "the silent DNS server"
    return process
