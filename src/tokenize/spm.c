// SentencePiece-style BPE encoding: split the (space-escaped) text into UTF-8
// characters, fall back to byte tokens for characters the vocabulary lacks,
// then keep merging the adjacent pair whose concatenation is the best-scoring
// piece (leftmost on ties) until no pair is a piece.
//
// Doing that by rescanning all pairs after every merge is O(n^2); instead the
// symbols form a doubly linked list and candidate pairs sit in a max-heap keyed
// by (score, position). A merge only creates pairs with its two neighbours, and
// heap entries made stale by earlier merges are recognised and skipped when
// popped, so the whole encode is O(n log n) lookups and heap operations.
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"


typedef struct {
    const el_tokenizer *t;
    const char *buf;  // escaped text
    tok_symbol *sym;
    tok_heap h;
} encoder;

// Queues the pair (l, r) if their concatenation is a piece raw text may produce.
// Byte-fallback symbols never merge: their pieces ("<0xE2>") are not text.
static int try_pair(void *enc, int32_t l, int32_t r) {
    encoder *e = enc;
    if (l < 0 || r < 0) return 0;
    const tok_symbol *a = &e->sym[l], *b = &e->sym[r];
    if (!tok_type_is_text(e->t->types[a->id]) || !tok_type_is_text(e->t->types[b->id])) return 0;
    int32_t len = a->len + b->len;
    int id = tok_lookup(e->t, e->buf + a->start, (size_t)len, 1);
    if (id < 0) return 0;
    tok_pair p = {e->t->scores[id], l, r, len, id};
    return tok_heap_push(&e->h, p);
}

static int is_space_at(const char *buf, size_t i, size_t n) {
    return n - i >= TOK_SPACE_LEN && memcmp(buf + i, TOK_SPACE, TOK_SPACE_LEN) == 0;
}

// End of the word that starts at s: a run of "▁" and then everything up to the
// next "▁". When no piece has a "▁" right after another character (true of
// SentencePiece vocabularies split on whitespace, checked when the vocabulary
// is built), no merge can cross that point, so each word can be encoded on
// its own: same result, but a small heap that stays in cache.
static size_t word_end(const char *buf, size_t s, size_t n) {
    while (is_space_at(buf, s, n)) s += TOK_SPACE_LEN;
    while (s < n && !is_space_at(buf, s, n)) s += tok_utf8_len((unsigned char)buf[s]);
    return s;
}

// Encodes buf[from..to) (whole characters) and appends the ids to out.
// e->sym has room for to - from symbols. Returns EL_OK, or EL_ERR_NOMEM /
// EL_ERR_UNSUPPORTED (with err filled).
static el_status encode_run(encoder *e, size_t from, size_t to, tok_ids *out, el_error *err) {
    const el_tokenizer *t = e->t;
    const char *buf = e->buf;
    tok_symbol *sym = e->sym;

    // One symbol per character, or per byte where the character is no piece.
    int32_t n_sym = 0;
    for (size_t i = from; i < to;) {
        size_t clen = tok_utf8_len((unsigned char)buf[i]);
        int id = tok_lookup(t, buf + i, clen, 1);
        if (id >= 0) {
            sym[n_sym] = (tok_symbol){(int32_t)i, (int32_t)clen, n_sym - 1, n_sym + 1, id};
            n_sym++;
        } else {
            for (size_t k = 0; k < clen; k++) {
                unsigned char b = (unsigned char)buf[i + k];
                int bid = t->byte_id[b] >= 0 ? t->byte_id[b] : t->unk;
                if (bid < 0)
                    return el_err(err, EL_ERR_UNSUPPORTED,
                                  "prompt byte 0x%02X has no piece, byte token or unknown token in the vocabulary", b);
                sym[n_sym] = (tok_symbol){(int32_t)(i + k), 1, n_sym - 1, n_sym + 1, bid};
                n_sym++;
            }
        }
        i += clen;
    }
    if (n_sym == 0) return EL_OK;
    sym[n_sym - 1].next = -1;
    return tok_merge_run(sym, n_sym, &e->h, try_pair, e, out, err);
}

el_status tok_spm_encode(const el_tokenizer *t, const char *text, size_t len, tok_ids *out, el_error *err) {
    // Escaping can triple the text (each space becomes 3 bytes) and symbols are
    // indexed with int32, so cap the input well inside that.
    if (len > (size_t)(INT_MAX / 4))
        return el_err(err, EL_ERR_RANGE, "prompt of %zu bytes is longer than the limit of %d", len, INT_MAX / 4);

    // Escape: the dummy prefix, and every ' ' as "▁".
    size_t n_spaces = 0;
    for (size_t i = 0; i < len; i++) n_spaces += text[i] == ' ';
    int prefix = len > 0 && t->add_space_prefix;
    size_t blen = len + 2 * n_spaces + (prefix ? TOK_SPACE_LEN : 0);
    char *buf = el_malloc(blen ? blen : 1);
    encoder e = {t, buf, NULL, {NULL, 0, 0}};
    size_t sym_cap = 0;
    el_status st = EL_OK;
    if (!buf) goto nomem;
    size_t w = 0;
    if (prefix) {
        memcpy(buf, TOK_SPACE, TOK_SPACE_LEN);
        w = TOK_SPACE_LEN;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(buf + w, TOK_SPACE, TOK_SPACE_LEN);
            w += TOK_SPACE_LEN;
        } else {
            buf[w++] = text[i];
        }
    }

    for (size_t s = 0; s < blen;) {
        size_t end = t->split_words ? word_end(buf, s, blen) : blen;
        if (end - s > sym_cap) {
            size_t ncap = end - s > 2 * sym_cap ? end - s : 2 * sym_cap;
            free(e.sym);
            e.sym = el_calloc(ncap, sizeof *e.sym);
            if (!e.sym) goto nomem;
            sym_cap = ncap;
        }
        if ((st = encode_run(&e, s, end, out, err)) != EL_OK) goto done;
        s = end;
    }
    goto done;
nomem:
    st = el_err(err, EL_ERR_NOMEM, "out of memory encoding a prompt of %zu bytes", len);
done:
    free(e.h.v);
    free(e.sym);
    free(buf);
    return st;
}
