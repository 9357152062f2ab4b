// GGUF writer: collects key/values and tensors, then streams a version 3 file
// to <path>.tmp, fsyncs it and renames it over <path> so readers never see half a file.
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "edgellm/gguf.h"
#include "gguf_internal.h"
#include "strmap.h"

// Numeric arrays and tensor data are written as the host's bytes.
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the GGUF writer assumes a little-endian host"
#endif

typedef struct {
    char *key;
    uint32_t type;
    uint8_t *val;  // the value exactly as it follows the type field in the file
    size_t val_len;
} wkv;

typedef struct {
    char *name;
    int dtype, n_dims;
    int64_t ne[EL_MAX_DIMS];
    const void *data;  // borrowed; NULL: ask the fill callback
    size_t nbytes;
    uint64_t offset;  // assigned by el_gguf_write
} wtensor;

struct el_gguf_writer {
    size_t alignment;
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
    el_strmap kv_index, t_index;
};

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

el_gguf_writer *el_gguf_writer_new(void) {
    el_gguf_writer *w = el_calloc(1, sizeof *w);
    if (!w) return NULL;
    w->alignment = EL_GGUF_DEFAULT_ALIGNMENT;
    el_strmap_init(&w->kv_index);
    el_strmap_init(&w->t_index);
    return w;
}

void el_gguf_writer_free(el_gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val);
    }
    free(w->kv);
    for (size_t i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->t);
    el_strmap_free(&w->kv_index);
    el_strmap_free(&w->t_index);
    free(w);
}

static int valid_alignment(uint64_t a) { return a && a <= UINT32_MAX && !(a & (a - 1)); }

el_status el_gguf_writer_set_alignment(el_gguf_writer *w, size_t alignment, el_error *err) {
    if (!w) return el_err(err, EL_ERR_ARG, "gguf writer: no writer");
    if (!valid_alignment(alignment))
        return el_err(err, EL_ERR_ARG, "gguf writer: alignment %zu is not a power of two below 2^32", alignment);
    w->alignment = alignment;
    return EL_OK;
}

static int grow(void **arr, size_t *cap, size_t n, size_t elem) {
    if (n < *cap) return 0;
    size_t ncap = *cap ? *cap * 2 : 16, bytes;
    if (ncap < *cap || el_mul_size(ncap, elem, &bytes)) return -1;
    void *p = realloc(*arr, bytes);
    if (!p) return -1;
    *arr = p;
    *cap = ncap;
    return 0;
}

// Stores key -> (type, val), taking ownership of val (also on failure).
// general.alignment is not stored: the writer derives it from its alignment.
static el_status put_kv(el_gguf_writer *w, const char *key, uint32_t type, uint8_t *val, size_t val_len) {
    size_t klen = key ? strlen(key) : 0;
    if (!w || !klen || klen > EL_GGUF_MAX_STRING || !strcmp(key, EL_GGUF_ALIGNMENT_KEY)) {
        free(val);
        return EL_ERR_ARG;
    }
    size_t i = el_strmap_get(&w->kv_index, key, klen);
    if (i != EL_STRMAP_NONE) {  // replace the value, keep the key's position
        free(w->kv[i].val);
        w->kv[i].type = type;
        w->kv[i].val = val;
        w->kv[i].val_len = val_len;
        return EL_OK;
    }
    char *k = el_malloc(klen + 1);
    if (k) memcpy(k, key, klen + 1);
    if (!k || grow((void **)&w->kv, &w->cap_kv, w->n_kv, sizeof *w->kv) ||
        el_strmap_put(&w->kv_index, k, klen, w->n_kv)) {
        free(k);
        free(val);
        return EL_ERR_NOMEM;
    }
    w->kv[w->n_kv++] = (wkv){k, type, val, val_len};
    return EL_OK;
}

static el_status put_scalar(el_gguf_writer *w, const char *key, uint32_t type, uint64_t bits) {
    size_t n = el_gguf_scalar_size(type);
    uint8_t *val = el_malloc(n);
    if (!val) return EL_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) val[i] = (uint8_t)(bits >> (8 * i));
    return put_kv(w, key, type, val, n);
}

el_status el_gguf_add_u32(el_gguf_writer *w, const char *key, uint32_t v) {
    if (w && key && !strcmp(key, EL_GGUF_ALIGNMENT_KEY)) return el_gguf_writer_set_alignment(w, v, NULL);
    return put_scalar(w, key, EL_GGUF_UINT32, v);
}

el_status el_gguf_add_i32(el_gguf_writer *w, const char *key, int32_t v) {
    return put_scalar(w, key, EL_GGUF_INT32, (uint32_t)v);
}

el_status el_gguf_add_u64(el_gguf_writer *w, const char *key, uint64_t v) {
    return put_scalar(w, key, EL_GGUF_UINT64, v);
}

el_status el_gguf_add_f32(el_gguf_writer *w, const char *key, float v) {
    uint32_t bits;
    memcpy(&bits, &v, 4);
    return put_scalar(w, key, EL_GGUF_FLOAT32, bits);
}

el_status el_gguf_add_bool(el_gguf_writer *w, const char *key, int v) {
    return put_scalar(w, key, EL_GGUF_BOOL, v != 0);
}

static el_status put_string(el_gguf_writer *w, const char *key, const char *s, size_t len) {
    if (len > EL_GGUF_MAX_STRING || (!s && len)) return EL_ERR_ARG;
    uint8_t *val = el_malloc(8 + len);
    if (!val) return EL_ERR_NOMEM;
    put_u64(val, len);
    if (len) memcpy(val + 8, s, len);
    return put_kv(w, key, EL_GGUF_STRING, val, 8 + len);
}

el_status el_gguf_add_str(el_gguf_writer *w, const char *key, const char *v) {
    if (!v) return EL_ERR_ARG;
    return put_string(w, key, v, strlen(v));
}

el_status el_gguf_add_arr(el_gguf_writer *w, const char *key, el_gguf_type t, const void *data, uint64_t n) {
    size_t sz = el_gguf_scalar_size(t), bytes, total;
    if (!sz || (!data && n)) return EL_ERR_ARG;  // strings and arrays have their own calls
    if (n > SIZE_MAX || el_mul_size((size_t)n, sz, &bytes) || el_add_size(bytes, 12, &total)) return EL_ERR_RANGE;
    if (t == EL_GGUF_BOOL)  // never write a file our own reader would reject
        for (uint64_t i = 0; i < n; i++)
            if (((const uint8_t *)data)[i] > 1) return EL_ERR_ARG;
    uint8_t *val = el_malloc(total);
    if (!val) return EL_ERR_NOMEM;
    put_u32(val, t);
    put_u64(val + 4, n);
    if (bytes) memcpy(val + 12, data, bytes);
    return put_kv(w, key, EL_GGUF_ARRAY, val, total);
}

el_status el_gguf_add_arr_str(el_gguf_writer *w, const char *key, const char *const *strs, const uint64_t *lens,
                              uint64_t n) {
    if ((!strs && n) || n > SIZE_MAX / 8) return EL_ERR_ARG;
    size_t total = 12;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t len = lens ? lens[i] : (strs[i] ? strlen(strs[i]) : 0);
        if (!strs[i] && (len || !lens)) return EL_ERR_ARG;
        if (len > EL_GGUF_MAX_STRING || el_add_size(total, 8 + (size_t)len, &total)) return EL_ERR_RANGE;
    }
    uint8_t *val = el_malloc(total), *p = val;
    if (!val) return EL_ERR_NOMEM;
    put_u32(p, EL_GGUF_STRING);
    put_u64(p + 4, n);
    p += 12;
    for (uint64_t i = 0; i < n; i++) {
        size_t len = lens ? (size_t)lens[i] : strlen(strs[i]);
        put_u64(p, len);
        if (len) memcpy(p + 8, strs[i], len);
        p += 8 + len;
    }
    return put_kv(w, key, EL_GGUF_ARRAY, val, total);
}

el_status el_gguf_add_all_kv(el_gguf_writer *w, const el_gguf *g) {
    if (!w || !g) return EL_ERR_ARG;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const el_gguf_kv *kv = &g->kv[i];
        el_status st;
        if (!strcmp(kv->key, EL_GGUF_ALIGNMENT_KEY) && kv->type == EL_GGUF_UINT32) {
            st = el_gguf_writer_set_alignment(w, (size_t)kv->v.u64, NULL);
        } else if (kv->type == EL_GGUF_STRING) {
            st = put_string(w, kv->key, kv->v.str.ptr, (size_t)kv->v.str.len);
        } else if (kv->type == EL_GGUF_ARRAY) {
            // Copied byte for byte, which also covers string arrays and arrays of arrays.
            const uint8_t *src;
            size_t n = el_gguf_array_span(g, kv, &src);
            uint8_t *val = n ? el_malloc(n) : NULL;
            if (!val) return n ? EL_ERR_NOMEM : EL_ERR_ARG;
            memcpy(val, src, n);
            st = put_kv(w, kv->key, EL_GGUF_ARRAY, val, n);
        } else if (el_gguf_scalar_size(kv->type)) {
            uint64_t bits;  // narrowing back to the stored width is exact
            if (kv->type == EL_GGUF_FLOAT32) {
                float f = (float)kv->v.f64;
                uint32_t b;
                memcpy(&b, &f, 4);
                bits = b;
            } else if (kv->type == EL_GGUF_FLOAT64) {
                memcpy(&bits, &kv->v.f64, 8);
            } else {
                bits = kv->v.u64;  // the signed members share the two's complement bits
            }
            st = put_scalar(w, kv->key, kv->type, bits);
        } else {
            st = EL_ERR_ARG;
        }
        if (st) return st;
    }
    return EL_OK;
}

el_status el_gguf_add_tensor(el_gguf_writer *w, const char *name, int dtype, int n_dims, const int64_t *ne,
                             const void *data) {
    size_t nlen = name ? strlen(name) : 0;
    const el_dtype_traits *info = el_dtype_info(dtype);
    if (!w || !nlen || nlen > EL_GGUF_MAX_NAME || !info || n_dims < 1 || n_dims > EL_MAX_DIMS || !ne)
        return EL_ERR_ARG;
    if (el_strmap_get(&w->t_index, name, nlen) != EL_STRMAP_NONE) return EL_ERR_ARG;
    wtensor t = {.dtype = dtype, .n_dims = n_dims, .data = data};
    int64_t nel = 1;
    for (int d = 0; d < EL_MAX_DIMS; d++) t.ne[d] = 1;
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] < 1 || ne[d] > EL_GGUF_MAX_DIM || ne[d] > INT64_MAX / nel) return EL_ERR_RANGE;
        t.ne[d] = ne[d];
        nel *= ne[d];
    }
    if (ne[0] % info->block_size) return EL_ERR_ARG;
    if (el_mul_size(el_dtype_row_size(dtype, ne[0]), (size_t)(nel / ne[0]), &t.nbytes)) return EL_ERR_RANGE;
    t.name = el_malloc(nlen + 1);
    if (t.name) memcpy(t.name, name, nlen + 1);
    if (!t.name || grow((void **)&w->t, &w->cap_t, w->n_t, sizeof *w->t) ||
        el_strmap_put(&w->t_index, t.name, nlen, w->n_t)) {
        free(t.name);
        return EL_ERR_NOMEM;
    }
    w->t[w->n_t++] = t;
    return EL_OK;
}

// ---------------------------------------------------------------- output

// Buffered output to a file descriptor with a sticky error: after the first
// failure every call is a no-op and st/err say what went wrong.
typedef struct {
    int fd;
    const char *path;  // the .tmp name, for messages
    uint8_t buf[1 << 16];
    size_t n;
    uint64_t written;
    el_progress *progress;
    el_status st;
    el_error *err;
} out;

static void write_all(out *o, const uint8_t *p, size_t n) {
    while (n && !o->st) {
        size_t chunk = n < ((size_t)1 << 26) ? n : ((size_t)1 << 26);  // 64 MiB, so progress moves within a tensor
        ssize_t r = write(o->fd, p, chunk);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            o->st = el_err(o->err, EL_ERR_IO, "%s: write failed after %llu bytes: %s", o->path,
                           (unsigned long long)o->written, r < 0 ? strerror(errno) : "no progress");
            return;
        }
        p += r;
        n -= (size_t)r;
        o->written += (uint64_t)r;
        if (o->progress) el_progress_update(o->progress, o->written, NULL);
    }
}

static void flush(out *o) {
    write_all(o, o->buf, o->n);
    o->n = 0;
}

static void emit(out *o, const void *p, size_t n) {
    if (o->st) return;
    if (n > sizeof o->buf - o->n) {
        flush(o);
        if (n >= sizeof o->buf) {  // large blocks (tensor data) bypass the buffer
            write_all(o, p, n);
            return;
        }
    }
    memcpy(o->buf + o->n, p, n);
    o->n += n;
}

static void emit_u32(out *o, uint32_t v) {
    uint8_t b[4];
    put_u32(b, v);
    emit(o, b, 4);
}
static void emit_u64(out *o, uint64_t v) {
    uint8_t b[8];
    put_u64(b, v);
    emit(o, b, 8);
}
static void emit_str(out *o, const char *s) {
    size_t n = strlen(s);
    emit_u64(o, n);
    emit(o, s, n);
}
static void emit_zeros(out *o, size_t n) {
    static const uint8_t zeros[4096];
    while (n) {
        size_t k = n < sizeof zeros ? n : sizeof zeros;
        emit(o, zeros, k);
        n -= k;
    }
}

static size_t pad_to(size_t pos, size_t a) { return (a - pos % a) % a; }

// Assigns tensor offsets and returns the size of everything before the data
// section and the total file size; -1 on overflow.
static int layout(el_gguf_writer *w, size_t *data_offset, size_t *total) {
    size_t pos = 24, x;
    if (w->alignment != EL_GGUF_DEFAULT_ALIGNMENT) pos += 8 + strlen(EL_GGUF_ALIGNMENT_KEY) + 4 + 4;
    for (size_t i = 0; i < w->n_kv; i++)
        if (el_add_size(pos, 8 + strlen(w->kv[i].key) + 4, &pos) || el_add_size(pos, w->kv[i].val_len, &pos))
            return -1;
    for (size_t i = 0; i < w->n_t; i++)
        if (el_mul_size(8, (size_t)w->t[i].n_dims, &x) || el_add_size(x, 8 + strlen(w->t[i].name) + 4 + 4 + 8, &x) ||
            el_add_size(pos, x, &pos))
            return -1;
    if (el_add_size(pos, pad_to(pos, w->alignment), &pos)) return -1;
    *data_offset = pos;
    size_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        w->t[i].offset = off;
        if (el_add_size(off, w->t[i].nbytes, &off) || el_add_size(off, pad_to(off, w->alignment), &off)) return -1;
    }
    return el_add_size(pos, off, total);
}


static void write_body(el_gguf_writer *w, out *o, size_t data_offset, el_gguf_fill_fn fill, void *fill_ctx) {
    int with_alignment = w->alignment != EL_GGUF_DEFAULT_ALIGNMENT;
    emit_u32(o, EL_GGUF_MAGIC);
    emit_u32(o, 3);
    emit_u64(o, w->n_t);
    emit_u64(o, w->n_kv + (size_t)with_alignment);
    if (with_alignment) {
        emit_str(o, EL_GGUF_ALIGNMENT_KEY);
        emit_u32(o, EL_GGUF_UINT32);
        emit_u32(o, (uint32_t)w->alignment);
    }
    for (size_t i = 0; i < w->n_kv; i++) {
        emit_str(o, w->kv[i].key);
        emit_u32(o, w->kv[i].type);
        emit(o, w->kv[i].val, w->kv[i].val_len);
    }
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        emit_str(o, t->name);
        emit_u32(o, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) emit_u64(o, (uint64_t)t->ne[d]);
        emit_u32(o, (uint32_t)t->dtype);
        emit_u64(o, t->offset);
    }
    if (o->st || o->written + o->n > data_offset) return;  // on error, or if layout() disagrees (caught by caller)
    emit_zeros(o, data_offset - (size_t)(o->written + o->n));

    // One scratch buffer, as large as the largest tensor that needs filling.
    size_t scratch_size = 0;
    for (size_t i = 0; i < w->n_t; i++)
        if (!w->t[i].data && w->t[i].nbytes > scratch_size) scratch_size = w->t[i].nbytes;
    uint8_t *scratch = NULL;
    if (scratch_size && !o->st) {
        scratch = el_malloc(scratch_size);
        if (!scratch)
            o->st = el_err(o->err, EL_ERR_NOMEM, "%s: cannot allocate %zu bytes for tensor data", o->path,
                           scratch_size);
    }
    for (size_t i = 0; i < w->n_t && !o->st; i++) {
        const wtensor *t = &w->t[i];
        const void *src = t->data;
        if (!src) {
            el_error ferr = {0};
            memset(scratch, 0, t->nbytes);
            el_status st = fill(fill_ctx, t->name, scratch, t->nbytes, &ferr);
            if (st) {
                o->st = el_err(o->err, st, "%s: filling tensor '%s' failed: %s", o->path, t->name,
                               ferr.msg[0] ? ferr.msg : el_status_str(st));
                break;
            }
            src = scratch;
        }
        emit(o, src, t->nbytes);
        emit_zeros(o, pad_to(t->nbytes, w->alignment));
    }
    free(scratch);
    flush(o);
}

el_status el_gguf_write(el_gguf_writer *w, const char *path, el_gguf_fill_fn fill, void *fill_ctx,
                        el_progress *progress, el_error *err) {
    if (!w || !path || !path[0]) return el_err(err, EL_ERR_ARG, "el_gguf_write: no writer or no path");
    size_t n_kv = w->n_kv + (w->alignment != EL_GGUF_DEFAULT_ALIGNMENT);
    if (n_kv > EL_GGUF_MAX_KV)
        return el_err(err, EL_ERR_RANGE, "%s: %zu key/values exceed the limit of %d", path, n_kv, EL_GGUF_MAX_KV);
    if (w->n_t > EL_GGUF_MAX_TENSORS)
        return el_err(err, EL_ERR_RANGE, "%s: %zu tensors exceed the limit of %d", path, w->n_t,
                      EL_GGUF_MAX_TENSORS);
    for (size_t i = 0; i < w->n_t; i++)
        if (!w->t[i].data && !fill)
            return el_err(err, EL_ERR_ARG, "%s: tensor '%s' has no data and no fill callback was given", path,
                          w->t[i].name);
    size_t data_offset, total;
    if (layout(w, &data_offset, &total)) return el_err(err, EL_ERR_RANGE, "%s: file size overflows", path);

    size_t plen = strlen(path);
    char *tmp = el_malloc(plen + 5);
    out *o = el_calloc(1, sizeof *o);
    if (!tmp || !o) {
        free(tmp);
        free(o);
        return el_err(err, EL_ERR_NOMEM, "%s: out of memory", path);
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    o->path = tmp;
    o->err = err;
    o->progress = progress;
    if (progress && !progress->total) progress->total = total;
    o->fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (o->fd < 0) {
        el_status st = el_err(err, EL_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        free(o);
        return st;
    }

    write_body(w, o, data_offset, fill, fill_ctx);
    if (!o->st && o->written != total)  // layout() and write_body() must agree
        o->st = el_err(err, EL_ERR_STATE, "%s: wrote %llu bytes, expected %zu", tmp,
                       (unsigned long long)o->written, total);
    if (!o->st && fsync(o->fd)) o->st = el_err(err, EL_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    if (close(o->fd) && !o->st) o->st = el_err(err, EL_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    if (!o->st && rename(tmp, path))
        o->st = el_err(err, EL_ERR_IO, "%s: cannot rename %s over it: %s", path, tmp, strerror(errno));
    el_status st = o->st;
    if (st) unlink(tmp);
    else el_sync_parent_dir(path);
    free(tmp);
    free(o);
    return st;
}
