// Unit tests for src/split/linkemu.c: the link scheduler with an injected clock,
// and the rate / duration / loss / address parsers and the profile table.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/linkemu.h"
#include "testutil.h"

#define MS 1000000ULL
#define US 1000ULL

static el_linkemu_params params(double rate, uint64_t delay, uint64_t jitter, double loss, uint64_t rto) {
    el_linkemu_params p = {0};
    p.rate_bps = rate;
    p.delay_ns = delay;
    p.jitter_ns = jitter;
    p.loss = loss;
    p.rto_ns = rto;
    return p;
}

// 10 full packets handed over at t=0 on 8 Mbit/s with 10 ms delay: each takes
// 1448*8/8e6 = 1.448 ms to serialize, so packet k arrives at 10 + (k+1)*1.448 ms.
static void test_exact_arrivals(void **st) {
    (void)st;
    el_linkemu_dir d;
    el_linkemu_stream s = {0};
    el_linkemu_params p = params(8e6, 10 * MS, 0, 0, 0);
    el_linkemu_dir_init(&d, &p, 1);
    for (int k = 0; k < 10; k++) {
        el_linkemu_pkt x = el_linkemu_dir_send(&d, &s, 0, 1448);
        assert_int_equal(x.depart_ns, (uint64_t)(k + 1) * 1448000ULL);
        assert_int_equal(x.arrive_ns, 10 * MS + (uint64_t)(k + 1) * 1448000ULL);
        assert_int_equal(x.lost, 0);
    }
    assert_int_equal(el_linkemu_dir_backlog_ns(&d, 0), 14480000ULL);
    assert_int_equal(el_linkemu_dir_backlog_ns(&d, 5 * MS), 9480000ULL);
    assert_int_equal(el_linkemu_dir_backlog_ns(&d, 20 * MS), 0);
    // An idle link: a packet handed over later starts at once.
    el_linkemu_pkt x = el_linkemu_dir_send(&d, &s, 100 * MS, 100);
    assert_int_equal(x.depart_ns, 100 * MS + 100000ULL);  // 800 bits at 8 Mbit/s = 100 us
    assert_int_equal(x.arrive_ns, 110 * MS + 100000ULL);
    assert_int_equal(d.n_packets, 11);
    assert_int_equal(d.n_bytes, 14580);
}

// A rate that does not divide evenly: 1448 B at 3 Mbit/s = 3861333.33 ns each.
// After 3000 packets the carried fractions must add up exactly (no drift).
static void test_no_drift(void **st) {
    (void)st;
    el_linkemu_dir d;
    el_linkemu_stream s = {0};
    el_linkemu_params p = params(3e6, 0, 0, 0, 0);
    el_linkemu_dir_init(&d, &p, 1);
    el_linkemu_pkt x = {0};
    for (int k = 0; k < 3000; k++) x = el_linkemu_dir_send(&d, &s, 0, 1448);
    assert_int_equal(x.depart_ns, 11584000000ULL);  // 3000*1448*8/3e6 s exactly
}

static void test_unlimited_rate(void **st) {
    (void)st;
    el_linkemu_dir d;
    el_linkemu_stream s = {0};
    el_linkemu_params p = params(0, 20 * MS, 0, 0, 0);
    el_linkemu_dir_init(&d, &p, 1);
    el_linkemu_pkt a = el_linkemu_dir_send(&d, &s, 5 * MS, 1448);
    el_linkemu_pkt b = el_linkemu_dir_send(&d, &s, 5 * MS, 1448);
    assert_int_equal(a.depart_ns, 5 * MS);
    assert_int_equal(a.arrive_ns, 25 * MS);
    assert_int_equal(b.arrive_ns, 25 * MS);
    assert_int_equal(el_linkemu_dir_backlog_ns(&d, 5 * MS), 0);
}

// Jitter of +-2 ms around 10 ms: every arrival within [depart+8, depart+12] ms
// unless held back by the one before it; never before the one before it; and the
// spread actually used covers most of the +-2 ms window.
static void check_jitter(el_jitter_dist dist) {
    el_linkemu_dir d;
    el_linkemu_stream s = {0};
    el_linkemu_params p = params(10e6, 10 * MS, 2 * MS, 0, 0);
    p.dist = dist;
    el_linkemu_dir_init(&d, &p, 42);
    uint64_t prev = 0, now = 0;
    double lo = 1e18, hi = -1e18, sum = 0;
    int n = 20000, unheld = 0;
    for (int i = 0; i < n; i++) {
        now += 5 * MS;  // sparse: packets rarely catch up with each other
        el_linkemu_pkt x = el_linkemu_dir_send(&d, &s, now, 1000);
        assert_true(x.arrive_ns >= prev);
        assert_true(x.arrive_ns >= x.depart_ns + 8 * MS);
        double owd = (double)(x.arrive_ns - x.depart_ns);
        if (x.arrive_ns != prev) {
            assert_true(x.arrive_ns <= x.depart_ns + 12 * MS);
            unheld++;
        }
        lo = owd < lo ? owd : lo;
        hi = owd > hi ? owd : hi;
        sum += owd;
        prev = x.arrive_ns;
    }
    assert_int_equal(unheld, n);  // 5 ms spacing > 4 ms jitter window: none is held
    assert_true(lo < 8.2 * MS && lo >= 8 * MS);
    assert_true(hi > 11.8 * MS && hi <= 12 * MS);
    assert_true(fabs(sum / n - 10.0 * MS) < 0.05 * MS);  // zero-mean jitter
}

static void test_jitter_uniform(void **st) { (void)st; check_jitter(EL_JITTER_UNIFORM); }
static void test_jitter_normal(void **st) { (void)st; check_jitter(EL_JITTER_NORMAL); }

// Back-to-back packets with jitter larger than their spacing must still not reorder.
static void test_jitter_never_reorders(void **st) {
    (void)st;
    el_linkemu_dir d;
    el_linkemu_stream s = {0};
    el_linkemu_params p = params(100e6, 5 * MS, 3 * MS, 0, 0);
    el_linkemu_dir_init(&d, &p, 7);
    uint64_t prev = 0;
    int held = 0;
    for (int i = 0; i < 10000; i++) {
        el_linkemu_pkt x = el_linkemu_dir_send(&d, &s, 0, 1448);
        assert_true(x.arrive_ns >= prev);
        assert_true(x.arrive_ns >= x.depart_ns + 2 * MS);
        held += x.arrive_ns == prev;
        prev = x.arrive_ns;
    }
    assert_true(held > 1000);  // 116 us spacing vs 6 ms window: many are held back
}

// 100k packets at 1% loss, fixed seed: the count must be within 5 sigma of 1000
// (sigma = sqrt(100000*0.01*0.99) = 31.5), and it must not depend on anything but the seed.
static void test_loss_rate(void **st) {
    (void)st;
    el_linkemu_dir d, e;
    el_linkemu_stream s = {0}, se = {0};
    el_linkemu_params p = params(1e9, 1 * MS, 0, 0.01, 50 * MS);
    el_linkemu_dir_init(&d, &p, 2024);
    el_linkemu_dir_init(&e, &p, 2024);
    int lost = 0;
    for (int i = 0; i < 100000; i++) {
        el_linkemu_pkt x = el_linkemu_dir_send(&d, &s, (uint64_t)i * MS, 1448);
        el_linkemu_pkt y = el_linkemu_dir_send(&e, &se, (uint64_t)i * MS, 1448);
        assert_int_equal(x.lost, y.lost);
        assert_int_equal(x.arrive_ns, y.arrive_ns);
        lost += x.lost;
        if (x.lost) assert_int_equal(x.arrive_ns, x.depart_ns + 1 * MS + 50 * MS);
    }
    assert_int_equal((int)d.n_lost, lost);
    assert_true(lost > 1000 - 158 && lost < 1000 + 158);
    // A FIN marker (0 bytes) is never lost and takes no time on the wire.
    el_linkemu_params q = params(1e6, 0, 0, 0.5, 10 * MS);
    el_linkemu_dir_init(&d, &q, 3);
    s = (el_linkemu_stream){0};
    for (int i = 0; i < 100; i++) assert_int_equal(el_linkemu_dir_send(&d, &s, 0, 0).lost, 0);
    assert_int_equal(d.busy_until_ns, 0);
}

// Head-of-line blocking: with loss forced (0.5) find the first lost packet and
// check that the next packets, which were not lost, wait for it.
static void test_loss_blocks_followers(void **st) {
    (void)st;
    el_linkemu_dir d;
    el_linkemu_stream s = {0};
    el_linkemu_params p = params(8e6, 10 * MS, 0, 0.5, 200 * MS);
    el_linkemu_dir_init(&d, &p, 9);
    el_linkemu_pkt x;
    int k = 0;
    do {
        x = el_linkemu_dir_send(&d, &s, 0, 1448);
        k++;
    } while (!x.lost);
    uint64_t stuck = x.arrive_ns;
    assert_int_equal(stuck, 10 * MS + (uint64_t)k * 1448000ULL + 200 * MS);
    el_linkemu_pkt y = el_linkemu_dir_send(&d, &s, 0, 1448);
    assert_int_equal(y.depart_ns, (uint64_t)(k + 1) * 1448000ULL);  // the wire keeps going
    assert_true(y.arrive_ns >= stuck);
}

// Two connections share the link: a loss on one holds back the rest of that
// connection only. The other keeps the link's FIFO order but not the penalty.
static void test_loss_blocks_own_stream_only(void **st) {
    (void)st;
    el_linkemu_dir d;
    el_linkemu_stream a = {0}, b = {0};
    el_linkemu_params p = params(8e6, 10 * MS, 0, 0.5, 200 * MS);
    el_linkemu_dir_init(&d, &p, 9);
    el_linkemu_pkt x;
    do x = el_linkemu_dir_send(&d, &a, 0, 1448);
    while (!x.lost);
    uint64_t stuck = x.arrive_ns;
    // Stream b's packets right behind it: not lost ones arrive on time.
    int checked = 0;
    for (int i = 0; i < 20 && checked < 3; i++) {
        el_linkemu_pkt y = el_linkemu_dir_send(&d, &b, 0, 1448);
        if (y.lost) break;  // from here on b has its own penalty
        assert_int_equal(y.arrive_ns, y.depart_ns + 10 * MS);
        assert_true(y.arrive_ns < stuck);
        checked++;
    }
    assert_true(checked > 0);
    // Stream a's next packet waits for the lost one.
    el_linkemu_pkt z = el_linkemu_dir_send(&d, &a, 0, 1448);
    assert_true(z.arrive_ns >= stuck);
}

// Rate change mid-stream: 5 packets at 8 Mbit/s then 5 at 16 Mbit/s, all handed
// over at t=0. The new rate applies from the 6th packet on.
static void test_rate_change(void **st) {
    (void)st;
    el_linkemu_dir d;
    el_linkemu_stream s = {0};
    el_linkemu_params p = params(8e6, 10 * MS, 0, 0, 0);
    el_linkemu_dir_init(&d, &p, 1);
    el_linkemu_pkt x = {0};
    for (int k = 0; k < 5; k++) x = el_linkemu_dir_send(&d, &s, 0, 1448);
    assert_int_equal(x.depart_ns, 7240000ULL);
    p.rate_bps = 16e6;
    p.delay_ns = 20 * MS;
    el_linkemu_dir_set(&d, &p);
    for (int k = 0; k < 5; k++) {
        x = el_linkemu_dir_send(&d, &s, 0, 1448);
        assert_int_equal(x.depart_ns, 7240000ULL + (uint64_t)(k + 1) * 724000ULL);
        assert_int_equal(x.arrive_ns, x.depart_ns + 20 * MS);
    }
}

static void test_auto_rto(void **st) {
    (void)st;
    // 20 ms each way: RTT 40 ms, probe after 2 RTT + 2 ms = 82 ms
    assert_int_equal(el_linkemu_auto_rto(20 * MS, 20 * MS), 82 * MS);
    assert_int_equal(el_linkemu_auto_rto(0, 0), 2 * MS);
}

static void test_parse_rate(void **st) {
    (void)st;
    double r;
    el_error e = {0};
    assert_int_equal(el_linkemu_parse_rate("100mbit", &r, &e), EL_OK);
    assert_true(r == 100e6);
    assert_int_equal(el_linkemu_parse_rate("1.5gbit", &r, &e), EL_OK);
    assert_true(r == 1.5e9);
    assert_int_equal(el_linkemu_parse_rate("800kbit", &r, &e), EL_OK);
    assert_true(r == 800e3);
    assert_int_equal(el_linkemu_parse_rate("20Mbps", &r, &e), EL_OK);
    assert_true(r == 20e6);
    assert_int_equal(el_linkemu_parse_rate("64000bit", &r, &e), EL_OK);
    assert_true(r == 64000);
    assert_int_equal(el_linkemu_parse_rate("10Mbit/s", &r, &e), EL_OK);
    assert_true(r == 10e6);

    assert_int_equal(el_linkemu_parse_rate("fast", &r, &e), EL_ERR_ARG);
    assert_string_equal(e.msg, "'fast' is not a rate (e.g. 100mbit, 1.5gbit, 800kbit)");
    assert_int_equal(el_linkemu_parse_rate("-5mbit", &r, &e), EL_ERR_ARG);
    assert_int_equal(el_linkemu_parse_rate("0mbit", &r, &e), EL_ERR_RANGE);
    assert_string_equal(e.msg, "rate '0mbit' is out of range 1kbit..1tbit");
    assert_int_equal(el_linkemu_parse_rate("100", &r, &e), EL_ERR_ARG);
    assert_string_equal(e.msg, "'100' has no unit (e.g. 100mbit)");
    assert_int_equal(el_linkemu_parse_rate("5furlongs", &r, &e), EL_ERR_ARG);
    assert_int_equal(el_linkemu_parse_rate("inf", &r, &e), EL_ERR_ARG);
    assert_int_equal(el_linkemu_parse_rate("nanmbit", &r, &e), EL_ERR_ARG);
    assert_int_equal(el_linkemu_parse_rate("0x10mbit", &r, &e), EL_ERR_ARG);
    assert_int_equal(el_linkemu_parse_rate("5000tbit", &r, &e), EL_ERR_RANGE);
    assert_int_equal(el_linkemu_parse_rate("1e999mbit", &r, &e), EL_ERR_ARG);
    assert_int_equal(el_linkemu_parse_rate("", &r, &e), EL_ERR_ARG);
    assert_int_equal(el_linkemu_parse_rate(" 5mbit", &r, &e), EL_ERR_ARG);
    assert_int_equal(el_linkemu_parse_rate("5 mbit", &r, &e), EL_ERR_ARG);
}

static void test_parse_duration(void **st) {
    (void)st;
    uint64_t t;
    el_error e = {0};
    assert_int_equal(el_linkemu_parse_duration("20ms", &t, &e), EL_OK);
    assert_int_equal(t, 20 * MS);
    assert_int_equal(el_linkemu_parse_duration("150us", &t, &e), EL_OK);
    assert_int_equal(t, 150 * US);
    assert_int_equal(el_linkemu_parse_duration("1.5s", &t, &e), EL_OK);
    assert_int_equal(t, 1500 * MS);
    assert_int_equal(el_linkemu_parse_duration("800ns", &t, &e), EL_OK);
    assert_int_equal(t, 800);
    assert_int_equal(el_linkemu_parse_duration("0.25ms", &t, &e), EL_OK);
    assert_int_equal(t, 250 * US);
    assert_int_equal(el_linkemu_parse_duration("0", &t, &e), EL_OK);
    assert_int_equal(t, 0);

    assert_int_equal(el_linkemu_parse_duration("10", &t, &e), EL_ERR_ARG);
    assert_string_equal(e.msg, "'10' has no unit (e.g. 10ms)");
    assert_int_equal(el_linkemu_parse_duration("10parsecs", &t, &e), EL_ERR_ARG);
    assert_string_equal(e.msg, "'10parsecs': unknown time unit 'parsecs' (ns, us, ms, s)");
    assert_int_equal(el_linkemu_parse_duration("-5ms", &t, &e), EL_ERR_ARG);
    assert_int_equal(el_linkemu_parse_duration("soon", &t, &e), EL_ERR_ARG);
    assert_int_equal(el_linkemu_parse_duration("61s", &t, &e), EL_ERR_RANGE);
    assert_int_equal(el_linkemu_parse_duration("5MS", &t, &e), EL_ERR_ARG);
}

static void test_parse_loss(void **st) {
    (void)st;
    double p;
    el_error e = {0};
    assert_int_equal(el_linkemu_parse_loss("0.5%", &p, &e), EL_OK);
    assert_true(fabs(p - 0.005) < 1e-15);
    assert_int_equal(el_linkemu_parse_loss("0.01", &p, &e), EL_OK);
    assert_true(p == 0.01);
    assert_int_equal(el_linkemu_parse_loss("0", &p, &e), EL_OK);
    assert_true(p == 0);
    assert_int_equal(el_linkemu_parse_loss("150%", &p, &e), EL_ERR_RANGE);
    assert_string_equal(e.msg, "loss '150%' is out of range 0..50%");
    assert_int_equal(el_linkemu_parse_loss("0.6", &p, &e), EL_ERR_RANGE);
    assert_int_equal(el_linkemu_parse_loss("-1%", &p, &e), EL_ERR_ARG);
    assert_int_equal(el_linkemu_parse_loss("some", &p, &e), EL_ERR_ARG);
    assert_int_equal(el_linkemu_parse_loss("1%%", &p, &e), EL_ERR_ARG);
}

static void test_profiles(void **st) {
    (void)st;
    const el_linkemu_profile *p = el_linkemu_profile_find("5g-embb");
    assert_non_null(p);
    assert_true(p->rate_down_bps == 100e6 && p->rate_up_bps == 50e6);
    assert_int_equal(p->delay_ns, 5 * MS);
    assert_null(el_linkemu_profile_find("7g"));
    assert_null(el_linkemu_profile_find(NULL));
    int n = 0;
    for (const el_linkemu_profile *q = el_linkemu_profiles(); q->name; q++, n++) {
        assert_true(q->rate_up_bps >= EL_LINKEMU_RATE_MIN && q->rate_down_bps <= EL_LINKEMU_RATE_MAX);
        assert_true(q->loss >= 0 && q->loss <= EL_LINKEMU_LOSS_MAX);
        assert_true(q->jitter_ns <= q->delay_ns);
    }
    assert_int_equal(n, 5);
}

static void test_format_rate(void **st) {
    (void)st;
    char b[32];
    el_linkemu_format_rate(20e6, b, sizeof b);
    assert_string_equal(b, "20 Mbit/s");
    el_linkemu_format_rate(1.5e9, b, sizeof b);
    assert_string_equal(b, "1.5 Gbit/s");
    el_linkemu_format_rate(800e3, b, sizeof b);
    assert_string_equal(b, "800 kbit/s");
    el_linkemu_format_rate(0, b, sizeof b);
    assert_string_equal(b, "unlimited");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_arrivals),
        cmocka_unit_test(test_no_drift),
        cmocka_unit_test(test_unlimited_rate),
        cmocka_unit_test(test_jitter_uniform),
        cmocka_unit_test(test_jitter_normal),
        cmocka_unit_test(test_jitter_never_reorders),
        cmocka_unit_test(test_loss_rate),
        cmocka_unit_test(test_loss_blocks_followers),
        cmocka_unit_test(test_loss_blocks_own_stream_only),
        cmocka_unit_test(test_rate_change),
        cmocka_unit_test(test_auto_rto),
        cmocka_unit_test(test_parse_rate),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_parse_loss),
        cmocka_unit_test(test_profiles),
        cmocka_unit_test(test_format_rate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
