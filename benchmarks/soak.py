"""A real-time soak: two pywg engines, traffic both ways, for ten minutes or more (issue #6).

Not a test: `sudo make soak`, or `sudo python3 benchmarks/soak.py [--minutes M] [--rate PPS]
[--interval S] [--json PATH]`. benchmarks/README.md explains the figures.

Two fresh namespaces `pwsoak-<tag>-a` and `-b` joined by a veth pair, one `pywg up --foreground` in
each (C hot path allowed), one peer each. A paced UDP stream runs through the tunnel in both
directions (--rate datagrams per second each way, each carrying its sequence number and send time),
so REKEY_AFTER_TIME (120 s) rekeys happen on their own, about five in ten minutes. Every --interval
seconds each engine is sampled: RSS, open file descriptors (/proc/PID/fd), CPU time, and over its
UAPI socket the session indices and keypairs it holds and its drop counters (`stats=1`) and the
peer's last handshake (`get=1`; a new value is a handshake). At the end: loss, duplicates, reordering
and one-way delay per direction, overall and for datagrams sent within REKEY_WINDOW seconds of a
handshake; per engine the growth of RSS and file descriptors after WARMUP seconds, and the largest
index and keypair counts. The verdict is "flat" when, after warm-up, the file descriptors never change,
RSS grows by at most RSS_GROWTH_BOUND_MIB, no engine ever holds more than MAX_INDICES indices, and no
datagram is lost outside the rekey windows; the exit status is 0 only then.

Everything made (namespaces, processes, UAPI sockets, the 0700 temporary directory with the 0600
configs) is removed at the end, also after a failure, Ctrl-C or SIGTERM (pywg/runtime/lab.py).
Progress goes to stderr, the report to stdout, the JSON (samples included) to --json.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import datetime
import json
import os
import selectors
import signal
import socket
import statistics
import struct
import sys
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from throughput import load_average, machine

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
    raise_interrupt,
    status_kb,
    write_secret,
)
from pywg.runtime.netns import in_netns
from pywg.runtime.uapi_server import query

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "soak.json"
UNDERLAY = {"a": "192.168.79.1", "b": "192.168.79.2"}
INNER = {"a": ("10.79.0.1",), "b": ("10.79.0.2",)}
WG_PORT = 51820
STREAM_PORT = 7079
WARMUP = 60.0  # seconds; growth is measured from the first sample after it
REKEY_WINDOW = 2.0  # seconds either side of a handshake
DRAIN = 2.0  # seconds to wait for datagrams in flight at the end
READY_DEADLINE = 30.0
RSS_GROWTH_BOUND_MIB = 2.0
MAX_INDICES = 4  # one peer: previous, current and next keypair, and one handshake in flight
HEADER = struct.Struct("!Qd")  # sequence number, send time (time.time())


def say(text: str = "") -> None:
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# engines and their figures


@dataclass
class Engine:
    side: Side
    name: str
    pid: int
    handshakes: list[float] = field(default_factory=list)  # wall times, seconds
    samples: list[dict[str, Any]] = field(default_factory=list)


def uapi(name: str, request: bytes) -> dict[str, str]:
    """One request on a UAPI socket; the reply's key=value lines (the last of each key)."""
    reply = query(WG_SOCKET_DIR / f"{name}.sock", request)
    pairs = dict(line.split("=", 1) for line in reply.decode().splitlines() if "=" in line)
    if pairs.get("errno") != "0":
        raise LabFailed(f"{name} refused {request.split(b'=')[0].decode()}: errno {pairs.get('errno')}")
    return pairs


def sample(engine: Engine, started: float) -> None:
    """One sample of `engine`; records a handshake when the peer's last one changed."""
    values: dict[str, Any] = {  # /proc first: a UAPI connection is an open fd of the engine's for a moment
        "t": round(time.monotonic() - started, 1),
        "rss_kb": status_kb(engine.pid, "VmRSS"),
        "fds": len(os.listdir(f"/proc/{engine.pid}/fd")),
        "cpu_s": round(cpu_seconds(engine.pid), 2),
    }
    stats = uapi(engine.name, b"stats=1\n\n")
    got = uapi(engine.name, b"get=1\n\n")
    handshake = int(got.get("last_handshake_time_sec", 0)) + int(got.get("last_handshake_time_nsec", 0)) / 1e9
    if handshake and (not engine.handshakes or handshake != engine.handshakes[-1]):
        engine.handshakes.append(handshake)
    values |= {
        "indices": int(stats["indices"]),
        "keypairs": int(stats["keypairs"]),
        "drops": {k.removeprefix("drop_"): int(v) for k, v in stats.items() if k.startswith("drop_")},
        "handshakes": len(engine.handshakes),
    }
    engine.samples.append(values)


class SoakLab(Lab):
    def __init__(self) -> None:
        super().__init__("pwsoak", UNDERLAY, INNER)

    def start_engine(self, side: Side) -> Engine:
        assert self.workdir is not None
        peer = self.peer_of(side)
        name = f"soak{self.tag}{side.label}"
        self.names.append(name)
        config = {
            "address": [f"{side.inner[0]}/24"],
            "privateKey": encode_key(side.private_key),
            "listenPort": WG_PORT,
            "peers": [
                {
                    "endpoint": f"{peer.underlay}:{WG_PORT}",
                    "publicKey": encode_key(peer.public_key),
                    "allowedIPs": [f"{peer.inner[0]}/32"],
                }
            ],
        }
        path = write_secret(self.workdir / f"{name}.json", json.dumps(config))
        argv = [sys.executable, "-m", "pywg", "up", str(path), "--name", name, "--interface", name]
        log = self.workdir / f"{name}.log"
        process = self.spawn(side, [*argv, "--foreground"], log, child_env(drop=["PYWG_NO_EXT"]))
        deadline = time.monotonic() + READY_DEADLINE
        while not ready(side, name):
            if process.poll() is not None or time.monotonic() > deadline:
                raise LabFailed(f"pywg up {name} did not come up: {log.read_text(errors='replace')[-300:]}")
            time.sleep(0.05)
        return Engine(side, name, process.pid)


def ready(side: Side, name: str) -> bool:
    link = attempt(["ip", "-n", side.netns, "link", "show", "dev", name], timeout=5)
    return (WG_SOCKET_DIR / f"{name}.sock").exists() and link is not None and link.returncode == 0


# --------------------------------------------------------------------------------------------
# the stream


@dataclass
class Direction:
    """Datagrams from one side's stream socket to the other's."""

    label: str
    sender: socket.socket
    receiver: socket.socket
    sent_at: array[float] = field(default_factory=lambda: array("d"))  # by sequence number
    delay_ms: array[float] = field(default_factory=lambda: array("d"))  # by sequence number; -1: not seen
    received: int = 0
    duplicates: int = 0
    reordered: int = 0
    highest: int = -1

    def send(self, padding: bytes) -> None:
        now = time.time()
        seq = len(self.sent_at)
        self.sent_at.append(now)
        with contextlib.suppress(BlockingIOError):  # counted as lost: it never left
            self.sender.send(HEADER.pack(seq, now) + padding)

    def receive(self) -> None:
        while True:
            try:
                data = self.receiver.recv(65536)
            except BlockingIOError:
                return
            arrived = time.time()
            seq, sent = HEADER.unpack_from(data)
            if seq >= len(self.delay_ms):
                self.delay_ms.extend([-1.0] * (seq + 1 - len(self.delay_ms)))
            if self.delay_ms[seq] >= 0:
                self.duplicates += 1
                continue
            self.delay_ms[seq] = max(0.0, (arrived - sent) * 1000)
            self.received += 1
            if seq < self.highest:
                self.reordered += 1
            self.highest = max(self.highest, seq)


def stream_socket(side: Side) -> socket.socket:
    with in_netns(side.netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((side.inner[0], STREAM_PORT))
    sock.setblocking(False)
    return sock


def open_stream(lab: SoakLab) -> list[Direction]:
    a, b = lab.sides["a"], lab.sides["b"]
    sockets = {a.label: stream_socket(a), b.label: stream_socket(b)}
    sockets["a"].connect((b.inner[0], STREAM_PORT))
    sockets["b"].connect((a.inner[0], STREAM_PORT))
    return [Direction("a→b", sockets["a"], sockets["b"]), Direction("b→a", sockets["b"], sockets["a"])]


def wait_for_tunnel(probes: Sequence[Direction]) -> list[Direction]:
    """Probe until each direction has delivered, one direction after the other (so the first handshake
    is not a race of two initiations); fresh directions, with the probes not counted."""
    deadline = time.monotonic() + READY_DEADLINE
    for direction in probes:
        while not direction.received:
            if time.monotonic() > deadline:
                raise LabFailed(f"no datagram through the tunnel within {READY_DEADLINE:.0f} s")
            direction.send(b"")
            time.sleep(0.2)
            direction.receive()
    time.sleep(0.5)
    for direction in probes:
        direction.receive()  # late probes, so the stream starts on empty sockets
    return [Direction(d.label, d.sender, d.receiver) for d in probes]


# --------------------------------------------------------------------------------------------
# the run


def run_soak(lab: SoakLab, args: argparse.Namespace) -> tuple[list[Engine], list[Direction]]:
    lab.make_network()
    engines = [lab.start_engine(side) for side in lab.sides.values()]
    directions = wait_for_tunnel(open_stream(lab))
    say(f"tunnel up: {args.minutes:g} min, {args.rate:g}/s each way, a sample every {args.interval:g} s")
    padding = bytes(max(0, args.size - HEADER.size))
    selector = selectors.DefaultSelector()
    for direction in directions:
        selector.register(direction.receiver, selectors.EVENT_READ, direction)
    started = time.monotonic()
    end = started + args.minutes * 60
    next_send = next_sample = started
    while (now := time.monotonic()) < end + DRAIN:
        wake = min(next_send if now < end else end + DRAIN, next_sample)
        for key, _ in selector.select(max(0.0, wake - now)):
            key.data.receive()
        now = time.monotonic()
        while next_send <= now < end:
            for direction in directions:
                direction.send(padding)
            next_send += 1 / args.rate
        if next_sample <= now:
            for engine in engines:
                sample(engine, started)
            say(progress(engines, directions))
            next_sample += args.interval
    selector.close()
    for direction in directions:
        direction.sender.close()  # each socket sends for one direction
    return engines, directions


def progress(engines: Sequence[Engine], directions: Sequence[Direction]) -> str:
    last = {e.side.label: e.samples[-1] for e in engines}
    rss = " ".join(f"{label} {s['rss_kb'] / 1024:.1f}" for label, s in last.items())
    indices = " ".join(f"{label} {s['indices']}" for label, s in last.items())
    return (
        f"  t={last['a']['t']:>6.0f} s  RSS MiB {rss}  indices {indices}  "
        f"handshakes {max(len(e.handshakes) for e in engines)}  sent {len(directions[0].sent_at)}/direction"
    )


# --------------------------------------------------------------------------------------------
# figures


def near(times: Sequence[float], t: float, window: float) -> bool:
    """Whether sorted `times` has one within `window` of `t`."""
    i = bisect.bisect_left(times, t - window)
    return i < len(times) and times[i] <= t + window


def percentile(values: Sequence[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 3)


def direction_figures(direction: Direction, handshakes: Sequence[float]) -> dict[str, Any]:
    """Loss and delay, overall and for datagrams sent within REKEY_WINDOW of a handshake."""
    delay = direction.delay_ms.tolist()
    delay += [-1.0] * (len(direction.sent_at) - len(delay))
    near_rekey = [near(handshakes, t, REKEY_WINDOW) for t in direction.sent_at]
    lost = [close for close, d in zip(near_rekey, delay, strict=True) if d < 0]
    sent = len(direction.sent_at)
    return {
        "sent": sent,
        "received": direction.received,
        "lost": len(lost),
        "lost_percent": round(100 * len(lost) / sent, 4) if sent else None,
        "sent_near_rekey": sum(near_rekey),
        "lost_near_rekey": sum(lost),
        "lost_elsewhere": len(lost) - sum(lost),
        "duplicates": direction.duplicates,
        "reordered": direction.reordered,
        "delay_ms": spread([d for d in delay if d >= 0]),
        "delay_near_rekey_ms": spread(
            [d for close, d in zip(near_rekey, delay, strict=True) if close and d >= 0]
        ),
    }


def spread(values: Sequence[float]) -> dict[str, float | None]:
    return {"p50": percentile(values, 50), "p99": percentile(values, 99), "max": percentile(values, 100)}


def engine_figures(engine: Engine) -> dict[str, Any]:
    after = [s for s in engine.samples if s["t"] >= WARMUP] or engine.samples[-1:]
    minute = max(1, int(60 / max(1.0, after[1]["t"] - after[0]["t"]))) if len(after) > 1 else 1
    early = statistics.median(s["rss_kb"] for s in after[:minute]) / 1024
    late = statistics.median(s["rss_kb"] for s in after[-minute:]) / 1024
    last = engine.samples[-1]
    return {
        "name": engine.name,
        "handshakes": len(engine.handshakes),
        "rss_mib_after_warmup": round(early, 2),
        "rss_mib_at_end": round(late, 2),
        "rss_growth_mib": round(late - early, 2),
        "rss_max_mib": round(max(s["rss_kb"] for s in engine.samples) / 1024, 2),
        "fds": sorted({s["fds"] for s in after}),
        "indices_max": max(s["indices"] for s in engine.samples),
        "keypairs_max": max(s["keypairs"] for s in engine.samples),
        "cpu_s": last["cpu_s"],
        "drops": last["drops"],
    }


def verdict(engines: dict[str, dict[str, Any]], directions: dict[str, dict[str, Any]]) -> list[str]:
    """What is not flat; empty when everything is."""
    problems = []
    for label, e in engines.items():
        if len(e["fds"]) > 1:
            problems.append(f"{label}: open file descriptors changed after warm-up: {e['fds']}")
        if e["rss_growth_mib"] > RSS_GROWTH_BOUND_MIB:
            problems.append(f"{label}: RSS grew by {e['rss_growth_mib']} MiB after warm-up")
        if e["indices_max"] > MAX_INDICES:
            problems.append(f"{label}: {e['indices_max']} session indices at once")
    for label, d in directions.items():
        if d["lost_elsewhere"]:
            problems.append(f"{label}: {d['lost_elsewhere']} datagrams lost outside the rekey windows")
    return problems


def render(report: dict[str, Any]) -> str:
    settings = report["settings"]
    lines = [
        f"pywg soak, {report['date']}: {settings['minutes']:g} min, {settings['rate']:g} datagrams/s "
        f"of {settings['size']} B each way; load average {report['load_average_start']} -> "
        f"{report['load_average_end']}",
        "",
        "engine  handshakes  RSS MiB warm→end (max)  fds  indices max  keypairs max  CPU s  drops",
    ]
    for label, e in report["engines"].items():
        lines.append(
            f"{label:<7} {e['handshakes']:>10}  {e['rss_mib_after_warmup']:>6} → {e['rss_mib_at_end']} "
            f"({e['rss_max_mib']})  {','.join(map(str, e['fds'])):>4}  {e['indices_max']:>11}  "
            f"{e['keypairs_max']:>12}  {e['cpu_s']:>5}  {e['drops'] or '-'}"
        )
    lines += [
        "",
        "direction  sent  lost (near rekey / elsewhere)  dup  reordered  delay ms p50/p99/max "
        "(sent near a rekey)",
    ]
    for label, d in report["directions"].items():
        delay, close = d["delay_ms"], d["delay_near_rekey_ms"]
        lines.append(
            f"{label:<9} {d['sent']:>6}  {d['lost']} ({d['lost_near_rekey']} / {d['lost_elsewhere']})  "
            f"{d['duplicates']}  {d['reordered']}  {delay['p50']}/{delay['p99']}/{delay['max']} "
            f"({close['p50']}/{close['p99']}/{close['max']})"
        )
    problems = report["not_flat"]
    lines += ["", "flat: yes" if not problems else "flat: NO\n  " + "\n  ".join(problems)]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A real-time soak of two pywg engines with traffic.")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the run (default 10)")
    parser.add_argument("--rate", type=float, default=200.0, help="datagrams per second each way (200)")
    parser.add_argument("--size", type=int, default=256, help="datagram payload bytes (256)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples (5)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the results")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0 or args.interval <= 0 or args.size < HEADER.size:
        parser.error(f"--minutes, --rate and --interval must be positive, --size at least {HEADER.size}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("soak: needs root for network namespaces (sudo make soak)", file=sys.stderr)
        return 1
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {k: getattr(args, k) for k in ("minutes", "rate", "size", "interval")},
        "load_average_start": load_average(),
    }
    report["settings"] |= {"warmup_s": WARMUP, "rekey_window_s": REKEY_WINDOW}
    lab = SoakLab()
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        try:
            engines, directions = run_soak(lab, args)
        finally:
            problems = cleanup_uninterrupted(lab, say)
    except LabFailed as error:
        print(f"soak: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("soak: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    handshakes = sorted(t for e in engines for t in e.handshakes)
    report["load_average_end"] = load_average()
    report["engines"] = {e.side.label: engine_figures(e) for e in engines}
    report["directions"] = {d.label: direction_figures(d, handshakes) for d in directions}
    report["not_flat"] = verdict(report["engines"], report["directions"])
    report["handshake_times"] = {e.side.label: e.handshakes for e in engines}
    report["samples"] = {e.side.label: e.samples for e in engines}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(render(report))
    say(f"results in {args.json}")
    for problem in problems:
        print(f"soak: cleanup: {problem}", file=sys.stderr)
    return 1 if report["not_flat"] or problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
