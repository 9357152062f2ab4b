// libFuzzer target: the JSON reader, which parses request bodies, profiles,
// datasets, safetensors headers and Hugging Face files. For every input: no
// crash or overread; on success the document stays within its memory bound
// (4 bytes per input byte + 24), every value can be reached through the
// accessors, and printing it back (canonically) and parsing that gives the
// same canonical text.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/json.h"

typedef struct {
    char *p;
    size_t n, cap;
} out;

static void put(out *o, const char *s, size_t n) {
    if (o->n + n + 1 > o->cap) {
        o->cap = (o->n + n + 1) * 2;
        o->p = realloc(o->p, o->cap);
        if (!o->p) abort();
    }
    memcpy(o->p + o->n, s, n);
    o->n += n;
}

static void put_str(out *o, const char *s, size_t n) {
    put(o, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == '"' || c == '\\') {
            char e[8];
            snprintf(e, sizeof e, "\\u%04x", c);
            put(o, e, 6);
        } else {
            put(o, s + i, 1);
        }
    }
    put(o, "\"", 1);
}

static void print(out *o, const el_json *j) {
    char num[40];
    switch (el_json_type_of(j)) {
    case EL_JSON_NULL: put(o, "null", 4); break;
    case EL_JSON_BOOL: el_json_bool(j, 0) ? put(o, "true", 4) : put(o, "false", 5); break;
    case EL_JSON_NUMBER: put(o, num, (size_t)snprintf(num, sizeof num, "%.17g", el_json_num(j, 0))); break;
    case EL_JSON_STRING: put_str(o, el_json_str(j), el_json_strlen(j)); break;
    case EL_JSON_ARRAY:
    case EL_JSON_OBJECT: {
        int obj = el_json_is(j, EL_JSON_OBJECT);
        size_t n = 0;
        put(o, obj ? "{" : "[", 1);
        for (const el_json *v = el_json_first(j); v; v = el_json_next(j, v), n++) {
            if (n) put(o, ",", 1);
            if (obj) {
                const char *k = el_json_key(j, v);
                if (!k) abort();
                put_str(o, k, strlen(k));  // a key's NUL ends it, in both prints alike
                put(o, ":", 1);
            } else if (el_json_at(j, n) != v) {
                abort();
            }
            print(o, v);
        }
        if (n != el_json_len(j)) abort();
        put(o, obj ? "}" : "]", 1);
        break;
    }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    el_json *j;
    el_error e;
    if (el_json_parse((const char *)data, size, "fuzz.json", &j, &e) != EL_OK) return 0;
    if (el_json_bytes(j) > 4 * size + 24) abort();
    out a = {0}, b = {0};
    print(&a, j);
    el_json_get(j, "layers");
    el_json_free(j);
    if (el_json_parse(a.p, a.n, "again.json", &j, &e) != EL_OK) abort();
    print(&b, j);
    el_json_free(j);
    if (a.n != b.n || memcmp(a.p, b.p, a.n)) abort();
    free(a.p);
    free(b.p);
    return 0;
}
