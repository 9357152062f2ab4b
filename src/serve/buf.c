// A growable buffer and a JSON string escaper for response bodies.
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/serve.h"

void el_sbuf_free(el_sbuf *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

static int grow(el_sbuf *b, size_t extra) {
    if (b->oom) return -1;
    size_t need;
    if (el_add_size(b->len, extra + 1, &need)) return b->oom = 1, -1;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) return b->oom = 1, -1;
        cap *= 2;
    }
    char *d = realloc(b->data, cap);
    if (!d) return b->oom = 1, -1;
    b->data = d;
    b->cap = cap;
    return 0;
}

void el_sbuf_add(el_sbuf *b, const char *s, size_t n) {
    if (grow(b, n)) return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = 0;
}

void el_sbuf_puts(el_sbuf *b, const char *s) { el_sbuf_add(b, s, strlen(s)); }

void el_sbuf_printf(el_sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof small) {
        el_sbuf_add(b, small, (size_t)n);
        return;
    }
    if (grow(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void el_sbuf_json_str(el_sbuf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    el_sbuf_add(b, "\"", 1);
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) {
            // copy one whole valid sequence, or replace a bad byte with U+FFFD
            size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
            if (len > 1 && i + len <= n && el_utf8_valid(s + i, len)) {
                el_sbuf_add(b, s + i, len);
                i += len;
            } else {
                el_sbuf_add(b, "\xEF\xBF\xBD", 3);
                i++;
            }
            continue;
        }
        if (c == '"') el_sbuf_add(b, "\\\"", 2);
        else if (c == '\\') el_sbuf_add(b, "\\\\", 2);
        else if (c == '\n') el_sbuf_add(b, "\\n", 2);
        else if (c == '\r') el_sbuf_add(b, "\\r", 2);
        else if (c == '\t') el_sbuf_add(b, "\\t", 2);
        else if (c < 0x20 || c == 0x7f) {
            char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            el_sbuf_add(b, u, 6);
        } else el_sbuf_add(b, (const char *)&c, 1);
        i++;
    }
    el_sbuf_add(b, "\"", 1);
}
