// Internal to src/kernels, for the *_avx512.c files only (they are compiled
// with AVX-512 enabled): vector helpers shared between them.
#ifndef EL_KERNELS_SIMD_AVX512_H
#define EL_KERNELS_SIMD_AVX512_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#ifndef ALWAYS_INLINE
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#endif

// The 4 bytes at p (activation bytes, or 2 int16) in every lane: the
// broadcast operand of vpdpbusd and vpdpwssd.
ALWAYS_INLINE __m512i bcast4(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

// The lines of step b's even share of the n bytes at p (b of nb steps) into
// L2: a product over many tokens fetches the next pair this way while it
// reads the current one, a few lines per block instead of a burst.
ALWAYS_INLINE void prefetch_share(const void *p, int b, int nb, size_t n) {
    for (size_t l = (size_t)b * n / (size_t)nb & ~(size_t)63, e = (size_t)(b + 1) * n / (size_t)nb; l < e; l += 64)
        _mm_prefetch((const char *)p + l, _MM_HINT_T1);
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
