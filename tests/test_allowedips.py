"""Allowed IPs: the kernel's fixed self-test cases, edge cases, and comparisons with a naive table."""

from __future__ import annotations

import random
import struct
import time
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pywg.core.allowedips import AllowedIPs


@dataclass(eq=False)
class Peer:
    name: str


def ip4(a: int, b: int, c: int, d: int) -> IPv4Address:
    return IPv4Address(bytes((a, b, c, d)))


def ip6(a: int, b: int, c: int, d: int) -> IPv6Address:
    """Four big-endian 32-bit words, as the kernel self-test writes IPv6 addresses."""
    return IPv6Address(struct.pack(">4I", a, b, c, d))


def net4(a: int, b: int, c: int, d: int, cidr: int) -> IPv4Network:
    return IPv4Network((ip4(a, b, c, d), cidr), strict=False)


def net6(a: int, b: int, c: int, d: int, cidr: int) -> IPv6Network:
    return IPv6Network((ip6(a, b, c, d), cidr), strict=False)


# --- the kernel's selftest/allowedips.c fixed cases ---------------------------------------------


def kernel_table() -> tuple[AllowedIPs[Peer], dict[str, Peer]]:
    peers = {name: Peer(name) for name in "abcdefgh"}
    a, b, c, d, e, f, g, h = peers.values()
    t: AllowedIPs[Peer] = AllowedIPs()
    t.insert(net4(192, 168, 4, 0, 24), a)
    t.insert(net4(192, 168, 4, 4, 32), b)
    t.insert(net4(192, 168, 0, 0, 16), c)
    t.insert(net4(192, 95, 5, 64, 27), d)
    t.insert(net4(192, 95, 5, 65, 27), c)  # replaces the previous entry; host bits masked
    t.insert(net6(0x26075300, 0x60006B00, 0, 0xC05F0543, 128), d)
    t.insert(net6(0x26075300, 0x60006B00, 0, 0, 64), c)
    t.insert(net4(0, 0, 0, 0, 0), e)
    t.insert(net6(0, 0, 0, 0, 0), e)
    t.insert(net6(0, 0, 0, 0, 0), f)  # replaces the previous entry
    t.insert(net6(0x24046800, 0, 0, 0, 32), g)
    t.insert(net6(0x24046800, 0x40040800, 0xDEADBEEF, 0xDEADBEEF, 64), h)
    t.insert(net6(0x24046800, 0x40040800, 0xDEADBEEF, 0xDEADBEEF, 128), a)
    t.insert(net6(0x24446800, 0x40E40800, 0xDEAEBEEF, 0xDEFBEEF, 128), c)
    t.insert(net6(0x24446800, 0xF0E40800, 0xEEAEBEEF, 0, 98), b)
    t.insert(net4(64, 15, 112, 0, 20), g)
    t.insert(net4(64, 15, 123, 211, 25), h)  # host bits masked
    t.insert(net4(10, 0, 0, 0, 25), a)
    t.insert(net4(10, 0, 0, 128, 25), b)
    t.insert(net4(10, 1, 0, 0, 30), a)
    t.insert(net4(10, 1, 0, 4, 30), b)
    t.insert(net4(10, 1, 0, 8, 29), c)
    t.insert(net4(10, 1, 0, 16, 29), d)
    return t, peers


KERNEL_LOOKUPS = [
    ("a", ip4(192, 168, 4, 20)),
    ("a", ip4(192, 168, 4, 0)),
    ("b", ip4(192, 168, 4, 4)),
    ("c", ip4(192, 168, 200, 182)),
    ("c", ip4(192, 95, 5, 68)),
    ("e", ip4(192, 95, 5, 96)),
    ("d", ip6(0x26075300, 0x60006B00, 0, 0xC05F0543)),
    ("c", ip6(0x26075300, 0x60006B00, 0, 0xC02E01EE)),
    ("f", ip6(0x26075300, 0x60006B01, 0, 0)),
    ("g", ip6(0x24046800, 0x40040806, 0, 0x1006)),
    ("g", ip6(0x24046800, 0x40040806, 0x1234, 0x5678)),
    ("f", ip6(0x240467FF, 0x40040806, 0x1234, 0x5678)),
    ("f", ip6(0x24046801, 0x40040806, 0x1234, 0x5678)),
    ("h", ip6(0x24046800, 0x40040800, 0x1234, 0x5678)),
    ("h", ip6(0x24046800, 0x40040800, 0, 0)),
    ("h", ip6(0x24046800, 0x40040800, 0x10101010, 0x10101010)),
    ("a", ip6(0x24046800, 0x40040800, 0xDEADBEEF, 0xDEADBEEF)),
    ("g", ip4(64, 15, 116, 26)),
    ("g", ip4(64, 15, 127, 3)),
    ("g", ip4(64, 15, 123, 1)),
    ("h", ip4(64, 15, 123, 128)),
    ("h", ip4(64, 15, 123, 129)),
    ("a", ip4(10, 0, 0, 52)),
    ("b", ip4(10, 0, 0, 220)),
    ("a", ip4(10, 1, 0, 2)),
    ("b", ip4(10, 1, 0, 6)),
    ("c", ip4(10, 1, 0, 10)),
    ("d", ip4(10, 1, 0, 20)),
]


@pytest.mark.parametrize(("expected", "address"), KERNEL_LOOKUPS, ids=lambda x: str(x))
def test_kernel_lookups(expected: str, address: IPv4Address | IPv6Address) -> None:
    t, peers = kernel_table()
    assert t.lookup_ip(address) is peers[expected]
    assert t.lookup(address.packed) is peers[expected]


def test_kernel_table_size() -> None:
    t, _ = kernel_table()
    assert len(t) == 21  # 23 inserts, two of which replaced an existing prefix


def test_kernel_remove_by_peer_host_routes() -> None:
    t, peers = kernel_table()
    a = peers["a"]
    hosts = [ip4(1, 0, 0, 0), ip4(64, 0, 0, 0), ip4(128, 0, 0, 0), ip4(192, 0, 0, 0), ip4(255, 0, 0, 0)]
    for host in hosts:
        t.insert(IPv4Network(host), a)
    assert all(t.lookup_ip(host) is a for host in hosts)
    t.remove_peer(a)
    assert all(t.lookup_ip(host) is not a for host in hosts)
    assert t.entries_for(a) == []
    assert t.lookup_ip(ip4(192, 168, 4, 20)) is peers["c"]  # a's /24 is gone, c's /16 remains


def test_kernel_remove_by_peer_nested() -> None:
    t: AllowedIPs[Peer] = AllowedIPs()
    a = Peer("a")
    t.insert(net4(192, 168, 0, 0, 16), a)
    t.insert(net4(192, 168, 0, 0, 24), a)
    t.remove_peer(a)
    assert t.lookup_ip(ip4(192, 168, 0, 1)) is None
    assert len(t) == 0


def test_kernel_single_bit_host_routes() -> None:
    # All ones but one bit in the low half, the same in the high half with the low half zero, and ::.
    t: AllowedIPs[Peer] = AllowedIPs()
    a = Peer("a")
    addresses = []
    for i in range(64):
        part = ((1 << 64) - 1) << i & ((1 << 64) - 1)
        addresses.append(IPv6Address(((1 << 64) - 1) << 64 | part))
        addresses.append(IPv6Address(part << 64))
    addresses.append(IPv6Address(0))
    for address in addresses:
        t.insert(IPv6Network(address), a)
    assert len(t) == len(set(addresses)) == 129
    assert all(t.lookup_ip(address) is a for address in addresses)
    assert t.lookup_ip(IPv6Address(1)) is None


def test_kernel_entries_for_peer() -> None:
    t: AllowedIPs[Peer] = AllowedIPs()
    a = Peer("a")
    t.insert(net4(192, 95, 5, 93, 27), a)
    t.insert(net6(0x26075300, 0x60006B00, 0, 0xC05F0543, 128), a)
    t.insert(net4(10, 1, 0, 20, 29), a)
    t.insert(net6(0x26075300, 0x6D8A6BF8, 0xDAB1F1DF, 0xC05F1523, 83), a)
    t.insert(net6(0x26075300, 0x6D8A6BF8, 0xDAB1F1DF, 0xC05F1523, 21), a)
    assert t.entries_for(a) == [
        IPv4Network("192.95.5.64/27"),
        IPv6Network((ip6(0x26075300, 0x60006B00, 0, 0xC05F0543), 128)),
        IPv4Network("10.1.0.16/29"),
        IPv6Network((ip6(0x26075300, 0x6D8A6BF8, 0xDAB1E000, 0), 83)),
        IPv6Network((ip6(0x26075000, 0, 0, 0), 21)),
    ]


# --- behaviour the brief and the kernel's netlink layer depend on ---------------------------------


def test_host_bits_are_masked() -> None:
    t: AllowedIPs[Peer] = AllowedIPs()
    a = Peer("a")
    t.insert(IPv4Network("10.0.0.1/24", strict=False), a)
    assert t.entries_for(a) == [IPv4Network("10.0.0.0/24")]
    assert t.lookup_ip(ip_address("10.0.0.200")) is a
    assert t.lookup_ip(ip_address("10.0.1.0")) is None


def test_insert_moves_prefix_between_peers() -> None:
    t: AllowedIPs[Peer] = AllowedIPs()
    a, b = Peer("a"), Peer("b")
    shared, own = IPv4Network("10.0.0.0/8"), IPv4Network("10.1.0.0/16")
    t.insert(shared, a)
    t.insert(own, a)
    t.insert(shared, b)
    assert t.entries_for(a) == [own]
    assert t.entries_for(b) == [shared]
    assert t.lookup_ip(ip_address("10.2.0.1")) is b
    assert t.lookup_ip(ip_address("10.1.0.1")) is a
    assert len(t) == 2


def test_reinsert_moves_to_end_of_peer_list() -> None:
    t: AllowedIPs[Peer] = AllowedIPs()
    a = Peer("a")
    first, second = IPv6Network("fd00::/64"), IPv4Network("10.0.0.0/8")
    t.insert(first, a)
    t.insert(second, a)
    t.insert(first, a)
    assert t.entries_for(a) == [second, first]
    assert len(t) == 2


def test_remove_only_when_owned() -> None:
    t: AllowedIPs[Peer] = AllowedIPs()
    a, b = Peer("a"), Peer("b")
    network = IPv6Network("fd00:1::/48")
    t.insert(network, a)
    assert not t.remove(network, b)
    assert not t.remove(IPv6Network("fd00:1::/49"), a)
    assert t.lookup_ip(ip_address("fd00:1::5")) is a
    assert t.remove(IPv6Network("fd00:1::/48"), a)
    assert not t.remove(network, a)
    assert t.lookup_ip(ip_address("fd00:1::5")) is None
    assert t.entries_for(a) == []
    assert len(t) == 0


def test_remove_falls_back_to_shorter_prefix() -> None:
    t: AllowedIPs[Peer] = AllowedIPs()
    a, b = Peer("a"), Peer("b")
    t.insert(IPv4Network("0.0.0.0/0"), a)
    t.insert(IPv4Network("10.0.0.0/8"), b)
    assert t.lookup_ip(ip_address("10.9.9.9")) is b
    assert t.remove(IPv4Network("10.0.0.0/8"), b)
    assert t.lookup_ip(ip_address("10.9.9.9")) is a


def test_families_are_separate() -> None:
    t: AllowedIPs[Peer] = AllowedIPs()
    a = Peer("a")
    t.insert(IPv4Network("0.0.0.0/0"), a)
    t.insert(IPv4Network("10.0.0.0/8"), a)
    assert t.lookup_ip(ip_address("::")) is None
    assert t.lookup_ip(ip_address("::ffff:10.0.0.1")) is None
    assert t.lookup(bytes(16)) is None
    assert t.lookup(bytes(4)) is a


def test_peers_compare_by_identity() -> None:
    @dataclass
    class ValuePeer:  # equal by value, and unhashable
        name: str

    t: AllowedIPs[ValuePeer] = AllowedIPs()
    one, two = ValuePeer("same"), ValuePeer("same")
    t.insert(IPv4Network("10.0.0.0/8"), one)
    assert not t.remove(IPv4Network("10.0.0.0/8"), two)
    t.remove_peer(two)
    assert t.lookup_ip(ip_address("10.0.0.1")) is one
    assert t.entries_for(two) == []


def test_bad_inputs() -> None:
    t: AllowedIPs[Peer] = AllowedIPs()
    with pytest.raises(ValueError):
        t.lookup(b"\x0a\x00\x00")
    with pytest.raises(ValueError):
        t.insert(IPv4Network("10.0.0.0/8"), None)  # type: ignore[arg-type]
    t.remove_peer(Peer("never inserted"))
    assert len(t) == 0


def test_clear() -> None:
    t, peers = kernel_table()
    t.clear()
    assert len(t) == 0
    assert t.lookup_ip(ip4(192, 168, 4, 20)) is None
    assert t.entries_for(peers["a"]) == []
    t.insert(IPv4Network("10.0.0.0/8"), peers["a"])
    assert t.lookup_ip(ip4(10, 0, 0, 1)) is peers["a"]


def test_scales_to_many_prefixes() -> None:
    # Quadratic insert or remove_peer would take minutes here.
    t: AllowedIPs[Peer] = AllowedIPs()
    big, small = Peer("big"), Peer("small")
    count = 120_000
    started = time.perf_counter()
    for i in range(count):
        t.insert(IPv4Network((0x0A000000 + (i << 2), 30)), big)
    t.insert(IPv6Network("fd00::/8"), small)
    for i in range(0, count, 2):
        t.insert(IPv4Network((0x0A000000 + (i << 2), 30)), small)  # move half
    assert len(t) == count + 1
    assert t.lookup_ip(IPv4Address(0x0A000000 + 5)) is big
    assert t.lookup_ip(IPv4Address(0x0A000000 + 1)) is small
    t.remove_peer(big)
    assert len(t) == count // 2 + 1
    t.remove_peer(small)
    assert len(t) == 0
    assert time.perf_counter() - started < 30


# --- comparison with a naive table ----------------------------------------------------------------

Key = tuple[int, int, int]  # (version, network as int, prefix length)


class NaiveTable:
    """A list scanned in full for the longest match, like the kernel's horrible_allowedips."""

    def __init__(self) -> None:
        self.owner: dict[Key, Peer] = {}
        self.order: dict[int, list[Key]] = {}

    def insert(self, key: Key, peer: Peer) -> None:
        old = self.owner.get(key)
        if old is not None:
            self.order[id(old)].remove(key)
        self.owner[key] = peer
        self.order.setdefault(id(peer), []).append(key)

    def remove(self, key: Key, peer: Peer) -> bool:
        if self.owner.get(key) is not peer:
            return False
        del self.owner[key]
        self.order[id(peer)].remove(key)
        return True

    def remove_peer(self, peer: Peer) -> None:
        for key in self.order.pop(id(peer), []):
            del self.owner[key]

    def lookup(self, version: int, address: int) -> Peer | None:
        bits = 32 if version == 4 else 128
        best, best_length = None, -1
        for (v, network, length), peer in self.owner.items():
            if v != version or length <= best_length:
                continue
            mask = ((1 << length) - 1) << (bits - length)
            if address & mask == network:
                best, best_length = peer, length
        return best

    def entries_for(self, peer: Peer) -> list[Key]:
        return list(self.order.get(id(peer), []))


def to_network(version: int, address: int, length: int) -> IPv4Network | IPv6Network:
    cls = IPv4Network if version == 4 else IPv6Network
    return cls((address, length), strict=False)


def to_key(version: int, address: int, length: int) -> Key:
    bits = 32 if version == 4 else 128
    mask = ((1 << length) - 1) << (bits - length)
    return version, address & mask, length


def key_of(network: IPv4Network | IPv6Network) -> Key:
    return network.version, int(network.network_address), network.prefixlen


def probes(keys: list[Key], rng: random.Random) -> list[tuple[int, int]]:
    """Addresses worth asking about: each prefix's first, last and neighbouring addresses, and noise."""
    out = []
    for version, network, length in keys:
        bits = 32 if version == 4 else 128
        last = network | ((1 << (bits - length)) - 1)
        out += [(version, a % (1 << bits)) for a in (network, last, network - 1, last + 1)]
    out += [(4, rng.getrandbits(32)) for _ in range(20)]
    out += [(6, rng.getrandbits(128)) for _ in range(20)]
    return out


def assert_same(
    t: AllowedIPs[Peer], naive: NaiveTable, peers: list[Peer], rng: random.Random, sample: int = 0
) -> None:
    assert len(t) == len(naive.owner)
    for peer in peers:
        assert [key_of(n) for n in t.entries_for(peer)] == naive.entries_for(peer)
    addresses = probes(list(naive.owner), rng)
    if sample:
        addresses = rng.sample(addresses, min(sample, len(addresses)))
    for version, address in addresses:
        packed = address.to_bytes(4 if version == 4 else 16, "big")
        assert t.lookup(packed) is naive.lookup(version, address), (version, hex(address))


# Few base addresses and all prefix lengths, so that prefixes nest, collide and move between peers.
BASES = {4: [0x0A000000, 0xC0A80000, 0xFFFFFFFF], 6: [0xFD00 << 112, 0x2001_0DB8 << 96, (1 << 128) - 1]}


@st.composite
def operations(draw: st.DrawFn) -> tuple[str, int, int, int, int]:
    kind = draw(st.sampled_from(["insert"] * 6 + ["remove"] * 2 + ["remove_peer"]))
    version = draw(st.sampled_from([4, 6]))
    bits = 32 if version == 4 else 128
    base = draw(st.sampled_from(BASES[version]))
    noise_bits = draw(st.integers(0, bits))
    address = base ^ draw(st.integers(0, (1 << noise_bits) - 1))
    length = draw(st.integers(0, bits))
    return kind, version, address, length, draw(st.integers(0, 3))


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(operations(), max_size=60), seed=st.integers(0, 2**32))
def test_matches_naive_table(ops: list[tuple[str, int, int, int, int]], seed: int) -> None:
    rng = random.Random(seed)
    peers = [Peer(str(i)) for i in range(4)]
    t: AllowedIPs[Peer] = AllowedIPs()
    naive = NaiveTable()
    for kind, version, address, length, who in ops:
        peer = peers[who]
        if kind == "insert":
            t.insert(to_network(version, address, length), peer)
            naive.insert(to_key(version, address, length), peer)
        elif kind == "remove":
            # Usually name an existing prefix, so that removal is exercised, not just refused.
            keys = list(naive.owner)
            key = keys[address % len(keys)] if keys and address % 4 else to_key(version, address, length)
            assert t.remove(to_network(*key), peer) is naive.remove(key, peer)
        else:
            t.remove_peer(peer)
            naive.remove_peer(peer)
    assert_same(t, naive, peers, rng)


def test_kernel_style_random_comparison() -> None:
    """The kernel's randomized_test, scaled down: random routes plus mutations, then remove peers."""
    rng = random.Random(1)
    peers = [Peer(str(i)) for i in range(40)]
    t: AllowedIPs[Peer] = AllowedIPs()
    naive = NaiveTable()
    for version, bits in ((4, 32), (6, 128)):
        for _ in range(40):
            address = rng.getrandbits(bits)
            for _ in range(10):
                keep = rng.randrange(bits)  # mutate the bits after the first `keep`
                noise = rng.getrandbits(bits) & ((1 << (bits - keep)) - 1)
                mutated = (address & ~((1 << (bits - keep)) - 1)) | noise
                length, peer = rng.randrange(bits) + 1, rng.choice(peers)
                t.insert(to_network(version, mutated, length), peer)
                naive.insert(to_key(version, mutated, length), peer)
    assert_same(t, naive, peers, rng)
    for peer in peers:
        t.remove_peer(peer)
        naive.remove_peer(peer)
        assert_same(t, naive, peers, rng, sample=200)
    assert len(t) == 0
