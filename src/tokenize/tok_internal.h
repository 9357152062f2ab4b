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

// A candidate merge of two adjacent symbols, shared by the merge loops of
// both tokenizer kinds. The heap pops the highest key first, the leftmost
// on ties: SentencePiece keys on the merged piece's score, byte-level BPE on
// -rank (exact in a double for every rank below TOK_MAX_VOCAB).
typedef struct {
    double key;
    int32_t left, right;  // symbol indices
    int32_t len;          // left.len + right.len when the pair was made (stale check)
    int32_t id;           // the piece the pair merges into
} tok_pair;

typedef struct {
    tok_pair *v;
    size_t n, cap;
} tok_heap;

int tok_heap_push(tok_heap *h, tok_pair p);  // -1 when out of memory
tok_pair tok_heap_pop(tok_heap *h);          // h->n > 0

// A run of the text being encoded that is currently one token. Symbols are
// indexed in text order and only ever absorb their right neighbour, so a
// symbol's index orders it among the live ones and its start never moves.
typedef struct {
    int32_t start, len;  // in the encoder's text; len 0 = absorbed
    int32_t prev, next;  // live neighbours, -1 at the ends
    int32_t id;
} tok_symbol;

// Queues the pair of live symbols (l, r) in the heap if they merge (the
// tokenizer kind's rule), ignoring l or r < 0; -1 when out of memory.
typedef int (*tok_try_pair_fn)(void *enc, int32_t l, int32_t r);
#define TOK_MAX_TEXT ((size_t)1 << 30)  // all pieces together, bytes

// "▁" (U+2581), SentencePiece's stand-in for a space.
#define TOK_SPACE "\xe2\x96\x81"
#define TOK_SPACE_LEN 3

typedef struct {
    int32_t left, right, result, rank;
} tok_merge;

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

    int add_bos, add_eos;  // the model's preference (el_tokenizer_add_bos)

    // Control and user-defined tokens that EL_ENCODE_SPECIAL finds in text:
    // grouped by first byte (spec[spec_start[b] .. spec_start[b + 1])), each
    // group longest piece first.
    int32_t *spec;
    uint32_t spec_start[257];
    int n_user_defined;  // how many of them are user-defined (matched without EL_ENCODE_SPECIAL)

    // Byte-level BPE (bpe.c).
    el_pretok pre;
    int ignore_merges;      // a word that is a piece is one token (Llama 3)
    uint16_t byte_cp[256];  // GPT-2's byte -> code point mapping
    int16_t cp_byte[324];   // and back; -1 for code points no byte maps to
    int byte_tok[256];      // the token of each byte's character, -1 if none
    uint32_t mmask;         // merge table: (left, right) -> rank, result
    tok_merge *merges;      // mmask + 1 slots, left = -1 empty
};

uint32_t tok_hash(const char *s, size_t n);

// The lowest id whose piece is s[0..n), or -1. With text_only, only tokens
// that raw text may produce (normal and user-defined) are considered, so
// "<s>" in a prompt never becomes BOS and "<0x41>" never becomes a byte token.
int tok_lookup(const el_tokenizer *t, const char *s, size_t n, int text_only);

static inline int tok_type_is_text(int type) { return type == EL_TOKEN_NORMAL || type == EL_TOKEN_USER_DEFINED; }


// Length of the UTF-8 sequence that starts with lead byte c (valid input).
static inline size_t tok_utf8_len(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

// A growing list of token ids.
typedef struct {
    int *v;
    size_t n, cap;
} tok_ids;
int tok_ids_push(tok_ids *o, int id);  // 0, or -1 when out of memory

// The merge loop both BPE kinds share: sym[0..n) linked in order
// (sym[n-1].next = -1; n <= 0 appends nothing), and h the heap try_pair
// pushes into (emptied here). Queues every adjacent pair, merges the best
// until none is left (skipping pairs made stale by earlier merges), and
// appends the live symbols' ids to out.
el_status tok_merge_run(tok_symbol *sym, int32_t n, tok_heap *h, tok_try_pair_fn try_pair, void *enc, tok_ids *out,
                        el_error *err);

// A vocabulary with no algorithm tables yet (the part el_tokenizer_new_spm
// and el_tokenizer_new_bpe share); "<0xAB>" byte pieces are parsed for SPM.
el_status tok_vocab_new(el_tokenizer_kind kind, int n_vocab, const char *const *pieces, const size_t *lens,
                        const float *scores, const int *types, int bos, int eos, int unk, el_tokenizer **out,
                        el_error *err);

// Append the tokens of text[0..len) (valid UTF-8, no special-token parsing)
// to out. The SentencePiece encoder adds the dummy prefix when configured.
el_status tok_spm_encode(const el_tokenizer *t, const char *text, size_t len, tok_ids *out, el_error *err);
el_status tok_bpe_encode(const el_tokenizer *t, const char *text, size_t len, tok_ids *out, el_error *err);
size_t tok_bpe_decode(const el_tokenizer *t, int id, char *buf, size_t cap);
void tok_bpe_free(el_tokenizer *t);

// Walks the pre-tokens of s[0..n): each call returns the end of the next one.
typedef struct {
    el_pretok pre;
    const char *s;
    size_t n, i;
    size_t seg_end;  // SmolLM: end of the current run without numbers
} tok_pretok_iter;
size_t tok_pretok_next(tok_pretok_iter *it);

#endif
