// Internal to src/kernels: the SIMD tile kernels of qdot_avx2.c and
// qdot_avx512.c, looked up by weight dtype (NULL if that file has none).
#ifndef EL_KERNELS_QDOT_H
#define EL_KERNELS_QDOT_H

#include "edgellm/kernels.h"

el_gemm_fn el_gemm_avx2(int dtype);
el_gemm_fn el_gemm_avx512(int dtype);

#endif
