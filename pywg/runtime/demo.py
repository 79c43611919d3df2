"""`pywg demo`: WireGuard between two network namespaces; `pywg demo --in-memory`: two devices in memory.

The namespace demo (`run_netns_demo`, what `sudo make demo` runs) joins two fresh namespaces with a veth
pair, runs `pywg up` in both, pings through the tunnel both ways over IPv4 and IPv6, shows `wg show` for
both ends and measures TCP throughput with iperf3; then it replaces one end with Debian's wireguard-go and
does it again. Every name it makes carries a random tag (namespaces `pywgdemo-<tag>-a/b`, interfaces and
UAPI names `pywg-a-<tag>`, `pywg-b-<tag>`, `wggo-b-<tag>`: /var/run/wireguard is shared by all
namespaces), every command runs with a time bound, and the lab (pywg/runtime/lab.py) removes what was
made, also after a failure, Ctrl-C or SIGTERM. Keys are generated here and reach pywg and wg only
through 0600 files in a 0700 temporary directory.

The in-memory demo (`run_local_demo`) needs no root: two devices in one process on the real clock.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network

from pywg.core import Device, HandshakeCompleted, encode_key, generate_private_key
from pywg.core.batch import DatagramList, PacketList
from pywg.runtime.lab import (
    WG_SOCKET_DIR,
    Lab,
    LabFailed,
    Side,
    attempt,
    child_env,
    cleanup_uninterrupted,
    last_line,
    raise_interrupt,
    run,
    stop_process,
    why,
    write_secret,
)
from pywg.runtime.system import SystemClock, system_rng


def _udp_packet(source: str, destination: str, payload: bytes) -> bytes:
    total = 28 + len(payload)
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        total,
        0,
        0,
        64,
        17,
        0,
        ip_address(source).packed,
        ip_address(destination).packed,
    )
    return ip + struct.pack("!HHHH", 5000, 5000, 8 + len(payload), 0) + payload


def run_local_demo(packets: int = 2000) -> int:
    clock = SystemClock()
    alice = Device(generate_private_key(system_rng), clock=clock, rng=system_rng)
    bob = Device(generate_private_key(system_rng), clock=clock, rng=system_rng)
    assert alice.public_key is not None and bob.public_key is not None
    where = {id(alice): ("192.0.2.1", 51820), id(bob): ("192.0.2.2", 51820)}
    alice.allowed_ips.insert(
        ip_network("10.0.0.2/32"), alice.add_peer(bob.public_key, endpoint=where[id(bob)])
    )
    bob.allowed_ips.insert(
        ip_network("10.0.0.1/32"), bob.add_peer(alice.public_key, endpoint=where[id(alice)])
    )
    print(f"alice public key {encode_key(alice.public_key)}")
    print(f"bob   public key {encode_key(bob.public_key)}")

    def pump() -> None:
        """Each device's runs of messages reach the other, a run as one batch."""
        moved = True
        while moved:
            moved = False
            for sender, receiver in ((alice, bob), (bob, alice)):
                source = where[id(sender)]
                for messages, _endpoint, _source in sender.take_outbox():
                    receiver.receive_batch(DatagramList([(m, source, None) for m in messages.messages()]))
                    moved = True

    def delivered_to(device: Device) -> list[bytes]:
        return [packet for run in device.take_deliveries() for packet in run.packets()]

    started = time.perf_counter()
    alice.send_batch(PacketList([_udp_packet("10.0.0.1", "10.0.0.2", b"hello bob")]))
    pump()
    handshake_ms = (time.perf_counter() - started) * 1000
    events = [e for e in iter(alice.next_event, None) if isinstance(e, HandshakeCompleted)]
    delivered = delivered_to(bob)
    if not events or len(delivered) != 1:
        print("demo failed: no handshake")
        return 1
    print(f"handshake done in {handshake_ms:.1f} ms; bob got {delivered[0][28:]!r}")
    payload = bytes(1380)
    started = time.perf_counter()
    alice.send_batch(PacketList([_udp_packet("10.0.0.1", "10.0.0.2", payload) for _ in range(packets)]))
    pump()
    seconds = time.perf_counter() - started
    received = len(delivered_to(bob))
    print(
        f"{received}/{packets} packets of {len(payload) + 28} bytes encrypted and decrypted in "
        f"{seconds * 1000:.0f} ms ({received * (len(payload) + 28) * 8 / seconds / 1e6:.0f} Mbit/s, "
        "one core, in memory)"
    )
    print(f"drops: alice {dict(alice.drops) or 'none'}, bob {dict(bob.drops) or 'none'}")
    return 0 if received == packets else 1


# --------------------------------------------------------------------------------------------
# The real thing: two network namespaces, pywg against pywg, then pywg against wireguard-go

UNDERLAY = {"a": "192.168.77.1", "b": "192.168.77.2"}
INNER = {"a": ("10.77.0.1", "fd77::1"), "b": ("10.77.0.2", "fd77::2")}
INNER_NETWORKS = ("10.77.0.0/24", "fd77::/64")
WG_PORT = 51820
WG_MTU = 1420
IPERF_PORT = 5201
IPERF_SECONDS = 3
PING_DEADLINE = 12.0  # the first handshake, and one retry after REKEY_TIMEOUT if a message was lost
TOOLS = ("ip", "ping", "wg", "wireguard-go", "iperf3", "ss")
INDENT = "   "


def _say(text: str = "") -> None:
    print(text, flush=True)


def _pywg_down_argv(side: Side, name: str) -> list[str]:
    return side.exec_argv([sys.executable, "-m", "pywg", "down", name])


@dataclass
class Results:
    throughput: dict[str, float] = field(default_factory=dict)  # pair -> Mbit/s


class NetnsDemo(Lab):
    """The demo's story, told in a `Lab`; `cleanup` also takes the `pywg up` daemons down."""

    def __init__(self) -> None:
        super().__init__("pywgdemo", UNDERLAY, INNER)
        self.pywg_name = {label: f"pywg-{label}-{self.tag}" for label in self.sides}  # <= 15 chars
        self.go_name = f"wggo-b-{self.tag}"
        self.names += [*self.pywg_name.values(), self.go_name]
        self.pywg_started: list[Side] = []
        self.results = Results()

    # ---- the story

    def run(self) -> None:
        a, b = self.sides["a"], self.sides["b"]
        _say("pywg demo: a WireGuard tunnel between two network namespaces,")
        _say("first pywg <-> pywg, then pywg <-> wireguard-go (the reference userspace implementation).")
        _say()
        self.make_network()
        _say(f"Network  namespaces {a.netns} (a) and {b.netns} (b), joined by a veth pair:")
        _say(
            f"         a = {a.underlay}, b = {b.underlay}; the tunnel runs over this link, UDP port {WG_PORT}"
        )
        _say(f"Tunnel   a = {', '.join(a.inner)}    b = {', '.join(b.inner)}")
        _say(f"Keys     a fresh key pair per side; the configs are 0600 files in {self.workdir}")
        _say()
        _say("1. pywg <-> pywg")
        for side in (a, b):
            self.pywg_up(side)
        self.ping_all([(a, b), (b, a)], "pywg")
        self.wg_show(a, self.pywg_name["a"])
        self.wg_show(b, self.pywg_name["b"])
        self.throughput(a, b, "pywg <-> pywg", "pywg")
        _say()
        _say("2. pywg <-> wireguard-go")
        _say(
            f"{INDENT}b's pywg makes way for wireguard-go with the same key and port; a's pywg keeps running"
        )
        self.pywg_down(b)
        self.wireguard_go_up(b)
        # b's wireguard-go has no session yet and a still holds the old one: b starts the handshake.
        self.ping_all([(b, a), (a, b)], "pywg <-> wireguard-go")
        self.wg_show(a, self.pywg_name["a"])
        self.wg_show(b, self.go_name)
        self.throughput(a, b, "pywg <-> wireguard-go", "pywg <-> wireguard-go")
        _say()

    # ---- the devices

    def pywg_up(self, side: Side) -> None:
        assert self.workdir is not None
        peer = self.peer_of(side)
        config = {
            "address": [f"{side.inner[0]}/32", f"{side.inner[1]}/128"],
            "privateKey": encode_key(side.private_key),
            "listenPort": WG_PORT,
            "peers": [
                {
                    "endpoint": f"{peer.underlay}:{WG_PORT}",
                    "publicKey": encode_key(peer.public_key),
                    "allowedIPs": list(INNER_NETWORKS),
                }
            ],
        }
        name = self.pywg_name[side.label]
        path = write_secret(self.workdir / f"{name}.json", json.dumps(config, indent=2))
        self.pywg_started.append(side)
        # Inside the namespace, not `--netns`: that moves only the TUN there, and the UDP socket stays
        # where pywg starts (WireGuard's "birthplace" namespace); here both belong in the namespace.
        argv = side.exec_argv([sys.executable, "-m", "pywg", "up", str(path)])
        run([*argv, "--name", name, "--interface", name], f"pywg up in {side.netns}", timeout=20)
        _say(f"{INDENT}pywg up {name} in namespace {side.label}: ready")

    def pywg_down(self, side: Side) -> None:
        name = self.pywg_name[side.label]
        self.pywg_started.remove(side)
        run(_pywg_down_argv(side, name), f"pywg down {name}", timeout=20)
        _say(f"{INDENT}pywg down {name} in namespace {side.label}: stopped")

    def wireguard_go_up(self, side: Side) -> None:
        assert self.workdir is not None
        name = self.go_name
        log = self.workdir / f"{name}.log"
        process = self.spawn(side, ["wireguard-go", "-f", name], log, child_env())
        deadline = time.monotonic() + 10.0
        while not (WG_SOCKET_DIR / f"{name}.sock").exists():
            if process.poll() is not None:
                text = log.read_text(errors="replace")
                raise LabFailed(f"wireguard-go exited with status {process.returncode}: {last_line(text)}")
            if time.monotonic() > deadline:
                raise LabFailed("wireguard-go did not create its UAPI socket within 10 s")
            time.sleep(0.05)
        self.configure_wireguard_go(side, name, WG_PORT, INNER_NETWORKS)
        ip = ["ip", "-n", side.netns]
        run([*ip, "link", "set", name, "mtu", str(WG_MTU), "up"], f"bringing up {name}")
        run([*ip, "addr", "add", f"{side.inner[0]}/32", "dev", name], f"adding {side.inner[0]} to {name}")
        run([*ip, "addr", "add", f"{side.inner[1]}/128", "dev", name, "nodad"], f"adding {side.inner[1]}")
        for network in INNER_NETWORKS:
            run([*ip, "route", "add", network, "dev", name], f"adding the route {network} via {name}")
        _say(f"{INDENT}wireguard-go {name} in namespace {side.label}: ready (wg setconf, then ip addr/route)")

    # ---- traffic

    def ping_all(self, pairs: Sequence[tuple[Side, Side]], tunnel: str) -> None:
        first = True
        for source, target in pairs:
            for address in target.inner:
                self.ping(source, target, address, tunnel, first)
                first = False

    def ping(self, source: Side, target: Side, address: str, tunnel: str, first: bool) -> None:
        """Ping until the first reply (the handshake happens on the way), within PING_DEADLINE."""
        started = time.monotonic()
        argv = source.exec_argv(["ping", "-n", "-c", "1", "-W", "1", address])
        while True:
            done = attempt(argv, timeout=5)
            if done is not None and done.returncode == 0:
                break
            if time.monotonic() - started > PING_DEADLINE:
                raise LabFailed(
                    f"ping through the {tunnel} tunnel failed: no reply from {address} "
                    f"({source.label} -> {target.label}) within {PING_DEADLINE:.0f} s"
                )
            time.sleep(0.2)
        waited = time.monotonic() - started
        rtt = re.search(r"time=([\d.]+) ms", done.stdout)
        detail = f"reply in {rtt.group(1)} ms" if rtt else "reply"
        if waited > 1.5:
            detail += f" (after {waited:.1f} s of retries, handshake included)"
        elif first:
            detail += " (the first packet: the handshake came first)"
        _say(f"{INDENT}ping {source.label} -> {target.label} {address:<10} ok, {detail}")

    def wg_show(self, side: Side, name: str) -> None:
        done = run(side.exec_argv(["wg", "show", name]), f"wg show {name}")
        _say(f"{INDENT}wg show {name} (namespace {side.label}):")
        for line in done.stdout.rstrip().splitlines():
            _say(f"{INDENT}  {line}" if line.strip() else "")

    def throughput(self, client: Side, server: Side, pair: str, tunnel: str) -> None:
        """iperf3 -t 3, TCP, one stream, from `client` to `server` through the tunnel."""
        assert self.workdir is not None
        what = f"the throughput test through the {tunnel} tunnel"
        iperf_server = ["iperf3", "-s", "-1", "-p", str(IPERF_PORT)]
        process = self.spawn(server, iperf_server, self.workdir / "iperf3.log", child_env())
        self.wait_for_listener(server, process, IPERF_PORT, what)
        address = server.inner[0]
        argv = client.exec_argv(["iperf3", "-c", address, "-p", str(IPERF_PORT)])
        done = attempt([*argv, "-t", str(IPERF_SECONDS), "-P", "1", "-J"], timeout=IPERF_SECONDS + 15)
        stop_process(process)
        if done is None:
            raise LabFailed(f"{what} failed: iperf3 did not finish within {IPERF_SECONDS + 15} s")
        mbits = _received_mbits(done)
        if isinstance(mbits, str):
            raise LabFailed(f"{what} failed: {mbits}")
        self.results.throughput[pair] = mbits
        how = f"{address}, TCP, one stream, {IPERF_SECONDS} s"
        _say(f"{INDENT}iperf3 {client.label} -> {server.label} ({how}): {mbits:.0f} Mbit/s")

    # ---- cleanup

    def cleanup(self) -> list[str]:
        """Stop the `pywg up` daemons the way a user would, then remove everything else made."""
        for side in self.pywg_started:
            attempt(_pywg_down_argv(side, self.pywg_name[side.label]), timeout=20)
        return super().cleanup()


def _received_mbits(done: subprocess.CompletedProcess[str]) -> float | str:
    """Mbit/s received, from `iperf3 -J` output; or why there is no figure."""
    try:
        report = json.loads(done.stdout)
    except ValueError:
        return why(done)
    if not isinstance(report, dict):
        return "iperf3 printed no report"
    if report.get("error") or done.returncode != 0:
        return str(report.get("error") or f"iperf3 exited with status {done.returncode}")
    try:
        mbits = float(report["end"]["sum_received"]["bits_per_second"]) / 1e6
    except (KeyError, TypeError, ValueError):
        return "iperf3 reported no throughput"
    return mbits if mbits > 0 else "no data got through"


def run_netns_demo() -> int:
    """The demo `sudo make demo` runs. Exit status 0, or 1 (130 on Ctrl-C) with one line on stderr."""
    if os.geteuid() != 0:
        print(
            "pywg demo: needs root for network namespaces (sudo make demo); "
            "`pywg demo --in-memory` runs without",
            file=sys.stderr,
        )
        return 1
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        print(f"pywg demo: {', '.join(missing)} not found; `sudo make deps` installs them", file=sys.stderr)
        return 1
    started = time.monotonic()
    demo = NetnsDemo()
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    failure, status = "", 0
    problems: list[str] = []
    try:
        try:
            demo.run()
        finally:
            problems = cleanup_uninterrupted(demo, _say)
    except LabFailed as error:
        failure, status = str(error), 1
    except KeyboardInterrupt:
        failure, status = "interrupted" if problems else "interrupted; everything it made is removed", 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    if problems:
        for problem in problems:
            print(f"pywg demo: cleanup: {problem}", file=sys.stderr)
        status = status or 1
    if failure:
        print(f"pywg demo: {failure}", file=sys.stderr)
        return status
    seconds = time.monotonic() - started
    rates = ", ".join(f"{pair} {mbits:.0f} Mbit/s" for pair, mbits in demo.results.throughput.items())
    _say(f"Done in {seconds:.0f} s: {rates}. Nothing is left behind.")
    return status
