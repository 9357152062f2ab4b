// PNG and JPEG files to RGB pixels. The file's structure is walked here first
// (PNG chunks with their CRCs up to IEND; JPEG marker segments and scans up to
// EOI), so a truncated or corrupt file, an unsupported variant and a header
// that declares a huge image are refused before stb_image decodes a pixel.
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <stb/stb_image.h>

#include "edgellm/vision.h"

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static uint32_t be16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }

// CRC-32 (the polynomial of PNG, ISO 3309), bytewise with a table made once.
static uint32_t crc_table[256];
static void crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}
static uint32_t crc32_of(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};

// Chunks: u32 length, 4-byte type, data, CRC over type and data. IHDR first,
// IEND last.
static el_status png_scan(const uint8_t *d, size_t n, const char *name, int *w, int *h, el_error *err) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, crc_init);
    size_t o = 8;
    int seen_ihdr = 0, seen_idat = 0;
    while (o < n) {
        if (n - o < 12) return el_err(err, EL_ERR_FORMAT, "%s: truncated PNG (chunk header at byte %zu)", name, o);
        uint32_t len = be32(d + o);
        const uint8_t *type = d + o + 4;
        if (len > n - o - 12)
            return el_err(err, EL_ERR_FORMAT, "%s: truncated PNG (chunk of %u bytes at byte %zu runs past the end)", name,
                          len, o);
        for (int i = 0; i < 4; i++)
            if (!((type[i] >= 'A' && type[i] <= 'Z') || (type[i] >= 'a' && type[i] <= 'z')))
                return el_err(err, EL_ERR_FORMAT, "%s: corrupt PNG (bad chunk type at byte %zu)", name, o);
        if (crc32_of(type, (size_t)len + 4) != be32(type + 4 + len))
            return el_err(err, EL_ERR_FORMAT, "%s: corrupt PNG (chunk %.4s at byte %zu fails its CRC)", name,
                          (const char *)type, o);
        if (!seen_ihdr) {
            if (memcmp(type, "IHDR", 4) || len != 13)
                return el_err(err, EL_ERR_FORMAT, "%s: corrupt PNG (the first chunk is not a 13-byte IHDR)", name);
            uint32_t pw = be32(type + 4), ph = be32(type + 8);
            if (pw == 0 || ph == 0 || pw > INT_MAX || ph > INT_MAX)
                return el_err(err, EL_ERR_FORMAT, "%s: corrupt PNG (IHDR declares %u x %u pixels)", name, pw, ph);
            *w = (int)pw;
            *h = (int)ph;
            seen_ihdr = 1;
        } else if (!memcmp(type, "IDAT", 4)) {
            seen_idat = 1;
        } else if (!memcmp(type, "IEND", 4)) {
            if (!seen_idat) return el_err(err, EL_ERR_FORMAT, "%s: corrupt PNG (no image data before IEND)", name);
            return EL_OK;
        }
        o += (size_t)len + 12;
    }
    return el_err(err, EL_ERR_FORMAT, "%s: truncated PNG (no IEND chunk)", name);
}

// Segments: FF marker [u16 length, payload]; after SOS the entropy-coded data
// runs to the next marker that is not a stuffed FF00 or a restart marker.
static el_status jpeg_scan(const uint8_t *d, size_t n, const char *name, int *w, int *h, el_error *err) {
    size_t o = 2;
    int frame = 0, scans = 0;
    for (;;) {
        if (o >= n) return el_err(err, EL_ERR_FORMAT, "%s: truncated JPEG (no end-of-image marker)", name);
        if (d[o] != 0xFF) return el_err(err, EL_ERR_FORMAT, "%s: corrupt JPEG (no marker at byte %zu)", name, o);
        while (o < n && d[o] == 0xFF) o++;  // fill bytes
        if (o >= n) return el_err(err, EL_ERR_FORMAT, "%s: truncated JPEG (no end-of-image marker)", name);
        uint8_t m = d[o++];
        if (m == 0xD9) {
            if (!frame || !scans) return el_err(err, EL_ERR_FORMAT, "%s: corrupt JPEG (ends before any image data)", name);
            return EL_OK;
        }
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;  // no payload
        if (m == 0xD8 || m == 0x00)
            return el_err(err, EL_ERR_FORMAT, "%s: corrupt JPEG (unexpected marker FF%02X at byte %zu)", name, m, o - 2);
        if (n - o < 2) return el_err(err, EL_ERR_FORMAT, "%s: truncated JPEG (segment length at byte %zu)", name, o);
        size_t len = be16(d + o);
        if (len < 2 || len > n - o)
            return el_err(err, EL_ERR_FORMAT, "%s: truncated JPEG (segment FF%02X of %zu bytes at byte %zu)", name, m,
                          len, o - 2);
        const uint8_t *p = d + o + 2;
        if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {  // start of frame
            if (m > 0xC2)
                return el_err(err, EL_ERR_UNSUPPORTED,
                              "%s: JPEG coding SOF%d is not supported (baseline, extended or progressive Huffman only)",
                              name, m - 0xC0);
            if (frame) return el_err(err, EL_ERR_FORMAT, "%s: corrupt JPEG (two frame headers)", name);
            if (len < 8) return el_err(err, EL_ERR_FORMAT, "%s: corrupt JPEG (frame header of %zu bytes)", name, len);
            if (p[0] != 8)
                return el_err(err, EL_ERR_UNSUPPORTED, "%s: JPEG sample precision %d is not supported (8 bits only)",
                              name, p[0]);
            *h = (int)be16(p + 1);
            *w = (int)be16(p + 3);
            if (*w == 0 || *h == 0)
                return el_err(err, EL_ERR_UNSUPPORTED, "%s: JPEG frame declares %d x %d pixels", name, *w, *h);
            frame = 1;
        }
        o += len;
        if (m != 0xDA) continue;
        if (!frame) return el_err(err, EL_ERR_FORMAT, "%s: corrupt JPEG (scan before the frame header)", name);
        scans++;
        // entropy-coded data up to the next real marker
        while (o < n) {
            if (d[o] != 0xFF) {
                o++;
                continue;
            }
            if (o + 1 >= n) break;
            uint8_t nx = d[o + 1];
            if (nx == 0x00 || (nx >= 0xD0 && nx <= 0xD7) || nx == 0xFF) {
                o += nx == 0xFF ? 1 : 2;
                continue;
            }
            break;  // a marker: the outer loop reads it
        }
    }
}

el_status el_image_decode(const void *data, size_t len, const char *name, el_image *out, el_error *err) {
    memset(out, 0, sizeof *out);
    const uint8_t *d = data;
    int w = 0, h = 0;
    el_status st;
    if (len > EL_IMAGE_MAX_FILE)
        return el_err(err, EL_ERR_RANGE, "%s: %zu bytes is more than the %u an image file may have", name, len,
                      EL_IMAGE_MAX_FILE);
    if (len >= 8 && !memcmp(d, png_sig, 8)) st = png_scan(d, len, name, &w, &h, err);
    else if (len >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) st = jpeg_scan(d, len, name, &w, &h, err);
    else return el_err(err, EL_ERR_FORMAT, "%s: not a PNG or JPEG image", name);
    if (st) return st;
    if (w > EL_IMAGE_MAX_SIDE || h > EL_IMAGE_MAX_SIDE || (uint64_t)w * (uint64_t)h > EL_IMAGE_MAX_PIXELS)
        return el_err(err, EL_ERR_RANGE, "%s: the header declares %d x %d pixels, more than the limit of %d a side and %u "
                      "Mpixel (refused before decoding)", name, w, h, EL_IMAGE_MAX_SIDE, EL_IMAGE_MAX_PIXELS >> 20);
    int dw, dh, comp;
    uint8_t *px = stbi_load_from_memory(d, (int)len, &dw, &dh, &comp, 3);
    if (!px) return el_err(err, EL_ERR_FORMAT, "%s: corrupt image (%s)", name, stbi_failure_reason());
    if (dw != w || dh != h) {
        stbi_image_free(px);
        return el_err(err, EL_ERR_FORMAT, "%s: corrupt image (decoded %d x %d, header says %d x %d)", name, dw, dh, w, h);
    }
    out->w = w;
    out->h = h;
    out->rgb = px;
    return EL_OK;
}

el_status el_image_load(const char *path, el_image *out, el_error *err) {
    memset(out, 0, sizeof *out);
    char *data = NULL;
    size_t len = 0;
    el_status st = el_read_file(path, EL_IMAGE_MAX_FILE, &data, &len, err);
    if (st) return st;
    st = el_image_decode(data, len, path, out, err);
    free(data);
    return st;
}

void el_image_free(el_image *img) {
    if (!img) return;
    stbi_image_free(img->rgb);
    img->rgb = NULL;
    img->w = img->h = 0;
}
