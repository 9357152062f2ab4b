// Strict JSON parsing into one allocation of 8-byte values, with bounded
// depth and a memory cost bounded by the input; every read is checked
// against the end of the text.
//
// Layout of a document: [header][values, in document order][string area].
// A value is 8 bytes. A number is its IEEE double (JSON numbers are finite).
// Anything else is a NaN pattern no finite number has: the top 12 bits set,
// a type in bits 48-51 and a 48-bit payload:
//   string          the byte offset from the value to its entry in the string
//                   area: the length (1 byte, or 0xFF and 4 bytes from 255 on),
//                   the bytes, a NUL
//   array / object  bits 0-31: the number of values inside it (all depths),
//                   so the next sibling is 1 + that many values on; bits
//                   32-47: its item count, saturated at 0xFFFF
// An object's members are a key (a string value) followed by its value.
//
// The bound: before parsing, one pass over the text counts the separators
// ([ { , :) outside strings, which bound the number of values, and the bytes
// of strings, which bound the string area; both are allocated at once. Each
// value but the first follows a separator of its own and has a byte of its
// own, so 8 bytes a value is at most 4 per byte of text, and a string's entry
// is no longer than the string was in the text (4 more bytes from 259 on,
// which its own bytes pay for): a document is at most 4 x len + 8 bytes, and
// 16 of header.
#include "edgellm/json.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct el_json {
    uint64_t v;
};

typedef struct {
    size_t bytes;  // the whole allocation
    size_t pad;    // keeps the values 16-byte aligned after the header
} doc_header;

enum { T_NULL = 1, T_FALSE, T_TRUE, T_STRING, T_ARRAY, T_OBJECT };
#define TAG_MARK 0xFFF0000000000000ULL
#define PAYLOAD 0x0000FFFFFFFFFFFFULL
#define MAX_COUNT 0xFFFFu

static uint64_t tag(int t, uint64_t payload) { return TAG_MARK | (uint64_t)t << 48 | (payload & PAYLOAD); }
static int tag_of(const el_json *j) {
    if ((j->v & TAG_MARK) != TAG_MARK) return 0;
    return (int)(j->v >> 48 & 0xF);  // 0: a number (non-finite patterns never occur)
}

// ---------------------------------------------------------------- sizing pass

// The closing quote of a string whose bytes start at p (past its opening
// quote), or end: a quote ends the string unless an odd number of
// backslashes precede it (a backslash always takes the next byte with it).
static const char *closing_quote(const char *p, const char *end) {
    for (const char *from = p;;) {
        const char *q = memchr(from, '"', (size_t)(end - from));
        if (!q) return end;
        const char *b = q;
        while (b > p && b[-1] == '\\') b--;
        if ((q - b) % 2 == 0) return q;
        from = q + 1;
    }
}

typedef struct {
    size_t values;  // upper bound on values
    size_t area;    // upper bound on string area bytes
} sizing;

// Counts separators outside strings and string bytes, mirroring how the
// parser steps through strings (a backslash takes the next byte with it).
static sizing size_text(const char *s, size_t len) {
    sizing z = {1, 0};
    const char *p = s, *end = s + len;
    while (p < end) {
        char c = *p++;
        if (c == '[' || c == '{' || c == ',' || c == ':') {
            z.values++;
        } else if (c == '"') {
            const char *start = p - 1;
            p = closing_quote(p, end);
            if (p < end) p++;
            size_t raw = (size_t)(p - start);  // with its quotes
            z.area += raw + (raw >= 257 ? 4 : 0);
        }
    }
    return z;
}

// ---------------------------------------------------------------- parser

typedef struct {
    const char *s, *end, *start;
    const char *name;
    el_error *err;
    int depth;
    el_json *vals;
    size_t n_vals, cap_vals;
    char *area;
    size_t n_area, cap_area;
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

// A new value slot; the sizing pass makes running out impossible for valid
// text, so running out means the text is not valid.
static el_json *new_value(parser *p) {
    if (p->n_vals == p->cap_vals) return NULL;
    return &p->vals[p->n_vals++];
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
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

static size_t put_utf8(char *o, unsigned cp) {
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

// Parses the string at p->s (on its opening quote) into value v.
static el_status parse_string(parser *p, el_json *v) {
    p->s++;
    const char *q = closing_quote(p->s, p->end);
    if (q >= p->end) return fail(p, "unterminated string");
    size_t raw = (size_t)(q - p->s), prefix = raw >= 255 ? 5 : 1;
    // the decoded string is never longer than the raw text
    if (p->cap_area - p->n_area < prefix + raw + 1) return fail(p, "unexpected string");
    char *entry = p->area + p->n_area, *o = entry + prefix;
    size_t n = 0;
    while (*p->s != '"') {
        unsigned char c = (unsigned char)*p->s;
        if (c < 0x20) return fail(p, "control character in string");
        if (c != '\\') {
            // a run of plain bytes at once
            const char *r = p->s;
            while (r < q && *r != '\\' && (unsigned char)*r >= 0x20) r++;
            memcpy(o + n, p->s, (size_t)(r - p->s));
            n += (size_t)(r - p->s);
            p->s = r;
            continue;
        }
        p->s++;
        char e = *p->s++;
        switch (e) {
        case '"': o[n++] = '"'; break;
        case '\\': o[n++] = '\\'; break;
        case '/': o[n++] = '/'; break;
        case 'b': o[n++] = '\b'; break;
        case 'f': o[n++] = '\f'; break;
        case 'n': o[n++] = '\n'; break;
        case 'r': o[n++] = '\r'; break;
        case 't': o[n++] = '\t'; break;
        case 'u': {
            unsigned cp;
            if (read_hex4(p, &cp)) return fail(p, "bad \\u escape");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned lo;
                if (p->end - p->s < 6 || p->s[0] != '\\' || p->s[1] != 'u') return fail(p, "lone surrogate");
                p->s += 2;
                if (read_hex4(p, &lo) || lo < 0xDC00 || lo > 0xDFFF) return fail(p, "bad surrogate pair");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return fail(p, "lone surrogate");
            }
            // a \u escape (6 raw bytes) or a pair (12) never decodes to more bytes than it took
            n += put_utf8(o + n, cp);
            break;
        }
        default: return fail(p, "bad escape");
        }
    }
    p->s++;
    o[n] = 0;
    if (prefix == 1) {
        entry[0] = (char)n;  // n <= raw < 255
    } else if (n < 255) {  // long in the text, short once decoded: a 1-byte length
        entry[0] = (char)n;
        memmove(entry + 1, o, n + 1);
        prefix = 1;
    } else {
        uint32_t n32 = (uint32_t)n;
        entry[0] = (char)0xFF;
        memcpy(entry + 1, &n32, 4);
    }
    v->v = tag(T_STRING, (uint64_t)(entry - (char *)v));
    p->n_area += prefix + n + 1;
    return EL_OK;
}

static el_status parse_value(parser *p, el_json *v);

static el_status parse_container(parser *p, el_json *v, int object) {
    if (++p->depth > EL_JSON_MAX_DEPTH) return fail(p, "nesting too deep");
    size_t self = (size_t)(v - p->vals), count = 0;
    char close = object ? '}' : ']';
    p->s++;
    skip_ws(p);
    if (p->s < p->end && *p->s == close) {
        p->s++;
    } else {
        for (;;) {
            skip_ws(p);
            if (object) {
                if (p->s >= p->end || *p->s != '"') return fail(p, "expected a key string");
                el_json *k = new_value(p);
                if (!k) return fail(p, "unexpected value");
                el_status st = parse_string(p, k);
                if (st) return st;
                skip_ws(p);
                if (p->s >= p->end || *p->s != ':') return fail(p, "expected ':'");
                p->s++;
            }
            el_json *item = new_value(p);
            if (!item) return fail(p, "unexpected value");
            el_status st = parse_value(p, item);
            if (st) return st;
            count++;
            skip_ws(p);
            if (p->s >= p->end) return fail(p, "unexpected end of input");
            if (*p->s == ',') { p->s++; continue; }
            if (*p->s == close) { p->s++; break; }
            return fail(p, object ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
    size_t inside = p->n_vals - self - 1;  // < 2^31: the text is shorter than that
    uint64_t c = count < MAX_COUNT ? count : MAX_COUNT;
    p->vals[self].v = tag(object ? T_OBJECT : T_ARRAY, c << 32 | inside);
    p->depth--;
    return EL_OK;
}

// Integers of up to 15 digits are exact in a double: no strtod for them.
static el_status parse_number(parser *p, el_json *v) {
    const char *b = p->s;
    int neg = 0, frac = 0;
    if (p->s < p->end && *p->s == '-') p->s++, neg = 1;
    if (p->s >= p->end) return fail(p, "bad number");
    uint64_t ival = 0;
    int digits = 0;
    if (*p->s == '0') {
        p->s++;
        digits = 1;
    } else if (*p->s >= '1' && *p->s <= '9') {
        while (p->s < p->end && *p->s >= '0' && *p->s <= '9') {
            if (digits < 16) ival = ival * 10 + (uint64_t)(*p->s - '0');
            digits++;
            p->s++;
        }
    } else {
        return fail(p, "bad number");
    }
    if (p->s < p->end && *p->s == '.') {
        frac = 1;
        p->s++;
        if (p->s >= p->end || *p->s < '0' || *p->s > '9') return fail(p, "bad number");
        while (p->s < p->end && *p->s >= '0' && *p->s <= '9') p->s++;
    }
    if (p->s < p->end && (*p->s == 'e' || *p->s == 'E')) {
        frac = 1;
        p->s++;
        if (p->s < p->end && (*p->s == '+' || *p->s == '-')) p->s++;
        if (p->s >= p->end || *p->s < '0' || *p->s > '9') return fail(p, "bad number");
        while (p->s < p->end && *p->s >= '0' && *p->s <= '9') p->s++;
    }
    double d;
    if (!frac && digits <= 15) {
        d = (double)ival;
        if (neg) d = -d;
    } else {
        char tmp[64];
        size_t n = (size_t)(p->s - b);
        if (n >= sizeof tmp) return fail(p, "number too long");
        memcpy(tmp, b, n);
        tmp[n] = 0;
        d = strtod(tmp, NULL);
        if (!isfinite(d)) return fail(p, "number out of range");
    }
    memcpy(&v->v, &d, sizeof d);
    return EL_OK;
}

static int literal(parser *p, const char *word, size_t n) {
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
    if (c == '"') return parse_string(p, v);
    if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p, v);
    if (literal(p, "true", 4)) { v->v = tag(T_TRUE, 0); return EL_OK; }
    if (literal(p, "false", 5)) { v->v = tag(T_FALSE, 0); return EL_OK; }
    if (literal(p, "null", 4)) { v->v = tag(T_NULL, 0); return EL_OK; }
    return fail(p, "unexpected character");
}

el_status el_json_parse(const char *text, size_t len, const char *name, el_json **out, el_error *err) {
    *out = NULL;
    if (len >= EL_JSON_MAX_TEXT) return el_err(err, EL_ERR_RANGE, "%s: %zu bytes of JSON is more than the limit", name, len);
    sizing z = size_text(text, len);
    // clamp to the bound, which valid text never exceeds (see the top of the file)
    size_t budget = 4 * len + 8, area = z.area < budget ? z.area : budget;
    size_t values = (budget - area) / sizeof(el_json);
    if (z.values < values) values = z.values;
    if (values == 0) values = 1;
    size_t bytes = sizeof(doc_header) + values * sizeof(el_json) + area;
    doc_header *h = malloc(bytes);
    if (!h) return el_err(err, EL_ERR_NOMEM, "%s: out of memory for %zu bytes of JSON", name, len);
    h->bytes = bytes;
    h->pad = 0;
    parser p = {text, text + len, text, name, err, 0, (el_json *)(h + 1), 0, values, NULL, 0, area};
    p.area = (char *)(p.vals + values);
    el_json *root = new_value(&p);
    el_status st = parse_value(&p, root);
    if (!st) {
        skip_ws(&p);
        if (p.s != p.end) st = fail(&p, "trailing characters after the value");
    }
    if (st) {
        free(h);
        return st;
    }
    *out = root;
    return EL_OK;
}

el_status el_json_load(const char *path, size_t max_bytes, el_json **out, el_error *err) {
    *out = NULL;
    char *text;
    size_t len;
    el_status st = el_read_file(path, max_bytes, &text, &len, err);
    if (st) return st;
    st = el_json_parse(text, len, path, out, err);
    free(text);
    return st;
}

void el_json_free(el_json *root) {
    if (root) free((doc_header *)root - 1);
}

size_t el_json_bytes(const el_json *root) { return root ? ((const doc_header *)root - 1)->bytes : 0; }

// ---------------------------------------------------------------- access

el_json_type el_json_type_of(const el_json *j) {
    if (!j) return EL_JSON_NULL;
    switch (tag_of(j)) {
    case 0: return EL_JSON_NUMBER;
    case T_FALSE: case T_TRUE: return EL_JSON_BOOL;
    case T_STRING: return EL_JSON_STRING;
    case T_ARRAY: return EL_JSON_ARRAY;
    case T_OBJECT: return EL_JSON_OBJECT;
    default: return EL_JSON_NULL;
    }
}

int el_json_is(const el_json *j, el_json_type t) { return j && el_json_type_of(j) == t; }

static int is_container(const el_json *j) { return j && (tag_of(j) == T_ARRAY || tag_of(j) == T_OBJECT); }
static size_t inside(const el_json *j) { return (size_t)(j->v & 0xFFFFFFFFu); }
// The value after j and everything inside it.
static const el_json *skip(const el_json *j) { return j + 1 + (is_container(j) ? inside(j) : 0); }

double el_json_num(const el_json *j, double dflt) {
    if (!j || tag_of(j)) return dflt;
    double d;
    memcpy(&d, &j->v, sizeof d);
    return d;
}

int el_json_bool(const el_json *j, int dflt) {
    if (!j) return dflt;
    int t = tag_of(j);
    return t == T_TRUE ? 1 : t == T_FALSE ? 0 : dflt;
}

static const unsigned char *entry_of(const el_json *j) { return (const unsigned char *)j + (j->v & PAYLOAD); }

const char *el_json_str(const el_json *j) {
    if (!j || tag_of(j) != T_STRING) return NULL;
    const unsigned char *e = entry_of(j);
    return (const char *)e + (e[0] == 0xFF ? 5 : 1);
}

size_t el_json_strlen(const el_json *j) {
    if (!j || tag_of(j) != T_STRING) return 0;
    const unsigned char *e = entry_of(j);
    if (e[0] != 0xFF) return e[0];
    uint32_t n;
    memcpy(&n, e + 1, 4);
    return n;
}

size_t el_json_len(const el_json *j) {
    if (!is_container(j)) return 0;
    size_t c = (size_t)(j->v >> 32 & MAX_COUNT);
    if (c < MAX_COUNT) return c;
    c = 0;
    for (const el_json *v = el_json_first(j); v; v = el_json_next(j, v)) c++;
    return c;
}

const el_json *el_json_first(const el_json *j) {
    if (!is_container(j) || inside(j) == 0) return NULL;
    return tag_of(j) == T_OBJECT ? j + 2 : j + 1;
}

const el_json *el_json_next(const el_json *parent, const el_json *cur) {
    if (!is_container(parent) || !cur) return NULL;
    const el_json *n = skip(cur), *end = parent + 1 + inside(parent);
    if (tag_of(parent) == T_OBJECT) n++;  // past the next key
    return n < end ? n : NULL;
}

const el_json *el_json_at(const el_json *j, size_t i) {
    if (!j || tag_of(j) != T_ARRAY) return NULL;
    const el_json *v = el_json_first(j);
    while (v && i--) v = el_json_next(j, v);
    return v;
}

const el_json *el_json_get(const el_json *j, const char *key) {
    if (!j || tag_of(j) != T_OBJECT) return NULL;
    size_t kl = strlen(key);
    for (const el_json *v = el_json_first(j); v; v = el_json_next(j, v)) {
        const el_json *k = v - 1;
        if (el_json_strlen(k) == kl && !memcmp(el_json_str(k), key, kl)) return v;
    }
    return NULL;
}

const char *el_json_key(const el_json *obj, const el_json *v) {
    if (!obj || tag_of(obj) != T_OBJECT || !v || v <= obj + 1 || v > obj + inside(obj)) return NULL;
    return el_json_str(v - 1);
}

void el_json_write_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\') fprintf(f, "\\%c", *c);
        else if (*c < 0x20) fprintf(f, "\\u%04x", *c);
        else fputc(*c, f);
    }
    fputc('"', f);
}
