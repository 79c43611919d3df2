"""An off-path attacker for tests/test_hostile.py and benchmarks/flood.py.

Imported, it crafts messages: initiations signed with a key the caller holds (`initiation`), macs
(`with_mac1`, `with_mac2`) and the cookie a cookie reply carries (`open_cookie_reply`). Run as a
program inside a namespace, it is one of three tools:

    attacker.py flood HOST PORT PUBKEY_B64 --sources A,B,C --ports N --seconds S [--rate R] [--cookies]
    attacker.py send HOST PORT --listen SECONDS < datagrams.json
    attacker.py sniff IFNAME PORT SECONDS

`flood` sends initiations with a valid MAC1 for PUBKEY (a public key, not a secret) to HOST:PORT from N
ports on each source address, round robin, as fast as it can (or R a second), for S seconds or until
SIGTERM. With --cookies it answers like a real host: it decrypts each cookie reply and puts a valid
MAC2 on what that socket sends next, so its initiations reach the per-source rate limit. It prints
one JSON object: what it sent and got.

`send` sends the datagrams it reads from stdin (a JSON list of hex strings) from one socket, then
listens for SECONDS and prints what came back (JSON: the replies in hex).

`sniff` copies the UDP payloads to or from PORT that arrive on IFNAME (an AF_PACKET socket: what is
on the wire), for SECONDS or until SIGTERM, then prints them as JSON.

All run with the interpreter that runs the tests and import nothing but the standard library and pywg.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
from collections.abc import Sequence
from typing import Any

from pywg.core import crypto
from pywg.core.constants import (
    MAC_LEN,
    MESSAGE_COOKIE_REPLY,
    MESSAGE_COOKIE_REPLY_SIZE,
)
from pywg.core.cookie import cookie_key, mac1_key
from pywg.core.crypto import CryptoError, StaticKey
from pywg.core.messages import INITIATION_MAC1_OFFSET, MAC2_DISTANCE, CookieReply, Initiation
from pywg.core.noise import Handshake
from pywg.core.tai64n import tai64n

MAC2_OFFSET = INITIATION_MAC1_OFFSET + MAC2_DISTANCE
POOL = 4096  # distinct initiations cycled through by the flood
DRAIN_EVERY = 2048  # sends between two looks at the replies
ETH_P_IP = 0x0800
SOL_PACKET = 263
PACKET_VNET_HDR = 15  # each frame then starts with a virtio_net_hdr: a GSO frame's segment size
_VNET_HEADER = struct.Struct("=BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
_ETH_HEADER = 14


def with_mac1(message: bytes, responder_public: bytes, mac1_offset: int = INITIATION_MAC1_OFFSET) -> bytes:
    """`message` with its MAC1 computed for `responder_public` and MAC2 zero."""
    mac1 = crypto.mac(mac1_key(responder_public), message[:mac1_offset])
    return message[:mac1_offset] + mac1 + bytes(MAC_LEN)


def with_mac2(message: bytes, cookie: bytes, mac2_offset: int = MAC2_OFFSET) -> bytes:
    return message[:mac2_offset] + crypto.mac(cookie, message[:mac2_offset])


def initiation(private: bytes, responder_public: bytes, sender: int, unix_ns: int) -> bytes:
    """A genuine initiation from the holder of `private`, timestamped `unix_ns`, with a valid MAC1."""
    handshake = Handshake(StaticKey(private), responder_public)
    body = handshake.create_initiation(os.urandom(32), sender, tai64n(unix_ns))
    packed = Initiation(sender, body.ephemeral, body.encrypted_static, body.encrypted_payload).pack()
    return with_mac1(packed, responder_public)


def junk_initiation(responder_public: bytes, sender: int) -> bytes:
    """Random ephemeral, static and timestamp behind a valid MAC1: costs the responder a DH."""
    packed = Initiation(sender, os.urandom(32), os.urandom(48), os.urandom(28)).pack()
    return with_mac1(packed, responder_public)


def open_cookie_reply(reply: bytes, responder_public: bytes, mac1: bytes) -> bytes | None:
    """The cookie in `reply` (which answers a message whose MAC1 was `mac1`), or None."""
    if len(reply) != MESSAGE_COOKIE_REPLY_SIZE or reply[0] != MESSAGE_COOKIE_REPLY:
        return None
    message = CookieReply.unpack(reply)
    try:
        return crypto.xaead_decrypt(
            cookie_key(responder_public), message.nonce, message.encrypted_cookie, mac1
        )
    except CryptoError:
        return None


# --- flood ---------------------------------------------------------------------------------------


class Flood:
    """Connected UDP sockets, one per (source address, port), and the cookie each was given."""

    def __init__(self, target: tuple[str, int], public: bytes, sources: Sequence[str], ports: int) -> None:
        self.public = public
        self.pool = [junk_initiation(public, sender) for sender in range(1, POOL + 1)]
        self.sockets: list[socket.socket] = []
        self.cookies: list[bytes | None] = []
        self.selector = selectors.DefaultSelector()
        for source in sources:
            for _ in range(ports):
                self._open(source, target)
        self.counts = {"sent": 0, "sent_with_mac2": 0, "send_errors": 0, "cookie_replies": 0}
        self.counts |= {"bad_cookie_replies": 0, "other_replies": 0}
        self.stopped = False

    def _open(self, source: str, target: tuple[str, int]) -> None:
        family = socket.AF_INET6 if ":" in source else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.bind((source, 0))
        sock.connect(target)
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ, len(self.sockets))
        self.sockets.append(sock)
        self.cookies.append(None)

    def stop(self, *_: object) -> None:
        self.stopped = True

    def run(self, seconds: float, use_cookies: bool, rate: float = 0.0) -> dict[str, Any]:
        """Send for `seconds` (or until `stop`), `rate` a second (0: as fast as it can)."""
        started = time.monotonic()
        end = started + seconds
        chunk = max(1, min(DRAIN_EVERY, int(rate / 100))) if rate else DRAIN_EVERY  # paced: 100 a second
        sent = 0
        while (now := time.monotonic()) < end and not self.stopped:
            if rate and sent > (now - started) * rate:
                time.sleep(min(end - now, sent / rate - (now - started)))
                continue
            sent = self._send(sent, chunk)
            self._drain(use_cookies)
        self.counts["sent"] = sent
        self.counts["seconds"] = round(time.monotonic() - started, 3)
        self.counts["sockets"] = len(self.sockets)
        self.counts["sources"] = len({sock.getsockname()[0] for sock in self.sockets})
        return self.counts

    def _send(self, first: int, count: int) -> int:
        """Messages `first` to `first + count` of the round robin; returns where it stopped."""
        sockets, cookies, pool = self.sockets, self.cookies, self.pool
        n = len(sockets)
        for i in range(first, first + count):
            message = pool[i % POOL]
            cookie = cookies[i % n]
            if cookie is not None:
                message = with_mac2(message, cookie)
                self.counts["sent_with_mac2"] += 1
            try:
                sockets[i % n].send(message)
            except OSError:
                self.counts["send_errors"] += 1
        return first + count

    def _drain(self, use_cookies: bool) -> None:
        for key, _ in self.selector.select(0):
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            while True:
                try:
                    reply = sock.recv(2048)
                except OSError:  # EAGAIN, or an ICMP error queued on the socket
                    break
                self._take(key.data, reply, use_cookies)

    def _take(self, slot: int, reply: bytes, use_cookies: bool) -> None:
        if len(reply) != MESSAGE_COOKIE_REPLY_SIZE or reply[:4] != bytes([MESSAGE_COOKIE_REPLY, 0, 0, 0]):
            self.counts["other_replies"] += 1
            return
        self.counts["cookie_replies"] += 1
        sender = int.from_bytes(reply[4:8], "little")
        if not 1 <= sender <= POOL:
            self.counts["bad_cookie_replies"] += 1
            return
        mac1 = self.pool[sender - 1][INITIATION_MAC1_OFFSET:MAC2_OFFSET]
        cookie = open_cookie_reply(reply, self.public, mac1)
        if cookie is None:
            self.counts["bad_cookie_replies"] += 1
        elif use_cookies:
            self.cookies[slot] = cookie


# --- send ----------------------------------------------------------------------------------------


def send(target: tuple[str, int], datagrams: Sequence[bytes], listen: float) -> list[str]:
    """Send `datagrams` to `target` in order; the replies that arrive within `listen` seconds, hex."""
    replies = []
    family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        for datagram in datagrams:
            sock.sendto(datagram, target)
        end = time.monotonic() + listen
        while (left := end - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                replies.append(sock.recv(1 << 16).hex())
            except TimeoutError:
                break
    return replies


# --- sniff ---------------------------------------------------------------------------------------


class _Stopped(Exception):
    pass


def _stop(*_: object) -> None:
    raise _Stopped


def sniff(ifname: str, port: int, seconds: float) -> list[dict[str, str]]:
    """UDP/IPv4 payloads to or from `port` arriving on `ifname` within `seconds` (or until SIGTERM):
    source and hex payload, a GSO frame's datagrams one by one. Prints "ready" once it listens."""
    found: list[dict[str, str]] = []
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP)) as raw:
        raw.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        raw.bind((ifname, ETH_P_IP))
        signal.signal(signal.SIGTERM, _stop)
        print("ready", flush=True)
        end = time.monotonic() + seconds
        try:
            while (left := end - time.monotonic()) > 0:
                raw.settimeout(left)
                frame, address = raw.recvfrom(1 << 17)
                parsed = _udp_payload(frame[_VNET_HEADER.size + _ETH_HEADER :], port)
                if parsed is None or address[2] == socket.PACKET_OUTGOING:
                    continue
                source, payload = parsed
                segment = _VNET_HEADER.unpack_from(frame)[3]  # gso_size: 0 unless a GSO frame
                found += [{"source": source, "payload": p.hex()} for p in _split(payload, segment)]
        except (TimeoutError, _Stopped):
            pass
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return found


def _split(payload: bytes, segment: int) -> list[bytes]:
    if not segment or len(payload) <= segment:
        return [payload]
    return [payload[i : i + segment] for i in range(0, len(payload), segment)]


def _udp_payload(packet: bytes, port: int) -> tuple[str, bytes] | None:
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_UDP:
        return None
    header = (packet[0] & 0x0F) * 4
    total = struct.unpack_from("!H", packet, 2)[0]  # short frames carry Ethernet padding after it
    source_port, destination = struct.unpack_from("!HH", packet, header)
    if port not in (source_port, destination):
        return None
    source = f"{socket.inet_ntoa(packet[12:16])}:{source_port}"
    return source, packet[header + 8 : total]


# --- command line --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    flood = commands.add_parser("flood")
    flood.add_argument("host")
    flood.add_argument("port", type=int)
    flood.add_argument("public", help="the responder's public key, base64")
    flood.add_argument("--sources", required=True, help="comma-separated source addresses")
    flood.add_argument("--ports", type=int, default=1, help="sockets per source address")
    flood.add_argument("--seconds", type=float, required=True)
    flood.add_argument("--rate", type=float, default=0.0, help="initiations a second (0: flat out)")
    flood.add_argument("--cookies", action="store_true", help="use the cookies the replies carry")
    sender = commands.add_parser("send")
    sender.add_argument("host")
    sender.add_argument("port", type=int)
    sender.add_argument("--listen", type=float, default=0.0)
    sniffer = commands.add_parser("sniff")
    sniffer.add_argument("ifname")
    sniffer.add_argument("port", type=int)
    sniffer.add_argument("seconds", type=float)
    args = parser.parse_args(argv)
    if args.command == "send":
        datagrams = [bytes.fromhex(text) for text in json.load(sys.stdin)]
        print(json.dumps(send((args.host, args.port), datagrams, args.listen)), flush=True)
        return 0
    if args.command == "sniff":
        print(json.dumps(sniff(args.ifname, args.port, args.seconds)), flush=True)
        return 0
    public = base64.b64decode(args.public)
    attack = Flood((args.host, args.port), public, args.sources.split(","), args.ports)
    signal.signal(signal.SIGTERM, attack.stop)
    print(json.dumps(attack.run(args.seconds, args.cookies, args.rate)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
