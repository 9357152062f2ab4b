// Tokenizers behind one interface: SentencePiece-style BPE (llama vocabularies
// from GGUF `tokenizer.ggml.model = llama` and llama2.c tokenizer files, with
// byte fallback) and byte-level BPE (GGUF `tokenizer.ggml.model = gpt2`: GPT-2,
// Llama 3, Qwen2, SmolLM), whose pre-tokenizer is named by tokenizer.ggml.pre.
#ifndef EDGELLM_TOKENIZE_H
#define EDGELLM_TOKENIZE_H

#include <stddef.h>
#include <stdint.h>

#include "edgellm/core.h"
#include "edgellm/gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

// Token types, numbered as GGUF's tokenizer.ggml.token_type.
typedef enum {
    EL_TOKEN_NORMAL = 1,
    EL_TOKEN_UNKNOWN = 2,
    EL_TOKEN_CONTROL = 3,
    EL_TOKEN_USER_DEFINED = 4,
    EL_TOKEN_UNUSED = 5,
    EL_TOKEN_BYTE = 6,
} el_token_type;

typedef enum { EL_TOKENIZER_SPM = 1, EL_TOKENIZER_BPE = 2 } el_tokenizer_kind;

// Pre-tokenizers of byte-level BPE: how text is cut into words before merging
// (see src/tokenize/pretok.c for the exact regular expressions).
typedef enum {
    EL_PRETOK_NONE = 0,
    EL_PRETOK_GPT2 = 1,    // tokenizer.ggml.pre "gpt-2", "default", "gpt2"
    EL_PRETOK_LLAMA3 = 2,  // "llama-bpe", "llama3"
    EL_PRETOK_QWEN2 = 3,   // "qwen2"
    EL_PRETOK_SMOLLM = 4,  // "smollm": digits one by one, GPT-2 between them
} el_pretok;

// The pre-tokenizer a tokenizer.ggml.pre name stands for; EL_PRETOK_NONE if
// the name is unknown.
el_pretok el_pretok_from_name(const char *name, size_t len);
const char *el_pretok_name(el_pretok pre);
// Splits text[0..len) (valid UTF-8, else EL_ERR_ARG) into pre-tokens: *ends
// (free with free()) receives the end offset of each of the *n pieces.
el_status el_pretok_split(el_pretok pre, const char *text, size_t len, size_t **ends, size_t *n, el_error *err);

typedef struct el_tokenizer el_tokenizer;

// Builds a SentencePiece tokenizer from pieces in GGUF form (spaces as U+2581
// "▁", byte tokens as "<0xAB>"). pieces[i] has lens[i] bytes; scores and types
// may be NULL (all 0 / all normal). bos/eos/unk may be -1.
el_status el_tokenizer_new_spm(int n_vocab, const char *const *pieces, const size_t *lens, const float *scores,
                               const int *types, int bos, int eos, int unk, el_tokenizer **out, el_error *err);

// Builds a byte-level BPE tokenizer. Pieces are in GPT-2's byte-to-unicode
// form ("Ġ" for a space). merges[i] is "LEFT RIGHT" (merge_lens[i] bytes),
// ranked by position (first = applied first); LEFT, RIGHT and LEFTRIGHT must
// all be pieces. types may be NULL (all normal); bos/eos/unk may be -1.
el_status el_tokenizer_new_bpe(int n_vocab, const char *const *pieces, const size_t *lens, const int *types,
                               int n_merges, const char *const *merges, const size_t *merge_lens, el_pretok pre,
                               int bos, int eos, int unk, el_tokenizer **out, el_error *err);

// Loads a llama2.c tokenizer file (int32 max_token_length, then per token f32
// score, int32 len, bytes). Spaces in its pieces become "▁". n_vocab must be
// given (the file does not store it): the model's vocab size; 0 means "as
// many as the file holds" (the file must end at a token boundary).
el_status el_tokenizer_load_llama2c(const char *path, int n_vocab, el_tokenizer **out, el_error *err);
// The same from a buffer the caller keeps owning (the fuzzer, tests); name is
// used in error messages (may be NULL).
el_status el_tokenizer_load_llama2c_memory(const void *data, size_t size, const char *name, int n_vocab,
                                           el_tokenizer **out, el_error *err);

// From GGUF tokenizer.ggml.* metadata. Fails (naming the file) if the model
// kind is not supported or arrays are missing or inconsistent.
el_status el_tokenizer_from_gguf(const el_gguf *g, el_tokenizer **out, el_error *err);

void el_tokenizer_free(el_tokenizer *t);

el_tokenizer_kind el_tokenizer_kind_of(const el_tokenizer *t);
int el_tokenizer_n_vocab(const el_tokenizer *t);
int el_tokenizer_bos(const el_tokenizer *t);
int el_tokenizer_eos(const el_tokenizer *t);
int el_tokenizer_unk(const el_tokenizer *t);
// Piece text in GGUF form (not NUL-terminated); *len receives its length.
const char *el_tokenizer_piece(const el_tokenizer *t, int id, size_t *len);
float el_tokenizer_score(const el_tokenizer *t, int id);
int el_tokenizer_type(const el_tokenizer *t, int id);
// The longest piece in bytes; no decoded piece is longer.
size_t el_tokenizer_max_piece_len(const el_tokenizer *t);
// The lowest id whose piece (GGUF form) is piece[0..len), of any type, or -1.
int el_tokenizer_find(const el_tokenizer *t, const char *piece, size_t len);
// Whether encode adds the dummy-prefix space (default on; GGUF files can turn
// it off with tokenizer.ggml.add_space_prefix).
void el_tokenizer_set_add_space_prefix(el_tokenizer *t, int on);
// Whether the model wants BOS (EOS) added to a prompt: tokenizer.ggml.
// add_bos_token / add_eos_token, else 1 (0) for SentencePiece and Llama 3's
// byte-level BPE and 0 (0) for other byte-level BPE. The setters override it.
int el_tokenizer_add_bos(const el_tokenizer *t);
int el_tokenizer_add_eos(const el_tokenizer *t);
void el_tokenizer_set_add_bos(el_tokenizer *t, int on);
void el_tokenizer_set_add_eos(el_tokenizer *t, int on);
// The pre-tokenizer of a BPE tokenizer (EL_PRETOK_NONE for SentencePiece).
el_pretok el_tokenizer_pretok(const el_tokenizer *t);

// Encodes text[0..len) (must be valid UTF-8). A SentencePiece tokenizer adds
// the dummy-prefix space when the text is non-empty. *ids is allocated
// (free with free()); *n_ids receives the count. add_bos prepends BOS.
el_status el_tokenizer_encode(const el_tokenizer *t, const char *text, size_t len, int add_bos, int **ids,
                              int *n_ids, el_error *err);

enum {
    EL_ENCODE_ADD_BOS = 1,  // prepend BOS (an error if the vocabulary has none)
    EL_ENCODE_ADD_EOS = 2,  // append EOS (likewise)
    // Control pieces written in the text ("<s>", "<|im_start|>") become their
    // tokens. User-defined pieces always do (as in Hugging Face tokenizers and
    // llama.cpp). At each position the longest such piece wins, and the text
    // between them is encoded on its own (a SentencePiece vocabulary gives
    // each such run its dummy-prefix space).
    EL_ENCODE_SPECIAL = 4,
};
// el_tokenizer_encode with EL_ENCODE_* flags; el_tokenizer_encode(.., add_bos,
// ..) is this with flags = add_bos ? EL_ENCODE_ADD_BOS : 0.
el_status el_tokenizer_encode_ex(const el_tokenizer *t, const char *text, size_t len, unsigned flags, int **ids,
                                 int *n_ids, el_error *err);
// A byte range [begin, end) of a text.
typedef struct {
    size_t begin, end;
} el_text_span;
// el_tokenizer_encode_ex where, with EL_ENCODE_SPECIAL, no control piece is
// recognised that overlaps one of plain[0..n_plain) (sorted, not overlapping):
// text that came from a user (chat contents) stays text, while the
// template's markers around it become control tokens. Text without markers
// is encoded exactly as by el_tokenizer_encode_ex.
el_status el_tokenizer_encode_spans(const el_tokenizer *t, const char *text, size_t len, unsigned flags,
                                    const el_text_span *plain, int n_plain, int **ids, int *n_ids, el_error *err);

// The bytes token id stands for when printed after prev (as llama2.c prints:
// "▁" becomes a space, byte tokens become their byte, the leading space of the
// first piece after BOS is dropped, control tokens print nothing). For byte-
// level BPE each character of the piece becomes the byte it stands for; a
// token may end inside a UTF-8 sequence, so callers concatenate raw bytes.
// User-defined pieces print as they are. Writes at
// most cap bytes to buf and returns the number written; a piece longer than
// cap is cut short, which a buffer of el_tokenizer_max_piece_len bytes avoids.
size_t el_tokenizer_decode(const el_tokenizer *t, int prev, int id, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
