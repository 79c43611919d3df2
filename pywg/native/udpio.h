/* Batched UDP I/O for pywg: many datagrams per system call (recvmmsg, sendmmsg).
 *
 * pywg/runtime/udp.py uses these where UDP GRO and GSO cannot batch: the
 * handshake and priority sockets and a data socket without GRO receive with
 * wg_udp_recv; datagrams to several endpoints, or with GSO off, leave with
 * wg_udp_send. Where GRO and GSO work they stay the first choice (one system
 * call carries up to 64 datagrams of one flow either way, and the kernel does
 * less work per datagram).
 *
 * Nothing here allocates: the caller hands in the wg_udp_batch (the message
 * headers, once per socket), the receive pool and every array. cffi
 * (pywg/native/build.py, API mode) releases the GIL around every call.
 */
#ifndef PYWG_UDPIO_H
#define PYWG_UDPIO_H

#include <stddef.h>
#include <stdint.h>

/* Datagrams per call at most. */
#define WG_UDP_BATCH 64

/* What wg_udp_recv found about one datagram. Addresses are in network byte
 * order: 4 bytes for IPv4 (the rest zero), 16 for IPv6. */
typedef struct {
    uint32_t offset;       /* where it starts in the pool */
    uint32_t length;       /* bytes received */
    uint32_t scope;        /* the source's IPv6 scope id (link-local), else 0 */
    uint16_t port;         /* the source's port, host byte order */
    uint16_t segment;      /* UDP GRO segment size; 0: not coalesced */
    uint8_t family;        /* the source's: 4 or 6 */
    uint8_t truncated;     /* longer than its slot (MSG_TRUNC): to be dropped */
    uint8_t local_family;  /* 4 or 6: `local` is the address it arrived on; 0: unknown */
    uint8_t reserved;
    uint8_t source[16];
    uint8_t local[16];
} wg_udp_rx;

/* Where wg_udp_send sends one datagram, 40 bytes with no padding (udp.py packs
 * them with struct "=16sIHBB16s"). */
typedef struct {
    uint8_t address[16];
    uint32_t scope;           /* IPv6 scope id, host byte order */
    uint16_t port;            /* network byte order */
    uint8_t family;           /* 4 or 6 */
    uint8_t source_family;    /* 4 or 6: send from `source` (IP_PKTINFO / IPV6_PKTINFO); 0: the kernel picks */
    uint8_t source[16];
} wg_udp_target;

/* The message headers, addresses and control buffers of one call; opaque,
 * allocated once by the caller. */
typedef struct wg_udp_batch wg_udp_batch;
size_t wg_udp_batch_size(void);

/* Receive up to `n` (<= WG_UDP_BATCH) datagrams from the non-blocking socket
 * `fd` in one recvmmsg, datagram k into pool[k * slot .. + slot]. rx[k] says
 * what came; `pool` holds n * slot bytes. Returns how many came (0: none
 * waiting), or -1 with *error set (an ICMP error reported on the socket, EINTR,
 * ...); EAGAIN returns 0. */
long wg_udp_recv(wg_udp_batch *batch, int fd, uint8_t *pool, uint32_t slot, size_t n, wg_udp_rx *rx,
                 int *error);

/* Send datagrams k = 0..n-1 (buf[off[k] .. + len[k]]) to to[k] from `fd` with
 * sendmmsg, n <= WG_UDP_BATCH. Returns how many were sent; if fewer than n,
 * datagram [return value] failed with *error (the caller decides what to do
 * with it and calls again for the rest). */
long wg_udp_send(wg_udp_batch *batch, int fd, const uint8_t *buf, const uint32_t *off, const uint32_t *len,
                 const wg_udp_target *to, size_t n, int *error);

#endif
