// Unit tests for the controller's message handling (no socket): heartbeats,
// the keys they must carry, placements turned into fetch orders, routes by
// load, exclusion and cut, silent workers dropped, and malformed messages.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/controller.h"
#include "testutil.h"

#define KEY_A "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
#define KEY_B "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
#define KEY_C "CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC"
#define ID1 "1111111111111111111111111111111111111111111111111111111111111111"
#define ID2 "2222222222222222222222222222222222222222222222222222222222222222"

static el_peer peer_of(const char *key) {
    el_peer p = {{0}, 1, ""};
    snprintf(p.client, sizeof p.client, "%s", key);
    return p;
}

// Sends a JSON body as `type` from `key`; returns the reply's type and, for
// JSON replies, the parsed body in *out (or the error text in text).
static int send_json(el_controller *c, const char *key, uint16_t type, const char *json, double now, el_json **out,
                     char *text) {
    el_buf in = {0}, rep = {0};
    assert_int_equal(el_wire_encode_ping(&in, type, 7, json, strlen(json)), EL_OK);
    el_peer p = peer_of(key);
    el_controller_handle(c, &p, in.data, in.len, now, &rep);
    el_wire_msg m;
    el_error e;
    assert_int_equal(el_wire_parse(rep.data, rep.len, &m, &e), EL_OK);
    assert_int_equal(m.seq, 7);
    if (out) *out = NULL;
    if (text) text[0] = 0;
    if (m.type == EL_MSG_ERROR) {
        uint32_t code;
        assert_int_equal(el_wire_decode_error(&m, &code, text ? text : (char[EL_WIRE_MAX_TEXT]){0}, EL_WIRE_MAX_TEXT, &e),
                         EL_OK);
    } else if (out && m.body_len) {
        assert_int_equal(el_json_parse((const char *)m.body, m.body_len, "reply", out, &e), EL_OK);
    }
    int t = m.type;
    el_buf_free(&in);
    el_buf_free(&rep);
    return t;
}

static void announce(el_controller *c, const char *key, const char *name, const char *ep, const char *models,
                     double busy, int sessions, double now, el_json **reply) {
    char json[2048];
    snprintf(json, sizeof json,
             "{\"name\":\"%s\",\"endpoint\":\"%s\",\"public_key\":\"%s\",\"models\":[%s],\"blocks\":3,"
             "\"store_bytes\":1000,\"free_bytes\":5000,\"sessions\":%d,\"busy\":%g,\"step_ms\":2}",
             name, ep, key, models, sessions, busy);
    char text[EL_WIRE_MAX_TEXT];
    int t = send_json(c, key, EL_MSG_ANNOUNCE, json, now, reply, text);
    if (t != EL_MSG_ANNOUNCED) fail_msg("announce of %s: %s", name, text);
}

static el_controller *secure_controller(void) {
    el_controller_opts o = {.dead_ms = 3000};  // sec.insecure 0: announced keys must be the proved ones
    el_controller *c;
    el_error e;
    assert_int_equal(el_controller_new(&o, &c, &e), EL_OK);
    return c;
}

#define M_TINY "{\"name\":\"tiny\",\"id\":\"" ID1 "\",\"n_layers\":4,\"layers\":[0,4]}"
#define M_MERGED "{\"name\":\"merged\",\"id\":\"" ID2 "\",\"n_layers\":4,\"layers\":[0,4]}"

static void test_announce_and_keys(void **st) {
    (void)st;
    el_controller *c = secure_controller();
    el_json *r;
    announce(c, KEY_A, "w1", "10.0.0.1:7001", M_TINY, 0, 0, 100, &r);
    assert_int_equal(el_controller_n_workers(c), 1);
    assert_int_equal(el_json_len(el_json_get(r, "fetch")), 0);
    el_json_free(r);
    // a heartbeat naming a key other than the one proved: refused
    char text[EL_WIRE_MAX_TEXT];
    char json[512];
    snprintf(json, sizeof json, "{\"name\":\"w2\",\"endpoint\":\"10.0.0.2:7001\",\"public_key\":\"%s\",\"models\":[]}",
             KEY_A);
    assert_int_equal(send_json(c, KEY_B, EL_MSG_ANNOUNCE, json, 100, NULL, text), EL_MSG_ERROR);
    assert_non_null(strstr(text, "not the key this connection proved"));
    // another key taking w1's name while w1 is alive: refused
    snprintf(json, sizeof json, "{\"name\":\"w1\",\"endpoint\":\"10.0.0.9:7001\",\"public_key\":\"%s\",\"models\":[]}",
             KEY_B);
    assert_int_equal(send_json(c, KEY_B, EL_MSG_ANNOUNCE, json, 101, NULL, text), EL_MSG_ERROR);
    assert_non_null(strstr(text, "belongs to another worker's key"));
    assert_int_equal(el_controller_n_workers(c), 1);
    // once w1 is silent past dead_ms it is dropped, and the name is free
    el_controller_tick(c, 102);
    assert_int_equal(el_controller_n_workers(c), 1);
    el_controller_tick(c, 103.5);
    assert_int_equal(el_controller_n_workers(c), 0);
    assert_int_equal(send_json(c, KEY_B, EL_MSG_ANNOUNCE, json, 104, NULL, text), EL_MSG_ANNOUNCED);
    // one key cannot fill the table with names of its own
    snprintf(json, sizeof json, "{\"name\":\"w9\",\"endpoint\":\"10.0.0.9:7002\",\"public_key\":\"%s\",\"models\":[]}",
             KEY_B);
    assert_int_equal(send_json(c, KEY_B, EL_MSG_ANNOUNCE, json, 104, NULL, text), EL_MSG_ANNOUNCED);
    snprintf(json, sizeof json, "{\"name\":\"w10\",\"endpoint\":\"10.0.0.9:7003\",\"public_key\":\"%s\",\"models\":[]}",
             KEY_B);
    assert_int_equal(send_json(c, KEY_B, EL_MSG_ANNOUNCE, json, 104, NULL, text), EL_MSG_ERROR);
    assert_non_null(strstr(text, "announces 2 workers already"));
    assert_int_equal(el_controller_n_workers(c), 2);
    el_controller_free(c);
}

static void test_malformed(void **st) {
    (void)st;
    el_controller *c = secure_controller();
    char text[EL_WIRE_MAX_TEXT];
    static const char *bad[] = {
        "{\"name\":\"w1\"",                                                              // not JSON
        "[1,2]",                                                                         // not an object
        "{\"endpoint\":\"e\",\"public_key\":\"" KEY_A "\",\"models\":[]}",               // no name
        "{\"name\":\"w 1\",\"endpoint\":\"e\",\"public_key\":\"" KEY_A "\",\"models\":[]}",  // space in the name
        "{\"name\":\"w1\",\"endpoint\":\"e\",\"public_key\":\"" KEY_A "\",\"models\":[{\"name\":\"m\",\"id\":\"xyz\","
        "\"n_layers\":4,\"layers\":[0,4]}]}",  // bad id
        "{\"name\":\"w1\",\"endpoint\":\"e\",\"public_key\":\"" KEY_A "\",\"models\":[{\"name\":\"m\",\"id\":\"" ID1
        "\",\"n_layers\":4,\"layers\":[3,5]}]}",  // range past the layers
        "{\"name\":\"w1\",\"endpoint\":\"e\",\"public_key\":\"" KEY_A "\",\"models\":[{\"name\":\"m\",\"id\":\"" ID1
        "\",\"n_layers\":4,\"layers\":[2,2]}]}",  // empty range
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(send_json(c, KEY_A, EL_MSG_ANNOUNCE, bad[i], 1, NULL, text), EL_MSG_ERROR);
        assert_true(strlen(text) > 10);
    }
    assert_int_equal(el_controller_n_workers(c), 0);
    assert_int_equal(send_json(c, KEY_A, EL_MSG_ROUTE, "{\"model\":7}", 1, NULL, text), EL_MSG_ERROR);
    assert_int_equal(send_json(c, KEY_A, EL_MSG_PLACE, "{\"placement\":[]}", 1, NULL, text), EL_MSG_ERROR);
    assert_non_null(strstr(text, "placement"));
    assert_int_equal(send_json(c, KEY_A, EL_MSG_FORWARD, "{}", 1, NULL, text), EL_MSG_ERROR);
    assert_non_null(strstr(text, "not type 3"));
    // a frame that is not a frame
    el_buf rep = {0};
    el_peer p = peer_of(KEY_A);
    el_controller_handle(c, &p, "garbage", 7, 1, &rep);
    el_wire_msg m;
    el_error e;
    assert_int_equal(el_wire_parse(rep.data, rep.len, &m, &e), EL_OK);
    assert_int_equal(m.type, EL_MSG_ERROR);
    el_buf_free(&rep);
    el_controller_free(c);
}

static void test_placement_fetch_orders(void **st) {
    (void)st;
    el_controller *c = secure_controller();
    el_json *r;
    char text[EL_WIRE_MAX_TEXT];
    announce(c, KEY_A, "origin", "10.0.0.1:7001", M_TINY "," M_MERGED, 0, 0, 10, &r);
    el_json_free(r);
    announce(c, KEY_C, "w3", "10.0.0.3:7001", M_TINY, 0, 0, 10, &r);
    el_json_free(r);
    assert_int_equal(send_json(c, KEY_A, EL_MSG_PLACE,
                               "{\"placement\":{\"w2\":[\"tiny\",\"merged\"],\"w3\":[\"tiny\"]},\"hit_ratio\":0.5}",
                               11, NULL, text),
                     EL_MSG_OK);
    // w2 holds nothing: it is told to fetch both, tiny from the two holders
    announce(c, KEY_B, "w2", "10.0.0.2:7001", "", 0, 0, 12, &r);
    const el_json *f = el_json_get(r, "fetch");
    assert_int_equal(el_json_len(f), 2);
    const el_json *t = el_json_at(f, 0);
    assert_string_equal(el_json_str(el_json_get(t, "model")), "tiny");
    assert_string_equal(el_json_str(el_json_get(t, "id")), ID1);
    const el_json *src = el_json_get(t, "sources");
    assert_int_equal(el_json_len(src), 2);
    assert_string_equal(el_json_str(el_json_get(el_json_at(src, 0), "endpoint")), "10.0.0.1:7001");
    assert_string_equal(el_json_str(el_json_get(el_json_at(src, 0), "public_key")), KEY_A);
    assert_string_equal(el_json_str(el_json_get(el_json_at(src, 1), "endpoint")), "10.0.0.3:7001");
    const el_json *mg = el_json_at(f, 1);
    assert_string_equal(el_json_str(el_json_get(mg, "model")), "merged");
    assert_int_equal(el_json_len(el_json_get(mg, "sources")), 1);
    el_json_free(r);
    // once it holds tiny, only merged is left; w3 has what it should
    announce(c, KEY_B, "w2", "10.0.0.2:7001", M_TINY, 0, 0, 13, &r);
    assert_int_equal(el_json_len(el_json_get(r, "fetch")), 1);
    el_json_free(r);
    announce(c, KEY_C, "w3", "10.0.0.3:7001", M_TINY, 0, 0, 13, &r);
    assert_int_equal(el_json_len(el_json_get(r, "fetch")), 0);
    el_json_free(r);
    // the origin gone: nobody to fetch merged from, so no order
    el_controller_tick(c, 16.5);
    announce(c, KEY_B, "w2", "10.0.0.2:7001", M_TINY, 0, 0, 16.6, &r);
    assert_int_equal(el_json_len(el_json_get(r, "fetch")), 0);
    el_json_free(r);
    el_controller_free(c);
}

static void test_routes(void **st) {
    (void)st;
    el_controller *c = secure_controller();
    el_json *r;
    char text[EL_WIRE_MAX_TEXT];
    announce(c, KEY_A, "busy", "10.0.0.1:7001", M_TINY, 0.8, 3, 1, &r);
    el_json_free(r);
    announce(c, KEY_B, "idle", "10.0.0.2:7001", M_TINY, 0.0, 0, 1, &r);
    el_json_free(r);
    announce(c, KEY_C, "tail", "10.0.0.3:7001", "{\"name\":\"tiny\",\"id\":\"" ID1 "\",\"n_layers\":4,\"layers\":[2,4]}",
             0, 0, 1, &r);
    el_json_free(r);
    // least loaded first; the tail-only worker cannot take cut 1
    assert_int_equal(send_json(c, KEY_A, EL_MSG_ROUTE, "{\"model\":\"tiny\",\"cut\":1}", 1, &r, NULL), EL_MSG_ROUTED);
    const el_json *s = el_json_get(r, "stages");
    assert_int_equal(el_json_len(s), 2);
    assert_string_equal(el_json_str(el_json_get(el_json_at(s, 0), "worker")), "idle");
    assert_string_equal(el_json_str(el_json_get(el_json_at(s, 1), "worker")), "busy");
    assert_int_equal((int)el_json_num(el_json_get(r, "n_layers"), 0), 4);
    // cost: step 2 ms x (1 + sessions + routed) / (1 - busy): idle 2, busy 2 x 4 / 0.2 = 40
    assert_true(el_json_num(el_json_get(el_json_at(s, 0), "cost_ms"), 0) == 2.0);
    assert_true(el_json_num(el_json_get(el_json_at(s, 1), "cost_ms"), 0) == 40.0);
    el_json_free(r);
    // cut 2: the tail worker qualifies; "idle" now has one device routed to it (cost 4)
    assert_int_equal(send_json(c, KEY_A, EL_MSG_ROUTE, "{\"model\":\"tiny\",\"cut\":2}", 1, &r, NULL), EL_MSG_ROUTED);
    s = el_json_get(r, "stages");
    assert_int_equal(el_json_len(s), 3);
    assert_string_equal(el_json_str(el_json_get(el_json_at(s, 0), "worker")), "tail");
    assert_string_equal(el_json_str(el_json_get(el_json_at(s, 1), "worker")), "idle");
    assert_true(el_json_num(el_json_get(el_json_at(s, 1), "cost_ms"), 0) == 4.0);
    el_json_free(r);
    // excluded endpoints are left out
    assert_int_equal(send_json(c, KEY_A, EL_MSG_ROUTE,
                               "{\"model\":\"tiny\",\"cut\":1,\"exclude\":[\"10.0.0.2:7001\"]}", 1, &r, NULL),
                     EL_MSG_ROUTED);
    s = el_json_get(r, "stages");
    assert_int_equal(el_json_len(s), 1);
    assert_string_equal(el_json_str(el_json_get(el_json_at(s, 0), "endpoint")), "10.0.0.1:7001");
    el_json_free(r);
    // unknown model, and everything excluded: errors that say why
    assert_int_equal(send_json(c, KEY_A, EL_MSG_ROUTE, "{\"model\":\"huge\",\"cut\":1}", 1, NULL, text), EL_MSG_ERROR);
    assert_non_null(strstr(text, "no worker serves model \"huge\""));
    assert_int_equal(send_json(c, KEY_A, EL_MSG_ROUTE,
                               "{\"model\":\"tiny\",\"cut\":1,\"exclude\":[\"10.0.0.2:7001\",\"10.0.0.1:7001\"]}", 1,
                               NULL, text),
                     EL_MSG_ERROR);
    assert_non_null(strstr(text, "2 excluded"));
    // a heartbeat resets the routed count; silence drops the worker from routes
    el_controller_tick(c, 4.5);
    assert_int_equal(el_controller_n_workers(c), 0);
    assert_int_equal(send_json(c, KEY_A, EL_MSG_ROUTE, "{\"model\":\"tiny\"}", 5, NULL, text), EL_MSG_ERROR);
    el_controller_free(c);
}

static void test_placement_file(void **st) {
    (void)st;
    const char *good = "{\"placement\":{\"w1\":[\"tiny\"]},\"hit_ratio\":1}";
    const char *path = tu_write_tmp("placement.json", good, strlen(good));
    el_controller_opts o = {.placement = path};
    el_controller *c;
    el_error e;
    assert_int_equal(el_controller_new(&o, &c, &e), EL_OK);
    el_controller_free(c);
    const char *bad = "{\"placement\":{\"w1\":\"tiny\"}}";
    path = tu_write_tmp("placement.json", bad, strlen(bad));
    assert_int_equal(el_controller_new(&o, &c, &e), EL_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "server \"w1\""));
    o.placement = "/nonexistent/placement.json";
    assert_int_not_equal(el_controller_new(&o, &c, &e), EL_OK);
    assert_non_null(strstr(e.msg, "/nonexistent/placement.json"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_announce_and_keys), cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_placement_fetch_orders), cmocka_unit_test(test_routes),
        cmocka_unit_test(test_placement_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
