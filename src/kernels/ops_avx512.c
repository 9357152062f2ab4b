// AVX-512 versions of the row-wise ops whose cost in a prefill is the
// exponential: SwiGLU and softmax (perf: together with the scalar expf about
// 8% of a q8_0 prefill's matmul time). Called only after run-time detection.
#include <immintrin.h>
#include <math.h>

#include "ops_simd.h"
#include "simd_avx512.h"

float el_exp_avx512(float x) {
    __m512 v = exp512(_mm512_set1_ps(x));
    return _mm512_cvtss_f32(v);
}

void el_swiglu_avx512(float *h, const float *g, const float *u, int n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 gv = _mm512_loadu_ps(g + i);
        __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), gv));
        _mm512_storeu_ps(h + i, _mm512_mul_ps(_mm512_div_ps(gv, _mm512_add_ps(one, e)), _mm512_loadu_ps(u + i)));
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m512 gv = _mm512_maskz_loadu_ps(m, g + i);
        __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), gv));
        _mm512_mask_storeu_ps(h + i, m, _mm512_mul_ps(_mm512_div_ps(gv, _mm512_add_ps(one, e)), _mm512_maskz_loadu_ps(m, u + i)));
    }
}

// x / (1 + e^(-c)), c as in el_gelu_scalar; the same operations per element.
static inline __m512 gelu512(__m512 v, int quick) {
    __m512 c;
    if (quick) {
        c = _mm512_mul_ps(_mm512_set1_ps(1.702f), v);
    } else {
        __m512 v3 = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.044715f), v), v), v);
        c = _mm512_mul_ps(_mm512_set1_ps(1.5957691216057308f), _mm512_add_ps(v, v3));
    }
    __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), c));
    return _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

void el_gelu_avx512(float *x, int n, int quick) {
    int i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, gelu512(_mm512_loadu_ps(x + i), quick));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(x + i, m, gelu512(_mm512_maskz_loadu_ps(m, x + i), quick));
    }
}

// vcvtph2ps converts exactly (every f16 is an f32), subnormals and NaNs included.
void el_f16_to_f32_avx512(const uint16_t *src, float *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(dst + i, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, src + i)));
    }
}

void el_bf16_to_f32_avx512(const uint16_t *src, float *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(
                                      _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(src + i))), 16)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(dst + i, m, _mm512_castsi512_ps(_mm512_slli_epi32(
                                              _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, src + i)), 16)));
    }
}

void el_softmax_avx512(float *x, int n) {
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 16 <= n; i += 16) vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(x + i));
    __mmask16 tail = (__mmask16)((1u << (n - i)) - 1);
    if (i < n) vmax = _mm512_mask_max_ps(vmax, tail, vmax, _mm512_maskz_loadu_ps(tail, x + i));
    __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
    __m512 sum = _mm512_setzero_ps();
    for (i = 0; i + 16 <= n; i += 16) {
        __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(x + i), mx));
        _mm512_storeu_ps(x + i, e);
        sum = _mm512_add_ps(sum, e);
    }
    if (i < n) {
        __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, x + i), mx));
        _mm512_mask_storeu_ps(x + i, tail, e);
        sum = _mm512_mask_add_ps(sum, tail, sum, e);
    }
    __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
    for (i = 0; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), inv));
    if (i < n) _mm512_mask_storeu_ps(x + i, tail, _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, x + i), inv));
}

// Scores: four positions at a time share each load of q; their sums are
// reduced at the end. hd is a multiple of 16, at most 256. Both kernels are
// compiled once for each common head size (nv vectors of 16): with a run-time
// nv, the query and the accumulators lived on the stack, copied in by memcpy
// and reloaded at every FMA (perf: 18% of an 8-row worker step at positions
// up to 200, the mixture latency-bound on store-to-load chains). Every head
// size a multiple of 16 up to 256 gets its copy (ALL_NV).
//
// Where the registers hold 16 sums next to the query (nv <= 8), sixteen
// positions at a time instead, their sums reduced together: a tree of
// unpack, shuffle and add (45 instructions) leaves the 16 scores in one
// vector, in order, where 16 single reductions took ~9 each.
static inline __attribute__((always_inline)) __m512 sum16(const __m512 a[16]) {
    __m512 b[8], c[4], d[2];
    // b[i]: per 128-bit lane, pairs of partial sums of a[2i] and a[2i+1]
    _Pragma("GCC unroll 8") for (int i = 0; i < 8; i++)
        b[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
    // c[i]: per 128-bit lane, one partial sum each of a[4i .. 4i+3]
    _Pragma("GCC unroll 4") for (int i = 0; i < 4; i++)
        c[i] = _mm512_add_ps(_mm512_shuffle_ps(b[2 * i], b[2 * i + 1], 0x44), _mm512_shuffle_ps(b[2 * i], b[2 * i + 1], 0xEE));
    // d[i]: c[2i]'s and c[2i+1]'s four lanes summed in pairs
    _Pragma("GCC unroll 2") for (int i = 0; i < 2; i++)
        d[i] = _mm512_add_ps(_mm512_shuffle_f32x4(c[2 * i], c[2 * i + 1], 0x44),
                             _mm512_shuffle_f32x4(c[2 * i], c[2 * i + 1], 0xEE));
    // lane group m: the whole sums of a[4m .. 4m+3]
    return _mm512_add_ps(_mm512_shuffle_f32x4(d[0], d[1], 0x88), _mm512_shuffle_f32x4(d[0], d[1], 0xDD));
}

static inline __attribute__((always_inline)) void scores_nv(const int nv, float *scores, const float *q, const float *k,
                                                            size_t stride, int n, float scale) {
    __m512 qv[16];
    _Pragma("GCC unroll 16") for (int j = 0; j < nv; j++) qv[j] = _mm512_loadu_ps(q + 16 * j);
    int p = 0;
    if (nv <= 8)
        for (; p + 16 <= n; p += 16) {
            __m512 a[16];
            _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++) {
                const float *kp = k + (size_t)(p + i) * stride;
                a[i] = _mm512_mul_ps(qv[0], _mm512_loadu_ps(kp));
                _Pragma("GCC unroll 8") for (int j = 1; j < nv; j++) a[i] = _mm512_fmadd_ps(qv[j], _mm512_loadu_ps(kp + 16 * j), a[i]);
            }
            _mm512_storeu_ps(scores + p, _mm512_mul_ps(sum16(a), _mm512_set1_ps(scale)));
        }
    for (; p + 4 <= n; p += 4) {
        const float *k0 = k + (size_t)p * stride, *k1 = k0 + stride, *k2 = k1 + stride, *k3 = k2 + stride;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        _Pragma("GCC unroll 16") for (int j = 0; j < nv; j++) {
            a0 = _mm512_fmadd_ps(qv[j], _mm512_loadu_ps(k0 + 16 * j), a0);
            a1 = _mm512_fmadd_ps(qv[j], _mm512_loadu_ps(k1 + 16 * j), a1);
            a2 = _mm512_fmadd_ps(qv[j], _mm512_loadu_ps(k2 + 16 * j), a2);
            a3 = _mm512_fmadd_ps(qv[j], _mm512_loadu_ps(k3 + 16 * j), a3);
        }
        scores[p] = _mm512_reduce_add_ps(a0) * scale;
        scores[p + 1] = _mm512_reduce_add_ps(a1) * scale;
        scores[p + 2] = _mm512_reduce_add_ps(a2) * scale;
        scores[p + 3] = _mm512_reduce_add_ps(a3) * scale;
    }
    for (; p < n; p++) {
        const float *kp = k + (size_t)p * stride;
        __m512 a = _mm512_setzero_ps();
        _Pragma("GCC unroll 16") for (int j = 0; j < nv; j++) a = _mm512_fmadd_ps(qv[j], _mm512_loadu_ps(kp + 16 * j), a);
        scores[p] = _mm512_reduce_add_ps(a) * scale;
    }
}

// One case per nv = 1..16: F(nv, args...) then return.
#define ALL_NV(F, ...)                                                                                                \
    switch (nv) {                                                                                                    \
    case 1: F(1, __VA_ARGS__); return;                                                                               \
    case 2: F(2, __VA_ARGS__); return;                                                                               \
    case 3: F(3, __VA_ARGS__); return;                                                                               \
    case 4: F(4, __VA_ARGS__); return;                                                                               \
    case 5: F(5, __VA_ARGS__); return;                                                                               \
    case 6: F(6, __VA_ARGS__); return;                                                                               \
    case 7: F(7, __VA_ARGS__); return;                                                                               \
    case 8: F(8, __VA_ARGS__); return;                                                                               \
    case 9: F(9, __VA_ARGS__); return;                                                                               \
    case 10: F(10, __VA_ARGS__); return;                                                                             \
    case 11: F(11, __VA_ARGS__); return;                                                                             \
    case 12: F(12, __VA_ARGS__); return;                                                                             \
    case 13: F(13, __VA_ARGS__); return;                                                                             \
    case 14: F(14, __VA_ARGS__); return;                                                                             \
    case 15: F(15, __VA_ARGS__); return;                                                                             \
    default: F(16, __VA_ARGS__); return;                                                                             \
    }

void el_attn_scores_avx512(float *scores, const float *q, const float *k, size_t stride, int n, int hd, float scale) {
    int nv = hd / 16;
    ALL_NV(scores_nv, scores, q, k, stride, n, scale)
}

// The output row stays in registers while the value rows stream past, in two
// sets (even and odd positions) so that the FMA chains overlap, where the
// registers hold them (nv <= 8); it accumulates onto what out holds.
static inline __attribute__((always_inline)) void mix_nv(const int nv, float *out, const float *w, const float *v,
                                                         size_t stride, int n) {
    const int two = nv <= 8;
    __m512 acc[16], acc2[16];
    _Pragma("GCC unroll 16") for (int j = 0; j < nv; j++) acc[j] = _mm512_loadu_ps(out + 16 * j), acc2[j] = _mm512_setzero_ps();
    int p = 0;
    for (; two && p + 2 <= n; p += 2) {
        const float *vp = v + (size_t)p * stride;
        __m512 w0 = _mm512_set1_ps(w[p]), w1 = _mm512_set1_ps(w[p + 1]);
        _Pragma("GCC unroll 16") for (int j = 0; j < nv; j++) {
            acc[j] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(vp + 16 * j), acc[j]);
            acc2[j] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(vp + stride + 16 * j), acc2[j]);
        }
    }
    for (; p < n; p++) {
        const float *vp = v + (size_t)p * stride;
        __m512 w0 = _mm512_set1_ps(w[p]);
        _Pragma("GCC unroll 16") for (int j = 0; j < nv; j++) acc[j] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(vp + 16 * j), acc[j]);
    }
    _Pragma("GCC unroll 16") for (int j = 0; j < nv; j++) _mm512_storeu_ps(out + 16 * j, _mm512_add_ps(acc[j], acc2[j]));
}

void el_attn_mix_avx512(float *out, const float *w, const float *v, size_t stride, int n, int hd) {
    int nv = hd / 16;
    ALL_NV(mix_nv, out, w, v, stride, n)
}

// The scalar version's eight double sums are the eight lanes here (lane j
// sums x[i + j]² over i = 0, 8, 16 ...; the product of two floats is exact in
// double, so the FMA rounds as the scalar add does), added up in its order.
float el_rmsnorm_avx512(float *out, const float *x, const float *w, int n, float eps) {
    __m512d acc = _mm512_setzero_pd();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m512d v = _mm512_cvtps_pd(_mm256_loadu_ps(x + i));
        acc = _mm512_fmadd_pd(v, v, acc);
    }
    double a[8];
    _mm512_storeu_pd(a, acc);
    double ss = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    for (; i < n; i++) ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / n + eps));
    const __m512 sv = _mm512_set1_ps(scale);
    for (i = 0; i + 16 <= n; i += 16)
        _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), sv), _mm512_loadu_ps(w + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), sv), _mm512_maskz_loadu_ps(m, w + i)));
    }
    return scale;
}

// As el_rope_rotate_scalar, 16 floats at a time: a' = a c - b s, b' = a s +
// b c with the products and the sum rounded as there (no FMA). Pairs (2i,
// 2i+1): the row's cosines twice [c0 c0 c1 c1 ..] and sines as [-s0 s0 -s1
// s1 ..] against x and x with each pair swapped.
void el_rope_rotate_avx512(float *x, int n_heads, int head_dim, const float *c, const float *s, int neox) {
    const int half = head_dim / 2;
    if (neox) {
        for (int h = 0; h < n_heads; h++) {
            float *lo = x + (size_t)h * head_dim, *hi = lo + half;
            for (int i = 0; i < half; i += 16) {
                __mmask16 m = half - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (half - i)) - 1);
                __m512 a = _mm512_maskz_loadu_ps(m, lo + i), b = _mm512_maskz_loadu_ps(m, hi + i);
                __m512 cv = _mm512_maskz_loadu_ps(m, c + i), sv = _mm512_maskz_loadu_ps(m, s + i);
                _mm512_mask_storeu_ps(lo + i, m, _mm512_sub_ps(_mm512_mul_ps(a, cv), _mm512_mul_ps(b, sv)));
                _mm512_mask_storeu_ps(hi + i, m, _mm512_add_ps(_mm512_mul_ps(a, sv), _mm512_mul_ps(b, cv)));
            }
        }
        return;
    }
    float cc[EL_ROPE_MAX_HD] __attribute__((aligned(64))), ss[EL_ROPE_MAX_HD] __attribute__((aligned(64)));
    for (int i = 0; i < half; i++) cc[2 * i] = cc[2 * i + 1] = c[i], ss[2 * i] = -s[i], ss[2 * i + 1] = s[i];
    const int pairs = 2 * half;  // (an odd head's last element is not turned, as in the scalar version)
    for (int h = 0; h < n_heads; h++) {
        float *xh = x + (size_t)h * head_dim;
        for (int j = 0; j < pairs; j += 16) {
            __mmask16 m = pairs - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (pairs - j)) - 1);
            __m512 v = _mm512_maskz_loadu_ps(m, xh + j);
            __m512 sw = _mm512_permute_ps(v, 0xB1);  // (b, a) of every pair
            __m512 r = _mm512_add_ps(_mm512_mul_ps(v, _mm512_maskz_load_ps(m, cc + j)), _mm512_mul_ps(sw, _mm512_maskz_load_ps(m, ss + j)));
            _mm512_mask_storeu_ps(xh + j, m, r);
        }
    }
}
