// Unit tests for edgellm/layer.h, the one layer definition: every backward
// against central finite differences of a double-precision reference forward,
// per op and per family variant (Llama, Qwen2's biases and neox rope, linear
// and Llama 3.1 rope scaling, a sliding window, GQA ratios 1, 2 and 4), and
// the layer as training runs it equal to the layer as inference runs it.
//
// Tolerance: the implementation computes in f32 and the differences are taken
// of the f64 reference, so an analytic gradient is accepted when its worst
// error, relative to the largest gradient of the same tensor, is at most
// 1e-4 (ops) or 2e-4 (whole layers: errors of a dozen f32 ops add up).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/kernels.h"
#include "edgellm/layer.h"
#include "edgellm/lora.h"
#include "edgellm/model.h"
#include "edgellm/quant.h"
#include "edgellm/train.h"
#include "testutil.h"

static uint64_t rng = 42;

static float *randv(size_t n, float scale) { return tu_randv(&rng, n, scale); }
#define to_d tu_to_d
#define dotd tu_dotd
#define check_grad tu_check_grad

// ---------------------------------------------------------------- double references

static void ref_rmsnorm(double *y, const double *x, const double *w, int n, int d, double eps) {
    for (int i = 0; i < n; i++) {
        double ss = 0;
        for (int j = 0; j < d; j++) ss += x[i * d + j] * x[i * d + j];
        double r = 1.0 / sqrt(ss / d + eps);
        for (int j = 0; j < d; j++) y[i * d + j] = x[i * d + j] * r * w[j];
    }
}

// One row [heads, hd] at pos: pairs (2i, 2i+1) or, neox, (i, i + hd/2), by pos·inv_freq[i]
static void ref_rope(double *x, int heads, int hd, int pos, const float *inv_freq, int neox) {
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < hd / 2; i++) {
            double ang = pos * (double)inv_freq[i];
            double *v = x + (size_t)h * hd;
            int ia = neox ? i : 2 * i, ib = neox ? i + hd / 2 : 2 * i + 1;
            double a = v[ia], b = v[ib];
            v[ia] = a * cos(ang) - b * sin(ang);
            v[ib] = a * sin(ang) + b * cos(ang);
        }
}

// out (and lse) of causal GQA attention over B contexts of T positions with a window
static void ref_attention(double *out, double *lse, const double *q, const double *k, const double *v, int B, int T,
                          int H, int KVH, int hd, int window) {
    int qd = H * hd, kvd = KVH * hd;
    double *sc = malloc(sizeof(double) * T);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int kh = h / (H / KVH);
            for (int t = 0; t < T; t++) {
                int start = window && t + 1 > window ? t + 1 - window : 0;
                double max = -1e300, sum = 0;
                for (int p = start; p <= t; p++) {
                    double s = 0;
                    for (int i = 0; i < hd; i++)
                        s += q[(b * T + t) * qd + h * hd + i] * k[(b * T + p) * kvd + kh * hd + i];
                    sc[p] = s / sqrt((double)hd);
                    if (sc[p] > max) max = sc[p];
                }
                for (int p = start; p <= t; p++) sum += (sc[p] = exp(sc[p] - max));
                if (lse) lse[(b * T + t) * H + h] = max + log(sum);
                for (int i = 0; i < hd; i++) {
                    double o = 0;
                    for (int p = start; p <= t; p++) o += sc[p] / sum * v[(b * T + p) * kvd + kh * hd + i];
                    out[(b * T + t) * qd + h * hd + i] = o;
                }
            }
        }
    free(sc);
}

static void ref_swiglu(double *h, const double *g, const double *u, int n) {
    for (int i = 0; i < n; i++) h[i] = g[i] / (1 + exp(-g[i])) * u[i];
}

// y[n,out] = x Wᵀ + s (x Aᵀ) Bᵀ   (W, A may be NULL)
static void ref_linear(double *y, const double *x, const double *W, const double *A, const double *Bm, double s, int n,
                       int in, int out, int r) {
    double *t = malloc(sizeof(double) * (r ? r : 1));
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < r && A; j++) {
            t[j] = 0;
            for (int c = 0; c < in; c++) t[j] += x[i * in + c] * A[j * in + c];
        }
        for (int o = 0; o < out; o++) {
            double acc = 0;
            for (int c = 0; c < in && W; c++) acc += x[i * in + c] * W[(size_t)o * in + c];
            for (int j = 0; j < r && A; j++) acc += s * t[j] * Bm[o * r + j];
            y[i * out + o] = acc;
        }
    }
    free(t);
}

// ---------------------------------------------------------------- per-op checks

typedef struct {
    double *x, *w, *wy, *k, *v;
    int n, d;
    const float *inv_freq;
    int heads, hd, neox, pos;
    int B, T, H, KVH, window;
} op_ctx;

static double rms_loss(void *c) {
    op_ctx *o = c;
    double *y = malloc(sizeof(double) * o->n * o->d);
    ref_rmsnorm(y, o->x, o->w, o->n, o->d, 1e-5);
    double L = dotd(y, o->wy, (size_t)o->n * o->d);
    free(y);
    return L;
}

static void test_rmsnorm_grad(void **s) {
    (void)s;
    int n = 6, d = 13;
    float *x = randv((size_t)n * d, 2), *w = randv(d, 1), *wy = randv((size_t)n * d, 1);
    float *y = malloc(sizeof(float) * n * d), *rstd = malloc(sizeof(float) * n);
    float *dx = calloc((size_t)n * d, sizeof(float)), *dw = calloc(d, sizeof(float));
    el_rmsnorm_forward(y, rstd, x, w, n, d, 1e-5f);
    // the inference kernel, bit for bit
    float *y2 = malloc(sizeof(float) * d);
    assert_float_equal(el_rmsnorm(y2, x + d, w, d, 1e-5f), rstd[1], 0);
    assert_memory_equal(y2, y + d, sizeof(float) * d);
    el_rmsnorm_backward(dx, dw, wy, x, w, rstd, n, d);
    op_ctx c = {.x = to_d(x, (size_t)n * d), .w = to_d(w, d), .wy = to_d(wy, (size_t)n * d), .n = n, .d = d};
    check_grad("rmsnorm dx", c.x, n * d, 1, dx, rms_loss, &c, 1e-4);
    check_grad("rmsnorm dw", c.w, d, 1, dw, rms_loss, &c, 1e-4);
    free(x), free(w), free(wy), free(y), free(y2), free(rstd), free(dx), free(dw);
    free(c.x), free(c.w), free(c.wy);
}

static double rope_loss(void *c) {
    op_ctx *o = c;
    size_t n = (size_t)o->heads * o->hd;
    double *y = malloc(sizeof(double) * n);
    memcpy(y, o->x, sizeof(double) * n);
    ref_rope(y, o->heads, o->hd, o->pos, o->inv_freq, o->neox);
    double L = dotd(y, o->wy, n);
    free(y);
    return L;
}

// Both layouts, with no scaling, linear scaling and the Llama 3.1 divisors,
// at several positions: forward against the formula, backward against
// differences, and backward undoing forward.
static void test_rope_grad(void **s) {
    (void)s;
    enum { HEADS = 3, HD = 16 };
    size_t n = HEADS * HD;
    for (int neox = 0; neox <= 1; neox++)
        for (int scaling = 0; scaling < 3; scaling++) {
            float inv[HD / 2], div[HD / 2];
            el_rope_freqs(inv, HD, 10000.0f);
            el_rope_llama3_divisors(div, HD, 10000.0f, 8.0f, 1.0f, 4.0f, 64);
            for (int i = 0; i < HD / 2; i++) inv[i] /= scaling == 1 ? 4.0f : scaling == 2 ? div[i] : 1.0f;
            for (int pos = 0; pos < 100; pos += 37) {
                float *x = randv(n, 1), *wy = randv(n, 1), *y = malloc(sizeof(float) * n), *dx = malloc(sizeof(float) * n);
                el_rope_type type = neox ? EL_ROPE_NEOX : EL_ROPE_NORMAL;
                memcpy(y, x, sizeof(float) * n);
                el_rope_forward(y, HEADS, HD, pos, inv, type);
                op_ctx c = {.x = to_d(x, n), .wy = to_d(wy, n), .inv_freq = inv, .heads = HEADS, .hd = HD, .neox = neox,
                            .pos = pos};
                double *want = to_d(x, n);
                ref_rope(want, HEADS, HD, pos, inv, neox);
                for (size_t i = 0; i < n; i++) assert_float_equal(y[i], want[i], 2e-5);
                memcpy(dx, wy, sizeof(float) * n);
                el_rope_backward(dx, HEADS, HD, pos, inv, type);
                check_grad("rope dx", c.x, (int)n, 1, dx, rope_loss, &c, 1e-5);
                el_rope_backward(y, HEADS, HD, pos, inv, type);  // R(θ)ᵀ R(θ) = I
                for (size_t i = 0; i < n; i++) assert_float_equal(y[i], x[i], 1e-5);
                free(x), free(wy), free(y), free(dx), free(c.x), free(c.wy), free(want);
            }
        }
}

static double attn_loss(void *c) {
    op_ctx *o = c;
    size_t nq = (size_t)o->B * o->T * o->H * o->hd;
    double *out = malloc(sizeof(double) * nq);
    ref_attention(out, NULL, o->x, o->k, o->v, o->B, o->T, o->H, o->KVH, o->hd, o->window);
    double L = dotd(out, o->wy, nq);
    free(out);
    return L;
}

// One shape: forward (output and lse) against the reference, the three
// gradients against differences (every stride-th entry).
static void attention_case(el_pool *pool, int B, int T, int H, int KVH, int HD, int window, int stride) {
    size_t nq = (size_t)B * T * H * HD, nk = (size_t)B * T * KVH * HD, nl = (size_t)B * T * H;
    float *q = randv(nq, 1.5f), *k = randv(nk, 1.5f), *v = randv(nk, 1), *wy = randv(nq, 1);
    float *out = malloc(sizeof(float) * nq), *lse = malloc(sizeof(float) * nl), *D = malloc(sizeof(float) * nl);
    float *dq = malloc(sizeof(float) * nq), *dk = malloc(sizeof(float) * nk), *dv = malloc(sizeof(float) * nk);
    el_attention_forward(pool, out, lse, q, k, v, B, T, H, KVH, HD, window);
    assert_int_equal(el_attention_backward(pool, dq, dk, dv, wy, q, k, v, out, lse, B, T, H, KVH, HD, window, D), 0);
    op_ctx c = {.x = to_d(q, nq), .wy = to_d(wy, nq), .k = to_d(k, nk), .v = to_d(v, nk), .hd = HD, .B = B, .T = T,
                .H = H, .KVH = KVH, .window = window};
    double *ref = malloc(sizeof(double) * nq), *rlse = malloc(sizeof(double) * nl);
    ref_attention(ref, rlse, c.x, c.k, c.v, B, T, H, KVH, HD, window);
    for (size_t i = 0; i < nq; i++) assert_float_equal(out[i], ref[i], 1e-5);
    for (size_t i = 0; i < nl; i++) assert_float_equal(lse[i], rlse[i], 1e-5 * (1 + fabs(rlse[i])));
    check_grad("attention dq", c.x, (int)nq, stride, dq, attn_loss, &c, 1e-4);
    check_grad("attention dk", c.k, (int)nk, stride, dk, attn_loss, &c, 1e-4);
    check_grad("attention dv", c.v, (int)nk, stride, dv, attn_loss, &c, 1e-4);
    free(q), free(k), free(v), free(wy), free(out), free(lse), free(D), free(dq), free(dk), free(dv), free(ref), free(rlse);
    free(c.x), free(c.wy), free(c.k), free(c.v);
}

// GQA ratios 1, 2 and 4, with and without a sliding window; hd 16 takes the
// SIMD score and mix kernels inference uses. An 82-position context spans two
// of the backward's 64-row blocks, with a window reaching across them, and in
// the forward two 36-row panels of the tiled kernel and a 10-row tail that
// goes row by row.
static void test_attention_grad(void **s) {
    (void)s;
    el_pool *pool = el_pool_new(3);
    for (int KVH = 4; KVH >= 1; KVH /= 2)
        for (int window = 0; window <= 3; window += 3) attention_case(pool, 2, 6, 4, KVH, 16, window, 1);
    attention_case(pool, 1, 82, 2, 1, 16, 0, 7);
    attention_case(pool, 1, 82, 2, 1, 16, 40, 7);
    el_pool_free(pool);
}

static double swiglu_loss(void *c) {
    op_ctx *o = c;
    double h[64];
    ref_swiglu(h, o->x, o->k, o->n);
    return dotd(h, o->wy, (size_t)o->n);
}

static void test_swiglu_grad(void **s) {
    (void)s;
    int n = 40;
    float *g = randv(n, 4), *u = randv(n, 2), *wy = randv(n, 1), *h = malloc(sizeof(float) * n);
    float *dg = malloc(sizeof(float) * n), *du = malloc(sizeof(float) * n);
    el_swiglu_forward(h, g, u, n);
    el_swiglu_backward(dg, du, wy, g, u, n);
    op_ctx c = {.x = to_d(g, n), .wy = to_d(wy, n), .k = to_d(u, n), .n = n};
    check_grad("swiglu dg", c.x, n, 1, dg, swiglu_loss, &c, 1e-4);
    check_grad("swiglu du", c.k, n, 1, du, swiglu_loss, &c, 1e-4);
    free(g), free(u), free(wy), free(h), free(dg), free(du), free(c.x), free(c.wy), free(c.k);
}

typedef struct {
    double *x, *W, *A, *B, *wy;
    double s;
    int n, in, out, r;
} lin_ctx;

static double lin_loss(void *c) {
    lin_ctx *o = c;
    double *y = malloc(sizeof(double) * o->n * o->out);
    ref_linear(y, o->x, o->W, o->A, o->B, o->s, o->n, o->in, o->out, o->r);
    double L = dotd(y, o->wy, (size_t)o->n * o->out);
    free(y);
    return L;
}

// The frozen base in f32 or any dtype with to_f32: the dense forward equals
// the product of the dequantized weights, the inference kernels' forward
// equals it within the activations' 8-bit rounding (packed copy included when
// this CPU has one), and the gradient reaching the input is that of the
// dequantized weights.
static void proj_grad(int dtype) {
    const el_dtype_traits *tr = el_dtype_info(dtype);
    int n = 7, in = tr->block_size > 1 ? 2 * tr->block_size : 40, out = 64;
    float *W = randv((size_t)in * out, 0.5f), *x = randv((size_t)n * in, 1), *wy = randv((size_t)n * out, 1);
    el_tensor Wt = {.name = "w", .dtype = EL_DTYPE_F32, .n_dims = 2, .ne = {in, out, 1, 1}, .data = W,
                    .nbytes = sizeof(float) * in * out};
    void *Wq = NULL, *pk = NULL;
    if (dtype != EL_DTYPE_F32) {
        size_t rb = el_dtype_row_size(dtype, in);
        Wq = malloc(rb * out);
        tr->from_f32(W, Wq, (int64_t)in * out);
        tr->to_f32(Wq, W, (int64_t)in * out);
        Wt.dtype = dtype, Wt.data = Wq, Wt.nbytes = rb * out;
    }
    float *y = malloc(sizeof(float) * n * out), *yk = malloc(sizeof(float) * n * out);
    float *scratch = malloc(sizeof(float) * (el_proj_scratch_floats(&Wt) + 1));
    float *dx = calloc((size_t)n * in, sizeof(float));
    el_proj_forward(NULL, 1, &y, x, (const el_tensor *[]){&Wt}, n, 1, scratch);
    int64_t rows = 0;
    size_t pb = el_matmul_pack_size(&Wt, el_cpu_isa(), &rows);
    if (pb) {
        pk = el_malloc_aligned(pb);
        el_matmul_pack(&Wt, rows, pk);
        Wt.packed = pk, Wt.packed_rows = rows;
    }
    el_proj_forward(NULL, 1, &yk, x, (const el_tensor *[]){&Wt}, n, 0, NULL);  // inference kernels
    el_proj_backward(NULL, dx, wy, &Wt, n, scratch);
    lin_ctx c = {to_d(x, (size_t)n * in), to_d(W, (size_t)in * out), 0, 0, to_d(wy, (size_t)n * out), 0, n, in, out, 0};
    double *yr = malloc(sizeof(double) * n * out), big = 0;
    ref_linear(yr, c.x, c.W, NULL, NULL, 0, n, in, out, 0);
    for (int i = 0; i < n * out; i++) big = fmax(big, fabs(yr[i]));
    for (int i = 0; i < n * out; i++) {
        assert_float_equal(y[i], yr[i], 1e-5 * big);
        // f32 and f16 are multiplied as floats; quantized weights meet 8-bit activations
        assert_float_equal(yk[i], yr[i], (tr->vec_dot_type == EL_DTYPE_F32 ? 1e-5 : 2e-2) * big);
    }
    check_grad("projection dx", c.x, n * in, 1, dx, lin_loss, &c, 1e-4);
    free(W), free(Wq), free(x), free(wy), free(y), free(yk), free(scratch), free(dx), free(c.x), free(c.W), free(c.wy),
        free(yr);
    el_free_aligned(pk);
}
static void test_proj_f32(void **s) { (void)s, proj_grad(EL_DTYPE_F32); }
static void test_proj_f16(void **s) { (void)s, proj_grad(EL_DTYPE_F16); }
static void test_proj_q8_0(void **s) { (void)s, proj_grad(EL_DTYPE_Q8_0); }
static void test_proj_q4_0(void **s) { (void)s, proj_grad(EL_DTYPE_Q4_0); }
static void test_proj_q4_k(void **s) { (void)s, proj_grad(EL_DTYPE_Q4_K); }

// The low-rank product with t kept (training) and dropped (inference, in
// stack chunks: rank 700 makes chunks of 5 rows), and its three gradients.
static void test_lora_grad(void **s) {
    (void)s;
    for (int r = 3; r <= 700; r += 697) {
        int n = 7, in = 12, out = 9;
        float *ab = randv((size_t)r * (in + out), 0.5f), *x = randv((size_t)n * in, 1), *wy = randv((size_t)n * out, 1);
        el_lora_mat lm = {ab, ab + r * in, r, in, out};
        float *y = randv((size_t)n * out, 1), *y2 = malloc(sizeof(float) * n * out), *t = malloc(sizeof(float) * n * r);
        memcpy(y2, y, sizeof(float) * n * out);
        float *y0 = malloc(sizeof(float) * n * out), *tmp = malloc(sizeof(float) * n * r);
        memcpy(y0, y, sizeof(float) * n * out);
        el_lora_forward(NULL, y, t, x, &lm, 0.75f, n);
        el_lora_forward(NULL, y2, NULL, x, &lm, 0.75f, n);
        float *dx = calloc((size_t)n * in, sizeof(float)), *dab = calloc((size_t)r * (in + out), sizeof(float));
        el_lora_backward(NULL, dx, dab, dab + r * in, wy, x, t, &lm, 0.75f, n, tmp);
        lin_ctx c = {to_d(x, (size_t)n * in), NULL, 0, 0, to_d(wy, (size_t)n * out), 0.75, n, in, out, r};
        double *abd = to_d(ab, (size_t)r * (in + out));
        c.A = abd, c.B = abd + r * in;
        double *yr = malloc(sizeof(double) * n * out);
        ref_linear(yr, c.x, NULL, c.A, c.B, c.s, n, in, out, r);
        for (int i = 0; i < n * out; i++) {
            assert_float_equal(y[i] - y0[i], yr[i], 1e-4 * (1 + fabs(yr[i])));
            assert_float_equal(y2[i], y[i], 1e-5 * (1 + fabs(y[i])));
        }
        check_grad("lora dx", c.x, n * in, 1, dx, lin_loss, &c, 1e-4);
        check_grad("lora dA", c.A, r * in, r > 100 ? 11 : 1, dab, lin_loss, &c, 1e-4);
        check_grad("lora dB", c.B, r * out, r > 100 ? 11 : 1, dab + r * in, lin_loss, &c, 1e-4);
        free(ab), free(x), free(wy), free(y), free(y2), free(y0), free(t), free(tmp), free(dx), free(dab);
        free(c.x), free(c.wy), free(abd), free(yr);
    }
}

static void test_embedding_grad(void **s) {
    (void)s;
    int V = 6, dim = 5, n = 4, tokens[4] = {2, 5, 2, 0};
    float *E = randv((size_t)V * dim, 1), *wy = randv((size_t)n * dim, 1), x[20];
    el_tensor Et = {.name = "e", .dtype = EL_DTYPE_F32, .n_dims = 2, .ne = {dim, V, 1, 1}, .data = E,
                    .nbytes = sizeof(float) * V * dim};
    el_embedding_forward(x, tokens, n, &Et);
    assert_memory_equal(x + dim, E + 5 * dim, sizeof(float) * dim);
    float *dE = calloc((size_t)V * dim, sizeof(float));
    el_embedding_backward(dE, wy, tokens, n, dim);
    // L = Σ wy·E[tokens]: ∂L/∂E[v] = Σ_{i: tokens[i] = v} wy[i] (linear, so exact)
    for (int j = 0; j < dim; j++) {
        assert_float_equal(dE[2 * dim + j], wy[j] + wy[2 * dim + j], 1e-6);
        assert_float_equal(dE[1 * dim + j], 0, 0);
        assert_float_equal(dE[0 * dim + j], wy[3 * dim + j], 0);
    }
    free(E), free(wy), free(dE);
}

// ---------------------------------------------------------------- whole layers, per family variant

enum { BB = 2, TT = 5, NN = BB * TT, RANK = 3 };

typedef struct {
    const tu_model *tm;
    const el_lora *lora;
    double *lp;  // LoRA params in double (perturbed by the checker)
    double *x0;  // block input [NN, dim]
    double *wy;  // weights of the output
    float inv_freq[64];
} blk_ctx;

static double *dW(const el_tensor *t) { return to_d(t->data, (size_t)el_tensor_nelements(t)); }

// x[NN, dim] through every layer of the model in double, straight from the definitions
static void ref_layers(const blk_ctx *c, double *x) {
    const el_model *m = &c->tm->m;
    const el_hparams *hp = &m->hp;
    int D = hp->dim, H = hp->n_heads, KVH = hp->n_kv_heads, hd = hp->head_dim, F = hp->ff;
    int qd = H * hd, kvd = KVH * hd, neox = hp->rope_type == EL_ROPE_NEOX;
    size_t nd = (size_t)NN * D;
    double *xn = malloc(sizeof(double) * nd), *q = malloc(sizeof(double) * NN * qd);
    double *k = malloc(sizeof(double) * NN * kvd), *v = malloc(sizeof(double) * NN * kvd);
    double *ao = malloc(sizeof(double) * NN * qd), *pr = malloc(sizeof(double) * nd);
    double *g = malloc(sizeof(double) * NN * F), *u = malloc(sizeof(double) * NN * F), *h = malloc(sizeof(double) * NN * F);
    for (int l = 0; l < hp->n_layers; l++) {
        const el_layer *L = &m->layers[l];
        double *W[7];
        for (int t = 0; t < 7; t++) W[t] = dW(el_lora_base(m, l, t));
        double *an = dW(&L->attn_norm), *fn = dW(&L->ffn_norm);
#define LIN(t, y, xin)                                                                                           \
    do {                                                                                                         \
        const el_lora_mat *mt = el_lora_get(c->lora, l, t);                                                      \
        const el_tensor *bw = el_lora_base(m, l, t);                                                             \
        double *A = mt ? c->lp + el_lora_offset(c->lora, mt) : NULL;                                             \
        ref_linear(y, xin, W[t], A, mt ? A + mt->rank * mt->in : NULL, mt ? c->lora->alpha / mt->rank : 0, NN,  \
                   (int)bw->ne[0], (int)bw->ne[1], mt ? mt->rank : 0);                                           \
    } while (0)
        ref_rmsnorm(xn, x, an, NN, D, 1e-5);
        LIN(EL_LORA_Q, q, xn);
        LIN(EL_LORA_K, k, xn);
        LIN(EL_LORA_V, v, xn);
        for (int r = 0; r < NN; r++) {
            if (hp->has_qkv_bias) {
                for (int i = 0; i < qd; i++) q[r * qd + i] += ((const float *)L->bq.data)[i];
                for (int i = 0; i < kvd; i++)
                    k[r * kvd + i] += ((const float *)L->bk.data)[i], v[r * kvd + i] += ((const float *)L->bv.data)[i];
            }
            ref_rope(q + r * qd, H, hd, r % TT, c->inv_freq, neox);
            ref_rope(k + r * kvd, KVH, hd, r % TT, c->inv_freq, neox);
        }
        ref_attention(ao, NULL, q, k, v, BB, TT, H, KVH, hd, hp->sliding_window);
        LIN(EL_LORA_O, pr, ao);
        for (size_t i = 0; i < nd; i++) x[i] += pr[i];
        ref_rmsnorm(xn, x, fn, NN, D, 1e-5);
        LIN(EL_LORA_GATE, g, xn);
        LIN(EL_LORA_UP, u, xn);
        ref_swiglu(h, g, u, NN * F);
        LIN(EL_LORA_DOWN, pr, h);
        for (size_t i = 0; i < nd; i++) x[i] += pr[i];
#undef LIN
        for (int t = 0; t < 7; t++) free(W[t]);
        free(an), free(fn);
    }
    free(xn), free(q), free(k), free(v), free(ao), free(pr), free(g), free(u), free(h);
}

static double blk_loss(void *vc) {
    blk_ctx *c = vc;
    size_t nd = (size_t)NN * c->tm->m.hp.dim;
    double *x = malloc(sizeof(double) * nd);
    memcpy(x, c->x0, sizeof(double) * nd);
    ref_layers(c, x);
    double L = dotd(x, c->wy, nd);
    free(x);
    return L;
}

// Two layers of a variant with LoRA on all seven projections (B non-zero, so
// every path carries gradient): the forward against the reference, the input
// gradient and every LoRA gradient against differences, and the logits of
// the training forward against inference's (sessions, KV cache, el_batch).
static void check_family(tu_variant v) {
    tu_model tm;
    tu_model_init(&tm, &v);
    const el_model *m = &tm.m;
    int D = m->hp.dim;
    el_lora *lora;
    el_error err;
    assert_int_equal(el_lora_new(m, RANK, 6.0f, EL_LORA_ALL_TARGETS, 7, &lora, &err), EL_OK);
    assert_string_equal(lora->arch, m->hp.arch);
    for (size_t i = 0; i < lora->n_params; i++) lora->params[i] = 0.3f * tu_randf(&rng);
    el_pool *pool = el_pool_new(2);
    el_train_opts o = {0, 0, BB, TT, 0};
    el_train_stage *st;
    assert_int_equal(el_train_stage_new(m, lora, &o, pool, &st, &err), EL_OK);
    float *x = randv((size_t)NN * D, 1), *wy = randv((size_t)NN * D, 1), *g = malloc(sizeof(float) * NN * D);
    blk_ctx c = {&tm, lora, to_d(lora->params, lora->n_params), to_d(x, (size_t)NN * D), to_d(wy, (size_t)NN * D), {0}};
    el_model_rope_freqs(m, c.inv_freq);
    float *y = malloc(sizeof(float) * NN * D);
    memcpy(y, x, sizeof(float) * NN * D);
    assert_int_equal(el_train_layers_forward(st, y, &err), EL_OK);
    double *yr = malloc(sizeof(double) * NN * D);
    memcpy(yr, c.x0, sizeof(double) * NN * D);
    ref_layers(&c, yr);
    for (int i = 0; i < NN * D; i++) assert_float_equal(y[i], yr[i], 1e-4 * (1 + fabs(yr[i])));
    memcpy(g, wy, sizeof(float) * NN * D);
    el_train_zero_grads(st);
    assert_int_equal(el_train_layers_backward(st, g, &err), EL_OK);
    check_grad("layers dx", c.x0, NN * D, 5, g, blk_loss, &c, 2e-4);
    check_grad("layers dLoRA", c.lp, (int)lora->n_params, 23, el_train_grads(st), blk_loss, &c, 2e-4);

    // training's forward of tokens = inference's, with the adapter on both
    int tokens[NN], V = m->hp.vocab, targets[NN];
    float mask[NN];
    for (int i = 0; i < NN; i++) tokens[i] = (i * 7 + 3) % V, targets[i] = -1, mask[i] = 0;
    float *lt = malloc(sizeof(float) * NN * V), *li = malloc(sizeof(float) * TT * V), *xe = malloc(sizeof(float) * NN * D);
    double loss;
    assert_int_equal(el_train_embed(st, tokens, xe, &err), EL_OK);
    assert_int_equal(el_train_layers_forward(st, xe, &err), EL_OK);
    assert_int_equal(el_train_head(st, xe, targets, mask, &loss, NULL, NULL, 1, lt, &err), EL_OK);
    el_lora_set set = {1, {lora}, {1.0f}};
    double worst = 0, big = 0;
    for (int b = 0; b < BB; b++) {
        el_session *se;
        assert_int_equal(el_session_new(m, NULL, pool, &se, &err), EL_OK);
        el_session_set_lora(se, &set);
        assert_int_equal(el_session_forward(se, tokens + b * TT, TT, 0, li, 1, &err), EL_OK);
        for (int i = 0; i < TT * V; i++) {
            worst = fmax(worst, fabs(li[i] - lt[b * TT * V + i]));
            big = fmax(big, fabs(li[i]));
        }
        el_session_free(se);
    }
    if (worst > 1e-5 * big) fprintf(stderr, "training vs inference logits: %.3g of %.3g\n", worst, big);
    assert_true(worst <= 1e-5 * big);

    free(x), free(wy), free(g), free(y), free(yr), free(lt), free(li), free(xe);
    free(c.lp), free(c.x0), free(c.wy);
    el_train_stage_free(st);
    el_pool_free(pool);
    el_lora_free(lora);
    tu_model_free(&tm);
}

#define FAMILY(...) ((tu_variant){.layers = 2, .dim = 64, .heads = 4, .ff = 48, .vocab = 11, .ctx = 16, __VA_ARGS__})
static void test_llama_gqa1(void **s) { (void)s, check_family(FAMILY(.kv_heads = 4)); }
static void test_llama_gqa2(void **s) { (void)s, check_family(FAMILY(.kv_heads = 2)); }
static void test_llama_gqa4(void **s) { (void)s, check_family(FAMILY(.kv_heads = 1)); }
static void test_qwen2(void **s) { (void)s, check_family(FAMILY(.kv_heads = 2, .qwen2 = 1)); }
static void test_qwen2_gqa4(void **s) { (void)s, check_family(FAMILY(.kv_heads = 1, .qwen2 = 1)); }
static void test_llama3_rope_freqs(void **s) {
    (void)s, check_family(FAMILY(.kv_heads = 1, .scaling = EL_ROPE_SCALING_FREQS));
}
static void test_rope_linear_scaling(void **s) {
    (void)s, check_family(FAMILY(.kv_heads = 4, .scaling = EL_ROPE_SCALING_LINEAR, .rope_scale = 4.0f));
}
static void test_sliding_window(void **s) { (void)s, check_family(FAMILY(.kv_heads = 2, .window = 3)); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rmsnorm_grad),        cmocka_unit_test(test_rope_grad),
        cmocka_unit_test(test_attention_grad),      cmocka_unit_test(test_swiglu_grad),
        cmocka_unit_test(test_proj_f32),            cmocka_unit_test(test_proj_f16),
        cmocka_unit_test(test_proj_q8_0),           cmocka_unit_test(test_proj_q4_0),
        cmocka_unit_test(test_proj_q4_k),           cmocka_unit_test(test_lora_grad),
        cmocka_unit_test(test_embedding_grad),      cmocka_unit_test(test_llama_gqa1),
        cmocka_unit_test(test_llama_gqa2),          cmocka_unit_test(test_llama_gqa4),
        cmocka_unit_test(test_qwen2),               cmocka_unit_test(test_qwen2_gqa4),
        cmocka_unit_test(test_llama3_rope_freqs),   cmocka_unit_test(test_rope_linear_scaling),
        cmocka_unit_test(test_sliding_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
