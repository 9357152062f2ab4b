// The split-inference wire protocol: fixed little-endian encodings of the
// messages devices and workers exchange. Pure functions over byte buffers:
// decoding checks every length against the frame before reading, so a
// hostile frame yields an error, never an out-of-bounds read.
// The byte layout is documented in docs/protocol.md.
#ifndef EDGELLM_WIRE_H
#define EDGELLM_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "edgellm/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EL_WIRE_MAGIC 0x50574C45u  // "ELWP" little-endian
#define EL_WIRE_VERSION 2
#define EL_WIRE_HEADER 24
#define EL_WIRE_MAX_FRAME (256u << 20)  // 256 MiB: far above any real activation batch
#define EL_WIRE_MAX_STAGES 16
#define EL_WIRE_MAX_TEXT 1024

typedef enum {
    EL_MSG_OPEN = 1,     // device -> worker: start a session
    EL_MSG_OPENED = 2,   // worker -> device: session id
    EL_MSG_FORWARD = 3,  // device -> worker: activations for positions pos..pos+n-1
    EL_MSG_RESULT = 4,   // worker -> device: hidden states, logits or tokens
    EL_MSG_CLOSE = 5,    // device -> worker: end a session
    EL_MSG_OK = 6,       // worker -> device: acknowledgement
    EL_MSG_ERROR = 7,    // either way: code + text
    EL_MSG_PING = 8,     // either way: echo payload (RTT and throughput probes)
    EL_MSG_PONG = 9,
    EL_MSG_PROBE = 10,        // device -> worker: u32 reply_len + filler (link throughput probes)
    EL_MSG_PROBE_REPLY = 11,  // worker -> device: reply_len bytes
    // split fine-tuning (docs/protocol.md, "Training")
    EL_MSG_TRAIN_OPEN = 12,      // device -> worker: train a LoRA on a layer range
    EL_MSG_TRAIN_FORWARD = 13,   // device -> worker: activations at the cut (+ targets unless U-shape)
    EL_MSG_TRAIN_RESULT = 14,    // worker -> device: loss + gradient at the cut, or (U-shape) hidden states
    EL_MSG_TRAIN_BACKWARD = 15,  // device -> worker (U-shape): gradient at the last hidden states
    EL_MSG_TRAIN_STEP = 16,      // device -> worker: optimizer step (step number, lr, device grad norm²)
    EL_MSG_TRAIN_STEPPED = 17,   // worker -> device: the global gradient norm used for clipping
    EL_MSG_TRAIN_GET = 18,       // device -> worker: send the worker-side adapter
    EL_MSG_TRAIN_PARAMS = 19,    // worker -> device: adapter parameters (f32)
    EL_MSG_TRAIN_AVG = 20,       // device -> worker: device-side adapter + weight, for federated averaging
    // inference with adapters
    EL_MSG_LORA = 21,  // device -> worker: a LoRA adapter's matrices for the chain's layers; answered by OK
    // the edge network (issue 16; docs/protocol.md, "Blocks and the controller")
    EL_MSG_BLOCK_GET = 22,   // store -> worker: hash, offset, max length of a block
    EL_MSG_BLOCK_DATA = 23,  // worker -> store: hash, offset, total length, bytes
    EL_MSG_ANNOUNCE = 24,    // worker -> controller: heartbeat (JSON)
    EL_MSG_ANNOUNCED = 25,   // controller -> worker: what to fetch (JSON)
    EL_MSG_ROUTE = 26,       // device -> controller: which worker for a model (JSON)
    EL_MSG_ROUTED = 27,      // controller -> device: the route (JSON)
    EL_MSG_PLACE = 28,       // place --apply -> controller: a placement (JSON); answered by OK
} el_msg_type;

#define EL_WIRE_MAX_PROBE_REPLY (64u << 20)

// What the last stage of a chain returns.
typedef enum { EL_WANT_HIDDEN = 0, EL_WANT_LOGITS = 1, EL_WANT_TOKEN = 2 } el_want;

typedef enum {
    EL_WERR_PROTOCOL = 1,   // malformed or unexpected message
    EL_WERR_MISMATCH = 2,   // model identity or range does not match
    EL_WERR_SESSION = 3,    // unknown or expired session
    EL_WERR_LIMIT = 4,      // too many sessions / too much memory / too long
    EL_WERR_INTERNAL = 5,   // compute failed
    EL_WERR_UPSTREAM = 6,   // the next worker in the chain failed
} el_wire_errcode;

typedef struct {
    uint32_t layer_begin, layer_end;
    uint64_t identity;  // el_model_identity of the layers, as the device computes it
} el_wire_stage;

// How the last stage samples when the device asks for tokens (want TOKEN):
// the device's own settings, so the text equals a local run's.
typedef struct {
    float temp;
    int32_t top_k;
    float top_p, min_p, repeat_penalty;
    int32_t repeat_last_n;
    uint64_t seed;  // the generator's state (a seed is its first state)
} el_wire_sampling;

typedef struct {
    uint32_t n_layers, dim, vocab;
    uint32_t ctx;         // KV positions the session needs
    uint32_t max_batch;   // largest FORWARD the device will send
    uint8_t act_dtype;    // el_dtype of activations on the wire (f32, f16, bf16, q8_0)
    uint8_t want;         // el_want of the last stage
    uint8_t n_stages;     // stages[0] is the receiver; the rest are passed down the chain
    el_wire_stage stages[EL_WIRE_MAX_STAGES];
    el_wire_sampling sampling;  // want TOKEN only
} el_wire_open;

// FORWARD flags
#define EL_FWD_ALL_ROWS 1u   // return every row, not only the last
#define EL_FWD_TOKENS 2u     // the rows' token ids follow the payload (for a sampler's repetition penalty)
#define EL_FWD_NO_OUTPUT 4u  // an intermediate prefill chunk: the RESULT carries no rows
#define EL_FWD_FLAGS 7u

typedef struct {
    uint32_t pos, n_tokens;
    uint8_t dtype, flags;
    const uint8_t *payload;  // borrowed from the frame
    size_t payload_len;
    const uint8_t *tokens;   // EL_FWD_TOKENS: n_tokens little-endian i32 (borrowed); else NULL
} el_wire_forward;

// Per-stage timing carried back in a RESULT, first stage first.
typedef struct {
    uint64_t compute_ns;  // time the stage spent in the steps that computed this request
    uint64_t wait_ns;     // time it waited on the next stage (link + downstream)
    uint64_t queue_ns;    // time the request waited at the stage for its turn (other devices' rows)
} el_wire_hop;

typedef struct {
    uint8_t kind;   // el_want
    uint8_t dtype;  // encoding of rows (tokens: i32)
    uint8_t n_hops;
    uint32_t n_rows, row_len;  // n_rows 0: a FORWARD with EL_FWD_NO_OUTPUT
    el_wire_hop hops[EL_WIRE_MAX_STAGES];
    const uint8_t *payload;
    size_t payload_len;
    uint64_t sampler_state;  // kind TOKEN: the last stage's generator state after sampling
} el_wire_result;

typedef struct {
    uint16_t type;
    uint64_t session;
    uint32_t seq;
    const uint8_t *body;  // borrowed
    size_t body_len;
} el_wire_msg;

// A growable output buffer.
typedef struct {
    uint8_t *data;
    size_t len, cap;
} el_buf;
void el_buf_free(el_buf *b);

// ---------------------------------------------------------------- training

typedef struct {
    uint32_t n_layers, dim, vocab, layer_begin, layer_end;
    uint64_t identity;
    uint32_t batch, T, rank;
    float alpha;
    uint32_t targets;
    uint64_t seed;
    uint8_t ushape, act_dtype, grad_dtype, shared;
    float beta1, beta2, eps, weight_decay, clip;
} el_wire_train_open;

#define EL_TRAIN_HAS_TARGETS 1u
#define EL_TRAIN_FORWARD_ONLY 2u

typedef struct {
    uint32_t rows;
    uint8_t dtype, flags;
    float grad_scale;
    const uint8_t *x;  // rows x dim values in dtype
    const uint8_t *targets, *mask;  // i32[rows], f32[rows] when HAS_TARGETS
} el_wire_train_fwd;

typedef struct {
    double loss, n_tokens, compute_s;
    uint32_t rows;
    uint8_t dtype, kind;  // kind 0: gradient at the cut, 1: hidden states (U-shape)
    const uint8_t *payload;
} el_wire_train_result;

el_status el_wire_encode_train_open(el_buf *b, uint32_t seq, const el_wire_train_open *o);
el_status el_wire_decode_train_open(const el_wire_msg *m, el_wire_train_open *o, el_error *err);
// x[rows, dim] f32 encoded as dtype; targets/mask may be NULL (U-shape: labels stay on the device).
el_status el_wire_encode_train_fwd(el_buf *b, uint16_t type, uint64_t session, uint32_t seq, uint32_t rows,
                                   uint32_t dim, int dtype, uint8_t flags, float grad_scale, const float *x,
                                   const int32_t *targets, const float *mask, el_error *err);
el_status el_wire_decode_train_fwd(const el_wire_msg *m, uint32_t dim, el_wire_train_fwd *f, el_error *err);
el_status el_wire_encode_train_result(el_buf *b, uint64_t session, uint32_t seq, double loss, double n_tokens,
                                      double compute_s, uint8_t kind, uint32_t rows, uint32_t dim, int dtype,
                                      const float *payload, el_error *err);
el_status el_wire_decode_train_result(const el_wire_msg *m, uint32_t dim, el_wire_train_result *r, el_error *err);
// STEP: u64 t, f32 lr, f64 device sum of squared gradients. STEPPED: f64 norm.
el_status el_wire_encode_train_step(el_buf *b, uint64_t session, uint32_t seq, uint64_t t, float lr, double dev_ss);
el_status el_wire_decode_train_step(const el_wire_msg *m, uint64_t *t, float *lr, double *dev_ss, el_error *err);
el_status el_wire_encode_f64(el_buf *b, uint16_t type, uint64_t session, uint32_t seq, double v);
el_status el_wire_decode_f64(const el_wire_msg *m, double *v, el_error *err);
// PARAMS / AVG: [f64 weight,] u64 n, f32[n]
el_status el_wire_encode_params(el_buf *b, uint16_t type, uint64_t session, uint32_t seq, double weight,
                                const float *p, uint64_t n);
el_status el_wire_decode_params(const el_wire_msg *m, double *weight, const uint8_t **p, uint64_t *n, el_error *err);

// LORA: one adapter (added to the session's set): f32 scale, f32 alpha, u32
// n, then n matrices, each u32 layer, u32 target (el_lora_target), u32 rank,
// u32 in, u32 out, f32 A[rank * in], f32 B[out * rank]. a and b are f32
// arrays when encoding; when decoding they point at the little-endian values
// inside the message (read them with el_wire_f32s).
typedef struct {
    uint32_t layer, target, rank, in, out;
    const void *a, *b;
} el_wire_lora_mat;
#define EL_WIRE_LORA_TARGETS 7
el_status el_wire_encode_lora(el_buf *b, uint64_t session, uint32_t seq, float scale, float alpha, uint32_t n,
                              const el_wire_lora_mat *mats);
// Checks the layout (every length against the body; target < 7; rank, in
// and out nonzero; finite scale, alpha > 0) and fills mats[0..*n) (at most cap;
// more is an error). Shapes against a model are the caller's to check.
el_status el_wire_decode_lora(const el_wire_msg *m, float *scale, float *alpha, el_wire_lora_mat *mats, uint32_t cap,
                              uint32_t *n, el_error *err);
// b := the message m with a new session and sequence number (to pass it on).
el_status el_wire_readdress(el_buf *b, const el_wire_msg *m, uint64_t session, uint32_t seq);
// dst[0..n) = the little-endian f32 values at src; EL_ERR_FORMAT if one is
// not finite.
el_status el_wire_f32s(const void *src, size_t n, float *dst);

// Blocks (store.h; docs/protocol.md, "Blocks"). BLOCK_GET: hash[32], u64
// offset, u32 max_len. BLOCK_DATA: hash[32], u64 offset, u64 total (the
// block's size), u32 n, then n bytes: the block's bytes [offset, offset+n).
#define EL_WIRE_HASH 32
typedef struct {
    uint8_t hash[EL_WIRE_HASH];
    uint64_t offset;
    uint32_t max_len;  // BLOCK_GET
    uint64_t total;    // BLOCK_DATA
    uint32_t n;
    const uint8_t *data;  // BLOCK_DATA: borrowed from the frame
} el_wire_block;
#define EL_WIRE_BLOCK_GET_BYTES 44
#define EL_WIRE_BLOCK_DATA_BYTES 52  // before the data
el_status el_wire_encode_block_get(el_buf *b, uint32_t seq, const uint8_t hash[EL_WIRE_HASH], uint64_t offset,
                                   uint32_t max_len);
el_status el_wire_decode_block_get(const el_wire_msg *m, el_wire_block *out, el_error *err);
// data NULL: the n bytes are left for the caller to fill at
// b->data + EL_WIRE_HEADER + EL_WIRE_BLOCK_DATA_BYTES.
el_status el_wire_encode_block_data(el_buf *b, uint64_t session, uint32_t seq, const uint8_t hash[EL_WIRE_HASH],
                                    uint64_t offset, uint64_t total, const void *data, uint32_t n);
// Checks offset + n <= total and that n matches the body.
el_status el_wire_decode_block_data(const el_wire_msg *m, el_wire_block *out, el_error *err);

// Reads a little-endian u32 (for fields outside the decoders above).
uint32_t el_wire_u32(const uint8_t *p);

// Header parse: checks magic, version and that body_len matches the frame.
// An ERROR of protocol version 1 is accepted too (its layout is the same), so
// an old peer's refusal reaches the user as its text.
el_status el_wire_parse(const void *frame, size_t len, el_wire_msg *out, el_error *err);
// For a frame from a peer of another protocol version (valid magic): an
// ERROR in that peer's version 1 layout that says so, so that old devices
// show why instead of timing out. EL_ERR_UNSUPPORTED when the frame is not
// such a message.
el_status el_wire_version_error(el_buf *b, const void *frame, size_t len);

el_status el_wire_decode_open(const el_wire_msg *m, el_wire_open *out, el_error *err);
el_status el_wire_decode_forward(const el_wire_msg *m, uint32_t dim, el_wire_forward *out, el_error *err);
el_status el_wire_decode_result(const el_wire_msg *m, el_wire_result *out, el_error *err);
// code and text (NUL-terminated, truncated to EL_WIRE_MAX_TEXT)
el_status el_wire_decode_error(const el_wire_msg *m, uint32_t *code, char *text, size_t cap, el_error *err);

// Encoders write a whole frame (header + body) into b (reset first).
el_status el_wire_encode_open(el_buf *b, uint32_t seq, const el_wire_open *o);
el_status el_wire_encode_simple(el_buf *b, uint16_t type, uint64_t session, uint32_t seq);  // OPENED/CLOSE/OK
// FORWARD: rows x[n, dim] (f32) encoded as dtype; flags EL_FWD_*; with
// EL_FWD_TOKENS, tokens[n] follow.
el_status el_wire_encode_forward(el_buf *b, uint64_t session, uint32_t seq, uint32_t pos, uint32_t n,
                                 uint32_t dim, int dtype, const float *x, uint8_t flags, const int32_t *tokens,
                                 el_error *err);
// RESULT: for hidden/logits, rows[n_rows, row_len] f32 encoded as dtype; for
// tokens, rows is NULL, tokens holds n_rows ids and sampler_state follows.
el_status el_wire_encode_result(el_buf *b, uint64_t session, uint32_t seq, uint8_t kind, int dtype,
                                uint32_t n_rows, uint32_t row_len, const float *rows, const int32_t *tokens,
                                uint64_t sampler_state, const el_wire_hop *hops, int n_hops, el_error *err);
// b := a downstream RESULT m re-addressed to (session, seq) with `front`
// (this stage's timing) put before its hops; the rows are copied as they are.
el_status el_wire_relay_result(el_buf *b, const el_wire_msg *m, uint64_t session, uint32_t seq,
                               const el_wire_hop *front, el_error *err);
el_status el_wire_encode_error(el_buf *b, uint64_t session, uint32_t seq, uint32_t code, const char *text);
// The same with the text formatted (truncated to EL_WIRE_MAX_TEXT).
el_status el_wire_encode_errorf(el_buf *b, uint64_t session, uint32_t seq, uint32_t code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;
el_status el_wire_encode_ping(el_buf *b, uint16_t type, uint32_t seq, const void *payload, size_t n);
// PROBE of `size` body bytes asking for a reply of reply_len bytes.
el_status el_wire_encode_probe(el_buf *b, uint32_t seq, size_t size, uint32_t reply_len);

// Activation encodings: bytes for n values in dtype (0 if unsupported or n not
// a multiple of the block size), and conversions to/from f32.
size_t el_wire_act_bytes(int dtype, size_t n);
int el_wire_act_supported(int dtype);
el_status el_wire_act_decode(int dtype, const uint8_t *src, size_t n, float *dst, el_error *err);

#ifdef __cplusplus
}
#endif
#endif
