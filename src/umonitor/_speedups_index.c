/*
 * umonitor._speedups.parse_record_lines: the indexer's fast path.
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

#include "_speedups.h"

#define ROW_SIZE 11
#define MAX_FIELDS 256

static const char *const origin_names[3] = {"app", "console", "syslog"};
static const unsigned char origin_lens[3] = {3, 7, 6};
static const char *const kind_names[4] = {"", "enter", "exit", "crash"};
static const unsigned char kind_lens[4] = {0, 5, 4, 5};
static PyObject *origin_strs[3];

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
 * the exact time): index_schema.py's record_row does the same. */
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
    /* seq and mono as SQLite's signed INTEGER holds them (index_schema.py's sql_u64). */
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

PyObject *
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

const char parse_record_lines_doc[] = PyDoc_STR(
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

/* Interns the origin names the rows share; -1 with an exception set on failure. */
int
parse_record_lines_init(void)
{
    for (int i = 0; i < 3; i++) {
        if (origin_strs[i] == NULL) {
            origin_strs[i] = PyUnicode_InternFromString(origin_names[i]);
            if (origin_strs[i] == NULL) {
                return -1;
            }
        }
    }
    return 0;
}
