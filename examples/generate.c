// Loads a model and prints a completion of a prompt: the smallest whole
// program on libedgellm's public API (model, tokenizer, session, sampler).
//
//   cc generate.c $(pkg-config --cflags --libs edgellm) -o generate
//   ./generate aidreams260K.bin tok512.bin "The dream" 60 0
//
// usage: generate MODEL TOKENIZER|- PROMPT [N [TEMP [SEED]]]
// (TOKENIZER - uses the tokenizer inside a GGUF model; TEMP 0 is greedy.)
#include <edgellm/edgellm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const el_error *e) {
    fprintf(stderr, "generate: %s\n", e->msg);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL TOKENIZER|- PROMPT [N [TEMP [SEED]]]   (libedgellm %s)\n", argv[0],
                el_version());
        return 2;
    }
    const char *model_path = argv[1], *tok_path = strcmp(argv[2], "-") ? argv[2] : NULL, *prompt = argv[3];
    int steps = argc > 4 ? atoi(argv[4]) : 64;
    el_sampler_params sp = el_sampler_defaults();  // temp 0.8, top-k 40, top-p 0.95, min-p 0.05
    if (argc > 5) sp.temp = (float)atof(argv[5]);
    if (argc > 6) sp.seed = strtoull(argv[6], NULL, 10);

    el_error err;
    el_model *m;
    el_tokenizer *tok;
    if (el_model_open(model_path, NULL, &m, &err)) return fail(&err);
    if (el_model_tokenizer(m, tok_path, &tok, &err)) return fail(&err);
    int *ids, n;
    if (el_tokenizer_encode(tok, prompt, strlen(prompt), el_tokenizer_add_bos(tok), &ids, &n, &err)) return fail(&err);

    el_pool *pool = el_pool_new(0);  // one thread per CPU
    el_session *s;
    if (el_session_new(m, NULL, pool, &s, &err)) return fail(&err);
    el_sampler *smp = el_sampler_new(&sp, m->hp.vocab);
    float *logits = malloc((size_t)m->hp.vocab * sizeof(float));
    if (!smp || !logits) return 1;
    for (int i = 0; i < n; i++) el_sampler_accept(smp, ids[i]);

    // the prompt in one forward pass, then one token at a time
    if (el_session_forward(s, ids, n, 0, logits, 0, &err)) return fail(&err);
    fputs(prompt, stdout);
    int pos = n, prev = ids[n - 1];
    for (int k = 0; k < steps && pos < el_session_ctx(s); k++) {
        int next = el_sampler_sample(smp, logits);
        if (next == el_tokenizer_eos(tok) || next == el_tokenizer_bos(tok)) break;
        char piece[256];
        fwrite(piece, 1, el_tokenizer_decode(tok, prev, next, piece, sizeof piece), stdout);
        fflush(stdout);
        el_sampler_accept(smp, next);
        if (el_session_forward(s, &next, 1, pos++, logits, 0, &err)) return fail(&err);
        prev = next;
    }
    putchar('\n');

    free(logits);
    free(ids);
    el_sampler_free(smp);
    el_session_free(s);
    el_pool_free(pool);
    el_tokenizer_free(tok);
    el_model_close(m);
    return 0;
}
