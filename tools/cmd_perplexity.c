// edgellm perplexity: how well a model predicts a text, over non-overlapping
// windows of the context length, with the standard error of the estimate.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "common.h"
#include "edgellm/model.h"

static const char *usage =
    "usage: edgellm perplexity -m MODEL [-z TOKENIZER] -f TEXT [-c N] [-t THREADS]\n"
    "\n"
    "Tokenizes TEXT, cuts the tokens into non-overlapping windows of N - 1 tokens,\n"
    "runs each window after one token of context, and scores every token of the\n"
    "window given the ones before it. That token is BOS when the tokenizer adds\n"
    "BOS to a prompt (SentencePiece models, or add_bos_token in the metadata);\n"
    "otherwise (Qwen2, GPT-2) it is the text's token before the window, and the\n"
    "text's first token is context only. Prints a progress line to stderr and\n"
    "on stdout: perplexity = exp(mean negative log-likelihood) with its standard\n"
    "error (delta method over the per-token values), tokens scored and windows.\n"
    "A final window shorter than N - 1 tokens is scored too.\n"
    "\n"
    "  -m, --model FILE       GGUF model or llama2.c checkpoint\n"
    "  -z, --tokenizer FILE   tokenizer (default: the model's own)\n"
    "  -f, --file FILE        the text (UTF-8)\n"
    "  -c, --ctx N            window length in tokens incl. the context token (default: the model's context, at most 512)\n"
    "  -t, --threads N        threads (default: all CPUs)\n"
    "\n"
    "example: edgellm perplexity -m ../shared/models/aidreams260K.bin -z ../shared/models/tok512.bin \\\n"
    "           -f data/dreams-eval.txt\n";

int cmd_perplexity(int argc, char **argv) {
    cli c;
    cli_init(&c, "perplexity", argc, argv);
    const char *model_path = NULL, *tok_path = NULL, *text_path = NULL, *a;
    int ctx = 0, threads = 0, opt;
    while ((a = cli_next(&c, &opt))) {
        if (cli_is(a, "-h", "--help")) { fputs(usage, stdout); return 0; }
        else if (cli_is(a, "-m", "--model")) model_path = cli_str(&c, a);
        else if (cli_is(a, "-z", "--tokenizer")) tok_path = cli_str(&c, a);
        else if (cli_is(a, "-f", "--file")) text_path = cli_str(&c, a);
        else if (cli_is_ctx(a)) cli_int(&c, a, 2, 1 << 20, &ctx);
        else if (cli_is(a, "-t", "--threads")) cli_int(&c, a, 1, 256, &threads);
        else return cli_unknown(&c, a);
    }
    if (c.failed) return 2;
    if (!model_path) return cli_fail(&c, "-m MODEL is required");
    if (!text_path) return cli_fail(&c, "-f TEXT is required");

    el_error err = {0};
    el_model *m = NULL;
    el_tokenizer *tok = NULL;
    el_pool *pool = NULL;
    el_session *s = NULL;
    char *text = NULL;
    size_t len;
    int *ids = NULL, n_ids = 0, rc = 1;
    float *logits = NULL;
    double *nll = NULL;
    int *win = NULL;
    if (tool_read_input(text_path, 256u << 20, &text, &len, &err)) goto out;
    if (tool_check_prompt(text, len, text_path, 0, &err)) goto out;
    if (el_model_open(model_path, NULL, &m, &err)) goto out;
    if (el_model_tokenizer(m, tok_path, &tok, &err)) goto out;
    if (el_tokenizer_encode(tok, text, len, 0, &ids, &n_ids, &err)) goto out;
    ctx = tool_ctx("perplexity", m, ctx ? ctx : m->hp.ctx < 512 ? m->hp.ctx : 512);
    // With BOS every token of the text is scored; without, the first is only context.
    int bos = el_tokenizer_add_bos(tok) ? el_tokenizer_bos(tok) : -1, skip = bos < 0;
    if (n_ids - skip < 2) {
        el_err(&err, EL_ERR_ARG, "%s: %d tokens are too few to score", text_path, n_ids);
        goto out;
    }
    pool = el_pool_new(threads);
    el_session_opts so = {.ctx = ctx, .max_batch = ctx};
    if (!pool || el_session_new(m, &so, pool, &s, &err)) goto out;
    int V = m->hp.vocab, per = ctx - 1, n_windows = (n_ids - skip + per - 1) / per;
    logits = malloc((size_t)ctx * V * sizeof(float));
    nll = malloc((size_t)n_ids * sizeof(double));
    win = malloc((size_t)ctx * sizeof(int));
    if (!logits || !nll || !win) {
        el_err(&err, EL_ERR_NOMEM, "out of memory");
        goto out;
    }
    el_progress prog;
    el_progress_begin(&prog, stderr, "perplexity", (uint64_t)n_windows, "windows");
    int scored = 0;
    double sum = 0;
    for (int w = 0; w < n_windows; w++) {
        int start = skip + w * per, n = n_ids - start < per ? n_ids - start : per;  // ids[start, start + n) scored
        win[0] = skip ? ids[start - 1] : bos;
        memcpy(win + 1, ids + start, (size_t)n * sizeof(int));
        if (el_session_forward(s, win, n + 1, 0, logits, 1, &err)) goto out;
        for (int i = 0; i < n; i++) {  // logits of position i predict win[i + 1]
            const float *l = logits + (size_t)i * V;
            float max = l[0];
            for (int v = 1; v < V; v++) max = l[v] > max ? l[v] : max;
            double z = 0;
            for (int v = 0; v < V; v++) z += exp((double)(l[v] - max));
            nll[scored] = log(z) + max - l[win[i + 1]];
            sum += nll[scored++];
        }
        char extra[64];
        snprintf(extra, sizeof extra, "running ppl %.4f", exp(sum / scored));
        el_progress_update(&prog, (uint64_t)w + 1, extra);
    }
    double mean = sum / scored, var = 0;
    for (int i = 0; i < scored; i++) var += (nll[i] - mean) * (nll[i] - mean);
    var /= scored > 1 ? scored - 1 : 1;
    double ppl = exp(mean), se = ppl * sqrt(var / scored);
    el_progress_end(&prog, (uint64_t)n_windows, NULL);
    printf("perplexity %.4f ± %.4f  (%d tokens scored in %d windows of %d, %s)\n", ppl, se, scored, n_windows, ctx,
           model_path);
    rc = 0;
out:
    if (rc) cli_error(&err);
    free(win);
    free(nll);
    free(logits);
    free(ids);
    free(text);
    el_session_free(s);
    el_pool_free(pool);
    el_tokenizer_free(tok);
    el_model_close(m);
    return rc;
}
