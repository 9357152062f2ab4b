// Unit tests for batched decode (el_batch_step): several sessions, each with
// its own adapter (or none), stepped together give the logits each gets when
// run alone through el_session_forward.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static void test_batch_equals_alone(void **st) {
    (void)st;
    el_error err;
    el_model *m;
    assert_int_equal(el_model_open(tu_model_path("aidreams260K.bin"), NULL, &m, &err), EL_OK);
    el_pool *pool = el_pool_new(2);
    el_lora *ad[2] = {random_adapter(m, 11), random_adapter(m, 23)};
    el_lora_set sets[2] = {{1, {ad[0]}, {1.0f}}, {1, {ad[1]}, {0.5f}}};
    // rows in an order that interleaves adapters: A, none, B, A, B
    const el_lora_set *row_set[NSEQ] = {&sets[0], NULL, &sets[1], &sets[0], &sets[1]};
    // prompts of different lengths, so rows sit at different positions
    static const int prompts[NSEQ][5] = {{1, 368, 430}, {1, 281}, {1, 269, 435, 447, 300}, {1, 368, 430}, {1, 50, 60, 70}};
    static const int plen[NSEQ] = {3, 2, 5, 3, 4};

    el_session *bs[NSEQ], *ref[NSEQ];
    int tok[NSEQ], pos[NSEQ];
    float *logits = malloc((size_t)NSEQ * VOCAB * sizeof(float));
    float *ref_logits = malloc((size_t)NSEQ * VOCAB * sizeof(float));
    for (int i = 0; i < NSEQ; i++) {
        assert_int_equal(el_session_new(m, NULL, pool, &bs[i], &err), EL_OK);
        assert_int_equal(el_session_new(m, NULL, pool, &ref[i], &err), EL_OK);
        el_session_set_lora(bs[i], row_set[i]);
        el_session_set_lora(ref[i], row_set[i]);
        // prefill per session (the server's path for a newly joined request)
        assert_int_equal(el_session_forward(bs[i], prompts[i], plen[i], 0, logits + i * VOCAB, 0, &err), EL_OK);
        assert_int_equal(el_session_forward(ref[i], prompts[i], plen[i], 0, ref_logits + i * VOCAB, 0, &err), EL_OK);
        pos[i] = plen[i];
        tok[i] = (100 + 37 * (i % 3)) % VOCAB;  // rows 0 and 3 start alike
    }
    el_batch *b;
    assert_int_equal(el_batch_new(m, 8, pool, &b, &err), EL_OK);
    float worst = 0;
    for (int step = 0; step < STEPS; step++) {
        assert_int_equal(el_batch_step(b, NSEQ, bs, tok, pos, row_set, logits, &err), EL_OK);
        for (int i = 0; i < NSEQ; i++) {
            assert_int_equal(el_session_forward(ref[i], &tok[i], 1, pos[i], ref_logits + i * VOCAB, 0, &err), EL_OK);
            worst = fmaxf(worst, max_abs_diff(logits + i * VOCAB, ref_logits + i * VOCAB, VOCAB));
        }
        // the next input of each row is its own greedy choice
        for (int i = 0; i < NSEQ; i++) {
            int best = 0;
            for (int v = 1; v < VOCAB; v++)
                if (ref_logits[i * VOCAB + v] > ref_logits[i * VOCAB + best]) best = v;
            tok[i] = best;
            pos[i]++;
        }
    }
    assert_true(worst <= 1e-5f);

    // Rows 0 and 3 share prompt and adapter, and rows 0 and 1 differ only in
    // adapter and prompt: the adapters must really change outputs, or the
    // comparison above proves nothing about routing.
    assert_true(max_abs_diff(logits + 0 * VOCAB, logits + 3 * VOCAB, VOCAB) <= 1e-5f);
    el_session *plain;
    assert_int_equal(el_session_new(m, NULL, pool, &plain, &err), EL_OK);
    float *base = malloc(VOCAB * sizeof(float));
    assert_int_equal(el_session_forward(plain, prompts[0], plen[0], 0, base, 0, &err), EL_OK);
    float *adapted = malloc(VOCAB * sizeof(float));
    el_session *with_a;
    assert_int_equal(el_session_new(m, NULL, pool, &with_a, &err), EL_OK);
    el_session_set_lora(with_a, &sets[0]);
    assert_int_equal(el_session_forward(with_a, prompts[0], plen[0], 0, adapted, 0, &err), EL_OK);
    assert_true(max_abs_diff(base, adapted, VOCAB) > 1e-2f);

    // a row with the wrong adapter gives different logits (routing matters)
    const el_lora_set *swapped[NSEQ] = {&sets[1], NULL, &sets[1], &sets[0], &sets[1]};
    el_session *one[1] = {plain};
    int t1[1] = {tok[0]}, p1[1] = {plen[0]};
    float *l_b = malloc(VOCAB * sizeof(float));
    assert_int_equal(el_batch_step(b, 1, one, t1, p1, &swapped[0], l_b, &err), EL_OK);
    assert_int_equal(el_batch_step(b, 1, one, t1, p1, &row_set[0], logits, &err), EL_OK);
    assert_true(max_abs_diff(l_b, logits, VOCAB) > 1e-3f);

    free(l_b);
    free(base);
    free(adapted);
    el_session_free(plain);
    el_session_free(with_a);
    el_batch_free(b);
    for (int i = 0; i < NSEQ; i++) {
        el_session_free(bs[i]);
        el_session_free(ref[i]);
    }
    free(logits);
    free(ref_logits);
    el_lora_free(ad[0]);
    el_lora_free(ad[1]);
    el_pool_free(pool);
    el_model_close(m);
}

static void test_batch_rejects_bad_rows(void **st) {
    (void)st;
    el_error err;
    el_model *m;
    assert_int_equal(el_model_open(tu_model_path("aidreams260K.bin"), NULL, &m, &err), EL_OK);
    el_session *s;
    el_session_opts so = {.ctx = 16};
    assert_int_equal(el_session_new(m, &so, NULL, &s, &err), EL_OK);
    el_batch *b;
    assert_int_equal(el_batch_new(m, 0, NULL, &b, &err), EL_ERR_RANGE);
    assert_int_equal(el_batch_new(m, 2, NULL, &b, &err), EL_OK);
    float logits[2 * VOCAB];
    el_session *rows[3] = {s, s, s};
    int tok[3] = {1, 2, 3}, pos[3] = {0, 1, 2};
    assert_int_equal(el_batch_step(b, 3, rows, tok, pos, NULL, logits, &err), EL_ERR_RANGE);
    assert_non_null(strstr(err.msg, "3 rows"));
    int far[1] = {16};
    assert_int_equal(el_batch_step(b, 1, rows, tok, far, NULL, logits, &err), EL_ERR_RANGE);
    assert_non_null(strstr(err.msg, "position 16"));
    int bad_tok[1] = {VOCAB};
    assert_int_equal(el_batch_step(b, 1, rows, bad_tok, pos, NULL, logits, &err), EL_ERR_RANGE);
    assert_non_null(strstr(err.msg, "token id 512"));
    // a session of a stage (not the whole model) is refused
    el_session *part;
    el_session_opts po = {.layer_begin = 0, .layer_end = 2};
    assert_int_equal(el_session_new(m, &po, NULL, &part, &err), EL_OK);
    el_session *prow[1] = {part};
    assert_int_equal(el_batch_step(b, 1, prow, tok, pos, NULL, logits, &err), EL_ERR_ARG);
    el_session_free(part);
    el_batch_free(b);
    el_session_free(s);
    el_model_close(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_equals_alone),
        cmocka_unit_test(test_batch_rejects_bad_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
