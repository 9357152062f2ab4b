// Parameter-sharing inference: one base model serving many users' LoRA
// adapters at once behind an OpenAI-compatible HTTP API (libmicrohttpd).
//
// Three parts, one file each under src/serve/: the request parser (JSON body
// -> el_serve_request, fuzzed), the adapter cache (adapters loaded on first
// use, evicted least-recently-used over a memory budget), and the server
// (HTTP handlers + a scheduler thread running continuous batching with
// el_batch_run).
#ifndef EDGELLM_SERVE_H
#define EDGELLM_SERVE_H

#include <stddef.h>
#include <stdint.h>

#include <stdio.h>

#include "edgellm/core.h"
#include "edgellm/lora.h"
#include "edgellm/model.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------- requests

typedef enum { EL_SERVE_COMPLETION = 1, EL_SERVE_CHAT = 2 } el_serve_kind;

#define EL_SERVE_MAX_STOP 4          // as the OpenAI API
#define EL_SERVE_MAX_STOP_LEN 256    // bytes per stop string
#define EL_SERVE_MAX_MESSAGES 1024
#define EL_SERVE_MAX_TOKENS_CAP 1000000
#define EL_SERVE_MAX_IMAGES 16
// Where an image_url part stood in a message's text: a byte that valid UTF-8
// never contains, so no text can forge one.
#define EL_SERVE_IMAGE_MARKER "\xff"

typedef struct {
    el_serve_kind kind;
    char *model;   // the "model" field: the base's id or an adapter's name
    char *prompt;  // COMPLETION: the prompt text
    int n_messages;            // CHAT
    char **roles, **contents;  // CHAT: [n_messages], text parts joined, EL_SERVE_IMAGE_MARKER per image part
    int n_images;              // CHAT: image_url parts (data: URLs), in order of appearance
    uint8_t *images[EL_SERVE_MAX_IMAGES];  // their decoded bytes (not yet checked as images)
    size_t image_lens[EL_SERVE_MAX_IMAGES];
    int max_tokens;            // 0: not given (the server picks)
    float temperature;         // defaults: el_sampler_defaults(), as run and chat
    float top_p;
    int top_k;                 // extension
    float min_p;               // extension
    float repeat_penalty;      // extension
    int has_seed;
    uint64_t seed;
    int n_stop;
    char *stop[EL_SERVE_MAX_STOP];
    int stream;
    int include_usage;  // stream_options.include_usage
    char bad_param[32];  // on a parse error: the offending field ("" if none)
} el_serve_request;

// Parses an OpenAI request body of the given kind. Unknown fields are
// ignored (clients send many); known fields with wrong types or values are
// errors naming the field (also copied to out->bad_param). out is always
// safe to pass to el_serve_request_free afterwards.
el_status el_serve_request_parse(const char *body, size_t len, el_serve_kind kind, el_serve_request *out,
                                 el_error *err);
void el_serve_request_free(el_serve_request *r);

// ---------------------------------------------------------------- response text

// A growable byte buffer for response bodies; a failed allocation sets oom
// and later appends do nothing.
typedef struct {
    char *data;
    size_t len, cap;
    int oom;
} el_sbuf;

void el_sbuf_free(el_sbuf *b);
void el_sbuf_add(el_sbuf *b, const char *s, size_t n);
void el_sbuf_puts(el_sbuf *b, const char *s);
void el_sbuf_printf(el_sbuf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
// s[0..n) as a quoted JSON string; invalid UTF-8 bytes become U+FFFD.
void el_sbuf_json_str(el_sbuf *b, const char *s, size_t n);

// ---------------------------------------------------------------- adapters

typedef struct el_adapter_cache el_adapter_cache;

typedef struct {
    uint64_t hits, misses, evictions;
    int loaded;    // adapters in memory now
    size_t bytes;  // their parameter bytes
} el_adapter_stats;

// Adapters are files NAME.gguf in dir (dir may be NULL: only those added with
// el_adapter_cache_add), checked against m when loaded. At most max_adapters
// (0: no limit) and mem_budget bytes (0: no limit) stay in memory.
el_status el_adapter_cache_new(const el_model *m, const char *dir, int max_adapters, size_t mem_budget,
                               el_adapter_cache **out, el_error *err);
void el_adapter_cache_free(el_adapter_cache *c);
// Whether name is a valid adapter id: 1..64 of [A-Za-z0-9._-], not starting with '.'.
int el_adapter_name_ok(const char *name);
// The adapter set for name, loaded if needed (a file changed on disk since it
// was loaded is reloaded once no request holds it). Release it when done.
// Unknown name: EL_ERR_ARG; over budget with every loaded adapter in use:
// EL_ERR_NOMEM. Thread-safe.
el_status el_adapter_cache_acquire(el_adapter_cache *c, const char *name, const el_lora_set **out, el_error *err);
void el_adapter_cache_release(el_adapter_cache *c, const el_lora_set *set);
// Registers (or replaces) an adapter by path; it is checked by loading it now.
el_status el_adapter_cache_add(el_adapter_cache *c, const char *name, const char *path, el_error *err);
// Where adapters that do not fit the base are reported (NULL: nowhere).
void el_adapter_cache_set_log(el_adapter_cache *c, FILE *log);
// The names available now (files in dir that are adapters for this base, and
// added ones), sorted, deduplicated. A file in dir is checked against the base
// (loaded) the first time it is listed, and again when it changes; one that
// does not fit is reported to the log once and left out.
// *names is allocated: free each and the array. Returns the count (-1 on OOM).
int el_adapter_cache_list(el_adapter_cache *c, char ***names);
void el_adapter_cache_stats(el_adapter_cache *c, el_adapter_stats *out);

// ---------------------------------------------------------------- server

typedef struct {
    const char *model_path;  // base model (GGUF or llama2.c)
    const char *tok_path;    // tokenizer (NULL: the model's own)
    const char *model_id;    // id of the base in the API (NULL: file name without extension)
    const char *lora_dir;    // adapters (may be NULL)
    int max_adapters;        // in memory at once (0: no limit)
    size_t adapter_mem;      // bytes (0: no limit)
    int slots;               // sequences decoded together (default 16)
    int ctx;                 // per sequence (0: the model's)
    int threads;             // compute threads (0: all CPUs)
    const char *host;        // listen address (NULL: 127.0.0.1)
    int port;                // 0: any free port (see el_server_port)
    const char *const *api_keys;  // accepted bearer keys; none: no authentication
    int n_api_keys;
    size_t max_body;         // request body bytes (default 1 MiB)
    int max_queue;           // waiting requests before 503 (default 256)
    int max_connections;     // default 512
    const char *chat_template;  // template name (NULL: from the model)
    int quiet;               // no per-request log lines on stderr
    int kv_type;             // KV cache dtype (EL_DTYPE_F32 default, F16, Q8_0)
    size_t max_kv;           // KV bytes over all sequences (0: slots x ctx worth)
    int max_batch_tokens;    // rows per step: a decode row per slot plus prompt chunks (0: slots + 64)
    // Per client (an API key; without keys, a remote address): requests it
    // may have waiting (0: half of max_queue) and distinct adapters its
    // requests may hold at once (0: half of max_adapters, or no limit).
    // Free slots go to the client that runs the fewest requests.
    int client_queue;
    int client_adapters;
    // Speculative decoding: every sequence drafts with this model (same
    // vocabulary; NULL: none) or with the base's first draft_layers layers
    // and head (self-drafting), and its k+1 verification rows join the
    // step's batch. draft_k tokens per round (0: auto, per sequence).
    const char *draft_path;
    int draft_layers;
    int draft_k;
    const char *mmproj;      // a projector file: chat messages may carry image_url parts (data: URLs)
} el_serve_opts;

typedef struct el_server el_server;

// Loads the model, opens the adapter cache, starts the scheduler thread and
// the HTTP listener.
el_status el_server_start(const el_serve_opts *o, el_server **out, el_error *err);
int el_server_port(const el_server *s);
// Bytes of KV cache the sequences hold now, and the budget they share.
size_t el_server_kv_bytes(const el_server *s);
size_t el_server_kv_budget(const el_server *s);
// Finished requests, tokens generated, sequences running and waiting now.
void el_server_stats(el_server *s, uint64_t *requests, uint64_t *tokens, int *active, int *queued);
// Stops accepting, cancels requests in flight (streams end with an error
// event), joins the threads and frees everything. Accepts NULL.
void el_server_stop(el_server *s);

// ---------------------------------------------------------------- panel

// A read-only HTTP panel (the page of web/ at /, figures at /metrics) for a
// node that serves no HTTP itself, such as an edge worker (worker --http).
typedef struct el_panel el_panel;
// Appends the node's figures to b as Prometheus text; called on the panel's thread.
typedef void (*el_panel_metrics_fn)(void *ctx, el_sbuf *b);
el_status el_panel_start(const char *host, int port, el_panel_metrics_fn fn, void *ctx, el_panel **out, el_error *err);
int el_panel_port(const el_panel *p);
void el_panel_stop(el_panel *p);

#ifdef __cplusplus
}
#endif
#endif
