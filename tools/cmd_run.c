// edgellm run: generate text from a prompt on this machine.
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "common.h"
#include "edgellm/model.h"
#include "edgellm/sample.h"

static const char *usage =
    "usage: edgellm run -m MODEL [-z TOKENIZER] (-p PROMPT | -f FILE) [options]\n"
    "\n"
    "Generates text from PROMPT. stdout carries only the prompt followed by the\n"
    "generated text; diagnostics go to stderr.\n"
    "\n"
    "  -m, --model FILE        GGUF model or llama2.c checkpoint\n"
    "  -z, --tokenizer FILE    tokenizer (llama2.c tokenizer file or GGUF); default: the model's own\n"
    "  -p, --prompt TEXT       the prompt (UTF-8, not empty)\n"
    "  -f, --file FILE         read the prompt from FILE\n"
    "  -n, --steps N           new tokens to generate (default 256); stops early at BOS/EOS\n"
    "      --temp T            temperature; 0 = greedy (default 1.0)\n"
    "      --top-k K           keep the K most likely tokens (default 0 = off)\n"
    "      --top-p P           nucleus sampling threshold (default 0.9; 1 = off)\n"
    "      --min-p P           drop tokens below P x the top probability (default 0 = off)\n"
    "      --repeat-penalty R  penalise the last 64 tokens (default 1.0 = off)\n"
    "      --seed S            random seed (default: from the clock)\n"
    "      --ctx N             context length (default: the model's)\n"
    "  -t, --threads N         threads (default: all CPUs)\n"
    "      --stats             print prefill/decode tokens/s and peak memory to stderr\n"
    "  -h, --help              this text\n"
    "\n"
    "example: edgellm run -m ../shared/models/aidreams260K.bin -z ../shared/models/tok512.bin \\\n"
    "           -p \"The dream\" -n 100 --temp 0\n";

int cmd_run(int argc, char **argv) {
    cli c;
    cli_init(&c, "run", argc, argv);
    const char *model_path = NULL, *tok_path = NULL, *prompt = NULL, *prompt_file = NULL;
    int steps = 256, threads = 0, ctx = 0, stats = 0, have_seed = 0;
    el_sampler_params sp = el_sampler_defaults();
    sp.top_p = 0.9f;
    const char *a;
    int opt;
    while ((a = cli_next(&c, &opt))) {
        if (cli_is(a, "-h", "--help")) { fputs(usage, stdout); return 0; }
        else if (cli_is(a, "-m", "--model")) model_path = cli_str(&c, a);
        else if (cli_is(a, "-z", "--tokenizer")) tok_path = cli_str(&c, a);
        else if (cli_is(a, "-p", "--prompt")) prompt = cli_str(&c, a);
        else if (cli_is(a, "-f", "--file")) prompt_file = cli_str(&c, a);
        else if (cli_is(a, "-n", "--steps")) cli_int(&c, a, 0, 1 << 24, &steps);
        else if (cli_is(a, NULL, "--temp")) cli_float(&c, a, 0, 100, &sp.temp);
        else if (cli_is(a, NULL, "--top-k")) cli_int(&c, a, 0, 1 << 24, &sp.top_k);
        else if (cli_is(a, NULL, "--top-p")) cli_float(&c, a, 1e-6, 1, &sp.top_p);
        else if (cli_is(a, NULL, "--min-p")) cli_float(&c, a, 0, 0.999999, &sp.min_p);
        else if (cli_is(a, NULL, "--repeat-penalty")) cli_float(&c, a, 1e-3, 100, &sp.repeat_penalty);
        else if (cli_is(a, NULL, "--seed")) have_seed = cli_u64(&c, a, &sp.seed);
        else if (cli_is(a, NULL, "--ctx")) cli_int(&c, a, 1, 1 << 20, &ctx);
        else if (cli_is(a, "-t", "--threads")) cli_int(&c, a, 1, 256, &threads);
        else if (cli_is(a, NULL, "--stats")) stats = 1;
        else return cli_unknown(&c, a);
    }
    if (c.failed) return 2;
    if (!model_path) return cli_fail(&c, "-m MODEL is required");
    if (!prompt && !prompt_file) return cli_fail(&c, "-p PROMPT or -f FILE is required");
    if (prompt && prompt_file) return cli_fail(&c, "give -p or -f, not both");
    if (!have_seed) sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)el_time_ns() << 16);

    el_error err = {0};
    el_model *m = NULL;
    el_tokenizer *tok = NULL;
    el_session *sess = NULL;
    el_sampler *smp = NULL;
    el_pool *pool = NULL;
    char *file_text = NULL;
    int *ids = NULL, n_ids = 0, rc = 1;
    float *logits = NULL;
    size_t prompt_len;
    if (prompt_file) {
        if (el_read_file(prompt_file, 64u << 20, &file_text, &prompt_len, &err)) goto out;
        prompt = file_text;
    } else {
        prompt_len = strlen(prompt);
    }
    if (tool_check_prompt(prompt, prompt_len, prompt_file ? prompt_file : "the prompt", 0, &err)) goto out;
    if (el_sampler_check(&sp, &err)) goto out;
    if (el_model_open(model_path, NULL, &m, &err)) goto out;
    if (el_model_tokenizer(m, tok_path, &tok, &err)) goto out;
    if (el_tokenizer_encode(tok, prompt, prompt_len, 1, &ids, &n_ids, &err)) goto out;
    if (ctx == 0) ctx = m->hp.ctx;
    if (n_ids >= ctx) {
        el_err(&err, EL_ERR_RANGE, "the prompt has %d tokens, more than the context of %d allows", n_ids, ctx);
        goto out;
    }
    pool = el_pool_new(threads);
    el_session_opts so = {.ctx = ctx};
    if (!pool || el_session_new(m, &so, pool, &sess, &err)) goto out;
    smp = el_sampler_new(&sp, m->hp.vocab);
    logits = malloc((size_t)m->hp.vocab * sizeof(float));
    if (!smp || !logits) {
        el_err(&err, EL_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int i = 1; i < n_ids; i++) tool_print_piece(stdout, tok, ids[i - 1], ids[i]);
    fflush(stdout);
    for (int i = 0; i < n_ids; i++) el_sampler_accept(smp, ids[i]);

    double t0 = el_time_s();
    if (el_session_forward(sess, ids, n_ids, 0, logits, 0, &err)) goto out;
    double t_prefill = el_time_s() - t0;
    int pos = n_ids, prev = ids[n_ids - 1], generated = 0;
    int bos = el_tokenizer_bos(tok), eos = el_tokenizer_eos(tok);
    double t1 = el_time_s();
    while (generated < steps) {
        int next = el_sampler_sample(smp, logits);
        if (next == bos || next == eos) break;
        tool_print_piece(stdout, tok, prev, next);
        fflush(stdout);
        el_sampler_accept(smp, next);
        generated++;
        prev = next;
        if (generated == steps || pos >= ctx) break;
        if (el_session_forward(sess, &next, 1, pos, logits, 0, &err)) goto out;
        pos++;
    }
    double t_decode = el_time_s() - t1;
    fputc('\n', stdout);
    fflush(stdout);
    if (stats) {
        fprintf(stderr, "prefill: %d tokens in %.3f s, %.1f tokens/s\n", n_ids, t_prefill, n_ids / t_prefill);
        fprintf(stderr, "decode: %d tokens in %.3f s, %.1f tokens/s\n", generated, t_decode,
                generated > 1 ? (generated - 1) / t_decode : 0.0);
        fprintf(stderr, "peak memory: %.1f MiB (weights mapped: %.1f MiB, KV cache: %.1f MiB), threads: %d\n",
                el_peak_rss() / 1048576.0, el_model_weight_bytes(m, 0, m->hp.n_layers, 1, 1) / 1048576.0,
                el_session_kv_bytes(sess) / 1048576.0, el_pool_size(pool));
    }
    rc = 0;
out:
    if (rc) cli_error(&err);
    free(logits);
    free(ids);
    free(file_text);
    el_sampler_free(smp);
    el_session_free(sess);
    el_pool_free(pool);
    el_tokenizer_free(tok);
    el_model_close(m);
    return rc;
}
