"""The C hot path, `pywg.native._hotpath`, with Python types: batches of packets sealed and opened in C.

An adapter like the runtime: the protocol core never imports it, and the pure-Python path
(pywg/core/transport.py `PythonSession`, `pad`, `inner_packet`, and pywg/core/replay.py) stays the
reference that tests/test_hotpath.py and tests/test_datapath.py hold this one to.

Packets travel in a `PacketBatch`: one preallocated buffer plus u32 offset and length arrays, so
a call handles a whole batch with the GIL released and C allocates nothing per packet.

- `CSealer(key).seal(plain, out, receiver, counter, mtu)` writes complete transport messages
  (header, ciphertext of the padded packet, tag) one after another into `out`.
- `COpener(key).open(messages, replay, results)` decrypts in place, runs the replay window for
  the messages that authenticated, in order, and checks the inner IPv4/IPv6 header; each entry of
  `results` says what became of one message and where its inner packet and source address are.
- `CReplayWindow` is the window's state, kept per receiving key and handed to every `open`.

One handle is meant for one thread at a time (like a Keypair); a call that finds another thread
inside the same handle raises `HotpathError` instead of sharing the cipher context. `zero()`
frees the cipher context at once (or when a running call returns); the handle's memory goes
with the Python object.

The device uses all this through `CCrypto`, the C implementation of the core's `Crypto`
strategy (pywg/core/transport.py): `data_path_crypto()` gives the engine `CCrypto` when the
extension is available (pywg/native/loader.py), else the pure-Python `PythonCrypto`. Its sessions
seal and open runs of the C path's batches (pywg/core/batch.py), which are all `InBuffer`s (the TUN
reader's `BufferPackets`, a UDP socket's pool in runtime/udp.py, `CCrypto.packets`), where they lie:
a run is sealed into one `MessageRun`, and a `COpenedRun` keeps its results in C for the TUN writer.
"""

from __future__ import annotations

import enum
from array import array
from collections.abc import Iterator, Sequence
from itertools import accumulate
from typing import Any, NamedTuple

from pywg.core import Crypto, PythonCrypto
from pywg.core.batch import Datagrams, InnerPackets, MessageRun, destination
from pywg.core.constants import (
    KEY_LEN,
    MESSAGE_DATA,
    MESSAGE_DATA_MIN_SIZE,
    MESSAGE_PADDING_MULTIPLE,
    REJECT_AFTER_MESSAGES,
)
from pywg.core.messages import DATA_HEADER
from pywg.core.transport import RxStatus
from pywg.native import loader
from pywg.native.loader import extension

# cffi's ffi and lib of the extension; None when it is not built, and then every constructor below
# raises HotpathUnavailable (through `extension()`) before they are used.
_ffi, _lib = extension() if loader.built() else (None, None)


def data_path_crypto() -> Crypto:
    """The Crypto the engine hands its Device: `CCrypto` when the C path is available, else
    `PythonCrypto`."""
    if loader.available():
        return CCrypto()
    return PythonCrypto(loader.describe())


# hotpath.h WG_ERR_*
_ERRORS = {
    -1: "the handle is in use by another thread",
    -2: "the key was zeroed",
    -3: "libcrypto failed",
    -4: "bad arguments",
}


class HotpathError(RuntimeError):
    """A call was refused: the handle is busy in another thread, zeroed, or libcrypto failed."""

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(_ERRORS.get(code, f"error {code}"))


class SealStop(enum.IntEnum):
    """Why `CSealer.seal` stopped (hotpath.h WG_SEAL_*)."""

    DONE = 0
    COUNTER_EXHAUSTED = 1  # the next counter would be REJECT_AFTER_MESSAGES: stop using this key
    NO_SPACE = 2  # the output batch is full; seal the rest into another
    BAD_INPUT = 3  # a packet lies outside its batch's buffer or is longer than 16 MiB


# `RxStatus` (from pywg/core/transport.py, re-exported here) names what `COpener.open` found per
# message: its values are hotpath.h's WG_RX_*.


class SealResult(NamedTuple):
    count: int  # messages written, from `counter` on
    stop: SealStop


class PacketBatch:
    """Up to `capacity` packets in one buffer of `size` bytes, with u32 offset and length arrays.

    `buffer` is a bytearray pinned for the batch's life (it cannot be resized while C may
    write to it); packet i is `buffer[offsets[i] : offsets[i] + lengths[i]]`, i < `count`.
    """

    __slots__ = ("_data", "buffer", "capacity", "count", "end", "lengths", "offsets")

    def __init__(self, capacity: int, size: int) -> None:
        ffi, _ = extension()
        if capacity < 1 or size < 1:
            raise ValueError("a batch needs room for at least one packet and one byte")
        self.capacity = capacity
        self.buffer = bytearray(size)
        self._data = ffi.from_buffer("uint8_t[]", self.buffer, require_writable=True)
        self.offsets = ffi.new("uint32_t[]", capacity)
        self.lengths = ffi.new("uint32_t[]", capacity)
        self.count = 0
        self.end = 0  # first free byte of `buffer`

    def __len__(self) -> int:
        return self.count

    def clear(self) -> None:
        self.count = 0
        self.end = 0

    def append(self, packet: bytes | bytearray | memoryview) -> bool:
        """Copy one packet in after the last; False (and nothing copied) if it does not fit."""
        length = len(packet)
        start = self.end
        if self.count == self.capacity or start + length > len(self.buffer):
            return False
        self.buffer[start : start + length] = packet
        self.offsets[self.count] = start
        self.lengths[self.count] = length
        self.count += 1
        self.end = start + length
        return True

    def view(self, index: int) -> memoryview:
        """Packet `index`, without a copy (valid until the batch is reused)."""
        if not 0 <= index < self.count:
            raise IndexError(index)
        start = self.offsets[index]
        return memoryview(self.buffer)[start : start + self.lengths[index]]

    def packets(self) -> list[bytes]:
        """Copies of all packets."""
        buffer, offsets, lengths = self.buffer, self.offsets, self.lengths
        return [bytes(buffer[offsets[i] : offsets[i] + lengths[i]]) for i in range(self.count)]


class CReplayWindow:
    """The replay window of one receiving key, in C: the algorithm of pywg.core.replay.ReplayWindow."""

    __slots__ = ("_state",)

    def __init__(self) -> None:
        ffi, _ = extension()
        self._state = ffi.new("wg_replay *")  # zeroed: a fresh window

    def validate(self, counter: int) -> bool:
        """Accept and record `counter` if it is new and inside the window (after the AEAD only)."""
        if not 0 <= counter < REJECT_AFTER_MESSAGES:
            return False
        return bool(_lib.wg_replay_validate(self._state, counter))

    def reset(self) -> None:
        _lib.wg_replay_reset(self._state)

    @property
    def state(self) -> Any:
        """The `wg_replay *` handed to C."""
        return self._state


class _Aead:
    __slots__ = ("_handle",)

    def __init__(self, key: bytes | bytearray, encrypt: bool) -> None:
        ffi, lib = extension()
        if len(key) != KEY_LEN:
            raise ValueError(f"a key is {KEY_LEN} bytes, not {len(key)}")
        handle = lib.wg_aead_new(ffi.from_buffer("uint8_t[]", key), int(encrypt))
        if handle == ffi.NULL:
            raise HotpathError(-3)
        self._handle = ffi.gc(handle, lib.wg_aead_free)

    def zero(self) -> None:
        """Forget the key now; later calls raise HotpathError."""
        _lib.wg_aead_zero(self._handle)


class CSealer(_Aead):
    """The sending key of one keypair, with its cipher context created once."""

    __slots__ = ("_stop",)

    def __init__(self, key: bytes | bytearray) -> None:
        super().__init__(key, encrypt=True)
        self._stop = _ffi.new("int *")

    def seal(self, plain: PacketBatch, out: PacketBatch, receiver: int, counter: int, mtu: int) -> SealResult:
        """Seal `plain`'s packets with counters `counter`, `counter` + 1, ... into `out` (cleared first).

        The caller advances its sending counter by the returned count.
        """
        out.clear()
        if counter >= REJECT_AFTER_MESSAGES:
            return SealResult(0, SealStop.COUNTER_EXHAUSTED)
        n = min(plain.count, out.capacity)
        written = _lib.wg_seal_batch(
            self._handle,
            receiver,
            counter,
            mtu,
            plain._data,
            len(plain.buffer),
            plain.offsets,
            plain.lengths,
            n,
            out._data,
            len(out.buffer),
            out.offsets,
            out.lengths,
            self._stop,
        )
        if written < 0:
            raise HotpathError(written)
        out.count = written
        if written:
            out.end = out.offsets[written - 1] + out.lengths[written - 1]
        stop = self._stop[0]
        if stop == SealStop.DONE and n < plain.count:
            stop = SealStop.NO_SPACE
        return SealResult(written, SealStop(stop))


class OpenResults:
    """What `COpener.open` found, one `wg_rx_result` per message of the batch it was given."""

    __slots__ = ("batch", "capacity", "count", "entries")

    def __init__(self, capacity: int) -> None:
        ffi, _ = extension()
        self.capacity = capacity
        self.entries = ffi.new("wg_rx_result[]", capacity)
        self.count = 0
        self.batch: PacketBatch | None = None

    def __len__(self) -> int:
        return self.count

    def status(self, index: int) -> RxStatus:
        return RxStatus(self._entry(index).status)

    def counter(self, index: int) -> int:
        return int(self._entry(index).counter)

    def inner(self, index: int) -> memoryview:
        """The inner IP packet (padding trimmed) of a DATA message; the plaintext of others."""
        entry = self._entry(index)
        assert self.batch is not None
        if entry.status == RxStatus.DATA:
            length = entry.inner_length
        elif entry.status in (RxStatus.KEEPALIVE, RxStatus.MALFORMED_INNER):
            length = self.batch.lengths[index] - MESSAGE_DATA_MIN_SIZE
        else:
            raise ValueError(f"message {index} was not accepted: {RxStatus(entry.status).name}")
        return memoryview(self.batch.buffer)[entry.inner_offset : entry.inner_offset + length]

    def source(self, index: int) -> bytes:
        """The inner packet's source address (4 or 16 bytes) of a DATA message."""
        entry = self._entry(index)
        if entry.status != RxStatus.DATA:
            raise ValueError(f"message {index} holds no inner packet: {RxStatus(entry.status).name}")
        assert self.batch is not None
        return bytes(self.batch.buffer[entry.source_offset : entry.source_offset + entry.source_length])

    def _entry(self, index: int) -> Any:
        if not 0 <= index < self.count:
            raise IndexError(index)
        return self.entries[index]


class COpener(_Aead):
    """The receiving key of one keypair, with its cipher context created once."""

    __slots__ = ()

    def __init__(self, key: bytes | bytearray) -> None:
        super().__init__(key, encrypt=False)

    def open(self, messages: PacketBatch, replay: CReplayWindow, results: OpenResults) -> int:
        """Open `messages` in place; returns how many authenticated and passed the replay window."""
        if results.capacity < messages.count:
            raise ValueError(f"results hold {results.capacity} entries, the batch {messages.count}")
        accepted = _lib.wg_open_batch(
            self._handle,
            replay.state,
            messages._data,
            len(messages.buffer),
            messages.offsets,
            messages.lengths,
            messages.count,
            results.entries,
        )
        if accepted < 0:
            raise HotpathError(accepted)
        results.count = messages.count
        results.batch = messages
        return int(accepted)


# The device's data path: CCrypto, the C implementation of pywg/core/transport.py's Crypto.

_MAX_IP_PACKET = 65535
_IP_HEADERS = 40  # bytes of a packet that hold its destination address (IPv6: bytes 24-39)
# Room a sealed message needs beyond its packet: header, tag, at most 15 bytes of padding.
_SEAL_OVERHEAD = MESSAGE_DATA_MIN_SIZE + MESSAGE_PADDING_MULTIPLE - 1


class _Scratch:
    """The arrays and output buffer one CCrypto reuses for every call: nothing per packet.

    Grown on demand, never shrunk below the first size; one thread at a time, like the Device.
    """

    def __init__(self, capacity: int = 128, size: int = 64 * 1024) -> None:
        ffi, _ = extension()
        self.capacity = 0
        self.stop = ffi.new("int *")
        self.summary = ffi.new("wg_rx_summary *")
        self._arrays(capacity)
        self._output(size)

    def _arrays(self, capacity: int) -> None:
        ffi = _ffi
        self.capacity = capacity
        self.in_off = ffi.new("uint32_t[]", capacity)
        self.in_len = ffi.new("uint32_t[]", capacity)
        self.out_off = ffi.new("uint32_t[]", capacity)
        self.out_len = ffi.new("uint32_t[]", capacity)

    def _output(self, size: int) -> None:
        self.out = bytearray(size)
        self.out_data = _ffi.from_buffer("uint8_t[]", self.out, require_writable=True)
        self.out_view = memoryview(self.out)

    def reserve(self, count: int, size: int = 0) -> None:
        if count > self.capacity:
            self._arrays(max(count, 2 * self.capacity))
        if size > len(self.out):
            self.out_view.release()
            self._output(max(size, 2 * len(self.out)))


class InBuffer:
    """A batch whose packets lie in one buffer C reads in place: packet i is
    `memory[offsets[i] : offsets[i] + lengths[i]]`, i < `count`; `c_data` is `memory` for C.

    The adapters' batches (the TUN reader's, a UDP socket's receive pool) are these, so sealing
    and opening take the packets where they lie. `memory` is overwritten by the adapter's next
    read: the device copies what it stages, and the engine delivers what was opened in place
    (`COpenedRun`) before it reads into the same memory again.
    """

    __slots__ = ("c_data", "count", "lengths", "memory", "offsets", "view")

    def __init__(self, memory: Any, capacity: int) -> None:
        ffi, _ = extension()
        self.memory = memory
        self.view = memoryview(memory)
        self.c_data = ffi.from_buffer("uint8_t[]", memory, require_writable=True)
        self.offsets = ffi.new("uint32_t[]", capacity)
        self.lengths = ffi.new("uint32_t[]", capacity)
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def copy(self, index: int) -> bytes:
        start = self.offsets[index]
        return self.view[start : start + self.lengths[index]].tobytes()

    def copies(self, start: int, stop: int) -> list[bytes]:
        return [self.copy(index) for index in range(start, stop)]

    def span(self, start: int, stop: int) -> int:
        """Bytes from the first packet's start to the last one's end (their total, when they lie
        one after another as the adapters put them)."""
        if stop <= start:
            return 0
        return max(0, self.offsets[stop - 1] + self.lengths[stop - 1] - self.offsets[start])


class BufferPackets(InBuffer):
    """InnerPackets (pywg/core/batch.py) in one buffer: what the TUN reader split (runtime/tun_offload.py)."""

    __slots__ = ("_run_end",)

    def __init__(self, memory: Any, capacity: int) -> None:
        super().__init__(memory, capacity)
        self._run_end = _ffi.new("uint32_t[]", capacity)

    @classmethod
    def of(cls, packets: Sequence[bytes]) -> BufferPackets:
        """`packets` copied one after another into a buffer of their own."""
        count = len(packets)
        batch = cls(bytearray(b"".join(packets)) or bytearray(1), max(1, count))
        lengths = [len(packet) for packet in packets]
        batch.lengths[0:count] = lengths
        batch.offsets[0:count] = list(accumulate(lengths, initial=0))[:count]
        batch.count = count
        return batch

    def destination_runs(self) -> Iterator[tuple[bytes | None, int, int]]:
        runs = _lib.wg_destination_runs(
            self.c_data, len(self.memory), self.offsets, self.lengths, self.count, self._run_end
        )
        view, offsets, lengths = self.view, self.offsets, self.lengths
        start = 0
        for end in _ffi.unpack(self._run_end, runs):
            # The first packet's headers, one copy per run: the destination lies in the first 40 bytes.
            offset = offsets[start]
            yield destination(view[offset : offset + min(lengths[start], _IP_HEADERS)].tobytes()), start, end
            start = end

    def packets(self, start: int, stop: int) -> list[bytes]:
        return self.copies(start, stop)


class COpenedRun:
    """The OpenedRun (pywg/core/batch.py) of `CSession.open_run`: results and packets stay in C memory."""

    __slots__ = (
        "_counts",
        "_kept",
        "_kept_count",
        "_memory",
        "_results",
        "_scratch",
        "accepted",
        "accepted_bytes",
        "count",
        "data",
        "data_received",
        "first_accepted",
        "last_accepted",
    )

    def __init__(
        self, memory: Any, data: Any, lengths: Any, count: int, results: Any, scratch: _Scratch
    ) -> None:
        self._memory = memory
        self.data = data
        self.count = count
        self._results = results
        self._scratch = scratch
        summary = scratch.summary
        _lib.wg_rx_summarize(results, lengths, count, summary)
        self.accepted = int(summary.accepted)
        self.accepted_bytes = int(summary.accepted_bytes)
        self.first_accepted = int(summary.first_accepted)
        self.last_accepted = int(summary.last_accepted)
        self.data_received = bool(summary.data)
        self._counts = _ffi.unpack(summary.counts, len(RxStatus))
        self._kept: list[tuple[int, int]] = []
        self._kept_count = 0

    def drop_counts(self) -> Iterator[tuple[int, int]]:
        for status in (RxStatus.MALFORMED_INNER, RxStatus.REPLAY, RxStatus.AUTH_FAILED, RxStatus.MALFORMED):
            if self._counts[status]:
                yield status, self._counts[status]

    def source_runs(self) -> Iterator[tuple[bytes, int, int]]:
        scratch, results = self._scratch, self._results
        scratch.reserve(self.count)
        starts, ends = scratch.in_off, scratch.in_len
        runs = _lib.wg_rx_source_runs(self.data, results, self.count, starts, ends)
        spans = list(zip(_ffi.unpack(starts, runs), _ffi.unpack(ends, runs), strict=True))
        view = memoryview(self._memory)
        for start, end in spans:
            first = results[start]
            yield view[first.source_offset : first.source_offset + first.source_length].tobytes(), start, end

    def keep(self, start: int, stop: int) -> None:
        self._kept.append((start, stop))
        self._kept_count += stop - start  # a source run holds DATA messages only

    def kept(self) -> int:
        return self._kept_count

    def inner(self, offsets: Any, lengths: Any) -> int:
        """The kept packets' offsets and lengths into `offsets`/`lengths` (uint32_t arrays of at
        least `kept()` entries); returns how many."""
        count = 0
        for start, stop in self._kept:
            count += _lib.wg_rx_inner(self._results + start, stop - start, offsets + count, lengths + count)
        return count

    def packets(self) -> list[bytes]:
        view = memoryview(self._memory)
        out: list[bytes] = []
        for start, stop in self._kept:
            for index in range(start, stop):
                result = self._results[index]
                out.append(view[result.inner_offset : result.inner_offset + result.inner_length].tobytes())
        return out


class CSession:
    """One keypair's keys in C: a CSealer, a COpener and a CReplayWindow, used in batches.

    The pywg/core/transport.py SessionCrypto, byte for byte what PythonSession does.
    """

    __slots__ = ("_opener", "_scratch", "_sealer", "replay")

    def __init__(self, sending_key: bytes, receiving_key: bytes, scratch: _Scratch) -> None:
        self._sealer = CSealer(sending_key)
        self._opener = COpener(receiving_key)
        self.replay = CReplayWindow()
        self._scratch = scratch

    def seal_run(
        self, packets: InnerPackets, start: int, stop: int, receiver: int, counter: int, mtu: int
    ) -> MessageRun:
        """Sealed from where the packets lie: `packets` is a batch of the C path (an InBuffer: the
        TUN reader's, or one `CCrypto.packets` made)."""
        count = stop - start
        if count <= 0 or counter >= REJECT_AFTER_MESSAGES:
            return MessageRun(b"", array("I"))
        assert isinstance(packets, InBuffer), "the C path seals its own batches (CCrypto.packets)"
        scratch = self._scratch
        data, size = packets.c_data, len(packets.memory)
        in_off, in_len = packets.offsets + start, packets.lengths + start
        scratch.reserve(count, packets.span(start, stop) + count * _SEAL_OVERHEAD)
        written = self._seal_into(receiver, counter, mtu, data, size, in_off, in_len, count)
        if scratch.stop[0] == SealStop.NO_SPACE:  # packets not one after another: room for the worst
            scratch.reserve(count, count * (_MAX_IP_PACKET + _SEAL_OVERHEAD))
            written = self._seal_into(receiver, counter, mtu, data, size, in_off, in_len, count)
        sizes = array("I")
        if not written:
            return MessageRun(b"", sizes)
        sizes.frombytes(_ffi.buffer(scratch.out_len, 4 * written))
        end = scratch.out_off[written - 1] + scratch.out_len[written - 1]
        return MessageRun(scratch.out_view[:end].tobytes(), sizes)

    def _seal_into(
        self,
        receiver: int,
        counter: int,
        mtu: int,
        data: Any,
        size: int,
        in_off: Any,
        in_len: Any,
        count: int,
    ) -> int:
        scratch = self._scratch
        written = _lib.wg_seal_batch(
            self._sealer._handle,
            receiver,
            counter,
            mtu,
            data,
            size,
            in_off,
            in_len,
            count,
            scratch.out_data,
            len(scratch.out),
            scratch.out_off,
            scratch.out_len,
            scratch.stop,
        )
        if written == _lib.WG_ERR_CLOSED:
            return 0  # zeroed: like PythonSession, nothing more is sealed
        if written < 0:
            raise HotpathError(written)
        if scratch.stop[0] == SealStop.BAD_INPUT:
            raise HotpathError(-4)
        return int(written)

    def lane_handles(self) -> tuple[Any, Any, Any]:
        """The sealing and opening handles and the replay window, for a lane's lease
        (pywg/runtime/lane.py): used there only while the lane is armed, here only while parked."""
        return self._sealer._handle, self._opener._handle, self.replay.state

    def open_run(self, datagrams: Datagrams, start: int, stop: int) -> COpenedRun:
        """Opened in place: `datagrams` is a batch of the C path (an InBuffer: a UDP socket's
        receive pool)."""
        count = stop - start
        assert isinstance(datagrams, InBuffer), "the C path opens its own batches (a receive pool)"
        memory, data = datagrams.memory, datagrams.c_data
        size, offsets, lengths = len(memory), datagrams.offsets + start, datagrams.lengths + start
        results = _ffi.new("wg_rx_result[]", max(1, count))
        accepted = _lib.wg_open_batch(
            self._opener._handle, self.replay.state, data, size, offsets, lengths, count, results
        )
        if accepted == _lib.WG_ERR_CLOSED:  # zeroed: nothing authenticates, as in PythonSession
            view = memoryview(memory)
            for index in range(count):
                message = view[offsets[index] : offsets[index] + lengths[index]]
                results[index].status = _closed_status(message)
        elif accepted < 0:
            raise HotpathError(accepted)
        return COpenedRun(memory, data, lengths, count, results, self._scratch)

    def zero(self) -> None:
        self._sealer.zero()
        self._opener.zero()
        self.replay.reset()


def _closed_status(message: bytes | memoryview) -> int:
    if len(message) < MESSAGE_DATA_MIN_SIZE or DATA_HEADER.unpack_from(message)[0] != MESSAGE_DATA:
        return RxStatus.MALFORMED
    return RxStatus.AUTH_FAILED


class CCrypto:
    """The C hot path as the core's Crypto: every keypair gets a CSession; the scratch is shared.

    One per Device (the device is single-threaded, and so is this).
    """

    def __init__(self) -> None:
        self._description = loader.c_description()
        self._scratch = _Scratch()

    @property
    def description(self) -> str:
        return self._description

    def session(self, sending_key: bytes, receiving_key: bytes) -> CSession:
        return CSession(sending_key, receiving_key, self._scratch)

    def packets(self, packets: Sequence[bytes]) -> BufferPackets:
        """`packets` copied into a batch of their own, one after another."""
        return BufferPackets.of(packets)
