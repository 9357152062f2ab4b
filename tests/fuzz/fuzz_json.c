// libFuzzer target: the JSON reader (node profiles and other JSON inputs).
#include <stdint.h>
#include <stdlib.h>

#include "edgellm/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    el_json *j;
    el_error e;
    if (el_json_parse((const char *)data, size, "fuzz.json", &j, &e) == EL_OK) {
        el_json_get(j, "layers");
        el_json_free(j);
    }
    return 0;
}
