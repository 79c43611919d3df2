"""TUN offloads: the engine's TUN side for a TUN opened with IFF_VNET_HDR (C in pywg/native/offload.c).

The kernel hands such a TUN TCP (and, from Linux 6.2, UDP) super-packets of up to 64 KiB with
their transport checksum left open; `TunReader` reads them and splits them in C into the IP
packets the device seals, one per message, just before encryption. `TunWriter` does the reverse
with what the device decrypted: consecutive TCP segments of one flow (and UDP datagrams, where
the kernel took USO) are merged in C into one super-packet the kernel takes as if its GRO had
built it, the rest is written one by one. So a bulk transfer costs one TUN read and one TUN
write per ~44 segments instead of one each.

`PythonTunReader` and `PythonTunWriter` can do the same in pure Python (pywg/runtime/offload.py,
frame for frame as the C does). The pure-Python path opens the same vnet_hdr TUNs (one kind of TUN
for both paths: a persistent TUN is re-attached by either) but turns their offloads off
(pywg/runtime/tun_io.py `PythonVnetTun`): in Python a segment's checksum and the merging rules
cost more than the TUN read or write they save, so it reads and writes whole packets (a zero
virtio_net_hdr each) and leaves segmenting and checksums to the kernel; the figures are in
tun_io.py. PYWG_NO_TUN_OFFLOAD=1 opens the TUN without IFF_VNET_HDR on the C path too, and the
wire sees the same packets either way: every packet the device seals is at most the TUN's MTU, as
without offloads.

Buffers, all allocated once per engine (bounded, no per-packet allocation in C):
- reading: one 64 KiB + 10 frame buffer inside the C reader and READ_BUFFER bytes for at most
  READ_SLOTS packets per call (a frame that does not fit is finished on the next call);
- writing: an output buffer and arrays that grow to the largest batch the device delivered once
  (bounded by what one UDP wake-up reads, see engine.py) and are reused from then on.
Large buffers are anonymous mappings (`untouched_buffer`): resident only once written.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
from collections.abc import Callable
from itertools import accumulate
from typing import Any

from pywg.core.batch import OpenedRun, PacketList
from pywg.native import hotpath, loader
from pywg.runtime import offload
from pywg.runtime.tun import GONE_ERRNOS, TUN_F_USO4, TUN_F_USO6, Tun, TunGoneError

DISABLE_ENV = "PYWG_NO_TUN_OFFLOAD"
READ_SLOTS = 512  # packets (and frames) per read call at most: several super-packets of the most segments
READ_BUFFER = 1 << 20  # bytes of those packets (at least one 64 KiB packet)
WRITE_SLOTS = 256  # packets per write call the arrays start with; they grow to the largest batch
WRITE_BUFFER = 512 * 1024  # bytes the output starts with; grows likewise
_USO = TUN_F_USO4 | TUN_F_USO6
_HEADER = offload.VNET_HDR_LEN
_PLAIN_FRAME = bytes(2)  # virtio_net_hdr flags and gso_type: no checksum to finish, no GSO
_log = logging.getLogger("pywg")


def unavailable_reason() -> str | None:
    """Why a TUN should be opened without IFF_VNET_HDR, or None: both paths open one kind of TUN
    (the pure-Python one with its offloads off, see `PythonVnetTun`), so a persistent TUN (the
    node agent's) is re-attached by either."""
    if not loader.available():
        if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
            return f"turned off by {DISABLE_ENV}={os.environ[DISABLE_ENV]}"
        return None
    return loader.feature_unavailable_reason("wg_tun_read", "TUN offloads", DISABLE_ENV)


def available() -> bool:
    """Whether to open TUNs with IFF_VNET_HDR (`open_tun(..., vnet_hdr=available())`)."""
    return unavailable_reason() is None


def describe() -> str:
    """For `pywg version`: whether TUNs get offloads here, or why not."""
    reason = unavailable_reason()
    if reason is None:
        if not loader.available():
            return "IFF_VNET_HDR, offloads off (pure Python: the kernel segments faster)"
        return "IFF_VNET_HDR, TSO/USO where the kernel takes them (split and merged in C)"
    return f"off ({reason})"


def untouched_buffer(size: int) -> mmap.mmap:
    """`size` writable bytes that cost no memory until written: anonymous pages are mapped on first
    touch, so an idle tunnel (the node agent hosts many) keeps only what its largest batch used.
    A bytearray would be zero-filled, i.e. resident, at once."""
    return mmap.mmap(-1, size)


# The drop counter of each reason the C splitter refuses a frame for (offload.h WG_SPLIT_*).
TUN_DROP_REASONS = {
    "WG_SPLIT_MALFORMED": "malformed_tun_frame",
    "WG_SPLIT_SEGMENT_TOO_SMALL": "tun_gso_segment_too_small",
    "WG_SPLIT_TOO_MANY_SEGMENTS": "tun_gso_too_many_segments",
}


class TunReader:
    """Reads a vnet_hdr TUN in batches; super-packets come out split into IP packets."""

    def __init__(self, tun: Tun) -> None:
        ffi, self._lib = loader.extension()
        self._tun = tun
        self._reader = ffi.new("wg_tun_reader *")  # zeroed: no frame pending
        self._batch = hotpath.BufferPackets(untouched_buffer(READ_BUFFER), READ_SLOTS)
        self._error = ffi.new("int *")
        self._drop_reasons = {
            -1 - getattr(self._lib, code): reason for code, reason in TUN_DROP_REASONS.items()
        }
        self._dropped_seen = [0] * self._lib.WG_SPLIT_DROP_REASONS

    @property
    def pending(self) -> bool:
        """A frame was only partly handed out; `read` again even if the fd is not readable."""
        return bool(self._reader.length)

    @property
    def state(self) -> Any:
        """The `wg_tun_reader *`: a lane (pywg/runtime/lane.py) reads through it, leaving a frame it
        does not send pending here for `read`."""
        return self._reader

    @property
    def superframes(self) -> int:
        """Super-packets split so far."""
        return int(self._reader.superframes)

    def take_drops(self) -> dict[str, int]:
        """Frames dropped since the last call, by drop reason (the engine counts them as drops):
        malformed ones, and super-packets whose segments are too small or too many for the work
        they would cost (see "Hostile frames" in pywg/native/offload.h)."""
        drops: dict[str, int] = {}
        for index, reason in self._drop_reasons.items():
            total = int(self._reader.dropped[index])
            if total != self._dropped_seen[index]:
                drops[reason], self._dropped_seen[index] = total - self._dropped_seen[index], total
        return drops

    def read(self) -> hotpath.BufferPackets:
        """IP packets read until the TUN is empty or READ_SLOTS/READ_BUFFER are full, where they
        lie: the batch is the reader's own and is overwritten by the next call.

        Raises TunGoneError if the interface was deleted and nothing was read in this call.
        """
        batch = self._batch
        fd, slots = self._tun.fd, READ_SLOTS
        count = self._lib.wg_tun_read(
            self._reader, fd, batch.c_data, READ_BUFFER, batch.offsets, batch.lengths, slots, self._error
        )
        error = self._error[0]
        if error and not count:
            failure = OSError(error, os.strerror(error))
            if error in GONE_ERRNOS:
                raise TunGoneError(error, f"TUN {self._tun.name} is gone: {failure.strerror}")
            raise failure
        batch.count = count
        return batch


class TunWriter:
    """Writes decrypted IP packets to a vnet_hdr TUN, TCP segments and UDP datagrams of one flow
    merged (UDP only if the TUN took USO: the kernel takes UDP super-packets from then on).

    If the kernel refuses a merged packet (EINVAL), merging that protocol is turned off for good
    and the packets are written one by one: never a lost batch.
    """

    def __init__(self, tun: Tun) -> None:
        ffi, lib = loader.extension()
        self._ffi, self._lib = ffi, lib
        self._tun = tun
        self._merge_names = {
            lib.WG_VNET_GSO_TCPV4: "TCP",
            lib.WG_VNET_GSO_TCPV6: "TCP",
            lib.WG_VNET_GSO_UDP_L4: "UDP",
        }
        self._merge_flags = {"TCP": lib.WG_MERGE_TCP, "UDP": lib.WG_MERGE_UDP}
        uso = (tun.offloads & _USO) == _USO
        self.merge = lib.WG_MERGE_TCP | (lib.WG_MERGE_UDP if uso else 0)  # WG_MERGE_* flags
        self.coalesced = 0  # packets that went into a super-packet with an earlier one
        self.failed = 0  # frames the kernel refused (dropped, counted by the engine)
        self._error = ffi.new("int *")
        self._lost = ffi.new("uint32_t *")
        self._capacity = 0
        self._arrays(WRITE_SLOTS)
        self._output(WRITE_BUFFER)

    def _arrays(self, capacity: int) -> None:
        new = self._ffi.new
        self._capacity = capacity
        self._in_off = new("uint32_t[]", capacity)
        self._in_len = new("uint32_t[]", capacity)
        self._out_off = new("uint32_t[]", capacity)
        self._out_len = new("uint32_t[]", capacity)
        self._frame_of = new("uint32_t[]", capacity)
        self._slots = new("wg_gro_slot[]", capacity)

    def _output(self, size: int) -> None:
        self._out = untouched_buffer(size)
        self._data = self._ffi.from_buffer("uint8_t[]", self._out, require_writable=True)

    def _reserve(self, count: int, size: int) -> None:
        if count > self._capacity:
            self._arrays(max(count, 2 * self._capacity))
        if size > len(self._out):
            self._output(max(size, 2 * len(self._out)))

    def write(self, packets: list[bytes]) -> None:
        """Write `packets` (in order within each flow). Raises TunGoneError if the interface was deleted."""
        count = len(packets)
        if not count:
            return
        joined = b"".join(packets)
        self._reserve(count, len(joined) + count * self._lib.WG_VNET_HDR_LEN)
        lengths = [len(packet) for packet in packets]
        self._in_len[0:count] = lengths
        self._in_off[0:count] = list(accumulate(lengths, initial=0))[:count]
        self._merge_and_write(self._ffi.from_buffer("uint8_t[]", joined), count, lambda: packets)

    def write_run(self, run: hotpath.COpenedRun) -> None:
        """Write the packets `run` keeps, from where they were decrypted (no copy per packet)."""
        count = run.kept()
        if not count:
            return
        self._reserve(count, run.accepted_bytes + count * self._lib.WG_VNET_HDR_LEN)
        run.inner(self._in_off, self._in_len)
        self._merge_and_write(run.data, count, run.packets)

    def _merge_and_write(self, data: Any, count: int, packets: Callable[[], list[bytes]]) -> None:
        """Merge the `count` packets that _in_off/_in_len place in `data` into frames, write them;
        `packets` gives copies of them if the kernel refuses a merged frame."""
        frames = self._lib.wg_tun_coalesce(
            data,
            self._in_off,
            self._in_len,
            count,
            self.merge,
            self._slots,
            self._data,
            len(self._out),
            self._out_off,
            self._out_len,
            self._frame_of,
        )
        self._write_frames(count, frames, packets)

    def _write_frames(self, count: int, frames: int, packets: Callable[[], list[bytes]]) -> None:
        start = 0
        while start < frames:
            start += self._lib.wg_tun_write(
                self._tun.fd,
                self._data,
                self._out_off + start,
                self._out_len + start,
                frames - start,
                self._error,
                self._lost,
            )
            self._tun.dropped_down += self._lost[0]
            if start == frames:
                self.coalesced += count - frames
                return
            error = self._error[0]
            if error in GONE_ERRNOS:
                raise TunGoneError(error, f"TUN {self._tun.name} is gone: {os.strerror(error)}")
            kind = self._merge_names.get(self._out[self._out_off[start] + 1])  # gso_type
            if kind is not None and self.merge & self._merge_flags[kind]:
                self._unmerge(packets(), start, kind, error)
                return
            self.failed += 1  # a packet the kernel refuses: dropped, as a router would
            start += 1

    def stop_merging(self, flag: int, error: int) -> None:
        """The kernel refused a packet merged as `flag` (WG_MERGE_*) with `error`: merge no more such."""
        self.merge &= ~flag
        kind = next(name for name, value in self._merge_flags.items() if value == flag)
        why = os.strerror(error)
        _log.info("TUN %s: merged %s packets refused (%s); no more merging them", self._tun.name, kind, why)

    def _unmerge(self, packets: list[bytes], frame: int, kind: str, error: int) -> None:
        """The kernel refused a merged packet: stop merging `kind` (TCP or UDP), write the rest again."""
        self.stop_merging(self._merge_flags[kind], error)
        frame_of = self._frame_of
        rest = [packet for i, packet in enumerate(packets) if frame_of[i] >= frame]
        self.coalesced += len(packets) - len(rest) - frame  # merged into the frames written already
        self.write(rest)


class PythonTunReader:
    """TunReader in pure Python (pywg/runtime/offload.py splits): the same packets, drops and
    bounds (READ_SLOTS packets and frames per call; a frame that did not fit is finished by the
    next call), as a list of `bytes`."""

    def __init__(self, tun: Tun) -> None:
        self._tun = tun
        self._frame = b""  # the frame whose segments did not all fit in the last call
        self._emitted = 0  # segments of it already handed out
        self.superframes = 0  # super-packets split so far
        self._drops: dict[str, int] = {}

    @property
    def pending(self) -> bool:
        """A frame was only partly handed out; `read` again even if the fd is not readable."""
        return bool(self._frame)

    def take_drops(self) -> dict[str, int]:
        """Frames dropped since the last call, by drop reason (TunReader.take_drops)."""
        drops, self._drops = self._drops, {}
        return drops

    def read(self) -> PacketList:
        """IP packets read until the TUN is empty or READ_SLOTS are taken (offload.c wg_tun_read).

        Raises TunGoneError if the interface was deleted and nothing was read in this call.
        """
        packets: list[bytes] = []
        fd, read, frames = self._tun.fd, os.read, 0
        while len(packets) < READ_SLOTS:
            if not self._frame:
                if frames == READ_SLOTS:
                    break  # the rest on the next call, after the event loop's other work
                try:
                    frame = read(fd, offload.MAX_FRAME)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as error:
                    if packets:
                        break
                    if error.errno in GONE_ERRNOS:
                        raise TunGoneError(
                            error.errno, f"TUN {self._tun.name} is gone: {error.strerror}"
                        ) from error
                    raise
                if not frame:
                    break  # a TUN never reads 0 bytes: taken as empty, never spun on
                if frame.startswith(_PLAIN_FRAME) and len(frame) > _HEADER:
                    packets.append(frame[_HEADER:])  # a whole packet, its checksums done
                    frames += 1
                    continue
                self._frame, self._emitted = frame, 0
                frames += 1
            frame = self._frame
            split = offload.split_frame(frame, self._emitted, READ_SLOTS - len(packets))
            if isinstance(split, int):
                reason = _PYTHON_DROP_REASONS[split]
                self._drops[reason] = self._drops.get(reason, 0) + 1
                self._frame = b""
                continue
            segments, done = split
            if not self._emitted and frame[1] != offload.GSO_NONE:
                self.superframes += 1
            packets += segments
            self._emitted += len(segments)
            if not done:
                break  # the rest of this frame goes next time
            self._frame = b""
        return PacketList(packets)


_PYTHON_DROP_REASONS = {
    offload.SPLIT_MALFORMED: TUN_DROP_REASONS["WG_SPLIT_MALFORMED"],
    offload.SPLIT_SEGMENT_TOO_SMALL: TUN_DROP_REASONS["WG_SPLIT_SEGMENT_TOO_SMALL"],
    offload.SPLIT_TOO_MANY_SEGMENTS: TUN_DROP_REASONS["WG_SPLIT_TOO_MANY_SEGMENTS"],
}


class PythonTunWriter:
    """TunWriter in pure Python (pywg/runtime/offload.py merges): the same frames, and the same
    fallback when the kernel refuses a merged one. Without `merge` every packet goes alone behind
    a zero header (what the pure-Python path writes: merging costs it more than it saves)."""

    def __init__(self, tun: Tun, merge: bool = True) -> None:
        self._tun = tun
        uso = (tun.offloads & _USO) == _USO
        self.merge = offload.MERGE_TCP | (offload.MERGE_UDP if uso else 0) if merge else 0
        self.coalesced = 0  # packets that went into a super-packet with an earlier one
        self.failed = 0  # frames the kernel refused (dropped, counted by the engine)

    def write_run(self, run: OpenedRun) -> None:
        """Write the packets `run` keeps."""
        if run.kept():
            self.write(run.packets())

    def write(self, packets: list[bytes]) -> None:
        """Write `packets` (in order within each flow). Raises TunGoneError if the interface was deleted."""
        if not packets:
            return
        if not self.merge:
            self._write_each(packets)
            return
        frames, frame_of = offload.coalesce(packets, self.merge)
        fd, write = self._tun.fd, os.write
        index = 0
        while index < len(frames):
            frame = frames[index]
            try:
                write(fd, frame)
            except InterruptedError:
                continue
            except OSError as error:
                if error.errno in _LOST_ERRNOS:
                    self._tun.dropped_down += 1  # lost, as on a wire (offload.c wg_tun_write)
                    index += 1
                    continue
                if error.errno in GONE_ERRNOS:
                    raise TunGoneError(
                        error.errno, f"TUN {self._tun.name} is gone: {error.strerror}"
                    ) from error
                kind = _MERGE_KINDS.get(frame[1])  # gso_type
                if kind is not None and self.merge & kind:
                    self._unmerge(packets, frame_of, index, kind, error.errno or 0)
                    return
                self.failed += 1  # a packet the kernel refuses: dropped, as a router would
            index += 1
        self.coalesced += len(packets) - len(frames)

    def _write_each(self, packets: list[bytes]) -> None:
        """Each packet behind a zero header, one write each (what `coalesce` makes when it merges
        nothing); writev, not a concatenation: ~5 % less a packet."""
        fd, writev, header = self._tun.fd, os.writev, _PLAIN_HEADER
        for packet in packets:
            try:
                writev(fd, (header, packet))
            except OSError as error:
                if error.errno in _LOST_ERRNOS:
                    self._tun.dropped_down += 1
                elif error.errno in GONE_ERRNOS:
                    raise TunGoneError(
                        error.errno, f"TUN {self._tun.name} is gone: {error.strerror}"
                    ) from error
                else:
                    self.failed += 1

    def _unmerge(self, packets: list[bytes], frame_of: list[int], frame: int, kind: int, error: int) -> None:
        """The kernel refused a merged packet: stop merging `kind` (TCP or UDP), write the rest again."""
        self.merge &= ~kind
        name = "TCP" if kind == offload.MERGE_TCP else "UDP"
        why = os.strerror(error)
        _log.info("TUN %s: merged %s packets refused (%s); no more merging them", self._tun.name, name, why)
        rest = [packet for i, packet in enumerate(packets) if frame_of[i] >= frame]
        self.coalesced += len(packets) - len(rest) - frame  # merged into the frames written already
        self.write(rest)


_LOST_ERRNOS = (errno.EIO, errno.EAGAIN, errno.ENOBUFS)
_PLAIN_HEADER = bytes(_HEADER)
_MERGE_KINDS = {
    offload.GSO_TCPV4: offload.MERGE_TCP,
    offload.GSO_TCPV6: offload.MERGE_TCP,
    offload.GSO_UDP_L4: offload.MERGE_UDP,
}
