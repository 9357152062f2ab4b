// What devices and planners ask of the controller: a route, or to apply a
// placement. One request and its reply over a fresh link each time.
#include <string.h>

#include "edgellm/controller.h"
#include "edgellm/serve.h"

// Sends a JSON body as `type` and waits for the reply: a frame of want_type
// whose body is parsed into *out (NULL: an OK is expected), or the peer's
// ERROR as the error.
static el_status ask(const char *endpoint, const el_link_security *sec, uint16_t type, const char *body, size_t n,
                     uint16_t want_type, int timeout_ms, el_json **out, el_error *err) {
    if (out) *out = NULL;
    el_link *l;
    el_status st = el_link_connect(endpoint, sec, timeout_ms, &l, err);
    if (st) return st;
    el_buf tx = {0}, rx = {0};
    if (el_wire_encode_ping(&tx, type, 1, body, n)) {
        st = el_err(err, EL_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((st = el_link_request(l, tx.data, tx.len, 1, &rx, timeout_ms, err))) goto done;
    el_wire_msg m;
    if ((st = el_wire_parse(rx.data, rx.len, &m, err))) goto done;
    if (m.type == EL_MSG_ERROR) {
        uint32_t code;
        char text[EL_WIRE_MAX_TEXT];
        if (el_wire_decode_error(&m, &code, text, sizeof text, err) == EL_OK)
            st = el_err(err, code == EL_WERR_MISMATCH ? EL_ERR_STATE : EL_ERR_ARG, "controller %s: %s", endpoint, text);
        else
            st = err->code;
        goto done;
    }
    if (m.type != want_type) {
        st = el_err(err, EL_ERR_FORMAT, "controller %s: reply of type %u, expected %u", endpoint, m.type, want_type);
        goto done;
    }
    if (out) {
        char name[300];
        snprintf(name, sizeof name, "controller %s", endpoint);
        st = el_json_parse((const char *)m.body, m.body_len, name, out, err);
    }
done:
    el_buf_free(&tx);
    el_buf_free(&rx);
    el_link_close(l);
    return st;
}

static int copy_str(const el_json *j, char *dst, size_t cap) {
    const char *s = el_json_str(j);
    size_t n = el_json_strlen(j);
    if (!s || n == 0 || n >= cap || memchr(s, 0, n)) return 0;
    memcpy(dst, s, n + 1);
    return 1;
}

el_status el_route_ask(const char *endpoint, const el_link_security *sec, const char *model, int cut,
                       const char *const *exclude, int n_exclude, int timeout_ms, el_route *out, el_error *err) {
    memset(out, 0, sizeof *out);
    el_sbuf b = {0};
    el_sbuf_puts(&b, "{\"model\":");
    el_sbuf_json_str(&b, model, strlen(model));
    el_sbuf_printf(&b, ",\"cut\":%d,\"exclude\":[", cut);
    for (int i = 0; i < n_exclude; i++) {
        if (i) el_sbuf_puts(&b, ",");
        el_sbuf_json_str(&b, exclude[i], strlen(exclude[i]));
    }
    el_sbuf_puts(&b, "]}");
    if (b.oom) {
        el_sbuf_free(&b);
        return el_err(err, EL_ERR_NOMEM, "out of memory");
    }
    el_json *j;
    el_status st = ask(endpoint, sec, EL_MSG_ROUTE, b.data, b.len, EL_MSG_ROUTED, timeout_ms, &j, err);
    el_sbuf_free(&b);
    if (st) return st;
    const el_json *stages = el_json_get(j, "stages");
    double nl = el_json_num(el_json_get(j, "n_layers"), 0);
    if (!copy_str(el_json_get(j, "model"), out->model, sizeof out->model) ||
        !copy_str(el_json_get(j, "id"), out->id, sizeof out->id) || !(nl >= 1 && nl <= 100000) ||
        !el_json_is(stages, EL_JSON_ARRAY) || el_json_len(stages) < 1) {
        el_json_free(j);
        return el_err(err, EL_ERR_FORMAT, "controller %s: a route without model, id, n_layers or stages", endpoint);
    }
    out->n_layers = (int)nl;
    for (const el_json *s = el_json_first(stages); s && out->n < EL_CTL_MAX_ROUTE; s = el_json_next(stages, s)) {
        el_route_stage *r = &out->cand[out->n];
        const el_json *ly = el_json_get(s, "layers");
        double a = el_json_num(el_json_at(ly, 0), -1), z = el_json_num(el_json_at(ly, 1), -1);
        int key_ok = copy_str(el_json_get(s, "public_key"), r->public_key, sizeof r->public_key) ||
                     (sec->insecure && el_json_is(el_json_get(s, "public_key"), EL_JSON_STRING));
        if (!copy_str(el_json_get(s, "worker"), r->worker, sizeof r->worker) ||
            !copy_str(el_json_get(s, "endpoint"), r->endpoint, sizeof r->endpoint) || !key_ok ||
            !(a >= 0 && a < z && z <= nl) || a != (int)a || z != (int)z) {
            el_json_free(j);
            return el_err(err, EL_ERR_FORMAT, "controller %s: route stage %d is malformed", endpoint, out->n);
        }
        r->layer_begin = (int)a;
        r->layer_end = (int)z;
        r->cost_ms = el_json_num(el_json_get(s, "cost_ms"), 0);
        out->n++;
    }
    el_json_free(j);
    return EL_OK;
}

el_status el_placement_send(const char *endpoint, const el_link_security *sec, const char *json, size_t len,
                            int timeout_ms, el_error *err) {
    return ask(endpoint, sec, EL_MSG_PLACE, json, len, EL_MSG_OK, timeout_ms, NULL, err);
}
