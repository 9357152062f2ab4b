// The placement algorithms: the greedy of TrimCaching (shared blocks counted
// once per server), the same greedy counting models whole (independent), and
// an exhaustive search for small instances. docs/network.md "Placement".
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/place.h"

// The state of a placement being built. A request r is one (user, model)
// pair with its probability rp[r]; dem(s, m) lists the requests a copy of
// model m on server s would serve (users reaching s who request m).
typedef struct {
    const el_place_problem *p;
    int S, M, B, R;
    int *dem_off;      // [S*M + 1]
    int *dem_req;      // request indices
    double *rp;        // [R]
    int *cov;          // [R]: servers holding the request's model within the user's reach
    uint16_t *cnt;     // [S*B]: models on server s that use block b
    uint8_t *x;        // [S*M]
    uint64_t *shared;  // [S]: union bytes (each block once)
    uint64_t *whole;   // [S]: sum of the models' bytes (independent's count)
    double *gain;      // [S*M]: requests (x p) that placing m on s would newly serve
    double *gain0;     // [S*M]: the same in an empty placement
    uint64_t *mb;      // [S*M]: bytes placing m on s adds with shared blocks counted once
    double hit;        // served requests (x p)
    uint64_t work;     // inner-loop steps so far (trim's budget for its single-pair starts)
} state;

static double calc_gain(state *st, int s, int m);

static void state_free(state *st) {
    free(st->dem_off), free(st->dem_req), free(st->rp), free(st->cov), free(st->cnt), free(st->x);
    free(st->shared), free(st->whole), free(st->gain), free(st->gain0), free(st->mb);
}

static el_status state_init(state *st, const el_place_problem *p, el_error *err) {
    memset(st, 0, sizeof *st);
    st->p = p, st->S = p->n_servers, st->M = p->n_models, st->B = p->n_blocks;
    size_t SM = (size_t)st->S * (size_t)st->M, R = 0, D = 0;
    for (int u = 0; u < p->n_users; u++) {
        R += (size_t)p->users[u].n_req;
        D += (size_t)p->users[u].n_req * (size_t)p->users[u].n_reach;
    }
    if (R > (size_t)EL_PLACE_MAX_REQUESTS || D > (size_t)EL_PLACE_MAX_DEMAND || SM > (size_t)EL_PLACE_MAX_PAIRS ||
        (size_t)st->S * (size_t)st->B > (size_t)EL_PLACE_MAX_SERVER_BLOCKS)
        return el_err(err, EL_ERR_RANGE, "place: the problem is over the caps of place.h");
    st->R = (int)R;
    st->dem_off = calloc(SM + 1, sizeof(int));
    st->dem_req = malloc((D ? D : 1) * sizeof(int));
    st->rp = malloc((R ? R : 1) * sizeof(double));
    st->cov = calloc(R ? R : 1, sizeof(int));
    size_t SB = (size_t)st->S * (size_t)st->B;
    st->cnt = calloc(SB ? SB : 1, sizeof(uint16_t));
    st->x = calloc(SM ? SM : 1, 1);
    st->shared = calloc(st->S ? (size_t)st->S : 1, sizeof(uint64_t));
    st->whole = calloc(st->S ? (size_t)st->S : 1, sizeof(uint64_t));
    st->gain = calloc(SM ? SM : 1, sizeof(double));
    st->gain0 = calloc(SM ? SM : 1, sizeof(double));
    st->mb = calloc(SM ? SM : 1, sizeof(uint64_t));
    if (!st->dem_off || !st->dem_req || !st->rp || !st->cov || !st->cnt || !st->x || !st->shared || !st->whole ||
        !st->gain || !st->gain0 || !st->mb) {
        state_free(st);
        return el_err(err, EL_ERR_NOMEM, "place: out of memory");
    }
    // counting sort of the (server, model, request) triples by (server, model)
    for (int u = 0; u < p->n_users; u++) {
        const el_place_user *us = &p->users[u];
        for (int j = 0; j < us->n_req; j++)
            for (int k = 0; k < us->n_reach; k++) st->dem_off[(size_t)us->reach[k] * st->M + us->req_model[j] + 1]++;
    }
    for (size_t i = 0; i < SM; i++) st->dem_off[i + 1] += st->dem_off[i];
    int *fill = malloc((SM ? SM : 1) * sizeof(int));
    if (!fill) {
        state_free(st);
        return el_err(err, EL_ERR_NOMEM, "place: out of memory");
    }
    memcpy(fill, st->dem_off, SM * sizeof(int));
    int r = 0;
    for (int u = 0; u < p->n_users; u++) {
        const el_place_user *us = &p->users[u];
        for (int j = 0; j < us->n_req; j++, r++) {
            st->rp[r] = us->req_p[j];
            for (int k = 0; k < us->n_reach; k++) st->dem_req[fill[(size_t)us->reach[k] * st->M + us->req_model[j]]++] = r;
        }
    }
    free(fill);
    for (int s = 0; s < st->S; s++)
        for (int m = 0; m < st->M; m++) st->gain0[(size_t)s * st->M + m] = calc_gain(st, s, m);
    return EL_OK;
}

static double calc_gain(state *st, int s, int m) {
    size_t i = (size_t)s * st->M + m;
    double g = 0;
    st->work += (uint64_t)(st->dem_off[i + 1] - st->dem_off[i]) + 1;
    for (int k = st->dem_off[i]; k < st->dem_off[i + 1]; k++)
        if (!st->cov[st->dem_req[k]]) g += st->rp[st->dem_req[k]];
    return g;
}

static uint64_t calc_mb(state *st, int s, int m) {
    const el_place_model *md = &st->p->models[m];
    const uint16_t *c = st->cnt + (size_t)s * st->B;
    uint64_t b = 0;
    st->work += (uint64_t)md->n_blocks + 1;
    for (int k = 0; k < md->n_blocks; k++)
        if (!c[md->blocks[k]]) b += st->p->block_bytes[md->blocks[k]];
    return b;
}

static void state_reset(state *st) {
    size_t SM = (size_t)st->S * st->M;
    memset(st->cov, 0, (size_t)st->R * sizeof(int));
    memset(st->cnt, 0, (size_t)st->S * st->B * sizeof(uint16_t));
    memset(st->x, 0, SM);
    memset(st->shared, 0, (size_t)st->S * sizeof(uint64_t));
    memset(st->whole, 0, (size_t)st->S * sizeof(uint64_t));
    st->hit = 0;
    memcpy(st->gain, st->gain0, SM * sizeof(double));
    for (int s = 0; s < st->S; s++)
        for (int m = 0; m < st->M; m++) st->mb[(size_t)s * st->M + m] = st->p->models[m].bytes;
}

// Puts model m on server s and brings the cached gains and marginal bytes up to date.
static void place(state *st, int s, int m) {
    size_t i = (size_t)s * st->M + m;
    const el_place_model *md = &st->p->models[m];
    st->x[i] = 1;
    st->whole[s] += md->bytes;
    uint16_t *c = st->cnt + (size_t)s * st->B;
    for (int k = 0; k < md->n_blocks; k++)
        if (!c[md->blocks[k]]++) st->shared[s] += st->p->block_bytes[md->blocks[k]];
    for (int k = st->dem_off[i]; k < st->dem_off[i + 1]; k++)
        if (!st->cov[st->dem_req[k]]++) st->hit += st->rp[st->dem_req[k]];
    for (int m2 = 0; m2 < st->M; m2++)
        if (!st->x[(size_t)s * st->M + m2]) st->mb[(size_t)s * st->M + m2] = calc_mb(st, s, m2);
    for (int s2 = 0; s2 < st->S; s2++) st->gain[(size_t)s2 * st->M + m] = calc_gain(st, s2, m);
}

// The greedy: while some (server, model) pair fits and serves a request not
// yet served, place the best pair by the rule. GAIN: the largest gain in hit
// ratio (the TrimCaching greedy's rule, docs/network.md); DENSITY: the
// largest gain per byte added (a pair adding no byte first). Ties: the larger
// gain, then fewer bytes, then the lower server and model index. shared = 1
// counts a server's storage as its blocks' union (TrimCaching), 0 as the sum
// of its models' sizes (independent caching).
enum { GAIN, DENSITY };

static void greedy(state *st, int shared, int rule) {
    for (;;) {
        st->work += (uint64_t)st->S * st->M;
        int bs = -1;
        size_t bi = 0;
        double bg = 0;
        uint64_t bc = 0;
        for (int s = 0; s < st->S; s++) {
            uint64_t cap = st->p->servers[s].storage_bytes, used = shared ? st->shared[s] : st->whole[s];
            for (int m = 0; m < st->M; m++) {
                size_t i = (size_t)s * st->M + m;
                if (st->x[i] || !(st->gain[i] > 0)) continue;
                uint64_t c = shared ? st->mb[i] : st->p->models[m].bytes;
                if (c > cap - used) continue;  // used <= cap always holds
                double g = st->gain[i];
                int better;
                if (bs < 0)
                    better = 1;
                else if (rule == DENSITY && g * (double)bc != bg * (double)c)
                    better = g * (double)bc > bg * (double)c;  // g/c > bg/bc without dividing by 0
                else
                    better = g > bg || (g == bg && c < bc);
                if (better) bs = s, bi = i, bg = g, bc = c;
            }
        }
        if (bs < 0) return;
        place(st, bs, (int)(bi - (size_t)bs * st->M));
    }
}

static el_status finish(const el_place_problem *p, const uint8_t *x, el_placement *out, el_error *err) {
    size_t SM = (size_t)p->n_servers * p->n_models;
    out->n_servers = p->n_servers, out->n_models = p->n_models;
    out->x = malloc(SM ? SM : 1);
    out->bytes_used = calloc(p->n_servers ? (size_t)p->n_servers : 1, sizeof(uint64_t));
    if (!out->x || !out->bytes_used) {
        el_placement_free(out);
        return el_err(err, EL_ERR_NOMEM, "place: out of memory");
    }
    memcpy(out->x, x, SM);
    for (int s = 0; s < p->n_servers; s++) out->bytes_used[s] = el_place_server_bytes(p, x, s);
    out->hit_ratio = el_place_hit_ratio(p, x);
    el_status st = el_place_check(p, out, err);  // every result respects storage, shared blocks once
    if (st) el_placement_free(out);
    return st;
}

// ---------------------------------------------------------------- exact

typedef struct {
    state *st;
    int S;
    int *n_useful, **useful;   // per server: the models worth holding there
    uint32_t **sets;           // per server: maximal feasible sets (bit i = useful[s][i])
    int *n_sets;
    int *bucket_off, *bucket;  // requests by the last server (in order) that could serve them
    int *choice, *best_choice;
    double best;
    el_status oom;
} exact;

#define EXACT_MAX_SETS (1 << 20)

static int set_push(exact *e, int s, uint32_t mask, int *cap) {
    if (e->n_sets[s] == EXACT_MAX_SETS) return -1;
    if (e->n_sets[s] == *cap) {
        int nc = *cap ? *cap * 2 : 64;
        uint32_t *n = realloc(e->sets[s], (size_t)nc * sizeof *n);
        if (!n) return -2;
        e->sets[s] = n, *cap = nc;
    }
    e->sets[s][e->n_sets[s]++] = mask;
    return 0;
}

// Enumerates the feasible sets of useful[s] (storage only grows as models
// are added, so a set that does not fit has no superset that fits) and keeps
// the maximal ones: those where no model left out still fits.
static int enum_sets(exact *e, int s, int i, uint32_t mask, uint64_t used, int *cap) {
    state *st = e->st;
    uint64_t limit = st->p->servers[s].storage_bytes;
    if (i == e->n_useful[s]) {
        for (int k = 0; k < e->n_useful[s]; k++)
            if (!(mask >> k & 1) && calc_mb(st, s, e->useful[s][k]) <= limit - used) return 0;
        return set_push(e, s, mask, cap);
    }
    int m = e->useful[s][i], rc;
    uint64_t add = calc_mb(st, s, m);
    if (add <= limit - used) {
        const el_place_model *md = &st->p->models[m];
        uint16_t *c = st->cnt + (size_t)s * st->B;
        for (int k = 0; k < md->n_blocks; k++) c[md->blocks[k]]++;
        rc = enum_sets(e, s, i + 1, mask | 1u << i, used + add, cap);
        for (int k = 0; k < md->n_blocks; k++) c[md->blocks[k]]--;
        if (rc) return rc;
    }
    return enum_sets(e, s, i + 1, mask, used, cap);
}

static void search(exact *e, int k, double v, double pot) {
    state *st = e->st;
    if (k == e->S) {
        if (v > e->best + 1e-12 * (st->p->total_p > 1 ? st->p->total_p : 1)) {
            e->best = v;
            memcpy(e->best_choice, e->choice, (size_t)e->S * sizeof(int));
        }
        return;
    }
    if (v + pot <= e->best + 1e-12) return;  // even serving every request still servable cannot beat the best
    for (int c = 0; c < e->n_sets[k]; c++) {
        uint32_t mask = e->sets[k][c];
        double v2 = v, pot2 = pot;
        for (int i = 0; i < e->n_useful[k]; i++) {
            if (!(mask >> i & 1)) continue;
            size_t j = (size_t)k * st->M + e->useful[k][i];
            for (int q = st->dem_off[j]; q < st->dem_off[j + 1]; q++)
                if (!st->cov[st->dem_req[q]]++) v2 += st->rp[st->dem_req[q]], pot2 -= st->rp[st->dem_req[q]];
        }
        for (int q = e->bucket_off[k]; q < e->bucket_off[k + 1]; q++)  // no later server can serve these
            if (!st->cov[e->bucket[q]]) pot2 -= st->rp[e->bucket[q]];
        e->choice[k] = c;
        search(e, k + 1, v2, pot2);
        for (int i = 0; i < e->n_useful[k]; i++) {
            if (!(mask >> i & 1)) continue;
            size_t j = (size_t)k * st->M + e->useful[k][i];
            for (int q = st->dem_off[j]; q < st->dem_off[j + 1]; q++) st->cov[st->dem_req[q]]--;
        }
    }
}

static el_status solve_exact(state *st, el_placement *out, el_error *err) {
    const el_place_problem *p = st->p;
    int S = st->S, M = st->M;
    exact e = {.st = st, .S = S, .best = -1};
    el_status rc = EL_OK;
    e.n_useful = calloc((size_t)S + 1, sizeof(int));
    e.useful = calloc((size_t)S + 1, sizeof(int *));
    e.sets = calloc((size_t)S + 1, sizeof(uint32_t *));
    e.n_sets = calloc((size_t)S + 1, sizeof(int));
    e.choice = calloc((size_t)S + 1, sizeof(int));
    e.best_choice = calloc((size_t)S + 1, sizeof(int));
    e.bucket_off = calloc((size_t)S + 2, sizeof(int));
    e.bucket = malloc(((size_t)st->R + 1) * sizeof(int));
    int *last = malloc(((size_t)st->R + 1) * sizeof(int));
    uint8_t *x = calloc((size_t)S * M + 1, 1);
    if (!e.n_useful || !e.useful || !e.sets || !e.n_sets || !e.choice || !e.best_choice || !e.bucket_off ||
        !e.bucket || !last || !x) {
        rc = el_err(err, EL_ERR_NOMEM, "place: out of memory");
        goto done;
    }
    // a model is worth holding on s when a user reaching s requests it and it fits alone
    int pairs = 0;
    for (int s = 0; s < S; s++)
        for (int m = 0; m < M; m++) {
            size_t i = (size_t)s * M + m;
            if (st->gain[i] > 0 && p->models[m].bytes <= p->servers[s].storage_bytes) pairs++;
        }
    if (pairs > EL_PLACE_EXACT_MAX_PAIRS) {
        rc = el_err(err, EL_ERR_RANGE, "place: exact: %d servers x %d models give %d server-model pairs worth "
                    "searching, over the cap of %d (use --algo trim)", S, M, pairs, EL_PLACE_EXACT_MAX_PAIRS);
        goto done;
    }
    double states = 1;
    for (int s = 0; s < S; s++) {
        if (!(e.useful[s] = malloc(((size_t)M + 1) * sizeof(int)))) {
            rc = el_err(err, EL_ERR_NOMEM, "place: out of memory");
            goto done;
        }
        for (int m = 0; m < M; m++)
            if (st->gain[(size_t)s * M + m] > 0 && p->models[m].bytes <= p->servers[s].storage_bytes)
                e.useful[s][e.n_useful[s]++] = m;
        int cap = 0, r = enum_sets(&e, s, 0, 0, 0, &cap);
        if (r) {
            rc = r == -2 ? el_err(err, EL_ERR_NOMEM, "place: out of memory")
                         : el_err(err, EL_ERR_RANGE, "place: exact: server \"%s\" has over %d model sets to search",
                                  p->servers[s].name, EXACT_MAX_SETS);
            goto done;
        }
        states *= e.n_sets[s];
    }
    if (states > EL_PLACE_EXACT_MAX_STATES) {
        rc = el_err(err, EL_ERR_RANGE, "place: exact: %d servers x %d models give %.3g placements to search, over "
                    "the cap of %.3g (use --algo trim)", S, M, states, EL_PLACE_EXACT_MAX_STATES);
        goto done;
    }
    // requests grouped by the last server (in search order) that could serve them
    double pot = 0;
    int r = 0;
    for (int u = 0; u < p->n_users; u++) {
        const el_place_user *us = &p->users[u];
        for (int j = 0; j < us->n_req; j++, r++) {
            last[r] = -1;
            for (int k = 0; k < us->n_reach; k++) {
                int s = us->reach[k];
                for (int i = 0; i < e.n_useful[s]; i++)
                    if (e.useful[s][i] == us->req_model[j] && s > last[r]) last[r] = s;
            }
            if (last[r] >= 0) e.bucket_off[last[r] + 1]++, pot += st->rp[r];
        }
    }
    for (int s = 0; s < S; s++) e.bucket_off[s + 1] += e.bucket_off[s];
    {
        int *fill = e.choice;  // borrowed as a cursor; search() sets it afresh
        for (int s = 0; s < S; s++) fill[s] = e.bucket_off[s];
        for (r = 0; r < st->R; r++)
            if (last[r] >= 0) e.bucket[fill[last[r]]++] = r;
    }
    search(&e, 0, 0, pot);
    for (int s = 0; s < S; s++)
        for (int i = 0; i < e.n_useful[s]; i++)
            if (e.n_sets[s] && (e.sets[s][e.best_choice[s]] >> i & 1)) x[(size_t)s * M + e.useful[s][i]] = 1;
    rc = finish(p, x, out, err);
done:
    for (int s = 0; s < S && e.useful; s++) free(e.useful[s]);
    for (int s = 0; s < S && e.sets; s++) free(e.sets[s]);
    free(e.n_useful), free(e.useful), free(e.sets), free(e.n_sets), free(e.choice), free(e.best_choice);
    free(e.bucket_off), free(e.bucket), free(last), free(x);
    return rc;
}

// ---------------------------------------------------------------- entry points

int el_place_algo_parse(const char *name) {
    if (!strcmp(name, "trim")) return EL_PLACE_TRIM;
    if (!strcmp(name, "independent")) return EL_PLACE_INDEPENDENT;
    if (!strcmp(name, "exact")) return EL_PLACE_EXACT;
    if (!strcmp(name, "trim-plain")) return EL_PLACE_TRIM_PLAIN;
    return -1;
}

const char *el_place_algo_name(el_place_algo a) {
    return a == EL_PLACE_TRIM ? "trim" : a == EL_PLACE_INDEPENDENT ? "independent" : a == EL_PLACE_EXACT ? "exact"
                                                                                            : "trim-plain";
}

void el_placement_free(el_placement *pl) {
    if (!pl) return;
    free(pl->x);
    free(pl->bytes_used);
    memset(pl, 0, sizeof *pl);
}

typedef struct {
    double g;
    long i;
} seed;

static int by_gain(const void *a, const void *b) {
    const seed *x = a, *y = b;
    if (x->g != y->g) return x->g < y->g ? 1 : -1;
    return x->i < y->i ? -1 : x->i > y->i;
}

// The best placement the greedy (both rules) reaches from each start: an
// empty placement, `from` when not NULL, then single (server, model) pairs
// that fit and serve a request, in decreasing order of what they serve alone,
// while the work done stays within EL_PLACE_SEED_WORK (so the search is
// deterministic and bounded). A start must beat the best so far by more than
// rounding (sums of the same probabilities in another order differ in the
// last bits). Returns the winning start: -2 empty, -1 from, else the pair's
// index; *n_seeds the single-pair starts tried.
static long best_greedy(state *st, int shared, const uint8_t *from, uint8_t *best, int *n_seeds) {
    size_t SM = (size_t)st->S * st->M, n = 0;
    double best_hit = -1, eps = 1e-12 * (st->p->total_p > 1 ? st->p->total_p : 1);
    long won = -2;
    seed *order = malloc((SM ? SM : 1) * sizeof *order);
    for (size_t i = 0; order && i < SM; i++)
        if (st->gain0[i] > 0 && st->p->models[i % (size_t)st->M].bytes <= st->p->servers[i / (size_t)st->M].storage_bytes)
            order[n].g = st->gain0[i], order[n++].i = (long)i;
    if (order) qsort(order, n, sizeof *order, by_gain);
    st->work = 0;
    *n_seeds = 0;
    for (long k = -2; k < (long)n; k++) {
        if (k == -1 && !from) continue;
        if (k >= 0 && (!order || st->work > EL_PLACE_SEED_WORK)) break;
        for (int rule = GAIN; rule <= DENSITY; rule++) {
            state_reset(st);
            if (k == -1)
                for (size_t i = 0; i < SM; i++)
                    if (from[i]) place(st, (int)(i / (size_t)st->M), (int)(i % (size_t)st->M));
            if (k >= 0) place(st, (int)(order[k].i / st->M), (int)(order[k].i % st->M));
            greedy(st, shared, rule);
            if (st->hit > best_hit + eps) best_hit = st->hit, memcpy(best, st->x, SM), won = k >= 0 ? order[k].i : k;
        }
        if (k >= 0) ++*n_seeds;
    }
    free(order);
    return won;
}

el_status el_place_solve(const el_place_problem *p, el_place_algo algo, el_placement *out, el_error *err) {
    memset(out, 0, sizeof *out);
    state st;
    el_status rc = state_init(&st, p, err);
    if (rc) return rc;
    state_reset(&st);
    size_t SM = (size_t)st.S * st.M;
    uint8_t *best = malloc(SM ? SM : 1), *ind = malloc(SM ? SM : 1);
    if (!best || !ind) {
        free(best), free(ind), state_free(&st);
        return el_err(err, EL_ERR_NOMEM, "place: out of memory");
    }
    if (algo == EL_PLACE_EXACT) {
        rc = solve_exact(&st, out, err);
    } else if (algo == EL_PLACE_TRIM_PLAIN) {  // the paper's greedy alone
        greedy(&st, 1, GAIN);
        rc = finish(p, st.x, out, err);
    } else {
        // independent: the greedy counting every model whole; trim: the same
        // search counting shared blocks once, with independent's placement as
        // one more start, so that trim never does worse than independent
        int n_seeds;
        best_greedy(&st, 0, NULL, ind, &n_seeds);
        if (algo == EL_PLACE_INDEPENDENT) {
            rc = finish(p, ind, out, err);
        } else {
            long won = best_greedy(&st, 1, ind, best, &n_seeds);
            rc = finish(p, best, out, err);
            if (!rc) out->extended = won == -1;
        }
        if (!rc) out->seeds = n_seeds;
    }
    free(best);
    free(ind);
    state_free(&st);
    return rc;
}
