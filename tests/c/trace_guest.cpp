/*
 * trace_guest.cpp - trace_guest.c's C++ twin: a method and a template under the
 * hooks, to see C++ names demangled on the host.
 *
 *   trace_guest_cxx HOST PORT NAME
 *
 * Commands as trace_guest.c's; "run" calls work() once: work ->
 * Counter::bump(int) -> square<int>(int), twice.
 */
#include "umonitor.h"

#include <poll.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#define NOTRACE __attribute__((no_instrument_function))

static volatile int sink;

template <typename T> __attribute__((noinline)) T square(T x)
{
    return x * x;
}

class Counter {
  public:
    __attribute__((noinline)) void bump(int by)
    {
        total += square<int>(by);
        sink = total;
    }

  private:
    int total = 0;
};

__attribute__((noinline)) void work()
{
    Counter c;
    c.bump(2);
    c.bump(3);
}

NOTRACE static int read_line(char *line, size_t cap)
{
    size_t n = 0;

    for (;;) {
        struct pollfd p;
        char c;

        p.fd = STDIN_FILENO;
        p.events = POLLIN;
        p.revents = 0;
        (void)umon_poll();
        if (poll(&p, 1, 10) <= 0)
            continue;
        if (read(STDIN_FILENO, &c, 1) <= 0)
            return -1;
        if (c == '\n') {
            line[n] = '\0';
            return 0;
        }
        if (n + 1 < cap)
            line[n++] = c;
    }
}

NOTRACE int main(int argc, char **argv)
{
    char line[256];

    if (argc != 4 || umon_init(argv[1], (unsigned)std::atoi(argv[2]), argv[3], nullptr) < 0) {
        std::fputs("usage: trace_guest_cxx HOST PORT NAME\n", stderr);
        return 2;
    }
    while (read_line(line, sizeof line) == 0) {
        if (std::strcmp(line, "run") == 0) {
            struct umon_stats before, after;

            umon_get_stats(&before);
            work();
            umon_get_stats(&after);
            std::printf("%s %llu\n", umon_flush(10000) == 0 ? "ran" : "unacked",
                        after.logged - before.logged);
        } else if (std::strcmp(line, "trace") == 0) {
            std::printf("trace %d\n", umon_get_trace());
        } else if (std::strcmp(line, "quit") == 0) {
            umon_close();
            return 0;
        } else {
            std::fprintf(stderr, "trace_guest_cxx: unknown command %s\n", line);
            return 1;
        }
        std::fflush(stdout);
    }
    umon_close();
    return 0;
}
