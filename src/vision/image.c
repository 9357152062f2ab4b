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

// JPEG (ITU T.81): FF marker [u16 length, payload] segments; after SOS the
// entropy-coded data runs to the next marker that is not a stuffed FF00 or a
// restart marker. Every table, frame and scan header is checked against the
// standard's limits here (stb_image 2.27 trusts some of them: a Huffman table
// of more than 256 codes overruns its arrays), so stb only sees files whose
// headers are well formed.
typedef struct {
    const char *name;
    int frame, progressive, n_comp, scans;
    int comp_id[4], comp_tq[4];
    int dc_defined[4], ac_defined[4], q_defined[4];
} jpeg_state;

static el_status jpeg_bad(const jpeg_state *j, el_error *err, const char *what) {
    return el_err(err, EL_ERR_FORMAT, "%s: corrupt JPEG (%s)", j->name, what);
}

// DQT: tables of 64 (8-bit) or 128 (16-bit) values, Tq <= 3
static el_status jpeg_dqt(jpeg_state *j, const uint8_t *p, size_t n, el_error *err) {
    while (n) {
        int pq = p[0] >> 4, tq = p[0] & 15;
        size_t need = 1 + (pq ? 128u : 64u);
        if (pq > 1 || tq > 3 || n < need) return jpeg_bad(j, err, "bad quantisation table");
        j->q_defined[tq] = 1;
        p += need;
        n -= need;
    }
    return EL_OK;
}

// DHT: per table Tc (0 DC, 1 AC) and Th <= 3, 16 counts of codes by length
// that a prefix code can hold, at most 256 symbols; DC symbols are sizes <= 11
static el_status jpeg_dht(jpeg_state *j, const uint8_t *p, size_t n, el_error *err) {
    while (n) {
        if (n < 17) return jpeg_bad(j, err, "short Huffman table");
        int tc = p[0] >> 4, th = p[0] & 15;
        if (tc > 1 || th > 3) return jpeg_bad(j, err, "bad Huffman table id");
        unsigned total = 0, code = 0;
        for (int len = 1; len <= 16; len++) {
            code = (code << 1) + p[len];
            total += p[len];
            if (code > (1u << len)) return jpeg_bad(j, err, "Huffman code lengths overflow");
        }
        if (total == 0 || total > 256 || n < 17 + total) return jpeg_bad(j, err, "bad Huffman table size");
        for (unsigned i = 0; i < total; i++)
            if ((tc == 0 && p[17 + i] > 11) || (tc == 1 && (p[17 + i] & 15) > 10))
                return jpeg_bad(j, err, "bad Huffman symbol");
        if (tc == 0) j->dc_defined[th] = 1;
        else j->ac_defined[th] = 1;
        p += 17 + total;
        n -= 17 + total;
    }
    return EL_OK;
}

static el_status jpeg_sof(jpeg_state *j, uint8_t m, const uint8_t *p, size_t n, int *w, int *h, el_error *err) {
    if (m > 0xC2)
        return el_err(err, EL_ERR_UNSUPPORTED,
                      "%s: JPEG coding SOF%d is not supported (baseline, extended or progressive Huffman only)", j->name,
                      m - 0xC0);
    if (j->frame) return jpeg_bad(j, err, "two frame headers");
    if (n < 6) return jpeg_bad(j, err, "short frame header");
    if (p[0] != 8)
        return el_err(err, EL_ERR_UNSUPPORTED, "%s: JPEG sample precision %d is not supported (8 bits only)", j->name,
                      p[0]);
    *h = (int)be16(p + 1);
    *w = (int)be16(p + 3);
    if (*w == 0 || *h == 0)
        return el_err(err, EL_ERR_UNSUPPORTED, "%s: JPEG frame declares %d x %d pixels", j->name, *w, *h);
    int nc = p[5];
    if (nc != 1 && nc != 3)
        return el_err(err, EL_ERR_UNSUPPORTED, "%s: JPEG with %d components is not supported (grey or colour)", j->name,
                      nc);
    if (n != 6 + 3u * (unsigned)nc) return jpeg_bad(j, err, "frame header length");
    for (int i = 0; i < nc; i++) {
        const uint8_t *c = p + 6 + 3 * i;
        int hs = c[1] >> 4, vs = c[1] & 15;
        if (hs < 1 || hs > 4 || vs < 1 || vs > 4 || c[2] > 3) return jpeg_bad(j, err, "bad component");
        for (int k = 0; k < i; k++)
            if (j->comp_id[k] == c[0]) return jpeg_bad(j, err, "duplicate component id");
        j->comp_id[i] = c[0];
        j->comp_tq[i] = c[2];
    }
    j->n_comp = nc;
    j->frame = 1;
    j->progressive = m == 0xC2;
    return EL_OK;
}

static el_status jpeg_sos(jpeg_state *j, const uint8_t *p, size_t n, el_error *err) {
    if (!j->frame) return jpeg_bad(j, err, "scan before the frame header");
    if (n < 1) return jpeg_bad(j, err, "short scan header");
    int ns = p[0];
    if (ns < 1 || ns > j->n_comp || n != 4 + 2u * (unsigned)ns) return jpeg_bad(j, err, "scan header length");
    int ss = p[1 + 2 * ns], se = p[2 + 2 * ns], ah = p[3 + 2 * ns] >> 4, al = p[3 + 2 * ns] & 15;
    if (!j->progressive ? (ss != 0 || se != 63 || ah || al)
                        : (ss > se || se > 63 || (ss == 0 && se != 0) || (ss > 0 && ns != 1) || ah > 13 || al > 13))
        return jpeg_bad(j, err, "bad spectral selection");
    for (int i = 0; i < ns; i++) {
        int id = p[1 + 2 * i], td = p[2 + 2 * i] >> 4, ta = p[2 + 2 * i] & 15, found = 0;
        for (int k = 0; k < j->n_comp; k++) found |= j->comp_id[k] == id;
        for (int k = 0; k < i; k++) found &= p[1 + 2 * k] != id;
        if (!found || td > 3 || ta > 3) return jpeg_bad(j, err, "bad scan component");
        int need_dc = ss == 0 && ah == 0, need_ac = se > 0;
        if ((need_dc && !j->dc_defined[td]) || (need_ac && !j->ac_defined[ta]))
            return jpeg_bad(j, err, "scan uses an undefined Huffman table");
    }
    j->scans++;
    return EL_OK;
}

static el_status jpeg_scan(const uint8_t *d, size_t n, const char *name, int *w, int *h, el_error *err) {
    jpeg_state j = {name, 0, 0, 0, 0, {0}, {0}, {0}, {0}, {0}};
    size_t o = 2;
    for (;;) {
        if (o >= n) return el_err(err, EL_ERR_FORMAT, "%s: truncated JPEG (no end-of-image marker)", name);
        if (d[o] != 0xFF) return el_err(err, EL_ERR_FORMAT, "%s: corrupt JPEG (no marker at byte %zu)", name, o);
        while (o < n && d[o] == 0xFF) o++;  // fill bytes
        if (o >= n) return el_err(err, EL_ERR_FORMAT, "%s: truncated JPEG (no end-of-image marker)", name);
        uint8_t m = d[o++];
        if (m == 0xD9) {
            if (!j.frame || !j.scans) return jpeg_bad(&j, err, "ends before any image data");
            return EL_OK;
        }
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;  // no payload
        if (n - o < 2) return el_err(err, EL_ERR_FORMAT, "%s: truncated JPEG (segment length at byte %zu)", name, o);
        size_t len = be16(d + o);
        if (len < 2 || len > n - o)
            return el_err(err, EL_ERR_FORMAT, "%s: truncated JPEG (segment FF%02X of %zu bytes at byte %zu)", name, m,
                          len, o - 2);
        const uint8_t *p = d + o + 2;
        size_t pn = len - 2;
        el_status st = EL_OK;
        if (m == 0xDB) st = jpeg_dqt(&j, p, pn, err);
        else if (m == 0xC4) st = jpeg_dht(&j, p, pn, err);
        else if (m >= 0xC0 && m <= 0xCF && m != 0xC8 && m != 0xCC) st = jpeg_sof(&j, m, p, pn, w, h, err);
        else if (m == 0xDA) st = jpeg_sos(&j, p, pn, err);
        else if (m == 0xDD) st = pn == 2 ? EL_OK : jpeg_bad(&j, err, "restart interval length");
        else if (!((m >= 0xE0 && m <= 0xEF) || m == 0xFE))  // application segments and comments are skipped
            return el_err(err, EL_ERR_UNSUPPORTED, "%s: JPEG marker FF%02X at byte %zu is not supported", name, m, o - 2);
        if (st) return st;
        o += len;
        if (m != 0xDA) continue;
        // every component's quantisation table must exist by the first scan
        for (int i = 0; i < j.n_comp; i++)
            if (!j.q_defined[j.comp_tq[i]]) return jpeg_bad(&j, err, "a component's quantisation table is undefined");
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
    return el_image_decode_max(data, len, name, EL_IMAGE_MAX_PIXELS, out, err);
}

el_status el_image_decode_max(const void *data, size_t len, const char *name, uint64_t max_pixels, el_image *out,
                              el_error *err) {
    memset(out, 0, sizeof *out);
    if (max_pixels > EL_IMAGE_MAX_PIXELS) max_pixels = EL_IMAGE_MAX_PIXELS;
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
    if (w > EL_IMAGE_MAX_SIDE || h > EL_IMAGE_MAX_SIDE || (uint64_t)w * (uint64_t)h > max_pixels)
        return el_err(err, EL_ERR_RANGE, "%s: the header declares %d x %d pixels, more than the limit of %d a side and "
                      "%.1f Mpixel (refused before decoding)", name, w, h, EL_IMAGE_MAX_SIDE, (double)max_pixels / 1048576.0);
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
