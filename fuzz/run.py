"""Runs fuzz targets and reports libFuzzer's figures: `make fuzz` and tests/test_fuzz.py use it.

    python3 fuzz/run.py [--seconds 300] [--jobs 2] [--workdir build/fuzz] [--merge] [TARGET ...]

Each target (fuzz/fuzz_TARGET.py) starts from its corpus fuzz/corpus/TARGET, writes what it
finds to WORKDIR/TARGET/corpus (never into the repository) and crash inputs to WORKDIR/TARGET/,
its log to WORKDIR/TARGET/log. At most --jobs targets run at once. The table printed at the end
(Markdown) has, per target: duration, executions, executions per second, libFuzzer's coverage
(`cov`: edges, `ft`: features) and corpus size at the end, and the crash found, if any.
--merge then adds to fuzz/corpus/TARGET the fewest new inputs that reach the coverage edges the
corpus did not (libFuzzer -set_cover_merge=1 -use_counters=0).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
TARGETS = tuple(sorted(path.stem.removeprefix("fuzz_") for path in FUZZ.glob("fuzz_*.py")))
MAX_LEN = 8192
RSS_LIMIT_MB = 2048
# libFuzzer dictionaries (fuzz/dicts/) by target.
DICTIONARIES = {
    "cni": "json.dict",
    "config_json": "json.dict",
    "k8s_answers": "json.dict",
    "kubeconfig": "json.dict",
}
# A merge keeps the fewest inputs that reach every coverage edge (hit counts and value profiles
# aside), so the corpus in the repository stays small.
MERGE_OPTIONS = ("-set_cover_merge=1", "-use_counters=0")
_STATUS = re.compile(r"cov: (\d+) ft: (\d+) corp: (\d+)/")
_STAT = re.compile(r"^stat::(\w+):\s*(\d+)", re.MULTILINE)


@dataclass
class Figures:
    target: str
    returncode: int
    seconds: float
    executions: int
    cov: int
    ft: int
    corpus: int
    crash: str  # the crash input's file name, "" if none
    log: str

    @property
    def crashed(self) -> bool:
        return self.returncode != 0

    def row(self) -> str:
        rate = self.executions / self.seconds if self.seconds else 0
        crash = f"**{self.crash or 'exit status ' + str(self.returncode)}**" if self.crashed else "none"
        return (
            f"| {self.target} | {self.seconds:.0f} s | {self.executions:,} | {rate:,.0f} | {self.cov} "
            f"| {self.ft} | {self.corpus} | {crash} |"
        )


HEADER = (
    "| target | duration | executions | exec/s | cov | ft | corpus | crash |\n"
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
)


def command(
    script: Path, corpus: Path, workdir: Path, seconds: int, runs: int = -1, dictionary: str = ""
) -> list[str]:
    return [
        sys.executable,
        str(script),
        str(workdir / "corpus"),
        str(corpus),
        f"-max_total_time={seconds}",
        f"-runs={runs}",
        f"-max_len={MAX_LEN}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        f"-artifact_prefix={workdir}/",
        "-print_final_stats=1",
        *([f"-dict={FUZZ / 'dicts' / dictionary}"] if dictionary else []),
    ]


def run_target(target: str, workdir: Path, seconds: int, runs: int = -1, seed: int = 0) -> Figures:
    """One libFuzzer run of fuzz/fuzz_TARGET.py from fuzz/corpus/TARGET."""
    script, corpus = FUZZ / f"fuzz_{target}.py", FUZZ / "corpus" / target
    argv = command(script, corpus, workdir, seconds, runs, DICTIONARIES.get(target, ""))
    return run_command(target, workdir, argv, seed)


def run_command(target: str, workdir: Path, argv: list[str], seed: int) -> Figures:
    """Run libFuzzer's `argv`; seed 0 lets libFuzzer pick one. PYTHONHASHSEED is fixed."""
    (workdir / "corpus").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    start = time.monotonic()
    done = subprocess.run(
        [*argv, f"-seed={seed}"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
        check=False,
    )
    log = done.stdout + done.stderr
    (workdir / "log").write_text(log)
    return figures(target, done.returncode, time.monotonic() - start, log, workdir)


def figures(target: str, returncode: int, seconds: float, log: str, workdir: Path) -> Figures:
    status = _STATUS.findall(log)
    cov, ft, corpus = (int(n) for n in status[-1]) if status else (0, 0, 0)
    stats = dict(_STAT.findall(log))
    crashes = sorted(p.name for p in workdir.iterdir() if p.name.startswith(("crash-", "oom-", "timeout-")))
    executions = int(stats.get("number_of_executed_units", 0))
    return Figures(target, returncode, seconds, executions, cov, ft, corpus, ", ".join(crashes), log)


def merge(target: str, workdir: Path) -> None:
    """Keep in fuzz/corpus/TARGET what the run found that adds coverage edges.

    libFuzzer's merge runs the target again as argv[0]: the script itself, hence its #! line.
    """
    script = str(FUZZ / f"fuzz_{target}.py")
    corpus = FUZZ / "corpus" / target
    subprocess.run(
        [sys.executable, script, *MERGE_OPTIONS, f"-max_len={MAX_LEN}", str(corpus), str(workdir / "corpus")],
        cwd=workdir,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        capture_output=True,
        check=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", metavar="TARGET", help="default: all of " + ", ".join(TARGETS))
    parser.add_argument("--seconds", type=int, default=300, help="per target (default 300)")
    parser.add_argument("--jobs", type=int, default=2, help="targets at once (default 2)")
    parser.add_argument("--workdir", type=Path, default=FUZZ.parent / "build" / "fuzz")
    parser.add_argument("--merge", action="store_true", help="merge new coverage into fuzz/corpus")
    args = parser.parse_args(argv)
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown target(s) {', '.join(sorted(unknown))}; the targets are {', '.join(TARGETS)}")
    targets = args.targets or TARGETS
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda t: run_target(t, args.workdir / t, args.seconds), targets))
    print(HEADER)
    for result in results:
        print(result.row())
        if args.merge and not result.crashed:
            merge(result.target, args.workdir / result.target)
    for result in results:
        if result.crashed:
            print(f"\n{result.target} crashed; see {args.workdir / result.target / 'log'}", file=sys.stderr)
    return 1 if any(result.crashed for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
