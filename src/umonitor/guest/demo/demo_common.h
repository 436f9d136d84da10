/*
 * demo_common.h - small helpers shared by the demo applications.
 *
 * Header-only (static functions), so an application built from one source file
 * picks it up from its own directory with no extra build step.
 *
 * Where a demo finds its configuration, first match wins:
 *   1. its arguments: every word starting with "umon." (umon.rate=5), or one
 *      argument holding several such words ("umon.collector=... umon.name=x",
 *      as the Linux image's init passes them); all of them, joined by spaces;
 *   2. the UMON_CONFIG environment variable;
 *   3. umon_init_default(): on Unikraft the umon.* kernel parameters (before
 *      "--"), elsewhere UMON_CONFIG again.
 * Every other argument is the application's own; the demos print them once as
 * "app args: w1 w2", so a test can see that they reached main().
 *
 * The helpers are DEMO_NOTRACE: in a demo built with -finstrument-functions
 * (trace_app.c) function tracing shows the demo's own calls, not these.
 */
#ifndef UMON_DEMO_COMMON_H
#define UMON_DEMO_COMMON_H

#include "umonitor.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A function that keeps its own frame and name in a stack trace: neither
 * inlined nor (gcc) cloned into a ".constprop" copy. */
#if defined(__clang__)
#define DEMO_NOINLINE __attribute__((noinline))
#elif defined(__GNUC__)
#define DEMO_NOINLINE __attribute__((noinline, noclone))
#else
#define DEMO_NOINLINE
#endif

/* A function the -finstrument-functions hooks are not called for. */
#if defined(__GNUC__)
#define DEMO_NOTRACE __attribute__((no_instrument_function))
#else
#define DEMO_NOTRACE
#endif

#define DEMO_SPACES " \t\n"
#define DEMO_CONFIG_MAX 4096 /* bytes of configuration words kept, terminator included */

/* The number after `key` (e.g. "umon.rate=") in config, or fallback. */
DEMO_NOTRACE static long config_number(const char *config, const char *key, long fallback)
{
    size_t key_len = strlen(key);
    const char *p = config;

    while (*p != '\0') {
        p += strspn(p, DEMO_SPACES);
        if (strncmp(p, key, key_len) == 0) {
            char *end;
            long v;
            errno = 0;
            v = strtol(p + key_len, &end, 10);
            if (errno == 0 && end != p + key_len && (*end == '\0' || strchr(DEMO_SPACES, *end)))
                return v;
            return fallback;
        }
        p += strcspn(p, DEMO_SPACES);
    }
    return fallback;
}

/* Whether an argument is configuration: one of its words starts with "umon.". */
DEMO_NOTRACE static int is_config_arg(const char *arg)
{
    const char *p = arg;

    for (;;) {
        p += strspn(p, DEMO_SPACES);
        if (*p == '\0')
            return 0;
        if (strncmp(p, "umon.", 5) == 0)
            return 1;
        p += strcspn(p, DEMO_SPACES);
    }
}

/*
 * The configuration (see the top of this file) into config (DEMO_CONFIG_MAX
 * bytes); prints the application's own arguments. An argument that does not
 * fit is left out, with a warning.
 */
DEMO_NOTRACE static void demo_config(const char *prog, int argc, char **argv, char *config)
{
    size_t used = 0;
    int i, printed = 0;
    const char *env;

    config[0] = '\0';
    for (i = 1; i < argc; i++) {
        size_t len = strlen(argv[i]);

        if (!is_config_arg(argv[i])) {
            printf("%s %s", printed ? "" : "app args:", argv[i]);
            printed = 1;
        } else if (used + (used > 0) + len < DEMO_CONFIG_MAX) {
            if (used > 0)
                config[used++] = ' ';
            memcpy(config + used, argv[i], len + 1);
            used += len;
        } else {
            fprintf(stderr, "%s: configuration too long, left out: %s\n", prog, argv[i]);
        }
    }
    if (printed) {
        printf("\n");
        fflush(stdout);
    }
    env = getenv("UMON_CONFIG");
    if (used > 0 || env == NULL)
        return;
    if (strlen(env) < DEMO_CONFIG_MAX)
        memcpy(config, env, strlen(env) + 1);
    else
        fprintf(stderr, "%s: UMON_CONFIG too long, left out\n", prog);
}

/* Start the library from config, else from umon_init_default(). */
DEMO_NOTRACE static void demo_init(const char *prog, const char *config)
{
    if (umon_init_from_string(config) == 0 || umon_init_default() == 0)
        return;
    fprintf(stderr,
            "%s: no usable umon.collector=HOST[:PORT] in \"%s\", UMON_CONFIG or the kernel "
            "parameters; records stay buffered\n",
            prog, config);
}

DEMO_NOTRACE static long long monotonic_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

#define DEMO_IDLE_SLICE_NS 50000000L /* umon_poll() at least every 50 ms while idle */

/* Sleep until the monotonic clock reads `until`, polling the library; sooner once
 * *stop is set (stop may be NULL). */
DEMO_NOTRACE static inline void demo_idle_until(long long until, const volatile sig_atomic_t *stop)
{
    for (;;) {
        long long left = until - monotonic_ns();
        struct timespec ts;

        (void)umon_poll();
        if (left <= 0 || (stop != NULL && *stop))
            return;
        if (left > DEMO_IDLE_SLICE_NS)
            left = DEMO_IDLE_SLICE_NS;
        ts.tv_sec = 0;
        ts.tv_nsec = (long)left;
        (void)nanosleep(&ts, NULL);
    }
}

#endif
