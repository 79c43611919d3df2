"""The engine's TUN side (pywg/runtime/tun_io.py): each implementation, plain and vnet_hdr, C and
pure Python, on a real TUN reads what the kernel routes into it and writes the runs a device
opened. (The vnet_hdr TUN's splitting and merging are tests/test_offload.py, in C, and
tests/test_offload_python.py, Python held to C.)"""

from __future__ import annotations

import random
import select
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from pywg.core.transport import Crypto, PythonCrypto
from pywg.native import hotpath, loader
from pywg.runtime.netns import in_netns
from pywg.runtime.tun import Tun, open_tun
from pywg.runtime.tun_io import CPlainTun, CVnetTun, PlainTun, PythonVnetTun, open_io
from pywg.runtime.udp import UDP_SEGMENT
from tests.support.device_io import datagram_batch, sealed_messages
from tests.support.topology import Host, Topology
from tests.test_offload import A4, B4, l4_checksum_ok, udp_packet

pytest_plugins = ["tests.support.topology"]

# Every size a 1420-byte MTU lets through, empty payloads included, a hundred datagrams in all.
SIZES = [0, 1, 100, 1392, 700] * 20
# (IFF_VNET_HDR, C): each implementation of the TUN side.
KINDS = [
    pytest.param(False, False, id="plain"),
    pytest.param(False, True, id="plain-C"),
    pytest.param(True, False, id="vnet"),
    pytest.param(True, True, id="vnet-C"),
]
EXPECTED = {
    (False, False): PlainTun,
    (False, True): CPlainTun,
    (True, False): PythonVnetTun,
    (True, True): CVnetTun,
}


def require_built(native: bool) -> None:
    if native and not loader.available():
        pytest.fail(f"{loader.unavailable_reason()}; CI builds it (`pip install -e .`)", pytrace=False)


@contextmanager
def tun_up(topology: Topology, vnet_hdr: bool) -> Iterator[tuple[Host, Tun]]:
    """A TUN (with IFF_VNET_HDR or without), up, 10.1.0.1/24, in a fresh namespace."""
    host = topology.host("t")
    tun = open_tun("tio0", host.name, vnet_hdr=vnet_hdr)
    try:
        host.sysctl({"net.ipv6.conf.all.disable_ipv6": "1"})  # no router solicitations or MLD reports
        host.ip("link", "set", "tio0", "mtu", "1420", "up")
        host.ip("address", "add", f"{A4}/24", "dev", "tio0")
        yield host, tun
    finally:
        tun.close()


@pytest.mark.root
@pytest.mark.parametrize(("vnet_hdr", "native"), KINDS)
def test_a_tun_reads_what_the_kernel_routes_to_it(topology: Topology, vnet_hdr: bool, native: bool) -> None:
    require_built(native)
    with tun_up(topology, vnet_hdr) as (host, tun):
        io = open_io(tun, native)
        assert type(io) is EXPECTED[vnet_hdr, native] and not io.pending
        payloads = [bytes([i % 256]) * size for i, size in enumerate(SIZES)]
        with in_netns(host.name), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for payload in payloads:
                sock.sendto(payload, (B4, 9))
        got: list[bytes] = []
        deadline = time.monotonic() + 5
        while len(got) < len(payloads) and time.monotonic() < deadline:
            select.select([tun.fd], [], [], 0.5)
            batch = io.read()
            assert io.take_drops() == {}
            got += [
                p for p in batch.packets(0, len(batch)) if p[9] == 17 and p[22:24] == (9).to_bytes(2, "big")
            ]
        assert [packet[28:] for packet in got] == payloads
        assert all(l4_checksum_ok(packet, 20, 17) for packet in got)  # finished, by C or by the kernel
        assert len(io.read()) == 0  # empty: nothing waits, no error


def opened_runs(crypto: Crypto, packets: list[bytes], runs: int) -> list[Any]:
    """`packets` sealed and opened again by `crypto`'s sessions in `runs` runs, every packet kept:
    what a device hands the TUN side after a read of the UDP side."""
    key = random.Random(1).randbytes(32)
    sender, receiver = crypto.session(key, bytes(32)), crypto.session(bytes(32), key)
    messages = sealed_messages(crypto, sender, packets, 7, 0, 1420)
    batch = datagram_batch(crypto, [(message, ("192.0.2.1", 51820), None) for message in messages])
    step = -(-len(packets) // runs)
    out = []
    for start in range(0, len(packets), step):
        run = receiver.open_run(batch, start, min(len(packets), start + step))
        for _, first, end in run.source_runs():
            run.keep(first, end)
        out.append(run)
    return out


@pytest.mark.root
@pytest.mark.parametrize(("vnet_hdr", "native"), KINDS)
def test_a_tun_writes_the_runs_a_device_opened(topology: Topology, vnet_hdr: bool, native: bool) -> None:
    require_built(native)
    with tun_up(topology, vnet_hdr) as (host, tun):
        io = open_io(tun, native)
        crypto = hotpath.CCrypto() if native else PythonCrypto()
        with in_netns(host.name), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((A4, 0))
            port = sock.getsockname()[1]
            payloads = [bytes([i % 256]) * size for i, size in enumerate(SIZES)]
            packets = [
                udp_packet(4, p, ident=i, ports=(7000, port), addresses=(B4, A4))
                for i, p in enumerate(payloads)
            ]
            io.write(opened_runs(crypto, packets, runs=3))  # type: ignore[arg-type]
            got = []
            sock.settimeout(5)
            while len(got) < len(payloads):
                got.append(sock.recv(2048))
        assert got == payloads and io.refused == 0


@pytest.mark.root
def test_the_python_vnet_tun_turns_the_offloads_off(topology: Topology) -> None:
    """The pure-Python path takes whole packets from the kernel, which segments a UDP GSO send and
    fills in the checksums: nothing to split in Python (pywg/runtime/tun_io.py says why)."""
    with tun_up(topology, vnet_hdr=True) as (host, tun):
        assert tun.offloads  # what the C path asks for, the TUN as open_tun left it
        io = open_io(tun, native=False)
        assert tun.offloads == 0
        payload = random.Random(4).randbytes(1200 * 10 + 7)
        with in_netns(host.name), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendmsg([payload], [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("=H", 1200))], 0, (B4, 9))
        packets: list[bytes] = []
        deadline = time.monotonic() + 5
        while len(packets) < 11 and time.monotonic() < deadline:
            select.select([tun.fd], [], [], 0.5)
            batch = io.read()
            packets += [p for p in batch.packets(0, len(batch)) if p[9] == 17]
        assert b"".join(p[28:] for p in packets) == payload
        assert all(l4_checksum_ok(p, 20, 17) for p in packets) and max(map(len, packets)) == 28 + 1200
        assert io.summary() == "TUN offloads: 0 super-packets split, 0 packets merged into others"


@pytest.mark.root
def test_open_io_follows_the_tun_and_the_data_path(topology: Topology) -> None:
    require_built(True)
    host = topology.host("t")
    with open_tun("tio0", host.name) as plain, open_tun("tio1", host.name, vnet_hdr=True) as vnet:
        assert type(open_io(plain, native=False)) is PlainTun
        assert type(open_io(plain, native=True)) is CPlainTun
        assert type(open_io(vnet, native=True)) is CVnetTun
        assert type(open_io(vnet, native=False)) is PythonVnetTun
