// Row-interleaved copies of Q8_0 / Q4_0 weights for the AVX-512 VNNI kernels,
// made once at load time (the file layout stays the reference and what the
// scalar and AVX2 paths read).
//
// Rows are taken 16 at a time (a "group"). Per block b of 32 columns a group
// holds, for chunk j, 64 bytes: lane r (bytes 4r..4r+3) = row r's bytes 4j..4j+3
// of block b. One vpdpbusd of a chunk against 4 broadcast activation bytes then
// gives 16 rows' partial sums at once, and the float scaling of a block is one
// vector operation for 16 rows.
//   Q8_0: 8 chunks of quants + 128 (unsigned, as vpdpbusd wants them).
//   Q4_0: 4 chunks of the raw nibble bytes: low nibbles of chunk j are elements
//         4j..4j+3 of the block, high nibbles 16+4j..16+4j+3.
// A group is [quant chunks of all blocks][16 f16 scales per block]; groups follow
// each other, group_bytes apart. Same size as the file's rows.
#include <string.h>

#include "edgellm/kernels.h"
#include "edgellm/quant.h"
#include "qdot.h"

size_t el_pack_group_bytes(int dtype, int k) {
    size_t nb = (size_t)k / EL_QK;
    switch (dtype) {
    case EL_DTYPE_Q8_0: return nb * (16 * EL_QK + 32);
    case EL_DTYPE_Q4_0: return nb * (16 * EL_QK / 2 + 32);
    }
    return 0;
}

size_t el_matmul_pack_size(const el_tensor *W, el_isa isa, int64_t *rows) {
    *rows = 0;
    if (W->n_dims != 2 || W->ne[0] % EL_QK || !el_gemm_packed_kernel(W->dtype, isa)) return 0;
    *rows = W->ne[1] & ~(int64_t)15;
    return (size_t)(*rows / 16) * el_pack_group_bytes(W->dtype, (int)W->ne[0]);
}

void el_matmul_pack(const el_tensor *W, int64_t rows, void *dst) {
    int k = (int)W->ne[0], nb = k / EL_QK;
    size_t ldw = el_tensor_row_size(W), gbytes = el_pack_group_bytes(W->dtype, k);
    int q8 = W->dtype == EL_DTYPE_Q8_0, chunks = q8 ? 8 : 4;
    for (int64_t g = 0; g < rows / 16; g++) {
        uint8_t *qs = (uint8_t *)dst + (size_t)g * gbytes;
        uint16_t *d = (uint16_t *)(qs + (size_t)nb * chunks * 64);
        for (int r = 0; r < 16; r++) {
            const char *row = (const char *)W->data + (size_t)(16 * g + r) * ldw;
            for (int b = 0; b < nb; b++) {
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
                d[16 * b + r] = scale;
                for (int j = 0; j < chunks; j++)
                    for (int i = 0; i < 4; i++)
                        qs[((size_t)b * chunks + j) * 64 + 4 * r + i] = (uint8_t)(src[4 * j + i] ^ (q8 ? 0x80 : 0));
            }
        }
    }
}
