"""An in-memory network of sans-I/O devices on a fake clock, for tests.

Devices get the data path the engine would use: the C hot path when it is built, pure Python
with PYWG_NO_EXT=1 (CI runs the device, timer and interop tests both ways), unless a test
passes `crypto=` itself.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from ipaddress import ip_address, ip_network

from pywg.core.batch import Received
from pywg.core.clock import FakeClock
from pywg.core.crypto import clamp, public_key
from pywg.core.device import Device
from pywg.core.endpoint import Endpoint
from pywg.core.messages import message_type
from pywg.native import hotpath
from tests.support.device_io import datagrams_to_send, packets_to_deliver, receive_datagrams


class SeededRng:
    """Deterministic bytes for the device's random source."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def __call__(self, n: int) -> bytes:
        return self._random.randbytes(n)


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071), the slow way: a reference for IP, ICMP, TCP and UDP."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_packet(source: str, destination: str, payload: bytes = b"hello") -> bytes:
    total = 20 + 8 + len(payload)
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        total,
        0,
        0,
        64,
        17,
        0,
        ip_address(source).packed,
        ip_address(destination).packed,
    )
    return header + struct.pack("!HHHH", 1000, 2000, 8 + len(payload), 0) + payload


def ipv6_packet(source: str, destination: str, payload: bytes = b"hello6") -> bytes:
    udp = struct.pack("!HHHH", 1000, 2000, 8 + len(payload), 0) + payload
    header = struct.pack(
        "!IHBB16s16s", 6 << 28, len(udp), 17, 64, ip_address(source).packed, ip_address(destination).packed
    )
    return header + udp


class Network:
    """Devices at endpoints; datagrams move when `pump` is called.

    `filter` may drop or rewrite datagrams in flight: it gets
    (data, source, destination) and returns the new source, or None to drop.
    """

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.devices: dict[Endpoint, Device] = {}
        self.addresses: dict[int, Endpoint] = {}
        self.delivered: dict[Endpoint, list[bytes]] = {}
        self.sent: list[tuple[bytes, Endpoint, Endpoint]] = []
        self.sent_at: list[float] = []
        self.filter: Callable[[bytes, Endpoint, Endpoint], Endpoint | None] | None = None

    def device(self, endpoint: Endpoint, seed: int, **kwargs: object) -> Device:
        key = clamp(random.Random(seed).randbytes(32))
        if "crypto" not in kwargs:
            kwargs["crypto"] = hotpath.data_path_crypto()
        device = Device(key, clock=self.clock, rng=SeededRng(seed), **kwargs)  # type: ignore[arg-type]
        self.devices[endpoint] = device
        self.addresses[id(device)] = endpoint
        self.delivered[endpoint] = []
        return device

    def move(self, old: Endpoint, new: Endpoint) -> None:
        """The device at `old` now sends from and is reached at `new` (it roamed)."""
        self.devices[new] = self.devices.pop(old)
        self.delivered[new] = self.delivered.pop(old)

    def pump(self, rounds: int = 50) -> None:
        """Move datagrams until none are left: what a device sent reaches each target in one
        batch (`receive_datagrams`), in the order it was sent."""
        for _ in range(rounds):
            moved = False
            for endpoint, device in list(self.devices.items()):
                batches: dict[Endpoint, list[Received]] = {}
                for data, destination, _source in datagrams_to_send(device):
                    moved = True
                    self.sent.append((data, endpoint, destination))
                    self.sent_at.append(self.clock.now)
                    source: Endpoint | None = endpoint
                    if self.filter is not None:
                        source = self.filter(data, endpoint, destination)
                    if source is not None and destination in self.devices:
                        batches.setdefault(destination, []).append((data, source, None))
                for destination, batch in batches.items():
                    receive_datagrams(self.devices[destination], batch)
            for endpoint, device in self.devices.items():
                self.delivered[endpoint] += packets_to_deliver(device)
            if not moved:
                return

    def run_until(self, deadline: float) -> None:
        """Advance the clock timer by timer up to `deadline`, pumping in between."""
        self.pump()
        while True:
            upcoming = [d for dev in self.devices.values() if (d := dev.next_deadline()) is not None]
            step = min(upcoming, default=deadline)
            if step > deadline:
                break
            self.clock.now = max(self.clock.now, step)
            for device in self.devices.values():
                device.handle_timers()
            self.pump()
            if step == deadline:
                break
        self.clock.now = max(self.clock.now, deadline)

    def advance(self, seconds: float) -> None:
        self.run_until(self.clock.now + seconds)


def connect(
    a: Device,
    b: Device,
    a_endpoint: Endpoint,
    b_endpoint: Endpoint,
    a_ips: str = "10.0.0.1/32",
    b_ips: str = "10.0.0.2/32",
    psk: bytes | None = None,
) -> None:
    """Make a and b peers of each other; each routes the other's inner address."""
    assert a.static is not None and b.static is not None
    peer_b = a.add_peer(b.static.public, psk, b_endpoint)
    peer_a = b.add_peer(a.static.public, psk, a_endpoint)
    for net in b_ips.split(","):
        a.allowed_ips.insert(ip_network(net), peer_b)
    for net in a_ips.split(","):
        b.allowed_ips.insert(ip_network(net), peer_a)


def fixed_public(seed: int) -> bytes:
    return public_key(clamp(random.Random(seed).randbytes(32)))


def sent_of_type(net: Network, source: Endpoint, kind: int, since: int = 0) -> list[tuple[float, bytes]]:
    """(time, datagram) of each message of `kind` that `source` sent, from index `since`."""
    timed = zip(net.sent_at[since:], net.sent[since:], strict=True)
    return [(t, d) for t, (d, src, _) in timed if src == source and message_type(d) == kind]
