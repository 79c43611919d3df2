"""Hostile input against a live engine (issue #6), over real UDP between network namespaces.

The world: `pywg up` (the engine under test, host `engine`) holds a tunnel with wireguard-go (host
`legit`) over one veth pair; an attacker (host `attacker`) on a second veth pair reaches the engine's
port from 254 addresses of its own. The attacker runs tests/support/attacker.py: it throws datagrams, and it
knows what anyone may know, the engine's public key. Some tests also hold the legitimate peer's
private key, to craft initiations that would be accepted but for the one defect under test, and copy
what is on the wire with an AF_PACKET socket on the engine's underlay veth.

After each attack: the engine still runs, the tunnel still passes traffic, the legitimate peer's
endpoint has not moved, and the engine's drop counters (its `stats=1` UAPI request, which `pywg stats`
prints) rose by exactly the expected amounts and no others. The in-memory tests of the core
(tests/test_device.py, test_cookie.py, test_ratelimiter.py) hold the same rules on a fake clock;
these hold the running engine to them.

`test_initiation_flood` floods the engine, as fast as one Python process can, with initiations
carrying a valid MAC1 from 508 sockets on 254 addresses, answering the cookie replies like real hosts,
while the legitimate peer pings through the tunnel and then restarts and must handshake again through
the cookie path; then from one address. benchmarks/flood.py runs the same flood longer and reports the
figures in SECURITY.md.

Needs root, `ip`, `wg`, `wireguard-go` and iputils `ping`.
"""

from __future__ import annotations

import json
import random
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from pywg.core.constants import (
    RATELIMITER_PACKETS_BURSTABLE,
    RATELIMITER_PACKETS_PER_SECOND,
    UNDER_LOAD_HANDSHAKES_PER_SECOND,
)
from pywg.core.keys import encode_key
from pywg.core.messages import message_type
from tests.support import attacker
from tests.support.pywg_run import Pywg
from tests.support.topology import (
    WG_PORT,
    WG_SOCKET_DIR,
    Host,
    KeyPair,
    Topology,
    WireguardGo,
    _read_line,
    link,
    stop_process,
    tunnel_configs,
    wait_for_handshake,
    wait_until,
    wg_peers,
)

pytest_plugins = ["tests.support.topology"]

pytestmark = pytest.mark.root

ATTACKER = str(Path(attacker.__file__).resolve())
ENGINE_UNDER, LEGIT_UNDER = "192.0.2.1", "192.0.2.2"
ENGINE_FOR_ATTACKER = "10.66.0.1"
ATTACKER_SOURCES = [f"10.66.1.{i}" for i in range(1, 255)]
INNER_ENGINE, INNER_LEGIT = "10.99.0.1", "10.99.0.2"
SETTLE = 0.5  # seconds to wait, once the expected drops are counted, for any unexpected one
TUN_SIDE = {"no_route"}  # the kernel's own IPv6 chatter on the TUN; not what the attacker caused
MAX_DATAGRAM = 65507  # the largest UDP payload over IPv4

# The flood: at most how long, the loss the legitimate pings may see, the engine's peak RSS, and the
# time the restarted peer may take to handshake again (the cookie path takes REKEY_TIMEOUT + jitter).
FLOOD_SECONDS = 40.0
MAX_LEGIT_LOSS = 0.02
MAX_PEAK_RSS_MB = 150
REHANDSHAKE_SECONDS = 15.0


@dataclass
class World:
    engine_host: Host
    legit_host: Host
    attacker_host: Host
    engine: Pywg
    legit: WireguardGo
    engine_keys: KeyPair
    legit_keys: KeyPair
    to_legit: str  # the engine's veth towards the legitimate peer
    to_engine: str  # the legitimate peer's veth towards the engine

    def drops(self) -> Counter[str]:
        return uapi_drops(self.engine.name)

    def legit_endpoint(self) -> str | None:
        return wg_peers(self.engine_host, self.engine.name)[self.legit_keys.public].endpoint


def uapi_drops(name: str) -> Counter[str]:
    """The drop counters of a running pywg, by reason: its `stats=1` UAPI request."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(str(WG_SOCKET_DIR / f"{name}.sock"))
        client.sendall(b"stats=1\n\n")
        reply = b""
        while not reply.endswith(b"\n\n"):
            chunk = client.recv(65536)
            assert chunk, f"{name} closed the UAPI connection mid-reply: {reply!r}"
            reply += chunk
    lines = reply.decode().split("\n")
    assert "errno=0" in lines, reply
    return Counter(
        {k[5:]: int(v) for k, _, v in (line.partition("=") for line in lines) if k.startswith("drop_")}
    )


def build_world(topology: Topology) -> World:
    engine_host, legit_host = topology.host("engine"), topology.host("legit")
    attacker_host = topology.host("attacker")
    underlay = link(engine_host, legit_host, [f"{ENGINE_UNDER}/24"], [f"{LEGIT_UNDER}/24"])
    hostile = link(engine_host, attacker_host, [f"{ENGINE_FOR_ATTACKER}/16"])
    batch = "".join(f"addr add {a}/16 dev {hostile.ifname(attacker_host)}\n" for a in ATTACKER_SOURCES)
    attacker_host.run(["ip", "-batch", "-"], input=batch)
    engine_keys, legit_keys = KeyPair.generate(), KeyPair.generate()
    engine_cfg, legit_cfg = tunnel_configs(
        engine_keys, legit_keys, [f"{INNER_ENGINE}/24"], [f"{INNER_LEGIT}/24"], a_endpoint=ENGINE_UNDER
    )
    engine = Pywg(engine_host, engine_cfg).start()
    legit = WireguardGo(legit_host, legit_cfg)
    return World(
        engine_host,
        legit_host,
        attacker_host,
        engine,
        legit,
        engine_keys,
        legit_keys,
        underlay.ifname(engine_host),
        underlay.ifname(legit_host),
    )


# --- the attacker's tools -------------------------------------------------------------------------


def start_sniffer(host: Host, ifname: str, seconds: float) -> subprocess.Popen[bytes]:
    """tests/support/attacker.py sniff in `host`, once it listens."""
    process = host.popen(
        [sys.executable, ATTACKER, "sniff", ifname, str(WG_PORT), str(seconds)], stdout=subprocess.PIPE
    )
    line = _read_line(process, time.monotonic() + 20)
    assert line == "ready", f"the sniffer did not start: {line!r}"
    return process


def sniffed(process: subprocess.Popen[bytes], timeout: float, stop: bool = False) -> list[tuple[str, bytes]]:
    """What a sniffer copied (`stop`: stop it first): (source, payload) in order of arrival."""
    if stop:
        process.terminate()
    out, _ = process.communicate(timeout=timeout)
    return [(found["source"], bytes.fromhex(found["payload"])) for found in json.loads(out)]


def capture_from_legit(world: World, pings: int = 3) -> list[bytes]:
    """The legitimate peer's datagrams to the engine while it sends `pings` pings through the tunnel."""
    sniffer = start_sniffer(world.engine_host, world.to_legit, 2.0 + 0.2 * pings)
    assert world.legit_host.ping(INNER_ENGINE, count=pings, timeout=10)
    return [payload for source, payload in sniffed(sniffer, 30) if source.startswith(f"{LEGIT_UNDER}:")]


def throw(world: World, datagrams: Sequence[bytes], listen: float = 0.0) -> list[bytes]:
    """Send `datagrams` from the attacker to the engine's port; the replies within `listen` s."""
    argv = [sys.executable, ATTACKER, "send", ENGINE_FOR_ATTACKER, str(WG_PORT), "--listen", str(listen)]
    done = world.attacker_host.run(argv, input=json.dumps([d.hex() for d in datagrams]), timeout=60)
    return [bytes.fromhex(reply) for reply in json.loads(done.stdout)]


def genuine_initiation(world: World, unix_ns: int) -> bytes:
    """An initiation the engine would accept from the legitimate peer if its timestamp is new."""
    sender = random.getrandbits(32)
    return attacker.initiation(world.legit_keys.private, world.engine_keys.public, sender, unix_ns)


def junk(kind: int, size: int, rng: random.Random) -> bytes:
    """A message of type `kind` and `size` bytes with a random body."""
    return bytes([kind, 0, 0, 0]) + rng.randbytes(size - 4)


def response_shaped(world: World, rng: random.Random) -> bytes:
    """A response with a random body and a valid MAC1: it answers no handshake of the engine."""
    return attacker.with_mac1(junk(2, 92, rng), world.engine_keys.public, 60)


# --- what must hold after each attack ---------------------------------------------------------------


def delta(before: Counter[str], after: Counter[str]) -> dict[str, int]:
    return {k: n for k in after if k not in TUN_SIDE and (n := after[k] - before[k])}


def expect_drops(world: World, before: Counter[str], expected: dict[str, int]) -> None:
    """The counters rise by exactly `expected`: wait for it, give extra drops time, compare."""
    seen: dict[str, int] = {}

    def reached() -> bool:
        seen.update(delta(before, world.drops()))
        return all(seen.get(reason, 0) >= n for reason, n in expected.items())

    try:
        wait_until(reached, 20.0, f"drops {expected}")
    except AssertionError:
        raise AssertionError(f"expected drops {expected}, counted {seen}; {udp_errors(world)}") from None
    time.sleep(SETTLE)
    assert delta(before, world.drops()) == expected


def udp_errors(world: World) -> str:
    """The engine's namespace's UDP error counters (datagrams the kernel dropped), for messages."""
    snmp = world.engine_host.run(["cat", "/proc/net/snmp"]).stdout
    names, values = (line.split()[1:] for line in snmp.splitlines() if line.startswith("Udp:"))
    return "kernel UDP counters: " + ", ".join(f"{n}={v}" for n, v in zip(names, values, strict=True))


def assert_unharmed(world: World) -> None:
    """The engine runs, the tunnel passes traffic, the legitimate peer is where it was."""
    assert world.engine.running, world.engine.log()
    assert world.legit_host.ping(INNER_ENGINE, count=3, timeout=10), "the tunnel stopped passing traffic"
    assert world.legit_endpoint() == f"{LEGIT_UNDER}:{WG_PORT}"
    assert "Traceback" not in world.engine.log()


# --- the world shared by the hostile-input tests ------------------------------------------------------


@dataclass
class Captured:
    initiation: bytes  # the legitimate peer's first initiation, as it crossed the wire


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[World, Captured]]:
    with Topology() as topology:
        world = build_world(topology)
        sniffer = start_sniffer(world.engine_host, world.to_legit, 4.0)
        world.legit.start()
        assert world.legit_host.ping(INNER_ENGINE, count=1, timeout=10)
        initiations = [p for _, p in sniffed(sniffer, 30) if message_type(p) == 1]
        assert initiations, "no initiation was seen on the wire"
        yield world, Captured(initiations[0])


def test_random_datagrams(world: tuple[World, Captured]) -> None:
    """Random bytes, and random bodies behind each valid header: each dropped for its reason."""
    live, _ = world
    rng = random.Random(0x6E77)
    datagrams = [rng.randbytes(rng.randrange(0, 1400)) for _ in range(200)]
    for kind, size in ((1, 148), (2, 92), (3, 64)):
        datagrams += [junk(kind, size, rng) for _ in range(25)]
    datagrams += [junk(4, rng.randrange(32, 1400), rng) for _ in range(25)]
    reason = {
        None: "malformed",
        1: "invalid_mac",
        2: "invalid_mac",
        3: "cookie_reply_invalid",
        4: "unknown_index",
    }
    expected = Counter(reason[message_type(d)] for d in datagrams)
    before = live.drops()
    assert throw(live, datagrams, listen=1.0) == []
    expect_drops(live, before, dict(expected))
    assert_unharmed(live)


def test_truncated_and_oversized_messages_of_each_type(world: tuple[World, Captured]) -> None:
    """Every length short of each message type, and 1 to 16 bytes and 64 KB over it."""
    live, captured = world
    rng = random.Random(0x7472)
    data = next(p for p in capture_from_legit(live) if message_type(p) == 4 and len(p) > 32)
    handshakes = [captured.initiation, response_shaped(live, rng), junk(3, 64, rng)]
    datagrams = []
    for sample in [*handshakes, data]:
        datagrams += [sample[:length] for length in range(len(sample))]
        datagrams += [sample + rng.randbytes(extra) for extra in range(1, 17)]
        datagrams.append(sample + rng.randbytes(MAX_DATAGRAM - len(sample)))
    # Shorter than a data message's 32 bytes: malformed; longer: the AEAD of the live session fails.
    opened = len(data) - 32 + 16 + 1
    before = live.drops()
    assert throw(live, datagrams, listen=1.0) == []
    expect_drops(live, before, {"malformed": len(datagrams) - opened, "decrypt_failed": opened})
    assert_unharmed(live)


def test_nonzero_reserved_bytes(world: tuple[World, Captured]) -> None:
    """Messages that would be taken but for a reserved byte: a fresh initiation with a valid MAC1
    from the legitimate peer's key, a live data message, a response and a cookie reply."""
    live, _ = world
    rng = random.Random(0x7273)
    data = next(p for p in capture_from_legit(live) if message_type(p) == 4)
    datagrams = []
    for position in (1, 2, 3):
        fresh = bytearray(genuine_initiation(live, time.time_ns()))
        fresh[position] = 1
        datagrams.append(attacker.with_mac1(bytes(fresh), live.engine_keys.public))
        for sample in (data, response_shaped(live, rng), junk(3, 64, rng)):
            datagrams.append(sample[:position] + b"\x01" + sample[position + 1 :])
    before = live.drops()
    assert throw(live, datagrams, listen=1.0) == []
    expect_drops(live, before, {"malformed": len(datagrams)})
    assert_unharmed(live)


def test_replayed_transport_packets(world: tuple[World, Captured]) -> None:
    """Data messages copied from the wire and sent again from elsewhere: refused by the replay
    window, and the peer's endpoint does not follow them."""
    live, _ = world
    data = [p for p in capture_from_legit(live, pings=5) if message_type(p) == 4]
    assert len(data) >= 5
    before = live.drops()
    assert throw(live, data * 2, listen=1.0) == []
    expect_drops(live, before, {"replay": 2 * len(data)})
    assert_unharmed(live)


def test_replayed_and_stale_initiations(world: tuple[World, Captured]) -> None:
    """The first initiation copied from the wire, and genuine ones with old timestamps: no answer."""
    live, captured = world
    stale = [genuine_initiation(live, time.time_ns() - age) for age in (3600 * 10**9, 86400 * 10**9)]
    before = live.drops()
    assert throw(live, [captured.initiation] * 3 + stale, listen=1.0) == []
    expect_drops(live, before, {"initiation_replay_or_flood": 5})
    assert_unharmed(live)


def test_forged_mac1(world: tuple[World, Captured]) -> None:
    """A genuine, fresh initiation whose MAC1 is keyed to another public key (it would be taken
    otherwise), a captured one with a flipped MAC1 bit, a response with a forged MAC1: no answer."""
    live, captured = world
    rng = random.Random(0x6D61)
    other = KeyPair.generate().public
    fresh = attacker.with_mac1(genuine_initiation(live, time.time_ns()), other)
    flipped = bytearray(captured.initiation)
    flipped[120] ^= 1
    response = attacker.with_mac1(junk(2, 92, rng), other, 60)
    before = live.drops()
    assert throw(live, [fresh, bytes(flipped), response], listen=1.0) == []
    expect_drops(live, before, {"invalid_mac": 3})
    assert_unharmed(live)


STEERING = """
import json, socket, sys, time
from pywg.runtime.udp import UdpSockets
udp = UdpSockets(0)
assert len(udp.handshake_sockets) == len(udp.priority_sockets) == 2, "no handshake sockets"
udp.prioritize(["10.0.0.1", "127.0.0.1", "192.0.2.99", "::", "::1", "fe80::1%lo"])
messages = [bytes([kind, 0, 0, 0]) + bytes(60) for kind in (1, 2, 3, 4, 5)] + [b"", b"\\x04"]
for family, source, loopback in ((socket.AF_INET, "127.0.0.1", "127.0.0.1"),
                                 (socket.AF_INET, "127.0.0.2", "127.0.0.1"),
                                 (socket.AF_INET6, "::1", "::1"), (socket.AF_INET6, "::2", "::1"),
                                 (socket.AF_INET6, "fd00::2", "::1")):
    with socket.socket(family, socket.SOCK_DGRAM) as sender:
        sender.bind((source, 0))
        for message in messages:
            sender.sendto(message, (loopback, udp.port))
time.sleep(0.5)
found = {}
for name, group in (("data", udp.data_sockets), ("handshake", udp.handshake_sockets),
                    ("priority", udp.priority_sockets)):
    for sock, family in zip(group, ("v4", "v6")):
        got = udp.receive(sock, 100)
        found[f"{name} {family}"] = sorted((source[0], data.hex()) for data, source, _ in got)
print(json.dumps(found))
"""


def test_handshake_messages_have_their_own_queues(topology: Topology) -> None:
    """Data messages reach the data sockets; other messages the priority sockets if they come from
    a known peer's address, else the handshake sockets (IPv4, IPv6). The known addresses are not
    the first the filter compares, and ::2 differs from :: and ::1 only in its last word. An empty
    datagram has no first byte, so the filter's load fails, and it goes to the data socket."""
    host = topology.host("steering")
    host.add_address("lo", "fd00::2/128")
    host.add_address("lo", "::2/128")
    found = json.loads(host.run([sys.executable, "-c", STEERING], timeout=30).stdout)
    data = [(bytes([4, 0, 0, 0]) + bytes(60)).hex(), "04", ""]
    others = [(bytes([k, 0, 0, 0]) + bytes(60)).hex() for k in (1, 2, 3, 5)]

    def sent(sources: Sequence[str], kinds: Sequence[str]) -> list[list[str]]:
        return sorted([source, kind] for source in sources for kind in kinds)

    assert found == {
        "data v4": sent(["127.0.0.1", "127.0.0.2"], data),
        "data v6": sent(["::1", "::2", "fd00::2"], data),
        "handshake v4": sent(["127.0.0.2"], others),
        "handshake v6": sent(["::2", "fd00::2"], others),
        "priority v4": sent(["127.0.0.1"], others),
        "priority v6": sent(["::1"], others),
    }


# --- the flood -------------------------------------------------------------------------------------


def ping_stats(output: str) -> tuple[float, float]:
    """(share lost, mean RTT in ms) from iputils ping's summary."""
    loss = re.search(r"([\d.]+)% packet loss", output)
    rtt = re.search(r"= [\d.]+/([\d.]+)/", output)
    assert loss and rtt, output
    return float(loss.group(1)) / 100, float(rtt.group(1))


def ping_stream(host: Host, count: int, interval: float) -> tuple[float, float]:
    """`count` pings to the engine through the tunnel, `interval` s apart: (share lost, mean RTT ms)."""
    argv = ["ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", "1", INNER_ENGINE]
    return ping_stats(host.run(argv, check=False, timeout=count * interval + 30).stdout)


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def start_flood(
    live: World, seconds: float, cookies: bool, rate: float = 0.0, sources: Sequence[str] = ATTACKER_SOURCES
) -> subprocess.Popen[bytes]:
    """tests/support/attacker.py flood from `sources` (all the attacker's addresses), two sockets each."""
    argv = [sys.executable, ATTACKER, "flood", ENGINE_FOR_ATTACKER, str(WG_PORT)]
    argv += [encode_key(live.engine_keys.public), "--sources", ",".join(sources), "--ports", "2"]
    argv += ["--seconds", str(seconds), "--rate", str(rate), *(["--cookies"] if cookies else [])]
    return live.attacker_host.popen(argv, stdout=subprocess.PIPE)


def end_flood(flood: subprocess.Popen[bytes]) -> dict[str, float]:
    """Stop the flood (SIGTERM ends it early) and return what it reports."""
    flood.terminate()
    out, _ = flood.communicate(timeout=60)
    return dict(json.loads(out))


@pytest.mark.slow
def test_initiation_flood(topology: Topology) -> None:
    """Initiations with a valid MAC1 from 508 sockets on 254 addresses, as fast as one Python
    process sends them, cookies answered: the engine sends cookie replies, lets no address past its
    token bucket, keeps the legitimate tunnel with at most 2% loss, lets the restarted legitimate
    peer handshake again through the cookie path, and stays under 150 MB. The same from one
    address: the rate limit refuses most."""
    live = build_world(topology)
    live.legit.start()
    assert live.legit_host.ping(INNER_ENGINE, count=1, timeout=10)
    _, rtt_before = ping_stream(live.legit_host, 100, 0.01)
    before = live.drops()
    started = time.monotonic()
    flood = start_flood(live, FLOOD_SECONDS, cookies=True)
    time.sleep(2.0)  # under load from the first second; the cookies reach every socket
    loss, rtt_during = ping_stream(live.legit_host, 300, 0.01)
    took = rehandshake_under_flood(live, REHANDSHAKE_SECONDS)
    assert flood.poll() is None, "the flood ended before the handshake did"
    thrown = end_flood(flood)
    counted = delta(before, live.drops())
    elapsed = time.monotonic() - started
    peak = peak_rss_mb(live.engine.pid or 0)
    print(f"flood: legit loss {loss:.1%}, RTT {rtt_before:.2f} ms before, {rtt_during:.2f} ms during")
    print(f"flood: the restarted peer's handshake took {took:.1f} s")
    print(f"flood: attacker {thrown}; engine drops {counted}; peak RSS {peak:.0f} MB; {udp_errors(live)}")
    assert loss <= MAX_LEGIT_LOSS
    assert_flood_counted(thrown, counted, elapsed)
    assert peak < MAX_PEAK_RSS_MB
    assert_unharmed(live)

    # One address alone, cookies answered: the engine reads far more than 20 a second from it.
    wait_drained(live)  # what is left of the first flood must not count as this one's
    before = live.drops()
    started = time.monotonic()
    flood = start_flood(live, FLOOD_SECONDS, cookies=True, sources=ATTACKER_SOURCES[:1])
    time.sleep(3.0)
    thrown = end_flood(flood)
    counted = delta(before, live.drops())
    elapsed = time.monotonic() - started
    print(f"flood from one address: attacker {thrown}; engine drops {counted}")
    assert counted["ratelimited"] > 0
    assert_flood_counted(thrown, counted, elapsed)
    assert_unharmed(live)


def wait_drained(live: World, timeout: float = 60.0) -> None:
    """Until the engine has handled all it received: its UDP sockets' queues empty, and its
    counters the same at two looks in a row. (On a busy machine it drains a flood's backlog for
    seconds after the flood ends.)"""
    last: list[Counter[str]] = []

    def drained() -> bool:
        listed = live.engine_host.run(["ss", "-Hnua"]).stdout
        if any(int(line.split()[1]) for line in listed.splitlines() if line.strip()):
            last.clear()
            return False
        now = live.drops()
        done = last == [now]
        last[:] = [now]
        return done

    wait_until(drained, timeout, "the engine to handle the flood it received")


def rehandshake_under_flood(live: World, budget: float) -> float:
    """Restart the legitimate peer and wait for its new handshake, which must go through the cookie
    path: a copy of what reaches the peer shows a cookie reply before the response. Returns the
    seconds it took."""
    took, kinds = restart_legit(live, budget)
    assert took is not None, f"no handshake within {budget} s; the peer received {kinds}"
    assert 3 in kinds and 2 in kinds[kinds.index(3) :], f"no cookie reply before the response: {kinds}"
    return took


def restart_legit(live: World, budget: float) -> tuple[float | None, list[int | None]]:
    """Restart the legitimate peer (it loses its session) and wait up to `budget` s for its new
    handshake with the engine: the seconds it took (None: none came), and the types of the messages
    that reached the peer meanwhile."""
    last = wg_peers(live.engine_host, live.engine.name)[live.legit_keys.public].latest_handshake
    time.sleep(max(0.0, 1.1 - (time.time() - last)))  # handshake times are whole seconds
    live.legit.stop()
    sniffer = start_sniffer(live.legit_host, live.to_engine, budget)
    started = time.monotonic()
    after = int(time.time())
    live.legit.start()
    pinger = live.legit_host.popen(["ping", "-n", "-q", "-i", "0.2", "-w", str(int(budget)), INNER_ENGINE])
    took: float | None = None
    try:
        wait_for_handshake(live.engine_host, live.engine.name, live.legit_keys.public, after, budget)
        took = time.monotonic() - started
    except AssertionError:
        pass
    finally:
        stop_process(pinger)
    time.sleep(0.5)  # what is still on its way
    return took, [message_type(payload) for _, payload in sniffed(sniffer, 30, stop=True)]


def assert_flood_counted(thrown: dict[str, float], counted: dict[str, int], elapsed: float) -> None:
    """Cookie replies sent and received; what passed the rate limit within each address's bucket.
    `elapsed`: seconds from before the flood started until `counted` was read."""
    assert thrown["send_errors"] == 0 and thrown["other_replies"] == 0 and thrown["bad_cookie_replies"] == 0
    assert 0 < thrown["cookie_replies"] <= counted["cookie_reply_sent"]
    assert thrown["sent_with_mac2"] > 0
    # Handshakes that reached the Diffie-Hellman: those before the engine came under load (fewer
    # than the threshold), then per address at most the burst plus the rate for as long as the
    # engine can have read the flood before the counters were read. (Not the sending time plus a
    # margin: on a busy machine the engine drains the socket queue for seconds after the flood
    # ends, and the buckets refill all that time.)
    bucket = RATELIMITER_PACKETS_BURSTABLE + RATELIMITER_PACKETS_PER_SECOND * elapsed
    bound = UNDER_LOAD_HANDSHAKES_PER_SECOND + thrown["sources"] * bucket
    assert counted.get("handshake_failed", 0) <= bound
    assert set(counted) <= {"cookie_reply_sent", "ratelimited", "handshake_failed"}, counted
