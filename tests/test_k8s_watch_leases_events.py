"""The API client's requests for live operations (issue 12) against a real kube-apiserver: Leases
(create, read, update with optimistic concurrency), Events (create, strategic merge patch), watching
one Secret by name (its current state first, then changes, a deletion, 410 for a resourceVersion
closing from another thread), and a kept connection. (A watch from a resourceVersion etcd has
compacted away, 410 Gone, is the agent's tests' business: a fresh server has compacted nothing.) The server is
tests/test_k8s_real.py's fixture (shared/k8s; skipped without it, except in CI)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from cni.k8s import KubernetesError
from cni.kubeconfig import load_kubeconfig
from tests.support.k8s_cluster import RealKubernetes, real_k8s  # noqa: F401 (the fixture `kube` uses)


@pytest.fixture
def kube(request: pytest.FixtureRequest) -> RealKubernetes:
    real: RealKubernetes = request.getfixturevalue("real_k8s")
    return real


def _secret(real: RealKubernetes, namespace: str, name: str, text: str) -> dict[str, Any]:
    return real.call(
        "POST",
        f"/api/v1/namespaces/{namespace}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "stringData": {"config.json": text},
        },
    )


def test_leases_are_created_read_and_updated_with_optimistic_concurrency(kube: RealKubernetes) -> None:
    namespace = kube.namespace()
    client = load_kubeconfig(kube.admin_kubeconfig)
    assert client.get_lease(namespace, "pywg-key-abc") is None
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "pywg-key-abc"},
        "spec": {"holderIdentity": "ns/pod", "leaseDurationSeconds": 15},
    }
    created = client.create_lease(namespace, lease)
    with pytest.raises(KubernetesError) as again:
        client.create_lease(namespace, lease)
    assert again.value.status == 409 and again.value.reason == "AlreadyExists"
    read = client.get_lease(namespace, "pywg-key-abc")
    assert read is not None and read["spec"]["holderIdentity"] == "ns/pod"
    read["spec"]["holderIdentity"] = "ns/other"
    updated = client.update_lease(namespace, read)
    assert updated["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
    created["spec"]["holderIdentity"] = "ns/stale"  # written from an old read: refused
    with pytest.raises(KubernetesError) as stale:
        client.update_lease(namespace, created)
    assert stale.value.status == 409 and stale.value.reason == "Conflict"


def test_events_are_created_and_patched(kube: RealKubernetes) -> None:
    namespace = kube.namespace()
    client = load_kubeconfig(kube.admin_kubeconfig)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "pod.abc"},
        "involvedObject": {"kind": "Pod", "namespace": namespace, "name": "pod"},
        "reason": "ConfigRejected",
        "message": "first",
        "type": "Warning",
        "count": 1,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "source": {"component": "pywg-cni"},
    }
    client.create_event(namespace, event)
    patched = client.patch_event(namespace, "pod.abc", {"count": 5, "message": "fifth"})
    assert (patched["count"], patched["message"], patched["reason"]) == (5, "fifth", "ConfigRejected")
    with pytest.raises(KubernetesError) as missing:
        client.patch_event(namespace, "pod.gone", {"count": 2})
    assert missing.value.status == 404


def test_a_watch_of_one_secret(kube: RealKubernetes) -> None:
    namespace = kube.namespace()
    client = load_kubeconfig(kube.admin_kubeconfig)
    _secret(kube, namespace, "watched", "one")
    _secret(kube, namespace, "other", "not seen")
    watch = client.watch_secret(namespace, "watched")
    events = iter(watch)
    kind, obj = next(events)  # what it is now
    assert (kind, obj["metadata"]["name"]) == ("ADDED", "watched")
    secret = kube.call("GET", f"/api/v1/namespaces/{namespace}/secrets/watched")
    secret["stringData"] = {"config.json": "two"}
    kube.call("PUT", f"/api/v1/namespaces/{namespace}/secrets/watched", secret)
    kube.call("DELETE", f"/api/v1/namespaces/{namespace}/secrets/other")
    kind, obj = next(events)
    assert (kind, obj["metadata"]["name"]) == ("MODIFIED", "watched")
    last = obj["metadata"]["resourceVersion"]
    kube.call("DELETE", f"/api/v1/namespaces/{namespace}/secrets/watched")
    kind, obj = next(events)
    assert (kind, obj["metadata"]["name"]) == ("DELETED", "watched")

    # Resumed from a resourceVersion: only what came after it.
    resumed = iter(client.watch_secret(namespace, "watched", resource_version=last))
    assert next(resumed)[0] == "DELETED"

    # Ended from another thread while it waits.
    quiet = client.watch_secret(namespace, "watched")
    ended = threading.Event()

    def drain() -> None:
        for _ in quiet:
            pass
        ended.set()

    reader = threading.Thread(target=drain)
    reader.start()
    quiet.close()
    reader.join(10)
    assert ended.is_set()


def test_a_kept_connection_serves_many_requests(kube: RealKubernetes) -> None:
    namespace = kube.namespace()
    _secret(kube, namespace, "s", "text")
    client = load_kubeconfig(kube.admin_kubeconfig)
    client.keep_alive = True
    connects = []
    original = type(client)._connect

    def counting(self: Any, conn: Any, timeout: float) -> None:
        connects.append(conn)
        original(self, conn, timeout)

    type(client)._connect = counting  # type: ignore[method-assign]
    try:
        for _ in range(5):
            assert client.get_secret(namespace, "s")["metadata"]["name"] == "s"
    finally:
        type(client)._connect = original  # type: ignore[method-assign]
    assert len(connects) == 1
