// Advanced SIMD loops of the machine probes (probe.c): 12 independent FMA
// chains of 4 floats, and a 4-way unrolled read stream.
#include <arm_neon.h>

#include "probe.h"

double el_probe_fma_neon(long iters) {
    const float32x4_t m = vdupq_n_f32(0.999999f), c = vdupq_n_f32(1e-7f);
    float32x4_t a0 = vdupq_n_f32(0), a1 = vdupq_n_f32(1), a2 = vdupq_n_f32(2), a3 = vdupq_n_f32(3), a4 = vdupq_n_f32(4),
                a5 = vdupq_n_f32(5), a6 = vdupq_n_f32(6), a7 = vdupq_n_f32(7), a8 = vdupq_n_f32(8), a9 = vdupq_n_f32(9),
                a10 = vdupq_n_f32(10), a11 = vdupq_n_f32(11);
    for (long it = 0; it < iters; it++) {
        a0 = vfmaq_f32(c, a0, m), a1 = vfmaq_f32(c, a1, m), a2 = vfmaq_f32(c, a2, m), a3 = vfmaq_f32(c, a3, m);
        a4 = vfmaq_f32(c, a4, m), a5 = vfmaq_f32(c, a5, m), a6 = vfmaq_f32(c, a6, m), a7 = vfmaq_f32(c, a7, m);
        a8 = vfmaq_f32(c, a8, m), a9 = vfmaq_f32(c, a9, m), a10 = vfmaq_f32(c, a10, m), a11 = vfmaq_f32(c, a11, m);
    }
    float32x4_t s = vaddq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)), vaddq_f32(vaddq_f32(a4, a5), vaddq_f32(a6, a7)));
    s = vaddq_f32(s, vaddq_f32(vaddq_f32(a8, a9), vaddq_f32(a10, a11)));
    volatile float sink = vgetq_lane_f32(s, 0);
    (void)sink;
    return (double)iters * 12 * 4 * 2;
}

uint64_t el_probe_read_neon(const void *buf, size_t bytes) {
    const uint8_t *p = buf;
    uint8x16_t a0 = vdupq_n_u8(0), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 64 <= bytes; i += 64) {
        a0 = veorq_u8(a0, vld1q_u8(p + i));
        a1 = veorq_u8(a1, vld1q_u8(p + i + 16));
        a2 = veorq_u8(a2, vld1q_u8(p + i + 32));
        a3 = veorq_u8(a3, vld1q_u8(p + i + 48));
    }
    uint64x2_t s = vreinterpretq_u64_u8(veorq_u8(veorq_u8(a0, a1), veorq_u8(a2, a3)));
    return vgetq_lane_u64(s, 0) ^ vgetq_lane_u64(s, 1);
}
