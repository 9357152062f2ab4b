// Turning logits into the next token: greedy, temperature, top-k, top-p,
// min-p and a repetition penalty, with a seeded generator for reproducibility.
#ifndef EDGELLM_SAMPLE_H
#define EDGELLM_SAMPLE_H

#include <stdint.h>

#include "edgellm/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    float temp;            // 0: greedy
    int top_k;             // 0: off
    float top_p;           // 1: off
    float min_p;           // 0: off
    float repeat_penalty;  // 1: off
    int repeat_last_n;     // how many recent tokens the penalty looks at
    uint64_t seed;
} el_sampler_params;

typedef struct el_sampler el_sampler;

// temp 0.8, top-k 40, top-p 0.95, min-p 0.05, repeat penalty 1 (off) over
// the last 64 tokens, seed 42: the defaults of run, chat and serve.
el_sampler_params el_sampler_defaults(void);
el_status el_sampler_check(const el_sampler_params *p, el_error *err);
el_sampler *el_sampler_new(const el_sampler_params *p, int n_vocab);
void el_sampler_free(el_sampler *s);
// Remember a token (prompt or generated) for the repetition penalty.
void el_sampler_accept(el_sampler *s, int token);
// Picks the next token. logits is modified (penalties, temperature).
int el_sampler_sample(el_sampler *s, float *logits);

// Speculative decoding needs the distribution itself, not one draw from it.
// dist[n_vocab] := the distribution el_sampler_sample draws from for these
// logits after the repetition penalty, temperature, top-k, top-p and min-p
// (zero outside the candidates, summing to 1; greedy: one-hot at the
// argmax). logits is modified as by el_sampler_sample.
void el_sampler_dist(el_sampler *s, float *logits, float *dist);
// Draws a token from weights dist[n_vocab] (need not sum to 1; zero and
// negative weights never drawn) with the sampler's generator.
int el_sampler_draw(el_sampler *s, const float *dist);
// A uniform number in [0, 1) from the sampler's generator.
float el_sampler_uniform(el_sampler *s);
// Forgets the last n accepted tokens (at most EL_SAMPLER_REWIND past what
// the penalty window holds): drafted tokens that were rejected.
#define EL_SAMPLER_REWIND 64
void el_sampler_rewind(el_sampler *s, int n);

// The generator's state now: a sampler made with this as its seed draws
// what this one would draw next (how a split run's last stage hands its
// sampler to a re-opened session).
uint64_t el_sampler_rng_state(const el_sampler *s);

// Index of the largest value (first one on ties).
int el_argmax(const float *x, int n);

// xorshift64* generator
uint64_t el_rng_next(uint64_t *state);
float el_rng_uniform(uint64_t *state);  // [0, 1)

#ifdef __cplusplus
}
#endif
#endif
