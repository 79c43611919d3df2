/*
 * pywg-cni entrypoint: the CNI plugin binary a runtime (or Multus) executes on the node.
 *
 * Kubernetes nodes often have no Python, so what the DaemonSet installs in /opt/cni/bin is this
 * static program. It needs nothing but the kernel: it forwards the CNI request to the pywg node
 * agent (cni/agent.py, running in the DaemonSet's container with its own Python) over the agent's
 * root-only unix socket, and prints what the plugin (cni/plugin.py, run inside the agent) answers.
 * No interpreter starts per call.
 *
 * Protocol: one JSON line each way on one connection.
 *   request: {"op": "cni", "env": {"CNI_COMMAND": ..., ...}, "stdin": "<stdin as a JSON string>"}
 *   reply:   {"ok": true, "status": N, "stdout": "<text>"}  -> stdout printed, exit status N
 *            {"ok": false, "code": C, "msg": "<text>"}       -> a CNI error (code C) printed, exit 1
 * `env` holds the CNI variables that are set: CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME,
 * CNI_ARGS, CNI_PATH, CNI_NETNS_OVERRIDE. Bytes of stdin or of a variable that are not UTF-8 are
 * sent as the lone surrogates \udc80-\udcff (Python's "surrogateescape"), so the agent gets the
 * exact bytes back with .encode("utf-8", "surrogateescape"); such escapes in a reply become bytes
 * again.
 *
 * The socket: $PYWG_CNI_AGENT_SOCKET if set and not empty (the runtime's environment: the node's
 * operator), else /run/pywg-cni/agent.sock. Never one a network config names: tenants may write
 * NetworkAttachmentDefinitions, and a socket of theirs could forge results. The process at the other
 * end must be root (SO_PEERCRED), as the agent is: anything else is refused.
 *
 * When the agent cannot be reached the entrypoint answers by itself:
 *   VERSION  the versions this plugin supports (cni/spec.py SUPPORTED_VERSIONS; a test holds the
 *            two lists together), on any failure to get the agent's answer;
 *   DEL, GC  success, nothing printed, when nothing serves the socket (no socket file, or a stale
 *            one). Every tunnel is the agent's: its engine, UDP sockets and UAPI socket live in the
 *            agent's process and go with it. What an attachment leaves while no agent runs is its
 *            persistent TUN inside the Pod's namespace, which goes when the runtime deletes that
 *            namespace right after a successful DEL, and its state file, which the next agent
 *            removes at start because the namespace is gone (cni/agent.py, "State"). Failing DEL
 *            instead would wedge Pod deletion for as long as the DaemonSet is absent (a drain, an
 *            uninstall). An agent that is reachable but fails is an error, also for DEL;
 *   STATUS   CNI error 50 (not available);
 *   others   CNI error 11 (try again later), naming the socket.
 * Error JSON carries the config's cniVersion when stdin has one, else 1.1.0.
 *
 * Bounds: stdin at most MAX_STDIN bytes, the request line at most the agent's MAX_REQUEST
 * (cni/agent.py), the reply at most MAX_REPLY. All buffers are static; every write into one goes
 * through `put`, which checks the room left. Connecting may take CONNECT_TIMEOUT_MS, the reply
 * REPLY_TIMEOUT_MS (ADD, DEL, CHECK, GC) or QUICK_TIMEOUT_MS (VERSION, STATUS).
 *
 * Build: python cni/build_entrypoint.py (gcc -static -O2).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/run/pywg-cni/agent.sock"
#define SOCKET_ENV "PYWG_CNI_AGENT_SOCKET"
#define DEFAULT_ERROR_VERSION "1.1.0" /* cniVersion of an error when stdin names none */
#define DEFAULT_CONFIG_VERSION "0.3.0" /* cni/spec.py: a config without cniVersion is 0.3.0 */

#define MAX_STDIN (1 << 20)
#define MAX_REQUEST (1 << 23) /* cni/agent.py MAX_REQUEST: the longest line the agent reads */
#define MAX_REPLY (4 << 20)
#define MAX_MSG 8192
#define MAX_OUT 65536
#define MAX_SHORT 256 /* cniVersion */
#define MAX_KEY 32
#define MAX_DEPTH 64

#define CONNECT_TIMEOUT_MS 5000
/* Longer than the 60 s the plugin itself waits for the agent (cni/agent_client.py), so that its
   own, more precise error comes back rather than this program's timeout. */
#define REPLY_TIMEOUT_MS 75000
#define QUICK_TIMEOUT_MS 10000

/* CNI error codes (cni/spec.py). */
#define ERR_DECODING 6
#define ERR_INVALID_CONFIG 7
#define ERR_TRY_AGAIN_LATER 11
#define ERR_NOT_AVAILABLE 50
#define ERR_INTERNAL 999

static const char *const SUPPORTED_VERSIONS[] = {"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"};
static const char *const CNI_VARIABLES[] = {
    "CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS",          "CNI_IFNAME",
    "CNI_ARGS",    "CNI_PATH",        "CNI_NETNS_OVERRIDE",
};

#define COUNT(array) (sizeof(array) / sizeof((array)[0]))

/* --- bounded buffers ------------------------------------------------------------------------- */

struct buf {
    unsigned char *data;
    size_t len, cap;
    int overflow; /* sticky: a write that did not fit; the contents are then unusable */
};

static unsigned char stdin_data[MAX_STDIN + 1];
static unsigned char request_data[MAX_REQUEST];
static unsigned char reply_data[MAX_REPLY];
static unsigned char stdout_data[MAX_REPLY];
static unsigned char msg_data[MAX_MSG];
static unsigned char text_data[MAX_MSG + 128];
static unsigned char out_data[MAX_OUT];

static void put(struct buf *b, const void *p, size_t n)
{
    if (b->overflow || n > b->cap - b->len) {
        b->overflow = 1;
        return;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void put_byte(struct buf *b, unsigned char c) { put(b, &c, 1); }

static void put_str(struct buf *b, const char *s) { put(b, s, strlen(s)); }

static void put_utf8(struct buf *b, unsigned cp)
{
    unsigned char s[4];
    if (cp < 0x80) {
        put_byte(b, (unsigned char)cp);
    } else if (cp < 0x800) {
        s[0] = (unsigned char)(0xC0 | (cp >> 6));
        s[1] = (unsigned char)(0x80 | (cp & 0x3F));
        put(b, s, 2);
    } else if (cp < 0x10000) {
        s[0] = (unsigned char)(0xE0 | (cp >> 12));
        s[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        s[2] = (unsigned char)(0x80 | (cp & 0x3F));
        put(b, s, 3);
    } else {
        s[0] = (unsigned char)(0xF0 | (cp >> 18));
        s[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        s[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        s[3] = (unsigned char)(0x80 | (cp & 0x3F));
        put(b, s, 4);
    }
}

/* --- writing JSON ----------------------------------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence at s (as Unicode and Python's strict decoder define
   it: no overlong forms, no surrogates, nothing above U+10FFFF), or 0 if none starts there. */
static size_t utf8_length(const unsigned char *s, size_t n)
{
    unsigned char c = s[0], low = 0x80, high = 0xBF;
    size_t length, i;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        length = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        length = 3;
        if (c == 0xE0)
            low = 0xA0;
        else if (c == 0xED)
            high = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        length = 4;
        if (c == 0xF0)
            low = 0x90;
        else if (c == 0xF4)
            high = 0x8F;
    } else {
        return 0;
    }
    if (n < length || s[1] < low || s[1] > high)
        return 0;
    for (i = 2; i < length; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return length;
}

static void put_escape(struct buf *b, unsigned value)
{
    static const char hex[] = "0123456789abcdef";
    char e[6] = {'\\', 'u', hex[(value >> 12) & 15], hex[(value >> 8) & 15], hex[(value >> 4) & 15],
                 hex[value & 15]};
    put(b, e, sizeof e);
}

/* s as a JSON string: quotes, backslashes and control characters escaped, UTF-8 as is, any other
   byte as its surrogateescape code point. */
static void put_json_string(struct buf *b, const unsigned char *s, size_t n)
{
    size_t i = 0;

    put_byte(b, '"');
    while (i < n) {
        unsigned char c = s[i];
        size_t length = utf8_length(s + i, n - i);

        if (c == '"' || c == '\\') {
            put_byte(b, '\\');
            put_byte(b, c);
        } else if (c == '\n') {
            put_str(b, "\\n");
        } else if (c == '\r') {
            put_str(b, "\\r");
        } else if (c == '\t') {
            put_str(b, "\\t");
        } else if (c == '\b') {
            put_str(b, "\\b");
        } else if (c == '\f') {
            put_str(b, "\\f");
        } else if (c < 0x20) {
            put_escape(b, c);
        } else if (length == 0) {
            put_escape(b, 0xDC00 | c);
        } else {
            put(b, s + i, length);
            i += length;
            continue;
        }
        i++;
    }
    put_byte(b, '"');
}

static void put_json_cstring(struct buf *b, const char *s)
{
    put_json_string(b, (const unsigned char *)s, strlen(s));
}

/* --- reading JSON ------------------------------------------------------------------------------ */

struct json {
    const unsigned char *p, *end;
};

static int peek(struct json *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
    return j->p < j->end ? *j->p : -1;
}

static int eat(struct json *j, int c)
{
    if (peek(j) != c)
        return 0;
    j->p++;
    return 1;
}

static int literal(struct json *j, const char *word)
{
    size_t n = strlen(word);
    peek(j);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n) != 0)
        return 0;
    j->p += n;
    return 1;
}

static int is_digit(const struct json *j) { return j->p < j->end && *j->p >= '0' && *j->p <= '9'; }

static int hex4(struct json *j, unsigned *out)
{
    unsigned value = 0;
    int i;

    if (j->end - j->p < 4)
        return 0;
    for (i = 0; i < 4; i++) {
        unsigned char c = j->p[i];
        value <<= 4;
        if (c >= '0' && c <= '9')
            value |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            value |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            value |= (unsigned)(c - 'A' + 10);
        else
            return 0;
    }
    j->p += 4;
    *out = value;
    return 1;
}

/* A JSON string, decoded into out (NULL: only checked). A surrogate pair becomes its character,
   a lone \udc80-\udcff the byte it escapes, any other lone surrogate U+FFFD. */
static int parse_string(struct json *j, struct buf *out)
{
    if (!eat(j, '"'))
        return 0;
    while (j->p < j->end) {
        unsigned char c = *j->p++;
        unsigned cp, low;

        if (c == '"')
            return 1;
        if (c < 0x20)
            return 0;
        if (c != '\\') {
            if (out)
                put_byte(out, c);
            continue;
        }
        if (j->p >= j->end)
            return 0;
        switch (c = *j->p++) {
        case '"':
        case '\\':
        case '/':
            break;
        case 'b':
            c = '\b';
            break;
        case 'f':
            c = '\f';
            break;
        case 'n':
            c = '\n';
            break;
        case 'r':
            c = '\r';
            break;
        case 't':
            c = '\t';
            break;
        case 'u':
            if (!hex4(j, &cp))
                return 0;
            if (cp >= 0xD800 && cp <= 0xDBFF && j->end - j->p >= 6 && j->p[0] == '\\' &&
                j->p[1] == 'u') {
                const unsigned char *back = j->p;
                j->p += 2;
                if (hex4(j, &low) && low >= 0xDC00 && low <= 0xDFFF)
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                else
                    j->p = back;
            }
            if (out == NULL)
                continue;
            if (cp >= 0xDC80 && cp <= 0xDCFF)
                put_byte(out, (unsigned char)(cp & 0xFF));
            else if (cp >= 0xD800 && cp <= 0xDFFF)
                put_utf8(out, 0xFFFD);
            else
                put_utf8(out, cp);
            continue;
        default:
            return 0;
        }
        if (out)
            put_byte(out, c);
    }
    return 0;
}

/* A JSON number; *integer is set when it is one without fraction or exponent that fits. */
static int parse_number(struct json *j, int *integer, long long *value)
{
    long long v = 0;
    int negative = 0, fits = 1;

    peek(j);
    if (j->p < j->end && *j->p == '-') {
        negative = 1;
        j->p++;
    }
    if (!is_digit(j))
        return 0;
    if (*j->p == '0') {
        j->p++;
    } else {
        while (is_digit(j)) {
            int d = *j->p++ - '0';
            if (v > (LLONG_MAX - d) / 10)
                fits = 0;
            else
                v = v * 10 + d;
        }
    }
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if (!is_digit(j))
            return 0;
        while (is_digit(j))
            j->p++;
        fits = 0;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
            j->p++;
        if (!is_digit(j))
            return 0;
        while (is_digit(j))
            j->p++;
        fits = 0;
    }
    *integer = fits;
    *value = negative ? -v : v;
    return 1;
}

static int skip_value(struct json *j, int depth)
{
    int c = peek(j), integer;
    long long number;

    if (depth > MAX_DEPTH)
        return 0;
    switch (c) {
    case '"':
        return parse_string(j, NULL);
    case '{':
        j->p++;
        if (eat(j, '}'))
            return 1;
        do {
            if (!parse_string(j, NULL) || !eat(j, ':') || !skip_value(j, depth + 1))
                return 0;
        } while (eat(j, ','));
        return eat(j, '}');
    case '[':
        j->p++;
        if (eat(j, ']'))
            return 1;
        do {
            if (!skip_value(j, depth + 1))
                return 0;
        } while (eat(j, ','));
        return eat(j, ']');
    case 't':
        return literal(j, "true");
    case 'f':
        return literal(j, "false");
    case 'n':
        return literal(j, "null");
    case 'N': /* Python's json reads and writes these too */
        return literal(j, "NaN");
    case 'I':
        return literal(j, "Infinity");
    default:
        return literal(j, "-Infinity") || parse_number(j, &integer, &number);
    }
}

enum kind { STRING, INTEGER, BOOLEAN };

struct field {
    const char *name;
    enum kind kind;
    struct buf *text; /* STRING: the decoded value */
    long long number; /* INTEGER, BOOLEAN */
    int found;        /* the last occurrence of the key had the right kind and fitted */
};

/* A JSON object that must end the input (whitespace aside); the named fields are picked out,
   everything else is checked and skipped. */
static int parse_object(struct json *j, struct field *fields, size_t count)
{
    unsigned char key_data[MAX_KEY];

    if (!eat(j, '{'))
        return 0;
    if (!eat(j, '}')) {
        do {
            struct buf key = {key_data, 0, sizeof key_data, 0};
            struct field *f = NULL;
            size_t i;
            int c, integer;

            if (!parse_string(j, &key) || !eat(j, ':'))
                return 0;
            for (i = 0; i < count && !key.overflow; i++)
                if (strlen(fields[i].name) == key.len && memcmp(fields[i].name, key.data, key.len) == 0)
                    f = &fields[i];
            if (f == NULL) {
                if (!skip_value(j, 1))
                    return 0;
                continue;
            }
            f->found = 0;
            c = peek(j);
            if (f->kind == STRING && c == '"') {
                f->text->len = 0;
                f->text->overflow = 0;
                if (!parse_string(j, f->text))
                    return 0;
                f->found = !f->text->overflow;
            } else if (f->kind == BOOLEAN && (c == 't' || c == 'f')) {
                f->number = c == 't';
                if (!literal(j, c == 't' ? "true" : "false"))
                    return 0;
                f->found = 1;
            } else if (f->kind == INTEGER && (c == '-' || (c >= '0' && c <= '9'))) {
                if (!parse_number(j, &integer, &f->number))
                    return 0;
                f->found = integer;
            } else if (!skip_value(j, 1)) {
                return 0;
            }
        } while (eat(j, ','));
        if (!eat(j, '}'))
            return 0;
    }
    return peek(j) == -1;
}

/* --- I/O ---------------------------------------------------------------------------------------- */

static long long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int remaining_ms(long long deadline)
{
    long long left = deadline - now_ms();
    return left < 0 ? 0 : (int)left;
}

/* 1: readable or writable (`events`) before the deadline; 0: timed out; -1: error (errno). */
static int wait_for(int fd, short events, long long deadline)
{
    for (;;) {
        struct pollfd p = {fd, events, 0};
        int left = remaining_ms(deadline), n;

        if (left == 0)
            return 0;
        n = poll(&p, 1, left);
        if (n > 0)
            return 1;
        if (n < 0 && errno != EINTR)
            return -1;
    }
}

/* All of stdin into stdin_data; *len > MAX_STDIN if there was more. A closed stdin is empty. */
static void read_stdin(size_t *len)
{
    *len = 0;
    while (*len <= MAX_STDIN) {
        ssize_t n = read(STDIN_FILENO, stdin_data + *len, MAX_STDIN + 1 - *len);
        if (n > 0)
            *len += (size_t)n;
        else if (n == 0 || errno != EINTR)
            return;
    }
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t done = write(fd, p, n);
        if (done < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += done;
        n -= (size_t)done;
    }
    return 0;
}

enum outcome { ANSWERED, NOT_RUNNING, UNREACHABLE, NOT_ROOT, TIMED_OUT, CLOSED, GARBAGE, TOO_LONG };

struct exchange {
    const char *socket;
    int error; /* errno of NOT_RUNNING and UNREACHABLE */
    long long peer_uid; /* of NOT_ROOT */
    size_t reply_len;
};

/* Connect (non-blocking; a full backlog is retried until the deadline). */
static enum outcome connect_agent(struct exchange *x, int *fd_out)
{
    struct sockaddr_un address;
    long long deadline = now_ms() + CONNECT_TIMEOUT_MS;
    size_t n = strlen(x->socket);
    int fd;

    memset(&address, 0, sizeof address);
    address.sun_family = AF_UNIX;
    if (n == 0 || n >= sizeof address.sun_path) {
        x->error = ENAMETOOLONG;
        return UNREACHABLE;
    }
    memcpy(address.sun_path, x->socket, n + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        x->error = errno;
        return UNREACHABLE;
    }
    for (;;) {
        int r = connect(fd, (struct sockaddr *)&address, sizeof address);
        int error = errno;
        socklen_t size = sizeof error;

        if (r == 0)
            break;
        if (error == EINTR)
            continue;
        if (error == EAGAIN && remaining_ms(deadline) > 0) {
            poll(NULL, 0, 10);
            continue;
        }
        if (error == EINPROGRESS) {
            if (wait_for(fd, POLLOUT, deadline) == 1 &&
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size) == 0 && error == 0)
                break;
            if (error == EINPROGRESS)
                error = ETIMEDOUT;
        }
        close(fd);
        x->error = error;
        return error == ENOENT || error == ECONNREFUSED ? NOT_RUNNING : UNREACHABLE;
    }
    {
        struct ucred peer;
        socklen_t size = sizeof peer;

        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &size) != 0) {
            x->error = errno;
            close(fd);
            return UNREACHABLE;
        }
        if (peer.uid != 0 && peer.uid != geteuid()) {
            x->peer_uid = (long long)peer.uid;
            close(fd);
            return NOT_ROOT;
        }
    }
    *fd_out = fd;
    return ANSWERED;
}

/* Send the request, read one line of reply into reply_data (without its newline). */
static enum outcome ask_agent(struct exchange *x, const struct buf *request, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    enum outcome outcome;
    size_t sent = 0, got = 0;
    int fd = -1;

    outcome = connect_agent(x, &fd);
    if (outcome != ANSWERED)
        return outcome;
    while (sent < request->len) {
        ssize_t n = send(fd, request->data + sent, request->len - sent, MSG_NOSIGNAL);
        if (n >= 0) {
            sent += (size_t)n;
        } else if (errno == EAGAIN) {
            if (wait_for(fd, POLLOUT, deadline) != 1) {
                outcome = TIMED_OUT;
                goto done;
            }
        } else if (errno != EINTR) {
            break; /* the agent may have answered (and closed) already: read what it said */
        }
    }
    for (;;) {
        unsigned char *newline;
        ssize_t n;
        int ready;

        if (got == sizeof reply_data) {
            outcome = TOO_LONG;
            break;
        }
        ready = wait_for(fd, POLLIN, deadline);
        if (ready != 1) {
            outcome = ready == 0 ? TIMED_OUT : CLOSED;
            break;
        }
        n = recv(fd, reply_data + got, sizeof reply_data - got, 0);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            outcome = CLOSED;
            break;
        }
        if (n == 0) {
            outcome = CLOSED;
            break;
        }
        newline = memchr(reply_data + got, '\n', (size_t)n);
        got += (size_t)n;
        if (newline != NULL) {
            x->reply_len = (size_t)(newline - reply_data);
            outcome = ANSWERED;
            break;
        }
    }
done:
    close(fd);
    return outcome;
}

/* --- the CNI side -------------------------------------------------------------------------------- */

struct config {
    int object; /* stdin is one JSON object, or blank (an empty config) */
    unsigned char version_data[MAX_SHORT];
    struct buf version;
    int has_version;
};

static int is_blank(const unsigned char *s, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (!strchr(" \t\n\r\v\f", s[i]) || s[i] == '\0')
            return 0;
    return 1;
}

/* The top-level cniVersion string of the network config, when it is JSON. */
static void scan_config(struct config *c, const unsigned char *s, size_t n)
{
    struct json j = {s, s + n};
    struct field fields[] = {
        {"cniVersion", STRING, &c->version, 0, 0},
    };

    c->version = (struct buf){c->version_data, 0, sizeof c->version_data - 1, 0};
    c->object = is_blank(s, n) || parse_object(&j, fields, COUNT(fields));
    c->has_version = c->object && fields[0].found && memchr(c->version.data, 0, c->version.len) == NULL;
    c->version_data[c->version.len] = 0;
}

static const char *error_version(const struct config *c)
{
    return c->has_version ? (const char *)c->version_data : DEFAULT_ERROR_VERSION;
}

static int print_output(const struct buf *out)
{
    if (out->overflow || write_all(STDOUT_FILENO, out->data, out->len) != 0)
        return -1;
    return 0;
}

/* Print a CNI error; returns the exit status, 1. */
static int cni_error(const struct config *c, long long code, const unsigned char *msg, size_t msg_len)
{
    struct buf out = {out_data, 0, sizeof out_data, 0};
    char number[32];

    snprintf(number, sizeof number, "%lld", code);
    put_str(&out, "{\"cniVersion\": ");
    put_json_cstring(&out, error_version(c));
    put_str(&out, ", \"code\": ");
    put_str(&out, number);
    put_str(&out, ", \"msg\": ");
    put_json_string(&out, msg, msg_len);
    put_str(&out, "}\n");
    print_output(&out);
    return 1;
}

static int cni_errorf(const struct config *c, int code, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

static int cni_errorf(const struct config *c, int code, const char *format, ...)
{
    char msg[2048];
    va_list args;
    int n;

    va_start(args, format);
    n = vsnprintf(msg, sizeof msg, format, args);
    va_end(args);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof msg)
        n = sizeof msg - 1;
    return cni_error(c, code, (const unsigned char *)msg, (size_t)n);
}

/* VERSION without the agent: what cni/spec.py version_answer prints. */
static int answer_version(const struct config *c)
{
    struct buf out = {out_data, 0, sizeof out_data, 0};
    size_t i;

    if (!c->object)
        return cni_errorf(c, ERR_DECODING, "pywg-cni: the network configuration on stdin is not a JSON object");
    put_str(&out, "{\"cniVersion\": ");
    put_json_cstring(&out, c->has_version && c->version.len ? (const char *)c->version_data
                                                             : DEFAULT_CONFIG_VERSION);
    put_str(&out, ", \"supportedVersions\": [");
    for (i = 0; i < COUNT(SUPPORTED_VERSIONS); i++) {
        if (i)
            put_str(&out, ", ");
        put_json_cstring(&out, SUPPORTED_VERSIONS[i]);
    }
    put_str(&out, "]}\n");
    return print_output(&out) == 0 ? 0 : 1;
}

static void build_request(struct buf *request, const unsigned char *in, size_t in_len)
{
    size_t i;
    int first = 1;

    put_str(request, "{\"op\": \"cni\", \"env\": {");
    for (i = 0; i < COUNT(CNI_VARIABLES); i++) {
        const char *value = getenv(CNI_VARIABLES[i]);
        if (value == NULL)
            continue;
        if (!first)
            put_str(request, ", ");
        first = 0;
        put_json_cstring(request, CNI_VARIABLES[i]);
        put_str(request, ": ");
        put_json_cstring(request, value);
    }
    put_str(request, "}, \"stdin\": ");
    put_json_string(request, in, in_len);
    put_str(request, "}");
}

/* The agent's reply line: print its stdout and return its status, or print its error. */
static int relay_reply(const struct config *c, const struct exchange *x)
{
    struct buf stdout_text = {stdout_data, 0, sizeof stdout_data, 0};
    struct buf msg = {msg_data, 0, sizeof msg_data, 0};
    struct field fields[] = {
        {"ok", BOOLEAN, NULL, 0, 0},        {"status", INTEGER, NULL, 0, 0},
        {"stdout", STRING, &stdout_text, 0, 0}, {"code", INTEGER, NULL, 0, 0},
        {"msg", STRING, &msg, 0, 0},
    };
    struct json j = {reply_data, reply_data + x->reply_len};

    if (!parse_object(&j, fields, COUNT(fields)) || !fields[0].found)
        return -1;
    if (!fields[0].number) {
        struct buf text = {text_data, 0, sizeof text_data, 0};
        long long code = fields[3].found && fields[3].number > 0 ? fields[3].number : ERR_INTERNAL;

        put_str(&text, "pywg-cni: the pywg node agent refused the request: ");
        if (fields[4].found)
            put(&text, msg.data, msg.len);
        else
            put_str(&text, "(no reason given)");
        return cni_error(c, code, text.data, text.overflow ? 0 : text.len);
    }
    if (!fields[1].found || fields[1].number < 0 || fields[1].number > 255)
        return -1;
    if (fields[2].found && write_all(STDOUT_FILENO, stdout_text.data, stdout_text.len) != 0)
        return 1;
    return (int)fields[1].number;
}

int main(void)
{
    static struct config config;
    struct buf request = {request_data, 0, sizeof request_data - 1, 0};
    struct exchange x = {DEFAULT_SOCKET, 0, 0, 0};
    const char *command = getenv("CNI_COMMAND"), *override = getenv(SOCKET_ENV);
    const char *what;
    char timeout[64];
    size_t in_len;
    enum outcome outcome;
    int quick, status;

    signal(SIGPIPE, SIG_IGN);
    if (command == NULL)
        command = "";
    read_stdin(&in_len);
    scan_config(&config, stdin_data, in_len > MAX_STDIN ? MAX_STDIN : in_len);
    if (in_len > MAX_STDIN)
        return cni_errorf(&config, ERR_INVALID_CONFIG,
                          "pywg-cni: the network configuration on stdin is larger than %d bytes", MAX_STDIN);
    if (override != NULL && override[0] != '\0')
        x.socket = override;

    build_request(&request, stdin_data, in_len);
    if (request.overflow)
        return cni_errorf(&config, ERR_INVALID_CONFIG,
                          "pywg-cni: the network configuration and CNI variables make a request "
                          "longer than the node agent reads (%d bytes)",
                          MAX_REQUEST - 1);
    request.cap++; /* the room kept for the newline */
    put_byte(&request, '\n');

    quick = strcmp(command, "VERSION") == 0 || strcmp(command, "STATUS") == 0;
    outcome = ask_agent(&x, &request, quick ? QUICK_TIMEOUT_MS : REPLY_TIMEOUT_MS);
    if (outcome == ANSWERED) {
        status = relay_reply(&config, &x);
        if (status >= 0)
            return status;
        outcome = GARBAGE;
    }
    if (strcmp(command, "VERSION") == 0)
        return answer_version(&config);
    if (outcome == NOT_RUNNING) {
        if (strcmp(command, "DEL") == 0 || strcmp(command, "GC") == 0) {
            /* See the top of this file for why this is right. */
            fprintf(stderr, "pywg-cni: no node agent serves %s: nothing to remove\n", x.socket);
            return 0;
        }
        return cni_errorf(&config, strcmp(command, "STATUS") == 0 ? ERR_NOT_AVAILABLE : ERR_TRY_AGAIN_LATER,
                          "pywg-cni: the pywg node agent is not running on this node (socket %s: %s): "
                          "is the pywg DaemonSet ready?",
                          x.socket, strerror(x.error));
    }
    switch (outcome) {
    case NOT_ROOT:
        return cni_errorf(&config, ERR_INTERNAL,
                          "pywg-cni: %s is served by uid %lld, not by root: not the pywg node agent, "
                          "not talking to it",
                          x.socket, x.peer_uid);
    case UNREACHABLE:
        return cni_errorf(&config, ERR_TRY_AGAIN_LATER,
                          "pywg-cni: cannot connect to the pywg node agent (socket %s: %s)", x.socket,
                          strerror(x.error));
    case TIMED_OUT:
        snprintf(timeout, sizeof timeout, "within %d s", (quick ? QUICK_TIMEOUT_MS : REPLY_TIMEOUT_MS) / 1000);
        what = timeout;
        break;
    case CLOSED:
        what = "before it closed the connection";
        break;
    case TOO_LONG:
        what = "in a reply shorter than 4 MiB";
        break;
    default:
        what = "in a form this entrypoint reads: are the DaemonSet and this binary the same version?";
        break;
    }
    return cni_errorf(&config, ERR_TRY_AGAIN_LATER, "pywg-cni: the pywg node agent (socket %s) did not answer %s",
                      x.socket, what);
}
