// Advanced SIMD (every AArch64 CPU) tile kernels, the activation quantizers
// of all AArch64 levels, and the f16/bf16 row products. Only called after
// run-time detection (src/core/cpu.c). Byte products widen to int16 (smull,
// smlal2: two products a lane, at most 2 * 128 * 127, no overflow since
// activations are clamped to +-127) and pair up into int32 (sadalp).
#include <arm_neon.h>
#include <math.h>

static inline int32x4_t dot16(int32x4_t acc, int8x16_t a, int8x16_t b) {
    int16x8_t p = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    p = vmlal_high_s8(p, a, b);
    return vpadalq_s16(acc, p);
}

#include "qdot_arm.h"

// ---------------------------------------------------------------- f16 / bf16

static float dot_f16(int n, const uint16_t *w, const float *x) {
    float32x4_t a0 = vdupq_n_f32(0), a1 = vdupq_n_f32(0);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(w + i));
        a0 = vfmaq_f32(a0, vcvt_f32_f16(vget_low_f16(h)), vld1q_f32(x + i));
        a1 = vfmaq_f32(a1, vcvt_high_f32_f16(h), vld1q_f32(x + i + 4));
    }
    float s = vaddvq_f32(vaddq_f32(a0, a1));
    for (; i < n; i++) s += f16_to_f32(w[i]) * x[i];
    return s;
}

// bf16 is the top half of an f32: shifting left by 16 converts exactly
static float dot_bf16(int n, const uint16_t *w, const float *x) {
    float32x4_t a0 = vdupq_n_f32(0), a1 = vdupq_n_f32(0);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        uint16x8_t v = vld1q_u16(w + i);
        a0 = vfmaq_f32(a0, vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(v), 16)), vld1q_f32(x + i));
        a1 = vfmaq_f32(a1, vreinterpretq_f32_u32(vshll_high_n_u16(v, 16)), vld1q_f32(x + i + 4));
    }
    float s = vaddvq_f32(vaddq_f32(a0, a1));
    for (; i < n; i++) s += el_bf16_to_f32(w[i]) * x[i];
    return s;
}

ROWWISE_GEMM(gemm_f16, dot_f16, uint16_t, float)
ROWWISE_GEMM(gemm_bf16, dot_bf16, uint16_t, float)

el_gemm_fn el_gemm_neon(int dtype) {
    switch (dtype) {
    case EL_DTYPE_F16: return gemm_f16;
    case EL_DTYPE_BF16: return gemm_bf16;
    }
    return int_kernels(dtype);
}

// ---------------------------------------------------------------- activations

// q = clamp(round-to-nearest-even(v * id), -127, 127) for 4 values (fcvtns
// rounds as the scalar round_even / nearbyintf do).
ALWAYS_INLINE int32x4_t quant4(float32x4_t v, float id) {
    int32x4_t q = vcvtnq_s32_f32(vmulq_n_f32(v, id));
    return vminq_s32(vmaxq_s32(q, vdupq_n_s32(-127)), vdupq_n_s32(127));
}

ALWAYS_INLINE int8x16_t narrow16(int32x4_t a, int32x4_t b, int32x4_t c, int32x4_t d) {
    int16x8_t lo = vcombine_s16(vmovn_s32(a), vmovn_s32(b)), hi = vcombine_s16(vmovn_s32(c), vmovn_s32(d));
    return vcombine_s8(vmovn_s16(lo), vmovn_s16(hi));
}

// The bytes of el_act_quantize_q8_0_scalar. maxnm ignores a NaN as the
// scalar comparison does.
void el_act_quantize_q8_0_neon(const float *x, void *dst, int k) {
    int8_t *qs = dst;
    float *d = (float *)(qs + k);
    int32_t *nsum = (int32_t *)(d + k / EL_QK);
    for (int b = 0; b < k / EL_QK; b++) {
        const float *xb = x + EL_QK * b;
        float32x4_t v[8], m = vdupq_n_f32(0);
        _Pragma("GCC unroll 8") for (int i = 0; i < 8; i++) {
            v[i] = vld1q_f32(xb + 4 * i);
            m = vmaxnmq_f32(m, vabsq_f32(v[i]));
        }
        float amax = vmaxnmvq_f32(m);
        float db = amax / 127.0f, id = db ? 127.0f / amax : 0.0f;
        int32x4_t sum = vdupq_n_s32(0);
        _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) {
            int32x4_t q0 = quant4(v[4 * h], id), q1 = quant4(v[4 * h + 1], id);
            int32x4_t q2 = quant4(v[4 * h + 2], id), q3 = quant4(v[4 * h + 3], id);
            sum = vaddq_s32(vaddq_s32(sum, vaddq_s32(q0, q1)), vaddq_s32(q2, q3));
            vst1q_s8(qs + EL_QK * b + 16 * h, narrow16(q0, q1, q2, q3));
        }
        d[b] = db;
        nsum[b] = -vaddvq_s32(sum);
    }
}

// The bytes of el_quantize_row_q8_k (scale amax/127, its reciprocal, fmaxf).
void el_act_quantize_q8_k_neon(const float *x, void *dst, int k) {
    el_block_q8_k *y = dst;
    for (int b = 0; b < k / EL_QK_K; b++, x += EL_QK_K) {
        float32x4_t m = vdupq_n_f32(0);
        _Pragma("GCC unroll 8") for (int i = 0; i < EL_QK_K; i += 4) m = vmaxnmq_f32(m, vabsq_f32(vld1q_f32(x + i)));
        float amax = vmaxnmvq_f32(m);
        float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        y[b].d = d;
        for (int g = 0; g < 16; g++) {
            const float *xg = x + 16 * g;
            int32x4_t q0 = quant4(vld1q_f32(xg), id), q1 = quant4(vld1q_f32(xg + 4), id);
            int32x4_t q2 = quant4(vld1q_f32(xg + 8), id), q3 = quant4(vld1q_f32(xg + 12), id);
            vst1q_s8(y[b].qs + 16 * g, narrow16(q0, q1, q2, q3));
            y[b].bsums[g] = (int16_t)vaddvq_s32(vaddq_s32(vaddq_s32(q0, q1), vaddq_s32(q2, q3)));
        }
    }
}
