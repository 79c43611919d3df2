"""Lists in and out of a sans-I/O Device, for tests: the device itself speaks batches only.

A Device takes the batches of its own data path (pywg/core/batch.py): lists of `bytes` for the
pure-Python crypto, C buffers for the C hot path, as the engine's TUN and UDP adapters read them.
These helpers build that batch from a list and take the device's runs apart again, so a test can
say "these packets, these datagrams" whichever crypto the device runs.
"""

from __future__ import annotations

import socket
from array import array
from collections.abc import Iterable, Sequence

from pywg.core.batch import DatagramList, Datagrams, MessageRun, Received
from pywg.core.device import Device
from pywg.core.endpoint import Endpoint
from pywg.core.transport import Crypto, SessionCrypto
from pywg.native import hotpath, loader


def send_packets(device: Device, packets: Iterable[bytes]) -> None:
    """Inner packets as one read of the TUN side brings them."""
    device.send_batch(device.crypto.packets(list(packets)))


def send_packet(device: Device, packet: bytes) -> None:
    send_packets(device, (packet,))


def receive_datagrams(device: Device, datagrams: Iterable[Received]) -> None:
    """(data, source, local address) as one read of the UDP side brings them, in order."""
    device.receive_batch(datagram_batch(device.crypto, list(datagrams)))


def receive_datagram(device: Device, data: bytes, source: Endpoint, local: str | None = None) -> None:
    receive_datagrams(device, ((data, source, local),))


def datagrams_to_send(device: Device) -> list[tuple[bytes, Endpoint, str | None]]:
    """What the device sends, one datagram each (its runs taken apart)."""
    return [
        (message, endpoint, source)
        for run, endpoint, source in device.take_outbox()
        for message in run.messages()
    ]


def packets_to_deliver(device: Device) -> list[bytes]:
    """The inner packets the device hands the TUN, copied out of their runs."""
    return [packet for run in device.take_deliveries() for packet in run.packets()]


def datagram_batch(crypto: Crypto, datagrams: Sequence[Received]) -> Datagrams:
    """`datagrams` as the UDP adapter of `crypto`'s data path hands them over."""
    if loader.built() and isinstance(crypto, hotpath.CCrypto):
        return received_in_c(datagrams)
    return DatagramList(datagrams)


def received_in_c(datagrams: Sequence[Received]) -> Datagrams:
    """`datagrams` as recvmmsg leaves them for the C path (runtime/udp.py `ReceivedDatagrams`):
    one after another in a pool, with what the kernel reported of each (sender, local address)."""
    from pywg.runtime.udp import ReceivedDatagrams

    count = len(datagrams)
    memory = bytearray(b"".join(data for data, _, _ in datagrams) or b"\0")
    batch = ReceivedDatagrams(memory, max(1, count), max(1, count))
    offset = 0
    for k, (data, (host, port), local) in enumerate(datagrams):
        entry = batch.rx[k]
        entry.offset, entry.length, entry.port, entry.segment, entry.truncated = offset, len(data), port, 0, 0
        entry.family, packed, entry.scope = _packed(host)
        entry.source[0 : len(packed)] = packed
        entry.local_family = 0
        if local is not None:
            entry.local_family, packed, _ = _packed(local)
            entry.local[0 : len(packed)] = packed
        offset += len(data)
    batch.load(count)
    return batch


def _packed(address: str) -> tuple[int, bytes, int]:
    """(4 or 6, the address packed, its IPv6 scope id)."""
    if ":" not in address:
        return 4, socket.inet_pton(socket.AF_INET, address), 0
    host, _, scope = address.partition("%")
    return 6, socket.inet_pton(socket.AF_INET6, host), socket.if_nametoindex(scope) if scope else 0


def sealed_messages(
    crypto: Crypto, session: SessionCrypto, packets: Sequence[bytes], receiver: int, counter: int, mtu: int
) -> list[bytes]:
    """`packets` sealed by `session` (of `crypto`) with counters from `counter` on, one message each."""
    batch = crypto.packets(list(packets))
    return session.seal_run(batch, 0, len(packets), receiver, counter, mtu).messages()


def joined_run(messages: Sequence[bytes]) -> MessageRun:
    """`messages` back to back in one run."""
    return MessageRun(b"".join(messages), array("I", map(len, messages)))
