// Dense f32 matrix products for training: OpenBLAS's sgemm when the build
// found it (it reaches most of the FMA peak on the big products), else a
// plain reference loop. Both are deterministic for a fixed thread count.
#include <stdlib.h>

#include "edgellm/train.h"

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
