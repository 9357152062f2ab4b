// LoRA adapters: a low-rank update W' = W + s·B·A for some of the seven
// projections of every layer (s = user scale · alpha / rank). Stored in the
// GGUF LoRA adapter format of the GGUF ecosystem (see docs/formats.md), so
// adapters written here load elsewhere and the other way round.
//
// The adapter is plain data that both inference (model/forward.c applies it
// per session) and training (train/ computes its gradients) use.
#ifndef EDGELLM_LORA_H
#define EDGELLM_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "edgellm/core.h"
#include "edgellm/model.h"

#ifdef __cplusplus
extern "C" {
#endif

// The projections an adapter may target, in the order of the --targets names
// q,k,v,o,gate,up,down.
typedef enum {
    EL_LORA_Q = 0,
    EL_LORA_K,
    EL_LORA_V,
    EL_LORA_O,
    EL_LORA_GATE,
    EL_LORA_UP,
    EL_LORA_DOWN,
    EL_LORA_N_TARGETS
} el_lora_target;

#define EL_LORA_ALL_TARGETS ((1u << EL_LORA_N_TARGETS) - 1)

typedef struct {
    float *a;  // [rank, in]   GGUF "….lora_a", ne = {in, rank}
    float *b;  // [out, rank]  GGUF "….lora_b", ne = {rank, out}
    int rank, in, out;
} el_lora_mat;

typedef struct el_lora {
    char *path;       // file it came from (NULL when made in memory)
    int n_layers;
    int rank;         // the rank of the first matrix (all equal when made here)
    float alpha;      // s = alpha / rank (per matrix) at scale 1
    unsigned targets; // bit t set: some layer has target t
    el_lora_mat *mats;  // [n_layers * EL_LORA_N_TARGETS]; a == NULL when absent
    float *params;      // every a and b, back to back (layer-major, target, a then b)
    size_t n_params;
} el_lora;

// Short name of a target ("q" ...) and its GGUF tensor stem ("attn_q" ...).
const char *el_lora_target_name(int t);
const char *el_lora_target_stem(int t);
// Parses "q,k,v,o,gate,up,down" (any subset, or "all") into a bit mask.
el_status el_lora_parse_targets(const char *s, unsigned *mask, el_error *err);
// in and out of a target's projection, from the hyper-parameters alone.
void el_lora_target_shape(const el_hparams *h, int target, int *in, int *out);
// The frozen base weight a target adapts.
const el_tensor *el_lora_base(const el_model *m, int layer, int target);

// A fresh adapter for m: A uniform in ±1/sqrt(in) from seed, B = 0 (so the
// adapted model starts equal to the base).
el_status el_lora_new(const el_model *m, int rank, float alpha, unsigned targets, uint64_t seed, el_lora **out,
                      el_error *err);
// The same for layers [layer_begin, layer_end) only (a stage of split
// fine-tuning). Each matrix is seeded from (seed, layer, target), so a range's
// matrices equal the whole-model adapter's for the same seed.
el_status el_lora_new_layers(const el_model *m, int layer_begin, int layer_end, int rank, float alpha,
                             unsigned targets, uint64_t seed, el_lora **out, el_error *err);
void el_lora_free(el_lora *l);
// An adapter for m with alpha and zeroed matrices at the given places, for a
// caller that fills them in (a worker receiving an adapter over the wire).
// Shapes come from m's hyper-parameters; a layer or target out of range, a
// rank outside 1..4096 (as el_lora_load allows), or a place given twice is
// refused.
typedef struct {
    int layer, target, rank;
} el_lora_slot;
el_status el_lora_alloc_slots(const el_model *m, float alpha, int n, const el_lora_slot *slots, el_lora **out,
                              el_error *err);
// One adapter holding every matrix of parts (e.g. the device's and the
// worker's halves of a split fine-tuning run); a (layer, target) may come from
// one part only, and all parts must share alpha.
el_status el_lora_join(const el_model *m, const el_lora *const *parts, int n, el_lora **out, el_error *err);
// The matrix for (layer, target), or NULL when the adapter does not touch it.
const el_lora_mat *el_lora_get(const el_lora *l, int layer, int target);
// Offset of mats[i].a in params (b follows at + rank*in).
size_t el_lora_offset(const el_lora *l, const el_lora_mat *mat);

// Reads an adapter and checks it against m: every tensor must name a
// projection of m with matching shapes, else the error names the tensor.
el_status el_lora_load(const char *path, const el_model *m, el_lora **out, el_error *err);
// Writes the adapter (f32 tensors) atomically.
el_status el_lora_save(const el_lora *l, const char *path, el_error *err);

// Adapters applied together at inference, each with its user scale.
#define EL_LORA_MAX_SET 8
typedef struct {
    int n;
    const el_lora *lora[EL_LORA_MAX_SET];
    float scale[EL_LORA_MAX_SET];
} el_lora_set;

// y[n, out] += Σ_adapters s · (x[n, in] · Aᵀ) · Bᵀ   for one (layer, target)
void el_lora_apply(const el_lora_set *set, int layer, int target, float *y, const float *x, int n);

// Attaches adapters to a session's forward pass (set is borrowed and must
// outlive the session's use of it; NULL detaches).
void el_session_set_lora(el_session *s, const el_lora_set *set);

#ifdef __cplusplus
}
#endif
#endif
