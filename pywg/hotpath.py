"""The C hot path, `pywg._hotpath`, with Python types: batches of packets sealed and opened in C.

An adapter like the runtime: the protocol core never imports it, and the pure-Python path
(pywg/keypair.py, pywg/replay.py, pywg/device.py `_inner_packet`, pywg/peer.py `_pad`) stays the
reference that tests/test_hotpath.py holds this one to.

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
"""

from __future__ import annotations

import enum
import os
from typing import Any, NamedTuple

from pywg.constants import KEY_LEN, MESSAGE_DATA_MIN_SIZE, REJECT_AFTER_MESSAGES

DISABLE_ENV = "PYWG_NO_EXT"
BUILD_HINT = (
    "build it with `pip install -e .` from the checkout (needs gcc, the Python headers and "
    "libssl-dev; scripts/install-deps.sh installs them)"
)

try:
    from pywg._hotpath import ffi as _ffi
    from pywg._hotpath import lib as _lib

    _NOT_BUILT: str | None = None
except ImportError as error:  # not compiled, or libcrypto missing at run time
    _ffi = _lib = None
    _NOT_BUILT = f"the C extension pywg._hotpath is not built ({error}); {BUILD_HINT}"


def built() -> bool:
    """Whether `pywg._hotpath` was compiled and loads."""
    return _NOT_BUILT is None


def unavailable_reason() -> str | None:
    """Why the engine should not use the C path, or None if it may."""
    if _NOT_BUILT is not None:
        return _NOT_BUILT
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return f"the C extension is turned off by {DISABLE_ENV}={os.environ[DISABLE_ENV]}"
    return None


def available() -> bool:
    """Whether the engine may use the C path: it is built and PYWG_NO_EXT is not set."""
    return unavailable_reason() is None


# hotpath.h WG_ERR_*
_ERRORS = {
    -1: "the handle is in use by another thread",
    -2: "the key was zeroed",
    -3: "libcrypto failed",
    -4: "bad arguments",
}


class HotpathUnavailable(RuntimeError):
    """The extension is not built."""


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


class RxStatus(enum.IntEnum):
    """What `COpener.open` found per message (hotpath.h WG_RX_*).

    DATA, KEEPALIVE and MALFORMED_INNER authenticated and passed the replay window.
    """

    DATA = 0  # an inner IP packet: `OpenResults.inner` and `.source`
    KEEPALIVE = 1
    MALFORMED_INNER = 2  # counted as "malformed_inner" by the device
    REPLAY = 3
    AUTH_FAILED = 4  # its plaintext area is zeroed
    MALFORMED = 5  # shorter than a keepalive, not type 4, or outside the buffer


class SealResult(NamedTuple):
    count: int  # messages written, from `counter` on
    stop: SealStop


def _require() -> tuple[Any, Any]:
    if _NOT_BUILT is not None:
        raise HotpathUnavailable(_NOT_BUILT)
    return _ffi, _lib


class PacketBatch:
    """Up to `capacity` packets in one buffer of `size` bytes, with u32 offset and length arrays.

    `buffer` is a bytearray pinned for the batch's life (it cannot be resized while C may
    write to it); packet i is `buffer[offsets[i] : offsets[i] + lengths[i]]`, i < `count`.
    """

    __slots__ = ("_data", "buffer", "capacity", "count", "end", "lengths", "offsets")

    def __init__(self, capacity: int, size: int) -> None:
        ffi, _ = _require()
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
    """The replay window of one receiving key, in C: the algorithm of pywg.replay.ReplayWindow."""

    __slots__ = ("_state",)

    def __init__(self) -> None:
        ffi, _ = _require()
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
        ffi, lib = _require()
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
        ffi, _ = _require()
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
