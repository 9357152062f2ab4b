// The proxy behind `edgellm linkemu`: accepts TCP connections, connects each one to
// the forward address and relays both directions through the link scheduler, which
// decides when each packet may be handed to the other side. One thread, ppoll-based;
// all state hangs off el_linkemu. A small line-based control port changes the link
// while it runs.
#include "edgellm/linkemu.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

enum { UP = 0, DOWN = 1 };
#define READ_MAX 65536   // bytes per recv(); also the read buffer size
#define MAX_IOV 64       // packets per sendmsg()
#define MAX_CTL 8        // control clients at once
#define CTL_LINE 512     // longest control command accepted

static const char *dir_name[2] = {"up", "down"};

// One packet on its way: payload bytes and the time it may be handed over.
// len == 0 marks the sender's FIN (passed on as shutdown(SHUT_WR)).
typedef struct pkt {
    struct pkt *next;
    uint64_t arrive_ns;
    uint32_t len, off;
    unsigned char data[];
} pkt;

// One direction of one connection: src -> (queue) -> dst.
typedef struct {
    int src, dst;     // borrowed from the connection
    pkt *head, *tail;
    size_t held;      // payload bytes queued
    int eof_read;     // src sent FIN; a FIN marker is queued
    int shut;         // the FIN marker was delivered: dst is shut for writing
    int blocked;      // dst's socket buffer is full: wait for POLLOUT, stop reading src
    el_linkemu_stream stream;  // in-order delivery state of this byte stream
} flow;

typedef struct {
    int cfd, sfd;     // client (listen side) and server (forward side) sockets
    int connecting;   // connect() to the forward address still in progress
    int dead;         // to be closed at the end of this loop iteration
    int pi_c, pi_s;   // index in the poll array, or -1
    uint64_t id;
    char peer[80];
    flow f[2];        // f[UP]: cfd -> sfd, f[DOWN]: sfd -> cfd
} conn;

typedef struct {
    int fd, pi, dead;
    char in[CTL_LINE];
    size_t nin;
    char out[4096];
    size_t nout;
} ctl_client;

struct el_linkemu {
    el_linkemu_config cfg;
    int lfd, ctl_fd;
    int lport, cport;
    struct sockaddr_storage fwd;
    socklen_t fwd_len;
    char listen_str[300], fwd_str[300], ctl_str[300];
    el_linkemu_dir dir[2];
    size_t held[2];
    uint64_t bytes_in[2], bytes_out[2];
    conn **conns;
    int nconns;
    ctl_client ctl[MAX_CTL];
    int nctl;
    uint64_t conns_total, conns_failed;
    uint64_t t_start, t_stats, stats_out[2], stats_pkts[2], stats_lost[2];
    unsigned char *buf;
    struct pollfd *pfd;
    int npfd_cap;
    int rr;  // round-robin start, so no connection always reads first
};

// ---------------------------------------------------------------- helpers

static void log_line(el_linkemu *e, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void log_line(el_linkemu *e, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    el_vlogf(e->cfg.log, "linkemu: ", fmt, ap);
    va_end(ap);
}

static void fmt_addr(char *buf, size_t n, const char *host, int port) {
    if (strchr(host, ':')) snprintf(buf, n, "tcp://[%s]:%d", host, port);
    else snprintf(buf, n, "tcp://%s:%d", host, port);
}

static void fmt_time(uint64_t ns, char *buf, size_t n) {
    if (ns == 0) snprintf(buf, n, "0");
    else if (ns % 1000000ULL == 0) snprintf(buf, n, "%llums", (unsigned long long)(ns / 1000000ULL));
    else if (ns >= 1000000ULL) snprintf(buf, n, "%.3gms", (double)ns / 1e6);
    else snprintf(buf, n, "%.3gus", (double)ns / 1e3);
}

static void set_nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

void el_linkemu_config_default(el_linkemu_config *c) {
    memset(c, 0, sizeof *c);
    c->rto_auto = 1;
    c->up.rto_ns = c->down.rto_ns = el_linkemu_auto_rto(0, 0);
    c->seed = 1;
    c->queue_limit = 64u << 20;
    c->buffer_ns = 100000000ULL;  // 100 ms
    c->max_conns = 256;
}

// Binds a listening socket; the port actually bound goes to *port.
static el_status listen_on(const el_addr *a, const char *what, const char *str, int *fd_out, int *port,
                           el_error *err) {
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int any = !strcmp(a->host, "*");
    hints.ai_family = any ? AF_INET : AF_UNSPEC;
    char ps[8];
    snprintf(ps, sizeof ps, "%d", a->port);
    int rc = getaddrinfo(any ? NULL : a->host, ps, &hints, &res);
    if (rc) return el_err(err, EL_ERR_ARG, "%s %s: cannot resolve '%s': %s", what, str, a->host, gai_strerror(rc));
    int fd = -1, last = 0;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) { last = errno; continue; }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, 128)) {
            last = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) return el_err(err, EL_ERR_IO, "%s %s: cannot listen: %s", what, str, strerror(last));
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    *port = a->port;
    if (!getsockname(fd, (struct sockaddr *)&ss, &sl)) {
        if (ss.ss_family == AF_INET) *port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6) *port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    *fd_out = fd;
    return EL_OK;
}

static void apply_params(el_linkemu *e) {
    if (e->cfg.rto_auto) e->cfg.up.rto_ns = e->cfg.down.rto_ns = el_linkemu_auto_rto(e->cfg.up.delay_ns, e->cfg.down.delay_ns);
    el_linkemu_dir_set(&e->dir[UP], &e->cfg.up);
    el_linkemu_dir_set(&e->dir[DOWN], &e->cfg.down);
}

el_status el_linkemu_open(const el_linkemu_config *cfg, el_linkemu **out, el_error *err) {
    *out = NULL;
    if (cfg->max_conns < 1 || cfg->max_conns > 65536)
        return el_err(err, EL_ERR_ARG, "max connections %d is not in 1..65536", cfg->max_conns);
    if (cfg->queue_limit < READ_MAX)
        return el_err(err, EL_ERR_ARG, "queue limit %zu bytes is below %d", cfg->queue_limit, READ_MAX);
    el_linkemu *e = el_calloc(1, sizeof *e);
    if (!e) return el_err(err, EL_ERR_NOMEM, "linkemu: out of memory");
    e->cfg = *cfg;
    e->lfd = e->ctl_fd = -1;
    for (int i = 0; i < MAX_CTL; i++) e->ctl[i].fd = -1;
    fmt_addr(e->listen_str, sizeof e->listen_str, cfg->listen.host, cfg->listen.port);
    fmt_addr(e->fwd_str, sizeof e->fwd_str, cfg->forward.host, cfg->forward.port);
    fmt_addr(e->ctl_str, sizeof e->ctl_str, cfg->control.host, cfg->control.port);
    e->buf = el_malloc(READ_MAX);
    e->conns = el_calloc((size_t)cfg->max_conns, sizeof *e->conns);
    e->npfd_cap = 2 + MAX_CTL + 2 * cfg->max_conns + 1;
    e->pfd = el_calloc((size_t)e->npfd_cap, sizeof *e->pfd);
    if (!e->buf || !e->conns || !e->pfd) {
        el_linkemu_close(e);
        return el_err(err, EL_ERR_NOMEM, "linkemu: out of memory");
    }

    // The forward address is resolved once, so a typo fails at start, not per connection.
    if (!strcmp(cfg->forward.host, "*") || cfg->forward.port == 0) {
        el_linkemu_close(e);
        return el_err(err, EL_ERR_ARG, "forward %s: needs a host and a non-zero port to connect to", e->fwd_str);
    }
    // IPv4 first: "localhost" often resolves to ::1 first while servers listen on 127.0.0.1.
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    hints.ai_family = AF_INET;
    char ps[8];
    snprintf(ps, sizeof ps, "%d", cfg->forward.port);
    int rc = getaddrinfo(cfg->forward.host, ps, &hints, &res);
    if (rc) {
        hints.ai_family = AF_UNSPEC;
        rc = getaddrinfo(cfg->forward.host, ps, &hints, &res);
    }
    if (rc) {
        el_err(err, EL_ERR_ARG, "forward %s: cannot resolve '%s': %s", e->fwd_str, cfg->forward.host, gai_strerror(rc));
        el_linkemu_close(e);
        return EL_ERR_ARG;
    }
    memcpy(&e->fwd, res->ai_addr, res->ai_addrlen);
    e->fwd_len = res->ai_addrlen;
    freeaddrinfo(res);

    el_status s = listen_on(&cfg->listen, "listen", e->listen_str, &e->lfd, &e->lport, err);
    if (!s && cfg->has_control) s = listen_on(&cfg->control, "control", e->ctl_str, &e->ctl_fd, &e->cport, err);
    if (s) {
        el_linkemu_close(e);
        return s;
    }
    el_linkemu_dir_init(&e->dir[UP], &cfg->up, cfg->seed);
    el_linkemu_dir_init(&e->dir[DOWN], &cfg->down, cfg->seed ^ 0x5bd1e995u);
    apply_params(e);
    *out = e;
    return EL_OK;
}

int el_linkemu_listen_port(const el_linkemu *e) { return e->lport; }
int el_linkemu_control_port(const el_linkemu *e) { return e->cport; }

// ---------------------------------------------------------------- connections

static void flow_free(el_linkemu *e, int d, flow *f) {
    for (pkt *p = f->head, *n; p; p = n) {
        n = p->next;
        e->held[d] -= p->len - p->off;
        free(p);
    }
    f->head = f->tail = NULL;
    f->held = 0;
}

static void conn_free(el_linkemu *e, conn *c) {
    flow_free(e, UP, &c->f[UP]);
    flow_free(e, DOWN, &c->f[DOWN]);
    if (c->cfd >= 0) close(c->cfd);
    if (c->sfd >= 0) close(c->sfd);
    free(c);
}

static void accept_conns(el_linkemu *e) {
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(e->lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) log_line(e, "accept on %s: %s", e->listen_str, strerror(errno));
            return;
        }
        char host[64] = "?", serv[16] = "?";
        getnameinfo((struct sockaddr *)&ss, sl, host, sizeof host, serv, sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV);
        e->conns_total++;
        if (e->nconns >= e->cfg.max_conns) {
            log_line(e, "connection from %s:%s refused: already %d connections", host, serv, e->nconns);
            close(fd);
            continue;
        }
        conn *c = el_calloc(1, sizeof *c);
        if (!c) {
            log_line(e, "connection from %s:%s refused: out of memory", host, serv);
            close(fd);
            continue;
        }
        c->id = e->conns_total;
        c->cfd = fd;
        c->pi_c = c->pi_s = -1;
        snprintf(c->peer, sizeof c->peer, "%s:%s", host, serv);
        set_nodelay(fd);
        c->sfd = socket(e->fwd.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int rc = c->sfd < 0 ? -1 : connect(c->sfd, (struct sockaddr *)&e->fwd, e->fwd_len);
        if (rc && errno != EINPROGRESS) {
            log_line(e, "connection %llu from %s: forward %s: %s; closed", (unsigned long long)c->id, c->peer, e->fwd_str,
                  strerror(errno));
            e->conns_failed++;
            conn_free(e, c);
            continue;
        }
        set_nodelay(c->sfd);
        c->connecting = rc != 0;
        c->f[UP].src = c->cfd;
        c->f[UP].dst = c->sfd;
        c->f[DOWN].src = c->sfd;
        c->f[DOWN].dst = c->cfd;
        e->conns[e->nconns++] = c;
    }
}

// How many bytes the link takes from a source in direction d right now: the
// bottleneck buffer (in time at the current rate) and the memory cap both bound it.
static size_t allowance(el_linkemu *e, int d, uint64_t now) {
    if (e->held[d] >= e->cfg.queue_limit) return 0;
    size_t room = e->cfg.queue_limit - e->held[d];
    size_t n = READ_MAX;
    double rate = e->dir[d].p.rate_bps;
    if (rate > 0) {
        uint64_t backlog = el_linkemu_dir_backlog_ns(&e->dir[d], now);
        if (backlog >= e->cfg.buffer_ns) return 0;
        double b = (double)(e->cfg.buffer_ns - backlog) * rate / 8e9;
        if (b < EL_LINKEMU_MSS) b = EL_LINKEMU_MSS;
        if (b < (double)n) n = (size_t)b;
    }
    return n < room ? n : room;
}

static pkt *queue(el_linkemu *e, int d, flow *f, uint64_t now, const unsigned char *data, size_t len) {
    pkt *p = malloc(sizeof *p + len);
    if (!p) return NULL;
    p->next = NULL;
    p->len = (uint32_t)len;
    p->off = 0;
    if (len) memcpy(p->data, data, len);
    p->arrive_ns = el_linkemu_dir_send(&e->dir[d], &f->stream, now, len).arrive_ns;
    if (f->tail) f->tail->next = p;
    else f->head = p;
    f->tail = p;
    f->held += len;
    e->held[d] += len;
    return p;
}

// Reads what the link accepts from f's source; returns -1 when the connection must close.
static int flow_read(el_linkemu *e, conn *c, int d, uint64_t now) {
    flow *f = &c->f[d];
    size_t allow = allowance(e, d, now);
    if (!allow) return 0;
    ssize_t n = recv(f->src, e->buf, allow, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
        log_line(e, "connection %llu from %s: %s side: %s; closed", (unsigned long long)c->id, c->peer,
              d == UP ? "device" : "edge", strerror(errno));
        return -1;
    }
    if (n == 0) {
        f->eof_read = 1;
        if (!queue(e, d, f, now, NULL, 0)) goto oom;
        return 0;
    }
    e->bytes_in[d] += (uint64_t)n;
    for (size_t off = 0; off < (size_t)n; off += EL_LINKEMU_MSS) {
        size_t len = (size_t)n - off < EL_LINKEMU_MSS ? (size_t)n - off : EL_LINKEMU_MSS;
        if (!queue(e, d, f, now, e->buf + off, len)) goto oom;
    }
    return 0;
oom:
    log_line(e, "connection %llu from %s: out of memory; closed", (unsigned long long)c->id, c->peer);
    return -1;
}

// Hands every packet that has arrived by `now` to f's destination; returns -1
// when the connection must close.
static int flow_deliver(el_linkemu *e, conn *c, int d, uint64_t now) {
    flow *f = &c->f[d];
    while (f->head && !f->blocked && f->head->arrive_ns <= now) {
        if (f->head->len == 0) {  // the sender's FIN, delivered in order
            pkt *p = f->head;
            f->head = p->next;
            if (!f->head) f->tail = NULL;
            free(p);
            shutdown(f->dst, SHUT_WR);
            f->shut = 1;
            continue;
        }
        struct iovec iov[MAX_IOV];
        int k = 0;
        size_t want = 0;
        for (pkt *p = f->head; p && k < MAX_IOV && p->len && p->arrive_ns <= now; p = p->next, k++) {
            iov[k].iov_base = p->data + p->off;
            iov[k].iov_len = p->len - p->off;
            want += iov[k].iov_len;
        }
        struct msghdr mh = {0};
        mh.msg_iov = iov;
        mh.msg_iovlen = (size_t)k;
        ssize_t n = sendmsg(f->dst, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                f->blocked = 1;
                return 0;
            }
            log_line(e, "connection %llu from %s: writing to the %s side: %s; closed", (unsigned long long)c->id, c->peer,
                  d == UP ? "edge" : "device", strerror(errno));
            return -1;
        }
        e->bytes_out[d] += (uint64_t)n;
        e->held[d] -= (size_t)n;
        f->held -= (size_t)n;
        size_t left = (size_t)n;
        while (left) {
            pkt *p = f->head;
            size_t rest = p->len - p->off;
            if (left < rest) {
                p->off += (uint32_t)left;
                break;
            }
            left -= rest;
            f->head = p->next;
            if (!f->head) f->tail = NULL;
            free(p);
        }
        if ((size_t)n < want) f->blocked = 1;  // the socket buffer is full
    }
    return 0;
}

// ---------------------------------------------------------------- control port

static void ctl_send(ctl_client *cl, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void ctl_send(ctl_client *cl, const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n > sizeof line - 2) n = (int)sizeof line - 2;
    line[n++] = '\n';
    if (cl->nout + (size_t)n > sizeof cl->out) {  // a client that never reads is dropped
        cl->dead = 1;
        return;
    }
    memcpy(cl->out + cl->nout, line, (size_t)n);
    cl->nout += (size_t)n;
}

void el_linkemu_describe(const el_linkemu *e, char *buf, size_t n) {
    int o = 0;
    for (int d = 0; d < 2 && o >= 0 && (size_t)o < n; d++) {
        const el_linkemu_params *p = d == UP ? &e->cfg.up : &e->cfg.down;
        char r[32], dl[32], j[32], rto[32];
        el_linkemu_format_rate(p->rate_bps, r, sizeof r);
        fmt_time(p->delay_ns, dl, sizeof dl);
        fmt_time(p->jitter_ns, j, sizeof j);
        fmt_time(p->rto_ns, rto, sizeof rto);
        o += snprintf(buf + o, n - (size_t)o, "%s%s %s delay %s jitter %s loss %g%% rto %s", d ? " | " : "", dir_name[d],
                      r, dl, j, p->loss * 100, rto);
    }
}

static void interval_line(el_linkemu *e, uint64_t now, char *buf, size_t n) {
    double dt = (double)(now - e->t_stats) * 1e-9;
    int o = snprintf(buf, n, "%.1fs", (double)(now - e->t_start) * 1e-9);
    for (int d = 0; d < 2 && o >= 0 && (size_t)o < n; d++) {
        uint64_t db = e->bytes_out[d] - e->stats_out[d];
        o += snprintf(buf + o, n - (size_t)o, " | %s %.2f MB %.3f Mbit/s %llu pkt %llu lost", dir_name[d],
                      (double)e->bytes_out[d] / 1e6, dt > 0 ? (double)db * 8 / dt / 1e6 : 0.0,
                      (unsigned long long)(e->dir[d].n_packets - e->stats_pkts[d]),
                      (unsigned long long)(e->dir[d].n_lost - e->stats_lost[d]));
    }
    if (o >= 0 && (size_t)o < n) snprintf(buf + o, n - (size_t)o, " | %d conns", e->nconns);
}

static void stats_reset_interval(el_linkemu *e, uint64_t now) {
    e->t_stats = now;
    for (int d = 0; d < 2; d++) {
        e->stats_out[d] = e->bytes_out[d];
        e->stats_pkts[d] = e->dir[d].n_packets;
        e->stats_lost[d] = e->dir[d].n_lost;
    }
}

static void ctl_command(el_linkemu *e, ctl_client *cl, char *line, uint64_t now) {
    size_t len = strlen(line);
    while (len && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t')) line[--len] = 0;
    for (const unsigned char *q = (const unsigned char *)line; *q; q++)
        if ((*q < 0x20 && *q != '\t') || *q >= 0x7f) {
            ctl_send(cl, "error: command contains control or non-ASCII bytes");
            return;
        }
    char *cmd = line;
    while (*cmd == ' ' || *cmd == '\t') cmd++;
    if (!*cmd) return;
    char *arg = cmd + strcspn(cmd, " \t");
    if (*arg) {
        *arg++ = 0;
        while (*arg == ' ' || *arg == '\t') arg++;
    }
    el_error err = {0};
    el_linkemu_params up = e->cfg.up, down = e->cfg.down;
    int rto_auto = e->cfg.rto_auto;
    el_status s = EL_OK;
    if (!strcmp(cmd, "rate") || !strcmp(cmd, "rate-up") || !strcmp(cmd, "rate-down")) {
        double r;
        if (!(s = el_linkemu_parse_rate(arg, &r, &err))) {
            if (strcmp(cmd, "rate-down")) up.rate_bps = r;
            if (strcmp(cmd, "rate-up")) down.rate_bps = r;
        }
    } else if (!strcmp(cmd, "delay") || !strcmp(cmd, "jitter") || !strcmp(cmd, "rto")) {
        uint64_t t;
        if (!strcmp(cmd, "rto") && !strcmp(arg, "auto")) rto_auto = 1;
        else if (!(s = el_linkemu_parse_duration(arg, &t, &err))) {
            if (!strcmp(cmd, "delay")) up.delay_ns = down.delay_ns = t;
            else if (!strcmp(cmd, "jitter")) up.jitter_ns = down.jitter_ns = t;
            else { up.rto_ns = down.rto_ns = t; rto_auto = 0; }
        }
    } else if (!strcmp(cmd, "loss")) {
        double p;
        if (!(s = el_linkemu_parse_loss(arg, &p, &err))) up.loss = down.loss = p;
    } else if (!strcmp(cmd, "profile")) {
        const el_linkemu_profile *pr = el_linkemu_profile_find(arg);
        if (!pr) s = el_err(&err, EL_ERR_ARG, "unknown profile '%s' (lan, wifi6, lte, 5g-embb, 6g)", arg);
        else {
            up.rate_bps = pr->rate_up_bps;
            down.rate_bps = pr->rate_down_bps;
            up.delay_ns = down.delay_ns = pr->delay_ns;
            up.jitter_ns = down.jitter_ns = pr->jitter_ns;
            up.loss = down.loss = pr->loss;
        }
    } else if (!strcmp(cmd, "show")) {
        char b[512];
        el_linkemu_describe(e, b, sizeof b);
        ctl_send(cl, "ok %s", b);
        return;
    } else if (!strcmp(cmd, "stats")) {
        char b[512];
        el_linkemu_stats st;
        el_linkemu_get_stats(e, &st);
        el_linkemu_format_stats(&st, b, sizeof b);
        ctl_send(cl, "ok %s", b);
        return;
    } else if (!strcmp(cmd, "help")) {
        ctl_send(cl, "ok commands: rate R | rate-up R | rate-down R | delay D | jitter D | loss P | rto D|auto | "
                     "profile NAME | show | stats | quit");
        return;
    } else if (!strcmp(cmd, "quit")) {
        ctl_send(cl, "ok bye");
        cl->dead = 2;  // flush, then close
        return;
    } else {
        ctl_send(cl, "error: unknown command '%.40s' (try help)", cmd);
        return;
    }
    if (s) {
        ctl_send(cl, "error: %s: %s", cmd, err.msg);
        return;
    }
    e->cfg.up = up;
    e->cfg.down = down;
    e->cfg.rto_auto = rto_auto;
    apply_params(e);
    char b[512];
    el_linkemu_describe(e, b, sizeof b);
    ctl_send(cl, "ok %s", b);
    log_line(e, "control: %s %s -> %s", cmd, arg, b);
    (void)now;
}

static void ctl_read(el_linkemu *e, ctl_client *cl, uint64_t now) {
    ssize_t n = recv(cl->fd, cl->in + cl->nin, sizeof cl->in - cl->nin, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) {
        cl->dead = 1;
        return;
    }
    cl->nin += (size_t)n;
    for (;;) {
        char *nl = memchr(cl->in, '\n', cl->nin);
        if (!nl) break;
        *nl = 0;
        if (memchr(cl->in, 0, (size_t)(nl - cl->in))) ctl_send(cl, "error: command contains a NUL byte");
        else ctl_command(e, cl, cl->in, now);
        size_t used = (size_t)(nl - cl->in) + 1;
        memmove(cl->in, cl->in + used, cl->nin - used);
        cl->nin -= used;
    }
    if (cl->nin == sizeof cl->in) {
        ctl_send(cl, "error: line longer than %d bytes", CTL_LINE - 1);
        cl->dead = 2;
    }
}

static void ctl_flush(ctl_client *cl) {
    while (cl->nout) {
        ssize_t n = send(cl->fd, cl->out, cl->nout, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) cl->dead = 1;
            return;
        }
        memmove(cl->out, cl->out + n, cl->nout - (size_t)n);
        cl->nout -= (size_t)n;
    }
}

static void ctl_accept(el_linkemu *e) {
    for (;;) {
        int fd = accept4(e->ctl_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            return;
        }
        int slot = -1;
        for (int i = 0; i < MAX_CTL && slot < 0; i++)
            if (e->ctl[i].fd < 0) slot = i;
        if (slot < 0) {
            static const char busy[] = "error: too many control connections\n";
            if (send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) { /* closing anyway */ }
            close(fd);
            continue;
        }
        ctl_client *cl = &e->ctl[slot];
        memset(cl, 0, sizeof *cl);
        cl->fd = fd;
        cl->pi = -1;
        e->nctl++;
    }
}

// ---------------------------------------------------------------- the loop

void el_linkemu_get_stats(const el_linkemu *e, el_linkemu_stats *s) {
    memset(s, 0, sizeof *s);
    el_linkemu_dir_stats *ds[2] = {&s->up, &s->down};
    for (int d = 0; d < 2; d++) {
        ds[d]->bytes_in = e->bytes_in[d];
        ds[d]->bytes_out = e->bytes_out[d];
        ds[d]->packets = e->dir[d].n_packets;
        ds[d]->lost = e->dir[d].n_lost;
    }
    s->conns_total = e->conns_total;
    s->conns_open = (uint64_t)e->nconns;
    s->conns_failed = e->conns_failed;
    s->elapsed_s = e->t_start ? (double)(el_time_ns() - e->t_start) * 1e-9 : 0;
}

void el_linkemu_format_stats(const el_linkemu_stats *s, char *buf, size_t n) {
    const el_linkemu_dir_stats *ds[2] = {&s->up, &s->down};
    int o = snprintf(buf, n, "%.1fs", s->elapsed_s);
    for (int d = 0; d < 2 && o >= 0 && (size_t)o < n; d++)
        o += snprintf(buf + o, n - (size_t)o, " | %s %.2f MB avg %.3f Mbit/s %llu pkt %llu lost", dir_name[d],
                      (double)ds[d]->bytes_out / 1e6,
                      s->elapsed_s > 0 ? (double)ds[d]->bytes_out * 8 / s->elapsed_s / 1e6 : 0.0,
                      (unsigned long long)ds[d]->packets, (unsigned long long)ds[d]->lost);
    if (o >= 0 && (size_t)o < n)
        snprintf(buf + o, n - (size_t)o, " | %llu conns (%llu open, %llu failed)", (unsigned long long)s->conns_total,
                 (unsigned long long)s->conns_open, (unsigned long long)s->conns_failed);
}

static int add_pfd(el_linkemu *e, int *np, int fd, short events) {
    if (!events || *np >= e->npfd_cap) return -1;
    e->pfd[*np].fd = fd;
    e->pfd[*np].events = events;
    e->pfd[*np].revents = 0;
    return (*np)++;
}

static short revents_of(const el_linkemu *e, int pi) { return pi >= 0 ? e->pfd[pi].revents : 0; }

static void sweep(el_linkemu *e) {
    for (int i = 0; i < e->nconns;) {
        conn *c = e->conns[i];
        if (c->dead || (c->f[UP].shut && c->f[DOWN].shut)) {
            conn_free(e, c);
            e->conns[i] = e->conns[--e->nconns];
        } else {
            i++;
        }
    }
    for (int i = 0; i < MAX_CTL; i++) {
        ctl_client *cl = &e->ctl[i];
        if (cl->fd >= 0 && (cl->dead == 1 || (cl->dead == 2 && !cl->nout))) {
            close(cl->fd);
            cl->fd = -1;
            e->nctl--;
        }
    }
}

el_status el_linkemu_run(el_linkemu *e, int wake_fd, el_error *err) {
    uint64_t now = el_time_ns();
    e->t_start = now;
    stats_reset_interval(e, now);
    uint64_t every = (uint64_t)(e->cfg.stats_every_s * 1e9);
    uint64_t next_stats = every ? now + every : UINT64_MAX;
    for (;;) {
        now = el_time_ns();
        for (int i = 0; i < e->nconns; i++) {
            conn *c = e->conns[i];
            if (c->connecting) continue;
            for (int d = 0; d < 2 && !c->dead; d++)
                if (flow_deliver(e, c, d, now) < 0) c->dead = 1;
        }
        sweep(e);
        if (now >= next_stats) {
            char line[512];
            interval_line(e, now, line, sizeof line);
            log_line(e, "%s", line);
            stats_reset_interval(e, now);
            next_stats = now + every;
        }

        // What to wait for, and until when.
        uint64_t wake_at = next_stats;
        if (now + 1000000000ULL < wake_at) wake_at = now + 1000000000ULL;
        size_t allow[2] = {allowance(e, UP, now), allowance(e, DOWN, now)};
        for (int d = 0; d < 2; d++) {
            // Sources wait for the bottleneck buffer to drain below its limit.
            uint64_t backlog = el_linkemu_dir_backlog_ns(&e->dir[d], now);
            if (!allow[d] && e->dir[d].p.rate_bps > 0 && backlog >= e->cfg.buffer_ns) {
                uint64_t t = now + (backlog - e->cfg.buffer_ns) + 1000;
                if (t < wake_at) wake_at = t;
            }
        }
        int np = 0;
        int pi_wake = wake_fd >= 0 ? add_pfd(e, &np, wake_fd, POLLIN) : -1;
        int pi_listen = add_pfd(e, &np, e->lfd, e->nconns < e->cfg.max_conns ? POLLIN : 0);
        int pi_ctl = e->ctl_fd >= 0 ? add_pfd(e, &np, e->ctl_fd, POLLIN) : -1;
        for (int i = 0; i < MAX_CTL; i++) {
            ctl_client *cl = &e->ctl[i];
            cl->pi = -1;
            if (cl->fd >= 0) cl->pi = add_pfd(e, &np, cl->fd, (short)((cl->dead ? 0 : POLLIN) | (cl->nout ? POLLOUT : 0)));
        }
        for (int i = 0; i < e->nconns; i++) {
            conn *c = e->conns[i];
            short ec = 0, es = 0;
            if (c->connecting) {
                es = POLLOUT;
            } else {
                flow *up = &c->f[UP], *dn = &c->f[DOWN];
                if (!up->eof_read && !up->blocked && allow[UP]) ec |= POLLIN;
                if (!dn->eof_read && !dn->blocked && allow[DOWN]) es |= POLLIN;
                if (up->blocked) es |= POLLOUT;
                if (dn->blocked) ec |= POLLOUT;
                for (int d = 0; d < 2; d++) {
                    flow *f = &c->f[d];
                    if (f->head && !f->blocked && f->head->arrive_ns < wake_at) wake_at = f->head->arrive_ns;
                }
            }
            c->pi_c = add_pfd(e, &np, c->cfd, ec);
            c->pi_s = add_pfd(e, &np, c->sfd, es);
        }
        struct timespec ts = {0, 0};
        if (wake_at > now) {
            uint64_t dt = wake_at - now;
            ts.tv_sec = (time_t)(dt / 1000000000ULL);
            ts.tv_nsec = (long)(dt % 1000000000ULL);
        }
        int rc = ppoll(e->pfd, (nfds_t)np, &ts, NULL);
        if (rc < 0) {
            if (errno == EINTR) continue;
            return el_err(err, EL_ERR_IO, "linkemu: poll: %s", strerror(errno));
        }
        if (rc == 0) continue;
        if (revents_of(e, pi_wake)) return EL_OK;
        now = el_time_ns();
        if (revents_of(e, pi_listen) & POLLIN) accept_conns(e);
        if (revents_of(e, pi_ctl) & POLLIN) ctl_accept(e);
        for (int i = 0; i < MAX_CTL; i++) {
            ctl_client *cl = &e->ctl[i];
            if (cl->fd < 0 || cl->pi < 0) continue;
            short r = e->pfd[cl->pi].revents;
            if (r & (POLLIN | POLLHUP | POLLERR)) ctl_read(e, cl, now);
            if (cl->nout) ctl_flush(cl);
        }
        // Connections, starting at a rotating index so that when the bottleneck
        // buffer is nearly full every connection gets its turn to fill it.
        int nc = e->nconns;
        for (int k = 0; k < nc; k++) {
            conn *c = e->conns[(e->rr + k) % nc];
            short rc_ = revents_of(e, c->pi_c), rs = revents_of(e, c->pi_s);
            if (c->connecting) {
                if (!rs) continue;
                int so = 0;
                socklen_t sl = sizeof so;
                if (getsockopt(c->sfd, SOL_SOCKET, SO_ERROR, &so, &sl) || so) {
                    log_line(e, "connection %llu from %s: forward %s: %s; closed", (unsigned long long)c->id, c->peer,
                          e->fwd_str, strerror(so ? so : errno));
                    e->conns_failed++;
                    c->dead = 1;
                } else {
                    c->connecting = 0;
                }
                continue;
            }
            if (rs & (POLLOUT | POLLERR | POLLHUP)) c->f[UP].blocked = 0;
            if (rc_ & (POLLOUT | POLLERR | POLLHUP)) c->f[DOWN].blocked = 0;
            if ((rc_ & (POLLIN | POLLHUP | POLLERR)) && !c->f[UP].eof_read && flow_read(e, c, UP, now) < 0) c->dead = 1;
            if (!c->dead && (rs & (POLLIN | POLLHUP | POLLERR)) && !c->f[DOWN].eof_read && flow_read(e, c, DOWN, now) < 0)
                c->dead = 1;
        }
        if (nc) e->rr = (e->rr + 1) % nc;
        sweep(e);
    }
}

void el_linkemu_close(el_linkemu *e) {
    if (!e) return;
    for (int i = 0; e->conns && i < e->nconns; i++) conn_free(e, e->conns[i]);
    for (int i = 0; i < MAX_CTL; i++)
        if (e->ctl[i].fd >= 0) close(e->ctl[i].fd);
    if (e->lfd >= 0) close(e->lfd);
    if (e->ctl_fd >= 0) close(e->ctl_fd);
    free(e->conns);
    free(e->pfd);
    free(e->buf);
    free(e);
}
