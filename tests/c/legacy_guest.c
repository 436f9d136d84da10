/*
 * legacy_guest - a test program that uses only the original Umonitor API
 * (umonitor_compat.h).
 *
 *   legacy_guest PORT COUNT
 *
 * Listens on PORT (0 means 2333) and waits for the host to connect, sends COUNT
 * messages "legacy <i>" (i from 1) cycling through MESSAGE, WARNING, FAILT and
 * RETURN, waits one second and exits 0 (1 if the link failed, 2 for a usage
 * error).
 */
#define _POSIX_C_SOURCE 200809L
#include "umonitor_compat.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int parse_number(const char *text, unsigned long *out)
{
    char *end;

    if (text[0] < '0' || text[0] > '9')
        return -1;
    errno = 0;
    *out = strtoul(text, &end, 10);
    return errno != 0 || *end != '\0' ? -1 : 0;
}

int main(int argc, char **argv)
{
    static const int levels[] = {MESSAGE, WARNING, FAILT, RETURN};
    unsigned long port, count, i;
    debug_link link;

    if (argc != 3 || parse_number(argv[1], &port) < 0 || port > 65535 ||
        parse_number(argv[2], &count) < 0) {
        fputs("usage: legacy_guest PORT COUNT\n", stderr);
        return 2;
    }
    memset(&link, 0, sizeof link);
    link.port = (unsigned short)port;
    if (debug_init(&link) < 0) {
        perror("legacy_guest: debug_init");
        return 1;
    }
    for (i = 1; i <= count; i++) {
        if (send_log(&link, levels[(i - 1) % 4], "legacy %lu", i) < 0) {
            perror("legacy_guest: send_log");
            return 1;
        }
    }
    sleep(1);
    return 0;
}
