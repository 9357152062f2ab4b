// Helpers shared by the files of src/store (hashing state, file helpers).
#ifndef EL_STORE_INTERNAL_H
#define EL_STORE_INTERNAL_H

#include <sodium.h>
#include <stdint.h>

#include "edgellm/gguf.h"
#include "edgellm/store.h"

// An incremental hash of a block.
typedef struct {
    crypto_generichash_state state;
} el_hasher;

void el_store_sodium_init(void);
void el_hasher_init(el_hasher *h);
void el_hasher_update(el_hasher *h, const void *data, size_t n);
void el_hasher_final(el_hasher *h, el_hash *out);

// Model names become file names: [A-Za-z0-9._-], 1..128 bytes, no leading '.'.
#define EL_STORE_MAX_NAME 128
int el_store_name_ok(const char *name);

// Hashes a whole file by reading it; *size gets its length.
el_status el_store_hash_file(const char *path, el_hash *out, uint64_t *size, el_error *err);

// out[i] = the hash of ptr[i][0, n[i]), regions hashed in parallel on all
// CPUs; progress (begun by the caller) gets the MiB hashed.
void el_store_hash_regions(const void *const *ptr, const size_t *n, int count, el_hash *out, el_progress *progress);

// The blocks of an open GGUF (name and path left NULL).
el_status el_store_blocks_of(const el_gguf *g, el_progress *progress, el_model_blocks *out, el_error *err);
char *el_store_base_name(const char *path);

// 1 when block h is present with `size` bytes (as of the last rescan).
int el_store_has_block(el_store *s, const el_hash *h, uint64_t size);
// Remembers that this process hashed block h and found it right.
void el_store_mark_verified(el_store *s, const el_hash *h);
// Writes DIR/models/<name>: the id's hex and a newline.
el_status el_store_write_model(el_store *s, const char *name, const el_hash *id, el_error *err);

#endif
