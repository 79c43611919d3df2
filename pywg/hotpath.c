/* The per-packet hot path of pywg; see hotpath.h for the contract. */
#include "hotpath.h"

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

struct wg_aead {
    EVP_CIPHER_CTX *ctx;
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

/* Handles: one EVP_CIPHER_CTX, keyed once. A call marks the handle busy so
 * two threads never share the context and zeroing never frees it mid-call. */

wg_aead *wg_aead_new(const uint8_t *key, int encrypt)
{
    wg_aead *aead = calloc(1, sizeof(*aead));
    if (!aead)
        return NULL;
    aead->encrypt = encrypt ? 1 : 0;
    atomic_init(&aead->state, 0);
    aead->ctx = EVP_CIPHER_CTX_new();
    if (!aead->ctx || EVP_CipherInit_ex(aead->ctx, EVP_chacha20_poly1305(), NULL, key, NULL, aead->encrypt) != 1) {
        EVP_CIPHER_CTX_free(aead->ctx);
        free(aead);
        return NULL;
    }
    return aead;
}

static void destroy_context(wg_aead *aead)
{
    EVP_CIPHER_CTX_free(aead->ctx); /* cleanses the key schedule */
    aead->ctx = NULL;
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
        destroy_context(aead); /* zeroed while we were busy: we free it */
}

void wg_aead_zero(wg_aead *aead)
{
    unsigned int old = atomic_fetch_or(&aead->state, STATE_CLOSED);
    if (!(old & (STATE_CLOSED | STATE_BUSY)))
        destroy_context(aead);
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

/* Sealing. */

/* Plaintext length after padding: kernel send.c calculate_skb_padding, pywg/peer.py _pad. */
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

long wg_seal_batch(wg_aead *aead, uint32_t receiver, uint64_t counter, uint32_t mtu, const uint8_t *in,
                   size_t in_size, const uint32_t *in_off, const uint32_t *in_len, size_t n, uint8_t *out,
                   size_t out_size, uint32_t *out_off, uint32_t *out_len, int *stop)
{
    if (!aead->encrypt || !mtu)
        return WG_ERR_ARGS;
    int error = acquire(aead);
    if (error)
        return error;
    /* Offsets are u32; never write where they could not point. */
    uint64_t room = out_size < UINT32_MAX ? out_size : UINT32_MAX;
    uint64_t position = 0;
    size_t i;
    *stop = WG_SEAL_DONE;
    for (i = 0; i < n; ++i) {
        if (counter >= WG_REJECT_AFTER_MESSAGES) {
            *stop = WG_SEAL_COUNTER_EXHAUSTED;
            break;
        }
        uint32_t length = in_len[i];
        if (length > WG_MAX_PLAINTEXT || (uint64_t)in_off[i] + length > in_size) {
            *stop = WG_SEAL_BAD_INPUT;
            break;
        }
        uint32_t padded = padded_length(length, mtu);
        uint64_t size = (uint64_t)WG_HEADER_SIZE + padded + WG_TAG_SIZE;
        if (position + size > room) {
            *stop = WG_SEAL_NO_SPACE;
            break;
        }
        uint8_t *message = out + position;
        store_le32(message, WG_MESSAGE_DATA);
        store_le32(message + 4, receiver);
        store_le64(message + 8, counter);
        if (seal_one(aead->ctx, counter, in + in_off[i], length, padded - length, message + WG_HEADER_SIZE)) {
            release(aead);
            return WG_ERR_CRYPTO;
        }
        out_off[i] = (uint32_t)position;
        out_len[i] = (uint32_t)size;
        position += size;
        ++counter;
    }
    release(aead);
    return (long)i;
}

/* Replay window: kernel receive.c counter_validate, pywg/replay.py. */

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

/* The inner packet check of pywg/device.py _inner_packet. */
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

long wg_open_batch(wg_aead *aead, wg_replay *replay, uint8_t *buf, size_t size, const uint32_t *off,
                   const uint32_t *len, size_t n, wg_rx_result *results)
{
    if (aead->encrypt)
        return WG_ERR_ARGS;
    int error = acquire(aead);
    if (error)
        return error;
    long accepted = 0;
    for (size_t i = 0; i < n; ++i) {
        wg_rx_result *result = &results[i];
        uint32_t offset = off[i], length = len[i];
        memset(result, 0, sizeof(*result));
        result->status = WG_RX_MALFORMED;
        if (length < WG_HEADER_SIZE + WG_TAG_SIZE || length > WG_MAX_PLAINTEXT ||
            (uint64_t)offset + length > size || (uint64_t)offset + length > UINT32_MAX)
            continue;
        uint8_t *message = buf + offset;
        if (load_le32(message) != WG_MESSAGE_DATA)
            continue;
        uint64_t counter = load_le64(message + 8);
        uint8_t *plaintext = message + WG_HEADER_SIZE;
        uint32_t plaintext_length = length - WG_HEADER_SIZE - WG_TAG_SIZE;
        result->counter = counter;
        result->inner_offset = offset + WG_HEADER_SIZE;
        int authentic = open_one(aead->ctx, counter, plaintext, plaintext_length, plaintext + plaintext_length);
        if (authentic < 0) {
            memset(plaintext, 0, plaintext_length);
            release(aead);
            return WG_ERR_CRYPTO;
        }
        if (!authentic) {
            memset(plaintext, 0, plaintext_length); /* never leave unauthenticated plaintext */
            result->status = WG_RX_AUTH_FAILED;
            continue;
        }
        if (!wg_replay_validate(replay, counter)) {
            result->status = WG_RX_REPLAY;
            continue;
        }
        ++accepted;
        result->status = inner_packet(plaintext, plaintext_length, result->inner_offset, result);
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
