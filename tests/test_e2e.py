"""The node path end to end: the agent from the shipped image, containerd, Multus, a real API server.

What a cluster does, minus the kubelet and the controllers: an operator applies deploy/ to a real
kube-apiserver 1.20 (tests/support/k8s_cluster.py); the image is built from deploy/Containerfile
(tests/support/e2e_image.py) and imported into a private containerd (tests/support/cri_node.py); the
DaemonSet's Pod,
as the API server returns it, is run through the CRI as a kubelet would: its init container installs
the image's CNI entrypoint into containerd's CNI bin_dir, then the agent runs with the Pod's in-cluster
credentials (a TokenRequest token for kube-system/pywg-cni). Its hostPath volumes are the node's paths
moved into the test's directory, except /run/netns and /dev/net/tun, which are the machine's.

Then a Pod: its object is deploy/examples/pod.yaml (both annotations), its Secret
deploy/examples/secret.yaml with the placeholders filled in (the peer's endpoint is wireguard-go on the
host's network, tests/support/host_network.py), its network one of the example NADs. `crictl runp` with the
Pod's name, namespace and UID runs containerd -> Multus -> the installed entrypoint -> the agent, which
reads the Pod and the Secret with its ServiceAccount: net1 in the sandbox with the Secret's address,
a ping through it, Multus's network-status annotation naming net1 with that address (and no MAC);
`crictl stopp` and `rmp` leave nothing. A CNI failure is asserted as the runtime reports it.

Measured on the way, for docs/kubernetes.md: how long building took, the image's size, the agent's RSS.
Needs shared/k8s, containerd, runc, ctr, podman and mmdebstrap: skips naming what is missing, fails in
CI (CI=true). `make e2e` runs this module alone.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from cni import agent_client
from tests.support.cni_run import PodKeys
from tests.support.cri_node import (
    CRICTL,
    MULTUS,
    NETNS_DIR,
    CriError,
    DaemonSetPod,
    Node,
    run_daemonset_pod,
    sweep_dead_runs,
)
from tests.support.e2e_image import BuiltImage, build_image
from tests.support.host_network import LoopbackPeer
from tests.support.k8s_cluster import (
    CHECKOUT,
    RealKubernetes,
    require_shared,
    start_real_kubernetes,
    unavailable,
)
from tests.support.topology import KeyPair, Topology, run, wait_until

pytest_plugins = ["tests.support.topology"]
# The first run on a machine makes the Debian base and builds every layer of the image.
pytestmark = pytest.mark.timeout(900)

DEPLOY = CHECKOUT / "deploy"
EXAMPLES = DEPLOY / "examples"
NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"
PEER_TUNNEL = ["10.13.13.1/24"]  # the examples' allowedIPs are 10.13.13.0/24
PEER_ADDRESS = "10.13.13.1"
TOOLS = ("containerd", "containerd-shim-runc-v2", "ctr", "runc", "podman", "mmdebstrap", "xz")


def reporter(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """A line on the terminal now, past pytest's capture: what the run measured."""
    plugins = request.config.pluginmanager
    terminal, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")

    def say(text: str) -> None:
        if terminal is not None and capture is not None:
            with capture.global_and_fixture_disabled():
                terminal.write_line(f"e2e: {text}")

    return say


def _example(name: str) -> dict[str, Any]:
    [doc] = [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]
    return dict(doc)


@dataclass
class E2E:
    real: RealKubernetes
    node: Node
    agent: DaemonSetPod
    peer: LoopbackPeer
    state_dir: Path  # the agent's /run/pywg-cni on the node
    uapi_dir: Path  # its /var/run/wireguard
    rss: dict[str, int] = field(default_factory=dict)  # KiB, by what the agent had

    @property
    def socket(self) -> Path:
        return self.state_dir / "agent.sock"

    def agent_rss(self) -> int:
        """The agent's resident memory in KiB (the container's main process)."""
        pid = self.node.container_state(self.agent.containers["agent"])["info"]["pid"]
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError(f"no VmRSS for the agent (pid {pid})")

    def attachments(self) -> list[dict[str, Any]]:
        reply = agent_client.call("list", {}, socket_path=self.socket, timeout=30.0)
        return list(reply["attachments"])

    def diagnostics(self) -> str:
        """The ends of the agent's, Multus's and containerd's logs, for a failure's message."""
        agent = self.node.log(f"{self.agent.name}/agent.log", 30)
        return (
            f"\n--- agent ---\n{agent}\n--- multus ---\n{self.node.log('multus.log', 20)}"
            f"\n--- containerd ---\n{self.node.log('containerd.log', 20)}"
        )


@pytest.fixture(scope="module")
def e2e(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    require_shared(f"{MULTUS}.xz", f"{CRICTL}.xz", "pause-image.oci.tar")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        unavailable(f"{', '.join(missing)} not installed (scripts/install-deps.sh test installs them)")
    say = reporter(request)
    for swept in sweep_dead_runs():
        say(f"removed what a dead run left in {swept}")
    workdir = tmp_path_factory.mktemp("e2e")
    started = time.monotonic()
    topology = Topology()
    # The image builds (minutes on a fresh machine) while the API server and the node start.
    with ThreadPoolExecutor(1) as pool:
        building = pool.submit(build_image, workdir)
        try:
            with start_real_kubernetes(workdir / "k8s") as real:
                real.kubectl("apply", "-f", str(DEPLOY))  # as an operator installs it
                daemonset = real.call("GET", "/apis/apps/v1/namespaces/kube-system/daemonsets/pywg-cni")
                account = real.service_account_files(workdir / "serviceaccount", "kube-system", "pywg-cni")
                # The first `ip netns add` makes /run/netns a shared mount: the agent's HostToContainer
                # mount of it needs that.
                peer = LoopbackPeer(topology.host("peer"), PEER_TUNNEL)
                node = Node(real)
                host = node.workdir / "host"
                host_paths = {
                    "/opt/cni/bin": node.bin_dir,
                    "/run/pywg-cni": host / "run" / "pywg-cni",
                    "/var/run/wireguard": host / "var" / "run" / "wireguard",
                    "/run/netns": Path("/run/netns"),  # where containerd makes Pods' network namespaces
                    "/dev/net/tun": Path("/dev/net/tun"),
                }
                try:
                    node.start(topology.host("lan"), host_paths["/run/pywg-cni"] / "agent.sock")
                    image = building.result()
                    _report_build(say, image)
                    imported = time.monotonic()
                    node.ctr("images", "import", str(image.archive))
                    say(f"image imported into containerd in {time.monotonic() - imported:.0f} s")
                    agent = run_daemonset_pod(node, daemonset, host_paths, account)
                    installed = sorted(p.name for p in node.bin_dir.iterdir())
                    assert {"pywg-cni", "wg-cni"} <= set(installed), installed
                    assert (node.bin_dir / "wg-cni").readlink() == Path("pywg-cni")
                    state, uapi = host_paths["/run/pywg-cni"], host_paths["/var/run/wireguard"]
                    lab = E2E(real, node, agent, peer, state, uapi)
                    wait_until(lambda: agent_client.agent_running(lab.socket), 30.0, "the agent's socket")
                    _probe(lab, daemonset)
                    lab.rss["idle"] = lab.agent_rss()
                    ready = time.monotonic() - started
                    say(f"node ready {ready:.0f} s after the start, agent RSS {lab.rss['idle']} KiB")
                    yield lab
                    say(", ".join(f"agent RSS {kib} KiB {what}" for what, kib in lab.rss.items()))
                finally:
                    node.close()
        finally:
            topology.close()


def _report_build(say: Callable[[str], None], image: BuiltImage) -> None:
    steps = {"base": "Debian 12 base made (mmdebstrap, podman import)", "build": "built", "save": "saved"}
    done = ", ".join(f"{steps[step]} in {seconds:.0f} s" for step, seconds in image.timings.items())
    say(f"{image.name}: {done}; {image.size / 1e6:.0f} MB, of which the base {image.base_size / 1e6:.0f} MB")


def _probe(lab: E2E, daemonset: dict[str, Any]) -> None:
    """The DaemonSet's readiness probe, run in the agent's container as the kubelet runs it."""
    [agent] = [c for c in daemonset["spec"]["template"]["spec"]["containers"] if c["name"] == "agent"]
    command = agent["readinessProbe"]["exec"]["command"]
    done = lab.node.crictl("exec", "--sync", lab.agent.containers["agent"], *command, check=False)
    assert done.returncode == 0, (
        f"readiness probe failed ({done.returncode}): {done.stderr}{lab.diagnostics()}"
    )


def _pod_and_secret(lab: E2E, name: str, secret: str, keys: KeyPair) -> dict[str, Any]:
    """deploy/examples' Pod (renamed `name`, naming `secret`) and Secret (named `secret`, placeholders
    filled in, the peer's endpoint), created in the API; the Pod object."""
    doc = _example("secret.yaml")
    config = json.loads(doc["stringData"]["config.json"])
    config["privateKey"] = keys.private_b64
    config["peers"][0] |= {"publicKey": lab.peer.keys.public_b64, "endpoint": lab.peer.endpoint}
    doc["stringData"]["config.json"] = json.dumps(config)
    doc["metadata"]["name"] = secret
    lab.real.call("POST", "/api/v1/namespaces/default/secrets", doc)
    pod = _example("pod.yaml")
    pod["metadata"]["name"] = name
    pod["metadata"]["annotations"]["wgcni.schu.io/configsecret"] = secret
    return lab.real.call("POST", "/api/v1/namespaces/default/pods", pod)


def _delete(lab: E2E, *paths: str) -> None:
    for path in paths:
        lab.real.call("DELETE", path)


def _sandbox_config(lab: E2E, pod: dict[str, Any]) -> dict[str, Any]:
    """The sandbox a kubelet asks for: the Pod's name, namespace and UID (Multus checks the UID)."""
    metadata = pod["metadata"]
    return {
        "metadata": {
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata["uid"],
            "attempt": 0,
        },
        "log_directory": str(lab.node.logs / metadata["name"]),
        "linux": {"cgroup_parent": lab.node.cgroup_parent},
    }


def _ping(netns: str, address: str, timeout: int = 10) -> bool:
    command = ["ip", "netns", "exec", Path(netns).name, "ping", "-n", "-q", "-c", "1", "-i", "0.2", "-W", "1"]
    return run([*command, "-w", str(timeout), address], check=False, timeout=timeout + 5).returncode == 0


def _assert_nothing_left(lab: E2E, sandbox: str, netns: str) -> None:
    left = lab.node.leftovers(sandbox, netns)
    assert left == [], f"{left}{lab.diagnostics()}"
    assert lab.attachments() == []
    assert sorted(p.name for p in lab.state_dir.iterdir()) == ["agent.lock", "agent.sock"]
    assert list(lab.uapi_dir.iterdir()) == []


@pytest.mark.parametrize("example", ["wgnet-nad.yaml", "wgnet-nad-wg-cni.yaml"])
def test_a_pod_gets_net1_through_multus_and_pings_through_it(e2e: E2E, example: str) -> None:
    lab = e2e
    lab.real.kubectl("apply", "-f", str(EXAMPLES / example))
    keys = KeyPair.generate()
    name = f"wireguard-pod-{example.removesuffix('.yaml')}"
    pod = _pod_and_secret(lab, name, f"config-{name}", keys)
    lab.peer.serve([PodKeys(keys, ["10.13.13.210/32"])])
    sandbox, netns = "", ""
    try:
        try:
            sandbox = lab.node.run_pod(_sandbox_config(lab, pod))
        except CriError as error:
            raise AssertionError(f"{error}{lab.diagnostics()}") from None
        netns = lab.node.netns(sandbox)
        shown = run(["ip", "-n", Path(netns).name, "addr", "show", "dev", "net1"]).stdout
        assert "inet 10.13.13.210/32" in shown, shown
        assert _ping(netns, PEER_ADDRESS), f"no answer through net1{lab.diagnostics()}"

        current = lab.real.call("GET", f"/api/v1/namespaces/default/pods/{name}")
        statuses = json.loads(current["metadata"]["annotations"][NETWORK_STATUS])
        [net1] = [s for s in statuses if s.get("interface") == "net1"]
        assert net1["name"] == "default/wgnet" and net1["ips"] == ["10.13.13.210"], statuses
        assert "mac" not in net1, net1  # a TUN has none; it said 00:00:00:00:00:00
        [attachment] = lab.attachments()
        assert attachment["pod"] == f"default/{name}" and attachment["netns"] == netns, attachment
        lab.rss.setdefault("with one tunnel", lab.agent_rss())
    finally:
        if sandbox:
            lab.node.remove_pod(sandbox)
        _delete(
            lab,
            f"/api/v1/namespaces/default/pods/{name}",
            f"/api/v1/namespaces/default/secrets/config-{name}",
        )
    _assert_nothing_left(lab, sandbox, netns)


def test_a_cni_error_is_what_the_runtime_reports(e2e: E2E) -> None:
    lab = e2e
    lab.real.kubectl("apply", "-f", str(EXAMPLES / "wgnet-nad.yaml"))
    pod = _example("pod.yaml")
    pod["metadata"]["name"] = "pod-without-secret"
    pod["metadata"]["annotations"]["wgcni.schu.io/configsecret"] = "no-such-secret"
    created = lab.real.call("POST", "/api/v1/namespaces/default/pods", pod)
    namespaces = set(NETNS_DIR.glob("cni-*"))
    try:
        with pytest.raises(CriError) as info:
            lab.node.run_pod(_sandbox_config(lab, created))
    finally:
        _delete(lab, "/api/v1/namespaces/default/pods/pod-without-secret")
    said = str(info.value).replace('\\"', '"')  # crictl prints containerd's error with quotes escaped
    assert 'plugin type="multus" name="multus-cni-network" failed (add)' in said, said
    assert "secret 'no-such-secret' not found in namespace default (named by the pod annotation" in said, said
    # containerd ran the DEL of a sandbox whose set-up failed, and removed it
    match = re.search(r'failed to setup network for sandbox "([0-9a-f]{64})"', said)
    assert match is not None, said
    _assert_nothing_left(lab, match.group(1), "")
    assert set(NETNS_DIR.glob("cni-*")) == namespaces
