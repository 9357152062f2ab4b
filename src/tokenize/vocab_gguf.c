// Tokenizer from GGUF metadata (tokenizer.ggml.*): the SentencePiece ("llama")
// and byte-level BPE ("gpt2", with tokenizer.ggml.merges and .pre) models. The
// arrays point into the mapped file and are copied into the tokenizer, so the
// GGUF may be closed afterwards.
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
    int bpe = m.len == 4 && memcmp(m.ptr, "gpt2", 4) == 0;
    if (!bpe && (m.len != 5 || memcmp(m.ptr, "llama", 5) != 0))
        return el_err(err, EL_ERR_UNSUPPORTED,
                      "%s: tokenizer model \"%.*s\" is not supported (only \"llama\" and \"gpt2\")", path,
                      (int)(m.len < 64 ? m.len : 64), m.ptr);
    el_pretok pre = EL_PRETOK_GPT2;  // what a gpt2 vocabulary without .pre was made with
    const el_gguf_kv *kpre = bpe ? el_gguf_find(g, "tokenizer.ggml.pre") : NULL;
    if (kpre) {
        if (kpre->type != EL_GGUF_STRING)
            return el_err(err, EL_ERR_FORMAT, "%s: tokenizer.ggml.pre has type %s, expected string", path,
                          el_gguf_type_name(kpre->type));
        pre = el_pretok_from_name(kpre->v.str.ptr, (size_t)kpre->v.str.len);
        if (pre == EL_PRETOK_NONE)
            return el_err(err, EL_ERR_UNSUPPORTED,
                          "%s: pre-tokenizer tokenizer.ggml.pre = \"%.*s\" is not supported (known: gpt-2, default, "
                          "llama-bpe, llama3, qwen2, smollm)",
                          path, (int)(kpre->v.str.len < 64 ? kpre->v.str.len : 64), kpre->v.str.ptr);
    }
    const el_gguf_kv *kmerges = NULL;
    if (bpe) {
        kmerges = el_gguf_find(g, "tokenizer.ggml.merges");
        if (!kmerges) return el_err(err, EL_ERR_FORMAT, "%s: no tokenizer.ggml.merges for the gpt2 tokenizer", path);
        if (kmerges->type != EL_GGUF_ARRAY || kmerges->arr_type != EL_GGUF_STRING || !kmerges->strs)
            return el_err(err, EL_ERR_FORMAT, "%s: tokenizer.ggml.merges is not an array of strings", path);
        if (kmerges->arr_n > TOK_MAX_VOCAB)
            return el_err(err, EL_ERR_RANGE, "%s: tokenizer.ggml.merges has %llu entries, more than %d", path,
                          (unsigned long long)kmerges->arr_n, TOK_MAX_VOCAB);
    }

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
    // Without the key: SentencePiece vocabularies want BOS, byte-level ones
    // do not, except Llama 3's (its tokenizer.json adds <|begin_of_text|> by
    // a post-processor that GGUF converters do not always carry over)
    int add_bos = !bpe || pre == EL_PRETOK_LLAMA3, add_eos = 0;
    if (el_gguf_find(g, "tokenizer.ggml.add_bos_token") && !el_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos))
        return el_err(err, EL_ERR_FORMAT, "%s: tokenizer.ggml.add_bos_token is not a bool", path);
    if (el_gguf_find(g, "tokenizer.ggml.add_eos_token") && !el_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &add_eos))
        return el_err(err, EL_ERR_FORMAT, "%s: tokenizer.ggml.add_eos_token is not a bool", path);
    int bos, eos, unk, pad;
    if ((st = special_id(g, "tokenizer.ggml.bos_token_id", n_vocab, &bos, err)) != EL_OK) return st;
    if ((st = special_id(g, "tokenizer.ggml.eos_token_id", n_vocab, &eos, err)) != EL_OK) return st;
    if ((st = special_id(g, "tokenizer.ggml.unknown_token_id", n_vocab, &unk, err)) != EL_OK) return st;
    if ((st = special_id(g, "tokenizer.ggml.padding_token_id", n_vocab, &pad, err)) != EL_OK) return st;
    if (add_bos && bos < 0)
        return el_err(err, EL_ERR_FORMAT, "%s: tokenizer.ggml.add_bos_token is set but there is no bos_token_id", path);
    if (add_eos && eos < 0)
        return el_err(err, EL_ERR_FORMAT, "%s: tokenizer.ggml.add_eos_token is set but there is no eos_token_id", path);

    const char **pieces = el_calloc((size_t)n_vocab, sizeof *pieces);
    size_t *lens = el_calloc((size_t)n_vocab, sizeof *lens);
    float *scores = kscores ? el_calloc((size_t)n_vocab, sizeof *scores) : NULL;
    int *types = ktypes ? el_calloc((size_t)n_vocab, sizeof *types) : NULL;
    int n_merges = kmerges ? (int)kmerges->arr_n : 0;
    const char **mstr = kmerges ? el_calloc(n_merges ? (size_t)n_merges : 1, sizeof *mstr) : NULL;
    size_t *mlen = kmerges ? el_calloc(n_merges ? (size_t)n_merges : 1, sizeof *mlen) : NULL;
    if (!pieces || !lens || (kscores && !scores) || (ktypes && !types) || (kmerges && (!mstr || !mlen))) {
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
    for (int i = 0; i < n_merges; i++) {
        const el_gguf_str ms = kmerges->strs[i];
        if (ms.len > TOK_MAX_TEXT) {
            st = el_err(err, EL_ERR_RANGE, "%s: merge %d is %llu bytes long", path, i, (unsigned long long)ms.len);
            goto done;
        }
        mstr[i] = ms.ptr;
        mlen[i] = (size_t)ms.len;
    }
    if (bpe)
        st = el_tokenizer_new_bpe(n_vocab, pieces, lens, types, n_merges, mstr, mlen, pre, bos, eos, unk, out, err);
    else
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
    el_tokenizer_set_add_bos(*out, add_bos);
    el_tokenizer_set_add_eos(*out, add_eos);
done:
    free(mstr);
    free(mlen);
    free(pieces);
    free(lens);
    free(scores);
    free(types);
    return st;
}
