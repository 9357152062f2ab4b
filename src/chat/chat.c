// Chat templates rendered in C. Each family's layout is written out once in
// render_* below; detection looks for the markers a family's Jinja source
// always contains.
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/chat.h"

static const char *const names[EL_CHAT_N_TEMPLATES] = {
    [EL_CHAT_LLAMA2] = "llama2", [EL_CHAT_LLAMA3] = "llama3", [EL_CHAT_CHATML] = "chatml",
    [EL_CHAT_ZEPHYR] = "zephyr", [EL_CHAT_MISTRAL] = "mistral",
};

const char *el_chat_template_name(el_chat_template t) {
    return t > EL_CHAT_UNKNOWN && t < EL_CHAT_N_TEMPLATES ? names[t] : NULL;
}

el_status el_chat_template_from_name(const char *name, el_chat_template *out, el_error *err) {
    for (int t = 1; t < EL_CHAT_N_TEMPLATES; t++)
        if (name && strcmp(name, names[t]) == 0) {
            *out = (el_chat_template)t;
            return EL_OK;
        }
    *out = EL_CHAT_UNKNOWN;
    return el_err(err, EL_ERR_ARG, "chat template '%s' is not one of llama2, llama3, chatml, zephyr, mistral",
                  name ? name : "");
}

static int contains(const char *s, size_t len, const char *needle) {
    size_t n = strlen(needle);
    if (n > len) return 0;
    for (size_t i = 0; i + n <= len; i++)
        if (s[i] == needle[0] && memcmp(s + i, needle, n) == 0) return 1;
    return 0;
}

el_chat_template el_chat_template_detect(const char *j, size_t len) {
    if (!j) return EL_CHAT_UNKNOWN;
    if (contains(j, len, "<|im_start|>")) return EL_CHAT_CHATML;
    if (contains(j, len, "<|start_header_id|>") && contains(j, len, "<|eot_id|>")) return EL_CHAT_LLAMA3;
    // Llama 2 wraps the system prompt in <<SYS>> and repeats BOS per turn;
    // Mistral's [INST] template has neither.
    if (contains(j, len, "[INST]")) return contains(j, len, "<<SYS>>") ? EL_CHAT_LLAMA2 : EL_CHAT_MISTRAL;
    // Zephyr-style role tags, ended by EOS (Phi-3 uses the same tags with <|end|>).
    if (contains(j, len, "<|user|>") && contains(j, len, "<|assistant|>") && !contains(j, len, "<|end|>"))
        return EL_CHAT_ZEPHYR;
    return EL_CHAT_UNKNOWN;
}

el_status el_chat_template_for_model(const el_gguf *g, const char *path, const char *name, el_chat_template *out,
                                     el_error *err) {
    if (name) return el_chat_template_from_name(name, out, err);
    const el_gguf_kv *kv = g ? el_gguf_find(g, "tokenizer.chat_template") : NULL;
    if (!kv) {
        *out = EL_CHAT_CHATML;  // no template at all: the most common plain layout
        return EL_OK;
    }
    if (kv->type != EL_GGUF_STRING)
        return el_err(err, EL_ERR_FORMAT, "%s: tokenizer.chat_template is not a string", path ? path : "model");
    *out = el_chat_template_detect(kv->v.str.ptr, (size_t)kv->v.str.len);
    if (*out == EL_CHAT_UNKNOWN)
        return el_err(err, EL_ERR_UNSUPPORTED,
                      "%s: tokenizer.chat_template is not one we recognise (%llu bytes); choose one with --template "
                      "llama2|llama3|chatml|zephyr|mistral",
                      path ? path : "model", (unsigned long long)kv->v.str.len);
    return EL_OK;
}

// ---------------------------------------------------------------- rendering

typedef struct {
    char *p;
    size_t len, cap;
    int failed;
    el_text_span *spans;  // where the messages' contents are (the rest is the template's)
    int n_spans, cap_spans;
} buf;

static void put(buf *b, const char *s, size_t n) {
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->len + n + 1 > cap) {
            if (cap > ((size_t)1 << 40)) {
                b->failed = 1;
                return;
            }
            cap *= 2;
        }
        char *q = realloc(b->p, cap);
        if (!q) {
            b->failed = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}
static void puts_(buf *b, const char *s) { put(b, s, strlen(s)); }

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// A message's content: its bytes are marked as the user's, so that markers
// written in it stay text when the prompt is encoded.
static void put_content_n(buf *b, const char *s, size_t n) {
    size_t at = b->len;
    put(b, s, n);
    if (b->failed || !n) return;
    if (b->n_spans == b->cap_spans) {
        int cap = b->cap_spans ? 2 * b->cap_spans : 16;
        el_text_span *g = realloc(b->spans, (size_t)cap * sizeof *g);
        if (!g) {
            b->failed = 1;
            return;
        }
        b->spans = g;
        b->cap_spans = cap;
    }
    b->spans[b->n_spans++] = (el_text_span){at, at + n};
}
static void put_content(buf *b, const char *s) { put_content_n(b, s, strlen(s)); }

// content with leading and trailing whitespace removed, as the templates' trim/strip do
static void put_trimmed(buf *b, const char *s) {
    size_t n = strlen(s), i = 0;
    while (i < n && is_space(s[i])) i++;
    while (n > i && is_space(s[n - 1])) n--;
    put_content_n(b, s + i, n - i);
}

enum { ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT };

static int role_of(const char *r) {
    if (!r) return -1;
    if (!strcmp(r, "system")) return ROLE_SYSTEM;
    if (!strcmp(r, "user")) return ROLE_USER;
    if (!strcmp(r, "assistant")) return ROLE_ASSISTANT;
    return -1;
}

// ChatML: <|im_start|>role\ncontent<|im_end|>\n
static void render_chatml(buf *b, const el_chat_msg *m, int n, int add_assistant) {
    for (int i = 0; i < n; i++) {
        puts_(b, "<|im_start|>");
        puts_(b, m[i].role);
        puts_(b, "\n");
        put_content(b, m[i].content);
        puts_(b, "<|im_end|>\n");
    }
    if (add_assistant) puts_(b, "<|im_start|>assistant\n");
}

// Llama 3: <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>
// (<|begin_of_text|> is the BOS the encoder adds).
static void render_llama3(buf *b, const el_chat_msg *m, int n, int add_assistant) {
    for (int i = 0; i < n; i++) {
        puts_(b, "<|start_header_id|>");
        puts_(b, m[i].role);
        puts_(b, "<|end_header_id|>\n\n");
        put_trimmed(b, m[i].content);
        puts_(b, "<|eot_id|>");
    }
    if (add_assistant) puts_(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

// Zephyr: <|role|>\ncontent</s>\n
static void render_zephyr(buf *b, const el_chat_msg *m, int n, int add_assistant, const char *eos) {
    for (int i = 0; i < n; i++) {
        puts_(b, "<|");
        puts_(b, m[i].role);
        puts_(b, "|>\n");
        put_content(b, m[i].content);
        puts_(b, eos);
        puts_(b, "\n");
    }
    if (add_assistant) puts_(b, "<|assistant|>\n");
}

// Llama 2: [INST] <<SYS>>\nsys\n<</SYS>>\n\nuser [/INST] answer </s><s>[INST] user [/INST]
// Mistral: [INST] sys\n\nuser [/INST]answer</s>[INST] user [/INST]
// The system prompt joins the first user turn in both. BOS opens every user
// turn in Llama 2 (the first one comes from the encoder); Mistral has one BOS.
// The prompt already ends where the assistant speaks, so add_assistant adds nothing.
static void render_inst(buf *b, const el_chat_msg *m, int n, int llama2, const char *bos, const char *eos) {
    const char *sys = NULL;
    int first_user = 1;
    for (int i = 0; i < n; i++) {
        int r = role_of(m[i].role);
        if (r == ROLE_SYSTEM) {
            sys = m[i].content;
        } else if (r == ROLE_USER) {
            if (llama2 && !first_user) puts_(b, bos);
            puts_(b, "[INST] ");
            if (sys && first_user) {
                if (llama2) {
                    puts_(b, "<<SYS>>\n");
                    put_trimmed(b, sys);
                    puts_(b, "\n<</SYS>>\n\n");
                } else {
                    put_trimmed(b, sys);
                    puts_(b, "\n\n");
                }
            }
            put_trimmed(b, m[i].content);
            puts_(b, " [/INST]");
            first_user = 0;
        } else {
            if (llama2) puts_(b, " ");
            put_trimmed(b, m[i].content);
            if (llama2) puts_(b, " ");
            puts_(b, eos);
        }
    }
}

el_status el_chat_render(el_chat_template t, const el_chat_msg *msgs, int n, int add_assistant,
                         const char *bos_piece, const char *eos_piece, char **out, el_error *err) {
    return el_chat_render_spans(t, msgs, n, add_assistant, bos_piece, eos_piece, out, NULL, NULL, err);
}

el_status el_chat_render_spans(el_chat_template t, const el_chat_msg *msgs, int n, int add_assistant,
                               const char *bos_piece, const char *eos_piece, char **out, el_text_span **spans,
                               int *n_spans, el_error *err) {
    *out = NULL;
    if (spans) *spans = NULL;
    if (n_spans) *n_spans = 0;
    if (!el_chat_template_name(t)) return el_err(err, EL_ERR_ARG, "chat template %d is unknown", (int)t);
    if (n < 0 || (n > 0 && !msgs)) return el_err(err, EL_ERR_ARG, "invalid message list (%d messages)", n);
    for (int i = 0; i < n; i++) {
        if (role_of(msgs[i].role) < 0)
            return el_err(err, EL_ERR_ARG, "message %d: role '%s' is not system, user or assistant", i,
                          msgs[i].role ? msgs[i].role : "(none)");
        if (!msgs[i].content) return el_err(err, EL_ERR_ARG, "message %d: content is missing", i);
    }
    const char *bos = bos_piece ? bos_piece : "<s>";
    const char *eos = eos_piece ? eos_piece : "</s>";
    buf b = {0};
    put(&b, "", 0);  // an empty conversation renders as ""
    switch (t) {
    case EL_CHAT_CHATML: render_chatml(&b, msgs, n, add_assistant); break;
    case EL_CHAT_LLAMA3: render_llama3(&b, msgs, n, add_assistant); break;
    case EL_CHAT_ZEPHYR: render_zephyr(&b, msgs, n, add_assistant, eos); break;
    case EL_CHAT_LLAMA2: render_inst(&b, msgs, n, 1, bos, eos); break;
    case EL_CHAT_MISTRAL: render_inst(&b, msgs, n, 0, bos, eos); break;
    default: break;
    }
    if (b.failed) {
        free(b.p);
        free(b.spans);
        return el_err(err, EL_ERR_NOMEM, "out of memory rendering %d chat messages", n);
    }
    *out = b.p;
    if (spans) {
        *spans = b.spans;
        *n_spans = b.n_spans;
    } else {
        free(b.spans);
    }
    return EL_OK;
}

const char *el_chat_end_of_turn(el_chat_template t, const char *eos_piece) {
    switch (t) {
    case EL_CHAT_CHATML: return "<|im_end|>";
    case EL_CHAT_LLAMA3: return "<|eot_id|>";
    default: return eos_piece ? eos_piece : "</s>";
    }
}
