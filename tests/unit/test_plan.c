// Unit tests for src/plan: the planner's arithmetic on a hand-made profile,
// the memory budget, profile round trips and malformed profiles.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/json.h"
#include "edgellm/plan.h"
#include "edgellm/tensor.h"
#include "testutil.h"

// A 4-layer model, dim 64, vocab 512: each layer costs 1 ms to decode on the
// device and 0.25 ms on the edge; embedding 0, head 0.5 ms / 0.125 ms.
static void make_profile(el_profile *p, double scale) {
    memset(p, 0, sizeof *p);
    p->n_layers = 4, p->dim = 64, p->vocab = 512, p->n_ctx = 1, p->ctx[0] = 16, p->threads = 1, p->prefill_batch = 8;
    p->decode_s = calloc(4, sizeof(double));
    p->prefill_s = calloc(4, sizeof(double));
    p->weight_bytes = calloc(4, sizeof(size_t));
    for (int l = 0; l < 4; l++) {
        p->decode_s[l] = 1e-3 * scale;
        p->prefill_s[l] = 0.5e-3 * scale;
        p->weight_bytes[l] = 1000;
    }
    p->head_s = 0.5e-3 * scale;
    p->embed_bytes = 500;
    p->head_bytes = 100;
    p->kv_bytes_per_pos = 10;
}

static const el_plan_row *find(const el_plan_row *rows, int n, int cut) {
    for (int i = 0; i < n; i++)
        if (rows[i].cut == cut) return &rows[i];
    return NULL;
}

static void test_planner_arithmetic(void **st) {
    (void)st;
    el_profile dev, edge;
    make_profile(&dev, 1.0);
    make_profile(&edge, 0.25);
    el_plan_opts o = {.device = &dev, .edge = &edge, .ctx = 16, .prompt_tokens = 10};
    o.link.rtt_s = 0.010;
    o.link.up_bps = 8e6;    // 1 byte per microsecond
    o.link.down_bps = 16e6;
    el_plan_row rows[64];
    int n = el_plan(&o, rows, 64);
    assert_int_equal(n, 5);  // cuts 0..4, f32 only, no U-shape
    const el_plan_row *r2 = find(rows, n, 2);
    // device: layers 0,1 = 2 ms; edge: layers 2,3 + head = 0.5 + 0.125 ms
    assert_true(fabs(r2->device_s - 2e-3) < 1e-12);
    assert_true(fabs(r2->edge_s - 0.625e-3) < 1e-12);
    // up: 24 + 12 + 256 = 292 B at 1 B/us; down: 24 + 12 + 16 + 2048 = 2100 B at 2 B/us
    assert_true(fabs(r2->link_s - (0.010 + 292e-6 + 1050e-6)) < 1e-12);
    assert_true(r2->bytes_per_token == 292 + 2100);
    assert_int_equal(r2->device_mem, 500 + 2 * (1000 + 10 * 16));
    const el_plan_row *r4 = find(rows, n, 4);  // all local: 4 ms + 0.5 ms head, no link
    assert_true(fabs(r4->decode_s - 4.5e-3) < 1e-12);
    assert_true(r4->link_s == 0 && r4->bytes_per_token == 0);
    // with a 10 ms round trip, local (4.5 ms) beats any split (>= 11.3 ms)
    assert_int_equal(rows[0].cut, 4);
    // a 0.1 ms link makes offloading everything the best choice
    o.link.rtt_s = 0.0001;
    o.link.up_bps = o.link.down_bps = 1e10;
    n = el_plan(&o, rows, 64);
    assert_int_equal(rows[0].cut, 0);
    // the budget fits embedding + 1 layer (500 + 1160 = 1660) but not 2
    o.device_mem = 1700;
    o.link.rtt_s = 0.010;
    o.link.up_bps = 8e6, o.link.down_bps = 16e6;
    n = el_plan(&o, rows, 64);
    assert_true(rows[0].fits && rows[0].cut <= 1);
    for (int i = 0; i < n; i++) assert_int_equal(rows[i].fits, rows[i].cut <= 1);
    // U-shape and q8_0 add candidates; q8_0 rows carry fewer bytes
    o.device_mem = 0;
    o.allow_ushape = 1;
    o.n_acts = 2;
    o.acts[0] = EL_DTYPE_F32;
    o.acts[1] = EL_DTYPE_Q8_0;
    n = el_plan(&o, rows, 64);
    assert_int_equal(n, 4 * 2 * 2 + 1);
    // a chain: a second edge 5x faster than the first behind a free link takes
    // all but one layer (each stage must hold at least one)
    el_profile edge2;
    make_profile(&edge2, 0.05);
    el_plan_opts c = {.device = &dev, .edge = &edge, .edge2 = &edge2, .ctx = 16, .prompt_tokens = 1};
    c.link.rtt_s = c.link2.rtt_s = 1e-6;
    c.link.up_bps = c.link.down_bps = c.link2.up_bps = c.link2.down_bps = 1e12;
    n = el_plan(&c, rows, 64);
    assert_int_equal(rows[0].cut, 0);
    assert_int_equal(rows[0].cut2, 1);
    // edge: 0.25 ms; edge2: 3 x 0.05 + head 0.025 ms; links ~2 us each way
    assert_true(fabs(rows[0].edge_s - 0.25e-3) < 1e-12 && fabs(rows[0].edge2_s - 0.175e-3) < 1e-12);
    // candidates: per k < L-1, m in k+1..L; plus k = L-1 (m = L) and local
    assert_int_equal(n, (4 + 3 + 2) + 1 + 1);
    el_profile_free(&edge2);
    el_profile_free(&dev);
    el_profile_free(&edge);
}

static void test_profile_roundtrip(void **st) {
    (void)st;
    el_profile p, q;
    make_profile(&p, 1.0);
    p.n_ctx = 1;
    snprintf(p.node, sizeof p.node, "dev\"ice");
    snprintf(p.model, sizeof p.model, "m.gguf");
    el_error e;
    const char *path = tu_tmp_path("prof.json");
    assert_int_equal(el_profile_save(&p, path, &e), EL_OK);
    assert_int_equal(el_profile_load(path, &q, &e), EL_OK);
    assert_int_equal(q.n_layers, 4);
    assert_true(fabs(q.decode_s[3] - 1e-3) < 1e-15);
    assert_true(fabs(el_profile_decode(&q, 2, 100) - 1e-3) < 1e-15);
    assert_int_equal(q.weight_bytes[1], 1000);
    el_profile_free(&q);
    el_profile_free(&p);
    const char *bad = tu_write_tmp("bad.json", "{\"format\": \"other\"}", 19);
    assert_int_equal(el_profile_load(bad, &q, &e), EL_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "not an edgellm profile"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_planner_arithmetic),
        cmocka_unit_test(test_profile_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
