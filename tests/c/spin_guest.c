/*
 * spin_guest - logs 100 records, then computes forever without ever blocking.
 *
 *   spin_guest [umon.WORD=VALUE ...] [ARG ...]
 *
 * The test of delivery under a cooperative scheduler (Unikraft): after its last
 * log call the application never blocks, yields or calls the library again, so
 * every record must have left the guest by the time that call returns. It runs
 * unchanged on Linux, Nanos and rumprun. Configured as the demo apps are
 * (src/umonitor/guest/demo/demo_common.h); umon.count=N logs N records instead.
 *
 * It prints what the log calls cost, from the monotonic clock:
 *
 *   spin: 100 records logged in T ns: first call F ns, then A ns/call (max M ns)
 *   spin: spinning
 *
 * and never returns: stop the VM or kill the process.
 */
#define _POSIX_C_SOURCE 200809L
#include "../../src/umonitor/guest/demo/demo_common.h"
#include "umonitor.h"

#include <stdio.h>

#define DEFAULT_COUNT 100

int main(int argc, char **argv)
{
    static char config[DEMO_CONFIG_MAX];
    volatile unsigned long spins = 0;
    long long first = 0, rest = 0, slowest = 0;
    long count, i;

    demo_config("spin_guest", argc, argv, config);
    count = config_number(config, "umon.count=", DEFAULT_COUNT);
    if (count < 1)
        count = DEFAULT_COUNT;
    demo_init("spin_guest", config);

    for (i = 1; i <= count; i++) {
        char n_text[24];
        struct umon_field f[1];
        long long start, took;

        snprintf(n_text, sizeof n_text, "%ld", i);
        f[0].key = "n";
        f[0].value = n_text;
        start = monotonic_ns();
        UMON_LOG_KV(UMON_INFO, f, 1u, "spin record %ld of %ld", i, count);
        took = monotonic_ns() - start;
        if (i == 1)
            first = took;
        else
            rest += took;
        if (took > slowest)
            slowest = took;
    }
    printf("spin: %ld records logged in %lld ns: first call %lld ns, then %lld ns/call (max %lld ns)\n",
           count, first + rest, first, count > 1 ? rest / (count - 1) : 0, slowest);
    printf("spin: spinning\n");
    fflush(stdout);
    for (;;)
        spins++;
}
