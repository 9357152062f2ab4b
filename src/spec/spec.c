// Speculative decoding across the split: the draft proposes, the target's
// pipeline verifies k+1 rows in one forward (one FORWARD message when split,
// batched on the worker with every other device's rows), rejected positions
// are rewritten by the next round (a FORWARD at an earlier position drops the
// tail: docs/protocol.md).
#include "edgellm/spec.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------- the draft

struct el_drafter {
    const el_model *m;
    el_session *s;
    int pos;  // positions of the draft's cache that hold committed tokens
};

el_status el_drafter_new(const el_model *m, int layers, int ctx, el_pool *pool, el_drafter **out, el_error *err) {
    *out = NULL;
    const el_hparams *h = &m->hp;
    if (layers < 0 || layers > h->n_layers)
        return el_err(err, EL_ERR_ARG, "%s: a draft of %d layers, the model has %d", m->path, layers, h->n_layers);
    int end = layers ? layers : h->n_layers;
    if (!m->has_embed || !m->has_head || m->layer_begin != 0 || m->layer_end < end)
        return el_err(err, EL_ERR_ARG, "%s: the draft needs the embedding, layers 0:%d and the head on this device",
                      m->path, end);
    el_drafter *d = calloc(1, sizeof *d);
    if (!d) return el_err(err, EL_ERR_NOMEM, "out of memory");
    d->m = m;
    el_session_opts so = {.layer_begin = 0, .layer_end = end, .ctx = ctx};
    el_status st = el_session_new(m, &so, pool, &d->s, err);
    if (st) {
        free(d);
        return st;
    }
    *out = d;
    return EL_OK;
}

void el_drafter_free(el_drafter *d) {
    if (!d) return;
    el_session_free(d->s);
    free(d);
}

// ---------------------------------------------------------------- choosing k

double el_spec_expected_tokens(double alpha, int k) {
    if (alpha >= 1.0) return k + 1;
    if (alpha <= 0.0) return 1;
    return (1.0 - pow(alpha, k + 1)) / (1.0 - alpha);
}

double el_spec_predict(const el_spec_cost *c, int k) {
    double t = k * c->draft_s + c->verify_fixed_s + c->verify_row_s * (k + 1);
    return t > 0 ? el_spec_expected_tokens(c->alpha, k) / t : 0;
}

int el_spec_best_k(const el_spec_cost *c, int max_k, double *tps) {
    int best = 1;
    double best_tps = el_spec_predict(c, 1);
    for (int k = 2; k <= max_k; k++) {
        double t = el_spec_predict(c, k);
        if (t > best_tps * (1 + 1e-9)) best = k, best_tps = t;  // ties: the smaller k (less wasted work)
    }
    if (tps) *tps = best_tps;
    return best;
}

// ---------------------------------------------------------------- one position

int el_spec_accept(el_sampler *target, int n_vocab, const float *p, const float *q, int drafted, float *residual,
                   int *accepted) {
    // accept with probability min(1, p/q): u < p/q, written without dividing
    float u = el_sampler_uniform(target);
    if (q[drafted] > 0 && u * q[drafted] < p[drafted]) {
        *accepted = 1;
        return drafted;
    }
    *accepted = 0;
    double sum = 0;
    for (int i = 0; i < n_vocab; i++) {
        float r = p[i] - q[i];
        residual[i] = r > 0 ? r : 0;
        sum += residual[i];
    }
    // p == q leaves nothing (a rejection then has probability 0 but rounding
    // can produce it): p itself is the right distribution
    return el_sampler_draw(target, sum > 0 ? residual : p);
}

// ---------------------------------------------------------------- generation

struct el_spec {
    el_pipeline *target;
    const el_model *tm;
    el_drafter *d;
    el_spec_opts o;
    el_sampler *ts, *ds;  // the target's sampler and the draft's
    int vocab, ctx;
    int *hist;     // [ctx + 1] committed tokens
    int n;         // how many
    float *logits;  // [EL_SPEC_MAX_K + 1][vocab]: the target's rows of a round
    float *dlogits; // [vocab]
    float *q;       // [EL_SPEC_MAX_K][vocab]: the draft's distributions
    float *p, *res; // [vocab]
    int rows[EL_SPEC_MAX_K + 1];
    // the cost model's running estimates: draft time per forward, and a
    // least-squares line through (rows, verify time) with forgetting
    double draft_ema;
    double sw, sx, sy, sxx, sxy;
    int rows_seen_lo, rows_seen_hi;  // distinct row counts measured (a line needs two)
    el_spec_stats st;
};

el_status el_spec_new(el_pipeline *target, const el_model *tm, el_drafter *draft, const el_spec_opts *o, el_spec **out,
                      el_error *err) {
    *out = NULL;
    if (draft->m->hp.vocab != tm->hp.vocab)
        return el_err(err, EL_ERR_ARG, "draft %s has a vocabulary of %d tokens, the target %s has %d: a draft must "
                      "share the target's tokenizer", draft->m->path, draft->m->hp.vocab, tm->path, tm->hp.vocab);
    if (o->k < 0 || o->k > EL_SPEC_MAX_K || o->max_k < 0 || o->max_k > EL_SPEC_MAX_K)
        return el_err(err, EL_ERR_ARG, "--draft-k %d is outside 1..%d", o->k ? o->k : o->max_k, EL_SPEC_MAX_K);
    el_status st = el_sampler_check(&o->sp, err);
    if (st) return st;
    el_spec *s = calloc(1, sizeof *s);
    if (!s) return el_err(err, EL_ERR_NOMEM, "out of memory");
    s->target = target;
    s->tm = tm;
    s->d = draft;
    s->o = *o;
    if (!s->o.max_k) s->o.max_k = 8;
    s->vocab = tm->hp.vocab;
    s->ctx = el_session_ctx(el_pipeline_session(target));
    if (el_session_ctx(draft->s) < s->ctx) s->ctx = el_session_ctx(draft->s);
    el_sampler_params dp = o->sp;
    dp.seed = o->sp.seed ^ 0xD1B54A32D192ED03ULL;  // the draft draws from its own stream
    s->ts = el_sampler_new(&o->sp, s->vocab);
    s->ds = el_sampler_new(&dp, s->vocab);
    size_t V = (size_t)s->vocab;
    s->hist = malloc(((size_t)s->ctx + 1) * sizeof(int));
    s->logits = malloc((EL_SPEC_MAX_K + 1) * V * sizeof(float));
    s->dlogits = malloc(V * sizeof(float));
    s->q = malloc(EL_SPEC_MAX_K * V * sizeof(float));
    s->p = malloc(V * sizeof(float));
    s->res = malloc(V * sizeof(float));
    if (!s->ts || !s->ds || !s->hist || !s->logits || !s->dlogits || !s->q || !s->p || !s->res) {
        el_spec_free(s);
        return el_err(err, EL_ERR_NOMEM, "out of memory");
    }
    *out = s;
    return EL_OK;
}

void el_spec_free(el_spec *s) {
    if (!s) return;
    el_sampler_free(s->ts);
    el_sampler_free(s->ds);
    free(s->hist);
    free(s->logits);
    free(s->dlogits);
    free(s->q);
    free(s->p);
    free(s->res);
    free(s);
}

int el_spec_length(const el_spec *s) { return s->n; }
const el_spec_stats *el_spec_get_stats(const el_spec *s) { return &s->st; }

el_status el_spec_prefill(el_spec *s, const int *tokens, int n, el_error *err) {
    if (n < 1) return el_err(err, EL_ERR_ARG, "an empty prompt");
    if (n > s->ctx) return el_err(err, EL_ERR_RANGE, "the prompt has %d tokens, more than the context of %d", n, s->ctx);
    memcpy(s->hist, tokens, (size_t)n * sizeof(int));
    s->n = n;
    for (int i = 0; i < n; i++) el_sampler_accept(s->ts, tokens[i]), el_sampler_accept(s->ds, tokens[i]);
    s->d->pos = 0;
    if (n == 1) return EL_OK;  // the one token goes with the first round's rows
    // the target's cache up to the last prompt token (its logits are unused:
    // the first round asks for them again with the drafted rows)
    el_status st = el_pipeline_forward(s->target, tokens, n - 1, 0, s->logits, 0, err);
    if (st) return st;
    if ((st = el_session_forward(s->d->s, tokens, n - 1, 0, s->dlogits, 0, err))) return st;
    s->d->pos = n - 1;
    return EL_OK;
}

// Runs the draft over the committed tokens it has not seen, leaving the
// logits of the next position in s->dlogits.
static el_status draft_catch_up(el_spec *s, el_error *err) {
    el_drafter *d = s->d;
    int from = d->pos;
    el_status st = el_session_forward(d->s, s->hist + from, s->n - from, from, s->dlogits, 0, err);
    if (!st) d->pos = s->n;
    return st;
}

// The cost model from what the rounds measured.
static void estimate(el_spec *s, el_spec_cost *c) {
    c->alpha = (s->st.accepted + 1.0) / (s->st.examined + 2.0);  // one of each a priori
    c->draft_s = s->draft_ema;
    double det = s->sw * s->sxx - s->sx * s->sx;
    if (s->rows_seen_lo != s->rows_seen_hi && det > 1e-12 * s->sw * s->sxx) {
        c->verify_row_s = (s->sw * s->sxy - s->sx * s->sy) / det;
        if (c->verify_row_s < 0) c->verify_row_s = 0;
        c->verify_fixed_s = (s->sy - c->verify_row_s * s->sx) / s->sw;
        if (c->verify_fixed_s < 0) c->verify_fixed_s = 0;
    } else {  // one row count seen: all of it fixed (a bandwidth-bound pass costs little per row)
        c->verify_row_s = 0;
        c->verify_fixed_s = s->sw > 0 ? s->sy / s->sw : 0;
    }
}

static int choose_k(el_spec *s, double *pred) {
    el_spec_cost c;
    estimate(s, &c);
    s->st.cost = c;
    if (s->o.k) {
        *pred = el_spec_predict(&c, s->o.k);
        return s->o.k;
    }
    // the line needs two row counts: the first rounds measure a short and a long one
    if (s->st.rounds == 0) return *pred = 0, s->o.max_k < 2 ? s->o.max_k : 2;
    if (s->rows_seen_lo == s->rows_seen_hi) return *pred = 0, s->o.max_k;
    return el_spec_best_k(&c, s->o.max_k, pred);
}

el_status el_spec_round(el_spec *s, int max_out, int *out, int *n_out, el_error *err) {
    *n_out = 0;
    if (s->n < 1) return el_err(err, EL_ERR_STATE, "no prompt yet (el_spec_prefill)");
    if (s->n > s->ctx) return el_err(err, EL_ERR_RANGE, "the context of %d positions is full", s->ctx);
    if (max_out < 1) return el_err(err, EL_ERR_ARG, "no room for a token");
    double pred = 0;
    int k = choose_k(s, &pred);
    s->st.last_k = k;  // the choice (the context's or the caller's end may draft fewer)
    if (k > max_out - 1) k = max_out - 1;
    if (k > s->ctx - s->n) k = s->ctx - s->n;  // rows at positions n-1 .. n-1+k
    const size_t V = (size_t)s->vocab;
    el_status st;
    // draft k tokens
    double t0 = el_time_s();
    int *rows = s->rows;
    rows[0] = s->hist[s->n - 1];
    if (k > 0) {
        if ((st = draft_catch_up(s, err))) return st;
        for (int j = 0; j < k; j++) {
            el_sampler_dist(s->ds, s->dlogits, s->q + j * V);
            rows[j + 1] = el_sampler_draw(s->ds, s->q + j * V);
            el_sampler_accept(s->ds, rows[j + 1]);
            if (j + 1 < k) {
                if ((st = el_session_forward(s->d->s, &rows[j + 1], 1, s->n + j, s->dlogits, 0, err))) return st;
            }
        }
    }
    double t1 = el_time_s();
    // verify the k+1 rows in one pass
    if ((st = el_pipeline_forward(s->target, rows, k + 1, s->n - 1, s->logits, 1, err))) return st;
    int acc = 0, rejected = 0;
    for (int j = 0; j <= k; j++) {
        el_sampler_dist(s->ts, s->logits + j * V, s->p);
        int tok;
        if (j < k) {
            int ok;
            tok = (s->o.accept ? s->o.accept : el_spec_accept)(s->ts, s->vocab, s->p, s->q + j * V, rows[j + 1], s->res, &ok);
            if (ok) acc++;
            else rejected = 1;
        } else {
            tok = el_sampler_draw(s->ts, s->p);  // every draft accepted: one more from the last row
        }
        el_sampler_accept(s->ts, tok);
        out[(*n_out)++] = tok;
        if (rejected) break;
    }
    double t2 = el_time_s();
    // the draft forgets its rejected proposals; its cache keeps the accepted ones it ran
    el_sampler_rewind(s->ds, k);
    for (int i = 0; i < *n_out; i++) el_sampler_accept(s->ds, out[i]);
    int ran = k > 0 ? s->n + k - 1 : s->d->pos;  // draft positions holding computed tokens
    s->d->pos = ran < s->n + acc ? ran : s->n + acc;
    memcpy(s->hist + s->n, out, (size_t)*n_out * sizeof(int));
    s->n += *n_out;
    // figures and the cost model
    el_spec_stats *S = &s->st;
    S->rounds++;
    S->drafted += (uint64_t)k;
    S->accepted += (uint64_t)acc;
    S->examined += (uint64_t)(acc + rejected);
    S->tokens += (uint64_t)*n_out;
    S->draft_s += t1 - t0;
    S->verify_s += t2 - t1;
    S->link_s += el_pipeline_last(s->target)->link_s;
    S->k_sum += (uint64_t)k;
    S->predicted_sum += pred;
    if (k > 0) {
        double per = (t1 - t0) / k;  // k draft forwards: the catch-up and k-1 proposals
        s->draft_ema = s->draft_ema > 0 ? 0.8 * s->draft_ema + 0.2 * per : per;
    }
    const double keep = 0.9;  // recent rounds weigh more: the link changes
    double x = k + 1, y = t2 - t1;
    s->sw = keep * s->sw + 1, s->sx = keep * s->sx + x, s->sy = keep * s->sy + y;
    s->sxx = keep * s->sxx + x * x, s->sxy = keep * s->sxy + x * y;
    if (!s->rows_seen_lo || x < s->rows_seen_lo) s->rows_seen_lo = (int)x;
    if (x > s->rows_seen_hi) s->rows_seen_hi = (int)x;
    return EL_OK;
}
