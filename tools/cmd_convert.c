// edgellm convert: a llama2.c checkpoint and its tokenizer to a GGUF file that
// other GGUF readers accept (llama architecture, the usual keys and names).
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "edgellm/gguf.h"
#include "edgellm/model.h"

static const char *usage =
    "usage: edgellm convert IN.bin OUT.gguf -z TOKENIZER.bin\n"
    "\n"
    "Converts a llama2.c checkpoint (version 0) and its tokenizer to GGUF\n"
    "(general.architecture = llama, llama.* hyper-parameters, tokenizer.ggml.*\n"
    "vocabulary, tensors token_embd.weight, blk.N.attn_q.weight ... output.weight).\n"
    "The output is written under a temporary name and renamed when complete.\n"
    "\n"
    "example: edgellm convert ../shared/models/aidreams260K.bin aidreams.gguf -z ../shared/models/tok512.bin\n";

static el_status add_tensor(el_gguf_writer *w, const el_tensor *t) {
    return el_gguf_add_tensor(w, t->name, t->dtype, t->n_dims, t->ne, t->data);
}

int cmd_convert(int argc, char **argv) {
    cli c;
    cli_init(&c, "convert", argc, argv);
    const char *in = NULL, *out = NULL, *tok_path = NULL, *a;
    int opt;
    while ((a = cli_next(&c, &opt))) {
        if (cli_is(a, "-h", "--help")) { fputs(usage, stdout); return 0; }
        else if (cli_is(a, "-z", "--tokenizer")) tok_path = cli_str(&c, a);
        else if (opt) return cli_unknown(&c, a);
        else if (!in) in = a;
        else if (!out) out = a;
        else return cli_fail(&c, "unexpected argument '%s'", a);
    }
    if (c.failed) return 2;
    if (!in || !out) return cli_fail(&c, "IN.bin and OUT.gguf are required");
    if (!tok_path) return cli_fail(&c, "-z TOKENIZER is required");

    el_error err = {0};
    el_model *m = NULL;
    el_tokenizer *tok = NULL;
    el_gguf_writer *w = NULL;
    char **pieces = NULL;
    uint64_t *lens = NULL;
    float *scores = NULL;
    int32_t *types = NULL;
    int rc = 1;
    if (el_model_open(in, NULL, &m, &err)) goto done;
    if (m->format != EL_MODEL_LLAMA2C) {
        el_err(&err, EL_ERR_ARG, "%s: is already GGUF; convert reads llama2.c checkpoints", in);
        goto done;
    }
    if (el_model_tokenizer(m, tok_path, &tok, &err)) goto done;
    const el_hparams *h = &m->hp;
    int V = el_tokenizer_n_vocab(tok);
    pieces = calloc((size_t)V, sizeof *pieces);
    lens = calloc((size_t)V, sizeof *lens);
    scores = calloc((size_t)V, sizeof *scores);
    types = calloc((size_t)V, sizeof *types);
    w = el_gguf_writer_new();
    if (!pieces || !lens || !scores || !types || !w) {
        el_err(&err, EL_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < V; i++) {
        size_t n;
        pieces[i] = (char *)el_tokenizer_piece(tok, i, &n);
        lens[i] = n;
        scores[i] = el_tokenizer_score(tok, i);
        types[i] = el_tokenizer_type(tok, i);
    }
    const char *base = strrchr(in, '/');
    base = base ? base + 1 : in;
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)(strcspn(base, ".")), base);
    el_gguf_add_str(w, "general.architecture", "llama");
    el_gguf_add_str(w, "general.name", name);
    el_gguf_add_u32(w, "general.file_type", 0);  // all f32
    el_gguf_add_u32(w, "llama.context_length", (uint32_t)h->ctx);
    el_gguf_add_u32(w, "llama.embedding_length", (uint32_t)h->dim);
    el_gguf_add_u32(w, "llama.block_count", (uint32_t)h->n_layers);
    el_gguf_add_u32(w, "llama.feed_forward_length", (uint32_t)h->ff);
    el_gguf_add_u32(w, "llama.rope.dimension_count", (uint32_t)h->head_dim);
    el_gguf_add_u32(w, "llama.attention.head_count", (uint32_t)h->n_heads);
    el_gguf_add_u32(w, "llama.attention.head_count_kv", (uint32_t)h->n_kv_heads);
    el_gguf_add_f32(w, "llama.attention.layer_norm_rms_epsilon", h->rms_eps);
    el_gguf_add_f32(w, "llama.rope.freq_base", h->rope_theta);
    el_gguf_add_u32(w, "llama.vocab_size", (uint32_t)h->vocab);
    el_gguf_add_str(w, "tokenizer.ggml.model", "llama");
    el_gguf_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)pieces, lens, (uint64_t)V);
    el_gguf_add_arr(w, "tokenizer.ggml.scores", EL_GGUF_FLOAT32, scores, (uint64_t)V);
    el_gguf_add_arr(w, "tokenizer.ggml.token_type", EL_GGUF_INT32, types, (uint64_t)V);
    el_gguf_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)el_tokenizer_bos(tok));
    el_gguf_add_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)el_tokenizer_eos(tok));
    el_gguf_add_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    el_gguf_add_bool(w, "tokenizer.ggml.add_bos_token", 1);
    el_gguf_add_bool(w, "tokenizer.ggml.add_eos_token", 0);
    el_status s = add_tensor(w, &m->tok_embd);
    for (int l = 0; l < h->n_layers && !s; l++) {
        const el_tensor *ts = (const el_tensor *)&m->layers[l];
        for (size_t i = 0; i < sizeof(el_layer) / sizeof(el_tensor) && !s; i++)
            if (ts[i].name) s = add_tensor(w, &ts[i]);  // absent biases have no name
    }
    if (!s) s = add_tensor(w, &m->output_norm);
    if (!s && !h->tied_output) s = add_tensor(w, &m->output);
    if (s) {
        el_err(&err, s, "%s: cannot add tensors to the GGUF writer", out);
        goto done;
    }
    el_progress prog;
    el_progress_begin(&prog, stderr, "convert", el_model_weight_bytes(m, 0, h->n_layers, 1, 1), "bytes");
    if (el_gguf_write(w, out, NULL, NULL, &prog, &err)) goto done;
    el_progress_end(&prog, el_model_weight_bytes(m, 0, h->n_layers, 1, 1), out);
    rc = 0;
done:
    if (rc) cli_error(&err);
    free(pieces);
    free(lens);
    free(scores);
    free(types);
    el_gguf_writer_free(w);
    el_tokenizer_free(tok);
    el_model_close(m);
    return rc;
}
