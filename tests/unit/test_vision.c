// Unit tests for the vision path: the encoder's kernels (GELU, layer norm,
// the dense AVX-512 products and full attention) against double-precision
// references; image files, good and hostile; preprocessing identities;
// projector files, good and broken; prompts cut at image markers.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STBI_WRITE_NO_STDIO
#include <stb/stb_image_write.h>  // implemented in stb_write.c

#include "edgellm/gguf.h"
#include "edgellm/kernels.h"
#include "edgellm/tokenize.h"
#include "edgellm/vision.h"
#include "kernels/ops_simd.h"
#include "testutil.h"

static int have_avx512(void) { return el_cpu_isa() == EL_ISA_AVX512; }
#if !defined(__x86_64__)
#define el_gelu_avx512 el_gelu_scalar  // no AVX-512 kernels in other builds (have_avx512() is 0 there)
#endif

// ---------------------------------------------------------------- kernels

static void test_gelu(void **st) {
    (void)st;
    uint64_t rng = 3;
    enum { N = 1037 };
    float x[N], a[N + 1], b[N + 1];
    for (int i = 0; i < N; i++) x[i] = tu_randf(&rng) * (i % 9 == 0 ? 40.0f : 5.0f);
    for (int quick = 0; quick < 2; quick++) {
        memcpy(a, x, sizeof x);
        memcpy(b, x, sizeof x);
        a[N] = b[N] = 777.0f;
        el_gelu_scalar(a, N, quick);
        if (have_avx512()) el_gelu_avx512(b, N, quick);
        else el_gelu_scalar(b, N, quick);
        assert_true(a[N] == 777.0f && b[N] == 777.0f);  // nothing past n is written
        for (int i = 0; i < N; i++) {
            double v = x[i];
            double want = quick ? v / (1 + exp(-1.702 * v))
                                : 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
            assert_true(fabs(a[i] - want) <= 1e-6 * (1 + fabs(want)));
            assert_true(fabs(b[i] - want) <= 1e-6 * (1 + fabs(want)));
        }
    }
}

static void test_layernorm(void **st) {
    (void)st;
    uint64_t rng = 4;
    int sizes[] = {1, 7, 64, 1031};
    for (int si = 0; si < 4; si++) {
        int n = sizes[si];
        float *x = malloc(n * sizeof(float)), *w = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
        float *y = malloc(n * sizeof(float));
        for (int i = 0; i < n; i++) x[i] = 3 + tu_randf(&rng) * 2, w[i] = 1 + tu_randf(&rng) * 0.3f, b[i] = tu_randf(&rng);
        el_layernorm(y, x, w, b, n, 1e-5f);
        double mu = 0, var = 0;
        for (int i = 0; i < n; i++) mu += x[i];
        mu /= n;
        for (int i = 0; i < n; i++) var += (x[i] - mu) * (x[i] - mu);
        var /= n;
        for (int i = 0; i < n; i++) {
            double want = (x[i] - mu) / sqrt(var + 1e-5) * w[i] + b[i];
            assert_true(fabs(y[i] - want) < 2e-5 * (1 + fabs(want)));
        }
        el_layernorm(x, x, NULL, NULL, n, 1e-5f);  // in place, no weight and bias
        for (int i = 0; i < n; i++) assert_true(isfinite(x[i]));
        free(x), free(w), free(b), free(y);
    }
}

static void fill_tensor(el_tensor *t, int dtype, int k, int d, uint64_t *rng, float *ref) {
    memset(t, 0, sizeof *t);
    t->dtype = dtype;
    t->n_dims = 2;
    t->ne[0] = k;
    t->ne[1] = d;
    t->ne[2] = t->ne[3] = 1;
    t->nbytes = el_dtype_row_size(dtype, k) * (size_t)d;
    t->data = malloc(t->nbytes);
    for (int i = 0; i < k * d; i++) {
        float v = tu_randf(rng);
        if (dtype == EL_DTYPE_F32) ((float *)t->data)[i] = v;
        else if (dtype == EL_DTYPE_F16) ((uint16_t *)t->data)[i] = el_f32_to_f16(v), v = el_f16_to_f32(el_f32_to_f16(v));
        else ((uint16_t *)t->data)[i] = el_f32_to_bf16(v), v = el_bf16_to_f32(el_f32_to_bf16(v));
        ref[i] = v;
    }
}

// The encoders' products at every kernel level against a double-precision
// product, on activations in panels: odd sizes (a part of a tile, of a panel, of a k
// slice, of a row group), two products sharing their input, biases, every
// dense weight dtype, and q8_0 (through the row-major kernels).
static void test_dense(void **st) {
    (void)st;
    el_pool *pool = el_pool_new(3);
    uint64_t rng = 9;
    static const int shapes[][3] = {{8, 5, 3}, {33, 29, 13}, {70, 300, 200}, {41, 520, 37}, {100, 64, 250}};
    static const int dtypes[] = {EL_DTYPE_F32, EL_DTYPE_F16, EL_DTYPE_BF16, EL_DTYPE_Q8_0};
    for (int si = 0; si < 5; si++)
        for (int di = 0; di < 4; di++) {
            int n = shapes[si][0], k = shapes[si][1], d = shapes[si][2], d2 = d + 11;
            if (dtypes[di] == EL_DTYPE_Q8_0 && k % 32) continue;
            size_t ld = ((size_t)n + 31) / 32 * 32;  // tokens in whole panels
            float *xt = malloc((size_t)k * ld * sizeof(float)), *r1 = malloc((size_t)k * d * sizeof(float));
            float *r2 = malloc((size_t)k * d2 * sizeof(float)), *b1 = malloc(d * sizeof(float));
            for (size_t i = 0; i < (size_t)k * ld; i++) xt[i] = tu_randf(&rng);
            for (int i = 0; i < d; i++) b1[i] = tu_randf(&rng);
            el_tensor W1, W2;
            if (dtypes[di] == EL_DTYPE_Q8_0) {  // quantized from f32: the reference is its dequantized values
                fill_tensor(&W1, EL_DTYPE_F32, k, d, &rng, r1);
                fill_tensor(&W2, EL_DTYPE_F32, k, d2, &rng, r2);
                el_tensor *ts[2] = {&W1, &W2};
                float *rs[2] = {r1, r2};
                for (int i = 0; i < 2; i++) {
                    size_t bytes = el_dtype_row_size(EL_DTYPE_Q8_0, k) * (size_t)ts[i]->ne[1];
                    void *q = malloc(bytes);
                    el_dtype_info(EL_DTYPE_Q8_0)->from_f32(ts[i]->data, q, (int64_t)k * ts[i]->ne[1]);
                    el_dtype_info(EL_DTYPE_Q8_0)->to_f32(q, rs[i], (int64_t)k * ts[i]->ne[1]);
                    free(ts[i]->data);
                    ts[i]->data = q, ts[i]->dtype = EL_DTYPE_Q8_0, ts[i]->nbytes = bytes;
                }
            } else {
                fill_tensor(&W1, dtypes[di], k, d, &rng, r1);
                fill_tensor(&W2, dtypes[di], k, d2, &rng, r2);
            }
            // activations quantized to 8 bits with q8_0 weights: a looser bound
            double tol = dtypes[di] == EL_DTYPE_Q8_0 ? 2e-2 : 1e-5;
            const el_tensor *Ws[2] = {&W1, &W2};
            float *work = malloc(el_matmul_p_work(n, 2, Ws) * sizeof(float));
            for (int isa = EL_ISA_SCALAR; isa <= EL_ISA_AVX512; isa++) {
                float *o1 = malloc((size_t)d * ld * sizeof(float)), *o2 = malloc((size_t)d2 * ld * sizeof(float));
                el_matmul_p_many_isa(pool, 2, (float *[]){o1, o2}, xt, Ws, (const float *[]){b1, NULL}, n, work,
                                     (el_isa)isa);
                for (int t = 0; t < n; t++) {
                    for (int r = 0; r < d; r++) {
                        double want = b1[r], mag = 0;
                        for (int j = 0; j < k; j++) {
                            double xv = xt[el_panel_index(t, j, k)];
                            want += xv * r1[(size_t)r * k + j], mag += fabs(xv);
                        }
                        assert_true(fabs(o1[el_panel_index(t, r, d)] - want) <= 2e-5 * sqrt(k) + tol * mag);
                    }
                    for (int r = 0; r < d2; r++) {
                        double want = 0, mag = 0;
                        for (int j = 0; j < k; j++) {
                            double xv = xt[el_panel_index(t, j, k)];
                            want += xv * r2[(size_t)r * k + j], mag += fabs(xv);
                        }
                        assert_true(fabs(o2[el_panel_index(t, r, d2)] - want) <= 2e-5 * sqrt(k) + tol * mag);
                    }
                }
                free(o1), free(o2);
            }
            free(W1.data), free(W2.data), free(xt), free(r1), free(r2), free(b1), free(work);
        }
    el_pool_free(pool);
}

// Full attention over the middle head of three, in panels, against a
// double-precision softmax(QKᵀ)V.
static void test_attention(void **st) {
    (void)st;
    uint64_t rng = 11;
    static const int shapes[][2] = {{1, 8}, {17, 16}, {33, 64}, {70, 72}, {130, 40}};
    for (int si = 0; si < 5; si++) {
        int n = shapes[si][0], hd = shapes[si][1], F = 3 * hd;
        size_t size = ((size_t)n + 31) / 32 * 32 * F;
        float *q = malloc(size * sizeof(float)), *k = malloc(size * sizeof(float)), *v = malloc(size * sizeof(float));
        for (size_t i = 0; i < size; i++) q[i] = tu_randf(&rng), k[i] = tu_randf(&rng), v[i] = tu_randf(&rng);
        float *work = malloc(el_attn_p_work(n, hd) * sizeof(float));
        for (int isa = EL_ISA_SCALAR; isa <= EL_ISA_AVX512; isa += 2) {
            float *out = malloc(size * sizeof(float));
            for (size_t i = 0; i < size; i++) out[i] = 999.0f;
            el_attn_p_isa(out, q, k, v, F, hd, n, hd, 0.3f, work, (el_isa)isa);
            double *p = malloc((size_t)n * sizeof(double));
            for (int t = 0; t < n; t++) {
                double mx = -1e300, sum = 0;
                for (int s = 0; s < n; s++) {
                    double a = 0;
                    for (int j = 0; j < hd; j++) a += (double)q[el_panel_index(t, hd + j, F)] * k[el_panel_index(s, hd + j, F)];
                    p[s] = 0.3 * a;
                    mx = p[s] > mx ? p[s] : mx;
                }
                for (int s = 0; s < n; s++) sum += p[s] = exp(p[s] - mx);
                for (int j = 0; j < hd; j++) {
                    double want = 0;
                    for (int s = 0; s < n; s++) want += p[s] / sum * v[el_panel_index(s, hd + j, F)];
                    assert_true(fabs(out[el_panel_index(t, hd + j, F)] - want) < 2e-5);
                }
                // the other heads untouched
                assert_true(out[el_panel_index(t, hd - 1, F)] == 999.0f && out[el_panel_index(t, 2 * hd, F)] == 999.0f);
            }
            free(p), free(out);
        }
        free(q), free(k), free(v), free(work);
    }
}

// Layer norm over panels at both levels against a double formula.
static void test_layernorm_p(void **st) {
    (void)st;
    uint64_t rng = 13;
    int F = 37, n = 64;
    float *x = malloc((size_t)F * n * sizeof(float)), *w = malloc(F * sizeof(float)), *b = malloc(F * sizeof(float));
    float *y = malloc((size_t)F * n * sizeof(float));
    for (int i = 0; i < F * n; i++) x[i] = 2 + tu_randf(&rng);
    for (int r = 0; r < F; r++) w[r] = 1 + tu_randf(&rng) * 0.3f, b[r] = tu_randf(&rng);
    for (int isa = EL_ISA_SCALAR; isa <= EL_ISA_AVX512; isa += 2) {
        el_layernorm_p_isa(y, x, F, w, b, 0, n / 32, 1e-5f, (el_isa)isa);
        for (int t = 0; t < n; t++) {
            double mu = 0, var = 0;
            for (int r = 0; r < F; r++) mu += x[el_panel_index(t, r, F)];
            mu /= F;
            for (int r = 0; r < F; r++) var += (x[el_panel_index(t, r, F)] - mu) * (x[el_panel_index(t, r, F)] - mu);
            var /= F;
            for (int r = 0; r < F; r++)
                assert_true(fabs(y[el_panel_index(t, r, F)] -
                                 ((x[el_panel_index(t, r, F)] - mu) / sqrt(var + 1e-5) * w[r] + b[r])) < 2e-5);
        }
    }
    free(x), free(w), free(b), free(y);
}

// ---------------------------------------------------------------- images

typedef struct {
    uint8_t *data;
    size_t len;
} buf;

static void write_to(void *ctx, void *data, int size) {
    buf *b = ctx;
    uint8_t *p = realloc(b->data, b->len + (size_t)size);
    assert_non_null(p);
    memcpy(p + b->len, data, (size_t)size);
    b->data = p;
    b->len += (size_t)size;
}

static void expect_refusal(const void *data, size_t n, const char *want) {
    el_image img;
    el_error err;
    assert_int_not_equal(el_image_decode(data, n, "pic", &img, &err), EL_OK);
    assert_null(img.rgb);
    if (!strstr(err.msg, want)) printf("  message: %s\n", err.msg);
    assert_non_null(strstr(err.msg, want));
    assert_true(!strncmp(err.msg, "pic: ", 5) && !strchr(err.msg, '\n'));
}

static void test_images(void **st) {
    (void)st;
    enum { W = 21, H = 13 };
    uint8_t rgb[W * H * 3];
    uint64_t rng = 5;
    for (int i = 0; i < W * H * 3; i++) rgb[i] = (uint8_t)(tu_rand(&rng) & 255);
    buf png = {0}, jpg = {0};
    assert_true(stbi_write_png_to_func(write_to, &png, W, H, 3, rgb, W * 3));
    assert_true(stbi_write_jpg_to_func(write_to, &jpg, W, H, 3, rgb, 95));
    el_image img;
    el_error err;
    assert_int_equal(el_image_decode(png.data, png.len, "pic", &img, &err), EL_OK);
    assert_int_equal(img.w, W);
    assert_int_equal(img.h, H);
    assert_memory_equal(img.rgb, rgb, sizeof rgb);  // PNG is lossless
    el_image_free(&img);
    assert_int_equal(el_image_decode(jpg.data, jpg.len, "pic", &img, &err), EL_OK);
    int worst = 0;
    for (int i = 0; i < W * H * 3; i++) worst = abs(img.rgb[i] - rgb[i]) > worst ? abs(img.rgb[i] - rgb[i]) : worst;
    assert_true(img.w == W && img.h == H && worst < 160);  // noise through JPEG: decoded, not equal
    el_image_free(&img);

    expect_refusal("hello, world", 12, "not a PNG or JPEG image");
    expect_refusal(png.data, png.len - 20, "truncated PNG");
    expect_refusal(jpg.data, jpg.len / 2, "truncated JPEG");
    uint8_t *bad = malloc(png.len);
    memcpy(bad, png.data, png.len);
    bad[50] ^= 0x55;  // inside IDAT: the chunk's CRC no longer matches
    expect_refusal(bad, png.len, "fails its CRC");
    // a decompression bomb: a valid 30000 x 30000 header and a few bytes of data
    memcpy(bad, png.data, png.len);
    bad[16] = bad[20] = 0, bad[17] = bad[21] = 0, bad[18] = bad[22] = 0x75, bad[19] = bad[23] = 0x30;
    uint32_t crc = 0xFFFFFFFFu;
    for (int i = 12; i < 29; i++) {
        crc ^= bad[i];
        for (int b = 0; b < 8; b++) crc = crc & 1 ? 0xEDB88320u ^ (crc >> 1) : crc >> 1;
    }
    crc ^= 0xFFFFFFFFu;
    bad[29] = (uint8_t)(crc >> 24), bad[30] = (uint8_t)(crc >> 16), bad[31] = (uint8_t)(crc >> 8), bad[32] = (uint8_t)crc;
    expect_refusal(bad, png.len, "30000 x 30000 pixels");
    // a JPEG Huffman table that claims more codes than its lengths allow
    uint8_t *j2 = malloc(jpg.len);
    memcpy(j2, jpg.data, jpg.len);
    for (size_t i = 2; i + 4 < jpg.len; i++)
        if (j2[i] == 0xFF && j2[i + 1] == 0xC4) {
            j2[i + 5] = 3;  // three codes of length 1
            break;
        }
    expect_refusal(j2, jpg.len, "Huffman");
    free(j2), free(bad), free(png.data), free(jpg.data);
}

// An image of exactly N x N passes through unresampled; a non-square one is
// centred on the mean colour; crop keeps the middle.
static void test_preprocess(void **st) {
    (void)st;
    enum { N = 12 };
    el_vision_hparams hp = {0};
    hp.image_size = N;
    float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f}, sd[3] = {0.26862954f, 0.26130258f, 0.27577711f};
    memcpy(hp.mean, mean, sizeof mean);
    memcpy(hp.std, sd, sizeof sd);
    uint8_t rgb[N * N * 3];
    uint64_t rng = 8;
    for (int i = 0; i < N * N * 3; i++) rgb[i] = (uint8_t)(tu_rand(&rng) & 255);
    el_image img = {N, N, rgb};
    float px[3 * N * N];
    for (int fit = 0; fit < 2; fit++) {
        hp.fit = fit ? EL_VISION_CROP : EL_VISION_PAD;
        assert_int_equal(el_vision_preprocess(&hp, &img, px, NULL), EL_OK);
        for (int y = 0; y < N; y++)
            for (int x = 0; x < N; x++)
                for (int c = 0; c < 3; c++)
                    assert_true(px[(c * N + y) * N + x] == ((float)rgb[(y * N + x) * 3 + c] / 255.0f - mean[c]) / sd[c]);
    }
    // N x N/2: rows of the mean colour above and below (122, 116, 104 for CLIP's mean)
    el_image half = {N, N / 2, rgb};
    hp.fit = EL_VISION_PAD;
    assert_int_equal(el_vision_preprocess(&hp, &half, px, NULL), EL_OK);
    const int bg[3] = {122, 116, 104};
    for (int c = 0; c < 3; c++) {
        float want = ((float)bg[c] / 255.0f - mean[c]) / sd[c];
        assert_true(px[(c * N + 0) * N + 5] == want && px[(c * N + N - 1) * N + 5] == want);
        assert_true(px[(c * N + N / 4) * N + 5] == ((float)rgb[5 * 3 + c] / 255.0f - mean[c]) / sd[c]);
    }
    // crop: the middle N x N of a 2N x N image
    uint8_t wide[2 * N * N * 3];
    for (int y = 0; y < N; y++)
        for (int x = 0; x < 2 * N; x++)
            for (int c = 0; c < 3; c++) wide[(y * 2 * N + x) * 3 + c] = (uint8_t)(x * 10 + c);
    el_image wimg = {2 * N, N, wide};
    hp.fit = EL_VISION_CROP;
    assert_int_equal(el_vision_preprocess(&hp, &wimg, px, NULL), EL_OK);
    // resampled 2N -> 2N: unchanged; the window starts at column N/2
    for (int c = 0; c < 3; c++) assert_true(px[(c * N + 3) * N + 0] == ((float)((N / 2) * 10 + c) / 255.0f - mean[c]) / sd[c]);
}

// ---------------------------------------------------------------- projector files

typedef struct {
    int hidden, ff, blocks, image, patch, out_dim;
    int swapped, siglip;
    const char *proj_type, *drop, *bad_shape;
    int feature_layer;
} proj_spec;

// A projector with random weights; a tensor's values depend on its role, not
// its name, so the two MLP namings hold the same numbers.
static const char *write_proj(const proj_spec *ps, const char *file) {
    el_gguf_writer *w = el_gguf_writer_new();
    el_gguf_add_str(w, "general.architecture", "clip");
    el_gguf_add_bool(w, "clip.has_vision_encoder", 1);
    el_gguf_add_bool(w, "clip.has_llava_projector", 1);
    el_gguf_add_str(w, "clip.projector_type", ps->proj_type ? ps->proj_type : "mlp");
    el_gguf_add_bool(w, "clip.use_gelu", ps->siglip);
    el_gguf_add_u32(w, "clip.vision.image_size", (uint32_t)ps->image);
    el_gguf_add_u32(w, "clip.vision.patch_size", (uint32_t)ps->patch);
    el_gguf_add_u32(w, "clip.vision.embedding_length", (uint32_t)ps->hidden);
    el_gguf_add_u32(w, "clip.vision.feed_forward_length", (uint32_t)ps->ff);
    el_gguf_add_u32(w, "clip.vision.attention.head_count", 2);
    el_gguf_add_f32(w, "clip.vision.attention.layer_norm_epsilon", 1e-5f);
    el_gguf_add_u32(w, "clip.vision.block_count", (uint32_t)ps->blocks);
    float mean[3] = {0.5f, 0.5f, 0.5f};
    el_gguf_add_arr(w, "clip.vision.image_mean", EL_GGUF_FLOAT32, mean, 3);
    el_gguf_add_arr(w, "clip.vision.image_std", EL_GGUF_FLOAT32, mean, 3);
    if (ps->feature_layer) {
        int32_t f = ps->feature_layer;
        el_gguf_add_arr(w, "clip.vision.feature_layer", EL_GGUF_INT32, &f, 1);
    }
    int64_t H = ps->hidden, F = ps->ff, P = ps->patch, side = ps->image / ps->patch;
    float *bufs[256];
    int nb = 0;
#define ADD(role, name, nd, ...)                                                                 \
    do {                                                                                         \
        int64_t ne_[4] = {__VA_ARGS__};                                                          \
        if (ps->bad_shape && !strcmp(name, ps->bad_shape)) ne_[0] += 1;                          \
        size_t cnt_ = 1;                                                                         \
        for (int i_ = 0; i_ < (nd); i_++) cnt_ *= (size_t)ne_[i_];                               \
        float *d_ = malloc(cnt_ * sizeof(float));                                                \
        uint64_t r_ = el_fnv1a(EL_FNV_INIT, role, strlen(role)) | 1;                              \
        for (size_t i_ = 0; i_ < cnt_; i_++) d_[i_] = tu_randf(&r_) * 0.3f;                       \
        bufs[nb++] = d_;                                                                         \
        if (!ps->drop || strcmp(name, ps->drop)) el_gguf_add_tensor(w, name, EL_DTYPE_F32, nd, ne_, d_); \
    } while (0)
    ADD("patch", "v.patch_embd.weight", 4, P, P, 3, H);
    if (!ps->siglip) ADD("class", "v.class_embd", 1, H);
    ADD("pos", "v.position_embd.weight", 2, H, side * side + !ps->siglip);
    for (int l = 0; l < ps->blocks; l++) {
        char n[64], r[64];
        static const char *vecs[] = {"ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias", "attn_q.bias", "attn_k.bias",
                                     "attn_v.bias", "attn_out.bias"};
        static const char *mats[] = {"attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_out.weight"};
        for (int i = 0; i < 8; i++) {
            snprintf(n, sizeof n, "v.blk.%d.%s", l, vecs[i]);
            ADD(n, n, 1, H);
        }
        for (int i = 0; i < 4; i++) {
            snprintf(n, sizeof n, "v.blk.%d.%s", l, mats[i]);
            ADD(n, n, 2, H, H);
        }
        const char *fc1 = ps->swapped ? "ffn_down" : "ffn_up", *fc2 = ps->swapped ? "ffn_up" : "ffn_down";
        snprintf(n, sizeof n, "v.blk.%d.%s.weight", l, fc1), snprintf(r, sizeof r, "%d.fc1.w", l);
        ADD(r, n, 2, H, F);
        snprintf(n, sizeof n, "v.blk.%d.%s.bias", l, fc1), snprintf(r, sizeof r, "%d.fc1.b", l);
        ADD(r, n, 1, F);
        snprintf(n, sizeof n, "v.blk.%d.%s.weight", l, fc2), snprintf(r, sizeof r, "%d.fc2.w", l);
        ADD(r, n, 2, F, H);
        snprintf(n, sizeof n, "v.blk.%d.%s.bias", l, fc2), snprintf(r, sizeof r, "%d.fc2.b", l);
        ADD(r, n, 1, H);
    }
    if (ps->siglip) {
        ADD("post.w", "v.post_ln.weight", 1, H);
        ADD("post.b", "v.post_ln.bias", 1, H);
    }
    ADD("mm0w", "mm.0.weight", 2, H, 24);
    ADD("mm0b", "mm.0.bias", 1, 24);
    ADD("mm2w", "mm.2.weight", 2, 24, ps->out_dim);
    ADD("mm2b", "mm.2.bias", 1, ps->out_dim);
#undef ADD
    const char *path = tu_tmp_path(file);
    el_error err;
    assert_int_equal(el_gguf_write(w, path, NULL, NULL, NULL, &err), EL_OK);
    el_gguf_writer_free(w);
    for (int i = 0; i < nb; i++) free(bufs[i]);
    return path;
}

static void expect_open_error(const proj_spec *ps, const char *want) {
    char path[512];
    snprintf(path, sizeof path, "%s", write_proj(ps, "bad.gguf"));
    el_vision *v = NULL;
    el_error err;
    assert_int_not_equal(el_vision_open(path, &v, &err), EL_OK);
    assert_null(v);
    if (!strstr(err.msg, want)) printf("  message: %s\n", err.msg);
    assert_non_null(strstr(err.msg, want));
    assert_non_null(strstr(err.msg, path));
}

static void encode_flat(const char *path, float *out, el_vision_hparams *hp_out) {
    el_vision *v;
    el_error err;
    assert_int_equal(el_vision_open(path, &v, &err), EL_OK);
    const el_vision_hparams *h = el_vision_hp(v);
    *hp_out = *h;
    float *px = malloc((size_t)3 * h->image_size * h->image_size * sizeof(float));
    for (int i = 0; i < 3 * h->image_size * h->image_size; i++) px[i] = (float)(i % 7) * 0.1f - 0.3f;
    assert_int_equal(el_vision_encode(v, NULL, px, out, &err), EL_OK);
    free(px);
    el_vision_close(v);
}

static void test_projector_files(void **st) {
    (void)st;
    proj_spec base = {16, 40, 3, 16, 4, 32, 0, 0, NULL, NULL, NULL, 0};
    float a[16 * 32], b[16 * 32];
    el_vision_hparams h;
    encode_flat(write_proj(&base, "new.gguf"), a, &h);
    assert_true(h.has_class && h.has_pre_ln == 0 && h.n_run == 2 && h.n_blocks == 3 && !h.ffn_swapped);
    assert_true(h.n_patches == 16 && h.n_pos == 17 && h.out_dim == 32 && h.proj_hidden == 24);
    // the older exporters' names: the same numbers, the same output
    proj_spec old = base;
    old.swapped = 1;
    encode_flat(write_proj(&old, "old.gguf"), b, &h);
    assert_true(h.ffn_swapped);
    assert_memory_equal(a, b, sizeof a);
    // feature layer 3: every block runs (so the output differs)
    proj_spec all = base;
    all.feature_layer = 3;
    encode_flat(write_proj(&all, "all.gguf"), b, &h);
    assert_int_equal(h.n_run, 3);
    assert_memory_not_equal(a, b, sizeof a);
    proj_spec sig = base;
    sig.siglip = 1;
    encode_flat(write_proj(&sig, "sig.gguf"), b, &h);
    assert_true(!h.has_class && h.n_pos == 16 && h.has_post_ln && h.gelu);
    for (int i = 0; i < 16 * 32; i++) assert_true(isfinite(b[i]));

    proj_spec e = base;
    e.drop = "v.blk.1.attn_k.weight";
    expect_open_error(&e, "missing tensor v.blk.1.attn_k.weight");
    e = base;
    e.drop = "v.blk.2.ln2.bias";  // the block that does not run is checked too
    expect_open_error(&e, "missing tensor v.blk.2.ln2.bias");
    e = base;
    e.drop = "mm.2.bias";
    expect_open_error(&e, "missing tensor mm.2.bias");
    e = base;
    e.bad_shape = "v.blk.0.attn_out.weight";
    expect_open_error(&e, "tensor v.blk.0.attn_out.weight has shape [17, 16], expected [16, 16]");
    e = base;
    e.bad_shape = "v.position_embd.weight";
    expect_open_error(&e, "v.position_embd.weight has shape");
    e = base;
    e.proj_type = "ldp";
    expect_open_error(&e, "projector type 'ldp' is not supported");
    e = base;
    e.ff = 16;  // as wide as the ViT: the namings cannot be told apart
    expect_open_error(&e, "cannot be told apart");
    e = base;
    e.feature_layer = 7;
    expect_open_error(&e, "feature_layer 7 is outside 0..3");

    el_vision *v;
    el_error err;
    assert_int_equal(el_vision_open(write_proj(&base, "ok.gguf"), &v, &err), EL_OK);
    assert_int_equal(el_vision_check_dim(v, 32, "llm.gguf", &err), EL_OK);
    assert_int_not_equal(el_vision_check_dim(v, 64, "llm.gguf", &err), EL_OK);
    assert_non_null(strstr(err.msg, "output width 32 does not match llm.gguf's embedding width 64"));
    el_vision_close(v);
    // a language model is not a projector
    el_gguf_writer *w = el_gguf_writer_new();
    el_gguf_add_str(w, "general.architecture", "llama");
    assert_int_equal(el_gguf_write(w, tu_tmp_path("llm.gguf"), NULL, NULL, NULL, &err), EL_OK);
    el_gguf_writer_free(w);
    assert_int_not_equal(el_vision_open(tu_tmp_path("llm.gguf"), &v, &err), EL_OK);
    assert_non_null(strstr(err.msg, "not a projector file (general.architecture is 'llama'"));
}

// ---------------------------------------------------------------- prompts

static void test_prompt(void **st) {
    (void)st;
    el_tokenizer *tok;
    el_error err;
    assert_int_equal(el_tokenizer_load_llama2c(tu_model_path("tok512.bin"), 512, &tok, &err), EL_OK);
    el_mm_prompt p;
    const char *text = "Look <image> and <image>.";
    assert_int_equal(el_mm_prompt_encode(tok, text, strlen(text), "<image>", EL_ENCODE_ADD_BOS, NULL, 0, 2, &p, &err), EL_OK);
    // BOS "Look", image 0, "and", image 1, "."
    assert_int_equal(p.n_items, 5);
    assert_true(p.image[0] < 0 && p.len[0] > 1 && p.ids[p.start[0]] == el_tokenizer_bos(tok));
    assert_true(p.image[1] == 0 && p.image[2] < 0 && p.image[3] == 1 && p.image[4] < 0);
    int *ids, n;
    assert_int_equal(el_tokenizer_encode(tok, " and ", 5, 0, &ids, &n, &err), EL_OK);
    assert_int_equal(p.len[2], n);
    assert_memory_equal(p.ids + p.start[2], ids, (size_t)n * sizeof(int));
    free(ids);
    assert_int_equal(el_mm_prompt_positions(&p, 10), p.n_ids + 20);
    el_mm_prompt_free(&p);
    // no marker: the images come first, after BOS
    assert_int_equal(el_mm_prompt_encode(tok, "Hi", 2, "<image>", EL_ENCODE_ADD_BOS, NULL, 0, 2, &p, &err), EL_OK);
    assert_true(p.n_items == 4 && p.image[0] < 0 && p.len[0] == 1 && p.image[1] == 0 && p.image[2] == 1 && p.image[3] < 0);
    el_mm_prompt_free(&p);
    assert_int_not_equal(el_mm_prompt_encode(tok, text, strlen(text), "<image>", 0, NULL, 0, 1, &p, &err), EL_OK);
    assert_non_null(strstr(err.msg, "2 image markers '<image>' but 1 image was given"));
    el_tokenizer_free(tok);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gelu),       cmocka_unit_test(test_layernorm),       cmocka_unit_test(test_dense),
        cmocka_unit_test(test_attention),  cmocka_unit_test(test_layernorm_p),     cmocka_unit_test(test_images),
        cmocka_unit_test(test_preprocess),
        cmocka_unit_test(test_projector_files), cmocka_unit_test(test_prompt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
