// JSON parsers on the inputs they meet: for each file, the parser's peak
// memory per input byte (every byte it had allocated at the worst moment of
// the parse, counted by wrapping malloc) and its speed (MB/s, best of several
// passes). el_json always; cJSON too when built with -DWITH_CJSON.
// Build: see bench/json_bench.sh (it links with -Wl,--wrap=malloc,... so that
// the library's allocations are counted).
// Usage: json_bench FILE...         one line per file
//        json_bench --sum FILE...   one line for them all (a fuzz corpus):
//        peak bytes summed over files / bytes, the largest ratio of any file,
//        bytes / summed parse times
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "edgellm/json.h"
#ifdef WITH_CJSON
#include <cjson/cJSON.h>
#endif

// ---------------------------------------------------------------- counting allocator

void *__real_malloc(size_t n);
void *__real_calloc(size_t a, size_t b);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);

static size_t cur, peak;
#define HDR 16  // keeps malloc's alignment

static void *note(char *p, size_t n) {
    if (!p) return NULL;
    memcpy(p, &n, sizeof n);
    cur += n;
    if (cur > peak) peak = cur;
    return p + HDR;
}
void *__wrap_malloc(size_t n) { return note(__real_malloc(n + HDR), n); }
void *__wrap_calloc(size_t a, size_t b) {
    size_t n = a * b;  // the callers here never overflow this
    char *p = __real_malloc(n + HDR);
    if (p) memset(p + HDR, 0, n);
    return note(p, n);
}
void __wrap_free(void *q) {
    if (!q) return;
    char *p = (char *)q - HDR;
    size_t n;
    memcpy(&n, p, sizeof n);
    cur -= n;
    __real_free(p);
}
void *__wrap_realloc(void *q, size_t n) {
    if (!q) return __wrap_malloc(n);
    char *p = (char *)q - HDR;
    size_t old;
    memcpy(&old, p, sizeof old);
    // old and new blocks live at once when the allocator moves the block
    if (cur + n > peak) peak = cur + n;
    char *np = __real_realloc(p, n + HDR);
    if (!np) return NULL;
    cur -= old;
    return note(np, n);
}

// ---------------------------------------------------------------- parsers

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int parse_el(const char *text, size_t n) {
    el_json *j;
    el_error e;
    if (el_json_parse(text, n, "bench", &j, &e)) return 0;
    el_json_free(j);
    return 1;
}

#ifdef WITH_CJSON
static void *cj_malloc(size_t n) { return __wrap_malloc(n); }
static void cj_free(void *p) { __wrap_free(p); }
static int parse_cj(const char *text, size_t n) {
    cJSON *j = cJSON_ParseWithLength(text, n);
    if (!j) return 0;
    cJSON_Delete(j);
    return 1;
}
#endif

typedef int (*parse_fn)(const char *, size_t);

// Peak bytes of one parse, and MB/s as the best of passes over >= 0.2 s.
static void measure(parse_fn f, const char *text, size_t n, int *ok, size_t *bytes, double *mbs) {
    cur = peak = 0;
    *ok = f(text, n);
    *bytes = peak;
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        int reps = 0;
        double t0 = now(), t;
        do {
            f(text, n);
            reps++;
        } while ((t = now() - t0) < 0.04);
        if (t / reps < best) best = t / reps;
    }
    *mbs = n / best / 1e6;
}

typedef struct {
    double bytes, peak_bytes, max_ratio;
    int bad;
} total;

static char *load(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (!fp) { perror(path); exit(1); }
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *text = __real_malloc((size_t)n + 1);
    if (!text || fread(text, 1, (size_t)n, fp) != (size_t)n) exit(1);
    text[n] = 0;
    fclose(fp);
    *len = (size_t)n;
    return text;
}

int main(int argc, char **argv) {
    parse_fn fns[2] = {parse_el, NULL};
    const char *names[2] = {"el_json", "cJSON"};
#ifdef WITH_CJSON
    cJSON_Hooks hooks = {cj_malloc, cj_free};
    cJSON_InitHooks(&hooks);
    fns[1] = parse_cj;
#endif
    int sum = argc > 1 && !strcmp(argv[1], "--sum"), nf = argc - 1 - sum;
    char **texts = __real_malloc((size_t)nf * sizeof *texts);
    size_t *lens = __real_malloc((size_t)nf * sizeof *lens);
    for (int i = 0; i < nf; i++) texts[i] = load(argv[1 + sum + i], &lens[i]);
    if (!sum) {
        printf("%-30s %10s | %-21s", "file", "bytes", "el_json B/byte MB/s");
        if (fns[1]) printf(" | %-21s", "cJSON B/byte MB/s");
        printf("\n");
        for (int i = 0; i < nf; i++) {
            const char *path = argv[1 + i], *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
            printf("%-30.30s %10zu", name, lens[i]);
            for (int k = 0; k < 2 && fns[k]; k++) {
                int ok;
                size_t bytes;
                double mbs;
                measure(fns[k], texts[i], lens[i], &ok, &bytes, &mbs);
                printf(" | %6.2f %8.1f %-5s", lens[i] ? (double)bytes / lens[i] : 0, mbs, ok ? "" : "(bad)");
            }
            printf("\n");
        }
        return 0;
    }
    for (int k = 0; k < 2 && fns[k]; k++) {
        total t = {0};
        for (int i = 0; i < nf; i++) {
            cur = peak = 0;
            t.bad += !fns[k](texts[i], lens[i]);
            t.bytes += lens[i];
            t.peak_bytes += peak;
            double r = lens[i] ? (double)peak / lens[i] : 0;
            if (r > t.max_ratio) t.max_ratio = r;
        }
        double best = 1e30;
        for (int r = 0; r < 5; r++) {
            double t0 = now();
            for (int i = 0; i < nf; i++) fns[k](texts[i], lens[i]);
            if (now() - t0 < best) best = now() - t0;
        }
        printf("%s: %d files, %.0f bytes: %.2f B/byte overall, at most %.2f, %.1f MB/s, %d rejected\n", names[k], nf,
               t.bytes, t.peak_bytes / t.bytes, t.max_ratio, t.bytes / best / 1e6, t.bad);
    }
    return 0;
}
