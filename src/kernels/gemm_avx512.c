// Dense f32 products for encoders (every row of a sequence at once) with
// AVX-512: C = A·Bᵀ where A (activations) is repacked into panels of 32 rows
// (k rows of 32 floats each, so one k step is two vector loads) and B
// (weights, converted from f16/bf16 block by block) is read row by row, one
// broadcast per row and k step. The micro-kernel holds a 12 x 32 tile of C in
// 24 registers: per k step 24 FMAs against 2 loads and 12 broadcasts.
// Blocking: a task owns NC rows of B; per KC slice of k it converts those
// rows into a block that stays in L2 while every panel of A passes, each
// panel slice staying in L1 across the task's row groups; the tile sums
// accumulate in a transposed buffer that is written out once at the end.
#include <math.h>
#include <string.h>

#include "edgellm/kernels.h"
#include "ops_simd.h"
#include "simd_avx512.h"

#define MR 12  // B rows per tile
#define NR 32  // A rows (tokens) per tile: two vectors
#define KC 256
#define NC_MAX 240  // B rows per task at most: 20 groups of MR

static size_t up(size_t a, size_t b) { return (a + b - 1) / b * b; }

size_t el_panel_floats(int n, int k) { return up((size_t)n, NR) * (size_t)k; }

// r[0..16) rows in, the same registers hold the 16 columns out (r[j] = column j)
ALWAYS_INLINE void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    // r[4g + m]: rows 4g..4g+3 of columns m, m+4, m+8, m+12 (one per 128-bit lane)
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xDD);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xDD);
    }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
    }
}

// at[p][kk][i] = x[(32p + i)·ldx + kk], zero past row n
void el_panel_pack_avx512(const float *x, size_t ldx, int n, int k, float *at, int p0, int p1) {
    for (int p = p0; p < p1; p++) {
        float *dst = at + (size_t)p * k * NR;
        int rows = n - p * NR < NR ? n - p * NR : NR;
        int kk = 0;
        for (; rows == NR && kk + 16 <= k; kk += 16)
            for (int half = 0; half < 2; half++) {
                __m512 r[16];
                for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(x + (size_t)(p * NR + half * 16 + i) * ldx + kk);
                transpose16(r);
                for (int j = 0; j < 16; j++) _mm512_storeu_ps(dst + (size_t)(kk + j) * NR + half * 16, r[j]);
            }
        for (; kk < k; kk++) {
            float *d = dst + (size_t)kk * NR;
            for (int i = 0; i < NR; i++) d[i] = i < rows ? x[(size_t)(p * NR + i) * ldx + kk] : 0.0f;
        }
    }
}

// c[r][0..32) (rows ldc apart) = (acc ? c : 0) + Σ_kk w[r·ldw + kk] · at[kk·32 ..]   for r < 12
static void tile(int kc, const float *at, const float *w, size_t ldw, float *c, size_t ldc, int acc) {
    __m512 c0a, c0b, c1a, c1b, c2a, c2b, c3a, c3b, c4a, c4b, c5a, c5b;
    __m512 c6a, c6b, c7a, c7b, c8a, c8b, c9a, c9b, c10a, c10b, c11a, c11b;
#define LD(i) c##i##a = acc ? _mm512_loadu_ps(c + (size_t)(i) * ldc) : _mm512_setzero_ps(), \
              c##i##b = acc ? _mm512_loadu_ps(c + (size_t)(i) * ldc + 16) : _mm512_setzero_ps()
    LD(0); LD(1); LD(2); LD(3); LD(4); LD(5); LD(6); LD(7); LD(8); LD(9); LD(10); LD(11);
#undef LD
    const float *w0 = w, *w1 = w + ldw, *w2 = w + 2 * ldw, *w3 = w + 3 * ldw, *w4 = w + 4 * ldw, *w5 = w + 5 * ldw;
    const float *w6 = w + 6 * ldw, *w7 = w + 7 * ldw, *w8 = w + 8 * ldw, *w9 = w + 9 * ldw, *w10 = w + 10 * ldw;
    const float *w11 = w + 11 * ldw;
    for (int kk = 0; kk < kc; kk++) {
        __m512 a0 = _mm512_loadu_ps(at + (size_t)kk * NR), a1 = _mm512_loadu_ps(at + (size_t)kk * NR + 16);
        __m512 b;
#define STEP(i) b = _mm512_set1_ps(w##i[kk]), c##i##a = _mm512_fmadd_ps(b, a0, c##i##a), \
                c##i##b = _mm512_fmadd_ps(b, a1, c##i##b)
        STEP(0); STEP(1); STEP(2); STEP(3); STEP(4); STEP(5); STEP(6); STEP(7); STEP(8); STEP(9); STEP(10); STEP(11);
#undef STEP
    }
#define ST(i) _mm512_storeu_ps(c + (size_t)(i) * ldc, c##i##a), _mm512_storeu_ps(c + (size_t)(i) * ldc + 16, c##i##b)
    ST(0); ST(1); ST(2); ST(3); ST(4); ST(5); ST(6); ST(7); ST(8); ST(9); ST(10); ST(11);
#undef ST
}

// ---------------------------------------------------------------- x · Wᵀ

typedef struct {
    float *out;
    const el_tensor *W;
    const float *bias;  // may be NULL
    int d, first;       // rows; the job's first task for this product
    int nc;             // rows per task (a multiple of MR)
    size_t row0;        // this product's first row in the job's workspace (rows rounded up to MR)
} dense_part;

typedef struct {
    const float *x;
    float *at, *ct, *wb;  // workspace: A panels; per row, transposed C [n_pad] and a W slice [KC]
    int n, k, n_pad, np, count;
    dense_part part[EL_DENSE_MAX];
} dense_job;

static void pack_task(void *ctx, int t, int n_tasks) {
    const dense_job *j = ctx;
    int per = (j->np + n_tasks - 1) / n_tasks, p0 = t * per, p1 = p0 + per < j->np ? p0 + per : j->np;
    el_panel_pack_avx512(j->x, (size_t)j->k, j->n, j->k, j->at, p0, p1);
}

static void dense_task(void *ctx, int t, int n_tasks) {
    (void)n_tasks;
    const dense_job *j = ctx;
    int pi = 0;
    while (pi + 1 < j->count && t >= j->part[pi + 1].first) pi++;
    const dense_part *P = &j->part[pi];
    int r0 = (t - P->first) * P->nc, nr = P->d - r0 < P->nc ? P->d - r0 : P->nc, groups = (nr + MR - 1) / MR;
    float *wb = j->wb + (P->row0 + r0) * KC, *ct = j->ct + (P->row0 + r0) * j->n_pad;
    size_t row_bytes = el_tensor_row_size(P->W), esz = row_bytes / (size_t)j->k;
    const char *w0 = (const char *)P->W->data + (size_t)r0 * row_bytes;
    for (int pc = 0; pc < j->k; pc += KC) {
        int kc = j->k - pc < KC ? j->k - pc : KC;
        // this task's rows of W over [pc, pc + kc) as f32, kc apart; zero rows pad the last group
        for (int r = 0; r < groups * MR; r++) {
            float *dst = wb + (size_t)r * kc;
            if (r < nr) el_to_f32(P->W->dtype, w0 + (size_t)r * row_bytes + (size_t)pc * esz, dst, kc);
            else memset(dst, 0, (size_t)kc * sizeof(float));
        }
        // while the tiles run, fetch the next slice of those rows: a slice
        // touches nr separate runs of memory, too many streams for the
        // hardware prefetchers to follow
        int next = pc + KC < j->k ? pc + KC : -1;
        size_t seg = next < 0 ? 0 : (size_t)(j->k - next < KC ? j->k - next : KC) * esz;
        int per = (nr + j->np - 1) / j->np;
        for (int p = 0; p < j->np; p++) {
            for (int r = p * per; next >= 0 && r < (p + 1) * per && r < nr; r++)
                for (size_t o = 0; o < seg; o += 64) _mm_prefetch(w0 + (size_t)r * row_bytes + (size_t)next * esz + o, _MM_HINT_T1);
            const float *at = j->at + (size_t)p * j->k * NR + (size_t)pc * NR;
            for (int g = 0; g < groups; g++)
                tile(kc, at, wb + (size_t)g * MR * kc, (size_t)kc, ct + (size_t)g * MR * j->n_pad + (size_t)p * NR,
                     (size_t)j->n_pad, pc > 0);
        }
    }
    // out[i][r0 + r] = ct[r][i] + bias[r0 + r], 16 x 16 blocks through registers
    float *out = P->out + r0;
    size_t ldo = (size_t)P->d;
    const float *bias = P->bias ? P->bias + r0 : NULL;
    int r = 0;
    for (; r + 16 <= nr; r += 16) {
        __m512 b = bias ? _mm512_loadu_ps(bias + r) : _mm512_setzero_ps();
        for (int i = 0; i < j->n; i += 16) {
            __m512 v[16];
            for (int a = 0; a < 16; a++) v[a] = _mm512_loadu_ps(ct + (size_t)(r + a) * j->n_pad + i);
            transpose16(v);
            int m = j->n - i < 16 ? j->n - i : 16;
            for (int c = 0; c < m; c++) _mm512_storeu_ps(out + (size_t)(i + c) * ldo + r, _mm512_add_ps(v[c], b));
        }
    }
    for (; r < nr; r++)
        for (int i = 0; i < j->n; i++) out[(size_t)i * ldo + r] = ct[(size_t)r * j->n_pad + i] + (bias ? bias[r] : 0.0f);
}

size_t el_dense_work_avx512(int n, int k, int count, const int *d) {
    size_t n_pad = up((size_t)n, NR), rows = 0;
    for (int i = 0; i < count; i++) rows += up((size_t)d[i], MR);
    return n_pad * (size_t)k + rows * (n_pad + KC);
}

// Rows per task for d rows on P threads: a multiple of MR, at most NC_MAX,
// chosen so that the tasks fill the threads most evenly (the pool hands
// tasks out one at a time, so d / (P · rounds · nc) is the share of the
// product's time the threads are busy).
static int choose_nc(int d, int P) {
    int best = NC_MAX;
    double best_eff = 0;
    for (int m = 1; m <= 16; m++) {
        int T = P * m, nc = (int)up(((size_t)d + T - 1) / T, MR);
        if (nc > NC_MAX) continue;
        int tasks = (d + nc - 1) / nc, rounds = (tasks + P - 1) / P;
        double eff = (double)d / ((double)rounds * P * nc);
        if (eff > best_eff + 0.005) {
            best_eff = eff;
            best = nc;
        }
    }
    return best;
}

void el_matmul_dense_avx512(el_pool *pool, int count, float *const *outs, const float *x, const el_tensor *const *Ws,
                            const float *const *biases, int n, float *work) {
    int k = (int)Ws[0]->ne[0], n_pad = (int)up((size_t)n, NR), tasks = 0, P = el_pool_size(pool);
    size_t rows = 0;
    dense_job j = {x, work, NULL, NULL, n, k, n_pad, n_pad / NR, count, {{0}}};
    for (int i = 0; i < count; i++) {
        int d = (int)Ws[i]->ne[1], nc = choose_nc(d, P);
        j.part[i] = (dense_part){outs[i], Ws[i], biases ? biases[i] : NULL, d, tasks, nc, rows};
        tasks += (d + nc - 1) / nc;
        rows += up((size_t)d, MR);
    }
    j.ct = work + (size_t)n_pad * k;
    j.wb = j.ct + rows * n_pad;
    int pt = el_pool_size(pool) * 2;
    el_pool_run(pool, pack_task, &j, pt < j.np ? pt : j.np);
    el_pool_run(pool, dense_task, &j, tasks);
}

// ---------------------------------------------------------------- attention

size_t el_attn_work_avx512(int n, int hd) {
    size_t n_pad = up((size_t)n, NR);
    return n_pad * (size_t)hd      // Q in panels
         + n_pad * n_pad           // scores, transposed, in panels: they are the next product's A
         + up((size_t)hd, MR) * n_pad  // Vᵀ
         + up((size_t)hd, MR) * NR;    // one output tile
}

// out = softmax(scale · Q Kᵀ) V over one head: Sᵀ is computed straight into
// panel layout (rows = keys), the softmax runs down each panel's columns 32
// queries at a time, and P·V reads those panels with Vᵀ as the weights.
void el_attn_full_avx512(float *out, size_t ldo, const float *q, size_t ldq, const float *k, size_t ldk, const float *v,
                         size_t ldv, int n, int hd, float scale, float *work) {
    int n_pad = (int)up((size_t)n, NR), np = n_pad / NR, hd_pad = (int)up((size_t)hd, MR);
    float *qt = work, *st = qt + (size_t)n_pad * hd, *vt = st + (size_t)n_pad * n_pad, *tmp = vt + (size_t)hd_pad * n_pad;
    el_panel_pack_avx512(q, ldq, n, hd, qt, 0, np);
    // Sᵀ panels: st[p][s][32] = Σ_j q[32p + i][j] k[s][j]; key groups past n read
    // rows of k that exist only up to n, so the last group uses a padded copy
    int full = n / MR * MR;
    for (int p = 0; p < np; p++) {
        const float *a = qt + (size_t)p * hd * NR;
        float *sp = st + (size_t)p * n_pad * NR;
        for (int s = 0; s < full; s += MR) tile(hd, a, k + (size_t)s * ldk, ldk, sp + (size_t)s * NR, NR, 0);
        if (full < n) {
            float kt[MR * 256];
            for (int r = 0; r < MR; r++)
                for (int jj = 0; jj < hd; jj++) kt[r * hd + jj] = full + r < n ? k[(size_t)(full + r) * ldk + jj] : 0.0f;
            tile(hd, a, kt, (size_t)hd, sp + (size_t)full * NR, NR, 0);
        }
        // softmax over keys s < n for each of the 32 queries, two vectors at a time
        __m512 sc = _mm512_set1_ps(scale);
        for (int half = 0; half < 2; half++) {
            float *col = sp + half * 16;
            __m512 mx = _mm512_set1_ps(-INFINITY), sum = _mm512_setzero_ps();
            for (int s = 0; s < n; s++) mx = _mm512_max_ps(mx, _mm512_mul_ps(_mm512_loadu_ps(col + (size_t)s * NR), sc));
            for (int s = 0; s < n; s++) {
                __m512 e = exp512(_mm512_sub_ps(_mm512_mul_ps(_mm512_loadu_ps(col + (size_t)s * NR), sc), mx));
                _mm512_storeu_ps(col + (size_t)s * NR, e);
                sum = _mm512_add_ps(sum, e);
            }
            __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), sum);
            for (int s = 0; s < n; s++) _mm512_storeu_ps(col + (size_t)s * NR, _mm512_mul_ps(_mm512_loadu_ps(col + (size_t)s * NR), inv));
        }
        for (int s = n; s < n_pad; s++) memset(sp + (size_t)s * NR, 0, NR * sizeof(float));
    }
    // Vᵀ: vt[j][s] = v[s][j], zero past n and past hd; whole 16 x 16 blocks through registers
    int jb = hd / 16 * 16, sb = n / 16 * 16;
    for (int jj = 0; jj < jb; jj += 16)
        for (int s = 0; s < sb; s += 16) {
            __m512 r[16];
            for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(v + (size_t)(s + i) * ldv + jj);
            transpose16(r);
            for (int i = 0; i < 16; i++) _mm512_storeu_ps(vt + (size_t)(jj + i) * n_pad + s, r[i]);
        }
    for (int jj = 0; jj < hd_pad; jj++)
        for (int s = jj < jb ? sb : 0; s < n_pad; s++)
            vt[(size_t)jj * n_pad + s] = jj < hd && s < n ? v[(size_t)s * ldv + jj] : 0.0f;
    // out[32p + i][j] = Σ_s P[i][s] V[s][j]
    for (int p = 0; p < np; p++) {
        int rows = n - p * NR < NR ? n - p * NR : NR;
        for (int g = 0; g < hd_pad; g += MR) {
            tile(n_pad, st + (size_t)p * n_pad * NR, vt + (size_t)g * n_pad, (size_t)n_pad, tmp, NR, 0);
            for (int r = 0; r < MR && g + r < hd; r++)
                for (int i = 0; i < rows; i++) out[(size_t)(p * NR + i) * ldo + g + r] = tmp[r * NR + i];
        }
    }
}
