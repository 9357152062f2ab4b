// The vocabulary every tokenizer kind shares (pieces, scores, types, a piece ->
// id hash), its accessors, special-token parsing, decoding, and dispatch of
// encode to the kind.
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

uint32_t tok_hash(const char *s, size_t n) {
    // FNV-1a, folded to 32 bits.
    uint32_t h = 2166136261u;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h;
}

int tok_lookup(const el_tokenizer *t, const char *s, size_t n, int text_only) {
    uint32_t h = tok_hash(s, n);
    for (uint32_t i = h & t->hmask;; i = (i + 1) & t->hmask) {
        int32_t id = t->hslot[i];
        if (id < 0) return -1;
        if (t->hash[id] != h) continue;
        size_t plen = t->off[id + 1] - t->off[id];
        if (plen != n || memcmp(t->text + t->off[id], s, n) != 0) continue;
        if (text_only && !tok_type_is_text(t->types[id])) continue;
        return id;
    }
}


static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

// The byte value of a "<0xAB>" piece, or -1.
static int parse_byte_piece(const char *p, size_t n) {
    if (n != 6 || memcmp(p, "<0x", 3) != 0 || p[5] != '>') return -1;
    int hi = hexval(p[3]), lo = hexval(p[4]);
    if (hi < 0 || lo < 0) return -1;
    return hi * 16 + lo;
}

void el_tokenizer_free(el_tokenizer *t) {
    if (!t) return;
    free(t->text);
    free(t->off);
    free(t->scores);
    free(t->types);
    free(t->byte_of);
    free(t->hslot);
    free(t->hash);
    free(t->spec);
    tok_bpe_free(t);
    free(t);
}

int tok_ids_push(tok_ids *o, int id) {
    if (o->n == o->cap) {
        size_t ncap = o->cap ? o->cap * 2 : 64;
        int *nv = realloc(o->v, ncap * sizeof *nv);
        if (!nv) return -1;
        o->v = nv;
        o->cap = ncap;
    }
    o->v[o->n++] = id;
    return 0;
}

typedef struct {
    uint32_t first, len;
    int32_t id;
} spec_key;

// Special-token candidates by first byte, then longest first, then lowest id.
static int spec_cmp(const void *pa, const void *pb) {
    const spec_key *a = pa, *b = pb;
    if (a->first != b->first) return a->first < b->first ? -1 : 1;
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

// Collects the control and user-defined tokens encode looks for in text.
// Pieces that are empty or not valid UTF-8 could never be matched cleanly and
// are left out.
static int build_specials(el_tokenizer *t) {
    size_t n = 0;
    for (int i = 0; i < t->n_vocab; i++) {
        size_t len = t->off[i + 1] - t->off[i];
        if ((t->types[i] == EL_TOKEN_CONTROL || t->types[i] == EL_TOKEN_USER_DEFINED) && len &&
            el_utf8_valid(t->text + t->off[i], len))
            n++;
    }
    spec_key *k = el_calloc(n ? n : 1, sizeof *k);
    t->spec = el_calloc(n ? n : 1, sizeof *t->spec);
    if (!k || !t->spec) {
        free(k);
        return -1;
    }
    size_t w = 0;
    for (int i = 0; i < t->n_vocab; i++) {
        size_t len = t->off[i + 1] - t->off[i];
        if ((t->types[i] == EL_TOKEN_CONTROL || t->types[i] == EL_TOKEN_USER_DEFINED) && len &&
            el_utf8_valid(t->text + t->off[i], len))
            k[w++] = (spec_key){(unsigned char)t->text[t->off[i]], (uint32_t)len, i};
    }
    qsort(k, n, sizeof *k, spec_cmp);
    size_t j = 0;
    for (uint32_t b = 0; b < 256; b++) {
        t->spec_start[b] = (uint32_t)j;
        while (j < n && k[j].first == b) {
            t->spec[j] = k[j].id;
            j++;
        }
    }
    t->spec_start[256] = (uint32_t)n;
    for (size_t i = 0; i < n; i++) t->n_user_defined += t->types[t->spec[i]] == EL_TOKEN_USER_DEFINED;
    free(k);
    return 0;
}

el_status tok_vocab_new(el_tokenizer_kind kind, int n_vocab, const char *const *pieces, const size_t *lens,
                        const float *scores, const int *types, int bos, int eos, int unk, el_tokenizer **out,
                        el_error *err) {
    if (!out) return el_err(err, EL_ERR_ARG, "tokenizer: out is NULL");
    *out = NULL;
    if (n_vocab <= 0 || n_vocab > TOK_MAX_VOCAB)
        return el_err(err, EL_ERR_RANGE, "tokenizer: vocabulary size %d is out of range [1, %d]", n_vocab,
                      TOK_MAX_VOCAB);
    if (!pieces || !lens) return el_err(err, EL_ERR_ARG, "tokenizer: pieces or lens is NULL");
    const int special[3] = {bos, eos, unk};
    const char *special_name[3] = {"bos", "eos", "unk"};
    for (int k = 0; k < 3; k++) {
        if (special[k] < -1 || special[k] >= n_vocab)
            return el_err(err, EL_ERR_RANGE, "tokenizer: %s id %d is outside the vocabulary of %d", special_name[k],
                          special[k], n_vocab);
    }

    size_t total = 0;
    for (int i = 0; i < n_vocab; i++) {
        if (!pieces[i] && lens[i]) return el_err(err, EL_ERR_ARG, "tokenizer: token %d: piece is NULL", i);
        if (lens[i] > TOK_MAX_TEXT - total)
            return el_err(err, EL_ERR_RANGE, "tokenizer: token %d: pieces exceed %zu bytes in total", i,
                          TOK_MAX_TEXT);
        total += lens[i];
        if (scores && !isfinite(scores[i]))
            return el_err(err, EL_ERR_FORMAT, "tokenizer: token %d has a non-finite score", i);
        if (types && (types[i] < EL_TOKEN_NORMAL || types[i] > EL_TOKEN_BYTE))
            return el_err(err, EL_ERR_FORMAT, "tokenizer: token %d has type %d, expected 1..6", i, types[i]);
    }

    el_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return el_err(err, EL_ERR_NOMEM, "tokenizer: out of memory");
    t->kind = kind;
    t->n_vocab = n_vocab;
    t->add_bos = kind == EL_TOKENIZER_SPM;
    t->bos = bos;
    t->eos = eos;
    t->unk = unk;
    t->add_space_prefix = 1;
    uint32_t nslots = 16;
    while (nslots < (uint32_t)n_vocab * 2u) nslots *= 2;  // load factor <= 1/2
    t->hmask = nslots - 1;
    t->text = el_malloc(total);
    t->off = el_calloc((size_t)n_vocab + 1, sizeof *t->off);
    t->scores = el_calloc((size_t)n_vocab, sizeof *t->scores);
    t->types = el_calloc((size_t)n_vocab, sizeof *t->types);
    t->byte_of = el_calloc((size_t)n_vocab, sizeof *t->byte_of);
    t->hslot = el_calloc(nslots, sizeof *t->hslot);
    t->hash = el_calloc((size_t)n_vocab, sizeof *t->hash);
    if (!t->text || !t->off || !t->scores || !t->types || !t->byte_of || !t->hslot || !t->hash) {
        el_tokenizer_free(t);
        return el_err(err, EL_ERR_NOMEM, "tokenizer: out of memory for %d tokens", n_vocab);
    }
    memset(t->hslot, 0xff, (size_t)nslots * sizeof *t->hslot);
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1;

    uint32_t pos = 0;
    for (int i = 0; i < n_vocab; i++) {
        t->off[i] = pos;
        if (lens[i]) memcpy(t->text + pos, pieces[i], lens[i]);
        pos += (uint32_t)lens[i];
        if (lens[i] > t->max_piece_len) t->max_piece_len = lens[i];
        t->scores[i] = scores ? scores[i] : 0.0f;
        t->types[i] = (uint8_t)(types ? types[i] : EL_TOKEN_NORMAL);
        t->byte_of[i] = -1;
        if (t->types[i] == EL_TOKEN_BYTE && kind == EL_TOKENIZER_SPM) {
            int b = parse_byte_piece(pieces[i], lens[i]);
            if (b < 0) {
                el_tokenizer_free(t);
                return el_err(err, EL_ERR_FORMAT, "tokenizer: token %d is a byte token but its piece is not <0xXX>",
                              i);
            }
            t->byte_of[i] = (int16_t)b;
            if (t->byte_id[b] < 0) t->byte_id[b] = i;
        }
        uint32_t h = tok_hash(t->text + t->off[i], lens[i]);
        t->hash[i] = h;
        uint32_t s = h & t->hmask;
        while (t->hslot[s] >= 0) s = (s + 1) & t->hmask;
        t->hslot[s] = i;
    }
    t->off[n_vocab] = pos;
    if (build_specials(t)) {
        el_tokenizer_free(t);
        return el_err(err, EL_ERR_NOMEM, "tokenizer: out of memory for %d tokens", n_vocab);
    }
    *out = t;
    return EL_OK;
}

el_status el_tokenizer_new_spm(int n_vocab, const char *const *pieces, const size_t *lens, const float *scores,
                               const int *types, int bos, int eos, int unk, el_tokenizer **out, el_error *err) {
    el_status st = tok_vocab_new(EL_TOKENIZER_SPM, n_vocab, pieces, lens, scores, types, bos, eos, unk, out, err);
    if (st != EL_OK) return st;
    el_tokenizer *t = *out;
    t->split_words = 1;
    for (int i = 0; i < n_vocab && t->split_words; i++) {
        if (!tok_type_is_text(t->types[i])) continue;
        const char *p = t->text + t->off[i];
        size_t n = t->off[i + 1] - t->off[i];
        // Byte-wise is exact for UTF-8: the 3 bytes before a "▁" equal "▁"
        // only when the character before it is one.
        for (size_t k = 1; k + TOK_SPACE_LEN <= n; k++) {
            if (memcmp(p + k, TOK_SPACE, TOK_SPACE_LEN) == 0 &&
                (k < TOK_SPACE_LEN || memcmp(p + k - TOK_SPACE_LEN, TOK_SPACE, TOK_SPACE_LEN) != 0)) {
                t->split_words = 0;
                break;
            }
        }
    }
    *out = t;
    return EL_OK;
}

el_tokenizer_kind el_tokenizer_kind_of(const el_tokenizer *t) { return t->kind; }
int el_tokenizer_n_vocab(const el_tokenizer *t) { return t->n_vocab; }
int el_tokenizer_bos(const el_tokenizer *t) { return t->bos; }
int el_tokenizer_eos(const el_tokenizer *t) { return t->eos; }
int el_tokenizer_unk(const el_tokenizer *t) { return t->unk; }

const char *el_tokenizer_piece(const el_tokenizer *t, int id, size_t *len) {
    if (id < 0 || id >= t->n_vocab) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = t->off[id + 1] - t->off[id];
    return t->text + t->off[id];
}

float el_tokenizer_score(const el_tokenizer *t, int id) {
    return id >= 0 && id < t->n_vocab ? t->scores[id] : 0.0f;
}

int el_tokenizer_type(const el_tokenizer *t, int id) { return id >= 0 && id < t->n_vocab ? t->types[id] : 0; }

size_t el_tokenizer_max_piece_len(const el_tokenizer *t) { return t->max_piece_len; }

int el_tokenizer_find(const el_tokenizer *t, const char *piece, size_t len) { return tok_lookup(t, piece, len, 0); }

void el_tokenizer_set_add_space_prefix(el_tokenizer *t, int on) { t->add_space_prefix = on != 0; }
int el_tokenizer_add_bos(const el_tokenizer *t) { return t->add_bos; }
int el_tokenizer_add_eos(const el_tokenizer *t) { return t->add_eos; }
void el_tokenizer_set_add_bos(el_tokenizer *t, int on) { t->add_bos = on != 0; }
void el_tokenizer_set_add_eos(el_tokenizer *t, int on) { t->add_eos = on != 0; }
el_pretok el_tokenizer_pretok(const el_tokenizer *t) { return t->kind == EL_TOKENIZER_BPE ? t->pre : EL_PRETOK_NONE; }

// The special token whose piece starts text[i..len) (longest first), or -1.
// Control tokens count only when control is set.
static int special_at(const el_tokenizer *t, const char *text, size_t i, size_t len, int control) {
    unsigned char b = (unsigned char)text[i];
    for (uint32_t k = t->spec_start[b]; k < t->spec_start[b + 1]; k++) {
        int id = t->spec[k];
        if (!control && t->types[id] == EL_TOKEN_CONTROL) continue;
        size_t n = t->off[id + 1] - t->off[id];
        if (n <= len - i && memcmp(text + i, t->text + t->off[id], n) == 0) return id;
    }
    return -1;
}

static el_status encode_text(const el_tokenizer *t, const char *text, size_t len, tok_ids *out, el_error *err) {
    if (len == 0) return EL_OK;
    return t->kind == EL_TOKENIZER_BPE ? tok_bpe_encode(t, text, len, out, err)
                                       : tok_spm_encode(t, text, len, out, err);
}

el_status el_tokenizer_encode_ex(const el_tokenizer *t, const char *text, size_t len, unsigned flags, int **ids,
                                 int *n_ids, el_error *err) {
    return el_tokenizer_encode_spans(t, text, len, flags, NULL, 0, ids, n_ids, err);
}

el_status el_tokenizer_encode_spans(const el_tokenizer *t, const char *text, size_t len, unsigned flags,
                                    const el_text_span *plain, int n_plain, int **ids, int *n_ids, el_error *err) {
    if (ids) *ids = NULL;
    if (n_ids) *n_ids = 0;
    if (!t || !ids || !n_ids || (!text && len))
        return el_err(err, EL_ERR_ARG, "tokenizer: encode called with a NULL argument");
    if (t->kind != EL_TOKENIZER_SPM && t->kind != EL_TOKENIZER_BPE)
        return el_err(err, EL_ERR_UNSUPPORTED, "tokenizer: kind %d cannot encode", (int)t->kind);
    // Symbols are indexed with int32 and SentencePiece escaping triples spaces.
    if (len > (size_t)(INT_MAX / 4))
        return el_err(err, EL_ERR_RANGE, "prompt of %zu bytes is longer than the limit of %d", len, INT_MAX / 4);
    size_t bad = el_utf8_check(text, len);
    if (bad < len) return el_err(err, EL_ERR_ARG, "prompt is not valid UTF-8 at byte %zu", bad);
    if ((flags & EL_ENCODE_ADD_BOS) && t->bos < 0)
        return el_err(err, EL_ERR_ARG, "tokenizer has no BOS token to prepend");
    if ((flags & EL_ENCODE_ADD_EOS) && t->eos < 0)
        return el_err(err, EL_ERR_ARG, "tokenizer has no EOS token to append");

    tok_ids out = {el_malloc((len / 2 + 16) * sizeof(int)), 0, len / 2 + 16};
    el_status st = EL_OK;
    if (!out.v) goto nomem;
    if ((flags & EL_ENCODE_ADD_BOS) && tok_ids_push(&out, t->bos)) goto nomem;
    // User-defined pieces are always taken whole, as Hugging Face does with
    // added tokens that are not special; control ones only when asked.
    if ((flags & EL_ENCODE_SPECIAL) || t->n_user_defined) {
        int control = (flags & EL_ENCODE_SPECIAL) != 0;
        size_t from = 0;
        int sp = 0;  // the first plain span that does not end before i
        for (size_t i = 0; i < len;) {
            while (sp < n_plain && plain[sp].end <= i) sp++;
            int id = special_at(t, text, i, len, control);
            // a control piece that overlaps the user's text is not a marker
            if (id >= 0 && t->types[id] == EL_TOKEN_CONTROL && sp < n_plain &&
                plain[sp].begin < i + (t->off[id + 1] - t->off[id]))
                id = -1;
            if (id < 0) {
                i += tok_utf8_len((unsigned char)text[i]);
                continue;
            }
            if ((st = encode_text(t, text + from, i - from, &out, err)) != EL_OK) goto done;
            if (tok_ids_push(&out, id)) goto nomem;
            i += t->off[id + 1] - t->off[id];
            from = i;
        }
        if ((st = encode_text(t, text + from, len - from, &out, err)) != EL_OK) goto done;
    } else if ((st = encode_text(t, text, len, &out, err)) != EL_OK) {
        goto done;
    }
    if ((flags & EL_ENCODE_ADD_EOS) && tok_ids_push(&out, t->eos)) goto nomem;
    if (out.n > (size_t)INT_MAX) goto nomem;  // cannot happen under the length cap
    *ids = out.v;
    *n_ids = (int)out.n;
    out.v = NULL;
    goto done;
nomem:
    st = el_err(err, EL_ERR_NOMEM, "out of memory encoding a prompt of %zu bytes", len);
done:
    free(out.v);
    return st;
}

el_status el_tokenizer_encode(const el_tokenizer *t, const char *text, size_t len, int add_bos, int **ids,
                              int *n_ids, el_error *err) {
    return el_tokenizer_encode_ex(t, text, len, add_bos ? EL_ENCODE_ADD_BOS : 0, ids, n_ids, err);
}

size_t el_tokenizer_decode(const el_tokenizer *t, int prev, int id, char *buf, size_t cap) {
    if (!t || id < 0 || id >= t->n_vocab) return 0;
    if (t->kind == EL_TOKENIZER_BPE) return tok_bpe_decode(t, id, buf, cap);
    switch (t->types[id]) {
    case EL_TOKEN_CONTROL:
    case EL_TOKEN_UNKNOWN:
    case EL_TOKEN_UNUSED: return 0;
    case EL_TOKEN_BYTE:
        if (cap < 1) return 0;
        buf[0] = (char)t->byte_of[id];
        return 1;
    default: break;
    }
    const char *p = t->text + t->off[id];
    size_t n = t->off[id + 1] - t->off[id], i = 0, w = 0;
    // SentencePiece's dummy prefix put a space before the first word; after
    // BOS it is not part of the text.
    if (prev >= 0 && prev == t->bos && n >= TOK_SPACE_LEN && memcmp(p, TOK_SPACE, TOK_SPACE_LEN) == 0)
        i = TOK_SPACE_LEN;
    while (i < n && w < cap) {
        if (n - i >= TOK_SPACE_LEN && memcmp(p + i, TOK_SPACE, TOK_SPACE_LEN) == 0) {
            buf[w++] = ' ';
            i += TOK_SPACE_LEN;
        } else {
            buf[w++] = p[i++];
        }
    }
    return w;
}
