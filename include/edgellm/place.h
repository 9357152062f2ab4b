// Model placement on edge servers (issue 16, docs/network.md "Placement").
// A problem is a set of servers with storage, users who each reach some
// servers and request models with probabilities, and models that are sets of
// content-addressed blocks (a block shared by several models is stored once
// per server). A placement says which server holds which model; its
//   hit ratio = sum_u sum_m p_um [a server u reaches holds m] / sum_u sum_m p_um
// (0 when nobody requests anything), and a server's storage is the union of
// the bytes of its models' blocks, each block counted once.
// Everything here is a pure function of its inputs: no files but the loaders.
#ifndef EDGELLM_PLACE_H
#define EDGELLM_PLACE_H

#include <stdint.h>

#include "edgellm/core.h"

#ifdef __cplusplus
extern "C" {
#endif

// Caps, so that a hostile file cannot make us allocate wildly.
#define EL_PLACE_MAX_SERVERS 4096
#define EL_PLACE_MAX_MODELS 16384
#define EL_PLACE_MAX_USERS (1 << 20)
#define EL_PLACE_MAX_BLOCKS (1 << 22)            // distinct blocks in a catalog
#define EL_PLACE_MAX_MODEL_BLOCKS (1 << 20)      // blocks of one model
#define EL_PLACE_MAX_PAIRS (1 << 22)             // servers x models
#define EL_PLACE_MAX_SERVER_BLOCKS (1 << 24)     // servers x distinct blocks
#define EL_PLACE_MAX_DEMAND (1 << 24)            // sum over users of |requests| x |reach|
#define EL_PLACE_MAX_REQUESTS (1 << 22)          // sum over users of |requests|
#define EL_PLACE_MAX_BYTES ((uint64_t)1 << 53)   // sizes are JSON numbers: exact up to 2^53
#define EL_PLACE_MAX_FILE ((size_t)256 << 20)    // each input file
// exact: at most this many server x model pairs (after dropping models nobody
// reaching a server requests), and this many search states (the product over
// servers of their maximal feasible model sets).
#define EL_PLACE_EXACT_MAX_PAIRS 24
#define EL_PLACE_EXACT_MAX_STATES 100000000.0

typedef struct {
    char *name;
    uint64_t storage_bytes;
} el_place_server;

typedef struct {
    char *name;
    int n_blocks;
    int *blocks;     // indices into the problem's blocks, each once
    uint64_t bytes;  // the sum of those blocks' bytes
} el_place_model;

typedef struct {
    char *name;
    int n_reach;
    int *reach;  // server indices, each once
    int n_req;
    int *req_model;  // model indices, each once
    double *req_p;   // >= 0, summing to <= 1 (+1e-9)
} el_place_user;

typedef struct {
    int n_servers, n_models, n_users, n_blocks;
    el_place_server *servers;
    el_place_model *models;
    el_place_user *users;
    uint64_t *block_bytes;  // [n_blocks]
    double total_p;         // sum of every request probability
} el_place_problem;

// Loads CATALOG.json (edgellm catalog --json), SERVERS.json and USERS.json
// (formats in docs/network.md). Errors name the file and the bad value:
// "users.json: user \"u3\": reach names unknown server \"s9\"".
el_status el_place_load(const char *catalog_path, const char *servers_path, const char *users_path,
                        el_place_problem **out, el_error *err);
// The same from texts in memory; the names prefix error messages.
el_status el_place_parse(const char *catalog, size_t catalog_len, const char *catalog_name, const char *servers,
                         size_t servers_len, const char *servers_name, const char *users, size_t users_len,
                         const char *users_name, el_place_problem **out, el_error *err);
void el_place_problem_free(el_place_problem *p);

// Simulated instances (seeded, deterministic): servers and users uniform on
// the unit square, a user reaching the servers within `radius` (the nearest
// one when none is); n_bases base models of `blocks_per_model` blocks of
// random sizes in [0.5, 1.5) x block_bytes; each model a fine-tune of base
// (model index mod n_bases) that keeps the first round(sharing x blocks) of
// its base's blocks and has its own blocks of the same sizes for the rest;
// every server's storage = storage x the mean model size; each user requests
// every model with Zipf(zipf) popularity over its own random ranking.
typedef struct {
    int servers, users, models, bases, blocks_per_model;
    double sharing;      // 0..1: fraction of a model's blocks shared with its base's other fine-tunes
    double storage;      // per-server storage in units of the mean model size
    double radius;       // reach radius on the unit square
    double zipf;         // Zipf exponent of popularity
    uint64_t block_bytes;
} el_place_sim;
// The defaults: 10 servers, 100 users, 30 models, 3 bases, 16 blocks of
// ~64 MiB, sharing 0.5, storage 1.5, radius 0.3, zipf 0.8.
el_place_sim el_place_sim_defaults(void);
// Parses "servers=10,users=100,models=30,bases=3,blocks=16,sharing=0.5,
// storage=1.5,radius=0.3,zipf=0.8,block_bytes=67108864" (any subset, over
// the defaults).
el_status el_place_sim_parse(const char *spec, el_place_sim *out, el_error *err);
el_status el_place_simulate(const el_place_sim *sim, uint64_t seed, el_place_problem **out, el_error *err);

// ---------------------------------------------------------------- solving

typedef enum {
    EL_PLACE_TRIM,         // the TrimCaching greedy, shared blocks counted once (docs/network.md)
    EL_PLACE_INDEPENDENT,  // the same greedy counting every model whole (ignores sharing)
    EL_PLACE_EXACT,        // exhaustive search with pruning (small instances only)
    EL_PLACE_TRIM_PLAIN,   // the paper's greedy alone (largest gain first, from an empty placement)
} el_place_algo;
// trim (and independent) also start their greedy from single (server, model)
// pairs, the most useful first, until their work (inner-loop steps) passes this
#define EL_PLACE_SEED_WORK ((uint64_t)1 << 28)

// "trim", "independent", "exact", "trim-plain"; -1 for anything else.
int el_place_algo_parse(const char *name);
const char *el_place_algo_name(el_place_algo a);

typedef struct {
    int n_servers, n_models;
    uint8_t *x;            // [n_servers * n_models]: 1 when server s holds model m (x[s * n_models + m])
    uint64_t *bytes_used;  // [n_servers]: union bytes of the server's blocks
    double hit_ratio;
    int extended;  // trim: 1 when the answer is independent's placement extended (docs/network.md)
    int seeds;     // trim, independent: single-pair starts tried (all, unless the work budget ran out)
} el_placement;

el_status el_place_solve(const el_place_problem *p, el_place_algo algo, el_placement *out, el_error *err);
void el_placement_free(el_placement *pl);

// Recomputes a placement's bytes and hit ratio from scratch and checks them
// against its fields and every server's storage (shared blocks counted once).
el_status el_place_check(const el_place_problem *p, const el_placement *pl, el_error *err);
// The hit ratio of x (as in the header comment) and one server's union bytes.
double el_place_hit_ratio(const el_place_problem *p, const uint8_t *x);
uint64_t el_place_server_bytes(const el_place_problem *p, const uint8_t *x, int server);

// The output JSON, exactly {"placement": {server: [models]}, "hit_ratio": x,
// "bytes_used": {server: n}} with a newline; malloc'ed, NULL on failure.
char *el_place_to_json(const el_place_problem *p, const el_placement *pl);

#ifdef __cplusplus
}
#endif
#endif
