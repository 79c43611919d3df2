/* Crypto threads: the process-wide pool with which the seal and open calls of
 * hotpath.c share a large batch's AEAD work. hotpath.h ("Crypto threads") has
 * the contract Python sees, threads.h the interface hotpath.c uses. */
#define _GNU_SOURCE /* sched_getcpu, CPU_*, pthread_setaffinity_np, pthread_setname_np */
#include "threads.h"

#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A batch's AEAD work is a `struct work`: a function that seals or opens
 * messages [begin, end) with one cipher context. The calling thread and the
 * pool workers it wakes claim runs of `step` messages from a shared index
 * until none is left, so a worker that wakes late takes a smaller share, and
 * one still asleep when everything is claimed is called off: the caller never
 * waits for a wake-up, only for runs in progress. Runs touch disjoint
 * messages, output slots and results, so they need no lock.
 *
 * Workers sleep on a semaphore each (sem_post wakes one; a stale post only
 * makes it look for work once more) and report back on pool.done. Not on
 * condition variables: with glibc 2.36's, a worker woken for work that was
 * then called off at times slept through the next signals for milliseconds,
 * the signal finding nobody to wake (like glibc bug 25847). */

/* When splitting pays. Work is counted in bytes plus MESSAGE_COST per message:
 * on the 2-vCPU AMD EPYC KVM guest this was tuned on (OpenSSL 3.0) sealing
 * or opening 45 messages takes ~11 us when they are empty and ~41 us at 1420
 * bytes (~1.5 GB/s). Handing work to a sleeping worker costs the caller up to
 * ~7 us in sem_post (a cross-CPU wake-up in a nested guest that halts idle
 * vCPUs at once) and the worker starts ~10-20 us later. Splitting batches of
 * 1420-byte packets in two, called back to back, broke even at 12-28 packets
 * (varying from run to run) and gained 1.3-1.6x at 45-64; with a 20 us pause
 * between calls, so the worker's CPU was asleep each time, it lost up to ~28
 * packets, broke even at 32 and gained 1.1-1.3x at 45-64. Hence: split from
 * 48 KiB of cost (25 such packets) and 8 messages, one thread per 24 KiB. A
 * claim of ~6 KiB (~2.5 us) keeps the last run short next to the cost of its
 * atomic. */
#define SPLIT_MIN_MESSAGES 8
#define SPLIT_MIN_COST (48 * 1024)
#define SPLIT_COST_PER_THREAD (24 * 1024)
#define CLAIM_COST (6 * 1024)
/* How long the caller polls for a worker's last run before it sleeps. */
#define FINISH_POLL_NS 20000
/* Splitting pays only where a CPU would otherwise idle: on CPUs that other work keeps busy (the
 * tunnel's other end on the same host, other Pods of a node) a worker only takes their time, and
 * the hand-over costs ours. So the pool splits while the host had at least SPARE_MIN_PERMILLE of a
 * CPU to spare over the last SPARE_WINDOW_NS: idle, or busy with our workers (who would give it
 * back), read from /proc/stat at most once a window. On the 2-vCPU guest, with both ends of a TCP
 * transfer on it, splitting cost ~15 % of the throughput and CPU per GB (benchmarks/README.md). */
#define SPARE_WINDOW_NS 100000000
#define SPARE_MIN_PERMILLE 500

struct work {
    wg_work_fn run;
    const void *job;
    size_t n;                            /* messages [0, n) */
    size_t step;                         /* messages per claim */
    atomic_size_t next;                  /* the first message nobody claimed */
    atomic_int helped;                   /* a worker ran some */
    atomic_int failed;                   /* libcrypto failed in some run */
    EVP_CIPHER_CTX *ctx[WG_MAX_THREADS]; /* thread t's: 0 the caller, w + 1 worker w */
};

struct worker {
    pthread_t thread;
    sem_t wake;
    struct work *_Atomic work; /* handed over and not taken yet: by the worker, or back by the caller */
};

static struct {
    pthread_mutex_t use; /* held by the one call using the workers; others run alone */
    sem_t done;          /* a post per worker that took the work, when it finishes */
    /* The rest belongs to the holder of `use`. */
    int started;     /* workers running */
    int avoided_cpu; /* the CPU the workers' affinity leaves out; -1: not set */
    int other_cpus;  /* how many CPUs that affinity allows */
    struct worker workers[WG_MAX_THREADS - 1];
} pool = {.use = PTHREAD_MUTEX_INITIALIZER, .avoided_cpu = -1};

static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static int pool_usable;
static atomic_int threads_wanted = 1;
static _Atomic uint64_t split_batches;
static _Atomic uint64_t workers_busy_ns; /* the workers' time in runs, ever */
static atomic_int only_when_spare = 1;

/* Whether the host has a CPU to spare (spare_cpu); the caller's alone, under pool.use. */
static struct {
    int64_t at;          /* CLOCK_MONOTONIC ns of the last sample; 0: none yet */
    uint64_t idle_ticks; /* idle + iowait of all CPUs, in clock ticks */
    uint64_t busy_ns;    /* workers_busy_ns then */
    int spare;
} host = {.spare = 1};

int wg_set_threads(int n)
{
    n = n < 1 ? 1 : n > WG_MAX_THREADS ? WG_MAX_THREADS : n;
    atomic_store(&threads_wanted, n);
    return n;
}

int wg_threads(void)
{
    return atomic_load(&threads_wanted);
}

uint64_t wg_parallel_batches(void)
{
    return atomic_load(&split_batches);
}

void wg_split_only_when_spare(int on)
{
    atomic_store(&only_when_spare, on != 0);
}

/* Claims and runs runs of messages until none is left or libcrypto fails
 * here; returns 1 if it ran any. */
static int run_claims(struct work *work, int thread)
{
    int ran = 0;
    for (;;) {
        size_t begin = atomic_fetch_add(&work->next, work->step);
        if (begin >= work->n)
            return ran;
        size_t end = work->n - begin > work->step ? begin + work->step : work->n;
        if (work->run(work->job, work->ctx[thread], begin, end)) {
            atomic_store(&work->failed, 1);
            return 1;
        }
        ran = 1;
    }
}

static int64_t now_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

static void *worker_main(void *arg)
{
    struct worker *self = arg;
    int thread = (int)(self - pool.workers) + 1;
    for (;;) {
        while (sem_wait(&self->wake) != 0) /* asleep, not spinning, between batches */
            ;
        struct work *work = atomic_exchange(&self->work, NULL);
        if (!work)
            continue; /* called off before we woke */
        int64_t start = now_ns();
        if (run_claims(work, thread))
            atomic_store(&work->helped, 1);
        atomic_fetch_add(&workers_busy_ns, (uint64_t)(now_ns() - start));
        sem_post(&pool.done);
    }
    return NULL;
}

/* Idle and iowait ticks of all CPUs (/proc/stat's first line); 0 if unreadable. */
static uint64_t idle_ticks(void)
{
    char line[256];
    FILE *stat = fopen("/proc/stat", "re");
    if (!stat)
        return 0;
    unsigned long long user, nice, system, idle, iowait;
    int fields = fgets(line, sizeof(line), stat)
                     ? sscanf(line, "cpu %llu %llu %llu %llu %llu", &user, &nice, &system, &idle, &iowait)
                     : 0;
    fclose(stat);
    return fields == 5 ? (uint64_t)(idle + iowait) : 0;
}

/* Whether the host had SPARE_MIN_PERMILLE of a CPU to spare over the last window (holding
 * pool.use). Unknown (no /proc/stat, the first window) counts as spare. */
static int spare_cpu(void)
{
    int64_t now = now_ns();
    if (host.at && now - host.at < SPARE_WINDOW_NS)
        return host.spare;
    uint64_t idle = idle_ticks(), busy = atomic_load(&workers_busy_ns);
    long hz = sysconf(_SC_CLK_TCK);
    if (host.at && idle && host.idle_ticks && hz > 0) {
        uint64_t elapsed = (uint64_t)(now - host.at);
        uint64_t spare_ns = (idle - host.idle_ticks) * (1000000000 / (uint64_t)hz) + (busy - host.busy_ns);
        host.spare = spare_ns * 1000 >= elapsed * SPARE_MIN_PERMILLE;
    }
    host.at = now;
    host.idle_ticks = idle;
    host.busy_ns = busy;
    return host.spare;
}

/* Only the thread that called fork() lives on in the child: no workers, no
 * call in progress, and `use` maybe held by a thread that is gone. */
static void pool_after_fork(void)
{
    pthread_mutex_init(&pool.use, NULL);
    sem_init(&pool.done, 0, 0);
    pool.started = 0;
    pool.avoided_cpu = -1;
}

static void pool_init(void)
{
    pool_usable = sem_init(&pool.done, 0, 0) == 0 && pthread_atfork(NULL, NULL, pool_after_fork) == 0;
}

static int start_worker(struct worker *worker)
{
    atomic_init(&worker->work, NULL);
    if (sem_init(&worker->wake, 0, 0) != 0)
        return 0;
    /* Signals are for Python's threads: the worker starts with all blocked. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int error = pthread_create(&worker->thread, NULL, worker_main, worker);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (error) {
        sem_destroy(&worker->wake);
        return 0;
    }
    pthread_detach(worker->thread);
    pthread_setname_np(worker->thread, "pywg-crypto"); /* for top -H; harmless if it fails */
    return 1;
}

/* Starts workers until `wanted` run (holding pool.use); returns how many do. */
static int workers_ready(int wanted)
{
    pthread_once(&pool_once, pool_init);
    if (!pool_usable)
        return 0;
    while (pool.started < wanted && start_worker(&pool.workers[pool.started])) {
        ++pool.started;
        pool.avoided_cpu = -1; /* the new worker may run anywhere: steer it */
    }
    return pool.started < wanted ? pool.started : wanted;
}

/* Keeps the workers off the caller's CPU: wake-ups tend to land on the
 * waker's CPU, where the worker waits behind the caller instead of helping
 * (most of them did on the guest measured). Returns how many other CPUs the
 * caller may use (0: splitting cannot help), or -1 if unknown. Costs system
 * calls only when the caller's CPU changed. */
static int steer_workers(void)
{
    int cpu = sched_getcpu();
    if (cpu < 0 || cpu >= CPU_SETSIZE)
        return -1;
    if (cpu == pool.avoided_cpu)
        return pool.other_cpus;
    cpu_set_t others;
    if (pthread_getaffinity_np(pthread_self(), sizeof(others), &others) != 0)
        return -1;
    CPU_CLR(cpu, &others);
    pool.other_cpus = CPU_COUNT(&others);
    pool.avoided_cpu = cpu;
    for (int w = 0; w < pool.started && pool.other_cpus; ++w)
        pthread_setaffinity_np(pool.workers[w].thread, sizeof(others), &others); /* a hint: may fail */
    return pool.other_cpus;
}

/* Copies ctx[0] (key and direction) into the contexts up to `wanted` that do
 * not exist yet; returns how many contexts there are, up to `wanted`. */
static int contexts_ready(EVP_CIPHER_CTX *ctx[WG_MAX_THREADS], int wanted)
{
    for (int c = 1; c < wanted; ++c) {
        if (ctx[c])
            continue;
        EVP_CIPHER_CTX *copy = EVP_CIPHER_CTX_new();
        if (!copy || EVP_CIPHER_CTX_copy(copy, ctx[0]) != 1) {
            EVP_CIPHER_CTX_free(copy);
            return c;
        }
        ctx[c] = copy;
    }
    return wanted;
}

/* How many threads n messages costing `total` are worth; 1: run them here. */
static int threads_for(size_t n, uint64_t total)
{
    int threads = atomic_load(&threads_wanted);
    if (threads < 2 || n < SPLIT_MIN_MESSAGES || total < SPLIT_MIN_COST)
        return 1;
    uint64_t worth = total / SPLIT_COST_PER_THREAD;
    return worth < (uint64_t)threads ? (int)worth : threads;
}

/* How many threads can take part (holding pool.use), up to `wanted`. */
static int threads_ready(EVP_CIPHER_CTX *ctx[WG_MAX_THREADS], int wanted)
{
    if (atomic_load(&only_when_spare) && !spare_cpu())
        return 1;
    int threads = contexts_ready(ctx, wanted);
    if (threads > 1)
        threads = workers_ready(threads - 1) + 1;
    if (threads > 1) {
        int others = steer_workers();
        if (others >= 0 && others + 1 < threads)
            threads = others + 1;
    }
    return threads;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Waits for one worker that took the work to finish. Its last run is at most
 * a claim (~3 us) behind ours unless it was preempted, and being woken from a
 * sleep takes longer (10-25 us on the guest measured), so poll a while first;
 * but not if we moved to the workers' CPU, where polling would hold them up. */
static void wait_finished(void)
{
    int64_t start = now_ns();
    do {
        if (sem_trywait(&pool.done) == 0)
            return;
        cpu_relax();
    } while (now_ns() - start < FINISH_POLL_NS && sched_getcpu() == pool.avoided_cpu);
    while (sem_wait(&pool.done) != 0) /* EINTR: a signal for Python */
        ;
}

/* Runs the work here and on threads - 1 workers; returns when every message
 * is done. */
static void run_split(struct work *work, int threads)
{
    for (int w = 0; w < threads - 1; ++w) {
        atomic_store(&pool.workers[w].work, work);
        sem_post(&pool.workers[w].wake);
    }
    run_claims(work, 0);
    for (int w = 0; w < threads - 1; ++w) {
        if (atomic_exchange(&pool.workers[w].work, NULL))
            continue; /* not taken: nothing is left for it, call it off */
        wait_finished();
    }
}

int wg_run_work(EVP_CIPHER_CTX *ctx[WG_MAX_THREADS], wg_work_fn run, const void *job, size_t n,
                wg_cost_fn cost)
{
    uint64_t total = 0;
    for (size_t i = 0; i < n; ++i)
        total += cost(job, i);
    int threads = threads_for(n, total);
    if (threads < 2 || pthread_mutex_trylock(&pool.use) != 0)
        return run(job, ctx[0], 0, n);
    threads = threads_ready(ctx, threads);
    if (threads < 2) {
        pthread_mutex_unlock(&pool.use);
        return run(job, ctx[0], 0, n);
    }
    struct work work = {.run = run, .job = job, .n = n};
    memcpy(work.ctx, ctx, sizeof(work.ctx));
    work.step = (size_t)(CLAIM_COST * (uint64_t)n / total) + 1;
    atomic_init(&work.next, 0);
    atomic_init(&work.helped, 0);
    atomic_init(&work.failed, 0);
    run_split(&work, threads);
    pthread_mutex_unlock(&pool.use);
    if (atomic_load(&work.helped))
        atomic_fetch_add(&split_batches, 1);
    return atomic_load(&work.failed);
}

int wg_may_split(size_t n)
{
    return n >= SPLIT_MIN_MESSAGES && atomic_load(&threads_wanted) > 1;
}
