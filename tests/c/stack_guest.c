/*
 * stack_guest - a test guest whose records carry call stacks.
 *
 *   stack_guest HOST PORT NAME            log, flush, exit 0
 *   stack_guest HOST PORT NAME crash      write through NULL (no collector needed)
 *
 * main() calls outer(), which calls inner(), which logs an error (a record
 * with umon.stack: inner, outer, main), then main() logs a notice (no stack).
 * With "crash", main() calls crash() instead, which calls write_through_null():
 * the library's fatal-signal handler (installed by umon_init) prints its
 * umon-crash: line and the process dies of SIGSEGV. Every call here is kept
 * out of line and is not a tail call, so that each function has a frame of its
 * own.
 */
#define _POSIX_C_SOURCE 200809L
#include "umonitor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOINLINE __attribute__((noinline))

static volatile int sink;

static NOINLINE void inner(void)
{
    UMON_LOG_ERROR("two calls down");
    sink++; /* not a tail call */
}

static NOINLINE void outer(void)
{
    inner();
    sink++;
}

static NOINLINE void write_through_null(int value)
{
    volatile int *volatile target = NULL;

    *target = value;
}

static NOINLINE void crash(void)
{
    write_through_null(42);
    sink++;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fputs("usage: stack_guest HOST PORT NAME [crash]\n", stderr);
        return 2;
    }
    if (umon_init(argv[1], (unsigned)atoi(argv[2]), argv[3], NULL) != 0)
        return 2;
    if (argc > 4 && strcmp(argv[4], "crash") == 0) {
        crash();
        return 3;
    }
    outer();
    UMON_LOG_NOTICE("no stack at notice");
    if (umon_flush(20000) != 0)
        return 1;
    umon_close();
    return 0;
}
