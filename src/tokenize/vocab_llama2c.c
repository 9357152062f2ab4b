// Loader for llama2.c tokenizer files: int32 max_token_length, then per token
// f32 score, int32 len, len bytes. The file does not store the vocabulary size
// (the model does) nor token types, and writes spaces as ' ' rather than "▁".
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

// Tokenizer files are a few hundred KB; anything past this is not one.
#define LLAMA2C_MAX_FILE ((size_t)1 << 30)

static int32_t rd_i32(const unsigned char *p) {
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    int32_t v;
    memcpy(&v, &u, sizeof v);
    return v;
}

static float rd_f32(const unsigned char *p) {
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    float v;
    memcpy(&v, &u, sizeof v);
    return v;
}

static int is_byte_piece(const unsigned char *p, size_t n) {
    if (n != 6 || memcmp(p, "<0x", 3) != 0 || p[5] != '>') return 0;
    for (int k = 3; k < 5; k++) {
        unsigned char c = p[k];
        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f'))) return 0;
    }
    return 1;
}

el_status el_tokenizer_load_llama2c_memory(const void *data, size_t size, const char *name, int n_vocab,
                                           el_tokenizer **out, el_error *err) {
    if (!name) name = "(memory)";
    if (!out) return el_err(err, EL_ERR_ARG, "%s: out is NULL", name);
    *out = NULL;
    if (!data && size) return el_err(err, EL_ERR_ARG, "%s: data is NULL", name);
    const unsigned char *p = data;
    if (n_vocab == 0) {
        // Not given (no model to say): the file's own token count, which must
        // then end exactly at a token boundary.
        size_t at = 4;
        if (size < 4) return el_err(err, EL_ERR_FORMAT, "%s: truncated: %zu bytes, too short for the header", name, size);
        while (at < size && n_vocab <= TOK_MAX_VOCAB) {
            if (size - at < 8) return el_err(err, EL_ERR_FORMAT, "%s: truncated inside token %d", name, n_vocab);
            int32_t len = rd_i32(p + at + 4);
            if (len < 0 || (size_t)len > size - at - 8)
                return el_err(err, EL_ERR_FORMAT, "%s: token %d has length %d but only %zu bytes are left", name,
                              n_vocab, (int)len, size - at - 8);
            at += 8 + (size_t)len;
            n_vocab++;
        }
    }
    // ids 0, 1, 2 are <unk>, <s>, </s> in every llama2.c vocabulary.
    if (n_vocab < 3 || n_vocab > TOK_MAX_VOCAB)
        return el_err(err, EL_ERR_RANGE, "%s: vocabulary size %d is out of range [3, %d]", name, n_vocab,
                      TOK_MAX_VOCAB);
    if (size < 4) return el_err(err, EL_ERR_FORMAT, "%s: truncated: %zu bytes, too short for the header", name, size);
    int32_t max_len = rd_i32(p);
    if (max_len < 0) return el_err(err, EL_ERR_FORMAT, "%s: max_token_length is %d", name, (int)max_len);

    // First pass: check every length against the bytes left, and size the
    // converted pieces, before allocating anything in proportion to n_vocab.
    size_t pos = 4, total = 0;
    for (int i = 0; i < n_vocab; i++) {
        if (size - pos < 8)
            return el_err(err, EL_ERR_FORMAT, "%s: truncated at token %d: the file holds %d of %d tokens", name, i, i,
                          n_vocab);
        float score = rd_f32(p + pos);
        int32_t len = rd_i32(p + pos + 4);
        pos += 8;
        if (!isfinite(score)) return el_err(err, EL_ERR_FORMAT, "%s: token %d has a non-finite score", name, i);
        if (len < 0) return el_err(err, EL_ERR_FORMAT, "%s: token %d has negative length %d", name, i, (int)len);
        if ((size_t)len > size - pos)
            return el_err(err, EL_ERR_FORMAT, "%s: token %d has length %d but only %zu bytes are left", name, i,
                          (int)len, size - pos);
        size_t spaces = 0;
        for (int32_t k = 0; k < len; k++) spaces += p[pos + (size_t)k] == ' ';
        total += (size_t)len + spaces * (TOK_SPACE_LEN - 1);  // bounded by 3 * size
        pos += (size_t)len;
    }
    if (total > TOK_MAX_TEXT)
        return el_err(err, EL_ERR_RANGE, "%s: pieces exceed %zu bytes in total", name, TOK_MAX_TEXT);

    char *text = el_malloc(total);
    const char **pieces = el_calloc((size_t)n_vocab, sizeof *pieces);
    size_t *lens = el_calloc((size_t)n_vocab, sizeof *lens);
    float *scores = el_calloc((size_t)n_vocab, sizeof *scores);
    int *types = el_calloc((size_t)n_vocab, sizeof *types);
    el_status st = EL_OK;
    if (!text || !pieces || !lens || !scores || !types) {
        st = el_err(err, EL_ERR_NOMEM, "%s: out of memory for %d tokens", name, n_vocab);
        goto done;
    }
    pos = 4;
    size_t w = 0;
    for (int i = 0; i < n_vocab; i++) {
        scores[i] = rd_f32(p + pos);
        size_t len = (size_t)rd_i32(p + pos + 4);
        pos += 8;
        const unsigned char *src = p + pos;
        pieces[i] = text + w;
        for (size_t k = 0; k < len; k++) {
            if (src[k] == ' ') {
                memcpy(text + w, TOK_SPACE, TOK_SPACE_LEN);
                w += TOK_SPACE_LEN;
            } else {
                text[w++] = (char)src[k];
            }
        }
        lens[i] = (size_t)(text + w - pieces[i]);
        if (i == 0) types[i] = EL_TOKEN_UNKNOWN;
        else if (i <= 2) types[i] = EL_TOKEN_CONTROL;
        else if (is_byte_piece(src, len)) types[i] = EL_TOKEN_BYTE;
        else types[i] = EL_TOKEN_NORMAL;
        pos += len;
    }
    st = el_tokenizer_new_spm(n_vocab, pieces, lens, scores, types, 1, 2, 0, out, err);
    if (st != EL_OK && err) {
        // Name the file: the builder only knows token indices.
        char msg[sizeof err->msg];
        memcpy(msg, err->msg, sizeof msg);
        const char *m = strncmp(msg, "tokenizer: ", 11) == 0 ? msg + 11 : msg;
        el_err(err, st, "%s: %s", name, m);
    }
done:
    free(text);
    free(pieces);
    free(lens);
    free(scores);
    free(types);
    return st;
}

el_status el_tokenizer_load_llama2c(const char *path, int n_vocab, el_tokenizer **out, el_error *err) {
    if (!out) return el_err(err, EL_ERR_ARG, "%s: out is NULL", path);
    *out = NULL;
    char *data;
    size_t size;
    el_status st = el_read_file(path, LLAMA2C_MAX_FILE, &data, &size, err);
    if (st != EL_OK) return st;
    st = el_tokenizer_load_llama2c_memory(data, size, path, n_vocab, out, err);
    free(data);
    return st;
}
