// Cost of adapters in one batched decode step (el_batch_run): 16 rows on the
// base alone, all on one adapter, and each on its own adapter (rank R on all
// seven projections). Cases are interleaved and the minimum of 8 repeats is
// printed, so the other load on a shared machine mostly drops out.
// Build (one line): cc -O2 -D_GNU_SOURCE -Iinclude bench/batch_step.c build/libedgellm.a
//   $(pkg-config --libs libzmq libmicrohttpd openblas) -lm -pthread -o batch_step
// Usage: batch_step MODEL.gguf [THREADS] [RANK]
#include <stdio.h>
#include <stdlib.h>

#include "edgellm/lora.h"
#include "edgellm/model.h"

#define ROWS 16

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf [THREADS] [RANK]\n", argv[0]);
        return 2;
    }
    int threads = argc > 2 ? atoi(argv[2]) : 1, rank = argc > 3 ? atoi(argv[3]) : 8;
    el_error err;
    el_model *m;
    if (el_model_open(argv[1], NULL, &m, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    el_pool *pool = el_pool_new(threads);
    el_session *s[ROWS];
    int tok[ROWS];
    el_lora *l[ROWS];
    el_lora_set set[ROWS];
    const el_lora_set *none[ROWS], *same[ROWS], *diff[ROWS];
    for (int i = 0; i < ROWS; i++) {
        el_session_opts so = {.ctx = 64, .max_batch = 16};
        if (el_session_new(m, &so, pool, &s[i], &err) || el_session_reserve(s[i], 16, &err) ||
            el_lora_new(m, rank, 16, EL_LORA_ALL_TARGETS, (uint64_t)i + 1, &l[i], &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        for (size_t k = 0; k < l[i]->n_params; k++) l[i]->params[k] = 0.01f;  // B non-zero
        set[i] = (el_lora_set){1, {l[i]}, {1}};
        tok[i] = (i * 37 + 5) % m->hp.vocab;
        none[i] = NULL, same[i] = &set[0], diff[i] = &set[i];
    }
    el_batch *b;
    if (el_batch_new(m, ROWS, pool, &b, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    float *logits = malloc((size_t)ROWS * m->hp.vocab * sizeof(float));
    const el_lora_set *const *cases[3] = {none, same, diff};
    const char *names[3] = {"base only", "one adapter", "16 adapters"};
    double best[3] = {1e30, 1e30, 1e30};
    for (int rep = 0; rep < 8; rep++)
        for (int c = 0; c < 3; c++) {
            double t0 = el_time_s();
            for (int k = 0; k < 10; k++) {
                el_batch_req reqs[ROWS];
                for (int i = 0; i < ROWS; i++) {
                    el_session_set_lora(s[i], cases[c][i]);
                    reqs[i] = (el_batch_req){.s = s[i], .pos = k, .n = 1, .tokens = &tok[i], .logits_rows = 1,
                                             .logits = logits + (size_t)i * m->hp.vocab};
                }
                if (el_batch_run(b, ROWS, reqs, &err)) {
                    fprintf(stderr, "%s\n", err.msg);
                    return 1;
                }
            }
            double dt = (el_time_s() - t0) / 10;
            if (dt < best[c]) best[c] = dt;
        }
    printf("%s: %d rows per step, %d thread(s), rank %d on all projections, ISA %s\n", argv[1], ROWS, threads, rank,
           el_isa_name(el_cpu_isa()));
    for (int c = 0; c < 3; c++)
        printf("%-12s %7.2f ms/step  %7.1f rows/s  (%.1f%% over the base)\n", names[c], best[c] * 1e3, ROWS / best[c],
               (best[c] / best[0] - 1) * 100);
    free(logits);
    el_batch_free(b);
    for (int i = 0; i < ROWS; i++) {
        el_session_free(s[i]);
        el_lora_free(l[i]);
    }
    el_pool_free(pool);
    el_model_close(m);
    return 0;
}
