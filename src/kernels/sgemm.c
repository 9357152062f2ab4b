// Dense f32 matrix products (training, the vision encoder): OpenBLAS's sgemm when the build
// found it (it reaches most of the FMA peak on the big products), else a
// plain reference loop. BLAS runs single-threaded; el_sgemm_par splits a
// product by columns over our pool, so one set of threads does all the work
// (OpenBLAS's own workers spin after each call and fought our pool for the
// cores). Deterministic for a fixed thread count: the split depends on it only.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/kernels.h"
#include "ops_simd.h"

#ifdef EL_HAVE_OPENBLAS
#include <cblas.h>
#include <dlfcn.h>
#include <pthread.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

// OpenBLAS is loaded here, at the first product, not linked: it picks its
// kernels once, when it is loaded, from OPENBLAS_CORETYPE or its own CPU
// detection, and edgellm sets that choice first, from the level its own
// kernels run at (el_cpu_isa, which EL_ISA can lower): SkylakeX (AVX-512) or
// Haswell (AVX2). One level for every kernel; and an OPENBLAS_CORETYPE that
// the environment carries for other programs no longer decides it (this
// project's machines set Haswell, which ran training at 0.37 of the AVX-512
// peak instead of 0.55). EL_OPENBLAS_CORETYPE=NAME overrides the choice.
// Its thread count is process-wide: set to one before the first product.
static struct {
    __typeof__(cblas_sgemm) *sgemm;
    void (*set_threads)(int);
    char *(*corename)(void);
    char name[64];  // el_blas_name's answer, made once with the rest
} blas;
static pthread_once_t blas_once = PTHREAD_ONCE_INIT;

static const char *blas_core(void) {
    const char *own = getenv("EL_OPENBLAS_CORETYPE");
    if (own && *own) return own;
#if defined(__x86_64__)
    unsigned a, b, c, d;
    switch (el_cpu_isa()) {
    case EL_ISA_AVX512:  // SkylakeX's kernels want AVX-512 CD too
        return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b >> 28) & 1 ? "SkylakeX" : "Haswell";
    case EL_ISA_AVX2: return "Haswell";
    default: break;
    }
#endif
    return NULL;  // OpenBLAS's own choice
}

static void blas_load(void) {
    const char *core = blas_core();
    if (core) setenv("OPENBLAS_CORETYPE", core, 1);
    void *h = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!h) return;  // the reference loop runs every product
    blas.sgemm = (__typeof__(cblas_sgemm) *)dlsym(h, "cblas_sgemm");
    *(void **)&blas.set_threads = dlsym(h, "openblas_set_num_threads");
    *(void **)&blas.corename = dlsym(h, "openblas_get_corename");
    if (blas.set_threads) blas.set_threads(1);
    const char *kernels = blas.corename ? blas.corename() : NULL;
    snprintf(blas.name, sizeof blas.name, "openblas (%s kernels)", kernels ? kernels : "?");
}
#endif

void el_sgemm(int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda, const float *B, int ldb,
              float beta, float *C, int ldc) {
    if (m <= 0 || n <= 0) return;
#ifdef EL_HAVE_OPENBLAS
    pthread_once(&blas_once, blas_load);
    if (k > 0 && blas.sgemm) {
        blas.sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, alpha, A,
                    lda, B, ldb, beta, C, ldc);
        return;
    }
#endif
    // C[i,j] = alpha Σ_p op(A)[i,p] op(B)[p,j] + beta C[i,j]; beta 0 never reads C
    for (int i = 0; i < m; i++) {
        float *c = C + (size_t)i * ldc;
        for (int j = 0; j < n; j++) c[j] = beta == 0 ? 0 : beta * c[j];
        for (int p = 0; p < k; p++) {
            float a = alpha * (ta ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p]);
            if (tb)
                for (int j = 0; j < n; j++) c[j] += a * B[(size_t)j * ldb + p];
            else {
                const float *b = B + (size_t)p * ldb;
                for (int j = 0; j < n; j++) c[j] += a * b[j];
            }
        }
    }
}

typedef struct {
    int ta, tb, m, n, k;
    float alpha, beta;
    const float *A, *B;
    float *C;
    int lda, ldb, ldc, cols;
} gemm_job;

static void gemm_task(void *ctx, int i, int n_tasks) {
    (void)n_tasks;
    const gemm_job *j = ctx;
    int c0 = i * j->cols, c1 = c0 + j->cols < j->n ? c0 + j->cols : j->n;
    if (c0 >= c1) return;
    // columns c0..c1 of op(B): rows of B when transposed, columns otherwise
    const float *B = j->tb ? j->B + (size_t)c0 * j->ldb : j->B + c0;
    el_sgemm(j->ta, j->tb, j->m, c1 - c0, j->k, j->alpha, j->A, j->lda, B, j->ldb, j->beta, j->C + c0, j->ldc);
}

void el_sgemm_par(el_pool *pool, int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc) {
#ifdef EL_HAVE_OPENBLAS
    pthread_once(&blas_once, blas_load);  // here, not on a pool thread: it sets the environment
#endif
    int P = el_pool_size(pool);
    if (P <= 1 || n < 32 * P || (double)m * n * k < 4e6) {  // small: one call beats a hand-off
        el_sgemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    int cols = (n + P - 1) / P;
    cols = (cols + 15) / 16 * 16;  // whole SIMD panels per part
    gemm_job j = {ta, tb, m, n, k, alpha, beta, A, B, C, lda, ldb, ldc, cols};
    el_pool_run(pool, gemm_task, &j, (n + cols - 1) / cols);
}

void el_blas_threads(int n) {
#ifdef EL_HAVE_OPENBLAS
    pthread_once(&blas_once, blas_load);
    if (blas.set_threads) blas.set_threads(n > 0 ? n : 1);
#else
    (void)n;
#endif
}

const char *el_blas_name(void) {
#ifdef EL_HAVE_OPENBLAS
    pthread_once(&blas_once, blas_load);
    return blas.sgemm ? blas.name : "reference (libopenblas.so.0 did not load)";
#else
    return "reference";
#endif
}

// ---------------------------------------------------------------- encoders: activations in panels

static int dense_dtype(const el_tensor *W) {
    return W->dtype == EL_DTYPE_F32 || W->dtype == EL_DTYPE_F16 || W->dtype == EL_DTYPE_BF16;
}

// (the AArch64 levels rank above EL_ISA_AVX512 in el_isa: the CPU's level must be it exactly)
static int use_avx512(el_isa isa) { return isa >= EL_ISA_AVX512 && el_cpu_isa() == EL_ISA_AVX512; }

#if !defined(__x86_64__)
// Only x86-64 builds have the AVX-512 tiles; elsewhere use_avx512 is 0 and
// OpenBLAS runs every product, so these stand-ins are never called.
#define el_dense_p_work_avx512 no_dense_p_work
#define el_matmul_p_avx512 no_matmul_p
#define el_attn_p_work_avx512 no_attn_p_work
#define el_attn_p_avx512 no_attn_p
#define el_layernorm_p_avx512 no_layernorm_p
#define el_attn_causal_work_avx512 no_attn_causal_work
#define el_attn_causal_avx512 no_attn_causal
#define el_attn_causal_kt_avx512 no_attn_causal_kt
static size_t no_dense_p_work(int n, int count, const int *d) { return (void)n, (void)count, (void)d, 0; }
static void no_matmul_p(el_pool *pool, int count, float *const *outs, const float *x, const el_tensor *const *Ws,
                        const float *const *biases, int n, float *work) {
    (void)pool, (void)count, (void)outs, (void)x, (void)Ws, (void)biases, (void)n, (void)work;
}
static size_t no_attn_p_work(int n, int hd) { return (void)n, (void)hd, 0; }
static void no_attn_p(float *out, const float *q, const float *k, const float *v, int F, int f0, int n, int hd,
                      float scale, float *work) {
    (void)out, (void)q, (void)k, (void)v, (void)F, (void)f0, (void)n, (void)hd, (void)scale, (void)work;
}
static size_t no_attn_causal_work(int hd) { return (void)hd, 0; }
static int no_attn_causal_kt(float *kt, const float *k, int nk, int hd) {
    return (void)kt, (void)k, (void)nk, (void)hd, 0;
}
static void no_attn_causal(float *out, size_t ldo, float *lse, size_t ldl, const float *q, size_t ldq, int nq, int p0,
                           const float *kt, const float *v, int k0, int nk, int hd, int window, float scale, float *work) {
    (void)out, (void)ldo, (void)lse, (void)ldl, (void)q, (void)ldq, (void)nq, (void)p0, (void)kt, (void)v, (void)k0;
    (void)nk, (void)hd, (void)window, (void)scale, (void)work;
}
static void no_layernorm_p(float *out, const float *x, int F, const float *w, const float *b, int p0, int p1,
                           float eps) {
    (void)out, (void)x, (void)F, (void)w, (void)b, (void)p0, (void)p1, (void)eps;
}
#endif

#define PANEL EL_PANEL

static size_t panels(int n) { return ((size_t)n + PANEL - 1) / PANEL; }

size_t el_panel_index(int t, int f, int F) { return ((size_t)(t / PANEL) * F + f) * PANEL + t % PANEL; }

size_t el_matmul_p_work(int n, int count, const el_tensor *const *Ws) {
    size_t plain = 0, n_pad = panels(n) * PANEL;
    int d[EL_DENSE_MAX];
    for (int i = 0; i < count && i < EL_DENSE_MAX; i++) {
        size_t k = (size_t)Ws[i]->ne[0], di = (size_t)Ws[i]->ne[1];
        size_t need = k * di > (k + di) * n_pad ? k * di : (k + di) * n_pad;  // BLAS panels; or row-major copies
        plain = need > plain ? need : plain;
        d[i] = (int)di;
    }
    size_t own = el_dense_p_work_avx512(n, count < EL_DENSE_MAX ? count : EL_DENSE_MAX, d);
    return plain > own ? plain : own;
}

typedef struct {
    float *out;
    const float *x;
    const el_tensor *W;
    float *work;  // [d][k]: W as f32
    int n, k, d, rows;
} blas_job;

// Rows [r0, r1) of W as f32 times each panel of tokens: one sgemm per panel.
static void blas_task(void *ctx, int t, int n_tasks) {
    (void)n_tasks;
    const blas_job *j = ctx;
    int r0 = t * j->rows, r1 = r0 + j->rows < j->d ? r0 + j->rows : j->d;
    size_t row_bytes = el_tensor_row_size(j->W);
    const char *src = (const char *)j->W->data + (size_t)r0 * row_bytes;
    const float *w = (const float *)src;
    if (j->W->dtype != EL_DTYPE_F32) {
        el_to_f32(j->W->dtype, src, j->work + (size_t)r0 * j->k, (int64_t)(r1 - r0) * j->k);
        w = j->work + (size_t)r0 * j->k;
    }
    for (size_t p = 0; p < panels(j->n); p++)
        el_sgemm(0, 0, r1 - r0, PANEL, j->k, 1.0f, w, j->k, j->x + p * j->k * PANEL, PANEL, 0.0f,
                 j->out + (p * j->d + r0) * PANEL, PANEL);
}

void el_matmul_p_many_isa(el_pool *pool, int count, float *const *outs, const float *x, const el_tensor *const *Ws,
                          const float *const *biases, int n, float *work, el_isa isa) {
    int same = count <= EL_DENSE_MAX;
    for (int i = 0; i < count; i++) same = same && dense_dtype(Ws[i]) && Ws[i]->ne[0] == Ws[0]->ne[0];
    if (same && use_avx512(isa)) {
        el_matmul_p_avx512(pool, count, outs, x, Ws, biases, n, work);
        return;
    }
    size_t np = panels(n);
    for (int i = 0; i < count; i++) {
        const el_tensor *W = Ws[i];
        int k = (int)W->ne[0], d = (int)W->ne[1];
        const float *b = biases ? biases[i] : NULL;
#ifdef EL_HAVE_OPENBLAS
        if (dense_dtype(W)) {
            int P = el_pool_size(pool), rows = (d + 4 * P - 1) / (4 * P);  // about four panels per thread
            rows = rows < 64 ? 64 : (rows + 15) / 16 * 16;
            blas_job j = {outs[i], x, W, work, n, k, d, rows};
            el_pool_run(pool, blas_task, &j, (d + rows - 1) / rows);
            if (b)
                for (size_t p = 0; p < np; p++)
                    for (int r = 0; r < d; r++)
                        for (int l = 0; l < PANEL; l++) outs[i][(p * d + r) * PANEL + l] += b[r];
            continue;
        }
#endif
        // the row-major kernels (quantized weights): tokens as rows and back
        float *xr = work, *y = work + (size_t)n * k;
        for (int t = 0; t < n; t++)
            for (int kk = 0; kk < k; kk++) xr[(size_t)t * k + kk] = x[el_panel_index(t, kk, k)];
        el_matmul_isa(pool, y, xr, W, n, isa);
        for (int t = 0; t < n; t++)
            for (int r = 0; r < d; r++) outs[i][el_panel_index(t, r, d)] = y[(size_t)t * d + r] + (b ? b[r] : 0.0f);
    }
}

size_t el_attn_p_work(int n, int hd) {
    size_t own = el_attn_p_work_avx512(n, hd), plain = ((size_t)n * n + (size_t)3 * n * hd);
    return own > plain ? own : plain;
}

void el_attn_p_isa(float *out, const float *q, const float *k, const float *v, int F, int f0, int n, int hd,
                   float scale, float *work, el_isa isa) {
    if (use_avx512(isa)) {
        el_attn_p_avx512(out, q, k, v, F, f0, n, hd, scale, work);
        return;
    }
    // the head's rows token-major, S = scale · Q Kᵀ, softmax per row, O = S V
    float *s = work, *qr = s + (size_t)n * n, *kr = qr + (size_t)n * hd, *vr = kr + (size_t)n * hd;
    for (int t = 0; t < n; t++)
        for (int i = 0; i < hd; i++) {
            qr[(size_t)t * hd + i] = q[el_panel_index(t, f0 + i, F)];
            kr[(size_t)t * hd + i] = k[el_panel_index(t, f0 + i, F)];
            vr[(size_t)t * hd + i] = v[el_panel_index(t, f0 + i, F)];
        }
    el_sgemm(0, 1, n, n, hd, scale, qr, hd, kr, hd, 0.0f, s, n);
    for (int r = 0; r < n; r++) el_softmax(s + (size_t)r * n, n);
    el_sgemm(0, 0, n, hd, n, 1.0f, s, n, vr, hd, 0.0f, qr, hd);
    for (int t = 0; t < n; t++)
        for (int i = 0; i < hd; i++) out[el_panel_index(t, f0 + i, F)] = qr[(size_t)t * hd + i];
}

int el_attn_causal_tiled(el_isa isa) { return use_avx512(isa); }

size_t el_attn_causal_kt_floats(int nk, int hd) { return ((size_t)nk + 31) / 32 * 32 * (size_t)hd; }

void el_attn_causal_kt(float *kt, const float *k, int nk, int hd) {
    int s0 = use_avx512(EL_ISA_BEST) ? el_attn_causal_kt_avx512(kt, k, nk, hd) : 0;  // whole 16s of keys
    for (int s = s0; s < (nk + 31) / 32 * 32; s++)
        for (int i = 0; i < hd; i++) kt[(size_t)(s / 32) * 32 * hd + (size_t)i * 32 + s % 32] = s < nk ? k[(size_t)s * hd + i] : 0.0f;
}

size_t el_attn_causal_work(int nk, int hd, int kt_given) {
    size_t own = el_attn_causal_work_avx512(hd);
    if (own && !kt_given) own += el_attn_causal_kt_floats(nk, hd);  // Kᵀ, made here
    return own > (size_t)nk ? own : (size_t)nk;
}

void el_attn_causal_isa(float *out, size_t ldo, float *lse, size_t ldl, const float *q, size_t ldq, int nq, int p0,
                        const float *k, const float *kt, const float *v, int k0, int nk, int hd, int window, float scale,
                        float *work, el_isa isa) {
    if (use_avx512(isa)) {
        if (!kt) {
            el_attn_causal_kt(work, k, nk, hd);
            kt = work, work += el_attn_causal_kt_floats(nk, hd);
        }
        el_attn_causal_avx512(out, ldo, lse, ldl, q, ldq, nq, p0, kt, v, k0, nk, hd, window, scale, work);
        return;
    }
    // query by query on the row kernels, as the layer's row path does
    for (int t = 0; t < nq; t++) {
        int pos = p0 + t, lo = window && pos + 1 - window > k0 ? pos + 1 - window : k0, hi = pos < k0 + nk - 1 ? pos : k0 + nk - 1;
        int n = hi - lo + 1, top = 0;
        float *s = work, *o = out + (size_t)t * ldo;
        el_attn_scores(s, q + (size_t)t * ldq, k + (size_t)(lo - k0) * hd, (size_t)hd, n, hd, scale);
        for (int i = 1; i < n; i++)
            if (s[i] > s[top]) top = i;
        float max = s[top];
        el_softmax(s, n);
        memset(o, 0, (size_t)hd * sizeof(float));
        el_attn_mix(o, s, v + (size_t)(lo - k0) * hd, (size_t)hd, n, hd);
        if (lse) lse[(size_t)t * ldl] = max - logf(s[top]);  // log Σ exp = max - log P_max
    }
}

void el_layernorm_p_isa(float *out, const float *x, int F, const float *w, const float *b, int p0, int p1, float eps,
                        el_isa isa) {
    if (use_avx512(isa)) {
        el_layernorm_p_avx512(out, x, F, w, b, p0, p1, eps);
        return;
    }
    for (int t = p0 * PANEL; t < p1 * PANEL; t++) {
        double s = 0, ss = 0;
        for (int r = 0; r < F; r++) s += x[el_panel_index(t, r, F)];
        float mean = (float)(s / F);
        for (int r = 0; r < F; r++) ss += (double)(x[el_panel_index(t, r, F)] - mean) * (x[el_panel_index(t, r, F)] - mean);
        float inv = (float)(1.0 / sqrt(ss / F + eps));
        for (int r = 0; r < F; r++) {
            float v = (x[el_panel_index(t, r, F)] - mean) * inv;
            out[el_panel_index(t, r, F)] = (w ? v * w[r] : v) + (b ? b[r] : 0.0f);
        }
    }
}
