// Byte-level BPE (GGUF tokenizer.ggml.model = "gpt2"): the pre-tokenizer cuts
// the text into words (pretok.c); each byte of a word becomes the character
// GPT-2's byte-to-unicode table gives it (printable Latin-1 bytes stand for
// themselves, the other 68 bytes for U+0100.. in byte order, so a space is
// "Ġ" U+0120); then the adjacent pair whose merge comes first in
// tokenizer.ggml.merges is merged (leftmost on ties) until no pair has one.
//
// As in spm.c, symbols form a linked list and candidate pairs a heap keyed by
// (rank, position); a merge only creates pairs with its two neighbours and
// stale heap entries are skipped when popped, so a word of n bytes costs
// O(n log n) whatever its merges.
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

void tok_bpe_free(el_tokenizer *t) { free(t->merges); }

static int byte_is_printable(int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174); }

static size_t put_utf8(char *out, uint32_t cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    // The table only holds code points below U+0800.
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

static uint32_t merge_hash(int32_t l, int32_t r) {
    uint32_t h = (uint32_t)l * 0x9E3779B1u ^ ((uint32_t)r + 0x7F4A7C15u) * 0x85EBCA77u;
    return h ^ (h >> 15);
}

static const tok_merge *merge_find(const el_tokenizer *t, int32_t l, int32_t r) {
    for (uint32_t i = merge_hash(l, r) & t->mmask;; i = (i + 1) & t->mmask) {
        const tok_merge *m = &t->merges[i];
        if (m->left < 0) return NULL;
        if (m->left == l && m->right == r) return m;
    }
}

el_status el_tokenizer_new_bpe(int n_vocab, const char *const *pieces, const size_t *lens, const int *types,
                               int n_merges, const char *const *merges, const size_t *merge_lens, el_pretok pre,
                               int bos, int eos, int unk, el_tokenizer **out, el_error *err) {
    if (!out) return el_err(err, EL_ERR_ARG, "tokenizer: out is NULL");
    *out = NULL;
    if (pre < EL_PRETOK_GPT2 || pre > EL_PRETOK_SMOLLM)
        return el_err(err, EL_ERR_ARG, "tokenizer: unknown pre-tokenizer %d", (int)pre);
    if (n_merges < 0 || n_merges > TOK_MAX_VOCAB)
        return el_err(err, EL_ERR_RANGE, "tokenizer: %d merges, expected 0..%d", n_merges, TOK_MAX_VOCAB);
    if (n_merges && (!merges || !merge_lens)) return el_err(err, EL_ERR_ARG, "tokenizer: merges is NULL");
    el_tokenizer *t;
    el_status st = tok_vocab_new(EL_TOKENIZER_BPE, n_vocab, pieces, lens, NULL, types, bos, eos, unk, &t, err);
    if (st != EL_OK) return st;
    t->pre = pre;
    // Llama 3's tokenizer.json sets ignore_merges: a word that is a piece as a
    // whole is that token, even where the merges would not build it.
    t->ignore_merges = pre == EL_PRETOK_LLAMA3;

    for (int i = 0; i < 324; i++) t->cp_byte[i] = -1;
    for (int b = 0, extra = 0; b < 256; b++) {
        t->byte_cp[b] = (uint16_t)(byte_is_printable(b) ? b : 256 + extra++);
        t->cp_byte[t->byte_cp[b]] = (int16_t)b;
        char c[2];
        size_t n = put_utf8(c, t->byte_cp[b]);
        t->byte_tok[b] = tok_lookup(t, c, n, 1);
    }

    uint32_t nslots = 16;
    while (nslots < (uint32_t)n_merges * 2u) nslots *= 2;
    t->mmask = nslots - 1;
    t->merges = el_malloc((size_t)nslots * sizeof *t->merges);
    if (!t->merges) {
        el_tokenizer_free(t);
        return el_err(err, EL_ERR_NOMEM, "tokenizer: out of memory for %d merges", n_merges);
    }
    for (uint32_t i = 0; i < nslots; i++) t->merges[i].left = -1;
    for (int i = 0; i < n_merges; i++) {
        const char *m = merges[i];
        size_t n = merge_lens[i];
        // The parts are separated by a space; pieces hold none (a space is
        // "Ġ"), but a part could in principle start with one, hence from 1.
        const char *sp = n > 1 && m ? memchr(m + 1, ' ', n - 1) : NULL;
        if (!sp) {
            st = el_err(err, EL_ERR_FORMAT, "tokenizer: merge %d \"%.*s\" is not two pieces separated by a space", i,
                        (int)(n < 64 ? n : 64), m ? m : "");
            goto fail;
        }
        size_t ln = (size_t)(sp - m), rn = n - ln - 1;
        int l = tok_lookup(t, m, ln, 1), r = tok_lookup(t, sp + 1, rn, 1);
        const char *bad = l < 0 ? m : r < 0 ? sp + 1 : NULL;
        size_t bad_n = l < 0 ? ln : rn;
        int res = -1;
        if (!bad) {
            // LEFTRIGHT: the two pieces back to back.
            size_t cl = ln + rn;
            char small[256], *cat = cl <= sizeof small ? small : el_malloc(cl);
            if (!cat) {
                st = el_err(err, EL_ERR_NOMEM, "tokenizer: out of memory");
                goto fail;
            }
            memcpy(cat, m, ln);
            memcpy(cat + ln, sp + 1, rn);
            res = tok_lookup(t, cat, cl, 1);
            if (cat != small) free(cat);
            if (res < 0) {
                st = el_err(err, EL_ERR_FORMAT, "tokenizer: merge %d \"%.*s\": the merged piece is not in the vocabulary",
                            i, (int)(n < 64 ? n : 64), m);
                goto fail;
            }
        } else {
            st = el_err(err, EL_ERR_FORMAT, "tokenizer: merge %d \"%.*s\": \"%.*s\" is not in the vocabulary", i,
                        (int)(n < 64 ? n : 64), m, (int)(bad_n < 64 ? bad_n : 64), bad);
            goto fail;
        }
        uint32_t s = merge_hash(l, r) & t->mmask;
        while (t->merges[s].left >= 0 && !(t->merges[s].left == l && t->merges[s].right == r)) s = (s + 1) & t->mmask;
        if (t->merges[s].left < 0) t->merges[s] = (tok_merge){l, r, res, i};  // a repeated merge keeps its first rank
    }
    *out = t;
    return EL_OK;
fail:
    el_tokenizer_free(t);
    return st;
}

typedef struct {
    const el_tokenizer *t;
    char *map;  // the word in mapped characters
    tok_symbol *sym;  // start, len: in the mapped word
    tok_heap h;
    size_t cap_word;
} encoder;


static int try_pair(void *enc, int32_t l, int32_t r) {
    encoder *e = enc;
    if (l < 0 || r < 0) return 0;
    const tok_merge *m = merge_find(e->t, e->sym[l].id, e->sym[r].id);
    if (!m) return 0;
    tok_pair p = {-(double)m->rank, l, r, e->sym[l].len + e->sym[r].len, m->result};  // lowest rank first
    return tok_heap_push(&e->h, p);
}

// Encodes one word w[0..n) and appends its ids.
static el_status encode_word(encoder *e, const char *w, size_t n, tok_ids *out, el_error *err) {
    const el_tokenizer *t = e->t;
    if (n > e->cap_word) {
        size_t ncap = n > 2 * e->cap_word ? n : 2 * e->cap_word;
        free(e->map);
        free(e->sym);
        e->map = el_malloc(2 * ncap);
        e->sym = el_malloc(ncap * sizeof *e->sym);
        e->cap_word = e->map && e->sym ? ncap : 0;
        if (!e->cap_word) return el_err(err, EL_ERR_NOMEM, "out of memory encoding a prompt");
    }
    size_t mlen = 0;
    int32_t n_sym = (int32_t)n;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)w[i];
        size_t cl = put_utf8(e->map + mlen, t->byte_cp[b]);
        int id = t->byte_tok[b] >= 0 ? t->byte_tok[b] : t->unk;
        if (id < 0)
            return el_err(err, EL_ERR_UNSUPPORTED, "prompt byte 0x%02X has no token and the vocabulary no unknown token",
                          b);
        e->sym[i] = (tok_symbol){(int32_t)mlen, (int32_t)cl, (int32_t)i - 1, (int32_t)i + 1, id};
        mlen += cl;
    }
    e->sym[n_sym - 1].next = -1;
    if (t->ignore_merges && n > 1) {
        int id = tok_lookup(t, e->map, mlen, 1);
        if (id >= 0) return tok_ids_push(out, id) ? el_err(err, EL_ERR_NOMEM, "out of memory encoding a prompt") : EL_OK;
    }
    return tok_merge_run(e->sym, n_sym, &e->h, try_pair, e, out, err);
}

el_status tok_bpe_encode(const el_tokenizer *t, const char *text, size_t len, tok_ids *out, el_error *err) {
    encoder e = {.t = t};
    tok_pretok_iter it = {t->pre, text, len, 0, 0};
    el_status st = EL_OK;
    while (it.i < len && st == EL_OK) {
        size_t from = it.i, to = tok_pretok_next(&it);
        st = encode_word(&e, text + from, to - from, out, err);
    }
    free(e.map);
    free(e.sym);
    free(e.h.v);
    return st;
}

size_t tok_bpe_decode(const el_tokenizer *t, int id, char *buf, size_t cap) {
    int type = t->types[id];
    if (type == EL_TOKEN_CONTROL || type == EL_TOKEN_UNKNOWN || type == EL_TOKEN_UNUSED) return 0;
    const unsigned char *p = (const unsigned char *)t->text + t->off[id];
    size_t n = t->off[id + 1] - t->off[id], w = 0;
    if (type == EL_TOKEN_USER_DEFINED) {
        w = n < cap ? n : cap;
        memcpy(buf, p, w);
        return w;
    }
    // Characters of the byte table become their byte; anything else (the
    // piece came from a file) is copied as it is.
    for (size_t i = 0; i < n && w < cap;) {
        if (p[i] < 0x80) {
            int b = t->cp_byte[p[i]];
            buf[w++] = (char)(b >= 0 ? b : p[i]);
            i++;
        } else if (p[i] >= 0xC2 && p[i] < 0xE0 && i + 1 < n && (p[i + 1] & 0xC0) == 0x80) {
            uint32_t cp = ((uint32_t)(p[i] & 0x1F) << 6) | (p[i + 1] & 0x3F);
            if (cp < 324 && t->cp_byte[cp] >= 0) {
                buf[w++] = (char)t->cp_byte[cp];
            } else {
                buf[w++] = (char)p[i];
                if (w < cap) buf[w++] = (char)p[i + 1];
            }
            i += 2;
        } else {
            buf[w++] = (char)p[i++];
        }
    }
    return w;
}
