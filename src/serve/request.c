// OpenAI request bodies (/v1/completions, /v1/chat/completions) to a request
// struct. The body comes from the network: sizes, types and ranges are
// checked, and every error names the field.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/json.h"
#include "edgellm/sample.h"
#include "edgellm/serve.h"

static el_status bad(el_serve_request *r, el_error *err, el_status code, const char *param, const char *fmt,
                     const char *detail) {
    snprintf(r->bad_param, sizeof r->bad_param, "%s", param);
    return el_err(err, code, fmt, param, detail);
}

// A copy of a JSON string that must be valid UTF-8 text without NUL bytes.
static el_status text_copy(el_serve_request *r, const el_json *j, const char *param, char **out, el_error *err) {
    if (!el_json_is(j, EL_JSON_STRING)) return bad(r, err, EL_ERR_ARG, param, "request: '%s' must be a string%s", "");
    const char *str = el_json_str(j);
    size_t len = el_json_strlen(j);
    if (strlen(str) != len) return bad(r, err, EL_ERR_ARG, param, "request: '%s' contains a NUL character%s", "");
    if (!el_utf8_valid(str, len)) return bad(r, err, EL_ERR_ARG, param, "request: '%s' is not valid UTF-8%s", "");
    *out = malloc(len + 1);
    if (!*out) return el_err(err, EL_ERR_NOMEM, "request: out of memory for '%s'", param);
    memcpy(*out, str, len + 1);
    return EL_OK;
}

static el_status get_num(el_serve_request *r, const el_json *root, const char *key, double lo, double hi, int integer,
                         double *out, int *present, el_error *err) {
    const el_json *j = el_json_get(root, key);
    *present = 0;
    if (!j || el_json_is(j, EL_JSON_NULL)) return EL_OK;
    double num = el_json_num(j, NAN);
    if (!el_json_is(j, EL_JSON_NUMBER) || !isfinite(num))
        return bad(r, err, EL_ERR_ARG, key, "request: '%s' must be a number%s", "");
    if (integer && num != floor(num)) return bad(r, err, EL_ERR_ARG, key, "request: '%s' must be an integer%s", "");
    if (num < lo || num > hi) {
        char range[96];
        snprintf(range, sizeof range, " in %g..%g (got %g)", lo, hi, num);
        return bad(r, err, EL_ERR_RANGE, key, "request: '%s' must be%s", range);
    }
    *out = num;
    *present = 1;
    return EL_OK;
}

// base64 (RFC 4648, standard alphabet, '=' padding) into out (at least
// 3·n/4 bytes); returns the length, or -1 on any other character or a bad tail.
static long base64_decode(const char *in, size_t n, uint8_t *out) {
    size_t o = 0, i = 0;
    uint32_t acc = 0;
    int bits = 0, pad = 0;
    for (; i < n; i++) {
        unsigned char ch = (unsigned char)in[i];
        int v = ch >= 'A' && ch <= 'Z' ? ch - 'A' : ch >= 'a' && ch <= 'z' ? ch - 'a' + 26 : ch >= '0' && ch <= '9' ? ch - '0' + 52
              : ch == '+' ? 62 : ch == '/' ? 63 : ch == '=' ? -2 : -1;
        if (v == -1) return -1;
        if (v == -2) {
            pad++;
            continue;
        }
        if (pad) return -1;  // data after padding
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    if (pad > 2 || (n % 4 && pad) || bits >= 6) return -1;
    return (long)o;
}

// An image_url part: {"type":"image_url","image_url":{"url":"data:image/...;base64,..."}}
// (or the url as a plain string). Only data: URLs: nothing is fetched.
static el_status image_part(el_serve_request *r, const el_json *p, el_error *err) {
    const el_json *iu = el_json_get(p, "image_url");
    const el_json *u = el_json_is(iu, EL_JSON_OBJECT) ? el_json_get(iu, "url") : iu;
    const char *url = el_json_str(u);
    if (!url || strlen(url) != el_json_strlen(u)) return bad(r, err, EL_ERR_ARG, "messages", "request: '%s' image_url parts need an image_url.url string%s", "");
    if (strncmp(url, "data:", 5))
        return bad(r, err, EL_ERR_UNSUPPORTED, "messages",
                   "request: '%s' image_url must be a data: URL; remote URLs are not fetched (the image stays here)%s", "");
    const char *comma = strchr(url, ',');
    if (!comma) return bad(r, err, EL_ERR_ARG, "messages", "request: '%s' image_url data: URL has no ','%s", "");
    size_t meta = (size_t)(comma - url);
    if (meta < 12 || strncmp(url + meta - 7, ";base64", 7) || strncmp(url + 5, "image/", 6))
        return bad(r, err, EL_ERR_ARG, "messages",
                   "request: '%s' image_url must be data:image/<type>;base64,<data>%s", "");
    if (r->n_images == EL_SERVE_MAX_IMAGES)
        return bad(r, err, EL_ERR_RANGE, "messages", "request: '%s' has more than 16 images%s", "");
    size_t n = strlen(comma + 1);
    uint8_t *buf = malloc(n / 4 * 3 + 3);
    if (!buf) return el_err(err, EL_ERR_NOMEM, "request: out of memory for an image");
    long len = base64_decode(comma + 1, n, buf);
    if (len <= 0) {
        free(buf);
        return bad(r, err, EL_ERR_ARG, "messages", "request: '%s' image_url data is not valid base64%s", "");
    }
    r->images[r->n_images] = buf;
    r->image_lens[r->n_images++] = (size_t)len;
    return EL_OK;
}

// Chat content: a string, or an array of parts: "text" ones are joined, and
// each "image_url" one leaves EL_SERVE_IMAGE_MARKER where it stood.
static el_status content_text(el_serve_request *r, const el_json *c, char **out, el_error *err) {
    if (el_json_is(c, EL_JSON_STRING)) return text_copy(r, c, "messages", out, err);
    if (!el_json_is(c, EL_JSON_ARRAY))
        return bad(r, err, EL_ERR_ARG, "messages", "request: '%s' content must be a string or an array of parts%s", "");
    size_t total = 0;
    for (const el_json *p = el_json_first(c); p; p = el_json_next(c, p)) {
        const char *type = el_json_str(el_json_get(p, "type"));
        const el_json *t = el_json_get(p, "text");
        if (type && !strcmp(type, "image_url")) {
            el_status st = image_part(r, p, err);
            if (st) return st;
            total += 1;
            continue;
        }
        if (!type || strcmp(type, "text") != 0 || !el_json_is(t, EL_JSON_STRING))
            return bad(r, err, EL_ERR_UNSUPPORTED, "messages",
                       "request: '%s' content parts must be {\"type\":\"text\",\"text\":...} or image_url%s", "");
        // each part on its own: the joined text holds image markers, which are not UTF-8
        if (strlen(el_json_str(t)) != el_json_strlen(t) || !el_utf8_valid(el_json_str(t), el_json_strlen(t)))
            return bad(r, err, EL_ERR_ARG, "messages", "request: '%s' content is not NUL-free UTF-8 text%s", "");
        total += el_json_strlen(t);
    }
    char *buf = malloc(total + 1);
    if (!buf) return el_err(err, EL_ERR_NOMEM, "request: out of memory for message content");
    size_t n = 0;
    for (const el_json *p = el_json_first(c); p; p = el_json_next(c, p)) {
        if (!strcmp(el_json_str(el_json_get(p, "type")), "image_url")) {
            buf[n++] = EL_SERVE_IMAGE_MARKER[0];
            continue;
        }
        const el_json *t = el_json_get(p, "text");
        memcpy(buf + n, el_json_str(t), el_json_strlen(t));
        n += el_json_strlen(t);
    }
    buf[n] = 0;
    *out = buf;
    return EL_OK;
}

static el_status parse_root(const el_json *root, el_serve_kind kind, el_serve_request *r, el_error *err) {
    el_status st;
    if (!el_json_is(root, EL_JSON_OBJECT)) return bad(r, err, EL_ERR_ARG, "body", "request: '%s' must be a JSON object%s", "");
    if ((st = text_copy(r, el_json_get(root, "model"), "model", &r->model, err))) return st;
    if (kind == EL_SERVE_COMPLETION) {
        const el_json *p = el_json_get(root, "prompt");
        // a one-element array of strings is the same request as the string
        if (el_json_is(p, EL_JSON_ARRAY)) {
            if (el_json_len(p) != 1 || !el_json_is(el_json_first(p), EL_JSON_STRING))
                return bad(r, err, EL_ERR_UNSUPPORTED, "prompt",
                           "request: '%s' must be a string or an array of one string (batches and token arrays are not supported)%s", "");
            p = el_json_first(p);
        }
        if ((st = text_copy(r, p, "prompt", &r->prompt, err))) return st;
    } else {
        const el_json *m = el_json_get(root, "messages");
        size_t nm = el_json_len(m);
        if (!el_json_is(m, EL_JSON_ARRAY) || nm == 0)
            return bad(r, err, EL_ERR_ARG, "messages", "request: '%s' must be a non-empty array%s", "");
        if (nm > EL_SERVE_MAX_MESSAGES)
            return bad(r, err, EL_ERR_RANGE, "messages", "request: '%s' has more than 1024 entries%s", "");
        r->roles = calloc(nm, sizeof *r->roles);
        r->contents = calloc(nm, sizeof *r->contents);
        if (!r->roles || !r->contents) return el_err(err, EL_ERR_NOMEM, "request: out of memory for messages");
        size_t i = 0;
        for (const el_json *msg = el_json_first(m); msg; msg = el_json_next(m, msg), i++) {
            r->n_messages = (int)i + 1;
            if (!el_json_is(msg, EL_JSON_OBJECT))
                return bad(r, err, EL_ERR_ARG, "messages", "request: '%s' entries must be objects%s", "");
            if ((st = text_copy(r, el_json_get(msg, "role"), "messages", &r->roles[i], err))) return st;
            if (strcmp(r->roles[i], "system") && strcmp(r->roles[i], "user") && strcmp(r->roles[i], "assistant") &&
                strcmp(r->roles[i], "developer"))
                return bad(r, err, EL_ERR_ARG, "messages", "request: '%s' role must be system, developer, user or assistant%s", "");
            if (!strcmp(r->roles[i], "developer")) memcpy(r->roles[i], "system", 7);  // same purpose, shorter
            if ((st = content_text(r, el_json_get(msg, "content"), &r->contents[i], err))) return st;
        }
    }
    double v;
    int has;
    const char *max_key = "max_tokens";
    if (kind == EL_SERVE_CHAT && el_json_get(root, "max_completion_tokens")) max_key = "max_completion_tokens";
    if ((st = get_num(r, root, max_key, 1, EL_SERVE_MAX_TOKENS_CAP, 1, &v, &has, err))) return st;
    if (has) r->max_tokens = (int)v;
    if ((st = get_num(r, root, "temperature", 0, 2, 0, &v, &has, err))) return st;
    if (has) r->temperature = (float)v;
    if ((st = get_num(r, root, "top_p", 0, 1, 0, &v, &has, err))) return st;
    if (has) r->top_p = (float)v;
    if ((st = get_num(r, root, "top_k", 0, 1e6, 1, &v, &has, err))) return st;
    if (has) r->top_k = (int)v;
    if ((st = get_num(r, root, "min_p", 0, 1, 0, &v, &has, err))) return st;
    if (has) r->min_p = (float)v;
    if ((st = get_num(r, root, "repeat_penalty", 0.01, 100, 0, &v, &has, err))) return st;
    if (has) r->repeat_penalty = (float)v;
    // OpenAI seeds are 64-bit integers; doubles hold integers exactly to 2^53
    if ((st = get_num(r, root, "seed", -9007199254740992.0, 9007199254740992.0, 1, &v, &has, err))) return st;
    if (has) {
        r->has_seed = 1;
        r->seed = (uint64_t)(int64_t)v;
    }
    if ((st = get_num(r, root, "n", 1, 1, 1, &v, &has, err))) return st;
    const el_json *stop = el_json_get(root, "stop");
    if (stop && !el_json_is(stop, EL_JSON_NULL)) {
        int list = el_json_is(stop, EL_JSON_ARRAY);
        size_t n = list ? el_json_len(stop) : 1;
        if (n > EL_SERVE_MAX_STOP) return bad(r, err, EL_ERR_RANGE, "stop", "request: '%s' has more than 4 strings%s", "");
        const el_json *s = list ? el_json_first(stop) : stop;
        for (size_t i = 0; i < n; i++, s = list ? el_json_next(stop, s) : NULL) {
            if ((st = text_copy(r, s, "stop", &r->stop[i], err))) return st;
            r->n_stop = (int)i + 1;
            if (el_json_strlen(s) == 0 || el_json_strlen(s) > EL_SERVE_MAX_STOP_LEN)
                return bad(r, err, EL_ERR_RANGE, "stop", "request: '%s' strings must be 1..256 bytes%s", "");
        }
    }
    const el_json *stream = el_json_get(root, "stream");
    if (stream && !el_json_is(stream, EL_JSON_NULL)) {
        if (!el_json_is(stream, EL_JSON_BOOL)) return bad(r, err, EL_ERR_ARG, "stream", "request: '%s' must be true or false%s", "");
        r->stream = el_json_bool(stream, 0);
    }
    r->include_usage = el_json_bool(el_json_get(el_json_get(root, "stream_options"), "include_usage"), 0);
    return EL_OK;
}

el_status el_serve_request_parse(const char *body, size_t len, el_serve_kind kind, el_serve_request *r, el_error *err) {
    memset(r, 0, sizeof *r);
    r->kind = kind;
    el_sampler_params d = el_sampler_defaults();  // the same as run and chat
    r->temperature = d.temp;
    r->top_p = d.top_p;
    r->top_k = d.top_k;
    r->min_p = d.min_p;
    r->repeat_penalty = d.repeat_penalty;
    el_json *root = NULL;
    el_status st = el_json_parse(body, len, "request body", &root, err);
    if (st) {
        snprintf(r->bad_param, sizeof r->bad_param, "body");
        return st;
    }
    st = parse_root(root, kind, r, err);
    el_json_free(root);
    return st;
}

void el_serve_request_free(el_serve_request *r) {
    if (!r) return;
    free(r->model);
    free(r->prompt);
    for (int i = 0; i < r->n_messages; i++) {
        if (r->roles) free(r->roles[i]);
        if (r->contents) free(r->contents[i]);
    }
    free(r->roles);
    free(r->contents);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    for (int i = 0; i < r->n_images; i++) free(r->images[i]);
    memset(r, 0, sizeof *r);
}
