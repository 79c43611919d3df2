/* Runs of a batch for pywg/core/batch.py; see batch.h. */
#include "batch.h"

#include <string.h>

#define MESSAGE_DATA_MIN_SIZE (WG_HEADER_SIZE + WG_TAG_SIZE)

static inline uint32_t load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Where a packet's destination address is, and how long (0: no IP header). */
static uint32_t destination(const uint8_t *buf, size_t size, uint32_t offset, uint32_t length,
                            const uint8_t **address)
{
    if ((uint64_t)offset + length > size)
        return 0;
    const uint8_t *packet = buf + offset;
    if (length >= 20 && packet[0] >> 4 == 4) {
        *address = packet + 16;
        return 4;
    }
    if (length >= 40 && packet[0] >> 4 == 6) {
        *address = packet + 24;
        return 16;
    }
    return 0;
}

size_t wg_destination_runs(const uint8_t *buf, size_t size, const uint32_t *off, const uint32_t *len, size_t n,
                           uint32_t *run_end)
{
    size_t runs = 0, i = 0;
    while (i < n) {
        const uint8_t *first = NULL;
        uint32_t first_length = destination(buf, size, off[i], len[i], &first);
        size_t j = i + 1;
        for (; j < n; ++j) {
            const uint8_t *next = NULL;
            uint32_t next_length = destination(buf, size, off[j], len[j], &next);
            if (next_length != first_length || (first_length && memcmp(first, next, first_length)))
                break;
        }
        run_end[runs++] = (uint32_t)j;
        i = j;
    }
    return runs;
}

size_t wg_rx_datagrams(const wg_udp_rx *rx, size_t n, uint32_t *off, uint32_t *len, uint32_t *origin,
                       size_t slots)
{
    size_t count = 0;
    for (size_t e = 0; e < n && count < slots; ++e) {
        if (rx[e].truncated)
            continue;
        uint32_t start = rx[e].offset, end = start + rx[e].length;
        uint32_t step = rx[e].segment && rx[e].length > rx[e].segment ? rx[e].segment : rx[e].length;
        do {
            uint32_t length = end - start < step ? end - start : step;
            off[count] = start;
            len[count] = length;
            origin[count++] = (uint32_t)e;
            start += length;
        } while (start < end && count < slots);
    }
    return count;
}

static int64_t receiver(const uint8_t *buf, uint32_t offset, uint32_t length)
{
    const uint8_t *message = buf + offset;
    if (length < MESSAGE_DATA_MIN_SIZE || load_le32(message) != WG_MESSAGE_DATA)
        return WG_RUN_NOT_DATA;
    return (int64_t)load_le32(message + 4);
}

size_t wg_rx_runs(const uint8_t *buf, const uint32_t *off, const uint32_t *len, size_t n, size_t max_run,
                  uint32_t *run_end, int64_t *run_index)
{
    size_t runs = 0, i = 0;
    while (i < n) {
        int64_t index = receiver(buf, off[i], len[i]);
        size_t j = i + 1;
        if (index != WG_RUN_NOT_DATA) {
            size_t limit = n - i > max_run ? i + max_run : n;
            while (j < limit && receiver(buf, off[j], len[j]) == index)
                ++j;
        }
        run_end[runs] = (uint32_t)j;
        run_index[runs++] = index;
        i = j;
    }
    return runs;
}

void wg_rx_summarize(const wg_rx_result *results, const uint32_t *len, size_t n, wg_rx_summary *summary)
{
    memset(summary, 0, sizeof(*summary));
    summary->first_accepted = summary->last_accepted = -1;
    for (size_t i = 0; i < n; ++i) {
        uint8_t status = results[i].status;
        if (status < 6)
            ++summary->counts[status];
        if (status > WG_RX_MALFORMED_INNER)
            continue;
        if (summary->first_accepted < 0)
            summary->first_accepted = (int64_t)i;
        summary->last_accepted = (int64_t)i;
        ++summary->accepted;
        summary->accepted_bytes += len[i];
        if (status != WG_RX_KEEPALIVE)
            ++summary->data;
    }
}

size_t wg_rx_source_runs(const uint8_t *buf, const wg_rx_result *results, size_t n, uint32_t *run_start,
                         uint32_t *run_end)
{
    size_t runs = 0, i = 0;
    while (i < n) {
        if (results[i].status != WG_RX_DATA) {
            ++i;
            continue;
        }
        const wg_rx_result *first = &results[i];
        size_t j = i + 1;
        while (j < n && results[j].status == WG_RX_DATA && results[j].source_length == first->source_length &&
               !memcmp(buf + results[j].source_offset, buf + first->source_offset, first->source_length))
            ++j;
        run_start[runs] = (uint32_t)i;
        run_end[runs++] = (uint32_t)j;
        i = j;
    }
    return runs;
}

size_t wg_rx_inner(const wg_rx_result *results, size_t n, uint32_t *off, uint32_t *len)
{
    size_t count = 0;
    for (size_t i = 0; i < n; ++i) {
        if (results[i].status != WG_RX_DATA)
            continue;
        off[count] = results[i].inner_offset;
        len[count++] = results[i].inner_length;
    }
    return count;
}

size_t wg_gso_chunks(const uint32_t *len, size_t n, size_t max_segments, size_t max_bytes, uint32_t *chunk_end)
{
    size_t chunks = 0, i = 0;
    while (i < n) {
        uint32_t size = len[i];
        uint64_t total = size;
        size_t j = i + 1;
        while (j < n && j - i < max_segments && len[j] <= size && total + len[j] <= max_bytes) {
            total += len[j];
            if (len[j++] < size)
                break; /* a shorter segment can only be the last */
        }
        chunk_end[chunks++] = (uint32_t)j;
        i = j;
    }
    return chunks;
}
