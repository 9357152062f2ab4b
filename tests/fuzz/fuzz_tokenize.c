// libFuzzer target for SentencePiece encoding and decoding. Builds tok512 from
// $EL_SHARED/models/tok512.bin when set, else a small built-in vocabulary.
// Checks, for every input: invalid UTF-8 is rejected with EL_ERR_ARG, valid
// UTF-8 encodes, ids are in range, decoding gives the text back (with "▁"
// read as a space), and short inputs match a plain O(n^2) reference encoder.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/tokenize.h"

#define SP "\xe2\x96\x81"

static el_tokenizer *g_tok;

static el_tokenizer *builtin_vocab(void) {
    // <unk> <s> </s>, the 256 byte tokens, "▁", a few letters and merges with
    // ties, so that merge order matters.
    static const char *words[] = {
        SP,   "a",  "b",   "c",   "e",   "h",   "t",   " ",   "ab",  "ba", "bb", "th", "he", "the",
        "\xe2\x96\x81t", "\xe2\x96\x81the", "aa", "aaa", "abc", "\xe2\x96\x81\xe2\x96\x81", "\xc3\xa9",
        "\xe4\xb8\xad", "e\xe2\x96\x81", "<", "s", ">", "<s",
    };
    enum { NW = sizeof words / sizeof words[0], NV = 3 + 256 + NW };
    static char bytes[256][7];
    const char *pieces[NV];
    size_t lens[NV];
    float scores[NV];
    int types[NV];
    pieces[0] = "<unk>", pieces[1] = "<s>", pieces[2] = "</s>";
    types[0] = EL_TOKEN_UNKNOWN, types[1] = types[2] = EL_TOKEN_CONTROL;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        pieces[3 + b] = bytes[b];
        types[3 + b] = EL_TOKEN_BYTE;
    }
    for (int i = 0; i < NW; i++) {
        pieces[259 + i] = words[i];
        types[259 + i] = EL_TOKEN_NORMAL;
    }
    for (int i = 0; i < NV; i++) {
        lens[i] = strlen(pieces[i]);
        scores[i] = i < 259 ? 0.0f : (float)(-(i % 5));  // many equal scores
    }
    el_tokenizer *t = NULL;
    el_error e = {0};
    if (el_tokenizer_new_spm(NV, pieces, lens, scores, types, 1, 2, 0, &t, &e) != EL_OK) {
        fprintf(stderr, "fuzz_tokenize: built-in vocab: %s\n", e.msg);
        abort();
    }
    return t;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *shared = getenv("EL_SHARED");
    if (shared) {
        char path[4096];
        snprintf(path, sizeof path, "%s/models/tok512.bin", shared);
        el_error e = {0};
        if (el_tokenizer_load_llama2c(path, 512, &g_tok, &e) != EL_OK) {
            fprintf(stderr, "fuzz_tokenize: %s\n", e.msg);
            abort();
        }
    } else {
        g_tok = builtin_vocab();
    }
    return 0;
}

static int text_piece(const el_tokenizer *t, const char *s, size_t n) {
    int id = el_tokenizer_find(t, s, n);
    return id >= 0 && el_tokenizer_type(t, id) == EL_TOKEN_NORMAL ? id : -1;
}

// Rescans every pair after each merge, as llama2.c does. Returns the count.
static int naive_encode(const el_tokenizer *t, const char *text, size_t len, int prefix, int *out) {
    static char buf[3 * 256 + 3];
    static size_t start[sizeof buf], slen[sizeof buf];
    static int id[sizeof buf];
    size_t w = 0;
    if (len && prefix) memcpy(buf, SP, 3), w = 3;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') memcpy(buf + w, SP, 3), w += 3;
        else buf[w++] = text[i];
    }
    int n = 0;
    for (size_t i = 0; i < w;) {
        unsigned char c = (unsigned char)buf[i];
        size_t cl = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        int tid = text_piece(t, buf + i, cl);
        if (tid >= 0) {
            start[n] = i, slen[n] = cl, id[n++] = tid;
        } else {
            for (size_t k = 0; k < cl; k++) {
                char piece[8];
                snprintf(piece, sizeof piece, "<0x%02X>", (unsigned char)buf[i + k]);
                start[n] = i + k, slen[n] = 1, id[n++] = el_tokenizer_find(t, piece, 6);
            }
        }
        i += cl;
    }
    for (;;) {
        int best = -1, best_id = -1;
        float best_score = 0;
        for (int i = 0; i + 1 < n; i++) {
            if (el_tokenizer_type(t, id[i]) != EL_TOKEN_NORMAL || el_tokenizer_type(t, id[i + 1]) != EL_TOKEN_NORMAL)
                continue;
            int m = text_piece(t, buf + start[i], slen[i] + slen[i + 1]);
            if (m >= 0 && (best < 0 || el_tokenizer_score(t, m) > best_score))
                best = i, best_id = m, best_score = el_tokenizer_score(t, m);
        }
        if (best < 0) break;
        slen[best] += slen[best + 1];
        id[best] = best_id;
        memmove(&start[best + 1], &start[best + 2], (size_t)(n - best - 2) * sizeof start[0]);
        memmove(&slen[best + 1], &slen[best + 2], (size_t)(n - best - 2) * sizeof slen[0]);
        memmove(&id[best + 1], &id[best + 2], (size_t)(n - best - 2) * sizeof id[0]);
        n--;
    }
    memcpy(out, id, (size_t)n * sizeof *out);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    // First byte: options; the rest is the text.
    int add_bos = data[0] & 1, prefix = !(data[0] & 2);
    size_t cap = (size_t)(data[0] >> 2);
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    el_tokenizer_set_add_space_prefix(g_tok, prefix);

    int *ids = NULL, n = 0;
    el_error e = {0};
    el_status s = el_tokenizer_encode(g_tok, text, len, add_bos, &ids, &n, &e);
    if (!el_utf8_valid(text, len)) {
        if (s != EL_ERR_ARG || ids || n) abort();
        return 0;
    }
    if (s != EL_OK) {
        fprintf(stderr, "valid UTF-8 failed to encode: %s\n", e.msg);
        abort();
    }
    int nv = el_tokenizer_n_vocab(g_tok);
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= nv || ids[i] == 0) abort();  // every byte has a token: no <unk>
        if (i >= add_bos && el_tokenizer_type(g_tok, ids[i]) == EL_TOKEN_CONTROL) abort();
    }

    // Round trip. Without BOS the dummy prefix is printed as a space.
    size_t maxp = el_tokenizer_max_piece_len(g_tok);
    char *dec = malloc((size_t)n * maxp + 1), *want = malloc(len + 2);
    if (!dec || !want) abort();
    size_t w = 0, wl = 0;
    for (int i = 0; i < n; i++) {
        int prev = i ? ids[i - 1] : -1;
        size_t k = el_tokenizer_decode(g_tok, prev, ids[i], dec + w, maxp);
        // A short buffer gets a prefix of the same bytes.
        char small[64];
        size_t c = cap < sizeof small ? cap : sizeof small;
        size_t ks = el_tokenizer_decode(g_tok, prev, ids[i], small, c);
        if (ks != (k < c ? k : c) || memcmp(small, dec + w, ks) != 0) abort();
        w += k;
    }
    if (len && prefix && !add_bos) want[wl++] = ' ';
    for (size_t i = 0; i < len; i++) {
        if (len - i >= 3 && memcmp(text + i, SP, 3) == 0) {
            want[wl++] = ' ';
            i += 2;
        } else {
            want[wl++] = text[i];
        }
    }
    // Without a dummy prefix, a text that starts with a space loses it after
    // BOS: decode cannot tell that space from the prefix.
    if (add_bos && !prefix && wl && want[0] == ' ') memmove(want, want + 1, --wl);
    if (w != wl || memcmp(dec, want, w) != 0) {
        fprintf(stderr, "round trip differs: %zu vs %zu bytes\n", w, wl);
        abort();
    }

    if (len <= 256) {
        static int ref[3 * 256 + 3];
        int nr = naive_encode(g_tok, text, len, prefix, ref);
        if (nr != n - add_bos || memcmp(ref, ids + add_bos, (size_t)nr * sizeof *ref) != 0) {
            fprintf(stderr, "differs from the reference encoder\n");
            abort();
        }
    }
    free(dec);
    free(want);
    free(ids);
    return 0;
}
