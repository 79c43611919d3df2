"""Scale: many peers on one interface, a large allowed-IPs table, and one core against two.

Not a test: `sudo python3 benchmarks/scale.py [--peers N,N,...] [--prefixes N] [--seconds S]
[--handshake-rate R] [--handshake-seconds S] [--rounds N] [--smoke] [--skip-cores] [--skip-scale]
[--wireguard-go PATH] [--markdown] [--json PATH]`, or `--from-json PATH [--markdown]` to print a saved
run's tables. benchmarks/README.md explains the figures.

Two fresh network namespaces `pwscale-<tag>-a` and `-b` are joined by a veth pair (pywg.runtime.lab).
The device under test runs in a; its one real peer, the same implementation, runs in b. For each
configuration, and for pywg (C path) and upstream wireguard-go 2025 in turn (same run, interleaved):

    peers N        N peers, allowed-IPs one /32 each (peer 0 is the real peer in b; the others have
                   keys of their own and no endpoint), default N = 1, 100, 1,000, 10,000
    prefixes M     one peer, the real one, with M IPv4 prefixes (default 130,000: /16 to /24,
                   seeded, as a routing table has) and its own /32

and measures:

- the wall time of `wg setconf` applying the configuration through UAPI to the running, empty
  device (wireguard-go's link is up with its address before, as pywg's is);
- the device's RSS (VmRSS) 0.5 s after that, and its peak (VmHWM) at the end; per peer, the growth
  over the 1-peer configuration of the same implementation in the same round;
- iperf3 TCP with one stream to the real peer and back (a -> b, b -> a) with all those peers configured;
- with 100 peers or more: handshakes per second the device completes when initiations arrive from
  all its peers but the real one at once. A generator in namespace b (this file's `initiate`
  command, built from pywg's core) sends genuine initiations with a valid MAC1 from 1,000 source
  addresses (the per-source rate limit allows 20 a second each under load), paced at R a second
  (at most 40 a second per peer: both implementations refuse a peer's initiations closer than
  20 ms), answers cookie replies with MAC2 as a real peer does, and counts the handshake responses
  that come back after a warm-up second. Each initiator reuses one ephemeral key for all its
  initiations (only the timestamp changes): the responder cannot tell and does the same work for
  each, and the generator stays cheap (~40 µs an initiation, sent and answered) next to the device
  it measures. (A real peer must not do this: the timestamp is sealed under the same key and nonce
  each time. A load generator may.)

Then cores: a 1-peer tunnel of each implementation with everything this script starts (both tunnel
processes, iperf3) pinned with the CPU affinity of this process to one core and then to two (as
`taskset` does; the children inherit it, and both implementations size their worker pools from it):
iperf3 TCP with one and with four streams a -> b, and the CPU the two tunnel processes spent.

The load average is recorded before and after every trial: the figures come from a shared machine.
Keys reach the processes only through 0600 files in a 0700 temporary directory; every namespace,
process, UAPI socket and file made is removed at the end, also after a failure, Ctrl-C or SIGTERM.
Progress goes to stderr, the report to stdout, everything to the JSON (default
benchmarks/results/scale.json).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import ipaddress
import json
import os
import random
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # pywg and tests.support from this checkout

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey  # noqa: E402
from throughput import (  # noqa: E402
    Engine,
    EngineLab,
    load_average,
    logged_data_path,
    machine,
    table,
)

from pywg.core import crypto, encode_key, generate_private_key, public_key_for  # noqa: E402
from pywg.core.constants import (  # noqa: E402
    MESSAGE_COOKIE_REPLY,
    MESSAGE_COOKIE_REPLY_SIZE,
    MESSAGE_RESPONSE,
    MESSAGE_RESPONSE_SIZE,
)
from pywg.core.cookie import mac1_key  # noqa: E402
from pywg.core.crypto import StaticKey  # noqa: E402
from pywg.core.messages import INITIATION_MAC1_OFFSET, MAC2_DISTANCE, Initiation  # noqa: E402
from pywg.core.noise import SymmetricState, initial_state  # noqa: E402
from pywg.core.tai64n import tai64n  # noqa: E402
from pywg.runtime.lab import (  # noqa: E402
    WG_SOCKET_DIR,
    LabFailed,
    Side,
    attempt,
    child_env,
    cleanup_uninterrupted,
    cpu_seconds,
    last_line,
    raise_interrupt,
    run,
    status_kb,
    stop_process,
    upstream_wireguard_go,
    write_secret,
)
from pywg.runtime.uapi_server import query  # noqa: E402
from tests.support.attacker import open_cookie_reply  # noqa: E402

DEFAULT_JSON = ROOT / "benchmarks" / "results" / "scale.json"
UNDERLAY = {"a": "192.168.79.1", "b": "192.168.79.2"}
INNER = {"a": ("10.79.0.1",), "b": ("10.79.0.2",)}
INNER_PREFIX = 24
OTHER_PEERS = ipaddress.ip_network("10.80.0.0/12")  # the /32s of the peers that are not real
TABLE_SPACE = ipaddress.ip_network("64.0.0.0/2")  # 1M /24s; nothing else here uses it
GENERATOR_SOURCES = ipaddress.ip_network("10.200.0.0/16")  # the handshake generator's addresses, in b
WG_PORT = 51820
WG_MTU = 1420
IPERF_PORT = 5201
KINDS = ("go", "pywg-c")  # upstream wireguard-go 2025, pywg with its C path
LABELS = {"go": "wireguard-go 2025", "pywg-c": "pywg (C path)"}
TOOLS = ("ip", "ping", "wg", "iperf3", "ss")
START_DEADLINE = 20.0
HANDSHAKE_DEADLINE = 15.0
SETCONF_TIMEOUT = 600.0
SETTLE = 0.5
MAX_RATE_PER_PEER = 40.0  # under the 50 a second both accept from one peer
SOURCES = 1000
WARMUP = 1.0  # seconds of the handshake run before counting: cookies, caches
STOP_TIMEOUT = 5.0


def say(text: str = "") -> None:
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# configurations


@dataclass(frozen=True)
class Config:
    key: str  # "peers-100", "prefixes-130000"
    label: str
    peers: int
    prefixes: int = 0  # > 0: one peer with this many prefixes


def prefix_table(count: int, seed: int = 14) -> list[str]:
    """`count` distinct IPv4 prefixes of TABLE_SPACE, /16 to /24 with /24 the most common (as in a
    routing table), the same ones on every run."""
    rng = random.Random(seed)
    lengths = [24] * 6 + [23, 22, 22, 21, 20, 19, 18, 17, 16]
    base, size = int(TABLE_SPACE.network_address), TABLE_SPACE.num_addresses
    found: set[str] = set()
    while len(found) < count:
        length = rng.choice(lengths)
        step = 1 << (32 - length)
        start = base + rng.randrange(size // step) * step
        found.add(f"{ipaddress.IPv4Address(start)}/{length}")
    return sorted(found)


@dataclass
class Keys:
    """The device's key and the keys of every peer a configuration may have (peer 0 is side b)."""

    device: bytes
    peers: list[bytes]  # private keys; [0] is side b's
    publics: list[bytes] = field(default_factory=list)

    def grow(self, count: int) -> None:
        while len(self.peers) < count:
            self.peers.append(generate_private_key(os.urandom))
        while len(self.publics) < count:
            self.publics.append(public_key_for(self.peers[len(self.publics)]))


def setconf_text(keys: Keys, config: Config, real_peer: Side, table_prefixes: Sequence[str]) -> str:
    """The `wg setconf` file of the device under test for `config`."""
    lines = [f"[Interface]\nPrivateKey = {encode_key(keys.device)}\nListenPort = {WG_PORT}\n"]
    own = f"{real_peer.inner[0]}/32"
    first = [own, *table_prefixes] if config.prefixes else [own]
    lines.append(
        f"[Peer]\nPublicKey = {encode_key(keys.publics[0])}\nAllowedIPs = {', '.join(first)}\n"
        f"Endpoint = {real_peer.underlay}:{WG_PORT}\n"
    )
    others = OTHER_PEERS.network_address + 1
    for index in range(1, config.peers):
        lines.append(
            f"[Peer]\nPublicKey = {encode_key(keys.publics[index])}\nAllowedIPs = {others + index}/32\n"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# the handshake generator (runs in namespace b: `scale.py initiate ...`)


@dataclass
class Initiator:
    """One peer's initiation with everything but the timestamp done once."""

    ephemeral_public: bytes
    encrypted_static: bytes
    state: SymmetricState  # after e, es, s, ss
    timestamp_key: bytes


def prepare(private: bytes, responder: bytes) -> Initiator:
    """-> e, es, s, ss of the Noise IK initiation (pywg.core.noise.Handshake.create_initiation)."""
    static = StaticKey(private)
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes_raw()
    state = initial_state(responder)
    state.mix_hash(ephemeral_public)
    state.mix_key(ephemeral_public)
    key = state.mix_dh(ephemeral, responder)
    encrypted_static = state.encrypt_and_hash(key, static.public)
    timestamp_key = state.mix_key(static.dh(responder))
    return Initiator(ephemeral_public, encrypted_static, state, timestamp_key)


class Generator:
    """Initiations from many peers, round robin, from one UDP socket per source address."""

    def __init__(
        self, target: tuple[str, int], responder: bytes, privates: Sequence[bytes], sources: Sequence[str]
    ) -> None:
        self.responder = responder
        self.mac1_key = mac1_key(responder)
        self.initiators = [prepare(p, responder) for p in privates]
        self.sockets: list[socket.socket] = []
        self.cookies: list[bytes | None] = []
        self.mac1s: dict[int, bytes] = {}  # sender index -> its MAC1, to open cookie replies
        self.selector = selectors.DefaultSelector()
        for source in sources:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((source, 0))
            sock.connect(target)
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ, len(self.sockets))
            self.sockets.append(sock)
            self.cookies.append(None)
        self.counts = {"sent": 0, "send_errors": 0, "responses": 0, "responses_counted": 0}
        self.counts |= {"cookie_replies": 0, "bad_cookie_replies": 0, "other_replies": 0}
        self.base_ns = time.time_ns()
        self.counting = False

    def message(self, number: int) -> tuple[int, bytes]:
        """Initiation `number`: peer number % n, its (number // n + 1)-th timestamp, 1 s apart."""
        count = len(self.initiators)
        initiator = self.initiators[number % count]
        state = initiator.state.copy()
        stamp = tai64n(self.base_ns + (number // count + 1) * 1_000_000_000)
        encrypted = state.encrypt_and_hash(initiator.timestamp_key, stamp)
        sender = number + 1
        packed = Initiation(sender, initiator.ephemeral_public, initiator.encrypted_static, encrypted).pack()
        mac1 = crypto.mac(self.mac1_key, packed[:INITIATION_MAC1_OFFSET])
        return sender, packed[:INITIATION_MAC1_OFFSET] + mac1

    def send(self, number: int) -> None:
        sender, message = self.message(number)
        slot = number % len(self.sockets)
        self.mac1s[sender] = message[INITIATION_MAC1_OFFSET:]
        self.mac1s.pop(sender - 65536, None)  # a reply comes within a second or not at all
        cookie = self.cookies[slot]
        message += crypto.mac(cookie, message) if cookie else bytes(MAC2_DISTANCE)
        try:
            self.sockets[slot].send(message)
        except OSError:
            self.counts["send_errors"] += 1

    def drain(self) -> None:
        for key, _ in self.selector.select(0):
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            while True:
                try:
                    reply = sock.recv(2048)
                except OSError:  # EAGAIN, or an ICMP error queued on the socket
                    break
                self.take(key.data, reply)

    def take(self, slot: int, reply: bytes) -> None:
        kind = reply[0] if reply else 0
        if kind == MESSAGE_RESPONSE and len(reply) == MESSAGE_RESPONSE_SIZE:
            self.counts["responses"] += 1
            self.counts["responses_counted"] += self.counting
        elif kind == MESSAGE_COOKIE_REPLY and len(reply) == MESSAGE_COOKIE_REPLY_SIZE:
            self.counts["cookie_replies"] += 1
            mac1 = self.mac1s.get(int.from_bytes(reply[4:8], "little"))
            cookie = open_cookie_reply(reply, self.responder, mac1) if mac1 else None
            if cookie is None:
                self.counts["bad_cookie_replies"] += 1
            else:
                self.cookies[slot] = cookie
        else:
            self.counts["other_replies"] += 1

    def run(self, rate: float, warmup: float, seconds: float, device_pid: int) -> dict[str, Any]:
        """`rate` initiations a second for `warmup` + `seconds`; responses counted after `warmup`,
        and the CPU the device (another process, same PID namespace) spent meanwhile."""
        started = time.monotonic()
        count_from, end = started + warmup, started + warmup + seconds
        number = 0
        device_cpu = own_cpu = 0.0
        while (now := time.monotonic()) < end:
            if not self.counting and now >= count_from:
                self.counting = True
                device_cpu, own_cpu = cpu_seconds(device_pid), cpu_seconds(os.getpid())
            due = min(int((now - started) * rate), number + 256)
            while number < due:
                self.send(number)
                number += 1
            self.drain()
            if number >= int((time.monotonic() - started) * rate):
                time.sleep(0.001)
        self.counting = False
        self.counts["device_cpu_pct"] = round(100 * (cpu_seconds(device_pid) - device_cpu) / seconds, 1)
        self.counts["generator_cpu_pct"] = round(100 * (cpu_seconds(os.getpid()) - own_cpu) / seconds, 1)
        self.counts["sent"] = number
        self.counts["seconds_counted"] = seconds
        self.counts["initiators"] = len(self.initiators)
        self.counts["sockets"] = len(self.sockets)
        self.counts["rate_offered"] = rate
        return self.counts


def initiate_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="scale.py initiate", description="the handshake generator")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("responder", help="the responder's public key, base64")
    parser.add_argument(
        "keys", type=Path, help="a 0600 file: the initiators' private keys, base64, a line each"
    )
    parser.add_argument(
        "--sources", type=int, required=True, help="how many source addresses (source_address)"
    )
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--warmup", type=float, default=WARMUP)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--device-pid", type=int, required=True, help="whose CPU to report")
    args = parser.parse_args(argv)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sources = [source_address(i) for i in range(args.sources)]
    privates = [base64.b64decode(line) for line in args.keys.read_text().split()]
    generator = Generator((args.host, args.port), base64.b64decode(args.responder), privates, sources)
    print(json.dumps(generator.run(args.rate, args.warmup, args.seconds, args.device_pid)), flush=True)
    return 0


def source_address(index: int) -> str:
    """The generator's index-th source address (in b, on veth0): .1 to .250 of each /24."""
    return str(GENERATOR_SOURCES.network_address + (index // 250) * 256 + index % 250 + 1)


# --------------------------------------------------------------------------------------------
# the lab


class Scale(EngineLab):
    def __init__(self, wireguard_go: Path, seconds: float) -> None:
        super().__init__("pwscale", "scl", UNDERLAY, INNER)
        self.wireguard_go = wireguard_go
        self.seconds = seconds

    # ---- network

    def add_generator_sources(self) -> None:
        """SOURCES addresses on b's veth0 for the generator, and a's route back to them."""
        b, a = self.sides["b"], self.sides["a"]
        commands = "".join(f"addr add {source_address(i)}/32 dev veth0\n" for i in range(SOURCES))
        done = subprocess.run(
            ["ip", "-n", b.netns, "-batch", "-"], input=commands, capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            raise LabFailed(f"adding the generator's addresses failed: {last_line(done.stderr)}")
        route = ["ip", "-n", a.netns, "route", "add", str(GENERATOR_SOURCES), "via", b.underlay]
        run(route, "routing a to the generator's addresses")

    # ---- tunnel processes

    def start(self, kind: str, side: Side, peer_public: bytes | None, private: bytes) -> Engine:
        """A tunnel process of `kind` in `side`, link up with its address; with one peer (the other
        side) or none. Returns once its UAPI socket answers."""
        assert self.workdir is not None
        name = self.new_name(side)
        log = self.workdir / f"{name}.log"
        other = self.peer_of(side)
        if kind == "go":
            process = self.spawn(side, [str(self.wireguard_go), "-f", name], log, child_env())
        else:
            config: dict[str, Any] = {
                "address": [f"{side.inner[0]}/{INNER_PREFIX}"],
                "privateKey": encode_key(private),
                "listenPort": WG_PORT,
                "mtu": WG_MTU,
                "peers": [],
            }
            if peer_public is not None:
                config["peers"] = [
                    {
                        "endpoint": f"{other.underlay}:{WG_PORT}",
                        "publicKey": encode_key(peer_public),
                        "allowedIPs": [f"{other.inner[0]}/32"],
                    }
                ]
            path = write_secret(self.workdir / f"{name}.json", json.dumps(config))
            argv = [sys.executable, "-m", "pywg", "up", str(path), "--name", name, "--interface", name]
            process = self.spawn(side, [*argv, "--foreground"], log, child_env(drop=["PYWG_NO_EXT"]))
        tunnel = Engine(kind, side, name, process, log)
        self.engines.append(tunnel)
        self.wait_for_uapi(tunnel)
        if kind == "go":
            ip = ["ip", "-n", side.netns]
            run([*ip, "link", "set", name, "mtu", str(WG_MTU), "up"], f"bringing up {name}")
            address = f"{side.inner[0]}/{INNER_PREFIX}"
            run([*ip, "addr", "add", address, "dev", name], f"adding an address to {name}")
            ini = f"[Interface]\nPrivateKey = {encode_key(private)}\nListenPort = {WG_PORT}\n"
            if peer_public is not None:
                ini += (
                    f"\n[Peer]\nPublicKey = {encode_key(peer_public)}\nAllowedIPs = {other.inner[0]}/32\n"
                    f"Endpoint = {other.underlay}:{WG_PORT}\n"
                )
            self.setconf(tunnel, ini)
        return tunnel

    def setconf(self, tunnel: Engine, text: str) -> float:
        """`wg setconf` from a 0600 file; the seconds it took."""
        assert self.workdir is not None
        path = self.workdir / f"{tunnel.name}-{time.monotonic_ns()}.conf"
        write_secret(path, text)
        try:
            started = time.monotonic()
            run(
                tunnel.side.exec_argv(["wg", "setconf", tunnel.name, str(path)]),
                f"wg setconf {tunnel.name}",
                SETCONF_TIMEOUT,
            )
            return time.monotonic() - started
        finally:
            path.unlink(missing_ok=True)

    def stop_all(self) -> None:
        for tunnel in list(self.engines):
            self.stop(tunnel)

    # ---- traffic

    def tcp(self, server: Side, streams: int, reverse: bool = False) -> dict[str, Any]:
        """iperf3 TCP from the other side to `server` (or back, `reverse`): Gbit/s received, and the
        CPU seconds the tunnel processes spent meanwhile."""
        process = self.namespaces[server.label].spawn(
            ["iperf3", "-s", "-1", "-p", str(IPERF_PORT)], child_env()
        )
        try:
            self.wait_for_listener(server, process, IPERF_PORT, "iperf3")
            argv = ["iperf3", "-c", server.inner[0], "-p", str(IPERF_PORT), "-t", f"{self.seconds:g}", "-J"]
            argv += ["--connect-timeout", "5000", "-P", str(streams)] + (["-R"] if reverse else [])
            before, started = self.cpu(), time.monotonic()
            done = attempt(self.peer_of(server).exec_argv(argv), timeout=self.seconds + 30)
            cpu, elapsed = self.cpu() - before, time.monotonic() - started
        finally:
            stop_process(process, timeout=2.0)
        if done is None:
            raise LabFailed(f"iperf3 -P {streams} did not finish within {self.seconds + 30:.0f} s")
        try:
            received = json.loads(done.stdout)["end"]["sum_received"]
        except (ValueError, KeyError, TypeError):
            raise LabFailed(f"iperf3 -P {streams}: {last_line(done.stderr or done.stdout)}") from None
        moved = int(received["bytes"])
        return {
            "gbps": moved * 8 / float(received["seconds"]) / 1e9,
            "bytes": moved,
            "cpu_s": round(cpu, 3),
            "cpu_pct": round(100 * cpu / elapsed, 1),  # of one core
            "cpu_s_per_gb": round(cpu / (moved / 1e9), 2) if moved else None,
        }

    def cpu(self) -> float:
        return sum(cpu_seconds(t.pid) for t in self.engines)

    def handshakes(
        self, device: Engine, keys: Keys, peers: int, rate: float, seconds: float
    ) -> dict[str, Any]:
        """The generator in b against `device`, from peers 1..peers-1; its counts and the device's CPU."""
        assert self.workdir is not None
        path = self.workdir / f"initiators-{peers}.keys"
        if not path.exists():
            write_secret(path, "\n".join(encode_key(k) for k in keys.peers[1:peers]) + "\n")
        argv = [
            sys.executable, str(Path(__file__).resolve()), "initiate",
            UNDERLAY["a"], str(WG_PORT), encode_key(public_key_for(keys.device)), str(path),
            "--sources", str(SOURCES), "--rate", f"{rate:g}",
            "--warmup", f"{WARMUP:g}", "--seconds", f"{seconds:g}", "--device-pid", str(device.pid),
        ]  # fmt: skip
        setup = 60.0 + peers * 0.002  # the generator prepares each initiator once (4 scalar multiplications)
        process = self.namespaces["b"].spawn(
            argv, child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            out, err = process.communicate(timeout=setup + WARMUP + seconds)
        except subprocess.TimeoutExpired:
            stop_process(process)
            raise LabFailed("the handshake generator did not finish in time") from None
        finally:
            self.namespaces["b"].processes.remove(process)
        device.check_running()
        if process.returncode != 0:
            raise LabFailed(f"the handshake generator failed: {last_line(err.decode(errors='replace'))}")
        counts = json.loads(out)
        counts["per_second"] = counts["responses_counted"] / counts["seconds_counted"]
        # what a device completes per second of CPU: less at the mercy of a shared machine's load
        cpu = counts["device_cpu_pct"] / 100
        counts["per_cpu_second"] = counts["per_second"] / cpu if cpu else None
        return counts

    def receive_buffer_drops(self, side: Side) -> int:
        """UDP datagrams dropped for full receive buffers in `side`'s namespace (RcvbufErrors)."""
        done = run(side.exec_argv(["cat", "/proc/net/snmp"]), f"reading /proc/net/snmp in {side.netns}")
        names, numbers = (line.split()[1:] for line in done.stdout.splitlines() if line.startswith("Udp:"))
        return int(numbers[names.index("RcvbufErrors")])


# --------------------------------------------------------------------------------------------
# one trial: one configuration, one implementation


def scale_trial(
    lab: Scale, kind: str, config: Config, keys: Keys, table_prefixes: Sequence[str], args: argparse.Namespace
) -> dict[str, Any]:
    """The device in a with `config` applied by `wg setconf`, its real peer in b: the figures."""
    a, b = lab.sides["a"], lab.sides["b"]
    values: dict[str, Any] = {"kind": kind, "config": config.key, "errors": [], "load_before": load_average()}
    started = time.monotonic()
    try:
        device = lab.start(kind, a, None, keys.device)
        values["rss_empty_mb"] = status_kb(device.pid, "VmRSS") / 1024
        text = setconf_text(keys, config, b, table_prefixes)
        values["setconf_bytes"] = len(text)
        values["setconf_s"] = lab.setconf(device, text)
        device.check_running()
        time.sleep(SETTLE)
        values["rss_mb"] = status_kb(device.pid, "VmRSS") / 1024
        lab.start(kind, b, public_key_for(keys.device), keys.peers[0])
        lab.wait_for_handshake(b, a.inner[0])
        lab.wait_for_handshake(a, b.inner[0])
        for key, reverse in (("tcp_fwd", False), ("tcp_rev", True)):
            time.sleep(SETTLE)
            try:
                values[key] = lab.tcp(b, 1, reverse)
            except LabFailed as error:
                values["errors"].append(f"{key}: {error}")
            for tunnel in lab.engines:
                tunnel.check_running()
        if config.peers >= 100 and args.handshake_seconds > 0:
            rate = min(args.handshake_rate, MAX_RATE_PER_PEER * (config.peers - 1))
            drops, buffer_drops = pywg_drops(device), lab.receive_buffer_drops(a)
            values["handshakes"] = lab.handshakes(device, keys, config.peers, rate, args.handshake_seconds)
            after = pywg_drops(device)
            # datagrams the kernel dropped because the device's sockets' receive buffers were full
            values["handshakes"]["receive_buffer_drops"] = lab.receive_buffer_drops(a) - buffer_drops
            if drops is not None and after is not None:  # why initiations got no response (pywg says)
                values["handshakes"]["device_drops"] = {
                    reason: after[reason] - drops.get(reason, 0)
                    for reason in after
                    if after[reason] != drops.get(reason, 0)
                }
        values["rss_peak_mb"] = status_kb(device.pid, "VmHWM") / 1024
        values["rss_end_mb"] = status_kb(device.pid, "VmRSS") / 1024
    except LabFailed as error:
        values["errors"].append(str(error))
    except OSError as error:  # /proc of a process that just died
        values["errors"].append(f"reading {error.filename}: {error.strerror}")
    finally:
        for tunnel in list(lab.engines):
            if tunnel.kind == "pywg-c" and tunnel.side.label == "a":
                values["data_path"] = logged_data_path(tunnel.log)
        lab.stop_all()
    values["load_after"] = load_average()
    values["duration_s"] = round(time.monotonic() - started, 1)
    return values


def pywg_drops(tunnel: Engine) -> dict[str, int] | None:
    """pywg's drop counters by reason (its `stats=1` UAPI request); None for wireguard-go."""
    if tunnel.kind == "go":
        return None
    try:
        reply = query(WG_SOCKET_DIR / f"{tunnel.name}.sock", b"stats=1\n\n").decode()
    except OSError as error:
        raise LabFailed(f"stats=1 on {tunnel.name}: {error}") from None
    pairs = (line.partition("=") for line in reply.split("\n"))
    return {key.removeprefix("drop_"): int(value) for key, _, value in pairs if key.startswith("drop_")}


def cores_trial(lab: Scale, kind: str, cpus: Sequence[int], keys: Keys) -> dict[str, Any]:
    """A 1-peer tunnel of `kind` with this process and all it starts pinned to `cpus`."""
    a, b = lab.sides["a"], lab.sides["b"]
    values: dict[str, Any] = {"kind": kind, "cpus": list(cpus), "errors": [], "load_before": load_average()}
    everything = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        lab.start(kind, a, public_key_for(keys.peers[0]), keys.device)
        lab.start(kind, b, public_key_for(keys.device), keys.peers[0])
        lab.wait_for_handshake(a, b.inner[0])
        for streams in (1, 4):
            time.sleep(SETTLE)
            try:
                values[f"tcp{streams}"] = lab.tcp(b, streams)
            except LabFailed as error:
                values["errors"].append(f"tcp{streams}: {error}")
    except LabFailed as error:
        values["errors"].append(str(error))
    finally:
        lab.stop_all()
        os.sched_setaffinity(0, everything)
    values["load_after"] = load_average()
    return values


# --------------------------------------------------------------------------------------------
# the report


def configs_of(args: argparse.Namespace) -> list[Config]:
    found = [Config(f"peers-{n}", f"{n:,} peer" + ("s" if n > 1 else ""), n) for n in args.peer_counts]
    if args.prefixes:
        found.append(
            Config(f"prefixes-{args.prefixes}", f"1 peer, {args.prefixes:,} prefixes", 1, args.prefixes)
        )
    return found


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def pick(trials: Sequence[Mapping[str, Any]], *path: str) -> float | None:
    """The median over rounds of a figure (a path into each trial's values)."""
    found = []
    for trial in trials:
        value: Any = trial
        for step in path:
            value = value.get(step) if isinstance(value, dict) else None
        if isinstance(value, int | float):
            found.append(float(value))
    return median(found)


def summarize(report: Mapping[str, Any]) -> dict[str, Any]:
    """Medians per configuration and implementation, and the growth per peer (or prefix) over the
    1-peer configuration of the same implementation."""
    summary: dict[str, Any] = {}
    trials = report["scale"]
    for kind in KINDS:
        mine = [t for t in trials if t["kind"] == kind]
        base = pick([t for t in mine if t["config"] == "peers-1"], "rss_mb")
        for config in report["settings"]["configs"]:
            these = [t for t in mine if t["config"] == config["key"]]
            if not these:
                continue
            row = {
                "setconf_s": pick(these, "setconf_s"),
                "rss_mb": pick(these, "rss_mb"),
                "rss_peak_mb": pick(these, "rss_peak_mb"),
                "tcp_fwd_gbps": pick(these, "tcp_fwd", "gbps"),
                "tcp_rev_gbps": pick(these, "tcp_rev", "gbps"),
                "handshakes_per_s": pick(these, "handshakes", "per_second"),
                "handshakes_offered_per_s": pick(these, "handshakes", "rate_offered"),
                "handshake_device_cpu_pct": pick(these, "handshakes", "device_cpu_pct"),
                "handshakes_per_cpu_s": pick(these, "handshakes", "per_cpu_second"),
            }
            units = config["prefixes"] or config["peers"] - 1
            if base is not None and row["rss_mb"] is not None and units > 0 and config["key"] != "peers-1":
                row["rss_growth_bytes_per_unit"] = (row["rss_mb"] - base) * 1024 * 1024 / units
            summary[f"{kind} {config['key']}"] = row
    for kind in KINDS:
        for cpus in ("1", "2"):
            these = [t for t in report["cores"] if t["kind"] == kind and len(t["cpus"]) == int(cpus)]
            if these:
                summary[f"{kind} cores-{cpus}"] = {
                    f"tcp{n}_{what}": pick(these, f"tcp{n}", what)
                    for n in (1, 4)
                    for what in ("gbps", "cpu_pct", "cpu_s_per_gb")
                }
    return summary


def fmt(value: float | None, show: Callable[[float], str]) -> str:
    return "—" if value is None else show(value)


def render(report: Mapping[str, Any], markdown: bool) -> str:
    m, s, summary = report["machine"], report["settings"], report["summary"]
    builds = ", ".join(f"{b['version']}" for b in m["wireguard_go"].values() if b.get("version"))
    head = (
        f"{m['cpu_model']}, {m['cores']} cores, Linux {m['kernel']}, Python {m['python']}, "
        f"wireguard-go {builds or 'none'}; {report['date'][:16].replace('T', ' ')} UTC; load average "
        f"{report['load_average_start'][0]:g} at the start, {report['load_average_end'][0]:g} at the end "
        f"(a shared machine); {s['rounds']} round(s), medians"
    )
    out = [f"_{head}_" if markdown else head, ""]
    rows = []
    for config in s["configs"]:
        for kind in KINDS:
            row = summary.get(f"{kind} {config['key']}")
            if row is None:
                continue
            per = "per prefix" if config["prefixes"] else "per peer"
            growth = row.get("rss_growth_bytes_per_unit")
            rate = row["handshakes_per_s"]
            offered = row["handshakes_offered_per_s"]
            rows.append(
                [
                    config["label"],
                    LABELS[kind],
                    fmt(row["setconf_s"], lambda v: f"{v:.2f}"),
                    fmt(row["rss_mb"], lambda v: f"{v:.1f}"),
                    fmt(growth, lambda v, per=per: f"{v:,.0f} B {per}"),
                    fmt(row["rss_peak_mb"], lambda v: f"{v:.0f}"),
                    fmt(rate, lambda v, o=offered: f"{v:,.0f} of {o:,.0f}"),
                    fmt(row["handshake_device_cpu_pct"], lambda v: f"{v:.0f}%"),
                    fmt(row["handshakes_per_cpu_s"], lambda v: f"{v:,.0f}"),
                    fmt(row["tcp_fwd_gbps"], lambda v: f"{v:.2f}"),
                    fmt(row["tcp_rev_gbps"], lambda v: f"{v:.2f}"),
                ]
            )
    headers = [
        "configuration",
        "implementation",
        "wg setconf s",
        "RSS MB",
        "RSS growth",
        "peak RSS MB",
        "handshakes/s (offered)",
        "device CPU",
        "handshakes per CPU-s",
        "TCP×1 a→b Gbit/s",
        "TCP×1 b→a Gbit/s",
    ]
    if rows:
        out += [table(headers, rows, markdown), ""]
        out.append(
            "RSS: VmRSS of the device 0.5 s after `wg setconf`; growth over the 1-peer configuration of the "
            "same implementation. Handshakes: responses a second to initiations from all peers but the "
            f"real one, {SOURCES:,} source addresses, counted over {s['handshake_seconds']:g} s after "
            f"{WARMUP:g} s; device CPU over those seconds (100% = one core), and the handshakes it completed "
            "per second of its CPU."
        )
    cores = []
    for kind in KINDS:
        for n in ("1", "2"):
            row = summary.get(f"{kind} cores-{n}")
            if row is None:
                continue
            cells = [LABELS[kind], n]
            for streams in (1, 4):
                cells += [
                    fmt(row[f"tcp{streams}_gbps"], lambda v: f"{v:.2f}"),
                    fmt(row[f"tcp{streams}_cpu_pct"], lambda v: f"{v:.0f}%"),
                    fmt(row[f"tcp{streams}_cpu_s_per_gb"], lambda v: f"{v:.1f}"),
                ]
            cores.append(cells)
    if cores:
        headers = [
            "implementation",
            "cores",
            "TCP×1 Gbit/s",
            "CPU",
            "CPU s/GB",
            "TCP×4 Gbit/s",
            "CPU",
            "CPU s/GB",
        ]
        out += [
            *([""] if rows else []),
            table(headers, cores, markdown),
            "",
            "Cores: a 1-peer tunnel, both tunnel processes and iperf3 pinned (CPU affinity) to core 0, "
            "or to cores 0 and 1; CPU: utime+stime of both tunnel processes (100% = one core).",
        ]
    errors = [
        f"{t['kind']} {t.get('config') or t.get('cpus')}: {e}"
        for t in report["scale"] + report["cores"]
        for e in t["errors"]
    ]
    if errors:
        out += ["", "Errors:"] + [f"- {e}" for e in errors]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Scale: many peers, a large table, one core and two.")
    parser.add_argument("--peers", help="comma-separated peer counts (default 1,100,1000,10000)")
    parser.add_argument(
        "--prefixes", type=int, help="prefixes of the 1-peer table case (default 130000; 0: none)"
    )
    parser.add_argument("--seconds", type=float, help="seconds per iperf3 transfer (default 3)")
    parser.add_argument(
        "--handshake-rate", type=float, default=8000.0, help="initiations a second offered (8000)"
    )
    parser.add_argument(
        "--handshake-seconds", type=float, help="seconds counted per handshake run (default 3; 0: none)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="rounds of everything, interleaved (default 1)")
    parser.add_argument(
        "--smoke", action="store_true", help="a quick check (< 1 min): 1,100 peers, 1,000 prefixes, 1 s"
    )
    parser.add_argument("--skip-cores", action="store_true", help="no one-core/two-core runs")
    parser.add_argument("--skip-scale", action="store_true", help="only the one-core/two-core runs")
    parser.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help="where to write the results (%(default)s)"
    )
    parser.add_argument("--markdown", action="store_true", help="the tables as Markdown")
    parser.add_argument(
        "--from-json", type=Path, help="only print the tables of a saved run (its summary recomputed)"
    )
    parser.add_argument(
        "--wireguard-go",
        type=Path,
        default=upstream_wireguard_go(),
        help="upstream wireguard-go 2025 (default: the shared material's, %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        counts = [int(n) for n in (args.peers or ("1,100" if args.smoke else "1,100,1000,10000")).split(",")]
    except ValueError:
        parser.error("--peers: comma-separated whole numbers, e.g. 1,100,1000")
    if any(n < 1 for n in counts):
        parser.error("--peers: every count must be at least 1")
    args.peer_counts = sorted(set(counts) | {1})  # 1 peer is the base of the growth per peer
    if args.prefixes is None:
        args.prefixes = 1000 if args.smoke else 130_000
    if args.prefixes < 0 or args.prefixes > TABLE_SPACE.num_addresses // 256:
        parser.error(f"--prefixes: 0 to {TABLE_SPACE.num_addresses // 256}")
    args.seconds = args.seconds or (1.0 if args.smoke else 3.0)
    if args.handshake_seconds is None:
        args.handshake_seconds = 1.0 if args.smoke else 3.0
    if args.seconds < 1 or args.rounds < 1 or args.handshake_rate <= 0:
        parser.error("--seconds and --rounds must be at least 1, --handshake-rate above 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == ["initiate"]:
        return initiate_main(arguments[1:])
    args = parse_args(arguments)
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        saved["summary"] = summarize(saved)
        print(render(saved, args.markdown))
        return 0
    if os.geteuid() != 0:
        print("scale: needs root for network namespaces", file=sys.stderr)
        return 1
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        print(f"scale: {', '.join(missing)} not found; `sudo make deps` installs them", file=sys.stderr)
        return 1
    if not (args.wireguard_go.is_file() and os.access(args.wireguard_go, os.X_OK)):
        print(f"scale: no wireguard-go at {args.wireguard_go} (pass --wireguard-go)", file=sys.stderr)
        return 1
    configs = [] if args.skip_scale else configs_of(args)
    cpu_sets = [] if args.skip_cores else [[0], [0, 1]] if len(os.sched_getaffinity(0)) >= 2 else [[0]]
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine({"upstream": args.wireguard_go}),
        "settings": {
            "rounds": args.rounds,
            "seconds": args.seconds,
            "smoke": args.smoke,
            "configs": [c.__dict__ for c in configs],
            "handshake_rate": args.handshake_rate,
            "handshake_seconds": args.handshake_seconds,
            "handshake_sources": SOURCES,
            "handshake_warmup_s": WARMUP,
            "cpu_sets": cpu_sets,
        },
        "load_average_start": load_average(),
        "scale": [],
        "cores": [],
    }
    largest = max((c.peers for c in configs), default=1)
    keys = Keys(generate_private_key(os.urandom), [])
    say(f"keys for {largest:,} peers ...")
    keys.grow(largest)
    table_prefixes = prefix_table(args.prefixes) if args.prefixes and configs else []
    lab = Scale(args.wireguard_go, args.seconds)
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    failure, status, problems = "", 0, []
    started = time.monotonic()
    try:
        try:
            lab.make_network()
            if any(c.peers >= 100 for c in configs) and args.handshake_seconds > 0:
                lab.add_generator_sources()
            for number in range(1, args.rounds + 1):
                # alternate which implementation goes first, so a drift of the machine hits both alike
                order = KINDS if number % 2 else tuple(reversed(KINDS))
                for config in configs:
                    for kind in order:
                        say(f"round {number}/{args.rounds}: {LABELS[kind]}, {config.label} ...")
                        values = scale_trial(lab, kind, config, keys, table_prefixes, args)
                        values["round"] = number
                        report["scale"].append(values)
                        say(f"    {trial_line(values)}")
                for cpus in cpu_sets:
                    for kind in order:
                        say(
                            f"round {number}/{args.rounds}: {LABELS[kind]}, pinned to {len(cpus)} core(s) ..."
                        )
                        values = cores_trial(lab, kind, cpus, keys)
                        values["round"] = number
                        report["cores"].append(values)
                        say(f"    {trial_line(values)}")
        finally:
            problems = cleanup_uninterrupted(lab, say)
    except LabFailed as error:
        failure, status = str(error), 1
    except KeyboardInterrupt:
        failure, status = "interrupted; partial results", 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    report["load_average_end"] = load_average()
    report["duration_s"] = round(time.monotonic() - started)
    report["complete"] = not failure
    report["summary"] = summarize(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(render(report, args.markdown))
    say(f"results in {args.json}; {report['duration_s']} s")
    for problem in problems:
        print(f"scale: cleanup: {problem}", file=sys.stderr)
    if failure:
        print(f"scale: {failure}", file=sys.stderr)
    return status or (1 if problems else 0)


def trial_line(values: Mapping[str, Any]) -> str:
    parts = []
    for key in ("setconf_s", "rss_mb"):
        if key in values:
            parts.append(f"{key}={values[key]:.3g}")
    for key in ("tcp_fwd", "tcp_rev", "tcp1", "tcp4"):
        if key in values:
            parts.append(f"{key}={values[key]['gbps']:.3g} Gbit/s cpu={values[key]['cpu_pct']:.0f}%")
    if "handshakes" in values:
        h = values["handshakes"]
        parts.append(
            f"handshakes={h['per_second']:.0f}/s of {h['rate_offered']:.0f} cpu={h['device_cpu_pct']:.0f}%"
        )
    parts += [f"error: {e}" for e in values["errors"]]
    return " ".join(parts) or "no figures"


if __name__ == "__main__":
    sys.exit(main())
