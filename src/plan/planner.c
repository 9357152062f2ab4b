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

int el_plan(const el_plan_opts *o, el_plan_row *rows, int max_rows) {
    const el_profile *dev = o->device, *edge = o->edge;
    int L = dev->n_layers, n = 0, P = o->prompt_tokens > 0 ? o->prompt_tokens : 1;
    size_t budget = o->device_mem ? o->device_mem : dev->mem_budget;
    int acts_default[1] = {EL_DTYPE_F32};
    const int *acts = o->n_acts ? o->acts : acts_default;
    int n_acts = o->n_acts ? o->n_acts : 1;
    for (int k = 0; k <= L; k++) {
        for (int ai = 0; ai < (k == L ? 1 : n_acts); ai++) {
            for (int u = 0; u <= (k < L && o->allow_ushape ? 1 : 0); u++) {
                if (n == max_rows) goto done;
                el_plan_row r = {0};
                r.cut = k;
                r.act_dtype = k == L ? EL_DTYPE_F32 : acts[ai];
                r.ushape = u;
                int local_head = k == L || u;
                double dev_dec = dev->embed_s + (local_head ? dev->head_s : 0);
                double dev_pre = dev->embed_s * P + (local_head ? dev->head_s : 0);
                for (int l = 0; l < k; l++) {
                    dev_dec += el_profile_decode(dev, l, o->ctx);
                    dev_pre += dev->prefill_s[l] * P;
                }
                double edge_dec = 0, edge_pre = 0;
                for (int l = k; l < L; l++) {
                    edge_dec += el_profile_decode(edge, l, o->ctx);
                    edge_pre += edge->prefill_s[l] * P;
                }
                if (k < L && !u) {
                    edge_dec += edge->head_s;
                    edge_pre += edge->head_s;
                }
                double up = 0, down = 0, link_dec = 0, link_pre = 0, tx_s = 0;
                if (k < L) {
                    double act = act_size(r.act_dtype, dev->dim);
                    up = EL_WIRE_HEADER + 12 + act;
                    down = EL_WIRE_HEADER + 12 + 16 + (u ? act : 4.0 * dev->vocab);
                    tx_s = up * 8 / o->link.up_bps;
                    link_dec = o->link.rtt_s + tx_s + down * 8 / o->link.down_bps;
                    link_pre = o->link.rtt_s + (EL_WIRE_HEADER + 12 + act * P) * 8 / o->link.up_bps +
                               down * 8 / o->link.down_bps;
                }
                r.device_s = dev_dec;
                r.edge_s = edge_dec;
                r.link_s = link_dec;
                r.decode_s = dev_dec + link_dec + edge_dec;
                r.ttft_s = dev_pre + link_pre + edge_pre;
                r.bytes_per_token = up + down;
                size_t mem = dev->embed_bytes + (local_head ? dev->head_bytes : 0);
                for (int l = 0; l < k; l++) mem += dev->weight_bytes[l] + dev->kv_bytes_per_pos * (size_t)o->ctx;
                r.device_mem = mem;
                r.fits = budget == 0 || mem <= budget;
                switch (o->objective) {
                case EL_OBJ_LATENCY: r.score = r.decode_s; break;
                case EL_OBJ_DEVICE_ENERGY:
                    r.score = P_COMPUTE * dev_dec + P_TX * tx_s + P_IDLE * (link_dec - tx_s + edge_dec);
                    break;
                case EL_OBJ_BYTES: r.score = r.bytes_per_token + r.decode_s * 1e-9; break;
                }
                rows[n++] = r;
            }
        }
    }
done:
    qsort(rows, (size_t)n, sizeof rows[0], cmp_rows);
    return n;
}
