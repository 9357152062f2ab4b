// GGUF v2/v3 files: a reader that maps the file and validates every length and
// offset before use, and a writer that streams to a temporary name and renames.
#ifndef EDGELLM_GGUF_H
#define EDGELLM_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "edgellm/core.h"
#include "edgellm/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

// Metadata value types, numbered as in the GGUF specification.
typedef enum {
    EL_GGUF_UINT8 = 0,
    EL_GGUF_INT8 = 1,
    EL_GGUF_UINT16 = 2,
    EL_GGUF_INT16 = 3,
    EL_GGUF_UINT32 = 4,
    EL_GGUF_INT32 = 5,
    EL_GGUF_FLOAT32 = 6,
    EL_GGUF_BOOL = 7,
    EL_GGUF_STRING = 8,
    EL_GGUF_ARRAY = 9,
    EL_GGUF_UINT64 = 10,
    EL_GGUF_INT64 = 11,
    EL_GGUF_FLOAT64 = 12,
} el_gguf_type;

// A string inside the mapped file: not NUL-terminated.
typedef struct {
    const char *ptr;
    uint64_t len;
} el_gguf_str;

typedef struct {
    char *key;  // NUL-terminated copy
    el_gguf_type type;
    union {
        uint64_t u64;  // all unsigned integer types and bool, widened
        int64_t i64;   // all signed integer types, widened
        double f64;    // float32 and float64, widened
        el_gguf_str str;
    } v;
    // For arrays: element type, count, and a pointer to the first element in the
    // mapped file. String arrays also get an index of their elements (strs).
    el_gguf_type arr_type;
    uint64_t arr_n;
    const void *arr_data;
    el_gguf_str *strs;
} el_gguf_kv;

typedef struct {
    char *name;  // NUL-terminated copy
    int n_dims;
    int64_t ne[EL_MAX_DIMS];
    int dtype;        // el_dtype
    uint64_t offset;  // relative to the start of the data section
    size_t nbytes;
    void *data;  // inside the mapping
} el_gguf_tensor;

typedef struct {
    char *path;
    uint32_t version;
    void *map;
    size_t map_size;
    size_t alignment;
    size_t data_offset;  // absolute offset of the data section
    uint64_t n_kv;
    el_gguf_kv *kv;
    uint64_t n_tensors;
    el_gguf_tensor *tensors;
} el_gguf;

// Limits applied while parsing, so a hostile file cannot make us allocate wildly.
#define EL_GGUF_MAX_KV 65536
#define EL_GGUF_MAX_TENSORS 1048576
#define EL_GGUF_MAX_STRING (1u << 24)
#define EL_GGUF_MAX_DIM ((int64_t)1 << 40)

// Maps and parses path. On error *out is NULL and err names the file and problem.
el_status el_gguf_open(const char *path, el_gguf **out, el_error *err);
// Parses a buffer that stays owned by the caller (used by the fuzzer and tests).
el_status el_gguf_open_memory(const void *data, size_t size, const char *name, el_gguf **out, el_error *err);
// A GGUF assembled from separate mappings (the block store, store.h):
// header[0, header_size) holds the file's bytes up to its data section, and
// parts[i] holds exactly tensor i's data (part_sizes[i] must equal its size).
// Takes ownership of every mapping (munmap by el_gguf_close, also on failure).
el_status el_gguf_open_parts(void *header, size_t header_size, void *const *parts, const size_t *part_sizes,
                             uint64_t n_parts, const char *name, el_gguf **out, el_error *err);
void el_gguf_close(el_gguf *g);

const el_gguf_kv *el_gguf_find(const el_gguf *g, const char *key);
const el_gguf_tensor *el_gguf_find_tensor(const el_gguf *g, const char *name);

// Typed getters: return 1 and set *out when the key exists with a compatible
// type (any integer type for the integer getters; f32/f64 for floats).
int el_gguf_get_u64(const el_gguf *g, const char *key, uint64_t *out);
int el_gguf_get_i64(const el_gguf *g, const char *key, int64_t *out);
int el_gguf_get_f64(const el_gguf *g, const char *key, double *out);
int el_gguf_get_bool(const el_gguf *g, const char *key, int *out);
// The string value as a NUL-terminated copy in buf (truncated to bufsize-1).
int el_gguf_get_str(const el_gguf *g, const char *key, char *buf, size_t bufsize);
// Reads element i of a numeric array as double. Returns 0 if out of range.
int el_gguf_arr_f64(const el_gguf_kv *kv, uint64_t i, double *out);
int el_gguf_arr_i64(const el_gguf_kv *kv, uint64_t i, int64_t *out);

// Fills an el_tensor view of a GGUF tensor.
void el_gguf_tensor_view(const el_gguf_tensor *t, el_tensor *out);

const char *el_gguf_type_name(el_gguf_type t);

// ---------------------------------------------------------------- writer

typedef struct el_gguf_writer el_gguf_writer;

// Produces the bytes of a tensor when the writer streams it out: fill dst
// (nbytes) for the named tensor. Used for tensors too large to hold in memory.
typedef el_status (*el_gguf_fill_fn)(void *ctx, const char *name, void *dst, size_t nbytes, el_error *err);

el_gguf_writer *el_gguf_writer_new(void);  // version 3, alignment 32
void el_gguf_writer_free(el_gguf_writer *w);
el_status el_gguf_writer_set_alignment(el_gguf_writer *w, size_t alignment, el_error *err);

// Keys are copied; adding an existing key replaces its value.
el_status el_gguf_add_u32(el_gguf_writer *w, const char *key, uint32_t v);
el_status el_gguf_add_i32(el_gguf_writer *w, const char *key, int32_t v);
el_status el_gguf_add_u64(el_gguf_writer *w, const char *key, uint64_t v);
el_status el_gguf_add_f32(el_gguf_writer *w, const char *key, float v);
el_status el_gguf_add_bool(el_gguf_writer *w, const char *key, int v);
el_status el_gguf_add_str(el_gguf_writer *w, const char *key, const char *v);
// Numeric array: data holds n elements of type t (copied).
el_status el_gguf_add_arr(el_gguf_writer *w, const char *key, el_gguf_type t, const void *data, uint64_t n);
// String array: n NUL-terminated strings (copied), or with explicit lengths if lens != NULL.
el_status el_gguf_add_arr_str(el_gguf_writer *w, const char *key, const char *const *strs, const uint64_t *lens,
                              uint64_t n);
// Copies every key/value of g (used when rewriting a file).
el_status el_gguf_add_all_kv(el_gguf_writer *w, const el_gguf *g);

// Tensor with data borrowed until write returns (data may be NULL if fill is given).
el_status el_gguf_add_tensor(el_gguf_writer *w, const char *name, int dtype, int n_dims, const int64_t *ne,
                             const void *data);
// Writes to path + ".tmp", fsyncs and renames over path. fill (may be NULL)
// supplies data for tensors added with data == NULL. progress (may be NULL)
// is updated with bytes written; the caller begins and ends it, and a total
// of 0 is replaced by the file's size.
el_status el_gguf_write(el_gguf_writer *w, const char *path, el_gguf_fill_fn fill, void *fill_ctx,
                        el_progress *progress, el_error *err);

#ifdef __cplusplus
}
#endif
#endif
