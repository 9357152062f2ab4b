// Unit tests for the split-inference wire protocol: exact byte layouts,
// round trips, and rejection of every kind of malformed frame.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/tensor.h"
#include "edgellm/wire.h"
#include "testutil.h"

static void test_header_layout(void **st) {
    (void)st;
    el_buf b = {0};
    assert_int_equal(el_wire_encode_simple(&b, EL_MSG_CLOSE, 0x0102030405060708ULL, 0xAABBCCDD), EL_OK);
    const uint8_t want[24] = {'E', 'L', 'W', 'P', 2, 0, 5, 0, 8, 7, 6, 5, 4, 3, 2, 1, 0xDD, 0xCC, 0xBB, 0xAA, 0, 0, 0, 0};
    assert_int_equal(b.len, 24);
    assert_memory_equal(b.data, want, 24);
    el_wire_msg m;
    el_error e;
    assert_int_equal(el_wire_parse(b.data, b.len, &m, &e), EL_OK);
    assert_int_equal(m.type, EL_MSG_CLOSE);
    assert_true(m.session == 0x0102030405060708ULL);
    assert_int_equal(m.seq, 0xAABBCCDD);
    assert_int_equal(m.body_len, 0);
    // corruptions
    uint8_t bad[24];
    memcpy(bad, b.data, 24);
    bad[0] = 'X';
    assert_int_equal(el_wire_parse(bad, 24, &m, &e), EL_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "bad magic"));
    memcpy(bad, b.data, 24);
    bad[4] = 3;
    assert_int_equal(el_wire_parse(bad, 24, &m, &e), EL_ERR_UNSUPPORTED);
    assert_non_null(strstr(e.msg, "protocol version 3"));
    memcpy(bad, b.data, 24);
    bad[20] = 1;
    assert_int_equal(el_wire_parse(bad, 24, &m, &e), EL_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "body length field 1"));
    assert_int_equal(el_wire_parse(b.data, 23, &m, &e), EL_ERR_FORMAT);
    el_buf_free(&b);
}

static void test_open_roundtrip(void **st) {
    (void)st;
    el_wire_open o = {.n_layers = 22, .dim = 2048, .vocab = 32000, .ctx = 512, .max_batch = 64,
                      .act_dtype = EL_DTYPE_F16, .want = EL_WANT_LOGITS, .n_stages = 2};
    o.stages[0] = (el_wire_stage){5, 12, 0x1122334455667788ULL};
    o.stages[1] = (el_wire_stage){12, 22, 42};
    el_buf b = {0};
    assert_int_equal(el_wire_encode_open(&b, 9, &o), EL_OK);
    assert_int_equal(b.len, 24 + 24 + 32);
    el_wire_msg m;
    el_wire_open d;
    el_error e;
    assert_int_equal(el_wire_parse(b.data, b.len, &m, &e), EL_OK);
    assert_int_equal(el_wire_decode_open(&m, &d, &e), EL_OK);
    assert_int_equal(d.n_layers, 22);
    assert_int_equal(d.dim, 2048);
    assert_int_equal(d.ctx, 512);
    assert_int_equal(d.act_dtype, EL_DTYPE_F16);
    assert_int_equal(d.n_stages, 2);
    assert_int_equal(d.stages[0].layer_begin, 5);
    assert_true(d.stages[0].identity == 0x1122334455667788ULL);
    assert_int_equal(d.stages[1].layer_end, 22);
    // non-contiguous stages
    b.data[24 + 24 + 16] = 13;
    assert_int_equal(el_wire_decode_open(&m, &d, &e), EL_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "not contiguous"));
    b.data[24 + 24 + 16] = 12;
    // a stage count that does not match the body
    b.data[24 + 22] = 3;
    assert_int_equal(el_wire_decode_open(&m, &d, &e), EL_ERR_FORMAT);
    b.data[24 + 22] = 0;
    assert_int_equal(el_wire_decode_open(&m, &d, &e), EL_ERR_FORMAT);
    b.data[24 + 22] = 2;
    // a stage beyond the model
    b.data[24 + 24 + 20] = 23;
    assert_int_equal(el_wire_decode_open(&m, &d, &e), EL_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "outside 0:22"));
    el_buf_free(&b);
}

static void test_forward_roundtrip(void **st) {
    (void)st;
    uint64_t rng = 5;
    float x[3 * 64], y[3 * 64];
    for (int i = 0; i < 3 * 64; i++) x[i] = tu_randf(&rng) * 4;
    int dtypes[] = {EL_DTYPE_F32, EL_DTYPE_F16, EL_DTYPE_BF16};
    size_t sizes[] = {4, 2, 2};
    for (int k = 0; k < 3; k++) {
        el_buf b = {0};
        el_error e;
        assert_int_equal(el_wire_encode_forward(&b, 77, 3, 10, 3, 64, dtypes[k], x, 0, NULL, &e), EL_OK);
        assert_int_equal(b.len, 24 + 12 + 3 * 64 * sizes[k]);
        el_wire_msg m;
        el_wire_forward f;
        assert_int_equal(el_wire_parse(b.data, b.len, &m, &e), EL_OK);
        assert_int_equal(el_wire_decode_forward(&m, 64, &f, &e), EL_OK);
        assert_int_equal(f.pos, 10);
        assert_int_equal(f.n_tokens, 3);
        assert_int_equal(el_wire_act_decode(f.dtype, f.payload, 3 * 64, y, &e), EL_OK);
        float tol = dtypes[k] == EL_DTYPE_F32 ? 0 : dtypes[k] == EL_DTYPE_F16 ? 4 * 1e-3f : 4 * 8e-3f;
        for (int i = 0; i < 3 * 64; i++) assert_true(fabsf(x[i] - y[i]) <= tol);
        // the receiver's dim disagrees with the payload
        assert_int_equal(el_wire_decode_forward(&m, 63, &f, &e), EL_ERR_FORMAT);
        assert_non_null(strstr(e.msg, "FORWARD payload"));
        // zero positions
        b.data[24 + 4] = 0;
        assert_int_equal(el_wire_decode_forward(&m, 64, &f, &e), EL_ERR_FORMAT);
        b.data[24 + 4] = 3;
        // unknown dtype
        b.data[24 + 8] = 99;
        assert_int_equal(el_wire_decode_forward(&m, 64, &f, &e), EL_ERR_UNSUPPORTED);
        el_buf_free(&b);
    }
}

static void test_result_roundtrip(void **st) {
    (void)st;
    float rows[2 * 5] = {1, 2, 3, 4, 5, -1, -2, -3, -4, -5.5f};
    el_wire_hop hops[2] = {{1000, 50, 7}, {2000, 0, 0}};
    el_buf b = {0};
    el_error e;
    assert_int_equal(el_wire_encode_result(&b, 1, 2, EL_WANT_LOGITS, EL_DTYPE_F32, 2, 5, rows, NULL, 0, hops, 2, &e), EL_OK);
    el_wire_msg m;
    el_wire_result r;
    assert_int_equal(el_wire_parse(b.data, b.len, &m, &e), EL_OK);
    assert_int_equal(el_wire_decode_result(&m, &r, &e), EL_OK);
    assert_int_equal(r.n_rows, 2);
    assert_int_equal(r.row_len, 5);
    assert_int_equal(r.n_hops, 2);
    assert_true(r.hops[1].compute_ns == 2000);
    assert_true(r.hops[0].wait_ns == 50);
    assert_true(r.hops[0].queue_ns == 7);
    float out[10];
    assert_int_equal(el_wire_act_decode(r.dtype, r.payload, 10, out, &e), EL_OK);
    assert_memory_equal(out, rows, sizeof rows);
    // tokens
    int32_t toks[3] = {7, 0, 31999};
    assert_int_equal(el_wire_encode_result(&b, 1, 3, EL_WANT_TOKEN, 0, 3, 0, NULL, toks, 0xABCDEF0123456789ULL, hops, 1, &e), EL_OK);
    assert_int_equal(el_wire_parse(b.data, b.len, &m, &e), EL_OK);
    assert_int_equal(el_wire_decode_result(&m, &r, &e), EL_OK);
    assert_int_equal(r.kind, EL_WANT_TOKEN);
    assert_int_equal(r.n_rows, 3);
    assert_int_equal(r.payload[8], 0xFF);
    assert_true(r.sampler_state == 0xABCDEF0123456789ULL);
    // hop count larger than the body allows
    b.data[24 + 2] = 16;
    assert_int_equal(el_wire_decode_result(&m, &r, &e), EL_ERR_FORMAT);
    el_buf_free(&b);
}

static void test_error_message(void **st) {
    (void)st;
    el_buf b = {0};
    assert_int_equal(el_wire_encode_error(&b, 3, 4, EL_WERR_MISMATCH, "model mismatch\n\x01"), EL_OK);
    el_wire_msg m;
    el_error e;
    uint32_t code;
    char text[64];
    assert_int_equal(el_wire_parse(b.data, b.len, &m, &e), EL_OK);
    assert_int_equal(el_wire_decode_error(&m, &code, text, sizeof text, &e), EL_OK);
    assert_int_equal(code, EL_WERR_MISMATCH);
    assert_string_equal(text, "model mismatch??");  // control characters neutralised
    char small[6];
    assert_int_equal(el_wire_decode_error(&m, &code, small, sizeof small, &e), EL_OK);
    assert_string_equal(small, "model");
    b.data[24 + 4] = 200;  // text length past the body
    assert_int_equal(el_wire_decode_error(&m, &code, text, sizeof text, &e), EL_ERR_FORMAT);
    el_buf_free(&b);
}

// Every truncation of valid messages is rejected cleanly.
static void test_truncations(void **st) {
    (void)st;
    el_buf bufs[3] = {{0}};
    el_wire_open o = {.n_layers = 4, .dim = 64, .vocab = 512, .ctx = 128, .max_batch = 8, .want = 1, .n_stages = 1};
    o.stages[0] = (el_wire_stage){1, 4, 9};
    float x[64] = {0};
    el_error e;
    el_wire_encode_open(&bufs[0], 1, &o);
    el_wire_encode_forward(&bufs[1], 1, 2, 0, 1, 64, EL_DTYPE_F32, x, 0, NULL, &e);
    el_wire_hop hop = {1, 2, 3};
    el_wire_encode_result(&bufs[2], 1, 3, EL_WANT_HIDDEN, EL_DTYPE_F32, 1, 64, x, NULL, 0, &hop, 1, &e);
    for (int k = 0; k < 3; k++) {
        for (size_t n = 0; n < bufs[k].len; n++) {
            // a frame cut short but with its length field patched to match
            uint8_t *copy = malloc(bufs[k].len);
            memcpy(copy, bufs[k].data, bufs[k].len);
            el_wire_msg m;
            if (n >= 24) {
                uint32_t body = (uint32_t)(n - 24);
                memcpy(copy + 20, &body, 4);
            }
            if (el_wire_parse(copy, n, &m, &e) == EL_OK) {
                el_wire_open od;
                el_wire_forward f;
                el_wire_result r;
                el_status s = k == 0 ? el_wire_decode_open(&m, &od, &e)
                            : k == 1 ? el_wire_decode_forward(&m, 64, &f, &e)
                                     : el_wire_decode_result(&m, &r, &e);
                assert_int_not_equal(s, EL_OK);
            }
            free(copy);
        }
        el_buf_free(&bufs[k]);
    }
}

static void test_train_messages(void **st) {
    (void)st;
    el_buf b = {0};
    el_error e;
    el_wire_msg m;
    el_wire_train_open o = {.n_layers = 4, .dim = 64, .vocab = 512, .layer_begin = 2, .layer_end = 4, .identity = 77,
                            .batch = 2, .T = 3, .rank = 8, .alpha = 16, .targets = 127, .seed = 5, .ushape = 1,
                            .act_dtype = EL_DTYPE_F16, .grad_dtype = EL_DTYPE_F32, .shared = 1, .beta1 = 0.9f,
                            .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0, .clip = 1};
    el_wire_train_open d;
    assert_int_equal(el_wire_encode_train_open(&b, 1, &o), EL_OK);
    assert_int_equal(b.len, 24 + 80);
    assert_int_equal(el_wire_parse(b.data, b.len, &m, &e), EL_OK);
    assert_int_equal(el_wire_decode_train_open(&m, &d, &e), EL_OK);
    assert_true(d.identity == 77 && d.rank == 8 && d.alpha == 16 && d.ushape == 1 && d.act_dtype == EL_DTYPE_F16);
    b.data[24 + 36] = 0;  // rank 0
    assert_int_equal(el_wire_decode_train_open(&m, &d, &e), EL_ERR_FORMAT);

    // a forward with labels: 6 rows of 64 f32, 6 targets, 6 mask values
    float x[6 * 64];
    int32_t tg[6] = {1, 2, 3, 4, 5, -1};
    float mk[6] = {1, 1, 0, 1, 1, 0};
    for (int i = 0; i < 6 * 64; i++) x[i] = (float)i / 7;
    assert_int_equal(el_wire_encode_train_fwd(&b, EL_MSG_TRAIN_FORWARD, 9, 2, 6, 64, EL_DTYPE_F32, 0, 0.5f, x, tg, mk, &e),
                     EL_OK);
    assert_int_equal(b.len, 24 + 12 + 6 * 64 * 4 + 6 * 8);
    el_wire_train_fwd f;
    assert_int_equal(el_wire_parse(b.data, b.len, &m, &e), EL_OK);
    assert_int_equal(el_wire_decode_train_fwd(&m, 64, &f, &e), EL_OK);
    assert_true(f.rows == 6 && f.grad_scale == 0.5f && (f.flags & EL_TRAIN_HAS_TARGETS) && f.targets && f.mask);
    assert_int_equal((int32_t)el_wire_u32(f.targets + 20), -1);
    // U-shape: no labels on the wire at all
    assert_int_equal(el_wire_encode_train_fwd(&b, EL_MSG_TRAIN_FORWARD, 9, 3, 6, 64, EL_DTYPE_F32, 0, 1, x, NULL, NULL, &e),
                     EL_OK);
    assert_int_equal(b.len, 24 + 12 + 6 * 64 * 4);
    assert_int_equal(el_wire_parse(b.data, b.len, &m, &e), EL_OK);
    assert_int_equal(el_wire_decode_train_fwd(&m, 64, &f, &e), EL_OK);
    assert_null(f.targets);
    assert_int_equal(el_wire_decode_train_fwd(&m, 32, &f, &e), EL_ERR_FORMAT);  // rows of another width

    el_wire_train_result r;
    assert_int_equal(el_wire_encode_train_result(&b, 9, 4, 2.5, 10, 0.001, 0, 6, 64, EL_DTYPE_F16, x, &e), EL_OK);
    assert_int_equal(el_wire_parse(b.data, b.len, &m, &e), EL_OK);
    assert_int_equal(el_wire_decode_train_result(&m, 64, &r, &e), EL_OK);
    assert_true(r.loss == 2.5 && r.n_tokens == 10 && r.rows == 6 && r.dtype == EL_DTYPE_F16);

    uint64_t t;
    float lr;
    double ss;
    assert_int_equal(el_wire_encode_train_step(&b, 9, 5, 42, 0.01f, 3.25), EL_OK);
    assert_int_equal(el_wire_parse(b.data, b.len, &m, &e), EL_OK);
    assert_int_equal(el_wire_decode_train_step(&m, &t, &lr, &ss, &e), EL_OK);
    assert_true(t == 42 && lr == 0.01f && ss == 3.25);

    float params[3] = {1.5f, -2, 0.25f};
    double w;
    const uint8_t *pp;
    uint64_t n;
    assert_int_equal(el_wire_encode_params(&b, EL_MSG_TRAIN_AVG, 9, 6, 128, params, 3), EL_OK);
    assert_int_equal(el_wire_parse(b.data, b.len, &m, &e), EL_OK);
    assert_int_equal(el_wire_decode_params(&m, &w, &pp, &n, &e), EL_OK);
    assert_true(w == 128 && n == 3);
    b.data[24 + 8] = 4;  // claims 4 parameters in a body that holds 3
    assert_int_equal(el_wire_decode_params(&m, &w, &pp, &n, &e), EL_ERR_FORMAT);
    el_buf_free(&b);
}

// LORA: two matrices round-trip with their values; every truncation, a wrong
// target, a zero rank, trailing bytes, a bad alpha and too many matrices are
// refused; el_wire_f32s refuses non-finite values.
static void test_lora_message(void **st) {
    (void)st;
    float a0[2 * 4], b0[3 * 2], a1[1 * 3], b1[5 * 1];
    for (int i = 0; i < 8; i++) a0[i] = 0.5f * i - 1;
    for (int i = 0; i < 6; i++) b0[i] = -0.25f * i;
    for (int i = 0; i < 3; i++) a1[i] = 3.0f + i;
    for (int i = 0; i < 5; i++) b1[i] = 1e-3f * i;
    el_wire_lora_mat mats[2] = {{2, 0, 2, 4, 3, a0, b0}, {3, 6, 1, 3, 5, a1, b1}};
    el_buf b = {0};
    el_error e;
    assert_int_equal(el_wire_encode_lora(&b, 77, 5, 0.75f, 16.0f, 2, mats), EL_OK);
    assert_int_equal(b.len, 24 + 12 + 2 * 20 + 4 * (8 + 6 + 3 + 5));
    el_wire_msg m;
    assert_int_equal(el_wire_parse(b.data, b.len, &m, &e), EL_OK);
    assert_int_equal(m.type, EL_MSG_LORA);
    assert_int_equal(m.session, 77);
    el_wire_lora_mat got[4];
    float scale, alpha, va[8], vb[6];
    uint32_t n;
    assert_int_equal(el_wire_decode_lora(&m, &scale, &alpha, got, 4, &n, &e), EL_OK);
    assert_int_equal(n, 2);
    assert_true(scale == 0.75f && alpha == 16.0f);
    assert_int_equal(got[0].layer, 2), assert_int_equal(got[0].target, 0), assert_int_equal(got[0].rank, 2);
    assert_int_equal(got[0].in, 4), assert_int_equal(got[0].out, 3);
    assert_int_equal(got[1].layer, 3), assert_int_equal(got[1].target, 6), assert_int_equal(got[1].out, 5);
    assert_int_equal(el_wire_f32s(got[0].a, 8, va), EL_OK);
    assert_int_equal(el_wire_f32s(got[0].b, 6, vb), EL_OK);
    assert_memory_equal(va, a0, sizeof a0);
    assert_memory_equal(vb, b0, sizeof b0);
    assert_int_equal(el_wire_f32s(got[1].b, 5, vb), EL_OK);
    assert_memory_equal(vb, b1, sizeof b1);
    // at most cap matrices
    assert_int_equal(el_wire_decode_lora(&m, &scale, &alpha, got, 1, &n, &e), EL_ERR_FORMAT);
    // readdressed: the same body under another session and sequence number
    el_buf r = {0};
    assert_int_equal(el_wire_readdress(&r, &m, 99, 6), EL_OK);
    el_wire_msg m2;
    assert_int_equal(el_wire_parse(r.data, r.len, &m2, &e), EL_OK);
    assert_true(m2.session == 99 && m2.seq == 6 && m2.type == EL_MSG_LORA && m2.body_len == m.body_len);
    assert_memory_equal(m2.body, m.body, m.body_len);
    el_buf_free(&r);
    // every truncation (length field patched) fails, and so do bad fields
    uint8_t *copy = malloc(b.len + 4);
    for (size_t cut = 24; cut < b.len; cut++) {
        memcpy(copy, b.data, cut);
        uint32_t body = (uint32_t)(cut - 24);
        memcpy(copy + 20, &body, 4);
        assert_int_equal(el_wire_parse(copy, cut, &m2, &e), EL_OK);
        assert_int_equal(el_wire_decode_lora(&m2, &scale, &alpha, got, 4, &n, &e), EL_ERR_FORMAT);
    }
    struct { size_t at; uint32_t v; } bad[] = {
        {24 + 4, 0},                    // alpha 0
        {24 + 4, 0x7fc00000u},          // alpha NaN
        {24 + 12 + 4, 7},               // target 7
        {24 + 12 + 8, 0},               // rank 0
        {24 + 12 + 12, 0},              // in 0
        {24 + 8, 3},                    // 3 matrices announced, 2 present
        {24 + 8, 1},                    // 1 announced: the second's bytes trail
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memcpy(copy, b.data, b.len);
        memcpy(copy + bad[i].at, &bad[i].v, 4);
        assert_int_equal(el_wire_parse(copy, b.len, &m2, &e), EL_OK);
        assert_int_equal(el_wire_decode_lora(&m2, &scale, &alpha, got, 4, &n, &e), EL_ERR_FORMAT);
    }
    free(copy);
    float inf_nan[2] = {INFINITY, NAN}, out[2];
    assert_int_equal(el_wire_f32s(&inf_nan[0], 1, out), EL_ERR_FORMAT);
    assert_int_equal(el_wire_f32s(&inf_nan[1], 1, out), EL_ERR_FORMAT);
    el_buf_free(&b);
}

// Protocol version 2: FORWARD flags with token ids, RESULTs without rows,
// sampler state, OPEN with sampling settings, relaying a result with a hop
// in front, and a clear answer to a peer of version 1.
static void test_v2_fields(void **st) {
    (void)st;
    el_buf b = {0}, c = {0};
    el_error e;
    el_wire_msg m;
    float x[2 * 64];
    for (int i = 0; i < 128; i++) x[i] = (float)i / 8;
    int32_t toks[2] = {17, 31999};
    assert_int_equal(el_wire_encode_forward(&b, 5, 6, 3, 2, 64, EL_DTYPE_F32, x, EL_FWD_TOKENS | EL_FWD_NO_OUTPUT, toks, &e),
                     EL_OK);
    assert_int_equal(b.len, 24 + 12 + 2 * 64 * 4 + 8);
    el_wire_forward f;
    assert_int_equal(el_wire_parse(b.data, b.len, &m, &e), EL_OK);
    assert_int_equal(el_wire_decode_forward(&m, 64, &f, &e), EL_OK);
    assert_int_equal(f.flags, EL_FWD_TOKENS | EL_FWD_NO_OUTPUT);
    assert_non_null(f.tokens);
    assert_int_equal(el_wire_u32(f.tokens + 4), 31999);
    b.data[24 + 9] = 0;  // the ids are there but the flag is not: the length is wrong
    assert_int_equal(el_wire_decode_forward(&m, 64, &f, &e), EL_ERR_FORMAT);
    b.data[24 + 9] = 0x10;  // an unknown flag
    assert_int_equal(el_wire_decode_forward(&m, 64, &f, &e), EL_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "unknown flags"));
    assert_int_equal(el_wire_encode_forward(&b, 5, 6, 3, 2, 64, EL_DTYPE_F32, x, EL_FWD_TOKENS, NULL, &e), EL_ERR_ARG);

    // a result without rows, and relaying it with a hop in front
    el_wire_hop hop = {11, 22, 33}, front = {44, 55, 66};
    assert_int_equal(el_wire_encode_result(&b, 9, 10, EL_WANT_LOGITS, EL_DTYPE_F32, 0, 512, NULL, NULL, 0, &hop, 1, &e), EL_OK);
    assert_int_equal(el_wire_parse(b.data, b.len, &m, &e), EL_OK);
    el_wire_result r;
    assert_int_equal(el_wire_decode_result(&m, &r, &e), EL_OK);
    assert_int_equal(r.n_rows, 0);
    assert_int_equal(el_wire_encode_result(&b, 9, 10, EL_WANT_HIDDEN, EL_DTYPE_F16, 2, 64, x, NULL, 0, &hop, 1, &e), EL_OK);
    assert_int_equal(el_wire_parse(b.data, b.len, &m, &e), EL_OK);
    assert_int_equal(el_wire_relay_result(&c, &m, 77, 88, &front, &e), EL_OK);
    el_wire_msg m2;
    assert_int_equal(el_wire_parse(c.data, c.len, &m2, &e), EL_OK);
    assert_true(m2.session == 77 && m2.seq == 88);
    assert_int_equal(el_wire_decode_result(&m2, &r, &e), EL_OK);
    assert_int_equal(r.n_hops, 2);
    assert_true(r.hops[0].compute_ns == 44 && r.hops[0].queue_ns == 66 && r.hops[1].wait_ns == 22);
    assert_int_equal(r.n_rows, 2);
    assert_int_equal(r.dtype, EL_DTYPE_F16);
    float y[128];
    assert_int_equal(el_wire_act_decode(r.dtype, r.payload, 128, y, &e), EL_OK);
    assert_true(fabsf(y[127] - x[127]) < 0.01f);

    // OPEN with sampling settings (want TOKEN), and settings out of range
    el_wire_open o = {.n_layers = 4, .dim = 64, .vocab = 512, .ctx = 128, .max_batch = 8, .want = EL_WANT_TOKEN,
                      .n_stages = 1, .sampling = {0.8f, 40, 0.95f, 0.05f, 1.1f, 64, 1234567}};
    o.stages[0] = (el_wire_stage){1, 4, 9};
    assert_int_equal(el_wire_encode_open(&b, 1, &o), EL_OK);
    assert_int_equal(b.len, 24 + 24 + 16 + 32);
    el_wire_open d;
    assert_int_equal(el_wire_parse(b.data, b.len, &m, &e), EL_OK);
    assert_int_equal(el_wire_decode_open(&m, &d, &e), EL_OK);
    assert_true(d.sampling.temp == 0.8f && d.sampling.top_k == 40 && d.sampling.top_p == 0.95f);
    assert_true(d.sampling.repeat_last_n == 64 && d.sampling.seed == 1234567);
    b.data[24 + 40 + 8] = 0;  // top_p 0: out of range
    b.data[24 + 40 + 9] = 0;
    b.data[24 + 40 + 10] = 0;
    b.data[24 + 40 + 11] = 0;
    assert_int_equal(el_wire_decode_open(&m, &d, &e), EL_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "sampling"));

    // a version-1 peer: refused, and answered in its own layout
    assert_int_equal(el_wire_encode_simple(&b, EL_MSG_CLOSE, 3, 4), EL_OK);
    b.data[4] = 1;
    assert_int_equal(el_wire_parse(b.data, b.len, &m, &e), EL_ERR_UNSUPPORTED);
    assert_non_null(strstr(e.msg, "protocol version 1"));
    assert_int_equal(el_wire_version_error(&c, b.data, b.len), EL_OK);
    assert_int_equal(c.data[4], 1);  // version 1's header
    assert_int_equal(el_wire_parse(c.data, c.len, &m, &e), EL_OK);  // an old ERROR is still read
    uint32_t code;
    char text[300];
    assert_int_equal(el_wire_decode_error(&m, &code, text, sizeof text, &e), EL_OK);
    assert_non_null(strstr(text, "protocol version 2, yours speaks 1"));
    assert_true(m.session == 3 && m.seq == 4);
    b.data[4] = 2;  // our own version is not "another"
    assert_int_equal(el_wire_version_error(&c, b.data, b.len), EL_ERR_UNSUPPORTED);
    el_buf_free(&b);
    el_buf_free(&c);
}

// BLOCK_GET / BLOCK_DATA: the byte layout of docs/protocol.md, and every
// inconsistent length refused.
static void test_block_messages(void **st) {
    (void)st;
    el_buf b = {0};
    el_wire_msg m;
    el_wire_block d;
    el_error err;
    uint8_t h[32];
    for (int i = 0; i < 32; i++) h[i] = (uint8_t)(200 + i);
    assert_int_equal(el_wire_encode_block_get(&b, 9, h, 0x0102030405060708ull, 1u << 20), EL_OK);
    assert_int_equal(b.len, EL_WIRE_HEADER + 44);
    assert_memory_equal(b.data + EL_WIRE_HEADER, h, 32);
    assert_int_equal(b.data[EL_WIRE_HEADER + 32], 0x08);  // little-endian offset
    assert_int_equal(b.data[EL_WIRE_HEADER + 39], 0x01);
    assert_int_equal(el_wire_parse(b.data, b.len, &m, &err), EL_OK);
    assert_int_equal(m.type, EL_MSG_BLOCK_GET);
    assert_int_equal(el_wire_decode_block_get(&m, &d, &err), EL_OK);
    assert_memory_equal(d.hash, h, 32);
    assert_int_equal(d.offset, 0x0102030405060708ull);
    assert_int_equal(d.max_len, 1u << 20);
    m.body_len = 43;  // short
    assert_int_equal(el_wire_decode_block_get(&m, &d, &err), EL_ERR_FORMAT);

    assert_int_equal(el_wire_encode_block_data(&b, 0, 10, h, 5, 9, "abcd", 4), EL_OK);
    assert_int_equal(b.len, EL_WIRE_HEADER + 52 + 4);
    assert_int_equal(el_wire_parse(b.data, b.len, &m, &err), EL_OK);
    assert_int_equal(el_wire_decode_block_data(&m, &d, &err), EL_OK);
    assert_int_equal(d.offset, 5);
    assert_int_equal(d.total, 9);
    assert_int_equal(d.n, 4);
    assert_memory_equal(d.data, "abcd", 4);
    assert_int_equal(el_wire_decode_block_get(&m, &d, &err), EL_ERR_FORMAT);  // wrong type
    // past the block's end: the encoder refuses, and so does the decoder of a forged frame
    assert_int_equal(el_wire_encode_block_data(&b, 0, 10, h, 6, 9, "abcd", 4), EL_ERR_RANGE);
    assert_int_equal(el_wire_encode_block_data(&b, 0, 10, h, 5, 9, "abcd", 4), EL_OK);
    b.data[EL_WIRE_HEADER + 40] = 8;  // total 8 < offset 5 + n 4
    assert_int_equal(el_wire_parse(b.data, b.len, &m, &err), EL_OK);
    assert_int_equal(el_wire_decode_block_data(&m, &d, &err), EL_ERR_FORMAT);
    b.data[EL_WIRE_HEADER + 40] = 9;
    b.data[EL_WIRE_HEADER + 48] = 5;  // n says 5, 4 bytes follow
    assert_int_equal(el_wire_decode_block_data(&m, &d, &err), EL_ERR_FORMAT);
    b.data[EL_WIRE_HEADER + 48] = 4;
    b.data[EL_WIRE_HEADER + 32] = 0xFF, b.data[EL_WIRE_HEADER + 39] = 0xFF;  // offset near 2^64: no wrap
    assert_int_equal(el_wire_decode_block_data(&m, &d, &err), EL_ERR_FORMAT);
    m.body_len = 51;
    assert_int_equal(el_wire_decode_block_data(&m, &d, &err), EL_ERR_FORMAT);
    el_buf_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_layout),   cmocka_unit_test(test_open_roundtrip),
        cmocka_unit_test(test_forward_roundtrip), cmocka_unit_test(test_result_roundtrip),
        cmocka_unit_test(test_error_message),   cmocka_unit_test(test_truncations),
        cmocka_unit_test(test_train_messages),  cmocka_unit_test(test_lora_message), cmocka_unit_test(test_v2_fields),
        cmocka_unit_test(test_block_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
