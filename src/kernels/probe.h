// Internal to src/kernels: the instruction-set-specific loops of the probes.
#ifndef EL_KERNELS_PROBE_H
#define EL_KERNELS_PROBE_H

#include <stddef.h>
#include <stdint.h>

// Runs iters rounds of independent FMA chains; returns the flops executed.
double el_probe_fma_avx2(long iters);
double el_probe_fma_avx512(long iters);
// Runs iters rounds of vpdpbusd (AVX512-VNNI): 32 on 16 endless chains, or
// with block set 64 as 8 blocks of a Q8_0/Q4_0 kernel (each a seed, 8
// vpdpbusd, then a convert, a multiply and an FMA); returns the integer ops
// executed (2 per multiply-add).
double el_probe_dot_avx512(long iters, int block);
// Reads bytes (64-byte aligned, multiple of 256) with vector loads; returns
// a value derived from the data so the loads cannot be dropped.
uint64_t el_probe_read_avx2(const void *buf, size_t bytes);
// The same on AArch64 (probe_neon.c): 12 chains of 4-lane FMAs; the read stream.
double el_probe_fma_neon(long iters);
uint64_t el_probe_read_neon(const void *buf, size_t bytes);

#endif
