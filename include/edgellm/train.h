// LoRA fine-tuning: forward/backward pairs for every op of the Llama forward
// pass, a training stage (a contiguous layer range that runs forward and
// backward on its own, like el_session for inference), AdamW, datasets and
// checkpoints. The base model stays frozen (any dtype with to_f32: QLoRA on
// quantized bases); only LoRA A/B get gradients.
//
// Layout: activations are row-major [n, width] with n = batch · T rows; row
// b·T + t is position t of sequence b.
#ifndef EDGELLM_TRAIN_H
#define EDGELLM_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "edgellm/core.h"
#include "edgellm/kernels.h"
#include "edgellm/lora.h"
#include "edgellm/model.h"
#include "edgellm/tokenize.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------- ops
// Backward functions ACCUMULATE (+=) into the gradients of their inputs unless
// the comment says otherwise, so a tensor used twice sums its gradients.

// x[n, dim] = E[tokens[i]]            (E: [vocab rows, dim], any readable dtype)
void el_embedding_forward(float *x, const int *tokens, int n, const el_tensor *E);
// dE[tokens[i]] += dx[i]              (dE: [vocab, dim] f32)
void el_embedding_backward(float *dE, const float *dx, const int *tokens, int n, int dim);

// y[n, d] = x · rstd · w,  rstd[n] = 1/sqrt(mean(x²) + eps)   (as el_rmsnorm)
void el_rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, int n, int d, float eps);
// dx[n, d] += ∂/∂x, dw[d] += ∂/∂w (dw may be NULL)
void el_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rstd,
                         int n, int d);

// x[B·T, heads, hd] rotated in place: row b·T+t at position t (pairs 2i, 2i+1)
void el_rope_forward(float *x, int B, int T, int heads, int hd, const float *inv_freq);
// dx in place: the inverse rotation (rotations are orthogonal)
void el_rope_backward(float *dx, int B, int T, int heads, int hd, const float *inv_freq);

// Causal grouped-query attention per sequence b and head h (kv head h/(H/KVH)):
//   P[b,h,t,:] = softmax(q[b,t,h] · k[b,:,kvh]ᵀ / √hd) over positions ≤ t
//   out[b·T+t, h·hd..] = P[b,h,t,:] · v[b,:,kvh]
// q, out: [B·T, H·hd]; k, v: [B·T, KVH·hd]. P is not kept: backward recomputes it.
void el_attention_forward(el_pool *pool, float *out, const float *q, const float *k, const float *v, int B, int T,
                          int H, int KVH, int hd);
// dq, dk, dv are OVERWRITTEN (not accumulated).
void el_attention_backward(el_pool *pool, float *dq, float *dk, float *dv, const float *dout, const float *q,
                           const float *k, const float *v, int B, int T, int H, int KVH, int hd);

// h[n] = silu(g) · u
void el_swiglu_forward(float *h, const float *g, const float *u, int n);
// dg, du OVERWRITTEN
void el_swiglu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, int n);

// A frozen projection with an optional trainable LoRA update:
//   y[n, out] = x[n, in] · Wᵀ + s · (x · Aᵀ) · Bᵀ,   t[n, rank] = x · Aᵀ kept for backward
typedef struct {
    const el_tensor *W;      // [out rows, in], any dtype with to_f32
    const el_lora_mat *lora; // may be NULL
    float s;                 // alpha / rank
} el_linear;
// scratch: el_linear_scratch_floats(W) floats (for dequantized tiles; unused for f32)
size_t el_linear_scratch_floats(const el_tensor *W);
void el_linear_forward(el_pool *pool, float *y, float *t, const float *x, const el_linear *L, int n, float *scratch);
// dx[n, in] += dy · W + s · (dy · B) · A;  dA[rank, in] += s·(dy·B)ᵀ·x;  dB[out, rank] += s·dyᵀ·t
// dx may be NULL (no input gradient); dA/dB NULL when there is no LoRA.
// tmp: n·rank floats.
void el_linear_backward(el_pool *pool, float *dx, float *dA, float *dB, const float *dy, const float *x, const float *t,
                        const el_linear *L, int n, float *scratch, float *tmp);

// Softmax cross-entropy per row: probs[n, V] = softmax(logits) (may alias
// logits), loss[n] = -log probs[target]. Rows with target < 0 get loss 0.
void el_cross_entropy_forward(float *loss, float *probs, const float *logits, const int *targets, int n, int V);
// dlogits[n, V] = dloss[i] · (probs - onehot(target)) (OVERWRITTEN; may alias probs)
void el_cross_entropy_backward(float *dlogits, const float *probs, const int *targets, const float *dloss, int n,
                               int V);


// ---------------------------------------------------------------- stage

// A training stage: layers [layer_begin, layer_end) of the model, plus the
// embedding and/or the head. It keeps the activations of its last forward
// call so that backward can run, and the LoRA gradients of its layers.
typedef struct el_train_stage el_train_stage;

typedef struct {
    int layer_begin, layer_end;  // layer_end 0: the model's bound end
    int batch;                   // sequences per call
    int T;                       // positions per sequence (<= model ctx)
    size_t max_bytes;            // refuse (EL_ERR_NOMEM) activations and gradients above this (0: no limit),
                                 // before allocating past it: a worker's budget for one device
} el_train_opts;

// lora is borrowed: forward reads it, backward accumulates into grads that
// have the layout of lora->params (see el_train_grads).
el_status el_train_stage_new(const el_model *m, const el_lora *lora, const el_train_opts *o, el_pool *pool,
                             el_train_stage **out, el_error *err);
void el_train_stage_free(el_train_stage *st);
// Rows per call (batch · T).
int el_train_rows(const el_train_stage *st);
// Gradient w.r.t. lora->params (n_params floats), accumulated by backward.
float *el_train_grads(el_train_stage *st);
void el_train_zero_grads(el_train_stage *st);
// Bytes of activations and scratch the stage holds.
size_t el_train_activation_bytes(const el_train_stage *st);

// x[rows, dim] = embedding of tokens[rows]
el_status el_train_embed(el_train_stage *st, const int *tokens, float *x, el_error *err);
// x[rows, dim] in place through the stage's layers; keeps activations.
el_status el_train_layers_forward(el_train_stage *st, float *x, el_error *err);
// g[rows, dim] in place: gradient w.r.t. the stage's output in, w.r.t. its
// input out. Accumulates the LoRA gradients. Needs the last forward's activations.
el_status el_train_layers_backward(el_train_stage *st, float *g, el_error *err);
// Final norm, head and masked cross-entropy over x[rows, dim]:
//   *loss = Σ mask·CE / Σ mask (0 when the mask is empty), the mean over
//   the masked tokens. With dx != NULL also writes dx[rows, dim] = ∂(loss·grad_scale)/∂x
//   (dx may be x itself).
// logits (may be NULL) receives the raw logits [rows, vocab] (forward only).
el_status el_train_head(el_train_stage *st, const float *x, const int *targets, const float *mask, double *loss,
                        double *n_tokens, float *dx, float grad_scale, float *logits, el_error *err);

// ---------------------------------------------------------------- optimizer

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    float clip;  // global gradient-norm clip (0: off)
} el_adamw_opts;

// AdamW over n parameters with moment buffers m, v and 1-based step t.
// Returns the gradient norm before clipping. Deterministic (fixed-order sums).
double el_adamw_step(float *params, const float *grads, float *m, float *v, size_t n, uint64_t t,
                     const el_adamw_opts *o, float lr);
// The same step with the clipping norm given: when the parameters are split
// across nodes (split fine-tuning), the norm is over all of them.
void el_adamw_apply(float *params, const float *grads, float *m, float *v, size_t n, uint64_t t,
                    const el_adamw_opts *o, float lr, double norm);
// Σ grads² in a fixed order.
double el_grad_sumsq(const float *grads, size_t n);

// ---------------------------------------------------------------- datasets

typedef enum { EL_DATA_TEXT = 0, EL_DATA_JSONL = 1 } el_data_format;

// Training samples of T+1 tokens: inputs tokens[0..T), targets tokens[1..T],
// a weight per target (0 for padding and, in jsonl, prompt tokens).
typedef struct el_dataset el_dataset;

// text: paragraphs (separated by blank lines) each start with BOS, joined into
//   one stream cut into windows of T+1 tokens (stride T).
// jsonl: one {"prompt": "...", "completion": "..."} per line; a sample is
//   BOS + prompt + completion + EOS, loss only on completion and EOS tokens.
el_status el_dataset_load(const char *path, el_data_format fmt, const el_tokenizer *tok, int T, el_dataset **out,
                          el_error *err);
void el_dataset_free(el_dataset *d);
int el_dataset_size(const el_dataset *d);
// Target tokens with non-zero weight over all samples.
uint64_t el_dataset_tokens(const el_dataset *d);
int el_dataset_truncated(const el_dataset *d);  // jsonl examples longer than T+1
// tokens[T], targets[T] (-1 where masked), mask[T]
void el_dataset_get(const el_dataset *d, int i, int *tokens, int *targets, float *mask);

// One jsonl line: fills prompt and completion (malloc'ed, UTF-8) or says why
// not (with the column). Exposed for tests and the fuzzer.
el_status el_json_prompt_completion(const char *line, size_t len, char **prompt, char **completion, char *why,
                                    size_t why_size);

// ---------------------------------------------------------------- checkpoints

// Everything a run needs to continue exactly where it stopped.
#define EL_CKPT_MAX_ROWS 256
typedef struct {
    uint64_t step;        // optimizer steps done
    uint64_t sample_pos;  // training samples consumed
    uint64_t seed;        // shuffles and A's initialisation derive from it
    uint64_t identity;    // el_model_identity of the base
    uint64_t total_steps;
    int rank, batch, T, accum;
    unsigned targets;
    float alpha, lr;
    // the loss table so far: step, mean train loss, validation loss (NaN: none)
    int n_rows;
    float row_step[EL_CKPT_MAX_ROWS], row_loss[EL_CKPT_MAX_ROWS], row_val[EL_CKPT_MAX_ROWS];
} el_ckpt_meta;

// Writes adapter parameters, AdamW moments m/v (n_params each) and meta to
// path atomically (temporary file, fsync, rename).
el_status el_checkpoint_save(const char *path, const el_lora *lora, const float *m, const float *v,
                             const el_ckpt_meta *meta, el_error *err);
// Reads a checkpoint into an adapter of the same layout (lora->params, m, v
// overwritten) and meta.
el_status el_checkpoint_load(const char *path, el_lora *lora, float *m, float *v, el_ckpt_meta *meta, el_error *err);

#ifdef __cplusplus
}
#endif
#endif
