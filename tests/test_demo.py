"""`pywg demo` end to end: both pairs work, and nothing of the run is left behind, also after Ctrl-C.

The namespace demo needs root and wireguard-go, wg, iperf3, ping, ip and ss (CI has them). Leftovers
are looked for by the run's tag (the `<tag>` in `pywgdemo-<tag>-a`), so other runs and other tests
working on the machine at the same time do not disturb the checks.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pywg.runtime.demo import TOOLS, run_netns_demo

REPO = Path(__file__).resolve().parents[1]
DEMO = [sys.executable, "-m", "pywg", "demo"]
TIMEOUT = 120

needs_tools = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in TOOLS), reason=f"needs {', '.join(TOOLS)}"
)


def _tag(output: str) -> str:
    found = re.search(r"pywgdemo-([0-9a-f]+)-a", output)
    assert found, f"no namespace name in the output:\n{output}"
    return found.group(1)


def _leftovers(tag: str) -> list[str]:
    """Everything on the machine that still carries the run's tag."""
    found: list[str] = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    found += [f"netns {line.split()[0]}" for line in netns.splitlines() if tag in line]
    for directory in (Path("/var/run/wireguard"), Path("/run/pywg"), Path(tempfile.gettempdir())):
        if directory.is_dir():
            found += [str(path) for path in directory.iterdir() if tag in path.name]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if tag in cmdline:
            found.append(f"process {entry.name}: {cmdline}")
    return found


def _restore_sigint() -> None:
    """A child started from a shell's background job inherits SIGINT ignored; Ctrl-C must reach it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.root
@pytest.mark.slow
@needs_tools
def test_demo_pings_and_measures_both_pairs_and_leaves_nothing() -> None:
    done = subprocess.run(DEMO, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    tag = _tag(output)
    pywg_pair, go_pair = output.split("2. pywg <-> wireguard-go")
    assert "1. pywg <-> pywg" in pywg_pair
    for section in (pywg_pair, go_pair):
        pings = re.findall(r"ping (a -> b|b -> a) (\S+) +ok, reply in [\d.]+ ms", section)
        assert sorted(pings) == sorted(
            [("a -> b", "10.77.0.2"), ("a -> b", "fd77::2"), ("b -> a", "10.77.0.1"), ("b -> a", "fd77::1")]
        ), section
        rates = re.findall(r"iperf3 a -> b \(.*TCP, one stream, 3 s\): (\d+) Mbit/s", section)
        assert len(rates) == 1 and int(rates[0]) > 0, section
        assert section.count("latest handshake:") == 2, section
    assert f"wg show wggo-b-{tag}" in go_pair
    assert "Nothing is left behind." in output
    assert _leftovers(tag) == []


@pytest.mark.root
@needs_tools
def test_demo_interrupted_removes_everything() -> None:
    process = subprocess.Popen(
        DEMO,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_restore_sigint,
    )
    assert process.stdout is not None
    output = ""
    deadline = time.monotonic() + TIMEOUT
    try:
        # Interrupt once both pywg daemons run: the moment with the most to clean up.
        while "pywg up pywg-b-" not in output:
            assert time.monotonic() < deadline, output
            ready, _, _ = select.select([process.stdout], [], [], 1.0)
            if ready:
                line = process.stdout.readline()
                assert line, f"the demo ended early:\n{output}"
                output += line
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output += rest
    assert process.returncode == 130, output
    assert output.strip().splitlines()[-1].startswith("pywg demo: interrupted"), output
    assert _leftovers(_tag(output)) == []


def test_in_memory_demo_needs_no_root() -> None:
    done = subprocess.run(
        [*DEMO, "--in-memory", "--packets", "200"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "200/200 packets" in done.stdout


def test_demo_without_root_says_how_to_run_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert run_netns_demo() == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert "root" in captured.err and "--in-memory" in captured.err
