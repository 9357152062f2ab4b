// A training stage: the layers of one contiguous range run forward (the
// activations kept) and backward (gradient at the output in, gradient at the
// input out, LoRA gradients accumulated), plus the embedding and the head +
// cross-entropy when the stage holds them. The layer is src/model/layer.c's,
// the one inference runs; this file holds the memory and the order. Split
// fine-tuning runs one stage per node exactly as el_session_embed/layers/head
// split inference.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/kernels.h"
#include "edgellm/train.h"

struct el_train_stage {
    const el_model *m;
    const el_lora *lora;
    el_pool *pool;
    int lb, le, B, T, n;
    int dim, qd, kvd, ff, V, max_rank;
    float *inv_freq;
    int *pos;                // [n] row b·T + t is position t
    el_lora_set set;         // the trained adapter at scale 1
    int seg_start[2];        // one segment: every row
    const el_lora_set *seg_lora[1];
    el_layer_acts *acts;     // [le - lb] what each layer keeps for backward
    el_layer_grad gr;        // backward's scratch and the LoRA gradients
    float *grads;            // like lora->params
    float *scratch;          // dequantized weight tiles
    float *proj;             // [n, dim] the layers' projection scratch
    float *xh, *xf, *rstdf, *logits, *loss_rows, *dloss;  // head (xh: its input, so dx may alias x)
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
    float *p = el_calloc_aligned(n_floats ? n_floats : 1, sizeof(float));  // as the inference step's buffers
    if (p) {
        st->allocs[st->n_allocs++] = p;
        st->act_bytes += n_floats * sizeof(float);
    }
    return p;
}

void el_train_stage_free(el_train_stage *st) {
    if (!st) return;
    for (int i = 0; i < st->n_allocs; i++) el_calloc_free(st->allocs[i]);
    free(st->allocs);
    free(st->acts);
    free(st->pos);
    free(st);
}

// The head's softmax over the vocabulary, row-parallel (every row is
// independent, so the split does not change any result): the largest serial
// part of a step otherwise.
typedef struct {
    el_train_stage *st;
    int backward, rows_per_task;
    const int *targets;
} ce_job;

static void ce_task(void *ctx, int i, int n_tasks) {
    (void)n_tasks;
    const ce_job *j = ctx;
    el_train_stage *st = j->st;
    int r0 = i * j->rows_per_task, r1 = r0 + j->rows_per_task < st->n ? r0 + j->rows_per_task : st->n;
    if (r0 >= r1) return;
    float *l = st->logits + (size_t)r0 * st->V;
    if (j->backward)
        el_cross_entropy_backward(l, l, j->targets + r0, st->dloss + r0, r1 - r0, st->V);
    else
        el_cross_entropy_forward(st->loss_rows + r0, l, l, j->targets + r0, r1 - r0, st->V);
}

static void run_ce(el_train_stage *st, int backward, const int *targets) {
    int P = el_pool_size(st->pool);
    ce_job j = {st, backward, (st->n + P - 1) / P, targets};
    el_pool_run(st->pool, ce_task, &j, (st->n + j.rows_per_task - 1) / j.rows_per_task);
}

// What the layer reads for layer l of this stage: the rows are B training
// contexts of T positions, the trained adapter applies to all of them.
static el_layer_io layer_io(const el_train_stage *st, int l) {
    return (el_layer_io){.m = st->m, .layer = l, .pool = st->pool, .n = st->n, .pos = st->pos, .inv_freq = st->inv_freq,
                         .T = st->T, .n_seg = st->lora ? 1 : 0, .seg_start = st->seg_start, .seg_lora = st->seg_lora,
                         .dense = 1, .scratch = st->scratch};
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
    st->set = (el_lora_set){1, {lora}, {1.0f}};
    st->seg_start[0] = 0, st->seg_start[1] = st->n;
    st->seg_lora[0] = lora ? &st->set : NULL;
    int ok = 1;
    st->acts = calloc((size_t)(le - lb) + 1, sizeof *st->acts);
    st->pos = malloc(n * sizeof *st->pos);
    ok &= st->acts != NULL && st->pos != NULL;
    for (size_t r = 0; ok && r < n; r++) st->pos[r] = (int)(r % (size_t)o->T);
    ok &= (st->inv_freq = take(st, (size_t)h->head_dim / 2 + 1)) != NULL;
    size_t scratch = 0;
    for (int l = lb; ok && l < le; l++) {
        el_layer_acts *a = &st->acts[l - lb];
        float **big[] = {&a->x_in, &a->xn1, &a->x_mid, &a->xn2};
        for (size_t i = 0; i < 4; i++) ok &= (*big[i] = take(st, n * st->dim)) != NULL;
        ok &= (a->rstd1 = take(st, n)) && (a->rstd2 = take(st, n)) && (a->lse = take(st, n * h->n_heads));
        ok &= (a->q = take(st, n * st->qd)) && (a->ao = take(st, n * st->qd));
        ok &= (a->k = take(st, n * st->kvd)) && (a->v = take(st, n * st->kvd));
        ok &= (a->g = take(st, n * st->ff)) && (a->u = take(st, n * st->ff)) && (a->h = take(st, n * st->ff));
        for (int t = 0; ok && t < EL_LORA_N_TARGETS; t++) {
            const el_lora_mat *mt = el_lora_get(lora, l, t);
            size_t s = el_proj_scratch_floats(el_lora_base(m, l, t));
            if (s > scratch) scratch = s;
            if (!mt) continue;
            if (mt->rank > st->max_rank) st->max_rank = mt->rank;
            ok &= (a->t[t] = take(st, n * mt->rank)) != NULL;
        }
    }
    if (m->has_head) {
        size_t s = el_proj_scratch_floats(&m->output);
        if (s > scratch) scratch = s;
    }
    el_layer_grad *gr = &st->gr;
    if (ok) {
        ok &= (st->scratch = take(st, scratch)) && (gr->tmp = take(st, n * (st->max_rank + 1)));
        ok &= (st->proj = take(st, n * st->dim)) != NULL;
        for (int l = lb; ok && l < le; l++) st->acts[l - lb].proj = st->proj;
        ok &= (gr->dxn = take(st, n * st->dim)) && (gr->dao = take(st, n * st->qd)) && (gr->dq = take(st, n * st->qd));
        ok &= (gr->dk = take(st, n * st->kvd)) && (gr->dv = take(st, n * st->kvd)) && (gr->D = take(st, n * h->n_heads));
        ok &= (gr->dh = take(st, n * st->ff)) && (gr->dg = take(st, n * st->ff)) && (gr->du = take(st, n * st->ff));
    }
    if (ok && m->has_head) {
        ok &= (st->xh = take(st, n * st->dim)) && (st->xf = take(st, n * st->dim)) && (st->rstdf = take(st, n));
        ok &= (st->logits = take(st, n * st->V)) != NULL;
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
    gr->lora = lora;
    gr->grads = st->grads;
    el_model_rope_freqs(m, st->inv_freq);  // Llama 3 rope scaling included
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

el_status el_train_layers_forward(el_train_stage *st, float *x, el_error *err) {
    for (int l = st->lb; l < st->le; l++) {
        el_layer_io io = layer_io(st, l);
        if (el_layer_forward(&io, &st->acts[l - st->lb], x))
            return el_err(err, EL_ERR_NOMEM, "out of memory for attention scores (context %d)", st->T);
    }
    return EL_OK;
}

el_status el_train_layers_backward(el_train_stage *st, float *g, el_error *err) {
    if (!st->grads && st->lora) return el_err(err, EL_ERR_STATE, "no gradient buffer");
    for (int l = st->le - 1; l >= st->lb; l--) {
        el_layer_io io = layer_io(st, l);
        if (el_layer_backward(&io, &st->acts[l - st->lb], &st->gr, g))
            return el_err(err, EL_ERR_NOMEM, "out of memory for attention scores (context %d)", st->T);
    }
    return EL_OK;
}

el_status el_train_head(el_train_stage *st, const float *x, const int *targets, const float *mask, double *loss,
                        double *n_tokens, float *dx, float grad_scale, float *logits, el_error *err) {
    const el_model *m = st->m;
    if (!m->has_head) return el_err(err, EL_ERR_STATE, "%s: output head is not loaded on this stage", m->path);
    int n = st->n, V = st->V;
    for (int i = 0; i < n; i++)
        if (targets[i] >= V) return el_err(err, EL_ERR_RANGE, "target token %d is outside the vocabulary", targets[i]);
    // final norm and head: the ops inference's head runs
    memcpy(st->xh, x, (size_t)n * st->dim * sizeof(float));
    el_rmsnorm_forward(st->xf, st->rstdf, st->xh, m->output_norm.data, n, st->dim, m->hp.rms_eps);
    el_proj_forward(st->pool, 1, &st->logits, st->xf, (const el_tensor *[]){&m->output}, n, 1, st->scratch);
    if (logits) memcpy(logits, st->logits, (size_t)n * V * sizeof(float));
    run_ce(st, 0, targets);
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
    run_ce(st, 1, targets);
    float *dxf = st->gr.dxn;
    memset(dxf, 0, (size_t)n * st->dim * sizeof(float));
    el_proj_backward(st->pool, dxf, st->logits, &m->output, n, st->scratch);
    memset(dx, 0, (size_t)n * st->dim * sizeof(float));
    el_rmsnorm_backward(dx, NULL, dxf, st->xh, m->output_norm.data, st->rstdf, n, st->dim);
    return EL_OK;
}
