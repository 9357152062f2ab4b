// The HTTP API (libmicrohttpd, one thread per connection with a bounded
// connection count): OpenAI-shaped /v1/completions, /v1/chat/completions
// (with server-sent events when "stream" is true), /v1/models, /v1/adapters,
// /health and Prometheus /metrics. A connection thread only ever waits on its
// own request, so a slow or vanished client holds up nobody else.
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "edgellm/chat.h"
#include "edgellm/json.h"
#include "serve_internal.h"
#include "web.h"

#define KEEPALIVE_S 10

typedef struct {
    el_sbuf body;
    int too_big;
} conn;

// ---------------------------------------------------------------- responses

// {"error":{"message":...,"type":...,"param":...,"code":...}} as the OpenAI API
static enum MHD_Result send_error(struct MHD_Connection *c, unsigned code, const char *msg, const char *param,
                                  const char *ecode) {
    const char *type = code == 401 ? "authentication_error"
                       : code >= 500 ? "server_error"
                       : code == 404 ? "invalid_request_error"
                                     : "invalid_request_error";
    el_sbuf b = {0};
    el_sbuf_puts(&b, "{\"error\":{\"message\":");
    el_sbuf_json_str(&b, msg, strlen(msg));
    el_sbuf_printf(&b, ",\"type\":\"%s\",\"param\":", type);
    if (param && *param) el_sbuf_json_str(&b, param, strlen(param));
    else el_sbuf_puts(&b, "null");
    el_sbuf_puts(&b, ",\"code\":");
    if (ecode) el_sbuf_json_str(&b, ecode, strlen(ecode));
    else el_sbuf_puts(&b, "null");
    el_sbuf_puts(&b, "}}\n");
    return el_web_send(c, code, "application/json", &b);
}

static void count_rejected(el_server *s) {
    pthread_mutex_lock(&s->mu);
    s->met.requests_rejected++;
    pthread_mutex_unlock(&s->mu);
}

static void usage_json(el_sbuf *b, const job *j) {
    el_sbuf_printf(b, "\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d}", j->n_prompt,
                   j->n_gen, j->n_prompt + j->n_gen);
}

static void head_json(el_sbuf *b, const job *j, const char *object) {
    el_sbuf_printf(b, "{\"id\":\"%s-%llu\",\"object\":\"%s\",\"created\":%lld,\"model\":",
                   j->kind == EL_SERVE_CHAT ? "chatcmpl" : "cmpl", (unsigned long long)j->id, object, (long long)time(NULL));
    el_sbuf_json_str(b, j->model, strlen(j->model));
}

// ---------------------------------------------------------------- streaming

typedef struct {
    el_server *s;
    job *j;
    el_sbuf pending;  // event bytes not yet handed to MHD
    size_t off;
    size_t sent;  // bytes of j->text already sent
    int role_sent, finished;
} stream;

// The end of the text a chunk may carry without splitting a UTF-8 character:
// len, or the start of an incomplete last character.
size_t el_serve_utf8_cut(const char *t, size_t len, size_t from) {
    size_t p = len;
    for (int back = 0; back < 4 && p > from; back++) {
        unsigned char c = (unsigned char)t[p - 1];
        if (c < 0x80) return len;  // ASCII ends the text: complete
        if ((c & 0xC0) == 0xC0) {  // the lead byte of the last character
            size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
            return len - (p - 1) < need ? p - 1 : len;
        }
        p--;  // a continuation byte: keep looking back
    }
    return len;  // no lead byte close to the end: not UTF-8 we can fix, send it
}

static void chunk_text(el_sbuf *b, const job *j, const char *text, size_t n, const char *finish, int role) {
    el_sbuf_puts(b, "data: ");
    head_json(b, j, j->kind == EL_SERVE_CHAT ? "chat.completion.chunk" : "text_completion");
    el_sbuf_puts(b, ",\"choices\":[{\"index\":0,");
    if (j->kind == EL_SERVE_CHAT) {
        el_sbuf_puts(b, "\"delta\":{");
        if (role) el_sbuf_puts(b, "\"role\":\"assistant\",");
        if (!finish || n) {
            el_sbuf_puts(b, "\"content\":");
            el_sbuf_json_str(b, text, n);
        } else if (role) b->len--, b->data[b->len] = 0;  // drop the trailing comma
        el_sbuf_puts(b, "},\"logprobs\":null,");
    } else {
        el_sbuf_puts(b, "\"text\":");
        el_sbuf_json_str(b, text, n);
        el_sbuf_puts(b, ",\"logprobs\":null,");
    }
    el_sbuf_puts(b, "\"finish_reason\":");
    if (finish) el_sbuf_printf(b, "\"%s\"", finish);
    else el_sbuf_puts(b, "null");
    el_sbuf_puts(b, "}]}\n\n");
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    stream *st = cls;
    job *j = st->j;
    for (;;) {
        if (st->off < st->pending.len) {
            size_t n = st->pending.len - st->off < max ? st->pending.len - st->off : max;
            memcpy(buf, st->pending.data + st->off, n);
            st->off += n;
            return (ssize_t)n;
        }
        if (st->finished) return MHD_CONTENT_READER_END_OF_STREAM;
        el_sbuf_free(&st->pending);
        st->off = 0;
        // wait (without holding up anyone else) for text, the end, or the keep-alive tick
        pthread_mutex_lock(&j->mu);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += KEEPALIVE_S;
        int timed_out = 0;
        while (!j->done && el_serve_utf8_cut(j->text.data, j->text.len, st->sent) == st->sent && !timed_out)
            timed_out = pthread_cond_timedwait(&j->cv, &j->mu, &until) != 0;
        size_t end = j->done ? j->text.len : el_serve_utf8_cut(j->text.data, j->text.len, st->sent);
        int done = j->done;
        const char *finish = j->finish;
        char error[sizeof j->error];
        memcpy(error, j->error, sizeof error);
        if (end > st->sent || (!st->role_sent && j->kind == EL_SERVE_CHAT)) {
            chunk_text(&st->pending, j, j->text.data ? j->text.data + st->sent : "", end - st->sent, NULL, !st->role_sent);
            st->role_sent = 1;
            st->sent = end;
        }
        pthread_mutex_unlock(&j->mu);
        if (done) {
            if (finish) {
                chunk_text(&st->pending, j, "", 0, finish, 0);
                if (j->include_usage) {
                    el_sbuf_puts(&st->pending, "data: ");
                    head_json(&st->pending, j, j->kind == EL_SERVE_CHAT ? "chat.completion.chunk" : "text_completion");
                    el_sbuf_puts(&st->pending, ",\"choices\":[],");
                    usage_json(&st->pending, j);
                    el_sbuf_puts(&st->pending, "}\n\n");
                }
            } else {
                el_sbuf_puts(&st->pending, "data: {\"error\":{\"message\":");
                el_sbuf_json_str(&st->pending, error, strlen(error));
                el_sbuf_puts(&st->pending, ",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n");
            }
            el_sbuf_puts(&st->pending, "data: [DONE]\n\n");
            st->finished = 1;
        } else if (timed_out && st->pending.len == 0) {
            el_sbuf_puts(&st->pending, ": keep-alive\n\n");  // finds clients that went away
        }
        if (st->pending.oom) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
}

static void stream_free(void *cls) {
    stream *st = cls;
    pthread_mutex_lock(&st->j->mu);
    if (!st->j->done) st->j->cancelled = 1;  // the scheduler drops it at the next token
    pthread_mutex_unlock(&st->j->mu);
    job_unref(st->s, st->j);
    el_sbuf_free(&st->pending);
    free(st);
}

// ---------------------------------------------------------------- generation

// The prompt of a request with images: each image decoded and preprocessed
// here (a bad one is the client's error, found before the request queues),
// the text cut at the image markers, and one prompt entry per position with
// -1 - r for image row r. Returns 0, or sets *code and msg.
static int image_prompt(el_server *s, job *j, const el_serve_request *req, const char *text, unsigned flags,
                        const el_text_span *spans, int n_spans, unsigned *code, char *msg, size_t cap) {
    el_error err;
    *code = 400;
    if (!s->vision) {
        snprintf(msg, cap, "this server has no projector (edgellm serve --mmproj): image_url parts are not accepted");
        return -1;
    }
    const el_vision_hparams *h = el_vision_hp(s->vision);
    size_t np = (size_t)3 * h->image_size * h->image_size;
    j->pixels = malloc((size_t)req->n_images * np * sizeof(float));
    if (!j->pixels) {
        *code = 500;
        snprintf(msg, cap, "out of memory for %d images", req->n_images);
        return -1;
    }
    for (int i = 0; i < req->n_images; i++) {
        el_image img;
        char name[32];
        snprintf(name, sizeof name, "image %d", i + 1);
        el_status st = el_image_decode(req->images[i], req->image_lens[i], name, &img, &err);
        if (!st) {
            st = el_vision_preprocess(h, &img, j->pixels + (size_t)i * np, &err);
            el_image_free(&img);
        }
        if (st) {
            snprintf(msg, cap, "%s", err.msg);
            return -1;
        }
    }
    j->n_images = req->n_images;
    el_mm_prompt mm;
    if (el_mm_prompt_encode(s->tok, text, strlen(text), EL_SERVE_IMAGE_MARKER, flags, spans, n_spans, req->n_images, &mm,
                            &err)) {
        snprintf(msg, cap, "%s", err.msg);
        return -1;
    }
    int n = el_mm_prompt_positions(&mm, h->n_patches);
    if (n > s->ctx) n = s->ctx;  // too long: the context check below refuses it
    j->prompt = malloc(((size_t)n + 1) * sizeof(int));
    if (!j->prompt) {
        el_mm_prompt_free(&mm);
        *code = 500;
        snprintf(msg, cap, "out of memory");
        return -1;
    }
    int at = 0;
    for (int it = 0; it < mm.n_items && at < n; it++)
        for (int r = 0; r < (mm.image[it] >= 0 ? h->n_patches : mm.len[it]) && at < n; r++)
            j->prompt[at++] = mm.image[it] >= 0 ? -1 - (mm.image[it] * h->n_patches + r) : mm.ids[mm.start[it] + r];
    j->n_prompt = el_mm_prompt_positions(&mm, h->n_patches);  // > n only when over the context: refused below
    el_mm_prompt_free(&mm);
    return 0;
}

static enum MHD_Result generate(el_server *s, struct MHD_Connection *c, el_serve_kind kind, const char *body, size_t len,
                                const char *client) {
    el_error err;
    el_serve_request req;
    if (el_serve_request_parse(body, len, kind, &req, &err)) {
        char bad_param[sizeof req.bad_param];
        memcpy(bad_param, req.bad_param, sizeof bad_param);
        el_serve_request_free(&req);
        count_rejected(s);
        return send_error(c, 400, err.msg, bad_param, NULL);
    }
    job *j = job_new();
    if (!j) {
        el_serve_request_free(&req);
        return send_error(c, 500, "out of memory", NULL, NULL);
    }
    j->kind = kind;
    snprintf(j->client, sizeof j->client, "%s", client);
    j->stream = req.stream;
    j->include_usage = req.include_usage;
    snprintf(j->model, sizeof j->model, "%s", req.model);
    unsigned code = 0;
    const char *ecode = NULL, *param = NULL;
    char msg[600];
    char *text = NULL;
    el_text_span *spans = NULL;  // where the messages' contents are in text
    int n_spans = 0;
    if (strcmp(req.model, s->model_id) != 0) {
        // a client that holds its share of adapters cannot make the cache load another
        int held = 0;
        pthread_mutex_lock(&s->mu);
        int ok = sched_client_adapter_ok(s, client, req.model, &held);
        pthread_mutex_unlock(&s->mu);
        if (!ok) {
            code = 429;
            param = "model";
            snprintf(msg, sizeof msg, "this client's requests hold %d adapters (the limit per client is %d); retry later",
                     held, s->o.client_adapters);
            goto fail;
        }
        el_status st = el_adapter_cache_acquire(s->adapters, req.model, &j->adapter, &err);
        if (st) {
            code = st == EL_ERR_ARG ? 404 : st == EL_ERR_NOMEM ? 503 : 500;
            ecode = st == EL_ERR_ARG ? "model_not_found" : NULL;
            param = "model";
            snprintf(msg, sizeof msg, "%s", err.msg);
            goto fail;
        }
    }
    if (kind == EL_SERVE_CHAT) {
        el_chat_msg *msgs = calloc((size_t)req.n_messages, sizeof *msgs);
        if (!msgs) {
            code = 500;
            snprintf(msg, sizeof msg, "out of memory");
            goto fail;
        }
        for (int i = 0; i < req.n_messages; i++) msgs[i] = (el_chat_msg){req.roles[i], req.contents[i]};
        size_t bl = 0, el = 0;
        const char *bp = el_tokenizer_bos(s->tok) >= 0 ? el_tokenizer_piece(s->tok, el_tokenizer_bos(s->tok), &bl) : "";
        const char *ep = el_tokenizer_eos(s->tok) >= 0 ? el_tokenizer_piece(s->tok, el_tokenizer_eos(s->tok), &el) : "";
        char bos[64], eos[64];
        snprintf(bos, sizeof bos, "%.*s", (int)bl, bp);
        snprintf(eos, sizeof eos, "%.*s", (int)el, ep);
        el_status st = el_chat_render_spans((el_chat_template)s->chat_template, msgs, req.n_messages, 1, bos, eos, &text,
                                            &spans, &n_spans, &err);
        free(msgs);
        if (st) {
            code = 400;
            param = "messages";
            snprintf(msg, sizeof msg, "%s", err.msg);
            goto fail;
        }
    }
    const char *ptext = kind == EL_SERVE_CHAT ? text : req.prompt;
    // BOS as the model asks; a rendered chat's template markers become their
    // control tokens (markers in the messages' contents stay text), a
    // completion prompt's text stays text
    unsigned flags = (el_tokenizer_add_bos(s->tok) ? EL_ENCODE_ADD_BOS : 0) | (kind == EL_SERVE_CHAT ? EL_ENCODE_SPECIAL : 0);
    if (req.n_images) {
        if (image_prompt(s, j, &req, ptext, flags, spans, n_spans, &code, msg, sizeof msg)) {
            param = "messages";
            goto fail;
        }
    } else if (el_tokenizer_encode_spans(s->tok, ptext, strlen(ptext), flags, spans, n_spans, &j->prompt, &j->n_prompt,
                                         &err)) {
        code = 400;
        param = kind == EL_SERVE_CHAT ? "messages" : "prompt";
        snprintf(msg, sizeof msg, "%s", err.msg);
        goto fail;
    }
    if (j->n_prompt >= s->ctx || (req.max_tokens && j->n_prompt + req.max_tokens > s->ctx)) {
        code = 400;
        ecode = "context_length_exceeded";
        param = j->n_prompt >= s->ctx ? (kind == EL_SERVE_CHAT ? "messages" : "prompt") : "max_tokens";
        snprintf(msg, sizeof msg, "this model's context is %d tokens; the prompt has %d and max_tokens asks for %d more",
                 s->ctx, j->n_prompt, req.max_tokens);
        goto fail;
    }
    j->max_tokens = req.max_tokens ? req.max_tokens : kind == EL_SERVE_CHAT ? s->ctx - j->n_prompt : 16;
    if (j->max_tokens > s->ctx - j->n_prompt) j->max_tokens = s->ctx - j->n_prompt;
    j->sp = el_sampler_defaults();
    j->sp.temp = req.temperature;
    j->sp.top_p = req.top_p > 0 ? req.top_p : 1e-6f;
    j->sp.top_k = req.top_k;
    j->sp.min_p = req.min_p;
    j->sp.repeat_penalty = req.repeat_penalty;
    j->sp.seed = req.has_seed ? req.seed : el_time_ns() ^ ((uint64_t)(uintptr_t)j << 7);
    if (el_sampler_check(&j->sp, &err)) {
        code = 400;
        snprintf(msg, sizeof msg, "%s", err.msg);
        goto fail;
    }
    for (int i = 0; i < req.n_stop; i++) {
        j->stop[j->n_stop++] = req.stop[i];
        req.stop[i] = NULL;
    }
    req.n_stop = 0;
    if (kind == EL_SERVE_CHAT && s->eot && *s->eot) j->stop[j->n_stop++] = strdup(s->eot);
    if (j->n_stop && !j->stop[j->n_stop - 1]) j->n_stop--;
    el_stopper_init(&j->stopper, (const char *const *)j->stop, j->n_stop);
    free(text);
    free(spans);
    text = NULL;
    el_serve_request_free(&req);
    el_status sst = sched_submit(s, j, &err);
    if (sst) {
        code = sst == EL_ERR_RANGE ? 429 : 503;
        snprintf(msg, sizeof msg, "%s", err.msg);
        goto fail_noreq;
    }

    if (j->stream) {
        stream *st = calloc(1, sizeof *st);
        struct MHD_Response *r = st ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, st, stream_free) : NULL;
        if (!r) {
            free(st);
            pthread_mutex_lock(&j->mu);
            j->cancelled = 1;
            pthread_mutex_unlock(&j->mu);
            job_unref(s, j);
            return MHD_NO;
        }
        st->s = s;
        st->j = j;  // the stream owns the HTTP side's reference now
        MHD_add_response_header(r, "Content-Type", "text/event-stream");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        enum MHD_Result ret = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        return ret;
    }

    // Wait for the whole answer, looking at the socket now and then: a
    // client that hung up is cancelled so its slot goes to someone else.
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    int fd = ci ? ci->connect_fd : -1;
    pthread_mutex_lock(&j->mu);
    while (!j->done) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 100 * 1000 * 1000;
        if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&j->cv, &j->mu, &until);
        if (!j->done && !j->cancelled && fd >= 0) {
            struct pollfd pf = {fd, POLLRDHUP, 0};
            if (poll(&pf, 1, 0) > 0 && (pf.revents & (POLLRDHUP | POLLHUP | POLLERR))) j->cancelled = 1;
        }
    }
    pthread_mutex_unlock(&j->mu);
    enum MHD_Result ret;
    if (!j->finish) {
        ret = send_error(c, s->stopping ? 503 : 500, j->error, NULL, NULL);
    } else {
        el_sbuf b = {0};
        head_json(&b, j, kind == EL_SERVE_CHAT ? "chat.completion" : "text_completion");
        if (kind == EL_SERVE_CHAT) {
            el_sbuf_puts(&b, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":");
            el_sbuf_json_str(&b, j->text.data ? j->text.data : "", j->text.len);
            el_sbuf_puts(&b, "},");
        } else {
            el_sbuf_puts(&b, ",\"choices\":[{\"index\":0,\"text\":");
            el_sbuf_json_str(&b, j->text.data ? j->text.data : "", j->text.len);
            el_sbuf_puts(&b, ",");
        }
        el_sbuf_printf(&b, "\"logprobs\":null,\"finish_reason\":\"%s\"}],", j->finish);
        usage_json(&b, j);
        el_sbuf_puts(&b, "}\n");
        ret = el_web_send(c, 200, "application/json", &b);
    }
    job_unref(s, j);
    return ret;

fail:
    free(text);
    free(spans);
    el_serve_request_free(&req);
fail_noreq:
    job_unref(s, j);
    count_rejected(s);
    return send_error(c, code, msg, param, ecode);
}

// ---------------------------------------------------------------- other endpoints

static enum MHD_Result models(el_server *s, struct MHD_Connection *c) {
    char **names;
    int n = el_adapter_cache_list(s->adapters, &names);
    if (n < 0) return send_error(c, 500, "out of memory", NULL, NULL);
    el_sbuf b = {0};
    el_sbuf_puts(&b, "{\"object\":\"list\",\"data\":[{\"id\":");
    el_sbuf_json_str(&b, s->model_id, strlen(s->model_id));
    el_sbuf_printf(&b, ",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"edgellm\"}", (long long)s->t_start);
    for (int i = 0; i < n; i++) {
        if (strcmp(names[i], s->model_id) != 0) {  // the base's id wins over a same-named file
            el_sbuf_puts(&b, ",{\"id\":");
            el_sbuf_json_str(&b, names[i], strlen(names[i]));
            el_sbuf_printf(&b, ",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"edgellm\",\"parent\":",
                           (long long)s->t_start);
            el_sbuf_json_str(&b, s->model_id, strlen(s->model_id));
            el_sbuf_puts(&b, "}");
        }
        free(names[i]);
    }
    free(names);
    el_sbuf_puts(&b, "]}\n");
    return el_web_send(c, 200, "application/json", &b);
}

static enum MHD_Result add_adapter(el_server *s, struct MHD_Connection *c, const char *body, size_t len) {
    el_error err;
    el_json *j;
    if (el_json_parse(body, len, "request body", &j, &err)) return send_error(c, 400, err.msg, "body", NULL);
    const char *name = el_json_str(el_json_get(j, "name")), *path = el_json_str(el_json_get(j, "path"));
    enum MHD_Result ret;
    if (!name || !path) ret = send_error(c, 400, "request: 'name' and 'path' must be strings", !name ? "name" : "path", NULL);
    else if (!strcmp(name, s->model_id)) ret = send_error(c, 400, "request: 'name' is the base model's id", "name", NULL);
    else if (el_adapter_cache_add(s->adapters, name, path, &err)) ret = send_error(c, 400, err.msg, "path", NULL);
    else {
        el_sbuf b = {0};
        el_sbuf_puts(&b, "{\"id\":");
        el_sbuf_json_str(&b, name, strlen(name));
        el_sbuf_puts(&b, ",\"object\":\"model\",\"owned_by\":\"edgellm\"}\n");
        ret = el_web_send(c, 200, "application/json", &b);
    }
    el_json_free(j);
    return ret;
}

static enum MHD_Result metrics(el_server *s, struct MHD_Connection *c) {
    pthread_mutex_lock(&s->mu);
    serve_metrics m = s->met;
    pthread_mutex_unlock(&s->mu);
    el_adapter_stats a;
    el_adapter_cache_stats(s->adapters, &a);
    el_sbuf b = {0};
#define COUNTER(name, help, v) \
    el_sbuf_printf(&b, "# HELP " name " " help "\n# TYPE " name " counter\n" name " %llu\n", (unsigned long long)(v))
#define GAUGE(name, help, v) \
    el_sbuf_printf(&b, "# HELP " name " " help "\n# TYPE " name " gauge\n" name " %llu\n", (unsigned long long)(v))
    el_sbuf_printf(&b,
                   "# HELP edgellm_requests_total Generation requests by outcome.\n"
                   "# TYPE edgellm_requests_total counter\n"
                   "edgellm_requests_total{result=\"ok\"} %llu\n"
                   "edgellm_requests_total{result=\"failed\"} %llu\n"
                   "edgellm_requests_total{result=\"rejected\"} %llu\n",
                   (unsigned long long)m.requests_ok, (unsigned long long)m.requests_failed,
                   (unsigned long long)m.requests_rejected);
    COUNTER("edgellm_prompt_tokens_total", "Prompt tokens prefilled.", m.prompt_tokens);
    COUNTER("edgellm_completion_tokens_total", "Tokens generated.", m.completion_tokens);
    GAUGE("edgellm_queue_length", "Requests waiting for a slot.", m.queue_len);
    GAUGE("edgellm_active_sequences", "Sequences in the running batch.", m.active);
    GAUGE("edgellm_batch_size", "Rows in the last decode step.", m.last_batch);
    COUNTER("edgellm_decode_steps_total", "Batched decode steps.", m.decode_steps);
    COUNTER("edgellm_decode_rows_total", "Rows over all decode steps (rows/steps = mean batch size).", m.decode_rows);
    COUNTER("edgellm_adapter_cache_hits_total", "Adapter requests served from memory.", a.hits);
    COUNTER("edgellm_adapter_cache_misses_total", "Adapter loads from disk.", a.misses);
    COUNTER("edgellm_adapter_cache_evictions_total", "Adapters evicted to stay within budget.", a.evictions);
    GAUGE("edgellm_adapters_loaded", "Adapters in memory.", a.loaded);
    GAUGE("edgellm_adapter_bytes", "Bytes of adapters in memory.", a.bytes);
    GAUGE("edgellm_resident_bytes", "Resident set size of the server.", el_current_rss());
#undef COUNTER
#undef GAUGE
    return el_web_send(c, 200, "text/plain; version=0.0.4", &b);
}

// Constant-time comparison, so a key cannot be guessed byte by byte from timing.
static int key_equal(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = la != lb;
    for (size_t i = 0; i < la; i++) d |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
    return d == 0;
}

// 0 when the request has no valid key; else the matching key's index + 1
// (1 without keys).
static int authorized(el_server *s, struct MHD_Connection *c) {
    if (s->n_keys == 0) return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return 0;  // the scheme is case-insensitive (RFC 7235)
    int ok = 0;
    for (int i = 0; i < s->n_keys; i++)
        if (key_equal(h + 7, s->keys[i]) && !ok) ok = i + 1;  // every key compared, whatever matched
    return ok;
}

// Who a request counts against: its API key, or without keys its address.
static void client_name(el_server *s, struct MHD_Connection *c, int key, char *out, size_t cap) {
    if (s->n_keys) {
        snprintf(out, cap, "key %d", key);
        return;
    }
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    char host[64] = "?";
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, host, sizeof host);
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, host, sizeof host);
    snprintf(out, cap, "address %s", host);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls) {
    (void)version;
    el_server *s = cls;
    conn *cn = *con_cls;
    int post = !strcmp(method, "POST");
    if (!cn) {
        cn = calloc(1, sizeof *cn);
        if (!cn) return MHD_NO;
        *con_cls = cn;
        // refuse before reading a body: no key, or a declared length over the cap
        if (!strncmp(url, "/v1/", 4) && !authorized(s, c)) {
            count_rejected(s);
            return send_error(c, 401, "missing or wrong API key (send Authorization: Bearer KEY)", NULL, "invalid_api_key");
        }
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > s->o.max_body) {
            char m[128];
            snprintf(m, sizeof m, "request body is larger than %zu bytes", s->o.max_body);
            count_rejected(s);
            return send_error(c, 413, m, "body", NULL);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!cn->too_big && cn->body.len + *upload_data_size <= s->o.max_body)
            el_sbuf_add(&cn->body, upload_data, *upload_data_size);
        else cn->too_big = 1;
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (!strcmp(url, "/health")) {
        el_sbuf b = {0};
        el_sbuf_puts(&b, "{\"status\":\"ok\"}\n");
        return el_web_send(c, 200, "application/json", &b);
    }
    if (!strcmp(url, "/metrics")) return metrics(s, c);
    enum MHD_Result page;
    if ((!strcmp(method, "GET") || !strcmp(method, "HEAD")) && el_web_serve(c, url, &page))
        return page;  // the chat page (it asks for the key itself)
    int gen = !strcmp(url, "/v1/completions") || !strcmp(url, "/v1/chat/completions");
    int known = gen || !strcmp(url, "/v1/models") || !strcmp(url, "/v1/adapters");
    if (!known) {
        char m[300];
        snprintf(m, sizeof m, "unknown endpoint %s %.200s", method, url);
        return send_error(c, 404, m, NULL, "unknown_url");
    }
    int key = authorized(s, c);
    if (!key) {
        count_rejected(s);
        return send_error(c, 401, "missing or wrong API key (send Authorization: Bearer KEY)", NULL, "invalid_api_key");
    }
    if (!strcmp(url, "/v1/models")) {
        if (strcmp(method, "GET")) return send_error(c, 405, "use GET for /v1/models", NULL, NULL);
        return models(s, c);
    }
    if (!post) return send_error(c, 405, "use POST for this endpoint", NULL, NULL);
    if (cn->too_big) {
        char m[128];
        snprintf(m, sizeof m, "request body is larger than %zu bytes", s->o.max_body);
        count_rejected(s);
        return send_error(c, 413, m, "body", NULL);
    }
    const char *body = cn->body.data ? cn->body.data : "";
    if (cn->body.oom) return send_error(c, 500, "out of memory for the request body", NULL, NULL);
    if (!strcmp(url, "/v1/adapters")) return add_adapter(s, c, body, cn->body.len);
    char client[72];
    client_name(s, c, key, client, sizeof client);
    return generate(s, c, !strcmp(url, "/v1/completions") ? EL_SERVE_COMPLETION : EL_SERVE_CHAT, body, cn->body.len,
                    client);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)cls, (void)c, (void)toe;
    conn *cn = *con_cls;
    if (!cn) return;
    el_sbuf_free(&cn->body);
    free(cn);
    *con_cls = NULL;
}

el_status http_start(el_server *s, el_error *err) {
    struct sockaddr_storage ss;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD;
    const char *host = s->o.host ? s->o.host : "127.0.0.1";
    el_status st = el_web_listen_addr(host, s->o.port, &ss, &flags, err);
    if (st) return st;
    s->daemon = MHD_start_daemon(flags, 0, NULL, NULL, handle, s,
                                 MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT,
                                 (unsigned)s->o.max_connections, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
                                 MHD_OPTION_NOTIFY_COMPLETED, completed, s, MHD_OPTION_END);
    if (!s->daemon) return el_err(err, EL_ERR_IO, "cannot listen on %s port %d (in use, or not allowed)", host, s->o.port);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : s->o.port;
    return EL_OK;
}

void http_stop(el_server *s) {
    if (s->daemon) MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
}
