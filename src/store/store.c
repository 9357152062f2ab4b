// The block store: a folder that keeps each block once by its hash, imports
// GGUF files into blocks, and assembles models from mapped blocks, verifying
// each block's hash before its first use (docs/formats.md, "Block stores").
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edgellm/gguf.h"
#include "edgellm/store.h"
#include "store_internal.h"

#define HEX (2 * EL_HASH_BYTES)

typedef struct {
    el_hash hash;
    uint64_t size;
} block_ent;

struct el_store {
    char *dir;
    block_ent *blocks;  // present, sorted by hash
    int n_blocks;
    uint64_t bytes;
    char **models;  // held (complete), sorted by name
    el_hash *ids;
    int n_models;
    el_hash *verified;  // blocks hashed by this process and found right
    int n_verified, cap_verified;
};

int el_store_name_ok(const char *name) { return el_file_name_ok(name, EL_STORE_MAX_NAME); }

const char *el_store_dir(const el_store *s) { return s->dir; }

// DIR/sub/<hex> (or DIR/sub/name) into buf.
static void path_of(const el_store *s, const char *sub, const el_hash *h, const char *name, char *buf, size_t n) {
    char hex[HEX + 1];
    if (h) el_hash_hex(h, hex);
    snprintf(buf, n, "%s/%s/%s", s->dir, sub, h ? hex : name);
}

static int cmp_block(const void *a, const void *b) {
    return memcmp(((const block_ent *)a)->hash.b, ((const block_ent *)b)->hash.b, EL_HASH_BYTES);
}
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static const block_ent *find_block(const el_store *s, const el_hash *h) {
    block_ent key = {.hash = *h};
    return bsearch(&key, s->blocks, (size_t)s->n_blocks, sizeof key, cmp_block);
}

static int is_verified(const el_store *s, const el_hash *h) {
    for (int i = 0; i < s->n_verified; i++)
        if (el_hash_eq(&s->verified[i], h)) return 1;
    return 0;
}

void el_store_mark_verified(el_store *s, const el_hash *h) {
    if (is_verified(s, h)) return;
    if (s->n_verified == s->cap_verified) {
        int cap = s->cap_verified ? 2 * s->cap_verified : 64;
        el_hash *v = realloc(s->verified, (size_t)cap * sizeof *v);
        if (!v) return;  // only costs a second hash later
        s->verified = v, s->cap_verified = cap;
    }
    s->verified[s->n_verified++] = *h;
}

static void forget_verified(el_store *s, const el_hash *h) {
    for (int i = 0; i < s->n_verified; i++)
        if (el_hash_eq(&s->verified[i], h)) s->verified[i] = s->verified[--s->n_verified];
}

static el_status make_dir(const char *path, el_error *err) {
    if (mkdir(path, 0755) && errno != EEXIST) return el_err(err, EL_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    struct stat sb;
    if (stat(path, &sb) || !S_ISDIR(sb.st_mode)) return el_err(err, EL_ERR_IO, "%s: not a folder", path);
    return EL_OK;
}

el_status el_store_open(const char *dir, el_store **out, el_error *err) {
    *out = NULL;
    if (!dir || !*dir) return el_err(err, EL_ERR_ARG, "store: no folder given");
    el_store_sodium_init();
    el_store *s = calloc(1, sizeof *s);
    if (!s || !(s->dir = strdup(dir))) {
        free(s);
        return el_err(err, EL_ERR_NOMEM, "%s: out of memory", dir);
    }
    size_t n = strlen(s->dir);
    if (n > 3000) {  // leaves room in the fixed path buffers below for the sub-folder and a name
        el_store_close(s);
        return el_err(err, EL_ERR_RANGE, "store: folder name of %zu bytes is too long", n);
    }
    while (n > 1 && s->dir[n - 1] == '/') s->dir[--n] = 0;
    char p[4096];
    el_status st = make_dir(s->dir, err);
    static const char *const subs[] = {"blocks", "partial", "models"};
    for (int i = 0; i < 3 && !st; i++) {
        snprintf(p, sizeof p, "%s/%s", s->dir, subs[i]);
        st = make_dir(p, err);
    }
    if (!st) st = el_store_rescan(s, err);
    if (st) {
        el_store_close(s);
        return st;
    }
    *out = s;
    return EL_OK;
}

static void free_lists(el_store *s) {
    free(s->blocks);
    for (int i = 0; i < s->n_models; i++) free(s->models[i]);
    free(s->models);
    free(s->ids);
    s->blocks = NULL, s->models = NULL, s->ids = NULL;
    s->n_blocks = s->n_models = 0;
    s->bytes = 0;
}

void el_store_close(el_store *s) {
    if (!s) return;
    free_lists(s);
    free(s->verified);
    free(s->dir);
    free(s);
}

// Reads DIR/models/<name>: one line, the id's hex.
static int read_model_id(const el_store *s, const char *name, el_hash *id) {
    char p[4096], line[HEX + 8];
    path_of(s, "models", NULL, name, p, sizeof p);
    FILE *f = fopen(p, "r");
    if (!f) return 0;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = 0;
    if (n && line[n - 1] == '\n') line[--n] = 0;
    return el_hash_parse(line, id);
}

// Reads and checks a manifest block present in the store.
static el_status load_manifest(el_store *s, const el_hash *id, el_model_blocks *m, el_error *err) {
    char p[4096], hex[HEX + 1];
    path_of(s, "blocks", id, NULL, p, sizeof p);
    el_hash_hex(id, hex);
    char *text;
    size_t len;
    el_status st = el_read_file(p, EL_MANIFEST_MAX_BYTES, &text, &len, err);
    if (st) return st;
    el_hash h;
    el_hash_bytes(text, len, &h);
    if (!el_hash_eq(&h, id)) {
        free(text);
        unlink(p);
        forget_verified(s, id);
        return el_err(err, EL_ERR_FORMAT, "%s: manifest block %s does not match its hash: removed", p, hex);
    }
    st = el_manifest_parse(text, len, p, m, err);
    free(text);
    return st;
}

// A model is held when its manifest and every block it names are present
// with the manifest's sizes.
static int model_complete(el_store *s, const el_hash *id) {
    if (!find_block(s, id)) return 0;
    el_model_blocks m;
    el_error e;
    if (load_manifest(s, id, &m, &e)) return 0;
    const block_ent *b = find_block(s, &m.header);
    int ok = b && b->size == m.header_bytes;
    for (int i = 0; ok && i < m.n_blocks; i++) {
        b = find_block(s, &m.blocks[i].hash);
        ok = b && b->size == m.blocks[i].bytes;
    }
    el_model_blocks_free(&m);
    return ok;
}

el_status el_store_rescan(el_store *s, el_error *err) {
    free_lists(s);
    char p[4096];
    snprintf(p, sizeof p, "%s/blocks", s->dir);
    DIR *d = opendir(p);
    if (!d) return el_err(err, EL_ERR_IO, "%s: cannot read: %s", p, strerror(errno));
    int cap = 0;
    struct dirent *e;
    el_status st = EL_OK;
    while ((e = readdir(d))) {
        el_hash h;
        if (!el_hash_parse(e->d_name, &h)) continue;  // ".", "..", "<hex>.tmp" of an interrupted write
        char f[4096];
        path_of(s, "blocks", &h, NULL, f, sizeof f);
        struct stat sb;
        if (stat(f, &sb) || !S_ISREG(sb.st_mode)) continue;
        if (s->n_blocks == cap) {
            cap = cap ? 2 * cap : 256;
            block_ent *nb = realloc(s->blocks, (size_t)cap * sizeof *nb);
            if (!nb) {
                st = el_err(err, EL_ERR_NOMEM, "%s: out of memory", p);
                break;
            }
            s->blocks = nb;
        }
        s->blocks[s->n_blocks++] = (block_ent){h, (uint64_t)sb.st_size};
        s->bytes += (uint64_t)sb.st_size;
    }
    closedir(d);
    if (st) return st;
    if (s->n_blocks) qsort(s->blocks, (size_t)s->n_blocks, sizeof *s->blocks, cmp_block);

    snprintf(p, sizeof p, "%s/models", s->dir);
    if (!(d = opendir(p))) return el_err(err, EL_ERR_IO, "%s: cannot read: %s", p, strerror(errno));
    cap = 0;
    while ((e = readdir(d))) {
        el_hash id;
        if (!el_store_name_ok(e->d_name) || !read_model_id(s, e->d_name, &id) || !model_complete(s, &id)) continue;
        if (s->n_models == cap) {
            cap = cap ? 2 * cap : 16;
            char **nm = realloc(s->models, (size_t)cap * sizeof *nm);
            el_hash *ni = nm ? realloc(s->ids, (size_t)cap * sizeof *ni) : NULL;
            if (nm) s->models = nm;
            if (ni) s->ids = ni;
            if (!nm || !ni) {
                st = el_err(err, EL_ERR_NOMEM, "%s: out of memory", p);
                break;
            }
        }
        if (!(s->models[s->n_models] = strdup(e->d_name))) {
            st = el_err(err, EL_ERR_NOMEM, "%s: out of memory", p);
            break;
        }
        s->n_models++;
    }
    closedir(d);
    if (st) return st;
    if (s->n_models) qsort(s->models, (size_t)s->n_models, sizeof *s->models, cmp_str);
    for (int i = 0; i < s->n_models; i++) read_model_id(s, s->models[i], &s->ids[i]);
    return EL_OK;
}

int el_store_n_models(el_store *s) { return s->n_models; }
const char *el_store_model_name(el_store *s, int i) { return i >= 0 && i < s->n_models ? s->models[i] : NULL; }
int el_store_model_id(el_store *s, const char *name, el_hash *id) {
    for (int i = 0; i < s->n_models; i++)
        if (!strcmp(s->models[i], name)) {
            if (id) *id = s->ids[i];
            return 1;
        }
    return 0;
}
int el_store_n_blocks(el_store *s) { return s->n_blocks; }
const el_hash *el_store_block(el_store *s, int i) { return i >= 0 && i < s->n_blocks ? &s->blocks[i].hash : NULL; }
uint64_t el_store_bytes(el_store *s) { return s->bytes; }

int el_store_has_block(el_store *s, const el_hash *h, uint64_t size) {
    const block_ent *b = find_block(s, h);
    return b && b->size == size;
}

// ---------------------------------------------------------------- import

// Writes a block unless one of that size is there already. What import
// writes from a file it just hashed is right: remembered as verified. A block
// that was there is not (it is hashed when a model first uses it).
static el_status put_block(el_store *s, const el_hash *h, const void *data, size_t n, el_error *err) {
    char p[4096];
    path_of(s, "blocks", h, NULL, p, sizeof p);
    struct stat sb;
    if (!stat(p, &sb) && S_ISREG(sb.st_mode) && (uint64_t)sb.st_size == n) return EL_OK;  // held already
    el_status st = el_write_file_atomic(p, data, n, err);
    if (!st) el_store_mark_verified(s, h);
    return st;
}

el_status el_store_write_model(el_store *s, const char *name, const el_hash *id, el_error *err) {
    char p[4096], line[HEX + 2];
    path_of(s, "models", NULL, name, p, sizeof p);
    el_hash_hex(id, line);
    line[HEX] = '\n', line[HEX + 1] = 0;
    return el_write_file_atomic(p, line, HEX + 1, err);
}

el_status el_store_import(el_store *s, const char *gguf_path, const char *name, el_progress *progress, el_hash *id,
                          el_error *err) {
    char *own = name ? NULL : el_store_base_name(gguf_path);
    if (!name) name = own;
    if (!name || !el_store_name_ok(name)) {
        el_status st = el_err(err, EL_ERR_ARG,
                              "%s: model name '%s' is not 1..%d characters of A-Z a-z 0-9 . _ - (not starting with .)",
                              gguf_path, name ? name : "", EL_STORE_MAX_NAME);
        free(own);
        return st;
    }
    el_gguf *g;
    el_status st = el_gguf_open(gguf_path, &g, err);
    el_model_blocks m = {0};
    if (!st) st = el_store_blocks_of(g, progress, &m, err);
    if (!st) st = put_block(s, &m.header, g->map, (size_t)m.header_bytes, err);
    for (int i = 0; !st && i < m.n_blocks; i++) st = put_block(s, &m.blocks[i].hash, g->tensors[i].data, m.blocks[i].bytes, err);
    char *text = NULL;
    size_t len = 0;
    if (!st) st = el_manifest_encode(&m, &text, &len, err);
    if (!st) st = put_block(s, &m.id, text, len, err);
    if (!st) st = el_store_write_model(s, name, &m.id, err);
    if (!st && id) *id = m.id;
    free(text);
    el_model_blocks_free(&m);
    el_gguf_close(g);
    free(own);
    if (!st) st = el_store_rescan(s, err);
    return st;
}

// ---------------------------------------------------------------- assembly

// Maps block h of `bytes` bytes (hashed later, by check_blocks). A block of
// the wrong size is deleted.
static el_status map_block(el_store *s, const char *model, const el_hash *h, uint64_t bytes, void **map,
                           el_error *err) {
    *map = NULL;
    char p[4096], hex[HEX + 1];
    path_of(s, "blocks", h, NULL, p, sizeof p);
    el_hash_hex(h, hex);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return el_err(err, errno == ENOENT ? EL_ERR_STATE : EL_ERR_IO, "store %s: block %s of model %s is missing: %s",
                      s->dir, hex, model, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) || !S_ISREG(sb.st_mode) || (uint64_t)sb.st_size != bytes) {
        long long got = fstat(fd, &sb) ? -1 : (long long)sb.st_size;
        close(fd);
        unlink(p);
        forget_verified(s, h);
        return el_err(err, EL_ERR_FORMAT,
                      "store %s: block %s of model %s has %lld bytes, not %llu: removed (fetch it again)", s->dir, hex,
                      model, got, (unsigned long long)bytes);
    }
    void *m = mmap(NULL, (size_t)bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return el_err(err, EL_ERR_IO, "%s: cannot map %llu bytes: %s", p, (unsigned long long)bytes, strerror(errno));
    *map = m;
    return EL_OK;
}

// Hashes the mapped blocks this process has not verified yet (in parallel);
// the first that does not match is deleted and named.
static el_status check_blocks(el_store *s, const char *model, const el_hash *hs, void *const *maps,
                              const size_t *sizes, int n, el_error *err) {
    const void **ptr = malloc((size_t)(n ? n : 1) * sizeof *ptr);
    size_t *len = malloc((size_t)(n ? n : 1) * sizeof *len);
    el_hash *got = malloc((size_t)(n ? n : 1) * sizeof *got);
    int *idx = malloc((size_t)(n ? n : 1) * sizeof *idx);
    el_status st = EL_OK;
    if (!ptr || !len || !got || !idx) st = el_err(err, EL_ERR_NOMEM, "store %s: out of memory", s->dir);
    int k = 0;
    for (int i = 0; !st && i < n; i++) {
        if (is_verified(s, &hs[i])) continue;
        int dup = 0;  // a block used twice in one model is hashed once
        for (int j = 0; j < k && !dup; j++) dup = el_hash_eq(&hs[idx[j]], &hs[i]);
        if (dup) continue;
        ptr[k] = maps[i], len[k] = sizes[i], idx[k++] = i;
    }
    if (!st) el_store_hash_regions(ptr, len, k, got, NULL);
    for (int j = 0; !st && j < k; j++) {
        const el_hash *h = &hs[idx[j]];
        if (el_hash_eq(&got[j], h)) {
            el_store_mark_verified(s, h);
            continue;
        }
        char p[4096], hex[HEX + 1];
        path_of(s, "blocks", h, NULL, p, sizeof p);
        el_hash_hex(h, hex);
        unlink(p);
        st = el_err(err, EL_ERR_FORMAT, "store %s: block %s of model %s does not match its hash: removed (fetch it again)",
                    s->dir, hex, model);
    }
    free(ptr), free(len), free(got), free(idx);
    return st;
}

el_status el_store_open_model(el_store *s, const char *name, const el_model_opts *opts, el_model **out,
                              el_error *err) {
    *out = NULL;
    el_hash id;
    if (!name || !el_store_name_ok(name) || !read_model_id(s, name, &id))
        return el_err(err, EL_ERR_ARG, "store %s holds no model '%s'", s->dir, name ? name : "");
    el_model_blocks m;
    el_status st = load_manifest(s, &id, &m, err);
    if (st) return st;
    // all[0] is the header, all[1..n] the tensors
    size_t n = (size_t)m.n_blocks;
    void **all = calloc(n + 1, sizeof *all);
    size_t *all_sizes = calloc(n + 1, sizeof *all_sizes);
    el_hash *hs = calloc(n + 1, sizeof *hs);
    if (!all || !all_sizes || !hs) st = el_err(err, EL_ERR_NOMEM, "store %s: out of memory", s->dir);
    for (size_t i = 0; !st && i <= n; i++) {
        hs[i] = i ? m.blocks[i - 1].hash : m.header;
        all_sizes[i] = (size_t)(i ? m.blocks[i - 1].bytes : m.header_bytes);
        st = map_block(s, name, &hs[i], all_sizes[i], &all[i], err);
    }
    if (!st) st = check_blocks(s, name, hs, all, all_sizes, (int)n + 1, err);
    void *header = all ? all[0] : NULL, **parts = all ? all + 1 : NULL;
    size_t *sizes = all_sizes ? all_sizes + 1 : NULL;
    char label[4096];
    snprintf(label, sizeof label, "%s/models/%s", s->dir, name);
    el_gguf *g = NULL;
    if (st) {
        for (size_t i = 0; all && i <= n; i++)
            if (all[i]) munmap(all[i], all_sizes[i]);
    } else {
        st = el_gguf_open_parts(header, (size_t)m.header_bytes, parts, sizes, n, label, &g, err);
    }
    // The header names the tensors; the manifest must list the same ones in the same order.
    for (size_t i = 0; !st && i < n; i++) {
        const el_gguf_tensor *t = &g->tensors[i];
        if (strcmp(t->name, m.blocks[i].name) || t->dtype != m.blocks[i].dtype)
            st = el_err(err, EL_ERR_FORMAT, "%s: manifest tensor %zu (%s) differs from the header's (%s)", label, i,
                        m.blocks[i].name, t->name);
    }
    free(all);
    free(all_sizes);
    free(hs);
    el_model_blocks_free(&m);
    if (st) {
        el_gguf_close(g);
        el_store_rescan(s, NULL);  // removed blocks are no longer held
        return st;
    }
    return el_model_open_gguf(g, label, opts, out, err);
}

el_status el_store_verify(el_store *s, el_progress *progress, FILE *log, int *n_bad, el_error *err) {
    int n = s->n_blocks, bad = 0;
    block_ent *bs = malloc((size_t)(n ? n : 1) * sizeof *bs);
    if (!bs) return el_err(err, EL_ERR_NOMEM, "store %s: out of memory", s->dir);
    memcpy(bs, s->blocks, (size_t)n * sizeof *bs);
    uint64_t total = 0, done = 0;
    for (int i = 0; i < n; i++) total += bs[i].size;
    if (progress) el_progress_begin(progress, stderr, "verify", total >> 20, "MiB");
    el_status st = EL_OK;
    for (int i = 0; i < n && !st; i++) {
        char p[4096], hex[HEX + 1];
        path_of(s, "blocks", &bs[i].hash, NULL, p, sizeof p);
        el_hash_hex(&bs[i].hash, hex);
        el_hash got;
        uint64_t size;
        if ((st = el_store_hash_file(p, &got, &size, err))) break;
        done += size;
        if (progress) el_progress_update(progress, done >> 20, NULL);
        if (el_hash_eq(&got, &bs[i].hash)) {
            el_store_mark_verified(s, &bs[i].hash);
            continue;
        }
        unlink(p);
        forget_verified(s, &bs[i].hash);
        bad++;
        if (log) fprintf(log, "removed block %s: its %llu bytes do not match its hash\n", hex, (unsigned long long)size);
    }
    if (progress) el_progress_end(progress, done >> 20, NULL);
    free(bs);
    if (n_bad) *n_bad = bad;
    el_status st2 = el_store_rescan(s, st ? NULL : err);
    return st ? st : st2;
}
