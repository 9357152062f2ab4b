// Hugging Face safetensors files, read defensively: an 8-byte little-endian
// header length (capped), a JSON header naming each tensor's dtype, shape and
// byte range in the data section, then the data. Every range is checked to lie
// inside the file, not to overlap another, and to hold exactly shape x dtype
// bytes before any tensor is used. The header goes through el_json.
#ifndef EDGELLM_SAFETENSORS_H
#define EDGELLM_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "edgellm/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EL_ST_MAX_HEADER ((uint64_t)100 << 20)  // bytes of JSON header
#define EL_ST_MAX_DIMS 8
#define EL_ST_MAX_TENSORS 1000000
#define EL_ST_MAX_DIM ((int64_t)1 << 40)

typedef struct {
    char *name;
    int dtype;  // EL_DTYPE_F32, EL_DTYPE_F16 or EL_DTYPE_BF16
    int n_dims;
    int64_t shape[EL_ST_MAX_DIMS];  // safetensors order: outermost first (rows, cols)
    uint64_t begin, end;            // byte range relative to the data section
    const void *data;               // begin inside the file's bytes
} el_st_tensor;

typedef struct {
    char *path;
    void *map;  // NULL when the bytes belong to the caller
    size_t size;
    const unsigned char *bytes;
    size_t data_offset;  // 8 + header length
    int n_tensors;
    el_st_tensor *tensors;  // in header order
} el_safetensors;

// Maps and validates path.
el_status el_safetensors_open(const char *path, el_safetensors **out, el_error *err);
// Validates a buffer the caller keeps alive (fuzzer, tests); name labels errors.
el_status el_safetensors_open_memory(const void *data, size_t size, const char *name, el_safetensors **out,
                                     el_error *err);
void el_safetensors_close(el_safetensors *st);
const el_st_tensor *el_safetensors_find(const el_safetensors *st, const char *name);
// Element count of a tensor (product of its shape; 1 for a scalar).
uint64_t el_st_numel(const el_st_tensor *t);

#ifdef __cplusplus
}
#endif
#endif
