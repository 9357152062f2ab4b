// Samplers. The order of operations is: repetition penalty, then (if temp > 0)
// temperature, softmax, top-k, top-p, min-p, renormalise, draw.
#include "edgellm/sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct el_sampler {
    el_sampler_params p;
    int n_vocab;
    int *recent;  // ring buffer of the last repeat_last_n + EL_SAMPLER_REWIND tokens
    int cap;      // its size
    int n_recent, head;  // tokens held (at most cap), next slot
    uint64_t rng;
    int *idx;  // scratch: candidate indices
    int *tmp;  // scratch: selection heap and merge buffer
    uint32_t *keys;  // scratch: [2 * n_vocab] radix sort keys
    float *prob;
};

uint64_t el_rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

float el_rng_uniform(uint64_t *s) { return (float)(el_rng_next(s) >> 40) / 16777216.0f; }

el_sampler_params el_sampler_defaults(void) {
    // One set for run, chat and serve; the values llama.cpp users know
    // (docs/cli.md has the table).
    el_sampler_params p = {.temp = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
                           .repeat_penalty = 1.0f, .repeat_last_n = 64, .seed = 42};
    return p;
}

el_status el_sampler_check(const el_sampler_params *p, el_error *err) {
    if (!(p->temp >= 0 && p->temp <= 100)) return el_err(err, EL_ERR_ARG, "--temp %g is outside 0..100", p->temp);
    if (p->top_k < 0) return el_err(err, EL_ERR_ARG, "--top-k %d is negative", p->top_k);
    if (!(p->top_p > 0 && p->top_p <= 1)) return el_err(err, EL_ERR_ARG, "--top-p %g is outside (0, 1]", p->top_p);
    if (!(p->min_p >= 0 && p->min_p < 1)) return el_err(err, EL_ERR_ARG, "--min-p %g is outside [0, 1)", p->min_p);
    if (!(p->repeat_penalty > 0 && p->repeat_penalty <= 100))
        return el_err(err, EL_ERR_ARG, "--repeat-penalty %g is outside (0, 100]", p->repeat_penalty);
    if (p->repeat_last_n < 0 || p->repeat_last_n > 1 << 20)
        return el_err(err, EL_ERR_ARG, "repeat window %d is out of range", p->repeat_last_n);
    return EL_OK;
}

el_sampler *el_sampler_new(const el_sampler_params *p, int n_vocab) {
    el_sampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->rng = p->seed ? p->seed : 0x9E3779B97F4A7C15ULL;
    s->cap = p->repeat_last_n ? p->repeat_last_n + EL_SAMPLER_REWIND : 0;
    s->recent = calloc((size_t)s->cap + 1, sizeof(int));
    s->idx = calloc((size_t)n_vocab, sizeof(int));
    s->tmp = calloc((size_t)n_vocab, sizeof(int));
    s->keys = calloc(2 * (size_t)n_vocab, sizeof(uint32_t));
    s->prob = calloc((size_t)n_vocab, sizeof(float));
    if (!s->recent || !s->idx || !s->tmp || !s->keys || !s->prob) {
        el_sampler_free(s);
        return NULL;
    }
    return s;
}

void el_sampler_free(el_sampler *s) {
    if (!s) return;
    free(s->recent);
    free(s->idx);
    free(s->tmp);
    free(s->keys);
    free(s->prob);
    free(s);
}

void el_sampler_accept(el_sampler *s, int token) {
    if (s->cap == 0) return;
    s->recent[s->head] = token;
    s->head = (s->head + 1) % s->cap;
    if (s->n_recent < s->cap) s->n_recent++;
}

void el_sampler_rewind(el_sampler *s, int n) {
    if (s->cap == 0 || n <= 0) return;
    if (n > s->n_recent) n = s->n_recent;
    s->head = (s->head - n % s->cap + s->cap) % s->cap;
    s->n_recent -= n;
}

int el_argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static int cmp_prob_desc(const void *a, const void *b, void *ctx) {
    const float *prob = ctx;
    float pa = prob[*(const int *)a], pb = prob[*(const int *)b];
    if (pa > pb) return -1;
    if (pa < pb) return 1;
    return *(const int *)a - *(const int *)b;
}

// qsort has no context argument in C11; a small merge sort does the job.
static void sort_by_prob(int *idx, int *tmp, int n, const float *prob) {
    if (n < 2) return;
    int mid = n / 2;
    sort_by_prob(idx, tmp, mid, prob);
    sort_by_prob(idx + mid, tmp, n - mid, prob);
    int i = 0, j = mid, k = 0;
    while (i < mid && j < n) tmp[k++] = cmp_prob_desc(&idx[i], &idx[j], (void *)prob) <= 0 ? idx[i++] : idx[j++];
    while (i < mid) tmp[k++] = idx[i++];
    while (j < n) tmp[k++] = idx[j++];
    memcpy(idx, tmp, (size_t)n * sizeof(int));
}

// idx[0..k) := the first k of idx[0..n) in cmp_prob_desc order (unsorted),
// through a heap in heap[0..k) whose root is the last of those kept.
static void select_top(int *idx, int *heap, int n, int k, const float *prob) {
    for (int i = 0; i < n; i++) {
        int v = idx[i], j;
        if (i < k) {  // push and sift up
            for (j = i; j > 0 && cmp_prob_desc(&heap[(j - 1) / 2], &v, (void *)prob) < 0; j = (j - 1) / 2)
                heap[j] = heap[(j - 1) / 2];
            heap[j] = v;
        } else if (cmp_prob_desc(&v, &heap[0], (void *)prob) < 0) {  // replace the root and sift down
            for (j = 0;;) {
                int c = 2 * j + 1;
                if (c >= k) break;
                if (c + 1 < k && cmp_prob_desc(&heap[c], &heap[c + 1], (void *)prob) < 0) c++;
                if (cmp_prob_desc(&v, &heap[c], (void *)prob) >= 0) break;
                heap[j] = heap[c];
                j = c;
            }
            heap[j] = v;
        }
    }
    memcpy(idx, heap, (size_t)k * sizeof(int));
}

// Length of the shortest head of idx[0..n) (sorted) whose probabilities sum
// to top_p; -1 if the n do not reach it.
static int nucleus(const int *idx, int n, const float *prob, float top_p) {
    double cum = 0;
    for (int i = 0; i < n; i++) {
        cum += prob[idx[i]];
        if (cum >= top_p) return i + 1;
    }
    return -1;
}

// The same order as sort_by_prob for probabilities that are all >= 0 and
// not NaN, whose bit patterns then order as unsigned integers: an LSD radix
// sort (stable, so ties keep idx's order, which callers give ascending) on
// the complemented bits, 4 passes of 8 bits. A nearly flat distribution keeps
// most of the vocabulary in the head: 32000 candidates took 3.5 ms to merge
// sort through the comparator.
static int radix_by_prob(int *idx, int *tmp, uint32_t *keys, int n, const float *prob) {
    uint32_t *k0 = keys, *k1 = keys + n;
    for (int i = 0; i < n; i++) {
        float p = prob[idx[i]];
        if (!(p >= 0)) return 0;  // negative or NaN: not this sort's
        uint32_t u;
        memcpy(&u, &p, 4);
        k0[i] = ~u;  // descending probability
    }
    for (int shift = 0; shift < 32; shift += 8) {
        size_t count[257] = {0};
        for (int i = 0; i < n; i++) count[(k0[i] >> shift & 255) + 1]++;
        for (int b = 0; b < 256; b++) count[b + 1] += count[b];
        for (int i = 0; i < n; i++) {
            size_t at = count[k0[i] >> shift & 255]++;
            k1[at] = k0[i];
            tmp[at] = idx[i];
        }
        uint32_t *kt = k0;
        k0 = k1, k1 = kt;
        memcpy(idx, tmp, (size_t)n * sizeof(int));
    }
    return 1;
}

// idx[0..n) in cmp_prob_desc order; idx must come in ascending order.
static void sort_head(el_sampler *s, int n) {
    if (n >= 1024 && radix_by_prob(s->idx, s->tmp, s->keys, n, s->prob)) return;
    sort_by_prob(s->idx, s->tmp, n, s->prob);
}

// The repetition penalty: each distinct token of the last repeat_last_n
// accepted ones once, shrinking positive logits and growing negative ones.
static void penalise(el_sampler *s, float *logits) {
    if (s->p.repeat_penalty == 1.0f) return;
    int n = s->n_vocab, L = s->n_recent < s->p.repeat_last_n ? s->n_recent : s->p.repeat_last_n;
    for (int i = 0; i < L; i++) {
        int t = s->recent[(s->head - 1 - i + s->cap) % s->cap];
        int seen = 0;
        for (int j = 0; j < i && !seen; j++) seen = s->recent[(s->head - 1 - j + s->cap) % s->cap] == t;
        if (seen || t < 0 || t >= n) continue;
        logits[t] = logits[t] > 0 ? logits[t] / s->p.repeat_penalty : logits[t] * s->p.repeat_penalty;
    }
}

// With temp > 0: s->prob := softmax(logits / temp), and s->idx[0..m) the
// candidates that survive top-k, top-p and min-p; returns m.
static int candidates(el_sampler *s, const float *logits) {
    int n = s->n_vocab;
    float max = logits[el_argmax(logits, n)];
    double sum = 0;
    for (int i = 0; i < n; i++) {
        s->prob[i] = expf((logits[i] - max) / s->p.temp);
        sum += s->prob[i];
    }
    for (int i = 0; i < n; i++) s->prob[i] = (float)(s->prob[i] / sum);

    // Candidates: all tokens, or the top-k, sorted by probability only when a
    // filter needs the order. Only the head of that order is ever read, so
    // only the head is sorted: the top-k by a heap, and for top-p the tokens
    // above a floor that no token of the nucleus is below (sorting the whole
    // vocabulary each step was 6% of decode for a 32000-token model).
    int m = n;
    for (int i = 0; i < n; i++) s->idx[i] = i;
    if (s->p.top_k > 0) {
        m = s->p.top_k < n ? s->p.top_k : n;
        if (m >= 1024 && 4 * m >= n) {
            sort_head(s, n);  // most of the vocabulary: sort it all (its first m are the top m)
        } else {
            select_top(s->idx, s->tmp, n, m, s->prob);
            sort_by_prob(s->idx, s->tmp, m, s->prob);
        }
        int q = s->p.top_p < 1.0f ? nucleus(s->idx, m, s->prob, s->p.top_p) : -1;
        if (q > 0) m = q;
    } else if (s->p.top_p < 1.0f) {
        // A token of probability q with everything below it (at most n - 1
        // tokens, each <= q) has at least 1 - n q before it; at q <= (1 -
        // top_p) / (2n) that is past top_p with room for rounding.
        float floor_p = (1.0f - s->p.top_p) / (2.0f * (float)n);
        int c = 0;
        for (int i = 0; i < n; i++)
            if (s->prob[i] > floor_p) s->idx[c++] = i;
        sort_head(s, c);
        m = nucleus(s->idx, c, s->prob, s->p.top_p);
        if (m < 0) {  // not reached within the head (top_p within rounding of 1): the whole order
            for (int i = 0; i < n; i++) s->idx[i] = i;
            sort_head(s, n);
            m = nucleus(s->idx, n, s->prob, s->p.top_p);
            if (m < 0) m = n;
        }
    }
    if (s->p.min_p > 0) {
        float floor_p = s->p.min_p * s->prob[el_argmax(s->prob, n)];
        int k = 0;
        for (int i = 0; i < m; i++)
            if (s->prob[s->idx[i]] >= floor_p) s->idx[k++] = s->idx[i];
        m = k ? k : 1;  // none kept: NaN probabilities (NaN or all -inf logits); the first candidate
    }
    return m;
}

int el_sampler_sample(el_sampler *s, float *logits) {
    penalise(s, logits);
    if (s->p.temp == 0.0f) return el_argmax(logits, s->n_vocab);
    int m = candidates(s, logits);
    double total = 0;
    for (int i = 0; i < m; i++) total += s->prob[s->idx[i]];
    double r = el_rng_uniform(&s->rng) * total, cum = 0;
    for (int i = 0; i < m; i++) {
        cum += s->prob[s->idx[i]];
        if (r < cum) return s->idx[i];
    }
    return s->idx[m - 1];
}

void el_sampler_dist(el_sampler *s, float *logits, float *dist) {
    int n = s->n_vocab;
    penalise(s, logits);
    memset(dist, 0, (size_t)n * sizeof(float));
    if (s->p.temp == 0.0f) {
        dist[el_argmax(logits, n)] = 1.0f;
        return;
    }
    int m = candidates(s, logits);
    double total = 0;
    for (int i = 0; i < m; i++) total += s->prob[s->idx[i]];
    for (int i = 0; i < m; i++) dist[s->idx[i]] = (float)(s->prob[s->idx[i]] / total);
}

int el_sampler_draw(el_sampler *s, const float *dist) {
    int n = s->n_vocab, last = -1;
    double total = 0;
    for (int i = 0; i < n; i++)
        if (dist[i] > 0) total += dist[i], last = i;
    if (last < 0) return 0;  // nothing to draw from: NaN or zero weights
    double r = el_rng_uniform(&s->rng) * total, cum = 0;
    for (int i = 0; i < n; i++) {
        if (!(dist[i] > 0)) continue;
        cum += dist[i];
        if (r < cum) return i;
    }
    return last;
}

float el_sampler_uniform(el_sampler *s) { return el_rng_uniform(&s->rng); }

uint64_t el_sampler_rng_state(const el_sampler *s) { return s->rng; }
