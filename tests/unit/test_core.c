// Unit tests for src/core: errors, checked arithmetic, UTF-8, f16/bf16, thread pool.
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/core.h"
#include "edgellm/tensor.h"
#include "testutil.h"

static void test_error_message(void **st) {
    (void)st;
    el_error e = {0};
    el_status s = el_err(&e, EL_ERR_RANGE, "%s: dim %d too large", "m.gguf", 99);
    assert_int_equal(s, EL_ERR_RANGE);
    assert_int_equal(e.code, EL_ERR_RANGE);
    assert_string_equal(e.msg, "m.gguf: dim 99 too large");
    assert_int_equal(el_err(NULL, EL_ERR_IO, "x"), EL_ERR_IO);
}

static void test_checked_size(void **st) {
    (void)st;
    size_t r;
    assert_int_equal(el_mul_size(1000, 1000, &r), 0);
    assert_int_equal(r, 1000000);
    assert_int_equal(el_mul_size(SIZE_MAX / 2, 3, &r), -1);
    assert_int_equal(el_add_size(SIZE_MAX, 1, &r), -1);
    assert_int_equal(el_add_size(5, 7, &r), 0);
    assert_int_equal(r, 12);
    assert_null(el_calloc(SIZE_MAX / 4, 8));
    assert_null(el_calloc_aligned(SIZE_MAX / 4, 8));
    unsigned char *a = el_calloc_aligned(1000, 3);  // zeroed, on a cache line
    assert_non_null(a);
    assert_int_equal((uintptr_t)a % 64, 0);
    for (int i = 0; i < 3000; i++) assert_int_equal(a[i], 0);
    el_calloc_free(a);
    el_calloc_free(NULL);
}

static void test_utf8(void **st) {
    (void)st;
    assert_true(el_utf8_valid("hello", 5));
    assert_true(el_utf8_valid("F\xc3\xbchrer", 7));
    assert_true(el_utf8_valid("\xf0\x9f\xa6\x99", 4));          // llama emoji
    assert_false(el_utf8_valid("\xc3", 1));                      // truncated
    assert_false(el_utf8_valid("\xc0\xaf", 2));                  // overlong
    assert_false(el_utf8_valid("\xed\xa0\x80", 3));              // surrogate
    assert_false(el_utf8_valid("\xff", 1));
    assert_false(el_utf8_valid("\xf4\x90\x80\x80", 4));          // > U+10FFFF
}

static void test_f16(void **st) {
    (void)st;
    assert_int_equal(el_f32_to_f16(1.0f), 0x3C00);
    assert_int_equal(el_f32_to_f16(-2.0f), 0xC000);
    assert_int_equal(el_f32_to_f16(65504.0f), 0x7BFF);
    assert_int_equal(el_f32_to_f16(1e6f), 0x7C00);
    assert_int_equal(el_f32_to_f16(5.9604645e-8f), 0x0001);  // smallest subnormal
    assert_true(el_f16_to_f32(0x0001) == 5.9604645e-8f);
    assert_true(el_f16_to_f32(0x3555) == 0.333251953125f);
    // round to nearest even: 1 + 2^-11 is halfway between 1 and 1+2^-10
    assert_int_equal(el_f32_to_f16(1.0f + 1.0f / 2048), 0x3C00);
    assert_int_equal(el_f32_to_f16(1.0f + 3.0f / 2048), 0x3C02);
    assert_true(isnan(el_f16_to_f32(el_f32_to_f16(NAN))));
    // every finite half round-trips exactly
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7C00) == 0x7C00) continue;
        assert_int_equal(el_f32_to_f16(el_f16_to_f32((uint16_t)h)), h);
    }
    assert_int_equal(el_f32_to_bf16(1.0f), 0x3F80);
    assert_true(el_bf16_to_f32(0x4049) == 3.140625f);
    assert_int_equal(el_f32_to_bf16(3.14159265f), 0x4049);
}

static void test_dtype_table(void **st) {
    (void)st;
    assert_string_equal(el_dtype_name(EL_DTYPE_Q8_0), "q8_0");
    assert_int_equal(el_dtype_info(EL_DTYPE_Q4_K)->type_size, 144);
    assert_int_equal(el_dtype_info(EL_DTYPE_Q6_K)->block_size, 256);
    assert_null(el_dtype_info(4));   // removed ggml type id
    assert_null(el_dtype_info(-1));
    assert_null(el_dtype_info(1000));
    assert_int_equal(el_dtype_from_name("bf16"), EL_DTYPE_BF16);
    assert_int_equal(el_dtype_from_name("nope"), -1);
    assert_int_equal(el_dtype_row_size(EL_DTYPE_Q8_0, 64), 68);
    assert_int_equal(el_dtype_row_size(EL_DTYPE_Q8_0, 65), 0);
    assert_int_equal(el_dtype_row_size(EL_DTYPE_F16, 7), 14);
}

struct sum_ctx {
    atomic_int hits[1000];
};

static void sum_task(void *ctx, int i, int n) {
    struct sum_ctx *c = ctx;
    assert_true(n == 1000);
    atomic_fetch_add(&c->hits[i], 1);
}

static void test_pool(void **st) {
    (void)st;
    for (int nt = 1; nt <= 4; nt++) {
        el_pool *p = el_pool_new(nt);
        assert_non_null(p);
        assert_int_equal(el_pool_size(p), nt);
        for (int rep = 0; rep < 50; rep++) {
            static struct sum_ctx c;
            memset(&c, 0, sizeof c);
            el_pool_run(p, sum_task, &c, 1000);
            for (int i = 0; i < 1000; i++) assert_int_equal(atomic_load(&c.hits[i]), 1);
        }
        el_pool_free(p);
    }
    el_pool_free(NULL);
}

// Jobs of different sizes back to back, with more threads than cores, so a
// worker is often descheduled between reading a claim and taking it. Every
// task must run exactly once, with its own job's n, and be finished when
// el_pool_run returns. (A late worker used to pair an exhausted claim with the
// next job's larger count: about 1 job in 100,000 ran a task twice and
// returned early.)
struct race_job {
    int n;
    atomic_int hits[33];
    atomic_int inflight, bad;
};

static void race_task(void *ctx, int i, int n) {
    struct race_job *j = ctx;
    atomic_fetch_add(&j->inflight, 1);
    if (n != j->n || i < 0 || i >= j->n) atomic_fetch_add(&j->bad, 1);
    else atomic_fetch_add(&j->hits[i], 1);
    for (volatile int k = 0; k < (i * 37) % 50; k++) {}
    atomic_fetch_sub(&j->inflight, 1);
}

static void test_pool_late_workers(void **st) {
    (void)st;
    static const int sizes[3] = {2, 7, 33};
    for (int nt = 3; nt <= 4; nt++) {
        el_pool *p = el_pool_new(nt);
        assert_non_null(p);
        static struct race_job jobs[2];
        int wrong = 0;
        for (int r = 0; r < 400000; r++) {
            struct race_job *j = &jobs[r & 1];
            memset(j, 0, sizeof *j);
            j->n = sizes[r % 3];
            el_pool_run(p, race_task, j, j->n);
            int ok = atomic_load(&j->inflight) == 0 && atomic_load(&j->bad) == 0;
            for (int i = 0; i < j->n; i++) ok &= atomic_load(&j->hits[i]) == 1;
            wrong += !ok;
        }
        assert_int_equal(wrong, 0);
        el_pool_free(p);
    }
}

struct big_ctx {
    unsigned char *hits;
    atomic_int bad;
};

static void big_task(void *ctx, int i, int n) {
    struct big_ctx *c = ctx;
    if (n != 200003 || i < 0 || i >= n) atomic_fetch_add(&c->bad, 1);
    else c->hits[i]++;
}

// More tasks than one claim word can count: run in chunks, same i and n.
static void test_pool_many_tasks(void **st) {
    (void)st;
    el_pool *p = el_pool_new(2);
    struct big_ctx c = {calloc(200003, 1), 0};
    assert_non_null(c.hits);
    el_pool_run(p, big_task, &c, 200003);
    assert_int_equal(atomic_load(&c.bad), 0);
    for (int i = 0; i < 200003; i++) assert_int_equal(c.hits[i], 1);
    free(c.hits);
    el_pool_free(p);
}

static void test_read_file(void **st) {
    (void)st;
    const char *p = tu_write_tmp("rf.txt", "abc\n", 4);
    char *d;
    size_t n;
    el_error e;
    assert_int_equal(el_read_file(p, 100, &d, &n, &e), EL_OK);
    assert_int_equal(n, 4);
    assert_string_equal(d, "abc\n");
    free(d);
    assert_int_equal(el_read_file(p, 2, &d, &n, &e), EL_ERR_RANGE);
    assert_int_equal(el_read_file("/nonexistent/x", 100, &d, &n, &e), EL_ERR_IO);
    assert_non_null(strstr(e.msg, "/nonexistent/x"));
}

// A message quoting hostile bytes stays one printable line.
static void test_error_one_line(void **st) {
    (void)st;
    el_error e;
    const char bad[] = "lla\na-bpe\r\x1b[2J\x7f";
    assert_int_equal(el_err(&e, EL_ERR_FORMAT, "%s: pre \"%s\" is unknown", "f.gguf", bad), EL_ERR_FORMAT);
    assert_string_equal(e.msg, "f.gguf: pre \"lla?a-bpe??[2J?\" is unknown");
    assert_int_equal(e.code, EL_ERR_FORMAT);
}

// One address syntax everywhere: HOST:PORT and tcp://HOST:PORT.
static void test_addr(void **st) {
    (void)st;
    el_addr a;
    el_error e = {0};
    const struct {
        const char *in, *host;
        int port, loopback;
    } ok[] = {
        {"tcp://127.0.0.1:5555", "127.0.0.1", 5555, 1}, {"127.0.0.1:5555", "127.0.0.1", 5555, 1},
        {"127.1.2.3:1", "127.1.2.3", 1, 1},             {"localhost:80", "localhost", 80, 1},
        {"tcp://LocalHost:80", "LocalHost", 80, 1},     {"[::1]:80", "::1", 80, 1},
        {"tcp://[0:0:0:0:0:0:0:1]:80", "0:0:0:0:0:0:0:1", 80, 1},
        {"[::ffff:127.0.0.1]:9", "::ffff:127.0.0.1", 9, 1},
        {"*:0", "*", 0, 0},                             {"tcp://edge-1.local:7000", "edge-1.local", 7000, 0},
        {"10.0.0.2:7000", "10.0.0.2", 7000, 0},         {"128.0.0.1:7", "128.0.0.1", 7, 0},
        {"[::2]:7", "::2", 7, 0},                       {"0.0.0.0:7", "0.0.0.0", 7, 0},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        assert_int_equal(el_addr_parse(ok[i].in, &a, &e), EL_OK);
        assert_string_equal(a.host, ok[i].host);
        assert_int_equal(a.port, ok[i].port);
        assert_int_equal(el_addr_is_loopback(&a), ok[i].loopback);
    }
    char buf[300];
    assert_int_equal(el_addr_parse("localhost:7001", &a, &e), EL_OK);
    el_addr_format(&a, 1, buf, sizeof buf);
    assert_string_equal(buf, "tcp://127.0.0.1:7001");
    el_addr_format(&a, 0, buf, sizeof buf);
    assert_string_equal(buf, "tcp://localhost:7001");
    assert_int_equal(el_addr_parse("[::1]:7001", &a, &e), EL_OK);
    el_addr_format(&a, 1, buf, sizeof buf);
    assert_string_equal(buf, "tcp://[::1]:7001");

    assert_int_equal(el_addr_parse("udp://1.2.3.4:5", &a, &e), EL_ERR_ARG);
    assert_string_equal(e.msg, "'udp://1.2.3.4:5' is not an address of the form HOST:PORT or tcp://HOST:PORT");
    assert_int_equal(el_addr_parse("tcp://1.2.3.4", &a, &e), EL_ERR_ARG);
    assert_string_equal(e.msg, "'tcp://1.2.3.4' has no port (HOST:PORT or tcp://HOST:PORT)");
    assert_int_equal(el_addr_parse("1.2.3.4:", &a, &e), EL_ERR_ARG);
    assert_int_equal(el_addr_parse(":80", &a, &e), EL_ERR_ARG);
    assert_int_equal(el_addr_parse("", &a, &e), EL_ERR_ARG);
    assert_int_equal(el_addr_parse("h:70000", &a, &e), EL_ERR_RANGE);
    assert_string_equal(e.msg, "'h:70000': port 70000 is not in 0..65535");
    assert_int_equal(el_addr_parse("tcp://h:123456789", &a, &e), EL_ERR_ARG);
    assert_int_equal(el_addr_parse("h:-1", &a, &e), EL_ERR_ARG);
    assert_int_equal(el_addr_parse("h h:1", &a, &e), EL_ERR_ARG);
    assert_int_equal(el_addr_parse("[::1:80", &a, &e), EL_ERR_ARG);
    assert_int_equal(el_addr_parse("::1:80", &a, &e), EL_ERR_ARG);
    assert_string_equal(e.msg, "'::1:80': an IPv6 host needs brackets, [::1]:PORT");
    char longh[400] = "tcp://";
    memset(longh + 6, 'a', 300);
    strcpy(longh + 306, ":1");
    assert_int_equal(el_addr_parse(longh, &a, &e), EL_ERR_ARG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_one_line),
        cmocka_unit_test(test_error_message), cmocka_unit_test(test_checked_size),
        cmocka_unit_test(test_utf8),          cmocka_unit_test(test_f16),
        cmocka_unit_test(test_dtype_table),   cmocka_unit_test(test_pool),
        cmocka_unit_test(test_pool_late_workers),
        cmocka_unit_test(test_pool_many_tasks),
        cmocka_unit_test(test_read_file),
        cmocka_unit_test(test_addr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
