// Internal to src/kernels: the SIMD tile kernels of qdot_avx2.c,
// qdot_avx512.c and the AArch64 files, looked up by weight dtype (NULL if that file has none), and
// the packed (row-interleaved) layout of pack.c.
#ifndef EL_KERNELS_QDOT_H
#define EL_KERNELS_QDOT_H

#include "edgellm/kernels.h"

el_gemm_fn el_gemm_avx2(int dtype);

// Q8_0 activation rows (el_act_row_size layout: quants, f32 scales, negated
// sums); the AVX-512 one writes exactly the scalar one's bytes.
void el_act_quantize_q8_0_scalar(const float *x, void *dst, int k);
void el_act_quantize_q8_0_avx512(const float *x, void *dst, int k);
el_gemm_fn el_gemm_avx512(int dtype);

// Kernels on packed weights: w is the first pair of 16-row groups, ldw the
// bytes per pair (el_pack_pair_bytes), nr a multiple of 32.
el_gemm_fn el_gemm_packed_avx512(int dtype);
// Its two forms of the Q8_0 and Q4_0 kernels, amd 0 or 1 (qdot_avx512.c says
// which CPU takes which; the tests run both).
el_gemm_fn el_gemm_packed_form_avx512(int dtype, int amd);
// Q8_0 activations of several tokens as the AVX-512 packed Q8_0 and Q4_0
// kernels read them over 2 tokens or more (a panel). The nt tokens of one
// kernel call are split into groups, its passes (el_panel_group); a group of
// c tokens from token s takes the bytes [s, s + c) x nb x EL_PANEL_REC of the
// panel and holds, block by block, its c tokens' records of EL_PANEL_REC
// bytes: the block's 32 quants, its f32 scale, and the seeds of the
// kernels' integer sums nsum << 3 (Q4_0) and nsum << 7 (Q8_0).
#define EL_PANEL_REC 44
#define EL_PANEL_SCALE 32
#define EL_PANEL_SEED3 36
#define EL_PANEL_SEED7 40
// The group of token t among nt: its size, and its first token in *start.
// Groups of 8, the last two as even as they go (9 tokens: 5 + 4): f groups
// of 8 leave 9..16 tokens (nt > 16), or all nt are the last one or two.
static inline int el_panel_group(int nt, int t, int *start) {
    const int f = nt > 16 ? (nt - 9) / 8 : 0, left = nt - 8 * f, c1 = left <= 8 ? left : (left + 1) / 2;
    if (t < 8 * f) {
        *start = t & ~7;
        return 8;
    }
    *start = t < 8 * f + c1 ? 8 * f : 8 * f + c1;
    return t < 8 * f + c1 ? c1 : left - c1;
}
// Bytes of the panel of n tokens at k columns.
size_t el_act_panel_bytes(int k, int n);
// Writes token t's records, of a call over nt tokens, from its Q8_0
// activation row (el_act_row_size layout) into that call's panel.
void el_act_panel(const void *row, int k, int nt, int t, void *panel);
// A packed kernel that reads a panel: x and ldx the activation rows (what
// decode and some short products read), panel the same nt tokens' panel.
typedef void (*el_gemm_panel_fn)(int k, const void *w, size_t ldw, int nr, const void *x, size_t ldx,
                                 const void *panel, int nt, float *out, size_t ldo);
el_gemm_panel_fn el_gemm_packed_panel_avx512(int dtype);
el_gemm_panel_fn el_gemm_packed_panel_form_avx512(int dtype, int amd);
// The panel kernel el_gemm_packed_kernel(dtype, isa) stands for, or NULL if that one reads rows only.
el_gemm_panel_fn el_gemm_packed_panel_kernel(int dtype, el_isa isa);
// The same pair layout for Q8_0/Q4_0 read with AVX2 (qdot_avx2.c).
el_gemm_fn el_gemm_packed_avx2(int dtype);
// The K-quant ones (qdot_k_avx512.c): Q4_K and Q6_K, and the Q8_K activation rows
// they read (el_quantize_row_q8_k's bytes).
void el_act_quantize_q8_k_avx512(const float *x, void *dst, int k);
el_gemm_fn el_gemm_packed_k_avx512(int dtype);
// Its two forms (qdot_k_avx512.c: the float step on Intel, amd 0; the
// integer one on AMD, amd 1; the tests run both).
el_gemm_fn el_gemm_packed_k_form_avx512(int dtype, int amd);
// The AMD forms' decode as el_gemm_runs_fn (whatever the CPU: the tests run
// them): Q8_0, Q4_0 (qdot_avx512.c); Q4_K, Q6_K (qdot_k_avx512.c).
el_gemm_runs_fn el_gemm_runs_q_avx512(int dtype);
el_gemm_runs_fn el_gemm_runs_k_avx512(int dtype);
#define EL_PACK_Q4_K_GROUP 2304  // bytes of one 16-row group's Q4_K super-block
#define EL_PACK_Q6_K_GROUP 3328  // the same for Q6_K, without its 16 d (pack.c)
// AArch64 (qdot_neon.c, qdot_dotprod.c, qdot_i8mm.c): the tile kernels of
// each level (the i8mm table hands out the dotprod kernels where it has no
// smmla one; the f16/bf16 ones are the Advanced SIMD level's), and the
// activation quantizers of every AArch64 level, which write the scalar
// ones' bytes.
el_gemm_fn el_gemm_neon(int dtype);
el_gemm_fn el_gemm_dotprod(int dtype);
el_gemm_fn el_gemm_i8mm(int dtype);
// Their kernels on pack.c's AArch64 layout (Q8_0, Q4_0; else NULL): the
// dotprod and i8mm levels only.
el_gemm_fn el_gemm_packed_dotprod(int dtype);
el_gemm_fn el_gemm_packed_i8mm(int dtype);
void el_act_quantize_q8_0_neon(const float *x, void *dst, int k);
void el_act_quantize_q8_k_neon(const float *x, void *dst, int k);
// Bytes of a packed pair per block (32 columns; Q4_K, Q6_K: a 256-column super-block).
size_t el_pack_block_bytes(int dtype);
size_t el_pack_pair_bytes(int dtype, int k);

// Q4_0 pairs on x86 (pack.c) hold their blocks in units of up to
// EL_PACK_Q4_0_UNIT (256 columns): per unit, group 0's part, then group 1's,
// each [its m blocks' 16 f16 scales, 32 bytes a block][their 4 chunks, 256
// bytes a block]. Offset in the pair of group g's scales (or chunks) of block
// b, of nb blocks in all.
#define EL_PACK_Q4_0_UNIT 8
#define EL_PACK_Q4_0_GROUP 2304  // bytes of one group's part of a whole unit
_Static_assert(EL_PACK_Q4_0_GROUP == EL_PACK_Q4_0_UNIT * 288, "a part: 32 bytes of scales and 256 of chunks a block");
_Static_assert((EL_PACK_Q4_0_UNIT & (EL_PACK_Q4_0_UNIT - 1)) == 0, "el_pack_q4_0_off masks by the unit");
static inline size_t el_pack_q4_0_off(int nb, int b, int g, int scales) {
    int u0 = b & ~(EL_PACK_Q4_0_UNIT - 1), i = b - u0;
    int m = nb - u0 < EL_PACK_Q4_0_UNIT ? nb - u0 : EL_PACK_Q4_0_UNIT;  // blocks in b's unit
    size_t base = (size_t)u0 * 576 + (size_t)g * (size_t)m * 288;
    return scales ? base + 32 * (size_t)i : base + 32 * (size_t)m + 256 * (size_t)i;
}

#endif
