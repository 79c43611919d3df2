"""The end-to-end test world itself, proved with what exists today: veth links and wireguard-go.

Needs root, `ip`, `wireguard-go`, `wg`, `iperf3` and iputils `ping`. The last test checks that the
tests before it left no namespace, process, socket or temporary directory behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.topology import (
    NETNS_DIR,
    OWNER,
    OWNER_ENV,
    WG_SOCKET_DIR,
    Host,
    KeyPair,
    Link,
    Topology,
    WireguardGo,
    find_leftovers,
    iperf3,
    link,
    own_leftovers,
    owner_alive,
    sweep,
    tcp_transfer,
    tunnel_configs,
    unique_ifname,
    wait_until,
    wg_setconf_text,
)

pytest_plugins = ["tests.support.topology"]

pytestmark = pytest.mark.root

A4, B4 = "192.0.2.1/24", "192.0.2.2/24"
A6, B6 = "2001:db8::1/64", "2001:db8::2/64"
INNER_A = ["10.99.0.1/24", "fd99::1/64"]
INNER_B = ["10.99.0.2/24", "fd99::2/64"]


@dataclass
class Pair:
    a: Host
    b: Host
    wire: Link


@pytest.fixture
def pair(topology: Topology) -> Pair:
    a, b = topology.host("a"), topology.host("b")
    return Pair(a, b, link(a, b, [A4, A6], [B4, B6]))


@dataclass
class Tunnel:
    pair: Pair
    keys_a: KeyPair
    keys_b: KeyPair
    wg_a: WireguardGo
    wg_b: WireguardGo


@pytest.fixture
def tunnel(pair: Pair) -> Tunnel:
    keys_a, keys_b = KeyPair.generate(), KeyPair.generate()
    cfg_a, cfg_b = tunnel_configs(
        keys_a,
        keys_b,
        INNER_A,
        INNER_B,
        a_endpoint=pair.wire.address(pair.a, 4),
        b_endpoint=pair.wire.address(pair.b, 6),
    )
    wg_a = WireguardGo(pair.a, cfg_a).start()
    wg_b = WireguardGo(pair.b, cfg_b).start()
    return Tunnel(pair, keys_a, keys_b, wg_a, wg_b)


# --- hosts and links ------------------------------------------------------------------------------


def test_hosts_over_veth_ping_both_ways(pair: Pair) -> None:
    for host in (pair.a, pair.b):
        assert host.name.startswith(f"pywgt-{OWNER}-") and (NETNS_DIR / host.name).exists()
        assert "UP" in host.ip("link", "show", "lo")
        assert stat.S_IMODE(host.tmpdir.stat().st_mode) == 0o700
    assert pair.a.ping("192.0.2.2") and pair.a.ping("2001:db8::2")
    assert pair.b.ping("192.0.2.1") and pair.b.ping("2001:db8::1", count=3)
    assert pair.wire.address(pair.b, 6) == "2001:db8::2"


def test_roaming_and_link_down_up(pair: Pair) -> None:
    pair.wire.set_addresses(pair.b, ["192.0.2.77/24", "2001:db8::77/64"])
    assert pair.wire.address(pair.b, 4) == "192.0.2.77"
    assert "192.0.2.2/" not in pair.b.ip("addr", "show", "dev", pair.wire.ifname(pair.b))
    assert pair.a.ping("192.0.2.77") and pair.a.ping("2001:db8::77")
    assert not pair.a.ping("192.0.2.2", timeout=1)

    pair.wire.down()
    assert not pair.a.ping("192.0.2.77", timeout=1)
    pair.wire.up()
    assert pair.a.ping("192.0.2.77") and pair.a.ping("2001:db8::77")  # IPv6 kept its address


# A process that says when it runs: `Host.popen` returns once `ip netns exec` has started, which
# then enters the namespace and execs the command. Until then the pid is not in the namespace, and
# during the exec its /proc/PID/environ reads empty; after this line, neither can be the case.
SLEEPER = [sys.executable, "-c", "print('running', flush=True); import time; time.sleep(60)"]


def start_sleeper(host: Host) -> subprocess.Popen[bytes]:
    """SLEEPER in `host`, once it runs there."""
    process = host.popen(SLEEPER, stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"running\n"
    return process


def test_commands_and_processes_run_inside_the_host(pair: Pair) -> None:
    assert pair.wire.ifname(pair.a) in pair.a.run(["ip", "-o", "link"]).stdout
    process = start_sleeper(pair.a)
    assert process.pid in pair.a.pids()
    with open(f"/proc/{process.pid}/environ", "rb") as f:
        assert f"{OWNER_ENV}={OWNER}".encode() in f.read().split(b"\0")


# --- wireguard-go ---------------------------------------------------------------------------------


def test_wireguard_go_tunnel_pings_and_handshakes(tunnel: Tunnel) -> None:
    a, b = tunnel.pair.a, tunnel.pair.b
    assert a.ping("10.99.0.2") and a.ping("fd99::2")
    assert b.ping("10.99.0.1") and b.ping("fd99::1")

    seen_by_a = tunnel.wg_a.wait_for_handshake(tunnel.keys_b.public)
    seen_by_b = tunnel.wg_b.wait_for_handshake(tunnel.keys_a.public)
    assert abs(seen_by_a.latest_handshake - time.time()) < 30
    assert seen_by_a.endpoint == "[2001:db8::2]:51820"
    # a spoke first, to b's IPv6 endpoint: b's endpoint for a roamed to where that came from.
    assert seen_by_b.endpoint == "[2001:db8::1]:51820"
    assert set(seen_by_a.allowed_ips) == {"10.99.0.2/32", "fd99::2/128"}
    assert seen_by_a.rx_bytes > 0 and seen_by_b.tx_bytes > 0


def test_wireguard_go_tunnel_carries_tcp(tunnel: Tunnel) -> None:
    a, b = tunnel.pair.a, tunnel.pair.b
    assert tcp_transfer(b, a, "10.99.0.2", 5 * 1024 * 1024)
    assert tcp_transfer(a, b, "fd99::1", 1024 * 1024)


def test_wireguard_go_tunnel_resumes_after_peer_restart(tunnel: Tunnel) -> None:
    a, b = tunnel.pair.a, tunnel.pair.b
    assert a.ping("10.99.0.2")
    old_pid = tunnel.wg_b.process.pid if tunnel.wg_b.process else None
    tunnel.wg_b.restart()
    assert tunnel.wg_b.process is not None and tunnel.wg_b.process.pid != old_pid
    assert tunnel.wg_b.peers()[tunnel.keys_a.public].latest_handshake == 0  # all state lost
    # The restarted side has the endpoint and sends first; a's stale session is replaced at once.
    assert b.ping("10.99.0.1", timeout=10) and a.ping("fd99::2")
    tunnel.wg_b.wait_for_handshake(tunnel.keys_a.public)
    assert tcp_transfer(b, a, "10.99.0.2", 256 * 1024)


def test_keys_stay_out_of_argv_environment_and_disk(tunnel: Tunnel) -> None:
    secrets_b64 = {tunnel.keys_a.private_b64, tunnel.keys_b.private_b64}
    for wg in (tunnel.wg_a, tunnel.wg_b):
        assert wg.process is not None and wg.socket_path.exists()
        for what in ("cmdline", "environ"):
            with open(f"/proc/{wg.process.pid}/{what}", "rb") as f:
                data = f.read().decode(errors="replace")
            assert not any(key in data for key in secrets_b64)
        assert list(wg.host.tmpdir.glob("*.conf")) == []  # deleted right after `wg setconf`
        assert not any(key in wg.log() for key in secrets_b64)
    assert "Address" not in wg_setconf_text(tunnel.wg_a.config)
    assert tunnel.keys_a.private_b64 in wg_setconf_text(tunnel.wg_a.config)


def test_iperf3_reports_throughput(tunnel: Tunnel) -> None:
    mbits = iperf3(tunnel.pair.b, tunnel.pair.a, "10.99.0.2", seconds=1)
    assert mbits > 1.0


def test_tcp_transfer_fails_in_bounded_time(pair: Pair) -> None:
    started = time.monotonic()
    assert not tcp_transfer(pair.b, pair.a, "192.0.2.99", 1024, timeout=2.0)  # not b's: cannot bind
    assert tcp_transfer(pair.b, pair.a, "192.0.2.2", 1024, timeout=2.0)
    pair.wire.down()  # connect and then every send time out
    assert not tcp_transfer(pair.b, pair.a, "192.0.2.2", 1024 * 1024, timeout=2.0)
    assert time.monotonic() - started < 10


# --- cleanup --------------------------------------------------------------------------------------


def test_everything_goes_when_a_test_fails() -> None:
    names: list[str] = []
    paths: list[Path] = []
    pids: list[int] = []
    with pytest.raises(ZeroDivisionError), Topology() as world:
        a, b = world.host("a"), world.host("b")
        link(a, b, [A4], [B4])
        cfg_a, cfg_b = tunnel_configs(KeyPair.generate(), KeyPair.generate(), INNER_A, INNER_B, "192.0.2.1")
        wg_a, wg_b = WireguardGo(a, cfg_a).start(), WireguardGo(b, cfg_b).start()
        start_sleeper(a)
        names += [a.name, b.name]
        paths += [a.tmpdir, b.tmpdir, wg_a.socket_path, wg_b.socket_path]
        pids += [*a.pids(), *b.pids()]
        assert len(pids) == 3 and all(path.exists() for path in paths)
        _ = 1 / 0
    assert not any((NETNS_DIR / name).exists() for name in names)
    assert not any(path.exists() for path in paths)
    assert not any(_running(pid) for pid in pids)


_ABORTED_RUN = """
import json, os, subprocess, sys
sys.path.insert(0, sys.argv[1])
from tests.support.topology import KeyPair, Topology, WireguardGo, tunnel_configs
world = Topology()
host = world.host("aborted")
cfg, _ = tunnel_configs(KeyPair.generate(), KeyPair.generate(), ["10.99.0.1/24"], ["10.99.0.2/24"])
wg = WireguardGo(host, cfg).start()
sleeper = host.popen(json.loads(sys.argv[2]), stdout=subprocess.PIPE)
assert sleeper.stdout.readline() == b"running\\n"  # in the namespace, its environment in place
print(json.dumps([host.name, str(host.tmpdir), str(wg.socket_path), wg.process.pid, sleeper.pid]))
os._exit(0)  # like a pytest run killed in the middle of a test: no cleanup at all
"""


def test_sweep_removes_what_an_aborted_run_left() -> None:
    root = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run(
        [sys.executable, "-c", _ABORTED_RUN, root, json.dumps(SLEEPER)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    name, tmpdir, socket_path, *pids = json.loads(out)
    try:
        assert (NETNS_DIR / name).exists() and Path(socket_path).exists()
        assert all(Path(f"/proc/{pid}").exists() for pid in pids)
        swept = sweep()
        assert name in swept.namespaces and set(pids) <= set(swept.processes)
        assert not (NETNS_DIR / name).exists() and not Path(tmpdir).exists()
        assert not Path(socket_path).exists()  # wireguard-go removed it on SIGTERM
        wait_until(lambda: not any(_running(pid) for pid in pids), 5.0, "the aborted run's processes")
    finally:
        for pid in pids:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        shutil.rmtree(tmpdir, ignore_errors=True)


def test_sweep_removes_stale_sockets_and_dead_owners_namespaces() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    tag = f"{dead.pid}-1"  # no process has that pid and start time
    assert not owner_alive(tag) and owner_alive(OWNER)
    name = f"pywgt-{tag}-abcdef"
    subprocess.run(["ip", "netns", "add", name], check=True)
    WG_SOCKET_DIR.mkdir(parents=True, exist_ok=True)
    socket_path = WG_SOCKET_DIR / f"{unique_ifname()}.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(socket_path))  # bound, never listening, then closed: a dead daemon's socket
    try:
        assert find_leftovers(lambda t: t == tag).namespaces == [name]
        swept = sweep()
        assert name in swept.namespaces and socket_path in swept.sockets
        assert not (NETNS_DIR / name).exists() and not socket_path.exists()
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        socket_path.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


def test_zz_nothing_left_behind() -> None:
    """Runs last (file order): every earlier test's fixtures have been finalized by now."""
    left = own_leftovers()
    assert not left, f"left behind: {left}"
