// Unit tests for src/train: the head's loss and its gradient against central
// finite differences of a double-precision reference, stages that compose
// (split fine-tuning) and accumulate, the training forward against inference
// logits on the real model, AdamW, adapters, JSON lines and datasets. (The
// layer's gradient checks, per op and per family variant, are test_layer.c.)
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/gguf.h"
#include "edgellm/kernels.h"
#include "edgellm/lora.h"
#include "edgellm/model.h"
#include "edgellm/train.h"
#include "testutil.h"

static uint64_t rng = 42;

static float *randv(size_t n, float scale) { return tu_randv(&rng, n, scale); }
#define to_d tu_to_d
#define check_grad tu_check_grad

static void ref_rmsnorm(double *y, const double *x, const double *w, int n, int d, double eps) {
    for (int i = 0; i < n; i++) {
        double ss = 0;
        for (int j = 0; j < d; j++) ss += x[i * d + j] * x[i * d + j];
        double r = 1.0 / sqrt(ss / d + eps);
        for (int j = 0; j < d; j++) y[i * d + j] = x[i * d + j] * r * w[j];
    }
}

// y[n,out] = x Wᵀ
static void ref_matmul(double *y, const double *x, const double *W, int n, int in, int out) {
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++) {
            double acc = 0;
            for (int c = 0; c < in; c++) acc += x[i * in + c] * W[(size_t)o * in + c];
            y[i * out + o] = acc;
        }
}

static double ref_ce(const double *logits, const int *targets, const double *w, int n, int V) {
    double L = 0;
    for (int i = 0; i < n; i++) {
        if (targets[i] < 0) continue;
        double max = -1e300, sum = 0;
        for (int j = 0; j < V; j++) max = fmax(max, logits[i * V + j]);
        for (int j = 0; j < V; j++) sum += exp(logits[i * V + j] - max);
        L += w[i] * (log(sum) + max - logits[i * V + targets[i]]);
    }
    return L;
}

enum { B_ = 2, T_ = 5, H_ = 4, KVH_ = 2, HD_ = 4, DIM_ = 16, FF_ = 24, V_ = 11, R_ = 3 };
#define N_ (B_ * T_)

typedef struct {
    double *logits, *w;
    const int *targets;
    int n, V;
} ce_ctx;
static double ce_loss(void *c) {
    ce_ctx *o = c;
    return ref_ce(o->logits, o->targets, o->w, o->n, o->V);
}

static void test_cross_entropy_grad(void **s) {
    (void)s;
    int n = 5, V = 17, targets[5] = {3, 0, -1, 16, 8};
    float *logits = randv((size_t)n * V, 3), *dloss = randv(n, 1), *loss = malloc(sizeof(float) * n);
    float *p = malloc(sizeof(float) * n * V);
    el_cross_entropy_forward(loss, p, logits, targets, n, V);
    ce_ctx c = {to_d(logits, (size_t)n * V), to_d(dloss, n), targets, n, V};
    double want = 0, got = 0;
    for (int i = 0; i < n; i++) got += dloss[i] * loss[i];
    want = ce_loss(&c);
    assert_float_equal(got, want, 1e-5);
    assert_float_equal(loss[2], 0, 0);
    el_cross_entropy_backward(p, p, targets, dloss, n, V);  // in place, as the head does
    check_grad("cross-entropy dlogits", c.logits, n * V, 1, p, ce_loss, &c, 1e-4);
    free(logits), free(dloss), free(loss), free(p), free(c.logits), free(c.w);
}

// ---------------------------------------------------------------- stages

// A small GQA model in memory (2 layers, every weight f32 random).
typedef tu_model tmodel;
static void tmodel_init(tmodel *t) {
    tu_variant v = {.layers = 2, .dim = DIM_, .heads = H_, .kv_heads = KVH_, .ff = FF_, .vocab = V_, .ctx = 8};
    tu_model_init(t, &v);
}
#define tmodel_free tu_model_free

// A stage of layer 1 alone, fed layer 0's output, gives the same gradients
// for layer 1 as the whole range: stages compose (split fine-tuning).
static void test_stages_compose(void **s) {
    (void)s;
    tmodel tm;
    tmodel_init(&tm);
    el_lora *lora;
    el_error err;
    assert_int_equal(el_lora_new(&tm.m, R_, 6.0f, EL_LORA_ALL_TARGETS, 7, &lora, &err), EL_OK);
    for (size_t i = 0; i < lora->n_params; i++) lora->params[i] = 0.3f * tu_randf(&rng);
    el_train_opts o = {0, 0, B_, T_, 0};
    el_train_stage *st;
    assert_int_equal(el_train_stage_new(&tm.m, lora, &o, NULL, &st, &err), EL_OK);
    float *x = randv(N_ * DIM_, 1), *wy = randv(N_ * DIM_, 1), *g = malloc(sizeof(float) * N_ * DIM_);
    float *y = malloc(sizeof(float) * N_ * DIM_);
    memcpy(y, x, sizeof(float) * N_ * DIM_);
    assert_int_equal(el_train_layers_forward(st, y, &err), EL_OK);
    memcpy(g, wy, sizeof(float) * N_ * DIM_);
    el_train_zero_grads(st);
    assert_int_equal(el_train_layers_backward(st, g, &err), EL_OK);
    float *g_full = malloc(sizeof(float) * N_ * DIM_);
    memcpy(g_full, g, sizeof(float) * N_ * DIM_);

    // A stage of layer 1 alone, fed layer 0's output, gives the same gradients
    // for layer 1 as the whole range: stages compose (split fine-tuning).
    el_train_opts o1 = {1, 2, B_, T_, 0};
    el_train_stage *s1;
    assert_int_equal(el_train_stage_new(&tm.m, lora, &o1, NULL, &s1, &err), EL_OK);
    el_train_opts o0 = {0, 1, B_, T_, 0};
    el_train_stage *s0;
    assert_int_equal(el_train_stage_new(&tm.m, lora, &o0, NULL, &s0, &err), EL_OK);
    memcpy(y, x, sizeof(float) * N_ * DIM_);
    el_train_layers_forward(s0, y, &err);
    el_train_layers_forward(s1, y, &err);
    memcpy(g, wy, sizeof(float) * N_ * DIM_);
    el_train_zero_grads(s0), el_train_zero_grads(s1);
    el_train_layers_backward(s1, g, &err);
    el_train_layers_backward(s0, g, &err);
    assert_memory_equal(g, g_full, sizeof(float) * N_ * DIM_);
    size_t half = lora->n_params / 2;  // layer 0's params come first
    float *full = el_train_grads(st), *g0 = el_train_grads(s0), *g1 = el_train_grads(s1);
    for (size_t i = 0; i < lora->n_params; i++) {
        float split = i < half ? g0[i] : g1[i];
        assert_float_equal(split, full[i], 1e-6 + 1e-5 * fabsf(full[i]));
        assert_true(i < half ? g1[i] == 0 : g0[i] == 0);
    }
    el_train_stage_free(s0), el_train_stage_free(s1);
    // an adapter made for layer 1 alone starts equal to the whole-model one there
    el_lora *full_new, *part_new;
    assert_int_equal(el_lora_new(&tm.m, R_, 6.0f, EL_LORA_ALL_TARGETS, 11, &full_new, &err), EL_OK);
    assert_int_equal(el_lora_new_layers(&tm.m, 1, 2, R_, 6.0f, EL_LORA_ALL_TARGETS, 11, &part_new, &err), EL_OK);
    assert_null(el_lora_get(part_new, 0, EL_LORA_Q));
    for (int t = 0; t < EL_LORA_N_TARGETS; t++) {
        const el_lora_mat *a = el_lora_get(full_new, 1, t), *b = el_lora_get(part_new, 1, t);
        assert_memory_equal(a->a, b->a, sizeof(float) * a->rank * a->in);
    }
    el_lora_free(full_new), el_lora_free(part_new);
    // a rank wider than a projection is refused with its shape (found by fuzz_worker: the
    // message once read the shape from the freed adapter)
    el_lora *wide = (el_lora *)1;
    assert_int_equal(el_lora_new_layers(&tm.m, 0, 1, DIM_ + 1, 6.0f, 1u << EL_LORA_Q, 11, &wide, &err), EL_ERR_RANGE);
    assert_null(wide);
    char want[96];
    snprintf(want, sizeof want, "LoRA rank %d exceeds the %dx%d projection", DIM_ + 1, tm.m.hp.n_heads * tm.m.hp.head_dim, DIM_);
    assert_non_null(strstr(err.msg, want));
    free(x), free(wy), free(g), free(g_full), free(y);
    el_train_stage_free(st);
    el_lora_free(lora);
    tmodel_free(&tm);
}

typedef struct {
    double *x, *nw, *W;
    const int *targets;
    const float *mask;
    double wsum;
} head_ctx;
static double head_loss(void *vc) {
    head_ctx *c = vc;
    double xn[N_ * DIM_], logits[N_ * V_], w[N_];
    ref_rmsnorm(xn, c->x, c->nw, N_, DIM_, 1e-5);
    ref_matmul(logits, xn, c->W, N_, DIM_, V_);
    for (int i = 0; i < N_; i++) w[i] = c->mask[i] / c->wsum;
    return ref_ce(logits, c->targets, w, N_, V_);
}

// Final norm + head + masked mean cross-entropy: loss value and dx.
static void test_head_grad(void **s) {
    (void)s;
    tmodel tm;
    tmodel_init(&tm);
    el_error err;
    el_train_opts o = {2, 2, B_, T_, 0};  // no layers: head only
    el_train_stage *st;
    assert_int_equal(el_train_stage_new(&tm.m, NULL, &o, NULL, &st, &err), EL_OK);
    int targets[N_];
    float mask[N_];
    for (int i = 0; i < N_; i++) targets[i] = (i * 7) % V_, mask[i] = i % 3 == 1 ? 0.0f : 1.0f;
    targets[4] = -1;
    double wsum = 0;
    for (int i = 0; i < N_; i++) wsum += targets[i] >= 0 ? mask[i] : 0;
    float *x = randv(N_ * DIM_, 1), dx[N_ * DIM_];
    double loss, ntok;
    assert_int_equal(el_train_head(st, x, targets, mask, &loss, &ntok, dx, 1.0f, NULL, &err), EL_OK);
    assert_float_equal(ntok, wsum, 0);
    head_ctx c = {to_d(x, N_ * DIM_), to_d(tm.m.output_norm.data, DIM_), to_d(tm.m.output.data, DIM_ * V_), targets,
                  mask, wsum};
    assert_float_equal(loss, head_loss(&c), 1e-5);
    check_grad("head dx", c.x, N_ * DIM_, 1, dx, head_loss, &c, 1e-4);
    // dx may be x itself (the training loop does that)
    assert_int_equal(el_train_head(st, x, targets, mask, &loss, &ntok, x, 1.0f, NULL, &err), EL_OK);
    assert_memory_equal(x, dx, sizeof dx);
    free(x), free(c.x), free(c.nw), free(c.W);
    el_train_stage_free(st);
    tmodel_free(&tm);
}

// Gradient accumulation: two micro-batches of one sequence each, each head
// call scaled by 1/2, accumulate the gradient of one batch of both sequences
// (equal token counts per sequence, so the per-micro-batch means agree).
static void test_grad_accumulation(void **s) {
    (void)s;
    tmodel tm;
    tmodel_init(&tm);
    el_error err;
    el_lora *lora;
    assert_int_equal(el_lora_new(&tm.m, R_, 6.0f, EL_LORA_ALL_TARGETS, 3, &lora, &err), EL_OK);
    for (size_t i = 0; i < lora->n_params; i++) lora->params[i] = 0.3f * tu_randf(&rng);
    el_train_opts o2 = {0, 0, 2, T_, 0}, o1 = {0, 0, 1, T_, 0};
    el_train_stage *s2, *s1;
    assert_int_equal(el_train_stage_new(&tm.m, lora, &o2, NULL, &s2, &err), EL_OK);
    assert_int_equal(el_train_stage_new(&tm.m, lora, &o1, NULL, &s1, &err), EL_OK);
    int tokens[2 * T_], targets[2 * T_];
    float mask[2 * T_], x[2 * T_ * DIM_];
    for (int i = 0; i < 2 * T_; i++) tokens[i] = (i * 5 + 1) % V_, targets[i] = (i * 3 + 2) % V_, mask[i] = 1;
    double loss, l0, l1;
    el_train_zero_grads(s2);
    el_train_embed(s2, tokens, x, &err);
    el_train_layers_forward(s2, x, &err);
    el_train_head(s2, x, targets, mask, &loss, NULL, x, 1.0f, NULL, &err);
    el_train_layers_backward(s2, x, &err);
    el_train_zero_grads(s1);
    for (int b = 0; b < 2; b++) {
        el_train_embed(s1, tokens + b * T_, x, &err);
        el_train_layers_forward(s1, x, &err);
        el_train_head(s1, x, targets + b * T_, mask + b * T_, b ? &l1 : &l0, NULL, x, 0.5f, NULL, &err);
        el_train_layers_backward(s1, x, &err);
    }
    assert_float_equal(loss, (l0 + l1) / 2, 1e-6);
    const float *g2 = el_train_grads(s2), *g1 = el_train_grads(s1);
    double scale = 1e-6;
    for (size_t i = 0; i < lora->n_params; i++) scale = fmax(scale, fabs(g2[i]));
    for (size_t i = 0; i < lora->n_params; i++) assert_true(fabs(g2[i] - g1[i]) <= 1e-5 * scale);
    el_train_stage_free(s1), el_train_stage_free(s2);
    el_lora_free(lora);
    tmodel_free(&tm);
}

// ---------------------------------------------------------------- real model

static const int dream_tokens[] = {1, 368, 430, 281, 269, 435, 447};

// The training forward equals inference logits, with an adapter applied by
// both (training stage and el_session_set_lora).
static void test_forward_matches_inference(void **s) {
    (void)s;
    el_error err;
    el_model *m;
    assert_int_equal(el_model_open(tu_model_path("aidreams260K.bin"), NULL, &m, &err), EL_OK);
    el_lora *lora;
    assert_int_equal(el_lora_new(m, 4, 8.0f, EL_LORA_ALL_TARGETS, 3, &lora, &err), EL_OK);
    for (size_t i = 0; i < lora->n_params; i++) lora->params[i] += 0.05f * tu_randf(&rng);
    el_pool *pool = el_pool_new(2);
    int T = 7, V = m->hp.vocab;
    el_train_opts o = {0, 0, 1, T, 0};
    el_train_stage *st;
    assert_int_equal(el_train_stage_new(m, lora, &o, pool, &st, &err), EL_OK);
    float *x = malloc(sizeof(float) * T * m->hp.dim), *lt = malloc(sizeof(float) * T * V);
    float *li = malloc(sizeof(float) * T * V), *base = malloc(sizeof(float) * T * V), mask[7];
    int targets[7];
    for (int i = 0; i < T; i++) targets[i] = i + 1 < T ? dream_tokens[i + 1] : -1, mask[i] = 1;
    double loss;
    assert_int_equal(el_train_embed(st, dream_tokens, x, &err), EL_OK);
    assert_int_equal(el_train_layers_forward(st, x, &err), EL_OK);
    assert_int_equal(el_train_head(st, x, targets, mask, &loss, NULL, NULL, 1, lt, &err), EL_OK);
    el_session *se;
    assert_int_equal(el_session_new(m, NULL, pool, &se, &err), EL_OK);
    assert_int_equal(el_session_forward(se, dream_tokens, T, 0, base, 1, &err), EL_OK);
    el_lora_set set = {1, {lora}, {1.0f}};
    el_session_set_lora(se, &set);
    assert_int_equal(el_session_forward(se, dream_tokens, T, 0, li, 1, &err), EL_OK);
    double maxd = 0, moved = 0;
    for (int i = 0; i < T * V; i++) maxd = fmax(maxd, fabs(lt[i] - li[i])), moved = fmax(moved, fabs(li[i] - base[i]));
    if (maxd > 1e-5) fprintf(stderr, "training vs inference logits: max abs difference %.3g\n", maxd);
    assert_true(maxd <= 1e-5);
    assert_true(moved > 1e-2);  // the adapter did change the logits
    el_session_free(se);
    el_train_stage_free(st);
    el_pool_free(pool);
    free(x), free(lt), free(li), free(base);
    el_lora_free(lora);
    el_model_close(m);
}

// ---------------------------------------------------------------- optimizer, adapters, data

static void test_adamw(void **s) {
    (void)s;
    float p[2] = {1.0f, -2.0f}, g[2] = {0.5f, -3.0f}, m[2] = {0}, v[2] = {0};
    el_adamw_opts o = {0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 0};
    double norm = el_adamw_step(p, g, m, v, 2, 1, &o, 0.1f);
    assert_float_equal(norm, sqrt(0.25 + 9), 1e-6);
    // step 1: m̂ = g, v̂ = g², update = lr (sign(g) + wd p)
    assert_float_equal(p[0], 1.0 - 0.1 * (1 + 0.01 * 1.0), 1e-6);
    assert_float_equal(p[1], -2.0 - 0.1 * (-1 + 0.01 * -2.0), 1e-6);
    // clipping scales the gradient to the clip norm before the moments
    float p2[1] = {0}, g2[1] = {10}, m2[1] = {0}, v2[1] = {0};
    el_adamw_opts oc = {0.1f, 0.9f, 0.999f, 1e-8f, 0, 1.0f};
    el_adamw_step(p2, g2, m2, v2, 1, 1, &oc, 0.1f);
    assert_float_equal(m2[0], 0.1 * 1.0, 1e-6);
}

static void test_lora_roundtrip_and_mismatch(void **s) {
    (void)s;
    el_error err;
    el_model *m;
    assert_int_equal(el_model_open(tu_model_path("aidreams260K.bin"), NULL, &m, &err), EL_OK);
    el_lora *a, *b;
    unsigned mask;
    assert_int_equal(el_lora_parse_targets("q,v,down", &mask, &err), EL_OK);
    assert_int_equal(mask, (1u << EL_LORA_Q) | (1u << EL_LORA_V) | (1u << EL_LORA_DOWN));
    assert_int_equal(el_lora_parse_targets("q,x", &mask, &err), EL_ERR_ARG);
    assert_non_null(strstr(err.msg, "'x'"));
    assert_int_equal(el_lora_new(m, 2, 4.0f, (1u << EL_LORA_Q) | (1u << EL_LORA_DOWN), 1, &a, &err), EL_OK);
    for (size_t i = 0; i < a->n_params; i++) a->params[i] = tu_randf(&rng);
    const char *path = tu_tmp_path("lora.gguf");
    assert_int_equal(el_lora_save(a, path, &err), EL_OK);
    assert_int_equal(el_lora_load(path, m, &b, &err), EL_OK);
    assert_int_equal(b->n_params, a->n_params);
    assert_memory_equal(a->params, b->params, a->n_params * sizeof(float));
    assert_float_equal(b->alpha, 4.0, 0);
    assert_int_equal(b->targets, a->targets);
    // conventional orientation: lora_a ne = {in, rank}, lora_b ne = {rank, out}
    el_gguf *g;
    assert_int_equal(el_gguf_open(path, &g, &err), EL_OK);
    const el_gguf_tensor *ta = el_gguf_find_tensor(g, "blk.3.ffn_down.weight.lora_a");
    const el_gguf_tensor *tb = el_gguf_find_tensor(g, "blk.3.ffn_down.weight.lora_b");
    assert_non_null(ta);
    assert_non_null(tb);
    assert_int_equal(ta->ne[0], 172), assert_int_equal(ta->ne[1], 2);
    assert_int_equal(tb->ne[0], 2), assert_int_equal(tb->ne[1], 64);
    char v[32];
    assert_true(el_gguf_get_str(g, "general.type", v, sizeof v) && !strcmp(v, "adapter"));
    el_gguf_close(g);
    // an adapter for a different base is refused, naming the tensor
    tmodel tm;
    tmodel_init(&tm);
    tm.m.hp.n_layers = 2;
    el_lora *c;
    assert_int_not_equal(el_lora_load(path, &tm.m, &c, &err), EL_OK);
    assert_non_null(strstr(err.msg, "blk."));
    tmodel_free(&tm);
    el_lora_free(a), el_lora_free(b);
    el_model_close(m);
}

static void test_checkpoint_roundtrip(void **s) {
    (void)s;
    tmodel tm;
    tmodel_init(&tm);
    el_error err;
    el_lora *a, *b, *c;
    assert_int_equal(el_lora_new(&tm.m, R_, 6.0f, EL_LORA_ALL_TARGETS, 5, &a, &err), EL_OK);
    assert_int_equal(el_lora_new(&tm.m, R_, 6.0f, EL_LORA_ALL_TARGETS, 6, &b, &err), EL_OK);
    assert_int_equal(el_lora_new(&tm.m, R_ + 1, 6.0f, EL_LORA_ALL_TARGETS, 6, &c, &err), EL_OK);
    size_t n = a->n_params;
    float *m = randv(n, 1), *v = randv(n, 1), *m2 = malloc(n * sizeof(float)), *v2 = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = fabsf(v[i]);
    el_ckpt_meta meta = {0}, got;
    meta.step = 17, meta.sample_pos = 136, meta.seed = 5, meta.identity = 0xabcdef, meta.total_steps = 40;
    meta.rank = R_, meta.batch = 8, meta.T = 5, meta.accum = 1, meta.targets = EL_LORA_ALL_TARGETS;
    meta.alpha = 6, meta.lr = 1e-3f, meta.n_rows = 2;
    meta.row_step[1] = 10, meta.row_loss[1] = 2.5f, meta.row_val[0] = NAN, meta.row_val[1] = 2.25f;
    const char *path = tu_tmp_path("ckpt.gguf");
    assert_int_equal(el_checkpoint_save(path, a, m, v, &meta, &err), EL_OK);
    assert_int_equal(el_checkpoint_load(path, b, m2, v2, &got, &err), EL_OK);
    assert_memory_equal(a->params, b->params, n * sizeof(float));
    assert_memory_equal(m, m2, n * sizeof(float));
    assert_memory_equal(v, v2, n * sizeof(float));
    assert_int_equal(got.step, 17), assert_int_equal(got.sample_pos, 136), assert_int_equal(got.identity, 0xabcdef);
    assert_int_equal(got.n_rows, 2);
    assert_float_equal(got.row_val[1], 2.25, 0);
    assert_true(isnan(got.row_val[0]));
    // a checkpoint of another adapter layout is refused, naming the tensor
    float *m3 = malloc(c->n_params * sizeof(float)), *v3 = malloc(c->n_params * sizeof(float));
    assert_int_equal(el_checkpoint_load(path, c, m3, v3, &got, &err), EL_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "lora.params"));
    // an adapter file is not a checkpoint
    const char *ap = tu_tmp_path("ad.gguf");
    assert_int_equal(el_lora_save(a, ap, &err), EL_OK);
    assert_int_equal(el_checkpoint_load(ap, b, m2, v2, &got, &err), EL_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "not an edgellm training checkpoint"));
    free(m), free(v), free(m2), free(v2), free(m3), free(v3);
    el_lora_free(a), el_lora_free(b), el_lora_free(c);
    tmodel_free(&tm);
}

static void test_json_lines(void **s) {
    (void)s;
    char *p, *c, why[160];
    const char *ok = " {\"prompt\": \"Hi \\\"there\\\"\\n\", \"id\": \"x\", \"completion\":\"caf\\u00e9 \\ud83d\\ude00\"} ";
    assert_int_equal(el_json_prompt_completion(ok, strlen(ok), &p, &c, why, sizeof why), EL_OK);
    assert_string_equal(p, "Hi \"there\"\n");
    assert_string_equal(c, "caf\xc3\xa9 \xf0\x9f\x98\x80");
    free(p), free(c);
    const char *bad[] = {
        "{\"prompt\": \"a\"}",                                  // missing completion
        "{\"prompt\": \"a\", \"completion\": 3}",              // not a string
        "{\"prompt\": \"a\" \"completion\": \"b\"}",           // missing comma
        "{\"prompt\": \"a\", \"completion\": \"b\"} x",        // trailing text
        "{\"prompt\": \"a\", \"prompt\": \"b\", \"completion\": \"c\"}",  // duplicate
        "{\"prompt\": \"\\ud800\", \"completion\": \"b\"}",    // lone surrogate
        "{\"prompt\": \"a\\q\", \"completion\": \"b\"}",       // bad escape
        "{\"prompt\": \"a\", \"completion\": \"b\"",           // unterminated
        "[\"prompt\"]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(el_json_prompt_completion(bad[i], strlen(bad[i]), &p, &c, why, sizeof why), EL_ERR_FORMAT);
        assert_true(strlen(why) > 0);
        assert_null(p);
    }
}

static void test_datasets(void **s) {
    (void)s;
    el_error err;
    el_model *m;
    el_tokenizer *tok;
    assert_int_equal(el_model_open(tu_model_path("aidreams260K.bin"), NULL, &m, &err), EL_OK);
    assert_int_equal(el_model_tokenizer(m, tu_model_path("tok512.bin"), &tok, &err), EL_OK);
    const char *jl = "{\"prompt\": \"The dream\", \"completion\": \"was long\"}\n\n"
                     "{\"prompt\": \"A\", \"completion\": \"b\"}\n";
    const char *path = tu_write_tmp("d.jsonl", jl, strlen(jl));
    el_dataset *d;
    assert_int_equal(el_dataset_load(path, EL_DATA_JSONL, tok, 16, &d, &err), EL_OK);
    assert_int_equal(el_dataset_size(d), 2);
    int tokens[16], targets[16];
    float mask[16];
    el_dataset_get(d, 0, tokens, targets, mask);
    int *pi, np, *ci, nc;
    el_tokenizer_encode(tok, "The dream", 9, 0, &pi, &np, &err);
    el_tokenizer_encode(tok, "was long", 8, 0, &ci, &nc, &err);
    assert_int_equal(tokens[0], el_tokenizer_bos(tok));
    for (int t = 0; t < 16; t++) {
        int want = t + 1 > np && t < np + nc + 1;  // predicts a completion token or the EOS
        assert_int_equal(mask[t] > 0, want);
    }
    assert_int_equal(targets[np], ci[0]);
    assert_int_equal(targets[np + nc], el_tokenizer_eos(tok));
    assert_int_equal(el_dataset_tokens(d), (uint64_t)(nc + 1) + 2);  // "b" is one token
    free(pi), free(ci);
    el_dataset_free(d);
    // a malformed line is reported with file:line
    const char *bad = "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\", completion: \"b\"}\n";
    path = tu_write_tmp("bad.jsonl", bad, strlen(bad));
    assert_int_equal(el_dataset_load(path, EL_DATA_JSONL, tok, 16, &d, &err), EL_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "bad.jsonl:2: "));
    // empty datasets are refused
    path = tu_write_tmp("empty.txt", "\n\n \n", 4);
    assert_int_equal(el_dataset_load(path, EL_DATA_TEXT, tok, 16, &d, &err), EL_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "empty"));
    // text: windows of T+1 tokens with stride T
    const char *txt = "Once upon a time there was a dream.\n\nThe end of the dream came soon after that.\n";
    path = tu_write_tmp("t.txt", txt, strlen(txt));
    assert_int_equal(el_dataset_load(path, EL_DATA_TEXT, tok, 8, &d, &err), EL_OK);
    assert_true(el_dataset_size(d) >= 2);
    int t2[8], g2[8];
    float m2[8];
    el_dataset_get(d, 0, tokens, targets, mask);
    el_dataset_get(d, 1, t2, g2, m2);
    assert_int_equal(tokens[0], el_tokenizer_bos(tok));
    assert_int_equal(targets[7], t2[0]);  // the windows overlap by one token
    el_dataset_free(d);

    // A tokenizer that adds no BOS (GPT-2, Qwen2): examples start with the
    // prompt, and text paragraphs end with EOS instead of starting with BOS.
    el_tokenizer_set_add_bos(tok, 0);
    path = tu_write_tmp("d.jsonl", jl, strlen(jl));
    assert_int_equal(el_dataset_load(path, EL_DATA_JSONL, tok, 16, &d, &err), EL_OK);
    el_dataset_get(d, 0, tokens, targets, mask);
    el_tokenizer_encode(tok, "The dream", 9, 0, &pi, &np, &err);
    el_tokenizer_encode(tok, "was long", 8, 0, &ci, &nc, &err);
    assert_int_equal(tokens[0], pi[0]);
    for (int t = 0; t < 16; t++) assert_int_equal(mask[t] > 0, t + 1 >= np && t < np + nc);
    assert_int_equal(targets[np - 1], ci[0]);
    assert_int_equal(targets[np + nc - 1], el_tokenizer_eos(tok));
    assert_int_equal(el_dataset_tokens(d), (uint64_t)(nc + 1) + 2);
    el_dataset_free(d);
    int *p1, n1, *p2, n2;
    el_tokenizer_encode(tok, "Once upon a time there was a dream.", 35, 0, &p1, &n1, &err);
    el_tokenizer_encode(tok, "The end of the dream came soon after that.", 42, 0, &p2, &n2, &err);
    path = tu_write_tmp("t.txt", txt, strlen(txt));
    assert_int_equal(el_dataset_load(path, EL_DATA_TEXT, tok, 64, &d, &err), EL_OK);
    assert_int_equal(el_dataset_size(d), 1);
    int t3[64], g3[64];
    float m3[64];
    el_dataset_get(d, 0, t3, g3, m3);  // the stream: p1 EOS p2 EOS
    assert_true(n1 + n2 + 2 <= 64);
    assert_int_equal(t3[0], p1[0]);
    assert_int_equal(g3[n1 - 1], el_tokenizer_eos(tok));
    assert_int_equal(g3[n1], p2[0]);
    assert_int_equal(g3[n1 + n2], el_tokenizer_eos(tok));
    assert_int_equal(el_dataset_tokens(d), (uint64_t)(n1 + n2 + 1));
    free(pi), free(ci), free(p1), free(p2);
    el_dataset_free(d);
    el_tokenizer_free(tok);
    el_model_close(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cross_entropy_grad),
        cmocka_unit_test(test_stages_compose),
        cmocka_unit_test(test_head_grad),
        cmocka_unit_test(test_grad_accumulation),
        cmocka_unit_test(test_forward_matches_inference),
        cmocka_unit_test(test_adamw),
        cmocka_unit_test(test_lora_roundtrip_and_mismatch),
        cmocka_unit_test(test_checkpoint_roundtrip),
        cmocka_unit_test(test_json_lines),
        cmocka_unit_test(test_datasets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
