// edgellm synth: a random-weight Llama-shaped GGUF of any size, for benchmarks
// and tests. Weights are generated tensor by tensor while the file is written,
// so models larger than memory can be made.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "edgellm/gguf.h"
#include "edgellm/model.h"
#include "edgellm/sample.h"

static const char *usage =
    "usage: edgellm synth --dim D --layers L --heads H [--kv-heads K] --ff F --vocab V\n"
    "                     [--ctx C] [--type f32|f16|bf16] [--seed S] [--family llama|qwen2|llama3]\n"
    "                     [--chat-template chatml|llama3|llama2] -o OUT.gguf\n"
    "       edgellm synth ... [-o OUT.gguf] --mmproj PROJ.gguf [--vit NAME] [projector options]\n"
    "\n"
    "Writes a Llama-shaped GGUF with random weights (uniform, scaled by 1/sqrt(fan-in);\n"
    "norms 1). --family qwen2 writes architecture qwen2 (neox rope) with q/k/v biases\n"
    "(uniform in [-0.5, 0.5)) and rope theta 1000000; llama3 writes rope theta 500000\n"
    "and a rope_freqs.weight tensor with the Llama 3.1 scaling (factor 8, low/high\n"
    "frequency factors 1/4, original context 8192); llama (default) neither. And, when V >= 262, a synthetic SentencePiece vocabulary (<unk>, <s>, </s>,\n"
    "256 byte tokens, \"\u2581\", printable ASCII with and without \"\u2581\", then letter\n"
    "words) so that run/bench work on it. --chat-template adds that template's markers to the\n"
    "vocabulary as control tokens (the last ids) and a tokenizer.chat_template that names them.\n"
    "The same options and seed always give the same file.\n"
    "\n"
    "\n"
    "--mmproj PROJ.gguf also writes a LLaVA-style projector file (clip.* keys, v.* ViT\n"
    "and mm.* MLP projector tensors; docs/vision.md) with random weights whose output\n"
    "width is --dim, so it pairs with the model of -o (which may be left out: then\n"
    "only --dim is needed). The ViT's shape:\n"
    "  --vit NAME            tiny (default: 32 px, patch 8, width 64, 2 blocks, 4 heads,\n"
    "                        MLP 128), vit-b16 (224/16, 768, 12, 12, 3072) or\n"
    "                        vit-l14-336 (336/14, 1024, 24, 16, 4096); the options below\n"
    "                        change single values\n"
    "  --image-size N --patch P --vit-dim W --vit-blocks B --vit-heads A --vit-ff F\n"
    "  --proj-hidden M       the projector's inner width (default: --dim)\n"
    "  --style clip|siglip   clip (default): class token, pre-norm, quick GELU, CLIP's\n"
    "                        mean/std; siglip: no class token, patch bias, final norm,\n"
    "                        GELU, mean/std 0.5\n"
    "  --feature-layer F     write clip.vision.feature_layer (default: none, so every\n"
    "                        block but the last runs)\n"
    "  --fit pad|crop        clip.vision.image_aspect_ratio (default pad)\n"
    "  --old-names           name the ViT MLP's first layer ffn_down, its second ffn_up\n"
    "                        (as older exporters did)\n"
    "\n"
    "example (TinyLlama shape): edgellm synth --dim 2048 --layers 22 --heads 32 --kv-heads 4 \\\n"
    "           --ff 5632 --vocab 32000 --ctx 2048 --type f16 -o tinyllama-synth.gguf\n"
    "         edgellm synth --dim 4096 --mmproj vit-l.gguf --vit vit-l14-336 --type f16\n";

typedef struct {
    uint64_t seed;
    int dtype;
    int dim, ff;
    int head_dim;
    float theta;
} synth_ctx;

#define LLAMA3_FACTOR 8.0f
#define LLAMA3_LOW 1.0f
#define LLAMA3_HIGH 4.0f
#define LLAMA3_ORIG_CTX 8192

// Every tensor gets its own generator seeded from its name, so the content does
// not depend on the order in which tensors are produced. Uniform weights with
// variance 1/fan_in keep activations of unit scale through the layers.
static el_status fill(void *vctx, const char *name, void *dst, size_t nbytes, el_error *err) {
    (void)err;
    const synth_ctx *c = vctx;
    if (!strcmp(name, "rope_freqs.weight")) {
        el_rope_llama3_divisors(dst, c->head_dim, c->theta, LLAMA3_FACTOR, LLAMA3_LOW, LLAMA3_HIGH, LLAMA3_ORIG_CTX);
        return EL_OK;
    }
    int is_bias = strstr(name, ".bias") != NULL;
    uint64_t rng = el_fnv1a(EL_FNV_INIT ^ c->seed, name, strlen(name)) | 1;
    int is_norm = strstr(name, "norm") != NULL;
    int dtype = is_norm || is_bias ? EL_DTYPE_F32 : c->dtype;
    size_t n = nbytes / (dtype == EL_DTYPE_F32 ? 4 : 2);
    int fan_in = strstr(name, "ffn_down") ? c->ff : c->dim;
    float scale = strstr(name, "token_embd") ? 1.0f : is_bias ? 0.5f : sqrtf(3.0f / (float)fan_in);
    for (size_t i = 0; i < n; i++) {
        float v = is_norm ? 1.0f : (el_rng_uniform(&rng) * 2.0f - 1.0f) * scale;
        if (dtype == EL_DTYPE_F32) ((float *)dst)[i] = v;
        else if (dtype == EL_DTYPE_F16) ((uint16_t *)dst)[i] = el_f32_to_f16(v);
        else ((uint16_t *)dst)[i] = el_f32_to_bf16(v);
    }
    return EL_OK;
}

// Synthetic vocabulary: <unk> <s> </s>, the 256 byte tokens, then words in
// bijective base 26, alternately with and without the leading "▁".
static char **make_vocab(int V, uint64_t **lens_out, float **scores_out, int32_t **types_out) {
    char **p = calloc((size_t)V, sizeof *p);
    uint64_t *lens = calloc((size_t)V, sizeof *lens);
    float *scores = calloc((size_t)V, sizeof *scores);
    int32_t *types = calloc((size_t)V, sizeof *types);
    if (!p || !lens || !scores || !types) goto fail;
    for (int i = 0; i < V; i++) {
        char buf[64];
        int t = 1;
        if (i == 0) snprintf(buf, sizeof buf, "<unk>"), t = 2;
        else if (i == 1) snprintf(buf, sizeof buf, "<s>"), t = 3;
        else if (i == 2) snprintf(buf, sizeof buf, "</s>"), t = 3;
        else if (i < 259) snprintf(buf, sizeof buf, "<0x%02X>", i - 3), t = 6;
        else if (i == 259) snprintf(buf, sizeof buf, "\xe2\x96\x81");  // the space piece
        else if (i < 259 + 95) snprintf(buf, sizeof buf, "%c", (char)(0x21 + i - 260));  // printable ASCII
        else if (i < 259 + 95 + 94) snprintf(buf, sizeof buf, "\xe2\x96\x81%c", (char)(0x21 + i - 354));
        else {
            int k = (i - 448) / 2 + 27, o = 0;  // from "aa": single letters are above
            char word[32];
            while (k > 0) {
                k--;
                word[o++] = (char)('a' + k % 26);
                k /= 26;
            }
            word[o] = 0;
            snprintf(buf, sizeof buf, "%s%s", (i - 448) % 2 ? "" : "\xe2\x96\x81", word);
        }
        if (!(p[i] = strdup(buf))) goto fail;
        lens[i] = strlen(buf);
        scores[i] = i < 259 ? 0.0f : -(float)(i - 259);  // shorter pieces first: words score lower
        types[i] = t;
    }
    *lens_out = lens;
    *scores_out = scores;
    *types_out = types;
    return p;
fail:
    if (p)
        for (int i = 0; i < V; i++) free(p[i]);
    free(p);
    free(lens);
    free(scores);
    free(types);
    return NULL;
}

// Chat templates a synthetic model can carry: the markers become control
// tokens at the end of the vocabulary, and the Jinja text is what
// el_chat_template_detect recognises.
typedef struct {
    const char *name, *markers[3], *jinja;
} synth_template;
static const synth_template templates[] = {
    {"chatml", {"<|im_start|>", "<|im_end|>", NULL},
     "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
     "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"},
    {"llama3", {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"},
     "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>"
     "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"},
    {"llama2", {NULL, NULL, NULL},
     "{% for m in messages %}{% if m['role'] == 'user' %}{{ bos_token }}[INST] <<SYS>> {{ m['content'] }} [/INST]"
     "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"},
};

// ---------------------------------------------------------------- projector files

typedef struct {
    int image_size, patch, width, blocks, heads, ff, proj_hidden, out_dim;
    int siglip, feature_layer, old_names, crop;
} vit_shape;

typedef struct {
    uint64_t seed;
    int dtype;
    const vit_shape *v;
} vit_ctx;

// Matrices uniform with variance 1/fan-in; layer-norm weights 1 ± 0.2 and the
// other vectors small, so that every one of them changes the output.
static el_status vit_fill(void *vctx, const char *name, void *dst, size_t nbytes, el_error *err) {
    (void)err;
    const vit_ctx *c = vctx;
    const vit_shape *v = c->v;
    uint64_t rng = el_fnv1a(EL_FNV_INIT ^ c->seed ^ 0x5649540000000000ULL, name, strlen(name)) | 1;
    int vec = strstr(name, ".bias") || strstr(name, "ln") || strstr(name, "class_embd") || strstr(name, "position_embd");
    int dtype = vec ? EL_DTYPE_F32 : c->dtype;
    size_t n = nbytes / (dtype == EL_DTYPE_F32 ? 4 : 2);
    int fan_in = v->width;
    if (strstr(name, "patch_embd")) fan_in = 3 * v->patch * v->patch;
    else if (!strcmp(name, "mm.2.weight")) fan_in = v->proj_hidden;
    else if (strstr(name, v->old_names ? "ffn_up.weight" : "ffn_down.weight")) fan_in = v->ff;
    float scale = vec ? (strstr(name, "class_embd") ? 0.5f : 0.2f) : sqrtf(3.0f / (float)fan_in);
    int is_norm_w = strstr(name, "ln") && strstr(name, ".weight");
    for (size_t i = 0; i < n; i++) {
        float r = (el_rng_uniform(&rng) * 2.0f - 1.0f) * scale;
        float x = is_norm_w ? 1.0f + r : r;
        if (dtype == EL_DTYPE_F32) ((float *)dst)[i] = x;
        else if (dtype == EL_DTYPE_F16) ((uint16_t *)dst)[i] = el_f32_to_f16(x);
        else ((uint16_t *)dst)[i] = el_f32_to_bf16(x);
    }
    return EL_OK;
}

static int write_mmproj(const char *path, const vit_shape *v, int dtype, uint64_t seed, el_error *err) {
    el_gguf_writer *w = el_gguf_writer_new();
    if (!w) return el_err(err, EL_ERR_NOMEM, "out of memory"), 1;
    static const float clip_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
    static const float clip_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
    static const float half[3] = {0.5f, 0.5f, 0.5f};
    el_gguf_add_str(w, "general.architecture", "clip");
    el_gguf_add_str(w, "general.name", "edgellm-synth-mmproj");
    el_gguf_add_str(w, "general.description", "image encoder for LLaVA (random weights)");
    el_gguf_add_u32(w, "general.file_type", dtype == EL_DTYPE_F32 ? 0 : dtype == EL_DTYPE_F16 ? 1 : 32);
    el_gguf_add_bool(w, "clip.has_text_encoder", 0);
    el_gguf_add_bool(w, "clip.has_vision_encoder", 1);
    el_gguf_add_bool(w, "clip.has_llava_projector", 1);
    el_gguf_add_str(w, "clip.projector_type", "mlp");
    el_gguf_add_bool(w, "clip.use_gelu", v->siglip);
    el_gguf_add_u32(w, "clip.vision.image_size", (uint32_t)v->image_size);
    el_gguf_add_u32(w, "clip.vision.patch_size", (uint32_t)v->patch);
    el_gguf_add_u32(w, "clip.vision.embedding_length", (uint32_t)v->width);
    el_gguf_add_u32(w, "clip.vision.feed_forward_length", (uint32_t)v->ff);
    el_gguf_add_u32(w, "clip.vision.projection_dim", (uint32_t)v->out_dim);
    el_gguf_add_u32(w, "clip.vision.attention.head_count", (uint32_t)v->heads);
    el_gguf_add_f32(w, "clip.vision.attention.layer_norm_epsilon", v->siglip ? 1e-6f : 1e-5f);
    el_gguf_add_u32(w, "clip.vision.block_count", (uint32_t)v->blocks);
    el_gguf_add_arr(w, "clip.vision.image_mean", EL_GGUF_FLOAT32, v->siglip ? half : clip_mean, 3);
    el_gguf_add_arr(w, "clip.vision.image_std", EL_GGUF_FLOAT32, v->siglip ? half : clip_std, 3);
    if (v->feature_layer >= 0) {
        int32_t f = v->feature_layer;
        el_gguf_add_arr(w, "clip.vision.feature_layer", EL_GGUF_INT32, &f, 1);
    }
    if (v->crop) el_gguf_add_str(w, "clip.vision.image_aspect_ratio", "square");
    int64_t P = v->patch, H = v->width, F = v->ff, side = v->image_size / v->patch;
    uint64_t total = 0;
    int failed = 0;
#define VT(name, dt, nd, ...)                                                                       \
    do {                                                                                          \
        int64_t ne_[4] = {__VA_ARGS__};                                                           \
        int d_ = (nd) == 1 ? EL_DTYPE_F32 : (dt);                                                 \
        uint64_t cnt_ = 1;                                                                        \
        for (int i_ = 0; i_ < (nd); i_++) cnt_ *= (uint64_t)ne_[i_];                              \
        total += cnt_ * (d_ == EL_DTYPE_F32 ? 4 : 2);                                             \
        failed |= el_gguf_add_tensor(w, name, d_, nd, ne_, NULL) != EL_OK;                        \
    } while (0)
    VT("v.patch_embd.weight", dtype, 4, P, P, 3, H);
    if (v->siglip) VT("v.patch_embd.bias", dtype, 1, H);
    else VT("v.class_embd", dtype, 1, H);
    VT("v.position_embd.weight", EL_DTYPE_F32, 2, H, side * side + !v->siglip);
    if (!v->siglip) {
        VT("v.pre_ln.weight", dtype, 1, H);
        VT("v.pre_ln.bias", dtype, 1, H);
    }
    for (int l = 0; l < v->blocks; l++) {
        char n[64];
        const char *fc1 = v->old_names ? "ffn_down" : "ffn_up", *fc2 = v->old_names ? "ffn_up" : "ffn_down";
#define BT(part, nd, ...)                                  \
    do {                                                   \
        snprintf(n, sizeof n, "v.blk.%d.%s", l, part);     \
        VT(n, dtype, nd, __VA_ARGS__);                     \
    } while (0)
        static const char *attn[] = {"attn_q", "attn_k", "attn_v", "attn_out"};
        for (int i = 0; i < 4; i++) {
            char part[32];
            snprintf(part, sizeof part, "%s.weight", attn[i]);
            BT(part, 2, H, H);
            snprintf(part, sizeof part, "%s.bias", attn[i]);
            BT(part, 1, H);
        }
        BT("ln1.weight", 1, H);
        BT("ln1.bias", 1, H);
        BT("ln2.weight", 1, H);
        BT("ln2.bias", 1, H);
        char part[32];
        snprintf(part, sizeof part, "%s.weight", fc1);
        BT(part, 2, H, F);
        snprintf(part, sizeof part, "%s.bias", fc1);
        BT(part, 1, F);
        snprintf(part, sizeof part, "%s.weight", fc2);
        BT(part, 2, F, H);
        snprintf(part, sizeof part, "%s.bias", fc2);
        BT(part, 1, H);
#undef BT
    }
    if (v->siglip) {
        VT("v.post_ln.weight", dtype, 1, H);
        VT("v.post_ln.bias", dtype, 1, H);
    }
    VT("mm.0.weight", dtype, 2, H, v->proj_hidden);
    VT("mm.0.bias", dtype, 1, v->proj_hidden);
    VT("mm.2.weight", dtype, 2, v->proj_hidden, v->out_dim);
    VT("mm.2.bias", dtype, 1, v->out_dim);
#undef VT
    int rc = 1;
    if (failed) {
        el_err(err, EL_ERR_NOMEM, "%s: cannot add tensors", path);
    } else {
        vit_ctx vc = {seed, dtype, v};
        el_progress prog;
        el_progress_begin(&prog, stderr, "synth", total, "bytes");
        if (!el_gguf_write(w, path, vit_fill, &vc, &prog, err)) {
            el_progress_end(&prog, total, path);
            rc = 0;
        }
    }
    el_gguf_writer_free(w);
    return rc;
}

int cmd_synth(int argc, char **argv) {
    cli c;
    cli_init(&c, "synth", argc, argv);
    int dim = 0, layers = 0, heads = 0, kv_heads = 0, ff = 0, vocab = 0, ctx = 2048;
    const char *out = NULL, *type = "f32", *family = "llama", *chat = NULL, *a;
    const char *mmproj = NULL, *vit_name = "tiny", *style = "clip", *fit = "pad";
    int v_image = 0, v_patch = 0, v_width = 0, v_blocks = 0, v_heads = 0, v_ff = 0, v_proj = 0, v_feat = -1;
    int old_names = 0;
    uint64_t seed = 1;
    int opt;
    while ((a = cli_next(&c, &opt))) {
        if (cli_is(a, "-h", "--help")) { fputs(usage, stdout); return 0; }
        else if (cli_is(a, NULL, "--dim")) cli_int(&c, a, 2, 1 << 16, &dim);
        else if (cli_is(a, NULL, "--layers")) cli_int(&c, a, 1, 1024, &layers);
        else if (cli_is(a, NULL, "--heads")) cli_int(&c, a, 1, 1024, &heads);
        else if (cli_is(a, NULL, "--kv-heads")) cli_int(&c, a, 1, 1024, &kv_heads);
        else if (cli_is(a, NULL, "--ff")) cli_int(&c, a, 1, 1 << 18, &ff);
        else if (cli_is(a, NULL, "--vocab")) cli_int(&c, a, 1, 1 << 20, &vocab);
        else if (cli_is(a, NULL, "--ctx")) cli_int(&c, a, 1, 1 << 20, &ctx);
        else if (cli_is(a, NULL, "--type")) type = cli_str(&c, a);
        else if (cli_is(a, NULL, "--seed")) cli_u64(&c, a, &seed);
        else if (cli_is(a, NULL, "--family")) family = cli_str(&c, a);
        else if (cli_is(a, NULL, "--chat-template")) chat = cli_str(&c, a);
        else if (cli_is(a, "-o", "--output")) out = cli_str(&c, a);
        else if (cli_is(a, NULL, "--mmproj")) mmproj = cli_str(&c, a);
        else if (cli_is(a, NULL, "--vit")) vit_name = cli_str(&c, a);
        else if (cli_is(a, NULL, "--style")) style = cli_str(&c, a);
        else if (cli_is(a, NULL, "--fit")) fit = cli_str(&c, a);
        else if (cli_is(a, NULL, "--image-size")) cli_int(&c, a, 1, 4096, &v_image);
        else if (cli_is(a, NULL, "--patch")) cli_int(&c, a, 1, 4096, &v_patch);
        else if (cli_is(a, NULL, "--vit-dim")) cli_int(&c, a, 1, 1 << 16, &v_width);
        else if (cli_is(a, NULL, "--vit-blocks")) cli_int(&c, a, 1, 1024, &v_blocks);
        else if (cli_is(a, NULL, "--vit-heads")) cli_int(&c, a, 1, 1024, &v_heads);
        else if (cli_is(a, NULL, "--vit-ff")) cli_int(&c, a, 1, 1 << 18, &v_ff);
        else if (cli_is(a, NULL, "--proj-hidden")) cli_int(&c, a, 1, 1 << 18, &v_proj);
        else if (cli_is(a, NULL, "--feature-layer")) cli_int(&c, a, 0, 1024, &v_feat);
        else if (cli_is(a, NULL, "--old-names")) old_names = 1;
        else return cli_unknown(&c, a);
    }
    if (c.failed) return 2;
    if (!out && !mmproj) return cli_fail(&c, "-o OUT.gguf (or --mmproj PROJ.gguf) is required");
    int dtype0 = !strcmp(type, "f32") ? EL_DTYPE_F32 : !strcmp(type, "f16") ? EL_DTYPE_F16
               : !strcmp(type, "bf16") ? EL_DTYPE_BF16 : -1;
    if (dtype0 < 0) return cli_fail(&c, "--type '%s' is not one of f32, f16, bf16", type);
    if (out) {
        if (!dim || !layers || !heads || !ff || !vocab)
            return cli_fail(&c, "--dim, --layers, --heads, --ff and --vocab are required");
        if (!kv_heads) kv_heads = heads;
        if (dim % heads || (dim / heads) % 2) return cli_fail(&c, "--dim %d must be a multiple of 2 x --heads %d", dim, heads);
        if (heads % kv_heads) return cli_fail(&c, "--kv-heads %d must divide --heads %d", kv_heads, heads);
    }
    int dtype = dtype0;
    int qwen2 = !strcmp(family, "qwen2"), llama3 = !strcmp(family, "llama3");
    if (!qwen2 && !llama3 && strcmp(family, "llama"))
        return cli_fail(&c, "--family '%s' is not one of llama, qwen2, llama3", family);
    const synth_template *tmpl = NULL;
    for (size_t i = 0; chat && i < sizeof templates / sizeof templates[0]; i++)
        if (!strcmp(chat, templates[i].name)) tmpl = &templates[i];
    if (chat && !tmpl) return cli_fail(&c, "--chat-template '%s' is not one of chatml, llama3, llama2", chat);
    if (chat && vocab < 272) return cli_fail(&c, "--chat-template needs --vocab 272 or more (a vocabulary to put markers in)");
    if (mmproj) {
        vit_shape v = {32, 8, 64, 2, 4, 128, 0, dim, 0, v_feat, old_names, 0};
        if (!strcmp(vit_name, "vit-b16")) v = (vit_shape){224, 16, 768, 12, 12, 3072, 0, dim, 0, v_feat, old_names, 0};
        else if (!strcmp(vit_name, "vit-l14-336"))
            v = (vit_shape){336, 14, 1024, 24, 16, 4096, 0, dim, 0, v_feat, old_names, 0};
        else if (strcmp(vit_name, "tiny")) return cli_fail(&c, "--vit '%s' is not one of tiny, vit-b16, vit-l14-336", vit_name);
        if (v_image) v.image_size = v_image;
        if (v_patch) v.patch = v_patch;
        if (v_width) v.width = v_width;
        if (v_blocks) v.blocks = v_blocks;
        if (v_heads) v.heads = v_heads;
        if (v_ff) v.ff = v_ff;
        v.proj_hidden = v_proj ? v_proj : dim;
        if (strcmp(style, "clip") && strcmp(style, "siglip")) return cli_fail(&c, "--style '%s' is not clip or siglip", style);
        v.siglip = !strcmp(style, "siglip");
        if (strcmp(fit, "pad") && strcmp(fit, "crop")) return cli_fail(&c, "--fit '%s' is not pad or crop", fit);
        v.crop = !strcmp(fit, "crop");
        if (!dim) return cli_fail(&c, "--dim (the projector's output width) is required with --mmproj");
        if (v.image_size % v.patch) return cli_fail(&c, "--image-size %d is not a multiple of --patch %d", v.image_size, v.patch);
        if (v.width % v.heads) return cli_fail(&c, "--vit-dim %d is not a multiple of --vit-heads %d", v.width, v.heads);
        if (v.feature_layer > v.blocks) return cli_fail(&c, "--feature-layer %d exceeds --vit-blocks %d", v.feature_layer, v.blocks);
        el_error perr = {0};
        if (write_mmproj(mmproj, &v, dtype0, seed, &perr)) return cli_error(&perr);
        if (!out) return 0;
    }
    const char *arch = qwen2 ? "qwen2" : "llama";
    float theta = qwen2 ? 1000000.0f : llama3 ? 500000.0f : 10000.0f;

    int hd = dim / heads, kv = kv_heads * hd, rc = 1;
    el_error err = {0};
    el_gguf_writer *w = el_gguf_writer_new();
    uint64_t *lens = NULL;
    float *scores = NULL;
    int32_t *types = NULL;
    char **pieces = NULL;
    if (!w) { el_err(&err, EL_ERR_NOMEM, "out of memory"); goto done; }
    char key[96];
#define K(suffix) (snprintf(key, sizeof key, "%s." suffix, arch), key)
    el_gguf_add_str(w, "general.architecture", arch);
    el_gguf_add_str(w, "general.name", "edgellm-synth");
    el_gguf_add_u32(w, "general.file_type", dtype == EL_DTYPE_F32 ? 0 : dtype == EL_DTYPE_F16 ? 1 : 32);
    el_gguf_add_u32(w, K("context_length"), (uint32_t)ctx);
    el_gguf_add_u32(w, K("embedding_length"), (uint32_t)dim);
    el_gguf_add_u32(w, K("block_count"), (uint32_t)layers);
    el_gguf_add_u32(w, K("feed_forward_length"), (uint32_t)ff);
    el_gguf_add_u32(w, K("rope.dimension_count"), (uint32_t)hd);
    el_gguf_add_u32(w, K("attention.head_count"), (uint32_t)heads);
    el_gguf_add_u32(w, K("attention.head_count_kv"), (uint32_t)kv_heads);
    el_gguf_add_f32(w, K("attention.layer_norm_rms_epsilon"), 1e-5f);
    el_gguf_add_f32(w, K("rope.freq_base"), theta);
    el_gguf_add_u32(w, K("vocab_size"), (uint32_t)vocab);
#undef K
    if (vocab >= 262) {
        pieces = make_vocab(vocab, &lens, &scores, &types);
        if (!pieces) { el_err(&err, EL_ERR_NOMEM, "out of memory for the vocabulary"); goto done; }
        for (int k = 0, at = vocab - 3; tmpl && k < 3; k++, at++) {  // the template's markers: control tokens
            if (!tmpl->markers[k]) continue;
            free(pieces[at]);
            if (!(pieces[at] = strdup(tmpl->markers[k]))) { el_err(&err, EL_ERR_NOMEM, "out of memory"); goto done; }
            lens[at] = strlen(pieces[at]);
            types[at] = 3;
        }
        if (tmpl) el_gguf_add_str(w, "tokenizer.chat_template", tmpl->jinja);
        el_gguf_add_str(w, "tokenizer.ggml.model", "llama");
        el_gguf_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)pieces, lens, (uint64_t)vocab);
        el_gguf_add_arr(w, "tokenizer.ggml.scores", EL_GGUF_FLOAT32, scores, (uint64_t)vocab);
        el_gguf_add_arr(w, "tokenizer.ggml.token_type", EL_GGUF_INT32, types, (uint64_t)vocab);
        el_gguf_add_u32(w, "tokenizer.ggml.bos_token_id", 1);
        el_gguf_add_u32(w, "tokenizer.ggml.eos_token_id", 2);
        el_gguf_add_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    }
    int64_t ne[2];
    uint64_t total = 0;
#define T(name, dt, a0, a1) \
    do { ne[0] = (a0); ne[1] = (a1); \
         if (el_gguf_add_tensor(w, name, (a1) ? (dt) : EL_DTYPE_F32, (a1) ? 2 : 1, ne, NULL)) goto add_failed; \
         total += (uint64_t)(a0) * (uint64_t)((a1) ? (a1) : 1) * ((a1) && (dt) != EL_DTYPE_F32 ? 2 : 4); } while (0)
    T("token_embd.weight", dtype, dim, vocab);
    for (int l = 0; l < layers; l++) {
        char n[64];
#define L(part, a0, a1) snprintf(n, sizeof n, "blk.%d." part ".weight", l); T(n, dtype, a0, a1)
        L("attn_norm", dim, 0);
        L("attn_q", dim, dim);
        L("attn_k", dim, kv);
        L("attn_v", dim, kv);
        if (qwen2) {
#define B(part, a0) snprintf(n, sizeof n, "blk.%d." part ".bias", l); T(n, EL_DTYPE_F32, a0, 0)
            B("attn_q", dim);
            B("attn_k", kv);
            B("attn_v", kv);
#undef B
        }
        L("attn_output", dim, dim);
        L("ffn_norm", dim, 0);
        L("ffn_gate", dim, ff);
        L("ffn_down", ff, dim);
        L("ffn_up", dim, ff);
#undef L
    }
    T("output_norm.weight", dtype, dim, 0);
    T("output.weight", dtype, dim, vocab);
    if (llama3) T("rope_freqs.weight", EL_DTYPE_F32, hd / 2, 0);
#undef T
    synth_ctx sc = {seed, dtype, dim, ff, hd, theta};
    el_progress prog;
    el_progress_begin(&prog, stderr, "synth", total, "bytes");
    if (el_gguf_write(w, out, fill, &sc, &prog, &err)) goto done;
    el_progress_end(&prog, total, out);
    rc = 0;
    goto done;
add_failed:
    el_err(&err, EL_ERR_NOMEM, "%s: cannot add tensors", out);
done:
    if (rc) cli_error(&err);
    if (pieces)
        for (int i = 0; i < vocab; i++) free(pieces[i]);
    free(pieces);
    free(lens);
    free(scores);
    free(types);
    el_gguf_writer_free(w);
    return rc;
}
