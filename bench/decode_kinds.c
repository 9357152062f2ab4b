// One-token products (decode) of every matrix kind of two models, in one
// process and alternating, so both see the same memory-bandwidth state: which
// weight type streams closest to the machine's read bandwidth, kind by kind.
// Each round runs, per model, every layer's wq, then every layer's wk, ...,
// w_down, then the head; a layer's matrix is read once per round, so they
// come from memory (the models are much larger than the caches). After a
// warm-up round, prints the mean time per round and the GB/s of weight bytes read.
// Build (one line): cc -O2 -D_GNU_SOURCE -Iinclude bench/decode_kinds.c build/libedgellm.a
//   $(pkg-config --libs libzmq libmicrohttpd openblas) -lm -pthread -o decode_kinds
// Usage: decode_kinds A.gguf B.gguf [THREADS] [ROUNDS]
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/kernels.h"
#include "edgellm/model.h"

#define KINDS 8
static const char *kind_name[KINDS] = {"wq", "wk", "wv", "wo", "gate", "up", "down", "head"};

static const el_tensor *kind_tensor(const el_model *m, int kind, int layer) {
    const el_layer *l = &m->layers[layer];
    switch (kind) {
    case 0: return &l->wq;
    case 1: return &l->wk;
    case 2: return &l->wv;
    case 3: return &l->wo;
    case 4: return &l->w_gate;
    case 5: return &l->w_up;
    case 6: return &l->w_down;
    }
    return &m->output;
}

static double matrix_bytes(const el_tensor *W) { return (double)el_tensor_row_size(W) * (double)W->ne[1]; }

int main(int argc, char **argv) {
    int help = argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"));
    if (argc < 3 || help) {
        fprintf(help ? stdout : stderr,
                "usage: %s A.gguf B.gguf [THREADS] [ROUNDS]\n"
                "One-token products of every matrix kind of two models of the same shape, alternating\n"
                "A and B each round; prints mean ms per round and GB/s of weights read per kind.\n",
                argv[0]);
        return help ? 0 : 2;
    }
    int threads = argc > 3 ? atoi(argv[3]) : 2, rounds = argc > 4 ? atoi(argv[4]) : 12;
    if (threads < 1 || threads > 256 || rounds < 1 || rounds > 100000) {
        fprintf(stderr, "decode_kinds: bad THREADS %s or ROUNDS %s\n", argc > 3 ? argv[3] : "-", argc > 4 ? argv[4] : "-");
        return 2;
    }
    el_error err;
    el_model *m[2];
    for (int i = 0; i < 2; i++)
        if (el_model_open(argv[1 + i], NULL, &m[i], &err)) {
            fprintf(stderr, "decode_kinds: %s\n", err.msg);
            return 1;
        }
    int dim = m[0]->hp.dim, layers = m[0]->hp.n_layers;
    if (m[1]->hp.dim != dim || m[1]->hp.n_layers != layers || m[1]->hp.ff != m[0]->hp.ff) {
        fprintf(stderr, "decode_kinds: %s and %s differ in shape (dim %d/%d, layers %d/%d)\n", argv[1], argv[2], dim,
                m[1]->hp.dim, layers, m[1]->hp.n_layers);
        return 1;
    }
    el_pool *pool = el_pool_new(threads);
    size_t widest = (size_t)(m[0]->hp.ff > dim ? m[0]->hp.ff : dim);
    size_t outs = (size_t)(m[0]->hp.vocab > m[0]->hp.ff ? m[0]->hp.vocab : m[0]->hp.ff);
    float *x = malloc(widest * sizeof(float)), *out = malloc(outs * sizeof(float));
    if (!pool || !x || !out) {
        fprintf(stderr, "decode_kinds: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < widest; i++) x[i] = sinf(0.37f * (float)i);
    double ms[2][KINDS] = {{0}}, bytes[2][KINDS] = {{0}};
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < KINDS; k++)
            for (int l = 0; l < (k == KINDS - 1 ? 1 : layers); l++) bytes[i][k] += matrix_bytes(kind_tensor(m[i], k, l));
    for (int r = -1; r < rounds; r++) {  // r = -1: warm-up, not counted
        for (int j = 0; j < 2; j++) {
            int i = (r & 1) ? 1 - j : j;  // the order swaps every round
            for (int k = 0; k < KINDS; k++) {
                double t0 = el_time_s();
                for (int l = 0; l < (k == KINDS - 1 ? 1 : layers); l++) el_matmul(pool, out, x, kind_tensor(m[i], k, l), 1);
                if (r >= 0) ms[i][k] += (el_time_s() - t0) * 1e3;
            }
        }
        if (r >= 0) fprintf(stderr, "\rdecode_kinds: round %d/%d", r + 1, rounds);
    }
    fprintf(stderr, "\n");
    printf("%-5s %10s %8s %10s %8s %7s\n", "kind", "A ms", "A GB/s", "B ms", "B GB/s", "A/B");
    double tot[2] = {0}, totb[2] = {0};
    for (int k = 0; k < KINDS; k++) {
        double a = ms[0][k] / rounds, b = ms[1][k] / rounds;
        printf("%-5s %10.3f %8.1f %10.3f %8.1f %7.2f\n", kind_name[k], a, bytes[0][k] / a * 1e-6, b,
               bytes[1][k] / b * 1e-6, a / b);
        tot[0] += a, tot[1] += b, totb[0] += bytes[0][k], totb[1] += bytes[1][k];
    }
    printf("%-5s %10.3f %8.1f %10.3f %8.1f %7.2f\n", "all", tot[0], totb[0] / tot[0] * 1e-6, tot[1],
           totb[1] / tot[1] * 1e-6, tot[0] / tot[1]);
    free(x);
    free(out);
    el_pool_free(pool);
    el_model_close(m[0]);
    el_model_close(m[1]);
    return 0;
}
