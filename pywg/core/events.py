"""What a device reports to its adapter: `Device.next_event()` returns one of these, oldest first.

An adapter logs them, or acts on them (the engine logs handshakes and roaming; a test waits for
one). None of them needs an answer: the device has done what the event reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pywg.core.endpoint import Endpoint

if TYPE_CHECKING:
    from pywg.core.peer import Peer


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    """A session with `peer` is ready: our initiation was answered, or the peer's first data
    message confirmed the session we answered."""

    peer: Peer


@dataclass(frozen=True, slots=True)
class HandshakeGaveUp:
    """No answer to `peer`'s initiations for REKEY_ATTEMPT_TIME: the packets waiting were dropped."""

    peer: Peer


@dataclass(frozen=True, slots=True)
class KeysZeroed:
    """`peer`'s session keys were zeroed: ZERO_KEY_MATERIAL_AFTER passed with no new session."""

    peer: Peer


@dataclass(frozen=True, slots=True)
class EndpointChanged:
    """`peer` was heard from a new address (roaming), now its `endpoint`."""

    peer: Peer
    endpoint: Endpoint


Event = HandshakeCompleted | HandshakeGaveUp | KeysZeroed | EndpointChanged
