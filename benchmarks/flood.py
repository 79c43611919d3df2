"""A handshake flood against a live pywg engine, and what the legitimate tunnel loses meanwhile.

Not a test: `python3 benchmarks/flood.py [--seconds S] [--rehandshake S] [--attackers N] [--rate R]
[--json PATH]` as root. benchmarks/README.md explains the figures; SECURITY.md quotes them.

The world is tests/test_hostile.py's: `pywg up` (host `engine`) holds a tunnel with wireguard-go (host
`legit`); an attacker namespace with 254 addresses floods the engine's port with initiations that carry
a valid MAC1, from two sockets per address, as fast as N Python processes (tests/support/attacker.py) send (or
R a second in all). Two floods run one after the other:

    mac1      cookie replies ignored: the engine answers every initiation it reads with a cookie reply
    cookies   cookie replies answered: the attacker's initiations carry a valid MAC2, so each address
              gets its 20 handshakes a second through the rate limit, each costing a Diffie-Hellman

During each: the legitimate peer pings through the tunnel every 10 ms for S seconds (loss and RTT,
against a run before the flood), then restarts, losing its session, and the time to its next handshake
is measured (at most --rehandshake seconds). Afterwards: what the attacker sent and received, the
engine's drops by reason (its `stats=1` UAPI request), the kernel's UDP receive-buffer drops in the
engine's namespace, the engine's CPU time and its peak RSS (VmHWM). The JSON (default
benchmarks/results/flood.json) holds it all; a summary goes to stdout.

Everything runs in namespaces the test helpers make and remove (tests/support/topology.py), also on failure.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.topology import Topology  # noqa: E402
from tests.test_hostile import (  # noqa: E402 (after the path is set)
    ATTACKER_SOURCES,
    INNER_ENGINE,
    World,
    build_world,
    delta,
    end_flood,
    peak_rss_mb,
    ping_stream,
    restart_legit,
    start_flood,
)

DEFAULT_JSON = ROOT / "benchmarks" / "results" / "flood.json"
PING_INTERVAL = 0.01
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MESSAGE_NAMES = {1: "initiation", 2: "response", 3: "cookie_reply"}


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def kernel_udp(live: World) -> dict[str, int]:
    """The UDP counters of the engine's namespace (/proc/net/snmp)."""
    snmp = live.engine_host.run(["cat", "/proc/net/snmp"]).stdout
    names, values = (line.split()[1:] for line in snmp.splitlines() if line.startswith("Udp:"))
    return {name: int(value) for name, value in zip(names, values, strict=True)}


def start_floods(live: World, attackers: int, seconds: float, cookies: bool, rate: float = 0.0) -> list[Any]:
    """`attackers` flood processes, each with its share of the attacker's addresses."""
    return [
        start_flood(live, seconds, cookies, rate / attackers, ATTACKER_SOURCES[i::attackers])
        for i in range(attackers)
    ]


def summed(reports: Sequence[dict[str, float]]) -> dict[str, float]:
    total = {key: sum(report[key] for report in reports) for key in reports[0]}
    total["seconds"] = max(report["seconds"] for report in reports)
    return total


def flood_run(live: World, args: argparse.Namespace, cookies: bool) -> dict[str, Any]:
    """One flood: pings, then a restart of the legitimate peer, then the figures."""
    pid = live.engine.pid or 0
    assert live.legit_host.ping(INNER_ENGINE, count=1, timeout=30), "the tunnel is down"
    _, rtt_before = ping_stream(live.legit_host, 200, PING_INTERVAL)
    drops, udp, cpu = live.drops(), kernel_udp(live), cpu_seconds(pid)
    floods = start_floods(live, args.attackers, args.seconds + args.rehandshake + 30, cookies, args.rate)
    started = time.monotonic()
    time.sleep(2.0)
    loss, rtt_during = (None, None)
    if args.seconds:
        loss, rtt_during = ping_stream(live.legit_host, int(args.seconds / PING_INTERVAL), PING_INTERVAL)
    took, kinds = restart_legit(live, args.rehandshake)
    thrown = summed([end_flood(flood) for flood in floods])
    elapsed = time.monotonic() - started
    after_udp = kernel_udp(live)
    return {
        "attacker": thrown,
        "rate_per_s": round(thrown["sent"] / thrown["seconds"]),
        "engine_drops": delta(drops, live.drops()),
        "kernel_receive_buffer_drops": after_udp["RcvbufErrors"] - udp["RcvbufErrors"],
        "engine_cpu_s": round(cpu_seconds(pid) - cpu, 2),
        "engine_cpu_share": round((cpu_seconds(pid) - cpu) / elapsed, 2),
        "legit_loss": loss,
        "legit_rtt_ms_before": rtt_before,
        "legit_rtt_ms_during": rtt_during,
        "rehandshake_s": None if took is None else round(took, 1),
        # What reached the restarted peer: a cookie reply then a response is the cookie path; an
        # initiation is the engine's own, 15 s after it last heard from the peer (REKEY_TIMEOUT +
        # KEEPALIVE_TIMEOUT), which the peer answers.
        "rehandshake_received": {name: kinds.count(kind) for kind, name in MESSAGE_NAMES.items()},
        "engine_peak_rss_mb": round(peak_rss_mb(pid), 1),
    }


def machine() -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def summary(report: dict[str, Any]) -> str:
    lines = []
    for name, run in report["runs"].items():
        lines.append(
            f"{name}: {run['attacker']['sent']} initiations in {run['attacker']['seconds']} s"
            f" ({run['rate_per_s']}/s); engine drops {run['engine_drops']};"
            f" kernel receive-buffer drops {run['kernel_receive_buffer_drops']};"
            f" engine CPU {run['engine_cpu_share']:.0%}; legit loss {run['legit_loss']},"
            f" RTT {run['legit_rtt_ms_before']} -> {run['legit_rtt_ms_during']} ms;"
            f" re-handshake {run['rehandshake_s']} s (the peer received {run['rehandshake_received']});"
            f" peak RSS {run['engine_peak_rss_mb']} MB"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="pings under each flood (default 30)")
    parser.add_argument("--rehandshake", type=float, default=60.0, help="wait for the new handshake (60)")
    parser.add_argument("--attackers", type=int, default=1, help="flood processes (default 1)")
    parser.add_argument("--rate", type=float, default=0.0, help="initiations a second in all (0: flat out)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report: dict[str, Any] = {"machine": machine(), "settings": vars(args) | {"json": str(args.json)}}
    report["runs"] = {}
    with Topology() as topology:
        live = build_world(topology)
        live.legit.start()
        for name, cookies in (("mac1", False), ("cookies", True)):
            print(f"flood: {name} ...", file=sys.stderr)
            report["runs"][name] = flood_run(live, args, cookies)
        report["engine_alive"] = live.engine.running
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
