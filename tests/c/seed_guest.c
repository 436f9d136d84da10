/*
 * seed_guest - a guest written only against the original (2018) Umonitor API
 * (umonitor_compat.h), to be built with -DUMON_COMPAT_WIRE_2018 so that it
 * speaks the 2018 wire format exactly: a level byte and the text, no
 * delimiter, one send() per message.
 *
 *   seed_guest PORT COUNT GAP_MS
 *   seed_guest "umon.port=P umon.count=N umon.gap_ms=G ..."
 *
 * Listens on PORT (0 means 2333) and waits for the host to connect, sends COUNT
 * messages "seed message <i>" (i from 1) cycling through MESSAGE, WARNING,
 * FAILT and RETURN, GAP_MS milliseconds apart, then waits one second and exits
 * 0 (1 if the link failed, 2 for a usage error).
 *
 * The second form is how the /init of a `umonitor image build` guest runs its
 * application: one argument holding the umon.* words of the kernel command
 * line (possibly none). Other umon.* words are ignored; the defaults are port
 * 2333, 16 messages, 40 ms apart.
 */
#define _POSIX_C_SOURCE 200809L
#include "umonitor_compat.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WORD_MAX 64

static int parse_number(const char *text, unsigned long *out)
{
    char *end;

    if (text[0] < '0' || text[0] > '9')
        return -1;
    errno = 0;
    *out = strtoul(text, &end, 10);
    return errno != 0 || *end != '\0' ? -1 : 0;
}

/* Read the umon.port, umon.count and umon.gap_ms words of a space-separated
 * list of umon.* words; -1 if one of them is not a number, or a word is not
 * umon.* at all. */
static int parse_words(const char *words, unsigned long *port, unsigned long *count,
                       unsigned long *gap_ms)
{
    static const char *const keys[] = {"umon.port=", "umon.count=", "umon.gap_ms="};
    unsigned long *const values[] = {port, count, gap_ms};
    const char *p = words;

    for (;;) {
        char word[WORD_MAX];
        size_t len = 0;
        size_t k;
        int quoted = 0;

        while (*p == ' ' || *p == '\t' || *p == '\n')
            p++;
        if (*p == '\0')
            return 0;
        for (; *p != '\0'; p++) {
            if (*p == '"') {
                quoted = !quoted; /* as the kernel and /init: quotes group words */
                continue;
            }
            if (!quoted && (*p == ' ' || *p == '\t' || *p == '\n'))
                break;
            if (len < sizeof word - 1)
                word[len++] = *p;
        }
        word[len] = '\0';
        if (strncmp(word, "umon.", 5) != 0)
            return -1; /* not a command line word: most likely PORT alone */
        for (k = 0; k < sizeof keys / sizeof keys[0]; k++) {
            size_t key_len = strlen(keys[k]);
            if (strncmp(word, keys[k], key_len) == 0 &&
                parse_number(word + key_len, values[k]) < 0)
                return -1;
        }
    }
}

static void sleep_ms(unsigned long ms)
{
    struct timespec left;

    left.tv_sec = (time_t)(ms / 1000);
    left.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&left, &left) < 0 && errno == EINTR)
        ;
}

int main(int argc, char **argv)
{
    static const int levels[] = {MESSAGE, WARNING, FAILT, RETURN};
    unsigned long port = DEBUG_LINK_DEFAULT_PORT, count = 16, gap_ms = 40, i;
    debug_link link;
    int usage_ok;

    if (argc == 4)
        usage_ok = parse_number(argv[1], &port) == 0 && parse_number(argv[2], &count) == 0 &&
                   parse_number(argv[3], &gap_ms) == 0;
    else if (argc == 2)
        usage_ok = parse_words(argv[1], &port, &count, &gap_ms) == 0;
    else
        usage_ok = 0;
    if (!usage_ok || port > 65535 || gap_ms > 3600000UL) {
        fputs("usage: seed_guest PORT COUNT GAP_MS\n"
              "       seed_guest \"umon.port=P umon.count=N umon.gap_ms=G\"\n",
              stderr);
        return 2;
    }
    memset(&link, 0, sizeof link);
    link.port = (unsigned short)port;
    if (debug_init(&link) < 0) {
        perror("seed_guest: debug_init");
        return 1;
    }
    for (i = 1; i <= count; i++) {
        if (i > 1)
            sleep_ms(gap_ms);
        if (send_log(&link, levels[(i - 1) % 4], "seed message %lu", i) < 0) {
            perror("seed_guest: send_log");
            return 1;
        }
    }
    sleep_ms(1000);
    return 0;
}
