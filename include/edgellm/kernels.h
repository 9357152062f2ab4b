// Numerical kernels. Nothing here knows about models: plain arrays and tensor
// views in, arrays out. Each op has a scalar reference; SIMD variants are
// picked once at start-up from the CPU features (EL_ISA can force a level).
#ifndef EDGELLM_KERNELS_H
#define EDGELLM_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "edgellm/core.h"
#include "edgellm/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

// out[n,d] = x[n,k] · W[d,k]ᵀ   (W->ne = {k, d}; any dtype with to_f32)
// Quantized weights are used in place: x is converted once per call to the
// weight type's vec_dot_type and integer dot products run on the blocks.
void el_matmul(el_pool *pool, float *out, const float *x, const el_tensor *W, int n);
// The same with the kernels of one ISA level (tests and benchmarks compare levels).
void el_matmul_isa(el_pool *pool, float *out, const float *x, const el_tensor *W, int n, el_isa isa);
// outs[i][n, d_i] = x[n,k] · Ws[i][d_i,k]ᵀ for i < count, as one job: x is
// quantized once and one pool run covers every product (q/k/v and gate/up
// share their input; a decode step hands out fewer, fuller jobs). Each output
// equals what el_matmul gives.
void el_matmul_many(el_pool *pool, int count, float *const *outs, const float *x, const el_tensor *const *Ws, int n);
void el_matmul_many_isa(el_pool *pool, int count, float *const *outs, const float *x, const el_tensor *const *Ws, int n,
                        el_isa isa);

// ---------------------------------------------------------------- quantized dot products

// Activations in a weight type's vec_dot_type, one row per token:
//   F32:  k floats.
//   Q8_0: int8 qs[k] | float d[k/32] | int32 nsum[k/32], padded to 64 bytes;
//         block b is d[b] * qs[32b ..), nsum[b] = -(sum of its qs). Planar, so
//         SIMD loads whole vectors of quants; not a file layout.
//   Q8_K: k/256 el_block_q8_k (edgellm/quant.h).
// Rounding is to nearest even, so every ISA produces the same bytes.
size_t el_act_row_size(int act_type, int k);
void el_act_quantize(int act_type, const float *x, void *dst, int k);

// Scalar reference dot products of n weights (one row) with one activation
// row; these are the dtype traits' vec_dot.
float el_vec_dot_f32(int n, const void *w, const void *x);
float el_vec_dot_f16(int n, const void *w, const void *x);
float el_vec_dot_bf16(int n, const void *w, const void *x);
float el_vec_dot_q8_0(int n, const void *w, const void *x);
float el_vec_dot_q4_0(int n, const void *w, const void *x);
float el_vec_dot_q4_k(int n, const void *w, const void *x);
float el_vec_dot_q6_k(int n, const void *w, const void *x);

// A tile of a matrix product: out[t*ldo + r] = W[r,·] · X[t,·] for r < nr,
// t < nt; W rows are ldw bytes apart, X rows (activations) ldx bytes apart.
typedef void (*el_gemm_fn)(int k, const void *w, size_t ldw, int nr, const void *x, size_t ldx, int nt, float *out,
                           size_t ldo);
// The tile kernel for weights of dtype at exactly this ISA level, or NULL if
// there is none or this CPU cannot run it (AVX-512 kernels need VNNI).
el_gemm_fn el_gemm_kernel(int dtype, el_isa isa);

// Packed weights: quantized rows interleaved 16 at a time at load time so
// that one VNNI instruction multiplies 16 rows (AVX2: 8 rows per vpmaddubsw);
// two such groups are stored together as a pair (layout in kernels/pack.c).
// The packed kernel for dtype at this ISA level (capped by the CPU's), or
// NULL (then nothing packs): AVX-512 VNNI for every quantized type, AVX2 (or
// AVX-512 without VNNI) for Q8_0 and Q4_0, whose pair layout is the same.
el_gemm_fn el_gemm_packed_kernel(int dtype, el_isa isa);
// Bytes a packed copy of W's first *rows rows takes (*rows: W's rows rounded
// down to 32, whole pairs); 0 if W's dtype or shape has no packed kernel at
// this level.
size_t el_matmul_pack_size(const el_tensor *W, el_isa isa, int64_t *rows);
// Writes that copy to dst (el_matmul_pack_size bytes). Set W->packed and
// W->packed_rows to use it: el_matmul then reads rows below packed_rows from
// it with the packed kernel of the level it runs at, and the rest from
// W->data; at a level without one (scalar; K-quants below AVX-512 VNNI) it
// reads every row from W->data.
void el_matmul_pack(const el_tensor *W, int64_t rows, void *dst);

// Stripes. A decode thread reads its share of a packed product as two runs
// of pairs side by side (the hardware prefetcher follows each), and every
// product is a new pair of runs the prefetcher starts over. A packed copy may
// instead be laid out for `threads` decode threads in 2 x threads stripes:
// stripe s = 2t + r holds the pairs [el_stripe_first(np, threads, s),
// el_stripe_first(np, threads, s + 1)) of thread t's run r, and a model puts
// stripe s of every matrix after stripe s of the one before (model.c), so
// each of a thread's two runs reads on from one product into the next.
// W->packed_stripes = threads and W->stripe[s] (pair first(s) of stripe s)
// describe it; W->packed is stripe 0. El_matmul reads stripes at any pool
// size, and gives thread t the stripes 2t, 2t+1 of a decode when the pool
// has `threads` threads.
static inline int64_t el_stripe_first(int64_t np, int threads, int s) {
    const int t = s / 2;
    const int64_t a = np * t / threads, b = np * (t + 1) / threads;
    return s % 2 ? a + (b - a) / 2 : a;
}
#define EL_MAX_STRIPE_THREADS 32
// The decode kernel of those two runs at any two addresses: one token x np
// pairs (ldw bytes apart in each run), np / 2 from wa side by side with as
// many from wb, then wb's odd last pair; out: 32 outputs a pair, wa's pairs
// first. NULL where the decode of el_gemm_packed_kernel(dtype, isa) reads
// its pairs some other way (then nothing is striped: model.c).
typedef void (*el_gemm_runs_fn)(int k, const void *wa, const void *wb, size_t ldw, int np, const void *x, float *out);
el_gemm_runs_fn el_gemm_runs_kernel(int dtype, el_isa isa);

// ---------------------------------------------------------------- dense f32 products

// C[m, n] = alpha · op(A) · op(B) + beta · C for row-major matrices with leading
// dimensions lda/ldb/ldc (op = transpose when ta/tb): OpenBLAS's sgemm when the
// build found it (single-threaded: el_sgemm_par splits over our pool), else a
// reference loop. Training's products through dequantized weights, LoRA.
void el_sgemm(int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda, const float *B, int ldb,
              float beta, float *C, int ldc);
// The same, split by columns of C across the pool (each part one BLAS call).
void el_sgemm_par(el_pool *pool, int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc);
// Sets the BLAS thread count (process-wide in OpenBLAS); no-op without BLAS.
void el_blas_threads(int n);
const char *el_blas_name(void);

// ---------------------------------------------------------------- encoders

// Encoders (the vision tower) run every token of a sequence at once and keep
// their activations in panels of 32 tokens, feature-major within a panel:
// token t's feature f of F is x[el_panel_index(t, f, F)] =
// x[(t/32)·F·32 + f·32 + t%32]. A buffer of n tokens holds ceil(n/32) whole
// panels; slots past n hold any finite values. Products, attention and layer
// norm read and write that layout, so nothing is repacked between them.
#define EL_PANEL 32
size_t el_panel_index(int t, int f, int F);

// outs[i] (panels of d_i features) = Ws[i][d_i,k] · x (panels of k) + biases[i]
// (per feature; biases or an entry may be NULL), for i < count <= EL_DENSE_MAX
// products of one input. With AVX-512 and f32/f16/bf16 weights: 12 x 32
// register tiles on the pool (kernels/gemm_avx512.c); below that, OpenBLAS
// sgemm on rows of W converted to f32; quantized weights go through el_matmul
// (tokens turned into rows and back). work: el_matmul_p_work floats.
#define EL_DENSE_MAX 4
size_t el_matmul_p_work(int n, int count, const el_tensor *const *Ws);
void el_matmul_p_many_isa(el_pool *pool, int count, float *const *outs, const float *x, const el_tensor *const *Ws,
                          const float *const *biases, int n, float *work, el_isa isa);

// Full (non-causal) attention over one head of n tokens in panels of F
// features, the head's hd features from f0:
// out[t][f0+j] = Σ_s softmax_s(scale · Σ_i q[t][f0+i] k[s][f0+i]) · v[s][f0+j].
// work: el_attn_p_work floats (one per concurrent head).
size_t el_attn_p_work(int n, int hd);
void el_attn_p_isa(float *out, const float *q, const float *k, const float *v, int F, int f0, int n, int hd,
                   float scale, float *work, el_isa isa);

// Causal attention of nq <= EL_ATTN_PANEL query rows of one head at consecutive
// positions p0 .. p0+nq-1 (q[t·ldq + i]) against the f32 keys and values of
// positions k0 .. k0+nk-1 (position s at k[(s-k0)·hd + i], v[(s-k0)·hd + i]):
// a query at position p sees the keys at positions s <= p with p - s < window
// (window 0: all), and must see one. out[t·ldo + j] = Σ_s P[t][s] v[s][j], P
// the softmax of scale · q·k; lse[t·ldl] = log Σ_s exp(scale · q·k) when lse
// is not NULL. v must be readable for nk·hd + 32 floats (the extra values are
// never used). With AVX-512: 12 x 32 tiles (gemm_avx512.c) on the keys
// transposed, kt as el_attn_causal_kt makes it (the heads of a group can share
// one; NULL: made in work), and an online softmax over chunks of keys; then k
// may be NULL. Elsewhere query by query on el_attn_scores, el_softmax and
// el_attn_mix, from k, and el_attn_causal_tiled is 0 (the layer keeps its
// row-by-row path there). work: el_attn_causal_work floats (kt_given: the
// calls pass kt, so work holds no Kᵀ).
#define EL_ATTN_PANEL 36  // three tiles of 12 queries
int el_attn_causal_tiled(el_isa isa);
size_t el_attn_causal_work(int nk, int hd, int kt_given);
// Kᵀ in blocks of 32 keys, each block's elements 32 floats apart (one tile of
// keys is contiguous): key s's element i at kt[(s/32)·32·hd + i·32 + s%32],
// zero past nk up to a whole block; el_attn_causal_kt_floats(nk, hd) floats.
size_t el_attn_causal_kt_floats(int nk, int hd);
void el_attn_causal_kt(float *kt, const float *k, int nk, int hd);
void el_attn_causal_isa(float *out, size_t ldo, float *lse, size_t ldl, const float *q, size_t ldq, int nq, int p0,
                        const float *k, const float *kt, const float *v, int k0, int nk, int hd, int window, float scale,
                        float *work, el_isa isa);

// Layer norm of each token of panels [p0, p1) over its F features (w, b per
// feature, may be NULL); out may be x.
void el_layernorm_p_isa(float *out, const float *x, int F, const float *w, const float *b, int p0, int p1, float eps,
                        el_isa isa);

// ---------------------------------------------------------------- machine probes

// Peak f32 FMA throughput with every pool thread running independent FMA
// chains (widest vectors this CPU has) for about `seconds`, in GFLOP/s
// (2 flops per FMA lane). 0 without AVX2.
double el_probe_fma_gflops(el_pool *pool, double seconds);
// Peak 8-bit integer dot-product throughput the same way, in GOP/s (2 ops
// per multiply-add), from independent vpdpbusd chains; 0 below the AVX-512
// level or without VNNI. With block set, every 8 vpdpbusd also convert, scale
// and accumulate one float result, as the Q8_0/Q4_0 kernels must per 16 rows,
// token and 32-element block: the most those kernels can reach on this CPU.
double el_probe_dot_gops(el_pool *pool, double seconds, int block);
// Read bandwidth in GB/s (1e9 bytes/s): every pool thread streams its share
// of a buffer of `bytes` (make it much larger than the caches); the median
// of reps passes (at most 64), the sustained rate.
double el_probe_read_gbs(el_pool *pool, size_t bytes, int reps);
// The same with the buffer kept (allocated and touched once), for probes
// repeated between other measurements. NULL when the kernels run scalar (no
// AVX2, or EL_ISA=scalar) or without memory; run on NULL gives 0.
typedef struct el_read_probe el_read_probe;
el_read_probe *el_read_probe_new(el_pool *pool, size_t bytes);
double el_read_probe_run(el_read_probe *p, int reps);
void el_read_probe_free(el_read_probe *p);

// sum_i a[i]*b[i]
float el_dot_f32(const float *a, const float *b, int n);
// y[i] += a * x[i]   (y and x do not overlap)
void el_axpy_f32(float *y, float a, const float *x, int n);
// y[i] += x[i]   (y and x do not overlap)
void el_add_f32(float *y, const float *x, int n);

// out[i] = x[i] / sqrt(mean(x²) + eps) * w[i]   over one row of n; returns the
// scale 1/sqrt(mean(x²) + eps) it used
float el_rmsnorm(float *out, const float *x, const float *w, int n, float eps);

// In-place rotary embedding of x[n_heads, head_dim] at position pos: pairs
// (2i, 2i+1) of each head rotate by pos * inv_freq[i] (inv_freq has head_dim/2).
void el_rope(float *x, int n_heads, int head_dim, int pos, const float *inv_freq);
// The GPT-NeoX layout (Qwen2): element i of every head pairs with i + head_dim/2,
// rotated by pos·inv_freq[i].
void el_rope_neox(float *x, int n_heads, int head_dim, int pos, const float *inv_freq);
// inv_freq[i] = theta^(-2i/head_dim)
void el_rope_freqs(float *inv_freq, int head_dim, float theta);
// The widest head el_rope_rotate takes (el_rope and el_rope_neox take any).
#define EL_ROPE_MAX_HD 512
// The rotation of position pos: c[i] = cos(pos·inv_freq[i]), s[i] = sin(..),
// i < half. el_rope_rotate then turns x[n_heads, head_dim] by it in place, in
// el_rope's layout (neox 0) or el_rope_neox's (neox 1): one table serves a
// row's queries and keys, with the same bits as el_rope / el_rope_neox.
void el_rope_table(float *c, float *s, int half, int pos, const float *inv_freq);
void el_rope_rotate(float *x, int n_heads, int head_dim, const float *c, const float *s, int neox);

// In-place softmax of x[0..n)
void el_softmax(float *x, int n);
// Attention over one head: scores[p] = scale * q · k[p], k[p] = k + p * stride
// (p < n, hd elements each); and out[0..hd) += Σ_p w[p] v[p] (accumulated in
// order of p onto what out holds). SIMD when the CPU allows (then the float
// sums are ordered differently from el_dot_f32).
void el_attn_scores(float *scores, const float *q, const float *k, size_t stride, int n, int hd, float scale);
void el_attn_mix(float *out, const float *w, const float *v, size_t stride, int n, int hd);

// ---------------------------------------------------------------- KV cache rows

// One cached key or value row (hd values of one position and kv head) in a
// cache dtype:
//   EL_DTYPE_F32:  hd floats;
//   EL_DTYPE_F16:  hd halves;
//   EL_DTYPE_Q8_0: int8 q[hd], then float d[hd / bs] with bs = 32 when hd is
//                  a multiple of 32, else bs = hd: value i is q[i] * d[i / bs],
//                  d = max|x| / 127 over the block, q rounded to nearest even.
// 0 for any other dtype.
size_t el_kv_row_bytes(int dtype, int hd);
void el_kv_store(int dtype, void *dst, const float *x, int hd);
void el_kv_load(int dtype, float *dst, const void *row, int hd);
// el_attn_scores and el_attn_mix over rows in a cache dtype, stride bytes apart.
void el_attn_scores_kv(int dtype, float *scores, const float *q, const void *k, size_t stride, int n, int hd,
                       float scale);
void el_attn_mix_kv(int dtype, float *out, const float *w, const void *v, size_t stride, int n, int hd);

// h[i] = silu(g[i]) * u[i]
void el_swiglu(float *h, const float *g, const float *u, int n);

// dst[0..n) = src (n elements of dtype, a whole number of blocks) as f32;
// vector conversions for f16 and bf16 when the CPU has them, else the dtype
// table's to_f32 (the same values either way).
void el_to_f32(int dtype, const void *src, float *dst, int64_t n);

// out[i] = (x[i] - mean(x)) / sqrt(var(x) + eps) * w[i] + b[i]   over one row
// of n (w, b may be NULL: 1 and 0). out may be x.
void el_layernorm(float *out, const float *x, const float *w, const float *b, int n, float eps);

// In place, x[i] = x[i] / (1 + e^(-c(x[i]))): GELU in its tanh form,
// 0.5x(1 + tanh(√(2/π)(x + 0.044715x³))), with c(x) = 2√(2/π)(x + 0.044715x³);
// and quick GELU, x·sigmoid(1.702x), with c(x) = 1.702x.
void el_gelu(float *x, int n);
void el_gelu_quick(float *x, int n);

#ifdef __cplusplus
}
#endif
#endif
