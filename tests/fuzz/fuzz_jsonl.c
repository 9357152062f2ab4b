// libFuzzer target for the strict JSON-lines parser of finetune datasets
// (el_json_prompt_completion). For every input: no crash or overread; on
// success both strings are valid UTF-8 without NUL bytes, and writing them
// back as JSON and parsing again gives the same strings.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/train.h"

static size_t escape(char *out, const char *s) {
    size_t o = 0;
    out[o++] = '"';
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') out[o++] = '\\', out[o++] = (char)c;
        else if (c < 0x20) o += (size_t)sprintf(out + o, "\\u%04x", c);
        else out[o++] = (char)c;
    }
    out[o++] = '"';
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *line = malloc(size ? size : 1);  // exact size: ASan catches any overread
    if (!line) return 0;
    memcpy(line, data, size);
    char *p, *c, why[160];
    if (el_json_prompt_completion(line, size, &p, &c, why, sizeof why) == EL_OK) {
        size_t lp = strlen(p), lc = strlen(c);
        if (!el_utf8_valid(p, lp) || !el_utf8_valid(c, lc)) abort();
        char *again = malloc(6 * (lp + lc) + 64);
        size_t n = (size_t)sprintf(again, "{\"prompt\": ");
        n += escape(again + n, p);
        n += (size_t)sprintf(again + n, ", \"completion\": ");
        n += escape(again + n, c);
        again[n++] = '}';
        char *p2, *c2;
        if (el_json_prompt_completion(again, n, &p2, &c2, why, sizeof why) != EL_OK) abort();
        if (strcmp(p, p2) || strcmp(c, c2)) abort();
        free(p2), free(c2), free(again), free(p), free(c);
    } else if (!why[0]) {
        abort();  // every rejection says why
    }
    free(line);
    return 0;
}
