/*
 * umonitor._speedups.summarize_lines and scan_lines: the block index's fast
 * paths (umonitor/store/blocks.py, docs/block-index.md).
 *
 * summarize_lines(data, pos, end, stop_after, counters, grams) -> new_pos
 * scan_lines(data, pos, end, since_ns, until_ns, max_severity, origin_mask,
 *            key) -> [(line_start, time_ns or None), ...]
 *
 * Both read consecutive complete log file lines from data[pos:end] and take
 * the record lines whose six tokens (TIME SEVERITY ORIGIN[/KIND] SEQ UPTIME
 * SOURCE) are printable ASCII in their canonical spelling, which parse_line()
 * in umonitor/store/logfile.py reads as the same record; MESSAGE and FIELDS
 * may hold any byte but a newline, since neither function decodes them.
 * summarize_lines adds what blocks.add_line adds for each line it takes and
 * stops before any other; scan_lines keeps the lines a query may want, and
 * leaves every line it does not take to its caller. Neither reads outside
 * data[pos:end]; summarize_lines makes no Python object per line.
 */

#include "_speedups.h"

/* blocks.py's counters (an array('q') of N_COUNTERS) and gram bitmap. */
enum { LINES, RECORDS, MIN_NS, MAX_NS, SEVERITIES, ORIGINS, COUNTS };
#define IRREGULAR 8 /* in ORIGINS: a message not written as escape() writes it */
#define N_COUNTERS (COUNTS + 8)
#define GRAM_BITS (37 * 37 * 37)
#define GRAM_BYTES ((GRAM_BITS + 7) / 8)
#define KIND_SHIFT 4

/* Gram codes (letters 1-26 either case, digits 27-36, else 0), ASCII case
 * folding, and how common each byte is in log messages (0 rarest). */
static unsigned char gram_code[256];
static unsigned char fold_byte[256];
static unsigned char byte_commonness[256];

void
blocks_init(void)
{
    /* Roughly most common first; bytes not listed are the rarest. */
    static const char common[] = " etaoinsrlhdcu0m1:2=p.f/g-3b4y5w6_v789xk,()[]jqz";
    size_t n = sizeof common - 1;
    for (int c = 0; c < 256; c++) {
        gram_code[c] = 0;
        fold_byte[c] = (unsigned char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        byte_commonness[c] = 0;
    }
    for (int i = 0; i < 26; i++) {
        gram_code['a' + i] = gram_code['A' + i] = (unsigned char)(1 + i);
    }
    for (int i = 0; i < 10; i++) {
        gram_code['0' + i] = (unsigned char)(27 + i);
    }
    for (size_t i = 0; i < n; i++) {
        byte_commonness[(unsigned char)common[i]] = (unsigned char)(n - i);
    }
}

/* What a taken record line says that the summary and the scan need. */
typedef struct {
    long long time_ns; /* saturated to int64, as blocks.clamp64 */
    int severity;
    int origin;
    int kind;
    const unsigned char *message; /* after the sixth space, up to the first TAB */
    size_t message_len;
} record_view;

/* One line (without its newline). 1 with *out set when it is a record line
 * this path takes, 0 otherwise. */
static int
read_record_line(const unsigned char *line, size_t len, time_cache *cache, record_view *out)
{
    const unsigned char *p = line;
    const unsigned char *end = line + len;
    span tokens[6];
    if (len == 0 || line[0] == '#') {
        return 0;
    }
    /* Six tokens of printable ASCII, each ended by a single space. A byte
     * outside '!'..'~' here (TAB, control, non-ASCII) leaves the line to
     * parse_line, which splits the decoded text on spaces alone. */
    for (int i = 0; i < 6; i++) {
        const unsigned char *start = p;
        for (;;) {
            if (p == end) {
                return 0;
            }
            unsigned char c = *p;
            if (c == ' ') {
                break;
            }
            if ((unsigned)(c - 0x21) > 0x7E - 0x21) {
                return 0;
            }
            p++;
        }
        tokens[i].p = start;
        tokens[i].n = (size_t)(p - start);
        p++;
    }
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
    uint64_t mono;
    if (parse_uptime(tokens[4], &has_mono, &mono) < 0) {
        return 0;
    }
    span file, func;
    uint64_t line_no;
    if (parse_source(tokens[5], &file, &line_no, &func) < 0) {
        return 0;
    }
    const unsigned char *tab = memchr(p, '\t', (size_t)(end - p));
    out->time_ns = time_ns_saturated(seconds, micros);
    out->severity = severity;
    out->origin = origin;
    out->kind = kind;
    out->message = p;
    out->message_len = (size_t)((tab ? tab : end) - p);
    return 1;
}

/* Every gram of p[0:n] into the bitmap (blocks.add_grams). */
static void
add_grams(const unsigned char *p, size_t n, unsigned char *bits)
{
    if (n < 3) {
        return;
    }
    unsigned a = gram_code[p[0]];
    unsigned b = gram_code[p[1]];
    for (size_t i = 2; i < n; i++) {
        unsigned c = gram_code[p[i]];
        unsigned gram = a * 1369 + b * 37 + c;
        bits[gram >> 3] |= (unsigned char)(1u << (gram & 7));
        a = b;
        b = c;
    }
}

static int
hex_value(unsigned char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Whether a message is not as logfile.escape writes it (blocks.irregular): a raw
 * control byte (C0, DEL, or C1 as UTF-8 C2 80..9F), or a backslash that does not
 * start one of escape()'s own sequences. Its text may then hide from the grams and
 * the key search, so its block is always read and the line always parsed. */
static int
irregular(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (c < 0x20 || c == 0x7f || (c == 0xc2 && i + 1 < n && p[i + 1] >= 0x80 &&
                                      p[i + 1] <= 0x9f)) {
            return 1;
        }
        if (c != '\\') {
            continue;
        }
        if (i + 1 == n) {
            return 1;
        }
        unsigned char e = p[++i];
        if (e == '\\' || e == 't' || e == 'n' || e == 'r') {
            continue;
        }
        if (e == 'x' && i + 2 < n) {
            int hi = hex_value(p[i + 1]), lo = hex_value(p[i + 2]);
            int v = hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
            if (v == 0x7f || (v >= 0 && v < 0x20 && v != '\t' && v != '\n' && v != '\r')) {
                i += 2;
                continue;
            }
        }
        if (e == 'u' && i + 4 < n && p[i + 1] == '0' && p[i + 2] == '0' &&
            (p[i + 3] == '8' || p[i + 3] == '9') && hex_value(p[i + 4]) >= 0) {
            i += 4;
            continue;
        }
        return 1;
    }
    return 0;
}

/* Gets a writable buffer of exactly `size` bytes; with `int64`, one of
 * N_COUNTERS signed 64-bit items. -1 with an exception set otherwise. */
static int
get_output(PyObject *obj, Py_buffer *view, Py_ssize_t size, int int64, const char *what)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE | (int64 ? PyBUF_FORMAT : 0)) < 0) {
        if (PyErr_ExceptionMatches(PyExc_BufferError)) {
            PyErr_Format(PyExc_ValueError, "%s must be a writable buffer", what);
        }
        return -1;
    }
    int ok = view->len == size;
    if (ok && int64) {
        const char *f = view->format ? view->format : "B";
        if (*f == '@' || *f == '=') {
            f++;
        }
        ok = view->itemsize == 8 && (strcmp(f, "q") == 0 || strcmp(f, "l") == 0);
    }
    if (!ok) {
        PyErr_Format(PyExc_ValueError,
                     int64 ? "%s must be an array('q') of %zd items"
                           : "%s must be a bytearray of %zd bytes",
                     what, int64 ? (Py_ssize_t)N_COUNTERS : size);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

PyObject *
summarize_lines(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError, "summarize_lines() takes 6 arguments (%zd given)", nargs);
        return NULL;
    }
    Py_ssize_t pos, end;
    if (read_span(args, &pos, &end) < 0) {
        return NULL;
    }
    Py_ssize_t stop_after = PyNumber_AsSsize_t(args[3], NULL);
    if (stop_after == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_buffer view, counters_view, grams_view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (check_span(pos, end, view.len, "data") < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    if (get_output(args[4], &counters_view, N_COUNTERS * 8, 1, "counters") < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    if (get_output(args[5], &grams_view, GRAM_BYTES, 0, "grams") < 0) {
        PyBuffer_Release(&counters_view);
        PyBuffer_Release(&view);
        return NULL;
    }

    const unsigned char *base = (const unsigned char *)view.buf;
    unsigned char *bits = (unsigned char *)grams_view.buf;
    long long counters[N_COUNTERS];
    memcpy(counters, counters_view.buf, sizeof counters);
    time_cache cache;
    memset(&cache, 0, sizeof cache);
    Py_ssize_t at = pos;
    while (at < end && at < stop_after) {
        const unsigned char *line = base + at;
        const unsigned char *newline = memchr(line, '\n', (size_t)(end - at));
        record_view record;
        if (newline == NULL ||
            !read_record_line(line, (size_t)(newline - line), &cache, &record)) {
            break;
        }
        counters[LINES] += 1;
        counters[RECORDS] += 1;
        counters[COUNTS + record.severity] += 1;
        counters[SEVERITIES] |= 1LL << record.severity;
        counters[ORIGINS] |= (1LL << record.origin) | (1LL << (KIND_SHIFT + record.kind));
        if (irregular(record.message, record.message_len)) {
            counters[ORIGINS] |= IRREGULAR;
        }
        if (record.time_ns < counters[MIN_NS]) {
            counters[MIN_NS] = record.time_ns;
        }
        if (record.time_ns > counters[MAX_NS]) {
            counters[MAX_NS] = record.time_ns;
        }
        add_grams(record.message, record.message_len, bits);
        at = (newline - base) + 1;
    }
    memcpy(counters_view.buf, counters, sizeof counters);
    PyBuffer_Release(&grams_view);
    PyBuffer_Release(&counters_view);
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(at);
}

const char summarize_lines_doc[] = PyDoc_STR(
"summarize_lines(data, pos, end, stop_after, counters, grams) -> new_pos\n"
"\n"
"Add the run of complete record lines at data[pos:end] (pos at a line start,\n"
"every line ending with b\"\\n\") to a block summary exactly as\n"
"umonitor.store.blocks.add_line adds each: counters, an array('q') of\n"
"blocks.N_COUNTERS, gets LINES and RECORDS +1, the severity's count +1, its\n"
"bit in SEVERITIES, the origin's bit (app 1, console 2, syslog 4) and\n"
"1 << (4 + kind) in ORIGINS (and 8 when the MESSAGE is not as escape()\n"
"writes it: blocks.irregular), and the record time (saturated to int64) in\n"
"MIN_NS and MAX_NS; grams, a bytearray of blocks.GRAM_BYTES, gets the bit of\n"
"every gram of the MESSAGE bytes (after the sixth space, up to the first TAB\n"
"or the line's end). Takes a line only when its first six tokens are each\n"
"followed by a single space, hold printable ASCII alone (no TAB, control or\n"
"non-ASCII byte) and are what parse_line() reads, in the canonical spelling:\n"
"TIME as YYYY-MM-DDTHH:MM:SS.uuuuuuZ with a real date, an exact severity name,\n"
"ORIGIN[/enter|/exit|/crash], SEQ without leading zeros up to 2**64-1, UPTIME\n"
"'-' or +WHOLE.NNNNNNNNN up to 2**64-1 ns, SOURCE '-' or FILE[:LINE[:FUNC]]\n"
"with LINE empty or decimal up to 2**64-1. MESSAGE and FIELDS may hold any\n"
"byte but a newline. Stops before the first line it does not take (a '#' or\n"
"empty line, a line without its newline before end, any other), so that\n"
"parse_line() decides it, and after the line whose newline takes the position\n"
"to stop_after or past it. new_pos is where it stopped.");

/* Whether key[0:k] (lowercase) occurs in p[0:n] ignoring ASCII case. */
static int
contains_folded(const unsigned char *p, size_t n, const unsigned char *key, size_t k)
{
    if (k == 0) {
        return 1;
    }
    if (k > n) {
        return 0;
    }
    /* Anchor on the key's rarest byte: find it, then compare the key around it. */
    size_t r = 0;
    for (size_t i = 1; i < k; i++) {
        if (byte_commonness[key[i]] < byte_commonness[key[r]]) {
            r = i;
        }
    }
    unsigned char want = key[r];
    int letter = want >= 'a' && want <= 'z';
    const unsigned char *at = p + r;
    const unsigned char *last = p + (n - k) + r; /* the last place the anchor can be */
    while (at <= last) {
        const unsigned char *hit;
        if (!letter) {
            hit = memchr(at, want, (size_t)(last - at) + 1);
            if (hit == NULL) {
                return 0;
            }
        }
        else {
            /* Both cases at once, eight bytes at a time: (byte | 0x20) == want. */
            const uint64_t ones = 0x0101010101010101ULL;
            const uint64_t pattern = ones * want;
            hit = NULL;
            while (last - at >= 7) {
                uint64_t word;
                memcpy(&word, at, 8);
                uint64_t x = (word | (ones * 0x20)) ^ pattern;
                if (((x - ones) & ~x & (ones * 0x80)) != 0) {
                    break;
                }
                at += 8;
            }
            for (; at <= last; at++) {
                if ((*at | 0x20) == want) {
                    hit = at;
                    break;
                }
            }
            if (hit == NULL) {
                return 0;
            }
        }
        const unsigned char *start = hit - r;
        size_t i = 0;
        while (i < k && fold_byte[start[i]] == key[i]) {
            i++;
        }
        if (i == k) {
            return 1;
        }
        at = hit + 1;
    }
    return 0;
}

static int
append_line(PyObject *out, Py_ssize_t start, const long long *time_ns)
{
    PyObject *item = PyTuple_New(2);
    if (item == NULL) {
        return -1;
    }
    PyObject *where = PyLong_FromSsize_t(start);
    PyObject *when = time_ns ? PyLong_FromLongLong(*time_ns) : Py_NewRef(Py_None);
    if (where == NULL || when == NULL) {
        Py_XDECREF(where);
        Py_XDECREF(when);
        Py_DECREF(item);
        return -1;
    }
    PyTuple_SET_ITEM(item, 0, where);
    PyTuple_SET_ITEM(item, 1, when);
    int failed = PyList_Append(out, item);
    Py_DECREF(item);
    return failed;
}

PyObject *
scan_lines(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 8) {
        PyErr_Format(PyExc_TypeError, "scan_lines() takes 8 arguments (%zd given)", nargs);
        return NULL;
    }
    Py_ssize_t pos, end;
    if (read_span(args, &pos, &end) < 0) {
        return NULL;
    }
    for (int i = 3; i < 7; i++) {
        if (!PyLong_Check(args[i])) {
            PyErr_SetString(PyExc_TypeError,
                            "since_ns, until_ns, max_severity and origin_mask must be ints");
            return NULL;
        }
    }
    long long since_ns = PyLong_AsLongLong(args[3]);
    if (since_ns == -1 && PyErr_Occurred()) {
        return NULL;
    }
    long long until_ns = PyLong_AsLongLong(args[4]);
    if (until_ns == -1 && PyErr_Occurred()) {
        return NULL;
    }
    long long max_severity;
    if (as_saturated_ll(args[5], &max_severity) < 0) {
        return NULL;
    }
    /* origin_mask & 7 as Python computes it, for any int. */
    PyObject *seven = PyLong_FromLong(7);
    if (seven == NULL) {
        return NULL;
    }
    PyObject *low = PyNumber_And(args[6], seven);
    Py_DECREF(seven);
    if (low == NULL) {
        return NULL;
    }
    long origin_mask = PyLong_AsLong(low);
    Py_DECREF(low);
    if (origin_mask == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_buffer view, key_view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[7], &key_view, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    PyObject *out = NULL;
    if (check_span(pos, end, view.len, "data") < 0) {
        goto done;
    }
    out = PyList_New(0);
    if (out == NULL) {
        goto done;
    }
    const unsigned char *base = (const unsigned char *)view.buf;
    const unsigned char *key = (const unsigned char *)key_view.buf;
    size_t key_len = (size_t)key_view.len;
    time_cache cache;
    memset(&cache, 0, sizeof cache);
    Py_ssize_t at = pos;
    while (at < end) {
        const unsigned char *line = base + at;
        const unsigned char *newline = memchr(line, '\n', (size_t)(end - at));
        if (newline == NULL) {
            break;
        }
        record_view record;
        if (!read_record_line(line, (size_t)(newline - line), &cache, &record)) {
            if (append_line(out, at, NULL) < 0) {
                Py_CLEAR(out);
                goto done;
            }
        }
        else if (key_len && irregular(record.message, record.message_len)) {
            if (append_line(out, at, NULL) < 0) {  /* the key search cannot tell */
                Py_CLEAR(out);
                goto done;
            }
        }
        else if (since_ns <= record.time_ns && record.time_ns <= until_ns &&
                 record.severity <= max_severity && ((1L << record.origin) & origin_mask) &&
                 contains_folded(record.message, record.message_len, key, key_len)) {
            if (append_line(out, at, &record.time_ns) < 0) {
                Py_CLEAR(out);
                goto done;
            }
        }
        at = (newline - base) + 1;
    }

done:
    PyBuffer_Release(&key_view);
    PyBuffer_Release(&view);
    return out;
}

const char scan_lines_doc[] = PyDoc_STR(
"scan_lines(data, pos, end, since_ns, until_ns, max_severity, origin_mask, key)\n"
"    -> [(line_start, time_ns or None), ...]\n"
"\n"
"The lines of data[pos:end] (pos at a line start; a last piece without its\n"
"newline is ignored) a query may want, in file order. A record line taken as\n"
"summarize_lines takes it is kept with its time (saturated to int64) when\n"
"since_ns <= time <= until_ns, its severity <= max_severity, its origin's bit\n"
"(app 1, console 2, syslog 4) is in origin_mask, and key (lowercase ASCII, b\"\"\n"
"for any) occurs in its MESSAGE bytes with ASCII letters lowercased; it is\n"
"left out otherwise. Every other line (a '#' line, an empty one, one not\n"
"taken, and with a key one whose MESSAGE escape() would not write) is kept\n"
"with None, for the caller to parse with parse_line().\n"
"since_ns and until_ns must fit in int64.");

/* gram_list(bits) -> bytes: the set bits of a gram bitmap, ascending, as
 * little-endian u16 (blocks.gram_list). */
PyObject *
gram_list(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 1) {
        PyErr_Format(PyExc_TypeError, "gram_list() takes 1 argument (%zd given)", nargs);
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (view.len != GRAM_BYTES) {
        PyErr_Format(PyExc_ValueError, "bits must be %d bytes", GRAM_BYTES);
        PyBuffer_Release(&view);
        return NULL;
    }
    const unsigned char *bits = view.buf;
    Py_ssize_t count = 0;
    for (Py_ssize_t i = 0; i < view.len; i++) {
        count += __builtin_popcount(bits[i]);
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, count * 2);
    if (out != NULL) {
        unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
        for (Py_ssize_t i = 0; i < view.len; i++) {
            for (unsigned byte = bits[i]; byte; byte &= byte - 1) {
                unsigned gram = (unsigned)(i * 8 + __builtin_ctz(byte));
                *o++ = (unsigned char)(gram & 0xff);
                *o++ = (unsigned char)(gram >> 8);
            }
        }
    }
    PyBuffer_Release(&view);
    return out;
}

const char gram_list_doc[] = PyDoc_STR(
"gram_list(bits) -> bytes\n"
"\n"
"The set bits of a gram bitmap (blocks.GRAM_BYTES bytes), ascending, each as a\n"
"little-endian u16: how the index keeps a block's grams when that is smaller.");
