// edgellm export-lora: merge LoRA adapters into a base model, W' = W + Σ s·B·A,
// and write a standalone GGUF. Adapted tensors are written in f32 (or in the
// base's dtype when it is f16/bf16); all other tensors are copied unchanged.
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "common.h"
#include "edgellm/gguf.h"
#include "edgellm/lora.h"
#include "edgellm/model.h"

static const char *usage =
    "usage: edgellm export-lora -m BASE.gguf --lora ADAPTER.gguf[:SCALE] [--lora ...] -o MERGED.gguf\n"
    "\n"
    "Merges LoRA adapters into the base weights: W' = W + SCALE * alpha/rank * B A.\n"
    "Adapted tensors are written in f32, or in the base's dtype when it is f16/bf16;\n"
    "everything else (metadata, vocabulary, other tensors) is copied unchanged.\n"
    "A llama2.c base must be converted to GGUF first (edgellm convert).\n"
    "\n"
    "  -m, --model FILE        base model (GGUF)\n"
    "      --lora FILE[:S]     adapter and its scale (default 1); repeatable, up to 8\n"
    "  -o, --output FILE       merged model to write\n"
    "  -h, --help              this text\n";

typedef struct {
    const el_model *m;
    const el_lora_set *set;
    int n_layers;
} merge_ctx;

// name -> (layer, target) of a projection weight, or 0
static int find_target(const merge_ctx *mc, const char *name, int *layer, int *target) {
    for (int l = 0; l < mc->n_layers; l++)
        for (int t = 0; t < EL_LORA_N_TARGETS; t++) {
            const el_tensor *w = el_lora_base(mc->m, l, t);
            if (!strcmp(w->name, name)) {
                *layer = l, *target = t;
                return 1;
            }
        }
    return 0;
}

static int merged_dtype(int dt) { return dt == EL_DTYPE_F16 || dt == EL_DTYPE_BF16 ? dt : EL_DTYPE_F32; }

static el_status fill(void *vctx, const char *name, void *dst, size_t nbytes, el_error *err) {
    const merge_ctx *mc = vctx;
    int l, t;
    if (!find_target(mc, name, &l, &t)) return el_err(err, EL_ERR_STATE, "no data for tensor %s", name);
    const el_tensor *W = el_lora_base(mc->m, l, t);
    int in = (int)W->ne[0], out = (int)W->ne[1], dt = merged_dtype(W->dtype);
    size_t row_bytes = el_dtype_row_size(dt, in);
    if (row_bytes * (size_t)out != nbytes) return el_err(err, EL_ERR_STATE, "size mismatch for %s", name);
    float *row = malloc((size_t)in * sizeof(float));
    if (!row) return el_err(err, EL_ERR_NOMEM, "out of memory");
    for (int o = 0; o < out; o++) {
        el_tensor_row_f32(W, o, row);
        for (int i = 0; i < mc->set->n; i++) {
            const el_lora_mat *mt = el_lora_get(mc->set->lora[i], l, t);
            if (!mt) continue;
            float s = mc->set->scale[i] * mc->set->lora[i]->alpha / (float)mt->rank;
            for (int r = 0; r < mt->rank; r++) {
                float br = s * mt->b[(size_t)o * mt->rank + r];
                const float *ar = mt->a + (size_t)r * in;
                for (int c = 0; c < in; c++) row[c] += br * ar[c];
            }
        }
        el_dtype_info(dt)->from_f32(row, (char *)dst + (size_t)o * row_bytes, in);
    }
    free(row);
    return EL_OK;
}

int cmd_export_lora(int argc, char **argv) {
    cli c;
    cli_init(&c, "export-lora", argc, argv);
    const char *model_path = NULL, *out_path = NULL, *a;
    const char *lora_args[EL_LORA_MAX_SET];
    int n_lora = 0, opt;
    while ((a = cli_next(&c, &opt))) {
        if (cli_is(a, "-h", "--help")) { fputs(usage, stdout); return 0; }
        else if (cli_is(a, "-m", "--model")) model_path = cli_str(&c, a);
        else if (cli_is(a, "-o", "--output")) out_path = cli_str(&c, a);
        else if (cli_is(a, NULL, "--lora")) {
            const char *v = cli_str(&c, a);
            if (v && n_lora == EL_LORA_MAX_SET) return cli_fail(&c, "at most %d --lora adapters", EL_LORA_MAX_SET);
            if (v) lora_args[n_lora++] = v;
        } else return cli_unknown(&c, a);
    }
    if (c.failed) return 2;
    if (!model_path) return cli_fail(&c, "-m BASE is required");
    if (!out_path) return cli_fail(&c, "-o MERGED.gguf is required");
    if (!n_lora) return cli_fail(&c, "--lora ADAPTER is required");
    el_lora_set set = {0};
    char paths[EL_LORA_MAX_SET][4096];
    for (int i = 0; i < n_lora; i++)
        if (!tool_parse_lora_arg(lora_args[i], paths[i], sizeof paths[i], &set.scale[i]))
            return cli_fail(&c, "--lora '%s': the scale is not a number", lora_args[i]);

    el_error err = {0};
    el_model *m = NULL;
    el_lora *loras[EL_LORA_MAX_SET] = {0};
    el_gguf_writer *w = NULL;
    int rc = 1;
    if (el_model_open(model_path, NULL, &m, &err)) goto out;
    if (m->format != EL_MODEL_GGUF) {
        el_err(&err, EL_ERR_UNSUPPORTED, "%s: export-lora needs a GGUF base; convert it first with edgellm convert",
               model_path);
        goto out;
    }
    for (int i = 0; i < n_lora; i++) {
        if (el_lora_load(paths[i], m, &loras[i], &err)) goto out;
        set.lora[i] = loras[i];
    }
    set.n = n_lora;
    merge_ctx mc = {m, &set, m->hp.n_layers};
    w = el_gguf_writer_new();
    if (!w || el_gguf_add_all_kv(w, m->gguf)) {
        el_err(&err, EL_ERR_NOMEM, "out of memory");
        goto out;
    }
    int merged = 0;
    for (uint64_t i = 0; i < m->gguf->n_tensors; i++) {
        const el_gguf_tensor *t = &m->gguf->tensors[i];
        int l, tg, adapted = 0;
        if (find_target(&mc, t->name, &l, &tg))
            for (int k = 0; k < n_lora; k++) adapted |= el_lora_get(loras[k], l, tg) != NULL;
        el_status s = adapted ? el_gguf_add_tensor(w, t->name, merged_dtype(t->dtype), t->n_dims, t->ne, NULL)
                              : el_gguf_add_tensor(w, t->name, t->dtype, t->n_dims, t->ne, t->data);
        if (s) {
            el_err(&err, EL_ERR_NOMEM, "out of memory");
            goto out;
        }
        merged += adapted;
    }
    el_progress pr;
    el_progress_begin(&pr, stderr, "export-lora", 0, "bytes");
    if (el_gguf_write(w, out_path, fill, &mc, &pr, &err)) goto out;
    el_progress_end(&pr, pr.total, NULL);
    fprintf(stderr, "merged %d adapter%s into %d tensors; wrote %s\n", n_lora, n_lora > 1 ? "s" : "", merged,
            out_path);
    rc = 0;
out:
    if (rc) cli_error(&err);
    el_gguf_writer_free(w);
    for (int i = 0; i < n_lora; i++) el_lora_free(loras[i]);
    el_model_close(m);
    return rc;
}
