// Unit tests for src/format/hf.c: config.json fields, defaults and refusals;
// tokenizer.json to GGUF vocabularies (byte-level with each known regex,
// byte fallback), with values written out by hand here.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/hf.h"
#include "testutil.h"

static el_status cfg(const char *text, el_hf_config *c, el_error *err) {
    return el_hf_config_parse(text, strlen(text), "config.json", c, err);
}

#define BASE "\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":4,\"intermediate_size\":96,\"vocab_size\":70"

static void test_config_fields(void **st) {
    (void)st;
    el_hf_config c;
    el_error err;
    assert_int_equal(cfg("{\"architectures\":[\"LlamaForCausalLM\"]," BASE ",\"num_key_value_heads\":2,"
                         "\"rope_theta\":500000,\"rms_norm_eps\":1e-5,\"max_position_embeddings\":4096,"
                         "\"bos_token_id\":7,\"eos_token_id\":[9,10],\"tie_word_embeddings\":true,"
                         "\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8,\"low_freq_factor\":1,"
                         "\"high_freq_factor\":4,\"original_max_position_embeddings\":8192}}",
                         &c, &err),
                     EL_OK);
    assert_int_equal(c.arch, EL_HF_LLAMA);
    assert_int_equal(c.dim, 64);
    assert_int_equal(c.layers, 2);
    assert_int_equal(c.heads, 4);
    assert_int_equal(c.kv_heads, 2);
    assert_int_equal(c.ff, 96);
    assert_int_equal(c.vocab, 70);
    assert_int_equal(c.ctx, 4096);
    assert_float_equal(c.theta, 500000, 0);
    assert_float_equal(c.eps, 1e-5, 0);
    assert_int_equal(c.bos, 7);
    assert_int_equal(c.eos, 9);
    assert_true(c.tied);
    assert_int_equal(c.scaling, EL_HF_ROPE_LLAMA3);
    assert_float_equal(c.factor, 8, 0);
    assert_float_equal(c.high, 4, 0);
    assert_int_equal(c.orig_ctx, 8192);
    // defaults; Mistral's window; Qwen2 ignores sliding_window unless use_sliding_window
    assert_int_equal(cfg("{\"model_type\":\"mistral\"," BASE ",\"sliding_window\":4096}", &c, &err), EL_OK);
    assert_int_equal(c.arch, EL_HF_MISTRAL);
    assert_int_equal(c.kv_heads, 4);
    assert_int_equal(c.ctx, 2048);
    assert_float_equal(c.eps, 1e-6, 0);
    assert_float_equal(c.theta, 10000, 0);
    assert_int_equal(c.window, 4096);
    assert_int_equal(c.bos, -1);
    assert_int_equal(c.scaling, EL_HF_ROPE_NONE);
    assert_int_equal(cfg("{\"architectures\":[\"Qwen2ForCausalLM\"]," BASE ",\"sliding_window\":4096,"
                         "\"rope_scaling\":{\"type\":\"linear\",\"factor\":2}}",
                         &c, &err),
                     EL_OK);
    assert_int_equal(c.arch, EL_HF_QWEN2);
    assert_int_equal(c.window, 0);
    assert_int_equal(c.scaling, EL_HF_ROPE_LINEAR);
    assert_float_equal(c.factor, 2, 0);
}

static void expect_cfg_error(const char *text, const char *want) {
    el_hf_config c;
    el_error err = {0};
    if (cfg(text, &c, &err) == EL_OK) fail_msg("accepted %s", text);
    if (!strstr(err.msg, want) || strncmp(err.msg, "config.json", 11)) fail_msg("error '%s' lacks '%s'", err.msg, want);
}

static void test_config_errors(void **st) {
    (void)st;
    expect_cfg_error("{\"architectures\":[\"BertModel\"]," BASE "}", "architecture 'BertModel' is not supported");
    expect_cfg_error("{" BASE "}", "neither architectures nor model_type");
    expect_cfg_error("{\"model_type\":\"llama\",\"hidden_size\":64}", "field num_hidden_layers is missing");
    expect_cfg_error("{\"model_type\":\"llama\"," BASE ",\"num_key_value_heads\":3}", "does not divide");
    expect_cfg_error("{\"model_type\":\"llama\"," BASE ",\"head_dim\":32}", "head size 32");
    expect_cfg_error("{\"model_type\":\"llama\",\"hidden_size\":-64}", "hidden_size is not an integer");
    expect_cfg_error("{\"model_type\":\"llama\",\"hidden_size\":\"64\"}", "hidden_size is not an integer");
    expect_cfg_error("{\"model_type\":\"llama\"," BASE ",\"rope_theta\":1e300}", "rope_theta is not a number");
    expect_cfg_error("{\"model_type\":\"llama\"," BASE ",\"rope_scaling\":{\"type\":\"yarn\",\"factor\":4}}",
                     "rope_scaling type 'yarn'");
    expect_cfg_error("{\"model_type\":\"llama\"," BASE ",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8}}",
                     "original_max_position_embeddings is missing");
    expect_cfg_error("{\"model_type\":\"qwen2\"," BASE ",\"use_sliding_window\":true}", "use_sliding_window");
    expect_cfg_error("[1]", "not a JSON object");
    expect_cfg_error("{\"model_type\":", "config.json:1:15: unexpected end of input");
}

static const char qwen2_re[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|"
    "\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+";
static const char llama3_re[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+"
    "[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+";
static const char gpt2_re[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\\\p{L}+| ?\\\\p{N}+| ?[^\\\\s\\\\p{L}\\\\p{N}]+|\\\\s+(?!\\\\S)|\\\\s+";

// tokenizer.json with vocab a=0 b=1 ab=2, added specials, a Split regex (NULL: none).
static char *byte_level_json(const char *regex) {
    char *buf = malloc(4096);
    char pre[1024];
    if (regex && !strcmp(regex, "digits"))  // SmolLM: single digits, then ByteLevel's own split
        snprintf(pre, sizeof pre,
                 "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\",\"individual_digits\":true},"
                 "{\"type\":\"ByteLevel\",\"use_regex\":true}]}");
    else if (regex)
        snprintf(pre, sizeof pre,
                 "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"%s\"}},"
                 "{\"type\":\"ByteLevel\"}]}",
                 regex);
    else
        snprintf(pre, sizeof pre, "{\"type\":\"ByteLevel\",\"add_prefix_space\":false}");
    snprintf(buf, 4096,
             "{\"added_tokens\":[{\"id\":4,\"content\":\"<|end|>\",\"special\":true},"
             "{\"id\":5,\"content\":\"<tool>\",\"special\":false}],"
             "\"pre_tokenizer\":%s,"
             "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a b\",[\"ab\",\"b\"]]}}",
             pre);
    return buf;
}

static void test_byte_level(void **st) {
    (void)st;
    struct {
        const char *regex, *pre;
    } cases[] = {{qwen2_re, "qwen2"}, {llama3_re, "llama-bpe"}, {gpt2_re, "gpt-2"}, {NULL, "gpt-2"}, {"digits", "smollm"}};
    const char *tc = "{\"bos_token\":null,\"eos_token\":{\"content\":\"<|end|>\"},\"add_bos_token\":false,"
                     "\"chat_template\":\"{{ m }}\"}";
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char *tok = byte_level_json(cases[k].regex);
        el_hf_vocab v;
        el_error err;
        if (el_hf_tokenizer_parse(tok, strlen(tok), "tokenizer.json", tc, strlen(tc), "tokenizer_config.json", 7, 1, 3,
                                  &v, &err))
            fail_msg("%s", err.msg);
        assert_true(v.byte_level);
        assert_string_equal(v.pre, cases[k].pre);
        assert_int_equal(v.n, 7);
        const char *want[] = {"a", "b", "ab", "[PAD3]", "<|end|>", "<tool>", "[PAD6]"};
        const int types[] = {1, 1, 1, 5, 3, 4, 5};
        for (int i = 0; i < 7; i++) {
            assert_string_equal(v.tokens[i], want[i]);
            assert_int_equal(v.lens[i], strlen(want[i]));
            assert_int_equal(v.types[i], types[i]);
        }
        assert_int_equal(v.n_merges, 2);
        assert_string_equal(v.merges[0], "a b");
        assert_string_equal(v.merges[1], "ab b");
        assert_int_equal(v.merge_lens[1], 4);
        assert_int_equal(v.bos, 1);  // config.json's: tokenizer_config names none
        assert_int_equal(v.eos, 4);  // tokenizer_config's content wins over config.json's 3
        assert_int_equal(v.add_bos, 0);
        assert_string_equal(v.chat_template, "{{ m }}");
        el_hf_vocab_free(&v);
        free(tok);
    }
}

static void test_byte_fallback(void **st) {
    (void)st;
    const char *tok = "{\"added_tokens\":[{\"id\":1,\"content\":\"<s>\",\"special\":true}],"
                      "\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,"
                      "\"vocab\":{\"<unk>\":0,\"<s>\":1,\"<0x0A>\":2,\"<0x0a>\":3,\"\xe2\x96\x81the\":4}}}";
    el_hf_vocab v;
    el_error err;
    assert_int_equal(el_hf_tokenizer_parse(tok, strlen(tok), "tokenizer.json", NULL, 0, NULL, 5, -1, -1, &v, &err), EL_OK);
    assert_false(v.byte_level);
    assert_int_equal(v.unk, 0);
    const int types[] = {2, 3, 6, 1, 1};  // lower-case hex is not a byte token
    for (int i = 0; i < 5; i++) assert_int_equal(v.types[i], types[i]);
    assert_float_equal(v.scores[4], -4.0f, 0);
    assert_int_equal(v.bos, -1);
    assert_int_equal(v.add_bos, -1);
    assert_null(v.chat_template);
    el_hf_vocab_free(&v);
}

static void expect_tok_error(const char *tok, int n, const char *want) {
    el_hf_vocab v;
    el_error err = {0};
    if (el_hf_tokenizer_parse(tok, strlen(tok), "tokenizer.json", NULL, 0, NULL, n, -1, -1, &v, &err) == EL_OK)
        fail_msg("accepted %s", tok);
    if (!strstr(err.msg, want) || strncmp(err.msg, "tokenizer.json", 14)) fail_msg("error '%s' lacks '%s'", err.msg, want);
}

static void test_tokenizer_errors(void **st) {
    (void)st;
    const char *bl = "\"pre_tokenizer\":{\"type\":\"ByteLevel\"}";
    char buf[512];
    snprintf(buf, sizeof buf, "{%s,\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":9}}}", bl);
    expect_tok_error(buf, 5, "vocab token 'b' has no id in 0..4");
    snprintf(buf, sizeof buf, "{%s,\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":0}}}", bl);
    expect_tok_error(buf, 5, "token id 0 is given to both 'a' and 'b'");
    snprintf(buf, sizeof buf, "{%s,\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[1]}}", bl);
    expect_tok_error(buf, 5, "merge 0 is neither");
    snprintf(buf, sizeof buf, "{%s,\"added_tokens\":[{\"id\":7,\"content\":\"x\"}],\"model\":{\"type\":\"BPE\",\"vocab\":{}}}", bl);
    expect_tok_error(buf, 5, "added token 'x' has no id");
    expect_tok_error("{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", 5, "model.type is not BPE");
    expect_tok_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{}}}", 5, "without a ByteLevel");
    expect_tok_error("{\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\","
                     "\"pattern\":{\"Regex\":\"\\\\w+\"}},{\"type\":\"ByteLevel\"}]},\"model\":{\"type\":\"BPE\",\"vocab\":{}}}",
                     5, "pre-tokenizer regex '\\w+...' is not");
    expect_tok_error("{\"model\":", 5, "tokenizer.json:1:");
    expect_tok_error("{\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Metaspace\"},"
                     "{\"type\":\"ByteLevel\"}]},\"model\":{\"type\":\"BPE\",\"vocab\":{}}}",
                     5, "pre-tokenizer type 'Metaspace' is not supported");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_fields), cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_byte_level),    cmocka_unit_test(test_byte_fallback),
        cmocka_unit_test(test_tokenizer_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
