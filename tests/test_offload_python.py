"""TUN offloads in pure Python (pywg/runtime/offload.py, tun_offload.PythonTunReader/Writer) held to
the C (pywg/native/offload.c) byte for byte: the same segments from the same frames, the same drop
reason for every hostile frame, the same merged frames from the same packets, random inputs
included; the Python reader and writer on a datagram socket standing in for a TUN and on a real
vnet_hdr TUN. tests/test_offload.py holds the C to a naive reference; here the C is the reference.
"""

from __future__ import annotations

import errno
import os
import random
import socket
import struct
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from pywg.runtime import offload, tun_offload
from pywg.runtime.netns import in_netns
from pywg.runtime.tun import TUN_F_USO4, TUN_F_USO6, Tun
from tests.support.netsim import checksum
from tests.support.socket_tun import socket_tun
from tests.support.topology import Host
from tests.test_offload import (
    DROP_NAMES,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP_L4,
    HOSTILE,
    MIN_TCP,
    MIN_UDP,
    MOST_PAYLOAD,
    NEEDS_CSUM,
    SPLIT_DROPS,
    TIMESTAMPS,
    datagrams,
    flow,
    l4_checksum_ok,
    lib,
    pseudo_header,
    rx_packets,
    super_frame,
    tcp_packet,
    udp_packet,
    vnet,
    vnet_tun,  # noqa: F401 (a fixture)
)
from tests.test_offload import coalesce as c_coalesce
from tests.test_offload import split as c_split

pytest_plugins = ["tests.support.topology"]


def same_split(frame: bytes, slots: int = 1024, first: int = 0) -> int | list[bytes]:
    """What Python makes of `frame`, after checking that C makes exactly the same."""
    count, segments, done = c_split(frame, slots=slots, first=first)
    ours = offload.split_frame(frame, first, slots)
    if isinstance(ours, int):
        assert count == ours < 0
        return ours
    assert (segments, done) == (ours[0], ours[1]) and count == len(segments)
    return segments


def same_coalesce(packets: list[bytes], merge: int = 3) -> list[bytes]:
    frames, frame_of = c_coalesce(packets, merge)
    assert offload.coalesce(packets, merge) == (frames, frame_of)
    return frames


def test_the_constants_are_the_c_ones() -> None:
    assert (offload.GSO_MIN_TCP_SEGMENT, offload.GSO_MIN_UDP_SEGMENT) == (MIN_TCP, MIN_UDP)
    assert offload.GSO_MAX_SEGMENTS == lib.WG_GSO_MAX_SEGMENTS
    assert offload.VNET_HDR_LEN == lib.WG_VNET_HDR_LEN
    assert (offload.SPLIT_MALFORMED, offload.SPLIT_SEGMENT_TOO_SMALL, offload.SPLIT_TOO_MANY_SEGMENTS) == (
        lib.WG_SPLIT_MALFORMED,
        lib.WG_SPLIT_SEGMENT_TOO_SMALL,
        lib.WG_SPLIT_TOO_MANY_SEGMENTS,
    )
    assert (offload.MERGE_TCP, offload.MERGE_UDP) == (lib.WG_MERGE_TCP, lib.WG_MERGE_UDP)


def test_the_residue_is_the_internet_checksum() -> None:
    """One big-integer conversion and one division give RFC 1071's sum, odd lengths included."""
    rng = random.Random(1)
    buffers = [b"", b"\0", bytes(7), b"\xff" * 6, b"\xff\xff\0\0"] + [
        rng.randbytes(rng.randrange(1, 2000)) for _ in range(300)
    ]
    for data in buffers:
        folded = ~checksum(data) & 0xFFFF  # the folded sum, 0xFFFF for a non-zero multiple of it
        assert offload.residue(data) == folded % 0xFFFF


# --- splitting -------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize(
    "payload,gso",
    [(64000, 1380), (1380 * 5, 1380), (1381, 1380), (7, 1000), (0, 1000), (MOST_PAYLOAD, MIN_TCP)],
)
def test_tso_split_is_the_c_one(version: int, payload: int, gso: int) -> None:
    rng = random.Random(payload * gso + version)
    options = TIMESTAMPS if payload < MOST_PAYLOAD else b""  # the largest packet has no room for them
    for flags in (0x10, 0x10 | 0x08 | 0x01 | 0x80):
        packet = tcp_packet(version, 0xFFFFFF00, rng.randbytes(payload), flags=flags, options=options)
        frame = super_frame(packet, GSO_TCPV4 if version == 4 else GSO_TCPV6, gso)
        segments = same_split(frame)
        assert isinstance(segments, list) and segments
        assert all(l4_checksum_ok(s, 20 if version == 4 else 40, 6) for s in segments)
        for first, slots in ((0, 1), (1, 3), (2, 200)):
            same_split(frame, slots=slots, first=first)


@pytest.mark.parametrize("version", [4, 6])
def test_uso_split_is_the_c_one(version: int) -> None:
    rng = random.Random(version)
    for size, gso in ((10000, 1472), (MIN_UDP * 139, MIN_UDP), (1, 8), (65000 - 40, 1200)):
        same_split(super_frame(udp_packet(version, rng.randbytes(size)), GSO_UDP_L4, gso))


def test_a_udp_segment_whose_checksum_comes_out_0_gets_0xffff() -> None:
    """0 means "no checksum" in UDP: C and Python write 0xFFFF instead."""
    payload = bytearray(random.Random(9).randbytes(250))
    payload[98:100] = b"\0\0"
    first = bytearray(udp_packet(4, bytes(payload[:100])))  # as the first segment will be
    first[26:28] = b"\0\0"
    folded = ~checksum(pseudo_header(bytes(first), 17, len(first) - 20) + bytes(first[20:])) & 0xFFFF
    payload[98:100] = struct.pack("!H", 0xFFFF - folded)  # the segment's words now sum to 0xFFFF
    segments = same_split(super_frame(udp_packet(4, bytes(payload)), GSO_UDP_L4, 100))
    assert isinstance(segments, list) and len(segments) == 3 and segments[0][26:28] == b"\xff\xff"
    assert l4_checksum_ok(segments[0], 20, 17)


@pytest.mark.parametrize("version", [4, 6])
def test_needs_csum_without_gso_is_the_c_one(version: int) -> None:
    rng = random.Random(version)
    good = udp_packet(version, rng.randbytes(101))
    for _ in range(500):
        start, offset = rng.randrange(70), rng.randrange(40)
        same_split(vnet(rng.choice((0, NEEDS_CSUM)), 0, 0, 0, start, offset) + good)
    # A sum of nothing but zero words: the C stores 0xFFFF there, and so must Python.
    zeros = bytes([0x45]) + bytes(19) + bytes(10)
    assert same_split(vnet(NEEDS_CSUM, 0, 0, 0, 20, 4) + zeros) == [zeros[:24] + b"\xff\xff" + zeros[26:]]


@pytest.mark.parametrize("what,frame,reason", HOSTILE, ids=[what for what, _, _ in HOSTILE])
def test_hostile_frames_are_refused_as_c_refuses_them(what: str, frame: bytes, reason: str) -> None:
    assert same_split(frame) == SPLIT_DROPS[reason], what


def test_random_frames_are_split_as_c_splits_them() -> None:
    """Super-packets with bytes changed anywhere, cut anywhere, and headers of every kind."""
    rng = random.Random(3)
    for _ in range(3000):
        gso_type = rng.choice((GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, GSO_TCPV4 | 0x80, 3))
        version = 6 if gso_type == GSO_TCPV6 else rng.choice((4, 6))
        payload = rng.randbytes(rng.randrange(3000))
        inner = udp_packet(version, payload) if gso_type == GSO_UDP_L4 else tcp_packet(version, 5, payload)
        frame = bytearray(super_frame(inner, gso_type, rng.choice((7, 8, 100, 471, 472, 500, 1380))))
        for _ in range(rng.randrange(6)):
            frame[rng.randrange(len(frame) if rng.random() < 0.5 else min(80, len(frame)))] = rng.randrange(
                256
            )
        cut = bytes(frame[: rng.randrange(len(frame) + 1)]) if rng.random() < 0.3 else bytes(frame)
        same_split(cut, slots=rng.choice((1, 7, 200)), first=rng.choice((0, 0, 1, 5)))


# --- merging ---------------------------------------------------------------------------------------


def test_runs_of_one_flow_merge_as_in_c() -> None:
    for version in (4, 6):
        for options in (b"", TIMESTAMPS):
            assert len(same_coalesce(flow(version, 100, size=1400, options=options))) == 3
        assert len(same_coalesce(datagrams(version, [1200] * 70 + [77]))) == 2
        assert len(same_coalesce(datagrams(version, [1200] * 30), merge=offload.MERGE_TCP)) == 30


def test_what_must_not_merge_stays_alone_as_in_c() -> None:
    bad = bytearray(flow(4, 3)[1])
    bad[-1] ^= 0xFF
    cases = [
        [flow(4, 2)[0], flow(4, 3)[2]],
        flow(4, 1) + flow(4, 1, size=1200, seq=1100),
        flow(4, 2, last=10) + flow(4, 1, seq=100 + 1010),
        [flow(4, 2)[0], flow(4, 2, ack=2000)[1]],
        [flow(4, 2)[0], flow(4, 2, ports=(1, 2))[1]],
        flow(4, 2, flags=0x12),
        flow(4, 2, flags=0x11),
        flow(4, 3, flags=0x18),
        flow(4, 3, size=0),
        flow(4, 2, ip_options=bytes([1, 1, 1, 0])),
        [flow(4, 2, options=bytes([1, 1, 1, 1]))[0], flow(4, 2, options=bytes([1, 1, 1, 0]))[1]],
        [flow(4, 2)[0], flow(6, 2)[1]],
        [flow(4, 3)[0], bytes(bad), flow(4, 3)[2]],
        datagrams(4, [1200, 0, 1200]),
        datagrams(6, [1200, 1200, 0, 1200, 1200]),
    ]
    for packets in cases:
        same_coalesce(packets)


def test_random_packets_merge_as_in_c() -> None:
    """Flows interleaved, datagrams, noise, corrupted checksums, every merge setting."""
    rng = random.Random(4)
    for _ in range(150):
        packets: list[bytes] = []
        for _ in range(rng.randrange(1, 60)):
            choice = rng.random()
            if choice < 0.6:
                version, count, size = rng.choice((4, 6)), rng.randrange(1, 8), rng.randrange(1, 1500)
                options = rng.choice((b"", TIMESTAMPS))
                run = flow(version, count, size=size, seq=rng.randrange(2**32), options=options)
                if rng.random() < 0.2:
                    index = rng.randrange(len(run))
                    broken = bytearray(run[index])
                    broken[rng.randrange(len(broken))] ^= 1 << rng.randrange(8)
                    run[index] = bytes(broken)
                packets += run
            elif choice < 0.8:
                sizes = [rng.randrange(1, 300)] * rng.randrange(1, 70)
                packets += datagrams(rng.choice((4, 6)), sizes, ports=(5000, rng.choice((6000, 6001))))
            else:
                packets.append(rng.randbytes(rng.randrange(1, 80)))
        same_coalesce(packets, rng.choice((0, 1, 2, 3, 3, 3)))


# --- the reader and writer -------------------------------------------------------------------------


@pytest.fixture
def fake_tun() -> Iterator[tuple[socket.socket, Tun]]:
    with socket_tun(TUN_F_USO4 | TUN_F_USO6) as pair:
        yield pair


def read_all(reader: Any) -> list[list[bytes]]:
    batches = []
    while not batches or reader.pending:
        batch = reader.read()
        batches.append(batch.packets(0, len(batch)))
    return batches


def test_the_python_reader_reads_as_the_c_one(
    fake_tun: tuple[socket.socket, Tun], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same packets in the same batches (READ_SLOTS bounds both), the same drops by reason."""
    kernel, tun = fake_tun
    monkeypatch.setattr(tun_offload, "READ_SLOTS", 8)
    packet = tcp_packet(4, 1, random.Random(5).randbytes(20 * 1000))
    frames = [b"\0" * 5, super_frame(packet, GSO_TCPV4, 1000), vnet() + udp_packet(6, b"after")]
    frames += [frame for _, frame, _ in HOSTILE] + [vnet() + udp_packet(4, b"last")]
    results = []
    for reader in (tun_offload.TunReader(tun), tun_offload.PythonTunReader(tun)):
        for frame in frames:
            kernel.send(frame)
        batches: list[list[bytes]] = []
        while sum(map(len, batches)) < 22:
            batches += read_all(reader)
        results.append((batches, reader.take_drops(), reader.superframes, len(reader.read())))
    c, python = results
    assert python == c
    drops = Counter(DROP_NAMES[reason] for _, _, reason in HOSTILE) + Counter({"malformed_tun_frame": 1})
    assert python[1] == dict(drops) and python[2] == 1


def test_the_python_reader_reads_at_most_read_slots_frames(
    fake_tun: tuple[socket.socket, Tun], monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel, tun = fake_tun
    monkeypatch.setattr(tun_offload, "READ_SLOTS", 4)
    reader = tun_offload.PythonTunReader(tun)
    for _ in range(10):
        kernel.send(super_frame(tcp_packet(4, 0, b"x" * 3000), GSO_TCPV4, 1))
    kernel.send(vnet() + udp_packet(4, b"after"))
    dropped = []
    for _ in range(2):
        assert len(reader.read()) == 0 and not reader.pending
        dropped.append(reader.take_drops())
    batch = reader.read()
    assert batch.packets(0, len(batch)) == [udp_packet(4, b"after")]
    assert [*dropped, reader.take_drops()] == [{"tun_gso_segment_too_small": n} for n in (4, 4, 2)]


def test_the_python_writer_writes_the_c_frames(fake_tun: tuple[socket.socket, Tun]) -> None:
    kernel, tun = fake_tun
    packets = [udp_packet(4, b"first", ports=(1, 2)), *flow(4, 30, size=1000), *datagrams(6, [1000] * 10)]
    written = []
    for writer in (tun_offload.TunWriter(tun), tun_offload.PythonTunWriter(tun)):
        writer.write(packets)
        frames = []
        while True:
            try:
                frames.append(kernel.recv(1 << 17, socket.MSG_DONTWAIT))
            except BlockingIOError:
                break
        written.append((frames, writer.coalesced, writer.failed, writer.merge))
    assert written[1] == written[0] and len(written[0][0]) == 3


def test_the_python_writer_stops_merging_udp_when_the_kernel_refuses(
    fake_tun: tuple[socket.socket, Tun], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As TunWriter (tests/test_offload.py): merged UDP refused with EINVAL, every packet still goes in."""
    kernel, tun = fake_tun
    writer = tun_offload.PythonTunWriter(tun)
    real_write = os.write

    def refusing(fd: int, data: bytes) -> int:
        if fd == tun.fd and data[1] == GSO_UDP_L4:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", refusing)
    udp = datagrams(4, [1000] * 10)
    packets = [udp_packet(4, b"first", ports=(1, 2)), *flow(4, 10, size=1000), *udp, *flow(6, 5, size=100)]
    writer.write(packets)
    assert writer.merge == offload.MERGE_TCP and writer.failed == 0
    frames = []
    while True:
        try:
            frames.append(kernel.recv(1 << 17, socket.MSG_DONTWAIT))
        except BlockingIOError:
            break
    assert len(frames) == 1 + 1 + 10 + 1 and frames[2:12] == [bytes(10) + p for p in udp]
    writer.write(udp)
    assert writer.coalesced == 9 + 4


@pytest.mark.root
@pytest.mark.parametrize("version", [4, 6])
def test_the_python_reader_splits_what_the_kernel_hands_over(
    vnet_tun: tuple[Host, Tun],  # noqa: F811 (the fixture imported above)
    version: int,
) -> None:
    """On a TUN with the C path's offloads (the pure-Python path turns them off: tests/test_tun_io.py)."""
    host, tun = vnet_tun
    reader = tun_offload.PythonTunReader(tun)
    if not tun.offloads & TUN_F_USO4:
        pytest.skip("this kernel offers no USO on TUNs")
    payload = random.Random(version).randbytes(1200 * 10 + 7)
    family, target = (socket.AF_INET, "10.1.0.2") if version == 4 else (socket.AF_INET6, "fd00::2")
    with in_netns(host.name), socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.sendmsg([payload], [(socket.SOL_UDP, 103, struct.pack("=H", 1200))], 0, (target, 9))
    packets: list[bytes] = []
    for _ in range(50):
        batch = reader.read()
        packets += [p for p in batch.packets(0, len(batch)) if p[9 if version == 4 else 6] == 17]
        if len(packets) == 11:
            break
        time.sleep(0.01)
    assert reader.take_drops() == {} and reader.superframes == 1
    l4 = 20 if version == 4 else 40
    assert b"".join(p[l4 + 8 :] for p in packets) == payload
    assert all(l4_checksum_ok(p, l4, 17) for p in packets) and max(map(len, packets)) == l4 + 8 + 1200


@pytest.mark.root
def test_the_python_writer_hands_the_kernel_merged_packets(
    vnet_tun: tuple[Host, Tun],  # noqa: F811 (the fixture imported above)
) -> None:
    host, tun = vnet_tun
    writer = tun_offload.PythonTunWriter(tun)
    uso = bool(writer.merge & offload.MERGE_UDP)
    assert uso == bool(tun.offloads & TUN_F_USO4)
    writer.write(flow(4, 20, size=1000) + flow(6, 20, size=1000) + datagrams(6, [1200] * 20))
    assert writer.coalesced == (57 if uso else 38) and writer.failed == 0
    assert rx_packets(host) == (3 if uso else 22)  # the kernel took every super-packet
