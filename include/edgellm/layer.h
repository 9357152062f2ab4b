// One transformer layer of the Llama family (Llama 2 and 3, Mistral, Qwen2,
// SmolLM): every op as a forward/backward pair, and the layer built from them.
// This is the one definition of the model's arithmetic: inference
// (model/forward.c: sessions, the KV cache in blocks, batched steps) runs
// el_layer_forward; training (train/stage.c: activations kept, LoRA
// gradients) runs el_layer_forward and el_layer_backward.
//
// Shapes, once for the whole file: a call works on n rows (tokens), each
// activation row-major [n, width]. dim is the model width; H heads and KVH kv
// heads of hd values each, qd = H·hd, kvd = KVH·hd; ff the feed-forward width;
// r a LoRA rank. A weight matrix W with `out` rows of `in` values has
// ne = {in, out} (edgellm/tensor.h) and y = x·Wᵀ.
//
// Backward functions ACCUMULATE (+=) into the gradients of their inputs unless
// the comment says OVERWRITTEN, so a tensor used twice sums its gradients.
// tests/unit/test_layer.c checks every backward against central finite
// differences of a double-precision reference, per op and per family variant.
#ifndef EDGELLM_LAYER_H
#define EDGELLM_LAYER_H

#include <stddef.h>
#include <stdint.h>

#include "edgellm/core.h"
#include "edgellm/lora.h"
#include "edgellm/model.h"
#include "edgellm/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------- embedding

// x[n, dim] = E[tokens[i]]            (E: [vocab rows, dim], any dtype with to_f32)
void el_embedding_forward(float *x, const int *tokens, int n, const el_tensor *E);
// dE[tokens[i]] += dx[i]              (dE: [vocab, dim] f32)
void el_embedding_backward(float *dE, const float *dx, const int *tokens, int n, int dim);

// ---------------------------------------------------------------- RMSNorm

// y[n, d] = x · rstd · w,  rstd[n] = 1/sqrt(mean(x²) + eps), kept when rstd != NULL
void el_rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, int n, int d, float eps);
// dx[n, d] += ∂/∂x, dw[d] += ∂/∂w (dw may be NULL)
void el_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rstd,
                         int n, int d);

// ---------------------------------------------------------------- rotary embedding

// One row x[heads, hd] at position pos, in place: pairs (2i, 2i+1)
// (EL_ROPE_NORMAL) or (i, i + hd/2) (EL_ROPE_NEOX, Qwen2) rotate by
// pos·inv_freq[i]; inv_freq[hd/2] carries the model's rope scaling (linear,
// Llama 3.1 frequency divisors: el_model_rope_freqs).
void el_rope_forward(float *x, int heads, int hd, int pos, const float *inv_freq, el_rope_type type);
// dx in place: the transposed rotation, which is the rotation by -pos·inv_freq[i]
void el_rope_backward(float *dx, int heads, int hd, int pos, const float *inv_freq, el_rope_type type);

// ---------------------------------------------------------------- attention

// Where one sequence's keys and values are: in blocks of `block` positions,
// rows pos_stride bytes apart inside a block, kv head h's rows head_stride
// bytes after head 0's. The row of (K or V, kv head h, position p) is
//   blocks[kv][p / block] + off[kv] + h·head_stride + (p % block)·pos_stride.
// A session's cache (model/forward.c) and a training context (rows of one
// contiguous array) are both such views.
typedef struct {
    int dtype;               // EL_DTYPE_F32, F16 or Q8_0 rows (el_kv_row_bytes)
    int block;               // positions per block
    size_t pos_stride;       // bytes from one position to the next inside a block
    size_t head_stride;      // bytes from one kv head to the next
    uint8_t *const *blocks[2];  // [0] keys, [1] values: the block holding position p is [p / block]
    size_t off[2];              // bytes into a block where kv head 0's keys [0] / values [1] start
} el_kv_view;

// Causal grouped-query attention over training contexts: rows b·T .. b·T+T-1
// are positions 0..T-1 of sequence b; head h reads kv head h/(H/KVH); a row
// at position t attends to positions max(0, t+1-window) .. t (window 0: all).
//   out[b·T+t, h] = Σ_p P[t,p] v[b·T+p, kvh],  P[t,:] = softmax(q[b·T+t, h] · k[b·T+p, kvh] / √hd)
//   lse[b·T+t, h] = log Σ_p exp(q·k/√hd) (kept for backward; may be NULL)
// q, out: [B·T, qd]; k, v: [B·T, kvd]. The same row routine as the layer's
// attention over a session's cache.
void el_attention_forward(el_pool *pool, float *out, float *lse, const float *q, const float *k, const float *v, int B,
                          int T, int H, int KVH, int hd, int window);
// dq, dk, dv OVERWRITTEN, from dout and the forward's q, k, v, out and lse
// (P recomputed from them, never stored). D: [B·T, H] scratch. Returns -1
// when a task could not get its scratch (tiles of 64 x T floats), else 0.
int el_attention_backward(el_pool *pool, float *dq, float *dk, float *dv, const float *dout, const float *q,
                           const float *k, const float *v, const float *out, const float *lse, int B, int T, int H,
                           int KVH, int hd, int window, float *D);

// ---------------------------------------------------------------- SwiGLU

// h[n] = silu(g) · u   (h may be g)
void el_swiglu_forward(float *h, const float *g, const float *u, int n);
// dg, du OVERWRITTEN
void el_swiglu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, int n);

// ---------------------------------------------------------------- frozen projections

// ys[i][n, out_i] = x[n, in] · Ws[i]ᵀ for i < count (one input, several
// weights: q/k/v, gate/up). The inference kernels (el_matmul_many: packed
// copies, integer dot products on quantized blocks) compute them, except with
// dense set for weights that have no packed copy (f32, f16, bf16): those are
// dequantized a tile at a time into scratch and multiplied with f32 BLAS,
// which is faster for the hundreds of rows of a training step (measured in
// docs/finetune.md).
void el_proj_forward(el_pool *pool, int count, float *const *ys, const float *x, const el_tensor *const *Ws, int n,
                     int dense, float *scratch);
// Floats of scratch el_proj_forward (dense) and el_proj_backward need for W.
size_t el_proj_scratch_floats(const el_tensor *W);
// dx[n, in] += dy[n, out] · W   (W dequantized a tile at a time; f32 BLAS)
void el_proj_backward(el_pool *pool, float *dx, const float *dy, const el_tensor *W, int n, float *scratch);

// ---------------------------------------------------------------- LoRA

// y[n, out] += s · t · Bᵀ  with  t[n, r] = x[n, in] · Aᵀ  (A, B: mt; s = scale·alpha/r).
// t keeps x·Aᵀ for backward; NULL: computed in stack chunks and dropped.
void el_lora_forward(el_pool *pool, float *y, float *t, const float *x, const el_lora_mat *mt, float s, int n);
// dx[n, in] += s·(dy·B)·A (dx may be NULL);  dA[r, in] += s·(dy·B)ᵀ·x;  dB[out, r] += s·dyᵀ·t.
// tmp: n·r floats.
void el_lora_backward(el_pool *pool, float *dx, float *dA, float *dB, const float *dy, const float *x, const float *t,
                      const el_lora_mat *mt, float s, int n, float *tmp);

// ---------------------------------------------------------------- the layer

// What one call of the layer reads.
typedef struct {
    const el_model *m;
    int layer;
    el_pool *pool;
    int n;                  // rows
    const int *pos;         // [n] each row's position in its sequence (rope; it attends to positions up to it)
    const float *inv_freq;  // [hd/2] rotary frequencies with the model's scaling (el_model_rope_freqs)
    // Where row r's sequence keeps its keys and values at this layer: a
    // session's cache, which the layer extends by the rows' own (inference).
    // NULL: the rows are training contexts of T positions (el_attention_forward's
    // layout) and their own keys and values are all there is.
    void (*kv)(const void *ctx, int row, el_kv_view *view);
    const void *kv_ctx;
    int T;
    // Adapters by segments of rows: rows seg_start[i] .. seg_start[i+1]-1 (cut
    // at n) use seg_lora[i] (NULL: none). Each segment costs one low-rank product.
    int n_seg;
    const int *seg_start;
    const el_lora_set *const *seg_lora;
    int dense;       // el_proj_forward's dense (training)
    float *scratch;  // el_proj_scratch_floats of the largest projection (dense, backward)
} el_layer_io;

// The layer's activations. Inference points them at one step's scratch
// (nothing kept: one buffer serves xn1 and xn2, h is g); training keeps one
// set per layer for backward.
typedef struct {
    float *x_in, *x_mid;   // [n, dim] inputs of the attention and feed-forward blocks (NULL: not kept)
    float *xn1, *xn2;      // [n, dim] their RMSNorm outputs
    float *rstd1, *rstd2;  // [n] (NULL: not kept)
    float *q, *k, *v;      // [n, qd], [n, kvd], [n, kvd]: biases added, q and k rotated
    float *ao;             // [n, qd] attention output
    float *lse;            // [n, H] attention log-sum-exp (NULL: not kept)
    float *g, *u, *h;      // [n, ff] gate, up, silu(g)·u (h may be g)
    float *t[EL_LORA_N_TARGETS];  // [n, r] x·Aᵀ per adapted projection (NULL: not kept)
    float *proj;           // [n, dim] scratch
} el_layer_acts;

// x[n, dim] += Attention(RMSNorm(x)); x += FFN(RMSNorm(x)), in place:
//   n1 = RMSNorm(x; attn_norm)
//   q, k, v = n1·Wq/k/vᵀ (+ LoRA) (+ Qwen2's biases); q, k rotated at each row's position
//   x += Wo·Attention(q, k, v) (+ LoRA)
//   n2 = RMSNorm(x; ffn_norm)
//   x += W_down·(silu(n2·W_gateᵀ) ⊙ n2·W_upᵀ) (+ LoRA on all three)
// Returns -1 when attention could not get its scratch (out of memory), else 0.
int el_layer_forward(const el_layer_io *io, el_layer_acts *a, float *x);

// Training's extra buffers for el_layer_backward.
typedef struct {
    const el_lora *lora;  // the adapter being trained: io's only adapter, at scale 1 (may be NULL)
    float *grads;         // ∂loss/∂lora->params, accumulated (el_lora_offset gives each matrix's place)
    float *dxn;           // [n, dim]
    float *dao, *dq;      // [n, qd]
    float *dk, *dv;       // [n, kvd]
    float *dh, *dg, *du;  // [n, ff]
    float *D;             // [n, H]
    float *tmp;           // [n, max rank]
} el_layer_grad;

// g[n, dim]: ∂loss/∂(layer output) in, ∂loss/∂(layer input) out, from the
// activations el_layer_forward kept (a training call: io->kv NULL, every
// kept buffer set). Accumulates the LoRA gradients; the frozen weights and
// biases get none. Returns -1 when attention could not get its scratch, else 0.
int el_layer_backward(const el_layer_io *io, const el_layer_acts *a, const el_layer_grad *gr, float *g);

#ifdef __cplusplus
}
#endif
#endif
