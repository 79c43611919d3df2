"""Wire formats of the four WireGuard messages (whitepaper §5.4, kernel messages.h).

Parsing is strict: a message of the wrong size, an unknown type or a non-zero
reserved byte gives None, which the device counts as a drop.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pywg.core.constants import (
    MESSAGE_COOKIE_REPLY,
    MESSAGE_COOKIE_REPLY_SIZE,
    MESSAGE_DATA,
    MESSAGE_DATA_HEADER_SIZE,
    MESSAGE_DATA_MIN_SIZE,
    MESSAGE_INITIATION,
    MESSAGE_INITIATION_SIZE,
    MESSAGE_RESPONSE,
    MESSAGE_RESPONSE_SIZE,
)

_INITIATION = struct.Struct("<II32s48s28s16s16s")
_RESPONSE = struct.Struct("<III32s16s16s16s")
_COOKIE_REPLY = struct.Struct("<II24s32s")
DATA_HEADER = struct.Struct("<IIQ")
_TYPE = struct.Struct("<I")

# Offsets of mac1 and mac2: the MACs cover everything before them.
INITIATION_MAC1_OFFSET = 116
RESPONSE_MAC1_OFFSET = 60
MAC2_DISTANCE = 16

_EXPECTED_SIZE = {
    MESSAGE_INITIATION: MESSAGE_INITIATION_SIZE,
    MESSAGE_RESPONSE: MESSAGE_RESPONSE_SIZE,
    MESSAGE_COOKIE_REPLY: MESSAGE_COOKIE_REPLY_SIZE,
}


def message_type(data: bytes) -> int | None:
    """The message type if the datagram has a valid header and size, else None.

    The whole little-endian u32 is compared, so non-zero reserved bytes make
    an unknown type, as in the kernel.
    """
    if len(data) < 4:
        return None
    kind: int = _TYPE.unpack_from(data)[0]
    if kind == MESSAGE_DATA:
        return kind if len(data) >= MESSAGE_DATA_MIN_SIZE else None
    expected = _EXPECTED_SIZE.get(kind)
    return kind if expected == len(data) else None


@dataclass(slots=True)
class Initiation:
    sender: int
    ephemeral: bytes
    encrypted_static: bytes
    encrypted_timestamp: bytes
    mac1: bytes = bytes(16)
    mac2: bytes = bytes(16)

    def pack(self) -> bytes:
        return _INITIATION.pack(
            MESSAGE_INITIATION,
            self.sender,
            self.ephemeral,
            self.encrypted_static,
            self.encrypted_timestamp,
            self.mac1,
            self.mac2,
        )

    @classmethod
    def unpack(cls, data: bytes) -> Initiation:
        _, *fields = _INITIATION.unpack(data)
        return cls(*fields)


@dataclass(slots=True)
class Response:
    sender: int
    receiver: int
    ephemeral: bytes
    encrypted_nothing: bytes
    mac1: bytes = bytes(16)
    mac2: bytes = bytes(16)

    def pack(self) -> bytes:
        return _RESPONSE.pack(
            MESSAGE_RESPONSE,
            self.sender,
            self.receiver,
            self.ephemeral,
            self.encrypted_nothing,
            self.mac1,
            self.mac2,
        )

    @classmethod
    def unpack(cls, data: bytes) -> Response:
        _, *fields = _RESPONSE.unpack(data)
        return cls(*fields)


@dataclass(slots=True)
class CookieReply:
    receiver: int
    nonce: bytes
    encrypted_cookie: bytes

    def pack(self) -> bytes:
        return _COOKIE_REPLY.pack(MESSAGE_COOKIE_REPLY, self.receiver, self.nonce, self.encrypted_cookie)

    @classmethod
    def unpack(cls, data: bytes) -> CookieReply:
        _, receiver, nonce, encrypted = _COOKIE_REPLY.unpack(data)
        return cls(receiver, nonce, encrypted)


def data_header(receiver: int, counter: int) -> bytes:
    return DATA_HEADER.pack(MESSAGE_DATA, receiver, counter)


def parse_data_header(data: bytes) -> tuple[int, int]:
    """(receiver index, counter) of a transport data message."""
    _, receiver, counter = DATA_HEADER.unpack_from(data)
    return receiver, counter


def mac1_offset(kind: int) -> int:
    return INITIATION_MAC1_OFFSET if kind == MESSAGE_INITIATION else RESPONSE_MAC1_OFFSET


assert DATA_HEADER.size == MESSAGE_DATA_HEADER_SIZE
assert _INITIATION.size == MESSAGE_INITIATION_SIZE
assert _RESPONSE.size == MESSAGE_RESPONSE_SIZE
assert _COOKIE_REPLY.size == MESSAGE_COOKIE_REPLY_SIZE
