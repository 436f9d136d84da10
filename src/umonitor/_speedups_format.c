/*
 * umonitor._speedups.format_records: the collector's ingest fast path.
 *
 * format_records(buf, pos, end, max_body, high, now_ns[, tally])
 *     -> (new_pos, text, new_high, written)
 *
 * Reads consecutive complete RECORD frames (docs/protocol.md §2.2) from
 * buf[pos:end] and formats each as the line LineFormatter.line() in
 * umonitor/store/logfile.py would produce for origin "app", byte for byte.
 * Records whose seq is <= the running high mark are consumed but not written
 * (replay dedup); every written record raises the high mark to its seq.
 * written counts the lines in text (what retention counts per file); tally,
 * an array('q') of 8 items, gets the written lines added per severity (what
 * the collector reports, umonitor/store/tally.py).
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
 */

#include "_speedups.h"

#define FRAME_HEADER 5          /* length u32 | type u8 */
#define RECORD_TYPE 0x02
#define RECORD_HEAD 36          /* seq .. func_len */
#define FIELD_HEAD 3            /* key_len u8 | value_len u16 */
#define FLAG_WALL 0x01

static const char *const origin_kinds[4] = {
    "app", "app/enter", "app/exit", "app/crash",
};
static const unsigned char origin_kind_lens[4] = {3, 9, 8, 9};

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

PyObject *
format_records(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 6 && nargs != 7) {
        PyErr_Format(PyExc_TypeError,
                     "format_records() takes 6 or 7 arguments (%zd given)", nargs);
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
    long long tally[8] = {0};
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
        tally[severity]++;
    }

    if (add_tally(nargs == 7 ? args[6] : NULL, tally) < 0) {
        goto done;
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

const char format_records_doc[] = PyDoc_STR(
"format_records(buf, pos, end, max_body, high, now_ns[, tally])\n"
"    -> (new_pos, text, new_high, written)\n"
"\n"
"Format the run of complete, common-case RECORD frames at buf[pos:end] as log\n"
"lines (origin \"app\"), exactly as LineFormatter.line() would. Records with\n"
"seq <= the running high mark are consumed but not written. Stops before the\n"
"first frame it does not handle; new_pos is that frame's offset. text holds the\n"
"written lines joined by newlines, without a trailing one; written counts them.\n"
"tally, an array('q') of 8 items, gets them added per severity.");
