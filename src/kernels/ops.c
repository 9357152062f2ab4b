// Row-wise ops of the transformers: RMSNorm, layer norm, RoPE, softmax, SwiGLU,
// GELU, dot product.
#include <math.h>
#include <pthread.h>

#include "edgellm/kernels.h"
#include "ops_simd.h"

static int use_avx512, use_neon;
static pthread_once_t isa_once = PTHREAD_ONCE_INIT;
static void detect_isa(void) {
    use_avx512 = el_cpu_isa() == EL_ISA_AVX512;
    use_neon = el_cpu_isa() >= EL_ISA_NEON;  // every AArch64 level
}

// The AArch64 kernels exist only in AArch64 builds (use_neon is 0 elsewhere).
#if !defined(__aarch64__)
#define el_swiglu_neon el_swiglu_scalar
#define el_softmax_neon el_softmax_scalar
#define el_attn_scores_neon el_attn_scores_scalar
#define el_attn_mix_neon el_attn_mix_scalar
#endif
#if !defined(__x86_64__)
#define el_gelu_avx512 el_gelu_scalar
#define el_swiglu_avx512 el_swiglu_scalar
#define el_rmsnorm_avx512 el_rmsnorm_scalar
#define el_rope_rotate_avx512 el_rope_rotate_scalar
#define el_softmax_avx512 el_softmax_scalar
#define el_attn_scores_avx512 el_attn_scores_scalar
#define el_attn_mix_avx512 el_attn_mix_scalar
#endif

float el_dot_f32(const float *a, const float *b, int n) {
    // Eight independent partial sums: lets the compiler vectorise without
    // reassociating, and keeps the result independent of the thread count.
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += a[i + j] * b[i + j];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

void el_axpy_f32(float *restrict y, float a, const float *restrict x, int n) {
    // Blocks of eight: the compiler turns each into vector multiplies and adds
    // (the same operations per element as the plain loop, so the same bits).
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) y[i + j] += a * x[i + j];
    for (; i < n; i++) y[i] += a * x[i];
}

// out[n] = x[n] / sqrt(mean(x²) + eps) * w[n]
float el_rmsnorm_scalar(float *out, const float *x, const float *w, int n, float eps) {
    // Eight running sums: one chain of dependent double adds cost ~2 us per
    // 2048-wide row (2.5% of a 128-token prefill); the double sums give the
    // same float scale to within one rounding.
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;  // named: kept in registers
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        a0 += (double)x[i] * x[i], a1 += (double)x[i + 1] * x[i + 1];
        a2 += (double)x[i + 2] * x[i + 2], a3 += (double)x[i + 3] * x[i + 3];
        a4 += (double)x[i + 4] * x[i + 4], a5 += (double)x[i + 5] * x[i + 5];
        a6 += (double)x[i + 6] * x[i + 6], a7 += (double)x[i + 7] * x[i + 7];
    }
    double ss = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7));
    for (; i < n; i++) ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / n + eps));
    for (i = 0; i < n; i++) out[i] = x[i] * scale * w[i];
    return scale;
}

float el_rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    pthread_once(&isa_once, detect_isa);
    if (use_avx512) return el_rmsnorm_avx512(out, x, w, n, eps);
    return el_rmsnorm_scalar(out, x, w, n, eps);
}

void el_add_f32(float *restrict y, const float *restrict x, int n) {
    int i = 0;  // blocks of sixteen: vector adds (see el_axpy_f32)
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) y[i + j] += x[i + j];
    for (; i < n; i++) y[i] += x[i];
}

void el_layernorm(float *out, const float *x, const float *w, const float *b, int n, float eps) {
    double s = 0;
    for (int i = 0; i < n; i++) s += x[i];
    float mean = (float)(s / n);
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)(x[i] - mean) * (x[i] - mean);
    float scale = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) {
        float v = (x[i] - mean) * scale;
        out[i] = (w ? v * w[i] : v) + (b ? b[i] : 0.0f);
    }
}

void el_rope_freqs(float *inv_freq, int head_dim, float theta) {
    for (int i = 0; i < head_dim / 2; i++) inv_freq[i] = (float)pow(theta, -2.0 * i / head_dim);
}

void el_rope_table(float *c, float *s, int half, int pos, const float *inv_freq) {
    for (int i = 0; i < half; i++) {
        float angle = (float)pos * inv_freq[i];
        c[i] = cosf(angle), s[i] = sinf(angle);
    }
}

// pairs i0 .. i0+m-1 of every head, by c[i - i0], s[i - i0]
static void rotate_pairs(float *x, int n_heads, int head_dim, int i0, int m, const float *c, const float *s, int neox) {
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *xh = x + (size_t)h * head_dim;
        for (int i = 0; i < m; i++) {
            float *v0 = neox ? xh + i0 + i : xh + 2 * (i0 + i), *v1 = neox ? v0 + half : v0 + 1;
            float a = *v0, b = *v1;
            *v0 = a * c[i] - b * s[i];
            *v1 = a * s[i] + b * c[i];
        }
    }
}

void el_rope_rotate_scalar(float *x, int n_heads, int head_dim, const float *c, const float *s, int neox) {
    rotate_pairs(x, n_heads, head_dim, 0, head_dim / 2, c, s, neox);
}

void el_rope_rotate(float *x, int n_heads, int head_dim, const float *c, const float *s, int neox) {
    pthread_once(&isa_once, detect_isa);
    if (use_avx512 && head_dim <= EL_ROPE_MAX_HD) el_rope_rotate_avx512(x, n_heads, head_dim, c, s, neox);
    else el_rope_rotate_scalar(x, n_heads, head_dim, c, s, neox);
}

// The table a piece at a time (heads wider than EL_ROPE_MAX_HD: none yet).
static void rope(float *x, int n_heads, int head_dim, int pos, const float *inv_freq, int neox) {
    float c[EL_ROPE_MAX_HD / 2], s[EL_ROPE_MAX_HD / 2];
    int half = head_dim / 2;
    if (half <= EL_ROPE_MAX_HD / 2) {
        el_rope_table(c, s, half, pos, inv_freq);
        el_rope_rotate(x, n_heads, head_dim, c, s, neox);
        return;
    }
    for (int i0 = 0; i0 < half; i0 += EL_ROPE_MAX_HD / 2) {
        int m = half - i0 < EL_ROPE_MAX_HD / 2 ? half - i0 : EL_ROPE_MAX_HD / 2;
        el_rope_table(c, s, m, pos, inv_freq + i0);
        rotate_pairs(x, n_heads, head_dim, i0, m, c, s, neox);
    }
}

// x[n_heads, head_dim]: pair (2i, 2i+1) of every head rotates by pos·inv_freq[i]
void el_rope(float *x, int n_heads, int head_dim, int pos, const float *inv_freq) {
    rope(x, n_heads, head_dim, pos, inv_freq, 0);
}

// x[n_heads, head_dim]: pair (i, i+head_dim/2) of every head rotates by pos·inv_freq[i]
void el_rope_neox(float *x, int n_heads, int head_dim, int pos, const float *inv_freq) {
    rope(x, n_heads, head_dim, pos, inv_freq, 1);
}

void el_softmax(float *x, int n) {
    pthread_once(&isa_once, detect_isa);
    if (use_avx512 && n > 0) {
        el_softmax_avx512(x, n);
        return;
    }
    if (use_neon && n > 0) {
        el_softmax_neon(x, n);
        return;
    }
    el_softmax_scalar(x, n);
}

void el_softmax_scalar(float *x, int n) {
    float max = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > max) max = x[i];
    float sum = 0;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    float inv = 1.0f / sum;
    for (int i = 0; i < n; i++) x[i] *= inv;
}

// h[n] = silu(g[n]) ⊙ u[n]
void el_swiglu(float *h, const float *g, const float *u, int n) {
    pthread_once(&isa_once, detect_isa);
    if (use_avx512) {
        el_swiglu_avx512(h, g, u, n);
        return;
    }
    if (use_neon) {
        el_swiglu_neon(h, g, u, n);
        return;
    }
    el_swiglu_scalar(h, g, u, n);
}

void el_swiglu_scalar(float *h, const float *g, const float *u, int n) {
    for (int i = 0; i < n; i++) h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void el_to_f32(int dtype, const void *src, float *dst, int64_t n) {
    pthread_once(&isa_once, detect_isa);
#if defined(__x86_64__)
    if (use_avx512 && dtype == EL_DTYPE_F16) el_f16_to_f32_avx512(src, dst, n);
    else if (use_avx512 && dtype == EL_DTYPE_BF16) el_bf16_to_f32_avx512(src, dst, n);
    else
#endif
        el_dtype_info(dtype)->to_f32(src, dst, n);
}

// The tanh form of GELU as x·sigmoid(2y): 0.5(1 + tanh y) = 1 / (1 + e^(-2y)).
#define GELU_C2 1.5957691216057308f  // 2·√(2/π)
#define GELU_QUICK_C 1.702f

void el_gelu_scalar(float *x, int n, int quick) {
    for (int i = 0; i < n; i++) {
        float v = x[i];
        float c = quick ? GELU_QUICK_C * v : GELU_C2 * (v + 0.044715f * v * v * v);
        x[i] = v / (1.0f + expf(-c));
    }
}

void el_gelu(float *x, int n) {
    pthread_once(&isa_once, detect_isa);
    if (use_avx512) el_gelu_avx512(x, n, 0);
    else el_gelu_scalar(x, n, 0);
}

void el_gelu_quick(float *x, int n) {
    pthread_once(&isa_once, detect_isa);
    if (use_avx512) el_gelu_avx512(x, n, 1);
    else el_gelu_scalar(x, n, 1);
}

void el_attn_scores_scalar(float *scores, const float *q, const float *k, size_t stride, int n, int hd, float scale) {
    for (int p = 0; p < n; p++) scores[p] = el_dot_f32(q, k + (size_t)p * stride, hd) * scale;
}

void el_attn_mix_scalar(float *out, const float *w, const float *v, size_t stride, int n, int hd) {
    for (int p = 0; p < n; p++) el_axpy_f32(out, w[p], v + (size_t)p * stride, hd);
}

void el_attn_scores(float *scores, const float *q, const float *k, size_t stride, int n, int hd, float scale) {
    pthread_once(&isa_once, detect_isa);
    if (use_avx512 && hd % 16 == 0 && hd <= 256)
        el_attn_scores_avx512(scores, q, k, stride, n, hd, scale);
    else if (use_neon && hd % 4 == 0)
        el_attn_scores_neon(scores, q, k, stride, n, hd, scale);
    else
        el_attn_scores_scalar(scores, q, k, stride, n, hd, scale);
}

void el_attn_mix(float *out, const float *w, const float *v, size_t stride, int n, int hd) {
    pthread_once(&isa_once, detect_isa);
    if (use_avx512 && hd % 16 == 0 && hd <= 256)
        el_attn_mix_avx512(out, w, v, stride, n, hd);
    else if (use_neon && hd % 4 == 0)
        el_attn_mix_neon(out, w, v, stride, n, hd);
    else
        el_attn_mix_scalar(out, w, v, stride, n, hd);
}
