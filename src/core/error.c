// Status codes, error messages and checked allocation.
#include "edgellm/core.h"

#include <stdarg.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

el_status el_err(el_error *err, el_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        // Messages quote names and values taken from hostile files and peers;
        // a control byte among them (a newline in a GGUF string, say) must not
        // break the one-line promise or reach a terminal raw.
        for (char *c = err->msg; *c; c++)
            if ((unsigned char)*c < 0x20 || (unsigned char)*c == 0x7F) *c = '?';
        err->code = code;
    }
    return code;
}

void el_vlogf(FILE *f, const char *prefix, const char *fmt, va_list ap) {
    if (!f) return;
    flockfile(f);  // one line, whole, when several threads share f (a node's fetcher and its worker)
    if (prefix) fputs(prefix, f);
    vfprintf(f, fmt, ap);
    fputc('\n', f);
    fflush(f);
    funlockfile(f);
}

const char *el_status_str(el_status s) {
    switch (s) {
    case EL_OK: return "ok";
    case EL_ERR_IO: return "I/O error";
    case EL_ERR_FORMAT: return "malformed input";
    case EL_ERR_RANGE: return "value out of range";
    case EL_ERR_NOMEM: return "out of memory";
    case EL_ERR_ARG: return "invalid argument";
    case EL_ERR_UNSUPPORTED: return "unsupported";
    case EL_ERR_STATE: return "invalid state";
    }
    return "unknown error";
}

int el_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}

int el_add_size(size_t a, size_t b, size_t *out) {
    if (b > SIZE_MAX - a) return -1;
    *out = a + b;
    return 0;
}

void *el_malloc(size_t n) { return malloc(n ? n : 1); }

void *el_calloc(size_t count, size_t size) {
    size_t n;
    if (el_mul_size(count, size, &n)) return NULL;
    return calloc(n ? n : 1, 1);
}

void *el_malloc_aligned(size_t n) {
    void *p = NULL;
    size_t rounded;
    if (el_add_size(n, 63, &rounded)) return NULL;
    rounded &= ~(size_t)63;
    if (posix_memalign(&p, 64, rounded ? rounded : 64)) return NULL;
    return p;
}

// calloc's block, 64 bytes more; the aligned pointer 16..64 bytes into it
// (malloc aligns to 16), the block's address in the 8 bytes before it
void *el_calloc_aligned(size_t count, size_t size) {
    size_t n, total;
    if (el_mul_size(count, size, &n) || el_add_size(n, 64, &total)) return NULL;
    char *base = calloc(total, 1);
    if (!base) return NULL;
    char *p = (char *)(((uintptr_t)base + 64) & ~(uintptr_t)63);
    memcpy(p - sizeof base, &base, sizeof base);
    return p;
}

void el_calloc_free(void *p) {
    if (!p) return;
    char *base;
    memcpy(&base, (char *)p - sizeof base, sizeof base);
    free(base);
}

void el_free_aligned(void *p) { free(p); }

void *el_malloc_huge(size_t n) {
    size_t huge = (size_t)2 << 20, rounded;
    void *p = NULL;
    if (n < huge) return posix_memalign(&p, 4096, n ? n : 1) ? NULL : p;
    if (el_add_size(n, huge - 1, &rounded) || posix_memalign(&p, huge, rounded & ~(huge - 1))) return NULL;
    madvise(p, rounded & ~(huge - 1), MADV_HUGEPAGE);
    return p;
}

uint64_t el_fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

size_t el_utf8_check(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        uint32_t cp;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
        else return i;
        if (n - i < len) return i;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) return i;
        if (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) return i;
        i += len;
    }
    return n;
}

int el_utf8_valid(const char *str, size_t n) { return el_utf8_check(str, n) == n; }
