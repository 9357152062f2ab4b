// Llama-family models: hyper-parameters, weights as tensor views over a mapped
// file (GGUF or llama2.c checkpoint), and the per-stage forward pass.
//
// A stage is a contiguous range of layers [layer_begin, layer_end), plus
// optionally the token embedding (first stage) and the final norm + output
// head (last stage). Local inference is one stage holding everything.
#ifndef EDGELLM_MODEL_H
#define EDGELLM_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "edgellm/core.h"
#include "edgellm/gguf.h"
#include "edgellm/tensor.h"
#include "edgellm/tokenize.h"

#ifdef __cplusplus
extern "C" {
#endif

// Model families: the architecture in GGUF ("llama", "qwen2") plus the
// variant its metadata implies (Llama 3 rope scaling, Mistral sliding window).
typedef enum { EL_FAMILY_LLAMA = 0, EL_FAMILY_QWEN2 = 1 } el_family;

typedef enum { EL_ROPE_NORMAL = 0, EL_ROPE_NEOX = 1 } el_rope_type;

// How the rotary frequencies are rescaled for long contexts.
typedef enum {
    EL_ROPE_SCALING_NONE = 0,
    EL_ROPE_SCALING_LINEAR = 1,  // every frequency divided by rope_scale
    EL_ROPE_SCALING_FREQS = 2,   // frequency i divided by rope_freqs.weight[i] (Llama 3.1)
} el_rope_scaling;

typedef struct {
    char arch[32];  // "llama" or "qwen2"
    int dim;        // embedding width
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int head_dim;  // dim / n_heads
    int ff;        // feed-forward hidden width
    int vocab;
    int ctx;  // trained context length
    float rms_eps;
    float rope_theta;
    int tied_output;  // output head shares token_embd
    el_family family;
    el_rope_type rope_type;        // NORMAL: pairs (2i, 2i+1); NEOX: pairs (i, i+head_dim/2)
    el_rope_scaling rope_scaling;
    float rope_scale;              // LINEAR factor (1 otherwise)
    int rope_orig_ctx;             // rope.scaling.original_context_length (0 if not given)
    int has_qkv_bias;              // blk.N.attn_{q,k,v}.bias present (Qwen2)
    int sliding_window;            // attend to at most this many latest positions (0: unlimited)
} el_hparams;


typedef struct {
    el_tensor attn_norm;  // [dim]
    el_tensor wq;         // [n_heads*head_dim rows, dim]
    el_tensor wk;         // [n_kv_heads*head_dim rows, dim]
    el_tensor wv;         // [n_kv_heads*head_dim rows, dim]
    el_tensor wo;         // [dim rows, n_heads*head_dim]
    el_tensor ffn_norm;   // [dim]
    el_tensor w_gate;     // [ff rows, dim]   (llama2.c w1)
    el_tensor w_down;     // [dim rows, ff]   (llama2.c w2)
    el_tensor w_up;       // [ff rows, dim]   (llama2.c w3)
    // Qwen2 biases, f32; all-zero views (name NULL, data NULL) when the model has none.
    el_tensor bq;  // [n_heads*head_dim]
    el_tensor bk;  // [n_kv_heads*head_dim]
    el_tensor bv;  // [n_kv_heads*head_dim]
} el_layer;

typedef enum { EL_MODEL_GGUF = 1, EL_MODEL_LLAMA2C = 2 } el_model_format;

typedef struct {
    // Which parts to bind (and validate). Defaults (all zero) mean everything.
    int layer_begin, layer_end;  // layer_end == 0: up to n_layers (unless no_layers)
    int no_layers;               // bind no layers at all (a device that only embeds)
    int no_embed;                // do not need token_embd
    int no_head;                 // do not need output_norm/output
    int no_pack;                 // no packed copies for the matmul kernels: the reader uses the file's
                                 // rows (training dequantizes them), so a copy would double the memory
    int no_scan;                 // skip the scan for NaN/inf block scales (every block of every bound
                                 // matrix): only for a view that is hashed (el_model_identity), never run
    int threads;                 // the decode threads the packed copies are striped for (kernels.h); 0:
                                 // the CPUs online, as el_pool_new(0)
} el_model_opts;

typedef struct el_model {
    char *path;
    el_model_format format;
    el_hparams hp;
    int layer_begin, layer_end;  // the range whose weights are bound
    int has_embed, has_head;
    el_tensor tok_embd;     // [vocab rows, dim]
    el_tensor output_norm;  // [dim]
    el_tensor output;       // [vocab rows, dim]; same data as tok_embd when tied
    el_tensor rope_freqs;   // [head_dim/2] f32 frequency divisors (EL_ROPE_SCALING_FREQS only)
    el_layer *layers;       // n_layers entries; only [layer_begin, layer_end) bound
    el_gguf *gguf;          // GGUF backing (NULL for llama2.c)
    void *map;              // llama2.c backing
    size_t map_size;
    char **names;  // owned tensor names for llama2.c views
    int n_names;
    // One arena of packed copies of the matrices for this CPU's kernels
    // (el_matmul_pack), owned here; the tensors' packed pointers point into it.
    void *pack_arena;
    size_t packed_bytes;
    const char **stripe_ptrs;  // the striped tensors' stripe tables (el_tensor.stripe), owned here
} el_model;

// Opens a model file (GGUF or llama2.c .bin, told apart by magic), binds the
// tensors opts asks for, and checks every shape against the hyper-parameters.
el_status el_model_open(const char *path, const el_model_opts *opts, el_model **out, el_error *err);
// The same for a GGUF already open (el_gguf_open_parts: a model assembled
// from a block store), which the model owns from here, also on failure.
// label names the model in messages and becomes m->path.
el_status el_model_open_gguf(el_gguf *g, const char *label, const el_model_opts *opts, el_model **out,
                             el_error *err);
void el_model_close(el_model *m);

// "llama", "qwen2".
const char *el_family_name(el_family f);
// A human-readable name of the variant: "Qwen2", "Llama 3 (rope scaling)",
// "Mistral (sliding window 4096)", "Llama".
void el_model_family_desc(const el_model *m, char *buf, size_t n);
// inv_freq[head_dim/2]: the rotary frequencies of the model, with its scaling applied.
void el_model_rope_freqs(const el_model *m, float *inv_freq);
// The Llama 3.1 rope scaling as per-frequency divisors (the convention of
// rope_freqs.weight): out[i] = 1 for wavelengths below orig_ctx/high_freq_factor,
// factor above orig_ctx/low_freq_factor, and a smooth blend between.
void el_rope_llama3_divisors(float *out, int head_dim, float theta, float factor, float low_freq_factor,
                             float high_freq_factor, int orig_ctx);

// Bytes of weights bound for layers [a, b) (plus embedding/head when bound).
size_t el_model_weight_bytes(const el_model *m, int a, int b, int with_embed, int with_head);
// Total parameter count of the whole model (all layers, embedding, head).
uint64_t el_model_n_params(const el_model *m);

// Identity hash of the hyper-parameters and the bound tensors of layers [a, b)
// (names, shapes, dtypes, and sampled content). Used to refuse mismatched peers.
uint64_t el_model_identity(const el_model *m, int a, int b);
// A context longer than the model was trained on is allowed everywhere, with
// a warning: positions it never saw make the text degrade. Returns 1 and
// writes the warning into msg when ctx exceeds the trained context.
int el_model_ctx_warning(const el_model *m, int ctx, char *msg, size_t n);

// Opens the tokenizer that goes with a model: tok_path (a llama2.c tokenizer
// file or a GGUF file with tokenizer.ggml.* keys) if given, else the model's own
// GGUF metadata.
el_status el_model_tokenizer(const el_model *m, const char *tok_path, el_tokenizer **out, el_error *err);

// ---------------------------------------------------------------- KV memory

// Where sessions' KV cache blocks come from, and how many bytes they may take
// in all (0: no limit). Blocks are allocated as positions are first written
// and returned when a session is truncated or freed, so the budget admits
// sessions by the memory they use, not by the context they could reach.
// Thread-safe counters; sessions drawing from one pool may live on different
// threads.
typedef struct el_kv_pool el_kv_pool;
el_kv_pool *el_kv_pool_new(size_t max_bytes);
void el_kv_pool_free(el_kv_pool *p);  // every session using it must be freed first
size_t el_kv_pool_used(const el_kv_pool *p);
size_t el_kv_pool_max(const el_kv_pool *p);
// Other memory counted in the same budget (a worker's adapters): take n
// bytes (0 when they do not fit), give them back.
int el_kv_pool_take(el_kv_pool *p, size_t n);
void el_kv_pool_give(el_kv_pool *p, size_t n);
// A pool inside another (one client's share of a worker's budget): what it
// takes counts against both, and must fit in both.
el_kv_pool *el_kv_pool_new_child(el_kv_pool *parent, size_t max_bytes);
// Bytes that can still be taken from p (and its parents); SIZE_MAX when unlimited.
size_t el_kv_pool_room(const el_kv_pool *p);
// on: a thread at idle priority faults in, ahead of need, the pages of the
// block after each session's last, for sessions of this pool's root and its
// children (a block's first write is a page fault per 4 KiB, dear on a
// virtual machine; it needs Linux's MADV_POPULATE_WRITE, 5.14 on). Those
// pages are memory outside the budget (not in el_kv_pool_used): about a block
// a session. off: no more. Call it when the pool is made, before its sessions
// run: it may wait for the thread.
void el_kv_pool_prefault(el_kv_pool *p, int on);
// Blocks the thread has faulted in so far.
int el_kv_pool_prefaulted(const el_kv_pool *p);

// Positions per KV block: a session's cache grows by this many positions
// (every layer it runs) at a time.
#define EL_KV_BLOCK 16

// ---------------------------------------------------------------- sessions

// The mutable state of one sequence on one stage: its KV cache (in blocks,
// see above), its layer range and its adapters.
typedef struct el_session el_session;

typedef struct {
    int layer_begin, layer_end;  // the layers this session runs (layer_end 0: model's bound end)
    int no_layers;               // run no layers (embedding and/or head only)
    int ctx;                     // most positions (0: model's ctx)
    int max_batch;               // most positions per el_session_layers call (0: 512)
    int kv_type;                 // cache dtype: EL_DTYPE_F32 (0, the default), EL_DTYPE_F16 or EL_DTYPE_Q8_0
    el_kv_pool *kv_pool;         // blocks counted against this pool (borrowed; NULL: a private, unlimited one)
} el_session_opts;

el_status el_session_new(const el_model *m, const el_session_opts *opts, el_pool *pool, el_session **out,
                         el_error *err);
void el_session_free(el_session *s);
int el_session_ctx(const el_session *s);
int el_session_max_batch(const el_session *s);
int el_session_layer_begin(const el_session *s);
int el_session_kv_type(const el_session *s);
// Bytes of KV blocks the session holds now.
size_t el_session_kv_bytes(const el_session *s);
// Bytes one block (EL_KV_BLOCK positions of every layer the session runs) takes.
size_t el_session_kv_block_bytes(const el_session *s);
// Makes sure positions [0, n_pos) have blocks; EL_ERR_NOMEM (the pool's
// budget, or memory) leaves the session as it was.
el_status el_session_reserve(el_session *s, int n_pos, el_error *err);
// Forgets positions from n_pos on and returns the blocks past them (a
// rejected draft, a rewritten tail).
void el_session_truncate(el_session *s, int n_pos);
// Positions that have blocks (a multiple of EL_KV_BLOCK, at most ctx rounded up).
int el_session_capacity(const el_session *s);
// Blocks from position 0 on whose cache pages are all in memory now (those
// written, and those faulted in ahead; page-granular: a page may hold more
// than one block of a small model's rows).
int el_session_kv_resident(const el_session *s);

// x[n, dim] = token_embd[tokens[i]]
el_status el_session_embed(el_session *s, const int *tokens, int n, float *x, el_error *err);
// Runs the session's layers over x[n, dim] in place, for positions pos .. pos+n-1
// (their keys and values enter the cache).
el_status el_session_layers(el_session *s, float *x, int n, int pos, el_error *err);
// logits[n_out, vocab] for the last n_out rows of x[n, dim]: final norm + output head.
el_status el_session_head(el_session *s, const float *x, int n, int n_out, float *logits, el_error *err);
// For benchmarks: every step the session's own engine runs after this call
// (el_session_forward, el_session_layers; not el_session_head, nor a shared
// el_batch) writes the clock (el_time_s) into t, at most cap values: t[0]
// before the session's first layer, t[1 + i] after its (i+1)-th layer, and
// one more as the step ends (after the head, if it runs one). A prefill
// longer than max_batch takes several steps, each writing over the last.
// t NULL (or cap <= 0) stops it; t must live until then.
void el_session_clock_layers(el_session *s, double *t, int cap);
// Convenience for a full local model: embed + layers + head for the last row
// (logits_all: every row). logits must hold vocab (or n*vocab) floats.
el_status el_session_forward(el_session *s, const int *tokens, int n, int pos, float *logits, int logits_all,
                             el_error *err);

// ---------------------------------------------------------------- batched steps

// The one batching engine: a step runs a stage's layers once over rows from
// many sessions (decode rows, prefill chunks, verification rows, any
// positions), so the weights are read once for all of them. Attention reads
// each row's own session cache; each session's adapters (el_session_set_lora)
// apply to its rows only (rows are grouped by adapter set, so a set costs one
// segmented low-rank product). Sessions may start at different layers of the
// stage (a tail of it) but must end at the same layer. serve's continuous
// batching, the split worker and the single-session calls above all run here.
typedef struct el_batch el_batch;

typedef struct {
    el_session *s;
    int pos, n;          // rows are positions pos .. pos+n-1 of s (their blocks reserved: el_session_reserve)
    const int *tokens;   // [n] token ids to embed (the model holds the embedding), or NULL: x holds the rows
    float *x;            // [n, dim] input rows (when tokens is NULL); with out_hidden, the rows after the layers
    int out_hidden;      // write the rows after the session's layers back into x
    int logits_rows;     // 0, 1 (the last row) or n: rows that go through the final norm and the head
    float *logits;       // [logits_rows, vocab]
} el_batch_req;

// Scratch for up to max_rows rows (1..65536) of model m.
el_status el_batch_new(const el_model *m, int max_rows, el_pool *pool, el_batch **out, el_error *err);
void el_batch_free(el_batch *b);
int el_batch_max_rows(const el_batch *b);
// One step over reqs[0..n_req): at most max_rows rows in all, each session at
// most once. Checks every request before computing anything.
el_status el_batch_run(el_batch *b, int n_req, const el_batch_req *reqs, el_error *err);

// How one step's budget of rows is shared among n waiting requests (serve's
// sequences, a worker's sessions). want[i]: rows request i has left. Short
// requests (at most short_rows rows: decode, verification) are taken whole,
// in turn from *cursor, within what leaves long ones (prefill) a quarter of
// the budget; long ones get the rest in chunks. *cursor moves to the first
// request that got less than it wanted (or one on), so every request is
// served within a few steps however many wait. take[i] = rows to run now;
// returns their sum (at most budget).
int el_batch_plan(int n, const int *want, int budget, int short_rows, int *cursor, int *take);

#ifdef __cplusplus
}
#endif
#endif
