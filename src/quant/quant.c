// Reference quantizers and dequantizers for the GGUF block types. These are the
// definition of the formats for this code base: the matmul kernels and every
// SIMD variant are tested against them.
#include <math.h>
#include <string.h>

#include "edgellm/quant.h"

_Static_assert(sizeof(el_block_q8_0) == 34, "q8_0 block is 34 bytes");
_Static_assert(sizeof(el_block_q4_0) == 18, "q4_0 block is 18 bytes");
_Static_assert(sizeof(el_block_q4_k) == 144, "q4_k block is 144 bytes");
_Static_assert(sizeof(el_block_q6_k) == 210, "q6_k block is 210 bytes");
_Static_assert(sizeof(el_block_q8_k) == 292, "q8_k block is 292 bytes");

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }
// Round half away from zero, as the ecosystem's reference quantizers do.
static int nearest(float v) { return (int)lroundf(v); }

// ---------------------------------------------------------------- Q8_0

void el_quantize_row_q8_0(const float *x, void *vy, int64_t n) {
    el_block_q8_0 *y = vy;
    for (int64_t b = 0; b < n / EL_QK; b++, x += EL_QK) {
        float amax = 0;
        for (int i = 0; i < EL_QK; i++) amax = fmaxf(amax, fabsf(x[i]));
        float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        y[b].d = el_f32_to_f16(d);
        for (int i = 0; i < EL_QK; i++) y[b].qs[i] = (int8_t)clampi(nearest(x[i] * id), -127, 127);
    }
}

void el_dequantize_row_q8_0(const void *vx, float *y, int64_t n) {
    const el_block_q8_0 *x = vx;
    for (int64_t b = 0; b < n / EL_QK; b++) {
        float d = el_f16_to_f32(x[b].d);
        for (int i = 0; i < EL_QK; i++) *y++ = d * (float)x[b].qs[i];
    }
}

// ---------------------------------------------------------------- Q4_0

// The scale maps the value of largest magnitude to -8 (the end of the range
// with one more step), so that value is represented exactly.
void el_quantize_row_q4_0(const float *x, void *vy, int64_t n) {
    el_block_q4_0 *y = vy;
    for (int64_t b = 0; b < n / EL_QK; b++, x += EL_QK) {
        float amax = 0, max = 0;
        for (int i = 0; i < EL_QK; i++)
            if (fabsf(x[i]) > amax) amax = fabsf(x[i]), max = x[i];
        float d = max / -8.0f, id = d ? 1.0f / d : 0.0f;
        y[b].d = el_f32_to_f16(d);
        for (int i = 0; i < EL_QK / 2; i++) {
            int lo = clampi((int)floorf(x[i] * id + 8.5f), 0, 15);
            int hi = clampi((int)floorf(x[i + 16] * id + 8.5f), 0, 15);
            y[b].qs[i] = (uint8_t)(lo | hi << 4);
        }
    }
}

void el_dequantize_row_q4_0(const void *vx, float *y, int64_t n) {
    const el_block_q4_0 *x = vx;
    for (int64_t b = 0; b < n / EL_QK; b++, y += EL_QK) {
        float d = el_f16_to_f32(x[b].d);
        for (int i = 0; i < EL_QK / 2; i++) {
            y[i] = d * (float)((x[b].qs[i] & 15) - 8);
            y[i + 16] = d * (float)((x[b].qs[i] >> 4) - 8);
        }
    }
}

// ---------------------------------------------------------------- Q4_K

void el_q4_k_scale_min(const uint8_t q[12], int j, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 15) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

static void q4_k_pack_scales(uint8_t q[12], const int sc[8], const int m[8]) {
    for (int j = 0; j < 4; j++) {
        q[j] = (uint8_t)((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
        q[j + 4] = (uint8_t)((m[j] & 63) | ((m[j + 4] >> 4) << 6));
        q[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
    }
}

// Fits x[0..n) ≈ scale * q - min with q in 0..nmax, scale >= 0, min >= 0 (the
// offset is never positive, so a block of positive values keeps an exact 0).
// Tries a range of grid scales; for each, quantizes and solves the 2x2 least
// squares problem for (scale, min) given q; keeps the pair with least error.
static void fit_scale_min(const float *x, int n, int nmax, float *scale_out, float *min_out) {
    float lo = 0, hi = x[0];
    for (int i = 0; i < n; i++) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
    }
    if (hi <= lo) {
        *scale_out = 0;
        *min_out = -lo;
        return;
    }
    float best_err = INFINITY, best_s = (hi - lo) / (float)nmax, best_m = -lo;
    for (int step = -10; step <= 10; step++) {
        float iscale = ((float)nmax + 0.1f * (float)step) / (hi - lo);
        double sq = 0, sqq = 0, sx = 0, sqx = 0;
        int q[EL_QK_K];
        for (int i = 0; i < n; i++) {
            q[i] = clampi(nearest((x[i] - lo) * iscale), 0, nmax);
            sq += q[i], sqq += (double)q[i] * q[i], sx += x[i], sqx += (double)q[i] * x[i];
        }
        double det = n * sqq - sq * sq;
        if (det <= 0) continue;
        double s = (n * sqx - sq * sx) / det, off = (sqq * sx - sq * sqx) / det;  // x ≈ s*q + off
        if (off > 0) {  // keep the offset non-positive: refit the scale alone
            off = 0;
            s = sqq > 0 ? sqx / sqq : 0;
        }
        if (s < 0) continue;
        double err = 0;
        for (int i = 0; i < n; i++) {
            double e = s * q[i] + off - x[i];
            err += e * e;
        }
        if (err < best_err) best_err = (float)err, best_s = (float)s, best_m = (float)-off;
    }
    *scale_out = best_s;
    *min_out = best_m;
}

void el_quantize_row_q4_k(const float *x, void *vy, int64_t n) {
    el_block_q4_k *y = vy;
    for (int64_t b = 0; b < n / EL_QK_K; b++, x += EL_QK_K) {
        float s[8], m[8], smax = 0, mmax = 0;
        for (int j = 0; j < 8; j++) {
            fit_scale_min(x + 32 * j, 32, 15, &s[j], &m[j]);
            smax = fmaxf(smax, s[j]);
            mmax = fmaxf(mmax, m[j]);
        }
        y[b].d = el_f32_to_f16(smax / 63.0f);
        y[b].dmin = el_f32_to_f16(mmax / 63.0f);
        float d = el_f16_to_f32(y[b].d), dmin = el_f16_to_f32(y[b].dmin);
        int sc[8], mq[8];
        for (int j = 0; j < 8; j++) {
            sc[j] = d > 0 ? clampi(nearest(s[j] / d), 0, 63) : 0;
            mq[j] = dmin > 0 ? clampi(nearest(m[j] / dmin), 0, 63) : 0;
        }
        q4_k_pack_scales(y[b].scales, sc, mq);
        uint8_t q[EL_QK_K];
        for (int j = 0; j < 8; j++) {
            float ds = d * (float)sc[j], dm = dmin * (float)mq[j];
            for (int i = 0; i < 32; i++)
                q[32 * j + i] = (uint8_t)(ds > 0 ? clampi(nearest((x[32 * j + i] + dm) / ds), 0, 15) : 0);
        }
        for (int p = 0; p < 4; p++)
            for (int l = 0; l < 32; l++) y[b].qs[32 * p + l] = (uint8_t)(q[64 * p + l] | q[64 * p + 32 + l] << 4);
    }
}

void el_dequantize_row_q4_k(const void *vx, float *y, int64_t n) {
    const el_block_q4_k *x = vx;
    for (int64_t b = 0; b < n / EL_QK_K; b++, y += EL_QK_K) {
        float d = el_f16_to_f32(x[b].d), dmin = el_f16_to_f32(x[b].dmin);
        for (int p = 0; p < 4; p++) {
            int sc0, m0, sc1, m1;
            el_q4_k_scale_min(x[b].scales, 2 * p, &sc0, &m0);
            el_q4_k_scale_min(x[b].scales, 2 * p + 1, &sc1, &m1);
            for (int l = 0; l < 32; l++) {
                uint8_t v = x[b].qs[32 * p + l];
                y[64 * p + l] = d * (float)sc0 * (float)(v & 15) - dmin * (float)m0;
                y[64 * p + 32 + l] = d * (float)sc1 * (float)(v >> 4) - dmin * (float)m1;
            }
        }
    }
}

// ---------------------------------------------------------------- Q6_K

// Best signed scale for x[0..16) ≈ s * q, q in -32..31: the value of largest
// magnitude maps near -32 (the longer side); nearby scales are tried and the
// least-squares scale for each quantization kept if it lowers the error.
static float fit_scale_signed(const float *x, int n) {
    float amax = 0, max = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) amax = fabsf(x[i]), max = x[i];
    if (amax == 0) return 0;
    float best_s = max / -32.0f, best_err = INFINITY;
    for (int step = -9; step <= 9; step++) {
        float iscale = (-32.0f + 0.25f * (float)step) / max;
        double sqq = 0, sqx = 0;
        int q[16];
        for (int i = 0; i < n; i++) {
            q[i] = clampi(nearest(x[i] * iscale), -32, 31);
            sqq += (double)q[i] * q[i], sqx += (double)q[i] * x[i];
        }
        if (sqq <= 0) continue;
        double s = sqx / sqq, err = 0;
        for (int i = 0; i < n; i++) {
            double e = s * q[i] - x[i];
            err += e * e;
        }
        if (err < best_err) best_err = (float)err, best_s = (float)s;
    }
    return best_s;
}

void el_quantize_row_q6_k(const float *x, void *vy, int64_t n) {
    el_block_q6_k *y = vy;
    for (int64_t b = 0; b < n / EL_QK_K; b++, x += EL_QK_K) {
        float s[16], amax = 0;
        for (int j = 0; j < 16; j++) {
            s[j] = fit_scale_signed(x + 16 * j, 16);
            amax = fmaxf(amax, fabsf(s[j]));
        }
        y[b].d = el_f32_to_f16(amax / 127.0f);
        float d = el_f16_to_f32(y[b].d);
        uint8_t q[EL_QK_K];
        for (int j = 0; j < 16; j++) {
            int sc = d > 0 ? clampi(nearest(s[j] / d), -128, 127) : 0;
            y[b].scales[j] = (int8_t)sc;
            float ds = d * (float)sc;
            for (int i = 0; i < 16; i++)
                q[16 * j + i] = (uint8_t)(ds != 0 ? clampi(nearest(x[16 * j + i] / ds), -32, 31) + 32 : 32);
        }
        for (int h = 0; h < 2; h++) {
            const uint8_t *qq = q + 128 * h;
            uint8_t *ql = y[b].ql + 64 * h, *qh = y[b].qh + 32 * h;
            for (int l = 0; l < 32; l++) {
                int q1 = qq[l], q2 = qq[l + 32], q3 = qq[l + 64], q4 = qq[l + 96];
                ql[l] = (uint8_t)((q1 & 15) | (q3 & 15) << 4);
                ql[l + 32] = (uint8_t)((q2 & 15) | (q4 & 15) << 4);
                qh[l] = (uint8_t)((q1 >> 4) | (q2 >> 4) << 2 | (q3 >> 4) << 4 | (q4 >> 4) << 6);
            }
        }
    }
}

void el_dequantize_row_q6_k(const void *vx, float *y, int64_t n) {
    const el_block_q6_k *x = vx;
    for (int64_t b = 0; b < n / EL_QK_K; b++, y += EL_QK_K) {
        float d = el_f16_to_f32(x[b].d);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = x[b].ql + 64 * h, *qh = x[b].qh + 32 * h;
            float *yy = y + 128 * h;
            for (int l = 0; l < 32; l++) {
                int q1 = (ql[l] & 15) | ((qh[l] >> 0) & 3) << 4;
                int q2 = (ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4;
                int q3 = (ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4;
                int q4 = (ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4;
                yy[l] = d * (float)x[b].scales[(128 * h + l) / 16] * (float)(q1 - 32);
                yy[l + 32] = d * (float)x[b].scales[(128 * h + l + 32) / 16] * (float)(q2 - 32);
                yy[l + 64] = d * (float)x[b].scales[(128 * h + l + 64) / 16] * (float)(q3 - 32);
                yy[l + 96] = d * (float)x[b].scales[(128 * h + l + 96) / 16] * (float)(q4 - 32);
            }
        }
    }
}

// ---------------------------------------------------------------- Q8_K

void el_quantize_row_q8_k(const float *x, void *vy, int64_t n) {
    el_block_q8_k *y = vy;
    for (int64_t b = 0; b < n / EL_QK_K; b++, x += EL_QK_K) {
        float amax = 0;
        for (int i = 0; i < EL_QK_K; i++) amax = fmaxf(amax, fabsf(x[i]));
        float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        y[b].d = d;
        for (int g = 0; g < 16; g++) {
            int sum = 0;
            for (int i = 16 * g; i < 16 * g + 16; i++) {
                int q = clampi((int)nearbyintf(x[i] * id), -127, 127);
                y[b].qs[i] = (int8_t)q;
                sum += q;
            }
            y[b].bsums[g] = (int16_t)sum;
        }
    }
}

void el_dequantize_row_q8_k(const void *vx, float *y, int64_t n) {
    const el_block_q8_k *x = vx;
    for (int64_t b = 0; b < n / EL_QK_K; b++)
        for (int i = 0; i < EL_QK_K; i++) *y++ = x[b].d * (float)x[b].qs[i];
}

// ---------------------------------------------------------------- validation

static int f16_bad(uint16_t h) { return (h & 0x7C00) == 0x7C00; }

// Only the scale fields are read. For Q8_0 that is 2 of every 34 bytes (6%),
// though every cache line is still touched; see docs/formats.md.
int64_t el_quant_find_bad_block(int dtype, const void *data, size_t nbytes) {
    const el_dtype_traits *t = el_dtype_info(dtype);
    if (!t || t->block_size == 1) return -1;
    const unsigned char *p = data;
    int64_t nb = (int64_t)(nbytes / t->type_size);
    uint16_t h[2];
    for (int64_t b = 0; b < nb; b++, p += t->type_size) {
        switch (dtype) {
        case EL_DTYPE_Q8_0:
        case EL_DTYPE_Q4_0:
            memcpy(h, p, 2);
            if (f16_bad(h[0])) return b;
            break;
        case EL_DTYPE_Q4_K:
            memcpy(h, p, 4);
            if (f16_bad(h[0]) || f16_bad(h[1])) return b;
            break;
        case EL_DTYPE_Q6_K:
            memcpy(h, p + offsetof(el_block_q6_k, d), 2);
            if (f16_bad(h[0])) return b;
            break;
        default:
            return -1;
        }
    }
    return -1;
}
