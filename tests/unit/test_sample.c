// Unit tests for src/sample: greedy, filters, penalties, reproducibility and
// that sampling follows the softmax distribution.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/sample.h"
#include "testutil.h"

static void test_argmax(void **st) {
    (void)st;
    float x[5] = {1, 3, 3, -2, 0};
    assert_int_equal(el_argmax(x, 5), 1);  // first of the ties
    float y[1] = {-5};
    assert_int_equal(el_argmax(y, 1), 0);
}

static void test_greedy_and_checks(void **st) {
    (void)st;
    el_sampler_params p = el_sampler_defaults();
    p.temp = 0;
    el_sampler *s = el_sampler_new(&p, 4);
    float l[4] = {0.1f, 2.0f, 1.9f, -1};
    assert_int_equal(el_sampler_sample(s, l), 1);
    el_sampler_free(s);
    el_error e;
    p.top_p = 0;
    assert_int_equal(el_sampler_check(&p, &e), EL_ERR_ARG);
    assert_non_null(strstr(e.msg, "--top-p 0"));
    p = el_sampler_defaults();
    p.temp = -1;
    assert_int_equal(el_sampler_check(&p, &e), EL_ERR_ARG);
    p = el_sampler_defaults();
    p.min_p = 1;
    assert_int_equal(el_sampler_check(&p, &e), EL_ERR_ARG);
    p = el_sampler_defaults();
    assert_int_equal(el_sampler_check(&p, &e), EL_OK);
    // the documented defaults of run, chat and serve (docs/cli.md)
    assert_true(p.temp == 0.8f && p.top_k == 40 && p.top_p == 0.95f && p.min_p == 0.05f && p.repeat_penalty == 1.0f &&
                p.repeat_last_n == 64);
}

// Repetition penalty: a recent token with a positive logit is divided, a
// negative one multiplied, each once even if it appeared several times.
static void test_repeat_penalty(void **st) {
    (void)st;
    el_sampler_params p = el_sampler_defaults();
    p.temp = 0;
    p.repeat_penalty = 2.0f;
    p.repeat_last_n = 3;
    el_sampler *s = el_sampler_new(&p, 4);
    el_sampler_accept(s, 0);  // falls out of the window of 3
    el_sampler_accept(s, 1);
    el_sampler_accept(s, 1);
    el_sampler_accept(s, 3);
    float l[4] = {5.0f, 3.0f, 2.0f, -1.0f};
    int t = el_sampler_sample(s, l);
    assert_true(l[0] == 5.0f);   // outside the window
    assert_true(l[1] == 1.5f);   // divided once
    assert_true(l[3] == -2.0f);  // multiplied
    assert_int_equal(t, 0);
    el_sampler_free(s);
}

// Draw many samples: frequencies follow softmax(l / T) within statistical error,
// and filters remove exactly the tokens they should.
static void test_distribution_and_filters(void **st) {
    (void)st;
    const float logits[4] = {2.0f, 1.0f, 0.0f, -1.0f};
    double z = 0, prob[4];
    for (int i = 0; i < 4; i++) z += exp(logits[i] / 0.5);
    for (int i = 0; i < 4; i++) prob[i] = exp(logits[i] / 0.5) / z;  // .8668 .1173 .0159 .0021
    el_sampler_params p = el_sampler_defaults();
    p.temp = 0.5f;
    p.seed = 1234;
    p.top_k = 0, p.top_p = 1, p.min_p = 0;  // temperature alone
    el_sampler *s = el_sampler_new(&p, 4);
    int counts[4] = {0}, N = 100000;
    for (int k = 0; k < N; k++) {
        float l[4];
        memcpy(l, logits, sizeof l);
        counts[el_sampler_sample(s, l)]++;
    }
    for (int i = 0; i < 4; i++) {
        double sd = sqrt(N * prob[i] * (1 - prob[i]));
        assert_true(fabs(counts[i] - N * prob[i]) < 5 * sd + 1);
    }
    el_sampler_free(s);

    // top-k 2: only tokens 0 and 1; top-p 0.9: 0 and 1 (0.8668 < 0.9 <= 0.9841);
    // min-p 0.05: drops tokens below 0.05 x 0.8668 (tokens 2 and 3)
    struct { int top_k; float top_p, min_p; int allowed; } cases[] = {
        {2, 1.0f, 0.0f, 2}, {0, 0.9f, 0.0f, 2}, {0, 1.0f, 0.05f, 2}, {1, 1.0f, 0.0f, 1}, {0, 0.5f, 0.0f, 1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        p.top_k = cases[c].top_k;
        p.top_p = cases[c].top_p;
        p.min_p = cases[c].min_p;
        s = el_sampler_new(&p, 4);
        int seen[4] = {0};
        for (int k = 0; k < 20000; k++) {
            float l[4];
            memcpy(l, logits, sizeof l);
            seen[el_sampler_sample(s, l)] = 1;
        }
        for (int i = 0; i < 4; i++) assert_int_equal(seen[i], i < cases[c].allowed);
        el_sampler_free(s);
    }
}

// Logits that make the probabilities NaN (a NaN, or every logit -inf) give
// some token of the vocabulary under every filter, not a read outside it.
static void test_nan_logits(void **st) {
    (void)st;
    struct { int top_k; float top_p, min_p; } cases[] = {{0, 1, 0}, {0, 1, 0.1f}, {2, 0.9f, 0.1f}, {0, 0.5f, 0.05f}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        el_sampler_params p = el_sampler_defaults();
        p.top_k = cases[c].top_k, p.top_p = cases[c].top_p, p.min_p = cases[c].min_p;
        el_sampler *s4 = el_sampler_new(&p, 4), *s1 = el_sampler_new(&p, 1);
        float l[4] = {NAN, 1, 2, 3}, one[1] = {-INFINITY};
        int t = el_sampler_sample(s4, l);
        assert_true(t >= 0 && t < 4);
        assert_int_equal(el_sampler_sample(s1, one), 0);
        el_sampler_free(s4);
        el_sampler_free(s1);
    }
}

static void test_seed_reproducible(void **st) {
    (void)st;
    el_sampler_params p = el_sampler_defaults();
    p.seed = 99;
    el_sampler *a = el_sampler_new(&p, 50), *b = el_sampler_new(&p, 50);
    p.seed = 100;
    el_sampler *c = el_sampler_new(&p, 50);
    int same_ab = 1, same_ac = 1;
    uint64_t r = 3;
    for (int k = 0; k < 200; k++) {
        float la[50], lb[50], lc[50];
        for (int i = 0; i < 50; i++) la[i] = lb[i] = lc[i] = tu_randf(&r) * 3;
        int ta = el_sampler_sample(a, la), tb = el_sampler_sample(b, lb), tc = el_sampler_sample(c, lc);
        same_ab &= ta == tb;
        same_ac &= ta == tc;
    }
    assert_true(same_ab);
    assert_false(same_ac);
    el_sampler_free(a);
    el_sampler_free(b);
    el_sampler_free(c);
}

// Reference for the filters: the whole vocabulary sorted with qsort (the
// sampler sorts only the head it reads), then top-k, top-p, min-p and the
// draw as documented, with the same random stream.
static const float *ref_prob;
static int ref_cmp(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    if (ref_prob[x] != ref_prob[y]) return ref_prob[x] > ref_prob[y] ? -1 : 1;
    return x - y;
}

static int ref_sample(const el_sampler_params *p, uint64_t *rng, const float *logits, int n, float *prob, int *idx) {
    float max = logits[el_argmax(logits, n)];
    double sum = 0;
    for (int i = 0; i < n; i++) sum += prob[i] = expf((logits[i] - max) / p->temp);
    for (int i = 0; i < n; i++) prob[i] = (float)(prob[i] / sum);
    for (int i = 0; i < n; i++) idx[i] = i;
    int m = n;
    if (p->top_k > 0 || p->top_p < 1.0f) {
        ref_prob = prob;
        qsort(idx, (size_t)n, sizeof(int), ref_cmp);
        if (p->top_k > 0 && p->top_k < m) m = p->top_k;
        double cum = 0;
        for (int i = 0; i < m && p->top_p < 1.0f; i++)
            if ((cum += prob[idx[i]]) >= p->top_p) { m = i + 1; break; }
    }
    if (p->min_p > 0) {
        float floor_p = p->min_p * prob[el_argmax(prob, n)];
        int k = 0;
        for (int i = 0; i < m; i++)
            if (prob[idx[i]] >= floor_p) idx[k++] = idx[i];
        m = k;
    }
    double total = 0, cum = 0;
    for (int i = 0; i < m; i++) total += prob[idx[i]];
    double r = el_rng_uniform(rng) * total;
    for (int i = 0; i < m; i++)
        if (r < (cum += prob[idx[i]])) return idx[i];
    return idx[m - 1];
}

// The sampler draws exactly the reference's tokens for every filter setting,
// on logits with ties and with long flat tails (where the top-p floor bites).
static void test_filters_match_full_sort(void **st) {
    (void)st;
    enum { N = 3000 };
    static float logits[N], work[N], prob[N];
    static int idx[N];
    struct { int top_k; float top_p, min_p, temp; } cases[] = {
        {0, 0.9f, 0, 1}, {0, 0.5f, 0, 0.7f}, {0, 0.999999f, 0, 1.5f}, {40, 1, 0, 1}, {40, 0.95f, 0, 0.8f},
        {1, 1, 0, 1}, {5, 0.3f, 0.05f, 1}, {N, 1, 0, 1}, {N + 7, 0.9f, 0, 1}, {0, 0.9f, 0.02f, 1.2f},
        {2999, 0.99f, 0, 3}, {0, 1, 0.1f, 1},
    };
    uint64_t r = 11;
    int draws = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        el_sampler_params p = el_sampler_defaults();
        p.top_k = cases[c].top_k;
        p.top_p = cases[c].top_p;
        p.min_p = cases[c].min_p;
        p.temp = cases[c].temp;
        p.seed = 77 + c;
        el_sampler *s = el_sampler_new(&p, N);
        assert_non_null(s);
        uint64_t rng = p.seed;
        for (int k = 0; k < 40; k++) {
            for (int i = 0; i < N; i++) {
                float u = tu_randf(&r);
                // a few strong tokens, a flat tail, and exact ties (rounded values)
                logits[i] = i % 97 == k % 97 ? 6 + 2 * u : k % 2 ? roundf(u * 4) : u * 2 - 8;
            }
            memcpy(work, logits, sizeof logits);
            int want = ref_sample(&p, &rng, logits, N, prob, idx), got = el_sampler_sample(s, work);
            if (want != got) fail_msg("case %zu draw %d: sampler %d, full sort %d", c, k, got, want);
            draws++;
        }
        el_sampler_free(s);
    }
    assert_int_equal(draws, 480);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_argmax),          cmocka_unit_test(test_greedy_and_checks),
        cmocka_unit_test(test_repeat_penalty),  cmocka_unit_test(test_distribution_and_filters),
        cmocka_unit_test(test_seed_reproducible), cmocka_unit_test(test_filters_match_full_sort),
        cmocka_unit_test(test_nan_logits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
