// Dense f32 products, attention and layer norm for encoders (every token of
// a sequence at once) with AVX-512, on activations in panels: 32 tokens at a
// time, feature-major within a panel (x[(t/32)·F·32 + f·32 + t%32] for F
// features), so one feature of 32 tokens is two vector loads from one cache
// line pair, a product's k slice of a panel is contiguous, and a product's
// output comes out in the same layout for the next one: nothing is repacked
// or transposed between them.
// The micro-kernel holds 12 output rows x 32 tokens in 24 registers: per k
// step 24 FMAs against 2 loads and 12 broadcasts of weights (or keys).
// Blocking: a task owns NC rows of W; per KC slice of k it converts those
// rows (f16, bf16, f32) into a block that stays in L2 while every panel
// passes, the panel's slice staying in L1 across the task's row groups; the
// rows of the next slice are prefetched meanwhile (a slice is nc separate
// runs of memory, too many streams for the hardware prefetchers).
#include <math.h>
#include <string.h>

#include "edgellm/kernels.h"
#include "ops_simd.h"
#include "simd_avx512.h"

#define MR 12  // output rows per tile
#define NR 32  // tokens per tile: two vectors
#define KC 256
#define NC_MAX 240  // W rows per task at most: 20 groups of MR

static size_t up(size_t a, size_t b) { return (a + b - 1) / b * b; }

// c[r·ldc + 0..32) = (acc ? c : bias ? bias[r] : 0) + Σ_kk w[r·wr + kk·wk] · a[kk·lda + 0..32)   for r < 12
static void tile(int kc, const float *a, size_t lda, const float *w, size_t wr, size_t wk, float *c, size_t ldc, int acc,
                 const float *bias) {
    __m512 c0a, c0b, c1a, c1b, c2a, c2b, c3a, c3b, c4a, c4b, c5a, c5b;
    __m512 c6a, c6b, c7a, c7b, c8a, c8b, c9a, c9b, c10a, c10b, c11a, c11b;
#define LD(i)                                                                                              \
    c##i##a = acc ? _mm512_loadu_ps(c + (size_t)(i) * ldc) : bias ? _mm512_set1_ps(bias[i]) : _mm512_setzero_ps(), \
    c##i##b = acc ? _mm512_loadu_ps(c + (size_t)(i) * ldc + 16) : c##i##a
    LD(0); LD(1); LD(2); LD(3); LD(4); LD(5); LD(6); LD(7); LD(8); LD(9); LD(10); LD(11);
#undef LD
    const float *w0 = w, *w1 = w + wr, *w2 = w + 2 * wr, *w3 = w + 3 * wr, *w4 = w + 4 * wr, *w5 = w + 5 * wr;
    const float *w6 = w + 6 * wr, *w7 = w + 7 * wr, *w8 = w + 8 * wr, *w9 = w + 9 * wr, *w10 = w + 10 * wr;
    const float *w11 = w + 11 * wr;
    for (int kk = 0; kk < kc; kk++) {
        const float *ak = a + (size_t)kk * lda;
        size_t o = (size_t)kk * wk;
        __m512 a0 = _mm512_loadu_ps(ak), a1 = _mm512_loadu_ps(ak + 16);
        __m512 b;
#define STEP(i) b = _mm512_set1_ps(w##i[o]), c##i##a = _mm512_fmadd_ps(b, a0, c##i##a), \
                c##i##b = _mm512_fmadd_ps(b, a1, c##i##b)
        STEP(0); STEP(1); STEP(2); STEP(3); STEP(4); STEP(5); STEP(6); STEP(7); STEP(8); STEP(9); STEP(10); STEP(11);
#undef STEP
    }
#define ST(i) _mm512_storeu_ps(c + (size_t)(i) * ldc, c##i##a), _mm512_storeu_ps(c + (size_t)(i) * ldc + 16, c##i##b)
    ST(0); ST(1); ST(2); ST(3); ST(4); ST(5); ST(6); ST(7); ST(8); ST(9); ST(10); ST(11);
#undef ST
}

// ---------------------------------------------------------------- Wᵀ·xt

typedef struct {
    float *out;  // panels of d features
    const el_tensor *W;
    const float *bias;  // may be NULL
    int d, first, nc;   // rows; the job's first task for this product; rows per task (a multiple of MR)
    size_t row0;        // this product's first row in the job's workspace (rows rounded up to MR)
    float *tail;        // [panel][MR][32]: the last group's rows when d is not a multiple of MR
} dense_part;

typedef struct {
    const float *x;  // panels of k features
    float *wb;       // workspace: a W slice [KC] per row
    int n, k, np, count;
    dense_part part[EL_DENSE_MAX];
} dense_job;

static void dense_task(void *ctx, int t, int n_tasks) {
    (void)n_tasks;
    const dense_job *j = ctx;
    int pi = 0;
    while (pi + 1 < j->count && t >= j->part[pi + 1].first) pi++;
    const dense_part *P = &j->part[pi];
    int r0 = (t - P->first) * P->nc, nr = P->d - r0 < P->nc ? P->d - r0 : P->nc, groups = (nr + MR - 1) / MR;
    float *wb = j->wb + (P->row0 + r0) * KC;
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
        int next = pc + KC < j->k ? pc + KC : -1;
        size_t seg = next < 0 ? 0 : (size_t)(j->k - next < KC ? j->k - next : KC) * esz;
        int per = (nr + j->np - 1) / j->np;
        for (int p = 0; p < j->np; p++) {
            for (int r = p * per; next >= 0 && r < (p + 1) * per && r < nr; r++)
                for (size_t o = 0; o < seg; o += 64) _mm_prefetch(w0 + (size_t)r * row_bytes + (size_t)next * esz + o, _MM_HINT_T1);
            const float *a = j->x + ((size_t)p * j->k + pc) * NR;
            for (int g = 0; g < groups; g++) {
                int rg = r0 + g * MR, whole = rg + MR <= P->d;
                float *c = whole ? P->out + ((size_t)p * P->d + rg) * NR : P->tail + (size_t)p * MR * NR;
                const float *bias = P->bias ? P->bias + rg : NULL;
                float bt[MR] = {0};
                if (bias && !whole) {  // the rows past d take no bias (and must not read past it)
                    memcpy(bt, bias, (size_t)(P->d - rg) * sizeof(float));
                    bias = bt;
                }
                tile(kc, a, NR, wb + (size_t)g * MR * kc, (size_t)kc, 1, c, NR, pc > 0, bias);
            }
        }
    }
    // a last group that runs past d was summed aside
    if (r0 + groups * MR > P->d) {
        int rg = r0 + (groups - 1) * MR;
        for (int p = 0; p < j->np; p++)
            memcpy(P->out + ((size_t)p * P->d + rg) * NR, P->tail + (size_t)p * MR * NR, (size_t)(P->d - rg) * NR * sizeof(float));
    }
}

size_t el_dense_p_work_avx512(int n, int count, const int *d) {
    size_t n_pad = up((size_t)n, NR), rows = 0;
    for (int i = 0; i < count; i++) rows += up((size_t)d[i], MR);
    return rows * KC + (size_t)count * MR * n_pad + 16;
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

void el_matmul_p_avx512(el_pool *pool, int count, float *const *outs, const float *x, const el_tensor *const *Ws,
                        const float *const *biases, int n, float *work) {
    int k = (int)Ws[0]->ne[0], tasks = 0, P = el_pool_size(pool);
    size_t rows = 0, n_pad = up((size_t)n, NR);
    dense_job j = {x, work, n, k, (int)(n_pad / NR), count, {{0}}};
    for (int i = 0; i < count; i++) {
        int d = (int)Ws[i]->ne[1], nc = choose_nc(d, P);
        j.part[i] = (dense_part){outs[i], Ws[i], biases ? biases[i] : NULL, d, tasks, nc, rows, NULL};
        tasks += (d + nc - 1) / nc;
        rows += up((size_t)d, MR);
    }
    for (int i = 0; i < count; i++) j.part[i].tail = work + rows * KC + (size_t)i * MR * n_pad;
    el_pool_run(pool, dense_task, &j, tasks);
}

// ---------------------------------------------------------------- attention

size_t el_attn_p_work_avx512(int n, int hd) {
    size_t n_pad = up((size_t)n, NR);
    return (size_t)hd * (n_pad + 16)      // Kᵀ of the head: [hd][keys], 16 columns of slack
         + up((size_t)hd, MR) * n_pad     // Vᵀ of the head: [hd rounded up to MR][keys]
         + up((size_t)n, MR) * NR         // Sᵀ of one panel of queries: [keys][32]
         + MR * NR;                       // a tile of the last partial row group
}

// One head of panel-layout q/k/v (F features, the head's first at f0):
// out[t][f0 + j] = Σ_s softmax_s(scale · Σ_i q[t][f0+i] k[s][f0+i]) · v[s][f0+j].
// The head's keys and values are gathered feature-major ([hd][keys]); per
// panel of 32 queries, Sᵀ comes straight from the tiles with the keys as the
// broadcast operand, the softmax runs down each column 16 queries at a time,
// and P·V uses Sᵀ as the activations and Vᵀ's rows as the weights.
void el_attn_p_avx512(float *out, const float *q, const float *k, const float *v, int F, int f0, int n, int hd,
                      float scale, float *work) {
    int np = (int)(up((size_t)n, NR) / NR), sg = (int)(up((size_t)n, MR) / MR), hd_pad = (int)up((size_t)hd, MR);
    size_t n_pad = (size_t)np * NR, ks = n_pad + 16;
    float *kt = work, *vt = kt + (size_t)hd * ks, *st = vt + (size_t)hd_pad * n_pad, *tmp = st + up((size_t)n, MR) * NR;
    for (int p = 0; p < np; p++)
        for (int i = 0; i < hd; i++) {
            memcpy(kt + (size_t)i * ks + (size_t)p * NR, k + ((size_t)p * F + f0 + i) * NR, NR * sizeof(float));
            memcpy(vt + (size_t)i * n_pad + (size_t)p * NR, v + ((size_t)p * F + f0 + i) * NR, NR * sizeof(float));
        }
    for (int i = 0; i < hd; i++) memset(kt + (size_t)i * ks + n_pad, 0, 16 * sizeof(float));
    memset(vt + (size_t)hd * n_pad, 0, (size_t)(hd_pad - hd) * n_pad * sizeof(float));
    __m512 sc = _mm512_set1_ps(scale);
    for (int p = 0; p < np; p++) {
        const float *a = q + ((size_t)p * F + f0) * NR;
        for (int g = 0; g < sg; g++) tile(hd, a, NR, kt + (size_t)g * MR, 1, ks, st + (size_t)g * MR * NR, NR, 0, NULL);
        // softmax over the keys s < n of each query column
        for (int half = 0; half < 2; half++) {
            float *col = st + half * 16;
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
        // out rows f0 + j of panel p = Σ_{s < n} v[j][s] · P[s][..]
        float *o = out + ((size_t)p * F + f0) * NR;
        for (int g = 0; g < hd; g += MR) {
            if (g + MR <= hd) {
                tile(n, st, NR, vt + (size_t)g * n_pad, n_pad, 1, o + (size_t)g * NR, NR, 0, NULL);
            } else {
                tile(n, st, NR, vt + (size_t)g * n_pad, n_pad, 1, tmp, NR, 0, NULL);
                memcpy(o + (size_t)g * NR, tmp, (size_t)(hd - g) * NR * sizeof(float));
            }
        }
    }
}

// ---------------------------------------------------------------- causal attention

// Causal attention of a panel of up to 32 query rows at consecutive
// positions (a prompt's prefill, a training context) on the same 12 x 32
// tiles: Sᵀ = K·Qᵀ with the keys as the broadcast operand, the softmax down
// each query column 16 queries at a time, Oᵀ += Vᵀ·Pᵀ with Pᵀ as the
// activations. Keys come in chunks of ACH with an online softmax (running
// maximum and sum per query; Oᵀ and the sum rescaled by e^(old max - new max)
// after each chunk but the first), so the scratch does not grow with the
// context.
#define ACH 240  // keys a chunk: 20 tiles of MR
_Static_assert(NR == EL_PANEL && ACH % MR == 0, "a panel is one tile's tokens; a chunk whole tiles of keys");

size_t el_attn_causal_work_avx512(int hd) { return (size_t)hd * NR + ACH * NR + up((size_t)hd, MR) * NR; }

void el_attn_causal_avx512(float *out, size_t ldo, float *lse, size_t ldl, const float *q, size_t ldq, int nq, int p0,
                           const float *k, const float *v, int k0, int nk, int hd, int window, float scale, float *work) {
    if (nq > NR) nq = NR;  // (outside the contract: a panel's rows at most)
    int hd_pad = (int)up((size_t)hd, MR);
    float *qt = work, *st = qt + (size_t)hd * NR, *ot = st + (size_t)ACH * NR;
    for (int i = 0; i < hd; i++)
        for (int t = 0; t < NR; t++) qt[(size_t)i * NR + t] = t < nq ? q[(size_t)t * ldq + i] : 0.0f;
    memset(ot, 0, (size_t)hd_pad * NR * sizeof(float));
    const __m512 ninf = _mm512_set1_ps(-INFINITY), sc = _mm512_set1_ps(scale), zero = _mm512_setzero_ps();
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    __m512 m[2] = {ninf, ninf}, l[2] = {zero, zero};
    for (int c0 = 0; c0 < nk; c0 += ACH) {
        int cn = nk - c0 < ACH ? nk - c0 : ACH;
        for (int g = 0; g < cn; g += MR) tile(hd, qt, NR, k + (size_t)(c0 + g) * hd, (size_t)hd, 1, st + (size_t)g * NR, NR, 0, NULL);
        for (int half = 0; half < 2; half++) {
            float *col = st + half * 16;
            __m512i qpos = _mm512_add_epi32(lane, _mm512_set1_epi32(p0 + 16 * half));
            __m512 mx = m[half];
            for (int s = 0; s < cn; s++) {
                __m512i kp = _mm512_set1_epi32(k0 + c0 + s);
                __mmask16 vis = _mm512_cmple_epi32_mask(kp, qpos);  // key at or before the query
                if (window) vis &= _mm512_cmplt_epi32_mask(_mm512_sub_epi32(qpos, kp), _mm512_set1_epi32(window));
                __m512 x = _mm512_mask_mul_ps(ninf, vis, _mm512_loadu_ps(col + (size_t)s * NR), sc);
                _mm512_storeu_ps(col + (size_t)s * NR, x);
                mx = _mm512_max_ps(mx, x);
            }
            // exponents are taken against a finite reference: a query that has
            // seen no key yet keeps 0 (its sum and output are still 0)
            __m512 ref = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(mx, ninf, _CMP_EQ_OQ), mx, zero);
            // the old sum and output scale by e^(old max - new); by 0 where nothing was seen
            __m512 alpha = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(m[half], ninf, _CMP_NEQ_UQ), exp512(_mm512_sub_ps(m[half], ref)));
            __m512 sum = zero;
            for (int s = 0; s < cn; s++) {
                __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(col + (size_t)s * NR), ref));
                _mm512_storeu_ps(col + (size_t)s * NR, e);
                sum = _mm512_add_ps(sum, e);
            }
            l[half] = _mm512_fmadd_ps(l[half], alpha, sum);
            m[half] = mx;
            if (c0)
                for (int j = 0; j < hd; j++)
                    _mm512_storeu_ps(ot + (size_t)j * NR + half * 16, _mm512_mul_ps(_mm512_loadu_ps(ot + (size_t)j * NR + half * 16), alpha));
        }
        // Oᵀ[j] += Σ_s v[s][j] Pᵀ[s]: rows past hd read the next key's row (or the slack), never used
        for (int g = 0; g < hd_pad; g += MR) tile(cn, st, NR, v + (size_t)c0 * hd + g, 1, (size_t)hd, ot + (size_t)g * NR, NR, 1, NULL);
    }
    for (int half = 0; half < 2 && 16 * half < nq; half++) {
        float inv[16], lg[16], ls[16];
        _mm512_storeu_ps(inv, _mm512_div_ps(_mm512_set1_ps(1.0f), l[half]));
        _mm512_storeu_ps(ls, l[half]);
        __m512 ref = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(m[half], ninf, _CMP_EQ_OQ), m[half], zero);
        _mm512_storeu_ps(lg, ref);
        for (int t = 16 * half; t < nq && t < 16 * half + 16; t++) {
            for (int j = 0; j < hd; j++) out[(size_t)t * ldo + j] = ot[(size_t)j * NR + t] * inv[t - 16 * half];
            if (lse) lse[(size_t)t * ldl] = lg[t - 16 * half] + logf(ls[t - 16 * half]);
        }
    }
}

// ---------------------------------------------------------------- layer norm

// Layer norm of each token over its F features, panels p0..p1 (16 tokens of
// a panel at a time). out may be x.
void el_layernorm_p_avx512(float *out, const float *x, int F, const float *w, const float *b, int p0, int p1, float eps) {
    for (int p = p0; p < p1; p++)
        for (int half = 0; half < 2; half++) {
            const float *xp = x + (size_t)p * F * NR + half * 16;
            float *op = out + (size_t)p * F * NR + half * 16;
            __m512 s = _mm512_setzero_ps(), ss = _mm512_setzero_ps();
            for (int r = 0; r < F; r++) s = _mm512_add_ps(s, _mm512_loadu_ps(xp + (size_t)r * NR));
            __m512 mean = _mm512_mul_ps(s, _mm512_set1_ps(1.0f / F));
            for (int r = 0; r < F; r++) {
                __m512 d = _mm512_sub_ps(_mm512_loadu_ps(xp + (size_t)r * NR), mean);
                ss = _mm512_fmadd_ps(d, d, ss);
            }
            __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f),
                                       _mm512_sqrt_ps(_mm512_add_ps(_mm512_mul_ps(ss, _mm512_set1_ps(1.0f / F)),
                                                                    _mm512_set1_ps(eps))));
            for (int r = 0; r < F; r++) {
                __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(xp + (size_t)r * NR), mean), inv);
                if (w) v = _mm512_mul_ps(v, _mm512_set1_ps(w[r]));
                if (b) v = _mm512_add_ps(v, _mm512_set1_ps(b[r]));
                _mm512_storeu_ps(op + (size_t)r * NR, v);
            }
        }
}
