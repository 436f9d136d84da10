/*
 * umonitor_compat.h - the original (2018) Umonitor guest API, unchanged.
 *
 * Programs written for the first Umonitor keep building: they call
 * debug_init() once, then send_log() with one of the level constants below.
 * The wire format is the legacy one (docs/protocol.md §4): one level byte, then
 * the formatted text, then '\n'. As in the original, the guest LISTENS on TCP
 * (port 2333 unless link->port says otherwise) and the host connects to it
 * (`umonitor serve --dial`); debug_init() blocks until it does.
 *
 * Compile-time switch (define it when compiling umonitor_compat.c):
 *
 *   -DUMON_COMPAT_WIRE_2018   send_log() writes exactly what the 2018 library
 *                             wrote: the level byte and the text, with no
 *                             terminator, in one send() call per message.
 *
 * Without it (the default) every message ends with '\n', so that messages
 * arriving together at the host are still told apart; a 2018 host reads the
 * '\n' as part of the text, which is harmless. The 2018 format relies on the
 * host taking each read as one message, as umonitor does for this format
 * (docs/protocol.md §4): a message longer than one TCP segment may then be
 * cut, and without the '\n', messages sent faster than the host reads may be
 * joined. Use the switch to reproduce the original wire format exactly (a test
 * of old hosts, or of umonitor against old guests).
 *
 * New programs should use umonitor.h instead: it numbers records, survives
 * reconnects and never blocks.
 */
#ifndef UMONITOR_COMPAT_H
#define UMONITOR_COMPAT_H

#ifdef __cplusplus
extern "C" {
#endif

/* Levels: the byte sent before each message. */
#define MESSAGE 'm' /* stored as info */
#define WARNING 'w' /* stored as warning */
#define FAILT 'f'   /* failure, stored as error */
#define RETURN 'r'  /* a function returned, stored as notice */

/* The port debug_init() listens on when link->port is 0. */
#define DEBUG_LINK_DEFAULT_PORT 2333

/* One debugging link to the host. Zero it (or set port) before debug_init(). */
typedef struct debug_link {
    unsigned short port; /* TCP port to listen on; 0 means 2333 */
    int listen_fd;       /* listening socket, -1 when none */
    int conn_fd;         /* the host's connection, -1 when none */
} debug_link;

/*
 * debug_init - listen on link->port (all addresses) and block in accept()
 * until the host connects. Returns 0, or -1 on error (errno set).
 */
int debug_init(debug_link *link);

/*
 * send_log - send one message: the level byte, the printf-style text (cut at
 * 4093 bytes, one trailing newline dropped), then '\n'. Blocks until written.
 * With UMON_COMPAT_WIRE_2018: the level byte and the text as formatted (cut at
 * 4094 bytes, nothing dropped or added). Returns the number of bytes sent, or
 * -1 if the link is not connected or the host went away.
 */
int send_log(debug_link *link, int level, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#ifdef __cplusplus
}
#endif

#endif /* UMONITOR_COMPAT_H */
