/*
 * instrument_sample - a C program for `umonitor instrument` tests: one function
 * for each kind of parameter, return and control flow the rewriter handles.
 *
 *   instrument_sample
 *
 * Calls each once or twice, one call per statement (so that the order of the
 * records is fixed), and prints what they return (the same before and after
 * instrumenting), then flushes the records to the collector named by
 * UMON_CONFIG, if any.
 * Exit status 0, or 1 if records were not acknowledged.
 */
#define _POSIX_C_SOURCE 200809L
#include "umonitor.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SQUARE(x) ((x) * (x))
#define KB *(1 << 10)

typedef unsigned int u32;
typedef int (*binop)(int, int);
struct point {
    int x, y;
};
enum color { RED, GREEN = 5 };

static inline int add(int a, int b) { return a + b; }

static int apply(binop op, int a, int b) { return op(a, b); }

static double scale(float f, long double g, unsigned char c, u32 u, enum color col)
{
    if (f < 0)
        return -1.0;
    return f * (double)g + c + u + col;
}

static const char *name_of(const char *s, char *argv[], struct point p, int arr[4])
{
    (void)argv;
    (void)arr;
    if (s == NULL) return "none"; else return p.x > 0 ? s : "negative";
}

static int sum(int n, ...)
{
    va_list ap;
    int total = 0;

    va_start(ap, n);
    for (int i = 0; i < n; i++)
        total += va_arg(ap, int);
    va_end(ap);
    return total;
}

static int cleanup(int fail)
{
    int rc = -1;
    char *buf = malloc(16);

    if (buf == NULL || fail)
        goto out;
    strcpy(buf, "ok");
    rc = (int)strlen(buf);
out:
    free(buf);
    return rc;
}

static void say(const char *what)
{
    if (what == NULL)
        return;
    printf("say %s\n", what);
}

static int sizes(void) { return SQUARE(3) + 2 KB; }

static struct point mk(int x)
{
    struct point p = {x, -x};
    return p;
}

static int sub(int a, int b) { return a - b; }

int (*pick(int which))(int, int) { return which ? sub : NULL; }

static size_t multi(size_t a,
                    size_t b)
{
    return a
        + b;
}

static unsigned long long big(long long s, unsigned short w, char ch, _Bool flag)
{
    return (unsigned long long)(s < 0 ? -s : s) + w + (unsigned)ch + flag;
}

static const char *first_line(const char *text)
{
    return text;
}

/* clock_t and div_t are typedefs of headers: the compiler picks their formats */
static clock_t ticks(clock_t base, div_t d) { return base + d.quot; }

int main(void)
{
    char *args[] = {"x", NULL};
    int arr[4] = {1, 2, 3, 4};
    char long_text[100];
    int status = 0;

    memset(long_text, 'a', sizeof long_text - 1);
    long_text[sizeof long_text - 1] = '\0';
    if (getenv("UMON_CONFIG") != NULL && umon_init_default() != 0)
        return 2;
    say("hello");
    say(NULL);
    printf("add %d\n", add(2, 3));
    printf("apply %d\n", apply(sub, 9, 4));
    printf("scale %g\n", scale(1.5f, 2.0L, 3, 4u, GREEN));
    printf("scale %g\n", scale(-1.0f, 0.0L, 0, 0u, RED));
    printf("name_of %s\n", name_of("abc", args, mk(1), arr));
    printf("name_of %s\n", name_of(NULL, args, mk(1), arr));
    printf("sum %d\n", sum(3, 10, 20, 30));
    printf("cleanup %d\n", cleanup(1));
    printf("cleanup %d\n", cleanup(0));
    printf("sizes %d\n", sizes());
    printf("pick %d\n", pick(1)(7, 2));
    printf("pick %d\n", pick(0) == NULL);
    printf("multi %lu\n", (unsigned long)multi(7, 8));
    printf("big %llu\n", big(-5, 65535, 'A', 1));
    printf("first_line %zu\n", strlen(first_line(long_text)));
    printf("ticks %ld\n", (long)ticks(100, div(7, 2)));
    fflush(stdout);
    if (getenv("UMON_CONFIG") != NULL) {
        status = umon_flush(20000) == 0 ? 0 : 1;
        umon_close();
    }
    return status;
}
