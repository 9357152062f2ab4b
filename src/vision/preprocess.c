// An image to the encoder's input: fit it to a square (pad with the mean
// colour, or resize the short side and center-crop), resample to N x N with a
// separable bicubic filter widened when shrinking (so large photos are
// averaged, not aliased), round to 8 bits, normalise per channel. The filter
// sums run in double in a fixed order, so an independent implementation that
// follows docs/vision.md gets the same bytes.
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

// The image as the resampler sees it: sw x sh pixels, the picture at (ox, oy)
// and bg around it (pad mode), or the picture alone (ox = oy = 0).
typedef struct {
    const el_image *img;
    int sw, sh, ox, oy;
    uint8_t bg[3];
} source;

static double src_px(const source *s, int x, int y, int c) {
    x -= s->ox;
    y -= s->oy;
    if (x < 0 || y < 0 || x >= s->img->w || y >= s->img->h) return s->bg[c];
    return s->img->rgb[((size_t)y * s->img->w + x) * 3 + c];
}

el_status el_vision_preprocess(const el_vision_hparams *hp, const el_image *img, float *pixels, el_error *err) {
    int N = hp->image_size, w = img->w, h = img->h;
    if (w <= 0 || h <= 0 || !img->rgb) return el_err(err, EL_ERR_ARG, "empty image");
    source s = {img, w, h, 0, 0, {0, 0, 0}};
    int tw, th, cx = 0, cy = 0;  // the resampled size and the window of it we keep
    if (hp->fit == EL_VISION_PAD) {
        int side = w > h ? w : h;
        s.sw = s.sh = side;
        s.ox = (side - w) / 2;
        s.oy = (side - h) / 2;
        for (int c = 0; c < 3; c++) {
            double v = (double)hp->mean[c] * 255.0;
            s.bg[c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : (int)v);
        }
        tw = th = N;
    } else {
        // the short side becomes N, the long one in proportion; then the middle
        if (w <= h) {
            tw = N;
            th = (int)((double)N * h / w);
        } else {
            th = N;
            tw = (int)((double)N * w / h);
        }
        if (tw < N) tw = N;
        if (th < N) th = N;
        cx = (tw - N) / 2;
        cy = (th - N) / 2;
    }
    axis ax = {0}, ay = {0};
    float *tmp = NULL;  // [sh][N][3]: rows resampled horizontally
    el_status st = EL_OK;
    if (axis_make(&ax, s.sw, tw, cx, N) || axis_make(&ay, s.sh, th, cy, N) ||
        !(tmp = malloc((size_t)s.sh * N * 3 * sizeof(float)))) {
        st = el_err(err, EL_ERR_NOMEM, "out of memory resizing a %d x %d image", w, h);
        goto done;
    }
    for (int y = 0; y < s.sh; y++)
        for (int o = 0; o < N; o++) {
            const double *k = ax.w + (size_t)o * ax.ksize;
            for (int c = 0; c < 3; c++) {
                double acc = 0;
                for (int t = 0; t < ax.count[o]; t++) acc += k[t] * src_px(&s, ax.first[o] + t, y, c);
                tmp[((size_t)y * N + o) * 3 + c] = (float)acc;
            }
        }
    for (int o = 0; o < N; o++) {
        const double *k = ay.w + (size_t)o * ay.ksize;
        for (int x = 0; x < N; x++)
            for (int c = 0; c < 3; c++) {
                double acc = 0;
                for (int t = 0; t < ay.count[o]; t++) acc += k[t] * (double)tmp[((size_t)(ay.first[o] + t) * N + x) * 3 + c];
                double r = floor(acc + 0.5);
                int u = r < 0 ? 0 : r > 255 ? 255 : (int)r;
                pixels[((size_t)c * N + o) * N + x] = ((float)u / 255.0f - hp->mean[c]) / hp->std[c];
            }
    }
done:
    free(tmp);
    axis_free(&ax);
    axis_free(&ay);
    return st;
}
