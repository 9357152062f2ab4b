// Internal to src/kernels, for the *_avx512.c files only (they are compiled
// with AVX-512 enabled): vector helpers shared between them.
#ifndef EL_KERNELS_SIMD_AVX512_H
#define EL_KERNELS_SIMD_AVX512_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#ifndef ALWAYS_INLINE
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#define NOINLINE __attribute__((noinline))
#endif

// The 4 bytes at p (activation bytes, or 2 int16) in every lane: the
// broadcast operand of vpdpbusd and vpdpwssd.
ALWAYS_INLINE __m512i bcast4(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

// 16 vectors to one: lane i the maximum (or, for int32 lanes, the sum) of
// v[i]'s lanes. Halves, quarters, pairs, then single lanes of two vectors
// are combined at each step (15 combinations, not 16 reductions of 4 steps
// each); the last step leaves block L + 4j in lane 4L + j, put back in order.
#define DEFINE_REDUCE16(NAME, T, OP)                                                                          \
    ALWAYS_INLINE T NAME(T *v) {                                                                             \
        for (int i = 0; i < 8; i++) {                                                                        \
            __m512 a = _mm512_castsi512_ps((__m512i)v[2 * i]), b = _mm512_castsi512_ps((__m512i)v[2 * i + 1]); \
            v[i] = OP((T)_mm512_castps_si512(_mm512_shuffle_f32x4(a, b, 0x44)),                               \
                      (T)_mm512_castps_si512(_mm512_shuffle_f32x4(a, b, 0xEE)));                               \
        }                                                                                                    \
        for (int i = 0; i < 4; i++) {                                                                        \
            __m512 a = _mm512_castsi512_ps((__m512i)v[2 * i]), b = _mm512_castsi512_ps((__m512i)v[2 * i + 1]); \
            v[i] = OP((T)_mm512_castps_si512(_mm512_shuffle_f32x4(a, b, 0x88)),                               \
                      (T)_mm512_castps_si512(_mm512_shuffle_f32x4(a, b, 0xDD)));                               \
        }                                                                                                    \
        for (int i = 0; i < 2; i++) {                                                                        \
            __m512 a = _mm512_castsi512_ps((__m512i)v[2 * i]), b = _mm512_castsi512_ps((__m512i)v[2 * i + 1]); \
            v[i] = OP((T)_mm512_castps_si512(_mm512_shuffle_ps(a, b, 0x44)),                                   \
                      (T)_mm512_castps_si512(_mm512_shuffle_ps(a, b, 0xEE)));                                   \
        }                                                                                                    \
        __m512 a = _mm512_castsi512_ps((__m512i)v[0]), b = _mm512_castsi512_ps((__m512i)v[1]);               \
        T r = OP((T)_mm512_castps_si512(_mm512_shuffle_ps(a, b, 0x88)), (T)_mm512_castps_si512(_mm512_shuffle_ps(a, b, 0xDD))); \
        const __m512i order = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);      \
        return (T)_mm512_permutexvar_epi32(order, (__m512i)r);                                               \
    }
ALWAYS_INLINE __m512 max_ps_(__m512 a, __m512 b) { return _mm512_max_ps(a, b); }
ALWAYS_INLINE __m512i add_epi32_(__m512i a, __m512i b) { return _mm512_add_epi32(a, b); }
DEFINE_REDUCE16(reduce16_max, __m512, max_ps_)
DEFINE_REDUCE16(reduce16_add, __m512i, add_epi32_)

// The lines of step b's even share of the n bytes at p (b of nb steps) into
// L2: a product over many tokens fetches the next pair this way while it
// reads the current one, a few lines per block instead of a burst.
ALWAYS_INLINE void prefetch_share(const void *p, int b, int nb, size_t n) {
    for (size_t l = (size_t)b * n / (size_t)nb & ~(size_t)63, e = (size_t)(b + 1) * n / (size_t)nb; l < e; l += 64)
        _mm_prefetch((const char *)p + l, _MM_HINT_T1);
}

// Whether a product over nt tokens writes its outputs (nt rows of ldo
// floats from out) past the caches, with non-temporal stores: when they are
// 1 MB or more (an L2 of Zen 5; they leave it before the next step reads
// them anyway) and every 32-float row of a pair starts a cache line. Each line is then
// written whole, without first being read for ownership. Callers end with
// _mm_sfence() (the pool's release store does not order these stores).
// Found on AMD EPYC Zen 5 (2026-12-06), Q4_K, 128 tokens, 1 thread: the
// later 8-token tiles of a cold pair (already in L2) took 4240-4290 cycles
// against 3780-3850 on pairs kept in L2, and 3790-3810 when every pair wrote
// to the same 32 columns; the stores' misses were the difference. Streamed,
// in turn in one process: every layer's w_gate (cold) through el_matmul,
// GOP/s, 1 / 2 threads: Q4_K 521 -> 571 / 1005 -> 1099, Q4_0 613 -> 619 /
// 1065 -> 1125, Q8_0 627 -> 626 / 1185 -> 1209; whole prefills of the
// TinyLlama-shaped models, 2 threads, median ms: 128 tokens Q4_K 296 -> 275,
// Q4_K_M 303 -> 290, Q8_0 261 -> 259, Q4_0 257 -> 254; 64 tokens Q4_K 140 ->
// 135; 512 tokens Q4_K 1323 -> 1237, Q8_0 1183 -> 1194 (within its noise).
// The limit, q4_k 128-token prefills in turn, median (best) ms of 40: every
// product streamed (the keys' and values' too) 308.1 (277.3), from 1 MB 308.1
// (286.4), from 2 MB 311.0 (286.4), none 315.8 (289.9). Not measured on Intel,
// whose L2 (2 MB on Xeon) holds a 1-2 MB output.
#define STREAM_OUT_BYTES ((size_t)1 << 20)
static inline int stream_outputs(const float *out, size_t ldo, int nt) {
    return nt > 1 && !((uintptr_t)out & 63) && !(ldo & 15) && (size_t)nt * ldo * sizeof(float) >= STREAM_OUT_BYTES;
}

// One token's 32 outputs of a pair (a and b: rows 0-15, 16-31) to o: streamed
// (stream_outputs) or stored.
ALWAYS_INLINE void stream_out(float *o, __m512 a, __m512 b, const int stream) {
    if (stream) {
        _mm512_stream_ps(o, a);
        _mm512_stream_ps(o + 16, b);
    } else {
        _mm512_storeu_ps(o, a);
        _mm512_storeu_ps(o + 16, b);
    }
}

// e^x to within 2 ulp of expf: x = n ln2 + r with |r| <= ln2/2 (ln2 split in
// a high part exact in float and a low correction), a degree-6 Taylor-form
// polynomial for e^r, and 2^n applied by vscalefps, which saturates to inf
// and to 0 (through the subnormals) the way expf does.
static inline __m512 exp512(__m512 x) {
    const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
    const __m512 ln2_hi = _mm512_set1_ps(0.693359375f), ln2_lo = _mm512_set1_ps(-2.12194440e-4f);
    // Beyond these e^x is 0 or inf in float anyway; clamping keeps ±inf from
    // making inf - inf below. max/min return their second operand for NaN,
    // so a NaN passes through.
    x = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-110.0f), x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, ln2_hi, x);
    r = _mm512_fnmadd_ps(n, ln2_lo, r);
    // 1 + r + r^2/2! + ... + r^7/7!, Horner
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

#endif
