// AVX-512 (F/BW/VL/DQ + VNNI) tile kernels. Only called after run-time
// detection found VNNI. Integer sums equal the scalar reference's exactly;
// only the order of the float additions differs.
//
// Q8_0/Q4_0: one zmm holds two blocks (lanes 0-7 block b, 8-15 block b+1).
// vpdpbusd wants unsigned x signed bytes, so the weights are made unsigned
// (Q8_0: w ^ 0x80 = w + 128; Q4_0: the raw nibble q = w + 8) and the excess
// is removed by seeding the accumulator with 128 (or 8) x nsum, where the
// activation row carries nsum = -(sum of the block's quants). A micro-tile of
// 4 weight rows x 2 tokens shares each weight load across tokens and each
// activation load across rows.
#include <immintrin.h>
#include <string.h>

#include "edgellm/quant.h"
#include "qdot.h"
#include "simd_avx512.h"

// lanes 0-7 take element 0, lanes 8-15 element 1
ALWAYS_INLINE __m512i pair_idx(void) { return _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0); }

ALWAYS_INLINE __m512 f16_pair(uint16_t d0, uint16_t d1) {
    __m128 h = _mm_cvtph_ps(_mm_cvtsi32_si128((int)((uint32_t)d0 | (uint32_t)d1 << 16)));
    return _mm512_permutexvar_ps(pair_idx(), _mm512_castps128_ps512(h));
}

ALWAYS_INLINE __m512 f32_pair(const float *d) {
    __m128 v = _mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)d));
    return _mm512_permutexvar_ps(pair_idx(), _mm512_castps128_ps512(v));
}

// lane 0 = nsum[0] << shift, lane 8 = nsum[1] << shift, others 0
ALWAYS_INLINE __m512i corr_pair(const int32_t *nsum, int shift) {
    __m128i v = _mm_loadl_epi64((const __m128i *)nsum);
    return _mm512_slli_epi32(_mm512_maskz_permutexvar_epi32(0x0101, pair_idx(), _mm512_castsi128_si512(v)),
                             (unsigned)shift);
}

// Two Q8_0 blocks as unsigned bytes w + 128; `both` 0 zeroes the second.
ALWAYS_INLINE __m512i load_q8_0(const el_block_q8_0 *b, int both) {
    __m256i lo = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)b[0].qs), _mm256_set1_epi8((char)0x80));
    if (!both) return _mm512_zextsi256_si512(lo);
    __m256i hi = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)b[1].qs), _mm256_set1_epi8((char)0x80));
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

// Two Q4_0 blocks as nibbles in element order: [b0 0..15, b0 16..31, b1 0..15, b1 16..31]
ALWAYS_INLINE __m512i load_q4_0(const el_block_q4_0 *b, int both) {
    __m128i a = _mm_loadu_si128((const __m128i *)b[0].qs);
    __m128i c = both ? _mm_loadu_si128((const __m128i *)b[1].qs) : _mm_setzero_si128();
    __m256i ac = _mm256_inserti128_si256(_mm256_castsi128_si256(a), c, 1);
    __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(ac), _mm256_srli_epi16(ac, 4), 1);  // [a, c, a>>4, c>>4]
    z = _mm512_and_si512(z, _mm512_set1_epi8(0x0F));
    return _mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(3, 1, 2, 0));
}

// R rows x T tokens of 32-element-block products, accumulated over all blocks.
#define DEFINE_MICRO(NAME, BLK, LOADW, SHIFT)                                                                  \
    ALWAYS_INLINE void NAME(int k, const char *w, size_t ldw, const char *x, size_t ldx, float *out, size_t ldo, \
                            const int R, const int T) {                                                      \
        int nb = k / EL_QK;                                                                                  \
        __m512 acc[4][2];                                                                                    \
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) _Pragma("GCC unroll 2") for (int t = 0; t < T; t++) \
            acc[r][t] = _mm512_setzero_ps();                                                                 \
        for (int b = 0; b < nb; b += 2) {                                                                    \
            int both = b + 1 < nb;                                                                           \
            __m512i wv[4];                                                                                   \
            __m512 wd[4];                                                                                    \
            _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {                                            \
                const BLK *blk = (const BLK *)(w + (size_t)r * ldw) + b;                                     \
                /* the same place two micro-tiles on: short row streams defeat */                             \
                /* the hardware prefetcher (perf: the loads stalled)  */                                    \
                _mm_prefetch((const char *)blk + (size_t)(2 * R) * ldw, _MM_HINT_T0);                             \
                _mm_prefetch((const char *)blk + (size_t)(2 * R) * ldw + 64, _MM_HINT_T0);                         \
                wv[r] = LOADW(blk, both);                                                                    \
                wd[r] = f16_pair(blk[0].d, both ? blk[1].d : 0);                                             \
            }                                                                                                \
            _Pragma("GCC unroll 2") for (int t = 0; t < T; t++) {                                            \
                const int8_t *xq = (const int8_t *)(x + (size_t)t * ldx);                                    \
                const float *xd = (const float *)(xq + k);                                                   \
                const int32_t *ns = (const int32_t *)(xd + nb);                                              \
                /* the tail block reads past the quants into the row's scales: */                            \
                /* weights there are zero and its scale lane is masked off */                                \
                __m512i xv = _mm512_loadu_si512(xq + EL_QK * b);                                             \
                __m512 xs = both ? f32_pair(xd + b) : _mm512_set1_ps(xd[b]);                                 \
                __m512i c = both ? corr_pair(ns + b, SHIFT) : _mm512_maskz_set1_epi32(1, ns[b] * (1 << SHIFT)); \
                _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {                                        \
                    __m512i s = _mm512_dpbusd_epi32(c, wv[r], xv);                                           \
                    acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(wd[r], xs), acc[r][t]); \
                }                                                                                            \
            }                                                                                                \
        }                                                                                                    \
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) _Pragma("GCC unroll 2") for (int t = 0; t < T; t++) \
            out[(size_t)t * ldo + r] = _mm512_reduce_add_ps(acc[r][t]);                                      \
    }

DEFINE_MICRO(micro_q8_0, el_block_q8_0, load_q8_0, 7)
DEFINE_MICRO(micro_q4_0, el_block_q4_0, load_q4_0, 3)

#define DEFINE_GEMM(NAME, MICRO)                                                                             \
    static void NAME(int k, const void *w, size_t ldw, int nr, const void *x, size_t ldx, int nt, float *out, \
                     size_t ldo) {                                                                           \
        const char *wc = w, *xc = x;                                                                         \
        for (int t = 0; t < nt; t += 2) {                                                                    \
            const char *xt = xc + (size_t)t * ldx;                                                           \
            float *ot = out + (size_t)t * ldo;                                                               \
            int r = 0;                                                                                       \
            if (nt - t >= 2) {                                                                               \
                for (; r + 4 <= nr; r += 4) MICRO(k, wc + (size_t)r * ldw, ldw, xt, ldx, ot + r, ldo, 4, 2); \
                for (; r < nr; r++) MICRO(k, wc + (size_t)r * ldw, ldw, xt, ldx, ot + r, ldo, 1, 2);         \
            } else {                                                                                         \
                for (; r + 4 <= nr; r += 4) MICRO(k, wc + (size_t)r * ldw, ldw, xt, ldx, ot + r, ldo, 4, 1); \
                for (; r < nr; r++) MICRO(k, wc + (size_t)r * ldw, ldw, xt, ldx, ot + r, ldo, 1, 1);         \
            }                                                                                                \
        }                                                                                                    \
    }

DEFINE_GEMM(gemm_q8_0, micro_q8_0)
DEFINE_GEMM(gemm_q4_0, micro_q4_0)

// ---------------------------------------------------------------- activations

// As el_act_quantize_q8_0_scalar: d = amax / 127, q = x * (127 / amax)
// rounded to nearest even (vcvtps2dq in the default rounding mode), clamped.
// 16 blocks at a time: their maxima, scales and sums reduced together (a
// block's two horizontal reductions and two divisions were half the cost of
// quantizing it); the blocks past the last 16 one by one.
void el_act_quantize_q8_0_avx512(const float *x, void *dst, int k) {
    int8_t *qs = dst;
    float *d = (float *)(qs + k);
    int32_t *nsum = (int32_t *)(d + k / EL_QK);
    const __m512i lim = _mm512_set1_epi32(127), nlim = _mm512_set1_epi32(-127);
    const int nb = k / EL_QK;
    int b = 0;
    for (; b + 16 <= nb; b += 16) {
        __m512 mx[16];
        for (int i = 0; i < 16; i++)
            mx[i] = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + EL_QK * (b + i))), _mm512_abs_ps(_mm512_loadu_ps(x + EL_QK * (b + i) + 16)));
        __m512 amax = reduce16_max(mx), db = _mm512_div_ps(amax, _mm512_set1_ps(127.0f));
        __m512 id = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(db, _mm512_setzero_ps(), _CMP_NEQ_UQ), _mm512_set1_ps(127.0f), amax);
        _mm512_storeu_ps(d + b, db);
        float ids[16];
        _mm512_storeu_ps(ids, id);
        __m512i sums[16];
        for (int i = 0; i < 16; i++) {
            const float *xb = x + EL_QK * (b + i);
            __m512 vid = _mm512_set1_ps(ids[i]);
            __m512i qa = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xb), vid));
            __m512i qc = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xb + 16), vid));
            qa = _mm512_min_epi32(_mm512_max_epi32(qa, nlim), lim);
            qc = _mm512_min_epi32(_mm512_max_epi32(qc, nlim), lim);
            _mm_storeu_si128((__m128i *)(qs + EL_QK * (b + i)), _mm512_cvtepi32_epi8(qa));
            _mm_storeu_si128((__m128i *)(qs + EL_QK * (b + i) + 16), _mm512_cvtepi32_epi8(qc));
            sums[i] = _mm512_add_epi32(qa, qc);
        }
        _mm512_storeu_si512(nsum + b, _mm512_sub_epi32(_mm512_setzero_si512(), reduce16_add(sums)));
    }
    for (; b < nb; b++) {
        __m512 a = _mm512_loadu_ps(x + EL_QK * b), c = _mm512_loadu_ps(x + EL_QK * b + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(c)));
        float db = amax / 127.0f, id = db ? 127.0f / amax : 0.0f;
        __m512 vid = _mm512_set1_ps(id);
        __m512i qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, vid)), qc = _mm512_cvtps_epi32(_mm512_mul_ps(c, vid));
        qa = _mm512_min_epi32(_mm512_max_epi32(qa, nlim), lim);
        qc = _mm512_min_epi32(_mm512_max_epi32(qc, nlim), lim);
        _mm_storeu_si128((__m128i *)(qs + EL_QK * b), _mm512_cvtepi32_epi8(qa));
        _mm_storeu_si128((__m128i *)(qs + EL_QK * b + 16), _mm512_cvtepi32_epi8(qc));
        d[b] = db;
        nsum[b] = -_mm512_reduce_add_epi32(_mm512_add_epi32(qa, qc));
    }
}

// ---------------------------------------------------------------- packed Q8_0 / Q4_0


// Q4_0 decode prefetches into L2 by hand, one group's part of a unit
// (EL_PACK_Q4_0_GROUP bytes) ahead, a line next to each load, as Q4_K's decode
// does (on the block-by-block layout before it, the hardware prefetcher alone
// left one thread at 16 GB/s of the ~27 it could stream). Q8_0 leaves the
// fetching to the hardware prefetcher, and gives it DECODE_STREAMS_Q8
// streams to follow at once (micro_decode_q8_0). Software prefetching did
// not help Q8_0: whole blocks ahead streamed slower than the hardware alone
// (Intel Xeon, a 2-thread step: 18.1-18.5 ms without, 20.6-21.8 with 1-4
// blocks ahead; Zen 5, 1 thread: 0.79 of the read probe without, 0.76-0.78
// with), and line by line its gain on Zen 5 turned into a loss within the
// hour (docs/performance.md); on 2026-12-06, steps alternating in one
// process, every layer timed, 2 threads: 0.91-0.93 of the probe at 1152-3456
// bytes ahead against 0.99 without (probe 39 GB/s), 0.82-0.88 against
// 0.89-0.92 at 66-69 GB/s (1152-9216 bytes ahead).
//
// On AMD the decode kernels read two runs of their pairs side by side, and
// Q4_0's then fetches nothing by hand: two in Q8_0's runs_q8_0 (the Intel
// form keeps DECODE_STREAMS_Q8, decode_q8_0), Q4_0's micro_decode2_q4_0
// and the K-quants' decode_2pairs_* (qdot_k_avx512.c).
// AMD EPYC Zen 5 (2026-12-07), whole 1-row steps of the TinyLlama-shaped
// models at positions 128-159, the two forms alternating in one process, the
// median step of each round, in the VM's two bandwidth states (read probe
// 38-55 and 65-87 GB/s): Q8_0 with two runs against three, 0.985 and
// 0.943-0.965 of the step time (the step against the probe 0.948 -> 0.965,
// 0.857 -> 0.887); Q4_0 two runs and no software prefetching against one run
// fetched two parts ahead into L1, 0.979-1.003 and 0.901-0.920 (0.938 ->
// 0.944-0.950, 0.781-0.796 -> 0.851-0.876). The kernel alone, 2 threads over
// 622 MB, against the probe: one run and its prefetching 0.959-0.970 and
// 0.922-0.932; two runs so fetched 0.936-0.945 and 0.915-0.930; two runs,
// nothing fetched, 0.981-0.988 and 0.962-0.965; three runs, nothing
// fetched, 0.907. The logits are the same, bit for bit.
#ifndef DECODE_STREAMS_Q8
#define DECODE_STREAMS_Q8 3
#endif
_Static_assert(DECODE_STREAMS_Q8 >= 2 && DECODE_STREAMS_Q8 <= 4, "micro_decode_q8_0 unrolls up to 4 streams");

// Prefetch distance of a Q8_0 product over 2..4 tokens, in blocks of the
// pair: more (8 or 16 ahead) was 5-18% slower at 8 tokens when those ran as
// two such passes; at 2..4 tokens, 12 and 24 were within the noise of 4.
#define PAIR_AHEAD_Q8 4

// What micro_pair reads: a packed Q8_0 pair (bytes w + 128), a packed Q4_0
// pair (nibbles, unpacked as they are read), or a Q4_0 pair unpacked to bytes
// in the Q8_0 layout (unpack_pair_q4_0: nibbles q = w + 8, one a byte).
enum { PAIR_Q4_0, PAIR_Q8_0, PAIR_Q4_0_BYTES };

// One packed pair (both 16-row groups, 32 rows) x T <= 8 tokens, out[t*ldo +
// r] for r < 32. Per block and token: the integer sums of the 32 rows come from
// 16 vpdpbusd (the correction 128*nsum, or 8*nsum for Q4_0, is the seed), each
// broadcast of 4 activation bytes feeding both groups; then one convert, one
// multiply of the scales and one FMA per group. Against a 16-row tile of 8
// tokens (one broadcast per vpdpbusd) on weights in cache, 2 threads: Q4_0
// +45% at 8 tokens, +17% at 128 (on the block-by-block layout; Q4_0 up to 8
// tokens now runs micro_parts_q4_0); Q8_0 +14%, +14% (the same sums, bit for
// bit). Over 4 tokens the float sums live in memory (L1): 16 integer sums
// already take half the registers; that is one load and one store per token,
// group and block, against 8 vpdpbusd.
// The tokens come from a panel (el_act_panel): rec is the first token's
// record in block 0, every other record of the pass is at a constant offset
// from it, and one pointer steps by rs, the bytes of a block's records in
// the group; the seeds are in the records, shifted. Read from activation
// rows, each token took three pointers (quants, scales, sums) and its seeds
// were made every 64 blocks: ~30 scalar instructions a block, which GCC kept
// on the stack. On Intel Xeon (Ice Lake, 2026-12-07), one pair x 8 tokens in
// L1, 1 thread: 330-342 GOP/s from rows, 421-432 from a panel.
// Prefetching: pfn 0, pf + b*bb (all of its lines) at block b (ahead in its
// own pair); else the pfn bytes from pf, spread evenly over the blocks (amd:
// a whole block's lines at every other block, pf + (b/2)*bb); pf NULL: none.
// amd (a constant) picks the form for AMD's vector ports
// (el_gemm_packed_form_avx512).
ALWAYS_INLINE void micro_pair(const int kind, int k, const uint8_t *pair, const char *rec, size_t rs, float *out,
                              size_t ldo, const int T, const uint8_t *pf, const size_t pfn, const int amd, const int st) {
    const int q8 = kind != PAIR_Q4_0;                          // the byte layout
    const int so = kind == PAIR_Q8_0 ? EL_PANEL_SEED7 : EL_PANEL_SEED3;  // the seeds' offset in a record
    const int nb = k / EL_QK, in_mem = T > 4;
    const size_t cb = q8 ? 512 : 256, bb = 2 * cb + 64;  // quant bytes of a group's block; bytes per block
    __m512 facc[4][2];                                 // T <= 4
    float fmem[8][32] __attribute__((aligned(64)));  // T > 4
    _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) {
        if (in_mem) {
            _mm512_store_ps(fmem[t], _mm512_setzero_ps());
            _mm512_store_ps(fmem[t] + 16, _mm512_setzero_ps());
        } else {
            facc[t & 3][0] = facc[t & 3][1] = _mm512_setzero_ps();
        }
    }
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    // each group's chunks (q0, q1) and scales (s0, s1) of block b; Q4_0: by
    // units of 8 blocks (pack.c), set at a unit's first block, then stepped
    const uint8_t *q0 = pair, *q1 = pair, *s0 = pair, *s1 = pair;
    for (int b = 0; b < nb; b++, rec += rs) {
        const uint8_t *blk = pair + (size_t)b * bb;
        if (q8) {
            q0 = blk, q1 = blk + cb, s0 = blk + 2 * cb, s1 = s0 + 32;
        } else if (!(b % EL_PACK_Q4_0_UNIT)) {
            const int m = nb - b < EL_PACK_Q4_0_UNIT ? nb - b : EL_PACK_Q4_0_UNIT;
            s0 = pair + el_pack_q4_0_off(nb, b, 0, 1), q0 = s0 + 32 * m;
            s1 = pair + el_pack_q4_0_off(nb, b, 1, 1), q1 = s1 + 32 * m;
        }
        // the share of the next pair, whatever the layout (the AMD form: a
        // block's lines at every other block, up to pfn bytes, half a pair)
        if (pf && pfn && !amd) prefetch_share(pf, b, nb, pfn);
        if (pf && pfn && amd && !(b & 1) && (size_t)(b / 2) * bb < pfn)
            _Pragma("GCC unroll 17") for (size_t l = 0; l < bb; l += 64)
                _mm_prefetch((const char *)pf + (size_t)(b / 2) * bb + l, _MM_HINT_T1);
        // A single pass (Q8_0 only: Q4_0's are micro_parts_q4_0's) prefetches
        // ahead in its own pair, a block's 17 lines at once (a line at a
        // time: 4-19% slower at 6-8 tokens, at 8, 12, 16 or 24 blocks ahead).
        const char *pfb = pf && !pfn ? (const char *)pf + (size_t)b * bb : NULL;
        if (pfb && q8) _Pragma("GCC unroll 17") for (size_t l = 0; l < bb; l += 64) _mm_prefetch(pfb + l, _MM_HINT_T1);
        __m512i acc[8][2];
        // one broadcast of the seed for both groups (GCC copies the register)
        _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) acc[t][0] = acc[t][1] = bcast4(rec + EL_PANEL_REC * t + so);
        if (q8) {
            _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) {
                __m512i w0 = _mm512_loadu_si512(q0 + 64 * j), w1 = _mm512_loadu_si512(q1 + 64 * j);
                _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) {
                    __m512i xv = bcast4(rec + EL_PANEL_REC * t + 4 * j);
                    acc[t][0] = _mm512_dpbusd_epi32(acc[t][0], w0, xv);
                    acc[t][1] = _mm512_dpbusd_epi32(acc[t][1], w1, xv);
                }
            }
        } else {
            _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {
                __m512i r0 = _mm512_loadu_si512(q0 + 64 * j), r1 = _mm512_loadu_si512(q1 + 64 * j);
                __m512i lo0 = _mm512_and_si512(r0, m4), hi0 = _mm512_and_si512(_mm512_srli_epi16(r0, 4), m4);
                __m512i lo1 = _mm512_and_si512(r1, m4), hi1 = _mm512_and_si512(_mm512_srli_epi16(r1, 4), m4);
                _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) {
                    __m512i xl = bcast4(rec + EL_PANEL_REC * t + 4 * j), xh = bcast4(rec + EL_PANEL_REC * t + 16 + 4 * j);
                    acc[t][0] = _mm512_dpbusd_epi32(acc[t][0], lo0, xl);
                    acc[t][1] = _mm512_dpbusd_epi32(acc[t][1], lo1, xl);
                    acc[t][0] = _mm512_dpbusd_epi32(acc[t][0], hi0, xh);
                    acc[t][1] = _mm512_dpbusd_epi32(acc[t][1], hi1, xh);
                }
            }
        }
        __m512 wd0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)s0));
        __m512 wd1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)s1));
        if (!q8) q0 += 256, q1 += 256, s0 += 32, s1 += 32;
        _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) {
            float d;
            memcpy(&d, rec + EL_PANEL_REC * t + EL_PANEL_SCALE, 4);
            __m512 xs = _mm512_set1_ps(d);
            __m512 p0 = _mm512_mul_ps(wd0, xs), p1 = _mm512_mul_ps(wd1, xs);
            if (in_mem) {
                _mm512_store_ps(fmem[t], _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[t][0]), p0, _mm512_load_ps(fmem[t])));
                _mm512_store_ps(fmem[t] + 16,
                                _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[t][1]), p1, _mm512_load_ps(fmem[t] + 16)));
            } else {
                facc[t & 3][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[t][0]), p0, facc[t & 3][0]);
                facc[t & 3][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[t][1]), p1, facc[t & 3][1]);
            }
        }
    }
    _Pragma("GCC unroll 8") for (int t = 0; t < T; t++)
        stream_out(out + (size_t)t * ldo, in_mem ? _mm512_load_ps(fmem[t]) : facc[t & 3][0],
                   in_mem ? _mm512_load_ps(fmem[t] + 16) : facc[t & 3][1], st);
}

// Q8_0 decode: S packed pairs (32 rows each) x one token, out[p][r] for pair
// p and row r < 32. Each pair is read front to back, the S of them block by
// block, so that the hardware prefetcher has S streams to follow at once; each
// pair's sums are the one-pair kernel's, in the same order. One stream (the
// kernel before 2026-12-06) read 0.89-0.91 of the read probe where Q4_0 and
// Q4_K, prefetching by hand, read 0.94-0.97. The decode layers of the
// TinyLlama-shaped model, 2 threads, steps alternating in one process, each
// layer timed (runs other than those of the prefetch figures above), three
// runs at probes of 37-58 GB/s: one stream 0.89-0.91, two
// 0.94-0.98, three 0.95-1.01, four 0.90-1.00; four more runs at 57-61 GB/s,
// this kernel with one stream against three: 0.85-0.98 against 0.88-1.03
// (+0.5% to +6%). Each of its two groups keeps two vpdpbusd chains in flight.
ALWAYS_INLINE void micro_decode_q8_0(int k, const uint8_t *const *pair, const char *x, float *const *out, const int S) {
    const int nb = k / EL_QK;
    const size_t cb = 512, bb = 2 * cb + 64;  // quant bytes of a group's block; bytes per block
    const int8_t *xq = (const int8_t *)x;
    const float *xd = (const float *)(xq + k);
    const int32_t *ns = (const int32_t *)(xd + nb);
    __m512 facc[DECODE_STREAMS_Q8][2];
    _Pragma("GCC unroll 4") for (int p = 0; p < S; p++) facc[p][0] = facc[p][1] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const int8_t *xo = xq + EL_QK * b;
        __m512i seed = _mm512_slli_epi32(_mm512_set1_epi32(ns[b]), 7);
        __m512 xs = _mm512_set1_ps(xd[b]);
        _Pragma("GCC unroll 4") for (int p = 0; p < S; p++) {
            const uint8_t *blk = pair[p] + (size_t)b * bb;
            _Pragma("GCC unroll 2") for (int g = 0; g < 2; g++) {
                const uint8_t *c = blk + g * cb;
                __m512i a0 = seed, a1 = _mm512_setzero_si512();
                _Pragma("GCC unroll 8") for (int j = 0; j < 8; j += 2) {
                    a0 = _mm512_dpbusd_epi32(a0, _mm512_loadu_si512(c + 64 * j), bcast4(xo + 4 * j));
                    a1 = _mm512_dpbusd_epi32(a1, _mm512_loadu_si512(c + 64 * j + 64), bcast4(xo + 4 * j + 4));
                }
                __m512 wd = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(blk + 2 * cb + 32 * g)));
                facc[p][g] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(a0, a1)), _mm512_mul_ps(wd, xs), facc[p][g]);
            }
        }
    }
    _Pragma("GCC unroll 4") for (int p = 0; p < S; p++) {
        _mm512_storeu_ps(out[p], facc[p][0]);
        _mm512_storeu_ps(out[p] + 16, facc[p][1]);
    }
}

// The Intel form's decode: np pairs (ldw bytes apart) x one token in S =
// DECODE_STREAMS_Q8 runs of consecutive pairs side by side, then the np % S
// left side by side too (two of them) or alone. (The AMD form: runs_q8_0.)
ALWAYS_INLINE void decode_q8_0(int k, const uint8_t *w, size_t ldw, int np, const char *x, float *out) {
    const int S = DECODE_STREAMS_Q8, run = np / S;
    const uint8_t *pair[DECODE_STREAMS_Q8];
    float *o[DECODE_STREAMS_Q8];
    for (int p = 0; p < run; p++) {
        for (int q = 0; q < S; q++) pair[q] = w + (size_t)(p + q * run) * ldw, o[q] = out + 32 * (p + q * run);
        micro_decode_q8_0(k, pair, x, o, S);
    }
    int left = np - S * run;
    for (int q = 0; q < left; q++) pair[q] = w + (size_t)(S * run + q) * ldw, o[q] = out + 32 * (S * run + q);
    if (left == 1) micro_decode_q8_0(k, pair, x, o, 1);
    else if (left == 2) micro_decode_q8_0(k, pair, x, o, 2);
    else if (left == 3) micro_decode_q8_0(k, pair, x, o, 3);  // (only where DECODE_STREAMS_Q8 is 4)
}

// The AMD form's decode as an el_gemm_runs_fn (qdot.h): its two runs at two
// addresses, np / 2 pairs from wa side by side with as many from wb, then
// wb's odd last pair alone. decode_q8_0's AMD case is this with wb at pair
// np / 2. (A function of its own, not inlined into the panel kernel: its
// loop there read 0.977 and 0.992 of the step time, fast and slow state,
// docs/performance.md.)
static NOINLINE void runs_q8_0(int k, const void *wa, const void *wb, size_t ldw, int np, const void *x, float *out) {
    const int run = np / 2;
    const uint8_t *pair[2];
    float *o[2];
    for (int p = 0; p < run; p++) {
        pair[0] = (const uint8_t *)wa + (size_t)p * ldw, pair[1] = (const uint8_t *)wb + (size_t)p * ldw;
        o[0] = out + 32 * p, o[1] = out + 32 * (p + run);
        micro_decode_q8_0(k, pair, x, o, 2);
    }
    if (np % 2) {
        pair[0] = (const uint8_t *)wb + (size_t)run * ldw, o[0] = out + 32 * (np - 1);
        micro_decode_q8_0(k, pair, x, o, 1);
    }
}

// Q4_0 decode of one group's part of a unit (m blocks from block b0, scales
// first: pack.c) x one token, reading it front to back; f (lane r = row r) +=
// its products. It prefetches DECODE_Q4_0_AHEAD(amd) bytes ahead (the next
// part, or the next pair), a line next to each load. On the block-by-block layout
// this loop read 0.70 of the bandwidth of Q4_K's decode whatever its
// prefetching (bench/decode_kinds.c, docs/performance.md); on the unit
// layout, 2 threads, cold gate, up and down matrices of the TinyLlama-shaped
// model: 39.2-47.1 against 29.6-34.8 GB/s (Q4_K's 40.0-46.6 in the same runs).
// The AMD form fetches two parts ahead into L1 (prefetcht0), the Intel form
// one part ahead into L2. AMD EPYC Zen 5 (2026-12-07), the kernel alone, 2
// threads over 147 MB of packed pairs, each variant against the read probe
// just around it, the median of ~27 rounds, four runs in each of the
// machine's two states: probe 46-53 GB/s, one part into L2 1.004-1.027, two
// into L1 1.024-1.038; probe 75-80 GB/s, 0.847-0.875 against 0.906-0.925.
// (Two parts into L2: 0.980-0.999 and 0.879-0.919.) Whole 1-row steps of the
// TinyLlama-shaped Q4_0 model, the two alternating in one process, each
// round's median step against the other's: 0.943-0.949 at 69-81 GB/s (three
// runs), 0.976-1.000 at 44-61 (three runs). Not measured on Intel. (Since,
// AMD's decode reads two pairs side by side and fetches nothing by hand,
// micro_decode2_q4_0; its form here is left to an odd last pair.)
#define DECODE_Q4_0_AHEAD(amd) ((amd) ? 2 * EL_PACK_Q4_0_GROUP : EL_PACK_Q4_0_GROUP)
// (the hint a literal in each branch: unoptimized builds need a constant)
#define DECODE_Q4_0_FETCH(amd, p)                 \
    do {                                          \
        if (amd)                                  \
            _mm_prefetch((p), _MM_HINT_T0);       \
        else                                      \
            _mm_prefetch((p), _MM_HINT_T1);       \
    } while (0)
ALWAYS_INLINE __m512 decode_q4_0_part(const uint8_t *g, const int m, const int8_t *xq, const float *xd,
                                      const int32_t *ns, int b0, __m512 f, const int amd, const int fetch) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    if (fetch)
        for (int l = 0; l < 32 * m; l += 64) DECODE_Q4_0_FETCH(amd, (const char *)g + DECODE_Q4_0_AHEAD(amd) + l);
    _Pragma("GCC unroll 8") for (int u = 0; u < m; u++) {
        const uint8_t *c = g + 32 * m + 256 * u;
        const int8_t *xo = xq + EL_QK * (b0 + u);
        __m512i a0 = _mm512_slli_epi32(_mm512_set1_epi32(ns[b0 + u]), 3), a1 = _mm512_setzero_si512();
        // high nibbles in place (16 q): no shift per chunk, one per block
        _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {
            if (fetch) DECODE_Q4_0_FETCH(amd, (const char *)c + 64 * j + DECODE_Q4_0_AHEAD(amd));
            __m512i raw = _mm512_loadu_si512(c + 64 * j);
            a0 = _mm512_dpbusd_epi32(a0, _mm512_and_si512(raw, m4), bcast4(xo + 4 * j));
            a1 = _mm512_dpbusd_epi32(a1, _mm512_andnot_si512(m4, raw), bcast4(xo + 16 + 4 * j));
        }
        __m512 wd = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(g + 32 * u)));
        __m512i sum = _mm512_add_epi32(a0, _mm512_srai_epi32(a1, 4));  // exact: a1 is a multiple of 16
        f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(wd, _mm512_set1_ps(xd[b0 + u])), f);
    }
    return f;
}

// Q4_0 decode: one packed pair (32 rows) x one token, unit by unit, each
// unit group 0's part, then group 1's: the pair front to back.
ALWAYS_INLINE void micro_decode_q4_0(int k, const uint8_t *pair, const char *x, float *out, const int amd) {
    const int nb = k / EL_QK;
    const int8_t *xq = (const int8_t *)x;
    const float *xd = (const float *)(xq + k);
    const int32_t *ns = (const int32_t *)(xd + nb);
    __m512 f0 = _mm512_setzero_ps(), f1 = _mm512_setzero_ps();
    int b = 0;
    for (; b + EL_PACK_Q4_0_UNIT <= nb; b += EL_PACK_Q4_0_UNIT) {
        const uint8_t *u = pair + el_pack_q4_0_off(nb, b, 0, 1);
        f0 = decode_q4_0_part(u, EL_PACK_Q4_0_UNIT, xq, xd, ns, b, f0, amd, 1);
        // keeps GCC from holding group 0's activation broadcasts for group 1 (it spills them)
        __asm__ volatile("" ::: "memory");
        f1 = decode_q4_0_part(u + EL_PACK_Q4_0_GROUP, EL_PACK_Q4_0_UNIT, xq, xd, ns, b, f1, amd, 1);
    }
    if (b < nb) {  // a last unit of fewer blocks
        f0 = decode_q4_0_part(pair + el_pack_q4_0_off(nb, b, 0, 1), nb - b, xq, xd, ns, b, f0, amd, 1);
        f1 = decode_q4_0_part(pair + el_pack_q4_0_off(nb, b, 1, 1), nb - b, xq, xd, ns, b, f1, amd, 1);
    }
    _mm512_storeu_ps(out, f0);
    _mm512_storeu_ps(out + 16, f1);
}

// AMD's Q4_0 decode: two pairs side by side (a and b, each front to back as
// above, their parts in turn), and no software prefetching: the hardware
// prefetcher follows the two runs (runs_q4_0). The same sums as
// micro_decode_q4_0's, in the same order.
ALWAYS_INLINE void micro_decode2_q4_0(int k, const uint8_t *pa, const uint8_t *pb, const char *x, float *oa, float *ob) {
    const int nb = k / EL_QK;
    const int8_t *xq = (const int8_t *)x;
    const float *xd = (const float *)(xq + k);
    const int32_t *ns = (const int32_t *)(xd + nb);
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, b0 = a0, b1 = a0;
    int b = 0;
    for (; b + EL_PACK_Q4_0_UNIT <= nb; b += EL_PACK_Q4_0_UNIT) {
        const size_t off = el_pack_q4_0_off(nb, b, 0, 1);
        a0 = decode_q4_0_part(pa + off, EL_PACK_Q4_0_UNIT, xq, xd, ns, b, a0, 1, 0);
        __asm__ volatile("" ::: "memory");  // as in micro_decode_q4_0
        b0 = decode_q4_0_part(pb + off, EL_PACK_Q4_0_UNIT, xq, xd, ns, b, b0, 1, 0);
        __asm__ volatile("" ::: "memory");
        a1 = decode_q4_0_part(pa + off + EL_PACK_Q4_0_GROUP, EL_PACK_Q4_0_UNIT, xq, xd, ns, b, a1, 1, 0);
        __asm__ volatile("" ::: "memory");
        b1 = decode_q4_0_part(pb + off + EL_PACK_Q4_0_GROUP, EL_PACK_Q4_0_UNIT, xq, xd, ns, b, b1, 1, 0);
    }
    if (b < nb) {  // a last unit of fewer blocks
        a0 = decode_q4_0_part(pa + el_pack_q4_0_off(nb, b, 0, 1), nb - b, xq, xd, ns, b, a0, 1, 0);
        a1 = decode_q4_0_part(pa + el_pack_q4_0_off(nb, b, 1, 1), nb - b, xq, xd, ns, b, a1, 1, 0);
        b0 = decode_q4_0_part(pb + el_pack_q4_0_off(nb, b, 0, 1), nb - b, xq, xd, ns, b, b0, 1, 0);
        b1 = decode_q4_0_part(pb + el_pack_q4_0_off(nb, b, 1, 1), nb - b, xq, xd, ns, b, b1, 1, 0);
    }
    _mm512_storeu_ps(oa, a0);
    _mm512_storeu_ps(oa + 16, a1);
    _mm512_storeu_ps(ob, b0);
    _mm512_storeu_ps(ob + 16, b1);
}

// The AMD form's Q4_0 decode as an el_gemm_runs_fn, as runs_q8_0.
static NOINLINE void runs_q4_0(int k, const void *wa, const void *wb, size_t ldw, int np, const void *x, float *out) {
    const int run = np / 2;
    for (int p = 0; p < run; p++)
        micro_decode2_q4_0(k, (const uint8_t *)wa + (size_t)p * ldw, (const uint8_t *)wb + (size_t)p * ldw, x,
                           out + 32 * p, out + 32 * (p + run));
    if (np % 2) micro_decode_q4_0(k, (const uint8_t *)wb + (size_t)run * ldw, x, out + 32 * (np - 1), 1);
}

// A Q4_0 product over 2..8 tokens prefetches PARTS_AHEAD parts ahead of the
// line it reads. A/B in one process against the block-by-block layout
// (its kernel and prefetching as they were), every layer's matrices of the
// TinyLlama-shaped model, 2 threads, 12 rounds: 2 tokens 22.9 -> 17.9 ms, 4
// 20.3 -> 16.7, 5 17.9 -> 17.4, 8 22.3 -> 21.6 (one part ahead: 20.4, 18.7,
// 19.3, 21.8; four: 18.8, 16.8, 17.2, 23.0). In all runs of this A/B (one to
// four per count, docs/performance.md) 2, 3 and 8 tokens were faster; 4 and 5
// from 13% slower to 21% faster.
#define PARTS_AHEAD 2

// Q4_0, 2..8 tokens in one pass: one group's part of a unit (m blocks from
// block b0, scales first) x T tokens; facc[t] (lane r = row r) += its
// products. Reads the part front to back, as decode does, and prefetches pfd
// bytes ahead, a line next to each load.
ALWAYS_INLINE void q4_0_part_tokens(const uint8_t *g, const int m, const int8_t *const *xq, const float *const *xd,
                                    const int32_t *const *ns, int b0, const int T, size_t pfd, __m512 *facc) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    for (int l = 0; l < 32 * m; l += 64) _mm_prefetch((const char *)g + pfd + l, _MM_HINT_T1);
    for (int u = 0; u < m; u++) {
        const uint8_t *c = g + 32 * m + 256 * u;
        const int b = b0 + u;
        __m512i a[8];
        _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) a[t] = _mm512_slli_epi32(_mm512_set1_epi32(ns[t][b]), 3);
        _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {
            _mm_prefetch((const char *)c + 64 * j + pfd, _MM_HINT_T1);
            __m512i raw = _mm512_loadu_si512(c + 64 * j);
            __m512i lo = _mm512_and_si512(raw, m4), hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
            _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) {
                a[t] = _mm512_dpbusd_epi32(a[t], lo, bcast4(xq[t] + EL_QK * b + 4 * j));
                a[t] = _mm512_dpbusd_epi32(a[t], hi, bcast4(xq[t] + EL_QK * b + 16 + 4 * j));
            }
        }
        __m512 wd = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(g + 32 * u)));
        _Pragma("GCC unroll 8") for (int t = 0; t < T; t++)
            facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a[t]), _mm512_mul_ps(wd, _mm512_set1_ps(xd[t][b])), facc[t]);
    }
}

// Q4_0 pair x T <= 8 tokens in one pass, unit by unit and part by part (the
// pair front to back, as decode reads it): out[t*ldo + r], r < 32. The float
// sums of the group not being read wait in memory (a load and a store per
// token and part).
ALWAYS_INLINE void micro_parts_q4_0(int k, const uint8_t *pair, const char *x, size_t ldx, float *out, size_t ldo,
                                    const int T, const int st) {
    const int nb = k / EL_QK;
    const size_t pfd = PARTS_AHEAD * EL_PACK_Q4_0_GROUP;
    const int8_t *xq[8];
    const float *xd[8];
    const int32_t *ns[8];
    __m512 fsum[2][8];
    _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) {
        xq[t] = (const int8_t *)(x + (size_t)t * ldx);
        xd[t] = (const float *)(xq[t] + k);
        ns[t] = (const int32_t *)(xd[t] + nb);
        fsum[0][t] = fsum[1][t] = _mm512_setzero_ps();
    }
    for (int b = 0; b < nb; b += EL_PACK_Q4_0_UNIT) {
        const int m = nb - b < EL_PACK_Q4_0_UNIT ? nb - b : EL_PACK_Q4_0_UNIT;
        for (int g = 0; g < 2; g++) {
            __m512 facc[8];
            _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) facc[t] = fsum[g][t];
            if (m == EL_PACK_Q4_0_UNIT)
                q4_0_part_tokens(pair + el_pack_q4_0_off(nb, b, g, 1), EL_PACK_Q4_0_UNIT, xq, xd, ns, b, T, pfd, facc);
            else
                q4_0_part_tokens(pair + el_pack_q4_0_off(nb, b, g, 1), m, xq, xd, ns, b, T, pfd, facc);
            _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) fsum[g][t] = facc[t];
        }
    }
    _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) stream_out(out + (size_t)t * ldo, fsum[0][t], fsum[1][t], st);
}

// Tokens in passes over each pair: of up to 8 from 5 tokens on, else of up
// to 4; the last two passes even. One pass of 5..8 tokens reads each block
// once, against two passes of up to 4 (the first from memory, the second from
// L2): A/B in one process on 48 cold 5632 x 2048 matrices, 2 threads (AMD
// EPYC): Q4_0 5 tokens +17%, 6 +12%, 8 +8%, 10 and 16 (two passes of up to 8)
// +5-6%; Q8_0 6 tokens +26%, 8 +15-45%, 16 +44%, 128 +3-13%. Q4_0 from 17
// tokens on kept 4-token passes there (weights in cache, 8-token ones were
// 6-7% slower); on Intel Xeon (Emerald Rapids, 2026-12-06: the nibble
// unpacking shares vpdpbusd's two ports) 8-token passes, every layer's
// matrices of the TinyLlama-shaped model over 128 tokens, 2 threads, in turn
// in one process: 0.62-0.63 -> 0.69-0.71 of the 32-block ceiling (20 and 32
// tokens +6-12%), and Q4_0 takes them there; AMD CPUs keep 4-token passes
// (el_gemm_packed_form_avx512, below). (Ceiling ratios in this comment: the
// probe before 8119423.)
// Q4_0 products of up to 8 tokens, one pass, go part by part instead
// (micro_parts_q4_0), reading the unit layout front to back as decode does.
// Prefetching: a single pass (Q8_0) prefetches ahead in its own pair, PAIR8_AHEAD
// blocks for 5..8 tokens (a block takes ~100 cycles: 4 ahead came late; 12
// was best of 8, 12, 16, 24), PAIR_AHEAD_Q8 for 2..4. With more passes, in
// the Intel form each fetches its share of the next pair, spread evenly over
// its blocks; in the AMD form two passes fetch half the pair each, as both
// did before 2026-12-06 (el_gemm_packed_form_avx512). That was the same thing
// up to 16 tokens; at 128 tokens (16 passes) it sent ~9 lines a block to
// memory in bursts while the kernel read the current pair from L2, and on
// Intel Xeon the cold product ran at 0.80-0.83 of the same product on weights
// in cache (0.89, synthetic 2048 x 2048 Q8_0, 1 thread). Spread over all
// passes: 0.89 cold; every layer's matrices, 2 threads, in turn in one process:
// Q8_0 128 tokens 0.70-0.73 -> 0.75-0.76 of the 32-block ceiling, 32 tokens
// 0.60-0.62 -> 0.69-0.72; Q4_0 128 tokens +1-4%. (Earlier, AMD EPYC, 4-token
// passes against no prefetching: 9 tokens +12%, 10 +13-14%, 12 +15-17%, 16
// +11-12%, 32 +5%, 64 +2-4%.)
#define PAIR8_AHEAD 12

// A Q4_0 pair's nibbles as bytes in the Q8_0 layout (per block: group 0's 8
// chunks of 64 bytes, chunk c the elements 4c..4c+3 of its 16 rows; group
// 1's; then both groups' 16 f16 scales), for the Intel form's products of 8
// passes or more:
// they read these bytes, 1088 a block, instead of unpacking the same nibbles
// again in every pass (the unpacking shares vpdpbusd's two ports on Intel).
// Synthetic cold matrices, 1 thread, in turn (Intel Xeon), GOP/s: 128 tokens
// 433-439 -> 473-478, 64 tokens 435-438 -> 442-452; but 32 tokens 426-433 ->
// 413-418 and 16 415-420 -> 334-344 (the unpacking reads the cold pair before
// any pass can overlap it), so fewer passes unpack as they read. A whole
// 128-token prefill of the TinyLlama-shaped Q4_0 model, 2 threads, median of
// 11, four rounds in turn: 373-438 -> 343-426 ms.
static void unpack_pair_q4_0(int nb, const uint8_t *pair, uint8_t *dst) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    for (int b = 0; b < nb; b++) {
        uint8_t *blk = dst + (size_t)b * 1088;
        _Pragma("GCC unroll 2") for (int g = 0; g < 2; g++) {
            const uint8_t *q = pair + el_pack_q4_0_off(nb, b, g, 0);
            _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {
                __m512i r = _mm512_loadu_si512(q + 64 * j);
                _mm512_store_si512(blk + 512 * g + 64 * j, _mm512_and_si512(r, m4));
                _mm512_store_si512(blk + 512 * g + 64 * (4 + j), _mm512_and_si512(_mm512_srli_epi16(r, 4), m4));
            }
            memcpy(blk + 1024 + 32 * g, pair + el_pack_q4_0_off(nb, b, g, 1), 32);
        }
    }
}
// Tokens in the pass from token t of nt, passes of up to most (8 or 4): a
// pass is one of the panel's groups (el_panel_group: up to 8 tokens, the last
// two even), or with most 4 a group of 5..8 in two passes as even as they
// go; its group's first token in *start, the group's size in *group.
static inline int pass_tokens(int t, int nt, int most, int *start, int *group) {
    *group = el_panel_group(nt, t, start);
    return most == 8 || t > *start || *group <= 4 ? *group - (t - *start) : (*group + 1) / 2;
}
// One pass of c tokens over a pair as KIND, in the AMD form or not (constants:
// micro_pair's branches fold).
#define PAIR_PASSES(KIND, AMD)                                                                                \
    do {                                                                                                      \
    switch (c) {                                                                                              \
    case 2: micro_pair(KIND, k, pair, xt, rs, ot, ldo, 2, pf, pfn, AMD, st); break;                           \
    case 3: micro_pair(KIND, k, pair, xt, rs, ot, ldo, 3, pf, pfn, AMD, st); break;                           \
    case 4: micro_pair(KIND, k, pair, xt, rs, ot, ldo, 4, pf, pfn, AMD, st); break;                           \
    case 5: micro_pair(KIND, k, pair, xt, rs, ot, ldo, 5, pf, pfn, AMD, st); break;                           \
    case 6: micro_pair(KIND, k, pair, xt, rs, ot, ldo, 6, pf, pfn, AMD, st); break;                           \
    case 7: micro_pair(KIND, k, pair, xt, rs, ot, ldo, 7, pf, pfn, AMD, st); break;                           \
    default: micro_pair(KIND, k, pair, xt, rs, ot, ldo, 8, pf, pfn, AMD, st); break;                          \
    }                                                                                                         \
    } while (0)
// NAME_panel: the el_gemm_panel_fn (x: the activation rows, read by decode
// and by Q4_0's one pass of up to 8 tokens; panel: the same tokens as
// el_act_panel writes them, from a group's first token; NULL where rows do).
// NAME: the el_gemm_fn, which makes the panel itself (el_matmul makes one
// panel per product for all its tasks instead; out of memory, the AVX2
// kernel reads the same pairs from the rows).
#define DEFINE_PACKED_GEMM(NAME, Q8, AMD)                                                                     \
    static void NAME##_panel(int k, const void *w, size_t ldw, int nr, const void *x, size_t ldx,            \
                             const void *panel, int nt, float *out, size_t ldo) {                            \
        const size_t cb = (Q8) ? 512 : 256, bb = 2 * cb + 64;                                                 \
        if (nt == 1) {                                                                                        \
            if (AMD) { /* two runs of the pairs side by side, an odd last pair alone */                      \
                const int np = nr / 32;                                                                       \
                ((Q8) ? runs_q8_0 : runs_q4_0)(k, w, (const char *)w + (size_t)(np / 2) * ldw, ldw, np, x, out);  \
                return;                                                                                       \
            }                                                                                                 \
            if (Q8) { /* the hardware prefetcher's streams */                                                 \
                decode_q8_0(k, (const uint8_t *)w, ldw, nr / 32, (const char *)x, out);                       \
                return;                                                                                       \
            }                                                                                                 \
            /* the kernel prefetches ahead: fetch the first lines here */                                     \
            for (size_t off = 0; off < DECODE_Q4_0_AHEAD(AMD) && off < (size_t)(nr / 32) * ldw; off += 64)    \
                DECODE_Q4_0_FETCH(AMD, (const char *)w + off);                                                \
            for (int p = 0; p < nr / 32; p++)                                                                 \
                micro_decode_q4_0(k, (const uint8_t *)w + (size_t)p * ldw, x, out + 32 * p, AMD);             \
            return;                                                                                           \
        }                                                                                                     \
        const int st = stream_outputs(out, ldo, nt);                                                          \
        if (!(Q8) && nt <= 8) { /* one pass, part by part */                                                  \
            for (size_t off = 0; off < EL_PACK_Q4_0_GROUP && off < (size_t)(nr / 32) * ldw; off += 64)        \
                _mm_prefetch((const char *)w + off, _MM_HINT_T1);                                             \
            for (int p = 0; p < nr / 32; p++) {                                                               \
                const uint8_t *pair = (const uint8_t *)w + (size_t)p * ldw;                                   \
                switch (nt) {                                                                                 \
                case 2: micro_parts_q4_0(k, pair, x, ldx, out + 32 * p, ldo, 2, st); break;                   \
                case 3: micro_parts_q4_0(k, pair, x, ldx, out + 32 * p, ldo, 3, st); break;                   \
                case 4: micro_parts_q4_0(k, pair, x, ldx, out + 32 * p, ldo, 4, st); break;                   \
                case 5: micro_parts_q4_0(k, pair, x, ldx, out + 32 * p, ldo, 5, st); break;                   \
                case 6: micro_parts_q4_0(k, pair, x, ldx, out + 32 * p, ldo, 6, st); break;                   \
                case 7: micro_parts_q4_0(k, pair, x, ldx, out + 32 * p, ldo, 7, st); break;                   \
                default: micro_parts_q4_0(k, pair, x, ldx, out + 32 * p, ldo, 8, st); break;                  \
                }                                                                                             \
            }                                                                                                 \
            if (st) _mm_sfence();                                                                             \
            return;                                                                                           \
        }                                                                                                     \
        const int most = nt >= 5 && ((Q8) || !(AMD) || nt <= 16) ? 8 : 4; /* tokens a pass */                 \
        int npass = 0, gs, gc;                                                                                \
        for (int t = 0; t < nt; t += pass_tokens(t, nt, most, &gs, &gc)) npass++;                             \
        /* more passes than one, Intel form: each fetches its share of the next pair (not past the last) */   \
        const size_t share = ((ldw + (size_t)npass - 1) / (size_t)npass + 63) & ~(size_t)63;                  \
        /* Intel form, Q4_0 over 8 passes or more: each pair unpacked once (NULL: no memory, as read) */      \
        uint8_t *bytes =                                                                                      \
            !(Q8) && !(AMD) && npass >= 8 ? el_malloc_aligned((size_t)(k / EL_QK) * 1088) : NULL;             \
        for (int p = 0; p < nr / 32; p++) {                                                                   \
            const uint8_t *packed = (const uint8_t *)w + (size_t)p * ldw, *pair = packed;                     \
            float *o = out + 32 * p;                                                                          \
            if (bytes) unpack_pair_q4_0(k / EL_QK, packed, bytes), pair = bytes;                              \
            for (int t = 0, c, pass = 0; t < nt; t += c, pass++) {                                            \
                c = pass_tokens(t, nt, most, &gs, &gc);                                                       \
                const uint8_t *pf;                                                                            \
                size_t pfn;                                                                                   \
                if (AMD) { /* two passes fetch half the next pair each: 1st and 2nd of 2, else 2nd and 3rd */ \
                    const int first = npass > 2, half = pass == first, rest = pass == first + 1;              \
                    const size_t hb = (size_t)(k / EL_QK + 1) / 2 * bb; /* whole blocks: within the pair */   \
                    pf = p + 1 < nr / 32 && (half || rest) ? packed + ldw + (rest ? hb : 0) : NULL;           \
                    pfn = pf ? (rest ? ldw - hb : hb) : 0;                                                    \
                } else { /* every pass its share */                                                           \
                    const size_t from = (size_t)pass * share;                                                 \
                    pf = p + 1 < nr / 32 && from < ldw ? packed + ldw + from : NULL;                          \
                    pfn = pf ? (ldw - from < share ? ldw - from : share) : 0;                                 \
                }                                                                                             \
                if (npass == 1) /* its own pair, ahead */                                                     \
                    pf = packed + (size_t)(most == 8 ? PAIR8_AHEAD : PAIR_AHEAD_Q8) * bb, pfn = 0;            \
                const char *xt = (const char *)panel + el_act_panel_bytes(k, gs) + (size_t)(t - gs) * EL_PANEL_REC; \
                const size_t rs = (size_t)gc * EL_PANEL_REC; /* a block's records in the group */             \
                float *ot = o + (size_t)t * ldo;                                                              \
                if (Q8) PAIR_PASSES(PAIR_Q8_0, AMD);                                                          \
                else if (bytes) PAIR_PASSES(PAIR_Q4_0_BYTES, AMD);                                            \
                else PAIR_PASSES(PAIR_Q4_0, AMD);                                                             \
            }                                                                                                 \
        }                                                                                                     \
        if (st) _mm_sfence();                                                                                 \
        el_free_aligned(bytes);                                                                               \
    }                                                                                                         \
    static void NAME(int k, const void *w, size_t ldw, int nr, const void *x, size_t ldx, int nt, float *out, \
                     size_t ldo) {                                                                            \
        if (nt == 1 || (!(Q8) && nt <= 8)) {                                                                  \
            NAME##_panel(k, w, ldw, nr, x, ldx, NULL, nt, out, ldo);                                          \
            return;                                                                                           \
        }                                                                                                     \
        char *panel = el_malloc_aligned(el_act_panel_bytes(k, nt));                                           \
        if (!panel) {                                                                                         \
            el_gemm_packed_avx2((Q8) ? EL_DTYPE_Q8_0 : EL_DTYPE_Q4_0)(k, w, ldw, nr, x, ldx, nt, out, ldo);   \
            return;                                                                                           \
        }                                                                                                     \
        for (int t = 0; t < nt; t++) el_act_panel((const char *)x + (size_t)t * ldx, k, nt, t, panel);       \
        NAME##_panel(k, w, ldw, nr, x, ldx, panel, nt, out, ldo);                                             \
        el_free_aligned(panel);                                                                               \
    }

DEFINE_PACKED_GEMM(gemm_packed_q8_0, 1, 0)
DEFINE_PACKED_GEMM(gemm_packed_q4_0, 0, 0)
DEFINE_PACKED_GEMM(gemm_packed_q8_0_amd, 1, 1)
DEFINE_PACKED_GEMM(gemm_packed_q4_0_amd, 0, 1)

// Two forms of the Q8_0 and Q4_0 products over 2 tokens or more, for two
// kinds of vector ports. On Intel Xeon the unpacking of nibbles and the seeds'
// shifts share vpdpbusd's two ports, and three changes made for it won there:
// each pass fetches its share of the next pair, spread evenly (fb67115); Q4_0
// over 16 tokens takes 8-token passes, each pair unpacked to bytes once from
// 8 passes on (fb67115, 5a6e926); the seeds come from memory (709550f). AMD
// Zen runs those steps on ports of its own, and on Zen 5 the three cost
// more than they gave; its form keeps what came before them (two passes fetch
// half the next pair each, a whole block's lines at a time; 4-token Q4_0
// passes unpacking as they read; each seed a broadcast and a shift). Since
// 2026-12-07 both forms read their tokens from a panel (micro_pair), seeds
// shifted: one broadcast a seed and no shift, in the AMD form too (not yet
// measured on an AMD CPU). Every layer's w_gate of the TinyLlama-shaped models in turn (cold), 1 thread,
// GOP/s, Zen 5, 2026-12-06, libraries of four commits in turn:
//   Q8_0 tokens         16        32        128
//   before fb67115     542-573   573-599   583-608
//   fb67115            371       481       578-595
//   709550f            369       431       517-548
//   the AMD form       553       578       567-596
// Q4_0, the four pass forms alternating in one process, 128 tokens: 500
// (8-token passes, unpacked), 528 (4-token, unpacked), 455 (8-token, not
// unpacked), 543 (4-token, not unpacked); 32 tokens 412, 432, 418, 494.
el_gemm_fn el_gemm_packed_form_avx512(int dtype, int amd) {
    switch (dtype) {
    case EL_DTYPE_Q8_0: return amd ? gemm_packed_q8_0_amd : gemm_packed_q8_0;
    case EL_DTYPE_Q4_0: return amd ? gemm_packed_q4_0_amd : gemm_packed_q4_0;
    }
    return NULL;
}

el_gemm_panel_fn el_gemm_packed_panel_form_avx512(int dtype, int amd) {
    switch (dtype) {
    case EL_DTYPE_Q8_0: return amd ? gemm_packed_q8_0_amd_panel : gemm_packed_q8_0_panel;
    case EL_DTYPE_Q4_0: return amd ? gemm_packed_q4_0_amd_panel : gemm_packed_q4_0_panel;
    }
    return NULL;
}

el_gemm_runs_fn el_gemm_runs_q_avx512(int dtype) {
    switch (dtype) {
    case EL_DTYPE_Q8_0: return runs_q8_0;
    case EL_DTYPE_Q4_0: return runs_q4_0;
    }
    return NULL;
}

el_gemm_panel_fn el_gemm_packed_panel_avx512(int dtype) { return el_gemm_packed_panel_form_avx512(dtype, el_cpu_is_amd()); }

el_gemm_fn el_gemm_packed_avx512(int dtype) { return el_gemm_packed_form_avx512(dtype, el_cpu_is_amd()); }

// ---------------------------------------------------------------- K-quants

static void q4_k_unpack(const uint8_t s[12], uint8_t sc[8], uint8_t m[8]) {
    for (int j = 0; j < 4; j++) {
        sc[j] = s[j] & 63;
        m[j] = s[j + 4] & 63;
        sc[j + 4] = (uint8_t)((s[j + 8] & 15) | (s[j] >> 6) << 4);
        m[j + 4] = (uint8_t)((s[j + 8] >> 4) | (s[j + 4] >> 6) << 4);
    }
}

// int16 lane i of chunk p takes scale 2p (i < 16) or 2p + 1
ALWAYS_INLINE __m512i q4_k_scale_idx(int p) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16((short)(2 * p))),
                              _mm256_set1_epi16((short)(2 * p + 1)), 1);
}

// qs byte 32p + l: element 64p + l (low nibble), 64p + 32 + l (high): one zmm
// of [low | high] nibbles is 64 consecutive elements.
static float dot_q4_k(int n, const el_block_q4_k *wb, const el_block_q8_k *xb) {
    __m512 acc = _mm512_setzero_ps();
    float accm = 0;
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    for (int b = 0; b < n / EL_QK_K; b++) {
        uint8_t sc[8], m[8];
        q4_k_unpack(wb[b].scales, sc, m);
        __m512i sc16 = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)sc)));
        __m512i isum = _mm512_setzero_si512();
        for (int p = 0; p < 4; p++) {
            __m256i raw = _mm256_loadu_si256((const __m256i *)(wb[b].qs + 32 * p));
            __m512i q = _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(raw), _mm256_srli_epi16(raw, 4), 1), m4);
            __m512i xv = _mm512_loadu_si512(xb[b].qs + 64 * p);
            __m512i prod = _mm512_maddubs_epi16(q, xv);  // <= 2*15*127: no saturation
            isum = _mm512_add_epi32(isum, _mm512_madd_epi16(prod, _mm512_permutexvar_epi16(q4_k_scale_idx(p), sc16)));
        }
        int msum = 0;
        for (int j = 0; j < 8; j++) msum += m[j] * (xb[b].bsums[2 * j] + xb[b].bsums[2 * j + 1]);
        float xd = xb[b].d;
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(xd * _cvtsh_ss(wb[b].d)), acc);
        accm += xd * _cvtsh_ss(wb[b].dmin) * (float)msum;
    }
    return _mm512_reduce_add_ps(acc) - accm;
}

// int16 lane i of 64-element chunk c covers elements 64c + 2i, +1: scale 4c + i/8
ALWAYS_INLINE __m512i q6_k_scale_idx(int c) {
    return _mm512_set_epi16(4 * c + 3, 4 * c + 3, 4 * c + 3, 4 * c + 3, 4 * c + 3, 4 * c + 3, 4 * c + 3, 4 * c + 3,
                            4 * c + 2, 4 * c + 2, 4 * c + 2, 4 * c + 2, 4 * c + 2, 4 * c + 2, 4 * c + 2, 4 * c + 2,
                            4 * c + 1, 4 * c + 1, 4 * c + 1, 4 * c + 1, 4 * c + 1, 4 * c + 1, 4 * c + 1, 4 * c + 1,
                            4 * c, 4 * c, 4 * c, 4 * c, 4 * c, 4 * c, 4 * c, 4 * c);
}

// Per half h: ql[64h..+64) low nibbles are elements 128h + 0..63, high nibbles
// 128h + 64..127; qh[32h + l] holds the top 2 bits of elements 128h + l + 32g
// at bits 2g..2g+1.
static float dot_q6_k(int n, const el_block_q6_k *wb, const el_block_q8_k *xb) {
    __m512 acc = _mm512_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(0x0F), m2 = _mm512_set1_epi8(0x03);
    for (int b = 0; b < n / EL_QK_K; b++) {
        __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)wb[b].scales));
        __m512i sc512 = _mm512_castsi256_si512(sc16);
        __m512i isum = _mm512_setzero_si512();
        for (int h = 0; h < 2; h++) {
            __m512i L = _mm512_loadu_si512(wb[b].ql + 64 * h);
            __m256i H = _mm256_loadu_si256((const __m256i *)(wb[b].qh + 32 * h));
            __m512i H01 = _mm512_inserti64x4(_mm512_castsi256_si512(H), _mm256_srli_epi16(H, 2), 1);
            __m512i H23 = _mm512_srli_epi16(H01, 4);
            __m512i q01 = _mm512_or_si512(_mm512_and_si512(L, m4), _mm512_slli_epi16(_mm512_and_si512(H01, m2), 4));
            __m512i q23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(L, 4), m4),
                                          _mm512_slli_epi16(_mm512_and_si512(H23, m2), 4));
            __m512i p01 = _mm512_maddubs_epi16(q01, _mm512_loadu_si512(xb[b].qs + 128 * h));  // <= 2*63*127
            __m512i p23 = _mm512_maddubs_epi16(q23, _mm512_loadu_si512(xb[b].qs + 128 * h + 64));
            isum = _mm512_add_epi32(isum, _mm512_madd_epi16(p01, _mm512_permutexvar_epi16(q6_k_scale_idx(2 * h), sc512)));
            isum = _mm512_add_epi32(isum, _mm512_madd_epi16(p23, _mm512_permutexvar_epi16(q6_k_scale_idx(2 * h + 1), sc512)));
        }
        // - 32 * sum_g sc_g * bsum_g
        __m256i corr = _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)xb[b].bsums));
        isum = _mm512_sub_epi32(isum, _mm512_slli_epi32(_mm512_zextsi256_si512(corr), 5));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(xb[b].d * _cvtsh_ss(wb[b].d)), acc);
    }
    return _mm512_reduce_add_ps(acc);
}

// ---------------------------------------------------------------- f16 / bf16

static float dot_f16(int n, const uint16_t *w, const float *x) {
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        acc0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + i))), _mm512_loadu_ps(x + i), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + i + 16))),
                               _mm512_loadu_ps(x + i + 16), acc1);
    }
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        acc0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, w + i)), _mm512_maskz_loadu_ps(m, x + i), acc0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

ALWAYS_INLINE __m512 bf16_load(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }

static float dot_bf16(int n, const uint16_t *w, const float *x) {
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        acc0 = _mm512_fmadd_ps(bf16_load(_mm256_loadu_si256((const __m256i *)(w + i))), _mm512_loadu_ps(x + i), acc0);
        acc1 = _mm512_fmadd_ps(bf16_load(_mm256_loadu_si256((const __m256i *)(w + i + 16))), _mm512_loadu_ps(x + i + 16), acc1);
    }
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        acc0 = _mm512_fmadd_ps(bf16_load(_mm256_maskz_loadu_epi16(m, w + i)), _mm512_maskz_loadu_ps(m, x + i), acc0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
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

el_gemm_fn el_gemm_avx512(int dtype) {
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
