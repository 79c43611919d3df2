/* How the batch calls of hotpath.c hand their AEAD work to the crypto threads
 * (threads.c). C only: not for cffi, whose contract is hotpath.h ("Crypto
 * threads": wg_set_threads, wg_threads, wg_parallel_batches, defined in
 * threads.c). */
#ifndef PYWG_THREADS_H
#define PYWG_THREADS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "hotpath.h"

/* Seals or opens messages [begin, end) of `job` with one cipher context;
 * -1 if libcrypto failed, else 0. */
typedef int (*wg_work_fn)(const void *job, EVP_CIPHER_CTX *ctx, size_t begin, size_t end);

/* The cost of message i of `job`: its bytes plus MESSAGE_COST. */
typedef uint64_t (*wg_cost_fn)(const void *job, size_t i);
#define MESSAGE_COST 512 /* nonce setup and the tag: ~250 ns, what ~500 more bytes cost */

/* Whether a batch of n messages may be split at all; if not, the calls keep
 * their one-pass sequential loop. */
int wg_may_split(size_t n);

/* Runs `run` over messages [0, n) of `job`: across threads when that pays, the
 * pool is free and its threads and contexts can be had, else here alone with
 * ctx[0]. `ctx` is a handle's contexts: ctx[0] keyed, each other one copied
 * from it the first time a split needs it (freed with the handle's). Returns
 * nonzero if libcrypto failed. */
int wg_run_work(EVP_CIPHER_CTX *ctx[WG_MAX_THREADS], wg_work_fn run, const void *job, size_t n,
                wg_cost_fn cost);

#endif
