// Encoding and decoding of split-inference messages. Every read is preceded
// by a check against the bytes that remain in the frame.
#include "edgellm/wire.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/tensor.h"

// ---------------------------------------------------------------- buffers

void el_buf_free(el_buf *b) {
    if (!b) return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

static int buf_reserve(el_buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    uint8_t *d = realloc(b->data, cap);
    if (!d) return -1;
    b->data = d;
    b->cap = cap;
    return 0;
}

static uint8_t *buf_put(el_buf *b, size_t n) {
    if (buf_reserve(b, n)) return NULL;
    uint8_t *p = b->data + b->len;
    b->len += n;
    return p;
}

static void put_u8(uint8_t *p, uint8_t v) { p[0] = v; }
static void put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get_u64(const uint8_t *p) { return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32; }

uint32_t el_wire_u32(const uint8_t *p) { return get_u32(p); }

// A bounds-checked cursor over a message body.
typedef struct {
    const uint8_t *p;
    size_t n, at;
    int ok;
} cursor;

static const uint8_t *take(cursor *c, size_t n) {
    if (!c->ok || c->n - c->at < n) {
        c->ok = 0;
        return NULL;
    }
    const uint8_t *r = c->p + c->at;
    c->at += n;
    return r;
}
static uint32_t c_u32(cursor *c) { const uint8_t *p = take(c, 4); return p ? get_u32(p) : 0; }
static uint64_t c_u64(cursor *c) { const uint8_t *p = take(c, 8); return p ? get_u64(p) : 0; }
static uint8_t c_u8(cursor *c) { const uint8_t *p = take(c, 1); return p ? p[0] : 0; }
static float c_f32(cursor *c) {
    uint32_t u = c_u32(c);
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static double c_f64(cursor *c) {
    uint64_t u = c_u64(c);
    double d;
    memcpy(&d, &u, 8);
    return d;
}
static void put_f32(uint8_t *p, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    put_u32(p, u);
}
static void put_f64(uint8_t *p, double d) {
    uint64_t u;
    memcpy(&u, &d, 8);
    put_u64(p, u);
}


// Starts a frame: header with body length patched by finish().
static el_status begin(el_buf *b, uint16_t type, uint64_t session, uint32_t seq) {
    b->len = 0;
    uint8_t *h = buf_put(b, EL_WIRE_HEADER);
    if (!h) return EL_ERR_NOMEM;
    put_u32(h, EL_WIRE_MAGIC);
    put_u16(h + 4, EL_WIRE_VERSION);
    put_u16(h + 6, type);
    put_u64(h + 8, session);
    put_u32(h + 16, seq);
    put_u32(h + 20, 0);
    return EL_OK;
}

static el_status finish(el_buf *b) {
    if (b->len > EL_WIRE_MAX_FRAME) return EL_ERR_RANGE;
    put_u32(b->data + 20, (uint32_t)(b->len - EL_WIRE_HEADER));
    return EL_OK;
}

// ---------------------------------------------------------------- activations

int el_wire_act_supported(int dtype) {
    if (dtype != EL_DTYPE_F32 && dtype != EL_DTYPE_F16 && dtype != EL_DTYPE_BF16 && dtype != EL_DTYPE_Q8_0) return 0;
    const el_dtype_traits *t = el_dtype_info(dtype);
    return t && t->to_f32 && t->from_f32;
}

size_t el_wire_act_bytes(int dtype, size_t n) {
    if (!el_wire_act_supported(dtype)) return 0;
    return el_dtype_row_size(dtype, (int64_t)n);
}

el_status el_wire_act_decode(int dtype, const uint8_t *src, size_t n, float *dst, el_error *err) {
    if (!el_wire_act_supported(dtype))
        return el_err(err, EL_ERR_UNSUPPORTED, "activation dtype %s is not supported on the wire", el_dtype_name(dtype));
    el_dtype_info(dtype)->to_f32(src, dst, (int64_t)n);
    return EL_OK;
}

// ---------------------------------------------------------------- parse

el_status el_wire_parse(const void *frame, size_t len, el_wire_msg *m, el_error *err) {
    const uint8_t *p = frame;
    if (len < EL_WIRE_HEADER) return el_err(err, EL_ERR_FORMAT, "message of %zu bytes is shorter than a header", len);
    if (get_u32(p) != EL_WIRE_MAGIC) return el_err(err, EL_ERR_FORMAT, "bad magic 0x%08x", get_u32(p));
    if (get_u16(p + 4) != EL_WIRE_VERSION && !(get_u16(p + 4) == 1 && get_u16(p + 6) == EL_MSG_ERROR))
        return el_err(err, EL_ERR_UNSUPPORTED,
                      "protocol version %u, this build speaks %u: run the same edgellm release on both sides",
                      get_u16(p + 4), EL_WIRE_VERSION);
    m->type = get_u16(p + 6);
    m->session = get_u64(p + 8);
    m->seq = get_u32(p + 16);
    uint32_t body = get_u32(p + 20);
    if (body != len - EL_WIRE_HEADER)
        return el_err(err, EL_ERR_FORMAT, "body length field %u does not match the %zu bytes received", body,
                      len - EL_WIRE_HEADER);
    m->body = p + EL_WIRE_HEADER;
    m->body_len = body;
    return EL_OK;
}

el_status el_wire_version_error(el_buf *b, const void *frame, size_t len) {
    const uint8_t *p = frame;
    if (len < EL_WIRE_HEADER || get_u32(p) != EL_WIRE_MAGIC || get_u16(p + 4) == EL_WIRE_VERSION) return EL_ERR_UNSUPPORTED;
    uint16_t theirs = get_u16(p + 4);
    if (theirs != 1) return EL_ERR_UNSUPPORTED;  // version 1's ERROR is the only older layout we know
    char text[200];
    snprintf(text, sizeof text,
             "this peer speaks edgellm protocol version %u, yours speaks %u: run the same edgellm release on both sides",
             EL_WIRE_VERSION, theirs);
    if (el_wire_encode_error(b, get_u64(p + 8), get_u32(p + 16), EL_WERR_PROTOCOL, text)) return EL_ERR_NOMEM;
    put_u16(b->data + 4, theirs);
    return EL_OK;
}

el_status el_wire_encode_open(el_buf *b, uint32_t seq, const el_wire_open *o) {
    if (o->n_stages == 0 || o->n_stages > EL_WIRE_MAX_STAGES) return EL_ERR_ARG;
    if (begin(b, EL_MSG_OPEN, 0, seq)) return EL_ERR_NOMEM;
    size_t samp = o->want == EL_WANT_TOKEN ? 32 : 0;
    uint8_t *p = buf_put(b, 24 + (size_t)o->n_stages * 16 + samp);
    if (!p) return EL_ERR_NOMEM;
    put_u32(p, o->n_layers);
    put_u32(p + 4, o->dim);
    put_u32(p + 8, o->vocab);
    put_u32(p + 12, o->ctx);
    put_u32(p + 16, o->max_batch);
    put_u8(p + 20, o->act_dtype);
    put_u8(p + 21, o->want);
    put_u8(p + 22, o->n_stages);
    put_u8(p + 23, 0);
    for (int i = 0; i < o->n_stages; i++) {
        uint8_t *s = p + 24 + 16 * i;
        put_u32(s, o->stages[i].layer_begin);
        put_u32(s + 4, o->stages[i].layer_end);
        put_u64(s + 8, o->stages[i].identity);
    }
    if (samp) {
        uint8_t *q = p + 24 + (size_t)o->n_stages * 16;
        const el_wire_sampling *w = &o->sampling;
        put_f32(q, w->temp), put_u32(q + 4, (uint32_t)w->top_k), put_f32(q + 8, w->top_p), put_f32(q + 12, w->min_p);
        put_f32(q + 16, w->repeat_penalty), put_u32(q + 20, (uint32_t)w->repeat_last_n), put_u64(q + 24, w->seed);
    }
    return finish(b);
}

el_status el_wire_decode_open(const el_wire_msg *m, el_wire_open *o, el_error *err) {
    const uint8_t *p = m->body;
    if (m->type != EL_MSG_OPEN) return el_err(err, EL_ERR_FORMAT, "expected OPEN, got message type %u", m->type);
    if (m->body_len < 24) return el_err(err, EL_ERR_FORMAT, "OPEN body of %zu bytes is too short", m->body_len);
    memset(o, 0, sizeof *o);
    o->n_layers = get_u32(p);
    o->dim = get_u32(p + 4);
    o->vocab = get_u32(p + 8);
    o->ctx = get_u32(p + 12);
    o->max_batch = get_u32(p + 16);
    o->act_dtype = p[20];
    o->want = p[21];
    o->n_stages = p[22];
    if (o->n_stages == 0 || o->n_stages > EL_WIRE_MAX_STAGES)
        return el_err(err, EL_ERR_FORMAT, "OPEN lists %u stages (1..%d allowed)", o->n_stages, EL_WIRE_MAX_STAGES);
    if (o->want > EL_WANT_TOKEN) return el_err(err, EL_ERR_FORMAT, "OPEN asks for unknown result kind %u", o->want);
    size_t samp = o->want == EL_WANT_TOKEN ? 32 : 0;
    if (m->body_len != 24 + (size_t)o->n_stages * 16 + samp)
        return el_err(err, EL_ERR_FORMAT, "OPEN body of %zu bytes does not hold %u stages%s", m->body_len, o->n_stages,
                      samp ? " and sampling settings" : "");
    if (samp) {
        cursor c = {p + 24 + (size_t)o->n_stages * 16, 32, 0, 1};
        el_wire_sampling *w = &o->sampling;
        w->temp = c_f32(&c), w->top_k = (int32_t)c_u32(&c), w->top_p = c_f32(&c), w->min_p = c_f32(&c);
        w->repeat_penalty = c_f32(&c), w->repeat_last_n = (int32_t)c_u32(&c), w->seed = c_u64(&c);
        if (!(w->temp >= 0 && w->temp <= 100) || w->top_k < 0 || !(w->top_p > 0 && w->top_p <= 1) ||
            !(w->min_p >= 0 && w->min_p <= 1) || !(w->repeat_penalty > 0 && w->repeat_penalty <= 100) ||
            w->repeat_last_n < 0 || w->repeat_last_n > (1 << 20))
            return el_err(err, EL_ERR_FORMAT, "OPEN has sampling settings out of range (temp %g, top-k %d, top-p %g)",
                          w->temp, w->top_k, w->top_p);
    }
    for (int i = 0; i < o->n_stages; i++) {
        const uint8_t *s = p + 24 + 16 * i;
        o->stages[i].layer_begin = get_u32(s);
        o->stages[i].layer_end = get_u32(s + 4);
        o->stages[i].identity = get_u64(s + 8);
        if (o->stages[i].layer_begin >= o->stages[i].layer_end || o->stages[i].layer_end > o->n_layers)
            return el_err(err, EL_ERR_FORMAT, "OPEN stage %d has layers %u:%u outside 0:%u", i,
                          o->stages[i].layer_begin, o->stages[i].layer_end, o->n_layers);
        if (i && o->stages[i].layer_begin != o->stages[i - 1].layer_end)
            return el_err(err, EL_ERR_FORMAT, "OPEN stages %d and %d are not contiguous", i - 1, i);
    }
    return EL_OK;
}

el_status el_wire_encode_simple(el_buf *b, uint16_t type, uint64_t session, uint32_t seq) {
    if (begin(b, type, session, seq)) return EL_ERR_NOMEM;
    return finish(b);
}

el_status el_wire_encode_forward(el_buf *b, uint64_t session, uint32_t seq, uint32_t pos, uint32_t n,
                                 uint32_t dim, int dtype, const float *x, uint8_t flags, const int32_t *tokens,
                                 el_error *err) {
    size_t count = (size_t)n * dim, bytes = el_wire_act_bytes(dtype, count);
    if (!bytes || dim % (uint32_t)el_dtype_info(dtype)->block_size)
        return el_err(err, EL_ERR_UNSUPPORTED, "cannot encode rows of %u values as %s", dim, el_dtype_name(dtype));
    if (flags & ~EL_FWD_FLAGS || ((flags & EL_FWD_TOKENS) && !tokens))
        return el_err(err, EL_ERR_ARG, "FORWARD flags 0x%x", flags);
    if (begin(b, EL_MSG_FORWARD, session, seq)) return el_err(err, EL_ERR_NOMEM, "out of memory");
    size_t extra = flags & EL_FWD_TOKENS ? (size_t)n * 4 : 0;
    uint8_t *p = buf_put(b, 12 + bytes + extra);
    if (!p) return el_err(err, EL_ERR_NOMEM, "out of memory for a %zu-byte message", bytes);
    put_u32(p, pos);
    put_u32(p + 4, n);
    put_u8(p + 8, (uint8_t)dtype);
    put_u8(p + 9, flags);
    put_u16(p + 10, 0);
    el_dtype_info(dtype)->from_f32(x, p + 12, (int64_t)count);
    for (size_t i = 0; extra && i < n; i++) put_u32(p + 12 + bytes + 4 * i, (uint32_t)tokens[i]);
    if (finish(b)) return el_err(err, EL_ERR_RANGE, "message of %zu bytes exceeds the frame limit", b->len);
    return EL_OK;
}

el_status el_wire_decode_forward(const el_wire_msg *m, uint32_t dim, el_wire_forward *f, el_error *err) {
    if (m->type != EL_MSG_FORWARD) return el_err(err, EL_ERR_FORMAT, "expected FORWARD, got type %u", m->type);
    if (m->body_len < 12) return el_err(err, EL_ERR_FORMAT, "FORWARD body of %zu bytes is too short", m->body_len);
    const uint8_t *p = m->body;
    f->pos = get_u32(p);
    f->n_tokens = get_u32(p + 4);
    f->dtype = p[8];
    f->flags = p[9];
    if (f->flags & ~EL_FWD_FLAGS) return el_err(err, EL_ERR_FORMAT, "FORWARD has unknown flags 0x%x", f->flags);
    if (!el_wire_act_supported(f->dtype))
        return el_err(err, EL_ERR_UNSUPPORTED, "FORWARD uses activation dtype %u, not supported", f->dtype);
    if (f->n_tokens == 0 || f->n_tokens > (1u << 20))
        return el_err(err, EL_ERR_FORMAT, "FORWARD carries %u positions", f->n_tokens);
    size_t want = el_wire_act_bytes(f->dtype, (size_t)f->n_tokens * dim);
    size_t extra = f->flags & EL_FWD_TOKENS ? (size_t)f->n_tokens * 4 : 0;
    if (!want || m->body_len - 12 != want + extra)
        return el_err(err, EL_ERR_FORMAT, "FORWARD payload of %zu bytes, expected %zu for %u x %u %s%s", m->body_len - 12,
                      want + extra, f->n_tokens, dim, el_dtype_name(f->dtype), extra ? " and their token ids" : "");
    f->payload = p + 12;
    f->payload_len = want;
    f->tokens = extra ? p + 12 + want : NULL;
    return EL_OK;
}

// Bytes of a RESULT's rows (and, for tokens, the sampler state); 0: unsupported.
static size_t result_bytes(uint8_t kind, int dtype, uint32_t n_rows, uint32_t row_len) {
    if (kind == EL_WANT_TOKEN) return (size_t)n_rows * 4 + 8;
    if (!el_wire_act_supported(dtype)) return 0;
    return n_rows ? el_wire_act_bytes(dtype, (size_t)n_rows * row_len) : 0;
}

#define HOP_BYTES 24

el_status el_wire_encode_result(el_buf *b, uint64_t session, uint32_t seq, uint8_t kind, int dtype,
                                uint32_t n_rows, uint32_t row_len, const float *rows, const int32_t *tokens,
                                uint64_t sampler_state, const el_wire_hop *hops, int n_hops, el_error *err) {
    if (n_hops < 0 || n_hops > EL_WIRE_MAX_STAGES) return el_err(err, EL_ERR_ARG, "%d hops", n_hops);
    if (kind == EL_WANT_TOKEN) dtype = EL_DTYPE_I32, row_len = 1;
    size_t bytes = result_bytes(kind, dtype, n_rows, row_len);
    if (!bytes && n_rows) return el_err(err, EL_ERR_UNSUPPORTED, "cannot encode results as %s", el_dtype_name(dtype));
    if (begin(b, EL_MSG_RESULT, session, seq)) return el_err(err, EL_ERR_NOMEM, "out of memory");
    uint8_t *p = buf_put(b, 12 + (size_t)n_hops * HOP_BYTES + bytes);
    if (!p) return el_err(err, EL_ERR_NOMEM, "out of memory for a %zu-byte result", bytes);
    put_u8(p, kind);
    put_u8(p + 1, (uint8_t)dtype);
    put_u8(p + 2, (uint8_t)n_hops);
    put_u8(p + 3, 0);
    put_u32(p + 4, n_rows);
    put_u32(p + 8, row_len);
    for (int i = 0; i < n_hops; i++) {
        put_u64(p + 12 + HOP_BYTES * i, hops[i].compute_ns);
        put_u64(p + 20 + HOP_BYTES * i, hops[i].wait_ns);
        put_u64(p + 28 + HOP_BYTES * i, hops[i].queue_ns);
    }
    uint8_t *d = p + 12 + HOP_BYTES * n_hops;
    if (kind == EL_WANT_TOKEN) {
        for (uint32_t i = 0; i < n_rows; i++) put_u32(d + 4 * i, (uint32_t)tokens[i]);
        put_u64(d + 4 * (size_t)n_rows, sampler_state);
    } else if (n_rows) {
        el_dtype_info(dtype)->from_f32(rows, d, (int64_t)n_rows * row_len);
    }
    if (finish(b)) return el_err(err, EL_ERR_RANGE, "result of %zu bytes exceeds the frame limit", b->len);
    return EL_OK;
}

el_status el_wire_decode_result(const el_wire_msg *m, el_wire_result *r, el_error *err) {
    if (m->type != EL_MSG_RESULT) return el_err(err, EL_ERR_FORMAT, "expected RESULT, got type %u", m->type);
    if (m->body_len < 12) return el_err(err, EL_ERR_FORMAT, "RESULT body of %zu bytes is too short", m->body_len);
    const uint8_t *p = m->body;
    r->kind = p[0];
    r->dtype = p[1];
    r->n_hops = p[2];
    r->n_rows = get_u32(p + 4);
    r->row_len = get_u32(p + 8);
    if (r->kind > EL_WANT_TOKEN) return el_err(err, EL_ERR_FORMAT, "RESULT of unknown kind %u", r->kind);
    if (r->n_hops > EL_WIRE_MAX_STAGES) return el_err(err, EL_ERR_FORMAT, "RESULT lists %u hops", r->n_hops);
    if (r->n_rows > (1u << 20) || r->row_len == 0 || r->row_len > (1u << 24))
        return el_err(err, EL_ERR_FORMAT, "RESULT has %u rows of %u values", r->n_rows, r->row_len);
    size_t hops_len = (size_t)r->n_hops * HOP_BYTES;
    if (m->body_len < 12 + hops_len) return el_err(err, EL_ERR_FORMAT, "RESULT truncated in its timing list");
    for (int i = 0; i < r->n_hops; i++) {
        r->hops[i].compute_ns = get_u64(p + 12 + HOP_BYTES * i);
        r->hops[i].wait_ns = get_u64(p + 20 + HOP_BYTES * i);
        r->hops[i].queue_ns = get_u64(p + 28 + HOP_BYTES * i);
    }
    if (r->kind == EL_WANT_TOKEN && (r->dtype != EL_DTYPE_I32 || r->row_len != 1))
        return el_err(err, EL_ERR_FORMAT, "token RESULT must be i32 rows of 1");
    size_t want = result_bytes(r->kind, r->dtype, r->n_rows, r->row_len);
    if (!want && r->n_rows) return el_err(err, EL_ERR_FORMAT, "RESULT uses unsupported dtype %u", r->dtype);
    if (m->body_len - 12 - hops_len != want)
        return el_err(err, EL_ERR_FORMAT, "RESULT payload of %zu bytes, expected %zu", m->body_len - 12 - hops_len, want);
    r->payload = p + 12 + hops_len;
    r->payload_len = want;
    r->sampler_state = r->kind == EL_WANT_TOKEN ? get_u64(r->payload + 4 * (size_t)r->n_rows) : 0;
    return EL_OK;
}

el_status el_wire_relay_result(el_buf *b, const el_wire_msg *m, uint64_t session, uint32_t seq,
                               const el_wire_hop *front, el_error *err) {
    el_wire_result r;
    el_status st = el_wire_decode_result(m, &r, err);
    if (st) return st;
    if (r.n_hops >= EL_WIRE_MAX_STAGES) return el_err(err, EL_ERR_FORMAT, "RESULT lists %u hops already", r.n_hops);
    if (begin(b, EL_MSG_RESULT, session, seq)) return el_err(err, EL_ERR_NOMEM, "out of memory");
    uint8_t *p = buf_put(b, m->body_len + HOP_BYTES);
    if (!p) return el_err(err, EL_ERR_NOMEM, "out of memory for a %zu-byte result", m->body_len);
    memcpy(p, m->body, 12);
    p[2] = (uint8_t)(r.n_hops + 1);
    put_u64(p + 12, front->compute_ns);
    put_u64(p + 20, front->wait_ns);
    put_u64(p + 28, front->queue_ns);
    memcpy(p + 12 + HOP_BYTES, m->body + 12, m->body_len - 12);
    if (finish(b)) return el_err(err, EL_ERR_RANGE, "result of %zu bytes exceeds the frame limit", b->len);
    return EL_OK;
}

el_status el_wire_encode_error(el_buf *b, uint64_t session, uint32_t seq, uint32_t code, const char *text) {
    size_t n = strlen(text);
    if (n > EL_WIRE_MAX_TEXT) n = EL_WIRE_MAX_TEXT;
    if (begin(b, EL_MSG_ERROR, session, seq)) return EL_ERR_NOMEM;
    uint8_t *p = buf_put(b, 8 + n);
    if (!p) return EL_ERR_NOMEM;
    put_u32(p, code);
    put_u32(p + 4, (uint32_t)n);
    memcpy(p + 8, text, n);
    return finish(b);
}

el_status el_wire_encode_errorf(el_buf *b, uint64_t session, uint32_t seq, uint32_t code, const char *fmt, ...) {
    char text[EL_WIRE_MAX_TEXT + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    return el_wire_encode_error(b, session, seq, code, text);
}

el_status el_wire_decode_error(const el_wire_msg *m, uint32_t *code, char *text, size_t cap, el_error *err) {
    if (m->type != EL_MSG_ERROR) return el_err(err, EL_ERR_FORMAT, "expected ERROR, got type %u", m->type);
    if (m->body_len < 8) return el_err(err, EL_ERR_FORMAT, "ERROR body of %zu bytes is too short", m->body_len);
    uint32_t n = get_u32(m->body + 4);
    if (n > EL_WIRE_MAX_TEXT || n != m->body_len - 8)
        return el_err(err, EL_ERR_FORMAT, "ERROR text length %u does not match its body", n);
    *code = get_u32(m->body);
    size_t k = n < cap - 1 ? n : cap - 1;
    // Keep the text printable: it goes to a terminal.
    for (size_t i = 0; i < k; i++) {
        unsigned char c = m->body[8 + i];
        text[i] = (char)(c < 0x20 || c == 0x7f ? '?' : c);
    }
    text[k] = 0;
    return EL_OK;
}

el_status el_wire_encode_ping(el_buf *b, uint16_t type, uint32_t seq, const void *payload, size_t n) {
    if (begin(b, type, 0, seq)) return EL_ERR_NOMEM;
    uint8_t *p = buf_put(b, n);
    if (!p && n) return EL_ERR_NOMEM;
    if (n) memcpy(p, payload, n);
    return finish(b);
}

el_status el_wire_encode_probe(el_buf *b, uint32_t seq, size_t size, uint32_t reply_len) {
    if (size < 4) size = 4;
    if (begin(b, EL_MSG_PROBE, 0, seq)) return EL_ERR_NOMEM;
    uint8_t *p = buf_put(b, size);
    if (!p) return EL_ERR_NOMEM;
    put_u32(p, reply_len);
    memset(p + 4, 0xA5, size - 4);  // incompressible enough for a link that might compress
    return finish(b);
}

// ---------------------------------------------------------------- training

el_status el_wire_encode_train_open(el_buf *b, uint32_t seq, const el_wire_train_open *o) {
    if (begin(b, EL_MSG_TRAIN_OPEN, 0, seq)) return EL_ERR_NOMEM;
    uint8_t *p = buf_put(b, 80);
    if (!p) return EL_ERR_NOMEM;
    put_u32(p, o->n_layers), put_u32(p + 4, o->dim), put_u32(p + 8, o->vocab);
    put_u32(p + 12, o->layer_begin), put_u32(p + 16, o->layer_end), put_u64(p + 20, o->identity);
    put_u32(p + 28, o->batch), put_u32(p + 32, o->T), put_u32(p + 36, o->rank), put_f32(p + 40, o->alpha);
    put_u32(p + 44, o->targets), put_u64(p + 48, o->seed);
    p[56] = o->ushape, p[57] = o->act_dtype, p[58] = o->grad_dtype, p[59] = o->shared;
    put_f32(p + 60, o->beta1), put_f32(p + 64, o->beta2), put_f32(p + 68, o->eps), put_f32(p + 72, o->weight_decay);
    put_f32(p + 76, o->clip);
    return finish(b);
}

el_status el_wire_decode_train_open(const el_wire_msg *m, el_wire_train_open *o, el_error *err) {
    if (m->type != EL_MSG_TRAIN_OPEN || m->body_len != 80)
        return el_err(err, EL_ERR_FORMAT, "TRAIN_OPEN body of %zu bytes (80 expected)", m->body_len);
    cursor c = {m->body, m->body_len, 0, 1};
    o->n_layers = c_u32(&c), o->dim = c_u32(&c), o->vocab = c_u32(&c);
    o->layer_begin = c_u32(&c), o->layer_end = c_u32(&c), o->identity = c_u64(&c);
    o->batch = c_u32(&c), o->T = c_u32(&c), o->rank = c_u32(&c), o->alpha = c_f32(&c);
    o->targets = c_u32(&c), o->seed = c_u64(&c);
    o->ushape = c_u8(&c), o->act_dtype = c_u8(&c), o->grad_dtype = c_u8(&c), o->shared = c_u8(&c);
    o->beta1 = c_f32(&c), o->beta2 = c_f32(&c), o->eps = c_f32(&c), o->weight_decay = c_f32(&c), o->clip = c_f32(&c);
    if (o->layer_begin >= o->layer_end || o->layer_end > o->n_layers || o->batch == 0 || o->T == 0 ||
        (uint64_t)o->batch * o->T > (1u << 20) || o->rank == 0 || o->rank > 4096 || !(o->alpha > 0) ||
        !(o->beta1 >= 0 && o->beta1 < 1) || !(o->beta2 >= 0 && o->beta2 < 1) || !(o->eps > 0) ||
        !(o->weight_decay >= 0) || !(o->clip >= 0) || o->ushape > 1 || o->shared > 1)
        return el_err(err, EL_ERR_FORMAT, "TRAIN_OPEN has out-of-range fields (layers %u:%u of %u, batch %u x %u, rank %u)",
                      o->layer_begin, o->layer_end, o->n_layers, o->batch, o->T, o->rank);
    return EL_OK;
}

el_status el_wire_encode_train_fwd(el_buf *b, uint16_t type, uint64_t session, uint32_t seq, uint32_t rows,
                                   uint32_t dim, int dtype, uint8_t flags, float grad_scale, const float *x,
                                   const int32_t *targets, const float *mask, el_error *err) {
    size_t bytes = el_wire_act_bytes(dtype, (size_t)rows * dim);
    if (!bytes) return el_err(err, EL_ERR_UNSUPPORTED, "cannot encode %u x %u values as %s", rows, dim, el_dtype_name(dtype));
    if (targets) flags |= EL_TRAIN_HAS_TARGETS;
    else flags &= (uint8_t)~EL_TRAIN_HAS_TARGETS;
    if (begin(b, type, session, seq)) return el_err(err, EL_ERR_NOMEM, "out of memory");
    size_t extra = targets ? (size_t)rows * 8 : 0;
    uint8_t *p = buf_put(b, 12 + bytes + extra);
    if (!p) return el_err(err, EL_ERR_NOMEM, "out of memory for a %zu-byte message", bytes);
    put_u32(p, rows);
    p[4] = (uint8_t)dtype, p[5] = flags, put_u16(p + 6, 0);
    put_f32(p + 8, grad_scale);
    el_dtype_info(dtype)->from_f32(x, p + 12, (int64_t)rows * dim);
    if (targets) {
        uint8_t *t = p + 12 + bytes;
        for (uint32_t i = 0; i < rows; i++) put_u32(t + 4 * i, (uint32_t)targets[i]);
        for (uint32_t i = 0; i < rows; i++) put_f32(t + 4 * (size_t)rows + 4 * i, mask ? mask[i] : 1.0f);
    }
    if (finish(b)) return el_err(err, EL_ERR_RANGE, "message of %zu bytes exceeds the frame limit", b->len);
    return EL_OK;
}

el_status el_wire_decode_train_fwd(const el_wire_msg *m, uint32_t dim, el_wire_train_fwd *f, el_error *err) {
    cursor c = {m->body, m->body_len, 0, 1};
    f->rows = c_u32(&c);
    f->dtype = c_u8(&c), f->flags = c_u8(&c);
    take(&c, 2);
    f->grad_scale = c_f32(&c);
    if (!c.ok || f->rows == 0 || f->rows > (1u << 20) || !el_wire_act_supported(f->dtype) || !isfinite(f->grad_scale))
        return el_err(err, EL_ERR_FORMAT, "training message with %u rows of dtype %u", f->rows, f->dtype);
    size_t bytes = el_wire_act_bytes(f->dtype, (size_t)f->rows * dim);
    f->x = take(&c, bytes);
    f->targets = f->mask = NULL;
    if (f->flags & EL_TRAIN_HAS_TARGETS) {
        f->targets = take(&c, (size_t)f->rows * 4);
        f->mask = take(&c, (size_t)f->rows * 4);
    }
    if (!c.ok || !bytes || c.at != c.n)
        return el_err(err, EL_ERR_FORMAT, "training message body of %zu bytes does not hold %u rows of %u", m->body_len,
                      f->rows, dim);
    return EL_OK;
}

el_status el_wire_encode_train_result(el_buf *b, uint64_t session, uint32_t seq, double loss, double n_tokens,
                                      double compute_s, uint8_t kind, uint32_t rows, uint32_t dim, int dtype,
                                      const float *payload, el_error *err) {
    size_t bytes = rows ? el_wire_act_bytes(dtype, (size_t)rows * dim) : 0;
    if (rows && !bytes) return el_err(err, EL_ERR_UNSUPPORTED, "cannot encode results as %s", el_dtype_name(dtype));
    if (begin(b, EL_MSG_TRAIN_RESULT, session, seq)) return el_err(err, EL_ERR_NOMEM, "out of memory");
    uint8_t *p = buf_put(b, 32 + bytes);
    if (!p) return el_err(err, EL_ERR_NOMEM, "out of memory");
    put_f64(p, loss), put_f64(p + 8, n_tokens), put_f64(p + 16, compute_s);
    put_u32(p + 24, rows);
    p[28] = (uint8_t)dtype, p[29] = kind, put_u16(p + 30, 0);
    if (rows) el_dtype_info(dtype)->from_f32(payload, p + 32, (int64_t)rows * dim);
    if (finish(b)) return el_err(err, EL_ERR_RANGE, "result exceeds the frame limit");
    return EL_OK;
}

el_status el_wire_decode_train_result(const el_wire_msg *m, uint32_t dim, el_wire_train_result *r, el_error *err) {
    if (m->type != EL_MSG_TRAIN_RESULT) return el_err(err, EL_ERR_FORMAT, "expected TRAIN_RESULT, got type %u", m->type);
    cursor c = {m->body, m->body_len, 0, 1};
    r->loss = c_f64(&c), r->n_tokens = c_f64(&c), r->compute_s = c_f64(&c);
    r->rows = c_u32(&c);
    r->dtype = c_u8(&c), r->kind = c_u8(&c);
    take(&c, 2);
    size_t bytes = r->rows ? el_wire_act_bytes(r->dtype, (size_t)r->rows * dim) : 0;
    r->payload = r->rows ? take(&c, bytes) : NULL;
    if (!c.ok || c.at != c.n || (r->rows && !bytes) || r->kind > 1 || r->rows > (1u << 20))
        return el_err(err, EL_ERR_FORMAT, "TRAIN_RESULT of %zu bytes is malformed", m->body_len);
    return EL_OK;
}

el_status el_wire_encode_train_step(el_buf *b, uint64_t session, uint32_t seq, uint64_t t, float lr, double dev_ss) {
    if (begin(b, EL_MSG_TRAIN_STEP, session, seq)) return EL_ERR_NOMEM;
    uint8_t *p = buf_put(b, 24);
    if (!p) return EL_ERR_NOMEM;
    put_u64(p, t), put_f32(p + 8, lr), put_u32(p + 12, 0), put_f64(p + 16, dev_ss);
    return finish(b);
}

el_status el_wire_decode_train_step(const el_wire_msg *m, uint64_t *t, float *lr, double *dev_ss, el_error *err) {
    cursor c = {m->body, m->body_len, 0, 1};
    *t = c_u64(&c), *lr = c_f32(&c);
    take(&c, 4);
    *dev_ss = c_f64(&c);
    if (!c.ok || c.at != c.n || !isfinite(*lr) || *lr < 0 || !(*dev_ss >= 0) || *t == 0)
        return el_err(err, EL_ERR_FORMAT, "TRAIN_STEP is malformed");
    return EL_OK;
}

el_status el_wire_encode_f64(el_buf *b, uint16_t type, uint64_t session, uint32_t seq, double v) {
    if (begin(b, type, session, seq)) return EL_ERR_NOMEM;
    uint8_t *p = buf_put(b, 8);
    if (!p) return EL_ERR_NOMEM;
    put_f64(p, v);
    return finish(b);
}

el_status el_wire_decode_f64(const el_wire_msg *m, double *v, el_error *err) {
    if (m->body_len != 8) return el_err(err, EL_ERR_FORMAT, "message type %u of %zu bytes (8 expected)", m->type, m->body_len);
    cursor c = {m->body, 8, 0, 1};
    *v = c_f64(&c);
    return EL_OK;
}

el_status el_wire_encode_params(el_buf *b, uint16_t type, uint64_t session, uint32_t seq, double weight,
                                const float *params, uint64_t n) {
    if (n > EL_WIRE_MAX_FRAME / 4) return EL_ERR_RANGE;
    if (begin(b, type, session, seq)) return EL_ERR_NOMEM;
    uint8_t *p = buf_put(b, 16 + 4 * (size_t)n);
    if (!p) return EL_ERR_NOMEM;
    put_f64(p, weight), put_u64(p + 8, n);
    for (uint64_t i = 0; i < n; i++) put_f32(p + 16 + 4 * i, params[i]);
    return finish(b);
}

el_status el_wire_decode_params(const el_wire_msg *m, double *weight, const uint8_t **params, uint64_t *n,
                                el_error *err) {
    cursor c = {m->body, m->body_len, 0, 1};
    *weight = c_f64(&c);
    *n = c_u64(&c);
    if (!c.ok || *n > (m->body_len - 16) / 4 || 16 + 4 * *n != m->body_len || !(*weight >= 0) || !isfinite(*weight))
        return el_err(err, EL_ERR_FORMAT, "parameter message of %zu bytes is malformed", m->body_len);
    *params = m->body + 16;
    return EL_OK;
}

// ---------------------------------------------------------------- adapters

el_status el_wire_encode_lora(el_buf *b, uint64_t session, uint32_t seq, float scale, float alpha, uint32_t n,
                              const el_wire_lora_mat *mats) {
    if (begin(b, EL_MSG_LORA, session, seq)) return EL_ERR_NOMEM;
    uint8_t *p = buf_put(b, 12);
    if (!p) return EL_ERR_NOMEM;
    put_f32(p, scale), put_f32(p + 4, alpha), put_u32(p + 8, n);
    for (uint32_t i = 0; i < n; i++) {
        const el_wire_lora_mat *mt = &mats[i];
        size_t na = (size_t)mt->rank * mt->in, nb = (size_t)mt->out * mt->rank;
        if (na + nb > EL_WIRE_MAX_FRAME / 4) return EL_ERR_RANGE;
        if (!(p = buf_put(b, 20 + 4 * (na + nb)))) return EL_ERR_NOMEM;
        put_u32(p, mt->layer), put_u32(p + 4, mt->target), put_u32(p + 8, mt->rank);
        put_u32(p + 12, mt->in), put_u32(p + 16, mt->out);
        const float *a = mt->a, *bm = mt->b;
        for (size_t j = 0; j < na; j++) put_f32(p + 20 + 4 * j, a[j]);
        for (size_t j = 0; j < nb; j++) put_f32(p + 20 + 4 * (na + j), bm[j]);
        if (b->len > EL_WIRE_MAX_FRAME) return EL_ERR_RANGE;
    }
    return finish(b);
}

el_status el_wire_decode_lora(const el_wire_msg *m, float *scale, float *alpha, el_wire_lora_mat *mats, uint32_t cap,
                              uint32_t *n, el_error *err) {
    *n = 0;
    if (m->type != EL_MSG_LORA) return el_err(err, EL_ERR_FORMAT, "expected LORA, got message type %u", m->type);
    cursor c = {m->body, m->body_len, 0, 1};
    *scale = c_f32(&c), *alpha = c_f32(&c);
    uint32_t count = c_u32(&c);
    if (!c.ok) return el_err(err, EL_ERR_FORMAT, "LORA message of %zu bytes is too short", m->body_len);
    if (!isfinite(*scale) || !isfinite(*alpha) || !(*alpha > 0))
        return el_err(err, EL_ERR_FORMAT, "LORA scale %g / alpha %g is not usable", *scale, *alpha);
    if (count > cap) return el_err(err, EL_ERR_FORMAT, "LORA of %u matrices, at most %u allowed", count, cap);
    for (uint32_t i = 0; i < count; i++) {
        el_wire_lora_mat *mt = &mats[i];
        mt->layer = c_u32(&c), mt->target = c_u32(&c), mt->rank = c_u32(&c), mt->in = c_u32(&c), mt->out = c_u32(&c);
        if (!c.ok) return el_err(err, EL_ERR_FORMAT, "LORA matrix %u: header runs past the %zu-byte body", i, m->body_len);
        if (mt->target >= EL_WIRE_LORA_TARGETS || mt->rank == 0 || mt->in == 0 || mt->out == 0)
            return el_err(err, EL_ERR_FORMAT, "LORA matrix %u: target %u, rank %u of a %ux%u projection is invalid", i,
                          mt->target, mt->rank, mt->out, mt->in);
        // factors below 2^32: each product fits 64 bits; compare against what remains
        uint64_t na = (uint64_t)mt->rank * mt->in, nb = (uint64_t)mt->out * mt->rank, left = (c.n - c.at) / 4;
        if (na > left || nb > left - na)
            return el_err(err, EL_ERR_FORMAT, "LORA matrix %u: %llu values run past the %zu-byte body", i,
                          (unsigned long long)(na + nb), m->body_len);
        mt->a = take(&c, 4 * (size_t)na);
        mt->b = take(&c, 4 * (size_t)nb);
    }
    if (c.at != c.n) return el_err(err, EL_ERR_FORMAT, "LORA message has %zu bytes after its %u matrices", c.n - c.at, count);
    *n = count;
    return EL_OK;
}

el_status el_wire_readdress(el_buf *b, const el_wire_msg *m, uint64_t session, uint32_t seq) {
    if (begin(b, m->type, session, seq)) return EL_ERR_NOMEM;
    uint8_t *p = buf_put(b, m->body_len);
    if (!p) return EL_ERR_NOMEM;
    memcpy(p, m->body, m->body_len);
    return finish(b);
}

el_status el_wire_f32s(const void *src, size_t n, float *dst) {
    const uint8_t *p = src;
    for (size_t i = 0; i < n; i++) {
        uint32_t u = get_u32(p + 4 * i);
        memcpy(&dst[i], &u, 4);
        if (!isfinite(dst[i])) return EL_ERR_FORMAT;
    }
    return EL_OK;
}

// ---------------------------------------------------------------- blocks

el_status el_wire_encode_block_get(el_buf *b, uint32_t seq, const uint8_t hash[EL_WIRE_HASH], uint64_t offset,
                                   uint32_t max_len) {
    if (begin(b, EL_MSG_BLOCK_GET, 0, seq)) return EL_ERR_NOMEM;
    uint8_t *p = buf_put(b, EL_WIRE_BLOCK_GET_BYTES);
    if (!p) return EL_ERR_NOMEM;
    memcpy(p, hash, EL_WIRE_HASH);
    put_u64(p + 32, offset), put_u32(p + 40, max_len);
    return finish(b);
}

el_status el_wire_decode_block_get(const el_wire_msg *m, el_wire_block *out, el_error *err) {
    memset(out, 0, sizeof *out);
    if (m->type != EL_MSG_BLOCK_GET || m->body_len != EL_WIRE_BLOCK_GET_BYTES)
        return el_err(err, EL_ERR_FORMAT, "BLOCK_GET (type %u) body of %zu bytes (%d expected)", m->type, m->body_len,
                      EL_WIRE_BLOCK_GET_BYTES);
    cursor c = {m->body, m->body_len, 0, 1};
    memcpy(out->hash, take(&c, EL_WIRE_HASH), EL_WIRE_HASH);
    out->offset = c_u64(&c), out->max_len = c_u32(&c);
    return EL_OK;
}

el_status el_wire_encode_block_data(el_buf *b, uint64_t session, uint32_t seq, const uint8_t hash[EL_WIRE_HASH],
                                    uint64_t offset, uint64_t total, const void *data, uint32_t n) {
    if (n > EL_WIRE_MAX_FRAME - EL_WIRE_HEADER - EL_WIRE_BLOCK_DATA_BYTES || offset > total || n > total - offset)
        return EL_ERR_RANGE;
    if (begin(b, EL_MSG_BLOCK_DATA, session, seq)) return EL_ERR_NOMEM;
    uint8_t *p = buf_put(b, EL_WIRE_BLOCK_DATA_BYTES + (size_t)n);
    if (!p) return EL_ERR_NOMEM;
    memcpy(p, hash, EL_WIRE_HASH);
    put_u64(p + 32, offset), put_u64(p + 40, total), put_u32(p + 48, n);
    if (data && n) memcpy(p + EL_WIRE_BLOCK_DATA_BYTES, data, n);
    return finish(b);
}

el_status el_wire_decode_block_data(const el_wire_msg *m, el_wire_block *out, el_error *err) {
    memset(out, 0, sizeof *out);
    if (m->type != EL_MSG_BLOCK_DATA) return el_err(err, EL_ERR_FORMAT, "expected BLOCK_DATA, got message type %u", m->type);
    cursor c = {m->body, m->body_len, 0, 1};
    const uint8_t *h = take(&c, EL_WIRE_HASH);
    out->offset = c_u64(&c), out->total = c_u64(&c), out->n = c_u32(&c);
    if (!c.ok) return el_err(err, EL_ERR_FORMAT, "BLOCK_DATA body of %zu bytes is too short", m->body_len);
    memcpy(out->hash, h, EL_WIRE_HASH);
    if (out->n != c.n - c.at)
        return el_err(err, EL_ERR_FORMAT, "BLOCK_DATA says %u bytes but carries %zu", out->n, c.n - c.at);
    if (out->offset > out->total || out->n > out->total - out->offset)
        return el_err(err, EL_ERR_FORMAT, "BLOCK_DATA bytes [%llu, +%u) run past the block's %llu bytes",
                      (unsigned long long)out->offset, out->n, (unsigned long long)out->total);
    out->data = take(&c, out->n);
    return EL_OK;
}
