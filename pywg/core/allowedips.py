"""Cryptokey routing (whitepaper §2, kernel allowedips.c): longest-prefix match from IP to peer.

The kernel walks a bit trie. In Python a dict per prefix length is faster: a
lookup shifts the address once per prefix length in use, longest first, and
stops at the first hit, so its cost is one int conversion and a few dict probes.
Each peer keeps its prefixes in insertion order (the kernel's per-peer list),
which makes remove_peer linear in that peer's prefixes and entries_for stable.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Generic, TypeVar

T = TypeVar("T")
Network = IPv4Network | IPv6Network
# (address bits, prefix length, prefix value = network address >> host bits)
_Key = tuple[int, int, int]


class _Family(Generic[T]):
    """The prefixes of one address family: one dict per prefix length, and the lengths in use."""

    __slots__ = ("bits", "order", "tables")

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.tables: dict[int, dict[int, T]] = {}
        # (shift, table) for each prefix length in use, longest prefix first.
        self.order: list[tuple[int, dict[int, T]]] = []

    def table_for(self, length: int) -> dict[int, T]:
        table = self.tables.get(length)
        if table is None:
            table = self.tables[length] = {}
            self.reorder()
        return table

    def drop_if_empty(self, length: int) -> bool:
        """Forget an emptied prefix length; the caller reorders (once, after a batch)."""
        if self.tables[length]:
            return False
        del self.tables[length]
        return True

    def reorder(self) -> None:
        lengths = sorted(self.tables, reverse=True)
        self.order = [(self.bits - length, self.tables[length]) for length in lengths]


class AllowedIPs(Generic[T]):
    """One routing table for all peers of a device; each prefix belongs to exactly one peer.

    Peers are compared by identity, so they need not be hashable by value.
    """

    __slots__ = ("_by_peer", "_v4", "_v6")

    def __init__(self) -> None:
        self._v4: _Family[T] = _Family(32)
        self._v6: _Family[T] = _Family(128)
        # id(peer) -> {key: canonical network}, in insertion order. A peer stays
        # referenced by the tables while it has entries, so its id stays unique.
        self._by_peer: dict[int, dict[_Key, Network]] = {}

    def __len__(self) -> int:
        tables = [*self._v4.tables.values(), *self._v6.tables.values()]
        return sum(len(table) for table in tables)

    def clear(self) -> None:
        self._v4 = _Family(32)
        self._v6 = _Family(128)
        self._by_peer = {}

    def insert(self, network: Network, peer: T) -> None:
        """Route `network` to `peer`, taking it from any other peer; host bits are ignored."""
        if peer is None:
            raise ValueError("peer must not be None")
        family, key = self._locate(network)
        table = family.table_for(key[1])
        old = table.get(key[2])
        if old is not None:
            self._forget(old, key)
        table[key[2]] = peer
        # As the kernel's list_move_tail: a (re)inserted prefix goes to the end of its peer's list.
        shift = family.bits - key[1]
        canonical = type(network)((key[2] << shift, key[1]))
        self._by_peer.setdefault(id(peer), {})[key] = canonical

    def remove(self, network: Network, peer: T) -> bool:
        """Remove `network` if `peer` owns it; report whether anything was removed."""
        family, key = self._locate(network)
        table = family.tables.get(key[1])
        if table is None or table.get(key[2]) is not peer:
            return False
        del table[key[2]]
        self._forget(peer, key)
        if family.drop_if_empty(key[1]):
            family.reorder()
        return True

    def remove_peer(self, peer: T) -> None:
        """Remove every prefix of `peer`."""
        entries = self._by_peer.pop(id(peer), None)
        if not entries:
            return
        emptied: set[_Family[T]] = set()
        for bits, length, value in entries:
            family = self._v4 if bits == 32 else self._v6
            del family.tables[length][value]
            if family.drop_if_empty(length):
                emptied.add(family)
        for family in emptied:
            family.reorder()

    def lookup(self, address: bytes) -> T | None:
        """The peer for a packed 4- or 16-byte address, as read from a packet header."""
        size = len(address)
        if size == 4:
            order = self._v4.order
        elif size == 16:
            order = self._v6.order
        else:
            raise ValueError(f"address must be 4 or 16 bytes, not {size}")
        value = int.from_bytes(address, "big")
        for shift, table in order:
            peer = table.get(value >> shift)
            if peer is not None:
                return peer
        return None

    def lookup_ip(self, address: IPv4Address | IPv6Address) -> T | None:
        return self.lookup(address.packed)

    def entries_for(self, peer: T) -> list[Network]:
        """The prefixes of `peer`, oldest first (re-inserting moves one to the end)."""
        return list(self._by_peer.get(id(peer), {}).values())

    def _locate(self, network: Network) -> tuple[_Family[T], _Key]:
        family = self._v4 if network.version == 4 else self._v6
        length = network.prefixlen
        value = int(network.network_address) >> (family.bits - length)
        return family, (family.bits, length, value)

    def _forget(self, peer: T, key: _Key) -> None:
        """Drop `key` from `peer`'s list, and the list itself once empty."""
        entries = self._by_peer[id(peer)]
        del entries[key]
        if not entries:
            del self._by_peer[id(peer)]
