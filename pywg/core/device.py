"""The sans-I/O WireGuard device (kernel device.c, receive.c): the one object adapters drive.

It speaks batches only (pywg/core/batch.py), as wireguard-go's device does: feed it
what one read of the UDP side brought (`receive_batch`), what one read of the TUN
side brought (`send_batch`) and timer ticks (`handle_timers`); drain the runs of
messages to send (`take_outbox`), the opened runs whose packets go to the TUN
(`take_deliveries`) and events; sleep until `next_deadline()`. The clock, the
random source and the data-message crypto (pywg/core/transport.py) are injected,
so a test can run hours of protocol time in milliseconds and an adapter can hand
in the C hot path.

`send_batch` routes each run of packets to one destination once and seals it in
one call; `receive_batch` opens each run of consecutive data messages for one
receiver index in one call, then does the per-peer bookkeeping (endpoint, timers,
key freshness) once per run, while the allowed-IPs check on the inner source
stays per run of one source address.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, deque
from collections.abc import Callable

from pywg.core.allowedips import AllowedIPs
from pywg.core.batch import Datagrams, InnerPackets, MessageRun, OpenedRun
from pywg.core.clock import Clock
from pywg.core.constants import (
    DEFAULT_MTU,
    MAX_PEERS,
    MAX_QUEUED_INCOMING_HANDSHAKES,
    MESSAGE_COOKIE_REPLY,
    MESSAGE_INITIATION,
    REKEY_TIMEOUT_JITTER_MAX,
    UNDER_LOAD_AFTER_TIME,
    UNDER_LOAD_HANDSHAKES_PER_SECOND,
)
from pywg.core.cookie import CookieChecker, MacState
from pywg.core.crypto import StaticKey
from pywg.core.endpoint import Endpoint, cookie_source
from pywg.core.events import EndpointChanged, Event, HandshakeCompleted, HandshakeGaveUp, KeysZeroed
from pywg.core.keypair import PYTHON_CRYPTO, Keypair
from pywg.core.messages import (
    CookieReply,
    Initiation,
    Response,
    mac1_offset,
    message_type,
)
from pywg.core.noise import Handshake, InitiationBody, ResponseBody, consume_initiation
from pywg.core.peer import Peer
from pywg.core.ratelimiter import RateLimiter
from pywg.core.transport import Crypto, RxStatus

# What the device sends: a run of messages (data messages sealed in one call, or one handshake
# message), the peer's endpoint, and the local source address to send from (None: the OS chooses).
Outgoing = tuple[MessageRun, Endpoint, str | None]
_DROP_REASON = {
    RxStatus.MALFORMED_INNER: "malformed_inner",
    RxStatus.REPLAY: "replay",
    RxStatus.AUTH_FAILED: "decrypt_failed",
    RxStatus.MALFORMED: "malformed",
}


class Device:
    def __init__(
        self,
        private_key: bytes | None = None,
        *,
        clock: Clock,
        rng: Callable[[int], bytes],
        mtu: int = DEFAULT_MTU,
        under_load_threshold: int = UNDER_LOAD_HANDSHAKES_PER_SECOND,
        crypto: Crypto = PYTHON_CRYPTO,
    ) -> None:
        self.clock = clock
        self.rng = rng
        self.mtu = mtu
        # Seals and opens data messages: the pure-Python reference unless the adapter passes another.
        self.crypto = crypto
        self.static: StaticKey | None = None
        self.peers: dict[bytes, Peer] = {}
        # (deadline, order, peer) for every timer armed (timer_armed), earliest first
        self._deadlines: list[tuple[float, int, Peer]] = []
        self._order = itertools.count()
        self.allowed_ips: AllowedIPs[Peer] = AllowedIPs()
        self.indices: dict[int, Peer | Keypair] = {}
        self.cookie_checker = CookieChecker(rng)
        self.ratelimiter = RateLimiter()
        self.outbox: list[Outgoing] = []
        self.inbox: list[OpenedRun] = []
        self.events: deque[Event] = deque()
        self.drops: Counter[str] = Counter()
        # Adapter settings the UAPI reads and writes; the core does not use them.
        self.listen_port = 0
        self.fwmark = 0
        self._under_load_threshold = under_load_threshold
        self._handshake_second = 0.0
        self._handshakes_this_second = 0
        self._last_under_load: float | None = None
        self.set_private_key(private_key)

    # Configuration.
    @property
    def public_key(self) -> bytes | None:
        return self.static.public if self.static else None

    def set_private_key(self, private_key: bytes | None) -> None:
        """Change our identity: sessions in flight are expired, as the kernel does."""
        if private_key == (self.static.private_bytes if self.static else None):
            return
        self.static = StaticKey(private_key) if private_key else None
        public = self.public_key
        if public in self.peers:
            self.remove_peer(public)
        self.cookie_checker.set_public_key(public)
        for peer in self.peers.values():
            peer.handshake.set_local(self.static)
            peer.expire_current_keypairs()

    def add_peer(
        self,
        public_key: bytes,
        preshared_key: bytes | None = None,
        endpoint: Endpoint | None = None,
        persistent_keepalive: int = 0,
    ) -> Peer:
        if public_key in self.peers:
            raise ValueError("a peer with this public key exists already")
        if public_key == self.public_key:
            raise ValueError("a peer cannot have the device's own public key")
        if len(self.peers) >= MAX_PEERS:
            raise ValueError(f"a device holds at most {MAX_PEERS} peers")
        peer = Peer(self, public_key, preshared_key, endpoint)
        self.peers[public_key] = peer
        if persistent_keepalive:
            peer.set_persistent_keepalive(persistent_keepalive, self.clock.monotonic())
        return peer

    def remove_peer(self, public_key: bytes) -> None:
        peer = self.peers.pop(public_key, None)
        if peer is not None:
            self.allowed_ips.remove_peer(peer)
            peer.remove()

    def clear_peers(self) -> None:
        for public_key in list(self.peers):
            self.remove_peer(public_key)

    # Inputs.
    def receive_batch(self, datagrams: Datagrams) -> None:
        """Datagrams read in one wake-up, in arrival order, where the adapter keeps them.

        Each run of data messages for one receiver index is opened in one call;
        handshake messages go one by one, in their place in the order.
        """
        now = self.clock.monotonic()
        for start, stop, index in datagrams.runs():
            if index is not None:
                self._receive_data(index, datagrams, start, stop, now)
                continue
            data = datagrams.data(start)
            kind = message_type(data)
            if kind is None:
                self.count_drop("malformed")
            elif self.static is None:
                self.count_drop("no_private_key")
            elif kind == MESSAGE_COOKIE_REPLY:
                self._receive_cookie_reply(data, now)
            else:
                self._receive_handshake(kind, data, *datagrams.origin(start), now)

    def send_batch(self, packets: InnerPackets) -> None:
        """Inner IP packets read from the TUN, where the adapter keeps them: each run to one
        destination is routed once and sealed in one call (or staged until a session is ready)."""
        now = self.clock.monotonic()
        touched: dict[Peer, None] = {}
        lookup = self.allowed_ips.lookup
        for destination, start, stop in packets.destination_runs():
            peer = None if destination is None else lookup(destination)
            if destination is None:
                self.count_drop("malformed_inner", stop - start)
            elif peer is None:
                self.count_drop("no_route", stop - start)
            elif peer.endpoint is None:
                self.count_drop("no_endpoint", stop - start)
            else:
                peer.send_run(packets, start, stop, now)
                touched[peer] = None
        for peer in touched:
            peer.send_staged(now)

    def handle_timers(self) -> None:
        """The peers whose timers are due, from the deadline heap: not a walk over every peer at
        each wake-up (with 10,000 peers that walk took 0.9 ms, and halved throughput)."""
        now = self.clock.monotonic()
        due: dict[int, Peer] = {}
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            deadline, _, peer = heapq.heappop(heap)
            if self._current(deadline, peer):
                due[id(peer)] = peer
        for peer in due.values():
            if self.peers.get(peer.public_key) is peer:  # a peer's timers may remove another
                peer.handle_timers(now)

    def timer_armed(self, deadline: float, peer: Peer) -> None:
        """A timer of `peer` was armed for `deadline` (Timers calls this): onto the heap. Entries of
        timers since re-armed or cancelled stay until they come up, and are dropped then; when
        they outnumber the peers' timers, the heap is made again from what is armed."""
        heapq.heappush(self._deadlines, (deadline, next(self._order), peer))
        if len(self._deadlines) > 8 * len(self.peers) + 64:
            self._deadlines = [
                (armed, next(self._order), peer)
                for peer in self.peers.values()
                for armed in set(peer.timers.deadlines.values())
            ]
            heapq.heapify(self._deadlines)

    def _current(self, deadline: float, peer: Peer) -> bool:
        return self.peers.get(peer.public_key) is peer and peer.timers.armed_at(deadline)

    def report_handshake_backlog(self, queued: int) -> None:
        """An adapter with a real handshake queue reports its length (kernel receive.c)."""
        if queued >= MAX_QUEUED_INCOMING_HANDSHAKES // 8:
            self._last_under_load = self.clock.monotonic()

    # Outputs.
    def next_deadline(self) -> float | None:
        heap = self._deadlines
        while heap and not self._current(heap[0][0], heap[0][2]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def take_outbox(self) -> list[Outgoing]:
        """What to send: runs of messages, each to one endpoint (for GSO as they lie)."""
        out, self.outbox = self.outbox, []
        return out

    def take_deliveries(self) -> list[OpenedRun]:
        """Opened runs whose kept packets go to the TUN (in the receive buffers: the adapter
        delivers them before it reads into those buffers again)."""
        out, self.inbox = self.inbox, []
        return out

    def next_event(self) -> Event | None:
        return self.events.popleft() if self.events else None

    # Receive paths.
    def _receive_data(self, index: int, datagrams: Datagrams, start: int, stop: int, now: float) -> None:
        """Data messages start..stop-1 for receiver `index`: open them in one call, then the
        bookkeeping.

        Per message, in order (in the crypto): the AEAD, the replay window, the inner header.
        Then per run of one inner source address: the allowed-IPs check. Once per run
        (wireguard-go RoutineSequentialReceiver): promotion of a `next` keypair, the endpoint,
        key freshness, the timers and the bytes received.
        """
        keypair = self.indices.get(index)
        if not isinstance(keypair, Keypair):
            self.count_drop("unknown_index", stop - start)
            return
        if not keypair.can_receive(now):
            self.count_drop("expired_keypair", stop - start)
            return
        opened = keypair.open_run(datagrams, start, stop)
        peer = keypair.peer
        for status, count in opened.drop_counts():
            self.count_drop(_DROP_REASON[status], count)
        if opened.first_accepted >= 0 and peer.keypairs.next is keypair:
            peer.received_with(keypair, *datagrams.origin(start + opened.first_accepted), now)
        lookup = self.allowed_ips.lookup
        for source, first, end in opened.source_runs():
            if lookup(source) is peer:
                opened.keep(first, end)
            else:
                self.count_drop("inner_source_not_allowed", end - first)
        if opened.kept():
            self.inbox.append(opened)
        if opened.last_accepted >= 0:
            endpoint, local = datagrams.origin(start + opened.last_accepted)
            peer.received_data_batch(
                endpoint, local, opened.accepted, opened.accepted_bytes, opened.data_received, now
            )

    def _receive_handshake(
        self, kind: int, data: bytes, source: Endpoint, local: str | None, now: float
    ) -> None:
        under_load = self._under_load(now)
        offset = mac1_offset(kind)
        try:
            source_bytes = cookie_source(source)
        except ValueError:
            self.count_drop("bad_source")
            return
        state = self.cookie_checker.validate(data, offset, source_bytes, now, under_load)
        if state is MacState.INVALID_MAC:
            self.count_drop("invalid_mac")
            return
        if under_load:
            if state is MacState.VALID_MAC_BUT_NO_COOKIE:
                sender = int.from_bytes(data[4:8], "little")
                reply = self.cookie_checker.create_reply(data, offset, sender, source_bytes, now)
                self.outbox.append((MessageRun.of(reply), source, local))
                self.count_drop("cookie_reply_sent")
                return
            if not self.ratelimiter.allow(source_bytes[:-2], now):
                self.count_drop("ratelimited")
                return
        if kind == MESSAGE_INITIATION:
            self._receive_initiation(data, source, local, now)
        else:
            self._receive_response(data, source, local, now)

    def _receive_initiation(self, data: bytes, source: Endpoint, local: str | None, now: float) -> None:
        assert self.static is not None
        message = Initiation.unpack(data)
        body = InitiationBody(message.ephemeral, message.encrypted_static, message.encrypted_timestamp)
        result = consume_initiation(self.static, body, self._find_handshake)
        if result is None:
            self.count_drop("handshake_failed")
            return
        _, consumed = result
        peer = self.peers[consumed.remote_static]
        if not peer.handshake.accept_initiation(consumed, message.sender, now):
            self.count_drop("initiation_replay_or_flood")
            return
        peer.set_endpoint(source, local)
        peer.send_response(now)
        peer.received_authenticated(now, len(data))

    def _receive_response(self, data: bytes, source: Endpoint, local: str | None, now: float) -> None:
        message = Response.unpack(data)
        peer = self.indices.get(message.receiver)
        if not isinstance(peer, Peer) or peer.handshake_index != message.receiver:
            self.count_drop("unknown_index")
            return
        body = ResponseBody(message.ephemeral, message.encrypted_nothing)
        if peer.handshake.consume_response(body, message.sender) is None:
            self.count_drop("handshake_failed")
            return
        peer.set_endpoint(source, local)
        peer.begin_session(now)
        peer.handshake_completed(now)
        # Confirms the session at once: staged data if any, else a keepalive.
        peer.send_keepalive(now)
        peer.received_authenticated(now, len(data))

    def _receive_cookie_reply(self, data: bytes, now: float) -> None:
        message = CookieReply.unpack(data)
        owner = self.indices.get(message.receiver)
        peer = owner.peer if isinstance(owner, Keypair) else owner
        if peer is None or not peer.cookie.consume_reply(message, now):
            self.count_drop("cookie_reply_invalid")

    def _find_handshake(self, static: bytes) -> Handshake | None:
        peer = self.peers.get(static)
        return peer.handshake if peer is not None else None

    def _under_load(self, now: float) -> bool:
        """Count this handshake message; under load while over the rate and 1 s after."""
        if now - self._handshake_second >= 1.0:
            self._handshake_second = now
            self._handshakes_this_second = 0
        self._handshakes_this_second += 1
        if self._handshakes_this_second >= self._under_load_threshold:
            self._last_under_load = now
        return self._last_under_load is not None and now - self._last_under_load < UNDER_LOAD_AFTER_TIME

    # Services for peers.
    def jitter(self) -> float:
        """0 to 333 ms, in whole milliseconds like wireguard-go."""
        steps = round(REKEY_TIMEOUT_JITTER_MAX * 1000) + 1
        return (int.from_bytes(self.rng(4), "little") % steps) / 1000

    def allocate_index(self, owner: Peer) -> int:
        while True:
            index = int.from_bytes(self.rng(4), "little")
            if index not in self.indices:
                self.indices[index] = owner
                return index

    def assign_index(self, index: int, owner: Peer | Keypair) -> None:
        self.indices[index] = owner

    def release_index(self, index: int) -> None:
        self.indices.pop(index, None)

    def forget_keypairs(self, keypairs: list[Keypair]) -> None:
        for keypair in keypairs:
            if self.indices.get(keypair.local_index) is keypair:
                del self.indices[keypair.local_index]
            keypair.zero()

    def count_drop(self, reason: str, count: int = 1) -> None:
        self.drops[reason] += count

    def endpoint_changed(self, peer: Peer) -> None:
        if peer.endpoint is not None:
            self.events.append(EndpointChanged(peer, peer.endpoint))

    def handshake_completed(self, peer: Peer) -> None:
        self.events.append(HandshakeCompleted(peer))

    def handshake_gave_up(self, peer: Peer) -> None:
        self.events.append(HandshakeGaveUp(peer))

    def keys_zeroed(self, peer: Peer) -> None:
        self.events.append(KeysZeroed(peer))
