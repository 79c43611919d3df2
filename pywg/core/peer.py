"""A peer: its handshake, keypairs, timers, staged packets and endpoint (kernel peer.c, send.c).

A Peer belongs to one Device and reaches the rest of the world only through
it (`device.outbox`, the index table, the random source).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from pywg.core.batch import InnerPackets, MessageRun
from pywg.core.constants import (
    KEY_LEN,
    MAX_STAGED_PACKETS,
    MAX_TIMER_HANDSHAKES,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_ON_RECEIVE_AGE,
    REKEY_TIMEOUT,
)
from pywg.core.cookie import CookieGenerator
from pywg.core.crypto import CryptoError
from pywg.core.endpoint import Endpoint
from pywg.core.keypair import Keypair, Keypairs
from pywg.core.messages import INITIATION_MAC1_OFFSET, RESPONSE_MAC1_OFFSET, Initiation, Response
from pywg.core.noise import Handshake
from pywg.core.tai64n import tai64n
from pywg.core.timers import Timer, Timers

if TYPE_CHECKING:
    from pywg.core.device import Device


class Peer:
    def __init__(
        self,
        device: Device,
        public_key: bytes,
        preshared_key: bytes | None = None,
        endpoint: Endpoint | None = None,
        persistent_keepalive: int = 0,
    ) -> None:
        self.device = device
        self.public_key = public_key
        self.handshake = Handshake(device.static, public_key, preshared_key)
        self.cookie = CookieGenerator(public_key)
        self.keypairs = Keypairs()
        self.timers = Timers(
            device.jitter, persistent_keepalive, lambda deadline: device.timer_armed(deadline, self)
        )
        self.endpoint = endpoint
        # Local address our replies leave from (sticky source); None lets the OS pick.
        self.endpoint_source: str | None = None
        self.staged: deque[bytes] = deque(maxlen=MAX_STAGED_PACKETS)
        self.last_sent_handshake: float | None = None
        # The index naming our in-flight handshake in the device's index table.
        self.handshake_index: int | None = None
        self.sent_lastminute_handshake = False
        self.last_handshake_ns = 0
        self.rx_bytes = 0
        self.tx_bytes = 0
        # Authenticated messages (data, keepalives, handshakes) received and datagrams sent.
        self.rx_packets = 0
        self.tx_packets = 0
        # Initiations sent, and those that got no response within REKEY_TIMEOUT (metrics, Events).
        self.handshake_attempts = 0
        self.handshake_failures = 0

    # Configuration.
    @property
    def preshared_key(self) -> bytes | None:
        psk = self.handshake.preshared_key
        return None if psk == bytes(KEY_LEN) else psk

    @preshared_key.setter
    def preshared_key(self, value: bytes | None) -> None:
        self.handshake.preshared_key = value or bytes(KEY_LEN)

    @property
    def persistent_keepalive(self) -> int:
        return self.timers.persistent_keepalive

    def set_persistent_keepalive(self, seconds: int, now: float) -> None:
        """Turning it on sends a keepalive at once, as wg set does on Linux."""
        was_off = self.timers.persistent_keepalive == 0
        self.timers.persistent_keepalive = seconds
        if seconds == 0:
            self.timers.cancel(Timer.PERSISTENT_KEEPALIVE)
        elif was_off:
            self.send_keepalive(now)

    def set_endpoint(self, endpoint: Endpoint, source: str | None = None) -> None:
        if endpoint != self.endpoint:
            self.endpoint = endpoint
            self.device.endpoint_changed(self)
        if source is not None:
            self.endpoint_source = source

    # Sending.
    def stage(self, packet: bytes) -> None:
        """Queue an inner packet; the oldest one goes when the queue is full."""
        if len(self.staged) == MAX_STAGED_PACKETS:
            self.device.count_drop("staged_queue_full")
        self.staged.append(packet)

    def send_run(self, packets: InnerPackets, start: int, stop: int, now: float) -> None:
        """Packets start..stop-1 of a batch from the TUN, routed to this peer: sealed where they lie
        when a session is ready and nothing waits before them, else staged (copied) for
        `send_staged`, which the device calls once the whole batch is routed."""
        keypair = self.keypairs.current
        if self.staged or keypair is None or not keypair.can_send(now):
            staged = self.staged
            for packet in packets.packets(start, stop):
                if len(staged) == MAX_STAGED_PACKETS:
                    self.send_staged(now)  # a big batch: flush before the queue overflows
                if len(staged) < MAX_STAGED_PACKETS:
                    staged.append(packet)
                else:
                    self.stage(packet)  # still full (no session yet): the oldest goes
            return
        sealed = keypair.seal_run(packets, start, stop, self.device.mtu)
        if len(sealed):
            self.timers.any_authenticated_packet_traversal(now)
            self.timers.any_authenticated_packet_sent()
            self._send_run(sealed)
            self.timers.data_sent(now)  # packets from the TUN are never empty
        if len(sealed) < stop - start:
            # The counter ran out part way: the rest waits for the next session.
            for packet in packets.packets(start + len(sealed), stop):
                self.stage(packet)
            self.send_initiation(now, is_retry=False)
        else:
            self._keep_key_fresh_after_send(now)

    def send_keepalive(self, now: float) -> None:
        if not self.staged:
            self.staged.append(b"")
        self.send_staged(now)

    def send_staged(self, now: float) -> None:
        """Encrypt and send the staged packets, or start a handshake if no key is usable."""
        if not self.staged:
            return
        keypair = self.keypairs.current
        if keypair is None or not keypair.can_send(now):
            self.send_initiation(now, is_retry=False)
            return
        # One run: padded and sealed in one call. If the counter runs out part way, the rest
        # stays staged for the next session.
        packets = list(self.staged)
        sealed = keypair.seal_run(self.device.crypto.packets(packets), 0, len(packets), self.device.mtu)
        if len(sealed) == len(packets):
            self.staged.clear()
        else:
            for _ in range(len(sealed)):
                self.staged.popleft()
        if len(sealed):
            self.timers.any_authenticated_packet_traversal(now)
            self.timers.any_authenticated_packet_sent()
            self._send_run(sealed)
            if any(packets[: len(sealed)]):
                self.timers.data_sent(now)
        if self.staged:
            self.send_initiation(now, is_retry=False)
        else:
            self._keep_key_fresh_after_send(now)

    def send_initiation(self, now: float, is_retry: bool) -> None:
        """At most one initiation per REKEY_TIMEOUT (kernel send.c)."""
        if not is_retry:
            self.timers.handshake_attempts = 0
        if self.last_sent_handshake is not None and now - self.last_sent_handshake < REKEY_TIMEOUT:
            return
        self.last_sent_handshake = now
        device = self.device
        index = device.allocate_index(self)
        try:
            body = self.handshake.create_initiation(
                device.rng(KEY_LEN), index, tai64n(device.clock.wall_ns())
            )
        except CryptoError:
            device.release_index(index)
            device.count_drop("handshake_no_keys")
            return
        self._set_handshake_index(index)
        message = bytearray(
            Initiation(index, body.ephemeral, body.encrypted_static, body.encrypted_payload).pack()
        )
        self.cookie.add_macs(message, INITIATION_MAC1_OFFSET, now)
        self.timers.any_authenticated_packet_traversal(now)
        self.timers.any_authenticated_packet_sent()
        self.handshake_attempts += 1
        self._send(bytes(message))
        self.timers.handshake_initiated(now)

    def send_response(self, now: float) -> None:
        device = self.device
        index = device.allocate_index(self)
        try:
            body = self.handshake.create_response(device.rng(KEY_LEN), index)
        except CryptoError:
            device.release_index(index)
            return
        self._set_handshake_index(index)
        self.last_sent_handshake = now
        message = bytearray(
            Response(index, self.handshake.remote_index, body.ephemeral, body.encrypted_payload).pack()
        )
        self.cookie.add_macs(message, RESPONSE_MAC1_OFFSET, now)
        self.begin_session(now)
        self.timers.any_authenticated_packet_traversal(now)
        self.timers.any_authenticated_packet_sent()
        self._send(bytes(message))

    def _send(self, message: bytes) -> None:
        self._send_run(MessageRun.of(message))

    def _send_run(self, run: MessageRun) -> None:
        endpoint = self.endpoint
        if endpoint is None:
            self.device.count_drop("no_endpoint", len(run))
            return
        self.tx_bytes += len(run.payload)
        self.tx_packets += len(run)
        self.device.outbox.append((run, endpoint, self.endpoint_source))

    def _keep_key_fresh_after_send(self, now: float) -> None:
        keypair = self.keypairs.current
        if (
            keypair is not None
            and keypair.sending_valid
            and (
                keypair.sending_counter > REKEY_AFTER_MESSAGES
                or (keypair.i_am_initiator and now - keypair.created > REKEY_AFTER_TIME)
            )
        ):
            self.send_initiation(now, is_retry=False)

    # Receiving.
    def begin_session(self, now: float) -> None:
        """Derive a keypair from the finished handshake and slot it in."""
        sending, receiving, initiator = self.handshake.derive_keys()
        keypair = Keypair(
            sending,
            receiving,
            initiator,
            self.handshake.local_index,
            self.handshake.remote_index,
            now,
            self,
            self.device.crypto,
        )
        self.device.assign_index(keypair.local_index, keypair)
        self.handshake_index = None
        self.handshake.clear()
        self.device.forget_keypairs(self.keypairs.install(keypair))
        self.timers.session_derived(now)

    def handshake_completed(self, now: float) -> None:
        self.timers.handshake_complete()
        self.sent_lastminute_handshake = False
        self.last_handshake_ns = self.device.clock.wall_ns()
        self.device.handshake_completed(self)

    def received_authenticated(self, now: float, length: int, count: int = 1) -> None:
        self.rx_bytes += length
        self.rx_packets += count
        self.timers.any_authenticated_packet_received()
        self.timers.any_authenticated_packet_traversal(now)

    def received_with(self, keypair: Keypair, endpoint: Endpoint, local: str | None, now: float) -> None:
        """A data message decrypted under `keypair` and passed the replay window (kernel
        receive.c, wg_noise_received_with_keypair): if `keypair` was `next`, the handshake is
        confirmed; staged packets leave at once, towards the endpoint that just proved itself."""
        if self.keypairs.next is not keypair:
            return
        promoted, dropped = self.keypairs.received_with(keypair)
        self.device.forget_keypairs(dropped)
        if promoted:
            self.set_endpoint(endpoint, local)
            self.handshake_completed(now)
            self.send_staged(now)

    def received_data_batch(
        self, endpoint: Endpoint, local: str | None, count: int, length: int, data: bool, now: float
    ) -> None:
        """Once per batch of accepted data messages, as wireguard-go does (commit 7c20311): the
        endpoint of the last one, key freshness, the timers, `count` messages of `length` bytes
        received; `data` if any carried more than a keepalive."""
        self.set_endpoint(endpoint, local)
        self._keep_key_fresh_after_receive(now)
        self.received_authenticated(now, length, count)
        if data:
            self.timers.data_received(now)

    # What a lease's carrier did (pywg/core/lease.py): the books and timers of `send_run` and
    # `received_data_batch` for `count` messages of `length` bytes together, at the time of the last.
    def carried_sent(self, count: int, length: int, now: float) -> None:
        self.tx_bytes += length
        self.tx_packets += count
        self.timers.any_authenticated_packet_traversal(now)
        self.timers.any_authenticated_packet_sent()
        self.timers.data_sent(now)
        self._keep_key_fresh_after_send(now)

    def carried_received(self, count: int, length: int, data: bool, now: float) -> None:
        assert self.endpoint is not None  # a lease needs one, and the carrier checked the origin
        self.received_data_batch(self.endpoint, self.endpoint_source, count, length, data, now)

    def _keep_key_fresh_after_receive(self, now: float) -> None:
        if self.sent_lastminute_handshake:
            return
        keypair = self.keypairs.current
        if (
            keypair is not None
            and keypair.sending_valid
            and keypair.i_am_initiator
            and now - keypair.created > REKEY_ON_RECEIVE_AGE
        ):
            self.sent_lastminute_handshake = True
            self.send_initiation(now, is_retry=False)

    # Timers.
    def handle_timers(self, now: float) -> None:
        for timer in self.timers.expired(now):
            _TIMER_HANDLERS[timer](self, now)

    def _retransmit_handshake(self, now: float) -> None:
        self.handshake_failures += 1  # the last initiation got no response in time
        if self.timers.handshake_attempts > MAX_TIMER_HANDSHAKES:
            self.timers.handshake_given_up(now)
            self.staged.clear()
            self.device.handshake_gave_up(self)
            return
        self.timers.handshake_attempts += 1
        self.endpoint_source = None
        self.send_initiation(now, is_retry=True)

    def _send_keepalive_timer(self, now: float) -> None:
        self.send_keepalive(now)
        self.timers.keepalive_sent_by_timer(now)

    def _new_handshake(self, now: float) -> None:
        self.endpoint_source = None
        self.send_initiation(now, is_retry=False)

    def _zero_key_material(self, now: float) -> None:
        self.zero_keys()
        self.device.keys_zeroed(self)

    def _persistent_keepalive(self, now: float) -> None:
        if self.timers.persistent_keepalive:
            self.send_keepalive(now)

    # Teardown.
    def zero_keys(self) -> None:
        self._set_handshake_index(None)
        self.handshake.clear()
        self.device.forget_keypairs(self.keypairs.clear())

    def expire_current_keypairs(self) -> None:
        self._set_handshake_index(None)
        self.handshake.clear()
        self.keypairs.expire_current()

    def _set_handshake_index(self, index: int | None) -> None:
        """A new handshake replaces the old one, which loses its index."""
        if self.handshake_index is not None:
            self.device.release_index(self.handshake_index)
        self.handshake_index = index

    def remove(self) -> None:
        self.zero_keys()
        self.timers.stop_all()
        self.staged.clear()

    def __repr__(self) -> str:
        return f"Peer({self.public_key.hex()[:16]}…)"


_TIMER_HANDLERS = {
    Timer.RETRANSMIT_HANDSHAKE: Peer._retransmit_handshake,
    Timer.SEND_KEEPALIVE: Peer._send_keepalive_timer,
    Timer.NEW_HANDSHAKE: Peer._new_handshake,
    Timer.ZERO_KEY_MATERIAL: Peer._zero_key_material,
    Timer.PERSISTENT_KEEPALIVE: Peer._persistent_keepalive,
}
