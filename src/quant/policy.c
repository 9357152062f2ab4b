// Which dtype each tensor of a model gets when a file is quantized.
#include <ctype.h>
#include <string.h>

#include "edgellm/quant.h"

int el_qtarget_parse(const char *name, el_qtarget *out) {
    char s[16];
    size_t n = strlen(name);
    if (n >= sizeof s) return -1;
    for (size_t i = 0; i <= n; i++) s[i] = (char)tolower((unsigned char)name[i]);
    out->preset = EL_QTYPE_PLAIN;
    if (!strcmp(s, "q4_k_m")) {
        out->preset = EL_QTYPE_Q4_K_M;
        out->dtype = EL_DTYPE_Q4_K;
        return 0;
    }
    static const int ok[] = {EL_DTYPE_F32, EL_DTYPE_F16, EL_DTYPE_BF16, EL_DTYPE_Q8_0,
                             EL_DTYPE_Q4_0, EL_DTYPE_Q4_K, EL_DTYPE_Q6_K};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (!strcmp(s, el_dtype_name(ok[i]))) {
            out->dtype = ok[i];
            return 0;
        }
    return -1;
}

// LLAMA_FTYPE_* numbers as other GGUF tools read general.file_type.
uint32_t el_qtarget_file_type(const el_qtarget *t) {
    if (t->preset == EL_QTYPE_Q4_K_M) return 15;
    switch (t->dtype) {
    case EL_DTYPE_F32: return 0;
    case EL_DTYPE_F16: return 1;
    case EL_DTYPE_Q4_0: return 2;
    case EL_DTYPE_Q8_0: return 7;
    case EL_DTYPE_Q4_K: return 14;  // Q4_K_S: every matrix Q4_K
    case EL_DTYPE_Q6_K: return 18;
    case EL_DTYPE_BF16: return 32;
    }
    return 0;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

// Fallbacks never lose precision against the wanted type: Q4_K and Q6_K go to
// Q8_0 (we have no Q5_0, and Q4_0 is coarser than Q4_K), Q8_0 and Q4_0 to F16.
static int fallback(int dtype) {
    switch (dtype) {
    case EL_DTYPE_Q4_K:
    case EL_DTYPE_Q6_K: return EL_DTYPE_Q8_0;
    case EL_DTYPE_Q8_0:
    case EL_DTYPE_Q4_0: return EL_DTYPE_F16;
    }
    return EL_DTYPE_F32;
}

int el_quant_choose(const el_qtarget *t, const char *name, int n_dims, const int64_t *ne, int src_dtype,
                    int *wanted, const char **why) {
    *why = NULL;
    if (n_dims < 2 || strstr(name, "norm")) {
        *wanted = EL_DTYPE_F32;
        return EL_DTYPE_F32;
    }
    // projector files: the patch embedding (a convolution kernel, [P, P, 3,
    // width]) and the position embeddings are added and convolved, not
    // multiplied row by row; like the ecosystem's tools we keep them as they are
    if (n_dims > 2 || strstr(name, "position_embd")) {
        *wanted = src_dtype;
        return src_dtype;
    }
    int want = t->dtype;
    if (t->preset == EL_QTYPE_Q4_K_M &&
        (ends_with(name, "attn_v.weight") || ends_with(name, "ffn_down.weight") || !strcmp(name, "output.weight")))
        want = EL_DTYPE_Q6_K;
    *wanted = want;
    int dt = want;
    while (dt != EL_DTYPE_F32 && ne[0] % el_dtype_info(dt)->block_size) {
        *why = dt == EL_DTYPE_Q4_K || dt == EL_DTYPE_Q6_K ? "rows are not a multiple of 256 elements"
                                                          : "rows are not a multiple of 32 elements";
        dt = fallback(dt);
    }
    return dt;
}
