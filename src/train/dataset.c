// Training data: plain text cut into context windows, or JSON lines of
// {"prompt": ..., "completion": ...} with the loss on the completion only.
// Input files are hostile: each JSON line goes through the strict reader and
// errors name file:line.
#include <stdlib.h>
#include <string.h>

#include "edgellm/json.h"
#include "edgellm/train.h"

#define MAX_DATA_BYTES (256u << 20)

struct el_dataset {
    int T;
    int n;         // samples
    int *tokens;   // [n, T+1]
    float *mask;   // [n, T]: weight of target t (predicting tokens[t+1])
    uint64_t n_tok;
    int truncated;
};

void el_dataset_free(el_dataset *d) {
    if (!d) return;
    free(d->tokens);
    free(d->mask);
    free(d);
}
int el_dataset_size(const el_dataset *d) { return d->n; }
uint64_t el_dataset_tokens(const el_dataset *d) { return d->n_tok; }
int el_dataset_truncated(const el_dataset *d) { return d->truncated; }

void el_dataset_get(const el_dataset *d, int i, int *tokens, int *targets, float *mask) {
    const int *s = d->tokens + (size_t)i * (d->T + 1);
    const float *w = d->mask + (size_t)i * d->T;
    for (int t = 0; t < d->T; t++) {
        tokens[t] = s[t] >= 0 ? s[t] : 0;
        targets[t] = w[t] > 0 ? s[t + 1] : -1;
        mask[t] = w[t];
    }
}

// Appends one sample slot; tokens -1 = padding.
static el_status grow(el_dataset *d, int *cap, el_error *err) {
    if (d->n < *cap) return EL_OK;
    int nc = *cap ? *cap * 2 : 64;
    if (nc > (1 << 24)) return el_err(err, EL_ERR_RANGE, "more than %d training samples", 1 << 24);
    int *t = realloc(d->tokens, (size_t)nc * (d->T + 1) * sizeof(int));
    if (t) d->tokens = t;
    float *m = realloc(d->mask, (size_t)nc * d->T * sizeof(float));
    if (m) d->mask = m;
    if (!t || !m) return el_err(err, EL_ERR_NOMEM, "out of memory for training samples");
    *cap = nc;
    return EL_OK;
}

// ---------------------------------------------------------------- JSON

// One line through the project's strict JSON reader (core/json.c): an object
// whose "prompt" and "completion" members are strings (other members may be
// anything and are ignored); duplicates, NUL bytes and bad UTF-8 are refused.
el_status el_json_prompt_completion(const char *line, size_t len, char **prompt, char **completion, char *why,
                                    size_t why_size) {
    *prompt = *completion = NULL;
    why[0] = 0;
    el_json *j;
    el_error e;
    if (el_json_parse(line, len, "", &j, &e)) {
        int ln, col, off = 0;  // the reader says ":1:COL: what" for a one-line text
        if (sscanf(e.msg, ":%d:%d: %n", &ln, &col, &off) == 2 && off > 0)
            snprintf(why, why_size, "%s at column %d", e.msg + off, col);
        else
            snprintf(why, why_size, "%s", e.msg);
        return EL_ERR_FORMAT;
    }
    const el_json *pv = NULL, *cv = NULL;
    el_status st = EL_OK;
    if (!el_json_is(j, EL_JSON_OBJECT)) {
        snprintf(why, why_size, "expected an object {\"prompt\": ..., \"completion\": ...}");
        st = EL_ERR_FORMAT;
    }
    for (const el_json *v = el_json_first(j); !st && v; v = el_json_next(j, v)) {
        const char *key = el_json_key(j, v);
        const el_json **slot = !strcmp(key, "prompt") ? &pv : !strcmp(key, "completion") ? &cv : NULL;
        if (!slot) continue;
        if (*slot) snprintf(why, why_size, "duplicate key \"%s\"", key), st = EL_ERR_FORMAT;
        else if (!el_json_is(v, EL_JSON_STRING))
            snprintf(why, why_size, "the value of \"%s\" is not a string", key), st = EL_ERR_FORMAT;
        else if (strlen(el_json_str(v)) != el_json_strlen(v))
            snprintf(why, why_size, "\"%s\" contains a NUL character", key), st = EL_ERR_FORMAT;
        else if (!el_utf8_valid(el_json_str(v), el_json_strlen(v)))
            snprintf(why, why_size, "\"%s\" is not valid UTF-8", key), st = EL_ERR_FORMAT;
        *slot = v;
    }
    if (!st && (!pv || !cv)) snprintf(why, why_size, "missing \"%s\"", pv ? "completion" : "prompt"), st = EL_ERR_FORMAT;
    if (!st) {
        *prompt = strdup(el_json_str(pv));
        *completion = strdup(el_json_str(cv));
        if (!*prompt || !*completion) {
            free(*prompt), free(*completion);
            *prompt = *completion = NULL;
            snprintf(why, why_size, "out of memory");
            st = EL_ERR_NOMEM;
        }
    }
    el_json_free(j);
    return st;
}

// ---------------------------------------------------------------- loaders

static el_status load_text(el_dataset *d, const char *path, const char *text, size_t len, const el_tokenizer *tok,
                           el_error *err) {
    // Tokenize paragraph by paragraph into one stream, each paragraph opened
    // by BOS when the tokenizer adds BOS to a prompt, else (GPT-2, Qwen2
    // vocabularies) closed by EOS, the document separator those models know.
    int add_bos = el_tokenizer_add_bos(tok), eos = add_bos ? -1 : el_tokenizer_eos(tok);
    int *stream = NULL;
    size_t ns = 0, cap = 0;
    el_status st = EL_OK;
    size_t i = 0;
    while (i < len && !st) {
        while (i < len && (text[i] == '\n' || text[i] == '\r')) i++;
        size_t start = i;
        while (i < len && !(text[i] == '\n' && i + 1 < len && (text[i + 1] == '\n' || text[i + 1] == '\r'))) i++;
        size_t end = i;
        while (end > start && (text[end - 1] == '\n' || text[end - 1] == '\r' || text[end - 1] == ' ')) end--;
        if (end == start) continue;
        // paragraphs join their lines with spaces
        char *para = malloc(end - start + 1);
        if (!para) return el_err(err, EL_ERR_NOMEM, "out of memory");
        for (size_t k = 0; k < end - start; k++) para[k] = text[start + k] == '\n' ? ' ' : text[start + k];
        int *ids = NULL, nid = 0;
        st = el_tokenizer_encode(tok, para, end - start, add_bos, &ids, &nid, err);
        free(para);
        if (st) break;
        if (ns + (size_t)nid + 1 > cap) {
            size_t nc = cap ? cap * 2 : 4096;
            while (nc < ns + (size_t)nid + 1) nc *= 2;
            int *s2 = realloc(stream, nc * sizeof(int));
            if (!s2) {
                free(ids);
                free(stream);
                return el_err(err, EL_ERR_NOMEM, "out of memory");
            }
            stream = s2;
            cap = nc;
        }
        memcpy(stream + ns, ids, (size_t)nid * sizeof(int));
        ns += (size_t)nid;
        if (eos >= 0) stream[ns++] = eos;
        free(ids);
    }
    int scap = 0;
    for (size_t at = 0; !st && at + 1 < ns; at += (size_t)d->T) {
        if ((st = grow(d, &scap, err))) break;
        int *s = d->tokens + (size_t)d->n * (d->T + 1);
        float *w = d->mask + (size_t)d->n * d->T;
        for (int t = 0; t <= d->T; t++) s[t] = at + t < ns ? stream[at + t] : -1;
        for (int t = 0; t < d->T; t++) {
            w[t] = s[t + 1] >= 0 ? 1.0f : 0.0f;
            d->n_tok += w[t] > 0;
        }
        d->n++;
    }
    free(stream);
    if (!st && d->n == 0) st = el_err(err, EL_ERR_FORMAT, "%s: no training text (the dataset is empty)", path);
    return st;
}

static el_status load_jsonl(el_dataset *d, const char *path, const char *text, size_t len, const el_tokenizer *tok,
                            el_error *err) {
    el_status st = EL_OK;
    // An example is [BOS] prompt completion EOS, with BOS only when the
    // tokenizer adds it to a prompt.
    int scap = 0, line = 0, bos = el_tokenizer_add_bos(tok) ? el_tokenizer_bos(tok) : -1, eos = el_tokenizer_eos(tok);
    size_t i = 0;
    while (i < len && !st) {
        line++;
        size_t start = i;
        while (i < len && text[i] != '\n') i++;
        size_t end = i;
        if (i < len) i++;
        size_t k = start;
        while (k < end && (text[k] == ' ' || text[k] == '\t' || text[k] == '\r')) k++;
        if (k == end) continue;  // blank line
        char *prompt, *completion, why[160];
        if (el_json_prompt_completion(text + start, end - start, &prompt, &completion, why, sizeof why))
            return el_err(err, EL_ERR_FORMAT, "%s:%d: %s", path, line, why);
        int *pi = NULL, *ci = NULL, np = 0, nc = 0;
        st = el_tokenizer_encode(tok, prompt, strlen(prompt), 0, &pi, &np, err);
        if (!st) st = el_tokenizer_encode(tok, completion, strlen(completion), 0, &ci, &nc, err);
        free(prompt);
        free(completion);
        if (!st && nc == 0) st = el_err(err, EL_ERR_FORMAT, "%s:%d: the completion is empty", path, line);
        if (!st) st = grow(d, &scap, err);
        if (!st) {
            int *s = d->tokens + (size_t)d->n * (d->T + 1);
            float *w = d->mask + (size_t)d->n * d->T;
            int total = (bos >= 0) + np + nc + 1, at = 0;
            if (total > d->T + 1) d->truncated++;
            if (bos >= 0) s[at++] = bos;
            for (int j = 0; j < np && at <= d->T; j++) s[at++] = pi[j];
            int first_completion = at;
            for (int j = 0; j < nc && at <= d->T; j++) s[at++] = ci[j];
            if (at <= d->T) s[at++] = eos;
            for (; at <= d->T; at++) s[at] = -1;
            // target t is token t+1: weighted when token t+1 is part of the completion
            for (int t = 0; t < d->T; t++) {
                w[t] = t + 1 >= first_completion && s[t + 1] >= 0 ? 1.0f : 0.0f;
                d->n_tok += w[t] > 0;
            }
            d->n++;
        }
        free(pi);
        free(ci);
    }
    if (!st && d->n == 0) st = el_err(err, EL_ERR_FORMAT, "%s: no examples (the dataset is empty)", path);
    if (!st && d->n_tok == 0)
        st = el_err(err, EL_ERR_FORMAT, "%s: no completion token fits in a context of %d", path, d->T);
    return st;
}

el_status el_dataset_load(const char *path, el_data_format fmt, const el_tokenizer *tok, int T, el_dataset **out,
                          el_error *err) {
    *out = NULL;
    if (T < 1) return el_err(err, EL_ERR_RANGE, "context %d is too small", T);
    char *text;
    size_t len;
    el_status st = el_read_file(path, MAX_DATA_BYTES, &text, &len, err);
    if (st) return st;
    size_t bad = el_utf8_check(text, len);
    if (bad < len) {
        int line = 1;
        for (size_t k = 0; k < bad; k++) line += text[k] == '\n';
        free(text);
        return el_err(err, EL_ERR_FORMAT, "%s:%d: invalid UTF-8 (byte offset %zu)", path, line, bad);
    }
    el_dataset *d = calloc(1, sizeof *d);
    if (!d) {
        free(text);
        return el_err(err, EL_ERR_NOMEM, "out of memory");
    }
    d->T = T;
    st = fmt == EL_DATA_JSONL ? load_jsonl(d, path, text, len, tok, err) : load_text(d, path, text, len, tok, err);
    free(text);
    if (st) {
        el_dataset_free(d);
        return st;
    }
    *out = d;
    return EL_OK;
}
