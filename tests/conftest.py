"""What the whole suite shares: markers that say what a test needs, and a check for leftovers.

Markers (registered in pyproject.toml): `root` (root, CAP_NET_ADMIN, network namespaces,
/dev/net/tun), `vm` (boots QEMU), `shared` (the real parts of the shared test material: k8s/, bin/)
and `slow` (over ~10 s). A test marked with a need this machine cannot meet is skipped, the reason
shown (tests/support/machine.py); with CI=true it fails instead, since CI must run everything.
A test using the `topology`, `real_k8s` or `real_api` fixture is marked `root` or `shared("k8s")` here
anyway.
`make check` runs what needs neither root nor a VM and is not slow.

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

from tests.support import machine
from tests.support.topology import OWNER, tag_of

IN_CI = os.environ.get("CI") == "true"

_AT_START = pytest.StashKey[set[str]]()
_LEFTOVERS = pytest.StashKey[tuple[list[str], list[str]]]()


# Fixtures that make a test need something of the machine: a test using one carries its marker even
# if nobody wrote it (the fixtures a test uses include those its fixtures use).
IMPLIED_BY_FIXTURES = {
    "topology": pytest.mark.root,
    "real_k8s": pytest.mark.shared("k8s"),
    "real_api": pytest.mark.shared("k8s"),
}


@pytest.hookimpl(tryfirst=True)  # before -m selects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, mark in IMPLIED_BY_FIXTURES.items():
            if fixture in getattr(item, "fixturenames", ()) and item.get_closest_marker(mark.name) is None:
                item.add_marker(mark)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in machine.MARKERS:
        mark = item.get_closest_marker(marker)
        if mark is None:
            continue
        reason = machine.missing(marker, *mark.args)
        if reason is None:
            continue
        if IN_CI:
            pytest.fail(f"CI=true, but this machine cannot run `{marker}` tests: {reason}", pytrace=False)
        pytest.skip(f"{marker}: {reason}")


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
