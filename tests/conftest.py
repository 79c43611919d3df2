"""Session checks for the whole suite.

Leftovers: a run must leave nothing in the temporary directory. The names pywg and its tests give
there all start with "pywg" (`pywgt-<owner>-*` for the test hosts, `pywg-cni-tls-*`, the demo's
`pywgdemo-*`, ...). After the last fixture is torn down, what is new since the session started
fails the run if it carries this session's owner tag. An untagged new entry may be another
process's (a parallel run, `make deps`), so it fails the run only with CI=true, where the run has
the machine to itself; elsewhere the summary lists it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.support.topology import OWNER, tag_of

IN_CI = os.environ.get("CI") == "true"

_AT_START = pytest.StashKey[set[str]]()
_LEFTOVERS = pytest.StashKey[tuple[list[str], list[str]]]()


def _entries() -> set[str]:
    return {path.name for path in Path(tempfile.gettempdir()).glob("pywg*")}


def pytest_sessionstart(session: pytest.Session) -> None:
    session.stash[_AT_START] = _entries()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    new = sorted(_entries() - session.stash[_AT_START])
    ours = [name for name in new if tag_of(name) == OWNER]
    untagged = [name for name in new if tag_of(name) is None]
    session.config.stash[_LEFTOVERS] = (ours, untagged)
    if (ours or (IN_CI and untagged)) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    ours, untagged = terminalreporter.config.stash.get(_LEFTOVERS, ([], []))
    where = tempfile.gettempdir()
    if ours or (IN_CI and untagged):
        terminalreporter.section("leftovers", sep="=", red=True, bold=True)
        terminalreporter.write_line(f"this run left in {where}: " + ", ".join(ours + untagged))
    elif untagged:
        terminalreporter.section("new in the temporary directory", sep="=", yellow=True)
        terminalreporter.write_line(
            f"appeared in {where} during this run, from it or from another process on this machine "
            "(CI=true fails the run for them): " + ", ".join(untagged)
        )
