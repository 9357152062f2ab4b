// Dense f32 matrix products (training, the vision encoder): OpenBLAS's sgemm when the build
// found it (it reaches most of the FMA peak on the big products), else a
// plain reference loop. BLAS runs single-threaded; el_sgemm_par splits a
// product by columns over our pool, so one set of threads does all the work
// (OpenBLAS's own workers spin after each call and fought our pool for the
// cores). Deterministic for a fixed thread count: the split depends on it only.
#include <stdlib.h>
#include <string.h>

#include "edgellm/kernels.h"
#include "ops_simd.h"

#ifdef EL_HAVE_OPENBLAS
#include <cblas.h>
void openblas_set_num_threads(int num_threads);
#endif

void el_sgemm(int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda, const float *B, int ldb,
              float beta, float *C, int ldc) {
    if (m <= 0 || n <= 0) return;
#ifdef EL_HAVE_OPENBLAS
    if (k > 0) {
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, alpha, A,
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
    openblas_set_num_threads(n > 0 ? n : 1);
#else
    (void)n;
#endif
}

const char *el_blas_name(void) {
#ifdef EL_HAVE_OPENBLAS
    return "openblas";
#else
    return "reference";
#endif
}

// ---------------------------------------------------------------- dense weights

typedef struct {
    float *out;
    const float *x;
    const el_tensor *W;
    float *work;  // [d][k] f32 panels, or NULL
    int n, k, d, rows;
} dense_job;

// One panel of W's rows as f32 (converted into the workspace unless stored
// so), against every row of x: one BLAS call.
static void dense_task(void *ctx, int t, int n_tasks) {
    (void)n_tasks;
    const dense_job *j = ctx;
    int r0 = t * j->rows, r1 = r0 + j->rows < j->d ? r0 + j->rows : j->d;
    size_t row_bytes = el_tensor_row_size(j->W);
    const char *src = (const char *)j->W->data + (size_t)r0 * row_bytes;
    const float *w = (const float *)src;
    float *own = NULL;
    if (j->W->dtype != EL_DTYPE_F32) {
        float *buf = j->work ? j->work + (size_t)r0 * j->k : (own = el_malloc_aligned((size_t)(r1 - r0) * j->k * sizeof(float)));
        if (!buf) {  // out of memory: the row-by-row kernels need none
            el_tensor part = *j->W;
            part.data = (void *)src;
            part.ne[1] = r1 - r0;
            part.packed = NULL;
            part.packed_rows = 0;
            float *tmp = malloc((size_t)j->n * (r1 - r0) * sizeof(float));
            if (!tmp) return;
            el_matmul(NULL, tmp, j->x, &part, j->n);
            for (int i = 0; i < j->n; i++)
                memcpy(j->out + (size_t)i * j->d + r0, tmp + (size_t)i * (r1 - r0), (size_t)(r1 - r0) * sizeof(float));
            free(tmp);
            return;
        }
        el_to_f32(j->W->dtype, src, buf, (int64_t)(r1 - r0) * j->k);
        w = buf;
    }
    el_sgemm(0, 1, j->n, r1 - r0, j->k, 1.0f, j->x, j->k, w, j->k, 0.0f, j->out + r0, j->d);
    el_free_aligned(own);
}

static int dense_dtype(const el_tensor *W) {
    return W->dtype == EL_DTYPE_F32 || W->dtype == EL_DTYPE_F16 || W->dtype == EL_DTYPE_BF16;
}

static int use_avx512(el_isa isa) { return isa >= EL_ISA_AVX512 && el_cpu_isa() >= EL_ISA_AVX512; }

size_t el_matmul_dense_work(int n, int count, const el_tensor *const *Ws) {
    size_t blas = 0;
    int d[EL_DENSE_MAX];
    for (int i = 0; i < count && i < EL_DENSE_MAX; i++) {
        size_t kd = (size_t)Ws[i]->ne[0] * (size_t)Ws[i]->ne[1];
        blas = kd > blas ? kd : blas;
        d[i] = (int)Ws[i]->ne[1];
    }
    size_t own = el_dense_work_avx512(n, (int)Ws[0]->ne[0], count < EL_DENSE_MAX ? count : EL_DENSE_MAX, d);
    return blas > own ? blas : own;
}

static void add_bias(float *out, const float *b, int n, int d) {
    if (b)
        for (int i = 0; i < n; i++)
            for (int r = 0; r < d; r++) out[(size_t)i * d + r] += b[r];
}

void el_matmul_dense_many_isa(el_pool *pool, int count, float *const *outs, const float *x, const el_tensor *const *Ws,
                              const float *const *biases, int n, float *work, el_isa isa) {
    int same = count <= EL_DENSE_MAX && n >= 8;
    for (int i = 0; i < count; i++) same = same && dense_dtype(Ws[i]) && Ws[i]->ne[0] == Ws[0]->ne[0];
    if (same && use_avx512(isa)) {
        el_matmul_dense_avx512(pool, count, outs, x, Ws, biases, n, work);
        return;
    }
    for (int i = 0; i < count; i++) {
        const el_tensor *W = Ws[i];
        int k = (int)W->ne[0], d = (int)W->ne[1];
        (void)k;
#ifdef EL_HAVE_OPENBLAS
        if (dense_dtype(W) && n >= 8) {
            int P = el_pool_size(pool);
            // panels of at least 64 rows, about four per thread
            int rows = (d + 4 * P - 1) / (4 * P);
            rows = rows < 64 ? 64 : (rows + 15) / 16 * 16;
            dense_job j = {outs[i], x, W, work, n, k, d, rows};
            el_pool_run(pool, dense_task, &j, (d + rows - 1) / rows);
            add_bias(outs[i], biases ? biases[i] : NULL, n, d);
            continue;
        }
#endif
        el_matmul_isa(pool, outs[i], x, W, n, isa);
        add_bias(outs[i], biases ? biases[i] : NULL, n, d);
    }
}

void el_matmul_dense(el_pool *pool, float *out, const float *x, const el_tensor *W, const float *bias, int n,
                     float *work) {
    el_matmul_dense_many_isa(pool, 1, &out, x, &W, &bias, n, work, EL_ISA_AVX512);
}

// ---------------------------------------------------------------- full attention

size_t el_attn_full_work(int n, int hd) {
    size_t own = hd <= 256 ? el_attn_work_avx512(n, hd) : 0, plain = (size_t)n * n;
    return own > plain ? own : plain;
}

void el_attn_full_isa(float *out, size_t ldo, const float *q, size_t ldq, const float *k, size_t ldk, const float *v,
                      size_t ldv, int n, int hd, float scale, float *work, el_isa isa) {
    if (use_avx512(isa) && hd <= 256) {
        el_attn_full_avx512(out, ldo, q, ldq, k, ldk, v, ldv, n, hd, scale, work);
        return;
    }
    // S = scale · Q Kᵀ, softmax per row, O = S V (BLAS, or the reference loop)
    el_sgemm(0, 1, n, n, hd, scale, q, (int)ldq, k, (int)ldk, 0.0f, work, n);
    for (int r = 0; r < n; r++) el_softmax(work + (size_t)r * n, n);
    el_sgemm(0, 0, n, hd, n, 1.0f, work, n, v, (int)ldv, 0.0f, out, (int)ldo);
}

void el_attn_full(float *out, size_t ldo, const float *q, size_t ldq, const float *k, size_t ldk, const float *v,
                  size_t ldv, int n, int hd, float scale, float *work) {
    el_attn_full_isa(out, ldo, q, ldq, k, ldk, v, ldv, n, hd, scale, work, EL_ISA_AVX512);
}
