// Hugging Face model folders: config.json and tokenizer.json (+ tokenizer_config.json)
// turned into what a GGUF needs. Parsing only; `edgellm import` writes the file.
// Every field is range-checked; errors name the file and the field.
#ifndef EDGELLM_HF_H
#define EDGELLM_HF_H

#include <stddef.h>
#include <stdint.h>

#include "edgellm/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { EL_HF_LLAMA, EL_HF_MISTRAL, EL_HF_QWEN2 } el_hf_arch;
typedef enum { EL_HF_ROPE_NONE, EL_HF_ROPE_LINEAR, EL_HF_ROPE_LLAMA3 } el_hf_rope;

typedef struct {
    el_hf_arch arch;
    int dim, layers, heads, kv_heads, ff, vocab, ctx;
    double eps, theta;
    int tied;    // tie_word_embeddings
    int window;  // sliding_window (0: none)
    el_hf_rope scaling;
    double factor, low, high;  // rope_scaling factor, low_freq_factor, high_freq_factor
    int orig_ctx;              // rope_scaling original_max_position_embeddings
    int bos, eos;              // bos_token_id / eos_token_id (first of a list), -1 if absent
} el_hf_config;

// Parses config.json text; name labels errors.
el_status el_hf_config_parse(const char *text, size_t len, const char *name, el_hf_config *c, el_error *err);

typedef struct {
    int byte_level;   // 1: GGUF tokenizer model "gpt2"; 0: "llama" (byte fallback)
    const char *pre;  // tokenizer.ggml.pre for byte_level: "gpt-2", "llama-bpe", "qwen2"
    int n;            // tokens, = the n_vocab asked for (gaps padded "[PADi]", type 5)
    char **tokens;
    uint64_t *lens;
    int32_t *types;  // 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
    float *scores;   // -id
    int unk;         // id of "<unk>", -1 if none
    int n_merges;    // byte_level only: "a b"
    char **merges;
    uint64_t *merge_lens;
    int bos, eos;         // -1 if unknown
    int add_bos;          // -1: not given
    char *chat_template;  // NULL if not given
} el_hf_vocab;

// tokenizer.json text (tok, required) and tokenizer_config.json text (tc, may be
// NULL) to a vocabulary of n_vocab tokens (config.json's vocab_size); cfg_bos and
// cfg_eos (-1: none) are used when tokenizer_config.json names no bos/eos.
// An unknown pre-tokenizer regex is an error.
el_status el_hf_tokenizer_parse(const char *tok, size_t tok_len, const char *tok_name, const char *tc, size_t tc_len,
                                const char *tc_name, int n_vocab, int cfg_bos, int cfg_eos, el_hf_vocab *v,
                                el_error *err);
void el_hf_vocab_free(el_hf_vocab *v);

#ifdef __cplusplus
}
#endif
#endif
