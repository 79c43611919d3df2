/* Runs of a batch for pywg/core/batch.py: the per-packet questions the device asks
 * of a batch, answered in C so that Python works once per run, not per packet.
 *
 * - TUN side: runs of consecutive IP packets with one destination address.
 * - UDP side: received GRO batches cut into their datagrams, then runs of
 *   consecutive data messages to one receiver index from one sender.
 * - After opening a run (hotpath.h wg_open_batch): its summary, the runs of
 *   inner packets with one source address, and the packets to deliver.
 * - Sending: the chunks of a sealed run one UDP GSO send can carry.
 *
 * Nothing here allocates; cffi (pywg/native/build.py) releases the GIL
 * around every call.
 */
#ifndef PYWG_BATCH_H
#define PYWG_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "hotpath.h"
#include "udpio.h"

/* wg_rx_runs: a run that is not data messages. */
#define WG_RUN_NOT_DATA (-1)

/* Runs of consecutive packets i (buf[off[i] .. + len[i]], within `size`)
 * with one destination address (IPv4 bytes 16-19, IPv6 bytes 24-39); packets
 * with no IPv4/IPv6 header form runs of their own kind. run_end[k] is the end
 * of run k. Returns the number of runs. */
size_t wg_destination_runs(const uint8_t *buf, size_t size, const uint32_t *off, const uint32_t *len,
                           size_t n, uint32_t *run_end);

/* The datagrams of rx[0..n-1] (wg_udp_recv's report), GRO batches cut into
 * their segments and truncated ones left out: datagram k is pool[off[k] ..
 * + len[k]] from rx[origin[k]], at most `slots` of them. Returns how many. */
size_t wg_rx_datagrams(const wg_udp_rx *rx, size_t n, uint32_t *off, uint32_t *len, uint32_t *origin,
                       size_t slots);

/* Runs of datagrams k (buf[off[k] .. + len[k]]): consecutive data messages
 * (type 4, at least 32 bytes) to one receiver index, at most max_run long;
 * every other datagram is a run of one. run_end[r] ends run r, run_index[r] is its receiver index or
 * WG_RUN_NOT_DATA. Returns the number of runs. */
size_t wg_rx_runs(const uint8_t *buf, const uint32_t *off, const uint32_t *len, size_t n, size_t max_run,
                  uint32_t *run_end, int64_t *run_index);

/* What wg_open_batch found for a run, summed up. */
typedef struct {
    uint64_t accepted_bytes; /* wire length of the accepted messages */
    int64_t first_accepted;  /* position of the first accepted message, -1: none */
    int64_t last_accepted;   /* and of the last */
    uint32_t accepted;       /* statuses DATA, KEEPALIVE, MALFORMED_INNER */
    uint32_t data;           /* accepted messages that were not keepalives */
    uint32_t counts[6];      /* messages per WG_RX_* status */
} wg_rx_summary;

void wg_rx_summarize(const wg_rx_result *results, const uint32_t *len, size_t n, wg_rx_summary *summary);

/* Runs of consecutive results with status WG_RX_DATA and one inner source
 * address (read from buf): [run_start[r], run_end[r]). Returns how many. */
size_t wg_rx_source_runs(const uint8_t *buf, const wg_rx_result *results, size_t n, uint32_t *run_start,
                         uint32_t *run_end);

/* The inner packets of results[0..n-1] with status WG_RX_DATA: their offsets
 * and lengths into off/len. Returns how many. */
size_t wg_rx_inner(const wg_rx_result *results, size_t n, uint32_t *off, uint32_t *len);

/* Chunks of messages k (len[k]) that one UDP_SEGMENT send may carry:
 * consecutive ones of one size (the last may be shorter), at most
 * max_segments and max_bytes each. chunk_end[c] ends chunk c. Returns how many. */
size_t wg_gso_chunks(const uint32_t *len, size_t n, size_t max_segments, size_t max_bytes,
                     uint32_t *chunk_end);

#endif
