"""Leases: what a carrier outside the core may do for a peer without asking, and until when.

The C lane (pywg/native/lane.c, pywg/runtime/lane.py) carries data packets while Python
sleeps. It may seal with the current keypair and open its messages only while no rule of the core
would act on such a packet: no rekey due (REKEY_AFTER_TIME or REKEY_AFTER_MESSAGES on sending,
REKEY_ON_RECEIVE_AGE on receiving, as initiator), the keypair still valid, nothing staged before
it. Past a lease's bounds the carrier hands the packet to the core, which applies the rule. What
it did comes back through `Peer.carried_sent` and `Peer.carried_received`, which keep the books
and timers the core keeps for its own packets, at the times the carrier recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pywg.core.constants import (
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_ON_RECEIVE_AGE,
)

if TYPE_CHECKING:
    from pywg.core.keypair import Keypair
    from pywg.core.peer import Peer


@dataclass(frozen=True, slots=True)
class Lease:
    peer: Peer
    keypair: Keypair
    counter_limit: int  # seal while the keypair's counter is below this
    send_until: float  # seal before this (the device clock)
    receive_until: float  # open before this


def lease_for(peer: Peer, now: float) -> Lease | None:
    """The lease for `peer` at `now`, or None when each of its packets needs the core."""
    keypair = peer.keypairs.current
    if keypair is None or peer.endpoint is None or peer.staged:
        return None
    if not (keypair.sending_valid and keypair.receiving_valid):
        return None
    initiator = keypair.i_am_initiator
    send_until = keypair.created + (REKEY_AFTER_TIME if initiator else REJECT_AFTER_TIME)
    rekey_on_receive = initiator and not peer.sent_lastminute_handshake
    receive_until = keypair.created + (REKEY_ON_RECEIVE_AGE if rekey_on_receive else REJECT_AFTER_TIME)
    if now >= send_until and now >= receive_until:
        return None
    return Lease(peer, keypair, REKEY_AFTER_MESSAGES, send_until, receive_until)
