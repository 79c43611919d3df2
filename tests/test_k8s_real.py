"""The Kubernetes client against a real kube-apiserver (v1.20.2 on etcd, RBAC, TokenRequest), on loopback.

The server comes from the shared test material (tests/support/k8s_cluster.py): a fresh, private one for this
module. Without it the tests skip saying so, except in CI (CI=true), where they fail.

What the fake server (tests/support/k8s_fake.py) cannot prove: the plugin's reads against the real API, the
real Status objects behind each error message (404 of a Pod and of a Secret, 401, 403 with the real
RBAC message), a kubeconfig in flow style with anchors and an exec credential plugin accepted by a real
server, and the in-cluster path with a real ServiceAccount token from the TokenRequest API, re-read
when it rotates. Slow answers, 5xx and resets stay with the fake, which can misbehave on demand.
"""

from __future__ import annotations

import shutil
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from cni.k8s import KubernetesError, secret_config_text
from cni.kubeconfig import in_cluster, load_kubeconfig
from cni.spec import INVALID_NETWORK_CONFIG, UNKNOWN_CONTAINER
from tests.support.k8s_cluster import RealKubernetes
from tests.support.k8s_fake import CONFIG_ANNOTATION, EXAMPLE_CONFIG_JSON

pytest_plugins = ["tests.support.k8s_cluster"]  # the real_k8s fixture


def _pod_and_secret(real: RealKubernetes, namespace: str) -> None:
    real.call(
        "POST",
        f"/api/v1/namespaces/{namespace}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "wireguard-config"},
            "stringData": {"config.json": EXAMPLE_CONFIG_JSON},
        },
    )
    real.call(
        "POST",
        f"/api/v1/namespaces/{namespace}/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "wireguard-pod", "annotations": {CONFIG_ANNOTATION: "wireguard-config"}},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]},
        },
    )


def _fails(call: Any, *secrets: str) -> KubernetesError:
    with pytest.raises(KubernetesError) as info:
        call()
    for secret in secrets:
        assert secret not in str(info.value), "a credential leaked into an error message"
    return info.value


def test_the_plugins_reads_with_a_kubeconfig_as_kubectl_writes_it(real_k8s: RealKubernetes) -> None:
    namespace = real_k8s.namespace()
    _pod_and_secret(real_k8s, namespace)
    client = load_kubeconfig(real_k8s.admin_kubeconfig)
    pod = client.get_pod(namespace, "wireguard-pod")
    assert pod["metadata"]["annotations"][CONFIG_ANNOTATION] == "wireguard-config"
    secret = client.get_secret(namespace, "wireguard-config")
    assert secret_config_text(secret, f"secret {namespace}/wireguard-config") == EXAMPLE_CONFIG_JSON


def test_flow_style_anchors_and_an_exec_plugin_against_the_real_server(
    real_k8s: RealKubernetes, tmp_path: Path
) -> None:
    namespace = real_k8s.namespace()
    _pod_and_secret(real_k8s, namespace)
    plugin = tmp_path / "token-plugin"
    plugin.write_text(
        f"#!{sys.executable}\nimport json, os\n"
        "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1', 'kind': 'ExecCredential',"
        " 'status': {'token': os.environ['ISSUED']}}))\n"
    )
    plugin.chmod(0o700)
    cluster = yaml.safe_load(real_k8s.admin_kubeconfig.read_text())["clusters"][0]["cluster"]
    path = tmp_path / "kubeconfig"
    path.write_text(
        textwrap.dedent(
            f"""\
            apiVersion: v1
            kind: Config
            clusters:
            - {{name: real, cluster: &real {{server: "{cluster["server"]}",
                certificate-authority-data: {cluster["certificate-authority-data"]}}}}}
            - {{name: alias, cluster: *real}}
            users:
            - name: plugin
              user:
                exec: {{apiVersion: client.authentication.k8s.io/v1, command: ./token-plugin,
                        interactiveMode: Never, env: [{{name: ISSUED, value: {real_k8s.admin_token}}}]}}
            contexts:
            - {{name: x, context: {{cluster: alias, user: plugin}}}}  # the issue's flow style
            current-context: x
            """
        )
    )
    client = load_kubeconfig(path)
    assert client.get_pod(namespace, "wireguard-pod")["metadata"]["namespace"] == namespace


def test_real_status_answers_become_the_documented_errors(real_k8s: RealKubernetes) -> None:
    namespace = real_k8s.namespace()
    _pod_and_secret(real_k8s, namespace)
    admin = load_kubeconfig(real_k8s.admin_kubeconfig)

    gone = _fails(lambda: admin.get_pod(namespace, "no-such-pod"))
    assert gone.cni_code == UNKNOWN_CONTAINER and gone.message == f"pod {namespace}/no-such-pod not found"

    missing = _fails(lambda: admin.get_secret(namespace, "no-such-secret"))
    assert missing.cni_code == INVALID_NETWORK_CONFIG
    assert f"secret 'no-such-secret' not found in namespace {namespace}" in missing.message

    # The pywg-cni user exists, but no RBAC rule grants it anything here.
    pywg = load_kubeconfig(real_k8s.pywg_kubeconfig)
    forbidden = _fails(lambda: pywg.get_secret(namespace, "wireguard-config"))
    assert forbidden.cni_code == INVALID_NETWORK_CONFIG
    assert forbidden.message.startswith("user 'pywg-cni' (the credentials in kubeconfig")
    assert (
        f"may not get secrets in namespace {namespace}: add the RBAC rule (deploy/rbac.yaml)"
        in forbidden.message
    )
    assert (
        f'cannot get resource "secrets" in API group "" in the namespace "{namespace}"' in forbidden.message
    )

    rejected_token = "0" * 48
    text = real_k8s.admin_kubeconfig.read_text().replace(real_k8s.admin_token, rejected_token)
    wrong = real_k8s.workdir / "wrong.kubeconfig"
    wrong.write_text(text)
    rejected = _fails(lambda: load_kubeconfig(wrong).get_pod(namespace, "wireguard-pod"), rejected_token)
    assert rejected.cni_code == INVALID_NETWORK_CONFIG and "(401 Unauthorized)" in rejected.message


def _token_for(real: RealKubernetes, namespace: str, account: str) -> str:
    review = real.call(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 600},
        },
    )
    return str(review["status"]["token"])


def test_in_cluster_service_account_with_a_real_token_that_rotates(
    real_k8s: RealKubernetes, tmp_path: Path
) -> None:
    namespace = real_k8s.namespace()
    _pod_and_secret(real_k8s, namespace)
    real_k8s.call(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "agent"}},
    )
    mount = tmp_path / "serviceaccount"  # what the kubelet projects into the agent's Pod
    mount.mkdir()
    (mount / "token").write_text(_token_for(real_k8s, namespace, "agent"))
    shutil.copy(real_k8s.ca, mount / "ca.crt")
    (mount / "namespace").write_text(namespace)
    environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(real_k8s.port)}
    client = in_cluster(mount, environ=environ)
    assert client.namespace == namespace

    forbidden = _fails(lambda: client.get_pod(namespace, "wireguard-pod"))
    assert forbidden.message.startswith(f"the service account {namespace}/agent (the ServiceAccount token")

    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    rule = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}
    real_k8s.call("POST", f"{rbac}/roles", {"metadata": {"name": "read-pods"}, "rules": [rule]})
    real_k8s.call(
        "POST",
        f"{rbac}/rolebindings",
        {
            "metadata": {"name": "agent-reads-pods"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-pods"},
            "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": namespace}],
        },
    )
    # The API server's authorizer learns of new bindings through its own watch: wait for that.
    deadline = time.monotonic() + 30
    while True:
        try:
            assert client.get_pod(namespace, "wireguard-pod")["kind"] == "Pod"
            break
        except KubernetesError as error:
            if "may not get pods" not in error.message or time.monotonic() > deadline:
                raise
            time.sleep(0.1)

    # The kubelet rotates the projected token: the next request reads the new one.
    (mount / "token").write_text(_token_for(real_k8s, namespace, "agent"))
    assert client.get_pod(namespace, "wireguard-pod")["kind"] == "Pod"
    (mount / "token").write_text("eyJhbGciOiJSUzI1NiJ9.not-a-token-the-server-issued.c2ln")
    rejected = _fails(lambda: client.get_pod(namespace, "wireguard-pod"), "not-a-token-the-server-issued")
    assert "(401 Unauthorized)" in rejected.message
