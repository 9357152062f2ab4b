// A string -> index hash map used to reject duplicate keys and tensor names in
// linear time and to look them up afterwards. Strings are borrowed, not copied.
#ifndef EL_FORMAT_STRMAP_H
#define EL_FORMAT_STRMAP_H

#include <stddef.h>
#include <stdint.h>

#define EL_STRMAP_NONE SIZE_MAX

typedef struct {
    const char *s;  // NULL: empty slot
    size_t len;
    size_t idx;
} el_strmap_slot;

typedef struct {
    el_strmap_slot *slots;
    size_t cap;  // power of two, or 0 before the first insert
    size_t n;
    uint64_t seed;
} el_strmap;

void el_strmap_init(el_strmap *m);
void el_strmap_free(el_strmap *m);
// The idx stored for s[0..len), or EL_STRMAP_NONE.
size_t el_strmap_get(const el_strmap *m, const char *s, size_t len);
// Adds s -> idx (s must stay valid and must not be present yet). -1 if out of memory.
int el_strmap_put(el_strmap *m, const char *s, size_t len, size_t idx);

#endif
