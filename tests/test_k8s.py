"""The Kubernetes client (cni/k8s.py, cni/kubeconfig.py) against a fake HTTPS API server on 127.0.0.1.

Every kubeconfig form, in-cluster credentials, the error each API answer maps to (with
its CNI code and a message an operator can act on), timeouts and dropped connections,
TLS failures, Secret key selection, and kubeconfigs as kubectl, Multus and
schu/wireguard-cni's installer write them. No message may carry a token, a key or Secret
data. tests/test_kubeconfig.py has the YAML forms, exec plugins, tls-server-name and
proxies; tests/test_k8s_real.py runs against a real kube-apiserver.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import stat
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cni import kubeconfig
from cni.k8s import ApiClient, KubernetesError, secret_config_text
from cni.kubeconfig import in_cluster, load_kubeconfig
from cni.spec import (
    DECODING_FAILURE,
    INVALID_ENVIRONMENT,
    INVALID_NETWORK_CONFIG,
    IO_FAILURE,
    TRY_AGAIN_LATER,
    UNKNOWN_CONTAINER,
)
from tests.support.k8s_fake import (
    CONFIG_ANNOTATION,
    DEFAULT_USER,
    EXAMPLE_CONFIG_JSON,
    KUBECONFIG_FORMS,
    FakeKubernetes,
    issue,
    make_ca,
)

pytest_plugins = ["tests.support.k8s_fake"]

PRIVATE_KEY = json.loads(EXAMPLE_CONFIG_JSON)["privateKey"]
WG_QUICK = textwrap.dedent(
    f"""\
    [Interface]
    PrivateKey = {PRIVATE_KEY}
    Address = 10.13.13.210/32

    [Peer]
    PublicKey = +gXCSfkib2xFMeebKXIYBVZxV/Vh2mbi1dJeHCCjQmg=
    Endpoint = 192.0.2.7:51820
    AllowedIPs = 10.13.13.0/24
    """
)


def _fails(call: Callable[[], object], fake: FakeKubernetes | None = None, *secrets: str) -> KubernetesError:
    """The KubernetesError `call` raises, after checking it carries no credential or Secret data."""
    with pytest.raises(KubernetesError) as info:
        call()
    error = info.value
    text = f"{error} {error!r} {error.message}"
    for secret in [*(fake.secret_strings() if fake else []), *secrets, PRIVATE_KEY]:
        assert secret not in text, "a credential or Secret value leaked into an error message"
    assert error.message and error.message == str(error)
    return error


def _kubeconfig(fake: FakeKubernetes, text: str, name: str = "custom") -> Path:
    return fake.write(f"{name}/kubeconfig", textwrap.dedent(text))


def _ca_b64(fake: FakeKubernetes) -> str:
    return base64.b64encode(fake.ca.cert).decode()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- every way of getting credentials ---------------------------------------------------------


@pytest.mark.parametrize("form", KUBECONFIG_FORMS)
def test_every_kubeconfig_form_reads_pod_and_secret(fake_k8s: FakeKubernetes, form: str) -> None:
    path = fake_k8s.write_kubeconfig(form)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    client = load_kubeconfig(path)
    pod = client.get_pod("default", "wireguard-pod")
    assert pod["kind"] == "Pod" and pod["apiVersion"] == "v1"
    assert pod["metadata"]["annotations"][CONFIG_ANNOTATION] == "wireguard-config"
    secret = client.get_secret("default", "wireguard-config")
    assert secret["kind"] == "Secret" and secret["type"] == "Opaque"
    assert secret_config_text(secret, "secret default/wireguard-config") == EXAMPLE_CONFIG_JSON

    pod_seen, secret_seen = fake_k8s.seen[-2:]
    assert pod_seen.path == "/api/v1/namespaces/default/pods/wireguard-pod"
    assert secret_seen.path == "/api/v1/namespaces/default/secrets/wireguard-config"
    assert {pod_seen.method, secret_seen.method} == {"GET"}
    assert {pod_seen.accept, secret_seen.accept} == {"application/json"}
    with_cert = form.startswith("client-cert")
    assert pod_seen.bearer is not with_cert
    assert pod_seen.user == ("pywg-cni-node" if with_cert else DEFAULT_USER)
    assert fake_k8s.token not in repr(client)


def test_context_namespace_and_override(fake_k8s: FakeKubernetes) -> None:
    assert load_kubeconfig(fake_k8s.write_kubeconfig("token")).namespace == "kube-system"
    path = _kubeconfig(
        fake_k8s,
        f"""\
        apiVersion: v1
        kind: Config
        clusters:
        - name: real
          cluster:
            server: {fake_k8s.url}
            certificate-authority-data: {_ca_b64(fake_k8s)}
        - name: elsewhere
          cluster:
            server: https://192.0.2.1:6443
        contexts:
        - name: elsewhere
          context: {{"cluster": "elsewhere", "user": "u"}}
        - name: node
          context:
            cluster: real
            user: u
            namespace: wg
        current-context: elsewhere
        users:
        - name: u
          user:
            token: {fake_k8s.token}
        """,
    )
    client = load_kubeconfig(path, context="node")
    assert client.namespace == "wg" and client.server == fake_k8s.url
    assert client.get_pod("default", "wireguard-pod")["metadata"]["name"] == "wireguard-pod"
    assert load_kubeconfig(path).server == "https://192.0.2.1:6443"


def test_a_single_context_is_used_without_current_context(fake_k8s: FakeKubernetes) -> None:
    text = fake_k8s.write_kubeconfig("schu").read_text().replace("current-context: default-context\n", "")
    client = load_kubeconfig(fake_k8s.write("one/kubeconfig", text))
    assert client.get_pod("default", "wireguard-pod")["kind"] == "Pod"


def test_token_file_is_read_at_every_request(fake_k8s: FakeKubernetes) -> None:
    path = fake_k8s.write_kubeconfig("token-file")
    client = load_kubeconfig(path)
    client.get_pod("default", "wireguard-pod")
    rotated = "eyJhbGciOiJSUzI1NiJ9.rotated-token.c2ln"
    fake_k8s.tokens = {rotated: DEFAULT_USER}
    fake_k8s.write("token", rotated + "\n", path.parent)
    assert client.get_pod("default", "wireguard-pod")["kind"] == "Pod"


def test_client_certificate_data_never_touches_the_disk(
    fake_k8s: FakeKubernetes, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = fake_k8s.write_kubeconfig("client-cert-data")
    before = set(os.listdir(tempfile.gettempdir()))
    load_kubeconfig(path).get_pod("default", "wireguard-pod")
    assert not {n for n in set(os.listdir(tempfile.gettempdir())) - before if n.startswith("pywg-cni")}

    # Without memfd: 0600 files in a 0700 dir, gone as soon as ssl has loaded them.
    monkeypatch.setattr(kubeconfig, "_memory_files", lambda blobs: None)
    staged: list[tuple[str, int, int]] = []
    real = kubeconfig._secret_files

    def spy(*blobs: bytes) -> Any:
        manager = real(*blobs)
        paths = manager.__enter__()
        for p in paths:
            staged.append(
                (p, stat.S_IMODE(os.stat(p).st_mode), stat.S_IMODE(os.stat(Path(p).parent).st_mode))
            )

        class Wrapped:
            def __enter__(self) -> list[str]:
                return paths

            def __exit__(self, *exc: object) -> None:
                manager.__exit__(None, None, None)

        return Wrapped()

    monkeypatch.setattr(kubeconfig, "_secret_files", spy)
    load_kubeconfig(path).get_pod("default", "wireguard-pod")
    assert staged and all(mode == 0o600 and dir_mode == 0o700 for _, mode, dir_mode in staged)
    assert not any(os.path.exists(p) for p, _, _ in staged)


def test_in_cluster_service_account(fake_k8s: FakeKubernetes) -> None:
    directory = fake_k8s.write_service_account_dir("kube-system")
    client = in_cluster(directory, environ=fake_k8s.in_cluster_env())
    assert client.namespace == "kube-system"
    assert client.get_secret("default", "wireguard-config")["kind"] == "Secret"
    assert fake_k8s.seen[-1].user == DEFAULT_USER and fake_k8s.seen[-1].bearer
    # The kubelet rotates the projected token; the next request uses the new one.
    fake_k8s.tokens = {"eyJ.rotated.sig": DEFAULT_USER}
    fake_k8s.write("token", "eyJ.rotated.sig", directory)
    assert client.get_pod("default", "wireguard-pod")["kind"] == "Pod"


def test_in_cluster_outside_a_pod(tmp_path: Path) -> None:
    error = _fails(lambda: in_cluster(tmp_path, environ={}))
    assert error.cni_code == INVALID_ENVIRONMENT
    assert "KUBERNETES_SERVICE_HOST" in error.message and "kubeConfigPath" in error.message


def test_in_cluster_without_a_token(fake_k8s: FakeKubernetes) -> None:
    directory = fake_k8s.write_service_account_dir()
    (directory / "token").unlink()
    error = _fails(lambda: in_cluster(directory, environ=fake_k8s.in_cluster_env()), fake_k8s)
    assert error.cni_code == IO_FAILURE and "automountServiceAccountToken" in error.message


# --- what each API answer becomes ----------------------------------------------------------------


@pytest.mark.parametrize("resource", ["pods", "secrets"])
def test_401_rejected_token(fake_k8s: FakeKubernetes, resource: str) -> None:
    path = fake_k8s.write_kubeconfig("token")
    rejected = fake_k8s.token
    fake_k8s.tokens = {}
    client = load_kubeconfig(path)
    get = client.get_pod if resource == "pods" else client.get_secret
    error = _fails(lambda: get("default", "wireguard-config"), fake_k8s, rejected)
    assert error.cni_code == INVALID_NETWORK_CONFIG
    assert f"the API server {fake_k8s.url} rejected the credentials in kubeconfig {path}" in error.message
    assert "(401 Unauthorized)" in error.message and "expired" in error.message


def test_401_unknown_client_certificate(fake_k8s: FakeKubernetes) -> None:
    fake_k8s.cert_users.clear()
    client = load_kubeconfig(fake_k8s.write_kubeconfig("client-cert-data"))
    error = _fails(lambda: client.get_pod("default", "wireguard-pod"), fake_k8s)
    assert error.cni_code == INVALID_NETWORK_CONFIG and "401 Unauthorized" in error.message


@pytest.mark.parametrize("resource", ["pods", "secrets"])
def test_403_names_the_service_account_the_namespace_and_the_rbac_fix(
    fake_k8s: FakeKubernetes, resource: str
) -> None:
    fake_k8s.forbid(resource, "default")
    client = load_kubeconfig(fake_k8s.write_kubeconfig("token"))
    get = client.get_pod if resource == "pods" else client.get_secret
    error = _fails(lambda: get("default", "wireguard-config"), fake_k8s)
    assert error.cni_code == INVALID_NETWORK_CONFIG
    assert error.message.startswith("the service account kube-system/pywg-cni (the credentials in kubeconfig")
    assert (
        f"may not get {resource} in namespace default: add the RBAC rule (deploy/rbac.yaml)" in error.message
    )
    assert f'cannot get resource "{resource}" in API group "" in the namespace "default"' in error.message


def test_404_pod_is_an_unknown_container(fake_k8s: FakeKubernetes) -> None:
    client = load_kubeconfig(fake_k8s.write_kubeconfig("token"))
    error = _fails(lambda: client.get_pod("default", "gone-pod"), fake_k8s)
    assert error.cni_code == UNKNOWN_CONTAINER
    assert error.message == "pod default/gone-pod not found"


def test_404_secret_names_secret_annotation_and_namespace(fake_k8s: FakeKubernetes) -> None:
    client = load_kubeconfig(fake_k8s.write_kubeconfig("token"))
    error = _fails(lambda: client.get_secret("team-a", "wg-missing"), fake_k8s)
    assert error.cni_code == INVALID_NETWORK_CONFIG
    assert "secret 'wg-missing' not found in namespace team-a" in error.message
    assert CONFIG_ANNOTATION in error.message
    assert "kubectl -n team-a create secret generic wg-missing --from-file=config.json" in error.message
    other = _fails(lambda: client.get_secret("team-a", "wg-missing", referenced_by="the NAD wgnet"))
    assert "(named by the NAD wgnet)" in other.message


def test_404_from_something_that_is_not_the_api_server(fake_k8s: FakeKubernetes) -> None:
    client = load_kubeconfig(fake_k8s.write_kubeconfig("token", server=fake_k8s.url + "/not-kubernetes/"))
    assert client.prefix == "/not-kubernetes"
    error = _fails(lambda: client.get_pod("default", "wireguard-pod"), fake_k8s)
    assert fake_k8s.seen[-1].path == "/not-kubernetes/api/v1/namespaces/default/pods/wireguard-pod"
    assert error.cni_code == INVALID_NETWORK_CONFIG and "the API server's URL" in error.message


@pytest.mark.parametrize("code", [429, 500, 503, 504])
def test_overload_and_server_errors_are_transient(fake_k8s: FakeKubernetes, code: int) -> None:
    fake_k8s.fail_next(code)
    client = load_kubeconfig(fake_k8s.write_kubeconfig("token"))
    error = _fails(lambda: client.get_secret("default", "wireguard-config"), fake_k8s)
    assert error.cni_code == TRY_AGAIN_LATER
    assert f"the API server {fake_k8s.url}" in error.message and f"({code} " in error.message
    if code == 429:
        assert "Retry-After 1 s" in error.message
    assert client.get_secret("default", "wireguard-config")["kind"] == "Secret"  # the next one works


# --- time and connections ---------------------------------------------------------------------------


def test_slow_server_times_out_with_try_again_later(fake_k8s: FakeKubernetes) -> None:
    fake_k8s.delay = 30
    client = load_kubeconfig(fake_k8s.write_kubeconfig("token"), read_timeout=0.5)
    start = time.monotonic()
    error = _fails(lambda: client.get_pod("default", "wireguard-pod"), fake_k8s)
    assert time.monotonic() - start < 2.5
    assert error.cni_code == TRY_AGAIN_LATER
    assert f"the API server {fake_k8s.url} did not answer within 0.5 s" in error.message


def test_silent_listener_times_out_at_connect(fake_k8s: FakeKubernetes) -> None:
    with socket.socket() as silent:  # accepts TCP (the kernel does), never speaks TLS
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"https://127.0.0.1:{silent.getsockname()[1]}"
        client = load_kubeconfig(fake_k8s.write_kubeconfig("token", server=url), connect_timeout=0.4)
        start = time.monotonic()
        error = _fails(lambda: client.get_pod("default", "wireguard-pod"), fake_k8s)
    assert time.monotonic() - start < 2.0
    assert error.cni_code == TRY_AGAIN_LATER
    assert f"could not connect to the API server {url} within 0.4 s" in error.message


def test_unreachable_server(fake_k8s: FakeKubernetes) -> None:
    url = f"https://127.0.0.1:{_free_port()}"  # nothing listens there any more
    client = load_kubeconfig(fake_k8s.write_kubeconfig("multus", server=url))
    error = _fails(lambda: client.get_pod("default", "wireguard-pod"), fake_k8s)
    assert error.cni_code == TRY_AGAIN_LATER
    assert f"cannot reach the API server {url} (connection refused)" in error.message


@pytest.mark.parametrize("reset", [False, True], ids=["closed-after-request", "reset-at-accept"])
def test_one_dropped_connection_is_retried(fake_k8s: FakeKubernetes, reset: bool) -> None:
    fake_k8s.drop, fake_k8s.drop_with_reset = 1, reset
    client = load_kubeconfig(fake_k8s.write_kubeconfig("token"))
    assert client.get_pod("default", "wireguard-pod")["kind"] == "Pod"
    assert fake_k8s.dropped == 1 and len(fake_k8s.seen) == (1 if reset else 2)


@pytest.mark.parametrize("reset", [False, True], ids=["closed-after-request", "reset-at-accept"])
def test_two_dropped_connections_are_transient(fake_k8s: FakeKubernetes, reset: bool) -> None:
    fake_k8s.drop, fake_k8s.drop_with_reset = 3, reset
    client = load_kubeconfig(fake_k8s.write_kubeconfig("token"))
    error = _fails(lambda: client.get_pod("default", "wireguard-pod"), fake_k8s)
    assert error.cni_code == TRY_AGAIN_LATER
    assert f"the API server {fake_k8s.url} closed the connection twice" in error.message
    assert fake_k8s.dropped == 2  # one retry, not more


def test_requests_are_sent_without_waiting_for_acks(
    fake_k8s: FakeKubernetes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TCP_NODELAY: else each request waits out the server's delayed ACK (40 ms with kube-apiserver)."""
    nodelay: list[int] = []
    wrap = ssl.SSLContext.wrap_socket

    def spy(self: ssl.SSLContext, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        if not kwargs.get("server_side"):  # not the fake's end
            nodelay.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        return wrap(self, sock, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "wrap_socket", spy)
    client = load_kubeconfig(fake_k8s.write_kubeconfig("token"))
    client.get_pod("default", "wireguard-pod")
    client.get_secret("default", "wireguard-config")
    assert len(nodelay) == 2 and all(nodelay)


# --- TLS --------------------------------------------------------------------------------------------


def test_wrong_ca_is_a_configuration_error(fake_k8s: FakeKubernetes) -> None:
    path = fake_k8s.write_kubeconfig("token", ca=make_ca("some-other-cluster").cert)
    client = load_kubeconfig(path)
    error = _fails(lambda: client.get_pod("default", "wireguard-pod"), fake_k8s)
    assert error.cni_code == INVALID_NETWORK_CONFIG
    assert f"TLS verification of the API server {fake_k8s.url} failed" in error.message
    assert f"the certificate authority in kubeconfig {path} does not match" in error.message
    assert fake_k8s.seen == []  # nothing was sent, least of all the token


def test_server_name_is_checked(fake_k8s: FakeKubernetes) -> None:
    base = fake_k8s.write_kubeconfig("schu").read_text()
    right = base.replace("    server:", "    tls-server-name: localhost\n    server:")
    assert load_kubeconfig(fake_k8s.write("right/kubeconfig", right)).get_pod("default", "wireguard-pod")
    wrong = base.replace("    server:", "    tls-server-name: api.example.org\n    server:")
    client = load_kubeconfig(fake_k8s.write("wrong/kubeconfig", wrong))
    error = _fails(lambda: client.get_pod("default", "wireguard-pod"), fake_k8s)
    assert error.cni_code == INVALID_NETWORK_CONFIG and "TLS verification" in error.message


def test_insecure_skip_tls_verify(fake_k8s: FakeKubernetes) -> None:
    text = f"""\
        apiVersion: v1
        kind: Config
        clusters:
        - name: c
          cluster:
            server: {fake_k8s.url}
            insecure-skip-tls-verify: true
        users:
        - name: u
          user:
            token: {fake_k8s.token}
        contexts:
        - name: x
          context:
            cluster: c
            user: u
        current-context: x
        """
    assert load_kubeconfig(_kubeconfig(fake_k8s, text)).get_pod("default", "wireguard-pod")["kind"] == "Pod"
    both = text.replace(
        "insecure-skip-tls-verify: true",
        f"insecure-skip-tls-verify: true\n            certificate-authority-data: {_ca_b64(fake_k8s)}",
    )
    error = _fails(lambda: load_kubeconfig(_kubeconfig(fake_k8s, both, "both")), fake_k8s)
    assert error.cni_code == INVALID_NETWORK_CONFIG and "insecure-skip-tls-verify" in error.message


def test_client_certificate_from_another_ca_is_rejected(fake_k8s: FakeKubernetes) -> None:
    fake_k8s.client = issue(make_ca("not-the-cluster"), "pywg-cni-node")
    client = load_kubeconfig(fake_k8s.write_kubeconfig("client-cert-data"))
    error = _fails(lambda: client.get_pod("default", "wireguard-pod"), fake_k8s)
    assert error.cni_code == INVALID_NETWORK_CONFIG
    assert "rejected the client certificate in the credentials in kubeconfig" in error.message


def test_lost_tls_alert_after_a_client_certificate(
    fake_k8s: FakeKubernetes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Servers that close at once after rejecting a certificate can lose the alert: say what it may be."""

    def closed(*args: object) -> None:
        raise ssl.SSLEOFError(8, "EOF occurred in violation of protocol")

    monkeypatch.setattr(ApiClient, "_roundtrip", closed)
    client = load_kubeconfig(fake_k8s.write_kubeconfig("client-cert-files"))
    error = _fails(lambda: client.get_pod("default", "wireguard-pod"), fake_k8s)
    assert error.cni_code == TRY_AGAIN_LATER
    assert (
        "closed the connection twice" in error.message and "rejecting the client certificate" in error.message
    )
    token_client = load_kubeconfig(fake_k8s.write_kubeconfig("token"))
    assert "client certificate" not in _fails(lambda: token_client.get_pod("default", "p")).message


def test_a_server_that_does_not_speak_tls(fake_k8s: FakeKubernetes) -> None:
    listener = socket.create_server(("127.0.0.1", 0))

    def answer_in_plain_http() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    thread = threading.Thread(target=answer_in_plain_http, daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{listener.getsockname()[1]}"
    try:
        client = load_kubeconfig(fake_k8s.write_kubeconfig("token", server=url))
        error = _fails(lambda: client.get_pod("default", "wireguard-pod"), fake_k8s)
    finally:
        thread.join(timeout=5)
        listener.close()
    assert error.cni_code == INVALID_NETWORK_CONFIG and "does not speak TLS" in error.message


# --- names, kubeconfig problems ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../kube-system/secrets/x", "a/b", "Wireguard", "", "x" * 254, "a?b"])
def test_names_are_checked_before_any_request(fake_k8s: FakeKubernetes, name: str) -> None:
    client = load_kubeconfig(fake_k8s.write_kubeconfig("token"))
    error = _fails(lambda: client.get_secret("default", name), fake_k8s)
    assert error.cni_code == INVALID_NETWORK_CONFIG and "not a valid Kubernetes name" in error.message
    assert _fails(lambda: client.get_pod(name, "p")).cni_code == INVALID_NETWORK_CONFIG
    assert fake_k8s.seen == []


def test_missing_kubeconfig(tmp_path: Path) -> None:
    error = _fails(lambda: load_kubeconfig(tmp_path / "nope.kubeconfig"))
    assert error.cni_code == IO_FAILURE and "nope.kubeconfig" in error.message


def _minimal(fake: FakeKubernetes, cluster: str = "", user: str = "", top: str = "") -> str:
    return (
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n"
        f"    server: {fake.url}\n    certificate-authority-data: {_ca_b64(fake)}\n{cluster}"
        f"users:\n- name: u\n  user:\n    token: {fake.token}\n{user}"
        f"contexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n{top or 'current-context: x'}\n"
    )


@pytest.mark.parametrize(
    ("cluster", "user", "top", "code", "fragment"),
    [
        ("", "    auth-provider:\n      name: gcp\n", "", INVALID_NETWORK_CONFIG, "auth-provider"),
        ("", "    username: admin\n    password: hunter2hunter2\n", "", INVALID_NETWORK_CONFIG, "basic auth"),
        ("", "", "current-context: other", INVALID_NETWORK_CONFIG, "has no context 'other'"),
        ("    proxy-url: socks5://proxy:1080\n", "", "", INVALID_NETWORK_CONFIG, "http:// proxies only"),
        ("", "    client-key-data: QUJD\n", "", INVALID_NETWORK_CONFIG, "without its certificate"),
        (
            "",
            "    client-certificate-data: QUJD\n    client-key-data: QUJD\n",
            "",
            INVALID_NETWORK_CONFIG,
            "unusable",
        ),
        ("    insecure-skip-tls-verify: maybe\n", "", "", INVALID_NETWORK_CONFIG, "true or false"),
    ],
)
def test_kubeconfig_problems(
    fake_k8s: FakeKubernetes, cluster: str, user: str, top: str, code: int, fragment: str
) -> None:
    path = fake_k8s.write("bad/kubeconfig", _minimal(fake_k8s, cluster, user, top))
    error = _fails(lambda: load_kubeconfig(path), fake_k8s, "hunter2hunter2")
    assert error.cni_code == code
    assert fragment in error.message and str(path) in error.message


@pytest.mark.parametrize(
    ("old", "new", "code", "fragment"),
    [
        ("    cluster: c\n    user", "    cluster: nowhere\n    user", INVALID_NETWORK_CONFIG, "'nowhere'"),
        ("    user: u\n", "    user: nobody\n", INVALID_NETWORK_CONFIG, "user 'nobody'"),
        ("    server: https", "    zerver: https", INVALID_NETWORK_CONFIG, "has no server"),
        ("server: https://", "server: http://", INVALID_NETWORK_CONFIG, "not an https:// URL"),
        ("certificate-authority-data: ", "certificate-authority-data: !!", DECODING_FAILURE, "line 7"),
        (
            "certificate-authority-data: ",
            "certificate-authority-data: A=",
            DECODING_FAILURE,
            "not valid base64",
        ),
        (
            "certificate-authority-data: ",
            "certificate-authority-data: QUJD",
            INVALID_NETWORK_CONFIG,
            "no usable CA certificate",
        ),
        (
            "certificate-authority-data: ",
            "certificate-authority: missing-ca.crt\n    x: ",
            IO_FAILURE,
            "missing-ca.crt",
        ),
        ("kind: Config", "kind: Pod", INVALID_NETWORK_CONFIG, "not Config"),
    ],
)
def test_kubeconfig_field_problems(
    fake_k8s: FakeKubernetes, old: str, new: str, code: int, fragment: str
) -> None:
    text = _minimal(fake_k8s)
    assert old in text
    path = fake_k8s.write("bad/kubeconfig", text.replace(old, new, 1))
    error = _fails(lambda: load_kubeconfig(path), fake_k8s)
    assert error.cni_code == code and fragment in error.message


@pytest.mark.parametrize(
    "server", ["https://", "https://bad host:6443", "https://[::1:6443", "https://a:b:c", "https://h:99999"]
)
def test_unusable_server_urls(fake_k8s: FakeKubernetes, server: str) -> None:
    text = _minimal(fake_k8s).replace(f"server: {fake_k8s.url}", f"server: '{server}'")
    path = fake_k8s.write("s/kubeconfig", text)
    error = _fails(lambda: load_kubeconfig(path), fake_k8s)
    assert error.cni_code == INVALID_NETWORK_CONFIG and f"(for kubeconfig {path})" in error.message


def test_ipv6_and_path_prefix_servers_are_understood(fake_k8s: FakeKubernetes) -> None:
    text = _minimal(fake_k8s).replace(
        f"server: {fake_k8s.url}", "server: https://[fd00::1]:6443/k8s/clusters/c-1/"
    )
    client = load_kubeconfig(fake_k8s.write("v6/kubeconfig", text))
    assert (client.host, client.port, client.prefix) == ("fd00::1", 6443, "/k8s/clusters/c-1")
    assert client.server == "https://[fd00::1]:6443/k8s/clusters/c-1"


@pytest.mark.parametrize(
    "token_line", ['    token: "eyJ.with space.sig"', '    token: "eyJ.with\\nbreak.sig"']
)
def test_a_token_that_cannot_be_a_header(fake_k8s: FakeKubernetes, token_line: str) -> None:
    text = _minimal(fake_k8s).replace(f"    token: {fake_k8s.token}", token_line)
    error = _fails(
        lambda: load_kubeconfig(fake_k8s.write("t/kubeconfig", text)), fake_k8s, "with space.sig", "break.sig"
    )
    assert error.cni_code == INVALID_NETWORK_CONFIG and "bearer token" in error.message


def test_unreadable_token_file(fake_k8s: FakeKubernetes) -> None:
    path = fake_k8s.write_kubeconfig("token-file")
    (path.parent / "token").unlink()
    client = load_kubeconfig(path)
    error = _fails(lambda: client.get_pod("default", "wireguard-pod"), fake_k8s)
    assert error.cni_code == IO_FAILURE and str(path.parent / "token") in error.message


def test_yaml_errors_name_the_line_never_the_value(fake_k8s: FakeKubernetes) -> None:
    text = _minimal(fake_k8s).replace(f"token: {fake_k8s.token}", f'token: "{fake_k8s.token}')
    path = fake_k8s.write("y/kubeconfig", text)
    error = _fails(lambda: load_kubeconfig(path), fake_k8s)
    assert error.cni_code == DECODING_FAILURE
    assert error.message.startswith(
        f"kubeconfig {path} is not valid YAML: while scanning a quoted scalar at line 11, column 12, found "
        "unexpected end of stream at line "
    )


# --- Secrets -------------------------------------------------------------------------------------------


def _secret(data: dict[str, bytes | str] | None = None, **extra: Any) -> dict[str, Any]:
    encoded = {
        k: base64.b64encode(v.encode() if isinstance(v, str) else v).decode() for k, v in (data or {}).items()
    }
    return {
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": {"name": "s"},
        "type": "Opaque",
        "data": encoded,
        **extra,
    }


def test_secret_config_json_wins() -> None:
    secret = _secret({"README": "not this", "config.json": EXAMPLE_CONFIG_JSON, "wg0.conf": WG_QUICK})
    assert secret_config_text(secret, "secret default/s") == EXAMPLE_CONFIG_JSON


def test_secret_with_a_single_other_key() -> None:
    assert (
        secret_config_text(_secret({"wireguard": EXAMPLE_CONFIG_JSON}), "secret default/s")
        == EXAMPLE_CONFIG_JSON
    )


def test_secret_with_one_wg_quick_key_among_others() -> None:
    secret = _secret({"notes.txt": "hello", "wg0.conf": WG_QUICK, "owner": "team-a"})
    assert secret_config_text(secret, "secret default/s") == WG_QUICK


def test_secret_string_data_wins_over_data() -> None:
    secret = _secret({"config.json": "{}"}, stringData={"config.json": EXAMPLE_CONFIG_JSON})
    assert secret_config_text(secret, "secret default/s") == EXAMPLE_CONFIG_JSON
    assert secret_config_text({"stringData": {"wg0.conf": WG_QUICK}}, "secret default/s") == WG_QUICK


def test_secret_without_a_usable_key() -> None:
    secret = _secret({"username": "hunter2hunter2", "password": PRIVATE_KEY})
    error = _fails(
        lambda: secret_config_text(secret, "secret default/wireguard-config"), None, "hunter2hunter2"
    )
    assert error.cni_code == INVALID_NETWORK_CONFIG
    assert error.message.startswith("secret default/wireguard-config has no key config.json")
    assert "(password, username)" in error.message


def test_secret_with_two_wg_quick_keys() -> None:
    secret = _secret({"a.conf": WG_QUICK, "b.conf": WG_QUICK})
    error = _fails(lambda: secret_config_text(secret, "secret default/s"))
    assert error.cni_code == INVALID_NETWORK_CONFIG and "keys a.conf, b.conf" in error.message


def test_empty_secret() -> None:
    error = _fails(lambda: secret_config_text(_secret(), "secret default/s"))
    assert error.cni_code == INVALID_NETWORK_CONFIG and "has no data" in error.message


@pytest.mark.parametrize("value", ["not base64!", "QUJ", 17])
def test_secret_bad_base64(value: object) -> None:
    secret = {"kind": "Secret", "data": {"config.json": value}}
    error = _fails(lambda: secret_config_text(secret, "secret default/s"))
    assert error.cni_code == DECODING_FAILURE
    assert error.message == "secret default/s: the value of key 'config.json' is not valid base64"


def test_secret_not_utf8() -> None:
    error = _fails(lambda: secret_config_text(_secret({"config.json": b"\xff\xfe\x00"}), "secret default/s"))
    assert error.cni_code == DECODING_FAILURE and "not UTF-8" in error.message


def test_secret_base64_may_be_wrapped() -> None:
    wrapped = base64.encodebytes(EXAMPLE_CONFIG_JSON.encode()).decode()  # 76-column lines
    assert "\n" in wrapped.strip()
    assert secret_config_text({"data": {"config.json": wrapped}}, "secret default/s") == EXAMPLE_CONFIG_JSON
