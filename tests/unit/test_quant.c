// Unit tests for src/quant and the quantized kernels: bit layouts against
// hand-built blocks, round-trip error bounds, every SIMD tile kernel against
// the scalar reference, matmul on quantized weights, corrupt scales, policy.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/kernels.h"
#include "edgellm/quant.h"
#include "kernels/qdot.h"
#include "testutil.h"

static const int qtypes[] = {EL_DTYPE_Q8_0, EL_DTYPE_Q4_0, EL_DTYPE_Q4_K, EL_DTYPE_Q6_K, EL_DTYPE_F16, EL_DTYPE_BF16};
#define N_QTYPES ((int)(sizeof qtypes / sizeof qtypes[0]))

// This architecture's kernel levels, scalar first: each is compared with it.
static const el_isa levels[] = {
    EL_ISA_SCALAR,
#if defined(__x86_64__)
    EL_ISA_AVX2,   EL_ISA_AVX512,
#elif defined(__aarch64__)
    EL_ISA_NEON,   EL_ISA_DOTPROD, EL_ISA_I8MM,
#endif
};
#define N_LEVELS ((int)(sizeof levels / sizeof levels[0]))

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

// ---------------------------------------------------------------- bit layouts

static void test_q8_0_layout(void **st) {
    (void)st;
    uint8_t blk[34];
    put16(blk, 0x3800);  // d = 0.5
    for (int i = 0; i < 32; i++) blk[2 + i] = (uint8_t)(int8_t)(i - 16);
    float y[32];
    el_dtype_info(EL_DTYPE_Q8_0)->to_f32(blk, y, 32);
    for (int i = 0; i < 32; i++) assert_true(y[i] == 0.5f * (float)(i - 16));
}

static void test_q4_0_layout(void **st) {
    (void)st;
    uint8_t blk[18];
    put16(blk, 0x4000);  // d = 2
    // byte j: low nibble = element j, high nibble = element j + 16
    for (int j = 0; j < 16; j++) blk[2 + j] = (uint8_t)(j | (15 - j) << 4);
    float y[32];
    el_dtype_info(EL_DTYPE_Q4_0)->to_f32(blk, y, 32);
    for (int j = 0; j < 16; j++) {
        assert_true(y[j] == 2.0f * (float)(j - 8));
        assert_true(y[j + 16] == 2.0f * (float)(15 - j - 8));
    }
}

static void test_q4_k_layout(void **st) {
    (void)st;
    uint8_t blk[144] = {0};
    put16(blk, 0x3C00);      // d = 1
    put16(blk + 2, 0x3800);  // dmin = 0.5
    // scales/mins: sub-block j has scale j + 1 (j < 4) or 33 + j (j >= 4, uses the
    // high bits) and min 2j (j < 4) or 40 + j (j >= 4)
    int sc[8], m[8];
    for (int j = 0; j < 8; j++) sc[j] = j < 4 ? j + 1 : 33 + j, m[j] = j < 4 ? 2 * j : 40 + j;
    uint8_t *s = blk + 4;
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
        s[j + 4] = (uint8_t)(m[j] | (m[j + 4] >> 4) << 6);
        s[j + 8] = (uint8_t)((sc[j + 4] & 15) | (m[j + 4] & 15) << 4);
    }
    // qs byte 32p + l: low nibble element 64p + l, high nibble 64p + 32 + l
    for (int p = 0; p < 4; p++)
        for (int l = 0; l < 32; l++) blk[16 + 32 * p + l] = (uint8_t)((l & 15) | ((l + p) & 15) << 4);
    float y[256];
    el_dtype_info(EL_DTYPE_Q4_K)->to_f32(blk, y, 256);
    for (int p = 0; p < 4; p++)
        for (int l = 0; l < 32; l++) {
            int j0 = 2 * p, j1 = 2 * p + 1;
            assert_true(y[64 * p + l] == (float)sc[j0] * (float)(l & 15) - 0.5f * (float)m[j0]);
            assert_true(y[64 * p + 32 + l] == (float)sc[j1] * (float)((l + p) & 15) - 0.5f * (float)m[j1]);
        }
    int a, b;
    el_q4_k_scale_min(s, 6, &a, &b);
    assert_int_equal(a, 39);
    assert_int_equal(b, 46);
}

static void test_q6_k_layout(void **st) {
    (void)st;
    uint8_t blk[210] = {0};
    // element e has q = e % 64; scales[g] = g - 8; d = 0.25
    int q[256];
    for (int e = 0; e < 256; e++) q[e] = (e * 7) % 64;
    uint8_t *ql = blk, *qh = blk + 128;
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            int e = 128 * h + l;
            ql[64 * h + l] = (uint8_t)((q[e] & 15) | (q[e + 64] & 15) << 4);
            ql[64 * h + 32 + l] = (uint8_t)((q[e + 32] & 15) | (q[e + 96] & 15) << 4);
            qh[32 * h + l] = (uint8_t)(q[e] >> 4 | (q[e + 32] >> 4) << 2 | (q[e + 64] >> 4) << 4 | (q[e + 96] >> 4) << 6);
        }
    for (int g = 0; g < 16; g++) blk[192 + g] = (uint8_t)(int8_t)(g - 8);
    put16(blk + 208, 0x3400);  // 0.25
    float y[256];
    el_dtype_info(EL_DTYPE_Q6_K)->to_f32(blk, y, 256);
    for (int e = 0; e < 256; e++) assert_true(y[e] == 0.25f * (float)(e / 16 - 8) * (float)(q[e] - 32));
}

// ---------------------------------------------------------------- round trips

// Relative RMS error of quantize -> dequantize on Gaussian-ish data, per type.
static double roundtrip_rel_rmse(int dtype, const float *x, int n) {
    const el_dtype_traits *t = el_dtype_info(dtype);
    void *q = malloc(el_dtype_row_size(dtype, n));
    float *y = malloc((size_t)n * sizeof(float));
    t->from_f32(x, q, n);
    t->to_f32(q, y, n);
    double se = 0, ss = 0;
    for (int i = 0; i < n; i++) se += (double)(x[i] - y[i]) * (x[i] - y[i]), ss += (double)x[i] * x[i];
    free(q);
    free(y);
    return sqrt(se / ss);
}

static void test_roundtrip_bounds(void **st) {
    (void)st;
    int n = 256 * 64;
    float *x = malloc((size_t)n * sizeof(float));
    uint64_t rng = 42;
    for (int i = 0; i < n; i++)  // sum of uniforms: roughly normal, some outliers
        x[i] = (tu_randf(&rng) + tu_randf(&rng) + tu_randf(&rng)) * (i % 512 < 256 ? 1.0f : 0.01f);
    // bounds: about 1.5x what these quantizers reach on this data
    struct { int dtype; double bound; } cases[] = {
        {EL_DTYPE_Q8_0, 0.0075}, {EL_DTYPE_Q4_0, 0.12},  {EL_DTYPE_Q4_K, 0.10},
        {EL_DTYPE_Q6_K, 0.024},  {EL_DTYPE_F16, 0.0004}, {EL_DTYPE_BF16, 0.003},
    };
    double got[6];
    for (int c = 0; c < 6; c++) {
        got[c] = roundtrip_rel_rmse(cases[c].dtype, x, n);
        printf("  %-5s relative rms error %.5f (bound %.4f)\n", el_dtype_name(cases[c].dtype), got[c], cases[c].bound);
        assert_true(got[c] < cases[c].bound);
    }
    assert_true(got[2] < got[1]);  // the Q4_K search beats plain Q4_0
    assert_true(got[3] < got[2] && got[0] < got[3]);
    // Q8_0 per element: half a step, plus the f16 rounding of the scale
    // (relative 2^-11) times the largest quant, 127: 0.5 + 0.062 steps
    el_block_q8_0 *q = malloc(el_dtype_row_size(EL_DTYPE_Q8_0, n));
    float *y = malloc((size_t)n * sizeof(float));
    el_quantize_row_q8_0(x, q, n);
    el_dequantize_row_q8_0(q, y, n);
    for (int i = 0; i < n; i++) assert_true(fabsf(x[i] - y[i]) <= 0.563f * el_f16_to_f32(q[i / 32].d));
    // zeros stay zero
    memset(x, 0, 256 * sizeof(float));
    for (int t = 0; t < 4; t++) {
        const el_dtype_traits *tr = el_dtype_info(qtypes[t]);
        tr->from_f32(x, q, 256);
        tr->to_f32(q, y, 256);
        for (int i = 0; i < 256; i++) assert_true(y[i] == 0.0f);
    }
    free(q);
    free(y);
    free(x);
}

// ---------------------------------------------------------------- SIMD == scalar

static void make_weights(int dtype, int k, int rows, uint64_t *rng, void **w, float **wf) {
    float *f = malloc((size_t)k * rows * sizeof(float));
    for (int i = 0; i < k * rows; i++) f[i] = tu_randf(rng) * (1.0f + (float)(i % 7));
    size_t rs = el_dtype_row_size(dtype, k);
    *w = malloc(rs * rows);
    for (int r = 0; r < rows; r++) el_dtype_info(dtype)->from_f32(f + (size_t)r * k, (char *)*w + rs * r, k);
    for (int r = 0; r < rows; r++) el_dtype_info(dtype)->to_f32((char *)*w + rs * r, f + (size_t)r * k, k);
    *wf = f;
}

static void test_simd_matches_scalar(void **st) {
    (void)st;
    uint64_t rng = 7;
    int checked = 0, per_level[N_LEVELS] = {0};
    for (int ti = 0; ti < N_QTYPES; ti++) {
        int dtype = qtypes[ti];
        const el_dtype_traits *tr = el_dtype_info(dtype);
        int bs = tr->block_size == 1 ? 32 : tr->block_size;
        static const int nblocks[] = {1, 2, 3, 5, 8};
        for (int kb = 0; kb < 5; kb++) {
            int k = bs * nblocks[kb] + (tr->block_size == 1 ? 3 * kb : 0);  // float types: odd k too
            int rows = 1 + (int)(tu_rand(&rng) % 19), toks = 1 + (int)(tu_rand(&rng) % 11);
            void *w;
            float *wf;
            make_weights(dtype, k, rows, &rng, &w, &wf);
            size_t ldw = el_dtype_row_size(dtype, k), ldx = el_act_row_size(tr->vec_dot_type, k);
            float *x = malloc((size_t)k * toks * sizeof(float));
            for (int i = 0; i < k * toks; i++) x[i] = tu_randf(&rng) * 3.0f;
            char *act = malloc(ldx * toks);
            for (int t = 0; t < toks; t++) el_act_quantize(tr->vec_dot_type, x + (size_t)t * k, act + ldx * t, k);
            float *ref = malloc((size_t)rows * toks * sizeof(float)), *got = malloc((size_t)rows * toks * sizeof(float));
            el_gemm_kernel(dtype, EL_ISA_SCALAR)(k, w, ldw, rows, act, ldx, toks, ref, (size_t)rows);
            // the scalar tile is the traits' vec_dot
            assert_true(ref[0] == tr->vec_dot(k, w, act));
            for (int li = 1; li < N_LEVELS; li++) {
                el_isa isa = levels[li];
                el_gemm_fn g = el_gemm_kernel(dtype, isa);
                if (!g) continue;
                for (int i = 0; i < rows * toks; i++) got[i] = NAN;
                g(k, w, ldw, rows, act, ldx, toks, got, (size_t)rows);
                for (int t = 0; t < toks; t++)
                    for (int r = 0; r < rows; r++) {
                        // float tolerance relative to the sum of |terms|
                        double mag = 0;
                        for (int i = 0; i < k; i++) mag += fabs((double)wf[(size_t)r * k + i] * x[(size_t)t * k + i]);
                        float a = ref[t * rows + r], b = got[t * rows + r];
                        if (!(fabs((double)a - b) <= 1e-5 * mag + 1e-6)) {
                            printf("%s %s k=%d rows=%d toks=%d r=%d t=%d: scalar %.9g simd %.9g\n", tr->name,
                                   el_isa_name(isa), k, rows, toks, r, t, a, b);
                            fail();
                        }
                        checked++, per_level[li]++;
                    }
            }
            free(w), free(wf), free(x), free(act), free(ref), free(got);
        }
    }
    printf("  %d outputs compared:", checked);
    for (int li = 1; li < N_LEVELS; li++) printf(" %s %d", el_isa_name(levels[li]), per_level[li]);
    printf("\n");
}

// Q8_0 activations: d = amax/127, q = nearbyint(x * 127/amax) (ties to even),
// at rows of 8 blocks, 19 (16 at once, 3 one by one) and 64
static void test_act_quantize_rounding(void **st) {
    (void)st;
    uint64_t rng = 3;
    enum { KMAX = 2048 };
    static float x[KMAX];
    for (int rep = 0; rep < 240; rep++) {
        const int K = rep % 3 == 0 ? 256 : rep % 3 == 1 ? 608 : 2048;
        for (int i = 0; i < K; i++) x[i] = tu_randf(&rng) * (float)(1 + rep % 5);
        if (rep % 2) {  // exact halves: 127 at amax makes x * id land on .5 steps
            x[0] = 127.0f;
            for (int i = 1; i < K; i++) x[i] = (float)((int)(tu_rand(&rng) % 253) - 126) + 0.5f * (float)(tu_rand(&rng) % 2);
        }
        if (rep == 7 || rep == 8) {  // all-zero blocks (d = 0, q = 0), in a batch of 16 and (608) after one
            memset(x + 64, 0, 32 * sizeof(float));
            if (K == 608) memset(x + 17 * 32, 0, 32 * sizeof(float));
        }
        static char act[KMAX + KMAX / 32 * 8 + 64], ref[sizeof act];
        memset(act, 0x55, sizeof act);
        memset(ref, 0x55, sizeof ref);
        el_act_quantize(EL_DTYPE_Q8_0, x, act, K);  // the CPU's best path
        el_act_quantize_q8_0_scalar(x, ref, K);
        assert_memory_equal(act, ref, K + K / 32 * 8);
        // Q8_K (K-quant activations): the CPU's best path writes el_quantize_row_q8_k's bytes
        static el_block_q8_k qk[KMAX / EL_QK_K], qk_ref[KMAX / EL_QK_K];
        memset(qk, 0x55, sizeof qk);
        memset(qk_ref, 0x55, sizeof qk_ref);
        el_act_quantize(EL_DTYPE_Q8_K, x, qk, K);
        el_quantize_row_q8_k(x, qk_ref, K);
        assert_memory_equal(qk, qk_ref, sizeof qk);
        const float *d = (const float *)(act + K);
        const int32_t *nsum = (const int32_t *)(d + K / 32);
        for (int b = 0; b < K / 32; b++) {
            float amax = 0;
            for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[32 * b + i]));
            float id = amax ? 127.0f / amax : 0.0f;
            int sum = 0;
            for (int i = 0; i < 32; i++) {
                float want = nearbyintf(x[32 * b + i] * id);
                assert_int_equal(((int8_t *)act)[32 * b + i], (int)want);
                sum += (int)want;
            }
            assert_true(d[b] == amax / 127.0f);
            assert_int_equal(nsum[b], -sum);
        }
    }
}

// toks random activation rows of k floats (*x) and their quantized rows as act_type
static char *make_acts(int act_type, int k, int toks, uint64_t *rng, float **x) {
    size_t ldx = el_act_row_size(act_type, k);
    *x = malloc((size_t)k * toks * sizeof(float));
    for (int i = 0; i < k * toks; i++) (*x)[i] = tu_randf(rng) * 3.0f;
    char *act = malloc(ldx * toks);
    for (int t = 0; t < toks; t++) el_act_quantize(act_type, *x + (size_t)t * k, act + ldx * t, k);
    return act;
}

// Kernels on packed (row-interleaved) weights equal the scalar reference on
// the file layout: the integer sums are the same, only float order differs.
// At each level that has packed kernels: AVX-512 VNNI (every type) and AVX2
// (Q8_0/Q4_0, the same pair layout read 8 rows at a time).
static void packed_matches_scalar(el_isa isa) {
    uint64_t rng = 11;
    int checked = 0;
    // Every type twice: at the AVX-512 level its two forms (qdot_avx512.c,
    // qdot_k_avx512.c), whichever this CPU takes (the el_matmul checks below
    // run the CPU's own form only)
    static const int types[] = {EL_DTYPE_Q8_0, EL_DTYPE_Q8_0, EL_DTYPE_Q4_0, EL_DTYPE_Q4_0,
                                EL_DTYPE_Q4_K, EL_DTYPE_Q4_K, EL_DTYPE_Q6_K, EL_DTYPE_Q6_K};
    for (int ti = 0; ti < 8; ti++) {
        int dtype = types[ti];
        el_gemm_fn pg = el_gemm_packed_kernel(dtype, isa);
        if (!pg) continue;  // this CPU has no packed kernel
        int form = ti % 2;  // 0: the Intel form; 1: the AMD one
#if defined(__x86_64__)
        el_gemm_fn (*forms)(int, int) = ti < 4 ? el_gemm_packed_form_avx512 : el_gemm_packed_k_form_avx512;
        if (pg == forms(dtype, 0) || pg == forms(dtype, 1)) {
            pg = forms(dtype, form);
            printf("  %s, %s form:\n", el_dtype_info(dtype)->name, form ? "AMD" : "Intel");
        } else if (form) {
            continue;  // one kernel of this type at this level
        }
#else
        if (form) continue;
#endif
        const el_dtype_traits *tr = el_dtype_info(dtype);
        int kq = dtype == EL_DTYPE_Q4_K || dtype == EL_DTYPE_Q6_K;  // K-quants
        // K-quants: every k both as decode (1 token) and prefill (2..20
        // tokens: each remainder after the 8-token tiles, 0..7, once)
        // Q8_0/Q4_0: 1 token (decode) twice, then counts whose remainders after
        // 4-token tiles take every value (AVX2), and the AVX-512 passes: one
        // of 2..8 tokens, two of up to 8 (11, 13, 15, 16), 8-token passes
        // then two even ones (17 = 8 + 5 + 4, 23); then decode and 3, 4, 5
        // and 11 tokens over Q4_0's units of 8 blocks, whole (64, 16 blocks)
        // and with a shorter last one after them (12, 9); last, 17, 10 and 3
        // tokens over 130, 128 and 96 blocks: the seeds of the integer sums
        // are made 64 blocks at a time (qdot_avx512.c), here 64, 64 and 2;
        // 64 and 64; 64 and 32; then 60 tokens over 70 blocks: 8 passes,
        // where Q4_0 unpacks each pair to bytes once (a last unit of 6).
        // K-quants: last, 33 tokens over 3 super-blocks: 5 tiles, the later
        // ones fetching the next pair, and a last tile of one token (the
        // decode kernel)
        static const int nblocks[] = {1, 2, 3, 7, 64, 1, 2, 3, 7, 64, 5, 3, 7, 64, 12, 9, 16, 12, 12, 130, 128, 96, 70},
                         nsuper[] = {1, 1, 2, 2, 3, 3, 8, 8, 1, 1, 2, 2, 3, 3, 8, 8, 3, 3};
        static const int ktoks[] = {2, 3, 13, 20, 9, 14, 15, 16, 33},
                         toks8[] = {6, 11, 23, 5, 16, 2, 15, 7, 13, 8, 17, 1, 1, 3, 4, 5, 11, 17, 10, 3, 60};
        // decode: 1-8 pairs in this order, so that Q8_0's four decode cases meet
        // its three runs of pairs side by side (Intel form) with 1, 0, 2 pairs
        // left and fewer pairs than runs, and the AMD form's two runs with 0
        // and 1 left and one pair alone; and so that Q4_0's two runs (AMD)
        // read 8 pairs over 12 blocks, a shorter unit last
        static const int dpairs[] = {4, 3, 1, 8, 5, 2, 7, 6};
        int nd = 0;
        for (int kb = 0; kb < (kq ? 18 : 23); kb++) {
            int k = kq ? EL_QK_K * nsuper[kb] : EL_QK * nblocks[kb];
            int toks = kq ? (kb % 2 ? ktoks[kb / 2] : 1) : kb < 2 ? 1 : toks8[kb - 2];  // 1: the decode kernel
            int rows = toks == 1 ? 32 * dpairs[nd++ % 8] : 32 * (1 + (int)(tu_rand(&rng) % 3));
            rows += (int)(tu_rand(&rng) % 32);
            void *w;
            float *wf;
            make_weights(dtype, k, rows, &rng, &w, &wf);
            el_tensor W = {"w", dtype, 2, {k, rows, 1, 1}, w, el_dtype_row_size(dtype, k) * rows, NULL, 0, 0, NULL};
            int64_t prows;
            size_t bytes = el_matmul_pack_size(&W, isa, &prows);
            assert_int_equal(prows, rows & ~31);
            assert_int_equal(bytes, el_dtype_row_size(dtype, k) * (size_t)prows);  // no bigger than the file's rows
            void *packed = el_malloc_aligned(bytes);
            el_matmul_pack(&W, prows, packed);
            size_t ldx = el_act_row_size(tr->vec_dot_type, k);
            float *x;
            char *act = make_acts(tr->vec_dot_type, k, toks, &rng, &x);
            float *ref = malloc((size_t)rows * toks * sizeof(float)), *got = malloc((size_t)rows * toks * sizeof(float));
            el_gemm_kernel(dtype, EL_ISA_SCALAR)(k, w, el_dtype_row_size(dtype, k), rows, act, ldx, toks, ref,
                                                 (size_t)rows);
            for (int i = 0; i < rows * toks; i++) got[i] = NAN;
            pg(k, packed, el_dtype_row_size(dtype, k) * 32, (int)prows, act, ldx, toks, got, (size_t)rows);
            if (toks == 1) {  // decode: the same bytes as pair by pair
                float *one = malloc((size_t)rows * sizeof(float));
                size_t ldw = el_dtype_row_size(dtype, k) * 32;
                for (int p = 0; p < prows / 32; p++)
                    pg(k, (const char *)packed + (size_t)p * ldw, ldw, 32, act, ldx, 1, one + 32 * p, (size_t)rows);
                assert_memory_equal(one, got, (size_t)prows * sizeof(float));
                free(one);
            }
            for (int t = 0; t < toks; t++)
                for (int r = 0; r < rows; r++) {
                    float a = ref[t * rows + r], b = got[t * rows + r];
                    if (r >= prows) {
                        assert_true(isnan(b));  // the tail rows are not the packed kernel's
                        continue;
                    }
                    double mag = 0;
                    for (int i = 0; i < k; i++) mag += fabs((double)wf[(size_t)r * k + i] * x[(size_t)t * k + i]);
                    if (!(fabs((double)a - b) <= 1e-5 * mag + 1e-6)) {
                        printf("packed %s k=%d rows=%d toks=%d r=%d t=%d: scalar %.9g packed %.9g\n", tr->name, k,
                               rows, toks, r, t, a, b);
                        fail();
                    }
                    checked++;
                }
            // el_matmul with the packed copy: packed rows and the file-layout tail together
            W.packed = packed;
            W.packed_rows = prows;
            float *mm = malloc((size_t)rows * toks * sizeof(float)), *mm2 = malloc((size_t)rows * toks * sizeof(float));
            float *mm3 = malloc((size_t)rows * toks * sizeof(float));
            for (int threads = 1; threads <= 2; threads++) {
                el_pool *pool = el_pool_new(threads);
                el_matmul_isa(pool, mm, x, &W, toks, isa);
                // fused with an unpacked copy of itself: each output is el_matmul's, bit for bit
                el_tensor U = W;
                U.packed = NULL;
                el_matmul_isa(pool, mm3, x, &U, toks, isa);
                for (int i = 0; i < rows * toks; i++) mm2[i] = NAN;
                el_matmul_many_isa(pool, 2, (float *[]){mm2, mm}, x, (const el_tensor *[]){&U, &W}, toks, isa);
                assert_memory_equal(mm2, mm3, (size_t)rows * toks * sizeof(float));
                float *mm4 = malloc((size_t)rows * toks * sizeof(float));
                el_matmul_isa(pool, mm4, x, &W, toks, isa);
                assert_memory_equal(mm, mm4, (size_t)rows * toks * sizeof(float));
                free(mm4);
                for (int i = 0; i < rows * toks; i++) {
                    double mag = 0;
                    int t = i / rows, r = i % rows;
                    for (int e = 0; e < k; e++) mag += fabs((double)wf[(size_t)r * k + e] * x[(size_t)t * k + e]);
                    if (!(fabs((double)mm[i] - ref[i]) <= 1e-5 * mag + 1e-6)) {
                        printf("packed matmul %s k=%d rows=%d toks=%d i=%d: %.9g vs %.9g\n", tr->name, k, rows, toks,
                               i, mm[i], ref[i]);
                        fail();
                    }
                }
                el_pool_free(pool);
            }
            free(mm), free(mm2), free(mm3);
            el_free_aligned(packed);
            free(w), free(wf), free(x), free(act), free(ref), free(got);
        }
        el_isa used = isa < el_cpu_isa() ? isa : el_cpu_isa();  // EL_ISA may cap the level
        printf("  %s %s: %d packed outputs compared\n", el_isa_name(used), tr->name, checked);
        checked = 0;
    }
}

static void test_packed_matches_scalar(void **st) {
    (void)st;
    for (int li = 1; li < N_LEVELS; li++) packed_matches_scalar(levels[li]);
}

// The groups of a panel (qdot.h) cover a call's tokens in order, once each:
// up to 8 a group, the last two as even as they go (17 = 8 + 5 + 4).
static void test_panel_groups(void **st) {
    (void)st;
    for (int nt = 1; nt <= 40; nt++) {
        int sizes[40], n = 0;
        for (int t = 0; t < nt;) {
            int s, c = el_panel_group(nt, t, &s);
            assert_int_equal(s, t);
            assert_true(c >= 1 && c <= 8 && s + c <= nt);
            for (int u = t; u < t + c; u++) {  // every token of the group names the same group
                int s2, c2 = el_panel_group(nt, u, &s2);
                assert_int_equal(s2, s);
                assert_int_equal(c2, c);
            }
            sizes[n++] = c;
            t += c;
        }
        for (int i = 0; i + 2 < n; i++) assert_int_equal(sizes[i], 8);
        if (n >= 2) assert_true(sizes[n - 2] - sizes[n - 1] == 0 || sizes[n - 2] - sizes[n - 1] == 1);
    }
    int s, c = el_panel_group(17, 16, &s);
    assert_int_equal(s, 13);
    assert_int_equal(c, 4);
}

// el_matmul over more tokens than one kernel call takes (their activations
// past the most a call keeps in L2, 4 MiB): the calls' panels (Q8_0, Q4_0 at
// AVX-512) sit one after another in one buffer; every output against the
// scalar kernel, 2 threads. 420 tokens of 10 KiB rows (k = 8192): two calls
// or more on any L2 (seven of up to 64 on a 1.25 MiB one). Then 37, 9 and
// 420 tokens again, in the buffer the thread kept from the first product.
static void test_packed_matmul_token_blocks(void **st) {
    (void)st;
    uint64_t rng = 41;
    const int k = 8192, rows = 64 + 5, toks = 420;
    static const int types[] = {EL_DTYPE_Q8_0, EL_DTYPE_Q4_0};
    for (int ti = 0; ti < 2; ti++) {
        const int dtype = types[ti];
        const el_dtype_traits *tr = el_dtype_info(dtype);
        void *w;
        float *wf;
        make_weights(dtype, k, rows, &rng, &w, &wf);
        el_tensor W = {"w", dtype, 2, {k, rows, 1, 1}, w, el_dtype_row_size(dtype, k) * rows, NULL, 0, 0, NULL};
        int64_t prows;
        size_t bytes = el_matmul_pack_size(&W, EL_ISA_BEST, &prows);
        void *packed = bytes ? el_malloc_aligned(bytes) : NULL;
        if (packed) el_matmul_pack(&W, prows, packed);
        W.packed = packed, W.packed_rows = packed ? prows : 0;
        float *x;
        char *act = make_acts(tr->vec_dot_type, k, toks, &rng, &x);
        size_t ldx = el_act_row_size(tr->vec_dot_type, k), n = (size_t)rows * toks;
        float *ref = malloc(n * sizeof(float)), *got = malloc(n * sizeof(float));
        el_gemm_kernel(dtype, EL_ISA_SCALAR)(k, w, el_dtype_row_size(dtype, k), rows, act, ldx, toks, ref, (size_t)rows);
        double *tol = malloc(n * sizeof(double));
        for (size_t i = 0; i < n; i++) {
            int t = (int)(i / rows), r = (int)(i % rows);
            double mag = 0;
            for (int e = 0; e < k; e++) mag += fabs((double)wf[(size_t)r * k + e] * x[(size_t)t * k + e]);
            tol[i] = 1e-5 * mag + 1e-6;
        }
        // all the tokens, then fewer, then all again: el_matmul keeps its activation buffer for the
        // thread's next product (grown, not cleared), so the later products read over stale rows and panels
        el_pool *pool = el_pool_new(2);
        static const int counts[] = {toks, 37, 9, toks};
        for (int ci = 0; ci < 4; ci++) {
            const int m = counts[ci];
            el_matmul(pool, got, x, &W, m);
            for (size_t i = 0; i < (size_t)m * rows; i++)
                if (!(fabs((double)got[i] - ref[i]) <= tol[i])) {
                    printf("%s, %d tokens, token %d row %d: el_matmul %.9g scalar %.9g\n", tr->name, m,
                           (int)(i / rows), (int)(i % rows), got[i], ref[i]);
                    fail();
                }
        }
        el_pool_free(pool);
        printf("  %s: %zu outputs of %d tokens compared, then 37, 9 and %d again (%s)\n", tr->name, n, toks, toks,
               packed ? "packed" : "not packed");
        el_free_aligned(packed);
        free(w), free(wf), free(x), free(act), free(ref), free(got), free(tol);
    }
}

// The packed K-quant kernels sum a super-block's products in int32 (every
// sub-block's sums times its integer scale) and convert once (the AMD form
// at AVX-512; the Intel form converts each sub-block's sums, exact integers,
// and sums them in float). At the ends of the ranges they equal the exact
// sum: nothing wraps. Q4_K: all nibbles 15 or
// 0, every 6-bit scale and min 63 (their largest), dmin 1 or 0; Q6_K: all
// quants 63 or 0, every scale 127 or -128; activations all 127 or -128. The
// scalar reference too (level 0), then every level with packed K-quant
// kernels: 1 (decode), 3 and 8 tokens, 2 super-blocks.
static void test_packed_kquant_extremes(void **st) {
    (void)st;
    int checked = 0, packed = 0;
    for (int li = 0; li < N_LEVELS; li++)
        for (int dtype = EL_DTYPE_Q4_K, form = 0; dtype <= EL_DTYPE_Q6_K;
             form = !form, dtype += form ? 0 : EL_DTYPE_Q6_K - EL_DTYPE_Q4_K) {
            el_gemm_fn pg = li ? el_gemm_packed_kernel(dtype, levels[li]) : NULL;
            if (li && !pg) continue;
#if defined(__x86_64__)
            // both forms of the AVX-512 kernels (qdot_k_avx512.c): the float step's sums are exact here too
            if (pg && (pg == el_gemm_packed_k_form_avx512(dtype, 0) || pg == el_gemm_packed_k_form_avx512(dtype, 1)))
                pg = el_gemm_packed_k_form_avx512(dtype, form);
            else if (form)
                continue;
#else
            if (form) continue;
#endif
            const int k = 2 * EL_QK_K, rows = 32, nb = k / EL_QK_K;
            const size_t rs = el_dtype_row_size(dtype, k);
            // pattern p: Q4_K all nibbles 15 (p even) or 0 (odd), every scale and min 63, dmin 1 (p < 2) or 0;
            // Q6_K all quants 63 (p even) or 0 (odd), every scale 127 (p < 2) or -128
            for (int p = 0; p < 4; p++)
                for (int a = 0; a < 2; a++) {
                    const int v = a ? -128 : 127;  // every activation quant
                    uint8_t *w = malloc(rs * rows);
                    double per = 0;  // one element's weight value (every element is the same)
                    for (int b = 0; b < rows * nb; b++) {
                        if (dtype == EL_DTYPE_Q4_K) {
                            el_block_q4_k *q = (el_block_q4_k *)w + b;
                            q->d = el_f32_to_f16(1.0f);
                            q->dmin = el_f32_to_f16(p < 2 ? 1.0f : 0.0f);
                            memset(q->scales, 0xFF, sizeof q->scales);
                            memset(q->qs, p % 2 ? 0x00 : 0xFF, sizeof q->qs);
                            per = 63.0 * (p % 2 ? 0 : 15) - (p < 2 ? 63.0 : 0.0);
                        } else {
                            el_block_q6_k *q = (el_block_q6_k *)w + b;
                            memset(q->ql, p % 2 ? 0x00 : 0xFF, sizeof q->ql);
                            memset(q->qh, p % 2 ? 0x00 : 0xFF, sizeof q->qh);
                            memset(q->scales, p < 2 ? 127 : 0x80, sizeof q->scales);
                            q->d = el_f32_to_f16(1.0f);
                            per = (p < 2 ? 127.0 : -128.0) * ((p % 2 ? 0 : 63) - 32);
                        }
                    }
                    el_tensor W = {"w", dtype, 2, {k, rows, 1, 1}, w, rs * rows, NULL, 0, 0, NULL};
                    void *pk = NULL;
                    if (pg) {
                        int64_t prows;
                        pk = el_malloc_aligned(el_matmul_pack_size(&W, levels[li], &prows));
                        assert_int_equal(prows, rows);
                        el_matmul_pack(&W, prows, pk);
                    }
                    static const int toks_of[] = {1, 3, 8};
                    for (int ci = 0; ci < 3; ci++) {
                        const int toks = toks_of[ci];
                        el_block_q8_k *x = malloc(sizeof(el_block_q8_k) * nb * toks);
                        for (int i = 0; i < nb * toks; i++) {
                            x[i].d = 1.0f;
                            memset(x[i].qs, v & 0xFF, sizeof x[i].qs);
                            for (int g = 0; g < EL_QK_K / 16; g++) x[i].bsums[g] = (int16_t)(16 * v);
                        }
                        float got[8 * 32];
                        if (pg)
                            pg(k, pk, rs * 32, rows, x, sizeof(el_block_q8_k) * nb, toks, got, rows);
                        else
                            el_gemm_kernel(dtype, EL_ISA_SCALAR)(k, w, rs, rows, x, sizeof(el_block_q8_k) * nb, toks,
                                                                 got, rows);
                        // per * v is an integer below 2^24 and k = 2^9: exact as a float (|want| < 2^29)
                        const double want = per * v * k;
                        for (int i = 0; i < toks * rows; i++) {
                            if (got[i] != (float)want) {
                                printf("%s %s pattern %d act %d toks %d out %d: %.9g, want %.9g\n",
                                       pg ? el_isa_name(levels[li]) : "scalar reference", el_dtype_info(dtype)->name,
                                       p, v, toks, i, got[i], want);
                                fail();
                            }
                            checked++;
                            packed += pg != NULL;
                        }
                        free(x);
                    }
                    el_free_aligned(pk);
                    free(w);
                }
        }
    printf("  %d outputs at the ends of the K-quant ranges, %d of them from packed kernels%s\n", checked, packed,
           packed ? "" : " (no packed K-quant kernel here)");
}

// Products whose outputs are 1 MB or more, on a 64-byte aligned buffer with
// rows a multiple of 16 floats, stream them past the caches (simd_avx512.h):
// every output written, the same values, bit for bit, as the stored ones of
// the same product on a buffer that is not aligned, and a sample of them
// equal to the scalar reference. Every packed type and form over 128 tokens
// (2 MB), and Q8_0/Q4_0 over 8 tokens (1.1 MB: one pass; Q4_0 part by part).
static void test_packed_streamed_outputs(void **st) {
    (void)st;
#if defined(__x86_64__)
    if (!el_cpu_has_avx512vnni()) {
        printf("  no AVX-512 VNNI: nothing to check\n");
        return;
    }
    uint64_t rng = 23;
    static const int types[] = {EL_DTYPE_Q8_0, EL_DTYPE_Q8_0, EL_DTYPE_Q4_0, EL_DTYPE_Q4_0,
                                EL_DTYPE_Q4_K, EL_DTYPE_Q4_K, EL_DTYPE_Q6_K, EL_DTYPE_Q6_K};
    static const struct { int ti, k, rows, toks; } cases[] = {
        {0, 256, 4096, 128}, {1, 256, 4096, 128}, {2, 256, 4096, 128}, {3, 256, 4096, 128}, {4, 256, 4096, 128},
        {5, 256, 4096, 128}, {6, 256, 4096, 128}, {7, 256, 4096, 128}, {0, 64, 36864, 8},   {1, 64, 36864, 8},
        {2, 64, 36864, 8},   {3, 64, 36864, 8},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const int ti = cases[ci].ti, dtype = types[ti], k = cases[ci].k, rows = cases[ci].rows, toks = cases[ci].toks;
        el_gemm_fn pg = ti < 4 ? el_gemm_packed_form_avx512(dtype, ti % 2) : el_gemm_packed_k_form_avx512(dtype, ti % 2);
        assert_non_null(pg);
        const el_dtype_traits *tr = el_dtype_info(dtype);
        void *w;
        float *wf;
        make_weights(dtype, k, rows, &rng, &w, &wf);
        el_tensor W = {"w", dtype, 2, {k, rows, 1, 1}, w, el_dtype_row_size(dtype, k) * rows, NULL, 0, 0, NULL};
        int64_t prows;
        void *packed = el_malloc_aligned(el_matmul_pack_size(&W, EL_ISA_AVX512, &prows));
        assert_int_equal(prows, rows);
        el_matmul_pack(&W, prows, packed);
        size_t ldx = el_act_row_size(tr->vec_dot_type, k);
        float *x;
        char *act = make_acts(tr->vec_dot_type, k, toks, &rng, &x);
        size_t n = (size_t)rows * toks;
        float *streamed = el_malloc_aligned(n * sizeof(float)), *buf = el_malloc_aligned((n + 16) * sizeof(float));
        float *stored = buf + 1;  // 4 bytes past a line: not streamed
        for (size_t i = 0; i < n; i++) streamed[i] = stored[i] = NAN;
        size_t ldw = el_dtype_row_size(dtype, k) * 32;
        pg(k, packed, ldw, rows, act, ldx, toks, streamed, (size_t)rows);
        pg(k, packed, ldw, rows, act, ldx, toks, stored, (size_t)rows);
        for (size_t i = 0; i < n; i++) assert_false(isnan(streamed[i]));
        assert_memory_equal(streamed, stored, n * sizeof(float));
        for (int s = 0; s < 256; s++) {
            int t = (int)(tu_rand(&rng) % toks), r = (int)(tu_rand(&rng) % rows);
            float ref;
            el_gemm_kernel(dtype, EL_ISA_SCALAR)(k, (const char *)w + el_dtype_row_size(dtype, k) * r, 0, 1,
                                                 act + ldx * t, ldx, 1, &ref, 1);
            double mag = 0;
            for (int i = 0; i < k; i++) mag += fabs((double)wf[(size_t)r * k + i] * x[(size_t)t * k + i]);
            assert_true(fabs((double)ref - streamed[(size_t)t * rows + r]) <= 1e-5 * mag + 1e-6);
        }
        printf("  %s%s, %d tokens: %zu streamed outputs equal the stored ones\n", tr->name,
               ti % 2 ? " (AMD form)" : " (Intel form)", toks, n);
        el_free_aligned(streamed), el_free_aligned(buf), el_free_aligned(packed);
        free(w), free(wf), free(x), free(act);
    }
#else
    printf("  not x86-64: nothing to check\n");
#endif
}

// The AMD forms' decode as el_gemm_runs_fn (qdot.h): one token over np pairs
// in two runs at any two addresses gives the panel kernel's outputs over the
// same pairs in one copy (whose decode is the runs kernel with wb at pair
// np / 2), bit for bit: 1-9 pairs (an odd last pair alone, one run empty),
// each run in a buffer of its own.
static void test_runs_kernels(void **st) {
    (void)st;
#if defined(__x86_64__)
    if (!el_cpu_has_avx512vnni()) {
        printf("  no AVX-512 VNNI: nothing to check\n");
        return;
    }
    uint64_t rng = 71;
    static const int types[] = {EL_DTYPE_Q8_0, EL_DTYPE_Q4_0, EL_DTYPE_Q4_K, EL_DTYPE_Q6_K};
    int checked = 0;
    for (int ti = 0; ti < 4; ti++) {
        const int dtype = types[ti], kq = ti >= 2, k = kq ? 3 * EL_QK_K : 12 * EL_QK;
        el_gemm_runs_fn runs = kq ? el_gemm_runs_k_avx512(dtype) : el_gemm_runs_q_avx512(dtype);
        el_gemm_fn pg = kq ? el_gemm_packed_k_form_avx512(dtype, 1) : el_gemm_packed_form_avx512(dtype, 1);
        assert_non_null(runs);
        assert_non_null(pg);
        const el_dtype_traits *tr = el_dtype_info(dtype);
        for (int np = 1; np <= 9; np++) {
            const int rows = 32 * np;
            void *w;
            float *wf;
            make_weights(dtype, k, rows, &rng, &w, &wf);
            el_tensor W = {"w", dtype, 2, {k, rows, 1, 1}, w, el_dtype_row_size(dtype, k) * rows, NULL, 0, 0, NULL};
            int64_t prows;
            size_t bytes = el_matmul_pack_size(&W, EL_ISA_AVX512, &prows), ldw = bytes / (size_t)np;
            char *packed = el_malloc_aligned(bytes), *a = el_malloc_aligned(bytes), *b = el_malloc_aligned(bytes);
            el_matmul_pack(&W, prows, packed);
            memcpy(a, packed, (size_t)(np / 2) * ldw);
            memcpy(b, packed + (size_t)(np / 2) * ldw, (size_t)(np - np / 2) * ldw);
            float *x;
            char *act = make_acts(tr->vec_dot_type, k, 1, &rng, &x);
            float *ref = malloc((size_t)rows * sizeof(float)), *got = malloc((size_t)rows * sizeof(float));
            for (int i = 0; i < rows; i++) got[i] = NAN;
            pg(k, packed, ldw, rows, act, el_act_row_size(tr->vec_dot_type, k), 1, ref, (size_t)rows);
            runs(k, a, b, ldw, np, act, got);
            assert_memory_equal(got, ref, (size_t)rows * sizeof(float));
            checked += rows;
            el_free_aligned(packed), el_free_aligned(a), el_free_aligned(b);
            free(w), free(wf), free(x), free(act), free(ref), free(got);
        }
    }
    printf("  %d outputs of the four runs kernels equal the panel kernels'\n", checked);
#else
    printf("  not x86-64: nothing to check\n");
#endif
}

// A packed copy in stripes (kernels.h), each stripe in a buffer of its own,
// gives el_matmul the outputs of the one-copy layout bit for bit: at every
// level with packed kernels, every packed type, stripes for 1-3 threads on
// pools of 1-3 (the decode split by stripes where they agree, stripe by
// stripe otherwise), 1, 3 and 9 tokens, 1-13 pairs (fewer than the stripes
// too) with and without unpacked tail rows, and fused with another striped
// product and an unstriped one.
static void test_packed_stripes(void **st) {
    (void)st;
    uint64_t rng = 73;
    static const int types[] = {EL_DTYPE_Q8_0, EL_DTYPE_Q4_0, EL_DTYPE_Q4_K, EL_DTYPE_Q6_K};
    static const int pairs[] = {1, 2, 3, 5, 8, 13}, tails[] = {0, 7}, toks[] = {1, 3, 9};
    int checked = 0;
    for (int li = 1; li < N_LEVELS; li++) {
        const el_isa isa = levels[li];
        for (int ti = 0; ti < 4; ti++) {
            const int dtype = types[ti], kq = ti >= 2, k = kq ? 2 * EL_QK_K : 8 * EL_QK;
            if (!el_gemm_packed_kernel(dtype, isa)) continue;
            const el_dtype_traits *tr = el_dtype_info(dtype);
            for (int pi = 0; pi < 6; pi++)
                for (int tl = 0; tl < 2; tl++) {
                    const int np = pairs[pi], rows = 32 * np + tails[tl];
                    void *w[3];
                    float *wf[3];
                    el_tensor W[3], S[3];
                    char *packed[3], *stripe_buf[3][6];
                    const char *stripe[3][6];
                    for (int m = 0; m < 3; m++) {  // three products of the same k: 0 and 1 striped, 2 one copy
                        const int r = m == 1 ? rows + 32 : rows;
                        make_weights(dtype, k, r, &rng, &w[m], &wf[m]);
                        W[m] = (el_tensor){"w", dtype, 2, {k, r, 1, 1}, w[m], el_dtype_row_size(dtype, k) * r, NULL, 0, 0, NULL};
                        int64_t prows;
                        size_t bytes = el_matmul_pack_size(&W[m], isa, &prows);
                        packed[m] = el_malloc_aligned(bytes);
                        el_matmul_pack(&W[m], prows, packed[m]);
                        W[m].packed = packed[m], W[m].packed_rows = prows;
                        S[m] = W[m];
                        for (int s = 0; s < 6; s++) stripe_buf[m][s] = NULL;
                    }
                    float *x = malloc((size_t)9 * k * sizeof(float));
                    for (int i = 0; i < 9 * k; i++) x[i] = tu_randf(&rng);
                    size_t outn = (size_t)9 * (rows + 32);
                    float *ref[3], *got[3];
                    for (int m = 0; m < 3; m++) ref[m] = malloc(outn * sizeof(float)), got[m] = malloc(outn * sizeof(float));
                    for (int T = 1; T <= 3; T++) {
                        for (int m = 0; m < 2; m++) {  // stripe 0 and 1's copies for T threads
                            const int64_t npm = W[m].packed_rows / 32;
                            const size_t pb = 32 * el_dtype_row_size(dtype, k);
                            for (int s = 0; s < 2 * T; s++) {
                                // packed from its rows alone (as model.c packs a stripe): the whole copy's bytes
                                int64_t f = el_stripe_first(npm, T, s), e = el_stripe_first(npm, T, s + 1);
                                el_free_aligned(stripe_buf[m][s]);
                                stripe_buf[m][s] = el_malloc_aligned((size_t)(e - f) * pb + 64);
                                el_tensor part = W[m];
                                part.data = (char *)w[m] + (size_t)(32 * f) * el_dtype_row_size(dtype, k);
                                part.ne[1] = 32 * (e - f);
                                if (e > f) el_matmul_pack(&part, part.ne[1], stripe_buf[m][s]);
                                assert_memory_equal(stripe_buf[m][s], packed[m] + (size_t)f * pb, (size_t)(e - f) * pb);
                                stripe[m][s] = stripe_buf[m][s];
                            }
                            S[m].packed = stripe[m][0], S[m].packed_stripes = T, S[m].stripe = stripe[m];
                        }
                        for (int threads = 1; threads <= 3; threads++) {
                            el_pool *pool = el_pool_new(threads);
                            for (int ni = 0; ni < 3; ni++) {
                                const int n = toks[ni];
                                for (int m = 0; m < 3; m++) el_matmul_isa(pool, ref[m], x, &W[m], n, isa);
                                for (int m = 0; m < 2; m++) {
                                    for (size_t i = 0; i < outn; i++) got[m][i] = NAN;
                                    el_matmul_isa(pool, got[m], x, &S[m], n, isa);
                                    assert_memory_equal(got[m], ref[m], (size_t)n * S[m].ne[1] * sizeof(float));
                                }
                                for (int m = 0; m < 3; m++)
                                    for (size_t i = 0; i < outn; i++) got[m][i] = NAN;
                                el_matmul_many_isa(pool, 3, got, x, (const el_tensor *[]){&S[0], &S[1], &W[2]}, n, isa);
                                for (int m = 0; m < 3; m++)
                                    assert_memory_equal(got[m], ref[m], (size_t)n * W[m].ne[1] * sizeof(float));
                                el_matmul_many_isa(pool, 2, got, x, (const el_tensor *[]){&S[0], &S[1]}, n, isa);
                                for (int m = 0; m < 2; m++)
                                    assert_memory_equal(got[m], ref[m], (size_t)n * W[m].ne[1] * sizeof(float));
                                checked++;
                            }
                            el_pool_free(pool);
                        }
                    }
                    // and against the scalar kernel, the one-copy outputs of the last count (9 tokens)
                    size_t ldx = el_act_row_size(tr->vec_dot_type, k);
                    char *act = malloc((size_t)9 * ldx);
                    for (int t = 0; t < 9; t++) el_act_quantize(tr->vec_dot_type, x + (size_t)t * k, act + (size_t)t * ldx, k);
                    float *sc = malloc((size_t)9 * rows * sizeof(float));
                    el_gemm_kernel(dtype, EL_ISA_SCALAR)(k, w[0], el_dtype_row_size(dtype, k), rows, act, ldx, 9, sc, (size_t)rows);
                    for (int i = 0; i < 9 * rows; i++) {
                        double mag = 0;
                        for (int e = 0; e < k; e++) mag += fabs((double)wf[0][(size_t)(i % rows) * k + e] * x[(size_t)(i / rows) * k + e]);
                        assert_true(fabs((double)sc[i] - got[0][i]) <= 1e-5 * mag + 1e-6);  // (the same activations)
                    }
                    free(act), free(sc);
                    for (int m = 0; m < 3; m++) {
                        for (int s = 0; s < 6; s++) el_free_aligned(stripe_buf[m][s]);
                        el_free_aligned(packed[m]);
                        free(w[m]), free(wf[m]), free(ref[m]), free(got[m]);
                    }
                    free(x);
                }
            printf("  %s %s: stripes checked\n", el_isa_name(isa), tr->name);
        }
    }
    printf("  %d striped products equal the one-copy ones\n", checked);
}

// matmul on quantized weights ≈ x · dequant(W)ᵀ, for every ISA and 1-2 threads
static void test_matmul_quantized(void **st) {
    (void)st;
    uint64_t rng = 99;
    int k = 512, d = 37, n = 13;
    float *x = malloc((size_t)n * k * sizeof(float));
    for (int i = 0; i < n * k; i++) x[i] = tu_randf(&rng);
    for (int ti = 0; ti < N_QTYPES; ti++) {
        int dtype = qtypes[ti];
        void *w;
        float *wf;
        make_weights(dtype, k, d, &rng, &w, &wf);
        el_tensor W = {"w", dtype, 2, {k, d, 1, 1}, w, el_dtype_row_size(dtype, k) * d, NULL, 0, 0, NULL};
        float *out = malloc((size_t)n * d * sizeof(float));
        for (int threads = 1; threads <= 2; threads++) {
            el_pool *pool = el_pool_new(threads);
            for (int li = 0; li < N_LEVELS; li++) {
                el_isa isa = levels[li];
                el_matmul_isa(pool, out, x, &W, n, isa);
                double se = 0, ss = 0;
                for (int t = 0; t < n; t++)
                    for (int r = 0; r < d; r++) {
                        float want = el_dot_f32(x + (size_t)t * k, wf + (size_t)r * k, k);
                        se += (double)(out[t * d + r] - want) * (out[t * d + r] - want), ss += (double)want * want;
                    }
                // only the activation quantization separates them (8 bits: ~0.5%)
                double rel = sqrt(se / ss);
                if (rel > 0.02) {
                    printf("%s isa %d: relative error %g\n", el_dtype_name(dtype), isa, rel);
                    fail();
                }
            }
            el_pool_free(pool);
        }
        free(out), free(w), free(wf);
    }
    free(x);
}

// ---------------------------------------------------------------- corrupt data

static void test_bad_scales_found(void **st) {
    (void)st;
    float x[512];
    uint64_t rng = 5;
    for (int i = 0; i < 512; i++) x[i] = tu_randf(&rng);
    for (int t = 0; t < 4; t++) {
        int dtype = qtypes[t];
        const el_dtype_traits *tr = el_dtype_info(dtype);
        size_t nbytes = el_dtype_row_size(dtype, 512);
        uint8_t *q = malloc(nbytes);
        tr->from_f32(x, q, 512);
        assert_int_equal(el_quant_find_bad_block(dtype, q, nbytes), -1);
        int64_t nb = (int64_t)(nbytes / tr->type_size), bad = nb - 1;
        size_t at = (size_t)bad * tr->type_size + (dtype == EL_DTYPE_Q6_K ? 208 : dtype == EL_DTYPE_Q4_K ? 2 : 0);
        put16(q + at, 0x7E00);  // NaN
        assert_int_equal(el_quant_find_bad_block(dtype, q, nbytes), bad);
        put16(q + at, 0xFC00);  // -inf
        assert_int_equal(el_quant_find_bad_block(dtype, q, nbytes), bad);
        free(q);
    }
    assert_int_equal(el_quant_find_bad_block(EL_DTYPE_F32, x, sizeof x), -1);
}

// ---------------------------------------------------------------- policy

static void test_policy(void **st) {
    (void)st;
    el_qtarget t;
    assert_int_equal(el_qtarget_parse("Q4_K_M", &t), 0);
    assert_int_equal(t.preset, EL_QTYPE_Q4_K_M);
    assert_int_equal(el_qtarget_file_type(&t), 15);
    assert_int_not_equal(el_qtarget_parse("q3_k", &t), 0);
    int64_t ne_norm[] = {64}, ne_down[] = {172, 64}, ne_q[] = {64, 64}, ne_big[] = {2048, 256};
    int wanted;
    const char *why;
    assert_int_equal(el_qtarget_parse("q4_0", &t), 0);
    assert_int_equal(el_quant_choose(&t, "blk.0.attn_norm.weight", 1, ne_norm, 0, &wanted, &why), EL_DTYPE_F32);
    assert_int_equal(el_quant_choose(&t, "blk.0.attn_q.weight", 2, ne_q, 0, &wanted, &why), EL_DTYPE_Q4_0);
    assert_null(why);
    assert_int_equal(el_quant_choose(&t, "blk.0.ffn_down.weight", 2, ne_down, 0, &wanted, &why), EL_DTYPE_F16);
    assert_non_null(why);
    assert_int_equal(el_qtarget_parse("q4_k", &t), 0);
    assert_int_equal(el_quant_choose(&t, "blk.0.attn_q.weight", 2, ne_q, 0, &wanted, &why), EL_DTYPE_Q8_0);
    assert_int_equal(wanted, EL_DTYPE_Q4_K);
    assert_int_equal(el_quant_choose(&t, "blk.0.attn_q.weight", 2, ne_big, 0, &wanted, &why), EL_DTYPE_Q4_K);
    assert_int_equal(el_qtarget_parse("q4_k_m", &t), 0);
    assert_int_equal(el_quant_choose(&t, "blk.3.attn_v.weight", 2, ne_big, 0, &wanted, &why), EL_DTYPE_Q6_K);
    assert_int_equal(el_quant_choose(&t, "blk.3.attn_k.weight", 2, ne_big, 0, &wanted, &why), EL_DTYPE_Q4_K);
    assert_int_equal(el_quant_choose(&t, "output.weight", 2, ne_big, 0, &wanted, &why), EL_DTYPE_Q6_K);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_q8_0_layout),       cmocka_unit_test(test_q4_0_layout),
        cmocka_unit_test(test_q4_k_layout),       cmocka_unit_test(test_q6_k_layout),
        cmocka_unit_test(test_roundtrip_bounds),  cmocka_unit_test(test_simd_matches_scalar),
        cmocka_unit_test(test_packed_matches_scalar),
        cmocka_unit_test(test_panel_groups),
        cmocka_unit_test(test_packed_matmul_token_blocks), cmocka_unit_test(test_packed_streamed_outputs),
        cmocka_unit_test(test_packed_kquant_extremes), cmocka_unit_test(test_runs_kernels),
        cmocka_unit_test(test_packed_stripes),
        cmocka_unit_test(test_act_quantize_rounding),
        cmocka_unit_test(test_matmul_quantized),  cmocka_unit_test(test_bad_scales_found),
        cmocka_unit_test(test_policy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
