/*
 * numbered_guest - a test guest that logs numbered records and waits for them
 * to be acknowledged.
 *
 *   numbered_guest HOST PORT NAME COUNT [--before-network] [--token=TOKEN]
 *                  [--flush-every=N]
 *
 * Record i (1..COUNT) has severity i % 8, message "n=<i>" and one field i=<i>,
 * with file, line and function filled in by UMON_LOG_KV. umon_poll() runs
 * between records. With --before-network the first COUNT/2 records are logged
 * before umon_init() (they must be buffered and sent later); --flush-every=N
 * waits for acknowledgements after every N records. At the end: umon_flush()
 * for up to 20 s, umon_close(), and one line
 *
 *   logged=<n> acked=<n> dropped=<n>
 *
 * Exit status 0 iff all COUNT records were logged and acknowledged, 1 if not,
 * 2 for a usage error.
 */
#define _POSIX_C_SOURCE 200809L
#include "umonitor.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FLUSH_TIMEOUT_MS 20000

static int usage(void)
{
    fputs("usage: numbered_guest HOST PORT NAME COUNT [--before-network] [--token=TOKEN] "
          "[--flush-every=N]\n",
          stderr);
    return 2;
}

static int parse_count(const char *text, unsigned long long *out)
{
    char *end;

    if (text[0] < '0' || text[0] > '9')
        return -1;
    errno = 0;
    *out = strtoull(text, &end, 10);
    return errno != 0 || *end != '\0' ? -1 : 0;
}

static void log_numbered(unsigned long long i)
{
    char value[24];
    struct umon_field field;

    snprintf(value, sizeof value, "%llu", i);
    field.key = "i";
    field.value = value;
    UMON_LOG_KV((int)(i % 8), &field, 1u, "n=%llu", i);
}

int main(int argc, char **argv)
{
    unsigned long long port, count, flush_every = 0, first = 0, i;
    const char *token = NULL;
    int before_network = 0;
    struct umon_stats stats;
    int a;

    if (argc < 5 || parse_count(argv[2], &port) < 0 || port > 65535 || parse_count(argv[4], &count) < 0)
        return usage();
    for (a = 5; a < argc; a++) {
        if (strcmp(argv[a], "--before-network") == 0)
            before_network = 1;
        else if (strncmp(argv[a], "--token=", 8) == 0)
            token = argv[a] + 8;
        else if (strncmp(argv[a], "--flush-every=", 14) == 0 && parse_count(argv[a] + 14, &flush_every) == 0)
            continue;
        else
            return usage();
    }

    if (before_network) {
        first = count / 2;
        for (i = 1; i <= first; i++) {
            log_numbered(i);
            (void)umon_poll();
        }
    }
    if (umon_init(argv[1], (unsigned)port, argv[3], token) < 0) {
        fprintf(stderr, "numbered_guest: invalid collector address or name\n");
        return 2;
    }
    for (i = first + 1; i <= count; i++) {
        log_numbered(i);
        (void)umon_poll();
        if (flush_every && i % flush_every == 0)
            (void)umon_flush(FLUSH_TIMEOUT_MS);
    }
    (void)umon_flush(FLUSH_TIMEOUT_MS);
    umon_close();

    umon_get_stats(&stats);
    printf("logged=%llu acked=%llu dropped=%llu\n", stats.logged, stats.acked, stats.dropped);
    return stats.logged == count && stats.acked == count ? 0 : 1;
}
