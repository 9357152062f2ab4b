// edgellm embed-image: the projected embeddings of images, as the language
// model would receive them, written as raw f32 (for tests and other tools).
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "edgellm/vision.h"

static const char *usage =
    "usage: edgellm embed-image --mmproj PROJ.gguf --image FILE [--image FILE ...] -o OUT.f32\n"
    "                           [--pixels OUT.f32] [-t THREADS] [--stats]\n"
    "\n"
    "Decodes each image (PNG or JPEG), preprocesses it as the projector file says\n"
    "(size, mean/std, pad or crop) and runs the vision encoder and projector. OUT\n"
    "holds little-endian f32 rows: for each image in order, one row per patch of the\n"
    "projector's output width (the language model's embedding width).\n"
    "\n"
    "  --mmproj FILE     LLaVA-style projector GGUF (clip.* keys, v.* and mm.* tensors)\n"
    "  --image FILE      PNG or JPEG; repeatable\n"
    "  -o, --output FILE the embeddings\n"
    "  --pixels FILE     also write each image's preprocessed input, f32 [3][N][N]\n"
    "  -t, --threads N   threads (default: all CPUs)\n"
    "  --stats           encode time and throughput on stderr\n"
    "\n"
    "example: edgellm embed-image --mmproj mmproj.gguf --image cat.jpg -o cat.f32\n";

#define MAX_IMAGES 64

static el_status write_all(FILE *f, const char *path, const float *p, size_t n, el_error *err) {
    if (fwrite(p, sizeof(float), n, f) != n) return el_err(err, EL_ERR_IO, "%s: write failed", path);
    return EL_OK;
}

int cmd_embed_image(int argc, char **argv) {
    cli c;
    cli_init(&c, "embed-image", argc, argv);
    const char *proj = NULL, *out = NULL, *pix_out = NULL, *images[MAX_IMAGES], *a;
    int n_images = 0, threads = 0, stats = 0, opt;
    while ((a = cli_next(&c, &opt))) {
        if (cli_is(a, "-h", "--help")) { fputs(usage, stdout); return 0; }
        else if (cli_is(a, NULL, "--mmproj")) proj = cli_str(&c, a);
        else if (cli_is(a, NULL, "--image")) {
            const char *v = cli_str(&c, a);
            if (v && n_images == MAX_IMAGES) return cli_fail(&c, "at most %d --image files", MAX_IMAGES);
            if (v) images[n_images++] = v;
        } else if (cli_is(a, "-o", "--output")) out = cli_str(&c, a);
        else if (cli_is(a, NULL, "--pixels")) pix_out = cli_str(&c, a);
        else if (cli_is(a, "-t", "--threads")) cli_int(&c, a, 1, 256, &threads);
        else if (cli_is(a, NULL, "--stats")) stats = 1;
        else return cli_unknown(&c, a);
    }
    if (c.failed) return 2;
    if (!proj) return cli_fail(&c, "--mmproj PROJ.gguf is required");
    if (!n_images) return cli_fail(&c, "at least one --image FILE is required");
    if (!out) return cli_fail(&c, "-o OUT.f32 is required");

    el_error err = {0};
    el_vision *v = NULL;
    el_pool *pool = NULL;
    float *pixels = NULL, *emb = NULL;
    FILE *f = NULL, *fp = NULL;
    int rc = 1;
    el_image img = {0};
    if (el_vision_open(proj, &v, &err)) goto done;
    const el_vision_hparams *h = el_vision_hp(v);
    size_t npix = (size_t)3 * h->image_size * h->image_size, nemb = (size_t)h->n_patches * h->out_dim;
    pool = el_pool_new(threads);
    pixels = malloc(npix * sizeof(float));
    emb = malloc(nemb * sizeof(float));
    if (!pool || !pixels || !emb) {
        el_err(&err, EL_ERR_NOMEM, "out of memory");
        goto done;
    }
    // every image is decoded before anything is written: a bad one fails the
    // command without leaving a partial output
    for (int i = 0; i < n_images; i++) {
        if (el_image_load(images[i], &img, &err)) goto done;
        el_image_free(&img);
    }
    f = fopen(out, "wb");
    if (!f) {
        el_err(&err, EL_ERR_IO, "%s: cannot create", out);
        goto done;
    }
    if (pix_out && !(fp = fopen(pix_out, "wb"))) {
        el_err(&err, EL_ERR_IO, "%s: cannot create", pix_out);
        goto done;
    }
    for (int i = 0; i < n_images; i++) {
        if (el_image_load(images[i], &img, &err) || el_vision_preprocess(h, &img, pixels, &err)) goto done;
        double t0 = el_time_s();
        if (el_vision_encode(v, pool, pixels, emb, &err)) goto done;
        double dt = el_time_s() - t0;
        if (stats)
            fprintf(stderr, "embed-image: %s (%d x %d) -> %d x %d in %.3f s, %.1f GFLOP/s\n", images[i], img.w, img.h,
                    h->n_patches, h->out_dim, dt, el_vision_flops(v) / dt * 1e-9);
        el_image_free(&img);
        if (write_all(f, out, emb, nemb, &err)) goto done;
        if (fp && write_all(fp, pix_out, pixels, npix, &err)) goto done;
    }
    if (fclose(f)) {
        f = NULL;
        el_err(&err, EL_ERR_IO, "%s: write failed", out);
        goto done;
    }
    f = NULL;
    rc = 0;
done:
    if (rc) cli_error(&err);
    if (f) fclose(f);
    if (fp) fclose(fp);
    el_image_free(&img);
    free(pixels);
    free(emb);
    el_pool_free(pool);
    el_vision_close(v);
    return rc;
}
