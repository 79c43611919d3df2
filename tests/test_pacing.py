"""Large configs take turns in the node agent (cni/pacing.py), on a clock the test sets."""

from __future__ import annotations

import argparse
import asyncio
import threading

import pytest

from cni import pacing, policy
from cni.pacing import LargeConfigLane


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """What the lane waits, instead of waiting it."""
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)

    monkeypatch.setattr(pacing.asyncio, "sleep", sleep)
    return delays


def test_small_configs_never_wait(slept: list[float]) -> None:
    clock = Clock()
    lane = LargeConfigLane(threshold=1000, share=0.25, clock=clock)

    async def main() -> None:
        async with lane.turn(5000):
            clock.now += 2.0
        async with lane.turn(999):  # right after 2 s of large work: still no wait
            pass

    asyncio.run(main())
    assert slept == []
    assert lane.next_turn == pytest.approx(102.0 + 6.0)


def test_a_large_config_after_another_waits_for_the_share(slept: list[float]) -> None:
    clock = Clock()
    lane = LargeConfigLane(threshold=1000, share=0.25, clock=clock)

    async def main() -> None:
        async with lane.turn(1000):  # the first after a quiet spell starts at once
            clock.now += 0.3
        clock.now += 0.1
        async with lane.turn(1000):  # 0.3 s of work at a quarter of the time: 0.9 s, 0.1 s gone
            clock.now += 0.5

    asyncio.run(main())
    assert slept == [pytest.approx(0.8)]


def test_large_configs_take_turns(slept: list[float]) -> None:
    lane = LargeConfigLane(threshold=10, share=1.0)
    inside: list[int] = []
    most: list[int] = []

    async def one() -> None:
        async with lane.turn(10):
            inside.append(1)
            most.append(len(inside))
            await asyncio.sleep(0)  # the fixture's: a chance for the others to run
            await asyncio.get_running_loop().run_in_executor(None, lambda: None)
            inside.pop()

    async def main() -> None:
        await asyncio.gather(*(one() for _ in range(5)))

    asyncio.run(main())
    assert max(most) == 1


def test_a_thread_holds_the_lane_against_the_loop() -> None:
    """The plugin run inside the agent holds the turn from its own thread, from parse to set-up."""
    lane = LargeConfigLane(threshold=10, share=1.0)
    order: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        held, done = threading.Event(), threading.Event()

        def plugin() -> None:
            with lane.turn_from_thread(10, loop):
                order.append("plugin in")
                held.set()
                done.wait(5)
                order.append("plugin out")

        worker = loop.run_in_executor(None, plugin)
        await loop.run_in_executor(None, held.wait, 5)
        waiting = asyncio.ensure_future(lane.turn(10).__aenter__())
        await asyncio.sleep(0.05)
        assert not waiting.done()  # the loop's large config waits for the plugin's
        done.set()
        await worker
        await asyncio.wait_for(waiting, 5)
        order.append("loop in")

    asyncio.run(main())
    assert order == ["plugin in", "plugin out", "loop in"]


def test_the_operator_sets_the_lane() -> None:
    parser = argparse.ArgumentParser()
    policy.add_arguments(parser)
    chosen = policy.from_arguments(
        parser.parse_args(["--large-config-bytes", "4096", "--large-config-share", "0.5"])
    )
    assert (chosen.large_config_bytes, chosen.large_config_share) == (4096, 0.5)
    for wrong in (
        ["--large-config-share", "0"],
        ["--large-config-share", "1.5"],
        ["--large-config-bytes", "0"],
    ):
        with pytest.raises(policy.PolicyError, match="--large-config"):
            policy.from_arguments(parser.parse_args(wrong))
