// edgellm run: generate text from a prompt on this machine.
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chatturn.h"
#include "cli.h"
#include "autoplan.h"
#include "common.h"
#include "edgellm/lora.h"
#include "edgellm/model.h"
#include "edgellm/sample.h"
#include "edgellm/spec.h"
#include "edgellm/split.h"
#include "edgellm/vision.h"


static const char *usage_head =
    "usage: edgellm run -m MODEL [-z TOKENIZER] (-p PROMPT | -f FILE) [options]\n"
    "\n"
    "Generates text from PROMPT. stdout carries only the prompt followed by the\n"
    "generated text and a newline; diagnostics go to stderr.\n"
    "\n"
    "  -m, --model FILE        GGUF model or llama2.c checkpoint\n"
    "  -z, --tokenizer FILE    tokenizer (llama2.c tokenizer file or GGUF); default: the model's own\n"
    "  -p, --prompt TEXT       the prompt (UTF-8, not empty)\n"
    "  -f, --file FILE         read the prompt from FILE (- = standard input)\n"
    "  -e, --escape            turn \\n \\t \\\\ \\\" \\xHH ... in the prompt into the bytes they name\n"
    "  -n, --steps N           new tokens to generate (default 256; also --n-predict); stops early\n"
    "                          at BOS/EOS, and at the end of the context with a notice\n"
    "      --ignore-eos        do not stop at BOS/EOS (for benchmarks)\n"
    TOOL_SAMPLER_HELP
    "  -c, --ctx N             context length (default: the model's; also --ctx-size); longer than\n"
    "                          the model was trained on is allowed, with a warning\n"
    TOOL_KV_HELP
    "      --lora FILE[:S]     apply a LoRA adapter (GGUF) with scale S (default 1); repeatable\n"
    "      --chat              the prompt is a user message: render it with the model's chat\n"
    "                          template, print only the reply, stop at the end of the turn\n"
    "      --template NAME     with --chat: llama2, llama3, chatml, zephyr or mistral\n"
    "      --system TEXT       with --chat: a system message before the prompt\n"
    "      --mmproj FILE       a LLaVA-style projector file (clip.* keys, v.* and mm.* tensors)\n"
    "      --image FILE        a PNG or JPEG (repeatable, with --mmproj): its projected rows take\n"
    "                          the place of an <image> marker in the prompt, in order; with no\n"
    "                          marker the images come first (in the user turn with --chat). The\n"
    "                          image is decoded and encoded here; with --split only hidden states\n"
    "                          after this device's layers leave it (so the cut must be 1 or more)\n"
    "  -t, --threads N         threads (default: all CPUs)\n"
    "      --stats             print a summary to stderr: prefill and decode tokens/s, the mean\n"
    "                          time per token (device, link, workers), bytes, peak memory\n"
    "      --stats=tokens      the summary and one line per token\n"
    "      --json              print the totals as one JSON object on stderr\n"
    TOOL_DRAFT_HELP
    "\n"
    "  -h, --help              this text\n"
    "\n";
static const char *usage_tail =
    "      --edge-sample       with --split: the last worker samples with these settings and returns\n"
    "                          tokens, not logits (the text equals a local run with the same seed)\n"
    "\n"
    "example: edgellm run -m ../shared/models/aidreams260K.bin -z ../shared/models/tok512.bin \\\n"
    "           -p \"The dream\" -n 100 --temp 0\n"
    "         edgellm run -m model.gguf -p \"Hello\" --split 2 --via 127.0.0.1:7001 --insecure --stats\n"
    "         edgellm run -m llava.gguf --mmproj mmproj.gguf --image cat.jpg -p \"What is in <image>?\" --chat\n";

// Printing a generated token: 1 when generation ends at it (end of text, end
// of the turn, a stop string; it is not counted), 0 when printed, -1 when out
// of memory.
typedef struct {
    int chat_mode, ignore_eos, bos, eos;
    tool_chat *chat;
    el_stopper *reply;
    const el_tokenizer *tok;
} emitter;
static int emit(const emitter *e, int prev, int next) {
    if (!e->ignore_eos && (next == e->bos || next == e->eos)) return 1;
    if (e->chat_mode) {
        if (next == e->chat->eot_id) return 1;
        return tool_chat_emit(e->reply, stdout, e->tok, prev, next);
    }
    tool_print_piece(stdout, e->tok, prev, next);
    fflush(stdout);
    return 0;
}

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
}

static void print_stats_line(FILE *f, const char *label, const el_split_stats *st, int split) {
    fprintf(f, "%s: device %.3f ms", label, st->device_s * 1e3);
    if (split) {
        fprintf(f, ", link %.3f ms", st->link_s * 1e3);
        if (st->queue_s > 0) fprintf(f, ", queued %.3f ms", st->queue_s * 1e3);
        for (int i = 0; i < st->n_workers; i++) fprintf(f, ", worker%d %.3f ms", i + 1, st->worker_s[i] * 1e3);
        fprintf(f, ", sent %llu B, received %llu B", (unsigned long long)st->bytes_sent,
                (unsigned long long)st->bytes_received);
    }
    fputc('\n', f);
}

int cmd_run(int argc, char **argv) {
    cli c;
    cli_init(&c, "run", argc, argv);
    const char *model_path = NULL, *tok_path = NULL, *prompt = NULL, *prompt_file = NULL;
    const char *tmpl_name = NULL, *system = NULL;
    int chat_mode = 0;
    const char *mmproj = NULL, *images[64];
    int n_images = 0;
    tool_loras lo = {0};
    int steps = 256, ignore_eos = 0, threads = 0, ctx = 0, stats = 0, json = 0, have_seed = 0, split, escapes = 0;
    int stats_tokens = 0;
    int kv_type = EL_DTYPE_F32, edge = 0;
    tool_draft dr = {0};
    tool_split ts;
    tool_split_init(&ts);
    el_sampler_params sp = el_sampler_defaults();
    const char *a;
    int opt;
    while ((a = cli_next(&c, &opt))) {
        if (cli_is(a, "-h", "--help")) { printf("%s%s%s", usage_head, tool_split_help, usage_tail); return 0; }
        else if (cli_is(a, "-m", "--model")) model_path = cli_str(&c, a);
        else if (cli_is(a, "-z", "--tokenizer")) tok_path = cli_str(&c, a);
        else if (cli_is(a, "-p", "--prompt")) prompt = cli_str(&c, a);
        else if (cli_is(a, "-f", "--file")) prompt_file = cli_str(&c, a);
        else if (cli_is(a, "-e", "--escape")) escapes = 1;
        else if (cli_is(a, "-n", "--steps") || cli_is(a, NULL, "--n-predict")) cli_int(&c, a, 0, 1 << 24, &steps);
        else if (tool_sampler_option(&c, a, &sp, &have_seed)) continue;
        else if (cli_is_ctx(a)) cli_int(&c, a, 1, 1 << 20, &ctx);
        else if (tool_kv_option(&c, a, &kv_type)) continue;
        else if (cli_is(a, NULL, "--edge-sample")) edge = 1;
        else if (tool_draft_option(&c, a, &dr)) continue;
        else if (cli_is(a, "-t", "--threads")) cli_int(&c, a, 1, 256, &threads);
        else if (cli_is(a, NULL, "--stats")) stats = 1;
        else if (cli_is(a, NULL, "--stats=tokens")) stats = stats_tokens = 1;
        else if (cli_is(a, NULL, "--json")) json = 1;
        else if (cli_is(a, NULL, "--ignore-eos")) ignore_eos = 1;
        else if (cli_is(a, NULL, "--chat")) chat_mode = 1;
        else if (cli_is(a, NULL, "--template")) tmpl_name = cli_str(&c, a);
        else if (cli_is(a, NULL, "--system")) system = cli_str(&c, a);
        else if (cli_is(a, NULL, "--mmproj")) mmproj = cli_str(&c, a);
        else if (cli_is(a, NULL, "--image")) {
            const char *v = cli_str(&c, a);
            if (v && n_images == 64) return cli_fail(&c, "at most 64 --image files");
            if (v) images[n_images++] = v;
        }
        else if (tool_lora_option(&c, a, &lo)) continue;
        else if (tool_split_option(&c, a, &ts)) continue;
        else return cli_unknown(&c, a);
    }
    if (c.failed) return 2;
    if (!model_path) return cli_fail(&c, "-m MODEL is required");
    if (!prompt && !prompt_file) return cli_fail(&c, "-p PROMPT or -f FILE is required");
    if (prompt && prompt_file) return cli_fail(&c, "give -p or -f, not both");
    if ((tmpl_name || system) && !chat_mode) return cli_fail(&c, "--template and --system need --chat");
    if (n_images && !mmproj) return cli_fail(&c, "--image needs --mmproj PROJ.gguf");
    ts.allow_controller = 1;
    if (tool_split_check(&c, &ts)) return 2;
    if (n_images && ts.autoplan)
        return cli_fail(&c, "--split auto cannot move the cut across image rows; give the cut, e.g. --split 2");
    if (n_images && ts.enabled && !ts.autoplan && ts.o.cuts[0] == 0)
        return cli_fail(&c, "--split 0 would send the image rows themselves over the link; cut after layer 1 or later");
    split = ts.enabled;
    if (edge && (!split || ts.autoplan || ts.o.ushape))
        return cli_fail(&c, "--edge-sample needs --split with fixed cuts and no --ushape (the last worker holds the head)");
    if (edge && n_images)
        return cli_fail(&c, "--edge-sample cannot take --image: image rows have no token ids for the worker's sampler");
    if (dr.arg && edge) return cli_fail(&c, "--draft needs the logits here: it excludes --edge-sample");
    if (dr.arg && ts.autoplan) return cli_fail(&c, "--draft needs fixed cuts (--split K[,M...], not auto)");
    if (dr.arg && n_images)
        return cli_fail(&c, "--draft cannot take --image: the draft model would not see the image rows");
    el_split_opts so_split = ts.o;
    if (!have_seed) sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)el_time_ns() << 16);

    el_error err = {0};
    el_model *m = NULL;
    el_tokenizer *tok = NULL;
    el_pipeline *pipe = NULL;
    tool_auto autop;
    int have_auto = 0;
    int *history = NULL;  // every token so far, for re-planning
    el_sampler *smp = NULL;
    el_spec *spec = NULL;
    el_pool *pool = NULL;
    tool_chat chat = {0};
    el_stopper reply = {0};
    el_vision *vis = NULL;
    el_mm_prompt mm = {0};
    float *img_rows = NULL;  // [n_images][n_patches][dim]
    int n_img_rows = 0;
    char *file_text = NULL, *system_owned = NULL;
    int *ids = NULL, n_ids = 0, rc = 1;
    float *logits = NULL;
    float *token_ms = NULL;  // --json: the wall time of each decode step
    int n_token_ms = 0;
    size_t prompt_len;
    if (tool_load_prompt(prompt, prompt_file, 0, escapes, &file_text, &prompt, &prompt_len, &err)) goto out;
    if (el_sampler_check(&sp, &err)) goto out;
    el_model_opts mo = {0};
    if (tool_split_prepare(&ts, &mo, &err)) goto out;
    if (tool_split_drop_head(&ts, model_path, &mo, &err)) goto out;
    if (tool_split_route(&ts, model_path, &err)) goto out;
    so_split = ts.o;
    if (edge) so_split.edge_sampling = &sp;
    if (dr.self_layers && split) {  // the device runs the draft's layers and the head too
        if (mo.layer_end < dr.self_layers) mo.layer_end = dr.self_layers;
        mo.no_layers = 0;
        mo.no_head = 0;
    }
    mo.threads = threads;  // the packed copy striped for the decode's threads (0: all CPUs, as the pool)
    if (el_model_open(model_path, &mo, &m, &err)) goto out;
    if (dr.arg && dr.self_layers > m->hp.n_layers) {  // before any work (the draft opens once the context is known)
        el_err(&err, EL_ERR_ARG, "--draft self:%d: %s has %d layers", dr.self_layers, model_path, m->hp.n_layers);
        goto out;
    }
    if (tool_split_check_model(&ts, m, &err)) goto out;
    if (tool_loras_load(&lo, m, &err)) goto out;
    if (el_model_tokenizer(m, tok_path, &tok, &err)) goto out;
    if (mmproj) {  // the projector must fit this model before any image is read
        if (el_vision_open(mmproj, &vis, &err) || el_vision_check_dim(vis, m->hp.dim, model_path, &err)) goto out;
        n_img_rows = el_vision_hp(vis)->n_patches;
    }
    if (chat_mode) {
        if (system && escapes) {
            if (!(system_owned = strdup(system))) {
                el_err(&err, EL_ERR_NOMEM, "out of memory");
                goto out;
            }
            tool_unescape(system_owned, strlen(system_owned));
            system = system_owned;
        }
        if (system && tool_check_prompt(system, strlen(system), "--system", 0, &err)) goto out;
        if (tool_chat_init(&chat, m, tok, tmpl_name, &err)) goto out;
        // images without markers go first inside the user's turn, as LLaVA's prompts have them
        size_t extra = n_images && !memmem(prompt, prompt_len, "<image>", 7) ? (size_t)n_images * 8 : 0;
        char *user = malloc(prompt_len + extra + 1);
        if (!user) {
            el_err(&err, EL_ERR_NOMEM, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < extra; i += 8) memcpy(user + i, "<image>\n", 8);
        memcpy(user + extra, prompt, prompt_len);
        user[extra + prompt_len] = 0;
        el_chat_msg msgs[2] = {{"system", system}, {"user", user}};
        el_status cs;
        if (n_images) {  // as tool_chat_encode, with the text cut at the image markers
            char *text = NULL;
            el_text_span *spans = NULL;
            int n_spans = 0;
            cs = el_chat_render_spans(chat.tmpl, system ? msgs : msgs + 1, system ? 2 : 1, 1, chat.bos, chat.eos, &text,
                                      &spans, &n_spans, &err);
            if (!cs) {
                unsigned flags = EL_ENCODE_SPECIAL | (el_tokenizer_add_bos(tok) ? EL_ENCODE_ADD_BOS : 0);
                cs = el_mm_prompt_encode(tok, text, strlen(text), "<image>", flags, spans, n_spans, n_images, &mm, &err);
            }
            free(text);
            free(spans);
        } else {
            cs = tool_chat_encode(&chat, tok, system ? msgs : msgs + 1, system ? 2 : 1, &ids, &n_ids, &err);
        }
        free(user);
        if (cs) goto out;
        el_stopper_init(&reply, &chat.eot_text, 1);
    } else if (n_images) {
        if (el_mm_prompt_encode(tok, prompt, prompt_len, "<image>", el_tokenizer_add_bos(tok) ? EL_ENCODE_ADD_BOS : 0,
                                NULL, 0, n_images, &mm, &err))
            goto out;
    } else if (el_tokenizer_encode(tok, prompt, prompt_len, el_tokenizer_add_bos(tok), &ids, &n_ids, &err)) {
        // BOS as the model's metadata asks (Qwen2 vocabularies do not want one)
        goto out;
    }
    if (n_images) {  // the prompt's own ids, images aside (for the sampler and printing)
        n_ids = mm.n_ids;
        ids = malloc(((size_t)n_ids + 1) * sizeof(int));
        if (!ids) {
            el_err(&err, EL_ERR_NOMEM, "out of memory");
            goto out;
        }
        memcpy(ids, mm.ids, (size_t)n_ids * sizeof(int));
    }
    ctx = tool_ctx("run", m, ctx);
    int n_pos = n_images ? el_mm_prompt_positions(&mm, n_img_rows) : n_ids;
    if (n_pos >= ctx) {
        el_err(&err, EL_ERR_RANGE, "the prompt has %d positions, more than the context of %d allows", n_pos, ctx);
        goto out;
    }
    history = malloc((size_t)ctx * sizeof(int));
    if (!history) {
        el_err(&err, EL_ERR_NOMEM, "out of memory");
        goto out;
    }
    memcpy(history, ids, (size_t)n_ids * sizeof(int));
    pool = el_pool_new(threads);
    el_session_opts so = {.ctx = ctx, .kv_type = kv_type};
    if (!pool) goto out;
    if (n_images) {  // decoded, preprocessed and encoded here: the image never leaves this device
        const el_vision_hparams *vh = el_vision_hp(vis);
        size_t per = (size_t)n_img_rows * m->hp.dim;
        float *px = malloc((size_t)3 * vh->image_size * vh->image_size * sizeof(float));
        img_rows = malloc((size_t)n_images * per * sizeof(float));
        if (!px || !img_rows) {
            free(px);
            el_err(&err, EL_ERR_NOMEM, "out of memory for %d images", n_images);
            goto out;
        }
        el_status is = EL_OK;
        for (int i = 0; i < n_images && !is; i++) {
            el_image img;
            double ti = el_time_s();
            if (!(is = el_image_load(images[i], &img, &err))) {
                is = el_vision_preprocess(vh, &img, px, &err);
                el_image_free(&img);
            }
            if (!is) is = el_vision_encode(vis, pool, px, img_rows + (size_t)i * per, &err);
            if (!is && stats)
                fprintf(stderr, "image %d: %s -> %d rows in %.3f s\n", i + 1, images[i], n_img_rows, el_time_s() - ti);
        }
        free(px);
        if (is) goto out;
    }
    if (tool_draft_load(&dr, m, ctx, pool, &err)) goto out;  // a bad draft stops us before the link opens
    if (ts.autoplan) {
        // start all local with the link open, then let the planner choose
        if (tool_auto_init(&autop, &ts, m, pool, ctx, &err)) goto out;
        have_auto = 1;
        so_split.cuts[0] = m->hp.n_layers;
        so_split.n_cuts = 1;
    }
    if (el_pipeline_new(m, &so, pool, split ? &so_split : NULL, &pipe, &err)) goto out;
    if (ts.autoplan && tool_auto_replan(&autop, pipe, ids, 0, 1, &err)) goto out;
    if (lo.n && el_pipeline_set_lora(pipe, &lo.set, &err)) goto out;
    if (dr.arg) {
        el_spec_opts spo = {.k = dr.k, .max_k = 8, .sp = sp};
        if (el_spec_new(pipe, m, dr.d, &spo, &spec, &err)) goto out;
    }
    smp = el_sampler_new(&sp, m->hp.vocab);
    logits = malloc((size_t)m->hp.vocab * sizeof(float));
    if (!smp || !logits) {
        el_err(&err, EL_ERR_NOMEM, "out of memory");
        goto out;
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    // A BOS (control) prints nothing, and the piece after it drops its prefix space.
    if (n_images && !chat_mode) {  // an image prints as its marker, where the prompt had one
        int marked = memmem(prompt, prompt_len, "<image>", 7) != NULL;
        for (int it = 0, prev_id = -1; it < mm.n_items; it++)
            if (mm.image[it] >= 0) {
                if (marked) fputs("<image>", stdout);
            } else {
                for (int i = mm.start[it]; i < mm.start[it] + mm.len[it]; i++) {
                    tool_print_piece(stdout, tok, prev_id, mm.ids[i]);
                    prev_id = mm.ids[i];
                }
            }
    }
    for (int i = 0; i < n_ids && !chat_mode && !n_images; i++) tool_print_piece(stdout, tok, i ? ids[i - 1] : -1, ids[i]);
    fflush(stdout);
    for (int i = 0; i < n_ids; i++) el_sampler_accept(smp, ids[i]);

    double t0 = el_time_s();
    int edge_next = -1;  // with --edge-sample: the token the last worker sampled
    if (n_images) {  // runs of text and of image rows, each at its positions
        for (int it = 0, at = 0; it < mm.n_items; it++) {
            int img = mm.image[it];
            el_status fs = img >= 0 ? el_pipeline_forward_embd(pipe, img_rows + (size_t)img * n_img_rows * m->hp.dim,
                                                               n_img_rows, at, logits, 0, &err)
                                    : el_pipeline_forward(pipe, mm.ids + mm.start[it], mm.len[it], at, logits, 0, &err);
            if (fs) goto out;
            at += img >= 0 ? n_img_rows : mm.len[it];
        }
    } else if (spec ? el_spec_prefill(spec, ids, n_ids, &err)
                    : edge ? el_pipeline_next_token(pipe, ids, n_ids, 0, &edge_next, &err)
                           : el_pipeline_forward(pipe, ids, n_ids, 0, logits, 0, &err)) {
        goto out;
    }
    double t_prefill = el_time_s() - t0;
    el_split_stats prefill = *el_pipeline_total(pipe);
    if (stats_tokens) print_stats_line(stderr, "prefill", &prefill, split);
    int pos = n_pos, prev = n_ids ? ids[n_ids - 1] : -1, generated = 0, ctx_end = 0;
    if (json) token_ms = malloc((size_t)(steps + 1) * sizeof(float));
    emitter em = {chat_mode, ignore_eos, el_tokenizer_bos(tok), el_tokenizer_eos(tok), &chat, &reply, tok};
    double t1 = el_time_s(), t_tok = t1;
    // speculative: rounds of drafted tokens, each verified in one pass
    while (spec && generated < steps && !interrupted) {
        if (el_spec_length(spec) > ctx) {
            ctx_end = 1;
            break;
        }
        int got[EL_SPEC_MAX_K + 1], n_got, stop = 0;
        if (el_spec_round(spec, steps - generated, got, &n_got, &err)) {
            if (interrupted) break;
            goto out;
        }
        double now = el_time_s();
        for (int i = 0; i < n_got && !stop; i++) {
            if ((stop = emit(&em, prev, got[i])) < 0) {
                el_err(&err, EL_ERR_NOMEM, "out of memory");
                goto out;
            }
            if (stop) break;
            generated++;
            prev = got[i];
            if (token_ms) token_ms[n_token_ms++] = (float)((now - t_tok) * 1e3 / n_got);  // the round's share
        }
        t_tok = now;
        if (stats_tokens) {
            const el_spec_stats *ss = el_spec_get_stats(spec);
            char label[64];
            snprintf(label, sizeof label, "round %llu: k %d, %d tokens", (unsigned long long)ss->rounds, ss->last_k, n_got);
            print_stats_line(stderr, label, el_pipeline_last(pipe), split);
        }
        if (stop) break;
    }
    while (!spec && generated < steps && !interrupted) {
        int next = edge ? edge_next : el_sampler_sample(smp, logits);
        int stop = emit(&em, prev, next);
        if (stop < 0) {
            el_err(&err, EL_ERR_NOMEM, "out of memory");
            goto out;
        }
        if (stop) break;
        el_sampler_accept(smp, next);
        generated++;
        prev = next;
        if (generated == steps) break;
        if (pos >= ctx) {
            ctx_end = 1;
            break;
        }
        history[pos] = next;
        if (have_auto && generated % ts.replan_every == 0 && tool_auto_replan(&autop, pipe, history, pos, 0, &err)) goto out;
        if (edge ? el_pipeline_next_token(pipe, &next, 1, pos, &edge_next, &err)
                 : el_pipeline_forward(pipe, &next, 1, pos, logits, 0, &err)) {
            if (interrupted) break;  // Ctrl-C during a wait on the link: a clean stop
            goto out;
        }
        if (token_ms) {  // the period a user sees: sampling, printing and the forward pass
            double now = el_time_s();
            token_ms[n_token_ms++] = (float)((now - t_tok) * 1e3);
            t_tok = now;
        }
        if (stats_tokens) {
            char label[32];
            snprintf(label, sizeof label, "token %d", generated);
            print_stats_line(stderr, label, el_pipeline_last(pipe), split);
        }
        pos++;
    }
    double t_decode = el_time_s() - t1;
    if (chat_mode) tool_chat_flush(&reply, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    if (ctx_end)
        fprintf(stderr, "edgellm run: stopped at the end of the context (%d positions) after %d of the %d tokens asked "
                "for%s\n", ctx, generated, steps, ctx < m->hp.ctx ? "; -c N gives a longer one" : "");
    // decode totals: everything after the prefill
    el_split_stats dec = *el_pipeline_total(pipe);
    int n_dec = spec ? generated : generated > 1 ? generated - 1 : 0;  // tokens the decode time made
    dec.device_s -= prefill.device_s;
    dec.link_s -= prefill.link_s;
    dec.queue_s -= prefill.queue_s;
    for (int i = 0; i < dec.n_workers; i++) dec.worker_s[i] -= prefill.worker_s[i];
    dec.bytes_sent -= prefill.bytes_sent;
    dec.bytes_received -= prefill.bytes_received;
    double per = n_dec ? 1.0 / n_dec : 0;
    if (stats) {
        fprintf(stderr, "prefill: %d tokens in %.3f s, %.1f tokens/s\n", n_pos, t_prefill, n_pos / t_prefill);
        fprintf(stderr, "decode: %d tokens in %.3f s, %.1f tokens/s\n", generated, t_decode,
                n_dec ? n_dec / t_decode : 0.0);
        el_split_stats avg = dec;
        avg.device_s *= per;
        avg.link_s *= per;
        avg.queue_s *= per;
        for (int i = 0; i < avg.n_workers; i++) avg.worker_s[i] *= per;
        avg.bytes_sent = (uint64_t)(avg.bytes_sent * per + 0.5);
        avg.bytes_received = (uint64_t)(avg.bytes_received * per + 0.5);
        print_stats_line(stderr, "per decoded token (mean)", &avg, split);
        if (spec) {
            const el_spec_stats *ss = el_spec_get_stats(spec);
            const el_spec_cost *cc = &ss->cost;
            fprintf(stderr, "speculative: drafted %llu, accepted %llu (acceptance %.1f%%), round trips %llu, %.2f tokens "
                    "per round trip, k %s (mean %.2f)\n", (unsigned long long)ss->drafted,
                    (unsigned long long)ss->accepted, ss->drafted ? 100.0 * ss->accepted / ss->drafted : 0.0,
                    (unsigned long long)ss->rounds, ss->rounds ? (double)ss->tokens / ss->rounds : 0.0,
                    dr.k ? "fixed" : "auto", ss->rounds ? (double)ss->k_sum / ss->rounds : 0.0);
            fprintf(stderr, "speculative model: alpha %.3f, draft %.3f ms/token, verify %.3f ms + %.3f ms/row, "
                    "predicted %.1f tokens/s (k %d), measured %.1f\n", cc->alpha, cc->draft_s * 1e3,
                    cc->verify_fixed_s * 1e3, cc->verify_row_s * 1e3, el_spec_predict(cc, ss->last_k), ss->last_k,
                    n_dec ? n_dec / t_decode : 0.0);
        }
        fprintf(stderr, "peak memory: %.1f MiB (device weights: %.1f MiB), threads: %d\n", el_peak_rss() / 1048576.0,
                el_model_weight_bytes(m, 0, m->hp.n_layers, 1, 1) / 1048576.0, el_pool_size(pool));
    }
    if (json) {
        fprintf(stderr, "{\"prompt_tokens\": %d, \"generated\": %d, \"prefill_s\": %.6f, \"decode_s\": %.6f, "
                "\"decode_tokens_per_s\": %.3f, \"split\": %s, \"cuts\": [", n_pos, generated, t_prefill, t_decode,
                n_dec ? n_dec / t_decode : 0.0, split ? "true" : "false");
        for (int i = 0; split && i < so_split.n_cuts; i++) fprintf(stderr, i ? ", %d" : "%d", so_split.cuts[i]);
        fprintf(stderr, "], \"act\": \"%s\", \"per_token\": {\"device_ms\": %.4f, \"link_ms\": %.4f, \"queue_ms\": %.4f, "
                "\"worker_ms\": [",
                el_dtype_name(so_split.act_dtype), dec.device_s * per * 1e3, dec.link_s * per * 1e3, dec.queue_s * per * 1e3);
        for (int i = 0; i < dec.n_workers; i++) fprintf(stderr, i ? ", %.4f" : "%.4f", dec.worker_s[i] * per * 1e3);
        fprintf(stderr, "], \"bytes_sent\": %.1f, \"bytes_received\": %.1f}, \"peak_rss_bytes\": %zu, \"device_weight_bytes\": %zu, "
                "\"decode_t0\": %.6f, ",
                dec.bytes_sent * per, dec.bytes_received * per, el_peak_rss(),
                el_model_weight_bytes(m, 0, m->hp.n_layers, 1, 1), t1);
        if (spec) {
            const el_spec_stats *ss = el_spec_get_stats(spec);
            const el_spec_cost *cc = &ss->cost;
            fprintf(stderr, "\"drafted\": %llu, \"accepted\": %llu, \"round_trips\": %llu, \"draft_k\": %s, "
                    "\"k_mean\": %.3f, \"alpha\": %.4f, \"draft_ms\": %.4f, \"verify_fixed_ms\": %.4f, "
                    "\"verify_row_ms\": %.4f, \"predicted_tokens_per_s\": %.3f, ",
                    (unsigned long long)ss->drafted, (unsigned long long)ss->accepted, (unsigned long long)ss->rounds,
                    dr.k ? "\"fixed\"" : "\"auto\"", ss->rounds ? (double)ss->k_sum / ss->rounds : 0.0, cc->alpha,
                    cc->draft_s * 1e3, cc->verify_fixed_s * 1e3, cc->verify_row_s * 1e3,
                    ss->rounds && !dr.k && ss->rounds > 2 ? ss->predicted_sum / (ss->rounds - 2)
                                                            : el_spec_predict(cc, ss->last_k));
        }
        fprintf(stderr, "\"token_ms\": [");
        for (int i = 0; i < n_token_ms; i++) fprintf(stderr, i ? ", %.3f" : "%.3f", token_ms[i]);
        fprintf(stderr, "]}\n");
    }
    rc = 0;
out:
    if (rc && interrupted) {  // Ctrl-C while waiting or computing: a clean stop, not an error
        fputc('\n', stdout);
        rc = 0;
    }
    if (rc) cli_error(&err);
    el_stopper_free(&reply);
    tool_split_free(&ts);
    el_mm_prompt_free(&mm);
    free(img_rows);
    el_vision_close(vis);
    free(logits);
    free(token_ms);
    free(ids);
    free(file_text);
    free(system_owned);
    el_sampler_free(smp);
    el_spec_free(spec);
    tool_draft_free(&dr);
    el_pipeline_free(pipe);
    if (have_auto) tool_auto_free(&autop);
    free(history);
    el_pool_free(pool);
    el_tokenizer_free(tok);
    tool_loras_free(&lo);
    el_model_close(m);
    return rc;
}
