/* The per-packet hot path of pywg: WireGuard transport messages in batches.
 *
 * Sealing and opening use OpenSSL's ChaCha20-Poly1305 (libcrypto) through one
 * EVP_CIPHER_CTX per key, direction and crypto thread, created once and
 * reused. Nothing is allocated per packet. The replay window is the kernel's
 * counter_validate (receive.c), the same algorithm as pywg/core/replay.py, which
 * stays the reference.
 *
 * Nothing here touches Python: pywg/native/build.py wraps it with cffi
 * (API mode, which releases the GIL around every call) and pywg/native/hotpath.py
 * gives it Python types.
 */
#ifndef PYWG_HOTPATH_H
#define PYWG_HOTPATH_H

#include <stddef.h>
#include <stdint.h>

/* Protocol constants (kernel messages.h; pywg/core/constants.py). */
#define WG_MESSAGE_DATA 4
#define WG_HEADER_SIZE 16
#define WG_TAG_SIZE 16
#define WG_KEY_SIZE 32
#define WG_PADDING_MULTIPLE 16
#define WG_COUNTER_BITS_TOTAL 8192
#define WG_COUNTER_REDUNDANT_BITS 64
#define WG_COUNTER_WINDOW_SIZE (WG_COUNTER_BITS_TOTAL - WG_COUNTER_REDUNDANT_BITS)
#define WG_REPLAY_WORDS (WG_COUNTER_BITS_TOTAL / WG_COUNTER_REDUNDANT_BITS)
/* U64_MAX - COUNTER_WINDOW_SIZE - 1 */
#define WG_REJECT_AFTER_MESSAGES (UINT64_MAX - WG_COUNTER_WINDOW_SIZE - 1)
/* Longest plaintext accepted in one packet; longer input is a caller error. */
#define WG_MAX_PLAINTEXT (1u << 24)

/* Errors: negative return values of the batch calls. */
#define WG_ERR_BUSY (-1)   /* another thread is inside a call on the same handle */
#define WG_ERR_CLOSED (-2) /* the handle was zeroed */
#define WG_ERR_CRYPTO (-3) /* libcrypto failed (not an authentication failure) */
#define WG_ERR_ARGS (-4)   /* bad arguments (MTU 0, a handle of the wrong direction) */

/* Why wg_seal_batch stopped. */
#define WG_SEAL_DONE 0
#define WG_SEAL_COUNTER_EXHAUSTED 1 /* the next counter would be REJECT_AFTER_MESSAGES */
#define WG_SEAL_NO_SPACE 2          /* the next message does not fit in the output */
#define WG_SEAL_BAD_INPUT 3         /* a packet lies outside the input or is too long */

/* What wg_open_batch found, per message. The first three authenticated and
 * passed the replay window, so they count as authenticated traffic. */
#define WG_RX_DATA 0            /* an inner IP packet: see inner_length and source_* */
#define WG_RX_KEEPALIVE 1       /* an empty plaintext */
#define WG_RX_MALFORMED_INNER 2 /* a plaintext that is no IPv4/IPv6 packet */
#define WG_RX_REPLAY 3          /* authenticated, but the counter is old or repeated */
#define WG_RX_AUTH_FAILED 4     /* the tag did not verify; the plaintext area is zeroed */
#define WG_RX_MALFORMED 5       /* shorter than a keepalive, not type 4, or outside the buffer */

/* A replay window (RFC 6479 ring of 128 words). All zero is a fresh window;
 * `counter` holds the greatest accepted counter plus one (0: nothing yet). */
typedef struct {
    uint64_t counter;
    uint64_t words[WG_REPLAY_WORDS];
} wg_replay;

/* One key in one direction; opaque. */
typedef struct wg_aead wg_aead;

typedef struct {
    uint64_t counter;       /* from the header */
    uint32_t inner_offset;  /* where the plaintext starts in the buffer (message offset + 16) */
    uint32_t inner_length;  /* the IP packet's own length, padding trimmed (WG_RX_DATA only) */
    uint32_t source_offset; /* the inner source address in the buffer (WG_RX_DATA only) */
    uint8_t source_length;  /* 4 or 16 (WG_RX_DATA), else 0 */
    uint8_t status;         /* WG_RX_* */
} wg_rx_result;

/* A handle for sealing (encrypt != 0) or opening with a 32-byte key; NULL when
 * libcrypto fails. */
wg_aead *wg_aead_new(const uint8_t *key, int encrypt);

/* Forget the key: free the cipher contexts (OpenSSL wipes them). Later calls
 * return WG_ERR_CLOSED. Safe while another thread is inside a call: that call
 * (its workers' share included) finishes and the contexts are freed when it
 * returns. Idempotent. */
void wg_aead_zero(wg_aead *aead);

/* Zero the handle and release it. Only when nobody else can still use it. */
void wg_aead_free(wg_aead *aead);

/* Seal packets i = 0..n-1 (in[in_off[i] .. + in_len[i]]) with counters
 * counter, counter+1, ... into complete transport messages written one after
 * another into out; message i is out[out_off[i] .. + out_len[i]]. The
 * plaintext is zero-padded as pywg/core/transport.py pad does. Returns how many were
 * written and sets *stop to a WG_SEAL_* reason, or a negative WG_ERR_*. */
long wg_seal_batch(wg_aead *aead, uint32_t receiver, uint64_t counter, uint32_t mtu, const uint8_t *in,
                   size_t in_size, const uint32_t *in_off, const uint32_t *in_len, size_t n, uint8_t *out,
                   size_t out_size, uint32_t *out_off, uint32_t *out_len, int *stop);

/* Open transport messages i = 0..n-1 (buf[off[i] .. + len[i]]) in place: the
 * plaintext replaces the ciphertext at offset + 16. In order, each message
 * that authenticates goes through the replay window, and each one the window
 * accepts has its inner packet checked like pywg/core/transport.py inner_packet.
 * Fills results[i]; returns how many were accepted by the window (statuses
 * WG_RX_DATA, WG_RX_KEEPALIVE, WG_RX_MALFORMED_INNER), or a negative WG_ERR_*. */
long wg_open_batch(wg_aead *aead, wg_replay *replay, uint8_t *buf, size_t size, const uint32_t *off,
                   const uint32_t *len, size_t n, wg_rx_result *results);

/* The replay check alone: 1 if `counter` is new and inside the window (and now
 * recorded), else 0. Call only for authenticated messages. */
int wg_replay_validate(wg_replay *replay, uint64_t counter);

/* Start over with a fresh window. */
void wg_replay_reset(wg_replay *replay);

/* The version of the libcrypto loaded at run time, e.g. "3.0.15". */
const char *wg_crypto_version(void);

/* Crypto threads. A seal or open call with a large batch (from ~25 packets
 * of 1420 bytes) shares the AEAD work with workers of a process-wide
 * pool: started on first use, kept off the caller's CPU, asleep between
 * batches. The calling thread and the workers take runs of consecutive
 * messages until none is left, and the call returns when all are done. Outputs are positional, so they are
 * byte for byte those of the sequential computation, and the replay window
 * still sees the messages in order. Small batches, calls that find the pool
 * in use by another thread, threads that may run on one CPU only, and calls
 * while the host has no CPU to spare (idle, or busy with the workers: a CPU
 * other work keeps busy gains nothing from a worker), run on the calling
 * thread alone. After fork() the child starts without workers. */
#define WG_MAX_THREADS 4 /* threads per call, the caller included */

/* Use up to n threads per call (clamped to 1..WG_MAX_THREADS; 1, the default,
 * is sequential). Returns the value now in effect. */
int wg_set_threads(int n);

/* The value in effect. */
int wg_threads(void);

/* How many batch calls so far had a worker do part of the work. */
uint64_t wg_parallel_batches(void);

/* 1 (the default): split only while the host has a CPU to spare; 0: whenever
 * a batch is worth it (for tests of the split itself). */
void wg_split_only_when_spare(int on);

#endif
