/*
 * umonitor_compat.c - the original (2018) Umonitor guest API on POSIX sockets.
 *
 * Kept apart from umonitor.c: it shares no state with the native library and a
 * legacy program links only this file.
 */
#define _POSIX_C_SOURCE 200809L
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

#define LEGACY_MESSAGE_MAX 4096 /* level byte + text + '\n' */

int debug_init(debug_link *link)
{
    struct sockaddr_in addr;
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
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    addr.sin_port = htons(link->port ? link->port : DEBUG_LINK_DEFAULT_PORT);
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
    size_t len, done = 0;
    va_list ap;
    int n;

    if (link == NULL || link->conn_fd < 0 || fmt == NULL)
        return -1;
    buf[0] = (char)level;
    va_start(ap, fmt);
    n = vsnprintf(buf + 1, sizeof buf - 2, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    len = 1 + ((size_t)n < sizeof buf - 3 ? (size_t)n : sizeof buf - 3);
    if (len > 1 && buf[len - 1] == '\n')
        len--;
    buf[len++] = '\n';
    while (done < len) {
        ssize_t sent = send(link->conn_fd, buf + done, len - done, MSG_NOSIGNAL);
        if (sent > 0)
            done += (size_t)sent;
        else if (!(sent < 0 && errno == EINTR))
            return -1;
    }
    return (int)len;
}
