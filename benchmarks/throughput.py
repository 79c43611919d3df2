"""Throughput, packet rate, latency, memory and CPU of pywg and wireguard-go between two namespaces.

Not a test: `sudo make bench`, or `sudo python3 benchmarks/throughput.py [--rounds N] [--seconds S]
[--quick] [--cases K,K] [--wireguard-go PATH] [--debian-wireguard-go PATH] [--markdown] [--micro]
[--json PATH]`. benchmarks/README.md explains the figures.

Two fresh network namespaces `pwbench-<tag>-a` and `-b` are joined by a veth pair. Each case brings up a
tunnel between them (or none, for plain veth), measures, and takes it down again:

    veth       plain veth, no tunnel                 (the ceiling of the machine)
    go-go      wireguard-go 2025 <-> itself            (upstream v0.0.20250522: the reference for every ratio)
    debian-go  Debian's wireguard-go <-> itself        (v0.0.20220316, before batching and offloads)
    pywg-c     pywg <-> pywg, C hot path allowed
    pywg-py    pywg <-> pywg, pure Python              (PYWG_NO_EXT=1 for both pywg processes)
    pywg-go    pywg (a) <-> wireguard-go 2025 (b)

Upstream wireguard-go is taken from the shared material (../shared/bin, see its README) or
--wireguard-go PATH, Debian's from PATH or --debian-wireguard-go PATH; the report names both, with
their versions.

Per case and round: the CPU the two tunnel processes spend in IDLE_SECONDS of an idle tunnel; the
median RTT of 200 pings a -> b 10 ms apart (an idle path) and the CPU they cost; iperf3 TCP with one
and with four streams, a -> b and b -> a (-R); iperf3 UDP a -> b at full speed (-b 0) with 64- and
1392-byte payloads, reported as packets per second received and the loss; for every transfer the CPU
time (utime + stime) the two tunnel processes spent, per GB received; and at the end each process's
peak RSS (VmHWM). Cases are interleaved (A B C D E F, A B C D E F, ...) so that slow drifts of a
shared machine hit every case alike; the report shows the median per case over the rounds and its
ratio to wireguard-go 2025 <-> itself of the same run. The JSON (default
benchmarks/results/latest.json) holds the machine, the date, the medians, the ratios and every
round's raw values.

Tunnel processes run in the foreground, each a child of this script: `ip netns exec NS python3 -m pywg
up CONFIG --name N --interface N --foreground` and `ip netns exec NS WIREGUARD_GO -f N` (then `wg
setconf` and `ip`). Keys reach them only through 0600 files in a 0700 temporary directory. Every name
carries a random tag (interfaces and UAPI names `bnch<tag><side><n>`: /var/run/wireguard is shared by all
namespaces); every command runs with a time bound; everything made is removed at the end, also after a
failure, Ctrl-C or SIGTERM. Progress goes to stderr, the report to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pywg.core import encode_key
from pywg.runtime.lab import (
    WG_SOCKET_DIR,
    Lab,
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
    thread_cpu_seconds,
    upstream_wireguard_go,
    write_secret,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "latest.json"
MICRO = ROOT / "benchmarks" / "micro.py"

UNDERLAY = {"a": "192.168.78.1", "b": "192.168.78.2"}
INNER = {"a": ("10.78.0.1",), "b": ("10.78.0.2",)}
INNER_NETWORK = "10.78.0.0/24"
WG_PORT = 51820
WG_MTU = 1420
IPERF_PORT = 5201
UDP_PAYLOADS = (64, 1392)  # 1392 + 8 (UDP) + 20 (IPv4) = 1420, the tunnel MTU
PING_COUNT = 200
PING_INTERVAL = 0.01
IDLE_SECONDS = 3.0  # an idle tunnel's CPU is measured over this long, after the handshake
HANDSHAKE_DEADLINE = 15.0  # first handshake, and a retry after REKEY_TIMEOUT if a message was lost
START_DEADLINE = 20.0
STOP_TIMEOUT = 5.0
SETTLE = 0.3  # seconds between transfers, so queues left by one do not slow the next
TOOLS = ("ip", "ping", "wg", "iperf3", "ss")
REFERENCE = "go-go"
GO_KINDS = ("go", "go-debian")  # upstream wireguard-go 2025, Debian's


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    a: str | None  # "go" (upstream), "go-debian", "pywg-c", "pywg-py", or None: no tunnel
    b: str | None


CASES = (
    Case("veth", "plain veth", None, None),
    Case("go-go", "wireguard-go 2025 ↔ itself", "go", "go"),
    Case("debian-go", "Debian's wireguard-go ↔ itself", "go-debian", "go-debian"),
    Case("pywg-c", "pywg ↔ pywg (C path)", "pywg-c", "pywg-c"),
    Case("pywg-py", "pywg ↔ pywg (pure Python)", "pywg-py", "pywg-py"),
    Case("pywg-go", "pywg ↔ wireguard-go 2025", "pywg-c", "go"),
)

# The transfers of one round: (metric prefix, iperf3 arguments, direction)
TCP_TRANSFERS = (
    ("tcp1_fwd", ["-P", "1"]),
    ("tcp1_rev", ["-P", "1", "-R"]),
    ("tcp4_fwd", ["-P", "4"]),
    ("tcp4_rev", ["-P", "4", "-R"]),
)


@dataclass(frozen=True)
class Metric:
    key: str
    header: str
    unit: str


# What the table shows, in order; every round also keeps the raw per-transfer figures.
METRICS = (
    Metric("tcp1_fwd_gbps", "TCP×1 a→b", "Gbit/s"),
    Metric("tcp1_rev_gbps", "TCP×1 b→a", "Gbit/s"),
    Metric("tcp4_fwd_gbps", "TCP×4 a→b", "Gbit/s"),
    Metric("tcp4_rev_gbps", "TCP×4 b→a", "Gbit/s"),
    Metric("udp64_kpps", "UDP 64 B", "kpps received"),
    Metric("udp64_loss_pct", "loss", "%"),
    Metric("udp1392_kpps", "UDP 1392 B", "kpps received"),
    Metric("udp1392_loss_pct", "loss", "%"),
    Metric("rtt_ms", "RTT", "ms, median"),
    Metric("rss_a_mb", "peak RSS a", "MB (VmHWM)"),
    Metric("rss_b_mb", "peak RSS b", "MB (VmHWM)"),
    Metric("cpu_s_per_gb", "CPU", "s per GB over TCP, both ends"),
)


def say(text: str = "") -> None:
    """Progress, on stderr, so that stdout carries only the report."""
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# /proc figures of a running tunnel process


def maps_mention(pid: int, needle: str) -> bool:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as handle:
        return any(needle in line for line in handle)
    return False


# --------------------------------------------------------------------------------------------
# the network and the tunnel processes


@dataclass
class Engine:
    """One running tunnel process: pywg or wireguard-go, interface and UAPI name `name`."""

    kind: str  # "go", "go-debian", "pywg-c", "pywg-py"
    side: Side
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_running(self) -> None:
        if self.process.poll() is not None:
            why = last_line(self.log.read_text(errors="replace")) if self.log.exists() else "no log"
            raise LabFailed(
                f"{self.kind} {self.name} in {self.side.label} exited ({self.process.returncode}): {why}"
            )


@dataclass
class Transfer:
    """One iperf3 run: what the receiver got, and what the tunnel processes spent on it."""

    bytes: int
    seconds: float
    cpu: dict[str, float]  # side label -> CPU seconds of its tunnel process
    retransmits: int | None = None
    packets: int | None = None  # UDP: received
    lost_percent: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class EngineLab(Lab):
    """A two-namespace lab whose tunnel processes (`engines`) come and go: what this benchmark and
    benchmarks/scale.py share."""

    def __init__(
        self,
        prefix: str,
        name_prefix: str,
        underlay: Mapping[str, str] = UNDERLAY,
        inner: Mapping[str, tuple[str, ...]] = INNER,
    ) -> None:
        super().__init__(prefix, underlay, inner)
        self.name_prefix = name_prefix
        self.engines: list[Engine] = []
        self._count = 0

    def new_name(self, side: Side) -> str:
        self._count += 1
        name = f"{self.name_prefix}{self.tag}{side.label}{self._count}"  # <= 15 characters: an interface name
        self.names.append(name)
        return name

    def wait_for_uapi(self, engine: Engine) -> None:
        """Until the UAPI socket accepts and the interface exists (so the process is ready)."""
        path = WG_SOCKET_DIR / f"{engine.name}.sock"
        deadline = time.monotonic() + START_DEADLINE
        while True:
            engine.check_running()
            if socket_accepts(path) and self.has_link(engine.side, engine.name):
                return
            if time.monotonic() > deadline:
                raise LabFailed(f"{engine.kind} {engine.name} was not ready within {START_DEADLINE:.0f} s")
            time.sleep(0.05)

    def has_link(self, side: Side, name: str) -> bool:
        done = attempt(["ip", "-n", side.netns, "link", "show", "dev", name], timeout=5)
        return done is not None and done.returncode == 0

    def stop(self, engine: Engine) -> None:
        stop_process(engine.process)
        self.engines.remove(engine)
        deadline = time.monotonic() + STOP_TIMEOUT
        while self.has_link(engine.side, engine.name) and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.has_link(engine.side, engine.name):
            attempt(["ip", "-n", engine.side.netns, "link", "del", "dev", engine.name], timeout=5)
        self.forget(engine.name)

    def wait_for_handshake(self, source: Side, address: str) -> None:
        started = time.monotonic()
        argv = source.exec_argv(["ping", "-n", "-c", "1", "-W", "1", address])
        while True:
            for engine in self.engines:
                engine.check_running()
            done = attempt(argv, timeout=5)
            if done is not None and done.returncode == 0:
                return
            if time.monotonic() - started > HANDSHAKE_DEADLINE:
                raise LabFailed(f"no ping reply from {address} within {HANDSHAKE_DEADLINE:.0f} s")
            time.sleep(0.1)

    def cleanup(self) -> list[str]:
        self.engines.clear()
        return super().cleanup()


class Bench(EngineLab):
    """The benchmark's lab: tunnel processes started and stopped per case, in the two namespaces."""

    def __init__(self, seconds: float, ping_count: int, binaries: Mapping[str, Path] | None = None) -> None:
        super().__init__("pwbench", "bnch")
        self.seconds = seconds
        self.ping_count = ping_count
        self.binaries = dict(binaries or {})  # wireguard-go kind -> the binary that runs it

    # ---- tunnel processes

    def start(self, kind: str, side: Side) -> Engine:
        """Start a tunnel process and wait until it is ready; `stop` (or `cleanup`) ends it."""
        go = kind in GO_KINDS
        engine = self.launch_wireguard_go(side, kind) if go else self.launch_pywg(side, kind)
        self.engines.append(engine)
        self.wait_for_uapi(engine)
        if go:
            self.configure_go_engine(engine)
        return engine

    def launch_pywg(self, side: Side, kind: str) -> Engine:
        assert self.workdir is not None
        peer = self.peer_of(side)
        name = self.new_name(side)
        config = {
            "address": [f"{side.inner[0]}/24"],
            "privateKey": encode_key(side.private_key),
            "listenPort": WG_PORT,
            "mtu": WG_MTU,
            "peers": [
                {
                    "endpoint": f"{peer.underlay}:{WG_PORT}",
                    "publicKey": encode_key(peer.public_key),
                    "allowedIPs": [INNER_NETWORK],
                }
            ],
        }
        path = write_secret(self.workdir / f"{name}.json", json.dumps(config))
        env = child_env({"PYWG_NO_EXT": "1"}) if kind == "pywg-py" else child_env(drop=["PYWG_NO_EXT"])
        argv = [sys.executable, "-m", "pywg", "up", str(path), "--name", name, "--interface", name]
        log = self.workdir / f"{name}.log"
        process = self.spawn(side, [*argv, "--foreground"], log, env)
        return Engine(kind, side, name, process, log)

    def launch_wireguard_go(self, side: Side, kind: str) -> Engine:
        assert self.workdir is not None
        name = self.new_name(side)
        log = self.workdir / f"{name}.log"
        process = self.spawn(side, [str(self.binaries[kind]), "-f", name], log, child_env())
        return Engine(kind, side, name, process, log)

    def configure_go_engine(self, engine: Engine) -> None:
        """`wg setconf` from a 0600 file, then the MTU, the address and the link up with `ip`."""
        side, name = engine.side, engine.name
        self.configure_wireguard_go(side, name, WG_PORT, [INNER_NETWORK])
        ip = ["ip", "-n", side.netns]
        run([*ip, "link", "set", name, "mtu", str(WG_MTU), "up"], f"bringing up {name}")
        run([*ip, "addr", "add", f"{side.inner[0]}/24", "dev", name], f"adding an address to {name}")

    # ---- traffic

    def ping_ms(self, source: Side, address: str) -> list[float]:
        """Round-trip times of `ping_count` pings PING_INTERVAL apart (root may ping that often)."""
        count = self.ping_count
        argv = ["ping", "-n", "-c", str(count), "-i", str(PING_INTERVAL), "-W", "1", address]
        done = attempt(source.exec_argv(argv), timeout=count * PING_INTERVAL + 10)
        if done is None:
            return []
        return [float(t) for t in re.findall(r"time=([\d.]+) ms", done.stdout)]

    def cpu_of_engines(self) -> float:
        """CPU seconds (utime + stime) the running tunnel processes have spent so far."""
        return sum(cpu_seconds(e.pid) for e in self.engines)

    def iperf(
        self, server: Side, address: str, args: Sequence[str]
    ) -> tuple[dict[str, Any], dict[str, float]]:
        """One iperf3 run from the other side to `server`; its JSON report and the CPU deltas."""
        process = self.namespaces[server.label].spawn(
            ["iperf3", "-s", "-1", "-p", str(IPERF_PORT)], child_env()
        )
        try:
            self.wait_for_listener(server, process, IPERF_PORT, "iperf3")
            client = self.peer_of(server)
            argv = ["iperf3", "-c", address, "-p", str(IPERF_PORT), "-t", f"{self.seconds:g}", "-J"]
            argv += ["--connect-timeout", "5000", *args]
            before = {e.side.label: cpu_seconds(e.pid) for e in self.engines}
            done = attempt(client.exec_argv(argv), timeout=self.seconds + 30)
            after = {e.side.label: cpu_seconds(e.pid) for e in self.engines}
        finally:
            stop_process(process, timeout=2.0)
        if done is None:
            raise LabFailed(f"iperf3 {' '.join(args)} did not finish within {self.seconds + 30:.0f} s")
        try:
            report = json.loads(done.stdout)
        except ValueError:
            raise LabFailed(f"iperf3 {' '.join(args)}: {last_line(done.stderr or done.stdout)}") from None
        if not isinstance(report, dict) or report.get("error") or done.returncode != 0:
            error = report.get("error") if isinstance(report, dict) else None
            raise LabFailed(f"iperf3 {' '.join(args)}: {error or f'exit status {done.returncode}'}")
        return report, {label: round(after[label] - before[label], 3) for label in after}

    def tcp(self, server: Side, address: str, args: Sequence[str]) -> Transfer:
        report, cpu = self.iperf(server, address, args)
        received, sent = report["end"]["sum_received"], report["end"]["sum_sent"]
        return Transfer(
            bytes=int(received["bytes"]),
            seconds=float(received["seconds"]),
            cpu=cpu,
            retransmits=sent.get("retransmits"),
        )

    def udp(self, server: Side, address: str, payload: int) -> Transfer:
        report, cpu = self.iperf(server, address, ["-u", "-b", "0", "-l", str(payload)])
        received = report["end"]["sum_received"]
        packets = int(received["packets"]) - int(received["lost_packets"])
        return Transfer(
            bytes=int(received["bytes"]),
            seconds=float(received["seconds"]),
            cpu=cpu,
            packets=packets,
            lost_percent=float(received["lost_percent"]),
        )

    # ---- one case, one round

    def run_case(self, case: Case) -> dict[str, Any]:
        """Bring the case's tunnel up, measure, take it down: the round's raw values and derived metrics."""
        a, b = self.sides["a"], self.sides["b"]
        values: dict[str, Any] = {"errors": []}
        engines: list[Engine] = []
        try:
            if case.a is not None and case.b is not None:
                engines.append(self.start(case.a, a))
                engines.append(self.start(case.b, b))
                self.wait_for_handshake(a, b.inner[0])
                self.wait_for_handshake(b, a.inner[0])
                values["idle_rss_mb"] = {e.side.label: status_kb(e.pid, "VmRSS") / 1024 for e in engines}
                time.sleep(SETTLE)
                before, started = self.cpu_of_engines(), time.monotonic()
                time.sleep(IDLE_SECONDS)
                idle = self.cpu_of_engines() - before
                values["idle_cpu_pct"] = 100 * idle / (time.monotonic() - started)
            target = b.inner[0] if engines else b.underlay
            before = self.cpu_of_engines()
            times = self.ping_ms(a, target)
            if times:
                values["rtt_ms"] = statistics.median(times)
                values["rtt_p90_ms"] = statistics.quantiles(times, n=10)[-1] if len(times) > 1 else times[0]
                values["pings"] = len(times)
                if engines:
                    values["ping_cpu_us"] = (self.cpu_of_engines() - before) / len(times) * 1e6
            transfers: dict[str, Transfer] = {}
            steps: list[tuple[str, Callable[[], Transfer]]] = [
                (key, lambda args=args: self.tcp(b, target, args)) for key, args in TCP_TRANSFERS
            ]
            steps += [(f"udp{n}", lambda n=n: self.udp(b, target, n)) for n in UDP_PAYLOADS]
            for key, step in steps:
                time.sleep(SETTLE)
                try:
                    transfers[key] = step()
                except LabFailed as error:
                    values["errors"].append(f"{key}: {error}")
                except (KeyError, TypeError, ValueError) as error:  # an iperf3 report without a figure
                    values["errors"].append(f"{key}: iperf3 report without {error}")
                for engine in engines:
                    engine.check_running()  # a dead tunnel ends the round; a failed transfer does not
            values["transfers"] = {key: t.as_json() for key, t in transfers.items()}
            derive(values, transfers)
            for engine in engines:
                values[f"rss_{engine.side.label}_mb"] = status_kb(engine.pid, "VmHWM") / 1024
                if engine.kind.startswith("pywg"):
                    values.setdefault("hotpath_loaded", {})[engine.side.label] = maps_mention(
                        engine.pid, "_hotpath"
                    )
            pywg = [e for e in engines if e.kind.startswith("pywg")]
            if pywg:
                # How much of the tunnels' CPU the crypto worker threads (pywg/native/threads.c) did.
                workers = sum(thread_cpu_seconds(e.pid, CRYPTO_THREAD) for e in pywg)
                values["crypto_thread_cpu_pct"] = (
                    100 * workers / max(1e-9, sum(cpu_seconds(e.pid) for e in pywg))
                )
            if engines:
                values["rss_total_mb"] = sum(values[f"rss_{e.side.label}_mb"] for e in engines)
        except LabFailed as error:
            values["errors"].append(str(error))
        except OSError as error:  # /proc of a tunnel process that just died
            values["errors"].append(f"reading {error.filename}: {error.strerror}")
        finally:
            stopping = list(self.engines)  # a process that failed to start is among them
            for engine in stopping:
                self.stop(engine)
            for engine in stopping:
                if engine.kind in GO_KINDS:
                    values.setdefault("wireguard_go", {})[engine.side.label] = str(self.binaries[engine.kind])
                if engine.kind.startswith("pywg"):
                    values.setdefault("data_path", {})[engine.side.label] = logged_data_path(engine.log)
                complaints = log_complaints(engine.log)
                if complaints:
                    values.setdefault("log_complaints", {})[f"{engine.kind} {engine.side.label}"] = complaints
        return values


def log_complaints(log: Path, limit: int = 5) -> list[str]:
    """The first lines of a tunnel process's log that report a problem."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return []
    pattern = re.compile(r"ERROR|WARNING|Traceback|panic|fatal", re.IGNORECASE)
    return [line.strip() for line in text.splitlines() if pattern.search(line)][:limit]


def logged_data_path(log: Path) -> str | None:
    """The data path a pywg engine says it uses (`<name>: data path: ...`), None if it says nothing."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    found = re.search(r"data path: (.+)", text)
    return found.group(1).strip() if found else None


def socket_accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def derive(values: dict[str, Any], transfers: Mapping[str, Transfer]) -> None:
    """The table's metrics from one round's transfers."""
    for key, transfer in transfers.items():
        if key.startswith("tcp"):
            values[f"{key}_gbps"] = transfer.bytes * 8 / transfer.seconds / 1e9
        elif transfer.packets is not None:
            values[f"{key}_kpps"] = transfer.packets / transfer.seconds / 1e3
            values[f"{key}_loss_pct"] = transfer.lost_percent
            if transfer.cpu and transfer.packets:
                values[f"{key}_cpu_us_per_packet"] = sum(transfer.cpu.values()) / transfer.packets * 1e6
    tcp = [t for key, t in transfers.items() if key.startswith("tcp")]
    moved = sum(t.bytes for t in tcp)
    if tcp and moved and all(t.cpu for t in tcp):
        values["cpu_s_per_gb"] = sum(sum(t.cpu.values()) for t in tcp) / (moved / 1e9)


# --------------------------------------------------------------------------------------------
# the run: rounds of interleaved cases, medians, ratios


def median_of(rounds: Sequence[Mapping[str, Any]], key: str) -> float | None:
    found = [r[key] for r in rounds if isinstance(r.get(key), int | float)]
    return statistics.median(found) if found else None


def summarize(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    keys = [m.key for m in METRICS] + [
        "rtt_p90_ms",
        "ping_cpu_us",
        "idle_cpu_pct",
        "rss_total_mb",
        "udp64_cpu_us_per_packet",
        "udp1392_cpu_us_per_packet",
        "crypto_thread_cpu_pct",
    ]
    medians = {case: {k: median_of(rounds, k) for k in keys} for case, rounds in results.items()}
    reference = medians.get(REFERENCE)
    summary: dict[str, dict[str, Any]] = {}
    for case, median in medians.items():
        ratio: dict[str, float | None] = {}
        for key, value in median.items():
            base = reference.get(key) if reference else None
            ratio[key] = value / base if value is not None and base else None
        summary[case] = {"median": median, "ratio_to_reference": ratio if reference else None}
    return summary


def run_rounds(
    bench: Bench, cases: Sequence[Case], rounds: int, raw: dict[str, list[dict[str, Any]]]
) -> None:
    for number in range(1, rounds + 1):
        for case in cases:
            say(f"round {number}/{rounds}: {case.label} ...")
            started = time.monotonic()
            values = bench.run_case(case)
            values["round"] = number
            values["duration_s"] = round(time.monotonic() - started, 1)
            raw[case.key].append(values)
            say(f"    {progress_line(values)}")
            for error in values["errors"]:
                say(f"    error: {error}")
            for who, lines in values.get("log_complaints", {}).items():
                say(
                    f"    {who} logged: {lines[0]}"
                    + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else "")
                )
            note = data_path_note(case, values)
            if note:
                say(f"    note: {note}")


def progress_line(values: Mapping[str, Any]) -> str:
    parts = []
    for metric in METRICS:
        value = values.get(metric.key)
        if value is not None:
            parts.append(f"{metric.key}={value:.3g}")
    return " ".join(parts) or "no figures"


# --------------------------------------------------------------------------------------------
# the report


def sig3(value: float) -> str:
    """Three significant digits, no exponent."""
    if value == 0:
        return "0"
    digits = max(0, 2 - int(f"{abs(value):e}".split("e")[1]))
    return f"{value:.{digits}f}"


def cells(case: Case, median: Mapping[str, float | None]) -> list[str]:
    def get(key: str, show: Callable[[float], str] = sig3) -> str:
        value = median.get(key)
        return "—" if value is None else show(value)

    def udp(n: int) -> str:
        pps, loss = median.get(f"udp{n}_kpps"), median.get(f"udp{n}_loss_pct")
        if pps is None:
            return "—"
        return f"{sig3(pps)} ({loss:.0f}% lost)" if loss is not None else sig3(pps)

    rss = (
        "—"
        if case.a is None
        else f"{get('rss_a_mb', lambda v: f'{v:.0f}')} / {get('rss_b_mb', lambda v: f'{v:.0f}')}"
    )
    return [
        case.label,
        get("tcp1_fwd_gbps"),
        get("tcp1_rev_gbps"),
        get("tcp4_fwd_gbps"),
        get("tcp4_rev_gbps"),
        udp(64),
        udp(1392),
        get("rtt_ms", lambda v: f"{v:.3f}"),
        rss,
        get("cpu_s_per_gb", lambda v: f"{v:.1f}"),
    ]


def ratio_cells(case: Case, ratio: Mapping[str, float | None]) -> list[str]:
    def get(key: str) -> str:
        value = ratio.get(key)
        return "—" if value is None else f"{value:.2f}×"

    return [
        case.label,
        get("tcp1_fwd_gbps"),
        get("tcp1_rev_gbps"),
        get("tcp4_fwd_gbps"),
        get("tcp4_rev_gbps"),
        get("udp64_kpps"),
        get("udp1392_kpps"),
        get("rtt_ms"),
        get("rss_total_mb"),
        get("cpu_s_per_gb"),
    ]


HEADERS = [
    "case",
    "TCP×1 a→b Gbit/s",
    "TCP×1 b→a Gbit/s",
    "TCP×4 a→b Gbit/s",
    "TCP×4 b→a Gbit/s",
    "UDP 64 B kpps",
    "UDP 1392 B kpps",
    "RTT ms",
    "peak RSS MB a / b",
    "CPU s/GB",
]
RATIO_HEADERS = [*HEADERS[:8], "peak RSS a+b", "CPU s/GB"]
LATENCY_HEADERS = ["case", "RTT ms p50", "RTT ms p90", "CPU µs per ping", "idle CPU %"]


def latency_cells(case: Case, median: Mapping[str, float | None]) -> list[str]:
    def get(key: str, show: Callable[[float], str]) -> str:
        value = median.get(key)
        return "—" if value is None else show(value)

    return [
        case.label,
        get("rtt_ms", lambda v: f"{v:.3f}"),
        get("rtt_p90_ms", lambda v: f"{v:.3f}"),
        get("ping_cpu_us", lambda v: f"{v:.0f}"),
        get("idle_cpu_pct", lambda v: f"{v:.2f}"),
    ]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> str:
    if markdown:
        lines = [
            "| " + " | ".join(headers) + " |",
            "|" + "|".join([" --- "] + [" ---: "] * (len(headers) - 1)) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        first = row[0].ljust(widths[0])
        return "  ".join(
            [first, *(cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))]
        )

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(row) for row in rows)])


def machine_line(report: Mapping[str, Any]) -> str:
    m = report["machine"]
    s = report["settings"]
    go = m["wireguard_go"]
    builds = ", ".join(f"{b['version']} ({label})" for label, b in go.items() if b.get("version"))
    return (
        f"{m['cpu_model']}, {m['cores']} cores, Linux {m['kernel']}, Python {m['python']}, "
        f"{m['openssl']}, wireguard-go {builds or 'none'}; {report['date'][:16].replace('T', ' ')} UTC; "
        f"load average {report['load_average_start'][0]:g}; "
        f"{s['rounds']} round(s) of {s['seconds']:g} s per transfer, medians"
    )


def render(report: Mapping[str, Any], markdown: bool) -> str:
    cases = [c for c in CASES if c.key in report["cases"] and report["raw"][c.key]]
    rows = [cells(c, report["cases"][c.key]["median"]) for c in cases]
    out = []
    if markdown:
        out += [f"_{machine_line(report)}_", ""]
    else:
        out += [machine_line(report), ""]
    out.append(table(HEADERS, rows, markdown) if rows else "No round completed.")
    if any(report["cases"][c.key]["ratio_to_reference"] for c in cases):
        ratios = [ratio_cells(c, report["cases"][c.key]["ratio_to_reference"]) for c in cases]
        out += [
            "",
            "Relative to wireguard-go 2025 ↔ itself (same run; lower is better for RTT, RSS, CPU):",
            "",
        ]
        out.append(table(RATIO_HEADERS, ratios, markdown))
    out += [
        "",
        "UDP: a→b at full speed (iperf3 -u -b 0), packets received per second and the share lost. "
        "CPU: utime+stime of both tunnel processes per GB received over the four TCP transfers. "
        "Peak RSS: VmHWM of each tunnel process after the round.",
    ]
    latency = [latency_cells(c, report["cases"][c.key]["median"]) for c in cases if c.a is not None]
    if latency:
        out += [
            "",
            f"Latency and CPU on an idle path: {report['settings']['ping']['count']} pings a→b "
            f"{report['settings']['ping']['interval_s'] * 1000:g} ms apart; CPU of both tunnel processes "
            f"per ping, and over {IDLE_SECONDS:g} s of an idle tunnel:",
            "",
            table(LATENCY_HEADERS, latency, markdown),
        ]
    shares = [
        f"{c.label} {share:.0f}%"
        for c in cases
        if (share := report["cases"][c.key]["median"].get("crypto_thread_cpu_pct")) is not None
    ]
    if shares:
        out += [
            "",
            "CPU done by crypto worker threads (share of the pywg processes' CPU): "
            + ", ".join(shares)
            + ".",
        ]
    errors = [
        f"{c.label}, round {r['round']}: {e}"
        for c in cases
        for r in report["raw"][c.key]
        for e in r["errors"]
    ]
    if errors:
        out += ["", "Errors:"] + [f"- {e}" for e in errors]
    notes = report.get("notes") or []
    if notes:
        out += ["", "Notes:"] + [f"- {n}" for n in notes]
    micro = report.get("micro")
    if micro:
        out += ["", render_micro(micro, markdown)]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# the micro-benchmark, as a subprocess


CRYPTO_THREAD = "pywg-crypto"  # the name threads.c gives its worker threads
MICRO_ROW = re.compile(r"^(\w+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x\s*$")
MICRO_STEP = re.compile(r"^([a-z][a-z ]*?)\s+([\d.]+)\s*$")


def run_micro(rounds: int | None) -> dict[str, Any]:
    argv = [sys.executable, str(MICRO)] + (["--rounds", str(rounds)] if rounds else [])
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=600,
            env=child_env(drop=["PYWG_NO_EXT"]),
        )
    except (subprocess.TimeoutExpired, OSError) as error:
        return {"command": argv[1:], "error": str(error)}
    if done.returncode != 0:
        return {"command": argv[1:], "error": last_line(done.stderr or done.stdout), "output": done.stdout}
    # Three tables: Python against C, C with one crypto thread against the default count, I/O steps.
    tables: list[list[tuple[str, float, float, float]]] = [[], []]
    sections = done.stdout.split("\n\n")
    for number, section in enumerate(sections[:2]):
        for line in section.splitlines():
            match = MICRO_ROW.match(line.strip())
            if match:
                name, first, second, speedup = match.groups()
                tables[number].append((name, float(first), float(second), float(speedup)))
    rows = [{"step": n, "python_ns": a, "c_ns": b, "speedup": x} for n, a, b, x in tables[0]]
    threads = [{"step": n, "one_thread_ns": a, "default_ns": b, "speedup": x} for n, a, b, x in tables[1]]
    steps = [
        match.groups() for line in "".join(sections[2:3]).splitlines() if (match := MICRO_STEP.match(line))
    ]
    io = [{"step": name, "ns": float(ns)} for name, ns in steps]
    command = ["python3", "benchmarks/micro.py", *argv[2:]]
    return {"command": command, "output": done.stdout, "rows": rows, "threads": threads, "io": io}


def render_micro(micro: Mapping[str, Any], markdown: bool) -> str:
    title = "Micro-benchmark (benchmarks/micro.py)"
    if micro.get("error"):
        return f"{title}: failed: {micro['error']}"
    lines = micro["output"].rstrip().splitlines()
    if not micro.get("rows"):
        body = "\n".join(lines)
        return f"{title}\n\n```\n{body}\n```" if markdown else f"{title}\n{body}"
    headers = ["step", "Python ns", "C ns", "speed-up"]
    rows = [
        [r["step"], f"{r['python_ns']:.0f}", f"{r['c_ns']:.0f}", f"{r['speedup']:.2f}×"]
        for r in micro["rows"]
    ]
    heading = lines[0] if lines else "ns per packet"
    text = f"{title}: {heading}\n\n{table(headers, rows, markdown)}"
    if micro.get("threads"):
        split = [line for line in lines if line.startswith("C, ")]
        threads = [
            [r["step"], f"{r['one_thread_ns']:.0f}", f"{r['default_ns']:.0f}", f"{r['speedup']:.2f}×"]
            for r in micro["threads"]
        ]
        headers = ["step", "1 thread ns", "default threads ns", "speed-up"]
        text += f"\n\n{split[0] if split else 'crypto threads'}\n\n{table(headers, threads, markdown)}"
    if micro.get("io"):
        heading = next((line for line in lines if line.startswith("I/O steps")), "I/O steps")
        steps = [[r["step"], f"{r['ns']:.0f}"] for r in micro["io"]]
        text += f"\n\n{heading}\n\n{table(['step', 'ns'], steps, markdown)}"
    return text


# --------------------------------------------------------------------------------------------
# the machine


def first_line(argv: Sequence[str]) -> str:
    done = attempt(argv, timeout=10)
    return last_line(done.stdout.splitlines()[0]) if done and done.stdout.strip() else "unknown"


def output_lines(argv: Sequence[str]) -> list[str]:
    done = attempt(argv, timeout=10)
    return done.stdout.splitlines() if done and done.returncode == 0 else []


def wireguard_go_build(path: Path | None) -> dict[str, Any]:
    """Which wireguard-go a path holds: its version line and sha256 (None: not found)."""
    if path is None or not path.is_file():
        return {"path": str(path) if path else None, "version": None}
    version = first_line([str(path), "--version"]).removeprefix("wireguard-go ")
    return {"path": str(path), "version": version, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def machine(binaries: Mapping[str, Path | None] | None = None) -> dict[str, Any]:
    """The machine, and the wireguard-go builds by label (default: upstream's and Debian's)."""
    if binaries is None:
        debian = shutil.which("wireguard-go")
        binaries = {"upstream": upstream_wireguard_go(), "debian": Path(debian) if debian else None}
    cpu_model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,  # the system libcrypto, which the C hot path links
        "wireguard_go": {label: wireguard_go_build(path) for label, path in binaries.items()},
        "iperf3": first_line(["iperf3", "--version"]),
        "pywg_commit": first_line(["git", "-C", str(ROOT), "rev-parse", "HEAD"]),
        # data path, TUN offloads and UDP batching of the C-path cases, as `pywg version` says
        "pywg_version": output_lines([sys.executable, "-m", "pywg", "version"]),
    }
    status = attempt(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"], timeout=10)
    info["pywg_tree_modified"] = bool(status and status.stdout.strip())
    with contextlib.suppress(Exception):
        from cryptography.hazmat.backends.openssl.backend import backend

        info["cryptography_openssl"] = backend.openssl_version_text()  # the Python path's AEAD
    return info


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --------------------------------------------------------------------------------------------
# main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Throughput, packet rate, RTT, memory and CPU: pywg against wireguard-go over veth.",
        epilog=f"cases: {', '.join(f'{c.key} ({c.label})' for c in CASES)}",
    )
    parser.add_argument("--rounds", type=int, help="rounds of all cases, interleaved (default 3)")
    parser.add_argument("--seconds", type=float, help="seconds per iperf3 transfer (default 5)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 round of 1 s transfers (~1 min)")
    parser.add_argument("--cases", help="comma-separated case keys (default: all)")
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        help=f"where to write the results ({DEFAULT_JSON.relative_to(ROOT)})",
    )
    parser.add_argument(
        "--markdown", action="store_true", help="print the tables as Markdown, as in benchmarks/README.md"
    )
    parser.add_argument(
        "--micro", action="store_true", help="also run benchmarks/micro.py and report its figures"
    )
    parser.add_argument("--micro-rounds", type=int, help="--rounds for micro.py (default: its own)")
    parser.add_argument(
        "--wireguard-go",
        type=Path,
        default=upstream_wireguard_go(),
        help="upstream wireguard-go 2025, the reference (default: the shared material's, %(default)s)",
    )
    parser.add_argument(
        "--debian-wireguard-go",
        type=Path,
        default=shutil.which("wireguard-go"),
        help="Debian's wireguard-go, the second row (default: wireguard-go on PATH, %(default)s)",
    )
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.seconds = args.seconds or (1.0 if args.quick else 5.0)
    if args.rounds < 1 or args.seconds < 1:
        parser.error("--rounds and --seconds must be at least 1")
    known = {c.key: c for c in CASES}
    wanted = [k.strip() for k in args.cases.split(",")] if args.cases else list(known)
    unknown = [k for k in wanted if k not in known]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(known)}")
    args.case_list = [c for c in CASES if c.key in wanted]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("throughput: needs root for network namespaces (sudo make bench)", file=sys.stderr)
        return 1
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        print(f"throughput: {', '.join(missing)} not found; `sudo make deps` installs them", file=sys.stderr)
        return 1
    binaries = {"go": args.wireguard_go, "go-debian": args.debian_wireguard_go}
    wanted = {kind for case in args.case_list for kind in (case.a, case.b) if kind in GO_KINDS}
    absent = [f"{kind}: {binaries[kind]}" for kind in sorted(wanted) if not _executable(binaries[kind])]
    if absent:
        print(
            f"throughput: no wireguard-go at {'; '.join(absent)} (upstream: put the shared material beside "
            "the checkout or pass --wireguard-go; Debian's: `sudo make deps`, or --debian-wireguard-go)",
            file=sys.stderr,
        )
        return 1
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine({"upstream": binaries["go"], "debian": binaries["go-debian"]}),
        "settings": {
            "rounds": args.rounds,
            "seconds": args.seconds,
            "quick": args.quick,
            "cases": [c.key for c in args.case_list],
            "reference": REFERENCE,
            "udp_payloads": list(UDP_PAYLOADS),
            "ping": {"count": PING_COUNT, "interval_s": PING_INTERVAL},
            "mtu": WG_MTU,
        },
        "load_average_start": load_average(),
    }
    if args.micro:
        say("micro-benchmark (benchmarks/micro.py) ...")
        report["micro"] = run_micro(args.micro_rounds)
    raw: dict[str, list[dict[str, Any]]] = {c.key: [] for c in args.case_list}
    bench = Bench(args.seconds, report["settings"]["ping"]["count"], binaries)
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    failure, status, problems = "", 0, []
    started = time.monotonic()
    try:
        try:
            bench.make_network()
            run_rounds(bench, args.case_list, args.rounds, raw)
        finally:
            problems = cleanup_uninterrupted(bench, say)
    except LabFailed as error:
        failure, status = str(error), 1
    except KeyboardInterrupt:
        failure, status = "interrupted; partial results", 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    report["load_average_end"] = load_average()
    report["duration_s"] = round(time.monotonic() - started)
    report["complete"] = not failure
    summary = summarize(raw)
    report["cases"] = {
        key: {"label": c.label, **summary[key]} for c in args.case_list if (key := c.key) in summary
    }
    report["raw"] = raw
    report["notes"] = notes(args.case_list, raw)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(render(report, args.markdown))
    say(
        f"results in {args.json}; {report['duration_s']} s; load average {report['load_average_start']} -> "
        f"{report['load_average_end']}"
    )
    for problem in problems:
        print(f"throughput: cleanup: {problem}", file=sys.stderr)
    if failure:
        print(f"throughput: {failure}", file=sys.stderr)
    return status or (1 if problems else 0)


def _executable(path: Path | None) -> bool:
    return path is not None and path.is_file() and os.access(path, os.X_OK)


def data_path_note(case: Case, values: Mapping[str, Any]) -> str | None:
    """Whether the pywg processes of a round ran the data path the case is named for.

    The engine logs `data path: ...` when it starts (C hot path, or pure Python and why); an engine
    that does not is judged by whether it mapped pywg.native._hotpath at all.
    """
    wanted = {"a": case.a, "b": case.b}
    for label, path in values.get("data_path", {}).items():
        kind = wanted[label]
        if path is None:
            if kind == "pywg-c" and values.get("hotpath_loaded", {}).get(label) is False:
                return f"pywg ({label}) never loaded pywg.native._hotpath, so it ran without the C path"
        elif kind == "pywg-c" and path.startswith("pure Python"):
            return f"pywg ({label}) ran the {path}"
        elif kind == "pywg-py" and not path.startswith("pure Python"):
            return f"pywg ({label}) ran {path} despite PYWG_NO_EXT=1"
    return None


def notes(cases: Sequence[Case], raw: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """What a reader of the table must know: a C-path case that ran without the C path, say."""
    found = []
    for case in cases:
        for values in raw[case.key]:
            note = data_path_note(case, values)
            if note:
                found.append(f"{case.label}, round {values['round']}: {note}")
    return found


if __name__ == "__main__":
    sys.exit(main())
