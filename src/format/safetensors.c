// safetensors: validate the whole header before any tensor is touched.
#include "edgellm/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edgellm/json.h"
#include "edgellm/tensor.h"

// ---------------------------------------------------------------- header

// A JSON number that is a whole value in [0, 2^53] (exact in a double).
static int whole(const el_json *j, uint64_t *out) {
    double d = el_json_num(j, -1);
    if (!(d >= 0 && d <= 9007199254740992.0) || floor(d) != d) return 0;
    *out = (uint64_t)d;
    return 1;
}

static el_status parse_tensor(el_safetensors *st, const el_json *j, el_st_tensor *t, el_error *err) {
    const char *p = st->path, *n = t->name;
    if (!el_json_is(j, EL_JSON_OBJECT)) return el_err(err, EL_ERR_FORMAT, "%s: tensor %s is not a JSON object", p, n);
    const char *dt = el_json_str(el_json_get(j, "dtype"));
    const el_json *sh = el_json_get(j, "shape");
    const el_json *off = el_json_get(j, "data_offsets");
    if (!dt) return el_err(err, EL_ERR_FORMAT, "%s: tensor %s has no dtype string", p, n);
    size_t esize;
    if (!strcmp(dt, "F32")) t->dtype = EL_DTYPE_F32, esize = 4;
    else if (!strcmp(dt, "F16")) t->dtype = EL_DTYPE_F16, esize = 2;
    else if (!strcmp(dt, "BF16")) t->dtype = EL_DTYPE_BF16, esize = 2;
    else
        return el_err(err, EL_ERR_UNSUPPORTED, "%s: tensor %s has dtype '%.32s' (supported: F32, F16, BF16)", p, n, dt);
    if (!el_json_is(sh, EL_JSON_ARRAY)) return el_err(err, EL_ERR_FORMAT, "%s: tensor %s has no shape array", p, n);
    size_t nd = el_json_len(sh);
    if (nd > EL_ST_MAX_DIMS)
        return el_err(err, EL_ERR_RANGE, "%s: tensor %s has %zu dimensions (at most %d)", p, n, nd, EL_ST_MAX_DIMS);
    t->n_dims = (int)nd;
    uint64_t numel = 1;
    int d = 0;
    for (const el_json *e = el_json_first(sh); e; e = el_json_next(sh, e), d++) {
        uint64_t v;
        if (!whole(e, &v) || v > (uint64_t)EL_ST_MAX_DIM)
            return el_err(err, EL_ERR_RANGE, "%s: tensor %s dimension %d is not an integer in 0..2^40", p, n, d);
        t->shape[d] = (int64_t)v;
        if (__builtin_mul_overflow(numel, v, &numel))
            return el_err(err, EL_ERR_RANGE, "%s: tensor %s has an absurd shape (element count overflows)", p, n);
    }
    uint64_t bytes;
    if (__builtin_mul_overflow(numel, (uint64_t)esize, &bytes))
        return el_err(err, EL_ERR_RANGE, "%s: tensor %s has an absurd shape (byte count overflows)", p, n);
    if (!el_json_is(off, EL_JSON_ARRAY) || el_json_len(off) != 2 || !whole(el_json_at(off, 0), &t->begin) ||
        !whole(el_json_at(off, 1), &t->end))
        return el_err(err, EL_ERR_FORMAT, "%s: tensor %s data_offsets is not [begin, end] in bytes", p, n);
    size_t data_len = st->size - st->data_offset;
    if (t->begin > t->end || t->end > data_len)
        return el_err(err, EL_ERR_FORMAT,
                      "%s: tensor %s data_offsets [%llu, %llu) are outside the %zu bytes of data (truncated file?)", p,
                      n, (unsigned long long)t->begin, (unsigned long long)t->end, data_len);
    if (t->end - t->begin != bytes)
        return el_err(err, EL_ERR_FORMAT, "%s: tensor %s holds %llu bytes but its shape and dtype need %llu", p, n,
                      (unsigned long long)(t->end - t->begin), (unsigned long long)bytes);
    t->data = st->bytes + st->data_offset + t->begin;
    return EL_OK;
}

static int by_begin(const void *a, const void *b) {
    const el_st_tensor *x = *(const el_st_tensor *const *)a, *y = *(const el_st_tensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

static int by_name(const void *a, const void *b) {
    return strcmp((*(const el_st_tensor *const *)a)->name, (*(const el_st_tensor *const *)b)->name);
}

// Ranges pairwise disjoint (empty tensors excepted) and names unique.
static el_status check_layout(el_safetensors *st, el_error *err) {
    if (st->n_tensors < 2) return EL_OK;
    el_st_tensor **v = malloc((size_t)st->n_tensors * sizeof *v);
    if (!v) return el_err(err, EL_ERR_NOMEM, "%s: out of memory", st->path);
    for (int i = 0; i < st->n_tensors; i++) v[i] = &st->tensors[i];
    el_status s = EL_OK;
    qsort(v, (size_t)st->n_tensors, sizeof *v, by_begin);
    uint64_t reach = 0;
    const el_st_tensor *last = NULL;
    for (int i = 0; i < st->n_tensors && !s; i++) {
        if (v[i]->begin == v[i]->end) continue;
        if (last && v[i]->begin < reach)
            s = el_err(err, EL_ERR_FORMAT, "%s: tensors %s and %s overlap in the data section", st->path, last->name,
                       v[i]->name);
        reach = v[i]->end, last = v[i];
    }
    qsort(v, (size_t)st->n_tensors, sizeof *v, by_name);
    for (int i = 1; i < st->n_tensors && !s; i++)
        if (!strcmp(v[i - 1]->name, v[i]->name))
            s = el_err(err, EL_ERR_FORMAT, "%s: tensor %s appears twice in the header", st->path, v[i]->name);
    free(v);
    return s;
}

static el_status parse(el_safetensors *st, el_error *err) {
    const char *p = st->path;
    if (st->size < 8)
        return el_err(err, EL_ERR_FORMAT, "%s: %zu bytes is too short for a safetensors file (8-byte header length)", p,
                      st->size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | st->bytes[i];
    if (hlen > EL_ST_MAX_HEADER)
        return el_err(err, EL_ERR_RANGE, "%s: header length %llu is over the %llu-byte cap (not a safetensors file?)",
                      p, (unsigned long long)hlen, (unsigned long long)EL_ST_MAX_HEADER);
    if (hlen > st->size - 8)
        return el_err(err, EL_ERR_FORMAT, "%s: header length %llu runs past the end of the %zu-byte file", p,
                      (unsigned long long)hlen, st->size);
    st->data_offset = 8 + (size_t)hlen;
    el_json *root;
    el_status s = el_json_parse((const char *)st->bytes + 8, (size_t)hlen, p, &root, err);
    if (s) return s;
    if (!el_json_is(root, EL_JSON_OBJECT)) {
        el_json_free(root);
        return el_err(err, EL_ERR_FORMAT, "%s: the header is not a JSON object", p);
    }
    int n = 0;
    for (const el_json *e = el_json_first(root); e; e = el_json_next(root, e))
        if (strcmp(el_json_key(root, e), "__metadata__")) n++;
    if (n > EL_ST_MAX_TENSORS) {
        el_json_free(root);
        return el_err(err, EL_ERR_RANGE, "%s: %d tensors is over the cap of %d", p, n, EL_ST_MAX_TENSORS);
    }
    st->tensors = calloc((size_t)n + 1, sizeof *st->tensors);
    if (!st->tensors) {
        el_json_free(root);
        return el_err(err, EL_ERR_NOMEM, "%s: out of memory for %d tensors", p, n);
    }
    for (const el_json *e = el_json_first(root); e && !s; e = el_json_next(root, e)) {
        const char *key = el_json_key(root, e);
        if (!strcmp(key, "__metadata__")) {
            if (!el_json_is(e, EL_JSON_OBJECT)) s = el_err(err, EL_ERR_FORMAT, "%s: __metadata__ is not a JSON object", p);
            continue;
        }
        el_st_tensor *t = &st->tensors[st->n_tensors];
        if (!(t->name = strdup(key))) {
            s = el_err(err, EL_ERR_NOMEM, "%s: out of memory", p);
            break;
        }
        st->n_tensors++;
        s = parse_tensor(st, e, t, err);
    }
    el_json_free(root);
    if (!s) s = check_layout(st, err);
    return s;
}

static el_status finish(el_safetensors *st, el_safetensors **out, el_error *err) {
    el_status s = parse(st, err);
    if (s) {
        el_safetensors_close(st);
        return s;
    }
    *out = st;
    return EL_OK;
}

el_status el_safetensors_open_memory(const void *data, size_t size, const char *name, el_safetensors **out,
                                     el_error *err) {
    *out = NULL;
    el_safetensors *st = calloc(1, sizeof *st);
    if (!st || !(st->path = strdup(name))) {
        free(st);
        return el_err(err, EL_ERR_NOMEM, "%s: out of memory", name);
    }
    st->bytes = data;
    st->size = size;
    return finish(st, out, err);
}

el_status el_safetensors_open(const char *path, el_safetensors **out, el_error *err) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return el_err(err, EL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
        close(fd);
        return el_err(err, EL_ERR_IO, "%s: not a regular file", path);
    }
    el_safetensors *st = calloc(1, sizeof *st);
    if (!st || !(st->path = strdup(path))) {
        free(st);
        close(fd);
        return el_err(err, EL_ERR_NOMEM, "%s: out of memory", path);
    }
    st->size = (size_t)sb.st_size;
    if (st->size > 0) {
        void *m = mmap(NULL, st->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            close(fd);
            el_safetensors_close(st);
            return el_err(err, EL_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
        }
        st->map = m;
        st->bytes = m;
    } else {
        st->bytes = (const unsigned char *)"";
    }
    close(fd);
    return finish(st, out, err);
}

void el_safetensors_close(el_safetensors *st) {
    if (!st) return;
    if (st->map) munmap(st->map, st->size);
    for (int i = 0; i < st->n_tensors; i++) free(st->tensors[i].name);
    free(st->tensors);
    free(st->path);
    free(st);
}

const el_st_tensor *el_safetensors_find(const el_safetensors *st, const char *name) {
    for (int i = 0; i < st->n_tensors; i++)
        if (!strcmp(st->tensors[i].name, name)) return &st->tensors[i];
    return NULL;
}

uint64_t el_st_numel(const el_st_tensor *t) {
    uint64_t n = 1;
    for (int d = 0; d < t->n_dims; d++) n *= (uint64_t)t->shape[d];
    return n;
}
