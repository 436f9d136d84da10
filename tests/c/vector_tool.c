/*
 * vector_tool - drive the C library's wire codec from the command line, so the
 * Python tests can check it against tests/vectors/native.json.
 *
 *   vector_tool encode-hello BOOT_HEX NAME TOKEN LIBRARY [LEVEL|none [trace]]
 *   vector_tool encode-record SEQ MONO_NS WALL_NS|none SEV KIND FILE LINE FUNC MESSAGE [KEY=VALUE...]
 *   vector_tool encode-dropped COUNT THROUGH
 *   vector_tool encode-bye
 *   vector_tool encode-level LEVEL
 *   vector_tool encode-trace ON NRANGES
 *   vector_tool encode-ping NONCE
 *   vector_tool encode-pong NONCE
 *   vector_tool decode HEX
 *
 * encode-* print one frame (no preface) as lowercase hex. decode reads exactly
 * one frame as the guest library does and prints "ACK n", "SET_LEVEL n",
 * "SET_TRACE on anchor [start-end ...]" (decimal), "PING n", "PONG n",
 * "ERROR code reason", or "INVALID" when the guest decoder
 * rejects the bytes (or they are not exactly one frame). Exit status 0, or 2
 * for a usage error.
 */
#define _POSIX_C_SOURCE 200809L
#define UMON_WIRE_API
#include "umonitor.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FIELDS 255
#define FRAME_CAP UMON_WIRE_MAX_FRAME

static unsigned char frame[FRAME_CAP];
static unsigned char input[FRAME_CAP + 16];

static int usage(void)
{
    fputs("usage: vector_tool encode-hello BOOT_HEX NAME TOKEN LIBRARY [LEVEL|none [trace]]\n"
          "       vector_tool encode-record SEQ MONO_NS WALL_NS|none SEV KIND FILE LINE FUNC "
          "MESSAGE [KEY=VALUE...]\n"
          "       vector_tool encode-dropped COUNT THROUGH\n"
          "       vector_tool encode-bye\n"
          "       vector_tool encode-level LEVEL\n"
          "       vector_tool encode-trace ON NRANGES\n"
          "       vector_tool encode-ping NONCE\n"
          "       vector_tool encode-pong NONCE\n"
          "       vector_tool decode HEX\n",
          stderr);
    return 2;
}

static int parse_u64(const char *text, unsigned long long *out)
{
    char *end;

    if (text[0] < '0' || text[0] > '9')
        return -1;
    errno = 0;
    *out = strtoull(text, &end, 10);
    return errno != 0 || *end != '\0' ? -1 : 0;
}

static int parse_i64(const char *text, long long *out)
{
    char *end;

    if (text[0] == '\0')
        return -1;
    errno = 0;
    *out = strtoll(text, &end, 10);
    return errno != 0 || *end != '\0' ? -1 : 0;
}

static int hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Hex text into out (cap bytes); returns the byte count, -1 if malformed. */
static long parse_hex(const char *text, unsigned char *out, size_t cap)
{
    size_t len = strlen(text);
    size_t i;

    if (len % 2 != 0 || len / 2 > cap)
        return -1;
    for (i = 0; i < len / 2; i++) {
        int hi = hex_digit((unsigned char)text[2 * i]);
        int lo = hex_digit((unsigned char)text[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return (long)(len / 2);
}

static void print_hex(const unsigned char *bytes, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        printf("%02x", bytes[i]);
    putchar('\n');
}

static int encode_hello(int argc, char **argv)
{
    unsigned char boot[16];
    unsigned long long level = 0;
    int have_level = argc >= 7 && strcmp(argv[6], "none") != 0;
    size_t n;

    if (argc < 6 || argc > 8 || parse_hex(argv[2], boot, sizeof boot) != 16)
        return usage();
    if (have_level && (parse_u64(argv[6], &level) < 0 || level > 7))
        return usage();
    if (argc == 8 && strcmp(argv[7], "trace") != 0)
        return usage();
    n = umon_wire_hello(frame, sizeof frame, boot, argv[3], argv[4], argv[5],
                        have_level ? (int)level : -1, argc == 8);
    if (n == 0) {
        fputs("vector_tool: HELLO values out of range\n", stderr);
        return 2;
    }
    print_hex(frame, n);
    return 0;
}

static int encode_record(int argc, char **argv)
{
    static struct umon_field fields[MAX_FIELDS];
    struct umon_wire_record r;
    unsigned long long sev, kind, line;
    size_t at, n;
    int i;

    if (argc < 11 || argc - 11 > MAX_FIELDS)
        return usage();
    memset(&r, 0, sizeof r);
    if (parse_u64(argv[2], &r.seq) < 0 || parse_u64(argv[3], &r.mono_ns) < 0)
        return usage();
    if (strcmp(argv[4], "none") == 0)
        r.wall_valid = 0;
    else if (parse_i64(argv[4], &r.wall_ns) == 0)
        r.wall_valid = 1;
    else
        return usage();
    if (parse_u64(argv[5], &sev) < 0 || sev > 7 || parse_u64(argv[6], &kind) < 0 || kind > 3 ||
        parse_u64(argv[8], &line) < 0 || line > 0xFFFFFFFFULL)
        return usage();
    r.severity = (unsigned)sev;
    r.kind = (unsigned)kind;
    r.line = (unsigned long)line;
    r.file = argv[7];
    r.file_len = strlen(argv[7]);
    r.func = argv[9];
    r.func_len = strlen(argv[9]);
    for (i = 11; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (eq == NULL)
            return usage();
        *eq = '\0';
        fields[i - 11].key = argv[i];
        fields[i - 11].value = eq + 1;
    }
    r.fields = fields;
    r.nfields = (unsigned)(argc - 11);
    at = umon_wire_record_begin(frame, sizeof frame, &r, 0);
    if (at == 0) {
        fputs("vector_tool: RECORD does not fit a frame\n", stderr);
        return 2;
    }
    n = umon_wire_record_finish(frame, sizeof frame, at, argv[10], strlen(argv[10]));
    print_hex(frame, n);
    return 0;
}

static int encode_simple(int argc, char **argv)
{
    unsigned long long a, b;
    const char *what = argv[1];
    size_t n;

    if (strcmp(what, "encode-bye") == 0) {
        if (argc != 2)
            return usage();
        n = umon_wire_bye(frame);
    } else if (strcmp(what, "encode-level") == 0) {
        if (argc != 3 || parse_u64(argv[2], &a) < 0 || a > 7)
            return usage();
        n = umon_wire_level(frame, (unsigned)a);
    } else if (strcmp(what, "encode-trace") == 0) {
        if (argc != 4 || parse_u64(argv[2], &a) < 0 || a > 1 || parse_u64(argv[3], &b) < 0 ||
            b > UMON_TRACE_RANGES)
            return usage();
        n = umon_wire_trace(frame, (unsigned)a, (unsigned)b);
    } else if (strcmp(what, "encode-dropped") == 0) {
        if (argc != 4 || parse_u64(argv[2], &a) < 0 || parse_u64(argv[3], &b) < 0)
            return usage();
        n = umon_wire_dropped(frame, a, b);
    } else {
        if (argc != 3 || parse_u64(argv[2], &a) < 0)
            return usage();
        n = umon_wire_u64(frame, strcmp(what, "encode-ping") == 0 ? UMON_FRAME_PING : UMON_FRAME_PONG, a);
    }
    print_hex(frame, n);
    return 0;
}

static int decode(int argc, char **argv)
{
    struct umon_wire_frame f;
    size_t used;
    long len;

    if (argc != 3)
        return usage();
    len = parse_hex(argv[2], input, sizeof input);
    if (len < 0)
        return usage();
    if (umon_wire_decode_untrusted(input, (size_t)len, &f, &used) != UMON_WIRE_FRAME ||
        used != (size_t)len) {
        puts("INVALID");
        return 0;
    }
    switch (f.type) {
    case UMON_FRAME_ACK:
        printf("ACK %llu\n", f.value);
        break;
    case UMON_FRAME_SET_LEVEL:
        printf("SET_LEVEL %llu\n", f.value);
        break;
    case UMON_FRAME_SET_TRACE: {
        unsigned i;

        printf("SET_TRACE %llu %llu", f.value, f.anchor);
        for (i = 0; i < f.nranges; i++)
            printf(" %llu-%llu", f.ranges[i][0], f.ranges[i][1]);
        putchar('\n');
        break;
    }
    case UMON_FRAME_PING:
        printf("PING %llu\n", f.value);
        break;
    case UMON_FRAME_PONG:
        printf("PONG %llu\n", f.value);
        break;
    default:
        printf("ERROR %llu ", f.value);
        fwrite(f.reason, 1, f.reason_len, stdout);
        putchar('\n');
        break;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    if (strcmp(argv[1], "encode-hello") == 0)
        return encode_hello(argc, argv);
    if (strcmp(argv[1], "encode-record") == 0)
        return encode_record(argc, argv);
    if (strcmp(argv[1], "encode-dropped") == 0 || strcmp(argv[1], "encode-bye") == 0 ||
        strcmp(argv[1], "encode-level") == 0 || strcmp(argv[1], "encode-trace") == 0 ||
        strcmp(argv[1], "encode-ping") == 0 || strcmp(argv[1], "encode-pong") == 0)
        return encode_simple(argc, argv);
    if (strcmp(argv[1], "decode") == 0)
        return decode(argc, argv);
    return usage();
}
