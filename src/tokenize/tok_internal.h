// Private layout of el_tokenizer, shared by the files of src/tokenize/. The
// vocabulary part (pieces, scores, types, piece -> id hash) is common to every
// kind; an algorithm's own tables (a GPT-2 merge-rank table, say) go after it.
#ifndef EL_TOK_INTERNAL_H
#define EL_TOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "edgellm/tokenize.h"

// Caps that keep a hostile vocabulary from making us allocate wildly.
#define TOK_MAX_VOCAB (1 << 24)
#define TOK_MAX_TEXT ((size_t)1 << 30)  // all pieces together, bytes

// "▁" (U+2581), SentencePiece's stand-in for a space.
#define TOK_SPACE "\xe2\x96\x81"
#define TOK_SPACE_LEN 3

struct el_tokenizer {
    el_tokenizer_kind kind;
    int n_vocab;
    int bos, eos, unk;  // -1 when the vocabulary has none
    int add_space_prefix;
    // SPM: no text piece has "▁" right after another character, so encoding
    // may go word by word (see spm.c).
    int split_words;
    size_t max_piece_len;

    char *text;      // every piece back to back
    uint32_t *off;   // piece i is text[off[i] .. off[i+1]); n_vocab + 1 entries
    float *scores;   // n_vocab
    uint8_t *types;  // n_vocab, el_token_type
    int16_t *byte_of;  // n_vocab: the byte a BYTE token stands for, else -1
    int byte_id[256];  // the BYTE token for each byte value, -1 if missing

    // piece -> id: open addressing with linear probing over token ids; every
    // token is entered, so duplicates are found in id order.
    uint32_t hmask;
    int32_t *hslot;   // hmask + 1 slots, -1 = empty
    uint32_t *hash;   // n_vocab: hash of each piece, to skip most memcmps
};

uint32_t tok_hash(const char *s, size_t n);

// The lowest id whose piece is s[0..n), or -1. With text_only, only tokens
// that raw text may produce (normal and user-defined) are considered, so
// "<s>" in a prompt never becomes BOS and "<0x41>" never becomes a byte token.
int tok_lookup(const el_tokenizer *t, const char *s, size_t n, int text_only);

static inline int tok_type_is_text(int type) { return type == EL_TOKEN_NORMAL || type == EL_TOKEN_USER_DEFINED; }

// Position of the first byte of s[0..n) that does not start a valid UTF-8

// Length of the UTF-8 sequence that starts with lead byte c (valid input).
static inline size_t tok_utf8_len(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

el_status tok_spm_encode(const el_tokenizer *t, const char *text, size_t len, int add_bos, int **ids, int *n_ids,
                         el_error *err);

#endif
