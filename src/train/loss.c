// Softmax cross-entropy, the training loss, as a forward/backward pair
// (the layer's ops are src/model/layer.c). Checked against finite
// differences in tests/unit/test_train.c.
#include <math.h>

#include "edgellm/train.h"

// ---------------------------------------------------------------- cross-entropy

void el_cross_entropy_forward(float *loss, float *probs, const float *logits, const int *targets, int n, int V) {
    for (int i = 0; i < n; i++) {
        const float *l = logits + (size_t)i * V;
        float *p = probs + (size_t)i * V;
        float max = l[0];
        for (int j = 1; j < V; j++)
            if (l[j] > max) max = l[j];
        double sum = 0;
        float lt = targets[i] >= 0 ? l[targets[i]] : 0;
        for (int j = 0; j < V; j++) {
            p[j] = expf(l[j] - max);
            sum += p[j];
        }
        float inv = (float)(1.0 / sum);
        for (int j = 0; j < V; j++) p[j] *= inv;
        loss[i] = targets[i] >= 0 ? (float)(log(sum) - ((double)lt - max)) : 0.0f;
    }
}

void el_cross_entropy_backward(float *dlogits, const float *probs, const int *targets, const float *dloss, int n,
                               int V) {
    for (int i = 0; i < n; i++) {
        float *d = dlogits + (size_t)i * V;
        const float *p = probs + (size_t)i * V;
        float g = targets[i] >= 0 ? dloss[i] : 0.0f;
        for (int j = 0; j < V; j++) d[j] = g * p[j];
        if (targets[i] >= 0) d[targets[i]] -= g;
    }
}
