// Runs one tile kernel (el_gemm_kernel of a dtype at an ISA level) REPS times
// on random weights and activations, and nothing else that depends on REPS,
// so that an instruction count of two runs that differ only in REPS (or in K)
// is the kernel's. bench/arm64_block_cost.sh counts under qemu-aarch64.
// With "packed" last, the kernel on the packed copy (el_matmul_pack; ROWS a
// multiple of 32). Build: see bench/arm64_block_cost.sh.
// Usage: block_cost DTYPE ISA K ROWS TOKS REPS [packed]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/kernels.h"

static const char *isa_names[] = {"scalar", "avx2", "avx512", "neon", "dotprod", "i8mm"};

int main(int argc, char **argv) {
    if (argc != 7 && !(argc == 8 && !strcmp(argv[7], "packed"))) {
        fprintf(stderr, "usage: %s DTYPE ISA K ROWS TOKS REPS [packed]\n", argv[0]);
        return 2;
    }
    int dtype = -1, isa = -1;
    for (int t = 0; t < EL_DTYPE_COUNT; t++)
        if (el_dtype_info(t) && el_dtype_info(t)->name && !strcmp(el_dtype_info(t)->name, argv[1])) dtype = t;
    for (int i = 0; i < 6; i++)
        if (!strcmp(isa_names[i], argv[2])) isa = i;
    int k = atoi(argv[3]), rows = atoi(argv[4]), toks = atoi(argv[5]), reps = atoi(argv[6]);
    if (dtype < 0 || isa < 0 || k <= 0 || rows <= 0 || toks <= 0 || reps < 0) {
        fprintf(stderr, "block_cost: bad arguments\n");
        return 2;
    }
    const el_dtype_traits *tr = el_dtype_info(dtype);
    el_gemm_fn g = el_gemm_kernel(dtype, (el_isa)isa);
    if (!g || k % tr->block_size) {
        fprintf(stderr, "block_cost: no %s kernel for %s with k = %d on this CPU\n", argv[2], argv[1], k);
        return 1;
    }
    size_t ldw = el_dtype_row_size(dtype, k), ldx = el_act_row_size(tr->vec_dot_type, k);
    float *f = malloc((size_t)k * sizeof(float)), *out = malloc((size_t)rows * toks * sizeof(float));
    char *w = malloc(ldw * rows), *x = el_malloc_aligned(ldx * toks);
    if (!f || !out || !w || !x) return 1;
    // Every weight byte 0x3C: each f16/bf16 in there is a normal number, so
    // no conversion takes a data-dependent path, and nothing is spent on
    // quantizing (the K-quant search would dwarf the kernel in the count).
    memset(w, 0x3C, ldw * rows);
    unsigned s = 1;
    for (int t = 0; t < toks; t++) {
        for (int i = 0; i < k; i++) f[i] = (float)((s = s * 1103515245u + 12345u) >> 16 & 0x7fff) / 16384.0f - 1.0f;
        el_act_quantize(tr->vec_dot_type, f, x + ldx * t, k);
    }
    if (argc == 8) {  // the packed copy of these rows, read by the level's packed kernel
        el_tensor W = {"w", dtype, 2, {k, rows, 1, 1}, w, ldw * rows, NULL, 0, 0, NULL};
        int64_t prows;
        size_t bytes = el_matmul_pack_size(&W, (el_isa)isa, &prows);
        g = el_gemm_packed_kernel(dtype, (el_isa)isa);
        if (!bytes || !g || prows != rows) {
            fprintf(stderr, "block_cost: no packed %s kernel for %s with %d rows\n", argv[2], argv[1], rows);
            return 1;
        }
        char *p = el_malloc_aligned(bytes);
        if (!p) return 1;
        el_matmul_pack(&W, prows, p);
        w = p, ldw = bytes / (size_t)(prows / 32);  // bytes per packed unit of 32 rows
    }
    for (int i = 0; i < reps; i++) g(k, w, ldw, rows, x, ldx, toks, out, (size_t)rows);
    printf("%g\n", (double)out[0]);
    return 0;
}
