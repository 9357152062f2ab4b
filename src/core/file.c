// Whole-file reads with a size cap, for small inputs (prompts, datasets, key files).
#include "edgellm/core.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

el_status el_read_file(const char *path, size_t max_bytes, char **data, size_t *len, el_error *err) {
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return el_err(err, EL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    // Read at most max_bytes + 1 so that a file over the limit is noticed.
    size_t limit = max_bytes < SIZE_MAX - 1 ? max_bytes + 1 : max_bytes;
    size_t cap = limit < 4096 ? limit : 4096, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) { fclose(f); return el_err(err, EL_ERR_NOMEM, "%s: out of memory", path); }
    for (;;) {
        if (n == cap) {
            if (cap >= limit) break;
            size_t ncap = cap > limit / 2 ? limit : cap * 2;
            char *nb = realloc(buf, ncap + 1);
            if (!nb) { free(buf); fclose(f); return el_err(err, EL_ERR_NOMEM, "%s: out of memory", path); }
            buf = nb;
            cap = ncap;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    if (n > max_bytes) {
        free(buf);
        fclose(f);
        return el_err(err, EL_ERR_RANGE, "%s: larger than the limit of %zu bytes", path, max_bytes);
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { free(buf); return el_err(err, EL_ERR_IO, "%s: read error", path); }
    buf[n] = 0;
    *data = buf;
    *len = n;
    return EL_OK;
}

el_status el_write_file_atomic(const char *path, const void *data, size_t n, el_error *err) {
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 5);
    if (!tmp) return el_err(err, EL_ERR_NOMEM, "%s: out of memory", path);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        el_err(err, EL_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return EL_ERR_IO;
    }
    int bad = n && fwrite(data, 1, n, f) != n;
    bad |= fflush(f) != 0;
    bad |= fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path)) {
        el_err(err, EL_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        remove(tmp);
        free(tmp);
        return EL_ERR_IO;
    }
    free(tmp);
    return EL_OK;
}
