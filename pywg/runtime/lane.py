"""The lane's Python side: leases built from the device, and what the lane did folded back in.

The lane (pywg/native/lane.h) is a C thread per tunnel that carries data packets between the
TUN and the UDP data sockets while the Python loop sleeps, so an idle path's packet costs no cold
Python wake-up (docs/design.md "Latency") and a busy path's batches no Python at all. The engine
and the lane take turns: `arm` hands the TUN and the data sockets to the lane under a lease
(pywg/core/lease.py), `park` takes them back and folds the lane's events into the peers' books and
timers. The engine parks the lane before it touches the device and arms it again after; the lane
hands back by itself when it meets anything else (a handshake message, a packet outside the
lease).

A lane needs the C path, a TUN read through the C IFF_VNET_HDR reader and the system clock
(the lane's times are CLOCK_MONOTONIC, which `time.monotonic` reads); and a device small enough for
a lease: WG_LANE_MAX_PEERS peers, WG_LANE_MAX_ROUTES prefixes. Otherwise the engine has no lane,
or (a device that grew past a lease) an idle one, which the engine logs.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from typing import Any

from pywg.core import Device, Peer
from pywg.core.lease import Lease, lease_for
from pywg.native import loader
from pywg.runtime.system import SystemClock
from pywg.runtime.tun_io import TunIO
from pywg.runtime.udp import SOURCE_GONE, UdpSockets, target_of

_log = logging.getLogger("pywg")
_NS = 1_000_000_000
_NEVER = (1 << 63) - 1


def _ns(seconds: float) -> int:
    return min(_NEVER, int(seconds * _NS))


class Lane:
    """One tunnel's lane: its C thread, the lease arrays handed to it, the events taken back."""

    def __init__(self, device: Device, tun_io: TunIO, udp: UdpSockets) -> None:
        self._ffi, self._lib = loader.extension()
        lib = self._lib
        self.device = device
        self._udp = udp
        assert tun_io.lane_writer is not None
        self._writer = tun_io.lane_writer
        self._tun = tun_io.tun
        handle = lib.wg_lane_new(tun_io.tun.fd, tun_io.lane_reader)
        if handle == self._ffi.NULL:
            raise OSError("cannot start the lane's thread")
        self._handle: Any = handle
        self._reader = tun_io.lane_reader  # kept alive: the lane reads through it
        self.notify_fd: int = lib.wg_lane_notify_fd(handle)
        self._peers = self._ffi.new("wg_lane_peer[]", lib.WG_LANE_MAX_PEERS)
        self._routes = self._ffi.new("wg_lane_route[]", lib.WG_LANE_MAX_ROUTES)
        self._events = self._ffi.new("wg_lane_event[]", lib.WG_LANE_EVENTS)
        self._leases: list[Lease] = []
        self._kept: list[Any] = []  # the handles the lease points at, alive while it is out
        self._watched: tuple[int, ...] = ()
        self.armed = False
        # The peers and prefixes a lease holds at most.
        self.limits = (int(lib.WG_LANE_MAX_PEERS), int(lib.WG_LANE_MAX_ROUTES))
        self.too_big = False  # the last `arm` found more of them
        # The device's drop counters for what the lane dropped or refused (lane.h).
        self._dropped = {
            lib.WG_LANE_DROP_SOURCE: "inner_source_not_allowed",
            lib.WG_LANE_DROP_TUN_WRITE: "tun_write_refused",
            lib.WG_LANE_DROP_MALFORMED_INNER: "malformed_inner",
        }
        self._refused = {
            lib.WG_RX_REPLAY: "replay",
            lib.WG_RX_AUTH_FAILED: "decrypt_failed",
            lib.WG_RX_MALFORMED: "malformed",
        }

    @staticmethod
    def unavailable_reason(device: Device, tun_io: TunIO) -> str | None:
        """Why this tunnel cannot have a lane, or None."""
        if not loader.available():
            return "the C extension is not loaded"
        if tun_io.lane_reader is None or tun_io.lane_writer is None:
            return "the TUN is not read by the C IFF_VNET_HDR reader"
        if not isinstance(device.clock, SystemClock):
            return "the device runs on another clock than the system's"
        return None

    @property
    def carried(self) -> int:
        """Packets the lane carried so far (sealed and sent, or opened and delivered)."""
        return int(self._lib.wg_lane_carried(self._handle))

    def arm(self) -> bool:
        """Hand the TUN and the data sockets to the lane under a fresh lease; False (and nothing
        handed over) when no peer can have one, or the device is too big for a lease."""
        assert not self.armed
        if not self._lease():
            return False
        fds = tuple(sock.fileno() for sock in self._udp.data_sockets)
        if fds != self._watched:
            if self._lib.wg_lane_watch(self._handle, self._ffi.new("int[]", list(fds)), len(fds)):
                return False
            self._watched = fds
        self.armed = self._lib.wg_lane_arm(self._handle) == 0
        return self.armed

    def park(self) -> bool:
        """Take the TUN and the sockets back, fold in what the lane did; True if the lane handed
        back by itself (the fds, or the TUN reader, may hold what it left for Python)."""
        if not self.armed:
            return False
        why = self._lib.wg_lane_park(self._handle)
        self.armed = False
        self._fold()
        if why == self._lib.WG_LANE_ERROR:
            _log.debug("lane: a system call failed; the engine reads the fds")
        return why != self._lib.WG_LANE_PARKED

    def close(self) -> None:
        if self._handle is not None:
            self.park()
            self._lib.wg_lane_free(self._handle)
            self._handle = None

    def take_notification(self) -> None:
        """Clear the notify fd (the engine parks the lane next)."""
        with contextlib.suppress(BlockingIOError):
            os.read(self.notify_fd, 8)

    # Leases.
    def _lease(self) -> bool:
        device = self.device
        lib = self._lib
        # Counted before anything is listed: a big device never gets a lease, and is asked at
        # every turn.
        most_peers, most_prefixes = self.limits
        self.too_big = len(device.peers) > most_peers or len(device.allowed_ips) > most_prefixes
        if self.too_big:
            return False
        peers = list(device.peers.values())
        routes = [(network, peer) for peer in peers for network in device.allowed_ips.entries_for(peer)]
        now = device.clock.monotonic()
        self._leases, self._kept = [], []
        slots: dict[int, int] = {}
        for peer in peers:
            lease = lease_for(peer, now)
            if lease is None or not self._fill(len(self._leases), lease):
                continue
            slots[id(peer)] = len(self._leases)
            self._leases.append(lease)
        if not self._leases:
            return False
        routes.sort(key=lambda route: -route[0].prefixlen)
        for index, (network, peer) in enumerate(routes):
            entry = self._routes[index]
            packed = network.network_address.packed
            self._ffi.memmove(entry.address, packed, len(packed))
            entry.family = network.version
            entry.bits = network.prefixlen
            entry.peer = slots.get(id(peer), lib.WG_LANE_NO_PEER)
        lib.wg_lane_lease(
            self._handle,
            self._peers,
            len(self._leases),
            self._routes,
            len(routes),
            device.mtu,
            self._writer.merge,
        )
        return True

    def _fill(self, index: int, lease: Lease) -> bool:
        peer, keypair = lease.peer, lease.keypair
        assert peer.endpoint is not None
        sock = self._udp.v6 if ":" in peer.endpoint[0] else self._udp.v4
        target = target_of(peer.endpoint, peer.endpoint_source)
        handles = getattr(keypair.session, "lane_handles", None)
        if sock is None or target is None or handles is None:
            return False
        seal, open_, replay = handles()
        self._kept.append((seal, open_, replay))
        entry = self._peers[index]
        entry.seal, entry.open, entry.replay = seal, open_, replay
        entry.counter = keypair.sending_counter
        entry.counter_limit = lease.counter_limit
        entry.send_until = _ns(lease.send_until)
        entry.receive_until = _ns(lease.receive_until)
        entry.remote_index = keypair.remote_index
        entry.local_index = keypair.local_index
        entry.fd = sock.fileno()
        entry.gso = self._udp.gso and peer.endpoint not in self._udp.gso_off
        self._ffi.memmove(self._ffi.addressof(entry, "target"), target, len(target))
        return True

    # Folding.
    def _fold(self) -> None:
        """The sending counters back into the keypairs, then each event in order, at its time."""
        for index, lease in enumerate(self._leases):
            lease.keypair.sending_counter = int(self._peers[index].counter)
        self._writer.coalesced += self._lib.wg_lane_take_merged(self._handle)
        count = self._lib.wg_lane_take_events(self._handle, self._events, self._lib.WG_LANE_EVENTS)
        device = self.device
        lib = self._lib
        for event in self._events[0:count]:
            peer = self._leases[event.peer].peer
            now, kind, number, reason = event.time / _NS, event.kind, event.count, event.reason
            if kind == lib.WG_LANE_SENT:
                peer.carried_sent(number, event.length, now)
            elif kind == lib.WG_LANE_RECEIVED:
                peer.carried_received(number, event.length, reason != lib.WG_RX_KEEPALIVE, now)
            elif kind == lib.WG_LANE_DROPPED and reason == lib.WG_LANE_DROP_TUN_DOWN:
                self._tun.dropped_down += number  # lost as on a wire, as the TUN writer counts it
            elif kind == lib.WG_LANE_DROPPED:
                device.count_drop(self._dropped[reason], number)
            elif kind == lib.WG_LANE_REJECTED:
                device.count_drop(self._refused[reason], number)
            elif kind == lib.WG_LANE_SEND_FAILED:
                self._send_failed(peer, reason, gso=number > 1)  # number 0: sent again without the source
            elif kind == lib.WG_LANE_MERGE_REFUSED:
                self._writer.stop_merging(reason, errno.EINVAL)
        self._leases, self._kept = [], []

    def _send_failed(self, peer: Peer, failure: int, gso: bool) -> None:
        """What the engine's own send does when the kernel refuses a datagram (pywg/runtime/udp.py)."""
        source = peer.endpoint_source
        if failure in SOURCE_GONE and source is not None:
            peer.endpoint_source = None  # as the engine forgets a source the kernel refuses
        if gso and peer.endpoint is not None:
            self._udp.gso_refused(peer.endpoint, failure, source_kept=source is None)
