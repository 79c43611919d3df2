"""deploy/ and docs/kubernetes.md against the code they describe.

No YAML parser (PyYAML is not a dependency): the manifests are checked as text, and the JSON inside
them (a NAD's spec.config, a Secret's config.json) is cut out and parsed. What is held together: the
example configs parse with pywg.config once their placeholders are replaced; the NADs name a type the
DaemonSet installs and a mode the plugin knows; the DaemonSet mounts and runs what the agent uses; the
RBAC grants exactly get on pods and secrets; the docs' config snippets are the example files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

import pytest
import yaml

from cni import agent, agent_client, live, plugin, policy
from cni.spec import SUPPORTED_VERSIONS
from pywg.config import ConfigError, InterfaceConfig, parse_config
from pywg.core.keys import encode_key, generate_private_key, public_key_for
from pywg.runtime import netns, uapi_server

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
EXAMPLES = DEPLOY / "examples"
DOC = ROOT / "docs" / "kubernetes.md"
YAML_FILES = sorted(DEPLOY.rglob("*.yaml"))
CONFIG_FILES = sorted(EXAMPLES.rglob("*.json"))
NAD_FILES = sorted(p for p in YAML_FILES if "kind: NetworkAttachmentDefinition" in p.read_text())
PLACEHOLDERS = ("REPLACE_WITH_POD_PRIVATE_KEY", "REPLACE_WITH_PEER_PUBLIC_KEY")


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _documents(path: Path) -> list[str]:
    return [doc for doc in re.split(r"^---\s*$", _text(path), flags=re.MULTILINE) if doc.strip()]


def _document(path: Path, kind: str) -> str:
    found = [doc for doc in _documents(path) if re.search(rf"^kind: {kind}$", doc, re.MULTILINE)]
    assert len(found) == 1, f"{path.name}: expected one {kind}"
    return found[0]


def _literal_block(text: str, key: str) -> str:
    """The value of `key: |` (a YAML literal block), dedented."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = re.fullmatch(rf"(\s*){re.escape(key)}: \|", line)
        if match is None:
            continue
        indent = len(match.group(1))
        block = []
        for body in lines[i + 1 :]:
            if body.strip() and len(body) - len(body.lstrip()) <= indent:
                break
            block.append(body)
        width = min(len(b) - len(b.lstrip()) for b in block if b.strip())
        return "\n".join(b[width:] for b in block).strip() + "\n"
    raise AssertionError(f"no literal block {key}: |")


def _filled(text: str) -> str:
    """A config with its placeholders replaced by fresh keys."""
    pod, peer = generate_private_key(os.urandom), generate_private_key(os.urandom)
    text = text.replace("REPLACE_WITH_POD_PRIVATE_KEY", encode_key(pod))
    text = text.replace("REPLACE_WITH_PEER_PUBLIC_KEY", encode_key(public_key_for(peer)))
    assert "REPLACE_WITH" not in text, "a placeholder this test does not know"
    return text


def _parse_example(text: str, source: str) -> InterfaceConfig:
    cfg = parse_config(_filled(text), source=source)
    assert cfg.addresses and cfg.peers, source
    assert not cfg.warnings, cfg.warnings
    for peer in cfg.peers:
        assert peer.allowed_ips and peer.endpoint is not None and peer.persistent_keepalive == 25
    return cfg


def _installed_types() -> set[str]:
    """The plugin names the DaemonSet's init container puts in /opt/cni/bin."""
    text = _text(DEPLOY / "daemonset.yaml")
    return set(re.findall(r'mv -T?f "\$dir/\.[\w-]+\.new" "\$dir/([\w-]+)"', text))


def _nad_config(path: Path) -> dict[str, Any]:
    doc = _document(path, "NetworkAttachmentDefinition")
    config = json.loads(_literal_block(doc, "config"))
    assert re.search(rf"^  name: {re.escape(config['name'])}$", doc, re.MULTILINE), "name differs"
    return config


# --- the example configs ------------------------------------------------------------------------


def test_examples_exist() -> None:
    names = {str(p.relative_to(DEPLOY)) for p in YAML_FILES + CONFIG_FILES}
    assert {
        "rbac.yaml",
        "daemonset.yaml",
        "examples/wgnet-nad.yaml",
        "examples/secret.yaml",
        "examples/pod.yaml",
        "examples/config.json",
        "examples/dual-stack-config.json",
        "examples/reverse-proxy/config.json",
        "examples/reverse-proxy/configmap.yaml",
        "examples/reverse-proxy/deployment.yaml",
    } <= names
    assert (DEPLOY / "Containerfile").is_file()


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_config_parses_once_filled(path: Path) -> None:
    text = _text(path)
    json.loads(text)
    assert all(p in text for p in PLACEHOLDERS), "placeholders for both keys"
    with pytest.raises(ConfigError):  # an unedited example fails loudly instead of running
        parse_config(text)
    _parse_example(text, path.name)


def test_example_configs_show_what_is_new() -> None:
    guide = _parse_example(_text(EXAMPLES / "config.json"), "config.json")
    (address,) = guide.addresses
    assert any(address.ip in net for net in guide.peers[0].allowed_ips), "address inside allowedIPs"

    dual = _parse_example(_text(EXAMPLES / "dual-stack-config.json"), "dual-stack")
    assert {a.version for a in dual.addresses} == {4, 6}
    assert {n.version for n in dual.peers[0].allowed_ips} == {4, 6}
    for a in dual.addresses:
        assert any(a.ip in n for n in dual.peers[0].allowed_ips)

    proxy = _parse_example(_text(EXAMPLES / "reverse-proxy" / "config.json"), "reverse-proxy")
    assert {a.version for a in proxy.addresses} == {6}
    assert {n.version for n in proxy.peers[0].allowed_ips} == {6}
    nginx = _text(EXAMPLES / "reverse-proxy" / "configmap.yaml")
    upstream = re.search(r"proxy_pass https://\[([0-9a-f:]+)\]", nginx)
    assert upstream is not None
    assert any(IPv6Address(upstream.group(1)) in n for n in proxy.peers[0].allowed_ips)


def test_secret_holds_the_example_config() -> None:
    doc = _document(EXAMPLES / "secret.yaml", "Secret")
    assert re.search(r"^  name: wireguard-config$", doc, re.MULTILINE)
    embedded = _literal_block(doc, "config.json")
    assert json.loads(embedded) == json.loads(_text(EXAMPLES / "config.json"))
    assert "kubectl create secret generic wireguard-config --from-file ./config.json" in doc


# --- NetworkAttachmentDefinitions and Pods ------------------------------------------------------


def test_daemonset_installs_both_type_names() -> None:
    assert _installed_types() == {"pywg-cni", "wg-cni"}


@pytest.mark.parametrize("path", NAD_FILES, ids=lambda p: p.name)
def test_nad_config_is_one_the_plugin_takes(path: Path) -> None:
    config = _nad_config(path)
    assert config["type"] in _installed_types()
    assert config["cniVersion"] in SUPPORTED_VERSIONS
    assert "kubeConfigPath" not in config, "the agent uses its ServiceAccount"
    conf = plugin.NetConf(config)
    assert conf.mode in plugin.MODES
    assert conf.agent_socket == "", "the agent's socket is the operator's, not the network config's"


def test_nads_cover_both_names_and_versions() -> None:
    configs = [_nad_config(p) for p in NAD_FILES]
    assert {c["type"] for c in configs} == {"pywg-cni", "wg-cni"}
    main = _nad_config(EXAMPLES / "wgnet-nad.yaml")
    assert (main["cniVersion"], main["type"], main["mode"]) == ("1.1.0", "pywg-cni", "auto")
    assert "0.3.1" in _text(EXAMPLES / "wgnet-nad.yaml")


@pytest.mark.parametrize(
    "path", [EXAMPLES / "pod.yaml", EXAMPLES / "reverse-proxy" / "deployment.yaml"], ids=lambda p: p.name
)
def test_pods_ask_for_the_network_and_name_a_secret(path: Path) -> None:
    text = _text(path)
    assert re.search(r"^\s+k8s\.v1\.cni\.cncf\.io/networks: default/wgnet$", text, re.MULTILINE)
    assert re.search(rf"^\s+{re.escape(plugin.ANNOTATION)}: [a-z0-9-]+$", text, re.MULTILINE)
    assert "privileged: true" not in text and "NET_ADMIN" not in text


# --- the DaemonSet, the image and RBAC ----------------------------------------------------------


def _mounts(doc: str) -> dict[str, str]:
    """mountPath -> volume name, over all containers."""
    return dict((path, name) for name, path in re.findall(r"- name: ([\w-]+)\n\s+mountPath: (\S+)", doc))


def _host_paths(doc: str) -> dict[str, str]:
    """volume name -> hostPath path."""
    return dict(re.findall(r"- name: ([\w-]+)\n\s+hostPath:\n\s+path: (\S+)", doc))


def test_daemonset_mounts_what_the_agent_uses() -> None:
    doc = _document(DEPLOY / "daemonset.yaml", "DaemonSet")
    mounts, hosts = _mounts(doc), _host_paths(doc)
    for path in (
        policy.DEFAULT_STATE_DIR,
        uapi_server.RUN_DIR,
        Path(netns.NETNS_RUN_DIR),
        plugin.TUN_DEVICE,
    ):
        assert str(path) in mounts, f"{path} is not mounted"
        assert hosts[mounts[str(path)]] == str(path), f"{path} is not the host's {path}"
    assert hosts[mounts["/host/opt/cni/bin"]] == "/opt/cni/bin"
    assert re.search(r"mountPath: /run/netns\n\s+mountPropagation: HostToContainer", doc)
    assert re.search(r"^      hostNetwork: true$", doc, re.MULTILINE)
    assert re.search(r"^            privileged: true$", doc, re.MULTILINE)
    assert re.search(r"^      serviceAccountName: pywg-cni$", doc, re.MULTILINE)
    assert re.search(r"^  namespace: kube-system$", doc, re.MULTILINE)
    assert re.search(r"^    type: RollingUpdate$", doc, re.MULTILINE)


def test_daemonset_runs_the_agent_on_the_default_socket() -> None:
    doc = _document(DEPLOY / "daemonset.yaml", "DaemonSet")
    argv = ["python3", "-m", "cni.agent", "--state-dir", policy.DEFAULT_STATE_DIR]
    argv += ["--socket", policy.DEFAULT_SOCKET]
    command = "\n".join(f"- {arg}" for arg in argv)
    assert command in re.sub(r"\n\s+", "\n", doc)
    assert "--supervise" not in doc.replace("No --supervise", "")
    assert policy.DEFAULT_SOCKET == agent_client.DEFAULT_SOCKET
    probes = re.findall(r"agent_running\(\"([^\"]+)\"\)", doc)
    assert probes == [str(policy.DEFAULT_SOCKET)] * 2
    # The probe is Python the image runs: make sure it at least compiles.
    for line in re.findall(r"- (import sys, cni\.agent_client.*)", doc):
        compile(line, "probe", "exec")


def test_daemonset_agent_options_are_the_agents() -> None:
    """The agent's args parse as the agent parses them, with the downward API's values filled in."""
    doc = next(d for d in yaml.safe_load_all(_text(DEPLOY / "daemonset.yaml")) if d["kind"] == "DaemonSet")
    container = next(c for c in doc["spec"]["template"]["spec"]["containers"] if c["name"] == "agent")
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {
        "NODE_NAME": "spec.nodeName",
        "POD_NAMESPACE": "metadata.namespace",
        "HOST_IP": "status.hostIP",
    }
    args = [a.replace("$(HOST_IP)", "192.0.2.7") for a in container["command"][3:] + container["args"]]
    parsed = agent.build_parser().parse_args(args)
    assert parsed.metrics == "192.0.2.7:9587"
    assert container["ports"] == [{"name": "metrics", "containerPort": 9587, "protocol": "TCP"}]
    annotations = doc["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": "9587"}
    assert live.from_arguments(parsed).lease_duration == 60


def test_image_builds_what_the_init_container_copies() -> None:
    containerfile = _text(DEPLOY / "Containerfile")
    out = re.search(r"cni/build_entrypoint\.py --out (\S+)", containerfile)
    assert out is not None
    assert f"cp {out.group(1)} " in _text(DEPLOY / "daemonset.yaml")
    assert "podman build -f deploy/Containerfile -t pywg:0.1.0 ." in containerfile
    images = set(re.findall(r"image: (\S+)", _text(DEPLOY / "daemonset.yaml")))
    assert images == {"localhost/pywg:0.1.0"}
    for package in ("python3", "iproute2", "wireguard-tools"):
        assert re.search(rf"\s{package}\s", containerfile)
    assert "debian:12-slim" in containerfile


def test_rbac_grants_only_what_the_agent_uses() -> None:
    """Exactly the verbs of docs/kubernetes.md "What the agent may do" (the real API server proves
    each is needed: tests/test_rbac_live.py)."""
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(_text(DEPLOY / "rbac.yaml"))}

    def rules(doc: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
        found: dict[tuple[str, str], list[str]] = {}
        for rule in doc["rules"]:
            assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no resourceNames, no URLs
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    found[(group, resource)] = sorted(found.get((group, resource), []) + rule["verbs"])
        return found

    assert rules(docs[("ClusterRole", "pywg-cni")]) == {
        ("", "pods"): ["get"],
        ("", "secrets"): ["get", "watch"],
        ("", "events"): ["create", "patch"],
    }
    leases = docs[("Role", "pywg-cni-leases")]
    assert leases["metadata"]["namespace"] == "kube-system"
    assert rules(leases) == {("coordination.k8s.io", "leases"): ["create", "get", "update"]}
    account = {"kind": "ServiceAccount", "name": "pywg-cni", "namespace": "kube-system"}
    for kind, name, role in (
        ("ClusterRoleBinding", "pywg-cni", ("ClusterRole", "pywg-cni")),
        ("RoleBinding", "pywg-cni-leases", ("Role", "pywg-cni-leases")),
    ):
        binding = docs[(kind, name)]
        assert (binding["roleRef"]["kind"], binding["roleRef"]["name"]) == role
        assert binding["subjects"] == [account]
    assert len(docs) == 4
    account_doc = _document(DEPLOY / "daemonset.yaml", "ServiceAccount")
    assert re.search(r"^  name: pywg-cni\n  namespace: kube-system$", account_doc, re.MULTILINE)


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_is_plain(path: Path) -> None:
    text = _text(path)
    assert "\t" not in text
    for doc in _documents(path):
        body = "\n".join(line for line in doc.splitlines() if not line.startswith("#"))
        assert re.search(r"^apiVersion: \S+$", body, re.MULTILINE), path.name
        assert re.search(r"^kind: [A-Z]\w+$", body, re.MULTILINE), path.name
        assert re.search(r"^metadata:\n  name: [a-z0-9-]+$", body, re.MULTILINE), path.name


# --- docs/kubernetes.md -------------------------------------------------------------------------


def _fenced(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", _text(DOC), re.MULTILINE | re.DOTALL)


def test_doc_json_snippets_are_the_example_files() -> None:
    blocks = [json.loads(block) for block in _fenced("json")]
    configs = [b for b in blocks if "privateKey" in b]
    assert len(configs) == len(blocks) >= 2
    for block in _fenced("json"):
        _parse_example(block, "docs/kubernetes.md")
    files = [json.loads(_text(EXAMPLES / name)) for name in ("config.json", "dual-stack-config.json")]
    assert all(f in configs for f in files)


def test_doc_yaml_snippets_match_the_examples() -> None:
    yaml_blocks = _fenced("yaml")
    nads = [b for b in yaml_blocks if "kind: NetworkAttachmentDefinition" in b]
    assert len(nads) == 1
    assert json.loads(_literal_block(nads[0], "config")) == _nad_config(EXAMPLES / "wgnet-nad.yaml")
    pods = [b for b in yaml_blocks if "kind: Pod" in b]
    assert len(pods) == 1
    assert "wgcni.schu.io/configsecret: wireguard-config" in pods[0]


def test_doc_commands_and_paths() -> None:
    text = _text(DOC)
    assert "kubectl create secret generic wireguard-config --from-file ./config.json" in text
    assert "podman build -f deploy/Containerfile -t pywg:0.1.0 ." in text
    for path in set(re.findall(r"`(deploy/[\w./-]*\w)", text)):
        assert (ROOT / path).exists(), f"docs/kubernetes.md names {path}, which does not exist"
    # The UAPI name the doc explains is the agent's.
    assert agent.attachment_name("abc", "net1") == "cni" + hashlib.sha256(b"abc/net1").hexdigest()[:12]
    assert 'sha256("<container ID>/<interface>")' in text
