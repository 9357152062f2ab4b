// Loading steps shared by the subcommands.
#include "common.h"

#include <string.h>

el_status tool_open_tokenizer_file(const char *path, el_tokenizer **out, el_error *err) {
    FILE *f = fopen(path, "rb");
    char magic[4] = {0};
    size_t got = f ? fread(magic, 1, 4, f) : 0;
    if (f) fclose(f);
    if (got == 4 && !memcmp(magic, "GGUF", 4)) {
        el_gguf *g;
        el_status s = el_gguf_open(path, &g, err);
        if (s) return s;
        s = el_tokenizer_from_gguf(g, out, err);
        el_gguf_close(g);
        return s;
    }
    return el_tokenizer_load_llama2c(path, 0, out, err);
}

el_status tool_check_prompt(const char *text, size_t len, const char *what, int allow_empty, el_error *err) {
    if (!allow_empty && len == 0) return el_err(err, EL_ERR_ARG, "%s is empty", what);
    size_t bad = el_utf8_check(text, len);
    if (bad != len)
        return el_err(err, EL_ERR_ARG, "%s is not valid UTF-8 (byte 0x%02x at offset %zu)", what,
                      (unsigned char)text[bad], bad);
    return EL_OK;
}

void tool_print_piece(FILE *out, const el_tokenizer *tok, int prev, int id) {
    char buf[256];
    size_t n = el_tokenizer_decode(tok, prev, id, buf, sizeof buf);
    if (n == 1) {
        unsigned char c = (unsigned char)buf[0];
        if ((c < 0x20 && c != '\n' && c != '\t' && c != '\r' && c != '\v' && c != '\f') || c == 0x7f) return;
    }
    fwrite(buf, 1, n, out);
}
