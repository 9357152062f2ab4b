// Unit tests for src/tokenize: llama2.c tokenizer files, SentencePiece BPE
// encoding against llama2.c's reference ids, decoding, hostile inputs.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/tokenize.h"
#include "testutil.h"

static el_tokenizer *g_llama2, *g_tok512;

static int setup(void **st) {
    (void)st;
    el_error e = {0};
    if (el_tokenizer_load_llama2c(tu_model_path("llama2-tokenizer.bin"), 32000, &g_llama2, &e) != EL_OK) {
        fprintf(stderr, "%s\n", e.msg);
        return -1;
    }
    if (el_tokenizer_load_llama2c(tu_model_path("tok512.bin"), 512, &g_tok512, &e) != EL_OK) {
        fprintf(stderr, "%s\n", e.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **st) {
    (void)st;
    el_tokenizer_free(g_llama2);
    el_tokenizer_free(g_tok512);
    return 0;
}

static void encode_ok(const el_tokenizer *t, const char *text, int add_bos, int **ids, int *n) {
    el_error e = {0};
    el_status s = el_tokenizer_encode(t, text, strlen(text), add_bos, ids, n, &e);
    if (s != EL_OK) fail_msg("encode \"%s\": %s", text, e.msg);
}

static void assert_ids(const int *got, int n_got, const int *want, int n_want) {
    for (int i = 0; i < n_got && i < n_want; i++) {
        if (got[i] != want[i]) fail_msg("id %d: got %d, want %d", i, got[i], want[i]);
    }
    assert_int_equal(n_got, n_want);
}

// Decodes ids as a generation loop would print them: each after its predecessor.
static char *decode_all(const el_tokenizer *t, const int *ids, int n) {
    size_t cap = (size_t)n * el_tokenizer_max_piece_len(t) + 1, w = 0;
    char *s = malloc(cap);
    assert_non_null(s);
    for (int i = 0; i < n; i++) w += el_tokenizer_decode(t, i > 0 ? ids[i - 1] : -1, ids[i], s + w, cap - w);
    s[w] = 0;
    return s;
}

// ---------------------------------------------------------------- loading

static void test_load_fields(void **st) {
    (void)st;
    const el_tokenizer *t = g_tok512;
    assert_int_equal(el_tokenizer_kind_of(t), EL_TOKENIZER_SPM);
    assert_int_equal(el_tokenizer_n_vocab(t), 512);
    assert_int_equal(el_tokenizer_bos(t), 1);
    assert_int_equal(el_tokenizer_eos(t), 2);
    assert_int_equal(el_tokenizer_unk(t), 0);
    assert_int_equal(el_tokenizer_type(t, 0), EL_TOKEN_UNKNOWN);
    assert_int_equal(el_tokenizer_type(t, 1), EL_TOKEN_CONTROL);
    assert_int_equal(el_tokenizer_type(t, 2), EL_TOKEN_CONTROL);
    assert_int_equal(el_tokenizer_type(t, 3), EL_TOKEN_BYTE);
    assert_int_equal(el_tokenizer_type(t, 258), EL_TOKEN_BYTE);
    assert_int_equal(el_tokenizer_type(t, 259), EL_TOKEN_NORMAL);
    assert_int_equal(el_tokenizer_type(t, 512), 0);
    size_t n;
    const char *p = el_tokenizer_piece(t, 3, &n);
    assert_int_equal(n, 6);
    assert_memory_equal(p, "<0x00>", 6);
    // The file stores the space as ' '; in memory it is "▁".
    p = el_tokenizer_piece(t, 429, &n);
    assert_int_equal(n, 3);
    assert_memory_equal(p, "\xe2\x96\x81", 3);
    assert_true(el_tokenizer_score(t, 429) == -170.0f);
    assert_true(el_tokenizer_score(t, 260) == -1.0f);
    assert_int_equal(el_tokenizer_find(t, "\xe2\x96\x81", 3), 429);
    assert_int_equal(el_tokenizer_find(t, " ", 1), -1);
    assert_int_equal(el_tokenizer_find(t, "<0x41>", 6), 3 + 0x41);
    assert_null(el_tokenizer_piece(t, -1, &n));
    assert_int_equal(n, 0);
    // llama2's "▁▁" (259) and "▁" (29871): converted spaces, score -1e9.
    p = el_tokenizer_piece(g_llama2, 259, &n);
    assert_int_equal(n, 6);
    assert_memory_equal(p, "\xe2\x96\x81\xe2\x96\x81", 6);
    assert_true(el_tokenizer_score(g_llama2, 29871) == -1e9f);
    assert_true(el_tokenizer_max_piece_len(g_llama2) >= 27);
}

// ---------------------------------------------------------------- encoding

static void test_llama2_reference_tsv(void **st) {
    (void)st;
    char *data;
    size_t len;
    el_error e = {0};
    const char *path = tu_model_path("reference/llama2-tokenizer-encode.tsv");
    assert_int_equal(el_read_file(path, 1 << 20, &data, &len, &e), EL_OK);
    int cases = 0;
    for (char *line = data; *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        char *tab = strchr(line, '\t');
        assert_non_null(tab);
        *tab = 0;
        int want[512], n_want = 0;
        for (char *q = tab + 1, *end; *q; q = end) {
            long v = strtol(q, &end, 10);
            if (end == q) break;
            assert_true(n_want < 512);
            want[n_want++] = (int)v;
        }
        int *ids, n;
        encode_ok(g_llama2, line, 1, &ids, &n);
        assert_ids(ids, n, want, n_want);
        free(ids);
        cases++;
        line = nl ? nl + 1 : line + strlen(line);
    }
    assert_int_equal(cases, 4);
    free(data);
}

static void test_tok512_the_dream(void **st) {
    (void)st;
    int *ids, n;
    encode_ok(g_tok512, "The dream", 1, &ids, &n);
    const int want[] = {1, 368, 430, 281, 269, 435, 447};
    assert_ids(ids, n, want, 7);
    free(ids);
    encode_ok(g_tok512, "The dream", 0, &ids, &n);
    assert_ids(ids, n, want + 1, 6);
    free(ids);
}

static void test_empty_text(void **st) {
    (void)st;
    int *ids, n;
    encode_ok(g_llama2, "", 1, &ids, &n);
    const int bos[] = {1};
    assert_ids(ids, n, bos, 1);
    free(ids);
    encode_ok(g_llama2, "", 0, &ids, &n);
    assert_int_equal(n, 0);
    free(ids);
    // The dummy prefix alone: " " is "▁▁" (259), as in llama.cpp's vectors.
    encode_ok(g_llama2, " ", 0, &ids, &n);
    const int sp[] = {259};
    assert_ids(ids, n, sp, 1);
    free(ids);
}

static void test_byte_fallback(void **st) {
    (void)st;
    // "½" and the llama emoji are not pieces of tok512: their bytes are.
    int *ids, n;
    encode_ok(g_tok512, "\xf0\x9f\xa6\x99", 0, &ids, &n);
    const int want[] = {429, 3 + 0xF0, 3 + 0x9F, 3 + 0xA6, 3 + 0x99};
    assert_ids(ids, n, want, 5);
    free(ids);
    // In llama2 "\n" is only a byte token: " \n" -> "▁", <0x0A>.
    encode_ok(g_llama2, "\n", 0, &ids, &n);
    const int nl[] = {29871, 13};
    assert_ids(ids, n, nl, 2);
    free(ids);
}

static void test_invalid_utf8(void **st) {
    (void)st;
    static const struct {
        const char *s;
        size_t at;
    } bad[] = {
        {"hello\xff world", 5},
        {"ab\xc3", 2},              // truncated
        {"\xc0\xaf", 0},            // overlong
        {"x\xed\xa0\x80", 1},       // surrogate
        {"\xf4\x90\x80\x80", 0},    // > U+10FFFF
        {"ok \xe2\x96 no", 3},      // cut "▁"
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int *ids = (int *)1, n = 7;
        el_error e = {0};
        assert_int_equal(el_tokenizer_encode(g_tok512, bad[i].s, strlen(bad[i].s), 1, &ids, &n, &e), EL_ERR_ARG);
        char want[128];
        snprintf(want, sizeof want, "prompt is not valid UTF-8 at byte %zu", bad[i].at);
        assert_string_equal(e.msg, want);
        assert_null(ids);
        assert_int_equal(n, 0);
    }
}

// A small vocabulary built by hand, to pin down merge order and special tokens.
typedef struct {
    const char *piece;
    float score;
    int type;
} vtok;

static el_tokenizer *make_vocab(const vtok *v, int n, int bos, int eos, int unk) {
    const char *pieces[64];
    size_t lens[64];
    float scores[64];
    int types[64];
    assert_true(n <= 64);
    for (int i = 0; i < n; i++) {
        pieces[i] = v[i].piece;
        lens[i] = strlen(v[i].piece);
        scores[i] = v[i].score;
        types[i] = v[i].type;
    }
    el_tokenizer *t = NULL;
    el_error e = {0};
    if (el_tokenizer_new_spm(n, pieces, lens, scores, types, bos, eos, unk, &t, &e) != EL_OK) fail_msg("%s", e.msg);
    return t;
}

#define SP "\xe2\x96\x81"
enum { N = EL_TOKEN_NORMAL, C = EL_TOKEN_CONTROL, U = EL_TOKEN_UNKNOWN, B = EL_TOKEN_BYTE };

static void test_merge_order(void **st) {
    (void)st;
    static const vtok v[] = {
        {"<unk>", 0, U}, {SP, -1, N}, {"a", -1, N}, {"b", -1, N},
        {"ab", 1, N},    {"ba", 1, N}, {"bb", 3, N}, {"abb", 0.5f, N},
    };
    el_tokenizer *t = make_vocab(v, 8, -1, -1, 0);
    int *ids, n;
    // Equal scores: the leftmost pair merges first ("ab" before "ba").
    encode_ok(t, "aba", 0, &ids, &n);
    const int w1[] = {1, 4, 2};
    assert_ids(ids, n, w1, 3);
    free(ids);
    // Highest score first: "bb" (3) before "ab" (1), then "a"+"bb" = "abb".
    encode_ok(t, "abb", 0, &ids, &n);
    const int w2[] = {1, 7};
    assert_ids(ids, n, w2, 2);
    free(ids);
    // "bab": "ba" and "ab" tie; the left one wins and "b" is left over.
    encode_ok(t, "bab", 0, &ids, &n);
    const int w3[] = {1, 5, 3};
    assert_ids(ids, n, w3, 3);
    free(ids);
    // No byte tokens: characters outside the vocabulary become <unk>.
    encode_ok(t, "ac", 0, &ids, &n);
    const int w4[] = {1, 2, 0};
    assert_ids(ids, n, w4, 3);
    free(ids);
    // add_bos without a BOS in the vocabulary is the caller's error.
    el_error e = {0};
    assert_int_equal(el_tokenizer_encode(t, "a", 1, 1, &ids, &n, &e), EL_ERR_ARG);
    // Without the dummy prefix.
    el_tokenizer_set_add_space_prefix(t, 0);
    encode_ok(t, "ab b", 0, &ids, &n);
    const int w5[] = {4, 1, 3};
    assert_ids(ids, n, w5, 3);
    free(ids);
    el_tokenizer_free(t);

    // A piece that runs across a word boundary ("a▁") turns off the
    // word-by-word shortcut: the merge must still happen.
    static const vtok v3[] = {{"<unk>", 0, U}, {SP, -1, N}, {"a", -1, N}, {"b", -1, N}, {"a" SP, 2, N}};
    t = make_vocab(v3, 5, -1, -1, 0);
    encode_ok(t, "a b", 0, &ids, &n);
    const int w6[] = {1, 4, 3};
    assert_ids(ids, n, w6, 3);
    free(ids);
    el_tokenizer_free(t);

    // No byte token and no <unk>: the text cannot be encoded.
    static const vtok v2[] = {{SP, 0, N}, {"a", 0, N}};
    t = make_vocab(v2, 2, -1, -1, -1);
    assert_int_equal(el_tokenizer_encode(t, "a\xc3\xa9", 3, 0, &ids, &n, &e), EL_ERR_UNSUPPORTED);
    assert_non_null(strstr(e.msg, "0xC3"));
    el_tokenizer_free(t);
}

static void test_special_not_from_text(void **st) {
    (void)st;
    // "<s>" and "<0x41>" are reachable by merges, but only as control and byte
    // tokens, which raw text must never produce.
    static const vtok v[] = {
        {"<unk>", 0, U}, {"<s>", 0, C},   {"</s>", 0, C},  {"<0x41>", 0, B}, {SP, 0, N},  {"<", 0, N},
        {"s", 0, N},     {">", 0, N},     {"<s", 5, N},    {"0", 0, N},      {"x", 0, N}, {"4", 0, N},
        {"1", 0, N},     {"<0", 4, N},    {"<0x", 4, N},   {"<0x4", 4, N},   {"<0x41", 4, N},
    };
    el_tokenizer *t = make_vocab(v, 17, 1, 2, 0);
    int *ids, n;
    encode_ok(t, "<s>", 1, &ids, &n);
    const int w1[] = {1, 4, 8, 7};
    assert_ids(ids, n, w1, 4);
    free(ids);
    encode_ok(t, "<0x41>", 0, &ids, &n);
    const int w2[] = {4, 16, 7};
    assert_ids(ids, n, w2, 3);
    free(ids);
    // But the byte token serves as the fallback for 'A'.
    encode_ok(t, "A", 0, &ids, &n);
    const int w3[] = {4, 3};
    assert_ids(ids, n, w3, 2);
    free(ids);
    el_tokenizer_free(t);
}

// The algorithm as llama2.c states it: rescan every adjacent pair after each
// merge. O(n^2), but obviously right; the real encoder must agree with it.
static int naive_encode(const el_tokenizer *t, const char *text, int *out) {
    char buf[4096];
    size_t w = 0;
    if (*text) {
        memcpy(buf, SP, 3);
        w = 3;
    }
    for (const char *p = text; *p; p++) {
        if (*p == ' ') {
            memcpy(buf + w, SP, 3);
            w += 3;
        } else {
            buf[w++] = *p;
        }
    }
    assert_true(w < sizeof buf);
    static size_t start[4096], len[4096];
    static int id[4096];
    int n = 0;
    for (size_t i = 0; i < w;) {
        unsigned char c = (unsigned char)buf[i];
        size_t cl = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        int tid = el_tokenizer_find(t, buf + i, cl);
        if (tid >= 0 && el_tokenizer_type(t, tid) == EL_TOKEN_NORMAL) {
            start[n] = i, len[n] = cl, id[n++] = tid;
        } else {
            for (size_t k = 0; k < cl; k++) {
                char piece[8];
                snprintf(piece, sizeof piece, "<0x%02X>", (unsigned char)buf[i + k]);
                start[n] = i + k, len[n] = 1, id[n++] = el_tokenizer_find(t, piece, 6);
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
            int m = el_tokenizer_find(t, buf + start[i], len[i] + len[i + 1]);
            if (m < 0 || el_tokenizer_type(t, m) != EL_TOKEN_NORMAL) continue;
            if (best < 0 || el_tokenizer_score(t, m) > best_score) {
                best = i, best_id = m, best_score = el_tokenizer_score(t, m);
            }
        }
        if (best < 0) break;
        len[best] += len[best + 1];
        id[best] = best_id;
        for (int i = best + 1; i + 1 < n; i++) start[i] = start[i + 1], len[i] = len[i + 1], id[i] = id[i + 1];
        n--;
    }
    memcpy(out, id, (size_t)n * sizeof *out);
    return n;
}

static const char *fragments[] = {
    " ",    "  ",     "the",  "The",   " dream", "dre", "am",     "ing",  "e",           "a",
    "q",    "x",      "\n",   "\t",    "1",      "23",  ".",      ",",    "\xc3\xbc",    "\xc2\xbd",
    "ü",    "\xe4\xb8\xad", "\xf0\x9f\xa6\x99", "robot", " a",   "s",   "tion", "!!", "\xe2\x96\x81", "ll",
};

static void random_text(uint64_t *rng, char *s, size_t cap) {
    size_t w = 0;
    int k = (int)(tu_rand(rng) % 40);
    for (int i = 0; i < k; i++) {
        const char *f = fragments[tu_rand(rng) % (sizeof fragments / sizeof fragments[0])];
        size_t fl = strlen(f);
        if (w + fl + 1 > cap) break;
        memcpy(s + w, f, fl);
        w += fl;
    }
    s[w] = 0;
}

static void test_matches_naive(void **st) {
    (void)st;
    uint64_t rng = 42;
    const el_tokenizer *ts[2] = {g_tok512, g_llama2};
    for (int r = 0; r < 600; r++) {
        const el_tokenizer *t = ts[r % 2];
        char text[512];
        random_text(&rng, text, sizeof text);
        int want[4096];
        int n_want = naive_encode(t, text, want);
        int *ids, n;
        encode_ok(t, text, 0, &ids, &n);
        assert_ids(ids, n, want, n_want);
        free(ids);
    }
}

// ---------------------------------------------------------------- decoding

static void test_decode_rules(void **st) {
    (void)st;
    const el_tokenizer *t = g_tok512;
    char buf[64];
    assert_int_equal(el_tokenizer_decode(t, -1, 1, buf, sizeof buf), 0);   // BOS
    assert_int_equal(el_tokenizer_decode(t, 5, 2, buf, sizeof buf), 0);    // EOS
    assert_int_equal(el_tokenizer_decode(t, 5, 0, buf, sizeof buf), 0);    // <unk>
    assert_int_equal(el_tokenizer_decode(t, 5, 512, buf, sizeof buf), 0);  // out of range
    assert_int_equal(el_tokenizer_decode(t, 5, 3 + 0xC3, buf, sizeof buf), 1);
    assert_int_equal((unsigned char)buf[0], 0xC3);
    // 368 is "▁Th": the space goes after BOS only.
    assert_int_equal(el_tokenizer_decode(t, 1, 368, buf, sizeof buf), 2);
    assert_memory_equal(buf, "Th", 2);
    assert_int_equal(el_tokenizer_decode(t, 430, 368, buf, sizeof buf), 3);
    assert_memory_equal(buf, " Th", 3);
    assert_int_equal(el_tokenizer_decode(t, 1, 429, buf, sizeof buf), 0);  // "▁" after BOS
    assert_int_equal(el_tokenizer_decode(t, 7, 429, buf, sizeof buf), 1);
    assert_int_equal(buf[0], ' ');
    // Cut at cap, never past it.
    memset(buf, 'z', sizeof buf);
    assert_int_equal(el_tokenizer_decode(t, 430, 368, buf, 2), 2);
    assert_memory_equal(buf, " Tz", 3);
    assert_int_equal(el_tokenizer_decode(t, 430, 368, buf, 0), 0);
    // A byte token for a space is a real byte, not a dummy prefix: kept after BOS.
    assert_int_equal(el_tokenizer_decode(t, 1, 3 + ' ', buf, sizeof buf), 1);
    assert_int_equal(buf[0], ' ');
}

static void test_decode_roundtrip(void **st) {
    (void)st;
    static const char *texts[] = {
        "The dream",
        "Once upon a time, there was a little girl named Lily.",
        "  two leading spaces and   gaps ",
        "F\xc3\xbchrer ied 4 \xc2\xbd months \xf0\x9f\xa6\x99 \xe4\xb8\xad\xe6\x96\x87",
        "tabs\tand\nnew\n\nlines",
        "x",
        "",
    };
    const el_tokenizer *ts[2] = {g_tok512, g_llama2};
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
            int *ids, n;
            encode_ok(ts[k], texts[i], 1, &ids, &n);
            char *s = decode_all(ts[k], ids, n);
            assert_string_equal(s, texts[i]);
            free(s);
            free(ids);
        }
    }
    // The multi-byte text really took the byte path in tok512.
    int *ids, n, bytes = 0;
    encode_ok(g_tok512, texts[3], 1, &ids, &n);
    for (int i = 0; i < n; i++) bytes += el_tokenizer_type(g_tok512, ids[i]) == EL_TOKEN_BYTE;
    assert_true(bytes >= 10);
    free(ids);
}

static void test_long_text(void **st) {
    (void)st;
    // 1 MB of mixed text: exercises the heap path at size (no timing here) and
    // must still round-trip.
    uint64_t rng = 7;
    size_t cap = 1 << 20, w = 0;
    char *text = malloc(cap + 1);
    assert_non_null(text);
    while (w + 8 < cap) {
        const char *f = fragments[tu_rand(&rng) % (sizeof fragments / sizeof fragments[0])];
        size_t fl = strlen(f);
        if (!strcmp(f, SP)) continue;  // decodes as a space, so skip it here
        memcpy(text + w, f, fl);
        w += fl;
    }
    text[w] = 0;
    int *ids, n;
    el_error e = {0};
    assert_int_equal(el_tokenizer_encode(g_llama2, text, w, 1, &ids, &n, &e), EL_OK);
    assert_true(n > (int)(w / 8) && n < (int)w);
    char *s = decode_all(g_llama2, ids, n);
    assert_int_equal(strlen(s), w);
    assert_true(memcmp(s, text, w) == 0);
    free(s);
    free(ids);
    free(text);
}

// ---------------------------------------------------------------- hostile files

static void put_i32(unsigned char *p, int32_t v) { memcpy(p, &v, 4); }

// A well-formed llama2.c file with n tokens: <unk>, <s>, </s>, then "t3", "t4"...
static size_t make_file(unsigned char *buf, int n) {
    size_t w = 0;
    put_i32(buf, 8);
    w = 4;
    for (int i = 0; i < n; i++) {
        char piece[16];
        snprintf(piece, sizeof piece, "%s", i == 0 ? "<unk>" : i == 1 ? "<s>" : i == 2 ? "</s>" : "t");
        if (i >= 3) snprintf(piece, sizeof piece, "t%d", i);
        float score = (float)-i;
        memcpy(buf + w, &score, 4);
        put_i32(buf + w + 4, (int32_t)strlen(piece));
        memcpy(buf + w + 8, piece, strlen(piece));
        w += 8 + strlen(piece);
    }
    return w;
}

static void expect_load_error(const void *data, size_t n, int n_vocab, el_status code, const char *frag) {
    const char *path = tu_write_tmp("bad-tok.bin", data, n);
    el_tokenizer *t = (el_tokenizer *)1;
    el_error e = {0};
    assert_int_equal(el_tokenizer_load_llama2c(path, n_vocab, &t, &e), code);
    assert_null(t);
    if (!strstr(e.msg, path)) fail_msg("error does not name the file: %s", e.msg);
    if (frag && !strstr(e.msg, frag)) fail_msg("error lacks \"%s\": %s", frag, e.msg);
}

static void test_bad_files(void **st) {
    (void)st;
    unsigned char buf[1024];
    size_t n = make_file(buf, 10);
    {
        el_tokenizer *t = NULL;
        el_error e = {0};
        assert_int_equal(el_tokenizer_load_llama2c_memory(buf, n, "mem", 10, &t, &e), EL_OK);
        int *ids, k;
        encode_ok(t, "", 1, &ids, &k);
        free(ids);
        assert_int_equal(el_tokenizer_find(t, "t9", 2), 9);
        el_tokenizer_free(t);
    }
    // Truncated in the middle of token 9's bytes, and in its header.
    expect_load_error(buf, n - 1, 10, EL_ERR_FORMAT, "token 9");
    expect_load_error(buf, n - 5, 10, EL_ERR_FORMAT, "token 9");
    // More tokens expected than the file holds.
    expect_load_error(buf, n, 11, EL_ERR_FORMAT, "token 10");
    expect_load_error(buf, 2, 10, EL_ERR_FORMAT, "header");
    // Negative and huge lengths of token 4 (offset: header, 3 specials, t3).
    size_t off4 = 4 + (8 + 5) + (8 + 3) + (8 + 4) + (8 + 2);
    unsigned char bad[1024];
    memcpy(bad, buf, n);
    put_i32(bad + off4 + 4, -3);
    expect_load_error(bad, n, 10, EL_ERR_FORMAT, "token 4 has negative length -3");
    put_i32(bad + off4 + 4, 0x7fffffff);
    expect_load_error(bad, n, 10, EL_ERR_FORMAT, "token 4 has length 2147483647");
    // Non-finite score.
    memcpy(bad, buf, n);
    float inf = INFINITY;
    memcpy(bad + off4, &inf, 4);
    expect_load_error(bad, n, 10, EL_ERR_FORMAT, "token 4 has a non-finite score");
    // Vocabulary size the caller gave is nonsense.
    expect_load_error(buf, n, 2, EL_ERR_RANGE, NULL);
    expect_load_error(buf, n, -1, EL_ERR_RANGE, NULL);
    // The real file with one token too many.
    el_tokenizer *t = (el_tokenizer *)1;
    el_error e = {0};
    const char *path = tu_model_path("tok512.bin");
    assert_int_equal(el_tokenizer_load_llama2c(path, 513, &t, &e), EL_ERR_FORMAT);
    assert_null(t);
    assert_non_null(strstr(e.msg, path));
    assert_non_null(strstr(e.msg, "token 512"));
    // Missing file.
    assert_int_equal(el_tokenizer_load_llama2c(tu_tmp_path("no-such-tok.bin"), 512, &t, &e), EL_ERR_IO);
    assert_non_null(strstr(e.msg, "no-such-tok.bin"));
}

static void test_new_spm_checks(void **st) {
    (void)st;
    const char *pieces[3] = {"a", "<0xZZ>", "c"};
    size_t lens[3] = {1, 6, 1};
    float scores[3] = {0, 0, NAN};
    int types[3] = {N, B, N};
    el_tokenizer *t = (el_tokenizer *)1;
    el_error e = {0};
    assert_int_equal(el_tokenizer_new_spm(3, pieces, lens, NULL, types, -1, -1, -1, &t, &e), EL_ERR_FORMAT);
    assert_null(t);
    assert_non_null(strstr(e.msg, "token 1"));
    types[1] = N;
    assert_int_equal(el_tokenizer_new_spm(3, pieces, lens, scores, types, -1, -1, -1, &t, &e), EL_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "token 2"));
    types[2] = 9;
    assert_int_equal(el_tokenizer_new_spm(3, pieces, lens, NULL, types, -1, -1, -1, &t, &e), EL_ERR_FORMAT);
    assert_int_equal(el_tokenizer_new_spm(3, pieces, lens, NULL, NULL, 3, -1, -1, &t, &e), EL_ERR_RANGE);
    assert_non_null(strstr(e.msg, "bos id 3"));
    assert_int_equal(el_tokenizer_new_spm(0, pieces, lens, NULL, NULL, -1, -1, -1, &t, &e), EL_ERR_RANGE);
    assert_int_equal(el_tokenizer_new_spm(3, pieces, lens, NULL, NULL, -1, -1, -1, &t, &e), EL_OK);
    assert_int_equal(el_tokenizer_type(t, 1), EL_TOKEN_NORMAL);
    assert_true(el_tokenizer_score(t, 1) == 0.0f);
    el_tokenizer_free(t);
    el_tokenizer_free(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_fields),
        cmocka_unit_test(test_llama2_reference_tsv),
        cmocka_unit_test(test_tok512_the_dream),
        cmocka_unit_test(test_empty_text),
        cmocka_unit_test(test_byte_fallback),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_merge_order),
        cmocka_unit_test(test_special_not_from_text),
        cmocka_unit_test(test_matches_naive),
        cmocka_unit_test(test_decode_rules),
        cmocka_unit_test(test_decode_roundtrip),
        cmocka_unit_test(test_long_text),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_new_spm_checks),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
