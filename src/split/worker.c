// The worker: serves a range of layers to many devices at once. FORWARD
// requests queue per session; each step runs the range once over rows of
// every session that has work (el_batch_run), decode rows whole and prefills
// in chunks, shared by el_batch_plan so that nobody waits for long. Nothing
// here waits on a device: replies are sent without blocking, and a worker
// with a next stage hands its rows on and serves others while that stage
// computes (replies come back by sequence number). Every message is decoded
// with its lengths checked, and any problem is answered with an ERROR.
#include <sodium.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "edgellm/kernels.h"
#include "edgellm/lora.h"
#include "edgellm/sample.h"
#include "edgellm/split.h"
#include "edgellm/splittrain.h"

// Most FORWARDs a session may have queued here (the one running included).
#define MAX_QUEUED 4

// One FORWARD: waiting, being computed in chunks, or (at a middle stage)
// passed on and waiting for the next stage's reply.
typedef struct wreq {
    el_kv_pool *mem;   // the client's share its buffers are counted in
    size_t bytes;      // ... and how much
    uint32_t seq;
    int pos, n, done;  // rows [0, done) computed
    uint8_t flags;     // EL_FWD_*
    float *x;          // [n, dim] input rows; the rows after our layers replace them as they are computed
    int32_t *tokens;   // [n] with EL_FWD_TOKENS
    float *logits;     // the head's rows (last stage, logits or tokens wanted)
    uint64_t t_arrive, t_start, compute_ns;
    struct wreq *next;
} wreq;

enum { S_OPENING, S_READY };

// Who a session belongs to (el_peer.client: a CURVE key, or one plaintext
// connection). Everything its sessions make the worker hold counts against
// its share of the budget: sessions, KV blocks, adapters, queued requests,
// logits waiting to be sent, training memory.
typedef struct {
    char key[72];
    int sessions;        // inference and training
    el_kv_pool *mem;     // its share of --max-kv (a child of the worker's pool)
    atomic_size_t held;  // reply bytes sent to it that ZeroMQ still holds (it has not read them)
} wclient;

typedef struct {
    uint64_t id;
    el_peer peer;
    wclient *client;
    int state;
    el_session *s;
    int layer_begin;     // first layer this session runs (the worker's range or a tail of it)
    el_lora_set *lora;   // adapters the device sent (LORA), owned; NULL: none
    size_t lora_bytes;   // their memory, counted in the KV pool
    int next_pos;        // positions the queued and computed FORWARDs reach
    int computed;        // positions whose keys and values are in the cache
    int want, act_dtype, max_batch, ctx;
    int ushape;          // last stage returning hidden states
    el_sampler *sampler; // last stage returning tokens
    uint64_t down_session;  // session on the next worker (0: none)
    double last_used;
    wreq *head, *tail;
    int n_queued;
    // how soon a decoding device answers: for gathering its next row into a step
    int decoding;           // its last request was a decode row (or a few)
    uint64_t t_reply_ns;    // when its last reply went out
    uint64_t turn_ns;       // running mean of reply -> next request
} wsession;

// A message sent to the next worker whose reply we still wait for.
typedef struct {
    uint32_t seq;
    uint16_t type;        // what we sent: OPEN, FORWARD, LORA, CLOSE
    uint64_t session;     // our session (0: gone; the reply is dropped)
    uint32_t up_seq;      // the device's request it answers
    uint64_t deadline_ns;
    el_wire_hop hop;      // FORWARD: our timing, put in front of the chain's
    uint64_t t_sent;
    el_lora *lora;        // LORA: our part of the adapter, installed on OK
    float scale;
    size_t bytes;         // ... and its memory, counted in mem
    el_kv_pool *mem;
    int kept;
    int decoding;         // FORWARD: a decode row (or a few)
} pending;

typedef struct el_worker worker;
struct el_worker {
    const el_worker_opts *o;
    int timeout_ms;  // waits on the next worker
    wclient **clients;
    int n_clients, cap_clients;
    int client_sessions;  // per-client limits
    size_t client_mem;
    size_t client_inflight;
    size_t max_reply;     // no reply is larger: the client's in-flight budget over the messages queued per peer
    uint64_t next_max_reply;  // what the next worker allows us (0: no limit)
    el_model *m;
    el_pool *pool;
    el_link_server *srv;
    el_link *next;
    el_train_server *train;
    el_kv_pool *kv;      // KV blocks and adapters of every session (--max-kv)
    el_batch *batch;     // the step engine
    int max_rows;        // --max-batch-tokens
    uint64_t *identity;  // per possible start layer, computed when first asked
    int is_last;
    wsession *sessions;
    int n_sessions, cap_sessions;
    pending *pend;
    int n_pend, cap_pend;
    uint32_t down_seq;
    int cursor;          // el_batch_plan's rotation
    el_buf out, down_tx, down_rx;
    // per step, [max sessions in a step]
    el_batch_req *reqs;
    int *want, *take;
    uint64_t *cand, *ids;  // candidates' and requests' session ids
    // statistics since the last --stats-every line
    struct {
        uint64_t steps, rows, max_rows, step_ns, queue_ns, started;
        double t0;
    } st;
    uint64_t total_steps, total_rows;
    uint64_t step_ns_avg;  // running mean of a step's time
    uint64_t t_empty;      // when the device socket was last seen empty
    uint64_t hold_since;   // when gather() first held the coming step back (0: not holding)
    int stepped;           // a step ran since the socket was last drained
    int hold;              // gather() held the last turn's step
    long handled;          // messages taken
    double last_tick;
    int idle_ms;
    el_buf in;
};

static void wlog(worker *w, const char *fmt, ...) {
    if (!w->o->log) return;
    char prefix[48];
    snprintf(prefix, sizeof prefix, "worker %d:%d: ", w->m->layer_begin, w->m->layer_end);
    va_list ap;
    va_start(ap, fmt);
    el_vlogf(w->o->log, prefix, fmt, ap);
    va_end(ap);
}

static void drop_session(worker *w, int i, const char *why);

static wsession *find_id(worker *w, uint64_t id) {
    for (int i = 0; i < w->n_sessions; i++)
        if (w->sessions[i].id == id) return &w->sessions[i];
    return NULL;
}

// Sends w->out to a peer. A peer that is gone or does not read loses its
// sessions here; nobody else waits for it.
static wclient *client_of(worker *w, const el_peer *peer);

static void send_bytes(worker *w, const el_peer *peer, const void *data, size_t len) {
    el_error e;
    if (!w->srv) {  // no socket (tests, fuzzing): the caller's sink sees the reply
        if (w->o->reply_sink) w->o->reply_sink(w->o->reply_ctx, peer, data, len);
        return;
    }
    // What a client has not read counts against its in-flight budget: one
    // that does not read loses its sessions, and the worker holds no more
    // for it than the budget.
    wclient *c = client_of(w, peer);
    size_t held = c ? atomic_load(&c->held) : 0;
    if (c && held + len > w->client_inflight)
        el_err(&e, EL_ERR_STATE, "a peer of client %.12s... does not read its replies (%zu bytes waiting, %zu more)", c->key,
               held, len);
    else if (el_link_server_send_counted(w->srv, peer, data, len, c ? &c->held : NULL, &e) == EL_OK)
        return;
    wlog(w, "%s", e.msg);
    for (int i = w->n_sessions - 1; i >= 0; i--)
        if (w->sessions[i].peer.len == peer->len && !memcmp(w->sessions[i].peer.id, peer->id, peer->len))
            drop_session(w, i, "its device does not take replies");
}

static void send_out(worker *w, const el_peer *peer) { send_bytes(w, peer, w->out.data, w->out.len); }

static void train_send(void *ctx, const el_peer *peer, const void *data, size_t n) { send_bytes(ctx, peer, data, n); }

static void reply_error(worker *w, const el_peer *peer, uint64_t session, uint32_t seq, uint32_t code, const char *fmt,
                        ...) {
    char text[EL_WIRE_MAX_TEXT];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    wlog(w, "error to peer: %s", text);
    if (el_wire_encode_error(&w->out, session, seq, code, text) == EL_OK) send_out(w, peer);
}

static wsession *find_session(worker *w, uint64_t id, const el_peer *peer) {
    wsession *s = find_id(w, id);
    // A session belongs to the connection that opened it.
    if (!s || s->peer.len != peer->len || memcmp(s->peer.id, peer->id, peer->len)) return NULL;
    return s;
}

// ---------------------------------------------------------------- clients

// The client a peer is, made on first sight (NULL: out of memory).
static wclient *client_of(worker *w, const el_peer *peer) {
    for (int i = 0; i < w->n_clients; i++)
        if (!strcmp(w->clients[i]->key, peer->client)) return w->clients[i];
    if (w->n_clients == w->cap_clients) {
        int cap = w->cap_clients ? 2 * w->cap_clients : 16;
        wclient **g = realloc(w->clients, (size_t)cap * sizeof *g);
        if (!g) return NULL;
        w->clients = g;
        w->cap_clients = cap;
    }
    wclient *c = calloc(1, sizeof *c);
    if (!c || !(c->mem = el_kv_pool_new_child(w->kv, w->client_mem))) {
        free(c);
        return NULL;
    }
    snprintf(c->key, sizeof c->key, "%s", peer->client);
    atomic_init(&c->held, 0);
    w->clients[w->n_clients++] = c;
    return c;
}

// Forgets clients that hold nothing any more.
static void prune_clients(worker *w) {
    for (int i = w->n_clients - 1; i >= 0; i--) {
        wclient *c = w->clients[i];
        if (c->sessions || el_kv_pool_used(c->mem) || atomic_load(&c->held)) continue;
        el_kv_pool_free(c->mem);
        free(c);
        w->clients[i] = w->clients[--w->n_clients];
    }
}

// Counts n bytes against a client's share (0: they do not fit).
static int client_take(wclient *c, size_t n) { return el_kv_pool_take(c->mem, n); }

// ---------------------------------------------------------------- requests

static void req_free(wreq *r) {
    if (!r) return;
    if (r->mem) el_kv_pool_give(r->mem, r->bytes);
    el_free_aligned(r->x);
    free(r->tokens);
    free(r->logits);
    free(r);
}

static wreq *pop_head(wsession *s) {
    wreq *r = s->head;
    if (!r) return NULL;
    s->head = r->next;
    if (!s->head) s->tail = NULL;
    s->n_queued--;
    return r;
}

// ---------------------------------------------------------------- the next worker

static pending *pend_add(worker *w, uint16_t type, uint64_t session, uint32_t up_seq) {
    if (w->n_pend == w->cap_pend) {
        int cap = w->cap_pend ? 2 * w->cap_pend : 16;
        pending *p = realloc(w->pend, (size_t)cap * sizeof *p);
        if (!p) return NULL;
        w->pend = p;
        w->cap_pend = cap;
    }
    pending *p = &w->pend[w->n_pend++];
    memset(p, 0, sizeof *p);
    p->seq = w->down_seq;
    p->type = type;
    p->session = session;
    p->up_seq = up_seq;
    p->t_sent = el_time_ns();
    p->deadline_ns = p->t_sent + (uint64_t)w->timeout_ms * 1000000ULL;
    return p;
}

static void pend_remove(worker *w, int i) {
    el_lora_free(w->pend[i].lora);
    w->pend[i] = w->pend[--w->n_pend];
}

// Sends w->down_tx (already addressed with seq ++down_seq) to the next
// worker and remembers what the reply answers; NULL if it cannot be sent.
static pending *down_send(worker *w, uint16_t type, uint64_t session, uint32_t up_seq, el_error *err) {
    if (el_link_send(w->next, w->down_tx.data, w->down_tx.len, err)) return NULL;
    pending *p = pend_add(w, type, session, up_seq);
    if (!p) el_err(err, EL_ERR_NOMEM, "out of memory");
    return p;
}

// Tells the next worker to free a session; its OK is not waited for.
static void close_downstream(worker *w, uint64_t down) {
    if (!w->next || !down) return;
    uint32_t seq = ++w->down_seq;
    if (el_wire_encode_simple(&w->down_tx, EL_MSG_CLOSE, down, seq) == EL_OK) down_send(w, EL_MSG_CLOSE, 0, 0, NULL);
}

static void drop_session(worker *w, int i, const char *why) {
    wsession *s = &w->sessions[i];
    wlog(w, "session %016llx closed (%s), %d left", (unsigned long long)s->id, why, w->n_sessions - 1);
    close_downstream(w, s->down_session);
    for (int k = 0; k < w->n_pend; k++)  // replies still to come are dropped
        if (w->pend[k].session == s->id) w->pend[k].session = 0;
    while (s->head) req_free(pop_head(s));
    el_session_free(s->s);
    el_sampler_free(s->sampler);
    if (s->lora)
        for (int k = 0; k < s->lora->n; k++) el_lora_free((el_lora *)s->lora->lora[k]);
    free(s->lora);
    if (s->client) {
        el_kv_pool_give(s->client->mem, s->lora_bytes);
        s->client->sessions--;
    }
    w->sessions[i] = w->sessions[--w->n_sessions];
}

// ---------------------------------------------------------------- OPEN

// OPENED carries the largest reply this chain will send (u64): a device
// asks for fewer rows at a time when every row's logits would be more.
static void send_opened(worker *w, const el_peer *peer, uint64_t session, uint32_t seq) {
    uint64_t max = w->max_reply;
    if (w->next_max_reply && w->next_max_reply < max) max = w->next_max_reply;
    uint8_t body[8];
    for (int i = 0; i < 8; i++) body[i] = (uint8_t)(max >> (8 * i));
    if (el_wire_encode_ping(&w->out, EL_MSG_OPENED, seq, body, 8) != EL_OK) return;
    for (int i = 0; i < 8; i++) w->out.data[8 + i] = (uint8_t)(session >> (8 * i));
    send_out(w, peer);
}

static void handle_open(worker *w, const el_peer *peer, const el_wire_msg *msg) {
    el_error e;
    el_wire_open o;
    const el_hparams *h = &w->m->hp;
    if (el_wire_decode_open(msg, &o, &e)) {
        reply_error(w, peer, 0, msg->seq, EL_WERR_PROTOCOL, "bad OPEN: %s", e.msg);
        return;
    }
    const el_wire_stage *st = &o.stages[0];
    if (o.n_layers != (uint32_t)h->n_layers || o.dim != (uint32_t)h->dim || o.vocab != (uint32_t)h->vocab) {
        reply_error(w, peer, 0, msg->seq, EL_WERR_MISMATCH,
                    "model mismatch: worker has %d layers, dim %d, vocab %d; device has %u, %u, %u (load the same "
                    "file on both sides)", h->n_layers,
                    h->dim, h->vocab, o.n_layers, o.dim, o.vocab);
        return;
    }
    // A worker serves its range or any tail of it (a planner may move the cut
    // within it); the end is fixed because the next worker starts there.
    if (st->layer_begin < (uint32_t)w->m->layer_begin || st->layer_end != (uint32_t)w->m->layer_end) {
        reply_error(w, peer, 0, msg->seq, EL_WERR_MISMATCH,
                    "this worker serves layers %d:%d (or a tail of them), the device asked for %u:%u",
                    w->m->layer_begin, w->m->layer_end, st->layer_begin, st->layer_end);
        return;
    }
    uint64_t *id = &w->identity[st->layer_begin - (uint32_t)w->m->layer_begin];
    if (!*id) *id = el_model_identity(w->m, (int)st->layer_begin, w->m->layer_end);
    if (st->identity != *id) {
        reply_error(w, peer, 0, msg->seq, EL_WERR_MISMATCH,
                    "model mismatch: layers %u:%d of %s (identity %016llx) differ from the device's (%016llx) in "
                    "their weights, tensor types or names: load the same file on both sides (a converted or "
                    "quantized copy is another model)",
                    st->layer_begin, w->m->layer_end, w->m->path, (unsigned long long)*id,
                    (unsigned long long)st->identity);
        return;
    }
    int last = st->layer_end == (uint32_t)h->n_layers;
    if (last && o.n_stages != 1) {
        reply_error(w, peer, 0, msg->seq, EL_WERR_MISMATCH, "this worker is the last stage but %u stages follow", o.n_stages - 1);
        return;
    }
    if (!last && o.n_stages < 2) {
        reply_error(w, peer, 0, msg->seq, EL_WERR_MISMATCH, "layers %u:%u were not assigned to any stage",
                    st->layer_end, h->n_layers);
        return;
    }
    if (!last && !w->next) {
        reply_error(w, peer, 0, msg->seq, EL_WERR_MISMATCH, "this worker has no --next worker for layers %u:%u",
                    st->layer_end, h->n_layers);
        return;
    }
    if (!el_wire_act_supported(o.act_dtype)) {
        reply_error(w, peer, 0, msg->seq, EL_WERR_PROTOCOL, "activation dtype %u is not supported", o.act_dtype);
        return;
    }
    if (last && o.want != EL_WANT_HIDDEN && !w->m->has_head) {
        reply_error(w, peer, 0, msg->seq, EL_WERR_MISMATCH, "the output head is not loaded on this worker");
        return;
    }
    int max_ctx = w->o->max_ctx > 0 ? w->o->max_ctx : h->ctx;
    if (o.ctx == 0 || o.ctx > (uint32_t)max_ctx || o.max_batch == 0 || o.max_batch > o.ctx) {
        reply_error(w, peer, 0, msg->seq, EL_WERR_LIMIT, "context %u / batch %u outside this worker's limit of %d",
                    o.ctx, o.max_batch, max_ctx);
        return;
    }
    int max_sessions = w->o->max_sessions > 0 ? w->o->max_sessions : 64;
    if (w->n_sessions >= max_sessions) {
        reply_error(w, peer, 0, msg->seq, EL_WERR_LIMIT, "worker is full (%d sessions)", w->n_sessions);
        return;
    }
    wclient *client = client_of(w, peer);
    if (!client) {
        reply_error(w, peer, 0, msg->seq, EL_WERR_LIMIT, "out of memory");
        return;
    }
    if (client->sessions >= w->client_sessions) {
        reply_error(w, peer, 0, msg->seq, EL_WERR_LIMIT, "this client has %d sessions already (the limit per client is %d)",
                    client->sessions, w->client_sessions);
        return;
    }
    if (w->n_sessions == w->cap_sessions) {
        int cap = w->cap_sessions ? 2 * w->cap_sessions : 16;
        wsession *g = realloc(w->sessions, (size_t)cap * sizeof *g);
        if (!g) {
            reply_error(w, peer, 0, msg->seq, EL_WERR_LIMIT, "out of memory");
            return;
        }
        w->sessions = g;
        w->cap_sessions = cap;
    }
    wsession ns = {0};
    el_session_opts so = {.layer_begin = (int)st->layer_begin, .layer_end = (int)st->layer_end, .ctx = (int)o.ctx,
                          .max_batch = (int)o.max_batch, .kv_type = w->o->kv_type, .kv_pool = client->mem};
    if (el_session_new(w->m, &so, w->pool, &ns.s, &e)) {
        reply_error(w, peer, 0, msg->seq, EL_WERR_LIMIT, "%s", e.msg);
        return;
    }
    // Memory is taken as positions arrive; a session is admitted while at
    // least its first block fits.
    size_t block = el_session_kv_block_bytes(ns.s);
    if (el_kv_pool_room(client->mem) < block) {
        el_session_free(ns.s);
        int theirs = el_kv_pool_room(w->kv) >= block;  // the client's share is full, not the worker
        reply_error(w, peer, 0, msg->seq, EL_WERR_LIMIT, "%s budget exhausted (%zu of %zu bytes in use, %zu needed)",
                    theirs ? "this client's memory" : "KV cache", el_kv_pool_used(theirs ? client->mem : w->kv),
                    el_kv_pool_max(theirs ? client->mem : w->kv), block);
        return;
    }
    if (last && o.want == EL_WANT_TOKEN) {
        el_sampler_params sp = {.temp = o.sampling.temp, .top_k = o.sampling.top_k, .top_p = o.sampling.top_p,
                                .min_p = o.sampling.min_p, .repeat_penalty = o.sampling.repeat_penalty,
                                .repeat_last_n = o.sampling.repeat_last_n, .seed = o.sampling.seed};
        if (!(ns.sampler = el_sampler_new(&sp, h->vocab))) {
            el_session_free(ns.s);
            reply_error(w, peer, 0, msg->seq, EL_WERR_LIMIT, "out of memory");
            return;
        }
    }
    do randombytes_buf(&ns.id, sizeof ns.id);
    while (ns.id == 0 || find_id(w, ns.id));
    ns.peer = *peer;
    ns.client = client;
    client->sessions++;
    ns.layer_begin = (int)st->layer_begin;
    ns.want = o.want;
    ns.act_dtype = o.act_dtype;
    ns.max_batch = (int)o.max_batch;
    ns.ctx = (int)o.ctx;
    ns.ushape = last && o.want == EL_WANT_HIDDEN;
    ns.last_used = el_time_s();
    ns.state = S_READY;
    if (!last) {
        // open our part of the chain downstream; the device hears OPENED when it answers
        el_wire_open d = o;
        d.n_stages = o.n_stages - 1;
        memmove(d.stages, o.stages + 1, d.n_stages * sizeof d.stages[0]);
        uint32_t seq = ++w->down_seq;
        el_status ds = el_wire_encode_open(&w->down_tx, seq, &d) ? el_err(&e, EL_ERR_NOMEM, "out of memory")
                       : down_send(w, EL_MSG_OPEN, ns.id, msg->seq, &e) ? EL_OK : EL_ERR_IO;  // down_send filled e
        if (ds) {
            el_session_free(ns.s);
            el_sampler_free(ns.sampler);
            client->sessions--;
            reply_error(w, peer, 0, msg->seq, EL_WERR_UPSTREAM, "next worker %s: %s", w->o->next, e.msg);
            return;
        }
        ns.state = S_OPENING;
    }
    w->sessions[w->n_sessions++] = ns;
    if (ns.state == S_READY) {
        wlog(w, "session %016llx opened: ctx %u, act %s, %s, %d sessions", (unsigned long long)ns.id, o.ctx,
             el_dtype_name(o.act_dtype),
             ns.ushape ? "U-shape (hidden states back)" : o.want == EL_WANT_TOKEN ? "tokens back" : "logits back",
             w->n_sessions);
        send_opened(w, peer, ns.id, msg->seq);
    }
}

// The session a message names, or NULL after answering that it is unknown.
static wsession *session_of(worker *w, const el_peer *peer, const el_wire_msg *msg) {
    wsession *s = find_session(w, msg->session, peer);
    if (!s || s->state != S_READY)
        reply_error(w, peer, msg->session, msg->seq, EL_WERR_SESSION, "unknown or expired session %016llx",
                    (unsigned long long)msg->session);
    return s && s->state == S_READY ? s : NULL;
}

// ---------------------------------------------------------------- FORWARD

static void handle_forward(worker *w, const el_peer *peer, const el_wire_msg *msg) {
    el_error e;
    wsession *s = session_of(w, peer, msg);
    if (!s) return;
    const el_hparams *h = &w->m->hp;
    el_wire_forward f;
    if (el_wire_decode_forward(msg, (uint32_t)h->dim, &f, &e)) {
        reply_error(w, peer, s->id, msg->seq, EL_WERR_PROTOCOL, "bad FORWARD: %s", e.msg);
        return;
    }
    if (f.n_tokens > (uint32_t)s->max_batch || f.pos > (uint32_t)s->next_pos || f.pos + f.n_tokens > (uint32_t)s->ctx) {
        reply_error(w, peer, s->id, msg->seq, EL_WERR_LIMIT,
                    "FORWARD of %u positions at %u does not fit (next position %d, batch %d, context %d)", f.n_tokens,
                    f.pos, s->next_pos, s->max_batch, s->ctx);
        return;
    }
    if (s->n_queued >= MAX_QUEUED) {
        reply_error(w, peer, s->id, msg->seq, EL_WERR_LIMIT, "%d requests of this session are waiting already", s->n_queued);
        return;
    }
    int n = (int)f.n_tokens;
    // the reply must fit in one message this worker may send
    size_t reply = (size_t)((f.flags & EL_FWD_ALL_ROWS) ? n : 1) *
                   (w->is_last && !s->ushape && s->want == EL_WANT_LOGITS ? (size_t)h->vocab * 4 : (size_t)h->dim * 4);
    if (!(f.flags & EL_FWD_NO_OUTPUT) && reply > w->max_reply) {
        reply_error(w, peer, s->id, msg->seq, EL_WERR_LIMIT,
                    "the result of %u rows (%zu bytes) exceeds this worker's reply limit of %zu bytes: ask for fewer rows",
                    f.n_tokens, reply, w->max_reply);
        return;
    }
    // what the request holds here counts against its client's share
    size_t bytes = (size_t)n * h->dim * sizeof(float) + (f.tokens ? (size_t)n * 4 : 0) + sizeof(wreq);
    if (!client_take(s->client, bytes)) {
        reply_error(w, peer, s->id, msg->seq, EL_WERR_LIMIT,
                    "this client's memory budget exhausted (%zu of %zu bytes in use, %zu needed for a request)",
                    el_kv_pool_used(s->client->mem), el_kv_pool_max(s->client->mem), bytes);
        return;
    }
    wreq *r = calloc(1, sizeof *r);
    if (r) r->x = el_malloc_aligned((size_t)n * h->dim * sizeof(float));
    if (r && f.tokens) r->tokens = malloc((size_t)n * sizeof(int32_t));
    if (r) r->mem = s->client->mem, r->bytes = bytes;
    if (!r || !r->x || (f.tokens && !r->tokens)) {
        if (r) req_free(r);
        else el_kv_pool_give(s->client->mem, bytes);
        reply_error(w, peer, s->id, msg->seq, EL_WERR_LIMIT, "out of memory for %d rows", n);
        return;
    }
    el_wire_act_decode(f.dtype, f.payload, (size_t)n * h->dim, r->x, NULL);
    for (int i = 0; f.tokens && i < n; i++) {
        r->tokens[i] = (int32_t)el_wire_u32(f.tokens + 4 * i);
        if (r->tokens[i] < 0 || r->tokens[i] >= h->vocab) {
            int bad = r->tokens[i];
            req_free(r);
            reply_error(w, peer, s->id, msg->seq, EL_WERR_PROTOCOL, "token id %d outside the vocabulary", bad);
            return;
        }
    }
    r->seq = msg->seq;
    r->pos = (int)f.pos;
    r->n = n;
    r->flags = f.flags;
    // It came in after the socket was last seen empty (messages wait there
    // while a step computes) and after our last reply to it.
    r->t_arrive = w->t_empty > s->t_reply_ns ? w->t_empty : s->t_reply_ns;
    if (!r->t_arrive) r->t_arrive = el_time_ns();
    if (s->decoding && s->t_reply_ns && !w->stepped) {  // known to within a wait, not a whole step
        uint64_t turn = el_time_ns() - s->t_reply_ns;
        s->turn_ns = s->turn_ns ? (3 * s->turn_ns + turn) / 4 : turn;
    }
    s->decoding = 0;
    if (s->tail) s->tail->next = r;
    else s->head = r;
    s->tail = r;
    s->n_queued++;
    s->next_pos = r->pos + n;
    s->last_used = el_time_s();
}

// A reply goes out: a decoding device will be back in about its usual turn.
static void note_reply(wsession *s, int decoding) {
    s->decoding = decoding;
    s->t_reply_ns = el_time_ns();
}

// The reply to a finished request on the last stage.
static void answer_last(worker *w, wsession *s, wreq *r) {
    el_error e;
    const el_hparams *h = &w->m->hp;
    el_wire_hop hop = {r->compute_ns, 0, r->t_start - r->t_arrive};
    el_status st;
    int all = (r->flags & EL_FWD_ALL_ROWS) != 0, none = (r->flags & EL_FWD_NO_OUTPUT) != 0;
    int out_rows = none ? 0 : all ? r->n : 1;
    if (s->sampler)
        for (int i = 0; r->tokens && i < r->n; i++) el_sampler_accept(s->sampler, r->tokens[i]);
    if (s->ushape) {
        st = el_wire_encode_result(&w->out, s->id, r->seq, EL_WANT_HIDDEN, s->act_dtype, (uint32_t)out_rows,
                                   (uint32_t)h->dim, r->x + (size_t)(r->n - out_rows) * h->dim, NULL, 0, &hop, 1, &e);
    } else if (s->want == EL_WANT_TOKEN) {
        int32_t toks[1024];
        int k = out_rows < 1024 ? out_rows : 1024;
        uint64_t t0 = el_time_ns();
        for (int i = 0; i < k; i++) {
            float *lg = r->logits + (size_t)i * h->vocab;
            toks[i] = s->sampler ? el_sampler_sample(s->sampler, lg) : el_argmax(lg, h->vocab);
        }
        hop.compute_ns += el_time_ns() - t0;
        st = el_wire_encode_result(&w->out, s->id, r->seq, EL_WANT_TOKEN, EL_DTYPE_I32, (uint32_t)k, 1, NULL, toks,
                                   s->sampler ? el_sampler_rng_state(s->sampler) : 0, &hop, 1, &e);
    } else {
        // logits always travel as f32: sampling must see exactly what a local run sees
        st = el_wire_encode_result(&w->out, s->id, r->seq, EL_WANT_LOGITS, EL_DTYPE_F32, (uint32_t)out_rows,
                                   (uint32_t)h->vocab, r->logits, NULL, 0, &hop, 1, &e);
    }
    if (st) {
        reply_error(w, &s->peer, s->id, r->seq, EL_WERR_INTERNAL, "%s", e.msg);
        return;
    }
    note_reply(s, r->n <= 16 && !none);
    send_out(w, &s->peer);
}

// A finished request of a middle stage: its rows go to the next worker.
static void pass_on(worker *w, wsession *s, wreq *r) {
    el_error e;
    const el_hparams *h = &w->m->hp;
    uint32_t seq = ++w->down_seq;
    pending *p = NULL;
    if (!el_wire_encode_forward(&w->down_tx, s->down_session, seq, (uint32_t)r->pos, (uint32_t)r->n, (uint32_t)h->dim,
                                s->act_dtype, r->x, r->flags, r->tokens, &e))
        p = down_send(w, EL_MSG_FORWARD, s->id, r->seq, &e);
    if (!p) {
        reply_error(w, &s->peer, s->id, r->seq, EL_WERR_UPSTREAM, "next worker %s: %s", w->o->next, e.msg);
        return;
    }
    p->hop = (el_wire_hop){r->compute_ns, 0, r->t_start - r->t_arrive};
    p->decoding = r->n <= 16 && !(r->flags & EL_FWD_NO_OUTPUT);
    if (w->down_tx.cap > ((size_t)16 << 20)) el_buf_free(&w->down_tx);  // no prefill-sized copy kept around
}

// ---------------------------------------------------------------- a step

// Runs one step over the head request of every session with work; returns
// the rows computed.
static int step(worker *w) {
    const el_hparams *h = &w->m->hp;
    int nc = 0;
    for (int i = 0; i < w->n_sessions; i++) {
        wsession *s = &w->sessions[i];
        if (s->state != S_READY || !s->head) continue;
        w->cand[nc] = s->id;
        w->want[nc++] = s->head->n - s->head->done;
    }
    if (!nc) return 0;
    el_batch_plan(nc, w->want, w->max_rows, 16, &w->cursor, w->take);
    int nr = 0, rows = 0;
    // A reply below can drop sessions (one to a peer that does not read drops
    // all of its sessions) and move others in the array: each is found by id.
    uint64_t *ids = w->ids;  // ids[k]: the session of request k
    uint64_t now = el_time_ns();
    for (int c = 0; c < nc; c++) {
        if (!w->take[c]) continue;
        wsession *s = find_id(w, w->cand[c]);
        if (!s || !s->head) continue;
        wreq *r = s->head;
        el_error e;
        int pos = r->pos + r->done, n = w->take[c];
        if (!r->done) {
            if (r->pos > s->computed) {  // an earlier request failed: this one would leave a gap
                el_peer peer = s->peer;
                uint64_t sid = s->id;
                uint32_t seq = r->seq;
                int pos0 = r->pos, have = s->computed;
                req_free(pop_head(s));  // before the reply, which may drop the session
                reply_error(w, &peer, sid, seq, EL_WERR_LIMIT,
                            "FORWARD at position %d, but the session holds positions up to %d", pos0, have);
                continue;
            }
            r->t_start = now;
            w->st.queue_ns += now - r->t_arrive;
            w->st.started++;
            if (r->pos < s->computed) el_session_truncate(s->s, r->pos);  // positions rewritten: the old tail goes
        }
        int final = r->done + n == r->n;
        int head_here = w->is_last && !s->ushape && !(r->flags & EL_FWD_NO_OUTPUT);
        int all = (r->flags & EL_FWD_ALL_ROWS) != 0;
        int lrows = head_here ? (all ? n : final ? 1 : 0) : 0;
        if (lrows && !r->logits) {
            size_t lb = (size_t)(all ? r->n : 1) * h->vocab * sizeof(float);
            if (client_take(s->client, lb)) {
                if ((r->logits = malloc(lb))) r->bytes += lb;
                else el_kv_pool_give(s->client->mem, lb);
            }
        }
        if (el_session_reserve(s->s, pos + n, &e) || (lrows && !r->logits)) {
            if (lrows && !r->logits) el_err(&e, EL_ERR_NOMEM, "this client's memory budget has no room for the logits");
            // this device's request fails; its session keeps what it had
            el_peer peer = s->peer;
            uint64_t sid = s->id;
            uint32_t seq = r->seq;
            req_free(pop_head(s));
            s->next_pos = s->computed;
            for (wreq *q = s->head; q; q = q->next) s->next_pos = q->pos + q->n;
            reply_error(w, &peer, sid, seq, EL_WERR_LIMIT, "%s", e.msg);
            continue;
        }
        w->reqs[nr] = (el_batch_req){.s = s->s, .pos = pos, .n = n, .x = r->x + (size_t)r->done * h->dim,
                                     .out_hidden = !w->is_last || s->ushape, .logits_rows = lrows,
                                     .logits = r->logits + (all ? (size_t)r->done * h->vocab : 0)};
        ids[nr++] = s->id;
        rows += n;
    }
    // requests of sessions dropped since they were taken: their caches are gone
    int kept = 0;
    for (int k = 0; k < nr; k++) {
        if (!find_id(w, ids[k])) {
            rows -= w->reqs[k].n;
            continue;
        }
        w->reqs[kept] = w->reqs[k];
        ids[kept++] = ids[k];
    }
    nr = kept;
    if (!nr) return 0;
    uint64_t t0 = el_time_ns();
    el_error e;
    el_status st = el_batch_run(w->batch, nr, w->reqs, &e);
    uint64_t dt = el_time_ns() - t0;
    w->st.steps++;
    w->st.rows += (uint64_t)rows;
    w->total_steps++;
    w->total_rows += (uint64_t)rows;
    if ((uint64_t)rows > w->st.max_rows) w->st.max_rows = (uint64_t)rows;
    w->st.step_ns += dt;
    w->step_ns_avg = w->step_ns_avg ? (7 * w->step_ns_avg + dt) / 8 : dt;
    // Answer in session order; sessions may be dropped while answering (a
    // peer that does not read), so find each again by id.
    for (int k = 0; k < nr; k++) {
        wsession *s = find_id(w, ids[k]);
        if (!s) continue;
        wreq *r = s->head;
        if (st) {
            el_peer peer = s->peer;
            uint32_t seq = r->seq;
            req_free(pop_head(s));
            s->next_pos = s->computed;
            reply_error(w, &peer, ids[k], seq, EL_WERR_INTERNAL, "%s", e.msg);
            continue;
        }
        r->done += w->reqs[k].n;
        r->compute_ns += dt;
        s->computed = r->pos + r->done;  // the newest positions (an older tail was truncated)
        if (r->done < r->n) continue;
        s->last_used = el_time_s();
        r = pop_head(s);
        if (w->is_last) answer_last(w, s, r);
        else pass_on(w, s, r);
        req_free(r);
    }
    return rows;
}

// ---------------------------------------------------------------- LORA

// LORA: one of the device's adapters. This stage keeps the matrices of its
// layers, passes the message on when later stages have some, and answers OK
// once every stage holds its part; the session's steps apply it.
static void install_lora(worker *w, wsession *s, el_lora *l, float scale, size_t bytes, int kept, int passed,
                         uint32_t seq) {
    s->lora->lora[s->lora->n] = l;
    s->lora->scale[s->lora->n++] = scale;
    el_session_set_lora(s->s, s->lora);
    s->lora_bytes += bytes;
    s->last_used = el_time_s();
    wlog(w, "session %016llx: adapter %d with %d matrices here (scale %g)%s", (unsigned long long)s->id, s->lora->n, kept,
         scale, passed ? ", the rest passed on" : "");
    if (el_wire_encode_simple(&w->out, EL_MSG_OK, s->id, seq) == EL_OK) send_out(w, &s->peer);
}

static void handle_lora(worker *w, const el_peer *peer, const el_wire_msg *msg) {
    el_error e;
    wsession *s = session_of(w, peer, msg);
    if (!s) return;
    el_kv_pool *mem = s->client->mem;  // (a reply below may drop s: its peer does not read)
    const el_hparams *h = &w->m->hp;
    uint32_t cap = (uint32_t)h->n_layers * EL_LORA_N_TARGETS, n = 0;
    el_wire_lora_mat *mats = malloc(cap * sizeof *mats);
    el_lora_slot *slots = malloc(cap * sizeof *slots);
    uint32_t *kept = malloc(cap * sizeof *kept);
    el_lora *l = NULL;
    float scale, alpha;
    int later = 0, k = 0, taken = 0;
    size_t bytes = 0;
    if (!mats || !slots || !kept) {
        reply_error(w, peer, s->id, msg->seq, EL_WERR_LIMIT, "out of memory");
        goto out;
    }
    if (el_wire_decode_lora(msg, &scale, &alpha, mats, cap, &n, &e)) {
        reply_error(w, peer, s->id, msg->seq, EL_WERR_PROTOCOL, "bad LORA: %s", e.msg);
        goto out;
    }
    if (s->lora && s->lora->n >= EL_LORA_MAX_SET) {
        reply_error(w, peer, s->id, msg->seq, EL_WERR_LIMIT, "the session has %d adapters already", s->lora->n);
        goto out;
    }
    for (uint32_t i = 0; i < n; i++) {
        const el_wire_lora_mat *mt = &mats[i];
        if (mt->layer >= (uint32_t)h->n_layers) {
            reply_error(w, peer, s->id, msg->seq, EL_WERR_MISMATCH, "LORA matrix for layer %u of a %d-layer model",
                        mt->layer, h->n_layers);
            goto out;
        }
        if (mt->layer < (uint32_t)s->layer_begin) continue;  // an earlier stage's
        if (mt->layer >= (uint32_t)w->m->layer_end) {
            later = 1;
            continue;
        }
        int in, outd;
        el_lora_target_shape(h, (int)mt->target, &in, &outd);
        if (mt->in != (uint32_t)in || mt->out != (uint32_t)outd || mt->rank > 4096) {
            reply_error(w, peer, s->id, msg->seq, EL_WERR_MISMATCH,
                        "LORA matrix for layer %u %s is %ux%u of rank %u, the model's is %dx%d (rank at most 4096)",
                        mt->layer, el_lora_target_stem((int)mt->target), mt->out, mt->in, mt->rank, outd, in);
            goto out;
        }
        bytes += (size_t)mt->rank * (mt->in + mt->out) * sizeof(float);
        slots[k] = (el_lora_slot){(int)mt->layer, (int)mt->target, (int)mt->rank};
        kept[k++] = i;
    }
    if (later && !s->down_session) {
        reply_error(w, peer, s->id, msg->seq, EL_WERR_MISMATCH, "LORA matrices for layers past %d, and no stage after this one",
                    w->m->layer_end);
        goto out;
    }
    // checked before anything is allocated: what this stage keeps counts
    // against its memory budget, with the KV caches
    if (!client_take(s->client, bytes)) {
        int theirs = el_kv_pool_room(w->kv) >= bytes;
        el_kv_pool *q = theirs ? s->client->mem : w->kv;
        reply_error(w, peer, s->id, msg->seq, EL_WERR_LIMIT, "%smemory budget exhausted (%zu of %zu bytes in use, %zu needed)",
                    theirs ? "this client's " : "", el_kv_pool_used(q), el_kv_pool_max(q), bytes);
        goto out;
    }
    taken = 1;
    if (el_lora_alloc_slots(w->m, alpha, k, slots, &l, &e)) {
        reply_error(w, peer, s->id, msg->seq, EL_WERR_MISMATCH, "LORA: %s", e.msg);
        goto out;
    }
    for (int j = 0; j < k; j++) {
        const el_wire_lora_mat *mt = &mats[kept[j]];
        el_lora_mat *dst = &l->mats[mt->layer * EL_LORA_N_TARGETS + mt->target];
        if (el_wire_f32s(mt->a, (size_t)dst->rank * dst->in, dst->a) ||
            el_wire_f32s(mt->b, (size_t)dst->out * dst->rank, dst->b)) {
            reply_error(w, peer, s->id, msg->seq, EL_WERR_PROTOCOL, "LORA matrix for layer %u %s has a value that is not finite",
                        mt->layer, el_lora_target_stem((int)mt->target));
            goto out;
        }
    }
    if (!s->lora && !(s->lora = calloc(1, sizeof *s->lora))) {
        reply_error(w, peer, s->id, msg->seq, EL_WERR_LIMIT, "out of memory");
        goto out;
    }
    if (later) {  // the same message, addressed to our session on the next worker; installed when it says OK
        uint32_t seq = ++w->down_seq;
        w->down_tx.len = 0;
        pending *p = NULL;
        if (el_wire_readdress(&w->down_tx, msg, s->down_session, seq) == EL_OK)
            p = down_send(w, EL_MSG_LORA, s->id, msg->seq, &e);
        else
            el_err(&e, EL_ERR_NOMEM, "out of memory");
        if (w->down_tx.cap > ((size_t)1 << 20)) el_buf_free(&w->down_tx);  // no adapter-sized copy kept around
        if (!p) {
            reply_error(w, peer, s->id, msg->seq, EL_WERR_UPSTREAM, "next worker %s: %s", w->o->next, e.msg);
            goto out;
        }
        p->lora = l;
        p->scale = scale;
        p->bytes = bytes;
        p->mem = s->client->mem;
        p->kept = k;
        l = NULL;
        taken = 0;  // the pending entry holds the bytes now
        goto out;
    }
    install_lora(w, s, l, scale, bytes, k, 0, msg->seq);
    l = NULL;
    taken = 0;
out:
    if (taken) el_kv_pool_give(mem, bytes);
    el_lora_free(l);
    free(mats);
    free(slots);
    free(kept);
}

// ---------------------------------------------------------------- replies from the next worker

static void handle_down(worker *w, const el_buf *in) {
    el_error e;
    el_wire_msg msg;
    if (el_wire_parse(in->data, in->len, &msg, &e)) {
        wlog(w, "next worker %s: %s", w->o->next, e.msg);
        return;
    }
    int i = 0;
    while (i < w->n_pend && w->pend[i].seq != msg.seq) i++;
    if (i == w->n_pend) {  // a reply to something abandoned (a timeout, a CLOSE)
        if (msg.type == EL_MSG_OPENED) close_downstream(w, msg.session);  // an OPEN given up: not left open there
        return;
    }
    pending p = w->pend[i];
    w->pend[i].lora = NULL;
    pend_remove(w, i);
    wsession *s = p.session ? find_id(w, p.session) : NULL;
    if (!s) {
        el_lora_free(p.lora);
        if (p.lora) el_kv_pool_give(p.mem, p.bytes);
        if (p.type == EL_MSG_OPEN && msg.type == EL_MSG_OPENED) close_downstream(w, msg.session);
        return;
    }
    char text[EL_WIRE_MAX_TEXT];
    if (msg.type == EL_MSG_ERROR) {
        uint32_t code;
        if (el_wire_decode_error(&msg, &code, text, sizeof text, &e)) snprintf(text, sizeof text, "%s", e.msg);
    }
    switch (p.type) {
    case EL_MSG_OPEN:
        if (msg.type != EL_MSG_OPENED) {
            el_peer peer = s->peer;
            drop_session(w, (int)(s - w->sessions), "the next worker refused it");
            reply_error(w, &peer, 0, p.up_seq, EL_WERR_UPSTREAM, "next worker %s: %s", w->o->next,
                        msg.type == EL_MSG_ERROR ? text : "unexpected reply to OPEN");
            return;
        }
        s->down_session = msg.session;
        s->state = S_READY;
        if (msg.body_len >= 8) {  // what the rest of the chain allows
            uint64_t v = 0;
            for (int k = 0; k < 8; k++) v |= (uint64_t)msg.body[k] << (8 * k);
            w->next_max_reply = v;
        }
        wlog(w, "session %016llx opened: forwarding to %s, %d sessions", (unsigned long long)s->id, w->o->next,
             w->n_sessions);
        send_opened(w, &s->peer, s->id, p.up_seq);
        return;
    case EL_MSG_LORA:
        if (msg.type != EL_MSG_OK) {
            el_lora_free(p.lora);
            el_kv_pool_give(p.mem, p.bytes);
            reply_error(w, &s->peer, s->id, p.up_seq, EL_WERR_UPSTREAM, "next worker %s: %s", w->o->next,
                        msg.type == EL_MSG_ERROR ? text : "unexpected reply to LORA");
            return;
        }
        install_lora(w, s, p.lora, p.scale, p.bytes, p.kept, 1, p.up_seq);
        return;
    case EL_MSG_FORWARD: {
        if (msg.type != EL_MSG_RESULT) {
            reply_error(w, &s->peer, s->id, p.up_seq, EL_WERR_UPSTREAM, "next worker %s: %s", w->o->next,
                        msg.type == EL_MSG_ERROR ? text : "unexpected reply to FORWARD");
            return;
        }
        p.hop.wait_ns = el_time_ns() - p.t_sent;
        if (el_wire_relay_result(&w->out, &msg, s->id, p.up_seq, &p.hop, &e)) {
            reply_error(w, &s->peer, s->id, p.up_seq, EL_WERR_UPSTREAM, "next worker %s: %s", w->o->next, e.msg);
            return;
        }
        s->last_used = el_time_s();
        note_reply(s, p.decoding);
        send_out(w, &s->peer);
        return;
    }
    }
}

// Requests the next worker did not answer in time.
static void expire_pending(worker *w) {
    uint64_t now = el_time_ns();
    for (int i = w->n_pend - 1; i >= 0; i--) {
        pending *p = &w->pend[i];
        if (now < p->deadline_ns) continue;
        uint64_t sid = p->session;
        uint16_t type = p->type;
        uint32_t up = p->up_seq;
        if (p->lora) el_kv_pool_give(p->mem, p->bytes);
        pend_remove(w, i);
        wsession *s = sid ? find_id(w, sid) : NULL;
        if (!s) continue;
        el_peer peer = s->peer;
        if (type == EL_MSG_OPEN) drop_session(w, (int)(s - w->sessions), "the next worker did not answer");
        reply_error(w, &peer, type == EL_MSG_OPEN ? 0 : sid, up, EL_WERR_UPSTREAM,
                    "next worker %s did not answer within %d ms", w->o->next, w->timeout_ms);
    }
}

// ---------------------------------------------------------------- messages

static void handle(worker *w, const el_peer *peer, const el_buf *in) {
    el_error e;
    el_wire_msg msg;
    if (el_wire_parse(in->data, in->len, &msg, &e)) {
        // a peer of another protocol version hears so in its own layout
        if (el_wire_version_error(&w->out, in->data, in->len) == EL_OK) {
            wlog(w, "refused a peer: %s", e.msg);
            send_out(w, peer);
        } else {
            reply_error(w, peer, 0, 0, EL_WERR_PROTOCOL, "bad message: %s", e.msg);
        }
        return;
    }
    if (w->train && el_train_server_handle(w->train, w->srv, peer, &msg)) return;
    switch (msg.type) {
    case EL_MSG_PING:
        if (el_wire_encode_ping(&w->out, EL_MSG_PONG, msg.seq, msg.body, msg.body_len) == EL_OK) send_out(w, peer);
        break;
    case EL_MSG_PROBE: {
        uint32_t n = msg.body_len >= 4 ? el_wire_u32(msg.body) : 0;
        if (msg.body_len < 4 || n > EL_WIRE_MAX_PROBE_REPLY) {
            reply_error(w, peer, 0, msg.seq, EL_WERR_PROTOCOL, "bad PROBE (reply of %u bytes)", n);
            break;
        }
        // a probe may ask for more than it sends, up to the reply limit
        if (n > w->max_reply) {
            reply_error(w, peer, 0, msg.seq, EL_WERR_LIMIT, "a probe reply of %u bytes exceeds this worker's reply limit of %zu",
                        n, w->max_reply);
            break;
        }
        if (el_wire_encode_probe(&w->out, msg.seq, n, 0) == EL_OK) {
            w->out.data[6] = EL_MSG_PROBE_REPLY;
            send_out(w, peer);
        }
        if (w->out.cap > ((size_t)1 << 20)) el_buf_free(&w->out);  // no probe-sized buffer kept around
        break;
    }
    case EL_MSG_OPEN: handle_open(w, peer, &msg); break;
    case EL_MSG_FORWARD: handle_forward(w, peer, &msg); break;
    case EL_MSG_LORA: handle_lora(w, peer, &msg); break;
    case EL_MSG_CLOSE: {
        wsession *s = find_session(w, msg.session, peer);
        if (s) drop_session(w, (int)(s - w->sessions), "closed by the device");
        if (el_wire_encode_simple(&w->out, EL_MSG_OK, msg.session, msg.seq) == EL_OK) send_out(w, peer);
        break;
    }
    default:
        reply_error(w, peer, msg.session, msg.seq, EL_WERR_PROTOCOL, "unexpected message type %u", msg.type);
    }
}

// Touches every page of what the matmul kernels read of t: its packed copy
// (which replaced the file's pages, el_matmul_pack) and the rows after it.
static unsigned char touch(const el_tensor *t) {
    unsigned char sink = 0;
    size_t packed = t->packed ? (size_t)t->packed_rows * el_tensor_row_size(t) : 0;
    if (t->packed_stripes) {  // each stripe's pairs where it lies (kernels.h)
        int64_t np = t->packed_rows / 32;
        size_t pb = 32 * el_tensor_row_size(t);
        for (int s = 0; s < 2 * t->packed_stripes; s++) {
            size_t n = (size_t)(el_stripe_first(np, t->packed_stripes, s + 1) - el_stripe_first(np, t->packed_stripes, s)) * pb;
            for (size_t k = 0; k < n; k += 4096) sink ^= ((const unsigned char *)t->stripe[s])[k];
        }
    }
    for (size_t k = 0; !t->packed_stripes && k < packed; k += 4096) sink ^= ((const unsigned char *)t->packed)[k];
    for (size_t k = packed; k < t->nbytes; k += 4096) sink ^= ((const unsigned char *)t->data)[k];
    return sink;
}

// Touch every page of the bound weights so the resident size reported at
// start-up is what serving will use.
static size_t warm(const el_model *m) {
    volatile unsigned char sink = 0;
    size_t bytes = 0;
    for (int l = m->layer_begin; l < m->layer_end; l++) {
        const el_tensor *ts = (const el_tensor *)&m->layers[l];
        for (size_t i = 0; i < sizeof(el_layer) / sizeof(el_tensor); i++) {
            sink ^= touch(&ts[i]);
            bytes += ts[i].nbytes;
        }
    }
    if (m->has_head) {
        sink ^= touch(&m->output);
        bytes += m->output.nbytes + m->output_norm.nbytes;
    }
    (void)sink;
    return bytes;
}

// Whether to hold the next step back for a moment: a device that is
// decoding is due back (by its usual turn, measured while the worker waited)
// within half a step (at most 20 ms) from when the step could first have
// started. A step over all of them costs little more than one over some;
// without this, devices split into cohorts that each wait for the other's
// whole step (measured: 8 devices on one worker ran steps of 4.2 rows).
// Holding pays while the turn is below 2 S(n/2) - S(n) for steps of n rows:
// about half a step for this kind of model.
static int gather(worker *w) {
    if (!w->step_ns_avg) return 0;
    uint64_t now = el_time_ns(), limit = w->step_ns_avg / 2;
    if (limit > 20000000ULL) limit = 20000000ULL;
    if (!w->hold_since) w->hold_since = now;
    if (now - w->hold_since >= limit) return 0;
    for (int i = 0; i < w->n_sessions; i++) {
        const wsession *s = &w->sessions[i];
        if (s->head || !s->decoding || s->state != S_READY) continue;
        // a turn not measured yet: assume it is short, and learn it while holding
        uint64_t due = s->t_reply_ns + (s->turn_ns ? s->turn_ns + s->turn_ns / 4 : 0);
        if (due <= w->hold_since + limit) return 1;
    }
    return 0;
}

// One --stats-every line: the figures since the last one.
static void print_stats(worker *w, double now) {
    FILE *f = w->o->stats_out;
    double span = now - w->st.t0;
    double mean_rows = w->st.steps ? (double)w->st.rows / w->st.steps : 0;
    double step_ms = w->st.steps ? w->st.step_ns / 1e6 / w->st.steps : 0;
    double wait_ms = w->st.started ? w->st.queue_ns / 1e6 / w->st.started : 0;
    size_t kv = el_kv_pool_used(w->kv), max = el_kv_pool_max(w->kv);
    if (w->o->stats_json)
        fprintf(f,
                "{\"t\": %.3f, \"sessions\": %d, \"steps\": %llu, \"rows_per_step\": %.2f, \"max_rows_per_step\": %llu, "
                "\"rows_per_s\": %.1f, \"queue_wait_ms\": %.3f, \"step_ms\": %.3f, \"kv_bytes\": %zu, "
                "\"kv_budget\": %zu}\n",
                now, w->n_sessions, (unsigned long long)w->st.steps, mean_rows, (unsigned long long)w->st.max_rows,
                span > 0 ? w->st.rows / span : 0, wait_ms, step_ms, kv, max);
    else
        fprintf(f,
                "worker %d:%d: %d sessions, %llu steps, rows/step %.2f mean %llu max (%.1f rows/s), queue wait %.2f ms, "
                "step %.2f ms, KV %.2f of %.0f MiB\n",
                w->m->layer_begin, w->m->layer_end, w->n_sessions, (unsigned long long)w->st.steps, mean_rows,
                (unsigned long long)w->st.max_rows, span > 0 ? w->st.rows / span : 0, wait_ms, step_ms, kv / 1048576.0,
                max / 1048576.0);
    fflush(f);
    memset(&w->st, 0, sizeof w->st);
    w->st.t0 = now;
}

void el_worker_free(el_worker *w) {
    if (!w) return;
    while (w->n_sessions) drop_session(w, w->n_sessions - 1, "worker stopping");
    while (w->n_pend) {
        if (w->pend[w->n_pend - 1].lora) el_kv_pool_give(w->pend[w->n_pend - 1].mem, w->pend[w->n_pend - 1].bytes);
        pend_remove(w, w->n_pend - 1);
    }
    el_train_server_free(w->train);  // gives its sessions' memory back to their clients
    // ZeroMQ lets go of every reply (and their counts) here; a borrowed
    // socket outlives this worker, so it must be closed before the counts
    // (the clients) are freed: el_node closes it first
    if (!w->o->server) el_link_server_close(w->srv);
    for (int i = 0; i < w->n_clients; i++) {
        el_kv_pool_free(w->clients[i]->mem);
        free(w->clients[i]);
    }
    free(w->clients);
    free(w->pend);
    free(w->sessions);
    el_link_close(w->next);
    el_batch_free(w->batch);
    if (!w->o->pool) el_pool_free(w->pool);
    if (!w->o->model) el_model_close(w->m);
    el_kv_pool_free(w->kv);
    el_buf_free(&w->out);
    el_buf_free(&w->down_tx);
    el_buf_free(&w->down_rx);
    el_buf_free(&w->in);
    free(w->identity);
    free(w->reqs);
    free(w->want);
    free(w->take);
    free(w->cand);
    free(w->ids);
    free(w);
}

// The train server's view of clients: a training session is admitted by its
// client's session count, and its memory counts in the client's share.
static el_kv_pool *train_admit(void *ctx, const el_peer *peer, el_error *err) {
    worker *w = ctx;
    wclient *c = client_of(w, peer);
    if (!c) {
        el_err(err, EL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    if (c->sessions >= w->client_sessions) {
        el_err(err, EL_ERR_NOMEM, "this client has %d sessions already (the limit per client is %d)", c->sessions,
               w->client_sessions);
        return NULL;
    }
    c->sessions++;
    return c->mem;
}

static void train_closed(void *ctx, const el_peer *peer) {
    worker *w = ctx;
    for (int i = 0; i < w->n_clients; i++)
        if (!strcmp(w->clients[i]->key, peer->client) && w->clients[i]->sessions > 0) {
            w->clients[i]->sessions--;
            return;
        }
}

el_status el_worker_new(const el_worker_opts *o, el_worker **out, el_error *err) {
    *out = NULL;
    worker *w = calloc(1, sizeof *w);
    if (!w) return el_err(err, EL_ERR_NOMEM, "out of memory");
    w->o = o;
    w->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 30000;
    el_status st;
    if (sodium_init() < 0) {
        free(w);
        return el_err(err, EL_ERR_STATE, "cannot initialise libsodium (random session ids)");
    }
    int end;
    if (o->model) {  // borrowed: serve the layers it binds
        w->m = o->model;
        end = w->m->layer_end;
        if (w->m->layer_begin >= end || (end == w->m->hp.n_layers && !w->m->has_head)) {
            free(w);
            return el_err(err, EL_ERR_ARG, "%s: the model binds no layers, or lacks the head of its last stage",
                          o->model->path);
        }
    } else {
        el_model_opts mo = {.layer_begin = o->layer_begin, .layer_end = o->layer_end, .no_embed = 1};
        // The head is bound only on the last stage: probe the layer count first.
        el_model *probe;
        el_model_opts po = {.no_embed = 1, .no_head = 1};
        if ((st = el_model_open(o->model_path, &po, &probe, err))) {
            free(w);
            return st;
        }
        int L = probe->hp.n_layers;
        el_model_close(probe);
        end = o->layer_end ? o->layer_end : L;
        if (o->layer_begin < 0 || o->layer_begin >= end || end > L) {
            free(w);
            return el_err(err, EL_ERR_ARG, "%s: --layers %d:%d is not a non-empty range within 0:%d", o->model_path,
                          o->layer_begin, end, L);
        }
        mo.layer_end = end;
        mo.no_head = end != L;
        mo.threads = o->pool ? el_pool_size(o->pool) : o->threads;  // stripes for the pool's threads
        if ((st = el_model_open(o->model_path, &mo, &w->m, err))) {
            free(w);
            return st;
        }
    }
    w->is_last = end == w->m->hp.n_layers;
    w->max_rows = o->max_batch_tokens > 0 ? o->max_batch_tokens : 128;
    int max_sessions = o->max_sessions > 0 ? o->max_sessions : 64;
    size_t max_kv = o->max_kv_bytes ? o->max_kv_bytes : (size_t)2 << 30;
    // Each client gets half of the sessions and of the memory unless told
    // otherwise: one greedy client cannot lock the others out.
    w->client_sessions = o->client_sessions > 0 ? o->client_sessions : max_sessions > 1 ? max_sessions / 2 : 1;
    w->client_mem = o->client_mem ? o->client_mem : max_kv / 2;
    w->client_inflight = o->client_inflight ? o->client_inflight : (size_t)64 << 20;
    w->max_reply = w->client_inflight / 4;  // a client reads a few replies at a time at most
    if (w->max_reply < 4096) w->max_reply = 4096;
    w->identity = calloc((size_t)(w->m->layer_end - w->m->layer_begin), sizeof *w->identity);
    w->kv = el_kv_pool_new(max_kv);
    w->reqs = calloc((size_t)max_sessions, sizeof *w->reqs);
    w->want = calloc((size_t)max_sessions, sizeof *w->want);
    w->take = calloc((size_t)max_sessions, sizeof *w->take);
    w->cand = calloc((size_t)max_sessions, sizeof *w->cand);
    w->ids = calloc((size_t)max_sessions, sizeof *w->ids);
    if (!w->identity || !w->kv || !w->reqs || !w->want || !w->take || !w->cand || !w->ids) {
        st = el_err(err, EL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    // each session's next KV block faulted in ahead of need, so that a step
    // never waits for fresh pages
    el_kv_pool_prefault(w->kv, 1);
    if (!el_kv_row_bytes(o->kv_type, w->m->hp.head_dim)) {
        st = el_err(err, EL_ERR_ARG, "--kv-type %s is not supported (f32, f16, q8_0)", el_dtype_name(o->kv_type));
        goto fail;
    }
    w->pool = o->pool ? o->pool : el_pool_new(o->threads);
    if (!w->pool) {
        st = el_err(err, EL_ERR_NOMEM, "cannot start threads");
        goto fail;
    }
    if ((st = el_batch_new(w->m, w->max_rows, w->pool, &w->batch, err))) goto fail;
    if (o->next && (st = el_link_connect(o->next, &o->next_sec, w->timeout_ms, &w->next, err))) goto fail;
    if (o->train) {
        el_train_server_opts to = {.per_client = o->train_per_client, .avg_timeout_ms = o->train_avg_timeout_ms,
                                   .out_dir = o->train_out, .trace = o->trace, .log = o->log,
                                   .max_clients = o->max_sessions > 0 ? o->max_sessions : 8,
                                   .admit = train_admit, .closed = train_closed, .send = train_send, .admit_ctx = w};
        if ((st = el_train_server_new(w->m, w->pool, &to, &w->train, err))) goto fail;
    }
    if (o->server) w->srv = o->server;
    else if (o->listen && (st = el_link_server_open(o->listen, &o->sec, &w->srv, err))) goto fail;
    char warn[256];  // --ctx past the trained context: allowed, with the warning every command gives
    if (o->max_ctx && el_model_ctx_warning(w->m, o->max_ctx, warn, sizeof warn)) wlog(w, "warning: %s", warn);
    w->idle_ms = o->idle_timeout_ms > 0 ? o->idle_timeout_ms : 120000;
    w->last_tick = w->st.t0 = el_time_s();
    *out = w;
    return EL_OK;
fail:
    el_worker_free(w);
    return st;
}

void el_worker_feed(el_worker *w, const el_peer *peer, const void *data, size_t len) {
    el_buf b = {(uint8_t *)data, len, len};
    handle(w, peer, &b);
    w->handled++;
}

int el_worker_step(el_worker *w) {
    int rows = step(w);
    w->hold_since = 0;
    return rows;
}

size_t el_worker_mem_used(const el_worker *w) { return el_kv_pool_used(w->kv); }

// Drops sessions idle for too long, answers what the next worker did not,
// prints the statistics line: every 50 ms.
static void housekeeping(worker *w) {
    double now = el_time_s();
    if (now - w->last_tick < 0.05) return;
    w->last_tick = now;
    if (w->train) el_train_server_tick(w->train, w->srv, w->idle_ms);
    expire_pending(w);
    for (int i = w->n_sessions - 1; i >= 0; i--) {
        int busy = w->sessions[i].head != NULL;
        for (int k = 0; k < w->n_pend && !busy; k++) busy = w->pend[k].session == w->sessions[i].id;
        if (!busy && (now - w->sessions[i].last_used) * 1000 > w->idle_ms) drop_session(w, i, "idle timeout");
    }
    prune_clients(w);
    if (w->o->stats_out && w->o->stats_every_s > 0 && now - w->st.t0 >= w->o->stats_every_s) print_stats(w, now);
    if (w->o->stats) el_worker_stats_set(w->o->stats, w->n_sessions, el_kv_pool_used(w->kv));
}

static int has_work(const worker *w) {
    for (int i = 0; i < w->n_sessions; i++)
        if (w->sessions[i].state == S_READY && w->sessions[i].head) return 1;
    return 0;
}

int el_worker_wait_ms(const el_worker *w, int *spin) {
    int work = has_work(w);
    *spin = !work;
    return work ? w->hold : 100;
}

int el_worker_has_session(const el_worker *w, uint64_t id) {
    for (int i = 0; i < w->n_sessions; i++)
        if (w->sessions[i].id == id) return 1;
    return 0;
}

int el_worker_accepts(el_worker *w, uint32_t layer_begin, uint32_t layer_end, uint64_t identity) {
    if (layer_begin < (uint32_t)w->m->layer_begin || layer_end != (uint32_t)w->m->layer_end) return 0;
    uint64_t *id = &w->identity[layer_begin - (uint32_t)w->m->layer_begin];
    if (!*id) *id = el_model_identity(w->m, (int)layer_begin, w->m->layer_end);
    return *id == identity;
}

const el_model *el_worker_model(const el_worker *w) { return w->m; }

void el_worker_turn(el_worker *w) {
    int work = has_work(w);
    // idle: wait for a message (polling the first 2 ms); gathering a step:
    // wait 1 ms without spinning, co-located devices need the cores
    // (a borrowed socket is read by its owner, who feeds us)
    if (w->srv && !w->o->server) el_link_wait(w->srv, w->next, work ? w->hold : 100, !work);
    // Take what has arrived (a bounded number, so that a flood of messages
    // cannot hold the step back), then compute one step.
    for (int k = 0; w->srv && !w->o->server && k < 256; k++) {
        el_peer peer;
        el_error e;
        el_status r = el_link_server_recv(w->srv, 0, &peer, &w->in, &e);
        if (r == EL_ERR_STATE) {
            w->t_empty = el_time_ns();
            break;
        }
        if (r != EL_OK) {
            wlog(w, "%s", e.msg);
            break;
        }
        uint64_t t0 = el_time_ns();
        handle(w, &peer, &w->in);
        if (w->o->stats) el_worker_stats_note(w->o->stats, w->in.len, el_time_ns() - t0);
        w->handled++;
    }
    if (w->in.cap > ((size_t)1 << 20)) el_buf_free(&w->in);  // no request-sized buffer kept around
    for (int k = 0; w->next && k < 256; k++) {
        el_error e;
        if (el_link_recv(w->next, 0, &w->in, &e)) break;
        handle_down(w, &w->in);
    }
    w->stepped = 0;
    w->hold = has_work(w) && gather(w);
    if (!w->hold) {
        uint64_t t0 = el_time_ns();
        w->stepped = step(w) > 0;
        w->hold_since = 0;
        if (w->stepped && w->o->stats) el_worker_stats_note(w->o->stats, 0, el_time_ns() - t0);
    }
    housekeeping(w);
}

el_status el_worker_run(const el_worker_opts *o, el_error *err) {
    el_worker *w;
    el_status st = el_worker_new(o, &w, err);
    if (st) return st;
    size_t weights = warm(w->m);
    wlog(w,
         "serving %s on %s (%s), weights %.2f MiB, resident %.2f MiB, KV %s up to %.0f MiB (%.0f MiB and %d sessions "
         "a client), replies up to %.1f MiB, %d rows a step%s%s",
         o->model_path, o->listen, o->sec.insecure ? "plaintext" : "CURVE", weights / 1048576.0,
         el_current_rss() / 1048576.0, el_dtype_name(o->kv_type), el_kv_pool_max(w->kv) / 1048576.0,
         w->client_mem / 1048576.0, w->client_sessions, w->max_reply / 1048576.0, w->max_rows, o->next ? ", next " : "",
         o->next ? o->next : "");
    while (!(o->stop && *o->stop) && !(o->max_requests && w->handled >= o->max_requests)) el_worker_turn(w);
    wlog(w, "stopping: %d sessions open, %ld requests served, %llu steps of %.2f rows on average", w->n_sessions,
         w->handled, (unsigned long long)w->total_steps, w->total_steps ? (double)w->total_rows / w->total_steps : 0.0);
    el_worker_free(w);
    return EL_OK;
}
