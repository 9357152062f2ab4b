// The binary heap of candidate merges (tok_pair) both BPE merge loops use.
#include <stdlib.h>

#include "tok_internal.h"

// Does a come out of the heap before b? Higher key first, then leftmost.
static int before(const tok_pair *a, const tok_pair *b) {
    return a->key > b->key || (a->key == b->key && a->left < b->left);
}

int tok_heap_push(tok_heap *h, tok_pair p) {
    if (h->n == h->cap) {
        size_t ncap = h->cap ? h->cap * 2 : 64;
        tok_pair *nv = realloc(h->v, ncap * sizeof *nv);
        if (!nv) return -1;
        h->v = nv;
        h->cap = ncap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(&p, &h->v[parent])) break;
        h->v[i] = h->v[parent];
        i = parent;
    }
    h->v[i] = p;
    return 0;
}

tok_pair tok_heap_pop(tok_heap *h) {
    tok_pair top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && before(&h->v[c + 1], &h->v[c])) c++;
        if (!before(&h->v[c], &last)) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n) h->v[i] = last;
    return top;
}
