// Speculative decoding: the cost model, the acceptance step, and the
// distribution of what the speculative sampler generates against the plain
// sampler's, by a chi-square test that a wrong acceptance rule must fail.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/spec.h"
#include "edgellm/tokenize.h"
#include "testutil.h"

static void test_expected_and_best_k(void **state) {
    (void)state;
    assert_float_equal(el_spec_expected_tokens(0.5, 3), 1.875, 1e-12);  // 1 + .5 + .25 + .125
    assert_float_equal(el_spec_expected_tokens(1.0, 4), 5.0, 1e-12);
    assert_float_equal(el_spec_expected_tokens(0.0, 4), 1.0, 1e-12);
    // alpha 0.8, 1 ms per draft token, 40 ms per round (a slow link): E(k)/(k + 40) ms
    // is largest at k = 10 (0.09141 tokens/ms; k = 9: 0.09108, k = 11: 0.09130)
    el_spec_cost c = {.alpha = 0.8, .draft_s = 1e-3, .verify_fixed_s = 40e-3, .verify_row_s = 0};
    double tps;
    assert_int_equal(el_spec_best_k(&c, 16, &tps), 10);
    assert_float_equal(tps, 5 * (1 - pow(0.8, 11)) / 50e-3, 1e-9);
    assert_int_equal(el_spec_best_k(&c, 6, NULL), 6);  // capped
    // a fast link and a draft as slow as the target: drafting does not pay, k = 1
    c = (el_spec_cost){.alpha = 0.5, .draft_s = 1e-3, .verify_fixed_s = 1e-3, .verify_row_s = 1e-3};
    assert_int_equal(el_spec_best_k(&c, 8, NULL), 1);
}

// Acceptance of one drafted token: probability min(1, p/q), and a rejection
// draws from max(0, p - q) normalised.
static void test_accept_step(void **state) {
    (void)state;
    el_sampler_params sp = el_sampler_defaults();
    sp.seed = 99;
    el_sampler *s = el_sampler_new(&sp, 3);
    assert_non_null(s);
    float p[3] = {0.5f, 0.5f, 0.0f}, q[3] = {1.0f, 0.0f, 0.0f}, res[3];
    int n = 20000, acc = 0, got[3] = {0};
    for (int i = 0; i < n; i++) {
        int ok, t = el_spec_accept(s, 3, p, q, 0, res, &ok);
        acc += ok;
        got[t]++;
        if (!ok) assert_int_equal(t, 1);  // the residual is all on token 1
    }
    // accepted with probability 0.5: within 4 standard deviations (0.0035 each)
    assert_true(fabs((double)acc / n - 0.5) < 0.014);
    assert_int_equal(got[2], 0);
    // p >= q at the drafted token: always accepted
    float p2[3] = {0.2f, 0.7f, 0.1f}, q2[3] = {0.3f, 0.6f, 0.1f};
    for (int i = 0; i < 1000; i++) {
        int ok;
        assert_int_equal(el_spec_accept(s, 3, p2, q2, 1, res, &ok), 1);
        assert_int_equal(ok, 1);
    }
    // greedy: one-hot p and q that disagree: rejected, the target's token
    float p3[3] = {0, 0, 1}, q3[3] = {1, 0, 0};
    int ok;
    assert_int_equal(el_spec_accept(s, 3, p3, q3, 0, res, &ok), 2);
    assert_int_equal(ok, 0);
    el_sampler_free(s);
}

// Rewinding the sampler's history gives the distribution of a sampler that
// never saw the rewound tokens (the repetition penalty sees the same window).
static void test_rewind(void **state) {
    (void)state;
    el_sampler_params sp = el_sampler_defaults();
    sp.repeat_penalty = 1.5f;
    sp.repeat_last_n = 4;
    sp.top_k = 0, sp.top_p = 1, sp.min_p = 0;
    el_sampler *a = el_sampler_new(&sp, 8), *b = el_sampler_new(&sp, 8);
    int seq[] = {1, 2, 3, 4, 5, 6};
    for (int i = 0; i < 6; i++) el_sampler_accept(a, seq[i]);
    for (int i = 0; i < 10; i++) el_sampler_accept(a, 7);  // a drafted run, rejected
    el_sampler_rewind(a, 10);
    for (int i = 0; i < 6; i++) el_sampler_accept(b, seq[i]);
    float la[8], lb[8], da[8], db[8];
    for (int i = 0; i < 8; i++) la[i] = lb[i] = 0.3f * (float)i - 1.0f;
    el_sampler_dist(a, la, da);
    el_sampler_dist(b, lb, db);
    assert_memory_equal(da, db, sizeof da);
    // the window (3, 4, 5, 6) is penalised, token 2 and 7 are not: against a sampler with no history
    el_sampler *c = el_sampler_new(&sp, 8);
    float lc[8], dc[8];
    for (int i = 0; i < 8; i++) lc[i] = 0.3f * (float)i - 1.0f;
    el_sampler_dist(c, lc, dc);
    // (odds against an unpenalised neighbour: renormalising moves every probability)
    assert_true(da[6] / da[7] < dc[6] / dc[7] && da[3] / da[2] < dc[3] / dc[2]);
    assert_float_equal(da[2] / da[1], dc[2] / dc[1], 1e-5);  // 1 and 2 left the window
    el_sampler_free(a), el_sampler_free(b), el_sampler_free(c);
}

// ---------------------------------------------------------------- chi-square

// Regularised upper incomplete gamma Q(a, x): a series below a + 1, a
// continued fraction (modified Lentz) above.
static double gamma_q(double a, double x) {
    if (x <= 0) return 1;
    double lg = lgamma(a);
    if (x < a + 1) {
        double term = 1 / a, sum = term;
        for (int n = 1; n < 10000; n++) {
            term *= x / (a + n);
            sum += term;
            if (term < sum * 1e-15) break;
        }
        return 1 - sum * exp(-x + a * log(x) - lg);
    }
    double b = x + 1 - a, c = 1e300, d = 1 / b, h = d;
    for (int i = 1; i < 10000; i++) {
        double an = -i * (i - a);
        b += 2;
        d = an * d + b;
        if (fabs(d) < 1e-300) d = 1e-300;
        c = b + an / c;
        if (fabs(c) < 1e-300) c = 1e-300;
        d = 1 / d;
        double del = d * c;
        h *= del;
        if (fabs(del - 1) < 1e-15) break;
    }
    return exp(-x + a * log(x) - lg) * h;
}

// The two-sample chi-square test of homogeneity over the categories (pooling
// those with fewer than 10 samples in all into one): the p-value.
static double chi2_two_sample(const int *a, const int *b, int n_cat, int na, int nb) {
    double stat = 0, pool_a = 0, pool_b = 0;
    int df = -1;
    for (int i = 0; i <= n_cat; i++) {
        double oa, ob;
        if (i < n_cat) {
            if (a[i] + b[i] < 10) {
                pool_a += a[i], pool_b += b[i];
                continue;
            }
            oa = a[i], ob = b[i];
        } else {
            if (pool_a + pool_b == 0) break;
            oa = pool_a, ob = pool_b;
        }
        double tot = oa + ob, ea = tot * na / (na + nb), eb = tot * nb / (na + nb);
        stat += (oa - ea) * (oa - ea) / ea + (ob - eb) * (ob - eb) / eb;
        df++;
    }
    return df > 0 ? gamma_q(df / 2.0, stat / 2.0) : 1.0;
}

static void test_gamma_q(void **state) {
    (void)state;
    // chi-square survival: df 1 at 3.841 is 0.05; df 10 at 23.209 is 0.01; df 4 at 4 is exp(-2)(1 + 2)
    assert_float_equal(gamma_q(0.5, 3.841459 / 2), 0.05, 1e-6);
    assert_float_equal(gamma_q(5, 23.209251 / 2), 0.01, 1e-6);
    assert_float_equal(gamma_q(2, 2), 3 * exp(-2), 1e-12);
}

// Sequences of the first 3 generated tokens, as one category each.
#ifdef EL_SLOW_TESTS
#define N_SAMPLES 300  // ASan+UBSan at -O0, or qemu: 50-100x slower; the same test on fewer samples
#else
#define N_SAMPLES 2000
#endif
#define SEQ 3

typedef struct {
    int tok[SEQ];
    int count[2];
} seq_cat;

static int seq_index(seq_cat *cats, int *n_cat, const int *t) {
    for (int i = 0; i < *n_cat; i++)
        if (!memcmp(cats[i].tok, t, sizeof cats[i].tok)) return i;
    memcpy(cats[*n_cat].tok, t, sizeof cats[0].tok);
    cats[*n_cat].count[0] = cats[*n_cat].count[1] = 0;
    return (*n_cat)++;
}

static int accept_every_draft(el_sampler *target, int n_vocab, const float *p, const float *q, int drafted,
                              float *residual, int *accepted) {
    (void)target, (void)n_vocab, (void)p, (void)q, (void)residual;
    *accepted = 1;
    return drafted;
}

// Samples with the plain sampler (column 0) and the speculative one (column
// 1) and returns the test's p-value.
static double sample_and_test(el_model *m, el_pipeline *pipe, el_drafter *d, const int *prompt, int n_prompt,
                              const el_sampler_params *sp, int broken, double *acceptance) {
    seq_cat *cats = calloc(2 * N_SAMPLES, sizeof *cats);
    float *logits = malloc((size_t)m->hp.vocab * sizeof(float));
    int n_cat = 0, t[SEQ];
    el_error err;
    uint64_t drafted = 0, accepted = 0;
    // plain: the prompt's logits once, then one token at a time
    float *first = malloc((size_t)m->hp.vocab * sizeof(float));
    assert_int_equal(el_pipeline_forward(pipe, prompt, n_prompt, 0, first, 0, &err), EL_OK);
    for (int i = 0; i < N_SAMPLES; i++) {
        el_sampler_params p = *sp;
        p.seed = 1000 + (uint64_t)i;
        el_sampler *s = el_sampler_new(&p, m->hp.vocab);
        for (int j = 0; j < n_prompt; j++) el_sampler_accept(s, prompt[j]);
        memcpy(logits, first, (size_t)m->hp.vocab * sizeof(float));
        for (int j = 0; j < SEQ; j++) {
            t[j] = el_sampler_sample(s, logits);
            el_sampler_accept(s, t[j]);
            if (j + 1 < SEQ) assert_int_equal(el_pipeline_forward(pipe, &t[j], 1, n_prompt + j, logits, 0, &err), EL_OK);
        }
        cats[seq_index(cats, &n_cat, t)].count[0]++;
        el_sampler_free(s);
    }
    // speculative: one generator, the prompt given again for every sample (its positions are
    // kept, so only the rounds run); its samplers' streams go on from sample to sample
    el_spec_opts o = {.k = 2, .sp = *sp, .accept = broken ? accept_every_draft : NULL};
    o.sp.seed = 500000;
    el_spec *s;
    assert_int_equal(el_spec_new(pipe, m, d, &o, &s, &err), EL_OK);
    for (int i = 0; i < N_SAMPLES; i++) {  // rounds until 3 tokens
        assert_int_equal(el_spec_prefill(s, prompt, n_prompt, &err), EL_OK);
        int have = 0;
        while (have < SEQ) {
            int out[EL_SPEC_MAX_K + 1], n;
            assert_int_equal(el_spec_round(s, SEQ - have, out, &n, &err), EL_OK);
            for (int j = 0; j < n && have < SEQ; j++) t[have++] = out[j];
        }
        cats[seq_index(cats, &n_cat, t)].count[1]++;
    }
    drafted = el_spec_get_stats(s)->drafted;
    accepted = el_spec_get_stats(s)->accepted;
    el_spec_free(s);
    free(first);
    int *a = malloc((size_t)n_cat * sizeof(int)), *b = malloc((size_t)n_cat * sizeof(int));
    for (int i = 0; i < n_cat; i++) a[i] = cats[i].count[0], b[i] = cats[i].count[1];
    double pv = chi2_two_sample(a, b, n_cat, N_SAMPLES, N_SAMPLES);
    *acceptance = drafted ? (double)accepted / drafted : 0;
    free(a), free(b), free(cats), free(logits);
    return pv;
}

static void test_distribution(void **state) {
    (void)state;
    el_error err;
    el_model *m;
    el_tokenizer *tok;
    assert_int_equal(el_model_open(tu_model_path("aidreams260K.bin"), NULL, &m, &err), EL_OK);
    assert_int_equal(el_model_tokenizer(m, tu_model_path("tok512.bin"), &tok, &err), EL_OK);
    int *prompt, n_prompt;
    assert_int_equal(el_tokenizer_encode(tok, "Once upon a time", 16, 1, &prompt, &n_prompt, &err), EL_OK);
    el_pool *pool = el_pool_new(1);
    el_session_opts so = {.ctx = 64};
    el_pipeline *pipe;
    assert_int_equal(el_pipeline_new(m, &so, pool, NULL, &pipe, &err), EL_OK);
    // the draft: the model's first 3 layers and its head (self-drafting),
    // whose distribution is far enough from the model's that accepting every
    // draft shows (a quantized copy would be too close to tell apart)
    el_drafter *d;
    assert_int_equal(el_drafter_new(m, 3, 64, pool, &d, &err), EL_OK);
    el_sampler_params sp = el_sampler_defaults();
    sp.temp = 0.8f, sp.top_p = 0.95f, sp.top_k = 0, sp.min_p = 0;
    double acc_good, acc_bad;
    double p_good = sample_and_test(m, pipe, d, prompt, n_prompt, &sp, 0, &acc_good);
    double p_bad = sample_and_test(m, pipe, d, prompt, n_prompt, &sp, 1, &acc_bad);
    printf("speculative sampler: p = %.4f (acceptance %.3f); accepting every draft: p = %.3g\n", p_good, acc_good, p_bad);
    assert_true(p_good > 0.01);
    assert_true(p_bad < 0.01);
    assert_true(acc_good > 0.05 && acc_good < 0.95);  // drafts both accepted and rejected: both paths ran
    el_drafter_free(d);
    el_pipeline_free(pipe);
    el_pool_free(pool);
    free(prompt);
    el_tokenizer_free(tok);
    el_model_close(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expected_and_best_k), cmocka_unit_test(test_accept_step),
        cmocka_unit_test(test_rewind),             cmocka_unit_test(test_gamma_q),
        cmocka_unit_test(test_distribution),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
