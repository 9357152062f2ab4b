// edgellm logits: the raw logits of every prompt position, for comparisons.
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "common.h"
#include "edgellm/model.h"
#include "edgellm/split.h"

static const char *usage =
    "usage: edgellm logits -m MODEL [-z TOKENIZER] (-p PROMPT | -f FILE | --tokens ID,ID,...) -o OUT.f32\n"
    "                      [-t THREADS] [--kv-type f32|f16|q8_0] [split options]\n"
    "\n"
    "Writes raw little-endian f32 logits: one row of vocab_size floats for each\n"
    "position of the tokenized prompt (BOS prepended), or of the token ids given\n"
    "with --tokens as they are (no tokenizer is loaded). With --split the logits are\n"
    "computed across device and workers, as `edgellm run` does (see run --help).\n"
    "--kv-type sets this process's KV cache precision (teacher-forced comparisons).\n"
    "\n"
    "example: edgellm logits -m ../shared/models/aidreams260K.bin -z ../shared/models/tok512.bin \\\n"
    "           -p \"The dream\" -o dream.f32\n";

// "1,2,3" -> ids, each in 0..vocab-1.
static el_status parse_tokens(const char *list, int vocab, int **ids, int *n, el_error *err) {
    size_t cap = 1;
    for (const char *p = list; *p; p++) cap += *p == ',';
    *ids = malloc(cap * sizeof **ids);
    if (!*ids) return el_err(err, EL_ERR_NOMEM, "out of memory");
    *n = 0;
    const char *p = list;
    for (;;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v >= vocab || (*end && *end != ','))
            return el_err(err, EL_ERR_ARG, "--tokens: '%.20s' is not a token id in 0..%d", p, vocab - 1);
        (*ids)[(*n)++] = (int)v;
        if (!*end) return EL_OK;
        p = end + 1;
    }
}

int cmd_logits(int argc, char **argv) {
    cli c;
    cli_init(&c, "logits", argc, argv);
    const char *model_path = NULL, *tok_path = NULL, *prompt = NULL, *prompt_file = NULL, *out_path = NULL;
    const char *token_list = NULL;
    int threads = 0, kv_type = 0;
    tool_split ts;
    tool_split_init(&ts);
    const char *a;
    int opt;
    while ((a = cli_next(&c, &opt))) {
        if (cli_is(a, "-h", "--help")) { fputs(usage, stdout); return 0; }
        else if (cli_is(a, "-m", "--model")) model_path = cli_str(&c, a);
        else if (cli_is(a, "-z", "--tokenizer")) tok_path = cli_str(&c, a);
        else if (cli_is(a, "-p", "--prompt")) prompt = cli_str(&c, a);
        else if (cli_is(a, "-f", "--file")) prompt_file = cli_str(&c, a);
        else if (cli_is(a, NULL, "--tokens")) token_list = cli_str(&c, a);
        else if (cli_is(a, "-o", "--output")) out_path = cli_str(&c, a);
        else if (cli_is(a, "-t", "--threads")) cli_int(&c, a, 1, 256, &threads);
        else if (tool_kv_option(&c, a, &kv_type)) continue;
        else if (tool_split_option(&c, a, &ts)) continue;
        else return cli_unknown(&c, a);
    }
    if (c.failed) return 2;
    if (!model_path) return cli_fail(&c, "-m MODEL is required");
    if (!!prompt + !!prompt_file + !!token_list != 1) return cli_fail(&c, "give one of -p PROMPT, -f FILE or --tokens");
    if (!out_path) return cli_fail(&c, "-o OUT is required");
    if (tool_split_check(&c, &ts)) return 2;

    el_error err = {0};
    el_model *m = NULL;
    el_tokenizer *tok = NULL;
    el_pipeline *pipe = NULL;
    el_pool *pool = NULL;
    char *file_text = NULL;
    int *ids = NULL, n_ids = 0, rc = 1;
    float *logits = NULL;
    size_t len;
    if (!token_list && tool_load_prompt(prompt, prompt_file, 0, 0, &file_text, &prompt, &len, &err)) goto out;
    el_model_opts mo = {0};
    if (tool_split_prepare(&ts, &mo, &err)) goto out;
    if (tool_split_drop_head(&ts, model_path, &mo, &err)) goto out;
    if (el_model_open(model_path, &mo, &m, &err)) goto out;
    if (tool_split_check_model(&ts, m, &err)) goto out;
    if (token_list) {
        if (parse_tokens(token_list, m->hp.vocab, &ids, &n_ids, &err)) goto out;
    } else {
        if (el_model_tokenizer(m, tok_path, &tok, &err)) goto out;
        // BOS as the model's metadata asks (Qwen2 vocabularies do not want one).
        if (el_tokenizer_encode(tok, prompt, len, el_tokenizer_add_bos(tok), &ids, &n_ids, &err)) goto out;
    }
    if (n_ids > m->hp.ctx) {
        el_err(&err, EL_ERR_RANGE, "the prompt has %d tokens, more than the context of %d", n_ids, m->hp.ctx);
        goto out;
    }
    pool = el_pool_new(threads);
    el_session_opts so = {.kv_type = kv_type};
    if (!pool || el_pipeline_new(m, &so, pool, ts.enabled ? &ts.o : NULL, &pipe, &err)) goto out;
    logits = el_calloc((size_t)n_ids * m->hp.vocab, sizeof(float));
    if (!logits) {
        el_err(&err, EL_ERR_NOMEM, "out of memory for %d x %d logits", n_ids, m->hp.vocab);
        goto out;
    }
    if (el_pipeline_forward(pipe, ids, n_ids, 0, logits, 1, &err)) goto out;
    if (el_write_file_atomic(out_path, logits, (size_t)n_ids * m->hp.vocab * sizeof(float), &err)) goto out;
    fprintf(stderr, "wrote %d x %d logits to %s\n", n_ids, m->hp.vocab, out_path);
    rc = 0;
out:
    if (rc) cli_error(&err);
    free(logits);
    free(ids);
    free(file_text);
    el_pipeline_free(pipe);
    el_pool_free(pool);
    el_tokenizer_free(tok);
    el_model_close(m);
    return rc;
}
