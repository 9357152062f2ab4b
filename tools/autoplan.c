// --split auto: profiles of the device and the edge, a probe of the live
// link, the planner's choice of cut, and re-planning while generating.
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "autoplan.h"

static void scale(el_profile *p, double f) {
    for (int l = 0; l < p->n_layers; l++) {
        p->prefill_s[l] *= f;
        for (int c = 0; c < p->n_ctx; c++) p->decode_s[l * p->n_ctx + c] *= f;
    }
    p->embed_s *= f;
    p->head_s *= f;
}

static el_status copy_profile(const el_profile *src, el_profile *dst, el_error *err) {
    *dst = *src;
    size_t L = (size_t)src->n_layers;
    dst->decode_s = malloc(L * src->n_ctx * sizeof(double));
    dst->prefill_s = malloc(L * sizeof(double));
    dst->weight_bytes = malloc(L * sizeof(size_t));
    if (!dst->decode_s || !dst->prefill_s || !dst->weight_bytes) {
        el_profile_free(dst);
        return el_err(err, EL_ERR_NOMEM, "out of memory");
    }
    memcpy(dst->decode_s, src->decode_s, L * src->n_ctx * sizeof(double));
    memcpy(dst->prefill_s, src->prefill_s, L * sizeof(double));
    memcpy(dst->weight_bytes, src->weight_bytes, L * sizeof(size_t));
    return EL_OK;
}

el_status tool_auto_init(tool_auto *a, tool_split *ts, const el_model *m, el_pool *pool, int ctx, el_error *err) {
    memset(a, 0, sizeof *a);
    a->ts = ts;
    el_status st;
    el_profile measured;
    int have_measured = 0;
    if (!ts->device_profile || !ts->edge_profile) {
        // Measured profiles are cached per model identity and thread count.
        char cache[4096] = "";
        const char *base = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
        if (base || home) {
            snprintf(cache, sizeof cache, "%s%s/edgellm", base ? base : home, base ? "" : "/.cache");
            char *slash = cache;
            while ((slash = strchr(slash + 1, '/'))) {  // mkdir -p
                *slash = 0;
                mkdir(cache, 0755);
                *slash = '/';
            }
            mkdir(cache, 0755);
            size_t n = strlen(cache);
            snprintf(cache + n, sizeof cache - n, "/profile-%016llx-t%d.json",
                     (unsigned long long)el_model_identity(m, 0, m->hp.n_layers), el_pool_size(pool));
        }
        if (cache[0] && el_profile_load(cache, &measured, NULL) == EL_OK && measured.n_layers == m->hp.n_layers) {
            fprintf(stderr, "edgellm: using the cached profile %s\n", cache);
        } else {
            el_profile_opts po = {.reps = 3, .prefill_batch = 32, .progress = stderr, .n_ctx = 3};
            po.ctx[0] = 16;
            po.ctx[1] = ctx / 4 > 17 ? ctx / 4 : 17;
            po.ctx[2] = ctx / 2 > po.ctx[1] ? ctx / 2 : po.ctx[1] + 1;
            if ((st = el_profile_measure(m, pool, &po, &measured, err))) return st;
            if (cache[0] && el_profile_save(&measured, cache, NULL) == EL_OK)
                fprintf(stderr, "edgellm: profile cached in %s\n", cache);
        }
        have_measured = 1;
    }
    st = ts->device_profile ? el_profile_load(ts->device_profile, &a->dev, err) : copy_profile(&measured, &a->dev, err);
    if (!st && !ts->device_profile && ts->o.slowdown > 1) scale(&a->dev, ts->o.slowdown);
    if (!st) st = ts->edge_profile ? el_profile_load(ts->edge_profile, &a->edge, err) : copy_profile(&measured, &a->edge, err);
    if (have_measured) el_profile_free(&measured);
    if (st) {
        el_profile_free(&a->dev);
        return st;
    }
    if (a->dev.n_layers != m->hp.n_layers || a->edge.n_layers != m->hp.n_layers) {
        tool_auto_free(a);
        return el_err(err, EL_ERR_ARG, "the profiles describe a model of %d/%d layers, %s has %d", a->dev.n_layers,
                      a->edge.n_layers, m->path, m->hp.n_layers);
    }
    return EL_OK;
}

void tool_auto_free(tool_auto *a) {
    el_profile_free(&a->dev);
    el_profile_free(&a->edge);
}

el_status tool_auto_replan(tool_auto *a, el_pipeline *p, const int *tokens, int n_pos, int initial, el_error *err) {
    tool_split *ts = a->ts;
    el_link *l = el_pipeline_link(p);
    if (!l) return el_err(err, EL_ERR_STATE, "no link to probe");
    el_link_profile lp;
    size_t act = el_dtype_row_size(ts->o.act_dtype, a->dev.dim);
    size_t down = ts->o.ushape ? act : (size_t)a->dev.vocab * 4;
    el_status st = el_link_probe(l, act + 36, down + 52, &lp, err);
    if (st) return st;
    el_plan_opts po = {.device = &a->dev, .edge = &a->edge, .link = lp, .ctx = n_pos > 16 ? n_pos : 16,
                       .prompt_tokens = n_pos > 0 ? n_pos : 1, .device_mem = ts->device_mem,
                       .objective = EL_OBJ_LATENCY, .n_acts = 1, .allow_ushape = ts->o.ushape};
    po.acts[0] = ts->o.act_dtype;
    int L = a->dev.n_layers, max_rows = (L + 1) * 2;
    el_plan_row *rows = calloc((size_t)max_rows, sizeof *rows);
    if (!rows) return el_err(err, EL_ERR_NOMEM, "out of memory");
    int n = el_plan(&po, rows, max_rows), cur = el_pipeline_cut(p);
    const el_plan_row *best = NULL, *now = NULL;
    for (int i = 0; i < n; i++) {
        if (rows[i].cut < L && rows[i].ushape != ts->o.ushape) continue;  // the user chose U-shape or not
        if (!best && rows[i].fits) best = &rows[i];
        if (rows[i].cut == cur && !now) now = &rows[i];
    }
    a->last_link = lp;
    if (best) a->predicted_s = best->decode_s;
    if (best && best->cut != cur && (initial || !now || now->decode_s - best->decode_s > ts->replan_gain * now->decode_s)) {
        fprintf(stderr,
                "edgellm: link rtt %.2f ms, up %.1f Mbit/s, down %.1f Mbit/s: %s cut %d%s -> %d (predicted %.2f -> %.2f "
                "ms/token)\n",
                lp.rtt_s * 1e3, lp.up_bps / 1e6, lp.down_bps / 1e6, initial ? "choosing" : "moving", cur,
                cur == L ? " (all local)" : "", best->cut, now ? now->decode_s * 1e3 : 0.0, best->decode_s * 1e3);
        st = el_pipeline_recut(p, best->cut, tokens, n_pos, err);
        a->moves += !initial;
        if (best->cut != cur) a->predicted_s = best->decode_s;
    } else if (initial || (best && ts->o.log)) {
        fprintf(stderr, "edgellm: link rtt %.2f ms, up %.1f Mbit/s, down %.1f Mbit/s: keeping cut %d (predicted %.2f ms/token)\n",
                lp.rtt_s * 1e3, lp.up_bps / 1e6, lp.down_bps / 1e6, cur, now ? now->decode_s * 1e3 : 0.0);
        if (now) a->predicted_s = now->decode_s;
    }
    free(rows);
    return st;
}
