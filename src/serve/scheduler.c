// Continuous batching: requests join the running batch when a slot is free
// (their prompt is prefilled on that slot's session with their adapter),
// every decode step runs the base once over all running sequences with each
// row's own adapter (el_batch_step), and a sequence leaves at the token that
// ends it. Clients never block this thread: text goes into the request's
// buffer and a condition variable wakes whoever waits on it.
#include <stdlib.h>
#include <string.h>

#include "edgellm/lora.h"
#include "serve_internal.h"

job *job_new(void) {
    job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    j->refs = 1;
    return j;
}

void job_unref(el_server *s, job *j) {
    pthread_mutex_lock(&j->mu);
    int left = --j->refs;
    pthread_mutex_unlock(&j->mu);
    if (left) return;
    if (j->adapter) el_adapter_cache_release(s->adapters, j->adapter);
    free(j->prompt);
    free(j->pixels);
    free(j->img_rows);
    for (int i = 0; i < j->n_stop; i++) free(j->stop[i]);
    el_stopper_free(&j->stopper);
    el_sbuf_free(&j->text);
    pthread_cond_destroy(&j->cv);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

el_status sched_submit(el_server *s, job *j, el_error *err) {
    pthread_mutex_lock(&s->mu);
    el_status st = EL_OK;
    if (s->stopping) st = el_err(err, EL_ERR_STATE, "server is shutting down");
    else if (s->met.queue_len >= s->o.max_queue)
        st = el_err(err, EL_ERR_NOMEM, "server is busy: %d requests are waiting; retry later", s->met.queue_len);
    if (!st) {
        j->refs++;  // the scheduler's reference (no other thread sees j yet)
        j->id = ++s->next_id;
        j->t_submit = el_time_s();
        if (s->queue_tail) s->queue_tail->next = j;
        else s->queue_head = j;
        s->queue_tail = j;
        s->met.queue_len++;
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return st;
}

// Moves text the stopper has released into what the client may see.
static void publish(job *j, int final) {
    const char *bytes;
    size_t n = el_stopper_take(&j->stopper, final, &bytes);
    if (!n && !final) return;
    pthread_mutex_lock(&j->mu);
    el_sbuf_add(&j->text, bytes, n);
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

// Ends a request: publishes what is left and wakes its reader.
static void finish(el_server *s, job *j, const char *reason, const char *error) {
    if (reason) publish(j, 1);
    pthread_mutex_lock(&j->mu);
    j->finish = reason;
    if (error) snprintf(j->error, sizeof j->error, "%s", error);
    j->done = 1;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    pthread_mutex_lock(&s->mu);
    if (reason) s->met.requests_ok++;
    else s->met.requests_failed++;
    s->met.completion_tokens += (uint64_t)j->n_gen;
    pthread_mutex_unlock(&s->mu);
}

// Takes the token a sequence produced; returns 1 when the sequence ended.
static int take_token(el_server *s, slot *sl, int tok) {
    job *j = sl->j;
    j->n_gen++;
    if (tok == el_tokenizer_eos(s->tok) || tok == el_tokenizer_bos(s->tok) ||
        (j->kind == EL_SERVE_CHAT && tok == s->eot_token && tok >= 0)) {
        finish(s, j, "stop", NULL);
        return 1;
    }
    char piece[512];
    size_t n = el_tokenizer_decode(s->tok, sl->next, tok, piece, sizeof piece);
    int r = el_stopper_feed(&j->stopper, piece, n);
    if (r < 0) {
        finish(s, j, NULL, "out of memory for the generated text");
        return 1;
    }
    if (r > 0) {
        finish(s, j, "stop", NULL);
        return 1;
    }
    if (j->n_gen >= j->max_tokens || sl->pos + 1 >= s->ctx) {
        finish(s, j, "length", NULL);
        return 1;
    }
    publish(j, 0);
    sl->next = tok;
    return 0;
}

static int cancelled(job *j) {
    pthread_mutex_lock(&j->mu);
    int c = j->cancelled;
    pthread_mutex_unlock(&j->mu);
    return c;
}

static void release_slot(el_server *s, slot *sl) {
    job_unref(s, sl->j);
    sl->j = NULL;
    el_sampler_free(sl->sampler);
    sl->sampler = NULL;
}

// Prompt tokens prefilled between two decode steps, over all joining
// requests: a long prompt is taken in chunks so it delays the running batch
// by at most one chunk per step.
#define PREFILL_BUDGET 64

// Sets up a newly admitted request on its slot.
static int admit(el_server *s, slot *sl) {
    job *j = sl->j;
    sl->sampler = el_sampler_new(&j->sp, s->m->hp.vocab);
    if (!sl->sampler) {
        finish(s, j, NULL, "out of memory for a sampler");
        release_slot(s, sl);
        return -1;
    }
    for (int i = 0; i < j->n_prompt; i++)
        if (j->prompt[i] >= 0) el_sampler_accept(sl->sampler, j->prompt[i]);
    sl->prefilled = 0;
    sl->pos = 0;
    if (j->n_images) {  // the vision encoder runs here, on the pool, between two decode steps
        const el_vision_hparams *h = el_vision_hp(s->vision);
        size_t per = (size_t)h->n_patches * h->out_dim, np = (size_t)3 * h->image_size * h->image_size;
        el_error err;
        j->img_rows = malloc((size_t)j->n_images * per * sizeof(float));
        el_status st = j->img_rows ? EL_OK : el_err(&err, EL_ERR_NOMEM, "out of memory for %d images", j->n_images);
        for (int i = 0; i < j->n_images && !st; i++)
            st = el_vision_encode(s->vision, s->pool, j->pixels + (size_t)i * np, j->img_rows + (size_t)i * per, &err);
        free(j->pixels);
        j->pixels = NULL;
        if (st) {
            finish(s, j, NULL, err.msg);
            release_slot(s, sl);
            return -1;
        }
    }
    return 0;
}

// Runs prompt positions [a, a + n) of the slot's request: runs of tokens
// through the embedding, runs of image rows straight into the layers. The
// logits are the last position's.
static el_status prefill_positions(el_server *s, slot *sl, int a, int n, float *logits, el_error *err) {
    job *j = sl->j;
    if (!j->n_images) return el_session_forward(sl->sess, j->prompt + a, n, a, logits, 0, err);
    int dim = s->m->hp.dim;
    el_status st = EL_OK;
    for (int i = a; i < a + n && !st;) {
        int img = j->prompt[i] < 0, e = i;
        while (e < a + n && (j->prompt[e] < 0) == img) e++;
        int last = e == a + n;
        if (!img) {
            st = el_session_forward(sl->sess, j->prompt + i, e - i, i, logits, 0, err);
        } else {
            for (int p = i; p < e; p++)
                memcpy(s->xbuf + (size_t)(p - i) * dim, j->img_rows + (size_t)(-1 - j->prompt[p]) * dim,
                       (size_t)dim * sizeof(float));
            st = el_session_layers(sl->sess, s->xbuf, e - i, i, err);
            if (!st && last) st = el_session_head(sl->sess, s->xbuf, e - i, 1, logits, err);
        }
        i = e;
    }
    return st;
}

// Prefills up to budget more prompt tokens of the slot's request with its
// adapter; after the last chunk, takes its first token. Returns the tokens used.
static int prefill(el_server *s, slot *sl, int budget, float *logits) {
    job *j = sl->j;
    el_error err;
    int n = j->n_prompt - sl->prefilled;
    if (n > budget) n = budget;
    el_session_set_lora(sl->sess, j->adapter);
    el_status st = prefill_positions(s, sl, sl->prefilled, n, logits, &err);
    el_session_set_lora(sl->sess, NULL);
    if (st) {
        finish(s, j, NULL, err.msg);
        release_slot(s, sl);
        return n;
    }
    sl->prefilled += n;
    if (sl->prefilled < j->n_prompt) return n;
    pthread_mutex_lock(&s->mu);
    s->met.prefills++;
    s->met.prompt_tokens += (uint64_t)j->n_prompt;
    pthread_mutex_unlock(&s->mu);
    sl->pos = j->n_prompt;
    sl->next = j->prompt[j->n_prompt - 1] >= 0 ? j->prompt[j->n_prompt - 1] : -1;
    int tok = el_sampler_sample(sl->sampler, logits);
    el_sampler_accept(sl->sampler, tok);
    if (take_token(s, sl, tok)) release_slot(s, sl);
    return n;
}

static void *sched_main(void *arg) {
    el_server *s = arg;
    int n = s->n_slots, V = s->m->hp.vocab;
    float *logits = s->sb.logits;
    el_session **rs = s->sb.rs;
    int *toks = s->sb.toks, *pos = s->sb.pos;
    slot **rows = s->sb.rows;
    const el_lora_set **ad = s->sb.ad;
    int prefill_from = 0;
    for (;;) {
        // admit waiting requests into free slots (token boundary)
        pthread_mutex_lock(&s->mu);
        int active = 0;
        for (int i = 0; i < n; i++) active += s->slots[i].j != NULL;
        while (!s->stopping && active == 0 && !s->queue_head) pthread_cond_wait(&s->cv, &s->mu);
        if (s->stopping) {
            pthread_mutex_unlock(&s->mu);
            break;
        }
        job *admitted[64];
        int n_adm = 0;
        for (int i = 0; i < n && s->queue_head && n_adm < 64; i++) {
            if (s->slots[i].j) continue;
            job *j = s->queue_head;
            s->queue_head = j->next;
            if (!s->queue_head) s->queue_tail = NULL;
            j->next = NULL;
            s->met.queue_len--;
            s->slots[i].j = j;  // reserve
            admitted[n_adm++] = j;
        }
        pthread_mutex_unlock(&s->mu);
        for (int i = 0, k = 0; i < n && k < n_adm; i++) {
            if (s->slots[i].j != admitted[k]) continue;
            k++;
            admit(s, &s->slots[i]);
        }
        // prefill joining requests within the budget, oldest slot index first
        // after the one that went last time, so none starves
        int budget = PREFILL_BUDGET, start = prefill_from;
        for (int k = 0; k < n && budget > 0; k++) {
            slot *sl = &s->slots[(start + k) % n];
            if (!sl->j || sl->prefilled >= sl->j->n_prompt) continue;
            if (cancelled(sl->j)) {
                finish(s, sl->j, NULL, "cancelled by the client");
                release_slot(s, sl);
                continue;
            }
            budget -= prefill(s, sl, budget, logits);
            prefill_from = (start + k + 1) % n;
        }
        // one decode step over every running sequence
        int nr = 0;
        for (int i = 0; i < n; i++) {
            slot *sl = &s->slots[i];
            if (!sl->j) continue;
            if (cancelled(sl->j)) {
                finish(s, sl->j, NULL, "cancelled by the client");
                release_slot(s, sl);
                continue;
            }
            if (sl->prefilled < sl->j->n_prompt) continue;  // still joining
            rows[nr] = sl;
            rs[nr] = sl->sess;
            toks[nr] = sl->next;
            pos[nr] = sl->pos;
            ad[nr] = sl->j->adapter;
            nr++;
        }
        pthread_mutex_lock(&s->mu);
        s->met.active = nr;
        pthread_mutex_unlock(&s->mu);
        if (nr == 0) continue;
        el_error err;
        if (el_batch_step(s->batch, nr, rs, toks, pos, ad, logits, &err)) {
            for (int r = 0; r < nr; r++) {
                finish(s, rows[r]->j, NULL, err.msg);
                release_slot(s, rows[r]);
            }
            continue;
        }
        pthread_mutex_lock(&s->mu);
        s->met.decode_steps++;
        s->met.decode_rows += (uint64_t)nr;
        s->met.last_batch = nr;
        pthread_mutex_unlock(&s->mu);
        for (int r = 0; r < nr; r++) {
            slot *sl = rows[r];
            sl->pos++;
            int tok = el_sampler_sample(sl->sampler, logits + (size_t)r * V);
            el_sampler_accept(sl->sampler, tok);
            if (take_token(s, sl, tok)) release_slot(s, sl);
            else sl->next = tok;
        }
        int still = 0;
        for (int i = 0; i < n; i++) still += s->slots[i].j != NULL;
        pthread_mutex_lock(&s->mu);
        s->met.active = still;
        pthread_mutex_unlock(&s->mu);
    }
    // shutting down: end everything still running or queued
    for (int i = 0; i < n; i++)
        if (s->slots[i].j) {
            finish(s, s->slots[i].j, NULL, "server is shutting down");
            release_slot(s, &s->slots[i]);
        }
    pthread_mutex_lock(&s->mu);
    job *q = s->queue_head;
    s->queue_head = s->queue_tail = NULL;
    s->met.queue_len = 0;
    pthread_mutex_unlock(&s->mu);
    while (q) {
        job *next = q->next;
        finish(s, q, NULL, "server is shutting down");
        job_unref(s, q);
        q = next;
    }
    return NULL;
}

el_status sched_start(el_server *s, el_error *err) {
    size_t n = (size_t)s->n_slots;
    s->sb.logits = el_calloc(n * (size_t)s->m->hp.vocab, sizeof(float));
    s->sb.rs = el_calloc(n, sizeof *s->sb.rs);
    s->sb.toks = el_calloc(n, sizeof *s->sb.toks);
    s->sb.pos = el_calloc(n, sizeof *s->sb.pos);
    s->sb.rows = el_calloc(n, sizeof *s->sb.rows);
    s->sb.ad = el_calloc(n, sizeof *s->sb.ad);
    if (!s->sb.logits || !s->sb.rs || !s->sb.toks || !s->sb.pos || !s->sb.rows || !s->sb.ad)
        return el_err(err, EL_ERR_NOMEM, "out of memory for a batch of %d slots", s->n_slots);
    if (pthread_create(&s->thread, NULL, sched_main, s)) return el_err(err, EL_ERR_STATE, "cannot start the scheduler thread");
    s->thread_started = 1;
    return EL_OK;
}

void sched_stop(el_server *s) {
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->thread_started) pthread_join(s->thread, NULL);
    s->thread_started = 0;
}

void sched_free(el_server *s) {
    free(s->sb.logits);
    free(s->sb.rs);
    free(s->sb.toks);
    free(s->sb.pos);
    free(s->sb.rows);
    free(s->sb.ad);
    memset(&s->sb, 0, sizeof s->sb);
}
