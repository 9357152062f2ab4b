// A small strict JSON reader (RFC 8259) for node profiles and other inputs
// that come from files or peers: depth and size are capped, errors give the
// line and column.
#ifndef EDGELLM_JSON_H
#define EDGELLM_JSON_H

#include <stddef.h>

#include "edgellm/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { EL_JSON_NULL, EL_JSON_BOOL, EL_JSON_NUMBER, EL_JSON_STRING, EL_JSON_ARRAY, EL_JSON_OBJECT } el_json_type;

typedef struct el_json {
    el_json_type type;
    double num;           // NUMBER; BOOL as 0/1
    char *str;            // STRING (NUL-terminated, may contain NUL: see len)
    size_t len;           // STRING length / number of ARRAY items or OBJECT members
    struct el_json *items;  // ARRAY items, OBJECT values
    char **keys;          // OBJECT keys
} el_json;

#define EL_JSON_MAX_DEPTH 64

// Parses text[0..len). name prefixes error messages ("node.json:3:14: ...").
el_status el_json_parse(const char *text, size_t len, const char *name, el_json **out, el_error *err);
void el_json_free(el_json *j);

// Member of an object (NULL if absent or j is not an object).
const el_json *el_json_get(const el_json *j, const char *key);
// Number value, or dflt if j is NULL or not a number.
double el_json_num(const el_json *j, double dflt);
// String value, or NULL.
const char *el_json_str(const el_json *j);

#ifdef __cplusplus
}
#endif
#endif
