"""pywg.config: wireguard-cni JSON and wg-quick INI, their errors, and round trips."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import string
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Interface,
    IPv6Network,
    ip_interface,
    ip_network,
)
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pywg.config import (
    ConfigError,
    EndpointSpec,
    InterfaceConfig,
    PeerConfig,
    fields,
    format_wg_quick,
    load_config,
    parse_allowed_ip,
    parse_config,
    parse_endpoint,
    parse_fwmark,
    parse_keepalive,
    to_json,
)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _keypair() -> tuple[str, str]:
    private = X25519PrivateKey.generate()
    return _b64(private.private_bytes_raw()), _b64(private.public_key().public_bytes_raw())


PRIV, OWN_PUB = _keypair()
_, PUB1 = _keypair()
_, PUB2 = _keypair()
PSK = _b64(os.urandom(32))
_B64_ALPHABET = string.ascii_uppercase + string.ascii_lowercase + string.digits + "+/"
# PRIV with the two unused low bits of its last character set: wg refuses such text.
NONCANONICAL = PRIV[:42] + _B64_ALPHABET[_B64_ALPHABET.index(PRIV[42]) | 3] + "="
ALL_KEYS = (PRIV, OWN_PUB, PUB1, PUB2, PSK)


def assert_no_key_material(message: str) -> None:
    for key in ALL_KEYS:
        for text in (key, base64.b64decode(key).hex()):
            for start in range(len(text) - 16):
                assert text[start : start + 16] not in message, f"key material in: {message}"


# The CERIT-SC guide's example (docs.cerit-sc.cz/en/docs/kubernetes/wireguard), verbatim.
GUIDE_EXAMPLE = """{
  "address": "1.2.3.4/32",
  "privateKey": "AAev16ZVYhmCQliIYKXMje1zObRp6TmET0KiUx7MJXc=",
  "peers": [
    {
      "endpoint": "5.6.7.8:51820",
      "publicKey": "+gXCSfkib2xFMeebKXIYBVZxV/Vh2mbi1dJeHCCjQmg=",
      "allowedIPs": [ "9.10.11.12/24" ],
      "persistentKeepalive": "25s"
    }
  ]
}
"""

DROP = object()


def jdoc(top: dict[str, Any] | None = None, **peer: Any) -> dict[str, Any]:
    """A valid config.json document with changes; DROP removes a key."""
    doc: dict[str, Any] = {
        "address": "10.1.2.3/32",
        "privateKey": PRIV,
        "peers": [
            {
                "endpoint": "vpn.example.com:51820",
                "publicKey": PUB1,
                "allowedIPs": ["10.9.0.0/24"],
                "persistentKeepalive": "25s",
            }
        ],
    }
    for key, value in (top or {}).items():
        if value is DROP:
            doc.pop(key, None)
        else:
            doc[key] = value
    for key, value in peer.items():
        if value is DROP:
            doc["peers"][0].pop(key, None)
        else:
            doc["peers"][0][key] = value
    return doc


def jtext(top: dict[str, Any] | None = None, **peer: Any) -> str:
    return json.dumps(jdoc(top, **peer), indent=2)


# --------------------------------------------------------------------------------------------
# JSON


def test_guide_example_parses() -> None:
    cfg = parse_config(GUIDE_EXAMPLE)
    assert cfg.private_key == base64.b64decode("AAev16ZVYhmCQliIYKXMje1zObRp6TmET0KiUx7MJXc=")
    assert cfg.addresses == [IPv4Interface("1.2.3.4/32")]
    assert cfg.listen_port is None and cfg.mtu is None and cfg.fwmark == 0
    [peer] = cfg.peers
    assert peer.public_key == base64.b64decode("+gXCSfkib2xFMeebKXIYBVZxV/Vh2mbi1dJeHCCjQmg=")
    assert peer.endpoint == EndpointSpec("5.6.7.8", 51820)
    assert peer.allowed_ips == [IPv4Network("9.10.11.0/24")]  # host bits masked, as wg does
    assert peer.persistent_keepalive == 25
    assert peer.preshared_key is None
    assert cfg.warnings == ['peers[0].allowedIPs[0]: "9.10.11.12/24" has host bits set; using 9.10.11.0/24']


def test_address_list_with_ipv4_and_ipv6() -> None:
    cfg = parse_config(jtext({"address": ["10.1.2.3", "fd00::3/64", "10.1.3.3/24"]}))
    assert cfg.addresses == [
        IPv4Interface("10.1.2.3/32"),
        IPv6Interface("fd00::3/64"),
        IPv4Interface("10.1.3.3/24"),
    ]


def test_address_without_prefix_is_a_host_address() -> None:
    assert parse_config(jtext({"address": "fd00::7"})).addresses == [IPv6Interface("fd00::7/128")]
    assert parse_config(jtext({"address": "10.0.0.7"})).addresses == [IPv4Interface("10.0.0.7/32")]


def test_address_inside_allowed_ips_is_fine() -> None:
    cfg = parse_config(jtext({"address": "10.1.2.3/32"}, allowedIPs=["10.1.2.0/24", "0.0.0.0/0"]))
    assert cfg.peers[0].allowed_ips == [IPv4Network("10.1.2.0/24"), IPv4Network("0.0.0.0/0")]
    assert cfg.warnings == []


def test_allowed_ips_may_be_empty_or_absent_and_endpoint_absent() -> None:
    assert parse_config(jtext(allowedIPs=[])).peers[0].allowed_ips == []
    cfg = parse_config(jtext(allowedIPs=DROP, endpoint=DROP, persistentKeepalive=DROP))
    assert cfg.peers[0] == PeerConfig(public_key=base64.b64decode(PUB1))


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (25, 25),
        (0, 0),
        (65535, 65535),
        ("25s", 25),
        ("1m30s", 90),
        ("1h", 3600),
        ("1h0m5s", 3605),
        ("1.5m", 90),
        (".5m", 30),
        ("2000ms", 2),
        ("3000000us", 3),
        ("3000000µs", 3),
        ("+5s", 5),
        ("0", 0),
        ("-0", 0),
        ("0s", 0),
        ("", 0),
        ("off", 0),
        ("25", 25),
        (None, 0),  # null: as if absent
    ],
)
def test_keepalive_integer_and_duration(value: object, seconds: int) -> None:
    assert parse_config(jtext(persistentKeepalive=value)).peers[0].persistent_keepalive == seconds


def test_extensions_listen_port_mtu_fwmark_psk() -> None:
    cfg = parse_config(
        jtext(
            {"listenPort": 51821, "mtu": 1380, "fwmark": "0xca6c", "address": ["10.0.0.2", "fd00::2"]},
            presharedKey=PSK,
        )
    )
    assert (cfg.listen_port, cfg.mtu, cfg.fwmark) == (51821, 1380, 0xCA6C)
    assert cfg.peers[0].preshared_key == base64.b64decode(PSK)
    assert parse_config(jtext({"fwmark": 51820})).fwmark == 51820
    assert parse_config(jtext({"listenPort": 0})).listen_port is None  # 0 = random, like none


def test_mtu_rules() -> None:
    assert parse_config(jtext({"mtu": 576})).mtu == 576  # IPv4 only
    assert parse_config(jtext({"mtu": 1280, "address": ["10.0.0.1", "fd00::1"]})).mtu == 1280
    with pytest.raises(ConfigError, match=r"mtu: 1279 is below 1280"):
        parse_config(jtext({"mtu": 1279, "address": ["10.0.0.1", "fd00::1"]}))
    cfg = parse_config(jtext({"mtu": 1000}, allowedIPs=["::/0"]))
    assert cfg.warnings == [
        "peers[0].allowedIPs: ::/0 is IPv6 but the MTU 1000 is below 1280; "
        "Linux carries no IPv6 on such a link"
    ]


def test_a_repeated_json_key_is_a_warning_and_the_last_one_wins() -> None:
    text = jtext().replace('"address"', '"address": "10.0.0.9", "address"', 1)
    cfg = parse_config(text)
    assert cfg.addresses == [IPv4Interface("10.1.2.3/32")]  # the last one wins, as in Go
    assert cfg.warnings == ["address: given more than once; the last one is used"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (jtext(allowedIP=["10.9.0.0/24"]), "peers[0].allowedIP: unknown key; did you mean allowedIPs?"),
        (jtext({"adress": "10.1.2.4/32"}), "adress: unknown key; did you mean address?"),
        (jtext(presharedkeys=PSK), "peers[0].presharedkeys: unknown key; did you mean presharedKey?"),
        (jtext({"listen_port": 1}), "listen_port: unknown key; did you mean listenPort?"),
        (
            jtext({"allowedIPs": ["0.0.0.0/0"]}),
            "allowedIPs: unknown key here (it belongs in each entry of peers)",
        ),
        (jtext(mtu=1280), "peers[0].mtu: unknown key here (it belongs at the top level)"),
        (jtext({"name": "wg"}), "name: unknown key"),
        (jtext(comment="x"), "peers[0].comment: unknown key"),
    ],
    ids=[
        "allowedIP",
        "adress",
        "presharedkeys",
        "listen_port",
        "peer-key-on-top",
        "top-key-in-peer",
        "name",
        "comment",
    ],
)
def test_an_unknown_json_key_is_an_error_naming_the_nearest_known_one(text: str, message: str) -> None:
    """A misspelt key would otherwise leave its setting out: a peer with no allowed IPs, no PSK."""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="config.json")
    assert str(caught.value) == f"config.json: {message}"


def test_unknown_key_named_like_a_key_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(jtext({PRIV: 1}))
    assert str(caught.value) == "<config>: (value hidden: it looks like key material): unknown key"


@pytest.mark.parametrize("text", [jtext({"address": DROP}), jtext({"address": []})], ids=["absent", "empty"])
def test_no_address_is_an_error_when_required_and_else_a_warning_naming_the_consequence(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^Secret config\.json: address: required: "):
        parse_config(text, source="Secret config.json", require_address=True)
    (warning,) = parse_config(text).warnings
    assert warning.startswith("address: none given: the interface gets no IP address")
    assert "AllowedIPs most likely refuse" in warning
    ini = format_wg_quick(parse_config(text))
    with pytest.raises(ConfigError, match=r"^wg0\.conf: line 1: \[Interface\] Address: required: "):
        parse_config(ini, source="wg0.conf", require_address=True)
    assert parse_config(ini).warnings[0].startswith("line 1: [Interface] Address: none given: ")


def test_json_keys_match_case_insensitively_like_go() -> None:
    text = jtext().replace('"privateKey"', '"PrivateKey"').replace('"allowedIPs"', '"allowedips"')
    cfg = parse_config(text)
    assert cfg.peers[0].allowed_ips == [IPv4Network("10.9.0.0/24")]
    assert cfg.warnings == []


def test_repr_hides_private_and_preshared_keys() -> None:
    cfg = parse_config(jtext(presharedKey=PSK))
    text = repr(cfg)
    assert "private_key" not in text and "preshared_key" not in text
    assert repr(base64.b64decode(PRIV)) not in text and repr(base64.b64decode(PSK)) not in text


def test_keys_may_have_surrounding_whitespace() -> None:
    assert parse_config(jtext({"privateKey": f" {PRIV}\n"})).private_key == base64.b64decode(PRIV)


def test_public_key_property() -> None:
    assert parse_config(jtext()).public_key == base64.b64decode(OWN_PUB)


# --------------------------------------------------------------------------------------------
# Endpoints and single values


@pytest.mark.parametrize(
    ("text", "host", "port", "shown"),
    [
        ("1.2.3.4:51820", "1.2.3.4", 51820, "1.2.3.4:51820"),
        ("[2001:DB8::1]:1", "2001:db8::1", 1, "[2001:db8::1]:1"),
        ("[fe80::1%eth0]:65535", "fe80::1%eth0", 65535, "[fe80::1%eth0]:65535"),
        ("vpn.example.com:51820", "vpn.example.com", 51820, "vpn.example.com:51820"),
        ("wg-gw.default.svc.cluster.local.:7", "wg-gw.default.svc.cluster.local.", 7, None),
        ("localhost:9", "localhost", 9, "localhost:9"),
        ("  10.0.0.1:53 ", "10.0.0.1", 53, "10.0.0.1:53"),
    ],
)
def test_parse_endpoint(text: str, host: str, port: int, shown: str | None) -> None:
    endpoint = parse_endpoint(text)
    assert endpoint == EndpointSpec(host, port)
    assert str(endpoint) == (shown or text.strip())


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("fe80::1:51820", "must be in brackets"),
        ("2001:db8::1", "must be in brackets"),
        ("host", "has no port"),
        ("[::1]", "has no port"),
        ("[::1:51820", "no closing bracket"),
        ("[10.0.0.1]:1", "only an IPv6 address goes in brackets"),
        ("[fe80::1%a#b]:1", "the scope must be an interface name or number"),
        ("host:0", "out of range 1..65535"),
        ("host:65536", "out of range 1..65535"),
        ("host:https", 'the port "https" is not a number'),
        ("host:", 'the port "" is not a number'),
        (":51820", "not an IP address or a valid host name"),
        ("bad_host!:1", "not an IP address or a valid host name"),
        ("-bad.example:1", "not an IP address or a valid host name"),
        ("a..b:1", "not an IP address or a valid host name"),
        ("10.1:51820", "not a valid IPv4 address"),
        ("1.2.3.256:1", "not a valid IPv4 address"),
        ("01.2.3.4:1", "not a valid IPv4 address"),
        ("", "is empty"),
    ],
)
def test_parse_endpoint_errors(text: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_endpoint(text, "peers[3].endpoint")
    assert str(info.value).startswith("peers[3].endpoint: ")
    assert reason in str(info.value)


def test_parse_allowed_ip_and_fwmark_helpers() -> None:
    assert parse_allowed_ip("10.0.0.1") == IPv4Network("10.0.0.1/32")
    assert parse_allowed_ip("fd00::1/64") == IPv6Network("fd00::/64")
    assert parse_fwmark("off") == 0
    assert parse_fwmark("0xFFFFFFFF") == 0xFFFFFFFF
    assert parse_fwmark("1234") == 1234
    assert parse_keepalive("1m") == 60


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1500ms", "not a whole number of seconds"),
        ("1s500ms", "not a whole number of seconds"),
        ("0.000000001s", "not a whole number of seconds"),
        ("1µs", "not a whole number of seconds"),
        ("-5s", "is negative"),
        ("18h12m16s", "above the maximum 65535 s"),
        ("70000", "out of range 0..65535"),
        ("25x", "neither a number of seconds nor a duration"),
        ("1e3s", "neither a number of seconds nor a duration"),
        ("5", None),
        (".s", "neither a number of seconds nor a duration"),
        ("1m-5s", "neither a number of seconds nor a duration"),
        ("s", "neither a number of seconds nor a duration"),
        ("-", "neither a number of seconds nor a duration"),
        ("9" * 100 + "s", "neither a number of seconds nor a duration"),
    ],
)
def test_keepalive_duration_errors(text: str, reason: str | None) -> None:
    if reason is None:
        assert parse_keepalive(text) == 5
        return
    with pytest.raises(ConfigError, match=f"^x: .*{reason}"):
        parse_keepalive(text, "x")


# --------------------------------------------------------------------------------------------
# wg-quick INI

INI = f"""# a wg-quick file
[Interface]
privatekey = {PRIV}   # lower-case keys work, as in wg-quick
Address = 10.0.0.2/24, fd00::2/64
Address = 10.0.1.2
ListenPort = 51820
FwMark = 0x20
MTU = 1420
DNS = 10.0.0.1, example.internal
PostUp = iptables -A FORWARD -i %i -j ACCEPT

[peer]
PublicKey = {PUB1}
PresharedKey = {PSK}
AllowedIPs = 10.0.0.0/24
ALLOWEDIPS = fd00::/64 , 192.168.0.0/16
Endpoint = [2001:db8::7]:51820
PersistentKeepalive = 25

  # the second peer
[Peer]
PublicKey = {PUB2}
AllowedIPs =
Endpoint = gw.example.net:4500
"""


def test_ini_with_comments_and_multiple_peers() -> None:
    cfg = parse_config(INI)
    assert cfg.private_key == base64.b64decode(PRIV)
    assert cfg.addresses == [
        ip_interface("10.0.0.2/24"),
        ip_interface("fd00::2/64"),
        ip_interface("10.0.1.2/32"),
    ]
    assert (cfg.listen_port, cfg.fwmark, cfg.mtu) == (51820, 0x20, 1420)
    assert cfg.dns == ["10.0.0.1", "example.internal"]
    first, second = cfg.peers
    assert first.public_key == base64.b64decode(PUB1)
    assert first.preshared_key == base64.b64decode(PSK)
    assert first.allowed_ips == [
        ip_network("10.0.0.0/24"),
        ip_network("fd00::/64"),
        ip_network("192.168.0.0/16"),
    ]
    assert first.endpoint == EndpointSpec("2001:db8::7", 51820)
    assert first.persistent_keepalive == 25
    assert second == PeerConfig(
        public_key=base64.b64decode(PUB2), endpoint=EndpointSpec("gw.example.net", 4500), allowed_ips=[]
    )
    assert cfg.warnings == [
        "line 10: [Interface] PostUp: pywg does not run wg-quick's hook commands; not run "
        "(`wg-quick up` with pywg-userspace as its WG_QUICK_USERSPACE_IMPLEMENTATION runs them)",
        "line 9: [Interface] DNS: pywg does not set name servers; ignored "
        "(`wg-quick up` with pywg-userspace as its WG_QUICK_USERSPACE_IMPLEMENTATION sets them)",
    ]


WG_QUICK_WITH_PYWG = "`wg-quick up` with pywg-userspace as its WG_QUICK_USERSPACE_IMPLEMENTATION"


def test_wg_quick_settings_pywg_does_not_apply_are_one_warning_each() -> None:
    lines = ["PreUp = a", "PostUp = b", "PostUp = c", "PreDown = d", "PostDown = e", "SaveConfig = true"]
    text = _ini("[Interface]", f"PrivateKey={PRIV}", "Address = 10.0.0.1", *lines, "DNS = 10.0.0.53, lan")
    hooks = [
        f"line {n}: [Interface] {key}: pywg does not run wg-quick's hook commands; not run "
        f"({WG_QUICK_WITH_PYWG} runs them)"
        for n, key in [(4, "PreUp"), (5, "PostUp"), (6, "PostUp"), (7, "PreDown"), (8, "PostDown")]
    ]
    assert parse_config(text).warnings == [
        *hooks,
        "line 9: [Interface] SaveConfig: pywg never writes the configuration back to the file; ignored",
        f"line 10: [Interface] DNS: pywg does not set name servers; ignored ({WG_QUICK_WITH_PYWG} sets them)",
    ]


@pytest.mark.parametrize("setting", ["Table = auto", "table = Main", "SaveConfig = false"])
def test_wg_quick_settings_that_ask_for_what_pywg_does_are_silent(setting: str) -> None:
    text = _ini("[Interface]", f"PrivateKey={PRIV}", "Address = 10.0.0.1", setting)
    assert parse_config(text).warnings == []


def test_ini_overlapping_allowed_ips_between_peers_warns() -> None:
    text = (
        f"[Interface]\nPrivateKey={PRIV}\nAddress=10.0.0.1\n[Peer]\nPublicKey={PUB1}\nAllowedIPs=10.0.0.0/8\n"
    )
    text += f"[Peer]\nPublicKey={PUB2}\nAllowedIPs=10.0.0.0/8\n"
    assert parse_config(text).warnings == [
        "line 7: [Peer] #2 AllowedIPs: 10.0.0.0/8 is also allowed for [Peer] #1 (line 4); "
        "WireGuard gives it to the later peer"
    ]


# --------------------------------------------------------------------------------------------
# Round trips


def test_round_trips() -> None:
    for cfg in (parse_config(INI), parse_config(GUIDE_EXAMPLE), parse_config(jtext(presharedKey=PSK))):
        assert parse_config(format_wg_quick(cfg)) == cfg
        again = parse_config(to_json(cfg))
        assert again == dataclasses.replace(cfg, dns=[])  # JSON carries no DNS
        assert to_json(again) == to_json(cfg)


def test_to_json_is_schu_compatible() -> None:
    doc = json.loads(to_json(parse_config(GUIDE_EXAMPLE)))
    assert doc == {
        "address": "1.2.3.4/32",
        "privateKey": "AAev16ZVYhmCQliIYKXMje1zObRp6TmET0KiUx7MJXc=",
        "peers": [
            {
                "endpoint": "5.6.7.8:51820",
                "publicKey": "+gXCSfkib2xFMeebKXIYBVZxV/Vh2mbi1dJeHCCjQmg=",
                "allowedIPs": ["9.10.11.0/24"],
                "persistentKeepalive": "25s",
            }
        ],
    }
    assert json.loads(to_json(parse_config(jtext(persistentKeepalive=3605))))["peers"][0][
        "persistentKeepalive"
    ] == ("1h0m5s")


def _networks() -> st.SearchStrategy[IPv4Network | IPv6Network]:
    v4 = st.tuples(st.ip_addresses(v=4), st.integers(0, 32)).map(lambda t: IPv4Network(t, strict=False))
    v6 = st.tuples(st.ip_addresses(v=6), st.integers(0, 128)).map(lambda t: IPv6Network(t, strict=False))
    return v4 | v6


_interfaces = st.tuples(st.ip_addresses(v=4), st.integers(0, 32)).map(IPv4Interface) | st.tuples(
    st.ip_addresses(v=6), st.integers(0, 128)
).map(IPv6Interface)
_labels = st.text(string.ascii_lowercase + string.digits + "-", min_size=1, max_size=10).filter(
    lambda s: s[0] != "-" and s[-1] != "-"
)
_hosts = (
    st.ip_addresses(v=4).map(str)
    | st.ip_addresses(v=6).map(str)
    | st.lists(_labels, min_size=1, max_size=3).map(lambda ls: ".".join([*ls, "example"]))
)
_endpoints = st.builds(EndpointSpec, _hosts, st.integers(1, 65535))
_keys = st.binary(min_size=32, max_size=32)


@st.composite
def _configs(draw: st.DrawFn) -> InterfaceConfig:
    private_key = draw(_keys)
    addresses = draw(st.lists(_interfaces, max_size=3, unique_by=lambda a: a.ip))
    own = X25519PrivateKey.from_private_bytes(private_key).public_key().public_bytes_raw()
    public_keys = draw(st.lists(_keys.filter(lambda k: k != own), max_size=3, unique=True))
    peers = [
        PeerConfig(
            public_key=key,
            preshared_key=draw(st.none() | _keys),
            endpoint=draw(st.none() | _endpoints),
            allowed_ips=draw(st.lists(_networks(), max_size=4, unique=True)),
            persistent_keepalive=draw(st.integers(0, 65535)),
        )
        for key in public_keys
    ]
    ipv6 = any(a.version == 6 for a in addresses)
    return InterfaceConfig(
        private_key=private_key,
        addresses=addresses,
        listen_port=draw(st.none() | st.integers(1, 65535)),
        mtu=draw(st.none() | st.integers(1280 if ipv6 else 576, 65535)),
        fwmark=draw(st.integers(0, 2**32 - 1)),
        peers=peers,
    )


@settings(max_examples=200, deadline=None)
@given(_configs())
def test_round_trip_property(cfg: InterfaceConfig) -> None:
    assert parse_config(format_wg_quick(cfg)) == cfg
    assert parse_config(to_json(cfg)) == cfg


# --------------------------------------------------------------------------------------------
# Errors: each names the exact place, and never shows key material


def _ini(*lines: str) -> str:
    return "\n".join(lines) + "\n"


BAD_INPUTS: list[tuple[str, str, str]] = [
    # (id, text, exact text that must appear in the message)
    ("empty", "", "<config>: the configuration is empty"),
    ("blank", " \n\t\n", "the configuration is empty"),
    ("bom only", "\ufeff", "the configuration is empty"),
    ("json truncated", '{"privateKey": ', "invalid JSON at line 1 column 16: Expecting value"),
    ("json trailing comma", '{\n  "privateKey": "x",\n}', "invalid JSON at line 3 column 1"),
    ("json extra data", "{} []", "invalid JSON at line 1 column 4: Extra data"),
    ("json deep", '{"a":' + "[" * 100_000, "invalid JSON: nested too deeply"),
    ("json huge number", '{"mtu": 1' + "0" * 5000 + "}", "invalid JSON: a number is too long"),
    ("no private key", jtext({"privateKey": DROP}), "<config>: privateKey: required"),
    ("null private key", jtext({"privateKey": None}), "privateKey: required"),
    ("private key type", jtext({"privateKey": 12}), "privateKey: expected a string, got a number"),
    ("private key b64", jtext({"privateKey": PRIV[:-2] + "!="}), "privateKey: not base64"),
    (
        "private key short",
        jtext({"privateKey": _b64(b"x" * 31)}),
        "privateKey: not base64",
    ),
    (
        "private key stray bits",
        jtext({"privateKey": NONCANONICAL}),
        "privateKey: not the base64 of a 32-byte",
    ),
    ("private key empty", jtext({"privateKey": ""}), "privateKey: is empty"),
    (
        "address type",
        jtext({"address": 7}),
        "address: expected a string or an array of strings, got a number",
    ),
    ("address prefix", jtext({"address": "10.1.2.3/33"}), 'address: "10.1.2.3/33" is not an interface'),
    ("address comma", jtext({"address": "10.0.0.1/32,fd00::1"}), "use a list for several"),
    ("address item", jtext({"address": ["10.0.0.1", "fd00::1/129"]}), "address[1]: "),
    ("address item type", jtext({"address": ["10.0.0.1", None]}), "address[1]: expected a string, got null"),
    (
        "address twice",
        jtext({"address": ["10.0.0.1/32", "10.0.0.1/24"]}),
        "address[1]: 10.0.0.1 is given twice",
    ),
    ("address scope", jtext({"address": "fe80::1%eth0/64"}), "address: "),
    ("listenPort range", jtext({"listenPort": 70000}), "listenPort: 70000 is out of range 0..65535"),
    ("listenPort neg", jtext({"listenPort": -1}), "listenPort: -1 is out of range"),
    ("listenPort text", jtext({"listenPort": "abc"}), 'listenPort: "abc" is not a port number'),
    ("listenPort bool", jtext({"listenPort": True}), "listenPort: expected an integer, got a boolean"),
    ("mtu low", jtext({"mtu": 575}), "mtu: 575 is out of range 576..65535"),
    ("mtu high", jtext({"mtu": 65536}), "mtu: 65536 is out of range"),
    ("mtu float", jtext({"mtu": 1420.0}), "mtu: expected an integer, got a number"),
    ("mtu ipv6", jtext({"mtu": 1000, "address": ["10.0.0.1", "fd00::1"]}), "mtu: 1000 is below 1280"),
    ("fwmark big", jtext({"fwmark": "0x1ffffffff"}), "fwmark: 8589934591 is out of range 0..4294967295"),
    ("fwmark octal", jtext({"fwmark": "010"}), 'fwmark: "010" is ambiguous'),
    ("fwmark text", jtext({"fwmark": "zz"}), 'fwmark: "zz" is not a number'),
    ("fwmark type", jtext({"fwmark": [1]}), "fwmark: expected an integer, got an array"),
    ("top level", '{"a": 1} ', "a: unknown key"),
    ("no private key", '{"address": "10.0.0.1"} ', "privateKey: required"),
    ("peers type", jtext({"peers": {}}), "peers: expected an array, got an object"),
    ("peer type", jtext({"peers": ["x"]}), "peers[0]: expected an object, got a string"),
    ("no public key", jtext(publicKey=DROP), "peers[0].publicKey: required"),
    ("public key b64", jtext(publicKey="abc"), "peers[0].publicKey: a key is 44 characters of base64, got 3"),
    ("public key type", jtext(publicKey=[PUB1]), "peers[0].publicKey: expected a string, got an array"),
    ("own public key", jtext(publicKey=OWN_PUB), "peers[0].publicKey: is this interface's own public key"),
    (
        "duplicate peer",
        jtext({"peers": [{"publicKey": PUB1}, {"publicKey": PUB2}, {"publicKey": PUB1}]}),
        "peers[2].publicKey: the same public key as peers[0]",
    ),
    (
        "psk b64",
        jtext(presharedKey="short"),
        "peers[0].presharedKey: a key is 44 characters of base64, got 5",
    ),
    ("psk type", jtext(presharedKey=1), "peers[0].presharedKey: expected a string"),
    (
        "allowed prefix",
        jtext(allowedIPs=["10.9.0.0/24", "10.9.0.0/33"]),
        'peers[0].allowedIPs[1]: "10.9.0.0/33" is not an IP network (prefix length 33 > 32)',
    ),
    (
        "allowed v6 prefix",
        jtext(allowedIPs=["fd00::/129"]),
        'peers[0].allowedIPs[0]: "fd00::/129" is not an IP network (prefix length 129 > 128)',
    ),
    (
        "allowed junk",
        jtext(allowedIPs=["10.9.0/24"]),
        'peers[0].allowedIPs[0]: "10.9.0/24" is not an IP network ("10.9.0" is not an IPv4 or IPv6 address)',
    ),
    ("allowed len text", jtext(allowedIPs=["10.0.0.0/x"]), 'prefix length "x" is not a number'),
    (
        "allowed string",
        jtext(allowedIPs="10.9.0.0/24"),
        "peers[0].allowedIPs: expected an array, got a string",
    ),
    ("allowed item type", jtext(allowedIPs=[{}]), "peers[0].allowedIPs[0]: expected a string, got an object"),
    ("endpoint v6", jtext(endpoint="fd00::1:51820"), "peers[0].endpoint: "),
    ("endpoint port", jtext(endpoint="1.2.3.4:0"), "peers[0].endpoint: "),
    ("endpoint type", jtext(endpoint=51820), "peers[0].endpoint: expected a string, got a number"),
    ("endpoint is a key", jtext(endpoint=PRIV + ":1"), "peers[0].endpoint: (value hidden"),
    ("keepalive ms", jtext(persistentKeepalive="1500ms"), "peers[0].persistentKeepalive: "),
    (
        "keepalive range",
        jtext(persistentKeepalive=65536),
        "peers[0].persistentKeepalive: 65536 is out of range",
    ),
    ("keepalive neg", jtext(persistentKeepalive=-1), "peers[0].persistentKeepalive: -1 is out of range"),
    ("keepalive bool", jtext(persistentKeepalive=True), "peers[0].persistentKeepalive: expected seconds"),
    ("keepalive float", jtext(persistentKeepalive=2.5), "peers[0].persistentKeepalive: expected seconds"),
    ("keepalive junk", jtext(persistentKeepalive="soon"), "peers[0].persistentKeepalive: "),
    # wg-quick INI
    ("ini no interface", _ini("# nothing", "[Peer]", f"PublicKey = {PUB1}"), "no [Interface] section"),
    ("ini garbage", "hello world", "<config>: line 1: expected `Key = Value` or a [Section] header"),
    ("ini before section", _ini(f"PrivateKey = {PRIV}"), "line 1: PrivateKey comes before any"),
    ("ini bad section", _ini("[Interface]", "[Peers]"), 'line 2: "[Peers]" is not [Interface] or [Peer]'),
    ("ini second interface", _ini("[Interface]", "[Interface]"), "line 2: a second [Interface] section"),
    (
        "ini no private key",
        _ini("", "[Interface]", "ListenPort = 1"),
        "line 2: [Interface] PrivateKey: required",
    ),
    (
        "ini bad private key",
        _ini("[Interface]", "PrivateKey = abc"),
        "line 2: [Interface] PrivateKey: a key is 44 characters",
    ),
    ("ini stray key line", _ini("[Interface]", PRIV), "line 2: [Interface] (value hidden"),
    ("ini stray key header", _ini(f"[{PRIV}]"), "line 1: (value hidden"),
    (
        "ini unknown key",
        _ini("[Interface]", f"PrivateKey = {PRIV}", "Foo = 1"),
        "line 3: [Interface] Foo: unknown key",
    ),
    (
        "ini peer key in iface",
        _ini("[Interface]", f"PublicKey = {PUB1}"),
        "line 2: [Interface] PublicKey: unknown",
    ),
    (
        "ini twice",
        _ini("[Interface]", f"PrivateKey = {PRIV}", "ListenPort = 1", "listenport = 2"),
        "line 4: [Interface] ListenPort: given twice (first on line 3)",
    ),
    (
        "ini no equals",
        _ini("[Interface]", f"PrivateKey = {PRIV}", "Address"),
        "line 3: expected `Key = Value`",
    ),
    (
        "ini address",
        _ini("[Interface]", f"PrivateKey = {PRIV}", "Address = 10.0.0.1/24, 10.0.0.300/24"),
        'line 3: [Interface] Address: "10.0.0.300/24" is not an interface address',
    ),
    (
        "ini empty item",
        _ini("[Interface]", f"PrivateKey={PRIV}", "Address = 10.0.0.1,,"),
        "line 3: [Interface] Address: is empty",
    ),
    ("ini dns", _ini("[Interface]", f"PrivateKey={PRIV}", "DNS = 1.1.1"), "line 3: [Interface] DNS: "),
    (
        "ini mtu",
        _ini("[Interface]", f"PrivateKey={PRIV}", "MTU = 50"),
        "line 3: [Interface] MTU: 50 is out of range",
    ),
    (
        "ini mtu ipv6",
        _ini("[Interface]", f"PrivateKey={PRIV}", "Address = fd00::1", "MTU = 1200"),
        "line 4: [Interface] MTU: 1200 is below 1280",
    ),
    ("ini fwmark", _ini("[Interface]", f"PrivateKey={PRIV}", "FwMark = 0xz"), "line 3: [Interface] FwMark: "),
    (
        "ini port",
        _ini("[Interface]", f"PrivateKey={PRIV}", "ListenPort = 65536"),
        "line 3: [Interface] ListenPort: ",
    ),
    (
        "ini peer no key",
        _ini(
            "[Interface]",
            f"PrivateKey={PRIV}",
            "[Peer]",
            f"PublicKey={PUB1}",
            "",
            "[Peer]",
            "AllowedIPs=::/0",
        ),
        "line 6: [Peer] #2 PublicKey: required",
    ),
    (
        "ini peer allowed",
        _ini(
            "[Interface]",
            f"PrivateKey={PRIV}",
            "[Peer]",
            f"PublicKey={PUB1}",
            "[Peer]",
            f"PublicKey={PUB2}",
            "AllowedIPs = 10.8.0.0/24",
            "# a comment",
            "AllowedIPs = 10.9.0.0/24, 10.9.0.0/33",
        ),
        'line 9: [Peer] #2 AllowedIPs: "10.9.0.0/33" is not an IP network (prefix length 33 > 32)',
    ),
    (
        "ini duplicate peer",
        _ini(
            "[Interface]", f"PrivateKey={PRIV}", "[Peer]", f"PublicKey={PUB1}", "[Peer]", f"PublicKey={PUB1}"
        ),
        "line 6: [Peer] #2 PublicKey: the same public key as [Peer] #1 (line 3)",
    ),
    (
        "ini own key",
        _ini("[Interface]", f"PrivateKey={PRIV}", "[Peer]", f"PublicKey={OWN_PUB}"),
        "line 4: [Peer] #1 PublicKey: is this interface's own public key",
    ),
    (
        "ini psk",
        _ini(
            "[Interface]", f"PrivateKey={PRIV}", "[Peer]", f"PublicKey={PUB1}", "PresharedKey = " + PSK[:-4]
        ),
        "line 5: [Peer] #1 PresharedKey: ",
    ),
    (
        "ini endpoint",
        _ini("[Interface]", f"PrivateKey={PRIV}", "[Peer]", f"PublicKey={PUB1}", "Endpoint = 2001:db8::1"),
        "line 5: [Peer] #1 Endpoint: ",
    ),
    (
        "ini keepalive",
        _ini(
            "[Interface]", f"PrivateKey={PRIV}", "[Peer]", f"PublicKey={PUB1}", "PersistentKeepalive = 1500ms"
        ),
        "line 5: [Peer] #1 PersistentKeepalive: ",
    ),
    (
        "ini table in peer",
        _ini("[Interface]", f"PrivateKey={PRIV}", "[Peer]", f"PublicKey={PUB1}", "Table = off"),
        "line 5: [Peer] #1 Table: unknown key here (it belongs in [Interface])",
    ),
    (
        "ini misspelt key",
        _ini("[Interface]", f"PrivateKey={PRIV}", "[Peer]", f"PublicKey={PUB1}", "AllowedIP = 10.0.0.0/8"),
        "line 5: [Peer] #1 AllowedIP: unknown key; did you mean AllowedIPs?",
    ),
    (
        "ini peer key in interface",
        _ini("[Interface]", f"PrivateKey={PRIV}", "Endpoint = 192.0.2.1:51820"),
        "line 3: [Interface] Endpoint: unknown key here (it belongs in [Peer])",
    ),
    # Routes in another table or none: pywg would add the routes this forbids.
    (
        "ini table off",
        _ini("[Interface]", f"PrivateKey={PRIV}", "Table = off"),
        'line 3: [Interface] Table: "off" is not supported: pywg routes every AllowedIPs prefix',
    ),
    (
        "ini table number",
        _ini("[Interface]", f"PrivateKey={PRIV}", "Table = 1234"),
        'line 3: [Interface] Table: "1234" is not supported: ',
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [(t, e) for _, t, e in BAD_INPUTS], ids=[i for i, _, _ in BAD_INPUTS]
)
def test_bad_input(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    message = str(info.value)
    assert message.startswith("<config>: ")
    assert expected in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert_no_key_material(message)


def test_source_names_the_file() -> None:
    with pytest.raises(ConfigError, match=r"^secret default/wg config\.json: privateKey: required$"):
        parse_config("{}", source="secret default/wg config.json")


def test_load_config(tmp_path: Path) -> None:
    path = tmp_path / "wg0.conf"
    path.write_text(INI)
    path.chmod(0o600)
    assert load_config(path) == parse_config(INI)
    # Every warning names the file.
    assert load_config(str(path)).warnings == [f"{path}: {warning}" for warning in parse_config(INI).warnings]
    path.chmod(0o644)
    assert (
        load_config(path).warnings[-1] == f"{path}: the file is world accessible, and it holds a private key"
    )
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match=r"wg0\.conf: not UTF-8 text"):
        load_config(path)
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.json")


# --------------------------------------------------------------------------------------------
# Fuzzing: only ever ConfigError


def _parse_or_config_error(text: str) -> None:
    try:
        cfg = parse_config(text)
    except ConfigError as exc:
        assert_no_key_material(str(exc))
        return
    assert isinstance(cfg, InterfaceConfig)
    # Whatever parsed must also survive being written out and read back.
    assert parse_config(format_wg_quick(cfg)) == cfg
    assert parse_config(to_json(cfg)) == dataclasses.replace(cfg, dns=[])


_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.sampled_from(
        [
            PRIV,
            PUB1,
            PUB2,
            OWN_PUB,
            PSK,
            "",
            "25s",
            "1m30s",
            "1500ms",
            "-1s",
            "10.0.0.1/32",
            "fd00::1/64",
            "10.9.0.0/33",
            "0.0.0.0/0",
            "::/0",
            "host.example:51820",
            "[::1]:1",
            "::1:1",
            "0x10",
            "off",
            "1280",
        ]
    )
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_top_keys = st.sampled_from(
    ["address", "privateKey", "listenPort", "mtu", "fwmark", "peers", "PRIVATEKEY", "x"]
)
_peer_keys = st.sampled_from(
    ["endpoint", "publicKey", "presharedKey", "allowedIPs", "persistentKeepalive", "AllowedIps", "y"]
)


@st.composite
def _mutated_docs(draw: st.DrawFn) -> str:
    """A valid document with some fields replaced by arbitrary JSON values."""
    doc = jdoc(presharedKey=PSK)
    doc["peers"].append({"publicKey": PUB2, "allowedIPs": ["fd00::/64"]})
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            doc[draw(_top_keys)] = draw(_json_values)
        else:
            peers = doc.get("peers")
            if isinstance(peers, list) and peers and isinstance(peers[0], dict):
                peers[0][draw(_peer_keys)] = draw(_json_values)
            elif draw(st.booleans()):
                doc["peers"] = [{draw(_peer_keys): draw(_json_values)}]
    return json.dumps(doc)


_ini_keys = st.sampled_from(
    [
        "PrivateKey",
        "ListenPort",
        "FwMark",
        "Address",
        "DNS",
        "MTU",
        "Table",
        "PublicKey",
        "PresharedKey",
        "AllowedIPs",
        "Endpoint",
        "PersistentKeepalive",
        "allowedips",
        "Bogus",
    ]
)
_ini_values = _json_scalars.map(lambda v: v if isinstance(v, str) else json.dumps(v)) | st.text(max_size=20)


@st.composite
def _ini_docs(draw: st.DrawFn) -> str:
    lines = ["[Interface]", f"PrivateKey = {PRIV}"]
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            lines.append(draw(st.sampled_from(["[Peer]", "[Interface]", "[peer]", "[", "[]", "# c", ""])))
        elif kind == 1:
            lines.append(draw(st.text(max_size=30)))
        else:
            lines.append(f"{draw(_ini_keys)} = {draw(_ini_values)}")
    return "\n".join(lines)


_fuzz = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_fuzz
@given(st.text())
def test_fuzz_arbitrary_text(text: str) -> None:
    _parse_or_config_error(text)


@_fuzz
@given(st.text(alphabet=st.sampled_from('{}[]:,"\\ 0123456789.-eE\n\tabtrufnlsx'), max_size=60))
def test_fuzz_json_syntax(text: str) -> None:
    _parse_or_config_error("{" + text)


@_fuzz
@given(_json_values)
def test_fuzz_json_values_at_top(value: object) -> None:
    _parse_or_config_error(json.dumps({"privateKey": PRIV, "peers": value}))
    _parse_or_config_error(json.dumps({"privateKey": PRIV, "address": value}))
    _parse_or_config_error(json.dumps({"privateKey": value}))


@_fuzz
@given(_mutated_docs())
def test_fuzz_mutated_documents(text: str) -> None:
    _parse_or_config_error(text)


@_fuzz
@given(_ini_docs())
def test_fuzz_ini(text: str) -> None:
    _parse_or_config_error(text)


def test_allowed_prefixes_are_every_peers_once_in_order() -> None:
    peers = [
        PeerConfig(public_key=bytes([n]) * 32, allowed_ips=[ip_network(p) for p in prefixes])
        for n, prefixes in enumerate((["10.0.0.0/24", "10.9.0.1/32"], ["10.0.0.0/24", "fd00::/64"], []))
    ]
    cfg = InterfaceConfig(private_key=bytes(32), peers=peers)
    assert cfg.allowed_prefixes == [ip_network(p) for p in ("10.0.0.0/24", "10.9.0.1/32", "fd00::/64")]


@given(st.text(alphabet="0123456789.x ٣", max_size=20) | st.ip_addresses(v=4).map(str))
def test_the_dotted_quad_fast_path_reads_as_ipaddress_does(text: str) -> None:
    """pywg.config.fields._ipv4: the same address as IPv4Address(text), or None to let it decide."""
    try:
        expected: IPv4Address | None = IPv4Address(text)
    except ValueError:
        expected = None
    found = fields._ipv4(text)
    assert found is None or found == expected  # never another answer than ipaddress
    if expected is not None and text == str(expected):
        assert found == expected  # and every canonical dotted quad takes the fast path
