"""The engine's one loop timer (pywg/runtime/engine.py `_arm_timer`): re-armed only for an earlier
deadline; armed too early, it wakes up, finds nothing due and re-arms for the real one."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest

from pywg.core.clock import FakeClock
from pywg.core.device import Device
from pywg.core.timers import Timer
from pywg.runtime.engine import Engine
from pywg.runtime.tun import Tun
from pywg.runtime.udp import UdpSockets
from tests.support.netsim import fixed_public


class TimerLoop:
    """A loop that only records its timers: (when, callback) of each still armed."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.armed: list[SimpleNamespace] = []
        self.made = 0

    def time(self) -> float:
        return self.clock.monotonic()

    def call_at(self, when: float, callback: Any) -> SimpleNamespace:
        self.made += 1
        handle = SimpleNamespace(when=when, callback=callback)
        handle.cancel = lambda: self.armed.remove(handle)
        self.armed.append(handle)
        return handle


@pytest.fixture
def engine() -> Iterator[tuple[Engine, TimerLoop]]:
    clock = FakeClock()
    device = Device(bytes(range(32)), clock=clock, rng=lambda n: bytes(n))
    device.add_peer(fixed_public(3))
    ours, other = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    fake = SimpleNamespace(fd=ours.fileno(), name="fake", vnet_hdr=False, offloads=0, dropped_down=0)
    tun = cast(Tun, fake)
    udp = UdpSockets(0)
    try:
        engine = Engine(device, tun, udp, "timer-test")
        loop = TimerLoop(clock)
        engine._loop = cast(Any, loop)
        yield engine, loop
    finally:
        udp.close()
        ours.close()
        other.close()


def test_a_later_deadline_keeps_the_timer_an_earlier_one_rearms_it(engine: tuple[Engine, TimerLoop]) -> None:
    engine_, loop = engine
    [peer] = engine_.device.peers.values()
    now = loop.time()
    peer.timers._arm(Timer.SEND_KEEPALIVE, now + 10)
    engine_.flush()
    assert [h.when for h in loop.armed] == [now + 10] and loop.made == 1
    for later in (11, 15, 30):  # traffic pushing the deadline on: the timer stays
        peer.timers._arm(Timer.SEND_KEEPALIVE, now + later)
        engine_.flush()
    peer.timers.cancel(Timer.SEND_KEEPALIVE)  # nothing due at all: it stays too
    engine_.flush()
    assert [h.when for h in loop.armed] == [now + 10] and loop.made == 1
    peer.timers._arm(Timer.SEND_KEEPALIVE, now + 5)  # earlier: re-armed
    engine_.flush()
    assert [h.when for h in loop.armed] == [now + 5] and loop.made == 2


def test_a_timer_armed_too_early_finds_nothing_due_and_rearms(engine: tuple[Engine, TimerLoop]) -> None:
    engine_, loop = engine
    [peer] = engine_.device.peers.values()
    deadlines, now = peer.timers.deadlines, loop.time()
    peer.timers._arm(Timer.SEND_KEEPALIVE, now + 10)
    engine_.flush()
    peer.timers._arm(Timer.SEND_KEEPALIVE, now + 25)
    engine_.flush()
    loop.clock.advance(10)
    [early] = loop.armed
    loop.armed.clear()
    early.callback()
    assert deadlines == {Timer.SEND_KEEPALIVE: now + 25}  # nothing fired
    assert [h.when for h in loop.armed] == [now + 25]
