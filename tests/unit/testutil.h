// Shared helpers for unit tests: paths to reference files, temp files, RNG.
#ifndef EL_TESTUTIL_H
#define EL_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

// Path under ../shared/models (static buffer, valid until the next call).
const char *tu_model_path(const char *rel);
// A fresh path in the build's temp folder (static buffer, valid until next call).
const char *tu_tmp_path(const char *name);
// Writes bytes to a temp file and returns its path (static buffer).
const char *tu_write_tmp(const char *name, const void *data, size_t n);
// Deterministic xorshift RNG.
uint64_t tu_rand(uint64_t *state);
float tu_randf(uint64_t *state);  // uniform in [-1, 1)

#endif
