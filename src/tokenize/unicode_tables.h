// Code point classes for the BPE pre-tokenizers: letters (\p{L}), numbers
// (\p{N}) and White_Space (\s). The table is generated (unicode_tables.c).
#ifndef EL_UNICODE_TABLES_H
#define EL_UNICODE_TABLES_H

#include <stddef.h>
#include <stdint.h>

enum { TOK_CP_OTHER = 0, TOK_CP_LETTER = 1, TOK_CP_NUMBER = 2, TOK_CP_SPACE = 3 };

typedef struct {
    uint32_t first, last;
    uint8_t cls;
} tok_cp_range;

extern const tok_cp_range tok_cp_ranges[];
extern const size_t tok_cp_n_ranges;
extern const char tok_unicode_version[];

// The class of code point cp (binary search; ASCII answered directly).
int tok_cp_class(uint32_t cp);

#endif
