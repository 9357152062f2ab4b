// The binary heap of candidate merges (tok_pair) and the merge loop both BPE
// kinds use.
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

el_status tok_merge_run(tok_symbol *sym, int32_t n, tok_heap *h, tok_try_pair_fn try_pair, void *enc, tok_ids *out,
                        el_error *err) {
    h->n = 0;
    if (n <= 0) return EL_OK;
    for (int32_t i = 0; i + 1 < n; i++)
        if (try_pair(enc, i, i + 1)) goto nomem;
    while (h->n > 0) {
        tok_pair p = tok_heap_pop(h);
        tok_symbol *l = &sym[p.left];
        // Stale if either side has merged since: the left one would be gone or
        // longer, or point at a different (or longer) right neighbour.
        if (l->len == 0 || l->next != p.right || l->len + sym[p.right].len != p.len) continue;
        tok_symbol *r = &sym[p.right];
        l->len = p.len;
        l->id = p.id;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = p.left;
        r->len = 0;
        if (try_pair(enc, l->prev, p.left) || try_pair(enc, p.left, l->next)) goto nomem;
    }
    for (int32_t i = 0; i >= 0; i = sym[i].next)
        if (tok_ids_push(out, sym[i].id)) goto nomem;
    return EL_OK;
nomem:
    return el_err(err, EL_ERR_NOMEM, "out of memory encoding a prompt");
}
