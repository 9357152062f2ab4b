// Starting and stopping the server: the model, tokenizer, adapter cache,
// slots (one session each) and the batch are made here; the scheduler and the
// HTTP side run on them.
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "edgellm/chat.h"
#include "edgellm/kernels.h"
#include "serve_internal.h"

static void server_free(el_server *s) {
    if (!s) return;
    for (int i = 0; i < s->n_slots && s->slots; i++) {
        el_session_free(s->slots[i].sess);
        el_sampler_free(s->slots[i].sampler);
        el_spec_free(s->slots[i].spec);
        el_drafter_free(s->slots[i].drafter);
    }
    free(s->slots);
    el_kv_pool_free(s->kv);
    sched_free(s);
    el_batch_free(s->batch);
    el_vision_close(s->vision);
    el_adapter_cache_free(s->adapters);
    el_model_close(s->draft);
    el_tokenizer_free(s->tok);
    el_model_close(s->m);
    el_pool_free(s->pool);
    for (int i = 0; i < s->n_keys; i++) free(s->keys[i]);
    free(s->keys);
    free(s->eot);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

el_status el_server_start(const el_serve_opts *opts, el_server **out, el_error *err) {
    *out = NULL;
    el_server *s = calloc(1, sizeof *s);
    if (!s) return el_err(err, EL_ERR_NOMEM, "out of memory for the server");
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->o = *opts;
    if (s->o.slots <= 0) s->o.slots = 16;
    if (s->o.max_body == 0) s->o.max_body = opts->mmproj ? 32u << 20 : 1u << 20;  // images come base64-encoded
    if (s->o.max_queue <= 0) s->o.max_queue = 256;
    if (s->o.client_queue <= 0) s->o.client_queue = s->o.max_queue > 1 ? s->o.max_queue / 2 : 1;
    if (s->o.client_adapters <= 0 && s->o.max_adapters > 0)
        s->o.client_adapters = s->o.max_adapters > 1 ? s->o.max_adapters / 2 : 1;
    if (s->o.max_connections <= 0) s->o.max_connections = 512;
    s->t_start = (double)time(NULL);
    el_status st;
    el_model_opts mo = {.threads = opts->threads};  // the packed copies striped for the pool's threads
    if ((st = el_model_open(opts->model_path, &mo, &s->m, err))) goto fail;
    if ((st = el_model_tokenizer(s->m, opts->tok_path, &s->tok, err))) goto fail;
    if (opts->mmproj) {
        if ((st = el_vision_open(opts->mmproj, &s->vision, err)) ||
            (st = el_vision_check_dim(s->vision, s->m->hp.dim, opts->model_path, err)))
            goto fail;
    }
    if (opts->model_id) snprintf(s->model_id, sizeof s->model_id, "%s", opts->model_id);
    else {
        const char *b = strrchr(opts->model_path, '/');
        b = b ? b + 1 : opts->model_path;
        const char *dot = strrchr(b, '.');
        int n = dot && dot != b ? (int)(dot - b) : (int)strlen(b);
        snprintf(s->model_id, sizeof s->model_id, "%.*s", n < 79 ? n : 79, b);
    }
    el_chat_template t;
    if ((st = el_chat_template_for_model(s->m->gguf, opts->model_path, opts->chat_template, &t, err))) goto fail;
    s->chat_template = (int)t;
    {
        size_t el = 0;
        int eos = el_tokenizer_eos(s->tok);
        const char *ep = eos >= 0 ? el_tokenizer_piece(s->tok, eos, &el) : "";
        char eosb[64];
        snprintf(eosb, sizeof eosb, "%.*s", (int)el, ep);
        const char *eot = el_chat_end_of_turn(t, eosb);
        s->eot = strdup(eot ? eot : "");
        // control tokens print nothing, so the end of turn is also caught as a token
        s->eot_token = s->eot && *s->eot ? el_tokenizer_find(s->tok, s->eot, strlen(s->eot)) : -1;
    }
    s->ctx = opts->ctx > 0 ? opts->ctx : s->m->hp.ctx;
    char warn[256];
    if (el_model_ctx_warning(s->m, s->ctx, warn, sizeof warn)) fprintf(stderr, "serve: warning: %s\n", warn);
    s->pool = el_pool_new(opts->threads);
    if (!s->pool) {
        st = el_err(err, EL_ERR_NOMEM, "cannot start %d compute threads", opts->threads);
        goto fail;
    }
    if ((st = el_adapter_cache_new(s->m, opts->lora_dir, opts->max_adapters, opts->adapter_mem, &s->adapters, err))) goto fail;
    el_adapter_cache_set_log(s->adapters, stderr);
    if (opts->lora_dir) {  // check the folder now: adapters for another base are reported at start
        char **names = NULL;
        int n = el_adapter_cache_list(s->adapters, &names);
        for (int i = 0; i < n; i++) free(names[i]);
        free(names);
    }
    s->n_slots = s->o.slots;
    s->slots = calloc((size_t)s->n_slots, sizeof *s->slots);
    if (!s->slots) {
        st = el_err(err, EL_ERR_NOMEM, "out of memory for %d slots", s->n_slots);
        goto fail;
    }
    el_session_opts so = {.ctx = s->ctx, .max_batch = 1, .kv_type = opts->kv_type};
    // KV blocks are taken as sequences grow; by default the budget is what
    // every slot at the full context would need
    size_t per_pos = el_kv_row_bytes(opts->kv_type, s->m->hp.head_dim) * 2 * (size_t)s->m->hp.n_kv_heads *
                     (size_t)s->m->hp.n_layers;
    size_t max_kv = opts->max_kv ? opts->max_kv
                                 : per_pos * (size_t)s->n_slots * (size_t)((s->ctx + EL_KV_BLOCK - 1) / EL_KV_BLOCK * EL_KV_BLOCK);
    if (!per_pos) {
        st = el_err(err, EL_ERR_UNSUPPORTED, "KV cache type %s is not supported (f32, f16, q8_0)", el_dtype_name(opts->kv_type));
        goto fail;
    }
    if (!(s->kv = el_kv_pool_new(max_kv))) {
        st = el_err(err, EL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    so.kv_pool = s->kv;
    // each slot's next KV block faulted in ahead of need, so that a step never
    // waits for fresh pages (as the worker's)
    el_kv_pool_prefault(s->kv, 1);
    for (int i = 0; i < s->n_slots; i++)
        if ((st = el_session_new(s->m, &so, s->pool, &s->slots[i].sess, err))) goto fail;
    if (opts->draft_path || opts->draft_layers) {
        if (opts->draft_k < 0 || opts->draft_k > EL_SPEC_MAX_K) {
            st = el_err(err, EL_ERR_ARG, "--draft-k %d is outside 1..%d", opts->draft_k, EL_SPEC_MAX_K);
            goto fail;
        }
        if (opts->draft_path) {
            if ((st = el_model_open(opts->draft_path, &mo, &s->draft, err))) goto fail;
            if (s->draft->hp.vocab != s->m->hp.vocab) {
                st = el_err(err, EL_ERR_ARG, "--draft %s has a vocabulary of %d tokens, the model %s has %d: a draft "
                            "must share the model's tokenizer", opts->draft_path, s->draft->hp.vocab, opts->model_path,
                            s->m->hp.vocab);
                goto fail;
            }
        }
        for (int i = 0; i < s->n_slots; i++)
            if ((st = el_drafter_new(s->draft ? s->draft : s->m, s->draft ? 0 : opts->draft_layers, s->ctx, s->pool,
                                     &s->slots[i].drafter, err)))
                goto fail;
    }
    // a decode row for every slot, plus prompt chunks
    int per_slot = s->slots[0].drafter ? EL_SPEC_MAX_K + 1 : 1;  // verification rows of a drafting slot
    int rows = opts->max_batch_tokens > 0 ? opts->max_batch_tokens : s->n_slots * per_slot + 64;
    if (rows < s->n_slots) {
        st = el_err(err, EL_ERR_ARG, "--max-batch-tokens %d is below --slots %d: every running sequence needs a row",
                    rows, s->n_slots);
        goto fail;
    }
    if ((st = el_batch_new(s->m, rows, s->pool, &s->batch, err))) goto fail;
    if (opts->n_api_keys > 0) {
        s->keys = calloc((size_t)opts->n_api_keys, sizeof *s->keys);
        if (!s->keys) {
            st = el_err(err, EL_ERR_NOMEM, "out of memory");
            goto fail;
        }
        for (int i = 0; i < opts->n_api_keys; i++) {
            s->keys[i] = strdup(opts->api_keys[i]);
            s->n_keys = i + 1;
        }
    }
    if ((st = sched_start(s, err))) goto fail;
    if ((st = http_start(s, err))) {
        sched_stop(s);
        goto fail;
    }
    *out = s;
    return EL_OK;
fail:
    server_free(s);
    return st;
}

int el_server_port(const el_server *s) { return s->port; }

size_t el_server_kv_bytes(const el_server *s) { return el_kv_pool_used(s->kv); }
size_t el_server_kv_budget(const el_server *s) { return el_kv_pool_max(s->kv); }

void el_server_stats(el_server *s, uint64_t *requests, uint64_t *tokens, int *active, int *queued) {
    pthread_mutex_lock(&s->mu);
    *requests = s->met.requests_ok + s->met.requests_failed;
    *tokens = s->met.completion_tokens;
    *active = s->met.active;
    *queued = s->met.queue_len;
    pthread_mutex_unlock(&s->mu);
}

void el_server_stop(el_server *s) {
    if (!s) return;
    sched_stop(s);  // ends every request: waiting connection threads wake up
    http_stop(s);   // joins the connection threads (streams end, adapters are released)
    server_free(s);
}
