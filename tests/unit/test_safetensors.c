// Unit tests for the safetensors reader: a well-formed file reads back with the
// right shapes and bytes; each kind of malformed header is refused with an
// error that names the file and the problem.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/json.h"
#include "edgellm/safetensors.h"
#include "edgellm/tensor.h"
#include "testutil.h"

// 8-byte little-endian length + header + data, in buf; returns the size.
static size_t make(unsigned char *buf, const char *header, const void *data, size_t n) {
    size_t h = strlen(header);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(buf + 8, header, h);
    if (n) memcpy(buf + 8 + h, data, n);
    return 8 + h + n;
}

static void test_valid(void **st) {
    (void)st;
    unsigned char buf[512];
    float a[4] = {1, 2, 3, 4};
    unsigned char data[24];
    memcpy(data, a, 16);
    uint16_t b[3] = {0x3f80, 0x4000, 0xc040};  // bf16 1, 2, -3
    memcpy(data + 16, b, 6);
    size_t n = make(buf,
                    "{\"__metadata__\":{\"format\":\"pt\"},"
                    "\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[16,22]},"
                    "\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}   ",
                    data, 22);
    el_safetensors *s;
    el_error err;
    assert_int_equal(el_safetensors_open_memory(buf, n, "ok.safetensors", &s, &err), EL_OK);
    assert_int_equal(s->n_tensors, 2);
    const el_st_tensor *ta = el_safetensors_find(s, "a"), *tb = el_safetensors_find(s, "b");
    assert_non_null(ta);
    assert_non_null(tb);
    assert_null(el_safetensors_find(s, "__metadata__"));
    assert_int_equal(ta->dtype, EL_DTYPE_F32);
    assert_int_equal(ta->n_dims, 2);
    assert_int_equal(ta->shape[0], 2);
    assert_int_equal(ta->shape[1], 2);
    assert_int_equal(el_st_numel(ta), 4);
    float a3;  // the data section need not be aligned: read bytes
    memcpy(&a3, (const unsigned char *)ta->data + 12, 4);
    assert_float_equal(a3, 4.0f, 0);
    assert_int_equal(tb->dtype, EL_DTYPE_BF16);
    uint16_t b2;
    memcpy(&b2, (const unsigned char *)tb->data + 4, 2);
    assert_float_equal(el_bf16_to_f32(b2), -3.0f, 0);
    el_safetensors_close(s);
    // through a file as well
    const char *path = tu_write_tmp("ok.safetensors", buf, n);
    assert_int_equal(el_safetensors_open(path, &s, &err), EL_OK);
    assert_int_equal(s->n_tensors, 2);
    el_safetensors_close(s);
}

static void expect_bad(const unsigned char *buf, size_t n, const char *want) {
    el_safetensors *s = (el_safetensors *)1;
    el_error err = {0};
    el_status rc = el_safetensors_open_memory(buf, n, "bad.safetensors", &s, &err);
    if (rc == EL_OK) fail_msg("accepted a malformed file, expected '%s'", want);
    assert_null(s);
    if (!strstr(err.msg, want) || !strstr(err.msg, "bad.safetensors")) fail_msg("error '%s' lacks '%s'", err.msg, want);
}

#define T(dt, shape, b, e) "{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

static void test_malformed(void **st) {
    (void)st;
    unsigned char buf[1024] = {0}, z[64] = {0};
    expect_bad(buf, 5, "too short");  // truncated before the length
    size_t n = make(buf, "{\"a\":" T("F32", "[4]", 0, 16) "}", z, 16);
    expect_bad(buf, n - 17, "runs past the end");  // truncated inside the header
    expect_bad(buf, n - 4, "outside the 12 bytes of data");  // truncated inside the data
    memset(buf, 0xff, 8);
    expect_bad(buf, 64, "over the");  // absurd header length
    expect_bad(buf, make(buf, "{\"a\":" T("F32", "[4]", 0, 16) "", z, 16), "bad.safetensors:1:");  // invalid JSON
    expect_bad(buf, make(buf, "[1,2]", NULL, 0), "not a JSON object");
    expect_bad(buf, make(buf, "{\"a\":" T("F32", "[4]", 8, 24) "}", z, 16), "outside the 16 bytes");
    expect_bad(buf, make(buf, "{\"a\":" T("F32", "[1]", 8, 4) "}", z, 16), "[8, 4)");  // begin > end
    expect_bad(buf, make(buf, "{\"a\":" T("F32", "[3]", 0, 16) "}", z, 16), "holds 16 bytes but");
    expect_bad(buf, make(buf, "{\"a\":" T("F32", "[2]", 0, 8) ",\"b\":" T("F32", "[2]", 4, 12) "}", z, 16),
               "overlap");
    expect_bad(buf, make(buf, "{\"a\":" T("F32", "[2]", 0, 8) ",\"a\":" T("F32", "[2]", 8, 16) "}", z, 16),
               "appears twice");
    expect_bad(buf, make(buf, "{\"a\":" T("I64", "[2]", 0, 16) "}", z, 16), "dtype 'I64'");
    expect_bad(buf, make(buf, "{\"a\":" T("F32", "[1,1,1,1,1,1,1,1,1]", 0, 4) "}", z, 16), "9 dimensions");
    expect_bad(buf, make(buf, "{\"a\":" T("F32", "[1099511627776,1099511627776,1099511627776]", 0, 4) "}", z, 16),
               "absurd shape");
    expect_bad(buf, make(buf, "{\"a\":" T("F32", "[2.5]", 0, 4) "}", z, 16), "dimension 0 is not an integer");
    expect_bad(buf, make(buf, "{\"a\":" T("F32", "[-1]", 0, 4) "}", z, 16), "dimension 0 is not an integer");
    expect_bad(buf, make(buf, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", z, 16), "data_offsets");
    expect_bad(buf, make(buf, "{\"__metadata__\":[1]}", z, 16), "__metadata__");
}

static void test_json_errors_name_the_file(void **st) {
    (void)st;
    el_json *j;
    el_error err;
    const char *text = "{\n  \"a\": 1,\n  \"b\": ]\n}";
    assert_int_not_equal(el_json_parse(text, strlen(text), "config.json", &j, &err), EL_OK);
    assert_string_equal(err.msg, "config.json:3:8: unexpected character");
    text = "{} x";
    assert_int_not_equal(el_json_parse(text, strlen(text), "t.json", &j, &err), EL_OK);
    assert_string_equal(err.msg, "t.json:1:4: trailing characters after the value");
    assert_int_not_equal(el_json_load(tu_tmp_path("no-such.json"), 1 << 20, &j, &err), EL_OK);
    assert_non_null(strstr(err.msg, "no-such.json"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_json_errors_name_the_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
