// AVX-512 VNNI kernels on packed K-quant weights (Q4_K, Q6_K; layouts in
// pack.c), and the Q8_K activation quantizer they use. Only called after
// run-time detection found AVX-512 (and VNNI for the kernels).
//
// Q4_K, per 16-row group, super-block and token: sub-block j's integer sums
// s_j of all 16 rows come from 8 vpdpbusd (nibbles as the unsigned operand, 4
// broadcast activation bytes as the signed one). The decode (one token)
// converts them and scales them by d * sc_j of every row with one FMA; the
// tiles of 2..8 tokens multiply them by the integer scales and convert once
// per super-block (pair_scale_isums: the AMD form), or convert them and
// scale them by d/16 * sc_j with one FMA (pair_scale_fsums: the Intel form). High nibbles are used in place (16 q,
// one vpandnd instead of a shift and a mask): their scale carries the 1/16
// (in the tiles, the even sub-blocks' carries a 16 instead). The mins term msum = sum_j m_j * (bsums[2j] + bsums[2j+1]) takes 8
// vpdpwssd of (m_j, m_j) int16 lanes against broadcast bsums pairs in the
// decode; over 2..8 tokens the bsums pairs are added first (a_j = bsums[2j] +
// bsums[2j+1], the activations' sum over sub-block j: once per token,
// super-block and pair, for both groups) and 4 vpdpwssd of (m_j, m_j+1)
// against (a_j, a_j+1) do it. Per super-block:
//     out += xd * (sum_j d*sc_j * s_j - dmin * msum).
// The integer sums equal the scalar reference's (el_vec_dot_q4_k); only the
// order and grouping of the float operations differ.
#include <immintrin.h>
#include <string.h>

#include "edgellm/quant.h"
#include "qdot.h"
#include "simd_avx512.h"


// vpshufb control: in every dword, byte e of that dword zero-extended to int16, twice
ALWAYS_INLINE __m512i dup_byte_idx(int e) {
    return _mm512_set4_epi32((int)(0x80008000u | (uint32_t)(12 + e) << 16 | (uint32_t)(12 + e)),
                             (int)(0x80008000u | (uint32_t)(8 + e) << 16 | (uint32_t)(8 + e)),
                             (int)(0x80008000u | (uint32_t)(4 + e) << 16 | (uint32_t)(4 + e)),
                             (int)(0x80008000u | (uint32_t)e << 16 | (uint32_t)e));
}

// vpshufb control: in every dword, bytes e and e + 1 of that dword zero-extended to int16
ALWAYS_INLINE __m512i pair_byte_idx(int e) {
    return _mm512_set4_epi32((int)(0x80008000u | (uint32_t)(13 + e) << 16 | (uint32_t)(12 + e)),
                             (int)(0x80008000u | (uint32_t)(9 + e) << 16 | (uint32_t)(8 + e)),
                             (int)(0x80008000u | (uint32_t)(5 + e) << 16 | (uint32_t)(4 + e)),
                             (int)(0x80008000u | (uint32_t)(1 + e) << 16 | (uint32_t)e));
}

#define MAX_T 8

// A group's super-block header (pack.c): d, -dmin, and per lane r the 6-bit
// scales and mins of row r, byte e = sub-block e (lo) or 4 + e (hi), as
// el_q4_k_scale_min unpacks them.
typedef struct {
    __m512 d, nd;
    __m512i sc_lo, sc_hi, m_lo, m_hi;
} q4_k_head;

ALWAYS_INLINE q4_k_head q4_k_load_head(const uint8_t *g) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), m6 = _mm512_set1_epi8(0x3F), m30 = _mm512_set1_epi8(0x30);
    q4_k_head h;
    h.d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)g));
    h.nd = _mm512_sub_ps(_mm512_setzero_ps(), _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(g + 32))));
    __m512i z0 = _mm512_loadu_si512(g + 64), z1 = _mm512_loadu_si512(g + 128), z2 = _mm512_loadu_si512(g + 192);
    h.sc_lo = _mm512_and_si512(z0, m6);
    h.m_lo = _mm512_and_si512(z1, m6);
    h.sc_hi = _mm512_or_si512(_mm512_and_si512(z2, m4), _mm512_and_si512(_mm512_srli_epi32(z0, 2), m30));
    h.m_hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(z2, 4), m4), _mm512_and_si512(_mm512_srli_epi32(z1, 2), m30));
    return h;
}

// sc_j of every row as int32 lanes
ALWAYS_INLINE __m512i q4_k_sc(const q4_k_head *h, const int j) {
    __m512i s = j < 4 ? h->sc_lo : h->sc_hi;
    const int e = j % 4;
    return e == 3 ? _mm512_srli_epi32(s, 24) : _mm512_and_si512(_mm512_srli_epi32(s, 8 * e), _mm512_set1_epi32(0xFF));
}

// The first tile of tokens over a pair reads it from memory: it prefetches
// the pair's super-block PREFILL_AHEAD ahead into L2 (the later tiles find
// it in L1/L2). Measured on the one-group tiles before 2026-12-06: A/B in
// one process, 2 threads, 48 cold 5632 x 2048 matrices: 4 tokens x2.0, 8
// tokens x1.7-2.0 (k 5632 x1.8), 16 x1.45, 128 (8 matrices) +7-8%; 1
// super-block ahead: 4 tokens x1.5-1.8, 8 x1.7. The
// prefetches go a line at a time as the lines are read, not as a burst of 36
// per super-block: +7-15% more at 4-16 tokens (4 ahead: the same).
#ifndef PREFILL_AHEAD
#define PREFILL_AHEAD 2
#endif

// The pair tiles' integer step (q4_k_pair_block, q6_k_pair_block), all
// 64-byte aligned: after a sub-block, isb[t] (32 rows) += its integer sums
// acc[t] times the integer scales isc (32 rows); first: isb[t] = that product.
// A super-block's sum stays integer until its end, converted once, where a
// float step per sub-block (convert, then FMA with d * sc_j) was: on AMD EPYC
// Zen 5 the vpmulld/vpaddd pair ran ~5% faster than the convert/FMA pair in a
// loop of the tile's shape, 1 thread. On Intel cores vpmulld is two uops on
// one port (about 10 cycles' latency), and there the float step wins
// (pair_scale_fsums, below): this is the AMD form's.
ALWAYS_INLINE void pair_scale_isums(int32_t (*isb)[32], __m512i (*acc)[2], const int32_t *isc, const int T,
                                    const int first) {
    const __m512i s0 = _mm512_load_si512(isc), s1 = _mm512_load_si512(isc + 16);
    if (first) {
        _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) {
            _mm512_store_si512(isb[t], _mm512_mullo_epi32(acc[t][0], s0));
            _mm512_store_si512(isb[t] + 16, _mm512_mullo_epi32(acc[t][1], s1));
        }
        return;
    }
    _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) {
        _mm512_store_si512(isb[t], _mm512_add_epi32(_mm512_mullo_epi32(acc[t][0], s0), _mm512_load_si512(isb[t])));
        _mm512_store_si512(isb[t] + 16,
                           _mm512_add_epi32(_mm512_mullo_epi32(acc[t][1], s1), _mm512_load_si512(isb[t] + 16)));
    }
}

// The float form of that step (fs, the Intel form of the K-quant tiles):
// after a sub-block, fsj[t] (32 rows) += its integer sums acc[t] converted,
// times the float scales fsc (32 rows); first: fsj[t] = that product. A
// convert and an FMA per 16 rows and token, where the integer step takes a
// vpmulld (two uops on one of vpdpbusd's two ports on Intel cores) and an
// add. Every layer's matrices of the TinyLlama-shaped Q4_K model through
// el_matmul, 128 tokens, 2 threads, the two libraries in turn (Intel Xeon,
// Ice Lake, 2026-12-07), 8 rounds: best 449-502 -> 476-562 GOP/s, faster in
// 7 of them (mean of each round +4-11%). AMD keeps the integer step (above).
ALWAYS_INLINE void pair_scale_fsums(float (*fsj)[32], __m512i (*acc)[2], const float *fsc, const int T,
                                    const int first) {
    const __m512 c0 = _mm512_load_ps(fsc), c1 = _mm512_load_ps(fsc + 16);
    _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) {
        const __m512 a0 = _mm512_cvtepi32_ps(acc[t][0]), a1 = _mm512_cvtepi32_ps(acc[t][1]);
        _mm512_store_ps(fsj[t], first ? _mm512_mul_ps(a0, c0) : _mm512_fmadd_ps(a0, c0, _mm512_load_ps(fsj[t])));
        _mm512_store_ps(fsj[t] + 16, first ? _mm512_mul_ps(a1, c1) : _mm512_fmadd_ps(a1, c1, _mm512_load_ps(fsj[t] + 16)));
    }
}

// Both groups of a pair's super-block (group 0's at g, group 1's
// EL_PACK_Q4_K_GROUP on) x T tokens: fm[t][0..31] (lane r = row r of the
// pair, fm 64-byte aligned) += that super-block's products. Each broadcast
// of 4 activation bytes feeds both groups. A tile of one group (before
// 2026-12-06) took a broadcast per vpdpbusd, and those loads, not the vector ports, bounded it
// on Intel Xeon (Emerald Rapids: one broadcast shared by the 8 tokens, a
// wrong-result probe, ran ~1.7x as fast). Both groups, synthetic cold
// matrices, 1 thread, in turn in one process: 128 tokens 396-421 -> 433-487
// GOP/s (2048 x 2048 and 736 x 5632), 8 tokens 306-313 -> 340-349, 16
// 350-359 -> 376-389, 4 the same. The per-super-block sums (integer, and
// the float mins term) and the scales wait in memory (L1): 16 integer sums
// of a sub-block take half the registers. The
// mins term was an eighth of the vpdpwssd/vpdpbusd; the pre-added sums halve
// it: AMD EPYC Zen 5, 1 thread, 128 tokens on 4 pairs in L2, the two builds
// in turn: 600-606 -> 635-643 GOP/s.
//
// The scales are integer (pair_scale_isums): isb = sum_j isc_j * s_j with
// isc_j = 16 sc_j for the even (low-nibble) sub-blocks, sc_j for the odd ones
// (their sums carry the 16 already), so every term shares d/16. |s_j| <=
// 32*15*128 even, 16 times that odd: each term <= 32*15*128*16*63 < 2^26,
// the eight < 2^29: no int32 wraps. Then out += xd * (d/16 * isb - dmin *
// msum), converted once. Against the float step per sub-block, A/B in one
// process (Zen 5): 4 pairs in L2, 1 thread, 128 tokens, +3-7%; every
// layer's w_gate through el_matmul, 1 thread, 482 -> 514 GOP/s; whole
// 128-token prefills of the TinyLlama-shaped Q4_K model, median ms: 1
// thread 500 -> 489, 2 threads 303 -> 293.
ALWAYS_INLINE void q4_k_pair_block(const uint8_t *g, const el_block_q8_k *const *xb, const int T, const size_t pfd,
                                   float (*fm)[32], const int fs) {
    float fsb[MAX_T][32] __attribute__((aligned(64)));
    int32_t isc[8][32] __attribute__((aligned(64)));  // sc_j of every row, times 16 for even j
    int32_t isb[MAX_T][32] __attribute__((aligned(64)));  // sum_j isc_j * s_j of every row
    float fsc[8][32] __attribute__((aligned(64)));        // fs: d/16 * isc_j of every row
    float fsj[MAX_T][32] __attribute__((aligned(64)));    // fs: sum_j d/16 * isc_j * s_j of every row
    float dd[32] __attribute__((aligned(64)));  // d / 16 of every row
    // token t's a_j as int16 pairs (a_0, a_1) .. (a_6, a_7), dwords 0..3 (|a_j| <= 32 * 127)
    __m128i ap[MAX_T];
    _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) {
        const __m256i a = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)xb[t]->bsums), _mm256_set1_epi16(1));
        ap[t] = _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packs_epi32(a, a), 0x08));
    }
    const q4_k_head h0 = q4_k_load_head(g), h1 = q4_k_load_head(g + EL_PACK_Q4_K_GROUP);
    if (pfd)
        _Pragma("GCC unroll 2") for (int q = 0; q < 2; q++)
            _Pragma("GCC unroll 4") for (int l = 0; l < 256; l += 64)
                _mm_prefetch((const char *)g + q * EL_PACK_Q4_K_GROUP + pfd + l, _MM_HINT_T1);
    {
        // (m_j, m_j+1) of every row against (a_j, a_j+1): half the vpdpwssd of
        // (m_j, m_j) against a pair of 16-element sums. Each pair is broadcast
        // from a register (vpermd), once for both groups. Stored as 16 bytes a
        // token and read back at once as 4-byte broadcasts, twice (a group
        // each), the pairs cost more than the vpdpwssd themselves: AMD EPYC
        // Zen 5 (2026-12-07), 1 thread, 128 tokens on 4 pairs in L2 (the
        // products wrong, as probes): 674-690 GOP/s as it was, 730-750 with
        // an add for each vpdpwssd, ~815 with neither the loads nor the
        // vpdpwssd; from registers 739-745. Whole bench runs, the two builds
        // in turn (4 rounds): prefill at the median layer 2.28-2.38x -> 2.41-2.52x
        // the FMA peak at Q4_K, 2.20-2.22x -> 2.30-2.31x at Q4_K_M (3 rounds).
        __m512i md0[4], md1[4];
        _Pragma("GCC unroll 4") for (int p = 0; p < 4; p++) {
            md0[p] = _mm512_shuffle_epi8(p < 2 ? h0.m_lo : h0.m_hi, pair_byte_idx((2 * p) % 4));
            md1[p] = _mm512_shuffle_epi8(p < 2 ? h1.m_lo : h1.m_hi, pair_byte_idx((2 * p) % 4));
        }
        _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) {
            __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
            _Pragma("GCC unroll 4") for (int p = 0; p < 4; p++) {
                const __m512i b = _mm512_permutexvar_epi32(_mm512_set1_epi32(p), _mm512_castsi128_si512(ap[t]));
                s0 = _mm512_dpwssd_epi32(s0, md0[p], b);
                s1 = _mm512_dpwssd_epi32(s1, md1[p], b);
            }
            _mm512_store_ps(fsb[t], _mm512_mul_ps(_mm512_cvtepi32_ps(s0), h0.nd));
            _mm512_store_ps(fsb[t] + 16, _mm512_mul_ps(_mm512_cvtepi32_ps(s1), h1.nd));
        }
    }
    _Pragma("GCC unroll 2") for (int q = 0; q < 2; q++) {
        const q4_k_head *h = q ? &h1 : &h0;
        __m512 d16 = _mm512_mul_ps(h->d, _mm512_set1_ps(1.0f / 16));
        _mm512_store_ps(dd + 16 * q, d16);
        _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) {
            const __m512i sc = j & 1 ? q4_k_sc(h, j) : _mm512_slli_epi32(q4_k_sc(h, j), 4);
            if (fs) _mm512_store_ps(fsc[j] + 16 * q, _mm512_mul_ps(d16, _mm512_cvtepi32_ps(sc)));
            else _mm512_store_si512(isc[j] + 16 * q, sc);
        }
    }
    // a loop, not unrolled: unrolled, GCC kept the even sub-block's chunks for
    // the odd one (16 registers) or overlapped sub-blocks, and spilled the
    // integer sums either way
    _Pragma("GCC unroll 1") for (int j = 0; j < 8; j++) {
        const __m512i mj = _mm512_set1_epi8(j & 1 ? (char)0xF0 : 0x0F);  // low nibbles, or high ones in place
        const uint8_t *c = g + 256 + 64 * (size_t)(8 * (j / 2));
        __m512i acc[MAX_T][2];
        _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) acc[t][0] = acc[t][1] = _mm512_setzero_si512();
        _Pragma("GCC unroll 8") for (int i = 0; i < 8; i++) {
            if (pfd && !(j & 1)) {
                _mm_prefetch((const char *)c + 64 * i + pfd, _MM_HINT_T1);
                _mm_prefetch((const char *)c + EL_PACK_Q4_K_GROUP + 64 * i + pfd, _MM_HINT_T1);
            }
            __m512i q0 = _mm512_and_si512(_mm512_loadu_si512(c + 64 * i), mj);
            __m512i q1 = _mm512_and_si512(_mm512_loadu_si512(c + EL_PACK_Q4_K_GROUP + 64 * i), mj);
            _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) {
                __m512i xv = bcast4(xb[t]->qs + 32 * j + 4 * i);
                acc[t][0] = _mm512_dpbusd_epi32(acc[t][0], q0, xv);
                acc[t][1] = _mm512_dpbusd_epi32(acc[t][1], q1, xv);
            }
        }
        if (fs) pair_scale_fsums(fsj, acc, fsc[j], T, j == 0);
        else pair_scale_isums(isb, acc, isc[j], T, j == 0);
    }
    const __m512 e0 = _mm512_load_ps(dd), e1 = _mm512_load_ps(dd + 16);
    _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) {
        const __m512 xd = _mm512_set1_ps(xb[t]->d);
        const __m512 f0 = fs ? _mm512_add_ps(_mm512_load_ps(fsj[t]), _mm512_load_ps(fsb[t]))
                             : _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(isb[t])), e0, _mm512_load_ps(fsb[t]));
        const __m512 f1 = fs ? _mm512_add_ps(_mm512_load_ps(fsj[t] + 16), _mm512_load_ps(fsb[t] + 16))
                             : _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(isb[t] + 16)), e1,
                                               _mm512_load_ps(fsb[t] + 16));
        _mm512_store_ps(fm[t], _mm512_fmadd_ps(f0, xd, _mm512_load_ps(fm[t])));
        _mm512_store_ps(fm[t] + 16, _mm512_fmadd_ps(f1, xd, _mm512_load_ps(fm[t] + 16)));
    }
}

// One pair (pw: its first super-block, super-blocks bb bytes apart) x T
// tokens: out[t*ldo + r], r < 32. pf: prefetch ahead (the first tile); nxt:
// prefetch its nn bytes, spread over the super-blocks (NULL: none).
ALWAYS_INLINE void micro_pair_q4_k(int k, const uint8_t *pw, size_t bb, const char *x, size_t ldx, float *out,
                                   size_t ldo, const int T, const int pf, const uint8_t *nxt, size_t nn, int st,
                                   const int fs) {
    const int nb = k / EL_QK_K;
    float fm[MAX_T][32] __attribute__((aligned(64)));
    _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) {
        _mm512_store_ps(fm[t], _mm512_setzero_ps());
        _mm512_store_ps(fm[t] + 16, _mm512_setzero_ps());
    }
    for (int b = 0; b < nb; b++) {
        const el_block_q8_k *xb[MAX_T];
        _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) xb[t] = (const el_block_q8_k *)(x + (size_t)t * ldx) + b;
        if (nxt) prefetch_share(nxt, b, nb, nn);
        q4_k_pair_block(pw + (size_t)b * bb, xb, T, pf ? PREFILL_AHEAD * bb : 0, fm, fs);
    }
    _Pragma("GCC unroll 8") for (int t = 0; t < T; t++)
        stream_out(out + (size_t)t * ldo, _mm512_load_ps(fm[t]), _mm512_load_ps(fm[t] + 16), st);
}

// Decode reads a pair front to back as one stream (group 0's super-block,
// then group 1's, each chunk once). Handling both groups per sub-block
// instead (jumping between them, each chunk read twice) streamed ~25% slower:
// 2 threads, 16 x 6.5 MB matrices, 24-25 against 28-30 GB/s. It prefetches
// into L2 DECODE_AHEAD bytes (one group's super-block) ahead. Measured on
// matrices alone (24 cycled 5632 x 2048) that looked slower, but a whole
// 1-row step of the TinyLlama-shaped Q4_K model (2 threads, 150 steps, in
// two rounds), where every product is cut into tasks and many matrices are
// small, says otherwise: 15.8 ms mean without, 10.9-11.1 with 1152, 2304 or
// 4608 bytes ahead.
#ifndef DECODE_AHEAD
#define DECODE_AHEAD 2304
#endif

// One group's super-block x one token, reading it front to back: each chunk
// once, its low nibbles into sub-block 2p's sums and its high ones into 2p+1's.
// far (AMD's form): two groups' super-blocks ahead, into L1 (prefetcht0),
// as Q4_0's decode does there (qdot_avx512.c). AMD EPYC Zen 5 (2026-12-07),
// whole 1-row steps of the TinyLlama-shaped Q4_K model, 2 threads, the two
// forms alternating in one process, each round's median step (16 steps) of
// one against the other's: 0.974-0.981 in three runs at a read probe of
// 43-52 GB/s (one more 1.005, 10 rounds), 0.965 at 70-78 GB/s. The same for
// Q6_K's decode (3360 bytes ahead) traded one state for the other: 0.975-0.978
// at 70-79 GB/s, 1.026-1.030 at 46-50; there it stays as it was.
// far 2: no fetching by hand (decode_2pairs_q4_k).
#define DECODE_K_FETCH(far, p)                                                   \
    do {                                                                         \
        if ((far) == 2)                                                          \
            break;                                                               \
        if (far)                                                                 \
            _mm_prefetch((const char *)(p) + 2 * DECODE_AHEAD, _MM_HINT_T0);     \
        else                                                                     \
            _mm_prefetch((const char *)(p) + DECODE_AHEAD, _MM_HINT_T1);         \
    } while (0)
ALWAYS_INLINE __m512 decode_group_block(const uint8_t *g, const el_block_q8_k *xb, __m512 facc, const int far) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    if (DECODE_AHEAD)
        _Pragma("GCC unroll 4") for (int l = 0; l < 256; l += 64) DECODE_K_FETCH(far, g + l);
    const q4_k_head h = q4_k_load_head(g);
    __m512i ms0 = _mm512_setzero_si512(), ms1 = _mm512_setzero_si512();
    _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {
        ms0 = _mm512_dpwssd_epi32(ms0, _mm512_shuffle_epi8(h.m_lo, dup_byte_idx(j)), bcast4(xb->bsums + 2 * j));
        ms1 = _mm512_dpwssd_epi32(ms1, _mm512_shuffle_epi8(h.m_hi, dup_byte_idx(j)), bcast4(xb->bsums + 8 + 2 * j));
    }
    __m512 fsb = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(ms0, ms1)), h.nd);
    __m512 d16 = _mm512_mul_ps(h.d, _mm512_set1_ps(1.0f / 16));
    _Pragma("GCC unroll 4") for (int p = 0; p < 4; p++) {
        __m512i lo0 = _mm512_setzero_si512(), lo1 = lo0, hi0 = lo0, hi1 = lo0;
        const uint8_t *c = g + 256 + 512 * p;
        const int8_t *xq = xb->qs + 64 * p;
        _Pragma("GCC unroll 8") for (int i = 0; i < 8; i += 2) {
            if (DECODE_AHEAD) {
                DECODE_K_FETCH(far, c + 64 * i);
                DECODE_K_FETCH(far, c + 64 * i + 64);
            }
            __m512i r0 = _mm512_loadu_si512(c + 64 * i), r1 = _mm512_loadu_si512(c + 64 * i + 64);
            lo0 = _mm512_dpbusd_epi32(lo0, _mm512_and_si512(r0, m4), bcast4(xq + 4 * i));
            hi0 = _mm512_dpbusd_epi32(hi0, _mm512_andnot_si512(m4, r0), bcast4(xq + 32 + 4 * i));
            lo1 = _mm512_dpbusd_epi32(lo1, _mm512_and_si512(r1, m4), bcast4(xq + 4 * i + 4));
            hi1 = _mm512_dpbusd_epi32(hi1, _mm512_andnot_si512(m4, r1), bcast4(xq + 32 + 4 * i + 4));
        }
        __m512 dl = _mm512_mul_ps(_mm512_cvtepi32_ps(q4_k_sc(&h, 2 * p)), h.d);
        __m512 dh = _mm512_mul_ps(_mm512_cvtepi32_ps(q4_k_sc(&h, 2 * p + 1)), d16);
        fsb = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(lo0, lo1)), dl, fsb);
        fsb = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(hi0, hi1)), dh, fsb);
    }
    return _mm512_fmadd_ps(fsb, _mm512_set1_ps(xb->d), facc);
}

ALWAYS_INLINE void decode_pair_q4_k_form(int k, const uint8_t *pair, const el_block_q8_k *x, float *out, const int far) {
    const int nb = k / EL_QK_K;
    __m512 f0 = _mm512_setzero_ps(), f1 = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *g = pair + (size_t)b * 2 * EL_PACK_Q4_K_GROUP;
        f0 = decode_group_block(g, x + b, f0, far);
        // keeps GCC from holding group 0's activation broadcasts for group 1 (it spills them)
        __asm__ volatile("" ::: "memory");
        f1 = decode_group_block(g + EL_PACK_Q4_K_GROUP, x + b, f1, far);
    }
    _mm512_storeu_ps(out, f0);
    _mm512_storeu_ps(out + 16, f1);
}
// AMD's Q4_K decode: two pairs side by side (each front to back, their
// groups' super-blocks in turn), nothing fetched by hand, as Q4_0's
// (micro_decode2_q4_0, qdot_avx512.c). AMD EPYC Zen 5 (2026-12-07), whole
// 1-row steps of the TinyLlama-shaped Q4_K model at positions 128-159, the
// two forms alternating in one process, median steps: 0.959 of the one-pair
// form's time at a read probe of 44-49 GB/s (the step against the probe 0.925
// -> 0.967), 0.906 at 73-83 GB/s (0.781 -> 0.863). The same sums as
// decode_pair_q4_k_form's, in the same order.
static void decode_2pairs_q4_k(int k, const uint8_t *pa, const uint8_t *pb, const el_block_q8_k *x, float *oa,
                               float *ob) {
    const int nb = k / EL_QK_K;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, b0 = a0, b1 = a0;
    for (int b = 0; b < nb; b++) {
        const uint8_t *ga = pa + (size_t)b * 2 * EL_PACK_Q4_K_GROUP, *gb = pb + (size_t)b * 2 * EL_PACK_Q4_K_GROUP;
        a0 = decode_group_block(ga, x + b, a0, 2);
        __asm__ volatile("" ::: "memory");  // as in decode_pair_q4_k_form
        b0 = decode_group_block(gb, x + b, b0, 2);
        __asm__ volatile("" ::: "memory");
        a1 = decode_group_block(ga + EL_PACK_Q4_K_GROUP, x + b, a1, 2);
        __asm__ volatile("" ::: "memory");
        b1 = decode_group_block(gb + EL_PACK_Q4_K_GROUP, x + b, b1, 2);
    }
    _mm512_storeu_ps(oa, a0);
    _mm512_storeu_ps(oa + 16, a1);
    _mm512_storeu_ps(ob, b0);
    _mm512_storeu_ps(ob + 16, b1);
}

// The decode of one pair, Intel's form and AMD's (far: only an odd last pair
// since decode_2pairs_q4_k).
static void decode_pair_q4_k(int k, const uint8_t *pair, const el_block_q8_k *x, float *out) {
    decode_pair_q4_k_form(k, pair, x, out, 0);
}
static void decode_pair_q4_k_far(int k, const uint8_t *pair, const el_block_q8_k *x, float *out) {
    decode_pair_q4_k_form(k, pair, x, out, 1);
}

// AMD's decode of np pairs (ldw bytes apart) x one token as an
// el_gemm_runs_fn (qdot.h): two runs side by side, np / 2 pairs from wa and as
// many from wb (by `two`), then wb's odd last pair alone (by `one`). The
// panel kernel's decode is this with wb at pair np / 2.
typedef void (*decode_two_fn)(int k, const uint8_t *pa, const uint8_t *pb, const el_block_q8_k *x, float *oa,
                              float *ob);
typedef void (*decode_one_fn)(int k, const uint8_t *pair, const el_block_q8_k *x, float *out);
// (Inlined into runs_q4_k and runs_q6_k, with the kernels as constants: the calls are direct and inlined too.)
ALWAYS_INLINE void decode_two_runs(int k, const void *wa, const void *wb, size_t ldw, int np, const void *x,
                                   float *out, const decode_two_fn two, const decode_one_fn one) {
    const int run = np / 2;
    for (int p = 0; p < run; p++)
        two(k, (const uint8_t *)wa + (size_t)p * ldw, (const uint8_t *)wb + (size_t)p * ldw, x, out + 32 * p,
            out + 32 * (p + run));
    if (np % 2) one(k, (const uint8_t *)wb + (size_t)run * ldw, x, out + 32 * (np - 1));
}

static NOINLINE void runs_q4_k(int k, const void *wa, const void *wb, size_t ldw, int np, const void *x, float *out) {
    decode_two_runs(k, wa, wb, ldw, np, x, out, decode_2pairs_q4_k, decode_pair_q4_k_far);
}

#define PACKED_TOKENS 8

ALWAYS_INLINE void gemm_packed_q4_k_form(int k, const void *w, size_t ldw, int nr, const void *x, size_t ldx, int nt,
                                       float *out, size_t ldo, const int fs) {
    const size_t bb = 2 * EL_PACK_Q4_K_GROUP;
    if (nt == 1 && !fs) {  // AMD's form
        runs_q4_k(k, w, (const char *)w + (size_t)(nr / 32 / 2) * ldw, ldw, nr / 32, x, out);
        return;
    }
    if (nt == 1) {
#if DECODE_AHEAD
        for (size_t off = 0; off < (size_t)DECODE_AHEAD && off < (size_t)(nr / 32) * ldw; off += 64)
            _mm_prefetch((const char *)w + off, _MM_HINT_T1);
#endif
        for (int p = 0; p < nr / 32; p++) decode_pair_q4_k(k, (const uint8_t *)w + (size_t)p * ldw, x, out + 32 * p);
        return;
    }
    const int tiles = (nt + PACKED_TOKENS - 1) / PACKED_TOKENS, st = stream_outputs(out, ldo, nt);
    // From 4 tiles on, the tiles after the first fetch their shares of the
    // next pair, spread over their super-blocks, as the Q8_0/Q4_0 passes do
    // (qdot_avx512.c). Every layer's matrices of the TinyLlama-shaped Q4_K
    // model, 128 tokens, 2 threads, in turn in one process (Intel Xeon): +2-4%
    // on most matrices; synthetic cold matrices, 1 thread: 32 tokens +2-4%, 64
    // +2-4%, but 16 and 24 tokens (a pair's share in one or two tiles) -7-10%.
    const size_t share = tiles > 1 ? ((ldw + (size_t)tiles - 2) / (size_t)(tiles - 1) + 63) & ~(size_t)63 : 0;
    for (int p = 0; p < nr / 32; p++) {
        const uint8_t *pw = (const uint8_t *)w + (size_t)p * ldw;
        for (int t = 0, tile = 0; t < nt; t += PACKED_TOKENS, tile++) {
            const char *xt = (const char *)x + (size_t)t * ldx;
            float *ot = out + 32 * p + (size_t)t * ldo;
            const int first = t == 0;  // no tile before this one: it prefetches ahead in its own pair
            const size_t from = (size_t)(tile - 1) * share;  // a later tile's share (not past the last pair)
            const uint8_t *nxt = tile && tiles >= 4 && p + 1 < nr / 32 && from < ldw ? pw + ldw + from : NULL;
            const size_t nn = nxt && ldw - from < share ? ldw - from : share;
            switch (nt - t < PACKED_TOKENS ? nt - t : PACKED_TOKENS) {
            // one token: the decode kernel (two chains a group, the pair front to back)
            case 1: decode_pair_q4_k(k, pw, (const el_block_q8_k *)xt, ot); break;
            case 2: micro_pair_q4_k(k, pw, bb, xt, ldx, ot, ldo, 2, first, nxt, nn, st, fs); break;
            case 3: micro_pair_q4_k(k, pw, bb, xt, ldx, ot, ldo, 3, first, nxt, nn, st, fs); break;
            case 4: micro_pair_q4_k(k, pw, bb, xt, ldx, ot, ldo, 4, first, nxt, nn, st, fs); break;
            case 5: micro_pair_q4_k(k, pw, bb, xt, ldx, ot, ldo, 5, first, nxt, nn, st, fs); break;
            case 6: micro_pair_q4_k(k, pw, bb, xt, ldx, ot, ldo, 6, first, nxt, nn, st, fs); break;
            case 7: micro_pair_q4_k(k, pw, bb, xt, ldx, ot, ldo, 7, first, nxt, nn, st, fs); break;
            default: micro_pair_q4_k(k, pw, bb, xt, ldx, ot, ldo, PACKED_TOKENS, first, nxt, nn, st, fs); break;
            }
        }
    }
    if (st) _mm_sfence();
}

// ---------------------------------------------------------------- Q6_K
//
// Per 16-row group, super-block and token: sub-block j's integer sums s_j =
// sum q*x of all 16 rows (q in 0..63 as the unsigned operand) come from 4
// vpdpbusd. The -32 offset is integer too: msum = sum_j sc_j * bsums[j] from 8
// vpdpwssd of (sc, sc) int16 lanes against broadcast bsums pairs (|msum| <=
// 16*128*2048 = 2^22). Per super-block:
//     out += d * xd * (sum_j sc_j * s_j - 32 * msum).
// The decode (one token) converts each s_j (|s_j| <= 16*63*128, exact) and
// scales it by sc_j with one FMA: the sum over j is in float, each term exact.
// Over 2..8 tokens (q6_k_pair_block) the whole bracket stays integer, as
// el_vec_dot_q6_k's does: |sc_j * s_j| <= 128*16*63*128 < 2^24, the 16 <
// 2^28, |32 * msum| <= 2^27, so no int32 wraps, and it is converted once.

// bitwise select: mask ? a : b
ALWAYS_INLINE __m512i bitsel(__m512i mask, __m512i a, __m512i b) { return _mm512_ternarylogic_epi32(mask, a, b, 0xCA); }

// Sub-block j's 4 vectors of quants from its 3 chunks at c (pack.c): q[i]
// lane r = row r's elements 16j + 4i .. 16j + 4i + 3.
ALWAYS_INLINE void q6_k_quads(const uint8_t *c, __m512i q[4]) {
    const __m512i m6 = _mm512_set1_epi8(0x3F);
    __m512i p0 = _mm512_loadu_si512(c), p1 = _mm512_loadu_si512(c + 64), p2 = _mm512_loadu_si512(c + 128);
    q[0] = _mm512_and_si512(p0, m6);
    q[1] = _mm512_and_si512(p1, m6);
    q[2] = _mm512_and_si512(p2, m6);
    // top bit pairs of p2, p1, p0 at bits 6-7, 4-5, 2-3 of each byte (the
    // 16-bit shifts bring the next byte's bits into bits not kept), then down by 2
    __m512i y = bitsel(_mm512_set1_epi8((char)0xC0), p2, _mm512_srli_epi16(p1, 2));
    __m512i z = bitsel(_mm512_set1_epi8((char)0xF0), y, _mm512_srli_epi16(p0, 4));
    q[3] = _mm512_and_si512(_mm512_srli_epi16(z, 2), m6);
}

// sc_j of every row as int32, from scale vector j / 4 (byte order 0, 2, 1, 3)
ALWAYS_INLINE __m512i q6_k_isc(__m512i sv, const int j) {
    static const int pos[4] = {0, 2, 1, 3};
    const int b = pos[j % 4];
    __m512i v = b == 3 ? sv : _mm512_slli_epi32(sv, 24 - 8 * b);
    return _mm512_srai_epi32(v, 24);
}

// the same as floats
ALWAYS_INLINE __m512 q6_k_sc(__m512i sv, const int j) { return _mm512_cvtepi32_ps(q6_k_isc(sv, j)); }

// Software prefetch for the Q6_K decode: one group's super-block (3360
// bytes) ahead into L2. On matrices alone (16 x 9.2 MB) fetching one pair's
// super-block (6720 bytes) ahead streamed slower than none (1 thread 15-16
// against 26 GB/s, 2 threads 27-28 against 31-32), but in whole 1-row steps
// of the TinyLlama-shaped Q4_K_M model (Q4_K prefetching as above, Q6_K for
// the head and half the value and down matrices), 2 threads, 150 steps:
// 12.7-14.4 ms mean with 3360, 14.0-14.1 with 1680, 15.7-16.8 with 6720, 14.6-16.0
// without (and 16.4-17.8 with neither type prefetching).
#ifndef DECODE_AHEAD_Q6
#define DECODE_AHEAD_Q6 3360
#endif
#ifndef DECODE_HINT_Q6
#define DECODE_HINT_Q6 _MM_HINT_T1
#endif

// One sub-block (its 3 chunks at c, scales sc, activations at offset xo of
// the token's quants) of the decode, in two chains, into f.
ALWAYS_INLINE __m512 q6_k_sub(const uint8_t *c, __m512 sc, const el_block_q8_k *xb, const int xo, const size_t pfd,
                              __m512 f) {
    if (pfd) {
        _mm_prefetch((const char *)c + pfd, DECODE_HINT_Q6);
        _mm_prefetch((const char *)c + 64 + pfd, DECODE_HINT_Q6);
        _mm_prefetch((const char *)c + 128 + pfd, DECODE_HINT_Q6);
    }
    __m512i q[4];
    q6_k_quads(c, q);
    __m512i acc[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
    _Pragma("GCC unroll 4") for (int i = 0; i < 4; i++)
        acc[i % 2] = _mm512_dpbusd_epi32(acc[i % 2], q[i], bcast4(xb->qs + xo + 4 * i));
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(acc[0], acc[1])), sc, f);
}

// One group's super-block (EL_PACK_Q6_K_GROUP bytes at g, its 16 d at dp) x
// one token (decode): facc (lane r = row r) + that super-block's products.
// Reads g front to back, sub-block by sub-block, two chains; pfd: prefetch
// that many bytes ahead, line by line as it reads (0: not).
ALWAYS_INLINE __m512 q6_k_block(const uint8_t *g, const uint16_t *dp, const el_block_q8_k *xb, const size_t pfd,
                                __m512 facc) {
    if (pfd) {
        _Pragma("GCC unroll 4") for (int l = 0; l < 256; l += 64) _mm_prefetch((const char *)g + pfd + l, DECODE_HINT_Q6);
    }
    __m512 fsb[2];
    {
        __m512i ms[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
        _Pragma("GCC unroll 4") for (int i = 0; i < 4; i++) {
            const __m512i sv = _mm512_loadu_si512(g + 64 * i);
            // int16 lanes (sc_4i, sc_4i+1) and (sc_4i+2, sc_4i+3)
            __m512i lo = _mm512_srai_epi16(_mm512_slli_epi16(sv, 8), 8), hi = _mm512_srai_epi16(sv, 8);
            ms[i % 2] = _mm512_dpwssd_epi32(ms[i % 2], lo, bcast4(xb->bsums + 4 * i));
            ms[i % 2] = _mm512_dpwssd_epi32(ms[i % 2], hi, bcast4(xb->bsums + 4 * i + 2));
        }
        fsb[0] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(ms[0], ms[1])), _mm512_set1_ps(-32.0f));
        fsb[1] = _mm512_setzero_ps();
    }
    // A quarter of the sub-blocks per iteration. Fully unrolled, a pair's
    // loop was ~7 KB of code whose speed moved with where the linker put it
    // (the same source in two objects: 0.83-0.86 of each other). A/B in one
    // process, cold 5632 x 2048 and 32000 x 2048, 2 threads, in both link
    // orders: x1.29-1.67; a 1-row step of the TinyLlama-shaped Q4_K_M model
    // 12.7 -> 11.6 ms mean.
    _Pragma("GCC unroll 1") for (int j4 = 0; j4 < 16; j4 += 4) {
        const __m512i sv = _mm512_loadu_si512(g + 16 * j4);
        _Pragma("GCC unroll 4") for (int u = 0; u < 4; u++)
            fsb[u % 2] = q6_k_sub(g + 256 + 192 * (j4 + u), q6_k_sc(sv, u), xb, 16 * (j4 + u), pfd, fsb[u % 2]);
    }
    __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)dp));
    return _mm512_fmadd_ps(_mm512_add_ps(fsb[0], fsb[1]), _mm512_mul_ps(d, _mm512_set1_ps(xb->d)), facc);
}

// As for Q4_K: the first tile prefetches PREFILL_AHEAD_Q6 super-blocks
// ahead, a line as each is read. A/B in one process, 2 threads, cold
// matrices, against none: 32000 x 2048 (the head) 8 tokens x2.4, 4 x2.4-2.8,
// 16 x1.75, 128 +15%; 5632 x 2048 8 tokens x2.1-2.5. The same prefetches as
// one burst of 53 lines per super-block gained only x1.3. 1 and 4 ahead: the
// same as 2. A whole 8-row step of the TinyLlama-shaped Q4_K_M model (Q6_K
// head, half the value and down matrices; Q4_K spread as well): 44 -> 27 ms.
#ifndef PREFILL_AHEAD_Q6
#define PREFILL_AHEAD_Q6 2
#endif

// Both groups of a pair's super-block (group 0's at g, group 1's
// EL_PACK_Q6_K_GROUP on, their 16 d each at dp) x T tokens: fm[t][0..31] +=
// that super-block's products; fm 64-byte aligned. As for Q4_K
// (q4_k_pair_block): each broadcast of 4 activation bytes feeds both groups,
// where a tile of one group took one per vpdpbusd; the integer scales and
// sums wait in L1. Its prefetches are T1 whatever DECODE_HINT_Q6 says.
// Integer scales against the float step per sub-block, A/B in one process
// (Zen 5): every layer's w_gate of a Q6_K model through el_matmul, 1 thread,
// 410 -> 431 GOP/s; whole 128-token prefills of the TinyLlama-shaped Q4_K_M
// model (both changes), 1 thread, median 526 -> 516 ms.
ALWAYS_INLINE void q6_k_pair_block(const uint8_t *g, const uint16_t *dp, const el_block_q8_k *const *xb, const int T,
                                   const size_t pfd, float (*fm)[32], const int fs) {
    int32_t isb[MAX_T][32] __attribute__((aligned(64)));  // sum_j sc_j * s_j - 32 * msum of every row
    int32_t isc[16][32] __attribute__((aligned(64)));  // sc_j of every row
    float fsc[16][32] __attribute__((aligned(64)));    // fs: sc_j of every row, as floats
    float fsj[MAX_T][32] __attribute__((aligned(64)));  // fs: isb's sum in float
    float dd[32] __attribute__((aligned(64)));  // d of every row
    _Pragma("GCC unroll 2") for (int q = 0; q < 2; q++) {
        const uint8_t *gq = g + q * EL_PACK_Q6_K_GROUP;
        if (pfd) _Pragma("GCC unroll 4") for (int l = 0; l < 256; l += 64) _mm_prefetch((const char *)gq + pfd + l, _MM_HINT_T1);
        const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(dp + 16 * q)));
        __m512i ms[MAX_T];
        _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) ms[t] = _mm512_setzero_si512();
        _Pragma("GCC unroll 4") for (int i = 0; i < 4; i++) {
            const __m512i sv = _mm512_loadu_si512(gq + 64 * i);
            // int16 lanes (sc_4i, sc_4i+1) and (sc_4i+2, sc_4i+3)
            __m512i lo = _mm512_srai_epi16(_mm512_slli_epi16(sv, 8), 8), hi = _mm512_srai_epi16(sv, 8);
            _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) {
                ms[t] = _mm512_dpwssd_epi32(ms[t], lo, bcast4(xb[t]->bsums + 4 * i));
                ms[t] = _mm512_dpwssd_epi32(ms[t], hi, bcast4(xb[t]->bsums + 4 * i + 2));
            }
            _Pragma("GCC unroll 4") for (int u = 0; u < 4; u++) {
                if (fs) _mm512_store_ps(fsc[4 * i + u] + 16 * q, q6_k_sc(sv, u));
                else _mm512_store_si512(isc[4 * i + u] + 16 * q, q6_k_isc(sv, u));
            }
        }
        _mm512_store_ps(dd + 16 * q, d);
        _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) {
            const __m512i m32 = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(ms[t], 5));
            if (fs) _mm512_store_ps(fsj[t] + 16 * q, _mm512_cvtepi32_ps(m32));
            else _mm512_store_si512(isb[t] + 16 * q, m32);
        }
    }
    // a loop, not unrolled, as in q4_k_pair_block
    _Pragma("GCC unroll 1") for (int j = 0; j < 16; j++) {
        const uint8_t *c = g + 256 + 192 * (size_t)j;
        if (pfd) _Pragma("GCC unroll 3") for (int l = 0; l < 192; l += 64) {
            _mm_prefetch((const char *)c + l + pfd, _MM_HINT_T1);
            _mm_prefetch((const char *)c + EL_PACK_Q6_K_GROUP + l + pfd, _MM_HINT_T1);
        }
        __m512i q0[4], q1[4];
        q6_k_quads(c, q0);
        q6_k_quads(c + EL_PACK_Q6_K_GROUP, q1);
        __m512i acc[MAX_T][2];
        _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) acc[t][0] = acc[t][1] = _mm512_setzero_si512();
        _Pragma("GCC unroll 4") for (int i = 0; i < 4; i++) {
            _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) {
                __m512i xv = bcast4(xb[t]->qs + 16 * j + 4 * i);
                acc[t][0] = _mm512_dpbusd_epi32(acc[t][0], q0[i], xv);
                acc[t][1] = _mm512_dpbusd_epi32(acc[t][1], q1[i], xv);
            }
        }
        if (fs) pair_scale_fsums(fsj, acc, fsc[j], T, 0);
        else pair_scale_isums(isb, acc, isc[j], T, 0);
    }
    const __m512 e0 = _mm512_load_ps(dd), e1 = _mm512_load_ps(dd + 16);
    _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) {
        const __m512 xd = _mm512_set1_ps(xb[t]->d);
        const __m512 s0 = fs ? _mm512_load_ps(fsj[t]) : _mm512_cvtepi32_ps(_mm512_load_si512(isb[t]));
        const __m512 s1 = fs ? _mm512_load_ps(fsj[t] + 16) : _mm512_cvtepi32_ps(_mm512_load_si512(isb[t] + 16));
        _mm512_store_ps(fm[t], _mm512_fmadd_ps(s0, _mm512_mul_ps(e0, xd), _mm512_load_ps(fm[t])));
        _mm512_store_ps(fm[t] + 16, _mm512_fmadd_ps(s1, _mm512_mul_ps(e1, xd), _mm512_load_ps(fm[t] + 16)));
    }
}

// One pair (pw: its first super-block, super-blocks bb bytes apart) x T
// tokens: out[t*ldo + r], r < 32. pf: prefetch PREFILL_AHEAD_Q6 super-blocks
// ahead (the first tile). Fetching the next pair from the later tiles, as
// Q4_K does, was no faster at 128 tokens and 12% slower at 16.
ALWAYS_INLINE void micro_pair_q6_k(int k, const uint8_t *pw, size_t bb, const char *x, size_t ldx, float *out,
                                   size_t ldo, const int T, const int pf, int st, const int fs) {
    const int nb = k / EL_QK_K;
    float fm[MAX_T][32] __attribute__((aligned(64)));
    _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) {
        _mm512_store_ps(fm[t], _mm512_setzero_ps());
        _mm512_store_ps(fm[t] + 16, _mm512_setzero_ps());
    }
    for (int b = 0; b < nb; b++) {
        const el_block_q8_k *xb[MAX_T];
        _Pragma("GCC unroll 8") for (int t = 0; t < T; t++) xb[t] = (const el_block_q8_k *)(x + (size_t)t * ldx) + b;
        const uint8_t *blk = pw + (size_t)b * bb;
        if (pf) _mm_prefetch((const char *)blk + 2 * EL_PACK_Q6_K_GROUP + PREFILL_AHEAD_Q6 * bb, _MM_HINT_T1);
        q6_k_pair_block(blk, (const uint16_t *)(blk + 2 * EL_PACK_Q6_K_GROUP), xb, T, pf ? PREFILL_AHEAD_Q6 * bb : 0, fm,
                        fs);
    }
    _Pragma("GCC unroll 8") for (int t = 0; t < T; t++)
        stream_out(out + (size_t)t * ldo, _mm512_load_ps(fm[t]), _mm512_load_ps(fm[t] + 16), st);
}

// Decode: a pair front to back (group 0's super-block, group 1's, their d).
static void decode_pair_q6_k(int k, const uint8_t *pair, const el_block_q8_k *x, float *out) {
    const int nb = k / EL_QK_K;
    const size_t bb = 2 * EL_PACK_Q6_K_GROUP + 64;
    __m512 f[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = pair + (size_t)b * bb;
        const el_block_q8_k *xb = x + b;
        if (DECODE_AHEAD_Q6) _mm_prefetch((const char *)blk + 2 * EL_PACK_Q6_K_GROUP + DECODE_AHEAD_Q6, DECODE_HINT_Q6);
        f[0] = q6_k_block(blk, (const uint16_t *)(blk + 2 * EL_PACK_Q6_K_GROUP), xb, DECODE_AHEAD_Q6, f[0]);
        __asm__ volatile("" ::: "memory");
        f[1] = q6_k_block(blk + EL_PACK_Q6_K_GROUP, (const uint16_t *)(blk + 2 * EL_PACK_Q6_K_GROUP + 32), xb,
                          DECODE_AHEAD_Q6, f[1]);
    }
    _mm512_storeu_ps(out, f[0]);
    _mm512_storeu_ps(out + 16, f[1]);
}

// AMD's Q6_K decode: two pairs side by side, as Q4_K's, each group's
// super-block still fetched DECODE_AHEAD_Q6 ahead (without: 1.09 and 1.19 of
// the one-pair form's step time). Unlike decode_pair_q6_k it does not fetch
// the line of the two groups' d (one in 105) nor the first lines of a call;
// it was measured so. Whole 1-row steps of the TinyLlama-shaped Q4_K_M model (Q6_K: the
// head, half the value and down matrices; Q4_K two pairs at a time in both),
// alternating, median steps: 0.959-0.984 of the one-pair form's time at a
// read probe of 43-55 GB/s (the step against the probe 0.906-0.907 ->
// 0.919-0.945), 0.945 at 69-87 GB/s (0.765 -> 0.813).
static void decode_2pairs_q6_k(int k, const uint8_t *pa, const uint8_t *pb, const el_block_q8_k *x, float *oa,
                               float *ob) {
    const int nb = k / EL_QK_K;
    const size_t bb = 2 * EL_PACK_Q6_K_GROUP + 64;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, b0 = a0, b1 = a0;
    for (int b = 0; b < nb; b++) {
        const uint8_t *ba = pa + (size_t)b * bb, *bq = pb + (size_t)b * bb;
        const el_block_q8_k *xb = x + b;
        a0 = q6_k_block(ba, (const uint16_t *)(ba + 2 * EL_PACK_Q6_K_GROUP), xb, DECODE_AHEAD_Q6, a0);
        __asm__ volatile("" ::: "memory");
        b0 = q6_k_block(bq, (const uint16_t *)(bq + 2 * EL_PACK_Q6_K_GROUP), xb, DECODE_AHEAD_Q6, b0);
        __asm__ volatile("" ::: "memory");
        a1 = q6_k_block(ba + EL_PACK_Q6_K_GROUP, (const uint16_t *)(ba + 2 * EL_PACK_Q6_K_GROUP + 32), xb,
                        DECODE_AHEAD_Q6, a1);
        __asm__ volatile("" ::: "memory");
        b1 = q6_k_block(bq + EL_PACK_Q6_K_GROUP, (const uint16_t *)(bq + 2 * EL_PACK_Q6_K_GROUP + 32), xb,
                        DECODE_AHEAD_Q6, b1);
    }
    _mm512_storeu_ps(oa, a0);
    _mm512_storeu_ps(oa + 16, a1);
    _mm512_storeu_ps(ob, b0);
    _mm512_storeu_ps(ob + 16, b1);
}

static NOINLINE void runs_q6_k(int k, const void *wa, const void *wb, size_t ldw, int np, const void *x, float *out) {
    decode_two_runs(k, wa, wb, ldw, np, x, out, decode_2pairs_q6_k, decode_pair_q6_k);
}

ALWAYS_INLINE void gemm_packed_q6_k_form(int k, const void *w, size_t ldw, int nr, const void *x, size_t ldx, int nt,
                                       float *out, size_t ldo, const int fs) {
    const size_t bb = 2 * EL_PACK_Q6_K_GROUP + 64;
    if (nt == 1 && !fs) {  // AMD's form
        runs_q6_k(k, w, (const char *)w + (size_t)(nr / 32 / 2) * ldw, ldw, nr / 32, x, out);
        return;
    }
    if (nt == 1) {
#if DECODE_AHEAD_Q6
        for (size_t off = 0; off < DECODE_AHEAD_Q6 && off < (size_t)(nr / 32) * ldw; off += 64)
            _mm_prefetch((const char *)w + off, DECODE_HINT_Q6);
#endif
        for (int p = 0; p < nr / 32; p++)
            decode_pair_q6_k(k, (const uint8_t *)w + (size_t)p * ldw, x, out + 32 * p);
        return;
    }
    const int st = stream_outputs(out, ldo, nt);
    for (int p = 0; p < nr / 32; p++) {
        const uint8_t *pw = (const uint8_t *)w + (size_t)p * ldw;
        for (int t = 0; t < nt; t += PACKED_TOKENS) {
            const char *xt = (const char *)x + (size_t)t * ldx;
            float *ot = out + 32 * p + (size_t)t * ldo;
            const int first = t == 0;  // no tile before this one: it prefetches
            switch (nt - t < PACKED_TOKENS ? nt - t : PACKED_TOKENS) {
            case 1: decode_pair_q6_k(k, pw, (const el_block_q8_k *)xt, ot); break;  // one token: the decode kernel
            case 2: micro_pair_q6_k(k, pw, bb, xt, ldx, ot, ldo, 2, first, st, fs); break;
            case 3: micro_pair_q6_k(k, pw, bb, xt, ldx, ot, ldo, 3, first, st, fs); break;
            case 4: micro_pair_q6_k(k, pw, bb, xt, ldx, ot, ldo, 4, first, st, fs); break;
            case 5: micro_pair_q6_k(k, pw, bb, xt, ldx, ot, ldo, 5, first, st, fs); break;
            case 6: micro_pair_q6_k(k, pw, bb, xt, ldx, ot, ldo, 6, first, st, fs); break;
            case 7: micro_pair_q6_k(k, pw, bb, xt, ldx, ot, ldo, 7, first, st, fs); break;
            default: micro_pair_q6_k(k, pw, bb, xt, ldx, ot, ldo, PACKED_TOKENS, first, st, fs); break;
            }
        }
    }
    if (st) _mm_sfence();
}

// The two forms of the K-quant kernels: the float step per sub-block on
// Intel cores, the integer one on AMD's (pair_scale_fsums, pair_scale_isums).
#define DEFINE_K_FORM(NAME, FORM, FS)                                                                         \
    static void NAME(int k, const void *w, size_t ldw, int nr, const void *x, size_t ldx, int nt, float *out, \
                     size_t ldo) {                                                                            \
        FORM(k, w, ldw, nr, x, ldx, nt, out, ldo, FS);                                                        \
    }
DEFINE_K_FORM(gemm_packed_q4_k, gemm_packed_q4_k_form, 1)
DEFINE_K_FORM(gemm_packed_q4_k_amd, gemm_packed_q4_k_form, 0)
DEFINE_K_FORM(gemm_packed_q6_k, gemm_packed_q6_k_form, 1)
DEFINE_K_FORM(gemm_packed_q6_k_amd, gemm_packed_q6_k_form, 0)

el_gemm_fn el_gemm_packed_k_form_avx512(int dtype, int amd) {
    switch (dtype) {
    case EL_DTYPE_Q4_K: return amd ? gemm_packed_q4_k_amd : gemm_packed_q4_k;
    case EL_DTYPE_Q6_K: return amd ? gemm_packed_q6_k_amd : gemm_packed_q6_k;
    }
    return NULL;
}

el_gemm_runs_fn el_gemm_runs_k_avx512(int dtype) {
    switch (dtype) {
    case EL_DTYPE_Q4_K: return runs_q4_k;
    case EL_DTYPE_Q6_K: return runs_q6_k;
    }
    return NULL;
}

el_gemm_fn el_gemm_packed_k_avx512(int dtype) { return el_gemm_packed_k_form_avx512(dtype, el_cpu_is_amd()); }

// ---------------------------------------------------------------- activations

// The bytes of el_quantize_row_q8_k: amax ignoring NaN (as fmaxf), d =
// amax / 127, q = x * (1 / d) rounded to nearest even (vcvtps2dq in the
// default rounding mode, as nearbyintf), clamped to +-127; bsums per 16. The
// scalar loop was ~15% of a Q4_K prefill's matmul time (perf), most of it
// the fmaxf calls. The 16 bsums come from one reduction tree (reduce16_add),
// not 16 horizontal sums: Zen 5, 1 thread, 128 x 5632 floats, 4.9 -> 6.9
// floats/ns.
void el_act_quantize_q8_k_avx512(const float *x, void *dst, int k) {
    el_block_q8_k *y = dst;
    const __m512i lim = _mm512_set1_epi32(127), nlim = _mm512_set1_epi32(-127);
    for (int b = 0; b < k / EL_QK_K; b++, x += EL_QK_K) {
        __m512 m = _mm512_setzero_ps();
        // max(v, m) returns m when v is NaN: fmaxf(amax, NaN) = amax
        _Pragma("GCC unroll 16") for (int i = 0; i < EL_QK_K; i += 16) m = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + i)), m);
        float amax = _mm512_reduce_max_ps(m);
        float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        y[b].d = d;
        __m512 vid = _mm512_set1_ps(id);
        __m512i q[16];
        _Pragma("GCC unroll 4") for (int g = 0; g < 16; g++) {
            q[g] = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + 16 * g), vid));
            q[g] = _mm512_min_epi32(_mm512_max_epi32(q[g], nlim), lim);
            _mm_storeu_si128((__m128i *)(y[b].qs + 16 * g), _mm512_cvtepi32_epi8(q[g]));
        }
        // the 16 sums together (|sum| <= 16 * 127: exact in int16)
        _mm256_storeu_si256((__m256i *)y[b].bsums, _mm512_cvtepi32_epi16(reduce16_add(q)));
    }
}
