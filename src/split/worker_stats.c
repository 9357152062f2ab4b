// A worker's running figures: written by its loop, read by a panel's thread.
#include <stdatomic.h>
#include <stdlib.h>

#include "edgellm/split.h"

struct el_worker_stats {
    atomic_uint_fast64_t requests, bytes_received, busy_ns, kv_bytes;
    atomic_int sessions;
};

el_worker_stats *el_worker_stats_new(void) { return calloc(1, sizeof(el_worker_stats)); }

void el_worker_stats_free(el_worker_stats *s) { free(s); }

void el_worker_stats_note(el_worker_stats *s, size_t bytes, uint64_t busy_ns) {
    atomic_fetch_add_explicit(&s->requests, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->bytes_received, bytes, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->busy_ns, busy_ns, memory_order_relaxed);
}

void el_worker_stats_set(el_worker_stats *s, int sessions, size_t kv_bytes) {
    atomic_store_explicit(&s->sessions, sessions, memory_order_relaxed);
    atomic_store_explicit(&s->kv_bytes, kv_bytes, memory_order_relaxed);
}

void el_worker_stats_read(const el_worker_stats *s, el_worker_figures *out) {
    el_worker_stats *m = (el_worker_stats *)s;  // atomic loads take non-const pointers in C11
    out->requests = atomic_load_explicit(&m->requests, memory_order_relaxed);
    out->bytes_received = atomic_load_explicit(&m->bytes_received, memory_order_relaxed);
    out->busy_ns = atomic_load_explicit(&m->busy_ns, memory_order_relaxed);
    out->kv_bytes = atomic_load_explicit(&m->kv_bytes, memory_order_relaxed);
    out->sessions = atomic_load_explicit(&m->sessions, memory_order_relaxed);
}
