"""Session keys (whitepaper §5.4.6-§5.4.7) and the previous/current/next slots (kernel noise.c)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pywg.core.batch import Datagrams, InnerPackets, MessageRun, OpenedRun
from pywg.core.constants import REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME
from pywg.core.transport import Crypto, PythonCrypto

if TYPE_CHECKING:
    from pywg.core.peer import Peer

# The default for keypairs made without a device's crypto (tests, tools).
PYTHON_CRYPTO = PythonCrypto()


class Keypair:
    """One session: a key and counter each way, and the indices naming it.

    The ciphers and the replay window come from the device's Crypto (pywg/core/transport.py): the
    pure-Python reference by default, the C hot path when the adapter passes it. Either way the
    counters and validity flags live here and follow the same rules.
    """

    __slots__ = (
        "created",
        "i_am_initiator",
        "local_index",
        "peer",
        "receiving_key",
        "receiving_valid",
        "remote_index",
        "sending_counter",
        "sending_key",
        "sending_valid",
        "session",
    )

    def __init__(
        self,
        sending_key: bytes,
        receiving_key: bytes,
        i_am_initiator: bool,
        local_index: int,
        remote_index: int,
        created: float,
        peer: Peer,
        crypto: Crypto = PYTHON_CRYPTO,
    ) -> None:
        self.sending_key = bytearray(sending_key)
        self.receiving_key = bytearray(receiving_key)
        self.session = crypto.session(bytes(sending_key), bytes(receiving_key))
        self.i_am_initiator = i_am_initiator
        self.local_index = local_index
        self.remote_index = remote_index
        self.created = created
        self.peer = peer
        self.sending_counter = 0
        self.sending_valid = True
        self.receiving_valid = True

    def can_send(self, now: float) -> bool:
        return (
            self.sending_valid
            and now - self.created < REJECT_AFTER_TIME
            and self.sending_counter < REJECT_AFTER_MESSAGES
        )

    def can_receive(self, now: float) -> bool:
        return self.receiving_valid and now - self.created < REJECT_AFTER_TIME

    def seal_run(self, packets: InnerPackets, start: int, stop: int, mtu: int) -> MessageRun:
        """Pad and seal packets start..stop-1 of a batch as they lie, with the next counters, into
        one MessageRun.

        Returns fewer messages than packets once the counter is spent (or the key zeroed); then
        this keypair stops sending.
        """
        sealed = self.session.seal_run(packets, start, stop, self.remote_index, self.sending_counter, mtu)
        self.sending_counter += len(sealed)
        if len(sealed) < stop - start:
            self.sending_valid = False
        return sealed

    def open_run(self, datagrams: Datagrams, start: int, stop: int) -> OpenedRun:
        """Open the run start..stop-1 of a batch where it lies: AEAD, replay window, inner header
        check per message, in order (the caller checks the inner sources)."""
        return self.session.open_run(datagrams, start, stop)

    def zero(self) -> None:
        """Forget the keys: overwrite our copies and zero the ciphers (C handles included)."""
        self.sending_key[:] = bytes(len(self.sending_key))
        self.receiving_key[:] = bytes(len(self.receiving_key))
        self.session.zero()
        self.sending_valid = False
        self.receiving_valid = False


class Keypairs:
    """A peer's previous, current and next keypair with the kernel's rotation rules."""

    __slots__ = ("current", "next", "previous")

    def __init__(self) -> None:
        self.previous: Keypair | None = None
        self.current: Keypair | None = None
        self.next: Keypair | None = None

    def install(self, new: Keypair) -> list[Keypair]:
        """Add a fresh keypair; returns the keypairs it pushed out.

        An initiator uses its new keypair at once. A responder parks it in
        `next` until the initiator proves it has it by sending data with it.
        """
        dropped: list[Keypair] = []
        if new.i_am_initiator:
            if self.next is not None:
                dropped += _some(self.previous, self.current)
                self.previous, self.next = self.next, None
            else:
                dropped += _some(self.previous)
                self.previous = self.current
            self.current = new
        else:
            dropped += _some(self.next, self.previous)
            self.next = new
            self.previous = None
        return dropped

    def received_with(self, keypair: Keypair) -> tuple[bool, list[Keypair]]:
        """Data arrived under `keypair`: promote it if it was `next`.

        Returns (promoted, dropped keypairs).
        """
        if self.next is not keypair:
            return False, []
        dropped = _some(self.previous)
        self.previous, self.current, self.next = self.current, keypair, None
        return True, dropped

    def expire_current(self) -> None:
        """Stop sending with what we have, so the next packet starts a handshake."""
        for keypair in _some(self.next, self.current):
            keypair.sending_valid = False

    def clear(self) -> list[Keypair]:
        dropped = _some(self.previous, self.current, self.next)
        self.previous = self.current = self.next = None
        return dropped

    def all(self) -> list[Keypair]:
        return _some(self.previous, self.current, self.next)


def _some(*keypairs: Keypair | None) -> list[Keypair]:
    return [k for k in keypairs if k is not None]
