/* The per-packet hot path of pywg; see hotpath.h for the contract. Large
 * batches share their AEAD work with the crypto threads of threads.c. */
#include "hotpath.h"
#include "threads.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define NONCE_SIZE 12
#define WORD_SHIFT 6 /* log2(COUNTER_REDUNDANT_BITS) */
#define BIT_MASK (WG_COUNTER_REDUNDANT_BITS - 1)
#define RING_MASK (WG_REPLAY_WORDS - 1)

/* Bits of wg_aead.state. */
#define STATE_BUSY 1u
#define STATE_CLOSED 2u

/* Statuses of wg_open_batch's results while it works, never returned. */
#define STATUS_SEALED 0x80        /* well-formed, not decrypted yet */
#define STATUS_AUTHENTIC 0x81     /* decrypted, the tag verified */
#define STATUS_CRYPTO_FAILED 0x82 /* libcrypto failed on it */

struct wg_aead {
    /* ctx[0] is keyed at creation. A context serves one thread at a time, so
     * each crypto thread of a split batch has its own: ctx[c] for c > 0 is a
     * copy of ctx[0], made the first time a batch needs it. */
    EVP_CIPHER_CTX *ctx[WG_MAX_THREADS];
    int encrypt;
    atomic_uint state;
};

static const uint8_t zeros[WG_PADDING_MULTIPLE];

static inline void store_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline void store_le64(uint8_t *p, uint64_t v)
{
    store_le32(p, (uint32_t)v);
    store_le32(p + 4, (uint32_t)(v >> 32));
}

static inline uint32_t load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t load_le64(const uint8_t *p)
{
    return (uint64_t)load_le32(p) | (uint64_t)load_le32(p + 4) << 32;
}

static inline uint32_t load_be16(const uint8_t *p)
{
    return (uint32_t)p[0] << 8 | (uint32_t)p[1];
}

/* Handles: EVP_CIPHER_CTXs keyed once. A call marks the handle busy so two
 * calls never share a context and zeroing never frees one mid-call (a call
 * returns only after its workers are done with the handle's contexts). */

wg_aead *wg_aead_new(const uint8_t *key, int encrypt)
{
    wg_aead *aead = calloc(1, sizeof(*aead));
    if (!aead)
        return NULL;
    aead->encrypt = encrypt ? 1 : 0;
    atomic_init(&aead->state, 0);
    aead->ctx[0] = EVP_CIPHER_CTX_new();
    if (!aead->ctx[0] ||
        EVP_CipherInit_ex(aead->ctx[0], EVP_chacha20_poly1305(), NULL, key, NULL, aead->encrypt) != 1) {
        EVP_CIPHER_CTX_free(aead->ctx[0]);
        free(aead);
        return NULL;
    }
    return aead;
}

static void destroy_contexts(wg_aead *aead)
{
    for (int c = 0; c < WG_MAX_THREADS; ++c) {
        EVP_CIPHER_CTX_free(aead->ctx[c]); /* cleanses the key schedule */
        aead->ctx[c] = NULL;
    }
}

static int acquire(wg_aead *aead)
{
    unsigned int expected = 0;
    if (atomic_compare_exchange_strong(&aead->state, &expected, STATE_BUSY))
        return 0;
    return (expected & STATE_CLOSED) ? WG_ERR_CLOSED : WG_ERR_BUSY;
}

static void release(wg_aead *aead)
{
    unsigned int old = atomic_fetch_and(&aead->state, ~STATE_BUSY);
    if (old & STATE_CLOSED)
        destroy_contexts(aead); /* zeroed while we were busy: we free them */
}

void wg_aead_zero(wg_aead *aead)
{
    unsigned int old = atomic_fetch_or(&aead->state, STATE_CLOSED);
    if (!(old & (STATE_CLOSED | STATE_BUSY)))
        destroy_contexts(aead);
}

void wg_aead_free(wg_aead *aead)
{
    if (!aead)
        return;
    wg_aead_zero(aead);
    free(aead);
}

static inline int set_nonce(EVP_CIPHER_CTX *ctx, uint64_t counter)
{
    uint8_t nonce[NONCE_SIZE] = {0};
    store_le64(nonce + 4, counter);
    return EVP_CipherInit_ex(ctx, NULL, NULL, NULL, nonce, -1);
}

static int overlaps(const void *a, size_t a_size, const void *b, size_t b_size)
{
    uintptr_t a_start = (uintptr_t)a, b_start = (uintptr_t)b;
    return a_size && b_size && a_start < b_start + b_size && b_start < a_start + a_size;
}

/* Sealing. */

/* Plaintext length after padding: kernel send.c calculate_skb_padding, pywg/core/transport.py pad. */
static inline uint32_t padded_length(uint32_t length, uint32_t mtu)
{
    if (!length)
        return 0;
    uint32_t last_unit = length > mtu ? length % mtu : length;
    uint32_t padded = (last_unit + WG_PADDING_MULTIPLE - 1) & ~(uint32_t)(WG_PADDING_MULTIPLE - 1);
    if (padded > mtu)
        padded = mtu;
    return padded > last_unit ? length + (padded - last_unit) : length;
}

static int seal_one(EVP_CIPHER_CTX *ctx, uint64_t counter, const uint8_t *plaintext, uint32_t length,
                    uint32_t padding, uint8_t *ciphertext)
{
    int written;
    if (set_nonce(ctx, counter) != 1)
        return -1;
    if (length && EVP_EncryptUpdate(ctx, ciphertext, &written, plaintext, (int)length) != 1)
        return -1;
    if (padding && EVP_EncryptUpdate(ctx, ciphertext + length, &written, zeros, (int)padding) != 1)
        return -1;
    if (EVP_EncryptFinal_ex(ctx, ciphertext + length + padding, &written) != 1)
        return -1;
    return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, WG_TAG_SIZE, ciphertext + length + padding) == 1
               ? 0
               : -1;
}

struct seal_job {
    uint32_t receiver, mtu;
    uint64_t counter; /* of message 0 */
    const uint8_t *in;
    size_t in_size;
    const uint32_t *in_off, *in_len;
    uint8_t *out;
    size_t out_size;
    uint32_t *out_off, *out_len;
};

/* Lays the messages out in order: where each goes, its header, and where the
 * batch stops (*stop). With a context it also seals each one right away (the
 * sequential pass); with NULL it leaves that to seal_messages. Returns how
 * many fit, or WG_ERR_CRYPTO. */
static long seal_layout(const struct seal_job *job, size_t n, EVP_CIPHER_CTX *ctx, int *stop)
{
    /* Offsets are u32; never write where they could not point. */
    uint64_t room = job->out_size < UINT32_MAX ? job->out_size : UINT32_MAX;
    uint64_t position = 0, counter = job->counter;
    size_t i;
    *stop = WG_SEAL_DONE;
    for (i = 0; i < n; ++i) {
        if (counter >= WG_REJECT_AFTER_MESSAGES) {
            *stop = WG_SEAL_COUNTER_EXHAUSTED;
            break;
        }
        uint32_t length = job->in_len[i];
        if (length > WG_MAX_PLAINTEXT || (uint64_t)job->in_off[i] + length > job->in_size) {
            *stop = WG_SEAL_BAD_INPUT;
            break;
        }
        uint32_t padded = padded_length(length, job->mtu);
        uint64_t size = (uint64_t)WG_HEADER_SIZE + padded + WG_TAG_SIZE;
        if (position + size > room) {
            *stop = WG_SEAL_NO_SPACE;
            break;
        }
        uint8_t *message = job->out + position;
        store_le32(message, WG_MESSAGE_DATA);
        store_le32(message + 4, job->receiver);
        store_le64(message + 8, counter);
        if (ctx && seal_one(ctx, counter, job->in + job->in_off[i], length, padded - length,
                            message + WG_HEADER_SIZE))
            return WG_ERR_CRYPTO;
        job->out_off[i] = (uint32_t)position;
        job->out_len[i] = (uint32_t)size;
        position += size;
        ++counter;
    }
    return (long)i;
}

/* The AEAD of laid-out messages [begin, end): a work_fn. */
static int seal_messages(const void *opaque, EVP_CIPHER_CTX *ctx, size_t begin, size_t end)
{
    const struct seal_job *job = opaque;
    for (size_t i = begin; i < end; ++i) {
        uint32_t length = job->in_len[i];
        uint32_t padding = job->out_len[i] - (WG_HEADER_SIZE + WG_TAG_SIZE) - length;
        if (seal_one(ctx, job->counter + i, job->in + job->in_off[i], length, padding,
                     job->out + job->out_off[i] + WG_HEADER_SIZE))
            return -1;
    }
    return 0;
}

static uint64_t seal_cost(const void *opaque, size_t i)
{
    return ((const struct seal_job *)opaque)->out_len[i] + MESSAGE_COST;
}

/* Laying out first and sealing later reads the input after the output is
 * written: equal to the one pass only if they are apart, which callers'
 * separate buffers and arrays always are. */
static int seal_apart(const struct seal_job *job, size_t n)
{
    size_t index_size = n * sizeof(uint32_t);
    return !overlaps(job->in, job->in_size, job->out, job->out_size) &&
           !overlaps(job->in_off, index_size, job->out_off, index_size) &&
           !overlaps(job->in_off, index_size, job->out_len, index_size) &&
           !overlaps(job->in_len, index_size, job->out_off, index_size) &&
           !overlaps(job->in_len, index_size, job->out_len, index_size);
}

long wg_seal_batch(wg_aead *aead, uint32_t receiver, uint64_t counter, uint32_t mtu, const uint8_t *in,
                   size_t in_size, const uint32_t *in_off, const uint32_t *in_len, size_t n, uint8_t *out,
                   size_t out_size, uint32_t *out_off, uint32_t *out_len, int *stop)
{
    if (!aead->encrypt || !mtu)
        return WG_ERR_ARGS;
    int error = acquire(aead);
    if (error)
        return error;
    struct seal_job job = {receiver, mtu, counter, in, in_size, in_off, in_len, out, out_size, out_off, out_len};
    long count;
    if (wg_may_split(n) && seal_apart(&job, n)) {
        count = seal_layout(&job, n, NULL, stop);
        if (wg_run_work(aead->ctx, seal_messages, &job, (size_t)count, seal_cost))
            count = WG_ERR_CRYPTO;
    } else {
        count = seal_layout(&job, n, aead->ctx[0], stop);
    }
    release(aead);
    return count;
}

/* Replay window: kernel receive.c counter_validate, pywg/core/replay.py. */

int wg_replay_validate(wg_replay *replay, uint64_t counter)
{
    /* Only counters below the limit are ever stored, so the kernel's check of
     * the stored counter against REJECT_AFTER_MESSAGES cannot fire here either. */
    if (counter >= WG_REJECT_AFTER_MESSAGES)
        return 0;
    ++counter; /* so that a stored 0 means "nothing received yet" */
    uint64_t current = replay->counter;
    if (counter > current) {
        uint64_t index_current = current >> WORD_SHIFT;
        uint64_t top = (counter >> WORD_SHIFT) - index_current;
        if (top > WG_REPLAY_WORDS)
            top = WG_REPLAY_WORDS;
        for (uint64_t i = 1; i <= top; ++i)
            replay->words[(index_current + i) & RING_MASK] = 0;
        replay->counter = counter;
    } else if (counter + WG_COUNTER_WINDOW_SIZE < current) {
        return 0;
    }
    uint64_t *word = &replay->words[(counter >> WORD_SHIFT) & RING_MASK];
    uint64_t bit = (uint64_t)1 << (counter & BIT_MASK);
    if (*word & bit)
        return 0;
    *word |= bit;
    return 1;
}

void wg_replay_reset(wg_replay *replay)
{
    memset(replay, 0, sizeof(*replay));
}

/* Opening. */

/* The inner packet check of pywg/core/transport.py inner_packet. */
static uint8_t inner_packet(const uint8_t *plaintext, uint32_t length, uint32_t offset, wg_rx_result *result)
{
    if (!length)
        return WG_RX_KEEPALIVE;
    unsigned int version = plaintext[0] >> 4;
    if (version == 4 && length >= 20) {
        uint32_t total = load_be16(plaintext + 2);
        if (total >= 20 && total <= length) {
            result->inner_length = total;
            result->source_offset = offset + 12;
            result->source_length = 4;
            return WG_RX_DATA;
        }
    } else if (version == 6 && length >= 40) {
        uint32_t total = 40 + load_be16(plaintext + 4);
        if (total <= length) {
            result->inner_length = total;
            result->source_offset = offset + 8;
            result->source_length = 16;
            return WG_RX_DATA;
        }
    }
    return WG_RX_MALFORMED_INNER;
}

/* 1 authentic, 0 not, -1 libcrypto failed. */
static int open_one(EVP_CIPHER_CTX *ctx, uint64_t counter, uint8_t *data, uint32_t length, uint8_t *tag)
{
    int written;
    if (set_nonce(ctx, counter) != 1)
        return -1;
    if (length && EVP_DecryptUpdate(ctx, data, &written, data, (int)length) != 1)
        return -1;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, WG_TAG_SIZE, tag) != 1)
        return -1;
    return EVP_DecryptFinal_ex(ctx, data + length, &written) == 1;
}

/* Starts a result: MALFORMED, or for a well-formed message its counter, its
 * plaintext offset and STATUS_SEALED. Returns 1 if the message lies in the
 * buffer (and its header was read), else 0. */
static int open_begin(const uint8_t *buf, size_t size, uint32_t offset, uint32_t length, wg_rx_result *result)
{
    memset(result, 0, sizeof(*result));
    result->status = WG_RX_MALFORMED;
    if (length < WG_HEADER_SIZE + WG_TAG_SIZE || length > WG_MAX_PLAINTEXT || (uint64_t)offset + length > size ||
        (uint64_t)offset + length > UINT32_MAX)
        return 0;
    const uint8_t *message = buf + offset;
    if (load_le32(message) == WG_MESSAGE_DATA) {
        result->counter = load_le64(message + 8);
        result->inner_offset = offset + WG_HEADER_SIZE;
        result->status = STATUS_SEALED;
    }
    return 1;
}

/* Decrypts a STATUS_SEALED message in place: STATUS_AUTHENTIC, WG_RX_AUTH_FAILED
 * or STATUS_CRYPTO_FAILED (returns -1); the plaintext of the last two is zeroed. */
static int open_message(EVP_CIPHER_CTX *ctx, uint8_t *buf, uint32_t length, wg_rx_result *result)
{
    uint8_t *plaintext = buf + result->inner_offset;
    uint32_t plaintext_length = length - WG_HEADER_SIZE - WG_TAG_SIZE;
    int authentic = open_one(ctx, result->counter, plaintext, plaintext_length, plaintext + plaintext_length);
    if (authentic != 1)
        memset(plaintext, 0, plaintext_length); /* never leave unauthenticated plaintext */
    result->status = authentic > 0 ? STATUS_AUTHENTIC : authentic == 0 ? WG_RX_AUTH_FAILED : STATUS_CRYPTO_FAILED;
    return authentic < 0 ? -1 : 0;
}

/* After decryption, in order: the replay window and the inner packet check.
 * Returns 1 if the window accepted the message, 0 if not, or WG_ERR_CRYPTO. */
static int open_settle(wg_replay *replay, const uint8_t *buf, uint32_t length, wg_rx_result *result)
{
    switch (result->status) {
    case STATUS_AUTHENTIC:
        if (!wg_replay_validate(replay, result->counter)) {
            result->status = WG_RX_REPLAY;
            return 0;
        }
        result->status = inner_packet(buf + result->inner_offset, length - WG_HEADER_SIZE - WG_TAG_SIZE,
                                      result->inner_offset, result);
        return 1;
    case STATUS_SEALED:
    case STATUS_CRYPTO_FAILED:
        result->status = WG_RX_MALFORMED; /* what the one-pass loop always left there */
        return WG_ERR_CRYPTO;
    default:
        return 0;
    }
}

/* The one pass: each message begun, decrypted and settled before the next. */
static long open_in_order(EVP_CIPHER_CTX *ctx, wg_replay *replay, uint8_t *buf, size_t size, const uint32_t *off,
                          const uint32_t *len, size_t n, wg_rx_result *results)
{
    long accepted = 0;
    for (size_t i = 0; i < n; ++i) {
        open_begin(buf, size, off[i], len[i], &results[i]);
        if (results[i].status == STATUS_SEALED)
            open_message(ctx, buf, len[i], &results[i]);
        int settled = open_settle(replay, buf, len[i], &results[i]);
        if (settled < 0)
            return settled;
        accepted += settled;
    }
    return accepted;
}

/* Begins every result; 1 if the messages that lie in the buffer come in
 * ascending order without overlapping. Only then can they be decrypted in any
 * order, in parallel, with the one pass's outcome: no decryption then touches
 * bytes another message reads. */
static int open_apart(const uint8_t *buf, size_t size, const uint32_t *off, const uint32_t *len, size_t n,
                      wg_rx_result *results)
{
    uint64_t end = 0;
    for (size_t i = 0; i < n; ++i) {
        if (!open_begin(buf, size, off[i], len[i], &results[i]))
            continue;
        if (off[i] < end)
            return 0;
        end = (uint64_t)off[i] + len[i];
    }
    return 1;
}

struct open_job {
    uint8_t *buf;
    const uint32_t *len;
    wg_rx_result *results;
};

/* The AEAD of the begun messages [begin, end): a work_fn. */
static int open_messages(const void *opaque, EVP_CIPHER_CTX *ctx, size_t begin, size_t end)
{
    const struct open_job *job = opaque;
    for (size_t i = begin; i < end; ++i)
        if (job->results[i].status == STATUS_SEALED && open_message(ctx, job->buf, job->len[i], &job->results[i]))
            return -1;
    return 0;
}

static uint64_t open_cost(const void *opaque, size_t i)
{
    const struct open_job *job = opaque;
    return job->results[i].status == STATUS_SEALED ? job->len[i] + MESSAGE_COST : 0;
}

long wg_open_batch(wg_aead *aead, wg_replay *replay, uint8_t *buf, size_t size, const uint32_t *off,
                   const uint32_t *len, size_t n, wg_rx_result *results)
{
    if (aead->encrypt)
        return WG_ERR_ARGS;
    int error = acquire(aead);
    if (error)
        return error;
    long accepted = 0;
    if (wg_may_split(n) && open_apart(buf, size, off, len, n, results)) {
        /* Decrypt all (across threads), then settle in order. A libcrypto
         * failure stops the thread it happened in; settling stops at the
         * first message left sealed or failed, so the call fails as the one
         * pass would, though later results are filled in too. */
        struct open_job job = {buf, len, results};
        wg_run_work(aead->ctx, open_messages, &job, n, open_cost);
        for (size_t i = 0; i < n && accepted >= 0; ++i) {
            int settled = open_settle(replay, buf, len[i], &results[i]);
            accepted = settled < 0 ? settled : accepted + settled;
        }
    } else {
        accepted = open_in_order(aead->ctx[0], replay, buf, size, off, len, n, results);
    }
    release(aead);
    return accepted;
}

const char *wg_crypto_version(void)
{
#ifdef OPENSSL_VERSION_STRING
    return OpenSSL_version(OPENSSL_VERSION_STRING); /* OpenSSL 3: "3.0.15" */
#else
    return OpenSSL_version(OPENSSL_VERSION); /* "OpenSSL 1.1.1w  11 Sep 2023" */
#endif
}
