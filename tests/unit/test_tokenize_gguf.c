// Unit tests for el_tokenizer_from_gguf: the GGUF ecosystem's llama-spm and
// gpt-2 conformance vectors, and tokenizer metadata that is wrong in various ways.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/gguf.h"
#include "edgellm/tokenize.h"
#include "testutil.h"

#define SEP "\n__ggml_vocab_test__\n"

static el_tokenizer *load(const char *path, el_gguf **g) {
    el_error e = {0};
    if (el_gguf_open(path, g, &e) != EL_OK) fail_msg("%s", e.msg);
    el_tokenizer *t = NULL;
    if (el_tokenizer_from_gguf(*g, &t, &e) != EL_OK) fail_msg("%s", e.msg);
    return t;
}

// The .inp file is each test string followed by "\n__ggml_vocab_test__\n";
// the .out file has one line per string: the ids, each preceded by a space.
static void run_vectors(const char *name) {
    char path[512];
    el_gguf *g;
    snprintf(path, sizeof path, "reference/%s", name);
    el_tokenizer *t = load(tu_model_path(path), &g);
    el_gguf_close(g);  // the tokenizer keeps its own copy
    char *inp, *outp;
    size_t ninp, nout;
    el_error e = {0};
    snprintf(path, sizeof path, "reference/%s.inp", name);
    assert_int_equal(el_read_file(tu_model_path(path), 1 << 20, &inp, &ninp, &e), EL_OK);
    snprintf(path, sizeof path, "reference/%s.out", name);
    assert_int_equal(el_read_file(tu_model_path(path), 1 << 20, &outp, &nout, &e), EL_OK);
    const size_t seplen = strlen(SEP);
    char *p = inp, *q = outp;
    int cases = 0;
    for (char *end; (end = strstr(p, SEP)) != NULL; p = end + seplen) {
        char *nl = strchr(q, '\n');
        assert_non_null(nl);
        *nl = 0;
        int *ids, n;
        if (el_tokenizer_encode(t, p, (size_t)(end - p), 0, &ids, &n, &e) != EL_OK) fail_msg("case %d: %s", cases, e.msg);
        int k = 0;
        for (char *s = q, *se;; s = se) {
            long v = strtol(s, &se, 10);
            if (se == s) break;
            if (k >= n || ids[k] != v) fail_msg("case %d, id %d: got %d, want %ld", cases, k, k < n ? ids[k] : -1, v);
            k++;
        }
        if (k != n) fail_msg("case %d: got %d ids, want %d", cases, n, k);
        free(ids);
        q = nl + 1;
        cases++;
    }
    assert_int_equal(p - inp, (ptrdiff_t)ninp);  // the file ends with a separator
    assert_int_equal(cases, 46);  // both vector sets have 46 cases
    assert_int_equal(*q, 0);  // and every expected line was used
    free(inp);
    free(outp);
    el_tokenizer_free(t);
}

static void test_llama_spm_vectors(void **st) {
    (void)st;
    run_vectors("ggml-vocab-llama-spm.gguf");
}

static void test_gpt2_vectors(void **st) {
    (void)st;
    run_vectors("ggml-vocab-gpt-2.gguf");
}

static void test_fields(void **st) {
    (void)st;
    el_gguf *g;
    el_tokenizer *t = load(tu_model_path("reference/ggml-vocab-llama-spm.gguf"), &g);
    assert_int_equal(el_tokenizer_n_vocab(t), 32000);
    assert_int_equal(el_tokenizer_bos(t), 1);
    assert_int_equal(el_tokenizer_eos(t), 2);
    assert_int_equal(el_tokenizer_unk(t), 0);
    assert_int_equal(el_tokenizer_type(t, 0), EL_TOKEN_UNKNOWN);
    assert_int_equal(el_tokenizer_type(t, 2), EL_TOKEN_CONTROL);
    assert_int_equal(el_tokenizer_type(t, 13), EL_TOKEN_BYTE);
    assert_int_equal(el_tokenizer_find(t, "\xe2\x96\x81Hello", 8), 15043);
    int *ids, n;
    el_error e = {0};
    assert_int_equal(el_tokenizer_encode(t, "Hello world", 11, 1, &ids, &n, &e), EL_OK);
    const int want[] = {1, 15043, 3186};
    assert_int_equal(n, 3);
    assert_memory_equal(ids, want, sizeof want);
    char buf[64];
    assert_int_equal(el_tokenizer_decode(t, 1, 15043, buf, sizeof buf), 5);
    assert_memory_equal(buf, "Hello", 5);
    free(ids);
    el_tokenizer_free(t);
    el_gguf_close(g);
}

static void test_gpt2_fields(void **st) {
    (void)st;
    el_gguf *g;
    el_tokenizer *t = load(tu_model_path("reference/ggml-vocab-gpt-2.gguf"), &g);
    el_gguf_close(g);
    assert_int_equal(el_tokenizer_kind_of(t), EL_TOKENIZER_BPE);
    assert_int_equal(el_tokenizer_pretok(t), EL_PRETOK_GPT2);
    assert_int_equal(el_tokenizer_n_vocab(t), 50257);
    assert_int_equal(el_tokenizer_bos(t), 50256);
    assert_int_equal(el_tokenizer_eos(t), 50256);
    assert_int_equal(el_tokenizer_add_bos(t), 0);  // no add_bos_token in the file
    assert_int_equal(el_tokenizer_type(t, 50256), EL_TOKEN_CONTROL);
    assert_int_equal(el_tokenizer_find(t, "\xc4\xa0the", 5), 262);  // "Ġthe"
    char buf[64];
    assert_int_equal(el_tokenizer_decode(t, -1, 262, buf, sizeof buf), 4);
    assert_memory_equal(buf, " the", 4);
    assert_int_equal(el_tokenizer_decode(t, -1, 50256, buf, sizeof buf), 0);  // control: nothing
    // 198 is "Ċ" (U+010A), which stands for byte 0x0A.
    assert_int_equal(el_tokenizer_decode(t, -1, 198, buf, sizeof buf), 1);
    assert_int_equal(buf[0], '\n');
    el_tokenizer_free(t);
}

static void test_unsupported_model(void **st) {
    (void)st;
    el_gguf_writer *w = el_gguf_writer_new();
    const char *toks[] = {"a"};
    el_gguf_add_str(w, "tokenizer.ggml.model", "bert");
    el_gguf_add_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, 1);
    const char *path = tu_tmp_path("bert.gguf");
    el_error e = {0};
    assert_int_equal(el_gguf_write(w, path, NULL, NULL, NULL, &e), EL_OK);
    el_gguf_writer_free(w);
    char saved[4096];
    snprintf(saved, sizeof saved, "%s", path);
    el_gguf *g;
    assert_int_equal(el_gguf_open(saved, &g, &e), EL_OK);
    el_tokenizer *t = (el_tokenizer *)1;
    assert_int_equal(el_tokenizer_from_gguf(g, &t, &e), EL_ERR_UNSUPPORTED);
    assert_null(t);
    assert_non_null(strstr(e.msg, saved));
    assert_non_null(strstr(e.msg, "\"bert\""));
    el_gguf_close(g);
}

// A small byte-level BPE vocabulary with one thing broken.
enum { BPE_OK, BPE_UNKNOWN_PRE, BPE_PRE_TYPE, BPE_NO_MERGES, BPE_MERGE_NO_SPACE, BPE_MERGE_PART, BPE_MERGE_RESULT,
       BPE_ADD_BOS_NO_BOS, BPE_ADD_BOS_TYPE, BPE_QWEN2 };

static const char *write_bpe(int how) {
    // All 256 byte characters, then merged pieces.
    static char chars[256][3];
    const char *toks[256 + 4];
    int32_t types[256 + 4];
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
        static int extra;
        if (b == 0) extra = 0;
        unsigned cp = printable ? (unsigned)b : 256u + (unsigned)extra++;
        if (cp < 0x80) chars[b][0] = (char)cp, chars[b][1] = 0;
        else chars[b][0] = (char)(0xC0 | (cp >> 6)), chars[b][1] = (char)(0x80 | (cp & 0x3F)), chars[b][2] = 0;
        toks[n] = chars[b], types[n++] = 1;
    }
    toks[n] = "ab", types[n++] = 1;                // 256
    toks[n] = "\xc4\xa0" "ab", types[n++] = 1;     // 257 "Ġab"
    toks[n] = "<|eot|>", types[n++] = 3;           // 258
    toks[n] = how == BPE_MERGE_RESULT ? "zz" : "\xc4\xa0" "a", types[n++] = 1;  // 259 "Ġa"
    const char *merges[] = {"a b", "\xc4\xa0 ab", how == BPE_MERGE_NO_SPACE ? "\xc4\xa0" "a" : "\xc4\xa0 a",
                            how == BPE_MERGE_PART ? "q \xc4\xa3" "x" : "\xc4\xa0" "a b"};
    el_gguf_writer *w = el_gguf_writer_new();
    assert_non_null(w);
    el_gguf_add_str(w, "tokenizer.ggml.model", "gpt2");
    if (how == BPE_UNKNOWN_PRE) el_gguf_add_str(w, "tokenizer.ggml.pre", "mystery-pre");
    else if (how == BPE_PRE_TYPE) el_gguf_add_u32(w, "tokenizer.ggml.pre", 2);
    else el_gguf_add_str(w, "tokenizer.ggml.pre", how == BPE_QWEN2 ? "qwen2" : "llama-bpe");
    el_gguf_add_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, (uint64_t)n);
    el_gguf_add_arr(w, "tokenizer.ggml.token_type", EL_GGUF_INT32, types, (uint64_t)n);
    if (how != BPE_NO_MERGES) el_gguf_add_arr_str(w, "tokenizer.ggml.merges", merges, NULL, 4);
    if (how != BPE_ADD_BOS_NO_BOS) el_gguf_add_u32(w, "tokenizer.ggml.bos_token_id", 258);
    el_gguf_add_u32(w, "tokenizer.ggml.eos_token_id", 258);
    if (how == BPE_ADD_BOS_TYPE) el_gguf_add_u32(w, "tokenizer.ggml.add_bos_token", 1);
    else el_gguf_add_bool(w, "tokenizer.ggml.add_bos_token", how != BPE_QWEN2);
    const char *path = tu_tmp_path("bpe.gguf");
    el_error e = {0};
    if (el_gguf_write(w, path, NULL, NULL, NULL, &e) != EL_OK) fail_msg("%s", e.msg);
    el_gguf_writer_free(w);
    return path;
}

static void expect_bpe_error(int how, el_status code, const char *frag) {
    char saved[4096];
    snprintf(saved, sizeof saved, "%s", write_bpe(how));
    el_gguf *g;
    el_error e = {0};
    if (el_gguf_open(saved, &g, &e) != EL_OK) fail_msg("%s", e.msg);
    el_tokenizer *t = (el_tokenizer *)1;
    el_status s = el_tokenizer_from_gguf(g, &t, &e);
    if (s != code) fail_msg("case %d: got %d (%s), want %d", how, s, e.msg, code);
    assert_null(t);
    if (!strstr(e.msg, saved)) fail_msg("error does not name the file: %s", e.msg);
    if (!strstr(e.msg, frag)) fail_msg("error lacks \"%s\": %s", frag, e.msg);
    el_gguf_close(g);
}

static void test_bpe_metadata(void **st) {
    (void)st;
    expect_bpe_error(BPE_UNKNOWN_PRE, EL_ERR_UNSUPPORTED, "\"mystery-pre\"");
    expect_bpe_error(BPE_PRE_TYPE, EL_ERR_FORMAT, "tokenizer.ggml.pre has type");
    expect_bpe_error(BPE_NO_MERGES, EL_ERR_FORMAT, "no tokenizer.ggml.merges");
    expect_bpe_error(BPE_MERGE_NO_SPACE, EL_ERR_FORMAT, "merge 2 \"\xc4\xa0" "a\" is not two pieces");
    expect_bpe_error(BPE_MERGE_PART, EL_ERR_FORMAT, "merge 3 \"q \xc4\xa3x\": \"\xc4\xa3x\" is not in the vocabulary");
    expect_bpe_error(BPE_MERGE_RESULT, EL_ERR_FORMAT, "merge 2 \"\xc4\xa0 a\": the merged piece is not in the vocabulary");
    expect_bpe_error(BPE_ADD_BOS_NO_BOS, EL_ERR_FORMAT, "add_bos_token is set but there is no bos_token_id");
    expect_bpe_error(BPE_ADD_BOS_TYPE, EL_ERR_FORMAT, "add_bos_token is not a bool");

    for (int how = BPE_OK; how <= BPE_QWEN2; how += BPE_QWEN2) {
        char saved[4096];
        snprintf(saved, sizeof saved, "%s", write_bpe(how));
        el_gguf *g;
        el_tokenizer *t = load(saved, &g);
        el_gguf_close(g);
        assert_int_equal(el_tokenizer_pretok(t), how == BPE_QWEN2 ? EL_PRETOK_QWEN2 : EL_PRETOK_LLAMA3);
        assert_int_equal(el_tokenizer_add_bos(t), how != BPE_QWEN2);
        // " ab aab": words " ab", " aab". " ab": Ġ a b -> "a b" (rank 0) ->
        // Ġ ab -> "Ġ ab" (rank 1) -> Ġab. " aab": Ġ a a b: "a b" first (rank
        // 0, at the end) -> Ġ a ab; then "Ġ a" (rank 2) -> Ġa ab; no merge
        // joins those ("Ġa b", rank 3, never sees a lone "b").
        int *ids, n;
        el_error e = {0};
        assert_int_equal(el_tokenizer_encode_ex(t, " ab aab", 7, EL_ENCODE_ADD_BOS, &ids, &n, &e), EL_OK);
        const int want[] = {258, 257, 259, 256};
        assert_int_equal(n, 4);
        assert_memory_equal(ids, want, sizeof want);
        free(ids);
        el_tokenizer_free(t);
    }
}

// A tiny vocabulary in a GGUF written by our writer, with one thing broken.
enum { BREAK_NONE, BREAK_SCORES_LEN, BREAK_TYPES_LEN, BREAK_BOS, BREAK_TYPE_VALUE, BREAK_NO_MODEL, BREAK_NO_TOKENS,
       BREAK_SCORES_TYPE, BREAK_BYTE_PIECE, BREAK_PREFIX_TYPE, NO_PREFIX };

static el_status write_vocab(int how, const char **path_out) {
    static const char *toks[] = {"<unk>", "<s>", "</s>", "<0x41>", "\xe2\x96\x81", "a", "b", "ab", "\xe2\x96\x81\x61\x62"};  // the last is "▁ab"
    const uint64_t n = sizeof toks / sizeof toks[0];
    float scores[9] = {0, 0, 0, 0, -1, -2, -3, -1, -0.5f};
    int32_t types[10] = {2, 3, 3, 6, 1, 1, 1, 1, 1, 1};  // one spare for BREAK_TYPES_LEN
    if (how == BREAK_TYPE_VALUE) types[5] = 7;
    if (how == BREAK_BYTE_PIECE) types[5] = 6;
    el_gguf_writer *w = el_gguf_writer_new();
    assert_non_null(w);
    if (how != BREAK_NO_MODEL) el_gguf_add_str(w, "tokenizer.ggml.model", "llama");
    if (how != BREAK_NO_TOKENS) el_gguf_add_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, n);
    if (how == BREAK_SCORES_TYPE) el_gguf_add_arr(w, "tokenizer.ggml.scores", EL_GGUF_INT32, types, n);
    else el_gguf_add_arr(w, "tokenizer.ggml.scores", EL_GGUF_FLOAT32, scores, how == BREAK_SCORES_LEN ? n - 1 : n);
    el_gguf_add_arr(w, "tokenizer.ggml.token_type", EL_GGUF_INT32, types, how == BREAK_TYPES_LEN ? n + 1 : n);
    el_gguf_add_u32(w, "tokenizer.ggml.bos_token_id", how == BREAK_BOS ? 9 : 1);
    el_gguf_add_u32(w, "tokenizer.ggml.eos_token_id", 2);
    el_gguf_add_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    if (how == NO_PREFIX) el_gguf_add_bool(w, "tokenizer.ggml.add_space_prefix", 0);
    if (how == BREAK_PREFIX_TYPE) el_gguf_add_u32(w, "tokenizer.ggml.add_space_prefix", 0);
    const char *path = tu_tmp_path("vocab.gguf");
    el_error e = {0};
    el_status s = el_gguf_write(w, path, NULL, NULL, NULL, &e);
    if (s != EL_OK) fail_msg("%s", e.msg);
    el_gguf_writer_free(w);
    *path_out = path;
    return s;
}

static void expect_error(int how, el_status code, const char *frag) {
    const char *path;
    write_vocab(how, &path);
    char saved[4096];
    snprintf(saved, sizeof saved, "%s", path);
    el_gguf *g;
    el_error e = {0};
    if (el_gguf_open(saved, &g, &e) != EL_OK) fail_msg("%s", e.msg);
    el_tokenizer *t = (el_tokenizer *)1;
    el_status s = el_tokenizer_from_gguf(g, &t, &e);
    if (s != code) fail_msg("case %d: got %d (%s), want %d", how, s, e.msg, code);
    assert_null(t);
    if (!strstr(e.msg, saved)) fail_msg("error does not name the file: %s", e.msg);
    if (!strstr(e.msg, frag)) fail_msg("error lacks \"%s\": %s", frag, e.msg);
    el_gguf_close(g);
}

static void test_bad_metadata(void **st) {
    (void)st;
    expect_error(BREAK_SCORES_LEN, EL_ERR_FORMAT, "tokenizer.ggml.scores has 8 entries");
    expect_error(BREAK_TYPES_LEN, EL_ERR_FORMAT, "tokenizer.ggml.token_type has 10 entries");
    expect_error(BREAK_BOS, EL_ERR_RANGE, "bos_token_id is 9");
    expect_error(BREAK_TYPE_VALUE, EL_ERR_FORMAT, "token 5 has type 7");
    expect_error(BREAK_NO_MODEL, EL_ERR_FORMAT, "tokenizer.ggml.model");
    expect_error(BREAK_NO_TOKENS, EL_ERR_FORMAT, "tokenizer.ggml.tokens");
    expect_error(BREAK_SCORES_TYPE, EL_ERR_FORMAT, "tokenizer.ggml.scores is not an array of float32");
    expect_error(BREAK_BYTE_PIECE, EL_ERR_FORMAT, "token 5");
    expect_error(BREAK_PREFIX_TYPE, EL_ERR_FORMAT, "add_space_prefix");
}

static void test_written_vocab(void **st) {
    (void)st;
    const char *path;
    el_gguf *g;
    int *ids, n;
    el_error e = {0};
    for (int how = BREAK_NONE; how <= NO_PREFIX; how += NO_PREFIX) {
        write_vocab(how, &path);
        el_tokenizer *t = load(path, &g);
        el_gguf_close(g);
        // "▁abA": "ab" (-1) is the only pair at first, then "▁"+"ab" makes
        // "▁ab" (-0.5); 'A' is no piece and falls back to <0x41>. Without the
        // prefix the "▁" is not there to merge.
        assert_int_equal(el_tokenizer_encode(t, "abA", 3, 1, &ids, &n, &e), EL_OK);
        if (how == NO_PREFIX) {
            const int want[] = {1, 7, 3};
            assert_int_equal(n, 3);
            assert_memory_equal(ids, want, sizeof want);
        } else {
            const int want[] = {1, 8, 3};
            assert_int_equal(n, 3);
            assert_memory_equal(ids, want, sizeof want);
        }
        free(ids);
        el_tokenizer_free(t);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_spm_vectors), cmocka_unit_test(test_gpt2_vectors),
        cmocka_unit_test(test_fields),            cmocka_unit_test(test_gpt2_fields),
        cmocka_unit_test(test_unsupported_model), cmocka_unit_test(test_bpe_metadata),
        cmocka_unit_test(test_bad_metadata),      cmocka_unit_test(test_written_vocab),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
