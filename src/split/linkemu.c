// The link model behind `edgellm linkemu`: when each packet leaves the bottleneck
// and when it reaches the other side, plus the parsers for rates, durations, loss,
// addresses and the named link profiles. Pure: time comes in as an argument.
#include "edgellm/linkemu.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

// ---------------------------------------------------------------- random numbers

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// xorshift64*: small, fast, good enough for loss and jitter draws.
static uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

// Uniform in [0, 1).
static double rng_unit(uint64_t *s) { return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0); }

// A jitter sample in [-j, +j] nanoseconds.
static double jitter_sample(el_linkemu_dir *d) {
    double j = (double)d->p.jitter_ns;
    if (d->p.dist == EL_JITTER_NORMAL) {
        double u1 = 1.0 - rng_unit(&d->rng);  // (0, 1]: log stays finite
        double u2 = rng_unit(&d->rng);
        double z = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
        double x = z * j / 2;
        return x < -j ? -j : x > j ? j : x;
    }
    return (2.0 * rng_unit(&d->rng) - 1.0) * j;
}

// ---------------------------------------------------------------- scheduler

void el_linkemu_dir_init(el_linkemu_dir *d, const el_linkemu_params *p, uint64_t seed) {
    memset(d, 0, sizeof *d);
    d->p = *p;
    uint64_t s = seed;
    d->rng = splitmix64(&s);
    if (!d->rng) d->rng = 1;  // xorshift must not start at zero
}

void el_linkemu_dir_set(el_linkemu_dir *d, const el_linkemu_params *p) { d->p = *p; }

el_linkemu_pkt el_linkemu_dir_send(el_linkemu_dir *d, el_linkemu_stream *s, uint64_t now_ns, size_t bytes) {
    el_linkemu_pkt k = {0};
    // Serialization: the packet waits for the bottleneck to be free, then takes
    // size*8/rate to cross it. Fractions of a nanosecond are carried so a long
    // stream keeps the exact rate.
    uint64_t start = now_ns > d->busy_until_ns ? now_ns : d->busy_until_ns;
    uint64_t ser = 0;
    if (bytes && d->p.rate_bps > 0) {
        double t = (double)bytes * 8e9 / d->p.rate_bps + d->carry_ns;
        ser = (uint64_t)t;
        d->carry_ns = t - (double)ser;
    }
    k.depart_ns = start + ser;
    d->busy_until_ns = k.depart_ns;

    // Propagation with jitter; a packet never arrives before it departed, and the
    // link is FIFO: never before the packet ahead of it.
    double flight = (double)d->p.delay_ns;
    if (d->p.jitter_ns) flight += jitter_sample(d);
    if (flight < 0) flight = 0;
    uint64_t at = k.depart_ns + (uint64_t)llround(flight);
    if (at < d->last_link_ns) at = d->last_link_ns;
    d->last_link_ns = at;
    k.arrive_ns = at;

    // A TCP stream cannot lose bytes: a lost segment shows up one recovery time
    // later, and the rest of its stream waits (head-of-line blocking, below).
    if (bytes && d->p.loss > 0 && rng_unit(&d->rng) < d->p.loss) {
        k.lost = 1;
        k.arrive_ns += d->p.rto_ns;
        d->n_lost++;
    }
    // In-order delivery: the receiver's TCP hands bytes over only in sequence.
    if (k.arrive_ns < s->last_arrive_ns) k.arrive_ns = s->last_arrive_ns;
    s->last_arrive_ns = k.arrive_ns;
    if (bytes) {
        d->n_packets++;
        d->n_bytes += bytes;
    }
    return k;
}

uint64_t el_linkemu_dir_backlog_ns(const el_linkemu_dir *d, uint64_t now_ns) {
    return d->busy_until_ns > now_ns ? d->busy_until_ns - now_ns : 0;
}

uint64_t el_linkemu_auto_rto(uint64_t delay_up_ns, uint64_t delay_down_ns) {
    return 2 * (delay_up_ns + delay_down_ns) + 2000000ULL;
}

// ---------------------------------------------------------------- parsing

// A plain decimal number at the start of s (no sign, no hex, no inf/nan): strtod
// alone would accept all of those.
static int parse_number(const char *s, double *x, const char **rest) {
    if (!(isdigit((unsigned char)s[0]) || (s[0] == '.' && isdigit((unsigned char)s[1])))) return 0;
    for (const char *p = s; *p && (isdigit((unsigned char)*p) || *p == '.'); p++)
        if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) return 0;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !isfinite(v)) return 0;
    *x = v;
    *rest = end;
    return 1;
}

el_status el_linkemu_parse_rate(const char *s, double *bps, el_error *err) {
    static const struct { const char *unit; double mul; } units[] = {
        {"bit", 1}, {"kbit", 1e3}, {"mbit", 1e6}, {"gbit", 1e9}, {"tbit", 1e12},
        {"bit/s", 1}, {"kbit/s", 1e3}, {"mbit/s", 1e6}, {"gbit/s", 1e9}, {"tbit/s", 1e12},
        {"bps", 1}, {"kbps", 1e3}, {"mbps", 1e6}, {"gbps", 1e9}, {"tbps", 1e12},
    };
    double v;
    const char *u;
    if (!s || !parse_number(s, &v, &u))
        return el_err(err, EL_ERR_ARG, "'%s' is not a rate (e.g. 100mbit, 1.5gbit, 800kbit)", s ? s : "");
    double mul = 0;
    if (!*u && v != 0) return el_err(err, EL_ERR_ARG, "'%s' has no unit (e.g. %smbit)", s, s);
    if (!*u) mul = 1;  // "0" is refused below for its value, not its missing unit
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (!strcasecmp(u, units[i].unit)) mul = units[i].mul;
    if (!mul) return el_err(err, EL_ERR_ARG, "'%s': unknown rate unit '%s' (bit, kbit, mbit, gbit, tbit)", s, u);
    v *= mul;
    if (!(v >= EL_LINKEMU_RATE_MIN && v <= EL_LINKEMU_RATE_MAX))
        return el_err(err, EL_ERR_RANGE, "rate '%s' is out of range 1kbit..1tbit", s);
    *bps = v;
    return EL_OK;
}

el_status el_linkemu_parse_duration(const char *s, uint64_t *ns, el_error *err) {
    static const struct { const char *unit; double mul; } units[] = {
        {"ns", 1}, {"us", 1e3}, {"ms", 1e6}, {"s", 1e9},
    };
    double v;
    const char *u;
    if (!s || !parse_number(s, &v, &u))
        return el_err(err, EL_ERR_ARG, "'%s' is not a duration (e.g. 20ms, 150us, 1.5s)", s ? s : "");
    if (!*u) {
        if (v == 0) { *ns = 0; return EL_OK; }
        return el_err(err, EL_ERR_ARG, "'%s' has no unit (e.g. %sms)", s, s);
    }
    double mul = 0;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (!strcmp(u, units[i].unit)) mul = units[i].mul;
    if (!mul) return el_err(err, EL_ERR_ARG, "'%s': unknown time unit '%s' (ns, us, ms, s)", s, u);
    v *= mul;
    if (!(v <= (double)EL_LINKEMU_TIME_MAX))
        return el_err(err, EL_ERR_RANGE, "duration '%s' is longer than 60s", s);
    *ns = (uint64_t)llround(v);
    return EL_OK;
}

el_status el_linkemu_parse_loss(const char *s, double *p, el_error *err) {
    double v;
    const char *u;
    if (!s || !parse_number(s, &v, &u))
        return el_err(err, EL_ERR_ARG, "'%s' is not a loss rate (e.g. 0.5%% or 0.005)", s ? s : "");
    if (!strcmp(u, "%")) v /= 100;
    else if (*u) return el_err(err, EL_ERR_ARG, "'%s' is not a loss rate (e.g. 0.5%% or 0.005)", s);
    if (!(v >= 0 && v <= EL_LINKEMU_LOSS_MAX))
        return el_err(err, EL_ERR_RANGE, "loss '%s' is out of range 0..50%%", s);
    *p = v;
    return EL_OK;
}

void el_linkemu_format_rate(double bps, char *buf, size_t n) {
    if (bps <= 0) snprintf(buf, n, "unlimited");
    else if (bps >= 1e9) snprintf(buf, n, "%.4g Gbit/s", bps / 1e9);
    else if (bps >= 1e6) snprintf(buf, n, "%.4g Mbit/s", bps / 1e6);
    else if (bps >= 1e3) snprintf(buf, n, "%.4g kbit/s", bps / 1e3);
    else snprintf(buf, n, "%.4g bit/s", bps);
}

// ---------------------------------------------------------------- profiles

// Where each number comes from is in docs/linkemu.md; keep the two in step.
static const el_linkemu_profile profiles[] = {
    {"lan", 1e9, 1e9, 100000, 20000, 0.0,
     "switched Gigabit Ethernet (1000BASE-T), one switch hop"},
    {"wifi6", 400e6, 600e6, 2000000, 2000000, 0.001,
     "Wi-Fi 6 (802.11ax) 2x2 client near the access point, 80 MHz at 5 GHz"},
    {"lte", 8e6, 25e6, 20000000, 5000000, 0.0001,
     "LTE as measured in commercial networks (averages, not peaks)"},
    {"5g-embb", 50e6, 100e6, 5000000, 1000000, 0.0001,
     "5G eMBB at the IMT-2020 user-experienced rate, 4 ms user plane + edge hop"},
    {"6g", 300e6, 500e6, 1000000, 100000, 0.00001,
     "6G at IMT-2030 user-experienced rate and latency targets"},
    {NULL, 0, 0, 0, 0, 0, NULL},
};

const el_linkemu_profile *el_linkemu_profiles(void) { return profiles; }

const el_linkemu_profile *el_linkemu_profile_find(const char *name) {
    for (const el_linkemu_profile *p = profiles; name && p->name; p++)
        if (!strcmp(p->name, name)) return p;
    return NULL;
}
