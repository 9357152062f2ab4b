// CPU feature detection, done once; EL_ISA in the environment can lower the level.
#include "edgellm/core.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>

static unsigned long long xgetbv0(void) {
    unsigned eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

static el_isa detect(int *vnni) {
    unsigned a, b, c, d;
    *vnni = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return EL_ISA_SCALAR;
    int osxsave = (c >> 27) & 1, fma = (c >> 12) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
    if (!osxsave || !avx) return EL_ISA_SCALAR;
    unsigned long long xcr0 = xgetbv0();
    if ((xcr0 & 6) != 6) return EL_ISA_SCALAR;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return EL_ISA_SCALAR;
    int avx2 = (b >> 5) & 1;
    // DQ too: the AVX-512 files are compiled with -mavx512dq
    int avx512f = (b >> 16) & 1, avx512dq = (b >> 17) & 1, avx512bw = (b >> 30) & 1, avx512vl = (b >> 31) & 1;
    int avx512vnni = (c >> 11) & 1;
    if (!(avx2 && fma && f16c)) return EL_ISA_SCALAR;
    if (avx512f && avx512dq && avx512bw && avx512vl && (xcr0 & 0xE6) == 0xE6) {
        *vnni = avx512vnni;
        return EL_ISA_AVX512;
    }
    return EL_ISA_AVX2;
}
#else
static el_isa detect(int *vnni) {
    *vnni = 0;
    return EL_ISA_SCALAR;
}
#endif

el_isa el_cpu_isa(void) {
    int vnni;
    el_isa isa = detect(&vnni);
    const char *env = getenv("EL_ISA");
    if (env) {
        el_isa want = isa;
        if (!strcmp(env, "scalar")) want = EL_ISA_SCALAR;
        else if (!strcmp(env, "avx2")) want = EL_ISA_AVX2;
        else if (!strcmp(env, "avx512")) want = EL_ISA_AVX512;
        if (want < isa) isa = want;
    }
    return isa;
}

int el_cpu_has_avx512vnni(void) {
    int vnni;
    el_isa isa = detect(&vnni);
    return isa == EL_ISA_AVX512 && el_cpu_isa() == EL_ISA_AVX512 && vnni;
}

const char *el_isa_name(el_isa isa) {
    switch (isa) {
    case EL_ISA_SCALAR: return "scalar";
    case EL_ISA_AVX2: return "avx2";
    case EL_ISA_AVX512: return "avx512";
    }
    return "?";
}
