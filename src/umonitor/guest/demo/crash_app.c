/*
 * crash_app - a demo application that crashes on purpose.
 *
 *   crash_app [umon.WORD=VALUE ...] [ARG ...]
 *
 * Configured as the demo app is (demo_common.h): the library's words
 * (umon.collector, umon.name, umon.token, umon.level), umon.count=N (records
 * before the crash, default 20) and umon.rate=N (records per second, default 4).
 * Other arguments are printed once ("app args: ...").
 *
 * It logs ordinary records for a while, then an error saying it is about to
 * crash, waits until the collector has acknowledged everything, and then
 * writes through a NULL pointer two calls down (main -> crash ->
 * write_through_null, none inlined), so that a stack trace has frames to show:
 * on Linux the process dies of SIGSEGV (the guest image's init reports the
 * signal on the console), on Unikraft the kernel prints its crash trace and
 * halts. The records before the crash are stored either way.
 */
#define _POSIX_C_SOURCE 200809L
#include "demo_common.h"
#include "umonitor.h"

#include <stdio.h>
#include <time.h>

#define DEFAULT_COUNT 20
#define DEFAULT_RATE 4
#define MAX_RATE 1000
#define FLUSH_TIMEOUT_MS 5000

/* Sleep until the monotonic clock reads `until`, letting the library work. */
static void idle_until(long long until)
{
    for (;;) {
        long long left = until - monotonic_ns();
        struct timespec ts;

        (void)umon_poll();
        if (left <= 0)
            return;
        if (left > 50000000LL)
            left = 50000000LL;
        ts.tv_sec = 0;
        ts.tv_nsec = (long)left;
        (void)nanosleep(&ts, NULL);
    }
}

/* Write through a NULL pointer. Both the pointer and the store are volatile:
 * the compiler can neither prove the pointer NULL (and emit a trap instruction,
 * SIGILL, instead) nor drop a store nobody reads. */
static DEMO_NOINLINE void write_through_null(int value)
{
    volatile int *volatile target = NULL;

    *target = value;
}

/* The frame between main() and the fault. */
static DEMO_NOINLINE void crash(void)
{
    write_through_null(42);
    /* Reached only where address 0 is writable. Having work after the call
     * also keeps it from being a tail call, which would drop this frame. */
    fprintf(stderr, "crash_app: writing through NULL did not crash\n");
}

int main(int argc, char **argv)
{
    static char config[DEMO_CONFIG_MAX];
    long count, rate, i;
    long long interval, next;

    demo_config("crash_app", argc, argv, config);
    count = config_number(config, "umon.count=", DEFAULT_COUNT);
    if (count < 0)
        count = DEFAULT_COUNT;
    rate = config_number(config, "umon.rate=", DEFAULT_RATE);
    if (rate < 1 || rate > MAX_RATE)
        rate = DEFAULT_RATE;

    demo_init("crash_app", config);
    UMON_LOG_NOTICE("crash app starting: %ld records, then a crash", count);

    interval = 1000000000LL / rate;
    next = monotonic_ns();
    for (i = 1; i <= count; i++) {
        char n_text[24];
        struct umon_field f[1];

        snprintf(n_text, sizeof n_text, "%ld", i);
        f[0].key = "n";
        f[0].value = n_text;
        UMON_LOG_KV(UMON_INFO, f, 1u, "working (%ld of %ld)", i, count);
        next += interval;
        idle_until(next);
    }

    UMON_LOG_ERROR("about to crash: writing through a NULL pointer");
    if (umon_flush(FLUSH_TIMEOUT_MS) != 0)
        fprintf(stderr, "crash_app: the collector did not acknowledge every record\n");
    printf("crash_app: crashing now\n");
    fflush(stdout);
    crash();
    return 0;
}
