// Block hashes: BLAKE2b with a 32-byte digest (libsodium's generichash),
// written as 64 lowercase hex digits.
#include <sodium.h>
#include <string.h>

#include "edgellm/store.h"
#include "store_internal.h"

void el_store_sodium_init(void) {
    // Idempotent and thread-safe: returns 1 once initialised. A failure
    // leaves the portable BLAKE2b implementation, which gives the same digest.
    if (sodium_init() < 0) return;
}

void el_hash_bytes(const void *data, size_t n, el_hash *out) {
    el_store_sodium_init();
    crypto_generichash(out->b, EL_HASH_BYTES, data, n, NULL, 0);
}

void el_hasher_init(el_hasher *h) {
    el_store_sodium_init();
    crypto_generichash_init(&h->state, NULL, 0, EL_HASH_BYTES);
}

void el_hasher_update(el_hasher *h, const void *data, size_t n) {
    crypto_generichash_update(&h->state, data, n);
}

void el_hasher_final(el_hasher *h, el_hash *out) {
    crypto_generichash_final(&h->state, out->b, EL_HASH_BYTES);
}

void el_hash_hex(const el_hash *h, char out[2 * EL_HASH_BYTES + 1]) {
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < EL_HASH_BYTES; i++) {
        out[2 * i] = digits[h->b[i] >> 4];
        out[2 * i + 1] = digits[h->b[i] & 15];
    }
    out[2 * EL_HASH_BYTES] = 0;
}

static int nibble(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int el_hash_parse(const char *hex, el_hash *out) {
    if (!hex) return 0;
    el_hash h;
    for (int i = 0; i < EL_HASH_BYTES; i++) {
        int a = nibble(hex[2 * i]), b = a < 0 ? -1 : nibble(hex[2 * i + 1]);
        if (a < 0 || b < 0) return 0;
        h.b[i] = (uint8_t)(a << 4 | b);
    }
    if (hex[2 * EL_HASH_BYTES]) return 0;
    if (out) *out = h;
    return 1;
}

int el_hash_eq(const el_hash *a, const el_hash *b) { return !memcmp(a->b, b->b, EL_HASH_BYTES); }
