// The Llama forward pass over one stage: embedding, the layer loop, and the
// head, with a per-session KV cache. Read `layer_forward` top to bottom: it is
// the model.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/kernels.h"
#include "edgellm/lora.h"
#include "edgellm/model.h"

struct el_session {
    const el_model *m;
    el_pool *pool;
    int layer_begin, layer_end;
    int ctx, max_batch;
    int dim, q_dim, kv_dim, ff;
    float *k_cache, *v_cache;  // [layer - layer_begin][ctx][kv_dim]
    float *inv_freq;           // [head_dim / 2]
    // scratch, sized for max_batch rows
    float *xb;     // [B, dim]   normed input
    float *q;      // [B, q_dim]
    float *k, *v;  // [B, kv_dim]
    float *att;    // [B, q_dim] attention output
    float *hb, *hb2;    // [B, ff]
    float *proj;        // [B, dim]
    const el_lora_set *lora;  // adapters applied to the projections (borrowed; may be NULL)
};

static int64_t kv_offset(const el_session *s, int layer, int pos) {
    return ((int64_t)(layer - s->layer_begin) * s->ctx + pos) * s->kv_dim;
}

el_status el_session_new(const el_model *m, const el_session_opts *opts, el_pool *pool, el_session **out,
                         el_error *err) {
    *out = NULL;
    el_session_opts o = {0};
    if (opts) o = *opts;
    if (o.no_layers) {
        o.layer_end = o.layer_begin = m->layer_begin;
    } else {
        if (o.layer_end == 0 && o.layer_begin == 0) o.layer_begin = m->layer_begin;
        if (o.layer_end == 0) o.layer_end = m->layer_end;
    }
    if (o.layer_begin < m->layer_begin || o.layer_end > m->layer_end || o.layer_begin > o.layer_end)
        return el_err(err, EL_ERR_ARG, "%s: session layers %d:%d are not within the loaded range %d:%d", m->path,
                      o.layer_begin, o.layer_end, m->layer_begin, m->layer_end);
    if (o.ctx <= 0) o.ctx = m->hp.ctx;
    if (o.ctx > (1 << 20)) return el_err(err, EL_ERR_RANGE, "context %d is too large", o.ctx);
    if (o.max_batch <= 0) o.max_batch = 512;
    if (o.max_batch > o.ctx) o.max_batch = o.ctx;
    el_session *s = calloc(1, sizeof *s);
    if (!s) return el_err(err, EL_ERR_NOMEM, "out of memory for a session");
    const el_hparams *h = &m->hp;
    s->m = m;
    s->pool = pool;
    s->layer_begin = o.layer_begin;
    s->layer_end = o.layer_end;
    s->ctx = o.ctx;
    s->max_batch = o.max_batch;
    s->dim = h->dim;
    s->q_dim = h->n_heads * h->head_dim;
    s->kv_dim = h->n_kv_heads * h->head_dim;
    s->ff = h->ff;
    size_t B = (size_t)o.max_batch, nl = (size_t)(o.layer_end - o.layer_begin);
    s->k_cache = el_calloc(nl * (size_t)o.ctx, (size_t)s->kv_dim * sizeof(float));
    s->v_cache = el_calloc(nl * (size_t)o.ctx, (size_t)s->kv_dim * sizeof(float));
    s->inv_freq = el_calloc((size_t)h->head_dim / 2 + 1, sizeof(float));
    s->xb = el_calloc(B * (size_t)s->dim, sizeof(float));
    s->q = el_calloc(B * (size_t)s->q_dim, sizeof(float));
    s->k = el_calloc(B * (size_t)s->kv_dim, sizeof(float));
    s->v = el_calloc(B * (size_t)s->kv_dim, sizeof(float));
    s->att = el_calloc(B * (size_t)s->q_dim, sizeof(float));
    s->hb = el_calloc(B * (size_t)s->ff, sizeof(float));
    s->hb2 = el_calloc(B * (size_t)s->ff, sizeof(float));
    s->proj = el_calloc(B * (size_t)s->dim, sizeof(float));
    if (!s->k_cache || !s->v_cache || !s->inv_freq || !s->xb || !s->q || !s->k || !s->v || !s->att || !s->hb || !s->hb2 || !s->proj) {
        el_session_free(s);
        return el_err(err, EL_ERR_NOMEM, "out of memory for a session of %d positions", o.ctx);
    }
    el_model_rope_freqs(m, s->inv_freq);  // with the model's rope scaling
    *out = s;
    return EL_OK;
}

void el_session_free(el_session *s) {
    if (!s) return;
    free(s->k_cache);
    free(s->v_cache);
    free(s->inv_freq);
    free(s->xb);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->att);
    free(s->hb);
    free(s->hb2);
    free(s->proj);
    free(s);
}

int el_session_ctx(const el_session *s) { return s->ctx; }
void el_session_set_lora(el_session *s, const el_lora_set *set) { s->lora = set && set->n ? set : NULL; }
int el_session_max_batch(const el_session *s) { return s->max_batch; }
size_t el_session_kv_bytes(const el_session *s) {
    return 2 * (size_t)(s->layer_end - s->layer_begin) * (size_t)s->ctx * (size_t)s->kv_dim * sizeof(float);
}

el_status el_session_embed(el_session *s, const int *tokens, int n, float *x, el_error *err) {
    const el_model *m = s->m;
    if (!m->has_embed) return el_err(err, EL_ERR_STATE, "%s: token embedding is not loaded on this stage", m->path);
    for (int i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= m->hp.vocab)
            return el_err(err, EL_ERR_RANGE, "token id %d is outside the vocabulary (0..%d)", tokens[i], m->hp.vocab - 1);
        el_tensor_row_f32(&m->tok_embd, tokens[i], x + (size_t)i * s->dim);
    }
    return EL_OK;
}

// ---------------------------------------------------------------- attention

#define ATTN_TOKENS_PER_TASK 16

typedef struct {
    el_session *s;
    int layer, n, pos;
    int token_blocks;
} attn_job;

// Causal grouped-query attention for one head over a block of tokens:
// att[t, h] = softmax(q[t,h] · K[0..pos+t]ᵀ / √hd) · V[0..pos+t]
static void attn_task(void *ctx, int task, int n_tasks) {
    (void)n_tasks;
    const attn_job *j = ctx;
    el_session *s = j->s;
    const el_hparams *hp = &s->m->hp;
    int hd = hp->head_dim, group = hp->n_heads / hp->n_kv_heads;
    int h = task / j->token_blocks, t0 = task % j->token_blocks * ATTN_TOKENS_PER_TASK;
    int t1 = t0 + ATTN_TOKENS_PER_TASK < j->n ? t0 + ATTN_TOKENS_PER_TASK : j->n;
    int kvh = h / group;
    float *scores = malloc((size_t)(j->pos + t1) * sizeof(float));
    if (!scores) return;  // unreachable in practice: at most ctx floats
    const float *kc = s->k_cache + kv_offset(s, j->layer, 0) + (size_t)kvh * hd;
    const float *vc = s->v_cache + kv_offset(s, j->layer, 0) + (size_t)kvh * hd;
    float scale = 1.0f / sqrtf((float)hd);
    for (int t = t0; t < t1; t++) {
        int end = j->pos + t + 1;  // positions this token may attend to
        // sliding window (Mistral): only the latest sliding_window positions, itself included
        int start = hp->sliding_window && end > hp->sliding_window ? end - hp->sliding_window : 0;
        const float *q = s->q + (size_t)t * s->q_dim + (size_t)h * hd;
        int n = end - start;
        el_attn_scores(scores, q, kc + (size_t)start * s->kv_dim, (size_t)s->kv_dim, n, hd, scale);
        el_softmax(scores, n);
        el_attn_mix(s->att + (size_t)t * s->q_dim + (size_t)h * hd, scores, vc + (size_t)start * s->kv_dim,
                    (size_t)s->kv_dim, n, hd);
    }
    free(scores);
}

// ---------------------------------------------------------------- one layer

// q[t] += bq, k[t] += bk, v[t] += bv for every row
static void add_qkv_bias(el_session *s, const el_layer *L, int n) {
    const float *bq = L->bq.data, *bk = L->bk.data, *bv = L->bv.data;
    for (int t = 0; t < n; t++) {
        float *q = s->q + (size_t)t * s->q_dim, *k = s->k + (size_t)t * s->kv_dim, *v = s->v + (size_t)t * s->kv_dim;
        for (int i = 0; i < s->q_dim; i++) q[i] += bq[i];
        for (int i = 0; i < s->kv_dim; i++) k[i] += bk[i], v[i] += bv[i];
    }
}

// x[n, dim] += Attention(RMSNorm(x)); x += FFN(RMSNorm(x)), positions pos..pos+n-1
static void layer_forward(el_session *s, int l, float *x, int n, int pos) {
    const el_hparams *hp = &s->m->hp;
    const el_layer *L = &s->m->layers[l];
    int dim = s->dim;

    // attention block
    for (int t = 0; t < n; t++)
        el_rmsnorm(s->xb + (size_t)t * dim, x + (size_t)t * dim, L->attn_norm.data, dim, hp->rms_eps);
    el_matmul_many(s->pool, 3, (float *[]){s->q, s->k, s->v}, s->xb, (const el_tensor *[]){&L->wq, &L->wk, &L->wv}, n);
    el_lora_apply(s->lora, l, EL_LORA_Q, s->q, s->xb, n);  // no-ops without adapters
    el_lora_apply(s->lora, l, EL_LORA_K, s->k, s->xb, n);
    el_lora_apply(s->lora, l, EL_LORA_V, s->v, s->xb, n);
    if (hp->has_qkv_bias) add_qkv_bias(s, L, n);  // Qwen2
    void (*rope)(float *, int, int, int, const float *) = hp->rope_type == EL_ROPE_NEOX ? el_rope_neox : el_rope;
    for (int t = 0; t < n; t++) {
        rope(s->q + (size_t)t * s->q_dim, hp->n_heads, hp->head_dim, pos + t, s->inv_freq);
        rope(s->k + (size_t)t * s->kv_dim, hp->n_kv_heads, hp->head_dim, pos + t, s->inv_freq);
    }
    memcpy(s->k_cache + kv_offset(s, l, pos), s->k, (size_t)n * s->kv_dim * sizeof(float));
    memcpy(s->v_cache + kv_offset(s, l, pos), s->v, (size_t)n * s->kv_dim * sizeof(float));
    attn_job aj = {s, l, n, pos, (n + ATTN_TOKENS_PER_TASK - 1) / ATTN_TOKENS_PER_TASK};
    el_pool_run(s->pool, attn_task, &aj, aj.token_blocks * hp->n_heads);
    el_matmul(s->pool, s->proj, s->att, &L->wo, n);
    el_lora_apply(s->lora, l, EL_LORA_O, s->proj, s->att, n);
    for (size_t i = 0; i < (size_t)n * dim; i++) x[i] += s->proj[i];

    // feed-forward block (SwiGLU)
    for (int t = 0; t < n; t++)
        el_rmsnorm(s->xb + (size_t)t * dim, x + (size_t)t * dim, L->ffn_norm.data, dim, hp->rms_eps);
    el_matmul_many(s->pool, 2, (float *[]){s->hb, s->hb2}, s->xb, (const el_tensor *[]){&L->w_gate, &L->w_up}, n);
    el_lora_apply(s->lora, l, EL_LORA_GATE, s->hb, s->xb, n);
    el_lora_apply(s->lora, l, EL_LORA_UP, s->hb2, s->xb, n);
    el_swiglu(s->hb, s->hb, s->hb2, n * s->ff);
    el_matmul(s->pool, s->proj, s->hb, &L->w_down, n);
    el_lora_apply(s->lora, l, EL_LORA_DOWN, s->proj, s->hb, n);
    for (size_t i = 0; i < (size_t)n * dim; i++) x[i] += s->proj[i];
}

el_status el_session_layers(el_session *s, float *x, int n, int pos, el_error *err) {
    if (n <= 0 || n > s->max_batch)
        return el_err(err, EL_ERR_RANGE, "batch of %d positions is outside 1..%d", n, s->max_batch);
    if (pos < 0 || pos > s->ctx - n)
        return el_err(err, EL_ERR_RANGE, "positions %d..%d exceed the context of %d", pos, pos + n - 1, s->ctx);
    for (int l = s->layer_begin; l < s->layer_end; l++) layer_forward(s, l, x, n, pos);
    return EL_OK;
}

el_status el_session_head(el_session *s, const float *x, int n, int n_out, float *logits, el_error *err) {
    const el_model *m = s->m;
    if (!m->has_head) return el_err(err, EL_ERR_STATE, "%s: output head is not loaded on this stage", m->path);
    if (n_out <= 0 || n_out > n || n > s->max_batch)
        return el_err(err, EL_ERR_RANGE, "head over %d of %d rows is invalid", n_out, n);
    const float *rows = x + (size_t)(n - n_out) * s->dim;
    for (int t = 0; t < n_out; t++)
        el_rmsnorm(s->xb + (size_t)t * s->dim, rows + (size_t)t * s->dim, m->output_norm.data, s->dim, m->hp.rms_eps);
    el_matmul(s->pool, logits, s->xb, &m->output, n_out);
    return EL_OK;
}

el_status el_session_forward(el_session *s, const int *tokens, int n, int pos, float *logits, int logits_all,
                             el_error *err) {
    el_status st = EL_OK;
    if (n <= 0) return el_err(err, EL_ERR_ARG, "nothing to evaluate (0 tokens)");
    float *x = el_calloc((size_t)n * s->dim, sizeof(float));
    if (!x) return el_err(err, EL_ERR_NOMEM, "out of memory");
    for (int done = 0; done < n; done += s->max_batch) {
        int chunk = n - done < s->max_batch ? n - done : s->max_batch;
        float *xc = x + (size_t)done * s->dim;
        if ((st = el_session_embed(s, tokens + done, chunk, xc, err)) ||
            (st = el_session_layers(s, xc, chunk, pos + done, err)))
            break;
        if (logits_all && (st = el_session_head(s, xc, chunk, chunk, logits + (size_t)done * s->m->hp.vocab, err)))
            break;
    }
    if (!st && !logits_all) st = el_session_head(s, x + (size_t)(n - 1) * s->dim, 1, 1, logits, err);
    free(x);
    return st;
}
