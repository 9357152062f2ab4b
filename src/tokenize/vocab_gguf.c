// Tokenizer from GGUF metadata (tokenizer.ggml.*). Only the SentencePiece
// ("llama") model for now; the arrays point into the mapped file and are
// copied into the tokenizer, so the GGUF may be closed afterwards.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

static const char *path_of(const el_gguf *g) { return g->path ? g->path : "(gguf)"; }

// The id stored under key, range-checked; -1 when the key is absent.
static el_status special_id(const el_gguf *g, const char *key, int n_vocab, int *out, el_error *err) {
    *out = -1;
    const el_gguf_kv *kv = el_gguf_find(g, key);
    if (!kv) return EL_OK;
    int64_t v;
    if (!el_gguf_get_i64(g, key, &v)) {
        // el_gguf_get_i64 refuses unsigned values above INT64_MAX.
        uint64_t u;
        if (!el_gguf_get_u64(g, key, &u))
            return el_err(err, EL_ERR_FORMAT, "%s: %s has type %s, expected an integer", path_of(g), key,
                          el_gguf_type_name(kv->type));
        return el_err(err, EL_ERR_RANGE, "%s: %s is %llu, outside the vocabulary of %d tokens", path_of(g), key,
                      (unsigned long long)u, n_vocab);
    }
    if (v < 0 || v >= n_vocab)
        return el_err(err, EL_ERR_RANGE, "%s: %s is %lld, outside the vocabulary of %d tokens", path_of(g), key,
                      (long long)v, n_vocab);
    *out = (int)v;
    return EL_OK;
}

// An optional per-token array: absent is fine, present must match n_vocab.
static el_status token_array(const el_gguf *g, const char *key, int n_vocab, int want_float, const el_gguf_kv **out,
                             el_error *err) {
    *out = NULL;
    const el_gguf_kv *kv = el_gguf_find(g, key);
    if (!kv) return EL_OK;
    int ok = kv->type == EL_GGUF_ARRAY;
    if (ok && want_float) ok = kv->arr_type == EL_GGUF_FLOAT32 || kv->arr_type == EL_GGUF_FLOAT64;
    if (ok && !want_float)
        ok = kv->arr_type != EL_GGUF_FLOAT32 && kv->arr_type != EL_GGUF_FLOAT64 && kv->arr_type != EL_GGUF_BOOL &&
             kv->arr_type != EL_GGUF_STRING && kv->arr_type != EL_GGUF_ARRAY;
    if (!ok)
        return el_err(err, EL_ERR_FORMAT, "%s: %s is not an array of %s", path_of(g), key,
                      want_float ? "float32" : "int32");
    if (kv->arr_n != (uint64_t)n_vocab)
        return el_err(err, EL_ERR_FORMAT, "%s: %s has %llu entries but tokenizer.ggml.tokens has %d", path_of(g), key,
                      (unsigned long long)kv->arr_n, n_vocab);
    *out = kv;
    return EL_OK;
}

el_status el_tokenizer_from_gguf(const el_gguf *g, el_tokenizer **out, el_error *err) {
    if (!out) return el_err(err, EL_ERR_ARG, "tokenizer: out is NULL");
    *out = NULL;
    if (!g) return el_err(err, EL_ERR_ARG, "tokenizer: no GGUF file given");
    const char *path = path_of(g);

    const el_gguf_kv *model = el_gguf_find(g, "tokenizer.ggml.model");
    if (!model) return el_err(err, EL_ERR_FORMAT, "%s: no tokenizer.ggml.model: the file has no tokenizer", path);
    if (model->type != EL_GGUF_STRING)
        return el_err(err, EL_ERR_FORMAT, "%s: tokenizer.ggml.model has type %s, expected string", path,
                      el_gguf_type_name(model->type));
    const el_gguf_str m = model->v.str;
    if (m.len != 5 || memcmp(m.ptr, "llama", 5) != 0)
        return el_err(err, EL_ERR_UNSUPPORTED, "%s: tokenizer model \"%.*s\" is not supported (only \"llama\")", path,
                      (int)(m.len < 64 ? m.len : 64), m.ptr);

    const el_gguf_kv *tokens = el_gguf_find(g, "tokenizer.ggml.tokens");
    if (!tokens) return el_err(err, EL_ERR_FORMAT, "%s: no tokenizer.ggml.tokens", path);
    if (tokens->type != EL_GGUF_ARRAY || tokens->arr_type != EL_GGUF_STRING || !tokens->strs)
        return el_err(err, EL_ERR_FORMAT, "%s: tokenizer.ggml.tokens is not an array of strings", path);
    if (tokens->arr_n == 0 || tokens->arr_n > TOK_MAX_VOCAB)
        return el_err(err, EL_ERR_RANGE, "%s: tokenizer.ggml.tokens has %llu entries, expected 1..%d", path,
                      (unsigned long long)tokens->arr_n, TOK_MAX_VOCAB);
    int n_vocab = (int)tokens->arr_n;

    const el_gguf_kv *kscores, *ktypes;
    el_status st = token_array(g, "tokenizer.ggml.scores", n_vocab, 1, &kscores, err);
    if (st == EL_OK) st = token_array(g, "tokenizer.ggml.token_type", n_vocab, 0, &ktypes, err);
    if (st != EL_OK) return st;
    int prefix = 1;
    if (el_gguf_find(g, "tokenizer.ggml.add_space_prefix") &&
        !el_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &prefix))
        return el_err(err, EL_ERR_FORMAT, "%s: tokenizer.ggml.add_space_prefix is not a bool", path);
    int bos, eos, unk;
    if ((st = special_id(g, "tokenizer.ggml.bos_token_id", n_vocab, &bos, err)) != EL_OK) return st;
    if ((st = special_id(g, "tokenizer.ggml.eos_token_id", n_vocab, &eos, err)) != EL_OK) return st;
    if ((st = special_id(g, "tokenizer.ggml.unknown_token_id", n_vocab, &unk, err)) != EL_OK) return st;

    const char **pieces = el_calloc((size_t)n_vocab, sizeof *pieces);
    size_t *lens = el_calloc((size_t)n_vocab, sizeof *lens);
    float *scores = kscores ? el_calloc((size_t)n_vocab, sizeof *scores) : NULL;
    int *types = ktypes ? el_calloc((size_t)n_vocab, sizeof *types) : NULL;
    if (!pieces || !lens || (kscores && !scores) || (ktypes && !types)) {
        st = el_err(err, EL_ERR_NOMEM, "%s: out of memory for %d tokens", path, n_vocab);
        goto done;
    }
    for (int i = 0; i < n_vocab; i++) {
        const el_gguf_str s = tokens->strs[i];
        if (s.len > TOK_MAX_TEXT) {
            st = el_err(err, EL_ERR_RANGE, "%s: token %d is %llu bytes long", path, i, (unsigned long long)s.len);
            goto done;
        }
        pieces[i] = s.ptr;
        lens[i] = (size_t)s.len;
        if (scores) {
            double v = NAN;
            if (!el_gguf_arr_f64(kscores, (uint64_t)i, &v) || !isfinite(v) || fabs(v) > 3.4e38) {
                st = el_err(err, EL_ERR_FORMAT, "%s: token %d has score %g, expected a finite float", path, i, v);
                goto done;
            }
            scores[i] = (float)v;
        }
        if (types) {
            int64_t v = 0;
            if (!el_gguf_arr_i64(ktypes, (uint64_t)i, &v) || v < EL_TOKEN_NORMAL || v > EL_TOKEN_BYTE) {
                st = el_err(err, EL_ERR_FORMAT, "%s: token %d has type %lld, expected 1..6", path, i, (long long)v);
                goto done;
            }
            types[i] = (int)v;
        }
    }
    st = el_tokenizer_new_spm(n_vocab, pieces, lens, scores, types, bos, eos, unk, out, err);
    if (st != EL_OK) {
        if (err) {
            char msg[sizeof err->msg];
            memcpy(msg, err->msg, sizeof msg);
            el_err(err, st, "%s: %s", path, strncmp(msg, "tokenizer: ", 11) == 0 ? msg + 11 : msg);
        }
        goto done;
    }
    el_tokenizer_set_add_space_prefix(*out, prefix);
done:
    free(pieces);
    free(lens);
    free(scores);
    free(types);
    return st;
}
