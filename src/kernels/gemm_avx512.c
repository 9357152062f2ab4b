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

// Kᵀ for the causal tiles (el_attn_causal_kt's layout): 16 keys x 16 of
// their elements at a time, transposed in registers (pairs, then quads
// within the 128-bit lanes, then the lanes). Returns how many keys it
// placed (whole 16s); el_attn_causal_kt does the rest.
int el_attn_causal_kt_avx512(float *kt, const float *k, int nk, int hd) {
    int s0 = 0;
    for (; s0 + 16 <= nk; s0 += 16)
        for (int i0 = 0; i0 < hd; i0 += 16) {
            const int w = hd - i0 < 16 ? hd - i0 : 16;
            const __mmask16 mk = (__mmask16)((1u << w) - 1);
            __m512 r[16], t[16];
            for (int a = 0; a < 16; a++) r[a] = _mm512_maskz_loadu_ps(mk, k + (size_t)(s0 + a) * hd + i0);
            for (int a = 0; a < 16; a += 2)
                t[a] = _mm512_unpacklo_ps(r[a], r[a + 1]), t[a + 1] = _mm512_unpackhi_ps(r[a], r[a + 1]);
            for (int g = 0; g < 16; g += 4) {  // r[g + e]: in 128-bit lane L, element 4L + e of keys g .. g+3
                r[g] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[g]), _mm512_castps_pd(t[g + 2])));
                r[g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[g]), _mm512_castps_pd(t[g + 2])));
                r[g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[g + 1]), _mm512_castps_pd(t[g + 3])));
                r[g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[g + 1]), _mm512_castps_pd(t[g + 3])));
            }
            for (int e = 0; e < 4; e++) {
                __m512 v0 = _mm512_shuffle_f32x4(r[e], r[4 + e], 0x88), v1 = _mm512_shuffle_f32x4(r[e], r[4 + e], 0xDD);
                __m512 v2 = _mm512_shuffle_f32x4(r[8 + e], r[12 + e], 0x88), v3 = _mm512_shuffle_f32x4(r[8 + e], r[12 + e], 0xDD);
                __m512 o[4] = {_mm512_shuffle_f32x4(v0, v2, 0x88), _mm512_shuffle_f32x4(v1, v3, 0x88),
                               _mm512_shuffle_f32x4(v0, v2, 0xDD), _mm512_shuffle_f32x4(v1, v3, 0xDD)};
                for (int L = 0; L < 4; L++)  // element 4L + e of the 16 keys
                    if (4 * L + e < w)
                        _mm512_storeu_ps(kt + (size_t)(s0 / NR) * NR * hd + (size_t)(i0 + 4 * L + e) * NR + s0 % NR, o[L]);
            }
        }
    return s0;
}

// ---------------------------------------------------------------- causal attention

// Causal attention of a panel of query rows at consecutive positions (a
// prompt's prefill, a training context) on the same 12 x 32 tiles, 12 queries
// at a time with the queries as the broadcast operand: S = Q·Kᵀ (32 keys a
// tile, from Kᵀ, which the caller transposes once for all heads of a group),
// the softmax along each query's row, O += P·V (32 of the head's columns a
// tile, V as it is stored). Nothing is transposed per head, and each block of
// 12 queries reads only the keys its last query sees. Keys come in chunks of
// ACH with an online softmax (running maximum and sum per query; O and the
// sum rescaled by e^(old max - new max) after each chunk but the first), so
// the scratch does not grow with the context.
#define ACH 128  // keys a chunk: 4 tiles of NR
_Static_assert(ACH % NR == 0 && EL_ATTN_PANEL % MR == 0, "a chunk is whole tiles of keys; a panel whole tiles of queries");

size_t el_attn_causal_work_avx512(int hd) {
    return EL_ATTN_PANEL * (ACH + up((size_t)hd, NR) + (size_t)hd);  // the panel's S, O and queries
}

void el_attn_causal_avx512(float *out, size_t ldo, float *lse, size_t ldl, const float *q, size_t ldq, int nq, int p0,
                           const float *kt, const float *v, int k0, int nk, int hd, int window, float scale, float *work) {
    if (nq > EL_ATTN_PANEL) nq = EL_ATTN_PANEL;  // (outside the contract: a panel's rows at most)
    const size_t hp = up((size_t)hd, NR);
    float *S = work, *O = S + EL_ATTN_PANEL * ACH, *qp = O + EL_ATTN_PANEL * hp;
    const __m512 ninf = _mm512_set1_ps(-INFINITY), sc = _mm512_set1_ps(scale), zero = _mm512_setzero_ps();
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    float m[EL_ATTN_PANEL], l[EL_ATTN_PANEL];
    for (int t = 0; t < nq; t++) m[t] = -INFINITY, l[t] = 0.0f;
    // the queries packed (rows hd apart: the tiles' 12 broadcast rows would
    // share one L1 set at a power-of-two stride such as 2048 floats), and zero
    // rows up to a whole block
    for (int t = 0; t < (int)EL_ATTN_PANEL; t++)  // (inline loads: the rows' cache misses overlap)
        for (int j = 0; j < hd; j += 16) {
            __mmask16 mk = hd - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (hd - j)) - 1);
            __m512 row = t < nq ? _mm512_maskz_loadu_ps(mk, q + (size_t)t * ldq + j) : zero;
            _mm512_mask_storeu_ps(qp + (size_t)t * hd + j, mk, row);
        }
    // Blocks of 12 queries, each over the keys up to its last query's
    // position; chunk by chunk of keys, each tile of keys (or of V's columns)
    // for every block in turn while it is in L1.
    int ke[EL_ATTN_PANEL / MR];
    const int nb = (nq + MR - 1) / MR;
    for (int b = 0; b < nb; b++) {
        const int last = p0 + (b * MR + MR < nq ? b * MR + MR : nq) - 1;
        ke[b] = last - k0 + 1 < nk ? last - k0 + 1 : nk;
    }
    for (int c0 = 0; c0 < nk; c0 += ACH) {
        for (int g = 0; g < ACH && c0 + g < nk; g += NR)  // S = Q·Kᵀ
            for (int b = 0; b < nb; b++)
                if (c0 + g < ke[b])
                    tile(hd, kt + (size_t)(c0 + g) * hd, NR, qp + (size_t)b * MR * hd, (size_t)hd, 1, S + (size_t)b * MR * ACH + g,
                         ACH, 0, NULL);
        for (int b = 0; b < nb; b++) {
            if (c0 >= ke[b]) continue;
            const int cn = ke[b] - c0 < ACH ? ke[b] - c0 : ACH, t0 = b * MR, rows = nq - t0 < MR ? nq - t0 : MR;
            float cm[16];
            for (int i = 0; i < rows; i++) {  // scale and mask; each row's maximum over the chunk
                float *row = S + (size_t)(t0 + i) * ACH;
                const __m512i qpos = _mm512_set1_epi32(p0 + t0 + i);
                __m512 mx = ninf;
                for (int s = 0; s < cn; s += 16) {
                    __mmask16 in = cn - s >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (cn - s)) - 1);
                    __m512i kp = _mm512_add_epi32(lane, _mm512_set1_epi32(k0 + c0 + s));
                    __mmask16 vis = in & _mm512_cmple_epi32_mask(kp, qpos);  // key at or before the query
                    if (window) vis &= _mm512_cmplt_epi32_mask(_mm512_sub_epi32(qpos, kp), _mm512_set1_epi32(window));
                    __m512 x = _mm512_mask_mul_ps(ninf, vis, _mm512_loadu_ps(row + s), sc);
                    _mm512_storeu_ps(row + s, x);
                    mx = _mm512_max_ps(mx, x);
                }
                cm[i] = _mm512_reduce_max_ps(mx);
            }
            // the block's rows in the lanes: the new maximum; exponents against
            // a finite reference (a query that has seen no key yet keeps 0: its
            // sum and output are still 0); the old sum and output scale by
            // e^(old max - new), by 0 where nothing was seen
            const __mmask16 rm = (__mmask16)((1u << rows) - 1);
            const __m512 mold = _mm512_mask_loadu_ps(ninf, rm, m + t0);
            const __m512 mnew = _mm512_max_ps(_mm512_mask_loadu_ps(ninf, rm, cm), mold);
            const __m512 refv = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(mnew, ninf, _CMP_EQ_OQ), mnew, zero);
            const __m512 alv = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(mold, ninf, _CMP_NEQ_UQ), exp512(_mm512_sub_ps(mold, refv)));
            float ref[16], alpha[16];
            _mm512_storeu_ps(ref, refv), _mm512_storeu_ps(alpha, alv);
            _mm512_mask_storeu_ps(m + t0, rm, mnew);
            for (int i = 0; i < rows; i++) {
                float *row = S + (size_t)(t0 + i) * ACH;
                const __m512 rv = _mm512_set1_ps(ref[i]);
                __m512 sum = zero;
                for (int s = 0; s < cn; s += 16) {  // (past cn: -inf above, so 0)
                    __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(row + s), rv));
                    _mm512_storeu_ps(row + s, e);
                    sum = _mm512_add_ps(sum, e);
                }
                l[t0 + i] = l[t0 + i] * alpha[i] + _mm512_reduce_add_ps(sum);
                if (c0) {
                    const __m512 av = _mm512_set1_ps(alpha[i]);
                    float *o = O + (size_t)(t0 + i) * hp;
                    for (size_t j = 0; j < hp; j += 16) _mm512_storeu_ps(o + j, _mm512_mul_ps(_mm512_loadu_ps(o + j), av));
                }
            }
        }
        // O[t][j] += Σ_s P[t][s] v[s][j]: columns past hd read into the next
        // key's row (or the slack) and are never used; a part block's rows
        // past nq (P 0 there) land in O's spare rows
        for (size_t g = 0; g < hp; g += NR)
            for (int b = 0; b < nb; b++)
                if (c0 < ke[b])
                    tile(ke[b] - c0 < ACH ? ke[b] - c0 : ACH, v + (size_t)c0 * hd + g, (size_t)hd, S + (size_t)b * MR * ACH, ACH,
                         1, O + (size_t)b * MR * hp + g, hp, c0 > 0, NULL);
    }
    for (int t = 0; t < nq; t++) {
        const __m512 inv = _mm512_set1_ps(1.0f / l[t]);
        float *o = out + (size_t)t * ldo;
        for (int j = 0; j < hd; j += 16) {
            __mmask16 mk = hd - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (hd - j)) - 1);
            _mm512_mask_storeu_ps(o + j, mk, _mm512_mul_ps(_mm512_loadu_ps(O + t * hp + j), inv));
        }
        if (lse) lse[(size_t)t * ldl] = (m[t] == -INFINITY ? 0.0f : m[t]) + logf(l[t]);
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
