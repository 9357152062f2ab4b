// Continuous batching: requests join the running batch when a slot is free,
// and every step runs the base once (el_batch_run) over a decode row of each
// running sequence and chunks of the joining ones' prompts, shared fairly by
// el_batch_plan, each with its own adapter; a sequence leaves at the token
// that ends it. Clients never block this thread: text goes into the request's
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

// Requests of a client waiting in the queue (s->mu held).
static int client_queued(el_server *s, const char *client) {
    int n = 0;
    for (job *q = s->queue_head; q; q = q->next) n += !strcmp(q->client, client);
    return n;
}

int sched_client_running(el_server *s, const char *client) {
    int n = 0;
    for (int i = 0; i < s->n_slots; i++) n += s->slots[i].j && !strcmp(s->slots[i].j->client, client);
    return n;
}

int sched_client_adapter_ok(el_server *s, const char *client, const char *model, int *held) {
    // the distinct adapters (by name) this client's requests hold now, queued or running
    const char *seen[64];
    int n = 0, has = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < (pass ? s->n_slots : 1); i++)
            for (job *q = pass ? s->slots[i].j : s->queue_head; q; q = pass ? NULL : q->next) {
                if (strcmp(q->client, client) || !q->adapter) continue;
                int k = 0;
                while (k < n && strcmp(seen[k], q->model)) k++;
                if (k == n && n < 64) seen[n++] = q->model;
                has |= !strcmp(q->model, model);
            }
    *held = n;
    int limit = s->o.client_adapters;
    return !strcmp(model, s->model_id) || has || limit <= 0 || n < limit;
}

el_status sched_submit(el_server *s, job *j, el_error *err) {
    pthread_mutex_lock(&s->mu);
    el_status st = EL_OK;
    int mine = 0;
    if (s->stopping) st = el_err(err, EL_ERR_STATE, "server is shutting down");
    else if (s->met.queue_len >= s->o.max_queue)
        st = el_err(err, EL_ERR_NOMEM, "server is busy: %d requests are waiting; retry later", s->met.queue_len);
    else if ((mine = client_queued(s, j->client)) >= s->o.client_queue)
        st = el_err(err, EL_ERR_RANGE, "this client has %d requests waiting (the limit per client is %d); retry later",
                    mine, s->o.client_queue);
    else if (j->adapter && !sched_client_adapter_ok(s, j->client, j->model, &mine))
        st = el_err(err, EL_ERR_RANGE, "this client's requests hold %d adapters (the limit per client is %d); retry later",
                    mine, s->o.client_adapters);
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
    el_session_set_lora(sl->sess, NULL);
    el_session_truncate(sl->sess, 0);  // its KV blocks go back to the budget
    el_sampler_free(sl->sampler);
    sl->sampler = NULL;
    el_spec_free(sl->spec);
    sl->spec = NULL;
    sl->draft_rows = NULL;
    sl->n_draft_rows = 0;
}

// Prompt positions the base computes before generating: all of them, or with
// a draft all but the last (the first round's rows start with it).
static int prompt_rows(const slot *sl) { return sl->spec ? sl->j->n_prompt - 1 : sl->j->n_prompt; }

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
    if (sl->drafter && !j->n_images) {  // (image rows have no token ids to draft from: plain decoding)
        el_spec_opts o = {.k = s->o.draft_k, .max_k = 8, .sp = j->sp};
        el_error err;
        if (el_spec_new(NULL, s->m, sl->drafter, &o, &sl->spec, &err) ||
            el_spec_prefill(sl->spec, j->prompt, j->n_prompt, &err)) {
            finish(s, j, NULL, err.msg);
            release_slot(s, sl);
            return -1;
        }
    }
    el_session_set_lora(sl->sess, j->adapter);
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

// Ends a slot's request with an error and frees the slot.
static void fail_slot(el_server *s, slot *sl, const char *msg) {
    finish(s, sl->j, NULL, msg);
    release_slot(s, sl);
}

// Rows a request may want and still be taken whole: a decode row, or a
// drafting sequence's verification rows.
static int sl_short_rows(const el_server *s) { return s->slots[0].drafter ? EL_SPEC_MAX_K + 1 : 1; }
// Prompt rows of a request with images from position a on that one batch
// request can take: a run of token ids, or of image rows that lie one after
// the other in img_rows (prompt entry -1 - r is image row r).
static int prompt_run(const job *j, int a) {
    int e = a + 1;
    if (j->prompt[a] >= 0)
        while (e < j->n_prompt && j->prompt[e] >= 0) e++;
    else
        while (e < j->n_prompt && j->prompt[e] == j->prompt[e - 1] - 1) e++;
    return e - a;
}

static void *sched_main(void *arg) {
    el_server *s = arg;
    int n = s->n_slots, V = s->m->hp.vocab;
    el_batch_req *reqs = s->sb.reqs;
    slot **rows = s->sb.rows;
    int *want = s->sb.want, *take = s->sb.take;
    int cursor = 0;
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
            // the oldest request of the client that runs the fewest: one
            // client's burst does not keep the others out of the slots
            job *j = NULL, *jp = NULL;
            int best = 1 << 30;
            for (job *q = s->queue_head, *prev = NULL; q; prev = q, q = q->next) {
                int r = sched_client_running(s, q->client);
                if (r < best) best = r, j = q, jp = prev;
                if (!r) break;
            }
            if (jp) jp->next = j->next;
            else s->queue_head = j->next;
            if (s->queue_tail == j) s->queue_tail = jp;
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
        // One step over every running sequence: a decode row each, and
        // prompt chunks of the joining ones, shared fairly (el_batch_plan).
        for (int i = 0; i < n; i++) {
            slot *sl = &s->slots[i];
            want[i] = 0;
            if (!sl->j) continue;
            if (cancelled(sl->j)) {
                fail_slot(s, sl, "cancelled by the client");
                continue;
            }
            job *j = sl->j;
            if (sl->prefilled < prompt_rows(sl)) {
                want[i] = j->n_images ? prompt_run(j, sl->prefilled) : prompt_rows(sl) - sl->prefilled;
            } else if (sl->spec) {  // draft this round's tokens (kept until a step verifies them)
                el_error err;
                int budget = el_batch_max_rows(s->batch), room = budget - budget / 4;
                int left = j->max_tokens - j->n_gen;
                if (!sl->draft_rows &&
                    el_spec_draft(sl->spec, left < room ? left : room, &sl->draft_rows, &sl->n_draft_rows, &err)) {
                    fail_slot(s, sl, err.msg);
                    continue;
                }
                want[i] = sl->n_draft_rows;
            } else {
                want[i] = 1;
            }
        }
        el_batch_plan(n, want, el_batch_max_rows(s->batch), sl_short_rows(s), &cursor, take);
        int nr = 0, decode_rows = 0;
        size_t lrow = 0;  // logits rows handed out
        for (int i = 0; i < n; i++) {
            slot *sl = &s->slots[i];
            if (!take[i]) continue;
            el_error err;
            int prefill = sl->prefilled < prompt_rows(sl);
            if (!prefill && sl->spec && take[i] != sl->n_draft_rows) continue;  // verified whole, in a later step
            int pos = prefill ? sl->prefilled : sl->spec ? el_spec_length(sl->spec) - 1 : sl->pos;
            if (el_session_reserve(sl->sess, pos + take[i], &err)) {
                fail_slot(s, sl, err.msg);
                continue;
            }
            int last = !prefill || sl->prefilled + take[i] == sl->j->n_prompt;
            int lrows = sl->spec ? (prefill ? 0 : take[i]) : last ? 1 : 0;
            reqs[nr] = (el_batch_req){.s = sl->sess, .pos = pos, .n = take[i],
                                      .tokens = prefill ? sl->j->prompt + sl->prefilled
                                                : sl->spec ? sl->draft_rows : &sl->next,
                                      .logits_rows = lrows, .logits = s->sb.logits + lrow * V};
            lrow += (size_t)lrows;
            if (prefill && sl->j->prompt[pos] < 0) {  // image rows enter the layers in place of embedded tokens
                reqs[nr].tokens = NULL;
                reqs[nr].x = sl->j->img_rows + (size_t)(-1 - sl->j->prompt[pos]) * s->m->hp.dim;
            }
            rows[nr++] = sl;
            decode_rows += !prefill;
        }
        pthread_mutex_lock(&s->mu);
        s->met.active = nr;
        pthread_mutex_unlock(&s->mu);
        if (nr == 0) continue;
        el_error err;
        if (el_batch_run(s->batch, nr, reqs, &err)) {
            for (int r = 0; r < nr; r++) fail_slot(s, rows[r], err.msg);
            continue;
        }
        int prefills = 0;
        uint64_t prompt_tokens = 0;
        for (int r = 0; r < nr; r++) {
            slot *sl = rows[r];
            job *j = sl->j;
            if (sl->prefilled < prompt_rows(sl)) {
                sl->prefilled += reqs[r].n;
                if (sl->prefilled < prompt_rows(sl)) continue;
                prefills++;
                prompt_tokens += (uint64_t)j->n_prompt;
                sl->pos = j->n_prompt;
                sl->next = j->prompt[j->n_prompt - 1] >= 0 ? j->prompt[j->n_prompt - 1] : -1;
                if (sl->spec) continue;  // the first round starts from the last prompt token
            } else if (sl->spec) {
                int out[EL_SPEC_MAX_K + 1], n_out, base = el_spec_length(sl->spec) - 1;
                sl->next = sl->draft_rows[0];
                el_spec_verify(sl->spec, reqs[r].logits, 0, out, &n_out);
                sl->draft_rows = NULL;
                sl->n_draft_rows = 0;
                for (int t = 0; t < n_out; t++) {
                    sl->pos = base + 1 + t;
                    if (take_token(s, sl, out[t])) {
                        release_slot(s, sl);
                        break;
                    }
                    sl->next = out[t];
                }
                continue;
            } else {
                sl->pos++;
            }
            int tok = el_sampler_sample(sl->sampler, reqs[r].logits);
            el_sampler_accept(sl->sampler, tok);
            if (take_token(s, sl, tok)) release_slot(s, sl);
            else sl->next = tok;
        }
        int still = 0;
        for (int i = 0; i < n; i++) still += s->slots[i].j != NULL;
        pthread_mutex_lock(&s->mu);
        if (decode_rows) {
            s->met.decode_steps++;
            s->met.decode_rows += (uint64_t)decode_rows;
            s->met.last_batch = decode_rows;
        }
        s->met.prefills += (uint64_t)prefills;
        s->met.prompt_tokens += prompt_tokens;
        s->met.active = still;
        pthread_mutex_unlock(&s->mu);
    }
    // shutting down: end everything still running or queued
    for (int i = 0; i < n; i++)
        if (s->slots[i].j) fail_slot(s, &s->slots[i], "server is shutting down");
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
    s->sb.logits = el_calloc(n * (size_t)sl_short_rows(s) * (size_t)s->m->hp.vocab, sizeof(float));
    s->sb.reqs = el_calloc(n, sizeof *s->sb.reqs);
    s->sb.rows = el_calloc(n, sizeof *s->sb.rows);
    s->sb.want = el_calloc(n, sizeof *s->sb.want);
    s->sb.take = el_calloc(n, sizeof *s->sb.take);
    if (!s->sb.logits || !s->sb.reqs || !s->sb.rows || !s->sb.want || !s->sb.take)
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
    free(s->sb.reqs);
    free(s->sb.rows);
    free(s->sb.want);
    free(s->sb.take);
    memset(&s->sb, 0, sizeof s->sb);
}
