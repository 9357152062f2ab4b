// Unit tests for src/chat: each family's rendering written out by hand from
// the family's published prompt format, recognition of template sources, and
// refusals.
#include <stdlib.h>
#include <string.h>

#include "edgellm/chat.h"
#include "edgellm/gguf.h"
#include "testutil.h"

static const el_chat_msg conv[] = {
    {"system", "Be brief."},
    {"user", "Hi"},
    {"assistant", "Hello!"},
    {"user", "Name a colour."},
};

static void expect_render(el_chat_template t, int n, int add_assistant, const char *want) {
    char *out = NULL;
    el_error e;
    assert_int_equal(el_chat_render(t, conv, n, add_assistant, "<s>", "</s>", &out, &e), EL_OK);
    assert_string_equal(out, want);
    free(out);
}

static void test_chatml(void **st) {
    (void)st;
    expect_render(EL_CHAT_CHATML, 4, 1,
                  "<|im_start|>system\nBe brief.<|im_end|>\n"
                  "<|im_start|>user\nHi<|im_end|>\n"
                  "<|im_start|>assistant\nHello!<|im_end|>\n"
                  "<|im_start|>user\nName a colour.<|im_end|>\n"
                  "<|im_start|>assistant\n");
    expect_render(EL_CHAT_CHATML, 2, 0, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
}

static void test_llama3(void **st) {
    (void)st;
    expect_render(EL_CHAT_LLAMA3, 4, 1,
                  "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nName a colour.<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

static void test_llama2(void **st) {
    (void)st;
    // The first BOS comes from the encoder; later user turns open with one.
    expect_render(EL_CHAT_LLAMA2, 4, 1,
                  "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s>"
                  "<s>[INST] Name a colour. [/INST]");
    // Without a system prompt there is no <<SYS>> block.
    char *out = NULL;
    el_error e;
    assert_int_equal(el_chat_render(EL_CHAT_LLAMA2, conv + 1, 1, 1, "<s>", "</s>", &out, &e), EL_OK);
    assert_string_equal(out, "[INST] Hi [/INST]");
    free(out);
}

static void test_mistral(void **st) {
    (void)st;
    expect_render(EL_CHAT_MISTRAL, 4, 1, "[INST] Be brief.\n\nHi [/INST]Hello!</s>[INST] Name a colour. [/INST]");
}

static void test_zephyr(void **st) {
    (void)st;
    expect_render(EL_CHAT_ZEPHYR, 4, 1,
                  "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n"
                  "<|user|>\nName a colour.</s>\n<|assistant|>\n");
}

static void test_trim_and_eos(void **st) {
    (void)st;
    el_chat_msg m[] = {{"user", "  padded \n"}, {"assistant", "\tok "}};
    char *out = NULL;
    el_error e;
    assert_int_equal(el_chat_render(EL_CHAT_LLAMA3, m, 1, 0, NULL, NULL, &out, &e), EL_OK);
    assert_string_equal(out, "<|start_header_id|>user<|end_header_id|>\n\npadded<|eot_id|>");
    free(out);
    // Custom EOS piece reaches the text of templates that use it.
    assert_int_equal(el_chat_render(EL_CHAT_LLAMA2, m, 2, 0, "<bos>", "<eos>", &out, &e), EL_OK);
    assert_string_equal(out, "[INST] padded [/INST] ok <eos>");
    free(out);
    assert_string_equal(el_chat_end_of_turn(EL_CHAT_CHATML, "</s>"), "<|im_end|>");
    assert_string_equal(el_chat_end_of_turn(EL_CHAT_LLAMA3, "</s>"), "<|eot_id|>");
    assert_string_equal(el_chat_end_of_turn(EL_CHAT_ZEPHYR, "<eos>"), "<eos>");
    assert_string_equal(el_chat_end_of_turn(EL_CHAT_LLAMA2, NULL), "</s>");
}

static void test_refusals(void **st) {
    (void)st;
    char *out = NULL;
    el_error e;
    el_chat_msg bad_role[] = {{"user", "a"}, {"tool", "b"}};
    assert_int_equal(el_chat_render(EL_CHAT_CHATML, bad_role, 2, 1, NULL, NULL, &out, &e), EL_ERR_ARG);
    assert_null(out);
    assert_non_null(strstr(e.msg, "message 1"));
    assert_non_null(strstr(e.msg, "'tool'"));
    el_chat_msg no_content[] = {{"user", NULL}};
    assert_int_equal(el_chat_render(EL_CHAT_CHATML, no_content, 1, 1, NULL, NULL, &out, &e), EL_ERR_ARG);
    assert_non_null(strstr(e.msg, "message 0"));
    assert_int_equal(el_chat_render(EL_CHAT_UNKNOWN, conv, 1, 1, NULL, NULL, &out, &e), EL_ERR_ARG);
    el_chat_template t;
    assert_int_equal(el_chat_template_from_name("vicuna", &t, &e), EL_ERR_ARG);
    assert_non_null(strstr(e.msg, "'vicuna'"));
    assert_int_equal(el_chat_template_from_name("zephyr", &t, &e), EL_OK);
    assert_int_equal(t, EL_CHAT_ZEPHYR);
    for (int i = 1; i < EL_CHAT_N_TEMPLATES; i++) {
        assert_int_equal(el_chat_template_from_name(el_chat_template_name((el_chat_template)i), &t, &e), EL_OK);
        assert_int_equal(t, i);
    }
}

// Template sources in the shape the families publish them (abridged to their
// distinguishing parts).
static void test_detect(void **st) {
    (void)st;
    struct {
        const char *src;
        el_chat_template want;
    } cases[] = {
        {"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
         "'<|im_end|>' + '\n'}}{% endfor %}",
         EL_CHAT_CHATML},
        {"{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + "
         "'<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}{%- endfor %}",
         EL_CHAT_LLAMA3},
        {"{% if messages[0]['role'] == 'system' %}{% set system_message = '<<SYS>>\\n' + messages[0]['content'] "
         "+ '\\n<</SYS>>\\n\\n' %}{% endif %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}",
         EL_CHAT_LLAMA2},
        {"{{ bos_token }}{% for message in messages %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
         "{{ message['content'] + eos_token}}{% endfor %}",
         EL_CHAT_MISTRAL},
        {"{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + "
         "eos_token }}{% endif %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}{% endfor %}",
         EL_CHAT_ZEPHYR},
        // Phi-3 shares Zephyr's role tags but ends turns with <|end|>: not Zephyr.
        {"{{'<|user|>' + '\n' + message['content'] + '<|end|>'}}{{ '<|assistant|>' }}", EL_CHAT_UNKNOWN},
        {"{{ messages }}", EL_CHAT_UNKNOWN},
        {"", EL_CHAT_UNKNOWN},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(el_chat_template_detect(cases[i].src, strlen(cases[i].src)), cases[i].want);
    assert_int_equal(el_chat_template_detect(NULL, 0), EL_CHAT_UNKNOWN);
}

// From GGUF metadata: a recognised template, an unrecognised one (an error
// naming the file), none (ChatML), and the user's choice overriding both.
static void test_for_model(void **st) {
    (void)st;
    const char *path = tu_tmp_path("chat_tmpl.gguf");
    el_error e;
    el_chat_template t;
    const char *srcs[] = {"{{ '<|start_header_id|>' }}{{ '<|eot_id|>' }}", "{{ something_else }}"};
    el_chat_template want[] = {EL_CHAT_LLAMA3, EL_CHAT_UNKNOWN};
    for (int i = 0; i < 2; i++) {
        el_gguf_writer *w = el_gguf_writer_new();
        assert_non_null(w);
        assert_int_equal(el_gguf_add_str(w, "tokenizer.chat_template", srcs[i]), EL_OK);
        assert_int_equal(el_gguf_write(w, path, NULL, NULL, NULL, &e), EL_OK);
        el_gguf_writer_free(w);
        el_gguf *g = NULL;
        assert_int_equal(el_gguf_open(path, &g, &e), EL_OK);
        el_status s = el_chat_template_for_model(g, path, NULL, &t, &e);
        if (want[i] == EL_CHAT_UNKNOWN) {
            assert_int_equal(s, EL_ERR_UNSUPPORTED);
            assert_non_null(strstr(e.msg, path));
            assert_non_null(strstr(e.msg, "--template"));
        } else {
            assert_int_equal(s, EL_OK);
            assert_int_equal(t, want[i]);
        }
        assert_int_equal(el_chat_template_for_model(g, path, "zephyr", &t, &e), EL_OK);
        assert_int_equal(t, EL_CHAT_ZEPHYR);
        el_gguf_close(g);
    }
    assert_int_equal(el_chat_template_for_model(NULL, NULL, NULL, &t, &e), EL_OK);
    assert_int_equal(t, EL_CHAT_CHATML);
}

// Feeds pieces one at a time and returns everything taken, as a stream would.
static char *stream(const char *const *stops, int n_stops, const char *const *pieces, int n_pieces, int *stopped) {
    el_stopper s;
    el_stopper_init(&s, stops, n_stops);
    static char out[256];
    size_t len = 0;
    const char *p;
    size_t k;
    *stopped = 0;
    for (int i = 0; i < n_pieces; i++) {
        int r = el_stopper_feed(&s, pieces[i], strlen(pieces[i]));
        assert_true(r >= 0);
        k = el_stopper_take(&s, 0, &p);
        // what is released must never contain a stop string's beginning at its end
        memcpy(out + len, p, k);
        len += k;
        if (r) {
            *stopped = s.stopped;
            break;
        }
    }
    k = el_stopper_take(&s, 1, &p);
    memcpy(out + len, p, k);
    len += k;
    out[len] = 0;
    assert_string_equal(out, s.text ? s.text : "");
    el_stopper_free(&s);
    return out;
}

static void test_stopper(void **st) {
    (void)st;
    const char *stops[] = {"<|im_end|>", "\n\n"};
    int stopped;
    // the stop string arrives split across pieces: nothing of it is released
    const char *p1[] = {"Hello", " there<|im", "_end|>more"};
    assert_string_equal(stream(stops, 2, p1, 3, &stopped), "Hello there");
    assert_int_equal(stopped, 1);
    // a partial match that turns out not to be one is released later, whole
    const char *p2[] = {"a <|i", "x b"};
    assert_string_equal(stream(stops, 2, p2, 2, &stopped), "a <|ix b");
    assert_int_equal(stopped, 0);
    // the earliest of several stop strings wins
    const char *p3[] = {"one\n", "\ntwo<|im_end|>"};
    assert_string_equal(stream(stops, 2, p3, 2, &stopped), "one");
    assert_int_equal(stopped, 2);
    // no stop strings: everything passes straight through
    assert_string_equal(stream(NULL, 0, p1, 3, &stopped), "Hello there<|im_end|>more");
    // held back while ambiguous, released at once when it cannot be a stop any more
    el_stopper s;
    el_stopper_init(&s, stops, 2);
    const char *p;
    assert_int_equal(el_stopper_feed(&s, "ok<|im_", 7), 0);
    assert_int_equal(el_stopper_take(&s, 0, &p), 2);
    assert_memory_equal(p, "ok", 2);
    assert_int_equal(el_stopper_feed(&s, "start", 5), 0);
    assert_int_equal(el_stopper_take(&s, 0, &p), 10);
    assert_memory_equal(p, "<|im_start", 10);
    assert_int_equal(el_stopper_feed(&s, "\n", 1), 0);
    assert_int_equal(el_stopper_take(&s, 0, &p), 0);  // could be the start of "\n\n"
    assert_int_equal(el_stopper_feed(&s, "\n", 1), 1);
    assert_int_equal(el_stopper_feed(&s, "after", 5), 1);  // stopped: ignored
    assert_int_equal(el_stopper_take(&s, 1, &p), 0);
    assert_string_equal(s.text, "ok<|im_start");
    el_stopper_free(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chatml),   cmocka_unit_test(test_llama3),       cmocka_unit_test(test_llama2),
        cmocka_unit_test(test_mistral),  cmocka_unit_test(test_zephyr),       cmocka_unit_test(test_trim_and_eos),
        cmocka_unit_test(test_refusals), cmocka_unit_test(test_detect),       cmocka_unit_test(test_for_model),
        cmocka_unit_test(test_stopper),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
