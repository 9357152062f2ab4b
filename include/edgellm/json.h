// The one JSON reader (RFC 8259) for everything edgellm reads as JSON: HTTP
// request bodies, node profiles, datasets, safetensors headers, Hugging Face
// config.json and tokenizer.json. Strict, with nesting capped, errors giving
// the line and column, and a memory cost bounded by the input: a parsed
// document holds at most 4 bytes per input byte (+ 24), allocated once.
//
// A document is an array of 8-byte values in document order (a container's
// items follow it); navigate it with the functions below. Pointers into a
// document stay valid until el_json_free.
#ifndef EDGELLM_JSON_H
#define EDGELLM_JSON_H

#include <stddef.h>
#include <stdio.h>

#include "edgellm/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { EL_JSON_NULL, EL_JSON_BOOL, EL_JSON_NUMBER, EL_JSON_STRING, EL_JSON_ARRAY, EL_JSON_OBJECT } el_json_type;

typedef struct el_json el_json;  // a value inside a parsed document

#define EL_JSON_MAX_DEPTH 64
#define EL_JSON_MAX_TEXT ((size_t)1 << 31)  // longer texts are refused

// Parses text[0..len). name prefixes error messages ("node.json:3:14: ...").
// *out is the document's root value; free it with el_json_free.
el_status el_json_parse(const char *text, size_t len, const char *name, el_json **out, el_error *err);
// Reads (at most max_bytes) and parses a JSON file; errors name the file.
el_status el_json_load(const char *path, size_t max_bytes, el_json **out, el_error *err);
void el_json_free(el_json *root);
// Bytes the document holds (at most 4 x the text's length + 24).
size_t el_json_bytes(const el_json *root);

// Every accessor accepts NULL (an absent value) and then answers as for a
// value of the wrong type.
el_json_type el_json_type_of(const el_json *j);  // EL_JSON_NULL for NULL
int el_json_is(const el_json *j, el_json_type t);
// Member of an object (NULL if absent or j is not an object). Objects are
// searched in order; with a key given twice, the first wins.
const el_json *el_json_get(const el_json *j, const char *key);
// Number value, or dflt if j is not a number.
double el_json_num(const el_json *j, double dflt);
// 1 for true, 0 for false, dflt otherwise.
int el_json_bool(const el_json *j, int dflt);
// String value (NUL-terminated; it may hold NUL bytes: see el_json_strlen), or NULL.
const char *el_json_str(const el_json *j);
size_t el_json_strlen(const el_json *j);
// Items of an array or members of an object; 0 for anything else.
size_t el_json_len(const el_json *j);
// Iteration: the first item (array) or first member's value (object), then
// the next one after cur, NULL at the end:
//     for (const el_json *v = el_json_first(a); v; v = el_json_next(a, v)) ...
const el_json *el_json_first(const el_json *j);
const el_json *el_json_next(const el_json *parent, const el_json *cur);
// Item i of an array (walks i items), or NULL.
const el_json *el_json_at(const el_json *j, size_t i);
// The key of member value v of object obj (v from el_json_first/next/get on obj).
const char *el_json_key(const el_json *obj, const el_json *v);

// Writes s as a quoted JSON string to f ('"', '\\' and control bytes escaped).
void el_json_write_str(FILE *f, const char *s);

#ifdef __cplusplus
}
#endif
#endif
