// Content-addressed parameter blocks (issue 16). Every tensor of a model file
// is a block named by the BLAKE2b-256 hash of its bytes; so are the file's
// GGUF header and the model's manifest, whose hash is the model's id. A store
// is a folder that keeps each block once however many models use it, and
// assembles a model from its blocks by mapping them, not copying them. Blocks
// travel between stores over the CURVE links of link.h (BLOCK_GET/BLOCK_DATA,
// docs/protocol.md); every block is verified against its hash before use.
#ifndef EDGELLM_STORE_H
#define EDGELLM_STORE_H

#include <stdint.h>
#include <stdio.h>

#include "edgellm/core.h"
#include "edgellm/link.h"
#include "edgellm/model.h"
#include "edgellm/wire.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EL_HASH_BYTES 32
typedef struct {
    uint8_t b[EL_HASH_BYTES];
} el_hash;

void el_hash_bytes(const void *data, size_t n, el_hash *out);
void el_hash_hex(const el_hash *h, char out[2 * EL_HASH_BYTES + 1]);
// 1 when hex is exactly 64 hex digits (either case), 0 otherwise.
int el_hash_parse(const char *hex, el_hash *out);
int el_hash_eq(const el_hash *a, const el_hash *b);

// ---------------------------------------------------------------- catalog

typedef struct {
    char *name;  // tensor name
    int dtype;   // el_dtype
    int n_dims;
    int64_t ne[EL_MAX_DIMS];
    uint64_t bytes;
    el_hash hash;
} el_block_info;

typedef struct {
    char *name;  // the file's base name without ".gguf"
    char *path;
    uint64_t file_bytes;
    el_hash id;            // hash of the manifest (see el_store_import)
    el_hash header;        // hash of the GGUF header bytes [0, data offset)
    uint64_t header_bytes;
    int n_blocks;
    el_block_info *blocks;  // the tensors, in file order
    uint64_t bytes;         // header + every tensor block
} el_model_blocks;

// Hashes every tensor of a GGUF file (progress may be NULL).
el_status el_model_blocks_scan(const char *path, el_progress *progress, el_model_blocks *out, el_error *err);
void el_model_blocks_free(el_model_blocks *m);

// The manifest (docs/formats.md): canonical JSON of the header and tensor
// blocks, content only (no name, no path), so that the same content always
// has the same id. Encode writes m's header and blocks (malloc'ed, not
// NUL-terminated); parse checks every field and that the text is exactly
// what encode writes, filling header, header_bytes, blocks, bytes and id (=
// the hash of the text); name and path stay NULL.
el_status el_manifest_encode(const el_model_blocks *m, char **out, size_t *len, el_error *err);
el_status el_manifest_parse(const void *text, size_t len, const char *name, el_model_blocks *out, el_error *err);
#define EL_MANIFEST_MAX_BYTES ((size_t)256 << 20)

// ---------------------------------------------------------------- store

// One thread at a time per el_store, except el_store_serve, which only reads
// block files by name and may run in any thread alongside the others (a
// worker serving its peers while it fetches). Blocks hashed once in a process
// are remembered in the el_store: a fresh el_store hashes them again.
typedef struct el_store el_store;

// Opens (creating when missing) a store folder: DIR/blocks/<hex> holds each
// block's bytes, DIR/partial/<hex> blocks being fetched, DIR/models/<name>
// the id of each model held (a line of hex).
el_status el_store_open(const char *dir, el_store **out, el_error *err);
void el_store_close(el_store *s);
const char *el_store_dir(const el_store *s);

// Imports a GGUF file: its header and each tensor become blocks (those
// already present are not written again), then its manifest, under name
// (NULL: the file's base name without ".gguf"). *id (may be NULL) is the
// model's id.
el_status el_store_import(el_store *s, const char *gguf_path, const char *name, el_progress *progress, el_hash *id,
                          el_error *err);

// Models held: the names in DIR/models whose manifest and blocks are all present.
int el_store_n_models(el_store *s);
const char *el_store_model_name(el_store *s, int i);
int el_store_model_id(el_store *s, const char *name, el_hash *id);  // 1 when held
// Every block present (for heartbeats): count, then the i-th hash.
int el_store_n_blocks(el_store *s);
const el_hash *el_store_block(el_store *s, int i);
// Bytes of the blocks present (each once).
uint64_t el_store_bytes(el_store *s);
// Re-reads the folder (after a fetch, or blocks removed by hand).
el_status el_store_rescan(el_store *s, el_error *err);

// Hashes every block present; one that does not match its name is removed
// (a line on log, which may be NULL) and counted in *n_bad. Then rescans.
el_status el_store_verify(el_store *s, el_progress *progress, FILE *log, int *n_bad, el_error *err);

// Opens a held model assembled from its blocks (mapped, not copied). Each
// block is hashed before its first use in this process; a corrupt or
// truncated block is deleted and the call fails naming it (EL_ERR_FORMAT),
// so that a fetch brings it again.
el_status el_store_open_model(el_store *s, const char *name, const el_model_opts *opts, el_model **out,
                              el_error *err);

// ---------------------------------------------------------------- transfer

#define EL_STORE_CHUNK (1u << 20)  // largest BLOCK_DATA payload

// A worker's answer to a BLOCK_GET frame m (already decoded as an el_wire_msg):
// a BLOCK_DATA or an ERROR frame in out. Reads at most EL_STORE_CHUNK bytes.
void el_store_serve(el_store *s, const el_wire_msg *m, el_buf *out);

typedef struct {
    const char *endpoint;
    const char *public_key;  // the source's Z85 key (ignored when sec->insecure)
} el_store_source;

// Brings model `name` whose id is `id` into the store from sources, tried in
// order for each block: the manifest first, then every block missing. Each
// block arrives in chunks into DIR/partial (an interrupted fetch resumes
// where it stopped), is verified against its hash, and is refused (deleted,
// logged, fetched again from the next source) when it does not match. sec
// holds our keys; its server_key is replaced by each source's key.
el_status el_store_fetch_model(el_store *s, const char *name, const el_hash *id, const el_store_source *sources,
                               int n_sources, const el_link_security *sec, el_progress *progress, FILE *log,
                               el_error *err);

#ifdef __cplusplus
}
#endif
#endif
