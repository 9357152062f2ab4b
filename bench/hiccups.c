// How much of each CPU's time the machine takes away: one thread per CPU
// (the first CPUS of those this process may run on), pinned, computes and
// reads the clock in a loop; every gap between two reads of at least
// THRESHOLD ms is time the thread did not run (the host descheduled the
// virtual CPU, or another task ran on it). Prints, per CPU, the gaps, their
// total as a share of the run, and the largest. Busy one CPU, then all, to
// tell a quota over the machine (gaps only when all are busy) from a busy host.
//
// Why it matters: a decode step or a prefill on 2 threads waits at every
// product for both threads, so a gap on either CPU stops both. Ratios to a
// peak or to the read bandwidth measured in short probes (`edgellm bench`)
// cannot rise above what the gaps leave (docs/performance.md).
//
// Build (one line): cc -O2 bench/hiccups.c -o hiccups -pthread
// Usage: hiccups [SECONDS] [THRESHOLD_MS] [CPUS]   (defaults 10, 1, all)
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int cpu;
    double seconds, threshold;
    int gaps, pinned;
    double lost, largest;
} probe;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void *run(void *arg) {
    probe *p = arg;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(p->cpu, &set);
    p->pinned = pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0;
    volatile double x = 1.0;
    double start = now(), last = start;
    while (last - start < p->seconds) {
        for (int i = 0; i < 100; i++) x = x * 1.0000001;  // well under a microsecond between reads
        double t = now(), gap = t - last;
        if (gap >= p->threshold) {
            p->gaps++;
            p->lost += gap;
            if (gap > p->largest) p->largest = gap;
        }
        last = t;
    }
    return NULL;
}

static int parse(const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: hiccups [SECONDS] [THRESHOLD_MS] [CPUS]\n\n"
                   "One pinned thread on each of the first CPUS (default: all) of the CPUs this\n"
                   "process may run on computes and reads the clock for SECONDS (default 10);\n"
                   "gaps of THRESHOLD_MS (default 1) or more are time it did not run. Prints per\n"
                   "CPU the gaps, their share of the run and the largest.\n");
            return 0;
        }
    if (argc > 4) {
        fprintf(stderr, "hiccups: at most 3 arguments (SECONDS THRESHOLD_MS CPUS), got %d; see --help\n", argc - 1);
        return 2;
    }
    double seconds = 10, threshold_ms = 1, want = 0;
    if (argc > 1 && parse(argv[1], 0.1, 3600, &seconds)) {
        fprintf(stderr, "hiccups: SECONDS must be 0.1..3600, got '%s'\n", argv[1]);
        return 2;
    }
    if (argc > 2 && parse(argv[2], 0.01, 10000, &threshold_ms)) {
        fprintf(stderr, "hiccups: THRESHOLD_MS must be 0.01..10000, got '%s'\n", argv[2]);
        return 2;
    }
    if (argc > 3 && (parse(argv[3], 1, CPU_SETSIZE, &want) || want != (int)want)) {
        fprintf(stderr, "hiccups: CPUS must be a whole number 1..%d, got '%s'\n", CPU_SETSIZE, argv[3]);
        return 2;
    }
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed)) {
        fprintf(stderr, "hiccups: cannot read this process's CPUs: %s\n", strerror(errno));
        return 1;
    }
    int cpus[CPU_SETSIZE], n = 0;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &allowed)) cpus[n++] = c;
    if (want > n) {
        fprintf(stderr, "hiccups: CPUS is %.0f, but this process may run on %d\n", want, n);
        return 2;
    }
    if (want > 0) n = (int)want;
    probe *p = calloc((size_t)n, sizeof *p);
    pthread_t *t = calloc((size_t)n, sizeof *t);
    if (!p || !t) {
        fprintf(stderr, "hiccups: out of memory\n");
        return 1;
    }
    fprintf(stderr, "hiccups: %d CPUs busy, %.1f s, gaps of %.2f ms or more\n", n, seconds, threshold_ms);
    for (int i = 0; i < n; i++) {
        p[i] = (probe){cpus[i], seconds, threshold_ms * 1e-3, 0, 0, 0, 0};
        if (pthread_create(&t[i], NULL, run, &p[i])) {
            fprintf(stderr, "hiccups: cannot start a thread for CPU %d\n", cpus[i]);
            return 1;
        }
    }
    // progress on stderr once a second (this thread sleeps in between)
    for (double t0 = now(), e; (e = now() - t0) < seconds;) {
        fprintf(stderr, "\rhiccups: %.0f of %.0f s, %.0f s left ", e, seconds, seconds - e);
        struct timespec one = {1, 0};
        nanosleep(&one, NULL);
    }
    fprintf(stderr, "\n");
    for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < n; i++)
        printf("cpu %d: %d gaps, %.1f ms lost (%.1f%% of the run), largest %.1f ms%s\n", p[i].cpu, p[i].gaps,
               p[i].lost * 1e3, 100 * p[i].lost / seconds, p[i].largest * 1e3, p[i].pinned ? "" : " (not pinned)");
    free(p);
    free(t);
    return 0;
}
