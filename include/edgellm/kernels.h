// Numerical kernels. Nothing here knows about models: plain arrays and tensor
// views in, arrays out. Each op has a scalar reference; SIMD variants are
// picked once at start-up from the CPU features (EL_ISA can force a level).
#ifndef EDGELLM_KERNELS_H
#define EDGELLM_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "edgellm/core.h"
#include "edgellm/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

// out[n,d] = x[n,k] · W[d,k]ᵀ   (W->ne = {k, d}; any dtype with to_f32)
void el_matmul(el_pool *pool, float *out, const float *x, const el_tensor *W, int n);

// sum_i a[i]*b[i]
float el_dot_f32(const float *a, const float *b, int n);

// out[i] = x[i] / sqrt(mean(x²) + eps) * w[i]   over one row of n
void el_rmsnorm(float *out, const float *x, const float *w, int n, float eps);

// In-place rotary embedding of x[n_heads, head_dim] at position pos: pairs
// (2i, 2i+1) of each head rotate by pos * inv_freq[i] (inv_freq has head_dim/2).
void el_rope(float *x, int n_heads, int head_dim, int pos, const float *inv_freq);
// inv_freq[i] = theta^(-2i/head_dim)
void el_rope_freqs(float *inv_freq, int head_dim, float theta);

// In-place softmax of x[0..n)
void el_softmax(float *x, int n);

// h[i] = silu(g[i]) * u[i]
void el_swiglu(float *h, const float *g, const float *u, int n);

#ifdef __cplusplus
}
#endif
#endif
