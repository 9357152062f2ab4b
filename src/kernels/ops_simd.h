// Internal to src/kernels: SIMD variants of the row-wise ops in ops.c, used
// when run-time detection allows. They follow the scalar versions to within
// a few ulp (their exponential is not libm's expf) and treat ±inf and large
// inputs the same way.
#ifndef EL_KERNELS_OPS_SIMD_H
#define EL_KERNELS_OPS_SIMD_H

float el_exp_avx512(float x);
void el_swiglu_avx512(float *h, const float *g, const float *u, int n);
void el_softmax_avx512(float *x, int n);
void el_gelu_avx512(float *x, int n, int quick);

// hd a multiple of 16, at most 256
void el_attn_scores_avx512(float *scores, const float *q, const float *k, size_t stride, int n, int hd, float scale);
void el_attn_mix_avx512(float *out, const float *w, const float *v, size_t stride, int n, int hd);

// The scalar versions (the reference for tests).
void el_swiglu_scalar(float *h, const float *g, const float *u, int n);
void el_softmax_scalar(float *x, int n);
void el_gelu_scalar(float *x, int n, int quick);
void el_attn_scores_scalar(float *scores, const float *q, const float *k, size_t stride, int n, int hd, float scale);
void el_attn_mix_scalar(float *out, const float *w, const float *v, size_t stride, int n, int hd);

#endif
