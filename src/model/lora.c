// LoRA adapters: creation, the GGUF adapter format (read with shape checks
// against the base, written atomically), and application at inference.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/gguf.h"
#include "edgellm/kernels.h"
#include "edgellm/lora.h"

static const char *target_names[EL_LORA_N_TARGETS] = {"q", "k", "v", "o", "gate", "up", "down"};
static const char *target_stems[EL_LORA_N_TARGETS] = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                                      "ffn_gate", "ffn_up", "ffn_down"};

const char *el_lora_target_name(int t) { return t >= 0 && t < EL_LORA_N_TARGETS ? target_names[t] : "?"; }
const char *el_lora_target_stem(int t) { return t >= 0 && t < EL_LORA_N_TARGETS ? target_stems[t] : "?"; }

el_status el_lora_parse_targets(const char *s, unsigned *mask, el_error *err) {
    *mask = 0;
    if (!strcmp(s, "all")) {
        *mask = EL_LORA_ALL_TARGETS;
        return EL_OK;
    }
    const char *p = s;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        int found = -1;
        for (int t = 0; t < EL_LORA_N_TARGETS; t++)
            if (strlen(target_names[t]) == len && !strncmp(p, target_names[t], len)) found = t;
        if (found < 0)
            return el_err(err, EL_ERR_ARG, "unknown LoRA target '%.*s' (known: q,k,v,o,gate,up,down)", (int)len, p);
        *mask |= 1u << found;
        if (!e) break;
        p = e + 1;
    }
    if (!*mask) return el_err(err, EL_ERR_ARG, "no LoRA targets in '%s'", s);
    return EL_OK;
}

const el_tensor *el_lora_base(const el_model *m, int layer, int target) {
    const el_layer *L = &m->layers[layer];
    switch (target) {
    case EL_LORA_Q: return &L->wq;
    case EL_LORA_K: return &L->wk;
    case EL_LORA_V: return &L->wv;
    case EL_LORA_O: return &L->wo;
    case EL_LORA_GATE: return &L->w_gate;
    case EL_LORA_UP: return &L->w_up;
    case EL_LORA_DOWN: return &L->w_down;
    default: return NULL;
    }
}

// in/out of a target from the hyper-parameters (weights may not be bound).
void el_lora_target_shape(const el_hparams *h, int t, int *in, int *out) {
    int q = h->n_heads * h->head_dim, kv = h->n_kv_heads * h->head_dim;
    switch (t) {
    case EL_LORA_Q: *in = h->dim, *out = q; break;
    case EL_LORA_K:
    case EL_LORA_V: *in = h->dim, *out = kv; break;
    case EL_LORA_O: *in = q, *out = h->dim; break;
    case EL_LORA_GATE:
    case EL_LORA_UP: *in = h->dim, *out = h->ff; break;
    default: *in = h->ff, *out = h->dim; break;
    }
}

static el_lora *lora_alloc(int n_layers) {
    el_lora *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->n_layers = n_layers;
    l->mats = calloc((size_t)n_layers * EL_LORA_N_TARGETS, sizeof *l->mats);
    if (!l->mats) {
        free(l);
        return NULL;
    }
    return l;
}

// Gives every present matrix its place in one params array.
static el_status lora_place(el_lora *l, el_error *err) {
    size_t n = 0;
    for (int i = 0; i < l->n_layers * EL_LORA_N_TARGETS; i++) {
        el_lora_mat *mt = &l->mats[i];
        if (mt->rank) n += (size_t)mt->rank * ((size_t)mt->in + mt->out);
    }
    l->params = el_calloc(n ? n : 1, sizeof(float));
    if (!l->params) return el_err(err, EL_ERR_NOMEM, "out of memory for a LoRA adapter of %zu parameters", n);
    l->n_params = n;
    size_t off = 0;
    for (int i = 0; i < l->n_layers * EL_LORA_N_TARGETS; i++) {
        el_lora_mat *mt = &l->mats[i];
        if (!mt->rank) continue;
        mt->a = l->params + off;
        off += (size_t)mt->rank * mt->in;
        mt->b = l->params + off;
        off += (size_t)mt->rank * mt->out;
    }
    return EL_OK;
}

void el_lora_free(el_lora *l) {
    if (!l) return;
    free(l->path);
    free(l->params);
    free(l->mats);
    free(l);
}

const el_lora_mat *el_lora_get(const el_lora *l, int layer, int target) {
    if (!l || layer < 0 || layer >= l->n_layers) return NULL;
    const el_lora_mat *mt = &l->mats[layer * EL_LORA_N_TARGETS + target];
    return mt->a ? mt : NULL;
}

size_t el_lora_offset(const el_lora *l, const el_lora_mat *mat) { return (size_t)(mat->a - l->params); }

el_status el_lora_new(const el_model *m, int rank, float alpha, unsigned targets, uint64_t seed, el_lora **out,
                      el_error *err) {
    return el_lora_new_layers(m, 0, m->hp.n_layers, rank, alpha, targets, seed, out, err);
}

el_status el_lora_new_layers(const el_model *m, int layer_begin, int layer_end, int rank, float alpha,
                             unsigned targets, uint64_t seed, el_lora **out, el_error *err) {
    *out = NULL;
    if (rank < 1 || rank > 4096) return el_err(err, EL_ERR_RANGE, "LoRA rank %d is outside 1..4096", rank);
    if (!(targets & EL_LORA_ALL_TARGETS)) return el_err(err, EL_ERR_ARG, "no LoRA targets");
    if (layer_begin < 0 || layer_end > m->hp.n_layers || layer_begin >= layer_end)
        return el_err(err, EL_ERR_RANGE, "LoRA layers %d:%d are not within 0:%d", layer_begin, layer_end,
                      m->hp.n_layers);
    el_lora *l = lora_alloc(m->hp.n_layers);
    if (!l) return el_err(err, EL_ERR_NOMEM, "out of memory");
    l->rank = rank;
    l->alpha = alpha;
    l->targets = targets & EL_LORA_ALL_TARGETS;
    for (int layer = layer_begin; layer < layer_end; layer++)
        for (int t = 0; t < EL_LORA_N_TARGETS; t++) {
            if (!(targets >> t & 1)) continue;
            el_lora_mat *mt = &l->mats[layer * EL_LORA_N_TARGETS + t];
            mt->rank = rank;
            el_lora_target_shape(&m->hp, t, &mt->in, &mt->out);
            if (rank > mt->in || rank > mt->out) {
                int in = mt->in, o = mt->out;  // mt lives in l: read before the free
                el_lora_free(l);
                return el_err(err, EL_ERR_RANGE, "LoRA rank %d exceeds the %dx%d projection %s", rank, o, in,
                              target_stems[t]);
            }
        }
    el_status st = lora_place(l, err);
    if (st) {
        el_lora_free(l);
        return st;
    }
    // A ~ U(-1/√in, 1/√in) (Kaiming-uniform-like), B = 0: the update starts at zero
    for (int i = 0; i < l->n_layers * EL_LORA_N_TARGETS; i++) {
        el_lora_mat *mt = &l->mats[i];
        if (!mt->a) continue;
        uint64_t x = (seed ^ 0x632BE59BD9B4E019ULL) * 0x9E3779B97F4A7C15ULL + (uint64_t)i * 0xD1B54A32D192ED03ULL;
        x = x ? x : 1;
        float bound = 1.0f / sqrtf((float)mt->in);
        for (size_t j = 0; j < (size_t)mt->rank * mt->in; j++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            mt->a[j] = bound * ((float)((x >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f);
        }
    }
    *out = l;
    return EL_OK;
}

el_status el_lora_alloc_slots(const el_model *m, float alpha, int n, const el_lora_slot *slots, el_lora **out,
                              el_error *err) {
    *out = NULL;
    el_lora *l = lora_alloc(m->hp.n_layers);
    if (!l) return el_err(err, EL_ERR_NOMEM, "out of memory");
    l->alpha = alpha;
    for (int i = 0; i < n; i++) {
        const el_lora_slot *sl = &slots[i];
        if (sl->layer < 0 || sl->layer >= m->hp.n_layers || sl->target < 0 || sl->target >= EL_LORA_N_TARGETS) {
            el_lora_free(l);
            return el_err(err, EL_ERR_RANGE, "LoRA matrix for layer %d, target %d: no such projection in %d layers",
                          sl->layer, sl->target, m->hp.n_layers);
        }
        el_lora_mat *mt = &l->mats[sl->layer * EL_LORA_N_TARGETS + sl->target];
        el_lora_target_shape(&m->hp, sl->target, &mt->in, &mt->out);
        if (mt->rank || sl->rank < 1 || sl->rank > 4096) {
            el_status st = mt->rank ? el_err(err, EL_ERR_ARG, "LoRA matrix for layer %d %s is given twice", sl->layer,
                                             target_stems[sl->target])
                                    : el_err(err, EL_ERR_RANGE, "LoRA rank %d of layer %d %s is outside 1..4096",
                                             sl->rank, sl->layer, target_stems[sl->target]);
            el_lora_free(l);
            return st;
        }
        mt->rank = sl->rank;
        if (!l->rank) l->rank = sl->rank;
        l->targets |= 1u << sl->target;
    }
    el_status st = lora_place(l, err);
    if (st) {
        el_lora_free(l);
        return st;
    }
    *out = l;
    return EL_OK;
}

el_status el_lora_join(const el_model *m, const el_lora *const *parts, int n, el_lora **out, el_error *err) {
    *out = NULL;
    if (n < 1) return el_err(err, EL_ERR_ARG, "nothing to join");
    el_lora *l = lora_alloc(m->hp.n_layers);
    if (!l) return el_err(err, EL_ERR_NOMEM, "out of memory");
    l->rank = parts[0]->rank;
    l->alpha = parts[0]->alpha;
    for (int p = 0; p < n; p++) {
        const el_lora *src = parts[p];
        if (src->n_layers != m->hp.n_layers || src->alpha != parts[0]->alpha) {
            el_lora_free(l);
            return el_err(err, EL_ERR_ARG, "%s: adapter for %d layers with alpha %g cannot join one for %d layers with alpha %g",
                          src->path ? src->path : "adapter", src->n_layers, src->alpha, m->hp.n_layers, parts[0]->alpha);
        }
        l->targets |= src->targets;
        for (int i = 0; i < m->hp.n_layers * EL_LORA_N_TARGETS; i++) {
            if (!src->mats[i].a) continue;
            if (l->mats[i].rank) {
                el_lora_free(l);
                return el_err(err, EL_ERR_ARG, "%s: layer %d %s is in two of the adapters being joined",
                              src->path ? src->path : "adapter", i / EL_LORA_N_TARGETS, target_stems[i % EL_LORA_N_TARGETS]);
            }
            l->mats[i].rank = src->mats[i].rank;
            l->mats[i].in = src->mats[i].in;
            l->mats[i].out = src->mats[i].out;
        }
    }
    el_status st = lora_place(l, err);
    if (st) {
        el_lora_free(l);
        return st;
    }
    for (int p = 0; p < n; p++)
        for (int i = 0; i < m->hp.n_layers * EL_LORA_N_TARGETS; i++) {
            const el_lora_mat *sm = &parts[p]->mats[i];
            if (!sm->a) continue;
            memcpy(l->mats[i].a, sm->a, (size_t)sm->rank * sm->in * sizeof(float));
            memcpy(l->mats[i].b, sm->b, (size_t)sm->out * sm->rank * sizeof(float));
        }
    *out = l;
    return EL_OK;
}

// ---------------------------------------------------------------- GGUF

// "blk.N.STEM.weight.lora_a|b" -> layer, target, which (0 = a, 1 = b)
static int parse_name(const char *name, int n_layers, int *layer, int *target, int *which) {
    if (strncmp(name, "blk.", 4)) return 0;
    char *end;
    long l = strtol(name + 4, &end, 10);
    if (end == name + 4 || *end != '.' || l < 0 || l >= n_layers) return 0;
    const char *rest = end + 1;
    for (int t = 0; t < EL_LORA_N_TARGETS; t++) {
        size_t sl = strlen(target_stems[t]);
        if (strncmp(rest, target_stems[t], sl)) continue;
        const char *suf = rest + sl;
        if (!strcmp(suf, ".weight.lora_a")) *which = 0;
        else if (!strcmp(suf, ".weight.lora_b")) *which = 1;
        else continue;
        *layer = (int)l;
        *target = t;
        return 1;
    }
    return 0;
}

el_status el_lora_load(const char *path, const el_model *m, el_lora **out, el_error *err) {
    *out = NULL;
    el_gguf *g = NULL;
    el_lora *l = NULL;
    // Read, not mapped: adapters are small, and a server loads them while
    // operators may be rewriting the file; a mapping of a file truncated
    // under us would end the process with SIGBUS instead of an error.
    char *data = NULL;
    size_t size = 0;
    el_status st = el_read_file(path, (size_t)4 << 30, &data, &size, err);
    if (st) return st;
    if ((st = el_gguf_open_memory(data, size, path, &g, err))) {
        free(data);
        return st;
    }
    char s[64];
    if (!el_gguf_get_str(g, "general.type", s, sizeof s) || strcmp(s, "adapter")) {
        st = el_err(err, EL_ERR_FORMAT, "%s: not a LoRA adapter (general.type is not \"adapter\")", path);
        goto fail;
    }
    if (!el_gguf_get_str(g, "adapter.type", s, sizeof s) || strcmp(s, "lora")) {
        st = el_err(err, EL_ERR_FORMAT, "%s: adapter.type is not \"lora\"", path);
        goto fail;
    }
    if (el_gguf_get_str(g, "general.architecture", s, sizeof s) && strcmp(s, m->hp.arch)) {
        st = el_err(err, EL_ERR_FORMAT, "%s: adapter is for architecture '%s', the model is '%s'", path, s, m->hp.arch);
        goto fail;
    }
    if (!(l = lora_alloc(m->hp.n_layers))) {
        st = el_err(err, EL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((l->path = strdup(path)) == NULL) {
        st = el_err(err, EL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    // First pass: shapes. Each pair must match the base projection's shape.
    const el_gguf_tensor **src = calloc((size_t)l->n_layers * EL_LORA_N_TARGETS * 2, sizeof *src);
    if (!src) {
        st = el_err(err, EL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const el_gguf_tensor *t = &g->tensors[i];
        int layer, target, which;
        if (!parse_name(t->name, m->hp.n_layers, &layer, &target, &which)) {
            st = el_err(err, EL_ERR_FORMAT, "%s: tensor %s is not a LoRA tensor of a %d-layer llama model", path,
                        t->name, m->hp.n_layers);
            break;
        }
        const el_dtype_traits *tr = el_dtype_info(t->dtype);
        if (t->n_dims != 2 || !tr || !tr->to_f32) {
            st = el_err(err, EL_ERR_FORMAT, "%s: tensor %s must be a 2-D matrix of a readable type (is %dD %s)", path,
                        t->name, t->n_dims, el_dtype_name(t->dtype));
            break;
        }
        src[(layer * EL_LORA_N_TARGETS + target) * 2 + which] = t;
    }
    for (int i = 0; !st && i < l->n_layers * EL_LORA_N_TARGETS; i++) {
        const el_gguf_tensor *a = src[2 * i], *b = src[2 * i + 1];
        if (!a && !b) continue;
        int in, outd, t = i % EL_LORA_N_TARGETS;
        el_lora_target_shape(&m->hp, t, &in, &outd);
        if (!a || !b) {
            st = el_err(err, EL_ERR_FORMAT, "%s: tensor %s has no %s partner", path, (a ? a : b)->name,
                        a ? "lora_b" : "lora_a");
            break;
        }
        if (a->ne[0] != in || b->ne[1] != outd || a->ne[1] != b->ne[0] || a->ne[1] < 1 || a->ne[1] > 4096) {
            st = el_err(err, EL_ERR_FORMAT,
                        "%s: tensor %s is [%lld, %lld] and %s is [%lld, %lld]; the base projection needs [%d, r] "
                        "and [r, %d] (an adapter for a different base model?)",
                        path, a->name, (long long)a->ne[0], (long long)a->ne[1], b->name, (long long)b->ne[0],
                        (long long)b->ne[1], in, outd);
            break;
        }
        el_lora_mat *mt = &l->mats[i];
        mt->rank = (int)a->ne[1];
        mt->in = in;
        mt->out = outd;
        if (!l->rank) l->rank = mt->rank;
        l->targets |= 1u << t;
    }
    if (!st && !l->targets) st = el_err(err, EL_ERR_FORMAT, "%s: the adapter has no LoRA tensors", path);
    if (!st) st = lora_place(l, err);
    for (int i = 0; !st && i < l->n_layers * EL_LORA_N_TARGETS; i++) {
        el_lora_mat *mt = &l->mats[i];
        if (!mt->a) continue;
        const el_gguf_tensor *a = src[2 * i], *b = src[2 * i + 1];
        el_dtype_info(a->dtype)->to_f32(a->data, mt->a, (int64_t)mt->rank * mt->in);
        el_dtype_info(b->dtype)->to_f32(b->data, mt->b, (int64_t)mt->rank * mt->out);
        for (size_t j = 0; j < (size_t)mt->rank * (mt->in + mt->out); j++)
            if (!isfinite(mt->a[j])) {
                st = el_err(err, EL_ERR_FORMAT, "%s: tensor %s holds a non-finite value", path, a->name);
                break;
            }
    }
    free(src);
    if (st) goto fail;
    double alpha;
    l->alpha = el_gguf_get_f64(g, "adapter.lora.alpha", &alpha) ? (float)alpha : (float)l->rank;
    if (!isfinite(l->alpha)) {
        st = el_err(err, EL_ERR_FORMAT, "%s: adapter.lora.alpha is not finite", path);
        goto fail;
    }
    el_gguf_close(g);
    free(data);
    *out = l;
    return EL_OK;
fail:
    el_lora_free(l);
    el_gguf_close(g);
    free(data);
    return st;
}

el_status el_lora_save(const el_lora *l, const char *path, el_error *err) {
    el_gguf_writer *w = el_gguf_writer_new();
    if (!w) return el_err(err, EL_ERR_NOMEM, "out of memory");
    el_gguf_add_str(w, "general.architecture", "llama");
    el_gguf_add_str(w, "general.type", "adapter");
    el_gguf_add_str(w, "adapter.type", "lora");
    el_gguf_add_f32(w, "adapter.lora.alpha", l->alpha);
    char(*names)[96] = calloc((size_t)l->n_layers * EL_LORA_N_TARGETS * 2, sizeof *names);
    el_status st = names ? EL_OK : el_err(err, EL_ERR_NOMEM, "out of memory");
    int k = 0;
    for (int layer = 0; !st && layer < l->n_layers; layer++)
        for (int t = 0; !st && t < EL_LORA_N_TARGETS; t++) {
            const el_lora_mat *mt = el_lora_get(l, layer, t);
            if (!mt) continue;
            int64_t nea[2] = {mt->in, mt->rank}, neb[2] = {mt->rank, mt->out};
            snprintf(names[k], sizeof names[k], "blk.%d.%s.weight.lora_a", layer, target_stems[t]);
            snprintf(names[k + 1], sizeof names[k + 1], "blk.%d.%s.weight.lora_b", layer, target_stems[t]);
            if (el_gguf_add_tensor(w, names[k], EL_DTYPE_F32, 2, nea, mt->a) ||
                el_gguf_add_tensor(w, names[k + 1], EL_DTYPE_F32, 2, neb, mt->b))
                st = el_err(err, EL_ERR_NOMEM, "out of memory");
            k += 2;
        }
    if (!st) st = el_gguf_write(w, path, NULL, NULL, NULL, err);
    free(names);
    el_gguf_writer_free(w);
    return st;
}

// ---------------------------------------------------------------- inference

void el_lora_apply(const el_lora_set *set, int layer, int target, float *y, const float *x, int n) {
    if (!set) return;
    for (int i = 0; i < set->n; i++) {
        const el_lora_mat *mt = el_lora_get(set->lora[i], layer, target);
        if (!mt) continue;
        float s = set->scale[i] * set->lora[i]->alpha / (float)mt->rank;
        float tbuf[256];
        float *t = mt->rank <= 256 ? tbuf : malloc((size_t)mt->rank * sizeof(float));
        if (!t) continue;  // cannot happen for sane ranks
        for (int row = 0; row < n; row++) {
            const float *xr = x + (size_t)row * mt->in;
            float *yr = y + (size_t)row * mt->out;
            for (int r = 0; r < mt->rank; r++) t[r] = s * el_dot_f32(xr, mt->a + (size_t)r * mt->in, mt->in);
            for (int o = 0; o < mt->out; o++) yr[o] += el_dot_f32(t, mt->b + (size_t)o * mt->rank, mt->rank);
        }
        if (t != tbuf) free(t);
    }
}
