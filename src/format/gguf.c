// GGUF reader: maps a file (or takes a caller's buffer) and checks every count,
// length and offset against the bytes that remain before reading or allocating.
#include "edgellm/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf_internal.h"
#include "strmap.h"

// The smallest possible encodings, used to bound counts by the bytes left
// before anything is allocated for them.
#define MIN_KV_BYTES 14           // key len (8) + 1 key byte + type (4) + 1-byte value
#define MIN_TENSOR_INFO_BYTES 33  // name len (8) + 1 byte + n_dims (4) + ne[0] (8) + type (4) + offset (8)
#define MIN_ARRAY_BYTES 12        // element type (4) + count (8)

// What el_gguf_open returns: the public struct plus private lookup state.
typedef struct {
    el_gguf pub;  // first, so el_gguf * and gguf_file * convert both ways
    int owns_map;
    el_strmap kv_index;
    el_strmap tensor_index;
    // el_gguf_open_parts: each tensor's data is its own mapping, owned here
    void **parts;
    size_t *part_sizes;
    uint64_t n_parts;
} gguf_file;

// ---------------------------------------------------------------- cursor

typedef struct {
    const uint8_t *base;
    size_t size, pos;
    const char *name;  // file name for messages
    el_error *err;
    // Where parsing is, for messages: section, item index (UINT64_MAX: none)
    // and the key or tensor name once it has been read.
    const char *section;
    uint64_t item;
    const char *label;
    size_t label_len;
} rd;

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

// Copies s into buf for a message, quoting nothing, replacing control bytes
// and shortening long names so an error stays on one readable line.
static void printable(char *buf, size_t n, const char *s, size_t len) {
    size_t max = n - 1, o = 0;
    int cut = len > max;
    if (cut) max = max > 3 ? max - 3 : 0;
    for (size_t i = 0; i < len && o < max; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[o++] = (c < 0x20 || c == 0x7F) ? '?' : (char)c;
    }
    if (cut)
        for (int k = 0; k < 3 && o < n - 1; k++) buf[o++] = '.';
    buf[o] = 0;
}

static void where(const rd *r, char *buf, size_t n) {
    if (r->item == UINT64_MAX) {
        snprintf(buf, n, "%s", r->section);
    } else if (!r->label) {
        snprintf(buf, n, "%s %llu", r->section, (unsigned long long)r->item);
    } else {
        char q[96];
        printable(q, sizeof q, r->label, r->label_len);
        snprintf(buf, n, "%s %llu ('%s')", r->section, (unsigned long long)r->item, q);
    }
}

// "<file>: <message>"
static el_status fail(rd *r, el_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static el_status fail(rd *r, el_status code, const char *fmt, ...) {
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return el_err(r->err, code, "%s: %s", r->name, msg);
}

// "<file>: <where>: <message>"
static el_status bad(rd *r, el_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static el_status bad(rd *r, el_status code, const char *fmt, ...) {
    char msg[320], w[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    where(r, w, sizeof w);
    return el_err(r->err, code, "%s: %s: %s", r->name, w, msg);
}

static el_status truncated(rd *r, uint64_t need) {
    char w[160];
    where(r, w, sizeof w);
    return el_err(r->err, EL_ERR_FORMAT, "%s: truncated in %s (%llu bytes needed at offset %zu, %zu left)", r->name,
                  w, (unsigned long long)need, r->pos, r->size - r->pos);
}

static int have(const rd *r, uint64_t n) { return n <= r->size - r->pos; }

static el_status get_u32(rd *r, uint32_t *v) {
    if (!have(r, 4)) return truncated(r, 4);
    *v = le32(r->base + r->pos);
    r->pos += 4;
    return EL_OK;
}

static el_status get_u64(rd *r, uint64_t *v) {
    if (!have(r, 8)) return truncated(r, 8);
    *v = le64(r->base + r->pos);
    r->pos += 8;
    return EL_OK;
}

static el_status get_str(rd *r, el_gguf_str *s, uint64_t max, const char *what) {
    uint64_t len = 0;
    el_status st = get_u64(r, &len);
    if (st) return st;
    if (len > max)
        return bad(r, EL_ERR_RANGE, "%s length %llu exceeds the limit of %llu bytes", what, (unsigned long long)len,
                   (unsigned long long)max);
    if (!have(r, len)) return truncated(r, len);
    s->ptr = (const char *)r->base + r->pos;
    s->len = len;
    r->pos += (size_t)len;
    return EL_OK;
}

#define TRY(x)                    \
    do {                          \
        el_status st_ = (x);      \
        if (st_) return st_;      \
    } while (0)

// ---------------------------------------------------------------- values

size_t el_gguf_scalar_size(uint32_t type) {
    switch (type) {
    case EL_GGUF_UINT8: case EL_GGUF_INT8: case EL_GGUF_BOOL: return 1;
    case EL_GGUF_UINT16: case EL_GGUF_INT16: return 2;
    case EL_GGUF_UINT32: case EL_GGUF_INT32: case EL_GGUF_FLOAT32: return 4;
    case EL_GGUF_UINT64: case EL_GGUF_INT64: case EL_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

static int is_unsigned(uint32_t t) {
    return t == EL_GGUF_UINT8 || t == EL_GGUF_UINT16 || t == EL_GGUF_UINT32 || t == EL_GGUF_UINT64;
}
static int is_signed(uint32_t t) {
    return t == EL_GGUF_INT8 || t == EL_GGUF_INT16 || t == EL_GGUF_INT32 || t == EL_GGUF_INT64;
}
static int is_float(uint32_t t) { return t == EL_GGUF_FLOAT32 || t == EL_GGUF_FLOAT64; }

// Decodes one fixed-size value of type t at p (el_gguf_scalar_size(t) bytes)
// into the widened union. Bools are not validated here.
static void decode_scalar(const uint8_t *p, uint32_t t, el_gguf_kv *kv) {
    switch (t) {
    case EL_GGUF_UINT8: case EL_GGUF_BOOL: kv->v.u64 = p[0]; break;
    case EL_GGUF_INT8: kv->v.i64 = (int8_t)p[0]; break;
    case EL_GGUF_UINT16: kv->v.u64 = (uint16_t)(p[0] | p[1] << 8); break;
    case EL_GGUF_INT16: kv->v.i64 = (int16_t)(uint16_t)(p[0] | p[1] << 8); break;
    case EL_GGUF_UINT32: kv->v.u64 = le32(p); break;
    case EL_GGUF_INT32: kv->v.i64 = (int32_t)le32(p); break;
    case EL_GGUF_UINT64: kv->v.u64 = le64(p); break;
    case EL_GGUF_INT64: kv->v.i64 = (int64_t)le64(p); break;
    case EL_GGUF_FLOAT32: {
        uint32_t b = le32(p);
        float f;
        memcpy(&f, &b, 4);
        kv->v.f64 = f;
        break;
    }
    case EL_GGUF_FLOAT64: {
        uint64_t b = le64(p);
        memcpy(&kv->v.f64, &b, 8);
        break;
    }
    default: break;
    }
}

static el_status read_scalar(rd *r, uint32_t t, el_gguf_kv *kv) {
    size_t sz = el_gguf_scalar_size(t);
    if (!have(r, sz)) return truncated(r, sz);
    const uint8_t *p = r->base + r->pos;
    if (t == EL_GGUF_BOOL && p[0] > 1) return bad(r, EL_ERR_FORMAT, "bool value %u is not 0 or 1", p[0]);
    decode_scalar(p, t, kv);
    r->pos += sz;
    return EL_OK;
}

// Reads an array value (element type, count, elements). With kv == NULL the
// array is only validated and skipped (elements of an array of arrays).
static el_status read_array(rd *r, el_gguf_kv *kv, int depth) {
    uint32_t at;
    uint64_t n;
    TRY(get_u32(r, &at));
    if (at > EL_GGUF_FLOAT64) return bad(r, EL_ERR_FORMAT, "unknown array element type %u", at);
    TRY(get_u64(r, &n));
    size_t left = r->size - r->pos;
    if (kv) {
        kv->arr_type = (el_gguf_type)at;
        kv->arr_n = n;
        kv->arr_data = r->base + r->pos;
    }
    if (at == EL_GGUF_STRING) {
        if (n > left / 8)
            return bad(r, EL_ERR_FORMAT, "array of %llu strings needs at least 8 bytes each, only %zu bytes left",
                       (unsigned long long)n, left);
        el_gguf_str *strs = NULL;
        if (kv) {
            strs = el_calloc((size_t)n, sizeof *strs);
            if (!strs) return bad(r, EL_ERR_NOMEM, "out of memory for the index of %llu strings", (unsigned long long)n);
            kv->strs = strs;
        }
        for (uint64_t i = 0; i < n; i++) {
            el_gguf_str s;
            TRY(get_str(r, &s, EL_GGUF_MAX_STRING, "array string"));
            if (strs) strs[i] = s;
        }
    } else if (at == EL_GGUF_ARRAY) {
        if (depth + 1 >= EL_GGUF_MAX_NESTING)
            return bad(r, EL_ERR_RANGE, "arrays nested deeper than %d levels", EL_GGUF_MAX_NESTING);
        if (n > left / MIN_ARRAY_BYTES)
            return bad(r, EL_ERR_FORMAT, "array of %llu arrays needs at least %d bytes each, only %zu bytes left",
                       (unsigned long long)n, MIN_ARRAY_BYTES, left);
        for (uint64_t i = 0; i < n; i++) TRY(read_array(r, NULL, depth + 1));
    } else {
        size_t sz = el_gguf_scalar_size(at);
        if (n > left / sz)
            return bad(r, EL_ERR_FORMAT, "array of %llu %s values runs past the end of the file (%zu bytes left)",
                       (unsigned long long)n, el_gguf_type_name((el_gguf_type)at), left);
        if (at == EL_GGUF_BOOL) {
            const uint8_t *p = r->base + r->pos;
            for (uint64_t i = 0; i < n; i++)
                if (p[i] > 1)
                    return bad(r, EL_ERR_FORMAT, "bool array element %llu is %u, not 0 or 1", (unsigned long long)i,
                               p[i]);
        }
        r->pos += (size_t)n * sz;
    }
    return EL_OK;
}

// Reads a key or tensor name: non-empty, no NUL byte, not seen before in
// index; stores a NUL-terminated copy in *out and records it as entry i.
// Errors read "empty key", "duplicate tensor name (first seen as tensor info 3)".
static el_status read_unique_name(rd *r, el_strmap *index, uint64_t i, uint64_t max_len, const char *what,
                                  const char *entry, char **out) {
    el_gguf_str name;
    r->label = NULL;
    TRY(get_str(r, &name, max_len, what));
    if (name.len == 0) return bad(r, EL_ERR_FORMAT, "empty %s", what);
    r->label = name.ptr;
    r->label_len = (size_t)name.len;
    if (memchr(name.ptr, 0, (size_t)name.len)) return bad(r, EL_ERR_FORMAT, "%s contains a NUL byte", what);
    size_t prev = el_strmap_get(index, name.ptr, (size_t)name.len);
    if (prev != EL_STRMAP_NONE) return bad(r, EL_ERR_FORMAT, "duplicate %s (first seen as %s %zu)", what, entry, prev);
    *out = el_malloc((size_t)name.len + 1);
    if (!*out) return bad(r, EL_ERR_NOMEM, "out of memory");
    memcpy(*out, name.ptr, (size_t)name.len);
    (*out)[name.len] = 0;
    if (el_strmap_put(index, *out, (size_t)name.len, (size_t)i)) return bad(r, EL_ERR_NOMEM, "out of memory");
    return EL_OK;
}

static el_status read_kv(rd *r, gguf_file *f, uint64_t i) {
    el_gguf_kv *kv = &f->pub.kv[i];
    r->item = i;
    TRY(read_unique_name(r, &f->kv_index, i, EL_GGUF_MAX_STRING, "key", "key/value", &kv->key));

    uint32_t type;
    TRY(get_u32(r, &type));
    if (type > EL_GGUF_FLOAT64) return bad(r, EL_ERR_FORMAT, "unknown value type %u", type);
    kv->type = (el_gguf_type)type;
    if (type == EL_GGUF_STRING) return get_str(r, &kv->v.str, EL_GGUF_MAX_STRING, "string value");
    if (type == EL_GGUF_ARRAY) return read_array(r, kv, 0);
    return read_scalar(r, type, kv);
}

static el_status read_alignment(rd *r, gguf_file *f) {
    f->pub.alignment = EL_GGUF_DEFAULT_ALIGNMENT;
    const el_gguf_kv *kv = el_gguf_find(&f->pub, EL_GGUF_ALIGNMENT_KEY);
    if (!kv) return EL_OK;
    if (kv->type != EL_GGUF_UINT32)
        return fail(r, EL_ERR_FORMAT, "%s has type %s, expected uint32", EL_GGUF_ALIGNMENT_KEY,
                    el_gguf_type_name(kv->type));
    uint64_t a = kv->v.u64;
    if (a == 0 || (a & (a - 1)))
        return fail(r, EL_ERR_FORMAT, "%s is %llu, not a non-zero power of two", EL_GGUF_ALIGNMENT_KEY,
                    (unsigned long long)a);
    f->pub.alignment = (size_t)a;
    return EL_OK;
}

static el_status read_tensor_info(rd *r, gguf_file *f, uint64_t i) {
    el_gguf_tensor *t = &f->pub.tensors[i];
    r->item = i;
    TRY(read_unique_name(r, &f->tensor_index, i, EL_GGUF_MAX_NAME, "tensor name", "tensor info", &t->name));

    uint32_t n_dims;
    TRY(get_u32(r, &n_dims));
    if (n_dims < 1 || n_dims > EL_MAX_DIMS)
        return bad(r, EL_ERR_FORMAT, "n_dims %u is outside 1..%d", n_dims, EL_MAX_DIMS);
    t->n_dims = (int)n_dims;
    int64_t nel = 1;
    for (int d = 0; d < EL_MAX_DIMS; d++) t->ne[d] = 1;
    for (int d = 0; d < (int)n_dims; d++) {
        uint64_t ne;
        TRY(get_u64(r, &ne));
        if (ne == 0 || ne > (uint64_t)EL_GGUF_MAX_DIM)
            return bad(r, EL_ERR_RANGE, "ne[%d] = %llu is outside 1..%lld", d, (unsigned long long)ne,
                       (long long)EL_GGUF_MAX_DIM);
        if ((int64_t)ne > INT64_MAX / nel)
            return bad(r, EL_ERR_RANGE, "element count overflows at ne[%d] = %llu", d, (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
        nel *= (int64_t)ne;
    }

    uint32_t dtype;
    TRY(get_u32(r, &dtype));
    const el_dtype_traits *info = dtype <= INT_MAX ? el_dtype_info((int)dtype) : NULL;
    if (!info) {
        char sup[128];
        el_dtype_supported_list(sup, sizeof sup);
        const char *gn = dtype <= INT_MAX ? el_dtype_gguf_name((int)dtype) : NULL;
        if (gn) return bad(r, EL_ERR_UNSUPPORTED, "tensor type %s (%u) is not supported (supported: %s)", gn, dtype, sup);
        return bad(r, EL_ERR_FORMAT, "unknown tensor type %u (supported: %s)", dtype, sup);
    }
    t->dtype = (int)dtype;
    if (t->ne[0] % info->block_size)
        return bad(r, EL_ERR_FORMAT, "ne[0] = %lld is not a multiple of the %s block size %d", (long long)t->ne[0],
                   info->name, info->block_size);
    size_t row = el_dtype_row_size(t->dtype, t->ne[0]);
    if (el_mul_size(row, (size_t)(nel / t->ne[0]), &t->nbytes))
        return bad(r, EL_ERR_RANGE, "%lld %s elements do not fit in memory", (long long)nel, info->name);

    TRY(get_u64(r, &t->offset));
    if (t->offset % f->pub.alignment)
        return bad(r, EL_ERR_FORMAT, "data offset %llu is not a multiple of the alignment %zu",
                   (unsigned long long)t->offset, f->pub.alignment);
    return EL_OK;
}

// A header without its data section (el_gguf_open_parts): it must end where
// the data section would start, and part i must hold exactly tensor i.
static el_status attach_parts(rd *r, gguf_file *f) {
    el_gguf *g = &f->pub;
    if (g->data_offset != r->size && !(g->n_tensors == 0 && g->data_offset > r->size))
        return fail(r, EL_ERR_FORMAT, "header block of %zu bytes does not end where the data section starts (%zu)",
                    r->size, g->data_offset);
    if (f->n_parts != g->n_tensors)
        return fail(r, EL_ERR_FORMAT, "header lists %llu tensors but %llu blocks were given",
                    (unsigned long long)g->n_tensors, (unsigned long long)f->n_parts);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        el_gguf_tensor *t = &g->tensors[i];
        if (t->nbytes != f->part_sizes[i]) {
            char q[96];
            printable(q, sizeof q, t->name, strlen(t->name));
            return fail(r, EL_ERR_FORMAT, "tensor '%s' has %zu bytes but its block has %zu", q, t->nbytes,
                        f->part_sizes[i]);
        }
        t->data = f->parts[i];
    }
    return EL_OK;
}

static el_status parse(rd *r, gguf_file *f) {
    el_gguf *g = &f->pub;
    r->section = "header";
    r->item = UINT64_MAX;

    uint32_t magic, version;
    TRY(get_u32(r, &magic));
    if (magic != EL_GGUF_MAGIC)
        return fail(r, EL_ERR_FORMAT, "not a GGUF file (magic 0x%08x expected, got 0x%08x)", EL_GGUF_MAGIC, magic);
    TRY(get_u32(r, &version));
    if (version == 0x02000000u || version == 0x03000000u)
        return fail(r, EL_ERR_UNSUPPORTED, "big-endian GGUF files are not supported (version field 0x%08x)", version);
    if (version == 1)
        return fail(r, EL_ERR_UNSUPPORTED, "GGUF version 1 is not supported (it used 32-bit counts; need 2 or 3)");
    if (version != 2 && version != 3)
        return fail(r, EL_ERR_UNSUPPORTED, "GGUF version %u is not supported (need 2 or 3)", version);
    g->version = version;

    uint64_t n_tensors, n_kv;
    TRY(get_u64(r, &n_tensors));
    TRY(get_u64(r, &n_kv));
    if (n_kv > EL_GGUF_MAX_KV)
        return fail(r, EL_ERR_RANGE, "key/value count %llu exceeds the limit of %d", (unsigned long long)n_kv,
                    EL_GGUF_MAX_KV);
    if (n_tensors > EL_GGUF_MAX_TENSORS)
        return fail(r, EL_ERR_RANGE, "tensor count %llu exceeds the limit of %d", (unsigned long long)n_tensors,
                    EL_GGUF_MAX_TENSORS);
    uint64_t min_bytes = n_kv * MIN_KV_BYTES + n_tensors * MIN_TENSOR_INFO_BYTES;  // cannot overflow: both capped
    if (min_bytes > r->size - r->pos)
        return fail(r, EL_ERR_FORMAT,
                    "header claims %llu key/values and %llu tensors, which need at least %llu bytes; only %zu follow",
                    (unsigned long long)n_kv, (unsigned long long)n_tensors, (unsigned long long)min_bytes,
                    r->size - r->pos);

    g->kv = el_calloc((size_t)n_kv, sizeof *g->kv);
    g->tensors = el_calloc((size_t)n_tensors, sizeof *g->tensors);
    if (!g->kv || !g->tensors) return fail(r, EL_ERR_NOMEM, "out of memory for %llu key/values and %llu tensors",
                                           (unsigned long long)n_kv, (unsigned long long)n_tensors);
    g->n_kv = n_kv;  // set now so that close frees whatever was filled in
    g->n_tensors = n_tensors;

    r->section = "key/value";
    for (uint64_t i = 0; i < n_kv; i++) TRY(read_kv(r, f, i));
    r->section = "header";
    r->item = UINT64_MAX;
    TRY(read_alignment(r, f));

    r->section = "tensor info";
    for (uint64_t i = 0; i < n_tensors; i++) TRY(read_tensor_info(r, f, i));

    // The data section starts at the next multiple of the alignment. Files
    // without tensors may end before that point (the reference files do).
    size_t a = g->alignment;
    if (el_add_size(r->pos, a - 1, &g->data_offset)) return fail(r, EL_ERR_RANGE, "data offset overflows");
    g->data_offset &= ~(a - 1);
    if (f->parts) return attach_parts(r, f);
    for (uint64_t i = 0; i < n_tensors; i++) {
        el_gguf_tensor *t = &g->tensors[i];
        size_t start, end;
        if (t->offset > SIZE_MAX || el_add_size(g->data_offset, (size_t)t->offset, &start) ||
            el_add_size(start, t->nbytes, &end) || end > r->size) {
            char q[96];
            printable(q, sizeof q, t->name, strlen(t->name));
            return fail(r, EL_ERR_FORMAT,
                        "tensor '%s' data [offset %llu, %zu bytes] runs past the end of the file (%zu bytes, data "
                        "section starts at %zu)",
                        q, (unsigned long long)t->offset, t->nbytes, r->size, g->data_offset);
        }
        t->data = (void *)(uintptr_t)(r->base + start);
    }
    return EL_OK;
}

// ---------------------------------------------------------------- open/close

static void unmap_parts(void **parts, const size_t *sizes, uint64_t n) {
    for (uint64_t i = 0; parts && i < n; i++)
        if (parts[i]) munmap(parts[i], sizes[i]);
}

static el_status open_buffer(const void *data, size_t size, const char *name, int owns_map, void *const *parts,
                             const size_t *part_sizes, uint64_t n_parts, el_gguf **out, el_error *err) {
    gguf_file *f = el_calloc(1, sizeof *f);
    char *path = f ? el_malloc(strlen(name) + 1) : NULL;
    if (f && path && parts) {
        f->parts = el_calloc(n_parts ? (size_t)n_parts : 1, sizeof *f->parts);
        f->part_sizes = el_calloc(n_parts ? (size_t)n_parts : 1, sizeof *f->part_sizes);
        if (f->parts && f->part_sizes) {
            memcpy(f->parts, parts, (size_t)n_parts * sizeof *parts);
            memcpy(f->part_sizes, part_sizes, (size_t)n_parts * sizeof *part_sizes);
            f->n_parts = n_parts;
        } else {
            free(f->parts), free(f->part_sizes);
            free(path);
            path = NULL;
        }
    }
    if (!path) {
        free(f);
        if (owns_map && data) munmap((void *)(uintptr_t)data, size);
        if (parts) unmap_parts((void **)(uintptr_t)parts, part_sizes, n_parts);
        return el_err(err, EL_ERR_NOMEM, "%s: out of memory", name);
    }
    strcpy(path, name);
    f->pub.path = path;
    // The mapping is read-only; the public struct has non-const pointers only
    // so that callers can hand tensor data to code that takes void *.
    f->pub.map = (void *)(uintptr_t)data;
    f->pub.map_size = size;
    f->pub.alignment = EL_GGUF_DEFAULT_ALIGNMENT;
    f->owns_map = owns_map;
    el_strmap_init(&f->kv_index);
    el_strmap_init(&f->tensor_index);

    rd r = {.base = data, .size = size, .name = path, .err = err, .section = "header", .item = UINT64_MAX};
    el_status st = parse(&r, f);
    if (st) {
        el_gguf_close(&f->pub);
        return st;
    }
    *out = &f->pub;
    return EL_OK;
}

el_status el_gguf_open_memory(const void *data, size_t size, const char *name, el_gguf **out, el_error *err) {
    if (out) *out = NULL;
    if (!name) name = "<memory>";
    if (!out || (!data && size)) return el_err(err, EL_ERR_ARG, "%s: no buffer or no output pointer", name);
    return open_buffer(data, size, name, 0, NULL, NULL, 0, out, err);
}

el_status el_gguf_open(const char *path, el_gguf **out, el_error *err) {
    if (out) *out = NULL;
    if (!path || !out) return el_err(err, EL_ERR_ARG, "el_gguf_open: no path or no output pointer");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return el_err(err, EL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb)) {
        int e = errno;
        close(fd);
        return el_err(err, EL_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return el_err(err, EL_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return el_err(err, EL_ERR_RANGE, "%s: %lld bytes do not fit in the address space", path,
                      (long long)sb.st_size);
    }
    size_t size = (size_t)sb.st_size;
    void *map = NULL;
    if (size) {  // mmap refuses length 0; an empty file fails in the parser as truncated
        map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int e = errno;
            close(fd);
            return el_err(err, EL_ERR_IO, "%s: cannot map %zu bytes: %s", path, size, strerror(e));
        }
    }
    close(fd);
    return open_buffer(map, size, path, 1, NULL, NULL, 0, out, err);  // owns map from here, also on failure
}

el_status el_gguf_open_parts(void *header, size_t header_size, void *const *parts, const size_t *part_sizes,
                             uint64_t n_parts, const char *name, el_gguf **out, el_error *err) {
    if (out) *out = NULL;
    if (!name) name = "<parts>";
    if (!out || !header || !header_size || (n_parts && (!parts || !part_sizes)) || n_parts > EL_GGUF_MAX_TENSORS) {
        if (header && header_size) munmap(header, header_size);
        if (parts && part_sizes) unmap_parts((void **)(uintptr_t)parts, part_sizes, n_parts);
        return el_err(err, EL_ERR_ARG, "%s: no header, parts or output pointer", name);
    }
    static void *const none[1] = {NULL};
    static const size_t none_size[1] = {0};
    return open_buffer(header, header_size, name, 1, n_parts ? parts : none, n_parts ? part_sizes : none_size, n_parts,
                       out, err);
}

void el_gguf_close(el_gguf *g) {
    if (!g) return;
    gguf_file *f = (gguf_file *)g;
    for (uint64_t i = 0; g->kv && i < g->n_kv; i++) {
        free(g->kv[i].key);
        free(g->kv[i].strs);
    }
    free(g->kv);
    for (uint64_t i = 0; g->tensors && i < g->n_tensors; i++) free(g->tensors[i].name);
    free(g->tensors);
    el_strmap_free(&f->kv_index);
    el_strmap_free(&f->tensor_index);
    if (f->owns_map && g->map) munmap(g->map, g->map_size);
    unmap_parts(f->parts, f->part_sizes, f->n_parts);
    free(f->parts);
    free(f->part_sizes);
    free(g->path);
    free(f);
}

// ---------------------------------------------------------------- lookups

const el_gguf_kv *el_gguf_find(const el_gguf *g, const char *key) {
    if (!g || !key) return NULL;
    const gguf_file *f = (const gguf_file *)g;
    size_t i = el_strmap_get(&f->kv_index, key, strlen(key));
    return i == EL_STRMAP_NONE ? NULL : &g->kv[i];
}

const el_gguf_tensor *el_gguf_find_tensor(const el_gguf *g, const char *name) {
    if (!g || !name) return NULL;
    const gguf_file *f = (const gguf_file *)g;
    size_t i = el_strmap_get(&f->tensor_index, name, strlen(name));
    return i == EL_STRMAP_NONE ? NULL : &g->tensors[i];
}

// Integer value of a scalar kv as unsigned/signed, if it is an integer type and fits.
static int kv_u64(const el_gguf_kv *kv, uint32_t type, uint64_t *out) {
    if (is_unsigned(type)) { *out = kv->v.u64; return 1; }
    if (is_signed(type) && kv->v.i64 >= 0) { *out = (uint64_t)kv->v.i64; return 1; }
    return 0;
}

static int kv_i64(const el_gguf_kv *kv, uint32_t type, int64_t *out) {
    if (is_signed(type)) { *out = kv->v.i64; return 1; }
    if (is_unsigned(type) && kv->v.u64 <= INT64_MAX) { *out = (int64_t)kv->v.u64; return 1; }
    return 0;
}

int el_gguf_get_u64(const el_gguf *g, const char *key, uint64_t *out) {
    const el_gguf_kv *kv = el_gguf_find(g, key);
    uint64_t v;
    if (!kv || !kv_u64(kv, kv->type, &v)) return 0;
    *out = v;
    return 1;
}

int el_gguf_get_i64(const el_gguf *g, const char *key, int64_t *out) {
    const el_gguf_kv *kv = el_gguf_find(g, key);
    int64_t v;
    if (!kv || !kv_i64(kv, kv->type, &v)) return 0;
    *out = v;
    return 1;
}

int el_gguf_get_f64(const el_gguf *g, const char *key, double *out) {
    const el_gguf_kv *kv = el_gguf_find(g, key);
    if (!kv || !is_float(kv->type)) return 0;
    *out = kv->v.f64;
    return 1;
}

int el_gguf_get_bool(const el_gguf *g, const char *key, int *out) {
    const el_gguf_kv *kv = el_gguf_find(g, key);
    if (!kv || kv->type != EL_GGUF_BOOL) return 0;
    *out = kv->v.u64 != 0;
    return 1;
}

// With bufsize 0 (or buf NULL) this only reports whether the string exists.
int el_gguf_get_str(const el_gguf *g, const char *key, char *buf, size_t bufsize) {
    const el_gguf_kv *kv = el_gguf_find(g, key);
    if (!kv || kv->type != EL_GGUF_STRING) return 0;
    if (buf && bufsize) {
        size_t n = kv->v.str.len < bufsize - 1 ? (size_t)kv->v.str.len : bufsize - 1;
        if (n) memcpy(buf, kv->v.str.ptr, n);
        buf[n] = 0;
    }
    return 1;
}

// Element i of a numeric (or bool) array decoded into tmp; 0 if there is none.
static int arr_elem(const el_gguf_kv *kv, uint64_t i, el_gguf_kv *tmp) {
    if (!kv || kv->type != EL_GGUF_ARRAY || i >= kv->arr_n || !kv->arr_data) return 0;
    size_t sz = el_gguf_scalar_size(kv->arr_type);
    if (!sz) return 0;
    decode_scalar((const uint8_t *)kv->arr_data + (size_t)i * sz, kv->arr_type, tmp);
    return 1;
}

int el_gguf_arr_f64(const el_gguf_kv *kv, uint64_t i, double *out) {
    el_gguf_kv e;
    if (!arr_elem(kv, i, &e)) return 0;
    uint32_t t = kv->arr_type;
    if (is_float(t)) *out = e.v.f64;
    else if (is_signed(t)) *out = (double)e.v.i64;
    else *out = (double)e.v.u64;  // unsigned and bool
    return 1;
}

int el_gguf_arr_i64(const el_gguf_kv *kv, uint64_t i, int64_t *out) {
    el_gguf_kv e;
    if (!arr_elem(kv, i, &e)) return 0;
    uint32_t t = kv->arr_type == EL_GGUF_BOOL ? EL_GGUF_UINT8 : kv->arr_type;
    return kv_i64(&e, t, out);
}

void el_gguf_tensor_view(const el_gguf_tensor *t, el_tensor *out) {
    memset(out, 0, sizeof *out);
    out->name = t->name;
    out->dtype = t->dtype;
    out->n_dims = t->n_dims;
    for (int d = 0; d < EL_MAX_DIMS; d++) out->ne[d] = d < t->n_dims ? t->ne[d] : 1;
    out->data = t->data;
    out->nbytes = t->nbytes;
}

const char *el_gguf_type_name(el_gguf_type t) {
    switch (t) {
    case EL_GGUF_UINT8: return "uint8";
    case EL_GGUF_INT8: return "int8";
    case EL_GGUF_UINT16: return "uint16";
    case EL_GGUF_INT16: return "int16";
    case EL_GGUF_UINT32: return "uint32";
    case EL_GGUF_INT32: return "int32";
    case EL_GGUF_FLOAT32: return "float32";
    case EL_GGUF_BOOL: return "bool";
    case EL_GGUF_STRING: return "string";
    case EL_GGUF_ARRAY: return "array";
    case EL_GGUF_UINT64: return "uint64";
    case EL_GGUF_INT64: return "int64";
    case EL_GGUF_FLOAT64: return "float64";
    }
    return "unknown";
}

size_t el_gguf_array_span(const el_gguf *g, const el_gguf_kv *kv, const uint8_t **start) {
    if (!g || !kv || kv->type != EL_GGUF_ARRAY || !kv->arr_data) return 0;
    const uint8_t *base = g->map, *elems = kv->arr_data;
    if (elems < base + MIN_ARRAY_BYTES || elems > base + g->map_size) return 0;
    // Re-walk the already validated array from its header to find where it ends.
    rd r = {.base = base, .size = g->map_size, .pos = (size_t)(elems - base) - MIN_ARRAY_BYTES,
            .name = g->path, .section = "key/value", .item = UINT64_MAX};
    size_t from = r.pos;
    if (read_array(&r, NULL, 0)) return 0;
    *start = base + from;
    return r.pos - from;
}
