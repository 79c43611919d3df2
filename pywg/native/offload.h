/* TUN offloads for pywg: super-packets split before encryption, decrypted
 * TCP segments coalesced before they go back into the TUN.
 *
 * A TUN opened with IFF_VNET_HDR puts a struct virtio_net_hdr
 * (<linux/virtio_net.h>, in the host's byte order) before every packet it
 * hands out and expects one before every packet written to it. With
 * TUNSETOFFLOAD (TUN_F_CSUM|TUN_F_TSO4|TUN_F_TSO6, and TUN_F_USO4|USO6 on
 * Linux >= 6.2) the kernel hands out TCP and UDP super-packets of up to 64 KiB
 * with the transport checksum left to us; `wg_tun_split` cuts them into
 * segments of gso_size payload bytes, each with its own IP lengths, IPv4 id and
 * header checksum, TCP sequence number and flags, and transport checksum.
 * `wg_tun_coalesce` does the reverse for what the tunnel decrypted: runs of
 * TCP segments (or UDP datagrams) of one flow become one super-packet
 * (VIRTIO_NET_HDR_GSO_TCPV4, TCPV6 or UDP_L4 with NEEDS_CSUM) that the kernel
 * takes as if its GRO had built it.
 * The rules are wireguard-go's tun/offload_linux.go and the kernel's GRO.
 *
 * Nothing here allocates: the caller hands in every buffer and array. cffi
 * (pywg/native/build.py, API mode) releases the GIL around every call.
 */
#ifndef PYWG_OFFLOAD_H
#define PYWG_OFFLOAD_H

#include <stddef.h>
#include <stdint.h>

#define WG_VNET_HDR_LEN 10 /* sizeof(struct virtio_net_hdr) */
#define WG_MAX_IP_PACKET 65535
#define WG_MAX_FRAME (WG_VNET_HDR_LEN + WG_MAX_IP_PACKET)

/* struct virtio_net_hdr: flags, gso_type. */
#define WG_VNET_F_NEEDS_CSUM 1
#define WG_VNET_GSO_NONE 0
#define WG_VNET_GSO_TCPV4 1
#define WG_VNET_GSO_TCPV6 4
#define WG_VNET_GSO_UDP_L4 5
#define WG_VNET_GSO_ECN 0x80

/* wg_tun_coalesce: what may be merged. */
#define WG_MERGE_TCP 1
#define WG_MERGE_UDP 2 /* only where the kernel takes UDP super-packets (TUN_F_USO4/6 accepted) */

/* Hostile frames. Whoever has CAP_NET_RAW in the TUN's namespace (a Pod, for its net1) can write
 * a frame with any virtio_net_hdr through an AF_PACKET socket with PACKET_VNET_HDR, and the kernel
 * hands it to us nearly as written: Linux 6.18 checks the type, csum_start/offset and UDP's segment
 * count, but not a TCP frame's gso_size (gso_size=1 on a 64 KiB frame reaches us as one frame of
 * 65,000 segments), older kernels check less. Each segment costs us what a packet costs (a
 * checksum, a seal, a send), so a frame may yield no more segments than legitimate traffic does:
 *
 * - TCP: gso_size >= WG_GSO_MIN_TCP_SEGMENT. A Linux sender's TSO cuts at its MSS less the TCP
 *   options, and its MSS is at least 512 unless the receiver advertises less or the application
 *   sets less (TCP_MAXSEG): the smallest path MTU Linux uses is 552 (net.ipv4.route.min_pmtu;
 *   pywg's MTU is at least 576), less 20 bytes each of IPv4 and TCP header; up to 40 bytes of
 *   options leave 472. IPv6 gets the same floor: its own (1280 - 40 - 20 - 40 = 1180) would lower
 *   the bound below by nothing (IPv4 sets it) and would refuse senders whose MSS a middlebox
 *   clamps to an IPv4 value. A sender below the floor (an MSS under RFC 9293's default of 536 is
 *   rare) loses its super-packets, dropped and counted, and crawls on retransmitted single
 *   segments (TCP_MAXSEG=200: 20 KB in a minute): it needs TSO off on its interface.
 * - UDP: gso_size >= WG_GSO_MIN_UDP_SEGMENT, only refusing segments smaller than the UDP header:
 *   UDP_SEGMENT lets any socket send datagrams of any size in one call, and WireGuard and QUIC
 *   clients batch small ones (an encrypted TCP ACK is about 100 bytes). The count bounds UDP:
 * - at most WG_GSO_MAX_SEGMENTS segments per frame (139: a 64 KiB TCP frame cut at the TCP floor).
 *   More than the kernel lets a UDP socket send in one call (UDP_MAX_SEGMENTS: 128 on Linux 6.18,
 *   64 on older kernels) and than wireguard-go splits from its TUN (128), so no legitimate frame
 *   has more; a TCP frame above the floor cannot have more.
 * A refused frame costs a read and a look at its headers. Besides, every field is checked against
 * the packet it describes (the type against the IP version and protocol, csum_start against the
 * IP header, csum_offset against the protocol, the ECN flag against TCP, the IP and UDP lengths
 * against the frame, no IPv4 fragment, no IPv6 extension header), so a frame cannot make us
 * segment what it is not. hdr_len is not used: a TUN sets it to the skb's linear part, anything
 * from the headers' length to the frame's (wireguard-go does not trust it either). */
#define WG_GSO_MIN_TCP_SEGMENT 472
#define WG_GSO_MIN_UDP_SEGMENT 8
#define WG_GSO_MAX_SEGMENTS ((WG_MAX_IP_PACKET - 40 + WG_GSO_MIN_TCP_SEGMENT - 1) / WG_GSO_MIN_TCP_SEGMENT)

/* wg_tun_split: the frame is dropped (and counted by wg_tun_read under its reason): it is not one
 * we can split, its segments are below the floor, or there are too many of them. */
#define WG_SPLIT_MALFORMED (-1)
#define WG_SPLIT_SEGMENT_TOO_SMALL (-2)
#define WG_SPLIT_TOO_MANY_SEGMENTS (-3)
#define WG_SPLIT_DROP_REASONS 3 /* wg_tun_reader.dropped[-1 - WG_SPLIT_...] */

/* Reads frames from a TUN fd and keeps the one whose segments did not all fit
 * in the caller's output, to finish it on the next call. All zero is a fresh
 * reader. */
typedef struct {
    uint8_t frame[WG_MAX_FRAME];
    uint32_t length;     /* bytes of `frame` in use; 0: no frame pending */
    uint32_t emitted;    /* segments of the pending frame already handed out */
    uint64_t dropped[WG_SPLIT_DROP_REASONS]; /* frames dropped by wg_tun_split, ever, by reason */
    uint64_t superframes; /* GSO frames split, ever */
} wg_tun_reader;

/* Per-packet bookkeeping of wg_tun_coalesce; one per input packet. */
typedef struct {
    uint32_t head;    /* the packet whose headers the merged one keeps */
    uint32_t next;    /* the next member after this one, or UINT32_MAX */
    uint32_t tail;    /* (head only) the last member */
    uint32_t payload; /* (head only) payload bytes of all members */
    uint32_t count;   /* (head only) members */
    uint16_t segment; /* (head only) payload bytes of the first member: the gso_size */
    uint8_t closed;   /* (head only) a PSH or shorter segment ended it */
    uint8_t header;   /* IP + TCP header bytes (candidates), 0: not a candidate */
} wg_gro_slot;

/* Split the frame (virtio_net_hdr + IP packet, `length` bytes) into IP
 * packets, from segment `first` on, written one after another into out from
 * *position on; packet k's offset and length go to out_off[k], out_len[k], at
 * most `slots` of them. A frame without GSO is one packet (its checksum
 * completed if it asks for it). Returns how many were written, setting *done
 * when the frame's last one was, or a WG_SPLIT_ drop reason (< 0). */
long wg_tun_split(const uint8_t *frame, uint32_t length, uint32_t first, uint8_t *out, size_t out_size,
                  size_t *position, uint32_t *out_off, uint32_t *out_len, size_t slots, int *done);

/* Read frames from the non-blocking TUN `fd` until it is empty (EAGAIN),
 * `out`/`slots` are full or `slots` frames were read (dropped ones count: a
 * writer that keeps the TUN busy with frames we drop cannot keep us here),
 * splitting each into out as wg_tun_split does (a frame that did not fit is
 * finished by the next call: reader->length != 0). Returns the number of
 * packets; *error is 0, or the errno of a failed read (EAGAIN and EINTR are not
 * failures). out_size must be at least WG_MAX_IP_PACKET. */
long wg_tun_read(wg_tun_reader *reader, int fd, uint8_t *out, size_t out_size, uint32_t *out_off,
                 uint32_t *out_len, size_t slots, int *error);

/* Turn IP packets i = 0..n-1 (in[in_off[i] .. + in_len[i]]) into frames for a
 * vnet_hdr TUN written one after another into out: consecutive TCP segments
 * (WG_MERGE_TCP in `merge`) or UDP datagrams (WG_MERGE_UDP) of one flow become
 * one GSO frame, everything else gets a zero header. frame_of[i] is the frame that packet i went into; frames keep the
 * order of their first packet. out_size must be at least the input's bytes
 * plus WG_VNET_HDR_LEN per packet (else nothing is done and -1 returned).
 * Returns the number of frames. */
long wg_tun_coalesce(const uint8_t *in, const uint32_t *in_off, const uint32_t *in_len, size_t n, int merge,
                     wg_gro_slot *slots, uint8_t *out, size_t out_size, uint32_t *out_off, uint32_t *out_len,
                     uint32_t *frame_of);

/* Read IP packets from the non-blocking TUN `fd` opened without IFF_VNET_HDR, one read each, one
 * after another into `out`, until it is empty (EAGAIN), `slots` packets were read or less than
 * WG_MAX_IP_PACKET bytes of `out` are left. Returns the number of packets; *error as wg_tun_read. */
long wg_tun_read_plain(int fd, uint8_t *out, size_t out_size, uint32_t *out_off, uint32_t *out_len,
                       size_t slots, int *error);

/* Write frames i = 0..n-1 to the TUN `fd`, one write each. A frame refused
 * with EIO (the interface is down), EAGAIN or ENOBUFS is lost, as on a wire,
 * and counted in *lost. Returns how many frames were handled; if fewer than n,
 * frame [return value] failed with *error. */
long wg_tun_write(int fd, const uint8_t *buf, const uint32_t *off, const uint32_t *len, size_t n, int *error,
                  uint32_t *lost);

#endif
