"""Bugs found by the fuzz targets in fuzz/, or while writing them; the inputs are in fuzz/corpus/*/regress-*.

JSON nested too deeply (RecursionError) and numbers with more digits than int() takes (ValueError,
not JSONDecodeError) came from reading the parsers the targets drive, after the fuzzer's
OverflowError in prevResult: the targets' inputs rarely reach 1000 levels or 4300 digits.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from cni import k8s, kubeconfig, plugin
from cni.policy import NodePolicy
from cni.spec import (
    DECODING_FAILURE,
    INVALID_NETWORK_CONFIG,
    TRY_AGAIN_LATER,
    CniError,
    decode_config,
    parse_request,
    parse_result,
)
from pywg.core.clock import FakeClock
from pywg.core.device import Device
from pywg.core.uapi import handle_request
from tests.support.netsim import SeededRng, fixed_public

EINVAL = b"errno=-22\n\n"
TOO_DEEP = b"[" * 100_000
TOO_LONG = b"9" * 5000  # int() takes at most 4300 digits


def _device() -> Device:
    return Device(bytes(range(1, 33)), clock=FakeClock(), rng=SeededRng(5))


@pytest.mark.parametrize("zone", ["\x9eth0", "eth\xe9", "\x01", "a\x7f"])
def test_uapi_endpoint_zone_outside_printable_ascii_refused(zone: str) -> None:
    """fuzz_uapi: a zone byte above 0x7f was taken, and every later get failed with -55 (not ASCII)."""
    device = _device()
    peer = fixed_public(11).hex()
    request = f"set=1\npublic_key={peer}\nendpoint=[fe80::1%{zone}]:1\n\n"
    assert handle_request(device, request.encode("latin-1")) == EINVAL
    assert handle_request(device, b"get=1\n\n").endswith(b"errno=0\n\n")


def test_uapi_endpoint_zone_still_takes_interface_names() -> None:
    device = _device()
    peer = fixed_public(11).hex()
    request = f"set=1\npublic_key={peer}\nendpoint=[fe80::1%wg-0.1_x]:1\n\n"
    assert handle_request(device, request.encode()) == b"errno=0\n\n"
    assert b"endpoint=[fe80::1%wg-0.1_x]:1\n" in handle_request(device, b"get=1\n\n")


def _kubeconfig(tmp_path: Path, user: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        "clusters:\n- name: c\n  cluster:\n    server: https://192.0.2.1\n"
        "    insecure-skip-tls-verify: true\n"
        f"users:\n- name: u\n  user:\n{user}contexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n"
    )
    return path


@pytest.mark.parametrize(
    ("user", "shown"),
    [
        ('    client-certificate: "a\\0b"\n    client-key: k\n', "'a\\x00b' with a NUL character"),
        ('    tokenFile: "t\\0"\n', "'t\\x00' with a NUL character"),
        (
            "    tokenFile: ~no-such-user-pywg/token\n",
            "'~no-such-user-pywg/token' in the home directory of an",
        ),
    ],
)
def test_kubeconfig_file_names_that_cannot_be_files(tmp_path: Path, user: str, shown: str) -> None:
    """fuzz_kubeconfig: a NUL in a file name raised ValueError; ~user of an unknown user, RuntimeError."""
    with pytest.raises(k8s.KubernetesError) as caught:
        kubeconfig.load_kubeconfig(_kubeconfig(tmp_path, user))
    assert caught.value.cni_code == INVALID_NETWORK_CONFIG
    assert shown in caught.value.message


def test_kubeconfig_file_names_in_a_known_home_still_work(tmp_path: Path) -> None:
    client = kubeconfig.load_kubeconfig(_kubeconfig(tmp_path, "    tokenFile: ~/token\n"))
    assert client._token_file == Path.home() / "token"


@pytest.mark.parametrize("number", [float("inf"), float("-inf"), 1e999])
@pytest.mark.parametrize("where", ["interfaces", "routes"])
def test_prev_result_with_an_infinite_number_is_a_decoding_failure(number: float, where: str) -> None:
    """fuzz_cni: "mtu": 1e999 in a prevResult raised OverflowError out of parse_result."""
    entry = {"name": "eth0", "mtu": number} if where == "interfaces" else {"dst": "0.0.0.0/0", "mtu": number}
    with pytest.raises(CniError) as caught:
        parse_result({where: [entry]})
    assert caught.value.code == DECODING_FAILURE
    assert "prevResult is malformed" in caught.value.msg


class _Api:
    """An ApiClient that answers with `pod` and never reaches a Secret."""

    def __init__(self, pod: dict[str, Any]) -> None:
        self.pod = pod

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        return self.pod

    def get_secret(self, namespace: str, name: str) -> dict[str, Any]:
        raise AssertionError("no Secret to read")


@pytest.mark.parametrize(
    "metadata",
    [
        {"annotations": {"wgcni.schu.io/configsecret": True}},
        {"annotations": {"wgcni.schu.io/configsecret": ["wg"]}},
        {"annotations": ["wgcni.schu.io/configsecret"]},
        ["annotations"],
    ],
)
def test_pod_annotations_that_are_not_text(monkeypatch: pytest.MonkeyPatch, metadata: object) -> None:
    """fuzz_k8s_answers: an annotation value `true` reached len() (TypeError); a list, .get()."""
    answer = _Api({"kind": "Pod", "metadata": metadata})
    monkeypatch.setattr(plugin, "_api_client", lambda kubeconfig, node_policy: answer)
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c0ffee",
        "CNI_NETNS": "/var/run/netns/pod",
        "CNI_IFNAME": "net1",
        "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=wireguard-pod",
    }
    request = parse_request(env, b'{"cniVersion": "1.1.0", "name": "wgnet", "type": "pywg-cni"}')
    with pytest.raises(CniError) as caught:
        plugin.wireguard_config(request, plugin.NetConf(request.config), NodePolicy())
    assert caught.value.code == DECODING_FAILURE
    assert "default/wireguard-pod with annotations not all text" in caught.value.msg


@pytest.mark.parametrize(
    ("stdin", "says"), [(TOO_DEEP, "nested too deeply"), (b'{"a": ' + TOO_LONG + b"}", "4300")]
)
def test_cni_stdin_too_deep_or_with_a_number_too_long(stdin: bytes, says: str) -> None:
    with pytest.raises(CniError) as caught:
        decode_config(stdin)
    assert caught.value.code == DECODING_FAILURE
    assert says in caught.value.msg


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (TOO_DEEP, DECODING_FAILURE),
        (b"clusters: [" + TOO_DEEP + b"\n", DECODING_FAILURE),
        (b"clusters: [" + TOO_LONG + b"]\n", INVALID_NETWORK_CONFIG),  # text, as kubectl reads it
    ],
)
def test_kubeconfig_json_too_deep_or_with_a_number_too_long(tmp_path: Path, text: bytes, code: int) -> None:
    path = tmp_path / "kubeconfig"
    path.write_bytes(text)
    with pytest.raises(k8s.KubernetesError) as caught:
        kubeconfig.load_kubeconfig(path)
    assert caught.value.cni_code == code


@pytest.mark.parametrize(("status", "code"), [(200, DECODING_FAILURE), (503, TRY_AGAIN_LATER)])
@pytest.mark.parametrize("body", [TOO_DEEP, b'{"kind": "Status", "code": ' + TOO_LONG + b"}"])
def test_api_answers_too_deep_or_with_a_number_too_long(status: int, code: int, body: bytes) -> None:
    client = k8s.ApiClient("https://192.0.2.1:6443", ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), token="t")
    client._request = lambda *request: (status, "", body, {})  # type: ignore[method-assign]
    with pytest.raises(k8s.KubernetesError) as caught:
        client.get_pod("default", "wireguard-pod")
    assert caught.value.cni_code == code


def test_stdin_too_deep_is_a_decoding_error() -> None:
    """json.loads raises RecursionError past its nesting limit (the node agent once crashed on it)."""
    with pytest.raises(CniError, match="nested too deeply"):
        decode_config(TOO_DEEP)
