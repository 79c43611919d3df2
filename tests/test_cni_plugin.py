"""The CNI plugin end to end, invoked as Multus invokes a delegate.

Each test runs the installed `pywg-cni` executable from the root namespace with CNI_* variables
and a NetworkAttachmentDefinition's config on stdin. The config names a kubeconfig, as a node file
of schu/wireguard-cni did, for a real kube-apiserver (tests/support/k8s_cluster.py: a fresh one for this
module, deploy/rbac.yaml applied) with a TokenRequest token of the ServiceAccount kube-system/pywg-cni;
each test has a namespace of its own there, with the Pod (its `wgcni.schu.io/configsecret`
annotation) and the Secret with `config.json`. The network config names the socket of a node agent
of the test's own. Only the slow API server is the fake one (tests/support/k8s_fake.py): a real server does
not answer slowly on demand. (The same flow with the agent's in-cluster credentials, through the
static entrypoint: tests/test_cni_real.py.)
That agent runs in a `node` namespace; its WireGuard peer is wireguard-go in a `peer` namespace
joined to the node by a veth (198.18.0.0/24). Pods are namespaces given as /run/netns/<name>.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import ip_interface, ip_network
from pathlib import Path
from typing import Any

import pytest

from cni.spec import INVALID_NETWORK_CONFIG, TRY_AGAIN_LATER
from pywg.runtime.daemon import alive
from tests.support.cni_run import (
    ANNOTATION,
    CniCall,
    NodeAgent,
    Peer,
    PodKeys,
    cni_args,
    config_json,
    invoke,
    leftovers,
    netns_path,
    node_with_peer,
)
from tests.support.k8s_cluster import CHECKOUT, RealKubernetes, start_real_kubernetes
from tests.support.k8s_fake import FakeKubernetes
from tests.support.topology import Host, KeyPair, Topology, wait_until

pytest_plugins = ["tests.support.topology", "tests.support.k8s_fake"]

PEER_V4, PEER_V6 = "10.1.2.1", "fd00:1:2::1"
AGENT_USER = "system:serviceaccount:kube-system:pywg-cni"
RECOVERY_LIMIT = 10.0
VERSIONS = ("1.1.0", "1.0.0", "0.4.0", "0.3.1")


@dataclass
class Pod:
    name: str
    namespace: str
    host: Host
    wg: PodKeys
    allowed: list[str]
    uid: str
    container_id: str = field(default_factory=lambda: secrets.token_hex(32))

    @property
    def netns(self) -> str:
        return netns_path(self.host)

    @property
    def args(self) -> str:
        return cni_args(self.namespace, self.name, self.container_id, self.uid)


@dataclass
class Lab:
    topology: Topology
    node: Host
    peer: Peer
    agent: NodeAgent
    api: RealKubernetes
    namespace: str  # this test's, in the API
    kubeconfig: Path

    def pod(
        self,
        name: str,
        addresses: list[str],
        allowed: list[str],
        *,
        secret: str | None = None,
        annotate: bool = True,
        edit: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> Pod:
        """A Pod sandbox (a namespace), its Pod object and, unless `secret` names another, its Secret
        (config.json, changed by `edit` if given)."""
        keys = PodKeys(KeyPair.generate(), addresses)
        secret_name = secret or f"wg-{name}"
        if secret is None:
            doc = config_json(keys, self.peer, allowed)
            doc = edit(doc) if edit is not None else doc
            self.api.call(
                "POST",
                f"/api/v1/namespaces/{self.namespace}/secrets",
                {"metadata": {"name": secret_name}, "stringData": {"config.json": json.dumps(doc)}},
            )
        metadata: dict[str, Any] = {"name": name}
        if annotate:
            metadata["annotations"] = {ANNOTATION: secret_name}
        created = self.api.call(
            "POST",
            f"/api/v1/namespaces/{self.namespace}/pods",
            {
                "metadata": metadata,
                "spec": {"containers": [{"name": "main", "image": "your-application-image"}]},
            },
        )
        uid = created["metadata"]["uid"]
        return Pod(name, self.namespace, self.topology.host(name), keys, allowed, uid)

    def kubeconfig_for(self, name: str, token: str, server: str = "") -> Path:
        """Another kubeconfig beside the lab's (where the operator allows them)."""
        return self.api.write_kubeconfig(self.kubeconfig.parent / name, token, server)

    def serve(self, *pods: Pod) -> None:
        self.peer.serve(pod.wg for pod in pods)

    def netconf(self, version: str = "1.1.0", **extra: Any) -> dict[str, Any]:
        """The NAD's config as Multus hands it to the plugin."""
        return {
            "cniVersion": version,
            "name": "wgnet",
            "type": "pywg-cni",
            "kubeConfigPath": str(self.kubeconfig),
            **extra,
        }

    def cni(
        self, command: str, pod: Pod, version: str = "1.1.0", netns: str | None = None, **extra: Any
    ) -> CniCall:
        return invoke(
            command,
            self.netconf(version, **extra),
            container_id=pod.container_id,
            netns=pod.netns if netns is None else netns,
            args=pod.args,
            env=self.env(),
        )

    def env(self) -> dict[str, str]:
        """The runtime's environment, as the node's operator set it: this agent, this kubeconfig."""
        return self.agent.plugin_env([self.kubeconfig.parent])

    def leftovers(self, pod: Pod) -> list[str]:
        """What the pod's net1 attachment still has on the node: [] once it is completely gone."""
        return leftovers(self.agent, pod.container_id, "net1", pod.netns)


@pytest.fixture(scope="module")
def real_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealKubernetes]:
    """A real API server with deploy/rbac.yaml and the ServiceAccount of deploy/daemonset.yaml."""
    deploy = CHECKOUT / "deploy"
    with start_real_kubernetes(tmp_path_factory.mktemp("kube-real")) as real:
        real.kubectl("apply", "-f", str(deploy / "rbac.yaml"), "-f", str(deploy / "daemonset.yaml"))
        real.wait_for_rbac(AGENT_USER, "get", "secrets", "default", allowed=True)
        yield real


@pytest.fixture
def lab(topology: Topology, real_api: RealKubernetes, tmp_path: Path) -> Iterator[Lab]:
    node, peer = node_with_peer(topology)
    agent = NodeAgent(node).start()
    token = real_api.token_for("kube-system", "pywg-cni")
    kubeconfig = real_api.write_kubeconfig(tmp_path / "kube" / "pywg-cni.kubeconfig", token)
    yield Lab(topology, node, peer, agent, real_api, real_api.namespace(), kubeconfig)


# --- checking results -----------------------------------------------------------------------------

_INTERFACE_KEYS = {"name", "mac", "sandbox"}
_INTERFACE_KEYS_1_1 = _INTERFACE_KEYS | {"mtu", "socketPath", "pciID"}
_ROUTE_KEYS = {"dst", "gw"}
_ROUTE_KEYS_1_1 = _ROUTE_KEYS | {"mtu", "advmss", "priority", "table", "scope"}


def assert_result(result: dict[str, Any], version: str, pod: Pod, index: int = 0) -> None:
    """`result` is in `version`'s format and has net1 at `index` in the pod's sandbox, with the
    pod's addresses on it (ips[].interface == index) and a route for every allowed IP."""
    assert result["cniVersion"] == version
    assert set(result) <= {"cniVersion", "interfaces", "ips", "routes", "dns"}, result
    legacy = version in ("0.3.0", "0.3.1", "0.4.0")
    interface_keys = _INTERFACE_KEYS_1_1 if version == "1.1.0" else _INTERFACE_KEYS
    route_keys = _ROUTE_KEYS_1_1 if version == "1.1.0" else _ROUTE_KEYS
    for interface in result["interfaces"]:
        assert set(interface) <= interface_keys, (version, interface)
    ours = result["interfaces"][index]
    assert ours["name"] == "net1" and ours["sandbox"] == pod.netns, ours
    assert "mac" not in ours, ours  # a TUN has no hardware address
    for ip in result["ips"]:
        expected = {"address", "interface", "gateway"} | ({"version"} if legacy else set())
        assert set(ip) <= expected and "interface" in ip, (version, ip)
        assert 0 <= ip["interface"] < len(result["interfaces"]), ip
        if legacy:
            assert ip["version"] == str(ip_interface(ip["address"]).version), ip
    addresses = [ip["address"] for ip in result["ips"] if ip["interface"] == index]
    assert addresses == pod.wg.addresses, result["ips"]
    for route in result["routes"]:
        assert set(route) <= route_keys, (version, route)
    destinations = {str(ip_network(r["dst"])) for r in result["routes"]}
    assert {str(ip_network(a)) for a in pod.allowed} <= destinations, result["routes"]


def assert_no_output(call: CniCall) -> None:
    call.ok()
    assert call.stdout == "", call.stdout


# --- the life of an attachment --------------------------------------------------------------------


def test_add_ping_check_kill_agent_check_del(lab: Lab) -> None:
    pod = lab.pod("pod-a", ["10.1.2.2/32"], [f"{PEER_V4}/32"])
    lab.serve(pod)
    result = lab.cni("ADD", pod).ok()
    assert_result(result, "1.1.0", pod)
    assert result["interfaces"] == [{"name": "net1", "mtu": 1420, "sandbox": pod.netns}]
    assert result["ips"] == [{"address": "10.1.2.2/32", "interface": 0}]
    assert result["routes"] == [{"dst": "10.1.2.1/32"}]
    assert pod.host.ping(PEER_V4, timeout=10)
    assert_no_output(lab.cni("CHECK", pod, prevResult=result))

    # kill -9 the agent's worker: its supervisor restarts it, which re-attaches net1 by itself.
    worker = lab.agent.worker_pid()
    os.kill(worker, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: not alive(worker), 5.0, "the agent worker to die")
    wait_until(lambda: pod.host.ping(PEER_V4, timeout=1), RECOVERY_LIMIT, "traffic after kill -9")
    print(f"\ntraffic resumed {time.monotonic() - killed:.2f} s after kill -9 of the agent worker")
    assert lab.agent.worker_pid() != worker
    assert_no_output(lab.cni("CHECK", pod, prevResult=result))

    assert_no_output(lab.cni("DEL", pod, prevResult=result))
    assert lab.leftovers(pod) == []
    assert_no_output(lab.cni("DEL", pod, prevResult=result))  # DEL again
    assert_no_output(lab.cni("DEL", pod, netns=""))  # without CNI_NETNS

    # DEL after the sandbox's namespace is gone
    other = lab.pod("pod-b", ["10.1.2.3/32"], [f"{PEER_V4}/32"])
    second = lab.cni("ADD", other).ok()
    assert lab.leftovers(other) != []
    other.host.close()
    assert_no_output(lab.cni("DEL", other, prevResult=second))
    assert lab.leftovers(other) == []
    assert lab.agent.attachments() == []


@pytest.mark.parametrize("version", VERSIONS)
def test_result_format_of_each_version(lab: Lab, version: str) -> None:
    pod = lab.pod(
        "pod", ["10.1.2.2/32", "fd00:1:2::2/128"], [f"{PEER_V4}/32", "10.9.0.0/16", "fd00:1:2::/64"]
    )
    result = lab.cni("ADD", pod, version).ok()
    assert_result(result, version, pod)
    assert [ip["address"] for ip in result["ips"]] == ["10.1.2.2/32", "fd00:1:2::2/128"]
    if version != "0.3.1":  # CHECK came with 0.4.0
        assert_no_output(lab.cni("CHECK", pod, version, prevResult=result))
    assert_no_output(lab.cni("DEL", pod, version, prevResult=result))
    assert lab.leftovers(pod) == []


def test_dual_stack(lab: Lab) -> None:
    pod = lab.pod("pod", ["10.1.2.2/32", "fd00:1:2::2/128"], [f"{PEER_V4}/32", f"{PEER_V6}/128"])
    lab.serve(pod)
    result = lab.cni("ADD", pod).ok()
    assert_result(result, "1.1.0", pod)
    shown = pod.host.ip("addr", "show", "dev", "net1")
    assert "inet 10.1.2.2/32" in shown and "inet6 fd00:1:2::2/128" in shown, shown
    assert pod.host.ping(PEER_V4, timeout=10)
    assert pod.host.ping(PEER_V6, timeout=10)
    assert_no_output(lab.cni("CHECK", pod, prevResult=result))
    assert_no_output(lab.cni("DEL", pod, prevResult=result))
    assert lab.leftovers(pod) == []


def test_address_inside_allowed_ips(lab: Lab) -> None:
    pod = lab.pod("pod", ["10.1.2.3/32"], ["10.1.2.0/24"])
    lab.serve(pod)
    result = lab.cni("ADD", pod).ok()
    assert result["routes"] == [{"dst": "10.1.2.0/24"}]
    assert "dev net1" in pod.host.ip("route", "show", "10.1.2.0/24")
    assert pod.host.ping(PEER_V4, timeout=10)
    assert_no_output(lab.cni("CHECK", pod, prevResult=result))


def test_a_secret_used_by_a_second_pod_is_refused(lab: Lab) -> None:
    first = lab.pod("pod-first", ["10.1.2.2/32"], [f"{PEER_V4}/32"])
    lab.cni("ADD", first).ok()
    second = lab.pod("pod-second", ["10.1.2.2/32"], [f"{PEER_V4}/32"], secret="wg-pod-first")
    error = lab.cni("ADD", second).error("1.1.0")
    assert error["code"] == INVALID_NETWORK_CONFIG
    first_pod = f"{lab.namespace}/pod-first"
    assert f"pod {first_pod}" in error["msg"] and "own WireGuard config" in error["msg"], error
    assert lab.leftovers(second) == []
    assert [a["pod"] for a in lab.agent.attachments()] == [first_pod]
    assert_no_output(lab.cni("DEL", second))  # the runtime's DEL after the failed ADD
    assert [a["pod"] for a in lab.agent.attachments()] == [first_pod]


# --- chained after another plugin -----------------------------------------------------------------


def _prev_result(pod: Pod, version: str = "1.1.0") -> dict[str, Any]:
    """What a bridge plugin before ours would have returned."""
    return {
        "cniVersion": version,
        "interfaces": [
            {"name": "cni0", "mac": "3a:5b:91:0c:4e:21"},
            {"name": "eth0", "mac": "0a:58:0a:f4:01:05", "sandbox": pod.netns},
        ],
        "ips": [{"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}],
        "dns": {"nameservers": ["10.96.0.10"], "search": ["default.svc.cluster.local"]},
    }


def test_chained_pod_without_annotation_passes_through(lab: Lab) -> None:
    pod = lab.pod("pod", ["10.1.2.2/32"], [f"{PEER_V4}/32"], annotate=False)
    prev = _prev_result(pod)
    assert lab.cni("ADD", pod, prevResult=prev).ok() == prev
    assert lab.leftovers(pod) == []
    assert_no_output(lab.cni("CHECK", pod, prevResult=prev))
    assert_no_output(lab.cni("DEL", pod, prevResult=prev))


def test_chained_pod_with_annotation_gets_net1_appended(lab: Lab) -> None:
    pod = lab.pod("pod", ["10.1.2.2/32"], [f"{PEER_V4}/32"])
    lab.serve(pod)
    prev = _prev_result(pod, "1.0.0")
    result = lab.cni("ADD", pod, "1.0.0", prevResult=prev).ok()
    assert_result(result, "1.0.0", pod, index=2)
    assert result["interfaces"][:2] == prev["interfaces"]
    assert result["ips"] == [*prev["ips"], {"address": "10.1.2.2/32", "interface": 2}]
    assert result["routes"] == [*prev["routes"], {"dst": "10.1.2.1/32"}]
    assert result["dns"] == prev["dns"]
    assert pod.host.ping(PEER_V4, timeout=10)
    assert_no_output(lab.cni("CHECK", pod, "1.0.0", prevResult=result))
    assert_no_output(lab.cni("DEL", pod, "1.0.0", prevResult=result))
    assert lab.leftovers(pod) == []


def test_standalone_pod_without_annotation_is_a_clear_error(lab: Lab) -> None:
    pod = lab.pod("pod", ["10.1.2.2/32"], [f"{PEER_V4}/32"], annotate=False)
    error = lab.cni("ADD", pod, "0.4.0").error("0.4.0")
    assert error["code"] == INVALID_NETWORK_CONFIG
    assert f"{lab.namespace}/pod" in error["msg"] and ANNOTATION in error["msg"], error
    assert lab.leftovers(pod) == []


# --- bad input: an error, and nothing left behind -------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


BAD_INPUTS = {
    "missing-secret": (INVALID_NETWORK_CONFIG, "not found"),
    "bad-base64-key": (INVALID_NETWORK_CONFIG, "privateKey"),
    "bad-cidr": (INVALID_NETWORK_CONFIG, "allowedIPs[1]"),
    "bad-duration": (INVALID_NETWORK_CONFIG, "persistentKeepalive"),
    "api-401": (INVALID_NETWORK_CONFIG, "rejected"),
    "api-403": (INVALID_NETWORK_CONFIG, "may not get secrets"),
    "api-unreachable": (TRY_AGAIN_LATER, "connection refused"),
}


def _edit(**changes: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Change top-level keys of a config.json."""
    return lambda doc: doc | changes


def _peer_edit(**changes: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Change keys of a config.json's first peer."""
    return lambda doc: doc | {"peers": [doc["peers"][0] | changes]}


def _revoked_token(lab: Lab) -> str:
    """A token of a ServiceAccount that was deleted after the token was issued: revoked."""
    accounts = f"/api/v1/namespaces/{lab.namespace}/serviceaccounts"
    lab.api.call("POST", accounts, {"metadata": {"name": "revoked"}})
    token = lab.api.token_for(lab.namespace, "revoked")
    lab.api.call("DELETE", f"{accounts}/revoked")
    return token


def _pods_only_token(lab: Lab) -> str:
    """A token of a ServiceAccount that may get Pods in the lab's namespace, and not Secrets."""
    namespace = lab.namespace
    lab.api.call("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": "reader"}})
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    rule = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}
    lab.api.call("POST", f"{rbac}/roles", {"metadata": {"name": "pods"}, "rules": [rule]})
    lab.api.call(
        "POST",
        f"{rbac}/rolebindings",
        {
            "metadata": {"name": "reader-pods"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pods"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    )
    lab.api.wait_for_rbac(f"system:serviceaccount:{namespace}:reader", "get", "pods", namespace, allowed=True)
    return lab.api.token_for(namespace, "reader")


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_a_cni_error_that_leaves_nothing(lab: Lab, case: str) -> None:
    code, words = BAD_INPUTS[case]
    secret: str | None = None
    edit: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    kubeconfig: Path | None = None
    if case == "missing-secret":
        secret = "no-such-secret"
    elif case == "bad-base64-key":
        edit = _edit(privateKey="this is not base64!")
    elif case == "bad-cidr":
        edit = _peer_edit(allowedIPs=["10.1.2.1/32", "10.1.2.0/33"])
    elif case == "bad-duration":
        edit = _peer_edit(persistentKeepalive="25 parsecs")
    elif case == "api-401":
        kubeconfig = lab.kubeconfig_for("revoked.kubeconfig", _revoked_token(lab))
    elif case == "api-403":
        kubeconfig = lab.kubeconfig_for("reader.kubeconfig", _pods_only_token(lab))
    elif case == "api-unreachable":
        kubeconfig = lab.kubeconfig_for("nowhere.kubeconfig", "token", f"https://127.0.0.1:{_free_port()}")
    pod = lab.pod("pod", ["10.1.2.2/32"], [f"{PEER_V4}/32"], secret=secret, edit=edit)
    _assert_refused(lab, pod, code, words, {"kubeConfigPath": str(kubeconfig)} if kubeconfig else {})


def _assert_refused(lab: Lab, pod: Pod, code: int, words: str, extra: dict[str, Any]) -> None:
    """ADD fails with `code`, its message has `words`, nothing is left, no key leaks; DEL succeeds."""
    started = time.monotonic()
    call = lab.cni("ADD", pod, **extra)
    took = time.monotonic() - started
    error = call.error("1.1.0")
    assert error["code"] == code and words in error["msg"], error
    assert lab.leftovers(pod) == []
    assert lab.agent.attachments() == [] and lab.agent.state_files() == []
    assert pod.wg.keys.private_b64 not in call.stdout + call.stderr
    assert took < 15.0, f"ADD took {took:.1f} s"
    assert_no_output(lab.cni("DEL", pod))  # the runtime's DEL after the failed ADD
    assert lab.leftovers(pod) == []


def test_a_slow_api_server_is_try_again_later(lab: Lab, fake_k8s: FakeKubernetes) -> None:
    """The fake API server (tests/support/k8s_fake.py) answers 8 s late: a real one does not on demand."""
    pod = lab.pod("pod", ["10.1.2.2/32"], [f"{PEER_V4}/32"])
    fake_k8s.add_pod(lab.namespace, "pod", {ANNOTATION: "wg-pod"}, uid=pod.uid)
    fake_k8s.delay = 8.0
    kubeconfig = lab.kubeconfig.parent / "fake.kubeconfig"
    kubeconfig.write_text(fake_k8s.write_kubeconfig("token").read_text())
    _assert_refused(lab, pod, TRY_AGAIN_LATER, "did not answer within", {"kubeConfigPath": str(kubeconfig)})


# --- VERSION, STATUS, GC --------------------------------------------------------------------------


def test_version(lab: Lab) -> None:
    for version in VERSIONS:
        answer = invoke("VERSION", {"cniVersion": version}).ok()
        assert answer["cniVersion"] == version
        assert set(VERSIONS) <= set(answer["supportedVersions"]), answer


def test_status_ok(lab: Lab) -> None:
    call = invoke("STATUS", lab.netconf(), env=lab.env())
    assert_no_output(call)


def test_gc_removes_attachments_not_valid(lab: Lab) -> None:
    keep = lab.pod("pod-keep", ["10.1.2.2/32"], [f"{PEER_V4}/32"])
    drop = lab.pod("pod-drop", ["10.1.2.3/32"], [f"{PEER_V4}/32"])
    lab.serve(keep, drop)
    kept = lab.cni("ADD", keep).ok()
    lab.cni("ADD", drop).ok()
    assert drop.host.ping(PEER_V4, timeout=10)
    valid = [
        {"containerID": keep.container_id, "ifname": "net1"},
        {"containerID": secrets.token_hex(32), "ifname": "eth0"},
    ]
    assert_no_output(invoke("GC", lab.netconf(**{"cni.dev/valid-attachments": valid}), env=lab.env()))
    assert lab.leftovers(drop) == []
    assert [a["pod"] for a in lab.agent.attachments()] == [f"{lab.namespace}/pod-keep"]
    assert keep.host.ping(PEER_V4, timeout=10)
    assert_no_output(lab.cni("CHECK", keep, prevResult=kept))


def test_gc_touches_only_its_own_network(lab: Lab) -> None:
    """A GC for another network, or one without cni.dev/valid-attachments, removes nothing of ours
    (it removed every attachment not in its list, whatever network it belonged to)."""
    pod = lab.pod("pod-gc", ["10.1.2.4/32"], [f"{PEER_V4}/32"])
    lab.serve(pod)
    lab.cni("ADD", pod).ok()
    other = lab.netconf(name="some-other-network", **{"cni.dev/valid-attachments": []})
    assert_no_output(invoke("GC", other, env=lab.env()))
    assert_no_output(invoke("GC", lab.netconf(), env=lab.env()))  # no list: nothing is known invalid
    assert [a["pod"] for a in lab.agent.attachments()] == [f"{lab.namespace}/pod-gc"]
    assert pod.host.ping(PEER_V4, timeout=10)
    assert_no_output(lab.cni("DEL", pod, name="some-other-network"))  # another network's DEL
    assert [a["network"] for a in lab.agent.attachments()] == ["wgnet"]
    assert_no_output(invoke("GC", lab.netconf(**{"cni.dev/valid-attachments": []}), env=lab.env()))
    assert lab.leftovers(pod) == []


def test_a_network_config_cannot_choose_the_agent_socket(lab: Lab, tmp_path: Path) -> None:
    """agentSocket used to make root start an agent whose state dir was that path's directory:
    chmod 0700, the file at the path replaced by a socket, other files deleted."""
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o755)
    precious = victim / "precious.conf"
    precious.write_text("keep me\n")
    conf = lab.netconf(agentSocket=str(precious))
    for command in ("STATUS", "ADD", "DEL", "GC"):
        pod = lab.pod(f"pod-{command.lower()}", ["10.1.2.5/32"], [f"{PEER_V4}/32"])
        call = lab.cni(command, pod, agentSocket=str(precious)) if command != "STATUS" else None
        call = call or invoke(command, conf, env=lab.env())
        if command in ("STATUS", "ADD"):
            error = call.error("1.1.0")
            assert error["code"] == INVALID_NETWORK_CONFIG and "agentSocket" in error["msg"], error
        else:
            call.ok()
    assert precious.read_text() == "keep me\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o755
    assert sorted(p.name for p in victim.iterdir()) == ["precious.conf"]
    assert lab.agent.attachments() == []
    same = lab.netconf(agentSocket=str(lab.agent.socket))  # the operator's own socket: harmless
    assert_no_output(invoke("STATUS", same, env=lab.env()))


def test_config_files_only_where_the_operator_allows(lab: Lab, tmp_path: Path) -> None:
    """staticConfigPath and kubeConfigPath outside the allowed directories are refused with the same
    message whether or not the file exists."""
    pod = lab.pod("pod-paths", ["10.1.2.6/32"], [f"{PEER_V4}/32"])
    existing = tmp_path / "config.json"
    existing.write_text(json.dumps(config_json(pod.wg, lab.peer, [f"{PEER_V4}/32"])))
    for key in ("staticConfigPath", "kubeConfigPath"):
        messages = []
        for path in (existing, tmp_path / "missing.json", Path("/etc/passwd")):
            error = lab.cni("ADD", pod, **{key: str(path)}).error("1.1.0")
            assert error["code"] == INVALID_NETWORK_CONFIG, error
            messages.append(error["msg"].replace(str(path), "PATH"))
        assert len(set(messages)) == 1 and "not in a place this node's operator allows" in messages[0], (
            messages
        )
    assert lab.leftovers(pod) == []
