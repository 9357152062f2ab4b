// Matrix products against weight tensors of any readable dtype, split by
// output rows across the thread pool. Quantized weights are never expanded:
// the activations are quantized once per call and tile kernels (qdot*.c) run
// integer dot products over cache-sized tiles of weight rows x tokens.
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/kernels.h"
#include "qdot.h"

// Tiles: a block of weight rows small enough to stay in L1/L2 while it meets
// every token of a token block, and a token block whose activations stay in
// L2 while all row blocks of a task pass over it: half the L2 (256 KiB where
// the C library does not tell its size). Against a fixed 256 KiB on a 1 MiB
// L2 (AMD EPYC, 2 threads, every layer's matrices of the TinyLlama-shaped
// models at 128 tokens, the two alternating in one process, two runs): Q8_0
// +0-1%, Q4_0 +1-4%, Q4_K +3-4%; a 128-token prompt at k = 2048 is then one
// block, and a task's weights are read once.
#define ROW_BLOCK_BYTES (16 * 1024)

static size_t token_block_bytes(void) {
    size_t l2 = el_cpu_l2_bytes();
    if (!l2) return 256 * 1024;
    return l2 / 2 < 32 * 1024 ? 32 * 1024 : l2 / 2 > 4096 * 1024 ? 4096 * 1024 : l2 / 2;
}

// Tokens a kernel call takes of n (activation rows of ldx bytes): even
// blocks of whole micro-tiles (and so whole groups of a panel, el_act_panel).
static int token_block(int n, size_t ldx) {
    int tb = (int)(token_block_bytes() / ldx);
    if (tb < 8) tb = 8;
    int blocks = (n + tb - 1) / tb;
    return ((n + blocks - 1) / blocks + 7) & ~7;
}

typedef struct {
    float *out;
    const float *x;
    const el_tensor *W;
    int n, k, d;
    int rows_per_task;
    int big_tasks, big_rows;  // the first big_tasks tasks take big_rows rows each
    el_gemm_fn gemm;
    const void *act;  // activations in the weights' vec_dot_type
    size_t ldx;       // bytes per activation row
    int act_type;
    el_gemm_fn packed_gemm;  // rows below packed_rows come from W->packed
    int packed_rows;
    size_t pair_bytes;  // bytes per packed pair of 16-row groups
    el_gemm_panel_fn panel_gemm;  // packed_gemm's form that reads a panel (qdot.h), or NULL
    const char *panel;            // the activations' panel, if panel_gemm reads one in this product
    int stripes;                  // W->packed_stripes (0: one contiguous copy)
    int by_stripe;                // task t is stripe thread t's share (a decode on a pool of `stripes` threads)
    el_gemm_runs_fn runs;         // one token over a stripe thread's two runs, or NULL
} matmul_job;

// The original paths: f32 weights with el_dot_f32 (bit-exact with llama2.c's
// order of operations), and any other readable dtype row by row via to_f32.
static void matmul_rows_f32(const matmul_job *j, int r0, int r1) {
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

// Pair p of the packed copy, and in *end the first pair past its stripe (or
// past the copy).
static const char *pair_at(const matmul_job *j, int p, int *end) {
    const el_tensor *W = j->W;
    const int np = j->packed_rows / 32, T = j->stripes;
    if (!T) {
        *end = np;
        return (const char *)W->packed + (size_t)p * j->pair_bytes;
    }
    int s = (int)((int64_t)p * T / np) * 2;  // thread t's stripes start at np * t / T: start near them
    while (s > 0 && el_stripe_first(np, T, s) > p) s--;
    while (el_stripe_first(np, T, s + 1) <= p) s++;
    int64_t first = el_stripe_first(np, T, s);
    *end = (int)el_stripe_first(np, T, s + 1);
    return W->stripe[s] + (size_t)(p - first) * j->pair_bytes;
}

// Tokens [t0, t0 + nt) against the packed pairs [p0, p1): a kernel call for
// each stripe they cross. The kernel keeps each group's weights in cache
// over all nt tokens.
static void packed_pairs(const matmul_job *j, int p0, int p1, int t0, int nt) {
    while (p0 < p1) {
        int end;
        const char *w = pair_at(j, p0, &end);
        if (end > p1) end = p1;
        float *out = j->out + (size_t)t0 * j->d + (size_t)p0 * 32;
        const char *x = (const char *)j->act + (size_t)t0 * j->ldx;
        if (j->panel)  // the panel of this block of tokens starts at its first
            j->panel_gemm(j->k, w, j->pair_bytes, 32 * (end - p0), x, j->ldx, j->panel + el_act_panel_bytes(j->k, t0),
                          nt, out, (size_t)j->d);
        else
            j->packed_gemm(j->k, w, j->pair_bytes, 32 * (end - p0), x, j->ldx, nt, out, (size_t)j->d);
        p0 = end;
    }
}

// out[n,d] = x[n,k] · W[d,k]ᵀ for the rows [r0, r1) of W
static void matmul_task(void *ctx, int t, int n_tasks) {
    (void)n_tasks;
    const matmul_job *j = ctx;
    int r0 = t < j->big_tasks ? t * j->big_rows : j->big_tasks * j->big_rows + (t - j->big_tasks) * j->rows_per_task;
    int r1 = r0 + (t < j->big_tasks ? j->big_rows : j->rows_per_task);
    if (j->by_stripe) {  // stripe thread t's pairs (the packed rows' end for the last), then the last takes the tail
        const int np = j->packed_rows / 32, T = j->stripes;
        r0 = 32 * (int)el_stripe_first(np, T, 2 * t);
        r1 = t == T - 1 ? j->d : 32 * (int)el_stripe_first(np, T, 2 * t + 2);
        if (j->runs && r1 > r0) {  // one token: the two runs side by side, each reading on from the last product's
            const int a = r0 / 32, b = (r1 < j->packed_rows ? r1 : j->packed_rows) / 32;
            if (b > a) j->runs(j->k, j->W->stripe[2 * t], j->W->stripe[2 * t + 1], j->pair_bytes, b - a, j->act,
                               j->out + (size_t)a * 32);
            r0 = 32 * b;  // what is left: the tail rows
        }
    }
    if (r1 > j->d) r1 = j->d;
    if (!j->gemm) {
        matmul_rows_f32(j, r0, r1);
        return;
    }
    size_t ldw = el_tensor_row_size(j->W);
    int rb = (int)(ROW_BLOCK_BYTES / ldw), tb = token_block(j->n, j->ldx);
    if (rb < 4) rb = 4;
    rb &= ~3;  // whole micro-tiles
    const char *w = j->W->data, *x = j->act;
    int rp = r1 < j->packed_rows ? r1 : j->packed_rows;  // [r0, rp) packed
    for (int t0 = 0; t0 < j->n; t0 += tb) {
        int nt = j->n - t0 < tb ? j->n - t0 : tb;
        if (r0 < rp) packed_pairs(j, r0 / 32, rp / 32, t0, nt);
        for (int r = r0 > rp ? r0 : rp; r < r1; r += rb) {
            int nr = r1 - r < rb ? r1 - r : rb;
            j->gemm(j->k, w + (size_t)r * ldw, ldw, nr, x + (size_t)t0 * j->ldx, j->ldx, nt,
                    j->out + (size_t)t0 * j->d + r, (size_t)j->d);
        }
    }
}

typedef struct {
    const float *x;
    char *act;
    int k, n, act_type, rows_per_task;
    size_t ldx;
    char *panel;  // also written, if not NULL
} quant_job;

static void quant_task(void *ctx, int t, int n_tasks) {
    (void)n_tasks;
    const quant_job *q = ctx;
    int i0 = t * q->rows_per_task, i1 = i0 + q->rows_per_task;
    if (i1 > q->n) i1 = q->n;
    for (int i = i0; i < i1; i++) {
        el_act_quantize(q->act_type, q->x + (size_t)i * q->k, q->act + (size_t)i * q->ldx, q->k);
        if (q->panel) {  // the panel of i's block of tokens, as the kernel calls take them (matmul_task)
            int tb = token_block(q->n, q->ldx), t0 = i / tb * tb, nt = q->n - t0 < tb ? q->n - t0 : tb;
            el_act_panel(q->act + (size_t)i * q->ldx, q->k, nt, i - t0, q->panel + el_act_panel_bytes(q->k, t0));
        }
    }
}

static el_gemm_fn pick_gemm(int dtype, el_isa isa) {
    for (int level = (int)isa; level >= EL_ISA_SCALAR; level--) {
        el_gemm_fn g = el_gemm_kernel(dtype, (el_isa)level);
        if (g) return g;
    }
    return NULL;
}

// Picks the kernels for W and the activation layout they read; act is set later.
static void job_init(matmul_job *j, float *out, const float *x, const el_tensor *W, int n, el_isa isa) {
    *j = (matmul_job){out, x, W, n, (int)W->ne[0], (int)W->ne[1], 0, 0, 0, NULL, NULL, 0, EL_DTYPE_F32, NULL, 0, 0, NULL, NULL, 0, 0, NULL};
    const el_dtype_traits *tr = el_dtype_info(W->dtype);
    if (W->dtype != EL_DTYPE_F32 && tr->vec_dot) j->gemm = pick_gemm(W->dtype, isa);
    if (j->gemm && W->packed && (j->packed_gemm = el_gemm_packed_kernel(W->dtype, isa))) {
        j->packed_rows = (int)W->packed_rows;
        j->pair_bytes = el_pack_pair_bytes(W->dtype, j->k);
        j->panel_gemm = el_gemm_packed_panel_kernel(W->dtype, isa);
        if (W->packed_stripes > 0 && W->packed_stripes <= EL_MAX_STRIPE_THREADS && W->stripe) {
            j->stripes = W->packed_stripes;
            j->runs = n == 1 ? el_gemm_runs_kernel(W->dtype, isa) : NULL;
        }
    }
    if (j->gemm) {
        j->act_type = tr->vec_dot_type;
        j->ldx = el_act_row_size(j->act_type, j->k);
    }
}

// Splits the rows into tasks; returns how many. Threads claim tasks in order,
// so a thread that finishes while another still runs a task waits for it:
// with even tasks of 1/(4 x threads) of the rows that tail was up to an
// eighth of every product on 2 threads, and a decode step has ~90 products.
// Large products of more than STREAM_ROWS tokens are therefore split
// unevenly (decodes were too, until the split below): one big task a thread
// covering 3/4 of the rows together, then up to 4 small ones a thread, so the
// tail is about 1/32 of the rows (2 threads, large products). Per-token A/B
// on 2 threads, the two splits alternating every step, 300-400 steps each:
// decode median -3% to -5% (Q8_0, Q4_0, Q4_K), 128-token prefill -4% (Q8_0,
// Q4_K). Nothing ties a big task to a thread: a worker that wakes only after
// the caller finished its big task leaves the caller the second one too (the
// even split shared better then); in a decode the workers spin between
// products and are there.
//
// Products of up to STREAM_ROWS tokens (decode steps, small batches) stream
// their weights once, and there every task is a stream the prefetchers start
// again: they take one contiguous task a thread instead. Every layer's
// products of the TinyLlama-shaped models through el_matmul, 2 threads, AMD
// EPYC Zen 5 (2026-12-07), the two splits alternating round by round, each
// round's weight bytes against the read probe around it, medians of ~100-400
// rounds in each of the VM's two bandwidth states (44-65 and 65-85 GB/s), this
// split against the one above: Q4_0 1 token 0.966/0.949 and 0.792/0.759, 4
// tokens 0.923/0.901 and 0.689/0.664, 8 tokens 0.800/0.778 and 0.497/0.476;
// Q4_K 1 token 0.926/0.918 and 0.836/0.799, 4 tokens 0.749/0.754 and
// 0.718/0.683; Q8_0 1 token 0.952/0.950 and 0.848/0.838, 4 tokens 0.831/0.819
// and 0.687/0.680. Whole 1-token steps at positions 128-159, alternating, the
// median step of this split against the other's: Q4_0 0.985 slow, 0.967 fast;
// Q4_K 0.975, 0.963; Q4_K_M 0.990, 0.975; Q8_0 0.987 slow, 0.990 and 1.045
// fast (29 and 10 rounds). A worker that is late still leaves the caller its
// task; one descheduled mid-task is waited for, as it is with a big task.
// This split holds on every CPU; it was measured on AMD only.
#define STREAM_ROWS 8
//
// A copy in stripes for as many threads as the pool has (kernels.h) splits a
// product of up to STREAM_ROWS tokens by its stripes: task t reads thread t's
// two (el_matmul_many_isa hands each thread its own, fused_part_task).
static int job_split(matmul_job *j, int threads) {
    if (j->d <= 0) return 0;
    int unit = j->packed_rows ? 32 : 4;  // whole packed pairs, or whole micro-tiles
    int units = (j->d + unit - 1) / unit;
    j->big_tasks = j->big_rows = 0;
    j->by_stripe = j->stripes == threads && j->n <= STREAM_ROWS;
    if (j->by_stripe) return threads;
    if (threads > 1 && j->n <= STREAM_ROWS) {
        int per = (units + threads - 1) / threads;
        j->rows_per_task = per * unit;
        return (units + per - 1) / per;
    }
    if (threads > 1 && units >= 16 * threads) {
        int big = units * 3 / (4 * threads), small = 4 * threads;
        int per = (units - threads * big + small - 1) / small;  // units per small task
        j->big_tasks = threads, j->big_rows = big * unit, j->rows_per_task = per * unit;
        return threads + (units - threads * big + per - 1) / per;
    }
    // Enough tasks for load balance, each big enough to amortise the hand-out.
    int tasks = threads == 1 ? 1 : threads * 4;
    j->rows_per_task = (units + tasks - 1) / tasks * unit;
    return (j->d + j->rows_per_task - 1) / j->rows_per_task;
}

#define MAX_FUSED 4

typedef struct {
    matmul_job jobs[MAX_FUSED];
    int first[MAX_FUSED + 1];  // task index where each job's tasks start
    int count;
    _Atomic uint64_t parts;  // fused_part_task: the stripe threads' shares taken
} fused_job;

static void fused_task(void *ctx, int t, int n_tasks) {
    fused_job *f = ctx;
    int i = 0;
    while (t >= f->first[i + 1]) i++;
    matmul_task(&f->jobs[i], t - f->first[i], n_tasks);
}

// Products all split by their stripes (job_split), fused: task t does one
// stripe thread's share of every product in turn, the share of the thread's
// pool slot if no other task took it first. Each thread then reads its own
// two stripes at every decode step, on from where its last product ended,
// unless a worker came late and the caller took its share.
static void fused_part_task(void *ctx, int t, int n_tasks) {
    (void)t;
    fused_job *f = ctx;
    int part = el_pool_slot() % n_tasks;
    uint64_t bit = 1ull << part;
    while (atomic_fetch_or_explicit(&f->parts, bit, memory_order_relaxed) & bit) {  // taken: the first free one
        uint64_t left = ~atomic_load_explicit(&f->parts, memory_order_relaxed) & ((1ull << n_tasks) - 1);
        part = __builtin_ctzll(left);  // one is left: n_tasks tasks take n_tasks shares
        bit = 1ull << part;
    }
    for (int i = 0; i < f->count; i++) matmul_task(&f->jobs[i], part, n_tasks);
}

// The quantized activation rows and the panel of a product, in one buffer
// that the calling thread keeps for its next products (grown to the largest,
// freed when the thread exits). Taken and freed per product, the two ~1 MB
// buffers of a 128-token product made glibc grow and trim its heap at every
// product: 978 brk calls in 2 s of every layer's products against 12, and
// pages faulted in and zeroed again each time. Every layer's seven products of
// the TinyLlama-shaped model at Q8_0, 128 tokens, 2 threads, AMD EPYC Zen 5
// (2026-12-07): 1330-1367 GOP/s with the two allocations, 1444-1464 before
// the panel (one allocation), while each product alone ran as fast in both.
// A nested product on the same thread (its buffer busy) or one above
// ACT_BUF_KEEP takes its own allocation, as before.
#define ACT_BUF_KEEP ((size_t)64 << 20)
typedef struct {
    char *p;
    size_t cap;
    int busy;
} act_buf;
static pthread_key_t act_buf_key;
static int act_buf_key_ok;
static pthread_once_t act_buf_once = PTHREAD_ONCE_INIT;
static void act_buf_destroy(void *v) {
    act_buf *b = v;
    el_free_aligned(b->p);
    free(b);
}
static void act_buf_key_init(void) { act_buf_key_ok = pthread_key_create(&act_buf_key, act_buf_destroy) == 0; }

// n bytes, 64-byte aligned; *held says whether they are the thread's buffer (act_buf_give).
static char *act_buf_take(size_t n, act_buf **held) {
    *held = NULL;
    pthread_once(&act_buf_once, act_buf_key_init);
    act_buf *b = act_buf_key_ok && n <= ACT_BUF_KEEP ? pthread_getspecific(act_buf_key) : NULL;
    if (!b && act_buf_key_ok && n <= ACT_BUF_KEEP && (b = calloc(1, sizeof *b)) && pthread_setspecific(act_buf_key, b)) {
        free(b);
        b = NULL;
    }
    if (!b || b->busy) return el_malloc_aligned(n);
    if (b->cap < n) {
        el_free_aligned(b->p);
        b->cap = 0;
        if (!(b->p = el_malloc_aligned(n))) return NULL;
        b->cap = n;
    }
    b->busy = 1;
    *held = b;
    return b->p;
}

static void act_buf_give(char *p, act_buf *held) {
    if (held)
        held->busy = 0;
    else
        el_free_aligned(p);
}

void el_matmul_many_isa(el_pool *pool, int count, float *const *outs, const float *x, const el_tensor *const *Ws, int n,
                        el_isa isa) {
    if (count > MAX_FUSED) {
        for (int i = 0; i < count; i++) el_matmul_many_isa(pool, 1, outs + i, x, Ws + i, n, isa);
        return;
    }
    fused_job f = {.count = count};
    int shared = 1;  // every product reads the same quantized activations
    for (int i = 0; i < count; i++) {
        job_init(&f.jobs[i], outs[i], x, Ws[i], n, isa);
        shared = shared && f.jobs[i].gemm && f.jobs[i].act_type == f.jobs[0].act_type && f.jobs[i].k == f.jobs[0].k;
    }
    if (!shared && count > 1) {
        for (int i = 0; i < count; i++) el_matmul_many_isa(pool, 1, outs + i, x, Ws + i, n, isa);
        return;
    }
    matmul_job *j0 = &f.jobs[0];
    char *act = NULL, *panel = NULL;
    act_buf *held = NULL;
    const void *acts = x;
    if (j0->gemm && j0->act_type != EL_DTYPE_F32) {
        // a panel after the rows, once for every task, where a product's kernel reads one over these
        // n tokens (Q4_0's kernel reads up to 8 tokens from the rows)
        int wants = 0;
        for (int i = 0; i < count; i++)
            wants |= f.jobs[i].panel_gemm && n >= 2 && (n > 8 || f.jobs[i].W->dtype != EL_DTYPE_Q4_0);
        size_t rows = ((size_t)n * j0->ldx + 63) & ~(size_t)63, bytes = rows + (wants ? el_act_panel_bytes(j0->k, n) : 0);
        act = act_buf_take(bytes, &held);
        if (!act && wants) act = act_buf_take(rows, &held), wants = 0;  // no room for a panel: the rows' kernels
        if (act && wants) panel = act + rows;
        if (act) {
            // 8 tasks, or from 4 rows on one a thread (a few decode rows: the others would wait)
            int per = n > 8 ? (n + 7) / 8 : n < 4 ? n : (n + el_pool_size(pool) - 1) / el_pool_size(pool);
            quant_job q = {x, act, j0->k, n, j0->act_type, per, j0->ldx, panel};
            el_pool_run(pool, quant_task, &q, (n + q.rows_per_task - 1) / q.rows_per_task);
            acts = act;
        } else {
            for (int i = 0; i < count; i++)  // out of memory: the row-by-row path needs none
                f.jobs[i].gemm = NULL, f.jobs[i].runs = NULL, f.jobs[i].stripes = 0;
        }
    }
    f.first[0] = 0;
    int by_stripe = 1;
    for (int i = 0; i < count; i++) {
        f.jobs[i].act = acts;
        f.jobs[i].panel = f.jobs[i].panel_gemm ? panel : NULL;
        f.first[i + 1] = f.first[i] + job_split(&f.jobs[i], el_pool_size(pool));
        by_stripe = by_stripe && f.jobs[i].by_stripe;
    }
    if (by_stripe)
        el_pool_run(pool, fused_part_task, &f, el_pool_size(pool));
    else
        el_pool_run(pool, fused_task, &f, f.first[count]);
    act_buf_give(act, held);
}

void el_matmul_isa(el_pool *pool, float *out, const float *x, const el_tensor *W, int n, el_isa isa) {
    el_matmul_many_isa(pool, 1, &out, x, &W, n, isa);
}

void el_matmul(el_pool *pool, float *out, const float *x, const el_tensor *W, int n) {
    el_matmul_isa(pool, out, x, W, n, EL_ISA_BEST);  // the best level this CPU (and EL_ISA) allows
}

void el_matmul_many(el_pool *pool, int count, float *const *outs, const float *x, const el_tensor *const *Ws, int n) {
    el_matmul_many_isa(pool, count, outs, x, Ws, n, EL_ISA_BEST);
}
