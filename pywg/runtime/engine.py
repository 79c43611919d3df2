"""The asyncio adapter: drives one sans-I/O Device from a TUN, UDP sockets and timers.

The device runs on the loop's thread: the TUN fd and each UDP socket are watched with
add_reader; each wake-up reads a batch (the TUN side until it is empty, up to a bound; UDP
with GRO or recvmmsg, up to a bound per socket), hands it to the device (`send_batch`,
`receive_batch`), then `flush` sends the runs of messages the device made, writes the runs it
opened to the TUN and re-arms the one timer for its next deadline.

The engine knows one TUN interface (pywg/runtime/tun_io.py) and one UDP interface
(pywg/runtime/udp.py), as wireguard-go's device knows tun.Device and conn.Bind; C or pure
Python, plain or IFF_VNET_HDR TUN, recvmmsg or recvmsg differ only inside them. With the C
path the packets stay where they were read (pywg/core/batch.py): the TUN reader's buffer is
sealed from, a UDP socket's receive pool is opened in place, and `flush` writes the opened
packets to the TUN from there, before that socket is read again. What the device keeps
(packets staged for a handshake) it copies.

Bounds per wake-up: what one TUN read takes (pywg/runtime/tun_io.py, tun_offload.py: buffers
allocated once), UDP_BATCH datagrams per socket plus one GRO run (with recvmmsg, the GRO runs
of one call: at most GRO_SLOTS = 8 of 64 datagrams, 512 KiB, in udp.py); what the device
delivers for the TUN is at most that much, written from one buffer that grows to the largest
batch once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterator

import uvloop

from pywg.core import (
    Device,
    EndpointChanged,
    HandshakeCompleted,
    HandshakeGaveUp,
    KeysZeroed,
    ReloadRefused,
    UapiHooks,
    encode_key,
    format_endpoint,
)
from pywg.core.batch import OpenedRun
from pywg.runtime import tun_io
from pywg.runtime.lane import Lane
from pywg.runtime.tun import Tun, TunGoneError
from pywg.runtime.uapi_server import UapiServer
from pywg.runtime.udp import UdpSockets

UDP_BATCH = 256  # datagrams read per socket per wake-up (GRO segments counted)
# Handshake messages read per wake-up of their own sockets (pywg/runtime/udp.py): under a flood each
# costs tens of microseconds, so a small batch lets the data sockets be read every few milliseconds.
HANDSHAKE_BATCH = 32
WATCH_INTERVAL = 1.0
# A TUN read that gave nothing but refused frames (a Pod writing hostile offload headers): the TUN
# is not read again for a pause that doubles up to TUN_PAUSE_MAX while it goes on, so its frames
# wait in (and overflow) the kernel's queue instead of costing this loop, which serves other tunnels.
TUN_PAUSE_MIN, TUN_PAUSE_MAX = 0.001, 0.1
_log = logging.getLogger("pywg")


class Engine:
    def __init__(self, device: Device, tun: Tun, udp: UdpSockets, name: str) -> None:
        self.device = device
        self.tun = tun
        self.tun_io = tun_io.open_io(tun)
        self.udp = udp
        self.name = name
        # What `pywg reload` and SIGHUP run (see UapiHooks.reload); None: this tunnel does not reload.
        self.on_reload: Callable[[], tuple[str, list[str]]] | None = None
        self.uapi = UapiServer(name, device, self.uapi_hooks(), turn=self.turn)
        self.stopped: asyncio.Future[str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self._watched: list[int] = []
        self._tun_pause = 0.0
        self._tun_resume: asyncio.TimerHandle | None = None
        self.lane: Lane | None = None
        self._lane_off = lane_unavailable_reason(device, self.tun_io)

    def uapi_hooks(self) -> UapiHooks:
        return UapiHooks(
            set_listen_port=self.set_listen_port,
            set_fwmark=self.udp.set_fwmark,
            after_set=self.flush,
            reload=self.reload,
        )

    def reload(self) -> tuple[str, list[str]]:
        if self.on_reload is None:
            return UapiHooks().reload()  # refuses, saying why
        return self.on_reload()

    def reload_on_signal(self) -> None:
        with contextlib.suppress(ReloadRefused):  # on_reload logged why
            self.reload()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop the engine runs on (None before `run`): the device is read and changed only there."""
        return self._loop

    # Lifecycle.
    async def run(self, on_ready: Callable[[], None] | None = None) -> str:
        """Serve until stopped; returns why. `on_ready` runs once the UAPI is served."""
        self._loop = asyncio.get_running_loop()
        self.stopped = self._loop.create_future()
        _log.info("%s: data path: %s", self.name, self.device.crypto.description)
        _log.info("%s: UDP port %d: %s", self.name, self.udp.port, self.udp.describe_offloads())
        _log.info("%s: TUN %s: %s", self.name, self.tun.name, self.tun_io.describe())
        try:
            self._loop.add_reader(self.tun.fd, self._tun_readable)
            self._watch_udp()
            self._open_lane()
            self._prioritize_known_peers()
            await self.uapi.start()
            self._loop.call_later(WATCH_INTERVAL, self._watchdog)
            self.flush()
            self._arm_lane()  # a tunnel (re)started with a session can hand its path to the lane now
            if on_ready is not None:
                on_ready()
            return await self.stopped
        finally:
            # Also when cancelled (the agent cancels an engine that does not stop in time, then
            # closes its fds): the lane must be gone before its TUN's fd number can be reused.
            self._teardown()

    def stop(self, reason: str) -> None:
        if self.stopped is not None and not self.stopped.done():
            self.stopped.set_result(reason)

    def _teardown(self) -> None:
        assert self._loop is not None
        if self.lane is not None:
            self._loop.remove_reader(self.lane.notify_fd)
            _log.info("%s: the lane carried %d packets", self.name, self.lane.carried)
            self.lane.close()  # parked first: the fds below are the loop's again
            self.lane = None
        if self._timer is not None:
            self._timer.cancel()
        if self._tun_resume is not None:
            self._tun_resume.cancel()
        for fd in self._watched:
            self._loop.remove_reader(fd)
        if self.tun.fd >= 0:
            self._loop.remove_reader(self.tun.fd)
        self.uapi.close()
        summary = self.tun_io.summary()
        if summary is not None:
            _log.info("%s: %s", self.name, summary)

    def _watchdog(self) -> None:
        reason = self.tun.gone_reason()
        if reason is None and not self.uapi.still_there():
            reason = f"UAPI socket {self.uapi.path} was removed"
        if reason is not None:
            self.stop(reason)
        elif self._loop is not None:
            self._prioritize_known_peers()
            self._loop.call_later(WATCH_INTERVAL, self._watchdog)

    def _prioritize_known_peers(self) -> None:
        """Handshake messages from the peers' endpoint addresses get the priority socket (udp.py);
        checked every WATCH_INTERVAL, so a new or moved endpoint gets it within a second."""
        peers = self.device.peers.values()
        self.udp.prioritize(peer.endpoint[0] for peer in peers if peer.endpoint is not None)

    def _watch_udp(self) -> None:
        assert self._loop is not None
        for fd in self._watched:
            self._loop.remove_reader(fd)
        self._watched = []
        for sock in self.udp.sockets:
            self._watch_socket(sock)
            self._watched.append(sock.fileno())

    def _watch_socket(self, sock: socket.socket) -> None:
        assert self._loop is not None
        batch = UDP_BATCH if sock in self.udp.data_sockets else HANDSHAKE_BATCH
        self._loop.add_reader(sock.fileno(), self._udp_readable, sock, batch)

    def set_listen_port(self, port: int) -> int:
        self.udp.bind(port)
        if self._loop is not None:
            self._watch_udp()
            _log.info("%s: UDP port %d: %s", self.name, self.udp.port, self.udp.describe_offloads())
        return self.udp.port

    # The lane (pywg/runtime/lane.py): the data path in C while the loop sleeps.
    def _open_lane(self) -> None:
        assert self._loop is not None
        if self._lane_off is None:
            try:
                self.lane = Lane(self.device, self.tun_io, self.udp)
            except OSError as error:
                self._lane_off = str(error)
        _log.info("%s: lane: %s", self.name, "on" if self.lane else f"off ({self._lane_off})")
        if self.lane is not None:
            self._loop.add_reader(self.lane.notify_fd, self._lane_woken)

    def _park_lane(self) -> bool:
        """Take the device back from the lane (a no-op when it is not armed). True: arm it again
        after this turn. False: it was not armed, or it handed back what it met (a packet
        outside its lease; a TUN frame may be pending in the reader): the loop reads that first."""
        lane = self.lane
        if lane is None or not lane.armed:
            return False
        assert self._loop is not None
        handed_back = lane.park()
        self._watch_data(True)
        if handed_back:
            self._loop.call_soon(self._read_handed_back)
        return not handed_back

    def _arm_lane(self) -> None:
        """Hand the data path to the lane again, if it can take it."""
        lane = self.lane
        if lane is None or lane.armed or self._tun_resume is not None or self.stopped is None:
            return
        if self.tun_io.pending:  # the reader's frame is the loop's to hand out first
            return
        too_big = lane.too_big
        if not self.stopped.done() and lane.arm():
            self._watch_data(False)
        if lane.too_big != too_big:
            peers, prefixes = lane.limits
            state = f"idle: over {peers} peers or {prefixes} prefixes" if lane.too_big else "carrying again"
            _log.info("%s: lane: %s", self.name, state)

    def _watch_data(self, on: bool) -> None:
        """The loop watches the TUN and the data sockets, or leaves them to the armed lane."""
        assert self._loop is not None
        if not on:
            for fd in (self.tun.fd, *(sock.fileno() for sock in self.udp.data_sockets)):
                self._loop.remove_reader(fd)
            return
        self._loop.add_reader(self.tun.fd, self._tun_readable)
        for sock in self.udp.data_sockets:
            self._watch_socket(sock)

    def _lane_woken(self) -> None:
        """The lane handed back, or has events to fold: park it, fold, and go on."""
        assert self.lane is not None
        self.lane.take_notification()
        resume = self._park_lane()
        self.flush()  # what folding the events made: a rekey's initiation, re-armed timers
        if resume:
            self._arm_lane()

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """The block has the device to itself: the lane is parked (what it did folded in) before,
        and armed again after if it was. Whatever changes the device outside the engine's own
        callbacks (a reload, the agent's live update) runs in one."""
        armed = self._park_lane()
        try:
            yield
        finally:
            if armed:
                self._arm_lane()

    def _read_handed_back(self) -> None:
        """Read what the lane handed back where it lies (the TUN reader's pending frame, the fds),
        then hand the path back to it."""
        self._park_lane()
        self._read_tun()
        for sock in self.udp.data_sockets:
            self._read_udp(sock, UDP_BATCH)
        self._arm_lane()

    # Data paths, while the lane is parked (or absent): each wake-up hands the path to the lane after.
    def _tun_readable(self) -> None:
        self._park_lane()
        self._read_tun()
        self._arm_lane()

    def _read_tun(self) -> None:
        """Read the TUN once, send what it gave."""
        assert self._loop is not None
        reader = self.tun_io
        try:
            packets = reader.read()
        except TunGoneError as error:
            self.stop(str(error))
            return
        drops = reader.take_drops()
        for reason, count in drops.items():
            self.device.count_drop(reason, count)
        if drops and not len(packets):
            self._pause_tun()
            return
        self._tun_pause = 0.0
        if len(packets):
            self.device.send_batch(packets)
        if reader.pending:
            # The rest of a super-packet waits in the reader, not in the fd: come back for it.
            self._loop.call_soon(self._tun_readable)
        self.flush()

    def _pause_tun(self) -> None:
        assert self._loop is not None
        self._tun_pause = min(TUN_PAUSE_MAX, max(TUN_PAUSE_MIN, 2 * self._tun_pause))
        self._loop.remove_reader(self.tun.fd)
        self._tun_resume = self._loop.call_later(self._tun_pause, self._resume_tun)

    def _resume_tun(self) -> None:
        self._tun_resume = None
        if self._loop is not None and self.stopped is not None and not self.stopped.done():
            self._loop.add_reader(self.tun.fd, self._tun_readable)

    def _udp_readable(self, sock: socket.socket, limit: int) -> None:
        armed = self._park_lane()
        self._read_udp(sock, limit)
        if armed or sock in self.udp.data_sockets:
            self._arm_lane()

    def _read_udp(self, sock: socket.socket, limit: int) -> None:
        """Read `sock` once, up to `limit`, and act on what came."""
        # Each batch may lie in the socket's receive pool: delivered (flushed) before the next read.
        for datagrams in self.udp.receive_batches(sock, limit):
            self.device.receive_batch(datagrams)
            self.flush()

    def flush(self) -> None:
        """Send what the device produced, deliver what it decrypted, re-arm the timer."""
        device = self.device
        if device.outbox:
            for source in self.udp.send_batch(device.take_outbox()):
                _forget_source(device, source)
        if device.inbox:
            try:
                self._deliver(device.take_deliveries())
            except TunGoneError as error:
                self.stop(str(error))
        if device.events:
            _log_events(self.name, device)
        self._arm_timer()

    def _deliver(self, runs: list[OpenedRun]) -> None:
        refused = self.tun_io.refused
        self.tun_io.write(runs)
        if self.tun_io.refused != refused:
            self.device.count_drop("tun_write_refused", self.tun_io.refused - refused)

    def _arm_timer(self) -> None:
        """Wake up for the device's next deadline. A timer already armed for an earlier time is
        kept: it then wakes up early, finds nothing due and re-arms. Traffic moves the deadlines
        later at almost every packet, and re-arming a loop timer each time cost ~10 % of a lone
        packet's time on an idle path (see "Latency" in docs/design.md)."""
        deadline = self.device.next_deadline()
        if self._loop is None or deadline == self._timer_deadline:
            return
        armed = self._timer_deadline
        if armed is not None and (deadline is None or armed <= deadline):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_deadline = deadline
        if deadline is not None:
            delay = max(0.0, deadline - self.device.clock.monotonic())
            self._timer = self._loop.call_at(self._loop.time() + delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline = None
        with self.turn():
            self.device.handle_timers()
            self.flush()


def lane_unavailable_reason(device: Device, io: tun_io.TunIO) -> str | None:
    """Why this engine runs without a lane (PYWG_LANE=0 turns it off), or None."""
    if os.environ.get("PYWG_LANE", "1") == "0":
        return "PYWG_LANE=0"
    return Lane.unavailable_reason(device, io)


def _forget_source(device: Device, source: str | None) -> None:
    for peer in device.peers.values():
        if peer.endpoint_source == source:
            peer.endpoint_source = None


def _log_events(name: str, device: Device) -> None:
    for event in iter(device.next_event, None):
        who = f"{name}: peer {encode_key(event.peer.public_key)}"
        if isinstance(event, HandshakeCompleted):
            _log.info("%s: handshake completed", who)
        elif isinstance(event, HandshakeGaveUp):
            _log.info("%s: no handshake answer after 20 attempts; giving up for now", who)
        elif isinstance(event, KeysZeroed):
            _log.info("%s: session keys zeroed after 540 s without a new handshake", who)
        elif isinstance(event, EndpointChanged):
            _log.info("%s: endpoint is now %s", who, format_endpoint(event.endpoint))


def run_engine(
    engine: Engine,
    on_ready: Callable[[], None] | None = None,
    on_reload: Callable[[], tuple[str, list[str]]] | None = None,
) -> str:
    """Run `engine` on a uvloop loop until it stops. SIGTERM and SIGINT stop it; SIGHUP and
    `pywg reload` call `on_reload` (see UapiHooks.reload)."""

    async def main() -> str:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, engine.stop, f"signal {signal.Signals(signum).name}")
        if on_reload is not None:
            engine.on_reload = on_reload
            loop.add_signal_handler(signal.SIGHUP, engine.reload_on_signal)
        return await engine.run(on_ready)

    return uvloop.run(main())
