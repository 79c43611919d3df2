"""The engine's TUN side: one interface, a plain and a vnet_hdr TUN, each in C and in pure Python.

As wireguard-go's tun.Device: the engine reads a batch of inner packets (`read`) and writes the
runs the device opened (`write`); offloads stay behind these two calls. What a read returns is a
batch of the data path's own kind (pywg/core/batch.py): `BufferPackets` in the C reader's buffer,
a `PacketList` in pure Python; what `write` takes are that data path's opened runs (`COpenedRun`,
written from where they were decrypted, or `PythonOpenedRun`).

- `PlainTun` (pure Python): one `os.read` per packet, one `os.write` per packet.
- `CPlainTun` (C, pywg/native/offload.c): reads until the TUN is empty and writes a run's packets
  from where they were decrypted, one system call each, without a Python object per packet.
- `CVnetTun` (C, IFF_VNET_HDR; pywg/runtime/tun_offload.py): super-packets split on reading, TCP
  segments and UDP datagrams merged on writing.
- `PythonVnetTun` (pure Python, IFF_VNET_HDR): the same kind of TUN, so that either path
  re-attaches a persistent one, but with its offloads turned off (TUNSETOFFLOAD 0): the kernel
  segments and checksums, and the reader and writer move whole packets, one system call each, as
  `PlainTun` does. Splitting and merging in Python (pywg/runtime/offload.py, held to the C) cost
  more than the system calls they save. Measured (pywg <-> pywg, PYWG_NO_EXT=1, iperf3 TCP x1, 2
  cores; Gbit/s and CPU s/GB of both tunnel processes): Python offloads 0.36 / 37 s/GB, their
  offloads off 0.46 / 26.5, that and merging on writes 0.45 / 27.5; per packet, splitting cost the
  sender ~10 us against ~1.7 us for a read, merging the receiver ~9 us against ~6 us for a write.
  A plain TUN (`PlainTun`) still costs 3-13 % less CPU per GB than this one (the virtio_net_hdr
  on every read and write; interleaved runs, TCP both ways and UDP); one kind of TUN for both
  paths is worth that here.

`open_io` picks the one for a TUN: vnet_hdr or not as it was opened, C or Python as the data path
(`native`, default: the C extension is available, PYWG_NO_EXT unset), the same choice that picks
the device's crypto (pywg/native/hotpath.py `data_path_crypto`) and the UDP side's system calls.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol

from pywg.core.batch import InnerPackets, OpenedRun, PacketList
from pywg.native import hotpath, loader
from pywg.runtime.tun import GONE_ERRNOS, Tun, TunGoneError
from pywg.runtime.tun_offload import (
    PythonTunReader,
    PythonTunWriter,
    TunReader,
    TunWriter,
    untouched_buffer,
)

TUN_BATCH = 128  # packets per read of a plain TUN (MAX_STAGED_PACKETS per peer)
# A plain C read takes packets one after another while a whole one still fits (64 KiB).
PLAIN_READ_BUFFER = 1 << 20


class TunIO(Protocol):
    """One TUN as the engine sees it."""

    tun: Tun
    refused: int  # packets the kernel refused on writing (dropped, counted by the engine)
    # The C reader's state (a `wg_tun_reader *`) a lane reads through (pywg/runtime/lane.py), and
    # the C writer whose merging it follows; None: this TUN has no lane.
    lane_reader: Any
    lane_writer: TunWriter | None

    @property
    def pending(self) -> bool:
        """Part of what was read is still to be handed out: `read` again even if the fd is not
        readable."""
        ...

    def read(self) -> InnerPackets:
        """Packets read until the TUN is empty or the batch is full; the batch is the reader's own
        and is overwritten by the next call. Raises TunGoneError if the interface was deleted
        and nothing was read."""
        ...

    def take_drops(self) -> dict[str, int]:
        """Frames refused on reading since the last call, by drop reason."""
        ...

    def write(self, runs: Sequence[OpenedRun]) -> None:
        """Write the packets the runs keep, in order. Raises TunGoneError if the interface was
        deleted."""
        ...

    def describe(self) -> str:
        """For the engine's log."""
        ...

    def summary(self) -> str | None:
        """What the offloads did, for the engine's log when it stops; None: nothing to say."""
        ...


def open_io(tun: Tun, native: bool | None = None) -> TunIO:
    """The implementation for `tun` (module docstring)."""
    if native is None:
        native = loader.available()
    if tun.vnet_hdr:
        return CVnetTun(tun) if native else PythonVnetTun(tun)
    return CPlainTun(tun) if native else PlainTun(tun)


class PlainTun:
    """A TUN without IFF_VNET_HDR in pure Python: a packet per system call."""

    pending = False
    lane_reader = None
    lane_writer = None

    def __init__(self, tun: Tun) -> None:
        self.tun = tun
        self.refused = 0

    def read(self) -> PacketList:
        return PacketList(self.tun.read_batch(TUN_BATCH))

    def take_drops(self) -> dict[str, int]:
        return {}

    def write(self, runs: Sequence[OpenedRun]) -> None:
        write = self.tun.write
        for run in runs:
            for packet in run.packets():
                write(packet)

    def describe(self) -> str:
        return self.tun.describe_offloads() + " (pure Python)"

    def summary(self) -> str | None:
        return None


class CPlainTun:
    """A TUN without IFF_VNET_HDR in C: reads until empty into one buffer, writes runs from where
    they were decrypted."""

    pending = False
    lane_reader = None
    lane_writer = None

    def __init__(self, tun: Tun) -> None:
        ffi, self._lib = loader.extension()
        self.tun = tun
        self.refused = 0
        self._batch = hotpath.BufferPackets(untouched_buffer(PLAIN_READ_BUFFER), TUN_BATCH)
        self._error = ffi.new("int *")
        self._lost = ffi.new("uint32_t *")
        self._capacity = 0
        self._grow(TUN_BATCH)

    def _grow(self, capacity: int) -> None:
        ffi, _ = loader.extension()
        self._capacity = capacity
        self._off = ffi.new("uint32_t[]", capacity)
        self._len = ffi.new("uint32_t[]", capacity)

    def read(self) -> hotpath.BufferPackets:
        batch = self._batch
        count = self._lib.wg_tun_read_plain(
            self.tun.fd, batch.c_data, PLAIN_READ_BUFFER, batch.offsets, batch.lengths, TUN_BATCH, self._error
        )
        error = self._error[0]
        if error and not count:
            if error in GONE_ERRNOS:
                raise TunGoneError(error, f"TUN {self.tun.name} is gone: {os.strerror(error)}")
            raise OSError(error, os.strerror(error))
        batch.count = count
        return batch

    def take_drops(self) -> dict[str, int]:
        return {}

    def write(self, runs: Sequence[hotpath.COpenedRun]) -> None:
        fd, off, length, error, lost = self.tun.fd, self._off, self._len, self._error, self._lost
        for run in runs:
            count = run.kept()
            if count > self._capacity:
                self._grow(max(count, 2 * self._capacity))
                off, length = self._off, self._len
            count = run.inner(off, length)
            start = 0
            while start < count:
                start += self._lib.wg_tun_write(
                    fd, run.data, off + start, length + start, count - start, error, lost
                )
                self.tun.dropped_down += self._lost[0]
                if start < count:
                    error = self._error[0]
                    if error in GONE_ERRNOS:
                        raise TunGoneError(error, f"TUN {self.tun.name} is gone: {os.strerror(error)}")
                    self.refused += 1  # a packet the kernel refuses: dropped, as a router would
                    start += 1

    def describe(self) -> str:
        return self.tun.describe_offloads()

    def summary(self) -> str | None:
        return None


class VnetTun:
    """A TUN with IFF_VNET_HDR: super-packets split on reading, merged on writing, by a reader and
    a writer in C (`CVnetTun`) or in Python (`PythonVnetTun`)."""

    lane_reader: Any = None
    lane_writer: TunWriter | None = None

    _reader: TunReader | PythonTunReader
    _writer: TunWriter | PythonTunWriter

    def __init__(self, tun: Tun) -> None:
        self.tun = tun

    @property
    def pending(self) -> bool:
        return self._reader.pending

    @property
    def refused(self) -> int:
        return self._writer.failed

    def read(self) -> InnerPackets:
        return self._reader.read()

    def take_drops(self) -> dict[str, int]:
        return self._reader.take_drops()

    def write(self, runs: Sequence[OpenedRun]) -> None:
        for run in runs:
            self._writer.write_run(run)  # type: ignore[arg-type]

    def describe(self) -> str:
        return self.tun.describe_offloads()

    def summary(self) -> str | None:
        return (
            f"TUN offloads: {self._reader.superframes} super-packets split, "
            f"{self._writer.coalesced} packets merged into others"
        )


class CVnetTun(VnetTun):
    """A TUN with IFF_VNET_HDR in C (pywg/native/offload.c)."""

    def __init__(self, tun: Tun) -> None:
        super().__init__(tun)
        self._reader = TunReader(tun)
        self._writer = TunWriter(tun)
        self.lane_reader = self._reader.state
        self.lane_writer = self._writer


class PythonVnetTun(VnetTun):
    """A TUN with IFF_VNET_HDR in pure Python, its offloads off: whole packets behind a zero
    virtio_net_hdr (a frame with GSO that still comes is split by pywg/runtime/offload.py)."""

    def __init__(self, tun: Tun) -> None:
        super().__init__(tun)
        # The kernel segments and checksums faster than Python splits and merges: with the TUN's
        # offloads off it hands over whole packets, and takes them whole (module docstring).
        tun.set_offloads(0)
        self._reader = PythonTunReader(tun)
        self._writer = PythonTunWriter(tun, merge=False)

    def describe(self) -> str:
        return self.tun.describe_offloads() + " (pure Python)"
