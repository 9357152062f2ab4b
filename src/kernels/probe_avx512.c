// AVX-512 FMA loop of the machine probe (see probe_avx2.c).
#include <immintrin.h>
#include <stdint.h>

#include "probe.h"

double el_probe_fma_avx512(long iters) {
    // Twelve named accumulators: an array of vectors is not always kept in
    // registers, and a load + store per FMA halves what this measures.
    const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    __m512 a0 = _mm512_set1_ps(0), a1 = _mm512_set1_ps(1), a2 = _mm512_set1_ps(2), a3 = _mm512_set1_ps(3), a4 = _mm512_set1_ps(4),
           a5 = _mm512_set1_ps(5), a6 = _mm512_set1_ps(6), a7 = _mm512_set1_ps(7), a8 = _mm512_set1_ps(8), a9 = _mm512_set1_ps(9),
           a10 = _mm512_set1_ps(10), a11 = _mm512_set1_ps(11);
    for (long it = 0; it < iters; it++) {
        a0 = _mm512_fmadd_ps(a0, m, c), a1 = _mm512_fmadd_ps(a1, m, c), a2 = _mm512_fmadd_ps(a2, m, c), a3 = _mm512_fmadd_ps(a3, m, c);
        a4 = _mm512_fmadd_ps(a4, m, c), a5 = _mm512_fmadd_ps(a5, m, c), a6 = _mm512_fmadd_ps(a6, m, c), a7 = _mm512_fmadd_ps(a7, m, c);
        a8 = _mm512_fmadd_ps(a8, m, c), a9 = _mm512_fmadd_ps(a9, m, c), a10 = _mm512_fmadd_ps(a10, m, c), a11 = _mm512_fmadd_ps(a11, m, c);
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)), _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
    volatile float sink = _mm512_reduce_add_ps(s);
    (void)sink;
    return (double)iters * 12 * 16 * 2;
}

// Integer dot-product throughput (needs AVX512-VNNI): 16 independent
// vpdpbusd chains, 64 multiply-adds (128 ops) each. 8 chains were enough on
// AMD Zen 4 (two a cycle at latency 2-3) but not on Intel Xeon (Emerald
// Rapids, 2026-12-06: latency ~5 and two ports want 10 or more in flight): 8
// chains read 3.86 G vpdpbusd/s a core there, 12 read 4.96 and 16 read 5.85.
// Zero operands keep the integer sums fixed; the timing of these
// instructions does not depend on the data. Named accumulators: an array of
// vectors is not always kept in registers.
static double dot_chains(long iters) {
    __m512i w = _mm512_setzero_si512(), x = _mm512_setzero_si512();
    __asm__("" : "+v"(w), "+v"(x));  // opaque: no folding of x + 0 * 0
    // distinct starting values: equal chains would be merged into one
    __m512i a0 = _mm512_set1_epi32(0), a1 = _mm512_set1_epi32(1), a2 = _mm512_set1_epi32(2), a3 = _mm512_set1_epi32(3),
            a4 = _mm512_set1_epi32(4), a5 = _mm512_set1_epi32(5), a6 = _mm512_set1_epi32(6), a7 = _mm512_set1_epi32(7),
            a8 = _mm512_set1_epi32(8), a9 = _mm512_set1_epi32(9), a10 = _mm512_set1_epi32(10),
            a11 = _mm512_set1_epi32(11), a12 = _mm512_set1_epi32(12), a13 = _mm512_set1_epi32(13),
            a14 = _mm512_set1_epi32(14), a15 = _mm512_set1_epi32(15);
#define EL_DOT16()                                                                                                 \
    a0 = _mm512_dpbusd_epi32(a0, w, x), a1 = _mm512_dpbusd_epi32(a1, w, x), a2 = _mm512_dpbusd_epi32(a2, w, x),     \
    a3 = _mm512_dpbusd_epi32(a3, w, x), a4 = _mm512_dpbusd_epi32(a4, w, x), a5 = _mm512_dpbusd_epi32(a5, w, x),     \
    a6 = _mm512_dpbusd_epi32(a6, w, x), a7 = _mm512_dpbusd_epi32(a7, w, x), a8 = _mm512_dpbusd_epi32(a8, w, x),     \
    a9 = _mm512_dpbusd_epi32(a9, w, x), a10 = _mm512_dpbusd_epi32(a10, w, x), a11 = _mm512_dpbusd_epi32(a11, w, x), \
    a12 = _mm512_dpbusd_epi32(a12, w, x), a13 = _mm512_dpbusd_epi32(a13, w, x),                                   \
    a14 = _mm512_dpbusd_epi32(a14, w, x), a15 = _mm512_dpbusd_epi32(a15, w, x)
    for (long it = 0; it < iters; it++) {
        EL_DOT16();
        EL_DOT16();
    }
#undef EL_DOT16
    __m512i s = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)),
                                 _mm512_add_epi32(_mm512_add_epi32(a4, a5), _mm512_add_epi32(a6, a7)));
    s = _mm512_add_epi32(s, _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a8, a9), _mm512_add_epi32(a10, a11)),
                                             _mm512_add_epi32(_mm512_add_epi32(a12, a13), _mm512_add_epi32(a14, a15))));
    volatile int sink = _mm512_reduce_add_epi32(s);
    (void)sink;
    return (double)iters * 32 * 64 * 2;
}

// What a 32-element block with a float scale costs the Q8_0 and Q4_0 kernels
// (qdot_avx512.c) per 16 rows and token, done the way they do it: the block's
// integer sum starts from a seed (a broadcast load), takes 8 vpdpbusd, and is
// then converted, multiplied by the product of the two scales and added into
// the float result with an FMA. Eight blocks an iteration. The chains end
// with their block, as the kernels' do, so an iteration's blocks and the
// next ones overlap. (Until 2026-12-06 the probe ran 16 endless chains and
// put the float steps between their vpdpbusd: on AMD Zen 5 that read 0.57
// of the int8 peak while the Q8_0 kernel itself ran at 0.78; this form
// reads 0.80 there.)
static double dot_blocks(long iters) {
    __m512i w = _mm512_setzero_si512(), x = _mm512_setzero_si512();
    __m512 sw = _mm512_set1_ps(0.5f), sx = _mm512_set1_ps(0.25f);
    __asm__("" : "+v"(w), "+v"(x), "+v"(sw), "+v"(sx));  // opaque: no folding of x + 0 * 0
    static const int32_t seeds[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    const int32_t *sp = seeds;
    __m512 f0 = _mm512_set1_ps(1), f1 = _mm512_set1_ps(2), f2 = _mm512_set1_ps(3), f3 = _mm512_set1_ps(4),
           f4 = _mm512_set1_ps(5), f5 = _mm512_set1_ps(6), f6 = _mm512_set1_ps(7), f7 = _mm512_set1_ps(8);
    for (long it = 0; it < iters; it++) {
        __asm__("" : "+r"(sp));  // the seeds are loaded every iteration, as the kernels load theirs
        __m512i a0 = _mm512_set1_epi32(sp[0]), a1 = _mm512_set1_epi32(sp[1]), a2 = _mm512_set1_epi32(sp[2]),
                a3 = _mm512_set1_epi32(sp[3]), a4 = _mm512_set1_epi32(sp[4]), a5 = _mm512_set1_epi32(sp[5]),
                a6 = _mm512_set1_epi32(sp[6]), a7 = _mm512_set1_epi32(sp[7]);
        _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) {
            a0 = _mm512_dpbusd_epi32(a0, w, x), a1 = _mm512_dpbusd_epi32(a1, w, x);
            a2 = _mm512_dpbusd_epi32(a2, w, x), a3 = _mm512_dpbusd_epi32(a3, w, x);
            a4 = _mm512_dpbusd_epi32(a4, w, x), a5 = _mm512_dpbusd_epi32(a5, w, x);
            a6 = _mm512_dpbusd_epi32(a6, w, x), a7 = _mm512_dpbusd_epi32(a7, w, x);
        }
        // each block has its own activation scale: sx is made opaque before
        // each product so that the eight products stay eight
#define EL_SCALE(f, a) __asm__("" : "+v"(sx)); f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), _mm512_mul_ps(sw, sx), f)
        EL_SCALE(f0, a0);
        EL_SCALE(f1, a1);
        EL_SCALE(f2, a2);
        EL_SCALE(f3, a3);
        EL_SCALE(f4, a4);
        EL_SCALE(f5, a5);
        EL_SCALE(f6, a6);
        EL_SCALE(f7, a7);
#undef EL_SCALE
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(f0, f1), _mm512_add_ps(f2, f3)),
                             _mm512_add_ps(_mm512_add_ps(f4, f5), _mm512_add_ps(f6, f7)));
    volatile float sink = _mm512_reduce_add_ps(s);
    (void)sink;
    return (double)iters * 64 * 64 * 2;
}

double el_probe_dot_avx512(long iters, int block) { return block ? dot_blocks(iters) : dot_chains(iters); }
