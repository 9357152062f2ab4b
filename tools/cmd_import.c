// edgellm import: a Hugging Face model folder (config.json, safetensors,
// tokenizer.json) to one GGUF file, written tensor by tensor.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "cli.h"
#include "edgellm/gguf.h"
#include "edgellm/model.h"
#include "edgellm/safetensors.h"

static const char *usage =
    "usage: edgellm import HF_DIR -o OUT.gguf [--type f16|bf16|f32]\n"
    "\n"
    "Converts a Hugging Face model folder of the Llama, Mistral or Qwen2 architecture\n"
    "(config.json; model.safetensors, or model.safetensors.index.json and its shards;\n"
    "tokenizer.json and, if present, tokenizer_config.json) into a GGUF with the\n"
    "tokenizer and metadata. Weight matrices are written as --type (default f16);\n"
    "norms and biases stay f32. Llama/Mistral q and k rows are permuted to the\n"
    "interleaved rope layout; Qwen2 keeps the neox layout. Llama 3.1 rope scaling\n"
    "becomes a rope_freqs.weight tensor. Tensors are converted one at a time, so\n"
    "memory use is about the largest tensor, not the model.\n"
    "\n"
    "Tokenizers: byte-level BPE (GPT-2, Llama 3, Qwen2 pre-tokenizers) become\n"
    "tokenizer.ggml.model gpt2 with merges; SentencePiece-style BPE with byte\n"
    "fallback (Llama 2, Mistral, TinyLlama) becomes llama with scores -rank.\n"
    "An unknown pre-tokenizer regex is an error.\n"
    "\n"
    "example: edgellm import ~/hf/Qwen2.5-0.5B-Instruct -o qwen2.5-0.5b.gguf --type bf16\n";

#define MAX_JSON ((size_t)256 << 20)  // tokenizer.json of a 150k vocabulary is ~10 MB
#define MAX_SHARDS 1024

typedef enum { ARCH_LLAMA, ARCH_MISTRAL, ARCH_QWEN2 } hf_arch;

typedef struct {
    hf_arch arch;
    int dim, layers, heads, kv_heads, ff, vocab, ctx;
    double eps, theta;
    int tied, window;
    int scaling;  // 0 none, 1 linear, 2 llama3
    double factor, low, high;
    int orig_ctx;
    int bos, eos;  // from config.json, -1 if absent
} hf_config;

// One tensor of the output and where its bytes come from.
typedef struct {
    char name[96];
    const el_st_tensor *src;  // NULL: generated (rope_freqs)
    int dtype;
    int permute_heads;  // > 0: rows are HF half-split per head; write interleaved
    uint64_t nbytes;
} item;

typedef struct {
    const char *dir;
    char index_path[4096];
    cJSON *index;  // model.safetensors.index.json, or NULL for one model.safetensors
    char *shard_names[MAX_SHARDS];
    el_safetensors *shards[MAX_SHARDS];
    int n_shards;
    hf_config cfg;
    item *items;
    int n_items;
    el_progress *prog;
    uint64_t done;
} importer;

// ---------------------------------------------------------------- config.json

static el_status cfg_int(const cJSON *c, const char *path, const char *key, int required, int dflt, int max, int *out,
                         el_error *err) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(c, key);
    if (!j || cJSON_IsNull(j)) {
        if (required) return el_err(err, EL_ERR_FORMAT, "%s: field %s is missing", path, key);
        *out = dflt;
        return EL_OK;
    }
    double d = cJSON_IsNumber(j) ? j->valuedouble : -1;
    if (!(d >= 1 && d <= max) || floor(d) != d)
        return el_err(err, EL_ERR_FORMAT, "%s: field %s is not an integer in 1..%d", path, key, max);
    *out = (int)d;
    return EL_OK;
}

static el_status cfg_num(const cJSON *c, const char *path, const char *key, double dflt, double lo, double hi,
                         double *out, el_error *err) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(c, key);
    if (!j || cJSON_IsNull(j)) {
        *out = dflt;
        return EL_OK;
    }
    if (!cJSON_IsNumber(j) || !(j->valuedouble >= lo && j->valuedouble <= hi))
        return el_err(err, EL_ERR_FORMAT, "%s: field %s is not a number in %g..%g", path, key, lo, hi);
    *out = j->valuedouble;
    return EL_OK;
}

// bos_token_id / eos_token_id: an id, or a list whose first entry is used; -1 if absent.
static int token_field(const cJSON *c, const char *key) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(c, key);
    if (cJSON_IsArray(j)) j = j->child;
    if (!cJSON_IsNumber(j) || !(j->valuedouble >= 0 && j->valuedouble < (1 << 24))) return -1;
    return (int)j->valuedouble;
}

static el_status read_config(const char *dir, hf_config *c, el_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    cJSON *j;
    el_status s = el_cjson_load(path, 1 << 20, &j, err);
    if (s) return s;
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return el_err(err, EL_ERR_FORMAT, "%s: not a JSON object", path);
    }
    const cJSON *archs = cJSON_GetObjectItemCaseSensitive(j, "architectures");
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(j, "model_type");
    const char *a = cJSON_IsArray(archs) && cJSON_IsString(archs->child) ? archs->child->valuestring
                  : cJSON_IsString(mt) ? mt->valuestring : NULL;
    if (!a) {
        s = el_err(err, EL_ERR_FORMAT, "%s: neither architectures nor model_type names the architecture", path);
    } else if (!strcmp(a, "LlamaForCausalLM") || !strcmp(a, "llama")) {
        c->arch = ARCH_LLAMA;
    } else if (!strcmp(a, "MistralForCausalLM") || !strcmp(a, "mistral")) {
        c->arch = ARCH_MISTRAL;
    } else if (!strcmp(a, "Qwen2ForCausalLM") || !strcmp(a, "qwen2")) {
        c->arch = ARCH_QWEN2;
    } else {
        s = el_err(err, EL_ERR_UNSUPPORTED,
                   "%s: architecture '%.64s' is not supported (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)",
                   path, a);
    }
    int hd = 0, bos = 0, eos = 0;
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
    bos = token_field(j, "bos_token_id"), eos = token_field(j, "eos_token_id");
    c->bos = bos, c->eos = eos;
    if (!s) {
        if (c->dim % c->heads || hd != c->dim / c->heads || hd % 2)
            s = el_err(err, EL_ERR_UNSUPPORTED, "%s: head size %d with hidden_size %d and %d heads is not supported", path,
                       hd, c->dim, c->heads);
        else if (c->kv_heads > c->heads || c->heads % c->kv_heads)
            s = el_err(err, EL_ERR_FORMAT, "%s: num_key_value_heads %d does not divide num_attention_heads %d", path,
                       c->kv_heads, c->heads);
    }
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(j, "tie_word_embeddings");
    c->tied = cJSON_IsTrue(tie);
    const cJSON *sw = cJSON_GetObjectItemCaseSensitive(j, "sliding_window");
    const cJSON *use_sw = cJSON_GetObjectItemCaseSensitive(j, "use_sliding_window");
    if (!s && c->arch == ARCH_QWEN2 && cJSON_IsTrue(use_sw))
        s = el_err(err, EL_ERR_UNSUPPORTED, "%s: Qwen2 use_sliding_window (per-layer windows) is not supported", path);
    if (!s && c->arch != ARCH_QWEN2 && sw && !cJSON_IsNull(sw))
        s = cfg_int(j, path, "sliding_window", 1, 0, 1 << 30, &c->window, err);
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(j, "rope_scaling");
    if (!s && rs && !cJSON_IsNull(rs)) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
        if (!t) t = cJSON_GetObjectItemCaseSensitive(rs, "type");
        const char *ts = cJSON_IsString(t) ? t->valuestring : "?";
        if (!strcmp(ts, "default")) {
            c->scaling = 0;
        } else if (!strcmp(ts, "linear") || !strcmp(ts, "llama3")) {
            c->scaling = !strcmp(ts, "linear") ? 1 : 2;
            s = cfg_num(rs, path, "factor", 0, 1, 1024, &c->factor, err);
            if (!s && c->factor == 0) s = el_err(err, EL_ERR_FORMAT, "%s: rope_scaling.factor is missing", path);
            if (!s && c->scaling == 2) {
                if ((s = cfg_num(rs, path, "low_freq_factor", 1, 1e-3, 1e3, &c->low, err)) ||
                    (s = cfg_num(rs, path, "high_freq_factor", 4, 1e-3, 1e3, &c->high, err)) ||
                    (s = cfg_int(rs, path, "original_max_position_embeddings", 1, 0, 1 << 24, &c->orig_ctx, err)))
                    ;
                else if (!(c->high > c->low))
                    s = el_err(err, EL_ERR_FORMAT, "%s: rope_scaling high_freq_factor %g is not above low_freq_factor %g",
                               path, c->high, c->low);
            }
        } else {
            s = el_err(err, EL_ERR_UNSUPPORTED, "%s: rope_scaling type '%.32s' is not supported (linear, llama3)", path,
                       ts);
        }
    }
    cJSON_Delete(j);
    return s;
}

// ---------------------------------------------------------------- tensors

static int safe_file_name(const char *s) {
    return s[0] && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..") && strlen(s) < 256;
}

static el_status shard(importer *im, const char *file, el_safetensors **out, el_error *err) {
    for (int i = 0; i < im->n_shards; i++)
        if (!strcmp(im->shard_names[i], file)) {
            *out = im->shards[i];
            return EL_OK;
        }
    if (im->n_shards == MAX_SHARDS) return el_err(err, EL_ERR_RANGE, "%s: more than %d shards", im->index_path, MAX_SHARDS);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", im->dir, file);
    el_status s = el_safetensors_open(path, out, err);
    if (s) return s;
    im->shard_names[im->n_shards] = strdup(file);
    im->shards[im->n_shards++] = *out;
    return EL_OK;
}

// The HF tensor hf_name: from the index's shard, or model.safetensors.
static el_status find_hf(importer *im, const char *hf_name, int required, const el_st_tensor **out, el_error *err) {
    *out = NULL;
    const char *file = "model.safetensors";
    if (im->index) {
        const cJSON *wm = cJSON_GetObjectItemCaseSensitive(im->index, "weight_map");
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(wm, hf_name);
        if (!f) {
            if (!required) return EL_OK;
            return el_err(err, EL_ERR_FORMAT, "%s: weight_map has no entry for %s", im->index_path, hf_name);
        }
        if (!cJSON_IsString(f) || !safe_file_name(f->valuestring))
            return el_err(err, EL_ERR_FORMAT, "%s: weight_map entry of %s is not a file name in the folder",
                          im->index_path, hf_name);
        file = f->valuestring;
    }
    el_safetensors *st;
    el_status s = shard(im, file, &st, err);
    if (s) return s;
    *out = el_safetensors_find(st, hf_name);
    if (!*out && required) return el_err(err, EL_ERR_FORMAT, "%s: tensor %s is missing", st->path, hf_name);
    return EL_OK;
}

static el_status add_item(importer *im, el_gguf_writer *w, const char *gguf_name, const char *hf_name, int required,
                          int64_t rows, int64_t cols, int dtype, int permute_heads, el_error *err) {
    const el_st_tensor *t = NULL;
    if (hf_name) {
        el_status s = find_hf(im, hf_name, required, &t, err);
        if (s) return s;
        if (!t) return EL_OK;  // optional and absent
        int ok = rows ? t->n_dims == 2 && t->shape[0] == rows && t->shape[1] == cols
                      : t->n_dims == 1 && t->shape[0] == cols;
        if (!ok) {
            char got[128] = "[";
            for (int d = 0; d < t->n_dims; d++)
                snprintf(got + strlen(got), sizeof got - strlen(got), d ? ", %lld" : "%lld", (long long)t->shape[d]);
            char want[64];
            if (rows) snprintf(want, sizeof want, "[%lld, %lld]", (long long)rows, (long long)cols);
            else snprintf(want, sizeof want, "[%lld]", (long long)cols);
            return el_err(err, EL_ERR_FORMAT, "%s: tensor %s has shape %s], expected %s from config.json", im->dir,
                          hf_name, got, want);
        }
        if (!rows) dtype = EL_DTYPE_F32;  // norms and biases stay f32
    }
    item *it = &im->items[im->n_items++];
    snprintf(it->name, sizeof it->name, "%s", gguf_name);
    it->src = t;
    it->dtype = dtype;
    it->permute_heads = permute_heads;
    int64_t ne[2] = {cols, rows};
    it->nbytes = (uint64_t)cols * (uint64_t)(rows ? rows : 1) * (dtype == EL_DTYPE_F32 ? 4 : 2);
    if (el_gguf_add_tensor(w, gguf_name, dtype, rows ? 2 : 1, ne, NULL))
        return el_err(err, EL_ERR_NOMEM, "cannot add tensor %s", gguf_name);
    return EL_OK;
}

static el_status plan_tensors(importer *im, el_gguf_writer *w, int dtype, el_error *err) {
    const hf_config *c = &im->cfg;
    int hd = c->dim / c->heads, q = c->heads * hd, kv = c->kv_heads * hd, qwen = c->arch == ARCH_QWEN2;
    im->items = calloc((size_t)c->layers * 12 + 8, sizeof *im->items);
    if (!im->items) return el_err(err, EL_ERR_NOMEM, "out of memory");
    el_status s;
    if ((s = add_item(im, w, "token_embd.weight", "model.embed_tokens.weight", 1, c->vocab, c->dim, dtype, 0, err)))
        return s;
    for (int l = 0; l < c->layers; l++) {
        char g[96], h[128];
#define P(gpart, hpart, rows, cols, perm)                                                    \
    snprintf(g, sizeof g, "blk.%d.%s", l, gpart);                                            \
    snprintf(h, sizeof h, "model.layers.%d.%s", l, hpart);                                   \
    if ((s = add_item(im, w, g, h, 1, rows, cols, dtype, perm, err))) return s
        P("attn_norm.weight", "input_layernorm.weight", 0, c->dim, 0);
        P("attn_q.weight", "self_attn.q_proj.weight", q, c->dim, qwen ? 0 : c->heads);
        P("attn_k.weight", "self_attn.k_proj.weight", kv, c->dim, qwen ? 0 : c->kv_heads);
        P("attn_v.weight", "self_attn.v_proj.weight", kv, c->dim, 0);
        if (qwen) {
            P("attn_q.bias", "self_attn.q_proj.bias", 0, q, 0);
            P("attn_k.bias", "self_attn.k_proj.bias", 0, kv, 0);
            P("attn_v.bias", "self_attn.v_proj.bias", 0, kv, 0);
        }
        P("attn_output.weight", "self_attn.o_proj.weight", c->dim, q, 0);
        P("ffn_norm.weight", "post_attention_layernorm.weight", 0, c->dim, 0);
        P("ffn_gate.weight", "mlp.gate_proj.weight", c->ff, c->dim, 0);
        P("ffn_up.weight", "mlp.up_proj.weight", c->ff, c->dim, 0);
        P("ffn_down.weight", "mlp.down_proj.weight", c->dim, c->ff, 0);
#undef P
    }
    if ((s = add_item(im, w, "output_norm.weight", "model.norm.weight", 1, 0, c->dim, dtype, 0, err))) return s;
    if (!c->tied && (s = add_item(im, w, "output.weight", "lm_head.weight", 0, c->vocab, c->dim, dtype, 0, err)))
        return s;
    if (c->scaling == 2 && (s = add_item(im, w, "rope_freqs.weight", NULL, 0, 0, hd / 2, EL_DTYPE_F32, 0, err)))
        return s;
    return EL_OK;
}

static float src_f32(const el_st_tensor *t, uint64_t i) {
    const unsigned char *p = t->data;
    if (t->dtype == EL_DTYPE_F32) {
        float f;
        memcpy(&f, p + i * 4, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, p + i * 2, 2);
    return t->dtype == EL_DTYPE_F16 ? el_f16_to_f32(h) : el_bf16_to_f32(h);
}

// Writes the output bytes of one tensor: rows permuted for llama q/k (GGUF row
// h*hd + 2i + e is HF row h*hd + e*hd/2 + i), each element converted.
static el_status fill(void *vctx, const char *name, void *dst, size_t nbytes, el_error *err) {
    importer *im = vctx;
    const item *it = NULL;
    for (int i = 0; i < im->n_items && !it; i++)
        if (!strcmp(im->items[i].name, name)) it = &im->items[i];
    if (!it || it->nbytes != nbytes) return el_err(err, EL_ERR_STATE, "no plan for tensor %s", name);
    const hf_config *c = &im->cfg;
    if (!it->src) {  // rope_freqs.weight
        el_rope_llama3_divisors(dst, c->dim / c->heads, (float)c->theta, (float)c->factor, (float)c->low,
                                (float)c->high, c->orig_ctx);
        return EL_OK;
    }
    const el_st_tensor *t = it->src;
    uint64_t rows = t->n_dims == 2 ? (uint64_t)t->shape[0] : 1, cols = (uint64_t)t->shape[t->n_dims - 1];
    uint64_t hd = it->permute_heads ? rows / (uint64_t)it->permute_heads : 0;
    for (uint64_t r = 0; r < rows; r++) {
        uint64_t sr = r;
        if (hd) {
            uint64_t h = r / hd, j = r % hd;
            sr = h * hd + (j % 2) * (hd / 2) + j / 2;
        }
        for (uint64_t k = 0; k < cols; k++) {
            float v = src_f32(t, sr * cols + k);
            uint64_t o = r * cols + k;
            if (it->dtype == EL_DTYPE_F32) ((float *)dst)[o] = v;
            else if (it->dtype == EL_DTYPE_F16) ((uint16_t *)dst)[o] = el_f32_to_f16(v);
            else ((uint16_t *)dst)[o] = el_f32_to_bf16(v);
        }
    }
    // The source pages are done with: drop them from this process's resident
    // set so memory stays at about one tensor however large the model.
    uintptr_t page = 4096, lo = ((uintptr_t)t->data + page - 1) & ~(page - 1),
              hi = ((uintptr_t)t->data + (t->end - t->begin)) & ~(page - 1);
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
    im->done += nbytes;
    return EL_OK;
}

// ---------------------------------------------------------------- tokenizer

typedef struct {
    char **tokens;
    uint64_t *lens;
    int32_t *types;
    float *scores;
    int n;
    char **merges;
    uint64_t *merge_lens;
    int n_merges;
} vocab;

static void vocab_free(vocab *v) {
    for (int i = 0; i < v->n; i++) free(v->tokens ? v->tokens[i] : NULL);
    for (int i = 0; i < v->n_merges; i++) free(v->merges[i]);
    free(v->tokens), free(v->lens), free(v->types), free(v->scores), free(v->merges), free(v->merge_lens);
}

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

// Walks a pre_tokenizer (possibly a Sequence) for ByteLevel and a Split regex.
static void scan_pre(const cJSON *p, int *byte_level, const char **regex) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(p, "type");
    if (!cJSON_IsString(t)) return;
    if (!strcmp(t->valuestring, "ByteLevel")) *byte_level = 1;
    if (!strcmp(t->valuestring, "Split")) {
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(p, "pattern"), "Regex");
        if (cJSON_IsString(r)) *regex = r->valuestring;
    }
    if (!strcmp(t->valuestring, "Sequence")) {
        const cJSON *seq = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
        int n = 0;
        for (const cJSON *e = cJSON_IsArray(seq) ? seq->child : NULL; e && n < 64; e = e->next, n++)
            scan_pre(e, byte_level, regex);
    }
}

static int is_byte_token(const char *s) {
    return strlen(s) == 6 && !strncmp(s, "<0x", 3) && s[5] == '>' && strchr("0123456789ABCDEF", s[3]) &&
           strchr("0123456789ABCDEF", s[4]) && s[3] && s[4];
}

// Token id of a special token named in tokenizer_config.json (string or {"content": ...}).
static int token_id(const vocab *v, const cJSON *j) {
    if (cJSON_IsObject(j)) j = cJSON_GetObjectItemCaseSensitive(j, "content");
    if (!cJSON_IsString(j)) return -1;
    for (int i = 0; i < v->n; i++)
        if (v->tokens[i] && !strcmp(v->tokens[i], j->valuestring)) return i;
    return -1;
}

static el_status read_tokenizer(importer *im, el_gguf_writer *w, vocab *v, el_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", im->dir);
    cJSON *j;
    el_status s = el_cjson_load(path, MAX_JSON, &j, err);
    if (s) return s;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
    const cJSON *mtype = cJSON_GetObjectItemCaseSensitive(model, "type");
    const cJSON *voc = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(j, "added_tokens");
    int byte_level = 0, byte_fallback = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"));
    const char *regex = NULL;
    scan_pre(cJSON_GetObjectItemCaseSensitive(j, "pre_tokenizer"), &byte_level, &regex);
    if (!cJSON_IsString(mtype) || strcmp(mtype->valuestring, "BPE") || !cJSON_IsObject(voc)) {
        s = el_err(err, EL_ERR_UNSUPPORTED, "%s: model.type is not BPE with a vocab object (supported: BPE)", path);
        goto out;
    }
    if (!byte_level && !byte_fallback) {
        s = el_err(err, EL_ERR_UNSUPPORTED, "%s: BPE without a ByteLevel pre-tokenizer or byte_fallback is not supported",
                   path);
        goto out;
    }
    const char *pre = NULL;
    if (byte_level) {
        if (!regex) pre = "gpt-2";  // ByteLevel with its built-in GPT-2 split
        for (size_t i = 0; !pre && i < sizeof known_pre / sizeof known_pre[0]; i++)
            if (!strcmp(regex, known_pre[i].regex)) pre = known_pre[i].pre;
        if (!pre) {
            s = el_err(err, EL_ERR_UNSUPPORTED,
                       "%s: pre-tokenizer regex '%.60s...' is not the GPT-2, Llama 3 or Qwen2 one", path, regex);
            goto out;
        }
    }
    // Tokens by id: the vocab, then added_tokens; the table spans config's vocab_size.
    int n = im->cfg.vocab;
    v->n = n;
    v->tokens = calloc((size_t)n, sizeof *v->tokens);
    v->lens = calloc((size_t)n, sizeof *v->lens);
    v->types = calloc((size_t)n, sizeof *v->types);
    v->scores = calloc((size_t)n, sizeof *v->scores);
    if (!v->tokens || !v->lens || !v->types || !v->scores) {
        s = el_err(err, EL_ERR_NOMEM, "%s: out of memory for %d tokens", path, n);
        goto out;
    }
    for (int pass = 0; pass < 2 && !s; pass++) {
        const cJSON *list = pass ? added : voc;
        for (const cJSON *e = list ? list->child : NULL; e && !s; e = e->next) {
            const char *text = pass ? NULL : e->string;
            const cJSON *idj = pass ? cJSON_GetObjectItemCaseSensitive(e, "id") : e;
            if (pass) {
                const cJSON *ct = cJSON_GetObjectItemCaseSensitive(e, "content");
                text = cJSON_IsString(ct) ? ct->valuestring : NULL;
            }
            double d = cJSON_IsNumber(idj) ? idj->valuedouble : -1;
            if (!text || !(d >= 0 && d < n) || floor(d) != d) {
                s = el_err(err, EL_ERR_FORMAT, "%s: %s token '%.40s' has an id outside 0..%d (vocab_size in config.json)",
                           path, pass ? "added" : "vocab", text ? text : "?", n - 1);
                break;
            }
            int id = (int)d;
            if (v->tokens[id] && strcmp(v->tokens[id], text)) {
                s = el_err(err, EL_ERR_FORMAT, "%s: token id %d is given to both '%.40s' and '%.40s'", path, id,
                           v->tokens[id], text);
                break;
            }
            if (!v->tokens[id] && !(v->tokens[id] = strdup(text))) {
                s = el_err(err, EL_ERR_NOMEM, "%s: out of memory", path);
                break;
            }
            v->lens[id] = strlen(text);
            v->scores[id] = -(float)id;  // rank order: lower ids merge first
            if (pass) v->types[id] = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "special")) ? 3 : 4;
            else if (byte_fallback && is_byte_token(text)) v->types[id] = 6;
            else v->types[id] = 1;
        }
    }
    if (s) goto out;
    for (int i = 0; i < n; i++)
        if (!v->tokens[i]) {  // padding up to vocab_size (the embedding has these rows)
            char pad[32];
            snprintf(pad, sizeof pad, "[PAD%d]", i);
            if (!(v->tokens[i] = strdup(pad))) {
                s = el_err(err, EL_ERR_NOMEM, "%s: out of memory", path);
                goto out;
            }
            v->lens[i] = strlen(pad);
            v->types[i] = 5;  // unused
        }
    if (byte_level) {
        int nm = cJSON_IsArray(merges) ? cJSON_GetArraySize(merges) : 0;
        v->merges = calloc((size_t)nm + 1, sizeof *v->merges);
        v->merge_lens = calloc((size_t)nm + 1, sizeof *v->merge_lens);
        if (!v->merges || !v->merge_lens) {
            s = el_err(err, EL_ERR_NOMEM, "%s: out of memory for %d merges", path, nm);
            goto out;
        }
        for (const cJSON *e = nm ? merges->child : NULL; e; e = e->next) {
            char *m = NULL;
            if (cJSON_IsString(e)) {
                m = strdup(e->valuestring);
            } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
                       cJSON_IsString(e->child->next)) {
                size_t a = strlen(e->child->valuestring), b = strlen(e->child->next->valuestring);
                if ((m = malloc(a + b + 2))) {
                    memcpy(m, e->child->valuestring, a);
                    m[a] = ' ';
                    memcpy(m + a + 1, e->child->next->valuestring, b + 1);
                }
            } else {
                s = el_err(err, EL_ERR_FORMAT, "%s: merge %d is neither \"a b\" nor [\"a\", \"b\"]", path, v->n_merges);
                goto out;
            }
            if (!m) {
                s = el_err(err, EL_ERR_NOMEM, "%s: out of memory", path);
                goto out;
            }
            v->merge_lens[v->n_merges] = strlen(m);
            v->merges[v->n_merges++] = m;
        }
        el_gguf_add_str(w, "tokenizer.ggml.model", "gpt2");
        el_gguf_add_str(w, "tokenizer.ggml.pre", pre);
        el_gguf_add_arr_str(w, "tokenizer.ggml.merges", (const char *const *)v->merges, v->merge_lens,
                            (uint64_t)v->n_merges);
    } else {
        el_gguf_add_str(w, "tokenizer.ggml.model", "llama");
        el_gguf_add_arr(w, "tokenizer.ggml.scores", EL_GGUF_FLOAT32, v->scores, (uint64_t)n);
        for (int i = 0; i < n; i++)
            if (!strcmp(v->tokens[i], "<unk>")) {
                v->types[i] = 2;
                el_gguf_add_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)i);
            }
    }
    el_gguf_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v->tokens, v->lens, (uint64_t)n);
    el_gguf_add_arr(w, "tokenizer.ggml.token_type", EL_GGUF_INT32, v->types, (uint64_t)n);

    // Special tokens and the chat template: tokenizer_config.json, else config.json ids.
    int bos = im->cfg.bos, eos = im->cfg.eos;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", im->dir);
    struct stat sb;
    if (!stat(path, &sb)) {
        cJSON *tc;
        if ((s = el_cjson_load(path, MAX_JSON, &tc, err))) goto out;
        int id;
        if ((id = token_id(v, cJSON_GetObjectItemCaseSensitive(tc, "bos_token"))) >= 0) bos = id;
        if ((id = token_id(v, cJSON_GetObjectItemCaseSensitive(tc, "eos_token"))) >= 0) eos = id;
        const cJSON *ab = cJSON_GetObjectItemCaseSensitive(tc, "add_bos_token");
        if (cJSON_IsBool(ab)) el_gguf_add_bool(w, "tokenizer.ggml.add_bos_token", cJSON_IsTrue(ab));
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(tc, "chat_template");
        if (cJSON_IsString(ct)) el_gguf_add_str(w, "tokenizer.chat_template", ct->valuestring);
        cJSON_Delete(tc);
    }
    if (bos >= 0 && bos < n) el_gguf_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
    if (eos >= 0 && eos < n) el_gguf_add_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eos);
out:
    cJSON_Delete(j);
    return s;
}

// ---------------------------------------------------------------- command

static void write_metadata(const importer *im, el_gguf_writer *w, const char *name, int dtype) {
    const hf_config *c = &im->cfg;
    const char *arch = c->arch == ARCH_QWEN2 ? "qwen2" : "llama";
    char k[96];
#define K(s) (snprintf(k, sizeof k, "%s." s, arch), k)
    el_gguf_add_str(w, "general.architecture", arch);
    el_gguf_add_str(w, "general.name", name);
    el_gguf_add_u32(w, "general.file_type", dtype == EL_DTYPE_F32 ? 0 : dtype == EL_DTYPE_F16 ? 1 : 32);
    el_gguf_add_u32(w, K("context_length"), (uint32_t)c->ctx);
    el_gguf_add_u32(w, K("embedding_length"), (uint32_t)c->dim);
    el_gguf_add_u32(w, K("block_count"), (uint32_t)c->layers);
    el_gguf_add_u32(w, K("feed_forward_length"), (uint32_t)c->ff);
    el_gguf_add_u32(w, K("rope.dimension_count"), (uint32_t)(c->dim / c->heads));
    el_gguf_add_u32(w, K("attention.head_count"), (uint32_t)c->heads);
    el_gguf_add_u32(w, K("attention.head_count_kv"), (uint32_t)c->kv_heads);
    el_gguf_add_f32(w, K("attention.layer_norm_rms_epsilon"), (float)c->eps);
    el_gguf_add_f32(w, K("rope.freq_base"), (float)c->theta);
    el_gguf_add_u32(w, K("vocab_size"), (uint32_t)c->vocab);
    if (c->window) el_gguf_add_u32(w, K("attention.sliding_window"), (uint32_t)c->window);
    if (c->scaling == 1) {
        el_gguf_add_str(w, K("rope.scaling.type"), "linear");
        el_gguf_add_f32(w, K("rope.scaling.factor"), (float)c->factor);
    }
    if (c->scaling == 2) el_gguf_add_u32(w, K("rope.scaling.original_context_length"), (uint32_t)c->orig_ctx);
#undef K
}

int cmd_import(int argc, char **argv) {
    cli c;
    cli_init(&c, "import", argc, argv);
    const char *dir = NULL, *out = NULL, *type = "f16", *a;
    int opt;
    while ((a = cli_next(&c, &opt))) {
        if (cli_is(a, "-h", "--help")) { fputs(usage, stdout); return 0; }
        else if (cli_is(a, "-o", "--output")) out = cli_str(&c, a);
        else if (cli_is(a, NULL, "--type")) type = cli_str(&c, a);
        else if (opt) return cli_unknown(&c, a);
        else if (!dir) dir = a;
        else return cli_fail(&c, "unexpected argument '%s'", a);
    }
    if (c.failed) return 2;
    if (!dir) return cli_fail(&c, "HF_DIR is required");
    if (!out) return cli_fail(&c, "-o OUT.gguf is required");
    int dtype = !strcmp(type, "f32") ? EL_DTYPE_F32 : !strcmp(type, "f16") ? EL_DTYPE_F16
              : !strcmp(type, "bf16") ? EL_DTYPE_BF16 : -1;
    if (dtype < 0) return cli_fail(&c, "--type '%s' is not one of f32, f16, bf16", type);

    el_error err = {0};
    importer im = {.dir = dir};
    vocab v = {0};
    int rc = 1;
    el_gguf_writer *w = el_gguf_writer_new();
    if (!w) { el_err(&err, EL_ERR_NOMEM, "out of memory"); goto done; }
    if (read_config(dir, &im.cfg, &err)) goto done;
    snprintf(im.index_path, sizeof im.index_path, "%s/model.safetensors.index.json", dir);
    struct stat sb;
    if (!stat(im.index_path, &sb)) {
        if (el_cjson_load(im.index_path, MAX_JSON, &im.index, &err)) goto done;
        if (!cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(im.index, "weight_map"))) {
            el_err(&err, EL_ERR_FORMAT, "%s: weight_map is missing or not an object", im.index_path);
            goto done;
        }
    }
    const char *base = strrchr(dir, '/');
    while (base && !base[1] && base > dir) {  // "dir/" -> the part before the slash
        const char *p = base - 1;
        while (p > dir && *p != '/') p--;
        base = p;
    }
    base = base ? base + (*base == '/') : dir;
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)strcspn(base, "/"), base);
    write_metadata(&im, w, name, dtype);
    if (read_tokenizer(&im, w, &v, &err)) goto done;
    if (plan_tensors(&im, w, dtype, &err)) goto done;
    uint64_t total = 0;
    for (int i = 0; i < im.n_items; i++) total += im.items[i].nbytes;
    el_progress prog;
    im.prog = &prog;
    el_progress_begin(&prog, stderr, "import", total, "bytes");
    if (el_gguf_write(w, out, fill, &im, &prog, &err)) goto done;
    el_progress_end(&prog, total, out);
    fprintf(stderr, "imported %s: %s, %d layers, %d tensors, vocab %d -> %s\n", dir,
            im.cfg.arch == ARCH_QWEN2 ? "qwen2" : im.cfg.arch == ARCH_MISTRAL ? "mistral (llama)" : "llama",
            im.cfg.layers, im.n_items, v.n, out);
    rc = 0;
done:
    if (rc) cli_error(&err);
    vocab_free(&v);
    for (int i = 0; i < im.n_shards; i++) {
        el_safetensors_close(im.shards[i]);
        free(im.shard_names[i]);
    }
    cJSON_Delete(im.index);
    free(im.items);
    el_gguf_writer_free(w);
    return rc;
}
