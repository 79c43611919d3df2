"""Kubeconfigs as kubectl users write them (cni/kubeconfig.py), against the fake API
(tests/support/k8s_fake.py).

YAML as kubectl reads it (flow style, anchors, aliases, merge keys, comments, text scalars) and the
bounds against hostile files; exec credential plugins (v1 and v1beta1: run as kubectl runs them, timed
out, failing, printing nonsense, expiring, refused by the API server); tls-server-name with a server
certificate for another name; proxy-url through an HTTP CONNECT proxy. No message may carry a token,
a key, a proxy password or what a plugin printed.
"""

from __future__ import annotations

import base64
import datetime
import json
import socket
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cni import kubeconfig
from cni.k8s import KubernetesError
from cni.kubeconfig import MAX_KUBECONFIG_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES, load_kubeconfig
from cni.spec import DECODING_FAILURE, INVALID_NETWORK_CONFIG, TRY_AGAIN_LATER
from tests.support.k8s_fake import DEFAULT_USER, FakeKubernetes, Pem

pytest_plugins = ["tests.support.k8s_fake"]

V1 = "client.authentication.k8s.io/v1"
V1BETA1 = "client.authentication.k8s.io/v1beta1"
LEAKY = "eyJhbGciOi.PLUGIN-PRINTED-SECRET.c2ln"  # what a plugin prints that must never be shown


def _fails(call: Callable[[], object], *secrets: str) -> KubernetesError:
    with pytest.raises(KubernetesError) as info:
        call()
    text = f"{info.value} {info.value!r}"
    for secret in secrets:
        assert secret not in text, "a credential or what a plugin printed leaked into an error message"
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


KUBECTL_GKE = """\
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: {ca}
    server: {server}
  name: gke_proj_europe-west1_c1
contexts:
- context:
    cluster: gke_proj_europe-west1_c1
    user: gke_proj_europe-west1_c1
  name: gke_proj_europe-west1_c1
current-context: gke_proj_europe-west1_c1
kind: Config
preferences: {{}}
users:
- name: gke_proj_europe-west1_c1
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      args: null
      command: gke-gcloud-auth-plugin
      env: null
      installHint: Install gke-gcloud-auth-plugin for use with kubectl by following
        https://cloud.google.com/kubernetes-engine/docs/how-to/cluster-access-for-kubectl#install_plugin
      interactiveMode: IfAvailable
      provideClusterInfo: true
"""

KUBECTL_EKS = """\
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: {ca}
    server: {server}
  name: arn:aws:eks:eu-west-1:123456789012:cluster/c1
contexts:
- context:
    cluster: arn:aws:eks:eu-west-1:123456789012:cluster/c1
    user: arn:aws:eks:eu-west-1:123456789012:cluster/c1
  name: arn:aws:eks:eu-west-1:123456789012:cluster/c1
current-context: arn:aws:eks:eu-west-1:123456789012:cluster/c1
kind: Config
preferences: {{}}
users:
- name: arn:aws:eks:eu-west-1:123456789012:cluster/c1
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      args:
      - --region
      - eu-west-1
      - eks
      - get-token
      - --cluster-name
      - c1
      - --output
      - json
      command: aws
      env:
      - name: AWS_PROFILE
        value: prod
"""


def test_kubectl_gke_and_eks_kubeconfigs_set_up_their_plugins(fake_k8s: FakeKubernetes) -> None:
    fill = {"ca": _ca_b64(fake_k8s), "server": fake_k8s.url}
    gke = load_kubeconfig(fake_k8s.write("gke/kubeconfig", KUBECTL_GKE.format(**fill)))
    plugin = gke.credential_source.plugin  # type: ignore[union-attr]
    assert (plugin.command, plugin.args, plugin.env, plugin.api_version) == (
        "gke-gcloud-auth-plugin",
        (),
        (),
        V1BETA1,
    )
    assert plugin.install_hint == (
        "Install gke-gcloud-auth-plugin for use with kubectl by following "
        "https://cloud.google.com/kubernetes-engine/docs/how-to/cluster-access-for-kubectl#install_plugin"
    )
    assert json.loads(plugin.cluster_info) == {
        "server": fake_k8s.url,
        "certificate-authority-data": fill["ca"],
    }

    eks = load_kubeconfig(fake_k8s.write("eks/kubeconfig", KUBECTL_EKS.format(**fill)))
    plugin = eks.credential_source.plugin  # type: ignore[union-attr]
    assert plugin.args == (
        "--region",
        "eu-west-1",
        "eks",
        "get-token",
        "--cluster-name",
        "c1",
        "--output",
        "json",
    )
    assert plugin.env == (("AWS_PROFILE", "prod"),) and plugin.cluster_info == ""


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
    error = _fails(lambda: load_kubeconfig(path), LEAKY, "PLUGIN-PRINTED")
    assert error.cni_code == DECODING_FAILURE
    assert error.message.startswith(f"kubeconfig {path} is not valid YAML: ") and " at line " in error.message


# --- exec credential plugins -----------------------------------------------------------------------

PLUGIN_SCRIPT = """\
#!{python}
import json, os, subprocess, sys, time

state = os.environ["PLUGIN_STATE"]
runs = len([n for n in os.listdir(state) if n.startswith("run-")])
with open(os.path.join(state, "answers.json")) as f:
    answers = json.load(f)
answer = answers[min(runs, len(answers) - 1)]
seen = {{
    "info": json.loads(os.environ.get("KUBERNETES_EXEC_INFO", "null")),
    "greeting": os.environ.get("GREETING"),
    "stdin_is_tty": os.isatty(0),
    "stdin": sys.stdin.read(),
    "pid": os.getpid(),
}}
if answer.get("sleep"):
    seen["child"] = subprocess.Popen(["sleep", "60"]).pid
with open(os.path.join(state, f"run-{{runs}}.json"), "w") as f:
    json.dump(seen, f)
sys.stderr.write(answer.get("stderr", ""))
time.sleep(answer.get("sleep", 0))
sys.stdout.write(answer["raw"] if "raw" in answer else json.dumps(answer["print"]))
sys.exit(answer.get("exit", 0))
"""


class Plugin:
    """An exec credential plugin (a Python script) whose answers a test sets, and what it saw."""

    def __init__(self, fake: FakeKubernetes, name: str) -> None:
        self.fake = fake
        self.directory = fake.workdir / name
        (self.directory / "bin").mkdir(parents=True)
        self.script = self.directory / "bin" / "credential-plugin"
        self.script.write_text(PLUGIN_SCRIPT.format(python=sys.executable))
        self.script.chmod(0o755)

    def answers(self, *answers: dict[str, Any]) -> Plugin:
        (self.directory / "answers.json").write_text(json.dumps(answers))
        return self

    def runs(self) -> list[dict[str, Any]]:
        names = sorted(self.directory.glob("run-*.json"), key=lambda p: int(p.stem.split("-")[1]))
        return [json.loads(p.read_text()) for p in names]

    def kubeconfig(self, api_version: str = V1, user: dict[str, Any] | None = None, **exec_: Any) -> Path:
        """A kubeconfig beside bin/, naming the plugin relative to it (as kubectl resolves ./bin/...).

        `exec_` adds or replaces exec settings; None removes one.
        """
        settings = {
            "apiVersion": api_version,
            "command": "./bin/credential-plugin",
            "args": [],
            "env": [
                {"name": "PLUGIN_STATE", "value": str(self.directory)},
                {"name": "GREETING", "value": "hello"},
            ],
            **({"interactiveMode": "Never"} if api_version == V1 else {}),
            **exec_,
        }
        extension = {"audience": "pywg", "region": ["eu", "us"]}
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "c",
                    "cluster": {
                        "server": self.fake.url,
                        "certificate-authority-data": _ca_b64(self.fake),
                        "extensions": [{"name": "client.authentication.k8s.io/exec", "extension": extension}],
                    },
                }
            ],
            "users": [
                {
                    "name": "u",
                    "user": {
                        **(user or {}),
                        "exec": {key: value for key, value in settings.items() if value is not None},
                    },
                }
            ],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }
        return self.fake.write("kubeconfig", yaml.safe_dump(doc), self.directory)


def credential(api_version: str = V1, **status: Any) -> dict[str, Any]:
    return {"print": {"apiVersion": api_version, "kind": "ExecCredential", "status": status}}


@pytest.fixture
def plugin(fake_k8s: FakeKubernetes, request: pytest.FixtureRequest) -> Plugin:
    return Plugin(fake_k8s, f"plugin-{request.node.name}")


@pytest.mark.parametrize("api_version", [V1, V1BETA1])
def test_exec_plugin_token_as_kubectl_runs_it(
    fake_k8s: FakeKubernetes, plugin: Plugin, api_version: str
) -> None:
    plugin.answers(credential(api_version, token=fake_k8s.token))
    path = plugin.kubeconfig(api_version)  # v1beta1 without interactiveMode, as kubectl allows
    assert _get(path)["kind"] == "Pod"
    assert fake_k8s.seen[-1].user == DEFAULT_USER and fake_k8s.seen[-1].bearer
    [run] = plugin.runs()
    assert run["info"] == {
        "apiVersion": api_version,
        "kind": "ExecCredential",
        "spec": {"interactive": False},
    }
    assert run["greeting"] == "hello" and not run["stdin_is_tty"] and run["stdin"] == ""
    # No expirationTimestamp: kept until the API server refuses it, also by later clients (later ADDs).
    load_kubeconfig(path).get_secret("default", "wireguard-config")
    assert len(plugin.runs()) == 1


def test_exec_plugin_gets_the_cluster_info_it_asks_for(fake_k8s: FakeKubernetes, plugin: Plugin) -> None:
    plugin.answers(credential(token=fake_k8s.token))
    _get(plugin.kubeconfig(interactiveMode="IfAvailable", provideClusterInfo=True))
    assert plugin.runs()[0]["info"]["spec"] == {
        "interactive": False,
        "cluster": {
            "server": fake_k8s.url,
            "certificate-authority-data": _ca_b64(fake_k8s),
            "config": {"audience": "pywg", "region": ["eu", "us"]},
        },
    }


def test_exec_plugin_client_certificate(fake_k8s: FakeKubernetes, plugin: Plugin) -> None:
    cert, key = fake_k8s.client.cert.decode(), fake_k8s.client.key.decode()
    plugin.answers(credential(clientCertificateData=cert, clientKeyData=key))
    assert _get(plugin.kubeconfig())["kind"] == "Pod"
    assert fake_k8s.seen[-1].user == "pywg-cni-node" and not fake_k8s.seen[-1].bearer


def _stamp(seconds_from_now: float) -> str:
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds_from_now)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_exec_expiration_timestamp_is_honoured(fake_k8s: FakeKubernetes, plugin: Plugin) -> None:
    plugin.answers(
        credential(token=fake_k8s.token, expirationTimestamp=_stamp(-60)),  # expired when it arrives
        credential(token=fake_k8s.token, expirationTimestamp=_stamp(3600)),
    )
    client = load_kubeconfig(plugin.kubeconfig())
    for _ in range(3):
        client.get_pod("default", "wireguard-pod")
    assert len(plugin.runs()) == 2  # the expired credential was used once and replaced; the next is kept


def test_exec_401_asks_the_plugin_again_once(fake_k8s: FakeKubernetes, plugin: Plugin) -> None:
    plugin.answers(credential(token="eyJ.revoked-token.c2ln"), credential(token=fake_k8s.token))
    assert _get(plugin.kubeconfig())["kind"] == "Pod"
    assert len(plugin.runs()) == 2 and [s.user for s in fake_k8s.seen] == ["", DEFAULT_USER]

    stale = Plugin(fake_k8s, "stale").answers(credential(token="eyJ.revoked-token.c2ln"))
    error = _fails(lambda: _get(stale.kubeconfig()), "eyJ.revoked-token.c2ln")
    assert error.cni_code == INVALID_NETWORK_CONFIG and "(401 Unauthorized)" in error.message
    assert len(stale.runs()) == 2  # the same token again: no second retry


def test_a_token_wins_over_the_exec_plugin(fake_k8s: FakeKubernetes, plugin: Plugin) -> None:
    plugin.answers(credential(token="eyJ.never-asked.c2ln"))
    assert _get(plugin.kubeconfig(user={"token": fake_k8s.token}))["kind"] == "Pod"
    assert plugin.runs() == []


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_exec_plugin_that_hangs_is_killed_with_what_it_started(
    fake_k8s: FakeKubernetes, plugin: Plugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kubeconfig, "EXEC_TIMEOUT", 0.5)
    plugin.answers({**credential(token=fake_k8s.token), "sleep": 30})
    start = time.monotonic()
    error = _fails(lambda: _get(plugin.kubeconfig()))
    assert time.monotonic() - start < 20
    assert error.cni_code == TRY_AGAIN_LATER
    assert "credential-plugin did not print a credential within 0.5 s (killed); try again later" in str(error)
    [run] = plugin.runs()
    deadline = time.monotonic() + 10
    while not (_gone(run["pid"]) and _gone(run["child"])) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(run["pid"]) and _gone(run["child"])


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        ({"raw": f"token={LEAKY}"}, "something that is not JSON"),
        ({"raw": json.dumps([LEAKY])}, "JSON that is not an ExecCredential"),
        (credential(V1BETA1, token=LEAKY), f"of another apiVersion than the kubeconfig's {V1}"),
        ({"print": {"apiVersion": V1, "kind": "ExecCredential", "token": LEAKY}}, "without a status"),
        (credential(token=LEAKY + " x"), "a token with characters a bearer token cannot have"),
        (credential(token=["x", LEAKY]), "is not text"),
        (credential(), "neither a token nor a client certificate"),
        (credential(clientCertificateData=LEAKY), "a client certificate without its key"),
        (credential(token=LEAKY, expirationTimestamp="tomorrow"), "not an RFC 3339 time"),
        (credential(token=LEAKY, expirationTimestamp="2030-01-01T00:00:00"), "not an RFC 3339 time"),
        (credential(clientCertificateData=LEAKY, clientKeyData=LEAKY), "not PEM"),
        ({"raw": " " * (1 << 20) + "{}"}, "over 1 MiB"),
    ],
    ids=[
        "not-json",
        "not-an-object",
        "other-api-version",
        "no-status",
        "token-with-space",
        "token-not-text",
        "no-credential",
        "cert-without-key",
        "bad-expiry",
        "expiry-without-zone",
        "cert-not-pem",
        "too-long",
    ],
)
def test_exec_plugin_output_is_checked(
    fake_k8s: FakeKubernetes, plugin: Plugin, answer: dict[str, Any], fragment: str
) -> None:
    plugin.answers(answer)
    error = _fails(lambda: _get(plugin.kubeconfig()), LEAKY, "PLUGIN-PRINTED")
    assert error.cni_code == INVALID_NETWORK_CONFIG and fragment in error.message
    assert "the exec credential plugin of user 'u' in kubeconfig" in error.message
    assert fake_k8s.seen == []


def test_exec_plugin_failing(fake_k8s: FakeKubernetes, plugin: Plugin) -> None:
    plugin.answers({"raw": "", "exit": 3, "stderr": f"no profile; last token {LEAKY}\n"})
    error = _fails(lambda: _get(plugin.kubeconfig()), LEAKY, "PLUGIN-PRINTED")
    assert error.cni_code == INVALID_NETWORK_CONFIG
    assert "credential-plugin exited with status 3 (its standard error is in our log)" in error.message


@pytest.mark.parametrize(
    ("api_version", "settings", "fragment"),
    [
        ("client.authentication.k8s.io/v1alpha1", {}, "(removed in Kubernetes 1.24) is not one of"),
        (V1, {"interactiveMode": None}, f"exec needs interactiveMode with apiVersion {V1}"),
        (V1, {"interactiveMode": "Always"}, "wants a terminal (interactiveMode Always)"),
        (V1, {"interactiveMode": "Sometimes"}, "interactiveMode must be Never, IfAvailable or Always"),
        (V1, {"provideClusterInfo": "perhaps"}, "provideClusterInfo must be true or false"),
        (V1, {"command": None}, "exec has no command"),
        (V1, {"args": {"a": "b"}}, "exec args must be a list of strings"),
        (V1, {"env": [{"value": "hello"}]}, "exec env[0] must be a mapping with a name and a value"),
    ],
)
def test_exec_plugin_settings_kubectl_refuses_too(
    fake_k8s: FakeKubernetes, plugin: Plugin, api_version: str, settings: dict[str, Any], fragment: str
) -> None:
    error = _fails(lambda: load_kubeconfig(plugin.kubeconfig(api_version, **settings)))
    assert error.cni_code == INVALID_NETWORK_CONFIG and fragment in error.message


def test_exec_plugin_not_installed_shows_its_install_hint(fake_k8s: FakeKubernetes, plugin: Plugin) -> None:
    path = plugin.kubeconfig(command="pywg-no-such-credential-plugin", installHint="Install it with apt")
    error = _fails(lambda: _get(path))
    assert error.cni_code == INVALID_NETWORK_CONFIG
    assert "the command 'pywg-no-such-credential-plugin' is not there (Install it with apt)" in error.message


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


# --- proxy-url -----------------------------------------------------------------------------------------


class ConnectProxy:
    """An HTTP CONNECT proxy on 127.0.0.1: tunnels, or answers `refuse` (e.g. a 407) instead."""

    def __init__(self, refuse: bytes = b"") -> None:
        self.refuse = refuse
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.requests: list[list[str]] = []  # request line and header lines, per CONNECT
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._serve, daemon=True)]
        self._threads[0].start()

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self.listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            lines = head.split(b"\r\n\r\n")[0].decode().split("\r\n")
            self.requests.append(lines)
            if self.refuse:
                conn.sendall(self.refuse)
                return
            host, _, port = lines[0].split()[1].rpartition(":")
            with socket.create_connection((host, int(port)), timeout=5) as upstream:
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                back = threading.Thread(target=_pipe, args=(upstream, conn), daemon=True)
                back.start()
                _pipe(conn, upstream)
                back.join(timeout=5)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    proxy = ConnectProxy()
    try:
        yield proxy
    finally:
        proxy.close()


def _with_proxy(fake: FakeKubernetes, url: str) -> Path:
    text = fake.write_kubeconfig("schu").read_text()
    return fake.write("proxied/kubeconfig", text.replace("    server:", f"    proxy-url: {url}\n    server:"))


def test_proxy_url_tunnels_through_http_connect(fake_k8s: FakeKubernetes, proxy: ConnectProxy) -> None:
    path = _with_proxy(fake_k8s, f"http://pywg:s3cr%40t-proxy-pass@127.0.0.1:{proxy.port}")
    client = load_kubeconfig(path)
    assert "s3cr" not in repr(client) and "s3cr" not in repr(client.proxy)
    assert client.get_pod("default", "wireguard-pod")["kind"] == "Pod"
    [request] = proxy.requests
    assert request[0] == f"CONNECT 127.0.0.1:{fake_k8s.port} HTTP/1.0"
    auth = base64.b64encode(b"pywg:s3cr@t-proxy-pass").decode()
    assert f"Proxy-Authorization: Basic {auth}" in request[1:]
    assert fake_k8s.seen[-1].user == DEFAULT_USER  # the TLS and the token went through, end to end


def test_proxy_that_wants_credentials(fake_k8s: FakeKubernetes) -> None:
    refusing = ConnectProxy(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
    try:
        client = load_kubeconfig(
            _with_proxy(fake_k8s, f"http://pywg:wrong-pass-xyz@127.0.0.1:{refusing.port}")
        )
        error = _fails(lambda: client.get_pod("default", "wireguard-pod"), "wrong-pass-xyz", fake_k8s.token)
    finally:
        refusing.close()
    assert error.cni_code == INVALID_NETWORK_CONFIG
    assert f"the proxy http://127.0.0.1:{refusing.port} did not open a tunnel" in error.message
    assert "(407 Proxy Authentication Required)" in error.message and "user and password" in error.message
    assert fake_k8s.seen == []


def test_unreachable_proxy(fake_k8s: FakeKubernetes) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = load_kubeconfig(_with_proxy(fake_k8s, f"http://127.0.0.1:{port}"))
    error = _fails(lambda: client.get_pod("default", "wireguard-pod"))
    assert error.cni_code == TRY_AGAIN_LATER
    assert f"through the proxy http://127.0.0.1:{port} (connection refused)" in error.message


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("socks5://127.0.0.1:1080", "a socks5 proxy; pywg-cni tunnels through http:// proxies only"),
        ("https://proxy.example:3128", "a https proxy"),
        ("http://proxy.example:3128/path", "must be http://HOST[:PORT]"),
        ("http://proxy.example:port", "is not a URL"),
    ],
)
def test_proxy_urls_it_cannot_use(fake_k8s: FakeKubernetes, url: str, fragment: str) -> None:
    error = _fails(lambda: load_kubeconfig(_with_proxy(fake_k8s, url)))
    assert error.cni_code == INVALID_NETWORK_CONFIG and fragment in error.message
