"""pywg end to end: `pywg up` in network namespaces, against wireguard-go and against itself.

Every test builds hosts joined by a veth pair (IPv4 192.0.2.0/24 and IPv6 2001:db8::/64 underlay),
runs `pywg up` in host `a` and wireguard-go (or a second pywg) in host `b`, and checks what users
see: pings and verified TCP transfers through the tunnel, and `wg show` on both sides. Needs root,
`ip`, `wireguard-go`, `wg` and iputils `ping`. The last test checks that nothing was left behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import pytest

from pywg.config import EndpointSpec, InterfaceConfig
from pywg.core.keys import encode_key
from pywg.native import loader
from tests.support.pywg_run import Pywg
from tests.support.topology import (
    WG_PORT,
    Host,
    KeyPair,
    Link,
    PeerStatus,
    Topology,
    WireguardGo,
    link,
    own_leftovers,
    tcp_transfer,
    tunnel_configs,
    wait_until,
)

pytest_plugins = ["tests.support.topology"]

pytestmark = pytest.mark.root

A4, B4 = "192.0.2.1/24", "192.0.2.2/24"
A6, B6 = "2001:db8::1/64", "2001:db8::2/64"
INNER_A = ["10.99.0.1/24", "fd99::1/64"]
INNER_B = ["10.99.0.2/24", "fd99::2/64"]
INNER_A4, INNER_A6 = "10.99.0.1", "fd99::1"
INNER_B4, INNER_B6 = "10.99.0.2", "fd99::2"
MB = 1024 * 1024
KEEPALIVE_SIZE = 32  # an empty data message: header 16 + tag 16
UNDERLAYS = [pytest.param(4, id="ipv4-underlay"), pytest.param(6, id="ipv6-underlay")]


@dataclass
class Pair:
    a: Host
    b: Host
    wire: Link
    keys_a: KeyPair
    keys_b: KeyPair

    def endpoint(self, host: Host, version: int) -> str:
        """`host`'s underlay address as `wg show` writes an endpoint on port 51820."""
        address = self.wire.address(host, version)
        return f"[{address}]:{WG_PORT}" if version == 6 else f"{address}:{WG_PORT}"

    def configs(
        self,
        a_reaches_b: int | None = None,
        b_reaches_a: int | None = None,
        inner_a: list[str] = INNER_A,
        inner_b: list[str] = INNER_B,
        mtu: int | None = None,
    ) -> tuple[InterfaceConfig, InterfaceConfig]:
        """a's and b's configurations; `a_reaches_b` = 4 or 6 gives a b's endpoint in that family."""
        return tunnel_configs(
            self.keys_a,
            self.keys_b,
            inner_a,
            inner_b,
            a_endpoint=self.wire.address(self.a, b_reaches_a) if b_reaches_a else None,
            b_endpoint=self.wire.address(self.b, a_reaches_b) if a_reaches_b else None,
            mtu=mtu,
        )


@pytest.fixture
def pair(topology: Topology) -> Pair:
    a, b = topology.host("a"), topology.host("b")
    return Pair(a, b, link(a, b, [A4, A6], [B4, B6]), KeyPair.generate(), KeyPair.generate())


def ping_both_families(src: Host, inner4: str, inner6: str, timeout: float = 5.0) -> None:
    assert src.ping(inner4, timeout=timeout), f"no ping reply from {inner4} through the tunnel"
    assert src.ping(inner6, timeout=timeout), f"no ping reply from {inner6} through the tunnel"


def assert_counters_agree(pywg: Pywg, wg: WireguardGo | Pywg) -> None:
    """Each side's tx is the other's rx: both count whole WireGuard messages, handshakes included."""

    def statuses() -> tuple[PeerStatus, PeerStatus]:
        return pywg.peers()[wg.public_key], wg.peers()[pywg.public_key]

    def agree() -> bool:
        mine, theirs = statuses()
        return mine.tx_bytes == theirs.rx_bytes and mine.rx_bytes == theirs.tx_bytes

    try:
        wait_until(agree, 3.0, "the two sides' byte counters to agree", interval=0.1)
    except AssertionError:
        mine, theirs = statuses()
        raise AssertionError(f"pywg sees {mine}, its peer sees {theirs}") from None


# --- handshakes, underlays, inner families ---------------------------------------------------------


@pytest.mark.parametrize("underlay", UNDERLAYS)
def test_pywg_initiates_to_wireguard_go(pair: Pair, underlay: int) -> None:
    """Only pywg knows an endpoint, so pywg sends the initiation; wireguard-go learns where pywg is."""
    cfg_a, cfg_b = pair.configs(a_reaches_b=underlay)
    wg = WireguardGo(pair.b, cfg_b).start()
    pywg = Pywg(pair.a, cfg_a).start()
    assert wg.peers()[pywg.public_key].endpoint is None

    ping_both_families(pair.a, INNER_B4, INNER_B6)
    ping_both_families(pair.b, INNER_A4, INNER_A6)

    seen_by_wg = wg.wait_for_handshake(pywg.public_key)
    seen_by_pywg = pywg.wait_for_handshake(wg.public_key)
    assert seen_by_wg.endpoint == pair.endpoint(pair.a, underlay)
    assert seen_by_pywg.endpoint == pair.endpoint(pair.b, underlay)
    assert abs(seen_by_pywg.latest_handshake - time.time()) < 30
    assert abs(seen_by_wg.latest_handshake - seen_by_pywg.latest_handshake) <= 2
    assert set(seen_by_pywg.allowed_ips) == {"10.99.0.2/32", "fd99::2/128"}
    assert seen_by_pywg.tx_bytes > 0 and seen_by_pywg.rx_bytes > 0
    assert_counters_agree(pywg, wg)
    assert pywg.stop() == 0


@pytest.mark.parametrize("underlay", UNDERLAYS)
def test_pywg_responds_to_wireguard_go(pair: Pair, underlay: int) -> None:
    """Only wireguard-go knows an endpoint: it initiates, pywg answers and learns where it is."""
    cfg_a, cfg_b = pair.configs(b_reaches_a=underlay)
    pywg = Pywg(pair.a, cfg_a).start()
    wg = WireguardGo(pair.b, cfg_b).start()
    assert pywg.peers()[wg.public_key].endpoint is None

    ping_both_families(pair.b, INNER_A4, INNER_A6)
    ping_both_families(pair.a, INNER_B4, INNER_B6)

    seen_by_pywg = pywg.wait_for_handshake(wg.public_key)
    seen_by_wg = wg.wait_for_handshake(pywg.public_key)
    assert seen_by_pywg.endpoint == pair.endpoint(pair.b, underlay)
    assert seen_by_wg.endpoint == pair.endpoint(pair.a, underlay)
    assert seen_by_pywg.rx_bytes > 0 and seen_by_wg.rx_bytes > 0
    assert_counters_agree(pywg, wg)
    assert pywg.stop() == 0


def test_pywg_to_pywg(pair: Pair) -> None:
    """Two pywg processes, a from wg-quick INI and b from JSON, each knowing the other's endpoint."""
    cfg_a, cfg_b = pair.configs(a_reaches_b=6, b_reaches_a=4)
    pywg_a = Pywg(pair.a, cfg_a).start()
    pywg_b = Pywg(pair.b, cfg_b, ifname="pywg1", config_format="json").start()

    ping_both_families(pair.a, INNER_B4, INNER_B6)
    ping_both_families(pair.b, INNER_A4, INNER_A6)
    assert tcp_transfer(pair.b, pair.a, INNER_B4, 2 * MB)
    assert tcp_transfer(pair.a, pair.b, INNER_A6, 2 * MB)

    pywg_a.wait_for_handshake(pywg_b.public_key)
    pywg_b.wait_for_handshake(pywg_a.public_key)
    assert_counters_agree(pywg_a, pywg_b)
    # Both ran the data path this test run asks for (CI runs this file with and without PYWG_NO_EXT).
    expected = f"data path: {loader.describe()}"
    for pywg in (pywg_a, pywg_b):
        assert expected in pywg.log(), f"{pywg} did not log {expected!r}:\n{pywg.log()}"
        assert f"UDP port {WG_PORT}: GSO " in pywg.log()  # which offloads the kernel offers
    assert pywg_b.stop() == 0
    assert pywg_a.stop() == 0


# --- traffic ---------------------------------------------------------------------------------------


def test_tcp_transfers_8mb_both_directions_with_wireguard_go(pair: Pair) -> None:
    cfg_a, cfg_b = pair.configs(a_reaches_b=4, b_reaches_a=4)
    pywg = Pywg(pair.a, cfg_a).start()
    wg = WireguardGo(pair.b, cfg_b).start()
    assert tcp_transfer(pair.b, pair.a, INNER_B4, 8 * MB), "pywg -> wireguard-go over inner IPv4"
    assert tcp_transfer(pair.a, pair.b, INNER_A4, 8 * MB), "wireguard-go -> pywg over inner IPv4"
    assert tcp_transfer(pair.b, pair.a, INNER_B6, 8 * MB), "pywg -> wireguard-go over inner IPv6"
    assert tcp_transfer(pair.a, pair.b, INNER_A6, 8 * MB), "wireguard-go -> pywg over inner IPv6"
    assert wg.peers()[pywg.public_key].rx_bytes > 16 * MB
    assert pywg.peers()[wg.public_key].rx_bytes > 16 * MB
    assert pywg.stop() == 0


@pytest.mark.parametrize("underlay", UNDERLAYS)
def test_large_inner_mtu_pywg_to_pywg(pair: Pair, underlay: int) -> None:
    """MTU 9000 on both TUNs over a 1500-byte underlay: 8 kB pings go whole through the tunnel,
    their UDP datagrams fragmented on the wire."""
    cfg_a, cfg_b = pair.configs(a_reaches_b=underlay, b_reaches_a=underlay, mtu=9000)
    pywg_a = Pywg(pair.a, cfg_a).start()
    pywg_b = Pywg(pair.b, cfg_b).start()
    for pywg in (pywg_a, pywg_b):
        assert "mtu 9000" in pywg.host.ip("link", "show", "dev", pywg.ifname)
    for source, target in ((pair.a, INNER_B4), (pair.a, INNER_B6), (pair.b, INNER_A4), (pair.b, INNER_A6)):
        # -M do: the inner packet must not be fragmented before the tunnel; it fits the TUN MTU.
        done = source.run(
            ["ping", "-n", "-q", "-c", "2", "-i", "0.2", "-s", "8000", "-M", "do", "-w", "5", target],
            check=False,
            timeout=10,
        )
        assert done.returncode == 0, f"8000-byte ping to {target}: {done.stdout}{done.stderr}"
    assert tcp_transfer(pair.b, pair.a, INNER_B4, 2 * MB)


# --- roaming ---------------------------------------------------------------------------------------

ROAM_TRANSFER = 64 * MB
ROAM_AFTER = 4 * MB


def _transfer_while(
    server: Host, client: Host, address: str, watch: WireguardGo | Pywg, peer: bytes, move: Callable[[], None]
) -> None:
    """A long TCP transfer; once `watch` has received ROAM_AFTER bytes from `peer`, `move()`."""
    with ThreadPoolExecutor(1) as pool:
        transfer = pool.submit(tcp_transfer, server, client, address, ROAM_TRANSFER, 60.0)
        wait_until(
            lambda: transfer.done() or watch.peers()[peer].rx_bytes > ROAM_AFTER,
            20.0,
            "the transfer to get going",
            interval=0.02,
        )
        assert not transfer.done(), "the transfer ended before the roaming started"
        move()
        assert not transfer.done(), "the transfer ended while roaming: make ROAM_TRANSFER larger"
        assert transfer.result(timeout=70.0), "the TCP transfer did not survive the roaming"


@pytest.mark.parametrize("underlay", UNDERLAYS)
def test_pywg_roams_mid_transfer(pair: Pair, underlay: int) -> None:
    """pywg's underlay address changes under a transfer: its replies can no longer leave from the
    address wireguard-go reached, so they leave from the new one, and wireguard-go follows."""
    cfg_a, cfg_b = pair.configs(a_reaches_b=underlay, b_reaches_a=underlay)
    wg = WireguardGo(pair.b, cfg_b).start()
    pywg = Pywg(pair.a, cfg_a).start()
    assert pair.a.ping(INNER_B4)
    assert wg.peers()[pywg.public_key].endpoint == pair.endpoint(pair.a, underlay)
    moved, new_endpoint = {
        4: (["192.0.2.11/24", A6], "192.0.2.11:51820"),
        6: ([A4, "2001:db8::11/64"], "[2001:db8::11]:51820"),
    }[underlay]

    def roam() -> None:
        pair.wire.set_addresses(pair.a, moved)

    _transfer_while(pair.b, pair.a, INNER_B4, wg, pywg.public_key, roam)
    assert wg.peers()[pywg.public_key].endpoint == new_endpoint
    assert pair.b.ping(INNER_A4) and pair.a.ping(INNER_B6)


def test_wireguard_go_roams_mid_transfer(pair: Pair) -> None:
    """wireguard-go's underlay address changes under a transfer; pywg follows it to the new one.

    wireguard-go 0.0.20220316 drops its cached source address only when sendmsg fails with EINVAL;
    here the kernel answers ENETUNREACH, so on its own it would stay mute until its next handshake
    (15 s). Setting its endpoint for pywg again (as a re-resolve does) clears that cache.
    """
    cfg_a, cfg_b = pair.configs(a_reaches_b=4, b_reaches_a=4)
    wg = WireguardGo(pair.b, cfg_b).start()
    pywg = Pywg(pair.a, cfg_a).start()
    assert pair.b.ping(INNER_A4)
    assert pywg.peers()[wg.public_key].endpoint == "192.0.2.2:51820"

    def roam() -> None:
        pair.wire.set_addresses(pair.b, ["192.0.2.22/24", B6])
        peer = cfg_b.peers[0]
        pair.b.run(
            ["wg", "set", wg.ifname, "peer", encode_key(peer.public_key), "endpoint", str(peer.endpoint)]
        )

    _transfer_while(pair.a, pair.b, INNER_A4, pywg, wg.public_key, roam)
    assert pywg.peers()[wg.public_key].endpoint == "192.0.2.22:51820"
    assert pair.a.ping(INNER_B4) and pair.b.ping(INNER_A6)


# --- peer restarts and keepalives ------------------------------------------------------------------


@pytest.mark.slow
def test_tunnel_resumes_after_wireguard_go_restarts(pair: Pair) -> None:
    cfg_a, cfg_b = pair.configs(a_reaches_b=4, b_reaches_a=4)
    pywg = Pywg(pair.a, cfg_a).start()
    wg = WireguardGo(pair.b, cfg_b).start()
    assert pair.a.ping(INNER_B4)
    first = pywg.wait_for_handshake(wg.public_key).latest_handshake

    # The restarted side sends first: its initiation replaces pywg's stale session at once.
    wg.restart()
    assert wg.peers()[pywg.public_key].latest_handshake == 0
    assert pair.b.ping(INNER_A4, timeout=5), "no reply after the restarted wireguard-go spoke first"
    assert tcp_transfer(pair.b, pair.a, INNER_B4, MB)

    # pywg sends first: wireguard-go drops its data (unknown session) until pywg, hearing nothing
    # back, starts a new handshake (KEEPALIVE_TIMEOUT + REKEY_TIMEOUT = 15 s after its first send).
    wg.restart()
    assert pair.a.ping(INNER_B4, timeout=25), "pywg did not re-establish the session within 25 s"
    assert tcp_transfer(pair.a, pair.b, INNER_A4, MB)
    assert wg.wait_for_handshake(pywg.public_key).latest_handshake >= first
    assert pywg.peers()[wg.public_key].latest_handshake >= first


def test_persistent_keepalive_without_traffic(pair: Pair) -> None:
    """pywg with PersistentKeepalive = 1 and no traffic: wireguard-go receives a keepalive a second."""
    cfg_a, cfg_b = pair.configs(a_reaches_b=4)
    cfg_a.peers[0].persistent_keepalive = 1
    wg = WireguardGo(pair.b, cfg_b).start()
    pywg = Pywg(pair.a, cfg_a).start()
    # Turning keepalive on sends one at once, which needs a session: the handshake comes unasked.
    wg.wait_for_handshake(pywg.public_key)
    assert pywg.peers()[wg.public_key].persistent_keepalive == 1
    assert wg.peers()[pywg.public_key].persistent_keepalive == 0

    def received() -> int:
        return wg.peers()[pywg.public_key].rx_bytes

    before, started = received(), time.monotonic()
    wait_until(lambda: received() >= before + 3 * KEEPALIVE_SIZE, 6.0, "three keepalives", interval=0.1)
    elapsed = time.monotonic() - started
    assert (received() - before) % KEEPALIVE_SIZE == 0, "something other than keepalives arrived"
    assert elapsed > 1.5, f"three keepalives in {elapsed:.2f} s: not one a second"


# --- addresses -------------------------------------------------------------------------------------


@pytest.mark.parametrize("underlay", UNDERLAYS)
def test_replies_leave_from_the_address_the_peer_reached(pair: Pair, underlay: int) -> None:
    """pywg's host has two underlay addresses; wireguard-go reaches the one the kernel would not pick
    as source. pywg's answers (handshake response, data) must come from that one (sticky source)."""
    second = "192.0.2.3/24" if underlay == 4 else "2001:db8::3/64"
    pair.wire.set_addresses(pair.a, [A4, A6, second])
    route = pair.a.ip("route", "get", pair.wire.address(pair.b, underlay)).split()
    default_source = route[route.index("src") + 1]
    reached = next(
        str(i.ip)
        for i in pair.wire.addresses(pair.a)
        if i.version == underlay and str(i.ip) != default_source
    )
    cfg_a, cfg_b = pair.configs()
    cfg_b = _with_endpoint(cfg_b, reached)
    pywg = Pywg(pair.a, cfg_a).start()
    wg = WireguardGo(pair.b, cfg_b).start()

    expected = f"[{reached}]:{WG_PORT}" if underlay == 6 else f"{reached}:{WG_PORT}"
    assert pair.b.ping(INNER_A4), "wireguard-go initiates to the second address"
    assert wg.wait_for_handshake(pywg.public_key).endpoint == expected
    assert pair.a.ping(INNER_B6), "pywg sends data of its own"
    assert tcp_transfer(pair.b, pair.a, INNER_B4, MB)
    status = wg.peers()[pywg.public_key]
    assert status.endpoint == expected, f"pywg answered from {status.endpoint}, not {expected}"


def _with_endpoint(cfg: InterfaceConfig, address: str) -> InterfaceConfig:
    peer = replace(cfg.peers[0], endpoint=EndpointSpec(address, WG_PORT))
    return replace(cfg, peers=[peer])


def test_host_with_ipv6_disabled(topology: Topology) -> None:
    """IPv6 off in pywg's namespace before `pywg up`: pywg runs on IPv4 alone."""
    a, b = topology.host("a"), topology.host("b")
    a.sysctl({"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"})
    wire = link(a, b, [A4], [B4])
    pair = Pair(a, b, wire, KeyPair.generate(), KeyPair.generate())
    cfg_a, cfg_b = pair.configs(a_reaches_b=4, inner_a=INNER_A[:1], inner_b=INNER_B[:1])
    pywg = Pywg(a, cfg_a).start()
    wg = WireguardGo(b, cfg_b).start()
    assert a.run(["cat", f"/proc/sys/net/ipv6/conf/{pywg.ifname}/disable_ipv6"]).stdout.strip() == "1"

    assert a.ping(INNER_B4) and b.ping(INNER_A4)
    assert tcp_transfer(b, a, INNER_B4, 2 * MB)
    assert tcp_transfer(a, b, INNER_A4, 2 * MB)
    assert wg.wait_for_handshake(pywg.public_key).endpoint == "192.0.2.1:51820"
    assert pywg.stop() == 0


# --- running as a daemon ---------------------------------------------------------------------------


def test_daemon_up_then_down(pair: Pair) -> None:
    """`pywg up` without --foreground returns once the tunnel works; `pywg down` removes it all."""
    cfg_a, cfg_b = pair.configs(a_reaches_b=4)
    pywg = Pywg(pair.a, cfg_a)
    done = pywg.daemon()
    assert f"{pywg.ifname} is up" in done.stdout
    assert pywg.running and pair.a.has_link(pywg.ifname)
    assert pywg.peers()[pair.keys_b.public].endpoint == "192.0.2.2:51820"  # UAPI served at once
    wg = WireguardGo(pair.b, cfg_b).start()
    ping_both_families(pair.a, INNER_B4, INNER_B6)
    wg.wait_for_handshake(pywg.public_key)
    pywg.stop()  # `pywg down wg0 --netns <a>`; checks interface, socket and state file are gone
    assert not pair.a.ping(INNER_B4, timeout=1)


def test_zz_nothing_left_behind() -> None:
    """Runs last (file order): every earlier test's fixtures have been finalized by now."""
    left = own_leftovers()
    assert not left, f"left behind: {left}"
