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

#include "batch.h"
#include "udpio_private.h"

/* A run: the packets the lane seals for one peer at once (a whole super-packet's
 * segments fit, WG_GSO_MAX_SEGMENTS), and the datagrams of one GRO batch. */
#define RUN 192
#define RUN_FRAMES 64 /* TUN frames read per wake-up at most: then the sockets get a turn */
#define PLAIN_SIZE (2 * WG_MAX_FRAME)
/* What one frame's segments may take of `plain`: the payload, and headers of up to 120 bytes each. */
#define FRAME_ROOM (WG_MAX_IP_PACKET + WG_GSO_MAX_SEGMENTS * 120)
#define SEALED_SIZE (PLAIN_SIZE + RUN * (WG_HEADER_SIZE + WG_TAG_SIZE + 16))
#define DATAGRAM_SIZE (WG_MAX_FRAME + 64) /* a GRO batch: 64 KiB at most */
#define FRAMES_SIZE (DATAGRAM_SIZE + RUN * WG_VNET_HDR_LEN)
#define GSO_SEGMENTS 64 /* per UDP_SEGMENT send (udp.py GSO_MAX_SEGMENTS) */
/* Events one wake-up may record at most (a flush: two; a GRO batch: eight): below this much room
 * the lane hands back for the caller to fold. */
#define WAKE_EVENTS (2 * RUN_FRAMES + 16)

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
    int merge;
    wg_lane_event events[WG_LANE_EVENTS];
    size_t n_events;
    int notified; /* asked the caller to fold these events already */
    uint64_t merged;
    atomic_uint_fast64_t carried;

    wg_udp_batch *udp;
    wg_udp_target targets[WG_UDP_BATCH]; /* sendmmsg's, when the sockets have no GSO */
    /* TUN to UDP: the run's packets in `plain`, sealed into `sealed`. */
    uint32_t plain_off[RUN], plain_len[RUN], sealed_off[RUN], sealed_len[RUN], chunk_end[RUN];
    /* UDP to TUN: a GRO batch's datagrams, opened in place, their packets merged into `frames`. */
    wg_rx_result results[RUN];
    uint32_t message_off[RUN], message_len[RUN], inner_off[RUN], inner_len[RUN];
    uint32_t frame_off[RUN], frame_len[RUN], frame_of[RUN];
    wg_gro_slot gro[RUN];
    uint8_t *plain, *sealed, *datagram, *frames; /* PLAIN_SIZE, SEALED_SIZE, DATAGRAM_SIZE, FRAMES_SIZE */
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

static void record(wg_lane *lane, uint16_t peer, uint8_t kind, uint8_t reason, uint32_t count, uint64_t length)
{
    int64_t now = now_ns();
    if (lane->n_events) {
        wg_lane_event *last = &lane->events[lane->n_events - 1];
        if (last->peer == peer && last->kind == kind && last->reason == reason &&
            now - last->time < WG_LANE_MERGE_NS && last->length + length <= UINT32_MAX) {
            last->time = now;
            last->count += count;
            last->length += (uint32_t)length;
            return;
        }
    }
    if (lane->n_events == WG_LANE_EVENTS)
        return; /* serve() hands back with WAKE_EVENTS left; only a TUN refusing frame after frame in
                   one wake-up, with losses between, records more: its last drops go uncounted */
    wg_lane_event *event = &lane->events[lane->n_events++];
    event->time = now;
    event->length = (uint32_t)length;
    event->count = count;
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

static int lost(int error)
{
    return error == EAGAIN || error == ENOBUFS; /* a full queue: lost, as on a wire (udp.py _LOST) */
}

/* The kernel refused the source address a target asks for (udp.py SOURCE_GONE). */
static int source_gone(int error)
{
    return error == EINVAL || error == EADDRNOTAVAIL || error == ENETUNREACH;
}

/* Send sealed messages [start, end) to `peer`: one UDP GSO send (`gso`) or sendmmsg. 0, or the
 * errno of the first refused send that is not a loss, *from being its first message. */
static int send_chunk(wg_lane *lane, const wg_lane_peer *peer, size_t start, size_t end, int gso, size_t *from)
{
    const uint32_t *off = lane->sealed_off, *len = lane->sealed_len;
    int error = 0;
    *from = start;
    if (gso) {
        size_t bytes = off[end - 1] + len[end - 1] - off[start];
        error = wg_udp_send_gso(lane->udp, peer->fd, lane->sealed + off[start], bytes, (uint16_t)len[start],
                                &peer->target);
        return lost(error) ? 0 : error;
    }
    for (size_t k = 0; k < end - start; ++k)
        lane->targets[k] = peer->target;
    for (size_t k = start; k < end; ++k) {
        k += (size_t)wg_udp_send(lane->udp, peer->fd, lane->sealed, off + k, len + k, lane->targets, end - k,
                                 &error);
        if (k < end && !lost(error)) {
            *from = k;
            return error;
        }
    }
    return 0;
}

/* Send sealed messages [0, n) to peer `index`: UDP GSO sends of equal-sized ones, or sendmmsg.
 * 0, or -1 when the kernel refused a send (recorded: it and the rest of the run are lost). */
static int send_run(wg_lane *lane, uint16_t index, size_t n)
{
    wg_lane_peer *peer = &lane->peers[index];
    size_t max_bytes = peer->target.family == 6 ? 65535 - 8 : 65535 - 20 - 8; /* udp.py GSO_MAX_PAYLOAD */
    size_t chunks = wg_gso_chunks(lane->sealed_len, n, peer->gso ? GSO_SEGMENTS : WG_UDP_BATCH,
                                  peer->gso ? max_bytes : SIZE_MAX, lane->chunk_end);
    size_t start = 0, from;
    for (size_t c = 0; c < chunks; start = lane->chunk_end[c++]) {
        size_t end = lane->chunk_end[c];
        int gso = peer->gso && end - start > 1;
        int error = send_chunk(lane, peer, start, end, gso, &from);
        if (error && source_gone(error) && peer->target.source_family) {
            /* As the engine does: send from the address the kernel picks, and forget the old one. */
            record(lane, index, WG_LANE_SEND_FAILED, (uint8_t)error, 0, 0);
            peer->target.source_family = 0;
            memset(peer->target.source, 0, sizeof(peer->target.source));
            error = send_chunk(lane, peer, from, end, gso, &from);
        }
        if (error) {
            record(lane, index, WG_LANE_SEND_FAILED, (uint8_t)error, gso ? (uint32_t)(end - from) : 1, 0);
            return -1;
        }
    }
    return 0;
}

/* Seal the run's n packets for peer `index` and send them. Returns WG_LANE_PARKED to go on. */
static int flush_run(wg_lane *lane, uint16_t index, size_t n)
{
    wg_lane_peer *peer = &lane->peers[index];
    int stop;
    long sealed = wg_seal_batch(peer->seal, peer->remote_index, peer->counter, lane->mtu, lane->plain, PLAIN_SIZE,
                                lane->plain_off, lane->plain_len, n, lane->sealed, SEALED_SIZE, lane->sealed_off,
                                lane->sealed_len, &stop);
    if (sealed <= 0)
        return WG_LANE_ERROR; /* cannot happen: the lease and the buffers allow the run */
    peer->counter += (uint64_t)sealed;
    uint64_t bytes = 0;
    for (long k = 0; k < sealed; ++k)
        bytes += lane->sealed_len[k];
    record(lane, index, WG_LANE_SENT, 0, (uint32_t)sealed, bytes);
    if (send_run(lane, index, (size_t)sealed))
        return WG_LANE_HANDOFF; /* Python decides what a refused send means */
    atomic_fetch_add(&lane->carried, (uint64_t)sealed);
    return (size_t)sealed == n ? WG_LANE_PARKED : WG_LANE_ERROR;
}

/* The leased peer that may send the reader's frame now, or WG_LANE_NO_PEER. */
static uint16_t sender_of(const wg_lane *lane, const uint8_t *frame, uint32_t length, int64_t now)
{
    if (length <= WG_VNET_HDR_LEN)
        return WG_LANE_NO_PEER;
    const uint8_t *packet = frame + WG_VNET_HDR_LEN;
    uint32_t size = length - WG_VNET_HDR_LEN;
    int version = packet[0] >> 4;
    if (!((version == 4 && size >= 20) || (version == 6 && size >= 40)))
        return WG_LANE_NO_PEER;
    uint16_t index = route(lane, packet + (version == 4 ? 16 : 24), version);
    if (index == WG_LANE_NO_PEER)
        return WG_LANE_NO_PEER;
    const wg_lane_peer *peer = &lane->peers[index];
    return peer->seal && now < peer->send_until ? index : WG_LANE_NO_PEER;
}

/* TUN to UDP: read frames until the TUN is empty, sealing and sending them in runs per peer.
 * A frame the lane may not send stays in the reader for Python. Returns WG_LANE_PARKED to go
 * on, or why to hand back. */
static int from_tun(wg_lane *lane)
{
    wg_tun_reader *reader = lane->reader;
    if (reader->length)
        return WG_LANE_HANDOFF; /* Python's to hand out first (the engine does not arm us then) */
    uint16_t run_peer = WG_LANE_NO_PEER;
    size_t n = 0, position = 0;
    int why = WG_LANE_PARKED;
    for (int frames = 0; frames < RUN_FRAMES && why == WG_LANE_PARKED; ++frames) {
        ssize_t got = read(lane->tun_fd, reader->frame, sizeof(reader->frame));
        if (got <= 0) {
            if (got < 0 && errno != EAGAIN && errno != EINTR)
                why = WG_LANE_ERROR;
            break;
        }
        /* From here on, a frame we may not send stays in the reader for Python. */
        reader->length = (uint32_t)got;
        reader->emitted = 0;
        uint16_t index = sender_of(lane, reader->frame, (uint32_t)got, now_ns());
        if (index == WG_LANE_NO_PEER) {
            why = WG_LANE_HANDOFF;
            break;
        }
        if (n && (index != run_peer || n + WG_GSO_MAX_SEGMENTS > RUN || PLAIN_SIZE - position < FRAME_ROOM)) {
            why = flush_run(lane, run_peer, n);
            n = position = 0;
            if (why != WG_LANE_PARKED)
                break;
        }
        size_t at = position;
        int done;
        long split = wg_tun_split(reader->frame, (uint32_t)got, 0, lane->plain, PLAIN_SIZE, &at,
                                  lane->plain_off + n, lane->plain_len + n, RUN - n, &done);
        const wg_lane_peer *peer = &lane->peers[index];
        if (split <= 0 || !done || peer->counter + n + (size_t)split > peer->counter_limit) {
            why = WG_LANE_HANDOFF; /* malformed (Python counts it), or past the lease: all of it Python's */
            break;
        }
        reader->length = 0;
        if (reader->frame[1] != WG_VNET_GSO_NONE)
            ++reader->superframes;
        run_peer = index;
        n += (size_t)split;
        position = at;
    }
    if (n) {
        int flushed = flush_run(lane, run_peer, n);
        if (flushed != WG_LANE_PARKED)
            why = flushed;
    }
    return why;
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

/* Cut a received datagram (or GRO batch) into its messages; the leased peer they all go to, or
 * WG_LANE_NO_PEER when any of them is not a data message for it. */
static uint16_t cut(wg_lane *lane, const wg_udp_rx *rx, size_t *n)
{
    const uint8_t *buf = lane->datagram;
    uint32_t segment = rx->segment && rx->segment < rx->length ? rx->segment : rx->length;
    if (rx->truncated || !segment || (rx->length + segment - 1) / segment > RUN)
        return WG_LANE_NO_PEER;
    uint32_t index = load_le32(buf + 4);
    *n = 0;
    for (uint32_t at = 0; at < rx->length; at += segment) {
        uint32_t length = rx->length - at < segment ? rx->length - at : segment;
        if (length < WG_HEADER_SIZE + WG_TAG_SIZE || load_le32(buf + at) != WG_MESSAGE_DATA ||
            load_le32(buf + at + 4) != index)
            return WG_LANE_NO_PEER;
        lane->message_off[*n] = at;
        lane->message_len[(*n)++] = length;
    }
    return receiver(lane, index);
}

/* Write the frames to the TUN; a merged frame the TUN refuses goes again as its packets, alone. */
static int write_frames(wg_lane *lane, uint16_t index, size_t n_packets, size_t n_frames)
{
    size_t start = 0;
    while (start < n_frames) {
        int error;
        uint32_t down;
        start += (size_t)wg_tun_write(lane->tun_fd, lane->frames, lane->frame_off + start,
                                      lane->frame_len + start, n_frames - start, &error, &down);
        if (down)
            record(lane, index, WG_LANE_DROPPED, WG_LANE_DROP_TUN_DOWN, down, 0);
        if (start == n_frames)
            break;
        if (error != EINVAL)
            return WG_LANE_ERROR; /* the TUN gone, or worse: Python finds out */
        uint8_t kind = lane->frames[lane->frame_off[start] + 1] & (uint8_t)~WG_VNET_GSO_ECN;
        int merged = kind == WG_VNET_GSO_UDP_L4 ? WG_MERGE_UDP : kind != WG_VNET_GSO_NONE ? WG_MERGE_TCP : 0;
        if (merged & lane->merge) {
            lane->merge &= ~merged;
            record(lane, index, WG_LANE_MERGE_REFUSED, (uint8_t)merged, 1, 0);
            for (size_t i = 0; i < n_packets; ++i) {
                if (lane->frame_of[i] != start)
                    continue;
                uint8_t *frame = lane->datagram + lane->inner_off[i] - WG_VNET_HDR_LEN; /* over its header */
                memset(frame, 0, WG_VNET_HDR_LEN);
                if (write(lane->tun_fd, frame, WG_VNET_HDR_LEN + lane->inner_len[i]) < 0)
                    record(lane, index, WG_LANE_DROPPED, WG_LANE_DROP_TUN_WRITE, 1, 0);
            }
        } else {
            record(lane, index, WG_LANE_DROPPED, WG_LANE_DROP_TUN_WRITE, 1, 0);
        }
        ++start;
    }
    return WG_LANE_PARKED;
}

/* UDP to TUN: look at the next datagram (or GRO batch) first, take it only if the lane may
 * handle all of it alone. Returns WG_LANE_PARKED to go on, or why to hand back. */
static int from_udp(wg_lane *lane, int fd)
{
    wg_udp_rx rx, taken;
    int error;
    long got = wg_udp_recv_flags(lane->udp, fd, lane->datagram, DATAGRAM_SIZE, 1, &rx, &error, MSG_PEEK);
    if (got <= 0)
        return got < 0 ? WG_LANE_ERROR : WG_LANE_PARKED;
    size_t n;
    uint16_t index = cut(lane, &rx, &n);
    if (index == WG_LANE_NO_PEER)
        return WG_LANE_HANDOFF;
    wg_lane_peer *peer = &lane->peers[index];
    if (now_ns() >= peer->receive_until || !same_origin(&rx, &peer->target))
        return WG_LANE_HANDOFF;
    got = wg_udp_recv(lane->udp, fd, lane->datagram, DATAGRAM_SIZE, 1, &taken, &error);
    if (got != 1 || taken.length != rx.length || taken.segment != rx.segment)
        return WG_LANE_ERROR; /* cannot happen while we alone read it; Python looks */
    if (wg_open_batch(peer->open, peer->replay, lane->datagram, DATAGRAM_SIZE, lane->message_off,
                      lane->message_len, n, lane->results) < 0)
        return WG_LANE_ERROR; /* the handle was zeroed under us: cannot happen while leased */
    wg_rx_summary summary;
    wg_rx_summarize(lane->results, lane->message_len, n, &summary);
    if (summary.accepted)
        record(lane, index, WG_LANE_RECEIVED, summary.data ? WG_RX_DATA : WG_RX_KEEPALIVE, summary.accepted,
               summary.accepted_bytes);
    if (summary.counts[WG_RX_MALFORMED_INNER])
        record(lane, index, WG_LANE_DROPPED, WG_LANE_DROP_MALFORMED_INNER, summary.counts[WG_RX_MALFORMED_INNER], 0);
    for (uint8_t status = WG_RX_REPLAY; status <= WG_RX_MALFORMED; ++status)
        if (summary.counts[status])
            record(lane, index, WG_LANE_REJECTED, status, summary.counts[status], 0);
    size_t delivered = 0, strangers = 0;
    for (size_t k = 0; k < n; ++k) {
        const wg_rx_result *result = &lane->results[k];
        if (result->status != WG_RX_DATA)
            continue;
        if (route(lane, lane->datagram + result->source_offset, result->source_length == 4 ? 4 : 6) != index) {
            ++strangers;
            continue;
        }
        lane->inner_off[delivered] = result->inner_offset;
        lane->inner_len[delivered++] = result->inner_length;
    }
    if (strangers)
        record(lane, index, WG_LANE_DROPPED, WG_LANE_DROP_SOURCE, (uint32_t)strangers, 0);
    if (!delivered)
        return WG_LANE_PARKED;
    long frames = wg_tun_coalesce(lane->datagram, lane->inner_off, lane->inner_len, delivered, lane->merge, lane->gro,
                                  lane->frames, FRAMES_SIZE, lane->frame_off, lane->frame_len, lane->frame_of);
    if (frames < 0)
        return WG_LANE_ERROR; /* cannot happen: FRAMES_SIZE holds a batch and its headers */
    atomic_fetch_add(&lane->carried, delivered);
    lane->merged += delivered - (size_t)frames;
    return write_frames(lane, index, delivered, (size_t)frames);
}

static int fold_timeout(const wg_lane *lane)
{
    if (!lane->n_events || lane->notified)
        return -1;
    int64_t left = lane->events[0].time + WG_LANE_FOLD_NS - now_ns();
    return left <= 0 ? 0 : (int)(left / 1000000) + 1;
}

/* Armed: handle packets until the caller asks for the lane or it hands back. The TUN and the
 * sockets take turns: each wake-up serves every fd that is ready once. */
static int serve(wg_lane *lane)
{
    for (;;) {
        struct epoll_event ready[WG_LANE_MAX_SOCKETS + 2];
        int n = epoll_wait(lane->epoll_fd, ready, WG_LANE_MAX_SOCKETS + 2, fold_timeout(lane));
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
        for (int i = 0; i < n; ++i) {
            if (lane->n_events + WAKE_EVENTS > WG_LANE_EVENTS)
                return WG_LANE_FULL;
            int fd = ready[i].data.fd;
            int why = fd == lane->tun_fd ? from_tun(lane) : from_udp(lane, fd);
            if (why != WG_LANE_PARKED)
                return why;
        }
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
    /* Touched only as far as traffic fills them: an idle lane costs little of them. */
    lane->plain = malloc(PLAIN_SIZE);
    lane->sealed = malloc(SEALED_SIZE);
    lane->datagram = malloc(DATAGRAM_SIZE);
    lane->frames = malloc(FRAMES_SIZE);
    lane->tun_fd = tun_fd;
    lane->reader = reader;
    lane->state = STATE_PARKED;
    atomic_init(&lane->carried, 0);
    lane->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    lane->control_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    lane->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    pthread_mutex_init(&lane->lock, NULL);
    pthread_cond_init(&lane->cond, NULL);
    if (!lane->udp || !lane->plain || !lane->sealed || !lane->datagram || !lane->frames || lane->epoll_fd < 0 ||
        lane->control_fd < 0 || lane->notify_fd < 0 || watch(lane, lane->control_fd) || watch(lane, tun_fd) ||
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
                   size_t n_routes, uint32_t mtu, int merge)
{
    lane->merge = merge;
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

uint64_t wg_lane_take_merged(wg_lane *lane)
{
    uint64_t merged = lane->merged;
    lane->merged = 0;
    return merged;
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
    free(lane->plain);
    free(lane->sealed);
    free(lane->datagram);
    free(lane->frames);
    free(lane);
}
