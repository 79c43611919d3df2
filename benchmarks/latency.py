"""The latency part of benchmarks/throughput.py alone, with pywg from other checkouts in the same run.

Not a test: `sudo python3 benchmarks/latency.py [--rounds N] [--checkout NAME=PATH ...]`. Per case
and round, as throughput.py does: a tunnel between two namespaces, the CPU of an idle tunnel, then
200 pings a -> b 10 ms apart; the median RTT, its p90 and the CPU both tunnel processes spent per
ping, from /proc/PID/schedstat (nanoseconds, where throughput.py's utime + stime counts 10 ms
ticks). Cases: wireguard-go 2025 <-> itself, pywg <-> pywg (C path) of this checkout, and the same
of each `--checkout` (e.g. `--checkout main=/work/main`: a before and an after in one run).
Rounds interleave the cases; the report gives each case's medians over the rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import throughput as bench_module
from throughput import PING_COUNT, SETTLE, Bench, Side

from pywg.runtime.lab import child_env, cleanup_uninterrupted, upstream_wireguard_go

IDLE_SECONDS = 2.0


def schedstat_ns(pid: int) -> int:
    """CPU time all the process's threads have run, in ns (of threads still there)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total


class LatencyBench(Bench):
    """throughput.py's lab; pywg started from `checkouts[name]` for case `pywg-c@name`."""

    def __init__(self, checkouts: dict[str, Path]) -> None:
        super().__init__(1, PING_COUNT, {"go": upstream_wireguard_go()})
        self.checkouts = checkouts

    def launch_pywg(self, side: Side, kind: str) -> Any:
        base, _, name = kind.partition("@")
        if not name:
            return super().launch_pywg(side, base)
        extra = {"PYTHONPATH": str(self.checkouts[name])}
        original = bench_module.child_env
        bench_module.child_env = lambda _extra=None, drop=(): child_env(extra, drop)
        try:
            return super().launch_pywg(side, base)
        finally:
            bench_module.child_env = original

    def measure(self, kind: str) -> dict[str, float]:
        a, b = self.sides["a"], self.sides["b"]
        try:
            self.start(kind, a)
            self.start(kind, b)
            self.wait_for_handshake(a, b.inner[0])
            self.wait_for_handshake(b, a.inner[0])
            time.sleep(SETTLE)
            before, started = self.cpu_of_engines(), time.monotonic()
            time.sleep(IDLE_SECONDS)
            idle = 100 * (self.cpu_of_engines() - before) / (time.monotonic() - started)
            cpu_before = sum(schedstat_ns(e.pid) for e in self.engines)
            times = self.ping_ms(a, b.inner[0])
            cpu = sum(schedstat_ns(e.pid) for e in self.engines) - cpu_before
        finally:
            for engine in list(self.engines):
                self.stop(engine)
        return {
            "rtt_ms": statistics.median(times),
            "rtt_p90_ms": statistics.quantiles(times, n=10)[-1],
            "cpu_us_per_ping": cpu / 1000 / len(times),
            "idle_cpu_pct": idle,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--checkout", action="append", default=[], metavar="NAME=PATH")
    args = parser.parse_args()
    checkouts = {name: Path(path) for name, _, path in (c.partition("=") for c in args.checkout)}
    kinds = ["go", "pywg-c", *(f"pywg-c@{name}" for name in checkouts)]
    bench = LatencyBench(checkouts)
    results: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    load = Path("/proc/loadavg").read_text().split()[:3]
    try:
        bench.make_network()
        for number in range(1, args.rounds + 1):
            for kind in kinds:
                results[kind].append(bench.measure(kind))
                print(f"round {number}: {kind} {results[kind][-1]}", file=sys.stderr, flush=True)
    finally:
        cleanup_uninterrupted(bench, lambda text: print(text, file=sys.stderr))
    print(f"load average {' '.join(load)} -> {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    reference = statistics.median(r["rtt_ms"] for r in results["go"])
    for kind, rounds in results.items():
        median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        print(
            f"{kind:24} RTT {median['rtt_ms']:.3f} ms ({median['rtt_ms'] / reference:.2f}×)"
            f"  p90 {median['rtt_p90_ms']:.3f} ms  CPU {median['cpu_us_per_ping']:.0f} µs per ping"
            f"  idle CPU {median['idle_cpu_pct']:.2f} %"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
