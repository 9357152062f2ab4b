// An image to the encoder's input: resample it with a separable bicubic
// filter widened when shrinking (so large photos are averaged, not aliased)
// either to fit N x N keeping its shape, centred on a square of the mean
// colour, or with its short side to N and the middle N x N kept; round to 8
// bits; normalise per channel. The filter sums run in double in a fixed
// order, so an independent implementation that follows docs/vision.md gets
// the same bytes. The work is proportional to the picture's own pixels.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/vision.h"

// Keys' cubic convolution kernel with a = -0.5 (the "bicubic" of PIL and of
// the CLIP image processors), support [-2, 2].
static double cubic(double x) {
    const double a = -0.5;
    if (x < 0) x = -x;
    if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
    return 0;
}

// The taps of one axis: output o (of out_size, counting from off) reads
// count[o] inputs from first[o] with weights w[o * ksize ..].
typedef struct {
    int *first, *count;
    double *w;
    int ksize;
} axis;

static void axis_free(axis *a) {
    free(a->first);
    free(a->count);
    free(a->w);
}

static int axis_make(axis *a, int in_size, int out_size, int off, int n) {
    double scale = (double)in_size / out_size, fs = scale > 1 ? scale : 1, support = 2.0 * fs, ss = 1.0 / fs;
    a->ksize = (int)ceil(support) * 2 + 2;
    a->first = malloc((size_t)n * sizeof(int));
    a->count = malloc((size_t)n * sizeof(int));
    a->w = calloc((size_t)n * (size_t)a->ksize, sizeof(double));
    if (!a->first || !a->count || !a->w) return -1;
    for (int i = 0; i < n; i++) {
        double center = (i + off + 0.5) * scale;
        int lo = (int)(center - support + 0.5), hi = (int)(center + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in_size) hi = in_size;
        int cnt = hi - lo;
        if (cnt > a->ksize) cnt = a->ksize;
        double *w = a->w + (size_t)i * a->ksize, total = 0;
        for (int x = 0; x < cnt; x++) {
            w[x] = cubic((x + lo - center + 0.5) * ss);
            total += w[x];
        }
        if (total != 0)
            for (int x = 0; x < cnt; x++) w[x] /= total;
        a->first[i] = lo;
        a->count[i] = cnt;
    }
    return 0;
}

// Resamples the picture to tw x th and keeps the window [cx, cx + nw) x
// [cy, cy + nh) of it in out[nh][nw][3] (8-bit, rounded): horizontal pass
// into f32 rows, then vertical, both summing taps in order in double.
static el_status resample(const el_image *img, int tw, int th, int cx, int cy, int nw, int nh, uint8_t *out,
                          el_error *err) {
    axis ax = {0}, ay = {0};
    float *tmp = NULL;  // [h][nw][3]: rows resampled horizontally
    el_status st = EL_OK;
    if (axis_make(&ax, img->w, tw, cx, nw) || axis_make(&ay, img->h, th, cy, nh) ||
        !(tmp = malloc((size_t)img->h * nw * 3 * sizeof(float)))) {
        st = el_err(err, EL_ERR_NOMEM, "out of memory resizing a %d x %d image", img->w, img->h);
        goto done;
    }
    for (int y = 0; y < img->h; y++) {
        const uint8_t *row = img->rgb + (size_t)y * img->w * 3;
        for (int o = 0; o < nw; o++) {
            const double *k = ax.w + (size_t)o * ax.ksize;
            const uint8_t *px = row + (size_t)ax.first[o] * 3;
            for (int c = 0; c < 3; c++) {
                double acc = 0;
                for (int t = 0; t < ax.count[o]; t++) acc += k[t] * px[t * 3 + c];
                tmp[((size_t)y * nw + o) * 3 + c] = (float)acc;
            }
        }
    }
    for (int o = 0; o < nh; o++) {
        const double *k = ay.w + (size_t)o * ay.ksize;
        for (int x = 0; x < nw; x++)
            for (int c = 0; c < 3; c++) {
                double acc = 0;
                for (int t = 0; t < ay.count[o]; t++) acc += k[t] * (double)tmp[((size_t)(ay.first[o] + t) * nw + x) * 3 + c];
                double r = floor(acc + 0.5);
                out[((size_t)o * nw + x) * 3 + c] = (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : (int)r);
            }
    }
done:
    free(tmp);
    axis_free(&ax);
    axis_free(&ay);
    return st;
}

el_status el_vision_preprocess(const el_vision_hparams *hp, const el_image *img, float *pixels, el_error *err) {
    int N = hp->image_size, w = img->w, h = img->h;
    if (w <= 0 || h <= 0 || !img->rgb) return el_err(err, EL_ERR_ARG, "empty image");
    uint8_t *canvas = malloc((size_t)N * N * 3);
    if (!canvas) return el_err(err, EL_ERR_NOMEM, "out of memory for a %d x %d image", N, N);
    el_status st;
    if (hp->fit == EL_VISION_PAD) {
        // the picture shrinks (or grows) to fit N x N, keeping its shape, and
        // sits in the middle of a square of the mean colour
        double scale = (double)N / w < (double)N / h ? (double)N / w : (double)N / h;
        int nw = (int)ceil(w * scale), nh = (int)ceil(h * scale);
        if (nw > N) nw = N;
        if (nh > N) nh = N;
        if (nw < 1) nw = 1;
        if (nh < 1) nh = 1;
        uint8_t bg[3];
        for (int c = 0; c < 3; c++) {
            double v = (double)hp->mean[c] * 255.0;
            bg[c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : (int)v);
        }
        for (size_t i = 0; i < (size_t)N * N; i++) memcpy(canvas + i * 3, bg, 3);
        uint8_t *pic = malloc((size_t)nw * nh * 3);
        if (!pic) {
            free(canvas);
            return el_err(err, EL_ERR_NOMEM, "out of memory for a %d x %d image", nw, nh);
        }
        st = resample(img, nw, nh, 0, 0, nw, nh, pic, err);
        int ox = (N - nw) / 2, oy = (N - nh) / 2;
        for (int y = 0; y < nh && !st; y++) memcpy(canvas + ((size_t)(oy + y) * N + ox) * 3, pic + (size_t)y * nw * 3, (size_t)nw * 3);
        free(pic);
    } else {
        // the short side becomes N, the long one in proportion; the middle N x N is kept
        int tw, th;
        if (w <= h) {
            tw = N;
            th = (int)((double)N * h / w);
        } else {
            th = N;
            tw = (int)((double)N * w / h);
        }
        if (tw < N) tw = N;
        if (th < N) th = N;
        st = resample(img, tw, th, (tw - N) / 2, (th - N) / 2, N, N, canvas, err);
    }
    for (int y = 0; y < N && !st; y++)
        for (int x = 0; x < N; x++)
            for (int c = 0; c < 3; c++)
                pixels[((size_t)c * N + y) * N + x] =
                    ((float)canvas[((size_t)y * N + x) * 3 + c] / 255.0f - hp->mean[c]) / hp->std[c];
    free(canvas);
    return st;
}
