#!/usr/bin/env python3
"""Fuzz target: the UAPI (pywg/core/uapi.py), a connection's byte stream as the runtime reads it.

An input is one byte for the size of the chunks the socket delivers, one byte choosing the line
limit (wireguard-go's 64 KiB, or 200 bytes so overflows are reached), then the stream. It goes
to a `UapiSession` on a fresh device with a key and two peers, as pywg/runtime/uapi_server.py
feeds it; the runtime's hooks refuse listen port 1 and fwmark 1 as a busy socket would.

`handle_request` never raises: a bug becomes ``errno=-55`` and an error in the log. So checked:
every reply is ``key=value`` lines then ``errno=N`` with N one of the documented codes, never
-55; nothing logged at ERROR; no log line holds key-like text; the same requests come out
of the splitter whatever the chunking; and a ``get=1`` afterwards still succeeds.
"""

from __future__ import annotations

import logging
import random
import re

import atheris

with atheris.instrument_imports(include=["pywg", "_common"]):
    from _common import Reader, assert_nothing_key_like, fuzz

    from pywg.core.clock import FakeClock
    from pywg.core.crypto import clamp, public_key
    from pywg.core.device import Device
    from pywg.core.uapi import MAX_LINE, RequestSplitter, UapiHooks, UapiSession, handle_request

REPLIES = re.compile(rb"(?:(?:[a-z_0-9]+=[^\n]*\n)*errno=(?:0|-5|-71|-22|-98)\n\n)*")
LINE_LIMITS = (MAX_LINE, 200)
PEER_KEYS = [public_key(clamp(random.Random(seed).randbytes(32))) for seed in (11, 12)]


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


RECORDS = Records()
logging.getLogger("pywg.core.uapi").addHandler(RECORDS)
logging.getLogger("pywg.core.uapi").setLevel(logging.INFO)
logging.getLogger("pywg.core.uapi").propagate = False


def _bind(port: int) -> int | None:
    if port == 1:
        raise OSError("address in use")
    return None


def _mark(mark: int) -> None:
    if mark == 1:
        raise OSError("operation not permitted")


HOOKS = UapiHooks(set_listen_port=_bind, set_fwmark=_mark)


def new_device() -> Device:
    device = Device(clamp(bytes(range(32))), clock=FakeClock(), rng=random.Random(1).randbytes)
    for key in PEER_KEYS:
        device.add_peer(key, endpoint=("192.0.2.7", 51820))
    return device


def test_one_input(data: bytes) -> None:
    reader = Reader(data)
    chunk = 1 + reader.int()
    max_line = reader.pick(LINE_LIMITS)
    stream = reader.rest()
    device = new_device()
    session = UapiSession(device, HOOKS, max_line=max_line)
    RECORDS.records.clear()
    replies = b"".join(session.feed(stream[at : at + chunk]) for at in range(0, len(stream), chunk))
    assert REPLIES.fullmatch(replies), f"a reply out of the protocol: {replies[-200:]!r}"
    for record in RECORDS.records:
        assert record.levelno < logging.ERROR, f"a bug in the UAPI: {record.getMessage()}"
        assert_nothing_key_like(record.getMessage())
    if not session.splitter.overflowed:
        whole = RequestSplitter(max_line)
        assert replies.count(b"errno=") == len(whole.feed(stream)), "chunking changed the requests"
    assert handle_request(device, b"get=1\n\n").endswith(b"errno=0\n\n"), "get failed after the requests"


if __name__ == "__main__":
    fuzz(test_one_input)
