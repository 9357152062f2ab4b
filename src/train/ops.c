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

// y[n, d] = x · rstd · w   (the sum of squares in double, as el_rmsnorm)
void el_rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, int n, int d, float eps) {
    for (int i = 0; i < n; i++) {
        const float *xr = x + (size_t)i * d;
        float *yr = y + (size_t)i * d;
        double ss = 0;
        for (int j = 0; j < d; j++) ss += (double)xr[j] * xr[j];
        float r = (float)(1.0 / sqrt(ss / d + eps));
        rstd[i] = r;
        for (int j = 0; j < d; j++) yr[j] = xr[j] * r * w[j];
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

// Per (sequence, head): S = Q Kᵀ/√hd (BLAS, full square; the causal mask is
// applied by the softmax), P = softmax rows, O = P V.
void el_attention_forward(el_pool *pool, float *out, float *att, const float *q, const float *k, const float *v,
                          int B, int T, int H, int KVH, int hd) {
    (void)pool;
    int qd = H * hd, kvd = KVH * hd, group = H / KVH;
    float scale = 1.0f / sqrtf((float)hd);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int kvh = h / group;
            float *P = att + ((size_t)b * H + h) * T * T;
            const float *qb = q + (size_t)b * T * qd + (size_t)h * hd;
            const float *kb = k + (size_t)b * T * kvd + (size_t)kvh * hd;
            const float *vb = v + (size_t)b * T * kvd + (size_t)kvh * hd;
            el_sgemm(0, 1, T, T, hd, scale, qb, qd, kb, kvd, 0, P, T);
            for (int t = 0; t < T; t++) {
                float *row = P + (size_t)t * T;
                el_softmax(row, t + 1);
                memset(row + t + 1, 0, (size_t)(T - t - 1) * sizeof(float));
            }
            el_sgemm(0, 0, T, hd, T, 1, P, T, vb, kvd, 0, out + (size_t)b * T * qd + (size_t)h * hd, qd);
        }
}

// dP = dO Vᵀ;  dS = P ⊙ (dP - Σ_row dP⊙P);  dQ = dS K/√hd;  dK += dSᵀ Q/√hd;  dV += Pᵀ dO
void el_attention_backward(el_pool *pool, float *dq, float *dk, float *dv, const float *dout, const float *att,
                           const float *q, const float *k, const float *v, int B, int T, int H, int KVH, int hd) {
    (void)pool;
    int qd = H * hd, kvd = KVH * hd, group = H / KVH;
    float scale = 1.0f / sqrtf((float)hd);
    float *dS = malloc((size_t)T * T * sizeof(float));
    if (!dS) return;  // T ≤ model ctx: a few MiB at most
    memset(dk, 0, (size_t)B * T * kvd * sizeof(float));
    memset(dv, 0, (size_t)B * T * kvd * sizeof(float));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int kvh = h / group;
            const float *P = att + ((size_t)b * H + h) * T * T;
            size_t qoff = (size_t)b * T * qd + (size_t)h * hd, kvoff = (size_t)b * T * kvd + (size_t)kvh * hd;
            el_sgemm(0, 1, T, T, hd, 1, dout + qoff, qd, v + kvoff, kvd, 0, dS, T);
            for (int t = 0; t < T; t++) {
                float *ds = dS + (size_t)t * T;
                const float *p = P + (size_t)t * T;
                double dot = 0;
                for (int j = 0; j <= t; j++) dot += (double)ds[j] * p[j];
                float fd = (float)dot;
                for (int j = 0; j <= t; j++) ds[j] = p[j] * (ds[j] - fd);
                for (int j = t + 1; j < T; j++) ds[j] = 0;
            }
            el_sgemm(0, 0, T, hd, T, scale, dS, T, k + kvoff, kvd, 0, dq + qoff, qd);
            el_sgemm(1, 0, T, hd, T, scale, dS, T, q + qoff, qd, 1, dk + kvoff, kvd);
            el_sgemm(1, 0, T, hd, T, 1, P, T, dout + qoff, qd, 1, dv + kvoff, kvd);
        }
    free(dS);
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

// Dequantizes rows [r0, r0+rows) of W into tile, on the calling thread: OpenBLAS
// workers keep spinning for a while after each product, and handing this work
// to our pool at the same time made the f16 base 3x slower (55 vs 160-190
// tokens/s on the 125M synth, 2 threads) from scheduler contention alone.
static void dequant_rows(el_pool *pool, const el_tensor *W, int r0, int rows, float *tile) {
    (void)pool;
    int in = (int)W->ne[0];
    for (int r = 0; r < rows; r++) el_tensor_row_f32(W, r0 + r, tile + (size_t)r * in);
}

void el_linear_forward(el_pool *pool, float *y, float *t, const float *x, const el_linear *L, int n,
                       float *scratch) {
    const el_tensor *W = L->W;
    int in = (int)W->ne[0], out = (int)W->ne[1];
    if (W->dtype == EL_DTYPE_F32) {
        el_sgemm(0, 1, n, out, in, 1, x, in, W->data, in, 0, y, out);
    } else {
        int tile_rows = (int)(el_linear_scratch_floats(W) / (size_t)in);
        for (int r0 = 0; r0 < out; r0 += tile_rows) {
            int rows = out - r0 < tile_rows ? out - r0 : tile_rows;
            dequant_rows(pool, W, r0, rows, scratch);
            el_sgemm(0, 1, n, rows, in, 1, x, in, scratch, in, 0, y + r0, out);
        }
    }
    const el_lora_mat *lo = L->lora;
    if (lo) {
        el_sgemm(0, 1, n, lo->rank, in, 1, x, in, lo->a, in, 0, t, lo->rank);
        el_sgemm(0, 1, n, out, lo->rank, L->s, t, lo->rank, lo->b, lo->rank, 1, y, out);
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
        if (dx) el_sgemm(0, 0, n, in, r, L->s, tmp, r, lo->a, in, 1, dx, in); // dx += s tmp A
    }
    if (!dx) return;
    if (W->dtype == EL_DTYPE_F32) {
        el_sgemm(0, 0, n, in, out, 1, dy, out, W->data, in, 1, dx, in);
        return;
    }
    int tile_rows = (int)(el_linear_scratch_floats(W) / (size_t)in);
    for (int r0 = 0; r0 < out; r0 += tile_rows) {
        int rows = out - r0 < tile_rows ? out - r0 : tile_rows;
        dequant_rows(pool, W, r0, rows, scratch);
        el_sgemm(0, 0, n, in, rows, 1, dy + r0, out, scratch, in, 1, dx, in);
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
