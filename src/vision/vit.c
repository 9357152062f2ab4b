// The vision encoder: patch embedding as a matrix product, pre-layer-norm
// ViT blocks with full (non-causal) attention, then the LLaVA projector.
// Read `block_forward` top to bottom: it is the block.
// Activations are in panels of 32 tokens, feature-major within a panel
// (kernels.h, el_panel_index), so that every product (el_matmul_p: AVX-512
// tiles, BLAS, or the integer kernels for quantized weights), attention (a
// pool task per head, el_attn_p) and layer norm read and write one layout;
// the image's rows leave in the usual token-major layout at the end.
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

static size_t max_work(size_t a, size_t b) { return a > b ? a : b; }

// el_panel_index, inline: token t's feature f of F
static inline size_t pidx(int t, int f, int F) { return ((size_t)(t / EL_PANEL) * F + f) * EL_PANEL + t % EL_PANEL; }

static el_status scratch(el_vision *v, el_error *err) {
    if (v->x) return EL_OK;
    const el_vision_hparams *h = &v->hp;
    size_t ld = ((size_t)h->n_pos + 31) / 32 * 32, H = (size_t)h->hidden, P = (size_t)h->patch_size;
    size_t wide = (size_t)(h->ff > h->proj_hidden ? h->ff : h->proj_hidden);
    wide = max_work(wide, (size_t)h->out_dim);
    v->ld = ld;  // tokens rounded up to whole panels
    // zeroed once: slots past the sequence stay finite whatever runs over them
    size_t act = H * ld;
    v->x = el_malloc_aligned(act * sizeof(float));
    v->xn = el_malloc_aligned(act * sizeof(float));
    v->q = el_malloc_aligned(act * sizeof(float));
    v->k = el_malloc_aligned(act * sizeof(float));
    v->v = el_malloc_aligned(act * sizeof(float));
    v->att = el_malloc_aligned(act * sizeof(float));
    v->tmp = el_malloc_aligned(max_work(H, wide) * ld * sizeof(float));
    v->ffh = el_malloc_aligned(wide * ld * sizeof(float));
    v->patches = el_malloc_aligned(3 * P * P * ld * sizeof(float));
    // workspaces of the products (the largest) and of attention (one per head)
    const el_tensor *patch[1] = {&v->patch_w}, *m0[1] = {&v->mm0}, *m2[1] = {&v->mm2};
    size_t big = el_matmul_p_work(h->n_pos, 1, patch);
    big = max_work(big, el_matmul_p_work(h->n_pos, 1, m0));
    big = max_work(big, el_matmul_p_work(h->n_pos, 1, m2));
    for (int l = 0; l < h->n_run; l++) {
        const vit_block *b = &v->blocks[l];
        const el_tensor *qkv[3] = {&b->wq, &b->wk, &b->wv}, *wo[1] = {&b->wo}, *f1[1] = {&b->fc1}, *f2[1] = {&b->fc2};
        big = max_work(big, el_matmul_p_work(h->n_pos, 3, qkv));
        big = max_work(big, el_matmul_p_work(h->n_pos, 1, wo));
        big = max_work(big, el_matmul_p_work(h->n_pos, 1, f1));
        big = max_work(big, el_matmul_p_work(h->n_pos, 1, f2));
    }
    v->wbuf = el_malloc_aligned(big * sizeof(float));
    v->awork = el_malloc_aligned((size_t)h->heads * el_attn_p_work(h->n_pos, h->hidden / h->heads) * sizeof(float));
    if (!v->x || !v->xn || !v->q || !v->k || !v->v || !v->att || !v->tmp || !v->ffh || !v->patches || !v->wbuf ||
        !v->awork) {
        vit_scratch_free(v);
        return el_err(err, EL_ERR_NOMEM, "%s: out of memory for the encoder's activations", v->path);
    }
    float *zero[] = {v->x, v->xn, v->q, v->k, v->v, v->att};
    for (int i = 0; i < 6; i++) memset(zero[i], 0, act * sizeof(float));
    memset(v->tmp, 0, max_work(H, wide) * ld * sizeof(float));
    memset(v->ffh, 0, wide * ld * sizeof(float));
    memset(v->patches, 0, 3 * P * P * ld * sizeof(float));
    return EL_OK;
}

// ---------------------------------------------------------------- row-wise steps

// Element-wise steps over whole activations (every slot, padding included).
enum { EW_ACT, EW_RESID };
#define EW_PER_TASK 16384

typedef struct {
    int op;
    float *x;    // in place (EW_ACT) or the addend (EW_RESID)
    float *out;  // EW_RESID: the residual stream
    size_t n;
    int act;  // EW_ACT: 1 GELU, 0 quick GELU
} ew_job;

static void ew_task(void *ctx, int t, int n_tasks) {
    (void)n_tasks;
    const ew_job *j = ctx;
    size_t i0 = (size_t)t * EW_PER_TASK, i1 = i0 + EW_PER_TASK < j->n ? i0 + EW_PER_TASK : j->n;
    if (j->op == EW_ACT) {
        if (j->act) el_gelu(j->x + i0, (int)(i1 - i0));
        else el_gelu_quick(j->x + i0, (int)(i1 - i0));
    } else {
        for (size_t i = i0; i < i1; i++) j->out[i] += j->x[i];
    }
}

static void ew_run(el_pool *pool, ew_job j) {
    el_pool_run(pool, ew_task, &j, (int)((j.n + EW_PER_TASK - 1) / EW_PER_TASK));
}

// x (features x tokens) = act(x)
static void act_all(el_vision *v, el_pool *pool, float *x, int features, int gelu) {
    ew_run(pool, (ew_job){EW_ACT, x, NULL, (size_t)features * v->ld, gelu});
}

// y += t over the residual stream
static void resid(el_vision *v, el_pool *pool, float *y, float *t) {
    ew_run(pool, (ew_job){EW_RESID, t, y, (size_t)v->hp.hidden * v->ld, 0});
}

typedef struct {
    float *out;
    const float *x, *w, *b;
    int F;
    float eps;
    el_isa isa;
} ln_job;

static void ln_task(void *ctx, int p, int n_tasks) {
    (void)n_tasks;
    const ln_job *j = ctx;
    el_layernorm_p_isa(j->out, j->x, j->F, j->w, j->b, p, p + 1, j->eps, j->isa);
}

// a panel of tokens per task
static void layernorm(el_vision *v, el_pool *pool, float *out, const float *x, const float *w, const float *b) {
    ln_job j = {out, x, w, b, v->hp.hidden, v->hp.eps, v->isa};
    el_pool_run(pool, ln_task, &j, (int)(v->ld / EL_PANEL));
}

// outs[i] = Ws[i] · x + bs[i], the products sharing their input
static void linear(el_vision *v, el_pool *pool, int count, float *const *outs, const float *x,
                   const el_tensor *const *Ws, const float *const *bs) {
    el_matmul_p_many_isa(pool, count, outs, x, Ws, bs, v->hp.n_pos, v->wbuf, v->isa);
}

// ---------------------------------------------------------------- attention

typedef struct {
    const el_vision *v;
    float *work;
    size_t work_per_head;
} attn_job;

static void attn_task(void *ctx, int h, int n_tasks) {
    (void)n_tasks;
    const attn_job *j = ctx;
    const el_vision *v = j->v;
    int hd = v->hp.hidden / v->hp.heads;
    el_attn_p_isa(v->att, v->q, v->k, v->v, v->hp.hidden, h * hd, v->hp.n_pos, hd, 1.0f / sqrtf((float)hd),
                  j->work + (size_t)h * j->work_per_head, v->isa);
}

// ---------------------------------------------------------------- the block

// x += Attention(LN1(x)); x += MLP(LN2(x))
static void block_forward(el_vision *v, el_pool *pool, const vit_block *b) {
    const el_vision_hparams *h = &v->hp;
    layernorm(v, pool, v->xn, v->x, b->ln1_w, b->ln1_b);
    linear(v, pool, 3, (float *[]){v->q, v->k, v->v}, v->xn, (const el_tensor *[]){&b->wq, &b->wk, &b->wv},
           (const float *[]){b->bq, b->bk, b->bv});
    attn_job aj = {v, v->awork, el_attn_p_work(h->n_pos, h->hidden / h->heads)};
    el_pool_run(pool, attn_task, &aj, h->heads);
    linear(v, pool, 1, &v->tmp, v->att, (const el_tensor *[]){&b->wo}, (const float *[]){b->bo});
    resid(v, pool, v->x, v->tmp);  // x += Wo·att + bo

    layernorm(v, pool, v->xn, v->x, b->ln2_w, b->ln2_b);
    linear(v, pool, 1, &v->ffh, v->xn, (const el_tensor *[]){&b->fc1}, (const float *[]){b->fc1_b});
    act_all(v, pool, v->ffh, h->ff, h->gelu);
    linear(v, pool, 1, &v->tmp, v->ffh, (const el_tensor *[]){&b->fc2}, (const float *[]){b->fc2_b});
    resid(v, pool, v->x, v->tmp);
}

// ---------------------------------------------------------------- encode

el_status el_vision_encode(el_vision *v, el_pool *pool, const float *pixels, float *out, el_error *err) {
    const el_vision_hparams *h = &v->hp;
    el_status st = scratch(v, err);
    if (st) return st;
    int N = h->image_size, P = h->patch_size, side = N / P, H = h->hidden, cls = h->has_class;
    int F = 3 * P * P;
    // patches as tokens, their features in the kernel's order (channel, row,
    // column); token cls + p is patch p, so that the class token is token 0
    for (int py = 0; py < side; py++)
        for (int px = 0; px < side; px++) {
            int t = cls + py * side + px;
            for (int c = 0; c < 3; c++)
                for (int ky = 0; ky < P; ky++)
                    for (int kx = 0; kx < P; kx++)
                        v->patches[pidx(t, (c * P + ky) * P + kx, F)] =
                            pixels[((size_t)c * N + (size_t)py * P + ky) * N + (size_t)px * P + kx];
        }
    // embeddings: the class token, the patches, each plus its position's embedding
    linear(v, pool, 1, &v->x, v->patches, (const el_tensor *[]){&v->patch_w}, (const float *[]){v->patch_b});
    for (int t = 0; t < h->n_pos; t++)
        for (int r = 0; r < H; r++) {
            float *xv = v->x + pidx(t, r, H);
            if (cls && t == 0) *xv = v->class_embd[r];
            *xv += v->pos_embd[(size_t)t * H + r];
        }
    if (h->has_pre_ln) layernorm(v, pool, v->x, v->x, v->pre_w, v->pre_b);
    for (int l = 0; l < h->n_run; l++) block_forward(v, pool, &v->blocks[l]);
    if (h->has_post_ln) layernorm(v, pool, v->x, v->x, v->post_w, v->post_b);
    // the projector over every column; the class token's is dropped below:
    // GELU(mm0·x + b0), then mm2·that + b2
    linear(v, pool, 1, &v->ffh, v->x, (const el_tensor *[]){&v->mm0}, (const float *[]){v->mm0_b});
    act_all(v, pool, v->ffh, h->proj_hidden, 1);
    linear(v, pool, 1, &v->tmp, v->ffh, (const el_tensor *[]){&v->mm2}, (const float *[]){v->mm2_b});
    for (int p = 0; p < h->n_patches; p++)
        for (int j = 0; j < h->out_dim; j++) out[(size_t)p * h->out_dim + j] = v->tmp[pidx(cls + p, j, h->out_dim)];
    return EL_OK;
}
