// Unit tests for the batching engine (el_batch_run) and the KV cache in
// blocks: several sessions, each with its own adapter (or none), prefilling
// and decoding together in one step give the logits each gets alone; sessions
// that start at different layers share a step; KV types, truncation and the
// memory budget; and how el_batch_plan shares a step.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <unistd.h>

#include "edgellm/kernels.h"
#include "edgellm/lora.h"
#include "edgellm/model.h"
#include "testutil.h"

#define NSEQ 5
#define STEPS 6
#define VOCAB 512

// An adapter whose B is non-zero, so it changes the model's outputs.
static el_lora *random_adapter(const el_model *m, uint64_t seed) {
    el_error err;
    el_lora *l;
    assert_int_equal(el_lora_new(m, 4, 8.0f, EL_LORA_ALL_TARGETS, seed, &l, &err), EL_OK);
    uint64_t rng = seed * 7919 + 1;
    for (size_t i = 0; i < l->n_params; i++) l->params[i] = 0.2f * tu_randf(&rng);
    return l;
}

static float max_abs_diff(const float *a, const float *b, int n) {
    float d = 0;
    for (int i = 0; i < n; i++) d = fmaxf(d, fabsf(a[i] - b[i]));
    return d;
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int v = 1; v < n; v++)
        if (x[v] > x[best]) best = v;
    return best;
}

// Prompts of different lengths, so rows sit at different positions.
static const int prompts[NSEQ][9] = {{1, 368, 430}, {1, 281}, {1, 269, 435, 447, 300, 12, 99, 7, 8}, {1, 368, 430},
                                     {1, 50, 60, 70}};
static const int plen[NSEQ] = {3, 2, 9, 3, 4};

// Sessions join at different steps and prefill in chunks of at most 2 while
// the others decode: every step's logits equal the session's alone.
static void test_batch_equals_alone(void **st) {
    (void)st;
    el_error err;
    el_model *m;
    assert_int_equal(el_model_open(tu_model_path("aidreams260K.bin"), NULL, &m, &err), EL_OK);
    el_pool *pool = el_pool_new(2);
    el_lora *ad[2] = {random_adapter(m, 11), random_adapter(m, 23)};
    el_lora_set sets[2] = {{1, {ad[0]}, {1.0f}}, {1, {ad[1]}, {0.5f}}};
    // sessions in an order that interleaves adapters: A, none, B, A, B
    const el_lora_set *row_set[NSEQ] = {&sets[0], NULL, &sets[1], &sets[0], &sets[1]};
    el_session *bs[NSEQ], *ref[NSEQ];
    int next[NSEQ], done[NSEQ] = {0}, join[NSEQ] = {0, 0, 1, 2, 2};
    float *logits = malloc((size_t)NSEQ * VOCAB * sizeof(float));
    float *ref_logits = malloc(VOCAB * sizeof(float));
    float *first = malloc((size_t)NSEQ * VOCAB * sizeof(float));
    for (int i = 0; i < NSEQ; i++) {
        assert_int_equal(el_session_new(m, NULL, pool, &bs[i], &err), EL_OK);
        assert_int_equal(el_session_new(m, NULL, pool, &ref[i], &err), EL_OK);
        el_session_set_lora(bs[i], row_set[i]);
        el_session_set_lora(ref[i], row_set[i]);
    }
    el_batch *b;
    assert_int_equal(el_batch_new(m, 12, pool, &b, &err), EL_OK);
    float worst = 0;
    int checked = 0;
    for (int step = 0; step < 30; step++) {
        el_batch_req reqs[NSEQ];
        int who[NSEQ], nr = 0;
        for (int i = 0; i < NSEQ; i++) {
            if (step < join[i] || done[i] >= plen[i] + STEPS) continue;
            int prefill = done[i] < plen[i];
            int n = prefill ? (plen[i] - done[i] < 2 ? plen[i] - done[i] : 2) : 1;
            assert_int_equal(el_session_reserve(bs[i], done[i] + n, &err), EL_OK);
            reqs[nr] = (el_batch_req){.s = bs[i], .pos = done[i], .n = n,
                                      .tokens = prefill ? prompts[i] + done[i] : &next[i],
                                      .logits_rows = !prefill || done[i] + n == plen[i] ? 1 : 0,
                                      .logits = logits + (size_t)nr * VOCAB};
            who[nr++] = i;
        }
        if (!nr) break;
        assert_int_equal(el_batch_run(b, nr, reqs, &err), EL_OK);
        for (int r = 0; r < nr; r++) {
            int i = who[r];
            int pos = done[i];
            done[i] += reqs[r].n;
            if (!reqs[r].logits_rows) continue;
            // the reference: the same positions alone
            const int *toks = pos < plen[i] ? prompts[i] : &next[i];
            int n = pos < plen[i] ? plen[i] : 1, at = pos < plen[i] ? 0 : pos;
            assert_int_equal(el_session_forward(ref[i], toks, n, at, ref_logits, 0, &err), EL_OK);
            const float *got = logits + (size_t)r * VOCAB;
            worst = fmaxf(worst, max_abs_diff(got, ref_logits, VOCAB));
            checked++;
            if (pos < plen[i]) memcpy(first + (size_t)i * VOCAB, got, VOCAB * sizeof(float));
            next[i] = argmax(ref_logits, VOCAB);
        }
    }
    assert_int_equal(checked, NSEQ * (STEPS + 1));
    assert_true(worst <= 1e-5f);

    // Sessions 0 and 3 share prompt and adapter; 0 and 1 differ in both; an
    // adapter must really change the outputs, or the comparison above proves
    // nothing about routing.
    assert_true(max_abs_diff(first + 0 * VOCAB, first + 3 * VOCAB, VOCAB) <= 1e-5f);
    el_session *plain;
    assert_int_equal(el_session_new(m, NULL, pool, &plain, &err), EL_OK);
    float *base = malloc(VOCAB * sizeof(float));
    assert_int_equal(el_session_forward(plain, prompts[0], plen[0], 0, base, 0, &err), EL_OK);
    assert_true(max_abs_diff(base, first, VOCAB) > 1e-2f);

    free(base);
    el_session_free(plain);
    el_batch_free(b);
    for (int i = 0; i < NSEQ; i++) {
        el_session_free(bs[i]);
        el_session_free(ref[i]);
    }
    free(logits);
    free(ref_logits);
    free(first);
    el_lora_free(ad[0]);
    el_lora_free(ad[1]);
    el_pool_free(pool);
    el_model_close(m);
}

// A worker's step: sessions that start at different layers of the stage
// (tails of it) over hidden-state rows, with hidden rows out for some and
// logits for others, equal each session run alone.
static void test_batch_tails(void **st) {
    (void)st;
    el_error err;
    el_model *m;
    assert_int_equal(el_model_open(tu_model_path("aidreams260K.bin"), NULL, &m, &err), EL_OK);
    int L = m->hp.n_layers, dim = m->hp.dim;
    assert_true(L >= 3);
    int begins[3] = {1, 0, 2}, lens[3] = {3, 1, 2};
    el_session *bs[3], *ref[3], *front[3];
    float *x[3], *xr[3], lg[3][2 * VOCAB], want_lg[VOCAB];
    el_batch_req reqs[3];
    for (int i = 0; i < 3; i++) {
        el_session_opts so = {.layer_begin = begins[i], .layer_end = L};
        el_session_opts fo = {.layer_begin = 0, .layer_end = begins[i], .no_layers = begins[i] == 0};
        assert_int_equal(el_session_new(m, &so, NULL, &bs[i], &err), EL_OK);
        assert_int_equal(el_session_new(m, &so, NULL, &ref[i], &err), EL_OK);
        assert_int_equal(el_session_new(m, &fo, NULL, &front[i], &err), EL_OK);
        x[i] = malloc((size_t)lens[i] * dim * sizeof(float));
        xr[i] = malloc((size_t)lens[i] * dim * sizeof(float));
        // the hidden states a device with layers 0..begin would send
        assert_int_equal(el_session_embed(front[i], prompts[2] + i, lens[i], x[i], &err), EL_OK);
        if (begins[i]) assert_int_equal(el_session_layers(front[i], x[i], lens[i], 0, &err), EL_OK);
        memcpy(xr[i], x[i], (size_t)lens[i] * dim * sizeof(float));
        assert_int_equal(el_session_reserve(bs[i], lens[i], &err), EL_OK);
        reqs[i] = (el_batch_req){.s = bs[i], .pos = 0, .n = lens[i], .x = x[i], .out_hidden = i != 1,
                                 .logits_rows = i == 1 ? 1 : i == 2 ? lens[i] : 0, .logits = lg[i]};
    }
    el_batch *b;
    assert_int_equal(el_batch_new(m, 8, NULL, &b, &err), EL_OK);
    assert_int_equal(el_batch_run(b, 3, reqs, &err), EL_OK);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(el_session_layers(ref[i], xr[i], lens[i], 0, &err), EL_OK);
        if (i != 1) assert_true(max_abs_diff(x[i], xr[i], lens[i] * dim) <= 1e-5f);
        if (i == 1) {
            assert_int_equal(el_session_head(ref[i], xr[i], lens[i], 1, want_lg, &err), EL_OK);
            assert_true(max_abs_diff(lg[1], want_lg, VOCAB) <= 1e-5f);
        }
        if (i == 2) {  // every row's logits
            float all[2 * VOCAB];
            assert_int_equal(el_session_head(ref[i], xr[i], lens[i], lens[i], all, &err), EL_OK);
            assert_true(max_abs_diff(lg[2], all, 2 * VOCAB) <= 1e-5f);
        }
    }
    el_batch_free(b);
    for (int i = 0; i < 3; i++) {
        el_session_free(bs[i]);
        el_session_free(ref[i]);
        el_session_free(front[i]);
        free(x[i]);
        free(xr[i]);
    }
    el_model_close(m);
}

// The cache dtypes: rows round-trip within their precision, attention over
// them matches the scalar reference, and a model with f16 or q8_0 KV stays
// close to f32 KV (teacher-forced greedy choices mostly agree).
static void test_kv_types(void **st) {
    (void)st;
    uint64_t rng = 5;
    static const int hds[] = {8, 16, 32, 64, 96, 128, 256};
    for (size_t hi = 0; hi < sizeof hds / sizeof hds[0]; hi++) {
        int hd = hds[hi];
        float x[256], y[256], q[256], w[21];
        for (int i = 0; i < hd; i++) x[i] = 3 * tu_randf(&rng), q[i] = tu_randf(&rng);
        uint8_t row[1024];
        assert_int_equal(el_kv_row_bytes(EL_DTYPE_F32, hd), (size_t)hd * 4);
        assert_int_equal(el_kv_row_bytes(EL_DTYPE_F16, hd), (size_t)hd * 2);
        assert_int_equal(el_kv_row_bytes(EL_DTYPE_Q8_0, hd), (size_t)hd + (hd % 32 ? 4 : (size_t)hd / 8));
        el_kv_store(EL_DTYPE_F16, row, x, hd);
        el_kv_load(EL_DTYPE_F16, y, row, hd);
        for (int i = 0; i < hd; i++) assert_true(fabsf(x[i] - y[i]) <= fabsf(x[i]) * 1e-3f);
        el_kv_store(EL_DTYPE_Q8_0, row, x, hd);
        el_kv_load(EL_DTYPE_Q8_0, y, row, hd);
        float amax = 0;
        for (int i = 0; i < hd; i++) amax = fmaxf(amax, fabsf(x[i]));
        for (int i = 0; i < hd; i++) assert_true(fabsf(x[i] - y[i]) <= amax / 127 * 0.5001f);
        // attention over 21 rows of each dtype: the dispatched kernel against
        // the scalar one (through the loaded floats)
        int types[3] = {EL_DTYPE_F32, EL_DTYPE_F16, EL_DTYPE_Q8_0};
        for (int ti = 0; ti < 3; ti++) {
            int dt = types[ti];
            size_t rb = el_kv_row_bytes(dt, hd), stride = rb + 8;  // rows need not be adjacent
            uint8_t *k = malloc(21 * stride);
            float *kf = malloc(21 * (size_t)hd * sizeof(float));
            for (int p = 0; p < 21; p++) {
                float v[256];
                for (int i = 0; i < hd; i++) v[i] = tu_randf(&rng);
                el_kv_store(dt, k + p * stride, v, hd);
                el_kv_load(dt, kf + (size_t)p * hd, k + p * stride, hd);
            }
            float s1[21], s2[21], o1[256], o2[256];
            el_attn_scores_kv(dt, s1, q, k, stride, 21, hd, 0.25f);
            for (int p = 0; p < 21; p++) {
                double ref = 0, mag = 0;
                for (int i = 0; i < hd; i++) ref += (double)q[i] * kf[(size_t)p * hd + i], mag += fabs(q[i] * kf[(size_t)p * hd + i]);
                assert_true(fabs(s1[p] - 0.25 * ref) <= 0.25 * mag * 1e-5 + 1e-7);
                s2[p] = s1[p];
            }
            el_softmax(s2, 21);
            for (int p = 0; p < 21; p++) w[p] = s2[p];
            for (int i = 0; i < hd; i++) o1[i] = 1.0f, o2[i] = 1.0f;  // mixes accumulate onto what is there
            el_attn_mix_kv(dt, o1, w, k, stride, 21, hd);
            for (int p = 0; p < 21; p++)
                for (int i = 0; i < hd; i++) o2[i] += w[p] * kf[(size_t)p * hd + i];
            for (int i = 0; i < hd; i++) assert_true(fabsf(o1[i] - o2[i]) <= 1e-5f);
            free(k);
            free(kf);
        }
    }
    // a model: 40 teacher-forced positions of the same text with each KV type
    el_error err;
    el_model *m;
    assert_int_equal(el_model_open(tu_model_path("aidreams260K.bin"), NULL, &m, &err), EL_OK);
    int toks[41];
    for (int i = 0; i < 41; i++) toks[i] = i ? 3 + (i * 97) % 500 : 1;
    float *ref = malloc(41 * (size_t)VOCAB * sizeof(float)), *got = malloc(41 * (size_t)VOCAB * sizeof(float));
    int types[3] = {EL_DTYPE_F32, EL_DTYPE_F16, EL_DTYPE_Q8_0};
    size_t bytes[3];
    for (int ti = 0; ti < 3; ti++) {
        el_session *s;
        el_session_opts so = {.kv_type = types[ti]};
        assert_int_equal(el_session_new(m, &so, NULL, &s, &err), EL_OK);
        assert_int_equal(el_session_forward(s, toks, 41, 0, ti ? got : ref, 1, &err), EL_OK);
        bytes[ti] = el_session_kv_bytes(s);
        if (ti) {
            int agree = 0;
            for (int p = 0; p < 41; p++) agree += argmax(got + (size_t)p * VOCAB, VOCAB) == argmax(ref + (size_t)p * VOCAB, VOCAB);
            assert_true(agree >= (ti == 1 ? 40 : 36));
            assert_true(max_abs_diff(got, ref, 41 * VOCAB) > 0);  // really another cache
        }
        el_session_free(s);
    }
    // 48 positions = 3 blocks of every layer; f16 halves, q8_0 a byte a value plus its scales
    int hd = m->hp.head_dim;
    size_t per = (size_t)m->hp.n_layers * 2 * m->hp.n_kv_heads * EL_KV_BLOCK * 3;
    assert_int_equal(bytes[0], per * 4 * hd);
    assert_int_equal(bytes[1], per * 2 * hd);
    assert_int_equal(bytes[2], per * el_kv_row_bytes(EL_DTYPE_Q8_0, hd));
    el_session *bad;
    el_session_opts bo = {.kv_type = EL_DTYPE_Q4_0};
    assert_int_equal(el_session_new(m, &bo, NULL, &bad, &err), EL_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "q4_0"));
    free(ref);
    free(got);
    el_model_close(m);
}

// aidreams260K, and the bytes of one KV block of a session of it
static el_model *open_model_block(size_t *block) {
    el_error err;
    el_model *m;
    assert_int_equal(el_model_open(tu_model_path("aidreams260K.bin"), NULL, &m, &err), EL_OK);
    el_session *probe;
    assert_int_equal(el_session_new(m, NULL, NULL, &probe, &err), EL_OK);
    *block = el_session_kv_block_bytes(probe);
    el_session_free(probe);
    return m;
}

// Long prompts in one step take the tiled attention (AVX-512; elsewhere the
// row path, and this checks the same thing). One step holds 88 rows of one
// session (positions 0..87, q8_0 cache: two panels of 36 and a part panel of
// 16), 40 of another (positions 88..127 after 88 earlier ones, f32 cache: a
// panel of 36 and 4 rows row by row) and a third session's decode row: every
// row's logits equal what the same tokens give one at a time (row by row).
// The first two sessions' positions follow on from each other, so rows of
// both taken for one run would put a panel across them.
static void test_long_prompts(void **st) {
    (void)st;
    el_error err;
    el_model *m;
    assert_int_equal(el_model_open(tu_model_path("aidreams260K.bin"), NULL, &m, &err), EL_OK);
    el_pool *pool = el_pool_new(2);
    int toks[140], kv_type[3] = {EL_DTYPE_Q8_0, EL_DTYPE_F32, EL_DTYPE_F32};
    int first[3] = {0, 10, 20}, before[3] = {0, 88, 5}, lens[3] = {88, 40, 1};  // token offset, earlier positions, rows
    for (int i = 0; i < 140; i++) toks[i] = i ? 3 + (i * 37) % 500 : 1;
    el_session *bs[3], *one[3];
    float *got[3], *want = malloc(VOCAB * sizeof(float));
    el_batch_req reqs[3];
    for (int i = 0; i < 3; i++) {
        el_session_opts so = {.kv_type = kv_type[i]}, so1 = {.kv_type = kv_type[i], .max_batch = 1};
        assert_int_equal(el_session_new(m, &so, pool, &bs[i], &err), EL_OK);
        assert_int_equal(el_session_new(m, &so1, pool, &one[i], &err), EL_OK);
        got[i] = malloc((size_t)lens[i] * VOCAB * sizeof(float));
        if (before[i])
            assert_int_equal(el_session_forward(bs[i], toks + first[i], before[i], 0, want, 0, &err), EL_OK);
        assert_int_equal(el_session_reserve(bs[i], before[i] + lens[i], &err), EL_OK);
        reqs[i] = (el_batch_req){.s = bs[i], .pos = before[i], .n = lens[i], .tokens = toks + first[i] + before[i],
                                 .logits_rows = lens[i], .logits = got[i]};
    }
    el_batch *b;
    assert_int_equal(el_batch_new(m, 129, pool, &b, &err), EL_OK);
    assert_int_equal(el_batch_run(b, 3, reqs, &err), EL_OK);
    float worst = 0;
    for (int i = 0; i < 3; i++)
        for (int r = 0; r < before[i] + lens[i]; r++) {
            assert_int_equal(el_session_forward(one[i], toks + first[i] + r, 1, r, want, 0, &err), EL_OK);
            if (r >= before[i]) worst = fmaxf(worst, max_abs_diff(got[i] + (size_t)(r - before[i]) * VOCAB, want, VOCAB));
        }
    assert_true(worst < 1e-4f);
    el_batch_free(b);
    for (int i = 0; i < 3; i++) {
        el_session_free(bs[i]);
        el_session_free(one[i]);
        free(got[i]);
    }
    free(want);
    el_pool_free(pool);
    el_model_close(m);
}

// Blocks come from a pool with a budget and go back to it: a session that
// cannot get a block is refused and keeps what it had; truncation rolls a
// sequence back, and re-running the rolled-back positions with other tokens
// gives exactly what a fresh session gives.
static void test_kv_blocks(void **st) {
    (void)st;
    el_error err;
    size_t block;
    el_model *m = open_model_block(&block);
    el_kv_pool *pool = el_kv_pool_new(5 * block);
    el_session *a, *b;
    el_session_opts so = {.kv_pool = pool, .ctx = 200};
    assert_int_equal(el_session_new(m, &so, NULL, &a, &err), EL_OK);
    assert_int_equal(el_session_new(m, &so, NULL, &b, &err), EL_OK);
    assert_int_equal(el_kv_pool_used(pool), 0);  // nothing up front
    assert_int_equal(el_session_reserve(a, 3 * EL_KV_BLOCK + 1, &err), EL_OK);
    assert_int_equal(el_kv_pool_used(pool), 4 * block);
    assert_int_equal(el_session_reserve(b, 2 * EL_KV_BLOCK, &err), EL_ERR_NOMEM);
    assert_non_null(strstr(err.msg, "budget exhausted"));
    assert_int_equal(el_session_kv_bytes(b), 0);
    assert_int_equal(el_session_reserve(b, EL_KV_BLOCK, &err), EL_OK);
    assert_int_equal(el_session_reserve(a, 201, &err), EL_ERR_RANGE);
    el_session_truncate(a, EL_KV_BLOCK);
    assert_int_equal(el_session_capacity(a), EL_KV_BLOCK);
    assert_int_equal(el_kv_pool_used(pool), 2 * block);
    el_session_free(b);
    assert_int_equal(el_kv_pool_used(pool), block);

    // rollback: 30 positions, back to 21, then 9 other tokens
    int t1[30], t2[30];
    for (int i = 0; i < 30; i++) t1[i] = t2[i] = i ? 5 + (i * 31) % 400 : 1;
    for (int i = 21; i < 30; i++) t2[i] = 7 + i;
    float la[VOCAB], lb[VOCAB];
    el_session *fresh;
    assert_int_equal(el_session_new(m, NULL, NULL, &fresh, &err), EL_OK);
    assert_int_equal(el_session_forward(a, t1, 30, 0, la, 0, &err), EL_OK);
    el_session_truncate(a, 21);
    assert_int_equal(el_session_capacity(a), 2 * EL_KV_BLOCK);
    assert_int_equal(el_session_forward(a, t2 + 21, 9, 21, la, 0, &err), EL_OK);
    // (bit for bit: steps under 32 rows all take the row-by-row attention)
    assert_int_equal(el_session_forward(fresh, t2, 30, 0, lb, 0, &err), EL_OK);
    assert_true(max_abs_diff(la, lb, VOCAB) == 0.0f);
    el_session_free(a);
    el_session_free(fresh);
    assert_int_equal(el_kv_pool_used(pool), 0);
    el_kv_pool_free(pool);
    el_model_close(m);
}

// Waits (at most 30 s: the thread runs at idle priority) until s has at
// least n resident blocks; returns how many it has.
static int wait_resident(const el_session *s, int n) {
    for (int i = 0; i < 30000 && el_session_kv_resident(s) < n; i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return el_session_kv_resident(s);
}

// Whether this kernel faults pages in on request (MADV_POPULATE_WRITE, Linux
// 5.14 on), as mincore sees it: without it the helper has nothing to do. (An
// emulator may accept the call and do nothing: qemu-user's madvise does.)
static int can_populate(void) {
#ifdef MADV_POPULATE_WRITE
    size_t page = (size_t)sysconf(_SC_PAGESIZE), n = 16 * page;
    unsigned char vec[16];
    void *m = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return 0;
    int ok = madvise(m, n, MADV_POPULATE_WRITE) == 0 && mincore(m, n, (void *)vec) == 0;
    for (int i = 0; ok && i < 16; i++) ok = vec[i] & 1;
    munmap(m, n);
    return ok;
#else
    return 0;
#endif
}

// tokens t[0, n) from position 0 into a fresh session of kv_type (no helper),
// then u[0, nu) at position at, over what is cached there, with no truncation
// between: the logits of the last
static void untruncated_run(el_model *m, int kv_type, int ctx, const int *t, int n, const int *u, int nu, int at,
                            float *logits) {
    el_error err;
    el_session *f;
    el_session_opts so = {.ctx = ctx, .kv_type = kv_type};
    assert_int_equal(el_session_new(m, &so, NULL, &f, &err), EL_OK);
    assert_int_equal(el_session_forward(f, t, n, 0, logits, 0, &err), EL_OK);
    assert_int_equal(el_session_forward(f, u, nu, at, logits, 0, &err), EL_OK);
    el_session_free(f);
}

// Blocks whose bytes (rb a block, in every run) lie in the pages that hold
// blocks [0, x), at most cap: what el_session_kv_resident reports when those
// pages are resident.
static int resident_blocks(int x, size_t rb, size_t page, int cap) {
    size_t pages = ((size_t)x * rb + page - 1) / page;
    int n = (int)(pages * page / rb);
    return n < cap ? n : cap;
}

// Prefaulting: the helper faults in the block after a session's last, outside
// the budget, for sessions of the pool's children too; a truncation gives back
// the pages past the block after the kept ones and keeps every kept position,
// also where a page holds the end of the kept data; sessions whose next pages
// came ahead, or were truncated, compute what a session without the helper or
// the truncation does. f32 rows, and q8_0 rows whose blocks do not divide a
// page; each pass fills three pages of every run.
static void test_kv_prefault(void **st) {
    (void)st;
    el_error err;
    size_t block;
    el_model *m = open_model_block(&block);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    int ahead = can_populate(), tested = 0;
    el_kv_pool *pool = el_kv_pool_new(0);
    el_kv_pool *child = el_kv_pool_new_child(pool, 0);
    el_kv_pool_prefault(pool, 1);
    for (int pass = 0; pass < 2; pass++) {
        int kv_type = pass ? EL_DTYPE_Q8_0 : EL_DTYPE_F32;
        size_t rb = EL_KV_BLOCK * el_kv_row_bytes(kv_type, m->hp.head_dim);  // a block of one run
        int nb = (int)((3 * page + rb - 1) / rb), n = nb * EL_KV_BLOCK, ctx = n + 2 * EL_KV_BLOCK, cap = nb + 2;
        if (n > 2048) continue;  // pages too large to fill quickly with this model's small rows
        int keep = (int)((page + page / 2) / rb);  // the kept data ends inside page 1
        tested++;
        int *t = malloc((size_t)n * sizeof *t), u[EL_KV_BLOCK];
        assert_non_null(t);
        for (int i = 0; i < n; i++) t[i] = i ? 3 + (i * 37) % 400 : 1;
        for (int i = 0; i < EL_KV_BLOCK; i++) u[i] = 5 + 11 * i;
        float la[VOCAB], lb[VOCAB];
        el_session *a;
        el_session_opts so = {.kv_pool = child, .ctx = ctx, .kv_type = kv_type};
        assert_int_equal(el_session_new(m, &so, NULL, &a, &err), EL_OK);
        size_t bb = el_session_kv_block_bytes(a);
        assert_int_equal(el_session_kv_resident(a), 0);
        assert_int_equal(el_session_forward(a, t, n, 0, la, 0, &err), EL_OK);
        assert_int_equal(el_kv_pool_used(pool), (size_t)nb * bb);  // the block ahead is not in the budget
        if (ahead) {  // block nb's pages, faulted in before any write
            assert_true(wait_resident(a, nb + 1) >= nb + 1);
            assert_true(el_kv_pool_prefaulted(pool) >= 1);
            assert_int_equal(el_session_kv_resident(a), resident_blocks(nb + 1, rb, page, cap));
        } else {
            assert_int_equal(el_session_kv_resident(a), resident_blocks(nb, rb, page, cap));
        }
        // the next positions land on the pages faulted in ahead
        assert_int_equal(el_session_forward(a, u, EL_KV_BLOCK, n, la, 0, &err), EL_OK);
        untruncated_run(m, kv_type, ctx, t, n, u, EL_KV_BLOCK, n, lb);
        assert_true(max_abs_diff(la, lb, VOCAB) == 0.0f);
        // truncated to keep blocks: the pages past block keep go back; every kept position stays
        el_session_truncate(a, keep * EL_KV_BLOCK);
        assert_int_equal(el_kv_pool_used(pool), (size_t)keep * bb);
        assert_int_equal(el_session_kv_resident(a), resident_blocks(keep + 1, rb, page, cap));
        assert_int_equal(el_session_forward(a, u, EL_KV_BLOCK, keep * EL_KV_BLOCK, la, 0, &err), EL_OK);
        untruncated_run(m, kv_type, ctx, t, n, u, EL_KV_BLOCK, keep * EL_KV_BLOCK, lb);
        assert_true(max_abs_diff(la, lb, VOCAB) == 0.0f);
        el_session_free(a);
        assert_int_equal(el_kv_pool_used(pool), 0);
        free(t);
    }
    if (!tested) print_message("test_kv_prefault: %zu-byte pages, nothing tested\n", page);
    el_kv_pool_prefault(pool, 0);
    el_kv_pool_free(child);
    el_kv_pool_free(pool);
    el_model_close(m);
}

static void test_batch_rejects_bad_rows(void **st) {
    (void)st;
    el_error err;
    el_model *m;
    assert_int_equal(el_model_open(tu_model_path("aidreams260K.bin"), NULL, &m, &err), EL_OK);
    el_session *s, *t;
    el_session_opts so = {.ctx = 16};
    assert_int_equal(el_session_new(m, &so, NULL, &s, &err), EL_OK);
    assert_int_equal(el_session_new(m, &so, NULL, &t, &err), EL_OK);
    assert_int_equal(el_session_reserve(s, 16, &err), EL_OK);
    assert_int_equal(el_session_reserve(t, 16, &err), EL_OK);
    el_batch *b;
    assert_int_equal(el_batch_new(m, 0, NULL, &b, &err), EL_ERR_RANGE);
    assert_int_equal(el_batch_new(m, 2, NULL, &b, &err), EL_OK);
    float logits[2 * VOCAB];
    int tok[3] = {1, 2, 3};
    el_batch_req r = {.s = s, .pos = 0, .n = 3, .tokens = tok, .logits_rows = 1, .logits = logits};
    assert_int_equal(el_batch_run(b, 1, &r, &err), EL_ERR_RANGE);
    assert_non_null(strstr(err.msg, "more than 2 rows"));
    r = (el_batch_req){.s = s, .pos = 16, .n = 1, .tokens = tok, .logits_rows = 1, .logits = logits};
    assert_int_equal(el_batch_run(b, 1, &r, &err), EL_ERR_RANGE);
    assert_non_null(strstr(err.msg, "context of 16"));
    int bad_tok[1] = {VOCAB};
    r = (el_batch_req){.s = s, .pos = 0, .n = 1, .tokens = bad_tok, .logits_rows = 1, .logits = logits};
    assert_int_equal(el_batch_run(b, 1, &r, &err), EL_ERR_RANGE);
    assert_non_null(strstr(err.msg, "token id 512"));
    el_batch_req two[2] = {{.s = s, .pos = 0, .n = 1, .tokens = tok}, {.s = s, .pos = 1, .n = 1, .tokens = tok}};
    assert_int_equal(el_batch_run(b, 2, two, &err), EL_ERR_ARG);
    assert_non_null(strstr(err.msg, "share a session"));
    // positions without blocks
    el_session *u;
    assert_int_equal(el_session_new(m, &so, NULL, &u, &err), EL_OK);
    r = (el_batch_req){.s = u, .pos = 0, .n = 1, .tokens = tok};
    assert_int_equal(el_batch_run(b, 1, &r, &err), EL_ERR_STATE);
    // sessions that end at different layers cannot share a step
    el_session *part;
    el_session_opts po = {.layer_begin = 0, .layer_end = 2};
    assert_int_equal(el_session_new(m, &po, NULL, &part, &err), EL_OK);
    assert_int_equal(el_session_reserve(part, 1, &err), EL_OK);
    two[1] = (el_batch_req){.s = part, .pos = 0, .n = 1, .tokens = tok};
    assert_int_equal(el_batch_run(b, 2, two, &err), EL_ERR_ARG);
    assert_non_null(strstr(err.msg, "ends at layer 2"));
    el_session_free(part);
    el_session_free(u);
    el_batch_free(b);
    el_session_free(s);
    el_session_free(t);
    el_model_close(m);
}

// el_session_clock_layers: a step of the session's own engine writes cap
// values at most (the clock before the first layer, after each layer, at the
// end), in order; a shared batch does not write it; NULL stops it.
static void test_layer_clock(void **st) {
    (void)st;
    el_error err;
    el_model *m;
    assert_int_equal(el_model_open(tu_model_path("aidreams260K.bin"), NULL, &m, &err), EL_OK);
    el_pool *pool = el_pool_new(2);
    el_session *s;
    assert_int_equal(el_session_new(m, NULL, pool, &s, &err), EL_OK);
    const int L = m->hp.n_layers, toks[3] = {1, 368, 430};
    assert_true(L >= 2 && L + 2 < 64);
    double t[64];
    float logits[VOCAB];
    for (int i = 0; i < 64; i++) t[i] = -1;
    el_session_clock_layers(s, t, L + 2);
    double before = el_time_s();
    assert_int_equal(el_session_forward(s, toks, 3, 0, logits, 0, &err), EL_OK);
    double after = el_time_s();
    assert_true(t[0] >= before);
    for (int i = 1; i < L + 2; i++) assert_true(t[i] >= t[i - 1]);
    assert_true(t[L + 1] <= after);
    for (int i = L + 2; i < 64; i++) assert_true(t[i] == -1);
    // a short array: only its cap values, in the hidden-state path too
    float x[64 * 2];
    assert_true(m->hp.dim <= 64);
    assert_int_equal(el_session_embed(s, toks, 2, x, &err), EL_OK);
    for (int i = 0; i < 64; i++) t[i] = -1;
    el_session_clock_layers(s, t, 2);
    assert_int_equal(el_session_layers(s, x, 2, 3, &err), EL_OK);
    assert_true(t[0] > 0 && t[1] >= t[0]);
    for (int i = 2; i < 64; i++) assert_true(t[i] == -1);
    // a shared batch with the session in it writes nothing
    el_batch *b;
    assert_int_equal(el_batch_new(m, 4, pool, &b, &err), EL_OK);
    for (int i = 0; i < 64; i++) t[i] = -1;
    el_session_clock_layers(s, t, L + 2);
    el_batch_req rq = {.s = s, .pos = 5, .n = 1, .tokens = toks, .logits_rows = 1, .logits = logits};
    assert_int_equal(el_batch_run(b, 1, &rq, &err), EL_OK);
    for (int i = 0; i < 64; i++) assert_true(t[i] == -1);
    el_batch_free(b);
    // stopped: the next step writes nothing
    for (int i = 0; i < 64; i++) t[i] = -1;
    el_session_clock_layers(s, NULL, 0);
    assert_int_equal(el_session_forward(s, toks + 2, 1, 6, logits, 0, &err), EL_OK);
    for (int i = 0; i < 64; i++) assert_true(t[i] == -1);
    el_session_free(s);
    el_pool_free(pool);
    el_model_close(m);
}

// el_batch_plan: short requests whole, long ones chunked within a quarter of
// the budget at least, and nobody waits more than a few steps.
static void test_batch_plan(void **st) {
    (void)st;
    int want[40], take[40], cursor = 0;
    // 3 decoders and a long prefill, budget 16: decoders whole, prefill the rest
    int w1[4] = {1, 100, 1, 1};
    assert_int_equal(el_batch_plan(4, w1, 16, 1, &cursor, take), 16);
    assert_int_equal(take[0], 1);
    assert_int_equal(take[1], 13);
    assert_int_equal(take[2] + take[3], 2);
    // 40 decoders and two prefills, budget 16: 12 decoders a step and 4 rows of
    // prefill; every decoder is served within ceil(40 / 12) steps
    int served[40] = {0}, prefill_rows = 0;
    cursor = 0;
    for (int i = 0; i < 40; i++) want[i] = i == 7 || i == 30 ? 50 : 1;
    for (int step = 0; step < 4; step++) {
        assert_int_equal(el_batch_plan(40, want, 16, 1, &cursor, take), 16);
        for (int i = 0; i < 40; i++) {
            if (want[i] == 1) served[i] += take[i];
            else prefill_rows += take[i];
        }
    }
    for (int i = 0; i < 40; i++)
        if (want[i] == 1) assert_true(served[i] >= 1);
    assert_int_equal(prefill_rows, 16);
    // nothing waiting, or a budget that fits everything
    int w2[3] = {0, 2, 3};
    assert_int_equal(el_batch_plan(3, w2, 64, 1, &cursor, take), 5);
    assert_int_equal(take[0], 0);
    assert_int_equal(take[1], 2);
    assert_int_equal(take[2], 3);
    // a "short" request bigger than a step leaves room for is chunked, not starved
    int w4[2] = {1, 12};
    cursor = 0;
    assert_int_equal(el_batch_plan(2, w4, 8, 16, &cursor, take), 8);
    assert_int_equal(take[0], 1);
    assert_int_equal(take[1], 7);
    // verification rows (short_rows 9) are kept whole
    int w3[3] = {9, 9, 40};
    assert_int_equal(el_batch_plan(3, w3, 24, 9, &cursor, take), 24);
    assert_int_equal(take[0] + take[1], 18);
    assert_int_equal(take[2], 6);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_equals_alone), cmocka_unit_test(test_batch_tails),
        cmocka_unit_test(test_kv_types),           cmocka_unit_test(test_kv_blocks), cmocka_unit_test(test_long_prompts), cmocka_unit_test(test_kv_prefault),
        cmocka_unit_test(test_batch_rejects_bad_rows), cmocka_unit_test(test_batch_plan),
        cmocka_unit_test(test_layer_clock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
