// Model placement on edge servers: loading the catalog, servers and users,
// the simulated instances, the placement check and the output JSON. The
// algorithms are in solve.c.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/json.h"
#include "edgellm/place.h"
#include "place_internal.h"

#define NAME_MAX_LEN 1024

// ---------------------------------------------------------------- name maps

void pl_map_init(pl_map *m) { memset(m, 0, sizeof *m); }

void pl_map_free(pl_map *m) {
    free(m->keys);
    free(m->lens);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

static uint64_t map_hash(const void *k, size_t n) { return el_fnv1a(EL_FNV_INIT, k, n); }

static int map_grow(pl_map *m) {
    size_t cap = m->cap ? m->cap * 2 : 64;
    const void **keys = calloc(cap, sizeof *keys);
    size_t *lens = calloc(cap, sizeof *lens);
    int *vals = calloc(cap, sizeof *vals);
    if (!keys || !lens || !vals) {
        free(keys), free(lens), free(vals);
        return -1;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->keys[i]) continue;
        size_t j = map_hash(m->keys[i], m->lens[i]) & (cap - 1);
        while (keys[j]) j = (j + 1) & (cap - 1);
        keys[j] = m->keys[i], lens[j] = m->lens[i], vals[j] = m->vals[i];
    }
    free(m->keys), free(m->lens), free(m->vals);
    m->keys = keys, m->lens = lens, m->vals = vals, m->cap = cap;
    return 0;
}

int pl_map_get(const pl_map *m, const void *key, size_t len) {
    if (!m->cap) return -1;
    for (size_t j = map_hash(key, len) & (m->cap - 1); m->keys[j]; j = (j + 1) & (m->cap - 1))
        if (m->lens[j] == len && !memcmp(m->keys[j], key, len)) return m->vals[j];
    return -1;
}

// Adds key -> val (the key is borrowed: it must outlive the map). Returns the
// value already there (and adds nothing), -1 when added, -2 out of memory.
int pl_map_put(pl_map *m, const void *key, size_t len, int val) {
    int old = pl_map_get(m, key, len);
    if (old >= 0) return old;
    if ((m->n + 1) * 2 > m->cap && map_grow(m)) return -2;
    size_t j = map_hash(key, len) & (m->cap - 1);
    while (m->keys[j]) j = (j + 1) & (m->cap - 1);
    m->keys[j] = key, m->lens[j] = len, m->vals[j] = val;
    m->n++;
    return -1;
}

// ---------------------------------------------------------------- problem

void el_place_problem_free(el_place_problem *p) {
    if (!p) return;
    for (int i = 0; i < p->n_servers; i++) free(p->servers[i].name);
    for (int i = 0; i < p->n_models; i++) {
        free(p->models[i].name);
        free(p->models[i].blocks);
    }
    for (int i = 0; i < p->n_users; i++) {
        free(p->users[i].name);
        free(p->users[i].reach);
        free(p->users[i].req_model);
        free(p->users[i].req_p);
    }
    free(p->servers);
    free(p->models);
    free(p->users);
    free(p->block_bytes);
    free(p);
}

// A name: a non-empty string without NUL bytes, at most NAME_MAX_LEN bytes.
static el_status get_name(const el_json *v, const char *file, const char *what, char **out, el_error *err) {
    if (!el_json_is(v, EL_JSON_STRING))
        return el_err(err, EL_ERR_FORMAT, "%s: %s: \"name\" must be a string", file, what);
    size_t n = el_json_strlen(v);
    const char *s = el_json_str(v);
    if (n == 0 || n > NAME_MAX_LEN || memchr(s, 0, n))
        return el_err(err, EL_ERR_FORMAT, "%s: %s: a name must be 1 to %d bytes without NUL", file, what,
                      NAME_MAX_LEN);
    *out = strdup(s);
    return *out ? EL_OK : el_err(err, EL_ERR_NOMEM, "%s: out of memory", file);
}

// A size in bytes: an integer in [0, 2^53].
static el_status get_bytes(const el_json *v, const char *file, const char *what, uint64_t *out, el_error *err) {
    double d = el_json_num(v, -1);
    if (!el_json_is(v, EL_JSON_NUMBER) || !(d >= 0) || d > (double)EL_PLACE_MAX_BYTES || d != floor(d))
        return el_err(err, EL_ERR_FORMAT, "%s: %s must be a whole number of bytes from 0 to 2^53", file, what);
    *out = (uint64_t)d;
    return EL_OK;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

// "hash": 64 lowercase hex digits, decoded into out[32].
static el_status get_hash(const el_json *v, const char *file, const char *what, uint8_t out[32], el_error *err) {
    const char *s = el_json_str(v);
    if (!s || el_json_strlen(v) != 64)
        return el_err(err, EL_ERR_FORMAT, "%s: %s: \"hash\" must be 64 lowercase hex digits", file, what);
    for (int i = 0; i < 32; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return el_err(err, EL_ERR_FORMAT, "%s: %s: \"hash\" \"%.64s\" is not 64 lowercase hex digits", file, what,
                          s);
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return EL_OK;
}

typedef struct {
    el_place_problem *p;
    pl_map blocks, models, servers;  // keys borrowed from hashes / names
    uint8_t *hashes;                 // [cap_blocks * 32]
    int cap_blocks, cap_models;
    size_t cap_bytes;                // block_bytes capacity
} loader;

static void loader_free(loader *L) {
    pl_map_free(&L->blocks);
    pl_map_free(&L->models);
    pl_map_free(&L->servers);
    free(L->hashes);
}

// Adds a block (hash, bytes) to the catalog and returns its index (or -1 after an error).
static int add_block(loader *L, const uint8_t h[32], uint64_t bytes, const char *file, el_error *err) {
    el_place_problem *p = L->p;
    // the map borrows keys from L->hashes: look up before growing it
    char hex[65];
    int found = pl_map_get(&L->blocks, h, 32);
    if (found >= 0) {
        if (p->block_bytes[found] == bytes) return found;
        for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", h[i]);
        el_err(err, EL_ERR_FORMAT, "%s: block %s is listed with %llu and %llu bytes", file, hex,
               (unsigned long long)p->block_bytes[found], (unsigned long long)bytes);
        return -1;
    }
    if (p->n_blocks == EL_PLACE_MAX_BLOCKS) {
        el_err(err, EL_ERR_RANGE, "%s: more than %d distinct blocks", file, EL_PLACE_MAX_BLOCKS);
        return -1;  // reported as EL_ERR_FORMAT by the caller: a catalog that big is malformed for us
    }
    if (p->n_blocks == L->cap_blocks) {
        // Growing the hash array moves the keys: rebuild the map over the new array.
        int cap = L->cap_blocks ? L->cap_blocks * 2 : 1024;
        uint8_t *nh = malloc((size_t)cap * 32);
        uint64_t *nb = realloc(p->block_bytes, (size_t)cap * sizeof *nb);
        if (!nh || !nb) {
            free(nh);
            if (nb) p->block_bytes = nb;
            el_err(err, EL_ERR_NOMEM, "%s: out of memory", file);
            return -2;
        }
        p->block_bytes = nb;
        if (L->hashes) memcpy(nh, L->hashes, (size_t)p->n_blocks * 32);
        free(L->hashes);
        L->hashes = nh;
        L->cap_blocks = cap;
        pl_map_free(&L->blocks);
        for (int i = 0; i < p->n_blocks; i++)
            if (pl_map_put(&L->blocks, L->hashes + (size_t)i * 32, 32, i) == -2) {
                el_err(err, EL_ERR_NOMEM, "%s: out of memory", file);
                return -2;
            }
    }
    int idx = p->n_blocks++;
    memcpy(L->hashes + (size_t)idx * 32, h, 32);
    p->block_bytes[idx] = bytes;
    if (pl_map_put(&L->blocks, L->hashes + (size_t)idx * 32, 32, idx) == -2) {
        el_err(err, EL_ERR_NOMEM, "%s: out of memory", file);
        return -2;
    }
    return idx;
}

// One {"hash": H, "bytes": n} of a model: adds it to the model's set.
static el_status model_block(loader *L, el_place_model *m, int *cap, const el_json *b, const char *file,
                             const char *what, el_error *err) {
    if (!el_json_is(b, EL_JSON_OBJECT)) return el_err(err, EL_ERR_FORMAT, "%s: %s must be an object", file, what);
    uint8_t h[32];
    uint64_t bytes;
    char w[NAME_MAX_LEN + 160];
    snprintf(w, sizeof w, "%s \"bytes\"", what);
    el_status st;
    if ((st = get_hash(el_json_get(b, "hash"), file, what, h, err)) ||
        (st = get_bytes(el_json_get(b, "bytes"), file, w, &bytes, err)))
        return st;
    int idx = add_block(L, h, bytes, file, err);
    if (idx < 0) return idx == -1 ? EL_ERR_FORMAT : EL_ERR_NOMEM;
    for (int i = 0; i < m->n_blocks; i++)  // a model listing a block twice (two equal tensors) holds it once
        if (m->blocks[i] == idx) return EL_OK;
    if (m->n_blocks == EL_PLACE_MAX_MODEL_BLOCKS)
        return el_err(err, EL_ERR_RANGE, "%s: model \"%s\" has more than %d blocks", file, m->name,
                      EL_PLACE_MAX_MODEL_BLOCKS);
    if (m->n_blocks == *cap) {
        int nc = *cap ? *cap * 2 : 16;
        int *nb = realloc(m->blocks, (size_t)nc * sizeof *nb);
        if (!nb) return el_err(err, EL_ERR_NOMEM, "%s: out of memory", file);
        m->blocks = nb, *cap = nc;
    }
    m->blocks[m->n_blocks++] = idx;
    m->bytes += bytes;
    return EL_OK;
}

static el_status parse_catalog(loader *L, const el_json *root, const char *file, el_error *err) {
    el_place_problem *p = L->p;
    const el_json *models = el_json_get(root, "models");
    if (!el_json_is(root, EL_JSON_OBJECT) || !el_json_is(models, EL_JSON_ARRAY))
        return el_err(err, EL_ERR_FORMAT, "%s: expected an object with a \"models\" array (edgellm catalog --json)",
                      file);
    size_t n = el_json_len(models);
    if (n > EL_PLACE_MAX_MODELS)
        return el_err(err, EL_ERR_RANGE, "%s: %zu models, more than the cap of %d", file, n, EL_PLACE_MAX_MODELS);
    p->models = calloc(n ? n : 1, sizeof *p->models);
    if (!p->models) return el_err(err, EL_ERR_NOMEM, "%s: out of memory", file);
    size_t i = 0;
    for (const el_json *mj = el_json_first(models); mj; mj = el_json_next(models, mj), i++) {
        char what[NAME_MAX_LEN + 64];
        snprintf(what, sizeof what, "model %zu", i);
        if (!el_json_is(mj, EL_JSON_OBJECT)) return el_err(err, EL_ERR_FORMAT, "%s: %s must be an object", file, what);
        el_place_model *m = &p->models[p->n_models++];
        el_status st;
        if ((st = get_name(el_json_get(mj, "name"), file, what, &m->name, err))) return st;
        snprintf(what, sizeof what, "model \"%s\"", m->name);
        int old = pl_map_put(&L->models, m->name, strlen(m->name), p->n_models - 1);
        if (old == -2) return el_err(err, EL_ERR_NOMEM, "%s: out of memory", file);
        if (old >= 0) return el_err(err, EL_ERR_FORMAT, "%s: %s is listed twice", file, what);
        int cap = 0;
        char w[2 * NAME_MAX_LEN + 512];
        const char *parts[2] = {"manifest", "header"};
        for (int k = 0; k < 2; k++) {
            snprintf(w, sizeof w, "%s: \"%s\"", what, parts[k]);
            if ((st = model_block(L, m, &cap, el_json_get(mj, parts[k]), file, w, err))) return st;
        }
        const el_json *blocks = el_json_get(mj, "blocks");
        if (!el_json_is(blocks, EL_JSON_ARRAY))
            return el_err(err, EL_ERR_FORMAT, "%s: %s: \"blocks\" must be an array", file, what);
        size_t k = 0;
        for (const el_json *b = el_json_first(blocks); b; b = el_json_next(blocks, b), k++) {
            const char *bn = el_json_str(el_json_get(b, "name"));
            if (bn && strlen(bn) <= 256)
                snprintf(w, sizeof w, "%s: block \"%s\"", what, bn);
            else
                snprintf(w, sizeof w, "%s: block %zu", what, k);
            if ((st = model_block(L, m, &cap, b, file, w, err))) return st;
        }
    }
    // Every sum of block bytes (a model, a server's union) then fits in 64 bits.
    uint64_t total = 0;
    for (int b = 0; b < p->n_blocks; b++) {
        total += p->block_bytes[b];
        if (total > ((uint64_t)1 << 62))
            return el_err(err, EL_ERR_RANGE, "%s: the blocks add up to more than 2^62 bytes", file);
    }
    return EL_OK;
}

static el_status parse_servers(loader *L, const el_json *root, const char *file, el_error *err) {
    el_place_problem *p = L->p;
    if (!el_json_is(root, EL_JSON_ARRAY))
        return el_err(err, EL_ERR_FORMAT, "%s: expected an array of {\"name\", \"storage_bytes\"}", file);
    size_t n = el_json_len(root);
    if (n > EL_PLACE_MAX_SERVERS)
        return el_err(err, EL_ERR_RANGE, "%s: %zu servers, more than the cap of %d", file, n, EL_PLACE_MAX_SERVERS);
    p->servers = calloc(n ? n : 1, sizeof *p->servers);
    if (!p->servers) return el_err(err, EL_ERR_NOMEM, "%s: out of memory", file);
    size_t i = 0;
    for (const el_json *sj = el_json_first(root); sj; sj = el_json_next(root, sj), i++) {
        char what[NAME_MAX_LEN + 64];
        snprintf(what, sizeof what, "server %zu", i);
        if (!el_json_is(sj, EL_JSON_OBJECT)) return el_err(err, EL_ERR_FORMAT, "%s: %s must be an object", file, what);
        el_place_server *s = &p->servers[p->n_servers++];
        el_status st;
        if ((st = get_name(el_json_get(sj, "name"), file, what, &s->name, err))) return st;
        snprintf(what, sizeof what, "server \"%s\": \"storage_bytes\"", s->name);
        if ((st = get_bytes(el_json_get(sj, "storage_bytes"), file, what, &s->storage_bytes, err))) return st;
        int old = pl_map_put(&L->servers, s->name, strlen(s->name), p->n_servers - 1);
        if (old == -2) return el_err(err, EL_ERR_NOMEM, "%s: out of memory", file);
        if (old >= 0) return el_err(err, EL_ERR_FORMAT, "%s: server \"%s\" is listed twice", file, s->name);
    }
    return EL_OK;
}

static el_status parse_users(loader *L, const el_json *root, const char *file, el_error *err) {
    el_place_problem *p = L->p;
    if (!el_json_is(root, EL_JSON_ARRAY))
        return el_err(err, EL_ERR_FORMAT, "%s: expected an array of {\"name\", \"reach\", \"requests\"}", file);
    size_t n = el_json_len(root);
    if (n > EL_PLACE_MAX_USERS)
        return el_err(err, EL_ERR_RANGE, "%s: %zu users, more than the cap of %d", file, n, EL_PLACE_MAX_USERS);
    p->users = calloc(n ? n : 1, sizeof *p->users);
    if (!p->users) return el_err(err, EL_ERR_NOMEM, "%s: out of memory", file);
    pl_map names;
    pl_map_init(&names);
    uint64_t demand = 0, requests = 0;
    el_status st = EL_OK;
    size_t i = 0;
    uint8_t *seen_s = calloc((size_t)p->n_servers + 1, 1), *seen_m = calloc((size_t)p->n_models + 1, 1);
    if (!seen_s || !seen_m) {
        st = el_err(err, EL_ERR_NOMEM, "%s: out of memory", file);
        goto done;
    }
    for (const el_json *uj = el_json_first(root); uj; uj = el_json_next(root, uj), i++) {
        char what[NAME_MAX_LEN + 64];
        snprintf(what, sizeof what, "user %zu", i);
        if (!el_json_is(uj, EL_JSON_OBJECT)) {
            st = el_err(err, EL_ERR_FORMAT, "%s: %s must be an object", file, what);
            goto done;
        }
        el_place_user *u = &p->users[p->n_users++];
        if ((st = get_name(el_json_get(uj, "name"), file, what, &u->name, err))) goto done;
        snprintf(what, sizeof what, "user \"%s\"", u->name);
        int old = pl_map_put(&names, u->name, strlen(u->name), 0);
        if (old == -2 || old >= 0) {
            st = old == -2 ? el_err(err, EL_ERR_NOMEM, "%s: out of memory", file)
                           : el_err(err, EL_ERR_FORMAT, "%s: %s is listed twice", file, what);
            goto done;
        }
        const el_json *reach = el_json_get(uj, "reach"), *req = el_json_get(uj, "requests");
        if (!el_json_is(reach, EL_JSON_ARRAY)) {
            st = el_err(err, EL_ERR_FORMAT, "%s: %s: \"reach\" must be an array of server names", file, what);
            goto done;
        }
        if (!el_json_is(req, EL_JSON_OBJECT)) {
            st = el_err(err, EL_ERR_FORMAT, "%s: %s: \"requests\" must be an object {model: probability}", file,
                        what);
            goto done;
        }
        size_t nr = el_json_len(reach), nq = el_json_len(req);
        if (nr > (size_t)p->n_servers || nq > (size_t)p->n_models) {
            st = el_err(err, EL_ERR_FORMAT, "%s: %s: %zu servers in \"reach\" and %zu models in \"requests\", "
                        "for %d servers and %d models", file, what, nr, nq, p->n_servers, p->n_models);
            goto done;
        }
        demand += (uint64_t)nr * nq;
        requests += nq;
        if (requests > EL_PLACE_MAX_REQUESTS) {
            st = el_err(err, EL_ERR_RANGE, "%s: more than %d requests in all", file, EL_PLACE_MAX_REQUESTS);
            goto done;
        }
        if (demand > EL_PLACE_MAX_DEMAND) {
            st = el_err(err, EL_ERR_RANGE, "%s: the users' requests times their reach exceed the cap of %d", file,
                        EL_PLACE_MAX_DEMAND);
            goto done;
        }
        u->reach = malloc((nr ? nr : 1) * sizeof(int));
        u->req_model = malloc((nq ? nq : 1) * sizeof(int));
        u->req_p = malloc((nq ? nq : 1) * sizeof(double));
        if (!u->reach || !u->req_model || !u->req_p) {
            st = el_err(err, EL_ERR_NOMEM, "%s: out of memory", file);
            goto done;
        }
        for (const el_json *r = el_json_first(reach); r; r = el_json_next(reach, r)) {
            const char *s = el_json_str(r);
            if (!s) {
                st = el_err(err, EL_ERR_FORMAT, "%s: %s: \"reach\" must hold server names (strings)", file, what);
                goto done;
            }
            int si = pl_map_get(&L->servers, s, el_json_strlen(r));
            if (si < 0) {
                st = el_err(err, EL_ERR_FORMAT, "%s: %s: reach names unknown server \"%.256s\"", file, what, s);
                goto done;
            }
            if (seen_s[si]) {
                st = el_err(err, EL_ERR_FORMAT, "%s: %s: reach names server \"%s\" twice", file, what, s);
                goto done;
            }
            seen_s[si] = 1;
            u->reach[u->n_reach++] = si;
        }
        double sum = 0;
        for (const el_json *q = el_json_first(req); q; q = el_json_next(req, q)) {
            const char *k = el_json_key(req, q);
            int mi = k ? pl_map_get(&L->models, k, strlen(k)) : -1;
            if (mi < 0) {
                st = el_err(err, EL_ERR_FORMAT, "%s: %s: requests unknown model \"%.256s\"", file, what, k ? k : "");
                goto done;
            }
            if (seen_m[mi]) {
                st = el_err(err, EL_ERR_FORMAT, "%s: %s: requests model \"%s\" twice", file, what, k);
                goto done;
            }
            seen_m[mi] = 1;
            double pr = el_json_num(q, -1);
            if (!el_json_is(q, EL_JSON_NUMBER) || !(pr >= 0) || pr > 1) {
                st = el_err(err, EL_ERR_FORMAT, "%s: %s: probability of model \"%s\" must be a number in [0, 1]",
                            file, what, k);
                goto done;
            }
            sum += pr;
            u->req_model[u->n_req] = mi;
            u->req_p[u->n_req++] = pr;
        }
        if (sum > 1 + 1e-9) {
            st = el_err(err, EL_ERR_FORMAT, "%s: %s: request probabilities sum to %.9g, more than 1", file, what, sum);
            goto done;
        }
        p->total_p += sum;
        for (int k = 0; k < u->n_reach; k++) seen_s[u->reach[k]] = 0;
        for (int k = 0; k < u->n_req; k++) seen_m[u->req_model[k]] = 0;
    }
done:
    free(seen_s);
    free(seen_m);
    pl_map_free(&names);
    return st;
}

el_status el_place_parse(const char *catalog, size_t catalog_len, const char *catalog_name, const char *servers,
                         size_t servers_len, const char *servers_name, const char *users, size_t users_len,
                         const char *users_name, el_place_problem **out, el_error *err) {
    *out = NULL;
    loader L;
    memset(&L, 0, sizeof L);
    L.p = calloc(1, sizeof *L.p);
    if (!L.p) return el_err(err, EL_ERR_NOMEM, "out of memory");
    el_json *j = NULL;
    el_status st;
    if ((st = el_json_parse(catalog, catalog_len, catalog_name, &j, err)) ||
        (st = parse_catalog(&L, j, catalog_name, err)))
        goto fail;
    el_json_free(j);
    if ((st = el_json_parse(servers, servers_len, servers_name, &j, err)) ||
        (st = parse_servers(&L, j, servers_name, err)))
        goto fail;
    el_json_free(j);
    if ((uint64_t)L.p->n_servers * (uint64_t)L.p->n_models > EL_PLACE_MAX_PAIRS ||
        (uint64_t)L.p->n_servers * (uint64_t)L.p->n_blocks > EL_PLACE_MAX_SERVER_BLOCKS) {
        st = el_err(err, EL_ERR_RANGE, "%s: %d servers for %d models of %d blocks: over the caps of %d "
                    "server-model pairs and %d server-block pairs", servers_name, L.p->n_servers, L.p->n_models,
                    L.p->n_blocks, EL_PLACE_MAX_PAIRS, EL_PLACE_MAX_SERVER_BLOCKS);
        j = NULL;
        goto fail;
    }
    if ((st = el_json_parse(users, users_len, users_name, &j, err)) || (st = parse_users(&L, j, users_name, err)))
        goto fail;
    el_json_free(j);
    loader_free(&L);
    *out = L.p;
    return EL_OK;
fail:
    el_json_free(j);
    loader_free(&L);
    el_place_problem_free(L.p);
    return st;
}

el_status el_place_load(const char *catalog_path, const char *servers_path, const char *users_path,
                        el_place_problem **out, el_error *err) {
    *out = NULL;
    const char *paths[3] = {catalog_path, servers_path, users_path};
    char *text[3] = {0};
    size_t len[3] = {0};
    el_status st = EL_OK;
    for (int i = 0; i < 3 && !st; i++) st = el_read_file(paths[i], EL_PLACE_MAX_FILE, &text[i], &len[i], err);
    if (!st)
        st = el_place_parse(text[0], len[0], catalog_path, text[1], len[1], servers_path, text[2], len[2], users_path,
                            out, err);
    for (int i = 0; i < 3; i++) free(text[i]);
    return st;
}

// ---------------------------------------------------------------- simulation

el_place_sim el_place_sim_defaults(void) {
    el_place_sim s = {.servers = 10, .users = 100, .models = 30, .bases = 3, .blocks_per_model = 16,
                      .sharing = 0.5, .storage = 1.5, .radius = 0.3, .zipf = 0.8, .block_bytes = 64u << 20};
    return s;
}

el_status el_place_sim_parse(const char *spec, el_place_sim *out, el_error *err) {
    el_place_sim s = el_place_sim_defaults();
    const char *p = spec;
    while (*p) {
        const char *eq = strchr(p, '='), *end = strchr(p, ',');
        if (!end) end = p + strlen(p);
        if (!eq || eq > end) return el_err(err, EL_ERR_ARG, "--simulate: '%s': expected KEY=VALUE[,KEY=VALUE...]", spec);
        char key[32], val[64];
        size_t kn = (size_t)(eq - p), vn = (size_t)(end - eq - 1);
        if (kn >= sizeof key || vn >= sizeof val || vn == 0)
            return el_err(err, EL_ERR_ARG, "--simulate: '%.*s' is not KEY=VALUE", (int)(end - p), p);
        memcpy(key, p, kn), key[kn] = 0;
        memcpy(val, eq + 1, vn), val[vn] = 0;
        char *e;
        double v = strtod(val, &e);
        if (*e || !isfinite(v)) return el_err(err, EL_ERR_ARG, "--simulate: %s=%s is not a number", key, val);
        struct {
            const char *name;
            double lo, hi;
            int integer;
        } keys[] = {{"servers", 1, EL_PLACE_MAX_SERVERS, 1}, {"users", 1, EL_PLACE_MAX_USERS, 1},
                    {"models", 1, EL_PLACE_MAX_MODELS, 1},   {"bases", 1, EL_PLACE_MAX_MODELS, 1},
                    {"blocks", 1, 4096, 1},                  {"sharing", 0, 1, 0},
                    {"storage", 0, 1e6, 0},                  {"radius", 0, 2, 0},
                    {"zipf", 0, 10, 0},                      {"block_bytes", 1, (double)((uint64_t)1 << 40), 1}};
        int k = 0, nk = (int)(sizeof keys / sizeof keys[0]);
        while (k < nk && strcmp(keys[k].name, key)) k++;
        if (k == nk)
            return el_err(err, EL_ERR_ARG, "--simulate: unknown key '%s' (servers users models bases blocks sharing "
                          "storage radius zipf block_bytes)", key);
        if (!(v >= keys[k].lo && v <= keys[k].hi) || (keys[k].integer && v != floor(v)))
            return el_err(err, EL_ERR_ARG, "--simulate: %s=%s: expected %s from %g to %g", key, val,
                          keys[k].integer ? "a whole number" : "a number", keys[k].lo, keys[k].hi);
        switch (k) {
        case 0: s.servers = (int)v; break;
        case 1: s.users = (int)v; break;
        case 2: s.models = (int)v; break;
        case 3: s.bases = (int)v; break;
        case 4: s.blocks_per_model = (int)v; break;
        case 5: s.sharing = v; break;
        case 6: s.storage = v; break;
        case 7: s.radius = v; break;
        case 8: s.zipf = v; break;
        default: s.block_bytes = (uint64_t)v; break;
        }
        p = *end ? end + 1 : end;
    }
    *out = s;
    return EL_OK;
}

static uint64_t sm64(uint64_t *s) {  // splitmix64
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static double unif(uint64_t *s) { return (double)(sm64(s) >> 11) * (1.0 / 9007199254740992.0); }

static char *fmt_name(char c, int i) {
    char buf[24];
    snprintf(buf, sizeof buf, "%c%d", c, i);
    return strdup(buf);
}

el_status el_place_simulate(const el_place_sim *sim, uint64_t seed, el_place_problem **out, el_error *err) {
    *out = NULL;
    const el_place_sim *s = sim;
    if (s->servers < 1 || s->servers > EL_PLACE_MAX_SERVERS || s->users < 1 || s->users > EL_PLACE_MAX_USERS ||
        s->models < 1 || s->models > EL_PLACE_MAX_MODELS || s->bases < 1 || s->bases > s->models ||
        s->blocks_per_model < 1 || s->blocks_per_model > 4096 || !(s->sharing >= 0 && s->sharing <= 1) ||
        !(s->storage >= 0 && s->storage <= 1e6) || !(s->radius >= 0) || !(s->zipf >= 0) || s->block_bytes < 1 ||
        s->block_bytes > ((uint64_t)1 << 40))
        return el_err(err, EL_ERR_ARG, "simulate: parameters out of range (see el_place_sim)");
    int L = s->blocks_per_model, keep = (int)floor(s->sharing * L + 0.5);
    uint64_t n_blocks = (uint64_t)s->bases * (uint64_t)keep + (uint64_t)s->models * (uint64_t)(L - keep);
    if ((uint64_t)s->users * (uint64_t)s->models * (uint64_t)s->servers > EL_PLACE_MAX_DEMAND ||
        (uint64_t)s->users * (uint64_t)s->models > EL_PLACE_MAX_REQUESTS ||
        (uint64_t)s->servers * (uint64_t)s->models > EL_PLACE_MAX_PAIRS || n_blocks > EL_PLACE_MAX_BLOCKS ||
        n_blocks * (uint64_t)s->servers > EL_PLACE_MAX_SERVER_BLOCKS)
        return el_err(err, EL_ERR_RANGE, "simulate: %d servers, %d users, %d models of %d blocks: over the caps",
                      s->servers, s->users, s->models, L);
    el_place_problem *p = calloc(1, sizeof *p);
    if (!p) return el_err(err, EL_ERR_NOMEM, "simulate: out of memory");
    uint64_t rng = seed ^ 0x5eed5eed5eed5eedULL;
    el_status st = EL_OK;
    double *sizes = malloc((size_t)s->bases * (size_t)L * sizeof *sizes);
    double *pos = malloc((size_t)(s->servers + s->users) * 2 * sizeof *pos);
    int *perm = malloc((size_t)s->models * sizeof *perm);
    p->servers = calloc((size_t)s->servers, sizeof *p->servers);
    p->models = calloc((size_t)s->models, sizeof *p->models);
    p->users = calloc((size_t)s->users, sizeof *p->users);
    p->block_bytes = malloc((size_t)(n_blocks ? n_blocks : 1) * sizeof *p->block_bytes);
    if (!sizes || !pos || !perm || !p->servers || !p->models || !p->users || !p->block_bytes) goto nomem;
    // blocks: each base's first `keep` blocks are shared by its fine-tunes
    for (int b = 0; b < s->bases; b++)
        for (int l = 0; l < L; l++) sizes[b * L + l] = floor((double)s->block_bytes * (0.5 + unif(&rng)));
    for (int b = 0; b < s->bases; b++)
        for (int l = 0; l < keep; l++) p->block_bytes[p->n_blocks++] = (uint64_t)sizes[b * L + l];
    double total = 0;
    for (int i = 0; i < s->models; i++) {
        el_place_model *m = &p->models[p->n_models++];
        int b = i % s->bases;
        if (!(m->name = fmt_name('m', i)) || !(m->blocks = malloc((size_t)L * sizeof(int)))) goto nomem;
        for (int l = 0; l < L; l++) {
            int idx = l < keep ? b * keep + l : p->n_blocks++;
            if (l >= keep) p->block_bytes[idx] = (uint64_t)sizes[b * L + l];
            m->blocks[m->n_blocks++] = idx;
            m->bytes += p->block_bytes[idx];
        }
        total += (double)m->bytes;
    }
    uint64_t cap = (uint64_t)floor(s->storage * total / s->models);
    for (int i = 0; i < s->servers; i++) {
        if (!(p->servers[i].name = fmt_name('s', i))) goto nomem;
        p->servers[i].storage_bytes = cap;
        p->n_servers++;
    }
    for (int i = 0; i < 2 * (s->servers + s->users); i++) pos[i] = unif(&rng);
    for (int i = 0; i < s->users; i++) {
        el_place_user *u = &p->users[p->n_users++];
        if (!(u->name = fmt_name('u', i)) || !(u->reach = malloc((size_t)s->servers * sizeof(int))) ||
            !(u->req_model = malloc((size_t)s->models * sizeof(int))) ||
            !(u->req_p = malloc((size_t)s->models * sizeof(double))))
            goto nomem;
        const double *up = pos + 2 * (s->servers + i);
        int nearest = 0;
        double best = INFINITY;
        for (int k = 0; k < s->servers; k++) {
            double dx = up[0] - pos[2 * k], dy = up[1] - pos[2 * k + 1], d = sqrt(dx * dx + dy * dy);
            if (d <= s->radius) u->reach[u->n_reach++] = k;
            if (d < best) best = d, nearest = k;
        }
        if (!u->n_reach) u->reach[u->n_reach++] = nearest;
        for (int k = 0; k < s->models; k++) perm[k] = k;
        for (int k = s->models - 1; k > 0; k--) {
            int j = (int)(sm64(&rng) % (uint64_t)(k + 1)), t = perm[k];
            perm[k] = perm[j], perm[j] = t;
        }
        double h = 0;
        for (int k = 0; k < s->models; k++) h += pow(k + 1, -s->zipf);
        for (int k = 0; k < s->models; k++) {
            u->req_model[u->n_req] = perm[k];
            u->req_p[u->n_req++] = pow(k + 1, -s->zipf) / h;
            p->total_p += pow(k + 1, -s->zipf) / h;
        }
    }
    goto done;
nomem:
    st = el_err(err, EL_ERR_NOMEM, "simulate: out of memory");
done:
    free(sizes);
    free(pos);
    free(perm);
    if (st)
        el_place_problem_free(p);
    else
        *out = p;
    return st;
}

// ---------------------------------------------------------------- check and output

double el_place_hit_ratio(const el_place_problem *p, const uint8_t *x) {
    if (!(p->total_p > 0)) return 0;
    double hit = 0;
    for (int u = 0; u < p->n_users; u++) {
        const el_place_user *us = &p->users[u];
        for (int j = 0; j < us->n_req; j++) {
            int m = us->req_model[j];
            for (int k = 0; k < us->n_reach; k++)
                if (x[(size_t)us->reach[k] * (size_t)p->n_models + (size_t)m]) {
                    hit += us->req_p[j];
                    break;
                }
        }
    }
    return hit / p->total_p;
}

uint64_t el_place_server_bytes(const el_place_problem *p, const uint8_t *x, int server) {
    uint8_t *seen = calloc((size_t)p->n_blocks + 1, 1);
    if (!seen) return UINT64_MAX;
    uint64_t bytes = 0;
    for (int m = 0; m < p->n_models; m++) {
        if (!x[(size_t)server * (size_t)p->n_models + (size_t)m]) continue;
        const el_place_model *md = &p->models[m];
        for (int k = 0; k < md->n_blocks; k++)
            if (!seen[md->blocks[k]]) {
                seen[md->blocks[k]] = 1;
                bytes += p->block_bytes[md->blocks[k]];
            }
    }
    free(seen);
    return bytes;
}

el_status el_place_check(const el_place_problem *p, const el_placement *pl, el_error *err) {
    if (pl->n_servers != p->n_servers || pl->n_models != p->n_models)
        return el_err(err, EL_ERR_STATE, "placement: %d x %d, the problem is %d servers x %d models", pl->n_servers,
                      pl->n_models, p->n_servers, p->n_models);
    for (int s = 0; s < p->n_servers; s++) {
        uint64_t b = el_place_server_bytes(p, pl->x, s);
        if (b == UINT64_MAX) return el_err(err, EL_ERR_NOMEM, "placement check: out of memory");
        if (b != pl->bytes_used[s])
            return el_err(err, EL_ERR_STATE, "placement: server \"%s\" holds %llu bytes, the placement says %llu",
                          p->servers[s].name, (unsigned long long)b, (unsigned long long)pl->bytes_used[s]);
        if (b > p->servers[s].storage_bytes)
            return el_err(err, EL_ERR_STATE, "placement: server \"%s\" holds %llu bytes, over its storage of %llu",
                          p->servers[s].name, (unsigned long long)b, (unsigned long long)p->servers[s].storage_bytes);
    }
    double h = el_place_hit_ratio(p, pl->x);
    if (fabs(h - pl->hit_ratio) > 1e-9)
        return el_err(err, EL_ERR_STATE, "placement: hit ratio is %.12g, the placement says %.12g", h, pl->hit_ratio);
    return EL_OK;
}

static void put_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\')
            fprintf(f, "\\%c", *c);
        else if (*c < 0x20)
            fprintf(f, "\\u%04x", *c);
        else
            fputc(*c, f);
    }
    fputc('"', f);
}

char *el_place_to_json(const el_place_problem *p, const el_placement *pl) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    fputs("{\"placement\": {", f);
    for (int s = 0; s < p->n_servers; s++) {
        if (s) fputs(", ", f);
        put_str(f, p->servers[s].name);
        fputs(": [", f);
        int n = 0;
        for (int m = 0; m < p->n_models; m++)
            if (pl->x[(size_t)s * (size_t)p->n_models + (size_t)m]) {
                if (n++) fputs(", ", f);
                put_str(f, p->models[m].name);
            }
        fputc(']', f);
    }
    fprintf(f, "}, \"hit_ratio\": %.17g, \"bytes_used\": {", pl->hit_ratio);
    for (int s = 0; s < p->n_servers; s++) {
        if (s) fputs(", ", f);
        put_str(f, p->servers[s].name);
        fprintf(f, ": %llu", (unsigned long long)pl->bytes_used[s]);
    }
    fputs("}}\n", f);
    if (fclose(f)) {
        free(buf);
        return NULL;
    }
    return buf;
}
