// Option parsing for the subcommands. Every bad value is reported with the
// option's name and the value, and the command exits with status 2.
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void cli_init(cli *c, const char *cmd, int argc, char **argv) {
    c->cmd = cmd;
    c->argc = argc;
    c->argv = argv;
    c->i = 1;
    c->failed = 0;
}

const char *cli_next(cli *c, int *is_opt) {
    if (c->failed || c->i >= c->argc) return NULL;
    const char *a = c->argv[c->i++];
    *is_opt = a[0] == '-' && a[1] != 0;
    return a;
}

int cli_is(const char *arg, const char *short_name, const char *long_name) {
    return (short_name && !strcmp(arg, short_name)) || (long_name && !strcmp(arg, long_name));
}

int cli_is_ctx(const char *arg) { return cli_is(arg, "-c", "--ctx") || cli_is(arg, NULL, "--ctx-size"); }

int cli_fail(cli *c, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "edgellm %s: ", c->cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see edgellm %s --help)\n", c->cmd);
    c->failed = 1;
    return 2;
}

int cli_unknown(cli *c, const char *arg) { return cli_fail(c, "unknown option '%s'", arg); }

const char *cli_str(cli *c, const char *opt) {
    if (c->i >= c->argc) {
        cli_fail(c, "%s needs a value", opt);
        return NULL;
    }
    return c->argv[c->i++];
}

int cli_int(cli *c, const char *opt, long lo, long hi, int *out) {
    const char *v = cli_str(c, opt);
    if (!v) return 0;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        cli_fail(c, "%s: '%s' is not an integer in %ld..%ld", opt, v, lo, hi);
        return 0;
    }
    *out = (int)x;
    return 1;
}

int cli_u64(cli *c, const char *opt, uint64_t *out) {
    const char *v = cli_str(c, opt);
    if (!v) return 0;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || end == v || *end || v[0] == '-') {
        cli_fail(c, "%s: '%s' is not a non-negative integer", opt, v);
        return 0;
    }
    *out = x;
    return 1;
}

int cli_float(cli *c, const char *opt, double lo, double hi, float *out) {
    const char *v = cli_str(c, opt);
    if (!v) return 0;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x) || x < lo || x > hi) {
        cli_fail(c, "%s: '%s' is not a number in %g..%g", opt, v, lo, hi);
        return 0;
    }
    *out = (float)x;
    return 1;
}

int cli_size(cli *c, const char *opt, uint64_t *out) {
    const char *v = cli_str(c, opt);
    if (!v) return 0;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    double mul = 1;
    if (*end == 'K' || *end == 'k') mul = 1024, end++;
    else if (*end == 'M' || *end == 'm') mul = 1024.0 * 1024, end++;
    else if (*end == 'G' || *end == 'g') mul = 1024.0 * 1024 * 1024, end++;
    if (*end == 'B' || *end == 'i') end++;
    if (errno || end == v || *end || !(x >= 0) || x * mul > 1.8e19) {
        cli_fail(c, "%s: '%s' is not a size (e.g. 512M, 2G)", opt, v);
        return 0;
    }
    *out = (uint64_t)(x * mul);
    return 1;
}

int cli_error(const el_error *e) {
    fprintf(stderr, "edgellm: %s\n", e->msg);
    return 1;
}

