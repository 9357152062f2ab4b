// The transformer layer, once: forward/backward pairs per op and the layer
// that inference and training both run (shapes and contracts in
// include/edgellm/layer.h). Read el_layer_forward top to bottom: it is the
// model; el_layer_backward below it is the same steps in reverse.
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/kernels.h"
#include "edgellm/layer.h"

// ---------------------------------------------------------------- embedding

void el_embedding_forward(float *x, const int *tokens, int n, const el_tensor *E) {
    int dim = (int)E->ne[0];
    for (int i = 0; i < n; i++) el_tensor_row_f32(E, tokens[i], x + (size_t)i * dim);
}

void el_embedding_backward(float *dE, const float *dx, const int *tokens, int n, int dim) {
    for (int i = 0; i < n; i++) {
        float *d = dE + (size_t)tokens[i] * dim;
        const float *g = dx + (size_t)i * dim;
        for (int j = 0; j < dim; j++) d[j] += g[j];
    }
}

// ---------------------------------------------------------------- RMSNorm

void el_rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, int n, int d, float eps) {
    for (int i = 0; i < n; i++) {
        float r = el_rmsnorm(y + (size_t)i * d, x + (size_t)i * d, w, d, eps);
        if (rstd) rstd[i] = r;
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

// ---------------------------------------------------------------- rotary embedding

void el_rope_forward(float *x, int heads, int hd, int pos, const float *inv_freq, el_rope_type type) {
    if (type == EL_ROPE_NEOX)
        el_rope_neox(x, heads, hd, pos, inv_freq);
    else
        el_rope(x, heads, hd, pos, inv_freq);
}

// R(θ)ᵀ = R(-θ): the angle (float)(-pos)·f is exactly -(pos·f)
void el_rope_backward(float *dx, int heads, int hd, int pos, const float *inv_freq, el_rope_type type) {
    el_rope_forward(dx, heads, hd, -pos, inv_freq, type);
}

// ---------------------------------------------------------------- attention

#define ATTN_ROWS_PER_TASK 16

static inline uint8_t *kv_at(const el_kv_view *w, int kv, int h, int p) {
    return w->blocks[kv][p / w->block] + w->off[kv] + (size_t)h * w->head_stride + (size_t)(p % w->block) * w->pos_stride;
}

// The end of the block that holds position p, or end if that comes first.
static int block_end(const el_kv_view *w, int p, int end) {
    int e = (p / w->block + 1) * w->block;
    return e < end ? e : end;
}

// Asks for share i of `of` of n cached rows of `bytes` each, stride bytes
// apart, from row on, into L1: every line its part touches (a row need not
// start on a line; neighbouring shares may both ask for a line they split).
// Rows that follow each other (a session's cache, a training context of one
// kv head) are one run, and shares split its bytes; otherwise they split the
// rows.
static void prefetch_share(const uint8_t *row, int n, size_t stride, size_t bytes, int i, int of) {
    if (!bytes || n <= 0) return;
    if (stride == bytes) {
        size_t all = bytes * (size_t)n, lo = all * (size_t)i / (size_t)of, hi = all * (size_t)(i + 1) / (size_t)of;
        if (hi <= lo) return;
        uintptr_t a = ((uintptr_t)row + lo) & ~(uintptr_t)63, b = (uintptr_t)row + hi;
        for (; a < b; a += 64) __builtin_prefetch((const void *)a, 0, 3);
        return;
    }
    for (int r = (int)((long)n * i / of); r < (int)((long)n * (i + 1) / of); r++) {
        const uint8_t *x = row + (size_t)r * stride;
        for (size_t l = 0; l < bytes; l += 64) __builtin_prefetch(x + l, 0, 3);
        __builtin_prefetch(x + bytes - 1, 0, 3);
    }
}

// The attention of one query row's heads [h0, h1), all of kv head c's group,
// against positions [start, end):
//   out[h] = softmax(q[h] · K[start..end)ᵀ / √hd) · V[start..end)
// (out[h], q[h]: hd floats at h·hd). The keys, then the values, are read
// block by block in position order, each block by every head in turn. Each
// head's sums are the ones a head on its own would make.
//
// In a decode step the cache's rows come from memory (the layer's weights
// streamed through the caches since the last step): a kv head's keys are one
// run, its values another (forward.c), on 4 KiB pages, at each of which the
// hardware prefetcher starts over (at hd 64 in f32 a page is one block of
// EL_KV_BLOCK rows). So the lines of the block's values, and of the next
// block's keys, are asked for by hand while the keys are scored, a share of
// them before each head's scores. A core has only so many misses in flight
// (the rows came at ~15-18 GB/s a core here), and asked for all at once, a
// block's before its heads or the whole run's up front, they kept the core
// waiting where it could have scored: the attention took as long as with no
// fetching by hand at all. Spread, the fetching and the scoring overlap:
// the attention of a decode row at positions 128..159 of the TinyLlama-shaped
// model, Q4_0, 2 threads, AMD EPYC Zen 5 (2026-12-07), 17.3-19.6 -> 12.2-13.2
// µs a layer (six runs in turn, both bandwidth states; the values' pass went
// from 3.5-3.8 to 1.5-1.6 µs a kv head, what it takes on rows in cache). (A
// first version that fetched each block whole cut 10-16% from before that:
// 31.8-33.1 -> 27.8-28.6 µs a layer at Q8_0, 29.0-31.6 -> 25.0-28.4 at Q4_K.)
//
// scores: (h1 - h0) x (end - start) floats of scratch. lse (NULL: not
// wanted): lse[h] = log Σ exp(q[h]·K/√hd), from the softmax's largest weight
// (lse = max - log P_max).
static void attend(float *out, float *lse, float *scores, const float *q, const el_kv_view *w, int c, int h0, int h1,
                   int start, int end, int hd) {
    float scale = 1.0f / sqrtf((float)hd);
    size_t n = (size_t)(end - start), row = el_kv_row_bytes(w->dtype, hd);
    for (int p = start; p < end;) {
        int e = block_end(w, p, end), e2 = e < end ? block_end(w, e, end) : e, G = h1 - h0;
        const uint8_t *keys = kv_at(w, 0, c, p), *values = kv_at(w, 1, c, p);
        const uint8_t *next = e < end ? kv_at(w, 0, c, e) : NULL;  // the next block's keys
        for (int h = h0; h < h1; h++) {
            prefetch_share(values, e - p, w->pos_stride, row, h - h0, G);
            if (next) prefetch_share(next, e2 - e, w->pos_stride, row, h - h0, G);
            el_attn_scores_kv(w->dtype, scores + (size_t)(h - h0) * n + (p - start), q + (size_t)h * hd, keys,
                              w->pos_stride, e - p, hd, scale);
        }
        p = e;
    }
    for (int h = h0; h < h1; h++) {
        float *sc = scores + (size_t)(h - h0) * n;
        size_t top = 0;
        if (lse)
            for (size_t i = 1; i < n; i++)
                if (sc[i] > sc[top]) top = i;
        float max = sc[top];
        el_softmax(sc, (int)n);
        if (lse) lse[h] = max - logf(sc[top]);
        memset(out + (size_t)h * hd, 0, (size_t)hd * sizeof(float));
    }
    for (int p = start; p < end;) {
        int e = block_end(w, p, end);
        for (int h = h0; h < h1; h++)
            el_attn_mix_kv(w->dtype, out + (size_t)h * hd, scores + (size_t)(h - h0) * n + (p - start),
                           kv_at(w, 1, c, p), w->pos_stride, e - p, hd);
        p = e;
    }
}

typedef struct {
    int n, H, KVH, hd, window;
    const int *pos;  // NULL: row % T
    int T;
    const float *q;
    float *out, *lse;
    const float *k, *v;  // training contexts (kv NULL)
    void (*kv)(const void *ctx, int row, el_kv_view *view);
    const void *kv_ctx;
    int heads_per_task, rows_per_task, row_blocks;
    // Panels: up to EL_ATTN_PANEL rows of one sequence at consecutive positions,
    // run on the tiled kernel (one task per panel and kv head); the other
    // rows, by index in `rest`, go row by row (rest NULL: every row does).
    int n_panels, n_rest;
    const int *panels;  // panel i: first row panels[2i], rows panels[2i + 1]
    const int *rest;
    atomic_int failed;  // a task could not get its buffers
} attn_job;

// Row r's keys and values: its session's cache, or its training context
// (kb, vb hold the context's first rows for the view to point at).
static void row_view(const attn_job *j, int r, el_kv_view *w, uint8_t **kb, uint8_t **vb) {
    if (j->kv) {
        j->kv(j->kv_ctx, r, w);
        return;
    }
    size_t kvd = (size_t)j->KVH * j->hd, first = (size_t)(r / j->T) * j->T;
    *kb = (uint8_t *)(j->k + first * kvd);
    *vb = (uint8_t *)(j->v + first * kvd);
    *w = (el_kv_view){EL_DTYPE_F32, j->T, kvd * sizeof(float), (size_t)j->hd * sizeof(float), {kb, vb}, {0, 0}};
}

static int row_pos(const attn_job *j, int r) { return j->pos ? j->pos[r] : r % j->T; }

// Rows idx[i] (idx NULL: row i) for i in [i0, i1), query heads [h0, h1) of
// one kv head's group, row by row: a row's keys and values are read once,
// block by block, by the task's heads together (attend; a decode row's task
// takes the whole group). (A task per query
// head had each thread fetch every kv head's rows from memory again: 8-row
// steps of the TinyLlama-shaped model over positions 0..199 were 5% slower,
// A/B within one process.) Returns -1 when the score buffer was not there.
static int attn_rows(const attn_job *j, const int *idx, int i0, int i1, int h0, int h1) {
    int hd = j->hd, qd = j->H * hd, group = j->H / j->KVH;
#define ROW(i) (idx ? idx[i] : (i))
    int max_end = 0;
    for (int i = i0; i < i1; i++)
        if (row_pos(j, ROW(i)) + 1 > max_end) max_end = row_pos(j, ROW(i)) + 1;
    size_t floats = (size_t)(h1 - h0) * (size_t)max_end;
    float stack[8192];  // a group of 8 heads up to 1024 positions
    float *scores = floats <= 8192 ? stack : malloc(floats * sizeof(float));
    if (!scores) return -1;
    for (int i = i0; i < i1; i++) {
        int r = ROW(i);
        el_kv_view w;
        uint8_t *kb, *vb;
        row_view(j, r, &w, &kb, &vb);
        int end = row_pos(j, r) + 1;  // positions this row may attend to
        // sliding window (Mistral): only the latest window positions, itself included
        int start = j->window && end > j->window ? end - j->window : 0;
        attend(j->out + (size_t)r * qd, j->lse ? j->lse + (size_t)r * j->H : NULL, scores, j->q + (size_t)r * qd, &w,
               h0 / group, h0, h1, start, end, hd);
    }
#undef ROW
    if (scores != stack) free(scores);
    return 0;
}

// A panel's keys and values are gathered as f32 up to this many floats (K,
// Kᵀ and V together: 8 MiB a task); a panel that would need more runs row by row.
#define ATTN_PANEL_MAX_FLOATS ((size_t)2 << 20)

// One panel's rows (positions p0 .. p0+nq-1 of one sequence) for the query
// heads of kv head c: the keys and values they see, gathered once as f32 for
// the group's heads (the keys transposed once too), then the tiled kernel
// head by head. Row by row when the
// gathered rows would be too large or their memory is not there.
static int attn_panel(const attn_job *j, int panel, int c) {
    int r0 = j->panels[2 * panel], nq = j->panels[2 * panel + 1], p0 = row_pos(j, r0), hd = j->hd;
    int group = j->H / j->KVH, qd = j->H * hd;
    int k0 = j->window && p0 + 1 > j->window ? p0 + 1 - j->window : 0, nk = p0 + nq - k0;
    size_t ktf = el_attn_causal_kt_floats(nk, hd), kv_floats = ktf + 2 * (size_t)nk * hd + 32;
    size_t floats = kv_floats + el_attn_causal_work(nk, hd, 1);
    float *kt = kv_floats <= ATTN_PANEL_MAX_FLOATS ? malloc(floats * sizeof(float)) : NULL;
    if (!kt) return attn_rows(j, NULL, r0, r0 + nq, c * group, (c + 1) * group);
    float *vf = kt + ktf, *kf = vf + (size_t)nk * hd + 32, *work = kf + (size_t)nk * hd;
    el_kv_view w;
    uint8_t *kb, *vb;
    row_view(j, r0, &w, &kb, &vb);
    for (int s = 0; s < nk; s++) {
        el_kv_load(w.dtype, kf + (size_t)s * hd, kv_at(&w, 0, c, k0 + s), hd);
        el_kv_load(w.dtype, vf + (size_t)s * hd, kv_at(&w, 1, c, k0 + s), hd);
    }
    el_attn_causal_kt(kt, kf, nk, hd);  // once for the group's heads
    memset(vf + (size_t)nk * hd, 0, 32 * sizeof(float));  // the tiles read V up to 31 floats past its end
    float scale = 1.0f / sqrtf((float)hd);
    for (int h = c * group; h < (c + 1) * group; h++)
        el_attn_causal_isa(j->out + (size_t)r0 * qd + (size_t)h * hd, (size_t)qd, j->lse ? j->lse + (size_t)r0 * j->H + h : NULL,
                           (size_t)j->H, j->q + (size_t)r0 * qd + (size_t)h * hd, (size_t)qd, nq, p0, NULL, kt, vf, k0, nk,
                           hd, j->window, scale, work, EL_ISA_BEST);
    free(kt);
    return 0;
}

// Tasks: first the panels, one per panel and kv head, the last panels (the
// most keys) first; then the other rows, by kv head (or part of its group)
// and block of rows.
static void attn_task(void *ctx, int task, int n_tasks) {
    (void)n_tasks;
    attn_job *j = ctx;
    int fail;
    if (task < j->n_panels * j->KVH) {
        fail = attn_panel(j, j->n_panels - 1 - task / j->KVH, task % j->KVH);
    } else {
        task -= j->n_panels * j->KVH;
        int n = j->rest ? j->n_rest : j->n, c = task / j->row_blocks, i0 = task % j->row_blocks * j->rows_per_task;
        int i1 = i0 + j->rows_per_task < n ? i0 + j->rows_per_task : n;
        fail = attn_rows(j, j->rest, i0, i1, c * j->heads_per_task, (c + 1) * j->heads_per_task);
    }
    if (fail) atomic_store(&j->failed, 1);
}

// The sequence a row belongs to: its cache (the view's block table and
// offset), or its training context.
typedef struct {
    const void *table;
    size_t at;
} seq_id;

static seq_id sequence_of(const attn_job *j, int r) {
    if (!j->kv) return (seq_id){NULL, (size_t)(r / j->T)};
    el_kv_view w;
    j->kv(j->kv_ctx, r, &w);
    return (seq_id){w.blocks[0], w.off[0]};
}

static int in_sequence(const attn_job *j, seq_id s, int r) {
    seq_id x = sequence_of(j, r);
    return x.table == s.table && x.at == s.at;
}

// Runs of at least ATTN_RUN_MIN rows of one sequence at consecutive
// positions (a prompt, a training context) go to the tiled kernel in panels
// of EL_ATTN_PANEL rows, where it runs (AVX-512); a last part of fewer than
// ATTN_PANEL_MIN rows, shorter runs, and every row elsewhere go row by row.
// A/B in one process, one sequence of the TinyLlama shape's attention (32
// heads, 4 kv heads, hd 64), 2 threads, median of 15-31, the tiled path's
// speed over the row path's: 16 rows 0.94-1.04x, 32 1.4-1.5x, 48 1.3x, 64
// 1.7-1.9x, 128 2.7x, 512 3.3x, 2048 4.6x (the first tiled kernel, keys as
// the broadcast operand: 16 rows 0.41x, 32 0.75x, 64 1.1x). A last part of
// 16..35 rows still goes to the tiles: late in a run of 32 or more, its cost
// is in its keys, which the tiles handle well.
#define ATTN_RUN_MIN 32
#define ATTN_PANEL_MIN 16

static int attn_run(el_pool *pool, attn_job *j) {
    int *panels = NULL, *rest = NULL;
    j->n_panels = 0, j->n_rest = 0, j->panels = NULL, j->rest = NULL;
    if (j->n >= ATTN_RUN_MIN && el_attn_causal_tiled(EL_ISA_BEST)) {
        panels = malloc(((size_t)j->n / ATTN_PANEL_MIN + 1) * 2 * sizeof(int));  // more than enough
        rest = malloc((size_t)j->n * sizeof(int));
    }
    if (panels && rest) {  // (without them, every row goes row by row)
        for (int r = 0, e; r < j->n; r = e) {
            seq_id sr = sequence_of(j, r);
            for (e = r + 1; e < j->n && row_pos(j, e) == row_pos(j, e - 1) + 1 && in_sequence(j, sr, e); e++) {}
            if (e - r < ATTN_RUN_MIN) {
                for (int i = r; i < e; i++) rest[j->n_rest++] = i;
                continue;
            }
            // panels of EL_ATTN_PANEL rows; a short last part joins the rows
            int len = e - r, full = len / EL_ATTN_PANEL, tail = len % EL_ATTN_PANEL;
            for (int p = 0; p <= full; p++) {
                int rows = p < full ? EL_ATTN_PANEL : tail;
                if (rows >= ATTN_PANEL_MIN) {
                    panels[2 * j->n_panels] = r + p * EL_ATTN_PANEL, panels[2 * j->n_panels + 1] = rows;
                    j->n_panels++;
                } else {
                    for (int i = r + p * EL_ATTN_PANEL; i < r + p * EL_ATTN_PANEL + rows; i++) rest[j->n_rest++] = i;
                }
            }
        }
        j->panels = panels, j->rest = rest;
    }
    int n = j->rest ? j->n_rest : j->n;
    // a task: as much work as 16 rows of one head; the whole group, or the
    // largest part of it (a divisor) that still makes two tasks a thread
    int group = j->H / j->KVH, hpt = group;
    for (; hpt > 1; hpt--) {
        int rows = ATTN_ROWS_PER_TASK / hpt > 0 ? ATTN_ROWS_PER_TASK / hpt : 1;
        if (group % hpt == 0 && j->KVH * (group / hpt) * ((n + rows - 1) / rows) >= 2 * el_pool_size(pool)) break;
    }
    j->heads_per_task = hpt;
    j->rows_per_task = ATTN_ROWS_PER_TASK / hpt > 0 ? ATTN_ROWS_PER_TASK / hpt : 1;
    j->row_blocks = (n + j->rows_per_task - 1) / j->rows_per_task;
    atomic_init(&j->failed, 0);
    el_pool_run(pool, attn_task, j, j->n_panels * j->KVH + j->row_blocks * (j->H / hpt));
    free(panels), free(rest);
    return atomic_load(&j->failed) ? -1 : 0;
}

void el_attention_forward(el_pool *pool, float *out, float *lse, const float *q, const float *k, const float *v, int B,
                          int T, int H, int KVH, int hd, int window) {
    attn_job j = {.n = B * T, .H = H, .KVH = KVH, .hd = hd, .window = window, .T = T, .q = q, .out = out, .lse = lse,
                  .k = k, .v = v};
    attn_run(pool, &j);  // T is at most the model's context; a failure leaves out unwritten (tests only)
}

// Backward with the probabilities recomputed from lse (never stored: they
// would grow as layers·heads·T²). With dP = dO·Vᵀ and D = rowsum(dP ⊙ P) =
// dO·O (O the forward's output), dS = P ⊙ (dP - D), and
//   dQ = dS·K/√hd,  dK = dSᵀ·Q/√hd,  dV = Pᵀ·dO.
// Two passes, so that every output row has one writer: per (head, block of
// query rows) for dQ, per (kv head, block of key rows) for dK and dV, summing
// over the group's heads and the rows that attend to each key. A block's
// products are tiles of at most ATTN_BWD_ROWS x T for f32 BLAS; entries
// outside the causal window get P = dS = 0.
#define ATTN_BWD_ROWS 64

typedef struct {
    float *dq, *dk, *dv, *D;
    const float *dout, *q, *k, *v, *out, *lse;
    int B, T, H, KVH, hd, window, blocks;  // blocks: row blocks per sequence
    int pass;                              // 0: dQ (and D), 1: dK and dV
    atomic_int failed;
} attn_bwd_job;

// Does query position t attend to key position p?
static int sees(const attn_bwd_job *j, int t, int p) { return p <= t && (!j->window || t - p < j->window); }

// dQ of query positions t0..t1-1 of sequence b, head h (S, dP: m x T scratch)
static void dq_block(const attn_bwd_job *j, int h, int b, int t0, int t1, float *S, float *dP) {
    int T = j->T, hd = j->hd, qd = j->H * hd, kvd = j->KVH * hd, m = t1 - t0;
    int p0 = j->window && t0 + 1 > j->window ? t0 + 1 - j->window : 0, cnt = t1 - p0;  // the keys any row reads
    size_t q0 = (size_t)(b * T + t0) * qd + (size_t)h * hd, k0 = (size_t)(b * T + p0) * kvd + (size_t)(h / (j->H / j->KVH)) * hd;
    float scale = 1.0f / sqrtf((float)hd);
    el_sgemm(0, 1, m, cnt, hd, scale, j->q + q0, qd, j->k + k0, kvd, 0, S, cnt);     // S = Q Kᵀ/√hd
    el_sgemm(0, 1, m, cnt, hd, 1.0f, j->dout + q0, qd, j->v + k0, kvd, 0, dP, cnt);  // dP = dO Vᵀ
    for (int i = 0; i < m; i++) {
        size_t r = (size_t)(b * T + t0 + i), at = r * j->H + h;
        float D = el_dot_f32(j->dout + q0 + (size_t)i * qd, j->out + q0 + (size_t)i * qd, hd), lse = j->lse[at];
        j->D[at] = D;
        float *s = S + (size_t)i * cnt, *dp = dP + (size_t)i * cnt;
        for (int c = 0; c < cnt; c++) s[c] = sees(j, t0 + i, p0 + c) ? expf(s[c] - lse) * (dp[c] - D) * scale : 0.0f;
    }
    el_sgemm(0, 0, m, hd, cnt, 1.0f, S, cnt, j->k + k0, kvd, 0, j->dq + q0, qd);  // dQ = dS K/√hd
}

// dK and dV of key positions p0..p1-1 of sequence b, kv head kvh, from every
// head of its group and every query row that reads them
static void dkv_block(const attn_bwd_job *j, int kvh, int b, int p0, int p1, float *S, float *P) {
    int T = j->T, hd = j->hd, qd = j->H * hd, kvd = j->KVH * hd, m = p1 - p0, group = j->H / j->KVH;
    int t1 = j->window && p1 - 1 + j->window < T ? p1 - 1 + j->window : T, cnt = t1 - p0;  // the rows that read any
    size_t k0 = (size_t)(b * T + p0) * kvd + (size_t)kvh * hd;
    float scale = 1.0f / sqrtf((float)hd);
    for (int h = kvh * group; h < (kvh + 1) * group; h++) {
        size_t q0 = (size_t)(b * T + p0) * qd + (size_t)h * hd;
        el_sgemm(0, 1, m, cnt, hd, scale, j->k + k0, kvd, j->q + q0, qd, 0, S, cnt);     // Sᵀ = K Qᵀ/√hd
        el_sgemm(0, 1, m, cnt, hd, 1.0f, j->v + k0, kvd, j->dout + q0, qd, 0, P, cnt);  // dPᵀ = V dOᵀ
        for (int i = 0; i < m; i++) {
            float *s = S + (size_t)i * cnt, *pw = P + (size_t)i * cnt;
            for (int c = 0; c < cnt; c++) {
                size_t at = (size_t)(b * T + p0 + c) * j->H + h;
                float pr = sees(j, p0 + c, p0 + i) ? expf(s[c] - j->lse[at]) : 0.0f;
                s[c] = pr * (pw[c] - j->D[at]) * scale;
                pw[c] = pr;
            }
        }
        float beta = h == kvh * group ? 0.0f : 1.0f;
        el_sgemm(0, 0, m, hd, cnt, 1.0f, S, cnt, j->q + q0, qd, beta, j->dk + k0, kvd);     // dK += dSᵀ Q/√hd
        el_sgemm(0, 0, m, hd, cnt, 1.0f, P, cnt, j->dout + q0, qd, beta, j->dv + k0, kvd);  // dV += Pᵀ dO
    }
}

// One (head or kv head, sequence, block of rows) of a pass.
static void attn_bwd_task(void *ctx, int task, int n_tasks) {
    (void)n_tasks;
    attn_bwd_job *j = ctx;
    int head = task / (j->B * j->blocks), b = task / j->blocks % j->B, r0 = task % j->blocks * ATTN_BWD_ROWS;
    int r1 = r0 + ATTN_BWD_ROWS < j->T ? r0 + ATTN_BWD_ROWS : j->T;
    float *S = malloc(2 * (size_t)ATTN_BWD_ROWS * j->T * sizeof(float));
    if (!S) {
        atomic_store(&j->failed, 1);
        return;
    }
    float *S2 = S + (size_t)ATTN_BWD_ROWS * j->T;
    if (j->pass)
        dkv_block(j, head, b, r0, r1, S, S2);
    else
        dq_block(j, head, b, r0, r1, S, S2);
    free(S);
}

int el_attention_backward(el_pool *pool, float *dq, float *dk, float *dv, const float *dout, const float *q,
                          const float *k, const float *v, const float *out, const float *lse, int B, int T, int H, int KVH,
                          int hd, int window, float *D) {
    attn_bwd_job j = {.dq = dq, .dk = dk, .dv = dv, .D = D, .dout = dout, .q = q, .k = k, .v = v, .out = out, .lse = lse,
                      .B = B, .T = T, .H = H, .KVH = KVH, .hd = hd, .window = window,
                      .blocks = (T + ATTN_BWD_ROWS - 1) / ATTN_BWD_ROWS};
    atomic_init(&j.failed, 0);
    el_pool_run(pool, attn_bwd_task, &j, H * B * j.blocks);  // also fills D, which the second pass reads
    j.pass = 1;
    el_pool_run(pool, attn_bwd_task, &j, KVH * B * j.blocks);
    return atomic_load(&j.failed) ? -1 : 0;
}

// ---------------------------------------------------------------- SwiGLU

void el_swiglu_forward(float *h, const float *g, const float *u, int n) { el_swiglu(h, g, u, n); }

// silu(g) = g σ(g);  silu'(g) = σ(g) (1 + g (1 - σ(g)))
void el_swiglu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, int n) {
    for (int i = 0; i < n; i++) {
        float sg = 1.0f / (1.0f + expf(-g[i]));
        du[i] = dh[i] * g[i] * sg;
        dg[i] = dh[i] * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
    }
}

// ---------------------------------------------------------------- frozen projections

// Weights other than f32 are dequantized a tile of rows at a time into
// scratch and multiplied by BLAS: the dequantization is O(out·in) per call
// against O(n·out·in) for the product.
#define TILE_FLOATS (1u << 20)

size_t el_proj_scratch_floats(const el_tensor *W) {
    if (W->dtype == EL_DTYPE_F32) return 0;
    size_t in = (size_t)W->ne[0], out = (size_t)W->ne[1];
    size_t rows = TILE_FLOATS / in;
    if (rows < 16) rows = 16;
    if (rows > out) rows = out;
    return rows * in;
}

typedef struct {
    const el_tensor *W;
    float *tile;
    int r0, rows, per_task;
} dequant_job;

static void dequant_task(void *ctx, int i, int n) {
    (void)n;
    const dequant_job *j = ctx;
    int a = i * j->per_task, b = a + j->per_task < j->rows ? a + j->per_task : j->rows;
    int in = (int)j->W->ne[0];
    for (int r = a; r < b; r++) el_tensor_row_f32(j->W, j->r0 + r, j->tile + (size_t)r * in);
}

// Dequantizes rows [r0, r0+rows) of W into tile across the pool. (This only
// pays because BLAS runs single-threaded inside our pool: with OpenBLAS's own
// workers spinning between products, the same split made an f16 base 3x slower.)
static void dequant_rows(el_pool *pool, const el_tensor *W, int r0, int rows, float *tile) {
    int P = el_pool_size(pool);
    dequant_job j = {W, tile, r0, rows, (rows + P - 1) / P};
    el_pool_run(pool, dequant_task, &j, (rows + j.per_task - 1) / j.per_task);
}

// y[n, out] = x · Wᵀ with f32 BLAS
static void dense_forward(el_pool *pool, float *y, const float *x, const el_tensor *W, int n, float *scratch) {
    int in = (int)W->ne[0], out = (int)W->ne[1];
    if (W->dtype == EL_DTYPE_F32) {
        el_sgemm_par(pool, 0, 1, n, out, in, 1, x, in, W->data, in, 0, y, out);
        return;
    }
    int tile_rows = (int)(el_proj_scratch_floats(W) / (size_t)in);
    for (int r0 = 0; r0 < out; r0 += tile_rows) {
        int rows = out - r0 < tile_rows ? out - r0 : tile_rows;
        dequant_rows(pool, W, r0, rows, scratch);
        el_sgemm_par(pool, 0, 1, n, rows, in, 1, x, in, scratch, in, 0, y + r0, out);
    }
}

void el_proj_forward(el_pool *pool, int count, float *const *ys, const float *x, const el_tensor *const *Ws, int n,
                     int dense, float *scratch) {
    float *kys[8];
    const el_tensor *kws[8];
    int nk = 0;
    for (int i = 0; i < count; i++) {
        if (dense && !Ws[i]->packed) {
            dense_forward(pool, ys[i], x, Ws[i], n, scratch);
        } else if (nk < 8) {
            kys[nk] = ys[i];
            kws[nk++] = Ws[i];
        }
    }
    if (nk == 1)
        el_matmul(pool, kys[0], x, kws[0], n);
    else if (nk > 1)
        el_matmul_many(pool, nk, kys, x, kws, n);
}

void el_proj_backward(el_pool *pool, float *dx, const float *dy, const el_tensor *W, int n, float *scratch) {
    int in = (int)W->ne[0], out = (int)W->ne[1];
    if (W->dtype == EL_DTYPE_F32) {
        el_sgemm_par(pool, 0, 0, n, in, out, 1, dy, out, W->data, in, 1, dx, in);
        return;
    }
    int tile_rows = (int)(el_proj_scratch_floats(W) / (size_t)in);
    for (int r0 = 0; r0 < out; r0 += tile_rows) {
        int rows = out - r0 < tile_rows ? out - r0 : tile_rows;
        dequant_rows(pool, W, r0, rows, scratch);
        el_sgemm_par(pool, 0, 0, n, in, rows, 1, dy + r0, out, scratch, in, 1, dx, in);
    }
}

// ---------------------------------------------------------------- LoRA

void el_lora_forward(el_pool *pool, float *y, float *t, const float *x, const el_lora_mat *mt, float s, int n) {
    int r = mt->rank, in = mt->in, out = mt->out;
    if (t) {
        el_sgemm(0, 1, n, r, in, 1, x, in, mt->a, in, 0, t, r);
        el_sgemm_par(pool, 0, 1, n, out, r, s, t, r, mt->b, r, 1, y, out);
        return;
    }
    float buf[4096];  // rank <= 4096 (el_lora_load, el_lora_new): at least one row a chunk
    int chunk = 4096 / r;
    for (int i = 0; i < n; i += chunk) {
        int c = n - i < chunk ? n - i : chunk;
        el_sgemm(0, 1, c, r, in, 1, x + (size_t)i * in, in, mt->a, in, 0, buf, r);
        el_sgemm_par(pool, 0, 1, c, out, r, s, buf, r, mt->b, r, 1, y + (size_t)i * out, out);
    }
}

void el_lora_backward(el_pool *pool, float *dx, float *dA, float *dB, const float *dy, const float *x, const float *t,
                      const el_lora_mat *mt, float s, int n, float *tmp) {
    int r = mt->rank, in = mt->in, out = mt->out;
    el_sgemm(0, 0, n, r, out, 1, dy, out, mt->b, r, 0, tmp, r);        // tmp = dy B
    if (dB) el_sgemm(1, 0, out, r, n, s, dy, out, t, r, 1, dB, r);     // dB += s dyᵀ t
    if (dA) el_sgemm(1, 0, r, in, n, s, tmp, r, x, in, 1, dA, in);     // dA += s tmpᵀ x
    if (dx) el_sgemm_par(pool, 0, 0, n, in, r, s, tmp, r, mt->a, in, 1, dx, in);  // dx += s tmp A
}

// ---------------------------------------------------------------- the layer

// The row-wise steps between the products, over blocks of rows on the pool
// when a call is large enough to be worth the hand-out (a prefill, a training
// step, a batch of a few decode rows): serial, they left the other threads
// waiting for ~8% of prefill time, and ~7% of an 8-row worker step.
enum {
    ROWS_NORM_ATTN,
    ROWS_ROPE_KV,
    ROWS_RESID_NORM_FFN,
    ROWS_SWIGLU,
    ROWS_RESID,
    ROWS_SWIGLU_BACK,
    ROWS_NORM_FFN_BACK,
    ROWS_ROPE_BACK,
    ROWS_NORM_ATTN_BACK,
};
#define ROWS_PER_TASK 8

typedef struct {
    const el_layer_io *io;
    const el_layer_acts *a;
    const el_layer_grad *gr;
    float *x;  // forward: the rows; backward: their gradient
    int step;
    int per;  // rows a task
} rows_job;

static void rows_task(void *ctx, int task, int n_tasks) {
    const rows_job *j = ctx;
    const el_layer_io *io = j->io;
    const el_hparams *hp = &io->m->hp;
    const el_layer *L = &io->m->layers[io->layer];
    const el_layer_acts *a = j->a;
    const el_layer_grad *gr = j->gr;
    int dim = hp->dim, hd = hp->head_dim, qd = hp->n_heads * hd, kvd = hp->n_kv_heads * hd, ff = hp->ff;
    size_t D = (size_t)dim, Q = (size_t)qd, K = (size_t)kvd, F = (size_t)ff;
    int t0 = n_tasks == 1 ? 0 : task * j->per, t1 = n_tasks == 1 ? io->n : t0 + j->per;
    if (t1 > io->n) t1 = io->n;
    for (int t = t0; t < t1; t++) {
        float *x = j->x + t * D;
        switch (j->step) {
        case ROWS_NORM_ATTN: {
            if (a->x_in) memcpy(a->x_in + t * D, x, D * sizeof(float));
            float r = el_rmsnorm(a->xn1 + t * D, x, L->attn_norm.data, dim, hp->rms_eps);
            if (a->rstd1) a->rstd1[t] = r;
            break;
        }
        case ROWS_ROPE_KV: {
            int pos = io->pos[t];
            float *q = a->q + t * Q, *k = a->k + t * K, *v = a->v + t * K;
            if (hp->has_qkv_bias) {  // Qwen2 (frozen: they get no gradient)
                const float *bq = L->bq.data, *bk = L->bk.data, *bv = L->bv.data;
                for (int i = 0; i < qd; i++) q[i] += bq[i];
                for (int i = 0; i < kvd; i++) k[i] += bk[i], v[i] += bv[i];
            }
            if (hd <= EL_ROPE_MAX_HD) {  // one table for the row's queries and keys
                float c[EL_ROPE_MAX_HD / 2], s[EL_ROPE_MAX_HD / 2];
                int neox = hp->rope_type == EL_ROPE_NEOX;
                el_rope_table(c, s, hd / 2, pos, io->inv_freq);
                el_rope_rotate(q, hp->n_heads, hd, c, s, neox);
                el_rope_rotate(k, hp->n_kv_heads, hd, c, s, neox);
            } else {
                el_rope_forward(q, hp->n_heads, hd, pos, io->inv_freq, hp->rope_type);
                el_rope_forward(k, hp->n_kv_heads, hd, pos, io->inv_freq, hp->rope_type);
            }
            if (io->kv) {  // the new keys and values enter the row's cache
                el_kv_view w;
                io->kv(io->kv_ctx, t, &w);
                for (int g = 0; g < hp->n_kv_heads; g++) {
                    el_kv_store(w.dtype, kv_at(&w, 0, g, pos), k + (size_t)g * hd, hd);
                    el_kv_store(w.dtype, kv_at(&w, 1, g, pos), v + (size_t)g * hd, hd);
                }
            }
            break;
        }
        case ROWS_RESID_NORM_FFN: {
            el_add_f32(x, a->proj + t * D, dim);
            if (a->x_mid) memcpy(a->x_mid + t * D, x, D * sizeof(float));
            float r = el_rmsnorm(a->xn2 + t * D, x, L->ffn_norm.data, dim, hp->rms_eps);
            if (a->rstd2) a->rstd2[t] = r;
            break;
        }
        case ROWS_SWIGLU: el_swiglu(a->h + t * F, a->g + t * F, a->u + t * F, ff); break;
        case ROWS_RESID: el_add_f32(x, a->proj + t * D, dim); break;
        case ROWS_SWIGLU_BACK:
            el_swiglu_backward(gr->dg + t * F, gr->du + t * F, gr->dh + t * F, a->g + t * F, a->u + t * F, ff);
            break;
        case ROWS_NORM_FFN_BACK:
            el_rmsnorm_backward(x, NULL, gr->dxn + t * D, a->x_mid + t * D, L->ffn_norm.data, a->rstd2 + t, 1, dim);
            break;
        case ROWS_ROPE_BACK:  // (the biases pass the gradient through unchanged)
            el_rope_backward(gr->dq + t * Q, hp->n_heads, hd, io->pos[t], io->inv_freq, hp->rope_type);
            el_rope_backward(gr->dk + t * K, hp->n_kv_heads, hd, io->pos[t], io->inv_freq, hp->rope_type);
            break;
        case ROWS_NORM_ATTN_BACK:
            el_rmsnorm_backward(x, NULL, gr->dxn + t * D, a->x_in + t * D, L->attn_norm.data, a->rstd1 + t, 1, dim);
            break;
        }
    }
}

static void rows_run(rows_job *j, int step) {
    j->step = step;
    // up to ROWS_PER_TASK rows a task; from 4 rows on, about one task a thread
    int n = j->io->n, threads = el_pool_size(j->io->pool);
    j->per = n < 4 ? (n > 0 ? n : 1) : (n + threads - 1) / threads < ROWS_PER_TASK ? (n + threads - 1) / threads : ROWS_PER_TASK;
    el_pool_run(j->io->pool, rows_task, j, (n + j->per - 1) / j->per);  // one task runs inline
}

// y[n, out] += the adapters' products of x[n, in], segment by segment (no-op without adapters)
static void lora_rows(const el_layer_io *io, const el_layer_acts *a, int target, float *y, const float *x) {
    for (int i = 0; i < io->n_seg; i++) {
        int r0 = io->seg_start[i], r1 = io->seg_start[i + 1] < io->n ? io->seg_start[i + 1] : io->n;
        const el_lora_set *set = io->seg_lora[i];
        if (!set || r1 <= r0) continue;
        for (int k = 0; k < set->n; k++) {
            const el_lora_mat *mt = el_lora_get(set->lora[k], io->layer, target);
            if (!mt) continue;
            float s = set->scale[k] * set->lora[k]->alpha / (float)mt->rank;
            float *t = k == 0 && a->t[target] ? a->t[target] + (size_t)r0 * mt->rank : NULL;
            el_lora_forward(io->pool, y + (size_t)r0 * mt->out, t, x + (size_t)r0 * mt->in, mt, s, r1 - r0);
        }
    }
}

int el_layer_forward(const el_layer_io *io, el_layer_acts *a, float *x) {
    const el_hparams *hp = &io->m->hp;
    const el_layer *L = &io->m->layers[io->layer];
    int n = io->n;
    rows_job rj = {io, a, NULL, x, 0, 0};

    // attention block
    rows_run(&rj, ROWS_NORM_ATTN);
    el_proj_forward(io->pool, 3, (float *[]){a->q, a->k, a->v}, a->xn1, (const el_tensor *[]){&L->wq, &L->wk, &L->wv},
                    n, io->dense, io->scratch);
    lora_rows(io, a, EL_LORA_Q, a->q, a->xn1);
    lora_rows(io, a, EL_LORA_K, a->k, a->xn1);
    lora_rows(io, a, EL_LORA_V, a->v, a->xn1);
    rows_run(&rj, ROWS_ROPE_KV);  // (Qwen2's q/k/v biases,) rope, and the new keys and values into the cache
    attn_job aj = {.n = n, .H = hp->n_heads, .KVH = hp->n_kv_heads, .hd = hp->head_dim, .window = hp->sliding_window,
                   .pos = io->pos, .T = io->T, .q = a->q, .out = a->ao, .lse = a->lse, .k = a->k, .v = a->v,
                   .kv = io->kv, .kv_ctx = io->kv_ctx};
    if (attn_run(io->pool, &aj)) return -1;
    el_proj_forward(io->pool, 1, &a->proj, a->ao, (const el_tensor *[]){&L->wo}, n, io->dense, io->scratch);
    lora_rows(io, a, EL_LORA_O, a->proj, a->ao);

    // feed-forward block (SwiGLU)
    rows_run(&rj, ROWS_RESID_NORM_FFN);
    el_proj_forward(io->pool, 2, (float *[]){a->g, a->u}, a->xn2, (const el_tensor *[]){&L->w_gate, &L->w_up}, n,
                    io->dense, io->scratch);
    lora_rows(io, a, EL_LORA_GATE, a->g, a->xn2);
    lora_rows(io, a, EL_LORA_UP, a->u, a->xn2);
    rows_run(&rj, ROWS_SWIGLU);
    el_proj_forward(io->pool, 1, &a->proj, a->h, (const el_tensor *[]){&L->w_down}, n, io->dense, io->scratch);
    lora_rows(io, a, EL_LORA_DOWN, a->proj, a->h);
    rows_run(&rj, ROWS_RESID);
    return 0;
}

// dx += ∂/∂x of y = x·Wᵀ (+ the trained adapter's product), and its LoRA gradients
static void proj_back(const el_layer_io *io, const el_layer_grad *gr, int target, float *dx, const float *dy,
                      const float *x, const float *t) {
    const el_lora_mat *mt = el_lora_get(gr->lora, io->layer, target);
    if (mt) {
        float *dA = gr->grads + el_lora_offset(gr->lora, mt), *dB = dA + (size_t)mt->rank * mt->in;
        el_lora_backward(io->pool, dx, dA, dB, dy, x, t, mt, gr->lora->alpha / (float)mt->rank, io->n, gr->tmp);
    }
    el_proj_backward(io->pool, dx, dy, el_lora_base(io->m, io->layer, target), io->n, io->scratch);
}

int el_layer_backward(const el_layer_io *io, const el_layer_acts *a, const el_layer_grad *gr, float *g) {
    const el_hparams *hp = &io->m->hp;
    size_t n = (size_t)io->n;
    rows_job rj = {io, a, gr, g, 0, 0};

    // feed-forward block: x_out = x_mid + down(silu(gate(n2)) ⊙ up(n2)), n2 = RMSNorm(x_mid)
    memset(gr->dh, 0, n * (size_t)hp->ff * sizeof(float));
    proj_back(io, gr, EL_LORA_DOWN, gr->dh, g, a->h, a->t[EL_LORA_DOWN]);
    rows_run(&rj, ROWS_SWIGLU_BACK);
    memset(gr->dxn, 0, n * (size_t)hp->dim * sizeof(float));
    proj_back(io, gr, EL_LORA_GATE, gr->dxn, gr->dg, a->xn2, a->t[EL_LORA_GATE]);
    proj_back(io, gr, EL_LORA_UP, gr->dxn, gr->du, a->xn2, a->t[EL_LORA_UP]);
    rows_run(&rj, ROWS_NORM_FFN_BACK);  // g = ∂/∂x_mid (the residual passes g through)

    // attention block: x_mid = x_in + o(attention(rope(q(n1)), rope(k(n1)), v(n1))), n1 = RMSNorm(x_in)
    memset(gr->dao, 0, n * (size_t)hp->n_heads * hp->head_dim * sizeof(float));
    proj_back(io, gr, EL_LORA_O, gr->dao, g, a->ao, a->t[EL_LORA_O]);
    if (el_attention_backward(io->pool, gr->dq, gr->dk, gr->dv, gr->dao, a->q, a->k, a->v, a->ao, a->lse, io->n / io->T,
                           io->T, hp->n_heads, hp->n_kv_heads, hp->head_dim, hp->sliding_window, gr->D))
        return -1;
    rows_run(&rj, ROWS_ROPE_BACK);
    memset(gr->dxn, 0, n * (size_t)hp->dim * sizeof(float));
    proj_back(io, gr, EL_LORA_Q, gr->dxn, gr->dq, a->xn1, a->t[EL_LORA_Q]);
    proj_back(io, gr, EL_LORA_K, gr->dxn, gr->dk, a->xn1, a->t[EL_LORA_K]);
    proj_back(io, gr, EL_LORA_V, gr->dxn, gr->dv, a->xn1, a->t[EL_LORA_V]);
    rows_run(&rj, ROWS_NORM_ATTN_BACK);  // g = ∂/∂x_in
    return 0;
}
