// LoRA fine-tuning: a training stage (a contiguous layer range that runs the
// layer of edgellm/layer.h forward and backward, like el_session for
// inference), the loss, AdamW, datasets and checkpoints. The base model stays
// frozen (any dtype with to_f32: QLoRA on quantized bases); only LoRA A/B get
// gradients. Every family inference runs trains: Llama 2/3 (rope scaling),
// Mistral (sliding window), Qwen2 (neox rope, frozen q/k/v biases).
//
// Layout: activations are row-major [n, width] with n = batch · T rows; row
// b·T + t is position t of sequence b.
#ifndef EDGELLM_TRAIN_H
#define EDGELLM_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "edgellm/core.h"
#include "edgellm/layer.h"
#include "edgellm/kernels.h"
#include "edgellm/lora.h"
#include "edgellm/model.h"
#include "edgellm/tokenize.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------- loss
// (The layer's ops, forward and backward, are edgellm/layer.h: one
// definition for inference and training.)

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
