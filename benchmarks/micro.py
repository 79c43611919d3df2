"""Nanoseconds per packet for sealing and opening 1420-byte packets, the C hot path against Python.

Not a test: `python benchmarks/micro.py [--rounds N]`. Each row is the median over rounds of one
batch of 64 packets, sealed and opened by each data path's session (pywg/core/transport.py
`PythonSession.seal_run` and `open_run` over lists, one AEAD call per packet; C: one call per
batch). Opening includes the replay window and the inner header check.

The C figures use the default count of crypto threads (PYWG_CRYPTO_THREADS, else the CPUs), which
splits a large batch's AEAD across threads (pywg/native/threads.c). A second table times
C alone on 64 KiB batches (45 packets, what one TUN read with offloads brings) with 1 thread and
with that default.

A third table times the I/O steps of such a batch, per packet: splitting a 64 KiB TCP super-packet
from the TUN into segments (`wg_tun_split`, checksums included) and merging them back
(`wg_tun_coalesce`), one UDP GSO send of 45 sealed messages over loopback (`UdpSockets.send_batch`)
and receiving them with GRO and recvmmsg (`UdpSockets.receive_batches`, runs found in C).
"""

from __future__ import annotations

import argparse
import os
import select
import statistics
import struct
import sys
import time
from array import array
from collections.abc import Callable
from typing import Any

from pywg.core.batch import DatagramList, MessageRun, PacketList
from pywg.core.constants import DEFAULT_MTU, MESSAGE_DATA, MESSAGE_DATA_HEADER_SIZE
from pywg.core.transport import PythonSession
from pywg.native import hotpath, loader
from pywg.runtime.udp import UdpSockets

PACKET_SIZE = 1420
BATCH = 64
SPLIT_BATCH = 45  # 45 × 1420 bytes: 64 KiB
RECEIVER = 0x1234


def ipv4_packet(size: int) -> bytes:
    header = bytes([0x45, 0]) + size.to_bytes(2, "big") + bytes(8) + bytes([10, 0, 0, 1, 10, 0, 0, 2])
    return header + os.urandom(size - len(header))


def median_ns_per_packet(run: Callable[[], None], rounds: int, batch: int = BATCH) -> float:
    for _ in range(max(3, rounds // 10)):  # warm up
        run()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        run()
        samples.append((time.perf_counter_ns() - start) / batch)
    return statistics.median(samples)


def python_seal(key: bytes, packets: list[bytes]) -> Callable[[], None]:
    session, batch = PythonSession(key, key), PacketList(packets)

    def run() -> None:
        session.seal_run(batch, 0, len(packets), RECEIVER, 0, DEFAULT_MTU)

    return run


def python_open(key: bytes, messages: list[bytes]) -> Callable[[], None]:
    session = PythonSession(key, key)
    batch = DatagramList([(message, ("192.0.2.1", 1), None) for message in messages])

    def run() -> None:
        session.replay.reset()  # so every round takes the accepting path
        assert session.open_run(batch, 0, len(messages)).accepted == len(messages)

    return run


def c_seal(key: bytes, packets: list[bytes]) -> Callable[[], None]:
    count = len(packets)
    sealer = hotpath.CSealer(key)
    plain = hotpath.PacketBatch(count, count * 2048)
    out = hotpath.PacketBatch(count, count * 2048)
    for packet in packets:
        plain.append(packet)
    counter = 0

    def run() -> None:
        nonlocal counter
        result = sealer.seal(plain, out, RECEIVER, counter, DEFAULT_MTU)
        assert result.count == count
        counter += result.count

    return run


def c_open(key: bytes, messages: list[bytes]) -> Callable[[], None]:
    count = len(messages)
    opener = hotpath.COpener(key)
    replay = hotpath.CReplayWindow()
    results = hotpath.OpenResults(count)
    batch = hotpath.PacketBatch(count, count * 2048)
    for message in messages:
        batch.append(message)
    pristine = bytes(batch.buffer)

    def run() -> None:
        batch.buffer[:] = pristine  # opening is in place: restore the ciphertext (a memcpy, timed)
        replay.reset()
        assert opener.open(batch, replay, results) == count

    return run


def c_threads(
    key: bytes, packets: list[bytes], messages: list[bytes], rounds: int
) -> list[tuple[str, float, float]]:
    """ns per packet for one 64 KiB batch in C, with 1 crypto thread and with the default."""
    _, lib = loader.extension()
    default = loader.crypto_threads()
    rows = []
    try:
        for name, make, items in (("seal", c_seal, packets), ("open", c_open, messages)):
            timings = []
            for threads in (1, default):
                lib.wg_set_threads(threads)
                timings.append(median_ns_per_packet(make(key, items[:SPLIT_BATCH]), rounds, SPLIT_BATCH))
            rows.append((name, timings[0], timings[1]))
    finally:
        lib.wg_set_threads(default)
    return rows


MSS = DEFAULT_MTU - 40  # TCP payload per segment: MTU - IPv4 and TCP headers


def tso_frame() -> bytes:
    """What a TUN with TSO hands over for 45 full segments: a virtio_net_hdr (TCPV4, NEEDS_CSUM,
    checksum start and offset) and one IPv4/TCP packet of 45 * MSS payload bytes."""
    payload = os.urandom(SPLIT_BATCH * MSS)
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        40 + len(payload),
        1,
        0x4000,
        64,
        6,
        0,
        bytes([10, 0, 0, 1]),
        bytes([10, 0, 0, 2]),
    )
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, 1, 1, 5 << 4, 0x10, 65535, 0, 0)
    return struct.pack("=BBHHHH", 1, 1, 40, MSS, 20, 16) + ip + tcp + payload


def tun_steps(rounds: int) -> list[tuple[str, float]]:
    """ns per segment: splitting the TSO frame, and merging the segments back (C, no system call)."""
    ffi, lib = loader.extension()
    frame = tso_frame()
    out = bytearray(len(frame) + SPLIT_BATCH * 80)
    out_off, out_len = ffi.new("uint32_t[]", BATCH), ffi.new("uint32_t[]", BATCH)
    position, done = ffi.new("size_t *"), ffi.new("int *")

    def split() -> None:
        position[0] = 0
        count = lib.wg_tun_split(
            frame, len(frame), 0, ffi.from_buffer(out), len(out), position, out_off, out_len, BATCH, done
        )
        assert count == SPLIT_BATCH and done[0]

    split()
    merged = bytearray(len(out) + SPLIT_BATCH * lib.WG_VNET_HDR_LEN)
    slots = ffi.new("wg_gro_slot[]", SPLIT_BATCH)
    m_off, m_len, frame_of = (ffi.new("uint32_t[]", SPLIT_BATCH) for _ in range(3))

    def merge() -> None:
        frames = lib.wg_tun_coalesce(
            ffi.from_buffer(out),
            out_off,
            out_len,
            SPLIT_BATCH,
            lib.WG_MERGE_TCP,
            slots,
            ffi.from_buffer(merged),
            len(merged),
            m_off,
            m_len,
            frame_of,
        )
        assert frames == 1

    return [
        ("tun split", median_ns_per_packet(split, rounds, SPLIT_BATCH)),
        ("tun merge", median_ns_per_packet(merge, rounds, SPLIT_BATCH)),
    ]  # fmt: skip


def udp_steps(rounds: int) -> list[tuple[str, float]]:
    """ns per datagram: one GSO send of 45 sealed-size messages over loopback, and receiving them."""
    sender, receiver = UdpSockets(), UdpSockets()
    size = MESSAGE_DATA_HEADER_SIZE + DEFAULT_MTU + 16
    # Type 4 in front: the receiver's steering program sends data messages to its data socket.
    message = (MESSAGE_DATA.to_bytes(4, "little") + os.urandom(size))[:size]
    run = MessageRun(message * SPLIT_BATCH, array("I", [size] * SPLIT_BATCH))
    to: Any = ("127.0.0.1", receiver.port)
    sock = receiver.v4
    assert sock is not None
    sends: list[float] = []
    receives: list[float] = []
    try:
        for _ in range(rounds):
            start = time.perf_counter_ns()
            assert sender.send_batch([(run, to, None)]) == []
            sends.append((time.perf_counter_ns() - start) / SPLIT_BATCH)
            select.select([sock], [], [], 1.0)
            start = time.perf_counter_ns()
            got = sum(len(batch) for batch in receiver.receive_batches(sock, 256))
            receives.append((time.perf_counter_ns() - start) / max(1, got))
    finally:
        sender.close()
        receiver.close()
    return [("udp send", statistics.median(sends)), ("udp receive", statistics.median(receives))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    if not loader.built():
        sys.exit(loader.unavailable_reason())

    key = os.urandom(32)
    packets = [ipv4_packet(PACKET_SIZE) for _ in range(BATCH)]
    messages = (
        PythonSession(key, key).seal_run(PacketList(packets), 0, BATCH, RECEIVER, 0, DEFAULT_MTU).messages()
    )

    rows = [
        ("seal", median_ns_per_packet(python_seal(key, packets), args.rounds),
         median_ns_per_packet(c_seal(key, packets), args.rounds)),
        ("open", median_ns_per_packet(python_open(key, messages), args.rounds),
         median_ns_per_packet(c_open(key, messages), args.rounds)),
    ]  # fmt: skip
    print(f"{PACKET_SIZE}-byte packets, batches of {BATCH}, MTU {DEFAULT_MTU}; ns per packet, median")
    print(f"{'':6} {'Python':>8} {'C':>8} {'speed-up':>9}")
    for name, python_ns, c_ns in rows:
        print(f"{name:6} {python_ns:8.0f} {c_ns:8.0f} {python_ns / c_ns:8.2f}x")

    threads = loader.crypto_threads()
    print(f"\nC, {SPLIT_BATCH} packets a batch (64 KiB); ns per packet, median")
    print(f"{'':6} {'1 thread':>9} {f'{threads} thread' + 's' * (threads > 1):>10} {'speed-up':>9}")
    for name, one_ns, default_ns in c_threads(key, packets, messages, args.rounds):
        print(f"{name:6} {one_ns:9.0f} {default_ns:10.0f} {one_ns / default_ns:8.2f}x")

    print(f"\nI/O steps, {SPLIT_BATCH} packets a batch (64 KiB); ns per packet, median")
    for name, ns in tun_steps(args.rounds) + udp_steps(args.rounds):
        print(f"{name:12} {ns:8.0f}")


if __name__ == "__main__":
    main()
