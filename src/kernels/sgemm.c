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
