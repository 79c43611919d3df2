"""Which API identity the plugin uses: the named kubeconfig, or the agent pod's service account."""

from __future__ import annotations

from pathlib import Path

import pytest

from cni import k8s, kubeconfig, plugin
from cni.policy import NodePolicy
from tests.support.k8s_fake import FakeKubernetes

pytest_plugins = ["tests.support.k8s_fake"]


def _in_cluster_here(fake: FakeKubernetes, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process look like it runs in the agent's pod, served by the fake API."""
    account = fake.write_service_account_dir()
    for key, value in fake.in_cluster_env().items():
        monkeypatch.setenv(key, value)
    real = kubeconfig.in_cluster
    monkeypatch.setattr(plugin.kubeconfig, "in_cluster", lambda: real(account))


def test_an_old_nads_node_kubeconfig_falls_back_to_the_service_account(
    fake_k8s: FakeKubernetes, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _in_cluster_here(fake_k8s, monkeypatch)
    policy = NodePolicy(config_dirs=(tmp_path,))
    client = plugin._api_client(str(tmp_path / "wg-cni.kubeconfig"), policy)  # absent in the agent's pod
    assert client.get_pod("default", "wireguard-pod")["metadata"]["name"] == "wireguard-pod"


def test_an_existing_kubeconfig_is_used(fake_k8s: FakeKubernetes, monkeypatch: pytest.MonkeyPatch) -> None:
    _in_cluster_here(fake_k8s, monkeypatch)
    monkeypatch.setattr(plugin.kubeconfig, "in_cluster", lambda: pytest.fail("the kubeconfig must win"))
    path = fake_k8s.write_kubeconfig("token")
    assert plugin._api_client(str(path), NodePolicy(config_dirs=(path.parent,))).get_pod(
        "default", "wireguard-pod"
    )


def test_a_missing_kubeconfig_outside_a_pod_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(k8s.KubernetesError) as caught:
        plugin._api_client(str(tmp_path / "missing.kubeconfig"), NodePolicy(config_dirs=(tmp_path,)))
    assert "missing.kubeconfig" in str(caught.value)
