// libFuzzer target: config.json and tokenizer.json (+ tokenizer_config.json)
// interpretation of `edgellm import`. The first byte picks the parser; for the
// tokenizer, a NUL byte separates tokenizer.json from tokenizer_config.json.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/hf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    el_error e;
    if (data[0] & 1) {
        el_hf_config c;
        el_hf_config_parse(text, len, "config.json", &c, &e);
        return 0;
    }
    const char *nul = memchr(text, 0, len);
    size_t tok_len = nul ? (size_t)(nul - text) : len;
    const char *tc = nul ? nul + 1 : NULL;
    size_t tc_len = nul ? len - tok_len - 1 : 0;
    el_hf_vocab v;
    if (el_hf_tokenizer_parse(text, tok_len, "tokenizer.json", tc, tc_len, "tokenizer_config.json", 64, 1, 2, &v, &e) ==
        EL_OK) {
        for (int i = 0; i < v.n; i++)
            if (!v.tokens[i] || strlen(v.tokens[i]) != v.lens[i]) abort();  // every id filled, lengths right
        el_hf_vocab_free(&v);
    }
    return 0;
}
