// Unit tests for the JSON reader (src/core/json.c): values and navigation,
// strings with escapes and long lengths, errors with line and column, and the
// memory bound of 4 bytes per input byte.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/json.h"
#include "testutil.h"

static el_json *parse_ok(const char *t) {
    el_json *j = NULL;
    el_error e = {0};
    el_status st = el_json_parse(t, strlen(t), "t.json", &j, &e);
    if (st) print_message("%s\n", e.msg);
    assert_int_equal(st, EL_OK);
    assert_non_null(j);
    assert_true(el_json_bytes(j) <= 4 * strlen(t) + 24);
    return j;
}

static void test_values(void **st) {
    (void)st;
    el_json *j = parse_ok("{\"a\": [1, -2.5e3, true, null, false, 123456789012345678], \"s\": \"x\\u00e9\\ud83e\\udd99\\n\","
                          " \"o\": {}, \"e\": [], \"z\": \"\", \"nul\": \"a\\u0000b\", \"a\": 2}");
    assert_int_equal(el_json_type_of(j), EL_JSON_OBJECT);
    assert_int_equal(el_json_len(j), 7);
    const el_json *a = el_json_get(j, "a");  // the first of two "a"
    assert_int_equal(el_json_type_of(a), EL_JSON_ARRAY);
    assert_int_equal(el_json_len(a), 6);
    assert_true(el_json_num(el_json_at(a, 0), 0) == 1.0);
    assert_true(el_json_num(el_json_at(a, 1), 0) == -2500.0);
    assert_int_equal(el_json_type_of(el_json_at(a, 2)), EL_JSON_BOOL);
    assert_int_equal(el_json_bool(el_json_at(a, 2), -1), 1);
    assert_int_equal(el_json_bool(el_json_at(a, 4), -1), 0);
    assert_int_equal(el_json_bool(el_json_at(a, 3), -1), -1);
    assert_true(el_json_is(el_json_at(a, 3), EL_JSON_NULL));
    assert_true(el_json_num(el_json_at(a, 5), 0) == 123456789012345678.0);  // past 15 digits: strtod
    assert_null(el_json_at(a, 6));
    assert_string_equal(el_json_str(el_json_get(j, "s")), "x\xc3\xa9\xf0\x9f\xa6\x99\n");
    assert_int_equal(el_json_strlen(el_json_get(j, "s")), 8);
    assert_int_equal(el_json_type_of(el_json_get(j, "o")), EL_JSON_OBJECT);
    assert_int_equal(el_json_len(el_json_get(j, "o")), 0);
    assert_null(el_json_first(el_json_get(j, "o")));
    assert_null(el_json_first(el_json_get(j, "e")));
    assert_string_equal(el_json_str(el_json_get(j, "z")), "");
    const el_json *nul = el_json_get(j, "nul");
    assert_int_equal(el_json_strlen(nul), 3);
    assert_memory_equal(el_json_str(nul), "a\0b", 4);
    assert_null(el_json_get(j, "missing"));
    assert_null(el_json_get(a, "a"));  // not an object
    // wrong types answer with the default
    assert_true(el_json_num(el_json_get(j, "s"), 7) == 7);
    assert_null(el_json_str(a));
    assert_int_equal(el_json_len(el_json_get(j, "s")), 0);
    // NULL is an absent value everywhere
    assert_null(el_json_get(NULL, "a"));
    assert_null(el_json_str(NULL));
    assert_int_equal(el_json_len(NULL), 0);
    assert_null(el_json_first(NULL));
    assert_false(el_json_is(NULL, EL_JSON_NULL));
    // iteration over members, with their keys, in order
    const char *want[] = {"a", "s", "o", "e", "z", "nul", "a"};
    size_t k = 0;
    for (const el_json *v = el_json_first(j); v; v = el_json_next(j, v), k++) {
        assert_true(k < 7);
        assert_string_equal(el_json_key(j, v), want[k]);
    }
    assert_int_equal(k, 7);
    assert_true(el_json_num(el_json_next(j, el_json_get(j, "nul")), 0) == 2.0);
    el_json_free(j);

    // scalars at the top
    j = parse_ok(" -0.125 ");
    assert_true(el_json_num(j, 0) == -0.125);
    el_json_free(j);
    j = parse_ok("\"top\"");
    assert_string_equal(el_json_str(j), "top");
    el_json_free(j);
    j = parse_ok("null");
    assert_int_equal(el_json_type_of(j), EL_JSON_NULL);
    el_json_free(j);
}

// Nested containers: next() skips whole subtrees; counts past 65534 items
// are counted by walking.
static void test_nesting_and_counts(void **st) {
    (void)st;
    el_json *j = parse_ok("[[1, [2, 3], {\"k\": [4]}], {\"x\": {\"y\": [5, 6]}}, 7]");
    assert_int_equal(el_json_len(j), 3);
    const el_json *a = el_json_first(j), *b = el_json_next(j, a), *c = el_json_next(j, b);
    assert_null(el_json_next(j, c));
    assert_true(el_json_num(c, 0) == 7);
    assert_true(el_json_num(el_json_at(el_json_get(el_json_get(b, "x"), "y"), 1), 0) == 6);
    assert_true(el_json_num(el_json_at(el_json_at(a, 1), 1), 0) == 3);
    assert_true(el_json_num(el_json_first(el_json_get(el_json_at(a, 2), "k")), 0) == 4);
    el_json_free(j);

    size_t n = 70000;
    char *t = malloc(2 * n + 2), *p = t;
    *p++ = '[';
    for (size_t i = 0; i < n; i++) {
        *p++ = (char)('0' + i % 10);
        *p++ = i + 1 < n ? ',' : ']';
    }
    *p = 0;
    j = parse_ok(t);
    assert_int_equal(el_json_len(j), n);
    assert_true(el_json_num(el_json_at(j, 69999), -1) == 9);
    // the densest text there is: 2 bytes a value, so 8-byte values are 4x
    assert_true(el_json_bytes(j) <= 4 * strlen(t) + 24);
    el_json_free(j);
    free(t);
}

// Strings of 255 bytes and more keep a 4-byte length; escapes that make a
// long raw string short once decoded use the short form.
static void test_long_strings(void **st) {
    (void)st;
    size_t lens[] = {253, 254, 255, 256, 100000};
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        size_t n = lens[k];
        char *t = malloc(n + 16);
        t[0] = '[', t[1] = '"';
        for (size_t i = 0; i < n; i++) t[2 + i] = (char)('a' + i % 26);
        memcpy(t + 2 + n, "\"]", 3);
        el_json *j = parse_ok(t);
        const el_json *s = el_json_first(j);
        assert_int_equal(el_json_strlen(s), n);
        assert_int_equal(strlen(el_json_str(s)), n);
        assert_memory_equal(el_json_str(s), t + 2, n);
        el_json_free(j);
        free(t);
    }
    // 300 raw bytes of \n escapes: 150 decoded bytes
    char t[400] = "\"";
    for (int i = 0; i < 150; i++) strcat(t, "\\n");
    strcat(t, "\"");
    el_json *j = parse_ok(t);
    assert_int_equal(el_json_strlen(j), 150);
    assert_int_equal(el_json_str(j)[149], '\n');
    el_json_free(j);
}

static void test_errors(void **st) {
    (void)st;
    el_json *j;
    el_error e;
    struct { const char *text, *msg; } bad[] = {
        {"{\"a\": 1,}", "t.json:1:9: expected a key string"},
        {"[1, 2", "t.json:1:6: unexpected end of input"},
        {"{\"a\"\n  1}", "t.json:2:3: expected ':'"},
        {"\"\\ud800\"", "lone surrogate"},
        {"\"\\udc00\"", "lone surrogate"},
        {"\"\\ud800\\u0041\"", "bad surrogate pair"},
        {"\"\\u12\"", "bad \\u escape"},
        {"\"\\q\"", "bad escape"},
        {"01", "trailing characters"},
        {"1e999", "number out of range"},
        {"-", "bad number"},
        {"1.", "bad number"},
        {"1e+", "bad number"},
        {"\"a\x01\"", "control character in string"},
        {"\"abc", "unterminated string"},
        {"\"ab\\", "unterminated string"},
        {"[1] x", "trailing characters"},
        {"", "unexpected end of input"},
        {"tru", "unexpected character"},
        {"[1 2]", "expected ',' or ']'"},
        {"{\"a\":1 \"b\":2}", "expected ',' or '}'"},
        {",,,,,,,,", "unexpected character"},
        {"[,,,,,,,,,,,,]", "unexpected character"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        j = (el_json *)&e;  // must be reset
        assert_int_equal(el_json_parse(bad[i].text, strlen(bad[i].text), "t.json", &j, &e), EL_ERR_FORMAT);
        assert_null(j);
        if (!strstr(e.msg, bad[i].msg)) print_message("%s: got '%s'\n", bad[i].text, e.msg);
        assert_non_null(strstr(e.msg, bad[i].msg));
    }
    char deep[200];
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    assert_int_equal(el_json_parse(deep, 200, "t.json", &j, &e), EL_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "nesting too deep"));
    // 64 levels are fine
    assert_int_equal(el_json_parse(deep + 36, 128, "t.json", &j, &e), EL_OK);
    el_json_free(j);
    // text with a NUL inside is read by length, and the NUL is not whitespace
    assert_int_equal(el_json_parse("[1]\0", 4, "t.json", &j, &e), EL_ERR_FORMAT);
}

// The bound on texts shaped to cost the most per byte.
static void test_memory_bound(void **st) {
    (void)st;
    const char *shapes[] = {"0,", "\"\",", "[],", "{},", "{\"\":0},", "{\"\":\"\"},", "[[]],", "true,", "\"\\u0000\","};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        size_t unit = strlen(shapes[k]), n = 5000;
        char *t = malloc(unit * n + 3);
        t[0] = '[';
        for (size_t i = 0; i < n; i++) memcpy(t + 1 + i * unit, shapes[k], unit);
        t[unit * n] = ']';  // over the last comma
        t[unit * n + 1] = 0;
        el_json *j = parse_ok(t);
        assert_int_equal(el_json_len(j), n);
        el_json_free(j);
        free(t);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_nesting_and_counts),
        cmocka_unit_test(test_long_strings),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_memory_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
