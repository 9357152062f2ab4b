// The Llama forward pass over one stage: embedding, the layer loop, and the
// head, over rows of many sessions at once (el_batch), each session with its
// own KV cache in blocks. Read `layer_forward` top to bottom: it is the model.
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/kernels.h"
#include "edgellm/lora.h"
#include "edgellm/model.h"

// ---------------------------------------------------------------- KV memory

struct el_kv_pool {
    atomic_size_t used;
    size_t max;  // 0: no limit
    el_kv_pool *parent;
};

el_kv_pool *el_kv_pool_new(size_t max_bytes) {
    el_kv_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    atomic_init(&p->used, 0);
    p->max = max_bytes;
    return p;
}

el_kv_pool *el_kv_pool_new_child(el_kv_pool *parent, size_t max_bytes) {
    el_kv_pool *p = el_kv_pool_new(max_bytes);
    if (p) p->parent = parent;
    return p;
}

void el_kv_pool_free(el_kv_pool *p) { free(p); }
size_t el_kv_pool_used(const el_kv_pool *p) { return atomic_load(&((el_kv_pool *)p)->used); }
size_t el_kv_pool_max(const el_kv_pool *p) { return p->max; }

size_t el_kv_pool_room(const el_kv_pool *p) {
    size_t room = SIZE_MAX;
    for (; p; p = p->parent) {
        size_t used = el_kv_pool_used(p);
        if (p->max) room = used >= p->max ? 0 : p->max - used < room ? p->max - used : room;
    }
    return room;
}

static int take_one(el_kv_pool *p, size_t n) {
    size_t cur = atomic_load(&p->used);
    do {
        if (p->max && (cur > p->max || n > p->max - cur)) return 0;
    } while (!atomic_compare_exchange_weak(&p->used, &cur, cur + n));
    return 1;
}

int el_kv_pool_take(el_kv_pool *p, size_t n) {
    for (el_kv_pool *q = p; q; q = q->parent)
        if (!take_one(q, n)) {
            for (el_kv_pool *r = p; r != q; r = r->parent) atomic_fetch_sub(&r->used, n);
            return 0;
        }
    return 1;
}

void el_kv_pool_give(el_kv_pool *p, size_t n) {
    for (; p; p = p->parent) atomic_fetch_sub(&p->used, n);
}

// ---------------------------------------------------------------- sessions

struct el_session {
    const el_model *m;
    el_pool *pool;
    int layer_begin, layer_end;
    int ctx, max_batch;
    int kv_type;
    size_t kv_row;       // bytes of one cached row (one position of one kv head, K or V)
    size_t block_bytes;  // one block: EL_KV_BLOCK positions of K and V, every layer
    el_kv_pool *kv;      // the budget the blocks count against
    el_kv_pool *own_kv;  // a private, unlimited pool (when none was given)
    // blocks[i] covers positions [i*EL_KV_BLOCK, (i+1)*EL_KV_BLOCK) as
    // [layer - layer_begin][K, V][kv head][EL_KV_BLOCK][kv_row bytes]: a head's
    // keys (values) of a block are one contiguous stream, which is how
    // attention reads them
    uint8_t **blocks;
    int n_blocks, max_blocks;
    float *inv_freq;          // [head_dim / 2]
    const el_lora_set *lora;  // adapters applied to the projections (borrowed; may be NULL)
    el_batch *own;            // the engine of el_session_layers/head (made on first use)
};

// The cached row of (layer l, K or V, kv head kvh, position pos).
static uint8_t *kv_row(const el_session *s, int l, int v, int kvh, int pos) {
    const el_hparams *h = &s->m->hp;
    size_t i = (((size_t)(l - s->layer_begin) * 2 + (size_t)v) * (size_t)h->n_kv_heads + (size_t)kvh) * EL_KV_BLOCK +
               (size_t)(pos % EL_KV_BLOCK);
    return s->blocks[pos / EL_KV_BLOCK] + i * s->kv_row;
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
    const el_hparams *h = &m->hp;
    size_t row = el_kv_row_bytes(o.kv_type, h->head_dim);
    if (!row)
        return el_err(err, EL_ERR_UNSUPPORTED, "KV cache type %s is not supported (f32, f16, q8_0)",
                      el_dtype_name(o.kv_type));
    el_session *s = calloc(1, sizeof *s);
    if (!s) return el_err(err, EL_ERR_NOMEM, "out of memory for a session");
    s->m = m;
    s->pool = pool;
    s->layer_begin = o.layer_begin;
    s->layer_end = o.layer_end;
    s->ctx = o.ctx;
    s->max_batch = o.max_batch;
    s->kv_type = o.kv_type;
    s->kv_row = row;
    s->block_bytes = (size_t)(o.layer_end - o.layer_begin) * 2 * (size_t)h->n_kv_heads * EL_KV_BLOCK * row;
    s->kv = o.kv_pool;
    if (!s->kv) s->kv = s->own_kv = el_kv_pool_new(0);
    s->max_blocks = (o.ctx + EL_KV_BLOCK - 1) / EL_KV_BLOCK;
    s->blocks = el_calloc((size_t)s->max_blocks, sizeof *s->blocks);
    s->inv_freq = el_calloc((size_t)h->head_dim / 2 + 1, sizeof(float));
    if (!s->kv || !s->blocks || !s->inv_freq) {
        el_session_free(s);
        return el_err(err, EL_ERR_NOMEM, "out of memory for a session of %d positions", o.ctx);
    }
    el_model_rope_freqs(m, s->inv_freq);  // with the model's rope scaling
    *out = s;
    return EL_OK;
}

void el_session_free(el_session *s) {
    if (!s) return;
    el_session_truncate(s, 0);
    free(s->blocks);
    free(s->inv_freq);
    el_batch_free(s->own);
    el_kv_pool_free(s->own_kv);
    free(s);
}

int el_session_ctx(const el_session *s) { return s->ctx; }
void el_session_set_lora(el_session *s, const el_lora_set *set) { s->lora = set && set->n ? set : NULL; }
int el_session_max_batch(const el_session *s) { return s->max_batch; }
int el_session_layer_begin(const el_session *s) { return s->layer_begin; }
int el_session_kv_type(const el_session *s) { return s->kv_type; }
size_t el_session_kv_bytes(const el_session *s) { return (size_t)s->n_blocks * s->block_bytes; }
size_t el_session_kv_block_bytes(const el_session *s) { return s->block_bytes; }
int el_session_capacity(const el_session *s) { return s->n_blocks * EL_KV_BLOCK; }

el_status el_session_reserve(el_session *s, int n_pos, el_error *err) {
    if (n_pos > s->ctx)
        return el_err(err, EL_ERR_RANGE, "%d positions exceed the context of %d", n_pos, s->ctx);
    int want = (n_pos + EL_KV_BLOCK - 1) / EL_KV_BLOCK, have = s->n_blocks;
    if (want <= have || !s->block_bytes) return EL_OK;
    size_t bytes = (size_t)(want - have) * s->block_bytes;
    if (!el_kv_pool_take(s->kv, bytes)) {
        const el_kv_pool *q = s->kv;  // the budget that refused: this session's share, or the whole
        while (q->parent && (!q->max || el_kv_pool_used(q) + bytes <= q->max)) q = q->parent;
        return el_err(err, EL_ERR_NOMEM, "%s budget exhausted (%zu of %zu bytes in use, %zu more needed)",
                      q == s->kv && q->parent ? "this client's memory" : "KV cache", el_kv_pool_used(q), el_kv_pool_max(q),
                      bytes);
    }
    for (int i = have; i < want; i++)
        if (!(s->blocks[i] = el_malloc_aligned(s->block_bytes))) {
            while (--i >= have) el_free_aligned(s->blocks[i]), s->blocks[i] = NULL;
            el_kv_pool_give(s->kv, bytes);
            return el_err(err, EL_ERR_NOMEM, "out of memory for %zu bytes of KV cache", bytes);
        }
    s->n_blocks = want;
    return EL_OK;
}

void el_session_truncate(el_session *s, int n_pos) {
    int keep = n_pos <= 0 ? 0 : (n_pos + EL_KV_BLOCK - 1) / EL_KV_BLOCK;
    if (keep >= s->n_blocks) return;
    for (int i = keep; i < s->n_blocks; i++) el_free_aligned(s->blocks[i]), s->blocks[i] = NULL;
    el_kv_pool_give(s->kv, (size_t)(s->n_blocks - keep) * s->block_bytes);
    s->n_blocks = keep;
}

el_status el_session_embed(el_session *s, const int *tokens, int n, float *x, el_error *err) {
    const el_model *m = s->m;
    if (!m->has_embed) return el_err(err, EL_ERR_STATE, "%s: token embedding is not loaded on this stage", m->path);
    for (int i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= m->hp.vocab)
            return el_err(err, EL_ERR_RANGE, "token id %d is outside the vocabulary (0..%d)", tokens[i], m->hp.vocab - 1);
        el_tensor_row_f32(&m->tok_embd, tokens[i], x + (size_t)i * m->hp.dim);
    }
    return EL_OK;
}

// ---------------------------------------------------------------- scratch

// Scratch of one step, sized for max rows.
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

// ---------------------------------------------------------------- rows

// Which sequence and position each row of a layer's input belongs to. One
// session's prefill chunk is rows of that session at consecutive positions;
// a decode row is one row of its session. Rows that share an adapter set are
// contiguous (segments), so each segment's low-rank product runs once.
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
        int a = rm->seg_start[i], b = rm->seg_start[i + 1] < rm->n ? rm->seg_start[i + 1] : rm->n;
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
    atomic_int failed;  // a task could not get its score buffer
} attn_job;

// Causal grouped-query attention for one head over a block of rows, each row
// against its own session's cache, read block by block in position order:
// att[t, h] = softmax(q[t,h] · K[0..pos[t]]ᵀ / √hd) · V[0..pos[t]]
static void attn_task(void *ctx, int task, int n_tasks) {
    (void)n_tasks;
    attn_job *j = ctx;
    const el_hparams *hp = j->hp;
    const row_map *rm = j->rm;
    int hd = hp->head_dim, group = hp->n_heads / hp->n_kv_heads;
    int h = task / j->token_blocks, t0 = task % j->token_blocks * ATTN_TOKENS_PER_TASK;
    int t1 = t0 + ATTN_TOKENS_PER_TASK < rm->n ? t0 + ATTN_TOKENS_PER_TASK : rm->n;
    int kvh = h / group;
    int max_end = 0;
    for (int t = t0; t < t1; t++)
        if (rm->pos[t] + 1 > max_end) max_end = rm->pos[t] + 1;
    float stack[1024];
    float *scores = max_end <= 1024 ? stack : malloc((size_t)max_end * sizeof(float));
    if (!scores) {
        atomic_store(&j->failed, 1);
        return;
    }
    float scale = 1.0f / sqrtf((float)hd);
    for (int t = t0; t < t1; t++) {
        const el_session *s = rm->sess[t];
        int end = rm->pos[t] + 1;  // positions this row may attend to
        // sliding window (Mistral): only the latest sliding_window positions, itself included
        int start = hp->sliding_window && end > hp->sliding_window ? end - hp->sliding_window : 0;
        const float *q = j->sc->q + (size_t)t * j->q_dim + (size_t)h * hd;
        float *out = j->sc->att + (size_t)t * j->q_dim + (size_t)h * hd;
        for (int p = start; p < end;) {  // block by block
            int e = (p / EL_KV_BLOCK + 1) * EL_KV_BLOCK < end ? (p / EL_KV_BLOCK + 1) * EL_KV_BLOCK : end;
            el_attn_scores_kv(s->kv_type, scores + (p - start), q, kv_row(s, j->layer, 0, kvh, p), s->kv_row, e - p, hd,
                              scale);
            p = e;
        }
        el_softmax(scores, end - start);
        memset(out, 0, (size_t)hd * sizeof(float));
        for (int p = start; p < end;) {
            int e = (p / EL_KV_BLOCK + 1) * EL_KV_BLOCK < end ? (p / EL_KV_BLOCK + 1) * EL_KV_BLOCK : end;
            el_attn_mix_kv(s->kv_type, out, scores + (p - start), kv_row(s, j->layer, 1, kvh, p), s->kv_row, e - p, hd);
            p = e;
        }
    }
    if (scores != stack) free(scores);
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
            for (int g = 0; g < hp->n_kv_heads; g++) {
                el_kv_store(s->kv_type, kv_row(s, j->l, 0, g, pos), k + (size_t)g * hp->head_dim, hp->head_dim);
                el_kv_store(s->kv_type, kv_row(s, j->l, 1, g, pos), v + (size_t)g * hp->head_dim, hp->head_dim);
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
// Returns -1 when attention could not get its scratch (out of memory).
static int layer_forward(const el_model *m, el_pool *pool, const scratch *sc, int l, float *x, const row_map *rm) {
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
    attn_job aj = {hp, sc, rm, l, q_dim, kv_dim, (n + ATTN_TOKENS_PER_TASK - 1) / ATTN_TOKENS_PER_TASK, 0};
    el_pool_run(pool, attn_task, &aj, aj.token_blocks * hp->n_heads);
    if (atomic_load(&aj.failed)) return -1;
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
    return 0;
}

// ---------------------------------------------------------------- the batching engine

struct el_batch {
    const el_model *m;
    el_pool *pool;
    int max_rows;
    scratch *sc;
    float *x;          // [max_rows, dim] the step's rows, in sorted order
    float *logits;     // [logits_cap, vocab] head output before it is handed out
    size_t logits_cap;
    int *order;        // [max_rows] sorted request index (requests fill at most max_rows)
    int *row_begin;    // [max_rows] first row of sorted request i
    el_session **rs;   // [max_rows]
    int *rpos;         // [max_rows]
    int *seg_start;    // [max_rows + 1]
    const el_lora_set **seg_lora;
};

el_status el_batch_new(const el_model *m, int max_rows, el_pool *pool, el_batch **out, el_error *err) {
    *out = NULL;
    if (max_rows <= 0 || max_rows > 65536)
        return el_err(err, EL_ERR_RANGE, "batch of %d rows is outside 1..65536", max_rows);
    el_batch *b = calloc(1, sizeof *b);
    if (!b) return el_err(err, EL_ERR_NOMEM, "out of memory for a batch");
    size_t B = (size_t)max_rows;
    b->m = m;
    b->pool = pool;
    b->max_rows = max_rows;
    b->sc = scratch_new(B, &m->hp);
    b->x = el_calloc(B * (size_t)m->hp.dim, sizeof(float));
    b->order = el_calloc(B, sizeof *b->order);
    b->row_begin = el_calloc(B, sizeof *b->row_begin);
    b->rs = el_calloc(B, sizeof *b->rs);
    b->rpos = el_calloc(B, sizeof *b->rpos);
    b->seg_start = el_calloc(B + 1, sizeof *b->seg_start);
    b->seg_lora = el_calloc(B, sizeof *b->seg_lora);
    if (!b->sc || !b->x || !b->order || !b->row_begin || !b->rs || !b->rpos || !b->seg_start || !b->seg_lora) {
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
    free(b->row_begin);
    free(b->rs);
    free(b->rpos);
    free(b->seg_start);
    free(b->seg_lora);
    free(b);
}

int el_batch_max_rows(const el_batch *b) { return b->max_rows; }

// logits[n, vocab] of rows x[n, dim] (rows ldx floats apart): final norm + head.
static el_status head_rows(el_batch *b, const float *x, int n, float *logits, el_error *err) {
    const el_model *m = b->m;
    const el_hparams *hp = &m->hp;
    if (!m->has_head) return el_err(err, EL_ERR_STATE, "%s: output head is not loaded on this stage", m->path);
    for (int t = 0; t < n; t++)
        el_rmsnorm(b->sc->xb + (size_t)t * hp->dim, x + (size_t)t * hp->dim, m->output_norm.data, hp->dim, hp->rms_eps);
    el_matmul(b->pool, logits, b->sc->xb, &m->output, n);
    return EL_OK;
}

static el_status check_req(const el_batch *b, const el_batch_req *r, int i, int end, el_error *err) {
    const el_model *m = b->m;
    const el_session *s = r->s;
    if (!s || s->m != m) return el_err(err, EL_ERR_ARG, "batch request %d: session is not one of %s", i, m->path);
    if (s->layer_end != end)
        return el_err(err, EL_ERR_ARG, "batch request %d: session ends at layer %d, the others at %d", i, s->layer_end, end);
    if (r->n <= 0 || r->pos < 0 || r->pos > s->ctx - r->n)
        return el_err(err, EL_ERR_RANGE, "positions %d..%d exceed the context of %d", r->pos, r->pos + r->n - 1, s->ctx);
    if (r->pos + r->n > s->n_blocks * EL_KV_BLOCK && s->layer_end > s->layer_begin)
        return el_err(err, EL_ERR_STATE, "batch request %d: positions up to %d have no KV blocks (el_session_reserve)", i,
                      r->pos + r->n);
    if (r->logits_rows != 0 && r->logits_rows != 1 && r->logits_rows != r->n)
        return el_err(err, EL_ERR_ARG, "batch request %d: %d logits rows of %d", i, r->logits_rows, r->n);
    if (r->logits_rows && !m->has_head)
        return el_err(err, EL_ERR_STATE, "%s: output head is not loaded on this stage", m->path);
    if (r->tokens) {
        if (!m->has_embed) return el_err(err, EL_ERR_STATE, "%s: token embedding is not loaded on this stage", m->path);
        for (int k = 0; k < r->n; k++)
            if (r->tokens[k] < 0 || r->tokens[k] >= m->hp.vocab)
                return el_err(err, EL_ERR_RANGE, "token id %d is outside the vocabulary (0..%d)", r->tokens[k],
                              m->hp.vocab - 1);
    } else if (!r->x) {
        return el_err(err, EL_ERR_ARG, "batch request %d has neither tokens nor rows", i);
    }
    return EL_OK;
}

el_status el_batch_run(el_batch *b, int n_req, const el_batch_req *reqs, el_error *err) {
    const el_model *m = b->m;
    const el_hparams *hp = &m->hp;
    size_t dim = (size_t)hp->dim, V = (size_t)hp->vocab;
    if (n_req <= 0) return el_err(err, EL_ERR_ARG, "an empty batch");
    int rows = 0, n_logits = 0, end = reqs[0].s ? reqs[0].s->layer_end : 0;
    for (int i = 0; i < n_req; i++) {
        el_status st = check_req(b, &reqs[i], i, end, err);
        if (st) return st;
        for (int k = 0; k < i; k++)
            if (reqs[k].s == reqs[i].s) return el_err(err, EL_ERR_ARG, "batch requests %d and %d share a session", k, i);
        if (reqs[i].n > b->max_rows - rows)
            return el_err(err, EL_ERR_RANGE, "batch of more than %d rows", b->max_rows);
        rows += reqs[i].n;
        n_logits += reqs[i].logits_rows;
    }
    if ((size_t)n_logits > b->logits_cap) {
        float *p = realloc(b->logits, (size_t)n_logits * V * sizeof(float));
        if (!p) return el_err(err, EL_ERR_NOMEM, "out of memory for %d rows of logits", n_logits);
        b->logits = p;
        b->logits_cap = (size_t)n_logits;
    }
    // Sort the requests (stably) by first layer, then adapter set: at layer l
    // the rows of the sessions running it are then a prefix, and each set's
    // rows one segment.
    for (int i = 0; i < n_req; i++) {
        const el_session *a = reqs[i].s;
        int j = i;
        while (j > 0) {
            const el_session *p = reqs[b->order[j - 1]].s;
            if (p->layer_begin < a->layer_begin ||
                (p->layer_begin == a->layer_begin && (uintptr_t)p->lora <= (uintptr_t)a->lora))
                break;
            b->order[j] = b->order[j - 1];
            j--;
        }
        b->order[j] = i;
    }
    int n_seg = 0, r = 0, first = end;
    for (int o = 0; o < n_req; o++) {
        const el_batch_req *q = &reqs[b->order[o]];
        el_session *s = q->s;
        if (s->layer_begin < first) first = s->layer_begin;
        if (o == 0 || s->lora != b->seg_lora[n_seg - 1]) {
            b->seg_start[n_seg] = r;
            b->seg_lora[n_seg++] = s->lora;
        }
        b->row_begin[o] = r;
        float *xr = b->x + (size_t)r * dim;
        if (q->tokens)
            for (int k = 0; k < q->n; k++) el_tensor_row_f32(&m->tok_embd, q->tokens[k], xr + (size_t)k * dim);
        else
            memcpy(xr, q->x, (size_t)q->n * dim * sizeof(float));
        for (int k = 0; k < q->n; k++) {
            b->rs[r + k] = s;
            b->rpos[r + k] = q->pos + k;
        }
        r += q->n;
    }
    b->seg_start[n_seg] = rows;
    int o_active = 0, n_active = 0;
    for (int l = first; l < end; l++) {
        // rows of the sessions that run layer l: a prefix
        while (o_active < n_req && reqs[b->order[o_active]].s->layer_begin <= l) {
            n_active += reqs[b->order[o_active]].n;
            o_active++;
        }
        row_map rm = {n_active, b->rs, b->rpos, n_seg, b->seg_start, b->seg_lora};
        if (layer_forward(m, b->pool, b->sc, l, b->x, &rm))
            return el_err(err, EL_ERR_NOMEM, "out of memory for attention scores");
    }
    // the head over the rows that want logits, gathered
    if (n_logits) {
        int g = 0;
        for (int o = 0; o < n_req; o++) {
            const el_batch_req *q = &reqs[b->order[o]];
            int from = b->row_begin[o] + q->n - q->logits_rows;
            for (int k = 0; k < q->logits_rows; k++)
                el_rmsnorm(b->sc->xb + (size_t)(g + k) * dim, b->x + (size_t)(from + k) * dim, m->output_norm.data,
                           hp->dim, hp->rms_eps);
            g += q->logits_rows;
        }
        el_matmul(b->pool, b->logits, b->sc->xb, &m->output, n_logits);
        g = 0;
        for (int o = 0; o < n_req; o++) {
            const el_batch_req *q = &reqs[b->order[o]];
            if (q->logits_rows) memcpy(q->logits, b->logits + (size_t)g * V, (size_t)q->logits_rows * V * sizeof(float));
            g += q->logits_rows;
        }
    }
    for (int o = 0; o < n_req; o++) {
        const el_batch_req *q = &reqs[b->order[o]];
        if (q->out_hidden) memcpy(q->x, b->x + (size_t)b->row_begin[o] * dim, (size_t)q->n * dim * sizeof(float));
    }
    return EL_OK;
}

// ---------------------------------------------------------------- one session

// The session's own engine, for calls outside a shared batch.
static el_status own_batch(el_session *s, el_error *err) {
    return s->own ? EL_OK : el_batch_new(s->m, s->max_batch, s->pool, &s->own, err);
}

el_status el_session_layers(el_session *s, float *x, int n, int pos, el_error *err) {
    if (n <= 0 || n > s->max_batch)
        return el_err(err, EL_ERR_RANGE, "batch of %d positions is outside 1..%d", n, s->max_batch);
    if (pos < 0 || pos > s->ctx - n)
        return el_err(err, EL_ERR_RANGE, "positions %d..%d exceed the context of %d", pos, pos + n - 1, s->ctx);
    if (s->layer_begin == s->layer_end) return EL_OK;
    el_status st;
    if ((st = own_batch(s, err)) || (st = el_session_reserve(s, pos + n, err))) return st;
    el_batch_req r = {.s = s, .pos = pos, .n = n, .x = x, .out_hidden = 1};
    return el_batch_run(s->own, 1, &r, err);
}

el_status el_session_head(el_session *s, const float *x, int n, int n_out, float *logits, el_error *err) {
    const el_model *m = s->m;
    if (!m->has_head) return el_err(err, EL_ERR_STATE, "%s: output head is not loaded on this stage", m->path);
    if (n_out <= 0 || n_out > n || n > s->max_batch)
        return el_err(err, EL_ERR_RANGE, "head over %d of %d rows is invalid", n_out, n);
    el_status st = own_batch(s, err);
    if (st) return st;
    return head_rows(s->own, x + (size_t)(n - n_out) * m->hp.dim, n_out, logits, err);
}

el_status el_session_forward(el_session *s, const int *tokens, int n, int pos, float *logits, int logits_all,
                             el_error *err) {
    if (n <= 0) return el_err(err, EL_ERR_ARG, "nothing to evaluate (0 tokens)");
    if (pos < 0 || pos > s->ctx - n)
        return el_err(err, EL_ERR_RANGE, "positions %d..%d exceed the context of %d", pos, pos + n - 1, s->ctx);
    el_status st;
    if ((st = own_batch(s, err)) || (st = el_session_reserve(s, pos + n, err))) return st;
    for (int done = 0; done < n; done += s->max_batch) {
        int chunk = n - done < s->max_batch ? n - done : s->max_batch;
        int last = done + chunk == n;
        el_batch_req r = {.s = s, .pos = pos + done, .n = chunk, .tokens = tokens + done,
                          .logits_rows = logits_all ? chunk : last ? 1 : 0,
                          .logits = logits_all ? logits + (size_t)done * s->m->hp.vocab : logits};
        if ((st = el_batch_run(s->own, 1, &r, err))) return st;
    }
    return EL_OK;
}

// ---------------------------------------------------------------- sharing a step

int el_batch_plan(int n, const int *want, int budget, int short_rows, int *cursor, int *take) {
    if (n <= 0) return 0;
    int start = *cursor >= 0 ? *cursor % n : 0, rows = 0, any_long = 0;
    // a "short" request must fit in a step beside the long ones' share, or it
    // would wait for ever: bigger ones are cut in chunks like a prefill
    int room = budget - budget / 4;
    if (room < 1) room = 1;
    if (short_rows > room) short_rows = room;
    for (int i = 0; i < n; i++) {
        take[i] = 0;
        if (want[i] > short_rows) any_long = 1;
    }
    // Short requests (decode, verification) whole, within what leaves the
    // long ones (prefill) a quarter of the step; then the long ones in
    // chunks; then short ones that did not fit, if room is left.
    int reserve = any_long ? (budget / 4 > 0 ? budget / 4 : 1) : 0;
    for (int k = 0; k < n; k++) {
        int i = (start + k) % n;
        if (want[i] <= 0 || want[i] > short_rows) continue;
        if (want[i] <= budget - reserve - rows) take[i] = want[i], rows += want[i];
    }
    for (int k = 0; k < n && rows < budget; k++) {
        int i = (start + k) % n;
        if (want[i] <= short_rows) continue;
        take[i] = want[i] < budget - rows ? want[i] : budget - rows;
        rows += take[i];
    }
    for (int k = 0; k < n && rows < budget; k++) {
        int i = (start + k) % n;
        if (want[i] > 0 && want[i] <= short_rows && !take[i] && want[i] <= budget - rows) take[i] = want[i], rows += want[i];
    }
    // next time, the first request that got less than it wanted goes first
    // next time: a short request left out goes first, else a long one cut short
    int next = -1;
    for (int k = 0; k < n && next < 0; k++) {
        int i = (start + k) % n;
        if (want[i] > 0 && want[i] <= short_rows && !take[i]) next = i;
    }
    for (int k = 0; k < n && next < 0; k++) {
        int i = (start + k) % n;
        if (take[i] < want[i]) next = i;
    }
    *cursor = next >= 0 ? next : (start + 1) % n;
    return rows;
}
