// Helpers shared by the GGUF reader (gguf.c) and writer (gguf_write.c).
#ifndef EL_FORMAT_GGUF_INTERNAL_H
#define EL_FORMAT_GGUF_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "edgellm/gguf.h"

#define EL_GGUF_MAGIC 0x46554747u  // "GGUF" read as a little-endian u32
#define EL_GGUF_DEFAULT_ALIGNMENT 32
#define EL_GGUF_ALIGNMENT_KEY "general.alignment"
#define EL_GGUF_MAX_NAME (64u * 1024)  // tensor names
#define EL_GGUF_MAX_NESTING 8          // arrays of arrays of ...

// Bytes of one element of a fixed-size value type; 0 for strings, arrays and unknown types.
size_t el_gguf_scalar_size(uint32_t type);

// The serialized bytes of an array value of a kv from g (element type, count
// and elements, exactly as in the file): sets *start and returns the length,
// or 0 if kv is not an array of g.
size_t el_gguf_array_span(const el_gguf *g, const el_gguf_kv *kv, const uint8_t **start);

#endif
