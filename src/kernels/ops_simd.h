// Internal to src/kernels: SIMD variants of the row-wise ops in ops.c, used
// when run-time detection allows. They follow the scalar versions to within
// a few ulp (their exponential is not libm's expf) and treat ±inf and large
// inputs the same way.
#ifndef EL_KERNELS_OPS_SIMD_H
#define EL_KERNELS_OPS_SIMD_H

#include <stddef.h>
#include <stdint.h>

#include "edgellm/kernels.h"

float el_exp_avx512(float x);
// the same bits as the scalar versions
float el_rmsnorm_avx512(float *out, const float *x, const float *w, int n, float eps);
void el_rope_rotate_avx512(float *x, int n_heads, int head_dim, const float *c, const float *s, int neox);
void el_swiglu_avx512(float *h, const float *g, const float *u, int n);
void el_softmax_avx512(float *x, int n);
void el_gelu_avx512(float *x, int n, int quick);
void el_f16_to_f32_avx512(const uint16_t *src, float *dst, int64_t n);
void el_bf16_to_f32_avx512(const uint16_t *src, float *dst, int64_t n);

// gemm_avx512.c: encoders' products, attention and layer norm on activations in panels
size_t el_dense_p_work_avx512(int n, int count, const int *d);
void el_matmul_p_avx512(el_pool *pool, int count, float *const *outs, const float *x, const el_tensor *const *Ws,
                        const float *const *biases, int n, float *work);
size_t el_attn_p_work_avx512(int n, int hd);
void el_attn_p_avx512(float *out, const float *q, const float *k, const float *v, int F, int f0, int n, int hd,
                      float scale, float *work);
size_t el_attn_causal_work_avx512(int hd);
int el_attn_causal_kt_avx512(float *kt, const float *k, int nk, int hd);
void el_attn_causal_avx512(float *out, size_t ldo, float *lse, size_t ldl, const float *q, size_t ldq, int nq, int p0,
                           const float *kt, const float *v, int k0, int nk, int hd, int window, float scale, float *work);
void el_layernorm_p_avx512(float *out, const float *x, int F, const float *w, const float *b, int p0, int p1, float eps);

// hd a multiple of 16, at most 256
void el_attn_scores_avx512(float *scores, const float *q, const float *k, size_t stride, int n, int hd, float scale);
void el_attn_mix_avx512(float *out, const float *w, const float *v, size_t stride, int n, int hd);
// KV rows in f16 or q8_0 (kv.c), stride in bytes; hd a multiple of 16, at
// most 256 (q8_0: a multiple of 32, or 16)
void el_attn_scores_kv_avx512(int dtype, float *scores, const float *q, const void *k, size_t stride, int n, int hd,
                              float scale);
void el_attn_mix_kv_avx512(int dtype, float *out, const float *w, const void *v, size_t stride, int n, int hd);

// AArch64 Advanced SIMD (ops_neon.c); attention: hd a multiple of 4.
float el_exp_neon(float x);
void el_swiglu_neon(float *h, const float *g, const float *u, int n);
void el_softmax_neon(float *x, int n);
void el_attn_scores_neon(float *scores, const float *q, const float *k, size_t stride, int n, int hd, float scale);
void el_attn_mix_neon(float *out, const float *w, const float *v, size_t stride, int n, int hd);

// The scalar versions (the reference for tests).
float el_rmsnorm_scalar(float *out, const float *x, const float *w, int n, float eps);
void el_rope_rotate_scalar(float *x, int n_heads, int head_dim, const float *c, const float *s, int neox);
void el_swiglu_scalar(float *h, const float *g, const float *u, int n);
void el_softmax_scalar(float *x, int n);
void el_gelu_scalar(float *x, int n, int quick);
void el_attn_scores_scalar(float *scores, const float *q, const float *k, size_t stride, int n, int hd, float scale);
void el_attn_mix_scalar(float *out, const float *w, const float *v, size_t stride, int n, int hd);
void el_attn_scores_kv_scalar(int dtype, float *scores, const float *q, const void *k, size_t stride, int n, int hd,
                              float scale);
void el_attn_mix_kv_scalar(int dtype, float *out, const float *w, const void *v, size_t stride, int n, int hd);

#endif
