/*
 * trace_guest - a test guest built with -finstrument-functions, so that the
 * library's function tracing can be switched and seen from outside.
 *
 *   trace_guest HOST PORT NAME
 *
 * Connects with umon_init(), then reads commands from stdin, one per line,
 * polling the library between them so that it answers the host at any time:
 *   run    call work() once: work -> a -> b, b; work -> fact(3) -> fact(2) ->
 *          fact(1); wait up to 10 s for the host's acknowledgement; prints
 *          "ran N", N the records the calls logged (0 while tracing is off)
 *   burst N  call work() N times without waiting for anything; prints
 *          "burst L D", L the records logged, D the library's dropped count
 *          after them
 *   trace  prints "trace N", umon_get_trace()
 *   quit   umon_close(), then exit 0
 * Only work and what it calls are traced: main and the helpers that read stdin
 * are built without the hooks. Exit status 0, 1 on a bad command, 2 for a usage
 * error.
 */
#define _POSIX_C_SOURCE 200809L
#include "umonitor.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOTRACE __attribute__((no_instrument_function))
#define POLL_MS 10
#define FLUSH_MS 10000

static volatile int sink;

__attribute__((noinline)) void b(int x)
{
    sink += x;
}

__attribute__((noinline)) void a(void)
{
    b(1);
    b(2);
}

__attribute__((noinline)) int fact(int n)
{
    return n <= 1 ? 1 : n * fact(n - 1);
}

__attribute__((noinline)) void work(void)
{
    a();
    sink += fact(3);
}

NOTRACE static int usage(void)
{
    fputs("usage: trace_guest HOST PORT NAME\n", stderr);
    return 2;
}

/* One line of stdin into line, polling the library while none is there;
 * returns 0, or -1 at the end of input. */
NOTRACE static int read_line(char *line, size_t cap)
{
    size_t n = 0;

    for (;;) {
        struct pollfd p;
        char c;

        p.fd = STDIN_FILENO;
        p.events = POLLIN;
        p.revents = 0;
        (void)umon_poll();
        if (poll(&p, 1, POLL_MS) <= 0)
            continue;
        if (read(STDIN_FILENO, &c, 1) <= 0)
            return -1;
        if (c == '\n') {
            line[n] = '\0';
            return 0;
        }
        if (n + 1 < cap)
            line[n++] = c;
    }
}

NOTRACE int main(int argc, char **argv)
{
    char line[256];
    char *end;
    long port;

    if (argc != 4)
        return usage();
    port = strtol(argv[2], &end, 10);
    if (*end != '\0' || port < 1 || port > 65535)
        return usage();
    if (umon_init(argv[1], (unsigned)port, argv[3], NULL) < 0)
        return usage();
    while (read_line(line, sizeof line) == 0) {
        if (strcmp(line, "run") == 0) {
            struct umon_stats before, after;

            umon_get_stats(&before);
            work();
            umon_get_stats(&after);
            printf("%s %llu\n", umon_flush(FLUSH_MS) == 0 ? "ran" : "unacked",
                   after.logged - before.logged);
        } else if (strncmp(line, "burst ", 6) == 0) {
            struct umon_stats before, after;
            long i, n = strtol(line + 6, &end, 10);

            umon_get_stats(&before);
            for (i = 0; i < n; i++)
                work();
            umon_get_stats(&after);
            printf("burst %llu %llu\n", after.logged - before.logged, after.dropped);
        } else if (strcmp(line, "trace") == 0) {
            printf("trace %d\n", umon_get_trace());
        } else if (strcmp(line, "quit") == 0) {
            umon_close();
            return 0;
        } else {
            fprintf(stderr, "trace_guest: unknown command %s\n", line);
            return 1;
        }
        fflush(stdout);
    }
    umon_close();
    return 0;
}
