"""Batches as the device sees them: runs it handles once each, packets left where the adapter put them.

An adapter reads many packets per wake-up into buffers of its own. The device works on runs of
them (kernel and wireguard-go do the same with their per-peer queues): consecutive IP packets to
one destination from the TUN side, consecutive data messages to one receiver index on the UDP
side. Per run it does the lookups and the bookkeeping once and hands the
packets to the crypto (pywg/core/transport.py) by position, so an implementation that keeps them in
one buffer (the C hot path, pywg/native/hotpath.py) never makes a Python object per packet: a run is
sealed into one `MessageRun`, and an `OpenedRun` is delivered as it lies in the receive buffer.

What the device sends is one type: a `MessageRun` (wire messages to one endpoint, back to back),
be it a run of sealed data messages or a single handshake message. The UDP adapter sends a run as
it lies (GSO where it can).

`PacketList` and `DatagramList` are the plain-Python batches (lists of `bytes`): what the
pure-Python TUN and UDP adapters read; the C path's batches answer the same questions in C. Each
`Crypto` seals and opens the batches of its own data path (`Crypto.packets` makes one of packets
the device holds itself, those staged for a handshake).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from itertools import accumulate
from typing import Protocol, TypeVar

from pywg.core.constants import MESSAGE_DATA, MESSAGE_DATA_MIN_SIZE
from pywg.core.endpoint import Endpoint

Buf = TypeVar("Buf", bytes, memoryview)
# Data messages in one run at most (one open call); a longer run is split.
MAX_RECEIVE_RUN = 128
_DATA_TYPE = MESSAGE_DATA.to_bytes(4, "little")

# An incoming datagram: bytes, the sender, and the local address it arrived on (None: unknown).
Received = tuple[bytes, Endpoint, str | None]


class InnerPackets(Protocol):
    """IP packets read from the TUN side, in order."""

    def __len__(self) -> int: ...

    def destination_runs(self) -> Iterator[tuple[bytes | None, int, int]]:
        """(destination address, start, stop) of runs of consecutive packets with one destination
        address; None for packets with no IPv4 or IPv6 header."""
        ...

    def packets(self, start: int, stop: int) -> list[bytes]:
        """Copies of packets start..stop-1 (for packets that must wait for a handshake)."""
        ...


class Datagrams(Protocol):
    """Datagrams read from the UDP side, in arrival order."""

    def __len__(self) -> int: ...

    def runs(self) -> Iterator[tuple[int, int, int | None]]:
        """(start, stop, receiver index) of runs of consecutive data messages (type 4, at least 32
        bytes) to one receiver index, at most MAX_RECEIVE_RUN long; (i, i + 1, None) for every
        other datagram."""
        ...

    def data(self, index: int) -> bytes:
        """A copy of datagram `index`."""
        ...

    def origin(self, index: int) -> tuple[Endpoint, str | None]:
        """Who sent datagram `index`, and the local address it arrived on."""
        ...

    def messages(self, start: int, stop: int) -> list[bytes]:
        """Copies of datagrams start..stop-1."""
        ...


class MessageRun:
    """Wire messages one after another in `payload`; `sizes` (u32) says where each ends: the data
    messages sealed in one call, or one handshake message. The UDP adapter sends them as they lie
    (GSO where it can)."""

    __slots__ = ("payload", "sizes")

    def __init__(self, payload: bytes, sizes: array[int]) -> None:
        self.payload = payload
        self.sizes = sizes

    @classmethod
    def of(cls, message: bytes) -> MessageRun:
        """A run of one message."""
        return cls(message, array("I", (len(message),)))

    def __len__(self) -> int:
        return len(self.sizes)

    def messages(self) -> list[bytes]:
        return split(self.payload, self.sizes)


class OpenedRun(Protocol):
    """What opening one run of data messages found (positions are 0..len-1 within the run)."""

    accepted: int  # messages that authenticated and passed the replay window
    accepted_bytes: int  # their lengths on the wire
    first_accepted: int  # position of the first of them, -1: none
    last_accepted: int  # position of the last of them, -1: none
    data_received: bool  # whether any of them was more than a keepalive

    def drop_counts(self) -> Iterator[tuple[int, int]]:
        """(RxStatus value, count) for the statuses MALFORMED_INNER, REPLAY, AUTH_FAILED, MALFORMED."""
        ...

    def source_runs(self) -> Iterator[tuple[bytes, int, int]]:
        """(inner source address, start, stop) of runs of consecutive messages carrying an IP
        packet (status DATA) with one source address."""
        ...

    def keep(self, start: int, stop: int) -> None:
        """Deliver the inner packets of positions start..stop-1 (a source run that was allowed)."""
        ...

    def kept(self) -> int:
        """How many inner packets are to be delivered."""
        ...

    def packets(self) -> list[bytes]:
        """Copies of the inner packets to be delivered, in order."""
        ...


def split(payload: Buf, sizes: Sequence[int]) -> list[Buf]:
    """`payload` cut into consecutive pieces of `sizes` (datagrams glued for GSO, a MessageRun)."""
    ends = accumulate(sizes)
    return [payload[end - size : end] for size, end in zip(sizes, ends, strict=True)]


def destination(packet: bytes) -> bytes | None:
    """An IP packet's destination address; None if it has no IPv4 or IPv6 header."""
    if len(packet) >= 20 and packet[0] >> 4 == 4:
        return packet[16:20]
    if len(packet) >= 40 and packet[0] >> 4 == 6:
        return packet[24:40]
    return None


class PacketList:
    """InnerPackets over a list of `bytes`."""

    __slots__ = ("_packets",)

    def __init__(self, packets: Sequence[bytes]) -> None:
        self._packets = packets

    def __len__(self) -> int:
        return len(self._packets)

    def destination_runs(self) -> Iterator[tuple[bytes | None, int, int]]:
        packets = self._packets
        count = len(packets)
        start = 0
        while start < count:
            first = packets[start]
            address = destination(first)
            stop = start + 1
            if address is None:
                while stop < count and destination(packets[stop]) is None:
                    stop += 1
            else:
                # The same version and the same address where that version keeps it: no slice per packet.
                version, offset = first[0] >> 4, 16 if len(address) == 4 else 24
                while (
                    stop < count and (p := packets[stop]).startswith(address, offset) and p[0] >> 4 == version
                ):
                    stop += 1
            yield address, start, stop
            start = stop

    def packets(self, start: int, stop: int) -> list[bytes]:
        return list(self._packets[start:stop])


def _receiver(data: bytes) -> int | None:
    if data.startswith(_DATA_TYPE) and len(data) >= MESSAGE_DATA_MIN_SIZE:
        return int.from_bytes(data[4:8], "little")
    return None


class DatagramList:
    """Datagrams over a list of (bytes, sender, local address)."""

    __slots__ = ("_datagrams",)

    def __init__(self, datagrams: Sequence[Received]) -> None:
        self._datagrams = datagrams

    def __len__(self) -> int:
        return len(self._datagrams)

    def runs(self) -> Iterator[tuple[int, int, int | None]]:
        datagrams = self._datagrams
        count = len(datagrams)
        start = 0
        while start < count:
            first = datagrams[start][0]
            index = _receiver(first)
            stop = start + 1
            if index is not None:
                # Type and receiver index are the first 8 bytes: one startswith a datagram.
                limit, head = min(count, start + MAX_RECEIVE_RUN), first[:8]
                while stop < limit:
                    data = datagrams[stop][0]
                    if not data.startswith(head) or len(data) < MESSAGE_DATA_MIN_SIZE:
                        break
                    stop += 1
            yield start, stop, index
            start = stop

    def data(self, index: int) -> bytes:
        return self._datagrams[index][0]

    def origin(self, index: int) -> tuple[Endpoint, str | None]:
        _, source, local = self._datagrams[index]
        return source, local

    def messages(self, start: int, stop: int) -> list[bytes]:
        return [datagram[0] for datagram in self._datagrams[start:stop]]
