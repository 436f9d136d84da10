/*
 * umonitor_compat.c - the original (2018) Umonitor guest API on POSIX sockets.
 *
 * Kept apart from umonitor.c: it shares no state with the native library and a
 * legacy program links only this file.
 *
 * Built with -DUMON_COMPAT_WIRE_2018, send_log() writes what the 2018 library
 * wrote: the level byte and the text, no terminator, in one send() call.
 * Otherwise it ends every message with '\n' (see umonitor_compat.h).
 */
#define _POSIX_C_SOURCE 200809L
/* As in umonitor.c: nolibc gives lib-lwip's headers u_long and friends only
 * with _DEFAULT_SOURCE, and the port is written byte by byte because NetBSD
 * declares htons() only beyond POSIX. */
#define _DEFAULT_SOURCE
#include "umonitor_compat.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

#define LEGACY_MESSAGE_MAX 4096 /* level byte, text, '\n', and vsnprintf's NUL */

#ifdef UMON_COMPAT_WIRE_2018
#define LEGACY_TERMINATOR_LEN 0 /* as in 2018: the host takes each read as a message */
#else
#define LEGACY_TERMINATOR_LEN 1 /* '\n' */
#endif

int debug_init(debug_link *link)
{
    struct sockaddr_in addr;
    unsigned port;
    unsigned char port_bytes[2];
    int one = 1;
    int fd, conn;

    if (link == NULL) {
        errno = EINVAL;
        return -1;
    }
    link->listen_fd = -1;
    link->conn_fd = -1;
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    port = link->port ? link->port : DEBUG_LINK_DEFAULT_PORT;
    port_bytes[0] = (unsigned char)(port >> 8); /* network order */
    port_bytes[1] = (unsigned char)port;
    memset(&addr, 0, sizeof addr); /* the address: INADDR_ANY, all zero */
    addr.sin_family = AF_INET;
    memcpy(&addr.sin_port, port_bytes, sizeof port_bytes);
    if (bind(fd, (const struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 1) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    do {
        conn = accept(fd, NULL, NULL);
    } while (conn < 0 && errno == EINTR);
    if (conn < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    link->listen_fd = fd;
    link->conn_fd = conn;
    return 0;
}

int send_log(debug_link *link, int level, const char *fmt, ...)
{
    char buf[LEGACY_MESSAGE_MAX];
    size_t len, max_text, done = 0;
    va_list ap;
    int n;

    if (link == NULL || link->conn_fd < 0 || fmt == NULL)
        return -1;
    buf[0] = (char)level;
    va_start(ap, fmt);
    n = vsnprintf(buf + 1, sizeof buf - 1 - LEGACY_TERMINATOR_LEN, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    /* the text vsnprintf kept: its size argument less the NUL */
    max_text = sizeof buf - 2 - LEGACY_TERMINATOR_LEN;
    len = 1 + ((size_t)n < max_text ? (size_t)n : max_text);
#ifndef UMON_COMPAT_WIRE_2018
    if (len > 1 && buf[len - 1] == '\n')
        len--;
    buf[len++] = '\n';
#endif
    /* One send() for the whole message; a second only if a signal cut it short. */
    while (done < len) {
        ssize_t sent = send(link->conn_fd, buf + done, len - done, MSG_NOSIGNAL);
        if (sent > 0)
            done += (size_t)sent;
        else if (!(sent < 0 && errno == EINTR))
            return -1;
    }
    return (int)len;
}
