// Matrix products against weight tensors of any readable dtype, split by
// output rows across the thread pool.
#include <stdlib.h>
#include <string.h>

#include "edgellm/kernels.h"

typedef struct {
    float *out;
    const float *x;
    const el_tensor *W;
    int n, k, d;
    int rows_per_task;
} matmul_job;

// out[n,d] = x[n,k] · W[d,k]ᵀ for the rows [r0, r1) of W
static void matmul_task(void *ctx, int t, int n_tasks) {
    (void)n_tasks;
    const matmul_job *j = ctx;
    int r0 = t * j->rows_per_task, r1 = r0 + j->rows_per_task;
    if (r1 > j->d) r1 = j->d;
    const el_tensor *W = j->W;
    size_t row_bytes = el_tensor_row_size(W);
    if (W->dtype == EL_DTYPE_F32) {
        for (int r = r0; r < r1; r++) {
            const float *w = (const float *)((const char *)W->data + (size_t)r * row_bytes);
            for (int i = 0; i < j->n; i++)
                j->out[(size_t)i * j->d + r] = el_dot_f32(j->x + (size_t)i * j->k, w, j->k);
        }
        return;
    }
    float buf[16384];
    float *row = j->k <= 16384 ? buf : malloc((size_t)j->k * sizeof(float));
    if (!row) return;  // cannot happen for sane k; leaves output untouched
    const el_dtype_traits *tr = el_dtype_info(W->dtype);
    for (int r = r0; r < r1; r++) {
        tr->to_f32((const char *)W->data + (size_t)r * row_bytes, row, j->k);
        for (int i = 0; i < j->n; i++) j->out[(size_t)i * j->d + r] = el_dot_f32(j->x + (size_t)i * j->k, row, j->k);
    }
    if (row != buf) free(row);
}

void el_matmul(el_pool *pool, float *out, const float *x, const el_tensor *W, int n) {
    matmul_job j = {out, x, W, n, (int)W->ne[0], (int)W->ne[1], 0};
    int threads = el_pool_size(pool);
    // Enough tasks for load balance, each big enough to amortise the hand-out.
    int tasks = threads == 1 ? 1 : threads * 4;
    j.rows_per_task = (j.d + tasks - 1) / tasks;
    if (j.rows_per_task < 4) j.rows_per_task = 4;
    tasks = (j.d + j.rows_per_task - 1) / j.rows_per_task;
    el_pool_run(pool, matmul_task, &j, tasks);
}
