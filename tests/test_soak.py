"""Soak (issue #6): hundreds of rekeys and key expiries on the fake clock, with traffic both ways.

Three devices on tests/support/netsim.py's in-memory network: a hub A with two peers, B and C. Each cycle
has an active phase of ACTIVE seconds, in which every STEP seconds each end of both tunnels sends
BURST numbered packets to the other (all four sends before the network moves anything, so data,
initiations and responses cross in flight), then an idle phase with no traffic at all, alternately
past REJECT_AFTER_TIME (the keys expire; the next packet starts a handshake, often from both ends
at once) and past ZERO_KEY_MATERIAL_AFTER (the keys are zeroed and every index is released). Over
CYCLES cycles (11 hours of protocol time, about 10 s of real time) each tunnel does 240 handshakes:
160 REKEY_AFTER_TIME rekeys, 40 after key expiry (20 of them after zeroing) and 40 on counters.

Twice a cycle the message counters are moved forward, as tests/test_timers.py does (a keypair's
`sending_counter` is a plain attribute, and the state is exactly what that many messages would
leave): B's to REKEY_AFTER_MESSAGES, so B rekeys although it is the responder, and C's to two short
of REJECT_AFTER_MESSAGES, so C's key runs out in the middle of a burst.

What must hold:
- no packet is lost, duplicated or left undelivered, in any window. Loss is zero by design, not by
  luck: a packet that finds no usable keypair waits in its peer's staged queue (128 packets; a
  STEP-paced stream puts at most a few there) until the handshake completes, and the keypair that
  a rekey pushes out stays usable for receiving as `previous`. The cost is delay, bounded by
  MAX_DELAY: after an idle phase both ends initiate at once, both handshakes can lose the race,
  and the retransmission REKEY_TIMEOUT (+ jitter) later settles it;
- the index table holds at most one keypair per slot (previous, current, next) and one pending
  handshake per peer, every index names a live keypair or a pending handshake, and after the long
  idle phases it is empty;
- every keypair that leaves its slot has both key buffers zeroed, can neither send nor receive,
  and lost its index;
- after warm-up (WARMUP cycles, both idle phases included), neither the Python heap (tracemalloc)
  nor the C heap (glibc's mallinfo2, where OpenSSL's cipher contexts of the C hot path live) grows
  by more than HEAP_GROWTH_BOUND over the 450 to 500 keypairs each half retires (measured: under
  1 KiB); a leak of 32 bytes per retired keypair, on either heap, would be about twice the bound;
- no file descriptor is opened for good.
"""

from __future__ import annotations

import ctypes
import gc
import os
import struct
import tracemalloc
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from pywg.core.constants import (
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX,
    ZERO_KEY_MATERIAL_AFTER,
)
from pywg.core.events import HandshakeCompleted
from pywg.core.keypair import Keypair
from pywg.core.peer import Peer
from tests.support.device_io import send_packets
from tests.support.netsim import Network, connect, ipv4_packet

pytestmark = pytest.mark.slow

A, B, C = ("192.0.2.1", 51820), ("192.0.2.2", 51820), ("192.0.2.3", 51820)
NAMES = {A: "a", B: "b", C: "c"}
INNER = {A: "10.0.0.1", B: "10.0.0.2", C: "10.0.0.3"}
CYCLES = 40
WARMUP = 4
STEP = 2.0
BURST = 2
ACTIVE = 600.0  # four REKEY_AFTER_TIME rekeys per tunnel, and one on the counters in the middle
IDLE = (REJECT_AFTER_TIME + 20.0, ZERO_KEY_MATERIAL_AFTER + 20.0)
# Two lost handshake races in a row, each settled one REKEY_TIMEOUT (+ jitter) later, plus a step.
MAX_DELAY = 2 * (REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX) + STEP
HEAP_GROWTH_BOUND = 8 * 1024
_PAYLOAD = struct.Struct("!4sI")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks")
    ] + [(name, ctypes.c_size_t) for name in ("fordblks", "keepcost")]


_libc = ctypes.CDLL(None)
_libc.mallinfo2.restype = _MallInfo2


def c_heap_in_use() -> int:
    """Bytes malloc has handed out and not had back (glibc's uordblks + mmapped blocks)."""
    info = _libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


@dataclass
class Flow:
    """Numbered packets from one end of a tunnel to the other."""

    source: tuple[str, int]
    destination: tuple[str, int]
    tag: bytes
    next_seq: int = 0
    in_flight: dict[int, float] = field(default_factory=dict)  # seq -> time sent
    delivered: int = 0
    unexpected: int = 0
    max_delay: float = 0.0

    def packets(self, now: float) -> list[bytes]:
        out = []
        for _ in range(BURST):
            self.in_flight[self.next_seq] = now
            payload = _PAYLOAD.pack(self.tag, self.next_seq)
            out.append(ipv4_packet(INNER[self.source], INNER[self.destination], payload))
            self.next_seq += 1
        return out

    def arrived(self, seq: int, now: float) -> None:
        sent = self.in_flight.pop(seq, None)
        if sent is None:
            self.unexpected += 1  # a duplicate, or never sent
            return
        self.delivered += 1
        self.max_delay = max(self.max_delay, now - sent)


class Soak:
    def __init__(self) -> None:
        self.net = Network()
        self.devices = {A: self.net.device(A, 1), B: self.net.device(B, 2), C: self.net.device(C, 3)}
        for spoke in (B, C):
            connect(self.devices[A], self.devices[spoke], A, spoke, f"{INNER[A]}/32", f"{INNER[spoke]}/32")
        flows = [Flow(s, d, f"{NAMES[s]}>{NAMES[d]} ".encode()) for s, d in ((A, B), (B, A), (A, C), (C, A))]
        self.flows = {flow.tag: flow for flow in flows}
        self.handshakes: Counter[tuple[str, int]] = Counter()
        self.live: dict[int, Keypair] = {}  # id -> every keypair in a slot at the last step
        self.retired = 0
        self.max_indices = 0

    def peer(self, at: tuple[str, int], of: tuple[str, int]) -> Peer:
        public = self.devices[of].public_key
        assert public is not None
        return self.devices[at].peers[public]

    def active(self, seconds: float) -> None:
        end = self.net.clock.now + seconds
        while self.net.clock.now < end:
            self.send_all()
            self.net.advance(STEP)
            self.collect()
            self.check_fresh()

    def send_all(self) -> None:
        now = self.net.clock.now
        for flow in self.flows.values():
            send_packets(self.devices[flow.source], flow.packets(now))

    def collect(self) -> None:
        """Deliveries, events and bookkeeping checks after the network has settled."""
        now = self.net.clock.now
        for packets in self.net.delivered.values():
            for packet in packets:
                tag, seq = _PAYLOAD.unpack(packet[28:])
                self.flows[tag].arrived(seq, now)
            packets.clear()
        self.net.sent.clear()  # netsim's log of every datagram: not the devices' memory
        self.net.sent_at.clear()
        for endpoint, device in self.devices.items():
            for event in iter(device.next_event, None):
                if isinstance(event, HandshakeCompleted):
                    self.handshakes[endpoint] += 1
            self.max_indices = max(self.max_indices, len(device.indices))
            assert len(device.indices) <= 4 * len(device.peers)
        self.check_retired()

    def check_fresh(self) -> None:
        """Under traffic no tunnel sends with a keypair much past REKEY_AFTER_TIME."""
        now = self.net.clock.now
        for keypair in self.live.values():
            if keypair.peer.keypairs.current is keypair and keypair.can_send(now):
                assert now - keypair.created <= REKEY_AFTER_TIME + 2 * STEP

    def check_retired(self) -> None:
        """Every keypair that left its slot since the last step is zeroed and has no index."""
        live: dict[int, Keypair] = {}
        for device in self.devices.values():
            for peer in device.peers.values():
                live.update((id(k), k) for k in peer.keypairs.all())
        for key, keypair in self.live.items():
            if key not in live:
                assert keypair.sending_key == bytearray(32) and keypair.receiving_key == bytearray(32)
                assert not keypair.can_send(self.net.clock.now) and not keypair.can_receive(0.0)
                assert keypair.peer.device.indices.get(keypair.local_index) is not keypair
                self.retired += 1
        self.live = live

    def check_indices(self) -> None:
        """Each index names a keypair in its peer's slots or that peer's pending handshake."""
        for device in self.devices.values():
            for index, owner in device.indices.items():
                if isinstance(owner, Keypair):
                    assert owner in owner.peer.keypairs.all() and owner.local_index == index
                else:
                    assert owner.handshake_index == index

    def forward_counters(self) -> None:
        """B's counter to REKEY_AFTER_MESSAGES, C's to two short of REJECT_AFTER_MESSAGES."""
        for at, counter in ((B, REKEY_AFTER_MESSAGES + 1), (C, REJECT_AFTER_MESSAGES - 2)):
            keypair = self.peer(at, A).keypairs.current
            assert keypair is not None and keypair.can_send(self.net.clock.now)
            keypair.sending_counter = counter

    def cycle(self, number: int) -> None:
        self.active(ACTIVE / 2)
        self.forward_counters()
        self.active(ACTIVE / 2)
        self.check_indices()
        self.net.advance(IDLE[number % 2])
        self.collect()
        self.check_indices()
        self.check_idle(zeroed=number % 2 == 1)

    def check_idle(self, zeroed: bool) -> None:
        now = self.net.clock.now
        for device in self.devices.values():
            if zeroed:
                assert not device.indices
            for peer in device.peers.values():
                assert not peer.staged
                assert not any(k.can_send(now) or k.can_receive(now) for k in peer.keypairs.all())
                assert zeroed == (not peer.keypairs.all())


class HeapWatch:
    """The largest growth of a heap over its value when watching began, sampled at equal points."""

    def __init__(self, measure: Callable[[], int]) -> None:
        self.measure = measure
        gc.collect()
        self.baseline = measure()
        self.growth = 0

    def sample(self) -> None:
        gc.collect()
        self.growth = max(self.growth, self.measure() - self.baseline)


def _python_heap() -> int:
    return tracemalloc.get_traced_memory()[0]


def test_hundreds_of_rekeys_and_expiries_leak_nothing_and_lose_nothing() -> None:
    fds = sorted(os.listdir("/proc/self/fd"))
    soak = Soak()
    # Warm-up, then the C heap over the first half and the Python heap over the second (tracing
    # would grow the C heap with tracemalloc's own tables). Samples come after the long idle
    # phases, when every session is gone, so like is compared with like.
    for number in range(WARMUP):
        soak.cycle(number)
    c_heap = HeapWatch(c_heap_in_use)
    for number in range(WARMUP, CYCLES // 2):
        soak.cycle(number)
        if number % 2:
            c_heap.sample()
    tracemalloc.start()
    try:
        for number in range(CYCLES // 2, CYCLES // 2 + 2):
            soak.cycle(number)
        python_heap = HeapWatch(_python_heap)
        for number in range(CYCLES // 2 + 2, CYCLES):
            soak.cycle(number)
            if number % 2:
                python_heap.sample()
    finally:
        tracemalloc.stop()
    for flow in soak.flows.values():
        assert not flow.in_flight and flow.unexpected == 0, flow.tag
        assert flow.delivered == flow.next_seq == CYCLES * ACTIVE / STEP * BURST
        assert flow.max_delay <= MAX_DELAY, flow.tag
    # Per tunnel and cycle: one handshake after the idle phase, then a rekey at least every
    # REKEY_AFTER_TIME + STEP, and one each for the forwarded counters.
    assert soak.handshakes[B] >= CYCLES * 6 and soak.handshakes[C] >= CYCLES * 6
    assert soak.handshakes[A] == soak.handshakes[B] + soak.handshakes[C]
    assert soak.retired >= soak.handshakes[A] + soak.handshakes[B] + soak.handshakes[C]
    assert soak.max_indices <= 4 * 2
    assert c_heap.growth <= HEAP_GROWTH_BOUND and python_heap.growth <= HEAP_GROWTH_BOUND
    assert sorted(os.listdir("/proc/self/fd")) == fds
