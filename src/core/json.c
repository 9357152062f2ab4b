// Strict JSON parsing with bounded depth; every read is checked against the end.
#include "edgellm/json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *s, *end, *start;
    const char *name;
    el_error *err;
    int depth;
} parser;

static el_status fail(parser *p, const char *what) {
    int line = 1, col = 1;
    for (const char *c = p->start; c < p->s && c < p->end; c++) {
        if (*c == '\n') line++, col = 1;
        else col++;
    }
    return el_err(p->err, EL_ERR_FORMAT, "%s:%d:%d: %s", p->name, line, col, what);
}

static void skip_ws(parser *p) {
    while (p->s < p->end && (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r')) p->s++;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 63)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | (cp >> 6 & 63)); o[2] = (char)(0x80 | (cp & 63));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | (cp >> 12 & 63));
    o[2] = (char)(0x80 | (cp >> 6 & 63)); o[3] = (char)(0x80 | (cp & 63));
    return 4;
}

static int read_hex4(parser *p, unsigned *out) {
    if (p->end - p->s < 4) return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p->s[i]);
        if (h < 0) return -1;
        v = v << 4 | (unsigned)h;
    }
    p->s += 4;
    *out = v;
    return 0;
}

// Parses a string at p->s (on the opening quote); the result is NUL-terminated.
static el_status parse_string(parser *p, char **out, size_t *out_len) {
    p->s++;
    // the decoded string is never longer than the raw text
    const char *q = p->s;
    while (q < p->end && *q != '"') q += *q == '\\' && q + 1 < p->end ? 2 : 1;
    if (q >= p->end) return fail(p, "unterminated string");
    char *buf = malloc((size_t)(q - p->s) + 1);
    if (!buf) return el_err(p->err, EL_ERR_NOMEM, "%s: out of memory", p->name);
    size_t n = 0;
    while (*p->s != '"') {
        unsigned char c = (unsigned char)*p->s;
        if (c < 0x20) { free(buf); return fail(p, "control character in string"); }
        if (c != '\\') { buf[n++] = (char)c; p->s++; continue; }
        p->s++;
        char e = *p->s++;
        switch (e) {
        case '"': buf[n++] = '"'; break;
        case '\\': buf[n++] = '\\'; break;
        case '/': buf[n++] = '/'; break;
        case 'b': buf[n++] = '\b'; break;
        case 'f': buf[n++] = '\f'; break;
        case 'n': buf[n++] = '\n'; break;
        case 'r': buf[n++] = '\r'; break;
        case 't': buf[n++] = '\t'; break;
        case 'u': {
            unsigned cp;
            if (read_hex4(p, &cp)) { free(buf); return fail(p, "bad \\u escape"); }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned lo;
                if (p->end - p->s < 6 || p->s[0] != '\\' || p->s[1] != 'u') { free(buf); return fail(p, "lone surrogate"); }
                p->s += 2;
                if (read_hex4(p, &lo) || lo < 0xDC00 || lo > 0xDFFF) { free(buf); return fail(p, "bad surrogate pair"); }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                free(buf);
                return fail(p, "lone surrogate");
            }
            // a \u escape (6 raw bytes) or a pair (12) never decodes to more bytes than it took
            n += (size_t)put_utf8(buf + n, cp);
            break;
        }
        default: free(buf); return fail(p, "bad escape");
        }
    }
    p->s++;
    buf[n] = 0;
    *out = buf;
    *out_len = n;
    return EL_OK;
}

static el_status parse_value(parser *p, el_json *v);

static el_status append(parser *p, el_json *v, size_t *cap, char *key) {
    if (v->len == *cap) {
        size_t nc = *cap ? *cap * 2 : 4;
        el_json *items = realloc(v->items, nc * sizeof *items);
        if (!items) return el_err(p->err, EL_ERR_NOMEM, "%s: out of memory", p->name);
        v->items = items;
        if (v->type == EL_JSON_OBJECT) {
            char **keys = realloc(v->keys, nc * sizeof *keys);
            if (!keys) return el_err(p->err, EL_ERR_NOMEM, "%s: out of memory", p->name);
            v->keys = keys;
        }
        *cap = nc;
    }
    memset(&v->items[v->len], 0, sizeof v->items[0]);
    if (v->type == EL_JSON_OBJECT) v->keys[v->len] = key;
    v->len++;
    return EL_OK;
}

static el_status parse_container(parser *p, el_json *v, int object) {
    if (++p->depth > EL_JSON_MAX_DEPTH) return fail(p, "nesting too deep");
    v->type = object ? EL_JSON_OBJECT : EL_JSON_ARRAY;
    p->s++;
    size_t cap = 0;
    skip_ws(p);
    if (p->s < p->end && *p->s == (object ? '}' : ']')) { p->s++; p->depth--; return EL_OK; }
    for (;;) {
        char *key = NULL;
        skip_ws(p);
        if (object) {
            size_t klen;
            if (p->s >= p->end || *p->s != '"') return fail(p, "expected a key string");
            el_status st = parse_string(p, &key, &klen);
            if (st) return st;
            skip_ws(p);
            if (p->s >= p->end || *p->s != ':') { free(key); return fail(p, "expected ':'"); }
            p->s++;
        }
        el_status st = append(p, v, &cap, key);
        if (st) { free(key); return st; }
        if ((st = parse_value(p, &v->items[v->len - 1]))) return st;
        skip_ws(p);
        if (p->s >= p->end) return fail(p, "unexpected end of input");
        if (*p->s == ',') { p->s++; continue; }
        if (*p->s == (object ? '}' : ']')) { p->s++; break; }
        return fail(p, object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
    p->depth--;
    return EL_OK;
}

static el_status parse_number(parser *p, el_json *v) {
    const char *b = p->s;
    if (p->s < p->end && *p->s == '-') p->s++;
    if (p->s >= p->end) return fail(p, "bad number");
    if (*p->s == '0') p->s++;
    else if (*p->s >= '1' && *p->s <= '9') while (p->s < p->end && *p->s >= '0' && *p->s <= '9') p->s++;
    else return fail(p, "bad number");
    if (p->s < p->end && *p->s == '.') {
        p->s++;
        if (p->s >= p->end || *p->s < '0' || *p->s > '9') return fail(p, "bad number");
        while (p->s < p->end && *p->s >= '0' && *p->s <= '9') p->s++;
    }
    if (p->s < p->end && (*p->s == 'e' || *p->s == 'E')) {
        p->s++;
        if (p->s < p->end && (*p->s == '+' || *p->s == '-')) p->s++;
        if (p->s >= p->end || *p->s < '0' || *p->s > '9') return fail(p, "bad number");
        while (p->s < p->end && *p->s >= '0' && *p->s <= '9') p->s++;
    }
    char tmp[64];
    size_t n = (size_t)(p->s - b);
    if (n >= sizeof tmp) return fail(p, "number too long");
    memcpy(tmp, b, n);
    tmp[n] = 0;
    v->type = EL_JSON_NUMBER;
    v->num = strtod(tmp, NULL);
    if (!isfinite(v->num)) return fail(p, "number out of range");
    return EL_OK;
}

static int literal(parser *p, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(p->end - p->s) < n || memcmp(p->s, word, n)) return 0;
    p->s += n;
    return 1;
}

static el_status parse_value(parser *p, el_json *v) {
    skip_ws(p);
    if (p->s >= p->end) return fail(p, "unexpected end of input");
    char c = *p->s;
    if (c == '{') return parse_container(p, v, 1);
    if (c == '[') return parse_container(p, v, 0);
    if (c == '"') {
        v->type = EL_JSON_STRING;
        return parse_string(p, &v->str, &v->len);
    }
    if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p, v);
    if (literal(p, "true")) { v->type = EL_JSON_BOOL; v->num = 1; return EL_OK; }
    if (literal(p, "false")) { v->type = EL_JSON_BOOL; v->num = 0; return EL_OK; }
    if (literal(p, "null")) { v->type = EL_JSON_NULL; return EL_OK; }
    return fail(p, "unexpected character");
}

static void free_value(el_json *v) {
    if (v->type == EL_JSON_STRING) free(v->str);
    if (v->type == EL_JSON_ARRAY || v->type == EL_JSON_OBJECT) {
        for (size_t i = 0; i < v->len; i++) {
            free_value(&v->items[i]);
            if (v->keys) free(v->keys[i]);
        }
        free(v->items);
        free(v->keys);
    }
}

el_status el_json_parse(const char *text, size_t len, const char *name, el_json **out, el_error *err) {
    *out = NULL;
    el_json *root = calloc(1, sizeof *root);
    if (!root) return el_err(err, EL_ERR_NOMEM, "%s: out of memory", name);
    parser p = {text, text + len, text, name, err, 0};
    el_status st = parse_value(&p, root);
    if (!st) {
        skip_ws(&p);
        if (p.s != p.end) st = fail(&p, "trailing characters after the value");
    }
    if (st) {
        el_json_free(root);
        return st;
    }
    *out = root;
    return EL_OK;
}

void el_json_free(el_json *j) {
    if (!j) return;
    free_value(j);
    free(j);
}

const el_json *el_json_get(const el_json *j, const char *key) {
    if (!j || j->type != EL_JSON_OBJECT) return NULL;
    for (size_t i = 0; i < j->len; i++)
        if (!strcmp(j->keys[i], key)) return &j->items[i];
    return NULL;
}

double el_json_num(const el_json *j, double dflt) { return j && j->type == EL_JSON_NUMBER ? j->num : dflt; }

const char *el_json_str(const el_json *j) { return j && j->type == EL_JSON_STRING ? j->str : NULL; }
