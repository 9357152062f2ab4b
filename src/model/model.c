// Opening a model: hyper-parameters from GGUF metadata or a llama2.c header,
// and tensor views whose shapes and dtypes are checked before any use.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "edgellm/kernels.h"
#include "edgellm/llama2c.h"
#include "edgellm/model.h"
#include "edgellm/quant.h"

#define MAX_LAYERS 4096
#define MAX_WIDTH (1 << 20)

static el_status check_tensor(const el_model *m, const el_tensor *t, int64_t ne0, int64_t ne1, int scan, el_error *err) {
    int want_dims = ne1 ? 2 : 1;
    int64_t ne1_eff = t->n_dims > 1 ? t->ne[1] : 1;
    if (t->n_dims != want_dims || t->ne[0] != ne0 || (ne1 && ne1_eff != ne1)) {
        char got[96], want[64];
        if (t->n_dims > 1) snprintf(got, sizeof got, "[%lld, %lld]", (long long)t->ne[0], (long long)ne1_eff);
        else snprintf(got, sizeof got, "[%lld]", (long long)t->ne[0]);
        if (ne1) snprintf(want, sizeof want, "[%lld, %lld]", (long long)ne0, (long long)ne1);
        else snprintf(want, sizeof want, "[%lld]", (long long)ne0);
        return el_err(err, EL_ERR_FORMAT, "%s: tensor %s has shape %s, expected %s", m->path, t->name, got, want);
    }
    const el_dtype_traits *tr = el_dtype_info(t->dtype);
    if (!tr || !tr->to_f32) {
        char sup[128];
        el_dtype_supported_list(sup, sizeof sup);
        const char *gn = el_dtype_gguf_name(t->dtype);
        return el_err(err, EL_ERR_UNSUPPORTED, "%s: tensor %s has type %s, which edgellm cannot compute with (supported: %s)",
                      m->path, t->name, gn ? gn : el_dtype_name(t->dtype), sup);
    }
    if (ne1 == 0 && t->dtype != EL_DTYPE_F32)
        return el_err(err, EL_ERR_UNSUPPORTED, "%s: 1-D tensor %s must be f32, not %s", m->path, t->name,
                      el_dtype_name(t->dtype));
    // A NaN or infinite block scale would poison every output it touches.
    // Reads 2-4 bytes per block (docs/formats.md: cost of the scan).
    int64_t bad = scan ? el_quant_find_bad_block(t->dtype, t->data, t->nbytes) : -1;
    if (bad >= 0)
        return el_err(err, EL_ERR_FORMAT, "%s: tensor %s block %lld has a NaN or infinite scale", m->path, t->name,
                      (long long)bad);
    return EL_OK;
}

static el_status check_hparams(const el_model *m, el_error *err) {
    const el_hparams *h = &m->hp;
    struct { const char *name; int v, max; } f[] = {
        {"embedding_length", h->dim, MAX_WIDTH},       {"block_count", h->n_layers, MAX_LAYERS},
        {"attention.head_count", h->n_heads, 4096},    {"attention.head_count_kv", h->n_kv_heads, 4096},
        {"feed_forward_length", h->ff, MAX_WIDTH * 4}, {"vocab_size", h->vocab, 1 << 24},
        {"context_length", h->ctx, 1 << 24},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].v <= 0 || f[i].v > f[i].max)
            return el_err(err, EL_ERR_FORMAT, "%s: %s = %d is out of range (1..%d)", m->path, f[i].name, f[i].v,
                          f[i].max);
    if (h->dim % h->n_heads)
        return el_err(err, EL_ERR_FORMAT, "%s: embedding_length %d is not a multiple of head_count %d", m->path,
                      h->dim, h->n_heads);
    if (h->n_kv_heads > h->n_heads || h->n_heads % h->n_kv_heads)
        return el_err(err, EL_ERR_FORMAT, "%s: head_count_kv %d does not divide head_count %d", m->path,
                      h->n_kv_heads, h->n_heads);
    if (h->head_dim % 2) return el_err(err, EL_ERR_FORMAT, "%s: head size %d is odd", m->path, h->head_dim);
    if (!(h->rms_eps > 0 && h->rms_eps < 1))
        return el_err(err, EL_ERR_FORMAT, "%s: rms epsilon %g is out of range", m->path, h->rms_eps);
    if (!(h->rope_theta > 1 && h->rope_theta < 1e12f))
        return el_err(err, EL_ERR_FORMAT, "%s: rope.freq_base %g is out of range", m->path, h->rope_theta);
    if (!(h->rope_scale >= 1 && h->rope_scale <= 1024))
        return el_err(err, EL_ERR_FORMAT, "%s: rope.scaling.factor %g is out of range (1..1024)", m->path,
                      h->rope_scale);
    if (h->sliding_window < 0)
        return el_err(err, EL_ERR_FORMAT, "%s: attention.sliding_window %d is negative", m->path, h->sliding_window);
    return EL_OK;
}

// Binds and checks the tensors the options ask for.
static el_status check_bound(el_model *m, int scan, el_error *err) {
    const el_hparams *h = &m->hp;
    int q = h->n_heads * h->head_dim, kv = h->n_kv_heads * h->head_dim;
    el_status s;
    if (m->has_embed && (s = check_tensor(m, &m->tok_embd, h->dim, h->vocab, scan, err))) return s;
    if (m->has_head) {
        if ((s = check_tensor(m, &m->output_norm, h->dim, 0, scan, err))) return s;
        if ((s = check_tensor(m, &m->output, h->dim, h->vocab, scan, err))) return s;
    }
    for (int l = m->layer_begin; l < m->layer_end; l++) {
        el_layer *L = &m->layers[l];
        if ((s = check_tensor(m, &L->attn_norm, h->dim, 0, scan, err)) || (s = check_tensor(m, &L->wq, h->dim, q, scan, err)) ||
            (s = check_tensor(m, &L->wk, h->dim, kv, scan, err)) || (s = check_tensor(m, &L->wv, h->dim, kv, scan, err)) ||
            (s = check_tensor(m, &L->wo, q, h->dim, scan, err)) || (s = check_tensor(m, &L->ffn_norm, h->dim, 0, scan, err)) ||
            (s = check_tensor(m, &L->w_gate, h->dim, h->ff, scan, err)) ||
            (s = check_tensor(m, &L->w_down, h->ff, h->dim, scan, err)) || (s = check_tensor(m, &L->w_up, h->dim, h->ff, scan, err)))
            return s;
        if (h->has_qkv_bias &&
            ((s = check_tensor(m, &L->bq, q, 0, scan, err)) || (s = check_tensor(m, &L->bk, kv, 0, scan, err)) ||
             (s = check_tensor(m, &L->bv, kv, 0, scan, err))))
            return s;
    }
    if (h->rope_scaling == EL_ROPE_SCALING_FREQS) {
        if ((s = check_tensor(m, &m->rope_freqs, h->head_dim / 2, 0, scan, err))) return s;
        const float *f = m->rope_freqs.data;
        for (int i = 0; i < h->head_dim / 2; i++)
            if (!(f[i] >= 1e-6f && f[i] <= 1e6f))
                return el_err(err, EL_ERR_FORMAT, "%s: rope_freqs.weight[%d] = %g is not a positive frequency factor",
                              m->path, i, f[i]);
    }
    return EL_OK;
}

// ---------------------------------------------------------------- GGUF

static el_status gguf_int(el_model *m, const char *arch, const char *suffix, int required, int dflt, int *out,
                          el_error *err) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int64_t v;
    if (!el_gguf_get_i64(m->gguf, key, &v)) {
        if (required) return el_err(err, EL_ERR_FORMAT, "%s: metadata key %s is missing", m->path, key);
        *out = dflt;
        return EL_OK;
    }
    if (v <= 0 || v > (1 << 30)) return el_err(err, EL_ERR_FORMAT, "%s: %s = %lld is out of range", m->path, key, (long long)v);
    *out = (int)v;
    return EL_OK;
}

static el_status gguf_bind(el_model *m, const char *name, el_tensor *t, el_error *err) {
    const el_gguf_tensor *gt = el_gguf_find_tensor(m->gguf, name);
    if (!gt) return el_err(err, EL_ERR_FORMAT, "%s: tensor %s is missing", m->path, name);
    el_gguf_tensor_view(gt, t);
    return EL_OK;
}

// Hyper-parameters from m->gguf, already open.
static el_status read_gguf(el_model *m, el_error *err) {
    el_status s;
    m->format = EL_MODEL_GGUF;
    char arch[32] = "";
    if (!el_gguf_get_str(m->gguf, "general.architecture", arch, sizeof arch))
        return el_err(err, EL_ERR_FORMAT, "%s: metadata key general.architecture is missing", m->path);
    el_hparams *h = &m->hp;
    if (!strcmp(arch, "llama")) {
        h->family = EL_FAMILY_LLAMA;
        h->rope_type = EL_ROPE_NORMAL;
    } else if (!strcmp(arch, "qwen2")) {
        h->family = EL_FAMILY_QWEN2;
        h->rope_type = EL_ROPE_NEOX;  // Qwen2 checkpoints keep the half-split rotary layout
    } else {
        return el_err(err, EL_ERR_UNSUPPORTED, "%s: architecture '%s' is not supported (supported: llama, qwen2)",
                      m->path, arch);
    }
    snprintf(h->arch, sizeof h->arch, "%s", arch);
    if ((s = gguf_int(m, arch, "embedding_length", 1, 0, &h->dim, err)) ||
        (s = gguf_int(m, arch, "block_count", 1, 0, &h->n_layers, err)) ||
        (s = gguf_int(m, arch, "feed_forward_length", 1, 0, &h->ff, err)) ||
        (s = gguf_int(m, arch, "attention.head_count", 1, 0, &h->n_heads, err)) ||
        (s = gguf_int(m, arch, "attention.head_count_kv", 0, h->n_heads, &h->n_kv_heads, err)) ||
        (s = gguf_int(m, arch, "context_length", 0, 2048, &h->ctx, err)))
        return s;
    char key[128];
    double d;
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", arch);
    h->rms_eps = el_gguf_get_f64(m->gguf, key, &d) ? (float)d : 1e-5f;
    snprintf(key, sizeof key, "%s.rope.freq_base", arch);
    h->rope_theta = el_gguf_get_f64(m->gguf, key, &d) ? (float)d : 10000.0f;
    if (h->n_heads > 0) h->head_dim = h->dim / h->n_heads;
    int rope_dim;
    if ((s = gguf_int(m, arch, "rope.dimension_count", 0, h->head_dim, &rope_dim, err))) return s;
    if (rope_dim != h->head_dim)
        return el_err(err, EL_ERR_UNSUPPORTED, "%s: partial rotary embedding (rope.dimension_count %d, head size %d)",
                      m->path, rope_dim, h->head_dim);
    const el_gguf_tensor *emb = el_gguf_find_tensor(m->gguf, "token_embd.weight");
    if (!emb) return el_err(err, EL_ERR_FORMAT, "%s: tensor token_embd.weight is missing", m->path);
    if (emb->n_dims != 2 || emb->ne[1] > (1 << 24))
        return el_err(err, EL_ERR_FORMAT, "%s: tensor token_embd.weight has %d dimensions, expected 2", m->path,
                      emb->n_dims);
    h->vocab = (int)emb->ne[1];
    h->tied_output = el_gguf_find_tensor(m->gguf, "output.weight") == NULL;
    h->has_qkv_bias = el_gguf_find_tensor(m->gguf, "blk.0.attn_q.bias") != NULL;
    int64_t v;
    snprintf(key, sizeof key, "%s.attention.sliding_window", arch);
    if (el_gguf_get_i64(m->gguf, key, &v)) {
        if (v < 0 || v > (1 << 30))
            return el_err(err, EL_ERR_FORMAT, "%s: %s = %lld is out of range", m->path, key, (long long)v);
        h->sliding_window = (int)v;
    }
    // Rope scaling: a rope_freqs.weight tensor (Llama 3.1: per-frequency
    // divisors) or rope.scaling.type "linear" with rope.scaling.factor.
    h->rope_scale = 1.0f;
    char type[32] = "";
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    el_gguf_get_str(m->gguf, key, type, sizeof type);
    snprintf(key, sizeof key, "%s.rope.scaling.original_context_length", arch);
    if (el_gguf_get_i64(m->gguf, key, &v) && v > 0 && v <= (1 << 24)) h->rope_orig_ctx = (int)v;
    if (el_gguf_find_tensor(m->gguf, "rope_freqs.weight")) {
        h->rope_scaling = EL_ROPE_SCALING_FREQS;
    } else if (!strcmp(type, "linear")) {
        snprintf(key, sizeof key, "%s.rope.scaling.factor", arch);
        if (!el_gguf_get_f64(m->gguf, key, &d))
            return el_err(err, EL_ERR_FORMAT, "%s: rope.scaling.type is linear but %s is missing", m->path, key);
        h->rope_scaling = EL_ROPE_SCALING_LINEAR;
        h->rope_scale = (float)d;
    } else if (type[0] && strcmp(type, "none")) {
        return el_err(err, EL_ERR_UNSUPPORTED, "%s: rope scaling type '%s' is not supported (supported: none, linear, "
                      "rope_freqs.weight)", m->path, type);
    }
    return check_hparams(m, err);
}

static el_status bind_gguf(el_model *m, el_error *err) {
    el_status s;
    if (m->has_embed && (s = gguf_bind(m, "token_embd.weight", &m->tok_embd, err))) return s;
    if (m->has_head) {
        if ((s = gguf_bind(m, "output_norm.weight", &m->output_norm, err))) return s;
        if ((s = gguf_bind(m, m->hp.tied_output ? "token_embd.weight" : "output.weight", &m->output, err))) return s;
    }
    static const struct { const char *suffix; size_t off; } parts[] = {
        {"attn_norm", offsetof(el_layer, attn_norm)}, {"attn_q", offsetof(el_layer, wq)},
        {"attn_k", offsetof(el_layer, wk)},           {"attn_v", offsetof(el_layer, wv)},
        {"attn_output", offsetof(el_layer, wo)},      {"ffn_norm", offsetof(el_layer, ffn_norm)},
        {"ffn_gate", offsetof(el_layer, w_gate)},     {"ffn_down", offsetof(el_layer, w_down)},
        {"ffn_up", offsetof(el_layer, w_up)},
    };
    for (int l = m->layer_begin; l < m->layer_end; l++) {
        for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
            char name[96];
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, parts[i].suffix);
            if ((s = gguf_bind(m, name, (el_tensor *)((char *)&m->layers[l] + parts[i].off), err))) return s;
        }
        if (m->hp.has_qkv_bias) {
            el_tensor *bias[] = {&m->layers[l].bq, &m->layers[l].bk, &m->layers[l].bv};
            static const char *const bname[] = {"attn_q", "attn_k", "attn_v"};
            for (int i = 0; i < 3; i++) {
                char name[96];
                snprintf(name, sizeof name, "blk.%d.%s.bias", l, bname[i]);
                if ((s = gguf_bind(m, name, bias[i], err))) return s;
            }
        }
    }
    if (m->hp.rope_scaling == EL_ROPE_SCALING_FREQS && (s = gguf_bind(m, "rope_freqs.weight", &m->rope_freqs, err)))
        return s;
    return EL_OK;
}

// ---------------------------------------------------------------- packing

// Gives the pages wholly inside [p, p+n) of the read-only file mapping back to
// the kernel: the packed copy replaces them, so resident memory stays at one
// copy of the weights. They are still mapped and fault back in from the page
// cache if anything reads them (the scalar path, the identity hash).
static void release_pages(const void *p, size_t n) {
    uintptr_t page = 4096, a = ((uintptr_t)p + page - 1) & ~(page - 1), b = ((uintptr_t)p + n) & ~(page - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

// Repacks every quantized matrix that the kernels of this CPU read faster in a
// row-interleaved layout (el_matmul_pack). Files keep the GGUF layout. All
// packed copies live in one arena on huge pages when the kernel gives them:
// decode streams every matrix once per token, and 4 KiB pages cost a TLB
// miss every 8 blocks of 16 rows. (One allocation a matrix, advised by its
// own size, left each one's last partial 2 MiB on 4 KiB pages: up to 14% of
// a Q8_0 5632 x 2048 matrix.)
//
// Where the decode kernel reads two runs (el_gemm_runs_kernel: the AMD
// forms), the arena is laid out for `threads` decode threads in stripes
// (kernels.h): region s holds stripe s of every such matrix in the order a
// forward pass reads them, so each of a decode thread's two runs is one
// stream through the whole step, the prefetcher never starting over at a
// product. In a model of the TinyLlama-shaped layers' four products (Q4_0,
// 2 threads, a barrier after each product, AMD EPYC Zen 5) the stripes read
// 0.965-0.973 of the read probe where one copy a matrix read 0.940-0.946
// (fast state), 0.989-0.999 against 0.976-0.978 (slow); whole decode
// steps: docs/performance.md. Other matrices follow the regions, each at a
// 4 KiB boundary.
static el_status pack_weights(el_model *m, int threads, el_error *err) {
    el_isa isa = el_cpu_isa();
    int most = (m->layer_end - m->layer_begin) * 7 + 1, n = 0;
    if (threads <= 0) threads = el_cpu_online();  // as el_pool_new(0)
    const int T = threads <= EL_MAX_STRIPE_THREADS ? threads : 0, S = 2 * T;
    el_tensor **mats = calloc((size_t)most, sizeof *mats);
    int64_t *rows = calloc((size_t)most, sizeof *rows);
    size_t *bytes = calloc((size_t)most, sizeof *bytes), total = 0, page = 4096, reg[2 * EL_MAX_STRIPE_THREADS] = {0};
    int n_striped = 0;
    char *arena = NULL, *striped = calloc((size_t)most, 1);  // matrix i in stripes
    el_status s = EL_OK;
    if (!mats || !rows || !bytes || !striped) {
        s = el_err(err, EL_ERR_NOMEM, "%s: out of memory", m->path);
        goto out;
    }
    // in the order a forward pass reads them
    for (int l = m->layer_begin; l < m->layer_end; l++) {
        el_layer *L = &m->layers[l];
        el_tensor *ls[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int i = 0; i < 7; i++) mats[n++] = ls[i];
    }
    if (m->has_head) mats[n++] = &m->output;
    for (int i = 0; i < n; i++) {
        bytes[i] = el_matmul_pack_size(mats[i], isa, &rows[i]);
        if (bytes[i] > SIZE_MAX / 4 - page - total) {
            s = el_err(err, EL_ERR_NOMEM, "%s: %s packed past the address space", m->path, mats[i]->name);
            goto out;
        }
        striped[i] = bytes[i] && T && el_gemm_runs_kernel(mats[i]->dtype, isa);
        if (striped[i]) {
            int64_t np = rows[i] / 32;
            size_t pb = bytes[i] / (size_t)np;
            for (int k = 0; k < S; k++) reg[k] += (size_t)(el_stripe_first(np, T, k + 1) - el_stripe_first(np, T, k)) * pb;
            n_striped++;
            total += bytes[i];
        } else {
            total += (bytes[i] + page - 1) & ~(page - 1);
        }
    }
    if (n_striped) total += (size_t)S * page;  // each region from a page boundary
    if (!total) goto out;
    arena = el_malloc_huge(total);
    const char **ptrs = n_striped ? calloc((size_t)n_striped * (size_t)S, sizeof *ptrs) : NULL;
    if (!arena || (n_striped && !ptrs)) {
        el_free_aligned(arena);
        free(ptrs);
        s = el_err(err, EL_ERR_NOMEM, "%s: out of memory packing its weights (%zu bytes)", m->path, total);
        goto out;
    }
    m->pack_arena = arena;
    m->stripe_ptrs = ptrs;
    size_t cur[2 * EL_MAX_STRIPE_THREADS], off = 0;
    for (int k = 0; k < S; k++) {
        cur[k] = off;
        off += (reg[k] + page - 1) & ~(page - 1);
    }
    for (int i = 0; i < n; i++) {
        el_tensor *t = mats[i];
        if (!bytes[i]) continue;
        if (striped[i]) {  // each stripe packed into its region
            int64_t np = rows[i] / 32;
            size_t pb = bytes[i] / (size_t)np, rs = el_tensor_row_size(t);
            for (int k = 0; k < S; k++) {
                // a pair is packed from its own 32 rows: a stripe is the packed copy of its rows alone
                int64_t first = el_stripe_first(np, T, k), end = el_stripe_first(np, T, k + 1);
                el_tensor rows_k = *t;
                rows_k.data = (char *)t->data + (size_t)(32 * first) * rs;
                rows_k.ne[1] = 32 * (end - first);
                rows_k.nbytes = (size_t)rows_k.ne[1] * rs;
                if (end > first) el_matmul_pack(&rows_k, rows_k.ne[1], arena + cur[k]);
                ptrs[k] = arena + cur[k];
                cur[k] += (size_t)(end - first) * pb;
            }
            t->packed_stripes = T;
            t->stripe = ptrs;
            ptrs += S;
        } else {
            el_matmul_pack(t, rows[i], arena + off);
            t->packed_stripes = 0;
            t->stripe = NULL;
        }
        t->packed = t->packed_stripes ? t->stripe[0] : arena + off;
        t->packed_rows = rows[i];
        m->packed_bytes += bytes[i];
        if (!t->packed_stripes) off += (bytes[i] + page - 1) & ~(page - 1);
        // The file's pages the packed copy replaces go back to the kernel: resident memory stays at
        // one copy of the weights (a tied head shares its rows with the embedding lookup: keep those).
        if (m->format == EL_MODEL_GGUF && !(t == &m->output && m->hp.tied_output)) release_pages(t->data, t->nbytes);
    }
out:
    free(striped);
    free(mats);
    free(rows);
    free(bytes);
    return s;
}

// ---------------------------------------------------------------- llama2.c

static const char *own_name(el_model *m, const char *name) {
    char *copy = strdup(name);
    if (!copy) return "?";
    m->names[m->n_names++] = copy;
    return copy;
}

static void view(el_model *m, el_tensor *t, const char *name, size_t off_floats, int64_t ne0, int64_t ne1) {
    memset(t, 0, sizeof *t);
    t->name = own_name(m, name);
    t->dtype = EL_DTYPE_F32;
    t->n_dims = ne1 ? 2 : 1;
    t->ne[0] = ne0;
    t->ne[1] = ne1 ? ne1 : 1;
    t->data = (float *)m->map + off_floats;
    t->nbytes = (size_t)ne0 * (size_t)(ne1 ? ne1 : 1) * 4;
}

static el_status open_llama2c(el_model *m, el_llama2c *c, el_error *err) {
    el_status s = el_llama2c_open(m->path, c, err);
    if (s) return s;
    m->format = EL_MODEL_LLAMA2C;
    m->map = c->map;
    m->map_size = c->size;
    c->map = NULL;  // the model owns the mapping now
    el_hparams *h = &m->hp;
    snprintf(h->arch, sizeof h->arch, "llama");
    h->dim = c->dim, h->n_layers = c->n_layers, h->n_heads = c->n_heads, h->n_kv_heads = c->n_kv_heads;
    h->head_dim = c->dim / c->n_heads, h->ff = c->hidden_dim, h->vocab = c->vocab_size, h->ctx = c->seq_len;
    h->rms_eps = 1e-5f;
    h->rope_theta = 10000.0f;
    h->rope_scale = 1.0f;
    h->tied_output = c->shared_classifier;
    return check_hparams(m, err);
}

static el_status bind_llama2c(el_model *m, const el_llama2c *c, el_error *err) {
    const el_hparams *h = &m->hp;
    size_t dim = (size_t)h->dim, kv = (size_t)h->n_kv_heads * h->head_dim, ff = (size_t)h->ff;
    m->names = calloc((size_t)h->n_layers * 9 + 4, sizeof *m->names);
    if (!m->names) return el_err(err, EL_ERR_NOMEM, "%s: out of memory", m->path);
    if (m->has_embed) view(m, &m->tok_embd, "token_embd.weight", c->off_embed, h->dim, h->vocab);
    if (m->has_head) {
        view(m, &m->output_norm, "output_norm.weight", c->off_rms_final, h->dim, 0);
        view(m, &m->output, h->tied_output ? "token_embd.weight" : "output.weight", c->off_wcls, h->dim, h->vocab);
    }
    for (int l = m->layer_begin; l < m->layer_end; l++) {
        el_layer *L = &m->layers[l];
        size_t ul = (size_t)l;
        char n[64];
#define V(field, part, off, ne0, ne1)                          \
    snprintf(n, sizeof n, "blk.%d." part ".weight", l);       \
    view(m, &L->field, n, off, ne0, ne1)
        V(attn_norm, "attn_norm", c->off_rms_att + ul * dim, h->dim, 0);
        V(wq, "attn_q", c->off_wq + ul * dim * dim, h->dim, h->dim);
        V(wk, "attn_k", c->off_wk + ul * dim * kv, h->dim, (int64_t)kv);
        V(wv, "attn_v", c->off_wv + ul * dim * kv, h->dim, (int64_t)kv);
        V(wo, "attn_output", c->off_wo + ul * dim * dim, h->dim, h->dim);
        V(ffn_norm, "ffn_norm", c->off_rms_ffn + ul * dim, h->dim, 0);
        V(w_gate, "ffn_gate", c->off_w1 + ul * ff * dim, h->dim, h->ff);
        V(w_down, "ffn_down", c->off_w2 + ul * dim * ff, h->ff, h->dim);
        V(w_up, "ffn_up", c->off_w3 + ul * ff * dim, h->dim, h->ff);
#undef V
    }
    return EL_OK;
}

// ---------------------------------------------------------------- public

static el_status finish_open(el_model *m, el_model_opts o, int is_gguf, el_llama2c *c, el_status s,
                             el_model **out, el_error *err);

el_status el_model_open_gguf(el_gguf *g, const char *label, const el_model_opts *opts, el_model **out,
                             el_error *err) {
    *out = NULL;
    el_model_opts o = {0};
    if (opts) o = *opts;
    if (!label) label = g && g->path ? g->path : "<gguf>";
    el_model *m = calloc(1, sizeof *m);
    if (!m || !(m->path = strdup(label))) {
        free(m);
        el_gguf_close(g);
        return el_err(err, EL_ERR_NOMEM, "%s: out of memory", label);
    }
    m->gguf = g;
    return finish_open(m, o, 1, NULL, g ? read_gguf(m, err) : el_err(err, EL_ERR_ARG, "%s: no GGUF", label), out, err);
}

el_status el_model_open(const char *path, const el_model_opts *opts, el_model **out, el_error *err) {
    *out = NULL;
    el_model_opts o = {0};
    if (opts) o = *opts;
    el_model *m = calloc(1, sizeof *m);
    if (!m || !(m->path = strdup(path))) {
        free(m);
        return el_err(err, EL_ERR_NOMEM, "%s: out of memory", path);
    }
    FILE *f = fopen(path, "rb");
    char magic[4] = {0};
    size_t got = f ? fread(magic, 1, 4, f) : 0;
    if (f) fclose(f);
    el_status s;
    el_llama2c c = {0};
    int is_gguf = got == 4 && !memcmp(magic, "GGUF", 4);
    if (is_gguf) {
        s = el_gguf_open(m->path, &m->gguf, err);
        if (!s) s = read_gguf(m, err);
    } else {
        s = open_llama2c(m, &c, err);
        if (s == EL_ERR_FORMAT && got == 4) {
            // Say what the first bytes were: a file that is neither format.
            char why[sizeof err->msg];
            snprintf(why, sizeof why, "%s", err->msg);
            el_err(err, s, "%s (not GGUF either: magic bytes %02x %02x %02x %02x)", why, (unsigned char)magic[0],
                   (unsigned char)magic[1], (unsigned char)magic[2], (unsigned char)magic[3]);
        }
    }
    return finish_open(m, o, is_gguf, &c, s, out, err);
}

// The part both ways of opening share: the layer range, binding and checking
// the tensors, packing. s is the status so far; m is closed on failure.
static el_status finish_open(el_model *m, el_model_opts o, int is_gguf, el_llama2c *c, el_status s,
                             el_model **out, el_error *err) {
    const char *path = m->path;
    if (!s) {
        if (o.no_layers) o.layer_end = o.layer_begin;
        else if (o.layer_end == 0) o.layer_end = m->hp.n_layers;
        if (o.layer_begin < 0 || o.layer_begin > o.layer_end || o.layer_end > m->hp.n_layers)
            s = el_err(err, EL_ERR_ARG, "%s: layer range %d:%d is outside the model's 0:%d", path, o.layer_begin,
                       o.layer_end, m->hp.n_layers);
    }
    if (!s) {
        m->layer_begin = o.layer_begin;
        m->layer_end = o.layer_end;
        m->has_embed = !o.no_embed;
        m->has_head = !o.no_head;
        m->layers = calloc((size_t)m->hp.n_layers, sizeof *m->layers);
        if (!m->layers) s = el_err(err, EL_ERR_NOMEM, "%s: out of memory", path);
    }
    if (!s) {
        // The llama2.c parse already told the file apart; re-derive its offsets.
        if (!is_gguf) s = el_llama2c_parse(m->map, m->map_size, path, c, err);
        if (!s) s = is_gguf ? bind_gguf(m, err) : bind_llama2c(m, c, err);
    }
    if (!s) s = check_bound(m, !o.no_scan, err);
    if (!s && !o.no_pack) s = pack_weights(m, o.threads, err);
    if (s) {
        el_model_close(m);
        return s;
    }
    *out = m;
    return EL_OK;
}

void el_model_close(el_model *m) {
    if (!m) return;
    el_gguf_close(m->gguf);
    el_llama2c lc = {0};
    lc.map = m->map;
    lc.size = m->map_size;
    el_llama2c_close(&lc);
    el_free_aligned(m->pack_arena);
    free(m->stripe_ptrs);
    for (int i = 0; i < m->n_names; i++) free(m->names[i]);
    free(m->names);
    free(m->layers);
    free(m->path);
    free(m);
}

static size_t layer_bytes(const el_layer *L) {
    return L->attn_norm.nbytes + L->wq.nbytes + L->wk.nbytes + L->wv.nbytes + L->wo.nbytes + L->ffn_norm.nbytes +
           L->w_gate.nbytes + L->w_down.nbytes + L->w_up.nbytes + L->bq.nbytes + L->bk.nbytes + L->bv.nbytes;
}

size_t el_model_weight_bytes(const el_model *m, int a, int b, int with_embed, int with_head) {
    size_t n = 0;
    for (int l = a; l < b; l++)
        if (l >= m->layer_begin && l < m->layer_end) n += layer_bytes(&m->layers[l]);
    if (with_embed && m->has_embed) n += m->tok_embd.nbytes;
    if (with_head && m->has_head) n += m->output_norm.nbytes + (m->hp.tied_output && with_embed && m->has_embed ? 0 : m->output.nbytes);
    return n;
}

uint64_t el_model_n_params(const el_model *m) {
    const el_hparams *h = &m->hp;
    uint64_t dim = (uint64_t)h->dim, q = (uint64_t)h->n_heads * h->head_dim, kv = (uint64_t)h->n_kv_heads * h->head_dim;
    uint64_t per_layer = 2 * dim + dim * q + 2 * dim * kv + q * dim + 3 * dim * (uint64_t)h->ff;
    if (h->has_qkv_bias) per_layer += q + 2 * kv;
    uint64_t n = per_layer * (uint64_t)h->n_layers + (uint64_t)h->vocab * dim + dim;
    if (!h->tied_output) n += (uint64_t)h->vocab * dim;
    return n;
}

static uint64_t hash_tensor(uint64_t x, const el_tensor *t) {
    if (!t->name) return x;  // an absent optional tensor (bias)
    x = el_fnv1a(x, t->name, strlen(t->name));
    x = el_fnv1a(x, &t->dtype, sizeof t->dtype);
    x = el_fnv1a(x, t->ne, sizeof t->ne);
    // Sample the content: 16 windows of 64 bytes spread over the tensor.
    const unsigned char *d = t->data;
    size_t n = t->nbytes;
    for (int i = 0; i < 16 && n; i++) {
        size_t at = n > 64 ? (n - 64) / 15 * (size_t)i : 0;
        x = el_fnv1a(x, d + at, n < 64 ? n : 64);
    }
    return x;
}

uint64_t el_model_identity(const el_model *m, int a, int b) {
    uint64_t x = EL_FNV_INIT;
    const el_hparams *h = &m->hp;
    int hp[] = {h->dim, h->n_layers, h->n_heads, h->n_kv_heads, h->head_dim, h->ff, h->vocab};
    x = el_fnv1a(x, hp, sizeof hp);
    x = el_fnv1a(x, &h->rms_eps, sizeof h->rms_eps);
    x = el_fnv1a(x, &h->rope_theta, sizeof h->rope_theta);
    int variant[] = {(int)h->family, (int)h->rope_type, (int)h->rope_scaling, h->has_qkv_bias, h->sliding_window};
    x = el_fnv1a(x, variant, sizeof variant);
    x = el_fnv1a(x, &h->rope_scale, sizeof h->rope_scale);
    if (m->rope_freqs.data) x = hash_tensor(x, &m->rope_freqs);
    for (int l = a; l < b; l++) {
        if (l < m->layer_begin || l >= m->layer_end) continue;
        const el_tensor *ts = (const el_tensor *)&m->layers[l];
        for (size_t i = 0; i < sizeof(el_layer) / sizeof(el_tensor); i++) x = hash_tensor(x, &ts[i]);
    }
    return x;
}

int el_model_ctx_warning(const el_model *m, int ctx, char *msg, size_t n) {
    if (ctx <= m->hp.ctx) return 0;
    snprintf(msg, n, "context %d is longer than the %d positions %s was trained on; expect worse text past %d", ctx,
             m->hp.ctx, m->path, m->hp.ctx);
    return 1;
}

el_status el_model_tokenizer(const el_model *m, const char *tok_path, el_tokenizer **out, el_error *err) {
    *out = NULL;
    if (!tok_path) {
        if (!m->gguf)
            return el_err(err, EL_ERR_ARG, "%s: a llama2.c checkpoint has no tokenizer inside; pass one with -z", m->path);
        el_status s = el_tokenizer_from_gguf(m->gguf, out, err);
        // ids the embedding has no row for would fail later, mid-run
        if (!s && el_tokenizer_n_vocab(*out) > m->hp.vocab) {
            s = el_err(err, EL_ERR_FORMAT, "%s: its tokenizer has %d tokens but the model's vocabulary only %d",
                       m->path, el_tokenizer_n_vocab(*out), m->hp.vocab);
            el_tokenizer_free(*out);
            *out = NULL;
        }
        return s;
    }
    FILE *f = fopen(tok_path, "rb");
    char magic[4] = {0};
    size_t got = f ? fread(magic, 1, 4, f) : 0;
    if (f) fclose(f);
    el_status s;
    if (got == 4 && !memcmp(magic, "GGUF", 4)) {
        el_gguf *g;
        if ((s = el_gguf_open(tok_path, &g, err))) return s;
        s = el_tokenizer_from_gguf(g, out, err);
        el_gguf_close(g);
    } else {
        s = el_tokenizer_load_llama2c(tok_path, 0, out, err);
    }
    if (!s && el_tokenizer_n_vocab(*out) != m->hp.vocab) {
        s = el_err(err, EL_ERR_FORMAT, "%s: tokenizer has %d tokens but model %s has vocab %d", tok_path,
                   el_tokenizer_n_vocab(*out), m->path, m->hp.vocab);
        el_tokenizer_free(*out);
        *out = NULL;
    }
    return s;
}

// ---------------------------------------------------------------- families

const char *el_family_name(el_family f) { return f == EL_FAMILY_QWEN2 ? "qwen2" : "llama"; }

void el_model_family_desc(const el_model *m, char *buf, size_t n) {
    const el_hparams *h = &m->hp;
    char pre[32] = "";
    if (m->gguf) el_gguf_get_str(m->gguf, "tokenizer.ggml.pre", pre, sizeof pre);
    const char *base = h->family == EL_FAMILY_QWEN2 ? "Qwen2"
                     : h->rope_scaling == EL_ROPE_SCALING_FREQS || !strcmp(pre, "llama-bpe") ? "Llama 3"
                     : h->sliding_window ? "Mistral"
                     : "Llama";
    int o = snprintf(buf, n, "%s (%s rope%s%s", base, h->rope_type == EL_ROPE_NEOX ? "neox" : "normal",
                     h->has_qkv_bias ? ", q/k/v biases" : "",
                     h->rope_scaling == EL_ROPE_SCALING_FREQS ? ", rope_freqs scaling"
                     : h->rope_scaling == EL_ROPE_SCALING_LINEAR ? ", linear rope scaling" : "");
    if (o >= 0 && (size_t)o < n && h->sliding_window) o += snprintf(buf + o, n - (size_t)o, ", sliding window %d", h->sliding_window);
    if (o >= 0 && (size_t)o < n) snprintf(buf + o, n - (size_t)o, ")");
}

void el_model_rope_freqs(const el_model *m, float *inv_freq) {
    const el_hparams *h = &m->hp;
    el_rope_freqs(inv_freq, h->head_dim, h->rope_theta);
    for (int i = 0; i < h->head_dim / 2; i++) {
        if (h->rope_scaling == EL_ROPE_SCALING_LINEAR) inv_freq[i] /= h->rope_scale;
        else if (h->rope_scaling == EL_ROPE_SCALING_FREQS) inv_freq[i] /= ((const float *)m->rope_freqs.data)[i];
    }
}

void el_rope_llama3_divisors(float *out, int head_dim, float theta, float factor, float low_freq_factor,
                             float high_freq_factor, int orig_ctx) {
    double lo_wavelen = orig_ctx / (double)low_freq_factor, hi_wavelen = orig_ctx / (double)high_freq_factor;
    for (int i = 0; i < head_dim / 2; i++) {
        double freq = pow(theta, -2.0 * i / head_dim), wavelen = 2 * M_PI / freq;
        if (wavelen < hi_wavelen) {
            out[i] = 1.0f;
        } else if (wavelen > lo_wavelen) {
            out[i] = factor;
        } else {
            double smooth = (orig_ctx / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
            out[i] = (float)(1.0 / ((1 - smooth) / factor + smooth));
        }
    }
}
