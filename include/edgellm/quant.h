// Block quantization in the GGUF ecosystem's layouts (Q8_0, Q4_0, Q4_K, Q6_K)
// and the per-file policy `edgellm quantize` applies. The block structs are
// byte-for-byte the on-disk layout (little-endian hosts); docs/formats.md has
// the bit diagrams.
#ifndef EDGELLM_QUANT_H
#define EDGELLM_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "edgellm/core.h"
#include "edgellm/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EL_QK 32     // elements per Q8_0 / Q4_0 block
#define EL_QK_K 256  // elements per K-quant super-block

// value[i] = d * qs[i]
typedef struct {
    uint16_t d;  // f16
    int8_t qs[EL_QK];
} el_block_q8_0;

// value[i] = d * (q[i] - 8); byte j holds q[j] (low nibble) and q[j+16] (high nibble)
typedef struct {
    uint16_t d;  // f16
    uint8_t qs[EL_QK / 2];
} el_block_q4_0;

// 8 sub-blocks of 32: value = d * sc[j] * q - dmin * m[j], q in 0..15,
// sc/m 6-bit, packed in `scales` (see el_q4_k_scale_min). qs byte 32*p + l
// holds element 64p + l (low nibble) and 64p + 32 + l (high nibble).
typedef struct {
    uint16_t d;     // f16, scale of the sub-block scales
    uint16_t dmin;  // f16, scale of the sub-block mins
    uint8_t scales[12];
    uint8_t qs[EL_QK_K / 2];
} el_block_q4_k;

// 16 sub-blocks of 16: value = d * scales[e / 16] * (q - 32), q 6-bit:
// low 4 bits in ql, high 2 bits in qh (layout in docs/formats.md).
typedef struct {
    uint8_t ql[EL_QK_K / 2];
    uint8_t qh[EL_QK_K / 4];
    int8_t scales[EL_QK_K / 16];
    uint16_t d;  // f16
} el_block_q6_k;

// The activation side of K-quant dot products (never stored in files by us):
// value = d * qs[i]; bsums[g] = sum of qs[16g .. 16g+15].
typedef struct {
    float d;
    int8_t qs[EL_QK_K];
    int16_t bsums[EL_QK_K / 16];
} el_block_q8_k;

// Row codecs, n a multiple of the type's block size. The quantizers are the
// reference ones: Q8_0/Q4_0 round to nearest with the ecosystem's scale
// choice; Q4_K/Q6_K search sub-block scales (and mins) for the least squared
// error, then quantize those scales with 6/8 bits.
void el_quantize_row_q8_0(const float *x, void *y, int64_t n);
void el_dequantize_row_q8_0(const void *x, float *y, int64_t n);
void el_quantize_row_q4_0(const float *x, void *y, int64_t n);
void el_dequantize_row_q4_0(const void *x, float *y, int64_t n);
void el_quantize_row_q4_k(const float *x, void *y, int64_t n);
void el_dequantize_row_q4_k(const void *x, float *y, int64_t n);
void el_quantize_row_q6_k(const float *x, void *y, int64_t n);
void el_dequantize_row_q6_k(const void *x, float *y, int64_t n);
void el_quantize_row_q8_k(const float *x, void *y, int64_t n);
void el_dequantize_row_q8_k(const void *x, float *y, int64_t n);

// Sub-block j (0..7) scale and min of a Q4_K super-block's packed scales.
void el_q4_k_scale_min(const uint8_t scales[12], int j, int *sc, int *m);

// Checks the block scales of a quantized tensor's data (nbytes long) for NaN
// or infinity. Returns the index of the first bad block, or -1 if all are
// finite (and for dtypes without block scales). Reads only the scale bytes.
int64_t el_quant_find_bad_block(int dtype, const void *data, size_t nbytes);

// ---------------------------------------------------------------- file policy

// A requested output type: a plain dtype, or a mixed preset (Q4_K_M).
typedef enum { EL_QTYPE_PLAIN = 0, EL_QTYPE_Q4_K_M = 1 } el_qpreset;

typedef struct {
    el_qpreset preset;
    int dtype;  // the base type (for Q4_K_M: Q4_K)
} el_qtarget;

// Parses "f16", "bf16", "q8_0", "q4_0", "q4_k", "q6_k", "q4_k_m" (any case).
// Returns 0 on success.
int el_qtarget_parse(const char *name, el_qtarget *out);
// GGUF general.file_type number for the target (LLAMA_FTYPE_* numbering).
uint32_t el_qtarget_file_type(const el_qtarget *t);

// The dtype a tensor gets. `wanted` receives the type the policy asked for
// before any fallback (for messages). Norms and 1-D tensors stay f32; tensors
// of more than two dimensions and position embeddings (projector files) keep
// their dtype; a tensor whose rows are not a multiple of the wanted block size
// falls back to the nearest type that fits (q4_k/q6_k -> q8_0/q4_0 by bits ->
// f16), with *why set to a static explanation (NULL when no fallback happened).
int el_quant_choose(const el_qtarget *t, const char *name, int n_dims, const int64_t *ne, int src_dtype,
                    int *wanted, const char **why);

#ifdef __cplusplus
}
#endif
#endif
