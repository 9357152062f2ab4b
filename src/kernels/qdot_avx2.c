// AVX2 tile kernels (placeholder until written).
#include "qdot.h"
el_gemm_fn el_gemm_avx2(int dtype) { (void)dtype; return NULL; }
