/* What the lane (lane.c) uses of udpio.c beyond udpio.h. C only: not for cffi. */
#ifndef PYWG_UDPIO_PRIVATE_H
#define PYWG_UDPIO_PRIVATE_H

#include "udpio.h"

/* wg_udp_recv with more recvmmsg flags (MSG_PEEK: look without taking). */
long wg_udp_recv_flags(wg_udp_batch *batch, int fd, uint8_t *pool, uint32_t slot, size_t n, wg_udp_rx *rx,
                       int *error, int flags);

/* Send buf[0 .. length] to `to` from `fd` as datagrams of `segment` bytes (the
 * last may be shorter) in one sendmsg with UDP_SEGMENT. 0, or the errno. */
int wg_udp_send_gso(wg_udp_batch *batch, int fd, const uint8_t *buf, size_t length, uint16_t segment,
                    const wg_udp_target *to);

#endif
