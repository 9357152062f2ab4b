// Forward/backward pairs of every op in the Llama forward pass, for LoRA
// training. Each forward matches model/forward.c's inference arithmetic; each
// backward is checked against double-precision finite differences in
// tests/unit/test_train.c. Shapes are in include/edgellm/train.h.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/kernels.h"
#include "edgellm/train.h"

// ---------------------------------------------------------------- embedding

// x[n, dim] = E[tokens[i]]
void el_embedding_forward(float *x, const int *tokens, int n, const el_tensor *E) {
    int dim = (int)E->ne[0];
    for (int i = 0; i < n; i++) el_tensor_row_f32(E, tokens[i], x + (size_t)i * dim);
}

// dE[tokens[i], dim] += dx[i, dim]
void el_embedding_backward(float *dE, const float *dx, const int *tokens, int n, int dim) {
    for (int i = 0; i < n; i++) {
        float *d = dE + (size_t)tokens[i] * dim;
        const float *g = dx + (size_t)i * dim;
        for (int j = 0; j < dim; j++) d[j] += g[j];
    }
}

// ---------------------------------------------------------------- rmsnorm

// y[n, d] = x · rstd · w: y from the inference kernel itself (so training and
// inference agree bit for bit however el_rmsnorm is vectorised), rstd for backward
void el_rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, int n, int d, float eps) {
    for (int i = 0; i < n; i++) {
        const float *xr = x + (size_t)i * d;
        double ss = 0;
        for (int j = 0; j < d; j++) ss += (double)xr[j] * xr[j];
        rstd[i] = (float)(1.0 / sqrt(ss / d + eps));
        el_rmsnorm(y + (size_t)i * d, xr, w, d, eps);
    }
}

// y_j = x_j r w_j, r = (mean x² + eps)^-½  ⇒  ∂r/∂x_k = -r³ x_k / d
// dx_k += r w_k dy_k - x_k r³/d Σ_j dy_j w_j x_j;   dw_j += dy_j x_j r
void el_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rstd,
                         int n, int d) {
    for (int i = 0; i < n; i++) {
        const float *xr = x + (size_t)i * d, *g = dy + (size_t)i * d;
        float *dxr = dx + (size_t)i * d;
        float r = rstd[i];
        double dot = 0;
        for (int j = 0; j < d; j++) dot += (double)g[j] * w[j] * xr[j];
        float c = (float)(dot * r * r * r / d);
        for (int j = 0; j < d; j++) dxr[j] += r * w[j] * g[j] - xr[j] * c;
        if (dw)
            for (int j = 0; j < d; j++) dw[j] += g[j] * xr[j] * r;
    }
}

// ---------------------------------------------------------------- rope

static void rope_rows(float *x, int B, int T, int heads, int hd, const float *inv_freq, float sign) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float *row = x + ((size_t)b * T + t) * heads * hd;
            if (sign > 0) {
                el_rope(row, heads, hd, t, inv_freq);  // the inference kernel itself
                continue;
            }
            for (int i = 0; i < hd / 2; i++) {
                float angle = (float)t * inv_freq[i];
                float c = cosf(angle), s = sinf(angle);
                for (int h = 0; h < heads; h++) {
                    float *v = row + (size_t)h * hd + 2 * i;
                    float a = v[0], bb = v[1];
                    v[0] = a * c + bb * s;  // Rᵀ: rotate back
                    v[1] = -a * s + bb * c;
                }
            }
        }
}

void el_rope_forward(float *x, int B, int T, int heads, int hd, const float *inv_freq) {
    rope_rows(x, B, T, heads, hd, inv_freq, 1);
}
void el_rope_backward(float *dx, int B, int T, int heads, int hd, const float *inv_freq) {
    rope_rows(dx, B, T, heads, hd, inv_freq, -1);
}

// ---------------------------------------------------------------- attention

// One task per (sequence, kv head): its query heads run in order, so the
// kv-head gradients of backward are written by one task only (no races, a
// fixed summation order). The probabilities are not kept between forward and
// backward: backward recomputes them (one more Q·Kᵀ per head), so attention
// needs O(T²) scratch per task instead of O(layers·heads·T²) of activations.
typedef struct {
    float *out, *dq, *dk, *dv;
    const float *q, *k, *v, *dout;
    int B, T, H, KVH, hd;
} attn_job;

// P[T, T] = causal softmax(q_h · k_kvhᵀ / √hd) for sequence b, head h
static void attn_probs(const attn_job *j, int b, int h, float *P) {
    int T = j->T, hd = j->hd, qd = j->H * hd, kvd = j->KVH * hd, kvh = h / (j->H / j->KVH);
    float scale = 1.0f / sqrtf((float)hd);
    el_sgemm(0, 1, T, T, hd, scale, j->q + (size_t)b * T * qd + (size_t)h * hd, qd,
             j->k + (size_t)b * T * kvd + (size_t)kvh * hd, kvd, 0, P, T);
    for (int t = 0; t < T; t++) {
        float *row = P + (size_t)t * T;
        el_softmax(row, t + 1);  // the inference kernel: same arithmetic as el_session
        memset(row + t + 1, 0, (size_t)(T - t - 1) * sizeof(float));
    }
}

// O = P V per head
static void attn_fwd_task(void *ctx, int task, int n_tasks) {
    (void)n_tasks;
    const attn_job *j = ctx;
    int T = j->T, hd = j->hd, qd = j->H * hd, kvd = j->KVH * hd, group = j->H / j->KVH;
    int b = task / j->KVH, kvh = task % j->KVH;
    float *P = malloc((size_t)T * T * sizeof(float));
    if (!P) return;  // T ≤ model ctx: a few MiB at most
    for (int h = kvh * group; h < (kvh + 1) * group; h++) {
        attn_probs(j, b, h, P);
        el_sgemm(0, 0, T, hd, T, 1, P, T, j->v + (size_t)b * T * kvd + (size_t)kvh * hd, kvd, 0,
                 j->out + (size_t)b * T * qd + (size_t)h * hd, qd);
    }
    free(P);
}

void el_attention_forward(el_pool *pool, float *out, const float *q, const float *k, const float *v, int B, int T,
                          int H, int KVH, int hd) {
    attn_job j = {out, NULL, NULL, NULL, q, k, v, NULL, B, T, H, KVH, hd};
    el_pool_run(pool, attn_fwd_task, &j, B * KVH);
}

// dP = dO Vᵀ;  dS = P ⊙ (dP - Σ_row dP⊙P);  dQ = dS K/√hd;  dK += dSᵀ Q/√hd;  dV += Pᵀ dO
static void attn_bwd_task(void *ctx, int task, int n_tasks) {
    (void)n_tasks;
    const attn_job *j = ctx;
    int T = j->T, hd = j->hd, qd = j->H * hd, kvd = j->KVH * hd, group = j->H / j->KVH;
    int b = task / j->KVH, kvh = task % j->KVH;
    float scale = 1.0f / sqrtf((float)hd);
    size_t kvoff = (size_t)b * T * kvd + (size_t)kvh * hd;
    for (int t = 0; t < T; t++) {
        memset(j->dk + kvoff + (size_t)t * kvd, 0, (size_t)hd * sizeof(float));
        memset(j->dv + kvoff + (size_t)t * kvd, 0, (size_t)hd * sizeof(float));
    }
    float *P = malloc(2 * (size_t)T * T * sizeof(float));
    if (!P) return;
    float *dS = P + (size_t)T * T;
    for (int h = kvh * group; h < (kvh + 1) * group; h++) {
        size_t qoff = (size_t)b * T * qd + (size_t)h * hd;
        attn_probs(j, b, h, P);
        el_sgemm(0, 1, T, T, hd, 1, j->dout + qoff, qd, j->v + kvoff, kvd, 0, dS, T);
        for (int t = 0; t < T; t++) {
            float *ds = dS + (size_t)t * T;
            const float *p = P + (size_t)t * T;
            double dot = 0;
            for (int i = 0; i <= t; i++) dot += (double)ds[i] * p[i];
            float fd = (float)dot;
            for (int i = 0; i <= t; i++) ds[i] = p[i] * (ds[i] - fd);
            for (int i = t + 1; i < T; i++) ds[i] = 0;
        }
        el_sgemm(0, 0, T, hd, T, scale, dS, T, j->k + kvoff, kvd, 0, j->dq + qoff, qd);
        el_sgemm(1, 0, T, hd, T, scale, dS, T, j->q + qoff, qd, 1, j->dk + kvoff, kvd);
        el_sgemm(1, 0, T, hd, T, 1, P, T, j->dout + qoff, qd, 1, j->dv + kvoff, kvd);
    }
    free(P);
}

void el_attention_backward(el_pool *pool, float *dq, float *dk, float *dv, const float *dout, const float *q,
                           const float *k, const float *v, int B, int T, int H, int KVH, int hd) {
    attn_job j = {NULL, dq, dk, dv, q, k, v, dout, B, T, H, KVH, hd};
    el_pool_run(pool, attn_bwd_task, &j, B * KVH);
}

// ---------------------------------------------------------------- swiglu

void el_swiglu_forward(float *h, const float *g, const float *u, int n) { el_swiglu(h, g, u, n); }

// silu(g) = g σ(g);  silu'(g) = σ(g) (1 + g (1 - σ(g)))
void el_swiglu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, int n) {
    for (int i = 0; i < n; i++) {
        float sg = 1.0f / (1.0f + expf(-g[i]));
        du[i] = dh[i] * g[i] * sg;
        dg[i] = dh[i] * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
    }
}

// ---------------------------------------------------------------- linear

// Quantized and half bases are dequantized a tile of rows at a time into
// scratch and multiplied by BLAS: the dequantization is O(out·in) per call
// against O(n·out·in) for the product.
#define TILE_FLOATS (1u << 20)

size_t el_linear_scratch_floats(const el_tensor *W) {
    if (W->dtype == EL_DTYPE_F32) return 0;
    size_t in = (size_t)W->ne[0], out = (size_t)W->ne[1];
    size_t rows = TILE_FLOATS / in;
    if (rows < 16) rows = 16;
    if (rows > out) rows = out;
    return rows * in;
}

typedef struct {
    const el_tensor *W;
    float *tile;
    int r0, rows, per_task;
} dequant_job;

static void dequant_task(void *ctx, int i, int n) {
    (void)n;
    const dequant_job *j = ctx;
    int a = i * j->per_task, b = a + j->per_task < j->rows ? a + j->per_task : j->rows;
    int in = (int)j->W->ne[0];
    for (int r = a; r < b; r++) el_tensor_row_f32(j->W, j->r0 + r, j->tile + (size_t)r * in);
}

// Dequantizes rows [r0, r0+rows) of W into tile across the pool. (This only
// pays because BLAS runs single-threaded inside our pool: with OpenBLAS's own
// workers spinning between products, the same split made an f16 base 3x slower.)
static void dequant_rows(el_pool *pool, const el_tensor *W, int r0, int rows, float *tile) {
    int P = el_pool_size(pool);
    dequant_job j = {W, tile, r0, rows, (rows + P - 1) / P};
    el_pool_run(pool, dequant_task, &j, (rows + j.per_task - 1) / j.per_task);
}

void el_linear_forward(el_pool *pool, float *y, float *t, const float *x, const el_linear *L, int n,
                       float *scratch) {
    const el_tensor *W = L->W;
    int in = (int)W->ne[0], out = (int)W->ne[1];
    if (W->dtype == EL_DTYPE_F32) {
        el_sgemm_par(pool, 0, 1, n, out, in, 1, x, in, W->data, in, 0, y, out);
    } else {
        int tile_rows = (int)(el_linear_scratch_floats(W) / (size_t)in);
        for (int r0 = 0; r0 < out; r0 += tile_rows) {
            int rows = out - r0 < tile_rows ? out - r0 : tile_rows;
            dequant_rows(pool, W, r0, rows, scratch);
            el_sgemm_par(pool, 0, 1, n, rows, in, 1, x, in, scratch, in, 0, y + r0, out);
        }
    }
    const el_lora_mat *lo = L->lora;
    if (lo) {
        el_sgemm(0, 1, n, lo->rank, in, 1, x, in, lo->a, in, 0, t, lo->rank);
        el_sgemm_par(pool, 0, 1, n, out, lo->rank, L->s, t, lo->rank, lo->b, lo->rank, 1, y, out);
    }
}

void el_linear_backward(el_pool *pool, float *dx, float *dA, float *dB, const float *dy, const float *x,
                        const float *t, const el_linear *L, int n, float *scratch, float *tmp) {
    const el_tensor *W = L->W;
    int in = (int)W->ne[0], out = (int)W->ne[1];
    const el_lora_mat *lo = L->lora;
    if (lo) {
        int r = lo->rank;
        el_sgemm(0, 0, n, r, out, 1, dy, out, lo->b, r, 0, tmp, r);           // tmp = dy B
        if (dB) el_sgemm(1, 0, out, r, n, L->s, dy, out, t, r, 1, dB, r);     // dB += s dyᵀ t
        if (dA) el_sgemm(1, 0, r, in, n, L->s, tmp, r, x, in, 1, dA, in);     // dA += s tmpᵀ x
        if (dx) el_sgemm_par(pool, 0, 0, n, in, r, L->s, tmp, r, lo->a, in, 1, dx, in);  // dx += s tmp A
    }
    if (!dx) return;
    if (W->dtype == EL_DTYPE_F32) {
        el_sgemm_par(pool, 0, 0, n, in, out, 1, dy, out, W->data, in, 1, dx, in);
        return;
    }
    int tile_rows = (int)(el_linear_scratch_floats(W) / (size_t)in);
    for (int r0 = 0; r0 < out; r0 += tile_rows) {
        int rows = out - r0 < tile_rows ? out - r0 : tile_rows;
        dequant_rows(pool, W, r0, rows, scratch);
        el_sgemm_par(pool, 0, 0, n, in, rows, 1, dy + r0, out, scratch, in, 1, dx, in);
    }
}

// ---------------------------------------------------------------- cross-entropy

void el_cross_entropy_forward(float *loss, float *probs, const float *logits, const int *targets, int n, int V) {
    for (int i = 0; i < n; i++) {
        const float *l = logits + (size_t)i * V;
        float *p = probs + (size_t)i * V;
        float max = l[0];
        for (int j = 1; j < V; j++)
            if (l[j] > max) max = l[j];
        double sum = 0;
        float lt = targets[i] >= 0 ? l[targets[i]] : 0;
        for (int j = 0; j < V; j++) {
            p[j] = expf(l[j] - max);
            sum += p[j];
        }
        float inv = (float)(1.0 / sum);
        for (int j = 0; j < V; j++) p[j] *= inv;
        loss[i] = targets[i] >= 0 ? (float)(log(sum) - ((double)lt - max)) : 0.0f;
    }
}

void el_cross_entropy_backward(float *dlogits, const float *probs, const int *targets, const float *dloss, int n,
                               int V) {
    for (int i = 0; i < n; i++) {
        float *d = dlogits + (size_t)i * V;
        const float *p = probs + (size_t)i * V;
        float g = targets[i] >= 0 ? dloss[i] : 0.0f;
        for (int j = 0; j < V; j++) d[j] = g * p[j];
        if (targets[i] >= 0) d[targets[i]] -= g;
    }
}
