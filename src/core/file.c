// Whole-file reads with a size cap, for small inputs (prompts, datasets, key files).
#include "edgellm/core.h"

#include <errno.h>
#include <fcntl.h>
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

void el_sync_parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? malloc((size_t)(slash - path) + 2) : NULL;
    if (slash && !dir) return;
    if (dir) {
        size_t n = slash == path ? 1 : (size_t)(slash - path);
        memcpy(dir, path, n);
        dir[n] = 0;
    }
    int fd = open(dir ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

el_status el_write_file_atomic_mode(const char *path, const void *data, size_t n, unsigned mode, el_error *err) {
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 5);
    if (!tmp) return el_err(err, EL_ERR_NOMEM, "%s: out of memory", path);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    unlink(tmp);  // a leftover of a crash; then create it ourselves, with its mode from the start
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, (mode_t)mode);
    if (fd < 0) {
        el_err(err, EL_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return EL_ERR_IO;
    }
    int bad = 0;
    for (size_t done = 0; !bad && done < n;) {
        ssize_t w = write(fd, (const char *)data + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) bad = 1;
        else done += (size_t)w;
    }
    bad |= fsync(fd) != 0;
    bad |= close(fd) != 0;
    if (bad || rename(tmp, path)) {
        el_err(err, EL_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return EL_ERR_IO;
    }
    free(tmp);
    el_sync_parent_dir(path);
    return EL_OK;
}

el_status el_write_file_atomic(const char *path, const void *data, size_t n, el_error *err) {
    return el_write_file_atomic_mode(path, data, n, 0644, err);
}

int el_file_name_ok(const char *name, size_t max) {
    size_t n = name ? strlen(name) : 0;
    if (n < 1 || n > max || name[0] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return 0;
    }
    return 1;
}
