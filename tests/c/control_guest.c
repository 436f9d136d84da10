/*
 * control_guest - a test guest that stays connected and logs when told, so that
 * the host's control (SET_LEVEL, PING) can be seen working from outside.
 *
 *   control_guest HOST PORT NAME [LEVEL]
 *
 * Connects with umon_init() (at LEVEL 0-7 if given), then reads commands from
 * stdin, one per line, polling the library between them so that it answers the
 * host at any time:
 *   log TAG   log one record at each severity 0-7, message "TAG sev=N", wait up
 *             to 10 s for the host's acknowledgement; prints "logged N" (the
 *             records the level let through) or "unacked"
 *   level     prints "level N", the library's current minimum level
 *   quit      umon_close(), then exit 0
 * Every answer is one line on stdout. Exit status 0, 1 on a bad command, 2 for a
 * usage error.
 */
#define _POSIX_C_SOURCE 200809L
#include "umonitor.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define POLL_MS 10
#define FLUSH_MS 10000

static int usage(void)
{
    fputs("usage: control_guest HOST PORT NAME [LEVEL]\n", stderr);
    return 2;
}

/* One line of stdin into line (cap bytes), polling the library while none is
 * there; returns 0, or -1 at the end of input. */
static int read_line(char *line, size_t cap)
{
    size_t n = 0;

    for (;;) {
        struct pollfd p;
        char c;
        ssize_t got;

        p.fd = STDIN_FILENO;
        p.events = POLLIN;
        p.revents = 0;
        (void)umon_poll();
        if (poll(&p, 1, POLL_MS) <= 0)
            continue;
        got = read(STDIN_FILENO, &c, 1);
        if (got <= 0)
            return -1;
        if (c == '\n') {
            line[n] = '\0';
            return 0;
        }
        if (n + 1 < cap)
            line[n++] = c;
    }
}

static void answer(const char *text, unsigned long long n)
{
    printf("%s %llu\n", text, n);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    char line[256];
    char *end;
    long port, level = -1;

    if (argc != 4 && argc != 5)
        return usage();
    port = strtol(argv[2], &end, 10);
    if (*end != '\0' || port < 1 || port > 65535)
        return usage();
    if (argc == 5) {
        level = strtol(argv[4], &end, 10);
        if (*end != '\0' || level < 0 || level > 7)
            return usage();
        umon_set_level((int)level);
    }
    if (umon_init(argv[1], (unsigned)port, argv[3], NULL) < 0)
        return usage();
    while (read_line(line, sizeof line) == 0) {
        if (strncmp(line, "log ", 4) == 0) {
            struct umon_stats before, after;
            int sev;

            umon_get_stats(&before);
            for (sev = UMON_EMERG; sev <= UMON_DEBUG; sev++)
                umon_log(sev, "%s sev=%d", line + 4, sev);
            umon_get_stats(&after);
            if (umon_flush(FLUSH_MS) == 0)
                answer("logged", after.logged - before.logged);
            else
                answer("unacked", after.logged - before.logged);
        } else if (strcmp(line, "level") == 0) {
            answer("level", (unsigned long long)umon_get_level());
        } else if (strcmp(line, "quit") == 0) {
            umon_close();
            return 0;
        } else {
            fprintf(stderr, "control_guest: unknown command %s\n", line);
            return 1;
        }
    }
    umon_close();
    return 0;
}
