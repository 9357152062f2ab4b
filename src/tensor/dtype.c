// The dtype trait table and conversions between f32 and the 16-bit float types.
#include <math.h>
#include <string.h>

#include "edgellm/quant.h"
#include "edgellm/tensor.h"
#include "edgellm/kernels.h"

float el_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {  // subnormal: renormalise
            int e = -1;
            do { e++; man <<= 1; } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3FF) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7F800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t el_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7FFFFFFF;
    if (absx >= 0x7F800000) return (uint16_t)(sign | 0x7C00 | (absx > 0x7F800000 ? 0x200 : 0));
    if (absx >= 0x477FF000) return (uint16_t)(sign | 0x7C00);  // rounds to inf
    if (absx < 0x38800000) {  // subnormal or zero in half
        // value = absx as float; half subnormal unit is 2^-24
        float a;
        memcpy(&a, &absx, 4);
        float scaled = a * 16777216.0f;  // / 2^-24
        uint32_t m = (uint32_t)scaled;
        float rem = scaled - (float)m;
        if (rem > 0.5f || (rem == 0.5f && (m & 1))) m++;
        return (uint16_t)(sign | m);
    }
    uint32_t exp = ((absx >> 23) - 127 + 15);
    uint32_t man = absx & 0x7FFFFF;
    uint32_t h = (exp << 10) | (man >> 13);
    uint32_t rest = man & 0x1FFF;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

float el_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t el_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7FFFFFFF) > 0x7F800000) return (uint16_t)((x >> 16) | 0x40);  // quiet NaN
    x += 0x7FFF + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

static void f32_to_f32(const void *src, float *dst, int64_t n) { memcpy(dst, src, (size_t)n * 4); }
static void f32_from_f32(const float *src, void *dst, int64_t n) { memcpy(dst, src, (size_t)n * 4); }

static void f16_to_f32(const void *src, float *dst, int64_t n) {
    const uint16_t *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = el_f16_to_f32(s[i]);
}
static void f16_from_f32(const float *src, void *dst, int64_t n) {
    uint16_t *d = dst;
    for (int64_t i = 0; i < n; i++) d[i] = el_f32_to_f16(src[i]);
}
static void bf16_to_f32(const void *src, float *dst, int64_t n) {
    const uint16_t *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = el_bf16_to_f32(s[i]);
}
static void bf16_from_f32(const float *src, void *dst, int64_t n) {
    uint16_t *d = dst;
    for (int64_t i = 0; i < n; i++) d[i] = el_f32_to_bf16(src[i]);
}

// Block codecs live in src/quant, dot products in src/kernels/qdot.c.
static const el_dtype_traits table[EL_DTYPE_COUNT] = {
    [EL_DTYPE_F32] = {"f32", 1, 4, f32_to_f32, f32_from_f32, EL_DTYPE_F32, el_vec_dot_f32},
    [EL_DTYPE_F16] = {"f16", 1, 2, f16_to_f32, f16_from_f32, EL_DTYPE_F32, el_vec_dot_f16},
    [EL_DTYPE_Q4_0] = {"q4_0", 32, 18, el_dequantize_row_q4_0, el_quantize_row_q4_0, EL_DTYPE_Q8_0, el_vec_dot_q4_0},
    [EL_DTYPE_Q4_1] = {"q4_1", 32, 20, NULL, NULL, 0, NULL},
    [EL_DTYPE_Q5_0] = {"q5_0", 32, 22, NULL, NULL, 0, NULL},
    [EL_DTYPE_Q5_1] = {"q5_1", 32, 24, NULL, NULL, 0, NULL},
    [EL_DTYPE_Q8_0] = {"q8_0", 32, 34, el_dequantize_row_q8_0, el_quantize_row_q8_0, EL_DTYPE_Q8_0, el_vec_dot_q8_0},
    [EL_DTYPE_Q8_1] = {"q8_1", 32, 36, NULL, NULL, 0, NULL},
    [EL_DTYPE_Q2_K] = {"q2_k", 256, 84, NULL, NULL, 0, NULL},
    [EL_DTYPE_Q3_K] = {"q3_k", 256, 110, NULL, NULL, 0, NULL},
    [EL_DTYPE_Q4_K] = {"q4_k", 256, 144, el_dequantize_row_q4_k, el_quantize_row_q4_k, EL_DTYPE_Q8_K, el_vec_dot_q4_k},
    [EL_DTYPE_Q5_K] = {"q5_k", 256, 176, NULL, NULL, 0, NULL},
    [EL_DTYPE_Q6_K] = {"q6_k", 256, 210, el_dequantize_row_q6_k, el_quantize_row_q6_k, EL_DTYPE_Q8_K, el_vec_dot_q6_k},
    [EL_DTYPE_Q8_K] = {"q8_k", 256, 292, el_dequantize_row_q8_k, el_quantize_row_q8_k, 0, NULL},
    [EL_DTYPE_I8] = {"i8", 1, 1, NULL, NULL, 0, NULL},
    [EL_DTYPE_I16] = {"i16", 1, 2, NULL, NULL, 0, NULL},
    [EL_DTYPE_I32] = {"i32", 1, 4, NULL, NULL, 0, NULL},
    [EL_DTYPE_I64] = {"i64", 1, 8, NULL, NULL, 0, NULL},
    [EL_DTYPE_F64] = {"f64", 1, 8, NULL, NULL, 0, NULL},
    [EL_DTYPE_BF16] = {"bf16", 1, 2, bf16_to_f32, bf16_from_f32, EL_DTYPE_F32, el_vec_dot_bf16},
};

const el_dtype_traits *el_dtype_info(int dtype) {
    if (dtype < 0 || dtype >= EL_DTYPE_COUNT || !table[dtype].name) return NULL;
    return &table[dtype];
}

const char *el_dtype_name(int dtype) {
    const el_dtype_traits *t = el_dtype_info(dtype);
    return t ? t->name : "unknown";
}

// GGUF's names of its tensor types (ggml_type), including those edgellm
// cannot read, so that an unsupported file names what it holds.
static const char *const gguf_names[] = {
    [0] = "F32",      [1] = "F16",      [2] = "Q4_0",    [3] = "Q4_1",    [6] = "Q5_0",    [7] = "Q5_1",
    [8] = "Q8_0",     [9] = "Q8_1",     [10] = "Q2_K",   [11] = "Q3_K",   [12] = "Q4_K",   [13] = "Q5_K",
    [14] = "Q6_K",    [15] = "Q8_K",    [16] = "IQ2_XXS", [17] = "IQ2_XS", [18] = "IQ3_XXS", [19] = "IQ1_S",
    [20] = "IQ4_NL",  [21] = "IQ3_S",   [22] = "IQ2_S",  [23] = "IQ4_XS", [24] = "I8",     [25] = "I16",
    [26] = "I32",     [27] = "I64",     [28] = "F64",    [29] = "IQ1_M",  [30] = "BF16",   [34] = "TQ1_0",
    [35] = "TQ2_0",   [39] = "MXFP4",
};

const char *el_dtype_gguf_name(int dtype) {
    if (dtype < 0 || dtype >= (int)(sizeof gguf_names / sizeof gguf_names[0]) || !gguf_names[dtype]) return NULL;
    return gguf_names[dtype];
}

size_t el_dtype_supported_list(char *buf, size_t n) {
    static const int order[] = {EL_DTYPE_F32, EL_DTYPE_F16, EL_DTYPE_BF16, EL_DTYPE_Q8_0, EL_DTYPE_Q4_0,
                                EL_DTYPE_Q4_K, EL_DTYPE_Q6_K};
    size_t o = 0;
    if (n) buf[0] = 0;
    for (size_t i = 0; i < sizeof order / sizeof order[0] && o < n; i++) {
        int w = snprintf(buf + o, n - o, "%s%s", i ? ", " : "", table[order[i]].name);
        if (w < 0) break;
        o += (size_t)w;
    }
    return o < n ? o : n;
}

int el_dtype_from_name(const char *name) {
    for (int i = 0; i < EL_DTYPE_COUNT; i++)
        if (table[i].name && !strcmp(table[i].name, name)) return i;
    return -1;
}

size_t el_dtype_row_size(int dtype, int64_t n) {
    const el_dtype_traits *t = el_dtype_info(dtype);
    if (!t || n < 0 || n % t->block_size) return 0;
    return (size_t)(n / t->block_size) * t->type_size;
}

int64_t el_tensor_nelements(const el_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->n_dims; i++) n *= t->ne[i];
    return n;
}

size_t el_tensor_row_size(const el_tensor *t) { return el_dtype_row_size(t->dtype, t->ne[0]); }

void el_tensor_row_f32(const el_tensor *t, int64_t r, float *dst) {
    size_t rs = el_tensor_row_size(t);
    el_dtype_info(t->dtype)->to_f32((const char *)t->data + (size_t)r * rs, dst, t->ne[0]);
}
