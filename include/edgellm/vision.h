// Images on the device: decoding (PNG and JPEG through stb_image, with every
// header checked before a pixel is decoded), the preprocessing a projector
// file's metadata asks for, and the vision encoder of LLaVA-style projector
// GGUF files (a ViT with or without a class token, then the two-layer MLP
// projector) on the project's kernels and thread pool. The encoder's output
// rows have the language model's embedding width: they enter a stage as input
// rows in place of token embeddings (el_pipeline_forward_embd), so the image
// and its embeddings stay on the device. docs/vision.md has the file format
// and the reference behaviour followed here.
#ifndef EDGELLM_VISION_H
#define EDGELLM_VISION_H

#include <stddef.h>
#include <stdint.h>

#include "edgellm/core.h"
#include "edgellm/gguf.h"
#include "edgellm/tensor.h"
#include "edgellm/tokenize.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------- images

// Limits checked against the header before anything is decoded: a small file
// that declares a huge image (a decompression bomb) is refused unread.
#define EL_IMAGE_MAX_SIDE 16384
#define EL_IMAGE_MAX_PIXELS (64u << 20)     // 64 Mpixel (192 MiB of RGB)
#define EL_IMAGE_MAX_FILE (256u << 20)      // bytes of an encoded image

typedef struct {
    int w, h;
    uint8_t *rgb;  // [h][w][3], owned
} el_image;

// Decodes a PNG or JPEG held in memory (name is for messages). Anything else,
// a truncated or corrupt file, or one whose header declares more than the
// limits above is refused with one line naming it.
el_status el_image_decode(const void *data, size_t len, const char *name, el_image *out, el_error *err);
// The same with a lower pixel limit (tests and fuzzing keep decodes small).
el_status el_image_decode_max(const void *data, size_t len, const char *name, uint64_t max_pixels, el_image *out,
                              el_error *err);
// Reads path (at most EL_IMAGE_MAX_FILE bytes) and decodes it.
el_status el_image_load(const char *path, el_image *out, el_error *err);
void el_image_free(el_image *img);

// ---------------------------------------------------------------- the encoder

typedef enum { EL_VISION_PAD = 0, EL_VISION_CROP = 1 } el_vision_fit;

typedef struct {
    int image_size;  // input side N (the image becomes N x N)
    int patch_size;  // P; the ViT sees (N/P)^2 patches
    int hidden;      // ViT width
    int ff;          // ViT MLP width
    int heads;
    int n_blocks;    // clip.vision.block_count
    int n_run;       // blocks that run: the feature layer (see docs/vision.md)
    float eps;       // layer norm epsilon
    int has_class;   // a class token (CLIP); none: SigLIP-style
    int has_patch_bias, has_pre_ln, has_post_ln;
    int gelu;          // 1: GELU (tanh form); 0: quick GELU x*sigmoid(1.702x)
    int ffn_swapped;   // the file names the MLP's first layer ffn_down (older exporters)
    float mean[3], std[3];
    el_vision_fit fit;  // non-square images: pad to a square (LLaVA) or resize and center-crop
    int proj_hidden;    // mm.0 rows
    int out_dim;        // mm.2 rows: the language model's embedding width
    int n_patches;      // rows an image becomes
    int n_pos;          // ViT sequence length (n_patches + class token)
} el_vision_hparams;

typedef struct el_vision el_vision;

// Opens a projector file (general.architecture "clip" with a vision tower and
// projector type "mlp"), checks every key and tensor shape, and binds the
// tensors of the blocks that run. Quantized matrices are packed for this
// CPU's kernels unless no_pack.
el_status el_vision_open(const char *path, el_vision **out, el_error *err);
// The same over a buffer the caller keeps (fuzzing, tests); nothing is packed.
el_status el_vision_open_memory(const void *data, size_t size, const char *name, el_vision **out, el_error *err);
void el_vision_close(el_vision *v);
const el_vision_hparams *el_vision_hp(const el_vision *v);
const char *el_vision_path(const el_vision *v);
// The dtype most of the ViT's matrices are stored in (for messages).
int el_vision_dtype(const el_vision *v);
// The kernel level of the encoder's products (default: the best this CPU
// has); benchmarks compare levels: below AVX-512 f16/f32 weights go through
// OpenBLAS.
void el_vision_set_isa(el_vision *v, el_isa isa);
// Floating-point operations of one encode (2 per multiply-add of the matrix
// products and the attention), for throughput figures.
double el_vision_flops(const el_vision *v);

// Refuses a projector whose output width is not the language model's
// embedding width (llm_dim), naming both files.
el_status el_vision_check_dim(const el_vision *v, int llm_dim, const char *llm_path, el_error *err);

// pixels[3][N][N] (planar, normalized) from an image, as the hparams say:
// pad to a square with the mean colour (or resize the short side to N and
// center-crop), resize to N x N (separable bicubic, a = -0.5, widened when
// shrinking; rounded to 8 bits), then (v/255 - mean) / std per channel.
el_status el_vision_preprocess(const el_vision_hparams *hp, const el_image *img, float *pixels, el_error *err);

// out[n_patches][out_dim] = projector(ViT(pixels)). Uses the pool for every
// product; not to be called from two threads at once on one el_vision.
el_status el_vision_encode(el_vision *v, el_pool *pool, const float *pixels, float *out, el_error *err);

// ---------------------------------------------------------------- prompts with images

// A prompt cut into runs of tokens and images: item i is an image when
// image[i] >= 0 (the index among the caller's images), else the tokens
// ids[start[i] .. start[i] + len[i]).
typedef struct {
    int n_items;
    int *image, *start, *len;
    int *ids;
    int n_ids;
} el_mm_prompt;

// Splits text at each occurrence of marker and encodes the pieces (flags and
// the plain spans, e.g. a chat's message contents, as
// el_tokenizer_encode_spans; BOS only before the first piece). n_images must
// equal the number of markers; with no marker in the text every image comes
// first (after BOS, if any). Errors name the counts.
el_status el_mm_prompt_encode(const el_tokenizer *tok, const char *text, size_t len, const char *marker,
                              unsigned flags, const el_text_span *plain, int n_plain, int n_images, el_mm_prompt *out,
                              el_error *err);
void el_mm_prompt_free(el_mm_prompt *p);
// Positions the prompt takes when each image is n_rows rows.
int el_mm_prompt_positions(const el_mm_prompt *p, int n_rows);

#ifdef __cplusplus
}
#endif
#endif
