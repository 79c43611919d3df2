"""The CNI flow against a real kube-apiserver, the agent holding in-cluster credentials as in the DaemonSet.

A fresh kube-apiserver for this module (tests/support/k8s_cluster.py) with deploy/rbac.yaml and
deploy/daemonset.yaml applied (so the ServiceAccount kube-system/pywg-cni exists and is bound as
shipped). The agent runs with the DaemonSet's own arguments on the host's network
(tests/support/host_network.py),
holding what the kubelet gives that Pod: KUBERNETES_SERVICE_HOST/PORT and a token for the ServiceAccount
from the TokenRequest API, with the CA and the namespace, at /var/run/secrets/kubernetes.io/serviceaccount
in a mount namespace of its own. Each CNI call is the static entrypoint (cni/entrypoint.c, built for
this module) run as Multus runs a delegate, with the network config of deploy/examples/wgnet-nad.yaml:
no kubeconfig, so the agent reads the Pod and its Secret with its ServiceAccount. Pods are namespaces of
the test, their Pod and Secret objects are in the real API; the WireGuard peer is wireguard-go reached
over loopback.

Least privilege: every request the agent makes is allowed; listing Secrets, writing anything but its
Events and Leases, and reading what rbac.yaml does not grant are refused with 403 by the real RBAC
authorizer (tests/test_rbac_live.py proves each granted verb is needed), and
a refused read becomes a CNI error naming the permission to add. With the shipped ClusterRoleBinding the
ServiceAccount may get any Secret by name (RBAC cannot say "only the Secret a Pod names"); what keeps
the agent to its Pod's own Secret is the plugin, which reads only the Secret the Pod's annotation names,
in the Pod's namespace. The namespaced binding rbac.yaml describes is proved here too: a Secret of
another namespace is then 403.

What stays with the fake API server (tests/test_cni_plugin.py, tests/test_k8s.py): slow answers, 5xx,
resets, which a real server does not produce on demand.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from cni.build_entrypoint import build
from cni.spec import INVALID_NETWORK_CONFIG
from pywg.runtime.daemon import alive
from tests.support.cni_run import ANNOTATION, CniCall, PodKeys, cni_args, config_json, leftovers, netns_path
from tests.support.host_network import InClusterAgent, LoopbackPeer
from tests.support.k8s_cluster import (
    CHECKOUT,
    SERVICE_ACCOUNT_PATH,
    ApiError,
    RealKubernetes,
    start_real_kubernetes,
)
from tests.support.kubelet import container_env, expanded
from tests.support.topology import Host, KeyPair, Topology, wait_until

pytest_plugins = ["tests.support.topology"]

DEPLOY = CHECKOUT / "deploy"
AGENT_USER = "system:serviceaccount:kube-system:pywg-cni"
PEER_V4, PEER_V6 = "10.1.2.1", "fd00:1:2::1"
RECOVERY_LIMIT = 10.0
TOKEN_FILE = SERVICE_ACCOUNT_PATH / "token"


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def daemonset_agent_args() -> list[str]:
    """The agent's arguments as deploy/daemonset.yaml gives them, as the kubelet expands them."""
    [daemonset] = [d for d in _documents(DEPLOY / "daemonset.yaml") if d["kind"] == "DaemonSet"]
    template = daemonset["spec"]["template"]
    [agent] = [c for c in template["spec"]["containers"] if c["name"] == "agent"]
    metadata = {"name": "pywg-cni-test", "namespace": daemonset["metadata"]["namespace"]}
    return expanded(agent["args"], container_env(metadata, agent))


def nad_config(example: str) -> dict[str, Any]:
    """The network config of a NetworkAttachmentDefinition of deploy/examples, as Multus hands it over."""
    [nad] = _documents(DEPLOY / "examples" / example)
    return dict(json.loads(nad["spec"]["config"]))


@dataclass
class Cluster:
    real: RealKubernetes
    service_account: Path  # what the kubelet projects for kube-system/pywg-cni: token, ca.crt, namespace
    entrypoint: Path

    @property
    def token(self) -> str:
        return (self.service_account / "token").read_text()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("cni-real")
    entrypoint = workdir / "pywg-cni"
    build(entrypoint)
    with start_real_kubernetes(workdir / "k8s") as real:
        real.kubectl("apply", "-f", str(DEPLOY / "rbac.yaml"), "-f", str(DEPLOY / "daemonset.yaml"))
        real.wait_for_rbac(AGENT_USER, "get", "secrets", "default", allowed=True)
        account = real.service_account_files(workdir / "serviceaccount", "kube-system", "pywg-cni")
        yield Cluster(real, account, entrypoint)


@dataclass
class Pod:
    name: str
    namespace: str
    host: Host
    wg: PodKeys
    allowed: list[str]
    uid: str
    container_id: str = field(default_factory=lambda: uuid.uuid4().hex * 2)

    @property
    def netns(self) -> str:
        return netns_path(self.host)

    @property
    def args(self) -> str:
        return cni_args(self.namespace, self.name, self.container_id, self.uid)


@dataclass
class Lab:
    cluster: Cluster
    namespace: str
    topology: Topology
    peer: LoopbackPeer
    agent: InClusterAgent

    @property
    def real(self) -> RealKubernetes:
        return self.cluster.real

    def pod(
        self,
        name: str,
        addresses: list[str],
        allowed: list[str],
        *,
        secret: str | None = None,
        annotation: str | None = None,
        edit: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        namespace: str | None = None,
    ) -> Pod:
        """A sandbox (a namespace of the test), its Pod object naming `annotation` (default: its own
        Secret wg-NAME) and, unless `secret` names another, that Secret (config.json, changed by `edit`)."""
        namespace = namespace or self.namespace
        keys = PodKeys(KeyPair.generate(), addresses)
        secret_name = secret or f"wg-{name}"
        if secret is None:
            doc = config_json(keys, self.peer, allowed)  # type: ignore[arg-type]  # a Peer's endpoint and key
            doc = edit(doc) if edit is not None else doc
            self.real.call(
                "POST",
                f"/api/v1/namespaces/{namespace}/secrets",
                {"metadata": {"name": secret_name}, "stringData": {"config.json": json.dumps(doc)}},
            )
        created = self.real.call(
            "POST",
            f"/api/v1/namespaces/{namespace}/pods",
            {
                "metadata": {"name": name, "annotations": {ANNOTATION: annotation or secret_name}},
                "spec": {"containers": [{"name": "main", "image": "your-application-image"}]},
            },
        )
        return Pod(name, namespace, self.topology.host(name), keys, allowed, created["metadata"]["uid"])

    def serve(self, *pods: Pod) -> None:
        self.peer.serve(pod.wg for pod in pods)

    def cni(
        self, command: str, pod: Pod, netns: str | None = None, example: str = "wgnet-nad.yaml", **extra: Any
    ) -> CniCall:
        """The entrypoint as Multus runs a delegate: CNI_* variables, the NAD's config on stdin; the
        runtime's environment names this agent's socket (the operator's PYWG_CNI_AGENT_SOCKET)."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYWG_CNI_AGENT_SOCKET": str(self.agent.socket),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": pod.container_id,
            "CNI_IFNAME": "net1",
            "CNI_ARGS": pod.args,
            "CNI_PATH": "/opt/cni/bin",
        }
        netns = pod.netns if netns is None else netns
        if netns:
            env["CNI_NETNS"] = netns
        done = subprocess.run(
            [str(self.cluster.entrypoint)],
            input=json.dumps(nad_config(example) | extra).encode(),
            capture_output=True,
            env=env,
            timeout=60,
            check=False,
        )
        return CniCall(done.returncode, done.stdout.decode(), done.stderr.decode(errors="replace"))

    def leftovers(self, pod: Pod) -> list[str]:
        return leftovers(self.agent, pod.container_id, "net1", pod.netns)


@pytest.fixture
def lab(cluster: Cluster, topology: Topology) -> Iterator[Lab]:
    peer = LoopbackPeer(topology.host("peer"))
    agent = InClusterAgent(
        topology.host("node"), cluster.service_account, cluster.real.port, args=daemonset_agent_args()
    ).start()
    yield Lab(cluster, cluster.real.namespace(), topology, peer, agent)


def assert_no_output(call: CniCall) -> None:
    call.ok()
    assert call.stdout == "", call.stdout


# --- the flow -------------------------------------------------------------------------------------


def test_add_ping_check_kill_reuse_bad_secret_del_dual_stack(lab: Lab) -> None:
    pod = lab.pod("pod-a", ["10.1.2.2/32", "fd00:1:2::2/128"], [f"{PEER_V4}/32", f"{PEER_V6}/128"])
    lab.serve(pod)
    result = lab.cni("ADD", pod).ok()
    assert result == {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "net1", "mtu": 1420, "sandbox": pod.netns}],  # no mac: a TUN has none
        "ips": [
            {"address": "10.1.2.2/32", "interface": 0},
            {"address": "fd00:1:2::2/128", "interface": 0},
        ],
        "routes": [{"dst": "10.1.2.1/32"}, {"dst": "fd00:1:2::1/128"}],
        "dns": {},
    }
    shown = pod.host.ip("addr", "show", "dev", "net1")
    assert "inet 10.1.2.2/32" in shown and "inet6 fd00:1:2::2/128" in shown, shown
    assert pod.host.ping(PEER_V4, timeout=10) and pod.host.ping(PEER_V6, timeout=10)
    assert_no_output(lab.cni("CHECK", pod, prevResult=result))

    # kill -9 the agent's worker: its supervisor restarts it in the same mount namespace, with the same
    # credentials, and it re-attaches net1 by itself.
    worker = lab.agent.worker_pid()
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: not alive(worker), 5.0, "the agent worker to die")
    wait_until(lambda: pod.host.ping(PEER_V4, timeout=1), RECOVERY_LIMIT, "traffic after kill -9")
    assert pod.host.ping(PEER_V6, timeout=10)
    assert lab.agent.worker_pid() != worker
    assert_no_output(lab.cni("CHECK", pod, prevResult=result))

    # Another Pod whose annotation names the same Secret is refused: one key, one tunnel.
    second = lab.pod("pod-b", ["10.1.2.3/32"], [f"{PEER_V4}/32"], secret="wg-pod-a")
    error = lab.cni("ADD", second).error("1.1.0")
    assert error["code"] == INVALID_NETWORK_CONFIG, error
    assert f"pod {lab.namespace}/pod-a" in error["msg"] and "own WireGuard config" in error["msg"], error
    assert lab.leftovers(second) == []
    assert_no_output(lab.cni("DEL", second))  # the runtime's DEL after the failed ADD

    # A Secret whose config is wrong: the error names the field, nothing is left, no key leaks.
    bad = lab.pod("pod-c", ["10.1.2.4/32"], [f"{PEER_V4}/32"], edit=lambda doc: doc | {"privateKey": "nope"})
    call = lab.cni("ADD", bad)
    error = call.error("1.1.0")
    assert error["code"] == INVALID_NETWORK_CONFIG and "privateKey" in error["msg"], error
    assert f"secret {lab.namespace}/wg-pod-c" in error["msg"], error
    assert lab.leftovers(bad) == []
    assert_no_output(lab.cni("DEL", bad))

    assert [a["pod"] for a in lab.agent.attachments()] == [f"{lab.namespace}/pod-a"]
    assert pod.host.ping(PEER_V4, timeout=10)
    assert_no_output(lab.cni("DEL", pod, prevResult=result))
    assert lab.leftovers(pod) == []
    assert_no_output(lab.cni("DEL", pod, prevResult=result))  # DEL again
    assert_no_output(lab.cni("DEL", pod, netns=""))  # without CNI_NETNS
    assert lab.agent.attachments() == [] and lab.agent.state_files() == []


@pytest.mark.parametrize("kubeconfig", [None, "/etc/kubernetes/wg-cni.kubeconfig"])
def test_a_wg_cni_network_as_written_for_wireguard_cni(lab: Lab, kubeconfig: str | None) -> None:
    """deploy/examples/wgnet-nad-wg-cni.yaml: type wg-cni, cniVersion 0.3.1; also with the node
    kubeconfig wireguard-cni's NADs name, which the agent's Pod does not have: it reads with its
    ServiceAccount instead."""
    pod = lab.pod("pod", ["10.1.2.5/32"], [f"{PEER_V4}/32"])
    lab.serve(pod)
    example = "wgnet-nad-wg-cni.yaml"
    extra = {"kubeConfigPath": kubeconfig} if kubeconfig else {}
    result = lab.cni("ADD", pod, example=example, **extra).ok()
    assert result["cniVersion"] == "0.3.1" and "mac" not in result["interfaces"][0], result
    assert result["ips"] == [{"version": "4", "address": "10.1.2.5/32", "interface": 0}], result
    assert pod.host.ping(PEER_V4, timeout=10)
    assert_no_output(lab.cni("DEL", pod, example=example, prevResult=result))
    assert lab.leftovers(pod) == []


# --- least privilege --------------------------------------------------------------------------------


def test_every_request_of_the_agent_is_allowed_and_nothing_more(lab: Lab) -> None:
    real, namespace = lab.real, lab.namespace
    pod = lab.pod("pod", ["10.1.2.2/32"], [f"{PEER_V4}/32"])
    lab.cni("ADD", pod).ok()  # the agent's requests: get pods/NAME, get secrets/NAME
    assert_no_output(lab.cni("DEL", pod))
    for verb, resource in (("get", "pods"), ("get", "secrets"), ("watch", "secrets"), ("create", "events")):
        assert real.can_i(AGENT_USER, verb, resource, namespace), (verb, resource)

    token = lab.cluster.token
    base = f"/api/v1/namespaces/{namespace}"
    refused = {
        "list secrets": ("GET", f"{base}/secrets", None),
        "list secrets in all namespaces": ("GET", "/api/v1/secrets", None),
        "list pods": ("GET", f"{base}/pods", None),
        "create secrets": ("POST", f"{base}/secrets", {"metadata": {"name": "x"}, "stringData": {"a": "b"}}),
        "update secrets": ("PUT", f"{base}/secrets/wg-pod", {"metadata": {"name": "wg-pod"}}),
        "patch secrets": ("PATCH", f"{base}/secrets/wg-pod", {"metadata": {"labels": {"a": "b"}}}),
        "delete secrets": ("DELETE", f"{base}/secrets/wg-pod", None),
        "patch pods": ("PATCH", f"{base}/pods/pod", {"metadata": {"annotations": {"a": "b"}}}),
        "update pods/status": ("PUT", f"{base}/pods/pod/status", {"metadata": {"name": "pod"}}),
        "delete pods": ("DELETE", f"{base}/pods/pod", None),
        "delete events": ("DELETE", f"{base}/events/e", None),
        "get configmaps": ("GET", f"{base}/configmaps/kube-root-ca.crt", None),
        "get serviceaccounts": ("GET", "/api/v1/namespaces/kube-system/serviceaccounts/pywg-cni", None),
        "get network-attachment-definitions": (
            "GET",
            f"/apis/k8s.cni.cncf.io/v1/namespaces/{namespace}/network-attachment-definitions/wgnet",
            None,
        ),
        "create serviceaccounts/token": (
            "POST",
            "/api/v1/namespaces/kube-system/serviceaccounts/pywg-cni/token",
            {"spec": {"expirationSeconds": 600}},
        ),
    }
    for what, (method, path, body) in refused.items():
        with pytest.raises(ApiError) as info:
            real.request(method, path, body, token=token)
        assert info.value.status == 403 and info.value.body.get("reason") == "Forbidden", (what, info.value)
        verb = what.split()[0]
        assert f'"system:serviceaccount:kube-system:pywg-cni" cannot {verb}' in info.value.body["message"], (
            what
        )


def test_a_pod_cannot_send_the_agent_to_another_namespaces_secret(lab: Lab) -> None:
    other = lab.real.namespace()
    lab.real.call(
        "POST",
        f"/api/v1/namespaces/{other}/secrets",
        {"metadata": {"name": "theirs"}, "stringData": {"config.json": "{}"}},
    )
    pod = lab.pod("pod", ["10.1.2.2/32"], [f"{PEER_V4}/32"], secret="unused", annotation=f"{other}/theirs")
    error = lab.cni("ADD", pod).error("1.1.0")
    assert error["code"] == INVALID_NETWORK_CONFIG, error
    assert f"'{other}/theirs'" in error["msg"] and "not a valid Kubernetes name" in error["msg"], error
    assert lab.leftovers(pod) == []


@contextmanager
def bound_in(real: RealKubernetes, grants: dict[str, str]) -> Iterator[None]:
    """rbac.yaml's namespaced alternative: its ClusterRoleBinding deleted, the agent's ServiceAccount
    bound in each namespace of `grants` to that ClusterRole (value "pywg-cni") or to a Role granting
    get on one resource (value "pods" or "secrets"). rbac.yaml is applied again at the end."""
    real.kubectl("delete", "clusterrolebinding", "pywg-cni")
    try:
        for namespace, grant in grants.items():
            rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
            role = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "pywg-cni"}
            if grant != "pywg-cni":
                rule = {"apiGroups": [""], "resources": [grant], "verbs": ["get"]}
                real.call("POST", f"{rbac}/roles", {"metadata": {"name": "only"}, "rules": [rule]})
                role = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "only"}
            real.call(
                "POST",
                f"{rbac}/rolebindings",
                {
                    "metadata": {"name": "pywg-cni"},
                    "roleRef": role,
                    "subjects": [{"kind": "ServiceAccount", "name": "pywg-cni", "namespace": "kube-system"}],
                },
            )
        for namespace, grant in grants.items():
            for resource in ("pods", "secrets"):
                allowed = grant in ("pywg-cni", resource)
                real.wait_for_rbac(AGENT_USER, "get", resource, namespace, allowed=allowed)
        yield
    finally:
        real.kubectl("apply", "-f", str(DEPLOY / "rbac.yaml"))
        for namespace in grants:
            real.kubectl("-n", namespace, "delete", "rolebinding", "pywg-cni")
        real.wait_for_rbac(AGENT_USER, "get", "secrets", "default", allowed=True)


def test_refused_reads_are_cni_errors_naming_the_permission(lab: Lab) -> None:
    real = lab.real
    bound, unbound, pods_only = lab.namespace, real.namespace(), real.namespace()
    mine = lab.pod("mine", ["10.1.2.2/32"], [f"{PEER_V4}/32"])
    elsewhere = lab.pod("elsewhere", ["10.1.2.3/32"], [f"{PEER_V4}/32"], namespace=unbound)
    no_secrets = lab.pod("no-secrets", ["10.1.2.4/32"], [f"{PEER_V4}/32"], namespace=pods_only)
    lab.serve(mine)
    with bound_in(real, {bound: "pywg-cni", pods_only: "pods"}):
        # Another namespace's Secret, read with the agent's token: 403.
        with pytest.raises(ApiError) as info:
            real.request("GET", f"/api/v1/namespaces/{unbound}/secrets/wg-elsewhere", token=lab.cluster.token)
        assert info.value.status == 403, info.value

        result = lab.cni("ADD", mine).ok()
        assert mine.host.ping(PEER_V4, timeout=10)

        who = f"the service account kube-system/pywg-cni (the ServiceAccount token {TOKEN_FILE})"
        for pod, resource in ((elsewhere, "pods"), (no_secrets, "secrets")):
            error = lab.cni("ADD", pod).error("1.1.0")
            assert error["code"] == INVALID_NETWORK_CONFIG, error
            assert error["msg"].startswith(
                f"{who} may not get {resource} in namespace {pod.namespace}: add the RBAC rule "
                f"(deploy/rbac.yaml) that grants get on {resource}; the API server said 403 Forbidden: "
            ), error
            assert f'cannot get resource "{resource}" in API group "" in the namespace' in error["msg"], error
            assert lab.leftovers(pod) == []
        assert_no_output(lab.cni("DEL", mine, prevResult=result))
    assert lab.leftovers(mine) == []


def test_the_manifests_pass_the_real_servers_validation(cluster: Cluster) -> None:
    """kubectl apply --dry-run=server of deploy/ and of the examples' objects: the API server validates
    and defaults everything and stores nothing."""
    out = cluster.real.kubectl("apply", "--dry-run=server", "-f", str(DEPLOY)).stdout
    for kind in ("serviceaccount", "daemonset.apps", "clusterrole.rbac.authorization.k8s.io"):
        assert f"{kind}/pywg-cni" in out, out
    examples = sorted((DEPLOY / "examples").rglob("*.yaml"))
    objects = sum(len(_documents(path)) for path in examples)
    out = cluster.real.kubectl(
        "apply", "--dry-run=server", *(arg for path in examples for arg in ("-f", str(path)))
    ).stdout
    assert out.count("(server dry run)") == objects, out


def test_a_token_the_api_server_did_not_issue_is_a_cni_error(lab: Lab) -> None:
    """The agent re-reads the token file at every request, as the kubelet rotates it."""
    pod = lab.pod("pod", ["10.1.2.2/32"], [f"{PEER_V4}/32"])
    token = lab.cluster.service_account / "token"
    issued = token.read_text()
    token.write_text("eyJhbGciOiJSUzI1NiJ9.not-a-token-the-server-issued.c2ln")
    try:
        call = lab.cni("ADD", pod)
    finally:
        token.write_text(issued)
    error = call.error("1.1.0")
    assert error["code"] == INVALID_NETWORK_CONFIG and "(401 Unauthorized)" in error["msg"], error
    assert "not-a-token" not in call.stdout + call.stderr
    assert lab.leftovers(pod) == []
    lab.serve(pod)
    result = lab.cni("ADD", pod).ok()
    assert pod.host.ping(PEER_V4, timeout=10)
    assert_no_output(lab.cni("DEL", pod, prevResult=result))
