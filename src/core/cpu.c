// CPU feature detection, done once; EL_ISA in the environment can lower the level.
#include "edgellm/core.h"

#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <cpuid.h>

static unsigned long long xgetbv0(void) {
    unsigned eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

static el_isa detect(int *vnni, int *amd) {
    unsigned a, b, c, d;
    *vnni = *amd = 0;
    // the vendor string is ebx, edx, ecx of leaf 0: "Auth" "enti" "cAMD"
    if (__get_cpuid(0, &a, &b, &c, &d)) *amd = b == 0x68747541u && d == 0x69746e65u && c == 0x444d4163u;
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
#elif defined(__aarch64__)
#include <sys/auxv.h>

// Linux's AArch64 hwcap bits (asm/hwcap.h), spelled out so that the build
// needs no kernel headers of the target.
#define HWCAP_ASIMD_BIT (1UL << 1)
#define HWCAP_ASIMDDP_BIT (1UL << 20)
#define HWCAP2_I8MM_BIT (1UL << 13)

static el_isa detect(int *vnni, int *amd) {
    *vnni = *amd = 0;
    unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
    if (!(hw & HWCAP_ASIMD_BIT)) return EL_ISA_SCALAR;
    if (!(hw & HWCAP_ASIMDDP_BIT)) return EL_ISA_NEON;
    // every i8mm core (Armv8.6) has dotprod too; the i8mm level uses both
    return hw2 & HWCAP2_I8MM_BIT ? EL_ISA_I8MM : EL_ISA_DOTPROD;
}
#else
static el_isa detect(int *vnni, int *amd) {
    *vnni = *amd = 0;
    return EL_ISA_SCALAR;
}
#endif

// EL_ISA names of this architecture's levels (others are ignored).
static const struct {
    const char *name;
    el_isa isa;
} isa_names[] = {
    {"scalar", EL_ISA_SCALAR},
#if defined(__x86_64__)
    {"avx2", EL_ISA_AVX2},       {"avx512", EL_ISA_AVX512},
#elif defined(__aarch64__)
    {"neon", EL_ISA_NEON},       {"dotprod", EL_ISA_DOTPROD}, {"i8mm", EL_ISA_I8MM},
#endif
};

// Detected once and kept: cpuid traps to the hypervisor on a virtual
// machine, and kernels ask per call (attention asked per head and panel, and
// spent 40% of a 128-token prompt's attention time in cpuid). A race only
// computes it twice.
static _Atomic int cached_isa = -1, cached_vnni = -1, cached_amd = -1;

static void fill_cache(void) {
    int vnni, amd;
    el_isa isa = detect(&vnni, &amd);
    const char *env = getenv("EL_ISA");
    if (env) {
        el_isa want = isa;
        for (size_t i = 0; i < sizeof isa_names / sizeof isa_names[0]; i++)
            if (!strcmp(env, isa_names[i].name)) want = isa_names[i].isa;
        if (want < isa) isa = want;
    }
    atomic_store(&cached_vnni, isa == EL_ISA_AVX512 && vnni);
    atomic_store(&cached_amd, amd);
    atomic_store(&cached_isa, (int)isa);
}

el_isa el_cpu_isa(void) {
    int isa = atomic_load(&cached_isa);
    if (isa < 0) {
        fill_cache();
        isa = atomic_load(&cached_isa);
    }
    return (el_isa)isa;
}

int el_cpu_has_avx512vnni(void) {
    if (atomic_load(&cached_isa) < 0) fill_cache();
    return atomic_load(&cached_vnni);
}

int el_cpu_is_amd(void) {
    if (atomic_load(&cached_isa) < 0) fill_cache();
    return atomic_load(&cached_amd);
}

size_t el_cpu_l2_bytes(void) {
    static _Atomic long cached = -1;  // a race only computes it twice
    long v = atomic_load_explicit(&cached, memory_order_relaxed);
    if (v < 0) {
        v = 0;
#ifdef _SC_LEVEL2_CACHE_SIZE
        v = sysconf(_SC_LEVEL2_CACHE_SIZE);
        if (v < 0) v = 0;
#endif
        atomic_store_explicit(&cached, v, memory_order_relaxed);
    }
    return (size_t)v;
}

const char *el_isa_name(el_isa isa) {
    switch (isa) {
    case EL_ISA_SCALAR: return "scalar";
    case EL_ISA_AVX2: return "avx2";
    case EL_ISA_AVX512: return "avx512";
    case EL_ISA_NEON: return "neon";
    case EL_ISA_DOTPROD: return "dotprod";
    case EL_ISA_I8MM: return "i8mm";
    }
    return "?";
}
