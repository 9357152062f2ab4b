// libFuzzer target for the llama2.c tokenizer file parser. The first two bytes
// of the input choose n_vocab (0..1023), the rest is the file. A file that
// loads must give a usable tokenizer: every piece readable, encode and decode
// of a fixed text working.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/tokenize.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    int n_vocab = (data[0] | data[1] << 8) & 1023;
    // A copy of exactly the file bytes, so reads past the end are caught.
    size_t n = size - 2;
    uint8_t *file = malloc(n ? n : 1);
    if (!file) return 0;
    memcpy(file, data + 2, n);
    el_tokenizer *t = NULL;
    el_error e = {0};
    el_status s = el_tokenizer_load_llama2c_memory(file, n, "fuzz.bin", n_vocab, &t, &e);
    free(file);
    if (s != EL_OK) {
        if (t || strncmp(e.msg, "fuzz.bin: ", 10) != 0) abort();  // errors name the file
        return 0;
    }
    if (el_tokenizer_n_vocab(t) != n_vocab || el_tokenizer_bos(t) != 1 || el_tokenizer_eos(t) != 2) abort();
    size_t maxp = el_tokenizer_max_piece_len(t), total = 0;
    char *buf = malloc(maxp + 1);
    if (!buf) abort();
    for (int i = 0; i < n_vocab; i++) {
        size_t len;
        const char *p = el_tokenizer_piece(t, i, &len);
        if (len > maxp || (len && !p)) abort();
        for (size_t k = 0; k < len; k++) total += (unsigned char)p[k];  // touch every byte
        if (el_tokenizer_decode(t, 1, i, buf, maxp) > maxp) abort();
    }
    static const char text[] = "Hello w\xc3\xb6rld <s> \xf0\x9f\xa6\x99!";
    int *ids = NULL, n_ids = 0;
    s = el_tokenizer_encode(t, text, sizeof text - 1, 1, &ids, &n_ids, &e);
    if (s != EL_OK) abort();  // there is always a BOS and an <unk> to fall back to
    for (int i = 0; i < n_ids; i++) {
        if (ids[i] < 0 || ids[i] >= n_vocab) abort();
        el_tokenizer_decode(t, i ? ids[i - 1] : -1, ids[i], buf, maxp);
    }
    free(ids);
    free(buf);
    el_tokenizer_free(t);
    return (int)(total & 0);
}
