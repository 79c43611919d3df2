"""deploy/rbac.yaml against the real kube-apiserver: each verb it grants the agent's ServiceAccount is
needed, and nothing more is granted (issue 12).

Needed: for each granted verb, the rule is taken away (the rest stays), and the API request the agent
makes with it (cni/k8s.py, as cni/plugin.py and cni/live.py call it) is then refused with 403, in a
message naming the verb and the RBAC file; put back, it works again. Nothing more: the API server's
authorizer (SubjectAccessReview) allows the ServiceAccount exactly the granted verbs over every verb
on the resources near them (Pods, Secrets, Events, Leases, ConfigMaps, ServiceAccounts, Nodes), in
the agent's namespace and in a tenant's.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from cni.k8s import ApiClient, KubernetesError
from cni.kubeconfig import load_kubeconfig
from tests.support.k8s_cluster import RealKubernetes, real_k8s  # noqa: F401 (the fixture `rbac` uses)
from tests.support.k8s_live import AGENT_NAMESPACE, DEPLOY, allowed, install_agent_identity
from tests.support.topology import wait_until

VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
RESOURCES = (
    ("", "pods"),
    ("", "secrets"),
    ("", "events"),
    ("", "configmaps"),
    ("", "serviceaccounts"),
    ("coordination.k8s.io", "leases"),
)
# (verb, group, resource, namespace or "*" for every namespace)
GRANTED = {
    ("get", "", "pods", "*"),
    ("get", "", "secrets", "*"),
    ("watch", "", "secrets", "*"),
    ("create", "", "events", "*"),
    ("patch", "", "events", "*"),
    ("get", "coordination.k8s.io", "leases", AGENT_NAMESPACE),
    ("create", "coordination.k8s.io", "leases", AGENT_NAMESPACE),
    ("update", "coordination.k8s.io", "leases", AGENT_NAMESPACE),
}


class Rbac:
    def __init__(self, real: RealKubernetes, kubeconfig: Path) -> None:
        self.real = real
        self.client: ApiClient = load_kubeconfig(str(kubeconfig))
        self.tenant = real.namespace()
        docs = list(yaml.safe_load_all((DEPLOY / "rbac.yaml").read_text()))
        self.cluster_role = next(d for d in docs if d["kind"] == "ClusterRole")
        self.lease_role = next(d for d in docs if d["kind"] == "Role")
        self.real.call(
            "POST",
            f"/api/v1/namespaces/{self.tenant}/secrets",
            {"metadata": {"name": "wg"}, "stringData": {"config.json": "{}"}},
        )
        self.real.call(
            "POST",
            f"/api/v1/namespaces/{self.tenant}/pods",
            {"metadata": {"name": "pod"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
        )

    def path(self, role: dict[str, Any]) -> str:
        if role["kind"] == "ClusterRole":
            return f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{role['metadata']['name']}"
        namespace = role["metadata"]["namespace"]
        return f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles/{role['metadata']['name']}"

    def put_rules(self, role: dict[str, Any], rules: list[dict[str, Any]]) -> None:
        current = self.real.call("GET", self.path(role))
        current["rules"] = rules
        self.real.call("PUT", self.path(role), current)


@pytest.fixture(scope="module")
def rbac(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Rbac:
    real: RealKubernetes = request.getfixturevalue("real_k8s")
    directory = tmp_path_factory.mktemp("agent-identity")
    directory.chmod(0o700)
    return Rbac(real, install_agent_identity(real, directory))


def test_nothing_more_is_granted(rbac: Rbac) -> None:
    found = set()
    for namespace in (AGENT_NAMESPACE, rbac.tenant):
        for group, resource in RESOURCES:
            for verb in VERBS:
                if allowed(rbac.real, verb, resource, namespace, group):
                    found.add((verb, group, resource, namespace))
    expected = {
        (verb, group, resource, namespace)
        for verb, group, resource, where in GRANTED
        for namespace in (AGENT_NAMESPACE, rbac.tenant)
        if where in ("*", namespace)
    }
    assert found == expected
    for verb in VERBS:  # nothing cluster-scoped either
        assert not allowed(rbac.real, verb, "nodes")
        assert not allowed(rbac.real, verb, "namespaces")


def _event(namespace: str, name: str) -> dict[str, Any]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": namespace, "name": "pod"},
        "reason": "ConfigUpdated",
        "message": "rbac test",
        "type": "Normal",
        "count": 1,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "source": {"component": "pywg-cni"},
    }


def _lease(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name},
        "spec": {"holderIdentity": "ns/pod", "leaseDurationSeconds": 60},
    }


def _first_event(rbac: Rbac) -> None:
    for _ in rbac.client.watch_secret(rbac.tenant, "wg", timeout_seconds=5):
        return


def _requests(rbac: Rbac) -> dict[tuple[str, str], Callable[[], object]]:
    """The agent's request for each granted verb, ready to run (they need no other verb)."""
    client, tenant = rbac.client, rbac.tenant
    counter = iter(range(1_000_000))
    rbac.real.call("POST", f"/api/v1/namespaces/{tenant}/events", _event(tenant, "patched"))
    leases = f"/apis/coordination.k8s.io/v1/namespaces/{AGENT_NAMESPACE}/leases"
    rbac.real.call("POST", leases, _lease("pywg-key-rbac-update"))

    def update() -> object:
        lease = rbac.real.call("GET", f"{leases}/pywg-key-rbac-update")
        return client.update_lease(AGENT_NAMESPACE, lease)

    return {
        ("get", "pods"): lambda: client.get_pod(tenant, "pod"),
        ("get", "secrets"): lambda: client.get_secret(tenant, "wg"),
        ("watch", "secrets"): lambda: _first_event(rbac),
        ("create", "events"): lambda: client.create_event(tenant, _event(tenant, f"created-{next(counter)}")),
        ("patch", "events"): lambda: client.patch_event(tenant, "patched", {"count": 2}),
        ("get", "leases"): lambda: client.get_lease(AGENT_NAMESPACE, "pywg-key-rbac-update"),
        ("create", "leases"): lambda: client.create_lease(
            AGENT_NAMESPACE, _lease(f"pywg-key-{next(counter)}")
        ),
        ("update", "leases"): update,
    }


def _without(rules: list[dict[str, Any]], resource: str, verb: str) -> list[dict[str, Any]]:
    kept = []
    for rule in copy.deepcopy(rules):
        if resource in rule["resources"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != verb]
        if rule["verbs"]:
            kept.append(rule)
    return kept


def test_each_granted_verb_is_needed(rbac: Rbac) -> None:
    requests = _requests(rbac)
    assert {(verb, resource) for verb, _, resource, _ in GRANTED} == set(requests)
    for (verb, resource), request in requests.items():
        _needed(rbac, verb, resource, request)


def _needed(rbac: Rbac, verb: str, resource: str, request: Callable[[], object]) -> None:
    """`request` works, is refused with 403 once `verb` on `resource` is taken away, works again."""
    request()  # allowed as deploy/rbac.yaml is
    role = rbac.lease_role if resource == "leases" else rbac.cluster_role
    namespace = AGENT_NAMESPACE if resource == "leases" else rbac.tenant
    group = "coordination.k8s.io" if resource == "leases" else ""
    rbac.put_rules(role, _without(role["rules"], resource, verb))
    try:
        wait_until(lambda: not allowed(rbac.real, verb, resource, namespace, group), 30.0, "the rule gone")
        with pytest.raises(KubernetesError) as refused:
            request()
        assert refused.value.status == 403, (verb, resource, refused.value.message)
        assert f"may not {verb} {resource}" in refused.value.message
        assert "deploy/rbac.yaml" in refused.value.message
    finally:
        rbac.put_rules(role, role["rules"])
        wait_until(lambda: allowed(rbac.real, verb, resource, namespace, group), 30.0, "the rule back")
    request()
