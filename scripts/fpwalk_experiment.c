/*
 * Experiment (docs/debugging.md, "Call stacks in the C library's records"): the
 * frame-pointer walk the C library is to do for its error records, and the fatal-signal
 * handler line `umon-crash: ...` it is to print, on Linux. Not part of the library (its
 * sources are in the test guests' build key); the handler uses sprintf here, the real one
 * must not (async-signal-safe: write(2) and a hand-written formatter only).
 *
 *   gcc -O2 -g -static -fno-omit-frame-pointer -o /tmp/fpwalk scripts/fpwalk_experiment.c
 *   /tmp/fpwalk            # the walk from a nested call, and its cost
 *   /tmp/fpwalk crash      # a NULL write two calls down: the umon-crash: line on stderr
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#define DEPTH 16
#define FRAME_MAX 65536u

static __attribute__((noinline)) unsigned walk_from(uintptr_t fp, uintptr_t *out, unsigned max)
{
    unsigned n = 0;
    while (n < max && fp != 0 && (fp & 7u) == 0) {
        const uintptr_t *frame = (const uintptr_t *)fp;
        uintptr_t next = frame[0], ret = frame[1];
        if (ret == 0)
            break;
        out[n++] = ret;
        if (next <= fp || next - fp > FRAME_MAX)
            break;
        fp = next;
    }
    return n;
}

/* As a public logging entry would: its own frame's return address is the caller's. */
static __attribute__((noinline)) unsigned log_entry(uintptr_t *out)
{
    return walk_from((uintptr_t)__builtin_frame_address(0), out, DEPTH);
}

static char *hex(char *p, uintptr_t v)
{
    char tmp[16];
    int n = 0;
    *p++ = '0';
    *p++ = 'x';
    do { tmp[n++] = "0123456789abcdef"[v & 15u]; v >>= 4; } while (v && n < 16);
    while (n)
        *p++ = tmp[--n];
    return p;
}

static char altstack[16384];

static void on_fatal(int sig, siginfo_t *info, void *context)
{
    ucontext_t *uc = context;
    uintptr_t pc = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
    uintptr_t sp = (uintptr_t)uc->uc_mcontext.gregs[REG_RSP];
    uintptr_t fp = (uintptr_t)uc->uc_mcontext.gregs[REG_RBP];
    uintptr_t frames[DEPTH];
    unsigned n = walk_from(fp, frames, DEPTH), i;
    char line[512], *p = line;
    p += sprintf(p, "umon-crash: signal %d code %d addr ", sig, info->si_code); /* the real one: no stdio */
    p = hex(p, (uintptr_t)info->si_addr);
    memcpy(p, " pc ", 4); p = hex(p + 4, pc);
    memcpy(p, " sp ", 4); p = hex(p + 4, sp);
    memcpy(p, " fp ", 4); p = hex(p + 4, fp);
    memcpy(p, " text ", 6); p = hex(p + 6, (uintptr_t)&log_entry);
    memcpy(p, " stack", 6); p += 6;
    for (i = 0; i < n; i++) { *p++ = ' '; p = hex(p, frames[i]); }
    *p++ = '\n';
    (void)!write(2, line, (size_t)(p - line));
    signal(sig, SIG_DFL);
    raise(sig);
}

static __attribute__((noinline)) void write_through_null(int value)
{
    volatile int *volatile target = NULL;
    *target = value;
}

static __attribute__((noinline)) void crash(void)
{
    write_through_null(42);
    fprintf(stderr, "not crashed\n");
}

static __attribute__((noinline)) unsigned inner(uintptr_t *out) { unsigned n = log_entry(out); __asm__ volatile("" ::: "memory"); return n; }
static __attribute__((noinline)) unsigned outer(uintptr_t *out) { unsigned n = inner(out); __asm__ volatile("" ::: "memory"); return n; }

int main(int argc, char **argv)
{
    uintptr_t frames[DEPTH];
    struct timespec a, b;
    unsigned n = outer(frames), i;
    long rounds = 1000000;
    stack_t ss;
    struct sigaction sa;

    printf("walk:");
    for (i = 0; i < n; i++)
        printf(" %#lx", (unsigned long)frames[i]);
    printf("\n");
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (i = 0; i < rounds; i++)
        n += outer(frames);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("ns per walk (with 2 calls): %.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / rounds);
    if (argc > 1) {
        ss.ss_sp = altstack; ss.ss_size = sizeof altstack; ss.ss_flags = 0;
        sigaltstack(&ss, NULL);
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fatal;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigaction(SIGSEGV, &sa, NULL);
        fflush(stdout);
        crash();
    }
    (void)argv;
    return (int)(n & 1);
}
