// Projector files: the clip.* keys and the v.* (vision tower) and mm.*
// (projector) tensors of LLaVA-style GGUF files, checked key by key and shape
// by shape before anything runs. docs/vision.md lists what is read and the
// choices the ecosystem's files force (feature layer, MLP naming, layouts).
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "edgellm/kernels.h"
#include "vision_internal.h"

// Sizes beyond these are refused before anything is allocated from them.
#define MAX_IMAGE_SIDE 4096
#define MAX_POSITIONS 4096
#define MAX_WIDTH 65536
#define MAX_BLOCKS 1024

static el_status key_int(el_vision *v, const char *key, int lo, int hi, int *out, el_error *err) {
    int64_t x;
    if (!el_gguf_get_i64(v->g, key, &x)) return el_err(err, EL_ERR_FORMAT, "%s: missing integer key %s", v->path, key);
    if (x < lo || x > hi)
        return el_err(err, EL_ERR_RANGE, "%s: %s = %lld is outside %d..%d", v->path, key, (long long)x, lo, hi);
    *out = (int)x;
    return EL_OK;
}

static int key_bool(const el_vision *v, const char *key, int dflt) {
    int b;
    return el_gguf_get_bool(v->g, key, &b) ? b : dflt;
}

// A float[3] array key (image mean / std).
static el_status key_rgb(el_vision *v, const char *key, int positive, float *out, el_error *err) {
    const el_gguf_kv *kv = el_gguf_find(v->g, key);
    if (!kv) return el_err(err, EL_ERR_FORMAT, "%s: missing key %s", v->path, key);
    if (kv->type != EL_GGUF_ARRAY || kv->arr_n != 3 || kv->arr_type == EL_GGUF_STRING || kv->arr_type == EL_GGUF_ARRAY)
        return el_err(err, EL_ERR_FORMAT, "%s: %s must be an array of 3 numbers", v->path, key);
    for (int i = 0; i < 3; i++) {
        double d;
        el_gguf_arr_f64(kv, (uint64_t)i, &d);
        if (!isfinite(d) || (positive && d <= 0) || fabs(d) > 1e6)
            return el_err(err, EL_ERR_RANGE, "%s: %s[%d] = %g is not a usable value", v->path, key, i, d);
        out[i] = (float)d;
    }
    return EL_OK;
}

static const el_gguf_tensor *find(const el_vision *v, const char *name) { return el_gguf_find_tensor(v->g, name); }

static void shape_str(const el_gguf_tensor *t, char *buf, size_t n) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, n - o, "[");
    for (int d = 0; d < t->n_dims && o < n; d++)
        o += (size_t)snprintf(buf + o, n - o, d ? ", %lld" : "%lld", (long long)t->ne[d]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

// A tensor that must have exactly the shape ne[0..n_dims) and a dtype the
// kernels read.
static el_status need(el_vision *v, const char *name, int n_dims, const int64_t *ne, const el_gguf_tensor **out,
                      el_error *err) {
    const el_gguf_tensor *t = find(v, name);
    if (!t) return el_err(err, EL_ERR_FORMAT, "%s: missing tensor %s", v->path, name);
    int ok = t->n_dims == n_dims;
    for (int d = 0; d < n_dims && ok; d++) ok = t->ne[d] == ne[d];
    if (!ok) {
        char got[96], want[96] = "[";
        shape_str(t, got, sizeof got);
        size_t o = 1;
        for (int d = 0; d < n_dims; d++) o += (size_t)snprintf(want + o, sizeof want - o, d ? ", %lld" : "%lld", (long long)ne[d]);
        snprintf(want + o, sizeof want - o, "]");
        return el_err(err, EL_ERR_FORMAT, "%s: tensor %s has shape %s, expected %s", v->path, name, got, want);
    }
    const el_dtype_traits *tr = el_dtype_info(t->dtype);
    if (!tr || !tr->to_f32)
        return el_err(err, EL_ERR_UNSUPPORTED, "%s: tensor %s has dtype %s, which cannot be read", v->path, name,
                      el_dtype_name(t->dtype));
    *out = t;
    return EL_OK;
}

static el_status need_mat(el_vision *v, const char *name, int64_t in, int64_t out_rows, el_tensor *t, el_error *err) {
    const el_gguf_tensor *g;
    el_status st = need(v, name, 2, (int64_t[]){in, out_rows}, &g, err);
    if (!st) el_gguf_tensor_view(g, t);
    return st;
}

// A vector (bias, norm, class token) or an embedding table, copied to f32.
static el_status need_f32(el_vision *v, const char *name, int n_dims, int64_t ne0, int64_t ne1, float **out,
                          el_error *err) {
    const el_gguf_tensor *g;
    el_status st = need(v, name, n_dims, (int64_t[]){ne0, ne1}, &g, err);
    if (st) return st;
    size_t n = (size_t)ne0 * (size_t)(n_dims > 1 ? ne1 : 1);
    int bs = el_dtype_info(g->dtype)->block_size;
    if ((int64_t)n % bs) return el_err(err, EL_ERR_FORMAT, "%s: tensor %s does not fill whole blocks", v->path, name);
    float *p = el_malloc(n * sizeof(float));
    if (!p) return el_err(err, EL_ERR_NOMEM, "%s: out of memory for %s", v->path, name);
    el_dtype_info(g->dtype)->to_f32(g->data, p, (int64_t)n);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(p[i])) {
            free(p);
            return el_err(err, EL_ERR_FORMAT, "%s: tensor %s holds a NaN or infinite value at %zu", v->path, name, i);
        }
    v->owned[v->n_owned++] = p;
    *out = p;
    return EL_OK;
}

// Optional pair name.weight + name.bias: both or neither.
static el_status opt_norm(el_vision *v, const char *name, int64_t n, int *has, float **w, float **b, el_error *err) {
    char wn[96], bn[96];
    snprintf(wn, sizeof wn, "%s.weight", name);
    snprintf(bn, sizeof bn, "%s.bias", name);
    *has = find(v, wn) != NULL;
    if (!*has && !find(v, bn)) return EL_OK;
    if (!*has) return el_err(err, EL_ERR_FORMAT, "%s: %s without %s", v->path, bn, wn);
    el_status st = need_f32(v, wn, 1, n, 0, w, err);
    return st ? st : need_f32(v, bn, 1, n, 0, b, err);
}

// The MLP of a block: fc1 maps hidden -> ff, fc2 ff -> hidden. Newer
// exporters call fc1 ffn_up and fc2 ffn_down; older ones the other way round.
// The shapes tell them apart, unless hidden == ff.
static el_status block_mlp_naming(el_vision *v, int l, int *swapped, el_error *err) {
    const el_vision_hparams *h = &v->hp;
    char up[64], down[64];
    snprintf(up, sizeof up, "v.blk.%d.ffn_up.weight", l);
    snprintf(down, sizeof down, "v.blk.%d.ffn_down.weight", l);
    const el_gguf_tensor *u = find(v, up), *d = find(v, down);
    if (!u) return el_err(err, EL_ERR_FORMAT, "%s: missing tensor %s", v->path, up);
    if (!d) return el_err(err, EL_ERR_FORMAT, "%s: missing tensor %s", v->path, down);
    if (h->hidden == h->ff)
        return el_err(err, EL_ERR_UNSUPPORTED,
                      "%s: the ViT's MLP is %d wide like the ViT itself, so the two exporters' namings of "
                      "ffn_up/ffn_down cannot be told apart by shape", v->path, h->ff);
    if (u->n_dims == 2 && u->ne[0] == h->hidden) *swapped = 0;       // ffn_up: [hidden -> ff]
    else if (d->n_dims == 2 && d->ne[0] == h->hidden) *swapped = 1;  // ffn_down holds fc1
    else {
        char s[96];
        shape_str(u, s, sizeof s);
        return el_err(err, EL_ERR_FORMAT, "%s: tensor %s has shape %s; neither MLP naming fits a ViT of width %d and "
                      "MLP width %d", v->path, up, s, h->hidden, h->ff);
    }
    return EL_OK;
}

static el_status bind_block(el_vision *v, int l, int swapped, vit_block *b, el_error *err) {
    const el_vision_hparams *h = &v->hp;
    char n[96];
    el_status st;
    int64_t H = h->hidden, F = h->ff;
#define VEC(part, dst, len) \
    (snprintf(n, sizeof n, "v.blk.%d." part, l), need_f32(v, n, 1, len, 0, dst, err))
#define MAT(part, dst, in, out) \
    (snprintf(n, sizeof n, "v.blk.%d." part, l), need_mat(v, n, in, out, dst, err))
    if ((st = VEC("ln1.weight", &b->ln1_w, H)) || (st = VEC("ln1.bias", &b->ln1_b, H)) ||
        (st = MAT("attn_q.weight", &b->wq, H, H)) || (st = VEC("attn_q.bias", &b->bq, H)) ||
        (st = MAT("attn_k.weight", &b->wk, H, H)) || (st = VEC("attn_k.bias", &b->bk, H)) ||
        (st = MAT("attn_v.weight", &b->wv, H, H)) || (st = VEC("attn_v.bias", &b->bv, H)) ||
        (st = MAT("attn_out.weight", &b->wo, H, H)) || (st = VEC("attn_out.bias", &b->bo, H)) ||
        (st = VEC("ln2.weight", &b->ln2_w, H)) || (st = VEC("ln2.bias", &b->ln2_b, H)))
        return st;
    if (!swapped) {
        if ((st = MAT("ffn_up.weight", &b->fc1, H, F)) || (st = VEC("ffn_up.bias", &b->fc1_b, F)) ||
            (st = MAT("ffn_down.weight", &b->fc2, F, H)) || (st = VEC("ffn_down.bias", &b->fc2_b, H)))
            return st;
    } else {
        if ((st = MAT("ffn_down.weight", &b->fc1, H, F)) || (st = VEC("ffn_down.bias", &b->fc1_b, F)) ||
            (st = MAT("ffn_up.weight", &b->fc2, F, H)) || (st = VEC("ffn_up.bias", &b->fc2_b, H)))
            return st;
    }
#undef VEC
#undef MAT
    return EL_OK;
}

// The shapes and dtypes of a block that does not run (the exporters keep the
// whole tower): checked like the others, nothing copied.
static el_status check_block(el_vision *v, int l, int swapped, el_error *err) {
    const el_vision_hparams *h = &v->hp;
    int64_t H = h->hidden, F = h->ff;
    static const char *vecs[] = {"ln1.weight", "ln1.bias", "attn_q.bias", "attn_k.bias", "attn_v.bias",
                                 "attn_out.bias", "ln2.weight", "ln2.bias"};
    static const char *mats[] = {"attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_out.weight"};
    char n[96];
    const el_gguf_tensor *t;
    el_status st;
    for (int i = 0; i < 8; i++) {
        snprintf(n, sizeof n, "v.blk.%d.%s", l, vecs[i]);
        if ((st = need(v, n, 1, (int64_t[]){H}, &t, err))) return st;
    }
    for (int i = 0; i < 4; i++) {
        snprintf(n, sizeof n, "v.blk.%d.%s", l, mats[i]);
        if ((st = need(v, n, 2, (int64_t[]){H, H}, &t, err))) return st;
    }
    const char *first = swapped ? "ffn_down" : "ffn_up", *second = swapped ? "ffn_up" : "ffn_down";
    snprintf(n, sizeof n, "v.blk.%d.%s.weight", l, first);
    if ((st = need(v, n, 2, (int64_t[]){H, F}, &t, err))) return st;
    snprintf(n, sizeof n, "v.blk.%d.%s.bias", l, first);
    if ((st = need(v, n, 1, (int64_t[]){F}, &t, err))) return st;
    snprintf(n, sizeof n, "v.blk.%d.%s.weight", l, second);
    if ((st = need(v, n, 2, (int64_t[]){F, H}, &t, err))) return st;
    snprintf(n, sizeof n, "v.blk.%d.%s.bias", l, second);
    return need(v, n, 1, (int64_t[]){H}, &t, err);
}

// The projector type: clip.vision.projector_type (newer files), else
// clip.projector_type, else "mlp" when clip.has_llava_projector says so.
static el_status check_projector_type(el_vision *v, el_error *err) {
    char type[64] = "";
    if (!el_gguf_get_str(v->g, "clip.vision.projector_type", type, sizeof type) &&
        !el_gguf_get_str(v->g, "clip.projector_type", type, sizeof type)) {
        if (!key_bool(v, "clip.has_llava_projector", 0))
            return el_err(err, EL_ERR_UNSUPPORTED,
                          "%s: no projector (neither clip.projector_type nor clip.has_llava_projector is set)", v->path);
        snprintf(type, sizeof type, "mlp");
    }
    if (strcmp(type, "mlp"))
        return el_err(err, EL_ERR_UNSUPPORTED,
                      "%s: projector type '%s' is not supported (only 'mlp': the LLaVA two-layer MLP)", v->path, type);
    if (find(v, "mm.3.weight") || find(v, "mm.1.weight"))
        return el_err(err, EL_ERR_UNSUPPORTED,
                      "%s: tensors mm.1/mm.3 make this an 'mlp_norm' projector (Yi-VL), which is not supported", v->path);
    char merge[32] = "";
    if (el_gguf_find(v->g, "clip.vision.image_grid_pinpoints") ||
        (el_gguf_get_str(v->g, "clip.vision.mm_patch_merge_type", merge, sizeof merge) && !strcmp(merge, "spatial_unpad")))
        return el_err(err, EL_ERR_UNSUPPORTED,
                      "%s: LLaVA-1.6 tiling (image_grid_pinpoints, spatial_unpad) is not supported", v->path);
    return EL_OK;
}

// Which blocks run: clip.vision.feature_layer f takes the hidden state after f
// blocks (0: the embeddings); without it, every block but the last, as
// llama.cpp does for LLaVA files.
static el_status feature_layer(el_vision *v, el_error *err) {
    el_vision_hparams *h = &v->hp;
    const el_gguf_kv *kv = el_gguf_find(v->g, "clip.vision.feature_layer");
    if (!kv) {
        h->n_run = h->n_blocks - 1;
        return EL_OK;
    }
    int64_t f;
    if (kv->type == EL_GGUF_ARRAY) {
        if (kv->arr_n != 1 || !el_gguf_arr_i64(kv, 0, &f))
            return el_err(err, EL_ERR_UNSUPPORTED,
                          "%s: clip.vision.feature_layer lists %llu layers; only one feature layer is supported", v->path,
                          (unsigned long long)kv->arr_n);
    } else if (!el_gguf_get_i64(v->g, "clip.vision.feature_layer", &f)) {
        return el_err(err, EL_ERR_FORMAT, "%s: clip.vision.feature_layer is not an integer", v->path);
    }
    if (f < 0 || f > h->n_blocks)
        return el_err(err, EL_ERR_RANGE, "%s: clip.vision.feature_layer %lld is outside 0..%d", v->path, (long long)f,
                      h->n_blocks);
    h->n_run = (int)f;
    return EL_OK;
}

static el_status read_hparams(el_vision *v, el_error *err) {
    el_vision_hparams *h = &v->hp;
    char arch[32] = "";
    el_gguf_get_str(v->g, "general.architecture", arch, sizeof arch);
    if (strcmp(arch, "clip"))
        return el_err(err, EL_ERR_FORMAT, "%s: not a projector file (general.architecture is '%s', expected 'clip')",
                      v->path, arch);
    if (!key_bool(v, "clip.has_vision_encoder", 0))
        return el_err(err, EL_ERR_FORMAT, "%s: clip.has_vision_encoder is not true: no vision tower", v->path);
    el_status st;
    if ((st = check_projector_type(v, err))) return st;
    if ((st = key_int(v, "clip.vision.image_size", 1, MAX_IMAGE_SIDE, &h->image_size, err)) ||
        (st = key_int(v, "clip.vision.patch_size", 1, MAX_IMAGE_SIDE, &h->patch_size, err)) ||
        (st = key_int(v, "clip.vision.embedding_length", 1, MAX_WIDTH, &h->hidden, err)) ||
        (st = key_int(v, "clip.vision.feed_forward_length", 1, 4 * MAX_WIDTH, &h->ff, err)) ||
        (st = key_int(v, "clip.vision.attention.head_count", 1, 1024, &h->heads, err)) ||
        (st = key_int(v, "clip.vision.block_count", 1, MAX_BLOCKS, &h->n_blocks, err)))
        return st;
    double eps;
    if (!el_gguf_get_f64(v->g, "clip.vision.attention.layer_norm_epsilon", &eps))
        return el_err(err, EL_ERR_FORMAT, "%s: missing key clip.vision.attention.layer_norm_epsilon", v->path);
    if (!(eps > 0 && eps < 1)) return el_err(err, EL_ERR_RANGE, "%s: layer norm epsilon %g is outside (0, 1)", v->path, eps);
    h->eps = (float)eps;
    if (h->image_size % h->patch_size)
        return el_err(err, EL_ERR_FORMAT, "%s: image size %d is not a multiple of the patch size %d", v->path,
                      h->image_size, h->patch_size);
    if (h->hidden % h->heads)
        return el_err(err, EL_ERR_FORMAT, "%s: ViT width %d is not a multiple of its %d heads", v->path, h->hidden, h->heads);
    int side = h->image_size / h->patch_size;
    h->n_patches = side * side;
    if (key_bool(v, "clip.use_silu", 0))
        return el_err(err, EL_ERR_UNSUPPORTED, "%s: clip.use_silu (a SiLU MLP) is not supported", v->path);
    h->gelu = key_bool(v, "clip.use_gelu", 0);
    if ((st = key_rgb(v, "clip.vision.image_mean", 0, h->mean, err)) ||
        (st = key_rgb(v, "clip.vision.image_std", 1, h->std, err)))
        return st;
    char fit[32] = "pad";
    el_gguf_get_str(v->g, "clip.vision.image_aspect_ratio", fit, sizeof fit);
    if (!strcmp(fit, "anyres"))
        return el_err(err, EL_ERR_UNSUPPORTED, "%s: image_aspect_ratio 'anyres' (LLaVA-1.6 tiling) is not supported",
                      v->path);
    h->fit = strcmp(fit, "pad") ? EL_VISION_CROP : EL_VISION_PAD;
    if ((st = feature_layer(v, err))) return st;
    h->has_class = find(v, "v.class_embd") != NULL;
    h->n_pos = h->n_patches + h->has_class;
    if (h->n_pos > MAX_POSITIONS)
        return el_err(err, EL_ERR_RANGE, "%s: %d positions (image %d, patch %d) exceed the limit of %d", v->path, h->n_pos,
                      h->image_size, h->patch_size, MAX_POSITIONS);
    return EL_OK;
}

static el_status bind_all(el_vision *v, el_error *err) {
    el_vision_hparams *h = &v->hp;
    int64_t H = h->hidden, P = h->patch_size;
    el_status st;
    // the patch embedding is a convolution kernel [out][channel][y][x]; each
    // output's row of 3·P·P weights is one row of a matrix
    const el_gguf_tensor *pt;
    if ((st = need(v, "v.patch_embd.weight", 4, (int64_t[]){P, P, 3, H}, &pt, err))) return st;
    el_gguf_tensor_view(pt, &v->patch_w);
    v->patch_w.n_dims = 2;
    v->patch_w.ne[0] = 3 * P * P;
    v->patch_w.ne[1] = H;
    v->patch_w.ne[2] = v->patch_w.ne[3] = 1;
    if (el_dtype_row_size(pt->dtype, 3 * P * P) == 0)
        return el_err(err, EL_ERR_FORMAT, "%s: v.patch_embd.weight in %s cannot hold rows of %lld", v->path,
                      el_dtype_name(pt->dtype), (long long)(3 * P * P));
    h->has_patch_bias = find(v, "v.patch_embd.bias") != NULL;
    if (h->has_patch_bias && (st = need_f32(v, "v.patch_embd.bias", 1, H, 0, &v->patch_b, err))) return st;
    if (h->has_class && (st = need_f32(v, "v.class_embd", 1, H, 0, &v->class_embd, err))) return st;
    if ((st = need_f32(v, "v.position_embd.weight", 2, H, h->n_pos, &v->pos_embd, err))) return st;
    if ((st = opt_norm(v, "v.pre_ln", H, &h->has_pre_ln, &v->pre_w, &v->pre_b, err))) return st;
    if ((st = opt_norm(v, "v.post_ln", H, &h->has_post_ln, &v->post_w, &v->post_b, err))) return st;
    if ((st = block_mlp_naming(v, 0, &h->ffn_swapped, err))) return st;
    v->blocks = calloc((size_t)h->n_run + 1, sizeof *v->blocks);
    if (!v->blocks) return el_err(err, EL_ERR_NOMEM, "%s: out of memory", v->path);
    for (int l = 0; l < h->n_blocks; l++) {
        st = l < h->n_run ? bind_block(v, l, h->ffn_swapped, &v->blocks[l], err) : check_block(v, l, h->ffn_swapped, err);
        if (st) return st;
    }
    char extra[64];
    snprintf(extra, sizeof extra, "v.blk.%d.attn_q.weight", h->n_blocks);
    if (find(v, extra))
        return el_err(err, EL_ERR_FORMAT, "%s: tensor %s exists beyond clip.vision.block_count %d", v->path, extra,
                      h->n_blocks);
    // the projector: mm.0 [hidden -> proj_hidden], GELU, mm.2 [-> out_dim]
    const el_gguf_tensor *m0 = find(v, "mm.0.weight"), *m2 = find(v, "mm.2.weight");
    if (!m0) return el_err(err, EL_ERR_FORMAT, "%s: missing tensor mm.0.weight", v->path);
    if (!m2) return el_err(err, EL_ERR_FORMAT, "%s: missing tensor mm.2.weight", v->path);
    if (m0->n_dims != 2 || m0->ne[1] < 1 || m0->ne[1] > 4 * MAX_WIDTH || m2->n_dims != 2 || m2->ne[1] < 1 ||
        m2->ne[1] > MAX_WIDTH)
        return el_err(err, EL_ERR_FORMAT, "%s: mm.0.weight / mm.2.weight are not matrices of a usable size", v->path);
    h->proj_hidden = (int)m0->ne[1];
    h->out_dim = (int)m2->ne[1];
    if ((st = need_mat(v, "mm.0.weight", H, h->proj_hidden, &v->mm0, err)) ||
        (st = need_f32(v, "mm.0.bias", 1, h->proj_hidden, 0, &v->mm0_b, err)) ||
        (st = need_mat(v, "mm.2.weight", h->proj_hidden, h->out_dim, &v->mm2, err)) ||
        (st = need_f32(v, "mm.2.bias", 1, h->out_dim, 0, &v->mm2_b, err)))
        return st;
    return EL_OK;
}

static void release_pages(const void *p, size_t n) {
    uintptr_t page = 4096, a = ((uintptr_t)p + page - 1) & ~(page - 1), b = ((uintptr_t)p + n) & ~(page - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

// Quantized matrices get the row-interleaved copies the kernels of this CPU
// read fastest (as the language model's do); the file's pages are released.
static el_status pack_weights(el_vision *v, el_error *err) {
    el_isa isa = el_cpu_isa();
    int n = v->hp.n_run * 6 + 2;
    v->packs = calloc((size_t)n, sizeof *v->packs);
    if (!v->packs) return el_err(err, EL_ERR_NOMEM, "%s: out of memory", v->path);
    for (int i = 0; i < n; i++) {
        el_tensor *t = i == n - 2 ? &v->mm0 : i == n - 1 ? &v->mm2 : NULL;
        if (!t) {
            vit_block *b = &v->blocks[i / 6];
            el_tensor *mats[6] = {&b->wq, &b->wk, &b->wv, &b->wo, &b->fc1, &b->fc2};
            t = mats[i % 6];
        }
        int64_t rows;
        size_t bytes = el_matmul_pack_size(t, isa, &rows);
        if (!bytes) continue;
        void *p = el_malloc_aligned(bytes);
        if (!p) return el_err(err, EL_ERR_NOMEM, "%s: out of memory packing %s (%zu bytes)", v->path, t->name, bytes);
        v->packs[v->n_packs++] = p;
        el_matmul_pack(t, rows, p);
        t->packed = p;
        t->packed_rows = rows;
        release_pages(t->data, t->nbytes);
    }
    return EL_OK;
}

static el_status open_common(el_vision *v, int pack, el_error *err) {
    el_status st;
    el_blas_threads(1);  // the pool splits the products; BLAS threads would fight it
    v->isa = EL_ISA_AVX512;  // the best this CPU has
    if ((st = read_hparams(v, err))) return st;
    // per block 10 vectors; besides: patch bias, class, positions, two norms, two projector biases
    v->owned = calloc((size_t)v->hp.n_run * 10 + 16, sizeof *v->owned);
    if (!v->owned) return el_err(err, EL_ERR_NOMEM, "%s: out of memory", v->path);
    if ((st = bind_all(v, err))) return st;
    return pack ? pack_weights(v, err) : EL_OK;
}

el_status el_vision_open(const char *path, el_vision **out, el_error *err) {
    *out = NULL;
    el_vision *v = calloc(1, sizeof *v);
    if (!v || !(v->path = strdup(path))) {
        free(v);
        return el_err(err, EL_ERR_NOMEM, "out of memory");
    }
    el_status st = el_gguf_open(path, &v->g, err);
    if (!st) st = open_common(v, 1, err);
    if (st) {
        el_vision_close(v);
        return st;
    }
    *out = v;
    return EL_OK;
}

el_status el_vision_open_memory(const void *data, size_t size, const char *name, el_vision **out, el_error *err) {
    *out = NULL;
    el_vision *v = calloc(1, sizeof *v);
    if (!v || !(v->path = strdup(name))) {
        free(v);
        return el_err(err, EL_ERR_NOMEM, "out of memory");
    }
    el_status st = el_gguf_open_memory(data, size, name, &v->g, err);
    if (!st) st = open_common(v, 0, err);
    if (st) {
        el_vision_close(v);
        return st;
    }
    *out = v;
    return EL_OK;
}

void el_vision_close(el_vision *v) {
    if (!v) return;
    for (int i = 0; i < v->n_packs; i++) el_free_aligned(v->packs[i]);
    free(v->packs);
    for (int i = 0; i < v->n_owned; i++) free(v->owned[i]);
    free(v->owned);
    free(v->blocks);
    vit_scratch_free(v);
    el_gguf_close(v->g);
    free(v->path);
    free(v);
}

const el_vision_hparams *el_vision_hp(const el_vision *v) { return &v->hp; }
void el_vision_set_isa(el_vision *v, el_isa isa) { v->isa = isa; }
const char *el_vision_path(const el_vision *v) { return v->path; }
int el_vision_dtype(const el_vision *v) { return v->hp.n_run > 0 ? v->blocks[0].wq.dtype : v->mm0.dtype; }

double el_vision_flops(const el_vision *v) {
    const el_vision_hparams *h = &v->hp;
    double n = h->n_pos, H = h->hidden;
    double patch = 2.0 * h->n_patches * H * 3.0 * h->patch_size * h->patch_size;
    double block = 2.0 * n * (4.0 * H * H + 2.0 * H * h->ff) + 4.0 * n * n * H;  // projections, MLP, QKᵀ and PV
    double proj = 2.0 * h->n_patches * ((double)H * h->proj_hidden + (double)h->proj_hidden * h->out_dim);
    return patch + h->n_run * block + proj;
}

el_status el_vision_check_dim(const el_vision *v, int llm_dim, const char *llm_path, el_error *err) {
    if (v->hp.out_dim != llm_dim)
        return el_err(err, EL_ERR_FORMAT, "%s: the projector's output width %d does not match %s's embedding width %d",
                      v->path, v->hp.out_dim, llm_path, llm_dim);
    return EL_OK;
}
