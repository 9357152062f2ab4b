// Advanced SIMD versions of the row-wise ops (ops.c): SwiGLU and softmax,
// whose cost is the exponential, and the attention dot products. The same
// exponential as ops_avx512.c (range reduction, degree-7 polynomial); AArch64
// has no vscalefps, so 2^n is applied as two exact powers of two, which gives
// one rounding into the subnormals and saturates to inf as expf does.
#include <arm_neon.h>
#include <math.h>
#include <stddef.h>

#include "ops_simd.h"

static inline float32x4_t exp4(float32x4_t x) {
    const float32x4_t ln2_hi = vdupq_n_f32(0.693359375f), ln2_lo = vdupq_n_f32(-2.12194440e-4f);
    // Beyond these e^x is 0 or inf in float anyway; fmin/fmax pass a NaN on.
    x = vminq_f32(vdupq_n_f32(89.0f), vmaxq_f32(vdupq_n_f32(-110.0f), x));
    float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(1.44269504088896341f)));
    float32x4_t r = vfmsq_f32(x, n, ln2_hi);
    r = vfmsq_f32(r, n, ln2_lo);
    // 1 + r + r^2/2! + ... + r^7/7!, Horner
    float32x4_t p = vdupq_n_f32(1.0f / 5040);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 720), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 120), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 24), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 6), p, r);
    p = vfmaq_f32(vdupq_n_f32(0.5f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    // n in -159..129: 2^n = 2^a 2^b with a = n >> 1, b = n - a, both normal
    int32x4_t ni = vcvtq_s32_f32(n);
    int32x4_t a = vshrq_n_s32(ni, 1), b = vsubq_s32(ni, a);
    float32x4_t pa = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(a, vdupq_n_s32(127)), 23));
    float32x4_t pb = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(b, vdupq_n_s32(127)), 23));
    return vmulq_f32(vmulq_f32(p, pa), pb);
}

float el_exp_neon(float x) { return vgetq_lane_f32(exp4(vdupq_n_f32(x)), 0); }

static inline float32x4_t silu_mul(float32x4_t g, float32x4_t u) {
    float32x4_t e = exp4(vnegq_f32(g));
    return vmulq_f32(vdivq_f32(g, vaddq_f32(vdupq_n_f32(1.0f), e)), u);
}

void el_swiglu_neon(float *h, const float *g, const float *u, int n) {
    int i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(h + i, silu_mul(vld1q_f32(g + i), vld1q_f32(u + i)));
    if (i < n) {  // the tail through a padded copy: never reads or writes past n
        float gt[4] = {0}, ut[4] = {0}, ht[4];
        for (int j = 0; i + j < n; j++) gt[j] = g[i + j], ut[j] = u[i + j];
        vst1q_f32(ht, silu_mul(vld1q_f32(gt), vld1q_f32(ut)));
        for (int j = 0; i + j < n; j++) h[i + j] = ht[j];
    }
}

void el_softmax_neon(float *x, int n) {
    float32x4_t vmax = vdupq_n_f32(-INFINITY);
    int i = 0;
    for (; i + 4 <= n; i += 4) vmax = vmaxq_f32(vmax, vld1q_f32(x + i));
    float mx = vmaxvq_f32(vmax);
    for (int j = i; j < n; j++) mx = x[j] > mx ? x[j] : mx;
    float32x4_t vm = vdupq_n_f32(mx), sum = vdupq_n_f32(0);
    for (i = 0; i + 4 <= n; i += 4) {
        float32x4_t e = exp4(vsubq_f32(vld1q_f32(x + i), vm));
        vst1q_f32(x + i, e);
        sum = vaddq_f32(sum, e);
    }
    float s = vaddvq_f32(sum);
    for (; i < n; i++) {
        x[i] = vgetq_lane_f32(exp4(vdupq_n_f32(x[i] - mx)), 0);
        s += x[i];
    }
    float32x4_t inv = vdupq_n_f32(1.0f / s);
    for (i = 0; i + 4 <= n; i += 4) vst1q_f32(x + i, vmulq_f32(vld1q_f32(x + i), inv));
    for (; i < n; i++) x[i] *= 1.0f / s;
}

// Four positions at a time share each load of q. hd is a multiple of 4.
void el_attn_scores_neon(float *scores, const float *q, const float *k, size_t stride, int n, int hd, float scale) {
    int p = 0;
    for (; p + 4 <= n; p += 4) {
        const float *k0 = k + (size_t)p * stride, *k1 = k0 + stride, *k2 = k1 + stride, *k3 = k2 + stride;
        float32x4_t a0 = vdupq_n_f32(0), a1 = a0, a2 = a0, a3 = a0;
        for (int j = 0; j < hd; j += 4) {
            float32x4_t qv = vld1q_f32(q + j);
            a0 = vfmaq_f32(a0, qv, vld1q_f32(k0 + j));
            a1 = vfmaq_f32(a1, qv, vld1q_f32(k1 + j));
            a2 = vfmaq_f32(a2, qv, vld1q_f32(k2 + j));
            a3 = vfmaq_f32(a3, qv, vld1q_f32(k3 + j));
        }
        scores[p] = vaddvq_f32(a0) * scale;
        scores[p + 1] = vaddvq_f32(a1) * scale;
        scores[p + 2] = vaddvq_f32(a2) * scale;
        scores[p + 3] = vaddvq_f32(a3) * scale;
    }
    for (; p < n; p++) {
        const float *kp = k + (size_t)p * stride;
        float32x4_t a = vdupq_n_f32(0);
        for (int j = 0; j < hd; j += 4) a = vfmaq_f32(a, vld1q_f32(q + j), vld1q_f32(kp + j));
        scores[p] = vaddvq_f32(a) * scale;
    }
}

// 32 outputs at a time stay in registers while the value rows stream past;
// they accumulate onto what out holds (a cache read block by block).
// hd is a multiple of 4.
void el_attn_mix_neon(float *out, const float *w, const float *v, size_t stride, int n, int hd) {
    int j0 = 0;
    for (; j0 + 32 <= hd; j0 += 32) {
        float32x4_t acc[8];
        for (int j = 0; j < 8; j++) acc[j] = vld1q_f32(out + j0 + 4 * j);
        for (int p = 0; p < n; p++) {
            const float *vp = v + (size_t)p * stride + j0;
            _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) acc[j] = vfmaq_n_f32(acc[j], vld1q_f32(vp + 4 * j), w[p]);
        }
        for (int j = 0; j < 8; j++) vst1q_f32(out + j0 + 4 * j, acc[j]);
    }
    for (; j0 < hd; j0 += 4) {
        float32x4_t acc = vld1q_f32(out + j0);
        for (int p = 0; p < n; p++) acc = vfmaq_n_f32(acc, vld1q_f32(v + (size_t)p * stride + j0), w[p]);
        vst1q_f32(out + j0, acc);
    }
}
