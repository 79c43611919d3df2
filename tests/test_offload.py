"""TUN offloads (pywg/native/offload.c through cffi): splitting super-packets and merging TCP segments
and UDP datagrams, held to a Python reference, and hostile frames (issue 13: tiny or too many
segments, headers that lie) refused before a segment is written; the reader and writer on a real
TUN; then pywg with IFF_VNET_HDR end to end, against itself and wireguard-go, every transfer
checked by digest, and under hostile frames written on its TUN from inside its namespace.

The reference here is deliberately naive (RFC 1071 over bytes, struct fields rebuilt one by one):
every segment C makes must equal what it builds, byte for byte, and every merged packet, split
again as the kernel would, must give back exactly the packets it replaced. CI builds the
extension, so an unbuilt one fails here (at import), never skips.
"""

from __future__ import annotations

import errno
import fcntl
import random
import re
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from ipaddress import ip_address
from types import SimpleNamespace
from typing import Any, cast

import pytest

from pywg.config import InterfaceConfig
from pywg.core.device import Device
from pywg.native import loader
from pywg.runtime import tun_offload
from pywg.runtime.engine import TUN_PAUSE_MIN, Engine
from pywg.runtime.netns import in_netns
from pywg.runtime.system import SystemClock, system_rng
from pywg.runtime.tun import (
    TUN_F_CSUM,
    TUN_F_TSO4,
    TUN_F_TSO6,
    TUN_F_USO4,
    TUN_F_USO6,
    TUNSETOFFLOAD,
    Tun,
    open_tun,
)
from pywg.runtime.udp import UdpSockets
from tests.support.netsim import checksum
from tests.support.pywg_run import Pywg
from tests.support.socket_tun import socket_tun
from tests.support.topology import (
    Host,
    KeyPair,
    Topology,
    WireguardGo,
    link,
    tcp_transfer,
    tunnel_configs,
    wait_until,
)
from tests.test_hostile import uapi_drops

pytest_plugins = ["tests.support.topology"]

VNET = 10
NEEDS_CSUM = 1
GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4 = 0, 1, 4, 5
FIN, SYN, PSH, ACK, CWR = 0x01, 0x02, 0x08, 0x10, 0x80
A4, B4 = "10.1.0.1", "10.1.0.2"
A6, B6 = "fd00::1", "fd00::2"

ffi, lib = loader.extension()
MIN_TCP, MIN_UDP, MOST_SEGMENTS = (
    lib.WG_GSO_MIN_TCP_SEGMENT,
    lib.WG_GSO_MIN_UDP_SEGMENT,
    lib.WG_GSO_MAX_SEGMENTS,
)
MOST_PAYLOAD = 65535 - 40 - 20  # TCP payload of the largest IPv6 packet a TUN hands out (IPv4: 20 more)


# --- the reference -----------------------------------------------------------------------------


def pseudo_header(packet: bytes, protocol: int, length: int) -> bytes:
    if packet[0] >> 4 == 4:
        return packet[12:20] + struct.pack("!BBH", 0, protocol, length)
    return packet[8:40] + struct.pack("!IxxxB", length, protocol)


def l4_checksum_ok(packet: bytes, l4: int, protocol: int) -> bool:
    return checksum(pseudo_header(packet, protocol, len(packet) - l4) + packet[l4:]) == 0


def with_checksums(packet: bytearray, l4: int, protocol: int) -> bytes:
    """Fill in the IPv4 header checksum and the TCP/UDP checksum."""
    if packet[0] >> 4 == 4:
        packet[10:12] = b"\0\0"
        packet[10:12] = struct.pack("!H", checksum(bytes(packet[:l4])))
    at = l4 + (16 if protocol == 6 else 6)
    packet[at : at + 2] = b"\0\0"
    value = checksum(pseudo_header(bytes(packet), protocol, len(packet) - l4) + bytes(packet[l4:]))
    if protocol == 17 and value == 0:
        value = 0xFFFF
    packet[at : at + 2] = struct.pack("!H", value)
    return bytes(packet)


Addresses = tuple[str, str]  # source, destination


def ip_header(
    version: int,
    protocol: int,
    payload: int,
    ident: int = 0x1234,
    options: bytes = b"",
    addresses: Addresses | None = None,
) -> bytearray:
    source, destination = addresses or ((A4, B4) if version == 4 else (A6, B6))
    ends = ip_address(source).packed + ip_address(destination).packed
    if version == 4:
        ihl = 5 + len(options) // 4
        header = struct.pack("!BBHHHBBH", 0x40 | ihl, 0, ihl * 4 + payload, ident, 0x4000, 64, protocol, 0)
        return bytearray(header + ends + options)
    return bytearray(struct.pack("!IHBB", 0x60000000, payload, protocol, 64) + ends)


def tcp_packet(
    version: int,
    seq: int,
    payload: bytes,
    flags: int = ACK,
    options: bytes = b"",
    ack: int = 1000,
    ports: tuple[int, int] = (40000, 5201),
    ip_options: bytes = b"",
    ident: int = 0x1234,
    addresses: Addresses | None = None,
) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", *ports, seq, ack, (5 + len(options) // 4) << 4, flags, 65535, 0, 0)
    packet = ip_header(version, 6, len(tcp) + len(options) + len(payload), ident, ip_options, addresses)
    l4 = len(packet)
    return with_checksums(packet + tcp + options + payload, l4, 6)


def udp_packet(
    version: int,
    payload: bytes,
    ident: int = 0x1234,
    ports: tuple[int, int] = (5000, 6000),
    addresses: Addresses | None = None,
) -> bytes:
    packet = ip_header(version, 17, 8 + len(payload), ident, addresses=addresses)
    l4 = len(packet)
    return with_checksums(packet + struct.pack("!HHHH", *ports, 8 + len(payload), 0) + payload, l4, 17)


def vnet(
    flags: int = 0, gso_type: int = 0, hdr_len: int = 0, gso: int = 0, start: int = 0, offset: int = 0
) -> bytes:
    return struct.pack("=BBHHHH", flags, gso_type, hdr_len, gso, start, offset)


def super_frame(packet: bytes, gso_type: int, gso: int) -> bytes:
    """What the kernel hands a TUN with TSO/USO: one packet, transport checksum = pseudo-header sum."""
    packet = bytearray(packet)
    l4 = (packet[0] & 0x0F) * 4 if packet[0] >> 4 == 4 else 40
    udp = gso_type == GSO_UDP_L4
    at = l4 + (6 if udp else 16)
    folded = ~checksum(pseudo_header(bytes(packet), 17 if udp else 6, len(packet) - l4)) & 0xFFFF
    packet[at : at + 2] = struct.pack("!H", folded)
    return vnet(NEEDS_CSUM, gso_type, 0, gso, l4, at - l4) + bytes(packet)


def reference_segments(packet: bytes, gso: int, udp: bool = False) -> list[bytes]:
    """The segments a kernel's TSO/USO would send for `packet` with this gso_size."""
    version = packet[0] >> 4
    l4 = (packet[0] & 0x0F) * 4 if version == 4 else 40
    header = l4 + (8 if udp else (packet[l4 + 12] >> 4) * 4)
    payload = packet[header:]
    chunks = [payload[i : i + gso] for i in range(0, len(payload), gso)] or [b""]
    out = []
    for index, chunk in enumerate(chunks):
        segment = bytearray(packet[:header] + chunk)
        if version == 4:
            struct.pack_into(
                "!HH", segment, 2, len(segment), (struct.unpack_from("!H", packet, 4)[0] + index) & 0xFFFF
            )
        else:
            struct.pack_into("!H", segment, 4, len(segment) - 40)
        if udp:
            struct.pack_into("!H", segment, l4 + 4, len(segment) - l4)
        else:
            seq = struct.unpack_from("!I", packet, l4 + 4)[0]
            struct.pack_into("!I", segment, l4 + 4, (seq + index * gso) & 0xFFFFFFFF)
            if index < len(chunks) - 1:
                segment[l4 + 13] &= ~(FIN | PSH)
            if index:
                segment[l4 + 13] &= ~CWR
        out.append(with_checksums(segment, l4, 17 if udp else 6))
    return out


# --- the C calls ---------------------------------------------------------------------------------


def split(
    frame: bytes, slots: int = 1024, size: int = 1 << 20, first: int = 0
) -> tuple[int, list[bytes], bool]:
    out = bytearray(size)
    off, length = ffi.new("uint32_t[]", slots), ffi.new("uint32_t[]", slots)
    position, done = ffi.new("size_t *"), ffi.new("int *")
    count = lib.wg_tun_split(
        frame, len(frame), first, ffi.from_buffer(out), size, position, off, length, slots, done
    )
    packets = [bytes(out[off[i] : off[i] + length[i]]) for i in range(max(count, 0))]
    return count, packets, bool(done[0])


def coalesce(packets: list[bytes], merge: int = 3) -> tuple[list[bytes], list[int]]:
    """wg_tun_coalesce; `merge` is WG_MERGE_TCP | WG_MERGE_UDP by default."""
    n = len(packets)
    joined = b"".join(packets)
    offsets = [sum(len(p) for p in packets[:i]) for i in range(n)]
    out = bytearray(len(joined) + VNET * n)
    out_off, out_len, frame_of = (ffi.new("uint32_t[]", max(n, 1)) for _ in range(3))
    frames = lib.wg_tun_coalesce(
        joined,
        ffi.new("uint32_t[]", offsets or [0]),
        ffi.new("uint32_t[]", [len(p) for p in packets] or [0]),
        n,
        merge,
        ffi.new("wg_gro_slot[]", max(n, 1)),
        ffi.from_buffer(out),
        len(out),
        out_off,
        out_len,
        frame_of,
    )
    return [bytes(out[out_off[i] : out_off[i] + out_len[i]]) for i in range(frames)], list(frame_of)[:n]


def resegment(frame: bytes) -> list[bytes]:
    """What the kernel makes of a frame we write: a merged one split again, a plain one as it is."""
    hdr, packet = frame[:VNET], frame[VNET:]
    flags, gso_type, _, gso, start, offset = struct.unpack("=BBHHHH", hdr)
    if gso_type == GSO_NONE:
        assert hdr == bytes(VNET)
        return [packet]
    udp = gso_type == GSO_UDP_L4
    assert (
        flags == NEEDS_CSUM
        and gso_type in (GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4)
        and offset == (6 if udp else 16)
    )
    # The field holds the pseudo-header sum; completing it must give a valid packet.
    body = bytearray(packet)
    body[start + offset : start + offset + 2] = struct.pack("!H", checksum(bytes(body[start:])))
    assert l4_checksum_ok(bytes(body), start, 17 if udp else 6)
    return reference_segments(bytes(body), gso, udp)


# --- splitting -----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize(
    "payload,gso", [(64000, 1380), (1380 * 5, 1380), (1381, 1380), (7, 1000), (MOST_PAYLOAD, MIN_TCP)]
)
def test_tso_split_matches_the_reference(version: int, payload: int, gso: int) -> None:
    rng = random.Random(payload * gso + version)
    packet = tcp_packet(version, 0xFFFFFF00, rng.randbytes(payload), flags=ACK | PSH | FIN | CWR)
    count, segments, done = split(super_frame(packet, GSO_TCPV4 if version == 4 else GSO_TCPV6, gso))
    expected = reference_segments(packet, gso)
    assert done and count == len(expected) and segments == expected
    l4 = 20 if version == 4 else 40
    for segment in segments:
        assert l4_checksum_ok(segment, l4, 6)
        if version == 4:
            assert checksum(segment[:20]) == 0
    assert segments[-1][l4 + 13] & (PSH | FIN) == PSH | FIN  # only the last keeps FIN and PSH
    assert all(s[l4 + 13] & (PSH | FIN) == 0 for s in segments[:-1])
    assert b"".join(s[l4 + 20 :] for s in segments) == packet[l4 + 20 :]


def test_tso_split_with_tcp_and_ip_options() -> None:
    options = bytes([1, 1, 8, 10]) + bytes(range(8))  # NOP NOP timestamps
    packet = tcp_packet(
        4, 1, random.Random(1).randbytes(5000), options=options, ip_options=bytes([1, 1, 1, 0])
    )
    count, segments, _ = split(super_frame(packet, GSO_TCPV4, 1000))
    assert count == 5 and segments == reference_segments(packet, 1000)
    assert all(len(s) == 24 + 32 + 1000 for s in segments)


@pytest.mark.parametrize("version", [4, 6])
def test_uso_split_matches_the_reference(version: int) -> None:
    packet = udp_packet(version, random.Random(version).randbytes(10000))
    count, segments, done = split(super_frame(packet, GSO_UDP_L4, 1472))
    assert done and segments == reference_segments(packet, 1472, udp=True) and count == 7


def test_split_resumes_where_the_output_ran_out() -> None:
    packet = tcp_packet(4, 7, random.Random(2).randbytes(20000))
    frame = super_frame(packet, GSO_TCPV4, 1000)
    expected = reference_segments(packet, 1000)
    got: list[bytes] = []
    done = False
    while not done:
        count, segments, done = split(frame, slots=3, first=len(got))
        assert count == len(segments) <= 3
        got += segments
    assert got == expected
    count, segments, done = split(frame, size=2500)  # bytes for two segments
    assert (count, done) == (2, False) and segments == expected[:2]


@pytest.mark.parametrize("version", [4, 6])
def test_needs_csum_without_gso_is_completed(version: int) -> None:
    good = udp_packet(version, b"x" * 101)
    l4 = 20 if version == 4 else 40
    partial = bytearray(good)
    partial[l4 + 6 : l4 + 8] = struct.pack("!H", ~checksum(pseudo_header(good, 17, len(good) - l4)) & 0xFFFF)
    count, segments, done = split(vnet(NEEDS_CSUM, GSO_NONE, 0, 0, l4, 6) + bytes(partial))
    assert (count, done) == (1, True) and segments == [good]
    assert split(vnet() + good)[1] == [good]  # a finished packet comes out as it is


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        vnet(),  # a header and no packet
        vnet(NEEDS_CSUM, GSO_TCPV4, 0, 1000, 20, 16) + tcp_packet(6, 0, b"x" * 3000),  # v6 as TCPV4
        vnet(0, GSO_TCPV4, 0, 1000, 20, 16) + tcp_packet(4, 0, b"x" * 3000),  # GSO without NEEDS_CSUM
        vnet(NEEDS_CSUM, GSO_TCPV4, 0, 1000, 24, 16) + tcp_packet(4, 0, b"x" * 3000),  # csum_start off
        vnet(NEEDS_CSUM, 3, 0, 1000, 20, 6) + udp_packet(4, b"x" * 3000),  # UFO: never offered
        vnet(NEEDS_CSUM, GSO_TCPV4, 0, 1000, 20, 16) + tcp_packet(4, 0, b"")[:30],  # cut TCP header
        vnet(NEEDS_CSUM, GSO_NONE, 0, 0, 20, 9000) + udp_packet(4, b"x"),  # checksum outside
        vnet(NEEDS_CSUM, GSO_TCPV4, 0, 65535, 20, 16) + tcp_packet(4, 0, b"x" * 3000),  # segment > 64 KiB
    ],
)
def test_malformed_frames_are_refused(frame: bytes) -> None:
    assert split(frame)[0] == lib.WG_SPLIT_MALFORMED


def with_bytes(packet: bytes, at: int, value: bytes) -> bytes:
    return packet[:at] + value + packet[at + len(value) :]


def hop_by_hop_tcp6(packet: bytes) -> bytes:
    """The TCP/IPv6 `packet` behind a hop-by-hop options header (8 bytes of padding options)."""
    header = bytearray(packet[:40])
    struct.pack_into("!HB", header, 4, len(packet) - 40 + 8, 0)  # payload length, next header: hop-by-hop
    return bytes(header) + bytes([6, 0, 1, 4, 0, 0, 0, 0]) + packet[40:]


def hostile_frames(v4: Addresses = (A4, B4), v6: Addresses = (A6, B6)) -> list[tuple[str, bytes, str]]:
    """Frames a Pod can write on its interface (AF_PACKET, PACKET_VNET_HDR) that must cost no
    segment: (what, frame, drop reason). Linux 6.18 refuses some itself; older kernels fewer."""

    def tcp(version: int, size: int) -> bytes:
        return tcp_packet(version, 0, b"x" * size, addresses=v4 if version == 4 else v6)

    def udp(version: int, size: int) -> bytes:
        return udp_packet(version, b"x" * size, addresses=v4 if version == 4 else v6)

    tcp4, udp4 = tcp(4, 3000), udp(4, 3000)
    return [
        ("TCP gso_size 1, 64 KiB", super_frame(tcp(4, MOST_PAYLOAD + 20), GSO_TCPV4, 1), "SMALL"),
        ("TCPv6 gso_size 1, 64 KiB", super_frame(tcp(6, MOST_PAYLOAD), GSO_TCPV6, 1), "SMALL"),
        ("TCP gso_size 0", super_frame(tcp4, GSO_TCPV4, 0), "SMALL"),
        ("TCP gso_size below the floor", super_frame(tcp4, GSO_TCPV4, MIN_TCP - 1), "SMALL"),
        ("UDP gso_size 1, 128 datagrams", super_frame(udp(4, 128), GSO_UDP_L4, 1), "SMALL"),
        ("UDP gso_size below the floor", super_frame(udp4, GSO_UDP_L4, MIN_UDP - 1), "SMALL"),
        ("UDP, one datagram too many", super_frame(udp(4, MIN_UDP * 140), GSO_UDP_L4, MIN_UDP), "MANY"),
        ("UDPv6 gso_size 100, 64 KiB", super_frame(udp(6, 65000), GSO_UDP_L4, 100), "MANY"),
        ("ECN flag without GSO", vnet(NEEDS_CSUM, 0x80, 0, 0, 20, 6) + udp(4, 100), "MALFORMED"),
        ("UDP with the ECN flag", super_frame(udp4, GSO_UDP_L4 | 0x80, 1000), "MALFORMED"),
        ("TCP, csum_offset of UDP", with_bytes(super_frame(tcp4, GSO_TCPV4, 1000), 8, b"\6\0"), "MALFORMED"),
        (
            "UDP, csum_offset of TCP",
            with_bytes(super_frame(udp4, GSO_UDP_L4, 1000), 8, b"\x10\0"),
            "MALFORMED",
        ),
        ("UDP packet as TCPV4", super_frame(udp4, GSO_TCPV4, 1000), "MALFORMED"),
        ("TCPv6 packet as UDP", super_frame(tcp(6, 3000), GSO_UDP_L4, 1000), "MALFORMED"),
        ("IPv4 length short of the frame", super_frame(tcp4 + bytes(3000), GSO_TCPV4, 1000), "MALFORMED"),
        ("IPv4 length past the frame", super_frame(tcp4[:-1000], GSO_TCPV4, 1000), "MALFORMED"),
        (
            "IPv6 length short of the frame",
            super_frame(udp(6, 3000) + bytes(8), GSO_UDP_L4, 1000),
            "MALFORMED",
        ),
        (
            "UDP length short of the packet",
            super_frame(with_bytes(udp4, 24, b"\0\x10"), GSO_UDP_L4, 1000),
            "MALFORMED",
        ),
        ("IPv4 fragment (MF)", super_frame(with_bytes(tcp4, 6, b"\x20"), GSO_TCPV4, 1000), "MALFORMED"),
        ("IPv4 fragment (offset)", super_frame(with_bytes(tcp4, 7, b"\1"), GSO_TCPV4, 1000), "MALFORMED"),
        (
            "IPv6 extension header",
            vnet(NEEDS_CSUM, GSO_TCPV6, 0, 1000, 48, 16) + hop_by_hop_tcp6(tcp(6, 3000)),
            "MALFORMED",
        ),
        ("NEEDS_CSUM into the IPv4 header", vnet(NEEDS_CSUM, GSO_NONE, 0, 0, 0, 12) + udp(4, 1), "MALFORMED"),
        ("NEEDS_CSUM into the IPv6 header", vnet(NEEDS_CSUM, GSO_NONE, 0, 0, 20, 6) + udp(6, 1), "MALFORMED"),
        (
            "NEEDS_CSUM on no IP packet",
            vnet(NEEDS_CSUM, GSO_NONE, 0, 0, 20, 6) + bytes([0x50]) + bytes(40),
            "MALFORMED",
        ),
    ]


HOSTILE = hostile_frames()
SPLIT_DROPS = {
    "SMALL": lib.WG_SPLIT_SEGMENT_TOO_SMALL,
    "MANY": lib.WG_SPLIT_TOO_MANY_SEGMENTS,
    "MALFORMED": lib.WG_SPLIT_MALFORMED,
}
DROP_NAMES = {
    "SMALL": "tun_gso_segment_too_small",
    "MANY": "tun_gso_too_many_segments",
    "MALFORMED": "malformed_tun_frame",
}


@pytest.mark.parametrize("what,frame,reason", HOSTILE, ids=[what for what, _, _ in HOSTILE])
def test_hostile_frames_cost_no_segment(what: str, frame: bytes, reason: str) -> None:
    """Each is refused with its reason before a single segment (a single byte) is written."""
    size = 1 << 20
    out = bytearray(b"\xa5" * size)
    off, length = ffi.new("uint32_t[]", 1024), ffi.new("uint32_t[]", 1024)
    position, done = ffi.new("size_t *"), ffi.new("int *")
    count = lib.wg_tun_split(
        frame, len(frame), 0, ffi.from_buffer(out), size, position, off, length, 1024, done
    )
    assert count == SPLIT_DROPS[reason], what
    assert position[0] == 0 and out == b"\xa5" * size and not done[0]


@pytest.mark.parametrize("version", [4, 6])
def test_the_floors_and_the_most_segments_are_taken(version: int) -> None:
    """A 64 KiB TCP frame cut at the TCP floor has the most segments a frame may have; a UDP frame
    of that many datagrams at the UDP floor is taken too."""
    tcp = tcp_packet(version, 5, random.Random(version).randbytes(MOST_PAYLOAD + (20 if version == 4 else 0)))
    count, segments, done = split(super_frame(tcp, GSO_TCPV4 if version == 4 else GSO_TCPV6, MIN_TCP))
    assert done and count == MOST_SEGMENTS == 139 and segments == reference_segments(tcp, MIN_TCP)
    udp = udp_packet(version, random.Random(version).randbytes(MIN_UDP * MOST_SEGMENTS))
    count, segments, done = split(super_frame(udp, GSO_UDP_L4, MIN_UDP))
    assert done and count == MOST_SEGMENTS and segments == reference_segments(udp, MIN_UDP, udp=True)


def test_random_frames_never_crash_nor_multiply_work() -> None:
    """Whatever the header says, a frame yields at most MOST_SEGMENTS packets, none longer than
    the frame, and drop reasons are the three known ones."""
    rng = random.Random(3)
    for _ in range(3000):
        gso_type = rng.choice((GSO_TCPV4, GSO_UDP_L4))
        inner = (
            tcp_packet(4, 5, rng.randbytes(3000))
            if gso_type == GSO_TCPV4
            else udp_packet(4, rng.randbytes(3000))
        )
        frame = bytearray(super_frame(inner, gso_type, 500))
        for _ in range(rng.randrange(1, 6)):
            frame[rng.randrange(len(frame) if rng.random() < 0.5 else 80)] = rng.randrange(256)
        cut = bytes(frame[: rng.randrange(len(frame) + 1)])
        count, segments, _ = split(cut, slots=rng.choice((1, 7, MOST_SEGMENTS + 50)))
        assert count in SPLIT_DROPS.values() or 0 <= count <= MOST_SEGMENTS
        assert all(len(segment) <= len(cut) - VNET for segment in segments)


# --- merging -------------------------------------------------------------------------------------


def flow(
    version: int, count: int, size: int = 1000, seq: int = 100, last: int | None = None, **kwargs: Any
) -> list[bytes]:
    """`count` consecutive segments of one TCP flow, IPv4 ids counting up as a sender's do."""
    rng = random.Random(count * size + version)
    sizes = [size] * count if last is None else [size] * (count - 1) + [last]
    out, at = [], seq
    for index, n in enumerate(sizes):
        out.append(tcp_packet(version, at & 0xFFFFFFFF, rng.randbytes(n), ident=0x1234 + index, **kwargs))
        at += n
    return out


TIMESTAMPS = bytes.fromhex("0101080a7afe98ee878a9c56")  # NOP NOP TSval TSecr, as Linux sends


@pytest.mark.parametrize("options", [b"", TIMESTAMPS], ids=["no-options", "timestamps"])
@pytest.mark.parametrize("version", [4, 6])
def test_a_run_of_one_flow_becomes_one_super_packet(version: int, options: bytes) -> None:
    packets = flow(version, 40, last=300, options=options)
    packets[-1] = bytearray(packets[-1])  # PSH on the last segment is allowed
    l4 = 20 if version == 4 else 40
    packets[-1][l4 + 13] |= PSH
    packets[-1] = with_checksums(packets[-1], l4, 6)
    frames, frame_of = coalesce(packets)
    assert len(frames) == 1 and frame_of == [0] * 40
    flags, gso_type, hdr_len, gso, start, offset = struct.unpack_from("=BBHHHH", frames[0])
    assert (flags, gso_type, hdr_len, gso, start, offset) == (
        NEEDS_CSUM,
        GSO_TCPV4 if version == 4 else GSO_TCPV6,
        l4 + 20 + len(options),
        1000,
        l4,
        16,
    )
    super_packet = frames[0][VNET:]
    assert len(super_packet) == l4 + 20 + len(options) + 39 * 1000 + 300
    if version == 4:
        assert checksum(super_packet[:20]) == 0 and struct.unpack_from("!H", super_packet, 2)[0] == len(
            super_packet
        )
    assert resegment(frames[0]) == packets  # the kernel's segmentation gives back every segment


def test_flows_interleaved_merge_separately_and_keep_their_order() -> None:
    a = flow(4, 10)
    b = flow(4, 10, ports=(40001, 5201))
    c = flow(6, 10)
    mixed = [p for triple in zip(a, b, c, strict=True) for p in triple]
    frames, frame_of = coalesce(mixed)
    assert len(frames) == 3 and frame_of[:3] == [0, 1, 2]
    assert [resegment(f) for f in frames] == [a, b, c]


@pytest.mark.parametrize(
    "what,packets",
    [
        ("gap in sequence", [flow(4, 2)[0], flow(4, 3)[2]]),
        ("a larger one after", flow(4, 1) + flow(4, 1, size=1200, seq=1100)),
        ("after a smaller one", flow(4, 2, last=10) + flow(4, 1, seq=100 + 1010)),
        ("different ack", [flow(4, 2)[0], flow(4, 2, ack=2000)[1]]),
        ("different ports", [flow(4, 2)[0], flow(4, 2, ports=(1, 2))[1]]),
        ("SYN", flow(4, 2, flags=ACK | SYN)),
        ("FIN", flow(4, 2, flags=ACK | FIN)),
        ("after PSH", flow(4, 2, flags=ACK | PSH)),
        ("no payload", flow(4, 3, size=0)),
        ("IPv4 options", flow(4, 2, ip_options=bytes([1, 1, 1, 0]))),
        (
            "different TCP options",
            [flow(4, 2, options=bytes([1, 1, 1, 1]))[0], flow(4, 2, options=bytes([1, 1, 1, 0]))[1]],
        ),
        ("v4 then v6", [flow(4, 2)[0], flow(6, 2)[1]]),
    ],
)
def test_what_must_not_merge(what: str, packets: list[bytes]) -> None:
    """The last packet must stay on its own (the ones before may merge among themselves)."""
    frames, frame_of = coalesce(packets)
    assert frames[-1] == bytes(VNET) + packets[-1] and frame_of[-1] != frame_of[-2], what
    assert [s for f in frames for s in resegment(f)] == packets


def test_a_bad_checksum_is_not_hidden_by_merging() -> None:
    packets = flow(4, 3)
    bad = bytearray(packets[1])
    bad[-1] ^= 0xFF
    packets[1] = bytes(bad)
    frames, _ = coalesce(packets)
    assert bytes(VNET) + packets[1] in frames and len(frames) == 3


def test_merging_stops_at_64k() -> None:
    packets = flow(4, 100, size=1400)
    frames, _ = coalesce(packets)
    assert len(frames) == 3 and all(len(f) - VNET <= 65535 for f in frames)
    assert [s for f in frames for s in resegment(f)] == packets


def test_merge_off_writes_every_packet_alone() -> None:
    packets = [*flow(4, 5), udp_packet(4, b"u")]
    frames, frame_of = coalesce(packets, merge=0)
    assert frames == [bytes(VNET) + p for p in packets] and frame_of == list(range(6))


def datagrams(version: int, sizes: list[int], **kwargs: Any) -> list[bytes]:
    """UDP datagrams of one flow, IPv4 ids counting up as a sender's do."""
    rng = random.Random(sum(sizes) + version)
    return [udp_packet(version, rng.randbytes(n), ident=0x1234 + i, **kwargs) for i, n in enumerate(sizes)]


@pytest.mark.parametrize("version", [4, 6])
def test_a_datagram_that_cannot_merge_keeps_its_place(version: int) -> None:
    """An empty datagram between two of its flow: the one after it must not join the one before,
    which would write it first."""
    packets = datagrams(version, [1200, 0, 1200])
    frames, frame_of = coalesce(packets)
    assert frame_of == [0, 1, 2] and frames == [bytes(VNET) + p for p in packets]


@pytest.mark.parametrize("version", [4, 6])
def test_a_run_of_udp_datagrams_becomes_one_super_packet(version: int) -> None:
    packets = datagrams(version, [1200] * 30 + [77])
    frames, frame_of = coalesce(packets)
    assert len(frames) == 1 and frame_of == [0] * 31
    flags, gso_type, hdr_len, gso, start, offset = struct.unpack_from("=BBHHHH", frames[0])
    l4 = 20 if version == 4 else 40
    assert (flags, gso_type, hdr_len, gso, start, offset) == (NEEDS_CSUM, GSO_UDP_L4, l4 + 8, 1200, l4, 6)
    assert resegment(frames[0]) == packets
    assert coalesce(packets, merge=lib.WG_MERGE_TCP)[0] == [bytes(VNET) + p for p in packets]


def test_udp_keeps_its_order_and_its_limits() -> None:
    """A datagram joins only the latest run of its flow, never after a shorter one, at most 64."""
    one = datagrams(4, [1000, 1000, 1200, 1000, 1000] + [1000] * 70)
    other = datagrams(4, [500], ports=(1, 2))
    frames, _ = coalesce(one[:5] + other + one[5:])
    assert [len(resegment(f)) for f in frames] == [2, 2, 64, 1, 7]
    segments = [s for f in frames for s in resegment(f)]
    assert [s for s in segments if s not in other] == one  # the flow's order holds
    no_checksum = bytearray(datagrams(4, [100, 100])[1])
    no_checksum[26:28] = b"\0\0"  # IPv4 UDP without a checksum: nothing to verify, never merged
    assert len(coalesce([datagrams(4, [100, 100])[0], bytes(no_checksum)])[0]) == 2


def without_id(packet: bytes) -> bytes:
    """An IPv4 packet without its id and header checksum."""
    if packet[0] >> 4 != 4 or len(packet) < 20:
        return packet
    return packet[:4] + bytes(2) + packet[6:10] + bytes(2) + packet[12:]


def test_random_packets_never_crash_and_keep_every_byte() -> None:
    rng = random.Random(4)
    for _ in range(200):
        packets = []
        for _ in range(rng.randrange(1, 40)):
            choice = rng.random()
            if choice < 0.6:
                version, count, size = rng.choice((4, 6)), rng.randrange(1, 5), rng.randrange(1, 1500)
                options = rng.choice((b"", TIMESTAMPS))
                packets += flow(version, count, size=size, seq=rng.randrange(2**32), options=options)
            elif choice < 0.8:
                packets.append(udp_packet(4, rng.randbytes(rng.randrange(100))))
            else:
                packets.append(rng.randbytes(rng.randrange(1, 80)))
        frames, frame_of = coalesce(packets)
        # The kernel numbers the IPv4 ids of a merged packet's segments from the first one.
        assert sorted(map(without_id, (s for f in frames for s in resegment(f)))) == sorted(
            map(without_id, packets)
        )
        firsts = [frame_of.index(f) for f in range(len(frames))]
        assert firsts == sorted(firsts)  # frames keep the order of their first packets


# --- the reader and writer on a datagram socket --------------------------------------------------


@pytest.fixture
def fake_tun() -> Iterator[tuple[socket.socket, Tun]]:
    with socket_tun() as pair:
        yield pair


def test_reader_drops_malformed_frames_and_finishes_big_ones_later(
    fake_tun: tuple[socket.socket, Tun], monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel, tun = fake_tun
    monkeypatch.setattr(tun_offload, "READ_SLOTS", 8)
    reader = tun_offload.TunReader(tun)
    packet = tcp_packet(4, 1, random.Random(5).randbytes(20 * 1000))
    single = udp_packet(6, b"after")
    for frame in (b"\0" * 5, super_frame(packet, GSO_TCPV4, 1000), vnet() + single):
        kernel.send(frame)
    batches = []
    while not batches or reader.pending:
        batch = reader.read()  # the reader's own: copied before the next read
        batches.append(batch.packets(0, len(batch)))
    assert [len(b) for b in batches] == [8, 8, 5]  # the super-packet's 20 segments, then the datagram
    assert [p for b in batches for p in b] == [*reference_segments(packet, 1000), single]
    assert reader.take_drops() == {"malformed_tun_frame": 1} and reader.take_drops() == {}
    assert reader.superframes == 1 and len(reader.read()) == 0


def test_reader_counts_hostile_frames_by_reason(fake_tun: tuple[socket.socket, Tun]) -> None:
    kernel, tun = fake_tun
    reader = tun_offload.TunReader(tun)
    single = udp_packet(4, b"after")
    for _, frame, _ in HOSTILE:
        kernel.send(frame)
    kernel.send(vnet() + single)
    packets: list[bytes] = []
    while len(packets) < 1:
        batch = reader.read()
        packets += batch.packets(0, len(batch))
    assert packets == [single]  # nothing of the hostile frames got through
    counted = Counter(DROP_NAMES[reason] for _, _, reason in HOSTILE)
    assert reader.take_drops() == counted and reader.superframes == 0


def test_reader_reads_at_most_read_slots_frames_per_call(
    fake_tun: tuple[socket.socket, Tun], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that keeps the TUN full of frames we drop cannot keep one read call going: it
    reads READ_SLOTS frames at most, then the event loop gets its turn."""
    kernel, tun = fake_tun
    monkeypatch.setattr(tun_offload, "READ_SLOTS", 4)
    reader = tun_offload.TunReader(tun)
    hostile = super_frame(tcp_packet(4, 0, b"x" * 3000), GSO_TCPV4, 1)
    single = udp_packet(4, b"after")
    for _ in range(10):
        kernel.send(hostile)
    kernel.send(vnet() + single)
    dropped = []
    for _ in range(2):
        assert len(reader.read()) == 0 and not reader.pending
        dropped.append(reader.take_drops())
    batch = reader.read()
    assert batch.packets(0, len(batch)) == [single]
    assert [*dropped, reader.take_drops()] == [{"tun_gso_segment_too_small": n} for n in (4, 4, 2)]


# --- a real TUN ----------------------------------------------------------------------------------

UDP_SEGMENT = 103


@pytest.fixture
def vnet_tun(topology: Topology) -> Iterator[tuple[Host, Tun]]:
    """A TUN with IFF_VNET_HDR, up, 10.1.0.1/24 and fd00::1/64, in a fresh namespace."""
    host = topology.host("t")
    tun = open_tun("offl0", host.name, vnet_hdr=True)
    try:
        host.ip("link", "set", "offl0", "mtu", "1420", "up")
        host.ip("address", "add", "10.1.0.1/24", "dev", "offl0")
        host.ip("address", "add", "fd00::1/64", "dev", "offl0", "nodad")
        yield host, tun
    finally:
        tun.close()


@pytest.mark.root
def test_offloads_fall_back_flag_by_flag(topology: Topology, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel without USO (before 6.2) refuses its flags with EINVAL: TSO is kept."""
    real = fcntl.ioctl
    asked: list[int] = []

    def no_uso(fd: int, request: int, arg: Any = 0, *rest: Any) -> Any:
        if request == TUNSETOFFLOAD:
            asked.append(arg)
            if arg & (TUN_F_USO4 | TUN_F_USO6):
                raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, request, arg, *rest)

    host = topology.host("t")
    monkeypatch.setattr(fcntl, "ioctl", no_uso)
    with open_tun("offl0", host.name, vnet_hdr=True) as tun:
        assert tun.offloads == TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 and len(asked) == 2
        assert tun.describe_offloads() == "IFF_VNET_HDR, offloads CSUM TSO4 TSO6"
    with open_tun("offl1", host.name) as tun:
        assert tun.offloads == 0 and asked[-1] == 0  # a re-attached persistent TUN loses old offloads


@pytest.mark.root
@pytest.mark.parametrize("version", [4, 6])
def test_reader_splits_what_the_kernel_hands_over(vnet_tun: tuple[Host, Tun], version: int) -> None:
    """A UDP_SEGMENT send into the TUN's subnet comes out of the TUN as one super-packet (USO),
    and TunReader gives the datagrams back as the kernel would have sent them one by one."""
    host, tun = vnet_tun
    if not tun.offloads & TUN_F_USO4:
        pytest.skip("this kernel offers no USO on TUNs")
    payload = random.Random(version).randbytes(1200 * 10 + 7)
    family, target = (socket.AF_INET, "10.1.0.2") if version == 4 else (socket.AF_INET6, "fd00::2")
    with in_netns(host.name), socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.sendmsg([payload], [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("=H", 1200))], 0, (target, 9))
    reader = tun_offload.TunReader(tun)
    packets: list[bytes] = []
    for _ in range(50):
        batch = reader.read()
        packets += [p for p in batch.packets(0, len(batch)) if p[9 if version == 4 else 6] == 17]
        if len(packets) == 11:
            break
        time.sleep(0.01)
    assert reader.superframes >= 1 and reader.take_drops() == {}
    l4 = 20 if version == 4 else 40
    assert b"".join(p[l4 + 8 :] for p in packets) == payload
    assert all(l4_checksum_ok(p, l4, 17) for p in packets) and max(map(len, packets)) == l4 + 8 + 1200


def rx_packets(host: Host, ifname: str = "offl0") -> int:
    """Packets pywg wrote into a TUN (the test TUN by default), as its driver counted them."""
    return int(host.run(["cat", f"/sys/class/net/{ifname}/statistics/rx_packets"]).stdout)


@pytest.mark.root
def test_writer_hands_the_kernel_merged_packets(vnet_tun: tuple[Host, Tun]) -> None:
    host, tun = vnet_tun
    writer = tun_offload.TunWriter(tun)
    uso = bool(writer.merge & lib.WG_MERGE_UDP)
    assert uso == bool(tun.offloads & TUN_F_USO4)
    writer.write(flow(4, 20, size=1000) + flow(6, 20, size=1000) + datagrams(6, [1200] * 20))
    assert writer.coalesced == (57 if uso else 38) and writer.failed == 0
    assert rx_packets(host) == (3 if uso else 22)  # the kernel took every super-packet


class RefusingUdpGso:
    """pywg.native._hotpath's lib, but the TUN refuses merged UDP with EINVAL (as a kernel might)."""

    def __init__(self, lib: Any) -> None:
        self._lib = lib

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lib, name)

    def wg_tun_write(self, fd: int, buf: Any, off: Any, length: Any, n: int, error: Any, lost: Any) -> int:
        for i in range(n):
            if buf[off[i] + 1] == GSO_UDP_L4:
                error[0], lost[0] = errno.EINVAL, 0
                return i
            self._lib.wg_tun_write(fd, buf, off + i, length + i, 1, error, lost)
        error[0] = 0
        return n


@pytest.mark.root
def test_writer_stops_merging_udp_when_the_kernel_refuses(vnet_tun: tuple[Host, Tun]) -> None:
    host, tun = vnet_tun
    writer = tun_offload.TunWriter(tun)
    if not writer.merge & lib.WG_MERGE_UDP:
        pytest.skip("this kernel offers no USO on TUNs")
    writer._lib = RefusingUdpGso(writer._lib)
    udp = datagrams(4, [1000] * 10)
    packets = [udp_packet(4, b"first", ports=(1, 2)), *flow(4, 10, size=1000), *udp, *flow(6, 5, size=100)]
    writer.write(packets)
    assert writer.merge == lib.WG_MERGE_TCP and writer.failed == 0  # TCP is still merged
    assert rx_packets(host) == 1 + 1 + 10 + 1  # every packet went in
    writer.write(udp)
    assert writer.coalesced == 9 + 4 and rx_packets(host) == 13 + 10


# --- end to end ----------------------------------------------------------------------------------

INNER_A = ["10.98.0.1/24", "fd98::1/64"]
INNER_B = ["10.98.0.2/24", "fd98::2/64"]
MB = 1024 * 1024
MTU = 1420


@pytest.fixture
def pair(topology: Topology) -> tuple[Host, Host, InterfaceConfig, InterfaceConfig]:
    a, b = topology.host("a"), topology.host("b")
    wire = link(a, b, ["192.0.2.1/24"], ["192.0.2.2/24"])
    return (
        a,
        b,
        *tunnel_configs(
            KeyPair.generate(),
            KeyPair.generate(),
            INNER_A,
            INNER_B,
            a_endpoint=wire.address(a, 4),
            b_endpoint=wire.address(b, 4),
            mtu=MTU,
        ),
    )


def offload_counts(pywg: Pywg) -> tuple[int, int]:
    """(super-packets split, packets merged) that a stopped pywg logged."""
    found = re.search(r"TUN offloads: (\d+) super-packets split, (\d+) packets merged", pywg.log())
    assert found, pywg.log()
    return int(found[1]), int(found[2])


def tun_average(host: Host, ifname: str, direction: str) -> float:
    """Bytes per packet the TUN's driver counted: tx = handed to pywg, rx = written by pywg."""

    def read(name: str) -> int:
        return int(host.run(["cat", f"/sys/class/net/{ifname}/statistics/{direction}_{name}"]).stdout)

    return read("bytes") / max(1, read("packets"))


def transfers(a: Host, b: Host) -> None:
    for server, client, address in (
        (b, a, "10.98.0.2"),
        (a, b, "10.98.0.1"),
        (b, a, "fd98::2"),
        (a, b, "fd98::1"),
    ):
        assert tcp_transfer(server, client, address, 8 * MB), f"TCP transfer to {address}"


needs_offload = pytest.mark.skipif(
    not tun_offload.available(), reason=f"TUN offloads are off: {tun_offload.unavailable_reason()}"
)
# pywg processes that split and merge: the pure-Python path turns the TUN's offloads off.
needs_c_offload = pytest.mark.skipif(
    not tun_offload.available() or not loader.available(),
    reason=f"no TUN offloads in C: {tun_offload.unavailable_reason() or loader.unavailable_reason()}",
)


@pytest.mark.root
@needs_c_offload
def test_pywg_to_pywg_with_offloads(pair: tuple[Host, Host, InterfaceConfig, InterfaceConfig]) -> None:
    """Super-packets from the TUN are split before sealing, decrypted segments merged before writing:
    the TUNs count packets far larger than the MTU, and every transfer arrives intact."""
    a, b, cfg_a, cfg_b = pair
    pywg_a = Pywg(a, cfg_a).start()
    pywg_b = Pywg(b, cfg_b).start()
    transfers(a, b)
    for pywg in (pywg_a, pywg_b):
        assert tun_average(pywg.host, pywg.ifname, "tx") > MTU  # TSO: the kernel handed super-packets
        assert pywg.stop() == 0
        assert "IFF_VNET_HDR, offloads CSUM TSO4 TSO6" in pywg.log(), pywg.log()
        split, merged = offload_counts(pywg)
        assert split > 100 and merged > 1000, pywg.log()


UDP_RECEIVER = r"""
import hashlib, socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
sock = socket.socket(family, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], 7000))
sock.settimeout(2.0)
print("ready", flush=True)
good = bad = 0
try:
    while True:
        data = sock.recv(2048)
        ok = len(data) == 1200 and data[32:] == hashlib.sha256(data[:32]).digest() * 36 + data[:32][:16]
        good, bad = good + ok, bad + (not ok)
except socket.timeout:
    pass
print(good, bad, flush=True)
"""
UDP_SENDER = r"""
import hashlib, os, socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
sock = socket.socket(family, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[2])):
    head = os.urandom(32)
    sock.sendto(head + hashlib.sha256(head).digest() * 36 + head[:16], (sys.argv[1], 7000))
"""


@pytest.mark.root
@needs_offload
@pytest.mark.parametrize("address", ["10.98.0.2", "fd98::2"])
def test_udp_datagrams_arrive_whole_through_merged_writes(
    pair: tuple[Host, Host, InterfaceConfig, InterfaceConfig], address: str
) -> None:
    """Datagrams of one flow merged into UDP super-packets (where the TUN took USO) arrive as
    the datagrams they were, each intact."""
    a, b, cfg_a, cfg_b = pair
    Pywg(a, cfg_a).start()
    pywg_b = Pywg(b, cfg_b).start()
    assert tcp_transfer(b, a, address, 1024)  # the handshake is done
    receiver = b.popen([sys.executable, "-c", UDP_RECEIVER, address], stdout=subprocess.PIPE)
    assert receiver.stdout is not None and receiver.stdout.readline() == b"ready\n"
    a.run([sys.executable, "-c", UDP_SENDER, address, "20000"], timeout=60)
    good, bad = map(int, receiver.stdout.readline().split())
    assert bad == 0 and good > 2000
    assert pywg_b.stop() == 0
    _, merged = offload_counts(pywg_b)
    uso = "USO4 USO6" in pywg_b.log()
    assert merged > 100 or not uso


@pytest.mark.root
@needs_c_offload
def test_offloading_pywg_with_wireguard_go(pair: tuple[Host, Host, InterfaceConfig, InterfaceConfig]) -> None:
    a, b, cfg_a, cfg_b = pair
    pywg = Pywg(a, cfg_a).start()
    WireguardGo(b, cfg_b).start()
    transfers(a, b)
    assert tun_average(a, pywg.ifname, "tx") > MTU
    assert pywg.stop() == 0
    split, merged = offload_counts(pywg)
    assert split > 100 and merged > 1000


SOL_PACKET, PACKET_VNET_HDR = 263, 15  # <linux/socket.h>, <linux/if_packet.h>
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
# Hostile frames the kernel takes from the packet socket (sendto succeeds) but drops itself before
# the TUN: a UDP packet declared TCP, and the reverse.
DROPPED_BY_THE_KERNEL = {"UDP packet as TCPV4", "TCPv6 packet as UDP"}


def write_frames(host: Host, ifname: str, frames: list[bytes]) -> list[bool]:
    """Write each frame (virtio_net_hdr + IP packet) on `ifname` from inside `host`, as a process
    with CAP_NET_RAW in a Pod can: AF_PACKET with PACKET_VNET_HDR. Whether the kernel took each:
    it refuses some itself (EINVAL)."""
    taken = []
    with in_netns(host.name), socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * MB)
        for frame in frames:
            try:
                sock.sendto(frame, (ifname, ETH_P_IPV6 if frame[VNET] >> 4 == 6 else ETH_P_IP))
            except OSError as error:
                if error.errno != errno.EINVAL:
                    raise
                taken.append(False)
            else:
                taken.append(True)
    return taken


@pytest.mark.root
@needs_c_offload
def test_hostile_frames_written_in_the_namespace(
    pair: tuple[Host, Host, InterfaceConfig, InterfaceConfig],
) -> None:
    """Issue 13's attack on a running pywg: frames written on its TUN from inside its namespace,
    a 64 KiB TCP super-packet of gso_size 1 among them, are dropped and counted under their
    reasons (its UAPI `stats=1`, what `pywg stats` prints), not one of them becomes a packet
    through the tunnel, and traffic goes on, its super-packets split as before."""
    a, b, cfg_a, cfg_b = pair
    pywg_a = Pywg(a, cfg_a).start()
    pywg_b = Pywg(b, cfg_b).start()
    assert a.ping("10.98.0.2", count=1, timeout=10)  # the handshake is done
    hostile = [
        (frame, reason)
        for what, frame, reason in hostile_frames(("10.98.0.1", "10.98.0.2"), ("fd98::1", "fd98::2"))
        if what not in DROPPED_BY_THE_KERNEL
    ]
    before, delivered = uapi_drops(pywg_a.name), rx_packets(b, pywg_b.ifname)
    taken = write_frames(a, pywg_a.ifname, [frame for frame, _ in hostile])
    assert taken[0], "the kernel refused the 64 KiB TCP frame of gso_size 1"
    expected = Counter(DROP_NAMES[reason] for (_, reason), took in zip(hostile, taken, strict=True) if took)
    counted: Counter[str] = Counter()

    def all_counted() -> bool:
        after = uapi_drops(pywg_a.name)
        counted.clear()
        counted.update({k: n for k in after if k != "no_route" and (n := after[k] - before[k])})
        return all(counted[reason] >= n for reason, n in expected.items())

    try:
        wait_until(all_counted, 20.0, f"drops {dict(expected)}")
    except AssertionError:
        raise AssertionError(f"expected drops {dict(expected)}, counted {dict(counted)}") from None
    assert counted == expected  # (no_route: the kernel's own IPv6 chatter on the TUN)
    assert rx_packets(b, pywg_b.ifname) == delivered  # nothing of them crossed the tunnel
    assert tcp_transfer(b, a, "10.98.0.2", 8 * MB) and tcp_transfer(a, b, "10.98.0.1", 8 * MB)
    assert pywg_a.stop() == 0 and pywg_b.stop() == 0
    split, _ = offload_counts(pywg_a)
    assert split > 100, pywg_a.log()


@pytest.mark.root
@needs_offload
def test_the_pure_python_path_takes_whole_packets(
    pair: tuple[Host, Host, InterfaceConfig, InterfaceConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """PYWG_NO_EXT: the same vnet_hdr TUN as the C path, its offloads off (the kernel segments and
    checksums faster than Python splits and merges: pywg/runtime/tun_io.py)."""
    a, b, cfg_a, cfg_b = pair
    monkeypatch.setenv(loader.DISABLE_ENV, "1")
    pywg_a = Pywg(a, cfg_a).start()
    monkeypatch.delenv(loader.DISABLE_ENV)
    pywg_b = Pywg(b, cfg_b).start()
    assert tcp_transfer(b, a, "10.98.0.2", 2 * MB) and tcp_transfer(a, b, "10.98.0.1", 2 * MB)
    assert "IFF_VNET_HDR, offloads none (pure Python)" in pywg_a.log(), pywg_a.log()
    assert tun_average(a, pywg_a.ifname, "rx") <= MTU and tun_average(a, pywg_a.ifname, "tx") <= MTU
    assert pywg_a.stop() == 0 and pywg_b.stop() == 0
    assert offload_counts(pywg_a) == (0, 0), pywg_a.log()


@pytest.mark.root
@needs_offload
def test_offloads_can_be_turned_off(
    pair: tuple[Host, Host, InterfaceConfig, InterfaceConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """PYWG_NO_TUN_OFFLOAD: a TUN without IFF_VNET_HDR, the same tunnel."""
    a, b, cfg_a, cfg_b = pair
    variable = tun_offload.DISABLE_ENV
    monkeypatch.setenv(variable, "1")
    pywg_a = Pywg(a, cfg_a).start()
    monkeypatch.delenv(variable)
    pywg_b = Pywg(b, cfg_b).start()
    assert tcp_transfer(b, a, "10.98.0.2", 2 * MB) and tcp_transfer(a, b, "10.98.0.1", 2 * MB)
    assert "no IFF_VNET_HDR" in pywg_a.log() and "IFF_VNET_HDR, offloads" in pywg_b.log()
    assert tun_average(a, pywg_a.ifname, "rx") <= MTU and tun_average(a, pywg_a.ifname, "tx") <= MTU
    assert pywg_a.stop() == 0 and pywg_b.stop() == 0


class _RecordingLoop:
    """What an engine asks of its loop, recorded: readers added and removed, callbacks scheduled."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def remove_reader(self, fd: int) -> bool:
        self.calls.append(("remove_reader", fd))
        return True

    def add_reader(self, fd: int, callback: Any) -> None:
        self.calls.append(("add_reader", fd))

    def call_later(self, delay: float, callback: Any) -> SimpleNamespace:
        self.calls.append(("call_later", delay))
        return SimpleNamespace(callback=callback, cancel=lambda: None)

    def call_soon(self, callback: Any) -> None:
        self.calls.append(("call_soon", callback))

    def time(self) -> float:
        return time.monotonic()

    def call_at(self, when: float, callback: Any) -> SimpleNamespace:
        return SimpleNamespace(cancel=lambda: None)


@pytest.mark.root
@needs_c_offload
def test_a_tun_giving_only_refused_frames_is_not_read_for_a_while(vnet_tun: tuple[Host, Tun]) -> None:
    """A Pod writing nothing but hostile frames: after each read that gave only drops, the engine
    stops reading its TUN for a pause that doubles (the frames wait in, and overflow, the kernel's
    queue instead of costing the loop that serves every other tunnel); a real packet ends it."""
    host, tun = vnet_tun
    host.sysctl({"net.ipv6.conf.offl0.disable_ipv6": "1"})  # no router solicitations or MLD reports
    device = Device(KeyPair.generate().private, clock=SystemClock(), rng=system_rng, mtu=1420)
    udp = UdpSockets(0)
    engine = Engine(device, tun, udp, "offl-pause")
    loop = _RecordingLoop()
    engine._loop = cast(Any, loop)
    engine.stopped = cast(Any, SimpleNamespace(done=lambda: False))
    hostile = next(frame for what, frame, _ in HOSTILE if what == "TCP gso_size 1, 64 KiB")
    while len(engine.tun_io.read()):  # what the kernel sent before IPv6 went off
        pass
    try:
        for pause in (TUN_PAUSE_MIN, 2 * TUN_PAUSE_MIN):
            assert write_frames(host, "offl0", [hostile] * 3) == [True] * 3
            loop.calls.clear()
            engine._tun_readable()
            assert loop.calls == [("remove_reader", tun.fd), ("call_later", pause)], loop.calls
        assert engine._tun_resume is not None
        engine._tun_resume.callback()
        assert loop.calls[-1] == ("add_reader", tun.fd)
        with in_netns(host.name), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"x" * 100, ("10.1.0.2", 9))
        loop.calls.clear()
        engine._tun_readable()
        assert ("remove_reader", tun.fd) not in loop.calls and engine._tun_pause == 0.0
        assert device.drops["tun_gso_segment_too_small"] == 6 and device.drops["no_route"] == 1
    finally:
        udp.close()
