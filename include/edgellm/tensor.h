// Tensor views and the dtype trait table. Dtype ids are GGUF's (ggml_type)
// numbers, so they can be written to and read from files unchanged.
#ifndef EDGELLM_TENSOR_H
#define EDGELLM_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "edgellm/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    EL_DTYPE_F32 = 0,
    EL_DTYPE_F16 = 1,
    EL_DTYPE_Q4_0 = 2,
    EL_DTYPE_Q4_1 = 3,
    EL_DTYPE_Q5_0 = 6,
    EL_DTYPE_Q5_1 = 7,
    EL_DTYPE_Q8_0 = 8,
    EL_DTYPE_Q8_1 = 9,
    EL_DTYPE_Q2_K = 10,
    EL_DTYPE_Q3_K = 11,
    EL_DTYPE_Q4_K = 12,
    EL_DTYPE_Q5_K = 13,
    EL_DTYPE_Q6_K = 14,
    EL_DTYPE_Q8_K = 15,
    EL_DTYPE_I8 = 24,
    EL_DTYPE_I16 = 25,
    EL_DTYPE_I32 = 26,
    EL_DTYPE_I64 = 27,
    EL_DTYPE_F64 = 28,
    EL_DTYPE_BF16 = 30,
    EL_DTYPE_COUNT = 40,  // ids below this may appear in files; unknown ones are rejected
} el_dtype;

// Convert n elements (n a multiple of block_size) starting at a block boundary to f32.
typedef void (*el_to_f32_fn)(const void *src, float *dst, int64_t n);
// Quantize n f32 elements (n a multiple of block_size) into blocks.
typedef void (*el_from_f32_fn)(const float *src, void *dst, int64_t n);
// Scalar reference dot product of n weights w (this dtype) with n activations
// x in the layout of vec_dot_type (see src/kernels/qdot.h).
typedef float (*el_vec_dot_fn)(int n, const void *w, const void *x);

typedef struct {
    const char *name;     // "f32", "q8_0" ...
    int block_size;       // elements per block (1 for plain types)
    size_t type_size;     // bytes per block
    el_to_f32_fn to_f32;  // NULL: cannot be read as floats (yet)
    el_from_f32_fn from_f32;
    // How matmul multiplies weights of this type: activations are converted
    // once to vec_dot_type (F32: used as they are; Q8_0: 8-bit blocks of 32;
    // Q8_K: 8-bit blocks of 256) and vec_dot is the scalar reference product.
    // vec_dot NULL: matmul dequantizes rows to f32 (the slow path).
    int vec_dot_type;
    el_vec_dot_fn vec_dot;
} el_dtype_traits;

// NULL for ids that are not known dtypes.
const el_dtype_traits *el_dtype_info(int dtype);
const char *el_dtype_name(int dtype);
// -1 if the name is unknown.
int el_dtype_from_name(const char *name);
// GGUF's name of a tensor type id ("Q5_K", "IQ4_NL" ...), also for types
// edgellm cannot compute with; NULL for ids GGUF does not define.
const char *el_dtype_gguf_name(int dtype);
// "f32, f16, bf16, q8_0, q4_0, q4_k, q6_k": the types models may hold.
size_t el_dtype_supported_list(char *buf, size_t n);
// Bytes of one row of n elements; 0 with *ok=0 if n is not a multiple of the block size.
size_t el_dtype_row_size(int dtype, int64_t n);

// IEEE half and bfloat16 conversions (round to nearest even).
float el_f16_to_f32(uint16_t h);
uint16_t el_f32_to_f16(float f);
float el_bf16_to_f32(uint16_t h);
uint16_t el_f32_to_bf16(float f);

#define EL_MAX_DIMS 4

// A view of tensor data owned elsewhere (a mapped file, an arena).
// ne[0] is the fastest-varying dimension (GGUF order): a weight matrix with
// `out` rows of `in` elements has ne = {in, out}.
typedef struct {
    const char *name;
    int dtype;
    int n_dims;
    int64_t ne[EL_MAX_DIMS];
    void *data;
    size_t nbytes;
    // A copy of rows [0, packed_rows) in a kernel-specific row-interleaved
    // layout (el_matmul_pack), owned by whoever made it; NULL: none.
    const void *packed;
    int64_t packed_rows;
    // 0, or the copy is in stripes for this many decode threads: the pairs of
    // stripe s from stripe[s] (el_stripe_first, kernels.h).
    int packed_stripes;
    const char *const *stripe;
} el_tensor;

int64_t el_tensor_nelements(const el_tensor *t);
// Bytes one row (ne[0] elements) takes.
size_t el_tensor_row_size(const el_tensor *t);
// Converts row r of a 2-D tensor to f32 (dst has ne[0] floats).
void el_tensor_row_f32(const el_tensor *t, int64_t r, float *dst);

#ifdef __cplusplus
}
#endif
#endif
