// Loading steps shared by the subcommands.
#include "common.h"

#include <stdlib.h>
#include <string.h>

#include "edgellm/controller.h"

el_status tool_open_tokenizer_file(const char *path, el_tokenizer **out, el_error *err) {
    FILE *f = fopen(path, "rb");
    char magic[4] = {0};
    size_t got = f ? fread(magic, 1, 4, f) : 0;
    if (f) fclose(f);
    if (got == 4 && !memcmp(magic, "GGUF", 4)) {
        el_gguf *g;
        el_status s = el_gguf_open(path, &g, err);
        if (s) return s;
        s = el_tokenizer_from_gguf(g, out, err);
        el_gguf_close(g);
        return s;
    }
    return el_tokenizer_load_llama2c(path, 0, out, err);
}

el_status tool_check_prompt(const char *text, size_t len, const char *what, int allow_empty, el_error *err) {
    if (!allow_empty && len == 0) return el_err(err, EL_ERR_ARG, "%s is empty", what);
    size_t bad = el_utf8_check(text, len);
    if (bad != len)
        return el_err(err, EL_ERR_ARG, "%s is not valid UTF-8 (byte 0x%02x at offset %zu)", what,
                      (unsigned char)text[bad], bad);
    return EL_OK;
}

el_status tool_read_input(const char *path, size_t max_bytes, char **data, size_t *len, el_error *err) {
    if (strcmp(path, "-")) return el_read_file(path, max_bytes, data, len, err);
    *data = NULL;
    *len = 0;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) return el_err(err, EL_ERR_NOMEM, "standard input: out of memory");
    for (;;) {
        if (n == cap) {
            if (cap > max_bytes) break;
            char *nb = realloc(buf, cap * 2 + 1);
            if (!nb) { free(buf); return el_err(err, EL_ERR_NOMEM, "standard input: out of memory"); }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, stdin);
        n += r;
        if (r == 0) break;
    }
    if (n > max_bytes) {
        free(buf);
        return el_err(err, EL_ERR_RANGE, "standard input: larger than the limit of %zu bytes", max_bytes);
    }
    if (ferror(stdin)) { free(buf); return el_err(err, EL_ERR_IO, "standard input: read error"); }
    buf[n] = 0;
    *data = buf;
    *len = n;
    return EL_OK;
}

static int hexdigit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

size_t tool_unescape(char *s, size_t n) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\' || i + 1 == n) { s[o++] = s[i]; continue; }
        char e = s[++i];
        switch (e) {
        case 'n': s[o++] = '\n'; break;
        case 't': s[o++] = '\t'; break;
        case 'r': s[o++] = '\r'; break;
        case 'a': s[o++] = '\a'; break;
        case 'b': s[o++] = '\b'; break;
        case 'f': s[o++] = '\f'; break;
        case 'v': s[o++] = '\v'; break;
        case '0': s[o++] = '\0'; break;
        case '\\': case '\'': case '"': case '?': s[o++] = e; break;
        case 'x': {
            int h1 = i + 1 < n ? hexdigit(s[i + 1]) : -1, h2 = i + 2 < n ? hexdigit(s[i + 2]) : -1;
            if (h1 >= 0 && h2 >= 0) {
                s[o++] = (char)(h1 * 16 + h2);
                i += 2;
            } else {
                s[o++] = '\\';
                s[o++] = 'x';
            }
            break;
        }
        default:  // not an escape we know: kept as written
            s[o++] = '\\';
            s[o++] = e;
        }
    }
    if (o < n) s[o] = 0;
    return o;
}

el_status tool_load_prompt(const char *arg, const char *file, int allow_empty, int escapes, char **owned,
                           const char **text, size_t *len, el_error *err) {
    *owned = NULL;
    if (file) {
        el_status st = tool_read_input(file, 256u << 20, owned, len, err);
        if (st) return st;
    } else if (escapes) {
        *len = strlen(arg);
        if (!(*owned = strdup(arg))) return el_err(err, EL_ERR_NOMEM, "out of memory");
    } else {
        *text = arg;
        *len = strlen(arg);
    }
    if (*owned) {
        if (escapes) *len = tool_unescape(*owned, *len);
        *text = *owned;
    }
    const char *what = !file ? "the prompt" : strcmp(file, "-") ? file : "standard input";
    return tool_check_prompt(*text, *len, what, allow_empty, err);
}

int tool_ctx(const char *cmd, const el_model *m, int requested) {
    int ctx = requested > 0 ? requested : m->hp.ctx;
    char msg[256];
    if (el_model_ctx_warning(m, ctx, msg, sizeof msg)) fprintf(stderr, "edgellm %s: warning: %s\n", cmd, msg);
    return ctx;
}

void tool_print_piece(FILE *out, const el_tokenizer *tok, int prev, int id) {
    char buf[256];
    size_t n = el_tokenizer_decode(tok, prev, id, buf, sizeof buf);
    if (n == 1) {
        unsigned char c = (unsigned char)buf[0];
        if ((c < 0x20 && c != '\n' && c != '\t' && c != '\r' && c != '\v' && c != '\f') || c == 0x7f) return;
    }
    fwrite(buf, 1, n, out);
}

const char *tool_split_help =
    "split inference (the device keeps the embedding and layers 0..K-1):\n"
    "      --split K[,M...]    cut points (K = 0: the device runs only the embedding); several\n"
    "                          make a chain of workers (use --next on them)\n"
    "      --via HOST:PORT     the first worker, e.g. 127.0.0.1:7001 (also tcp://HOST:PORT)\n"
    "      --server-key FILE   the worker's public key (pinned)\n"
    "      --keys DIR          this device's CURVE key pair\n"
    "      --insecure          plaintext, loopback only; --insecure-anywhere allows any address\n"
    "      --act f32|f16|bf16|q8_0  activation encoding on the wire (default f32)\n"
    "      --ushape            the device also runs the final norm + head: logits and text stay here\n"
    "      --retry N           on a link or worker failure, re-open and re-send the prefix (default 0)\n"
    "      --timeout MS        per request (default 30000)\n"
    "      --connect-timeout MS  connection and handshake (default 3000): a worker that is not\n"
    "                          running, refuses our key or uses other security settings is\n"
    "                          reported after at most this long\n"
    "      --device-slowdown F emulate a device F times slower than this machine (for experiments)\n"
    "      --controller HOST:PORT  ask the edge network's controller for the worker (no --via): it\n"
    "                          offers the least loaded workers holding the model, the device\n"
    "                          measures its link to each and takes the cheapest; --retry asks again,\n"
    "                          without the workers that failed\n"
    "      --controller-key F  the controller's public key (pinned; --keys authenticates us)\n"
    "      --model-name NAME   the model's name in the network (default: the file's base name)\n"
    "  --split auto            choose the cut from profiles and a link probe, and move it when\n"
    "                          the link changes (the worker must serve 0:L, i.e. --layers 0:):\n"
    "      --device-profile F  this device's profile (edgellm profile); default: measured once and\n"
    "                          cached in ~/.cache/edgellm (or $XDG_CACHE_HOME/edgellm)\n"
    "      --edge-profile F    the worker's profile; default: this machine's, unslowed\n"
    "      --replan-every N    re-probe and re-plan every N tokens (default 32)\n"
    "      --replan-gain G     move only if the predicted gain exceeds G (default 0.1 = 10%)\n"
    "      --device-mem SIZE   the device's memory budget for the plan (default: its free memory)\n";

void tool_split_init(tool_split *ts) {
    memset(ts, 0, sizeof *ts);
    ts->o.act_dtype = EL_DTYPE_F32;
    ts->replan_every = 32;
    ts->replan_gain = 0.1f;
}

static int parse_cuts(const char *s, el_split_opts *o) {
    o->n_cuts = 0;
    const char *p = s;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < (o->n_cuts ? 1 : 0) || v > 100000 || o->n_cuts >= EL_WIRE_MAX_STAGES - 1) return 0;
        o->cuts[o->n_cuts++] = (int)v;
        if (*end == ',') end++;
        else if (*end) return 0;
        p = end;
    }
    return o->n_cuts > 0;
}

int tool_split_option(cli *c, const char *a, tool_split *ts) {
    el_split_opts *o = &ts->o;
    if (cli_is(a, NULL, "--split")) {
        const char *v = cli_str(c, a);
        if (v && !strcmp(v, "auto")) {
            ts->autoplan = 1;
            o->n_cuts = 1;
        } else if (v && !parse_cuts(v, o)) {
            cli_fail(c, "--split: '%s' is not K, K,M,... (layer indices) or auto", v);
        }
        ts->enabled = 1;
    } else if (cli_is(a, NULL, "--via")) o->via = cli_str(c, a);
    else if (cli_is(a, NULL, "--server-key")) ts->server_key_file = cli_str(c, a);
    else if (cli_is(a, NULL, "--keys")) ts->keys_dir = cli_str(c, a);
    else if (cli_is(a, NULL, "--insecure")) o->sec.insecure = 1;
    else if (cli_is(a, NULL, "--insecure-anywhere")) o->sec.insecure = o->sec.insecure_anywhere = 1;
    else if (cli_is(a, NULL, "--act")) ts->act = cli_str(c, a);
    else if (cli_is(a, NULL, "--ushape")) o->ushape = 1;
    else if (cli_is(a, NULL, "--retry")) cli_int(c, a, 0, 1000, &o->retries);
    else if (cli_is(a, NULL, "--timeout")) cli_int(c, a, 1, 1 << 30, &o->timeout_ms);
    else if (cli_is(a, NULL, "--connect-timeout")) cli_int(c, a, 1, 1 << 30, &o->sec.connect_timeout_ms);
    else if (cli_is(a, NULL, "--device-slowdown")) {
        float f = 1;
        if (cli_float(c, a, 1, 1000, &f)) o->slowdown = f;
    }
    else if (cli_is(a, NULL, "--controller")) ts->controller = cli_str(c, a);
    else if (cli_is(a, NULL, "--controller-key")) ts->controller_key_file = cli_str(c, a);
    else if (cli_is(a, NULL, "--model-name")) ts->model_name = cli_str(c, a);
    else if (cli_is(a, NULL, "--device-profile")) ts->device_profile = cli_str(c, a);
    else if (cli_is(a, NULL, "--edge-profile")) ts->edge_profile = cli_str(c, a);
    else if (cli_is(a, NULL, "--replan-every")) cli_int(c, a, 1, 1 << 20, &ts->replan_every);
    else if (cli_is(a, NULL, "--replan-gain")) cli_float(c, a, 0, 10, &ts->replan_gain);
    else if (cli_is(a, NULL, "--device-mem")) cli_size(c, a, &ts->device_mem);
    else return 0;
    return 1;
}

int tool_split_check(cli *c, tool_split *ts) {
    if (ts->act) {
        ts->o.act_dtype = el_dtype_from_name(ts->act);
        if (ts->o.act_dtype < 0 || !el_wire_act_supported(ts->o.act_dtype))
            return cli_fail(c, "--act: '%s' is not one of the supported activation encodings (f32, f16, bf16, q8_0)",
                            ts->act);
    }
    if (ts->controller) {
        if (!ts->allow_controller) return cli_fail(c, "--controller: only edgellm run asks a controller for a route");
        if (!ts->enabled) return cli_fail(c, "--controller needs --split K (or auto)");
        if (ts->o.via || ts->server_key_file) return cli_fail(c, "--controller chooses the worker: no --via or --server-key");
        if (ts->o.n_cuts > 1) return cli_fail(c, "--controller routes to one worker: --split takes one cut");
        if (!ts->o.sec.insecure && (!ts->keys_dir || !ts->controller_key_file))
            return cli_fail(c, "--controller needs --keys DIR and --controller-key FILE (or --insecure on loopback)");
        return 0;
    }
    if (ts->controller_key_file || ts->model_name) return cli_fail(c, "--controller-key and --model-name go with --controller");
    if (ts->enabled && !ts->o.via) return cli_fail(c, "--split needs --via HOST:PORT");
    if (!ts->enabled && ts->o.via) return cli_fail(c, "--via needs --split K");
    if (ts->enabled && !ts->o.sec.insecure && (!ts->keys_dir || !ts->server_key_file))
        return cli_fail(c, "split inference needs --keys DIR and --server-key FILE (or --insecure on loopback)");
    return 0;
}

el_status tool_split_prepare(tool_split *ts, el_model_opts *mo, el_error *err) {
    if (ts->keys_dir) {
        el_status s = el_keys_load(ts->keys_dir, &ts->keys, err);
        if (s) return s;
        ts->o.sec.keys = &ts->keys;
    }
    if (ts->server_key_file) {
        el_status s = el_key_load_public(ts->server_key_file, ts->server_key, err);
        if (s) return s;
        ts->o.sec.server_key = ts->server_key;
    }
    ts->o.log = stderr;
    if (ts->controller_key_file) {
        el_status s = el_key_load_public(ts->controller_key_file, ts->controller_key, err);
        if (s) return s;
    }
    if (ts->enabled && !ts->autoplan) {  // auto binds everything: the cut may move anywhere
        mo->layer_end = ts->o.cuts[0];
        mo->no_layers = ts->o.cuts[0] == 0;
        mo->no_head = !ts->o.ushape;
    }
    // --split L may be every layer (then the head runs here): tool_split_drop_head knows
    if (ts->enabled && !ts->autoplan && ts->o.n_cuts == 1) mo->no_head = 0;
    return EL_OK;
}

el_status tool_split_drop_head(const tool_split *ts, const char *model_path, el_model_opts *mo, el_error *err) {
    if (!ts->enabled || ts->autoplan || ts->o.n_cuts != 1 || ts->o.ushape) return EL_OK;
    el_model *h;
    el_model_opts ho = {.no_layers = 1, .no_embed = 1, .no_head = 1, .no_pack = 1, .no_scan = 1};
    el_status s = el_model_open(model_path, &ho, &h, err);
    if (s) return s;
    if (ts->o.cuts[0] < h->hp.n_layers) mo->no_head = 1;
    el_model_close(h);
    return EL_OK;
}

el_status tool_split_check_model(const tool_split *ts, const el_model *m, el_error *err) {
    if (!ts->enabled || ts->autoplan || ts->o.n_cuts < 1) return EL_OK;
    // A single cut may equal the layer count: everything runs here, the link only idles.
    int last = ts->o.cuts[ts->o.n_cuts - 1];
    if (last > m->hp.n_layers || (last == m->hp.n_layers && ts->o.n_cuts > 1))
        return el_err(err, EL_ERR_ARG, "--split: cut %d is not below the model's %d layers",
                      ts->o.cuts[ts->o.n_cuts - 1], m->hp.n_layers);
    return EL_OK;
}

// --lora FILE[:SCALE]: the scale is taken only when what follows the last ':'
// is a number, so paths with colons still work.
int tool_parse_lora_arg(const char *arg, char *path, size_t cap, float *scale) {
    const char *colon = strrchr(arg, ':');
    *scale = 1.0f;
    if (colon) {
        char *end;
        double s = strtod(colon + 1, &end);
        if (end != colon + 1 && !*end) {
            if (!(s > -1e6 && s < 1e6)) return 0;
            *scale = (float)s;
            snprintf(path, cap, "%.*s", (int)(colon - arg), arg);
            return 1;
        }
    }
    snprintf(path, cap, "%s", arg);
    return 1;
}

int tool_sampler_option(cli *c, const char *a, el_sampler_params *sp, int *have_seed) {
    if (cli_is(a, NULL, "--temp")) cli_float(c, a, 0, 100, &sp->temp);
    else if (cli_is(a, NULL, "--top-k")) cli_int(c, a, 0, 1 << 24, &sp->top_k);
    else if (cli_is(a, NULL, "--top-p")) cli_float(c, a, 1e-6, 1, &sp->top_p);
    else if (cli_is(a, NULL, "--min-p")) cli_float(c, a, 0, 0.999999, &sp->min_p);
    else if (cli_is(a, NULL, "--repeat-penalty")) cli_float(c, a, 1e-3, 100, &sp->repeat_penalty);
    else if (cli_is(a, NULL, "--repeat-last-n")) cli_int(c, a, 0, 1 << 20, &sp->repeat_last_n);
    else if (cli_is(a, "-s", "--seed")) *have_seed = cli_u64(c, a, &sp->seed);
    else return 0;
    return 1;
}

int tool_kv_option(cli *c, const char *a, int *kv_type) {
    if (!cli_is(a, NULL, "--kv-type")) return 0;
    const char *v = cli_str(c, a);
    if (!v) return 1;
    if (!strcmp(v, "f32")) *kv_type = EL_DTYPE_F32;
    else if (!strcmp(v, "f16")) *kv_type = EL_DTYPE_F16;
    else if (!strcmp(v, "q8_0")) *kv_type = EL_DTYPE_Q8_0;
    else cli_fail(c, "--kv-type '%s': use f32, f16 or q8_0", v);
    return 1;
}

int tool_lora_option(cli *c, const char *a, tool_loras *l) {
    if (!cli_is(a, NULL, "--lora")) return 0;
    const char *v = cli_str(c, a);
    if (!v) return 1;
    if (l->n == EL_LORA_MAX_SET) {
        cli_fail(c, "at most %d --lora adapters", EL_LORA_MAX_SET);
        return 1;
    }
    if (!tool_parse_lora_arg(v, l->paths[l->n], sizeof l->paths[l->n], &l->set.scale[l->n])) {
        cli_fail(c, "--lora '%s': the scale is not a number", v);
        return 1;
    }
    l->n++;
    return 1;
}

el_status tool_loras_load(tool_loras *l, const el_model *m, el_error *err) {
    for (int i = 0; i < l->n; i++) {
        el_status st = el_lora_load(l->paths[i], m, &l->loras[i], err);
        if (st) return st;
        l->set.lora[l->set.n++] = l->loras[i];
    }
    return EL_OK;
}

void tool_loras_free(tool_loras *l) {
    for (int i = 0; i < l->n; i++) el_lora_free(l->loras[i]);
    l->set.n = 0;
}

// ---------------------------------------------------------------- --draft

static int parse_int_in(const char *v, long lo, long hi, int *out) {
    char *end;
    long x = strtol(v, &end, 10);
    if (end == v || *end || x < lo || x > hi) return 0;
    *out = (int)x;
    return 1;
}

int tool_draft_option(cli *c, const char *a, tool_draft *d) {
    if (cli_is(a, NULL, "--draft")) {
        const char *v = cli_str(c, a);
        if (!v) return 1;
        d->arg = v;
        d->self_layers = 0;
        if (!strncmp(v, "self:", 5) && !parse_int_in(v + 5, 1, 1 << 20, &d->self_layers))
            cli_fail(c, "--draft self:L: '%s' is not a layer count L >= 1", v + 5);
    } else if (cli_is(a, NULL, "--draft-k")) {
        const char *v = cli_str(c, a);
        if (v && !strcmp(v, "auto")) d->k = 0;
        else if (v && !parse_int_in(v, 1, EL_SPEC_MAX_K, &d->k))
            cli_fail(c, "--draft-k: '%s' is not auto or a number of tokens in 1..%d", v, EL_SPEC_MAX_K);
    } else {
        return 0;
    }
    return 1;
}

el_status tool_draft_load(tool_draft *d, const el_model *target, int ctx, el_pool *pool, el_error *err) {
    if (!d->arg) return EL_OK;
    if (d->self_layers > target->hp.n_layers)
        return el_err(err, EL_ERR_ARG, "--draft self:%d: %s has %d layers", d->self_layers, target->path,
                      target->hp.n_layers);
    if (!d->self_layers) {
        el_model_opts o = {.threads = el_pool_size(pool)};  // striped for the pool that decodes it
        el_status st = el_model_open(d->arg, &o, &d->m, err);
        if (st) return st;
        if (d->m->hp.vocab != target->hp.vocab)
            return el_err(err, EL_ERR_ARG, "--draft %s has a vocabulary of %d tokens, the model %s has %d: a draft "
                          "must share the model's tokenizer", d->arg, d->m->hp.vocab, target->path, target->hp.vocab);
    }
    return el_drafter_new(d->m ? d->m : target, d->self_layers, ctx, pool, &d->d, err);
}

void tool_draft_free(tool_draft *d) {
    el_drafter_free(d->d);
    el_model_close(d->m);
    d->d = NULL;
    d->m = NULL;
}

// ---------------------------------------------------------------- routes

// Asks the controller for the workers serving our model from our cut, and
// takes the one whose measured round trip plus the controller's load
// estimate is the least.
static el_status route(tool_split *ts, el_error *err) {
    el_link_security csec = ts->o.sec;
    csec.server_key = ts->controller_key;
    el_route r;
    int cut = ts->autoplan ? -1 : ts->o.cuts[0];
    el_status st = el_route_ask(ts->controller, &csec, ts->model_name, cut, (const char *const *)ts->excluded,
                                ts->n_excluded, ts->o.timeout_ms > 0 ? ts->o.timeout_ms : 30000, &r, err);
    if (st) return st;
    int best = -1;
    double best_cost = 0, best_rtt = 0;
    for (int i = 0; i < r.n; i++) {
        el_link_security wsec = ts->o.sec;
        wsec.server_key = r.cand[i].public_key;
        el_link *l;
        el_error e;
        if (el_link_connect(r.cand[i].endpoint, &wsec, 2000, &l, &e)) {
            fprintf(stderr, "edgellm: route candidate %s: %s\n", r.cand[i].worker, e.msg);
            continue;
        }
        // the round trip of a small request, the best of three
        double rtt = 1e9;
        el_buf tx = {0}, rx = {0};
        for (uint32_t k = 1; k <= 3; k++) {
            double t0 = el_time_s();
            if (el_wire_encode_ping(&tx, EL_MSG_PING, k, "route", 5) || el_link_request(l, tx.data, tx.len, k, &rx, 2000, &e))
                break;
            double dt = (el_time_s() - t0) * 1000;
            if (dt < rtt) rtt = dt;
        }
        el_buf_free(&tx);
        el_buf_free(&rx);
        el_link_close(l);
        if (rtt >= 1e9) continue;
        double cost = rtt + r.cand[i].cost_ms;
        if (best < 0 || cost < best_cost) {
            best = i;
            best_cost = cost;
            best_rtt = rtt;
        }
    }
    if (best < 0)
        return el_err(err, EL_ERR_IO, "controller %s: none of the %d workers it offered for %s answered", ts->controller,
                      r.n, ts->model_name);
    snprintf(ts->route_via, sizeof ts->route_via, "%s", r.cand[best].endpoint);
    memcpy(ts->server_key, r.cand[best].public_key, sizeof ts->server_key);
    ts->o.via = ts->route_via;
    ts->o.sec.server_key = ts->o.sec.insecure ? NULL : ts->server_key;
    fprintf(stderr, "edgellm: route: worker %s at %s (layers %d:%d, round trip %.2f ms, load %.2f ms; %d offered)\n",
            r.cand[best].worker, r.cand[best].endpoint, r.cand[best].layer_begin, r.cand[best].layer_end, best_rtt,
            r.cand[best].cost_ms, r.n);
    return EL_OK;
}

static el_status reroute(void *ctx, const char *failed, const char **via, const char **server_key, el_error *err) {
    tool_split *ts = ctx;
    if (ts->n_excluded < (int)(sizeof ts->excluded / sizeof *ts->excluded)) {
        char *f = strdup(failed);
        if (!f) return el_err(err, EL_ERR_NOMEM, "out of memory");
        ts->excluded[ts->n_excluded++] = f;
    }
    el_status st = route(ts, err);
    if (st) return st;
    *via = ts->o.via;
    *server_key = ts->o.sec.server_key;
    return EL_OK;
}

el_status tool_split_route(tool_split *ts, const char *model_path, el_error *err) {
    if (!ts->controller) return EL_OK;
    static char name[256];
    if (!ts->model_name) {
        const char *b = strrchr(model_path, '/');
        snprintf(name, sizeof name, "%s", b ? b + 1 : model_path);
        char *dot = strrchr(name, '.');
        if (dot && dot != name) *dot = 0;
        ts->model_name = name;
    }
    ts->o.reroute = reroute;
    ts->o.reroute_ctx = ts;
    return route(ts, err);
}

void tool_split_free(tool_split *ts) {
    for (int i = 0; i < ts->n_excluded; i++) free(ts->excluded[i]);
    ts->n_excluded = 0;
}
