// config.json and tokenizer.json of Hugging Face folders, read with el_json
// and checked field by field.
#include "edgellm/hf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/json.h"
#include "edgellm/safetensors.h"

// ---------------------------------------------------------------- config.json

static el_status cfg_int(const el_json *c, const char *path, const char *key, int required, int dflt, int max, int *out,
                         el_error *err) {
    const el_json *j = el_json_get(c, key);
    if (!j || el_json_is(j, EL_JSON_NULL)) {
        if (required) return el_err(err, EL_ERR_FORMAT, "%s: field %s is missing", path, key);
        *out = dflt;
        return EL_OK;
    }
    double d = el_json_is(j, EL_JSON_NUMBER) ? el_json_num(j, -1) : -1;
    if (!(d >= 1 && d <= max) || floor(d) != d)
        return el_err(err, EL_ERR_FORMAT, "%s: field %s is not an integer in 1..%d", path, key, max);
    *out = (int)d;
    return EL_OK;
}

static el_status cfg_num(const el_json *c, const char *path, const char *key, double dflt, double lo, double hi,
                         double *out, el_error *err) {
    const el_json *j = el_json_get(c, key);
    if (!j || el_json_is(j, EL_JSON_NULL)) {
        *out = dflt;
        return EL_OK;
    }
    if (!el_json_is(j, EL_JSON_NUMBER) || !(el_json_num(j, -1) >= lo && el_json_num(j, -1) <= hi))
        return el_err(err, EL_ERR_FORMAT, "%s: field %s is not a number in %g..%g", path, key, lo, hi);
    *out = el_json_num(j, -1);
    return EL_OK;
}

// bos_token_id / eos_token_id: an id, or a list whose first entry is used; -1 if absent.
static int token_field(const el_json *c, const char *key) {
    const el_json *j = el_json_get(c, key);
    if (el_json_is(j, EL_JSON_ARRAY)) j = el_json_first(j);
    if (!el_json_is(j, EL_JSON_NUMBER) || !(el_json_num(j, -1) >= 0 && el_json_num(j, -1) < (1 << 24))) return -1;
    return (int)el_json_num(j, -1);
}

static el_status rope_scaling(const el_json *rs, const char *path, el_hf_config *c, el_error *err) {
    if (!rs || el_json_is(rs, EL_JSON_NULL)) return EL_OK;
    if (!el_json_is(rs, EL_JSON_OBJECT)) return el_err(err, EL_ERR_FORMAT, "%s: rope_scaling is not an object", path);
    const el_json *t = el_json_get(rs, "rope_type");
    if (!t) t = el_json_get(rs, "type");
    const char *ts = el_json_is(t, EL_JSON_STRING) ? el_json_str(t) : "?";
    if (!strcmp(ts, "default")) return EL_OK;
    if (strcmp(ts, "linear") && strcmp(ts, "llama3"))
        return el_err(err, EL_ERR_UNSUPPORTED, "%s: rope_scaling type '%.32s' is not supported (linear, llama3)", path,
                      ts);
    c->scaling = !strcmp(ts, "linear") ? EL_HF_ROPE_LINEAR : EL_HF_ROPE_LLAMA3;
    el_status s = cfg_num(rs, path, "factor", 0, 1, 1024, &c->factor, err);
    if (s) return s;
    if (c->factor == 0) return el_err(err, EL_ERR_FORMAT, "%s: rope_scaling.factor is missing", path);
    if (c->scaling != EL_HF_ROPE_LLAMA3) return EL_OK;
    if ((s = cfg_num(rs, path, "low_freq_factor", 1, 1e-3, 1e3, &c->low, err)) ||
        (s = cfg_num(rs, path, "high_freq_factor", 4, 1e-3, 1e3, &c->high, err)) ||
        (s = cfg_int(rs, path, "original_max_position_embeddings", 1, 0, 1 << 24, &c->orig_ctx, err)))
        return s;
    if (!(c->high > c->low))
        return el_err(err, EL_ERR_FORMAT, "%s: rope_scaling high_freq_factor %g is not above low_freq_factor %g", path,
                      c->high, c->low);
    return EL_OK;
}

el_status el_hf_config_parse(const char *text, size_t len, const char *path, el_hf_config *c, el_error *err) {
    memset(c, 0, sizeof *c);
    el_json *j;
    el_status s = el_json_parse(text, len, path, &j, err);
    if (s) return s;
    if (!el_json_is(j, EL_JSON_OBJECT)) {
        el_json_free(j);
        return el_err(err, EL_ERR_FORMAT, "%s: not a JSON object", path);
    }
    const el_json *archs = el_json_get(j, "architectures");
    const el_json *mt = el_json_get(j, "model_type");
    const char *a = el_json_is(archs, EL_JSON_ARRAY) && el_json_is(el_json_first(archs), EL_JSON_STRING) ? el_json_str(el_json_first(archs))
                  : el_json_is(mt, EL_JSON_STRING) ? el_json_str(mt) : NULL;
    if (!a) {
        s = el_err(err, EL_ERR_FORMAT, "%s: neither architectures nor model_type names the architecture", path);
    } else if (!strcmp(a, "LlamaForCausalLM") || !strcmp(a, "llama")) {
        c->arch = EL_HF_LLAMA;
    } else if (!strcmp(a, "MistralForCausalLM") || !strcmp(a, "mistral")) {
        c->arch = EL_HF_MISTRAL;
    } else if (!strcmp(a, "Qwen2ForCausalLM") || !strcmp(a, "qwen2")) {
        c->arch = EL_HF_QWEN2;
    } else {
        s = el_err(err, EL_ERR_UNSUPPORTED,
                   "%s: architecture '%.64s' is not supported (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)",
                   path, a);
    }
    int hd = 0;
    if (!s) s = cfg_int(j, path, "hidden_size", 1, 0, 1 << 20, &c->dim, err);
    if (!s) s = cfg_int(j, path, "num_hidden_layers", 1, 0, 4096, &c->layers, err);
    if (!s) s = cfg_int(j, path, "num_attention_heads", 1, 0, 4096, &c->heads, err);
    if (!s) s = cfg_int(j, path, "num_key_value_heads", 0, c->heads, 4096, &c->kv_heads, err);
    if (!s) s = cfg_int(j, path, "intermediate_size", 1, 0, 1 << 22, &c->ff, err);
    if (!s) s = cfg_int(j, path, "vocab_size", 1, 0, 1 << 24, &c->vocab, err);
    if (!s) s = cfg_int(j, path, "max_position_embeddings", 0, 2048, 1 << 24, &c->ctx, err);
    if (!s) s = cfg_int(j, path, "head_dim", 0, c->heads ? c->dim / c->heads : 0, 1 << 16, &hd, err);
    if (!s) s = cfg_num(j, path, "rms_norm_eps", 1e-6, 1e-12, 0.1, &c->eps, err);
    if (!s) s = cfg_num(j, path, "rope_theta", 10000, 1.001, 1e12, &c->theta, err);
    c->bos = token_field(j, "bos_token_id"), c->eos = token_field(j, "eos_token_id");
    if (!s) {
        if (c->dim % c->heads || hd != c->dim / c->heads || hd % 2)
            s = el_err(err, EL_ERR_UNSUPPORTED, "%s: head size %d with hidden_size %d and %d heads is not supported", path,
                       hd, c->dim, c->heads);
        else if (c->kv_heads > c->heads || c->heads % c->kv_heads)
            s = el_err(err, EL_ERR_FORMAT, "%s: num_key_value_heads %d does not divide num_attention_heads %d", path,
                       c->kv_heads, c->heads);
    }
    c->tied = el_json_bool(el_json_get(j, "tie_word_embeddings"), 0);
    const el_json *sw = el_json_get(j, "sliding_window");
    // Llama/Mistral with projection biases: our llama layers have none, and
    // dropping the tensors would give a different model without a word
    if (!s && c->arch != EL_HF_QWEN2 &&
        (el_json_bool(el_json_get(j, "attention_bias"), 0) ||
         el_json_bool(el_json_get(j, "mlp_bias"), 0)))
        s = el_err(err, EL_ERR_UNSUPPORTED, "%s: attention_bias / mlp_bias on a Llama model is not supported", path);
    if (!s && c->arch == EL_HF_QWEN2 && el_json_bool(el_json_get(j, "use_sliding_window"), 0))
        s = el_err(err, EL_ERR_UNSUPPORTED, "%s: Qwen2 use_sliding_window (per-layer windows) is not supported", path);
    if (!s && c->arch != EL_HF_QWEN2 && sw && !el_json_is(sw, EL_JSON_NULL))
        s = cfg_int(j, path, "sliding_window", 1, 0, 1 << 30, &c->window, err);
    if (!s) s = rope_scaling(el_json_get(j, "rope_scaling"), path, c, err);
    el_json_free(j);
    return s;
}

// ---------------------------------------------------------------- tokenizer.json

static const struct {
    const char *pre, *regex;
} known_pre[] = {
    {"gpt-2", "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"},
    {"llama-bpe",
     "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
     "\\s+(?!\\S)|\\s+"},
    {"qwen2",
     "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
     "\\s+(?!\\S)|\\s+"},
};

typedef struct {
    int byte_level, digits;  // ByteLevel seen; Digits with individual_digits seen
    const char *regex;       // the Split regex
    const char *unknown;     // a pre-tokenizer type we do not know
} pre_scan;

// Walks a pre_tokenizer (possibly a Sequence) for ByteLevel, Digits and a Split regex.
static void scan_pre(const el_json *p, int depth, pre_scan *ps) {
    const el_json *t = el_json_get(p, "type");
    if (!el_json_is(t, EL_JSON_STRING) || depth > 8) return;
    if (!strcmp(el_json_str(t), "ByteLevel")) {
        ps->byte_level = 1;
        // a space before the first word changes every first token: not what
        // the GGUF pre-tokenizers do
        if (el_json_bool(el_json_get(p, "add_prefix_space"), 0) && !ps->unknown)
            ps->unknown = "ByteLevel with add_prefix_space";
    }
    else if (!strcmp(el_json_str(t), "Digits") &&
             el_json_bool(el_json_get(p, "individual_digits"), 0))
        ps->digits = 1;
    else if (strcmp(el_json_str(t), "Split") && strcmp(el_json_str(t), "Sequence") && !ps->unknown)
        ps->unknown = el_json_str(t);
    if (!strcmp(el_json_str(t), "Split")) {
        const el_json *pat = el_json_get(p, "pattern");
        const el_json *r = el_json_get(pat, "Regex");
        const el_json *beh = el_json_get(p, "behavior");
        if (el_json_is(r, EL_JSON_STRING)) ps->regex = el_json_str(r);
        else if (!ps->unknown) ps->unknown = "Split without a Regex pattern";
        // the known expressions are used as matches (Isolated), never inverted
        if (el_json_bool(el_json_get(p, "invert"), 0) && !ps->unknown)
            ps->unknown = "Split with invert";
        if (el_json_is(beh, EL_JSON_STRING) && strcmp(el_json_str(beh), "Isolated") && !ps->unknown)
            ps->unknown = "Split with a behavior other than Isolated";
    }
    if (!strcmp(el_json_str(t), "Sequence")) {
        const el_json *seq = el_json_get(p, "pretokenizers");
        int n = 0;
        for (const el_json *e = el_json_first(seq); e && n < 64; e = el_json_next(seq, e), n++)
            scan_pre(e, depth + 1, ps);
    }
}

// Whether a post-processor (possibly a Sequence) is a TemplateProcessing
// whose "single" template starts with a special token.
static int has_bos_template(const el_json *p, int depth) {
    const el_json *t = el_json_get(p, "type");
    if (!el_json_is(t, EL_JSON_STRING) || depth > 8) return 0;
    if (!strcmp(el_json_str(t), "Sequence")) {
        const el_json *seq = el_json_get(p, "processors");
        int n = 0;
        for (const el_json *e = el_json_first(seq); e && n < 64; e = el_json_next(seq, e), n++)
            if (has_bos_template(e, depth + 1)) return 1;
        return 0;
    }
    if (strcmp(el_json_str(t), "TemplateProcessing")) return 0;
    const el_json *single = el_json_get(p, "single");
    const el_json *first = el_json_is(single, EL_JSON_ARRAY) ? el_json_first(single) : NULL;
    return first && el_json_get(first, "SpecialToken") != NULL;
}

static int is_byte_token(const char *s) {
    static const char hex[] = "0123456789ABCDEF";
    return strlen(s) == 6 && !strncmp(s, "<0x", 3) && s[5] == '>' && s[3] && strchr(hex, s[3]) && s[4] &&
           strchr(hex, s[4]);
}

// Token id of a special token named in tokenizer_config.json (string or {"content": ...}).
static int token_id(const el_hf_vocab *v, const el_json *j) {
    if (el_json_is(j, EL_JSON_OBJECT)) j = el_json_get(j, "content");
    if (!el_json_is(j, EL_JSON_STRING)) return -1;
    for (int i = 0; i < v->n; i++)
        if (!strcmp(v->tokens[i], el_json_str(j))) return i;
    return -1;
}

void el_hf_vocab_free(el_hf_vocab *v) {
    for (int i = 0; v->tokens && i < v->n; i++) free(v->tokens[i]);
    for (int i = 0; v->merges && i < v->n_merges; i++) free(v->merges[i]);
    free(v->tokens), free(v->lens), free(v->types), free(v->scores), free(v->merges), free(v->merge_lens);
    free(v->chat_template);
    memset(v, 0, sizeof *v);
}

// The vocab object, then added_tokens, by id.
static el_status read_tokens(const el_json *voc, const el_json *added, const char *path, int byte_fallback, el_hf_vocab *v,
                             el_error *err) {
    int n = v->n;
    for (int pass = 0; pass < 2; pass++) {
        const el_json *list = pass ? added : voc;
        if (pass && list && !el_json_is(list, EL_JSON_ARRAY))
            return el_err(err, EL_ERR_FORMAT, "%s: added_tokens is not an array", path);
        for (const el_json *e = el_json_first(list); e; e = el_json_next(list, e)) {
            const char *text = pass ? NULL : el_json_key(list, e);
            const el_json *idj = pass ? el_json_get(e, "id") : e;
            if (pass) {
                const el_json *ct = el_json_get(e, "content");
                text = el_json_is(ct, EL_JSON_STRING) ? el_json_str(ct) : NULL;
            }
            double d = el_json_is(idj, EL_JSON_NUMBER) ? el_json_num(idj, -1) : -1;
            if (!text || !(d >= 0 && d < n) || floor(d) != d)
                return el_err(err, EL_ERR_FORMAT, "%s: %s token '%.40s' has no id in 0..%d (vocab_size in config.json)",
                              path, pass ? "added" : "vocab", text ? text : "?", n - 1);
            int id = (int)d;
            if (v->tokens[id] && strcmp(v->tokens[id], text))
                return el_err(err, EL_ERR_FORMAT, "%s: token id %d is given to both '%.40s' and '%.40s'", path, id,
                              v->tokens[id], text);
            if (!v->tokens[id] && !(v->tokens[id] = strdup(text))) return el_err(err, EL_ERR_NOMEM, "%s: out of memory", path);
            v->lens[id] = strlen(text);
            v->scores[id] = -(float)id;  // rank order: lower ids merge first
            if (pass) v->types[id] = el_json_bool(el_json_get(e, "special"), 0) ? 3 : 4;
            else if (byte_fallback && is_byte_token(text)) v->types[id] = 6;
            else if (byte_fallback && !strcmp(text, "<unk>")) v->types[id] = 2, v->unk = id;
            else v->types[id] = 1;
        }
    }
    for (int i = 0; i < n; i++)
        if (!v->tokens[i]) {  // padding up to vocab_size (the embedding has these rows)
            char pad[32];
            snprintf(pad, sizeof pad, "[PAD%d]", i);
            if (!(v->tokens[i] = strdup(pad))) return el_err(err, EL_ERR_NOMEM, "%s: out of memory", path);
            v->lens[i] = strlen(pad);
            v->types[i] = 5;  // unused
        }
    return EL_OK;
}

static el_status read_merges(const el_json *merges, const char *path, el_hf_vocab *v, el_error *err) {
    if (merges && !el_json_is(merges, EL_JSON_ARRAY)) return el_err(err, EL_ERR_FORMAT, "%s: model.merges is not an array", path);
    int nm = (int)el_json_len(merges);
    v->merges = calloc((size_t)nm + 1, sizeof *v->merges);
    v->merge_lens = calloc((size_t)nm + 1, sizeof *v->merge_lens);
    if (!v->merges || !v->merge_lens) return el_err(err, EL_ERR_NOMEM, "%s: out of memory for %d merges", path, nm);
    for (const el_json *e = el_json_first(merges); e; e = el_json_next(merges, e)) {
        char *m = NULL;
        if (el_json_is(e, EL_JSON_STRING)) {
            m = strdup(el_json_str(e));
        } else if (el_json_is(e, EL_JSON_ARRAY) && el_json_len(e) == 2 && el_json_is(el_json_at(e, 0), EL_JSON_STRING) &&
                   el_json_is(el_json_at(e, 1), EL_JSON_STRING)) {
            const char *x = el_json_str(el_json_at(e, 0)), *y = el_json_str(el_json_at(e, 1));
            size_t a = strlen(x), b = strlen(y);
            if ((m = malloc(a + b + 2))) {
                memcpy(m, x, a);
                m[a] = ' ';
                memcpy(m + a + 1, y, b + 1);
            }
        } else {
            return el_err(err, EL_ERR_FORMAT, "%s: merge %d is neither \"a b\" nor [\"a\", \"b\"]", path, v->n_merges);
        }
        if (!m) return el_err(err, EL_ERR_NOMEM, "%s: out of memory", path);
        v->merge_lens[v->n_merges] = strlen(m);
        v->merges[v->n_merges++] = m;
    }
    return EL_OK;
}

static el_status read_tokenizer_config(const char *tc, size_t tc_len, const char *tc_name, el_hf_vocab *v,
                                       el_error *err) {
    el_json *j;
    el_status s = el_json_parse(tc, tc_len, tc_name, &j, err);
    if (s) return s;
    int id;
    if ((id = token_id(v, el_json_get(j, "bos_token"))) >= 0) v->bos = id;
    if ((id = token_id(v, el_json_get(j, "eos_token"))) >= 0) v->eos = id;
    const el_json *ab = el_json_get(j, "add_bos_token");
    if (el_json_is(ab, EL_JSON_BOOL)) v->add_bos = el_json_bool(ab, 0);
    const el_json *ct = el_json_get(j, "chat_template");
    if (el_json_is(ct, EL_JSON_ARRAY)) {  // named templates: [{"name": "default", "template": "..."}, ...]
        const el_json *pick = NULL;
        for (const el_json *e = el_json_first(ct); e; e = el_json_next(ct, e)) {
            const el_json *nm = el_json_get(e, "name");
            if (!pick || (el_json_is(nm, EL_JSON_STRING) && !strcmp(el_json_str(nm), "default"))) pick = e;
        }
        ct = pick ? el_json_get(pick, "template") : NULL;
    }
    if (el_json_is(ct, EL_JSON_STRING) && !(v->chat_template = strdup(el_json_str(ct))))
        s = el_err(err, EL_ERR_NOMEM, "%s: out of memory", tc_name);
    el_json_free(j);
    return s;
}

el_status el_hf_tokenizer_parse(const char *tok, size_t tok_len, const char *path, const char *tc, size_t tc_len,
                                const char *tc_name, int n_vocab, int cfg_bos, int cfg_eos, el_hf_vocab *v,
                                el_error *err) {
    memset(v, 0, sizeof *v);
    v->unk = -1, v->add_bos = -1;
    v->bos = cfg_bos >= 0 && cfg_bos < n_vocab ? cfg_bos : -1;
    v->eos = cfg_eos >= 0 && cfg_eos < n_vocab ? cfg_eos : -1;
    if (n_vocab < 1 || n_vocab > (1 << 24)) return el_err(err, EL_ERR_RANGE, "%s: vocab size %d is out of range", path, n_vocab);
    el_json *j;
    el_status s = el_json_parse(tok, tok_len, path, &j, err);
    if (s) return s;
    const el_json *model = el_json_get(j, "model");
    const el_json *mtype = el_json_get(model, "type");
    const el_json *voc = el_json_get(model, "vocab");
    int byte_fallback = el_json_bool(el_json_get(model, "byte_fallback"), 0);
    pre_scan ps = {0};
    scan_pre(el_json_get(j, "pre_tokenizer"), 0, &ps);
    int byte_level = ps.byte_level;
    const char *regex = ps.regex;
    if (!el_json_is(mtype, EL_JSON_STRING) || strcmp(el_json_str(mtype), "BPE") || !el_json_is(voc, EL_JSON_OBJECT)) {
        s = el_err(err, EL_ERR_UNSUPPORTED, "%s: model.type is not BPE with a vocab object (supported: BPE)", path);
    } else if (!byte_level && !byte_fallback) {
        s = el_err(err, EL_ERR_UNSUPPORTED, "%s: BPE without a ByteLevel pre-tokenizer or byte_fallback is not supported",
                   path);
    } else if (byte_level && ps.unknown) {
        s = el_err(err, EL_ERR_UNSUPPORTED, "%s: pre-tokenizer type '%.32s' is not supported", path, ps.unknown);
    } else if (byte_level && ps.digits && regex) {
        s = el_err(err, EL_ERR_UNSUPPORTED, "%s: a Digits pre-tokenizer with a Split regex is not supported", path);
    } else if (byte_level) {
        v->byte_level = 1;
        // ByteLevel with its built-in GPT-2 split; SmolLM puts single digits first
        if (!regex) v->pre = ps.digits ? "smollm" : "gpt-2";
        for (size_t i = 0; !v->pre && i < sizeof known_pre / sizeof known_pre[0]; i++)
            if (!strcmp(regex, known_pre[i].regex)) v->pre = known_pre[i].pre;
        if (!v->pre)
            s = el_err(err, EL_ERR_UNSUPPORTED, "%s: pre-tokenizer regex '%.60s...' is not the GPT-2, Llama 3 or Qwen2 one",
                       path, regex);
    }
    if (!s) {
        v->n = n_vocab;
        v->tokens = calloc((size_t)n_vocab, sizeof *v->tokens);
        v->lens = calloc((size_t)n_vocab, sizeof *v->lens);
        v->types = calloc((size_t)n_vocab, sizeof *v->types);
        v->scores = calloc((size_t)n_vocab, sizeof *v->scores);
        if (!v->tokens || !v->lens || !v->types || !v->scores)
            s = el_err(err, EL_ERR_NOMEM, "%s: out of memory for %d tokens", path, n_vocab);
    }
    // BOS from the post-processor: Llama 3 asks for <|begin_of_text|> by a
    // TemplateProcessing whose single-sequence template opens with it
    // (tokenizer_config.json's add_bos_token, read later, wins)
    if (!s && has_bos_template(el_json_get(j, "post_processor"), 0)) v->add_bos = 1;
    if (!s) s = read_tokens(voc, el_json_get(j, "added_tokens"), path, byte_fallback && !byte_level, v, err);
    if (!s && byte_level) s = read_merges(el_json_get(model, "merges"), path, v, err);
    el_json_free(j);
    if (!s && tc) s = read_tokenizer_config(tc, tc_len, tc_name, v, err);
    if (s) el_hf_vocab_free(v);
    return s;
}
