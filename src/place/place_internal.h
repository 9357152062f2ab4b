// Inside src/place: a small open-addressing map from byte strings (borrowed)
// to indices, for names and block hashes.
#ifndef EDGELLM_PLACE_INTERNAL_H
#define EDGELLM_PLACE_INTERNAL_H

#include <stddef.h>

typedef struct {
    const void **keys;
    size_t *lens;
    int *vals;
    size_t n, cap;
} pl_map;

void pl_map_init(pl_map *m);
void pl_map_free(pl_map *m);
int pl_map_get(const pl_map *m, const void *key, size_t len);  // -1 when absent
int pl_map_put(pl_map *m, const void *key, size_t len, int val);

#endif
