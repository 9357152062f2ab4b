// Shared between the HTTP side (http.c) and the scheduler (scheduler.c).
#ifndef EL_SERVE_INTERNAL_H
#define EL_SERVE_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include "edgellm/chat.h"
#include "edgellm/model.h"
#include "edgellm/sample.h"
#include "edgellm/serve.h"
#include "edgellm/spec.h"
#include "edgellm/tokenize.h"
#include "edgellm/vision.h"

// One request. The HTTP thread fills the first part and submits it; the
// scheduler generates into it; both hold a reference (refs) and the last one
// out frees it.
typedef struct job {
    uint64_t id;
    char client[72];  // who asked: "key N" (the Nth --api-key), or the remote address without keys
    int counted;      // the scheduler counts it in its client's running
    el_serve_kind kind;
    int stream, include_usage;
    char model[80];
    const el_lora_set *adapter;  // acquired from the cache (NULL: the base)
    int *prompt;  // token ids; with images, one entry per position: -1 - r for image row r
    int n_prompt;
    int n_images;
    float *pixels;    // [n_images][3][N][N]: preprocessed on the connection's thread
    float *img_rows;  // [n_images][n_patches][dim]: encoded by the scheduler when admitted
    int max_tokens;
    el_sampler_params sp;
    char *stop[EL_SERVE_MAX_STOP + 1];  // + the chat end-of-turn text
    int n_stop;
    double t_submit;

    // scheduler-only state
    el_stopper stopper;  // generated text, with stop strings found and held back

    // shared, under mu
    pthread_mutex_t mu;
    pthread_cond_t cv;
    el_sbuf text;        // generated text the client may see
    int n_gen;           // tokens generated
    int done;            // no more text will come
    const char *finish;  // "stop", "length", or NULL (error)
    char error[300];     // when finish is NULL
    int cancelled;       // the client went away
    int refs;
    struct job *next;  // queue link (server mu)
} job;

typedef struct {
    uint64_t requests_ok, requests_failed, requests_rejected;
    uint64_t prompt_tokens, completion_tokens;
    uint64_t decode_steps, decode_rows, prefills;
    int queue_len, active, last_batch;
} serve_metrics;

typedef struct slot {
    el_session *sess;
    el_sampler *sampler;
    el_drafter *drafter;  // with a draft: this slot's draft session
    el_spec *spec;        // and its request's speculative state (its samplers replace sampler)
    const int *draft_rows;  // rows drafted and not yet verified (n_draft_rows of them)
    int n_draft_rows;
    job *j;    // NULL: free
    int pos;        // next position
    int next;       // next input token
    int prefilled;  // prompt tokens in the cache; < n_prompt: still prefilling
} slot;

struct el_server {
    el_serve_opts o;
    char model_id[80];
    el_model *m;
    el_tokenizer *tok;
    el_pool *pool;
    el_adapter_cache *adapters;
    el_batch *batch;
    el_model *draft;  // the draft model (--draft FILE)
    el_vision *vision;  // --mmproj (NULL: no images)
    slot *slots;
    int n_slots, ctx;
    int chat_template;  // el_chat_template
    char *eot;          // end-of-turn text of the template
    int eot_token;      // the token whose piece is eot (-1: none); ends chat turns
    char **keys;
    int n_keys;
    double t_start;

    pthread_mutex_t mu;  // queue, metrics, stopping
    pthread_cond_t cv;   // the scheduler waits here for work
    job *queue_head, *queue_tail;
    int stopping;
    serve_metrics met;
    uint64_t next_id;
    pthread_t thread;
    int thread_started;
    el_kv_pool *kv;  // every slot's KV blocks count against it
    struct {  // the scheduler's per-step arrays, [n_slots] (logits [n_slots, vocab])
        float *logits;
        el_batch_req *reqs;
        struct slot **rows;
        int *want, *take;
    } sb;
    struct MHD_Daemon *daemon;
    int port;
};

job *job_new(void);
// Per-client share (s->mu held): the client's running requests, and whether
// a request for model (an adapter's name, or the base) keeps the client
// within its adapters (*held: how many distinct ones it holds now).
int sched_client_running(el_server *s, const char *client);
int sched_client_adapter_ok(el_server *s, const char *client, const char *model, int *held);
// Drops one reference; frees the job (and releases its adapter) at zero.
void job_unref(el_server *s, job *j);
// Queues j for the scheduler (takes a reference). Fails when the queue is full
// or the server is stopping.
el_status sched_submit(el_server *s, job *j, el_error *err);
el_status sched_start(el_server *s, el_error *err);
// Cancels everything queued or running and joins the scheduler thread.
void sched_stop(el_server *s);
void sched_free(el_server *s);  // the per-step arrays, after sched_stop

el_status http_start(el_server *s, el_error *err);
// How much of t[0..len) a stream chunk may send (it has sent t[0..from)):
// len, or less so that no UTF-8 character is split across chunks.
size_t el_serve_utf8_cut(const char *t, size_t len, size_t from);
void http_stop(el_server *s);

#endif
