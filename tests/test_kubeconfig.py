"""Kubeconfigs as kubectl users write them (cni/kubeconfig.py), against the fake API (tests/k8s_fake.py).

YAML as kubectl reads it (flow style, anchors, aliases, merge keys, comments, text scalars) and the
bounds against hostile files; tls-server-name with a server certificate for another name. No message
may carry a token or a key.
"""

from __future__ import annotations

import base64
import datetime
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cni.k8s import KubernetesError
from cni.kubeconfig import MAX_KUBECONFIG_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES, load_kubeconfig
from cni.spec import DECODING_FAILURE, INVALID_NETWORK_CONFIG
from tests.k8s_fake import DEFAULT_USER, FakeKubernetes, Pem

pytest_plugins = ["tests.k8s_fake"]

LEAKY = "eyJhbGciOi.SECRET-IN-THE-DOCUMENT.c2ln"  # text that must never be shown


def _fails(call: Callable[[], object], *secrets: str) -> KubernetesError:
    with pytest.raises(KubernetesError) as info:
        call()
    text = f"{info.value} {info.value!r}"
    for secret in secrets:
        assert secret not in text, "a credential leaked into an error message"
    return info.value


def _ca_b64(fake: FakeKubernetes) -> str:
    return base64.b64encode(fake.ca.cert).decode()


def _write(fake: FakeKubernetes, text: str, name: str = "custom") -> Path:
    return fake.write(f"{name}/kubeconfig", textwrap.dedent(text))


def _get(path: Path) -> dict[str, Any]:
    return load_kubeconfig(path).get_pod("default", "wireguard-pod")


# --- YAML as kubectl reads it -------------------------------------------------------------------


def test_flow_style_context_from_the_issue(fake_k8s: FakeKubernetes) -> None:
    """The old YAML subset refused this: "flow collections must be written as JSON"."""
    path = _write(
        fake_k8s,
        f"""\
        apiVersion: v1
        kind: Config
        clusters:
        - name: c
          cluster: {{server: "{fake_k8s.url}", certificate-authority-data: {_ca_b64(fake_k8s)}}}
        users:
        - {{name: u, user: {{token: {fake_k8s.token}}}}}
        contexts:
        - name: x
          context: {{cluster: c, user: u}}
        current-context: x
        """,
    )
    assert _get(path)["metadata"]["name"] == "wireguard-pod"


def test_anchors_aliases_merge_keys_and_comments(fake_k8s: FakeKubernetes) -> None:
    path = _write(
        fake_k8s,
        f"""\
        # Two contexts share one cluster; the user extends a template with a merge key.
        apiVersion: v1
        kind: Config
        clusters:
        - name: c
          cluster: &cluster
            server: {fake_k8s.url}  # the fake
            certificate-authority-data: {_ca_b64(fake_k8s)}
        - name: c-copy
          cluster: *cluster
        users:
        - name: template
          user: &base
            token: not-this-one
        - name: u
          user:
            <<: *base
            token: {fake_k8s.token}
        contexts:
        - name: x
          context: &ctx {{cluster: c-copy, user: u}}
        current-context: x
        """,
    )
    assert _get(path)["kind"] == "Pod"
    assert fake_k8s.seen[-1].user == DEFAULT_USER


def test_plain_scalars_stay_text_as_kubectl_reads_them(fake_k8s: FakeKubernetes) -> None:
    """A token of digits, a namespace that looks like a float: text, as kubectl decodes string fields."""
    fake_k8s.tokens["0123456789"] = DEFAULT_USER
    path = _write(
        fake_k8s,
        f"""\
        clusters: [{{name: c, cluster: {{server: "{fake_k8s.url}",
                                        certificate-authority-data: {_ca_b64(fake_k8s)}}}}}]
        users: [{{name: u, user: {{token: 0123456789}}}}]
        contexts: [{{name: x, context: {{cluster: c, user: u, namespace: 1e3}}}}]
        current-context: x
        """,
    )
    client = load_kubeconfig(path)
    assert client.namespace == "1e3"
    assert client.get_pod("default", "wireguard-pod")["kind"] == "Pod"


def test_crlf_line_ends_and_a_byte_order_mark(fake_k8s: FakeKubernetes) -> None:
    text = fake_k8s.write_kubeconfig("schu").read_text()
    path = fake_k8s.write("crlf/kubeconfig", ("\ufeff" + text.replace("\n", "\r\n")).encode())
    assert _get(path)["kind"] == "Pod"


# --- hostile YAML ---------------------------------------------------------------------------------


def _laughs(levels: int) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for n in range(1, levels):
        lines.append(f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (_laughs(9), f"more than {MAX_YAML_NODES} nodes with its aliases expanded at line 5"),
        ("clusters: " + "[" * 100_000 + "]" * 100_000, f"collections nested deeper than {MAX_YAML_DEPTH}"),
        ("a: &deep " + "[" * 90 + "]" * 90 + "\nb: " + "[" * 20 + "*deep" + "]" * 20, "an alias nests"),
        ("a: &loop [x, *loop]\n", "an alias inside the node it names at line 1, column 14"),
        ("# " + "x" * MAX_KUBECONFIG_BYTES + "\n", "over 4 MiB"),
        ("a: 1\n---\nb: 2\n", "single document in the stream at line 1, column 1, but found another"),
    ],
    ids=["billion-laughs", "deep", "deep-through-an-alias", "recursive", "huge", "two-documents"],
)
def test_hostile_yaml_is_refused_before_it_costs(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(text)
    error = _fails(lambda: load_kubeconfig(path))
    assert error.cni_code == DECODING_FAILURE
    assert str(path) in error.message and fragment in error.message


def test_a_document_just_under_the_bounds_loads(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(_laughs(4) + "x: " + "[" * (MAX_YAML_DEPTH - 1) + "]" * (MAX_YAML_DEPTH - 1) + "\n")
    error = _fails(lambda: load_kubeconfig(path))  # valid YAML; only the kubeconfig is wrong
    assert error.cni_code == INVALID_NETWORK_CONFIG and "has no current-context" in error.message


@pytest.mark.parametrize(
    "text",
    [
        f"token: *{LEAKY}\n",
        f"token: !{LEAKY} x\n",
        f"token: &{LEAKY} x\nother: &{LEAKY} y\nz: [\n",
        f'token: "{LEAKY}\n',
        f"token:\n  - {LEAKY}\n {LEAKY}: x\n",
        f"? [{LEAKY}]\n: x\n",
    ],
    ids=["undefined-alias", "unknown-tag", "anchor", "unclosed-quote", "bad-indent", "unhashable-key"],
)
def test_yaml_errors_never_quote_the_document(tmp_path: Path, text: str) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(text)
    error = _fails(lambda: load_kubeconfig(path), LEAKY, "SECRET-IN")
    assert error.cni_code == DECODING_FAILURE
    assert error.message.startswith(f"kubeconfig {path} is not valid YAML: ") and " at line " in error.message


# --- tls-server-name ---------------------------------------------------------------------------------


def _server_cert_for(ca: Pem, name: str) -> Pem:
    """A server certificate for `name` only: not for 127.0.0.1, where the fake listens."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert)
    ca_key = serialization.load_pem_private_key(ca.key, None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Pem(cert.public_bytes(serialization.Encoding.PEM), private)


@pytest.fixture
def renamed_fake() -> Iterator[FakeKubernetes]:
    """The fake API server with a certificate for kube.internal.example, as behind a load balancer."""
    fake = FakeKubernetes()
    fake.server_pem = _server_cert_for(fake.ca, "kube.internal.example")
    fake.start()
    fake.add_pod("default", "wireguard-pod")
    try:
        yield fake
    finally:
        fake.stop()


def test_tls_server_name_for_a_certificate_of_another_name(renamed_fake: FakeKubernetes) -> None:
    base = renamed_fake.write_kubeconfig("schu").read_text()
    named = base.replace("    server:", "    tls-server-name: kube.internal.example\n    server:")
    assert _get(renamed_fake.write("named/kubeconfig", named))["kind"] == "Pod"
    assert renamed_fake.seen[-1].user == DEFAULT_USER

    unnamed = load_kubeconfig(renamed_fake.write("unnamed/kubeconfig", base))
    error = _fails(lambda: unnamed.get_pod("default", "wireguard-pod"), renamed_fake.token)
    assert error.cni_code == INVALID_NETWORK_CONFIG and "TLS verification" in error.message
    assert len(renamed_fake.seen) == 1  # nothing sent to a server that could not prove its name
