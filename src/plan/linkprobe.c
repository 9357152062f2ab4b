// Measuring a live link with real messages: the round trip of small and
// activation-sized messages, and the throughput each way with bulk messages
// sized so that their transfer time dominates the round trip.
#include <stdlib.h>
#include <string.h>

#include "edgellm/plan.h"
#include "edgellm/wire.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

// Median time of reps round trips of a PROBE of `up` bytes answered by `down` bytes.
static el_status timed(el_link *l, el_buf *tx, el_buf *rx, uint32_t *seq, size_t up, size_t down, int reps, double *out,
                       el_error *err) {
    double t[16];
    if (reps > 16) reps = 16;
    if (reps < 1) reps = 1;
    for (int r = 0; r < reps; r++) {
        (*seq)++;
        if (el_wire_encode_probe(tx, *seq, up, (uint32_t)down)) return el_err(err, EL_ERR_NOMEM, "out of memory");
        uint64_t t0 = el_time_ns();
        el_status st = el_link_request(l, tx->data, tx->len, *seq, rx, 30000, err);
        if (st) return st;
        t[r] = (el_time_ns() - t0) * 1e-9;
        el_wire_msg m;
        if (el_wire_parse(rx->data, rx->len, &m, err) || m.type != EL_MSG_PROBE_REPLY)
            return el_err(err, EL_ERR_FORMAT, "%s: the worker does not answer link probes", el_link_endpoint(l));
    }
    qsort(t, (size_t)reps, sizeof t[0], cmp_double);
    if (reps < 5) {
        *out = t[reps / 2];
        return EL_OK;
    }
    // The mean without the slowest two: jitter raises the mean a token sees
    // (a multi-packet message waits for its latest packet), while a rare
    // loss recovery should not dominate.
    double sum = 0;
    for (int r = 0; r < reps - 2; r++) sum += t[r];
    *out = sum / (reps - 2);
    return EL_OK;
}

// Grows the bulk size until the transfer clearly dominates the round trip.
static el_status rate(el_link *l, el_buf *tx, el_buf *rx, uint32_t *seq, int up_dir, double rtt, double *bps,
                      el_error *err) {
    size_t size = 64 << 10;
    double t = 0;
    for (;;) {
        el_status st = timed(l, tx, rx, seq, up_dir ? size : 64, up_dir ? 64 : size, 3, &t, err);
        if (st) return st;
        if (t - rtt > 0.03 || size >= (16u << 20)) break;
        size *= 4;
    }
    double transfer = t - rtt;
    if (transfer < 1e-6) transfer = 1e-6;
    *bps = (double)size * 8 / transfer;
    if (*bps > 1e11) *bps = 1e11;
    return EL_OK;
}

el_status el_link_probe(el_link *l, size_t up_bytes, size_t down_bytes, el_link_profile *out, el_error *err) {
    el_buf tx = {0}, rx = {0};
    uint32_t seq = 0x50000000u;
    // Round trips first, while the link is idle: after the bulk transfers the
    // emulator (or a real bottleneck) may still hold queued data.
    double rtt_small, rtt_act;
    el_status st = timed(l, &tx, &rx, &seq, 64, 64, 9, &rtt_small, err);
    if (!st) st = timed(l, &tx, &rx, &seq, up_bytes, down_bytes, 12, &rtt_act, err);
    if (!st) st = rate(l, &tx, &rx, &seq, 1, rtt_small, &out->up_bps, err);
    if (!st) st = rate(l, &tx, &rx, &seq, 0, rtt_small, &out->down_bps, err);
    // The round trip proper: the real messages of a decode step (activations
    // up, logits or activations down), less the serialisation the measured
    // rates account for.
    if (!st) {
        double ser = up_bytes * 8.0 / out->up_bps + down_bytes * 8.0 / out->down_bps;
        out->rtt_s = rtt_act - ser > rtt_small * 0.5 ? rtt_act - ser : rtt_small;
    }
    el_buf_free(&tx);
    el_buf_free(&rx);
    return st;
}
