// edgellm info: what a model file holds.
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "edgellm/gguf.h"
#include "edgellm/model.h"
#include "edgellm/vision.h"

static const char *usage =
    "usage: edgellm info MODEL [--all]\n"
    "\n"
    "Prints the architecture, hyper-parameters, metadata and the tensor list\n"
    "(name, dtype, shape, bytes) of a GGUF model or llama2.c checkpoint, or the\n"
    "vision encoder of a projector file (general.architecture clip).\n"
    "Long metadata arrays are shown by their first elements unless --all.\n"
    "\n"
    "example: edgellm info ../shared/models/aidreams260K.bin\n";

static void print_str(const char *p, uint64_t n, uint64_t max) {
    putchar('"');
    for (uint64_t i = 0; i < n && i < max; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch == '"' || ch == '\\') printf("\\%c", ch);
        else if (ch < 0x20 || ch == 0x7f) printf("\\x%02x", ch);
        else putchar(ch);
    }
    if (n > max) printf("...");
    putchar('"');
}

static void print_scalar(el_gguf_type t, const el_gguf_kv *kv) {
    switch (t) {
    case EL_GGUF_UINT8: case EL_GGUF_UINT16: case EL_GGUF_UINT32: case EL_GGUF_UINT64:
        printf("%" PRIu64, kv->v.u64); break;
    case EL_GGUF_INT8: case EL_GGUF_INT16: case EL_GGUF_INT32: case EL_GGUF_INT64:
        printf("%" PRId64, kv->v.i64); break;
    case EL_GGUF_FLOAT32: case EL_GGUF_FLOAT64: printf("%g", kv->v.f64); break;
    case EL_GGUF_BOOL: printf("%s", kv->v.u64 ? "true" : "false"); break;
    case EL_GGUF_STRING: print_str(kv->v.str.ptr, kv->v.str.len, 200); break;
    default: printf("?"); break;
    }
}

// general.file_type: what most tensors hold (GGUF's llama file types).
static const char *file_type_name(uint64_t v) {
    static const char *const names[] = {
        [0] = "all F32",   [1] = "mostly F16",   [2] = "mostly Q4_0",   [3] = "mostly Q4_1",   [7] = "mostly Q8_0",
        [8] = "mostly Q5_0", [9] = "mostly Q5_1", [10] = "mostly Q2_K",  [11] = "mostly Q3_K_S", [12] = "mostly Q3_K_M",
        [13] = "mostly Q3_K_L", [14] = "mostly Q4_K_S", [15] = "mostly Q4_K_M", [16] = "mostly Q5_K_S",
        [17] = "mostly Q5_K_M", [18] = "mostly Q6_K", [19] = "mostly IQ2_XXS", [20] = "mostly IQ2_XS",
        [21] = "mostly Q2_K_S", [22] = "mostly IQ3_XS", [23] = "mostly IQ3_XXS", [24] = "mostly IQ1_S",
        [25] = "mostly IQ4_NL", [26] = "mostly IQ3_S", [27] = "mostly IQ3_M", [28] = "mostly IQ2_S",
        [29] = "mostly IQ2_M", [30] = "mostly IQ4_XS", [31] = "mostly IQ1_M", [32] = "mostly BF16",
    };
    return v < sizeof names / sizeof names[0] && names[v] ? names[v] : "unknown";
}

static void print_kv(const el_gguf_kv *kv, int all) {
    printf("  %-40s ", kv->key);
    if (kv->type != EL_GGUF_ARRAY) {
        print_scalar(kv->type, kv);
        int is_uint = kv->type == EL_GGUF_UINT8 || kv->type == EL_GGUF_UINT16 || kv->type == EL_GGUF_UINT32 ||
                      kv->type == EL_GGUF_UINT64;
        int is_int = kv->type == EL_GGUF_INT8 || kv->type == EL_GGUF_INT16 || kv->type == EL_GGUF_INT32 ||
                     kv->type == EL_GGUF_INT64;
        if (!strcmp(kv->key, "general.file_type") && (is_uint || (is_int && kv->v.i64 >= 0)))
            printf(" (%s)", file_type_name(is_uint ? kv->v.u64 : (uint64_t)kv->v.i64));
        putchar('\n');
        return;
    }
    printf("[%s x %" PRIu64 "] ", el_gguf_type_name(kv->arr_type), kv->arr_n);
    uint64_t show = all ? kv->arr_n : (kv->arr_n < 8 ? kv->arr_n : 8);
    for (uint64_t i = 0; i < show; i++) {
        if (i) printf(", ");
        if (kv->arr_type == EL_GGUF_STRING && kv->strs) print_str(kv->strs[i].ptr, kv->strs[i].len, 64);
        else if (kv->arr_type == EL_GGUF_FLOAT32 || kv->arr_type == EL_GGUF_FLOAT64) {
            double d;
            if (el_gguf_arr_f64(kv, i, &d)) printf("%g", d);
        } else {
            int64_t v;
            if (el_gguf_arr_i64(kv, i, &v)) printf("%" PRId64, v);
            else printf("...");
        }
    }
    if (show < kv->arr_n) printf(", ...");
    putchar('\n');
}

typedef struct {
    uint64_t count[EL_DTYPE_COUNT];
    size_t bytes[EL_DTYPE_COUNT];
} type_summary;

static void count_tensor(type_summary *ts, const el_tensor *t) {
    if (t->dtype < 0 || t->dtype >= EL_DTYPE_COUNT) return;
    ts->count[t->dtype]++;
    ts->bytes[t->dtype] += t->nbytes;
}

// "q8_0 155 tensors (1048.2 MiB), f32 45 (0.2 MiB)": largest share first.
static void print_types(const type_summary *ts) {
    int done[EL_DTYPE_COUNT] = {0};
    printf("tensor types: ");
    for (int k = 0;; k++) {
        int best = -1;
        for (int d = 0; d < EL_DTYPE_COUNT; d++)
            if (ts->count[d] && !done[d] && (best < 0 || ts->bytes[d] > ts->bytes[best])) best = d;
        if (best < 0) break;
        done[best] = 1;
        printf("%s%s %llu%s (%.2f MiB)", k ? ", " : "", el_dtype_name(best), (unsigned long long)ts->count[best],
               k ? "" : " tensors", ts->bytes[best] / 1048576.0);
    }
    putchar('\n');
}

static void print_tensor(const el_tensor *t) {
    char shape[96];
    int o = snprintf(shape, sizeof shape, "[");
    for (int d = 0; d < t->n_dims; d++) o += snprintf(shape + o, sizeof shape - (size_t)o, d ? ", %lld" : "%lld", (long long)t->ne[d]);
    snprintf(shape + o, sizeof shape - (size_t)o, "]");
    printf("  %-32s %-6s %-18s %12zu bytes\n", t->name, el_dtype_name(t->dtype), shape, t->nbytes);
}

static void print_gguf(const el_gguf *g, int all) {
    printf("metadata (%" PRIu64 " keys):\n", g->n_kv);
    for (uint64_t i = 0; i < g->n_kv; i++) print_kv(&g->kv[i], all);
    printf("tensors (%" PRIu64 "):\n", g->n_tensors);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        el_tensor t;
        el_gguf_tensor_view(&g->tensors[i], &t);
        print_tensor(&t);
    }
}

// A projector file: what the encoder will run, then the file itself.
static int info_projector(const char *path, const el_gguf *g, int all) {
    el_error err = {0};
    el_vision *v = NULL;
    if (el_vision_open(path, &v, &err)) return cli_error(&err);
    const el_vision_hparams *h = el_vision_hp(v);
    printf("file:          %s\n", path);
    printf("format:        GGUF (version %u), projector file\n", g->version);
    printf("vision tower:  %s, image %d, patch %d (%d patches), width %d, MLP %d (%s%s), heads %d, eps %g\n",
           h->has_class ? "CLIP-style (class token)" : "SigLIP-style (no class token)", h->image_size, h->patch_size,
           h->n_patches, h->hidden, h->ff, h->gelu ? "GELU" : "quick GELU",
           h->ffn_swapped ? "; older exporter's ffn_up/ffn_down names" : "", h->heads, h->eps);
    printf("blocks:        %d of %d run (%s)%s%s\n", h->n_run, h->n_blocks,
           el_gguf_find(g, "clip.vision.feature_layer") ? "clip.vision.feature_layer" : "all but the last",
           h->has_pre_ln ? ", pre-norm" : "", h->has_post_ln ? ", final norm" : "");
    printf("projector:     mlp %d -> %d -> %d (the language model's width)\n", h->hidden, h->proj_hidden, h->out_dim);
    printf("images:        %s, mean %g %g %g, std %g %g %g\n",
           h->fit == EL_VISION_PAD ? "padded to a square" : "short side resized, center-cropped", h->mean[0], h->mean[1],
           h->mean[2], h->std[0], h->std[1], h->std[2]);
    printf("encode:        %.2f GFLOP per image, matrices in %s\n", el_vision_flops(v) * 1e-9,
           el_dtype_name(el_vision_dtype(v)));
    print_gguf(g, all);
    el_vision_close(v);
    return 0;
}

int cmd_info(int argc, char **argv) {
    cli c;
    cli_init(&c, "info", argc, argv);
    const char *path = NULL, *a;
    int opt, all = 0;
    while ((a = cli_next(&c, &opt))) {
        if (cli_is(a, "-h", "--help")) { fputs(usage, stdout); return 0; }
        else if (cli_is(a, NULL, "--all")) all = 1;
        else if (opt) return cli_unknown(&c, a);
        else if (!path) path = a;
        else return cli_fail(&c, "unexpected argument '%s'", a);
    }
    if (c.failed) return 2;
    if (!path) return cli_fail(&c, "MODEL is required");
    el_error err = {0};
    el_model *m = NULL;
    el_gguf *g = NULL;
    char arch[32] = "";
    if (!el_gguf_open(path, &g, NULL) && el_gguf_get_str(g, "general.architecture", arch, sizeof arch) &&
        !strcmp(arch, "clip")) {
        int rc = info_projector(path, g, all);
        el_gguf_close(g);
        return rc;
    }
    el_gguf_close(g);
    if (el_model_open(path, NULL, &m, &err)) return cli_error(&err);
    const el_hparams *h = &m->hp;
    printf("file:          %s\n", path);
    printf("format:        %s\n", m->format == EL_MODEL_GGUF ? "GGUF" : "llama2.c checkpoint (version 0)");
    if (m->gguf) printf("gguf version:  %u\n", m->gguf->version);
    char fam[160];
    el_model_family_desc(m, fam, sizeof fam);
    printf("architecture:  %s\n", h->arch);
    printf("family:        %s\n", fam);
    printf("parameters:    %" PRIu64 " (%.2f M)\n", el_model_n_params(m), el_model_n_params(m) / 1e6);
    printf("weight bytes:  %zu (%.2f MiB)\n", el_model_weight_bytes(m, 0, h->n_layers, 1, 1),
           el_model_weight_bytes(m, 0, h->n_layers, 1, 1) / 1048576.0);
    printf("dim %d, layers %d, heads %d, kv heads %d, head dim %d, ff %d, vocab %d, ctx %d\n", h->dim, h->n_layers,
           h->n_heads, h->n_kv_heads, h->head_dim, h->ff, h->vocab, h->ctx);
    printf("rms eps %g, rope theta %g, output head %s\n", h->rms_eps, h->rope_theta,
           h->tied_output ? "tied to token_embd" : "separate");
    type_summary types = {0};
    if (m->gguf) {
        for (uint64_t i = 0; i < m->gguf->n_tensors; i++) {
            el_tensor t;
            el_gguf_tensor_view(&m->gguf->tensors[i], &t);
            count_tensor(&types, &t);
        }
    } else {
        count_tensor(&types, &m->tok_embd);
        for (int l = 0; l < h->n_layers; l++) {
            const el_tensor *ts = (const el_tensor *)&m->layers[l];
            for (size_t i = 0; i < sizeof(el_layer) / sizeof(el_tensor); i++)
                if (ts[i].name) count_tensor(&types, &ts[i]);
        }
        count_tensor(&types, &m->output_norm);
        if (!h->tied_output) count_tensor(&types, &m->output);
    }
    print_types(&types);
    if (h->rope_scaling == EL_ROPE_SCALING_LINEAR) printf("rope scaling: linear, factor %g\n", h->rope_scale);
    if (h->rope_scaling == EL_ROPE_SCALING_FREQS) {
        const float *f = m->rope_freqs.data;
        printf("rope scaling: rope_freqs.weight, divisors %g .. %g", f[0], f[h->head_dim / 2 - 1]);
        if (h->rope_orig_ctx) printf(" (original context %d)", h->rope_orig_ctx);
        putchar('\n');
    }
    if (m->gguf) {
        print_gguf(m->gguf, all);
    } else {
        printf("tensors:\n");
        print_tensor(&m->tok_embd);
        for (int l = 0; l < h->n_layers; l++) {
            const el_tensor *ts = (const el_tensor *)&m->layers[l];
            for (size_t i = 0; i < sizeof(el_layer) / sizeof(el_tensor); i++)
                if (ts[i].name) print_tensor(&ts[i]);
        }
        print_tensor(&m->output_norm);
        if (!h->tied_output) print_tensor(&m->output);
    }
    el_model_close(m);
    return 0;
}
