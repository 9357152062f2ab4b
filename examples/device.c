// The device side of a split run: this program keeps the embedding, the
// first CUT layers, the tokenizer and the sampler; an edge worker (`edgellm
// worker --layers CUT:`) runs the rest and sends back the logits. Text and
// prompt stay here; only hidden states cross the link.
//
//   edgellm worker -m aidreams260K.bin --layers 2:4 --listen 127.0.0.1:7001 --insecure &
//   cc device.c $(pkg-config --cflags --libs edgellm) -o device
//   ./device aidreams260K.bin tok512.bin 127.0.0.1:7001 2 "The dream" 60
//
// usage: device MODEL TOKENIZER|- WORKER CUT PROMPT [N [KEYS_DIR SERVER_KEY]]
// Without keys the link is plaintext, which edgellm allows on loopback only;
// with a key pair (edgellm keygen) and the worker's public key it is
// CURVE-encrypted and the worker must have our public key on its allow-list.
// Greedy decoding, so the text equals `edgellm run ... --temp 0`.
#include <edgellm/edgellm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const el_error *e) {
    fprintf(stderr, "device: %s\n", e->msg);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s MODEL TOKENIZER|- WORKER CUT PROMPT [N [KEYS_DIR SERVER_KEY]]\n", argv[0]);
        return 2;
    }
    const char *model_path = argv[1], *tok_path = strcmp(argv[2], "-") ? argv[2] : NULL, *prompt = argv[5];
    int cut = atoi(argv[4]), steps = argc > 6 ? atoi(argv[6]) : 64;
    el_error err;

    el_split_opts so = {.via = argv[3], .n_cuts = 1, .cuts = {cut}, .act_dtype = EL_DTYPE_F32};
    el_keypair keys;
    char server_key[41];
    if (argc > 8) {
        if (el_keys_load(argv[7], &keys, &err) || el_key_load_public(argv[8], server_key, &err)) return fail(&err);
        so.sec.keys = &keys;
        so.sec.server_key = server_key;
    } else {
        so.sec.insecure = 1;
    }

    // map only what the device runs: the embedding and layers [0, cut)
    el_model_opts mo = {.layer_end = cut, .no_layers = cut == 0, .no_head = 1};
    el_model *m;
    el_tokenizer *tok;
    if (el_model_open(model_path, &mo, &m, &err)) return fail(&err);
    if (el_model_tokenizer(m, tok_path, &tok, &err)) return fail(&err);
    int *ids, n;
    if (el_tokenizer_encode(tok, prompt, strlen(prompt), el_tokenizer_add_bos(tok), &ids, &n, &err)) return fail(&err);

    el_pool *pool = el_pool_new(0);
    el_pipeline *p;  // connects, checks the worker serves the same model, opens a session
    if (el_pipeline_new(m, NULL, pool, &so, &p, &err)) return fail(&err);
    float *logits = malloc((size_t)m->hp.vocab * sizeof(float));
    if (!logits) return 1;
    if (el_pipeline_forward(p, ids, n, 0, logits, 0, &err)) return fail(&err);
    fputs(prompt, stdout);
    int pos = n, prev = ids[n - 1];
    for (int k = 0; k < steps && pos < m->hp.ctx; k++) {
        int next = el_argmax(logits, m->hp.vocab);
        if (next == el_tokenizer_eos(tok) || next == el_tokenizer_bos(tok)) break;
        char piece[256];
        fwrite(piece, 1, el_tokenizer_decode(tok, prev, next, piece, sizeof piece), stdout);
        fflush(stdout);
        if (el_pipeline_forward(p, &next, 1, pos++, logits, 0, &err)) return fail(&err);
        prev = next;
    }
    putchar('\n');
    const el_split_stats *t = el_pipeline_total(p);
    fprintf(stderr, "device %.1f ms, link %.1f ms, worker %.1f ms; sent %llu B, received %llu B\n", t->device_s * 1e3,
            t->link_s * 1e3, t->worker_s[0] * 1e3, (unsigned long long)t->bytes_sent,
            (unsigned long long)t->bytes_received);

    free(logits);
    free(ids);
    el_pipeline_free(p);
    el_pool_free(pool);
    el_tokenizer_free(tok);
    el_model_close(m);
    return 0;
}
