// libFuzzer target for the image path: a PNG or JPEG walked, decoded by
// stb_image and preprocessed (pad and crop) for a small encoder. Every input
// must be refused with one line naming it, or give pixels whose normalised
// values are finite and inside what the mean and std allow.
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/vision.h"

static volatile unsigned sink;  // keeps the touched bytes from being optimised away

#define CHECK(c) \
    do {         \
        if (!(c)) abort(); \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    el_image img;
    el_error err;
    // a 1 Mpixel cap keeps each run fast; the full-size cap is the same code
    if (el_image_decode_max(data, size, "fuzz.img", 1u << 20, &img, &err)) {
        CHECK(!img.rgb && !strncmp(err.msg, "fuzz.img: ", 10) && !strchr(err.msg, '\n'));
        return 0;
    }
    CHECK(img.rgb && img.w > 0 && img.h > 0 && (uint64_t)img.w * img.h <= (1u << 20));
    for (size_t i = 0; i < (size_t)img.w * img.h * 3; i += 61) sink += img.rgb[i];
    el_vision_hparams hp = {0};
    hp.image_size = 12;
    for (int c = 0; c < 3; c++) hp.mean[c] = 0.5f, hp.std[c] = 0.25f;
    float px[3 * 12 * 12];
    for (int fit = 0; fit < 2; fit++) {
        hp.fit = fit ? EL_VISION_CROP : EL_VISION_PAD;
        CHECK(el_vision_preprocess(&hp, &img, px, &err) == EL_OK);
        for (int i = 0; i < 3 * 12 * 12; i++) CHECK(isfinite(px[i]) && px[i] >= -2.0001f && px[i] <= 2.0001f);
    }
    el_image_free(&img);
    return 0;
}
