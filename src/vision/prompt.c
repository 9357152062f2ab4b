// Prompts with images: the text is cut at each image marker and the pieces
// are encoded apart, so an image's rows go exactly where its marker stood.
#include <stdlib.h>
#include <string.h>

#include "edgellm/vision.h"

void el_mm_prompt_free(el_mm_prompt *p) {
    if (!p) return;
    free(p->image);
    free(p->start);
    free(p->len);
    free(p->ids);
    memset(p, 0, sizeof *p);
}

static const char *find_marker(const char *s, size_t n, const char *m, size_t mlen) {
    for (size_t i = 0; mlen && i + mlen <= n; i++)
        if (!memcmp(s + i, m, mlen)) return s + i;
    return NULL;
}

static el_status add_ids(el_mm_prompt *p, const int *ids, int n, int *cap, el_error *err) {
    if (n <= 0) return EL_OK;
    if (p->n_ids + n > *cap) {
        int c = (p->n_ids + n) * 2;
        int *x = realloc(p->ids, (size_t)c * sizeof(int));
        if (!x) return el_err(err, EL_ERR_NOMEM, "out of memory for a prompt");
        p->ids = x;
        *cap = c;
    }
    memcpy(p->ids + p->n_ids, ids, (size_t)n * sizeof(int));
    if (p->n_items && p->image[p->n_items - 1] < 0) {
        p->len[p->n_items - 1] += n;  // one run with the tokens before (BOS and the first piece)
    } else {
        int i = p->n_items++;
        p->image[i] = -1;
        p->start[i] = p->n_ids;
        p->len[i] = n;
    }
    p->n_ids += n;
    return EL_OK;
}

// Encodes text[a, b) with the plain spans that fall in it, moved to its start.
static el_status encode_piece(const el_tokenizer *tok, const char *text, size_t a, size_t b, unsigned flags,
                              const el_text_span *plain, int n_plain, el_text_span *tmp, int **ids, int *n,
                              el_error *err) {
    int k = 0;
    for (int i = 0; i < n_plain; i++) {
        size_t lo = plain[i].begin > a ? plain[i].begin : a, hi = plain[i].end < b ? plain[i].end : b;
        if (lo < hi) tmp[k++] = (el_text_span){lo - a, hi - a};
    }
    return el_tokenizer_encode_spans(tok, text + a, b - a, flags, tmp, k, ids, n, err);
}

el_status el_mm_prompt_encode(const el_tokenizer *tok, const char *text, size_t len, const char *marker,
                              unsigned flags, const el_text_span *plain, int n_plain, int n_images, el_mm_prompt *out,
                              el_error *err) {
    memset(out, 0, sizeof *out);
    size_t mlen = strlen(marker);
    int n_markers = 0;
    for (const char *p = text, *e = text + len; (p = find_marker(p, (size_t)(e - p), marker, mlen)); p += mlen) n_markers++;
    if (n_markers && n_markers != n_images)
        return el_err(err, EL_ERR_ARG, "the prompt has %d image marker%s '%s' but %d image%s given", n_markers,
                      n_markers == 1 ? "" : "s", marker, n_images, n_images == 1 ? " was" : "s were");
    if (n_images < 0 || n_images > 1024) return el_err(err, EL_ERR_RANGE, "%d images are too many", n_images);
    int items = 2 * n_markers + 2 + n_images, cap = 0;
    out->image = malloc((size_t)items * sizeof(int));
    out->start = malloc((size_t)items * sizeof(int));
    out->len = malloc((size_t)items * sizeof(int));
    if (!out->image || !out->start || !out->len) {
        el_mm_prompt_free(out);
        return el_err(err, EL_ERR_NOMEM, "out of memory for a prompt");
    }
    el_text_span *tmp = n_plain > 0 ? malloc((size_t)n_plain * sizeof *tmp) : NULL;
    if (n_plain > 0 && !tmp) {
        el_mm_prompt_free(out);
        return el_err(err, EL_ERR_NOMEM, "out of memory for a prompt");
    }
    el_status st = EL_OK;
    unsigned piece_flags = flags & ~(unsigned)EL_ENCODE_ADD_BOS;
    if (flags & EL_ENCODE_ADD_BOS) {
        int bos = el_tokenizer_bos(tok);
        if (bos < 0) {
            free(tmp);
            el_mm_prompt_free(out);
            return el_err(err, EL_ERR_ARG, "the vocabulary has no BOS token to add");
        }
        st = add_ids(out, &bos, 1, &cap, err);
    }
    if (!n_markers)  // the images come first
        for (int i = 0; i < n_images; i++) {
            int k = out->n_items++;
            out->image[k] = i;
            out->start[k] = out->n_ids;
            out->len[k] = 0;
        }
    const char *p = text, *end = text + len;
    for (int piece = 0; !st; piece++) {
        const char *m = find_marker(p, (size_t)(end - p), marker, mlen);
        const char *stop = m ? m : end;
        if (stop > p) {
            int *ids = NULL, n = 0;
            st = encode_piece(tok, text, (size_t)(p - text), (size_t)(stop - text), piece_flags, plain,
                              n_plain < 0 ? 0 : n_plain, tmp, &ids, &n, err);
            if (!st) st = add_ids(out, ids, n, &cap, err);
            free(ids);
        }
        if (!m || st) break;
        int k = out->n_items++;
        out->image[k] = piece;
        out->start[k] = out->n_ids;
        out->len[k] = 0;
        p = m + mlen;
    }
    free(tmp);
    if (st) el_mm_prompt_free(out);
    return st;
}

int el_mm_prompt_positions(const el_mm_prompt *p, int n_rows) {
    long long n = 0;
    for (int i = 0; i < p->n_items; i++) n += p->image[i] >= 0 ? n_rows : p->len[i];
    return n > (1 << 30) ? (1 << 30) : (int)n;
}
