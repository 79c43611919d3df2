"""Session checks for the whole suite.

Leftovers: a run must leave nothing in the temporary directory. The names pywg and its tests give
there all start with "pywg" (`pywgt-<owner>-*` for the test hosts, `pywg-cni-tls-*`, the demo's
`pywgdemo-*`, ...). After the last fixture is torn down, what is new since the session started
fails the run: entries tagged with this session's owner tag always, untagged entries when no other
pytest session ran beside this one (another run's entries are not ours to judge; its own check
reports them).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.support.topology import OWNER, tag_of

_AT_START = pytest.StashKey[tuple[set[str], set[int]]]()
_LEFTOVERS = pytest.StashKey[list[str]]()


def _entries() -> set[str]:
    return {path.name for path in Path(tempfile.gettempdir()).glob("pywg*")}


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        parents[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    return parents


def _other_sessions() -> set[int]:
    """Pids of pytest processes other than this one and its descendants."""
    parents = _parents()
    me = os.getpid()

    def ours(pid: int) -> bool:
        while pid > 1:
            if pid == me:
                return True
            pid = parents.get(pid, 0)
        return False

    found = set()
    for pid in parents:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(os.path.basename(arg) in ("pytest", "py.test") for arg in argv[:3]) and not ours(pid):
            found.add(pid)
    return found


def pytest_sessionstart(session: pytest.Session) -> None:
    session.stash[_AT_START] = (_entries(), _other_sessions())


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    before, others = session.stash[_AT_START]
    new = sorted(_entries() - before)
    alone = not others and not _other_sessions()
    leftovers = [name for name in new if tag_of(name) == OWNER or (alone and tag_of(name) is None)]
    session.config.stash[_LEFTOVERS] = leftovers
    if leftovers and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    leftovers = terminalreporter.config.stash.get(_LEFTOVERS, None)
    if leftovers:
        where = tempfile.gettempdir()
        terminalreporter.section("leftovers", sep="=", red=True, bold=True)
        terminalreporter.write_line(f"this run left in {where}: " + ", ".join(leftovers))
