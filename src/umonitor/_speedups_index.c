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

static PyObject *origin_strs[3];

/* What repeats from line to line within one call. */
typedef struct {
    time_cache time;
    span file_text;
    PyObject *file;
    span func_text;
    PyObject *func;
} line_cache;

/* The record's time as a Python int, saturated as time_ns_saturated() does. */
static PyObject *
time_ns_object(long long seconds, long micros)
{
    return PyLong_FromLongLong(time_ns_saturated(seconds, micros));
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
    if (parse_time_token(tokens[0], &cache->time, &seconds, &micros) < 0) {
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
