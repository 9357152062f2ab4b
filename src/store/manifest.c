// Manifests and catalogs: the blocks of a GGUF file (its header and each
// tensor, hashed), and the canonical JSON that names them, whose hash is the
// model's id (docs/formats.md, "Manifests").
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/gguf.h"
#include "edgellm/json.h"
#include "edgellm/store.h"
#include "store_internal.h"

#define MANIFEST_FORMAT "edgellm-manifest-1"
#define MAX_TENSOR_NAME 255
#define MAX_HEADER_BYTES ((uint64_t)1 << 32)  // 4 GiB of metadata is far beyond any real file
#define MAX_BLOCK_BYTES ((uint64_t)1 << 48)

void el_model_blocks_free(el_model_blocks *m) {
    if (!m) return;
    for (int i = 0; m->blocks && i < m->n_blocks; i++) free(m->blocks[i].name);
    free(m->blocks);
    free(m->name);
    free(m->path);
    memset(m, 0, sizeof *m);
}

// ---------------------------------------------------------------- encode

typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q, b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}
static void puts_(sbuf *b, const char *s) { put(b, s, strlen(s)); }
static void putu(sbuf *b, uint64_t v) {
    char t[24];
    int n = snprintf(t, sizeof t, "%llu", (unsigned long long)v);
    put(b, t, (size_t)n);
}
static void puthash(sbuf *b, const el_hash *h) {
    char hex[2 * EL_HASH_BYTES + 1];
    el_hash_hex(h, hex);
    put(b, "\"", 1), put(b, hex, 2 * EL_HASH_BYTES), put(b, "\"", 1);
}
// A JSON string: '"' and '\\' escaped, control bytes as \u00XX, the rest as is
// (names are checked to be UTF-8 before they get here).
static void putstr(sbuf *b, const char *s) {
    put(b, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        char t[8];
        if (*c == '"' || *c == '\\') t[0] = '\\', t[1] = (char)*c, put(b, t, 2);
        else if (*c < 0x20) snprintf(t, sizeof t, "\\u%04x", *c), put(b, t, 6);
        else put(b, (const char *)c, 1);
    }
    put(b, "\"", 1);
}

static int name_ok(const char *s) {
    size_t n = strlen(s);
    return n >= 1 && n <= MAX_TENSOR_NAME && el_utf8_valid(s, n);
}

el_status el_manifest_encode(const el_model_blocks *m, char **out, size_t *len, el_error *err) {
    *out = NULL;
    *len = 0;
    sbuf b = {0};
    puts_(&b, "{\"format\":\"" MANIFEST_FORMAT "\",\"header\":{\"hash\":");
    puthash(&b, &m->header);
    puts_(&b, ",\"bytes\":");
    putu(&b, m->header_bytes);
    puts_(&b, "},\"tensors\":[");
    for (int i = 0; i < m->n_blocks; i++) {
        const el_block_info *t = &m->blocks[i];
        const char *dt = el_dtype_name(t->dtype);
        if (!name_ok(t->name) || !dt) {
            free(b.p);
            return el_err(err, EL_ERR_FORMAT, "tensor %d: its name is not 1..%d bytes of UTF-8, or its type %d unknown",
                          i, MAX_TENSOR_NAME, t->dtype);
        }
        puts_(&b, i ? ",{\"name\":" : "{\"name\":");
        putstr(&b, t->name);
        puts_(&b, ",\"dtype\":");
        putstr(&b, dt);
        puts_(&b, ",\"shape\":[");
        for (int d = 0; d < t->n_dims; d++) {
            if (d) puts_(&b, ",");
            putu(&b, (uint64_t)t->ne[d]);
        }
        puts_(&b, "],\"bytes\":");
        putu(&b, t->bytes);
        puts_(&b, ",\"hash\":");
        puthash(&b, &t->hash);
        puts_(&b, "}");
    }
    puts_(&b, "]}");
    if (b.oom) {
        free(b.p);
        return el_err(err, EL_ERR_NOMEM, "out of memory writing a manifest of %d tensors", m->n_blocks);
    }
    *out = b.p;
    *len = b.len;
    return EL_OK;
}

// ---------------------------------------------------------------- parse

static int get_hash(const el_json *j, el_hash *h) {
    return el_json_is(j, EL_JSON_STRING) && el_json_strlen(j) == 2 * EL_HASH_BYTES && el_hash_parse(el_json_str(j), h);
}

// An integer in [lo, hi] (JSON numbers are doubles: every integer below 2^53 is exact).
static int get_uint(const el_json *j, uint64_t lo, uint64_t hi, uint64_t *v) {
    if (!el_json_is(j, EL_JSON_NUMBER)) return 0;
    double d = el_json_num(j, -1);
    if (!(d >= (double)lo && d <= (double)hi) || d != floor(d)) return 0;
    *v = (uint64_t)d;
    return 1;
}

el_status el_manifest_parse(const void *text, size_t len, const char *name, el_model_blocks *out, el_error *err) {
    memset(out, 0, sizeof *out);
    if (!name) name = "manifest";
    if (len > EL_MANIFEST_MAX_BYTES)
        return el_err(err, EL_ERR_RANGE, "%s: %zu bytes, more than a manifest may hold (%zu)", name, len,
                      EL_MANIFEST_MAX_BYTES);
    el_json *root;
    el_status st = el_json_parse(text, len, name, &root, err);
    if (st) return st;
    const el_json *fmt = el_json_get(root, "format"), *hdr = el_json_get(root, "header"),
                  *ts = el_json_get(root, "tensors");
    const char *f = el_json_str(fmt);
    if (!f || strcmp(f, MANIFEST_FORMAT)) {
        st = el_err(err, EL_ERR_FORMAT, "%s: format is not \"%s\"", name, MANIFEST_FORMAT);
        goto done;
    }
    if (!get_hash(el_json_get(hdr, "hash"), &out->header) ||
        !get_uint(el_json_get(hdr, "bytes"), 1, MAX_HEADER_BYTES, &out->header_bytes)) {
        st = el_err(err, EL_ERR_FORMAT, "%s: header needs a 64-digit hex hash and 1..%llu bytes", name,
                    (unsigned long long)MAX_HEADER_BYTES);
        goto done;
    }
    size_t n = el_json_len(ts);
    if (!el_json_is(ts, EL_JSON_ARRAY) || n > EL_GGUF_MAX_TENSORS) {
        st = el_err(err, EL_ERR_FORMAT, "%s: tensors is not an array of at most %d entries", name, EL_GGUF_MAX_TENSORS);
        goto done;
    }
    out->blocks = calloc(n ? n : 1, sizeof *out->blocks);
    if (!out->blocks) {
        st = el_err(err, EL_ERR_NOMEM, "%s: out of memory for %zu tensors", name, n);
        goto done;
    }
    out->bytes = out->header_bytes;
    int i = 0;
    for (const el_json *t = el_json_first(ts); t; t = el_json_next(ts, t), i++) {
        el_block_info *b = &out->blocks[i];
        out->n_blocks = i + 1;  // so that free releases what is filled in
        const el_json *jn = el_json_get(t, "name"), *jd = el_json_get(t, "dtype"), *js = el_json_get(t, "shape");
        const char *tn = el_json_str(jn), *dn = el_json_str(jd);
        if (!tn || el_json_strlen(jn) != strlen(tn) || !name_ok(tn)) {
            st = el_err(err, EL_ERR_FORMAT, "%s: tensor %d: name is not 1..%d bytes of UTF-8", name, i, MAX_TENSOR_NAME);
            goto done;
        }
        if (!(b->name = strdup(tn))) {
            st = el_err(err, EL_ERR_NOMEM, "%s: out of memory", name);
            goto done;
        }
        b->dtype = dn && el_json_strlen(jd) < 16 ? el_dtype_from_name(dn) : -1;
        const el_dtype_traits *tr = b->dtype >= 0 ? el_dtype_info(b->dtype) : NULL;
        if (!tr) {
            st = el_err(err, EL_ERR_FORMAT, "%s: tensor %s: unknown dtype", name, b->name);
            goto done;
        }
        size_t nd = el_json_len(js);
        if (!el_json_is(js, EL_JSON_ARRAY) || nd < 1 || nd > EL_MAX_DIMS) {
            st = el_err(err, EL_ERR_FORMAT, "%s: tensor %s: shape is not an array of 1..%d sizes", name, b->name,
                        EL_MAX_DIMS);
            goto done;
        }
        b->n_dims = (int)nd;
        for (int d = 0; d < EL_MAX_DIMS; d++) b->ne[d] = 1;
        uint64_t nel = 1, rows = 1;
        int d = 0;
        for (const el_json *e = el_json_first(js); e; e = el_json_next(js, e), d++) {
            uint64_t v;
            if (!get_uint(e, 1, (uint64_t)EL_GGUF_MAX_DIM, &v) || v > MAX_BLOCK_BYTES / nel) {
                st = el_err(err, EL_ERR_FORMAT, "%s: tensor %s: shape[%d] is not a size in 1..%lld (or the total is too large)",
                            name, b->name, d, (long long)EL_GGUF_MAX_DIM);
                goto done;
            }
            b->ne[d] = (int64_t)v;
            nel *= v;
            if (d) rows *= v;
        }
        if (b->ne[0] % tr->block_size) {
            st = el_err(err, EL_ERR_FORMAT, "%s: tensor %s: shape[0] %lld is not a multiple of the %s block size", name,
                        b->name, (long long)b->ne[0], tr->name);
            goto done;
        }
        size_t row = el_dtype_row_size(b->dtype, b->ne[0]), want;
        if (el_mul_size(row, (size_t)rows, &want) ||
            !get_uint(el_json_get(t, "bytes"), 1, MAX_BLOCK_BYTES, &b->bytes) || b->bytes != (uint64_t)want) {
            st = el_err(err, EL_ERR_FORMAT, "%s: tensor %s: bytes is not the %s size of its shape", name, b->name,
                        tr->name);
            goto done;
        }
        if (!get_hash(el_json_get(t, "hash"), &b->hash)) {
            st = el_err(err, EL_ERR_FORMAT, "%s: tensor %s: hash is not 64 hex digits", name, b->name);
            goto done;
        }
        out->bytes += b->bytes;
    }
    // One text per content: anything but exactly what encode writes (spaces,
    // order, extra keys, upper-case hex, escapes spelled otherwise) is refused.
    char *again;
    size_t again_len;
    if ((st = el_manifest_encode(out, &again, &again_len, err))) goto done;
    if (again_len != len || memcmp(again, text, len))
        st = el_err(err, EL_ERR_FORMAT, "%s: not in canonical form (docs/formats.md, \"Manifests\")", name);
    free(again);
    if (!st) el_hash_bytes(text, len, &out->id);
done:
    el_json_free(root);
    if (st) el_model_blocks_free(out);
    return st;
}

// ---------------------------------------------------------------- scan

char *el_store_base_name(const char *path) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    size_t n = strlen(b);
    if (n > 5 && !strcmp(b + n - 5, ".gguf")) n -= 5;
    char *s = malloc(n + 1);
    if (s) memcpy(s, b, n), s[n] = 0;
    return s;
}

// Hashes in slices so that a progress line moves on big tensors. Regions
// are tasks of a pool (one hash is sequential, different regions are not);
// whichever thread finds the progress line free redraws it.
#define SLICE ((size_t)16 << 20)
typedef struct {
    const void *const *ptr;
    const size_t *n;
    el_hash *out;
    el_progress *pr;
    atomic_uint_fast64_t done;
    atomic_int busy;
} hash_job;

static void hash_task(void *ctx, int i, int n_tasks) {
    (void)n_tasks;
    hash_job *j = ctx;
    el_hasher st;
    el_hasher_init(&st);
    for (size_t at = 0; at < j->n[i];) {
        size_t k = j->n[i] - at < SLICE ? j->n[i] - at : SLICE;
        el_hasher_update(&st, (const uint8_t *)j->ptr[i] + at, k);
        at += k;
        uint64_t done = atomic_fetch_add(&j->done, k) + k;
        if (j->pr && !atomic_exchange(&j->busy, 1)) {
            el_progress_update(j->pr, done >> 20, NULL);
            atomic_store(&j->busy, 0);
        }
    }
    el_hasher_final(&st, &j->out[i]);
}

void el_store_hash_regions(const void *const *ptr, const size_t *n, int count, el_hash *out, el_progress *progress) {
    hash_job j = {.ptr = ptr, .n = n, .out = out, .pr = progress};
    atomic_init(&j.done, 0);
    atomic_init(&j.busy, 0);
    uint64_t total = 0;
    for (int i = 0; i < count; i++) total += n[i];
    // a pool only when there is enough to hash for threads to pay off
    el_pool *pool = count > 1 && total > ((uint64_t)8 << 20) ? el_pool_new(0) : NULL;
    el_store_sodium_init();
    el_pool_run(pool, hash_task, &j, count);
    el_pool_free(pool);
}

el_status el_store_blocks_of(const el_gguf *g, el_progress *progress, el_model_blocks *out, el_error *err) {
    memset(out, 0, sizeof *out);
    out->header_bytes = g->n_tensors ? g->data_offset : (g->data_offset < g->map_size ? g->data_offset : g->map_size);
    out->file_bytes = g->map_size;
    out->blocks = calloc(g->n_tensors ? (size_t)g->n_tensors : 1, sizeof *out->blocks);
    if (!out->blocks) return el_err(err, EL_ERR_NOMEM, "%s: out of memory", g->path);
    int n = (int)g->n_tensors + 1;
    const void **ptr = malloc((size_t)n * sizeof *ptr);
    size_t *len = malloc((size_t)n * sizeof *len);
    el_hash *h = malloc((size_t)n * sizeof *h);
    if (!ptr || !len || !h) {
        free(ptr), free(len), free(h);
        el_model_blocks_free(out);
        return el_err(err, EL_ERR_NOMEM, "%s: out of memory", g->path);
    }
    ptr[0] = g->map, len[0] = (size_t)out->header_bytes;
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        if (i) ptr[i] = g->tensors[i - 1].data, len[i] = g->tensors[i - 1].nbytes;
        total += len[i];
    }
    if (progress) el_progress_begin(progress, stderr, "hash", total >> 20, "MiB");
    el_store_hash_regions(ptr, len, n, h, progress);
    if (progress) el_progress_end(progress, total >> 20, NULL);
    out->header = h[0];
    out->bytes = out->header_bytes;
    el_status st = EL_OK;
    for (uint64_t i = 0; i < g->n_tensors && !st; i++) {
        const el_gguf_tensor *t = &g->tensors[i];
        el_block_info *b = &out->blocks[i];
        out->n_blocks = (int)i + 1;
        if (!name_ok(t->name))
            st = el_err(err, EL_ERR_UNSUPPORTED, "%s: tensor %llu: its name is not 1..%d bytes of UTF-8", g->path,
                        (unsigned long long)i, MAX_TENSOR_NAME);
        else if (!(b->name = strdup(t->name)))
            st = el_err(err, EL_ERR_NOMEM, "%s: out of memory", g->path);
        if (st) break;
        b->dtype = t->dtype;
        b->n_dims = t->n_dims;
        memcpy(b->ne, t->ne, sizeof b->ne);
        b->bytes = t->nbytes;
        b->hash = h[i + 1];
        out->bytes += b->bytes;
    }
    free(ptr), free(len), free(h);
    if (st) {
        el_model_blocks_free(out);
        return st;
    }
    char *text;
    size_t tlen;
    st = el_manifest_encode(out, &text, &tlen, err);
    if (st) {
        el_model_blocks_free(out);
        return st;
    }
    el_hash_bytes(text, tlen, &out->id);
    free(text);
    return EL_OK;
}

el_status el_model_blocks_scan(const char *path, el_progress *progress, el_model_blocks *out, el_error *err) {
    memset(out, 0, sizeof *out);
    el_gguf *g;
    el_status st = el_gguf_open(path, &g, err);
    if (st) return st;
    st = el_store_blocks_of(g, progress, out, err);
    el_gguf_close(g);
    if (st) return st;
    out->name = el_store_base_name(path);
    out->path = strdup(path);
    if (!out->name || !out->path) {
        el_model_blocks_free(out);
        return el_err(err, EL_ERR_NOMEM, "%s: out of memory", path);
    }
    return EL_OK;
}
