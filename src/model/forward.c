// The Llama forward pass over one stage: embedding, the layer loop, and the
// head, with a per-session KV cache. Read `layer_forward` top to bottom: it is
// the model.
#include <math.h>
#include <stdint.h>
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
    // [layer - layer_begin][kv head][ctx][head_dim]: a head's keys (values)
    // are one contiguous stream, which is how decode attention reads them
    float *k_cache, *v_cache;
    float *inv_freq;           // [head_dim / 2]
    struct scratch *sc;        // scratch, sized for max_batch rows
    struct el_session **row_sess;  // [max_batch] this session, for its own row map
    int *row_pos;                  // [max_batch]
    const el_lora_set *lora;  // adapters applied to the projections (borrowed; may be NULL)
};

static int64_t kv_offset(const el_session *s, int layer, int kvh, int pos) {
    const el_hparams *h = &s->m->hp;
    return (((int64_t)(layer - s->layer_begin) * h->n_kv_heads + kvh) * s->ctx + pos) * h->head_dim;
}

// Scratch of one forward call, sized for max rows (a session's, or a batch's).
typedef struct scratch {
    float *xb;     // [B, dim]   normed input
    float *q;      // [B, q_dim]
    float *k, *v;  // [B, kv_dim]
    float *att;    // [B, q_dim] attention output
    float *hb, *hb2;  // [B, ff]
    float *proj;      // [B, dim]
} scratch;

static void scratch_free(scratch *sc) {
    if (!sc) return;
    free(sc->xb);
    free(sc->q);
    free(sc->k);
    free(sc->v);
    free(sc->att);
    free(sc->hb);
    free(sc->hb2);
    free(sc->proj);
    free(sc);
}

static scratch *scratch_new(size_t B, const el_hparams *h) {
    scratch *sc = calloc(1, sizeof *sc);
    if (!sc) return NULL;
    size_t dim = (size_t)h->dim, q_dim = (size_t)h->n_heads * h->head_dim, kv_dim = (size_t)h->n_kv_heads * h->head_dim;
    sc->xb = el_calloc(B * dim, sizeof(float));
    sc->q = el_calloc(B * q_dim, sizeof(float));
    sc->k = el_calloc(B * kv_dim, sizeof(float));
    sc->v = el_calloc(B * kv_dim, sizeof(float));
    sc->att = el_calloc(B * q_dim, sizeof(float));
    sc->hb = el_calloc(B * (size_t)h->ff, sizeof(float));
    sc->hb2 = el_calloc(B * (size_t)h->ff, sizeof(float));
    sc->proj = el_calloc(B * dim, sizeof(float));
    if (!sc->xb || !sc->q || !sc->k || !sc->v || !sc->att || !sc->hb || !sc->hb2 || !sc->proj) {
        scratch_free(sc);
        return NULL;
    }
    return sc;
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
    s->sc = scratch_new(B, h);
    s->row_sess = el_calloc(B, sizeof *s->row_sess);
    s->row_pos = el_calloc(B, sizeof *s->row_pos);
    if (!s->k_cache || !s->v_cache || !s->inv_freq || !s->sc || !s->row_sess || !s->row_pos) {
        el_session_free(s);
        return el_err(err, EL_ERR_NOMEM, "out of memory for a session of %d positions", o.ctx);
    }
    for (size_t i = 0; i < B; i++) s->row_sess[i] = s;
    el_model_rope_freqs(m, s->inv_freq);  // with the model's rope scaling
    *out = s;
    return EL_OK;
}

void el_session_free(el_session *s) {
    if (!s) return;
    free(s->k_cache);
    free(s->v_cache);
    free(s->inv_freq);
    scratch_free(s->sc);
    free(s->row_sess);
    free(s->row_pos);
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

// ---------------------------------------------------------------- rows

// Which sequence and position each row of a layer's input belongs to. One
// session's prefill is n rows of that session at consecutive positions; a
// batched decode step is one row per session. Rows that share an adapter set
// are contiguous (segments), so each segment's low-rank product runs once.
typedef struct {
    int n;
    el_session *const *sess;  // [n] the session whose KV cache row r reads and extends
    const int *pos;           // [n] the position of row r
    int n_seg;
    const int *seg_start;                // [n_seg + 1] rows of segment i: seg_start[i] .. seg_start[i+1]-1
    const el_lora_set *const *seg_lora;  // [n_seg] adapters of segment i (NULL: none)
} row_map;

// y[n, out] += adapter product of x[n, in], per segment of rows
static void lora_rows(const row_map *rm, int l, int target, float *y, int out, const float *x, int in) {
    for (int i = 0; i < rm->n_seg; i++) {
        int a = rm->seg_start[i], b = rm->seg_start[i + 1];
        if (rm->seg_lora[i] && b > a)
            el_lora_apply(rm->seg_lora[i], l, target, y + (size_t)a * out, x + (size_t)a * in, b - a);
    }
}

// ---------------------------------------------------------------- attention

#define ATTN_TOKENS_PER_TASK 16

typedef struct {
    const el_hparams *hp;
    const scratch *sc;
    const row_map *rm;
    int layer, q_dim, kv_dim;
    int token_blocks;
} attn_job;

// Causal grouped-query attention for one head over a block of rows, each row
// against its own session's cache:
// att[t, h] = softmax(q[t,h] · K[0..pos[t]]ᵀ / √hd) · V[0..pos[t]]
static void attn_task(void *ctx, int task, int n_tasks) {
    (void)n_tasks;
    const attn_job *j = ctx;
    const el_hparams *hp = j->hp;
    const row_map *rm = j->rm;
    int hd = hp->head_dim, group = hp->n_heads / hp->n_kv_heads;
    int h = task / j->token_blocks, t0 = task % j->token_blocks * ATTN_TOKENS_PER_TASK;
    int t1 = t0 + ATTN_TOKENS_PER_TASK < rm->n ? t0 + ATTN_TOKENS_PER_TASK : rm->n;
    int kvh = h / group;
    int max_end = 0;
    for (int t = t0; t < t1; t++)
        if (rm->pos[t] + 1 > max_end) max_end = rm->pos[t] + 1;
    float *scores = malloc((size_t)max_end * sizeof(float));
    if (!scores) return;  // unreachable in practice: at most ctx floats
    float scale = 1.0f / sqrtf((float)hd);
    for (int t = t0; t < t1; t++) {
        const el_session *s = rm->sess[t];
        const float *kc = s->k_cache + kv_offset(s, j->layer, kvh, 0);
        const float *vc = s->v_cache + kv_offset(s, j->layer, kvh, 0);
        int end = rm->pos[t] + 1;  // positions this row may attend to
        // sliding window (Mistral): only the latest sliding_window positions, itself included
        int start = hp->sliding_window && end > hp->sliding_window ? end - hp->sliding_window : 0;
        int n = end - start;
        const float *q = j->sc->q + (size_t)t * j->q_dim + (size_t)h * hd;
        el_attn_scores(scores, q, kc + (size_t)start * hd, (size_t)hd, n, hd, scale);
        el_softmax(scores, n);
        el_attn_mix(j->sc->att + (size_t)t * j->q_dim + (size_t)h * hd, scores, vc + (size_t)start * hd, (size_t)hd, n,
                    hd);
    }
    free(scores);
}

// ---------------------------------------------------------------- one layer

// The row-wise steps between the matmuls, run over blocks of rows on the
// pool when a batch is large enough to be worth the hand-out (a prefill):
// serial, they left the other threads waiting for ~8% of prefill time.
enum { ROWS_NORM_ATTN, ROWS_ROPE_KV, ROWS_RESID_NORM_FFN, ROWS_SWIGLU, ROWS_RESID };
#define ROWS_PER_TASK 8

typedef struct {
    const el_model *m;
    const scratch *sc;
    const row_map *rm;
    float *x;
    int l, step;
} rows_job;

static void rows_task(void *ctx, int task, int n_tasks) {
    const rows_job *j = ctx;
    const el_hparams *hp = &j->m->hp;
    const el_layer *L = &j->m->layers[j->l];
    const scratch *sc = j->sc;
    int dim = hp->dim, q_dim = hp->n_heads * hp->head_dim, kv_dim = hp->n_kv_heads * hp->head_dim, ff = hp->ff;
    int t0 = n_tasks == 1 ? 0 : task * ROWS_PER_TASK, t1 = n_tasks == 1 ? j->rm->n : t0 + ROWS_PER_TASK;
    if (t1 > j->rm->n) t1 = j->rm->n;
    for (int t = t0; t < t1; t++) {
        float *x = j->x + (size_t)t * dim, *xb = sc->xb + (size_t)t * dim, *proj = sc->proj + (size_t)t * dim;
        switch (j->step) {
        case ROWS_NORM_ATTN: el_rmsnorm(xb, x, L->attn_norm.data, dim, hp->rms_eps); break;
        case ROWS_ROPE_KV: {
            el_session *s = j->rm->sess[t];
            int pos = j->rm->pos[t];
            float *q = sc->q + (size_t)t * q_dim, *k = sc->k + (size_t)t * kv_dim, *v = sc->v + (size_t)t * kv_dim;
            if (hp->has_qkv_bias) {  // Qwen2
                const float *bq = L->bq.data, *bk = L->bk.data, *bv = L->bv.data;
                for (int i = 0; i < q_dim; i++) q[i] += bq[i];
                for (int i = 0; i < kv_dim; i++) k[i] += bk[i], v[i] += bv[i];
            }
            void (*rope)(float *, int, int, int, const float *) = hp->rope_type == EL_ROPE_NEOX ? el_rope_neox : el_rope;
            rope(q, hp->n_heads, hp->head_dim, pos, s->inv_freq);
            rope(k, hp->n_kv_heads, hp->head_dim, pos, s->inv_freq);
            size_t hd_bytes = (size_t)hp->head_dim * sizeof(float);
            for (int g = 0; g < hp->n_kv_heads; g++) {
                memcpy(s->k_cache + kv_offset(s, j->l, g, pos), k + (size_t)g * hp->head_dim, hd_bytes);
                memcpy(s->v_cache + kv_offset(s, j->l, g, pos), v + (size_t)g * hp->head_dim, hd_bytes);
            }
            break;
        }
        case ROWS_RESID_NORM_FFN:
            for (int i = 0; i < dim; i++) x[i] += proj[i];
            el_rmsnorm(xb, x, L->ffn_norm.data, dim, hp->rms_eps);
            break;
        case ROWS_SWIGLU: {
            float *h = sc->hb + (size_t)t * ff;
            el_swiglu(h, h, sc->hb2 + (size_t)t * ff, ff);
            break;
        }
        case ROWS_RESID:
            for (int i = 0; i < dim; i++) x[i] += proj[i];
            break;
        }
    }
}

static void rows_run(el_pool *pool, rows_job *j, int step) {
    j->step = step;
    int n = j->rm->n, tasks = n >= 2 * ROWS_PER_TASK ? (n + ROWS_PER_TASK - 1) / ROWS_PER_TASK : 1;
    el_pool_run(pool, rows_task, j, tasks);  // one task runs inline
}

// x[n, dim] += Attention(RMSNorm(x)); x += FFN(RMSNorm(x)), row t at position
// rm->pos[t] of session rm->sess[t]. Base matmuls run once over all n rows.
static void layer_forward(const el_model *m, el_pool *pool, const scratch *sc, int l, float *x, const row_map *rm) {
    const el_hparams *hp = &m->hp;
    const el_layer *L = &m->layers[l];
    int n = rm->n, dim = hp->dim;
    int q_dim = hp->n_heads * hp->head_dim, kv_dim = hp->n_kv_heads * hp->head_dim, ff = hp->ff;
    rows_job rj = {m, sc, rm, x, l, 0};

    // attention block
    rows_run(pool, &rj, ROWS_NORM_ATTN);
    el_matmul_many(pool, 3, (float *[]){sc->q, sc->k, sc->v}, sc->xb, (const el_tensor *[]){&L->wq, &L->wk, &L->wv}, n);
    lora_rows(rm, l, EL_LORA_Q, sc->q, q_dim, sc->xb, dim);  // no-ops without adapters
    lora_rows(rm, l, EL_LORA_K, sc->k, kv_dim, sc->xb, dim);
    lora_rows(rm, l, EL_LORA_V, sc->v, kv_dim, sc->xb, dim);
    rows_run(pool, &rj, ROWS_ROPE_KV);  // (Qwen2's q/k/v biases,) rope, and the new keys and values into the cache
    attn_job aj = {hp, sc, rm, l, q_dim, kv_dim, (n + ATTN_TOKENS_PER_TASK - 1) / ATTN_TOKENS_PER_TASK};
    el_pool_run(pool, attn_task, &aj, aj.token_blocks * hp->n_heads);
    el_matmul(pool, sc->proj, sc->att, &L->wo, n);
    lora_rows(rm, l, EL_LORA_O, sc->proj, dim, sc->att, q_dim);

    // feed-forward block (SwiGLU)
    rows_run(pool, &rj, ROWS_RESID_NORM_FFN);
    el_matmul_many(pool, 2, (float *[]){sc->hb, sc->hb2}, sc->xb, (const el_tensor *[]){&L->w_gate, &L->w_up}, n);
    lora_rows(rm, l, EL_LORA_GATE, sc->hb, ff, sc->xb, dim);
    lora_rows(rm, l, EL_LORA_UP, sc->hb2, ff, sc->xb, dim);
    rows_run(pool, &rj, ROWS_SWIGLU);
    el_matmul(pool, sc->proj, sc->hb, &L->w_down, n);
    lora_rows(rm, l, EL_LORA_DOWN, sc->proj, dim, sc->hb, ff);
    rows_run(pool, &rj, ROWS_RESID);
}

el_status el_session_layers(el_session *s, float *x, int n, int pos, el_error *err) {
    if (n <= 0 || n > s->max_batch)
        return el_err(err, EL_ERR_RANGE, "batch of %d positions is outside 1..%d", n, s->max_batch);
    if (pos < 0 || pos > s->ctx - n)
        return el_err(err, EL_ERR_RANGE, "positions %d..%d exceed the context of %d", pos, pos + n - 1, s->ctx);
    for (int t = 0; t < n; t++) s->row_pos[t] = pos + t;
    int seg[2] = {0, n};
    const el_lora_set *lora[1] = {s->lora};
    row_map rm = {n, s->row_sess, s->row_pos, 1, seg, lora};
    for (int l = s->layer_begin; l < s->layer_end; l++) layer_forward(s->m, s->pool, s->sc, l, x, &rm);
    return EL_OK;
}

el_status el_session_head(el_session *s, const float *x, int n, int n_out, float *logits, el_error *err) {
    const el_model *m = s->m;
    if (!m->has_head) return el_err(err, EL_ERR_STATE, "%s: output head is not loaded on this stage", m->path);
    if (n_out <= 0 || n_out > n || n > s->max_batch)
        return el_err(err, EL_ERR_RANGE, "head over %d of %d rows is invalid", n_out, n);
    const float *rows = x + (size_t)(n - n_out) * s->dim;
    for (int t = 0; t < n_out; t++)
        el_rmsnorm(s->sc->xb + (size_t)t * s->dim, rows + (size_t)t * s->dim, m->output_norm.data, s->dim, m->hp.rms_eps);
    el_matmul(s->pool, logits, s->sc->xb, &m->output, n_out);
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

// ---------------------------------------------------------------- batched decode

struct el_batch {
    const el_model *m;
    el_pool *pool;
    int max_rows;
    scratch *sc;
    float *x;       // [max_rows, dim]
    float *logits;  // [max_rows, vocab] in sorted row order
    int *order;     // [max_rows] sorted row -> caller's row
    el_session **rs;
    int *rpos;
    int *seg_start;  // [max_rows + 1]
    const el_lora_set **seg_lora;
};

el_status el_batch_new(const el_model *m, int max_rows, el_pool *pool, el_batch **out, el_error *err) {
    *out = NULL;
    if (max_rows <= 0 || max_rows > 4096) return el_err(err, EL_ERR_RANGE, "batch of %d rows is outside 1..4096", max_rows);
    if (!m->has_embed || !m->has_head || m->layer_begin != 0 || m->layer_end != m->hp.n_layers)
        return el_err(err, EL_ERR_STATE, "%s: batched decode needs the whole model loaded (embedding, every layer, head)",
                      m->path);
    el_batch *b = calloc(1, sizeof *b);
    if (!b) return el_err(err, EL_ERR_NOMEM, "out of memory for a batch");
    size_t B = (size_t)max_rows;
    b->m = m;
    b->pool = pool;
    b->max_rows = max_rows;
    b->sc = scratch_new(B, &m->hp);
    b->x = el_calloc(B * (size_t)m->hp.dim, sizeof(float));
    b->logits = el_calloc(B * (size_t)m->hp.vocab, sizeof(float));
    b->order = el_calloc(B, sizeof *b->order);
    b->rs = el_calloc(B, sizeof *b->rs);
    b->rpos = el_calloc(B, sizeof *b->rpos);
    b->seg_start = el_calloc(B + 1, sizeof *b->seg_start);
    b->seg_lora = el_calloc(B, sizeof *b->seg_lora);
    if (!b->sc || !b->x || !b->logits || !b->order || !b->rs || !b->rpos || !b->seg_start || !b->seg_lora) {
        el_batch_free(b);
        return el_err(err, EL_ERR_NOMEM, "out of memory for a batch of %d rows", max_rows);
    }
    *out = b;
    return EL_OK;
}

void el_batch_free(el_batch *b) {
    if (!b) return;
    scratch_free(b->sc);
    free(b->x);
    free(b->logits);
    free(b->order);
    free(b->rs);
    free(b->rpos);
    free(b->seg_start);
    free(b->seg_lora);
    free(b);
}

int el_batch_max_rows(const el_batch *b) { return b->max_rows; }

el_status el_batch_step(el_batch *b, int n, el_session *const *sess, const int *tokens, const int *pos,
                        const el_lora_set *const *adapters, float *logits, el_error *err) {
    const el_model *m = b->m;
    const el_hparams *hp = &m->hp;
    if (n <= 0 || n > b->max_rows) return el_err(err, EL_ERR_RANGE, "batch of %d rows is outside 1..%d", n, b->max_rows);
    for (int i = 0; i < n; i++) {
        const el_session *s = sess[i];
        if (!s || s->m != m || s->layer_begin != m->layer_begin || s->layer_end != m->layer_end)
            return el_err(err, EL_ERR_ARG, "batch row %d: session does not run the whole of %s", i, m->path);
        if (pos[i] < 0 || pos[i] >= s->ctx)
            return el_err(err, EL_ERR_RANGE, "batch row %d: position %d is outside the context of %d", i, pos[i], s->ctx);
        if (tokens[i] < 0 || tokens[i] >= hp->vocab)
            return el_err(err, EL_ERR_RANGE, "batch row %d: token id %d is outside the vocabulary (0..%d)", i, tokens[i],
                          hp->vocab - 1);
    }
    // Group rows by adapter set (stable), so each set's low-rank product is
    // one segment while the base matmuls see every row at once.
    for (int i = 0; i < n; i++) {
        const el_lora_set *a = adapters ? adapters[i] : NULL;
        int j = i;
        while (j > 0) {
            const el_lora_set *p = adapters ? adapters[b->order[j - 1]] : NULL;
            if ((uintptr_t)p <= (uintptr_t)a) break;
            b->order[j] = b->order[j - 1];
            j--;
        }
        b->order[j] = i;
    }
    int n_seg = 0;
    for (int r = 0; r < n; r++) {
        int i = b->order[r];
        const el_lora_set *a = adapters ? adapters[i] : NULL;
        if (a && a->n == 0) a = NULL;
        if (r == 0 || a != b->seg_lora[n_seg - 1]) {
            b->seg_start[n_seg] = r;
            b->seg_lora[n_seg++] = a;
        }
        b->rs[r] = sess[i];
        b->rpos[r] = pos[i];
        el_tensor_row_f32(&m->tok_embd, tokens[i], b->x + (size_t)r * hp->dim);
    }
    b->seg_start[n_seg] = n;
    row_map rm = {n, b->rs, b->rpos, n_seg, b->seg_start, b->seg_lora};
    for (int l = m->layer_begin; l < m->layer_end; l++) layer_forward(m, b->pool, b->sc, l, b->x, &rm);
    for (int r = 0; r < n; r++)
        el_rmsnorm(b->sc->xb + (size_t)r * hp->dim, b->x + (size_t)r * hp->dim, m->output_norm.data, hp->dim, hp->rms_eps);
    el_matmul(b->pool, b->logits, b->sc->xb, &m->output, n);
    for (int r = 0; r < n; r++)
        memcpy(logits + (size_t)b->order[r] * hp->vocab, b->logits + (size_t)r * hp->vocab, (size_t)hp->vocab * sizeof(float));
    return EL_OK;
}
