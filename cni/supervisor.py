"""The node agent's supervisor: runs `python -m cni.agent` as a child and restarts it when it dies.

    python -m cni.agent --supervise [agent options]   (which execs this module)

It imports nothing but the standard library, so the process that stays beside the worker costs a
bare interpreter's memory. A worker that exits with EXIT_ALREADY_RUNNING (another agent serves its
state dir or socket) or EXIT_USAGE is not restarted; any other death is restarted at once after a
good run, with a backoff capped at RESTART_BACKOFF_MAX after quick deaths. SIGTERM and SIGINT are
passed to the worker, which keeps its tunnels' links and state, and end the supervisor.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import subprocess
import sys
import threading
import time

EXIT_USAGE = 2
EXIT_ALREADY_RUNNING = 3  # another agent serves this state dir or socket: the supervisor gives up
RESTART_BACKOFF_MIN = 0.05
RESTART_BACKOFF_MAX = 1.0
STABLE_RUN = 1.0  # a worker that ran this long is restarted at once; quicker deaths back off

_log = logging.getLogger("pywg-cni-agent")


def restart_delay(quick_deaths: int) -> float:
    """At once after a good run or a first quick death; then 0.05 s, 0.1 s, ... up to 1 s."""
    if quick_deaths <= 1:
        return 0.0
    return min(RESTART_BACKOFF_MAX, RESTART_BACKOFF_MIN * 2 ** (quick_deaths - 2))


def supervise(worker_argv: list[str]) -> int:
    """Run the agent as a child and restart it whenever it dies, until SIGTERM or SIGINT."""
    stopping = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()
        if child is not None and child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    command = [sys.executable, "-m", "cni.agent", *worker_argv]
    quick_deaths = 0
    while not stopping.is_set():
        started = time.monotonic()
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        if stopping.is_set():  # the signal came before `child` was set
            child.terminate()
        _log.info("supervisor: agent worker %d started", child.pid)
        status = child.wait()
        if stopping.is_set():
            break
        if status in (EXIT_ALREADY_RUNNING, EXIT_USAGE):
            _log.error("agent worker exited with status %d; not restarting it", status)
            return status
        quick_deaths = 0 if time.monotonic() - started >= STABLE_RUN else quick_deaths + 1
        delay = restart_delay(quick_deaths)
        _log.warning("agent worker %d exited with status %d; restarting in %.2f s", child.pid, status, delay)
        stopping.wait(delay)
    if child is not None and child.poll() is None:
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    """`argv`: the worker's options, passed on as they are; --log-level is the supervisor's too."""
    worker_argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m cni.supervisor", add_help=False)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    options, _ = parser.parse_known_args(worker_argv)
    log_format = "%(asctime)s pywg-cni-agent[%(process)d] %(levelname)s %(message)s"
    logging.basicConfig(level=options.log_level, format=log_format)
    return supervise(worker_argv)


if __name__ == "__main__":
    raise SystemExit(main())
