// Unit tests for src/model: the forward pass against llama2.c reference logits,
// stage composition, and rejection of malformed checkpoints.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/gguf.h"
#include "edgellm/llama2c.h"
#include "edgellm/model.h"
#include "testutil.h"

static const int dream_tokens[] = {1, 368, 430, 281, 269, 435, 447};
#define N_DREAM 7

static float *read_reference(size_t *n) {
    FILE *f = fopen(tu_model_path("reference/aidreams260K-logits-the-dream.f32"), "rb");
    assert_non_null(f);
    float *buf = malloc(N_DREAM * 512 * sizeof(float));
    *n = fread(buf, sizeof(float), N_DREAM * 512, f);
    fclose(f);
    return buf;
}

static void test_logits_match_reference(void **st) {
    (void)st;
    el_error err;
    el_model *m;
    assert_int_equal(el_model_open(tu_model_path("aidreams260K.bin"), NULL, &m, &err), EL_OK);
    assert_int_equal(m->hp.dim, 64);
    assert_int_equal(m->hp.ff, 172);
    assert_int_equal(m->hp.n_layers, 4);
    assert_int_equal(m->hp.vocab, 512);
    assert_int_equal(m->hp.ctx, 128);
    assert_true(m->hp.tied_output);
    size_t n;
    float *ref = read_reference(&n);
    assert_int_equal(n, N_DREAM * 512);
    for (int threads = 1; threads <= 2; threads++) {
        el_pool *pool = el_pool_new(threads);
        for (int batch = 1; batch <= 8; batch *= 2) {
            // batch 1 runs the prompt token by token (decode path), larger
            // batches run it as matrix-matrix products (prefill path)
            el_session *s;
            el_session_opts so = {.max_batch = batch};
            assert_int_equal(el_session_new(m, &so, pool, &s, &err), EL_OK);
            float *logits = malloc(N_DREAM * 512 * sizeof(float));
            assert_int_equal(el_session_forward(s, dream_tokens, N_DREAM, 0, logits, 1, &err), EL_OK);
            float maxdiff = 0;
            for (size_t i = 0; i < n; i++) maxdiff = fmaxf(maxdiff, fabsf(logits[i] - ref[i]));
            assert_true(maxdiff < 1e-4f);
            free(logits);
            el_session_free(s);
        }
        el_pool_free(pool);
    }
    free(ref);
    el_model_close(m);
}

// A model cut into stages (embed + layers 0..k, layers k..L + head), each opened
// with only its own tensors, gives the same logits as the whole model.
static void test_stages_compose(void **st) {
    (void)st;
    el_error err;
    const char *path = tu_model_path("aidreams260K.bin");
    el_model *whole;
    assert_int_equal(el_model_open(path, NULL, &whole, &err), EL_OK);
    el_session *ws;
    assert_int_equal(el_session_new(whole, NULL, NULL, &ws, &err), EL_OK);
    float want[512], got[512];
    assert_int_equal(el_session_forward(ws, dream_tokens, N_DREAM, 0, want, 0, &err), EL_OK);
    for (int k = 0; k <= 4; k++) {
        // k = 0: the first stage holds only the embedding
        el_model_opts o1 = {.layer_begin = 0, .layer_end = k, .no_layers = k == 0, .no_head = 1};
        el_model_opts o2 = {.layer_begin = k, .layer_end = 4, .no_embed = 1};
        el_model *a, *b;
        assert_int_equal(el_model_open(path, &o1, &a, &err), EL_OK);
        assert_int_equal(el_model_open(path, &o2, &b, &err), EL_OK);
        assert_int_equal(b->has_embed, 0);
        assert_int_equal(a->has_head, 0);
        assert_int_equal(a->layer_end, k);
        el_session *sa, *sb;
        el_session_opts so1 = {.layer_begin = 0, .layer_end = k, .no_layers = k == 0};
        assert_int_equal(el_session_new(a, &so1, NULL, &sa, &err), EL_OK);
        assert_int_equal(el_session_new(b, NULL, NULL, &sb, &err), EL_OK);
        float x[N_DREAM * 64];
        assert_int_equal(el_session_embed(sa, dream_tokens, N_DREAM, x, &err), EL_OK);
        assert_int_equal(el_session_layers(sa, x, N_DREAM, 0, &err), EL_OK);  // a no-op for k = 0
        assert_int_equal(el_session_layers(sb, x, N_DREAM, 0, &err), EL_OK);
        assert_int_equal(el_session_head(sb, x, N_DREAM, 1, got, &err), EL_OK);
        assert_memory_equal(want, got, sizeof want);
        // the head is not there on stage a
        assert_int_equal(el_session_head(sa, x, N_DREAM, 1, got, &err), EL_ERR_STATE);
        el_session_free(sa);
        el_session_free(sb);
        el_model_close(a);
        el_model_close(b);
    }
    el_session_free(ws);
    el_model_close(whole);
}

static void test_weight_bytes_shrink_with_range(void **st) {
    (void)st;
    el_error err;
    el_model *a, *b;
    el_model_opts o = {.layer_begin = 2, .layer_end = 4, .no_embed = 1};
    assert_int_equal(el_model_open(tu_model_path("aidreams260K.bin"), NULL, &a, &err), EL_OK);
    assert_int_equal(el_model_open(tu_model_path("aidreams260K.bin"), &o, &b, &err), EL_OK);
    // per layer: 2 norms of 64 + 4 x 64x64 + 3 x 64x172 floats
    size_t layer = (2 * 64 + 4 * 64 * 64 + 3 * 64 * 172) * 4;
    assert_int_equal(el_model_weight_bytes(a, 0, 4, 1, 1), 4 * layer + 512 * 64 * 4 + 64 * 4);
    assert_int_equal(el_model_weight_bytes(b, 0, 4, 1, 1), 2 * layer + 64 * 4 + 512 * 64 * 4);
    assert_int_equal(el_model_n_params(a), 4 * layer / 4 + 512 * 64 + 64);
    assert_true(el_model_identity(a, 2, 4) == el_model_identity(b, 2, 4));
    assert_true(el_model_identity(a, 0, 4) != el_model_identity(a, 2, 4));
    // the view a device opens only to hash a worker's layers: no copies, no scan, the same identity
    el_model *v;
    el_model_opts vo = {.layer_begin = 2, .layer_end = 4, .no_embed = 1, .no_head = 1, .no_pack = 1, .no_scan = 1};
    assert_int_equal(el_model_open(tu_model_path("aidreams260K.bin"), &vo, &v, &err), EL_OK);
    assert_true(el_model_identity(v, 2, 4) == el_model_identity(a, 2, 4));
    assert_int_equal(v->packed_bytes, 0);
    el_model_close(v);
    el_model_close(a);
    el_model_close(b);
}

// Checkpoint headers that lie must be refused with a message naming the file.
static void test_bad_checkpoints(void **st) {
    (void)st;
    el_error err;
    el_llama2c c;
    int32_t h[7] = {64, 172, 4, 4, 4, 512, 128};
    assert_int_equal(el_llama2c_parse(h, sizeof h, "x.bin", &c, &err), EL_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "x.bin: file has 28 bytes but its header"));
    int32_t zero[7] = {0, 172, 4, 4, 4, 512, 128};
    assert_int_equal(el_llama2c_parse(zero, sizeof zero, "x.bin", &c, &err), EL_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "dim = 0 is out of range"));
    int32_t huge[7] = {1 << 20, 1 << 20, 4096, 1, 1, 1 << 20, 1 << 20};
    assert_int_equal(el_llama2c_parse(huge, sizeof huge, "x.bin", &c, &err), EL_ERR_FORMAT);
    int32_t gqa[7] = {64, 172, 4, 4, 3, 512, 128};
    assert_int_equal(el_llama2c_parse(gqa, sizeof gqa, "x.bin", &c, &err), EL_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "n_kv_heads 3 does not divide n_heads 4"));
    int32_t neg[7] = {64, 172, 4, 4, 4, INT32_MIN, 128};
    assert_int_equal(el_llama2c_parse(neg, sizeof neg, "x.bin", &c, &err), EL_ERR_FORMAT);
    assert_int_equal(el_llama2c_parse(h, 10, "x.bin", &c, &err), EL_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "too small"));

    // the real file, truncated by one float
    FILE *f = fopen(tu_model_path("aidreams260K.bin"), "rb");
    assert_non_null(f);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    const char *p = tu_write_tmp("trunc.bin", buf, n - 4);
    el_model *m;
    assert_int_equal(el_model_open(p, NULL, &m, &err), EL_ERR_FORMAT);
    assert_null(m);
    assert_non_null(strstr(err.msg, "trunc.bin: file has 932120 bytes"));
    assert_int_equal(el_model_open("/nonexistent.bin", NULL, &m, &err), EL_ERR_IO);
    assert_non_null(strstr(err.msg, "/nonexistent.bin"));
    // a range beyond the model
    el_model_opts o = {.layer_begin = 2, .layer_end = 9};
    assert_int_equal(el_model_open(tu_model_path("aidreams260K.bin"), &o, &m, &err), EL_ERR_ARG);
    assert_non_null(strstr(err.msg, "layer range 2:9"));
}

static void test_session_limits(void **st) {
    (void)st;
    el_error err;
    el_model *m;
    assert_int_equal(el_model_open(tu_model_path("aidreams260K.bin"), NULL, &m, &err), EL_OK);
    el_session *s;
    el_session_opts so = {.ctx = 8, .max_batch = 4};
    assert_int_equal(el_session_new(m, &so, NULL, &s, &err), EL_OK);
    float x[8 * 64] = {0}, logits[512];
    assert_int_equal(el_session_layers(s, x, 5, 0, &err), EL_ERR_RANGE);
    assert_int_equal(el_session_layers(s, x, 2, 7, &err), EL_ERR_RANGE);
    int bad = 512;
    assert_int_equal(el_session_forward(s, &bad, 1, 0, logits, 0, &err), EL_ERR_RANGE);
    assert_non_null(strstr(err.msg, "token id 512"));
    el_session_free(s);
    el_model_close(m);
}


// Writes a 2-layer llama GGUF (dim 16, 2 heads, ff 32, vocab 8) with one
// deliberate defect chosen by `defect`; returns its path.
static const char *write_tiny_gguf(int defect) {
    static float zeros[32 * 16 + 64];
    el_gguf_writer *w = el_gguf_writer_new();
    el_gguf_add_str(w, "general.architecture", defect == 5 ? "gpt2" : "llama");
    if (defect != 4) el_gguf_add_u32(w, "llama.block_count", 2);
    el_gguf_add_u32(w, "llama.embedding_length", 16);
    el_gguf_add_u32(w, "llama.feed_forward_length", 32);
    el_gguf_add_u32(w, "llama.attention.head_count", 2);
    el_gguf_add_u32(w, "llama.context_length", 64);
    int64_t ne[2] = {16, 8};
    el_gguf_add_tensor(w, "token_embd.weight", EL_DTYPE_F32, 2, ne, zeros);
    ne[0] = 16;
    el_gguf_add_tensor(w, "output_norm.weight", EL_DTYPE_F32, 1, ne, zeros);
    for (int l = 0; l < 2; l++) {
        char n[64];
        struct { const char *part; int64_t a, b; } parts[] = {
            {"attn_norm", 16, 0}, {"attn_q", 16, 16}, {"attn_k", 16, 16}, {"attn_v", 16, 16}, {"attn_output", 16, 16},
            {"ffn_norm", 16, 0},  {"ffn_gate", 16, 32}, {"ffn_down", 32, 16}, {"ffn_up", 16, 32},
        };
        for (size_t i = 0; i < 9; i++) {
            if (defect == 3 && l == 1 && i == 5) continue;  // missing ffn_norm
            snprintf(n, sizeof n, "blk.%d.%s.weight", l, parts[i].part);
            int64_t e2[2] = {parts[i].a, parts[i].b};
            if (defect == 1 && l == 0 && i == 1) e2[1] = 8;  // wrong shape
            int dt = defect == 2 && l == 0 && i == 8 ? EL_DTYPE_I32 : EL_DTYPE_F32;
            el_gguf_add_tensor(w, n, dt, parts[i].b ? 2 : 1, e2, zeros);
        }
    }
    char name[32];
    snprintf(name, sizeof name, "tiny%d.gguf", defect);
    const char *path = tu_tmp_path(name);
    static char keep[4096];
    snprintf(keep, sizeof keep, "%s", path);
    el_error err;
    assert_int_equal(el_gguf_write(w, keep, NULL, NULL, NULL, &err), EL_OK);
    el_gguf_writer_free(w);
    return keep;
}

static void test_bad_gguf_models(void **st) {
    (void)st;
    el_error err;
    el_model *m;
    assert_int_equal(el_model_open(write_tiny_gguf(0), NULL, &m, &err), EL_OK);
    assert_int_equal(m->hp.n_kv_heads, 2);  // defaults to head_count
    assert_true(m->hp.tied_output);
    assert_true(m->hp.rope_theta == 10000.0f);
    el_model_close(m);
    struct { int defect; el_status code; const char *msg; } cases[] = {
        {1, EL_ERR_FORMAT, "tensor blk.0.attn_q.weight has shape [16, 8], expected [16, 16]"},
        {2, EL_ERR_UNSUPPORTED, "tensor blk.0.ffn_up.weight has type I32, which edgellm cannot compute with (supported: f32, f16, bf16, "
                                 "q8_0, q4_0, q4_k, q6_k)"},
        {3, EL_ERR_FORMAT, "tensor blk.1.ffn_norm.weight is missing"},
        {4, EL_ERR_FORMAT, "metadata key llama.block_count is missing"},
        {5, EL_ERR_UNSUPPORTED, "architecture 'gpt2' is not supported"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *path = write_tiny_gguf(cases[i].defect);
        assert_int_equal(el_model_open(path, NULL, &m, &err), cases[i].code);
        assert_null(m);
        assert_non_null(strstr(err.msg, cases[i].msg));
        assert_non_null(strstr(err.msg, path));
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logits_match_reference), cmocka_unit_test(test_stages_compose),
        cmocka_unit_test(test_weight_bytes_shrink_with_range), cmocka_unit_test(test_bad_checkpoints),
        cmocka_unit_test(test_session_limits), cmocka_unit_test(test_bad_gguf_models),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
