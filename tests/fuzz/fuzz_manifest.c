// libFuzzer target: the manifest parser (store.h), which reads manifests
// fetched from other nodes. For every input: no crash or overread; on
// success the parse is canonical: encoding the result gives the input back,
// the id is its hash, and the sizes add up.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    el_model_blocks m;
    el_error e;
    if (el_manifest_parse(data, size, "fuzz", &m, &e) != EL_OK) return 0;
    char *text;
    size_t len;
    if (el_manifest_encode(&m, &text, &len, &e) != EL_OK) abort();
    if (len != size || memcmp(text, data, size)) abort();
    free(text);
    el_hash h;
    el_hash_bytes(data, size, &h);
    if (!el_hash_eq(&h, &m.id)) abort();
    uint64_t sum = m.header_bytes;
    for (int i = 0; i < m.n_blocks; i++) {
        if (!m.blocks[i].name || !m.blocks[i].name[0] || m.blocks[i].bytes == 0) abort();
        sum += m.blocks[i].bytes;
    }
    if (sum != m.bytes) abort();
    el_model_blocks_free(&m);
    return 0;
}
