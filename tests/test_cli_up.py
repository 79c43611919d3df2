"""`pywg up`, `pywg down` and `pywg-userspace` as users run them, in network namespaces.

`pywg up` returns 0 only once the tunnel is ready and removes all it made on `pywg down`, SIGTERM or
any configuration error (which is one line on stderr naming the field); SIGHUP rereads the file and
keeps the sessions of unchanged peers. `pywg-userspace` is the wireguard-go drop-in: wg-quick runs it,
it daemonizes unless WG_PROCESS_FOREGROUND=1, and its TUN keeps working when moved to another
namespace.

Needs root, `ip`, `wg`, `wg-quick`, `wireguard-go` and iputils `ping`.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, replace
from ipaddress import IPv4Network, IPv6Network, ip_interface, ip_network

import pytest

from pywg.config import InterfaceConfig, PeerConfig, format_wg_quick
from pywg.runtime.daemon import alive
from tests.support.pywg_run import (
    PYWG_USERSPACE,
    STATE_DIR,
    PywgUp,
    Userspace,
    one_line,
    pywg_argv,
)
from tests.support.scrape import scrape
from tests.support.scrape import value as sample_value
from tests.support.topology import (
    Host,
    KeyPair,
    Link,
    Topology,
    WireguardGo,
    _socket_accepts,
    link,
    run,
    tunnel_configs,
    unique_ifname,
    wait_for_handshake,
    wait_until,
    wg_peers,
    wg_setconf_text,
)

pytest_plugins = ["tests.support.topology"]

pytestmark = pytest.mark.root

A_UNDER, B_UNDER = "192.0.2.1", "192.0.2.2"
INNER_A = ["10.99.0.1/24", "fd99::1/64"]
INNER_B = ["10.99.0.2/24", "fd99::2/64"]
PING = 10.0
DEFAULT_MTU = 1420

Network = IPv4Network | IPv6Network


@dataclass
class World:
    a: Host
    b: Host
    wire: Link
    keys_a: KeyPair
    keys_b: KeyPair
    cfg_a: InterfaceConfig
    cfg_b: InterfaceConfig


@pytest.fixture
def world(topology: Topology) -> World:
    a, b = topology.host("a"), topology.host("b")
    wire = link(a, b, [f"{A_UNDER}/24"], [f"{B_UNDER}/24"])
    keys_a, keys_b = KeyPair.generate(), KeyPair.generate()
    cfg_a, cfg_b = tunnel_configs(keys_a, keys_b, INNER_A, INNER_B, A_UNDER, B_UNDER)
    return World(a, b, wire, keys_a, keys_b, cfg_a, cfg_b)


@pytest.fixture
def host(topology: Topology) -> Host:
    return topology.host("solo")


def _routes(host: Host, ifname: str) -> set[Network]:
    """The destinations of the IPv4 and IPv6 main-table routes through `ifname`."""
    found: set[Network] = set()
    for family in ("-4", "-6"):
        for line in host.ip(family, "route", "show", "dev", ifname).splitlines():
            found.add(ip_network(line.split()[0]))
    return found


def _addresses(host: Host, ifname: str) -> set[str]:
    info = json.loads(host.ip("-j", "addr", "show", "dev", ifname))[0]
    return {f"{a['local']}/{a['prefixlen']}" for a in info["addr_info"] if a.get("scope") != "link"}


def _link(host: Host, ifname: str) -> dict[str, object]:
    return dict(json.loads(host.ip("-j", "link", "show", "dev", ifname))[0])


def _peer(*allowed: str) -> PeerConfig:
    """A peer with a fresh key, no endpoint and `allowed` IPs."""
    return PeerConfig(public_key=KeyPair.generate().public, allowed_ips=[ip_network(n) for n in allowed])


def _assert_clean_failure(done_stderr: str, done_stdout: str, field: str, command: str = "pywg up") -> str:
    line = one_line(done_stderr)
    assert line.startswith(f"{command}: "), line
    assert field.lower() in line.lower(), f"{field!r} not named in {line!r}"
    assert "Traceback" not in done_stderr + done_stdout
    return line


# --- up and down ------------------------------------------------------------------------------------


def test_up_returns_when_ready_and_down_removes_everything(world: World) -> None:
    pywg = PywgUp(world.a, world.cfg_a)
    done = pywg.up()
    # Ready means ready now, not soon: nothing here waits.
    assert done.stderr == "" and pywg.ifname in done.stdout and pywg.name in done.stdout
    assert _socket_accepts(pywg.socket_path)
    assert "UP" in _link(world.a, pywg.ifname)["flags"]  # type: ignore[operator]
    assert _addresses(world.a, pywg.ifname) == set(INNER_A)
    pid = pywg.pid
    assert pywg.pids() == [pid]
    assert pywg.wg("show", pywg.name, "public-key").strip() == world.keys_a.public_b64
    WireguardGo(world.b, world.cfg_b).start()
    assert world.a.ping("10.99.0.2", timeout=PING) and world.a.ping("fd99::2")
    routes = _routes(world.a, pywg.ifname)

    done = pywg.down()
    assert done.returncode == 0 and done.stderr == ""
    assert pywg.leftovers() == []
    for route in routes:
        assert world.a.ip("route", "show", str(route)).strip() == "", f"route {route} left behind"

    # Once it is gone, `pywg down` says so.
    done = pywg.down(check=False)
    assert done.returncode != 0
    _assert_clean_failure(done.stderr, done.stdout, pywg.ifname, "pywg down")


def test_stats_counts_dropped_datagrams(world: World) -> None:
    pywg = PywgUp(world.a, world.cfg_a)
    pywg.up()
    # The kernel's own IPv6 chatter (router solicitations) may already be dropped as no_route.
    assert "malformed" not in world.a.run(pywg_argv("stats", pywg.name)).stdout
    port = int(pywg.wg("show", pywg.name, "listen-port"))
    garbage = "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
    garbage += f"[s.sendto(b'garbage', ('127.0.0.1', {port})) for _ in range(3)]"
    world.a.run(["python3", "-c", garbage])
    wait_until(
        lambda: "malformed: 3" in world.a.run(pywg_argv("stats", pywg.name)).stdout, 5.0, "drops counted"
    )
    assert f"{pywg.name}: 0 keypairs, 0 session indices" in world.a.run(pywg_argv("stats", pywg.name)).stdout
    explained = world.a.run(pywg_argv("stats", pywg.name, "--explain")).stdout
    assert "  malformed: 3: a datagram on the UDP port that is no WireGuard message" in explained
    done = world.a.run(pywg_argv("stats", "nosuchname"), check=False)
    assert done.returncode == 1 and one_line(done.stderr).startswith("pywg stats: cannot reach")


def test_down_for_an_unknown_interface_is_one_clear_line(host: Host) -> None:
    done = host.run(pywg_argv("down", "wg7", "--netns", host.name), check=False)
    assert done.returncode != 0 and done.stdout == ""
    line = _assert_clean_failure(done.stderr, done.stdout, "wg7", "pywg down")
    assert host.name in line


def test_down_stops_exactly_the_named_tunnel_and_never_another_namespaces(topology: Topology) -> None:
    """Issue 15's scenario: a tunnel X (interface X) runs in namespace b; in namespace a the same
    interface name X runs under the UAPI name Xa, as `pywg up` advised. Both were started inside
    their namespace (no --netns), so their UAPI sockets share /var/run/wireguard."""
    a, b = topology.host("a"), topology.host("b")
    ifname = unique_ifname("pyw")
    first = PywgUp(b, _ini(), ifname=ifname, name=ifname)
    second = PywgUp(a, _ini(), ifname=ifname, name=f"{ifname}a")
    done = b.run(pywg_argv("up", str(first.config_path), "--interface", ifname))
    assert f"`pywg down {ifname}` stops it" in done.stdout
    done = a.run(pywg_argv("up", str(second.config_path), "--interface", ifname, "--name", second.name))
    assert f"`pywg down {second.name}` stops it" in done.stdout
    first_pid, second_pid = first.pid, second.pid

    # In a, X is both the other namespace's UAPI name and this namespace's interface: refused.
    done = a.run(pywg_argv("down", ifname), check=False)
    line = _assert_clean_failure(done.stderr, done.stdout, "ambiguous", "pywg down")
    for named in (first.name, second.name, a.name, b.name):
        assert named in line
    assert alive(first_pid) and alive(second_pid)

    done = a.run(pywg_argv("down", second.name))
    assert (
        one_line(done.stdout) == f"stopped {second.name}: interface {ifname} removed from namespace {a.name}"
    )
    second.wait_gone()
    assert alive(first_pid) and b.has_link(ifname)

    # X now names only b's tunnel, which down in a does not touch.
    done = a.run(pywg_argv("down", ifname), check=False)
    line = _assert_clean_failure(done.stderr, done.stdout, ifname, "pywg down")
    assert f"running in namespace {b.name}; use --netns {b.name}" in line
    assert alive(first_pid) and b.has_link(ifname)
    done = a.run(pywg_argv("down", ifname, "--netns", b.name))
    assert one_line(done.stdout) == f"stopped {ifname}: interface {ifname} removed from namespace {b.name}"
    first.wait_gone()


def test_down_says_where_a_tunnel_started_with_netns_runs(host: Host) -> None:
    pywg = PywgUp(host, _ini())
    pywg.up()
    done = run(pywg_argv("down", pywg.name), check=False)  # here, not in the host
    line = _assert_clean_failure(done.stderr, done.stdout, pywg.name, "pywg down")
    assert line == f"pywg down: {pywg.name} is running in namespace {host.name}; use --netns {host.name}"
    assert pywg.pids() == [pywg.pid]
    done = run(pywg_argv("down", pywg.name, "--netns", host.name))
    assert one_line(done.stdout) == (
        f"stopped {pywg.name}: interface {pywg.ifname} removed from namespace {host.name}"
    )
    pywg.wait_gone()


def test_a_namespace_that_does_not_exist_is_one_line_without_errno(host: Host) -> None:
    pywg = PywgUp(host, _ini())
    missing = f"{host.name}-gone"
    up = pywg_argv("up", str(pywg.config_path), "--netns", missing, "--name", pywg.name, "-i", pywg.ifname)
    for argv in (up, pywg_argv("down", pywg.name, "--netns", missing)):
        done = host.run(argv, check=False)
        line = _assert_clean_failure(done.stderr, done.stdout, missing, f"pywg {argv[3]}")
        assert "does not exist" in line and "[Errno" not in line
    assert pywg.leftovers() == []


# setpriv as `nobody`. The interpreter may live under /root (0700, as pyenv's does): reading
# files is all the ambient capability adds; CAP_NET_ADMIN and the uid stay those of nobody.
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
NOBODY += ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]


def test_without_root_every_command_says_so_in_one_line(host: Host) -> None:
    pywg = PywgUp(host, _ini())
    pywg.up()
    userspace = ["-c", "import sys; from pywg.cli import userspace_main; sys.exit(userspace_main())"]
    commands = [
        (
            "pywg up",
            ["up", str(pywg.config_path), "--netns", host.name, "--name", f"{pywg.name}x", "-i", "wg9"],
        ),
        ("pywg down", ["down", pywg.name, "--netns", host.name]),
        ("pywg down", ["down", pywg.name]),
        ("pywg reload", ["reload", pywg.name]),
        ("pywg stats", ["stats", pywg.name]),
        ("pywg-userspace", [*userspace, "wg9"]),
    ]
    for command, args in commands:
        argv = (
            [*NOBODY, *pywg_argv(*args)] if command != "pywg-userspace" else [*NOBODY, sys.executable, *args]
        )
        done = host.run(argv, check=False)
        assert done.returncode == 1 and done.stdout == "", (command, done)
        assert one_line(done.stderr) == f"{command}: needs root (or CAP_NET_ADMIN); run it with sudo"
    assert pywg.pids() == [pywg.pid] and not host.has_link("wg9")
    pywg.down()


@pytest.mark.parametrize(
    ("mtu", "suffix"), [(None, ".conf"), (1380, ".json")], ids=["default-ini", "1380-json"]
)
def test_routes_addresses_and_mtu(host: Host, mtu: int | None, suffix: str) -> None:
    keys = KeyPair.generate()
    allowed = ("10.1.2.0/24", "10.20.0.0/16", "10.9.0.0/24", "fd00:1::/64", "fd00:2::/48")
    cfg = InterfaceConfig(
        private_key=keys.private,
        addresses=[ip_interface(a) for a in ("10.1.2.3/32", "10.9.0.1/24", "fd00:1::3/128")],
        mtu=mtu,
        peers=[_peer(*allowed[:3]), _peer(*allowed[3:])],
    )
    pywg = PywgUp(host, cfg, suffix=suffix)
    pywg.up()
    assert _addresses(host, pywg.ifname) == {"10.1.2.3/32", "10.9.0.1/24", "fd00:1::3/128"}
    assert _link(host, pywg.ifname)["mtu"] == (mtu or DEFAULT_MTU)
    routes = _routes(host, pywg.ifname)
    missing = {ip_network(n) for n in allowed} - routes
    assert not missing, f"no route through {pywg.ifname} for {missing}"
    # The prefix that holds the interface's own /32 gets its route like any other.
    assert host.ip("route", "show", "10.1.2.0/24", "dev", pywg.ifname).strip()
    pywg.down()
    assert pywg.leftovers() == []


# --- configuration errors ------------------------------------------------------------------------------

OWN = KeyPair.generate()
OTHER = KeyPair.generate()
SHORT_KEY = base64.b64encode(bytes(16)).decode()  # valid base64, 24 characters


def _ini(interface: str = "", peer: str = "", private: str | None = None) -> str:
    private = OWN.private_b64 if private is None else private
    head = f"[Interface]\nPrivateKey = {private}\nAddress = 10.5.0.1/24\nListenPort = 51820\n{interface}"
    return f"{head}\n[Peer]\nPublicKey = {OTHER.public_b64}\nAllowedIPs = 10.5.0.2/32\n{peer}"


def _json(**changes: object) -> str:
    doc: dict[str, object] = {
        "address": "10.5.0.1/24",
        "privateKey": OWN.private_b64,
        "peers": [{"publicKey": OTHER.public_b64, "allowedIPs": ["10.5.0.2/32"]}],
    }
    peer = dict(doc["peers"][0])  # type: ignore[index]
    for key, value in changes.items():
        target = peer if key.startswith("peer_") else doc
        key = key.removeprefix("peer_")
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    doc["peers"] = [peer]
    return json.dumps(doc)


BAD_CONFIGS = {
    # id: (file suffix, text, the field the one line must name)
    "bad-base64-key": (".conf", _ini(private="*" * 43 + "="), "PrivateKey"),
    "wrong-key-length": (".json", _json(peer_publicKey=SHORT_KEY), "peers[0].publicKey"),
    "bad-cidr": (".conf", _ini(peer="AllowedIPs = 10.5.0.300/24\n"), "AllowedIPs"),
    "prefix-too-long": (".json", _json(peer_allowedIPs=["10.5.0.0/33"]), "allowedIPs[0]"),
    "ipv6-prefix-too-long": (".conf", _ini(peer="AllowedIPs = fd00::/129\n"), "AllowedIPs"),
    "bad-endpoint": (".conf", _ini(peer="Endpoint = 192.0.2.2\n"), "Endpoint"),
    "bad-endpoint-port": (".json", _json(peer_endpoint="192.0.2.2:65536"), "peers[0].endpoint"),
    "bad-listen-port": (".conf", _ini().replace("ListenPort = 51820", "ListenPort = 70000"), "ListenPort"),
    "bad-duration": (".json", _json(peer_persistentKeepalive="25 parsecs"), "persistentKeepalive"),
    "unknown-ini-key": (".conf", _ini(interface="Colour = blue\n"), "Colour"),
    "json-syntax-error": (".json", _json()[:-10], "JSON"),
    "peer-with-our-own-key": (".conf", _ini(peer=f"\n[Peer]\nPublicKey = {OWN.public_b64}\n"), "PublicKey"),
    "missing-private-key": (".json", _json(privateKey=None), "privateKey"),
    "unresolvable-host": (".conf", _ini(peer="Endpoint = no-such-host.invalid:51820\n"), "endpoint"),
    "misspelt-json-key": (".json", _json(peer_allowedIP=["10.5.0.2/32"]), "did you mean allowedIPs?"),
    "ini-table-off": (".conf", _ini(interface="Table = off\n"), "line 5: [Interface] Table"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_config_error_is_one_line_and_leaves_nothing(host: Host, case: str) -> None:
    suffix, text, field = BAD_CONFIGS[case]
    pywg = PywgUp(host, text, suffix=suffix)
    done = pywg.up(check=False)
    assert done.returncode != 0
    line = _assert_clean_failure(done.stderr, done.stdout, field)
    assert line.startswith(f"pywg up: {pywg.config_path}: "), "the message does not name the file"
    assert OWN.private_b64 not in line
    assert pywg.leftovers() == []
    assert not (STATE_DIR / f"{pywg.name}.log").exists()


def test_up_warns_about_what_it_will_not_do_naming_file_and_line(host: Host) -> None:
    """A config without an address, and wg-quick settings pywg does not apply: the tunnel comes up,
    with one warning each naming the file (and for INI the line) and what follows."""
    no_address = PywgUp(host, _json(address=None), ifname="wg1", suffix=".json")
    done = no_address.up()
    (line,) = [line for line in done.stderr.splitlines() if "address" in line]
    assert line.startswith(f"pywg up: warning: {no_address.config_path}: address: none given: ")
    assert "AllowedIPs most likely refuse" in line
    no_address.down()

    text = _ini(
        interface="DNS = 10.5.0.53\nPostUp = iptables -A FORWARD -i %i -j ACCEPT\nSaveConfig = true\n"
    )
    pywg = PywgUp(host, text, ifname="wg2")
    done = pywg.up()
    warnings = [
        line.removeprefix(f"pywg up: warning: {pywg.config_path}: ") for line in done.stderr.splitlines()
    ]
    assert [line.split(":")[:2] for line in warnings] == [
        ["line 6", " [Interface] PostUp"],
        ["line 7", " [Interface] SaveConfig"],
        ["line 5", " [Interface] DNS"],
    ], done.stderr
    pywg.down()


def test_an_interface_name_already_taken(host: Host) -> None:
    host.ip("link", "add", "wg0", "type", "veth", "peer", "name", "wg0peer")
    pywg = PywgUp(host, _ini(), ifname="wg0")
    done = pywg.up(check=False)
    assert done.returncode != 0
    line = _assert_clean_failure(done.stderr, done.stdout, "wg0")
    assert "exists" in line
    assert _link(host, "wg0").get("link_type") == "ether"  # still the veth: not touched
    assert not pywg.socket_path.exists() and pywg.state() is None and pywg.pids() == []


def test_a_uapi_name_already_in_use(host: Host) -> None:
    first = PywgUp(host, _ini(), ifname="wg0")
    first.up()
    other = InterfaceConfig(private_key=KeyPair.generate().private, addresses=[ip_interface("10.6.0.1/24")])
    second = PywgUp(host, other, ifname="wg1", name=first.name)
    done = second.up(check=False)
    assert done.returncode != 0
    line = _assert_clean_failure(done.stderr, done.stdout, first.name)
    assert "use" in line
    assert not host.has_link("wg1")
    # The first one is untouched.
    assert first.pids() == [first.pid] and host.has_link("wg0")
    assert first.wg("show", first.name, "public-key").strip() == OWN.public_b64
    first.down()
    assert first.leftovers() == []


# --- signals -------------------------------------------------------------------------------------------


def test_sighup_reloads_and_keeps_unchanged_sessions(world: World) -> None:
    spare = _peer("10.50.0.0/24")
    pywg = PywgUp(world.a, replace(world.cfg_a, peers=[*world.cfg_a.peers, spare]))
    pywg.up()
    WireguardGo(world.b, world.cfg_b).start()
    assert world.a.ping("10.99.0.2", timeout=PING)
    first = wait_for_handshake(world.a, pywg.name, world.keys_b.public).latest_handshake
    rx_before = wg_peers(world.a, pywg.name)[world.keys_b.public].rx_bytes
    assert ip_network("10.50.0.0/24") in _routes(world.a, pywg.ifname)
    time.sleep(1.1)  # a new handshake would now show a later second

    newcomer = _peer("10.70.0.0/24")
    changed = replace(spare, allowed_ips=[ip_network("10.60.0.0/24")])
    pywg.write_config(replace(world.cfg_a, peers=[*world.cfg_a.peers, changed, newcomer]))
    os.kill(pywg.pid, signal.SIGHUP)
    wait_until(lambda: newcomer.public_key in wg_peers(world.a, pywg.name), 5.0, "the reload")

    peers = wg_peers(world.a, pywg.name)
    assert peers[spare.public_key].allowed_ips == ("10.60.0.0/24",)
    assert peers[newcomer.public_key].allowed_ips == ("10.70.0.0/24",)
    routes = _routes(world.a, pywg.ifname)
    assert {ip_network("10.60.0.0/24"), ip_network("10.70.0.0/24")} <= routes
    assert ip_network("10.50.0.0/24") not in routes
    assert world.a.ping("10.99.0.2", count=3) and world.b.ping("fd99::1")
    after = wg_peers(world.a, pywg.name)[world.keys_b.public]
    assert after.latest_handshake == first, "the reload reset an unchanged peer's session"
    assert after.rx_bytes > rx_before
    assert pywg.pids() == [pywg.pid]

    # A broken file on the next SIGHUP changes nothing: the running configuration stays.
    pywg.write_config("[Interface]\nPrivateKey = broken\n")
    os.kill(pywg.pid, signal.SIGHUP)
    wait_until(lambda: "reload failed" in pywg.log(), 5.0, "the failed reload in the log")
    assert set(wg_peers(world.a, pywg.name)) == set(peers)
    assert world.a.ping("10.99.0.2") and pywg.pids() == [pywg.pid]
    assert world.keys_a.private_b64 not in pywg.log()


def _books(world: World, a: PywgUp, b: PywgUp) -> tuple[int, int, int, int]:
    """Bytes a sent to b and received from it, as a counts them; then as b counts them."""
    of_b = wg_peers(world.a, a.name)[world.keys_b.public]
    of_a = wg_peers(world.b, b.name)[world.keys_a.public]
    return of_b.tx_bytes, of_b.rx_bytes, of_a.tx_bytes, of_a.rx_bytes


def test_the_lane_keeps_the_books_the_loop_keeps(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lone packets cross the lane (pywg/runtime/lane.py), bursts the loop. The same pings and flood
    leave the same `wg show` transfer figures with the lane as without it, and each side's agree
    with the other's: nothing lost, nothing counted twice."""
    deltas = {}
    for lane in ("0", "1"):
        monkeypatch.setenv("PYWG_LANE", lane)
        a, b = PywgUp(world.a, world.cfg_a), PywgUp(world.b, world.cfg_b)
        try:
            a.up()
            b.up()
            assert world.a.ping("10.99.0.2", timeout=PING)  # the handshake first

            before = _books(world, a, b)
            assert world.a.ping("10.99.0.2", count=5) and world.b.ping("fd99::1", count=5)
            flood = ["ping", "-n", "-q", "-f", "-l", "8", "-c", "300", "-s", "1000", "10.99.0.2"]
            assert " 0% packet loss" in world.a.run(flood, timeout=60).stdout
            after = _books(world, a, b)
            assert (after[0], after[1]) == (after[3], after[2])
            deltas[lane] = tuple(x - y for x, y in zip(after, before, strict=True))
            assert ("lane: on" in a.log()) == (lane == "1"), a.log()
        finally:
            a.close()
            b.close()
    assert deltas["0"] == deltas["1"]


@pytest.mark.parametrize("foreground", [True, False], ids=["foreground", "daemon"])
def test_sigterm_removes_everything(world: World, foreground: bool) -> None:
    pywg = PywgUp(world.a, world.cfg_a)
    process = pywg.start_foreground() if foreground else None
    if process is None:
        pywg.up()
    WireguardGo(world.b, world.cfg_b).start()
    assert world.a.ping("10.99.0.2", timeout=PING)
    assert ip_network("10.99.0.2/32") in _routes(world.a, pywg.ifname)
    os.kill(pywg.pid, signal.SIGTERM)
    if process is not None:
        assert process.wait(10) == 0
    pywg.wait_gone(timeout=5.0)
    assert world.a.ip("route", "show", "10.99.0.2/32").strip() == ""


def test_down_after_sigkill_removes_what_the_dead_daemon_left(world: World) -> None:
    pywg = PywgUp(world.a, world.cfg_a)
    pywg.up()
    daemon = pywg.pid
    os.kill(daemon, signal.SIGKILL)
    wait_until(lambda: not world.a.has_link(pywg.ifname), 10.0, "the daemon's TUN to go")
    assert pywg.socket_path.exists()  # nobody removed it: the process died at once
    done = pywg.down(check=False)
    assert done.returncode != 0
    _assert_clean_failure(done.stderr, done.stdout, pywg.ifname, "pywg down")
    assert pywg.leftovers() == []


@pytest.mark.slow
def test_reload_reaches_exactly_the_named_tunnel_and_says_how_it_went(world: World) -> None:
    host = world.a
    first_text = _ini()
    second_text = _ini().replace("ListenPort = 51820", "ListenPort = 51821").replace("10.5.", "10.6.")
    first, second = PywgUp(host, first_text, ifname="wg0"), PywgUp(host, second_text, ifname="wg1")
    first.up()
    second.up()
    extra = f"\n[Peer]\nPublicKey = {KeyPair.generate().public_b64}\nAllowedIPs = 10.6.9.0/24\n"
    first.write_config(first_text + extra.replace("10.6.", "10.5."))
    second.write_config(second_text + extra)

    done = host.run(pywg_argv("reload", second.name))
    config = second.config_path.resolve()
    assert one_line(done.stdout) == f"reloaded {second.name}: 2 peers, 2 routes from {config}"
    assert len(wg_peers(host, second.name)) == 2 and len(wg_peers(host, first.name)) == 1

    # Its warnings come back too, naming the file and line.
    hooked = _ini(interface="PostUp = true\n").replace("ListenPort = 51820", "ListenPort = 51821")
    second.write_config(hooked.replace("10.5.", "10.6.") + extra)
    done = host.run(pywg_argv("reload", second.name), check=False)
    assert done.returncode == 0
    warning = one_line(done.stderr)
    assert warning.startswith(f"pywg reload: warning: {config}: line 5: [Interface] PostUp: "), warning

    # A broken file: the error, naming file and line, and the running configuration stays.
    second.write_config(second_text + "\n[Peer]\nPublicKey = short\n")
    done = host.run(pywg_argv("reload", second.name), check=False)
    line = _assert_clean_failure(
        done.stderr, done.stdout, f"{config}: line 11: [Peer] #2 PublicKey", "pywg reload"
    )
    assert line.endswith("; the running configuration stays")
    assert len(wg_peers(host, second.name)) == 2 and second.pids() == [second.pid]
    assert "reload failed" in second.log()

    # What is not a `pywg up` tunnel says so.
    wireguard_go = WireguardGo(world.b, world.cfg_b).start()
    done = host.run(pywg_argv("reload", wireguard_go.ifname), check=False)
    _assert_clean_failure(done.stderr, done.stdout, "not a `pywg up` tunnel", "pywg reload")
    done = host.run(pywg_argv("reload", f"{second.name}x"), check=False)
    _assert_clean_failure(done.stderr, done.stdout, "no tunnel of that name is running", "pywg reload")
    first.down()
    second.down()


def test_the_interface_is_named_after_a_wg_quick_file_as_wg_quick_does(host: Host) -> None:
    conf = PywgUp(host, _ini())  # its file is NAME.conf
    conf.ifname = conf.name
    json_file = PywgUp(host, _json().replace("10.5.", "10.6."), ifname="net1", suffix=".json")
    for pywg in (conf, json_file):
        done = host.run(pywg_argv("up", str(pywg.config_path), "--name", pywg.name))
        assert done.stdout.startswith(f"{pywg.ifname} is up"), done.stdout
        assert host.has_link(pywg.ifname)
    for pywg in (conf, json_file):
        pywg.down()
        assert pywg.leftovers() == []


# --- pywg-userspace -------------------------------------------------------------------------------------


def test_wg_quick_runs_pywg_userspace(world: World) -> None:
    ifname = unique_ifname("pyw")
    tracker = Userspace(world.a, ifname)  # stops what is left if the test fails
    conf = world.a.write_secret(f"{ifname}.conf", format_wg_quick(world.cfg_a))
    env = ["env", f"WG_QUICK_USERSPACE_IMPLEMENTATION={PYWG_USERSPACE}"]
    WireguardGo(world.b, world.cfg_b).start()

    done = world.a.run([*env, "wg-quick", "up", str(conf)], check=False)
    assert done.returncode == 0, done.stderr
    assert PYWG_USERSPACE in done.stderr  # wg-quick fell back to the userspace implementation
    assert _addresses(world.a, ifname) == set(INNER_A)
    assert _link(world.a, ifname)["mtu"] == DEFAULT_MTU
    assert tracker.pids(), "no pywg-userspace process"
    assert world.a.ping("10.99.0.2", timeout=PING) and world.a.ping("fd99::2")
    assert world.b.ping("10.99.0.1")
    assert wg_peers(world.a, ifname)[world.keys_b.public].latest_handshake > 0

    done = world.a.run([*env, "wg-quick", "down", str(conf)], check=False)
    assert done.returncode == 0, done.stderr
    tracker.wait_gone(timeout=5.0)


def test_userspace_stays_in_the_foreground_with_wg_process_foreground(host: Host) -> None:
    pywg = Userspace(host)
    process = pywg.foreground()
    time.sleep(0.5)
    assert process.poll() is None and pywg.pids() == [process.pid]
    assert host.has_link(pywg.ifname)
    host.ip("link", "del", pywg.ifname)
    assert process.wait(10) == 0
    pywg.wait_gone()


def test_userspace_daemonizes_and_its_tun_works_in_another_namespace(topology: Topology) -> None:
    """Started in `birth` (its UDP socket stays there), the interface moved to `pod`, the peer in `far`."""
    birth, pod, far = topology.host("birth"), topology.host("pod"), topology.host("far")
    link(birth, far, [f"{A_UNDER}/24"], [f"{B_UNDER}/24"])
    keys_a, keys_b = KeyPair.generate(), KeyPair.generate()
    cfg_a, cfg_b = tunnel_configs(keys_a, keys_b, INNER_A, INNER_B, A_UNDER, B_UNDER)
    WireguardGo(far, cfg_b).start()

    pywg = Userspace(birth)
    done = pywg.daemon()
    assert done.returncode == 0
    assert _socket_accepts(pywg.socket_path)  # it exists when the command returns
    pids = pywg.pids()
    assert len(pids) == 1 and birth.has_link(pywg.ifname)
    pywg.wg("setconf", pywg.ifname, str(birth.write_secret("a.conf", wg_setconf_text(cfg_a))))

    birth.ip("link", "set", "dev", pywg.ifname, "netns", pod.name)
    assert not birth.has_link(pywg.ifname) and pod.has_link(pywg.ifname)
    for address in INNER_A:
        pod.add_address(pywg.ifname, address)
    pod.set_link(pywg.ifname, True)
    assert pod.ping("10.99.0.2", timeout=PING) and pod.ping("fd99::2")
    assert far.ping("10.99.0.1")
    time.sleep(1.5)  # past the engine's watchdog: a moved TUN is not a deleted one
    assert pywg.pids() == pids
    assert pod.ping("10.99.0.2")

    pod.ip("link", "del", pywg.ifname)
    wait_until(lambda: not pywg.pids() and not pywg.socket_path.exists(), 5.0, "pywg-userspace to exit")


# --- metrics ---------------------------------------------------------------------------------------


def test_metrics_of_a_tunnel(world: World) -> None:
    """`pywg up --metrics` serves the peers' counters under prometheus_wireguard_exporter's names."""
    pywg = PywgUp(world.a, world.cfg_a, args=["--metrics", "127.0.0.1:9587"])
    done = pywg.up()
    assert "metrics at http://127.0.0.1:9587/metrics" in done.stdout + done.stderr
    WireguardGo(world.b, world.cfg_b).start()
    assert world.a.ping("10.99.0.2", count=3, timeout=PING)
    peer = base64.b64encode(world.keys_b.public).decode()
    labels = {"interface": pywg.ifname, "public_key": peer}

    before = scrape(world.a, "http://127.0.0.1:9587/metrics")
    shown = wg_peers(world.a, pywg.name)[world.keys_b.public]
    after = scrape(world.a, "http://127.0.0.1:9587/metrics")
    for name, wg_value in (
        ("wireguard_sent_bytes_total", shown.tx_bytes),
        ("wireguard_received_bytes_total", shown.rx_bytes),
    ):
        assert sample_value(before, name, **labels) <= wg_value <= sample_value(after, name, **labels), name
    assert sample_value(after, "wireguard_latest_handshake_seconds", **labels) // 1 == shown.latest_handshake
    # 3 pings, their replies, the handshake: at least 4 datagrams each way
    assert sample_value(after, "pywg_peer_sent_packets_total", **labels) >= 4
    assert sample_value(after, "pywg_peer_received_packets_total", **labels) >= 4
    assert sample_value(after, "pywg_peer_handshake_attempts_total", **labels) >= 1
    assert sample_value(after, "pywg_peer_handshake_failures_total", **labels) == 0
    pywg.down()
    assert pywg.leftovers() == []


@pytest.mark.parametrize(
    ("address", "said"),
    [("9587", "ADDRESS:PORT"), ("localhost:9587", "IP address"), ("::1:9587", "brackets")],
)
def test_metrics_address_mistakes(host: Host, address: str, said: str) -> None:
    pywg = PywgUp(host, _ini(), args=["--metrics", address])
    done = pywg.up(check=False)
    assert done.returncode != 0
    line = _assert_clean_failure(done.stderr, done.stdout, "--metrics")
    assert said in line
    assert not host.has_link(pywg.ifname) and pywg.leftovers() == []


def test_metrics_port_taken(host: Host) -> None:
    first = PywgUp(host, _ini(), args=["--metrics", "127.0.0.1:9587"])
    first.up()
    other_port = _ini().replace("ListenPort = 51820", "ListenPort = 51821")
    second = PywgUp(host, other_port, ifname="wg1", args=["--metrics", "127.0.0.1:9587"])
    done = second.up(check=False)
    assert done.returncode != 0
    line = _assert_clean_failure(done.stderr, done.stdout, "--metrics 127.0.0.1:9587")
    assert "in use" in line
    assert not host.has_link("wg1") and second.leftovers() == []
    first.down()
