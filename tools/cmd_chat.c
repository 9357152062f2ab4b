// edgellm chat: an interactive conversation with a chat model on this machine.
// Each turn renders the whole conversation with the model's template, reuses
// the KV cache for the tokens it shares with what was already evaluated, and
// evaluates only the rest.
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chatturn.h"
#include "cli.h"
#include "common.h"
#include "edgellm/lora.h"
#include "edgellm/model.h"
#include "edgellm/sample.h"

static const char *usage =
    "usage: edgellm chat -m MODEL [-z TOKENIZER] [options]\n"
    "\n"
    "Reads your turns from standard input, one line each, and prints each reply\n"
    "on standard output followed by an empty line. With a terminal it shows a\n"
    "\"> \" prompt on stderr. The line /reset forgets the conversation; /exit or\n"
    "end of input quits. Ctrl-C stops the reply being written and returns to the\n"
    "prompt (the conversation keeps what was said); Ctrl-C again quits.\n"
    "\n"
    "  -m, --model FILE        GGUF model or llama2.c checkpoint\n"
    "  -z, --tokenizer FILE    tokenizer (default: the model's own)\n"
    "      --template NAME     llama2, llama3, chatml, zephyr or mistral (default: recognised from\n"
    "                          the model's tokenizer.chat_template; chatml when it has none)\n"
    "      --system TEXT       a system message opening the conversation\n"
    "  -n, --steps N           most tokens per reply (default 256; also --n-predict)\n"
    TOOL_SAMPLER_HELP
    "  -c, --ctx N             context length (default: the model's; also --ctx-size); longer than\n"
    "                          the model was trained on is allowed, with a warning\n"
    TOOL_KV_HELP
    "      --lora FILE[:S]     apply a LoRA adapter with scale S (default 1); repeatable\n"
    TOOL_DRAFT_HELP
    "      --show-prompt       print each rendered prompt to stderr\n"
    "      --no-cache          evaluate the whole conversation every turn instead of reusing\n"
    "                          the cached positions it shares with the last one (for checking)\n"
    "  -t, --threads N         threads (default: all CPUs)\n"
    "  -h, --help              this text\n"
    "\n"
    "example: edgellm chat -m qwen2.5-0.5b-instruct.gguf --system \"Answer briefly.\"\n";

// Ctrl-C: the first stops the reply being written, a second one (or one at
// the prompt) quits. The handler only counts; the loop counts the ones it has
// acted on, so one that arrives between a reply and the next prompt is not lost.
static volatile sig_atomic_t interrupts;
static void on_sigint(int sig) {
    (void)sig;
    if (interrupts < 1 << 30) interrupts++;
}

typedef struct {
    el_chat_msg *msgs;
    int n, cap;
} conversation;

static int conv_add(conversation *c, const char *role, const char *content, size_t len) {
    if (c->n == c->cap) {
        int cap = c->cap ? c->cap * 2 : 16;
        el_chat_msg *m = realloc(c->msgs, (size_t)cap * sizeof *m);
        if (!m) return -1;
        c->msgs = m;
        c->cap = cap;
    }
    char *s = malloc(len + 1);
    if (!s) return -1;
    memcpy(s, content, len);
    s[len] = 0;
    c->msgs[c->n].role = role;
    c->msgs[c->n].content = s;
    c->n++;
    return 0;
}

// text[0..n) with every byte that does not start a valid UTF-8 sequence
// replaced by U+FFFD; NUL-terminated, malloc'ed (NULL when out of memory).
static char *utf8_clean(const char *text, size_t n) {
    char *out = malloc(3 * n + 1);
    if (!out) return NULL;
    size_t o = 0, i = 0;
    while (i < n) {
        size_t k = 1;
        unsigned char c = (unsigned char)text[i];
        if (c >= 0x80) k = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
        if (c != 0 && i + k <= n && el_utf8_valid(text + i, k)) {
            memcpy(out + o, text + i, k);
            o += k;
            i += k;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);  // U+FFFD
            o += 3;
            i++;
        }
    }
    out[o] = 0;
    return out;
}

static void conv_clear(conversation *c, int keep) {
    for (int i = keep; i < c->n; i++) free((char *)c->msgs[i].content);
    c->n = keep;
}

int cmd_chat(int argc, char **argv) {
    cli c;
    cli_init(&c, "chat", argc, argv);
    const char *model_path = NULL, *tok_path = NULL, *tmpl_name = NULL, *system = NULL;
    tool_loras lo = {0};
    int steps = 256, threads = 0, ctx = 0, have_seed = 0, show_prompt = 0, no_cache = 0, kv_type = 0;
    tool_draft dr = {0};
    el_pipeline *pipe = NULL;  // with --draft: the model's (local) pipeline, verifying drafts
    el_spec *spec = NULL;
    el_sampler_params sp = el_sampler_defaults();
    const char *a;
    int opt;
    while ((a = cli_next(&c, &opt))) {
        if (cli_is(a, "-h", "--help")) { fputs(usage, stdout); return 0; }
        else if (cli_is(a, "-m", "--model")) model_path = cli_str(&c, a);
        else if (cli_is(a, "-z", "--tokenizer")) tok_path = cli_str(&c, a);
        else if (cli_is(a, NULL, "--template")) tmpl_name = cli_str(&c, a);
        else if (cli_is(a, NULL, "--system")) system = cli_str(&c, a);
        else if (cli_is(a, "-n", "--steps") || cli_is(a, NULL, "--n-predict")) cli_int(&c, a, 1, 1 << 24, &steps);
        else if (tool_sampler_option(&c, a, &sp, &have_seed)) continue;
        else if (cli_is_ctx(a)) cli_int(&c, a, 1, 1 << 20, &ctx);
        else if (tool_kv_option(&c, a, &kv_type)) continue;
        else if (cli_is(a, "-t", "--threads")) cli_int(&c, a, 1, 256, &threads);
        else if (cli_is(a, NULL, "--show-prompt")) show_prompt = 1;
        else if (cli_is(a, NULL, "--no-cache")) no_cache = 1;
        else if (tool_draft_option(&c, a, &dr)) continue;
        else if (tool_lora_option(&c, a, &lo)) continue;
        else return cli_unknown(&c, a);
    }
    if (c.failed) return 2;
    if (!model_path) return cli_fail(&c, "-m MODEL is required");
    if (tmpl_name) {
        el_chat_template t;
        el_error e;
        if (el_chat_template_from_name(tmpl_name, &t, &e)) return cli_fail(&c, "--template: %s", e.msg);
    }
    if (!have_seed) sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)el_time_ns() << 16);

    el_error err = {0};
    el_model *m = NULL;
    el_tokenizer *tok = NULL;
    el_pool *pool = NULL;
    el_session *s = NULL;
    el_sampler *smp = NULL;
    float *logits = NULL;
    int *cached = NULL, n_cached = 0, *ids = NULL, n_ids = 0, rc = 1;
    char *line = NULL;
    size_t line_cap = 0;
    conversation conv = {0};
    el_stopper reply = {0};
    tool_chat chat;
    int tty = isatty(0);
    if (el_sampler_check(&sp, &err)) goto out;
    if (system && tool_check_prompt(system, strlen(system), "--system", 0, &err)) goto out;
    el_model_opts mo = {.threads = threads};  // the packed copy striped for the decode's threads
    if (el_model_open(model_path, &mo, &m, &err)) goto out;
    if (tool_loras_load(&lo, m, &err)) goto out;
    if (el_model_tokenizer(m, tok_path, &tok, &err)) goto out;
    if (tool_chat_init(&chat, m, tok, tmpl_name, &err)) goto out;
    ctx = tool_ctx("chat", m, ctx);
    pool = el_pool_new(threads);
    if (!pool) {
        el_err(&err, EL_ERR_NOMEM, "could not start %d threads", threads);
        goto out;
    }
    el_session_opts so = {.ctx = ctx, .kv_type = kv_type};
    if (tool_draft_load(&dr, m, ctx, pool, &err)) goto out;
    if (dr.arg) {
        el_spec_opts spo = {.k = dr.k, .max_k = 8, .sp = sp};
        if (el_pipeline_new(m, &so, pool, NULL, &pipe, &err) || (lo.n && el_pipeline_set_lora(pipe, &lo.set, &err)) ||
            el_spec_new(pipe, m, dr.d, &spo, &spec, &err))
            goto out;
    } else if (el_session_new(m, &so, pool, &s, &err)) {
        goto out;
    }
    if (lo.n && s) el_session_set_lora(s, &lo.set);
    smp = el_sampler_new(&sp, m->hp.vocab);
    logits = malloc((size_t)m->hp.vocab * sizeof(float));
    cached = malloc((size_t)ctx * sizeof(int));
    if (!smp || !logits || !cached) {
        el_err(&err, EL_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (system && conv_add(&conv, "system", system, strlen(system))) {
        el_err(&err, EL_ERR_NOMEM, "out of memory");
        goto out;
    }
    int n_fixed = conv.n;  // the system message survives /reset
    fprintf(stderr, "chat: template %s, context %d tokens; /reset forgets, /exit quits, Ctrl-C stops a reply\n",
            el_chat_template_name(chat.tmpl), ctx);
    struct sigaction sa = {0};
    sa.sa_handler = on_sigint;  // no SA_RESTART: Ctrl-C at the prompt ends the read, and chat
    sigaction(SIGINT, &sa, NULL);

    int handled = 0;  // Ctrl-Cs acted on (each stopped a reply)
    for (;;) {
        if (tty) fputs("> ", stderr);
        if (interrupts > handled) break;
        ssize_t got = getline(&line, &line_cap, stdin);
        if (got < 0 || interrupts > handled) break;
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = 0;
        if (got == 0) continue;
        if (!strcmp(line, "/exit") || !strcmp(line, "/quit")) break;
        if (!strcmp(line, "/reset")) {
            conv_clear(&conv, n_fixed);
            n_cached = 0;
            fputs("chat: conversation forgotten\n", stderr);
            continue;
        }
        size_t blank = 0;
        while (blank < (size_t)got && (line[blank] == ' ' || line[blank] == '\t')) blank++;
        if (blank == (size_t)got) continue;  // nothing said
        if (tool_check_prompt(line, (size_t)got, "input line", 0, &err)) {
            // one bad line is the user's typo, not the end of the conversation
            fprintf(stderr, "chat: %s; say it again\n", err.msg);
            continue;
        }
        if (conv_add(&conv, "user", line, (size_t)got)) {
            el_err(&err, EL_ERR_NOMEM, "out of memory");
            goto out;
        }
        free(ids);
        ids = NULL;
        if (tool_chat_encode(&chat, tok, conv.msgs, conv.n, &ids, &n_ids, &err)) goto out;
        if (n_ids + 1 >= ctx && conv.n > n_fixed + 1) {
            // too long with the history: forget the earlier turns, keep this one
            fprintf(stderr, "chat: the conversation (%d tokens) no longer fits the context of %d; forgetting the "
                    "earlier turns\n", n_ids, ctx);
            el_chat_msg last = conv.msgs[conv.n - 1];
            conv.n--;
            conv_clear(&conv, n_fixed);
            conv.msgs[conv.n++] = last;
            n_cached = 0;
            free(ids);
            ids = NULL;
            if (tool_chat_encode(&chat, tok, conv.msgs, conv.n, &ids, &n_ids, &err)) goto out;
        }
        if (show_prompt) {
            char *text = NULL;
            if (!el_chat_render(chat.tmpl, conv.msgs, conv.n, 1, chat.bos, chat.eos, &text, &err)) {
                fprintf(stderr, "chat: prompt (%d tokens): %s\n", n_ids, text);
                free(text);
            }
        }
        if (n_ids + 1 >= ctx) {
            fprintf(stderr, "chat: this turn alone (%d tokens) does not fit the context of %d; say less\n", n_ids,
                    ctx);
            conv_clear(&conv, n_fixed);
            n_cached = 0;
            continue;
        }
        // reuse the cached positions the new prompt shares; always re-evaluate one
        int keep = 0;
        if (no_cache) n_cached = 0;
        while (keep < n_cached && keep < n_ids - 1 && cached[keep] == ids[keep]) keep++;
        if (spec) {
            if (no_cache) el_spec_free(spec), spec = NULL;  // forget the cache: a fresh generator
            el_spec_opts spo = {.k = dr.k, .max_k = 8, .sp = sp};
            if ((!spec && el_spec_new(pipe, m, dr.d, &spo, &spec, &err)) || el_spec_prefill(spec, ids, n_ids, &err))
                goto out;
        } else if (el_session_forward(s, ids + keep, n_ids - keep, keep, logits, 0, &err)) {
            goto out;
        }
        memcpy(cached, ids, (size_t)n_ids * sizeof(int));
        n_cached = n_ids;
        for (int i = 0; i < n_ids; i++) el_sampler_accept(smp, ids[i]);
        el_stopper_init(&reply, &chat.eot_text, 1);
        int prev = ids[n_ids - 1], bos = el_tokenizer_bos(tok), eos = el_tokenizer_eos(tok);
        int pos = n_ids, ctx_end = 0;
        for (int k = 0; spec && k < steps && interrupts == handled;) {  // speculative rounds
            if (el_spec_length(spec) >= ctx) {
                ctx_end = 1;
                break;
            }
            int toks[EL_SPEC_MAX_K + 1], n_toks, stop = 0;
            if (el_spec_round(spec, steps - k, toks, &n_toks, &err)) goto out;
            for (int i = 0; i < n_toks && !stop; i++, k++) {
                int next = toks[i];
                if (next == eos || next == bos || next == chat.eot_id) stop = 1;
                else if ((stop = tool_chat_emit(&reply, stdout, tok, prev, next)) < 0) {
                    el_err(&err, EL_ERR_NOMEM, "out of memory");
                    goto out;
                }
                prev = next;
            }
            if (stop) break;
        }
        for (int k = 0; !spec && k < steps && interrupts == handled; k++) {
            int next = el_sampler_sample(smp, logits);
            if (next == eos || next == bos || next == chat.eot_id) break;
            int stop = tool_chat_emit(&reply, stdout, tok, prev, next);
            if (stop < 0) {
                el_err(&err, EL_ERR_NOMEM, "out of memory");
                goto out;
            }
            if (stop) break;
            el_sampler_accept(smp, next);
            prev = next;
            if (pos + 1 >= ctx) {
                ctx_end = 1;
                break;
            }
            if (el_session_forward(s, &next, 1, pos, logits, 0, &err)) goto out;
            cached[n_cached++] = next;
            pos++;
        }
        tool_chat_flush(&reply, stdout);
        fputs("\n\n", stdout);
        fflush(stdout);
        if (interrupts > handled && ++handled == interrupts)
            fputs("chat: reply stopped (Ctrl-C); Ctrl-C again quits\n", stderr);
        if (ctx_end) fprintf(stderr, "chat: the reply stopped at the end of the context (%d positions)\n", ctx);
        // The reply can end inside a character (cut by -n, or a byte token)
        // or hold invalid bytes: keep it as valid UTF-8 so the next turn's
        // prompt encodes, with U+FFFD where bytes were not text.
        char *clean = utf8_clean(reply.text ? reply.text : "", reply.len);
        if (!clean || conv_add(&conv, "assistant", clean, strlen(clean))) {
            free(clean);
            el_err(&err, EL_ERR_NOMEM, "out of memory");
            goto out;
        }
        free(clean);
        el_stopper_free(&reply);
        if (interrupts > handled) break;
    }
    rc = 0;
out:
    if (rc) cli_error(&err);
    el_stopper_free(&reply);
    conv_clear(&conv, 0);
    free(conv.msgs);
    free(line);
    free(ids);
    free(cached);
    free(logits);
    el_sampler_free(smp);
    el_session_free(s);
    el_spec_free(spec);
    el_pipeline_free(pipe);
    tool_draft_free(&dr);
    el_pool_free(pool);
    el_tokenizer_free(tok);
    tool_loras_free(&lo);
    el_model_close(m);
    return rc;
}
