// Scalar reference dot products of quantized weights with quantized
// activations, the activation quantizers, and the per-ISA kernel table.
// Every SIMD kernel (qdot_avx2.c, qdot_avx512.c, qdot_neon.c ...) computes the same integer
// sums as these and differs only in the order of the float additions.
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "edgellm/kernels.h"
#include "edgellm/quant.h"
#include "qdot.h"

// ---------------------------------------------------------------- activations

size_t el_act_row_size(int act_type, int k) {
    switch (act_type) {
    case EL_DTYPE_Q8_0: return ((size_t)k + (size_t)(k / EL_QK) * 8 + 63) & ~(size_t)63;
    case EL_DTYPE_Q8_K: return (size_t)(k / EL_QK_K) * sizeof(el_block_q8_k);
    default: return (size_t)k * sizeof(float);
    }
}

static int clamp127(int v) { return v < -127 ? -127 : v > 127 ? 127 : v; }

// nearbyintf for |v| < 2^22 in the default rounding mode (to nearest even),
// without the libm call: adding 1.5 * 2^23 pushes the fraction bits out.
static float round_even(float v) {
    const float big = 12582912.0f;  // IEEE arithmetic: (v + big) - big is not folded to v
    return fabsf(v) < 4194304.0f ? (v + big) - big : nearbyintf(v);
}

void el_act_quantize_q8_0_scalar(const float *x, void *dst, int k) {
    int8_t *qs = dst;
    float *d = (float *)(qs + k);
    int32_t *nsum = (int32_t *)(d + k / EL_QK);
    for (int b = 0; b < k / EL_QK; b++) {
        const float *xb = x + EL_QK * b;
        float amax = 0;
        for (int i = 0; i < EL_QK; i++) amax = fabsf(xb[i]) > amax ? fabsf(xb[i]) : amax;  // fmaxf is a libm call here
        float db = amax / 127.0f, id = db ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int i = 0; i < EL_QK; i++) {
            int q = clamp127((int)round_even(xb[i] * id));
            qs[EL_QK * b + i] = (int8_t)q;
            sum += q;
        }
        d[b] = db;
        nsum[b] = -sum;
    }
}

// Detected once: cpuid traps to the hypervisor in a VM and costs microseconds,
// too much to repeat for every matmul of a decode step.
static el_isa cpu_isa;
static int cpu_vnni;
static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;
static void detect_cpu(void) {
    cpu_isa = el_cpu_isa();
    cpu_vnni = el_cpu_has_avx512vnni();
}

void el_act_quantize(int act_type, const float *x, void *dst, int k) {
    if (act_type != EL_DTYPE_Q8_0 && act_type != EL_DTYPE_Q8_K) {
        memcpy(dst, x, (size_t)k * sizeof(float));
        return;
    }
    // The same bytes either way; the scalar loop was 7% of a q8_0 prefill's
    // matmul time (perf), run for every row of every product.
    pthread_once(&cpu_once, detect_cpu);
#if defined(__x86_64__)
    if (act_type == EL_DTYPE_Q8_K) {
        if (cpu_isa == EL_ISA_AVX512)
            el_act_quantize_q8_k_avx512(x, dst, k);
        else
            el_quantize_row_q8_k(x, dst, k);
        return;
    }
    if (cpu_isa == EL_ISA_AVX512)
        el_act_quantize_q8_0_avx512(x, dst, k);
    else
        el_act_quantize_q8_0_scalar(x, dst, k);
#elif defined(__aarch64__)
    int simd = cpu_isa >= EL_ISA_NEON;
    if (act_type == EL_DTYPE_Q8_K)
        simd ? el_act_quantize_q8_k_neon(x, dst, k) : el_quantize_row_q8_k(x, dst, k);
    else
        simd ? el_act_quantize_q8_0_neon(x, dst, k) : el_act_quantize_q8_0_scalar(x, dst, k);
#else
    if (act_type == EL_DTYPE_Q8_K)
        el_quantize_row_q8_k(x, dst, k);
    else
        el_act_quantize_q8_0_scalar(x, dst, k);
#endif
}

// ---------------------------------------------------------------- float weights

float el_vec_dot_f32(int n, const void *w, const void *x) { return el_dot_f32(w, x, n); }

float el_vec_dot_f16(int n, const void *w, const void *x) {
    const uint16_t *h = w;
    const float *xf = x;
    float acc = 0;
    for (int i = 0; i < n; i++) acc += el_f16_to_f32(h[i]) * xf[i];
    return acc;
}

float el_vec_dot_bf16(int n, const void *w, const void *x) {
    const uint16_t *h = w;
    const float *xf = x;
    float acc = 0;
    for (int i = 0; i < n; i++) acc += el_bf16_to_f32(h[i]) * xf[i];
    return acc;
}

// ---------------------------------------------------------------- Q8_0 / Q4_0

float el_vec_dot_q8_0(int n, const void *w, const void *x) {
    const el_block_q8_0 *wb = w;
    const int8_t *xq = x;
    const float *xd = (const float *)(xq + n);
    float acc = 0;
    for (int b = 0; b < n / EL_QK; b++) {
        int s = 0;
        for (int i = 0; i < EL_QK; i++) s += wb[b].qs[i] * xq[EL_QK * b + i];
        acc += el_f16_to_f32(wb[b].d) * xd[b] * (float)s;
    }
    return acc;
}

// sum (q - 8) * x = sum q * x - 8 * sum x = sum q * x + 8 * nsum
float el_vec_dot_q4_0(int n, const void *w, const void *x) {
    const el_block_q4_0 *wb = w;
    const int8_t *xq = x;
    const float *xd = (const float *)(xq + n);
    const int32_t *nsum = (const int32_t *)(xd + n / EL_QK);
    float acc = 0;
    for (int b = 0; b < n / EL_QK; b++) {
        const int8_t *xb = xq + EL_QK * b;
        int s = 0;
        for (int i = 0; i < EL_QK / 2; i++) s += (wb[b].qs[i] & 15) * xb[i] + (wb[b].qs[i] >> 4) * xb[i + 16];
        s += 8 * nsum[b];
        acc += el_f16_to_f32(wb[b].d) * xd[b] * (float)s;
    }
    return acc;
}

// ---------------------------------------------------------------- K-quants

// sum_j d*sc_j * sum(q*x) - dmin*m_j * sum(x), both sums integer per super-block
float el_vec_dot_q4_k(int n, const void *w, const void *x) {
    const el_block_q4_k *wb = w;
    const el_block_q8_k *xb = x;
    float acc = 0;
    for (int b = 0; b < n / EL_QK_K; b++) {
        int isum = 0, msum = 0;
        for (int j = 0; j < 8; j++) {
            int sc, m, s = 0;
            el_q4_k_scale_min(wb[b].scales, j, &sc, &m);
            const uint8_t *q = wb[b].qs + 32 * (j / 2);
            const int8_t *xq = xb[b].qs + 32 * j;
            for (int i = 0; i < 32; i++) s += (j & 1 ? q[i] >> 4 : q[i] & 15) * xq[i];
            isum += sc * s;
            msum += m * (xb[b].bsums[2 * j] + xb[b].bsums[2 * j + 1]);
        }
        acc += xb[b].d * (el_f16_to_f32(wb[b].d) * (float)isum - el_f16_to_f32(wb[b].dmin) * (float)msum);
    }
    return acc;
}

// sum_g sc_g * sum((q - 32) * x) = sum_g sc_g * sum(q*x) - 32 * sum_g sc_g * bsum_g
float el_vec_dot_q6_k(int n, const void *w, const void *x) {
    const el_block_q6_k *wb = w;
    const el_block_q8_k *xb = x;
    float acc = 0;
    for (int b = 0; b < n / EL_QK_K; b++) {
        int q[EL_QK_K];
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = wb[b].ql + 64 * h, *qh = wb[b].qh + 32 * h;
            for (int l = 0; l < 32; l++) {
                q[128 * h + l] = (ql[l] & 15) | ((qh[l] >> 0) & 3) << 4;
                q[128 * h + l + 32] = (ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4;
                q[128 * h + l + 64] = (ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4;
                q[128 * h + l + 96] = (ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4;
            }
        }
        int isum = 0;
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int i = 16 * g; i < 16 * g + 16; i++) s += q[i] * xb[b].qs[i];
            isum += wb[b].scales[g] * (s - 32 * xb[b].bsums[g]);
        }
        acc += xb[b].d * el_f16_to_f32(wb[b].d) * (float)isum;
    }
    return acc;
}

// ---------------------------------------------------------------- scalar tiles

#define SCALAR_GEMM(name, dot)                                                                              \
    static void name(int k, const void *w, size_t ldw, int nr, const void *x, size_t ldx, int nt, float *out, \
                     size_t ldo) {                                                                          \
        for (int t = 0; t < nt; t++)                                                                        \
            for (int r = 0; r < nr; r++)                                                                    \
                out[(size_t)t * ldo + r] = dot(k, (const char *)w + (size_t)r * ldw, (const char *)x + (size_t)t * ldx); \
    }
SCALAR_GEMM(gemm_f16, el_vec_dot_f16)
SCALAR_GEMM(gemm_bf16, el_vec_dot_bf16)
SCALAR_GEMM(gemm_q8_0, el_vec_dot_q8_0)
SCALAR_GEMM(gemm_q4_0, el_vec_dot_q4_0)
SCALAR_GEMM(gemm_q4_k, el_vec_dot_q4_k)
SCALAR_GEMM(gemm_q6_k, el_vec_dot_q6_k)

el_gemm_fn el_gemm_packed_kernel(int dtype, el_isa isa) {
    pthread_once(&cpu_once, detect_cpu);
#if defined(__x86_64__)
    el_isa level = isa < cpu_isa ? isa : cpu_isa;
    if (level == EL_ISA_AVX512 && cpu_vnni)
        return dtype == EL_DTYPE_Q4_K || dtype == EL_DTYPE_Q6_K ? el_gemm_packed_k_avx512(dtype) : el_gemm_packed_avx512(dtype);
    // Q8_0/Q4_0 pairs have one layout for both levels: AVX2 (or AVX-512 without VNNI) reads it too
    return level >= EL_ISA_AVX2 ? el_gemm_packed_avx2(dtype) : NULL;
#elif defined(__aarch64__)
    // Q8_0/Q4_0 in row pairs (pack.c), one layout for both levels with sdot
    el_isa level = isa < cpu_isa ? isa : cpu_isa;
    if (level == EL_ISA_I8MM) return el_gemm_packed_i8mm(dtype);
    if (level == EL_ISA_DOTPROD) return el_gemm_packed_dotprod(dtype);
    return NULL;
#else
    (void)dtype, (void)isa;
    return NULL;
#endif
}

el_gemm_runs_fn el_gemm_runs_kernel(int dtype, el_isa isa) {
    pthread_once(&cpu_once, detect_cpu);
#if defined(__x86_64__)
    el_isa level = isa < cpu_isa ? isa : cpu_isa;
    if (level == EL_ISA_AVX512 && cpu_vnni && el_cpu_is_amd())  // the AMD forms read two runs
        return dtype == EL_DTYPE_Q4_K || dtype == EL_DTYPE_Q6_K ? el_gemm_runs_k_avx512(dtype) : el_gemm_runs_q_avx512(dtype);
#endif
    (void)dtype, (void)isa;
    return NULL;
}

el_gemm_panel_fn el_gemm_packed_panel_kernel(int dtype, el_isa isa) {
    pthread_once(&cpu_once, detect_cpu);
#if defined(__x86_64__)
    el_isa level = isa < cpu_isa ? isa : cpu_isa;
    if (level == EL_ISA_AVX512 && cpu_vnni) return el_gemm_packed_panel_avx512(dtype);
#endif
    (void)dtype, (void)isa;
    return NULL;
}

size_t el_act_panel_bytes(int k, int n) { return (size_t)n * (size_t)(k / EL_QK) * EL_PANEL_REC; }

void el_act_panel(const void *row, int k, int nt, int t, void *panel) {
    const int nb = k / EL_QK;
    const int8_t *q = row;
    const float *d = (const float *)(q + k);
    const int32_t *ns = (const int32_t *)(d + nb);
    int s;
    const size_t stride = (size_t)el_panel_group(nt, t, &s) * EL_PANEL_REC;  // a block's records in t's group
    char *rec = (char *)panel + el_act_panel_bytes(k, s) + (size_t)(t - s) * EL_PANEL_REC;
    for (int b = 0; b < nb; b++, rec += stride) {
        // the shifts as multiplications in unsigned: nsum is -(sum of 32 quants), |nsum| <= 4064
        int32_t s3 = (int32_t)((uint32_t)ns[b] * 8u), s7 = (int32_t)((uint32_t)ns[b] * 128u);
        memcpy(rec, q + (size_t)EL_QK * b, EL_QK);
        memcpy(rec + EL_PANEL_SCALE, d + b, 4);
        memcpy(rec + EL_PANEL_SEED3, &s3, 4);
        memcpy(rec + EL_PANEL_SEED7, &s7, 4);
    }
}

el_gemm_fn el_gemm_kernel(int dtype, el_isa isa) {
    pthread_once(&cpu_once, detect_cpu);
    if (isa > cpu_isa) return NULL;
#if defined(__x86_64__)
    if (isa == EL_ISA_AVX512) return cpu_vnni ? el_gemm_avx512(dtype) : NULL;
    if (isa == EL_ISA_AVX2) return el_gemm_avx2(dtype);
#elif defined(__aarch64__)
    if (isa == EL_ISA_I8MM) return el_gemm_i8mm(dtype);
    if (isa == EL_ISA_DOTPROD) return el_gemm_dotprod(dtype);
    if (isa == EL_ISA_NEON) return el_gemm_neon(dtype);
#endif
    if (isa != EL_ISA_SCALAR) return NULL;  // a level of another architecture
    switch (dtype) {
    case EL_DTYPE_F16: return gemm_f16;
    case EL_DTYPE_BF16: return gemm_bf16;
    case EL_DTYPE_Q8_0: return gemm_q8_0;
    case EL_DTYPE_Q4_0: return gemm_q4_0;
    case EL_DTYPE_Q4_K: return gemm_q4_k;
    case EL_DTYPE_Q6_K: return gemm_q6_k;
    }
    return NULL;
}
