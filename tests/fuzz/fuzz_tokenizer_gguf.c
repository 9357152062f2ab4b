// libFuzzer target for tokenizer metadata in GGUF files (tokenizer.ggml.*,
// both the "llama" and "gpt2" models): every input is either rejected with a
// one-line message naming the file, or gives a tokenizer that encodes and
// decodes a fixed text with ids in range.
#include <stdlib.h>
#include <string.h>

#include "edgellm/gguf.h"
#include "edgellm/tokenize.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    el_gguf *g = NULL;
    el_error err;
    if (el_gguf_open_memory(data, size, "fuzz.gguf", &g, &err)) return 0;
    el_tokenizer *t = (el_tokenizer *)1;
    el_status s = el_tokenizer_from_gguf(g, &t, &err);
    if (s != EL_OK) {
        if (t || strncmp(err.msg, "fuzz.gguf: ", 11) != 0 || strchr(err.msg, '\n')) abort();
        el_gguf_close(g);
        return 0;
    }
    el_gguf_close(g);  // the tokenizer must not point into the file
    static const char text[] = "Hello, world! <|endoftext|> <s> 123 \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x98\x81\n\n";
    for (unsigned flags = 0; flags < 8; flags++) {
        int *ids = NULL, n = 0;
        s = el_tokenizer_encode_ex(t, text, sizeof text - 1, flags, &ids, &n, &err);
        if (s == EL_OK) {
            char buf[4096];
            int nv = el_tokenizer_n_vocab(t);
            for (int i = 0; i < n; i++) {
                if (ids[i] < 0 || ids[i] >= nv) abort();
                size_t k = el_tokenizer_decode(t, i ? ids[i - 1] : -1, ids[i], buf, sizeof buf);
                if (k > sizeof buf) abort();
            }
        } else if (ids || n || strchr(err.msg, '\n')) {
            abort();
        }
        free(ids);
    }
    el_tokenizer_free(t);
    return 0;
}
