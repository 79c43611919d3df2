"""cffi builder of `pywg._hotpath`, the C hot path (API mode, linked against OpenSSL's libcrypto).

setup.py names it in `cffi_modules`, so `pip install -e .` compiles it (it needs gcc, the Python
headers and libssl-dev). `python pywg/_hotpath_build.py` compiles it in place by hand. The C lives
beside this file: hotpath.c/hotpath.h (sealing, opening), offload.c/offload.h (TUN offloads),
udpio.c/udpio.h (recvmmsg, sendmmsg) and batch.c/batch.h (runs of a batch); pywg/hotpath.py,
pywg/runtime/tun_offload.py and pywg/runtime/udp.py are the Python side.
"""

from __future__ import annotations

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).parent

CDEF = """
#define WG_HEADER_SIZE ...
#define WG_TAG_SIZE ...
#define WG_KEY_SIZE ...
#define WG_REPLAY_WORDS ...
#define WG_MAX_PLAINTEXT ...
#define WG_REJECT_AFTER_MESSAGES ...

#define WG_ERR_BUSY ...
#define WG_ERR_CLOSED ...
#define WG_ERR_CRYPTO ...
#define WG_ERR_ARGS ...

#define WG_SEAL_DONE ...
#define WG_SEAL_COUNTER_EXHAUSTED ...
#define WG_SEAL_NO_SPACE ...
#define WG_SEAL_BAD_INPUT ...

#define WG_RX_DATA ...
#define WG_RX_KEEPALIVE ...
#define WG_RX_MALFORMED_INNER ...
#define WG_RX_REPLAY ...
#define WG_RX_AUTH_FAILED ...
#define WG_RX_MALFORMED ...

typedef struct {
    uint64_t counter;
    uint64_t words[128];
} wg_replay;

typedef struct wg_aead wg_aead;

typedef struct {
    uint64_t counter;
    uint32_t inner_offset;
    uint32_t inner_length;
    uint32_t source_offset;
    uint8_t source_length;
    uint8_t status;
} wg_rx_result;

wg_aead *wg_aead_new(const uint8_t *key, int encrypt);
void wg_aead_zero(wg_aead *aead);
void wg_aead_free(wg_aead *aead);

long wg_seal_batch(wg_aead *aead, uint32_t receiver, uint64_t counter, uint32_t mtu, const uint8_t *in,
                   size_t in_size, const uint32_t *in_off, const uint32_t *in_len, size_t n, uint8_t *out,
                   size_t out_size, uint32_t *out_off, uint32_t *out_len, int *stop);
long wg_open_batch(wg_aead *aead, wg_replay *replay, uint8_t *buf, size_t size, const uint32_t *off,
                   const uint32_t *len, size_t n, wg_rx_result *results);

int wg_replay_validate(wg_replay *replay, uint64_t counter);
void wg_replay_reset(wg_replay *replay);

const char *wg_crypto_version(void);

#define WG_MAX_THREADS ...
int wg_set_threads(int n);
int wg_threads(void);
uint64_t wg_parallel_batches(void);

#define WG_VNET_HDR_LEN ...
#define WG_MAX_IP_PACKET ...
#define WG_MAX_FRAME ...
#define WG_SPLIT_MALFORMED ...
#define WG_MERGE_TCP ...
#define WG_MERGE_UDP ...
#define WG_VNET_GSO_TCPV4 ...
#define WG_VNET_GSO_TCPV6 ...
#define WG_VNET_GSO_UDP_L4 ...

typedef struct {
    uint32_t length;
    uint32_t emitted;
    uint64_t malformed;
    uint64_t superframes;
    ...;
} wg_tun_reader;

typedef struct {
    uint32_t head;
    uint32_t next;
    ...;
} wg_gro_slot;

long wg_tun_split(const uint8_t *frame, uint32_t length, uint32_t first, uint8_t *out, size_t out_size,
                  size_t *position, uint32_t *out_off, uint32_t *out_len, size_t slots, int *done);
long wg_tun_read(wg_tun_reader *reader, int fd, uint8_t *out, size_t out_size, uint32_t *out_off,
                 uint32_t *out_len, size_t slots, int *error);
long wg_tun_coalesce(const uint8_t *in, const uint32_t *in_off, const uint32_t *in_len, size_t n, int merge,
                     wg_gro_slot *slots, uint8_t *out, size_t out_size, uint32_t *out_off, uint32_t *out_len,
                     uint32_t *frame_of);
long wg_tun_write(int fd, const uint8_t *buf, const uint32_t *off, const uint32_t *len, size_t n, int *error,
                  uint32_t *lost);

#define WG_UDP_BATCH ...

typedef struct {
    uint32_t offset;
    uint32_t length;
    uint32_t scope;
    uint16_t port;
    uint16_t segment;
    uint8_t family;
    uint8_t truncated;
    uint8_t local_family;
    uint8_t reserved;
    uint8_t source[16];
    uint8_t local[16];
} wg_udp_rx;

typedef struct {
    uint8_t address[16];
    uint32_t scope;
    uint16_t port;
    uint8_t family;
    uint8_t source_family;
    uint8_t source[16];
} wg_udp_target;

typedef struct wg_udp_batch wg_udp_batch;
size_t wg_udp_batch_size(void);
long wg_udp_recv(wg_udp_batch *batch, int fd, uint8_t *pool, uint32_t slot, size_t n, wg_udp_rx *rx,
                 int *error);
long wg_udp_send(wg_udp_batch *batch, int fd, const uint8_t *buf, const uint32_t *off, const uint32_t *len,
                 const wg_udp_target *to, size_t n, int *error);

#define WG_RUN_NOT_DATA ...

typedef struct {
    uint64_t accepted_bytes;
    int64_t first_accepted;
    int64_t last_accepted;
    uint32_t accepted;
    uint32_t data;
    uint32_t counts[6];
} wg_rx_summary;

size_t wg_destination_runs(const uint8_t *buf, size_t size, const uint32_t *off, const uint32_t *len,
                           size_t n, uint32_t *run_end);
size_t wg_rx_datagrams(const wg_udp_rx *rx, size_t n, uint32_t *off, uint32_t *len, uint32_t *origin,
                       size_t slots);
size_t wg_rx_runs(const uint8_t *buf, const uint32_t *off, const uint32_t *len, size_t n, size_t max_run,
                  uint32_t *run_end, int64_t *run_index);
void wg_rx_summarize(const wg_rx_result *results, const uint32_t *len, size_t n, wg_rx_summary *summary);
size_t wg_rx_source_runs(const uint8_t *buf, const wg_rx_result *results, size_t n, uint32_t *run_start,
                         uint32_t *run_end);
size_t wg_rx_inner(const wg_rx_result *results, size_t n, uint32_t *off, uint32_t *len);
size_t wg_gso_chunks(const uint32_t *len, size_t n, size_t max_segments, size_t max_bytes,
                     uint32_t *chunk_end);
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "pywg._hotpath",
    '#include "hotpath.h"\n#include "offload.h"\n#include "udpio.h"\n#include "batch.h"',
    sources=[str(HERE / name) for name in ("hotpath.c", "offload.c", "udpio.c", "batch.c")],
    include_dirs=[str(HERE)],
    depends=[str(HERE / name) for name in ("hotpath.h", "offload.h", "udpio.h", "batch.h")],
    libraries=["crypto"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-pthread"],
    extra_link_args=["-pthread"],  # hotpath.c's crypto threads
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(HERE.parent), verbose=True)
