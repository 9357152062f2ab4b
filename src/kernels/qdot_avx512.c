// AVX-512 tile kernels (placeholder until written).
#include "qdot.h"
el_gemm_fn el_gemm_avx512(int dtype) { (void)dtype; return NULL; }
