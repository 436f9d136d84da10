/*
 * umon_init.c - /init of a umonitor single-application Linux guest.
 *
 * The kernel runs this program as process 1 from the initramfs that
 * `umonitor image build` writes (docs/image.md). It turns a bare kernel into a
 * host for exactly one program, /app, and reports on the console what happens:
 *
 *   1. mount proc, sysfs and devtmpfs (/proc, /sys, /dev);
 *   2. load the kernel modules listed in /etc/umon-modules, one path a line, in
 *      that order, with finit_module(2) (virtio-pci and virtio-net on Debian's
 *      kernels, which build them as modules);
 *   3. read /proc/cmdline: umon.ip=ADDR/PREFIX, umon.gw=ADDR (optional),
 *      umon.name=NAME; every umon.* word is also kept for the application;
 *   4. bring up lo, and eth0 with that address and a default route via the
 *      gateway (ioctl; eth0 is waited for up to IF_WAIT_MS);
 *   5. fork and exec /app with the umon.* words as argv[1] and in UMON_CONFIG;
 *      reap every child until /app ends;
 *   6. print how /app ended, then power the machine off (QEMU started with
 *      -no-reboot exits).
 *
 * The console lines all start with "umon-init: ". Two of them are a contract
 * with the host (the supervisor looks for them):
 *
 *   umon-init: app exited with status N
 *   umon-init: app killed by signal N (DESCRIPTION)
 *
 * Nothing here is fatal except a failed fork: without a network the
 * application still runs (its records stay buffered), and whatever happens
 * the machine is powered off at the end rather than letting the kernel panic.
 *
 * C99 with Linux system calls; built with gcc -static. No allocation.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_finit_module
#error "this C library does not define SYS_finit_module"
#endif

#define APP_PATH "/app"
#define MODULE_LIST "/etc/umon-modules"
#define NET_IF "eth0"
#define IF_WAIT_MS 5000
#define IF_POLL_MS 20
#define CMDLINE_MAX 4096 /* the kernel's own limit is 2048 on x86 */
#define VALUE_MAX 256
#define LINE_MAX_BYTES 512
#define PREFIX "umon-init: "

static char cmdline[CMDLINE_MAX];
static char app_config[CMDLINE_MAX];   /* the umon.* words, as written on the command line */
static char app_env[CMDLINE_MAX + 16]; /* "UMON_CONFIG=" + app_config */
static char opt_ip[VALUE_MAX];
static char opt_gw[VALUE_MAX];
static char opt_name[VALUE_MAX];

static double uptime(void)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_BOOTTIME, &ts) != 0)
        return 0.0;
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        buf += n;
        len -= (size_t)n;
    }
}

/* One console line: PREFIX, the formatted text (cut to fit), a newline. */
static void say(const char *fmt, ...)
{
    char line[LINE_MAX_BYTES];
    size_t head = sizeof PREFIX - 1;
    size_t room = sizeof line - head - 1; /* keep one byte for the newline */
    va_list ap;
    int n;

    memcpy(line, PREFIX, head);
    va_start(ap, fmt);
    n = vsnprintf(line + head, room, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= room)
        n = (int)room - 1;
    line[head + (size_t)n] = '\n';
    write_all(STDOUT_FILENO, line, head + (size_t)n + 1);
}

static void sleep_ms(long ms)
{
    struct timespec ts;

    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void mount_fs(const char *source, const char *target, const char *type)
{
    if (mkdir(target, 0755) != 0 && errno != EEXIST)
        say("cannot create %s: %s", target, strerror(errno));
    if (mount(source, target, type, MS_NOSUID | MS_NOEXEC, NULL) != 0 && errno != EBUSY)
        say("cannot mount %s on %s: %s", type, target, strerror(errno));
}

/* Without /dev/console in the initramfs the kernel starts us with no stdio;
 * devtmpfs has the node, so open it then. */
static void ensure_console(void)
{
    int fd;

    if (fcntl(STDOUT_FILENO, F_GETFD) != -1)
        return;
    fd = open("/dev/console", O_RDWR | O_NOCTTY);
    if (fd < 0)
        return;
    (void)dup2(fd, STDIN_FILENO);
    (void)dup2(fd, STDOUT_FILENO);
    (void)dup2(fd, STDERR_FILENO);
    if (fd > STDERR_FILENO)
        (void)close(fd);
}

/* Load the modules named in MODULE_LIST, in order. Already loaded is fine. */
static void load_modules(void)
{
    char path[LINE_MAX_BYTES];
    char names[LINE_MAX_BYTES];
    size_t names_len = 0;
    int loaded = 0, failed = 0;
    FILE *list = fopen(MODULE_LIST, "r");

    if (list == NULL) {
        say("no %s: loading no modules", MODULE_LIST);
        return;
    }
    names[0] = '\0';
    while (fgets(path, sizeof path, list) != NULL) {
        size_t len = strcspn(path, "\r\n");
        const char *base;
        int fd;

        path[len] = '\0';
        if (len == 0 || path[0] == '#')
            continue;
        base = strrchr(path, '/');
        base = base != NULL ? base + 1 : path;
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            say("cannot open module %s: %s", path, strerror(errno));
            failed++;
            continue;
        }
        if (syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST) {
            say("cannot load module %s: %s", base, strerror(errno));
            failed++;
        } else {
            int n = snprintf(names + names_len, sizeof names - names_len, "%s%.*s",
                             loaded > 0 ? " " : "", (int)strcspn(base, "."), base);
            if (n > 0 && (size_t)n < sizeof names - names_len)
                names_len += (size_t)n;
            loaded++;
        }
        (void)close(fd);
    }
    (void)fclose(list);
    say("loaded %d module%s: %s%s", loaded, loaded == 1 ? "" : "s", names,
        failed > 0 ? " (some failed, see above)" : "");
}

/* Copy the value of word (a command-line word without quotes) into out when the
 * word is key=VALUE. */
static void take_value(const char *word, const char *key, char *out, size_t cap)
{
    size_t key_len = strlen(key);

    if (strncmp(word, key, key_len) == 0 && word[key_len] == '=') {
        snprintf(out, cap, "%s", word + key_len + 1);
    }
}

/* Read /proc/cmdline: keep every umon.* word for the application (as written,
 * quotes included) and pick out the values init itself needs. Double quotes
 * group words, as the kernel's own parser does. */
static void read_cmdline(void)
{
    size_t len = 0, config_len = 0;
    const char *p;
    int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);

    if (fd >= 0) {
        for (;;) {
            ssize_t n = read(fd, cmdline + len, sizeof cmdline - 1 - len);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            len += (size_t)n;
        }
        (void)close(fd);
    } else {
        say("cannot read /proc/cmdline: %s", strerror(errno));
    }
    cmdline[len] = '\0';

    p = cmdline;
    for (;;) {
        char word[CMDLINE_MAX];
        size_t word_len = 0;
        const char *start;
        int quoted = 0;

        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
            p++;
        if (*p == '\0')
            break;
        start = p;
        for (; *p != '\0'; p++) {
            if (*p == '"') {
                quoted = !quoted;
                continue;
            }
            if (!quoted && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
                break;
            if (word_len < sizeof word - 1)
                word[word_len++] = *p;
        }
        word[word_len] = '\0';
        if (strncmp(word, "umon.", 5) != 0)
            continue;
        take_value(word, "umon.ip", opt_ip, sizeof opt_ip);
        take_value(word, "umon.gw", opt_gw, sizeof opt_gw);
        take_value(word, "umon.name", opt_name, sizeof opt_name);
        if (config_len + (size_t)(p - start) + 2 < sizeof app_config) {
            if (config_len > 0)
                app_config[config_len++] = ' ';
            memcpy(app_config + config_len, start, (size_t)(p - start));
            config_len += (size_t)(p - start);
            app_config[config_len] = '\0';
        }
    }
}

/* "ADDR/PREFIX" into an address and a netmask; -1 if it is not one. */
static int parse_cidr(const char *text, struct in_addr *addr, struct in_addr *mask)
{
    char host[INET_ADDRSTRLEN];
    const char *slash = strchr(text, '/');
    char *end;
    long prefix;
    size_t host_len;

    if (slash == NULL)
        return -1;
    host_len = (size_t)(slash - text);
    if (host_len == 0 || host_len >= sizeof host)
        return -1;
    memcpy(host, text, host_len);
    host[host_len] = '\0';
    if (inet_pton(AF_INET, host, addr) != 1)
        return -1;
    errno = 0;
    prefix = strtol(slash + 1, &end, 10);
    if (errno != 0 || end == slash + 1 || *end != '\0' || prefix < 0 || prefix > 32)
        return -1;
    mask->s_addr = prefix == 0 ? 0 : htonl(0xFFFFFFFFu << (32 - prefix));
    return 0;
}

static void set_sockaddr(struct sockaddr *sa, struct in_addr addr)
{
    struct sockaddr_in sin;

    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr = addr;
    memcpy(sa, &sin, sizeof sin);
}

static void name_ifreq(struct ifreq *ifr, const char *name)
{
    memset(ifr, 0, sizeof *ifr);
    snprintf(ifr->ifr_name, sizeof ifr->ifr_name, "%s", name);
}

static int link_up(int s, const char *name)
{
    struct ifreq ifr;

    name_ifreq(&ifr, name);
    if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0)
        return -1;
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    return ioctl(s, SIOCSIFFLAGS, &ifr);
}

static void configure_network(void)
{
    struct in_addr addr, mask, gw;
    struct ifreq ifr;
    struct rtentry route;
    char route_dev[IFNAMSIZ];
    int waited = 0;
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    if (s < 0) {
        say("no IPv4 socket: %s; no network", strerror(errno));
        return;
    }
    if (link_up(s, "lo") != 0)
        say("cannot bring up lo: %s", strerror(errno));
    if (opt_ip[0] == '\0') {
        say("no umon.ip=ADDR/PREFIX on the command line: %s not configured", NET_IF);
        (void)close(s);
        return;
    }
    if (parse_cidr(opt_ip, &addr, &mask) != 0) {
        say("bad umon.ip=%s (want ADDR/PREFIX): %s not configured", opt_ip, NET_IF);
        (void)close(s);
        return;
    }
    for (;;) {
        name_ifreq(&ifr, NET_IF);
        if (ioctl(s, SIOCGIFINDEX, &ifr) == 0)
            break;
        if (waited >= IF_WAIT_MS) {
            say("no %s after %d ms: no network", NET_IF, waited);
            (void)close(s);
            return;
        }
        sleep_ms(IF_POLL_MS);
        waited += IF_POLL_MS;
    }

    name_ifreq(&ifr, NET_IF);
    set_sockaddr(&ifr.ifr_addr, addr);
    if (ioctl(s, SIOCSIFADDR, &ifr) != 0)
        say("cannot set the address of %s: %s", NET_IF, strerror(errno));
    name_ifreq(&ifr, NET_IF);
    set_sockaddr(&ifr.ifr_netmask, mask);
    if (ioctl(s, SIOCSIFNETMASK, &ifr) != 0)
        say("cannot set the netmask of %s: %s", NET_IF, strerror(errno));
    if (link_up(s, NET_IF) != 0)
        say("cannot bring up %s: %s", NET_IF, strerror(errno));

    if (opt_gw[0] == '\0') {
        say("%s is up: %s (no umon.gw, no default route)", NET_IF, opt_ip);
    } else if (inet_pton(AF_INET, opt_gw, &gw) != 1) {
        say("%s is up: %s; bad umon.gw=%s, no default route", NET_IF, opt_ip, opt_gw);
    } else {
        struct in_addr any;

        any.s_addr = htonl(INADDR_ANY);
        memset(&route, 0, sizeof route);
        set_sockaddr(&route.rt_dst, any);
        set_sockaddr(&route.rt_genmask, any);
        set_sockaddr(&route.rt_gateway, gw);
        route.rt_flags = RTF_UP | RTF_GATEWAY;
        snprintf(route_dev, sizeof route_dev, "%s", NET_IF);
        route.rt_dev = route_dev;
        if (ioctl(s, SIOCADDRT, &route) != 0 && errno != EEXIST)
            say("%s is up: %s; cannot add the default route via %s: %s", NET_IF, opt_ip, opt_gw,
                strerror(errno));
        else
            say("%s is up: %s via %s", NET_IF, opt_ip, opt_gw);
    }
    (void)close(s);
}

static pid_t start_app(void)
{
    static char app_path[] = APP_PATH;
    static char env_path[] = "PATH=/";
    static char env_home[] = "HOME=/";
    static char env_term[] = "TERM=linux";
    char *argv[3];
    char *envp[5];
    pid_t pid;

    snprintf(app_env, sizeof app_env, "UMON_CONFIG=%s", app_config);
    argv[0] = app_path;
    argv[1] = app_config;
    argv[2] = NULL;
    envp[0] = app_env;
    envp[1] = env_path;
    envp[2] = env_home;
    envp[3] = env_term;
    envp[4] = NULL;

    say("starting %s at %.2f s: %s", APP_PATH, uptime(), app_config);
    pid = fork();
    if (pid == 0) {
        (void)setsid();
        execve(APP_PATH, argv, envp);
        say("cannot run %s: %s", APP_PATH, strerror(errno));
        _exit(127);
    }
    if (pid < 0)
        say("cannot fork: %s", strerror(errno));
    return pid;
}

/* Reap every child (process 1 inherits orphans) until the application ends. */
static void wait_for_app(pid_t app)
{
    double started = uptime();
    int status = 0;

    for (;;) {
        pid_t pid = waitpid(-1, &status, 0);
        if (pid == app)
            break;
        if (pid < 0 && errno != EINTR) {
            say("lost track of %s: %s", APP_PATH, strerror(errno));
            return;
        }
    }
    if (WIFEXITED(status)) {
        say("app exited with status %d", WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        const char *what = strsignal(sig);
        say("app killed by signal %d (%s)%s", sig, what != NULL ? what : "unknown",
            WCOREDUMP(status) ? ", core dumped" : "");
    } else {
        say("app ended with wait status %#x", (unsigned)status);
    }
    say("app ran for %.2f s", uptime() - started);
}

static void power_off(void)
{
    sync();
    say("powering off");
    if (reboot(RB_POWER_OFF) != 0)
        say("cannot power off: %s", strerror(errno));
    for (;;)
        pause();
}

int main(void)
{
    pid_t app;

    mount_fs("proc", "/proc", "proc");
    mount_fs("sysfs", "/sys", "sysfs");
    mount_fs("devtmpfs", "/dev", "devtmpfs");
    ensure_console();
    say("started at %.2f s", uptime());

    read_cmdline();
    if (opt_name[0] != '\0' && sethostname(opt_name, strnlen(opt_name, 64)) != 0)
        say("cannot set the host name: %s", strerror(errno));
    load_modules();
    configure_network();

    app = start_app();
    if (app > 0)
        wait_for_app(app);
    power_off();
    return 0;
}
