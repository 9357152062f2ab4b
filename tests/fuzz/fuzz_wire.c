// libFuzzer target: every decoder of the wire protocol (split inference, training, blocks).
#include <stdint.h>
#include <stdlib.h>

#include "edgellm/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    el_wire_msg m;
    el_error e;
    if (el_wire_parse(data, size, &m, &e) != EL_OK) return 0;
    el_wire_open o;
    el_wire_forward f;
    el_wire_result r;
    uint32_t code;
    char text[128];
    el_wire_decode_open(&m, &o, &e);
    el_wire_decode_error(&m, &code, text, sizeof text, &e);
    if (el_wire_decode_forward(&m, 64, &f, &e) == EL_OK) {
        float *x = malloc((size_t)f.n_tokens * 64 * sizeof(float));
        if (x) el_wire_act_decode(f.dtype, f.payload, (size_t)f.n_tokens * 64, x, &e);
        free(x);
    }
    el_wire_train_open to;
    el_wire_train_fwd tf;
    el_wire_train_result tr;
    uint64_t t, n;
    float lr;
    double d;
    const uint8_t *p;
    el_wire_decode_train_open(&m, &to, &e);
    if (el_wire_decode_train_fwd(&m, 64, &tf, &e) == EL_OK) {
        float *x = malloc((size_t)tf.rows * 64 * sizeof(float));
        if (x) el_wire_act_decode(tf.dtype, tf.x, (size_t)tf.rows * 64, x, &e);
        free(x);
        if (tf.targets) (void)el_wire_u32(tf.targets + 4 * (tf.rows - 1));
    }
    if (el_wire_decode_train_result(&m, 64, &tr, &e) == EL_OK && tr.rows) {
        float *x = malloc((size_t)tr.rows * 64 * sizeof(float));
        if (x) el_wire_act_decode(tr.dtype, tr.payload, (size_t)tr.rows * 64, x, &e);
        free(x);
    }
    el_wire_decode_train_step(&m, &t, &lr, &d, &e);
    el_wire_decode_f64(&m, &d, &e);
    if (el_wire_decode_params(&m, &d, &p, &n, &e) == EL_OK && n) (void)el_wire_u32(p + 4 * (n - 1));
    if (el_wire_decode_result(&m, &r, &e) == EL_OK && r.kind != EL_WANT_TOKEN) {
        float *x = malloc((size_t)r.n_rows * r.row_len * sizeof(float));
        if (x) el_wire_act_decode(r.dtype, r.payload, (size_t)r.n_rows * r.row_len, x, &e);
        free(x);
    }
    float scale, alpha;
    uint32_t nm;
    el_wire_lora_mat mats[64];
    if (el_wire_decode_lora(&m, &scale, &alpha, mats, 64, &nm, &e) == EL_OK)
        for (uint32_t i = 0; i < nm; i++) {  // read every value the decoder let through
            size_t na = (size_t)mats[i].rank * mats[i].in, nb = (size_t)mats[i].out * mats[i].rank;
            float *v = malloc((na > nb ? na : nb) * sizeof(float));
            if (v) el_wire_f32s(mats[i].a, na, v), el_wire_f32s(mats[i].b, nb, v);
            free(v);
        }
    el_wire_block blk;
    el_wire_decode_block_get(&m, &blk, &e);
    if (el_wire_decode_block_data(&m, &blk, &e) == EL_OK) {
        // the bytes the decoder let through lie inside the frame and add up
        if (blk.offset + blk.n > blk.total || (blk.n && blk.data + blk.n != m.body + m.body_len)) abort();
        if (blk.n) (void)(blk.data[0] + blk.data[blk.n - 1]);
    }
    return 0;
}
