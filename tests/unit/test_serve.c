// Unit tests for src/serve: the OpenAI request parser, the response JSON
// escaper, and the adapter cache (loading, LRU eviction within a budget,
// files appearing and disappearing).
#include <fcntl.h>
#include <pthread.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edgellm/lora.h"
#include "edgellm/serve.h"
#include "serve/serve_internal.h"
#include "testutil.h"

static el_status parse(const char *body, el_serve_kind kind, el_serve_request *r, el_error *err) {
    return el_serve_request_parse(body, strlen(body), kind, r, err);
}

static void test_parse_completion(void **st) {
    (void)st;
    el_serve_request r;
    el_error err;
    const char *body =
        "{\"model\":\"pirate\",\"prompt\":[\"Ahoy\"],\"max_tokens\":12,\"temperature\":0.5,\"top_p\":0.9,"
        "\"top_k\":40,\"seed\":-3,\"stop\":[\"\\n\",\"END\"],\"stream\":true,\"stream_options\":{\"include_usage\":true},"
        "\"user\":\"ignored\",\"logit_bias\":{}}";
    assert_int_equal(parse(body, EL_SERVE_COMPLETION, &r, &err), EL_OK);
    assert_string_equal(r.model, "pirate");
    assert_string_equal(r.prompt, "Ahoy");
    assert_int_equal(r.max_tokens, 12);
    assert_true(r.temperature == 0.5f);
    assert_true(r.top_p == 0.9f);
    assert_int_equal(r.top_k, 40);
    assert_int_equal(r.has_seed, 1);
    assert_true(r.seed == (uint64_t)(int64_t)-3);
    assert_int_equal(r.n_stop, 2);
    assert_string_equal(r.stop[0], "\n");
    assert_string_equal(r.stop[1], "END");
    assert_int_equal(r.stream, 1);
    assert_int_equal(r.include_usage, 1);
    el_serve_request_free(&r);

    // defaults
    assert_int_equal(parse("{\"model\":\"m\",\"prompt\":\"\",\"stop\":\"x\"}", EL_SERVE_COMPLETION, &r, &err), EL_OK);
    assert_int_equal(r.max_tokens, 0);
    // the one set of defaults run and chat use too
    assert_true(r.temperature == 0.8f && r.top_p == 0.95f && r.top_k == 40 && r.min_p == 0.05f &&
                r.repeat_penalty == 1.0f);
    assert_int_equal(r.has_seed, 0);
    assert_int_equal(r.n_stop, 1);
    assert_string_equal(r.stop[0], "x");
    assert_int_equal(r.stream, 0);
    el_serve_request_free(&r);
}

static void test_parse_chat(void **st) {
    (void)st;
    el_serve_request r;
    el_error err;
    const char *body =
        "{\"model\":\"m\",\"messages\":[{\"role\":\"developer\",\"content\":\"Be brief.\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hel\"},{\"type\":\"text\",\"text\":\"lo\"}]}],"
        "\"max_completion_tokens\":7}";
    assert_int_equal(parse(body, EL_SERVE_CHAT, &r, &err), EL_OK);
    assert_int_equal(r.n_messages, 2);
    assert_string_equal(r.roles[0], "system");
    assert_string_equal(r.contents[0], "Be brief.");
    assert_string_equal(r.roles[1], "user");
    assert_string_equal(r.contents[1], "Hello");
    assert_int_equal(r.max_tokens, 7);
    el_serve_request_free(&r);
}

static void test_parse_errors(void **st) {
    (void)st;
    static const struct {
        el_serve_kind kind;
        const char *body, *param;
        el_status code;
    } cases[] = {
        {EL_SERVE_COMPLETION, "{\"prompt\":\"x\"}", "model", EL_ERR_ARG},
        {EL_SERVE_COMPLETION, "{\"model\":\"m\"}", "prompt", EL_ERR_ARG},
        {EL_SERVE_COMPLETION, "[1]", "body", EL_ERR_ARG},
        {EL_SERVE_COMPLETION, "{\"model\":", "body", EL_ERR_FORMAT},
        {EL_SERVE_COMPLETION, "{\"model\":\"m\",\"prompt\":\"x\",\"temperature\":3}", "temperature", EL_ERR_RANGE},
        {EL_SERVE_COMPLETION, "{\"model\":\"m\",\"prompt\":\"x\",\"max_tokens\":0}", "max_tokens", EL_ERR_RANGE},
        {EL_SERVE_COMPLETION, "{\"model\":\"m\",\"prompt\":\"x\",\"max_tokens\":2.5}", "max_tokens", EL_ERR_ARG},
        {EL_SERVE_COMPLETION, "{\"model\":\"m\",\"prompt\":\"x\",\"n\":2}", "n", EL_ERR_RANGE},
        {EL_SERVE_COMPLETION, "{\"model\":\"m\",\"prompt\":[\"a\",\"b\"]}", "prompt", EL_ERR_UNSUPPORTED},
        {EL_SERVE_COMPLETION, "{\"model\":\"m\",\"prompt\":\"a\\u0000b\"}", "prompt", EL_ERR_ARG},
        {EL_SERVE_COMPLETION, "{\"model\":\"m\",\"prompt\":\"x\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", "stop", EL_ERR_RANGE},
        {EL_SERVE_COMPLETION, "{\"model\":\"m\",\"prompt\":\"x\",\"stop\":[\"\"]}", "stop", EL_ERR_RANGE},
        {EL_SERVE_COMPLETION, "{\"model\":\"m\",\"prompt\":\"x\",\"stream\":1}", "stream", EL_ERR_ARG},
        {EL_SERVE_CHAT, "{\"model\":\"m\",\"messages\":[]}", "messages", EL_ERR_ARG},
        {EL_SERVE_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", "messages", EL_ERR_ARG},
        {EL_SERVE_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}",
         "messages", EL_ERR_ARG},
        {EL_SERVE_CHAT,
         "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":"
         "{\"url\":\"https://example.com/a.png\"}}]}]}",
         "messages", EL_ERR_UNSUPPORTED},
        {EL_SERVE_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_audio\"}]}]}",
         "messages", EL_ERR_UNSUPPORTED},
        {EL_SERVE_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}]}", "messages", EL_ERR_ARG},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        el_serve_request r;
        el_error err = {0};
        el_status got = parse(cases[i].body, cases[i].kind, &r, &err);
        if (got != cases[i].code || strcmp(r.bad_param, cases[i].param))
            fail_msg("case %zu (%s): status %d param '%s' (%s)", i, cases[i].body, got, r.bad_param, err.msg);
        if (strcmp(cases[i].param, "body")) assert_non_null(strstr(err.msg, cases[i].param));
        el_serve_request_free(&r);
    }
}

static void test_json_escape(void **st) {
    (void)st;
    el_sbuf b = {0};
    const char in[] = "a\"b\\\n\t\x01\x7f\xc3\xa9\xff\xe2\x82";  // é is valid; 0xff and a cut 3-byte sequence are not
    el_sbuf_json_str(&b, in, sizeof in - 1);
    assert_string_equal(b.data, "\"a\\\"b\\\\\\n\\t\\u0001\\u007f\xc3\xa9\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
    el_sbuf_free(&b);
    for (int i = 0; i < 1000; i++) el_sbuf_printf(&b, "%04d,", i);
    assert_int_equal(b.len, 5000);
    assert_memory_equal(b.data + 4995, "0999,", 5);
    el_sbuf_free(&b);
}

static void save_adapter(const el_model *m, const char *path, uint64_t seed, int rank) {
    el_error err;
    el_lora *l;
    assert_int_equal(el_lora_new(m, rank, 4.0f, EL_LORA_ALL_TARGETS, seed, &l, &err), EL_OK);
    for (size_t i = 0; i < l->n_params; i++) l->params[i] = (float)((i * seed) % 7) * 0.01f;
    assert_int_equal(el_lora_save(l, path, &err), EL_OK);
    el_lora_free(l);
}

static void test_adapter_cache(void **st) {
    (void)st;
    el_error err;
    el_model *m;
    assert_int_equal(el_model_open(tu_model_path("aidreams260K.bin"), NULL, &m, &err), EL_OK);
    char dir[512], px[600], py[600], pz[600];
    snprintf(dir, sizeof dir, "%s", tu_tmp_path("serve_adapters"));
    mkdir(dir, 0755);
    snprintf(px, sizeof px, "%s/x.gguf", dir);
    snprintf(py, sizeof py, "%s/y.gguf", dir);
    snprintf(pz, sizeof pz, "%s/z.gguf", dir);
    unlink(pz);
    // a file that is no adapter for this base: checked when the folder is
    // listed, left out, and a request naming it is told why (not a 500)
    char pj[600];
    snprintf(pj, sizeof pj, "%s/junk.gguf", dir);
    FILE *jf = fopen(pj, "wb");
    assert_non_null(jf);
    fputs("GGUF but not really", jf);
    fclose(jf);
    save_adapter(m, px, 3, 2);
    save_adapter(m, py, 5, 2);
    // rank 2 on all 7 targets of 4 layers: (2*in + out*2) per matrix
    size_t per_layer = 2 * (4 * (64 + 64) + 2 * (64 + 172) + (172 + 64));
    size_t bytes = 4 * per_layer * sizeof(float);

    el_adapter_cache *c;
    assert_int_equal(el_adapter_cache_new(m, "/nonexistent/dir", 0, 0, &c, &err), EL_ERR_IO);
    assert_int_equal(el_adapter_cache_new(m, dir, 0, bytes + bytes / 2, &c, &err), EL_OK);
    char **names;
    int n = el_adapter_cache_list(c, &names);
    assert_int_equal(n, 2);
    assert_string_equal(names[0], "x");
    assert_string_equal(names[1], "y");
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);

    const el_lora_set *sx, *sy, *sx2;
    assert_int_equal(el_adapter_cache_acquire(c, "x", &sx, &err), EL_OK);
    assert_int_equal(sx->n, 1);
    assert_int_equal(sx->lora[0]->rank, 2);
    el_adapter_stats a;
    el_adapter_cache_stats(c, &a);
    assert_int_equal(a.bytes, bytes);
    assert_int_equal(a.misses, 1);
    // second adapter does not fit while x is in use
    assert_int_equal(el_adapter_cache_acquire(c, "y", &sy, &err), EL_ERR_NOMEM);
    assert_int_equal(el_adapter_cache_acquire(c, "x", &sx2, &err), EL_OK);
    assert_ptr_equal(sx, sx2);
    el_adapter_cache_release(c, sx2);
    el_adapter_cache_release(c, sx);
    // now x is idle: loading y evicts it
    assert_int_equal(el_adapter_cache_acquire(c, "y", &sy, &err), EL_OK);
    el_adapter_cache_stats(c, &a);
    assert_int_equal(a.hits, 1);
    assert_int_equal(a.evictions, 1);
    assert_int_equal(a.loaded, 1);
    el_adapter_cache_release(c, sy);

    assert_int_equal(el_adapter_cache_acquire(c, "nope", &sx, &err), EL_ERR_ARG);
    assert_non_null(strstr(err.msg, "'nope'"));
    assert_int_equal(el_adapter_cache_acquire(c, "junk", &sx, &err), EL_ERR_ARG);
    assert_non_null(strstr(err.msg, "model 'junk' cannot be used with this base: "));
    assert_int_equal(el_adapter_cache_acquire(c, "../x", &sx, &err), EL_ERR_ARG);
    assert_int_equal(el_adapter_name_ok(".hidden"), 0);
    assert_int_equal(el_adapter_name_ok("ok-1_2.v3"), 1);

    // dropped in at run time
    save_adapter(m, pz, 9, 2);
    n = el_adapter_cache_list(c, &names);
    assert_int_equal(n, 3);
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    // removed at run time: gone from the list and from use, even while held
    assert_int_equal(el_adapter_cache_acquire(c, "y", &sy, &err), EL_OK);
    unlink(py);
    assert_int_equal(el_adapter_cache_acquire(c, "y", &sx, &err), EL_ERR_ARG);
    assert_int_equal(sy->lora[0]->rank, 2);  // still valid for the request using it
    el_adapter_cache_release(c, sy);
    n = el_adapter_cache_list(c, &names);
    assert_int_equal(n, 2);
    assert_string_equal(names[1], "z");
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);

    // registered by path under another name
    assert_int_equal(el_adapter_cache_add(c, "alias", pz, &err), EL_OK);
    assert_int_equal(el_adapter_cache_add(c, "bad", "/nonexistent.gguf", &err), EL_ERR_ARG);
    // only files inside the adapter folder: nothing else the server can read
    char outside[600];
    snprintf(outside, sizeof outside, "%s", tu_tmp_path("outside.gguf"));
    save_adapter(m, outside, 4, 2);
    assert_int_equal(el_adapter_cache_add(c, "out", outside, &err), EL_ERR_ARG);
    assert_non_null(strstr(err.msg, "not inside --lora-dir"));
    char sneaky[1400];
    snprintf(sneaky, sizeof sneaky, "%s/../outside.gguf", dir);
    assert_int_equal(el_adapter_cache_add(c, "out", sneaky, &err), EL_ERR_ARG);
    unlink(outside);
    assert_int_equal(el_adapter_cache_acquire(c, "alias", &sx, &err), EL_OK);
    el_adapter_cache_release(c, sx);
    // its file changes while nobody uses it: reloaded, and still registered
    struct timespec later[2] = {{0, UTIME_OMIT}, {time(NULL) + 100, 0}};
    assert_int_equal(utimensat(AT_FDCWD, pz, later, 0), 0);
    assert_int_equal(el_adapter_cache_acquire(c, "alias", &sx, &err), EL_OK);
    el_adapter_cache_release(c, sx);
    assert_int_equal(utimensat(AT_FDCWD, pz, (struct timespec[2]){{0, UTIME_OMIT}, {time(NULL) + 200, 0}}, 0), 0);
    assert_int_equal(el_adapter_cache_acquire(c, "alias", &sx, &err), EL_OK);
    el_adapter_cache_release(c, sx);
    el_adapter_cache_free(c);
    unlink(px);
    unlink(pz);
    unlink(pj);
    el_model_close(m);
}

// Requests on several threads acquire and release three adapters in a cache
// with room for two, while files change under them: adapters load outside
// the cache's lock, so loads race with each other, with evictions and with
// releases. Every successful acquire gets a whole adapter; at the end nothing
// is held and the cache is within its limits. (ASan runs this in CI.)
typedef struct {
    el_adapter_cache *c;
    int id, ok, full, bad;
} hammer_arg;

static void *hammer(void *p) {
    hammer_arg *h = p;
    const char *names[3] = {"x", "y", "z"};
    uint64_t r = 77 + (uint64_t)h->id;
    for (int i = 0; i < 150; i++) {
        el_error err;
        const el_lora_set *set;
        el_status st = el_adapter_cache_acquire(h->c, names[tu_rand(&r) % 3], &set, &err);
        if (st == EL_OK) {
            h->ok++;
            if (set->n != 1 || set->lora[0]->rank != 2 || set->lora[0]->n_params == 0) h->bad++;
            el_adapter_cache_release(h->c, set);
        } else if (st == EL_ERR_NOMEM) {
            h->full++;  // both places held by other threads: the documented retry-later answer
        } else {
            h->bad++;
        }
    }
    return NULL;
}

static void test_adapter_cache_threads(void **st) {
    (void)st;
    el_error err;
    el_model *m;
    assert_int_equal(el_model_open(tu_model_path("aidreams260K.bin"), NULL, &m, &err), EL_OK);
    char dir[512], path[3][600];
    snprintf(dir, sizeof dir, "%s", tu_tmp_path("serve_adapters_mt"));
    mkdir(dir, 0755);
    for (int i = 0; i < 3; i++) {
        snprintf(path[i], sizeof path[i], "%s/%c.gguf", dir, "xyz"[i]);
        save_adapter(m, path[i], 11 + i, 2);
    }
    el_adapter_cache *c;
    assert_int_equal(el_adapter_cache_new(m, dir, 2, 0, &c, &err), EL_OK);
    enum { T = 4 };
    pthread_t th[T];
    hammer_arg args[T];
    for (int t = 0; t < T; t++) {
        args[t] = (hammer_arg){c, t, 0, 0, 0};
        assert_int_equal(pthread_create(&th[t], NULL, hammer, &args[t]), 0);
    }
    for (int k = 0; k < 20; k++) {  // files change while the threads run: stale entries, reloads
        struct timespec ts[2] = {{0, UTIME_OMIT}, {time(NULL) + 10 + k, 0}};
        utimensat(AT_FDCWD, path[k % 3], ts, 0);
        usleep(2000);
    }
    int ok = 0, bad = 0;
    for (int t = 0; t < T; t++) {
        pthread_join(th[t], NULL);
        ok += args[t].ok, bad += args[t].bad;
    }
    assert_int_equal(bad, 0);
    assert_true(ok > 0);
    el_adapter_stats a;
    el_adapter_cache_stats(c, &a);
    assert_true(a.loaded <= 2);
    assert_int_equal(a.hits + a.misses >= (uint64_t)ok, 1);
    // nothing is held: every adapter can still be acquired in turn
    for (int i = 0; i < 3; i++) {
        const el_lora_set *set;
        assert_int_equal(el_adapter_cache_acquire(c, (const char[]){"xyz"[i], 0}, &set, &err), EL_OK);
        el_adapter_cache_release(c, set);
    }
    el_adapter_cache_free(c);
    for (int i = 0; i < 3; i++) unlink(path[i]);
    el_model_close(m);
}

// Stream chunks end only where a UTF-8 character ends.
static void test_utf8_cut(void **st) {
    (void)st;
    const char *ae = "a\xC3\xA9", *zh = "\xE4\xB8\xAD", *emoji = "x\xF0\x9F\x98\x81";
    assert_int_equal(el_serve_utf8_cut(ae, 3, 0), 3);  // complete 2-byte: send all
    assert_int_equal(el_serve_utf8_cut(ae, 2, 0), 1);  // lead byte only: hold it
    assert_int_equal(el_serve_utf8_cut(zh, 3, 0), 3);
    assert_int_equal(el_serve_utf8_cut(zh, 2, 0), 0);
    assert_int_equal(el_serve_utf8_cut(zh, 1, 0), 0);
    assert_int_equal(el_serve_utf8_cut(emoji, 5, 0), 5);
    assert_int_equal(el_serve_utf8_cut(emoji, 4, 0), 1);
    assert_int_equal(el_serve_utf8_cut(emoji, 3, 1), 1);  // nothing new may go yet
    assert_int_equal(el_serve_utf8_cut("abc", 3, 1), 3);
    assert_int_equal(el_serve_utf8_cut("", 0, 0), 0);
    // every prefix of a mixed text cuts at a character boundary, and never before from
    const char *mix = "h\xC3\xA9 \xE4\xB8\xAD\xF0\x9F\x98\x81!";
    size_t n = strlen(mix), bounds[] = {0, 1, 3, 4, 7, 11, 12};
    for (size_t len = 0; len <= n; len++) {
        size_t want = 0;
        for (size_t b = 0; b < sizeof bounds / sizeof bounds[0]; b++)
            if (bounds[b] <= len) want = bounds[b];
        assert_int_equal(el_serve_utf8_cut(mix, len, 0), want);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8_cut),
        cmocka_unit_test(test_parse_completion), cmocka_unit_test(test_parse_chat),
        cmocka_unit_test(test_parse_errors),     cmocka_unit_test(test_json_escape),
        cmocka_unit_test(test_adapter_cache),
        cmocka_unit_test(test_adapter_cache_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
