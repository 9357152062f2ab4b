// The worker as a hostile peer meets it: messages fed straight into a worker
// without a socket (el_worker_feed), replies caught by a sink. Clients that
// open sessions until refused, touch others' sessions, ask for batches and
// probes over the limits, exhaust their memory, open training sessions that
// do not fit, and send malformed federated averages: each gets a clear ERROR,
// nothing is lost for the others, and every byte returns when they leave.
// Runs under ASan+UBSan in CI like every unit test.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/lora.h"
#include "edgellm/split.h"
#include "edgellm/wire.h"
#include "testutil.h"

// The last reply each of two peers received.
typedef struct {
    uint8_t data[2][1 << 20];
    size_t len[2];
    int count[2];
} sink;

static void catch_reply(void *ctx, const el_peer *peer, const void *data, size_t n) {
    sink *k = ctx;
    int i = peer->id[0] == 'B';
    k->len[i] = n < sizeof k->data[i] ? n : sizeof k->data[i];
    memcpy(k->data[i], data, k->len[i]);
    k->count[i]++;
}

static el_peer peer_of(char c) {
    el_peer p = {{0}, 1, ""};
    p.id[0] = (uint8_t)c;
    snprintf(p.client, sizeof p.client, "conn:%02x", c);
    return p;
}

// The reply type of the last message to peer c; for an ERROR its text in text.
static int last_reply(sink *k, char c, uint64_t *session, char *text, size_t cap) {
    int i = c == 'B';
    el_wire_msg m;
    el_error e;
    if (el_wire_parse(k->data[i], k->len[i], &m, &e)) return -1;
    if (session) *session = m.session;
    if (text) {
        text[0] = 0;
        uint32_t code;
        if (m.type == EL_MSG_ERROR) el_wire_decode_error(&m, &code, text, cap, &e);
    }
    return m.type;
}

static el_wire_open open_req(uint64_t identity, uint32_t ctx, uint32_t max_batch) {
    el_wire_open o = {.n_layers = 4, .dim = 64, .vocab = 512, .ctx = ctx, .max_batch = max_batch, .act_dtype = EL_DTYPE_F32,
                      .want = EL_WANT_LOGITS, .n_stages = 1};
    o.stages[0] = (el_wire_stage){2, 4, identity};
    return o;
}

typedef struct {
    el_worker_opts o;
    el_worker *w;
    sink *k;
    el_model *m;
    uint64_t identity;
    el_buf b;
} fixture;

static void setup_worker(fixture *f, size_t max_kv, int max_sessions, int train) {
    el_error err;
    memset(f, 0, sizeof *f);
    f->k = calloc(1, sizeof *f->k);
    f->o = (el_worker_opts){.model_path = tu_model_path("aidreams260K.bin"), .layer_begin = 2, .layer_end = 4,
                            .threads = 1, .max_sessions = max_sessions, .max_kv_bytes = max_kv, .train = train,
                            .reply_sink = catch_reply, .reply_ctx = f->k};
    assert_int_equal(el_worker_new(&f->o, &f->w, &err), EL_OK);
    el_model_opts mo = {.layer_begin = 2, .no_embed = 1};
    assert_int_equal(el_model_open(f->o.model_path, &mo, &f->m, &err), EL_OK);
    f->identity = el_model_identity(f->m, 2, 4);
}

static void teardown_worker(fixture *f) {
    el_worker_free(f->w);
    el_model_close(f->m);
    el_buf_free(&f->b);
    free(f->k);
}

static void feed(fixture *f, char who) {
    el_peer p = peer_of(who);
    el_worker_feed(f->w, &p, f->b.data, f->b.len);
}

// OPEN for peer who; returns the session id (0 when refused; text says why).
static uint64_t open_session(fixture *f, char who, uint32_t ctx, char *text, size_t cap) {
    el_wire_open o = open_req(f->identity, ctx, 8);
    assert_int_equal(el_wire_encode_open(&f->b, 1, &o), EL_OK);
    feed(f, who);
    uint64_t session = 0;
    int type = last_reply(f->k, who, &session, text, cap);
    return type == EL_MSG_OPENED ? session : 0;
}

// FORWARD of n rows at pos; returns the reply type after a step.
static int forward(fixture *f, char who, uint64_t session, uint32_t pos, uint32_t n, char *text, size_t cap) {
    float *x = calloc((size_t)n * 64, sizeof(float));
    for (uint32_t i = 0; i < n * 64; i++) x[i] = 0.01f * (float)(i % 17);
    el_error err;
    assert_int_equal(el_wire_encode_forward(&f->b, session, 7, pos, n, 64, EL_DTYPE_F32, x, 0, NULL, &err), EL_OK);
    free(x);
    int before = f->k->count[who == 'B'];
    feed(f, who);
    if (f->k->count[who == 'B'] == before) el_worker_step(f->w);  // queued: the step answers
    return last_reply(f->k, who, NULL, text, cap);
}

static void test_sessions_per_client(void **st) {
    (void)st;
    fixture f;
    setup_worker(&f, 0, 6, 0);  // 6 sessions in all: 3 per client
    char text[EL_WIRE_MAX_TEXT];
    uint64_t a[4];
    for (int i = 0; i < 3; i++) assert_true((a[i] = open_session(&f, 'A', 64, text, sizeof text)) != 0);
    // a client that opens sessions until refused ...
    assert_true(open_session(&f, 'A', 64, text, sizeof text) == 0);
    assert_non_null(strstr(text, "this client has 3 sessions already"));
    // ... does not stop another from opening one
    uint64_t b = open_session(&f, 'B', 64, text, sizeof text);
    assert_true(b != 0);
    // nor can it use the other's session (a FORWARD or a LORA from the wrong peer)
    assert_int_equal(forward(&f, 'A', b, 0, 1, text, sizeof text), EL_MSG_ERROR);
    assert_non_null(strstr(text, "unknown or expired session"));
    float ab[4 * 64] = {0};
    el_wire_lora_mat mat = {2, 0, 4, 64, 64, ab, ab};
    assert_int_equal(el_wire_encode_lora(&f.b, b, 9, 1, 1, 1, &mat), EL_OK);
    feed(&f, 'A');
    assert_int_equal(last_reply(f.k, 'A', NULL, text, sizeof text), EL_MSG_ERROR);
    assert_non_null(strstr(text, "unknown or expired session"));
    // B's session works
    assert_int_equal(forward(&f, 'B', b, 0, 3, text, sizeof text), EL_MSG_RESULT);
    // a batch over the session's limit (8), a gap, a probe over the reply limit
    assert_int_equal(forward(&f, 'B', b, 3, 9, text, sizeof text), EL_MSG_ERROR);
    assert_non_null(strstr(text, "does not fit"));
    assert_int_equal(forward(&f, 'B', b, 9, 1, text, sizeof text), EL_MSG_ERROR);
    assert_non_null(strstr(text, "does not fit"));
    assert_int_equal(el_wire_encode_probe(&f.b, 3, 32, 64u << 20), EL_OK);
    feed(&f, 'B');
    assert_int_equal(last_reply(f.k, 'B', NULL, text, sizeof text), EL_MSG_ERROR);
    assert_non_null(strstr(text, "exceeds this worker's reply limit"));
    // the session survived all that
    assert_int_equal(forward(&f, 'B', b, 3, 1, text, sizeof text), EL_MSG_RESULT);
    // closing everything returns every byte
    assert_true(el_worker_mem_used(f.w) > 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(el_wire_encode_simple(&f.b, EL_MSG_CLOSE, a[i], 5), EL_OK);
        feed(&f, 'A');
    }
    assert_int_equal(el_wire_encode_simple(&f.b, EL_MSG_CLOSE, b, 5), EL_OK);
    feed(&f, 'B');
    assert_int_equal(el_worker_mem_used(f.w), 0);
    teardown_worker(&f);
}

// One client's KV share runs out: its request is refused, its session and
// the other client's go on.
static void test_memory_per_client(void **st) {
    (void)st;
    fixture f;
    // a block of these layers is 16 KiB; a client gets half of 128 KiB
    setup_worker(&f, 128 << 10, 8, 0);
    char text[EL_WIRE_MAX_TEXT];
    uint64_t a = open_session(&f, 'A', 128, text, sizeof text), b = open_session(&f, 'B', 128, text, sizeof text);
    assert_true(a && b);
    int pos = 0, refused = 0;
    for (int k = 0; k < 16 && !refused; k++, pos += 8) {
        if (forward(&f, 'A', a, (uint32_t)pos, 8, text, sizeof text) == EL_MSG_ERROR) refused = 1;
    }
    assert_true(refused);
    assert_non_null(strstr(text, "budget exhausted"));
    assert_true(pos >= 32);  // it got some blocks first
    // the other client still has its share
    for (int p = 0; p < 40; p += 8) assert_int_equal(forward(&f, 'B', b, (uint32_t)p, 8, text, sizeof text), EL_MSG_RESULT);
    teardown_worker(&f);
}

// Training: a batch that does not fit the client's share is refused before
// it is allocated; a malformed federated average drops its device, and the
// round completes for the other.
static void test_training_limits(void **st) {
    (void)st;
    fixture f;
    setup_worker(&f, 64 << 20, 8, 1);  // 32 MiB a client
    char text[EL_WIRE_MAX_TEXT];
    el_wire_train_open to = {.n_layers = 4, .dim = 64, .vocab = 512, .layer_begin = 2, .layer_end = 4,
                             .identity = f.identity, .batch = 64, .T = 128, .rank = 4, .alpha = 8,
                             .targets = EL_LORA_ALL_TARGETS, .seed = 1, .act_dtype = EL_DTYPE_F32,
                             .grad_dtype = EL_DTYPE_F32, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .clip = 1};
    assert_int_equal(el_wire_encode_train_open(&f.b, 1, &to), EL_OK);
    feed(&f, 'A');
    assert_int_equal(last_reply(f.k, 'A', NULL, text, sizeof text), EL_MSG_ERROR);
    assert_non_null(strstr(text, "batch 64 x context 128"));
    assert_int_equal(el_worker_mem_used(f.w), 0);
    // two devices that fit, one forward + step each
    to.batch = 2;
    to.T = 16;
    uint64_t s[2];
    for (int d = 0; d < 2; d++) {
        char who = d ? 'B' : 'A';
        assert_int_equal(el_wire_encode_train_open(&f.b, 1, &to), EL_OK);
        feed(&f, who);
        assert_int_equal(last_reply(f.k, who, &s[d], text, sizeof text), EL_MSG_OPENED);
        float x[32 * 64];
        int32_t tg[32];
        float mask[32];
        for (int i = 0; i < 32 * 64; i++) x[i] = 0.01f * (float)(i % 13);
        for (int i = 0; i < 32; i++) tg[i] = (i * 7) % 512, mask[i] = 1;
        el_error err;
        assert_int_equal(el_wire_encode_train_fwd(&f.b, EL_MSG_TRAIN_FORWARD, s[d], 2, 32, 64, EL_DTYPE_F32, 0, 1, x, tg, mask, &err),
                         EL_OK);
        feed(&f, who);
        assert_int_equal(last_reply(f.k, who, NULL, text, sizeof text), EL_MSG_TRAIN_RESULT);
    }
    assert_true(el_worker_mem_used(f.w) > 0);
    // the device-side adapter: layers 0..1 at rank 4 on every projection
    size_t n = 0;
    for (int l = 0; l < 2; l++)
        for (int t = 0; t < EL_LORA_N_TARGETS; t++) {
            int in, out;
            el_lora_target_shape(&f.m->hp, t, &in, &out);
            n += (size_t)4 * (size_t)(in + out);
        }
    float *p = calloc(n + 1, sizeof(float));
    // A: a wrong size; then (a new device) an infinite weight; B: right
    assert_int_equal(el_wire_encode_params(&f.b, EL_MSG_TRAIN_AVG, s[0], 3, 2, p, n + 1), EL_OK);
    feed(&f, 'A');
    assert_int_equal(last_reply(f.k, 'A', NULL, text, sizeof text), EL_MSG_ERROR);
    assert_non_null(strstr(text, "wrong size"));
    assert_int_equal(el_wire_encode_params(&f.b, EL_MSG_TRAIN_AVG, s[1], 3, INFINITY, p, n), EL_OK);
    feed(&f, 'B');
    assert_int_equal(last_reply(f.k, 'B', NULL, text, sizeof text), EL_MSG_ERROR);
    assert_non_null(strstr(text, "federated average refused"));
    // a weight above the sequences it trained (2) is refused too
    assert_int_equal(el_wire_encode_train_open(&f.b, 1, &to), EL_OK);
    feed(&f, 'B');
    assert_int_equal(last_reply(f.k, 'B', &s[1], text, sizeof text), EL_MSG_OPENED);
    assert_int_equal(el_wire_encode_train_open(&f.b, 1, &to), EL_OK);
    feed(&f, 'A');
    assert_int_equal(last_reply(f.k, 'A', &s[0], text, sizeof text), EL_MSG_OPENED);
    el_error err;
    float x[32 * 64] = {0};
    int32_t tg[32] = {0};
    float mask[32];
    for (int i = 0; i < 32; i++) mask[i] = 1;
    for (int d = 0; d < 2; d++) {
        assert_int_equal(el_wire_encode_train_fwd(&f.b, EL_MSG_TRAIN_FORWARD, s[d], 2, 32, 64, EL_DTYPE_F32, 0, 1, x, tg, mask, &err),
                         EL_OK);
        feed(&f, d ? 'B' : 'A');
    }
    assert_int_equal(el_wire_encode_params(&f.b, EL_MSG_TRAIN_AVG, s[0], 4, 1e30, p, n), EL_OK);
    feed(&f, 'A');
    assert_int_equal(last_reply(f.k, 'A', NULL, text, sizeof text), EL_MSG_ERROR);
    assert_non_null(strstr(text, "more than the sequences"));
    // the round completes for B alone, with B's adapter as the average
    for (size_t i = 0; i < n; i++) p[i] = 0.5f;
    assert_int_equal(el_wire_encode_params(&f.b, EL_MSG_TRAIN_AVG, s[1], 4, 2, p, n), EL_OK);
    feed(&f, 'B');
    el_wire_msg m;
    assert_int_equal(el_wire_parse(f.k->data[1], f.k->len[1], &m, &err), EL_OK);
    assert_int_equal(m.type, EL_MSG_TRAIN_PARAMS);
    double w;
    const uint8_t *avg;
    uint64_t na;
    assert_int_equal(el_wire_decode_params(&m, &w, &avg, &na, &err), EL_OK);
    assert_int_equal(na, n);
    float v;
    assert_int_equal(el_wire_f32s(avg + 4 * (n - 1), 1, &v), EL_OK);
    assert_true(v == 0.5f && w == 2);
    free(p);
    assert_int_equal(el_wire_encode_simple(&f.b, EL_MSG_CLOSE, s[1], 9), EL_OK);
    feed(&f, 'B');
    assert_int_equal(el_worker_mem_used(f.w), 0);
    teardown_worker(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sessions_per_client),
        cmocka_unit_test(test_memory_per_client),
        cmocka_unit_test(test_training_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
