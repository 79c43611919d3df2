"""Transport data messages (whitepaper §5.4.6): the crypto strategy the device is given, and its reference.

A `Crypto` makes one `SessionCrypto` per keypair: the sending key, the receiving key and the replay
window of that session, with batch operations so an implementation can handle a whole run in one
call: `seal_run`, `open_run`, and `zero` when the keys are done with. The device takes a Crypto
(`Device(..., crypto=...)`) and never names an implementation beyond the default, `PythonCrypto`
here: `cryptography`'s ChaCha20-Poly1305 and `ReplayWindow`. The C hot path (pywg/native/hotpath.py,
an adapter) is the other implementation; tests hold it to this one byte for byte. Each seals and
opens the batches of its own data path: lists of `bytes` here, C buffers there.

The rules both follow:
- `pad`: zeros up to a multiple of 16, never past the MTU (kernel send.c).
- sealing: counters `counter`, `counter` + 1, ...; nothing at or past REJECT_AFTER_MESSAGES.
- opening: the AEAD first; then, in order, the replay window for the messages that authenticated
  (kernel receive.c: replay state only after the AEAD); then `inner_packet` on what it accepted.
"""

from __future__ import annotations

import enum
from array import array
from collections.abc import Iterator, Sequence
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from pywg.core.batch import Datagrams, InnerPackets, MessageRun, OpenedRun, PacketList
from pywg.core.constants import (
    MESSAGE_DATA,
    MESSAGE_DATA_HEADER_SIZE,
    MESSAGE_DATA_MIN_SIZE,
    MESSAGE_PADDING_MULTIPLE,
    REJECT_AFTER_MESSAGES,
)
from pywg.core.crypto import AEAD_NONCE
from pywg.core.messages import DATA_HEADER
from pywg.core.replay import ReplayWindow


class RxStatus(enum.IntEnum):
    """What became of one received data message (pywg/native/hotpath.h WG_RX_* has the same values).

    DATA, KEEPALIVE and MALFORMED_INNER authenticated and passed the replay window.
    """

    DATA = 0  # an inner IP packet
    KEEPALIVE = 1
    MALFORMED_INNER = 2  # a plaintext that is no IPv4/IPv6 packet
    REPLAY = 3  # authenticated, but the counter is old or repeated
    AUTH_FAILED = 4
    MALFORMED = 5  # shorter than a keepalive or not type 4


# The statuses as plain ints for the per-message loops (an IntEnum member is a slower lookup).
_DATA, _KEEPALIVE, _MALFORMED_INNER, _REPLAY, _AUTH_FAILED, _MALFORMED = map(int, RxStatus)

# One opened message: its status (an RxStatus value), and for DATA the inner packet trimmed of
# padding and its source address (4 or 16 bytes); None for the others.
Opened = tuple[int, bytes | None, bytes | None]


class SessionCrypto(Protocol):
    """The keys of one keypair, each way, and its replay window. Used by one thread at a time.

    It seals and opens the batches of its own data path (`Crypto.packets` makes one of packets the
    device holds itself).
    """

    def seal_run(
        self, packets: InnerPackets, start: int, stop: int, receiver: int, counter: int, mtu: int
    ) -> MessageRun:
        """Pad and seal packets start..stop-1 of a batch with counters `counter`, `counter` + 1,
        ..., into one MessageRun.

        Stops before REJECT_AFTER_MESSAGES, so fewer messages than packets come back when the
        counters run out (or none once zeroed); the caller advances its counter by the count.
        """
        ...

    def open_run(self, datagrams: Datagrams, start: int, stop: int) -> OpenedRun:
        """Open datagrams start..stop-1 of a batch (a run of data messages) in order, through the
        replay window."""
        ...

    def zero(self) -> None:
        """Forget both keys; later seals return nothing and opens fail."""
        ...


class Crypto(Protocol):
    """Makes the SessionCrypto of each new keypair. `description` names it for logs and `pywg version`."""

    @property
    def description(self) -> str: ...

    def session(self, sending_key: bytes, receiving_key: bytes) -> SessionCrypto: ...

    def packets(self, packets: Sequence[bytes]) -> InnerPackets:
        """A batch of `packets` its sessions seal (packets staged for a handshake, keepalives)."""
        ...


def pad(packet: bytes, mtu: int) -> bytes:
    """Zero padding to a multiple of 16, never past the MTU (kernel send.c)."""
    length = len(packet)
    if not length:
        return packet
    last_unit = length % mtu if length > mtu else length
    padded = min(mtu, (last_unit + MESSAGE_PADDING_MULTIPLE - 1) & ~(MESSAGE_PADDING_MULTIPLE - 1))
    return packet + bytes(padded - last_unit) if padded > last_unit else packet


def inner_packet(plaintext: bytes) -> tuple[bytes, bytes] | None:
    """The inner packet trimmed of padding, and its source address; None if malformed."""
    length = len(plaintext)
    version = plaintext[0] >> 4
    if version == 4 and length >= 20:
        total = plaintext[2] << 8 | plaintext[3]
        if 20 <= total <= length:
            return plaintext[:total], plaintext[12:16]
    elif version == 6 and length >= 40:
        total = 40 + (plaintext[4] << 8 | plaintext[5])
        if total <= length:
            return plaintext[:total], plaintext[8:24]
    return None


def _no_key(nonce: bytes, data: memoryview, associated: None) -> bytes:
    """The decrypt of a zeroed session: nothing authenticates."""
    raise InvalidTag


class PythonSession:
    """The reference SessionCrypto: `cryptography`'s ChaCha20-Poly1305 and ReplayWindow."""

    __slots__ = ("_opener", "_sealer", "replay")

    def __init__(self, sending_key: bytes, receiving_key: bytes) -> None:
        self._sealer: ChaCha20Poly1305 | None = ChaCha20Poly1305(bytes(sending_key))
        self._opener: ChaCha20Poly1305 | None = ChaCha20Poly1305(bytes(receiving_key))
        self.replay = ReplayWindow()

    def seal_run(
        self, packets: InnerPackets, start: int, stop: int, receiver: int, counter: int, mtu: int
    ) -> MessageRun:
        if self._sealer is None or counter >= REJECT_AFTER_MESSAGES:
            return MessageRun(b"", array("I"))
        encrypt, header, nonce = self._sealer.encrypt, DATA_HEADER.pack, AEAD_NONCE.pack
        count = min(stop - start, REJECT_AFTER_MESSAGES - counter)
        # Headers and ciphertexts joined once (not each message, then the run), padding only
        # where it adds bytes: ~15 % of a 1,420-byte packet's seal in Python.
        parts: list[bytes] = []
        sizes = array("I")
        for n, packet in zip(range(counter, counter + count), packets.packets(start, stop), strict=False):
            length = len(packet)
            if length != mtu and (length & 15 or length > mtu):
                packet = pad(packet, mtu)
            sealed = encrypt(nonce(n), packet, None)
            parts += (header(MESSAGE_DATA, receiver, n), sealed)
            sizes.append(MESSAGE_DATA_HEADER_SIZE + len(sealed))
        return MessageRun(b"".join(parts), sizes)

    def open_run(self, datagrams: Datagrams, start: int, stop: int) -> PythonOpenedRun:
        # One pass records each message's result and the run's figures (a pass per figure over
        # the results cost ~0.5 us a message).
        run = PythonOpenedRun()
        results, drops = run._results, run._drops
        validate = self.replay.validate
        decrypt = _no_key if self._opener is None else self._opener.decrypt
        nonce, unpack = AEAD_NONCE.pack, DATA_HEADER.unpack_from
        accepted = accepted_bytes = 0
        first = last = -1
        data_received = False
        for position, message in enumerate(datagrams.messages(start, stop)):
            status = _MALFORMED
            if len(message) >= MESSAGE_DATA_MIN_SIZE:
                kind, _, counter = unpack(message)
                if kind == MESSAGE_DATA:
                    try:  # the ciphertext read in place, not copied
                        plaintext = decrypt(
                            nonce(counter), memoryview(message)[MESSAGE_DATA_HEADER_SIZE:], None
                        )
                    except InvalidTag:
                        status = _AUTH_FAILED
                    else:
                        status = _REPLAY if not validate(counter) else _KEEPALIVE if not plaintext else _DATA
            if status == _DATA and (inner := inner_packet(plaintext)) is not None:
                results.append((_DATA, *inner))
            else:
                if status == _DATA:
                    status = _MALFORMED_INNER
                results.append((status, None, None))
                if status != _KEEPALIVE:
                    drops[status] = drops.get(status, 0) + 1
            if status <= _MALFORMED_INNER:
                accepted += 1
                accepted_bytes += len(message)
                if first < 0:
                    first = position
                last = position
                data_received = data_received or status != _KEEPALIVE
        run.accepted, run.accepted_bytes = accepted, accepted_bytes
        run.first_accepted, run.last_accepted, run.data_received = first, last, data_received
        return run

    def zero(self) -> None:
        self._sealer = None
        self._opener = None
        self.replay.reset()


class PythonOpenedRun:
    """The OpenedRun (pywg/core/batch.py) of `PythonSession.open_run`: results kept as Python objects."""

    __slots__ = (
        "_drops",
        "_kept",
        "_results",
        "accepted",
        "accepted_bytes",
        "data_received",
        "first_accepted",
        "last_accepted",
    )

    def __init__(self) -> None:
        self._results: list[Opened] = []
        self._drops: dict[int, int] = {}  # RxStatus value -> count, for the statuses drop_counts names
        self._kept: list[bytes] = []
        self.accepted = self.accepted_bytes = 0
        self.first_accepted = self.last_accepted = -1
        self.data_received = False

    def drop_counts(self) -> Iterator[tuple[int, int]]:
        drops = self._drops
        for status in (RxStatus.MALFORMED_INNER, RxStatus.REPLAY, RxStatus.AUTH_FAILED, RxStatus.MALFORMED):
            if drops.get(status):
                yield status, drops[status]

    def source_runs(self) -> Iterator[tuple[bytes, int, int]]:
        results = self._results
        count = len(results)
        position = 0
        while position < count:
            status, _, source = results[position]
            stop = position + 1
            if status == _DATA and source is not None:
                while stop < count and results[stop][0] == _DATA and results[stop][2] == source:
                    stop += 1
                yield source, position, stop
            position = stop

    def keep(self, start: int, stop: int) -> None:
        self._kept += [packet for _, packet, _ in self._results[start:stop] if packet is not None]

    def kept(self) -> int:
        return len(self._kept)

    def packets(self) -> list[bytes]:
        return list(self._kept)


class PythonCrypto:
    """The default Crypto: pure Python over `cryptography` (OpenSSL), one packet per call."""

    def __init__(self, description: str = "pure Python") -> None:
        self._description = description

    @property
    def description(self) -> str:
        return self._description

    def session(self, sending_key: bytes, receiving_key: bytes) -> PythonSession:
        return PythonSession(sending_key, receiving_key)

    def packets(self, packets: Sequence[bytes]) -> PacketList:
        return PacketList(packets)
