// The device side of generation: runs its own stage locally and hands the
// hidden states to the worker chain, or runs everything locally. On a link
// failure it can re-open the session and replay the positions sent so far.
#include <stdlib.h>
#include <string.h>

#include "edgellm/split.h"

struct el_pipeline {
    const el_model *m;
    el_session *s;
    el_pool *pool;
    int split;  // 0: local
    el_split_opts o;
    el_wire_open open;  // what we asked the chain for
    el_link *link;
    uint64_t session;
    uint32_t seq;
    el_buf tx, rx;
    float *x;        // [max_batch, dim]
    float *history;  // [ctx, dim]: hidden states sent so far, for replay
    int *tok_history;     // [ctx]: their tokens (sampling on the edge: the worker's sampler sees them again)
    int edge;             // the last worker samples (o.edge_sampling)
    el_sampler_params sp; // its settings
    uint64_t samp_state;  // its generator state after the last token it returned
    uint64_t max_reply;   // the largest RESULT the chain will send (0: no limit)
    int sent;        // positions the worker chain holds
    int ctx, max_batch;
    el_session_opts so;  // the caller's session options (ctx, batch)
    const el_lora_set *lora;  // adapters on every stage (borrowed; NULL: none)
    el_split_stats last, total;
};

static el_status chain_request(el_pipeline *p, el_wire_msg *reply, el_error *err) {
    el_status st = el_link_request(p->link, p->tx.data, p->tx.len, p->seq, &p->rx, p->o.timeout_ms, err);
    if (st) return st;
    if ((st = el_wire_parse(p->rx.data, p->rx.len, reply, err))) return st;
    if (reply->type == EL_MSG_ERROR) {
        uint32_t code;
        char text[EL_WIRE_MAX_TEXT];
        if (el_wire_decode_error(reply, &code, text, sizeof text, err)) return EL_ERR_FORMAT;
        return el_err(err, code == EL_WERR_SESSION ? EL_ERR_STATE : EL_ERR_IO, "worker %s: %s", p->o.via, text);
    }
    return EL_OK;
}

// Ends the chain session (best effort: the worker frees it on idle anyway).
static void chain_close(el_pipeline *p, int timeout_ms) {
    if (p->link && p->session) {
        p->seq++;
        if (el_wire_encode_simple(&p->tx, EL_MSG_CLOSE, p->session, p->seq) == EL_OK)
            el_link_request(p->link, p->tx.data, p->tx.len, p->seq, &p->rx, timeout_ms, NULL);
    }
    p->session = 0;
}

// Sends each adapter's matrices for the chain's layers (past the cut) to the
// chain session; the first worker keeps its part and passes the rest on.
static el_status chain_send_lora(el_pipeline *p, el_error *err) {
    const el_hparams *h = &p->m->hp;
    int cut = p->o.cuts[0];
    el_wire_lora_mat *mats = malloc((size_t)h->n_layers * EL_LORA_N_TARGETS * sizeof *mats);
    if (!mats) return el_err(err, EL_ERR_NOMEM, "out of memory");
    el_status st = EL_OK;
    for (int i = 0; i < p->lora->n && !st; i++) {
        const el_lora *l = p->lora->lora[i];
        uint32_t n = 0;
        for (int layer = cut; layer < h->n_layers && layer < l->n_layers; layer++)
            for (int t = 0; t < EL_LORA_N_TARGETS; t++) {
                const el_lora_mat *mt = el_lora_get(l, layer, t);
                if (mt)
                    mats[n++] = (el_wire_lora_mat){(uint32_t)layer, (uint32_t)t, (uint32_t)mt->rank, (uint32_t)mt->in,
                                                   (uint32_t)mt->out, mt->a, mt->b};
            }
        el_wire_msg r;
        p->seq++;
        if ((st = el_wire_encode_lora(&p->tx, p->session, p->seq, p->lora->scale[i], l->alpha, n, mats)))
            st = el_err(err, st, "%s: adapter too large for one message", l->path ? l->path : "LoRA");
        else if (!(st = chain_request(p, &r, err)) && r.type != EL_MSG_OK)
            st = el_err(err, EL_ERR_FORMAT, "worker %s: unexpected reply type %u to LORA", p->o.via, r.type);
    }
    free(mats);
    return st;
}

static el_status chain_open(el_pipeline *p, el_error *err) {
    el_status st;
    if (!p->link && (st = el_link_connect(p->o.via, &p->o.sec, p->o.timeout_ms, &p->link, err))) return st;
    el_wire_msg r;
    p->seq++;
    if (el_wire_encode_open(&p->tx, p->seq, &p->open)) return el_err(err, EL_ERR_NOMEM, "out of memory");
    if ((st = chain_request(p, &r, err))) return st;
    if (r.type != EL_MSG_OPENED) return el_err(err, EL_ERR_FORMAT, "worker %s: unexpected reply type %u to OPEN", p->o.via, r.type);
    p->session = r.session;
    p->sent = 0;
    p->max_reply = 0;
    if (r.body_len >= 8)  // the largest reply the chain sends: every-row results come in chunks below it
        for (int i = 0; i < 8; i++) p->max_reply |= (uint64_t)r.body[i] << (8 * i);
    if (p->lora && (st = chain_send_lora(p, err))) {
        chain_close(p, 2000);  // not left holding a KV cache on the worker until it idles out
        return st;
    }
    return EL_OK;
}

// Fills the OPEN request for the current cuts: every worker stage with the
// identity of its layers, computed from our own copy of the model file (only
// the sampled pages of those layers are read).
static el_status describe_chain(el_pipeline *p, el_error *err) {
    const el_hparams *h = &p->m->hp;
    el_model *view;
    el_model_opts vo = {.layer_begin = p->o.cuts[0], .layer_end = h->n_layers, .no_embed = 1, .no_head = 1,
                       .no_pack = 1, .no_scan = 1};  // only hashed: no copies, no scan
    el_status st = el_model_open(p->m->path, &vo, &view, err);
    if (st) return st;
    p->open.n_layers = (uint32_t)h->n_layers;
    p->open.dim = (uint32_t)h->dim;
    p->open.vocab = (uint32_t)h->vocab;
    p->open.ctx = (uint32_t)p->ctx;
    p->open.max_batch = (uint32_t)p->max_batch;
    p->open.act_dtype = (uint8_t)p->o.act_dtype;
    p->open.want = p->o.ushape ? EL_WANT_HIDDEN : p->edge ? EL_WANT_TOKEN : EL_WANT_LOGITS;
    if (p->edge)
        p->open.sampling = (el_wire_sampling){p->sp.temp, p->sp.top_k, p->sp.top_p, p->sp.min_p, p->sp.repeat_penalty,
                                              p->sp.repeat_last_n, p->samp_state};
    p->open.n_stages = (uint8_t)p->o.n_cuts;
    for (int i = 0; i < p->o.n_cuts; i++) {
        int a = p->o.cuts[i], b = i + 1 < p->o.n_cuts ? p->o.cuts[i + 1] : h->n_layers;
        p->open.stages[i] = (el_wire_stage){(uint32_t)a, (uint32_t)b, el_model_identity(view, a, b)};
    }
    el_model_close(view);
    return EL_OK;
}

// A slower device, emulated: after computing for t seconds, stay busy for
// (slowdown-1)·t more. Spinning rather than sleeping keeps the core as warm
// as a slower processor still computing would: after a sleep the next step
// runs measurably slower (caches, clocks), which would inflate the emulation.
static void device_pace(el_pipeline *p, uint64_t t0) {
    if (p->o.slowdown <= 1.0) return;
    uint64_t now = el_time_ns(), until = now + (uint64_t)((double)(now - t0) * (p->o.slowdown - 1.0));
    while (el_time_ns() < until) {}
}

el_status el_pipeline_new(const el_model *m, const el_session_opts *so_in, el_pool *pool, const el_split_opts *split,
                          el_pipeline **out, el_error *err) {
    *out = NULL;
    el_pipeline *p = calloc(1, sizeof *p);
    if (!p) return el_err(err, EL_ERR_NOMEM, "out of memory");
    p->m = m;
    p->pool = pool;
    el_session_opts so = {0};
    if (so_in) so = *so_in;
    p->so = so;
    const el_hparams *h = &m->hp;
    el_status st = EL_OK;
    if (split) {
        p->split = 1;
        p->o = *split;
        if (p->o.timeout_ms <= 0) p->o.timeout_ms = 30000;
        if (p->o.n_cuts < 1 || p->o.n_cuts >= EL_WIRE_MAX_STAGES) {
            st = el_err(err, EL_ERR_ARG, "%d cut points (1..%d allowed)", p->o.n_cuts, EL_WIRE_MAX_STAGES - 1);
            goto fail;
        }
        int all_local = p->o.n_cuts == 1 && p->o.cuts[0] == h->n_layers;  // link kept for probes only
        for (int i = 0; i < p->o.n_cuts && !all_local; i++)
            if (p->o.cuts[i] < (i ? 1 : 0) || p->o.cuts[i] >= h->n_layers || (i && p->o.cuts[i] <= p->o.cuts[i - 1])) {
                st = el_err(err, EL_ERR_ARG, "--split: cut %d is not an increasing layer index within 0..%d",
                            p->o.cuts[i], h->n_layers - 1);
                goto fail;
            }
        if (!el_wire_act_supported(p->o.act_dtype) || h->dim % el_dtype_info(p->o.act_dtype)->block_size) {
            st = el_err(err, EL_ERR_UNSUPPORTED, "--act %s cannot carry rows of %d values", el_dtype_name(p->o.act_dtype), h->dim);
            goto fail;
        }
        if (p->o.edge_sampling) {
            if (p->o.ushape) {
                st = el_err(err, EL_ERR_ARG, "sampling on the edge and U-shape exclude each other (U-shape keeps the head here)");
                goto fail;
            }
            if ((st = el_sampler_check(p->o.edge_sampling, err))) goto fail;
            p->edge = 1;
            p->sp = *p->o.edge_sampling;
            p->samp_state = p->sp.seed ? p->sp.seed : 0x9E3779B97F4A7C15ULL;  // el_sampler_new's start for seed 0
        }
        so.layer_begin = 0;
        so.layer_end = p->o.cuts[0];
        so.no_layers = p->o.cuts[0] == 0;
        if (m->layer_begin != 0 || m->layer_end < p->o.cuts[0] || !m->has_embed ||
            ((p->o.ushape || all_local) && !m->has_head)) {
            st = el_err(err, EL_ERR_ARG, "%s: the device's model view lacks layers 0:%d or the embedding/head", m->path,
                        p->o.cuts[0]);
            goto fail;
        }
    }
    if ((st = el_session_new(m, &so, pool, &p->s, err))) goto fail;
    p->ctx = el_session_ctx(p->s);
    p->max_batch = el_session_max_batch(p->s);
    p->x = el_calloc((size_t)p->max_batch * h->dim, sizeof(float));
    if (!p->x) { st = el_err(err, EL_ERR_NOMEM, "out of memory"); goto fail; }
    if (p->split) {
        p->history = el_calloc((size_t)p->ctx * h->dim, sizeof(float));
        p->tok_history = el_calloc((size_t)p->ctx, sizeof(int));
        if (!p->history || !p->tok_history) { st = el_err(err, EL_ERR_NOMEM, "out of memory"); goto fail; }
        if (p->o.cuts[0] < h->n_layers) {
            if ((st = describe_chain(p, err)) || (st = chain_open(p, err))) goto fail;
        } else if ((st = el_link_connect(p->o.via, &p->o.sec, p->o.timeout_ms, &p->link, err))) {
            goto fail;
        }
    }
    *out = p;
    return EL_OK;
fail:
    el_pipeline_free(p);
    return st;
}

void el_pipeline_free(el_pipeline *p) {
    if (!p) return;
    chain_close(p, 2000);
    el_link_close(p->link);
    el_session_free(p->s);
    el_buf_free(&p->tx);
    el_buf_free(&p->rx);
    free(p->x);
    free(p->history);
    free(p->tok_history);
    free(p);
}

// Sends rows x[n, dim] at pos (tokens: their ids) to the chain and decodes
// the reply into out (logits, or hidden rows for U-shape; last row, or every
// row with all_rows), or into *token (sampling on the edge). With out and
// token NULL the chain returns nothing (an intermediate prefill chunk).
static el_status chain_forward(el_pipeline *p, const float *x, const int *tokens, int n, int pos, int all_rows,
                               float *out, int *token, el_error *err) {
    const el_hparams *h = &p->m->hp;
    p->seq++;
    uint8_t flags = (all_rows ? EL_FWD_ALL_ROWS : 0) | (p->edge ? EL_FWD_TOKENS : 0) | (!out && !token ? EL_FWD_NO_OUTPUT : 0);
    el_status st = el_wire_encode_forward(&p->tx, p->session, p->seq, (uint32_t)pos, (uint32_t)n, (uint32_t)h->dim,
                                          p->o.act_dtype, x, flags, (const int32_t *)tokens, err);
    if (st) return st;
    uint64_t s0, r0, s1, r1;
    el_link_counters(p->link, &s0, &r0);
    uint64_t t0 = el_time_ns();
    el_wire_msg r;
    if ((st = chain_request(p, &r, err))) return st;
    double rtt = (el_time_ns() - t0) * 1e-9;
    el_link_counters(p->link, &s1, &r1);
    el_wire_result res;
    if ((st = el_wire_decode_result(&r, &res, err))) {
        char why[sizeof err->msg];  // el_err must not format from the buffer it writes
        memcpy(why, err->msg, sizeof why);
        return el_err(err, st, "worker %s: %s", p->o.via, why);
    }
    uint32_t want_rows = flags & EL_FWD_NO_OUTPUT ? 0 : all_rows ? (uint32_t)n : 1;
    uint32_t want_len = p->o.ushape ? (uint32_t)h->dim : p->edge ? 1 : (uint32_t)h->vocab;
    uint8_t want_kind = p->o.ushape ? EL_WANT_HIDDEN : p->edge ? EL_WANT_TOKEN : EL_WANT_LOGITS;
    if (res.kind != want_kind || res.n_rows != want_rows || res.row_len != want_len)
        return el_err(err, EL_ERR_FORMAT, "worker %s: result of %u x %u (kind %u), expected %u x %u", p->o.via,
                      res.n_rows, res.row_len, res.kind, want_rows, want_len);
    if (res.kind == EL_WANT_TOKEN) {
        int32_t t = 0;
        for (uint32_t i = 0; i < res.n_rows; i++) t = (int32_t)el_wire_u32(res.payload + 4 * (size_t)i);
        if (res.n_rows && (t < 0 || t >= h->vocab))
            return el_err(err, EL_ERR_FORMAT, "worker %s: token %d outside the vocabulary", p->o.via, t);
        if (token && res.n_rows) *token = t;
        p->samp_state = res.sampler_state;
    } else if (res.n_rows &&
               (st = el_wire_act_decode(res.dtype, res.payload, (size_t)res.n_rows * res.row_len, out, err))) {
        return st;
    }
    // The network's share: the round trip minus every worker's compute and queueing.
    double work = 0;
    p->last.n_workers = res.n_hops;
    for (int i = 0; i < res.n_hops; i++) {
        p->last.worker_s[i] += res.hops[i].compute_ns * 1e-9;
        p->last.queue_s += res.hops[i].queue_ns * 1e-9;
        work += (res.hops[i].compute_ns + res.hops[i].queue_ns) * 1e-9;
    }
    p->last.link_s += rtt - work > 0 ? rtt - work : 0;
    p->last.bytes_sent += s1 - s0;
    p->last.bytes_received += r1 - r0;
    return EL_OK;
}

// Re-opens the chain session and re-sends the hidden states of every position
// the workers held, so generation can continue after a worker restart.
static el_status replay(el_pipeline *p, int upto, el_error *err) {
    // tell the worker to free the session we abandon (if it is still there),
    // without waiting for its answer
    if (p->link && p->session && el_wire_encode_simple(&p->tx, EL_MSG_CLOSE, p->session, ++p->seq) == EL_OK)
        el_link_send(p->link, p->tx.data, p->tx.len, NULL);
    el_link_close_linger(p->link, 200);
    p->link = NULL;
    p->session = 0;
    el_status st;
    if (p->o.reroute) {
        const char *via = p->o.via, *key = p->o.sec.server_key;
        if ((st = p->o.reroute(p->o.reroute_ctx, p->o.via, &via, &key, err))) return st;
        p->o.via = via;
        p->o.sec.server_key = key;
    }
    st = chain_open(p, err);
    if (st) return st;
    const el_hparams *h = &p->m->hp;
    for (int done = 0; done < upto && !st; done += p->max_batch) {
        int n = upto - done < p->max_batch ? upto - done : p->max_batch;
        st = chain_forward(p, p->history + (size_t)done * h->dim, p->tok_history + done, n, done, 0, NULL, NULL, err);
    }
    if (!st) p->sent = upto;
    return st;
}

// Runs tokens[0..n) (or, embd != NULL, embedding rows embd[n, dim]) at pos on
// the device's layers and the chain: logits (the last position's, every
// position's with all_rows) or, sampling on the edge, *next.
static el_status split_forward(el_pipeline *p, const int *tokens, const float *embd, int n, int pos, float *logits,
                               int all_rows, int *next, el_error *err) {
    const el_hparams *h = &p->m->hp;
    el_status st = EL_OK;
    if (pos + n > p->ctx) return el_err(err, EL_ERR_RANGE, "positions %d..%d exceed the context of %d", pos, pos + n - 1, p->ctx);
    float *hidden_out = NULL;
    if (p->o.ushape) {
        hidden_out = el_calloc((size_t)(all_rows ? p->max_batch : 1) * h->dim, sizeof(float));
        if (!hidden_out) return el_err(err, EL_ERR_NOMEM, "out of memory");
    }
    // every row's result in one reply must stay below the chain's reply limit
    int per_chunk = p->max_batch;
    size_t row_bytes = (size_t)(p->o.ushape ? h->dim : h->vocab) * sizeof(float);
    if (all_rows && p->max_reply && (uint64_t)per_chunk * row_bytes > p->max_reply)
        per_chunk = p->max_reply / row_bytes > 0 ? (int)(p->max_reply / row_bytes) : 1;
    for (int done = 0; done < n && !st; done += per_chunk) {
        int chunk = n - done < per_chunk ? n - done : per_chunk;
        int last_chunk = done + chunk == n;
        uint64_t t0 = el_time_ns();
        if (embd) memcpy(p->x, embd + (size_t)done * h->dim, (size_t)chunk * h->dim * sizeof(float));
        else if ((st = el_session_embed(p->s, tokens + done, chunk, p->x, err))) break;
        if ((st = el_session_layers(p->s, p->x, chunk, pos + done, err))) break;
        device_pace(p, t0);
        p->last.device_s += (el_time_ns() - t0) * 1e-9;
        memcpy(p->history + (size_t)(pos + done) * h->dim, p->x, (size_t)chunk * h->dim * sizeof(float));
        // image rows have no ids; they only travel with sampling on the edge, which refuses embd
        if (tokens) memcpy(p->tok_history + pos + done, tokens + done, (size_t)chunk * sizeof(int));
        else memset(p->tok_history + pos + done, 0, (size_t)chunk * sizeof(int));
        int rows = all_rows ? chunk : 1;
        int wanted = all_rows || last_chunk;  // an intermediate chunk's result is not used: none comes back
        float *dst = !wanted || next ? NULL : p->o.ushape ? hidden_out : all_rows ? logits + (size_t)done * h->vocab : logits;
        int *tok = wanted ? next : NULL;
        st = chain_forward(p, p->x, tokens ? tokens + done : NULL, chunk, pos + done, all_rows, dst, tok, err);
        for (int attempt = 0; st && attempt < p->o.retries; attempt++) {
            if (p->o.log) fprintf(p->o.log, "edgellm: %s; re-opening the session (retry %d of %d)\n", err->msg, attempt + 1, p->o.retries);
            el_error e2;
            st = replay(p, pos + done, &e2);
            if (st) { *err = e2; continue; }
            st = chain_forward(p, p->x, tokens ? tokens + done : NULL, chunk, pos + done, all_rows, dst, tok, err);
        }
        if (!st && p->o.ushape && wanted) {
            uint64_t t1 = el_time_ns();
            float *lg = all_rows ? logits + (size_t)done * h->vocab : logits;
            st = el_session_head(p->s, dst, rows, rows, lg, err);
            device_pace(p, t1);
            p->last.device_s += (el_time_ns() - t1) * 1e-9;
        }
        if (!st) p->sent = pos + done + chunk;
    }
    free(hidden_out);
    return st;
}

static void add_totals(el_pipeline *p) {
    p->total.device_s += p->last.device_s;
    p->total.link_s += p->last.link_s;
    p->total.queue_s += p->last.queue_s;
    p->total.n_workers = p->last.n_workers;
    for (int i = 0; i < p->last.n_workers; i++) p->total.worker_s[i] += p->last.worker_s[i];
    p->total.bytes_sent += p->last.bytes_sent;
    p->total.bytes_received += p->last.bytes_received;
}

// Input rows from embedding rows given by the caller (an image's) instead of
// token ids: the whole model on this device.
static el_status local_embd(el_pipeline *p, const float *embd, int n, int pos, float *logits, int all_rows,
                            el_error *err) {
    const el_hparams *h = &p->m->hp;
    el_status st = EL_OK;
    for (int done = 0; done < n && !st; done += p->max_batch) {
        int chunk = n - done < p->max_batch ? n - done : p->max_batch;
        memcpy(p->x, embd + (size_t)done * h->dim, (size_t)chunk * h->dim * sizeof(float));
        if ((st = el_session_layers(p->s, p->x, chunk, pos + done, err))) break;
        if (all_rows) st = el_session_head(p->s, p->x, chunk, chunk, logits + (size_t)done * h->vocab, err);
        else if (done + chunk == n) st = el_session_head(p->s, p->x, chunk, 1, logits, err);
    }
    return st;
}

// Runs n rows at positions pos..: token ids, or (embd != NULL) embedding rows.
static el_status forward_rows(el_pipeline *p, const int *tokens, const float *embd, int n, int pos, float *logits,
                              int all_rows, el_error *err) {
    memset(&p->last, 0, sizeof p->last);
    const el_hparams *h = &p->m->hp;
    el_status st = EL_OK;
    if (n <= 0) return el_err(err, EL_ERR_ARG, "nothing to evaluate (0 tokens)");
    if (!p->split || p->o.cuts[0] == h->n_layers) {
        uint64_t t0 = el_time_ns();
        st = embd ? local_embd(p, embd, n, pos, logits, all_rows, err)
                  : el_session_forward(p->s, tokens, n, pos, logits, all_rows, err);
        device_pace(p, t0);
        p->last.device_s = (el_time_ns() - t0) * 1e-9;
        if (!st && p->split) p->sent = pos + n;
    } else if (p->edge) {
        return el_err(err, EL_ERR_STATE, "the last worker samples for this pipeline: no logits come back (el_pipeline_next_token)");
    } else {
        st = split_forward(p, tokens, embd, n, pos, logits, all_rows, NULL, err);
    }
    add_totals(p);
    return st;
}

el_status el_pipeline_forward(el_pipeline *p, const int *tokens, int n, int pos, float *logits, int all_rows,
                              el_error *err) {
    return forward_rows(p, tokens, NULL, n, pos, logits, all_rows, err);
}

el_status el_pipeline_forward_embd(el_pipeline *p, const float *embd, int n, int pos, float *logits, int all_rows,
                                   el_error *err) {
    if (p->split && p->o.cuts[0] == 0)
        return el_err(err, EL_ERR_ARG, "the device runs no layers before the cut, so these embedding rows themselves "
                      "would cross the link; cut after layer 1 or later");
    if (p->edge)
        return el_err(err, EL_ERR_STATE, "embedding rows have no token ids for the last worker's sampler: "
                      "sample on the device to use images");
    return forward_rows(p, NULL, embd, n, pos, logits, all_rows, err);
}

el_status el_pipeline_next_token(el_pipeline *p, const int *tokens, int n, int pos, int *next, el_error *err) {
    memset(&p->last, 0, sizeof p->last);
    if (!p->edge) return el_err(err, EL_ERR_STATE, "this pipeline does not sample on the edge");
    if (n <= 0) return el_err(err, EL_ERR_ARG, "nothing to evaluate (0 tokens)");
    if (p->o.cuts[0] == p->m->hp.n_layers)
        return el_err(err, EL_ERR_STATE, "every layer runs on the device: nothing samples on the edge");
    el_status st = split_forward(p, tokens, NULL, n, pos, NULL, 0, next, err);
    add_totals(p);
    return st;
}

const el_split_stats *el_pipeline_last(const el_pipeline *p) { return &p->last; }
const el_split_stats *el_pipeline_total(const el_pipeline *p) { return &p->total; }

el_session *el_pipeline_session(el_pipeline *p) { return p->s; }

el_status el_pipeline_set_lora(el_pipeline *p, const el_lora_set *set, el_error *err) {
    // workers add each LORA to their session's set: a second call would stack
    if (p->lora) return el_err(err, EL_ERR_STATE, "the pipeline's adapters are set already");
    p->lora = set && set->n > 0 ? set : NULL;
    el_session_set_lora(p->s, p->lora);
    return p->split && p->session && p->lora ? chain_send_lora(p, err) : EL_OK;
}

el_status el_pipeline_recut(el_pipeline *p, int cut, const int *tokens, int n_pos, el_error *err) {
    const el_hparams *h = &p->m->hp;
    if (!p->split) return el_err(err, EL_ERR_STATE, "not a split pipeline");
    if (cut < 0 || cut > h->n_layers || cut > p->m->layer_end || (cut == h->n_layers && !p->m->has_head))
        return el_err(err, EL_ERR_ARG, "%s: cannot move the cut to %d: the device holds layers 0:%d%s", p->m->path, cut,
                      p->m->layer_end, p->m->has_head ? "" : " without the head");
    if (n_pos > p->ctx) return el_err(err, EL_ERR_RANGE, "%d positions exceed the context of %d", n_pos, p->ctx);
    if (p->edge && cut == h->n_layers)
        return el_err(err, EL_ERR_ARG, "cannot move every layer to the device while the last worker samples");
    chain_close(p, p->o.timeout_ms);  // leave the old chain session
    p->sent = 0;
    el_session_free(p->s);
    p->s = NULL;
    el_session_opts so = p->so;
    so.layer_begin = 0;
    so.layer_end = cut;
    so.no_layers = cut == 0;
    el_status st = el_session_new(p->m, &so, p->pool, &p->s, err);
    if (st) return st;
    el_session_set_lora(p->s, p->lora);
    p->o.cuts[0] = cut;
    p->o.n_cuts = 1;
    if (cut < h->n_layers) {
        if ((st = describe_chain(p, err)) || (st = chain_open(p, err))) return st;
    }
    // Rebuild both sides' caches for the positions so far: the device runs
    // its new layers over the tokens, the chain receives the new hidden states.
    float *scratch = el_calloc((size_t)p->max_batch * (h->vocab > h->dim ? h->vocab : h->dim), sizeof(float));
    if (!scratch) return el_err(err, EL_ERR_NOMEM, "out of memory");
    for (int done = 0; done < n_pos && !st; done += p->max_batch) {
        int n = n_pos - done < p->max_batch ? n_pos - done : p->max_batch;
        if (cut == h->n_layers) {
            st = el_session_forward(p->s, tokens + done, n, done, scratch, 0, err);
            continue;
        }
        if ((st = el_session_embed(p->s, tokens + done, n, p->x, err)) ||
            (st = el_session_layers(p->s, p->x, n, done, err)))
            break;
        memcpy(p->history + (size_t)done * h->dim, p->x, (size_t)n * h->dim * sizeof(float));
        memcpy(p->tok_history + done, tokens + done, (size_t)n * sizeof(int));
        st = chain_forward(p, p->x, tokens + done, n, done, 0, NULL, NULL, err);
    }
    free(scratch);
    if (!st) p->sent = n_pos;
    return st;
}

int el_pipeline_cut(const el_pipeline *p) { return p->split ? p->o.cuts[0] : p->m->hp.n_layers; }
el_link *el_pipeline_link(el_pipeline *p) { return p->link; }
