/* The lane: a C thread per tunnel that carries data packets between an
 * IFF_VNET_HDR TUN and the UDP data sockets without waking Python.
 *
 * Why: on an idle path each packet used to wake the Python loop, which runs
 * cold (100-400 us a wake-up against ~30 us hot; docs/design.md "Latency");
 * on a busy one Python's work per batch was a quarter of the CPU a gigabyte
 * cost. The lane blocks in epoll on the TUN and the data sockets instead, and
 * for packets it may handle alone it seals or opens them in batches (the TUN's
 * super-packets split, UDP GSO to send; UDP GRO batches opened, their segments
 * merged for the TUN), and writes down what happened as events. Everything
 * else it hands back to Python untouched.
 *
 * Who owns what: the lane and the Python engine take turns. While the lane is
 * armed it alone reads the TUN and the data sockets and uses the leased
 * handles; Python must park it (wg_lane_park) before it touches the device,
 * and arms it again after. Parked, the lane touches nothing.
 *
 * What the lane may do is a lease (pywg/runtime/lane.py builds it from
 * pywg/core/lease.py): per peer, the keys of its current session, the
 * counters it may use, until when, and its endpoint; and the device's routes.
 * The protocol rules stay in Python: the lease ends before any rule would act
 * (a rekey, a keypair's end), and the events (what was sent and received,
 * when) are folded into the peers' timers by Python before they run.
 */
#ifndef PYWG_LANE_H
#define PYWG_LANE_H

#include <stddef.h>
#include <stdint.h>

#include "hotpath.h"
#include "offload.h"
#include "udpio.h"

#define WG_LANE_MAX_PEERS 16   /* peers a lease may hold */
#define WG_LANE_MAX_ROUTES 64  /* prefixes a lease may hold (all of the device's) */
#define WG_LANE_MAX_SOCKETS 2  /* the data sockets: IPv4 and IPv6 */
#define WG_LANE_EVENTS 1024    /* events held before the lane hands back */

/* Event kinds. `reason` is WG_RX_DATA or WG_RX_KEEPALIVE (all were keepalives)
 * for RECEIVED, a WG_RX_* status for REJECTED, an errno for SEND_FAILED;
 * `length` counts the datagrams' bytes. */
#define WG_LANE_SENT 1          /* data messages sealed and sent */
#define WG_LANE_RECEIVED 2      /* data messages that authenticated and passed the replay window */
#define WG_LANE_DROPPED 3       /* opened but not delivered: `reason` says why (WG_LANE_DROP_*) */
#define WG_LANE_REJECTED 4      /* did not authenticate or were replayed: `reason`, a WG_RX_* status */
#define WG_LANE_SEND_FAILED 5   /* the kernel refused a send of `count` messages (more than one: a
                                   UDP_SEGMENT send): `reason` is the errno; it and the rest of its
                                   run are lost. `count` 0: it refused the source address, and the
                                   lane sent again from the one the kernel picks */
#define WG_LANE_MERGE_REFUSED 6 /* the TUN refused a merged frame: `reason` is its WG_MERGE_* kind,
                                   which the lane merges no more (the packets went alone) */

#define WG_LANE_DROP_SOURCE 1    /* the inner source is not the peer's */
#define WG_LANE_DROP_TUN_WRITE 2 /* the TUN refused the packet */
#define WG_LANE_DROP_TUN_DOWN 3  /* the TUN is down (EIO): lost, as on a wire */
#define WG_LANE_DROP_MALFORMED_INNER 4 /* it authenticated, but holds no IP packet */

/* Why the lane parked (wg_lane_park's answer). */
#define WG_LANE_PARKED 0    /* the caller asked */
#define WG_LANE_HANDOFF 1   /* it met work for Python: the fds (or the TUN reader) hold it */
#define WG_LANE_FULL 2      /* its event buffer filled */
#define WG_LANE_ERROR 3     /* a system call failed; Python reads the fds to see */

/* One peer of a lease. `counter` is the next sending counter: the lane
 * advances it, Python reads it back once the lane is parked. */
typedef struct {
    wg_aead *seal;
    wg_aead *open;
    wg_replay *replay;
    uint64_t counter;
    uint64_t counter_limit;  /* the lane seals while counter < counter_limit */
    int64_t send_until;      /* CLOCK_MONOTONIC ns: the lane seals before this */
    int64_t receive_until;   /* ... and opens before this */
    uint32_t remote_index;
    uint32_t local_index;
    int fd;                  /* the data socket that sends to `target` */
    int gso;                 /* it may send to `target` with UDP_SEGMENT */
    wg_udp_target target;    /* the endpoint, and the local address to send from */
} wg_lane_peer;

/* A prefix of the device's routes; a lease's routes are sorted longest first. */
typedef struct {
    uint8_t address[16];
    uint8_t family; /* 4 or 6 */
    uint8_t bits;
    uint16_t peer;  /* index into the lease's peers; WG_LANE_NO_PEER: a peer not in the lease */
} wg_lane_route;
#define WG_LANE_NO_PEER 0xffff

/* What happened to `count` messages (of `length` bytes together) of one peer,
 * the last of them at `time`: consecutive alike events within
 * WG_LANE_MERGE_NS of the first are one. */
typedef struct {
    int64_t time;    /* CLOCK_MONOTONIC ns */
    uint32_t length;
    uint32_t count;
    uint16_t peer;
    uint8_t kind;
    uint8_t reason;
} wg_lane_event;
#define WG_LANE_MERGE_NS 1000000 /* 1 ms: the timers' resolution is far coarser */

typedef struct wg_lane wg_lane;

/* A parked lane for the TUN `tun_fd`, read through `reader` (the C reader's
 * state: a frame the lane read but may not handle stays there, pending, for
 * Python's next read). NULL if a thread or an fd cannot be had. */
wg_lane *wg_lane_new(int tun_fd, wg_tun_reader *reader);

/* Readable (an eventfd) when the lane wants Python: it handed back, or has
 * events waiting for more than WG_LANE_FOLD_NS. Python reads it to clear it. */
int wg_lane_notify_fd(const wg_lane *lane);
#define WG_LANE_FOLD_NS 100000000 /* 0.1 s: the timers' slack, far below their 1-10 s */

/* Parked only: watch these data sockets; lease `peers` and `routes`, used in
 * place (the caller keeps them and leaves them alone while armed). `merge`:
 * the WG_MERGE_* kinds the TUN takes. */
int wg_lane_watch(wg_lane *lane, const int *fds, size_t n);
void wg_lane_lease(wg_lane *lane, wg_lane_peer *peers, size_t n_peers, const wg_lane_route *routes,
                   size_t n_routes, uint32_t mtu, int merge);

/* Arm a parked lane: 0, or -1 if it was not parked. */
int wg_lane_arm(wg_lane *lane);

/* Park the lane (blocks until it is between packets); returns why it is
 * parked: WG_LANE_PARKED, or why it parked itself first. */
int wg_lane_park(wg_lane *lane);

/* Parked only: move up to n events, oldest first, into `out`; returns how many. */
size_t wg_lane_take_events(wg_lane *lane, wg_lane_event *out, size_t n);

/* Parked only: packets merged into a frame with others since the last call
 * (the TUN writer's `coalesced`). */
uint64_t wg_lane_take_merged(wg_lane *lane);

/* Packets the lane carried, ever: sealed and sent, opened and delivered. */
uint64_t wg_lane_carried(const wg_lane *lane);

/* Stop the thread, close the lane's fds, free it. */
void wg_lane_free(wg_lane *lane);

#endif
