"""`pywg demo`: two devices handshake and exchange packets in memory, on the real clock."""

from __future__ import annotations

import struct
import time
from ipaddress import ip_address, ip_network

from pywg.device import Device, HandshakeCompleted
from pywg.keys import encode_key, generate_private_key
from pywg.runtime.system import SystemClock, system_rng


def _udp_packet(source: str, destination: str, payload: bytes) -> bytes:
    total = 28 + len(payload)
    ip = struct.pack(
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
    return ip + struct.pack("!HHHH", 5000, 5000, 8 + len(payload), 0) + payload


def run_local_demo(packets: int = 2000) -> int:
    clock = SystemClock()
    alice = Device(generate_private_key(system_rng), clock=clock, rng=system_rng)
    bob = Device(generate_private_key(system_rng), clock=clock, rng=system_rng)
    assert alice.public_key is not None and bob.public_key is not None
    where = {id(alice): ("192.0.2.1", 51820), id(bob): ("192.0.2.2", 51820)}
    alice.allowed_ips.insert(
        ip_network("10.0.0.2/32"), alice.add_peer(bob.public_key, endpoint=where[id(bob)])
    )
    bob.allowed_ips.insert(
        ip_network("10.0.0.1/32"), bob.add_peer(alice.public_key, endpoint=where[id(alice)])
    )
    print(f"alice public key {encode_key(alice.public_key)}")
    print(f"bob   public key {encode_key(bob.public_key)}")

    def pump() -> None:
        moved = True
        while moved:
            moved = False
            for sender, receiver in ((alice, bob), (bob, alice)):
                for data, _endpoint, _source in sender.datagrams_to_send():
                    receiver.receive_datagram(data, where[id(sender)])
                    moved = True

    started = time.perf_counter()
    alice.send_packet(_udp_packet("10.0.0.1", "10.0.0.2", b"hello bob"))
    pump()
    handshake_ms = (time.perf_counter() - started) * 1000
    events = [e for e in iter(alice.next_event, None) if isinstance(e, HandshakeCompleted)]
    delivered = bob.packets_to_deliver()
    if not events or len(delivered) != 1:
        print("demo failed: no handshake")
        return 1
    print(f"handshake done in {handshake_ms:.1f} ms; bob got {delivered[0][28:]!r}")
    payload = bytes(1380)
    started = time.perf_counter()
    alice.send_packets(_udp_packet("10.0.0.1", "10.0.0.2", payload) for _ in range(packets))
    pump()
    seconds = time.perf_counter() - started
    received = len(bob.packets_to_deliver())
    print(
        f"{received}/{packets} packets of {len(payload) + 28} bytes encrypted and decrypted in "
        f"{seconds * 1000:.0f} ms ({received * (len(payload) + 28) * 8 / seconds / 1e6:.0f} Mbit/s, "
        "one core, in memory)"
    )
    print(f"drops: alice {dict(alice.drops) or 'none'}, bob {dict(bob.drops) or 'none'}")
    return 0 if received == packets else 1
