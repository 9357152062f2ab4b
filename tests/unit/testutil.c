#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *tu_model_path(const char *rel) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/models/%s", EL_SHARED_DIR, rel);
    return buf;
}

const char *tu_tmp_path(const char *name) {
    static char buf[4096];
    const char *dir = getenv("EL_TMP");
    if (!dir) dir = "/tmp";
    mkdir(dir, 0755);
    snprintf(buf, sizeof buf, "%s/%d-%s", dir, (int)getpid(), name);
    return buf;
}

const char *tu_write_tmp(const char *name, const void *data, size_t n) {
    const char *p = tu_tmp_path(name);
    FILE *f = fopen(p, "wb");
    if (!f) return NULL;
    if (n) fwrite(data, 1, n, f);
    fclose(f);
    return p;
}

uint64_t tu_rand(uint64_t *s) {
    uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ULL;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

float tu_randf(uint64_t *s) { return (float)((tu_rand(s) >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f; }
