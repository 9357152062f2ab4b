// Open-addressing hash map from borrowed strings to array indices.
#include "strmap.h"

#include <stdlib.h>
#include <string.h>

#include "edgellm/core.h"

void el_strmap_init(el_strmap *m) {
    memset(m, 0, sizeof *m);
    // Seeding from the map's own address (randomised by ASLR) means a crafted
    // file cannot easily steer every name into one bucket and make parsing quadratic.
    m->seed = el_fnv1a(EL_FNV_INIT, &m, sizeof m);
}

void el_strmap_free(el_strmap *m) {
    free(m->slots);
    m->slots = NULL;
    m->cap = m->n = 0;
}

static uint64_t hash(const el_strmap *m, const char *s, size_t len) {
    uint64_t h = el_fnv1a(m->seed, s, len);
    return h ^ (h >> 29);
}

size_t el_strmap_get(const el_strmap *m, const char *s, size_t len) {
    if (!m->cap) return EL_STRMAP_NONE;
    size_t mask = m->cap - 1;
    for (size_t i = (size_t)hash(m, s, len) & mask;; i = (i + 1) & mask) {
        const el_strmap_slot *e = &m->slots[i];
        if (!e->s) return EL_STRMAP_NONE;
        if (e->len == len && !memcmp(e->s, s, len)) return e->idx;
    }
}

static void insert(el_strmap_slot *slots, size_t mask, uint64_t h, el_strmap_slot e) {
    size_t i = (size_t)h & mask;
    while (slots[i].s) i = (i + 1) & mask;
    slots[i] = e;
}

int el_strmap_put(el_strmap *m, const char *s, size_t len, size_t idx) {
    if ((m->n + 1) * 2 > m->cap) {  // keep the load factor at or below one half
        size_t ncap = m->cap ? m->cap * 2 : 16;
        if (ncap < m->cap) return -1;
        el_strmap_slot *ns = el_calloc(ncap, sizeof *ns);
        if (!ns) return -1;
        for (size_t i = 0; i < m->cap; i++)
            if (m->slots[i].s) insert(ns, ncap - 1, hash(m, m->slots[i].s, m->slots[i].len), m->slots[i]);
        free(m->slots);
        m->slots = ns;
        m->cap = ncap;
    }
    insert(m->slots, m->cap - 1, hash(m, s, len), (el_strmap_slot){s, len, idx});
    m->n++;
    return 0;
}
