/*
 * trace_app.cpp - trace_app.c's C++ twin: a method and a template under the
 * hooks, to see C++ names demangled on the host. Build it with
 *
 *   umonitor image build trace_app.cpp --cflag -finstrument-functions -o OUT
 *
 * Configured and run as trace_app.c. Every tick calls work() once, then logs
 * "tick N": work() -> Counter::bump(int) -> square<int>(int), twice; a tick
 * sends 10 events while tracing is on, each tree starting at
 * "tick(unsigned long) -> work()".
 */
#include "demo_common.h"
#include "umonitor.h"

#include <ctime>

#define DEFAULT_RATE 2
#define MAX_RATE 1000

static volatile int sink;

template <typename T> DEMO_NOINLINE T square(T x)
{
    return x * x;
}

class Counter {
  public:
    DEMO_NOINLINE void bump(int by)
    {
        total += square<int>(by);
        sink = total;
    }

  private:
    int total = 0;
};

DEMO_NOINLINE void work()
{
    Counter c;
    c.bump(2);
    c.bump(3);
}

DEMO_NOTRACE DEMO_NOINLINE static void tick(unsigned long i)
{
    work();
    UMON_LOG_INFO("tick %lu", i); /* after: work() is no tail call, its caller is tick */
}

DEMO_NOTRACE int main(int argc, char **argv)
{
    static char config[DEMO_CONFIG_MAX];

    demo_config("trace_app", argc, argv, config);
    long rate = config_number(config, "umon.rate=", DEFAULT_RATE);
    if (rate < 1 || rate > MAX_RATE)
        rate = DEFAULT_RATE;
    long count = config_number(config, "umon.count=", -1);
    demo_init("trace_app", config);
    UMON_LOG_NOTICE("trace_app (C++) starting (%ld ticks/s)", rate);

    long long interval = 1000000000LL / rate;
    long long next = monotonic_ns();
    for (unsigned long i = 1; count < 0 || i <= static_cast<unsigned long>(count); i++) {
        tick(i);
        next += interval;
        demo_idle_until(next, nullptr);
    }
    (void)umon_flush(5000);
    umon_close();
    return 0;
}
