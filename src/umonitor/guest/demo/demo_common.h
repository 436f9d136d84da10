/*
 * demo_common.h - small helpers shared by the demo applications.
 *
 * Header-only (static functions), so an application built from one source file
 * picks it up from its own directory with no extra build step.
 */
#ifndef UMON_DEMO_COMMON_H
#define UMON_DEMO_COMMON_H

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The number after `key` (e.g. "umon.rate=") in config, or fallback. */
static long config_number(const char *config, const char *key, long fallback)
{
    size_t key_len = strlen(key);
    const char *p = config;

    while (p != NULL && *p != '\0') {
        while (*p == ' ' || *p == '\t' || *p == '\n')
            p++;
        if (strncmp(p, key, key_len) == 0) {
            char *end;
            long v;
            errno = 0;
            v = strtol(p + key_len, &end, 10);
            if (errno == 0 && end != p + key_len &&
                (*end == '\0' || *end == ' ' || *end == '\t' || *end == '\n'))
                return v;
            return fallback;
        }
        p = strpbrk(p, " \t\n");
    }
    return fallback;
}

static long long monotonic_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

#endif
