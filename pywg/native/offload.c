/* TUN offloads: splitting super-packets, coalescing TCP segments; see offload.h. */
#include "offload.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define IPV4_HEADER 20
#define IPV6_HEADER 40
#define TCP_HEADER 20
#define TCP_MAX_HEADER 60
#define UDP_HEADER 8
#define TCP_FLAGS 13
#define TCP_CHECKSUM 16
#define UDP_CHECKSUM 6
#define TCP_FIN 0x01
#define TCP_PSH 0x08
#define TCP_ACK 0x10
#define TCP_CWR 0x80
#define IPV4_MF 0x20
#define NO_SLOT UINT32_MAX
/* Earlier super-packets of the batch a segment is compared with (newest first). */
#define GRO_RECENT 8
/* Datagrams in one merged UDP packet at most, as in one UDP GSO send (pywg/runtime/udp.py). */
#define GRO_MAX_UDP_SEGMENTS 64

/* Internet checksum (RFC 1071). Words are summed in the host's byte order and
 * the folded sum stored back the same way, which gives the big-endian result. */

static uint64_t csum_add(uint64_t sum, const uint8_t *p, size_t n)
{
    uint32_t word, words[4];
    uint16_t half;
    uint64_t lanes[4] = {0, 0, 0, 0};
    /* Four independent sums (the compiler vectorizes them); < 2^46 each for 64 KiB. */
    for (; n >= 16; p += 16, n -= 16) {
        memcpy(words, p, 16);
        for (int i = 0; i < 4; ++i)
            lanes[i] += words[i];
    }
    sum += lanes[0] + lanes[1] + lanes[2] + lanes[3];
    for (; n >= 4; p += 4, n -= 4) {
        memcpy(&word, p, 4);
        sum += word;
    }
    if (n >= 2) {
        memcpy(&half, p, 2);
        sum += half;
        p += 2;
        n -= 2;
    }
    if (n) {
        uint8_t last[2] = {p[0], 0};
        memcpy(&half, last, 2);
        sum += half;
    }
    return sum;
}

static uint16_t csum_fold(uint64_t sum)
{
    sum = (sum & 0xffffffffu) + (sum >> 32);
    sum = (sum & 0xffffffffu) + (sum >> 32);
    sum = (sum & 0xffffu) + (sum >> 16);
    sum = (sum & 0xffffu) + (sum >> 16);
    return (uint16_t)sum;
}

static void put_be16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static uint32_t get_be16(const uint8_t *p)
{
    return (uint32_t)p[0] << 8 | p[1];
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
    put_be16(p, v >> 16);
    put_be16(p + 2, v);
}

/* virtio_net_hdr fields are in the host's byte order (a legacy TUN on a little-endian host). */
static uint16_t get_host16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static void put_host16(uint8_t *p, uint16_t v)
{
    memcpy(p, &v, 2);
}

static void put_csum(uint8_t *p, uint16_t folded)
{
    memcpy(p, &folded, 2);
}

/* The pseudo-header sum (RFC 793, RFC 8200 8.1): addresses, protocol, transport length. */
static uint64_t pseudo_sum(const uint8_t *packet, int version, uint32_t protocol, uint32_t l4_length)
{
    uint8_t tail[4];
    uint64_t sum = version == 4 ? csum_add(0, packet + 12, 8) : csum_add(0, packet + 8, 32);
    put_be16(tail, protocol);
    put_be16(tail + 2, l4_length);
    return csum_add(sum, tail, 4);
}

static void ipv4_header_checksum(uint8_t *ip, uint32_t header)
{
    ip[10] = ip[11] = 0;
    put_csum(ip + 10, (uint16_t)~csum_fold(csum_add(0, ip, header)));
}

/* Where the transport header and the payload of a GSO frame's packet start, and what it is. */
typedef struct {
    uint32_t l4;      /* transport header offset (csum_start) */
    uint32_t header;  /* IP + transport header bytes */
    uint32_t segment; /* payload bytes per segment (gso_size) */
    uint32_t protocol;
    int version;
} gso_layout;

/* Segments of a GSO frame of `length` bytes: one for the headers alone. */
static uint32_t gso_segments(uint32_t length, const gso_layout *g)
{
    uint32_t payload = length - g->header;
    return payload ? (payload + g->segment - 1) / g->segment : 1;
}

/* The IP header length of a super-packet of `protocol` whose IP header describes it truly (its
 * length that of the frame, not a fragment, no IPv6 extension header), else 0. */
static uint32_t gso_ip_header(const uint8_t *packet, uint32_t length, int version, uint32_t protocol)
{
    if (version == 4) {
        uint32_t header = (uint32_t)(packet[0] & 0x0f) * 4;
        if (length < IPV4_HEADER || header < IPV4_HEADER || header > length || get_be16(packet + 2) != length ||
            (packet[6] & IPV4_MF) || ((packet[6] & 0x1f) | packet[7]) || packet[9] != protocol)
            return 0;
        return header;
    }
    if (length < IPV6_HEADER || get_be16(packet + 4) != length - IPV6_HEADER || packet[6] != protocol)
        return 0;
    return IPV6_HEADER;
}

/* Check a GSO frame ("Hostile frames" in offload.h) and find its layout: 0, or a WG_SPLIT_ drop reason. */
static int gso_parse(const uint8_t *hdr, const uint8_t *packet, uint32_t length, gso_layout *g)
{
    unsigned int type = hdr[1] & ~WG_VNET_GSO_ECN;
    int tcp = type == WG_VNET_GSO_TCPV4 || type == WG_VNET_GSO_TCPV6;
    if (!(hdr[0] & WG_VNET_F_NEEDS_CSUM) || !length)
        return WG_SPLIT_MALFORMED;
    /* UFO (WG_VNET_GSO_UDP) is never offered: TUN_F_UFO stays off. ECN is TCP's (CWR in the first segment). */
    if (!tcp && (type != WG_VNET_GSO_UDP_L4 || (hdr[1] & WG_VNET_GSO_ECN)))
        return WG_SPLIT_MALFORMED;
    g->version = packet[0] >> 4;
    g->protocol = tcp ? IPPROTO_TCP_ : IPPROTO_UDP_;
    g->segment = get_host16(hdr + 4);
    g->l4 = get_host16(hdr + 6);
    if ((type == WG_VNET_GSO_TCPV4 && g->version != 4) || (type == WG_VNET_GSO_TCPV6 && g->version != 6) ||
        (g->version != 4 && g->version != 6) || get_host16(hdr + 8) != (tcp ? TCP_CHECKSUM : UDP_CHECKSUM))
        return WG_SPLIT_MALFORMED;
    uint32_t ip = gso_ip_header(packet, length, g->version, g->protocol);
    if (!ip || g->l4 != ip)
        return WG_SPLIT_MALFORMED;
    if (tcp) {
        /* hdr_len is not trusted (wireguard-go): the TCP header says how long it is. */
        if (g->l4 + TCP_HEADER > length)
            return WG_SPLIT_MALFORMED;
        uint32_t tcp_header = (uint32_t)(packet[g->l4 + 12] >> 4) * 4;
        if (tcp_header < TCP_HEADER)
            return WG_SPLIT_MALFORMED;
        g->header = g->l4 + tcp_header;
    } else {
        g->header = g->l4 + UDP_HEADER;
    }
    if (g->header > length || (!tcp && get_be16(packet + g->l4 + 4) != length - g->l4))
        return WG_SPLIT_MALFORMED;
    if (g->segment < (tcp ? WG_GSO_MIN_TCP_SEGMENT : WG_GSO_MIN_UDP_SEGMENT))
        return WG_SPLIT_SEGMENT_TOO_SMALL;
    if (g->header + g->segment > WG_MAX_IP_PACKET)
        return WG_SPLIT_MALFORMED;
    if (gso_segments(length, g) > WG_GSO_MAX_SEGMENTS)
        return WG_SPLIT_TOO_MANY_SEGMENTS;
    return 0;
}

/* Segment `index` of a GSO packet into `out`: headers, lengths, id, sequence number, flags, checksums. */
static uint32_t gso_segment(const uint8_t *packet, uint32_t length, const gso_layout *g, uint32_t index,
                            uint8_t *out)
{
    uint32_t start = g->header + index * g->segment;
    uint32_t payload = length - start < g->segment ? length - start : g->segment;
    uint32_t total = g->header + payload;
    int last = start + payload == length;
    uint8_t *l4 = out + g->l4;
    memcpy(out, packet, g->header);
    memcpy(out + g->header, packet + start, payload);
    if (g->version == 4) {
        put_be16(out + 2, total);
        put_be16(out + 4, get_be16(packet + 4) + index); /* the id, as the kernel's TSO counts it */
        ipv4_header_checksum(out, g->l4);
    } else {
        put_be16(out + 4, total - IPV6_HEADER);
    }
    uint8_t *checksum = l4 + (g->protocol == IPPROTO_TCP_ ? TCP_CHECKSUM : UDP_CHECKSUM);
    if (g->protocol == IPPROTO_TCP_) {
        put_be32(l4 + 4, get_be32(packet + g->l4 + 4) + index * g->segment);
        if (!last)
            l4[TCP_FLAGS] &= (uint8_t)~(TCP_FIN | TCP_PSH);
        if (index)
            l4[TCP_FLAGS] &= (uint8_t)~TCP_CWR;
    } else {
        put_be16(l4 + 4, total - g->l4);
    }
    checksum[0] = checksum[1] = 0;
    uint16_t folded = (uint16_t)~csum_fold(
        csum_add(pseudo_sum(out, g->version, g->protocol, total - g->l4), l4, total - g->l4));
    if (g->protocol == IPPROTO_UDP_ && folded == 0)
        folded = 0xffff; /* 0 means "no checksum" in UDP */
    put_csum(checksum, folded);
    return total;
}

/* A packet without GSO, copied out; NEEDS_CSUM completed at csum_start + csum_offset. */
static long plain_packet(const uint8_t *hdr, const uint8_t *packet, uint32_t length, uint8_t *out)
{
    int needs_csum = hdr[0] & WG_VNET_F_NEEDS_CSUM;
    uint32_t start = get_host16(hdr + 6), at = start + get_host16(hdr + 8);
    if (!length)
        return -1;
    if (needs_csum) {
        int version = packet[0] >> 4;
        /* The transport's checksum: never inside the IP header (over its addresses, say). */
        uint32_t ip = version == 6 ? IPV6_HEADER : (uint32_t)(packet[0] & 0x0f) * 4;
        if ((version != 4 && version != 6) || start < ip || start < IPV4_HEADER || at + 2 > length)
            return -1;
    }
    memcpy(out, packet, length);
    if (needs_csum) /* The field holds the pseudo-header sum already (CHECKSUM_PARTIAL): sum over it. */
        put_csum(out + at, (uint16_t)~csum_fold(csum_add(0, out + start, length - start)));
    return length;
}

long wg_tun_split(const uint8_t *frame, uint32_t length, uint32_t first, uint8_t *out, size_t out_size,
                  size_t *position, uint32_t *out_off, uint32_t *out_len, size_t slots, int *done)
{
    const uint8_t *packet = frame + WG_VNET_HDR_LEN;
    *done = 0;
    if (length <= WG_VNET_HDR_LEN || length > WG_MAX_FRAME)
        return WG_SPLIT_MALFORMED;
    length -= WG_VNET_HDR_LEN;
    if (frame[1] == WG_VNET_GSO_NONE) { /* with the ECN flag, a lie gso_parse refuses */
        if (!slots || *position + length > out_size)
            return 0;
        if (plain_packet(frame, packet, length, out + *position) < 0)
            return WG_SPLIT_MALFORMED;
        out_off[0] = (uint32_t)*position;
        out_len[0] = length;
        *position += length;
        *done = 1;
        return 1;
    }
    gso_layout g;
    int refused = gso_parse(frame, packet, length, &g);
    if (refused)
        return refused;
    uint32_t segments = gso_segments(length, &g);
    size_t k = 0;
    for (uint32_t index = first; index < segments && k < slots; ++index, ++k) {
        if (*position + g.header + g.segment > out_size)
            break;
        out_off[k] = (uint32_t)*position;
        out_len[k] = gso_segment(packet, length, &g, index, out + *position);
        *position += out_len[k];
    }
    *done = first + k >= segments;
    return (long)k;
}

long wg_tun_read(wg_tun_reader *reader, int fd, uint8_t *out, size_t out_size, uint32_t *out_off,
                 uint32_t *out_len, size_t slots, int *error)
{
    size_t position = 0, count = 0, frames = 0;
    *error = 0;
    if (out_size < WG_MAX_IP_PACKET)
        return 0;
    while (count < slots) {
        if (!reader->length) {
            if (frames == slots)
                break; /* the rest on the next call, after the event loop's other work */
            ssize_t got = read(fd, reader->frame, sizeof(reader->frame));
            if (got < 0 && errno == EINTR)
                continue;
            if (got <= 0) {
                if (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
                    *error = errno;
                break; /* empty (a TUN never reads 0 bytes: taken as empty, never spun on) */
            }
            reader->length = (uint32_t)got;
            reader->emitted = 0;
            ++frames;
        }
        int done;
        long k = wg_tun_split(reader->frame, reader->length, reader->emitted, out, out_size, &position,
                              out_off + count, out_len + count, slots - count, &done);
        if (k == 0 && count == 0 && !done)
            k = WG_SPLIT_MALFORMED; /* a frame that cannot fit even an empty output */
        if (k < 0) {
            ++reader->dropped[-1 - k];
            reader->length = 0;
            continue;
        }
        if (!reader->emitted && reader->frame[1] != WG_VNET_GSO_NONE)
            ++reader->superframes;
        count += (size_t)k;
        reader->emitted += (uint32_t)k;
        if (!done)
            break; /* the output is full; the rest of this frame goes next time */
        reader->length = 0;
    }
    return (long)count;
}

long wg_tun_read_plain(int fd, uint8_t *out, size_t out_size, uint32_t *out_off, uint32_t *out_len,
                       size_t slots, int *error)
{
    size_t position = 0, count = 0;
    *error = 0;
    while (count < slots && out_size - position >= WG_MAX_IP_PACKET) {
        ssize_t got = read(fd, out + position, WG_MAX_IP_PACKET);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            if (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
                *error = errno;
            break;
        }
        out_off[count] = (uint32_t)position;
        out_len[count++] = (uint32_t)got;
        position += (size_t)got;
    }
    return (long)count;
}

/* Coalescing. */

static uint32_t ip_header_length(const uint8_t *candidate)
{
    return candidate[0] >> 4 == 4 ? IPV4_HEADER : IPV6_HEADER; /* no options, no extension headers */
}

static uint8_t ip_protocol(const uint8_t *candidate)
{
    return candidate[0] >> 4 == 4 ? candidate[9] : candidate[6];
}

/* The IP header length of a packet whose IP layer allows merging, else 0: IPv4 without options
 * and not a fragment, IPv6 without extension headers, lengths that match, a protocol in `merge`. */
static uint32_t gro_ip(const uint8_t *p, uint32_t length, int merge)
{
    uint32_t ip;
    if (p[0] == 0x45 && length >= IPV4_HEADER && get_be16(p + 2) == length && !(p[6] & IPV4_MF) &&
        !((p[6] & 0x1f) | p[7]))
        ip = IPV4_HEADER;
    else if (p[0] >> 4 == 6 && length >= IPV6_HEADER && get_be16(p + 4) == length - IPV6_HEADER)
        ip = IPV6_HEADER;
    else
        return 0;
    uint8_t protocol = ip_protocol(p);
    return (protocol == IPPROTO_TCP_ && (merge & WG_MERGE_TCP)) || (protocol == IPPROTO_UDP_ && (merge & WG_MERGE_UDP))
               ? ip
               : 0;
}

/* The IP + transport header length of a packet that may be merged, or 0 (wireguard-go tcpGRO, udpGRO). */
static uint32_t gro_candidate(const uint8_t *p, uint32_t length, int merge)
{
    uint32_t ip = length ? gro_ip(p, length, merge) : 0, header;
    if (!ip)
        return 0;
    uint8_t protocol = ip_protocol(p);
    if (protocol == IPPROTO_TCP_) {
        if (length < ip + TCP_HEADER)
            return 0;
        uint32_t tcp = (uint32_t)(p[ip + 12] >> 4) * 4;
        uint8_t flags = p[ip + TCP_FLAGS];
        header = ip + tcp;
        if (tcp < TCP_HEADER || tcp > TCP_MAX_HEADER || header >= length ||
            (flags != TCP_ACK && flags != (TCP_ACK | TCP_PSH)))
            return 0; /* SYN, FIN, RST, URG, ECE, CWR, no payload: as they are */
    } else {
        header = ip + UDP_HEADER;
        if (header >= length || get_be16(p + ip + 4) != length - ip || !get_be16(p + ip + UDP_CHECKSUM))
            return 0; /* no payload, a wrong length, no checksum to check */
    }
    /* A merged packet gets a new checksum, which must not hide a wrong one. */
    uint64_t sum = pseudo_sum(p, p[0] >> 4, protocol, length - ip);
    if (csum_fold(csum_add(sum, p + ip, length - ip)) != 0xffff)
        return 0;
    return header;
}

/* Same flow (addresses, protocol, ports; for TCP the ack number and options) and IP headers
 * that allow merging (kernel GRO, wireguard-go ipHeadersCanCoalesce). */
static int gro_same_flow(const uint8_t *a, const uint8_t *b, uint32_t header)
{
    if (a[0] >> 4 != b[0] >> 4 || ip_protocol(a) != ip_protocol(b))
        return 0;
    if (a[0] >> 4 == 4) {
        if (a[1] != b[1] || (a[6] >> 5) != (b[6] >> 5) || a[8] != b[8] || memcmp(a + 12, b + 12, 8))
            return 0; /* ToS, DF, TTL, addresses */
    } else if (memcmp(a, b, 4) || a[7] != b[7] || memcmp(a + 8, b + 8, 32)) {
        return 0; /* traffic class, flow label, hop limit, addresses */
    }
    uint32_t ip = ip_header_length(a);
    if (memcmp(a + ip, b + ip, 4))
        return 0; /* ports */
    if (ip_protocol(a) != IPPROTO_TCP_)
        return 1;
    /* TCP: ack number, header length and options; not the sequence number, flags, window. */
    return !memcmp(a + ip + 8, b + ip + 8, 5) &&
           !memcmp(a + ip + TCP_HEADER, b + ip + TCP_HEADER, header - ip - TCP_HEADER);
}

/* Append packet i to the super-packet headed by h: 1 done, 0 another flow, -1 this flow but it
 * does not continue it (a gap, a larger segment, one after a shorter one or after PSH). */
static int gro_append(wg_gro_slot *slots, uint32_t h, uint32_t i, const uint8_t *in, const uint32_t *in_off,
                      const uint32_t *in_len)
{
    wg_gro_slot *head = &slots[h];
    const uint8_t *p = in + in_off[i], *first = in + in_off[h];
    uint32_t header = slots[i].header, payload = in_len[i] - header, ip = ip_header_length(first);
    int tcp = ip_protocol(first) == IPPROTO_TCP_;
    if (header != head->header || !gro_same_flow(first, p, header))
        return 0;
    if (head->closed || payload > head->segment || head->header + head->payload + payload > WG_MAX_IP_PACKET ||
        (!tcp && head->count == GRO_MAX_UDP_SEGMENTS) ||
        (tcp && get_be32(p + ip + 4) != get_be32(first + ip + 4) + head->payload))
        return -1;
    slots[head->tail].next = i;
    slots[i].head = h;
    head->tail = i;
    head->payload += payload;
    head->count += 1;
    head->closed = payload < head->segment || (tcp && (p[ip + TCP_FLAGS] & TCP_PSH));
    return 1;
}

/* A packet that is no candidate ends the recent super-packets of its flow (addresses, protocol,
 * ports; plain IP headers only): a later packet of the flow joining one of them would be written
 * ahead of it, as the kernel's GRO flushes a flow for such a packet. */
static void gro_close_flow(wg_gro_slot *slots, const uint32_t *recent, size_t recent_count, const uint8_t *in,
                           const uint32_t *in_off, const uint8_t *p, uint32_t length)
{
    int v4 = length >= IPV4_HEADER + 4 && p[0] == 0x45, v6 = length >= IPV6_HEADER + 4 && p[0] >> 4 == 6;
    for (size_t r = 0; r < recent_count && (v4 || v6); ++r) {
        const uint8_t *first = in + in_off[recent[r]];
        if (v4 ? first[0] == 0x45 && first[9] == p[9] && !memcmp(first + 12, p + 12, 12)
               : first[0] >> 4 == 6 && first[6] == p[6] && !memcmp(first + 8, p + 8, 36))
            slots[recent[r]].closed = 1;
    }
}

/* Pass 1: give every packet its head; candidates try the latest super-packets first. A UDP
 * datagram only joins the latest one of its flow: datagrams have no sequence number to put
 * them back in order. */
static void gro_group(const uint8_t *in, const uint32_t *in_off, const uint32_t *in_len, size_t n, int merge,
                      wg_gro_slot *slots)
{
    uint32_t recent[GRO_RECENT];
    size_t recent_count = 0;
    for (uint32_t i = 0; i < n; ++i) {
        wg_gro_slot *s = &slots[i];
        const uint8_t *p = in + in_off[i];
        memset(s, 0, sizeof(*s));
        s->head = s->tail = i;
        s->next = NO_SLOT;
        s->count = 1;
        s->header = (uint8_t)gro_candidate(p, in_len[i], merge);
        if (!s->header) {
            gro_close_flow(slots, recent, recent_count, in, in_off, p, in_len[i]);
            continue;
        }
        s->payload = in_len[i] - s->header;
        s->segment = (uint16_t)s->payload;
        s->closed = ip_protocol(p) == IPPROTO_TCP_ && (p[ip_header_length(p) + TCP_FLAGS] & TCP_PSH);
        int merged = 0;
        for (size_t r = recent_count; r-- > 0 && !merged;) {
            merged = gro_append(slots, recent[r], i, in, in_off, in_len);
            if (merged < 0 && ip_protocol(p) == IPPROTO_UDP_)
                break;
        }
        if (merged > 0)
            continue;
        if (recent_count == GRO_RECENT) {
            memmove(recent, recent + 1, sizeof(recent) - sizeof(recent[0]));
            --recent_count;
        }
        recent[recent_count++] = i;
    }
}

static void vnet_header(uint8_t *hdr, uint8_t flags, uint8_t type, uint32_t header, uint32_t segment,
                        uint32_t csum_start, uint32_t csum_offset)
{
    hdr[0] = flags;
    hdr[1] = type;
    put_host16(hdr + 2, (uint16_t)header);
    put_host16(hdr + 4, (uint16_t)segment);
    put_host16(hdr + 6, (uint16_t)csum_start);
    put_host16(hdr + 8, (uint16_t)csum_offset);
}

/* Pass 2 for a super-packet of several members: headers of the first, every payload, new lengths. */
static uint32_t gro_emit(const wg_gro_slot *slots, uint32_t h, const uint8_t *in, const uint32_t *in_off,
                         const uint32_t *in_len, uint8_t *frame)
{
    const wg_gro_slot *head = &slots[h];
    const uint8_t *first = in + in_off[h];
    int version = first[0] >> 4, tcp = ip_protocol(first) == IPPROTO_TCP_;
    uint32_t ip = ip_header_length(first), total = head->header + head->payload;
    uint8_t *packet = frame + WG_VNET_HDR_LEN, *at = packet + head->header;
    uint8_t type = !tcp ? WG_VNET_GSO_UDP_L4 : version == 4 ? WG_VNET_GSO_TCPV4 : WG_VNET_GSO_TCPV6;
    uint32_t checksum = tcp ? TCP_CHECKSUM : UDP_CHECKSUM;
    vnet_header(frame, WG_VNET_F_NEEDS_CSUM, type, head->header, head->segment, ip, checksum);
    memcpy(packet, first, head->header);
    for (uint32_t i = h; i != NO_SLOT; i = slots[i].next) {
        memcpy(at, in + in_off[i] + head->header, in_len[i] - head->header);
        at += in_len[i] - head->header;
    }
    if (tcp) /* PSH can only be on the last member; the merged packet carries it. */
        packet[ip + TCP_FLAGS] |= in[in_off[head->tail] + ip + TCP_FLAGS] & TCP_PSH;
    else
        put_be16(packet + ip + 4, total - ip);
    if (version == 4) {
        put_be16(packet + 2, total);
        ipv4_header_checksum(packet, IPV4_HEADER);
    } else {
        put_be16(packet + 4, total - IPV6_HEADER);
    }
    /* NEEDS_CSUM: the field holds the pseudo-header sum, the kernel adds the rest. */
    uint64_t sum = pseudo_sum(packet, version, ip_protocol(first), total - ip);
    put_csum(packet + ip + checksum, csum_fold(sum));
    return WG_VNET_HDR_LEN + total;
}

long wg_tun_coalesce(const uint8_t *in, const uint32_t *in_off, const uint32_t *in_len, size_t n, int merge,
                     wg_gro_slot *slots, uint8_t *out, size_t out_size, uint32_t *out_off, uint32_t *out_len,
                     uint32_t *frame_of)
{
    size_t position = 0, need = 0;
    long frames = 0;
    for (size_t i = 0; i < n; ++i)
        need += WG_VNET_HDR_LEN + (size_t)in_len[i];
    if (need > out_size)
        return -1;
    gro_group(in, in_off, in_len, n, merge, slots);
    for (uint32_t i = 0; i < n; ++i) {
        if (slots[i].head != i) {
            frame_of[i] = frame_of[slots[i].head];
            continue;
        }
        uint8_t *frame = out + position;
        uint32_t size;
        if (slots[i].count > 1) {
            size = gro_emit(slots, i, in, in_off, in_len, frame);
        } else {
            memset(frame, 0, WG_VNET_HDR_LEN);
            memcpy(frame + WG_VNET_HDR_LEN, in + in_off[i], in_len[i]);
            size = WG_VNET_HDR_LEN + in_len[i];
        }
        out_off[frames] = (uint32_t)position;
        out_len[frames] = size;
        frame_of[i] = (uint32_t)frames++;
        position += size;
    }
    return frames;
}

long wg_tun_write(int fd, const uint8_t *buf, const uint32_t *off, const uint32_t *len, size_t n, int *error,
                  uint32_t *lost)
{
    size_t i = 0;
    *error = 0;
    *lost = 0;
    while (i < n) {
        if (write(fd, buf + off[i], len[i]) >= 0) {
            ++i;
        } else if (errno == EIO || errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
            ++*lost;
            ++i;
        } else if (errno != EINTR) {
            *error = errno;
            break;
        }
    }
    return (long)i;
}
