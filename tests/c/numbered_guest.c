/*
 * numbered_guest - a test guest that logs numbered records and waits for them
 * to be acknowledged.
 *
 *   numbered_guest HOST PORT NAME COUNT [--before-network] [--token=TOKEN]
 *                  [--flush-every=N] [--window=N] [--rate=N] [--flush-ms=N]
 *                  [--allow-drops]
 *
 * Record i (1..COUNT) has severity i % 8, message "n=<i>" and one field i=<i>,
 * with file, line and function filled in by UMON_LOG_KV. umon_poll() runs
 * between records. With --before-network the first COUNT/2 records are logged
 * before umon_init() (they must be buffered and sent later); --flush-every=N
 * waits for acknowledgements after every N records. --window=N keeps at most N
 * records unsettled (logged, neither acknowledged nor dropped): before logging
 * more it waits for acknowledgements, as an application that paces itself on
 * its link would, so a window that fits the ring never drops. --rate=N logs at
 * most N records per second (polling the library while it waits), so a
 * collector outage longer than the ring's worth of records makes it drop.
 * At the end: umon_flush() for up to --flush-ms (default 20,000) ms,
 * umon_close(), and one line
 *
 *   logged=<n> acked=<n> dropped=<n> sent=<n> reconnects=<n>
 *
 * Exit status 0 iff all COUNT records were logged and acknowledged (with
 * --allow-drops: logged, and each either acknowledged or dropped), 1 if not,
 * 2 for a usage error.
 */
#define _POSIX_C_SOURCE 200809L
#include "umonitor.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FLUSH_TIMEOUT_MS 20000
#define WINDOW_WAIT_MS 1 /* umon_flush() slice while the window is full: wakes on an ACK */
#define RATE_SLICE_NS 1000000LL /* longest sleep between records under --rate */

static int usage(void)
{
    fputs("usage: numbered_guest HOST PORT NAME COUNT [--before-network] [--token=TOKEN] "
          "[--flush-every=N] [--window=N] [--rate=N] [--flush-ms=N] [--allow-drops]\n",
          stderr);
    return 2;
}

static long long monotonic_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Records logged but neither acknowledged nor dropped yet. */
static unsigned long long unsettled(void)
{
    struct umon_stats stats;

    umon_get_stats(&stats);
    return stats.logged - stats.acked - stats.dropped;
}

/* Poll the library until the monotonic clock reads `until`. */
static void pace_until(long long until)
{
    for (;;) {
        long long left = until - monotonic_ns();
        struct timespec ts;

        (void)umon_poll();
        if (left <= 0)
            return;
        if (left > RATE_SLICE_NS)
            left = RATE_SLICE_NS;
        ts.tv_sec = 0;
        ts.tv_nsec = (long)left;
        (void)nanosleep(&ts, NULL);
    }
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
    unsigned long long window = 0, rate = 0, flush_ms = FLUSH_TIMEOUT_MS;
    long long next = 0;
    const char *token = NULL;
    int before_network = 0, allow_drops = 0, complete;
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
        else if (strncmp(argv[a], "--window=", 9) == 0 && parse_count(argv[a] + 9, &window) == 0)
            continue;
        else if (strncmp(argv[a], "--rate=", 7) == 0 && parse_count(argv[a] + 7, &rate) == 0 &&
                 rate <= 1000000000ULL)
            continue;
        else if (strncmp(argv[a], "--flush-ms=", 11) == 0 && parse_count(argv[a] + 11, &flush_ms) == 0 &&
                 flush_ms <= 3600000ULL)
            continue;
        else if (strcmp(argv[a], "--allow-drops") == 0)
            allow_drops = 1;
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
    if (rate)
        next = monotonic_ns();
    for (i = first + 1; i <= count; i++) {
        while (window && unsettled() >= window)
            (void)umon_flush(WINDOW_WAIT_MS);
        if (rate) {
            pace_until(next);
            next += 1000000000LL / (long long)rate;
        }
        log_numbered(i);
        (void)umon_poll();
        if (flush_every && i % flush_every == 0)
            (void)umon_flush((int)flush_ms);
    }
    (void)umon_flush((int)flush_ms);
    umon_close();

    umon_get_stats(&stats);
    printf("logged=%llu acked=%llu dropped=%llu sent=%llu reconnects=%llu\n", stats.logged,
           stats.acked, stats.dropped, stats.sent, stats.reconnects);
    complete = allow_drops ? stats.acked + stats.dropped == count : stats.acked == count;
    return stats.logged == count && complete ? 0 : 1;
}
