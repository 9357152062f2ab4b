// libFuzzer target: the HTTP request body parser of edgellm serve (both kinds,
// chosen by the first byte), and the JSON escaper on whatever text it accepts.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/serve.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    el_serve_kind kind = data[0] & 1 ? EL_SERVE_CHAT : EL_SERVE_COMPLETION;
    el_serve_request r;
    el_error e;
    if (el_serve_request_parse((const char *)data + 1, size - 1, kind, &r, &e) == EL_OK) {
        el_sbuf b = {0};
        el_sbuf_json_str(&b, r.model, strlen(r.model));
        if (r.prompt) el_sbuf_json_str(&b, r.prompt, strlen(r.prompt));
        for (int i = 0; i < r.n_messages; i++) el_sbuf_json_str(&b, r.contents[i], strlen(r.contents[i]));
        for (int i = 0; i < r.n_stop; i++) el_sbuf_json_str(&b, r.stop[i], strlen(r.stop[i]));
        el_sbuf_free(&b);
    }
    el_serve_request_free(&r);
    // the escaper on raw bytes (invalid UTF-8 included)
    el_sbuf b = {0};
    el_sbuf_json_str(&b, (const char *)data, size);
    el_sbuf_free(&b);
    return 0;
}
