#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *tu_model_path(const char *rel) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/models/%s", EL_SHARED_DIR, rel);
    return buf;
}

const char *tu_tmp_path(const char *name) {
    static char buf[4096];
    const char *dir = getenv("EL_TMP");
    if (!dir) dir = "/tmp";
    mkdir(dir, 0755);
    snprintf(buf, sizeof buf, "%s/%d-%s", dir, (int)getpid(), name);
    return buf;
}

const char *tu_write_tmp(const char *name, const void *data, size_t n) {
    const char *p = tu_tmp_path(name);
    FILE *f = fopen(p, "wb");
    if (!f) return NULL;
    if (n) fwrite(data, 1, n, f);
    fclose(f);
    return p;
}

uint64_t tu_rand(uint64_t *s) {
    uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ULL;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

float tu_randf(uint64_t *s) { return (float)((tu_rand(s) >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f; }

// ---------------------------------------------------------------- gradient checks

float *tu_randv(uint64_t *state, size_t n, float scale) {
    float *v = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = scale * tu_randf(state);
    return v;
}

double *tu_to_d(const float *x, size_t n) {
    double *d = malloc((n ? n : 1) * sizeof(double));
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

double tu_dotd(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

double tu_check_grad(const char *what, double *params, int count, int stride, const float *analytic, tu_loss_fn f,
                     void *ctx, double tol) {
    double worst = 0, scale = 1e-6;
    double *num = calloc((size_t)count, sizeof(double));
    for (int i = 0; i < count; i += stride) {
        double keep = params[i], h = 1e-5 * fmax(1.0, fabs(keep));
        params[i] = keep + h;
        double lp = f(ctx);
        params[i] = keep - h;
        double lm = f(ctx);
        params[i] = keep;
        num[i] = (lp - lm) / (2 * h);
        scale = fmax(scale, fabs(num[i]));
    }
    for (int i = 0; i < count; i += stride) worst = fmax(worst, fabs(num[i] - analytic[i]) / scale);
    if (worst > tol) fprintf(stderr, "%s: worst relative gradient error %.3g (tolerance %.1g)\n", what, worst, tol);
    assert_true(worst <= tol);
    free(num);
    return worst;
}

// ---------------------------------------------------------------- tiny models

static float *tensor(tu_model *t, el_tensor *x, const char *name, int in, int out, float scale, float offset,
                     uint64_t *rng) {
    float *d = tu_randv(rng, (size_t)in * out, scale);
    for (int i = 0; i < in * out; i++) d[i] += offset;
    t->bufs[t->nb++] = d;
    *x = (el_tensor){.name = name, .dtype = EL_DTYPE_F32, .n_dims = out > 1 ? 2 : 1, .ne = {in, out, 1, 1}, .data = d,
                     .nbytes = sizeof(float) * (size_t)in * out};
    return d;
}

void tu_model_init(tu_model *t, const tu_variant *v) {
    memset(t, 0, sizeof *t);
    uint64_t rng = v->seed ? v->seed : 42;
    el_model *m = &t->m;
    el_hparams *h = &m->hp;
    snprintf(h->arch, sizeof h->arch, "%s", v->qwen2 ? "qwen2" : "llama");
    h->dim = v->dim, h->n_layers = v->layers, h->n_heads = v->heads, h->n_kv_heads = v->kv_heads;
    h->head_dim = v->dim / v->heads, h->ff = v->ff, h->vocab = v->vocab, h->ctx = v->ctx;
    h->rms_eps = 1e-5f, h->rope_theta = 10000.0f, h->rope_scale = 1.0f;
    h->family = v->qwen2 ? EL_FAMILY_QWEN2 : EL_FAMILY_LLAMA;
    h->rope_type = v->qwen2 ? EL_ROPE_NEOX : EL_ROPE_NORMAL;
    h->has_qkv_bias = v->qwen2;
    h->sliding_window = v->window;
    h->rope_scaling = v->scaling;
    if (v->scaling == EL_ROPE_SCALING_LINEAR) h->rope_scale = v->rope_scale;
    m->path = "tiny-model";
    m->format = EL_MODEL_GGUF;
    m->layer_begin = 0, m->layer_end = v->layers, m->has_embed = 1, m->has_head = 1;
    m->layers = calloc((size_t)v->layers, sizeof *m->layers);
    t->bufs[t->nb++] = (float *)m->layers;
    int hd = h->head_dim, qd = v->heads * hd, kvd = v->kv_heads * hd, D = v->dim, F = v->ff;
    tensor(t, &m->tok_embd, "token_embd.weight", D, v->vocab, 1, 0, &rng);
    tensor(t, &m->output_norm, "output_norm.weight", D, 1, 0.2f, 1, &rng);
    tensor(t, &m->output, "output.weight", D, v->vocab, 0.4f, 0, &rng);
    if (v->scaling == EL_ROPE_SCALING_FREQS) {
        float *d = tensor(t, &m->rope_freqs, "rope_freqs.weight", hd / 2, 1, 0, 0, &rng);
        // Llama 3.1's divisors for an original context of 8 positions: a blend at these short wavelengths
        el_rope_llama3_divisors(d, hd, h->rope_theta, 8.0f, 1.0f, 4.0f, 8);
    }
    for (int l = 0; l < v->layers; l++) {
        el_layer *L = &m->layers[l];
        tensor(t, &L->attn_norm, "attn_norm", D, 1, 0.2f, 1, &rng);
        tensor(t, &L->ffn_norm, "ffn_norm", D, 1, 0.2f, 1, &rng);
        tensor(t, &L->wq, "attn_q", D, qd, 0.5f, 0, &rng);
        tensor(t, &L->wk, "attn_k", D, kvd, 0.5f, 0, &rng);
        tensor(t, &L->wv, "attn_v", D, kvd, 0.5f, 0, &rng);
        tensor(t, &L->wo, "attn_output", qd, D, 0.3f, 0, &rng);
        tensor(t, &L->w_gate, "ffn_gate", D, F, 0.4f, 0, &rng);
        tensor(t, &L->w_up, "ffn_up", D, F, 0.4f, 0, &rng);
        tensor(t, &L->w_down, "ffn_down", F, D, 0.3f, 0, &rng);
        if (v->qwen2) {
            tensor(t, &L->bq, "attn_q.bias", qd, 1, 0.5f, 0, &rng);
            tensor(t, &L->bk, "attn_k.bias", kvd, 1, 0.5f, 0, &rng);
            tensor(t, &L->bv, "attn_v.bias", kvd, 1, 0.5f, 0, &rng);
        }
    }
}

void tu_model_free(tu_model *t) {
    for (int i = 0; i < t->nb; i++) free(t->bufs[i]);
    t->nb = 0;
}
