// edgellm import: a Hugging Face model folder (config.json, safetensors,
// tokenizer.json) to one GGUF file, written tensor by tensor.
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "cli.h"
#include "edgellm/json.h"
#include "edgellm/gguf.h"
#include "edgellm/hf.h"
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
    el_json *index;  // model.safetensors.index.json, or NULL for one model.safetensors
    char *shard_names[MAX_SHARDS];
    el_safetensors *shards[MAX_SHARDS];
    int n_shards;
    el_hf_config cfg;
    item *items;
    int n_items;
    el_progress *prog;
    uint64_t done;
} importer;

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
        const el_json *fj = el_json_get(el_json_get(im->index, "weight_map"), hf_name);
        const char *f = el_json_str(fj);
        if (!fj) {
            if (!required) return EL_OK;
            return el_err(err, EL_ERR_FORMAT, "%s: weight_map has no entry for %s", im->index_path, hf_name);
        }
        if (!f || !safe_file_name(f))
            return el_err(err, EL_ERR_FORMAT, "%s: weight_map entry of %s is not a file name in the folder",
                          im->index_path, hf_name);
        file = f;
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
    const el_hf_config *c = &im->cfg;
    int hd = c->dim / c->heads, q = c->heads * hd, kv = c->kv_heads * hd, qwen = c->arch == EL_HF_QWEN2;
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
    if (c->scaling == EL_HF_ROPE_LLAMA3 && (s = add_item(im, w, "rope_freqs.weight", NULL, 0, 0, hd / 2, EL_DTYPE_F32, 0, err)))
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
    const el_hf_config *c = &im->cfg;
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
            if (it->dtype == EL_DTYPE_F32) {
                ((float *)dst)[o] = v;
            } else if (it->dtype == EL_DTYPE_F16) {
                uint16_t h = el_f32_to_f16(v);
                // f16 tops out at 65504: a larger weight would become inf
                if ((h & 0x7C00) == 0x7C00 && isfinite(v))
                    return el_err(err, EL_ERR_RANGE,
                                  "%s: %s element %llu is %g, beyond the f16 range (65504); import with --type bf16 or f32",
                                  t->name, name, (unsigned long long)(sr * cols + k), v);
                ((uint16_t *)dst)[o] = h;
            } else {
                ((uint16_t *)dst)[o] = el_f32_to_bf16(v);
            }
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

static el_status read_file_opt(const char *path, int required, char **text, size_t *len, el_error *err) {
    struct stat sb;
    *text = NULL, *len = 0;
    if (!required && stat(path, &sb)) return EL_OK;
    return el_read_file(path, MAX_JSON, text, len, err);
}

static el_status read_tokenizer(importer *im, el_gguf_writer *w, el_hf_vocab *v, el_error *err) {
    char path[4096], tc_path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", im->dir);
    snprintf(tc_path, sizeof tc_path, "%s/tokenizer_config.json", im->dir);
    char *tok = NULL, *tc = NULL;
    size_t tok_len, tc_len;
    el_status s = read_file_opt(path, 1, &tok, &tok_len, err);
    if (!s) s = read_file_opt(tc_path, 0, &tc, &tc_len, err);
    if (!s)
        s = el_hf_tokenizer_parse(tok, tok_len, path, tc, tc_len, tc_path, im->cfg.vocab, im->cfg.bos, im->cfg.eos, v,
                                  err);
    free(tok);
    free(tc);
    if (s) return s;
    if (v->byte_level) {
        // Build the tokenizer once: a merge naming a piece the vocabulary
        // lacks would otherwise make a GGUF that no longer loads.
        el_tokenizer *check = NULL;
        s = el_tokenizer_new_bpe(v->n, (const char *const *)v->tokens, v->lens, v->types, v->n_merges,
                                 (const char *const *)v->merges, v->merge_lens, el_pretok_from_name(v->pre, strlen(v->pre)),
                                 v->bos, v->eos, -1, &check, err);
        el_tokenizer_free(check);
        if (s) {
            char inner[sizeof err->msg];
            memcpy(inner, err->msg, sizeof inner);
            return el_err(err, s, "%s: %s", path, inner);
        }
        el_gguf_add_str(w, "tokenizer.ggml.model", "gpt2");
        el_gguf_add_str(w, "tokenizer.ggml.pre", v->pre);
        el_gguf_add_arr_str(w, "tokenizer.ggml.merges", (const char *const *)v->merges, v->merge_lens,
                            (uint64_t)v->n_merges);
    } else {
        el_gguf_add_str(w, "tokenizer.ggml.model", "llama");
        el_gguf_add_arr(w, "tokenizer.ggml.scores", EL_GGUF_FLOAT32, v->scores, (uint64_t)v->n);
        if (v->unk >= 0) el_gguf_add_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)v->unk);
    }
    el_gguf_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v->tokens, v->lens, (uint64_t)v->n);
    el_gguf_add_arr(w, "tokenizer.ggml.token_type", EL_GGUF_INT32, v->types, (uint64_t)v->n);
    if (v->add_bos >= 0) el_gguf_add_bool(w, "tokenizer.ggml.add_bos_token", v->add_bos);
    if (v->chat_template) el_gguf_add_str(w, "tokenizer.chat_template", v->chat_template);
    if (v->bos >= 0) el_gguf_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)v->bos);
    if (v->eos >= 0) el_gguf_add_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)v->eos);
    return EL_OK;
}

// ---------------------------------------------------------------- command

static void write_metadata(const importer *im, el_gguf_writer *w, const char *name, int dtype) {
    const el_hf_config *c = &im->cfg;
    const char *arch = c->arch == EL_HF_QWEN2 ? "qwen2" : "llama";
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
    if (c->scaling == EL_HF_ROPE_LINEAR) {
        el_gguf_add_str(w, K("rope.scaling.type"), "linear");
        el_gguf_add_f32(w, K("rope.scaling.factor"), (float)c->factor);
    }
    if (c->scaling == EL_HF_ROPE_LLAMA3) el_gguf_add_u32(w, K("rope.scaling.original_context_length"), (uint32_t)c->orig_ctx);
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
    el_hf_vocab v = {0};
    int rc = 1;
    el_gguf_writer *w = el_gguf_writer_new();
    if (!w) { el_err(&err, EL_ERR_NOMEM, "out of memory"); goto done; }
    char cfg_path[4096], *text = NULL;
    size_t len;
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
    if (el_read_file(cfg_path, 1 << 20, &text, &len, &err)) goto done;
    el_status cs = el_hf_config_parse(text, len, cfg_path, &im.cfg, &err);
    free(text);
    if (cs) goto done;
    snprintf(im.index_path, sizeof im.index_path, "%s/model.safetensors.index.json", dir);
    struct stat sb;
    if (!stat(im.index_path, &sb)) {
        if (el_json_load(im.index_path, MAX_JSON, &im.index, &err)) goto done;
        if (!el_json_is(el_json_get(im.index, "weight_map"), EL_JSON_OBJECT)) {
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
            im.cfg.arch == EL_HF_QWEN2 ? "qwen2" : im.cfg.arch == EL_HF_MISTRAL ? "mistral (llama)" : "llama",
            im.cfg.layers, im.n_items, v.n, out);
    rc = 0;
done:
    if (rc) cli_error(&err);
    el_hf_vocab_free(&v);
    for (int i = 0; i < im.n_shards; i++) {
        el_safetensors_close(im.shards[i]);
        free(im.shard_names[i]);
    }
    el_json_free(im.index);
    free(im.items);
    el_gguf_writer_free(w);
    return rc;
}
