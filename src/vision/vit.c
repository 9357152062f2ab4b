// The vision encoder: patch embedding as a matrix product, pre-layer-norm
// ViT blocks with full (non-causal) attention, then the LLaVA projector.
// Read `block_forward` top to bottom: it is the block. Every product runs on
// the pool (el_matmul_dense: AVX-512 tiles, or BLAS panels, for f32/f16
// weights; the integer kernels for quantized ones); attention is a pool task
// per head (el_attn_full); the row-wise steps run on the pool in blocks of rows.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/kernels.h"
#include "vision_internal.h"

void vit_scratch_free(el_vision *v) {
    float **bufs[] = {&v->x, &v->xn, &v->q, &v->k, &v->v, &v->att, &v->tmp, &v->ffh, &v->patches, &v->wbuf, &v->awork};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        el_free_aligned(*bufs[i]);
        *bufs[i] = NULL;
    }
}

static el_status scratch(el_vision *v, el_error *err) {
    if (v->x) return EL_OK;
    const el_vision_hparams *h = &v->hp;
    size_t n = (size_t)h->n_pos, H = (size_t)h->hidden;
    size_t wide = (size_t)(h->ff > h->proj_hidden ? h->ff : h->proj_hidden);
    if (wide < (size_t)h->out_dim) wide = (size_t)h->out_dim;
    size_t P = (size_t)h->patch_size;
    v->x = el_malloc_aligned(n * H * sizeof(float));
    v->xn = el_malloc_aligned(n * H * sizeof(float));
    v->q = el_malloc_aligned(n * H * sizeof(float));
    v->k = el_malloc_aligned(n * H * sizeof(float));
    v->v = el_malloc_aligned(n * H * sizeof(float));
    v->att = el_malloc_aligned(n * H * sizeof(float));
    v->tmp = el_malloc_aligned(n * (H > wide ? H : wide) * sizeof(float));
    v->ffh = el_malloc_aligned(n * wide * sizeof(float));
    v->patches = el_malloc_aligned((size_t)h->n_patches * 3 * P * P * sizeof(float));
    // workspaces of the products (the largest) and of attention (one per head)
    const el_tensor *patch[1] = {&v->patch_w}, *m0[1] = {&v->mm0}, *m2[1] = {&v->mm2};
    size_t big = el_matmul_dense_work(h->n_patches, 1, patch), w;
    if ((w = el_matmul_dense_work(h->n_patches, 1, m0)) > big) big = w;
    if ((w = el_matmul_dense_work(h->n_patches, 1, m2)) > big) big = w;
    for (int l = 0; l < h->n_run; l++) {
        const vit_block *b = &v->blocks[l];
        const el_tensor *qkv[3] = {&b->wq, &b->wk, &b->wv}, *wo[1] = {&b->wo}, *f1[1] = {&b->fc1}, *f2[1] = {&b->fc2};
        if ((w = el_matmul_dense_work(h->n_pos, 3, qkv)) > big) big = w;
        if ((w = el_matmul_dense_work(h->n_pos, 1, wo)) > big) big = w;
        if ((w = el_matmul_dense_work(h->n_pos, 1, f1)) > big) big = w;
        if ((w = el_matmul_dense_work(h->n_pos, 1, f2)) > big) big = w;
    }
    v->wbuf = el_malloc_aligned(big * sizeof(float));
    v->awork = el_malloc_aligned((size_t)h->heads * el_attn_full_work(h->n_pos, h->hidden / h->heads) * sizeof(float));
    if (!v->x || !v->xn || !v->q || !v->k || !v->v || !v->att || !v->tmp || !v->ffh || !v->patches || !v->wbuf ||
        !v->awork) {
        vit_scratch_free(v);
        return el_err(err, EL_ERR_NOMEM, "%s: out of memory for the encoder's activations", v->path);
    }
    return EL_OK;
}

// ---------------------------------------------------------------- row-wise steps

enum { ROWS_LN, ROWS_ACT, ROWS_RESID };
#define ROWS_PER_TASK 16

typedef struct {
    int op, width;
    float *x;           // [n][width], in place (ROWS_ACT) or the source (ROWS_LN, ROWS_RESID)
    float *out;         // ROWS_LN: destination; ROWS_RESID: the residual stream
    const float *w, *b;  // norm weight and bias
    float eps;
    int act;  // ROWS_ACT: 1 GELU, 0 quick GELU
    int n;
} rows_job;

static void rows_task(void *ctx, int t, int n_tasks) {
    (void)n_tasks;
    const rows_job *j = ctx;
    int r1 = (t + 1) * ROWS_PER_TASK < j->n ? (t + 1) * ROWS_PER_TASK : j->n;
    for (int r = t * ROWS_PER_TASK; r < r1; r++) {
        float *x = j->x + (size_t)r * j->width;
        switch (j->op) {
        case ROWS_LN: el_layernorm(j->out + (size_t)r * j->width, x, j->w, j->b, j->width, j->eps); break;
        case ROWS_ACT:
            if (j->act) el_gelu(x, j->width);
            else el_gelu_quick(x, j->width);
            break;
        case ROWS_RESID: {
            float *y = j->out + (size_t)r * j->width;
            for (int i = 0; i < j->width; i++) y[i] += x[i];
            break;
        }
        }
    }
}

static void rows_run(el_pool *pool, rows_job j) {
    el_pool_run(pool, rows_task, &j, (j.n + ROWS_PER_TASK - 1) / ROWS_PER_TASK);
}

static void layernorm_rows(el_pool *pool, float *out, float *x, const float *w, const float *b, int n, int width,
                           float eps) {
    rows_run(pool, (rows_job){ROWS_LN, width, x, out, w, b, eps, 0, n});
}

// outs[i][n, d_i] = x[n, k] · Ws[i]ᵀ + bs[i], the products sharing their input's packing
static void linear(el_vision *v, el_pool *pool, int count, float *const *outs, const float *x,
                   const el_tensor *const *Ws, const float *const *bs, int n) {
    el_matmul_dense_many_isa(pool, count, outs, x, Ws, bs, n, v->wbuf, v->isa);
}

static void rows_act(el_pool *pool, float *x, int n, int width, int gelu) {
    rows_run(pool, (rows_job){ROWS_ACT, width, x, NULL, NULL, NULL, 0, gelu, n});
}

// y[n, width] += t
static void rows_resid(el_pool *pool, float *y, float *t, int n, int width) {
    rows_run(pool, (rows_job){ROWS_RESID, width, t, y, NULL, NULL, 0, 0, n});
}

// ---------------------------------------------------------------- attention

typedef struct {
    const float *q, *k, *v;
    float *out, *work;
    size_t work_per_head;
    int n, width, hd;
    el_isa isa;
} attn_job;

static void attn_task(void *ctx, int h, int n_tasks) {
    (void)n_tasks;
    const attn_job *j = ctx;
    size_t col = (size_t)h * j->hd, W = (size_t)j->width;
    el_attn_full_isa(j->out + col, W, j->q + col, W, j->k + col, W, j->v + col, W, j->n, j->hd,
                     1.0f / sqrtf((float)j->hd), j->work + (size_t)h * j->work_per_head, j->isa);
}

// ---------------------------------------------------------------- the block

// x[n, H] += Attention(LN1(x)); x += MLP(LN2(x))
static el_status block_forward(el_vision *v, el_pool *pool, const vit_block *b, el_error *err) {
    const el_vision_hparams *h = &v->hp;
    int n = h->n_pos, H = h->hidden;
    layernorm_rows(pool, v->xn, v->x, b->ln1_w, b->ln1_b, n, H, h->eps);
    linear(v, pool, 3, (float *[]){v->q, v->k, v->v}, v->xn, (const el_tensor *[]){&b->wq, &b->wk, &b->wv},
           (const float *[]){b->bq, b->bk, b->bv}, n);
    int hd = H / h->heads;
    attn_job aj = {v->q, v->k, v->v, v->att, v->awork, el_attn_full_work(n, hd), n, H, hd, v->isa};
    el_pool_run(pool, attn_task, &aj, h->heads);
    linear(v, pool, 1, &v->tmp, v->att, (const el_tensor *[]){&b->wo}, (const float *[]){b->bo}, n);
    rows_resid(pool, v->x, v->tmp, n, H);  // x += att·Woᵀ + bo

    layernorm_rows(pool, v->xn, v->x, b->ln2_w, b->ln2_b, n, H, h->eps);
    linear(v, pool, 1, &v->ffh, v->xn, (const el_tensor *[]){&b->fc1}, (const float *[]){b->fc1_b}, n);
    rows_act(pool, v->ffh, n, h->ff, h->gelu);
    linear(v, pool, 1, &v->tmp, v->ffh, (const el_tensor *[]){&b->fc2}, (const float *[]){b->fc2_b}, n);
    rows_resid(pool, v->x, v->tmp, n, H);
    return EL_OK;
}

// ---------------------------------------------------------------- encode

el_status el_vision_encode(el_vision *v, el_pool *pool, const float *pixels, float *out, el_error *err) {
    const el_vision_hparams *h = &v->hp;
    el_status st = scratch(v, err);
    if (st) return st;
    int N = h->image_size, P = h->patch_size, side = N / P, H = h->hidden, cls = h->has_class;
    size_t plen = (size_t)3 * P * P;
    // patches in the kernel's order: channel, then row, then column
    for (int py = 0; py < side; py++)
        for (int px = 0; px < side; px++) {
            float *row = v->patches + (size_t)(py * side + px) * plen;
            for (int c = 0; c < 3; c++)
                for (int ky = 0; ky < P; ky++)
                    memcpy(row + ((size_t)c * P + ky) * P, pixels + ((size_t)c * N + (size_t)py * P + ky) * N + (size_t)px * P,
                           (size_t)P * sizeof(float));
        }
    // embeddings: [class token,] patches, each plus its position's embedding
    linear(v, pool, 1, (float *[]){v->x + (size_t)cls * H}, v->patches, (const el_tensor *[]){&v->patch_w},
           (const float *[]){v->patch_b}, h->n_patches);
    if (cls) memcpy(v->x, v->class_embd, (size_t)H * sizeof(float));
    for (size_t i = 0; i < (size_t)h->n_pos * H; i++) v->x[i] += v->pos_embd[i];
    if (h->has_pre_ln) layernorm_rows(pool, v->x, v->x, v->pre_w, v->pre_b, h->n_pos, H, h->eps);
    for (int l = 0; l < h->n_run; l++)
        if ((st = block_forward(v, pool, &v->blocks[l], err))) return st;
    if (h->has_post_ln) layernorm_rows(pool, v->x, v->x, v->post_w, v->post_b, h->n_pos, H, h->eps);
    // the projector over the patch rows (the class token's row is dropped):
    // out = GELU(f·mm0ᵀ + b0)·mm2ᵀ + b2
    const float *feat = v->x + (size_t)cls * H;
    linear(v, pool, 1, &v->ffh, feat, (const el_tensor *[]){&v->mm0}, (const float *[]){v->mm0_b}, h->n_patches);
    rows_act(pool, v->ffh, h->n_patches, h->proj_hidden, 1);
    linear(v, pool, 1, &out, v->ffh, (const el_tensor *[]){&v->mm2}, (const float *[]){v->mm2_b}, h->n_patches);
    return EL_OK;
}
