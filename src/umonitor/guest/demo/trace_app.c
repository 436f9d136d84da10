/*
 * trace_app - a demo application for function tracing (docs/debugging.md,
 * "Function tracing"): build it with -finstrument-functions,
 *
 *   umonitor image build trace_app.c --cflag -finstrument-functions -o OUT
 *
 * and switch tracing on and off from the host while it runs
 * (umonitor trace NAME on, umonitor trace NAME --symbols OUT/app).
 *
 *   trace_app [umon.WORD=VALUE ...]
 *
 * Configured as the demo app is (demo_common.h): the library's words
 * (umon.collector, umon.name, umon.token, umon.level), umon.rate=N (ticks per
 * second, default 2) and umon.count=N (stop after N ticks; default: run until
 * killed).
 *
 * Every tick calls work() once, then logs "tick N" (info): work -> a -> b, b;
 * work -> fact(3) -> fact(2) -> fact(1). main, tick and the idle loop are
 * built without the hooks, so with tracing on a tick sends 14 events (an enter
 * and an exit for each of the 7 calls under tick), each tree starting at
 * "tick -> work". The library answers the host while the app sleeps between
 * ticks (umon_poll()).
 */
#define _POSIX_C_SOURCE 200809L
#include "demo_common.h"
#include "umonitor.h"

#include <stdio.h>
#include <time.h>

#define DEFAULT_RATE 2
#define MAX_RATE 1000

static volatile int sink;

DEMO_NOINLINE void b(int x)
{
    sink += x;
}

DEMO_NOINLINE void a(void)
{
    b(1);
    b(2);
}

DEMO_NOINLINE int fact(int n)
{
    return n <= 1 ? 1 : n * fact(n - 1);
}

DEMO_NOINLINE void work(void)
{
    a();
    sink += fact(3);
}

DEMO_NOTRACE DEMO_NOINLINE static void tick(unsigned long i)
{
    work();
    UMON_LOG_INFO("tick %lu", i); /* after: work() is no tail call, its caller is tick */
}

DEMO_NOTRACE int main(int argc, char **argv)
{
    static char config[DEMO_CONFIG_MAX];
    long rate, count;
    long long interval, next;
    unsigned long i;

    demo_config("trace_app", argc, argv, config);
    rate = config_number(config, "umon.rate=", DEFAULT_RATE);
    if (rate < 1 || rate > MAX_RATE)
        rate = DEFAULT_RATE;
    count = config_number(config, "umon.count=", -1);
    demo_init("trace_app", config);
    UMON_LOG_NOTICE("trace_app starting (%ld ticks/s)", rate);

    interval = 1000000000LL / rate;
    next = monotonic_ns();
    for (i = 1; count < 0 || i <= (unsigned long)count; i++) {
        tick(i);
        next += interval;
        demo_idle_until(next, NULL);
    }
    (void)umon_flush(5000);
    umon_close();
    return 0;
}
