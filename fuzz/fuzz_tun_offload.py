#!/usr/bin/env python3
"""Fuzz target: TUN offloads, the frames a vnet_hdr TUN hands over and the packets merged before
writing, in pure Python (pywg/runtime/offload.py) and, when the C hot path is built, in C
(pywg/native/offload.c): both must give the same bytes.

An input is a choice, then either a frame to split (the segment to start from, the slots, the
frame: a virtio_net_hdr and an IP packet, as the TUN reader gets them) or packets to merge (the
merge flags, then packets as u16-length blobs, as the device hands them to the TUN writer).
Checked: no exception; a drop reason is one of the three; at most GSO_MAX_SEGMENTS segments,
none longer than the frame; merged frames hold every packet's bytes (a frame per packet, or one
GSO frame whose payload is theirs, back to back); C and Python give identical results.
"""

from __future__ import annotations

import struct

import atheris

with atheris.instrument_imports(include=["pywg", "_common"]):
    from _common import Reader, fuzz

    from pywg.native import loader
    from pywg.runtime import offload

SPLIT, MERGE = 0, 1
MOST_SLOTS = 200
MOST_PACKETS = 96
DROPS = (offload.SPLIT_MALFORMED, offload.SPLIT_SEGMENT_TOO_SMALL, offload.SPLIT_TOO_MANY_SEGMENTS)

if loader.available():
    _ffi, _lib = loader.extension()
else:
    _ffi = _lib = None


def c_split(frame: bytes, first: int, slots: int) -> tuple[list[bytes], bool] | int:
    """wg_tun_split into a buffer as large as the reader's."""
    size = 1 << 20
    out = bytearray(size)
    off, length = _ffi.new("uint32_t[]", slots), _ffi.new("uint32_t[]", slots)
    position, done = _ffi.new("size_t *"), _ffi.new("int *")
    count = _lib.wg_tun_split(
        frame, len(frame), first, _ffi.from_buffer(out), size, position, off, length, slots, done
    )
    if count < 0:
        return int(count)
    return [bytes(out[off[i] : off[i] + length[i]]) for i in range(count)], bool(done[0])


def c_coalesce(packets: list[bytes], merge: int) -> tuple[list[bytes], list[int]]:
    n = len(packets)
    joined = b"".join(packets)
    offsets, at = [], 0
    for packet in packets:
        offsets.append(at)
        at += len(packet)
    out = bytearray(len(joined) + offload.VNET_HDR_LEN * n)
    out_off, out_len, frame_of = (_ffi.new("uint32_t[]", max(n, 1)) for _ in range(3))
    frames = _lib.wg_tun_coalesce(
        joined,
        _ffi.new("uint32_t[]", offsets or [0]),
        _ffi.new("uint32_t[]", [len(p) for p in packets] or [0]),
        n,
        merge,
        _ffi.new("wg_gro_slot[]", max(n, 1)),
        _ffi.from_buffer(out),
        len(out),
        out_off,
        out_len,
        frame_of,
    )
    return [bytes(out[out_off[i] : out_off[i] + out_len[i]]) for i in range(frames)], list(frame_of)[:n]


def check_split(reader: Reader) -> None:
    first = reader.below(offload.GSO_MAX_SEGMENTS + 2)
    slots = 1 + reader.below(MOST_SLOTS)
    frame = reader.rest()[: offload.MAX_FRAME + 2]
    result = offload.split_frame(frame, first, slots)
    if isinstance(result, int):
        assert result in DROPS, f"an unknown drop reason {result}"
    else:
        segments, _ = result
        assert len(segments) <= min(slots, offload.GSO_MAX_SEGMENTS), "more segments than allowed"
        assert all(len(s) <= len(frame) - offload.VNET_HDR_LEN for s in segments), (
            "a segment longer than its frame"
        )
    if _lib is not None:
        assert c_split(frame, first, slots) == result, "C and Python split differently"


def check_merge(reader: Reader) -> None:
    merge = reader.below(4)
    packets = []
    while reader.left and len(packets) < MOST_PACKETS:
        packet = reader.blob(offload.MAX_IP_PACKET)
        if packet:
            packets.append(packet)
    frames, frame_of = offload.coalesce(packets, merge)
    assert len(frame_of) == len(packets) and sorted(set(frame_of)) == list(range(len(frames)))
    for index, frame in enumerate(frames):
        members = [p for p, f in zip(packets, frame_of, strict=True) if f == index]
        if frame[1] == offload.GSO_NONE:
            assert members == [frame[offload.VNET_HDR_LEN :]] and frame[: offload.VNET_HDR_LEN] == bytes(10)
        else:
            header = struct.unpack_from("=H", frame, 2)[0]
            assert frame[offload.VNET_HDR_LEN + header :] == b"".join(p[header:] for p in members)
    if _lib is not None:
        assert c_coalesce(packets, merge) == (frames, frame_of), "C and Python merge differently"


def test_one_input(data: bytes) -> None:
    reader = Reader(data)
    if reader.below(2) == SPLIT:
        check_split(reader)
    else:
        check_merge(reader)


if __name__ == "__main__":
    fuzz(test_one_input)
