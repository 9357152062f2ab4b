// Armv8.2 dotprod tile kernels: the kernels of qdot_arm.h with sdot (four
// byte products summed into each int32 lane in one instruction). Only called
// after run-time detection found it (HWCAP_ASIMDDP).
#include <arm_neon.h>

static inline int32x4_t dot16(int32x4_t acc, int8x16_t a, int8x16_t b) { return vdotq_s32(acc, a, b); }
// sdot's lanes 0-1 read bytes 0-7, lanes 2-3 bytes 8-15: the pair's rows as they are
static inline int32x4_t pair_dot16(int32x4_t acc, int8x16_t a, int8x16_t b) { return vdotq_s32(acc, a, b); }

#define EL_ARM_PACKED
#include "qdot_arm.h"

el_gemm_fn el_gemm_dotprod(int dtype) { return int_kernels(dtype); }
el_gemm_fn el_gemm_packed_dotprod(int dtype) { return packed_kernels(dtype); }
