/*
 * umonitor._speedups: an optional accelerator for the collector's ingest path.
 *
 * format_records(buf, pos, end, max_body, high, now_ns)
 *     -> (new_pos, text, new_high, written)
 *
 * Reads consecutive complete RECORD frames (docs/protocol.md §2.2) from
 * buf[pos:end] and formats each as the line LineFormatter.line() in
 * umonitor/store/logfile.py would produce for origin "app", byte for byte.
 * Records whose seq is <= the running high mark are consumed but not written
 * (replay dedup); every written record raises the high mark to its seq.
 * written counts the lines in text (what retention counts per file).
 *
 * Only the common case is handled here. Before the first frame that is
 * incomplete, malformed, not a RECORD, or needs any escaping or quoting rule
 * beyond the simple ones below, the function stops and returns what it did so
 * far; the pure-Python decoder then deals with that frame. The common case:
 *   - every byte of file, function, message, field keys and field values is
 *     printable ASCII (0x20..0x7E) other than a backslash;
 *   - file and function hold no space or ':', and file is not exactly "-";
 *   - field keys hold no space, '=' or '"';
 *   - the record's time (wall_ns with flags bit 0, else now_ns) lies between
 *     0 and the end of year 9999.
 *
 * The function never reads outside buf[pos:end] and never keeps the buffer
 * exported after it returns. Lines are joined with "\n" without a trailing
 * newline.
 *
 * parse_record_lines(data, pos, end) -> (new_pos, rows)
 *
 * The indexer's direction: reads consecutive complete log file lines
 * (docs/storage.md) from data[pos:end] and returns, for each, the row values
 * parse_line() in umonitor/store/logfile.py gives for it. It takes only plain
 * printable-ASCII record lines with canonical tokens and simple fields, and
 * stops before any other line so that parse_line() decides it; see
 * parse_record_lines_doc below for the exact rules. It never reads outside
 * data[pos:end] either.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define FRAME_HEADER 5          /* length u32 | type u8 */
#define RECORD_TYPE 0x02
#define RECORD_HEAD 36          /* seq .. func_len */
#define FIELD_HEAD 3            /* key_len u8 | value_len u16 */
#define FLAG_WALL 0x01
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

static unsigned char byte_class[256];

static const char *const severity_names[8] = {
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
};
static const unsigned char severity_lens[8] = {5, 5, 4, 3, 7, 6, 4, 5};

static const char *const origin_kinds[4] = {
    "app", "app/enter", "app/exit", "app/crash",
};
static const unsigned char origin_kind_lens[4] = {3, 9, 8, 9};

/* The "YYYY-MM-DDTHH:MM:SS" text of one second, cached. Single-phase module
 * initialisation and the GIL keep this from being shared concurrently. */
static long long cached_second = -1;
static char cached_date[19];

static void
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

static inline unsigned
classify(const unsigned char *p, size_t n)
{
    unsigned acc = 0;
    for (size_t i = 0; i < n; i++) {
        acc |= byte_class[p[i]];
    }
    return acc;
}

static inline uint16_t
be16(const unsigned char *p)
{
    return (uint16_t)(((unsigned)p[0] << 8) | p[1]);
}

static inline uint32_t
be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline uint64_t
be64(const unsigned char *p)
{
    return ((uint64_t)be32(p) << 32) | be32(p + 4);
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

/* Fills cached_date for `second` (0..MAX_SECOND); returns 0, or -1 if the
 * platform cannot convert it. */
static int
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

typedef struct {
    char *data;
    size_t len;
    size_t cap;
} outbuf;

/* Makes room for `extra` more bytes; on failure sets MemoryError. */
static int
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

/* Reads a Python int into *value, saturating at the long long range. */
static int
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
static int
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
static int
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
static int read_span(PyObject *const *args, Py_ssize_t *pos, Py_ssize_t *end)
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

static int check_span(Py_ssize_t pos, Py_ssize_t end, Py_ssize_t len, const char *what)
{
    if (pos < 0 || end < pos || end > len) {
        PyErr_Format(PyExc_ValueError,
                     "need 0 <= pos <= end <= len(%s), got pos=%zd end=%zd len=%zd",
                     what, pos, end, len);
        return -1;
    }
    return 0;
}

static PyObject *
format_records(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError,
                     "format_records() takes 6 arguments (%zd given)", nargs);
        return NULL;
    }
    Py_ssize_t pos, end;
    if (read_span(args, &pos, &end) < 0) {
        return NULL;
    }
    long long max_body;
    if (as_saturated_ll(args[3], &max_body) < 0) {
        return NULL;
    }
    PyObject *high_obj = args[4];
    uint64_t high;
    int high_above_all;
    if (read_high(high_obj, &high, &high_above_all) < 0) {
        return NULL;
    }
    long long now_second = 0;
    uint32_t now_rest = 0;
    int now_ok;
    if (split_now(args[5], &now_second, &now_rest, &now_ok) < 0) {
        return NULL;
    }

    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    outbuf out = {NULL, 0, 0};
    if (check_span(pos, end, view.len, "buf") < 0) {
        goto done;
    }

    const unsigned char *base = (const unsigned char *)view.buf;
    Py_ssize_t at = pos;
    Py_ssize_t lines = 0;
    int written = 0;
    unsigned char quote[256];

    if (end - pos >= FRAME_HEADER) {
        size_t guess = (size_t)(end - pos);
        if (out_reserve(&out, guess + guess / 2 + 256) < 0) {
            goto done;
        }
    }

    while (end - at >= FRAME_HEADER) {
        const unsigned char *frame = base + at;
        uint32_t length = be32(frame);
        if (length == 0 || (long long)length - 1 > max_body) {
            break;
        }
        if ((size_t)length > (size_t)(end - at - 4)) {
            break;  /* incomplete */
        }
        if (frame[4] != RECORD_TYPE) {
            break;
        }
        const unsigned char *body = frame + FRAME_HEADER;
        const unsigned char *stop = frame + 4 + length;
        if ((size_t)(stop - body) < RECORD_HEAD) {
            break;
        }
        uint64_t seq = be64(body);
        uint64_t mono = be64(body + 8);
        uint64_t wall_bits = be64(body + 16);
        unsigned severity = body[24];
        unsigned kind = body[25];
        unsigned flags = body[26];
        unsigned nfields = body[27];
        uint32_t line = be32(body + 28);
        size_t file_len = be16(body + 32);
        size_t func_len = be16(body + 34);
        if (seq == 0 || severity > 7 || kind > 3) {
            break;
        }

        /* Validate the whole frame before writing anything for it. */
        const unsigned char *p = body + RECORD_HEAD;
        if ((size_t)(stop - p) < file_len + func_len) {
            break;
        }
        const unsigned char *file = p;
        const unsigned char *func = p + file_len;
        p += file_len + func_len;
        if (classify(file, file_len) & MASK_TOKEN) {
            break;
        }
        if (classify(func, func_len) & MASK_TOKEN) {
            break;
        }
        if (file_len == 1 && file[0] == '-') {
            break;
        }
        const unsigned char *fields = p;
        int fast = 1;
        for (unsigned i = 0; i < nfields; i++) {
            if ((size_t)(stop - p) < FIELD_HEAD) {
                fast = 0;
                break;
            }
            size_t key_len = p[0];
            size_t value_len = be16(p + 1);
            p += FIELD_HEAD;
            if (key_len == 0 || (size_t)(stop - p) < key_len + value_len) {
                fast = 0;
                break;
            }
            if (classify(p, key_len) & MASK_KEY) {
                fast = 0;
                break;
            }
            unsigned value_class = classify(p + key_len, value_len);
            if (value_class & C_BAD) {
                fast = 0;
                break;
            }
            quote[i] = (unsigned char)(value_len == 0 || (value_class & MASK_VALUE_QUOTE));
            p += key_len + value_len;
        }
        if (!fast) {
            break;
        }
        const unsigned char *message = p;
        size_t message_len = (size_t)(stop - p);
        if (classify(message, message_len) & MASK_TEXT) {
            break;
        }
        long long second;
        uint32_t rest;
        if (flags & FLAG_WALL) {
            int64_t wall = (int64_t)wall_bits;
            if (wall < 0) {
                break;
            }
            /* An i64 of nanoseconds ends in 2262, well before year 10000. */
            second = (long long)(wall / (int64_t)NS_PER_SEC);
            rest = (uint32_t)(wall % (int64_t)NS_PER_SEC);
        }
        else {
            if (!now_ok) {
                break;
            }
            second = now_second;
            rest = now_rest;
        }
        if (date_for(second) < 0) {
            break;
        }

        if (high_above_all || seq <= high) {
            at = stop - base;
            continue;
        }

        /* Every part of the line is at most twice its bytes in the frame,
         * plus the fixed-width parts. */
        if (out_reserve(&out, 2 * (size_t)length + 160) < 0) {
            goto done;
        }
        char *o = out.data + out.len;
        if (written) {
            *o++ = '\n';
        }
        o = put_bytes(o, cached_date, sizeof cached_date);
        *o++ = '.';
        o = put_padded(o, rest / 1000, 6);
        *o++ = 'Z';
        *o++ = ' ';
        o = put_bytes(o, severity_names[severity], severity_lens[severity]);
        *o++ = ' ';
        o = put_bytes(o, origin_kinds[kind], origin_kind_lens[kind]);
        *o++ = ' ';
        o = put_u64(o, seq);
        *o++ = ' ';
        *o++ = '+';
        o = put_u64(o, mono / NS_PER_SEC);
        *o++ = '.';
        o = put_padded(o, (uint32_t)(mono % NS_PER_SEC), 9);
        *o++ = ' ';
        if (file_len == 0 && func_len == 0 && line == 0) {
            *o++ = '-';
        }
        else {
            o = put_bytes(o, file, file_len);
            *o++ = ':';
            if (line) {
                o = put_u64(o, line);
            }
            *o++ = ':';
            o = put_bytes(o, func, func_len);
        }
        *o++ = ' ';
        o = put_bytes(o, message, message_len);
        if (nfields) {
            *o++ = '\t';
            p = fields;
            for (unsigned i = 0; i < nfields; i++) {
                size_t key_len = p[0];
                size_t value_len = be16(p + 1);
                p += FIELD_HEAD;
                if (i) {
                    *o++ = ' ';
                }
                o = put_bytes(o, p, key_len);
                p += key_len;
                *o++ = '=';
                if (quote[i]) {
                    *o++ = '"';
                    for (size_t j = 0; j < value_len; j++) {
                        if (p[j] == '"') {
                            *o++ = '\\';
                        }
                        *o++ = (char)p[j];
                    }
                    *o++ = '"';
                }
                else {
                    o = put_bytes(o, p, value_len);
                }
                p += value_len;
            }
        }
        out.len = (size_t)(o - out.data);
        written = 1;
        high = seq;
        at = stop - base;
        lines++;
    }

    {
        PyObject *text = PyUnicode_New((Py_ssize_t)out.len, 127);
        if (text == NULL) {
            goto done;
        }
        if (out.len) {
            memcpy(PyUnicode_1BYTE_DATA(text), out.data, out.len);
        }
        PyObject *new_high = written ? PyLong_FromUnsignedLongLong(high) : Py_NewRef(high_obj);
        if (new_high == NULL) {
            Py_DECREF(text);
            goto done;
        }
        result = Py_BuildValue("(nNNn)", at, text, new_high, lines);
    }

done:
    PyMem_Free(out.data);
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(format_records_doc,
"format_records(buf, pos, end, max_body, high, now_ns)\n"
"    -> (new_pos, text, new_high, written)\n"
"\n"
"Format the run of complete, common-case RECORD frames at buf[pos:end] as log\n"
"lines (origin \"app\"), exactly as LineFormatter.line() would. Records with\n"
"seq <= the running high mark are consumed but not written. Stops before the\n"
"first frame it does not handle; new_pos is that frame's offset. text holds the\n"
"written lines joined by newlines, without a trailing one; written counts them.");

/* ---------------------------------------------------------------------------
 * parse_record_lines(data, pos, end) -> (new_pos, rows)
 *
 * The reverse direction, for the indexer: record lines of a log file back to
 * the row tuples index.py inserts, exactly as parse_line() in
 * umonitor/store/logfile.py reads them. The accepted common case is described
 * in parse_record_lines_doc below; every other line is left to Python.
 * ------------------------------------------------------------------------- */

#define ROW_SIZE 11
#define MAX_FIELDS 256
/* 1970-01-01 as a proleptic Gregorian ordinal (0001-01-01 is 1). */
#define EPOCH_ORDINAL 719163LL

static const char *const origin_names[3] = {"app", "console", "syslog"};
static const unsigned char origin_lens[3] = {3, 7, 6};
static const char *const kind_names[4] = {"", "enter", "exit", "crash"};
static const unsigned char kind_lens[4] = {0, 5, 4, 5};
static PyObject *origin_strs[3];

static const unsigned short days_before_month[13] = {
    0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334,
};
static const unsigned char days_in_month[13] = {
    0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31,
};

typedef struct {
    const unsigned char *p;
    size_t n;
} span;

/* What repeats from line to line within one call. */
typedef struct {
    unsigned char time_prefix[19];
    long long time_seconds;
    int have_time;
    span file_text;
    PyObject *file;
    span func_text;
    PyObject *func;
} line_cache;

static inline int
span_equals(span s, const char *text, size_t n)
{
    return s.n == n && memcmp(s.p, text, n) == 0;
}

static inline int
is_leap(long year)
{
    return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

/* Decimal digits as a u64; -1 when empty, not all digits, or above 2**64-1. */
static int
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
static int
plain_u64(const unsigned char *p, size_t n, uint64_t *out)
{
    if (n > 1 && p[0] == '0') {
        return -1;
    }
    return digits_u64(p, n, out);
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

/* "YYYY-MM-DDTHH:MM:SS" as seconds since the epoch, with what
 * calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%S")) accepts for this
 * exact shape: years 1..9999, real dates, hours 0..23, minutes 0..59 and
 * seconds 0..61 (60 and 61 simply add to the minute). -1 otherwise. */
static int
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

/* The TIME token (27 bytes, "YYYY-MM-DDTHH:MM:SS.uuuuuuZ"). */
static int
parse_time_token(span token, line_cache *cache, long long *seconds, long *micros)
{
    const unsigned char *p = token.p;
    if (token.n != 27 || p[19] != '.' || p[26] != 'Z') {
        return -1;
    }
    long us = fixed_digits(p + 20, 6);
    if (us < 0) {
        return -1;
    }
    if (!cache->have_time || memcmp(cache->time_prefix, p, 19) != 0) {
        long long value;
        if (prefix_seconds(p, &value) < 0) {
            return -1;
        }
        memcpy(cache->time_prefix, p, 19);
        cache->time_seconds = value;
        cache->have_time = 1;
    }
    *seconds = cache->time_seconds;
    *micros = us;
    return 0;
}

/* seconds * 10**9 + micros * 1000 as a Python int, saturated to what SQLite's
 * signed 64-bit INTEGER holds (years before 1678 and after 2262; the file keeps
 * the exact time): index.py's record_row does the same. */
static PyObject *
time_ns_object(long long seconds, long micros)
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
    return PyLong_FromLongLong(ns);
}

static int
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
static int
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
static int
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
static int
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

/* FIELDS in the simple shape: KEY=VALUE pairs separated by single spaces, KEY
 * of [!-~] without '=' and '"', VALUE either "..." without '"' or [!-~]*
 * without '"' and '=', and no key twice. Fills keys/values, sets *count. */
static int
parse_fields_simple(span text, span *keys, span *values, int *count)
{
    const unsigned char *p = text.p;
    const unsigned char *end = text.p + text.n;
    int n = 0;
    *count = 0;
    if (p == end) {
        return 0;
    }
    for (;;) {
        if (n == MAX_FIELDS) {
            return -1;
        }
        const unsigned char *key = p;
        while (p < end && *p != '=' && *p != ' ' && *p != '"') {
            p++;
        }
        if (p == key || p == end || *p != '=') {
            return -1;
        }
        keys[n].p = key;
        keys[n].n = (size_t)(p - key);
        p++;
        if (p < end && *p == '"') {
            const unsigned char *close = memchr(p + 1, '"', (size_t)(end - p - 1));
            if (close == NULL) {
                return -1;
            }
            values[n].p = p + 1;
            values[n].n = (size_t)(close - p - 1);
            p = close + 1;
        }
        else {
            const unsigned char *value = p;
            while (p < end && *p != ' ') {
                if (*p == '"' || *p == '=') {
                    return -1;
                }
                p++;
            }
            values[n].p = value;
            values[n].n = (size_t)(p - value);
        }
        for (int i = 0; i < n; i++) {
            if (keys[i].n == keys[n].n && memcmp(keys[i].p, keys[n].p, keys[n].n) == 0) {
                return -1;
            }
        }
        n++;
        if (p == end) {
            break;
        }
        if (*p != ' ' || p + 1 == end) {
            return -1;
        }
        p++;
    }
    *count = n;
    return 0;
}

static PyObject *
ascii_str(const unsigned char *p, size_t n)
{
    PyObject *text = PyUnicode_New((Py_ssize_t)n, 127);
    if (text != NULL && n) {
        memcpy(PyUnicode_1BYTE_DATA(text), p, n);
    }
    return text;
}

/* A str for `s`, shared with the previous line's when the bytes are equal. */
static PyObject *
cached_str(span s, span *last_text, PyObject **last)
{
    if (*last != NULL && last_text->n == s.n && memcmp(last_text->p, s.p, s.n) == 0) {
        return Py_NewRef(*last);
    }
    PyObject *text = ascii_str(s.p, s.n);
    if (text == NULL) {
        return NULL;
    }
    Py_XSETREF(*last, Py_NewRef(text));
    *last_text = s;
    return text;
}

/* json.dumps(dict(pairs)) for keys and values that need no JSON escaping
 * (printable ASCII without '"' and backslash). */
static PyObject *
fields_json(const span *keys, const span *values, int count)
{
    size_t size = 2;
    for (int i = 0; i < count; i++) {
        size += keys[i].n + values[i].n + 6 + (i ? 2 : 0);
    }
    PyObject *json = PyUnicode_New((Py_ssize_t)size, 127);
    if (json == NULL) {
        return NULL;
    }
    char *o = (char *)PyUnicode_1BYTE_DATA(json);
    *o++ = '{';
    for (int i = 0; i < count; i++) {
        if (i) {
            *o++ = ',';
            *o++ = ' ';
        }
        *o++ = '"';
        o = put_bytes(o, keys[i].p, keys[i].n);
        *o++ = '"';
        *o++ = ':';
        *o++ = ' ';
        *o++ = '"';
        o = put_bytes(o, values[i].p, values[i].n);
        *o++ = '"';
    }
    *o++ = '}';
    return json;
}

/* One line (without its newline). Returns 1 with *row set, 0 when the line is
 * not in the common case, -1 with an exception set. */
static int
parse_record_line(const unsigned char *line, size_t len, line_cache *cache, PyObject **row)
{
    if (len == 0 || line[0] == '#') {
        return 0;
    }
    const unsigned char *tab = NULL;
    for (size_t i = 0; i < len; i++) {
        if (byte_class[line[i]] & C_BAD) {
            if (line[i] != '\t' || tab != NULL) {
                return 0;
            }
            tab = line + i;
        }
    }
    /* The six single spaces before MESSAGE, all ahead of the TAB. */
    const unsigned char *limit = tab ? tab : line + len;
    const unsigned char *p = line;
    span tokens[6];
    for (int i = 0; i < 6; i++) {
        const unsigned char *space = memchr(p, ' ', (size_t)(limit - p));
        if (space == NULL) {
            return 0;
        }
        tokens[i].p = p;
        tokens[i].n = (size_t)(space - p);
        p = space + 1;
    }
    span message = {p, (size_t)(limit - p)};

    long long seconds;
    long micros;
    if (parse_time_token(tokens[0], cache, &seconds, &micros) < 0) {
        return 0;
    }
    int severity = severity_of(tokens[1]);
    if (severity < 0) {
        return 0;
    }
    int origin, kind;
    if (origin_kind_of(tokens[2], &origin, &kind) < 0) {
        return 0;
    }
    uint64_t seq;
    if (plain_u64(tokens[3].p, tokens[3].n, &seq) < 0) {
        return 0;
    }
    int has_mono;
    uint64_t mono = 0;
    if (parse_uptime(tokens[4], &has_mono, &mono) < 0) {
        return 0;
    }
    span file, func;
    uint64_t line_no;
    if (parse_source(tokens[5], &file, &line_no, &func) < 0) {
        return 0;
    }
    span keys[MAX_FIELDS];
    span values[MAX_FIELDS];
    int nfields = 0;
    if (tab != NULL) {
        span text = {tab + 1, (size_t)(line + len - tab - 1)};
        if (parse_fields_simple(text, keys, values, &nfields) < 0) {
            return 0;
        }
    }

    PyObject *tuple = PyTuple_New(ROW_SIZE);
    if (tuple == NULL) {
        return -1;
    }
    PyObject *items[ROW_SIZE];
    /* seq and mono as SQLite's signed INTEGER holds them (index.py's sql_u64). */
    items[0] = PyLong_FromLongLong((long long)seq);
    items[1] = time_ns_object(seconds, micros);
    items[2] = has_mono ? PyLong_FromLongLong((long long)mono) : Py_NewRef(Py_None);
    items[3] = PyLong_FromLong(severity);
    items[4] = Py_NewRef(origin_strs[origin]);
    items[5] = PyLong_FromLong(kind);
    items[6] = cached_str(file, &cache->file_text, &cache->file);
    items[7] = PyLong_FromUnsignedLongLong(line_no);
    items[8] = cached_str(func, &cache->func_text, &cache->func);
    items[9] = ascii_str(message.p, message.n);
    items[10] = nfields ? fields_json(keys, values, nfields) : Py_NewRef(Py_None);
    int failed = 0;
    for (int i = 0; i < ROW_SIZE; i++) {
        if (items[i] == NULL) {
            failed = 1;
        }
        else {
            PyTuple_SET_ITEM(tuple, i, items[i]);
        }
    }
    if (failed) {
        Py_DECREF(tuple);
        return -1;
    }
    *row = tuple;
    return 1;
}

static PyObject *
parse_record_lines(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError,
                     "parse_record_lines() takes 3 arguments (%zd given)", nargs);
        return NULL;
    }
    Py_ssize_t pos, end;
    if (read_span(args, &pos, &end) < 0) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    PyObject *rows = NULL;
    line_cache cache;
    memset(&cache, 0, sizeof cache);
    if (check_span(pos, end, view.len, "data") < 0) {
        goto done;
    }
    rows = PyList_New(0);
    if (rows == NULL) {
        goto done;
    }
    const unsigned char *base = (const unsigned char *)view.buf;
    Py_ssize_t at = pos;
    while (at < end) {
        const unsigned char *line = base + at;
        const unsigned char *newline = memchr(line, '\n', (size_t)(end - at));
        if (newline == NULL) {
            break;
        }
        PyObject *row = NULL;
        int taken = parse_record_line(line, (size_t)(newline - line), &cache, &row);
        if (taken < 0) {
            goto done;
        }
        if (taken == 0) {
            break;
        }
        int appended = PyList_Append(rows, row);
        Py_DECREF(row);
        if (appended < 0) {
            goto done;
        }
        at = (newline - base) + 1;
    }
    result = Py_BuildValue("(nO)", at, rows);

done:
    Py_XDECREF(rows);
    Py_XDECREF(cache.file);
    Py_XDECREF(cache.func);
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(parse_record_lines_doc,
"parse_record_lines(data, pos, end) -> (new_pos, rows)\n"
"\n"
"Parse the run of complete, common-case record lines in data[pos:end] (pos at\n"
"a line start, every line ending with b\"\\n\") into index rows\n"
"(seq, time_ns, mono_ns, severity, origin, kind, file, line, func, message,\n"
"fields), the values parse_line() gives, with fields as\n"
"json.dumps(dict(fields)) or None. Stops before the first line it does not\n"
"handle, so that parse_line() decides it: a '#' or empty line, a line without\n"
"its newline before end, a byte outside printable ASCII or a backslash (other\n"
"than one TAB ahead of the fields), a token parse_line() would reject or that\n"
"is not spelled canonically, a number beyond 2**64-1, or fields outside the\n"
"simple shape (single spaces between at most 256 KEY=VALUE pairs, VALUE quoted\n"
"without '\"' or bare without '\"' and '=', no repeated key). new_pos is the\n"
"start of the first line not taken.");

/* ---------------------------------------------------------------------------
 * syslog_lines(buf, pos, end, max_frame, host, seq, now_ns)
 *     -> (new_pos, text, seq, count)
 *
 * The syslog intake's fast path: consecutive complete RFC 6587 frames of a
 * TCP stream (octet-counted, or starting with '<' and ended by LF or NUL),
 * each a plain RFC 5424 message from `host`, formatted as the log lines
 * SyslogIntake would store for them (origin "syslog", numbered seq+1, seq+2…),
 * byte for byte. It stops before the first frame outside the plain case, so
 * that the Python parser decides it; see syslog_lines_doc for the rules.
 * ------------------------------------------------------------------------- */

static const char *const facility_names[24] = {
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news",
    "uucp", "cron", "authpriv", "ftp", "ntp", "audit", "alert", "clock",
    "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
};

/* A header token: 1..255 bytes of 0x21..0x7E other than '"', '=' and '\\'
 * (nothing in it needs escaping or quoting as a field value). */
static inline int
plain_token(const unsigned char *p, size_t n)
{
    if (n == 0 || n > 255) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (c < 0x21 || c > 0x7E || c == '"' || c == '=' || c == '\\') {
            return 0;
        }
    }
    return 1;
}

/* The RFC 3339 TIMESTAMP token as nanoseconds since the epoch, as
 * umonitor.protocol.syslog reads it (T or t, 1-9 fraction digits, Z, z, an
 * offset or none). 0 on success, -1 when it is not one or lies outside
 * 1970..9999 (the caller then leaves the frame to Python). */
static int
syslog_time_ns(const unsigned char *p, size_t n, long long *out)
{
    if (n < 19) {
        return -1;
    }
    unsigned char civil[19];
    memcpy(civil, p, 19);
    if (civil[10] != 'T' && civil[10] != 't') {
        return -1;
    }
    civil[10] = 'T';
    long long seconds;
    if (prefix_seconds(civil, &seconds) < 0 || fixed_digits(p + 17, 2) > 59) {
        return -1;
    }
    size_t at = 19;
    long long nanos = 0;
    if (at < n && p[at] == '.') {
        size_t digits = 0;
        at++;
        while (at < n && p[at] >= '0' && p[at] <= '9') {
            if (++digits > 9) {
                return -1;
            }
            nanos = nanos * 10 + (p[at] - '0');
            at++;
        }
        if (digits == 0) {
            return -1;
        }
        for (size_t i = digits; i < 9; i++) {
            nanos *= 10;
        }
    }
    if (at < n) {
        if (p[at] == 'Z' || p[at] == 'z') {
            at++;
        }
        else if (p[at] == '+' || p[at] == '-') {
            if (n - at != 6 || p[at + 3] != ':') {
                return -1;
            }
            long hours = fixed_digits(p + at + 1, 2);
            long minutes = fixed_digits(p + at + 4, 2);
            if (hours < 0 || hours > 23 || minutes < 0 || minutes > 59) {
                return -1;
            }
            long long shift = hours * 3600L + minutes * 60L;
            seconds -= p[at] == '+' ? shift : -shift;
            at += 6;
        }
    }
    /* Nanoseconds in a long long end in 2262: later times are Python's to store. */
    if (at != n || seconds < 0 || seconds > LLONG_MAX / (long long)NS_PER_SEC - 1) {
        return -1;
    }
    *out = seconds * (long long)NS_PER_SEC + nanos;
    return 0;
}

/* Cuts the next space-separated token of frame[*at:stop]; -1 when none. */
static inline int
next_token(const unsigned char *frame, size_t *at, size_t stop, span *token)
{
    if (*at >= stop) {
        return -1;
    }
    const unsigned char *start = frame + *at;
    const unsigned char *space = memchr(start, ' ', stop - *at);
    if (space == NULL) {
        return -1;  /* the message part is missing: leave it to Python */
    }
    token->p = start;
    token->n = (size_t)(space - start);
    *at = (size_t)(space - frame) + 1;
    return 0;
}

static inline char *
put_field(char *o, const char *key, size_t key_len, span value)
{
    *o++ = ' ';
    o = put_bytes(o, key, key_len);
    *o++ = '=';
    return put_bytes(o, value.p, value.n);
}

/* Formats one frame's line at out's end; 0 on success, 1 if the frame is not
 * plain (nothing written), -1 on MemoryError. */
static int
syslog_line(outbuf *out, const unsigned char *frame, size_t n, span host, uint64_t seq,
            long long now_second, uint32_t now_rest, int now_ok)
{
    /* parse_syslog_untrusted strips CR, LF and NUL from both ends first. */
    while (n && (frame[0] == '\r' || frame[0] == '\n' || frame[0] == 0)) {
        frame++;
        n--;
    }
    while (n && (frame[n - 1] == '\r' || frame[n - 1] == '\n' || frame[n - 1] == 0)) {
        n--;
    }
    if (n < 4 || frame[0] != '<') {
        return 1;
    }
    size_t at = 1;
    unsigned pri = 0;
    while (at < n && at <= 3 && frame[at] >= '0' && frame[at] <= '9') {
        pri = pri * 10 + (frame[at] - '0');
        at++;
    }
    if (at == 1 || at >= n || frame[at] != '>') {
        return 1;
    }
    at++;
    if (n - at < 2 || frame[at] != '1' || frame[at + 1] != ' ') {
        return 1;
    }
    at += 2;
    unsigned facility = pri >> 3 > 23 ? 23 : pri >> 3;
    unsigned severity = pri & 7;
    span stamp, hostname, app, procid, msgid;
    if (next_token(frame, &at, n, &stamp) < 0 || next_token(frame, &at, n, &hostname) < 0 ||
        next_token(frame, &at, n, &app) < 0 || next_token(frame, &at, n, &procid) < 0) {
        return 1;
    }
    /* MSGID may end the frame (then there is neither SD nor message). */
    if (at >= n) {
        return 1;
    }
    {
        const unsigned char *space = memchr(frame + at, ' ', n - at);
        msgid.p = frame + at;
        msgid.n = space ? (size_t)(space - msgid.p) : n - at;
        at = space ? (size_t)(space - frame) + 1 : n;
    }
    if (hostname.n != host.n || memcmp(hostname.p, host.p, host.n) != 0) {
        return 1;
    }
    if (!plain_token(app.p, app.n) || !plain_token(procid.p, procid.n) ||
        !plain_token(msgid.p, msgid.n)) {
        return 1;
    }
    /* STRUCTURED-DATA: only the NILVALUE here. */
    if (at >= n || frame[at] != '-' || (at + 1 < n && frame[at + 1] != ' ')) {
        return 1;
    }
    at += 1;
    if (at < n) {
        at += 1;  /* the space before MSG */
    }
    const unsigned char *msg = frame + at;
    size_t msg_len = n - at;
    if (msg_len >= 3 && msg[0] == 0xEF && msg[1] == 0xBB && msg[2] == 0xBF) {
        msg += 3;
        msg_len -= 3;
    }
    if (classify(msg, msg_len) & MASK_TEXT) {
        return 1;
    }
    long long second;
    uint32_t rest;
    if (stamp.n == 1 && stamp.p[0] == '-') {
        if (!now_ok) {
            return 1;
        }
        second = now_second;
        rest = now_rest;
    }
    else {
        long long ns;
        if (syslog_time_ns(stamp.p, stamp.n, &ns) < 0) {
            return 1;
        }
        second = ns / (long long)NS_PER_SEC;
        rest = (uint32_t)(ns % (long long)NS_PER_SEC);
    }
    if (date_for(second) < 0) {
        return 1;
    }
    const char *fac = facility_names[facility];
    size_t need = 28 + 8 + 8 + 21 + 5 + msg_len + 1 + 9 + strlen(fac) + 10 + hostname.n +
                  5 + app.n + 8 + procid.n + 7 + msgid.n + 1;
    if (out_reserve(out, need) < 0) {
        return -1;
    }
    char *o = out->data + out->len;
    if (out->len) {
        *o++ = '\n';
    }
    o = put_bytes(o, cached_date, 19);
    *o++ = '.';
    o = put_padded(o, rest / 1000, 6);
    *o++ = 'Z';
    *o++ = ' ';
    o = put_bytes(o, severity_names[severity], severity_lens[severity]);
    o = put_bytes(o, " syslog ", 8);
    o = put_u64(o, seq);
    o = put_bytes(o, " - - ", 5);
    o = put_bytes(o, msg, msg_len);
    o = put_bytes(o, "\tfacility=", 10);
    o = put_bytes(o, fac, strlen(fac));
    o = put_field(o, "hostname", 8, hostname);
    if (!(app.n == 1 && app.p[0] == '-')) {
        o = put_field(o, "app", 3, app);
    }
    if (!(procid.n == 1 && procid.p[0] == '-')) {
        o = put_field(o, "procid", 6, procid);
    }
    if (!(msgid.n == 1 && msgid.p[0] == '-')) {
        o = put_field(o, "msgid", 5, msgid);
    }
    out->len = (size_t)(o - out->data);
    return 0;
}

static PyObject *
syslog_lines(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 7) {
        PyErr_Format(PyExc_TypeError, "syslog_lines() takes 7 arguments (%zd given)", nargs);
        return NULL;
    }
    Py_ssize_t pos, end;
    if (read_span(args, &pos, &end) < 0) {
        return NULL;
    }
    long long max_frame;
    if (as_saturated_ll(args[3], &max_frame) < 0) {
        return NULL;
    }
    if (!PyBytes_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError, "host must be bytes");
        return NULL;
    }
    span host = {(const unsigned char *)PyBytes_AS_STRING(args[4]),
                 (size_t)PyBytes_GET_SIZE(args[4])};
    uint64_t seq;
    int seq_above_all;
    if (read_high(args[5], &seq, &seq_above_all) < 0) {
        return NULL;
    }
    long long now_second = 0;
    uint32_t now_rest = 0;
    int now_ok;
    if (split_now(args[6], &now_second, &now_rest, &now_ok) < 0) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    outbuf out = {NULL, 0, 0};
    if (check_span(pos, end, view.len, "buf") < 0) {
        goto done;
    }
    const unsigned char *base = (const unsigned char *)view.buf;
    Py_ssize_t at = pos;
    Py_ssize_t count = 0;
    /* A usable host is plain and not the NILVALUE; seq must have room to grow. */
    int usable = plain_token(host.p, host.n) && !(host.n == 1 && host.p[0] == '-') &&
                 !seq_above_all && seq < UINT64_MAX - (uint64_t)(end - pos) && max_frame > 0;
    int max_digits = 1;
    for (long long m = max_frame; m >= 10; m /= 10) {
        max_digits++;
    }
    while (usable && at < end) {
        const unsigned char *p = base + at;
        size_t avail = (size_t)(end - at);
        const unsigned char *frame;
        size_t frame_len;
        Py_ssize_t next;
        if (p[0] >= '1' && p[0] <= '9') {
            size_t digits = 1;
            unsigned long long length = (unsigned long long)(p[0] - '0');
            while (digits < avail && digits < (size_t)max_digits && p[digits] >= '0' &&
                   p[digits] <= '9') {
                length = length * 10 + (unsigned long long)(p[digits] - '0');
                digits++;
            }
            if (digits >= avail || p[digits] != ' ' || length > (unsigned long long)max_frame ||
                length > avail - digits - 1) {
                break;  /* incomplete, too long, or not octet counting: Python's turn */
            }
            frame = p + digits + 1;
            frame_len = (size_t)length;
            next = at + (Py_ssize_t)(digits + 1 + length);
        }
        else if (p[0] == '<') {
            size_t window = avail;
            if ((unsigned long long)window > (unsigned long long)max_frame + 1) {
                window = (size_t)max_frame + 1;
            }
            size_t cut = window;
            for (size_t i = 0; i < window; i++) {
                if (p[i] == '\n' || p[i] == 0) {
                    cut = i;
                    break;
                }
            }
            if (cut == window) {
                break;
            }
            frame = p;
            frame_len = cut;
            next = at + (Py_ssize_t)cut + 1;
        }
        else {
            break;
        }
        int rc = syslog_line(&out, frame, frame_len, host, seq + 1, now_second, now_rest, now_ok);
        if (rc < 0) {
            goto done;
        }
        if (rc > 0) {
            break;
        }
        seq++;
        count++;
        at = next;
    }
    {
        PyObject *text = PyUnicode_New((Py_ssize_t)out.len, 127);
        if (text == NULL) {
            goto done;
        }
        if (out.len) {
            memcpy(PyUnicode_1BYTE_DATA(text), out.data, out.len);
        }
        PyObject *new_seq = count ? PyLong_FromUnsignedLongLong(seq) : Py_NewRef(args[5]);
        if (new_seq == NULL) {
            Py_DECREF(text);
            goto done;
        }
        result = Py_BuildValue("(nNNn)", at, text, new_seq, count);
    }

done:
    PyMem_Free(out.data);
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(syslog_lines_doc,
"syslog_lines(buf, pos, end, max_frame, host, seq, now_ns)\n"
"    -> (new_pos, text, seq, count)\n"
"\n"
"Store lines for the run of complete frames at buf[pos:end] (pos at a frame\n"
"start) that SyslogStreamDecoder would cut and parse_syslog_untrusted read as\n"
"plain RFC 5424 from `host`: octet-counted ('LEN SP', LEN <= max_frame) or\n"
"'<'-led frames ended by LF or NUL; '<PRI>1 ', a '-' or valid RFC 3339 time in\n"
"1970..2262, HOSTNAME equal to host, APP-NAME, PROCID and MSGID as 1-255 bytes\n"
"of 0x21..0x7E without '\"', '=' or '\\\\', STRUCTURED-DATA '-', and a message\n"
"(after an optional BOM) of printable ASCII without a backslash. Records are\n"
"numbered from seq + 1; time is the message's, else now_ns. Stops before the\n"
"first other frame; text holds the lines joined by newlines, no trailing one.");

static PyMethodDef speedups_methods[] = {
    {"format_records", (PyCFunction)(void (*)(void))format_records, METH_FASTCALL,
     format_records_doc},
    {"parse_record_lines", (PyCFunction)(void (*)(void))parse_record_lines, METH_FASTCALL,
     parse_record_lines_doc},
    {"syslog_lines", (PyCFunction)(void (*)(void))syslog_lines, METH_FASTCALL, syslog_lines_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    "umonitor._speedups",
    "Optional C accelerator for the collector's ingest path and the indexer.",
    -1,
    speedups_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    init_byte_class();
    for (int i = 0; i < 3; i++) {
        if (origin_strs[i] == NULL) {
            origin_strs[i] = PyUnicode_InternFromString(origin_names[i]);
            if (origin_strs[i] == NULL) {
                return NULL;
            }
        }
    }
    return PyModule_Create(&speedups_module);
}
