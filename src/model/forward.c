// The forward pass over one stage: embedding, the layer loop, and the head,
// over rows of many sessions at once (el_batch), each session with its own KV
// cache (an arena, counted in blocks). The layer itself is src/model/layer.c (el_layer_forward),
// the one definition training runs too; this file feeds it rows and caches.
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "edgellm/kernels.h"
#include "edgellm/layer.h"
#include "edgellm/lora.h"
#include "edgellm/model.h"

// ---------------------------------------------------------------- KV memory

// A session's cache is one mapping, an arena: [layer][K, V][kv head][positions]
// [row], each (layer, K or V, kv head) a run of the context's rows (whole
// pages), so a head's keys are one stream across blocks and the hardware
// prefetcher can follow them. Blocks of EL_KV_BLOCK positions are what the
// budget counts (el_session_reserve); their pages come when first written.
//
// A block's first write costs a page fault per 4 KiB, and on a virtual
// machine a fault is dear (measured here: 8 blocks of 688 KiB, 20 ms: a
// whole extra 8-row step every 16 positions). A root pool that asks
// (el_kv_pool_prefault) has a thread at idle priority fault in, ahead of
// need, the pages of the block after each session's last
// (MADV_POPULATE_WRITE, which leaves their contents alone, so it may race
// with the session's own writes). Those pages are outside the budget: the
// block ahead, and for a moment a block the thread faulted in as a truncation
// gave it back (the next truncation or the session's end returns it). The
// thread may be preempted while it holds its lock, and at idle priority it
// may not run again for long: sessions only try the lock (and join its list,
// or wake it, at a later reserve when it was busy; it also looks every
// AHEAD_LOOK_MS on its own).
typedef struct kv_arena {
    atomic_int refs;  // the session's, the helper's list's, the helper's while it works on it
    uint8_t *base;    // the mapping: n_runs runs
    size_t run;       // bytes of one run (layer, K or V, kv head): the context's rows, whole pages
    size_t block;     // bytes of one block of one run (EL_KV_BLOCK rows)
    size_t page;
    int n_runs;
    atomic_int want;  // blocks [0, want) should have their pages (the session's, and one more)
    // (truncations << 32) | done: blocks [0, done) have their pages, or are
    // the session's to write; the helper counts a block done only if no
    // truncation came between its look and its work
    _Atomic uint64_t state;
    atomic_int top;   // blocks from top on have no pages (but for a truncation's race, above)
    atomic_int dead;  // its session is gone
    atomic_int joined;      // on the helper's list
    struct kv_arena *next;  // in the helper's list
} kv_arena;

#define AHEAD_LOOK_MS 50

static kv_arena *arena_new(int n_runs, int positions, size_t row) {
    long pv = sysconf(_SC_PAGESIZE);
    size_t ps = pv > 0 ? (size_t)pv : 4096, run, bytes;
    if (el_mul_size((size_t)positions, row, &run) || el_add_size(run, ps - 1, &run)) return NULL;
    run &= ~(ps - 1);
    if (el_mul_size(run, (size_t)n_runs, &bytes) || !bytes) return NULL;
    kv_arena *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    int flags = MAP_PRIVATE | MAP_ANONYMOUS;
#ifdef MAP_NORESERVE
    flags |= MAP_NORESERVE;  // the budget, not the mapping, bounds what is written
#endif
    void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, flags, -1, 0);
    if (m == MAP_FAILED) {
        free(a);
        return NULL;
    }
#ifdef MADV_NOHUGEPAGE
    madvise(m, bytes, MADV_NOHUGEPAGE);  // pages come and go 4 KiB at a time, a block of a run each
#endif
    a->base = m, a->run = run, a->block = (size_t)EL_KV_BLOCK * row, a->page = ps, a->n_runs = n_runs;
    atomic_init(&a->refs, 1);
    atomic_init(&a->want, 0);
    atomic_init(&a->state, 0);
    atomic_init(&a->top, 0);
    atomic_init(&a->dead, 0);
    atomic_init(&a->joined, 0);
    return a;
}

static void arena_unref(kv_arena *a) {
    if (a && atomic_fetch_sub(&a->refs, 1) == 1) {
        munmap(a->base, a->run * (size_t)a->n_runs);
        free(a);
    }
}

// Blocks [b0, b1) of every run: madvise(advice) over their whole pages,
// from the page that holds b0's first byte (from_inside) or the first page
// past it (so that no byte before block b0 is touched). The errno of a
// failure, or 0.
static int arena_advise(const kv_arena *a, int b0, int b1, int advice, int from_inside) {
    size_t ps = a->page, lo = (size_t)b0 * a->block, hi = (size_t)b1 * a->block;
    lo = from_inside ? lo & ~(ps - 1) : (lo + ps - 1) & ~(ps - 1);
    hi = (hi + ps - 1) & ~(ps - 1);
    if (hi > a->run) hi = a->run;
    int rc = 0;
    for (int r = 0; lo < hi && r < a->n_runs; r++)
        if (madvise(a->base + (size_t)r * a->run + lo, hi - lo, advice)) rc = errno ? errno : -1;
    return rc;
}

// *v = max(*v, x)
static void atomic_raise(atomic_int *v, int x) {
    int cur = atomic_load(v);
    while (cur < x && !atomic_compare_exchange_weak(v, &cur, x)) {}
}

static int state_done(uint64_t st) { return (int)(uint32_t)st; }

// done = max(done, x) (reserve), or with a truncation: done = min(done, x)
static void state_set(kv_arena *a, int x, int truncation) {
    uint64_t cur = atomic_load(&a->state), next;
    do {
        int d = state_done(cur);
        if (truncation) next = (((cur >> 32) + 1) << 32) | (uint32_t)(d < x ? d : x);
        else if (d >= x) return;
        else next = (cur & ~(uint64_t)UINT32_MAX) | (uint32_t)x;
    } while (!atomic_compare_exchange_weak(&a->state, &cur, next));
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int started, stop, on;
    int unsupported;       // the kernel has no MADV_POPULATE_WRITE: nothing to do
    kv_arena *list;        // sessions' arenas (a reference each)
    atomic_int faulted;    // blocks faulted in ahead so far (el_kv_pool_prefaulted)
} kv_ahead;

struct el_kv_pool {
    atomic_size_t used;
    size_t max;  // 0: no limit
    el_kv_pool *parent;
    kv_ahead *ahead;  // root pools that asked (el_kv_pool_prefault)
};

el_kv_pool *el_kv_pool_new(size_t max_bytes) {
    el_kv_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    atomic_init(&p->used, 0);
    p->max = max_bytes;
    return p;
}

el_kv_pool *el_kv_pool_new_child(el_kv_pool *parent, size_t max_bytes) {
    el_kv_pool *p = el_kv_pool_new(max_bytes);
    if (p) p->parent = parent;
    return p;
}

// The helper: drops the arenas of sessions that are gone, and faults in the
// blocks the others want, one block at a time, its lock not held meanwhile.
static void *ahead_main(void *arg) {
    kv_ahead *ah = arg;
    struct sched_param prio = {0};
    pthread_setschedparam(pthread_self(), SCHED_IDLE, &prio);  // only the time nothing else wants
    pthread_mutex_lock(&ah->mu);
    for (;;) {
        kv_arena *work = NULL;
        for (kv_arena **pp = &ah->list; *pp;) {
            kv_arena *a = *pp;
            if (atomic_load(&a->dead)) {
                *pp = a->next;
                arena_unref(a);  // the last reference, or the session's free is about to drop it
                continue;
            }
            if (!work && ah->on && state_done(atomic_load(&a->state)) < atomic_load(&a->want)) work = a;
            pp = &a->next;
        }
        if (ah->stop) break;
        if (!work || ah->unsupported) {  // a poke, or a look now and then (a poke can miss the lock)
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);  // (the condition's clock)
            ts.tv_nsec += AHEAD_LOOK_MS * 1000000L;
            if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
            pthread_cond_timedwait(&ah->cv, &ah->mu, &ts);
            continue;
        }
        atomic_fetch_add(&work->refs, 1);
        pthread_mutex_unlock(&ah->mu);
        uint64_t st = atomic_load(&work->state);
        int b = state_done(st), fail = 0;
        if (b < atomic_load(&work->want)) {  // (a truncation since may have taken it back)
            atomic_raise(&work->top, b + 1);  // first: a truncation from now on gives it back too
#ifdef MADV_POPULATE_WRITE
            fail = arena_advise(work, b, b + 1, MADV_POPULATE_WRITE, 1);
#else
            fail = EINVAL;
#endif
            // counted only if no truncation came between the look and the work
            if (!fail && atomic_compare_exchange_strong(&work->state, &st, (st & ~(uint64_t)UINT32_MAX) | (uint32_t)(b + 1)))
                atomic_fetch_add(&ah->faulted, 1);
        }
        arena_unref(work);
        pthread_mutex_lock(&ah->mu);
        if (fail == EINVAL) ah->unsupported = 1;  // before Linux 5.14 (out of memory: the steps fault as they write)
    }
    pthread_mutex_unlock(&ah->mu);
    return NULL;
}

static el_kv_pool *root_of(const el_kv_pool *p) {
    while (p->parent) p = p->parent;
    return (el_kv_pool *)p;
}

void el_kv_pool_prefault(el_kv_pool *p, int on) {
    p = root_of(p);  // the helper lives at the root
    kv_ahead *ah = p->ahead;
    if (!ah) {
        if (!on || !(ah = calloc(1, sizeof *ah))) return;
        pthread_mutex_init(&ah->mu, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);  // (the helper's looks: a wall-clock step must not stretch them)
        pthread_cond_init(&ah->cv, &ca);
        pthread_condattr_destroy(&ca);
        atomic_init(&ah->faulted, 0);
        p->ahead = ah;
    }
    pthread_mutex_lock(&ah->mu);
    ah->on = on != 0;
    ah->unsupported = 0;  // (try again)
    if (!ah->started && on) ah->started = !pthread_create(&ah->thread, NULL, ahead_main, ah);
    pthread_cond_signal(&ah->cv);
    pthread_mutex_unlock(&ah->mu);
}

static kv_ahead *root_ahead(el_kv_pool *p) { return root_of(p)->ahead; }

// Wakes the helper for a's new wants; gives up when its lock is busy.
static void ahead_poke(el_kv_pool *p) {
    kv_ahead *ah = root_ahead(p);
    if (!ah || pthread_mutex_trylock(&ah->mu)) return;
    pthread_cond_signal(&ah->cv);
    pthread_mutex_unlock(&ah->mu);
}

// Puts a session's arena on the helper's list (a reference of its own), if
// there is a helper and its lock is free; a later reserve tries again.
static void ahead_join(el_kv_pool *p, kv_arena *a) {
    kv_ahead *ah = root_ahead(p);
    if (!ah || atomic_load(&a->joined) || pthread_mutex_trylock(&ah->mu)) return;
    atomic_fetch_add(&a->refs, 1);
    a->next = ah->list;
    ah->list = a;
    atomic_store(&a->joined, 1);
    pthread_cond_signal(&ah->cv);
    pthread_mutex_unlock(&ah->mu);
}

int el_kv_pool_prefaulted(const el_kv_pool *p) {
    const kv_ahead *ah = root_of(p)->ahead;
    return ah ? atomic_load(&((kv_ahead *)ah)->faulted) : 0;
}

void el_kv_pool_free(el_kv_pool *p) {
    if (!p) return;
    kv_ahead *ah = p->ahead;
    if (ah) {
        pthread_mutex_lock(&ah->mu);
        ah->stop = 1;
        pthread_cond_signal(&ah->cv);
        pthread_mutex_unlock(&ah->mu);
        if (ah->started) pthread_join(ah->thread, NULL);
        while (ah->list) {  // (sessions outlive their pool only by mistake: theirs stay mapped)
            kv_arena *a = ah->list;
            ah->list = a->next;
            arena_unref(a);
        }
        pthread_mutex_destroy(&ah->mu);
        pthread_cond_destroy(&ah->cv);
        free(ah);
    }
    free(p);
}
size_t el_kv_pool_used(const el_kv_pool *p) { return atomic_load(&((el_kv_pool *)p)->used); }
size_t el_kv_pool_max(const el_kv_pool *p) { return p->max; }

size_t el_kv_pool_room(const el_kv_pool *p) {
    size_t room = SIZE_MAX;
    for (; p; p = p->parent) {
        size_t used = el_kv_pool_used(p);
        if (p->max) room = used >= p->max ? 0 : p->max - used < room ? p->max - used : room;
    }
    return room;
}

static int take_one(el_kv_pool *p, size_t n) {
    size_t cur = atomic_load(&p->used);
    do {
        if (p->max && (cur > p->max || n > p->max - cur)) return 0;
    } while (!atomic_compare_exchange_weak(&p->used, &cur, cur + n));
    return 1;
}

int el_kv_pool_take(el_kv_pool *p, size_t n) {
    for (el_kv_pool *q = p; q; q = q->parent)
        if (!take_one(q, n)) {
            for (el_kv_pool *r = p; r != q; r = r->parent) atomic_fetch_sub(&r->used, n);
            return 0;
        }
    return 1;
}

void el_kv_pool_give(el_kv_pool *p, size_t n) {
    for (; p; p = p->parent) atomic_fetch_sub(&p->used, n);
}

// ---------------------------------------------------------------- sessions

struct el_session {
    const el_model *m;
    el_pool *pool;
    int layer_begin, layer_end;
    int ctx, max_batch;
    int kv_type;
    size_t kv_row;       // bytes of one cached row (one position of one kv head, K or V)
    size_t block_bytes;  // one block: EL_KV_BLOCK positions of K and V, every layer
    el_kv_pool *kv;      // the budget the blocks count against
    el_kv_pool *own_kv;  // a private, unlimited pool (when none was given)
    // The cache: an arena (above) of layers x 2 x kv heads runs. As a view
    // (session_kv): blk[i] = the arena + i blocks of a run, and the run of
    // (layer, K or V, kv head h) ((layer - layer_begin) * 2 + kv) * kv heads
    // + h runs on.
    kv_arena *arena;
    uint8_t **blk;
    int n_blocks, max_blocks;
    float *inv_freq;          // [head_dim / 2]
    const el_lora_set *lora;  // adapters applied to the projections (borrowed; may be NULL)
    el_batch *own;            // the engine of el_session_layers/head (made on first use)
    double *clock;            // el_session_clock_layers (borrowed; NULL: none)
    int clock_cap;
};

el_status el_session_new(const el_model *m, const el_session_opts *opts, el_pool *pool, el_session **out,
                         el_error *err) {
    *out = NULL;
    el_session_opts o = {0};
    if (opts) o = *opts;
    if (o.no_layers) {
        o.layer_end = o.layer_begin = m->layer_begin;
    } else {
        if (o.layer_end == 0 && o.layer_begin == 0) o.layer_begin = m->layer_begin;
        if (o.layer_end == 0) o.layer_end = m->layer_end;
    }
    if (o.layer_begin < m->layer_begin || o.layer_end > m->layer_end || o.layer_begin > o.layer_end)
        return el_err(err, EL_ERR_ARG, "%s: session layers %d:%d are not within the loaded range %d:%d", m->path,
                      o.layer_begin, o.layer_end, m->layer_begin, m->layer_end);
    if (o.ctx <= 0) o.ctx = m->hp.ctx;
    if (o.ctx > (1 << 20)) return el_err(err, EL_ERR_RANGE, "context %d is too large", o.ctx);
    if (o.max_batch <= 0) o.max_batch = 512;
    if (o.max_batch > o.ctx) o.max_batch = o.ctx;
    const el_hparams *h = &m->hp;
    size_t row = el_kv_row_bytes(o.kv_type, h->head_dim);
    if (!row)
        return el_err(err, EL_ERR_UNSUPPORTED, "KV cache type %s is not supported (f32, f16, q8_0)",
                      el_dtype_name(o.kv_type));
    el_session *s = calloc(1, sizeof *s);
    if (!s) return el_err(err, EL_ERR_NOMEM, "out of memory for a session");
    s->m = m;
    s->pool = pool;
    s->layer_begin = o.layer_begin;
    s->layer_end = o.layer_end;
    s->ctx = o.ctx;
    s->max_batch = o.max_batch;
    s->kv_type = o.kv_type;
    s->kv_row = row;
    s->block_bytes = (size_t)(o.layer_end - o.layer_begin) * 2 * (size_t)h->n_kv_heads * EL_KV_BLOCK * row;
    s->kv = o.kv_pool;
    if (!s->kv) s->kv = s->own_kv = el_kv_pool_new(0);
    s->max_blocks = (o.ctx + EL_KV_BLOCK - 1) / EL_KV_BLOCK;
    s->inv_freq = el_calloc((size_t)h->head_dim / 2 + 1, sizeof(float));
    int layers = o.layer_end - o.layer_begin;
    if (layers > 0) {
        s->arena = arena_new(layers * 2 * h->n_kv_heads, s->max_blocks * EL_KV_BLOCK, row);
        s->blk = el_calloc((size_t)s->max_blocks, sizeof *s->blk);
        for (int b = 0; s->arena && s->blk && b < s->max_blocks; b++) s->blk[b] = s->arena->base + (size_t)b * s->arena->block;
    }
    if (!s->kv || !s->inv_freq || (layers > 0 && (!s->arena || !s->blk))) {
        el_session_free(s);
        return el_err(err, EL_ERR_NOMEM, "out of memory for a session of %d positions", o.ctx);
    }
    if (s->arena) ahead_join(s->kv, s->arena);
    el_model_rope_freqs(m, s->inv_freq);  // with the model's rope scaling
    *out = s;
    return EL_OK;
}

void el_session_free(el_session *s) {
    if (!s) return;
    el_session_truncate(s, 0);
    free(s->blk);
    if (s->arena) {  // the pages go now; the mapping when the helper, if it holds it, next looks
        int top = atomic_load(&s->arena->top);  // (truncate(0) above gave back the rest)
        arena_advise(s->arena, 0, top > 1 ? top : 1, MADV_DONTNEED, 0);
        atomic_store(&s->arena->dead, 1);
        if (s->kv) ahead_poke(s->kv);
        arena_unref(s->arena);
    }
    free(s->inv_freq);
    el_batch_free(s->own);
    el_kv_pool_free(s->own_kv);
    free(s);
}

int el_session_ctx(const el_session *s) { return s->ctx; }
void el_session_set_lora(el_session *s, const el_lora_set *set) { s->lora = set && set->n ? set : NULL; }
int el_session_max_batch(const el_session *s) { return s->max_batch; }
int el_session_layer_begin(const el_session *s) { return s->layer_begin; }
int el_session_kv_type(const el_session *s) { return s->kv_type; }
size_t el_session_kv_bytes(const el_session *s) { return (size_t)s->n_blocks * s->block_bytes; }
size_t el_session_kv_block_bytes(const el_session *s) { return s->block_bytes; }
int el_session_capacity(const el_session *s) { return s->n_blocks * EL_KV_BLOCK; }

int el_session_kv_resident(const el_session *s) {
    const kv_arena *a = s->arena;
    if (!a) return 0;
    size_t ps = a->page, pages = a->run / ps;
    unsigned char *vec = malloc(pages ? pages : 1);
    if (!vec) return 0;
    size_t first = pages;  // the first page not resident in some run
    for (int r = 0; r < a->n_runs && first; r++) {
        if (mincore(a->base + (size_t)r * a->run, a->run, (void *)vec)) {
            first = 0;
            break;
        }
        for (size_t i = 0; i < first; i++)
            if (!(vec[i] & 1)) first = i;
    }
    free(vec);
    size_t blocks = first * ps / a->block;  // blocks that end within the resident pages
    return blocks < (size_t)s->max_blocks ? (int)blocks : s->max_blocks;
}

el_status el_session_reserve(el_session *s, int n_pos, el_error *err) {
    if (n_pos > s->ctx)
        return el_err(err, EL_ERR_RANGE, "%d positions exceed the context of %d", n_pos, s->ctx);
    int want = (n_pos + EL_KV_BLOCK - 1) / EL_KV_BLOCK, have = s->n_blocks;
    if (want <= have || !s->block_bytes) return EL_OK;
    size_t bytes = (size_t)(want - have) * s->block_bytes;
    if (!el_kv_pool_take(s->kv, bytes)) {
        const el_kv_pool *q = s->kv;  // the budget that refused: this session's share, or the whole
        while (q->parent && (!q->max || el_kv_pool_used(q) + bytes <= q->max)) q = q->parent;
        return el_err(err, EL_ERR_NOMEM, "%s budget exhausted (%zu of %zu bytes in use, %zu more needed)",
                      q == s->kv && q->parent ? "this client's memory" : "KV cache", el_kv_pool_used(q), el_kv_pool_max(q),
                      bytes);
    }
    s->n_blocks = want;
    // blocks [0, want) are the session's to write; the helper's is the next one
    kv_arena *a = s->arena;
    state_set(a, want, 0);
    atomic_raise(&a->top, want);
    atomic_store(&a->want, want + 1 < s->max_blocks ? want + 1 : s->max_blocks);
    ahead_join(s->kv, a);  // (when the helper was busy at the session's start)
    ahead_poke(s->kv);
    return EL_OK;
}

void el_session_truncate(el_session *s, int n_pos) {
    int keep = n_pos <= 0 ? 0 : (n_pos + EL_KV_BLOCK - 1) / EL_KV_BLOCK;
    if (keep >= s->n_blocks) return;
    // the pages past block keep go back (up to the last that has any); block
    // keep's stay, as the one ahead
    kv_arena *a = s->arena;
    int ahead = keep + 1 < s->max_blocks ? keep + 1 : s->max_blocks;
    atomic_store(&a->want, ahead);
    state_set(a, ahead, 1);
    int top = atomic_exchange(&a->top, ahead);
    if (top < s->n_blocks + 1) top = s->n_blocks + 1;
    arena_advise(a, keep + 1, top < s->max_blocks ? top : s->max_blocks, MADV_DONTNEED, 0);
    el_kv_pool_give(s->kv, (size_t)(s->n_blocks - keep) * s->block_bytes);
    s->n_blocks = keep;
}

el_status el_session_embed(el_session *s, const int *tokens, int n, float *x, el_error *err) {
    const el_model *m = s->m;
    if (!m->has_embed) return el_err(err, EL_ERR_STATE, "%s: token embedding is not loaded on this stage", m->path);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->hp.vocab)
            return el_err(err, EL_ERR_RANGE, "token id %d is outside the vocabulary (0..%d)", tokens[i], m->hp.vocab - 1);
    el_embedding_forward(x, tokens, n, &m->tok_embd);
    return EL_OK;
}

// ---------------------------------------------------------------- scratch

// Scratch of one step, sized for max rows: the layer's activations, which
// inference does not keep (el_layer_acts with nothing saved).
typedef struct scratch {
    float *xb;     // [B, dim]   normed input
    float *q;      // [B, q_dim]
    float *k, *v;  // [B, kv_dim]
    float *att;    // [B, q_dim] attention output
    float *hb, *hb2;  // [B, ff]
    float *proj;      // [B, dim]
} scratch;

static void scratch_free(scratch *sc) {
    if (!sc) return;
    float **bufs[] = {&sc->xb, &sc->q, &sc->k, &sc->v, &sc->att, &sc->hb, &sc->hb2, &sc->proj};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) el_calloc_free(*bufs[i]);
    free(sc);
}

// rows x cols floats, zeroed, 64-byte aligned (el_calloc_aligned): the
// products' output rows start on a cache line; NULL if rows x cols overflows
static float *scratch_buf(size_t rows, size_t cols) {
    size_t n;
    return el_mul_size(rows, cols, &n) ? NULL : el_calloc_aligned(n, sizeof(float));
}

static scratch *scratch_new(size_t B, const el_hparams *h) {
    scratch *sc = calloc(1, sizeof *sc);
    if (!sc) return NULL;
    size_t dim = (size_t)h->dim, q_dim = (size_t)h->n_heads * h->head_dim, kv_dim = (size_t)h->n_kv_heads * h->head_dim;
    sc->xb = scratch_buf(B, dim);
    sc->q = scratch_buf(B, q_dim);
    sc->k = scratch_buf(B, kv_dim);
    sc->v = scratch_buf(B, kv_dim);
    sc->att = scratch_buf(B, q_dim);
    sc->hb = scratch_buf(B, (size_t)h->ff);
    sc->hb2 = scratch_buf(B, (size_t)h->ff);
    sc->proj = scratch_buf(B, dim);
    if (!sc->xb || !sc->q || !sc->k || !sc->v || !sc->att || !sc->hb || !sc->hb2 || !sc->proj) {
        scratch_free(sc);
        return NULL;
    }
    return sc;
}

// ---------------------------------------------------------------- rows

// Which sequence and position each row of a layer's input belongs to. One
// session's prefill chunk is rows of that session at consecutive positions;
// a decode row is one row of its session. Rows that share an adapter set are
// contiguous (segments), so each segment's low-rank product runs once.
typedef struct {
    int n;
    el_session *const *sess;  // [n] the session whose KV cache row r reads and extends
    const int *pos;           // [n] the position of row r
    int n_seg;
    const int *seg_start;                // [n_seg + 1] rows of segment i: seg_start[i] .. seg_start[i+1]-1
    const el_lora_set *const *seg_lora;  // [n_seg] adapters of segment i (NULL: none)
} row_map;

typedef struct {
    const row_map *rm;
    int layer;
} kv_ctx;

// Row r's keys and values at the layer: its session's blocks (layout in
// struct el_session) as a view for the layer's attention and cache writes.
static void session_kv(const void *ctx, int r, el_kv_view *w) {
    const kv_ctx *c = ctx;
    const el_session *s = c->rm->sess[r];
    size_t k_off = (size_t)(c->layer - s->layer_begin) * 2 * s->m->hp.n_kv_heads * s->arena->run;
    *w = (el_kv_view){s->kv_type, EL_KV_BLOCK, s->kv_row, s->arena->run, {s->blk, s->blk},
                      {k_off, k_off + (size_t)s->m->hp.n_kv_heads * s->arena->run}};
}

// ---------------------------------------------------------------- one layer

// Layer l over the rows of rm (row t at position rm->pos[t] of session
// rm->sess[t]), in place: src/model/layer.c's el_layer_forward, with the
// sessions' caches as the keys and values and nothing kept. Base matmuls run
// once over all n rows. Returns -1 when attention could not get its scratch.
static int layer_forward(const el_model *m, el_pool *pool, const scratch *sc, int l, float *x, const row_map *rm) {
    const el_session *s0 = rm->sess[0];
    kv_ctx kc = {rm, l};
    el_layer_io io = {.m = m, .layer = l, .pool = pool, .n = rm->n, .pos = rm->pos, .inv_freq = s0->inv_freq,
                      .kv = session_kv, .kv_ctx = &kc, .n_seg = rm->n_seg, .seg_start = rm->seg_start,
                      .seg_lora = rm->seg_lora};
    el_layer_acts a = {.xn1 = sc->xb, .xn2 = sc->xb, .q = sc->q, .k = sc->k, .v = sc->v, .ao = sc->att, .g = sc->hb,
                       .u = sc->hb2, .h = sc->hb, .proj = sc->proj};
    return el_layer_forward(&io, &a, x);
}

// ---------------------------------------------------------------- the batching engine

struct el_batch {
    const el_model *m;
    el_pool *pool;
    int max_rows;
    scratch *sc;
    float *x;          // [max_rows, dim] the step's rows, in sorted order
    float *logits;     // [logits_cap, vocab] head output before it is handed out
    size_t logits_cap;
    int *order;        // [max_rows] sorted request index (requests fill at most max_rows)
    int *row_begin;    // [max_rows] first row of sorted request i
    el_session **rs;   // [max_rows]
    int *rpos;         // [max_rows]
    int *seg_start;    // [max_rows + 1]
    const el_lora_set **seg_lora;
    double *clock;     // the times of the next step's layers (el_session_clock_layers), or NULL
    int clock_cap;
};

el_status el_batch_new(const el_model *m, int max_rows, el_pool *pool, el_batch **out, el_error *err) {
    *out = NULL;
    if (max_rows <= 0 || max_rows > 65536)
        return el_err(err, EL_ERR_RANGE, "batch of %d rows is outside 1..65536", max_rows);
    el_batch *b = calloc(1, sizeof *b);
    if (!b) return el_err(err, EL_ERR_NOMEM, "out of memory for a batch");
    size_t B = (size_t)max_rows;
    b->m = m;
    b->pool = pool;
    b->max_rows = max_rows;
    b->sc = scratch_new(B, &m->hp);
    b->x = el_calloc(B * (size_t)m->hp.dim, sizeof(float));
    b->order = el_calloc(B, sizeof *b->order);
    b->row_begin = el_calloc(B, sizeof *b->row_begin);
    b->rs = el_calloc(B, sizeof *b->rs);
    b->rpos = el_calloc(B, sizeof *b->rpos);
    b->seg_start = el_calloc(B + 1, sizeof *b->seg_start);
    b->seg_lora = el_calloc(B, sizeof *b->seg_lora);
    if (!b->sc || !b->x || !b->order || !b->row_begin || !b->rs || !b->rpos || !b->seg_start || !b->seg_lora) {
        el_batch_free(b);
        return el_err(err, EL_ERR_NOMEM, "out of memory for a batch of %d rows", max_rows);
    }
    *out = b;
    return EL_OK;
}

void el_batch_free(el_batch *b) {
    if (!b) return;
    scratch_free(b->sc);
    free(b->x);
    el_calloc_free(b->logits);
    free(b->order);
    free(b->row_begin);
    free(b->rs);
    free(b->rpos);
    free(b->seg_start);
    free(b->seg_lora);
    free(b);
}

int el_batch_max_rows(const el_batch *b) { return b->max_rows; }

// logits[n, vocab] of rows x[n, dim] (rows ldx floats apart): final norm + head.
static el_status head_rows(el_batch *b, const float *x, int n, float *logits, el_error *err) {
    const el_model *m = b->m;
    const el_hparams *hp = &m->hp;
    if (!m->has_head) return el_err(err, EL_ERR_STATE, "%s: output head is not loaded on this stage", m->path);
    el_rmsnorm_forward(b->sc->xb, NULL, x, m->output_norm.data, n, hp->dim, hp->rms_eps);
    el_proj_forward(b->pool, 1, &logits, b->sc->xb, (const el_tensor *[]){&m->output}, n, 0, NULL);
    return EL_OK;
}

static el_status check_req(const el_batch *b, const el_batch_req *r, int i, int end, el_error *err) {
    const el_model *m = b->m;
    const el_session *s = r->s;
    if (!s || s->m != m) return el_err(err, EL_ERR_ARG, "batch request %d: session is not one of %s", i, m->path);
    if (s->layer_end != end)
        return el_err(err, EL_ERR_ARG, "batch request %d: session ends at layer %d, the others at %d", i, s->layer_end, end);
    if (r->n <= 0 || r->pos < 0 || r->pos > s->ctx - r->n)
        return el_err(err, EL_ERR_RANGE, "positions %d..%d exceed the context of %d", r->pos, r->pos + r->n - 1, s->ctx);
    if (r->pos + r->n > s->n_blocks * EL_KV_BLOCK && s->layer_end > s->layer_begin)
        return el_err(err, EL_ERR_STATE, "batch request %d: positions up to %d have no KV blocks (el_session_reserve)", i,
                      r->pos + r->n);
    if (r->logits_rows != 0 && r->logits_rows != 1 && r->logits_rows != r->n)
        return el_err(err, EL_ERR_ARG, "batch request %d: %d logits rows of %d", i, r->logits_rows, r->n);
    if (r->logits_rows && !m->has_head)
        return el_err(err, EL_ERR_STATE, "%s: output head is not loaded on this stage", m->path);
    if (r->tokens) {
        if (!m->has_embed) return el_err(err, EL_ERR_STATE, "%s: token embedding is not loaded on this stage", m->path);
        for (int k = 0; k < r->n; k++)
            if (r->tokens[k] < 0 || r->tokens[k] >= m->hp.vocab)
                return el_err(err, EL_ERR_RANGE, "token id %d is outside the vocabulary (0..%d)", r->tokens[k],
                              m->hp.vocab - 1);
    } else if (!r->x) {
        return el_err(err, EL_ERR_ARG, "batch request %d has neither tokens nor rows", i);
    }
    return EL_OK;
}

el_status el_batch_run(el_batch *b, int n_req, const el_batch_req *reqs, el_error *err) {
    const el_model *m = b->m;
    const el_hparams *hp = &m->hp;
    size_t dim = (size_t)hp->dim, V = (size_t)hp->vocab;
    if (n_req <= 0) return el_err(err, EL_ERR_ARG, "an empty batch");
    int rows = 0, n_logits = 0, end = reqs[0].s ? reqs[0].s->layer_end : 0;
    for (int i = 0; i < n_req; i++) {
        el_status st = check_req(b, &reqs[i], i, end, err);
        if (st) return st;
        for (int k = 0; k < i; k++)
            if (reqs[k].s == reqs[i].s) return el_err(err, EL_ERR_ARG, "batch requests %d and %d share a session", k, i);
        if (reqs[i].n > b->max_rows - rows)
            return el_err(err, EL_ERR_RANGE, "batch of more than %d rows", b->max_rows);
        rows += reqs[i].n;
        n_logits += reqs[i].logits_rows;
    }
    if ((size_t)n_logits > b->logits_cap) {
        float *p = scratch_buf((size_t)n_logits, V);
        if (!p) return el_err(err, EL_ERR_NOMEM, "out of memory for %d rows of logits", n_logits);
        el_calloc_free(b->logits);
        b->logits = p;
        b->logits_cap = (size_t)n_logits;
    }
    // Sort the requests (stably) by first layer, then adapter set: at layer l
    // the rows of the sessions running it are then a prefix, and each set's
    // rows one segment.
    for (int i = 0; i < n_req; i++) {
        const el_session *a = reqs[i].s;
        int j = i;
        while (j > 0) {
            const el_session *p = reqs[b->order[j - 1]].s;
            if (p->layer_begin < a->layer_begin ||
                (p->layer_begin == a->layer_begin && (uintptr_t)p->lora <= (uintptr_t)a->lora))
                break;
            b->order[j] = b->order[j - 1];
            j--;
        }
        b->order[j] = i;
    }
    int n_seg = 0, r = 0, first = end;
    for (int o = 0; o < n_req; o++) {
        const el_batch_req *q = &reqs[b->order[o]];
        el_session *s = q->s;
        if (s->layer_begin < first) first = s->layer_begin;
        if (o == 0 || s->lora != b->seg_lora[n_seg - 1]) {
            b->seg_start[n_seg] = r;
            b->seg_lora[n_seg++] = s->lora;
        }
        b->row_begin[o] = r;
        float *xr = b->x + (size_t)r * dim;
        if (q->tokens)
            el_embedding_forward(xr, q->tokens, q->n, &m->tok_embd);
        else
            memcpy(xr, q->x, (size_t)q->n * dim * sizeof(float));
        for (int k = 0; k < q->n; k++) {
            b->rs[r + k] = s;
            b->rpos[r + k] = q->pos + k;
        }
        r += q->n;
    }
    b->seg_start[n_seg] = rows;
    int o_active = 0, n_active = 0, ticks = 0;
    if (ticks < b->clock_cap) b->clock[ticks++] = el_time_s();
    for (int l = first; l < end; l++) {
        // rows of the sessions that run layer l: a prefix
        while (o_active < n_req && reqs[b->order[o_active]].s->layer_begin <= l) {
            n_active += reqs[b->order[o_active]].n;
            o_active++;
        }
        row_map rm = {n_active, b->rs, b->rpos, n_seg, b->seg_start, b->seg_lora};
        if (layer_forward(m, b->pool, b->sc, l, b->x, &rm))
            return el_err(err, EL_ERR_NOMEM, "out of memory for attention scores");
        if (ticks < b->clock_cap) b->clock[ticks++] = el_time_s();
    }
    // the head over the rows that want logits, gathered
    if (n_logits) {
        int g = 0;
        for (int o = 0; o < n_req; o++) {
            const el_batch_req *q = &reqs[b->order[o]];
            int from = b->row_begin[o] + q->n - q->logits_rows;
            el_rmsnorm_forward(b->sc->xb + (size_t)g * dim, NULL, b->x + (size_t)from * dim, m->output_norm.data,
                               q->logits_rows, hp->dim, hp->rms_eps);
            g += q->logits_rows;
        }
        el_proj_forward(b->pool, 1, &b->logits, b->sc->xb, (const el_tensor *[]){&m->output}, n_logits, 0, NULL);
        g = 0;
        for (int o = 0; o < n_req; o++) {
            const el_batch_req *q = &reqs[b->order[o]];
            if (q->logits_rows) memcpy(q->logits, b->logits + (size_t)g * V, (size_t)q->logits_rows * V * sizeof(float));
            g += q->logits_rows;
        }
    }
    for (int o = 0; o < n_req; o++) {
        const el_batch_req *q = &reqs[b->order[o]];
        if (q->out_hidden) memcpy(q->x, b->x + (size_t)b->row_begin[o] * dim, (size_t)q->n * dim * sizeof(float));
    }
    if (ticks < b->clock_cap) b->clock[ticks++] = el_time_s();
    return EL_OK;
}

// ---------------------------------------------------------------- one session

// The session's own engine, for calls outside a shared batch.
static el_status own_batch(el_session *s, el_error *err) {
    el_status st = s->own ? EL_OK : el_batch_new(s->m, s->max_batch, s->pool, &s->own, err);
    if (!st) s->own->clock = s->clock, s->own->clock_cap = s->clock_cap;  // (the engine is the session's alone)
    return st;
}

void el_session_clock_layers(el_session *s, double *t, int cap) {
    s->clock = t && cap > 0 ? t : NULL;
    s->clock_cap = s->clock ? cap : 0;
}

el_status el_session_layers(el_session *s, float *x, int n, int pos, el_error *err) {
    if (n <= 0 || n > s->max_batch)
        return el_err(err, EL_ERR_RANGE, "batch of %d positions is outside 1..%d", n, s->max_batch);
    if (pos < 0 || pos > s->ctx - n)
        return el_err(err, EL_ERR_RANGE, "positions %d..%d exceed the context of %d", pos, pos + n - 1, s->ctx);
    if (s->layer_begin == s->layer_end) return EL_OK;
    el_status st;
    if ((st = own_batch(s, err)) || (st = el_session_reserve(s, pos + n, err))) return st;
    el_batch_req r = {.s = s, .pos = pos, .n = n, .x = x, .out_hidden = 1};
    return el_batch_run(s->own, 1, &r, err);
}

el_status el_session_head(el_session *s, const float *x, int n, int n_out, float *logits, el_error *err) {
    const el_model *m = s->m;
    if (!m->has_head) return el_err(err, EL_ERR_STATE, "%s: output head is not loaded on this stage", m->path);
    if (n_out <= 0 || n_out > n || n > s->max_batch)
        return el_err(err, EL_ERR_RANGE, "head over %d of %d rows is invalid", n_out, n);
    el_status st = own_batch(s, err);
    if (st) return st;
    return head_rows(s->own, x + (size_t)(n - n_out) * m->hp.dim, n_out, logits, err);
}

el_status el_session_forward(el_session *s, const int *tokens, int n, int pos, float *logits, int logits_all,
                             el_error *err) {
    if (n <= 0) return el_err(err, EL_ERR_ARG, "nothing to evaluate (0 tokens)");
    if (pos < 0 || pos > s->ctx - n)
        return el_err(err, EL_ERR_RANGE, "positions %d..%d exceed the context of %d", pos, pos + n - 1, s->ctx);
    el_status st;
    if ((st = own_batch(s, err)) || (st = el_session_reserve(s, pos + n, err))) return st;
    for (int done = 0; done < n; done += s->max_batch) {
        int chunk = n - done < s->max_batch ? n - done : s->max_batch;
        int last = done + chunk == n;
        el_batch_req r = {.s = s, .pos = pos + done, .n = chunk, .tokens = tokens + done,
                          .logits_rows = logits_all ? chunk : last ? 1 : 0,
                          .logits = logits_all ? logits + (size_t)done * s->m->hp.vocab : logits};
        if ((st = el_batch_run(s->own, 1, &r, err))) return st;
    }
    return EL_OK;
}

// ---------------------------------------------------------------- sharing a step

int el_batch_plan(int n, const int *want, int budget, int short_rows, int *cursor, int *take) {
    if (n <= 0) return 0;
    int start = *cursor >= 0 ? *cursor % n : 0, rows = 0, any_long = 0;
    // a "short" request must fit in a step beside the long ones' share, or it
    // would wait for ever: bigger ones are cut in chunks like a prefill
    int room = budget - budget / 4;
    if (room < 1) room = 1;
    if (short_rows > room) short_rows = room;
    for (int i = 0; i < n; i++) {
        take[i] = 0;
        if (want[i] > short_rows) any_long = 1;
    }
    // Short requests (decode, verification) whole, within what leaves the
    // long ones (prefill) a quarter of the step; then the long ones in
    // chunks; then short ones that did not fit, if room is left.
    int reserve = any_long ? (budget / 4 > 0 ? budget / 4 : 1) : 0;
    for (int k = 0; k < n; k++) {
        int i = (start + k) % n;
        if (want[i] <= 0 || want[i] > short_rows) continue;
        if (want[i] <= budget - reserve - rows) take[i] = want[i], rows += want[i];
    }
    for (int k = 0; k < n && rows < budget; k++) {
        int i = (start + k) % n;
        if (want[i] <= short_rows) continue;
        take[i] = want[i] < budget - rows ? want[i] : budget - rows;
        rows += take[i];
    }
    for (int k = 0; k < n && rows < budget; k++) {
        int i = (start + k) % n;
        if (want[i] > 0 && want[i] <= short_rows && !take[i] && want[i] <= budget - rows) take[i] = want[i], rows += want[i];
    }
    // next time, the first request that got less than it wanted goes first
    // next time: a short request left out goes first, else a long one cut short
    int next = -1;
    for (int k = 0; k < n && next < 0; k++) {
        int i = (start + k) % n;
        if (want[i] > 0 && want[i] <= short_rows && !take[i]) next = i;
    }
    for (int k = 0; k < n && next < 0; k++) {
        int i = (start + k) % n;
        if (take[i] < want[i]) next = i;
    }
    *cursor = next >= 0 ? next : (start + 1) % n;
    return rows;
}
