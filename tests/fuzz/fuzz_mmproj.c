// libFuzzer target for the projector loader: a GGUF that must either be
// refused with one line naming it, or bind a vision encoder whose shapes hold
// together; small ones are then run once on a flat image.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/vision.h"

#define CHECK(c) \
    do {         \
        if (!(c)) abort(); \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    el_vision *v = NULL;
    el_error err;
    if (el_vision_open_memory(data, size, "fuzz.gguf", &v, &err)) {
        CHECK(!v && !strncmp(err.msg, "fuzz.gguf: ", 11) && !strchr(err.msg, '\n'));
        return 0;
    }
    const el_vision_hparams *h = el_vision_hp(v);
    CHECK(h->image_size % h->patch_size == 0 && h->hidden % h->heads == 0);
    CHECK(h->n_patches == (h->image_size / h->patch_size) * (h->image_size / h->patch_size));
    CHECK(h->n_pos == h->n_patches + h->has_class && h->n_run >= 0 && h->n_run <= h->n_blocks);
    CHECK(h->out_dim > 0 && h->proj_hidden > 0);
    CHECK(el_vision_check_dim(v, h->out_dim, "llm", &err) == EL_OK);
    if (el_vision_flops(v) < 2e7) {
        size_t np = (size_t)3 * h->image_size * h->image_size;
        float *px = calloc(np, sizeof(float)), *out = malloc((size_t)h->n_patches * h->out_dim * sizeof(float));
        if (px && out) CHECK(el_vision_encode(v, NULL, px, out, &err) == EL_OK);
        free(px);
        free(out);
    }
    el_vision_close(v);
    return 0;
}
