// AVX2 + FMA + F16C tile kernels, one 32-byte vector per block of 32. Byte
// products use vpmaddubsw (unsigned x signed, pairs summed to int16, which
// never saturates here: at most 2*128*127) then vpmaddwd to int32, so the
// integer sums equal the scalar reference's exactly.
#include <immintrin.h>
#include <string.h>

#include "edgellm/quant.h"
#include "qdot.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

ALWAYS_INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

ALWAYS_INLINE __m256i sum_pairs(__m256i p16) { return _mm256_madd_epi16(p16, _mm256_set1_epi16(1)); }

// R rows x T tokens; the sign trick makes Q8_0 weights unsigned: |w| * (x * sign(w)).
#define DEFINE_MICRO(NAME, BLK, PRODUCT)                                                                    \
    ALWAYS_INLINE void NAME(int k, const char *w, size_t ldw, const char *x, size_t ldx, float *out, size_t ldo, \
                            const int R, const int T) {                                                     \
        int nb = k / EL_QK;                                                                                 \
        __m256 acc[2][2];                                                                                   \
        _Pragma("GCC unroll 2") for (int r = 0; r < R; r++) _Pragma("GCC unroll 2") for (int t = 0; t < T; t++) \
            acc[r][t] = _mm256_setzero_ps();                                                                \
        for (int b = 0; b < nb; b++) {                                                                      \
            _Pragma("GCC unroll 2") for (int t = 0; t < T; t++) {                                           \
                const int8_t *xq = (const int8_t *)(x + (size_t)t * ldx);                                   \
                const float *xd = (const float *)(xq + k);                                                  \
                const int32_t *ns = (const int32_t *)(xd + nb);                                             \
                __m256i xv = _mm256_loadu_si256((const __m256i *)(xq + EL_QK * b));                         \
                _Pragma("GCC unroll 2") for (int r = 0; r < R; r++) {                                       \
                    const BLK *blk = (const BLK *)(w + (size_t)r * ldw) + b;                                \
                    __m256i s = PRODUCT(blk, xv, ns[b]);                                                    \
                    __m256 scale = _mm256_set1_ps(_cvtsh_ss(blk->d) * xd[b]);                              \
                    acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scale, acc[r][t]);                   \
                }                                                                                           \
            }                                                                                               \
        }                                                                                                   \
        _Pragma("GCC unroll 2") for (int r = 0; r < R; r++) _Pragma("GCC unroll 2") for (int t = 0; t < T; t++) \
            out[(size_t)t * ldo + r] = hsum8(acc[r][t]);                                                    \
    }

ALWAYS_INLINE __m256i product_q8_0(const el_block_q8_0 *blk, __m256i xv, int32_t nsum) {
    (void)nsum;
    __m256i wv = _mm256_loadu_si256((const __m256i *)blk->qs);
    return sum_pairs(_mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv)));
}

// sum (q - 8) x = sum q x + 8 nsum, the correction added to lane 0
ALWAYS_INLINE __m256i product_q4_0(const el_block_q4_0 *blk, __m256i xv, int32_t nsum) {
    __m128i raw = _mm_loadu_si128((const __m128i *)blk->qs);
    __m256i q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), _mm256_set1_epi8(0x0F));
    __m256i s = sum_pairs(_mm256_maddubs_epi16(q, xv));
    return _mm256_add_epi32(s, _mm256_zextsi128_si256(_mm_cvtsi32_si128(8 * nsum)));
}

DEFINE_MICRO(micro_q8_0, el_block_q8_0, product_q8_0)
DEFINE_MICRO(micro_q4_0, el_block_q4_0, product_q4_0)

#define DEFINE_GEMM(NAME, MICRO)                                                                            \
    static void NAME(int k, const void *w, size_t ldw, int nr, const void *x, size_t ldx, int nt, float *out, \
                     size_t ldo) {                                                                          \
        const char *wc = w, *xc = x;                                                                        \
        for (int t = 0; t < nt; t += 2) {                                                                   \
            const char *xt = xc + (size_t)t * ldx;                                                          \
            float *ot = out + (size_t)t * ldo;                                                              \
            int r = 0;                                                                                      \
            if (nt - t >= 2) {                                                                              \
                for (; r + 2 <= nr; r += 2) MICRO(k, wc + (size_t)r * ldw, ldw, xt, ldx, ot + r, ldo, 2, 2); \
                for (; r < nr; r++) MICRO(k, wc + (size_t)r * ldw, ldw, xt, ldx, ot + r, ldo, 1, 2);        \
            } else {                                                                                        \
                for (; r + 2 <= nr; r += 2) MICRO(k, wc + (size_t)r * ldw, ldw, xt, ldx, ot + r, ldo, 2, 1); \
                for (; r < nr; r++) MICRO(k, wc + (size_t)r * ldw, ldw, xt, ldx, ot + r, ldo, 1, 1);        \
            }                                                                                               \
        }                                                                                                   \
    }

DEFINE_GEMM(gemm_q8_0, micro_q8_0)
DEFINE_GEMM(gemm_q4_0, micro_q4_0)

// ---------------------------------------------------------------- K-quants

static void q4_k_unpack(const uint8_t s[12], uint8_t sc[8], uint8_t m[8]) {
    for (int j = 0; j < 4; j++) {
        sc[j] = s[j] & 63;
        m[j] = s[j + 4] & 63;
        sc[j + 4] = (uint8_t)((s[j + 8] & 15) | (s[j] >> 6) << 4);
        m[j + 4] = (uint8_t)((s[j + 8] >> 4) | (s[j + 4] >> 6) << 4);
    }
}

static float dot_q4_k(int n, const el_block_q4_k *wb, const el_block_q8_k *xb) {
    __m256 acc = _mm256_setzero_ps();
    float accm = 0;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int b = 0; b < n / EL_QK_K; b++) {
        uint8_t sc[8], m[8];
        q4_k_unpack(wb[b].scales, sc, m);
        __m256i isum = _mm256_setzero_si256();
        for (int p = 0; p < 4; p++) {
            __m256i raw = _mm256_loadu_si256((const __m256i *)(wb[b].qs + 32 * p));
            __m256i lo = _mm256_and_si256(raw, m4), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
            __m256i plo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(xb[b].qs + 64 * p)));
            __m256i phi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(xb[b].qs + 64 * p + 32)));
            isum = _mm256_add_epi32(isum, _mm256_madd_epi16(plo, _mm256_set1_epi16(sc[2 * p])));
            isum = _mm256_add_epi32(isum, _mm256_madd_epi16(phi, _mm256_set1_epi16(sc[2 * p + 1])));
        }
        int msum = 0;
        for (int j = 0; j < 8; j++) msum += m[j] * (xb[b].bsums[2 * j] + xb[b].bsums[2 * j + 1]);
        float xd = xb[b].d;
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(xd * _cvtsh_ss(wb[b].d)), acc);
        accm += xd * _cvtsh_ss(wb[b].dmin) * (float)msum;
    }
    return hsum8(acc) - accm;
}

// 32 elements 128h + 32g + l: 16 with scale 8h + 2g, then 16 with 8h + 2g + 1
ALWAYS_INLINE __m256i q6_k_group(__m256i q, const int8_t *x, const int8_t *sc) {
    __m256i p = _mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *)x));
    __m256i s = _mm256_set_m128i(_mm_set1_epi16(sc[1]), _mm_set1_epi16(sc[0]));
    return _mm256_madd_epi16(p, s);
}

static float dot_q6_k(int n, const el_block_q6_k *wb, const el_block_q8_k *xb) {
    __m256 acc = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x03);
    for (int b = 0; b < n / EL_QK_K; b++) {
        __m256i isum = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            __m256i l0 = _mm256_loadu_si256((const __m256i *)(wb[b].ql + 64 * h));
            __m256i l1 = _mm256_loadu_si256((const __m256i *)(wb[b].ql + 64 * h + 32));
            __m256i H = _mm256_loadu_si256((const __m256i *)(wb[b].qh + 32 * h));
            __m256i q0 = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(H, m2), 4));
            __m256i q1 = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(H, 2), m2), 4));
            __m256i q2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(H, 4), m2), 4));
            __m256i q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(H, 6), m2), 4));
            const int8_t *x = xb[b].qs + 128 * h, *sc = wb[b].scales + 8 * h;
            isum = _mm256_add_epi32(isum, q6_k_group(q0, x, sc));
            isum = _mm256_add_epi32(isum, q6_k_group(q1, x + 32, sc + 2));
            isum = _mm256_add_epi32(isum, q6_k_group(q2, x + 64, sc + 4));
            isum = _mm256_add_epi32(isum, q6_k_group(q3, x + 96, sc + 6));
        }
        // - 32 * sum_g sc_g * bsum_g
        __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)wb[b].scales));
        __m256i corr = _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)xb[b].bsums));
        isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(corr, 5));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(xb[b].d * _cvtsh_ss(wb[b].d)), acc);
    }
    return hsum8(acc);
}

// ---------------------------------------------------------------- f16 / bf16

static float dot_f16(int n, const uint16_t *w, const float *x) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i))), _mm256_loadu_ps(x + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i + 8))), _mm256_loadu_ps(x + i + 8), acc1);
    }
    float s = hsum8(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++) s += _cvtsh_ss(w[i]) * x[i];
    return s;
}

ALWAYS_INLINE __m256 bf16_load(const uint16_t *w) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)w));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

static float dot_bf16(int n, const uint16_t *w, const float *x) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(bf16_load(w + i), _mm256_loadu_ps(x + i), acc0);
        acc1 = _mm256_fmadd_ps(bf16_load(w + i + 8), _mm256_loadu_ps(x + i + 8), acc1);
    }
    float s = hsum8(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++) s += el_bf16_to_f32(w[i]) * x[i];
    return s;
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
ROWWISE_GEMM(gemm_f16, dot_f16, uint16_t, float)
ROWWISE_GEMM(gemm_bf16, dot_bf16, uint16_t, float)

el_gemm_fn el_gemm_avx2(int dtype) {
    switch (dtype) {
    case EL_DTYPE_Q8_0: return gemm_q8_0;
    case EL_DTYPE_Q4_0: return gemm_q4_0;
    case EL_DTYPE_Q4_K: return gemm_q4_k;
    case EL_DTYPE_Q6_K: return gemm_q6_k;
    case EL_DTYPE_F16: return gemm_f16;
    case EL_DTYPE_BF16: return gemm_bf16;
    }
    return NULL;
}

// ---------------------------------------------------------------- packed Q8_0 / Q4_0

// The AVX-512 pair layout (pack.c), read 8 rows at a time: the 64-byte chunk
// of a 16-row group is two ymm of 8 rows x 4 bytes. Without vpdpbusd a chunk
// against 4 broadcast activation bytes is vpmaddubsw (pairs to int16) then
// vpmaddwd against ones (to int32).
//   Q4_0: the nibbles are unsigned (0..15); the int16 pair sums of all 8
//         maddubs of a block stay below 8 * 2 * 15 * 127 = 30480, so they
//         add up in int16 and go to int32 once; - 8 sum x comes in as 8 nsum.
//   Q8_0: packed bytes are q + 128; xor 0x80 gives q back (signed), and
//         |q| * (x * sign(q)) keeps maddubs unsigned x signed (pairs at most
//         2 * 128 * 127, no saturation), each chunk to int32 separately.
// The integer sums equal the scalar reference's; the float scaling is one
// convert and one FMA per 8 rows, block and token.

#define PACKED2_MAX_T 4

// One block's int32 sums for 8 rows (the ymm half h of a group's chunks at c)
// against T tokens' activations xo[t] (the block's 32 int8).
ALWAYS_INLINE void block_sums_q4(const uint8_t *c, const int8_t *const *xo, const int32_t *seed, __m256i *s,
                                 const int T) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256i p[PACKED2_MAX_T];
    _Pragma("GCC unroll 4") for (int t = 0; t < T; t++) p[t] = _mm256_setzero_si256();
    _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {
        __m256i raw = _mm256_loadu_si256((const __m256i *)(c + 64 * j));
        __m256i lo = _mm256_and_si256(raw, m4), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
        _Pragma("GCC unroll 4") for (int t = 0; t < T; t++) {
            int32_t a, b;
            memcpy(&a, xo[t] + 4 * j, 4);
            memcpy(&b, xo[t] + 16 + 4 * j, 4);
            p[t] = _mm256_add_epi16(p[t], _mm256_maddubs_epi16(lo, _mm256_set1_epi32(a)));
            p[t] = _mm256_add_epi16(p[t], _mm256_maddubs_epi16(hi, _mm256_set1_epi32(b)));
        }
    }
    _Pragma("GCC unroll 4") for (int t = 0; t < T; t++)
        s[t] = _mm256_add_epi32(sum_pairs(p[t]), _mm256_set1_epi32(8 * seed[t]));
}

ALWAYS_INLINE void block_sums_q8(const uint8_t *c, const int8_t *const *xo, __m256i *s, const int T) {
    const __m256i bias = _mm256_set1_epi8((char)0x80);
    _Pragma("GCC unroll 4") for (int t = 0; t < T; t++) s[t] = _mm256_setzero_si256();
    _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) {
        __m256i q = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(c + 64 * j)), bias);
        __m256i aq = _mm256_abs_epi8(q);
        _Pragma("GCC unroll 4") for (int t = 0; t < T; t++) {
            int32_t a;
            memcpy(&a, xo[t] + 4 * j, 4);
            s[t] = _mm256_add_epi32(s[t], sum_pairs(_mm256_maddubs_epi16(aq, _mm256_sign_epi8(_mm256_set1_epi32(a), q))));
        }
    }
}

// Group g's chunks (or its 16 scales) of block b in a packed pair (pack.c:
// Q8_0 block by block, Q4_0 by units of 8 blocks).
ALWAYS_INLINE const uint8_t *pair_part(const int q8, const uint8_t *pair, int nb, int b, int g, int scales) {
    if (!q8) return pair + el_pack_q4_0_off(nb, b, g, scales);
    const size_t cb = 512, bb = 2 * cb + 64;
    return pair + (size_t)b * bb + (scales ? 2 * cb + 32 * (size_t)g : (size_t)g * cb);
}

// 8 rows (half h of group g of the pair) x T tokens: out[t*ldo + r], r < 8.
ALWAYS_INLINE void micro_packed2(const int q8, int k, const uint8_t *pair, int g, int h, const char *x, size_t ldx,
                                 float *out, size_t ldo, const int T) {
    const int nb = k / EL_QK;
    const int8_t *xq[PACKED2_MAX_T];
    const float *xd[PACKED2_MAX_T];
    const int32_t *ns[PACKED2_MAX_T];
    __m256 acc[PACKED2_MAX_T];
    _Pragma("GCC unroll 4") for (int t = 0; t < T; t++) {
        xq[t] = (const int8_t *)(x + (size_t)t * ldx);
        xd[t] = (const float *)(xq[t] + k);
        ns[t] = (const int32_t *)(xd[t] + nb);
        acc[t] = _mm256_setzero_ps();
    }
    const uint8_t *qs = pair, *sc = pair;  // group g's chunks and scales of block b, half h
    for (int b = 0; b < nb; b++) {
        const int8_t *xo[PACKED2_MAX_T];
        int32_t seed[PACKED2_MAX_T];
        __m256i s[PACKED2_MAX_T];
        _Pragma("GCC unroll 4") for (int t = 0; t < T; t++) xo[t] = xq[t] + EL_QK * b, seed[t] = ns[t][b];
        if (q8 || !(b % EL_PACK_Q4_0_UNIT)) {  // Q4_0: a unit's first block
            qs = pair_part(q8, pair, nb, b, g, 0) + 32 * h;
            sc = pair_part(q8, pair, nb, b, g, 1) + 16 * h;
        }
        if (q8) block_sums_q8(qs, xo, s, T);
        else block_sums_q4(qs, xo, seed, s, T);
        __m256 wd = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)sc));
        if (!q8) qs += 256, sc += 32;  // Q4_0: the next block of the unit
        _Pragma("GCC unroll 4") for (int t = 0; t < T; t++)
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[t]), _mm256_mul_ps(wd, _mm256_set1_ps(xd[t][b])), acc[t]);
    }
    _Pragma("GCC unroll 4") for (int t = 0; t < T; t++) _mm256_storeu_ps(out + (size_t)t * ldo, acc[t]);
}

// Decode: a pair (32 rows) x one token in one pass over its blocks (block by
// block: for Q4_0 that reads both groups' parts of a unit side by side): a
// block's 4 row-sets of 8 share its activation bytes.
ALWAYS_INLINE void micro_decode2(const int q8, int k, const uint8_t *pair, const char *x, float *out) {
    const int nb = k / EL_QK;
    const int8_t *xq = (const int8_t *)x;
    const float *xd = (const float *)(xq + k);
    const int32_t *ns = (const int32_t *)(xd + nb);
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int b = 0; b < nb; b++) {
        const int8_t *xo[1] = {xq + EL_QK * b};
        __m256 xs = _mm256_set1_ps(xd[b]);
        _Pragma("GCC unroll 4") for (int i = 0; i < 4; i++) {  // i = 2 * group + half
            __m256i s[1];
            const uint8_t *c = pair_part(q8, pair, nb, b, i / 2, 0) + 32 * (i % 2);
            if (q8) block_sums_q8(c, xo, s, 1);
            else block_sums_q4(c, xo, &ns[b], s, 1);
            const uint8_t *sc = pair_part(q8, pair, nb, b, i / 2, 1) + 16 * (i % 2);
            __m256 wd = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)sc));
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[0]), _mm256_mul_ps(wd, xs), acc[i]);
        }
    }
    _Pragma("GCC unroll 4") for (int i = 0; i < 4; i++) _mm256_storeu_ps(out + 8 * i, acc[i]);
}

#define DEFINE_PACKED2_GEMM(NAME, Q8)                                                                         \
    static void NAME(int k, const void *w, size_t ldw, int nr, const void *x, size_t ldx, int nt, float *out,  \
                     size_t ldo) {                                                                            \
        if (nt == 1) {                                                                                        \
            for (int p = 0; p < nr / 32; p++)                                                                 \
                micro_decode2(Q8, k, (const uint8_t *)w + (size_t)p * ldw, x, out + 32 * p);                  \
            return;                                                                                           \
        }                                                                                                     \
        for (int i = 0; i < nr / 8; i++) { /* 8 rows: pair i/4, group (i/2)%2, half i%2 */                    \
            const uint8_t *pair = (const uint8_t *)w + (size_t)(i / 4) * ldw;                                 \
            const int g = (i / 2) % 2, h = i % 2;                                                             \
            float *o = out + 8 * i;                                                                           \
            int t = 0;                                                                                        \
            for (; t + 4 <= nt; t += 4)                                                                       \
                micro_packed2(Q8, k, pair, g, h, (const char *)x + (size_t)t * ldx, ldx, o + (size_t)t * ldo, ldo, 4); \
            const char *xt = (const char *)x + (size_t)t * ldx;                                               \
            float *ot = o + (size_t)t * ldo;                                                                  \
            switch (nt - t) {                                                                                 \
            case 1: micro_packed2(Q8, k, pair, g, h, xt, ldx, ot, ldo, 1); break;                             \
            case 2: micro_packed2(Q8, k, pair, g, h, xt, ldx, ot, ldo, 2); break;                             \
            case 3: micro_packed2(Q8, k, pair, g, h, xt, ldx, ot, ldo, 3); break;                             \
            }                                                                                                 \
        }                                                                                                     \
    }

DEFINE_PACKED2_GEMM(gemm_packed2_q8_0, 1)
DEFINE_PACKED2_GEMM(gemm_packed2_q4_0, 0)

el_gemm_fn el_gemm_packed_avx2(int dtype) {
    switch (dtype) {
    case EL_DTYPE_Q8_0: return gemm_packed2_q8_0;
    case EL_DTYPE_Q4_0: return gemm_packed2_q4_0;
    }
    return NULL;
}
