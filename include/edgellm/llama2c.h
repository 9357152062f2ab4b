// llama2.c legacy (version 0) checkpoints: 7 int32 header fields, then f32
// arrays. We map the file and describe where each array lies.
#ifndef EDGELLM_LLAMA2C_H
#define EDGELLM_LLAMA2C_H

#include <stddef.h>
#include <stdint.h>

#include "edgellm/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
    int shared_classifier;  // header's vocab_size was positive
    void *map;
    size_t size;
    // Element offsets (in floats from the start of the file) of each array.
    size_t off_embed, off_rms_att, off_wq, off_wk, off_wv, off_wo, off_rms_ffn, off_w1, off_w2, off_w3,
        off_rms_final, off_wcls;
} el_llama2c;

// Maps path and checks that the header is sane and the file size matches it exactly.
el_status el_llama2c_open(const char *path, el_llama2c *out, el_error *err);
// Parses a header from memory (no mapping); used by tests and the fuzzer.
el_status el_llama2c_parse(const void *data, size_t size, const char *name, el_llama2c *out, el_error *err);
void el_llama2c_close(el_llama2c *c);

#ifdef __cplusplus
}
#endif
#endif
