// Unit tests for byte-level BPE: the GPT-2 / Llama 3 / Qwen2 / SmolLM
// pre-tokenizers on tricky inputs (expected splits worked out by hand from the
// regular expressions quoted in src/tokenize/pretok.c), the Unicode class
// table, merge order, Llama 3's ignore_merges, special-token parsing for both
// tokenizer kinds, and encode/decode round trips with the gpt-2 vocabulary.
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/gguf.h"
#include "edgellm/tokenize.h"
#include "testutil.h"
#include "tokenize/unicode_tables.h"

#define END NULL

// Splits text with pre and compares with the NULL-terminated list of pieces.
static void check_split(el_pretok pre, const char *text, ...) {
    size_t *ends, n;
    el_error e = {0};
    size_t len = strlen(text);
    if (el_pretok_split(pre, text, len, &ends, &n, &e) != EL_OK) fail_msg("split \"%s\": %s", text, e.msg);
    va_list ap;
    va_start(ap, text);
    size_t k = 0, from = 0;
    for (const char *want; (want = va_arg(ap, const char *)) != NULL; k++) {
        if (k >= n) fail_msg("%s \"%s\": %zu pieces, want more (next \"%s\")", el_pretok_name(pre), text, n, want);
        size_t got_len = ends[k] - from;
        if (got_len != strlen(want) || memcmp(text + from, want, got_len) != 0)
            fail_msg("%s \"%s\": piece %zu is \"%.*s\", want \"%s\"", el_pretok_name(pre), text, k, (int)got_len,
                     text + from, want);
        from = ends[k];
    }
    va_end(ap);
    if (k != n) fail_msg("%s \"%s\": %zu pieces, want %zu", el_pretok_name(pre), text, n, k);
    assert_int_equal(from, len);
    free(ends);
}

static const el_pretok G = EL_PRETOK_GPT2, L3 = EL_PRETOK_LLAMA3, Q = EL_PRETOK_QWEN2, S = EL_PRETOK_SMOLLM;

static void test_contractions(void **st) {
    (void)st;
    check_split(G, "don't we'll", "don", "'t", " we", "'ll", END);
    check_split(L3, "don't we'll", "don", "'t", " we", "'ll", END);
    // Upper case: only the (?i) expressions take "'M" / "'RE" as contractions.
    check_split(G, "I'M here's", "I", "'", "M", " here", "'s", END);
    check_split(L3, "I'M here's", "I", "'M", " here", "'s", END);
    check_split(Q, "WE'RE", "WE", "'RE", END);
    check_split(G, "WE'RE", "WE", "'", "RE", END);
    // "'all" is no contraction: GPT-2 makes "'" a piece of punctuation,
    // Llama 3 lets it lead the letters ([^\r\n\p{L}\p{N}]?\p{L}+).
    check_split(G, "y'all", "y", "'", "all", END);
    check_split(L3, "y'all", "y", "'all", END);
    // "'sa" still starts with the contraction: alternatives go in order.
    check_split(L3, "'sa", "'s", "a", END);
    // U+017F LONG S folds to s under (?i).
    check_split(L3, "it'\xc5\xbf", "it", "'\xc5\xbf", END);
    check_split(G, "it'\xc5\xbf", "it", "'", "\xc5\xbf", END);
}

static void test_digits(void **st) {
    (void)st;
    check_split(G, "12345", "12345", END);
    check_split(L3, "12345", "123", "45", END);
    check_split(Q, "12345", "1", "2", "3", "4", "5", END);
    check_split(S, "12345", "1", "2", "3", "4", "5", END);
    // A space before digits: GPT-2 keeps it (" ?\p{N}+"), the others cannot.
    check_split(G, " 12345 abc", " 12345", " abc", END);
    check_split(L3, " 12345 abc", " ", "123", "45", " abc", END);
    check_split(Q, " 12 abc", " ", "1", "2", " abc", END);
    // SmolLM splits the digits out first, so the space before them is alone.
    check_split(S, " 12 abc", " ", "1", "2", " abc", END);
    check_split(S, "a1b", "a", "1", "b", END);
    check_split(L3, "1314151\xe5\xa4\xa9", "131", "415", "1", "\xe5\xa4\xa9", END);
    // Arabic-Indic digits are \p{N} (Nd); "½" is too (No).
    check_split(L3, "\xd9\xa3\xd9\xa4\xd9\xa5\xd9\xa6", "\xd9\xa3\xd9\xa4\xd9\xa5", "\xd9\xa6", END);
    check_split(G, "x\xc2\xbd", "x", "\xc2\xbd", END);
}

static void test_whitespace(void **st) {
    (void)st;
    // \s+(?!\S) leaves the last space of a run to the word after it.
    check_split(G, "a   b", "a", "  ", " b", END);
    check_split(L3, "a   b", "a", "  ", " b", END);
    check_split(G, "a  ", "a", "  ", END);  // at the end the run stays whole
    check_split(G, "\t\tx", "\t", "\t", "x", END);
    check_split(L3, "\t\tx", "\t", "\tx", END);  // a tab may lead letters
    // \r\n: Llama 3 takes whitespace up to the last newline (\s*[\r\n]+).
    check_split(G, "a\r\n\r\nb", "a", "\r\n\r", "\n", "b", END);
    check_split(L3, "a\r\n\r\nb", "a", "\r\n\r\n", "b", END);
    check_split(G, "x \n  y", "x", " \n ", " y", END);
    check_split(L3, "x \n  y", "x", " \n", " ", " y", END);
    // Llama 3 punctuation takes the newlines after it.
    check_split(L3, "!!\n\nx", "!!\n\n", "x", END);
    check_split(G, "!!\n\nx", "!!", "\n", "\n", "x", END);
    check_split(G, "\n", "\n", END);
    check_split(L3, "   ", "   ", END);
    // U+3000 and U+0085 are White_Space; U+001C is not (Python's isspace()
    // says it is, \s does not).
    check_split(G, "a\xe3\x80\x80" "b", "a", "\xe3\x80\x80", "b", END);
    check_split(L3, "a\xe3\x80\x80" "b", "a", "\xe3\x80\x80" "b", END);
    check_split(G, "x\xc2\x85!", "x", "\xc2\x85", "!", END);
    check_split(G, "x\x1c!", "x", "\x1c!", END);
}

static void test_scripts(void **st) {
    (void)st;
    // CJK ideographs are letters (Lo).
    check_split(G, "\xe6\x88\x91\xe6\x83\xb3\xe5\x9c\xa8" "apple", "\xe6\x88\x91\xe6\x83\xb3\xe5\x9c\xa8" "apple", END);
    check_split(Q, "\xe4\xbd\xa0\xe5\xa5\xbd \xe4\xb8\x96\xe7\x95\x8c", "\xe4\xbd\xa0\xe5\xa5\xbd",
                " \xe4\xb8\x96\xe7\x95\x8c", END);
    // Emoji are neither letters nor numbers.
    check_split(G, "hi \xf0\x9f\x98\x81\xf0\x9f\x98\x81 !", "hi", " \xf0\x9f\x98\x81\xf0\x9f\x98\x81", " !", END);
    check_split(L3, "hi \xf0\x9f\x98\x81\xf0\x9f\x98\x81 !", "hi", " \xf0\x9f\x98\x81\xf0\x9f\x98\x81", " !", END);
    check_split(G, "\xf0\x9f\x98\x81" "abc", "\xf0\x9f\x98\x81", "abc", END);
    check_split(L3, "\xf0\x9f\x98\x81" "abc", "\xf0\x9f\x98\x81" "abc", END);
    // A combining acute (U+0301, Mn) is not a letter: it splits the word.
    check_split(G, "e\xcc\x81te", "e", "\xcc\x81", "te", END);
    check_split(L3, "e\xcc\x81te", "e", "\xcc\x81te", END);
    check_split(G, "\xc3\x9cn\xc3\xaf" "c\xc3\xb6" "d\xc3\xa9 stra\xc3\x9f" "e", "\xc3\x9cn\xc3\xaf" "c\xc3\xb6" "d\xc3\xa9",
                " stra\xc3\x9f" "e", END);
    check_split(L3, "Hello, world!", "Hello", ",", " world", "!", END);
    check_split(G, "", END);
}

static void test_classes(void **st) {
    (void)st;
    assert_int_equal(tok_cp_class('a'), TOK_CP_LETTER);
    assert_int_equal(tok_cp_class(0x4E2D), TOK_CP_LETTER);   // 中
    assert_int_equal(tok_cp_class(0x017F), TOK_CP_LETTER);   // ſ
    assert_int_equal(tok_cp_class(0x02B0), TOK_CP_LETTER);   // ʰ (Lm)
    assert_int_equal(tok_cp_class(0x0660), TOK_CP_NUMBER);   // ٠ (Nd)
    assert_int_equal(tok_cp_class(0x2167), TOK_CP_NUMBER);   // Ⅷ (Nl)
    assert_int_equal(tok_cp_class(0x00BD), TOK_CP_NUMBER);   // ½ (No)
    assert_int_equal(tok_cp_class(0x0301), TOK_CP_OTHER);    // combining acute (Mn)
    assert_int_equal(tok_cp_class(0x1F601), TOK_CP_OTHER);   // 😁
    assert_int_equal(tok_cp_class(0x10FFFF), TOK_CP_OTHER);  // unassigned
    // White_Space, all 25 of them (Unicode PropList.txt).
    static const uint32_t ws[] = {0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003,
                                  0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200A, 0x2028, 0x2029, 0x202F,
                                  0x205F, 0x3000};
    int n_ws = 0;
    for (uint32_t cp = 0; cp < 0x110000; cp++) n_ws += tok_cp_class(cp) == TOK_CP_SPACE;
    assert_int_equal(n_ws, 25);
    for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) assert_int_equal(tok_cp_class(ws[i]), TOK_CP_SPACE);
    assert_int_equal(tok_cp_class(0x1C), TOK_CP_OTHER);
    assert_int_equal(tok_cp_class(0x200B), TOK_CP_OTHER);  // zero width space is Cf, not White_Space
}

static void test_names(void **st) {
    (void)st;
    assert_int_equal(el_pretok_from_name("gpt-2", 5), EL_PRETOK_GPT2);
    assert_int_equal(el_pretok_from_name("default", 7), EL_PRETOK_GPT2);
    assert_int_equal(el_pretok_from_name("llama-bpe", 9), EL_PRETOK_LLAMA3);
    assert_int_equal(el_pretok_from_name("llama3", 6), EL_PRETOK_LLAMA3);
    assert_int_equal(el_pretok_from_name("qwen2", 5), EL_PRETOK_QWEN2);
    assert_int_equal(el_pretok_from_name("smollm", 6), EL_PRETOK_SMOLLM);
    assert_int_equal(el_pretok_from_name("qwen", 4), EL_PRETOK_NONE);
    assert_int_equal(el_pretok_from_name("qwen2x", 6), EL_PRETOK_NONE);
    size_t *ends, n;
    el_error e = {0};
    assert_int_equal(el_pretok_split(G, "a\xff", 2, &ends, &n, &e), EL_ERR_ARG);
    assert_null(ends);
}

// ---------------------------------------------------------------- merging

// The 256 byte characters (ids 0..255 in byte order) plus extra pieces.
static el_tokenizer *small_bpe(el_pretok pre, const char *const *extra, const int *extra_types, int n_extra,
                               const char *const *merges, int n_merges) {
    static char chars[256][3];
    const char *pieces[300];
    size_t lens[300], mlens[64];
    int types[300];
    for (int b = 0, k = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
        unsigned cp = printable ? (unsigned)b : 256u + (unsigned)k++;
        memset(chars[b], 0, 3);
        if (cp < 0x80) chars[b][0] = (char)cp;
        else chars[b][0] = (char)(0xC0 | (cp >> 6)), chars[b][1] = (char)(0x80 | (cp & 0x3F));
        pieces[b] = chars[b], lens[b] = strlen(chars[b]), types[b] = EL_TOKEN_NORMAL;
    }
    for (int i = 0; i < n_extra; i++) {
        pieces[256 + i] = extra[i], lens[256 + i] = strlen(extra[i]);
        types[256 + i] = extra_types ? extra_types[i] : EL_TOKEN_NORMAL;
    }
    for (int i = 0; i < n_merges; i++) mlens[i] = strlen(merges[i]);
    el_tokenizer *t = NULL;
    el_error e = {0};
    if (el_tokenizer_new_bpe(256 + n_extra, pieces, lens, types, n_merges, merges, mlens, pre, -1, -1, -1, &t, &e))
        fail_msg("%s", e.msg);
    return t;
}

static void expect_ids(const el_tokenizer *t, const char *text, unsigned flags, const int *want, int n_want) {
    int *ids, n;
    el_error e = {0};
    if (el_tokenizer_encode_ex(t, text, strlen(text), flags, &ids, &n, &e)) fail_msg("\"%s\": %s", text, e.msg);
    for (int i = 0; i < n && i < n_want; i++) {
        if (ids[i] != want[i]) fail_msg("\"%s\" id %d: got %d, want %d", text, i, ids[i], want[i]);
    }
    if (n != n_want) fail_msg("\"%s\": %d ids, want %d", text, n, n_want);
    free(ids);
}

// In small_bpe vocabularies the token of byte b is b ('a' is 97, ' ' is 32).
static void test_merge_order(void **st) {
    (void)st;
    // 256 "aa", 257 "ab", 258 "aab". Ranks: "a b" 0, "a a" 1, "aa b" 2.
    const char *extra[] = {"aa", "ab", "aab"};
    const char *merges[] = {"a b", "a a", "aa b"};
    el_tokenizer *t = small_bpe(G, extra, NULL, 3, merges, 3);
    // "aab": "a b" (rank 0) wins over "a a" -> a ab; no "a ab" merge.
    expect_ids(t, "aab", 0, (const int[]){'a', 257}, 2);
    // "aaa": "a a" at both places; the leftmost goes first -> aa a.
    expect_ids(t, "aaa", 0, (const int[]){256, 'a'}, 2);
    // "aaaa" -> aa aa (the second pair is still there after the first merge).
    expect_ids(t, "aaaa", 0, (const int[]){256, 256}, 2);
    el_tokenizer_free(t);

    // Without the "a b" merge, "aab" goes a a -> aa, then aa b -> aab.
    const char *merges2[] = {"a a", "aa b"};
    t = small_bpe(G, extra, NULL, 3, merges2, 2);
    expect_ids(t, "aab", 0, (const int[]){258}, 1);
    el_tokenizer_free(t);
}

static void test_ignore_merges(void **st) {
    (void)st;
    // 256 "Ġxyz" is a piece that no merge builds. Llama 3 (ignore_merges)
    // still gives it for the word " xyz"; Qwen2 and GPT-2 spell it out.
    const char *extra[] = {"\xc4\xa0xyz", "xy"};
    const char *merges[] = {"x y"};
    el_tokenizer *t = small_bpe(L3, extra, NULL, 2, merges, 1);
    expect_ids(t, " xyz", 0, (const int[]){256}, 1);
    expect_ids(t, " xyzz", 0, (const int[]){' ', 257, 'z', 'z'}, 4);
    el_tokenizer_free(t);
    t = small_bpe(Q, extra, NULL, 2, merges, 1);
    expect_ids(t, " xyz", 0, (const int[]){' ', 257, 'z'}, 3);
    el_tokenizer_free(t);
}

static void test_special_bpe(void **st) {
    (void)st;
    // 256 "<|a|>" control, 257 "<|a|>b" user-defined (longer: wins where
    // both match), 258 "<|x" control. Merges none.
    const char *extra[] = {"<|a|>", "<|a|>b", "<|x"};
    const int types[] = {EL_TOKEN_CONTROL, EL_TOKEN_USER_DEFINED, EL_TOKEN_CONTROL};
    el_tokenizer *t = small_bpe(G, extra, types, 3, NULL, 0);
    expect_ids(t, "<|a|>c", EL_ENCODE_SPECIAL, (const int[]){256, 'c'}, 2);
    expect_ids(t, "<|a|>b", EL_ENCODE_SPECIAL, (const int[]){257}, 1);
    expect_ids(t, "q<|x<|a|>", EL_ENCODE_SPECIAL, (const int[]){'q', 258, 256}, 3);
    // The text between is pre-tokenized on its own: " " before a special
    // token is a whole whitespace run at the end of its fragment.
    expect_ids(t, "a <|x", EL_ENCODE_SPECIAL, (const int[]){'a', ' ', 258}, 3);
    // Without the flag control pieces are plain text (byte characters
    // here); user-defined ones are still whole tokens.
    expect_ids(t, "<|x", 0, (const int[]){'<', '|', 'x'}, 3);
    expect_ids(t, "<|a|>b<|a|>", 0, (const int[]){257, '<', '|', 'a', '|', '>'}, 6);
    // Decoding: control tokens print nothing, user-defined ones as they are.
    char buf[16];
    assert_int_equal(el_tokenizer_decode(t, -1, 256, buf, sizeof buf), 0);
    assert_int_equal(el_tokenizer_decode(t, -1, 257, buf, sizeof buf), 6);
    assert_memory_equal(buf, "<|a|>b", 6);
    // No BOS in this vocabulary: asking for one is an error.
    int *ids, n;
    el_error e = {0};
    assert_int_equal(el_tokenizer_encode_ex(t, "a", 1, EL_ENCODE_ADD_BOS, &ids, &n, &e), EL_ERR_ARG);
    assert_int_equal(el_tokenizer_add_bos(t), 0);
    el_tokenizer_free(t);
}

static void test_special_spm(void **st) {
    (void)st;
    el_gguf *g;
    el_error e = {0};
    assert_int_equal(el_gguf_open(tu_model_path("reference/ggml-vocab-llama-spm.gguf"), &g, &e), EL_OK);
    el_tokenizer *t = NULL;
    assert_int_equal(el_tokenizer_from_gguf(g, &t, &e), EL_OK);
    el_gguf_close(g);
    assert_int_equal(el_tokenizer_add_bos(t), 1);
    // Pieces (checked with el_tokenizer_find): 6324 "▁Hi", 263 "▁a", 289 "▁b".
    assert_int_equal(el_tokenizer_find(t, "\xe2\x96\x81Hi", 5), 6324);
    assert_int_equal(el_tokenizer_find(t, "\xe2\x96\x81" "a", 4), 263);
    assert_int_equal(el_tokenizer_find(t, "\xe2\x96\x81" "b", 4), 289);
    // <s> and </s> are control tokens: found in the text, and each run of
    // text gets its own dummy-prefix space.
    expect_ids(t, "<s>Hi</s>", EL_ENCODE_SPECIAL, (const int[]){1, 6324, 2}, 3);
    expect_ids(t, "a<s>b", EL_ENCODE_SPECIAL | EL_ENCODE_ADD_BOS, (const int[]){1, 263, 1, 289}, 4);
    expect_ids(t, "a", EL_ENCODE_ADD_BOS | EL_ENCODE_ADD_EOS, (const int[]){1, 263, 2}, 3);
    // <unk> is not control: it stays text.
    int *ids, n;
    assert_int_equal(el_tokenizer_encode_ex(t, "<unk>", 5, EL_ENCODE_SPECIAL, &ids, &n, &e), EL_OK);
    for (int i = 0; i < n; i++) assert_int_not_equal(ids[i], 0);
    free(ids);
    el_tokenizer_free(t);
}

// ---------------------------------------------------------------- gpt-2 vocabulary

static el_tokenizer *g_gpt2;
static el_tokenizer *g_pre[4];  // the gpt-2 vocabulary and merges under each pre-tokenizer
static const el_pretok g_pres[4] = {EL_PRETOK_GPT2, EL_PRETOK_LLAMA3, EL_PRETOK_QWEN2, EL_PRETOK_SMOLLM};

static int setup(void **st) {
    (void)st;
    el_gguf *g;
    el_error e = {0};
    if (el_gguf_open(tu_model_path("reference/ggml-vocab-gpt-2.gguf"), &g, &e) != EL_OK ||
        el_tokenizer_from_gguf(g, &g_gpt2, &e) != EL_OK) {
        fprintf(stderr, "%s\n", e.msg);
        return -1;
    }
    const el_gguf_kv *tk = el_gguf_find(g, "tokenizer.ggml.tokens"), *mk = el_gguf_find(g, "tokenizer.ggml.merges");
    int nv = (int)tk->arr_n, nm = (int)mk->arr_n;
    const char **pieces = calloc((size_t)nv, sizeof *pieces), **merges = calloc((size_t)nm, sizeof *merges);
    size_t *lens = calloc((size_t)nv, sizeof *lens), *mlens = calloc((size_t)nm, sizeof *mlens);
    int *types = calloc((size_t)nv, sizeof *types);
    for (int i = 0; i < nv; i++)
        pieces[i] = tk->strs[i].ptr, lens[i] = (size_t)tk->strs[i].len, types[i] = el_tokenizer_type(g_gpt2, i);
    for (int i = 0; i < nm; i++) merges[i] = mk->strs[i].ptr, mlens[i] = (size_t)mk->strs[i].len;
    for (int k = 0; k < 4; k++) {
        if (el_tokenizer_new_bpe(nv, pieces, lens, types, nm, merges, mlens, g_pres[k], 50256, 50256, -1, &g_pre[k],
                                 &e) != EL_OK) {
            fprintf(stderr, "%s\n", e.msg);
            return -1;
        }
    }
    free(pieces), free(merges), free(lens), free(mlens), free(types);
    el_gguf_close(g);
    return 0;
}

static int teardown(void **st) {
    (void)st;
    el_tokenizer_free(g_gpt2);
    for (int k = 0; k < 4; k++) el_tokenizer_free(g_pre[k]);
    return 0;
}

static size_t put_cp(char *o, uint32_t cp) {
    if (cp < 0x80) return o[0] = (char)cp, 1;
    if (cp < 0x800) return o[0] = (char)(0xC0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3F)), 2;
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12), o[1] = (char)(0x80 | ((cp >> 6) & 0x3F)), o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18), o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

// decode(encode(x)) == x for random UTF-8 mixing ASCII, controls, Latin-1,
// CJK, emoji and any other code point, under every pre-tokenizer.
static void test_round_trip(void **st) {
    (void)st;
    uint64_t rng = 12345;
    char text[2048], out[8192];
    for (int iter = 0; iter < 400; iter++) {
        size_t len = 0;
        int n_cp = (int)(tu_rand(&rng) % 200);
        for (int k = 0; k < n_cp; k++) {
            uint64_t r = tu_rand(&rng);
            uint32_t cp;
            switch (r % 6) {
            case 0: cp = (uint32_t)(r >> 8) % 0x80; break;
            case 1: cp = " \n\t\r'"[(r >> 8) % 5]; break;
            case 2: cp = 0x80 + (uint32_t)(r >> 8) % 0x180; break;
            case 3: cp = 0x4E00 + (uint32_t)(r >> 8) % 0x500; break;
            case 4: cp = 0x1F600 + (uint32_t)(r >> 8) % 0x50; break;
            default: cp = (uint32_t)(r >> 8) % 0x110000; break;
            }
            if (cp >= 0xD800 && cp <= 0xDFFF) cp = 'x';
            len += put_cp(text + len, cp);
        }
        assert_true(el_utf8_valid(text, len));
        // The gpt-2 vocabulary with each pre-tokenizer in turn: the split
        // changes the ids, never the bytes they stand for.
        for (int k = 0; k < 4; k++) {
            el_tokenizer *t = g_pre[k];
            int *ids, n;
            el_error e = {0};
            if (el_tokenizer_encode_ex(t, text, len, 0, &ids, &n, &e) != EL_OK) fail_msg("%s", e.msg);
            size_t w = 0;
            for (int i = 0; i < n; i++)
                w += el_tokenizer_decode(t, i ? ids[i - 1] : -1, ids[i], out + w, sizeof out - w);
            if (w != len || memcmp(out, text, len) != 0)
                fail_msg("%s: round trip %d differs (%zu vs %zu bytes)", el_pretok_name(g_pres[k]), iter, w, len);
            free(ids);
        }
    }
}

// A token may end inside a UTF-8 sequence: " 😁" (20 F0 9F 98 81) is 30325
// 223 in the conformance vectors ("... you 😁 ?"); decoding gives the raw
// bytes of each part.
static void test_partial_utf8(void **st) {
    (void)st;
    expect_ids(g_gpt2, " \xf0\x9f\x98\x81", 0, (const int[]){30325, 223}, 2);
    char a[8], b[8];
    size_t na = el_tokenizer_decode(g_gpt2, -1, 30325, a, sizeof a);
    size_t nb = el_tokenizer_decode(g_gpt2, 30325, 223, b, sizeof b);
    assert_int_equal(na, 4);
    assert_int_equal(nb, 1);
    assert_memory_equal(a, " \xf0\x9f\x98", 4);
    assert_int_equal((unsigned char)b[0], 0x81);
    // A short buffer gets the first bytes.
    assert_int_equal(el_tokenizer_decode(g_gpt2, -1, 30325, a, 2), 2);
    assert_memory_equal(a, " \xf0", 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_contractions), cmocka_unit_test(test_digits),
        cmocka_unit_test(test_whitespace),   cmocka_unit_test(test_scripts),
        cmocka_unit_test(test_classes),      cmocka_unit_test(test_names),
        cmocka_unit_test(test_merge_order),  cmocka_unit_test(test_ignore_merges),
        cmocka_unit_test(test_special_bpe),  cmocka_unit_test(test_special_spm),
        cmocka_unit_test(test_round_trip),   cmocka_unit_test(test_partial_utf8),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
