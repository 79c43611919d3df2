/* The lane; see lane.h for the contract. */
#define _GNU_SOURCE
#include "lane.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "udpio_private.h"

/* Packets handled back to back (each found the next one already waiting)
 * before the lane calls it a burst and hands back: Python's batches, GSO and
 * GRO carry bursts better than one system call per packet. A ping's echo
 * reply, written by the kernel during our TUN write, is the second of two. */
#define STREAK 8
#define BUFFER_SIZE (WG_MAX_FRAME + 64)

enum { STATE_PARKED, STATE_ARMED, STATE_PARKING };

struct wg_lane {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int state;   /* under lock */
    int why;     /* under lock: why it parked */
    int stopping; /* under lock */

    /* The lane thread's alone while armed, the caller's while parked. */
    int epoll_fd, control_fd, notify_fd, tun_fd;
    int sockets[WG_LANE_MAX_SOCKETS];
    size_t n_sockets;
    wg_tun_reader *reader;
    wg_lane_peer *peers;
    size_t n_peers;
    const wg_lane_route *routes;
    size_t n_routes;
    uint32_t mtu;
    wg_lane_event events[WG_LANE_EVENTS];
    size_t n_events;
    int notified; /* asked the caller to fold these events already */
    atomic_uint_fast64_t carried;

    wg_udp_batch *udp; /* one datagram at a time */
    uint8_t datagram[BUFFER_SIZE];
    uint8_t plain[BUFFER_SIZE];
    uint8_t sealed[BUFFER_SIZE];
};

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static inline uint32_t load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void signal_fd(int fd)
{
    uint64_t one = 1;
    ssize_t ignored = write(fd, &one, sizeof(one)); /* an eventfd only fails when it would overflow */
    (void)ignored;
}

static void drain_fd(int fd)
{
    uint64_t count;
    ssize_t ignored = read(fd, &count, sizeof(count));
    (void)ignored;
}

static void record(wg_lane *lane, uint16_t peer, uint8_t kind, uint8_t reason, uint32_t length)
{
    wg_lane_event *event = &lane->events[lane->n_events++];
    event->time = now_ns();
    event->length = length;
    event->peer = peer;
    event->kind = kind;
    event->reason = reason;
}

/* The lease's peer for `address` (4 or 16 bytes), longest prefix first. */
static uint16_t route(const wg_lane *lane, const uint8_t *address, int family)
{
    for (size_t i = 0; i < lane->n_routes; ++i) {
        const wg_lane_route *r = &lane->routes[i];
        if (r->family != family)
            continue;
        unsigned whole = r->bits / 8, rest = r->bits % 8;
        if (memcmp(r->address, address, whole))
            continue;
        if (rest && ((r->address[whole] ^ address[whole]) & (0xff00 >> rest) & 0xff))
            continue;
        return r->peer;
    }
    return WG_LANE_NO_PEER;
}

/* TUN to UDP. Returns WG_LANE_PARKED to go on, or why to hand back. */
static int from_tun(wg_lane *lane)
{
    wg_tun_reader *reader = lane->reader;
    if (reader->length)
        return WG_LANE_HANDOFF; /* Python's to hand out first (the engine does not arm us then) */
    ssize_t got = read(lane->tun_fd, reader->frame, sizeof(reader->frame));
    if (got < 0)
        return (errno == EAGAIN || errno == EINTR) ? WG_LANE_PARKED : WG_LANE_ERROR;
    if (got == 0)
        return WG_LANE_PARKED;
    /* From here on, a frame we may not send alone stays in the reader for Python. */
    reader->length = (uint32_t)got;
    reader->emitted = 0;
    if (reader->frame[1] != WG_VNET_GSO_NONE)
        return WG_LANE_HANDOFF;
    size_t position = 0;
    uint32_t off, len;
    int done;
    if (wg_tun_split(reader->frame, (uint32_t)got, 0, lane->plain, sizeof(lane->plain), &position, &off, &len, 1,
                     &done) != 1)
        return WG_LANE_HANDOFF; /* malformed: Python counts it */
    const uint8_t *packet = lane->plain;
    int version = packet[0] >> 4;
    if (!((version == 4 && len >= 20) || (version == 6 && len >= 40)))
        return WG_LANE_HANDOFF;
    uint16_t index = route(lane, packet + (version == 4 ? 16 : 24), version);
    if (index == WG_LANE_NO_PEER)
        return WG_LANE_HANDOFF;
    wg_lane_peer *peer = &lane->peers[index];
    if (!peer->seal || peer->counter >= peer->counter_limit || now_ns() >= peer->send_until)
        return WG_LANE_HANDOFF;
    uint32_t out_off, out_len;
    int stop;
    long sealed = wg_seal_batch(peer->seal, peer->remote_index, peer->counter, lane->mtu, lane->plain,
                                sizeof(lane->plain), &off, &len, 1, lane->sealed, sizeof(lane->sealed), &out_off,
                                &out_len, &stop);
    if (sealed != 1)
        return WG_LANE_HANDOFF; /* the frame is still in the reader, the counter unused */
    reader->length = 0;
    ++peer->counter;
    record(lane, index, WG_LANE_SENT, 0, out_len);
    int error;
    if (wg_udp_send(lane->udp, peer->fd, lane->sealed, &out_off, &out_len, &peer->target, 1, &error) != 1) {
        record(lane, index, WG_LANE_SEND_FAILED, (uint8_t)error, out_len);
        return WG_LANE_HANDOFF; /* Python decides what a refused send means */
    }
    atomic_fetch_add(&lane->carried, 1);
    return WG_LANE_PARKED;
}

static int same_origin(const wg_udp_rx *rx, const wg_udp_target *target)
{
    size_t size = rx->family == 4 ? 4 : 16;
    if (rx->family != target->family || rx->port != ntohs(target->port) ||
        memcmp(rx->source, target->address, size) || (rx->family == 6 && rx->scope != target->scope))
        return 0;
    /* The reply leaves from the address the datagram came to, as Python would set it. */
    size_t local = rx->local_family == 4 ? 4 : 16;
    return rx->local_family == target->source_family &&
           (!rx->local_family || !memcmp(rx->local, target->source, local));
}

static uint16_t receiver(const wg_lane *lane, uint32_t index)
{
    for (size_t i = 0; i < lane->n_peers; ++i)
        if (lane->peers[i].open && lane->peers[i].local_index == index)
            return (uint16_t)i;
    return WG_LANE_NO_PEER;
}

/* UDP to TUN: look at the next datagram first, take it only if the lane may
 * handle it alone. Returns WG_LANE_PARKED to go on, or why to hand back. */
static int from_udp(wg_lane *lane, int fd)
{
    wg_udp_rx rx;
    int error;
    uint8_t *message = lane->datagram;
    uint32_t slot = sizeof(lane->datagram);
    long got = wg_udp_recv_flags(lane->udp, fd, message, slot, 1, &rx, &error, MSG_PEEK);
    if (got < 0)
        return WG_LANE_ERROR;
    if (got == 0)
        return WG_LANE_PARKED;
    if (rx.truncated || (rx.segment && rx.segment < rx.length) || rx.length < WG_HEADER_SIZE + WG_TAG_SIZE ||
        load_le32(message) != WG_MESSAGE_DATA)
        return WG_LANE_HANDOFF;
    uint16_t index = receiver(lane, load_le32(message + 4));
    if (index == WG_LANE_NO_PEER)
        return WG_LANE_HANDOFF;
    wg_lane_peer *peer = &lane->peers[index];
    if (now_ns() >= peer->receive_until || !same_origin(&rx, &peer->target))
        return WG_LANE_HANDOFF;
    ssize_t taken = recv(fd, message, slot, MSG_DONTWAIT);
    if (taken != (ssize_t)rx.length)
        return WG_LANE_ERROR; /* cannot happen while we alone read it; Python looks */
    uint32_t off = 0, len = rx.length;
    wg_rx_result result;
    if (wg_open_batch(peer->open, peer->replay, message, slot, &off, &len, 1, &result) < 0) {
        record(lane, index, WG_LANE_REJECTED, WG_RX_MALFORMED, len);
        return WG_LANE_PARKED;
    }
    if (result.status != WG_RX_DATA && result.status != WG_RX_KEEPALIVE) {
        uint8_t kind = result.status == WG_RX_MALFORMED_INNER ? WG_LANE_RECEIVED : WG_LANE_REJECTED;
        record(lane, index, kind, result.status, len);
        return WG_LANE_PARKED;
    }
    record(lane, index, WG_LANE_RECEIVED, result.status, len);
    if (result.status == WG_RX_KEEPALIVE)
        return WG_LANE_PARKED;
    int family = result.source_length == 4 ? 4 : 6;
    if (route(lane, message + result.source_offset, family) != index) {
        record(lane, index, WG_LANE_DROPPED, WG_LANE_DROP_SOURCE, len);
        return WG_LANE_PARKED;
    }
    uint8_t *frame = message + result.inner_offset - WG_VNET_HDR_LEN; /* over the header, read already */
    memset(frame, 0, WG_VNET_HDR_LEN);
    if (write(lane->tun_fd, frame, WG_VNET_HDR_LEN + result.inner_length) < 0) {
        record(lane, index, WG_LANE_DROPPED, WG_LANE_DROP_TUN_WRITE, len);
        return WG_LANE_PARKED;
    }
    atomic_fetch_add(&lane->carried, 1);
    return WG_LANE_PARKED;
}

static int fold_timeout(const wg_lane *lane)
{
    if (!lane->n_events || lane->notified)
        return -1;
    int64_t left = lane->events[0].time + WG_LANE_FOLD_NS - now_ns();
    return left <= 0 ? 0 : (int)(left / 1000000) + 1;
}

/* Armed: handle packets until the caller asks for the lane or it hands back. */
static int serve(wg_lane *lane)
{
    int streak = 0;
    for (;;) {
        struct epoll_event ready[4];
        int n = epoll_wait(lane->epoll_fd, ready, 4, 0);
        if (n == 0) {
            streak = 0;
            n = epoll_wait(lane->epoll_fd, ready, 4, fold_timeout(lane));
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return WG_LANE_ERROR;
        }
        if (n == 0) { /* events waited long enough: the caller folds them */
            lane->notified = 1;
            signal_fd(lane->notify_fd);
            continue;
        }
        for (int i = 0; i < n; ++i)
            if (ready[i].data.fd == lane->control_fd)
                return WG_LANE_PARKED;
        if (++streak > STREAK)
            return WG_LANE_HANDOFF;
        int fd = ready[0].data.fd;
        int why = fd == lane->tun_fd ? from_tun(lane) : from_udp(lane, fd);
        if (why != WG_LANE_PARKED)
            return why;
        if (lane->n_events + 2 > WG_LANE_EVENTS) /* a packet records at most two */
            return WG_LANE_FULL;
    }
}

static void *lane_main(void *arg)
{
    wg_lane *lane = arg;
    pthread_mutex_lock(&lane->lock);
    while (!lane->stopping) {
        if (lane->state == STATE_PARKING) {
            lane->state = STATE_PARKED;
            lane->why = WG_LANE_PARKED;
            pthread_cond_broadcast(&lane->cond);
        }
        if (lane->state != STATE_ARMED) {
            pthread_cond_wait(&lane->cond, &lane->lock);
            continue;
        }
        pthread_mutex_unlock(&lane->lock);
        int why = serve(lane);
        pthread_mutex_lock(&lane->lock);
        if (lane->state == STATE_ARMED && why != WG_LANE_PARKED)
            signal_fd(lane->notify_fd); /* parked by itself: tell the caller */
        lane->state = STATE_PARKED;
        lane->why = why;
        pthread_cond_broadcast(&lane->cond);
    }
    pthread_mutex_unlock(&lane->lock);
    return NULL;
}

static int watch(wg_lane *lane, int fd)
{
    struct epoll_event event = {.events = EPOLLIN, .data.fd = fd};
    return epoll_ctl(lane->epoll_fd, EPOLL_CTL_ADD, fd, &event);
}

wg_lane *wg_lane_new(int tun_fd, wg_tun_reader *reader)
{
    wg_lane *lane = calloc(1, sizeof(*lane));
    if (!lane)
        return NULL;
    lane->udp = calloc(1, wg_udp_batch_size());
    lane->tun_fd = tun_fd;
    lane->reader = reader;
    lane->state = STATE_PARKED;
    atomic_init(&lane->carried, 0);
    lane->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    lane->control_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    lane->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    pthread_mutex_init(&lane->lock, NULL);
    pthread_cond_init(&lane->cond, NULL);
    if (!lane->udp || lane->epoll_fd < 0 || lane->control_fd < 0 || lane->notify_fd < 0 ||
        watch(lane, lane->control_fd) || watch(lane, tun_fd) ||
        pthread_create(&lane->thread, NULL, lane_main, lane)) {
        lane->stopping = -1; /* no thread to join */
        wg_lane_free(lane);
        return NULL;
    }
    pthread_setname_np(lane->thread, "pywg-lane");
    return lane;
}

int wg_lane_notify_fd(const wg_lane *lane)
{
    return lane->notify_fd;
}

int wg_lane_watch(wg_lane *lane, const int *fds, size_t n)
{
    if (n > WG_LANE_MAX_SOCKETS)
        return -1;
    for (size_t i = 0; i < lane->n_sockets; ++i)
        epoll_ctl(lane->epoll_fd, EPOLL_CTL_DEL, lane->sockets[i], NULL); /* closed already: gone by itself */
    lane->n_sockets = 0;
    for (size_t i = 0; i < n; ++i) {
        if (watch(lane, fds[i]))
            return -1;
        lane->sockets[lane->n_sockets++] = fds[i];
    }
    return 0;
}

void wg_lane_lease(wg_lane *lane, wg_lane_peer *peers, size_t n_peers, const wg_lane_route *routes,
                   size_t n_routes, uint32_t mtu)
{
    lane->peers = peers;
    lane->n_peers = n_peers;
    lane->routes = routes;
    lane->n_routes = n_routes;
    lane->mtu = mtu;
}

int wg_lane_arm(wg_lane *lane)
{
    pthread_mutex_lock(&lane->lock);
    int parked = lane->state == STATE_PARKED;
    if (parked) {
        drain_fd(lane->control_fd);
        lane->notified = 0;
        lane->state = STATE_ARMED;
        pthread_cond_broadcast(&lane->cond);
    }
    pthread_mutex_unlock(&lane->lock);
    return parked ? 0 : -1;
}

int wg_lane_park(wg_lane *lane)
{
    pthread_mutex_lock(&lane->lock);
    if (lane->state == STATE_ARMED) {
        lane->state = STATE_PARKING;
        signal_fd(lane->control_fd); /* out of epoll_wait */
    }
    while (lane->state != STATE_PARKED)
        pthread_cond_wait(&lane->cond, &lane->lock);
    int why = lane->why;
    pthread_mutex_unlock(&lane->lock);
    return why;
}

size_t wg_lane_take_events(wg_lane *lane, wg_lane_event *out, size_t n)
{
    if (n > lane->n_events)
        n = lane->n_events;
    memcpy(out, lane->events, n * sizeof(*out));
    memmove(lane->events, lane->events + n, (lane->n_events - n) * sizeof(*out));
    lane->n_events -= n;
    return n;
}

uint64_t wg_lane_carried(const wg_lane *lane)
{
    return atomic_load(&((wg_lane *)lane)->carried);
}

void wg_lane_free(wg_lane *lane)
{
    if (!lane)
        return;
    if (lane->stopping != -1) {
        pthread_mutex_lock(&lane->lock);
        lane->stopping = 1;
        signal_fd(lane->control_fd);
        pthread_cond_broadcast(&lane->cond);
        pthread_mutex_unlock(&lane->lock);
        pthread_join(lane->thread, NULL);
    }
    if (lane->epoll_fd >= 0)
        close(lane->epoll_fd);
    if (lane->control_fd >= 0)
        close(lane->control_fd);
    if (lane->notify_fd >= 0)
        close(lane->notify_fd);
    pthread_mutex_destroy(&lane->lock);
    pthread_cond_destroy(&lane->cond);
    free(lane->udp);
    free(lane);
}
