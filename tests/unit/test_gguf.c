// Unit tests for src/format/gguf*.c: write/read round trips, real files from
// another tool, and hand-built hostile files that must fail with a clear message.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edgellm/gguf.h"
#include "testutil.h"

// ---------------------------------------------------------------- byte builder

typedef struct {
    uint8_t b[16384];
    size_t n;
} bb;

static void raw(bb *b, const void *p, size_t n) {
    assert_true(b->n + n <= sizeof b->b);
    memcpy(b->b + b->n, p, n);
    b->n += n;
}
static void u8(bb *b, uint8_t v) { raw(b, &v, 1); }
static void u32(bb *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    raw(b, x, 4);
}
static void u64(bb *b, uint64_t v) {
    u32(b, (uint32_t)v);
    u32(b, (uint32_t)(v >> 32));
}
static void str(bb *b, const char *s) {
    u64(b, strlen(s));
    raw(b, s, strlen(s));
}
static void header(bb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    b->n = 0;
    raw(b, "GGUF", 4);
    u32(b, version);
    u64(b, n_tensors);
    u64(b, n_kv);
}
static void pad(bb *b, size_t a) {
    while (b->n % a) u8(b, 0);
}
// A tensor info; pass n_dims ne values.
static void tinfo(bb *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t dtype, uint64_t offset) {
    str(b, name);
    u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) u64(b, ne[d]);
    u32(b, dtype);
    u64(b, offset);
}

// Parses a malloc'd copy of exactly n bytes, so that ASan sees any over-read.
static el_status parse(const void *data, size_t n, el_gguf **g, el_error *e) {
    void *copy = malloc(n ? n : 1);
    memcpy(copy, data, n);
    el_status st = el_gguf_open_memory(copy, n, "bad.gguf", g, e);
    if (st) free(copy);  // on success the copy lives until close_parsed
    return st;
}

static void close_parsed(el_gguf *g) {
    if (!g) return;
    void *copy = g->map;
    el_gguf_close(g);
    free(copy);
}

static void expect_fail(const bb *b, el_status code, const char *substr) {
    el_gguf *g = (el_gguf *)b;  // must be reset to NULL
    el_error e = {0};
    el_status st = parse(b->b, b->n, &g, &e);
    if (st != code || !strstr(e.msg, substr))
        print_message("expected %d '%s', got %d '%s'\n", code, substr, st, e.msg);
    assert_int_equal(st, code);
    assert_int_equal(e.code, code);
    assert_null(g);
    assert_non_null(strstr(e.msg, substr));
    assert_memory_equal(e.msg, "bad.gguf: ", 10);
    assert_null(strchr(e.msg, '\n'));
}

static el_gguf *expect_ok(const bb *b) {
    el_gguf *g = NULL;
    el_error e = {0};
    el_status st = parse(b->b, b->n, &g, &e);
    if (st) print_message("unexpected error: %s\n", e.msg);
    assert_int_equal(st, EL_OK);
    assert_non_null(g);
    return g;
}

// ---------------------------------------------------------------- round trip through the writer

typedef struct {
    int calls;
} fill_state;

// Fills tensor "filled" with bytes i * 7 + 1.
static el_status fill_pattern(void *ctx, const char *name, void *dst, size_t nbytes, el_error *err) {
    fill_state *fs = ctx;
    fs->calls++;
    if (strcmp(name, "filled")) return el_err(err, EL_ERR_ARG, "unexpected tensor %s", name);
    for (size_t i = 0; i < nbytes; i++) ((uint8_t *)dst)[i] = (uint8_t)(i * 7 + 1);
    return EL_OK;
}

static el_status fill_fails(void *ctx, const char *name, void *dst, size_t nbytes, el_error *err) {
    (void)ctx; (void)dst; (void)nbytes;
    return el_err(err, EL_ERR_IO, "source for %s vanished", name);
}

static const char *const strs_in[] = {"hello", "", "na\xc3\xafve \xf0\x9f\xa6\x99", "<0x0A>"};

static void check_roundtrip(size_t alignment) {
    el_gguf_writer *w = el_gguf_writer_new();
    assert_non_null(w);
    if (alignment != 32) assert_int_equal(el_gguf_writer_set_alignment(w, alignment, NULL), EL_OK);

    assert_int_equal(el_gguf_add_str(w, "general.architecture", "llama"), EL_OK);
    assert_int_equal(el_gguf_add_u32(w, "u32", 4000000000u), EL_OK);
    assert_int_equal(el_gguf_add_i32(w, "i32", -2000000000), EL_OK);
    assert_int_equal(el_gguf_add_u64(w, "u64", 0xFEDCBA9876543210ull), EL_OK);
    assert_int_equal(el_gguf_add_f32(w, "f32", -1.25f), EL_OK);
    assert_int_equal(el_gguf_add_bool(w, "yes", 7), EL_OK);
    assert_int_equal(el_gguf_add_bool(w, "no", 0), EL_OK);
    assert_int_equal(el_gguf_add_str(w, "utf8", "F\xc3\xbchrer \xf0\x9f\xa6\x99"), EL_OK);
    assert_int_equal(el_gguf_add_str(w, "empty", ""), EL_OK);
    // Re-adding replaces, also with another type; the key keeps its place.
    assert_int_equal(el_gguf_add_u32(w, "replaced", 1), EL_OK);
    assert_int_equal(el_gguf_add_str(w, "replaced", "second"), EL_OK);

    const uint8_t a_u8[] = {0, 1, 255};
    const int8_t a_i8[] = {-128, 0, 127};
    const uint16_t a_u16[] = {65535, 2};
    const int16_t a_i16[] = {-32768, 32767};
    const uint32_t a_u32[] = {7, 4294967295u};
    const int32_t a_i32[] = {-5, 2147483647, -2147483647 - 1};
    const uint64_t a_u64[] = {0xFFFFFFFFFFFFFFFFull, 3};
    const int64_t a_i64[] = {-9000000000000000000ll, 42};
    const float a_f32[] = {0.5f, -1e30f, 3.0f};
    const double a_f64[] = {-0.1, 1e300};
    const uint8_t a_bool[] = {1, 0, 1, 1};
    assert_int_equal(el_gguf_add_arr(w, "a.u8", EL_GGUF_UINT8, a_u8, 3), EL_OK);
    assert_int_equal(el_gguf_add_arr(w, "a.i8", EL_GGUF_INT8, a_i8, 3), EL_OK);
    assert_int_equal(el_gguf_add_arr(w, "a.u16", EL_GGUF_UINT16, a_u16, 2), EL_OK);
    assert_int_equal(el_gguf_add_arr(w, "a.i16", EL_GGUF_INT16, a_i16, 2), EL_OK);
    assert_int_equal(el_gguf_add_arr(w, "a.u32", EL_GGUF_UINT32, a_u32, 2), EL_OK);
    assert_int_equal(el_gguf_add_arr(w, "a.i32", EL_GGUF_INT32, a_i32, 3), EL_OK);
    assert_int_equal(el_gguf_add_arr(w, "a.u64", EL_GGUF_UINT64, a_u64, 2), EL_OK);
    assert_int_equal(el_gguf_add_arr(w, "a.i64", EL_GGUF_INT64, a_i64, 2), EL_OK);
    assert_int_equal(el_gguf_add_arr(w, "a.f32", EL_GGUF_FLOAT32, a_f32, 3), EL_OK);
    assert_int_equal(el_gguf_add_arr(w, "a.f64", EL_GGUF_FLOAT64, a_f64, 2), EL_OK);
    assert_int_equal(el_gguf_add_arr(w, "a.bool", EL_GGUF_BOOL, a_bool, 4), EL_OK);
    assert_int_equal(el_gguf_add_arr(w, "a.none", EL_GGUF_FLOAT32, NULL, 0), EL_OK);
    assert_int_equal(el_gguf_add_arr_str(w, "a.str", strs_in, NULL, 4), EL_OK);
    const char *with_nul[] = {"a\0b", NULL};
    const uint64_t with_nul_len[] = {3, 0};
    assert_int_equal(el_gguf_add_arr_str(w, "a.strlen", with_nul, with_nul_len, 2), EL_OK);

    // f32 [3, 2], f16 [5] (odd size: padding follows), q8_0 [64, 2] (4 blocks),
    // f32 [2, 1, 3, 1] and a 4-byte i32 tensor whose bytes come from the fill callback.
    const float t_f32[6] = {1, 2, 3, -4, 0.25f, 1e-3f};
    uint16_t t_f16[5];
    for (int i = 0; i < 5; i++) t_f16[i] = el_f32_to_f16((float)i - 2.5f);
    uint8_t t_q8[4 * 34];
    uint64_t seed = 12345;
    for (size_t i = 0; i < sizeof t_q8; i++) t_q8[i] = (uint8_t)tu_rand(&seed);
    const float t_4d[6] = {9, 8, 7, 6, 5, 4};
    const int64_t ne_f32[] = {3, 2}, ne_f16[] = {5}, ne_q8[] = {64, 2}, ne_4d[] = {2, 1, 3, 1}, ne_fill[] = {1};
    assert_int_equal(el_gguf_add_tensor(w, "w.f32", EL_DTYPE_F32, 2, ne_f32, t_f32), EL_OK);
    assert_int_equal(el_gguf_add_tensor(w, "w.f16", EL_DTYPE_F16, 1, ne_f16, t_f16), EL_OK);
    assert_int_equal(el_gguf_add_tensor(w, "blk.0.attn_q.weight", EL_DTYPE_Q8_0, 2, ne_q8, t_q8), EL_OK);
    assert_int_equal(el_gguf_add_tensor(w, "w.4d", EL_DTYPE_F32, 4, ne_4d, t_4d), EL_OK);
    assert_int_equal(el_gguf_add_tensor(w, "filled", EL_DTYPE_I32, 1, ne_fill, NULL), EL_OK);
    assert_int_equal(el_gguf_add_tensor(w, "w.f32", EL_DTYPE_F32, 2, ne_f32, t_f32), EL_ERR_ARG);  // duplicate

    char path[512];
    snprintf(path, sizeof path, "%s", tu_tmp_path(alignment == 32 ? "rt32.gguf" : "rt64.gguf"));
    el_progress prog = {0};  // no output stream: updates are recorded, nothing printed
    fill_state fs = {0};
    el_error e = {0};
    el_status st = el_gguf_write(w, path, fill_pattern, &fs, &prog, &e);
    if (st) print_message("%s\n", e.msg);
    assert_int_equal(st, EL_OK);
    assert_int_equal(fs.calls, 1);
    el_gguf_writer_free(w);

    char tmp[520];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_equal(access(tmp, F_OK), -1);

    el_gguf *g = NULL;
    st = el_gguf_open(path, &g, &e);
    if (st) print_message("%s\n", e.msg);
    assert_int_equal(st, EL_OK);
    assert_string_equal(g->path, path);
    assert_int_equal(g->version, 3);
    assert_int_equal(g->alignment, alignment);
    // 25 keys added, one replaced; general.alignment is written only when it is not 32.
    assert_int_equal(g->n_kv, alignment == 32 ? 24 : 25);
    uint64_t u;
    int64_t i;
    double d;
    int b;
    char s[64];
    if (alignment == 32) {
        assert_null(el_gguf_find(g, "general.alignment"));
    } else {
        assert_true(el_gguf_get_u64(g, "general.alignment", &u));
        assert_int_equal(u, alignment);
        assert_int_equal(el_gguf_find(g, "general.alignment")->type, EL_GGUF_UINT32);
    }
    assert_true(el_gguf_get_str(g, "general.architecture", s, sizeof s));
    assert_string_equal(s, "llama");
    assert_true(el_gguf_get_u64(g, "u32", &u));
    assert_int_equal(u, 4000000000u);
    assert_int_equal(el_gguf_find(g, "u32")->type, EL_GGUF_UINT32);
    assert_true(el_gguf_get_i64(g, "i32", &i));
    assert_int_equal(i, -2000000000);
    assert_false(el_gguf_get_u64(g, "i32", &u));  // negative: does not fit
    assert_true(el_gguf_get_u64(g, "u64", &u));
    assert_true(u == 0xFEDCBA9876543210ull);
    assert_false(el_gguf_get_i64(g, "u64", &i));  // above INT64_MAX
    assert_true(el_gguf_get_f64(g, "f32", &d));
    assert_true(d == -1.25);
    assert_false(el_gguf_get_f64(g, "u32", &d));
    assert_true(el_gguf_get_bool(g, "yes", &b));
    assert_int_equal(b, 1);
    assert_true(el_gguf_get_bool(g, "no", &b));
    assert_int_equal(b, 0);
    assert_false(el_gguf_get_bool(g, "u32", &b));
    assert_true(el_gguf_get_str(g, "utf8", s, sizeof s));
    assert_string_equal(s, "F\xc3\xbchrer \xf0\x9f\xa6\x99");
    assert_true(el_gguf_get_str(g, "utf8", s, 4));  // truncated to bufsize - 1
    assert_string_equal(s, "F\xc3\xbc");
    assert_true(el_gguf_get_str(g, "empty", s, sizeof s));
    assert_string_equal(s, "");
    assert_true(el_gguf_get_str(g, "replaced", s, sizeof s));
    assert_string_equal(s, "second");
    assert_string_equal(g->kv[alignment == 32 ? 9 : 10].key, "replaced");
    assert_false(el_gguf_get_str(g, "u32", s, sizeof s));
    assert_false(el_gguf_get_u64(g, "missing", &u));

    const el_gguf_kv *kv = el_gguf_find(g, "a.u8");
    assert_int_equal(kv->type, EL_GGUF_ARRAY);
    assert_int_equal(kv->arr_type, EL_GGUF_UINT8);
    assert_int_equal(kv->arr_n, 3);
    assert_true(el_gguf_arr_i64(kv, 2, &i));
    assert_int_equal(i, 255);
    assert_false(el_gguf_arr_i64(kv, 3, &i));  // out of range
    kv = el_gguf_find(g, "a.i8");
    assert_true(el_gguf_arr_i64(kv, 0, &i));
    assert_int_equal(i, -128);
    kv = el_gguf_find(g, "a.u16");
    assert_true(el_gguf_arr_i64(kv, 0, &i));
    assert_int_equal(i, 65535);
    kv = el_gguf_find(g, "a.i16");
    assert_true(el_gguf_arr_f64(kv, 0, &d));
    assert_true(d == -32768.0);
    kv = el_gguf_find(g, "a.u32");
    assert_true(el_gguf_arr_i64(kv, 1, &i));
    assert_int_equal(i, 4294967295ll);
    kv = el_gguf_find(g, "a.i32");
    assert_true(el_gguf_arr_i64(kv, 2, &i));
    assert_int_equal(i, -2147483647ll - 1);
    kv = el_gguf_find(g, "a.u64");
    assert_false(el_gguf_arr_i64(kv, 0, &i));  // 2^64-1 does not fit
    assert_true(el_gguf_arr_f64(kv, 0, &d));
    assert_true(d == 18446744073709551615.0);
    assert_true(el_gguf_arr_i64(kv, 1, &i));
    assert_int_equal(i, 3);
    kv = el_gguf_find(g, "a.i64");
    assert_true(el_gguf_arr_i64(kv, 0, &i));
    assert_true(i == -9000000000000000000ll);
    kv = el_gguf_find(g, "a.f32");
    assert_int_equal(kv->arr_type, EL_GGUF_FLOAT32);
    assert_true(el_gguf_arr_f64(kv, 1, &d));
    assert_true(d == (double)-1e30f);
    assert_false(el_gguf_arr_i64(kv, 1, &i));  // floats are not read as integers
    kv = el_gguf_find(g, "a.f64");
    assert_true(el_gguf_arr_f64(kv, 0, &d));
    assert_true(d == -0.1);
    kv = el_gguf_find(g, "a.bool");
    assert_int_equal(kv->arr_type, EL_GGUF_BOOL);
    assert_true(el_gguf_arr_i64(kv, 1, &i));
    assert_int_equal(i, 0);
    assert_true(el_gguf_arr_i64(kv, 3, &i));
    assert_int_equal(i, 1);
    kv = el_gguf_find(g, "a.none");
    assert_int_equal(kv->arr_n, 0);
    assert_false(el_gguf_arr_f64(kv, 0, &d));
    kv = el_gguf_find(g, "a.str");
    assert_int_equal(kv->arr_type, EL_GGUF_STRING);
    assert_int_equal(kv->arr_n, 4);
    assert_non_null(kv->strs);
    for (int k = 0; k < 4; k++) {
        assert_int_equal(kv->strs[k].len, strlen(strs_in[k]));
        assert_memory_equal(kv->strs[k].ptr, strs_in[k], strlen(strs_in[k]));
    }
    assert_int_equal(kv->strs[2].len, 11);  // "naïve " + 4-byte emoji
    assert_false(el_gguf_arr_f64(kv, 0, &d));
    kv = el_gguf_find(g, "a.strlen");
    assert_int_equal(kv->strs[0].len, 3);
    assert_memory_equal(kv->strs[0].ptr, "a\0b", 3);
    assert_int_equal(kv->strs[1].len, 0);

    // Layout: data section aligned; tensors at aligned offsets in the order added.
    assert_int_equal(g->n_tensors, 5);
    assert_int_equal(g->data_offset % alignment, 0);
    const uint64_t off32[] = {0, 32, 64, 224, 256}, off64[] = {0, 64, 128, 320, 384};
    const uint64_t *want_off = alignment == 32 ? off32 : off64;
    const char *names[] = {"w.f32", "w.f16", "blk.0.attn_q.weight", "w.4d", "filled"};
    const size_t sizes[] = {24, 10, 136, 24, 4};
    for (int k = 0; k < 5; k++) {
        const el_gguf_tensor *t = el_gguf_find_tensor(g, names[k]);
        assert_ptr_equal(t, &g->tensors[k]);
        assert_string_equal(t->name, names[k]);
        assert_int_equal(t->offset, want_off[k]);
        assert_int_equal(t->nbytes, sizes[k]);
        assert_ptr_equal(t->data, (uint8_t *)g->map + g->data_offset + t->offset);
    }
    // Every tensor is padded to the alignment, the last one too.
    assert_int_equal(g->map_size, g->data_offset + want_off[4] + alignment);
    assert_int_equal(prog.total, g->map_size);

    const el_gguf_tensor *t = el_gguf_find_tensor(g, "w.f32");
    assert_int_equal(t->dtype, EL_DTYPE_F32);
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->ne[0], 3);
    assert_int_equal(t->ne[1], 2);
    assert_int_equal(t->ne[2], 1);
    assert_memory_equal(t->data, t_f32, sizeof t_f32);
    el_tensor view;
    el_gguf_tensor_view(t, &view);
    float row[3];
    el_tensor_row_f32(&view, 1, row);
    assert_true(row[0] == -4.0f && row[1] == 0.25f && row[2] == 1e-3f);

    t = el_gguf_find_tensor(g, "w.f16");
    assert_int_equal(t->dtype, EL_DTYPE_F16);
    assert_int_equal(t->n_dims, 1);
    assert_int_equal(t->ne[0], 5);
    assert_memory_equal(t->data, t_f16, sizeof t_f16);
    assert_true(el_f16_to_f32(((const uint16_t *)t->data)[0]) == -2.5f);

    t = el_gguf_find_tensor(g, "blk.0.attn_q.weight");
    assert_int_equal(t->dtype, EL_DTYPE_Q8_0);
    assert_int_equal(t->ne[0], 64);
    assert_int_equal(t->ne[1], 2);
    assert_memory_equal(t->data, t_q8, sizeof t_q8);

    t = el_gguf_find_tensor(g, "w.4d");
    assert_int_equal(t->n_dims, 4);
    assert_int_equal(t->ne[0], 2);
    assert_int_equal(t->ne[2], 3);
    assert_memory_equal(t->data, t_4d, sizeof t_4d);

    t = el_gguf_find_tensor(g, "filled");
    assert_int_equal(t->dtype, EL_DTYPE_I32);
    const uint8_t want_fill[4] = {1, 8, 15, 22};
    assert_memory_equal(t->data, want_fill, 4);
    assert_null(el_gguf_find_tensor(g, "w.f3"));

    // Rewriting the file with add_all_kv gives back the same bytes up to the
    // tensor data (which is empty here) when no tensors are added.
    w = el_gguf_writer_new();
    assert_int_equal(el_gguf_add_all_kv(w, g), EL_OK);
    char path2[512];
    snprintf(path2, sizeof path2, "%s", tu_tmp_path(alignment == 32 ? "rt32b.gguf" : "rt64b.gguf"));
    assert_int_equal(el_gguf_write(w, path2, NULL, NULL, NULL, &e), EL_OK);
    el_gguf_writer_free(w);
    el_gguf *g2 = NULL;
    assert_int_equal(el_gguf_open(path2, &g2, &e), EL_OK);
    assert_int_equal(g2->n_kv, g->n_kv);
    assert_int_equal(g2->alignment, alignment);
    assert_int_equal(g2->n_tensors, 0);
    // Key/values are stored identically: compare the kv section byte for byte.
    size_t kv_start = 24;
    const uint8_t *p1 = (const uint8_t *)g->map + kv_start, *p2 = (const uint8_t *)g2->map + kv_start;
    const el_gguf_kv *last = &g->kv[g->n_kv - 1];
    size_t kv_len = (size_t)((const uint8_t *)last->strs[1].ptr + last->strs[1].len - p1);
    assert_memory_equal(p1, p2, kv_len);
    el_gguf_close(g2);
    el_gguf_close(g);
    unlink(path);
    unlink(path2);
}

static void test_roundtrip_align32(void **st) {
    (void)st;
    check_roundtrip(32);
}

static void test_roundtrip_align64(void **st) {
    (void)st;
    check_roundtrip(64);
}

// A hand-made file with one key of each of the 13 value types, including an
// array of arrays, read directly and again after add_all_kv + write.
static void build_all_types(bb *b) {
    header(b, 2, 0, 13);
    str(b, "u8"); u32(b, EL_GGUF_UINT8); u8(b, 200);
    str(b, "i8"); u32(b, EL_GGUF_INT8); u8(b, 0x9C);  // -100
    str(b, "u16"); u32(b, EL_GGUF_UINT16); u8(b, 0x60); u8(b, 0xEA);  // 60000
    str(b, "i16"); u32(b, EL_GGUF_INT16); u8(b, 0xD0); u8(b, 0x8A);  // -30000
    str(b, "u32"); u32(b, EL_GGUF_UINT32); u32(b, 4000000000u);
    str(b, "i32"); u32(b, EL_GGUF_INT32); u32(b, (uint32_t)-2000000000);
    str(b, "f32"); u32(b, EL_GGUF_FLOAT32); u32(b, 0x3FC00000);  // 1.5
    str(b, "bool"); u32(b, EL_GGUF_BOOL); u8(b, 1);
    str(b, "str"); u32(b, EL_GGUF_STRING); str(b, "h\xc3\xa9");
    str(b, "nested"); u32(b, EL_GGUF_ARRAY); u32(b, EL_GGUF_ARRAY); u64(b, 3);
    u32(b, EL_GGUF_UINT16); u64(b, 2); u8(b, 1); u8(b, 0); u8(b, 2); u8(b, 0);  // [1, 2]
    u32(b, EL_GGUF_STRING); u64(b, 1); str(b, "x");                            // ["x"]
    u32(b, EL_GGUF_ARRAY); u64(b, 1); u32(b, EL_GGUF_INT8); u64(b, 0);          // [[]]
    str(b, "u64"); u32(b, EL_GGUF_UINT64); u64(b, 0x8000000000000005ull);
    str(b, "i64"); u32(b, EL_GGUF_INT64); u64(b, (uint64_t)-4611686018427387904ll);
    str(b, "f64"); u32(b, EL_GGUF_FLOAT64); u64(b, 0xBFB999999999999Aull);  // -0.1
}

static void check_all_types(const el_gguf *g) {
    uint64_t u;
    int64_t i;
    double d;
    int b;
    char s[16];
    assert_int_equal(g->n_kv, 13);
    for (int k = 0; k < 13; k++) assert_int_equal(g->kv[k].type, k);  // one key per type, in type order
    assert_true(el_gguf_get_u64(g, "u8", &u));
    assert_int_equal(u, 200);
    assert_true(el_gguf_get_i64(g, "i8", &i));
    assert_int_equal(i, -100);
    assert_false(el_gguf_get_u64(g, "i8", &u));
    assert_true(el_gguf_get_u64(g, "u16", &u));
    assert_int_equal(u, 60000);
    assert_true(el_gguf_get_i64(g, "i16", &i));
    assert_int_equal(i, -30000);
    assert_true(el_gguf_get_i64(g, "u32", &i));
    assert_int_equal(i, 4000000000ll);
    assert_true(el_gguf_get_i64(g, "i32", &i));
    assert_int_equal(i, -2000000000);
    assert_true(el_gguf_get_f64(g, "f32", &d));
    assert_true(d == 1.5);
    assert_true(el_gguf_get_bool(g, "bool", &b));
    assert_int_equal(b, 1);
    assert_false(el_gguf_get_u64(g, "bool", &u));
    assert_true(el_gguf_get_str(g, "str", s, sizeof s));
    assert_string_equal(s, "h\xc3\xa9");
    assert_true(el_gguf_get_u64(g, "u64", &u));
    assert_true(u == 0x8000000000000005ull);
    assert_true(el_gguf_get_i64(g, "i64", &i));
    assert_true(i == -4611686018427387904ll);
    assert_true(el_gguf_get_f64(g, "f64", &d));
    assert_true(d == -0.1);
    const el_gguf_kv *kv = el_gguf_find(g, "nested");
    assert_int_equal(kv->type, EL_GGUF_ARRAY);
    assert_int_equal(kv->arr_type, EL_GGUF_ARRAY);
    assert_int_equal(kv->arr_n, 3);
    assert_null(kv->strs);
    assert_false(el_gguf_arr_f64(kv, 0, &d));  // typed getters do not descend into nested arrays
    assert_false(el_gguf_arr_i64(kv, 0, &i));
}

static void test_all_value_types(void **st) {
    (void)st;
    static bb b;
    build_all_types(&b);
    el_gguf *g = expect_ok(&b);
    assert_int_equal(g->version, 2);
    check_all_types(g);

    el_gguf_writer *w = el_gguf_writer_new();
    assert_int_equal(el_gguf_add_all_kv(w, g), EL_OK);
    char path[512];
    snprintf(path, sizeof path, "%s", tu_tmp_path("alltypes.gguf"));
    el_error e = {0};
    assert_int_equal(el_gguf_write(w, path, NULL, NULL, NULL, &e), EL_OK);
    el_gguf_writer_free(w);
    el_gguf *g2 = NULL;
    assert_int_equal(el_gguf_open(path, &g2, &e), EL_OK);
    assert_int_equal(g2->version, 3);
    check_all_types(g2);
    // Everything after the version field is identical; the writer pads the end to 32.
    assert_int_equal(g2->map_size, (b.n + 31) / 32 * 32);
    assert_memory_equal((uint8_t *)g2->map + 8, b.b + 8, b.n - 8);
    el_gguf_close(g2);
    close_parsed(g);
    unlink(path);
}

// ---------------------------------------------------------------- real files from another tool

static void test_reference_llama_spm(void **st) {
    (void)st;
    el_gguf *g = NULL;
    el_error e = {0};
    el_status s = el_gguf_open(tu_model_path("reference/ggml-vocab-llama-spm.gguf"), &g, &e);
    if (s) print_message("%s\n", e.msg);
    assert_int_equal(s, EL_OK);
    assert_int_equal(g->version, 3);
    assert_int_equal(g->n_kv, 22);
    assert_int_equal(g->n_tensors, 0);
    assert_int_equal(g->alignment, 32);
    assert_int_equal(g->map_size, 723869);
    char buf[64];
    assert_true(el_gguf_get_str(g, "general.architecture", buf, sizeof buf));
    assert_string_equal(buf, "llama");
    assert_true(el_gguf_get_str(g, "general.name", buf, sizeof buf));
    assert_string_equal(buf, "llama-spm");
    assert_true(el_gguf_get_str(g, "tokenizer.ggml.model", buf, sizeof buf));
    assert_string_equal(buf, "llama");
    assert_true(el_gguf_get_str(g, "tokenizer.ggml.pre", buf, sizeof buf));
    assert_string_equal(buf, "default");
    uint64_t u;
    assert_true(el_gguf_get_u64(g, "llama.block_count", &u));
    assert_int_equal(u, 32);
    assert_true(el_gguf_get_u64(g, "llama.context_length", &u));
    assert_int_equal(u, 4096);
    assert_true(el_gguf_get_u64(g, "llama.feed_forward_length", &u));
    assert_int_equal(u, 11008);
    assert_true(el_gguf_get_u64(g, "llama.vocab_size", &u));
    assert_int_equal(u, 32000);
    assert_true(el_gguf_get_u64(g, "tokenizer.ggml.bos_token_id", &u));
    assert_int_equal(u, 1);
    assert_true(el_gguf_get_u64(g, "tokenizer.ggml.eos_token_id", &u));
    assert_int_equal(u, 2);
    assert_true(el_gguf_get_u64(g, "tokenizer.ggml.unknown_token_id", &u));
    assert_int_equal(u, 0);
    double d;
    assert_true(el_gguf_get_f64(g, "llama.attention.layer_norm_rms_epsilon", &d));
    assert_true(d == (double)1e-5f);
    int b;
    assert_true(el_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b));
    assert_int_equal(b, 1);
    assert_true(el_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &b));
    assert_int_equal(b, 0);

    const el_gguf_kv *tok = el_gguf_find(g, "tokenizer.ggml.tokens");
    assert_ptr_equal(tok, &g->kv[14]);
    assert_int_equal(tok->arr_type, EL_GGUF_STRING);
    assert_int_equal(tok->arr_n, 32000);
    assert_int_equal(tok->strs[1].len, 3);
    assert_memory_equal(tok->strs[1].ptr, "<s>", 3);
    assert_memory_equal(tok->strs[0].ptr, "<unk>", 5);
    assert_memory_equal(tok->strs[13].ptr, "<0x0A>", 6);
    assert_int_equal(tok->strs[29871].len, 3);
    assert_memory_equal(tok->strs[29871].ptr, "\xe2\x96\x81", 3);  // U+2581, the SentencePiece space
    assert_memory_equal(tok->strs[31999].ptr, "\xe7\xbb\x99", 3);
    uint64_t total = 0;
    for (uint64_t k = 0; k < tok->arr_n; k++) total += tok->strs[k].len;
    assert_int_equal(total, 210919);

    const el_gguf_kv *sc = el_gguf_find(g, "tokenizer.ggml.scores");
    assert_int_equal(sc->arr_type, EL_GGUF_FLOAT32);
    assert_int_equal(sc->arr_n, 32000);
    assert_true(el_gguf_arr_f64(sc, 1, &d) && d == 0.0);
    assert_true(el_gguf_arr_f64(sc, 260, &d) && d == -1.0);
    assert_true(el_gguf_arr_f64(sc, 1000, &d) && d == -741.0);
    assert_true(el_gguf_arr_f64(sc, 29871, &d) && d == -1e9);
    assert_true(el_gguf_arr_f64(sc, 31999, &d) && d == -31740.0);
    assert_false(el_gguf_arr_f64(sc, 32000, &d));

    const el_gguf_kv *ty = el_gguf_find(g, "tokenizer.ggml.token_type");
    assert_int_equal(ty->arr_type, EL_GGUF_INT32);
    int64_t i;
    assert_true(el_gguf_arr_i64(ty, 0, &i) && i == 2);  // unknown
    assert_true(el_gguf_arr_i64(ty, 1, &i) && i == 3);  // control
    assert_true(el_gguf_arr_i64(ty, 258, &i) && i == 6);  // byte <0xFF>
    assert_true(el_gguf_arr_i64(ty, 259, &i) && i == 1);  // normal
    el_gguf_close(g);
}

static void test_reference_gpt2(void **st) {
    (void)st;
    el_gguf *g = NULL;
    el_error e = {0};
    el_status s = el_gguf_open(tu_model_path("reference/ggml-vocab-gpt-2.gguf"), &g, &e);
    if (s) print_message("%s\n", e.msg);
    assert_int_equal(s, EL_OK);
    assert_int_equal(g->n_kv, 16);
    char buf[64];
    assert_true(el_gguf_get_str(g, "general.architecture", buf, sizeof buf));
    assert_string_equal(buf, "gpt2");
    assert_true(el_gguf_get_str(g, "tokenizer.ggml.model", buf, sizeof buf));
    assert_string_equal(buf, "gpt2");
    uint64_t u;
    assert_true(el_gguf_get_u64(g, "gpt2.embedding_length", &u));
    assert_int_equal(u, 768);
    assert_true(el_gguf_get_u64(g, "tokenizer.ggml.bos_token_id", &u));
    assert_int_equal(u, 50256);
    const el_gguf_kv *tok = el_gguf_find(g, "tokenizer.ggml.tokens");
    assert_int_equal(tok->arr_n, 50257);
    assert_memory_equal(tok->strs[0].ptr, "!", 1);
    assert_int_equal(tok->strs[256].len, 3);
    assert_memory_equal(tok->strs[256].ptr, "\xc4\xa0t", 3);  // "Ġt"
    assert_int_equal(tok->strs[50256].len, 13);
    assert_memory_equal(tok->strs[50256].ptr, "<|endoftext|>", 13);
    const el_gguf_kv *m = el_gguf_find(g, "tokenizer.ggml.merges");
    assert_int_equal(m->arr_type, EL_GGUF_STRING);
    assert_int_equal(m->arr_n, 50000);
    assert_int_equal(m->strs[0].len, 4);
    assert_memory_equal(m->strs[0].ptr, "\xc4\xa0 t", 4);
    int64_t i;
    assert_true(el_gguf_arr_i64(el_gguf_find(g, "tokenizer.ggml.token_type"), 50256, &i) && i == 3);

    // A rewrite with add_all_kv reproduces the file exactly (it has no tensors,
    // and its last string ends where the writer's 32-byte padding starts).
    el_gguf_writer *w = el_gguf_writer_new();
    assert_int_equal(el_gguf_add_all_kv(w, g), EL_OK);
    char path[512];
    snprintf(path, sizeof path, "%s", tu_tmp_path("gpt2-copy.gguf"));
    assert_int_equal(el_gguf_write(w, path, NULL, NULL, NULL, &e), EL_OK);
    el_gguf_writer_free(w);
    el_gguf *g2 = NULL;
    assert_int_equal(el_gguf_open(path, &g2, &e), EL_OK);
    assert_int_equal(g2->map_size, (g->map_size + 31) / 32 * 32);
    assert_memory_equal(g2->map, g->map, g->map_size);
    el_gguf_close(g2);
    el_gguf_close(g);
    unlink(path);
}

// ---------------------------------------------------------------- fuzz seeds

// The committed fuzz seeds are written by a Python script, independently of
// our writer; they must parse, and the all-types seed must equal the C-built one.
static el_gguf *open_seed(const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/fuzz/corpus/gguf/%s", EL_SOURCE_DIR, name);
    el_gguf *g = NULL;
    el_error e = {0};
    el_status s = el_gguf_open(path, &g, &e);
    if (s) print_message("%s\n", e.msg);
    assert_int_equal(s, EL_OK);
    return g;
}

static void test_fuzz_seeds(void **st) {
    (void)st;
    el_gguf *g = open_seed("empty.gguf");
    assert_int_equal(g->n_kv + g->n_tensors, 0);
    el_gguf_close(g);

    static bb b;
    build_all_types(&b);
    g = open_seed("all-types-v2.gguf");
    check_all_types(g);
    assert_int_equal(g->map_size, b.n);
    assert_memory_equal(g->map, b.b, b.n);
    el_gguf_close(g);

    g = open_seed("vocab.gguf");
    const el_gguf_kv *tok = el_gguf_find(g, "tokenizer.ggml.tokens");
    assert_int_equal(tok->arr_n, 6);
    assert_int_equal(tok->strs[3].len, 0);
    assert_int_equal(tok->strs[5].len, 4);
    assert_memory_equal(tok->strs[5].ptr, "\xf0\x9f\xa6\x99", 4);
    double d;
    assert_true(el_gguf_arr_f64(el_gguf_find(g, "tokenizer.ggml.scores"), 4, &d) && d == -2.5);
    el_gguf_close(g);

    g = open_seed("tensors.gguf");
    assert_int_equal(g->n_tensors, 3);
    const el_gguf_tensor *t = el_gguf_find_tensor(g, "blk.0.attn_q.weight");
    assert_int_equal(t->dtype, EL_DTYPE_Q8_0);
    assert_int_equal(t->offset, 32);
    assert_int_equal(t->nbytes, 34);
    assert_int_equal(((const uint8_t *)t->data)[33], 33);
    t = el_gguf_find_tensor(g, "output_norm.weight");
    assert_int_equal(t->offset, 96);
    assert_int_equal(g->map_size, g->data_offset + 96 + 6);
    assert_true(el_f16_to_f32(((const uint16_t *)t->data)[2]) == 3.0f);
    el_gguf_close(g);

    g = open_seed("align64.gguf");
    assert_int_equal(g->alignment, 64);
    assert_int_equal(g->data_offset, 192);  // 147 bytes of header, key and tensor infos
    t = el_gguf_find_tensor(g, "b");
    assert_int_equal(t->dtype, EL_DTYPE_I32);
    assert_int_equal(t->offset, 64);
    assert_int_equal(((const uint8_t *)t->data)[0], 7);
    el_gguf_close(g);
}

// ---------------------------------------------------------------- truncation

// Every prefix shorter than the end of the last tensor's data must fail with
// a "truncated"/"past the end" message, never crash or read out of bounds.
static void test_every_prefix(void **st) {
    (void)st;
    el_gguf_writer *w = el_gguf_writer_new();
    el_gguf_add_str(w, "general.architecture", "llama");
    el_gguf_add_u32(w, "n", 7);
    el_gguf_add_bool(w, "b", 1);
    el_gguf_add_arr_str(w, "tokens", strs_in, NULL, 4);
    const float sc[3] = {0.5f, -1, 2};
    el_gguf_add_arr(w, "scores", EL_GGUF_FLOAT32, sc, 3);
    const float t1[6] = {1, 2, 3, 4, 5, 6};
    const uint16_t t2[3] = {0x3C00, 0x4000, 0x4200};
    const int64_t ne1[] = {3, 2}, ne2[] = {3};
    el_gguf_add_tensor(w, "a", EL_DTYPE_F32, 2, ne1, t1);
    el_gguf_add_tensor(w, "b", EL_DTYPE_F16, 1, ne2, t2);
    char path[512];
    snprintf(path, sizeof path, "%s", tu_tmp_path("prefix.gguf"));
    el_error e = {0};
    assert_int_equal(el_gguf_write(w, path, NULL, NULL, NULL, &e), EL_OK);
    el_gguf_writer_free(w);

    char *data;
    size_t n;
    assert_int_equal(el_read_file(path, 1 << 20, &data, &n, &e), EL_OK);
    el_gguf *g = NULL;
    assert_int_equal(parse(data, n, &g, &e), EL_OK);
    size_t need = g->data_offset + (size_t)g->tensors[1].offset + g->tensors[1].nbytes;
    close_parsed(g);
    assert_true(need < n);  // the writer pads after the last tensor

    for (size_t len = 0; len < n; len++) {
        g = (el_gguf *)data;
        memset(&e, 0, sizeof e);
        el_status s = parse(data, len, &g, &e);
        if (len >= need) {
            assert_int_equal(s, EL_OK);
            close_parsed(g);
            continue;
        }
        if (s != EL_ERR_FORMAT) print_message("prefix %zu: %d %s\n", len, s, e.msg);
        assert_int_equal(s, EL_ERR_FORMAT);
        assert_null(g);
        assert_memory_equal(e.msg, "bad.gguf: ", 10);
        assert_true(strstr(e.msg, "truncated in ") || strstr(e.msg, "runs past the end") ||
                    strstr(e.msg, "which need at least") || strstr(e.msg, "bytes left"));
    }
    // Spot checks of the messages.
    parse(data, 3, &g, &e);
    assert_string_equal(e.msg, "bad.gguf: truncated in header (4 bytes needed at offset 0, 3 left)");
    parse(data, need - 1, &g, &e);
    assert_non_null(strstr(e.msg, "tensor 'b' data [offset 32, 6 bytes] runs past the end of the file"));

    // The same through the file path, including an empty file.
    const size_t lens[] = {0, 3, 13, 23};
    for (int k = 0; k < 4; k++) {
        size_t len = lens[k];
        const char *p = tu_write_tmp("short.gguf", data, len);
        g = (el_gguf *)data;
        assert_int_equal(el_gguf_open(p, &g, &e), EL_ERR_FORMAT);
        assert_null(g);
        assert_memory_equal(e.msg, p, strlen(p));
        assert_non_null(strstr(e.msg, "truncated in "));
        unlink(p);
    }
    free(data);
    unlink(path);
}

// ---------------------------------------------------------------- hostile headers and values

static void test_bad_header(void **st) {
    (void)st;
    static bb b;
    header(&b, 3, 0, 0);
    memcpy(b.b, "GGML", 4);
    expect_fail(&b, EL_ERR_FORMAT, "not a GGUF file (magic 0x46554747 expected, got 0x4c4d4747)");
    header(&b, 1, 0, 0);
    expect_fail(&b, EL_ERR_UNSUPPORTED, "GGUF version 1 is not supported");
    header(&b, 4, 0, 0);
    expect_fail(&b, EL_ERR_UNSUPPORTED, "GGUF version 4 is not supported (need 2 or 3)");
    header(&b, 0x03000000, 0, 0);
    expect_fail(&b, EL_ERR_UNSUPPORTED, "big-endian");
    header(&b, 3, 0, 1ull << 40);
    expect_fail(&b, EL_ERR_RANGE, "key/value count 1099511627776 exceeds the limit of 65536");
    header(&b, 3, 0xFFFFFFFFFFFFFFFFull, 0);
    expect_fail(&b, EL_ERR_RANGE, "tensor count 18446744073709551615 exceeds the limit of 1048576");
    header(&b, 3, 2, 1000);  // within the caps, but the bytes are not there
    expect_fail(&b, EL_ERR_FORMAT, "header claims 1000 key/values and 2 tensors, which need at least 14066 bytes");

    // An empty file is a well-formed GGUF file.
    header(&b, 3, 0, 0);
    el_gguf *g = expect_ok(&b);
    assert_int_equal(g->n_kv, 0);
    assert_int_equal(g->data_offset, 32);
    close_parsed(g);
    el_gguf_close(NULL);
}

static void test_bad_values(void **st) {
    (void)st;
    static bb b;
    el_gguf *g;

    header(&b, 3, 0, 1);
    u64(&b, 1ull << 62);  // key length
    raw(&b, "abcdefghijklmnop", 16);
    expect_fail(&b, EL_ERR_RANGE, "key/value 0: key length 4611686018427387904 exceeds the limit of 16777216 bytes");

    header(&b, 3, 0, 1);
    str(&b, "general.name");
    u32(&b, EL_GGUF_STRING);
    u64(&b, 100);
    raw(&b, "short", 5);
    expect_fail(&b, EL_ERR_FORMAT,
                "truncated in key/value 0 ('general.name') (100 bytes needed at offset 56, 5 left)");

    header(&b, 3, 0, 1);
    str(&b, "general.name");
    u32(&b, EL_GGUF_STRING);
    u64(&b, (uint64_t)EL_GGUF_MAX_STRING + 1);
    raw(&b, "short", 5);
    expect_fail(&b, EL_ERR_RANGE, "string value length 16777217 exceeds the limit");

    header(&b, 3, 0, 2);
    str(&b, "ok");
    u32(&b, EL_GGUF_BOOL);
    u8(&b, 1);
    str(&b, "flag");
    u32(&b, EL_GGUF_BOOL);
    u8(&b, 2);
    expect_fail(&b, EL_ERR_FORMAT, "bad.gguf: key/value 1 ('flag'): bool value 2 is not 0 or 1");

    header(&b, 3, 0, 1);
    str(&b, "flags");
    u32(&b, EL_GGUF_ARRAY);
    u32(&b, EL_GGUF_BOOL);
    u64(&b, 3);
    u8(&b, 0); u8(&b, 1); u8(&b, 255);
    expect_fail(&b, EL_ERR_FORMAT, "key/value 0 ('flags'): bool array element 2 is 255, not 0 or 1");

    header(&b, 3, 0, 1);
    str(&b, "t");
    u32(&b, 13);
    u64(&b, 0);
    expect_fail(&b, EL_ERR_FORMAT, "key/value 0 ('t'): unknown value type 13");

    header(&b, 3, 0, 1);
    str(&b, "t");
    u32(&b, EL_GGUF_ARRAY);
    u32(&b, 0xFFFFFFFF);
    u64(&b, 0);
    expect_fail(&b, EL_ERR_FORMAT, "unknown array element type 4294967295");

    header(&b, 3, 0, 1);
    str(&b, "");
    u32(&b, EL_GGUF_UINT8);
    u8(&b, 0);
    u8(&b, 0);
    expect_fail(&b, EL_ERR_FORMAT, "key/value 0: empty key");

    header(&b, 3, 0, 1);
    u64(&b, 3);
    raw(&b, "a\0b", 3);
    u32(&b, EL_GGUF_UINT8);
    u8(&b, 0);
    expect_fail(&b, EL_ERR_FORMAT, "key contains a NUL byte");

    header(&b, 3, 0, 2);
    str(&b, "dup");
    u32(&b, EL_GGUF_UINT8);
    u8(&b, 0);
    str(&b, "dup");
    u32(&b, EL_GGUF_INT8);
    u8(&b, 0);
    expect_fail(&b, EL_ERR_FORMAT, "key/value 1 ('dup'): duplicate key (first seen as key/value 0)");

    // A string array of n elements needs 8n bytes before its index is allocated.
    header(&b, 3, 0, 1);
    str(&b, "tokenizer.ggml.tokens");
    u32(&b, EL_GGUF_ARRAY);
    u32(&b, EL_GGUF_STRING);
    u64(&b, 1ull << 40);
    u64(&b, 0);
    u64(&b, 0);
    expect_fail(&b, EL_ERR_FORMAT, "array of 1099511627776 strings needs at least 8 bytes each, only 16 bytes left");

    header(&b, 3, 0, 1);
    str(&b, "a");
    u32(&b, EL_GGUF_ARRAY);
    u32(&b, EL_GGUF_FLOAT64);
    u64(&b, 0x2000000000000001ull);  // n * 8 wraps around to 8
    u64(&b, 0);
    expect_fail(&b, EL_ERR_FORMAT, "array of 2305843009213693953 float64 values runs past the end of the file");

    // Arrays of arrays are accepted up to a nesting depth, then refused.
    header(&b, 3, 0, 1);
    str(&b, "deep");
    u32(&b, EL_GGUF_ARRAY);
    for (int k = 0; k < 7; k++) { u32(&b, EL_GGUF_ARRAY); u64(&b, 1); }
    u32(&b, EL_GGUF_UINT8); u64(&b, 1); u8(&b, 9);
    g = expect_ok(&b);
    assert_int_equal(g->kv[0].arr_type, EL_GGUF_ARRAY);
    close_parsed(g);
    header(&b, 3, 0, 1);
    str(&b, "deep");
    u32(&b, EL_GGUF_ARRAY);
    for (int k = 0; k < 8; k++) { u32(&b, EL_GGUF_ARRAY); u64(&b, 1); }
    u32(&b, EL_GGUF_UINT8); u64(&b, 1); u8(&b, 9);
    expect_fail(&b, EL_ERR_RANGE, "arrays nested deeper than 8 levels");

    // general.alignment: must be a u32 power of two.
    const uint32_t bad_align[] = {0, 3, 48};
    for (int k = 0; k < 3; k++) {
        header(&b, 3, 0, 1);
        str(&b, "general.alignment");
        u32(&b, EL_GGUF_UINT32);
        u32(&b, bad_align[k]);
        char want[96];
        snprintf(want, sizeof want, "bad.gguf: general.alignment is %u, not a non-zero power of two", bad_align[k]);
        expect_fail(&b, EL_ERR_FORMAT, want);
    }
    header(&b, 3, 0, 1);
    str(&b, "general.alignment");
    u32(&b, EL_GGUF_INT32);
    u32(&b, 64);
    expect_fail(&b, EL_ERR_FORMAT, "general.alignment has type int32, expected uint32");
}

// ---------------------------------------------------------------- hostile tensor infos

// One tensor file: optional alignment key, one tensor info, padding, nbytes of data.
static void one_tensor(bb *b, uint32_t align, uint32_t n_dims, const uint64_t *ne, uint32_t dtype, uint64_t offset,
                       size_t data_bytes) {
    header(b, 3, 1, align ? 1 : 0);
    if (align) {
        str(b, "general.alignment");
        u32(b, EL_GGUF_UINT32);
        u32(b, align);
    }
    tinfo(b, "blk.3.attn_q.weight", n_dims, ne, dtype, offset);
    pad(b, align ? align : 32);
    for (size_t k = 0; k < data_bytes; k++) u8(b, (uint8_t)k);
}

static void test_bad_tensors(void **st) {
    (void)st;
    static bb b;
    const uint64_t ne2[] = {4, 3}, ne5[] = {1, 1, 1, 1, 1};
    el_gguf *g;

    one_tensor(&b, 0, 2, ne2, EL_DTYPE_F32, 0, 48);
    g = expect_ok(&b);
    assert_int_equal(g->data_offset, 96);  // 83 bytes of header and tensor info, rounded up
    assert_int_equal(g->tensors[0].nbytes, 48);
    assert_int_equal(((const uint8_t *)g->tensors[0].data)[47], 47);
    close_parsed(g);

    one_tensor(&b, 0, 2, ne2, EL_DTYPE_F32, 0, 47);
    expect_fail(&b, EL_ERR_FORMAT,
                "bad.gguf: tensor 'blk.3.attn_q.weight' data [offset 0, 48 bytes] runs past the end of the file "
                "(143 bytes, data section starts at 96)");
    one_tensor(&b, 0, 2, ne2, EL_DTYPE_F32, 1ull << 20, 48);
    expect_fail(&b, EL_ERR_FORMAT, "data [offset 1048576, 48 bytes] runs past the end of the file (144 bytes");
    one_tensor(&b, 0, 2, ne2, EL_DTYPE_F32, 0xFFFFFFFFFFFFFFE0ull, 48);  // offset + nbytes wraps
    expect_fail(&b, EL_ERR_FORMAT, "data [offset 18446744073709551584, 48 bytes] runs past the end");
    one_tensor(&b, 0, 2, ne2, EL_DTYPE_F32, 8, 64);
    expect_fail(&b, EL_ERR_FORMAT,
                "bad.gguf: tensor info 0 ('blk.3.attn_q.weight'): data offset 8 is not a multiple of the alignment 32");
    one_tensor(&b, 64, 2, ne2, EL_DTYPE_F32, 32, 128);
    expect_fail(&b, EL_ERR_FORMAT, "data offset 32 is not a multiple of the alignment 64");
    one_tensor(&b, 64, 2, ne2, EL_DTYPE_F32, 64, 128);
    g = expect_ok(&b);
    assert_int_equal(g->alignment, 64);
    assert_int_equal(g->data_offset, 128);
    close_parsed(g);

    one_tensor(&b, 0, 2, ne2, 4, 0, 48);  // 4 was Q4_2, long removed
    expect_fail(&b, EL_ERR_FORMAT,
                "tensor info 0 ('blk.3.attn_q.weight'): unknown tensor type 4 (supported: f32, f16, bf16, q8_0, q4_0, "
                "q4_k, q6_k)");
    one_tensor(&b, 0, 2, ne2, 0x80000000u, 0, 48);
    expect_fail(&b, EL_ERR_FORMAT, "unknown tensor type 2147483648");
    one_tensor(&b, 0, 2, ne2, 20, 0, 48);  // IQ4_NL: GGUF defines it, edgellm cannot read it
    expect_fail(&b, EL_ERR_UNSUPPORTED, "tensor info 0 ('blk.3.attn_q.weight'): tensor type IQ4_NL (20) is not supported "
                                        "(supported: f32, f16, bf16, q8_0, q4_0, q4_k, q6_k)");
    one_tensor(&b, 0, 0, ne2, EL_DTYPE_F32, 0, 48);
    expect_fail(&b, EL_ERR_FORMAT, "n_dims 0 is outside 1..4");
    one_tensor(&b, 0, 5, ne5, EL_DTYPE_F32, 0, 48);
    expect_fail(&b, EL_ERR_FORMAT, "n_dims 5 is outside 1..4");

    const uint64_t ne_zero[] = {4, 0}, ne_huge[] = {(1ull << 40) + 1}, ne_over[] = {1ull << 40, 1ull << 40};
    one_tensor(&b, 0, 2, ne_zero, EL_DTYPE_F32, 0, 48);
    expect_fail(&b, EL_ERR_RANGE, "ne[1] = 0 is outside 1..1099511627776");
    one_tensor(&b, 0, 1, ne_huge, EL_DTYPE_F32, 0, 48);
    expect_fail(&b, EL_ERR_RANGE, "ne[0] = 1099511627777 is outside 1..1099511627776");
    one_tensor(&b, 0, 2, ne_over, EL_DTYPE_I8, 0, 48);
    expect_fail(&b, EL_ERR_RANGE, "element count overflows at ne[1] = 1099511627776");
    const uint64_t ne_big[] = {1ull << 40, 1ull << 22};  // 2^62 f64: fits int64 elements, not size_t bytes
    one_tensor(&b, 0, 2, ne_big, EL_DTYPE_F64, 0, 48);
    expect_fail(&b, EL_ERR_RANGE, "4611686018427387904 f64 elements do not fit in memory");
    const uint64_t ne_q[] = {33, 2};
    one_tensor(&b, 0, 2, ne_q, EL_DTYPE_Q8_0, 0, 200);
    expect_fail(&b, EL_ERR_FORMAT, "ne[0] = 33 is not a multiple of the q8_0 block size 32");

    // Duplicate and empty names.
    header(&b, 3, 2, 0);
    tinfo(&b, "tok_embd", 2, ne2, EL_DTYPE_F32, 0);
    tinfo(&b, "tok_embd", 2, ne2, EL_DTYPE_F32, 64);
    pad(&b, 32);
    for (int k = 0; k < 128; k++) u8(&b, 0);
    expect_fail(&b, EL_ERR_FORMAT, "tensor info 1 ('tok_embd'): duplicate tensor name (first seen as tensor info 0)");
    header(&b, 3, 1, 0);
    tinfo(&b, "", 2, ne2, EL_DTYPE_F32, 0);
    pad(&b, 32);
    for (int k = 0; k < 64; k++) u8(&b, 0);
    expect_fail(&b, EL_ERR_FORMAT, "tensor info 0: empty tensor name");
    header(&b, 3, 1, 0);
    u64(&b, 70000);
    for (int k = 0; k < 40; k++) u8(&b, 'x');
    expect_fail(&b, EL_ERR_RANGE, "tensor name length 70000 exceeds the limit of 65536 bytes");
}

// ---------------------------------------------------------------- I/O and writer errors

static void test_io_errors(void **st) {
    (void)st;
    el_gguf *g = (el_gguf *)&g;
    el_error e = {0};
    assert_int_equal(el_gguf_open("/nonexistent/dir/x.gguf", &g, &e), EL_ERR_IO);
    assert_null(g);
    assert_string_equal(e.msg, "/nonexistent/dir/x.gguf: cannot open: No such file or directory");
    assert_int_equal(el_gguf_open("/", &g, &e), EL_ERR_IO);
    assert_string_equal(e.msg, "/: not a regular file");
    assert_int_equal(el_gguf_open_memory(NULL, 0, "empty", &g, &e), EL_ERR_FORMAT);
    assert_string_equal(e.msg, "empty: truncated in header (4 bytes needed at offset 0, 0 left)");
}

static void test_writer_errors(void **st) {
    (void)st;
    el_error e = {0};
    el_gguf_writer *w = el_gguf_writer_new();
    assert_int_equal(el_gguf_writer_set_alignment(w, 0, &e), EL_ERR_ARG);
    assert_int_equal(el_gguf_writer_set_alignment(w, 48, &e), EL_ERR_ARG);
    assert_non_null(strstr(e.msg, "alignment 48 is not a power of two"));
    assert_int_equal(el_gguf_add_u32(w, "general.alignment", 3), EL_ERR_ARG);
    assert_int_equal(el_gguf_add_i32(w, "general.alignment", 64), EL_ERR_ARG);
    assert_int_equal(el_gguf_add_u32(w, "", 3), EL_ERR_ARG);
    assert_int_equal(el_gguf_add_u32(w, NULL, 3), EL_ERR_ARG);
    assert_int_equal(el_gguf_add_str(w, "s", NULL), EL_ERR_ARG);
    const uint8_t bools[] = {0, 2};
    assert_int_equal(el_gguf_add_arr(w, "b", EL_GGUF_BOOL, bools, 2), EL_ERR_ARG);
    assert_int_equal(el_gguf_add_arr(w, "s", EL_GGUF_STRING, bools, 2), EL_ERR_ARG);
    assert_int_equal(el_gguf_add_arr(w, "s", EL_GGUF_ARRAY, bools, 2), EL_ERR_ARG);
    const char *nul[] = {NULL};
    assert_int_equal(el_gguf_add_arr_str(w, "s", nul, NULL, 1), EL_ERR_ARG);

    const int64_t ne[] = {32, 2}, ne_odd[] = {33}, ne0[] = {0};
    assert_int_equal(el_gguf_add_tensor(w, "q", EL_DTYPE_Q8_0, 1, ne_odd, NULL), EL_ERR_ARG);
    assert_int_equal(el_gguf_add_tensor(w, "q", 5, 2, ne, NULL), EL_ERR_ARG);
    assert_int_equal(el_gguf_add_tensor(w, "q", EL_DTYPE_F32, 0, ne, NULL), EL_ERR_ARG);
    assert_int_equal(el_gguf_add_tensor(w, "q", EL_DTYPE_F32, 1, ne0, NULL), EL_ERR_RANGE);
    assert_int_equal(el_gguf_add_tensor(w, "", EL_DTYPE_F32, 2, ne, NULL), EL_ERR_ARG);
    assert_int_equal(el_gguf_add_tensor(w, "q", EL_DTYPE_Q8_0, 2, ne, NULL), EL_OK);

    char path[512];
    snprintf(path, sizeof path, "%s", tu_tmp_path("werr.gguf"));
    char tmp[520];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    unlink(path);
    // No data and no fill callback: refused before anything is created.
    assert_int_equal(el_gguf_write(w, path, NULL, NULL, NULL, &e), EL_ERR_ARG);
    assert_non_null(strstr(e.msg, "tensor 'q' has no data and no fill callback was given"));
    assert_int_equal(access(path, F_OK), -1);
    // A failing fill callback: its message is passed on and the .tmp file removed.
    assert_int_equal(el_gguf_write(w, path, fill_fails, NULL, NULL, &e), EL_ERR_IO);
    assert_memory_equal(e.msg, tmp, strlen(tmp));
    assert_non_null(strstr(e.msg, "filling tensor 'q' failed: source for q vanished"));
    assert_int_equal(access(tmp, F_OK), -1);
    assert_int_equal(access(path, F_OK), -1);
    // A directory that does not exist.
    assert_int_equal(el_gguf_write(w, "/nonexistent/dir/out.gguf", fill_fails, NULL, NULL, &e), EL_ERR_IO);
    assert_string_equal(e.msg, "/nonexistent/dir/out.gguf.tmp: cannot create: No such file or directory");
    el_gguf_writer_free(w);
    el_gguf_writer_free(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_align32),
        cmocka_unit_test(test_roundtrip_align64),
        cmocka_unit_test(test_all_value_types),
        cmocka_unit_test(test_reference_llama_spm),
        cmocka_unit_test(test_reference_gpt2),
        cmocka_unit_test(test_fuzz_seeds),
        cmocka_unit_test(test_every_prefix),
        cmocka_unit_test(test_bad_header),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_bad_tensors),
        cmocka_unit_test(test_io_errors),
        cmocka_unit_test(test_writer_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
