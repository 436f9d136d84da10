/*
 * demo_app - the umonitor demo unikernel application.
 *
 *   demo_app [umon.WORD=VALUE ...] [ARG ...]
 *
 * The umon.* words configure it (demo_common.h says where else it looks: one
 * argument holding several words, UMON_CONFIG, the Unikraft kernel parameters),
 * e.g.
 *
 *   umon.collector=10.0.0.1:2333 umon.name=demo umon.level=debug umon.rate=5
 *
 * Besides the library's words (umon.collector, umon.name, umon.token,
 * umon.level) the demo reads umon.rate=N (records per second, default 5) and
 * umon.count=N (stop after N records of the steady phase; default: run until
 * SIGINT or SIGTERM, or forever on Unikraft). Other arguments are printed once
 * ("app args: ...") and otherwise ignored.
 *
 * Like the original Umonitor demo, it first walks through a few functions that
 * report their entry and exit with their parameters, is handed a NULL pointer
 * (a warning) and catches a division by zero (an error). Then it logs steadily
 * at every severity, with fields, calling umon_poll() while it sleeps so that
 * acknowledgements and pings are handled even when nothing is logged.
 */
#define _POSIX_C_SOURCE 200809L
#include "demo_common.h"
#include "umonitor.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define DEFAULT_RATE 5
#define MAX_RATE 100000

static volatile sig_atomic_t stop_requested;

#ifndef __Unikraft__
static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}
#endif

/* Stop cleanly on SIGINT and SIGTERM. A Unikraft image has no signals (and
 * nobody to send one): there the demo runs until umon.count is reached. */
static void catch_stop_signals(void)
{
#ifndef __Unikraft__
    struct sigaction sa;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    (void)sigaction(SIGINT, &sa, NULL);
    (void)sigaction(SIGTERM, &sa, NULL);
#endif
}

/* A deterministic pseudo-random number for the simulated workload. */
static unsigned next_random(void)
{
    static unsigned long state = 12345;

    state = (state * 1103515245UL + 12345UL) & 0x7FFFFFFFUL;
    return (unsigned)(state >> 8);
}

static const char *greet(const char *who)
{
    struct umon_field params[1];
    struct umon_field result[1];

    params[0].key = "who";
    params[0].value = who != NULL ? who : "(null)";
    UMON_ENTER(params, 1u);
    if (who == NULL) {
        UMON_LOG_WARN("greet() was passed a NULL pointer; greeting a stranger");
        who = "stranger";
    }
    UMON_LOG_INFO("hello, %s", who);
    result[0].key = "result";
    result[0].value = who;
    UMON_EXIT(result, 1u);
    return who;
}

static int safe_divide(int a, int b, int *quotient)
{
    char a_text[16], b_text[16], q_text[16];
    struct umon_field params[2];
    struct umon_field result[1];

    snprintf(a_text, sizeof a_text, "%d", a);
    snprintf(b_text, sizeof b_text, "%d", b);
    params[0].key = "a";
    params[0].value = a_text;
    params[1].key = "b";
    params[1].value = b_text;
    UMON_ENTER(params, 2u);
    result[0].key = "result";
    if (b == 0) {
        UMON_LOG_KV(UMON_ERR, params, 2u, "division by zero caught: %d / %d", a, b);
        result[0].value = "error";
        UMON_EXIT(result, 1u);
        return -1;
    }
    *quotient = a / b;
    snprintf(q_text, sizeof q_text, "%d", *quotient);
    result[0].value = q_text;
    UMON_EXIT(result, 1u);
    return 0;
}

static unsigned long fibonacci(unsigned n)
{
    char n_text[16], r_text[24];
    struct umon_field params[1];
    struct umon_field result[1];
    unsigned long a = 0, b = 1;
    unsigned i;

    snprintf(n_text, sizeof n_text, "%u", n);
    params[0].key = "n";
    params[0].value = n_text;
    UMON_ENTER(params, 1u);
    for (i = 0; i < n; i++) {
        unsigned long next = a + b;
        a = b;
        b = next;
    }
    snprintf(r_text, sizeof r_text, "%lu", a);
    result[0].key = "result";
    result[0].value = r_text;
    UMON_EXIT(result, 1u);
    return a;
}

/* One record of the steady phase; severity and content cycle with i. */
static void steady_record(unsigned long i)
{
    char tick[24], a[32], b[32];
    struct umon_field f[3];
    unsigned r = next_random();

    snprintf(tick, sizeof tick, "%lu", i);
    f[0].key = "tick";
    f[0].value = tick;
    f[1].value = a;
    f[2].value = b;
    switch (i % 8) {
    case 0:
        f[1].key = "sample";
        f[2].key = "channel";
        snprintf(a, sizeof a, "%u", r % 1000);
        snprintf(b, sizeof b, "%u", r % 7);
        UMON_LOG_KV(UMON_DEBUG, f, 3u, "sensor sample taken");
        break;
    case 1:
        f[1].key = "path";
        f[2].key = "ms";
        snprintf(a, sizeof a, "/index.html");
        snprintf(b, sizeof b, "%u", 1 + r % 40);
        UMON_LOG_KV(UMON_INFO, f, 3u, "request served in %s ms", b);
        break;
    case 2:
        f[1].key = "entries";
        f[2].key = "hit_pct";
        snprintf(a, sizeof a, "%u", 128u << (r % 4));
        snprintf(b, sizeof b, "%u", r % 100);
        UMON_LOG_KV(UMON_NOTICE, f, 3u, "cache resized to %s entries", a);
        break;
    case 3:
        f[1].key = "fill_pct";
        f[2].key = "capacity";
        snprintf(a, sizeof a, "%u", 70 + r % 30);
        snprintf(b, sizeof b, "%u", 256u);
        UMON_LOG_KV(UMON_WARNING, f, 3u, "queue %s%% full", a);
        break;
    case 4:
        f[1].key = "status";
        f[2].key = "path";
        snprintf(a, sizeof a, "%u", 500 + r % 4);
        snprintf(b, sizeof b, "/api/v1/items/%u", r % 50);
        UMON_LOG_KV(UMON_ERR, f, 3u, "upstream returned %s", a);
        break;
    case 5:
        f[1].key = "free_mib";
        f[2].key = "mount";
        snprintf(a, sizeof a, "%u", r % 64);
        snprintf(b, sizeof b, "%s", "/data");
        UMON_LOG_KV(UMON_CRIT, f, 3u, "only %s MiB left on %s", a, b);
        break;
    case 6:
        f[1].key = "late_ms";
        f[2].key = "task";
        snprintf(a, sizeof a, "%u", 100 + r % 900);
        snprintf(b, sizeof b, "%s", "watchdog");
        UMON_LOG_KV(UMON_ALERT, f, 3u, "%s is late by %s ms", b, a);
        break;
    default:
        f[1].key = "core";
        f[2].key = "mode";
        snprintf(a, sizeof a, "%u", r % 16);
        snprintf(b, sizeof b, "%s", "simulated");
        UMON_LOG_KV(UMON_EMERG, f, 3u, "core %s reports a fatal fault (%s)", a, b);
        break;
    }
}

int main(int argc, char **argv)
{
    static char config[DEMO_CONFIG_MAX];
    struct umon_stats stats;
    long rate, count;
    long long interval, next;
    unsigned long i;
    int quotient = 0;

    demo_config("demo_app", argc, argv, config);
    rate = config_number(config, "umon.rate=", DEFAULT_RATE);
    if (rate < 1 || rate > MAX_RATE)
        rate = DEFAULT_RATE;
    count = config_number(config, "umon.count=", -1);
    catch_stop_signals();

    /* Logged before the network is configured: kept and sent once it is up. */
    UMON_LOG_NOTICE("demo starting (rate %ld/s)", rate);
    demo_init("demo_app", config);

    greet("unikernel");
    greet(NULL);
    if (safe_divide(84, 2, &quotient) == 0)
        UMON_LOG_INFO("84 / 2 = %d", quotient);
    if (safe_divide(1, 0, &quotient) < 0)
        UMON_LOG_NOTICE("recovered from a failed division");
    UMON_LOG_INFO("fibonacci(20) = %lu", fibonacci(20));

    interval = 1000000000LL / rate;
    next = monotonic_ns();
    for (i = 1; !stop_requested && (count < 0 || i <= (unsigned long)count); i++) {
        steady_record(i);
        next += interval;
        demo_idle_until(next, &stop_requested);
    }

    UMON_LOG_NOTICE("demo stopping");
    umon_close();
    umon_get_stats(&stats);
    printf("demo_app: logged=%llu acked=%llu dropped=%llu filtered=%llu\n", stats.logged, stats.acked,
           stats.dropped, stats.filtered);
    return 0;
}
