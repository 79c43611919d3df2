"""The CNI protocol layer: requests, version negotiation, results in every format, errors."""

from __future__ import annotations

import json
from ipaddress import ip_address, ip_interface, ip_network

import pytest

from cni.spec import (
    DECODING_FAILURE,
    INCOMPATIBLE_VERSION,
    INVALID_ENVIRONMENT,
    SUPPORTED_VERSIONS,
    CniError,
    Interface,
    IPConfig,
    Result,
    Route,
    parse_cni_args,
    parse_request,
    parse_result,
    version_answer,
)

ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "abc123",
    "CNI_NETNS": "/run/netns/pod",
    "CNI_IFNAME": "net1",
    "CNI_PATH": "/opt/cni/bin:/usr/lib/cni",
    "CNI_ARGS": "IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME=wireguard-pod;K8S_POD_UID=u-1",
}


def _conf(version: str = "1.1.0", **extra: object) -> bytes:
    return json.dumps({"cniVersion": version, "name": "wgnet", "type": "pywg-cni", **extra}).encode()


def test_request_as_multus_sends_it() -> None:
    request = parse_request(ENV, _conf())
    assert request.command == "ADD" and request.ifname == "net1" and request.netns == "/run/netns/pod"
    assert request.args["K8S_POD_NAME"] == "wireguard-pod" and request.args["IgnoreUnknown"] == "true"
    assert request.path == ["/opt/cni/bin", "/usr/lib/cni"]
    assert request.cni_version == "1.1.0"


@pytest.mark.parametrize(
    ("change", "code", "words"),
    [
        ({"CNI_COMMAND": "FOO"}, INVALID_ENVIRONMENT, "CNI_COMMAND"),
        ({"CNI_NETNS": ""}, INVALID_ENVIRONMENT, "CNI_NETNS"),
        ({"CNI_IFNAME": ""}, INVALID_ENVIRONMENT, "CNI_IFNAME"),
        ({"CNI_CONTAINERID": "-bad id"}, INVALID_ENVIRONMENT, "CNI_CONTAINERID"),
        ({"CNI_IFNAME": "a-very-long-interface"}, INVALID_ENVIRONMENT, "CNI_IFNAME"),
        ({"CNI_ARGS": "novalue"}, INVALID_ENVIRONMENT, "CNI_ARGS"),
    ],
)
def test_bad_environment(change: dict[str, str], code: int, words: str) -> None:
    with pytest.raises(CniError) as caught:
        parse_request({**ENV, **change}, _conf())
    assert caught.value.code == code and words in caught.value.msg


def test_del_needs_no_netns() -> None:
    assert parse_request({**ENV, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}, _conf()).netns == ""


def test_bad_stdin_and_version() -> None:
    with pytest.raises(CniError) as caught:
        parse_request(ENV, b"{not json")
    assert caught.value.code == DECODING_FAILURE
    with pytest.raises(CniError) as caught:
        parse_request(ENV, _conf("0.2.0"))
    assert caught.value.code == INCOMPATIBLE_VERSION and "0.2.0" in caught.value.msg
    assert caught.value.to_json("0.2.0") == {"cniVersion": "0.2.0", "code": 1, "msg": caught.value.msg}


def test_version_answer_lists_all() -> None:
    assert version_answer("0.4.0") == {"cniVersion": "0.4.0", "supportedVersions": list(SUPPORTED_VERSIONS)}


def _result() -> Result:
    return Result(
        interfaces=[Interface("net1", sandbox="/run/netns/pod", mtu=1420)],
        ips=[IPConfig(ip_interface("10.1.2.3/32"), 0), IPConfig(ip_interface("fd00::3/128"), 0)],
        routes=[
            Route(ip_network("10.1.2.0/24"), scope=253),
            Route(ip_network("::/0"), ip_address("fd00::1")),
        ],
    )


def test_result_formats() -> None:
    new = _result().render("1.1.0")
    assert new["interfaces"] == [{"name": "net1", "mtu": 1420, "sandbox": "/run/netns/pod"}]
    assert new["ips"] == [
        {"address": "10.1.2.3/32", "interface": 0},
        {"address": "fd00::3/128", "interface": 0},
    ]
    assert new["routes"] == [{"dst": "10.1.2.0/24", "scope": 253}, {"dst": "::/0", "gw": "fd00::1"}]
    assert _result().render("1.0.0")["routes"][0] == {"dst": "10.1.2.0/24"}
    legacy = _result().render("0.3.1")
    assert legacy["cniVersion"] == "0.3.1"
    assert [ip["version"] for ip in legacy["ips"]] == ["4", "6"]


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_result_round_trips_through_prev_result(version: str) -> None:
    rendered = _result().render(version)
    again = parse_result(json.loads(json.dumps(rendered))).render(version)
    assert again == rendered


def test_malformed_prev_result() -> None:
    with pytest.raises(CniError) as caught:
        parse_result({"ips": [{"address": "nonsense"}]})
    assert caught.value.code == DECODING_FAILURE


def test_cni_args_keep_empty_values() -> None:
    assert parse_cni_args("A=;B=2") == {"A": "", "B": "2"}
