/*
 * umonitor.c - guest library of umonitor (docs/protocol.md, native protocol v1).
 *
 * How this works
 *
 * Records. umon_logx() encodes a RECORD frame into a scratch buffer and appends
 * it to `ring_buf`, a byte ring of frames the host has not acknowledged. The frames
 * in the ring carry consecutive sequence numbers, oldest first, so the ring is
 * described by its byte head/size and the number of frames: the oldest frame
 * has seq next_seq - ring_frames.
 *
 * Sending. Frames are copied whole from the ring into `tx_buf`, a small linear
 * buffer that send() drains (partial sends only move tx_start). `tx_seq` is the
 * next record to copy and `tx_off` its byte offset in the ring: records below
 * tx_seq are on the wire. Copying whole frames means the ring can let go of any
 * frame at any time without cutting a frame on the wire in half.
 *
 * Acknowledgement. ACK(n) frees the frames up to n. When the ring is full the
 * oldest frame is evicted. An evicted frame not sent yet is lost: it is counted
 * as dropped and a DROPPED frame goes out before the next record. An evicted
 * frame already on the wire is probably fine: it is remembered in `limbo` (runs
 * of sequence numbers) until an ACK covers it, or until the next connection's
 * HELLO is answered; whatever the host does not hold then is dropped too. So
 * logged = acked + dropped + still waiting, exactly.
 *
 * Connection. IDLE -> (connect, non-blocking) CONNECTING -> HANDSHAKE (preface
 * and HELLO sent; waiting for the ACK that says what the host already holds)
 * -> READY (DROPPED if anything was dropped, then replay everything after the
 * ACK, then new records as they come). Any failure closes the socket and goes
 * back to IDLE with a backoff doubling from 100 ms to 5 s; ERROR(1) from the
 * host (unsupported version) stops for good, until umon_init() is called again.
 */
#define _POSIX_C_SOURCE 200809L
/* Unikraft's nolibc defines u_long/u_short/u_char, which lib-lwip's
 * <netinet/tcp.h> uses, only with _DEFAULT_SOURCE; on glibc and musl it just
 * adds the BSD names to POSIX. NetBSD (rumprun) needs nothing beyond POSIX here:
 * the library writes ports and addresses byte by byte instead of using htons(),
 * which NetBSD declares only with _NETBSD_SOURCE or _XOPEN_SOURCE. */
#define _DEFAULT_SOURCE
#define UMON_WIRE_API
#include "umonitor.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#if defined(__Unikraft__) && !defined(BYTE_ORDER)
/* lib-lwip's <netinet/tcp.h> is a BSD header: it lays out struct tcphdr by
 * BYTE_ORDER, which BSD's <sys/types.h> defines and nolibc does not (with
 * neither defined, both layouts are declared and the build fails). */
#ifndef LITTLE_ENDIAN
#define LITTLE_ENDIAN __ORDER_LITTLE_ENDIAN__
#endif
#ifndef BIG_ENDIAN
#define BIG_ENDIAN __ORDER_BIG_ENDIAN__
#endif
#define BYTE_ORDER __BYTE_ORDER__
#endif
#include <netinet/tcp.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef UMON_THREADS
#include <pthread.h>
#endif

/*
 * Unikraft. Built as the Unikraft library (Config.uk and Makefile.uk here), the
 * library reads the umon.* kernel parameters through uklibparam (see
 * umon_init_default()). Unikraft's scheduler is cooperative: the network stack
 * runs only while the application blocks or yields, so the library yields from
 * its own calls until their work is on the wire (coop_settle()). getenv() exists
 * only with posix-environ. There is one process and usually no filesystem, so
 * neither getpid() (which nolibc does not declare) nor /dev/urandom would add
 * anything to the boot id.
 */
#ifdef __Unikraft__
#include <uk/config.h>
#if CONFIG_LIBUMONITOR_PARAMS
#include <uk/libparam.h>
#define UMON_KERNEL_PARAMS 1
#endif
#if CONFIG_LIBUKSCHED
#include <uk/sched.h>
#define UMON_COOPERATIVE 1
#endif
#if CONFIG_LIBPOSIX_ENVIRON
#define UMON_HAVE_GETENV 1
#endif
#else
#define UMON_HAVE_GETENV 1
#define UMON_HAVE_PROCESS 1
#endif

/*
 * rumprun. Its threads are not preempted either: the NetBSD network stack in the
 * rump kernel runs only when the application blocks or calls sched_yield(), so
 * the library settles its backlog the same way as on Unikraft.
 */
#ifdef __RUMPRUN__
#include <sched.h>
#define UMON_COOPERATIVE 1
#define umon_yield() sched_yield()
#elif defined(UMON_COOPERATIVE)
#define umon_yield() uk_sched_yield()
#endif

#ifndef UMON_RING_BYTES
#define UMON_RING_BYTES (256u * 1024u)
#endif
#ifndef UMON_RECORD_MAX
#define UMON_RECORD_MAX 4096u
#endif
#if UMON_RECORD_MAX < 1024 || UMON_RECORD_MAX > 65536
#error "UMON_RECORD_MAX must be 1024-65536"
#endif
#if UMON_RING_BYTES < UMON_RECORD_MAX
#error "UMON_RING_BYTES must hold at least one UMON_RECORD_MAX record"
#endif
#ifdef UMON_COOPERATIVE
#ifndef UMON_COOP_WAIT_MS
#define UMON_COOP_WAIT_MS 20
#endif
#ifndef UMON_COOP_INFLIGHT
#define UMON_COOP_INFLIGHT 2048u
#endif
#endif

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

/* Call stacks (docs/debugging.md): a frame-pointer walk needs GCC's or clang's
 * __builtin_frame_address; without them, or with UMON_STACK_DEPTH 0, records
 * carry no stack and the crash handler is left out. */
#ifndef UMON_STACK_DEPTH
#define UMON_STACK_DEPTH 16
#endif
#if UMON_STACK_DEPTH < 0 || UMON_STACK_DEPTH > 64
#error "UMON_STACK_DEPTH must be 0-64"
#endif
#ifndef UMON_STACK_LEVEL
#define UMON_STACK_LEVEL UMON_ERR
#endif
#if UMON_STACK_DEPTH > 0 && (defined(__GNUC__) || defined(__clang__))
#define UMON_WALK 1
#define UMON_NOINLINE __attribute__((noinline))
#define UMON_FRAME() ((uintptr_t)__builtin_frame_address(0))
#else
#define UMON_FRAME() ((uintptr_t)0)
#endif
#define UMON_FRAME_MAX 65536u /* bytes from one frame to the next, at most */

/* Every function here is built without -finstrument-functions' hooks, which
 * the library itself defines (function tracing, see umon_set_trace). */
#if defined(__GNUC__) || defined(__clang__)
#define UMON_NOTRACE __attribute__((no_instrument_function))
#define UMON_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define UMON_COLD __attribute__((noinline, cold))
#else
#define UMON_NOTRACE
#define UMON_UNLIKELY(x) (x)
#define UMON_COLD
#endif
#define HEX_MAX (2u + 2u * sizeof(uintptr_t)) /* "0x" and the digits */
#define STACK_TEXT_MAX (UMON_STACK_DEPTH * (HEX_MAX + 1u) + 1u)

/* The fatal-signal handler: where faults become POSIX signals with a ucontext
 * (Linux with glibc or musl, x86-64). Unikraft and rumprun never turn a fault
 * into a signal; UMON_CRASH_HANDLER=0 leaves it out anywhere. */
#ifndef UMON_CRASH_HANDLER
#define UMON_CRASH_HANDLER 1
#endif
#if UMON_CRASH_HANDLER && defined(UMON_WALK) && defined(__linux__) && defined(__x86_64__) && \
    !defined(__Unikraft__)
#define UMON_SIGNALS 1
#include <signal.h>
#endif

#define TX_CONTROL_ROOM 64u /* tx space kept free of records for LEVEL, PONG, DROPPED, BYE */
#define TX_BYTES (UMON_RECORD_MAX + TX_CONTROL_ROOM + 1024u) /* + preface and HELLO */
#define RX_BYTES 512u          /* host frames are 6-13 bytes; ERROR reasons get cut */
#define LOCATION_MAX 255u      /* bytes kept of file (its end) and function names */
#define MESSAGE_RESERVE 256u   /* record bytes fields leave for the message */
#define LIMBO_RUNS 32u
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define CONNECT_TIMEOUT_MS 5000
#define HELLO_TIMEOUT_MS 2000
#define CLOSE_FLUSH_MS 2000
#define BYE_LINGER_MS 500
#define WAIT_SLICE_MS 50
#define DEFAULT_NAME "guest"
#define COLLECTOR_MAX 64       /* bytes of "HOST[:PORT]", terminator included */

/* ---- wire codec ---------------------------------------------------------- */

static UMON_NOTRACE void put_u16(unsigned char *p, unsigned long v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static UMON_NOTRACE void put_u32(unsigned char *p, unsigned long v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static UMON_NOTRACE void put_u64(unsigned char *p, unsigned long long v)
{
    int i;
    for (i = 7; i >= 0; i--) {
        p[i] = (unsigned char)v;
        v >>= 8;
    }
}

static UMON_NOTRACE unsigned long get_u32(const unsigned char *p)
{
    return ((unsigned long)p[0] << 24) | ((unsigned long)p[1] << 16) | ((unsigned long)p[2] << 8) |
           (unsigned long)p[3];
}

static UMON_NOTRACE unsigned long long get_u64(const unsigned char *p)
{
    unsigned long long v = 0;
    int i;
    for (i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

UMON_NOTRACE size_t umon_wire_utf8_cut(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t lead = len;
    size_t need;

    /* Step back over at most three continuation bytes to the lead byte. */
    while (lead > 0 && len - lead < 3 && (u[lead - 1] & 0xC0u) == 0x80u)
        lead--;
    if (lead == 0 || u[lead - 1] < 0xC0u)
        return len; /* ASCII or stray continuation bytes: nothing to mend */
    need = u[lead - 1] >= 0xF0u ? 4 : u[lead - 1] >= 0xE0u ? 3 : 2;
    return len - (lead - 1) < need ? lead - 1 : len;
}

UMON_NOTRACE void umon_wire_seal(unsigned char *out, size_t size)
{
    put_u32(out, (unsigned long)(size - 4));
}

UMON_NOTRACE size_t umon_wire_hello(unsigned char *out, size_t cap, const unsigned char boot_id[16],
                       const char *name, const char *token, const char *library, int level,
                       int tracing)
{
    size_t n = name ? strlen(name) : 0;
    size_t t = token ? strlen(token) : 0;
    size_t l = library ? strlen(library) : 0;
    size_t size = 5 + 18 + 1 + n + 1 + t + 1 + l;
    unsigned char *p = out + 5;

    if (n == 0 || n > 255 || t > 255 || l > 255 || size > cap)
        return 0;
    out[4] = UMON_FRAME_HELLO;
    *p++ = 1; /* version */
    /* flags: bit 3 = bits 0-2 hold the level; bit 4 = SET_TRACE understood */
    *p = level >= 0 && level <= 7 ? (unsigned char)(0x08 | level) : 0u;
    if (tracing)
        *p |= UMON_WIRE_HELLO_TRACE;
    p++;
    memcpy(p, boot_id, 16);
    p += 16;
    *p++ = (unsigned char)n;
    memcpy(p, name, n);
    p += n;
    *p++ = (unsigned char)t;
    if (t)
        memcpy(p, token, t);
    p += t;
    *p++ = (unsigned char)l;
    if (l)
        memcpy(p, library, l);
    umon_wire_seal(out, size);
    return size;
}

/* One field at out + pos, its value cut so that the field ends at or before limit;
 * returns the position after it, or 0 when not even the key fits. */
static UMON_NOTRACE size_t put_field(unsigned char *out, size_t limit, size_t pos, const char *key,
                        const char *value)
{
    size_t klen, vlen, room;

    klen = strlen(key);
    if (klen > 255)
        klen = umon_wire_utf8_cut(key, 255);
    if (pos + 3 + klen > limit)
        return 0;
    room = limit - pos - 3 - klen;
    vlen = strlen(value);
    if (vlen > 0xFFFFu || vlen > room)
        vlen = umon_wire_utf8_cut(value, room < 0xFFFFu ? room : 0xFFFFu);
    out[pos] = (unsigned char)klen;
    put_u16(out + pos + 1, (unsigned long)vlen);
    memcpy(out + pos + 3, key, klen);
    if (vlen)
        memcpy(out + pos + 3 + klen, value, vlen);
    return pos + 3 + klen + vlen;
}

UMON_NOTRACE size_t umon_wire_record_begin(unsigned char *out, size_t cap, const struct umon_wire_record *r,
                              size_t reserve)
{
    size_t limit = cap > reserve ? cap - reserve : 0;
    size_t pos = 5 + UMON_WIRE_RECORD_HEAD;
    unsigned char *h = out + 5;
    unsigned count = 0;
    unsigned i;

    if (r->file_len > 0xFFFFu || r->func_len > 0xFFFFu || pos + r->file_len + r->func_len > cap)
        return 0;
    out[4] = UMON_FRAME_RECORD;
    put_u64(h, r->seq);
    put_u64(h + 8, r->mono_ns);
    put_u64(h + 16, r->wall_valid ? (unsigned long long)r->wall_ns : 0u);
    h[24] = (unsigned char)r->severity;
    h[25] = (unsigned char)r->kind;
    h[26] = r->wall_valid ? 1u : 0u;
    put_u32(h + 28, r->line);
    put_u16(h + 32, (unsigned long)r->file_len);
    put_u16(h + 34, (unsigned long)r->func_len);
    if (r->file_len)
        memcpy(out + pos, r->file, r->file_len);
    pos += r->file_len;
    if (r->func_len)
        memcpy(out + pos, r->func, r->func_len);
    pos += r->func_len;

    for (i = 0; i < r->nfields && count < 255; i++) {
        const char *key = r->fields[i].key;
        const char *value = r->fields[i].value ? r->fields[i].value : "";
        size_t next;

        if (key == NULL || key[0] == '\0')
            continue;
        next = put_field(out, limit, pos, key, value);
        if (next == 0)
            break;
        pos = next;
        count++;
    }
    h[27] = (unsigned char)count;
    return pos;
}

UMON_NOTRACE size_t umon_wire_record_finish(unsigned char *out, size_t cap, size_t at, const char *message,
                               size_t message_len)
{
    size_t room = cap > at ? cap - at : 0;

    if (message_len > room)
        message_len = umon_wire_utf8_cut(message, room);
    if (message_len)
        memcpy(out + at, message, message_len);
    umon_wire_seal(out, at + message_len);
    return at + message_len;
}

UMON_NOTRACE size_t umon_wire_dropped(unsigned char *out, unsigned long long count, unsigned long long through)
{
    out[4] = UMON_FRAME_DROPPED;
    put_u64(out + 5, count);
    put_u64(out + 13, through);
    umon_wire_seal(out, 21);
    return 21;
}

UMON_NOTRACE size_t umon_wire_level(unsigned char *out, unsigned level)
{
    out[4] = UMON_FRAME_LEVEL;
    out[5] = (unsigned char)level;
    umon_wire_seal(out, 6);
    return 6;
}

UMON_NOTRACE size_t umon_wire_trace(unsigned char *out, unsigned on, unsigned nranges)
{
    out[4] = UMON_FRAME_TRACE;
    out[5] = (unsigned char)(on != 0);
    out[6] = (unsigned char)nranges;
    umon_wire_seal(out, 7);
    return 7;
}

UMON_NOTRACE size_t umon_wire_bye(unsigned char *out)
{
    out[4] = UMON_FRAME_BYE;
    umon_wire_seal(out, 5);
    return 5;
}

UMON_NOTRACE size_t umon_wire_u64(unsigned char *out, unsigned type, unsigned long long value)
{
    out[4] = (unsigned char)type;
    put_u64(out + 5, value);
    umon_wire_seal(out, 13);
    return 13;
}

UMON_NOTRACE size_t umon_wire_error(unsigned char *out, size_t cap, unsigned code, const char *reason)
{
    size_t n = reason ? strlen(reason) : 0;

    if (cap < 7)
        return 0;
    if (n > cap - 7)
        n = umon_wire_utf8_cut(reason, cap - 7);
    out[4] = UMON_FRAME_ERROR;
    put_u16(out + 5, code);
    if (n)
        memcpy(out + 7, reason, n);
    umon_wire_seal(out, 7 + n);
    return 7 + n;
}

UMON_NOTRACE int umon_wire_decode_untrusted(const unsigned char *buf, size_t len, struct umon_wire_frame *out,
                               size_t *used)
{
    unsigned long length;
    size_t body, size;

    out->type = 0;
    out->value = 0;
    out->reason = NULL;
    out->reason_len = 0;
    out->anchor = 0;
    out->nranges = 0;
    *used = 0;
    if (len < 4)
        return UMON_WIRE_NEED_MORE;
    length = get_u32(buf);
    if (length == 0 || length > UMON_WIRE_MAX_FRAME - 4)
        return UMON_WIRE_INVALID;
    if (len < 5)
        return UMON_WIRE_NEED_MORE;
    body = (size_t)length - 1;
    size = (size_t)length + 4;
    switch (buf[4]) {
    case UMON_FRAME_ACK:
    case UMON_FRAME_PING:
    case UMON_FRAME_PONG:
        if (body != 8)
            return UMON_WIRE_INVALID;
        break;
    case UMON_FRAME_SET_LEVEL:
        if (body != 1)
            return UMON_WIRE_INVALID;
        break;
    case UMON_FRAME_SET_TRACE: /* on u8, count u8, anchor u64, count x (start, end) */
        if (body < 10 || (body - 10) % 16 != 0 || (body - 10) / 16 > UMON_TRACE_RANGES)
            return UMON_WIRE_INVALID;
        break;
    case UMON_FRAME_ERROR:
        if (body < 2)
            return UMON_WIRE_INVALID;
        break;
    default:
        return UMON_WIRE_INVALID; /* unknown, or a guest -> host frame */
    }
    out->type = buf[4];
    if (out->type == UMON_FRAME_ERROR && len >= 7) {
        out->value = ((unsigned long long)buf[5] << 8) | buf[6];
        out->reason = buf + 7;
        out->reason_len = (len < size ? len : size) - 7;
    }
    if (len < size)
        return UMON_WIRE_NEED_MORE;
    if (out->type == UMON_FRAME_SET_LEVEL) {
        if (buf[5] > 7)
            return UMON_WIRE_INVALID;
        out->value = buf[5];
    } else if (out->type == UMON_FRAME_SET_TRACE) {
        unsigned i;

        if (buf[5] > 1 || buf[6] != (body - 10) / 16)
            return UMON_WIRE_INVALID;
        out->value = buf[5];
        out->anchor = get_u64(buf + 7);
        out->nranges = buf[6];
        for (i = 0; i < out->nranges; i++) {
            out->ranges[i][0] = get_u64(buf + 15 + 16 * i);
            out->ranges[i][1] = get_u64(buf + 23 + 16 * i);
            if (out->ranges[i][0] >= out->ranges[i][1])
                return UMON_WIRE_INVALID;
        }
    } else if (out->type != UMON_FRAME_ERROR) {
        out->value = get_u64(buf + 5);
    }
    *used = size;
    return UMON_WIRE_FRAME;
}

/* ---- state ---------------------------------------------------------------- */

enum conn_state { IDLE, CONNECTING, HANDSHAKE, READY };

struct limbo_run {
    unsigned long long lo, hi;
};

static struct {
    /* configuration */
    int configured;
    int stopped; /* the host does not speak our version; wait for umon_init() */
    int closing; /* umon_close() is saying BYE: send nothing else */
    struct sockaddr_in addr;
    char name[256];
    char token[256];
    int level;

    /* boot */
    int boot_ready;
    unsigned char boot_id[16];
    unsigned long long next_seq;

    /* connection */
    int fd;
    enum conn_state state;
    long long retry_at_ms; /* IDLE: next attempt */
    long long deadline_ms; /* CONNECTING: give up; HANDSHAKE: stop waiting for the ACK */
    long backoff_ms;
    int connected_before;

    /* unacknowledged frames (bytes in ring_buf) */
    size_t ring_head, ring_used;
    unsigned long long ring_frames;
    unsigned long long acked_seq;
    unsigned long long tx_seq; /* next record to copy into tx */
    unsigned long long wire_seq; /* highest record ever copied to any connection */
    size_t tx_off;             /* its offset from ring_head */

    /* records evicted while on the wire, not yet acknowledged */
    struct limbo_run limbo[LIMBO_RUNS];
    unsigned limbo_runs;

    /* drops */
    unsigned long long dropped_through;
    int dropped_pending;

    int pong_pending;
    unsigned long long pong_nonce;
    int level_pending; /* answer SET_LEVEL with LEVEL */
    int trace_pending; /* answer SET_TRACE with TRACE */

    size_t tx_start, tx_end; /* bytes of tx_buf still to send */
    size_t rx_len;           /* bytes in rx_buf */

    struct umon_stats stats;
} S = {
    .level = UMON_DEBUG,
    .next_seq = 1,
    .fd = -1,
    .state = IDLE,
    .backoff_ms = BACKOFF_MIN_MS,
    .tx_seq = 1,
};

/* The buffers live outside S so that they stay in zero-filled storage (.bss)
 * instead of making the program image UMON_RING_BYTES larger. */
static unsigned char ring_buf[UMON_RING_BYTES];
static unsigned char tx_buf[TX_BYTES];
static unsigned char rx_buf[RX_BYTES];
static unsigned char scratch[UMON_RECORD_MAX + 1]; /* + vsnprintf's terminator */

/* Tracing (see umon_set_trace): the flag the hooks test, the address ranges
 * (run-time addresses) an event's function must be in when there are any, and
 * whether the library is at work (between LOCK and UNLOCK): a hook that fires
 * then (instrumented code the library calls, a network stack under it, another
 * thread) skips its event, counted as filtered, instead of re-entering. */
static volatile int trace_on;
static unsigned trace_nranges;
static uintptr_t trace_ranges[UMON_TRACE_RANGES][2];
static volatile int in_library;

#ifdef UMON_THREADS
static pthread_mutex_t umon_mutex = PTHREAD_MUTEX_INITIALIZER;
#define LOCK() ((void)pthread_mutex_lock(&umon_mutex), in_library = 1)
#define UNLOCK() (in_library = 0, (void)pthread_mutex_unlock(&umon_mutex))
#else
#define LOCK() ((void)(in_library = 1))
#define UNLOCK() ((void)(in_library = 0))
#endif

static UMON_NOTRACE long long clock_ns(clockid_t clock, int *ok)
{
    struct timespec ts;

    if (clock_gettime(clock, &ts) != 0) {
        if (ok)
            *ok = 0;
        return 0;
    }
    if (ok)
        *ok = 1;
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static UMON_NOTRACE long long now_ms(void)
{
    return clock_ns(CLOCK_MONOTONIC, NULL) / 1000000LL;
}

/* splitmix64: spreads weak seeds over 64 bits. */
static UMON_NOTRACE unsigned long long mix64(unsigned long long x)
{
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

/* Fill buf from /dev/urandom; returns the bytes read. */
static UMON_NOTRACE size_t read_urandom(unsigned char *buf, size_t len)
{
#ifdef UMON_HAVE_PROCESS
    size_t got = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return 0;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n > 0)
            got += (size_t)n;
        else if (!(n < 0 && errno == EINTR))
            break;
    }
    close(fd);
    return got;
#else
    (void)buf;
    (void)len;
    return 0;
#endif
}

/* The process id, or 0 where there is only one process. */
static UMON_NOTRACE unsigned long long process_id(void)
{
#ifdef UMON_HAVE_PROCESS
    return (unsigned long long)getpid();
#else
    return 0;
#endif
}

static UMON_NOTRACE void ensure_boot(void)
{
    static unsigned long long counter;

    if (S.boot_ready)
        return;
    if (read_urandom(S.boot_id, sizeof S.boot_id) < sizeof S.boot_id) {
        int local = 0;
        unsigned long long a, b;

        a = mix64((unsigned long long)clock_ns(CLOCK_MONOTONIC, NULL) ^ (process_id() << 32));
        b = mix64((unsigned long long)clock_ns(CLOCK_REALTIME, NULL) ^ (unsigned long long)(size_t)&S ^
                  ((unsigned long long)(size_t)&local << 17) ^ ++counter);
        a = mix64(a ^ b);
        put_u64(S.boot_id, a);
        put_u64(S.boot_id + 8, mix64(b ^ a));
    }
    S.boot_ready = 1;
}

/* ---- ring ------------------------------------------------------------------- */

static UMON_NOTRACE void ring_read(size_t off, unsigned char *dst, size_t n)
{
    size_t at = (S.ring_head + off) % UMON_RING_BYTES;
    size_t first = UMON_RING_BYTES - at < n ? UMON_RING_BYTES - at : n;

    memcpy(dst, ring_buf + at, first);
    if (first < n)
        memcpy(dst + first, ring_buf, n - first);
}

static UMON_NOTRACE void ring_write(size_t off, const unsigned char *src, size_t n)
{
    size_t at = (S.ring_head + off) % UMON_RING_BYTES;
    size_t first = UMON_RING_BYTES - at < n ? UMON_RING_BYTES - at : n;

    memcpy(ring_buf + at, src, first);
    if (first < n)
        memcpy(ring_buf, src + first, n - first);
}

/* Size of the frame starting off bytes after the head. */
static UMON_NOTRACE size_t ring_frame_size(size_t off)
{
    unsigned char head[4];

    ring_read(off, head, 4);
    return (size_t)get_u32(head) + 4;
}

static UMON_NOTRACE unsigned long long ring_first_seq(void)
{
    return S.next_seq - S.ring_frames;
}

/* Remove the oldest frame; was_sent tells whether it is on the wire. */
static UMON_NOTRACE void ring_pop(int *was_sent)
{
    unsigned long long seq = ring_first_seq();
    size_t size = ring_frame_size(0);

    *was_sent = seq < S.tx_seq;
    if (*was_sent)
        S.tx_off -= size;
    else
        S.tx_seq = seq + 1; /* tx_off stays 0: the next frame becomes the head */
    S.ring_head = (S.ring_head + size) % UMON_RING_BYTES;
    S.ring_used -= size;
    S.ring_frames--;
}

static UMON_NOTRACE void note_dropped(unsigned long long seq, unsigned long long count)
{
    S.stats.dropped += count;
    if (seq > S.dropped_through)
        S.dropped_through = seq;
    S.dropped_pending = 1;
}

static UMON_NOTRACE void limbo_add(unsigned long long seq)
{
    if (S.limbo_runs > 0 && S.limbo[S.limbo_runs - 1].hi + 1 == seq) {
        S.limbo[S.limbo_runs - 1].hi = seq;
    } else if (S.limbo_runs < LIMBO_RUNS) {
        S.limbo[S.limbo_runs].lo = seq;
        S.limbo[S.limbo_runs].hi = seq;
        S.limbo_runs++;
    } else {
        note_dropped(seq, 1); /* no room to remember it: assume the worst */
    }
}

/* ACK(seq) settles the limbo runs it covers. */
static UMON_NOTRACE void limbo_ack(unsigned long long seq)
{
    unsigned done = 0;

    while (done < S.limbo_runs && S.limbo[done].lo <= seq) {
        struct limbo_run *run = &S.limbo[done];
        if (run->hi <= seq) {
            S.stats.acked += run->hi - run->lo + 1;
            done++;
        } else {
            S.stats.acked += seq - run->lo + 1;
            run->lo = seq + 1;
            break;
        }
    }
    if (done) {
        memmove(S.limbo, S.limbo + done, (S.limbo_runs - done) * sizeof S.limbo[0]);
        S.limbo_runs -= done;
    }
}

static UMON_NOTRACE void limbo_drop_all(void)
{
    unsigned i;

    for (i = 0; i < S.limbo_runs; i++)
        note_dropped(S.limbo[i].hi, S.limbo[i].hi - S.limbo[i].lo + 1);
    S.limbo_runs = 0;
}

static UMON_NOTRACE void ring_push(const unsigned char *frame, size_t size)
{
    int was_sent;

    while (UMON_RING_BYTES - S.ring_used < size) {
        unsigned long long seq = ring_first_seq();
        ring_pop(&was_sent);
        /* A record that went out on this or an earlier connection may be held by the
         * host: limbo, settled by an ACK (the HELLO's one after a reconnect). */
        if (was_sent || seq <= S.wire_seq)
            limbo_add(seq);
        else
            note_dropped(seq, 1);
    }
    ring_write(S.ring_used, frame, size);
    S.ring_used += size;
    S.ring_frames++;
}

static UMON_NOTRACE void apply_ack(unsigned long long seq)
{
    int was_sent;

    if (seq >= S.next_seq)
        seq = S.next_seq - 1; /* never settle records not logged yet */
    if (seq <= S.acked_seq)
        return;
    S.acked_seq = seq;
    limbo_ack(seq);
    while (S.ring_frames > 0 && ring_first_seq() <= seq) {
        ring_pop(&was_sent);
        S.stats.acked++;
    }
}

/* ---- connection ------------------------------------------------------------ */

static UMON_NOTRACE size_t tx_room(void)
{
    if (S.tx_start > 0) {
        memmove(tx_buf, tx_buf + S.tx_start, S.tx_end - S.tx_start);
        S.tx_end -= S.tx_start;
        S.tx_start = 0;
    }
    return TX_BYTES - S.tx_end;
}

static UMON_NOTRACE void reset_link(void)
{
    S.tx_start = S.tx_end = 0;
    S.rx_len = 0;
    S.tx_seq = ring_first_seq();
    S.tx_off = 0;
    S.pong_pending = 0;
    S.level_pending = 0;
    S.trace_pending = 0;
}

/* Close the connection; retry after the backoff unless stopped. */
static UMON_NOTRACE void drop_connection(void)
{
    long long now = now_ms();

    if (S.fd >= 0)
        close(S.fd);
    S.fd = -1;
    S.state = IDLE;
    reset_link();
    S.retry_at_ms = now + S.backoff_ms;
    S.backoff_ms = S.backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : S.backoff_ms * 2;
}

/* Tell the host why we hang up (best effort, never blocks), then hang up. */
static UMON_NOTRACE void fail_connection(unsigned code, const char *reason)
{
    unsigned char frame[64];
    size_t n = umon_wire_error(frame, sizeof frame, code, reason);

    if (S.fd >= 0 && S.tx_start == S.tx_end)
        (void)send(S.fd, frame, n, MSG_NOSIGNAL);
    drop_connection();
}

static UMON_NOTRACE void on_connected(void)
{
    size_t n;

    S.state = HANDSHAKE;
    S.deadline_ms = now_ms() + HELLO_TIMEOUT_MS;
    reset_link();
    memcpy(tx_buf, UMON_WIRE_PREFACE, UMON_WIRE_PREFACE_LEN);
    n = umon_wire_hello(tx_buf + UMON_WIRE_PREFACE_LEN, TX_BYTES - UMON_WIRE_PREFACE_LEN, S.boot_id,
                        S.name, S.token, UMON_LIBRARY, S.level, 1);
    S.tx_end = UMON_WIRE_PREFACE_LEN + n;
    if (S.connected_before)
        S.stats.reconnects++;
    S.connected_before = 1;
}

/* The host answered HELLO (or never did): settle what it holds, start replay. */
static UMON_NOTRACE void handshake_done(int have_ack, unsigned long long seq)
{
    if (have_ack)
        apply_ack(seq);
    limbo_drop_all(); /* sent on a lost connection and not held by the host */
    if (S.stats.dropped > 0)
        S.dropped_pending = 1;
    S.state = READY;
    S.backoff_ms = BACKOFF_MIN_MS;
}

static UMON_NOTRACE void start_connect(void)
{
    int flags;
    int one = 1;

    S.fd = socket(AF_INET, SOCK_STREAM, 0);
    if (S.fd < 0) {
        drop_connection();
        return;
    }
    flags = fcntl(S.fd, F_GETFL);
    if (flags < 0 || fcntl(S.fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        drop_connection();
        return;
    }
    (void)fcntl(S.fd, F_SETFD, FD_CLOEXEC);
    (void)setsockopt(S.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(S.fd, (const struct sockaddr *)&S.addr, sizeof S.addr) == 0) {
        on_connected();
    } else if (errno == EINPROGRESS || errno == EINTR) {
        S.state = CONNECTING;
        S.deadline_ms = now_ms() + CONNECT_TIMEOUT_MS;
    } else {
        drop_connection();
    }
}

static UMON_NOTRACE void check_connect(void)
{
    struct pollfd p;
    int err = 0;
    socklen_t len = sizeof err;

    p.fd = S.fd;
    p.events = POLLOUT;
    p.revents = 0;
    if (poll(&p, 1, 0) > 0 && (p.revents & (POLLOUT | POLLERR | POLLHUP))) {
        if (getsockopt(S.fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0)
            on_connected();
        else
            drop_connection();
    } else if (now_ms() >= S.deadline_ms) {
        drop_connection();
    }
}

/* SET_TRACE: ranges of link-time addresses move by the load bias, found from
 * where umon_logx is now and where it was linked (the frame's anchor). Ranges
 * are stored before the flag goes on. */
static UMON_NOTRACE void apply_trace(const struct umon_wire_frame *f)
{
    uintptr_t bias = f->anchor != 0 ? (uintptr_t)&umon_logx - (uintptr_t)f->anchor : 0u;
    unsigned i;

    trace_on = 0;
    for (i = 0; i < f->nranges; i++) {
        trace_ranges[i][0] = (uintptr_t)f->ranges[i][0] + bias;
        trace_ranges[i][1] = (uintptr_t)f->ranges[i][1] + bias;
    }
    trace_nranges = f->nranges;
    trace_on = (int)f->value;
}

/* Handle one decoded host frame; returns -1 when the connection must go. */
static UMON_NOTRACE int handle_frame(const struct umon_wire_frame *f)
{
    switch (f->type) {
    case UMON_FRAME_ACK:
        if (S.state == HANDSHAKE)
            handshake_done(1, f->value);
        else
            apply_ack(f->value);
        return 0;
    case UMON_FRAME_SET_LEVEL:
        S.level = (int)f->value;
        S.level_pending = 1;
        return 0;
    case UMON_FRAME_SET_TRACE:
        apply_trace(f);
        S.trace_pending = 1;
        return 0;
    case UMON_FRAME_PING:
        S.pong_pending = 1;
        S.pong_nonce = f->value;
        return 0;
    case UMON_FRAME_PONG:
        return 0; /* we send no PING; an answer to nothing is harmless */
    default: /* ERROR */
        if (f->value == 1)
            S.stopped = 1;
        return -1;
    }
}

/* Decode what rx holds; returns -1 when the connection must go. */
static UMON_NOTRACE int process_rx(void)
{
    struct umon_wire_frame f;
    size_t used;

    for (;;) {
        int r = umon_wire_decode_untrusted(rx_buf, S.rx_len, &f, &used);
        if (r == UMON_WIRE_INVALID) {
            fail_connection(2, "malformed frame");
            return -1;
        }
        if (r == UMON_WIRE_NEED_MORE) {
            if (S.rx_len < RX_BYTES)
                return 0;
            if (f.type == UMON_FRAME_ERROR) { /* a long reason: act on its start */
                handle_frame(&f);
                drop_connection();
                return -1;
            }
            fail_connection(3, "frame too large");
            return -1;
        }
        if (handle_frame(&f) < 0) {
            drop_connection();
            return -1;
        }
        S.rx_len -= used;
        memmove(rx_buf, rx_buf + used, S.rx_len);
    }
}

/* Read whatever arrived; returns -1 when the connection is gone. */
static UMON_NOTRACE int receive(void)
{
    for (;;) {
        ssize_t n = recv(S.fd, rx_buf + S.rx_len, RX_BYTES - S.rx_len, 0);
        if (n > 0) {
            S.rx_len += (size_t)n;
            if (process_rx() < 0)
                return -1;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return 0;
        } else {
            drop_connection(); /* closed by the host, or an error */
            return -1;
        }
    }
}

/* Send from tx; returns -1 (connection dropped) on a send error. */
static UMON_NOTRACE int send_tx(void)
{
    while (S.tx_start < S.tx_end) {
        ssize_t n = send(S.fd, tx_buf + S.tx_start, S.tx_end - S.tx_start, MSG_NOSIGNAL);
        if (n > 0)
            S.tx_start += (size_t)n;
        else if (n < 0 && errno == EINTR)
            continue;
        else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        else {
            drop_connection();
            return -1;
        }
    }
    S.tx_start = S.tx_end = 0;
    return 0;
}

/* Move frames into tx in protocol order; returns whether anything was added. */
static UMON_NOTRACE int refill_tx(void)
{
    size_t room = tx_room();
    int added = 0;

    /* LEVEL first: the host sends SET_LEVEL, then a PING whose PONG ends its wait. */
    if (S.level_pending && room >= 6) {
        S.tx_end += umon_wire_level(tx_buf + S.tx_end, (unsigned)S.level);
        S.level_pending = 0;
        room -= 6;
        added = 1;
    }
    if (S.trace_pending && room >= 7) {
        S.tx_end += umon_wire_trace(tx_buf + S.tx_end, (unsigned)trace_on, trace_nranges);
        S.trace_pending = 0;
        room -= 7;
        added = 1;
    }
    if (S.pong_pending && room >= 13) {
        S.tx_end += umon_wire_u64(tx_buf + S.tx_end, UMON_FRAME_PONG, S.pong_nonce);
        S.pong_pending = 0;
        room -= 13;
        added = 1;
    }
    if (S.state != READY)
        return added;
    if (S.dropped_pending && room >= 21) {
        S.tx_end += umon_wire_dropped(tx_buf + S.tx_end, S.stats.dropped, S.dropped_through);
        S.dropped_pending = 0;
        room -= 21;
        added = 1;
    }
    if (S.dropped_pending)
        return added; /* DROPPED must precede the next record */
    while (S.tx_seq < S.next_seq) {
        size_t size = ring_frame_size(S.tx_off);
        if (size + TX_CONTROL_ROOM > room)
            break;
        ring_read(S.tx_off, tx_buf + S.tx_end, size);
        S.tx_end += size;
        room -= size;
        S.tx_off += size;
        if (S.tx_seq > S.wire_seq)
            S.wire_seq = S.tx_seq;
        S.tx_seq++;
        S.stats.sent++;
        added = 1;
    }
    return added;
}

static UMON_NOTRACE void pump(void)
{
    for (;;) {
        if (send_tx() < 0 || S.tx_start != S.tx_end)
            return; /* gone, or the socket is full */
        if (!refill_tx())
            return;
    }
}

static UMON_NOTRACE int poll_locked(void)
{
    if (!S.configured || S.stopped || S.closing)
        return -1;
    if (S.state == IDLE && now_ms() >= S.retry_at_ms)
        start_connect();
    if (S.state == CONNECTING)
        check_connect();
    if (S.state == HANDSHAKE || S.state == READY) {
        if (receive() == 0 && S.state == HANDSHAKE && now_ms() >= S.deadline_ms)
            handshake_done(0, 0);
    }
    if (S.state == HANDSHAKE || S.state == READY)
        pump();
    return S.state == HANDSHAKE || S.state == READY ? 0 : -1;
}

static UMON_NOTRACE int all_settled(void)
{
    return S.ring_frames == 0 && S.limbo_runs == 0;
}

/* Block in poll() for at most ms, waking up for socket activity. */
static UMON_NOTRACE void wait_unlocked(int fd, short events, int ms)
{
    struct pollfd p;

    p.fd = fd;
    p.events = events;
    p.revents = 0;
    UNLOCK();
    (void)poll(&p, fd >= 0 ? 1u : 0u, ms);
    LOCK();
}

static UMON_NOTRACE int flush_locked(int timeout_ms)
{
    long long deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);

    for (;;) {
        long long now, wait;
        short events = POLLIN;

        (void)poll_locked();
        if (all_settled())
            return 0;
        if (!S.configured || S.stopped)
            return -1;
        now = now_ms();
        if (now >= deadline)
            return -1;
        wait = deadline - now;
        if (wait > WAIT_SLICE_MS)
            wait = WAIT_SLICE_MS;
        if (S.state == IDLE && S.retry_at_ms - now < wait)
            wait = S.retry_at_ms > now ? S.retry_at_ms - now : 0;
        if (S.state == CONNECTING || S.tx_start != S.tx_end)
            events |= POLLOUT;
        wait_unlocked(S.state == IDLE ? -1 : S.fd, events, (int)wait);
    }
}

/*
 * Cooperative scheduling (Unikraft). The network stack runs in threads of its
 * own: it takes in packets (the SYN-ACK, TCP and host ACKs) only while the
 * application thread blocks or yields. An application that logs and then
 * computes without ever blocking would leave its records in this library, or in
 * lwIP's send queue waiting for a TCP acknowledgement, for as long as it runs.
 * So each call that makes progress (umon_log*, umon_init, umon_poll) yields
 * until its work is out, for at most UMON_COOP_WAIT_MS: until the connection is
 * up, every record is handed to the stack, and at most UMON_COOP_INFLIGHT bytes
 * of records are on the wire without the host's ACK. While that backlog plus
 * the next record fits lwIP's congestion window (4380 bytes at first with MSS
 * 1460, growing with every acknowledgement), lwIP never holds a segment back
 * for an acknowledgement nobody would process: it transmits each record during
 * the call that hands it over. Without a backlog a call does not yield at all;
 * IDLE (waiting to retry) has no backlog because nothing can progress before
 * the retry time.
 */
#ifdef UMON_COOPERATIVE
static UMON_NOTRACE int coop_backlog(void)
{
    if (!S.configured || S.stopped || S.closing || S.state == IDLE)
        return 0;
    if (S.state != READY)
        return 1; /* connecting, or waiting for the ACK to HELLO */
    return S.tx_start != S.tx_end || S.tx_seq < S.next_seq || S.pong_pending ||
           S.level_pending || S.trace_pending || S.tx_off > UMON_COOP_INFLIGHT;
}

/* Yield until the backlog is gone or the time is up; returns the result of the
 * last poll_locked(), `polled` when none was needed. */
static UMON_NOTRACE int coop_settle(int polled)
{
    long long deadline;

    if (!coop_backlog())
        return polled;
    deadline = clock_ns(CLOCK_MONOTONIC, NULL) + UMON_COOP_WAIT_MS * 1000000LL;
    do {
        UNLOCK();
        umon_yield();
        LOCK();
        polled = poll_locked();
    } while (coop_backlog() && clock_ns(CLOCK_MONOTONIC, NULL) < deadline);
    return polled;
}
#else
#define coop_settle(polled) (polled)
#endif

/* ---- call stacks ------------------------------------------------------------ */

/*
 * A frame-pointer walk. With frame pointers, each frame starts with the caller's
 * saved frame pointer (fp[0]) followed by the return address into the caller
 * (fp[1]); frames lie at rising addresses towards the stack's base. The walk
 * stops at `max` frames, at a zero return address, and at a next frame that is
 * not above the current one, not word-aligned, or more than UMON_FRAME_MAX
 * above it: code built without frame pointers ends the walk early instead of
 * sending it anywhere, and only words inside that window above the current
 * frame are ever read. Reads memory only: safe in a signal handler.
 */
#ifdef UMON_WALK
static UMON_NOTRACE UMON_NOINLINE unsigned walk_frames(uintptr_t fp, uintptr_t *out, unsigned max)
{
    unsigned n = 0;

    while (n < max && fp != 0 && (fp & (sizeof(uintptr_t) - 1u)) == 0) {
        const uintptr_t *frame = (const uintptr_t *)fp;
        uintptr_t next = frame[0], ret = frame[1];

        if (ret == 0)
            break;
        out[n++] = ret;
        if (next <= fp || next - fp > UMON_FRAME_MAX)
            break;
        fp = next;
    }
    return n;
}
#endif

/* "0x" and v in lower-case hex at p; returns the end. Async-signal-safe. */
static UMON_NOTRACE char *put_hex(char *p, uintptr_t v)
{
    char digits[2 * sizeof(uintptr_t)];
    unsigned n = 0;

    *p++ = '0';
    *p++ = 'x';
    do {
        digits[n++] = "0123456789abcdef"[v & 15u];
        v >>= 4;
    } while (v != 0 && n < sizeof digits);
    while (n > 0)
        *p++ = digits[--n];
    return p;
}

/*
 * The umon.stack field of a record logged by the public entry whose frame is
 * fp: the return addresses, innermost (into the function that logged) first,
 * space-separated; "" when the record gets none (severity above
 * UMON_STACK_LEVEL and not a crash record, or no walk on this compiler).
 */
#ifdef UMON_WALK
static UMON_NOTRACE UMON_NOINLINE void stack_text(int severity, int kind, uintptr_t fp, char *out)
{
    uintptr_t frames[UMON_STACK_DEPTH];
    unsigned n, i;
    char *p = out;

    out[0] = '\0';
    if (severity > UMON_STACK_LEVEL && kind != UMON_KIND_CRASH)
        return;
    n = walk_frames(fp, frames, UMON_STACK_DEPTH);
    for (i = 0; i < n; i++) {
        if (i > 0)
            *p++ = ' ';
        p = put_hex(p, frames[i]);
    }
    *p = '\0';
}
#else
static UMON_NOTRACE void stack_text(int severity, int kind, uintptr_t fp, char *out)
{
    (void)severity;
    (void)kind;
    (void)fp;
    out[0] = '\0';
}
#endif

/* umon.text: where umon_logx is at run time, from which the host finds the load
 * bias of a position-independent program (its symbol's value subtracted). */
static UMON_NOTRACE void text_address(char *out)
{
    *put_hex(out, (uintptr_t)&umon_logx) = '\0';
}

/*
 * The fatal-signal handler. On SIGSEGV, SIGBUS, SIGILL, SIGFPE or SIGABRT it
 * writes one line to standard error with write(2), then lets the signal kill
 * the process as it would have (the default action restored, by SA_RESETHAND
 * and by the handler itself; the signal, raised again, is delivered at once or
 * when the handler returns):
 *
 *   umon-crash: signal 11 code 1 addr 0x0 pc 0x401b9e sp 0x7ffd6c0f1bd8
 *               fp 0x7ffd6c0f1be0 text 0x401a90 stack 0x401bc8 0x4018f4
 *
 * (one line) with the faulting pc, stack and frame pointers from the ucontext,
 * the walk from that frame pointer, and umon.text's address. Everything here is
 * async-signal-safe: no stdio, no lock, no library state; it runs on its own
 * stack, so a stack overflow is reported too. The first frame must lie within
 * UMON_FRAME_MAX above the stack pointer, or the walk is not tried: in code
 * without frame pointers the register holds data.
 */
#ifdef UMON_SIGNALS
/* glibc and musl lay out x86-64's general registers as the kernel's sigcontext
 * does; REG_RBP and friends are GNU names, so the indices are written here. */
#define UMON_GREG_RBP 10
#define UMON_GREG_RSP 15
#define UMON_GREG_RIP 16
#define CRASH_LINE_MAX (160u + 6u * HEX_MAX + STACK_TEXT_MAX)

static char crash_stack[16384];
static int crash_handler_installed;
static volatile sig_atomic_t crash_reported;
static const int crash_signals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};

static UMON_NOTRACE char *put_text(char *p, const char *text)
{
    while (*text != '\0')
        *p++ = *text++;
    return p;
}

static UMON_NOTRACE char *put_decimal(char *p, long v)
{
    char digits[24];
    unsigned long u = v < 0 ? 0ul - (unsigned long)v : (unsigned long)v;
    unsigned n = 0;

    if (v < 0)
        *p++ = '-';
    do {
        digits[n++] = (char)('0' + (int)(u % 10u));
        u /= 10u;
    } while (u != 0);
    while (n > 0)
        *p++ = digits[--n];
    return p;
}

static UMON_NOTRACE void on_fatal_signal(int sig, siginfo_t *info, void *context)
{
    const ucontext_t *uc = (const ucontext_t *)context;
    uintptr_t pc = (uintptr_t)uc->uc_mcontext.gregs[UMON_GREG_RIP];
    uintptr_t sp = (uintptr_t)uc->uc_mcontext.gregs[UMON_GREG_RSP];
    uintptr_t fp = (uintptr_t)uc->uc_mcontext.gregs[UMON_GREG_RBP];
    uintptr_t frames[UMON_STACK_DEPTH];
    unsigned n = 0, i;
    char line[CRASH_LINE_MAX], *p = line;
    struct sigaction dfl;
    int saved = errno;

    /* The default action again, also where SA_RESETHAND is not honoured (Nanos
     * keeps the handler: the signal raised below would come back here forever). */
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    (void)sigaction(sig, &dfl, NULL);
    if (crash_reported) { /* a second fatal signal: no second line */
        (void)raise(sig);
        errno = saved;
        return;
    }
    crash_reported = 1;
    if (fp >= sp && fp - sp < UMON_FRAME_MAX)
        n = walk_frames(fp, frames, UMON_STACK_DEPTH);
    p = put_text(p, "umon-crash: signal ");
    p = put_decimal(p, sig);
    p = put_text(p, " code ");
    p = put_decimal(p, info != NULL ? info->si_code : 0);
    p = put_text(p, " addr ");
    p = put_hex(p, info != NULL ? (uintptr_t)info->si_addr : 0u);
    p = put_text(p, " pc ");
    p = put_hex(p, pc);
    p = put_text(p, " sp ");
    p = put_hex(p, sp);
    p = put_text(p, " fp ");
    p = put_hex(p, fp);
    p = put_text(p, " text ");
    p = put_hex(p, (uintptr_t)&umon_logx);
    p = put_text(p, " stack");
    for (i = 0; i < n; i++) {
        *p++ = ' ';
        p = put_hex(p, frames[i]);
    }
    *p++ = '\n';
    (void)!write(2, line, (size_t)(p - line));
    (void)raise(sig); /* the default action now: delivered on return */
    errno = saved;
}

/* Once per process: the alternate stack and the handler for each fatal signal
 * whose action is still the default (a program's own handler stays). */
static UMON_NOTRACE void install_crash_handler(void)
{
    struct sigaction sa, old;
    stack_t ss;
    unsigned i;

    if (crash_handler_installed)
        return;
    crash_handler_installed = 1;
    memset(&ss, 0, sizeof ss);
    ss.ss_sp = crash_stack;
    ss.ss_size = sizeof crash_stack;
    if (sigaltstack(&ss, NULL) != 0)
        return;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fatal_signal;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
    (void)sigemptyset(&sa.sa_mask);
    for (i = 0; i < sizeof crash_signals / sizeof crash_signals[0]; i++) {
        if (sigaction(crash_signals[i], NULL, &old) == 0 && old.sa_handler == SIG_DFL)
            (void)sigaction(crash_signals[i], &sa, NULL);
    }
}
#else
static UMON_NOTRACE void install_crash_handler(void)
{
}
#endif

/* The umon.stack and umon.text fields after the record's own (begun at scratch,
 * `at` bytes so far), while the record has fewer than 255 fields and they fit
 * before the message's reserve; returns the new end. */
static UMON_NOTRACE size_t append_stack(unsigned char *out, size_t at, const char *stack, const char *text)
{
    size_t limit = UMON_RECORD_MAX - MESSAGE_RESERVE, next;
    unsigned char *count = out + 5 + 27; /* the field count in the RECORD head */

    if (*count < 255u && (next = put_field(out, limit, at, "umon.stack", stack)) != 0) {
        at = next;
        ++*count;
    }
    if (*count < 255u && (next = put_field(out, limit, at, "umon.text", text)) != 0) {
        at = next;
        ++*count;
    }
    return at;
}

/* ---- public API ------------------------------------------------------------- */

static UMON_NOTRACE int clamp_severity(int severity)
{
    return severity < UMON_EMERG ? UMON_EMERG : severity > UMON_DEBUG ? UMON_DEBUG : severity;
}

static void log_locked(int severity, int kind, const char *file, unsigned line, const char *func,
                       const struct umon_field *fields, unsigned nfields, const char *stack,
                       const char *fmt, va_list ap) UMON_PRINTF(9, 0);

static UMON_NOTRACE void log_locked(int severity, int kind, const char *file, unsigned line, const char *func,
                       const struct umon_field *fields, unsigned nfields, const char *stack,
                       const char *fmt, va_list ap)
{
    struct umon_wire_record r;
    size_t at, len, room, reserve = MESSAGE_RESERVE;
    char text[HEX_MAX + 1];
    int ok, n;

    severity = clamp_severity(severity);
    if (severity > S.level) {
        S.stats.filtered++;
        return;
    }
    ensure_boot();
    r.seq = S.next_seq;
    r.mono_ns = (unsigned long long)clock_ns(CLOCK_MONOTONIC, NULL);
    r.wall_ns = clock_ns(CLOCK_REALTIME, &ok);
    r.wall_valid = ok;
    r.severity = (unsigned)severity;
    r.kind = kind >= UMON_KIND_LOG && kind <= UMON_KIND_CRASH ? (unsigned)kind : UMON_KIND_LOG;
    r.line = line;
    r.file = file ? file : "";
    r.file_len = strlen(r.file);
    if (r.file_len > LOCATION_MAX) { /* keep the end: the file name itself */
        r.file += r.file_len - LOCATION_MAX;
        r.file_len = LOCATION_MAX;
        while (r.file_len > 0 && ((unsigned char)r.file[0] & 0xC0u) == 0x80u) {
            r.file++;
            r.file_len--;
        }
    }
    r.func = func ? func : "";
    r.func_len = strlen(r.func);
    if (r.func_len > LOCATION_MAX)
        r.func_len = umon_wire_utf8_cut(r.func, LOCATION_MAX);
    r.fields = fields;
    r.nfields = fields ? nfields : 0;

    if (stack[0] != '\0') { /* the caller's fields leave room for the stack's two */
        text_address(text);
        reserve += 3u + sizeof "umon.stack" + strlen(stack) + 3u + sizeof "umon.text" +
                   strlen(text);
    }
    at = umon_wire_record_begin(scratch, UMON_RECORD_MAX, &r, reserve);
    if (stack[0] != '\0' && at > 0)
        at = append_stack(scratch, at, stack, text);
    room = UMON_RECORD_MAX - at;
    len = 0;
    if (fmt != NULL) {
        n = vsnprintf((char *)scratch + at, room + 1, fmt, ap);
        if (n > 0)
            len = (size_t)n <= room ? (size_t)n : umon_wire_utf8_cut((char *)scratch + at, room);
    }
    umon_wire_seal(scratch, at + len);
    ring_push(scratch, at + len);
    S.next_seq++;
    S.stats.logged++;
}

static void log_with_stack(int severity, int kind, const char *file, unsigned line,
                           const char *func, const struct umon_field *fields, unsigned nfields,
                           const char *stack, const char *fmt, va_list ap) UMON_PRINTF(9, 0);

static UMON_NOTRACE void log_with_stack(int severity, int kind, const char *file, unsigned line,
                           const char *func, const struct umon_field *fields, unsigned nfields,
                           const char *stack, const char *fmt, va_list ap)
{
    LOCK();
    log_locked(severity, kind, file, line, func, fields, nfields, stack, fmt, ap);
    (void)coop_settle(poll_locked());
    UNLOCK();
}

/* Each public entry walks from its own frame, while that frame is live, so that
 * the first address is the return into the function that called it. */
UMON_NOTRACE void umon_vlogx(int severity, int kind, const char *file, unsigned line, const char *func,
                const struct umon_field *fields, unsigned nfields, const char *fmt, va_list ap)
{
    char stack[STACK_TEXT_MAX];

    stack_text(clamp_severity(severity), kind, UMON_FRAME(), stack);
    log_with_stack(severity, kind, file, line, func, fields, nfields, stack, fmt, ap);
}

UMON_NOTRACE void umon_logx(int severity, int kind, const char *file, unsigned line, const char *func,
               const struct umon_field *fields, unsigned nfields, const char *fmt, ...)
{
    char stack[STACK_TEXT_MAX];
    va_list ap;

    stack_text(clamp_severity(severity), kind, UMON_FRAME(), stack);
    va_start(ap, fmt);
    log_with_stack(severity, kind, file, line, func, fields, nfields, stack, fmt, ap);
    va_end(ap);
}

UMON_NOTRACE void umon_log(int severity, const char *fmt, ...)
{
    char stack[STACK_TEXT_MAX];
    va_list ap;

    stack_text(clamp_severity(severity), UMON_KIND_LOG, UMON_FRAME(), stack);
    va_start(ap, fmt);
    log_with_stack(severity, UMON_KIND_LOG, NULL, 0, NULL, NULL, 0, stack, fmt, ap);
    va_end(ap);
}

/* ---- function tracing --------------------------------------------------------- */

/* How often a traced program's events move the connection along (every this
 * many events, or when the ring is half full): a poll per event would cost two
 * system calls per function call. */
#define TRACE_POLL_EVERY 64u

/* One ENTER or EXIT record: debug severity, no message, fields fn, caller and
 * umon.text. Sent whatever the level; skipped (counted as filtered) while the
 * library is at work or when fn is in none of the ranges. */
static UMON_NOTRACE UMON_COLD void trace_event(unsigned kind, void *fn, void *caller)
{
    struct umon_wire_record r;
    struct umon_field fields[3];
    char fn_text[HEX_MAX + 1], caller_text[HEX_MAX + 1], text[HEX_MAX + 1];
    uintptr_t at = (uintptr_t)fn;
    size_t size;
    int ok;

    if (in_library) {
        S.stats.filtered++; /* racy under UMON_THREADS: a count, not a guard */
        return;
    }
    LOCK();
    if (trace_nranges != 0) {
        unsigned i = 0;

        while (i < trace_nranges && !(at >= trace_ranges[i][0] && at < trace_ranges[i][1]))
            i++;
        if (i == trace_nranges) {
            UNLOCK();
            return;
        }
    }
    *put_hex(fn_text, at) = '\0';
    *put_hex(caller_text, (uintptr_t)caller) = '\0';
    text_address(text);
    fields[0].key = "fn";
    fields[0].value = fn_text;
    fields[1].key = "caller";
    fields[1].value = caller_text;
    fields[2].key = "umon.text";
    fields[2].value = text;
    ensure_boot();
    memset(&r, 0, sizeof r);
    r.seq = S.next_seq;
    r.mono_ns = (unsigned long long)clock_ns(CLOCK_MONOTONIC, NULL);
    r.wall_ns = clock_ns(CLOCK_REALTIME, &ok);
    r.wall_valid = ok;
    r.severity = UMON_DEBUG;
    r.kind = kind;
    r.file = r.func = "";
    r.fields = fields;
    r.nfields = 3;
    size = umon_wire_record_begin(scratch, UMON_RECORD_MAX, &r, 0);
    umon_wire_seal(scratch, size);
    ring_push(scratch, size);
    S.next_seq++;
    S.stats.logged++;
    if (S.next_seq % TRACE_POLL_EVERY == 0 || S.ring_used > UMON_RING_BYTES / 2)
        (void)coop_settle(poll_locked());
    UNLOCK();
}

/* The hooks -finstrument-functions calls. Off, each is one test of trace_on. */
void __cyg_profile_func_enter(void *fn, void *caller) UMON_NOTRACE;
void __cyg_profile_func_exit(void *fn, void *caller) UMON_NOTRACE;

UMON_NOTRACE void __cyg_profile_func_enter(void *fn, void *caller)
{
    if (UMON_UNLIKELY(trace_on))
        trace_event(UMON_KIND_ENTER, fn, caller);
}

UMON_NOTRACE void __cyg_profile_func_exit(void *fn, void *caller)
{
    if (UMON_UNLIKELY(trace_on))
        trace_event(UMON_KIND_EXIT, fn, caller);
}

UMON_NOTRACE void umon_set_trace(int on)
{
    LOCK();
    trace_nranges = 0;
    trace_on = on != 0;
    UNLOCK();
}

UMON_NOTRACE int umon_get_trace(void)
{
    return trace_on;
}

static UMON_NOTRACE void close_socket_locked(void)
{
    if (S.fd >= 0)
        close(S.fd);
    S.fd = -1;
    S.state = IDLE;
    reset_link();
}

/*
 * A dotted-quad IPv4 address into out (network order): four decimal parts
 * 0-255, no leading zeros, nothing else; -1 otherwise. These are inet_pton()'s
 * rules; the library has its own parser because Unikraft's lwIP declares
 * inet_pton() but exports only lwip_inet_pton().
 */
static UMON_NOTRACE int parse_ipv4(const char *text, unsigned char out[4])
{
    int part;

    for (part = 0; part < 4; part++) {
        unsigned value = 0;
        int digits = 0;

        if (part > 0 && *text++ != '.')
            return -1;
        for (; *text >= '0' && *text <= '9'; text++) {
            if (digits > 0 && value == 0)
                return -1; /* a leading zero */
            value = value * 10 + (unsigned)(*text - '0');
            if (value > 255)
                return -1;
            digits++;
        }
        if (digits == 0)
            return -1;
        out[part] = (unsigned char)value;
    }
    return *text == '\0' ? 0 : -1;
}

UMON_NOTRACE int umon_init(const char *host, unsigned port, const char *name, const char *token)
{
    struct sockaddr_in addr;
    unsigned char ip[4], port_bytes[2];
    size_t name_len = name ? strlen(name) : 0;
    size_t token_len = token ? strlen(token) : 0;

    if (host == NULL || name_len == 0 || name_len > 255 || token_len > 255 || port > 65535u)
        return -1;
    if (parse_ipv4(host, ip) < 0)
        return -1;
    if (port == 0)
        port = UMON_DEFAULT_PORT;
    /* Both fields are in network order: written byte by byte, no htons(). */
    put_u16(port_bytes, port);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    memcpy(&addr.sin_port, port_bytes, sizeof port_bytes);
    memcpy(&addr.sin_addr, ip, sizeof ip);

    LOCK();
    close_socket_locked();
    S.addr = addr;
    memcpy(S.name, name, name_len + 1);
    if (token_len)
        memcpy(S.token, token, token_len + 1);
    else
        S.token[0] = '\0';
    S.configured = 1;
    S.stopped = 0;
    S.backoff_ms = BACKOFF_MIN_MS;
    S.retry_at_ms = now_ms();
    ensure_boot();
    install_crash_handler();
    (void)coop_settle(poll_locked());
    UNLOCK();
    return 0;
}

static UMON_NOTRACE int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

static UMON_NOTRACE int same_word(const char *a, const char *b)
{
    while (*a && lower((unsigned char)*a) == lower((unsigned char)*b)) {
        a++;
        b++;
    }
    return *a == '\0' && *b == '\0';
}

/* A severity from a digit 0-7 or a name; -1 if unknown. */
static UMON_NOTRACE int parse_level(const char *text)
{
    static const struct {
        const char *name;
        int level;
    } names[] = {
        {"emerg", UMON_EMERG},   {"emergency", UMON_EMERG}, {"panic", UMON_EMERG},
        {"alert", UMON_ALERT},   {"crit", UMON_CRIT},       {"critical", UMON_CRIT},
        {"fatal", UMON_CRIT},    {"err", UMON_ERR},         {"error", UMON_ERR},
        {"warn", UMON_WARNING},  {"warning", UMON_WARNING}, {"notice", UMON_NOTICE},
        {"info", UMON_INFO},     {"debug", UMON_DEBUG},     {"trace", UMON_DEBUG},
    };
    size_t i;

    if (text[0] >= '0' && text[0] <= '7' && text[1] == '\0')
        return text[0] - '0';
    for (i = 0; i < sizeof names / sizeof names[0]; i++)
        if (same_word(text, names[i].name))
            return names[i].level;
    return -1;
}

/* Next word of a command line into word (cap bytes); quotes group, and are
 * removed. Returns the rest of the line, NULL at the end; *cut is set when the
 * word did not fit. */
static UMON_NOTRACE const char *next_word(const char *p, char *word, size_t cap, int *cut)
{
    size_t n = 0;
    int quoted = 0;

    *cut = 0;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    if (*p == '\0')
        return NULL;
    for (; *p; p++) {
        if (*p == '"') {
            quoted = !quoted;
            continue;
        }
        if (!quoted && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
            break;
        if (n + 1 < cap)
            word[n++] = *p;
        else
            *cut = 1;
    }
    word[n] = '\0';
    return p;
}

static UMON_NOTRACE int parse_port(const char *text, unsigned *port)
{
    unsigned long v = 0;

    if (*text == '\0')
        return -1;
    for (; *text; text++) {
        if (*text < '0' || *text > '9')
            return -1;
        v = v * 10 + (unsigned long)(*text - '0');
        if (v > 65535)
            return -1;
    }
    if (v == 0)
        return -1;
    *port = (unsigned)v;
    return 0;
}

/* The text after prefix when word starts with it, else NULL. */
static UMON_NOTRACE const char *value_of(const char *word, const char *prefix)
{
    while (*prefix != '\0' && *word == *prefix) {
        word++;
        prefix++;
    }
    return *prefix == '\0' ? word : NULL;
}

/* Copy a value into dst (cap bytes); -1 if it does not fit. */
static UMON_NOTRACE int copy_value(char *dst, size_t cap, const char *value)
{
    size_t n = strlen(value);

    if (n >= cap)
        return -1;
    memcpy(dst, value, n + 1);
    return 0;
}

/* HOST[:PORT] into host (COLLECTOR_MAX bytes) and *port; -1 if malformed or
 * too long. */
static UMON_NOTRACE int split_collector(const char *value, char *host, unsigned *port)
{
    char *colon;

    if (copy_value(host, COLLECTOR_MAX, value) < 0)
        return -1;
    *port = UMON_DEFAULT_PORT;
    colon = strchr(host, ':');
    if (colon != NULL) {
        *colon = '\0';
        if (parse_port(colon + 1, port) < 0)
            return -1;
    }
    return 0;
}

/* umon_init(), then the level if one was given (level >= 0). */
static UMON_NOTRACE int init_at_level(const char *host, unsigned port, const char *name, const char *token,
                         int level)
{
    if (umon_init(host, port, name, token) < 0)
        return -1;
    if (level >= 0)
        umon_set_level(level);
    return 0;
}

UMON_NOTRACE int umon_init_from_string(const char *config)
{
    char word[600];
    char host[COLLECTOR_MAX] = "";
    char name[256] = DEFAULT_NAME;
    char token[256] = "";
    unsigned port = UMON_DEFAULT_PORT;
    int level = -1;
    int have_collector = 0;
    int cut;
    const char *p = config;
    const char *value;

    if (config == NULL)
        return -1;
    while ((p = next_word(p, word, sizeof word, &cut)) != NULL) {
        if ((value = value_of(word, "umon.collector=")) != NULL) {
            if (cut || split_collector(value, host, &port) < 0)
                return -1;
            have_collector = 1;
        } else if ((value = value_of(word, "umon.name=")) != NULL) {
            if (cut || value[0] == '\0' || copy_value(name, sizeof name, value) < 0)
                return -1;
        } else if ((value = value_of(word, "umon.token=")) != NULL) {
            if (cut || copy_value(token, sizeof token, value) < 0)
                return -1;
        } else if ((value = value_of(word, "umon.level=")) != NULL) {
            level = parse_level(value);
            if (cut || level < 0)
                return -1;
        }
        /* any other word belongs to someone else */
    }
    if (!have_collector)
        return -1;
    return init_at_level(host, port, name, token, level);
}

#ifdef UMON_KERNEL_PARAMS
/* The umon.* kernel parameters (Makefile.uk sets the prefix "umon"). uklibparam
 * parses the kernel command line before main() and points each one at its
 * value there; NULL when not given. */
static char *param_collector;
static char *param_name;
static char *param_token;
static char *param_level;
UK_LIBPARAM_PARAM_ALIAS(collector, &param_collector, charp, "collector address, HOST[:PORT]");
UK_LIBPARAM_PARAM_ALIAS(name, &param_name, charp, "instance name (default guest)");
UK_LIBPARAM_PARAM_ALIAS(token, &param_token, charp, "shared secret");
UK_LIBPARAM_PARAM_ALIAS(level, &param_level, charp, "minimum severity sent: 0-7 or a name");

static UMON_NOTRACE int init_from_kernel_params(void)
{
    char host[COLLECTOR_MAX];
    unsigned port;
    int level = -1;

    if (split_collector(param_collector, host, &port) < 0)
        return -1;
    if (param_name != NULL && param_name[0] == '\0')
        return -1;
    if (param_level != NULL && (level = parse_level(param_level)) < 0)
        return -1;
    return init_at_level(host, port, param_name != NULL ? param_name : DEFAULT_NAME, param_token,
                         level);
}
#endif

UMON_NOTRACE int umon_init_default(void)
{
#ifdef UMON_KERNEL_PARAMS
    if (param_collector != NULL)
        return init_from_kernel_params();
#endif
#ifdef UMON_HAVE_GETENV
    return umon_init_from_string(getenv("UMON_CONFIG"));
#else
    return -1;
#endif
}

UMON_NOTRACE int umon_poll(void)
{
    int r;

    LOCK();
    r = coop_settle(poll_locked());
    UNLOCK();
    return r;
}

UMON_NOTRACE int umon_flush(int timeout_ms)
{
    int r;

    LOCK();
    r = flush_locked(timeout_ms);
    UNLOCK();
    return r;
}

UMON_NOTRACE void umon_close(void)
{
    unsigned char bye[5];
    long long deadline;

    LOCK();
    if (!S.configured) {
        UNLOCK();
        return;
    }
    (void)flush_locked(CLOSE_FLUSH_MS);
    if (S.fd >= 0 && (S.state == HANDSHAKE || S.state == READY) && tx_room() >= sizeof bye) {
        S.closing = 1;
        S.tx_end += umon_wire_bye(tx_buf + S.tx_end);
        deadline = now_ms() + BYE_LINGER_MS;
        /* Send BYE, then read until the host closes (or the linger ends), so
         * that nothing unread makes our close reset the connection. */
        while (S.fd >= 0 && S.tx_start != S.tx_end && now_ms() < deadline) {
            if (send_tx() == 0 && S.tx_start != S.tx_end)
                wait_unlocked(S.fd, POLLOUT, WAIT_SLICE_MS);
        }
        if (S.fd >= 0 && S.tx_start == S.tx_end) {
            (void)shutdown(S.fd, SHUT_WR);
            while (S.fd >= 0 && now_ms() < deadline) {
                if (receive() < 0)
                    break;
                wait_unlocked(S.fd, POLLIN, WAIT_SLICE_MS);
            }
        }
    }
    close_socket_locked();
    S.configured = 0;
    S.closing = 0;
    UNLOCK();
}

UMON_NOTRACE void umon_set_level(int level)
{
    LOCK();
    S.level = clamp_severity(level);
    UNLOCK();
}

UMON_NOTRACE int umon_get_level(void)
{
    int level;

    LOCK();
    level = S.level;
    UNLOCK();
    return level;
}

UMON_NOTRACE void umon_get_stats(struct umon_stats *out)
{
    if (out == NULL)
        return;
    LOCK();
    *out = S.stats;
    UNLOCK();
}
