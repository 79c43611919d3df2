"""A peer's five timers (whitepaper §6, kernel timers.c) as deadlines on the injected clock.

The peer calls the event hooks (`data_sent`, `handshake_initiated`, ...) as
things happen; `expired(now)` hands back the timers that have fired and the
peer acts on them. Nothing here sends anything.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from pywg.core.constants import (
    KEEPALIVE_TIMEOUT,
    REKEY_TIMEOUT,
    ZERO_KEY_MATERIAL_AFTER,
)


class Timer(enum.Enum):
    RETRANSMIT_HANDSHAKE = "retransmit_handshake"
    SEND_KEEPALIVE = "send_keepalive"
    NEW_HANDSHAKE = "new_handshake"
    ZERO_KEY_MATERIAL = "zero_key_material"
    PERSISTENT_KEEPALIVE = "persistent_keepalive"


class Timers:
    """Deadlines of one peer's timers; None means not armed."""

    __slots__ = (
        "_jitter",
        "_on_armed",
        "deadlines",
        "handshake_attempts",
        "need_another_keepalive",
        "persistent_keepalive",
    )

    def __init__(
        self,
        jitter: Callable[[], float],
        persistent_keepalive: int = 0,
        on_armed: Callable[[float], None] = lambda deadline: None,
    ) -> None:
        self._jitter = jitter
        self._on_armed = on_armed  # the device's deadline heap learns every armed deadline
        self.deadlines: dict[Timer, float] = {}
        self.handshake_attempts = 0
        self.need_another_keepalive = False
        self.persistent_keepalive = persistent_keepalive

    def _arm(self, timer: Timer, deadline: float) -> None:
        if self.deadlines.get(timer) != deadline:
            self.deadlines[timer] = deadline
            self._on_armed(deadline)

    def _arm_if_idle(self, timer: Timer, deadline: float) -> None:
        if timer not in self.deadlines:
            self._arm(timer, deadline)

    def armed_at(self, deadline: float) -> bool:
        """Whether one of these timers is armed for exactly `deadline`."""
        return deadline in self.deadlines.values()

    def cancel(self, timer: Timer) -> None:
        self.deadlines.pop(timer, None)

    def pending(self, timer: Timer) -> bool:
        return timer in self.deadlines

    # Event hooks, named after the kernel's wg_timers_* functions.
    def data_sent(self, now: float) -> None:
        """Data went out: expect an answer within 15 s, else start a new handshake. The jitter is
        drawn only when the timer is armed: a draw is a getrandom call, once per batch sent."""
        if not self.pending(Timer.NEW_HANDSHAKE):
            self._arm(Timer.NEW_HANDSHAKE, now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + self._jitter())

    def data_received(self, now: float) -> None:
        """Data came in: answer with a keepalive if we have nothing to send within 10 s."""
        if self.pending(Timer.SEND_KEEPALIVE):
            self.need_another_keepalive = True
        else:
            self._arm(Timer.SEND_KEEPALIVE, now + KEEPALIVE_TIMEOUT)

    def any_authenticated_packet_sent(self) -> None:
        self.cancel(Timer.SEND_KEEPALIVE)

    def any_authenticated_packet_received(self) -> None:
        self.cancel(Timer.NEW_HANDSHAKE)

    def any_authenticated_packet_traversal(self, now: float) -> None:
        if self.persistent_keepalive:
            self._arm(Timer.PERSISTENT_KEEPALIVE, now + self.persistent_keepalive)

    def handshake_initiated(self, now: float) -> None:
        self._arm(Timer.RETRANSMIT_HANDSHAKE, now + REKEY_TIMEOUT + self._jitter())

    def handshake_complete(self) -> None:
        self.cancel(Timer.RETRANSMIT_HANDSHAKE)
        self.handshake_attempts = 0

    def session_derived(self, now: float) -> None:
        self._arm(Timer.ZERO_KEY_MATERIAL, now + ZERO_KEY_MATERIAL_AFTER)

    def handshake_given_up(self, now: float) -> None:
        self.cancel(Timer.SEND_KEEPALIVE)
        self._arm_if_idle(Timer.ZERO_KEY_MATERIAL, now + ZERO_KEY_MATERIAL_AFTER)

    def keepalive_sent_by_timer(self, now: float) -> None:
        if self.need_another_keepalive:
            self.need_another_keepalive = False
            self._arm(Timer.SEND_KEEPALIVE, now + KEEPALIVE_TIMEOUT)

    def expired(self, now: float) -> list[Timer]:
        """Disarm and return the timers due by `now`, earliest first."""
        due = sorted((d, t.value, t) for t, d in self.deadlines.items() if d <= now)
        for _, _, timer in due:
            del self.deadlines[timer]
        return [timer for _, _, timer in due]

    def stop_all(self) -> None:
        self.deadlines.clear()
