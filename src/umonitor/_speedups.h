/*
 * What the parts of umonitor._speedups share: byte classes, number and date
 * writers, the output buffer, argument readers, the RFC 3339 calendar, the
 * log file line's token parsers, and each fast path's entry point for the
 * method table in _speedups_module.c.
 *
 * Internal to the extension: every name declared here is hidden from outside
 * the shared object (only PyInit__speedups is exported).
 */

#ifndef UMONITOR_SPEEDUPS_H
#define UMONITOR_SPEEDUPS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

#define NS_PER_SEC 1000000000ULL
/* 9999-12-31T23:59:59Z: the last second a four-digit year can show. */
#define MAX_SECOND 253402300799LL

/* Byte classes. */
#define C_BAD 0x01   /* outside 0x20..0x7E, or a backslash: needs escaping */
#define C_SPACE 0x02
#define C_COLON 0x04
#define C_EQUAL 0x08
#define C_QUOTE 0x10

#define MASK_TEXT C_BAD
#define MASK_TOKEN (C_BAD | C_SPACE | C_COLON)
#define MASK_KEY (C_BAD | C_SPACE | C_EQUAL | C_QUOTE)
#define MASK_VALUE_QUOTE (C_SPACE | C_EQUAL | C_QUOTE)

/* Byte classes of every byte value (C_* bits), filled by init_byte_class(). */
extern unsigned char byte_class[256];
void init_byte_class(void);

/* Severity names by number (0 emerg .. 7 debug) and their lengths. */
extern const char *const severity_names[8];
extern const unsigned char severity_lens[8];

/* The "YYYY-MM-DDTHH:MM:SS" text of the second date_for() was last given. */
extern char cached_date[19];
int date_for(long long second);

typedef struct {
    const unsigned char *p;
    size_t n;
} span;

typedef struct {
    char *data;
    size_t len;
    size_t cap;
} outbuf;

/* Makes room for `extra` more bytes; on failure sets MemoryError. */
int out_reserve(outbuf *out, size_t extra);

/* Python arguments: ints saturated to long long; now_ns split into second and
 * nanosecond rest (*ok = 0 outside 0..year 9999); the high mark as a u64
 * (*above_all when above every seq); (pos, end) and their check against a
 * buffer of `len` bytes. Each returns -1 with an exception set on failure. */
int as_saturated_ll(PyObject *obj, long long *value);
int split_now(PyObject *now, long long *second, uint32_t *rest, int *ok);
int read_high(PyObject *high, uint64_t *mark, int *above_all);
int read_span(PyObject *const *args, Py_ssize_t *pos, Py_ssize_t *end);
int check_span(Py_ssize_t pos, Py_ssize_t end, Py_ssize_t len, const char *what);

/* Adds the eight per-severity `counts` into `tally`, an array('q') of 8 items
 * (nothing for NULL or None). -1 with an exception set when it is not one. */
int add_tally(PyObject *tally, const long long counts[8]);

/* "YYYY-MM-DDTHH:MM:SS" as seconds since the epoch; -1 when not a real time
 * (see _speedups_common.c). */
int prefix_seconds(const unsigned char *p, long long *out);

static inline unsigned
classify(const unsigned char *p, size_t n)
{
    unsigned acc = 0;
    for (size_t i = 0; i < n; i++) {
        acc |= byte_class[p[i]];
    }
    return acc;
}

static inline char *
put_u64(char *out, uint64_t value)
{
    char digits[20];
    int n = 0;
    do {
        digits[n++] = (char)('0' + (int)(value % 10));
        value /= 10;
    } while (value);
    while (n) {
        *out++ = digits[--n];
    }
    return out;
}

static inline char *
put_padded(char *out, uint32_t value, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        out[i] = (char)('0' + (int)(value % 10));
        value /= 10;
    }
    return out + width;
}

static inline char *
put_bytes(char *out, const void *src, size_t n)
{
    memcpy(out, src, n);
    return out + n;
}

/* Exactly `n` digits at p as an int; -1 if any is not a digit. */
static inline long
fixed_digits(const unsigned char *p, int n)
{
    long value = 0;
    for (int i = 0; i < n; i++) {
        unsigned d = (unsigned)p[i] - '0';
        if (d > 9) {
            return -1;
        }
        value = value * 10 + (long)d;
    }
    return value;
}

static inline int
span_equals(span s, const char *text, size_t n)
{
    return s.n == n && memcmp(s.p, text, n) == 0;
}

/* A log file line's tokens, parsed strictly and canonically (see
 * _speedups_common.c); each returns -1 for a token it does not take. */

/* The TIME token's "YYYY-MM-DDTHH:MM:SS" prefix last converted. */
typedef struct {
    unsigned char prefix[19];
    long long seconds;
    int have;
} time_cache;

int digits_u64(const unsigned char *p, size_t n, uint64_t *out);
int plain_u64(const unsigned char *p, size_t n, uint64_t *out);
int parse_time_token(span token, time_cache *cache, long long *seconds, long *micros);
long long time_ns_saturated(long long seconds, long micros);
int severity_of(span token);
int origin_kind_of(span token, int *origin, int *kind);
int parse_uptime(span token, int *has_mono, uint64_t *mono);
int parse_source(span token, span *file, uint64_t *line, span *func);

/* The fast paths (METH_FASTCALL) and their docstrings. */
PyObject *format_records(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
extern const char format_records_doc[];
PyObject *syslog_lines(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
extern const char syslog_lines_doc[];
PyObject *summarize_lines(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
extern const char summarize_lines_doc[];
PyObject *scan_lines(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
extern const char scan_lines_doc[];
PyObject *gram_list(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
extern const char gram_list_doc[];
void blocks_init(void);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif
