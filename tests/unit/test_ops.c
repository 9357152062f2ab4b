// Unit tests for the SIMD row-wise ops (src/kernels/ops_avx512.c on x86-64,
// ops_neon.c on AArch64) against the scalar versions built on libm's expf:
// the exponential within 2 ulp over its whole range, SwiGLU and softmax
// within float rounding, tails included.
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/kernels.h"
#include "kernels/ops_simd.h"
#include "testutil.h"

// The SIMD level of this architecture's row-wise ops, under one set of names.
#if defined(__x86_64__)
static int have_simd(void) { return el_cpu_isa() == EL_ISA_AVX512; }
#define simd_exp el_exp_avx512
#define simd_swiglu el_swiglu_avx512
#define simd_softmax el_softmax_avx512
#define simd_attn_scores el_attn_scores_avx512
#define simd_attn_mix el_attn_mix_avx512
#define simd_rmsnorm el_rmsnorm_avx512
#define simd_rope_rotate el_rope_rotate_avx512
#define HD_STEP 16  // head sizes the kernels take: multiples of this
#elif defined(__aarch64__)
static int have_simd(void) { return el_cpu_isa() >= EL_ISA_NEON; }
#define simd_exp el_exp_neon
#define simd_swiglu el_swiglu_neon
#define simd_softmax el_softmax_neon
#define simd_attn_scores el_attn_scores_neon
#define simd_attn_mix el_attn_mix_neon
#define simd_rmsnorm el_rmsnorm_scalar  // (no NEON versions: the scalar ones run)
#define simd_rope_rotate el_rope_rotate_scalar
#define HD_STEP 4
#else
static int have_simd(void) { return 0; }
#define simd_exp expf
#define simd_swiglu el_swiglu_scalar
#define simd_softmax el_softmax_scalar
#define simd_attn_scores el_attn_scores_scalar
#define simd_attn_mix el_attn_mix_scalar
#define simd_rmsnorm el_rmsnorm_scalar
#define simd_rope_rotate el_rope_rotate_scalar
#define HD_STEP 16
#endif

// Distance in units in the last place between two finite floats of one sign.
static int64_t ulps(float a, float b) {
    int32_t ia, ib;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    return llabs((long long)ia - (long long)ib);
}

static void test_exp(void **st) {
    (void)st;
    if (!have_simd()) skip();
    int64_t worst = 0;
    for (float x = -103.0f; x <= 88.5f; x += 0.0137f) {
        float want = expf(x), got = simd_exp(x);
        if (want < 1.2e-38f) {  // subnormal results: absolute error only
            assert_true(fabsf(got - want) <= 2e-45f * 4);
            continue;
        }
        int64_t u = ulps(got, want);
        if (u > worst) worst = u;
    }
    printf("  exp: worst %lld ulp\n", (long long)worst);
    assert_true(worst <= 2);
    assert_true(isinf(simd_exp(89.0f)) && simd_exp(89.0f) > 0);
    assert_true(isinf(simd_exp(INFINITY)));
    assert_true(simd_exp(-INFINITY) == 0.0f);
    assert_true(simd_exp(-200.0f) == 0.0f);
    assert_true(simd_exp(0.0f) == 1.0f);
    assert_true(isnan(simd_exp(NAN)));
}

static void test_swiglu(void **st) {
    (void)st;
    if (!have_simd()) skip();
    uint64_t rng = 5;
    static const int sizes[] = {1, 15, 16, 17, 100, 5632};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        int n = sizes[si];
        float *g = malloc(n * sizeof(float)), *u = malloc(n * sizeof(float));
        float *a = malloc((n + 1) * sizeof(float)), *b = malloc((n + 1) * sizeof(float));
        for (int i = 0; i < n; i++) {
            g[i] = tu_randf(&rng) * (i % 7 == 0 ? 120.0f : 8.0f);  // some far into both saturations
            u[i] = tu_randf(&rng) * 3.0f;
        }
        a[n] = b[n] = 12345.0f;  // the masked tail must not write past n
        simd_swiglu(a, g, u, n);
        el_swiglu_scalar(b, g, u, n);
        for (int i = 0; i < n; i++) {
            float tol = 4e-7f * fabsf(b[i]) + 1e-30f;
            if (fabsf(a[i] - b[i]) > tol) fail_msg("swiglu n=%d i=%d g=%g: %g vs %g", n, i, g[i], a[i], b[i]);
        }
        assert_true(a[n] == 12345.0f);
        free(g), free(u), free(a), free(b);
    }
}

static void test_softmax(void **st) {
    (void)st;
    if (!have_simd()) skip();
    uint64_t rng = 9;
    static const int sizes[] = {1, 2, 15, 16, 33, 128, 1000};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        int n = sizes[si];
        float *a = malloc((n + 1) * sizeof(float)), *b = malloc(n * sizeof(float));
        for (int i = 0; i < n; i++) a[i] = b[i] = tu_randf(&rng) * 20.0f - (i == n / 2 ? 90.0f : 0.0f);
        a[n] = 777.0f;
        simd_softmax(a, n);
        el_softmax_scalar(b, n);
        double sum = 0;
        for (int i = 0; i < n; i++) {
            sum += a[i];
            if (fabsf(a[i] - b[i]) > 2e-6f * b[i] + 1e-37f) fail_msg("softmax n=%d i=%d: %g vs %g", n, i, a[i], b[i]);
        }
        assert_true(fabs(sum - 1.0) < 1e-5);
        assert_true(a[n] == 777.0f);
        free(a), free(b);
    }
    // one -inf (a masked position) gets probability 0
    float x[3] = {1.0f, -INFINITY, 1.0f};
    simd_softmax(x, 3);
    assert_true(x[1] == 0.0f && fabsf(x[0] - 0.5f) < 1e-7f && fabsf(x[2] - 0.5f) < 1e-7f);
}

// Attention over one head: the SIMD scores and mixture equal the scalar ones
// to float rounding, for head sizes 16..256, strides wider than the head and
// position counts with every remainder of 4.
static void test_attention(void **st) {
    (void)st;
    if (!have_simd()) skip();
    uint64_t rng = 21;
    // 16..256 and odd multiples of the step (on AArch64 12 and 52: tails of the 32-wide mixture)
    static const int hds[] = {16, 64, 128, 256, 3 * HD_STEP, 13 * HD_STEP};
    for (size_t hi = 0; hi < 6; hi++)
        for (int n = 1; n <= 49; n += n < 13 ? 3 : n < 16 ? 1 : 9) {  // 1, 4, .., 13..16, 25, 34, 43: every step (16, 4, 1)
            int hd = hds[hi];
            size_t stride = (size_t)hd * 3;  // rows of a KV cache with several heads
            float *k = malloc((size_t)n * stride * sizeof(float)), *q = malloc(hd * sizeof(float));
            float sa[49], sb[49], oa[257], ob[256];
            for (size_t i = 0; i < (size_t)n * stride; i++) k[i] = tu_randf(&rng);
            for (int i = 0; i < hd; i++) q[i] = tu_randf(&rng);
            simd_attn_scores(sa, q, k, stride, n, hd, 0.125f);
            el_attn_scores_scalar(sb, q, k, stride, n, hd, 0.125f);
            for (int p = 0; p < n; p++) {
                double bound = 0;  // rounding bound: a few ulp of the sum of |terms|
                for (int i = 0; i < hd; i++) bound += fabs(q[i] * k[(size_t)p * stride + i]);
                assert_true(fabs(sa[p] - sb[p]) <= 0.125 * bound * 1e-6);
            }
            for (int i = 0; i < hd; i++) oa[i] = ob[i] = 0.5f;  // the mixture accumulates onto out
            oa[hd] = 4242.0f;
            simd_attn_mix(oa, sa, k, stride, n, hd);
            el_attn_mix_scalar(ob, sa, k, stride, n, hd);
            for (int i = 0; i < hd; i++) {
                double bound = 0.5;
                for (int p = 0; p < n; p++) bound += fabs(sa[p] * k[(size_t)p * stride + i]);
                assert_true(fabs(oa[i] - ob[i]) <= bound * 1e-6);
            }
            assert_true(oa[hd] == 4242.0f);
            free(k), free(q);
        }
}

// ---------------------------------------------------------------- causal attention on tiles

// A panel of query rows at consecutive positions against the keys they see,
// at both levels (the tiles with Kᵀ made inside and given), against a
// double-precision loop: several chunks of keys (the online softmax's
// rescaling), head sizes that are and are not multiples of the 32-column
// tile, part blocks of the 12 query rows, sliding windows, and keys that
// start after position 0. Columns past hd and rows past nq stay untouched.
static void test_attn_causal(void **s) {
    (void)s;
    uint64_t rng = 11;
    const struct { int hd, nq, p0, window; } cases[] = {
        {64, 32, 0, 0}, {64, 36, 600, 0}, {64, 36, 100, 0}, {8, 17, 40, 0},
        {76, 1, 250, 0}, {64, 20, 500, 7}, {16, 32, 479, 300}, {64, 31, 0, 3},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int hd = cases[c].hd, nq = cases[c].nq, p0 = cases[c].p0, window = cases[c].window, ld = hd + 3;
        int k0 = window && p0 + 1 > window ? p0 + 1 - window : 0, nk = p0 + nq - k0;
        float *q = tu_randv(&rng, (size_t)nq * ld, 2), *k = tu_randv(&rng, (size_t)nk * hd, 2);
        float *v = tu_randv(&rng, (size_t)nk * hd + 32, 1), *out = malloc(sizeof(float) * (EL_ATTN_PANEL + 1) * ld);
        float lse[2 * (EL_ATTN_PANEL + 1)], *work = malloc(el_attn_causal_work(nk, hd, 0) * sizeof(float));
        float *kt = malloc(sizeof(float) * el_attn_causal_kt_floats(nk, hd));
        el_attn_causal_kt(kt, k, nk, hd);
        double *p = malloc(sizeof(double) * nk);
        for (int level = 0; level < 3; level++) {  // the plain loop, then the tiles where they run (Kᵀ made, given)
            el_isa isa = level ? EL_ISA_BEST : EL_ISA_SCALAR;
            for (int i = 0; i < (EL_ATTN_PANEL + 1) * ld; i++) out[i] = 999.0f;
            for (int i = 0; i < 2 * (EL_ATTN_PANEL + 1); i++) lse[i] = 999.0f;
            const float *kr = level == 2 && el_attn_causal_tiled(isa) ? NULL : k;  // (the rows only where they are read)
            el_attn_causal_isa(out, (size_t)ld, lse, 2, q, (size_t)ld, nq, p0, kr, level == 2 ? kt : NULL, v, k0, nk, hd,
                               window, 0.2f, work, isa);
            for (int t = 0; t < nq; t++) {
                int pos = p0 + t, lo = window && pos + 1 - window > 0 ? pos + 1 - window : 0;
                double mx = -1e300, sum = 0;
                for (int sp = lo; sp <= pos; sp++) {
                    double a = 0;
                    for (int i = 0; i < hd; i++) a += (double)q[(size_t)t * ld + i] * k[(size_t)(sp - k0) * hd + i];
                    p[sp - lo] = 0.2 * a;
                    mx = p[sp - lo] > mx ? p[sp - lo] : mx;
                }
                for (int sp = lo; sp <= pos; sp++) sum += p[sp - lo] = exp(p[sp - lo] - mx);
                for (int j = 0; j < hd; j++) {
                    double want = 0;
                    for (int sp = lo; sp <= pos; sp++) want += p[sp - lo] / sum * v[(size_t)(sp - k0) * hd + j];
                    assert_float_equal(out[(size_t)t * ld + j], want, 2e-5);
                }
                assert_float_equal(lse[2 * t], mx + log(sum), 2e-5 * (1 + fabs(mx)));
                for (int j = hd; j < ld; j++) assert_true(out[(size_t)t * ld + j] == 999.0f);
                assert_true(lse[2 * t + 1] == 999.0f);
            }
            for (int i = nq * ld; i < (EL_ATTN_PANEL + 1) * ld; i++) assert_true(out[i] == 999.0f);
        }
        free(q), free(k), free(kt), free(v), free(out), free(work), free(p);
    }
}

// Kᵀ for the tiles: every element in place, and zeros past nk up to a whole
// block of 32 keys, whole 16 x 16 transposes or not.
static void test_attn_kt(void **s) {
    (void)s;
    uint64_t rng = 13;
    static const int shapes[][2] = {{1, 8}, {16, 16}, {17, 64}, {47, 76}, {130, 64}, {33, 2}, {64, 256}};
    for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
        int nk = shapes[c][0], hd = shapes[c][1], blocks = (nk + 31) / 32;
        size_t n = el_attn_causal_kt_floats(nk, hd);
        assert_int_equal(n, (size_t)blocks * 32 * hd);
        float *k = tu_randv(&rng, (size_t)nk * hd, 1), *kt = malloc(sizeof(float) * n);
        for (size_t i = 0; i < n; i++) kt[i] = 777.0f;
        el_attn_causal_kt(kt, k, nk, hd);
        for (int p = 0; p < blocks * 32; p++)
            for (int i = 0; i < hd; i++) {
                float got = kt[(size_t)(p / 32) * 32 * hd + (size_t)i * 32 + p % 32], want = p < nk ? k[(size_t)p * hd + i] : 0.0f;
                if (got != want) fail_msg("kt nk=%d hd=%d: element %d of key %d is %g, not %g", nk, hd, i, p, got, want);
            }
        free(k), free(kt);
    }
}

// ---------------------------------------------------------------- dense f32 products

// The column split over the pool computes the same product as one call.
static void test_sgemm_par(void **s) {
    (void)s;
    uint64_t rng = 5;
    int m = 96, n = 200, k = 230;
    float *A = tu_randv(&rng, (size_t)m * k, 1), *B = tu_randv(&rng, (size_t)n * k, 1), *C0 = tu_randv(&rng, (size_t)m * n, 1);
    float *C1 = malloc(sizeof(float) * m * n), *C2 = malloc(sizeof(float) * m * n);
    el_pool *pool = el_pool_new(3);
    for (int tb = 0; tb <= 1; tb++) {
        memcpy(C1, C0, sizeof(float) * m * n);
        memcpy(C2, C0, sizeof(float) * m * n);
        int ldb = tb ? k : n;  // B as [n, k] transposed, or read as [k, n]
        el_sgemm(0, tb, m, n, k, 0.5f, A, k, B, ldb, 1, C1, n);
        el_sgemm_par(pool, 0, tb, m, n, k, 0.5f, A, k, B, ldb, 1, C2, n);
        for (int i = 0; i < m * n; i++) assert_float_equal(C1[i], C2[i], 1e-4 * (1 + fabsf(C1[i])));
        // and the reference loop agrees with BLAS
        double ref = C0[5 * n + 7];
        for (int p = 0; p < k; p++) ref += 0.5 * A[5 * k + p] * (tb ? B[7 * k + p] : B[p * n + 7]);
        assert_float_equal(C1[5 * n + 7], ref, 1e-3);
    }
    el_pool_free(pool);
    free(A), free(B), free(C0), free(C1), free(C2);
}

// RMSNorm and RoPE: the SIMD versions give the scalar ones' bits, tails
// included, and write nothing past the row; el_rope/el_rope_neox (through a
// table) give the bits of the direct formula at each pair.
static void test_norm_rope(void **st) {
    (void)st;
    uint64_t rng = 21;
    static const int sizes[] = {1, 7, 8, 15, 16, 17, 100, 2048, 2049};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        int n = sizes[si];
        float *x = malloc(n * sizeof(float)), *w = malloc(n * sizeof(float));
        float *a = malloc((n + 1) * sizeof(float)), *b = malloc((n + 1) * sizeof(float));
        for (int i = 0; i < n; i++) x[i] = (tu_randf(&rng) - 0.5f) * (i % 5 ? 3.0f : 300.0f), w[i] = tu_randf(&rng) + 0.5f;
        a[n] = b[n] = 4321.0f;
        float sa = (have_simd() ? simd_rmsnorm : el_rmsnorm)(a, x, w, n, 1e-5f);
        float sb = el_rmsnorm_scalar(b, x, w, n, 1e-5f);
        assert_true(sa == sb && sa > 0);
        assert_memory_equal(a, b, (n + 1) * sizeof(float));
        for (int i = 0; i < n; i++) b[i] = x[i] + w[i];
        memcpy(a, x, n * sizeof(float));
        el_add_f32(a, w, n);
        assert_memory_equal(a, b, n * sizeof(float));
        free(x), free(w), free(a), free(b);
    }
    static const int hds[] = {2, 8, 16, 30, 64, 76, 128, 512, 1030};  // (1030: the table in pieces)
    enum { HEADS = 3 };
    for (size_t hi = 0; hi < sizeof hds / sizeof hds[0]; hi++) {
        int hd = hds[hi], half = hd / 2, n = HEADS * hd;
        float *inv = malloc(half * sizeof(float)), *c = malloc(half * sizeof(float)), *s = malloc(half * sizeof(float));
        float *x = malloc(n * sizeof(float)), *a = malloc((n + 1) * sizeof(float)), *b = malloc((n + 1) * sizeof(float));
        el_rope_freqs(inv, hd, 10000.0f);
        for (int i = 0; i < n; i++) x[i] = tu_randf(&rng) * 4.0f - 2.0f;
        for (int neox = 0; neox < 2; neox++)
            for (int pos = 0; pos < 3000; pos += 997) {
                el_rope_table(c, s, half, pos, inv);
                memcpy(a, x, n * sizeof(float)), memcpy(b, x, n * sizeof(float));
                a[n] = b[n] = 99.0f;
                (have_simd() && hd <= EL_ROPE_MAX_HD ? simd_rope_rotate : el_rope_rotate)(a, HEADS, hd, c, s, neox);
                el_rope_rotate_scalar(b, HEADS, hd, c, s, neox);
                assert_memory_equal(a, b, (n + 1) * sizeof(float));
                memcpy(a, x, n * sizeof(float));
                (neox ? el_rope_neox : el_rope)(a, HEADS, hd, pos, inv);
                for (int h = 0; h < HEADS; h++)
                    for (int i = 0; i < half; i++) {  // the direct formula
                        int i0 = h * hd + (neox ? i : 2 * i), i1 = neox ? i0 + half : i0 + 1;
                        float ang = (float)pos * inv[i], cs = cosf(ang), sn = sinf(ang);
                        float want0 = x[i0] * cs - x[i1] * sn, want1 = x[i0] * sn + x[i1] * cs;
                        if (memcmp(&a[i0], &want0, 4) || memcmp(&a[i1], &want1, 4))
                            fail_msg("rope hd=%d neox=%d pos=%d head %d pair %d: (%g, %g) vs (%g, %g)", hd, neox, pos, h, i,
                                     a[i0], a[i1], want0, want1);
                    }
            }
        free(inv), free(c), free(s), free(x), free(a), free(b);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_exp), cmocka_unit_test(test_swiglu),
                                       cmocka_unit_test(test_softmax), cmocka_unit_test(test_attention),
                                       cmocka_unit_test(test_attn_causal), cmocka_unit_test(test_attn_kt), cmocka_unit_test(test_sgemm_par),
                                       cmocka_unit_test(test_norm_rope)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
