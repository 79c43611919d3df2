/* Batched UDP I/O: recvmmsg and sendmmsg; see udpio.h. */
#define _GNU_SOURCE
#include "udpio.h"
#include "udpio_private.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#define SOL_UDP_ 17
#define UDP_SEGMENT_ 103 /* <linux/udp.h> */
#define UDP_GRO_ 104
/* Room for a local-address and a GRO or GSO control message (see udp.py's _CMSG_SPACE). */
#define CONTROL_SIZE 64

_Static_assert(sizeof(wg_udp_target) == 40, "udp.py packs wg_udp_target as 40 bytes");
_Static_assert(CMSG_SPACE(sizeof(struct in6_pktinfo)) + CMSG_SPACE(sizeof(uint16_t)) <= CONTROL_SIZE,
               "a source address and a segment size fit one control buffer");

typedef union {
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
} address;

typedef union {
    struct cmsghdr header; /* for its alignment */
    uint8_t bytes[CONTROL_SIZE];
} control;

struct wg_udp_batch {
    struct mmsghdr messages[WG_UDP_BATCH];
    struct iovec iov[WG_UDP_BATCH];
    address names[WG_UDP_BATCH];
    control controls[WG_UDP_BATCH];
};

size_t wg_udp_batch_size(void)
{
    return sizeof(wg_udp_batch);
}

static void prepare(wg_udp_batch *batch, size_t k, uint8_t *data, size_t length, socklen_t name_length,
                    size_t control_length)
{
    struct msghdr *header = &batch->messages[k].msg_hdr;
    batch->iov[k].iov_base = data;
    batch->iov[k].iov_len = length;
    header->msg_name = &batch->names[k];
    header->msg_namelen = name_length;
    header->msg_iov = &batch->iov[k];
    header->msg_iovlen = 1;
    header->msg_control = control_length ? batch->controls[k].bytes : NULL;
    header->msg_controllen = control_length;
    header->msg_flags = 0;
    batch->messages[k].msg_len = 0;
}

static void read_source(const address *name, wg_udp_rx *rx)
{
    memset(rx->source, 0, sizeof(rx->source));
    rx->scope = 0;
    if (name->v4.sin_family == AF_INET6) {
        rx->family = 6;
        rx->port = ntohs(name->v6.sin6_port);
        rx->scope = name->v6.sin6_scope_id;
        memcpy(rx->source, &name->v6.sin6_addr, 16);
    } else {
        rx->family = 4;
        rx->port = ntohs(name->v4.sin_port);
        memcpy(rx->source, &name->v4.sin_addr, 4);
    }
}

static void read_control(struct msghdr *header, wg_udp_rx *rx)
{
    rx->segment = 0;
    rx->local_family = 0;
    memset(rx->local, 0, sizeof(rx->local));
    for (struct cmsghdr *c = CMSG_FIRSTHDR(header); c != NULL; c = CMSG_NXTHDR(header, c)) {
        size_t length = c->cmsg_len - CMSG_LEN(0);
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO && length >= sizeof(struct in_pktinfo)) {
            struct in_pktinfo info;
            memcpy(&info, CMSG_DATA(c), sizeof(info));
            memcpy(rx->local, &info.ipi_spec_dst, 4);
            rx->local_family = 4;
        } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO &&
                   length >= sizeof(struct in6_pktinfo)) {
            struct in6_pktinfo info;
            memcpy(&info, CMSG_DATA(c), sizeof(info));
            memcpy(rx->local, &info.ipi6_addr, 16);
            rx->local_family = 6;
        } else if (c->cmsg_level == SOL_UDP_ && c->cmsg_type == UDP_GRO_ && length >= sizeof(int)) {
            int segment;
            memcpy(&segment, CMSG_DATA(c), sizeof(segment));
            rx->segment = (uint16_t)segment;
        }
    }
}

long wg_udp_recv(wg_udp_batch *batch, int fd, uint8_t *pool, uint32_t slot, size_t n, wg_udp_rx *rx,
                 int *error)
{
    return wg_udp_recv_flags(batch, fd, pool, slot, n, rx, error, 0);
}

long wg_udp_recv_flags(wg_udp_batch *batch, int fd, uint8_t *pool, uint32_t slot, size_t n, wg_udp_rx *rx,
                       int *error, int flags)
{
    *error = 0;
    if (n > WG_UDP_BATCH)
        n = WG_UDP_BATCH;
    for (size_t k = 0; k < n; ++k)
        prepare(batch, k, pool + k * (size_t)slot, slot, sizeof(address), CONTROL_SIZE);
    int count = recvmmsg(fd, batch->messages, (unsigned int)n, MSG_DONTWAIT | flags, NULL);
    if (count < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        *error = errno;
        return -1;
    }
    for (int k = 0; k < count; ++k) {
        struct msghdr *header = &batch->messages[k].msg_hdr;
        rx[k].offset = (uint32_t)k * slot;
        rx[k].length = batch->messages[k].msg_len;
        rx[k].truncated = (header->msg_flags & MSG_TRUNC) != 0;
        rx[k].reserved = 0;
        read_source(&batch->names[k], &rx[k]);
        read_control(header, &rx[k]);
    }
    return count;
}

/* The name and control message of datagram k; returns the control message's length. */
static size_t address_to(wg_udp_batch *batch, size_t k, const wg_udp_target *to, socklen_t *name_length)
{
    address *name = &batch->names[k];
    struct cmsghdr *c = &batch->controls[k].header;
    memset(name, 0, sizeof(*name));
    if (to->family == 6) {
        name->v6.sin6_family = AF_INET6;
        name->v6.sin6_port = to->port;
        name->v6.sin6_scope_id = to->scope;
        memcpy(&name->v6.sin6_addr, to->address, 16);
        *name_length = sizeof(name->v6);
    } else {
        name->v4.sin_family = AF_INET;
        name->v4.sin_port = to->port;
        memcpy(&name->v4.sin_addr, to->address, 4);
        *name_length = sizeof(name->v4);
    }
    if (to->source_family == 6) {
        struct in6_pktinfo info = {.ipi6_ifindex = 0};
        memcpy(&info.ipi6_addr, to->source, 16);
        c->cmsg_level = IPPROTO_IPV6;
        c->cmsg_type = IPV6_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof(info));
        memcpy(CMSG_DATA(c), &info, sizeof(info));
        return CMSG_SPACE(sizeof(info));
    }
    if (to->source_family == 4) {
        struct in_pktinfo info = {.ipi_ifindex = 0};
        memcpy(&info.ipi_spec_dst, to->source, 4);
        c->cmsg_level = IPPROTO_IP;
        c->cmsg_type = IP_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof(info));
        memcpy(CMSG_DATA(c), &info, sizeof(info));
        return CMSG_SPACE(sizeof(info));
    }
    return 0;
}

long wg_udp_send(wg_udp_batch *batch, int fd, const uint8_t *buf, const uint32_t *off, const uint32_t *len,
                 const wg_udp_target *to, size_t n, int *error)
{
    *error = 0;
    if (n > WG_UDP_BATCH)
        n = WG_UDP_BATCH;
    for (size_t k = 0; k < n; ++k) {
        socklen_t name_length;
        size_t control_length = address_to(batch, k, &to[k], &name_length);
        /* sendmsg only reads the datagram; iovec is not const. */
        prepare(batch, k, (uint8_t *)(uintptr_t)(buf + off[k]), len[k], name_length, control_length);
    }
    size_t done = 0;
    while (done < n) {
        int sent = sendmmsg(fd, batch->messages + done, (unsigned int)(n - done), 0);
        if (sent < 0) {
            if (errno == EINTR)
                continue;
            *error = errno;
            break;
        }
        done += (size_t)sent;
    }
    return (long)done;
}

int wg_udp_send_gso(wg_udp_batch *batch, int fd, const uint8_t *buf, size_t length, uint16_t segment,
                    const wg_udp_target *to)
{
    socklen_t name_length;
    size_t control_length = address_to(batch, 0, to, &name_length);
    struct cmsghdr *c = (struct cmsghdr *)(batch->controls[0].bytes + control_length);
    c->cmsg_level = SOL_UDP_;
    c->cmsg_type = UDP_SEGMENT_;
    c->cmsg_len = CMSG_LEN(sizeof(segment));
    memcpy(CMSG_DATA(c), &segment, sizeof(segment));
    control_length += CMSG_SPACE(sizeof(segment));
    prepare(batch, 0, (uint8_t *)(uintptr_t)buf, length, name_length, control_length);
    while (sendmsg(fd, &batch->messages[0].msg_hdr, 0) < 0)
        if (errno != EINTR)
            return errno;
    return 0;
}
