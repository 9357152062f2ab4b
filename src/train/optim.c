// AdamW (decoupled weight decay) with global gradient-norm clipping, over the
// flat LoRA parameter array. Sums run in a fixed order so that a resumed run
// reproduces an uninterrupted one bit for bit.
#include <math.h>

#include "edgellm/train.h"

double el_grad_sumsq(const float *grads, size_t n) {
    double ss = 0;
    for (size_t i = 0; i < n; i++) ss += (double)grads[i] * grads[i];
    return ss;
}

double el_adamw_step(float *params, const float *grads, float *m, float *v, size_t n, uint64_t t,
                     const el_adamw_opts *o, float lr) {
    double norm = sqrt(el_grad_sumsq(grads, n));
    el_adamw_apply(params, grads, m, v, n, t, o, lr, norm);
    return norm;
}

void el_adamw_apply(float *params, const float *grads, float *m, float *v, size_t n, uint64_t t,
                    const el_adamw_opts *o, float lr, double norm) {
    float gs = o->clip > 0 && norm > o->clip ? (float)(o->clip / norm) : 1.0f;
    // bias corrections 1 - β^t
    float c1 = (float)(1.0 - pow(o->beta1, (double)t)), c2 = (float)(1.0 - pow(o->beta2, (double)t));
    for (size_t i = 0; i < n; i++) {
        float g = grads[i] * gs;
        m[i] = o->beta1 * m[i] + (1 - o->beta1) * g;
        v[i] = o->beta2 * v[i] + (1 - o->beta2) * g * g;
        float mh = m[i] / c1, vh = v[i] / c2;
        params[i] -= lr * (mh / (sqrtf(vh) + o->eps) + o->weight_decay * params[i]);
    }
}
