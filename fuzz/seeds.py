"""Writes the seed corpora, fuzz/corpus/<target>/seed-*: valid inputs of every kind, by hand.

    python3 fuzz/seeds.py

Deterministic, except for the kubeconfig seeds' certificate and key (made afresh, test-only).
The other inputs there (regress-*, the crash inputs of fixed bugs; inputs `make fuzz
FUZZ_ARGS=--merge` kept) are left alone.
"""

from __future__ import annotations

import base64
import json
import random
import struct
from collections.abc import Iterator
from pathlib import Path

import fuzz_k8s_answers
import fuzz_kubeconfig
import fuzz_messages as m
import fuzz_tun_offload
import fuzz_uapi
from _common import Writer

from pywg.core.crypto import clamp, public_key
from pywg.runtime import offload

ROOT = Path(__file__).resolve().parent
CORPUS = ROOT / "corpus"
EXAMPLES = ROOT.parent / "deploy" / "examples"


def key(seed: int) -> bytes:
    return clamp(random.Random(seed).randbytes(32))


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


PRIVATE, PEER, PEER2, PSK = b64(key(21)), b64(public_key(key(22))), b64(public_key(key(23))), b64(key(24))


def write(target: str, seeds: Iterator[tuple[str, bytes]]) -> None:
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("seed-*"):
        old.unlink()
    for name, data in seeds:
        (directory / f"seed-{name}").write_bytes(data)


# --------------------------------------------------------------------------------------------
# Messages: steps as fuzz_messages.py reads them.

STEP = {step.__name__: m.STEPS.index(step) for step in m.STEPS}
TEMPLATE_NAMES = ("initiation", "response", "cookie-reply", "data-v4", "data-v6", "keepalive")


def step(w: Writer, name: str) -> Writer:
    return w.below(STEP[name], len(m.STEPS))


def deliver(w: Writer, count: int = 1) -> Writer:
    return step(w, "step_deliver").below(count - 1, 4)


def addressed(w: Writer, source: int = 0) -> Writer:
    return w.below(source, len(m.SOURCES)).below(0, len(m.LOCALS))


def raw(w: Writer, data: bytes, source: int = 0) -> Writer:
    return addressed(w.below(0, 3).blob(data), source)


def template(
    w: Writer, index: int, flips: tuple[int, ...] = (), remac: bool = True, source: int = 0
) -> Writer:
    w.below(1, 3).below(index, len(m.TEMPLATES)).below(len(flips), 4)
    for at in flips:
        w.int(at, 2).below(0, 4).int(0xFF)
    return addressed(w.below(int(remac), 2), source)


def sealed(w: Writer, counter: int, how: int, payload: bytes, pair: int = 0, extra: bytes = b"") -> Writer:
    w.below(2, 3).below(1, 2).int(counter, 2).below(how, 4).blob(payload)
    if how:
        w.below(pair, len(m.INNER_FROM_PEERS)).bytes(extra)
    return addressed(w)


def mac2_flow() -> Writer:
    """Under load: C's initiation gets a cookie reply, and C's retry carries a MAC2 that passes."""
    w = step(step(Writer(), "step_load"), "step_peer_sends").int(0).blob(b"x")
    w = step(step(w, "step_pump"), "step_pump")
    return step(step(step(w, "step_timers").int(3).int(8), "step_load"), "step_pump")


def message_seeds() -> Iterator[tuple[str, bytes]]:
    for index, name in enumerate(TEMPLATE_NAMES):
        source = 1 if name in ("response", "cookie-reply") else 0
        yield f"raw-{name}", raw(deliver(Writer()), m.TEMPLATES[index], source).data
        yield f"template-{name}", template(deliver(Writer()), index, source=source).data
    yield "initiation-flipped-remac", template(deliver(Writer()), 0, flips=(40, 100)).data
    yield "response-flipped", template(deliver(Writer()), 1, flips=(20,), source=1).data
    yield "sealed-v4", sealed(deliver(Writer()), 5, 1, b"hello").data
    yield "sealed-v4-not-allowed", sealed(deliver(Writer()), 6, 1, b"hi", pair=1).data
    yield "sealed-v6", sealed(deliver(Writer()), 7, 1, b"six", pair=3).data
    yield "sealed-keepalive", sealed(deliver(Writer()), 8, 0, b"").data
    yield "sealed-bad-length", sealed(deliver(Writer()), 9, 2, b"x" * 30, extra=b"\xff\xff").data
    yield "sealed-padded", sealed(deliver(Writer()), 10, 3, b"pad", extra=b"\x0f").data
    replayed = sealed(deliver(Writer(), 2), 3, 1, b"again")
    yield "sealed-replayed", sealed(replayed, 3, 1, b"again").data
    yield "batch-mixed", raw(template(sealed(deliver(Writer(), 3), 4, 1, b"a"), 3), b"\x04\0\0\0").data
    yield (
        "pump-timers",
        step(step(step(Writer(), "step_pump"), "step_timers").int(5).int(0), "step_pump").data,
    )
    for jump in (6, 7, 8, 9):
        yield f"timers-{m.CLOCK_JUMPS[jump]:g}s", step(Writer(), "step_timers").int(jump).int(0).data
    yield "under-load", template(deliver(step(Writer(), "step_load")), 0).data
    yield (
        "under-load-pump",
        step(step(step(Writer(), "step_peer_sends").int(1).blob(b""), "step_load"), "step_pump").data,
    )
    later = step(Writer(), "step_timers").int(2).int(0)  # 1 s: past the initiation flood limit
    yield "initiation-after-1s", template(deliver(later), 0).data
    yield "mac2-after-cookie", mac2_flow().data
    yield "tun", step(Writer(), "step_tun").below(0, 4).below(1, 4).blob(b"p").below(0, 5).data
    yield "peer-c-session", template(deliver(Writer()), 1, source=1).data + step(Writer(), "step_pump").data
    yield "peer-a-sends", step(step(Writer(), "step_peer_sends").int(1).blob(b"data"), "step_pump").data


# --------------------------------------------------------------------------------------------
# UAPI: chunk size, line limit, stream.


def hexkey(text: str) -> str:
    return base64.b64decode(text).hex()


def uapi_seeds() -> Iterator[tuple[str, bytes]]:
    first = fuzz_uapi.PEER_KEYS[0].hex()
    full = (
        f"set=1\nprivate_key={hexkey(PRIVATE)}\nlisten_port=51820\nfwmark=0x0\nreplace_peers=true\n"
        f"public_key={hexkey(PEER)}\npreshared_key={hexkey(PSK)}\nendpoint=192.0.2.7:51820\n"
        "persistent_keepalive_interval=25\nreplace_allowed_ips=true\nallowed_ip=10.0.0.0/24\n"
        f"allowed_ip=fd00::/64\nprotocol_version=1\npublic_key={hexkey(PEER2)}\nendpoint=[2001:db8::7]:51820\n"
        "allowed_ip=0.0.0.0/0\n\n"
    )
    streams = {
        "get": "get=1\n\n",
        "stats": "stats=1\n\n",
        "set-full": full,
        "set-then-get": full + "get=1\n\n",
        "update-only-remove": f"set=1\npublic_key={first}\nupdate_only=true\nallowed_ip=-10.0.0.0/24\n"
        f"remove=true\n\n",
        "endpoint-zone": f"set=1\npublic_key={first}\nendpoint=[fe80::1%eth0]:1\n\n",
        "busy-port-fwmark": "set=1\nlisten_port=1\n\nset=1\nfwmark=1\n\n",
        "errors": "set=1\nbogus=1\n\nset=1\nnoequals\n\nget=1\nx=1\n\nflush=1\n\n",
        "own-key-section": f"set=1\nprivate_key={hexkey(PRIVATE)}\npublic_key={public_key(key(21)).hex()}\n"
        "allowed_ip=10.1.0.0/16\n\n",
    }
    for name, stream in streams.items():
        yield name, bytes([0xFF, 0]) + stream.encode()
        yield f"{name}-chunked", bytes([2, 0]) + stream.encode()
    yield "overflow", bytes([63, 1]) + b"set=1\nallowed_ip=" + b"1" * 300 + b"\n\n"


# --------------------------------------------------------------------------------------------
# Configurations.


def json_docs() -> Iterator[tuple[str, dict[str, object]]]:
    for path in sorted(EXAMPLES.rglob("*config.json")):
        text = path.read_text().replace("REPLACE_WITH_POD_PRIVATE_KEY", PRIVATE)
        yield (
            f"example-{path.parent.name}-{path.stem}",
            json.loads(text.replace("REPLACE_WITH_PEER_PUBLIC_KEY", PEER)),
        )
    yield "minimal", {"privateKey": PRIVATE}
    yield (
        "extended",
        {
            "address": ["10.1.2.3", "fd00::3/64"],
            "privateKey": PRIVATE,
            "listenPort": 51820,
            "mtu": 1380,
            "fwmark": "0x1f",
            "peers": [
                {
                    "endpoint": "[2001:db8::1]:51820",
                    "publicKey": PEER,
                    "presharedKey": PSK,
                    "allowedIPs": ["::/0"],
                },
                {"endpoint": "vpn.example.org:51820", "publicKey": PEER2, "persistentKeepalive": "1m30s"},
            ],
            "unknown": [1, 2.5, None, True],
        },
    )


def config_json_seeds() -> Iterator[tuple[str, bytes]]:
    for name, doc in json_docs():
        yield name, json.dumps(doc, indent=2).encode()
    yield "case-and-repeats", f'{{"PRIVATEKEY": "x", "privatekey": "{PRIVATE}", "Peers": []}}'.encode()


INI = f"""[Interface]
# a comment
PrivateKey = {PRIVATE}
Address = 10.0.0.2/24, fd00::2/64
ListenPort = 51820
FwMark = 0x1234
MTU = 1420
DNS = 10.0.0.1, example.org
Table = off
PostUp = echo up

[Peer]
PublicKey = {PEER}
PresharedKey = {PSK}
AllowedIPs = 10.0.0.0/24, fd00::/64
AllowedIPs = 192.168.0.0/16
Endpoint = [2001:db8::1]:51820
PersistentKeepalive = 25

[peer]
publickey = {PEER2}
endpoint = vpn.example.org:51820
allowedips = 0.0.0.0/0, ::/0
"""


def ini_seeds() -> Iterator[tuple[str, bytes]]:
    yield "full", INI.encode()
    yield "minimal", f"[Interface]\nPrivateKey = {PRIVATE}\n".encode()
    yield "crlf-bom", ("\ufeff" + INI.replace("\n", "\r\n")).encode()
    yield "bad-lines", f"[Interface]\nPrivateKey = {PRIVATE}\nBogus = 1\n[Peer\nno equals\n".encode()


# --------------------------------------------------------------------------------------------
# CNI invocations: the environment, an empty line, stdin.

ENV = {
    "CNI_CONTAINERID": "c0ffee",
    "CNI_NETNS": "/var/run/netns/pod",
    "CNI_IFNAME": "net1",
    "CNI_ARGS": "IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME=wireguard-pod;K8S_POD_UID=u-1",
    "CNI_PATH": "/opt/cni/bin:/usr/lib/cni",
}
PREV_RESULT = {
    "cniVersion": "0.3.1",
    "interfaces": [{"name": "eth0", "mac": "0a:58:0a:f4:00:05", "sandbox": "/var/run/netns/pod"}],
    "ips": [{"version": "4", "address": "10.244.0.5/24", "gateway": "10.244.0.1", "interface": 0}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.0.1"}, {"dst": "fd00::/8", "mtu": 1400, "table": 5}],
    "dns": {"nameservers": ["10.96.0.10"]},
}


def invocation(command: str, config: dict[str, object]) -> bytes:
    env = "".join(f"{name}={value}\n" for name, value in {"CNI_COMMAND": command, **ENV}.items())
    return f"{env}\n{json.dumps(config)}".encode()


def nad_configs() -> Iterator[tuple[str, dict[str, object]]]:
    for path in sorted(EXAMPLES.glob("wgnet-nad*.yaml")):
        text = path.read_text()
        yield path.stem, json.loads(text[text.index("{", text.index("config: |")) : text.rindex("}") + 1])


def cni_seeds() -> Iterator[tuple[str, bytes]]:
    base = {"cniVersion": "1.1.0", "name": "wgnet", "type": "pywg-cni", "mode": "userspace"}
    for name, doc in nad_configs():
        yield f"add-{name}", invocation("ADD", doc)
    inline = dict(json_docs())["extended"]
    for version in ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"):
        yield f"add-inline-{version}", invocation("ADD", {**base, "cniVersion": version, "wireguard": inline})
    yield "add-chained", invocation("ADD", {**base, "cniVersion": "0.3.1", "prevResult": PREV_RESULT})
    chained = {**base, "prevResult": PREV_RESULT, "wireguard": dict(json_docs())["minimal"]}
    yield "add-chained-inline", invocation("ADD", chained)
    yield "check", invocation("CHECK", {**base, "prevResult": PREV_RESULT})
    yield "del", invocation("DEL", base)
    yield "version", invocation("VERSION", {"cniVersion": "0.4.0"})
    yield "status", invocation("STATUS", base)
    yield (
        "gc",
        invocation("GC", {**base, "cni.dev/valid-attachments": [{"containerID": "c", "ifname": "net1"}]}),
    )
    yield (
        "static-and-kubeconfig",
        invocation("DEL", {**base, "staticConfigPath": "/etc/x", "kubeConfigPath": "/k"}),
    )


# --------------------------------------------------------------------------------------------
# The Kubernetes API's answers: for the Pod, then the Secret, a status, a Retry-After, a body.


def answer(w: Writer, status: int, body: object, retry: int = 0) -> Writer:
    codes = [code for code, _ in fuzz_k8s_answers.STATUSES]
    text = body if isinstance(body, bytes) else json.dumps(body).encode()
    return w.below(codes.index(status), len(codes)).below(retry, len(fuzz_k8s_answers.RETRY_AFTER)).blob(text)


def status(code: int, reason: str, kind: str = "pods", message: str = "") -> dict[str, object]:
    details = {"name": "wireguard-pod", "kind": kind}
    return {
        "kind": "Status",
        "status": "Failure",
        "reason": reason,
        "code": code,
        "details": details,
        "message": message,
    }


POD = {
    "kind": "Pod",
    "apiVersion": "v1",
    "metadata": {
        "name": "wireguard-pod",
        "namespace": "default",
        "annotations": {"wgcni.schu.io/configsecret": "wg"},
    },
}


def secret(**fields: object) -> dict[str, object]:
    return {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "wg"}, "type": "Opaque", **fields}


def k8s_answer_seeds() -> Iterator[tuple[str, bytes]]:
    config = json.dumps(dict(json_docs())["extended"])
    secrets = {
        "data": secret(data={"config.json": b64(config.encode())}),
        "string-data": secret(stringData={"config.json": config}),
        "ini-key": secret(data={"wg0.conf": b64(INI.encode()), "other": b64(b"x")}),
        "two-ini": secret(stringData={"a.conf": INI, "b.conf": INI}),
        "no-data": secret(),
        "missing": status(404, "NotFound", "secrets"),
    }
    for name, body in secrets.items():
        code = 404 if name == "missing" else 200
        yield f"secret-{name}", answer(answer(Writer(), 200, POD), code, body).data
    yield "pod-no-annotation", answer(Writer(), 200, {**POD, "metadata": {"name": "p"}}).data
    yield "pod-not-found", answer(Writer(), 404, status(404, "NotFound")).data
    forbidden = (
        'pods "wireguard-pod" is forbidden: User "system:serviceaccount:kube-system:pywg-cni" cannot get'
    )
    yield "pod-forbidden", answer(Writer(), 403, status(403, "Forbidden", message=forbidden)).data
    yield "pod-unauthorized", answer(Writer(), 401, status(401, "Unauthorized")).data
    yield "pod-throttled", answer(Writer(), 429, status(429, "TooManyRequests"), retry=1).data
    yield "pod-unavailable", answer(Writer(), 503, b"<html>no</html>").data


# --------------------------------------------------------------------------------------------
# Kubeconfigs, in the forms kubectl, kind, minikube, schu/wireguard-cni and Multus write.


def kubeconfig_seeds() -> Iterator[tuple[str, bytes]]:
    cert, private = fuzz_kubeconfig.self_signed()
    ca, crt, pem = b64(cert), b64(cert), b64(private)
    token = fuzz_kubeconfig.TOKEN
    cluster = f"certificate-authority-data: {ca}\n    server: https://192.0.2.1:6443"
    forms = {
        "token": f"apiVersion: v1\nclusters:\n- cluster:\n    {cluster}\n  name: c\ncontexts:\n- context:\n"
        f"    cluster: c\n    namespace: kube-system\n    user: u\n  name: ctx\ncurrent-context: ctx\n"
        f"kind: Config\npreferences: {{}}\nusers:\n- name: u\n  user:\n    token: {token}\n",
        "token-file": "kind: Config\nclusters:\n  - name: c\n    cluster:\n      server: https://[2001:db8::1]:6443/p\n"
        "      certificate-authority: ca.crt\nusers:\n  - name: u\n    user:\n      tokenFile: ./token\n"
        "contexts:\n  - name: ctx\n    context:\n      cluster: c\n      user: u\ncurrent-context: ctx\n",
        "client-cert-data": f"clusters:\n- cluster:\n    {cluster}\n  name: kind\ncontexts:\n- context:\n"
        f"    cluster: kind\n    user: kind\n  name: kind\ncurrent-context: kind\nusers:\n- name: kind\n"
        f"  user:\n    client-certificate-data: {crt}\n    client-key-data: {pem}\n",
        "client-cert-files": "---\n# minikube\nclusters:\n- cluster:\n    certificate-authority: ca.crt\n"
        "    extensions:\n    - extension:\n        last-update: Wed, 01 May 2024 12:00:00 UTC\n"
        "      name: cluster_info\n    server: 'https://192.0.2.1:8443'\n  name: minikube\ncontexts:\n"
        "- context:\n    cluster: minikube\n    user: minikube\n  name: minikube\n"
        'current-context: "minikube"\nusers:\n- name: minikube\n  user:\n    client-certificate: client.crt\n'
        "    client-key: client.key\n...\n",
        "insecure-block-scalars": "clusters:\n- name: c\n  cluster:\n    server: >-\n      https://example.org\n"
        "    insecure-skip-tls-verify: true\ncontexts:\n- name: x\n  context: {cluster: c}\n"
        'users: []\npreferences: |\n  a\n  "b\\x41\\u00e9"\n',
        "json": json.dumps(
            {
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": "192.0.2.1", "certificate-authority-data": ca}}
                ],
                "users": [{"name": "u", "user": {"token": token}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "ns"}}],
                "current-context": "x",
            }
        ),
        "home-and-escapes": "clusters:\n- name: c\n  cluster:\n    server: https://h\n"
        '    certificate-authority: "./ca\\x2ecrt"\nusers:\n- name: u\n  user:\n    tokenFile: ~/token\n'
        "contexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n",
        "exec-plugin": "clusters:\n- name: c\n  cluster: {server: 'https://h'}\nusers:\n- name: u\n  user:\n"
        "    exec:\n      command: aws\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n",
    }
    for name, text in forms.items():
        yield name, text.encode()


# --------------------------------------------------------------------------------------------
# TUN offloads: frames to split and packets to merge, as fuzz_tun_offload.py reads them.


def _checksum(data: bytes) -> int:
    return ~(offload.residue(data) or 0xFFFF) & 0xFFFF


def _ip_packet(version: int, protocol: int, transport: bytes, ident: int = 7) -> bytes:
    """An IPv4 (no options) or IPv6 packet around `transport`, its transport checksum filled in."""
    at = 16 if protocol == 6 else 6
    if version == 4:
        ends = bytes([10, 1, 0, 1, 10, 1, 0, 2])
        pseudo = ends + struct.pack("!BBH", 0, protocol, len(transport))
    else:
        ends = bytes([0xFD] + [0] * 14 + [1, 0xFD] + [0] * 14 + [2])
        pseudo = ends + struct.pack("!IxxxB", len(transport), protocol)
    value = _checksum(pseudo + transport) or (0xFFFF if protocol == 17 else 0)
    transport = transport[:at] + struct.pack("!H", value) + transport[at + 2 :]
    if version == 6:
        return struct.pack("!IHBB", 0x60000000, len(transport), protocol, 64) + ends + transport
    header = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(transport), ident, 0x4000, 64, protocol, 0) + ends
    return header[:10] + struct.pack("!H", _checksum(header)) + header[12:] + transport


def _tcp(version: int, seq: int, payload: bytes, flags: int = 0x10, ident: int = 7) -> bytes:
    return _ip_packet(
        version,
        6,
        struct.pack("!HHIIBBHHH", 40000, 5201, seq, 1000, 5 << 4, flags, 65535, 0, 0) + payload,
        ident,
    )


def _udp(version: int, payload: bytes, ident: int = 7) -> bytes:
    return _ip_packet(version, 17, struct.pack("!HHHH", 5000, 6000, 8 + len(payload), 0) + payload, ident)


def _super_frame(packet: bytes, gso_type: int, gso: int) -> bytes:
    """As a TUN with TSO/USO hands it over: the transport checksum field holds the pseudo-header sum."""
    l4 = 20 if packet[0] >> 4 == 4 else 40
    protocol = 17 if gso_type == offload.GSO_UDP_L4 else 6
    at = l4 + (6 if protocol == 17 else 16)
    ends = packet[12:20] if l4 == 20 else packet[8:40]
    pseudo = ends + struct.pack("!HH", protocol, len(packet) - l4)  # the same sum as RFC 793's layout
    partial = packet[:at] + struct.pack("!H", ~_checksum(pseudo) & 0xFFFF) + packet[at + 2 :]
    return struct.pack("=BBHHHH", offload.NEEDS_CSUM, gso_type, 0, gso, l4, at - l4) + partial


def tun_offload_seeds() -> Iterator[tuple[str, bytes]]:
    rng = random.Random(31)

    def split(first: int, slots: int, frame: bytes) -> bytes:
        w = Writer().below(fuzz_tun_offload.SPLIT, 2).below(first, offload.GSO_MAX_SEGMENTS + 2)
        return bytes(w.below(slots - 1, fuzz_tun_offload.MOST_SLOTS).bytes(frame).data)

    def merge(flags: int, packets: list[bytes]) -> bytes:
        w = Writer().below(fuzz_tun_offload.MERGE, 2).below(flags, 4)
        for packet in packets:
            w.blob(packet)
        return bytes(w.data)

    for version, gso_type in ((4, offload.GSO_TCPV4), (6, offload.GSO_TCPV6)):
        packet = _tcp(version, 5, rng.randbytes(5000), flags=0x19)
        yield f"split-tso{version}", split(0, 100, _super_frame(packet, gso_type, 1000))
        yield f"split-tso{version}-resumed", split(2, 2, _super_frame(packet, gso_type, 1000))
        yield (
            f"split-tso{version}-floor",
            split(0, 100, _super_frame(packet, gso_type, offload.GSO_MIN_TCP_SEGMENT)),
        )
        yield (
            f"merge-tcp{version}",
            merge(3, [_tcp(version, 5 + 1000 * i, rng.randbytes(1000), ident=i) for i in range(6)]),
        )
        udp = _udp(version, rng.randbytes(3000))
        yield f"split-uso{version}", split(0, 100, _super_frame(udp, offload.GSO_UDP_L4, 1200))
        yield f"merge-udp{version}", merge(3, [_udp(version, rng.randbytes(500), ident=i) for i in range(5)])
    yield "split-small-gso", split(0, 100, _super_frame(_tcp(4, 5, bytes(3000)), offload.GSO_TCPV4, 1))
    yield "split-plain", split(0, 1, bytes(10) + _udp(4, b"hello"))
    partial = _udp(4, b"hello")
    yield (
        "split-needs-csum",
        split(0, 1, struct.pack("=BBHHHH", offload.NEEDS_CSUM, 0, 0, 0, 20, 6) + partial),
    )
    flows = [_tcp(4, 5 + 100 * i, rng.randbytes(100), ident=i) for i in range(4)]
    other = [_tcp(6, 9 + 100 * i, rng.randbytes(100)) for i in range(3)]
    yield "merge-mixed", merge(1, [flows[0], other[0], flows[1], other[1], _udp(4, b"u"), flows[2], flows[3]])


def main() -> None:
    write("messages", message_seeds())
    write("uapi", uapi_seeds())
    write("config_json", config_json_seeds())
    write("wgquick_ini", ini_seeds())
    write("cni", cni_seeds())
    write("k8s_answers", k8s_answer_seeds())
    write("kubeconfig", kubeconfig_seeds())
    write("tun_offload", tun_offload_seeds())


if __name__ == "__main__":
    main()
