// libFuzzer target for byte-level BPE encoding and decoding. Uses the gpt-2
// vocabulary from $EL_SHARED/models/reference/ggml-vocab-gpt-2.gguf when
// EL_SHARED is set, else a small built-in vocabulary with merges whose order
// matters. The first input byte picks the pre-tokenizer and flags; the rest is
// the text. Checks: invalid UTF-8 is rejected with EL_ERR_ARG; the pre-token
// ends tile the text on character boundaries; valid UTF-8 encodes; ids are in
// range; decode(encode(x)) == x; with the built-in vocabulary, short inputs
// match a plain O(n^2) merge loop run word by word.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/gguf.h"
#include "edgellm/tokenize.h"

static el_tokenizer *g_tok[4];
static int g_builtin;
static const el_pretok g_pres[4] = {EL_PRETOK_GPT2, EL_PRETOK_LLAMA3, EL_PRETOK_QWEN2, EL_PRETOK_SMOLLM};

// Built-in vocabulary: the 256 byte characters (id = byte), then pieces.
static const char *g_extra[] = {"\xc4\xa0t", "he", "\xc4\xa0the", "aa", "aaa", "ab", "ba", "abab", "<|eot|>",
                                "\xc4\xa0\xc4\xa0", "\xc3\x83\xc2\xa9", "th", "the", "\xc4\x8a\xc4\x8a"};
static const char *g_merges[] = {"a a", "\xc4\xa0 t", "h e", "t he", "\xc4\xa0t he", "a b", "b a", "aa a",
                                 "ab ab", "\xc4\xa0 \xc4\xa0", "\xc3\x83 \xc2\xa9", "t h", "th e", "\xc4\x8a \xc4\x8a"};
enum { N_EXTRA = sizeof g_extra / sizeof g_extra[0], N_MERGES = sizeof g_merges / sizeof g_merges[0] };
static char g_chars[256][3];

static void builtin(void) {
    const char *pieces[256 + N_EXTRA];
    size_t lens[256 + N_EXTRA], mlens[N_MERGES];
    int types[256 + N_EXTRA];
    for (int b = 0, k = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
        unsigned cp = printable ? (unsigned)b : 256u + (unsigned)k++;
        if (cp < 0x80) g_chars[b][0] = (char)cp;
        else g_chars[b][0] = (char)(0xC0 | (cp >> 6)), g_chars[b][1] = (char)(0x80 | (cp & 0x3F));
        pieces[b] = g_chars[b], lens[b] = strlen(g_chars[b]), types[b] = EL_TOKEN_NORMAL;
    }
    for (int i = 0; i < N_EXTRA; i++) {
        pieces[256 + i] = g_extra[i], lens[256 + i] = strlen(g_extra[i]);
        types[256 + i] = strcmp(g_extra[i], "<|eot|>") ? EL_TOKEN_NORMAL : EL_TOKEN_CONTROL;
    }
    for (int i = 0; i < N_MERGES; i++) mlens[i] = strlen(g_merges[i]);
    for (int k = 0; k < 4; k++) {
        el_error e = {0};
        if (el_tokenizer_new_bpe(256 + N_EXTRA, pieces, lens, types, N_MERGES, g_merges, mlens, g_pres[k], -1, -1, -1,
                                 &g_tok[k], &e) != EL_OK) {
            fprintf(stderr, "fuzz_tokenize_bpe: built-in vocab: %s\n", e.msg);
            abort();
        }
    }
    g_builtin = 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *shared = getenv("EL_SHARED");
    if (!shared) {
        builtin();
        return 0;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/models/reference/ggml-vocab-gpt-2.gguf", shared);
    el_error e = {0};
    el_gguf *g;
    if (el_gguf_open(path, &g, &e) != EL_OK) {
        fprintf(stderr, "fuzz_tokenize_bpe: %s\n", e.msg);
        abort();
    }
    const el_gguf_kv *tk = el_gguf_find(g, "tokenizer.ggml.tokens"), *mk = el_gguf_find(g, "tokenizer.ggml.merges");
    const el_gguf_kv *ty = el_gguf_find(g, "tokenizer.ggml.token_type");
    if (!tk || !mk || !ty) abort();
    int nv = (int)tk->arr_n, nm = (int)mk->arr_n;
    const char **pieces = calloc((size_t)nv, sizeof *pieces), **merges = calloc((size_t)nm, sizeof *merges);
    size_t *lens = calloc((size_t)nv, sizeof *lens), *mlens = calloc((size_t)nm, sizeof *mlens);
    int *types = calloc((size_t)nv, sizeof *types);
    if (!pieces || !merges || !lens || !mlens || !types) abort();
    for (int i = 0; i < nv; i++) {
        int64_t v = 1;
        el_gguf_arr_i64(ty, (uint64_t)i, &v);
        pieces[i] = tk->strs[i].ptr, lens[i] = (size_t)tk->strs[i].len, types[i] = (int)v;
    }
    for (int i = 0; i < nm; i++) merges[i] = mk->strs[i].ptr, mlens[i] = (size_t)mk->strs[i].len;
    for (int k = 0; k < 4; k++) {
        if (el_tokenizer_new_bpe(nv, pieces, lens, types, nm, merges, mlens, g_pres[k], 50256, 50256, -1, &g_tok[k],
                                 &e) != EL_OK) {
            fprintf(stderr, "fuzz_tokenize_bpe: %s\n", e.msg);
            abort();
        }
    }
    free(pieces), free(merges), free(lens), free(mlens), free(types);
    el_gguf_close(g);
    return 0;
}

// Rank of merge "l r" in the built-in list, or -1.
static int naive_rank(const char *l, size_t ln, const char *r, size_t rn) {
    for (int i = 0; i < N_MERGES; i++) {
        const char *m = g_merges[i];
        size_t n = strlen(m);
        if (n == ln + rn + 1 && !memcmp(m, l, ln) && m[ln] == ' ' && !memcmp(m + ln + 1, r, rn)) return i;
    }
    return -1;
}

// BPE of one word by rescanning every pair after each merge.
static int naive_word(const el_tokenizer *t, const unsigned char *w, size_t n, int *out) {
    static char buf[2 * 512];
    static size_t start[512], len[512];
    size_t m = 0, k = 0;
    for (size_t i = 0; i < n; i++) {
        size_t cl = strlen(g_chars[w[i]]);
        memcpy(buf + m, g_chars[w[i]], cl);
        start[k] = m, len[k++] = cl;
        m += cl;
    }
    for (;;) {
        int best = -1, best_rank = 0;
        for (size_t i = 0; i + 1 < k; i++) {
            int r = naive_rank(buf + start[i], len[i], buf + start[i + 1], len[i + 1]);
            if (r >= 0 && (best < 0 || r < best_rank)) best = (int)i, best_rank = r;
        }
        if (best < 0) break;
        len[best] += len[best + 1];
        memmove(&start[best + 1], &start[best + 2], (k - best - 2) * sizeof start[0]);
        memmove(&len[best + 1], &len[best + 2], (k - best - 2) * sizeof len[0]);
        k--;
    }
    for (size_t i = 0; i < k; i++) out[i] = el_tokenizer_find(t, buf + start[i], len[i]);
    return (int)k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    el_tokenizer *t = g_tok[data[0] & 3];
    el_pretok pre = g_pres[data[0] & 3];
    unsigned flags = (data[0] & 4) ? EL_ENCODE_SPECIAL : 0;
    size_t cap = (size_t)(data[0] >> 3);
    const char *text = (const char *)data + 1;
    size_t len = size - 1;

    size_t *ends = NULL, n_ends = 0;
    el_error e = {0};
    el_status ps = el_pretok_split(pre, text, len, &ends, &n_ends, &e);
    int *ids = NULL, n = 0;
    el_status s = el_tokenizer_encode_ex(t, text, len, flags, &ids, &n, &e);
    if (!el_utf8_valid(text, len)) {
        if (s != EL_ERR_ARG || ids || n || ps != EL_ERR_ARG || ends) abort();
        return 0;
    }
    if (s != EL_OK || ps != EL_OK) {
        fprintf(stderr, "valid UTF-8 failed: %s\n", e.msg);
        abort();
    }
    size_t prev_end = 0;
    for (size_t i = 0; i < n_ends; i++) {
        if (ends[i] <= prev_end || ends[i] > len) abort();
        if (ends[i] < len && ((unsigned char)text[ends[i]] & 0xC0) == 0x80) abort();  // mid-character
        prev_end = ends[i];
    }
    if (prev_end != len) abort();

    int nv = el_tokenizer_n_vocab(t), n_control = 0;
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= nv) abort();
        n_control += el_tokenizer_type(t, ids[i]) == EL_TOKEN_CONTROL;
    }
    if (!flags && n_control) abort();  // control tokens only come from special parsing

    // Round trip (control tokens print nothing, so only without them).
    size_t maxp = el_tokenizer_max_piece_len(t);
    char *dec = malloc((size_t)n * maxp + 1);
    if (!dec) abort();
    size_t w = 0;
    for (int i = 0; i < n; i++) {
        size_t k = el_tokenizer_decode(t, i ? ids[i - 1] : -1, ids[i], dec + w, maxp);
        char small[32];
        size_t c = cap < sizeof small ? cap : sizeof small;
        size_t ks = el_tokenizer_decode(t, i ? ids[i - 1] : -1, ids[i], small, c);
        if (ks != (k < c ? k : c) || memcmp(small, dec + w, ks) != 0) abort();
        w += k;
    }
    if (!n_control && (w != len || memcmp(dec, text, len) != 0)) {
        fprintf(stderr, "round trip differs: %zu vs %zu bytes\n", w, len);
        abort();
    }

    // The merge loop against the naive one, word by word (ignore_merges can
    // replace a word by one piece under Llama 3, so not there).
    if (g_builtin && !flags && pre != EL_PRETOK_LLAMA3 && len <= 512) {
        static int ref[512];
        int nr = 0;
        size_t from = 0;
        for (size_t i = 0; i < n_ends; i++) {
            nr += naive_word(t, (const unsigned char *)text + from, ends[i] - from, ref + nr);
            from = ends[i];
        }
        if (nr != n || memcmp(ref, ids, (size_t)n * sizeof *ids) != 0) {
            fprintf(stderr, "differs from the naive merge loop\n");
            abort();
        }
    }
    free(dec);
    free(ends);
    free(ids);
    return 0;
}
