/*
 * The helpers umonitor._speedups' fast paths share (declared in _speedups.h):
 * the byte classes, the cached date text, the output buffer, the readers of
 * the arguments they have in common, the proleptic Gregorian calendar of
 * "YYYY-MM-DDTHH:MM:SS" texts, and the parsers of a log file line's tokens.
 */

#include "_speedups.h"

unsigned char byte_class[256];

const char *const severity_names[8] = {
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
};
const unsigned char severity_lens[8] = {5, 5, 4, 3, 7, 6, 4, 5};

/* The "YYYY-MM-DDTHH:MM:SS" text of one second, cached. Single-phase module
 * initialisation and the GIL keep this from being shared concurrently. */
static long long cached_second = -1;
char cached_date[19];

void
init_byte_class(void)
{
    for (int c = 0; c < 256; c++) {
        unsigned char cls = 0;
        if (c < 0x20 || c > 0x7E || c == '\\') {
            cls |= C_BAD;
        }
        if (c == ' ') {
            cls |= C_SPACE;
        }
        if (c == ':') {
            cls |= C_COLON;
        }
        if (c == '=') {
            cls |= C_EQUAL;
        }
        if (c == '"') {
            cls |= C_QUOTE;
        }
        byte_class[c] = cls;
    }
}

/* Fills cached_date for `second` (0..MAX_SECOND); returns 0, or -1 if the
 * platform cannot convert it. */
int
date_for(long long second)
{
    if (second == cached_second) {
        return 0;
    }
    time_t t = (time_t)second;
    if ((long long)t != second) {
        return -1;
    }
    struct tm tm;
#ifdef _WIN32
    if (gmtime_s(&tm, &t) != 0) {
        return -1;
    }
#else
    if (gmtime_r(&t, &tm) == NULL) {
        return -1;
    }
#endif
    long year = (long)tm.tm_year + 1900L;
    if (year < 0 || year > 9999) {
        return -1;
    }
    char *p = cached_date;
    p = put_padded(p, (uint32_t)year, 4);
    *p++ = '-';
    p = put_padded(p, (uint32_t)(tm.tm_mon + 1), 2);
    *p++ = '-';
    p = put_padded(p, (uint32_t)tm.tm_mday, 2);
    *p++ = 'T';
    p = put_padded(p, (uint32_t)tm.tm_hour, 2);
    *p++ = ':';
    p = put_padded(p, (uint32_t)tm.tm_min, 2);
    *p++ = ':';
    put_padded(p, (uint32_t)tm.tm_sec, 2);
    cached_second = second;
    return 0;
}

/* Makes room for `extra` more bytes; on failure sets MemoryError. */
int
out_reserve(outbuf *out, size_t extra)
{
    if (out->cap - out->len >= extra) {
        return 0;
    }
    if (extra > (size_t)PY_SSIZE_T_MAX - out->len) {
        PyErr_NoMemory();
        return -1;
    }
    size_t need = out->len + extra;
    size_t cap = out->cap ? out->cap : 4096;
    while (cap < need) {
        cap = cap > (size_t)PY_SSIZE_T_MAX / 2 ? need : cap * 2;
    }
    char *data = PyMem_Realloc(out->data, cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    out->data = data;
    out->cap = cap;
    return 0;
}

int
as_saturated_ll(PyObject *obj, long long *value)
{
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow > 0) {
        v = LLONG_MAX;
    }
    else if (overflow < 0) {
        v = LLONG_MIN;
    }
    *value = v;
    return 0;
}

/* now_ns as (second, nanosecond rest); *ok = 0 when outside 0..year 9999. */
int
split_now(PyObject *now, long long *second, uint32_t *rest, int *ok)
{
    int overflow = 0;
    *ok = 0;
    long long v = PyLong_AsLongLongAndOverflow(now, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow == 0) {
        if (v >= 0) {
            *second = v / (long long)NS_PER_SEC;
            *rest = (uint32_t)(v % (long long)NS_PER_SEC);
            *ok = *second <= MAX_SECOND;
        }
        return 0;
    }
    if (overflow < 0) {
        return 0;
    }
    /* Above the long long range but maybe still before year 10000. */
    PyObject *billion = PyLong_FromUnsignedLongLong(NS_PER_SEC);
    if (billion == NULL) {
        return -1;
    }
    PyObject *parts = PyNumber_Divmod(now, billion);
    Py_DECREF(billion);
    if (parts == NULL) {
        return -1;
    }
    if (!PyTuple_Check(parts) || PyTuple_GET_SIZE(parts) != 2) {
        Py_DECREF(parts);
        PyErr_SetString(PyExc_TypeError, "now_ns must be an int");
        return -1;
    }
    long long s = PyLong_AsLongLongAndOverflow(PyTuple_GET_ITEM(parts, 0), &overflow);
    if (s == -1 && PyErr_Occurred()) {
        Py_DECREF(parts);
        return -1;
    }
    long long r = PyLong_AsLongLong(PyTuple_GET_ITEM(parts, 1));
    Py_DECREF(parts);
    if (r == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow == 0 && s >= 0 && s <= MAX_SECOND && r >= 0 && r < (long long)NS_PER_SEC) {
        *second = s;
        *rest = (uint32_t)r;
        *ok = 1;
    }
    return 0;
}

/* high as a u64 mark; *above_all when it exceeds every possible seq. */
int
read_high(PyObject *high, uint64_t *mark, int *above_all)
{
    *mark = 0;
    *above_all = 0;
    if (!PyLong_Check(high)) {
        PyErr_SetString(PyExc_TypeError, "high must be an int");
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(high);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            return -1;
        }
        PyErr_Clear();
        PyObject *zero = PyLong_FromLong(0);
        if (zero == NULL) {
            return -1;
        }
        int positive = PyObject_RichCompareBool(high, zero, Py_GT);
        Py_DECREF(zero);
        if (positive < 0) {
            return -1;
        }
        /* Negative: every seq (>= 1) is above it, as with 0. */
        *above_all = positive;
        return 0;
    }
    *mark = (uint64_t)v;
    return 0;
}

/* The (pos, end) arguments both functions take, and their check against the buffer. */
int read_span(PyObject *const *args, Py_ssize_t *pos, Py_ssize_t *end)
{
    *pos = PyNumber_AsSsize_t(args[1], PyExc_OverflowError);
    if (*pos == -1 && PyErr_Occurred()) {
        return -1;
    }
    *end = PyNumber_AsSsize_t(args[2], PyExc_OverflowError);
    if (*end == -1 && PyErr_Occurred()) {
        return -1;
    }
    return 0;
}

int check_span(Py_ssize_t pos, Py_ssize_t end, Py_ssize_t len, const char *what)
{
    if (pos < 0 || end < pos || end > len) {
        PyErr_Format(PyExc_ValueError,
                     "need 0 <= pos <= end <= len(%s), got pos=%zd end=%zd len=%zd",
                     what, pos, end, len);
        return -1;
    }
    return 0;
}

int
add_tally(PyObject *obj, const long long counts[8])
{
    if (obj == NULL || obj == Py_None) {
        return 0;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
        if (PyErr_ExceptionMatches(PyExc_BufferError)) {
            PyErr_SetString(PyExc_ValueError, "tally must be a writable array('q') of 8 items");
        }
        return -1;
    }
    const char *f = view.format ? view.format : "B";
    if (*f == '@' || *f == '=') {
        f++;
    }
    if (view.len != 64 || view.itemsize != 8 || (strcmp(f, "q") != 0 && strcmp(f, "l") != 0)) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "tally must be a writable array('q') of 8 items");
        return -1;
    }
    long long *into = (long long *)view.buf;
    for (int i = 0; i < 8; i++) {
        into[i] += counts[i];
    }
    PyBuffer_Release(&view);
    return 0;
}

/* 1970-01-01 as a proleptic Gregorian ordinal (0001-01-01 is 1). */
#define EPOCH_ORDINAL 719163LL

static const unsigned short days_before_month[13] = {
    0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334,
};
static const unsigned char days_in_month[13] = {
    0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31,
};

static inline int
is_leap(long year)
{
    return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

/* "YYYY-MM-DDTHH:MM:SS" as seconds since the epoch, with what
 * calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%S")) accepts for this
 * exact shape: years 1..9999, real dates, hours 0..23, minutes 0..59 and
 * seconds 0..61 (60 and 61 simply add to the minute). -1 otherwise. */
int
prefix_seconds(const unsigned char *p, long long *out)
{
    if (p[4] != '-' || p[7] != '-' || p[10] != 'T' || p[13] != ':' || p[16] != ':') {
        return -1;
    }
    long year = fixed_digits(p, 4);
    long month = fixed_digits(p + 5, 2);
    long day = fixed_digits(p + 8, 2);
    long hour = fixed_digits(p + 11, 2);
    long minute = fixed_digits(p + 14, 2);
    long second = fixed_digits(p + 17, 2);
    if (year < 1 || month < 1 || month > 12 || day < 1 || hour < 0 || hour > 23 ||
        minute < 0 || minute > 59 || second < 0 || second > 61) {
        return -1;
    }
    int leap = is_leap(year);
    if (day > days_in_month[month] + (month == 2 && leap)) {
        return -1;
    }
    long long before = (long long)year - 1;
    long long ordinal = before * 365 + before / 4 - before / 100 + before / 400 +
                        days_before_month[month] + (month > 2 && leap) + day;
    *out = (ordinal - EPOCH_ORDINAL) * 86400 + hour * 3600L + minute * 60L + second;
    return 0;
}

/* The tokens of a log file line (docs/storage.md): TIME SEVERITY ORIGIN[/KIND]
 * SEQ UPTIME SOURCE, parsed strictly and only in their canonical spelling,
 * for the fast path that reads log files (_speedups_blocks.c). Each returns -1 for a token it does not take, which
 * then leaves the line to parse_line(). */

static const char *const origin_names[3] = {"app", "console", "syslog"};
static const unsigned char origin_lens[3] = {3, 7, 6};
static const char *const kind_names[4] = {"", "enter", "exit", "crash"};
static const unsigned char kind_lens[4] = {0, 5, 4, 5};

/* Decimal digits as a u64; -1 when empty, not all digits, or above 2**64-1. */
int
digits_u64(const unsigned char *p, size_t n, uint64_t *out)
{
    if (n == 0) {
        return -1;
    }
    uint64_t value = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)p[i] - '0';
        if (d > 9 || value > (UINT64_MAX - d) / 10) {
            return -1;
        }
        value = value * 10 + d;
    }
    *out = value;
    return 0;
}

/* As digits_u64, but only the canonical spelling: no leading zero except in
 * "0" itself. */
int
plain_u64(const unsigned char *p, size_t n, uint64_t *out)
{
    if (n > 1 && p[0] == '0') {
        return -1;
    }
    return digits_u64(p, n, out);
}

/* seconds * 10**9 + micros * 1000 saturated to what SQLite's
 * signed 64-bit INTEGER holds (years before 1678 and after 2262; the file keeps
 * the exact time): index_schema.py's record_row and blocks.clamp64 do the same. */
long long
time_ns_saturated(long long seconds, long micros)
{
    long long rest = (long long)micros * 1000;
    long long scaled;
    long long ns;
    int negative = seconds < 0;
    if (negative) {
        /* (seconds + 1) * 10**9 + (rest - 10**9): the same value, and the product
         * stays representable one second further down. */
        seconds += 1;
        rest -= 1000000000LL;
    }
    if (__builtin_mul_overflow(seconds, 1000000000LL, &scaled) ||
        __builtin_add_overflow(scaled, rest, &ns)) {
        ns = negative ? LLONG_MIN : LLONG_MAX;
    }
    return ns;
}

/* The TIME token (27 bytes, "YYYY-MM-DDTHH:MM:SS.uuuuuuZ"). */
int
parse_time_token(span token, time_cache *cache, long long *seconds, long *micros)
{
    const unsigned char *p = token.p;
    if (token.n != 27 || p[19] != '.' || p[26] != 'Z') {
        return -1;
    }
    long us = fixed_digits(p + 20, 6);
    if (us < 0) {
        return -1;
    }
    if (!cache->have || memcmp(cache->prefix, p, 19) != 0) {
        long long value;
        if (prefix_seconds(p, &value) < 0) {
            return -1;
        }
        memcpy(cache->prefix, p, 19);
        cache->seconds = value;
        cache->have = 1;
    }
    *seconds = cache->seconds;
    *micros = us;
    return 0;
}


int
severity_of(span token)
{
    for (int i = 0; i < 8; i++) {
        if (span_equals(token, severity_names[i], severity_lens[i])) {
            return i;
        }
    }
    return -1;
}

/* ORIGIN[/KIND]; a bare "origin/" is left to Python. */
int
origin_kind_of(span token, int *origin, int *kind)
{
    const unsigned char *slash = memchr(token.p, '/', token.n);
    span name = {token.p, slash ? (size_t)(slash - token.p) : token.n};
    *origin = -1;
    for (int i = 0; i < 3; i++) {
        if (span_equals(name, origin_names[i], origin_lens[i])) {
            *origin = i;
            break;
        }
    }
    if (*origin < 0) {
        return -1;
    }
    *kind = 0;
    if (slash == NULL) {
        return 0;
    }
    span suffix = {slash + 1, token.n - name.n - 1};
    for (int i = 1; i < 4; i++) {
        if (span_equals(suffix, kind_names[i], kind_lens[i])) {
            *kind = i;
            return 0;
        }
    }
    return -1;
}

/* UPTIME: "-" (has_mono = 0) or "+WHOLE.FRACTION" with a canonical WHOLE and
 * exactly nine fraction digits, at most 2**64-1 nanoseconds. */
int
parse_uptime(span token, int *has_mono, uint64_t *mono)
{
    if (token.n == 1 && token.p[0] == '-') {
        *has_mono = 0;
        return 0;
    }
    if (token.n < 12 || token.p[0] != '+' || token.p[token.n - 10] != '.') {
        return -1;
    }
    uint64_t whole;
    if (plain_u64(token.p + 1, token.n - 11, &whole) < 0) {
        return -1;
    }
    long fraction = fixed_digits(token.p + token.n - 9, 9);
    if (fraction < 0 || whole > (UINT64_MAX - (uint64_t)fraction) / NS_PER_SEC) {
        return -1;
    }
    *has_mono = 1;
    *mono = whole * NS_PER_SEC + (uint64_t)fraction;
    return 0;
}

/* SOURCE: "-", or split as source.partition(":") then tail.partition(":")
 * does, with LINE empty or decimal digits (at most 2**64-1). */
int
parse_source(span token, span *file, uint64_t *line, span *func)
{
    file->p = func->p = token.p;
    file->n = func->n = 0;
    *line = 0;
    if (token.n == 1 && token.p[0] == '-') {
        return 0;
    }
    const unsigned char *end = token.p + token.n;
    const unsigned char *colon = memchr(token.p, ':', token.n);
    if (colon == NULL) {
        file->n = token.n;
        return 0;
    }
    file->n = (size_t)(colon - token.p);
    const unsigned char *line_text = colon + 1;
    const unsigned char *second = memchr(line_text, ':', (size_t)(end - line_text));
    const unsigned char *line_end = second ? second : end;
    if (line_end > line_text &&
        digits_u64(line_text, (size_t)(line_end - line_text), line) < 0) {
        return -1;
    }
    if (second != NULL) {
        func->p = second + 1;
        func->n = (size_t)(end - second - 1);
    }
    return 0;
}
