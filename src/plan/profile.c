// Per-layer cost profiles: each layer is timed on its own session, for decode
// at several context lengths and for batched prefill, so that a planner can
// add up the cost of any contiguous range on any node.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "edgellm/json.h"
#include "edgellm/plan.h"
#include "edgellm/sample.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static size_t mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    size_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %zu kB", &kb) == 1) break;
    fclose(f);
    return kb * 1024;
}

el_status el_profile_measure(const el_model *m, el_pool *pool, const el_profile_opts *o, el_profile *p,
                             el_error *err) {
    memset(p, 0, sizeof *p);
    const el_hparams *h = &m->hp;
    if (m->layer_begin != 0 || m->layer_end != h->n_layers || !m->has_embed || !m->has_head)
        return el_err(err, EL_ERR_ARG, "%s: profiling needs the whole model bound", m->path);
    gethostname(p->node, sizeof p->node - 1);
    snprintf(p->model, sizeof p->model, "%s", m->path);
    p->threads = el_pool_size(pool);
    p->n_layers = h->n_layers;
    p->dim = h->dim;
    p->vocab = h->vocab;
    p->n_kv_heads = h->n_kv_heads;
    p->head_dim = h->head_dim;
    p->n_ctx = o->n_ctx;
    int max_ctx = 1;
    for (int i = 0; i < o->n_ctx; i++) {
        p->ctx[i] = o->ctx[i] < h->ctx ? o->ctx[i] : h->ctx - 1;
        if (p->ctx[i] + 1 > max_ctx) max_ctx = p->ctx[i] + 1;
    }
    p->prefill_batch = o->prefill_batch < max_ctx ? o->prefill_batch : max_ctx;
    if (p->prefill_batch < 1) p->prefill_batch = 1;
    int reps = o->reps > 0 ? o->reps : 5;
    p->decode_s = calloc((size_t)h->n_layers * o->n_ctx, sizeof(double));
    p->prefill_s = calloc((size_t)h->n_layers, sizeof(double));
    p->weight_bytes = calloc((size_t)h->n_layers, sizeof(size_t));
    int B = p->prefill_batch > 64 ? p->prefill_batch : 64;
    float *x = calloc((size_t)B * h->dim, sizeof(float));
    float *logits = calloc((size_t)h->vocab, sizeof(float));
    double *t = calloc((size_t)reps, sizeof(double));
    if (!p->decode_s || !p->prefill_s || !p->weight_bytes || !x || !logits || !t) {
        free(x), free(logits), free(t);
        el_profile_free(p);
        return el_err(err, EL_ERR_NOMEM, "out of memory");
    }
    p->kv_bytes_per_pos = 2 * (size_t)h->n_kv_heads * h->head_dim * sizeof(float);
    p->embed_bytes = m->tok_embd.nbytes;
    p->head_bytes = m->output_norm.nbytes + (h->tied_output ? 0 : m->output.nbytes);
    p->mem_budget = mem_available();
    uint64_t rng = 12345;
    el_progress prog;
    el_progress_begin(&prog, o->progress, "profile", 0, "sweeps");
    el_status st = EL_OK;
    // One session per layer, all alive at once, and every measurement sweeps
    // the layers in order: each layer then runs with the cache state of a
    // real forward pass (the other layers' weights have evicted its own),
    // rather than timing one layer whose weights stay cached between reps.
    el_session **ss = calloc((size_t)h->n_layers, sizeof *ss);
    double *tl = calloc((size_t)h->n_layers * reps, sizeof(double)), th[16];
    el_session *head_sess = NULL;
    el_session_opts hso = {.no_layers = 1, .ctx = 8, .max_batch = 1};
    if (reps > 16) reps = 16;
    if (!ss || !tl) st = el_err(err, EL_ERR_NOMEM, "out of memory");
    if (!st) st = el_session_new(m, &hso, pool, &head_sess, err);
    for (int l = 0; l < h->n_layers && !st; l++) {
        p->weight_bytes[l] = el_model_weight_bytes(m, l, l + 1, 0, 0);
        el_session_opts so = {.layer_begin = l, .layer_end = l + 1, .ctx = max_ctx, .max_batch = B};
        if ((st = el_session_new(m, &so, pool, &ss[l], err))) break;
        // Fill the cache with plausible activations (unit-scale noise).
        for (int done = 0; done < max_ctx - 1 && !st; done += B) {
            int n = max_ctx - 1 - done < B ? max_ctx - 1 - done : B;
            for (size_t i = 0; i < (size_t)n * h->dim; i++) x[i] = (float)((el_rng_next(&rng) >> 40) / 8388608.0 - 1.0);
            st = el_session_layers(ss[l], x, n, done, err);
        }
    }
    uint64_t total = (uint64_t)(o->n_ctx + 1) * (uint64_t)reps, done_sweeps = 0;
    prog.total = total;
    prog.unit = "sweeps";
    for (int c = 0; c <= o->n_ctx && !st; c++) {  // c == n_ctx: prefill
        int n = c < o->n_ctx ? 1 : p->prefill_batch, pos = c < o->n_ctx ? p->ctx[c] : 0;
        for (int r = 0; r < reps && !st; r++) {
            for (int l = 0; l < h->n_layers && !st; l++) {
                uint64_t t0 = el_time_ns();
                st = el_session_layers(ss[l], x, n, pos, err);  // rewrites positions pos..pos+n-1
                tl[l * reps + r] = (el_time_ns() - t0) * 1e-9 / n;
            }
            if (c == 0 && !st) {  // the head, after a sweep, as in a real decode step
                uint64_t t0 = el_time_ns();
                st = el_session_head(head_sess, x, 1, 1, logits, err);
                th[r] = (el_time_ns() - t0) * 1e-9;
            }
            el_progress_update(&prog, ++done_sweeps, NULL);
        }
        if (c == 0 && !st) p->head_s = median(th, reps);
        for (int l = 0; l < h->n_layers && !st; l++) {
            double v = median(tl + l * reps, reps);
            if (c < o->n_ctx) p->decode_s[l * o->n_ctx + c] = v;
            else p->prefill_s[l] = v;
        }
    }
    for (int l = 0; ss && l < h->n_layers; l++) el_session_free(ss[l]);
    el_session_free(head_sess);
    free(ss);
    free(tl);
    if (!st) {
        // embedding and head, per token
        el_session *s;
        el_session_opts so = {.no_layers = 1, .ctx = 8, .max_batch = 1};
        if (!(st = el_session_new(m, &so, pool, &s, err))) {
            int tok = 1;
            for (int r = 0; r < reps; r++) {
                uint64_t t0 = el_time_ns();
                el_session_embed(s, &tok, 1, x, NULL);
                t[r] = (el_time_ns() - t0) * 1e-9;
            }
            p->embed_s = median(t, reps);
            el_session_free(s);
        }
    }
    el_progress_end(&prog, prog.total, NULL);
    free(x);
    free(logits);
    free(t);
    if (st) el_profile_free(p);
    return st;
}

void el_profile_free(el_profile *p) {
    if (!p) return;
    free(p->decode_s);
    free(p->prefill_s);
    free(p->weight_bytes);
    p->decode_s = p->prefill_s = NULL;
    p->weight_bytes = NULL;
}

double el_profile_decode(const el_profile *p, int layer, int c) {
    const double *d = p->decode_s + (size_t)layer * p->n_ctx;
    if (p->n_ctx == 1 || c <= p->ctx[0]) return d[0];
    for (int i = 1; i < p->n_ctx; i++)
        if (c <= p->ctx[i]) {
            double f = (double)(c - p->ctx[i - 1]) / (p->ctx[i] - p->ctx[i - 1]);
            return d[i - 1] + f * (d[i] - d[i - 1]);
        }
    // beyond the last measurement: extrapolate from the last two (attention grows linearly)
    int a = p->n_ctx - 2, b = p->n_ctx - 1;
    double slope = (d[b] - d[a]) / (p->ctx[b] - p->ctx[a]);
    return d[b] + slope * (c - p->ctx[b]);
}

// ---------------------------------------------------------------- JSON

el_status el_profile_save(const el_profile *p, const char *path, el_error *err) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return el_err(err, EL_ERR_NOMEM, "out of memory");
    fprintf(f, "{\n  \"format\": \"edgellm-profile-1\",\n  \"node\": ");
    el_json_write_str(f, p->node);
    fprintf(f, ",\n  \"model\": ");
    el_json_write_str(f, p->model);
    fprintf(f, ",\n  \"threads\": %d,\n  \"n_layers\": %d,\n  \"dim\": %d,\n  \"vocab\": %d,\n", p->threads,
            p->n_layers, p->dim, p->vocab);
    fprintf(f, "  \"n_kv_heads\": %d,\n  \"head_dim\": %d,\n  \"prefill_batch\": %d,\n", p->n_kv_heads, p->head_dim,
            p->prefill_batch);
    fprintf(f, "  \"mem_budget_bytes\": %zu,\n  \"kv_bytes_per_pos_per_layer\": %zu,\n", p->mem_budget,
            p->kv_bytes_per_pos);
    fprintf(f, "  \"embed_s\": %.9g,\n  \"head_s\": %.9g,\n  \"embed_bytes\": %zu,\n  \"head_bytes\": %zu,\n",
            p->embed_s, p->head_s, p->embed_bytes, p->head_bytes);
    fprintf(f, "  \"decode_ctx\": [");
    for (int i = 0; i < p->n_ctx; i++) fprintf(f, i ? ", %d" : "%d", p->ctx[i]);
    fprintf(f, "],\n  \"layers\": [\n");
    for (int l = 0; l < p->n_layers; l++) {
        fprintf(f, "    {\"layer\": %d, \"weight_bytes\": %zu, \"prefill_s_per_token\": %.9g, \"decode_s\": [", l,
                p->weight_bytes[l], p->prefill_s[l]);
        for (int i = 0; i < p->n_ctx; i++) fprintf(f, i ? ", %.9g" : "%.9g", p->decode_s[l * p->n_ctx + i]);
        fprintf(f, "]}%s\n", l + 1 < p->n_layers ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
    fclose(f);
    el_status st = el_write_file_atomic(path, buf, len, err);
    free(buf);
    return st;
}

static el_status need_int(const el_json *root, const char *key, const char *path, int lo, int hi, int *out, el_error *err) {
    const el_json *v = el_json_get(root, key);
    double d = el_json_num(v, NAN);
    if (!(d >= lo && d <= hi) || d != (int)d)
        return el_err(err, EL_ERR_FORMAT, "%s: \"%s\" must be an integer in %d..%d", path, key, lo, hi);
    *out = (int)d;
    return EL_OK;
}

static el_status need_num(const el_json *j, const char *key, const char *path, double *out, el_error *err) {
    const el_json *v = el_json_get(j, key);
    double d = el_json_num(v, -1);
    if (d < 0) return el_err(err, EL_ERR_FORMAT, "%s: \"%s\" must be a non-negative number", path, key);
    *out = d;
    return EL_OK;
}

el_status el_profile_load(const char *path, el_profile *p, el_error *err) {
    memset(p, 0, sizeof *p);
    char *text;
    size_t len;
    el_status st = el_read_file(path, 16u << 20, &text, &len, err);
    if (st) return st;
    el_json *root;
    st = el_json_parse(text, len, path, &root, err);
    free(text);
    if (st) return st;
    const char *fmt = el_json_str(el_json_get(root, "format"));
    double d;
    if (!fmt || strcmp(fmt, "edgellm-profile-1")) {
        st = el_err(err, EL_ERR_FORMAT, "%s: not an edgellm profile (format \"%s\")", path, fmt ? fmt : "?");
        goto out;
    }
    if ((st = need_int(root, "n_layers", path, 1, 4096, &p->n_layers, err)) ||
        (st = need_int(root, "dim", path, 1, 1 << 20, &p->dim, err)) ||
        (st = need_int(root, "vocab", path, 1, 1 << 24, &p->vocab, err)) ||
        (st = need_int(root, "threads", path, 1, 4096, &p->threads, err)) ||
        (st = need_int(root, "prefill_batch", path, 1, 1 << 20, &p->prefill_batch, err)))
        goto out;
    need_int(root, "n_kv_heads", path, 1, 4096, &p->n_kv_heads, NULL);
    need_int(root, "head_dim", path, 1, 1 << 16, &p->head_dim, NULL);
    if ((st = need_num(root, "embed_s", path, &p->embed_s, err)) || (st = need_num(root, "head_s", path, &p->head_s, err)))
        goto out;
    if (!need_num(root, "mem_budget_bytes", path, &d, NULL)) p->mem_budget = (size_t)d;
    if (!need_num(root, "kv_bytes_per_pos_per_layer", path, &d, NULL)) p->kv_bytes_per_pos = (size_t)d;
    if (!need_num(root, "embed_bytes", path, &d, NULL)) p->embed_bytes = (size_t)d;
    if (!need_num(root, "head_bytes", path, &d, NULL)) p->head_bytes = (size_t)d;
    snprintf(p->node, sizeof p->node, "%s", el_json_str(el_json_get(root, "node")) ? el_json_str(el_json_get(root, "node")) : "?");
    snprintf(p->model, sizeof p->model, "%s", el_json_str(el_json_get(root, "model")) ? el_json_str(el_json_get(root, "model")) : "?");
    const el_json *ctx = el_json_get(root, "decode_ctx");
    if (!el_json_is(ctx, EL_JSON_ARRAY) || el_json_len(ctx) < 1 || el_json_len(ctx) > EL_PROFILE_MAX_CTX) {
        st = el_err(err, EL_ERR_FORMAT, "%s: \"decode_ctx\" must be an array of 1..%d context lengths", path, EL_PROFILE_MAX_CTX);
        goto out;
    }
    p->n_ctx = (int)el_json_len(ctx);
    const el_json *cv = el_json_first(ctx);
    for (int i = 0; i < p->n_ctx; i++, cv = el_json_next(ctx, cv)) {
        double c = el_json_num(cv, -1);
        if (c < 1 || c > (1 << 24) || (i && c <= p->ctx[i - 1])) {
            st = el_err(err, EL_ERR_FORMAT, "%s: decode_ctx[%d] is not an increasing positive length", path, i);
            goto out;
        }
        p->ctx[i] = (int)c;
    }
    const el_json *layers = el_json_get(root, "layers");
    if (!el_json_is(layers, EL_JSON_ARRAY) || el_json_len(layers) != (size_t)p->n_layers) {
        st = el_err(err, EL_ERR_FORMAT, "%s: \"layers\" must list %d layers", path, p->n_layers);
        goto out;
    }
    p->decode_s = calloc((size_t)p->n_layers * p->n_ctx, sizeof(double));
    p->prefill_s = calloc((size_t)p->n_layers, sizeof(double));
    p->weight_bytes = calloc((size_t)p->n_layers, sizeof(size_t));
    if (!p->decode_s || !p->prefill_s || !p->weight_bytes) {
        st = el_err(err, EL_ERR_NOMEM, "out of memory");
        goto out;
    }
    const el_json *L = el_json_first(layers);
    for (int l = 0; l < p->n_layers; l++, L = el_json_next(layers, L)) {
        char where[64];
        snprintf(where, sizeof where, "layers[%d]", l);
        const el_json *dec = el_json_get(L, "decode_s");
        if ((st = need_num(L, "prefill_s_per_token", path, &p->prefill_s[l], err)) ||
            (st = need_num(L, "weight_bytes", path, &d, err)))
            goto out;
        p->weight_bytes[l] = (size_t)d;
        if (!el_json_is(dec, EL_JSON_ARRAY) || el_json_len(dec) != (size_t)p->n_ctx) {
            st = el_err(err, EL_ERR_FORMAT, "%s: %s.decode_s must have %d entries", path, where, p->n_ctx);
            goto out;
        }
        const el_json *dv = el_json_first(dec);
        for (int i = 0; i < p->n_ctx; i++, dv = el_json_next(dec, dv)) {
            double v = el_json_num(dv, -1);
            if (v < 0) {
                st = el_err(err, EL_ERR_FORMAT, "%s: %s.decode_s[%d] is not a non-negative number", path, where, i);
                goto out;
            }
            p->decode_s[l * p->n_ctx + i] = v;
        }
    }
out:
    el_json_free(root);
    if (st) el_profile_free(p);
    return st;
}
