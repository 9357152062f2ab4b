// Split inference: a worker serves a contiguous range of layers to devices
// over a link; a device runs its own stage and hands hidden states to a chain
// of workers. `split/` moves tensors and never interprets layers: the layer
// work is el_session's.
#ifndef EDGELLM_SPLIT_H
#define EDGELLM_SPLIT_H

#include <signal.h>
#include <stdio.h>

#include "edgellm/link.h"
#include "edgellm/lora.h"
#include "edgellm/model.h"
#include "edgellm/sample.h"
#include "edgellm/wire.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------- worker

// A worker's running figures, for a panel or monitoring: make one, set
// el_worker_opts.stats to it, and read it from any thread while the worker runs.
typedef struct el_worker_stats el_worker_stats;
typedef struct {
    uint64_t requests;        // messages handled
    uint64_t bytes_received;  // their payload bytes
    uint64_t busy_ns;         // time spent handling them (compute and the next worker)
    uint64_t kv_bytes;        // KV caches and adapters held now
    int sessions;             // sessions open now
} el_worker_figures;
el_worker_stats *el_worker_stats_new(void);
void el_worker_stats_free(el_worker_stats *s);
void el_worker_stats_read(const el_worker_stats *s, el_worker_figures *out);
// Called by the worker's loop.
void el_worker_stats_note(el_worker_stats *s, size_t bytes, uint64_t busy_ns);
void el_worker_stats_set(el_worker_stats *s, int sessions, size_t kv_bytes);

typedef struct {
    const char *model_path;
    int layer_begin, layer_end;  // the range served; layer_end 0 = to the last layer
    const char *listen;          // endpoint to bind
    el_link_security sec;        // how devices authenticate to us
    const char *next;            // endpoint of the next worker in a chain (NULL: last stage or U-shape only)
    el_link_security next_sec;   // how we authenticate to the next worker
    int threads;
    int max_sessions;          // concurrent sessions (default 64)
    size_t max_kv_bytes;       // KV cache memory over all sessions (default 2 GiB)
    int max_ctx;               // longest session (default: the model's ctx)
    int idle_timeout_ms;       // sessions unused this long are freed (default 120 s)
    int timeout_ms;            // waits on the next worker (default 30 s)
    volatile sig_atomic_t *stop;  // polled; set it (e.g. from a signal handler) to stop
    FILE *log;                 // one line per event (NULL: quiet)
    int max_requests;          // stop after this many requests (0: unlimited; for tests)
    // per client (a CURVE key; on a plaintext link, a connection): its share
    int client_sessions;       // sessions, inference and training (default: half of max_sessions)
    size_t client_mem;         // KV, adapters, queued requests, training memory (default: half of max_kv_bytes)
    size_t client_inflight;    // reply bytes that may wait for it to read them (default 64 MiB); no reply is
                               // larger than a quarter of it
    void (*reply_sink)(void *ctx, const el_peer *peer, const void *data, size_t n);  // listen NULL: replies go here
    void *reply_ctx;
    int kv_type;               // KV cache dtype of every session (EL_DTYPE_F32 default, F16, Q8_0)
    int max_batch_tokens;      // rows per step over all sessions (default 128)
    FILE *stats_out;           // a line of figures every stats_every_s seconds (NULL: none)
    double stats_every_s;
    int stats_json;            // the stats lines as JSON objects
    el_worker_stats *stats;    // kept up to date when set (see el_worker_stats)
    // split fine-tuning (accepted only with train set; see splittrain.h)
    int train;                 // accept training sessions for this range
    int train_per_client;      // one worker-side adapter per device instead of one shared
    int train_avg_timeout_ms;  // federated rounds close this long after their first submission
    const char *train_out;     // folder where worker-side adapters are saved when fetched
    FILE *trace;               // one line per received training message (for privacy checks)
    // Borrowed parts, for a node that serves several models on one socket (el_node):
    el_model *model;           // serve this model's bound layers (model_path and the range are ignored)
    el_link_server *server;    // send replies through it; its owner receives and calls el_worker_feed
    el_pool *pool;             // compute threads shared with other workers
} el_worker_opts;

// Serves until *stop is set. Returns an error only for start-up failures.
el_status el_worker_run(const el_worker_opts *opts, el_error *err);

// The same in parts, for tests and fuzzing: a worker without a socket
// (opts->listen NULL) takes messages from el_worker_feed and sends its
// replies to opts->reply_sink. opts is borrowed for the worker's life.
typedef struct el_worker el_worker;
el_status el_worker_new(const el_worker_opts *opts, el_worker **out, el_error *err);
void el_worker_free(el_worker *w);
// One turn of the serving loop: take what arrived, compute a step (or hold it
// for rows due back), housekeeping.
void el_worker_turn(el_worker *w);
void el_worker_feed(el_worker *w, const el_peer *peer, const void *data, size_t len);
// One step over the rows waiting now; returns how many it computed.
int el_worker_step(el_worker *w);
// Bytes the worker holds for its clients (KV, adapters, requests, training).
size_t el_worker_mem_used(const el_worker *w);
// For an owner that reads the socket (opts->server): how long to wait for
// the next message before el_worker_turn (and whether to spin first).
int el_worker_wait_ms(const el_worker *w, int *spin);
// 1 when a session of this id is open here.
int el_worker_has_session(const el_worker *w, uint64_t id);
// 1 when an OPEN of layers [begin, end) with this identity would be taken.
int el_worker_accepts(el_worker *w, uint32_t layer_begin, uint32_t layer_end, uint64_t identity);
const el_model *el_worker_model(const el_worker *w);

// ---------------------------------------------------------------- device

typedef struct {
    const char *via;          // first worker's endpoint
    el_link_security sec;     // our keys and the pinned server key
    int cuts[EL_WIRE_MAX_STAGES];
    int n_cuts;               // cuts[0] = K: the device runs layers [0, K)
    int act_dtype;            // activations on the wire (f32, f16, bf16, q8_0)
    int ushape;               // the device also runs the final norm + head
    int timeout_ms;           // per request (default 30 s)
    int retries;              // re-open the session and re-send the prefix this many times
    double slowdown;          // emulate a device this many times slower (>= 1; 0 or 1: off)
    FILE *log;                // retry notices (NULL: quiet)
    // Sample on the last worker (not with ushape): the settings travel with
    // the session and the worker returns tokens, not logits
    // (el_pipeline_next_token). NULL: logits come back.
    const el_sampler_params *edge_sampling;
    // Before each retry: may point the pipeline at another first worker (a
    // controller's new route, see controller.h). *via and *server_key start as
    // the current ones and must stay valid until the next call or the end.
    el_status (*reroute)(void *ctx, const char *failed, const char **via, const char **server_key, el_error *err);
    void *reroute_ctx;
} el_split_opts;

// Timing and traffic of the last forward call (and running totals).
typedef struct {
    double device_s;            // compute on the device (embedding, its layers, head for U-shape)
    double link_s;              // round trip minus the workers' compute and queueing: the network's share
    double queue_s;             // time the requests waited at the workers behind other devices' rows
    double worker_s[EL_WIRE_MAX_STAGES];  // each worker's compute
    int n_workers;
    uint64_t bytes_sent, bytes_received;
} el_split_stats;

typedef struct el_pipeline el_pipeline;

// A device-side generator stage. With split == NULL it runs the whole model
// locally; otherwise it runs embedding + layers [0, cuts[0]) (+ head with
// ushape) and the rest on the worker chain. m must have those parts bound.
el_status el_pipeline_new(const el_model *m, const el_session_opts *so, el_pool *pool, const el_split_opts *split,
                          el_pipeline **out, el_error *err);
void el_pipeline_free(el_pipeline *p);
// Runs tokens[0..n) at positions pos..pos+n-1; writes the last position's
// logits (vocab floats) — or every position's with all_rows.
el_status el_pipeline_forward(el_pipeline *p, const int *tokens, int n, int pos, float *logits, int all_rows,
                              el_error *err);
// The same with embedding rows embd[n, dim] as the input in place of token
// ids (an image's projected rows): they enter the device's first layer and
// only hidden states after the device's layers leave it, so a split pipeline
// whose cut is 0 refuses them, and so does one that samples on the edge
// (image rows have no token ids for the worker's sampler). el_pipeline_recut
// cannot rebuild these positions (it re-embeds tokens): do not move the cut
// after using this.
el_status el_pipeline_forward_embd(el_pipeline *p, const float *embd, int n, int pos, float *logits, int all_rows,
                                   el_error *err);
// With edge_sampling: runs tokens[0..n) at pos.. and returns the token the
// last worker sampled from the last position (the sampler there saw every
// token the device sent, as a local sampler would).
el_status el_pipeline_next_token(el_pipeline *p, const int *tokens, int n, int pos, int *next, el_error *err);
// The pipeline's local session.
el_session *el_pipeline_session(el_pipeline *p);
// Applies adapters (set is borrowed and must outlive the pipeline; NULL or
// empty: none) on every stage: the device's session uses them for its layers,
// and the worker chain receives each adapter's matrices for the layers past
// the cut (LORA messages, answered once every stage holds its part), now and
// whenever the chain session is opened again (a retry, a new cut). Call it
// once, before the first forward (positions already run keep what they
// computed); a second call is refused. The matrices past the cut must fit in
// one message (EL_WIRE_MAX_FRAME).
el_status el_pipeline_set_lora(el_pipeline *p, const el_lora_set *set, el_error *err);
// Moves the cut to `cut` (0..n_layers; n_layers = run everything here, keeping
// the link for probes) between tokens: the device re-runs its new layers over
// tokens[0..n_pos) and the worker chain gets a new session with their hidden
// states, so generation continues exactly. The model must bind layers 0:cut
// (and the head for cut = n_layers).
el_status el_pipeline_recut(el_pipeline *p, int cut, const int *tokens, int n_pos, el_error *err);
int el_pipeline_cut(const el_pipeline *p);
// The link to the first worker (NULL when local), e.g. for probes.
el_link *el_pipeline_link(el_pipeline *p);
const el_split_stats *el_pipeline_last(const el_pipeline *p);
const el_split_stats *el_pipeline_total(const el_pipeline *p);

#ifdef __cplusplus
}
#endif
#endif
