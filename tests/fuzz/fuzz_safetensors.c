// libFuzzer target: the safetensors header parser (HF import).
#include <stdint.h>
#include <stdlib.h>

#include "edgellm/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    el_safetensors *st;
    el_error e;
    if (el_safetensors_open_memory(data, size, "fuzz.safetensors", &st, &e) == EL_OK) {
        // Touch every validated range: ASan catches any that escaped the checks.
        volatile uint8_t sink = 0;
        for (int i = 0; i < st->n_tensors; i++) {
            const el_st_tensor *t = &st->tensors[i];
            if (t->end > t->begin) sink ^= ((const uint8_t *)t->data)[0] ^ ((const uint8_t *)t->data)[t->end - t->begin - 1];
            (void)el_st_numel(t);
        }
        (void)sink;
        el_safetensors_find(st, "a");
        el_safetensors_close(st);
    }
    return 0;
}
