// A training stage: the Llama layers of one contiguous range run forward (the
// activations kept) and backward (gradient at the output in, gradient at the
// input out, LoRA gradients accumulated), plus the embedding and the head +
// cross-entropy when the stage holds them. Split fine-tuning runs one stage
// per node exactly as el_session_embed/layers/head split inference.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/kernels.h"
#include "edgellm/train.h"

typedef struct {
    float *x_in, *xn1, *rstd1, *q, *k, *v, *ao;  // attention block
    float *x_mid, *xn2, *rstd2, *g, *u, *h;            // feed-forward block
    float *t[EL_LORA_N_TARGETS];                       // x·Aᵀ per adapted projection
} layer_acts;

struct el_train_stage {
    const el_model *m;
    const el_lora *lora;
    el_pool *pool;
    int lb, le, B, T, n;
    int dim, qd, kvd, ff, V, max_rank;
    float *inv_freq;
    layer_acts *acts;  // [le - lb]
    float *grads;      // like lora->params
    float *scratch;    // dequantized weight tiles
    float *tmp;        // [n, max_rank]
    float *proj, *dxn, *dao, *dq, *dk, *dv, *dh, *dg, *du;  // backward scratch
    float *xh, *xf, *rstdf, *logits, *loss_rows, *dloss;    // head (xh: its input, so dx may alias x)
    void **allocs;
    int n_allocs, cap_allocs;
    size_t act_bytes;
    size_t max_bytes;  // el_train_opts.max_bytes
    int over;          // an allocation would have passed max_bytes
};

static float *take(el_train_stage *st, size_t n_floats) {
    if (st->max_bytes && (n_floats > st->max_bytes / sizeof(float) ||
                          st->act_bytes + n_floats * sizeof(float) > st->max_bytes)) {
        st->over = 1;
        return NULL;
    }
    if (st->n_allocs == st->cap_allocs) {
        int cap = st->cap_allocs ? 2 * st->cap_allocs : 64;
        void **a = realloc(st->allocs, (size_t)cap * sizeof *a);
        if (!a) return NULL;
        st->allocs = a;
        st->cap_allocs = cap;
    }
    float *p = el_calloc(n_floats ? n_floats : 1, sizeof(float));
    if (p) {
        st->allocs[st->n_allocs++] = p;
        st->act_bytes += n_floats * sizeof(float);
    }
    return p;
}

void el_train_stage_free(el_train_stage *st) {
    if (!st) return;
    for (int i = 0; i < st->n_allocs; i++) free(st->allocs[i]);
    free(st->allocs);
    free(st->acts);
    free(st);
}

// Row-parallel versions of the element-wise ops (every row is independent, so
// the split does not change any result): the head's softmax over the
// vocabulary and SwiGLU are the largest serial parts of a step otherwise.
typedef struct {
    el_train_stage *st;
    int op, rows_per_task, width;
    float *a, *b, *c;
    const float *x, *y, *z;
    const int *targets;
} rows_job;

enum { ROWS_CE_FWD, ROWS_CE_BWD, ROWS_SWIGLU_FWD, ROWS_SWIGLU_BWD };

static void rows_task(void *ctx, int i, int n_tasks) {
    (void)n_tasks;
    const rows_job *j = ctx;
    int r0 = i * j->rows_per_task, r1 = r0 + j->rows_per_task < j->st->n ? r0 + j->rows_per_task : j->st->n;
    if (r0 >= r1) return;
    size_t o = (size_t)r0 * j->width;
    int nr = r1 - r0, ne = nr * j->width;
    switch (j->op) {
    case ROWS_CE_FWD: el_cross_entropy_forward(j->a + r0, j->b + o, j->x + o, j->targets + r0, nr, j->width); break;
    case ROWS_CE_BWD: el_cross_entropy_backward(j->a + o, j->x + o, j->targets + r0, j->y + r0, nr, j->width); break;
    case ROWS_SWIGLU_FWD: el_swiglu_forward(j->a + o, j->x + o, j->y + o, ne); break;
    default: el_swiglu_backward(j->a + o, j->b + o, j->x + o, j->y + o, j->z + o, ne); break;
    }
}

static void run_rows(el_train_stage *st, rows_job *j) {
    int P = el_pool_size(st->pool);
    j->st = st;
    j->rows_per_task = (st->n + P - 1) / P;
    el_pool_run(st->pool, rows_task, j, (st->n + j->rows_per_task - 1) / j->rows_per_task);
}

static el_linear linear_of(const el_train_stage *st, int l, int t) {
    el_linear L = {el_lora_base(st->m, l, t), el_lora_get(st->lora, l, t), 0};
    if (L.lora) L.s = st->lora->alpha / (float)L.lora->rank;
    return L;
}

el_status el_train_stage_new(const el_model *m, const el_lora *lora, const el_train_opts *o, el_pool *pool,
                             el_train_stage **out, el_error *err) {
    *out = NULL;
    const el_hparams *h = &m->hp;
    int lb = o->layer_begin, le = o->layer_end ? o->layer_end : m->layer_end;
    if (lb < m->layer_begin || le > m->layer_end || lb > le)
        return el_err(err, EL_ERR_ARG, "%s: training layers %d:%d are not within the loaded range %d:%d", m->path, lb,
                      le, m->layer_begin, m->layer_end);
    // past the trained context is allowed, as everywhere (the tools warn)
    if (o->T < 1 || o->T > (1 << 20))
        return el_err(err, EL_ERR_RANGE, "%s: training context %d is outside 1..%d", m->path, o->T, 1 << 20);
    if (o->batch < 1 || (int64_t)o->batch * o->T > (1 << 20))
        return el_err(err, EL_ERR_RANGE, "batch %d x context %d is outside the supported range", o->batch, o->T);
    // The training kernels implement the normal rope layout without q/k/v biases.
    if (h->rope_type != EL_ROPE_NORMAL || h->has_qkv_bias || (h->sliding_window && h->sliding_window < o->T))
        return el_err(err, EL_ERR_UNSUPPORTED, "%s: training a %s model (%s rope%s%s) is not supported; only llama-layout "
                      "models can be fine-tuned", m->path, h->arch, h->rope_type == EL_ROPE_NEOX ? "neox" : "normal",
                      h->has_qkv_bias ? ", q/k/v biases" : "", h->sliding_window ? ", sliding window below the context" : "");
    if (lora && lora->n_layers != h->n_layers)
        return el_err(err, EL_ERR_ARG, "LoRA adapter has %d layers, the model %d", lora->n_layers, h->n_layers);
    el_train_stage *st = calloc(1, sizeof *st);
    if (!st) return el_err(err, EL_ERR_NOMEM, "out of memory");
    st->m = m;
    st->lora = lora;
    st->pool = pool;
    st->lb = lb;
    st->le = le;
    st->B = o->batch;
    st->T = o->T;
    st->max_bytes = o->max_bytes;
    size_t n = (size_t)o->batch * o->T;
    st->n = (int)n;
    st->dim = h->dim;
    st->qd = h->n_heads * h->head_dim;
    st->kvd = h->n_kv_heads * h->head_dim;
    st->ff = h->ff;
    st->V = h->vocab;
    int ok = 1;
    st->acts = calloc((size_t)(le - lb) + 1, sizeof *st->acts);
    ok &= st->acts != NULL;
    st->inv_freq = take(st, (size_t)h->head_dim / 2 + 1);
    ok &= st->inv_freq != NULL;
    size_t scratch = 0;
    for (int l = lb; ok && l < le; l++) {
        layer_acts *a = &st->acts[l - lb];
        float **big[] = {&a->x_in, &a->xn1, &a->x_mid, &a->xn2};
        for (size_t i = 0; i < 4; i++) ok &= (*big[i] = take(st, n * st->dim)) != NULL;
        ok &= (a->rstd1 = take(st, n)) && (a->rstd2 = take(st, n));
        ok &= (a->q = take(st, n * st->qd)) && (a->ao = take(st, n * st->qd));
        ok &= (a->k = take(st, n * st->kvd)) && (a->v = take(st, n * st->kvd));
        ok &= (a->g = take(st, n * st->ff)) && (a->u = take(st, n * st->ff)) && (a->h = take(st, n * st->ff));
        for (int t = 0; ok && t < EL_LORA_N_TARGETS; t++) {
            const el_lora_mat *mt = el_lora_get(lora, l, t);
            size_t s = el_linear_scratch_floats(el_lora_base(m, l, t));
            if (s > scratch) scratch = s;
            if (!mt) continue;
            if (mt->rank > st->max_rank) st->max_rank = mt->rank;
            ok &= (a->t[t] = take(st, n * mt->rank)) != NULL;
        }
    }
    if (m->has_head) {
        size_t s = el_linear_scratch_floats(&m->output);
        if (s > scratch) scratch = s;
    }
    int wide = st->ff > st->dim ? st->ff : st->dim;
    if (st->qd > wide) wide = st->qd;
    if (ok) {
        ok &= (st->scratch = take(st, scratch)) && (st->tmp = take(st, n * (st->max_rank + 1)));
        ok &= (st->proj = take(st, n * wide)) && (st->dxn = take(st, n * st->dim)) && (st->dao = take(st, n * st->qd));
        ok &= (st->dq = take(st, n * st->qd)) && (st->dk = take(st, n * st->kvd)) && (st->dv = take(st, n * st->kvd));
        ok &= (st->dh = take(st, n * st->ff)) && (st->dg = take(st, n * st->ff)) && (st->du = take(st, n * st->ff));
    }
    if (ok && m->has_head) {
        ok &= (st->xh = take(st, n * st->dim)) && (st->xf = take(st, n * st->dim)) && (st->rstdf = take(st, n)) && (st->logits = take(st, n * st->V));
        ok &= (st->loss_rows = take(st, n)) && (st->dloss = take(st, n));
    }
    if (ok && lora) {
        ok &= (st->grads = take(st, lora->n_params)) != NULL;
        st->act_bytes -= lora->n_params * sizeof(float);  // reported with the adapter, not the activations
    }
    if (!ok) {
        int over = st->over;
        el_train_stage_free(st);
        if (over)
            return el_err(err, EL_ERR_NOMEM,
                          "training batch %d x context %d needs more than the %zu bytes of memory allowed for it",
                          o->batch, o->T, o->max_bytes);
        return el_err(err, EL_ERR_NOMEM, "out of memory for training activations (batch %d x context %d)", o->batch,
                      o->T);
    }
    el_model_rope_freqs(m, st->inv_freq);  // Llama 3 rope scaling included
    el_blas_threads(1);  // parallel over our pool instead (el_sgemm_par)
    *out = st;
    return EL_OK;
}

int el_train_rows(const el_train_stage *st) { return st->n; }
float *el_train_grads(el_train_stage *st) { return st->grads; }
void el_train_zero_grads(el_train_stage *st) {
    if (st->grads) memset(st->grads, 0, st->lora->n_params * sizeof(float));
}
size_t el_train_activation_bytes(const el_train_stage *st) { return st->act_bytes; }

el_status el_train_embed(el_train_stage *st, const int *tokens, float *x, el_error *err) {
    const el_model *m = st->m;
    if (!m->has_embed) return el_err(err, EL_ERR_STATE, "%s: token embedding is not loaded on this stage", m->path);
    for (int i = 0; i < st->n; i++)
        if (tokens[i] < 0 || tokens[i] >= st->V)
            return el_err(err, EL_ERR_RANGE, "token id %d is outside the vocabulary (0..%d)", tokens[i], st->V - 1);
    el_embedding_forward(x, tokens, st->n, &m->tok_embd);
    return EL_OK;
}

// x[n, dim] += Attention(RMSNorm(x)); x += FFN(RMSNorm(x)), keeping what backward needs
static void layer_forward(el_train_stage *st, int l, float *x) {
    const el_hparams *hp = &st->m->hp;
    const el_layer *W = &st->m->layers[l];
    layer_acts *a = &st->acts[l - st->lb];
    int n = st->n, dim = st->dim;
    el_linear q = linear_of(st, l, EL_LORA_Q), k = linear_of(st, l, EL_LORA_K), v = linear_of(st, l, EL_LORA_V);
    el_linear o = linear_of(st, l, EL_LORA_O), gate = linear_of(st, l, EL_LORA_GATE);
    el_linear up = linear_of(st, l, EL_LORA_UP), down = linear_of(st, l, EL_LORA_DOWN);

    // attention block
    memcpy(a->x_in, x, (size_t)n * dim * sizeof(float));
    el_rmsnorm_forward(a->xn1, a->rstd1, x, W->attn_norm.data, n, dim, hp->rms_eps);
    el_linear_forward(st->pool, a->q, a->t[EL_LORA_Q], a->xn1, &q, n, st->scratch);
    el_linear_forward(st->pool, a->k, a->t[EL_LORA_K], a->xn1, &k, n, st->scratch);
    el_linear_forward(st->pool, a->v, a->t[EL_LORA_V], a->xn1, &v, n, st->scratch);
    el_rope_forward(a->q, st->B, st->T, hp->n_heads, hp->head_dim, st->inv_freq);
    el_rope_forward(a->k, st->B, st->T, hp->n_kv_heads, hp->head_dim, st->inv_freq);
    el_attention_forward(st->pool, a->ao, a->q, a->k, a->v, st->B, st->T, hp->n_heads, hp->n_kv_heads,
                         hp->head_dim);
    el_linear_forward(st->pool, st->proj, a->t[EL_LORA_O], a->ao, &o, n, st->scratch);
    for (size_t i = 0; i < (size_t)n * dim; i++) x[i] += st->proj[i];

    // feed-forward block (SwiGLU)
    memcpy(a->x_mid, x, (size_t)n * dim * sizeof(float));
    el_rmsnorm_forward(a->xn2, a->rstd2, x, W->ffn_norm.data, n, dim, hp->rms_eps);
    el_linear_forward(st->pool, a->g, a->t[EL_LORA_GATE], a->xn2, &gate, n, st->scratch);
    el_linear_forward(st->pool, a->u, a->t[EL_LORA_UP], a->xn2, &up, n, st->scratch);
    rows_job sj = {.op = ROWS_SWIGLU_FWD, .width = st->ff, .a = a->h, .x = a->g, .y = a->u};
    run_rows(st, &sj);
    el_linear_forward(st->pool, st->proj, a->t[EL_LORA_DOWN], a->h, &down, n, st->scratch);
    for (size_t i = 0; i < (size_t)n * dim; i++) x[i] += st->proj[i];
}

// LoRA gradient slots of (layer, target) inside grads
static void grad_slots(el_train_stage *st, const el_linear *L, float **dA, float **dB) {
    *dA = *dB = NULL;
    if (!L->lora) return;
    *dA = st->grads + el_lora_offset(st->lora, L->lora);
    *dB = *dA + (size_t)L->lora->rank * L->lora->in;
}

static void linear_back(el_train_stage *st, float *dx, const float *dy, const float *x, const float *t,
                        const el_linear *L) {
    float *dA, *dB;
    grad_slots(st, L, &dA, &dB);
    el_linear_backward(st->pool, dx, dA, dB, dy, x, t, L, st->n, st->scratch, st->tmp);
}

// g: ∂loss/∂(layer output) in, ∂loss/∂(layer input) out
static void layer_backward(el_train_stage *st, int l, float *g) {
    const el_hparams *hp = &st->m->hp;
    const el_layer *W = &st->m->layers[l];
    layer_acts *a = &st->acts[l - st->lb];
    int n = st->n, dim = st->dim;
    size_t nd = (size_t)n * dim;
    el_linear q = linear_of(st, l, EL_LORA_Q), k = linear_of(st, l, EL_LORA_K), v = linear_of(st, l, EL_LORA_V);
    el_linear o = linear_of(st, l, EL_LORA_O), gate = linear_of(st, l, EL_LORA_GATE);
    el_linear up = linear_of(st, l, EL_LORA_UP), down = linear_of(st, l, EL_LORA_DOWN);

    // feed-forward block: x_out = x_mid + down(swiglu(gate(n2), up(n2))), n2 = rmsnorm(x_mid)
    memset(st->dh, 0, (size_t)n * st->ff * sizeof(float));
    linear_back(st, st->dh, g, a->h, a->t[EL_LORA_DOWN], &down);
    rows_job sj = {.op = ROWS_SWIGLU_BWD, .width = st->ff, .a = st->dg, .b = st->du, .x = st->dh, .y = a->g, .z = a->u};
    run_rows(st, &sj);
    memset(st->dxn, 0, nd * sizeof(float));
    linear_back(st, st->dxn, st->dg, a->xn2, a->t[EL_LORA_GATE], &gate);
    linear_back(st, st->dxn, st->du, a->xn2, a->t[EL_LORA_UP], &up);
    el_rmsnorm_backward(g, NULL, st->dxn, a->x_mid, W->ffn_norm.data, a->rstd2, n, dim);  // g = ∂/∂x_mid

    // attention block: x_mid = x_in + o(attn(rope(q(n1)), rope(k(n1)), v(n1))), n1 = rmsnorm(x_in)
    memset(st->dao, 0, (size_t)n * st->qd * sizeof(float));
    linear_back(st, st->dao, g, a->ao, a->t[EL_LORA_O], &o);
    el_attention_backward(st->pool, st->dq, st->dk, st->dv, st->dao, a->q, a->k, a->v, st->B, st->T,
                          hp->n_heads, hp->n_kv_heads, hp->head_dim);
    el_rope_backward(st->dq, st->B, st->T, hp->n_heads, hp->head_dim, st->inv_freq);
    el_rope_backward(st->dk, st->B, st->T, hp->n_kv_heads, hp->head_dim, st->inv_freq);
    memset(st->dxn, 0, nd * sizeof(float));
    linear_back(st, st->dxn, st->dq, a->xn1, a->t[EL_LORA_Q], &q);
    linear_back(st, st->dxn, st->dk, a->xn1, a->t[EL_LORA_K], &k);
    linear_back(st, st->dxn, st->dv, a->xn1, a->t[EL_LORA_V], &v);
    el_rmsnorm_backward(g, NULL, st->dxn, a->x_in, W->attn_norm.data, a->rstd1, n, dim);  // g = ∂/∂x_in
}

el_status el_train_layers_forward(el_train_stage *st, float *x, el_error *err) {
    (void)err;
    for (int l = st->lb; l < st->le; l++) layer_forward(st, l, x);
    return EL_OK;
}

el_status el_train_layers_backward(el_train_stage *st, float *g, el_error *err) {
    if (!st->grads && st->lora) return el_err(err, EL_ERR_STATE, "no gradient buffer");
    for (int l = st->le - 1; l >= st->lb; l--) layer_backward(st, l, g);
    return EL_OK;
}

el_status el_train_head(el_train_stage *st, const float *x, const int *targets, const float *mask, double *loss,
                        double *n_tokens, float *dx, float grad_scale, float *logits, el_error *err) {
    const el_model *m = st->m;
    if (!m->has_head) return el_err(err, EL_ERR_STATE, "%s: output head is not loaded on this stage", m->path);
    int n = st->n, V = st->V;
    for (int i = 0; i < n; i++)
        if (targets[i] >= V) return el_err(err, EL_ERR_RANGE, "target token %d is outside the vocabulary", targets[i]);
    el_linear head = {&m->output, NULL, 0};
    memcpy(st->xh, x, (size_t)n * st->dim * sizeof(float));
    el_rmsnorm_forward(st->xf, st->rstdf, st->xh, m->output_norm.data, n, st->dim, m->hp.rms_eps);
    el_linear_forward(st->pool, st->logits, NULL, st->xf, &head, n, st->scratch);
    if (logits) memcpy(logits, st->logits, (size_t)n * V * sizeof(float));
    rows_job cf = {.op = ROWS_CE_FWD, .width = V, .a = st->loss_rows, .b = st->logits, .x = st->logits, .targets = targets};
    run_rows(st, &cf);
    double sum = 0, wsum = 0;
    for (int i = 0; i < n; i++) {
        if (targets[i] < 0 || mask[i] == 0) continue;
        sum += (double)mask[i] * st->loss_rows[i];
        wsum += mask[i];
    }
    *loss = wsum > 0 ? sum / wsum : 0;
    if (n_tokens) *n_tokens = wsum;
    if (!dx) return EL_OK;
    for (int i = 0; i < n; i++) st->dloss[i] = wsum > 0 && targets[i] >= 0 ? (float)(mask[i] / wsum) * grad_scale : 0;
    rows_job cb = {.op = ROWS_CE_BWD, .width = V, .a = st->logits, .x = st->logits, .y = st->dloss, .targets = targets};
    run_rows(st, &cb);
    memset(st->dxn, 0, (size_t)n * st->dim * sizeof(float));
    el_linear_backward(st->pool, st->dxn, NULL, NULL, st->logits, st->xf, NULL, &head, n, st->scratch, st->tmp);
    memset(dx, 0, (size_t)n * st->dim * sizeof(float));
    el_rmsnorm_backward(dx, NULL, st->dxn, st->xh, m->output_norm.data, st->rstdf, n, st->dim);
    return EL_OK;
}
