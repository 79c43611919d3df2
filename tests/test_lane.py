"""The lane (pywg/native/lane.c, pywg/runtime/lane.py) against a datagram socket pair standing in
for the TUN and real UDP sockets on loopback: what it carries, what it hands back untouched, and
the books it leaves."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import ip_network
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from pywg.core.constants import REKEY_AFTER_TIME
from pywg.core.crypto import clamp, public_key
from pywg.core.device import Device
from pywg.core.peer import Peer
from pywg.core.timers import Timer
from pywg.native import hotpath, loader
from pywg.runtime.engine import Engine
from pywg.runtime.lane import Lane
from pywg.runtime.system import SystemClock, system_rng
from pywg.runtime.tun_io import CVnetTun
from pywg.runtime.uapi_server import UapiServer
from pywg.runtime.udp import UDP_SEGMENT, UdpSockets
from tests.support.device_io import datagrams_to_send, packets_to_deliver, receive_datagram, send_packet
from tests.support.netsim import ipv4_packet
from tests.support.socket_tun import socket_tun

pytestmark = pytest.mark.skipif(not loader.available(), reason=loader.unavailable_reason() or "")

OURS, THEIRS = "10.0.0.1", "10.0.0.2"
VNET_NONE = bytes(10)  # a virtio_net_hdr without offloads
WAIT = 5.0


@dataclass
class Bench:
    ours: Device
    theirs: Device
    remote: socket.socket  # where `theirs` sends from and is reached
    port: int  # our UDP port
    kernel: socket.socket  # the TUN's other end
    tun_io: CVnetTun
    udp: UdpSockets
    lane: Lane

    @property
    def peer(self) -> Peer:
        return next(iter(self.ours.peers.values()))

    def from_tun(self, packet: bytes) -> None:
        self.kernel.send(VNET_NONE + packet)

    def to_us(self, packet: bytes) -> None:
        """`theirs` seals `packet` and sends it to our port."""
        send_packet(self.theirs, packet)
        for message, _, _ in datagrams_to_send(self.theirs):
            self.remote.sendto(message, ("127.0.0.1", self.port))

    def sent_to_them(self) -> list[bytes]:
        """What reached `theirs` from us, opened."""
        data, _ = self.remote.recvfrom(65536)
        receive_datagram(self.theirs, data, ("127.0.0.1", self.port))
        return packets_to_deliver(self.theirs)

    def written_to_tun(self) -> bytes:
        return self.kernel.recv(65536)

    def handed_back(self) -> bool:
        ready, _, _ = select.select([self.lane.notify_fd], [], [], WAIT)
        self.lane.take_notification()
        return bool(ready) and self.lane.park()


def _device(private: bytes) -> Device:
    return Device(private, clock=SystemClock(), rng=system_rng, mtu=1420, crypto=hotpath.data_path_crypto())


@pytest.fixture
def bench() -> Iterator[Bench]:
    our_key, their_key = clamp(os.urandom(32)), clamp(os.urandom(32))
    ours, theirs = _device(our_key), _device(their_key)
    udp = UdpSockets(0)
    with (
        contextlib.closing(udp),
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as remote,
        socket_tun() as (kernel, tun),
    ):
        remote.bind(("127.0.0.1", 0))
        remote.settimeout(WAIT)
        kernel.settimeout(WAIT)
        there = remote.getsockname()
        ours.allowed_ips.insert(ip_network(f"{THEIRS}/32"), ours.add_peer(public_key(their_key), None, there))
        here = ("127.0.0.1", udp.port)
        theirs.allowed_ips.insert(ip_network(f"{OURS}/32"), theirs.add_peer(public_key(our_key), None, here))
        # The handshake, in memory; we initiate, and our first packet confirms the session.
        send_packet(ours, ipv4_packet(OURS, THEIRS))
        ((initiation, _, _),) = datagrams_to_send(ours)
        receive_datagram(theirs, initiation, ("127.0.0.1", udp.port))
        ((response, _, _),) = datagrams_to_send(theirs)
        receive_datagram(ours, response, there, "127.0.0.1")
        ((first, _, _),) = datagrams_to_send(ours)
        receive_datagram(theirs, first, ("127.0.0.1", udp.port))
        assert packets_to_deliver(theirs) == [ipv4_packet(OURS, THEIRS)]
        tun_io = CVnetTun(tun)
        lane = Lane(ours, tun_io, udp)
        try:
            yield Bench(ours, theirs, remote, udp.port, kernel, tun_io, udp, lane)
        finally:
            lane.close()


def test_carries_both_ways_and_keeps_the_books(bench: Bench) -> None:
    peer, keypair = bench.peer, bench.peer.keypairs.current
    assert keypair is not None
    before = (peer.tx_packets, peer.rx_packets, keypair.sending_counter)
    out, back = ipv4_packet(OURS, THEIRS, b"out"), ipv4_packet(THEIRS, OURS, b"back")
    assert bench.lane.arm()
    bench.from_tun(out)
    assert bench.sent_to_them() == [out]
    bench.to_us(back)
    assert bench.written_to_tun() == VNET_NONE + back
    assert not bench.lane.park()  # we asked; it had handed nothing back
    assert bench.lane.carried == 2
    assert (peer.tx_packets, peer.rx_packets, keypair.sending_counter) == (
        before[0] + 1,
        before[1] + 1,
        before[2] + 1,
    )
    their_peer = next(iter(bench.theirs.peers.values()))
    assert (peer.tx_bytes, peer.rx_bytes) == (their_peer.rx_bytes, their_peer.tx_bytes)
    # The timers saw the data: a keepalive is due unless we send, a handshake if they never answer.
    assert Timer.SEND_KEEPALIVE in peer.timers.deadlines
    # The core carries on where the lane stopped: its next counter is the one after the lane's.
    send_packet(bench.ours, out)
    ((message, _, _),) = datagrams_to_send(bench.ours)
    receive_datagram(bench.theirs, message, ("127.0.0.1", bench.port))
    assert packets_to_deliver(bench.theirs) == [out]


def test_hands_back_a_packet_it_has_no_route_for_pending_in_the_reader(bench: Bench) -> None:
    stray = ipv4_packet(OURS, "10.9.9.9")
    assert bench.lane.arm()
    bench.from_tun(stray)
    assert bench.handed_back()
    assert bench.tun_io.pending and bench.lane.carried == 0
    assert bench.tun_io.read().packets(0, 1) == [stray]


def test_hands_back_a_message_for_another_index_left_in_the_socket(bench: Bench) -> None:
    keypair = bench.peer.keypairs.current
    assert keypair is not None
    stranger = (4).to_bytes(4, "little") + (keypair.local_index ^ 1).to_bytes(4, "little") + bytes(40)
    assert bench.lane.arm()
    bench.remote.sendto(stranger, ("127.0.0.1", bench.port))
    assert bench.handed_back()
    assert bench.udp.v4 is not None
    assert [data for data, _, _ in bench.udp.receive(bench.udp.v4, 8)] == [stranger]


def test_carries_a_burst_in_order_in_one_run(bench: Bench) -> None:
    packets = [ipv4_packet(OURS, THEIRS, bytes([i]) * 100) for i in range(20)]
    for packet in packets:  # all waiting before the lane looks: read, sealed and sent as one run
        bench.from_tun(packet)
    keypair = bench.peer.keypairs.current
    assert keypair is not None
    before = (bench.peer.tx_packets, keypair.sending_counter)
    assert bench.lane.arm()
    assert [p for _ in packets for p in bench.sent_to_them()] == packets
    assert not bench.lane.park()
    assert bench.lane.carried == len(packets)
    assert (bench.peer.tx_packets, keypair.sending_counter) == (before[0] + 20, before[1] + 20)


def _send_segments(bench: Bench, messages: list[bytes]) -> None:
    """One UDP_SEGMENT send from `theirs`: our GRO socket takes it as one batch."""
    bench.remote.sendmsg(
        [b"".join(messages)],
        [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("=H", len(messages[0])))],
        0,
        ("127.0.0.1", bench.port),
    )


def _sealed(bench: Bench, packets: list[bytes]) -> list[bytes]:
    for packet in packets:
        send_packet(bench.theirs, packet)
    return [message for message, _, _ in datagrams_to_send(bench.theirs)]


def test_opens_a_gro_batch_in_one_run(bench: Bench) -> None:
    packets = [ipv4_packet(THEIRS, OURS, bytes([i]) * 100) for i in range(10)]
    rx = bench.peer.rx_packets
    _send_segments(bench, _sealed(bench, packets))
    assert bench.lane.arm()
    assert [bench.written_to_tun() for _ in packets] == [VNET_NONE + p for p in packets]
    assert not bench.lane.park()
    assert bench.lane.carried == len(packets)
    assert bench.peer.rx_packets == rx + len(packets)


def test_hands_back_a_gro_batch_that_is_not_all_its_own(bench: Bench) -> None:
    """A batch whose last message is for another index: all of it is Python's, untouched."""
    packets = [ipv4_packet(THEIRS, OURS, bytes([i]) * 100) for i in range(4)]
    messages = _sealed(bench, packets)
    stranger = bytearray(messages[-1])
    stranger[4] ^= 1  # the receiver index
    _send_segments(bench, [*messages[:-1], bytes(stranger)])
    assert bench.lane.arm()
    assert bench.handed_back()
    assert bench.lane.carried == 0 and bench.udp.v4 is not None
    assert [data for data, _, _ in bench.udp.receive(bench.udp.v4, 8)] == [*messages[:-1], bytes(stranger)]


def test_sends_nothing_past_the_lease(bench: Bench) -> None:
    keypair = bench.peer.keypairs.current
    assert keypair is not None
    keypair.created -= REKEY_AFTER_TIME  # a rekey is due on sending: the core's to start
    counter = keypair.sending_counter
    assert bench.lane.arm()
    bench.from_tun(ipv4_packet(OURS, THEIRS))
    assert bench.handed_back()
    assert bench.tun_io.pending and keypair.sending_counter == counter


def test_sends_from_the_kernels_address_when_the_source_is_gone(bench: Bench) -> None:
    """As the engine does: a source address the kernel refuses is forgotten, the packet sent from
    the address the kernel picks, not lost."""
    bench.peer.endpoint_source = "192.0.2.1"  # on no interface here
    out = ipv4_packet(OURS, THEIRS, b"out")
    assert bench.lane.arm()
    bench.from_tun(out)
    assert bench.sent_to_them() == [out]
    assert not bench.lane.park()
    assert bench.peer.endpoint_source is None


def test_stays_parked_while_the_device_is_larger_than_a_lease(bench: Bench) -> None:
    peers, _ = bench.lane.limits
    extra = [public_key(clamp(os.urandom(32))) for _ in range(peers)]
    for key in extra:
        bench.ours.add_peer(key, None, None)
    assert not bench.lane.arm() and bench.lane.too_big
    for key in extra:
        bench.ours.remove_peer(key)
    assert bench.lane.arm() and not bench.lane.too_big


def test_watches_the_sockets_of_a_new_port(bench: Bench) -> None:
    """A rebind (`wg set listen-port`) makes new sockets: the lane watches those."""
    assert bench.lane.arm()
    assert not bench.lane.park()
    bench.udp.bind(0)
    bench.port = bench.udp.port
    next(iter(bench.theirs.peers.values())).set_endpoint(("127.0.0.1", bench.port))
    back = ipv4_packet(THEIRS, OURS, b"to the new port")
    assert bench.lane.arm()
    bench.to_us(back)
    assert bench.written_to_tun() == VNET_NONE + back
    assert bench.lane.carried == 1


def test_a_cancelled_engine_closes_its_lane(bench: Bench, tmp_path: Path) -> None:
    """The agent cancels an engine that does not stop in time and then closes its fds: the lane
    must be gone first, or it could write to another TUN that got the fd's number."""
    tun = bench.tun_io.tun
    fake = cast(SimpleNamespace, tun)
    fake.vnet_hdr, fake.describe_offloads, fake.gone_reason = True, lambda: "fake", lambda: None
    engine = Engine(bench.ours, tun, bench.udp, "lane-test")
    engine.uapi = UapiServer("lane-test", bench.ours, engine.uapi_hooks(), tmp_path, turn=engine.turn)
    engine.uapi.bind()

    async def run_then_cancel() -> None:
        task = asyncio.create_task(engine.run())
        while engine.lane is None or not engine.lane.armed:  # armed at the first flush
            await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(run_then_cancel(), WAIT))
    assert engine.lane is None


def test_counts_forged_and_replayed_messages_as_the_device_does(bench: Bench) -> None:
    """Hostile input for our index: a forged tag and a replay are dropped, counted under the
    device's names, and deliver nothing."""
    drops = bench.ours.drops.copy()
    once, after = ipv4_packet(THEIRS, OURS, b"once"), ipv4_packet(THEIRS, OURS, b"after")
    send_packet(bench.theirs, once)
    ((message, _, _),) = datagrams_to_send(bench.theirs)
    forged = message[:-1] + bytes([message[-1] ^ 1])
    for datagram in (forged, message, message):  # the second copy is a replay
        bench.remote.sendto(datagram, ("127.0.0.1", bench.port))
    assert bench.lane.arm()
    assert bench.written_to_tun() == VNET_NONE + once
    bench.to_us(after)  # taken in order: once it is out, the lane has seen the three before it
    assert bench.written_to_tun() == VNET_NONE + after
    assert not bench.lane.park()
    assert bench.ours.drops["decrypt_failed"] - drops["decrypt_failed"] == 1
    assert bench.ours.drops["replay"] - drops["replay"] == 1
    assert bench.lane.carried == 2
