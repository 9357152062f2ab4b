// AVX-512 attention over f16 and q8_0 KV cache rows (kv.c has the layout and
// the scalar reference). Called only after run-time detection; hd is a
// multiple of 16, at most 256 (q8_0: a multiple of 32, or 16).
#include <immintrin.h>
#include <string.h>

#include "edgellm/tensor.h"
#include "ops_simd.h"

// 16 values of a row as floats, block scale applied for q8_0 (j: which 16).
static inline __m512 load16(int dtype, const char *row, int hd, int j) {
    if (dtype == EL_DTYPE_F16) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(row + 32 * j)));
    __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(row + 16 * j))));
    int bs = hd % 32 == 0 ? 32 : hd;
    float d;
    memcpy(&d, row + hd + 4 * (16 * j / bs), 4);
    return _mm512_mul_ps(v, _mm512_set1_ps(d));
}

#define AI static inline __attribute__((always_inline))

// Compiled per dtype and head size (nv vectors of 16), so that the query and
// the sums stay in registers (as ops_avx512.c's f32 kernels).
AI void scores_kv(const int dtype, const int nv, float *scores, const float *q, const void *k, size_t stride, int n,
                  float scale) {
    const int hd = 16 * nv;
    __m512 qv[16];
    _Pragma("GCC unroll 16") for (int j = 0; j < nv; j++) qv[j] = _mm512_loadu_ps(q + 16 * j);
    for (int p = 0; p < n; p++) {
        const char *kp = (const char *)k + (size_t)p * stride;
        __m512 a = _mm512_setzero_ps();
        if (dtype == EL_DTYPE_Q8_0) {
            // per block: Σ q·k over its integers, then one scale (as the scalar reference)
            const int per = (hd % 32 == 0 ? 32 : hd) / 16;  // vectors per scale
            __m512 s = _mm512_setzero_ps();
            _Pragma("GCC unroll 16") for (int j = 0; j < nv; j++) {
                s = _mm512_fmadd_ps(qv[j], _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(kp + 16 * j)))), s);
                if ((j + 1) % per == 0) {
                    float d;
                    memcpy(&d, kp + hd + 4 * (j / per), 4);
                    a = _mm512_fmadd_ps(s, _mm512_set1_ps(d), a);
                    s = _mm512_setzero_ps();
                }
            }
        } else {
            _Pragma("GCC unroll 16") for (int j = 0; j < nv; j++) a = _mm512_fmadd_ps(qv[j], load16(dtype, kp, hd, j), a);
        }
        scores[p] = _mm512_reduce_add_ps(a) * scale;
    }
}

AI void mix_kv(const int dtype, const int nv, float *out, const float *w, const void *v, size_t stride, int n) {
    const int hd = 16 * nv;
    __m512 acc[16];
    _Pragma("GCC unroll 16") for (int j = 0; j < nv; j++) acc[j] = _mm512_loadu_ps(out + 16 * j);
    for (int p = 0; p < n; p++) {
        const char *vp = (const char *)v + (size_t)p * stride;
        __m512 wp = _mm512_set1_ps(w[p]);
        _Pragma("GCC unroll 16") for (int j = 0; j < nv; j++) acc[j] = _mm512_fmadd_ps(wp, load16(dtype, vp, hd, j), acc[j]);
    }
    _Pragma("GCC unroll 16") for (int j = 0; j < nv; j++) _mm512_storeu_ps(out + 16 * j, acc[j]);
}

// One compiled copy per dtype and nv = 1..16 (hd at most 256).
#define HEAD_SIZES(F, DT, ...)                                                                                        \
    switch (hd / 16) {                                                                                               \
    case 1: F(DT, 1, __VA_ARGS__); return;                                                                           \
    case 2: F(DT, 2, __VA_ARGS__); return;                                                                           \
    case 3: F(DT, 3, __VA_ARGS__); return;                                                                           \
    case 4: F(DT, 4, __VA_ARGS__); return;                                                                           \
    case 5: F(DT, 5, __VA_ARGS__); return;                                                                           \
    case 6: F(DT, 6, __VA_ARGS__); return;                                                                           \
    case 7: F(DT, 7, __VA_ARGS__); return;                                                                           \
    case 8: F(DT, 8, __VA_ARGS__); return;                                                                           \
    case 9: F(DT, 9, __VA_ARGS__); return;                                                                           \
    case 10: F(DT, 10, __VA_ARGS__); return;                                                                         \
    case 11: F(DT, 11, __VA_ARGS__); return;                                                                         \
    case 12: F(DT, 12, __VA_ARGS__); return;                                                                         \
    case 13: F(DT, 13, __VA_ARGS__); return;                                                                         \
    case 14: F(DT, 14, __VA_ARGS__); return;                                                                         \
    case 15: F(DT, 15, __VA_ARGS__); return;                                                                         \
    default: F(DT, 16, __VA_ARGS__); return;                                                                         \
    }

void el_attn_scores_kv_avx512(int dtype, float *scores, const float *q, const void *k, size_t stride, int n, int hd,
                              float scale) {
    if (dtype == EL_DTYPE_F16) HEAD_SIZES(scores_kv, EL_DTYPE_F16, scores, q, k, stride, n, scale)
    HEAD_SIZES(scores_kv, EL_DTYPE_Q8_0, scores, q, k, stride, n, scale)  // (kv.c sends only f16 and q8_0)
}

void el_attn_mix_kv_avx512(int dtype, float *out, const float *w, const void *v, size_t stride, int n, int hd) {
    if (dtype == EL_DTYPE_F16) HEAD_SIZES(mix_kv, EL_DTYPE_F16, out, w, v, stride, n)
    HEAD_SIZES(mix_kv, EL_DTYPE_Q8_0, out, w, v, stride, n)  // (kv.c sends only f16 and q8_0)
}
