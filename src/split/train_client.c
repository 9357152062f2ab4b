// The device side of split fine-tuning: its own stage forward and backward,
// activations out and gradients back, the optimizer step coordinated with the
// worker (one global gradient norm for clipping), and federated averaging.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/splittrain.h"

struct el_split_trainer {
    const el_model *m;
    el_train_stage *dev;
    el_split_train_opts o;
    el_link *link;
    uint64_t session;
    uint32_t seq;
    el_buf tx, rx;
    float *x, *g;  // [rows, dim]
    int rows;
    el_split_train_stats stats;
};

static el_status request(el_split_trainer *t, el_wire_msg *reply, uint16_t want, el_error *err) {
    uint64_t s0, r0, s1, r1;
    el_link_counters(t->link, &s0, &r0);
    uint64_t t0 = el_time_ns();
    el_status st = el_link_request(t->link, t->tx.data, t->tx.len, t->seq, &t->rx, t->o.timeout_ms, err);
    if (st) return st;
    t->stats.link_s += (el_time_ns() - t0) * 1e-9;
    el_link_counters(t->link, &s1, &r1);
    t->stats.bytes_sent += s1 - s0;
    t->stats.bytes_received += r1 - r0;
    if ((st = el_wire_parse(t->rx.data, t->rx.len, reply, err))) return st;
    if (reply->type == EL_MSG_ERROR) {
        uint32_t code;
        char text[EL_WIRE_MAX_TEXT];
        if (el_wire_decode_error(reply, &code, text, sizeof text, err)) return EL_ERR_FORMAT;
        return el_err(err, EL_ERR_IO, "worker %s: %s", t->o.via, text);
    }
    if (reply->type != want)
        return el_err(err, EL_ERR_FORMAT, "worker %s: unexpected reply type %u (wanted %u)", t->o.via, reply->type, want);
    return EL_OK;
}

el_status el_split_trainer_new(const el_model *m, el_train_stage *dev, const el_split_train_opts *o,
                               el_split_trainer **out, el_error *err) {
    *out = NULL;
    el_split_trainer *t = calloc(1, sizeof *t);
    if (!t) return el_err(err, EL_ERR_NOMEM, "out of memory");
    t->m = m;
    t->dev = dev;
    t->o = *o;
    if (t->o.timeout_ms <= 0) t->o.timeout_ms = 120000;
    t->rows = el_train_rows(dev);
    t->x = el_calloc((size_t)t->rows * m->hp.dim, sizeof(float));
    t->g = el_calloc((size_t)t->rows * m->hp.dim, sizeof(float));
    el_status st = EL_OK;
    if (!t->x || !t->g) st = el_err(err, EL_ERR_NOMEM, "out of memory");
    // the identity of the worker's layers, from our copy of the model file
    if (!st) {
        el_model *view;
        el_model_opts vo = {.layer_begin = (int)o->open.layer_begin, .layer_end = (int)o->open.layer_end, .no_embed = 1,
                            .no_head = 1, .no_pack = 1, .no_scan = 1};  // only hashed
        if (!(st = el_model_open(m->path, &vo, &view, err))) {
            t->o.open.identity = el_model_identity(view, (int)o->open.layer_begin, (int)o->open.layer_end);
            el_model_close(view);
        }
    }
    if (!st) st = el_link_connect(o->via, &o->sec, t->o.timeout_ms, &t->link, err);
    el_wire_msg r;
    if (!st) {
        t->o.open.ushape = (uint8_t)o->ushape;
        t->o.open.act_dtype = (uint8_t)o->act_dtype;
        t->o.open.grad_dtype = (uint8_t)o->grad_dtype;
        t->o.open.shared = (uint8_t)o->shared;
        t->seq++;
        if (el_wire_encode_train_open(&t->tx, t->seq, &t->o.open)) st = el_err(err, EL_ERR_NOMEM, "out of memory");
        if (!st) st = request(t, &r, EL_MSG_OPENED, err);
        if (!st) t->session = r.session;
    }
    if (st) {
        el_split_trainer_free(t);
        return st;
    }
    *out = t;
    return EL_OK;
}

void el_split_trainer_free(el_split_trainer *t) {
    if (!t) return;
    if (t->link && t->session) {
        t->seq++;
        if (el_wire_encode_simple(&t->tx, EL_MSG_CLOSE, t->session, t->seq) == EL_OK)
            el_link_request(t->link, t->tx.data, t->tx.len, t->seq, &t->rx, 2000, NULL);
    }
    el_link_close(t->link);
    el_buf_free(&t->tx);
    el_buf_free(&t->rx);
    free(t->x);
    free(t->g);
    free(t);
}

// Decodes a TRAIN_RESULT's rows into dst.
static el_status result_rows(el_split_trainer *t, const el_wire_msg *r, uint8_t kind, float *dst, double *loss,
                             double *nt, el_error *err) {
    el_wire_train_result res;
    el_status st = el_wire_decode_train_result(r, (uint32_t)t->m->hp.dim, &res, err);
    if (st) return st;
    t->stats.worker_s += res.compute_s;
    t->stats.link_s -= res.compute_s;
    if (loss) *loss = res.loss;
    if (nt) *nt = res.n_tokens;
    if (!dst) return EL_OK;
    if (res.kind != kind || res.rows != (uint32_t)t->rows)
        return el_err(err, EL_ERR_FORMAT, "worker %s: result of %u rows (kind %u), expected %d (kind %u)", t->o.via, res.rows,
                      res.kind, t->rows, kind);
    return el_wire_act_decode(res.dtype, res.payload, (size_t)res.rows * t->m->hp.dim, dst, err);
}

static el_status run(el_split_trainer *t, const int *tokens, const int *targets, const float *mask, float grad_scale,
                     int fwd_only, double *loss, double *n_tokens, el_error *err) {
    const el_hparams *h = &t->m->hp;
    el_status st;
    if ((st = el_train_embed(t->dev, tokens, t->x, err)) || (st = el_train_layers_forward(t->dev, t->x, err))) return st;
    el_wire_msg r;
    t->seq++;
    uint8_t flags = fwd_only ? EL_TRAIN_FORWARD_ONLY : 0;
    // With U-shape the labels never leave the device: only activations go out.
    if ((st = el_wire_encode_train_fwd(&t->tx, EL_MSG_TRAIN_FORWARD, t->session, t->seq, (uint32_t)t->rows, (uint32_t)h->dim,
                                       t->o.act_dtype, flags, grad_scale, t->x, t->o.ushape ? NULL : targets,
                                       t->o.ushape ? NULL : mask, err)))
        return st;
    if ((st = request(t, &r, EL_MSG_TRAIN_RESULT, err))) return st;
    if (!t->o.ushape) {
        if ((st = result_rows(t, &r, 0, fwd_only ? NULL : t->g, loss, n_tokens, err))) return st;
    } else {
        // the worker's last hidden states come back; head and loss here
        if ((st = result_rows(t, &r, 1, t->x, NULL, NULL, err))) return st;
        if ((st = el_train_head(t->dev, t->x, targets, mask, loss, n_tokens, fwd_only ? NULL : t->g, grad_scale, NULL, err)))
            return st;
        if (fwd_only) return EL_OK;
        t->seq++;
        if ((st = el_wire_encode_train_fwd(&t->tx, EL_MSG_TRAIN_BACKWARD, t->session, t->seq, (uint32_t)t->rows,
                                           (uint32_t)h->dim, t->o.grad_dtype, 0, 1.0f, t->g, NULL, NULL, err)) ||
            (st = request(t, &r, EL_MSG_TRAIN_RESULT, err)) || (st = result_rows(t, &r, 0, t->g, NULL, NULL, err)))
            return st;
    }
    if (fwd_only) return EL_OK;
    return el_train_layers_backward(t->dev, t->g, err);
}

el_status el_split_trainer_micro(el_split_trainer *t, const int *tokens, const int *targets, const float *mask,
                                 float grad_scale, double *loss, double *n_tokens, el_error *err) {
    return run(t, tokens, targets, mask, grad_scale, 0, loss, n_tokens, err);
}

el_status el_split_trainer_eval(el_split_trainer *t, const int *tokens, const int *targets, const float *mask,
                                double *loss, double *n_tokens, el_error *err) {
    return run(t, tokens, targets, mask, 1.0f, 1, loss, n_tokens, err);
}

el_status el_split_trainer_step(el_split_trainer *t, uint64_t step, float lr, float *dev_params, float *m, float *v,
                                size_t n, const el_adamw_opts *ao, double *norm, el_error *err) {
    const float *g = el_train_grads(t->dev);
    double ss = el_grad_sumsq(g, n);
    el_wire_msg r;
    t->seq++;
    el_status st;
    if (el_wire_encode_train_step(&t->tx, t->session, t->seq, step, lr, ss)) return el_err(err, EL_ERR_NOMEM, "out of memory");
    if ((st = request(t, &r, EL_MSG_TRAIN_STEPPED, err)) || (st = el_wire_decode_f64(&r, norm, err))) return st;
    if (!(*norm >= 0)) return el_err(err, EL_ERR_FORMAT, "worker %s: gradient norm %g", t->o.via, *norm);
    el_adamw_apply(dev_params, g, m, v, n, step, ao, lr, *norm);
    el_train_zero_grads(t->dev);
    return EL_OK;
}

static el_status read_params(el_split_trainer *t, const el_wire_msg *r, float *params, size_t n, el_error *err) {
    double w;
    const uint8_t *p;
    uint64_t got;
    el_status st = el_wire_decode_params(r, &w, &p, &got, err);
    if (st) return st;
    if (got != n) return el_err(err, EL_ERR_FORMAT, "worker %s: %llu parameters, expected %zu", t->o.via, (unsigned long long)got, n);
    for (size_t i = 0; i < n; i++) {
        uint32_t u = el_wire_u32(p + 4 * i);
        memcpy(&params[i], &u, 4);
    }
    return EL_OK;
}

el_status el_split_trainer_fetch(el_split_trainer *t, float *params, size_t n, el_error *err) {
    el_wire_msg r;
    t->seq++;
    el_status st;
    if (el_wire_encode_simple(&t->tx, EL_MSG_TRAIN_GET, t->session, t->seq)) return el_err(err, EL_ERR_NOMEM, "out of memory");
    if ((st = request(t, &r, EL_MSG_TRAIN_PARAMS, err))) return st;
    return read_params(t, &r, params, n, err);
}

el_status el_split_trainer_average(el_split_trainer *t, float *params, size_t n, double weight, el_error *err) {
    el_wire_msg r;
    t->seq++;
    el_status st;
    if (el_wire_encode_params(&t->tx, EL_MSG_TRAIN_AVG, t->session, t->seq, weight, params, n))
        return el_err(err, EL_ERR_NOMEM, "adapter too large to send");
    if ((st = request(t, &r, EL_MSG_TRAIN_PARAMS, err))) return st;
    return read_params(t, &r, params, n, err);
}

const el_split_train_stats *el_split_trainer_stats(const el_split_trainer *t) { return &t->stats; }
