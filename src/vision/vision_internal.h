// Internal to src/vision: the bound projector file and the encoder's scratch.
#ifndef EL_VISION_INTERNAL_H
#define EL_VISION_INTERNAL_H

#include "edgellm/vision.h"

// One ViT block's weights: matrices as views of the file (or packed copies),
// vectors as f32 copies.
typedef struct {
    float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    el_tensor wq, wk, wv, wo;  // [hidden rows, hidden]
    float *bq, *bk, *bv, *bo;
    el_tensor fc1, fc2;        // [ff rows, hidden], [hidden rows, ff]
    float *fc1_b, *fc2_b;
} vit_block;

struct el_vision {
    char *path;
    el_gguf *g;
    el_vision_hparams hp;
    el_tensor patch_w;  // [hidden rows, 3·P·P]: the convolution kernel, one row per output channel
    float *patch_b;     // [hidden] or NULL
    float *class_embd;  // [hidden] or NULL
    float *pos_embd;    // [n_pos][hidden]
    float *pre_w, *pre_b, *post_w, *post_b;
    vit_block *blocks;  // [n_run]
    el_tensor mm0, mm2;
    float *mm0_b, *mm2_b;
    void **packs;
    int n_packs;
    float **owned;  // f32 copies made while binding
    int n_owned;
    // encoder scratch, made on first use; activations in panels (kernels.h)
    size_t ld;  // the sequence rounded up to whole panels
    float *x, *xn, *q, *k, *v, *att, *tmp, *ffh, *patches;
    float *wbuf;   // el_matmul_dense's workspace, for the largest product
    float *awork;  // el_attn_full's workspace, one per head
    el_isa isa;    // kernel level of the products (el_vision_set_isa)
};

void vit_scratch_free(el_vision *v);

#endif
