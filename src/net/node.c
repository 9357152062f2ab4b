// A node: one socket serving every model of a block store (each through its
// own el_worker, all sharing the compute threads), answering other stores'
// BLOCK_GETs, announcing itself to a controller, and fetching, in a thread
// of its own, the models the controller's placement gives it.
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/controller.h"
#include "edgellm/serve.h"
#include "edgellm/store.h"

#define NODE_MAX_SOURCES 8
#define NODE_MAX_JOBS 16
#define NODE_MAX_CLIENTS 4096

typedef struct {
    el_worker *w;
    el_model *m;  // owned when opened from the store
    el_worker_opts wo;
    el_worker_stats *stats;
    char name[EL_CTL_MAX_NAME + 1];
    char id[65];
} node_model;

typedef struct {
    char name[EL_CTL_MAX_NAME + 1];
    el_hash id;
    int n_src;
    char endpoint[NODE_MAX_SOURCES][256];
    char key[NODE_MAX_SOURCES][41];
    int done;      // 1 fetched, -1 failed
    double ended;  // when it ended (a failed model is asked again after a pause)
    char why[512];
} fetch_job;

// What a client's unread block replies hold (ZeroMQ decrements it).
typedef struct {
    char client[72];
    atomic_size_t held;
} node_client;

typedef struct {
    const el_node_opts *o;
    el_link_server *srv;
    el_pool *pool;
    el_store *store;
    node_model models[EL_CTL_MAX_MODELS];
    int n;
    el_link *ctl;
    double next_hb, next_connect;
    uint32_t ctl_seq;
    char name[EL_CTL_MAX_NAME + 1], endpoint[256];
    el_buf in, out;
    node_client *clients[NODE_MAX_CLIENTS];
    int n_clients;
    size_t client_inflight;
    uint64_t last_busy_ns, last_requests;
    double last_t;
    // the fetch thread
    pthread_t th;
    int th_started, th_stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    fetch_job jobs[NODE_MAX_JOBS];
    int n_jobs;
} node;

static void nlog(node *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void nlog(node *n, const char *fmt, ...) {
    if (!n->o->w.log) return;
    char prefix[EL_CTL_MAX_NAME + 8];
    snprintf(prefix, sizeof prefix, "node %s: ", n->name);
    va_list ap;
    va_start(ap, fmt);
    el_vlogf(n->o->w.log, prefix, fmt, ap);
    va_end(ap);
}

static node_model *find_model(node *n, const char *name) {
    for (int i = 0; i < n->n; i++)
        if (!strcmp(n->models[i].name, name)) return &n->models[i];
    return NULL;
}

// Starts serving a model: from the store by name, or (store NULL) the file.
static el_status add_model(node *n, const char *name, el_error *err) {
    if (n->n == EL_CTL_MAX_MODELS)
        return el_err(err, EL_ERR_RANGE, "a node serves at most %d models", EL_CTL_MAX_MODELS);
    node_model *nm = &n->models[n->n];
    memset(nm, 0, sizeof *nm);
    snprintf(nm->name, sizeof nm->name, "%s", name);
    nm->wo = n->o->w;
    nm->wo.listen = NULL;
    nm->wo.server = n->srv;
    nm->wo.pool = n->pool;
    nm->wo.stats = nm->stats = el_worker_stats_new();
    if (!nm->stats) return el_err(err, EL_ERR_NOMEM, "out of memory");
    el_status st;
    el_hash id;
    if (n->store) {
        el_model_opts mo = {.no_embed = 1};
        if (!el_store_model_id(n->store, name, &id)) {
            st = el_err(err, EL_ERR_STATE, "store %s holds no model \"%s\"", el_store_dir(n->store), name);
            goto fail;
        }
        if ((st = el_store_open_model(n->store, name, &mo, &nm->m, err))) goto fail;
        nm->wo.model = nm->m;
    } else {
        el_model_blocks mb;
        if ((st = el_model_blocks_scan(n->o->w.model_path, NULL, &mb, err))) goto fail;
        id = mb.id;
        el_model_blocks_free(&mb);
    }
    el_hash_hex(&id, nm->id);
    if ((st = el_worker_new(&nm->wo, &nm->w, err))) goto fail;
    const el_model *m = el_worker_model(nm->w);
    nlog(n, "serving %s (id %.16s..., layers %d:%d of %d)", nm->name, nm->id, m->layer_begin, m->layer_end,
         m->hp.n_layers);
    n->n++;
    n->next_hb = 0;  // tell the controller now
    return EL_OK;
fail:
    el_model_close(nm->m);
    el_worker_stats_free(nm->stats);
    memset(nm, 0, sizeof *nm);
    return st;
}

// ---------------------------------------------------------------- fetching

static void *fetch_main(void *arg) {
    node *n = arg;
    el_store *s = NULL;
    el_error err;
    if (el_store_open(n->o->store_dir, &s, &err)) s = NULL;
    pthread_mutex_lock(&n->mu);
    while (!n->th_stop) {
        fetch_job *job = NULL;
        for (int i = 0; i < n->n_jobs && !job; i++)
            if (!n->jobs[i].done) job = &n->jobs[i];
        if (!job) {
            pthread_cond_wait(&n->cv, &n->mu);
            continue;
        }
        fetch_job j = *job;  // work on a copy, without the lock
        pthread_mutex_unlock(&n->mu);
        el_store_source src[NODE_MAX_SOURCES];
        for (int i = 0; i < j.n_src; i++) src[i] = (el_store_source){j.endpoint[i], j.key[i]};
        el_link_security sec = n->o->ctl_sec;
        sec.allow_dir = NULL;
        sec.server_key = NULL;
        el_progress prog;  // a line with the rate and ETA instead of a line a block
        double t0 = el_time_s();
        el_status st = s ? el_store_fetch_model(s, j.name, &j.id, src, j.n_src, &sec, n->o->w.log ? &prog : NULL,
                                                n->o->w.log, &err)
                         : el_err(&err, EL_ERR_IO, "the store %s cannot be opened", n->o->store_dir);
        if (!st && n->o->w.log)
            fprintf(n->o->w.log, "node %s: fetched %s in %.2f s\n", n->name, j.name, el_time_s() - t0);
        pthread_mutex_lock(&n->mu);
        for (int i = 0; i < n->n_jobs; i++)
            if (!strcmp(n->jobs[i].name, j.name) && !n->jobs[i].done) {
                n->jobs[i].done = st ? -1 : 1;
                n->jobs[i].ended = el_time_s();
                snprintf(n->jobs[i].why, sizeof n->jobs[i].why, "%s", st ? err.msg : "");
            }
    }
    pthread_mutex_unlock(&n->mu);
    el_store_close(s);
    return NULL;
}

// Takes the fetches that ended: a fetched model starts being served.
static void fetch_poll(node *n) {
    if (!n->th_started) return;
    double now = el_time_s();
    pthread_mutex_lock(&n->mu);
    for (int i = n->n_jobs - 1; i >= 0; i--) {
        fetch_job *j = &n->jobs[i];
        if (j->done == 1) {
            char name[EL_CTL_MAX_NAME + 1];
            snprintf(name, sizeof name, "%s", j->name);
            n->jobs[i] = n->jobs[--n->n_jobs];
            pthread_mutex_unlock(&n->mu);
            el_error err;
            if (el_store_rescan(n->store, &err) || add_model(n, name, &err))
                nlog(n, "fetched %s but: %s", name, err.msg);
            pthread_mutex_lock(&n->mu);
        } else if (j->done == -1 && now - j->ended > 2.0) {
            nlog(n, "fetching %s failed: %s (asked again at the next heartbeat)", j->name, j->why);
            n->jobs[i] = n->jobs[--n->n_jobs];
        }
    }
    pthread_mutex_unlock(&n->mu);
}

// ANNOUNCED: {"fetch": [{"model", "id", "sources": [{"endpoint", "public_key"}]}]}
static void on_announced(node *n, const el_wire_msg *m) {
    el_json *j;
    el_error err;
    if (m->type == EL_MSG_ERROR) {
        uint32_t code;
        char text[EL_WIRE_MAX_TEXT];
        if (!el_wire_decode_error(m, &code, text, sizeof text, &err))
            nlog(n, "controller %s: %s", n->o->controller, text);
        return;
    }
    if (m->type != EL_MSG_ANNOUNCED || m->body_len > EL_CTL_MAX_BODY) return;
    if (el_json_parse((const char *)m->body, m->body_len, "controller", &j, &err)) {
        nlog(n, "%s", err.msg);
        return;
    }
    const el_json *f = el_json_get(j, "fetch");
    for (const el_json *e = el_json_first(f); e && n->store; e = el_json_next(f, e)) {
        const char *name = el_json_str(el_json_get(e, "model")), *id = el_json_str(el_json_get(e, "id"));
        const el_json *srcs = el_json_get(e, "sources");
        fetch_job job = {0};
        if (!name || strlen(name) > EL_CTL_MAX_NAME || !id || !el_hash_parse(id, &job.id) || find_model(n, name))
            continue;
        snprintf(job.name, sizeof job.name, "%s", name);
        for (const el_json *s = el_json_first(srcs); s && job.n_src < NODE_MAX_SOURCES; s = el_json_next(srcs, s)) {
            const char *ep = el_json_str(el_json_get(s, "endpoint")), *key = el_json_str(el_json_get(s, "public_key"));
            if (!ep || !key || strlen(ep) > 255 || strlen(key) > 40 || !strcmp(ep, n->endpoint)) continue;
            snprintf(job.endpoint[job.n_src], 256, "%s", ep);
            snprintf(job.key[job.n_src], 41, "%s", key);
            job.n_src++;
        }
        if (!job.n_src) continue;
        pthread_mutex_lock(&n->mu);
        int known = 0;
        for (int i = 0; i < n->n_jobs; i++) known |= !strcmp(n->jobs[i].name, name);
        if (!known && n->n_jobs < NODE_MAX_JOBS) {
            n->jobs[n->n_jobs++] = job;
            pthread_cond_signal(&n->cv);
        }
        pthread_mutex_unlock(&n->mu);
        if (!known)
            nlog(n, "the placement gives us %s: fetching it from %s%s", name, job.endpoint[0],
                 job.n_src > 1 ? " and others" : "");
    }
    el_json_free(j);
}

// ---------------------------------------------------------------- heartbeats

static void heartbeat(node *n) {
    double now = el_time_s();
    if (!n->o->controller || now < n->next_hb) return;
    int hb = n->o->heartbeat_ms > 0 ? n->o->heartbeat_ms : 1000;
    n->next_hb = now + hb / 1000.0;
    if (!n->ctl) {
        if (now < n->next_connect) return;
        el_link_security sec = n->o->ctl_sec;
        sec.allow_dir = NULL;
        sec.connect_timeout_ms = 500;
        el_error err;
        if (el_link_connect(n->o->controller, &sec, 1000, &n->ctl, &err)) {
            nlog(n, "%s (trying again in 5 s)", err.msg);
            n->next_connect = now + 5;
            return;
        }
        nlog(n, "announcing to the controller at %s every %d ms", n->o->controller, hb);
    }
    uint64_t busy = 0, reqs = 0, free_bytes = 0;
    int sessions = 0;
    for (int i = 0; i < n->n; i++) {
        el_worker_figures f;
        el_worker_stats_read(n->models[i].stats, &f);
        busy += f.busy_ns;
        reqs += f.requests;
        sessions += f.sessions;
        size_t max = n->o->w.max_kv_bytes ? n->o->w.max_kv_bytes : (size_t)2 << 30;
        size_t used = el_worker_mem_used(n->models[i].w);
        free_bytes += used < max ? max - used : 0;
    }
    double dt = n->last_t > 0 ? now - n->last_t : 0;
    double busy_share = dt > 0 ? (busy - n->last_busy_ns) * 1e-9 / dt : 0;
    double step_ms = reqs > n->last_requests ? (busy - n->last_busy_ns) * 1e-6 / (double)(reqs - n->last_requests) : 0;
    n->last_busy_ns = busy;
    n->last_requests = reqs;
    n->last_t = now;
    el_sbuf b = {0};
    el_sbuf_puts(&b, "{\"name\":");
    el_sbuf_json_str(&b, n->name, strlen(n->name));
    el_sbuf_puts(&b, ",\"endpoint\":");
    el_sbuf_json_str(&b, n->endpoint, strlen(n->endpoint));
    el_sbuf_printf(&b, ",\"public_key\":\"%s\",\"models\":[", n->o->ctl_sec.keys ? n->o->ctl_sec.keys->public_key : "");
    for (int i = 0; i < n->n; i++) {
        const el_model *m = el_worker_model(n->models[i].w);
        el_sbuf_printf(&b, "%s{\"name\":", i ? "," : "");
        el_sbuf_json_str(&b, n->models[i].name, strlen(n->models[i].name));
        el_sbuf_printf(&b, ",\"id\":\"%s\",\"n_layers\":%d,\"layers\":[%d,%d]}", n->models[i].id, m->hp.n_layers,
                       m->layer_begin, m->layer_end);
    }
    el_sbuf_printf(&b,
                   "],\"blocks\":%d,\"store_bytes\":%llu,\"free_bytes\":%llu,\"sessions\":%d,\"busy\":%.4f,"
                   "\"step_ms\":%.4f}",
                   n->store ? el_store_n_blocks(n->store) : 0,
                   (unsigned long long)(n->store ? el_store_bytes(n->store) : 0), (unsigned long long)free_bytes,
                   sessions, busy_share > 1 ? 1.0 : busy_share, step_ms);
    el_buf tx = {0};
    if (!b.oom && el_wire_encode_ping(&tx, EL_MSG_ANNOUNCE, ++n->ctl_seq, b.data, b.len) == EL_OK)
        el_link_send(n->ctl, tx.data, tx.len, NULL);  // a controller that is away gets the next one
    el_buf_free(&tx);
    el_sbuf_free(&b);
}

// ---------------------------------------------------------------- serving

static node_client *client_of(node *n, const char *client) {
    for (int i = 0; i < n->n_clients; i++)
        if (!strcmp(n->clients[i]->client, client)) return n->clients[i];
    for (int i = 0; i < n->n_clients; i++)  // reuse one whose bytes are all gone
        if (atomic_load(&n->clients[i]->held) == 0) {
            snprintf(n->clients[i]->client, sizeof n->clients[i]->client, "%s", client);
            return n->clients[i];
        }
    if (n->n_clients == NODE_MAX_CLIENTS) return NULL;
    node_client *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    snprintf(c->client, sizeof c->client, "%s", client);
    atomic_init(&c->held, 0);
    return n->clients[n->n_clients++] = c;
}

// Sends the reply in n->out (an ERROR when its encoding failed to fit).
static void send_reply(node *n, const el_peer *peer, el_status encoded) {
    if (encoded == EL_OK) el_link_server_send(n->srv, peer, n->out.data, n->out.len, NULL);
}

// A BLOCK_GET: the answer counts against the asking client's unread bytes.
static void serve_block(node *n, const el_peer *peer, const el_wire_msg *m) {
    if (!n->store) {
        send_reply(n, peer,
                   el_wire_encode_errorf(&n->out, 0, m->seq, EL_WERR_PROTOCOL, "this worker has no block store"));
        return;
    }
    node_client *c = client_of(n, peer->client);
    if (!c || atomic_load(&c->held) + EL_STORE_CHUNK > n->client_inflight) {
        send_reply(n, peer,
                   el_wire_encode_errorf(&n->out, 0, m->seq, EL_WERR_LIMIT,
                                         "%s block bytes unread by this client (at most %zu): read them first",
                                         c ? "too many" : "too many clients with", n->client_inflight));
        return;
    }
    el_store_serve(n->store, m, &n->out);
    el_error e;
    if (el_link_server_send_counted(n->srv, peer, n->out.data, n->out.len, &c->held, &e))
        nlog(n, "block reply to %.12s...: %s", peer->client, e.msg);
}

static void feed(node *n, node_model *nm, const el_peer *peer, el_buf *in) {
    uint64_t t0 = el_time_ns();
    el_worker_feed(nm->w, peer, in->data, in->len);
    el_worker_stats_note(nm->stats, in->len, el_time_ns() - t0);
}

static void dispatch(node *n, const el_peer *peer, el_buf *in) {
    el_wire_msg m;
    el_error e;
    if (el_wire_parse(in->data, in->len, &m, &e)) {
        if (n->n)
            feed(n, &n->models[0], peer, in);  // the worker answers what is wrong (or which version)
        else if (el_wire_version_error(&n->out, in->data, in->len) == EL_OK ||
                 el_wire_encode_error(&n->out, 0, 0, EL_WERR_PROTOCOL, e.msg) == EL_OK)
            el_link_server_send(n->srv, peer, n->out.data, n->out.len, NULL);
        return;
    }
    if (m.type == EL_MSG_BLOCK_GET) {
        serve_block(n, peer, &m);
        return;
    }
    if (m.type == EL_MSG_OPEN) {
        el_wire_open o;
        if (!el_wire_decode_open(&m, &o, &e) && o.n_stages >= 1) {
            for (int i = 0; i < n->n; i++)
                if (el_worker_accepts(n->models[i].w, o.stages[0].layer_begin, o.stages[0].layer_end,
                                      o.stages[0].identity)) {
                    feed(n, &n->models[i], peer, in);
                    return;
                }
            char names[512] = "";
            for (int i = 0; i < n->n; i++)
                snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "", n->models[i].name);
            send_reply(n, peer,
                       el_wire_encode_errorf(
                           &n->out, 0, m.seq, EL_WERR_MISMATCH,
                           "no model here has layers %u:%u with the device's identity %016llx (this worker serves: %s)",
                           o.stages[0].layer_begin, o.stages[0].layer_end, (unsigned long long)o.stages[0].identity,
                           n->n ? names : "nothing yet"));
            return;
        }
    }
    if (m.session)
        for (int i = 0; i < n->n; i++)
            if (el_worker_has_session(n->models[i].w, m.session)) {
                feed(n, &n->models[i], peer, in);
                return;
            }
    if (n->n)
        feed(n, &n->models[0], peer, in);  // PING, PROBE, unknown sessions, malformed OPENs
    else if (m.type == EL_MSG_PING && el_wire_encode_ping(&n->out, EL_MSG_PONG, m.seq, m.body, m.body_len) == EL_OK)
        el_link_server_send(n->srv, peer, n->out.data, n->out.len, NULL);
    else
        send_reply(n, peer,
                   el_wire_encode_errorf(&n->out, m.session, m.seq, EL_WERR_SESSION, "this worker holds no model yet"));
}

el_status el_node_run(const el_node_opts *o, el_error *err) {
    node *n = calloc(1, sizeof *n);
    if (!n) return el_err(err, EL_ERR_NOMEM, "out of memory");
    n->o = o;
    el_status st = EL_OK;
    snprintf(n->endpoint, sizeof n->endpoint, "%s", o->advertise ? o->advertise : o->w.listen);
    const char *nm = o->name ? o->name : n->endpoint;
    size_t nl = strlen(nm) < sizeof n->name - 1 ? strlen(nm) : sizeof n->name - 1;
    memcpy(n->name, nm, nl);
    n->name[nl] = 0;
    n->client_inflight = o->w.client_inflight ? o->w.client_inflight : (size_t)64 << 20;
    if (n->client_inflight < 2 * EL_STORE_CHUNK) n->client_inflight = 2 * EL_STORE_CHUNK;
    pthread_mutex_init(&n->mu, NULL);
    pthread_cond_init(&n->cv, NULL);
    if (!(n->pool = el_pool_new(o->w.threads))) {
        st = el_err(err, EL_ERR_NOMEM, "cannot start threads");
        goto out;
    }
    if (o->store_dir) {
        if ((st = el_store_open(o->store_dir, &n->store, err))) goto out;
        for (int i = 0; i < o->n_imports; i++) {
            el_hash id;
            if ((st = el_store_import(n->store, o->imports[i], NULL, NULL, &id, err))) goto out;
            char hex[65];
            el_hash_hex(&id, hex);
            nlog(n, "imported %s into %s (id %.16s...)", o->imports[i], o->store_dir, hex);
        }
        if ((st = el_store_rescan(n->store, err))) goto out;
    }
    if ((st = el_link_server_open(o->w.listen, &o->w.sec, &n->srv, err))) goto out;
    if (n->store) {
        int held = el_store_n_models(n->store);
        for (int i = 0; i < held; i++) {
            char name[EL_CTL_MAX_NAME + 1];
            snprintf(name, sizeof name, "%s", el_store_model_name(n->store, i));
            el_error e;
            if (add_model(n, name, &e)) nlog(n, "not serving %s: %s", name, e.msg);
        }
        if (pthread_create(&n->th, NULL, fetch_main, n)) {
            st = el_err(err, EL_ERR_NOMEM, "cannot start the fetch thread");
            goto out;
        }
        n->th_started = 1;
    } else {  // announced under the file's base name without its extension
        char name[EL_CTL_MAX_NAME + 1];
        const char *b = strrchr(o->w.model_path, '/');
        snprintf(name, sizeof name, "%s", b ? b + 1 : o->w.model_path);
        char *dot = strrchr(name, '.');
        if (dot && dot != name) *dot = 0;
        if ((st = add_model(n, name, err))) goto out;
    }
    nlog(n, "listening on %s (%s), %d models, %s store%s%s", o->w.listen, o->w.sec.insecure ? "plaintext" : "CURVE",
         n->n, n->store ? el_store_dir(n->store) : "no", o->controller ? ", controller " : "",
         o->controller ? o->controller : "");
    while (!(o->w.stop && *o->w.stop)) {
        int wait = 100, spin = 1;
        for (int i = 0; i < n->n; i++) {
            int s, ms = el_worker_wait_ms(n->models[i].w, &s);
            if (ms < wait) wait = ms;
            spin &= s;
        }
        el_link_wait(n->srv, n->ctl, wait, spin && n->n);
        for (int k = 0; k < 256; k++) {
            el_peer peer;
            el_error e;
            el_status r = el_link_server_recv(n->srv, 0, &peer, &n->in, &e);
            if (r == EL_ERR_STATE) break;
            if (r) {
                nlog(n, "%s", e.msg);
                break;
            }
            dispatch(n, &peer, &n->in);
        }
        if (n->in.cap > ((size_t)1 << 20)) el_buf_free(&n->in);
        while (n->ctl && el_link_recv(n->ctl, 0, &n->in, NULL) == EL_OK) {
            el_wire_msg m;
            el_error e;
            if (!el_wire_parse(n->in.data, n->in.len, &m, &e)) on_announced(n, &m);
        }
        for (int i = 0; i < n->n; i++) el_worker_turn(n->models[i].w);
        fetch_poll(n);
        heartbeat(n);
    }
    nlog(n, "stopping");
out:
    if (n->th_started) {
        pthread_mutex_lock(&n->mu);
        n->th_stop = 1;
        pthread_cond_signal(&n->cv);
        pthread_mutex_unlock(&n->mu);
        pthread_join(n->th, NULL);  // a fetch under way ends first
    }
    el_link_close(n->ctl);
    el_link_server_close(n->srv);  // before the workers and clients whose counters ZeroMQ holds
    for (int i = 0; i < n->n; i++) {
        el_worker_free(n->models[i].w);
        el_model_close(n->models[i].m);
        el_worker_stats_free(n->models[i].stats);
    }
    for (int i = 0; i < n->n_clients; i++) free(n->clients[i]);
    el_store_close(n->store);
    el_pool_free(n->pool);
    el_buf_free(&n->in);
    el_buf_free(&n->out);
    pthread_mutex_destroy(&n->mu);
    pthread_cond_destroy(&n->cv);
    free(n);
    return st;
}
