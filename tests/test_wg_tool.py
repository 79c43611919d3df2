"""The stock `wg` (wireguard-tools 1.0.20210914) against a running pywg, exactly as against wireguard-go.

Each test joins host `a` (pywg, started with `pywg up` unless said otherwise) and host `b` (Debian's
wireguard-go, or a second pywg) with a veth pair, drives pywg with `wg show`, `wg showconf`, `wg set`,
`wg setconf` and `wg syncconf`, and checks every change twice: in what `wg` reports and in what the
tunnel does (a peer added by `wg` handshakes, a removed one cannot; traffic moves to a new port; a
firewall mark reaches the UDP socket). Keys reach `wg` only as file paths.

Needs root, `ip`, `wg`, `wireguard-go`, iputils `ping` and `ss`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from ipaddress import ip_network

import pytest

from pywg.config import EndpointSpec, InterfaceConfig, PeerConfig, parse_config
from pywg.core.keys import encode_key
from tests.support.pywg_run import PywgUp, Userspace
from tests.support.topology import (
    Host,
    KeyPair,
    Link,
    Topology,
    WireguardGo,
    generate_psk,
    link,
    tunnel_configs,
    wait_for_handshake,
    wg_peers,
    wg_setconf_text,
)

pytest_plugins = ["tests.support.topology"]

pytestmark = pytest.mark.root

A_UNDER, B_UNDER = "192.0.2.1", "192.0.2.2"
INNER_A = ["10.99.0.1/24", "fd99::1/64"]
INNER_B = ["10.99.0.2/24", "fd99::2/64"]
PORT = 51820
PING = 10.0  # a first handshake, with one retry if a message is lost
NO_PING = 2.0  # how long a ping that must fail gets


@dataclass
class World:
    a: Host
    b: Host
    wire: Link
    keys_a: KeyPair
    keys_b: KeyPair
    cfg_a: InterfaceConfig  # pywg's side: peer b
    cfg_b: InterfaceConfig  # the peer's side: peer a


@pytest.fixture
def world(topology: Topology) -> World:
    a, b = topology.host("a"), topology.host("b")
    wire = link(a, b, [f"{A_UNDER}/24"], [f"{B_UNDER}/24"])
    keys_a, keys_b = KeyPair.generate(), KeyPair.generate()
    cfg_a, cfg_b = tunnel_configs(keys_a, keys_b, INNER_A, INNER_B, A_UNDER, B_UNDER)
    return World(a, b, wire, keys_a, keys_b, cfg_a, cfg_b)


def _peer(*allowed: str) -> PeerConfig:
    """A peer with a fresh key, no endpoint and `allowed` IPs."""
    return PeerConfig(public_key=KeyPair.generate().public, allowed_ips=[ip_network(n) for n in allowed])


def _fields(output: str) -> dict[str, str]:
    """`wg show IF <field>` output (one `public key<TAB>value` line per peer) as a dict."""
    pairs = (line.split("\t", 1) for line in output.splitlines() if line)
    return {key: value for key, value in pairs}


# --- wg show, wg showconf ----------------------------------------------------------------------------


def test_show_dump_showconf_and_latest_handshake(world: World) -> None:
    psk = generate_psk()
    spare = _peer("10.50.0.0/24", "fd50::/64")
    peer_b = replace(world.cfg_a.peers[0], preshared_key=psk, persistent_keepalive=25)
    cfg_a = replace(world.cfg_a, fwmark=0x51, peers=[peer_b, spare])
    cfg_b = replace(world.cfg_b, peers=[replace(world.cfg_b.peers[0], preshared_key=psk)])
    WireguardGo(world.b, cfg_b).start()  # first: a's keepalive starts a handshake right away
    started = int(time.time())
    pywg = PywgUp(world.a, cfg_a)
    pywg.up()
    name, b_pub, spare_pub = pywg.name, world.keys_b.public_b64, encode_key(spare.public_key)

    show = pywg.wg("show", name)
    for text in (
        f"interface: {name}",
        f"public key: {world.keys_a.public_b64}",
        "private key: (hidden)",
        f"listening port: {PORT}",
        "fwmark: 0x51",
        f"peer: {b_pub}",
        "preshared key: (hidden)",
        f"endpoint: {B_UNDER}:{PORT}",
        "allowed ips: 10.99.0.2/32, fd99::2/128",
        "persistent keepalive: every 25 seconds",
        f"peer: {spare_pub}",
        "allowed ips: 10.50.0.0/24, fd50::/64",
    ):
        assert text in show, f"{text!r} missing from `wg show`"
    assert world.keys_a.private_b64 not in show

    dump = pywg.wg("show", name, "dump").splitlines()
    assert dump[0].split("\t") == [world.keys_a.private_b64, world.keys_a.public_b64, str(PORT), "0x51"]
    rows = {row.split("\t")[0]: row.split("\t") for row in dump[1:]}
    assert rows.keys() == {b_pub, spare_pub}
    assert rows[b_pub][1:4] == [encode_key(psk), f"{B_UNDER}:{PORT}", "10.99.0.2/32,fd99::2/128"]
    assert rows[b_pub][7] == "25"
    assert rows[spare_pub][1:] == ["(none)", "(none)", "10.50.0.0/24,fd50::/64", "0", "0", "0", "off"]

    shown = parse_config(pywg.wg("showconf", name), "showconf")
    assert shown.private_key == world.keys_a.private
    assert (shown.listen_port, shown.fwmark) == (PORT, 0x51)
    by_key = {peer.public_key: peer for peer in shown.peers}
    assert by_key.keys() == {world.keys_b.public, spare.public_key}
    got_b = by_key[world.keys_b.public]
    assert got_b.preshared_key == psk and got_b.endpoint == EndpointSpec(B_UNDER, PORT)
    assert got_b.allowed_ips == cfg_a.peers[0].allowed_ips and got_b.persistent_keepalive == 25
    assert by_key[spare.public_key].allowed_ips == spare.allowed_ips
    assert by_key[spare.public_key].endpoint is None and by_key[spare.public_key].preshared_key is None

    for field, expected in (
        ("public-key", world.keys_a.public_b64),
        ("private-key", world.keys_a.private_b64),
        ("listen-port", str(PORT)),
        ("fwmark", "0x51"),
    ):
        assert pywg.wg("show", name, field).strip() == expected, field
    assert set(pywg.wg("show", name, "peers").split()) == {b_pub, spare_pub}
    assert _fields(pywg.wg("show", name, "preshared-keys")) == {b_pub: encode_key(psk), spare_pub: "(none)"}
    assert _fields(pywg.wg("show", name, "persistent-keepalive")) == {b_pub: "25", spare_pub: "off"}

    assert world.a.ping("10.99.0.2", timeout=PING) and world.a.ping("fd99::2")
    handshakes = {
        key: int(value) for key, value in _fields(pywg.wg("show", name, "latest-handshakes")).items()
    }
    assert handshakes[spare_pub] == 0
    assert started - 1 <= handshakes[b_pub] <= time.time() + 1, "latest handshake is not a recent Unix time"
    assert "latest handshake: " in pywg.wg("show", name)
    transfer = _fields(pywg.wg("show", name, "transfer"))
    received, sent = (int(n) for n in transfer[b_pub].split("\t"))
    assert received > 0 and sent > 0 and transfer[spare_pub] == "0\t0"
    assert _fields(pywg.wg("show", name, "endpoints"))[b_pub] == f"{B_UNDER}:{PORT}"


# --- wg set ----------------------------------------------------------------------------------------


def test_set_adds_and_removes_peers_and_allowed_ips(world: World) -> None:
    pywg = PywgUp(world.a, replace(world.cfg_a, peers=[]))
    pywg.up()
    go = WireguardGo(world.b, world.cfg_b).start()
    name, b_pub = pywg.name, world.keys_b.public_b64
    assert pywg.wg("show", name, "peers").strip() == ""

    pywg.wg(
        "set", name, "peer", b_pub, "allowed-ips", "10.99.0.2/32,fd99::2/128", "endpoint", f"{B_UNDER}:{PORT}"
    )
    assert wg_peers(world.a, name)[world.keys_b.public].allowed_ips == ("10.99.0.2/32", "fd99::2/128")
    assert world.a.ping("10.99.0.2", timeout=PING), "a peer added with `wg set` does not handshake"
    assert world.a.ping("fd99::2")

    # `allowed-ips` replaces the list: fd99::2 is no longer the peer's, so it gets no packets for it.
    pywg.wg("set", name, "peer", b_pub, "allowed-ips", "10.99.0.2/32")
    assert wg_peers(world.a, name)[world.keys_b.public].allowed_ips == ("10.99.0.2/32",)
    assert not world.a.ping("fd99::2", timeout=NO_PING)
    assert world.a.ping("10.99.0.2")
    pywg.wg("set", name, "peer", b_pub, "allowed-ips", "10.99.0.2/32,fd99::2/128,10.98.0.0/16")
    assert world.a.ping("fd99::2")

    other = KeyPair.generate()
    pywg.wg("set", name, "peer", other.public_b64, "allowed-ips", "10.97.0.0/24")
    assert set(wg_peers(world.a, name)) == {world.keys_b.public, other.public}
    assert wg_peers(world.a, name)[other.public].allowed_ips == ("10.97.0.0/24",)
    pywg.wg("set", name, "peer", other.public_b64, "remove")
    assert set(wg_peers(world.a, name)) == {world.keys_b.public}
    pywg.wg("set", name, "peer", b_pub, "allowed-ips", "")
    assert wg_peers(world.a, name)[world.keys_b.public].allowed_ips == ()
    assert not world.a.ping("10.99.0.2", timeout=NO_PING)

    # A removed peer cannot handshake: b starts from nothing, a does not answer it.
    pywg.wg("set", name, "peer", b_pub, "remove")
    assert wg_peers(world.a, name) == {}
    go.restart()
    assert not world.b.ping("10.99.0.1", timeout=NO_PING)
    assert go.peers()[world.keys_a.public].latest_handshake == 0


def _udp_ports(host: Host) -> set[int]:
    lines = host.run(["ss", "-Huln"]).stdout.splitlines()
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in lines}


def test_set_listen_port_moves_traffic_to_the_new_port(world: World) -> None:
    new_port = 51999
    pywg = PywgUp(world.a, world.cfg_a)
    pywg.up()
    # b knows a only at the new port: a handshake proves a listens there.
    peer_a = replace(world.cfg_b.peers[0], endpoint=EndpointSpec(A_UNDER, new_port))
    go = WireguardGo(world.b, replace(world.cfg_b, peers=[peer_a])).start()
    assert PORT in _udp_ports(world.a)

    pywg.wg("set", pywg.name, "listen-port", str(new_port))
    assert pywg.wg("show", pywg.name, "listen-port").strip() == str(new_port)
    ports = _udp_ports(world.a)
    assert new_port in ports and PORT not in ports
    pywg.wg("set", pywg.name, "listen-port", str(new_port))  # unchanged: accepted, as wireguard-go does

    assert world.b.ping("10.99.0.1", timeout=PING)
    assert go.peers()[world.keys_a.public].endpoint == f"{A_UNDER}:{new_port}"
    assert wg_peers(world.a, pywg.name)[world.keys_b.public].latest_handshake > 0


def test_set_fwmark_marks_the_udp_sockets(world: World) -> None:
    mark = 0x1234
    pywg = PywgUp(world.a, world.cfg_a)
    pywg.up()
    WireguardGo(world.b, world.cfg_b).start()
    assert world.a.ping("10.99.0.2", timeout=PING)
    assert pywg.wg("show", pywg.name, "fwmark").strip() == "off"

    # Marked packets are refused by policy routing: with the mark, the tunnel stops.
    world.a.ip("rule", "add", "fwmark", hex(mark), "prohibit")
    world.a.ip("-6", "rule", "add", "fwmark", hex(mark), "prohibit")
    pywg.wg("set", pywg.name, "fwmark", hex(mark))
    assert pywg.wg("show", pywg.name, "fwmark").strip() == hex(mark)
    assert f"fwmark = {hex(mark)}" in pywg.wg("showconf", pywg.name).lower()
    sockets = world.a.run(["ss", "-Huaen", f"sport = :{PORT}"]).stdout
    assert sockets.count(f"fwmark:{hex(mark)}") == 2, sockets  # IPv4 and IPv6
    assert not world.a.ping("10.99.0.2", timeout=NO_PING)

    pywg.wg("set", pywg.name, "fwmark", "off")
    assert pywg.wg("show", pywg.name, "fwmark").strip() == "off"
    assert "fwmark:" not in world.a.run(["ss", "-Huaen", f"sport = :{PORT}"]).stdout
    assert world.a.ping("10.99.0.2", timeout=PING)


def test_set_private_key_and_preshared_key_from_files(world: World) -> None:
    pywg = PywgUp(world.a, replace(world.cfg_a, private_key=KeyPair.generate().private))
    pywg.up()
    psk = generate_psk()
    cfg_b = replace(world.cfg_b, peers=[replace(world.cfg_b.peers[0], preshared_key=psk)])
    WireguardGo(world.b, cfg_b).start()
    assert not world.a.ping("10.99.0.2", timeout=NO_PING)  # b expects another key

    key_file = world.a.write_secret("a.key", world.keys_a.private_b64 + "\n")
    psk_file = world.a.write_secret("a.psk", encode_key(psk) + "\n")
    pywg.wg(
        "set",
        pywg.name,
        "private-key",
        str(key_file),
        "peer",
        world.keys_b.public_b64,
        "preshared-key",
        str(psk_file),
    )
    assert pywg.wg("show", pywg.name, "public-key").strip() == world.keys_a.public_b64
    assert _fields(pywg.wg("show", pywg.name, "preshared-keys"))[world.keys_b.public_b64] == encode_key(psk)
    assert world.a.ping("10.99.0.2", timeout=PING)


# --- wg setconf, wg syncconf -------------------------------------------------------------------------


def test_setconf_and_syncconf_between_two_pywg(world: World) -> None:
    """pywg on both ends; a starts with another key and no peers, and gets everything by `wg setconf`."""
    a = PywgUp(world.a, replace(world.cfg_a, private_key=KeyPair.generate().private, peers=[]))
    a.up()
    b = PywgUp(world.b, world.cfg_b)
    b.up()
    spare = _peer("10.50.0.0/24")
    setconf = world.a.write_secret(
        "setconf.conf", wg_setconf_text(replace(world.cfg_a, peers=[*world.cfg_a.peers, spare]))
    )
    a.wg("setconf", a.name, str(setconf))
    assert a.wg("show", a.name, "public-key").strip() == world.keys_a.public_b64
    assert set(wg_peers(world.a, a.name)) == {world.keys_b.public, spare.public_key}
    assert world.a.ping("10.99.0.2", timeout=PING) and world.b.ping("fd99::1")
    first = wait_for_handshake(world.a, a.name, world.keys_b.public).latest_handshake
    rx_before = wg_peers(world.a, a.name)[world.keys_b.public].rx_bytes
    time.sleep(1.1)  # a new handshake would now show a later second

    # syncconf: the spare peer goes, a new one comes, b's allowed IPs change, b keeps its session.
    newcomer = _peer("10.70.0.0/24")
    peer_b = replace(
        world.cfg_a.peers[0], allowed_ips=[*world.cfg_a.peers[0].allowed_ips, ip_network("10.60.0.0/24")]
    )
    synced = replace(world.cfg_a, peers=[peer_b, newcomer])
    a.wg("syncconf", a.name, str(world.a.write_secret("syncconf.conf", wg_setconf_text(synced))))
    peers = wg_peers(world.a, a.name)
    assert set(peers) == {world.keys_b.public, newcomer.public_key}
    assert peers[world.keys_b.public].allowed_ips == ("10.99.0.2/32", "fd99::2/128", "10.60.0.0/24")
    assert world.a.ping("10.99.0.2") and world.b.ping("10.99.0.1")
    after = wg_peers(world.a, a.name)[world.keys_b.public]
    assert after.latest_handshake == first, "syncconf reset the session of an unchanged peer"
    assert after.rx_bytes > rx_before

    # setconf replaces everything: the peers it does not name are gone.
    a.wg(
        "setconf",
        a.name,
        str(world.a.write_secret("only.conf", wg_setconf_text(replace(world.cfg_a, peers=[newcomer])))),
    )
    assert set(wg_peers(world.a, a.name)) == {newcomer.public_key}
    assert not world.a.ping("10.99.0.2", timeout=NO_PING)


# --- a big configuration -----------------------------------------------------------------------------

BIG_PEERS = 300
V4_PER_PEER, V6_PER_PEER = 240, 100  # 300 * 340 = 102,000 allowed IPs


def _big_config(private_key: bytes) -> tuple[str, dict[str, set[str]]]:
    lines = ["[Interface]", f"PrivateKey = {encode_key(private_key)}", f"ListenPort = {PORT}"]
    expected: dict[str, set[str]] = {}
    for i in range(BIG_PEERS):
        public = KeyPair.generate().public_b64
        ips = []
        for j in range(V4_PER_PEER):
            n = i * V4_PER_PEER + j
            ips.append(f"10.{n >> 16}.{n >> 8 & 255}.{n & 255}/32")
        ips += [f"fd00:{i:x}::{j:x}/128" for j in range(V6_PER_PEER)]
        lines += ["", "[Peer]", f"PublicKey = {public}"]
        lines += ["AllowedIPs = " + ", ".join(ips[k : k + 60]) for k in range(0, len(ips), 60)]
        expected[public] = {str(ip_network(ip)) for ip in ips}  # as wg prints them
    return "\n".join(lines) + "\n", expected


@pytest.mark.timeout(120)
def test_setconf_with_hundreds_of_peers_and_100000_allowed_ips(world: World) -> None:
    pywg = PywgUp(world.a, replace(world.cfg_a, peers=[]))
    pywg.up()
    text, expected = _big_config(world.keys_a.private)
    total = sum(len(ips) for ips in expected.values())
    assert total > 100_000
    pywg.wg("setconf", pywg.name, str(world.a.write_secret("big.conf", text)))

    # The answer (about 2 MB) takes many reads of the socket. `wg show IF allowed-ips` prints one line
    # per peer (its key, then its prefixes), so the prefixes are counted, not the lines.
    listing = pywg.wg("show", pywg.name, "allowed-ips").splitlines()
    assert len(listing) == BIG_PEERS
    got = {}
    for line in listing:
        public, ips = line.split("\t")
        got[public] = set(ips.split(" "))
    assert sum(len(ips) for ips in got.values()) == total
    assert got == expected
    dump = pywg.wg("show", pywg.name, "dump").splitlines()
    assert len(dump) == 1 + BIG_PEERS
    assert sum(len(row.split("\t")[3].split(",")) for row in dump[1:]) == total
    # Still serving: a change after the big one is seen at once.
    first = next(iter(expected))
    pywg.wg("set", pywg.name, "peer", first, "remove")
    assert len(pywg.wg("show", pywg.name, "peers").split()) == BIG_PEERS - 1


# --- the interface and the socket go together ---------------------------------------------------------


def _start_up(world: World) -> PywgUp:
    pywg = PywgUp(world.a, world.cfg_a)
    pywg.up()
    return pywg


def _start_userspace(world: World) -> Userspace:
    pywg = Userspace(world.a)
    pywg.daemon()
    path = world.a.write_secret("us.conf", wg_setconf_text(world.cfg_a))
    pywg.wg("setconf", pywg.ifname, str(path))
    for address in INNER_A:
        world.a.add_address(pywg.ifname, address)
    world.a.set_link(pywg.ifname, True)
    return pywg


STARTERS = {"pywg-up": _start_up, "pywg-userspace": _start_userspace}


@pytest.mark.parametrize("how", STARTERS)
def test_deleting_the_interface_stops_the_engine(world: World, how: str) -> None:
    pywg = STARTERS[how](world)
    assert pywg.pids() and pywg.socket_path.exists() and world.a.has_link(pywg.ifname)
    world.a.ip("link", "del", pywg.ifname)
    pywg.wait_gone(timeout=5.0)  # the process, its UAPI socket (and state file) are gone


@pytest.mark.parametrize("how", STARTERS)
def test_deleting_the_uapi_socket_stops_the_engine(world: World, how: str) -> None:
    pywg = STARTERS[how](world)
    WireguardGo(world.b, world.cfg_b).start()
    assert world.a.ping("10.99.0.2", timeout=PING)
    pywg.socket_path.unlink()
    pywg.wait_gone(timeout=5.0)
    assert not world.a.has_link(pywg.ifname)
    assert not world.a.ping("10.99.0.2", timeout=1)
