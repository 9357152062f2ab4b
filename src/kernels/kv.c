// KV cache rows in a cache dtype (f32, f16, q8_0) and attention over them.
// The scalar versions here are the reference; kv_avx512.c follows them.
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "edgellm/kernels.h"
#include "ops_simd.h"

static int use_avx512;
static pthread_once_t isa_once = PTHREAD_ONCE_INIT;
static void detect_isa(void) { use_avx512 = el_cpu_isa() == EL_ISA_AVX512; }

// f16 and q8_0 rows have x86 kernels only; elsewhere the scalar ones run
// (f32 rows go through el_attn_scores/el_attn_mix, which have NEON too).
#if !defined(__x86_64__)
#define el_attn_scores_kv_avx512 el_attn_scores_kv_scalar
#define el_attn_mix_kv_avx512 el_attn_mix_kv_scalar
#endif

// Values per q8_0 scale in a row of hd.
static int q8_block(int hd) { return hd % 32 == 0 ? 32 : hd; }

size_t el_kv_row_bytes(int dtype, int hd) {
    if (hd <= 0) return 0;
    switch (dtype) {
    case EL_DTYPE_F32: return (size_t)hd * 4;
    case EL_DTYPE_F16: return (size_t)hd * 2;
    case EL_DTYPE_Q8_0: return (size_t)hd + (size_t)(hd / q8_block(hd)) * 4;
    }
    return 0;
}

void el_kv_store(int dtype, void *dst, const float *x, int hd) {
    switch (dtype) {
    case EL_DTYPE_F32: memcpy(dst, x, (size_t)hd * 4); return;
    case EL_DTYPE_F16: {
        uint16_t *h = dst;
        for (int i = 0; i < hd; i++) h[i] = el_f32_to_f16(x[i]);
        return;
    }
    case EL_DTYPE_Q8_0: {
        int bs = q8_block(hd);
        int8_t *q = dst;
        float *d = (float *)(q + hd);
        for (int b = 0; b < hd / bs; b++) {
            float amax = 0;
            for (int i = 0; i < bs; i++) amax = fmaxf(amax, fabsf(x[b * bs + i]));
            float id = amax > 0 ? 127.0f / amax : 0.0f;
            for (int i = 0; i < bs; i++) q[b * bs + i] = (int8_t)nearbyintf(x[b * bs + i] * id);
            float db = amax / 127.0f;
            memcpy(d + b, &db, 4);  // rows need not be 4-aligned (hd not a multiple of 4)
        }
        return;
    }
    }
}

void el_kv_load(int dtype, float *dst, const void *row, int hd) {
    switch (dtype) {
    case EL_DTYPE_F32: memcpy(dst, row, (size_t)hd * 4); return;
    case EL_DTYPE_F16:
        for (int i = 0; i < hd; i++) dst[i] = el_f16_to_f32(((const uint16_t *)row)[i]);
        return;
    case EL_DTYPE_Q8_0: {
        int bs = q8_block(hd);
        const int8_t *q = row;
        for (int b = 0; b < hd / bs; b++) {
            float db;
            memcpy(&db, q + hd + 4 * b, 4);
            for (int i = 0; i < bs; i++) dst[b * bs + i] = (float)q[b * bs + i] * db;
        }
        return;
    }
    }
}

// q · row, the reference for every dtype: each q8_0 block's sum of q[i]·k[i]
// is scaled by its d once.
static float kv_dot_scalar(int dtype, const float *q, const void *row, int hd) {
    switch (dtype) {
    case EL_DTYPE_F32: return el_dot_f32(q, row, hd);
    case EL_DTYPE_F16: {
        const uint16_t *h = row;
        float s = 0;
        for (int i = 0; i < hd; i++) s += q[i] * el_f16_to_f32(h[i]);
        return s;
    }
    case EL_DTYPE_Q8_0: {
        int bs = q8_block(hd);
        const int8_t *k = row;
        float s = 0;
        for (int b = 0; b < hd / bs; b++) {
            float db, sb = 0;
            memcpy(&db, k + hd + 4 * b, 4);
            for (int i = 0; i < bs; i++) sb += q[b * bs + i] * (float)k[b * bs + i];
            s += sb * db;
        }
        return s;
    }
    }
    return 0;
}

void el_attn_scores_kv_scalar(int dtype, float *scores, const float *q, const void *k, size_t stride, int n, int hd,
                              float scale) {
    for (int p = 0; p < n; p++) scores[p] = kv_dot_scalar(dtype, q, (const char *)k + (size_t)p * stride, hd) * scale;
}

void el_attn_mix_kv_scalar(int dtype, float *out, const float *w, const void *v, size_t stride, int n, int hd) {
    float row[512];
    for (int p = 0; p < n; p++) {
        const char *vp = (const char *)v + (size_t)p * stride;
        if (dtype == EL_DTYPE_F32) {
            el_axpy_f32(out, w[p], (const float *)vp, hd);
            continue;
        }
        for (int c = 0; c < hd; c += 512) {  // hd above 512 does not occur; chunks keep row on the stack
            int m = hd - c < 512 ? hd - c : 512;
            if (dtype == EL_DTYPE_F16) {
                for (int i = 0; i < m; i++) row[i] = el_f16_to_f32(((const uint16_t *)vp)[c + i]);
            } else {
                int bs = q8_block(hd);
                for (int i = 0; i < m; i++) {
                    float db;
                    memcpy(&db, vp + hd + 4 * ((c + i) / bs), 4);
                    row[i] = (float)((const int8_t *)vp)[c + i] * db;
                }
            }
            el_axpy_f32(out + c, w[p], row, m);
        }
    }
}

// The SIMD versions need whole 16-lane vectors and keep a row in registers.
static int simd_ok(int dtype, int hd) {
    return use_avx512 && dtype != EL_DTYPE_F32 && hd % 16 == 0 && hd <= 256 && (dtype != EL_DTYPE_Q8_0 || hd % 32 == 0 || hd == 16);
}

void el_attn_scores_kv(int dtype, float *scores, const float *q, const void *k, size_t stride, int n, int hd,
                       float scale) {
    pthread_once(&isa_once, detect_isa);
    if (dtype == EL_DTYPE_F32 && stride % 4 == 0)
        el_attn_scores(scores, q, k, stride / 4, n, hd, scale);
    else if (simd_ok(dtype, hd))
        el_attn_scores_kv_avx512(dtype, scores, q, k, stride, n, hd, scale);
    else
        el_attn_scores_kv_scalar(dtype, scores, q, k, stride, n, hd, scale);
}

void el_attn_mix_kv(int dtype, float *out, const float *w, const void *v, size_t stride, int n, int hd) {
    pthread_once(&isa_once, detect_isa);
    if (dtype == EL_DTYPE_F32 && stride % 4 == 0)
        el_attn_mix(out, w, v, stride / 4, n, hd);
    else if (simd_ok(dtype, hd))
        el_attn_mix_kv_avx512(dtype, out, w, v, stride, n, hd);
    else
        el_attn_mix_kv_scalar(dtype, out, w, v, stride, n, hd);
}
