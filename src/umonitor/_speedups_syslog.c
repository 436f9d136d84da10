/*
 * syslog_lines(buf, pos, end, max_frame, host, seq, now_ns[, tally])
 *     -> (new_pos, text, seq, count)
 *
 * The syslog intake's fast path: consecutive complete RFC 6587 frames of a
 * TCP stream (octet-counted, or starting with '<' and ended by LF or NUL),
 * each a plain RFC 5424 message from `host`, formatted as the log lines
 * SyslogIntake would store for them (origin "syslog", numbered seq+1, seq+2…),
 * byte for byte. It stops before the first frame outside the plain case, so
 * that the Python parser decides it; see syslog_lines_doc for the rules.
 */

#include "_speedups.h"

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

/* Formats one frame's line at out's end and sets *severity_out; 0 on success,
 * 1 if the frame is not plain (nothing written), -1 on MemoryError. */
static int
syslog_line(outbuf *out, const unsigned char *frame, size_t n, span host, uint64_t seq,
            long long now_second, uint32_t now_rest, int now_ok, unsigned *severity_out)
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
    *severity_out = severity;
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

PyObject *
syslog_lines(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 7 && nargs != 8) {
        PyErr_Format(PyExc_TypeError, "syslog_lines() takes 7 or 8 arguments (%zd given)",
                     nargs);
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
    long long tally[8] = {0};
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
        unsigned severity = 0;
        int rc = syslog_line(&out, frame, frame_len, host, seq + 1, now_second, now_rest, now_ok,
                             &severity);
        if (rc < 0) {
            goto done;
        }
        if (rc > 0) {
            break;
        }
        seq++;
        count++;
        tally[severity]++;
        at = next;
    }
    if (add_tally(nargs == 8 ? args[7] : NULL, tally) < 0) {
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

const char syslog_lines_doc[] = PyDoc_STR(
"syslog_lines(buf, pos, end, max_frame, host, seq, now_ns[, tally])\n"
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
"first other frame; text holds the lines joined by newlines, no trailing one;\n"
"tally, an array('q') of 8 items, gets them added per severity.");
