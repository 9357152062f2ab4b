// Dense f32 matrix products (training, the vision encoder): OpenBLAS's sgemm when the build
// found it (it reaches most of the FMA peak on the big products), else a
// plain reference loop. BLAS runs single-threaded; el_sgemm_par splits a
// product by columns over our pool, so one set of threads does all the work
// (OpenBLAS's own workers spin after each call and fought our pool for the
// cores). Deterministic for a fixed thread count: the split depends on it only.
#include <stdlib.h>

#include "edgellm/kernels.h"

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
    int n, k, d, rows;
} dense_job;

// One panel of W's rows as f32 (converted into a buffer unless stored so),
// against every row of x: one BLAS call.
static void dense_task(void *ctx, int t, int n_tasks) {
    (void)n_tasks;
    const dense_job *j = ctx;
    int r0 = t * j->rows, r1 = r0 + j->rows < j->d ? r0 + j->rows : j->d;
    size_t row_bytes = el_tensor_row_size(j->W);
    const char *src = (const char *)j->W->data + (size_t)r0 * row_bytes;
    float *buf = NULL;
    const float *w = (const float *)src;
    if (j->W->dtype != EL_DTYPE_F32) {
        buf = el_malloc_aligned((size_t)(r1 - r0) * j->k * sizeof(float));
        if (!buf) {  // out of memory: the row-by-row kernels need none
            el_tensor part = *j->W;
            part.data = (void *)src;
            part.ne[1] = r1 - r0;
            part.packed = NULL;
            float *tmp = malloc((size_t)j->n * (r1 - r0) * sizeof(float));
            if (!tmp) return;
            el_matmul(NULL, tmp, j->x, &part, j->n);
            for (int i = 0; i < j->n; i++)
                for (int r = r0; r < r1; r++) j->out[(size_t)i * j->d + r] = tmp[(size_t)i * (r1 - r0) + (r - r0)];
            free(tmp);
            return;
        }
        el_dtype_info(j->W->dtype)->to_f32(src, buf, (int64_t)(r1 - r0) * j->k);
        w = buf;
    }
    el_sgemm(0, 1, j->n, r1 - r0, j->k, 1.0f, j->x, j->k, w, j->k, 0.0f, j->out + r0, j->d);
    el_free_aligned(buf);
}

int el_matmul_dense_ok(const el_tensor *W) {
#ifdef EL_HAVE_OPENBLAS
    return W->dtype == EL_DTYPE_F32 || W->dtype == EL_DTYPE_F16 || W->dtype == EL_DTYPE_BF16;
#else
    (void)W;
    return 0;
#endif
}

void el_matmul_dense(el_pool *pool, float *out, const float *x, const el_tensor *W, int n) {
    if (!el_matmul_dense_ok(W) || n < 8) {
        el_matmul(pool, out, x, W, n);
        return;
    }
    int k = (int)W->ne[0], d = (int)W->ne[1], P = el_pool_size(pool);
    // panels of at least 64 rows, about four per thread
    int rows = (d + 4 * P - 1) / (4 * P);
    rows = rows < 64 ? 64 : (rows + 15) / 16 * 16;
    dense_job j = {out, x, W, n, k, d, rows};
    el_pool_run(pool, dense_task, &j, (d + rows - 1) / rows);
}
