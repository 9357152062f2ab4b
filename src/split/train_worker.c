// The worker side of split fine-tuning: a training stage per device session,
// a LoRA adapter per device or one shared by all, AdamW, and rounds of
// federated averaging of the devices' own adapters. Every message is decoded
// with its lengths checked; problems are answered with ERROR.
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "edgellm/sample.h"
#include "edgellm/splittrain.h"

typedef struct {
    uint64_t id;
    el_peer peer;
    el_wire_train_open o;
    el_lora *own;  // per-client adapter (NULL when the shared one is used)
    el_lora *lora; // the adapter this session trains
    float *m, *v;  // AdamW state for own (the shared adapter's lives in the server)
    el_train_stage *st;
    float *x;      // [rows, dim]
    int rows;
    el_kv_pool *mem;  // the client's budget this session's memory counts in (NULL: none)
    size_t bytes;
    uint64_t seqs;    // sequences trained since its last averaging round (the weight it may claim)
    double last_used;
    int awaiting_backward;  // U-shape: forward done, gradient of the hidden states due
    // federated averaging
    int avg_pending;
    uint32_t avg_seq;
    double avg_weight;
    float *avg_params;
    uint64_t avg_n;
} tsess;

struct el_train_server {
    const el_model *m;
    el_pool *pool;
    el_train_server_opts o;
    tsess *s;
    int n;
    el_lora *shared;
    el_wire_train_open shared_cfg;
    float *shared_m, *shared_v;
    double round_started;  // first submission of the current averaging round (0: none)
    el_buf out;
};

static void tlog(el_train_server *t, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    el_vlogf(t->o.log, "train worker: ", fmt, ap);
    va_end(ap);
}

static void send_out(el_train_server *t, el_link_server *srv, const el_peer *peer) {
    if (t->o.send) t->o.send(t->o.admit_ctx, peer, t->out.data, t->out.len);
    else el_link_server_send(srv, peer, t->out.data, t->out.len, NULL);
}

static void reply_error(el_train_server *t, el_link_server *srv, const el_peer *peer, uint64_t session, uint32_t seq,
                        uint32_t code, const char *fmt, ...) {
    char text[EL_WIRE_MAX_TEXT];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    tlog(t, "error to device: %s", text);
    if (el_wire_encode_error(&t->out, session, seq, code, text) == EL_OK) send_out(t, srv, peer);
}

el_status el_train_server_new(const el_model *m, el_pool *pool, const el_train_server_opts *o, el_train_server **out,
                              el_error *err) {
    *out = NULL;
    if (!m->has_head) return el_err(err, EL_ERR_ARG, "%s: a training worker must be the last stage (it holds the head)", m->path);
    el_train_server *t = calloc(1, sizeof *t);
    if (!t) return el_err(err, EL_ERR_NOMEM, "out of memory");
    t->m = m;
    t->pool = pool;
    t->o = *o;
    if (t->o.max_clients <= 0) t->o.max_clients = 8;
    if (t->o.avg_timeout_ms <= 0) t->o.avg_timeout_ms = 30000;
    *out = t;
    return EL_OK;
}

static void free_session(el_train_server *t, tsess *s) {
    if (s->mem) el_kv_pool_give(s->mem, s->bytes);
    if (t->o.closed && s->id) t->o.closed(t->o.admit_ctx, &s->peer);
    el_train_stage_free(s->st);
    el_lora_free(s->own);
    free(s->m);
    free(s->v);
    free(s->x);
    free(s->avg_params);
}

void el_train_server_free(el_train_server *t) {
    if (!t) return;
    for (int i = 0; i < t->n; i++) free_session(t, &t->s[i]);
    free(t->s);
    el_lora_free(t->shared);
    free(t->shared_m);
    free(t->shared_v);
    el_buf_free(&t->out);
    free(t);
}

int el_train_server_sessions(const el_train_server *t) { return t->n; }

static tsess *find(el_train_server *t, uint64_t id, const el_peer *peer) {
    for (int i = 0; i < t->n; i++)
        if (t->s[i].id == id && t->s[i].peer.len == peer->len && !memcmp(t->s[i].peer.id, peer->id, peer->len))
            return &t->s[i];
    return NULL;
}

static void drop(el_train_server *t, int i, const char *why) {
    tlog(t, "session %016llx closed (%s), %d left", (unsigned long long)t->s[i].id, why, t->n - 1);
    free_session(t, &t->s[i]);
    t->s[i] = t->s[--t->n];
    // The shared adapter lives as long as some device trains it; the next
    // group of devices starts a fresh one.
    int users = 0;
    for (int k = 0; k < t->n; k++) users += t->s[k].lora == t->shared;
    if (t->shared && !users) {
        tlog(t, "the shared adapter's last device left: it is discarded");
        el_lora_free(t->shared);
        free(t->shared_m);
        free(t->shared_v);
        t->shared = NULL;
        t->shared_m = t->shared_v = NULL;
    }
}

// The shared adapter's configuration must be the same for every device.
static int same_cfg(const el_wire_train_open *a, const el_wire_train_open *b) {
    return a->layer_begin == b->layer_begin && a->rank == b->rank && a->alpha == b->alpha && a->targets == b->targets &&
           a->seed == b->seed;
}

static void handle_open(el_train_server *t, el_link_server *srv, const el_peer *peer, const el_wire_msg *msg) {
    el_error e;
    el_wire_train_open o;
    const el_model *m = t->m;
    const el_hparams *h = &m->hp;
    if (el_wire_decode_train_open(msg, &o, &e)) {
        reply_error(t, srv, peer, 0, msg->seq, EL_WERR_PROTOCOL, "bad TRAIN_OPEN: %s", e.msg);
        return;
    }
    if (o.n_layers != (uint32_t)h->n_layers || o.dim != (uint32_t)h->dim || o.vocab != (uint32_t)h->vocab) {
        reply_error(t, srv, peer, 0, msg->seq, EL_WERR_MISMATCH, "model mismatch: worker has %d layers, dim %d, vocab %d",
                    h->n_layers, h->dim, h->vocab);
        return;
    }
    if (o.layer_begin < (uint32_t)m->layer_begin || o.layer_end != (uint32_t)m->layer_end) {
        reply_error(t, srv, peer, 0, msg->seq, EL_WERR_MISMATCH,
                    "this worker trains layers %d:%d (or a tail of them), the device asked for %u:%u", m->layer_begin,
                    m->layer_end, o.layer_begin, o.layer_end);
        return;
    }
    uint64_t id = el_model_identity(m, (int)o.layer_begin, m->layer_end);
    if (id != o.identity) {
        reply_error(t, srv, peer, 0, msg->seq, EL_WERR_MISMATCH, "model mismatch: layers %u:%d of %s differ from the device's in their weights, "
                    "tensor types or names: load the same file on both sides (a converted or quantized copy is another "
                    "model)",
                    o.layer_begin, m->layer_end, m->path);
        return;
    }
    if (o.T > (uint32_t)h->ctx || !el_wire_act_supported(o.act_dtype) || !el_wire_act_supported(o.grad_dtype)) {
        reply_error(t, srv, peer, 0, msg->seq, EL_WERR_LIMIT, "ctx %u or encodings %u/%u not acceptable", o.T, o.act_dtype,
                    o.grad_dtype);
        return;
    }
    if (t->n >= t->o.max_clients) {
        reply_error(t, srv, peer, 0, msg->seq, EL_WERR_LIMIT, "worker is training for %d devices already", t->n);
        return;
    }
    int shared = o.shared && !t->o.per_client;
    if (shared && t->shared && !same_cfg(&o, &t->shared_cfg)) {
        reply_error(t, srv, peer, 0, msg->seq, EL_WERR_MISMATCH,
                    "the shared adapter has layers %u:, rank %u, alpha %g, seed %llu; this device asked for other settings",
                    t->shared_cfg.layer_begin, t->shared_cfg.rank, t->shared_cfg.alpha,
                    (unsigned long long)t->shared_cfg.seed);
        return;
    }
    tsess s = {0};
    s.o = o;
    el_status st = EL_OK;
    el_kv_pool *pool = NULL;
    if (t->o.admit && !(pool = t->o.admit(t->o.admit_ctx, peer, &e))) {
        reply_error(t, srv, peer, 0, msg->seq, EL_WERR_LIMIT, "%s", e.msg);
        return;
    }
    if (shared) {
        if (!t->shared) {
            if ((st = el_lora_new_layers(m, (int)o.layer_begin, (int)o.layer_end, (int)o.rank, o.alpha, o.targets, o.seed,
                                         &t->shared, &e)) == EL_OK) {
                t->shared_cfg = o;
                t->shared_m = el_calloc(t->shared->n_params, sizeof(float));
                t->shared_v = el_calloc(t->shared->n_params, sizeof(float));
                if (!t->shared_m || !t->shared_v) st = el_err(&e, EL_ERR_NOMEM, "out of memory");
            }
        }
        s.lora = t->shared;
    } else {
        st = el_lora_new_layers(m, (int)o.layer_begin, (int)o.layer_end, (int)o.rank, o.alpha, o.targets, o.seed, &s.own, &e);
        if (!st) {
            s.lora = s.own;
            s.m = el_calloc(s.own->n_params, sizeof(float));
            s.v = el_calloc(s.own->n_params, sizeof(float));
            if (!s.m || !s.v) st = el_err(&e, EL_ERR_NOMEM, "out of memory");
        }
    }
    // Everything the session holds counts against its client's share:
    // checked before the activations are allocated, not after.
    size_t own_bytes = s.own ? s.own->n_params * 3 * sizeof(float) : 0;  // parameters and AdamW state
    size_t x_bytes = (size_t)o.batch * o.T * (size_t)h->dim * sizeof(float);
    size_t room = pool ? el_kv_pool_room(pool) : 0;
    if (!st && pool && room < own_bytes + x_bytes)
        st = el_err(&e, EL_ERR_NOMEM, "training batch %u x context %u does not fit this client's memory (%zu bytes left)",
                    o.batch, o.T, room);
    el_train_opts to = {(int)o.layer_begin, (int)o.layer_end, (int)o.batch, (int)o.T,
                        pool ? room - own_bytes - x_bytes : 0};
    if (!st) st = el_train_stage_new(m, s.lora, &to, t->pool, &s.st, &e);
    if (!st) {
        s.rows = (int)(o.batch * o.T);
        s.x = el_calloc((size_t)s.rows * h->dim, sizeof(float));
        if (!s.x) st = el_err(&e, EL_ERR_NOMEM, "out of memory");
    }
    if (!st && pool) {
        size_t bytes = el_train_activation_bytes(s.st) + s.lora->n_params * sizeof(float) + own_bytes + x_bytes;
        if (!el_kv_pool_take(pool, bytes))
            st = el_err(&e, EL_ERR_NOMEM, "training memory of %zu bytes does not fit this client's share", bytes);
        else
            s.mem = pool, s.bytes = bytes;
    }
    tsess *grown = st ? NULL : realloc(t->s, (size_t)(t->n + 1) * sizeof *grown);
    if (st || !grown) {
        free_session(t, &s);  // (s.id is 0: closed is told below)
        if (pool && t->o.closed) t->o.closed(t->o.admit_ctx, peer);
        reply_error(t, srv, peer, 0, msg->seq, EL_WERR_LIMIT, "%s", st ? e.msg : "out of memory");
        return;
    }
    t->s = grown;
    do randombytes_buf(&s.id, sizeof s.id);
    while (!s.id || find(t, s.id, peer));
    s.peer = *peer;
    s.last_used = el_time_s();
    t->s[t->n++] = s;
    tlog(t, "session %016llx opened: layers %u:%u, batch %u x %u, rank %u, %s adapter, %s, %d devices", (unsigned long long)s.id,
         o.layer_begin, o.layer_end, o.batch, o.T, o.rank, shared ? "shared" : "own", o.ushape ? "U-shape (labels stay on the device)" : "loss here",
         t->n);
    if (el_wire_encode_simple(&t->out, EL_MSG_OPENED, s.id, msg->seq) == EL_OK) send_out(t, srv, peer);
}

static void reply_rows(el_train_server *t, el_link_server *srv, const el_peer *peer, tsess *s, uint32_t seq, double loss,
                       double nt, double secs, uint8_t kind, int with_rows, int dtype) {
    el_error e;
    if (el_wire_encode_train_result(&t->out, s->id, seq, loss, nt, secs, kind, with_rows ? (uint32_t)s->rows : 0,
                                    (uint32_t)t->m->hp.dim, dtype, s->x, &e))
        reply_error(t, srv, peer, s->id, seq, EL_WERR_INTERNAL, "%s", e.msg);
    else
        send_out(t, srv, peer);
}

static void handle_forward(el_train_server *t, el_link_server *srv, const el_peer *peer, const el_wire_msg *msg,
                           tsess *s) {
    el_error e;
    el_wire_train_fwd f;
    int dim = t->m->hp.dim;
    if (el_wire_decode_train_fwd(msg, (uint32_t)dim, &f, &e)) {
        reply_error(t, srv, peer, s->id, msg->seq, EL_WERR_PROTOCOL, "bad %s: %s",
                    msg->type == EL_MSG_TRAIN_FORWARD ? "TRAIN_FORWARD" : "TRAIN_BACKWARD", e.msg);
        return;
    }
    if (f.rows != (uint32_t)s->rows) {
        reply_error(t, srv, peer, s->id, msg->seq, EL_WERR_PROTOCOL, "%u rows, the session trains batches of %d", f.rows, s->rows);
        return;
    }
    if (t->o.trace)
        fprintf(t->o.trace, "%s rows=%u dtype=%u targets=%s\n", msg->type == EL_MSG_TRAIN_FORWARD ? "TRAIN_FORWARD" : "TRAIN_BACKWARD",
                f.rows, f.dtype, f.targets ? "yes" : "no"), fflush(t->o.trace);
    el_wire_act_decode(f.dtype, f.x, (size_t)f.rows * dim, s->x, NULL);
    uint64_t t0 = el_time_ns();
    el_status st;
    if (msg->type == EL_MSG_TRAIN_BACKWARD) {
        if (!s->awaiting_backward) {
            reply_error(t, srv, peer, s->id, msg->seq, EL_WERR_PROTOCOL, "TRAIN_BACKWARD without a forward to go back through");
            return;
        }
        s->awaiting_backward = 0;
        if ((st = el_train_layers_backward(s->st, s->x, &e))) goto fail;
        reply_rows(t, srv, peer, s, msg->seq, 0, 0, (el_time_ns() - t0) * 1e-9, 0, 1, s->o.grad_dtype);
        return;
    }
    if ((st = el_train_layers_forward(s->st, s->x, &e))) goto fail;
    int fwd_only = (f.flags & EL_TRAIN_FORWARD_ONLY) != 0;
    if (!fwd_only) s->seqs += s->o.batch;
    if (!f.targets) {  // U-shape: the device runs the head and the loss
        if (!s->o.ushape) {
            reply_error(t, srv, peer, s->id, msg->seq, EL_WERR_PROTOCOL, "TRAIN_FORWARD without targets in a session with the loss here");
            return;
        }
        s->awaiting_backward = !fwd_only;
        reply_rows(t, srv, peer, s, msg->seq, 0, 0, (el_time_ns() - t0) * 1e-9, 1, 1, s->o.act_dtype);
        return;
    }
    int *targets = malloc((size_t)s->rows * sizeof(int));
    float *mask = malloc((size_t)s->rows * sizeof(float));
    if (!targets || !mask) {
        free(targets), free(mask);
        reply_error(t, srv, peer, s->id, msg->seq, EL_WERR_LIMIT, "out of memory");
        return;
    }
    for (int i = 0; i < s->rows; i++) {
        targets[i] = (int)el_wire_u32(f.targets + 4 * i);
        uint32_t u = el_wire_u32(f.mask + 4 * i);
        memcpy(&mask[i], &u, 4);
        if (!isfinite(mask[i]) || mask[i] < 0) mask[i] = 0;
    }
    double loss = 0, nt = 0;
    st = el_train_head(s->st, s->x, targets, mask, &loss, &nt, fwd_only ? NULL : s->x, f.grad_scale, NULL, &e);
    free(targets);
    free(mask);
    if (!st && !fwd_only) st = el_train_layers_backward(s->st, s->x, &e);
    if (st) goto fail;
    reply_rows(t, srv, peer, s, msg->seq, loss, nt, (el_time_ns() - t0) * 1e-9, 0, !fwd_only, s->o.grad_dtype);
    return;
fail:
    reply_error(t, srv, peer, s->id, msg->seq, EL_WERR_INTERNAL, "%s", e.msg);
}

static void handle_step(el_train_server *t, el_link_server *srv, const el_peer *peer, const el_wire_msg *msg, tsess *s) {
    el_error e;
    uint64_t step;
    float lr;
    double dev_ss;
    if (el_wire_decode_train_step(msg, &step, &lr, &dev_ss, &e)) {
        reply_error(t, srv, peer, s->id, msg->seq, EL_WERR_PROTOCOL, "%s", e.msg);
        return;
    }
    float *g = el_train_grads(s->st);
    double norm = sqrt(dev_ss + el_grad_sumsq(g, s->lora->n_params));
    el_adamw_opts ao = {lr, s->o.beta1, s->o.beta2, s->o.eps, s->o.weight_decay, s->o.clip};
    el_adamw_apply(s->lora->params, g, s->own ? s->m : t->shared_m, s->own ? s->v : t->shared_v, s->lora->n_params, step,
                   &ao, lr, norm);
    el_train_zero_grads(s->st);
    if (el_wire_encode_f64(&t->out, EL_MSG_TRAIN_STEPPED, s->id, msg->seq, norm) == EL_OK) send_out(t, srv, peer);
}

static void handle_get(el_train_server *t, el_link_server *srv, const el_peer *peer, const el_wire_msg *msg, tsess *s) {
    if (t->o.out_dir) {
        char path[4096];
        snprintf(path, sizeof path, "%s/worker-%016llx.gguf", t->o.out_dir, (unsigned long long)s->id);
        el_error e;
        if (el_lora_save(s->lora, path, &e)) tlog(t, "%s", e.msg);
        else tlog(t, "saved the worker-side adapter of session %016llx to %s", (unsigned long long)s->id, path);
    }
    if (el_wire_encode_params(&t->out, EL_MSG_TRAIN_PARAMS, s->id, msg->seq, 0, s->lora->params, s->lora->n_params))
        reply_error(t, srv, peer, s->id, msg->seq, EL_WERR_LIMIT, "adapter too large to send");
    else
        send_out(t, srv, peer);
}

// Closes the federated round if every session has submitted, or the round
// has waited long enough (the missing devices are left out).
static void maybe_finish_round(el_train_server *t, el_link_server *srv, int force) {
    int pending = 0, waiting = 0;
    for (int i = 0; i < t->n; i++) pending += t->s[i].avg_pending, waiting += !t->s[i].avg_pending;
    if (!pending || (waiting && !force)) return;
    uint64_t n = 0;
    double wsum = 0;
    for (int i = 0; i < t->n; i++)
        if (t->s[i].avg_pending) {
            if (n && t->s[i].avg_n != n) {
                n = 0;
                break;
            }
            n = t->s[i].avg_n;
            wsum += t->s[i].avg_weight;
        }
    float *avg = n ? el_calloc(n, sizeof(float)) : NULL;
    if (avg) {
        // weighted mean in double, in session order (deterministic)
        double *acc = el_calloc(n, sizeof(double));
        if (!acc) {  // no average rather than a wrong one
            free(avg);
            avg = NULL;
        }
        for (int i = 0; acc && i < t->n; i++)
            if (t->s[i].avg_pending) {
                double w = wsum > 0 ? t->s[i].avg_weight / wsum : 1.0 / pending;
                for (uint64_t k = 0; k < n; k++) acc[k] += w * t->s[i].avg_params[k];
            }
        for (uint64_t k = 0; acc && k < n; k++) avg[k] = (float)acc[k];
        free(acc);
    }
    tlog(t, "federated round: averaged %d device adapters (%s)", pending, waiting ? "the others timed out" : "all devices");
    for (int i = 0; i < t->n; i++) {
        tsess *s = &t->s[i];
        if (!s->avg_pending) continue;
        s->avg_pending = 0;
        s->last_used = el_time_s();  // it waited on the others, not idle: its clock starts now
        if (avg && el_wire_encode_params(&t->out, EL_MSG_TRAIN_PARAMS, s->id, s->avg_seq, wsum, avg, n) == EL_OK)
            send_out(t, srv, &s->peer);
        else
            reply_error(t, srv, &s->peer, s->id, s->avg_seq, n ? EL_WERR_LIMIT : EL_WERR_PROTOCOL,
                        n ? "out of memory for the average" : "devices sent adapters of different sizes");
        free(s->avg_params);
        s->avg_params = NULL;
    }
    free(avg);
    t->round_started = 0;
}

static void handle_avg(el_train_server *t, el_link_server *srv, const el_peer *peer, const el_wire_msg *msg, tsess *s) {
    el_error e;
    double w;
    const uint8_t *p;
    uint64_t n;
    if (el_wire_decode_params(msg, &w, &p, &n, &e)) {  // (a weight that is not finite, or no weight)
        reply_error(t, srv, peer, s->id, msg->seq, EL_WERR_PROTOCOL, "federated average refused: %s", e.msg);
        drop(t, (int)(s - t->s), "sent a malformed average");
        maybe_finish_round(t, srv, 0);
        return;
    }
    // A device-side adapter has the device's layers (0 .. this session's
    // first) at the session's rank and targets; its weight is the sequences
    // it trained since its last round, which this worker counted itself. A
    // device that sends anything else is dropped, and the round goes on
    // without it.
    const el_hparams *h = &t->m->hp;
    uint64_t want = 0;
    for (uint32_t l = 0; l < s->o.layer_begin; l++)
        for (int k = 0; k < EL_LORA_N_TARGETS; k++)
            if (s->o.targets & (1u << k)) {
                int in, out;
                el_lora_target_shape(h, k, &in, &out);
                want += (uint64_t)s->o.rank * (uint64_t)(in + out);
            }
    const char *bad = n != want ? "its adapter has the wrong size"
                      : !isfinite(w) || !(w > 0) ? "its weight is not a positive number"
                      : w > (double)s->seqs ? "its weight is more than the sequences it trained since its last round"
                                             : NULL;
    for (uint64_t k = 0; !bad && k < n; k++) {
        uint32_t u = el_wire_u32(p + 4 * k);
        float f;
        memcpy(&f, &u, 4);
        if (!isfinite(f)) bad = "its adapter has a value that is not finite";
    }
    if (bad) {
        reply_error(t, srv, peer, s->id, msg->seq, EL_WERR_PROTOCOL,
                    "federated average refused: %s (%llu values, weight %g; expected %llu values, weight at most %llu)",
                    bad, (unsigned long long)n, w, (unsigned long long)want, (unsigned long long)s->seqs);
        drop(t, (int)(s - t->s), "sent a malformed average");
        maybe_finish_round(t, srv, 0);
        return;
    }
    s->seqs = 0;
    free(s->avg_params);
    s->avg_params = el_calloc(n ? n : 1, sizeof(float));
    if (!s->avg_params) {
        reply_error(t, srv, peer, s->id, msg->seq, EL_WERR_LIMIT, "out of memory");
        return;
    }
    for (uint64_t k = 0; k < n; k++) {
        uint32_t u = el_wire_u32(p + 4 * k);
        memcpy(&s->avg_params[k], &u, 4);
    }
    s->avg_n = n;
    s->avg_weight = w;
    s->avg_seq = msg->seq;
    s->avg_pending = 1;
    if (!t->round_started) t->round_started = el_time_s();
    maybe_finish_round(t, srv, 0);
}

int el_train_server_handle(el_train_server *t, el_link_server *srv, const el_peer *peer, const el_wire_msg *msg) {
    if (msg->type == EL_MSG_TRAIN_OPEN) {
        if (t->o.trace) fprintf(t->o.trace, "TRAIN_OPEN\n"), fflush(t->o.trace);
        handle_open(t, srv, peer, msg);
        return 1;
    }
    if (msg->type < EL_MSG_TRAIN_FORWARD || msg->type > EL_MSG_TRAIN_AVG) {
        if (msg->type != EL_MSG_CLOSE) return 0;
        for (int i = 0; i < t->n; i++)
            if (t->s[i].id == msg->session && find(t, msg->session, peer)) {
                if (t->o.trace) fprintf(t->o.trace, "CLOSE\n"), fflush(t->o.trace);
                drop(t, i, "closed by the device");
                if (el_wire_encode_simple(&t->out, EL_MSG_OK, msg->session, msg->seq) == EL_OK) send_out(t, srv, peer);
                maybe_finish_round(t, srv, 0);
                return 1;
            }
        return 0;
    }
    tsess *s = find(t, msg->session, peer);
    if (!s) {
        reply_error(t, srv, peer, msg->session, msg->seq, EL_WERR_SESSION, "unknown or expired training session %016llx",
                    (unsigned long long)msg->session);
        return 1;
    }
    s->last_used = el_time_s();
    switch (msg->type) {
    case EL_MSG_TRAIN_FORWARD:
    case EL_MSG_TRAIN_BACKWARD: handle_forward(t, srv, peer, msg, s); break;
    case EL_MSG_TRAIN_STEP:
        if (t->o.trace) fprintf(t->o.trace, "TRAIN_STEP\n"), fflush(t->o.trace);
        handle_step(t, srv, peer, msg, s);
        break;
    case EL_MSG_TRAIN_GET: handle_get(t, srv, peer, msg, s); break;
    case EL_MSG_TRAIN_AVG:
        if (t->o.trace) fprintf(t->o.trace, "TRAIN_AVG\n"), fflush(t->o.trace);
        handle_avg(t, srv, peer, msg, s);
        break;
    default:
        reply_error(t, srv, peer, s->id, msg->seq, EL_WERR_PROTOCOL, "unexpected message type %u", msg->type);
    }
    return 1;
}

void el_train_server_tick(el_train_server *t, el_link_server *srv, int idle_ms) {
    double now = el_time_s();
    int dropped = 0;
    for (int i = t->n - 1; i >= 0; i--)
        if (!t->s[i].avg_pending && (now - t->s[i].last_used) * 1000 > idle_ms) {
            drop(t, i, "idle timeout: the device is gone");
            dropped = 1;
        }
    if (t->round_started && (now - t->round_started) * 1000 > t->o.avg_timeout_ms) maybe_finish_round(t, srv, 1);
    else if (dropped) maybe_finish_round(t, srv, 0);
}
