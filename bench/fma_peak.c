// The machine's f32 FMA peak: each thread runs 12 independent chains of 8-wide
// fused multiply-adds (enough to cover FMA latency x throughput on current
// x86 cores) for a fixed time. Prints GFLOP/s (1 FMA = 2 FLOP).
// Build: cc -O2 -mavx2 -mfma -pthread bench/fma_peak.c -o fma_peak
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct {
    double seconds;
    long long iters;
    float sink;
} job;

// Twelve named accumulators (an array would live in memory and serialise on
// store-to-load forwarding).
#define FMA12(a, b)                                                                                                 \
    c0 = _mm256_fmadd_ps(c0, a, b), c1 = _mm256_fmadd_ps(c1, a, b), c2 = _mm256_fmadd_ps(c2, a, b),               \
    c3 = _mm256_fmadd_ps(c3, a, b), c4 = _mm256_fmadd_ps(c4, a, b), c5 = _mm256_fmadd_ps(c5, a, b),               \
    c6 = _mm256_fmadd_ps(c6, a, b), c7 = _mm256_fmadd_ps(c7, a, b), c8 = _mm256_fmadd_ps(c8, a, b),               \
    c9 = _mm256_fmadd_ps(c9, a, b), c10 = _mm256_fmadd_ps(c10, a, b), c11 = _mm256_fmadd_ps(c11, a, b)

static void *run(void *p) {
    job *j = p;
    __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    __m256 c0 = _mm256_set1_ps(0), c1 = _mm256_set1_ps(1), c2 = _mm256_set1_ps(2), c3 = _mm256_set1_ps(3);
    __m256 c4 = _mm256_set1_ps(4), c5 = _mm256_set1_ps(5), c6 = _mm256_set1_ps(6), c7 = _mm256_set1_ps(7);
    __m256 c8 = _mm256_set1_ps(8), c9 = _mm256_set1_ps(9), c10 = _mm256_set1_ps(10), c11 = _mm256_set1_ps(11);
    double t0 = now();
    long long it = 0;
    while (now() - t0 < j->seconds) {
        for (int r = 0; r < 100000; r++) FMA12(a, b);
        it += 100000;
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3)),
                             _mm256_add_ps(_mm256_add_ps(c4, c5), _mm256_add_ps(c6, c7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(c8, c9), _mm256_add_ps(c10, c11)));
    float out[8];
    _mm256_storeu_ps(out, s);
    j->sink = out[0];
    j->iters = it;
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    double secs = argc > 2 ? atof(argv[2]) : 1.0;
    if (threads < 1 || threads > 256) return 2;
    pthread_t th[256];
    job jobs[256];
    double t0 = now();
    for (int i = 0; i < threads; i++) {
        jobs[i] = (job){secs, 0, 0};
        pthread_create(&th[i], NULL, run, &jobs[i]);
    }
    double flop = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        flop += (double)jobs[i].iters * 12 * 8 * 2;
    }
    printf("%.2f\n", flop / (now() - t0) / 1e9);
    return 0;
}
