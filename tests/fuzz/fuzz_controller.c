// libFuzzer target: the controller's message handling. An input is a
// sequence of messages [u8 peer][u8 kind][u16 length][body]: kind selects
// ANNOUNCE, ROUTE, PLACE or PING around a JSON body (so the fuzzer works on
// the JSON the controller reads), or, for kind >= 0x80, the body is sent as a
// raw frame. Four peers with fixed keys; the clock moves a second a message,
// so workers come and go.
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "edgellm/controller.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const uint16_t types[] = {EL_MSG_ANNOUNCE, EL_MSG_ROUTE, EL_MSG_PLACE, EL_MSG_PING};
    el_controller_opts o = {.dead_ms = 2500, .max_workers = 8};
    el_controller *c;
    el_error err;
    if (el_controller_new(&o, &c, &err)) return 0;
    el_buf in = {0}, out = {0};
    double now = 1;
    while (size >= 4) {
        uint8_t who = data[0], kind = data[1];
        size_t n = (size_t)data[2] | (size_t)data[3] << 8;
        data += 4;
        size -= 4;
        if (n > size) n = size;
        el_peer p = {{who}, 1, ""};
        memset(p.client, 'A' + (who & 3), 40);
        p.client[40] = 0;
        if (kind >= 0x80) {
            el_controller_handle(c, &p, data, n, now, &out);
        } else if (el_wire_encode_ping(&in, types[kind & 3], kind, data, n) == EL_OK) {
            el_controller_handle(c, &p, in.data, in.len, now, &out);
        }
        volatile uint8_t sink = out.len ? out.data[out.len - 1] : 0;  // the reply is readable whole
        (void)sink;
        data += n;
        size -= n;
        now += 1;
        el_controller_tick(c, now);
    }
    el_buf_free(&in);
    el_buf_free(&out);
    el_controller_free(c);
    return 0;
}
