// libFuzzer target: the placement loaders (catalog, servers, users) and the
// algorithms on what they accept. The input is up to three texts separated by
// NUL bytes (catalog, servers, users); a missing one is a small valid file.
// For every input: no crash, overread or leak; an accepted problem's
// placements pass el_place_check (storage with shared blocks counted once,
// bytes and hit ratio recomputed), trim is never below independent, and
// exact (on problems of at most 12 server-model pairs) never below trim.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/place.h"

static const char *dflt[3] = {
    "{\"models\": [{\"name\": \"a\", \"manifest\": {\"hash\": "
    "\"0000000000000000000000000000000000000000000000000000000000000001\", \"bytes\": 1}, \"header\": {\"hash\": "
    "\"0000000000000000000000000000000000000000000000000000000000000002\", \"bytes\": 2}, \"blocks\": [{\"hash\": "
    "\"0000000000000000000000000000000000000000000000000000000000000003\", \"bytes\": 50}]}]}",
    "[{\"name\": \"s\", \"storage_bytes\": 100}]",
    "[{\"name\": \"u\", \"reach\": [\"s\"], \"requests\": {\"a\": 0.5}}]",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *part[3];
    size_t len[3], off = 0;
    int have = 1;  // the text before the first NUL is always the catalog
    for (int i = 0; i < 3; i++) {
        if (have) {
            const char *z = memchr(data + off, 0, size - off);
            part[i] = (const char *)data + off;
            len[i] = z ? (size_t)(z - part[i]) : size - off;
            off += len[i] + (z ? 1 : 0);
            have = z != NULL;
        } else {
            part[i] = dflt[i];
            len[i] = strlen(dflt[i]);
        }
    }
    el_place_problem *pr;
    el_error e;
    if (el_place_parse(part[0], len[0], "catalog.json", part[1], len[1], "servers.json", part[2], len[2],
                       "users.json", &pr, &e))
        return 0;
    el_placement t, ind, ex;
    if (el_place_solve(pr, EL_PLACE_TRIM, &t, &e)) abort();  // the loaders' caps admit only solvable problems
    if (el_place_solve(pr, EL_PLACE_INDEPENDENT, &ind, &e)) abort();
    if (el_place_check(pr, &t, &e) || el_place_check(pr, &ind, &e)) abort();
    if (t.hit_ratio < ind.hit_ratio - 1e-9) abort();
    if (pr->n_servers * pr->n_models <= 12) {
        if (el_place_solve(pr, EL_PLACE_EXACT, &ex, &e) == EL_OK) {
            if (ex.hit_ratio < t.hit_ratio - 1e-9) abort();
            el_placement_free(&ex);
        }
    }
    char *j = el_place_to_json(pr, &t);
    if (!j) abort();
    free(j);
    el_placement_free(&t);
    el_placement_free(&ind);
    el_place_problem_free(pr);
    return 0;
}
