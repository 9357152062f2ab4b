// Armv8.6 i8mm tile kernels for Q8_0 and Q4_0: smmla multiplies a 2x8 block
// of int8 by another 2x8 transposed, so one instruction gives two weight rows
// x two tokens over 8 elements (32 multiply-adds, twice an sdot's). The rows'
// and tokens' 8-byte pieces are put side by side with zip1/zip2 of 64-bit
// lanes; the four int32 of a 2x2 tile are scaled by [wd0 xd0, wd0 xd1,
// wd1 xd0, wd1 xd1] and land in four outputs with no horizontal sum.
// An odd row or token, and decode (one token), use the sdot kernels of
// qdot_arm.h; the K-quants are those too. Only called after run-time
// detection found i8mm (HWCAP2_I8MM) and dotprod.
#include <arm_neon.h>

static inline int32x4_t dot16(int32x4_t acc, int8x16_t a, int8x16_t b) { return vdotq_s32(acc, a, b); }
static inline int32x4_t pair_dot16(int32x4_t acc, int8x16_t a, int8x16_t b) { return vdotq_s32(acc, a, b); }

#define EL_ARM_PACKED
#include "qdot_arm.h"

ALWAYS_INLINE int8x16_t zip_lo(int8x16_t a, int8x16_t b) {
    return vreinterpretq_s8_s64(vzip1q_s64(vreinterpretq_s64_s8(a), vreinterpretq_s64_s8(b)));
}
ALWAYS_INLINE int8x16_t zip_hi(int8x16_t a, int8x16_t b) {
    return vreinterpretq_s8_s64(vzip2q_s64(vreinterpretq_s64_s8(a), vreinterpretq_s64_s8(b)));
}

// 2*P rows (P <= 2 pairs) x 2 tokens; the tokens' zipped pieces are shared
// by the row pairs.
#define DEFINE_MM(NAME, BLK, LOADW)                                                                           \
    ALWAYS_INLINE void NAME(int k, const char *w, size_t ldw, const char *x, size_t ldx, float *out, size_t ldo, \
                            const int P) {                                                                    \
        const int nb = k / EL_QK;                                                                             \
        const int8_t *x0 = (const int8_t *)x, *x1 = (const int8_t *)(x + ldx);                                \
        const float *d0 = (const float *)(x0 + k), *d1 = (const float *)(x1 + k);                            \
        float32x4_t acc[2] = {vdupq_n_f32(0), vdupq_n_f32(0)}; /* [r0t0, r0t1, r1t0, r1t1] per pair */       \
        for (int b = 0; b < nb; b++) {                                                                        \
            int8x16_t u0 = vld1q_s8(x0 + EL_QK * b), u1 = vld1q_s8(x0 + EL_QK * b + 16);                      \
            int8x16_t v0 = vld1q_s8(x1 + EL_QK * b), v1 = vld1q_s8(x1 + EL_QK * b + 16);                      \
            int8x16_t t0 = zip_lo(u0, v0), t1 = zip_hi(u0, v0), t2 = zip_lo(u1, v1), t3 = zip_hi(u1, v1);     \
            float32x4_t xd = {d0[b], d1[b], d0[b], d1[b]};                                                    \
            _Pragma("GCC unroll 2") for (int p = 0; p < P; p++) {                                             \
                const BLK *ba = (const BLK *)(w + (size_t)(2 * p) * ldw) + b;                                 \
                const BLK *bb = (const BLK *)(w + (size_t)(2 * p + 1) * ldw) + b;                             \
                int8x16_t a0, a1, c0, c1;                                                                     \
                LOADW(ba, &a0, &a1);                                                                          \
                LOADW(bb, &c0, &c1);                                                                          \
                int32x4_t s = vmmlaq_s32(vdupq_n_s32(0), zip_lo(a0, c0), t0);                                 \
                s = vmmlaq_s32(s, zip_hi(a0, c0), t1);                                                        \
                s = vmmlaq_s32(s, zip_lo(a1, c1), t2);                                                        \
                s = vmmlaq_s32(s, zip_hi(a1, c1), t3);                                                        \
                float wa = f16_to_f32(ba->d), wb = f16_to_f32(bb->d);                                        \
                float32x4_t wd = {wa, wa, wb, wb};                                                            \
                acc[p] = vfmaq_f32(acc[p], vcvtq_f32_s32(s), vmulq_f32(wd, xd));                              \
            }                                                                                                 \
        }                                                                                                     \
        _Pragma("GCC unroll 2") for (int p = 0; p < P; p++) {                                                 \
            out[2 * p] = vgetq_lane_f32(acc[p], 0);                                                           \
            out[2 * p + 1] = vgetq_lane_f32(acc[p], 2);                                                       \
            out[ldo + 2 * p] = vgetq_lane_f32(acc[p], 1);                                                     \
            out[ldo + 2 * p + 1] = vgetq_lane_f32(acc[p], 3);                                                 \
        }                                                                                                     \
    }

DEFINE_MM(mm_q8_0, el_block_q8_0, load_q8_0)
DEFINE_MM(mm_q4_0, el_block_q4_0, load_q4_0)

#define DEFINE_MM_GEMM(NAME, MM, MICRO, TILES)                                                               \
    static void NAME(int k, const void *w, size_t ldw, int nr, const void *x, size_t ldx, int nt, float *out, \
                     size_t ldo) {                                                                           \
        const char *wc = w, *xc = x;                                                                         \
        int t = 0;                                                                                           \
        for (; t + 2 <= nt; t += 2) {                                                                        \
            const char *xt = xc + (size_t)t * ldx;                                                           \
            float *ot = out + (size_t)t * ldo;                                                               \
            int r = 0;                                                                                       \
            for (; r + 4 <= nr; r += 4) MM(k, wc + (size_t)r * ldw, ldw, xt, ldx, ot + r, ldo, 2);           \
            for (; r + 2 <= nr; r += 2) MM(k, wc + (size_t)r * ldw, ldw, xt, ldx, ot + r, ldo, 1);           \
            if (r < nr) MICRO(k, wc + (size_t)r * ldw, ldw, xt, ldx, ot + r, ldo, 1, 2);                     \
        }                                                                                                    \
        if (t < nt) TILES(k, w, ldw, nr, xc + (size_t)t * ldx, ldx, 1, out + (size_t)t * ldo, ldo);          \
    }

DEFINE_MM_GEMM(gemm_mm_q8_0, mm_q8_0, micro_q8_0, gemm_q8_0)
DEFINE_MM_GEMM(gemm_mm_q4_0, mm_q4_0, micro_q4_0, gemm_q4_0)

// ---------------------------------------------------------------- packed

// On pack.c's AArch64 layout a pair's 16 bytes over 8 columns are already
// smmla's 2x8 operand: no zips on the weight side. P pairs x 2 tokens; the
// tile [r0t0, r0t1, r1t0, r1t1] of two pairs unzips into 4 rows of each token.
ALWAYS_INLINE void packed_mm(const int q8, int k, const uint8_t *unit, int p0, const int P, const char *x, size_t ldx,
                             float *out, size_t ldo) {
    const int nb = k / EL_QK;
    const int8_t *x0 = (const int8_t *)x, *x1 = (const int8_t *)(x + ldx);
    const float *d0 = (const float *)(x0 + k), *d1 = (const float *)(x1 + k);
    float32x4_t acc[8];
    _Pragma("GCC unroll 8") for (int p = 0; p < P; p++) acc[p] = vdupq_n_f32(0);
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = unit + (size_t)b * PACK_BB(q8);
        int8x16_t z[4];
        _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++)
            z[c] = vcombine_s8(vld1_s8(x0 + EL_QK * b + 8 * c), vld1_s8(x1 + EL_QK * b + 8 * c));
        float32x4_t xd = {d0[b], d1[b], d0[b], d1[b]};
        _Pragma("GCC unroll 8") for (int p = 0; p < P; p++) {
            int8x16_t w[4];
            load_pair(q8, blk + (size_t)(p0 + p) * PACK_PB(q8), w);
            int32x4_t s = vmmlaq_s32(vdupq_n_s32(0), w[0], z[0]);
            s = vmmlaq_s32(s, w[1], z[1]);
            s = vmmlaq_s32(s, w[2], z[2]);
            s = vmmlaq_s32(s, w[3], z[3]);
            float32x4_t sc = vmulq_f32(pair_scales(blk + 16 * PACK_PB(q8), p0 + p), xd);
            acc[p] = vfmaq_f32(acc[p], vcvtq_f32_s32(s), sc);
        }
    }
    _Pragma("GCC unroll 4") for (int p = 0; p < P; p += 2) {
        vst1q_f32(out + 2 * (p0 + p), vuzp1q_f32(acc[p], acc[p + 1]));
        vst1q_f32(out + ldo + 2 * (p0 + p), vuzp2q_f32(acc[p], acc[p + 1]));
    }
}

// Decode (one token) and an odd token: the sdot kernel of qdot_arm.h.
#define DEFINE_PACKED_MM_GEMM(NAME, Q8, DECODE)                                                                \
    static void NAME(int k, const void *w, size_t ldw, int nr, const void *x, size_t ldx, int nt, float *out,   \
                     size_t ldo) {                                                                             \
        if (nt == 1) {                                                                                         \
            DECODE(k, w, ldw, nr, x, ldx, nt, out, ldo);                                                       \
            return;                                                                                            \
        }                                                                                                      \
        for (int u = 0; u < nr / 32; u++) {                                                                    \
            const uint8_t *unit = (const uint8_t *)w + (size_t)u * ldw;                                        \
            float *ou = out + 32 * u;                                                                          \
            for (int p0 = 0; p0 < 16; p0 += 8) {                                                               \
                int t = 0;                                                                                     \
                for (; t + 2 <= nt; t += 2)                                                                    \
                    packed_mm(Q8, k, unit, p0, 8, (const char *)x + (size_t)t * ldx, ldx, ou + (size_t)t * ldo, ldo); \
                if (t < nt)                                                                                    \
                    packed_micro(Q8, k, unit, p0, 8, (const char *)x + (size_t)t * ldx, ldx, ou + (size_t)t * ldo, ldo, 1); \
            }                                                                                                  \
        }                                                                                                      \
    }

DEFINE_PACKED_MM_GEMM(gemm_packed_mm_q8_0, 1, gemm_packed_q8_0)
DEFINE_PACKED_MM_GEMM(gemm_packed_mm_q4_0, 0, gemm_packed_q4_0)

el_gemm_fn el_gemm_packed_i8mm(int dtype) {
    switch (dtype) {
    case EL_DTYPE_Q8_0: return gemm_packed_mm_q8_0;
    case EL_DTYPE_Q4_0: return gemm_packed_mm_q4_0;
    }
    return packed_kernels(dtype);  // (no other packed type yet)
}

el_gemm_fn el_gemm_i8mm(int dtype) {
    switch (dtype) {
    case EL_DTYPE_Q8_0: return gemm_mm_q8_0;
    case EL_DTYPE_Q4_0: return gemm_mm_q4_0;
    }
    return int_kernels(dtype);
}
