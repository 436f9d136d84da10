/*
 * umonitor.h - guest library of umonitor, the host-side log collector for
 * unikernels.
 *
 * A guest links umonitor.c, calls umon_init() (or umon_init_from_string() with
 * its kernel command line, or umon_init_default()) and logs with the UMON_LOG_*
 * macros. Records travel to the collector over TCP in the native protocol
 * (docs/protocol.md, v1). It builds with any C99 compiler on a POSIX socket API:
 * glibc, musl, NetBSD's libc (rumprun), and Unikraft's nolibc with lwIP, where
 * this directory is also a Unikraft library (docs/unikernels.md).
 *
 * How this works: every record is numbered (sequence numbers from 1 per boot),
 * encoded as a RECORD frame and appended to a bounded ring of frames the host has
 * not acknowledged yet. Logging never blocks: the socket is non-blocking and each
 * log call only sends what the kernel takes at once. The host acknowledges records
 * once they are stored; acknowledged frames leave the ring. After a reconnect the
 * library introduces itself again (HELLO, same boot id) and replays what the host
 * does not hold. When the ring is full the oldest records are discarded and the
 * host is told how many (DROPPED).
 *
 * There are no threads and no timers: progress happens inside umon_log*(),
 * umon_poll() and umon_flush(). A guest that is idle for long should call
 * umon_poll() now and then (it never blocks) so that acknowledgements are read,
 * PINGs answered and lost connections re-established.
 *
 * Cooperative schedulers (Unikraft, rumprun): the network stack runs only when the
 * application blocks or yields. There umon_log*(), umon_init() and umon_poll()
 * yield to it until their work is on the wire: the connection is up, every
 * record is handed to the stack and at most UMON_COOP_INFLIGHT bytes await the
 * host's ACK. They wait at most UMON_COOP_WAIT_MS per call, and not at all when
 * nothing is pending, so a guest that logs and then computes forever without
 * blocking still gets its records out.
 *
 * Build options (preprocessor macros, all optional):
 *   UMON_RING_BYTES   bytes of unacknowledged frames kept (default 262144)
 *   UMON_RECORD_MAX   largest encoded record frame, bytes (default 4096, 1024-65536)
 *   UMON_THREADS      guard the library state with a pthread mutex (link -pthread)
 *   UMON_FILE         what the macros record as the file name (default __FILE__)
 *   UMON_COOP_WAIT_MS    cooperative schedulers only: longest a call yields, in
 *                        milliseconds (default 20)
 *   UMON_COOP_INFLIGHT   cooperative schedulers only: record bytes that may await
 *                        the host's ACK when a call returns (default 2048)
 *   UMON_STACK_DEPTH  return addresses a record's call stack holds (default 16,
 *                     at most 64; 0 leaves the walk out)
 *   UMON_STACK_LEVEL  records at this severity or worse, and crash records, carry
 *                     the call stack of the function that logged (default UMON_ERR)
 *   UMON_CRASH_HANDLER   0 leaves the fatal-signal handler out (default 1)
 *
 * Call stacks. A record at UMON_STACK_LEVEL or worse gets two fields: umon.stack,
 * the return addresses from the function that called the logging function
 * outwards ("0x401bc8 0x4018f4", found by following saved frame pointers: build
 * with -fno-omit-frame-pointer, or the walk stops after the first frame), and
 * umon.text, the run-time address of umon_logx (the host's load bias). The host
 * turns them into function, file and line with the program's symbols.
 *
 * Crashes. On Linux (glibc or musl, x86-64) umon_init() also installs, once, a
 * handler for SIGSEGV, SIGBUS, SIGILL, SIGFPE and SIGABRT (each still at its
 * default action) on an alternate stack of its own. It writes one line to
 * standard error, "umon-crash: signal N code C addr A pc P sp S fp F text T
 * stack R R ...", and the signal then kills the process as before. The host reads
 * the line from the console into the crash report.
 * On Unikraft, Config.uk sets these from menuconfig (CONFIG_LIBUMONITOR_*).
 *
 * No function allocates memory; all state is static, every buffer is bounded.
 */
#ifndef UMONITOR_H
#define UMONITOR_H

#include <stdarg.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Library name and version sent in HELLO. */
#define UMON_LIBRARY "umonitor-c/1.0.0"

/* TCP port of the collector when none is given. */
#define UMON_DEFAULT_PORT 2333u

/* Severity of a record, as in RFC 5424: lower is worse. */
enum umon_severity {
    UMON_EMERG = 0,
    UMON_ALERT,
    UMON_CRIT,
    UMON_ERR,
    UMON_WARNING,
    UMON_NOTICE,
    UMON_INFO,
    UMON_DEBUG
};

/* What a record says happened. */
enum umon_kind {
    UMON_KIND_LOG = 0, /* an ordinary log message */
    UMON_KIND_ENTER,   /* a function was entered */
    UMON_KIND_EXIT,    /* a function returned */
    UMON_KIND_CRASH    /* the guest is going down */
};

/* One key-value pair attached to a record. Keys must be non-empty (others are
 * skipped); a NULL value is sent as "". Keys are cut at 255 bytes. */
struct umon_field {
    const char *key;
    const char *value;
};

/* Counters since the process started. Every logged record ends up acked or
 * dropped, or is still waiting for an acknowledgement. */
struct umon_stats {
    unsigned long long logged;     /* records numbered and buffered */
    unsigned long long sent;       /* record frames written to a connection, replays included */
    unsigned long long acked;      /* records the host acknowledged */
    unsigned long long dropped;    /* records discarded before the host had them */
    unsigned long long filtered;   /* records below the minimum severity, never numbered */
    unsigned long long reconnects; /* connections established after the first one */
};

/*
 * Function tracing. Code built with -finstrument-functions (gcc, clang; C and
 * C++) calls __cyg_profile_func_enter and __cyg_profile_func_exit, which this
 * library defines, at every function's entry and return. While tracing is off
 * (the default) each call costs one test of a flag. The host switches it on and
 * off (SET_TRACE, `umonitor trace NAME on|off`), optionally for functions in at
 * most UMON_TRACE_RANGES address ranges; while on, each event is a record of
 * kind UMON_KIND_ENTER or UMON_KIND_EXIT at debug severity (sent whatever the
 * level) with no message and the fields fn (the function's address), caller
 * (the call site) and umon.text. Events go through the ring like any record:
 * never blocking, dropped and counted when it is full. Every function of this
 * library is built without the hooks (no_instrument_function), so the library
 * may be compiled with -finstrument-functions too.
 */
#define UMON_TRACE_RANGES 16u

/* umon_set_trace - switch tracing on (1) or off (0) for every function. */
void umon_set_trace(int on);

/* umon_get_trace - 1 while tracing is on, else 0. */
int umon_get_trace(void);

#if defined(__GNUC__) || defined(__clang__)
#define UMON_PRINTF(fmt_index, first_arg) __attribute__((format(printf, fmt_index, first_arg)))
#else
#define UMON_PRINTF(fmt_index, first_arg)
#endif

/*
 * umon_init - start sending records to the collector at host:port.
 *   host   IPv4 address in dotted form ("10.0.0.1"); names are not resolved.
 *   port   TCP port, 1-65535; 0 means UMON_DEFAULT_PORT.
 *   name   instance name asked for in HELLO, 1-255 bytes (the host sanitizes it).
 *   token  shared secret given at launch, 0-255 bytes; NULL means none.
 * Records logged earlier (even before any umon_init) are kept and sent once the
 * connection is up. Calling it again switches to the new collector; the boot id,
 * the sequence numbers and the buffered records stay. A first connection attempt
 * is made at once without blocking. Returns 0, or -1 if an argument is invalid.
 */
int umon_init(const char *host, unsigned port, const char *name, const char *token);

/*
 * umon_init_from_string - umon_init() from a kernel command line.
 * config holds space-separated words (double quotes group words, as on a Linux
 * command line). These are read, every other word is ignored:
 *   umon.collector=HOST[:PORT]   collector address (required; port defaults to 2333)
 *   umon.name=NAME               instance name (default "guest")
 *   umon.token=TOKEN             shared secret (default none)
 *   umon.level=LEVEL             minimum severity sent: a digit 0-7 or a name
 *                                (emerg, alert, crit, err, warning, notice, info,
 *                                debug, and the aliases emergency, panic, critical,
 *                                fatal, error, warn, trace)
 * Returns 0, or -1 (nothing changed) when the collector is missing or a value
 * is invalid.
 */
int umon_init_from_string(const char *config);

/*
 * umon_init_default - umon_init() from where this platform keeps the
 * configuration:
 *   Unikraft  the kernel parameters umon.collector, umon.name, umon.token and
 *             umon.level (before "--" on the kernel command line; read by
 *             uklibparam, so main() sees only its own arguments), when
 *             umon.collector is among them;
 *   otherwise the UMON_CONFIG environment variable, read by
 *             umon_init_from_string() (on Unikraft only when posix-environ is
 *             in the image, which provides getenv()).
 * Returns 0, or -1 (nothing changed) when neither holds a usable collector.
 */
int umon_init_default(void);

/*
 * umon_log - log a printf-style message at severity (an enum umon_severity;
 * values outside 0-7 are clamped). The message is cut to fit UMON_RECORD_MAX.
 * Records with severity above the current level are counted as filtered and
 * not sent. Never blocks (on a cooperative scheduler it yields; see above).
 */
void umon_log(int severity, const char *fmt, ...) UMON_PRINTF(2, 3);

/*
 * umon_logx - log with everything a record can carry.
 *   kind     an enum umon_kind (others are sent as UMON_KIND_LOG)
 *   file, line, func   source location; NULL / 0 when unknown
 *   fields, nfields    key-value pairs (at most 255 are sent; fields that do not
 *                      fit in the record are left out, the last one cut)
 *   fmt, ...           printf-style message; NULL for none
 * The UMON_LOG_* macros below fill in the location. Never blocks (but see above).
 */
void umon_logx(int severity, int kind, const char *file, unsigned line, const char *func,
               const struct umon_field *fields, unsigned nfields, const char *fmt, ...)
    UMON_PRINTF(8, 9);

/* umon_vlogx - umon_logx() with a va_list. */
void umon_vlogx(int severity, int kind, const char *file, unsigned line, const char *func,
                const struct umon_field *fields, unsigned nfields, const char *fmt, va_list ap)
    UMON_PRINTF(8, 0);

/*
 * umon_poll - make progress without blocking: connect or reconnect when due
 * (backoff from 100 ms doubling to 5 s), send what the socket takes, read ACK,
 * PING, SET_LEVEL and SET_TRACE frames (answered with PONG, LEVEL and TRACE) (under a cooperative scheduler it yields for up to
 * UMON_COOP_WAIT_MS, as the logging calls do). Returns 0 while a connection to the collector is
 * up, -1 otherwise (not initialized, connecting, waiting to retry, or stopped
 * because the collector does not speak this protocol version).
 */
int umon_poll(void);

/*
 * umon_flush - block (in poll(), up to timeout_ms milliseconds) until the host
 * has acknowledged every record logged so far. Returns 0 when no record is left
 * waiting for an acknowledgement (records dropped earlier do not count; see
 * umon_get_stats), -1 on timeout or when no collector is configured.
 */
int umon_flush(int timeout_ms);

/*
 * umon_close - flush for up to 2000 ms, say BYE, close the connection. Records
 * still unacknowledged stay buffered; a later umon_init() sends them (same boot).
 */
void umon_close(void);

/*
 * umon_set_level - records with severity > level are no longer logged (they
 * count as filtered). 7 (UMON_DEBUG, the default) logs everything. The host can
 * change the level too (SET_LEVEL, `umonitor level`); the latest change wins.
 * Records buffered before the change are still sent. Values outside 0-7 are
 * clamped. The host learns the level from each HELLO and from the library's
 * answer to SET_LEVEL; a change made here shows on the host after the next
 * reconnect or SET_LEVEL.
 */
void umon_set_level(int level);

/* umon_get_level - the current minimum severity, 0-7. */
int umon_get_level(void);

/* umon_get_stats - copy the counters into *out. */
void umon_get_stats(struct umon_stats *out);

/*
 * Logging macros. They record the file (UMON_FILE), line and function. The
 * format string is part of the variable arguments so that a bare string is
 * valid C99: UMON_LOG_INFO("booted"), UMON_LOG_INFO("x=%d", x).
 */
#ifndef UMON_FILE
#define UMON_FILE __FILE__
#endif

#define UMON_LOG_AT_(sev, kind, fields, n, ...) \
    umon_logx((sev), (kind), UMON_FILE, (unsigned)__LINE__, __func__, (fields), (n), __VA_ARGS__)

#define UMON_LOG_EMERG(...) UMON_LOG_AT_(UMON_EMERG, UMON_KIND_LOG, NULL, 0u, __VA_ARGS__)
#define UMON_LOG_ALERT(...) UMON_LOG_AT_(UMON_ALERT, UMON_KIND_LOG, NULL, 0u, __VA_ARGS__)
#define UMON_LOG_CRIT(...) UMON_LOG_AT_(UMON_CRIT, UMON_KIND_LOG, NULL, 0u, __VA_ARGS__)
#define UMON_LOG_ERROR(...) UMON_LOG_AT_(UMON_ERR, UMON_KIND_LOG, NULL, 0u, __VA_ARGS__)
#define UMON_LOG_WARN(...) UMON_LOG_AT_(UMON_WARNING, UMON_KIND_LOG, NULL, 0u, __VA_ARGS__)
#define UMON_LOG_NOTICE(...) UMON_LOG_AT_(UMON_NOTICE, UMON_KIND_LOG, NULL, 0u, __VA_ARGS__)
#define UMON_LOG_INFO(...) UMON_LOG_AT_(UMON_INFO, UMON_KIND_LOG, NULL, 0u, __VA_ARGS__)
#define UMON_LOG_DEBUG(...) UMON_LOG_AT_(UMON_DEBUG, UMON_KIND_LOG, NULL, 0u, __VA_ARGS__)

/* UMON_LOG_KV(sev, fields, n, fmt, ...) - a log record with n key-value fields. */
#define UMON_LOG_KV(sev, fields, n, ...) UMON_LOG_AT_((sev), UMON_KIND_LOG, (fields), (n), __VA_ARGS__)

/* UMON_ENTER(fields, n) / UMON_EXIT(fields, n) - function enter and exit records
 * (debug severity, empty message); pass parameters or the result as fields. */
#define UMON_ENTER(fields, n) UMON_LOG_AT_(UMON_DEBUG, UMON_KIND_ENTER, (fields), (n), "%s", "")
#define UMON_EXIT(fields, n) UMON_LOG_AT_(UMON_DEBUG, UMON_KIND_EXIT, (fields), (n), "%s", "")

#ifdef UMON_WIRE_API
/*
 * Wire codec (docs/protocol.md §2): the frame encoder and the host-frame
 * decoder the library itself uses. Not part of the stable API; declared only
 * where UMON_WIRE_API is defined (umonitor.c and the test tools).
 */

#define UMON_WIRE_PREFACE "\x89UMN"
#define UMON_WIRE_PREFACE_LEN 4u
#define UMON_WIRE_MAX_FRAME 65536u /* bytes, length field included */
#define UMON_WIRE_RECORD_HEAD 36u  /* RECORD body bytes before file/function */

enum umon_wire_type {
    UMON_FRAME_HELLO = 0x01,
    UMON_FRAME_RECORD = 0x02,
    UMON_FRAME_DROPPED = 0x03,
    UMON_FRAME_BYE = 0x04,
    UMON_FRAME_LEVEL = 0x05,
    UMON_FRAME_TRACE = 0x06,
    UMON_FRAME_PING = 0x10,
    UMON_FRAME_PONG = 0x11,
    UMON_FRAME_ERROR = 0x7F,
    UMON_FRAME_ACK = 0x81,
    UMON_FRAME_SET_LEVEL = 0x82,
    UMON_FRAME_SET_TRACE = 0x83
};

#define UMON_WIRE_HELLO_TRACE 0x10u /* HELLO flags: the guest takes SET_TRACE */

/* Values of one RECORD frame. Lengths are given so callers can cut strings. */
struct umon_wire_record {
    unsigned long long seq;     /* 1.. */
    unsigned long long mono_ns;
    long long wall_ns;          /* sent only when wall_valid */
    int wall_valid;
    unsigned severity;          /* 0-7 */
    unsigned kind;              /* 0-3 */
    unsigned long line;
    const char *file;           /* file_len bytes, at most 65535 */
    size_t file_len;
    const char *func;           /* func_len bytes, at most 65535 */
    size_t func_len;
    const struct umon_field *fields;
    unsigned nfields;
};

/* A decoded host -> guest frame. */
struct umon_wire_frame {
    unsigned type;              /* enum umon_wire_type; 0 before the header arrived */
    unsigned long long value;   /* ACK seq, PING/PONG nonce, SET_LEVEL level, ERROR code,
                                   SET_TRACE on (0 or 1) */
    const unsigned char *reason; /* ERROR: reason bytes (not terminated), else NULL */
    size_t reason_len;
    unsigned long long anchor;  /* SET_TRACE: link-time address of umon_logx, 0 = none */
    unsigned nranges;           /* SET_TRACE: address ranges [start, end) that follow */
    unsigned long long ranges[UMON_TRACE_RANGES][2];
};

/* Results of umon_wire_decode_untrusted(). */
#define UMON_WIRE_FRAME 1
#define UMON_WIRE_NEED_MORE 0
#define UMON_WIRE_INVALID (-1)

/* HELLO frame into out; returns its size, 0 if it does not fit in cap or a
 * string is too long (name 1-255 bytes, token and library 0-255; NULL = "").
 * level 0-7 is announced in the flags (bit 3, bits 0-2); -1 announces none.
 * tracing non-zero sets flags bit 4 (UMON_WIRE_HELLO_TRACE). */
size_t umon_wire_hello(unsigned char *out, size_t cap, const unsigned char boot_id[16],
                       const char *name, const char *token, const char *library, int level,
                       int tracing);

/* LEVEL frame (6 bytes) into out, the answer to SET_LEVEL; returns its size. */
size_t umon_wire_level(unsigned char *out, unsigned level);

/* TRACE frame (7 bytes) into out, the answer to SET_TRACE: on (0 or 1) and the
 * number of address ranges in force; returns its size. */
size_t umon_wire_trace(unsigned char *out, unsigned on, unsigned nranges);

/* RECORD frame without its message into out: head, file, function, then the
 * fields that fit while leaving `reserve` bytes of cap free (the last field's
 * value may be cut). Returns the bytes written (the message goes there), 0 if
 * the head and location do not fit. Finish with umon_wire_record_finish() or
 * umon_wire_seal(). */
size_t umon_wire_record_begin(unsigned char *out, size_t cap, const struct umon_wire_record *r,
                              size_t reserve);

/* Append message_len bytes of message at `at` (cut to fit cap, never inside a
 * UTF-8 sequence) and seal the frame; returns the frame size. */
size_t umon_wire_record_finish(unsigned char *out, size_t cap, size_t at, const char *message,
                               size_t message_len);

/* Write the length field of a frame of `size` bytes starting at out. */
void umon_wire_seal(unsigned char *out, size_t size);

/* DROPPED frame (21 bytes) into out; returns its size. */
size_t umon_wire_dropped(unsigned char *out, unsigned long long count, unsigned long long through);

/* BYE frame (5 bytes) into out; returns its size. */
size_t umon_wire_bye(unsigned char *out);

/* Frame with a u64 body (PING, PONG, ACK; 13 bytes) into out; returns its size. */
size_t umon_wire_u64(unsigned char *out, unsigned type, unsigned long long value);

/* ERROR frame into out (reason cut to fit cap); returns its size, 0 if cap < 7. */
size_t umon_wire_error(unsigned char *out, size_t cap, unsigned code, const char *reason);

/*
 * Decode the frame at the start of buf (len bytes) as a guest receives it:
 * ACK, SET_LEVEL, SET_TRACE, PING, PONG and ERROR are accepted; anything else, a
 * body of the wrong size, a SET_LEVEL above 7, a SET_TRACE with on above 1, more
 * than UMON_TRACE_RANGES ranges or a range whose start is not below its end, or
 * a length over UMON_WIRE_MAX_FRAME is
 * UMON_WIRE_INVALID (decided as soon as the 5-byte header is in). Returns
 * UMON_WIRE_FRAME with *used set to the frame size, or UMON_WIRE_NEED_MORE; on
 * NEED_MORE for an ERROR frame whose code has arrived, *out already holds the
 * code and the part of the reason received so far.
 */
int umon_wire_decode_untrusted(const unsigned char *buf, size_t len, struct umon_wire_frame *out,
                               size_t *used);

/* The largest n <= len such that s[0..n) does not end inside a UTF-8 sequence. */
size_t umon_wire_utf8_cut(const char *s, size_t len);
#endif /* UMON_WIRE_API */

#ifdef __cplusplus
}
#endif

#endif /* UMONITOR_H */
