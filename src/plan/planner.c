// The cut-point planner: an additive cost model over measured per-layer times
// on each node plus the link's round trip and serialisation.
//
//   decode(k) = device: embed + layers [0,k) (+ head if U-shape or k = L)
//             + link:   rtt + up_bytes / up_rate + down_bytes / down_rate   (k < L)
//             + edge:   layers [k,L) (+ head unless U-shape)
//
// up_bytes is one FORWARD of dim activations; down_bytes a RESULT of f32
// logits (or, for U-shape, dim activations). Time to first token uses the
// per-token prefill cost times the prompt length and one transfer of the
// whole prompt's activations.
#include <stdlib.h>
#include <string.h>

#include "edgellm/plan.h"
#include "edgellm/tensor.h"
#include "edgellm/wire.h"

// Power figures for the device-energy objective (watts): a phone-class SoC
// running two big cores, its radio transmitting, and idling while it waits.
// Only their ratios matter for ranking.
#define P_COMPUTE 2.0
#define P_TX 1.0
#define P_IDLE 0.1

static double act_size(int dtype, int dim) {
    size_t b = el_dtype_row_size(dtype, dim);
    return b ? (double)b : 4.0 * dim;
}

static int cmp_rows(const void *a, const void *b) {
    const el_plan_row *x = a, *y = b;
    if (x->fits != y->fits) return y->fits - x->fits;
    if (x->score != y->score) return x->score < y->score ? -1 : 1;
    return x->cut - y->cut;
}

// Link time of one decode step over a link, and of the prompt's prefill.
static void link_cost(const el_link_profile *l, double up, double down, double up_prefill, double *dec, double *pre,
                      double *tx) {
    *tx = up * 8 / l->up_bps;
    *dec = l->rtt_s + *tx + down * 8 / l->down_bps;
    *pre = l->rtt_s + up_prefill * 8 / l->up_bps + down * 8 / l->down_bps;
}

int el_plan(const el_plan_opts *o, el_plan_row *rows, int max_rows) {
    const el_profile *dev = o->device, *edge = o->edge, *edge2 = o->edge2;
    int L = dev->n_layers, n = 0, P = o->prompt_tokens > 0 ? o->prompt_tokens : 1;
    size_t budget = o->device_mem ? o->device_mem : dev->mem_budget;
    int acts_default[1] = {EL_DTYPE_F32};
    const int *acts = o->n_acts ? o->acts : acts_default;
    int n_acts = o->n_acts ? o->n_acts : 1;
    for (int k = 0; k <= L; k++) {
        // m: where the second edge takes over (m == L: no second edge)
        for (int m = edge2 && k < L - 1 ? k + 1 : L; m <= L; m++) {
            for (int ai = 0; ai < (k == L ? 1 : n_acts); ai++) {
                for (int u = 0; u <= (k < L && o->allow_ushape ? 1 : 0); u++) {
                    if (n == max_rows) goto done;
                    el_plan_row r = {0};
                    r.cut = k;
                    r.cut2 = m;
                    r.act_dtype = k == L ? EL_DTYPE_F32 : acts[ai];
                    r.ushape = u;
                    int local_head = k == L || u;
                    double dev_dec = dev->embed_s + (local_head ? dev->head_s : 0);
                    double dev_pre = dev->embed_s * P + (local_head ? dev->head_s : 0);
                    for (int l = 0; l < k; l++) {
                        dev_dec += el_profile_decode(dev, l, o->ctx);
                        dev_pre += dev->prefill_s[l] * P;
                    }
                    double edge_dec = 0, edge_pre = 0, edge2_dec = 0, edge2_pre = 0;
                    for (int l = k; l < m; l++) {
                        edge_dec += el_profile_decode(edge, l, o->ctx);
                        edge_pre += edge->prefill_s[l] * P;
                    }
                    for (int l = m; l < L; l++) {
                        edge2_dec += el_profile_decode(edge2, l, o->ctx);
                        edge2_pre += edge2->prefill_s[l] * P;
                    }
                    const el_profile *last = m < L ? edge2 : edge;
                    double head = k < L && !u ? last->head_s : 0;
                    if (m < L) edge2_dec += head, edge2_pre += head;
                    else edge_dec += head, edge_pre += head;
                    double up = 0, down = 0, link_dec = 0, link_pre = 0, tx_s = 0;
                    if (k < L) {
                        double act = act_size(r.act_dtype, dev->dim);
                        up = EL_WIRE_HEADER + 12 + act;
                        down = EL_WIRE_HEADER + 12 + 16 + (u ? act : 4.0 * dev->vocab);
                        link_cost(&o->link, up, down, EL_WIRE_HEADER + 12 + act * P, &link_dec, &link_pre, &tx_s);
                        if (m < L) {  // the second hop carries the same messages (one more timing entry back)
                            double d2, p2, t2;
                            link_cost(&o->link2, up, down + 16, EL_WIRE_HEADER + 12 + act * P, &d2, &p2, &t2);
                            link_dec += d2;
                            link_pre += p2;
                        }
                    }
                    r.device_s = dev_dec;
                    r.edge_s = edge_dec;
                    r.edge2_s = edge2_dec;
                    r.link_s = link_dec;
                    r.decode_s = dev_dec + link_dec + edge_dec + edge2_dec;
                    r.ttft_s = dev_pre + link_pre + edge_pre + edge2_pre;
                    r.bytes_per_token = up + down;
                    size_t mem = dev->embed_bytes + (local_head ? dev->head_bytes : 0);
                    for (int l = 0; l < k; l++) mem += dev->weight_bytes[l] + dev->kv_bytes_per_pos * (size_t)o->ctx;
                    r.device_mem = mem;
                    r.fits = budget == 0 || mem <= budget;
                    switch (o->objective) {
                    case EL_OBJ_LATENCY: r.score = r.decode_s; break;
                    case EL_OBJ_DEVICE_ENERGY:
                        r.score = P_COMPUTE * dev_dec + P_TX * tx_s + P_IDLE * (r.decode_s - dev_dec - tx_s);
                        break;
                    case EL_OBJ_BYTES: r.score = r.bytes_per_token + r.decode_s * 1e-9; break;
                    }
                    rows[n++] = r;
                }
            }
        }
    }
done:
    qsort(rows, (size_t)n, sizeof rows[0], cmp_rows);
    return n;
}
