// Training checkpoints: a GGUF file (general.type "edgellm-lora-checkpoint")
// holding the adapter parameters, the AdamW moments, the step, the data
// position and the loss table, written atomically so that a run killed at any
// moment resumes from the last complete checkpoint.
#include <math.h>
#include <string.h>

#include "edgellm/gguf.h"
#include "edgellm/train.h"

el_status el_checkpoint_save(const char *path, const el_lora *lora, const float *m, const float *v,
                             const el_ckpt_meta *meta, el_error *err) {
    el_gguf_writer *w = el_gguf_writer_new();
    if (!w) return el_err(err, EL_ERR_NOMEM, "out of memory");
    int64_t ne[1] = {(int64_t)lora->n_params};
    int64_t nr[1] = {meta->n_rows > 0 ? meta->n_rows : 1};
    float zero = 0;
    el_gguf_add_str(w, "general.type", "edgellm-lora-checkpoint");
    el_gguf_add_u64(w, "train.step", meta->step);
    el_gguf_add_u64(w, "train.sample_pos", meta->sample_pos);
    el_gguf_add_u64(w, "train.seed", meta->seed);
    el_gguf_add_u64(w, "train.base_identity", meta->identity);
    el_gguf_add_u64(w, "train.total_steps", meta->total_steps);
    el_gguf_add_u32(w, "train.rank", (uint32_t)meta->rank);
    el_gguf_add_u32(w, "train.batch", (uint32_t)meta->batch);
    el_gguf_add_u32(w, "train.ctx", (uint32_t)meta->T);
    el_gguf_add_u32(w, "train.grad_accum", (uint32_t)meta->accum);
    el_gguf_add_u32(w, "train.targets", meta->targets);
    el_gguf_add_f32(w, "train.alpha", meta->alpha);
    el_gguf_add_f32(w, "train.lr", meta->lr);
    el_gguf_add_u32(w, "train.table_rows", (uint32_t)meta->n_rows);
    el_status st = EL_OK;
    if (el_gguf_add_tensor(w, "lora.params", EL_DTYPE_F32, 1, ne, lora->params) ||
        el_gguf_add_tensor(w, "adamw.m", EL_DTYPE_F32, 1, ne, m) ||
        el_gguf_add_tensor(w, "adamw.v", EL_DTYPE_F32, 1, ne, v) ||
        el_gguf_add_tensor(w, "table.step", EL_DTYPE_F32, 1, nr, meta->n_rows ? meta->row_step : &zero) ||
        el_gguf_add_tensor(w, "table.loss", EL_DTYPE_F32, 1, nr, meta->n_rows ? meta->row_loss : &zero) ||
        el_gguf_add_tensor(w, "table.val", EL_DTYPE_F32, 1, nr, meta->n_rows ? meta->row_val : &zero))
        st = el_err(err, EL_ERR_NOMEM, "out of memory");
    if (!st) st = el_gguf_write(w, path, NULL, NULL, NULL, err);
    el_gguf_writer_free(w);
    return st;
}

static el_status get_f32s(el_gguf *g, const char *path, const char *name, float *dst, size_t n, el_error *err) {
    const el_gguf_tensor *t = el_gguf_find_tensor(g, name);
    if (!t || t->dtype != EL_DTYPE_F32 || t->n_dims != 1 || (size_t)t->ne[0] != n)
        return el_err(err, EL_ERR_FORMAT, "%s: tensor %s is missing or is not %zu f32 values (a checkpoint of a "
                      "different adapter layout?)", path, name, n);
    memcpy(dst, t->data, n * sizeof(float));
    return EL_OK;
}

el_status el_checkpoint_load(const char *path, el_lora *lora, float *m, float *v, el_ckpt_meta *meta, el_error *err) {
    el_gguf *g;
    el_status st = el_gguf_open(path, &g, err);
    if (st) return st;
    char type[64];
    memset(meta, 0, sizeof *meta);
    uint64_t u[10];
    double f[2];
    static const char *ukeys[] = {"train.step",  "train.sample_pos", "train.seed",       "train.base_identity",
                                  "train.total_steps", "train.rank", "train.batch",      "train.ctx",
                                  "train.grad_accum",  "train.targets"};
    if (!el_gguf_get_str(g, "general.type", type, sizeof type) || strcmp(type, "edgellm-lora-checkpoint")) {
        st = el_err(err, EL_ERR_FORMAT, "%s: not an edgellm training checkpoint", path);
        goto out;
    }
    for (int i = 0; i < 10; i++)
        if (!el_gguf_get_u64(g, ukeys[i], &u[i])) {
            st = el_err(err, EL_ERR_FORMAT, "%s: checkpoint key %s is missing", path, ukeys[i]);
            goto out;
        }
    if (!el_gguf_get_f64(g, "train.alpha", &f[0]) || !el_gguf_get_f64(g, "train.lr", &f[1])) {
        st = el_err(err, EL_ERR_FORMAT, "%s: checkpoint keys train.alpha/train.lr are missing", path);
        goto out;
    }
    uint64_t rows = 0;
    el_gguf_get_u64(g, "train.table_rows", &rows);
    if (rows > EL_CKPT_MAX_ROWS) {
        st = el_err(err, EL_ERR_FORMAT, "%s: train.table_rows = %llu is too large", path, (unsigned long long)rows);
        goto out;
    }
    meta->step = u[0], meta->sample_pos = u[1], meta->seed = u[2], meta->identity = u[3], meta->total_steps = u[4];
    meta->rank = (int)u[5], meta->batch = (int)u[6], meta->T = (int)u[7], meta->accum = (int)u[8];
    meta->targets = (unsigned)u[9];
    meta->alpha = (float)f[0], meta->lr = (float)f[1];
    meta->n_rows = (int)rows;
    size_t nr = rows ? rows : 1;
    float tmp[EL_CKPT_MAX_ROWS];
    if ((st = get_f32s(g, path, "lora.params", lora->params, lora->n_params, err)) ||
        (st = get_f32s(g, path, "adamw.m", m, lora->n_params, err)) ||
        (st = get_f32s(g, path, "adamw.v", v, lora->n_params, err)) ||
        (st = get_f32s(g, path, "table.step", rows ? meta->row_step : tmp, nr, err)) ||
        (st = get_f32s(g, path, "table.loss", rows ? meta->row_loss : tmp, nr, err)) ||
        (st = get_f32s(g, path, "table.val", rows ? meta->row_val : tmp, nr, err)))
        goto out;
    for (size_t i = 0; i < lora->n_params; i++)
        if (!isfinite(lora->params[i]) || !isfinite(m[i]) || !(v[i] >= 0)) {
            st = el_err(err, EL_ERR_FORMAT, "%s: parameter %zu or its optimizer state is not finite", path, i);
            goto out;
        }
out:
    el_gguf_close(g);
    return st;
}
