// edgellm linkemu: a TCP proxy that emulates a device-to-edge link (rate, delay,
// jitter, loss) so split runs can be tried on "LTE" or "5G" from one machine.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "edgellm/linkemu.h"

static const char *usage =
    "usage: edgellm linkemu --listen HOST:PORT --forward HOST:PORT [options]\n"
    "\n"
    "Addresses are HOST:PORT or tcp://HOST:PORT; HOST may be a name, an IPv4 address,\n"
    "[IPv6] or * (listen on every interface).\n"
    "\n"
    "Accepts TCP connections on --listen, connects each to --forward and relays both\n"
    "directions through an emulated link. \"up\" is listen side -> forward side\n"
    "(device -> edge), \"down\" the other way. Each direction has one bottleneck shared\n"
    "by all connections. Rates are TCP payload bits per second.\n"
    "\n"
    "  --rate R          rate both ways: 100mbit, 1.5gbit, 800kbit (default: unlimited)\n"
    "  --rate-up R       rate device -> edge\n"
    "  --rate-down R     rate edge -> device\n"
    "  --delay D         one-way delay each way: 20ms, 150us, 1s (default 0)\n"
    "  --jitter D        delay varies within +-D, never reordering (default 0)\n"
    "  --jitter-dist X   uniform (default) or normal (sigma = D/2, clipped to +-D)\n"
    "  --loss P          share of packets lost and retransmitted: 0.5% or 0.005 (default 0)\n"
    "  --rto D|auto      extra delay of a lost packet (default auto: 2 x RTT + 2ms)\n"
    "  --profile NAME    lan, wifi6, lte, 5g-embb, 6g (options above override it)\n"
    "  --buffer D        bottleneck buffer in time at the current rate (default 100ms)\n"
    "  --queue-limit N   bytes held per direction before reads stop (default 64M)\n"
    "  --max-conns N     connections at once (default 256)\n"
    "  --seed N          seed of the loss and jitter draws (default 1)\n"
    "  --stats-every S   print a stats line to stderr every S seconds\n"
    "  --control ADDR    line-based control port: rate R, rate-up R, rate-down R, delay D,\n"
    "                    jitter D, loss P, rto D|auto, profile NAME, show, stats, quit\n"
    "\n"
    "Ports may be 0 (the kernel picks one; the chosen port is printed on stderr).\n"
    "SIGINT/SIGTERM print a final stats line and exit 0. See docs/linkemu.md.\n"
    "\n"
    "example: edgellm linkemu --listen 127.0.0.1:7001 --forward 10.0.0.2:7000 --profile 5g-embb\n";

// The signal handler's only job: make the proxy's poll wake up.
static int wake_pipe[2] = {-1, -1};

static void on_signal(int sig) {
    (void)sig;
    int saved = errno;
    char b = 1;
    if (write(wake_pipe[1], &b, 1) < 0) { /* the pipe is full: a wake-up is pending anyway */ }
    errno = saved;
}

static void fmt_addr(char *buf, size_t n, const char *host, int port) {
    snprintf(buf, n, strchr(host, ':') ? "tcp://[%s]:%d" : "tcp://%s:%d", host, port);
}

static void print_profiles(FILE *f) {
    fprintf(f, "profiles (up = device -> edge):\n");
    for (const el_linkemu_profile *p = el_linkemu_profiles(); p->name; p++) {
        char u[32], d[32];
        el_linkemu_format_rate(p->rate_up_bps, u, sizeof u);
        el_linkemu_format_rate(p->rate_down_bps, d, sizeof d);
        fprintf(f, "  %-8s up %-12s down %-12s delay %5.2f ms  jitter %5.2f ms  loss %g%%\n", p->name, u, d,
                (double)p->delay_ns / 1e6, (double)p->jitter_ns / 1e6, p->loss * 100);
    }
}

// Parses the option value just read with one of the library parsers.
#define PARSE(fn, out)                                                   \
    do {                                                                 \
        const char *v_ = cli_str(&c, a);                                 \
        el_error e_ = {0};                                               \
        if (!v_) return 2;                                               \
        if (fn(v_, out, &e_)) return cli_fail(&c, "%s: %s", a, e_.msg);  \
    } while (0)

int cmd_linkemu(int argc, char **argv) {
    cli c;
    cli_init(&c, "linkemu", argc, argv);
    el_linkemu_config cfg;
    el_linkemu_config_default(&cfg);
    const char *a;
    int opt, has_listen = 0, has_forward = 0;
    const el_linkemu_profile *prof = NULL;
    // Explicit options override the profile whatever their order, so collect them first.
    double rate_up = -1, rate_down = -1, loss = -1;
    uint64_t delay = UINT64_MAX, jitter = UINT64_MAX, rto = UINT64_MAX;
    int dist = -1, rto_auto = 0;
    while ((a = cli_next(&c, &opt))) {
        if (cli_is(a, "-h", "--help")) {
            fputs(usage, stdout);
            putchar('\n');
            print_profiles(stdout);
            return 0;
        } else if (cli_is(a, NULL, "--listen")) {
            PARSE(el_addr_parse, &cfg.listen);
            has_listen = 1;
        } else if (cli_is(a, NULL, "--forward")) {
            PARSE(el_addr_parse, &cfg.forward);
            has_forward = 1;
        } else if (cli_is(a, NULL, "--control")) {
            PARSE(el_addr_parse, &cfg.control);
            cfg.has_control = 1;
        } else if (cli_is(a, NULL, "--rate")) {
            PARSE(el_linkemu_parse_rate, &rate_up);
            rate_down = rate_up;
        } else if (cli_is(a, NULL, "--rate-up")) {
            PARSE(el_linkemu_parse_rate, &rate_up);
        } else if (cli_is(a, NULL, "--rate-down")) {
            PARSE(el_linkemu_parse_rate, &rate_down);
        } else if (cli_is(a, NULL, "--delay")) {
            PARSE(el_linkemu_parse_duration, &delay);
        } else if (cli_is(a, NULL, "--jitter")) {
            PARSE(el_linkemu_parse_duration, &jitter);
        } else if (cli_is(a, NULL, "--loss")) {
            PARSE(el_linkemu_parse_loss, &loss);
        } else if (cli_is(a, NULL, "--buffer")) {
            PARSE(el_linkemu_parse_duration, &cfg.buffer_ns);
            if (cfg.buffer_ns < 1000000ULL) return cli_fail(&c, "%s: '%s' is below 1ms", a, argv[c.i - 1]);
        } else if (cli_is(a, NULL, "--rto")) {
            const char *v = cli_str(&c, a);
            if (!v) return 2;
            if (!strcmp(v, "auto")) rto_auto = 1, rto = UINT64_MAX;
            else {
                el_error e = {0};
                if (el_linkemu_parse_duration(v, &rto, &e)) return cli_fail(&c, "%s: %s", a, e.msg);
                rto_auto = 0;
            }
        } else if (cli_is(a, NULL, "--jitter-dist")) {
            const char *v = cli_str(&c, a);
            if (!v) return 2;
            if (!strcmp(v, "uniform")) dist = EL_JITTER_UNIFORM;
            else if (!strcmp(v, "normal")) dist = EL_JITTER_NORMAL;
            else return cli_fail(&c, "%s: '%s' is not uniform or normal", a, v);
        } else if (cli_is(a, NULL, "--profile")) {
            const char *v = cli_str(&c, a);
            if (!v) return 2;
            if (!(prof = el_linkemu_profile_find(v)))
                return cli_fail(&c, "%s: unknown profile '%s' (lan, wifi6, lte, 5g-embb, 6g)", a, v);
        } else if (cli_is(a, NULL, "--stats-every")) {
            float s;
            if (!cli_float(&c, a, 0.01, 86400, &s)) return 2;
            cfg.stats_every_s = s;
        } else if (cli_is(a, NULL, "--queue-limit")) {
            uint64_t q;
            if (!cli_size(&c, a, &q)) return 2;
            if (q < 65536 || q > (4ULL << 30))
                return cli_fail(&c, "%s: '%s' is not in 64K..4G", a, argv[c.i - 1]);
            cfg.queue_limit = (size_t)q;
        } else if (cli_is(a, NULL, "--max-conns")) {
            if (!cli_int(&c, a, 1, 65536, &cfg.max_conns)) return 2;
        } else if (cli_is(a, NULL, "--seed")) {
            if (!cli_u64(&c, a, &cfg.seed)) return 2;
        } else if (opt) {
            return cli_unknown(&c, a);
        } else {
            return cli_fail(&c, "unexpected argument '%s'", a);
        }
    }
    if (c.failed) return 2;
    if (!has_listen) return cli_fail(&c, "--listen HOST:PORT is required");
    if (!has_forward) return cli_fail(&c, "--forward HOST:PORT is required");
    if (cfg.has_control && cfg.control.port == cfg.listen.port && cfg.control.port != 0 &&
        !strcmp(cfg.control.host, cfg.listen.host))
        return cli_fail(&c, "--control: tcp://%s:%d is also the --listen address", cfg.control.host, cfg.control.port);

    el_linkemu_params *dirs[2] = {&cfg.up, &cfg.down};
    for (int d = 0; d < 2; d++) {
        el_linkemu_params *p = dirs[d];
        if (prof) {
            p->rate_bps = d == 0 ? prof->rate_up_bps : prof->rate_down_bps;
            p->delay_ns = prof->delay_ns;
            p->jitter_ns = prof->jitter_ns;
            p->loss = prof->loss;
        }
        double r = d == 0 ? rate_up : rate_down;
        if (r > 0) p->rate_bps = r;
        if (delay != UINT64_MAX) p->delay_ns = delay;
        if (jitter != UINT64_MAX) p->jitter_ns = jitter;
        if (loss >= 0) p->loss = loss;
        if (dist >= 0) p->dist = (el_jitter_dist)dist;
        if (rto != UINT64_MAX) p->rto_ns = rto;
    }
    cfg.rto_auto = rto == UINT64_MAX || rto_auto;
    cfg.log = stderr;

    el_error err = {0};
    el_linkemu *e = NULL;
    el_status s = el_linkemu_open(&cfg, &e, &err);
    if (s) {
        fprintf(stderr, "edgellm linkemu: %s\n", err.msg);
        return s == EL_ERR_ARG ? 2 : 1;
    }
    if (pipe2(wake_pipe, O_CLOEXEC | O_NONBLOCK)) {
        fprintf(stderr, "edgellm linkemu: pipe: %s\n", strerror(errno));
        el_linkemu_close(e);
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    char line[600];
    char la[300], fa[300], ca[300];
    fmt_addr(la, sizeof la, cfg.listen.host, el_linkemu_listen_port(e));
    fmt_addr(fa, sizeof fa, cfg.forward.host, cfg.forward.port);
    fmt_addr(ca, sizeof ca, cfg.control.host, el_linkemu_control_port(e));
    fprintf(stderr, "linkemu: listening on %s, forwarding to %s\n", la, fa);
    if (cfg.has_control) fprintf(stderr, "linkemu: control on %s\n", ca);
    el_linkemu_describe(e, line, sizeof line);
    fprintf(stderr, "linkemu: %s%s%s%s\n", prof ? "profile " : "", prof ? prof->name : "", prof ? ": " : "", line);
    fflush(stderr);

    s = el_linkemu_run(e, wake_pipe[0], &err);
    el_linkemu_stats st;
    el_linkemu_get_stats(e, &st);
    el_linkemu_format_stats(&st, line, sizeof line);
    fprintf(stderr, "linkemu: final: %s\n", line);
    el_linkemu_close(e);
    close(wake_pipe[0]);
    close(wake_pipe[1]);
    if (s) return cli_error(&err);
    return 0;
}
