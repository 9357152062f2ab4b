// libFuzzer target: the worker's message handling, not just the decoders.
// An input is a sequence of messages from two peers ([u8 peer][u16 length]
// [frame]), fed to a worker serving layers 2:4 of aidreams260K (on the last
// stage, with training on) without a socket; after each message the worker
// runs a step, so queued FORWARDs are computed. To let the fuzzer reach open
// sessions: an OPEN or TRAIN_OPEN whose identity is 0 gets the worker's real
// identity, and a session id 1..8 in a message becomes the id of the 1st..8th
// session the worker opened (from its OPENED replies). Needs ../shared/models
// beside the checkout (or EL_FUZZ_MODEL).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/split.h"

typedef struct {
    uint64_t ids[8];
    int n;
} opened;

static void discard(void *ctx, const el_peer *peer, const void *data, size_t n) {
    (void)peer;
    const uint8_t *p = data;
    volatile uint8_t sink = n ? p[n - 1] : 0;  // the reply is readable whole
    (void)sink;
    opened *o = ctx;
    if (n >= 16 && p[6] == 2 && p[7] == 0 && o->n < 8) memcpy(&o->ids[o->n++], p + 8, 8);  // OPENED
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static uint64_t identity;
    const char *path = getenv("EL_FUZZ_MODEL") ? getenv("EL_FUZZ_MODEL") : "../shared/models/aidreams260K.bin";
    opened ids = {{0}, 0};
    el_worker_opts o = {.model_path = path, .layer_begin = 2, .layer_end = 4, .threads = 1, .max_sessions = 8,
                        .max_kv_bytes = 8 << 20, .train = 1, .reply_sink = discard, .reply_ctx = &ids};
    el_worker *w;
    el_error err;
    if (el_worker_new(&o, &w, &err)) {
        fprintf(stderr, "fuzz_worker: %s\n", err.msg);
        abort();
    }
    if (!identity) {
        el_model *m;
        el_model_opts mo = {.layer_begin = 2, .no_embed = 1};
        if (el_model_open(path, &mo, &m, &err)) abort();
        identity = el_model_identity(m, 2, 4);
        el_model_close(m);
    }
    uint8_t *frame = malloc(65536 + 64);
    for (size_t at = 0; frame && at + 3 <= size;) {
        el_peer peer = {{0}, 1, ""};
        peer.id[0] = data[at] & 1 ? 'B' : 'A';
        snprintf(peer.client, sizeof peer.client, "conn:%c", peer.id[0]);
        size_t n = (size_t)data[at + 1] | (size_t)data[at + 2] << 8;
        at += 3;
        if (n > size - at) n = size - at;
        memcpy(frame, data + at, n);
        at += n;
        // OPEN (stage 0 identity at body 24 + 8) and TRAIN_OPEN (body 20): fill in the real one
        uint16_t type = n >= 8 ? (uint16_t)(frame[6] | frame[7] << 8) : 0;
        size_t id_at = type == 1 ? 24 + 24 + 8 : type == 12 ? 24 + 20 : 0;
        if (id_at && n >= id_at + 8) {
            uint64_t v = 0;
            memcpy(&v, frame + id_at, 8);
            if (!v) memcpy(frame + id_at, &identity, 8);
        }
        if (n >= 16) {
            uint64_t sid;
            memcpy(&sid, frame + 8, 8);
            if (sid >= 1 && sid <= 8 && (int)sid <= ids.n) memcpy(frame + 8, &ids.ids[sid - 1], 8);
        }
        el_worker_feed(w, &peer, frame, n);
        el_worker_step(w);
    }
    free(frame);
    el_worker_free(w);
    return 0;
}
