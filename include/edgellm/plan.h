// Choosing where to cut: per-layer cost profiles of each node, link
// measurements, and a planner that predicts per-token latency, time to first
// token, bytes and device memory for every candidate cut.
#ifndef EDGELLM_PLAN_H
#define EDGELLM_PLAN_H

#include <stdio.h>

#include "edgellm/link.h"
#include "edgellm/model.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EL_PROFILE_MAX_CTX 8

// What one node measured for one model.
typedef struct {
    char node[64];
    char model[256];
    int threads;
    int n_layers, dim, vocab, n_kv_heads, head_dim;
    int n_ctx;                       // decode measured at these context lengths
    int ctx[EL_PROFILE_MAX_CTX];
    double *decode_s;                // [n_layers][n_ctx]: one token through one layer
    double *prefill_s;               // [n_layers]: per token, in a batch of prefill_batch
    int prefill_batch;
    size_t *weight_bytes;            // [n_layers]
    size_t kv_bytes_per_pos;         // per layer
    double embed_s, head_s;          // per token (head: final norm + output)
    size_t embed_bytes, head_bytes;
    size_t mem_budget;               // bytes available on the node
} el_profile;

typedef struct {
    int threads, reps;
    int ctx[EL_PROFILE_MAX_CTX];
    int n_ctx;
    int prefill_batch;
    FILE *progress;  // progress line (NULL: quiet)
} el_profile_opts;

el_status el_profile_measure(const el_model *m, el_pool *pool, const el_profile_opts *o, el_profile *out, el_error *err);
el_status el_profile_save(const el_profile *p, const char *path, el_error *err);
el_status el_profile_load(const char *path, el_profile *out, el_error *err);
void el_profile_free(el_profile *p);
// Decode time of one layer at context c (linear interpolation between measured contexts).
double el_profile_decode(const el_profile *p, int layer, int c);

// ---------------------------------------------------------------- link

typedef struct {
    double rtt_s;          // round trip of an activation-sized message and its reply
    double up_bps, down_bps;  // bits per second each way
} el_link_profile;

// Measures a live link: throughput each way with bulk messages, and the round
// trip with messages of a decode step's sizes (up_bytes out, down_bytes back).
el_status el_link_probe(el_link *l, size_t up_bytes, size_t down_bytes, el_link_profile *out, el_error *err);

// ---------------------------------------------------------------- planner

typedef enum { EL_OBJ_LATENCY = 0, EL_OBJ_DEVICE_ENERGY = 1, EL_OBJ_BYTES = 2 } el_objective;

typedef struct {
    int cut;          // device runs layers [0, cut); cut == n_layers: all local
    int cut2;         // with a second edge: it runs [cut2, n_layers); cut2 == n_layers: no second edge
    int act_dtype;
    int ushape;
    double decode_s;  // predicted per-token latency
    double device_s, link_s, edge_s, edge2_s;
    double ttft_s;    // predicted time to first token for prompt_tokens
    double bytes_per_token;  // both directions
    size_t device_mem;
    int fits;         // device memory within budget
    double score;     // by objective: lower is better
} el_plan_row;

typedef struct {
    const el_profile *device, *edge;
    const el_profile *edge2;  // optional: a second edge after the first (a chain)
    el_link_profile link;     // device <-> edge
    el_link_profile link2;    // edge <-> edge2
    int ctx;            // context at which decode is evaluated
    int prompt_tokens;  // for time to first token
    size_t device_mem;  // budget (0: the device profile's)
    el_objective objective;
    int acts[4];        // activation dtypes to consider
    int n_acts;
    int allow_ushape;   // consider U-shape candidates too
} el_plan_opts;

// Evaluates every candidate; rows are sorted best first. Returns the count.
int el_plan(const el_plan_opts *o, el_plan_row *rows, int max_rows);

#ifdef __cplusplus
}
#endif
#endif
