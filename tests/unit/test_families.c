// Unit tests for the model families: the neox rope kernel against its formula,
// the Llama 3.1 rope divisors against hand-computed values, and whole tiny
// Qwen2 / Llama 3 / sliding-window models against a direct scalar
// implementation of the transformer written here in double precision.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/gguf.h"
#include "edgellm/kernels.h"
#include "edgellm/model.h"
#include "testutil.h"

static void test_rope_neox_formula(void **st) {
    (void)st;
    enum { H = 3, HD = 8, HALF = HD / 2 };
    uint64_t rng = 7;
    float x[H * HD], y[H * HD], inv[HALF];
    for (int i = 0; i < H * HD; i++) x[i] = tu_randf(&rng);
    for (int i = 0; i < HALF; i++) inv[i] = (float)pow(10000.0, -2.0 * i / HD);
    for (int pos = 0; pos < 40; pos += 13) {
        memcpy(y, x, sizeof x);
        el_rope_neox(y, H, HD, pos, inv);
        for (int h = 0; h < H; h++)
            for (int i = 0; i < HALF; i++) {
                double a = x[h * HD + i], b = x[h * HD + i + HALF], ang = pos * (double)inv[i];
                assert_float_equal(y[h * HD + i], a * cos(ang) - b * sin(ang), 1e-5);
                assert_float_equal(y[h * HD + i + HALF], a * sin(ang) + b * cos(ang), 1e-5);
            }
        // The two layouts are the same rotation of permuted elements: element i
        // of the neox half-split is element 2i of the interleaved layout and
        // element i + HALF is 2i + 1 (what import's q/k row permutation relies on).
        float p[H * HD];
        for (int h = 0; h < H; h++)
            for (int i = 0; i < HALF; i++) p[h * HD + 2 * i] = x[h * HD + i], p[h * HD + 2 * i + 1] = x[h * HD + i + HALF];
        el_rope(p, H, HD, pos, inv);
        for (int h = 0; h < H; h++)
            for (int i = 0; i < HALF; i++) {
                assert_float_equal(p[h * HD + 2 * i], y[h * HD + i], 1e-6);
                assert_float_equal(p[h * HD + 2 * i + 1], y[h * HD + i + HALF], 1e-6);
            }
    }
}

static void test_llama3_divisors(void **st) {
    (void)st;
    float d[2];
    // head_dim 4, theta 1e4: frequencies 1 and 0.01, wavelengths 2π and 628.3.
    // Original context 1000, low 1, high 4: wavelengths below 250 keep their
    // frequency, above 1000 are divided by 8; 628.3 blends with
    // smooth = (1000/628.3 - 1)/3 = 0.19718, divisor 1/((1-smooth)/8 + smooth).
    el_rope_llama3_divisors(d, 4, 10000.0f, 8.0f, 1.0f, 4.0f, 1000);
    assert_float_equal(d[0], 1.0f, 0);
    assert_float_equal(d[1], 3.3609463f, 1e-5);
    el_rope_llama3_divisors(d, 4, 10000.0f, 8.0f, 1.0f, 4.0f, 100);  // 628.3 > 100: low frequency
    assert_float_equal(d[0], 1.0f, 0);
    assert_float_equal(d[1], 8.0f, 0);
}

// ---------------------------------------------------------------- tiny models

enum { DIM = 8, HEADS = 2, KVH = 1, HDIM = DIM / HEADS, KV = KVH * HDIM, FF = 12, VOCAB = 11, NTOK = 5 };

typedef struct {
    float embd[VOCAB * DIM], out[VOCAB * DIM], onorm[DIM];
    float anorm[DIM], fnorm[DIM];
    float wq[DIM * DIM], wk[KV * DIM], wv[KV * DIM], wo[DIM * DIM];
    float bq[DIM], bk[KV], bv[KV];
    float wg[FF * DIM], wu[FF * DIM], wd[DIM * FF];
    float freqs[HDIM / 2];
} tiny;

static void fill(float *p, int n, uint64_t *rng, float scale, float offset) {
    for (int i = 0; i < n; i++) p[i] = offset + scale * tu_randf(rng);
}

static void tiny_init(tiny *t) {
    uint64_t rng = 99;
    fill(t->embd, VOCAB * DIM, &rng, 1, 0);
    fill(t->out, VOCAB * DIM, &rng, 0.4f, 0);
    fill(t->onorm, DIM, &rng, 0.2f, 1);
    fill(t->anorm, DIM, &rng, 0.2f, 1);
    fill(t->fnorm, DIM, &rng, 0.2f, 1);
    fill(t->wq, DIM * DIM, &rng, 0.6f, 0);
    fill(t->wk, KV * DIM, &rng, 0.6f, 0);
    fill(t->wv, KV * DIM, &rng, 0.6f, 0);
    fill(t->wo, DIM * DIM, &rng, 0.4f, 0);
    fill(t->bq, DIM, &rng, 0.5f, 0);
    fill(t->bk, KV, &rng, 0.5f, 0);
    fill(t->bv, KV, &rng, 0.5f, 0);
    fill(t->wg, FF * DIM, &rng, 0.4f, 0);
    fill(t->wu, FF * DIM, &rng, 0.4f, 0);
    fill(t->wd, DIM * FF, &rng, 0.3f, 0);
    t->freqs[0] = 1.0f, t->freqs[1] = 5.0f;
}

typedef struct {
    int qwen2;   // arch qwen2: neox rope + biases
    int window;  // llama.attention.sliding_window (0: none)
    int freqs;   // rope_freqs.weight
} variant;

static const char *write_tiny(const tiny *t, variant v) {
    const char *arch = v.qwen2 ? "qwen2" : "llama";
    el_gguf_writer *w = el_gguf_writer_new();
    char k[96];
#define KEY(s) (snprintf(k, sizeof k, "%s." s, arch), k)
    el_gguf_add_str(w, "general.architecture", arch);
    el_gguf_add_u32(w, KEY("context_length"), 64);
    el_gguf_add_u32(w, KEY("embedding_length"), DIM);
    el_gguf_add_u32(w, KEY("block_count"), 1);
    el_gguf_add_u32(w, KEY("feed_forward_length"), FF);
    el_gguf_add_u32(w, KEY("attention.head_count"), HEADS);
    el_gguf_add_u32(w, KEY("attention.head_count_kv"), KVH);
    el_gguf_add_f32(w, KEY("attention.layer_norm_rms_epsilon"), 1e-5f);
    el_gguf_add_f32(w, KEY("rope.freq_base"), 100.0f);
    if (v.window) el_gguf_add_u32(w, KEY("attention.sliding_window"), (uint32_t)v.window);
#undef KEY
    int64_t ne[2];
#define T(name, ptr, a0, a1) (ne[0] = (a0), ne[1] = (a1), el_gguf_add_tensor(w, name, EL_DTYPE_F32, (a1) ? 2 : 1, ne, ptr))
    T("token_embd.weight", t->embd, DIM, VOCAB);
    T("output.weight", t->out, DIM, VOCAB);
    T("output_norm.weight", t->onorm, DIM, 0);
    T("blk.0.attn_norm.weight", t->anorm, DIM, 0);
    T("blk.0.ffn_norm.weight", t->fnorm, DIM, 0);
    T("blk.0.attn_q.weight", t->wq, DIM, DIM);
    T("blk.0.attn_k.weight", t->wk, DIM, KV);
    T("blk.0.attn_v.weight", t->wv, DIM, KV);
    T("blk.0.attn_output.weight", t->wo, DIM, DIM);
    T("blk.0.ffn_gate.weight", t->wg, DIM, FF);
    T("blk.0.ffn_up.weight", t->wu, DIM, FF);
    T("blk.0.ffn_down.weight", t->wd, FF, DIM);
    if (v.qwen2) {
        T("blk.0.attn_q.bias", t->bq, DIM, 0);
        T("blk.0.attn_k.bias", t->bk, KV, 0);
        T("blk.0.attn_v.bias", t->bv, KV, 0);
    }
    if (v.freqs) T("rope_freqs.weight", t->freqs, HDIM / 2, 0);
#undef T
    const char *path = tu_tmp_path("tiny_family.gguf");
    el_error err;
    assert_int_equal(el_gguf_write(w, path, NULL, NULL, NULL, &err), EL_OK);
    el_gguf_writer_free(w);
    return path;
}

static void matvec(double *y, const float *W, const double *x, int rows, int cols) {
    for (int r = 0; r < rows; r++) {
        double s = 0;
        for (int c = 0; c < cols; c++) s += (double)W[r * cols + c] * x[c];
        y[r] = s;
    }
}

static void rmsnorm(double *y, const double *x, const float *w, int n) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    double r = 1 / sqrt(ss / n + 1e-5);
    for (int i = 0; i < n; i++) y[i] = x[i] * r * w[i];
}

// Rotates one head: pair (a, b) is (2i, 2i+1) in the normal layout, (i, i+half) in neox.
static void rope_head(double *v, int pos, int neox, const float *div) {
    for (int i = 0; i < HDIM / 2; i++) {
        double ang = pos * pow(100.0, -2.0 * i / HDIM) / (div ? div[i] : 1.0);
        int ia = neox ? i : 2 * i, ib = neox ? i + HDIM / 2 : 2 * i + 1;
        double a = v[ia], b = v[ib];
        v[ia] = a * cos(ang) - b * sin(ang);
        v[ib] = a * sin(ang) + b * cos(ang);
    }
}

// The whole model, token by token, straight from the definitions.
static void reference(const tiny *t, variant v, const int *tok, double *logits) {
    double x[NTOK][DIM], K[NTOK][KV], V[NTOK][KV];
    for (int p = 0; p < NTOK; p++) {
        for (int i = 0; i < DIM; i++) x[p][i] = t->embd[tok[p] * DIM + i];
        double xn[DIM], q[DIM], att[DIM], o[DIM];
        rmsnorm(xn, x[p], t->anorm, DIM);
        matvec(q, t->wq, xn, DIM, DIM);
        matvec(K[p], t->wk, xn, KV, DIM);
        matvec(V[p], t->wv, xn, KV, DIM);
        if (v.qwen2) {
            for (int i = 0; i < DIM; i++) q[i] += t->bq[i];
            for (int i = 0; i < KV; i++) K[p][i] += t->bk[i], V[p][i] += t->bv[i];
        }
        for (int h = 0; h < HEADS; h++) rope_head(q + h * HDIM, p, v.qwen2, v.freqs ? t->freqs : NULL);
        rope_head(K[p], p, v.qwen2, v.freqs ? t->freqs : NULL);
        int first = v.window && p + 1 > v.window ? p + 1 - v.window : 0;
        for (int h = 0; h < HEADS; h++) {
            double sc[NTOK], mx = -1e300, sum = 0;
            for (int j = first; j <= p; j++) {
                sc[j] = 0;
                for (int i = 0; i < HDIM; i++) sc[j] += q[h * HDIM + i] * K[j][i];  // one kv head
                sc[j] /= sqrt((double)HDIM);
                if (sc[j] > mx) mx = sc[j];
            }
            for (int j = first; j <= p; j++) sum += sc[j] = exp(sc[j] - mx);
            for (int i = 0; i < HDIM; i++) {
                att[h * HDIM + i] = 0;
                for (int j = first; j <= p; j++) att[h * HDIM + i] += sc[j] / sum * V[j][i];
            }
        }
        matvec(o, t->wo, att, DIM, DIM);
        for (int i = 0; i < DIM; i++) x[p][i] += o[i];
        double g[FF], u[FF], d[DIM];
        rmsnorm(xn, x[p], t->fnorm, DIM);
        matvec(g, t->wg, xn, FF, DIM);
        matvec(u, t->wu, xn, FF, DIM);
        for (int i = 0; i < FF; i++) g[i] = g[i] / (1 + exp(-g[i])) * u[i];
        matvec(d, t->wd, g, DIM, FF);
        for (int i = 0; i < DIM; i++) x[p][i] += d[i];
        rmsnorm(xn, x[p], t->onorm, DIM);
        matvec(logits + p * VOCAB, t->out, xn, VOCAB, DIM);
    }
}

static void check_variant(variant v) {
    tiny *t = malloc(sizeof *t);
    tiny_init(t);
    const char *path = write_tiny(t, v);
    el_error err;
    el_model *m;
    if (el_model_open(path, NULL, &m, &err)) fail_msg("%s", err.msg);
    assert_int_equal(m->hp.family, v.qwen2 ? EL_FAMILY_QWEN2 : EL_FAMILY_LLAMA);
    assert_int_equal(m->hp.rope_type, v.qwen2 ? EL_ROPE_NEOX : EL_ROPE_NORMAL);
    assert_int_equal(m->hp.has_qkv_bias, v.qwen2);
    assert_int_equal(m->hp.sliding_window, v.window);
    assert_int_equal(m->hp.rope_scaling, v.freqs ? EL_ROPE_SCALING_FREQS : EL_ROPE_SCALING_NONE);
    const int tok[NTOK] = {3, 7, 1, 10, 3};
    double want[NTOK * VOCAB];
    reference(t, v, tok, want);
    for (int batch = 1; batch <= NTOK; batch += NTOK - 1) {  // decode path and prefill path
        el_session *s;
        el_session_opts so = {.max_batch = batch};
        assert_int_equal(el_session_new(m, &so, NULL, &s, &err), EL_OK);
        float got[NTOK * VOCAB];
        assert_int_equal(el_session_forward(s, tok, NTOK, 0, got, 1, &err), EL_OK);
        for (int i = 0; i < NTOK * VOCAB; i++) assert_float_equal(got[i], want[i], 1e-4);
        el_session_free(s);
    }
    el_model_close(m);
    free(t);
}

static void test_qwen2_matches_reference(void **st) { (void)st; check_variant((variant){.qwen2 = 1}); }
static void test_llama_matches_reference(void **st) { (void)st; check_variant((variant){0}); }
static void test_llama3_freqs_match_reference(void **st) { (void)st; check_variant((variant){.freqs = 1}); }
static void test_sliding_window_matches_reference(void **st) { (void)st; check_variant((variant){.window = 2}); }

// The variants change the identity peers compare, and the family reads back.
static void test_identity_and_desc(void **st) {
    (void)st;
    tiny *t = malloc(sizeof *t);
    tiny_init(t);
    uint64_t ids[3];
    char desc[3][160];
    variant vs[3] = {{0}, {.qwen2 = 1}, {.window = 2}};
    for (int i = 0; i < 3; i++) {
        el_error err;
        el_model *m;
        assert_int_equal(el_model_open(write_tiny(t, vs[i]), NULL, &m, &err), EL_OK);
        ids[i] = el_model_identity(m, 0, 1);
        el_model_family_desc(m, desc[i], sizeof desc[i]);
        el_model_close(m);
    }
    assert_true(ids[0] != ids[1] && ids[0] != ids[2] && ids[1] != ids[2]);
    assert_string_equal(desc[0], "Llama (normal rope)");
    assert_string_equal(desc[1], "Qwen2 (neox rope, q/k/v biases)");
    assert_string_equal(desc[2], "Mistral (normal rope, sliding window 2)");
    free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rope_neox_formula),       cmocka_unit_test(test_llama3_divisors),
        cmocka_unit_test(test_qwen2_matches_reference), cmocka_unit_test(test_llama_matches_reference),
        cmocka_unit_test(test_llama3_freqs_match_reference), cmocka_unit_test(test_sliding_window_matches_reference),
        cmocka_unit_test(test_identity_and_desc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
