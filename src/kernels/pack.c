// Row-interleaved copies of quantized weights, made once at load time for the
// AVX-512 VNNI kernels and, for Q8_0 / Q4_0, the AVX2 ones, which read the
// same pairs 8 rows at a time (the file layout stays the reference and what
// the scalar path reads).
//
// Rows are taken 16 at a time (a "group"). Per block b of 32 columns a group
// holds, for chunk j, 64 bytes: lane r (bytes 4r..4r+3) = row r's bytes 4j..4j+3
// of block b. One vpdpbusd of a chunk against 4 broadcast activation bytes then
// gives 16 rows' partial sums at once, and the float scaling of a block is one
// vector operation for 16 rows.
//   Q8_0: 8 chunks of quants + 128 (unsigned, as vpdpbusd wants them).
//   Q4_0: 4 chunks of the raw nibble bytes: low nibbles of chunk j are elements
//         4j..4j+3 of the block, high nibbles 16+4j..16+4j+3.
// Two groups make a "pair" of 32 rows, pairs pair_bytes apart. Q8_0 pairs
// are stored block by block:
//   [group 0's chunks][group 1's chunks][group 0's 16 f16 scales][group 1's]
// (el_pack_block_bytes per block). Decode reads a pair front to back as one
// stream: with each group's quants and scales in separate regions, the four
// streams of a pair read ~20% slower per thread than one (22.4 against 27.1
// GB/s, single thread, 6.5 MB matrices). Several pairs read side by side,
// each front to back, are another matter: qdot_avx512.c's Q8_0 decode reads
// three at once, faster than one. Q4_0 pairs are stored by units of
// 8 blocks (256 columns), each [group 0's part][group 1's part], a part being
// its blocks' scales, then their chunks (el_pack_q4_0_off; a last unit of
// fewer blocks is the same, shorter). A group's part of a whole unit is then
// one 2304-byte piece with its scales first, as a Q4_K group's super-block
// is: decode on the block-by-block layout read 0.70 of the bandwidth that
// Q4_K's decode reads on the same 4.5 bits per weight; on this one it reads
// as much (bench/decode_kinds.c). The same size as the file's rows.
//
// Q4_K (super-blocks of 256 columns, 144 bytes a row): per super-block b a
// pair is [group 0][group 1], 2304 bytes each (EL_PACK_Q4_K_GROUP), so decode
// still reads it front to back and a group's super-block is one piece:
//     0: the 16 rows' d (f16)        32: their dmin (f16)
//    64: 3 x 64 bytes: lane r of the i-th = row r's scale bytes 4i..4i+3,
//        the file's 12-byte 6-bit packing kept as is (unpacked with a few
//        vector ops per super-block, shared by all tokens)
//   256: 32 chunks: lane r of chunk c = row r's qs[4c..4c+3]: low nibbles are
//        elements 4c..4c+3 of sub-block 2(c/8), high nibbles the same of
//        sub-block 2(c/8)+1.
// 32 x 144 = 4608 bytes per pair and super-block: again the file's size.
//
// Q6_K (210 bytes a row per super-block): per super-block b a pair is
//     0: group 0 (EL_PACK_Q6_K_GROUP = 3328 bytes)   3328: group 1
//  6656: group 0's 16 d (f16)                        6688: group 1's
// 6720 = 32 x 210 bytes, a multiple of 64, and so is 3328: every chunk is
// one cache line. A group's super-block:
//     0: 4 x 64 bytes: lane r of the i-th = row r's scales 4i, 4i+2, 4i+1,
//        4i+3 (int8; that order makes bytes 0,2 and 1,3 the int16 pairs
//        of sub-blocks (4i, 4i+1) and (4i+2, 4i+3) after one shift each)
//   256: 16 x 192 bytes, sub-block j's: 3 chunks P0, P1, P2; byte e of lane r
//        of Pc = q[16j + 4c + e] | bits 2c..2c+1 of q[16j + 12 + e] << 6,
//        q the row's 6-bit quants (0..63). Elements 16j + 4c.. are one AND
//        away; 16j + 12.. are collected from the three top bit pairs.
//
// AArch64 builds (dotprod and i8mm levels) pack Q8_0/Q4_0 their own way, in the same bytes per pair
// (so el_pack_pair_bytes holds for both): per block of a 32-row unit, 16 row
// pairs of 64 (Q8_0) or 32 (Q4_0) bytes, then the 32 rows' f16 scales in row
// order. Pair p holds rows 2p and 2p+1 eight quant bytes at a time:
// [row 2p bytes 8c..8c+7 | row 2p+1 bytes 8c..8c+7] for c = 0..3 (Q8_0, the
// signed quants as in the file) or c = 0..1 (Q4_0, the nibble bytes: low
// nibbles columns 8c.., high nibbles 16+8c..). A 16-byte load is then sdot's
// two rows x 8 columns against 8 activation bytes in both halves, and
// smmla's 2x8 weight operand as it is (qdot_arm.h, qdot_i8mm.c).
#include <string.h>

#include "edgellm/kernels.h"
#include "edgellm/quant.h"
#include "qdot.h"

size_t el_pack_block_bytes(int dtype) {
    switch (dtype) {
    case EL_DTYPE_Q8_0: return 2 * 16 * EL_QK + 64;
    case EL_DTYPE_Q4_0: return 2 * 16 * EL_QK / 2 + 64;
    case EL_DTYPE_Q4_K: return 2 * EL_PACK_Q4_K_GROUP;
    case EL_DTYPE_Q6_K: return 2 * EL_PACK_Q6_K_GROUP + 64;
    }
    return 0;
}

// elements per packed block of dtype
static int pack_block_elems(int dtype) { return dtype == EL_DTYPE_Q4_K || dtype == EL_DTYPE_Q6_K ? EL_QK_K : EL_QK; }

size_t el_pack_pair_bytes(int dtype, int k) {
    return (size_t)(k / pack_block_elems(dtype)) * el_pack_block_bytes(dtype);
}

static void pack_q4_k(const el_tensor *W, int64_t rows, void *dst) {
    int k = (int)W->ne[0], nb = k / EL_QK_K;
    size_t ldw = el_tensor_row_size(W), bb = el_pack_block_bytes(EL_DTYPE_Q4_K);
    for (int64_t p = 0; p < rows / 32; p++)
        for (int r = 0; r < 32; r++) {
            const el_block_q4_k *row = (const el_block_q4_k *)((const char *)W->data + (size_t)(32 * p + r) * ldw);
            int lane = r % 16;
            for (int b = 0; b < nb; b++) {
                uint8_t *g = (uint8_t *)dst + (size_t)p * el_pack_pair_bytes(EL_DTYPE_Q4_K, k) + (size_t)b * bb +
                             (size_t)(r / 16) * EL_PACK_Q4_K_GROUP;
                memcpy(g + 2 * lane, &row[b].d, 2);
                memcpy(g + 32 + 2 * lane, &row[b].dmin, 2);
                for (int i = 0; i < 3; i++) memcpy(g + 64 + 64 * i + 4 * lane, row[b].scales + 4 * i, 4);
                for (int c = 0; c < 32; c++) memcpy(g + 256 + 64 * c + 4 * lane, row[b].qs + 4 * c, 4);
            }
        }
}

static void pack_q6_k(const el_tensor *W, int64_t rows, void *dst) {
    int k = (int)W->ne[0], nb = k / EL_QK_K;
    size_t ldw = el_tensor_row_size(W), bb = el_pack_block_bytes(EL_DTYPE_Q6_K);
    static const int sc_order[4] = {0, 2, 1, 3};
    for (int64_t p = 0; p < rows / 32; p++)
        for (int r = 0; r < 32; r++) {
            const el_block_q6_k *row = (const el_block_q6_k *)((const char *)W->data + (size_t)(32 * p + r) * ldw);
            int lane = r % 16;
            for (int b = 0; b < nb; b++) {
                uint8_t *blk = (uint8_t *)dst + (size_t)p * el_pack_pair_bytes(EL_DTYPE_Q6_K, k) + (size_t)b * bb;
                uint8_t *g = blk + (size_t)(r / 16) * EL_PACK_Q6_K_GROUP;
                memcpy(blk + 2 * EL_PACK_Q6_K_GROUP + 32 * (r / 16) + 2 * lane, &row[b].d, 2);
                for (int i = 0; i < 4; i++)
                    for (int e = 0; e < 4; e++) g[64 * i + 4 * lane + e] = (uint8_t)row[b].scales[4 * i + sc_order[e]];
                uint8_t q[EL_QK_K];  // the file's bit layout, as el_vec_dot_q6_k reads it
                for (int h = 0; h < 2; h++) {
                    const uint8_t *ql = row[b].ql + 64 * h, *qh = row[b].qh + 32 * h;
                    for (int l = 0; l < 32; l++) {
                        q[128 * h + l] = (uint8_t)((ql[l] & 15) | (qh[l] & 3) << 4);
                        q[128 * h + l + 32] = (uint8_t)((ql[l + 32] & 15) | (qh[l] >> 2 & 3) << 4);
                        q[128 * h + l + 64] = (uint8_t)((ql[l] >> 4) | (qh[l] >> 4 & 3) << 4);
                        q[128 * h + l + 96] = (uint8_t)((ql[l + 32] >> 4) | (qh[l] >> 6 & 3) << 4);
                    }
                }
                for (int j = 0; j < 16; j++)
                    for (int c = 0; c < 3; c++)
                        for (int e = 0; e < 4; e++)
                            g[256 + 192 * j + 64 * c + 4 * lane + e] =
                                (uint8_t)(q[16 * j + 4 * c + e] | (q[16 * j + 12 + e] >> (2 * c) & 3) << 6);
            }
        }
}

#if defined(__aarch64__)
static void pack_pairs_arm(const el_tensor *W, int64_t rows, void *dst) {
    int k = (int)W->ne[0], nb = k / EL_QK, q8 = W->dtype == EL_DTYPE_Q8_0;
    size_t ldw = el_tensor_row_size(W), bb = el_pack_block_bytes(W->dtype), pbytes = el_pack_pair_bytes(W->dtype, k);
    int qbytes = q8 ? EL_QK : EL_QK / 2, pb = 2 * qbytes;  // quant bytes of a row's block, of a pair's
    for (int64_t u = 0; u < rows / 32; u++)
        for (int r = 0; r < 32; r++) {
            const char *row = (const char *)W->data + (size_t)(32 * u + r) * ldw;
            for (int b = 0; b < nb; b++) {
                uint8_t *blk = (uint8_t *)dst + (size_t)u * pbytes + (size_t)b * bb;
                const uint8_t *src;
                uint16_t scale;
                if (q8) {
                    const el_block_q8_0 *q = (const el_block_q8_0 *)row + b;
                    src = (const uint8_t *)q->qs, scale = q->d;
                } else {
                    const el_block_q4_0 *q = (const el_block_q4_0 *)row + b;
                    src = q->qs, scale = q->d;
                }
                memcpy(blk + 16 * (size_t)pb + 2 * r, &scale, 2);
                for (int c = 0; c < qbytes / 8; c++) memcpy(blk + (size_t)(r / 2) * pb + 16 * c + 8 * (r % 2), src + 8 * c, 8);
            }
        }
}
#endif

size_t el_matmul_pack_size(const el_tensor *W, el_isa isa, int64_t *rows) {
    *rows = 0;
    if (W->n_dims != 2 || W->ne[0] % pack_block_elems(W->dtype) || !el_gemm_packed_kernel(W->dtype, isa)) return 0;
    *rows = W->ne[1] & ~(int64_t)31;
    return (size_t)(*rows / 32) * el_pack_pair_bytes(W->dtype, (int)W->ne[0]);
}

void el_matmul_pack(const el_tensor *W, int64_t rows, void *dst) {
    if (W->dtype == EL_DTYPE_Q4_K) {
        pack_q4_k(W, rows, dst);
        return;
    }
    if (W->dtype == EL_DTYPE_Q6_K) {
        pack_q6_k(W, rows, dst);
        return;
    }
#if defined(__aarch64__)
    pack_pairs_arm(W, rows, dst);
    return;
#endif
    int k = (int)W->ne[0], nb = k / EL_QK;
    size_t ldw = el_tensor_row_size(W), bb = el_pack_block_bytes(W->dtype), pbytes = el_pack_pair_bytes(W->dtype, k);
    int q8 = W->dtype == EL_DTYPE_Q8_0, chunks = q8 ? 8 : 4;
    size_t cb = (size_t)chunks * 64;  // quant bytes of one group's block
    for (int64_t p = 0; p < rows / 32; p++) {
        for (int r = 0; r < 32; r++) {
            int h = r / 16, lane = r % 16;  // group of the pair, row within it
            const char *row = (const char *)W->data + (size_t)(32 * p + r) * ldw;
            for (int b = 0; b < nb; b++) {
                uint8_t *blk_dst = (uint8_t *)dst + (size_t)p * pbytes + (size_t)b * bb;
                const uint8_t *src;
                uint16_t scale;
                if (q8) {
                    const el_block_q8_0 *blk = (const el_block_q8_0 *)row + b;
                    src = (const uint8_t *)blk->qs;
                    scale = blk->d;
                } else {
                    const el_block_q4_0 *blk = (const el_block_q4_0 *)row + b;
                    src = blk->qs;
                    scale = blk->d;
                }
                uint8_t *pair_dst = (uint8_t *)dst + (size_t)p * pbytes;
                uint8_t *sc_dst = q8 ? blk_dst + 2 * cb + 32 * h : pair_dst + el_pack_q4_0_off(nb, b, h, 1);
                uint8_t *q_dst = q8 ? blk_dst + h * cb : pair_dst + el_pack_q4_0_off(nb, b, h, 0);
                memcpy(sc_dst + 2 * lane, &scale, 2);
                for (int j = 0; j < chunks; j++)
                    for (int i = 0; i < 4; i++) q_dst[(size_t)j * 64 + 4 * lane + i] = (uint8_t)(src[4 * j + i] ^ (q8 ? 0x80 : 0));
            }
        }
    }
}
