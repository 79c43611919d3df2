/* What the lane (lane.c) uses of udpio.c beyond udpio.h. C only: not for cffi. */
#ifndef PYWG_UDPIO_PRIVATE_H
#define PYWG_UDPIO_PRIVATE_H

#include "udpio.h"

/* wg_udp_recv with more recvmmsg flags (MSG_PEEK: look without taking). */
long wg_udp_recv_flags(wg_udp_batch *batch, int fd, uint8_t *pool, uint32_t slot, size_t n, wg_udp_rx *rx,
                       int *error, int flags);

#endif
