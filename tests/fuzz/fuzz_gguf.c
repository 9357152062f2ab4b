// libFuzzer target for the GGUF reader: every input must either be rejected
// with a one-line message naming it, or parse into a structure whose every
// pointer stays inside the input and whose lookups agree with its arrays.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/gguf.h"

#define CHECK(c) \
    do {         \
        if (!(c)) abort(); \
    } while (0)

static const uint8_t *lo, *hi;  // the input, for range checks
static volatile uint64_t sink;  // keeps the touched bytes from being optimised away

static void touch(const void *p, uint64_t n) {
    const uint8_t *b = p;
    if (!n) return;
    CHECK(b >= lo && n <= (uint64_t)(hi - b));
    sink += b[0] + b[n - 1];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    el_gguf *g = NULL;
    el_error err;
    lo = data;
    hi = data + size;
    if (el_gguf_open_memory(data, size, "fuzz.gguf", &g, &err)) {
        CHECK(!g);
        CHECK(!strncmp(err.msg, "fuzz.gguf: ", 11) && !strchr(err.msg, '\n'));
        return 0;
    }
    CHECK(g->version == 2 || g->version == 3);
    CHECK(g->alignment && !(g->alignment & (g->alignment - 1)));
    CHECK(g->data_offset % g->alignment == 0);

    for (uint64_t i = 0; i < g->n_kv; i++) {
        const el_gguf_kv *kv = &g->kv[i];
        CHECK(kv->key[0] && el_gguf_find(g, kv->key) == kv);
        uint64_t u;
        int64_t s;
        double d;
        int b;
        char buf[16];
        sink += el_gguf_get_u64(g, kv->key, &u) + el_gguf_get_i64(g, kv->key, &s) + el_gguf_get_f64(g, kv->key, &d) +
                el_gguf_get_bool(g, kv->key, &b) + el_gguf_get_str(g, kv->key, buf, sizeof buf);
        sink += strlen(el_gguf_type_name(kv->type));
        if (kv->type == EL_GGUF_STRING) {
            CHECK(strlen(buf) <= kv->v.str.len);
            touch(kv->v.str.ptr, kv->v.str.len);
        }
        if (kv->type != EL_GGUF_ARRAY) continue;
        CHECK(kv->arr_data >= (const void *)lo && kv->arr_data <= (const void *)hi);
        for (uint64_t j = 0; j <= kv->arr_n; j++) {  // one past the end must be refused
            int ok_f = el_gguf_arr_f64(kv, j, &d), ok_i = el_gguf_arr_i64(kv, j, &s);
            CHECK(j < kv->arr_n || (!ok_f && !ok_i));
            sink += (uint64_t)ok_f + (uint64_t)ok_i;
            if (kv->strs && j < kv->arr_n) touch(kv->strs[j].ptr, kv->strs[j].len);
        }
        CHECK(!kv->strs == (kv->arr_type != EL_GGUF_STRING));
    }

    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const el_gguf_tensor *t = &g->tensors[i];
        CHECK(el_gguf_find_tensor(g, t->name) == t);
        CHECK(t->offset % g->alignment == 0 && t->nbytes > 0);
        touch(t->data, t->nbytes);
        el_tensor view;
        el_gguf_tensor_view(t, &view);
        CHECK(el_tensor_nelements(&view) > 0 && view.nbytes == t->nbytes);
    }

    // Copying every key/value into a writer walks arrays of arrays again.
    el_gguf_writer *w = el_gguf_writer_new();
    CHECK(w && el_gguf_add_all_kv(w, g) == EL_OK);
    el_gguf_writer_free(w);
    el_gguf_close(g);
    return 0;
}
