// The worker: serves a range of layers to many devices. One request at a time
// in arrival order (ZeroMQ's ROUTER queues fairly across peers); each session
// owns its KV cache; idle sessions are freed; every message is decoded with
// its lengths checked, and any problem is answered with an ERROR message.
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "edgellm/kernels.h"
#include "edgellm/lora.h"
#include "edgellm/sample.h"
#include "edgellm/split.h"
#include "edgellm/splittrain.h"

typedef struct {
    uint64_t id;
    el_peer peer;
    el_session *s;
    int layer_begin;  // first layer this session runs (the worker's range or a tail of it)
    el_lora_set *lora;  // adapters the device sent (LORA), owned; NULL: none
    int next_pos;
    int want, act_dtype, max_batch, ctx;
    int ushape;  // last stage returning hidden states
    uint64_t down_session;  // session on the next worker (0: none)
    double last_used;
    size_t kv_bytes;
} wsession;

typedef struct {
    const el_worker_opts *o;
    int timeout_ms;  // waits on the next worker
    el_model *m;
    el_pool *pool;
    el_link_server *srv;
    el_link *next;
    el_train_server *train;
    uint64_t *identity;  // per possible start layer, computed when first asked
    int is_last;
    wsession *sessions;
    int n_sessions;
    size_t kv_used;
    uint64_t rng;
    uint32_t down_seq;
    el_buf out, down_tx, down_rx;
    float *x, *rows;  // scratch [max batch, max(dim, vocab)]
    size_t x_cap, rows_cap;
} worker;

static void wlog(worker *w, const char *fmt, ...) {
    if (!w->o->log) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(w->o->log, "worker %d:%d: ", w->m->layer_begin, w->m->layer_end);
    vfprintf(w->o->log, fmt, ap);
    va_end(ap);
    fputc('\n', w->o->log);
    fflush(w->o->log);
}

static void reply_error(worker *w, const el_peer *peer, uint64_t session, uint32_t seq, uint32_t code, const char *fmt,
                        ...) {
    char text[EL_WIRE_MAX_TEXT];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    wlog(w, "error to peer: %s", text);
    if (el_wire_encode_error(&w->out, session, seq, code, text) == EL_OK)
        el_link_server_send(w->srv, peer, w->out.data, w->out.len, NULL);
}

static wsession *find_session(worker *w, uint64_t id, const el_peer *peer) {
    for (int i = 0; i < w->n_sessions; i++) {
        wsession *s = &w->sessions[i];
        if (s->id == id) {
            // A session belongs to the connection that opened it.
            if (s->peer.len != peer->len || memcmp(s->peer.id, peer->id, peer->len)) return NULL;
            return s;
        }
    }
    return NULL;
}

static void close_downstream(worker *w, uint64_t down) {
    if (!w->next || !down) return;
    uint32_t seq = ++w->down_seq;
    if (el_wire_encode_simple(&w->down_tx, EL_MSG_CLOSE, down, seq) == EL_OK)
        el_link_request(w->next, w->down_tx.data, w->down_tx.len, seq, &w->down_rx, w->timeout_ms, NULL);
}

static void drop_session(worker *w, int i, const char *why) {
    wsession *s = &w->sessions[i];
    wlog(w, "session %016llx closed (%s), %d left", (unsigned long long)s->id, why, w->n_sessions - 1);
    close_downstream(w, s->down_session);
    el_session_free(s->s);
    if (s->lora)
        for (int k = 0; k < s->lora->n; k++) el_lora_free((el_lora *)s->lora->lora[k]);
    free(s->lora);
    w->kv_used -= s->kv_bytes;
    w->sessions[i] = w->sessions[--w->n_sessions];
}

static int ensure_scratch(worker *w, size_t x_floats, size_t row_floats) {
    if (x_floats > w->x_cap) {
        float *p = realloc(w->x, x_floats * sizeof(float));
        if (!p) return -1;
        w->x = p;
        w->x_cap = x_floats;
    }
    if (row_floats > w->rows_cap) {
        float *p = realloc(w->rows, row_floats * sizeof(float));
        if (!p) return -1;
        w->rows = p;
        w->rows_cap = row_floats;
    }
    return 0;
}

// Sends a request to the next worker and returns its parsed reply.
static el_status down_request(worker *w, el_wire_msg *reply, el_error *err) {
    uint32_t seq = el_wire_u32(w->down_tx.data + 16);
    el_status st = el_link_request(w->next, w->down_tx.data, w->down_tx.len, seq, &w->down_rx, w->timeout_ms, err);
    if (st) return st;
    if ((st = el_wire_parse(w->down_rx.data, w->down_rx.len, reply, err))) return st;
    if (reply->type == EL_MSG_ERROR) {
        uint32_t code;
        char text[EL_WIRE_MAX_TEXT];
        if (el_wire_decode_error(reply, &code, text, sizeof text, err)) return EL_ERR_FORMAT;
        return el_err(err, EL_ERR_IO, "next worker %s: %s", w->o->next, text);
    }
    return EL_OK;
}

// Bytes all sessions' KV caches and adapters may take (--max-kv).
static size_t mem_budget(const worker *w) { return w->o->max_kv_bytes ? w->o->max_kv_bytes : (size_t)2 << 30; }

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
    size_t kv = 2 * (size_t)(st->layer_end - st->layer_begin) * o.ctx * (size_t)h->n_kv_heads * h->head_dim * 4;
    size_t max_kv = mem_budget(w);
    if (w->kv_used + kv > max_kv) {
        reply_error(w, peer, 0, msg->seq, EL_WERR_LIMIT, "KV cache budget exhausted (%zu of %zu bytes in use, %zu needed)",
                    w->kv_used, max_kv, kv);
        return;
    }
    wsession ns = {0};
    el_session_opts so = {.layer_begin = (int)st->layer_begin, .layer_end = (int)st->layer_end, .ctx = (int)o.ctx,
                          .max_batch = (int)o.max_batch};
    if (el_session_new(w->m, &so, w->pool, &ns.s, &e)) {
        reply_error(w, peer, 0, msg->seq, EL_WERR_LIMIT, "%s", e.msg);
        return;
    }
    if (!last) {
        // open our part of the chain downstream
        el_wire_open d = o;
        d.n_stages = o.n_stages - 1;
        memmove(d.stages, o.stages + 1, d.n_stages * sizeof d.stages[0]);
        el_wire_msg r;
        if (el_wire_encode_open(&w->down_tx, ++w->down_seq, &d) || down_request(w, &r, &e) ||
            r.type != EL_MSG_OPENED) {
            el_session_free(ns.s);
            reply_error(w, peer, 0, msg->seq, EL_WERR_UPSTREAM, "%s", e.msg);
            return;
        }
        ns.down_session = r.session;
    }
    do ns.id = el_rng_next(&w->rng);
    while (ns.id == 0 || find_session(w, ns.id, peer));
    ns.peer = *peer;
    ns.layer_begin = (int)st->layer_begin;
    ns.want = o.want;
    ns.act_dtype = o.act_dtype;
    ns.max_batch = (int)o.max_batch;
    ns.ctx = (int)o.ctx;
    ns.ushape = last && o.want == EL_WANT_HIDDEN;
    ns.kv_bytes = kv;
    ns.last_used = el_time_s();
    wsession *grown = realloc(w->sessions, (size_t)(w->n_sessions + 1) * sizeof *grown);
    if (!grown) {
        el_session_free(ns.s);
        reply_error(w, peer, 0, msg->seq, EL_WERR_LIMIT, "out of memory");
        return;
    }
    w->sessions = grown;
    w->sessions[w->n_sessions++] = ns;
    w->kv_used += kv;
    wlog(w, "session %016llx opened: ctx %u, act %s, %s, %d sessions", (unsigned long long)ns.id, o.ctx,
         el_dtype_name(o.act_dtype), ns.ushape ? "U-shape (hidden states back)" : last ? (o.want == EL_WANT_TOKEN ? "tokens back" : "logits back") : "forwarding",
         w->n_sessions);
    if (el_wire_encode_simple(&w->out, EL_MSG_OPENED, ns.id, msg->seq) == EL_OK)
        el_link_server_send(w->srv, peer, w->out.data, w->out.len, NULL);
}

// The session a message names, or NULL after answering that it is unknown.
static wsession *session_of(worker *w, const el_peer *peer, const el_wire_msg *msg) {
    wsession *s = find_session(w, msg->session, peer);
    if (!s)
        reply_error(w, peer, msg->session, msg->seq, EL_WERR_SESSION, "unknown or expired session %016llx",
                    (unsigned long long)msg->session);
    return s;
}

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
    int n = (int)f.n_tokens, all_rows = (msg->body[9] & 1) != 0;
    int out_rows = all_rows ? n : 1;
    if (ensure_scratch(w, (size_t)n * h->dim, (size_t)out_rows * (h->vocab > h->dim ? h->vocab : h->dim))) {
        reply_error(w, peer, s->id, msg->seq, EL_WERR_LIMIT, "out of memory");
        return;
    }
    el_wire_act_decode(f.dtype, f.payload, (size_t)n * h->dim, w->x, NULL);
    uint64_t t0 = el_time_ns();
    if (el_session_layers(s->s, w->x, n, (int)f.pos, &e)) {
        reply_error(w, peer, s->id, msg->seq, EL_WERR_INTERNAL, "%s", e.msg);
        return;
    }
    s->next_pos = (int)(f.pos + f.n_tokens);
    s->last_used = el_time_s();
    el_wire_hop hops[EL_WIRE_MAX_STAGES];
    int n_hops = 1;
    hops[0].compute_ns = el_time_ns() - t0;
    hops[0].wait_ns = 0;
    if (s->down_session) {
        el_wire_msg r;
        el_wire_result res;
        uint64_t t1 = el_time_ns();
        uint32_t seq = ++w->down_seq;
        el_status st = el_wire_encode_forward(&w->down_tx, s->down_session, seq, f.pos, f.n_tokens, (uint32_t)h->dim,
                                              s->act_dtype, w->x, &e);
        if (!st) w->down_tx.data[EL_WIRE_HEADER + 9] = all_rows ? 1 : 0;
        if (!st) st = down_request(w, &r, &e);
        if (!st) st = el_wire_decode_result(&r, &res, &e);
        hops[0].wait_ns = el_time_ns() - t1;
        if (st) {
            reply_error(w, peer, s->id, msg->seq, EL_WERR_UPSTREAM, "%s", e.msg);
            return;
        }
        // pass the downstream result through, with our timing in front
        for (int i = 0; i < res.n_hops && n_hops < EL_WIRE_MAX_STAGES; i++) hops[n_hops++] = res.hops[i];
        if (res.kind == EL_WANT_TOKEN) {
            int32_t toks[1 << 10];
            uint32_t k = res.n_rows < 1024 ? res.n_rows : 1024;
            for (uint32_t i = 0; i < k; i++) memcpy(&toks[i], res.payload + 4 * i, 4);
            st = el_wire_encode_result(&w->out, s->id, msg->seq, res.kind, EL_DTYPE_I32, k, 1, NULL, toks, hops, n_hops, &e);
        } else {
            size_t cnt = (size_t)res.n_rows * res.row_len;
            if (ensure_scratch(w, 0, cnt)) st = el_err(&e, EL_ERR_NOMEM, "out of memory");
            if (!st) st = el_wire_act_decode(res.dtype, res.payload, cnt, w->rows, &e);
            if (!st)
                st = el_wire_encode_result(&w->out, s->id, msg->seq, res.kind, res.dtype, res.n_rows, res.row_len,
                                           w->rows, NULL, hops, n_hops, &e);
        }
        if (st) {
            reply_error(w, peer, s->id, msg->seq, EL_WERR_INTERNAL, "%s", e.msg);
            return;
        }
    } else {
        el_status st;
        const float *last_rows = w->x + (size_t)(n - out_rows) * h->dim;
        if (s->ushape) {
            st = el_wire_encode_result(&w->out, s->id, msg->seq, EL_WANT_HIDDEN, s->act_dtype, (uint32_t)out_rows,
                                       (uint32_t)h->dim, last_rows, NULL, hops, 1, &e);
        } else {
            uint64_t t2 = el_time_ns();
            st = el_session_head(s->s, w->x, n, out_rows, w->rows, &e);
            if (!st && s->want == EL_WANT_TOKEN) {
                int32_t toks[1 << 10];
                int k = out_rows < 1024 ? out_rows : 1024;
                for (int i = 0; i < k; i++) toks[i] = el_argmax(w->rows + (size_t)i * h->vocab, h->vocab);
                hops[0].compute_ns += el_time_ns() - t2;
                st = el_wire_encode_result(&w->out, s->id, msg->seq, EL_WANT_TOKEN, EL_DTYPE_I32, (uint32_t)k, 1, NULL,
                                           toks, hops, 1, &e);
            } else if (!st) {
                hops[0].compute_ns += el_time_ns() - t2;
                // logits always travel as f32: sampling must see exactly what a local run sees
                st = el_wire_encode_result(&w->out, s->id, msg->seq, EL_WANT_LOGITS, EL_DTYPE_F32, (uint32_t)out_rows,
                                           (uint32_t)h->vocab, w->rows, NULL, hops, 1, &e);
            }
        }
        if (st) {
            reply_error(w, peer, s->id, msg->seq, EL_WERR_INTERNAL, "%s", e.msg);
            return;
        }
    }
    el_link_server_send(w->srv, peer, w->out.data, w->out.len, NULL);
}

// LORA: one of the device's adapters. This stage keeps the matrices of its
// layers, passes the message on when later stages have some, and answers OK
// once every stage holds its part; the session's forward passes apply it.
static void handle_lora(worker *w, const el_peer *peer, const el_wire_msg *msg) {
    el_error e;
    wsession *s = session_of(w, peer, msg);
    if (!s) return;
    const el_hparams *h = &w->m->hp;
    uint32_t cap = (uint32_t)h->n_layers * EL_LORA_N_TARGETS, n = 0;
    el_wire_lora_mat *mats = malloc(cap * sizeof *mats);
    el_lora_slot *slots = malloc(cap * sizeof *slots);
    uint32_t *kept = malloc(cap * sizeof *kept);
    el_lora *l = NULL;
    float scale, alpha;
    int later = 0, k = 0;
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
    // checked before anything is allocated: what this stage keeps counts
    // against its memory budget, with the KV caches
    size_t max_mem = mem_budget(w);
    if (w->kv_used + bytes > max_mem) {
        reply_error(w, peer, s->id, msg->seq, EL_WERR_LIMIT, "memory budget exhausted (%zu of %zu bytes in use, %zu needed)",
                    w->kv_used, max_mem, bytes);
        goto out;
    }
    if (later && !s->down_session) {
        reply_error(w, peer, s->id, msg->seq, EL_WERR_MISMATCH, "LORA matrices for layers past %d, and no stage after this one",
                    w->m->layer_end);
        goto out;
    }
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
    if (later) {  // the same message, addressed to our session on the next worker
        el_wire_msg r;
        uint32_t seq = ++w->down_seq;
        w->down_tx.len = 0;
        el_status st = el_wire_readdress(&w->down_tx, msg, s->down_session, seq);
        if (!st) st = down_request(w, &r, &e);
        if (!st && r.type != EL_MSG_OK) st = el_err(&e, EL_ERR_FORMAT, "next worker: unexpected reply type %u to LORA", r.type);
        if (w->down_tx.cap > ((size_t)1 << 20)) el_buf_free(&w->down_tx);  // no adapter-sized copy kept around
        if (st) {
            reply_error(w, peer, s->id, msg->seq, EL_WERR_UPSTREAM, "%s", e.msg);
            goto out;
        }
    }
    s->lora->lora[s->lora->n] = l;
    s->lora->scale[s->lora->n++] = scale;
    l = NULL;
    el_session_set_lora(s->s, s->lora);
    s->kv_bytes += bytes;
    w->kv_used += bytes;
    s->last_used = el_time_s();
    wlog(w, "session %016llx: adapter %d with %d matrices here (scale %g)%s", (unsigned long long)s->id, s->lora->n, k,
         scale, later ? ", the rest passed on" : "");
    if (el_wire_encode_simple(&w->out, EL_MSG_OK, s->id, msg->seq) == EL_OK)
        el_link_server_send(w->srv, peer, w->out.data, w->out.len, NULL);
out:
    el_lora_free(l);
    free(mats);
    free(slots);
    free(kept);
}

static void handle(worker *w, const el_peer *peer, const el_buf *in) {
    el_error e;
    el_wire_msg msg;
    if (el_wire_parse(in->data, in->len, &msg, &e)) {
        reply_error(w, peer, 0, 0, EL_WERR_PROTOCOL, "bad message: %s", e.msg);
        return;
    }
    if (w->train && el_train_server_handle(w->train, w->srv, peer, &msg)) return;
    switch (msg.type) {
    case EL_MSG_PING:
        if (el_wire_encode_ping(&w->out, EL_MSG_PONG, msg.seq, msg.body, msg.body_len) == EL_OK)
            el_link_server_send(w->srv, peer, w->out.data, w->out.len, NULL);
        break;
    case EL_MSG_PROBE: {
        uint32_t n = msg.body_len >= 4 ? el_wire_u32(msg.body) : 0;
        if (msg.body_len < 4 || n > EL_WIRE_MAX_PROBE_REPLY) {
            reply_error(w, peer, 0, msg.seq, EL_WERR_PROTOCOL, "bad PROBE (reply of %u bytes)", n);
            break;
        }
        if (el_wire_encode_probe(&w->out, msg.seq, n, 0) == EL_OK) {
            w->out.data[6] = EL_MSG_PROBE_REPLY;
            el_link_server_send(w->srv, peer, w->out.data, w->out.len, NULL);
        }
        break;
    }
    case EL_MSG_OPEN: handle_open(w, peer, &msg); break;
    case EL_MSG_FORWARD: handle_forward(w, peer, &msg); break;
    case EL_MSG_LORA: handle_lora(w, peer, &msg); break;
    case EL_MSG_CLOSE: {
        for (int i = 0; i < w->n_sessions; i++)
            if (w->sessions[i].id == msg.session && find_session(w, msg.session, peer)) {
                drop_session(w, i, "closed by the device");
                break;
            }
        if (el_wire_encode_simple(&w->out, EL_MSG_OK, msg.session, msg.seq) == EL_OK)
            el_link_server_send(w->srv, peer, w->out.data, w->out.len, NULL);
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
    for (size_t k = 0; k < packed; k += 4096) sink ^= ((const unsigned char *)t->packed)[k];
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

el_status el_worker_run(const el_worker_opts *o, el_error *err) {
    worker w = {0};
    w.o = o;
    w.timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 30000;
    el_status st;
    el_model_opts mo = {.layer_begin = o->layer_begin, .layer_end = o->layer_end, .no_embed = 1};
    // The head is bound only on the last stage: probe the layer count first.
    el_model *probe;
    el_model_opts po = {.no_embed = 1, .no_head = 1};
    if ((st = el_model_open(o->model_path, &po, &probe, err))) return st;
    int L = probe->hp.n_layers;
    el_model_close(probe);
    int end = o->layer_end ? o->layer_end : L;
    if (o->layer_begin < 0 || o->layer_begin >= end || end > L)
        return el_err(err, EL_ERR_ARG, "%s: --layers %d:%d is not a non-empty range within 0:%d", o->model_path,
                      o->layer_begin, end, L);
    mo.layer_end = end;
    mo.no_head = end != L;
    if ((st = el_model_open(o->model_path, &mo, &w.m, err))) return st;
    w.identity = calloc((size_t)(w.m->layer_end - w.m->layer_begin), sizeof *w.identity);
    if (!w.identity) { st = el_err(err, EL_ERR_NOMEM, "out of memory"); goto out; }
    w.rng = el_time_ns() ^ ((uint64_t)getpid() << 32);
    w.pool = el_pool_new(o->threads);
    if (!w.pool) { st = el_err(err, EL_ERR_NOMEM, "cannot start threads"); goto out; }
    if (o->next && (st = el_link_connect(o->next, &o->next_sec, w.timeout_ms, &w.next, err)))
        goto out;
    if (o->train) {
        el_train_server_opts to = {.per_client = o->train_per_client, .avg_timeout_ms = o->train_avg_timeout_ms,
                                   .out_dir = o->train_out, .trace = o->trace, .log = o->log,
                                   .max_clients = o->max_sessions > 0 ? o->max_sessions : 8};
        if ((st = el_train_server_new(w.m, w.pool, &to, &w.train, err))) goto out;
    }
    char warn[256];  // --ctx past the trained context: allowed, with the warning every command gives
    if (o->max_ctx && el_model_ctx_warning(w.m, o->max_ctx, warn, sizeof warn)) wlog(&w, "warning: %s", warn);
    if ((st = el_link_server_open(o->listen, &o->sec, &w.srv, err))) goto out;
    size_t weights = warm(w.m);
    wlog(&w, "serving %s on %s (%s), weights %.2f MiB, resident %.2f MiB%s%s", o->model_path, o->listen,
         o->sec.insecure ? "plaintext" : "CURVE", weights / 1048576.0, el_current_rss() / 1048576.0,
         o->next ? ", next " : "", o->next ? o->next : "");
    int idle_ms = o->idle_timeout_ms > 0 ? o->idle_timeout_ms : 120000;
    el_buf in = {0};
    long handled = 0;
    while (!(o->stop && *o->stop)) {
        el_peer peer;
        el_error e;
        el_status r = el_link_server_recv(w.srv, 200, &peer, &in, &e);
        if (r == EL_OK) {
            uint64_t t0 = el_time_ns();
            handle(&w, &peer, &in);
            if (o->stats) el_worker_stats_note(o->stats, in.len, el_time_ns() - t0);
            handled++;
            if (o->max_requests && handled >= o->max_requests) break;
        } else if (r != EL_ERR_STATE) {
            wlog(&w, "%s", e.msg);
        }
        if (w.train) el_train_server_tick(w.train, w.srv, idle_ms);
        double now = el_time_s();
        for (int i = w.n_sessions - 1; i >= 0; i--)
            if ((now - w.sessions[i].last_used) * 1000 > idle_ms) drop_session(&w, i, "idle timeout");
        if (o->stats) el_worker_stats_set(o->stats, w.n_sessions, w.kv_used);
    }
    el_buf_free(&in);
    wlog(&w, "stopping: %d sessions open, %ld requests served", w.n_sessions, handled);
    st = EL_OK;
out:
    while (w.n_sessions) drop_session(&w, w.n_sessions - 1, "worker stopping");
    free(w.sessions);
    el_train_server_free(w.train);
    el_link_server_close(w.srv);
    el_link_close(w.next);
    el_pool_free(w.pool);
    el_model_close(w.m);
    el_buf_free(&w.out);
    el_buf_free(&w.down_tx);
    el_buf_free(&w.down_rx);
    free(w.x);
    free(w.rows);
    free(w.identity);
    return st;
}
