// Internal to src/kernels: the instruction-set-specific loops of the probes.
#ifndef EL_KERNELS_PROBE_H
#define EL_KERNELS_PROBE_H

#include <stddef.h>
#include <stdint.h>

// Runs iters rounds of independent FMA chains; returns the flops executed.
double el_probe_fma_avx2(long iters);
double el_probe_fma_avx512(long iters);
// Reads bytes (64-byte aligned, multiple of 256) with vector loads; returns
// a value derived from the data so the loads cannot be dropped.
uint64_t el_probe_read_avx2(const void *buf, size_t bytes);

#endif
