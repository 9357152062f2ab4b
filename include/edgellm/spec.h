// Small-large cooperation: a small draft model on the device proposes k
// tokens, the target (local, or split across device and edge) checks all of
// them in one batched pass of k+1 rows, so an accepted run of tokens costs
// one round trip. Speculative sampling keeps the output distribution the
// target sampler's own: a drafted token d is accepted with probability
// min(1, p(d)/q(d)); on a rejection the token is drawn from the normalised
// residual max(0, p - q). p and q are the distributions after the sampler's
// penalty, temperature, top-k, top-p and min-p (el_sampler_dist); at
// temperature 0 both are one-hot and the text is the target's greedy text.
#ifndef EDGELLM_SPEC_H
#define EDGELLM_SPEC_H

#include "edgellm/model.h"
#include "edgellm/sample.h"
#include "edgellm/split.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EL_SPEC_MAX_K 16  // most tokens drafted per round

// ---------------------------------------------------------------- the draft

// A draft runs entirely on this device: a whole (small) model, or, with
// layers = L > 0, the first L layers of a model plus its final norm and head
// (self-drafting: early exit from the target's own layers).
typedef struct el_drafter el_drafter;
el_status el_drafter_new(const el_model *m, int layers, int ctx, el_pool *pool, el_drafter **out, el_error *err);
void el_drafter_free(el_drafter *d);

// ---------------------------------------------------------------- choosing k

// Tokens a round yields on average when each drafted token is accepted with
// probability alpha (independently) and k are drafted: (1 - a^(k+1)) / (1 - a).
double el_spec_expected_tokens(double alpha, int k);

// What a round of k drafted tokens costs: k draft forwards, then the
// verification of k+1 rows (link round trip and both sides' compute),
// modelled as verify_fixed_s + verify_row_s * (k + 1).
typedef struct {
    double alpha;           // acceptance rate of one drafted token
    double draft_s;         // one draft forward (one token)
    double verify_fixed_s;  // a verification round's fixed part (round trip, weights read once)
    double verify_row_s;    // and its cost per row
} el_spec_cost;
// Expected tokens per second of rounds of k.
double el_spec_predict(const el_spec_cost *c, int k);
// The k in 1..max_k with the most expected tokens per second; *tps its prediction.
int el_spec_best_k(const el_spec_cost *c, int max_k, double *tps);

// ---------------------------------------------------------------- one position

// The speculative sampling step at one position: p is the target's
// distribution, q the draft's (both from el_sampler_dist), drafted the token
// drawn from q. Uses the target sampler's generator. Returns the token for
// the position: drafted (*accepted = 1) or one drawn from max(0, p - q)
// (*accepted = 0). residual is scratch of n_vocab floats.
int el_spec_accept(el_sampler *target, int n_vocab, const float *p, const float *q, int drafted, float *residual,
                   int *accepted);

// ---------------------------------------------------------------- generation

typedef struct {
    int k;                 // tokens drafted per round (1..EL_SPEC_MAX_K), 0: chosen each round (auto)
    int max_k;             // auto chooses within 1..max_k (default 8)
    el_sampler_params sp;  // the target's sampler (the draft samples with the same settings)
    // The acceptance rule (NULL: el_spec_accept). Tests swap in a wrong one
    // to show that the distribution test catches it.
    int (*accept)(el_sampler *target, int n_vocab, const float *p, const float *q, int drafted, float *residual,
                  int *accepted);
} el_spec_opts;

typedef struct {
    uint64_t rounds;    // verification passes (split: round trips to the edge)
    uint64_t drafted;   // tokens proposed by the draft
    uint64_t accepted;  // of which accepted
    uint64_t examined;  // drafted tokens the target judged (a rejection ends a round's judging)
    uint64_t tokens;    // tokens generated
    double draft_s;     // time in the draft
    double verify_s;    // time verifying (forward of the rows, round trip, acceptance)
    double link_s;      // of which the network's share (split)
    // the cost model as estimated now (auto k uses it; fixed k reports it)
    el_spec_cost cost;
    int last_k;               // k of the last round
    double predicted_sum;     // sum over rounds of the predicted tokens/s of the k chosen
    uint64_t k_sum;           // sum over rounds of k
} el_spec_stats;

typedef struct el_spec el_spec;
// target: the pipeline of the target model (local or split; not sampling on
// the edge); borrowed. The draft's vocabulary must be the target's.
el_status el_spec_new(el_pipeline *target, const el_model *target_model, el_drafter *draft, const el_spec_opts *o,
                      el_spec **out, el_error *err);
void el_spec_free(el_spec *s);
// The prompt tokens[0..n): the target and the draft run all but the last.
el_status el_spec_prefill(el_spec *s, const int *tokens, int n, el_error *err);
// One round: drafts up to k tokens, verifies them and writes the new tokens
// (1 .. k+1, at most max_out >= 1) to out[*n_out]. Stops at the context's end
// (EL_ERR_RANGE when not one more position fits).
el_status el_spec_round(el_spec *s, int max_out, int *out, int *n_out, el_error *err);
// Positions generated so far (prompt included).
int el_spec_length(const el_spec *s);
const el_spec_stats *el_spec_get_stats(const el_spec *s);

#ifdef __cplusplus
}
#endif
#endif
