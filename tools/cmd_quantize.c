// edgellm quantize: rewrite a GGUF model with its matrices in another dtype
// (f16, bf16, q8_0, q4_0, q4_k, q6_k or the q4_k_m mix), tensor by tensor
// while the file is written, so models larger than memory can be converted.
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "edgellm/gguf.h"
#include "edgellm/quant.h"

static const char *usage =
    "usage: edgellm quantize IN.gguf OUT.gguf TYPE [-t THREADS]\n"
    "\n"
    "Writes OUT.gguf with every weight matrix of IN.gguf converted to TYPE:\n"
    "  f16, bf16, q8_0, q4_0, q4_k, q6_k   every matrix in that type\n"
    "  q4_k_m                              q4_k, with attn_v, ffn_down and output in q6_k\n"
    "Norms and other 1-D tensors stay f32. A matrix whose rows are not a multiple\n"
    "of the type's block (32 for q8_0/q4_0, 256 for q4_k/q6_k) falls back to the\n"
    "nearest type that fits and is not coarser (q4_k/q6_k -> q8_0 -> f16); each\n"
    "fallback is reported on stderr. Metadata is copied; general.file_type is set.\n"
    "The output is written under OUT.gguf.tmp and renamed when complete.\n"
    "\n"
    "  -t, --threads N   threads for quantizing (default: all CPUs)\n"
    "\n"
    "example: edgellm quantize aidreams.gguf aidreams-q8_0.gguf q8_0\n";

typedef struct {
    const el_gguf *in;
    const int *dtypes;  // per input tensor
    el_pool *pool;
    el_progress *prog;
    uint64_t done_bytes;
    int done_tensors, n_tensors;
} quant_ctx;

typedef struct {
    const el_gguf_tensor *src;
    int dtype;
    void *dst;
    int64_t rows, rows_per_task;
    int failed;
} rows_job;

static void convert_rows(void *vctx, int task, int n_tasks) {
    (void)n_tasks;
    rows_job *j = vctx;
    int64_t ne0 = j->src->ne[0], r0 = task * j->rows_per_task, r1 = r0 + j->rows_per_task;
    if (r1 > j->rows) r1 = j->rows;
    const el_dtype_traits *from = el_dtype_info(j->src->dtype), *to = el_dtype_info(j->dtype);
    size_t in_row = el_dtype_row_size(j->src->dtype, ne0), out_row = el_dtype_row_size(j->dtype, ne0);
    float *buf = malloc((size_t)ne0 * sizeof(float));
    if (!buf) {
        j->failed = 1;
        return;
    }
    for (int64_t r = r0; r < r1; r++) {
        from->to_f32((const char *)j->src->data + (size_t)r * in_row, buf, ne0);
        to->from_f32(buf, (char *)j->dst + (size_t)r * out_row, ne0);
    }
    free(buf);
}

static el_status fill(void *vctx, const char *name, void *dst, size_t nbytes, el_error *err) {
    quant_ctx *c = vctx;
    const el_gguf_tensor *src = el_gguf_find_tensor(c->in, name);
    int dtype = c->dtypes[src - c->in->tensors];
    if (dtype == src->dtype) {
        memcpy(dst, src->data, nbytes);
    } else {
        int64_t rows = (int64_t)(nbytes / el_dtype_row_size(dtype, src->ne[0]));
        int tasks = el_pool_size(c->pool) * 8;
        rows_job j = {src, dtype, dst, rows, (rows + tasks - 1) / tasks, 0};
        if (j.rows_per_task < 1) j.rows_per_task = 1;
        el_pool_run(c->pool, convert_rows, &j, (int)((rows + j.rows_per_task - 1) / j.rows_per_task));
        if (j.failed) return el_err(err, EL_ERR_NOMEM, "out of memory converting %s", name);
    }
    c->done_bytes += nbytes;
    c->done_tensors++;
    char extra[64];
    snprintf(extra, sizeof extra, "%d/%d tensors", c->done_tensors, c->n_tensors);
    el_progress_update(c->prog, c->done_bytes, extra);
    return EL_OK;
}

// Fallbacks are grouped by (wanted, used, row length) so a 22-layer model
// gives one line per kind, not one per layer.
static void report_fallbacks(const el_gguf *g, const int *dtypes, const int *wanted) {
    int n = (int)g->n_tensors;
    char *seen = calloc((size_t)n, 1);
    if (!seen) return;
    for (int i = 0; i < n; i++) {
        if (seen[i] || dtypes[i] == wanted[i] || wanted[i] == EL_DTYPE_F32) continue;
        int count = 0;
        char names[256] = "";
        size_t o = 0;
        for (int k = i; k < n; k++) {
            if (dtypes[k] != dtypes[i] || wanted[k] != wanted[i] || g->tensors[k].ne[0] != g->tensors[i].ne[0]) continue;
            seen[k] = 1;
            if (count < 3 && o < sizeof names)
                o += (size_t)snprintf(names + o, sizeof names - o, "%s%s", count ? ", " : "", g->tensors[k].name);
            count++;
        }
        if (count > 3 && o < sizeof names) snprintf(names + o, sizeof names - o, " and %d more", count - 3);
        int bs = el_dtype_info(wanted[i])->block_size;
        fprintf(stderr, "quantize: %d tensor%s stored as %s instead of %s: rows of %lld elements are not a multiple "
                "of %d%s (%s)\n", count, count > 1 ? "s" : "", el_dtype_name(dtypes[i]), el_dtype_name(wanted[i]),
                (long long)g->tensors[i].ne[0], bs, bs > 32 && dtypes[i] != EL_DTYPE_Q8_0 ? " nor of 32 (q8_0)" : "",
                names);
    }
    free(seen);
}

int cmd_quantize(int argc, char **argv) {
    cli c;
    cli_init(&c, "quantize", argc, argv);
    const char *in = NULL, *out = NULL, *type = NULL, *a;
    int threads = 0, opt;
    while ((a = cli_next(&c, &opt))) {
        if (cli_is(a, "-h", "--help")) { fputs(usage, stdout); return 0; }
        else if (cli_is(a, "-t", "--threads")) cli_int(&c, a, 1, 256, &threads);
        else if (opt) return cli_unknown(&c, a);
        else if (!in) in = a;
        else if (!out) out = a;
        else if (!type) type = a;
        else return cli_fail(&c, "unexpected argument '%s'", a);
    }
    if (c.failed) return 2;
    if (!in || !out || !type) return cli_fail(&c, "IN.gguf, OUT.gguf and TYPE are required");
    el_qtarget target;
    if (el_qtarget_parse(type, &target))
        return cli_fail(&c, "TYPE '%s' is not one of f16, bf16, q8_0, q4_0, q4_k, q6_k, q4_k_m", type);
    if (!strcmp(in, out)) return cli_fail(&c, "OUT.gguf must differ from IN.gguf");

    el_error err = {0};
    el_gguf *g = NULL;
    el_gguf_writer *w = NULL;
    el_pool *pool = NULL;
    int *dtypes = NULL, *wanted = NULL, rc = 1;
    if (el_gguf_open(in, &g, &err)) goto done;
    int n = (int)g->n_tensors;
    dtypes = calloc((size_t)n + 1, sizeof *dtypes);
    wanted = calloc((size_t)n + 1, sizeof *wanted);
    w = el_gguf_writer_new();
    pool = el_pool_new(threads);
    if (!dtypes || !wanted || !w || !pool) {
        el_err(&err, EL_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (el_gguf_add_all_kv(w, g) || el_gguf_add_u32(w, "general.file_type", el_qtarget_file_type(&target)) ||
        el_gguf_add_u32(w, "general.quantization_version", 2)) {
        el_err(&err, EL_ERR_NOMEM, "%s: cannot copy the metadata", out);
        goto done;
    }
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        const el_gguf_tensor *t = &g->tensors[i];
        const char *why;
        const el_dtype_traits *tr = el_dtype_info(t->dtype);
        if (!tr->to_f32) {
            el_err(&err, EL_ERR_UNSUPPORTED, "%s: tensor %s has dtype %s, which cannot be converted", in, t->name,
                   tr->name);
            goto done;
        }
        int64_t bad = el_quant_find_bad_block(t->dtype, t->data, t->nbytes);
        if (bad >= 0) {
            el_err(&err, EL_ERR_FORMAT, "%s: tensor %s block %lld has a NaN or infinite scale", in, t->name,
                   (long long)bad);
            goto done;
        }
        dtypes[i] = el_quant_choose(&target, t->name, t->n_dims, t->ne, t->dtype, &wanted[i], &why);
        if (el_gguf_add_tensor(w, t->name, dtypes[i], t->n_dims, t->ne, NULL)) {
            el_err(&err, EL_ERR_NOMEM, "%s: cannot add tensor %s", out, t->name);
            goto done;
        }
        uint64_t rows = 1;
        for (int d = 1; d < t->n_dims; d++) rows *= (uint64_t)t->ne[d];
        total += el_dtype_row_size(dtypes[i], t->ne[0]) * rows;
    }
    report_fallbacks(g, dtypes, wanted);
    el_progress prog;
    el_progress_begin(&prog, stderr, "quantize", total, "bytes");
    quant_ctx qc = {g, dtypes, pool, &prog, 0, 0, n};
    if (el_gguf_write(w, out, fill, &qc, NULL, &err)) goto done;
    char extra[128];
    snprintf(extra, sizeof extra, "%d tensors, %.1f MiB -> %.1f MiB, %s", n, (double)g->map_size / 1048576.0,
             (double)total / 1048576.0, out);
    el_progress_end(&prog, total, extra);
    rc = 0;
done:
    if (rc) cli_error(&err);
    free(dtypes);
    free(wanted);
    el_pool_free(pool);
    el_gguf_writer_free(w);
    el_gguf_close(g);
    return rc;
}
