// Shared helpers for unit tests: paths to reference files, temp files, RNG.
#ifndef EL_TESTUTIL_H
#define EL_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "edgellm/model.h"

// Path under ../shared/models (static buffer, valid until the next call).
const char *tu_model_path(const char *rel);
// A fresh path in the build's temp folder (static buffer, valid until next call).
const char *tu_tmp_path(const char *name);
// Writes bytes to a temp file and returns its path (static buffer).
const char *tu_write_tmp(const char *name, const void *data, size_t n);
// Deterministic xorshift RNG.
uint64_t tu_rand(uint64_t *state);
float tu_randf(uint64_t *state);  // uniform in [-1, 1)

// ---- gradient checks

// n floats uniform in [-scale, scale) (malloc'ed); a double copy of x.
float *tu_randv(uint64_t *state, size_t n, float scale);
double *tu_to_d(const float *x, size_t n);
double tu_dotd(const double *a, const double *b, size_t n);
// Central differences of f over params[0..count) (every stride-th one, moved
// by 1e-5 relative) against the analytic gradient; asserts that the worst
// error, relative to the largest gradient, is at most tol, and returns it.
typedef double (*tu_loss_fn)(void *ctx);
double tu_check_grad(const char *what, double *params, int count, int stride, const float *analytic, tu_loss_fn f,
                     void *ctx, double tol);

// ---- a tiny in-memory model of a family variant, every weight f32 random

typedef struct {
    int layers, dim, heads, kv_heads, ff, vocab, ctx;
    int qwen2;         // architecture qwen2: q/k/v biases and neox rope
    int scaling;       // EL_ROPE_SCALING_*: LINEAR by rope_scale, FREQS the Llama 3.1 divisors
    float rope_scale;  // LINEAR's factor
    int window;        // sliding window (0: none)
    uint64_t seed;
} tu_variant;

typedef struct {
    el_model m;
    float *bufs[256];
    int nb;
} tu_model;

void tu_model_init(tu_model *t, const tu_variant *v);
void tu_model_free(tu_model *t);

#endif
