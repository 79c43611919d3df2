"""TUN offloads in pure Python: pywg/native/offload.c's splitting and merging, frame for frame.

What a vnet_hdr TUN reads is split here into the IP packets the device seals (`split_frame`), and
what the device opened is merged into super-packets before it is written (`coalesce`), with the
same rules, the same hostile-frame floors and the same bytes as the C (tests/test_offload.py holds
the two to each other): the pure-Python path (PYWG_NO_EXT=1) gets TSO/USO and GRO as the C path
does, and the wire sees the same packets.

Checksums (RFC 1071) come from one big-integer conversion per buffer, not a loop per word: a
buffer read as a big-endian integer N is the sum of its 16-bit words times powers of 2^16, and
2^16 = 1 (mod 0xFFFF), so N mod 0xFFFF is their one's-complement sum, folded (0xFFFF where the
fold gives it for a sum that is not zero). Sums of buffers of even length add up mod 0xFFFF.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

VNET_HDR_LEN = 10  # struct virtio_net_hdr (offload.h WG_VNET_HDR_LEN)
MAX_IP_PACKET = 65535
MAX_FRAME = VNET_HDR_LEN + MAX_IP_PACKET
NEEDS_CSUM = 1
GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, GSO_ECN = 0, 1, 4, 5, 0x80
# The hostile-frame floors of offload.h ("Hostile frames").
GSO_MIN_TCP_SEGMENT = 472
GSO_MIN_UDP_SEGMENT = 8
GSO_MAX_SEGMENTS = (MAX_IP_PACKET - 40 + GSO_MIN_TCP_SEGMENT - 1) // GSO_MIN_TCP_SEGMENT
# split_frame's drop reasons (offload.h WG_SPLIT_*).
SPLIT_MALFORMED, SPLIT_SEGMENT_TOO_SMALL, SPLIT_TOO_MANY_SEGMENTS = -1, -2, -3
# coalesce: what may be merged (offload.h WG_MERGE_*).
MERGE_TCP, MERGE_UDP = 1, 2

_TCP, _UDP = 6, 17
_TCP_CHECKSUM, _UDP_CHECKSUM = 16, 6
_FIN, _PSH, _ACK, _CWR = 0x01, 0x08, 0x10, 0x80
_IPV4_MF = 0x20
_GRO_RECENT = 8  # earlier super-packets a packet is compared with (offload.c GRO_RECENT)
_GRO_MAX_UDP_SEGMENTS = 64
_VNET = struct.Struct("=BBHHHH")  # host byte order, as the kernel's legacy virtio_net_hdr
_PLAIN_HEADER = bytes(VNET_HDR_LEN)
_BE16 = struct.Struct("!H")
_BE32 = struct.Struct("!I")
_from_bytes = int.from_bytes


def residue(data: bytes | bytearray | memoryview) -> int:
    """The one's-complement sum of `data` (RFC 1071; odd length: a zero byte added) mod 0xFFFF."""
    value = _from_bytes(data, "big")
    return (value << 8 if len(data) & 1 else value) % 0xFFFF


def _fold(value: int, raw_is_zero: bool = False) -> int:
    """The folded 16-bit sum of a residue; 0 only for a sum of zero words."""
    return value if value or raw_is_zero else 0xFFFF


def _pseudo(packet: bytes | bytearray, version: int, protocol: int, length: int) -> int:
    """The pseudo-header's residue (RFC 793, RFC 8200 8.1), never of a zero sum (protocol > 0)."""
    addresses = packet[12:20] if version == 4 else packet[8:40]
    return (_from_bytes(addresses, "big") + protocol + (length & 0xFFFF)) % 0xFFFF


def _ipv4_header_checksum(header: bytes | bytearray) -> int:
    """The checksum of an IPv4 header whose checksum field holds zero."""
    return ~_fold(residue(header)) & 0xFFFF


# --- splitting -------------------------------------------------------------------------------------


def _gso_ip_header(packet: bytes, length: int, version: int, protocol: int) -> int:
    """offload.c gso_ip_header: the IP header length of a super-packet whose IP header describes it
    truly, else 0."""
    if version == 4:
        header = (packet[0] & 0x0F) * 4
        if (
            length < 20
            or header < 20
            or header > length
            or (packet[2] << 8 | packet[3]) != length
            or packet[6] & _IPV4_MF
            or (packet[6] & 0x1F) | packet[7]
            or packet[9] != protocol
        ):
            return 0
        return header
    if length < 40 or (packet[4] << 8 | packet[5]) != length - 40 or packet[6] != protocol:
        return 0
    return 40


def _gso_parse(hdr: bytes, packet: bytes) -> tuple[int, int, int, int, int] | int:
    """offload.c gso_parse: (l4, header, segment, protocol, version), or a drop reason (< 0)."""
    length = len(packet)
    gso_type = hdr[1] & ~GSO_ECN
    tcp = gso_type in (GSO_TCPV4, GSO_TCPV6)
    if not hdr[0] & NEEDS_CSUM or not length:
        return SPLIT_MALFORMED
    if not tcp and (gso_type != GSO_UDP_L4 or hdr[1] & GSO_ECN):
        return SPLIT_MALFORMED
    _, _, _, segment, l4, csum_offset = _VNET.unpack(hdr)
    version = packet[0] >> 4
    protocol = _TCP if tcp else _UDP
    if (
        (gso_type == GSO_TCPV4 and version != 4)
        or (gso_type == GSO_TCPV6 and version != 6)
        or version not in (4, 6)
        or csum_offset != (_TCP_CHECKSUM if tcp else _UDP_CHECKSUM)
    ):
        return SPLIT_MALFORMED
    ip = _gso_ip_header(packet, length, version, protocol)
    if not ip or l4 != ip:
        return SPLIT_MALFORMED
    if tcp:
        if l4 + 20 > length:
            return SPLIT_MALFORMED  # hdr_len is not trusted: the TCP header says how long it is
        tcp_header = (packet[l4 + 12] >> 4) * 4
        if tcp_header < 20:
            return SPLIT_MALFORMED
        header = l4 + tcp_header
    else:
        header = l4 + 8
    if header > length or (not tcp and (packet[l4 + 4] << 8 | packet[l4 + 5]) != length - l4):
        return SPLIT_MALFORMED
    if segment < (GSO_MIN_TCP_SEGMENT if tcp else GSO_MIN_UDP_SEGMENT):
        return SPLIT_SEGMENT_TOO_SMALL
    if header + segment > MAX_IP_PACKET:
        return SPLIT_MALFORMED
    if _segments(length, header, segment) > GSO_MAX_SEGMENTS:
        return SPLIT_TOO_MANY_SEGMENTS
    return l4, header, segment, protocol, version


def _segments(length: int, header: int, segment: int) -> int:
    """Segments of a GSO packet: one for the headers alone."""
    payload = length - header
    return -(-payload // segment) if payload else 1


def _plain_packet(hdr: bytes, packet: bytes) -> bytes | None:
    """offload.c plain_packet: a packet without GSO, NEEDS_CSUM completed; None if malformed."""
    if not hdr[0] & NEEDS_CSUM:
        return packet
    length = len(packet)
    start = hdr[6] | hdr[7] << 8
    at = start + (hdr[8] | hdr[9] << 8)
    version = packet[0] >> 4
    ip = 40 if version == 6 else (packet[0] & 0x0F) * 4
    if version not in (4, 6) or start < ip or start < 20 or at + 2 > length:
        return None  # the transport's checksum, never inside the IP header
    # The field holds the pseudo-header sum already (CHECKSUM_PARTIAL): sum over it.
    part = packet[start:]
    raw = _from_bytes(part, "big")
    folded = _fold((raw << 8 if len(part) & 1 else raw) % 0xFFFF, raw_is_zero=not raw)
    return packet[:at] + _BE16.pack(~folded & 0xFFFF) + packet[at + 2 :]


def split_frame(
    frame: bytes, first: int = 0, slots: int = GSO_MAX_SEGMENTS
) -> tuple[list[bytes], bool] | int:
    """offload.c wg_tun_split: the IP packets of `frame` (virtio_net_hdr + IP packet) from segment
    `first` on, at most `slots`, and whether the frame's last one is among them; or a drop reason
    (SPLIT_*, < 0)."""
    length = len(frame)
    if length <= VNET_HDR_LEN or length > MAX_FRAME:
        return SPLIT_MALFORMED
    hdr, packet = frame[:VNET_HDR_LEN], frame[VNET_HDR_LEN:]
    if hdr[1] == GSO_NONE:  # with the ECN flag, a lie _gso_parse refuses
        plain = _plain_packet(hdr, packet)
        return SPLIT_MALFORMED if plain is None else ([plain], True)
    layout = _gso_parse(hdr, packet)
    if isinstance(layout, int):
        return layout
    l4, header, segment, protocol, version = layout
    length -= VNET_HDR_LEN
    segments = _segments(length, header, segment)
    last = min(segments, first + slots)
    return _gso_segments(
        packet, length, l4, header, segment, protocol, version, first, last
    ), last == segments


def _gso_segments(
    packet: bytes,
    length: int,
    l4: int,
    header: int,
    segment: int,
    protocol: int,
    version: int,
    first: int,
    stop: int,
) -> list[bytes]:
    """offload.c gso_segment for segments first..stop-1: headers, lengths, id, sequence number,
    flags, checksums. Each checksum is the sum of the pseudo-header, the segment's transport
    header and its payload, added as residues."""
    tcp = protocol == _TCP
    ip_header = bytearray(packet[:l4])
    l4_header = bytearray(packet[l4:header])
    checksum_at = _TCP_CHECKSUM if tcp else _UDP_CHECKSUM
    l4_header[checksum_at : checksum_at + 2] = b"\0\0"
    addresses = _pseudo(packet, version, protocol, 0)  # the length is added per segment
    if version == 4:
        ident = packet[4] << 8 | packet[5]
        ip_header[10:12] = b"\0\0"
    if tcp:
        sequence = _BE32.unpack_from(packet, l4 + 4)[0]
        flags = packet[l4 + 13]
    out: list[bytes] = []
    for index in range(first, stop):
        start = header + index * segment
        payload = packet[start : start + segment]
        total = header + len(payload)
        if version == 4:
            ip_header[2:4] = _BE16.pack(total)
            ip_header[4:6] = _BE16.pack((ident + index) & 0xFFFF)
            ip_header[10:12] = b"\0\0"
            ip_header[10:12] = _BE16.pack(_ipv4_header_checksum(ip_header))
        else:
            ip_header[4:6] = _BE16.pack(total - 40)
        if tcp:
            l4_header[4:8] = _BE32.pack((sequence + index * segment) & 0xFFFFFFFF)
            bits = flags
            if start + len(payload) != length:
                bits &= ~(_FIN | _PSH)
            if index:
                bits &= ~_CWR
            l4_header[13] = bits
        else:
            l4_header[4:6] = _BE16.pack(total - l4)
        l4_header[checksum_at : checksum_at + 2] = b"\0\0"
        raw = addresses + (total - l4) + residue(l4_header) + residue(payload)
        folded = ~_fold(raw % 0xFFFF) & 0xFFFF
        if not tcp and folded == 0:
            folded = 0xFFFF  # 0 means "no checksum" in UDP
        l4_header[checksum_at : checksum_at + 2] = _BE16.pack(folded)
        out.append(b"".join((ip_header, l4_header, payload)))
    return out


# --- merging ---------------------------------------------------------------------------------------


class _Head:
    """A super-packet in the making (offload.h wg_gro_slot of a head)."""

    __slots__ = ("closed", "count", "first", "header", "members", "payload", "segment")

    def __init__(self, first: bytes, header: int, closed: bool) -> None:
        self.first = first
        self.header = header
        self.payload = self.segment = len(first) - header
        self.count = 1
        self.closed = closed
        self.members = [first]


def _candidate(p: bytes, merge: int) -> int:
    """offload.c gro_candidate: the IP + transport header length of a packet that may be merged, or 0."""
    length = len(p)
    if not length:
        return 0
    if p[0] == 0x45 and length >= 20 and (p[2] << 8 | p[3]) == length and not p[6] & _IPV4_MF:
        if (p[6] & 0x1F) | p[7]:
            return 0
        ip, protocol, version = 20, p[9], 4
    elif p[0] >> 4 == 6 and length >= 40 and (p[4] << 8 | p[5]) == length - 40:
        ip, protocol, version = 40, p[6], 6
    else:
        return 0
    if protocol == _TCP and merge & MERGE_TCP:
        if length < ip + 20:
            return 0
        tcp = (p[ip + 12] >> 4) * 4
        header = ip + tcp
        if tcp < 20 or tcp > 60 or header >= length or p[ip + 13] not in (_ACK, _ACK | _PSH):
            return 0  # SYN, FIN, RST, URG, ECE, CWR, no payload: as they are
    elif protocol == _UDP and merge & MERGE_UDP:
        header = ip + 8
        if header >= length or (p[ip + 4] << 8 | p[ip + 5]) != length - ip or not (p[ip + 6] | p[ip + 7]):
            return 0  # no payload, a wrong length, no checksum to check
    else:
        return 0
    # A merged packet gets a new checksum, which must not hide a wrong one.
    transport = p[ip:]
    raw = _from_bytes(transport, "big")
    if (_pseudo(p, version, protocol, length - ip) + (raw << 8 if length & 1 else raw)) % 0xFFFF:
        return 0
    return header


def _same_flow(a: bytes, b: bytes, header: int) -> bool:
    """offload.c gro_same_flow: addresses, protocol, ports; for TCP the ack number and options; IP
    headers that allow merging. Both are candidates with one header length."""
    if a[0] >> 4 == 4:
        if b[0] >> 4 != 4 or a[9] != b[9] or a[1] != b[1] or a[6] >> 5 != b[6] >> 5 or a[8] != b[8]:
            return False  # ToS, DF, TTL
        if a[12:24] != b[12:24]:
            return False  # addresses, ports
        ip, tcp = 20, a[9] == _TCP
    else:
        if b[0] >> 4 != 6 or a[6] != b[6] or a[:4] != b[:4] or a[7] != b[7] or a[8:44] != b[8:44]:
            return False  # traffic class, flow label, hop limit, addresses, ports
        ip, tcp = 40, a[6] == _TCP
    return not tcp or (
        a[ip + 8 : ip + 13] == b[ip + 8 : ip + 13] and a[ip + 20 : header] == b[ip + 20 : header]
    )


def _append(head: _Head, p: bytes, header: int) -> int:
    """offload.c gro_append: 1 appended, 0 another flow, -1 this flow but it does not continue it."""
    first = head.first
    if header != head.header or not _same_flow(first, p, header):
        return 0
    payload = len(p) - header
    ip = 20 if first[0] >> 4 == 4 else 40
    tcp = first[9 if ip == 20 else 6] == _TCP
    if (
        head.closed
        or payload > head.segment
        or head.header + head.payload + payload > MAX_IP_PACKET
        or (not tcp and head.count == _GRO_MAX_UDP_SEGMENTS)
        or (
            tcp
            and _BE32.unpack_from(p, ip + 4)[0]
            != (_BE32.unpack_from(first, ip + 4)[0] + head.payload) & 0xFFFFFFFF
        )
    ):
        return -1
    head.members.append(p)
    head.payload += payload
    head.count += 1
    head.closed = payload < head.segment or bool(tcp and p[ip + 13] & _PSH)
    return 1


def _emit(head: _Head) -> bytes:
    """offload.c gro_emit: a super-packet of several members, its vnet header first."""
    first, header = head.first, head.header
    version = first[0] >> 4
    ip = 20 if version == 4 else 40
    protocol = first[9] if version == 4 else first[6]
    tcp = protocol == _TCP
    total = header + head.payload
    gso_type = GSO_UDP_L4 if not tcp else GSO_TCPV4 if version == 4 else GSO_TCPV6
    checksum_at = ip + (_TCP_CHECKSUM if tcp else _UDP_CHECKSUM)
    headers = bytearray(first[:header])
    if tcp:  # PSH can only be on the last member; the merged packet carries it
        headers[ip + 13] |= head.members[-1][ip + 13] & _PSH
    else:
        headers[ip + 4 : ip + 6] = _BE16.pack(total - ip)
    if version == 4:
        headers[2:4] = _BE16.pack(total)
        headers[10:12] = b"\0\0"
        headers[10:12] = _BE16.pack(_ipv4_header_checksum(headers[:20]))
    else:
        headers[4:6] = _BE16.pack(total - 40)
    # NEEDS_CSUM: the field holds the pseudo-header sum, the kernel adds the rest.
    headers[checksum_at : checksum_at + 2] = _BE16.pack(
        _fold(_pseudo(headers, version, protocol, total - ip))
    )
    vnet = _VNET.pack(NEEDS_CSUM, gso_type, header, head.segment, ip, checksum_at - ip)
    return b"".join([vnet, headers, *(member[header:] for member in head.members)])


def _close_flow(recent: list[tuple[_Head, int]], p: bytes) -> None:
    """offload.c gro_close_flow: a packet that is no candidate ends the recent super-packets of its
    flow (addresses, protocol, ports; plain IP headers only), which a later packet of the flow would
    otherwise join, ahead of it."""
    if len(p) >= 24 and p[0] == 0x45:
        key, at = p[9:10] + p[12:24], (9, 12, 24)
    elif len(p) >= 44 and p[0] >> 4 == 6:
        key, at = p[6:7] + p[8:44], (6, 8, 44)
    else:
        return
    for head, _ in recent:
        first = head.first
        if first[0] >> 4 == p[0] >> 4 and first[at[0] : at[0] + 1] + first[at[1] : at[2]] == key:
            head.closed = True


def _join_recent(recent: list[tuple[_Head, int]], p: bytes, header: int) -> int | None:
    """Append `p` to the newest of the `recent` super-packets of its flow that it continues; the
    frame it went into, or None. The first one of its flow decides (offload.c gro_group)."""
    for head, frame in reversed(recent):
        merged = _append(head, p, header)
        if merged:
            return frame if merged > 0 else None
    return None


def coalesce(packets: Sequence[bytes], merge: int) -> tuple[list[bytes], list[int]]:
    """offload.c wg_tun_coalesce: `packets` as frames for a vnet_hdr TUN, consecutive TCP segments
    (MERGE_TCP in `merge`) or UDP datagrams (MERGE_UDP) of one flow merged into one GSO frame, the
    rest behind a zero header; and the frame each packet went into. Frames keep the order of their
    first packets. A candidate joins one of the latest _GRO_RECENT super-packets (newest first); a
    UDP datagram only the latest one of its flow, as datagrams have no sequence number."""
    heads: list[_Head | bytes] = []  # a super-packet in the making, or a packet as it is
    frame_of: list[int] = []
    recent: list[tuple[_Head, int]] = []
    for p in packets:
        header = _candidate(p, merge) if merge else 0
        if not header:
            _close_flow(recent, p)
            frame_of.append(len(heads))
            heads.append(p)
            continue
        joined = _join_recent(recent, p, header)
        if joined is not None:
            frame_of.append(joined)
            continue
        version = p[0] >> 4
        ip = 20 if version == 4 else 40
        closed = (p[9] if version == 4 else p[6]) == _TCP and bool(p[ip + 13] & _PSH)
        new = _Head(p, header, closed)
        if len(recent) == _GRO_RECENT:
            del recent[0]
        recent.append((new, len(heads)))
        frame_of.append(len(heads))
        heads.append(new)
    frames = [
        _PLAIN_HEADER + head
        if isinstance(head, bytes)
        else _emit(head)
        if head.count > 1
        else _PLAIN_HEADER + head.first
        for head in heads
    ]
    return frames, frame_of
