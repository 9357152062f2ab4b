// Split fine-tuning: the device runs the embedding and its layers (with its
// own LoRA), a worker trains the rest (with its LoRA and optimizer); only
// activations and gradients cross the link. With U-shape the device also
// keeps the head and the loss, so labels never leave it. Several devices may
// train against one worker (split federated learning), sharing one
// worker-side adapter or one each, and averaging their device-side adapters
// through the worker.
#ifndef EDGELLM_SPLITTRAIN_H
#define EDGELLM_SPLITTRAIN_H

#include <stdio.h>

#include "edgellm/link.h"
#include "edgellm/lora.h"
#include "edgellm/model.h"
#include "edgellm/train.h"
#include "edgellm/wire.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------- worker side

typedef struct el_train_server el_train_server;

typedef struct {
    int per_client;          // one worker-side adapter per device (default: one shared)
    int max_clients;         // training sessions at once (default 8)
    int avg_timeout_ms;      // a federated round closes this long after its first submission
    const char *out_dir;     // where TRAIN_GET also saves the worker-side adapter (NULL: nowhere)
    FILE *trace;             // one line per received training message (type, rows, flags) or NULL
    FILE *log;
    // Admission by a worker's clients (NULL: none): admit returns the budget a
    // peer's new training session draws from, or NULL (err filled) when that
    // peer may not open one; closed is told when one of its sessions ends.
    el_kv_pool *(*admit)(void *ctx, const el_peer *peer, el_error *err);
    void (*closed)(void *ctx, const el_peer *peer);
    // Replies go out through this when set (the worker's own path, which
    // counts what a client has not read), else straight to the link.
    void (*send)(void *ctx, const el_peer *peer, const void *data, size_t n);
    void *admit_ctx;
} el_train_server_opts;

el_status el_train_server_new(const el_model *m, el_pool *pool, const el_train_server_opts *o, el_train_server **out,
                              el_error *err);
void el_train_server_free(el_train_server *t);
// Handles a training message (types TRAIN_*; CLOSE of a training session).
// Returns 1 if it was one, 0 if not. Replies go out through srv.
int el_train_server_handle(el_train_server *t, el_link_server *srv, const el_peer *peer, const el_wire_msg *msg);
// Housekeeping between messages: idle sessions and federated-round timeouts.
void el_train_server_tick(el_train_server *t, el_link_server *srv, int idle_ms);
int el_train_server_sessions(const el_train_server *t);

// ---------------------------------------------------------------- device side

typedef struct {
    const char *via;
    el_link_security sec;
    int timeout_ms;
    int ushape;
    int act_dtype, grad_dtype;  // f32 or f16 (or bf16)
    int shared;                 // ask for the shared worker-side adapter
    el_wire_train_open open;    // the worker's part: layers, rank, seed, batch, optimizer settings
} el_split_train_opts;

typedef struct {
    double link_s, worker_s;
    uint64_t bytes_sent, bytes_received;
} el_split_train_stats;

typedef struct el_split_trainer el_split_trainer;

// dev is the device's training stage (embedding + layers [0, cut), head with
// U-shape), borrowed. Opens the training session on the worker.
el_status el_split_trainer_new(const el_model *m, el_train_stage *dev, const el_split_train_opts *o,
                               el_split_trainer **out, el_error *err);
void el_split_trainer_free(el_split_trainer *t);
// One micro-batch forward and backward across both sides; accumulates both
// sides' LoRA gradients. *loss is the batch's mean masked cross-entropy.
el_status el_split_trainer_micro(el_split_trainer *t, const int *tokens, const int *targets, const float *mask,
                                 float grad_scale, double *loss, double *n_tokens, el_error *err);
// Forward only (validation).
el_status el_split_trainer_eval(el_split_trainer *t, const int *tokens, const int *targets, const float *mask,
                                double *loss, double *n_tokens, el_error *err);
// Optimizer step on both sides with the global gradient norm; the device
// steps dev_params with m, v. Zeroes the device gradients. Returns the norm.
el_status el_split_trainer_step(el_split_trainer *t, uint64_t step, float lr, float *dev_params, float *m, float *v,
                                size_t n, const el_adamw_opts *ao, double *norm, el_error *err);
// The worker-side adapter's parameters (n floats).
el_status el_split_trainer_fetch(el_split_trainer *t, float *params, size_t n, el_error *err);
// Federated averaging of the device-side adapter (weight: samples seen since
// the last round); params is replaced by the weighted average over devices.
el_status el_split_trainer_average(el_split_trainer *t, float *params, size_t n, double weight, el_error *err);
const el_split_train_stats *el_split_trainer_stats(const el_split_trainer *t);

#ifdef __cplusplus
}
#endif
#endif
