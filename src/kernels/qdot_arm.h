// Internal to src/kernels: the body of the AArch64 integer tile kernels,
// written once and compiled per level. qdot_neon.c and qdot_dotprod.c (and
// qdot_i8mm.c, for its tails) define
//     int32x4_t dot16(int32x4_t acc, int8x16_t a, int8x16_t b)
// (acc plus the 16 products a[i] * b[i], summed four to a lane; which four
// does not matter, every caller adds all lanes with one weight), then
// include this file and hand out int_kernels() from their table. With
// EL_ARM_PACKED defined they also define
//     int32x4_t pair_dot16(int32x4_t acc, int8x16_t a, int8x16_t b)
// (the same, but lanes 0-1 take products 0-7 and lanes 2-3 products 8-15:
// the two rows of a packed pair) and get packed_kernels() too. The
// Advanced SIMD level has none: without sdot a pair's two rows widen
// separately, and the packed kernel ran more instructions per block (19.7
// decode, 16.3 prefill) than the file-layout one (18.5, 15.2;
// bench/arm64_block_cost.sh).
// The levels differ only in dot16: Advanced SIMD widens to int16 and pairs
// up (smull, smlal2, sadalp), dotprod has sdot.
//
// Integer sums equal the scalar reference's exactly. Q8_0/Q4_0 then scale and
// add in float lanes (the order of additions differs from the scalar one);
// Q4_K and Q6_K reduce to one integer per super-block and apply the scalar
// reference's float expression, so they give its bits.
#ifndef EL_KERNELS_QDOT_ARM_H
#define EL_KERNELS_QDOT_ARM_H

#include <arm_neon.h>
#include <string.h>

#include "edgellm/quant.h"
#include "qdot.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

ALWAYS_INLINE float f16_to_f32(uint16_t h) {
    return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0);
}

// ---------------------------------------------------------------- Q8_0 / Q4_0

// A block's 32 weights as two vectors of signed bytes (elements 0..15, 16..31).
ALWAYS_INLINE void load_q8_0(const el_block_q8_0 *b, int8x16_t *w0, int8x16_t *w1) {
    *w0 = vld1q_s8(b->qs);
    *w1 = vld1q_s8(b->qs + 16);
}

// q - 8 in -8..7: sum (q - 8) x is the scalar's sum q x + 8 nsum
ALWAYS_INLINE void load_q4_0(const el_block_q4_0 *b, int8x16_t *w0, int8x16_t *w1) {
    uint8x16_t raw = vld1q_u8(b->qs);
    const int8x16_t eight = vdupq_n_s8(8);
    *w0 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(raw, vdupq_n_u8(15))), eight);
    *w1 = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(raw, 4)), eight);
}

// R rows x T tokens (R, T <= 2): each weight block is loaded once for the T
// tokens, each activation block once for the R rows.
#define DEFINE_MICRO(NAME, BLK, LOADW)                                                                        \
    ALWAYS_INLINE void NAME(int k, const char *w, size_t ldw, const char *x, size_t ldx, float *out, size_t ldo, \
                            const int R, const int T) {                                                       \
        const int nb = k / EL_QK;                                                                             \
        float32x4_t acc[2][2];                                                                                \
        const int8_t *xq[2];                                                                                  \
        const float *xd[2];                                                                                   \
        _Pragma("GCC unroll 2") for (int t = 0; t < T; t++) {                                                 \
            xq[t] = (const int8_t *)(x + (size_t)t * ldx);                                                    \
            xd[t] = (const float *)(xq[t] + k);                                                               \
            _Pragma("GCC unroll 2") for (int r = 0; r < R; r++) acc[r][t] = vdupq_n_f32(0);                   \
        }                                                                                                     \
        for (int b = 0; b < nb; b++) {                                                                        \
            int8x16_t x0[2], x1[2];                                                                           \
            _Pragma("GCC unroll 2") for (int t = 0; t < T; t++) {                                             \
                x0[t] = vld1q_s8(xq[t] + EL_QK * b);                                                          \
                x1[t] = vld1q_s8(xq[t] + EL_QK * b + 16);                                                     \
            }                                                                                                 \
            _Pragma("GCC unroll 2") for (int r = 0; r < R; r++) {                                             \
                const BLK *blk = (const BLK *)(w + (size_t)r * ldw) + b;                                      \
                int8x16_t w0, w1;                                                                             \
                LOADW(blk, &w0, &w1);                                                                         \
                float wd = f16_to_f32(blk->d);                                                                \
                _Pragma("GCC unroll 2") for (int t = 0; t < T; t++) {                                         \
                    int32x4_t s = dot16(dot16(vdupq_n_s32(0), w0, x0[t]), w1, x1[t]);                         \
                    acc[r][t] = vfmaq_n_f32(acc[r][t], vcvtq_f32_s32(s), wd * xd[t][b]);                      \
                }                                                                                             \
            }                                                                                                 \
        }                                                                                                     \
        _Pragma("GCC unroll 2") for (int r = 0; r < R; r++) _Pragma("GCC unroll 2") for (int t = 0; t < T; t++) \
            out[(size_t)t * ldo + r] = vaddvq_f32(acc[r][t]);                                                 \
    }

DEFINE_MICRO(micro_q8_0, el_block_q8_0, load_q8_0)
DEFINE_MICRO(micro_q4_0, el_block_q4_0, load_q4_0)

// Tiles of 2 rows x 2 tokens, then the odd row and token.
#define DEFINE_GEMM(NAME, MICRO)                                                                             \
    static void NAME(int k, const void *w, size_t ldw, int nr, const void *x, size_t ldx, int nt, float *out, \
                     size_t ldo) {                                                                           \
        const char *wc = w, *xc = x;                                                                         \
        for (int t = 0; t < nt; t += 2) {                                                                    \
            const char *xt = xc + (size_t)t * ldx;                                                           \
            float *ot = out + (size_t)t * ldo;                                                               \
            int r = 0;                                                                                       \
            if (nt - t >= 2) {                                                                               \
                for (; r + 2 <= nr; r += 2) MICRO(k, wc + (size_t)r * ldw, ldw, xt, ldx, ot + r, ldo, 2, 2); \
                for (; r < nr; r++) MICRO(k, wc + (size_t)r * ldw, ldw, xt, ldx, ot + r, ldo, 1, 2);         \
            } else {                                                                                         \
                for (; r + 2 <= nr; r += 2) MICRO(k, wc + (size_t)r * ldw, ldw, xt, ldx, ot + r, ldo, 2, 1); \
                for (; r < nr; r++) MICRO(k, wc + (size_t)r * ldw, ldw, xt, ldx, ot + r, ldo, 1, 1);         \
            }                                                                                                \
        }                                                                                                    \
    }

DEFINE_GEMM(gemm_q8_0, micro_q8_0)
DEFINE_GEMM(gemm_q4_0, micro_q4_0)

// ---------------------------------------------------------------- packed Q8_0 / Q4_0
#ifdef EL_ARM_PACKED

// pack.c's AArch64 layout: units of 32 rows, ldw bytes apart; per block of 32
// columns (PACK_BB bytes) 16 row pairs of PACK_PB bytes, then the 32 rows'
// f16 scales. A pair holds its two rows' bytes 8 at a time, side by side,
// so one 16-byte load is [row 2p | row 2p+1] over 8 columns (Q8_0) or, as
// nibbles, over 8 columns and the 8 columns 16 further on (Q4_0).
#define PACK_PB(q8) ((q8) ? 64 : 32)
#define PACK_BB(q8) (16 * PACK_PB(q8) + 64)

// A pair's block as 4 vectors [row 2p | row 2p+1] of columns 0-7, 8-15,
// 16-23, 24-31 (Q4_0: q - 8, as load_q4_0).
ALWAYS_INLINE void load_pair(const int q8, const uint8_t *pp, int8x16_t *w) {
    if (q8) {
        int8x16x4_t v = vld1q_s8_x4((const int8_t *)pp);
        w[0] = v.val[0], w[1] = v.val[1], w[2] = v.val[2], w[3] = v.val[3];
    } else {
        uint8x16_t c0 = vld1q_u8(pp), c1 = vld1q_u8(pp + 16);
        const uint8x16_t m4 = vdupq_n_u8(15);
        const int8x16_t eight = vdupq_n_s8(8);
        w[0] = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(c0, m4)), eight);
        w[1] = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(c1, m4)), eight);
        w[2] = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(c0, 4)), eight);
        w[3] = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(c1, 4)), eight);
    }
}

// The scales of pair p as [d(2p), d(2p), d(2p+1), d(2p+1)], the lanes pair_dot16 fills.
ALWAYS_INLINE float32x4_t pair_scales(const uint8_t *sc, int p) {
    uint32_t two;  // the pair's two f16, read as bytes (one ld1r)
    memcpy(&two, sc + 4 * p, 4);
    float32x4_t v = vcvt_f32_f16(vreinterpret_f16_u32(vdup_n_u32(two)));
    return vzip1q_f32(v, v);
}

// An activation block's columns 8c..8c+7 in both halves of a vector.
ALWAYS_INLINE int8x16_t x_dup(const int8_t *xb, int c) {
    int8x8_t v = vld1_s8(xb + 8 * c);
    return vcombine_s8(v, v);
}

// P pairs (from pair p0 of a unit) x T tokens; out[t*ldo + 2*(p0+i) + 0/1].
// Lanes of a pair's accumulator: [row 2p, row 2p, row 2p+1, row 2p+1].
ALWAYS_INLINE void packed_micro(const int q8, int k, const uint8_t *unit, int p0, const int P, const char *x,
                                size_t ldx, float *out, size_t ldo, const int T) {
    const int nb = k / EL_QK;
    const int8_t *xq[2];
    const float *xd[2];
    float32x4_t acc[16][2];
    _Pragma("GCC unroll 2") for (int t = 0; t < T; t++) {
        xq[t] = (const int8_t *)(x + (size_t)t * ldx);
        xd[t] = (const float *)(xq[t] + k);
        _Pragma("GCC unroll 16") for (int p = 0; p < P; p++) acc[p][t] = vdupq_n_f32(0);
    }
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = unit + (size_t)b * PACK_BB(q8);
        int8x16_t xv[2][4];
        _Pragma("GCC unroll 2") for (int t = 0; t < T; t++) _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++)
            xv[t][c] = x_dup(xq[t] + EL_QK * b, c);
        _Pragma("GCC unroll 16") for (int p = 0; p < P; p++) {
            int8x16_t w[4];
            load_pair(q8, blk + (size_t)(p0 + p) * PACK_PB(q8), w);
            float32x4_t sc = pair_scales(blk + 16 * PACK_PB(q8), p0 + p);
            _Pragma("GCC unroll 2") for (int t = 0; t < T; t++) {
                int32x4_t s = pair_dot16(vdupq_n_s32(0), w[0], xv[t][0]);
                s = pair_dot16(s, w[1], xv[t][1]);
                s = pair_dot16(s, w[2], xv[t][2]);
                s = pair_dot16(s, w[3], xv[t][3]);
                acc[p][t] = vfmaq_f32(acc[p][t], vcvtq_f32_s32(s), vmulq_n_f32(sc, xd[t][b]));
            }
        }
    }
    _Pragma("GCC unroll 2") for (int t = 0; t < T; t++) _Pragma("GCC unroll 8") for (int p = 0; p < P; p += 2)
        vst1q_f32(out + (size_t)t * ldo + 2 * (p0 + p), vpaddq_f32(acc[p][t], acc[p + 1][t]));
}

// Decode streams each unit front to back, all 16 pairs per block; prefill
// takes 4 pairs (8 rows) x 2 tokens at a time, the weights staying in L1.
#define DEFINE_PACKED_GEMM(NAME, Q8)                                                                          \
    static void NAME(int k, const void *w, size_t ldw, int nr, const void *x, size_t ldx, int nt, float *out,  \
                     size_t ldo) {                                                                            \
        for (int u = 0; u < nr / 32; u++) {                                                                   \
            const uint8_t *unit = (const uint8_t *)w + (size_t)u * ldw;                                       \
            float *ou = out + 32 * u;                                                                         \
            if (nt == 1) {                                                                                    \
                packed_micro(Q8, k, unit, 0, 16, x, ldx, ou, ldo, 1);                                         \
                continue;                                                                                     \
            }                                                                                                 \
            for (int p0 = 0; p0 < 16; p0 += 4) {                                                              \
                int t = 0;                                                                                    \
                for (; t + 2 <= nt; t += 2)                                                                   \
                    packed_micro(Q8, k, unit, p0, 4, (const char *)x + (size_t)t * ldx, ldx, ou + (size_t)t * ldo, ldo, 2); \
                if (t < nt)                                                                                   \
                    packed_micro(Q8, k, unit, p0, 4, (const char *)x + (size_t)t * ldx, ldx, ou + (size_t)t * ldo, ldo, 1); \
            }                                                                                                 \
        }                                                                                                     \
    }

DEFINE_PACKED_GEMM(gemm_packed_q8_0, 1)
DEFINE_PACKED_GEMM(gemm_packed_q4_0, 0)

// The packed kernels of this level by weight dtype (NULL for others).
static el_gemm_fn packed_kernels(int dtype) {
    switch (dtype) {
    case EL_DTYPE_Q8_0: return gemm_packed_q8_0;
    case EL_DTYPE_Q4_0: return gemm_packed_q4_0;
    }
    return NULL;
}
#endif

// ---------------------------------------------------------------- K-quants

// sum_j d*sc_j * sum(q*x) - dmin*m_j * sum(x), as el_vec_dot_q4_k
static float dot_q4_k(int n, const el_block_q4_k *wb, const el_block_q8_k *xb) {
    const uint8x16_t m4 = vdupq_n_u8(15);
    float acc = 0;
    for (int b = 0; b < n / EL_QK_K; b++) {
        uint8_t sc[8], m[8];
        for (int j = 0; j < 4; j++) {  // the 12-byte 6-bit packing (el_q4_k_scale_min)
            const uint8_t *s = wb[b].scales;
            sc[j] = s[j] & 63;
            m[j] = s[j + 4] & 63;
            sc[j + 4] = (uint8_t)((s[j + 8] & 15) | (s[j] >> 6) << 4);
            m[j + 4] = (uint8_t)((s[j + 8] >> 4) | (s[j + 4] >> 6) << 4);
        }
        int32x4_t isum = vdupq_n_s32(0);
        _Pragma("GCC unroll 4") for (int p = 0; p < 4; p++) {
            uint8x16_t r0 = vld1q_u8(wb[b].qs + 32 * p), r1 = vld1q_u8(wb[b].qs + 32 * p + 16);
            const int8_t *x = xb[b].qs + 64 * p;
            int32x4_t lo = dot16(vdupq_n_s32(0), vreinterpretq_s8_u8(vandq_u8(r0, m4)), vld1q_s8(x));
            lo = dot16(lo, vreinterpretq_s8_u8(vandq_u8(r1, m4)), vld1q_s8(x + 16));
            int32x4_t hi = dot16(vdupq_n_s32(0), vreinterpretq_s8_u8(vshrq_n_u8(r0, 4)), vld1q_s8(x + 32));
            hi = dot16(hi, vreinterpretq_s8_u8(vshrq_n_u8(r1, 4)), vld1q_s8(x + 48));
            isum = vmlaq_n_s32(isum, lo, sc[2 * p]);
            isum = vmlaq_n_s32(isum, hi, sc[2 * p + 1]);
        }
        // m_j * (bsums[2j] + bsums[2j+1]); a pair of sums of 16 quants fits int16
        int16x8_t bs = vpaddq_s16(vld1q_s16(xb[b].bsums), vld1q_s16(xb[b].bsums + 8));
        int16x8_t mv = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(m)));
        int32x4_t ms = vmlal_high_s16(vmull_s16(vget_low_s16(bs), vget_low_s16(mv)), bs, mv);
        int is = vaddvq_s32(isum), msum = vaddvq_s32(ms);
        acc += xb[b].d * (f16_to_f32(wb[b].d) * (float)is - f16_to_f32(wb[b].dmin) * (float)msum);
    }
    return acc;
}

// sum_g sc_g * sum((q - 32) * x), as el_vec_dot_q6_k: 16 lanes of a vector
// are one scale group, and the - 32 comes in once per super-block from bsums
static float dot_q6_k(int n, const el_block_q6_k *wb, const el_block_q8_k *xb) {
    const uint8x16_t m4 = vdupq_n_u8(15), m2 = vdupq_n_u8(3);
    float acc = 0;
    for (int b = 0; b < n / EL_QK_K; b++) {
        const int8_t *sc = wb[b].scales;
        int32x4_t isum = vdupq_n_s32(0);
        _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) {
            _Pragma("GCC unroll 2") for (int e = 0; e < 2; e++) {  // elements 16e.. of each 32
                const uint8_t *ql = wb[b].ql + 64 * h + 16 * e, *qh = wb[b].qh + 32 * h + 16 * e;
                uint8x16_t l0 = vld1q_u8(ql), l1 = vld1q_u8(ql + 32), H = vld1q_u8(qh);
                uint8x16_t q0 = vorrq_u8(vandq_u8(l0, m4), vshlq_n_u8(vandq_u8(H, m2), 4));
                uint8x16_t q1 = vorrq_u8(vandq_u8(l1, m4), vshlq_n_u8(vandq_u8(vshrq_n_u8(H, 2), m2), 4));
                uint8x16_t q2 = vorrq_u8(vshrq_n_u8(l0, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(H, 4), m2), 4));
                uint8x16_t q3 = vorrq_u8(vshrq_n_u8(l1, 4), vshlq_n_u8(vshrq_n_u8(H, 6), 4));
                const int8_t *x = xb[b].qs + 128 * h + 16 * e;
                const int8_t *s = sc + 8 * h + e;
                isum = vmlaq_n_s32(isum, dot16(vdupq_n_s32(0), vreinterpretq_s8_u8(q0), vld1q_s8(x)), s[0]);
                isum = vmlaq_n_s32(isum, dot16(vdupq_n_s32(0), vreinterpretq_s8_u8(q1), vld1q_s8(x + 32)), s[2]);
                isum = vmlaq_n_s32(isum, dot16(vdupq_n_s32(0), vreinterpretq_s8_u8(q2), vld1q_s8(x + 64)), s[4]);
                isum = vmlaq_n_s32(isum, dot16(vdupq_n_s32(0), vreinterpretq_s8_u8(q3), vld1q_s8(x + 96)), s[6]);
            }
        }
        int8x16_t scv = vld1q_s8(sc);
        int16x8_t s0 = vmovl_s8(vget_low_s8(scv)), s1 = vmovl_high_s8(scv);
        int16x8_t b0 = vld1q_s16(xb[b].bsums), b1 = vld1q_s16(xb[b].bsums + 8);
        int32x4_t corr = vmull_s16(vget_low_s16(s0), vget_low_s16(b0));
        corr = vmlal_high_s16(corr, s0, b0);
        corr = vmlal_s16(corr, vget_low_s16(s1), vget_low_s16(b1));
        corr = vmlal_high_s16(corr, s1, b1);
        int is = vaddvq_s32(isum) - 32 * vaddvq_s32(corr);
        acc += xb[b].d * f16_to_f32(wb[b].d) * (float)is;
    }
    return acc;
}

#define ROWWISE_GEMM(NAME, DOT, WT, XT)                                                                      \
    static void NAME(int k, const void *w, size_t ldw, int nr, const void *x, size_t ldx, int nt, float *out, \
                     size_t ldo) {                                                                           \
        for (int t = 0; t < nt; t++)                                                                         \
            for (int r = 0; r < nr; r++)                                                                     \
                out[(size_t)t * ldo + r] =                                                                   \
                    DOT(k, (const WT *)((const char *)w + (size_t)r * ldw), (const XT *)((const char *)x + (size_t)t * ldx)); \
    }
ROWWISE_GEMM(gemm_q4_k, dot_q4_k, el_block_q4_k, el_block_q8_k)
ROWWISE_GEMM(gemm_q6_k, dot_q6_k, el_block_q6_k, el_block_q8_k)

// The integer kernels of this level by weight dtype (NULL for others).
static el_gemm_fn int_kernels(int dtype) {
    switch (dtype) {
    case EL_DTYPE_Q8_0: return gemm_q8_0;
    case EL_DTYPE_Q4_0: return gemm_q4_0;
    case EL_DTYPE_Q4_K: return gemm_q4_k;
    case EL_DTYPE_Q6_K: return gemm_q6_k;
    }
    return NULL;
}

#endif
