// How close to the read probe can a decode step's products get on this
// machine, with nothing else in the step? Streams the packed weights of the
// TinyLlama-shaped model (22 layers of q, k, v, o, gate, up at 2048 columns
// and down at 5632, then the 32000-row head: 1.10 GB at Q8_0, 582 MB at Q4_0
// and Q4_K; random weights) laid out as model.c lays them out for 2 decode
// threads: stripe s = 2t + r of every matrix after stripe s of the one
// before, in the order a forward pass reads them. Each thread reads its two
// stripes of every product with the library's one-token runs kernel, called
// as matmul.c calls it (one call a matrix), and four forms of the same step
// run in turn:
//   products   the threads meet where a decode step's pool jobs end: after
//              q/k/v, o, gate/up, down (fused as el_layer_forward fuses
//              them), and the head: 89 meetings;
//   2/layer    after q/k/v + o and after gate/up + down (and the head): 45,
//              what a tensor-parallel layer would have;
//   1/step     once, at the end;
//   read       the same bytes of the same stripes, one load a 64-byte line,
//              no arithmetic.
// Each round reads the bandwidth as `edgellm bench` does (el_read_probe over
// 512 MiB, the median of 3 passes) before and after the four forms, keeps the
// round if the two agree within 15%, and files it under the fast (>= 60 GB/s)
// or the slow state. For each state it prints each form's bytes per second
// against the probe (median and quartiles over rounds), and each form's step
// time against 1/step's in the same round (paired: the probe's noise cancels).
// Build (one line): cc -O2 -D_GNU_SOURCE -Iinclude -Ibuild/include bench/decode_bound.c build/libedgellm.a
//   $(pkg-config --libs libzmq libmicrohttpd openblas) -lm -pthread -o decode_bound
// Usage: decode_bound [q8_0|q4_0|q4_k] [ROUNDS]
#include <errno.h>
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

enum { LAYERS = 22, THREADS = 2, STRIPES = 2 * THREADS, FORMS = 4, MAX_ROUNDS = 2000 };
static const char *form_name[FORMS] = {"products", "2/layer", "1/step", "read"};

// A layer's matrices in the order a forward pass reads them, then the head:
// pairs (32 rows), columns, and which meeting (0: none) ends it in each form.
typedef struct {
    int pairs, k;
    int meet_products, meet_layer;
} matrix;
static const matrix layer_mats[7] = {
    {64, 2048, 0, 0},   // q: 2048 rows
    {8, 2048, 0, 0},    // k: 256
    {8, 2048, 1, 0},    // v: 256 (q/k/v one fused job)
    {64, 2048, 1, 1},   // o
    {176, 2048, 0, 0},  // gate: 5632
    {176, 2048, 1, 0},  // up (gate/up one fused job)
    {64, 5632, 1, 1},   // down: 2048 rows of 5632 columns
};
static const matrix head = {1000, 2048, 1, 1};  // 32000 rows
enum { MATRICES = 7 * LAYERS + 1 };
static const matrix *order[MATRICES];  // every matrix of a step, in the order it is read (main fills it)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static inline void spin_pause(void) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

static el_gemm_runs_fn runs;
static size_t pair_bytes[2];      // a pair at 2048 and at 5632 columns
static const char *act[2];        // the token's quantized activations at 2048 and 5632 columns
static const char *region[STRIPES];  // stripe s of every matrix, one after another
static size_t region_bytes[STRIPES];
static float out[THREADS][32 * 1000];

// the two threads' meeting point: a spinning barrier, as the pool spins
static atomic_int meet_count, meet_gen;
static void meet(void) {
    int g = atomic_load(&meet_gen);
    if (atomic_fetch_add(&meet_count, 1) == THREADS - 1) {
        atomic_store(&meet_count, 0);
        atomic_fetch_add(&meet_gen, 1);
    } else
        while (atomic_load(&meet_gen) == g) spin_pause();
}

static int kind(int k) { return k == 2048 ? 0 : 1; }

// pairs of matrix m in stripe s
static int64_t stripe_pairs(const matrix *m, int s) {
    return el_stripe_first(m->pairs, THREADS, s + 1) - el_stripe_first(m->pairs, THREADS, s);
}

// Thread t's share of matrix m, its two runs at ra, rb (moved past it), as matmul_task reads it.
static void product(int t, const matrix *m, const char **ra, const char **rb) {
    const int64_t na = stripe_pairs(m, 2 * t), nb = stripe_pairs(m, 2 * t + 1);  // runs takes na, then nb
    const size_t pb = pair_bytes[kind(m->k)];
    if (na + nb) runs(m->k, *ra, *rb, pb, (int)(na + nb), act[kind(m->k)], out[t]);
    *ra += (size_t)na * pb, *rb += (size_t)nb * pb;
}

static void step(int t, int f) {
    const char *ra = region[2 * t], *rb = region[2 * t + 1];
    if (f == 3) {  // the same bytes, no arithmetic: the two runs side by side
        const uint64_t *a = (const uint64_t *)ra, *b = (const uint64_t *)rb;
        const size_t na = region_bytes[2 * t] / 8, nb = region_bytes[2 * t + 1] / 8, n = na > nb ? na : nb;
        uint64_t s = 0;
        for (size_t i = 0; i < n; i += 8) s ^= (i < na ? a[i] : 0) ^ (i < nb ? b[i] : 0);
        volatile uint64_t sink = s;
        (void)sink;
        meet();
        return;
    }
    for (int i = 0; i < MATRICES; i++) {
        product(t, order[i], &ra, &rb);
        if ((f == 0 && order[i]->meet_products) || (f == 1 && order[i]->meet_layer)) meet();
    }
    if (f == 2) meet();
}

static pthread_barrier_t start_gate;
static atomic_int form;
static double t_start[THREADS], t_end[THREADS];

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

// A packed copy of `pairs` random pairs at k columns (blocks with small, sane
// scales: an f16 0x2000 at each scale's place); NULL when out of memory.
static char *random_pairs(int dtype, int k, int pairs, size_t *pb) {
    const size_t row_bytes = el_dtype_row_size(dtype, k), raw_bytes = row_bytes * 32 * (size_t)pairs;
    uint8_t *raw = malloc(raw_bytes);
    if (!raw) return NULL;
    uint64_t s = 88172645463325252ull ^ (uint64_t)k;
    for (size_t i = 0; i < raw_bytes; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        raw[i] = (uint8_t)s;
    }
    const size_t block = dtype == EL_DTYPE_Q8_0 ? 34 : dtype == EL_DTYPE_Q4_0 ? 18 : 144;
    for (size_t o = 0; o + block <= raw_bytes; o += block) {
        raw[o] = 0, raw[o + 1] = 0x20;
        if (dtype == EL_DTYPE_Q4_K) raw[o + 2] = 0, raw[o + 3] = 0x20;
    }
    el_tensor W = {
        .name = "w", .dtype = dtype, .n_dims = 2, .ne = {k, 32 * pairs, 1, 1}, .data = raw, .nbytes = raw_bytes};
    int64_t rows;
    const size_t bytes = el_matmul_pack_size(&W, EL_ISA_BEST, &rows);
    char *p = bytes && rows == 32 * pairs ? el_malloc_aligned(bytes) : NULL;
    if (p) el_matmul_pack(&W, rows, p);
    free(raw);
    *pb = bytes / (size_t)pairs;
    return p;
}

static int usage(FILE *to, int status) {
    fprintf(to, "usage: decode_bound [q8_0|q4_0|q4_k] [ROUNDS]\n"
                "A decode step's products alone, on 2 threads, against the read probe: the\n"
                "TinyLlama-shaped model's packed weights in stripes, with a meeting after each\n"
                "product, two a layer, or one a step, and a plain read of the same bytes\n"
                "(details in the source's head). ROUNDS: 1-%d, default 200.\n",
            MAX_ROUNDS);
    return status;
}

static void *nomem(const char *what) {
    fprintf(stderr, "decode_bound: out of memory for %s\n", what);
    exit(1);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return usage(stdout, 0);
    if (argc > 3) return usage(stderr, 2);
    const char *type = argc > 1 ? argv[1] : "q4_0";
    int dtype;
    if (!strcmp(type, "q8_0"))
        dtype = EL_DTYPE_Q8_0;
    else if (!strcmp(type, "q4_0"))
        dtype = EL_DTYPE_Q4_0;
    else if (!strcmp(type, "q4_k"))
        dtype = EL_DTYPE_Q4_K;
    else {
        fprintf(stderr, "decode_bound: type '%s' is not q8_0, q4_0 or q4_k\n", type);
        return 2;
    }
    long rounds = 200;
    if (argc > 2) {
        char *end;
        errno = 0;
        rounds = strtol(argv[2], &end, 10);
        if (errno || end == argv[2] || *end || rounds < 1 || rounds > MAX_ROUNDS) {
            fprintf(stderr, "decode_bound: rounds '%s' is not a whole number 1-%d\n", argv[2], MAX_ROUNDS);
            return 2;
        }
    }
    runs = el_gemm_runs_kernel(dtype, EL_ISA_BEST);
    if (!runs) {
        fprintf(stderr, "decode_bound: %s has no two-run decode kernel on this CPU\n", type);
        return 1;
    }

    // a source of random packed pairs at each width, copied into the stripes over and over
    enum { SOURCE_PAIRS = 64 };
    const char *source[2];
    for (int w = 0; w < 2; w++) {
        const int k = w ? 5632 : 2048;
        if (!(source[w] = random_pairs(dtype, k, SOURCE_PAIRS, &pair_bytes[w]))) nomem("the weights");
        float *x = malloc((size_t)k * sizeof *x);
        char *a = el_malloc_aligned(el_act_row_size(el_dtype_info(dtype)->vec_dot_type, k));
        if (!x || !a) nomem("the activations");
        for (int i = 0; i < k; i++) x[i] = (float)((i * 37) % 19) / 9.0f - 1.0f;
        el_act_quantize(el_dtype_info(dtype)->vec_dot_type, x, a, k);
        free(x);
        act[w] = a;
    }
    for (int l = 0; l < LAYERS; l++)
        for (int i = 0; i < 7; i++) order[7 * l + i] = &layer_mats[i];
    order[MATRICES - 1] = &head;
    size_t bytes = 0;
    for (int s = 0; s < STRIPES; s++) {
        size_t n = 0;
        for (int i = 0; i < MATRICES; i++)
            n += (size_t)stripe_pairs(order[i], s) * pair_bytes[kind(order[i]->k)];
        char *r = el_malloc_huge(n);
        if (!r) nomem("the stripes");
        size_t at = 0, from[2] = {0, 0};
        for (int i = 0; i < MATRICES; i++) {
            const int w = kind(order[i]->k);
            for (int64_t p = 0; p < stripe_pairs(order[i], s); p++) {
                memcpy(r + at, source[w] + from[w] * pair_bytes[w], pair_bytes[w]);
                at += pair_bytes[w], from[w] = (from[w] + 1) % SOURCE_PAIRS;
            }
        }
        region[s] = r, region_bytes[s] = n, bytes += n;
    }
    printf("%s: %.0f MB of packed weights a step, %ld rounds\n", type, (double)bytes / 1e6, rounds);

    el_pool *pool = el_pool_new(THREADS);
    el_read_probe *probe = pool ? el_read_probe_new(pool, (size_t)512 << 20) : NULL;
    if (!probe) nomem("the read probe");
    if (pthread_barrier_init(&start_gate, NULL, THREADS + 1)) nomem("a barrier");
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++)
        if (pthread_create(&th[t], NULL, thread_main, (void *)(intptr_t)t)) {
            fprintf(stderr, "decode_bound: cannot start thread %d\n", t);
            exit(1);
        }
    static double ratio[2][FORMS][MAX_ROUNDS], paired[2][FORMS][MAX_ROUNDS];
    int kept[2] = {0, 0};
    double lo[2] = {1e9, 1e9}, hi[2] = {0, 0};
    const double t0 = now();
    for (long r = 0; r < rounds; r++) {
        const double p0 = el_read_probe_run(probe, 3);
        double secs[FORMS];
        for (int i = 0; i < FORMS; i++) {
            const int f = (int)((i + r) % FORMS);  // a different form first each round
            atomic_store(&form, f);
            pthread_barrier_wait(&start_gate);
            pthread_barrier_wait(&start_gate);
            const double a0 = t_start[0] < t_start[1] ? t_start[0] : t_start[1];
            const double a1 = t_end[0] > t_end[1] ? t_end[0] : t_end[1];
            secs[f] = a1 - a0;
        }
        const double p1 = el_read_probe_run(probe, 3);
        const double el = now() - t0;
        fprintf(stderr, "\rround %ld/%ld  %.1f rounds/s  ETA %.0f s   ", r + 1, rounds, (double)(r + 1) / el,
                (double)(rounds - r - 1) * el / (double)(r + 1));
        if (p0 <= 0 || p1 <= 0 || p1 > 1.15 * p0 || p0 > 1.15 * p1) continue;
        const double pm = (p0 + p1) / 2;
        const int st = pm >= 60;
        for (int f = 0; f < FORMS; f++) {
            ratio[st][f][kept[st]] = (double)bytes / secs[f] / 1e9 / pm;
            paired[st][f][kept[st]] = secs[f] / secs[2];
        }
        lo[st] = pm < lo[st] ? pm : lo[st], hi[st] = pm > hi[st] ? pm : hi[st];
        kept[st]++;
    }
    fprintf(stderr, "\n");
    atomic_store(&form, -1);
    pthread_barrier_wait(&start_gate);
    for (int t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
    if (!kept[0] && !kept[1]) printf("no round kept: the probe moved more than 15%% across every round\n");
    for (int st = 1; st >= 0; st--) {
        if (!kept[st]) continue;
        const int n = kept[st];
        printf("%s state: probe %.0f-%.0f GB/s, %d rounds. Against the probe, median (quartiles); step time against "
               "1/step's in the same round, median (quartiles):\n",
               st ? "fast" : "slow", lo[st], hi[st], n);
        for (int f = 0; f < FORMS; f++) {
            qsort(ratio[st][f], (size_t)n, sizeof(double), cmp_double);
            qsort(paired[st][f], (size_t)n, sizeof(double), cmp_double);
            printf("  %-9s %.3f (%.3f-%.3f)   %.3f (%.3f-%.3f)\n", form_name[f], ratio[st][f][n / 2],
                   ratio[st][f][n / 4], ratio[st][f][3 * n / 4], paired[st][f][n / 2], paired[st][f][n / 4],
                   paired[st][f][3 * n / 4]);
        }
    }
    el_read_probe_free(probe);
    el_pool_free(pool);
    for (int s = 0; s < STRIPES; s++) el_free_aligned((void *)region[s]);
    for (int w = 0; w < 2; w++) el_free_aligned((void *)source[w]), el_free_aligned((void *)act[w]);
    return 0;
}
