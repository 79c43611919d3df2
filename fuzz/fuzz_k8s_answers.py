#!/usr/bin/env python3
"""Fuzz target: the Kubernetes API's answers as the plugin reads them (cni/k8s.py, cni/plugin.py).

ADD without an inline config asks the API server for the Pod, reads the annotation naming its
Secret, asks for the Secret and decodes the WireGuard config from it (`wireguard_config`). Here
the network is stubbed: `ApiClient._request` returns a fuzzed answer, so the Pod and Secret
JSON, Status objects of failed requests (with a Retry-After header), `secret_config_text` and
the config parser all see fuzzed input. An input is, for the Pod and then the Secret, a status
code choice, a Retry-After value and a body (`Reader` blobs).

Only `CniError` may come out, and it never quotes the bearer token.
"""

from __future__ import annotations

import ssl
from typing import Any

import atheris

with atheris.instrument_imports(include=["cni", "pywg", "_common"]):
    from _common import Reader, fuzz

    from cni import k8s, plugin
    from cni.policy import NodePolicy
    from cni.spec import CniError, parse_request

TOKEN = "fuzz-bearer-token.c2lnbmF0dXJl"
STATUSES = ((200, "OK"), (401, "Unauthorized"), (403, "Forbidden"), (404, "Not Found"), (429, ""), (503, ""))
RETRY_AFTER = ("", "5", "x", "99999999999999999999")
ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "c0ffee",
    "CNI_NETNS": "/var/run/netns/pod",
    "CNI_IFNAME": "net1",
    "CNI_ARGS": "IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME=wireguard-pod",
}
REQUEST = parse_request(ENV, b'{"cniVersion": "1.1.0", "name": "wgnet", "type": "pywg-cni"}')
CONF = plugin.NetConf(REQUEST.config)
POLICY = NodePolicy()


class Answers:
    """`ApiClient._request` with the network replaced by the fuzzer's answers."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader

    def __call__(
        self, method: str, path: str, data: bytes | None = None, content_type: str = ""
    ) -> tuple[int, str, bytes, dict[str, str]]:
        status, reason = self.reader.pick(STATUSES)
        headers = {"retry-after": self.reader.pick(RETRY_AFTER)}
        return status, reason, self.reader.blob(), headers


def client_for(reader: Reader) -> Any:
    client = k8s.ApiClient("https://192.0.2.1:6443", ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), token=TOKEN)
    client._request = Answers(reader)  # type: ignore[method-assign]
    return client


def test_one_input(data: bytes) -> None:
    client = client_for(Reader(data))
    plugin._api_client = lambda kubeconfig, node_policy: client
    try:
        plugin.wireguard_config(REQUEST, CONF, POLICY)
    except CniError as error:
        assert TOKEN not in error.msg, "the bearer token in an error"


if __name__ == "__main__":
    fuzz(test_one_input)
