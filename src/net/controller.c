// The controller: soft state from workers' heartbeats, placements applied by
// telling workers what to fetch, and routes for devices. One thread; every
// message is answered at once from the table of workers.
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/controller.h"
#include "edgellm/serve.h"

typedef struct {
    char name[EL_CTL_MAX_NAME + 1];
    char id[65];
    int n_layers, begin, end;
} ctl_model;

typedef struct {
    char name[EL_CTL_MAX_NAME + 1];
    char endpoint[256];
    char key[41];
    char client[72];  // who announced it (its CURVE key, or its connection on plaintext)
    ctl_model models[EL_CTL_MAX_MODELS];
    int n_models;
    uint64_t n_blocks, store_bytes, free_bytes;
    int sessions;
    double busy, step_ms;
    double last_seen;
    int routed;  // devices sent to it since its last heartbeat
} ctl_worker;

typedef struct {
    char server[EL_CTL_MAX_NAME + 1];
    char **models;
    int n_models;
} ctl_place;

struct el_controller {
    el_controller_opts o;
    ctl_worker *workers;
    int n_workers, cap_workers;
    ctl_place *place;
    int n_place;
    el_sbuf sb;
};

static void clog_(el_controller *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void clog_(el_controller *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    el_vlogf(c->o.log, "controller: ", fmt, ap);
    va_end(ap);
}

// Names become parts of messages and logs: printable ASCII without quotes or
// backslashes, 1..EL_CTL_MAX_NAME bytes.
static int good_name(const el_json *j) {
    const char *s = el_json_str(j);
    size_t n = el_json_strlen(j);
    if (!s || n == 0 || n > EL_CTL_MAX_NAME) return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= ' ' || s[i] > '~' || s[i] == '"' || s[i] == '\\') return 0;
    return 1;
}

static int good_endpoint(const el_json *j) {
    const char *s = el_json_str(j);
    size_t n = el_json_strlen(j);
    if (!s || n == 0 || n > 255) return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= ' ' || s[i] > '~' || s[i] == '"' || s[i] == '\\') return 0;
    return 1;
}

// A model id: 64 hex digits, kept in lower case.
static int good_id(const el_json *j, char out[65]) {
    const char *s = el_json_str(j);
    if (!s || el_json_strlen(j) != 64) return 0;
    for (int i = 0; i < 64; i++) {
        char ch = s[i];
        if (ch >= 'A' && ch <= 'F') ch = (char)(ch - 'A' + 'a');
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return 0;
        out[i] = ch;
    }
    out[64] = 0;
    return 1;
}

static int good_int(const el_json *j, double lo, double hi, int *out) {
    if (!el_json_is(j, EL_JSON_NUMBER)) return 0;
    double v = el_json_num(j, -1);
    if (!(v >= lo && v <= hi) || v != (double)(long long)v) return 0;
    *out = (int)v;
    return 1;
}

static int good_num(const el_json *j, double lo, double hi, double *out) {
    if (!el_json_is(j, EL_JSON_NUMBER)) return 0;
    double v = el_json_num(j, -1);
    if (!(v >= lo && v <= hi)) return 0;
    *out = v;
    return 1;
}

static void free_place(el_controller *c) {
    for (int i = 0; i < c->n_place; i++) {
        for (int k = 0; k < c->place[i].n_models; k++) free(c->place[i].models[k]);
        free(c->place[i].models);
    }
    free(c->place);
    c->place = NULL;
    c->n_place = 0;
}

el_status el_controller_set_placement(el_controller *c, const el_json *doc, const char *name, el_error *err) {
    const el_json *p = el_json_get(doc, "placement");
    if (!el_json_is(p, EL_JSON_OBJECT))
        return el_err(err, EL_ERR_FORMAT, "%s: no \"placement\" object ({server: [models]})", name);
    size_t n = el_json_len(p);
    if (n > (size_t)c->o.max_workers)
        return el_err(err, EL_ERR_RANGE, "%s: %zu servers in the placement (at most %d)", name, n, c->o.max_workers);
    ctl_place *pl = calloc(n ? n : 1, sizeof *pl);
    if (!pl) return el_err(err, EL_ERR_NOMEM, "out of memory");
    int k = 0;
    el_status st = EL_OK;
    for (const el_json *v = el_json_first(p); v; v = el_json_next(p, v), k++) {
        const char *server = el_json_key(p, v);
        size_t sl = strlen(server);
        if (sl == 0 || sl > EL_CTL_MAX_NAME) {
            st = el_err(err, EL_ERR_FORMAT, "%s: a server name of %zu bytes (1..%d)", name, sl, EL_CTL_MAX_NAME);
            break;
        }
        memcpy(pl[k].server, server, sl + 1);
        if (!el_json_is(v, EL_JSON_ARRAY) || el_json_len(v) > EL_CTL_MAX_MODELS) {
            st = el_err(err, EL_ERR_FORMAT, "%s: server \"%s\": not an array of at most %d model names", name, server,
                        EL_CTL_MAX_MODELS);
            break;
        }
        pl[k].models = calloc(el_json_len(v) + 1, sizeof *pl[k].models);
        if (!pl[k].models) {
            st = el_err(err, EL_ERR_NOMEM, "out of memory");
            break;
        }
        for (const el_json *m = el_json_first(v); m; m = el_json_next(v, m)) {
            if (!good_name(m)) {
                st = el_err(err, EL_ERR_FORMAT, "%s: server \"%s\": a model name that is not 1..%d printable bytes",
                            name, server, EL_CTL_MAX_NAME);
                break;
            }
            if (!(pl[k].models[pl[k].n_models++] = strdup(el_json_str(m)))) {
                st = el_err(err, EL_ERR_NOMEM, "out of memory");
                break;
            }
        }
        if (st) {
            k++;
            break;
        }
    }
    if (st) {
        ctl_place *old = c->place;
        int old_n = c->n_place;
        c->place = pl;
        c->n_place = k;
        free_place(c);
        c->place = old;
        c->n_place = old_n;
        return st;
    }
    free_place(c);
    c->place = pl;
    c->n_place = k;
    clog_(c, "placement from %s: %d servers", name, k);
    return EL_OK;
}

el_status el_controller_new(const el_controller_opts *o, el_controller **out, el_error *err) {
    *out = NULL;
    el_controller *c = calloc(1, sizeof *c);
    if (!c) return el_err(err, EL_ERR_NOMEM, "out of memory");
    c->o = *o;
    if (c->o.dead_ms <= 0) c->o.dead_ms = 3000;
    if (c->o.max_workers <= 0) c->o.max_workers = 1024;
    if (o->placement) {
        el_json *doc;
        el_status st = el_json_load(o->placement, 16u << 20, &doc, err);
        if (!st) {
            st = el_controller_set_placement(c, doc, o->placement, err);
            el_json_free(doc);
        }
        if (st) {
            el_controller_free(c);
            return st;
        }
    }
    *out = c;
    return EL_OK;
}

void el_controller_free(el_controller *c) {
    if (!c) return;
    free_place(c);
    free(c->workers);
    el_sbuf_free(&c->sb);
    free(c);
}

int el_controller_n_workers(const el_controller *c) {
    return c->n_workers;
}

void el_controller_tick(el_controller *c, double now) {
    for (int i = c->n_workers - 1; i >= 0; i--)
        if ((now - c->workers[i].last_seen) * 1000 > c->o.dead_ms) {
            clog_(c, "worker %s (%s) silent for %.1f s: dropped", c->workers[i].name, c->workers[i].endpoint,
                  now - c->workers[i].last_seen);
            c->workers[i] = c->workers[--c->n_workers];
        }
}

static const ctl_model *holds(const ctl_worker *w, const char *model) {
    for (int i = 0; i < w->n_models; i++)
        if (!strcmp(w->models[i].name, model)) return &w->models[i];
    return NULL;
}

static void reply_json(el_controller *c, el_buf *out, uint16_t type, uint32_t seq) {
    if (c->sb.oom) {
        c->sb.oom = 0;
        c->sb.len = 0;
        el_wire_encode_error(out, 0, seq, EL_WERR_INTERNAL, "out of memory");
        return;
    }
    el_wire_encode_ping(out, type, seq, c->sb.data, c->sb.len);
}

// A worker's cost for one more device, from its last heartbeat: its time per
// request, stretched by the devices it serves (and those routed to it since)
// and by how busy it was.
static double cost_ms(const ctl_worker *w) {
    double busy = w->busy < 0.95 ? w->busy : 0.95;
    double step = w->step_ms > 0 ? w->step_ms : 1.0;
    return step * (1 + w->sessions + w->routed) / (1 - busy);
}

// ANNOUNCE: {"name", "endpoint", "public_key", "models": [{"name", "id",
// "n_layers", "layers": [a, b]}], "blocks", "store_bytes", "free_bytes",
// "sessions", "busy", "step_ms"}. The reply tells the worker what the
// placement wants it to fetch, and from whom.
static void on_announce(el_controller *c, const el_peer *peer, const el_json *j, uint32_t seq, double now,
                        el_buf *out) {
    const el_json *name = el_json_get(j, "name"), *ep = el_json_get(j, "endpoint"), *key = el_json_get(j, "public_key");
    const el_json *models = el_json_get(j, "models");
    if (!good_name(name) || !good_endpoint(ep) || !el_json_is(key, EL_JSON_STRING) ||
        !el_json_is(models, EL_JSON_ARRAY) || el_json_len(models) > EL_CTL_MAX_MODELS) {
        el_wire_encode_errorf(
            out, 0, seq, EL_WERR_PROTOCOL,
            "ANNOUNCE needs name and endpoint (1..%d printable bytes), public_key and at most %d models",
            EL_CTL_MAX_NAME, EL_CTL_MAX_MODELS);
        return;
    }
    // The key announced is the key devices will pin: on a CURVE link it must
    // be the key this worker proved, or one worker could send devices to
    // another's endpoint under a key it holds.
    int secure = !c->o.sec.insecure;
    if (secure && (el_json_strlen(key) != 40 || strcmp(el_json_str(key), peer->client))) {
        el_wire_encode_errorf(out, 0, seq, EL_WERR_MISMATCH,
                              "ANNOUNCE: public_key is not the key this connection proved");
        return;
    }
    ctl_worker nw = {0};
    memcpy(nw.name, el_json_str(name), el_json_strlen(name) + 1);
    memcpy(nw.endpoint, el_json_str(ep), el_json_strlen(ep) + 1);
    if (el_json_strlen(key) <= 40) memcpy(nw.key, el_json_str(key), el_json_strlen(key) + 1);
    snprintf(nw.client, sizeof nw.client, "%s", peer->client);
    for (const el_json *m = el_json_first(models); m; m = el_json_next(models, m)) {
        ctl_model *cm = &nw.models[nw.n_models];
        const el_json *mn = el_json_get(m, "name"), *id = el_json_get(m, "id"), *ly = el_json_get(m, "layers");
        if (!good_name(mn) || !good_id(id, cm->id) || !good_int(el_json_get(m, "n_layers"), 1, 100000, &cm->n_layers) ||
            !el_json_is(ly, EL_JSON_ARRAY) || el_json_len(ly) != 2 ||
            !good_int(el_json_at(ly, 0), 0, cm->n_layers - 1, &cm->begin) ||
            !good_int(el_json_at(ly, 1), cm->begin + 1, cm->n_layers, &cm->end)) {
            el_wire_encode_errorf(
                out, 0, seq, EL_WERR_PROTOCOL,
                "ANNOUNCE: model %d needs name, id (64 hex digits), n_layers and layers [a, b] within it", nw.n_models);
            return;
        }
        memcpy(cm->name, el_json_str(mn), el_json_strlen(mn) + 1);
        nw.n_models++;
    }
    double v;
    nw.n_blocks = good_num(el_json_get(j, "blocks"), 0, 1e15, &v) ? (uint64_t)v : 0;
    nw.store_bytes = good_num(el_json_get(j, "store_bytes"), 0, 1e18, &v) ? (uint64_t)v : 0;
    nw.free_bytes = good_num(el_json_get(j, "free_bytes"), 0, 1e18, &v) ? (uint64_t)v : 0;
    nw.sessions = good_num(el_json_get(j, "sessions"), 0, 1e6, &v) ? (int)v : 0;
    nw.busy = good_num(el_json_get(j, "busy"), 0, 1, &v) ? v : 0;
    nw.step_ms = good_num(el_json_get(j, "step_ms"), 0, 1e6, &v) ? v : 0;
    nw.last_seen = now;
    ctl_worker *w = NULL;
    for (int i = 0; i < c->n_workers; i++)
        if (!strcmp(c->workers[i].name, nw.name)) w = &c->workers[i];
    if (w && strcmp(w->client, nw.client)) {
        el_wire_encode_errorf(out, 0, seq, EL_WERR_MISMATCH,
                              "the name \"%s\" belongs to another worker's key until it goes silent", nw.name);
        return;
    }
    if (!w) {
        // one key is one worker (a few names while it renames itself): an
        // allowed peer cannot fill the table with workers of its own
        int mine = 0;
        for (int i = 0; i < c->n_workers; i++) mine += !strcmp(c->workers[i].client, nw.client);
        if (mine >= EL_CTL_NAMES_PER_KEY) {
            el_wire_encode_errorf(out, 0, seq, EL_WERR_LIMIT, "this key announces %d workers already (at most %d)",
                                  mine, EL_CTL_NAMES_PER_KEY);
            return;
        }
        if (c->n_workers >= c->o.max_workers) {
            el_wire_encode_errorf(out, 0, seq, EL_WERR_LIMIT, "the controller knows %d workers already", c->n_workers);
            return;
        }
        if (c->n_workers == c->cap_workers) {
            int cap = c->cap_workers ? 2 * c->cap_workers : 16;
            ctl_worker *nws = realloc(c->workers, (size_t)cap * sizeof *nws);
            if (!nws) {
                el_wire_encode_errorf(out, 0, seq, EL_WERR_INTERNAL, "out of memory");
                return;
            }
            c->workers = nws;
            c->cap_workers = cap;
        }
        w = &c->workers[c->n_workers++];
        clog_(c, "worker %s at %s joined: %d models, %llu blocks, %.1f MiB stored", nw.name, nw.endpoint, nw.n_models,
              (unsigned long long)nw.n_blocks, nw.store_bytes / 1048576.0);
    } else {
        for (int i = 0; i < nw.n_models; i++)
            if (!holds(w, nw.models[i].name)) clog_(c, "worker %s now holds %s", nw.name, nw.models[i].name);
    }
    *w = nw;
    // what the placement wants here and the worker lacks, with the workers that hold it
    c->sb.len = 0;
    el_sbuf_puts(&c->sb, "{\"fetch\":[");
    int nf = 0;
    for (int p = 0; p < c->n_place; p++) {
        if (strcmp(c->place[p].server, w->name)) continue;
        for (int k = 0; k < c->place[p].n_models; k++) {
            const char *model = c->place[p].models[k];
            if (holds(w, model)) continue;
            // the holders, least loaded first (ties by name): a fetch goes
            // where it slows devices least, in an order the logs can tell
            int order[64], no = 0;
            for (int i = 0; i < c->n_workers && no < 64; i++) {
                if (&c->workers[i] == w || !holds(&c->workers[i], model)) continue;
                int at = no++;
                double ci = cost_ms(&c->workers[i]);
                while (at > 0) {
                    const ctl_worker *prev = &c->workers[order[at - 1]];
                    double cp = cost_ms(prev);
                    if (cp < ci || (cp == ci && strcmp(prev->name, c->workers[i].name) < 0)) break;
                    order[at] = order[at - 1];
                    at--;
                }
                order[at] = i;
            }
            int ns = 0;
            for (int o = 0; o < no; o++) {
                int i = order[o];
                const ctl_model *hm = holds(&c->workers[i], model);
                if (!ns) {
                    el_sbuf_printf(&c->sb, "%s{\"model\":", nf++ ? "," : "");
                    el_sbuf_json_str(&c->sb, model, strlen(model));
                    el_sbuf_printf(&c->sb, ",\"id\":\"%s\",\"sources\":[", hm->id);
                }
                el_sbuf_printf(&c->sb, "%s{\"endpoint\":", ns++ ? "," : "");
                el_sbuf_json_str(&c->sb, c->workers[i].endpoint, strlen(c->workers[i].endpoint));
                el_sbuf_printf(&c->sb, ",\"public_key\":\"%s\"}", c->workers[i].key);
            }
            if (ns) el_sbuf_puts(&c->sb, "]}");
        }
    }
    el_sbuf_puts(&c->sb, "]}");
    reply_json(c, out, EL_MSG_ANNOUNCED, seq);
}

// ROUTE: {"model", "cut" (-1: any), "exclude": [endpoints]}.
static void on_route(el_controller *c, const el_json *j, uint32_t seq, el_buf *out) {
    const el_json *model = el_json_get(j, "model"), *ex = el_json_get(j, "exclude");
    int cut = -1;
    const el_json *cj = el_json_get(j, "cut");
    if (!good_name(model) || (cj && !good_int(cj, -1, 100000, &cut)) ||
        (ex && (!el_json_is(ex, EL_JSON_ARRAY) || el_json_len(ex) > 64))) {
        el_wire_encode_errorf(out, 0, seq, EL_WERR_PROTOCOL,
                              "ROUTE needs model (a name), cut (-1..100000) and exclude (at most 64 "
                              "endpoints)");
        return;
    }
    const char *name = el_json_str(model);
    int pick[EL_CTL_MAX_ROUTE], n = 0, holders = 0;
    double pc[EL_CTL_MAX_ROUTE];
    for (int i = 0; i < c->n_workers; i++) {
        const ctl_model *m = holds(&c->workers[i], name);
        if (!m) continue;
        holders++;
        if (m->end != m->n_layers || (cut >= 0 && (cut < m->begin || cut >= m->n_layers))) continue;
        int excluded = 0;
        for (const el_json *e = el_json_first(ex); e && !excluded; e = el_json_next(ex, e))
            excluded = el_json_str(e) && !strcmp(el_json_str(e), c->workers[i].endpoint);
        if (excluded) continue;
        double cm = cost_ms(&c->workers[i]);
        int at = n < EL_CTL_MAX_ROUTE ? n++ : EL_CTL_MAX_ROUTE;  // insertion into the best few
        while (at > 0 && pc[at - 1] > cm) {
            if (at < EL_CTL_MAX_ROUTE) {
                pick[at] = pick[at - 1];
                pc[at] = pc[at - 1];
            }
            at--;
        }
        if (at < EL_CTL_MAX_ROUTE) {
            pick[at] = i;
            pc[at] = cm;
        }
    }
    if (!n) {
        el_wire_encode_errorf(
            out, 0, seq, EL_WERR_MISMATCH,
            "no worker serves model \"%s\" from layer %d to its last (%d of %d workers hold it; %d excluded)", name,
            cut, holders, c->n_workers, ex ? (int)el_json_len(ex) : 0);
        return;
    }
    c->workers[pick[0]].routed++;
    const ctl_model *m0 = holds(&c->workers[pick[0]], name);
    c->sb.len = 0;
    el_sbuf_puts(&c->sb, "{\"model\":");
    el_sbuf_json_str(&c->sb, name, strlen(name));
    el_sbuf_printf(&c->sb, ",\"id\":\"%s\",\"n_layers\":%d,\"stages\":[", m0->id, m0->n_layers);
    for (int k = 0; k < n; k++) {
        const ctl_worker *w = &c->workers[pick[k]];
        const ctl_model *m = holds(w, name);
        el_sbuf_printf(&c->sb, "%s{\"worker\":", k ? "," : "");
        el_sbuf_json_str(&c->sb, w->name, strlen(w->name));
        el_sbuf_puts(&c->sb, ",\"endpoint\":");
        el_sbuf_json_str(&c->sb, w->endpoint, strlen(w->endpoint));
        el_sbuf_printf(&c->sb, ",\"public_key\":\"%s\",\"layers\":[%d,%d],\"cost_ms\":%.3f}", w->key, m->begin, m->end,
                       pc[k]);
    }
    el_sbuf_puts(&c->sb, "]}");
    clog_(c, "route for %s: %s (%d candidates)", name, c->workers[pick[0]].name, n);
    reply_json(c, out, EL_MSG_ROUTED, seq);
}

void el_controller_handle(el_controller *c, const el_peer *peer, const void *frame, size_t n, double now, el_buf *out) {
    el_wire_msg m;
    el_error e;
    out->len = 0;
    if (el_wire_parse(frame, n, &m, &e)) {
        if (el_wire_version_error(out, frame, n) != EL_OK) el_wire_encode_error(out, 0, 0, EL_WERR_PROTOCOL, e.msg);
        return;
    }
    if (m.type == EL_MSG_PING) {
        el_wire_encode_ping(out, EL_MSG_PONG, m.seq, m.body, m.body_len);
        return;
    }
    if (m.type != EL_MSG_ANNOUNCE && m.type != EL_MSG_ROUTE && m.type != EL_MSG_PLACE) {
        el_wire_encode_errorf(out, 0, m.seq, EL_WERR_PROTOCOL,
                              "a controller takes ANNOUNCE, ROUTE, PLACE and PING, not type %u", m.type);
        return;
    }
    if (m.body_len > EL_CTL_MAX_BODY) {
        el_wire_encode_errorf(out, 0, m.seq, EL_WERR_LIMIT, "a body of %zu bytes (at most %u)", m.body_len,
                              EL_CTL_MAX_BODY);
        return;
    }
    el_json *j;
    if (el_json_parse((const char *)m.body, m.body_len, peer->client, &j, &e)) {
        el_wire_encode_errorf(out, 0, m.seq, EL_WERR_PROTOCOL, "%s", e.msg);
        return;
    }
    if (!el_json_is(j, EL_JSON_OBJECT))
        el_wire_encode_errorf(out, 0, m.seq, EL_WERR_PROTOCOL, "the body is not a JSON object");
    else if (m.type == EL_MSG_ANNOUNCE)
        on_announce(c, peer, j, m.seq, now, out);
    else if (m.type == EL_MSG_ROUTE)
        on_route(c, j, m.seq, out);
    else if (el_controller_set_placement(c, j, "PLACE", &e))
        el_wire_encode_errorf(out, 0, m.seq, EL_WERR_PROTOCOL, "%s", e.msg);
    else
        el_wire_encode_simple(out, EL_MSG_OK, 0, m.seq);
    el_json_free(j);
}

el_status el_controller_run(const el_controller_opts *o, el_error *err) {
    el_controller *c;
    el_status st = el_controller_new(o, &c, err);
    if (st) return st;
    el_link_server *srv;
    if ((st = el_link_server_open(o->listen, &o->sec, &srv, err))) {
        el_controller_free(c);
        return st;
    }
    clog_(c, "listening on %s (%s, %d keys allowed), workers dropped after %d ms of silence", o->listen,
          o->sec.insecure ? "plaintext" : "CURVE", el_link_server_n_allowed(srv), c->o.dead_ms);
    el_buf in = {0}, out = {0};
    while (!(o->stop && *o->stop)) {
        el_peer peer;
        el_error e;
        el_status r = el_link_server_recv(srv, 200, &peer, &in, &e);
        double now = el_time_s();
        el_controller_tick(c, now);
        if (r == EL_ERR_STATE) continue;
        if (r) {
            clog_(c, "%s", e.msg);
            continue;
        }
        el_controller_handle(c, &peer, in.data, in.len, now, &out);
        if (out.len && el_link_server_send(srv, &peer, out.data, out.len, &e))
            clog_(c, "reply to %.12s...: %s", peer.client, e.msg);
    }
    clog_(c, "stopping: %d workers known", c->n_workers);
    el_link_server_close(srv);
    el_buf_free(&in);
    el_buf_free(&out);
    el_controller_free(c);
    return EL_OK;
}
