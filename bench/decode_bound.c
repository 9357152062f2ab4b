// How close to the read probe can a decode step's products get on this
// machine, with nothing else in the step? Streams the weight bytes of the
// 22 layers of the TinyLlama-shaped model (q/k/v, o, gate/up, down: 1.1 GB at
// Q8_0, 545 MB at Q4_0 and Q4_K; random weights, packed and in stripes for 2
// threads as model.c lays them out) through the library's one-token runs
// kernel on 2 threads, and times four forms of the same step in turn:
//   products   a meeting of the two threads after each of the 88 products,
//              as a decode step has (the real step also has the head);
//   2/layer    after 44 groups (q/k/v + o, gate/up + down), what a
//              tensor-parallel layer would have;
//   1/step     the whole step without a stop;
//   read       the same bytes, the same stripes, read with no arithmetic.
// Each round measures the read probe (el_probe_read_gbs, the denominator of
// `edgellm bench`'s decode ratio) before and after, keeps the round if the
// two agree within 15%, and files it under the fast (>= 60 GB/s) or the slow
// state. Prints, for each state, the median (and quartiles) of each form's
// bytes per second against the probe.
// Build (one line): cc -O2 -D_GNU_SOURCE -Iinclude -Ibuild/include bench/decode_bound.c build/libedgellm.a
//   $(pkg-config --libs libzmq libmicrohttpd openblas) -lm -pthread -o decode_bound
// Usage: decode_bound [q8_0|q4_0|q4_k] [ROUNDS]
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "edgellm/kernels.h"
#include "edgellm/quant.h"
#include "edgellm/tensor.h"

enum { LAYERS = 22, K = 2048, FORMS = 4, MAX_ROUNDS = 2000 };
static const char *form_name[FORMS] = {"products", "2/layer", "1/step", "read"};
// pairs (32 rows of K columns) of one layer's four products: q/k/v 2560 rows,
// o 2048, gate/up 11264, down 2048 x 5632 columns = 5632 rows of K
static const int layer_pairs[4] = {80, 64, 352, 176};

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static el_gemm_runs_fn runs;
static const char *packed;
static size_t ldw;    // bytes a pair
static int64_t npairs; // a multiple of 4
static const char *act;
static float out[2][32 * 352];

// the two threads' meeting point: a spinning barrier, as the pool's
static atomic_int meet_count, meet_gen;
static void meet(void) {
    int g = atomic_load(&meet_gen);
    if (atomic_fetch_add(&meet_count, 1) == 1) {
        atomic_store(&meet_count, 0);
        atomic_fetch_add(&meet_gen, 1);
    } else
        while (atomic_load(&meet_gen) == g) {
        }
}

static pthread_barrier_t start_gate;
static atomic_int form;
static double t_start[2], t_end[2];
static volatile uint64_t sink[2];

static void step(int t, int f) {
    const int64_t q = npairs / 4;  // pairs a stripe; thread t reads stripes 2t and 2t + 1
    const char *ra = packed + (size_t)(q * 2 * t) * ldw, *rb = packed + (size_t)(q * (2 * t + 1)) * ldw;
    if (f == 3) {  // the same bytes, no arithmetic: the two runs side by side
        uint64_t s = 0;
        const uint64_t *a = (const uint64_t *)ra, *b = (const uint64_t *)rb;
        const size_t words = (size_t)q * ldw / 8;
        for (size_t i = 0; i < words; i += 8) s ^= a[i] ^ b[i];
        sink[t] = s;
        meet();
        return;
    }
    int64_t at = 0;  // pairs read so far in each of the thread's stripes
    for (int l = 0; l < LAYERS; l++) {
        for (int p = 0; p < 4; p++) {
            const int n = layer_pairs[p] / 2;  // this thread's pairs of the product
            runs(K, ra + (size_t)at * ldw, rb + (size_t)at * ldw, ldw, n, act, out[t]);
            at += n / 2;
            if (f == 0 || (f == 1 && (p == 1 || p == 3))) meet();
        }
    }
    if (f == 2) meet();
}

static void *thread_main(void *arg) {
    const int t = (int)(intptr_t)arg;
    for (;;) {
        pthread_barrier_wait(&start_gate);
        const int f = atomic_load(&form);
        if (f < 0) return NULL;
        meet();
        t_start[t] = now();
        step(t, f);
        t_end[t] = now();
        pthread_barrier_wait(&start_gate);
    }
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: decode_bound [q8_0|q4_0|q4_k] [ROUNDS]\n"
               "A decode step's products alone, 2 threads, against the read probe (see the source's head).\n");
        return 0;
    }
    const char *type = argc > 1 ? argv[1] : "q4_0";
    const int rounds = argc > 2 ? atoi(argv[2]) : 200;
    int dtype;
    if (!strcmp(type, "q8_0"))
        dtype = EL_DTYPE_Q8_0;
    else if (!strcmp(type, "q4_0"))
        dtype = EL_DTYPE_Q4_0;
    else if (!strcmp(type, "q4_k"))
        dtype = EL_DTYPE_Q4_K;
    else {
        fprintf(stderr, "decode_bound: type '%s' is not q8_0, q4_0 or q4_k\n", type);
        return 1;
    }
    if (rounds < 1 || rounds > MAX_ROUNDS) {
        fprintf(stderr, "decode_bound: rounds %s is not 1-%d\n", argc > 2 ? argv[2] : "", MAX_ROUNDS);
        return 1;
    }
    runs = el_gemm_runs_kernel(dtype, EL_ISA_BEST);
    if (!runs) {
        fprintf(stderr, "decode_bound: %s has no two-run decode kernel on this CPU\n", type);
        return 1;
    }

    // random blocks with small, sane scales (an f16 0x2000 at each scale's place)
    int64_t rows = 0;
    for (int p = 0; p < 4; p++) rows += 32 * layer_pairs[p];
    rows *= LAYERS;
    const size_t row_bytes = el_dtype_row_size(dtype, K), raw_bytes = row_bytes * (size_t)rows;
    uint8_t *raw = malloc(raw_bytes);
    if (!raw) return 1;
    uint64_t s = 88172645463325252ull;
    for (size_t i = 0; i < raw_bytes; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        raw[i] = (uint8_t)s;
    }
    const size_t block = dtype == EL_DTYPE_Q8_0 ? 34 : dtype == EL_DTYPE_Q4_0 ? 18 : 144;
    for (size_t o = 0; o + block <= raw_bytes; o += block) {
        raw[o] = 0, raw[o + 1] = 0x20;
        if (dtype == EL_DTYPE_Q4_K) raw[o + 2] = 0, raw[o + 3] = 0x20;
    }
    el_tensor W = {.name = "w", .dtype = dtype, .n_dims = 2, .ne = {K, rows, 1, 1}, .data = raw, .nbytes = raw_bytes};
    int64_t prows;
    const size_t bytes = el_matmul_pack_size(&W, EL_ISA_BEST, &prows);
    char *p = el_malloc_huge(bytes);
    if (!p) return 1;
    el_matmul_pack(&W, prows, p);
    free(raw);
    packed = p, npairs = prows / 32, ldw = bytes / (size_t)npairs;

    float x[K];
    for (int i = 0; i < K; i++) x[i] = (float)((i * 37) % 19) / 9.0f - 1.0f;
    const el_dtype_traits *tr = el_dtype_info(dtype);
    char *a = el_malloc_aligned(el_act_row_size(tr->vec_dot_type, K));
    el_act_quantize(tr->vec_dot_type, x, a, K);
    act = a;
    printf("%s: %.0f MB of packed weights a step, %d rounds\n", type, (double)bytes / 1e6, rounds);

    el_pool *pool = el_pool_new(2);
    pthread_barrier_init(&start_gate, NULL, 3);
    pthread_t th[2];
    for (int t = 0; t < 2; t++) pthread_create(&th[t], NULL, thread_main, (void *)(intptr_t)t);
    static double ratio[2][FORMS][MAX_ROUNDS];
    int kept[2] = {0, 0};
    double lo[2] = {1e9, 1e9}, hi[2] = {0, 0};
    const double t0 = now();
    for (int r = 0; r < rounds; r++) {
        const double p0 = el_probe_read_gbs(pool, (size_t)256 << 20, 1);
        double gbs[FORMS];
        for (int i = 0; i < FORMS; i++) {
            const int f = (i + r) % FORMS;  // a different form first each round
            atomic_store(&form, f);
            pthread_barrier_wait(&start_gate);
            pthread_barrier_wait(&start_gate);
            const double a0 = t_start[0] < t_start[1] ? t_start[0] : t_start[1];
            const double a1 = t_end[0] > t_end[1] ? t_end[0] : t_end[1];
            gbs[f] = (double)bytes / (a1 - a0) / 1e9;
        }
        const double p1 = el_probe_read_gbs(pool, (size_t)256 << 20, 1);
        const double el = now() - t0;
        fprintf(stderr, "\rround %d/%d  %.1f rounds/s  ETA %.0f s   ", r + 1, rounds, (r + 1) / el,
                (rounds - r - 1) * el / (r + 1));
        if (p1 > 1.15 * p0 || p0 > 1.15 * p1) continue;
        const double pm = (p0 + p1) / 2;
        const int st = pm >= 60;
        for (int f = 0; f < FORMS; f++) ratio[st][f][kept[st]] = gbs[f] / pm;
        lo[st] = pm < lo[st] ? pm : lo[st], hi[st] = pm > hi[st] ? pm : hi[st];
        kept[st]++;
    }
    fprintf(stderr, "\n");
    atomic_store(&form, -1);
    pthread_barrier_wait(&start_gate);
    for (int t = 0; t < 2; t++) pthread_join(th[t], NULL);
    for (int st = 1; st >= 0; st--) {
        if (!kept[st]) continue;
        printf("%s state: probe %.0f-%.0f GB/s, %d rounds; against the probe, median (quartiles):\n",
               st ? "fast" : "slow", lo[st], hi[st], kept[st]);
        for (int f = 0; f < FORMS; f++) {
            qsort(ratio[st][f], (size_t)kept[st], sizeof(double), cmp_double);
            const int n = kept[st];
            printf("  %-9s %.3f (%.3f-%.3f)\n", form_name[f], ratio[st][f][n / 2], ratio[st][f][n / 4],
                   ratio[st][f][3 * n / 4]);
        }
    }
    el_pool_free(pool);
    el_free_aligned(p);
    el_free_aligned(a);
    return 0;
}
