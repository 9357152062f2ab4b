// Chat helpers shared by chat and run --chat (see chatturn.h).
#include "chatturn.h"

#include <stdlib.h>
#include <string.h>

static void piece_text(const el_tokenizer *tok, int id, const char *fallback, char *out, size_t cap) {
    size_t len = 0;
    const char *p = id >= 0 ? el_tokenizer_piece(tok, id, &len) : NULL;
    if (!p || len == 0 || len >= cap) {
        snprintf(out, cap, "%s", fallback);
        return;
    }
    memcpy(out, p, len);
    out[len] = 0;
}

el_status tool_chat_init(tool_chat *c, const el_model *m, const el_tokenizer *tok, const char *name, el_error *err) {
    memset(c, 0, sizeof *c);
    el_status st = el_chat_template_for_model(m->gguf, m->path, name, &c->tmpl, err);
    if (st) return st;
    piece_text(tok, el_tokenizer_bos(tok), "<s>", c->bos, sizeof c->bos);
    piece_text(tok, el_tokenizer_eos(tok), "</s>", c->eos, sizeof c->eos);
    c->eot_text = el_chat_end_of_turn(c->tmpl, c->eos);
    c->eot_id = el_tokenizer_find(tok, c->eot_text, strlen(c->eot_text));
    if (c->eot_id >= 0 && el_tokenizer_type(tok, c->eot_id) != EL_TOKEN_CONTROL &&
        el_tokenizer_type(tok, c->eot_id) != EL_TOKEN_USER_DEFINED)
        c->eot_id = -1;  // a plain piece that happens to spell it: stop on the text instead
    return EL_OK;
}

el_status tool_chat_encode(const tool_chat *c, const el_tokenizer *tok, const el_chat_msg *msgs, int n, int **ids,
                           int *n_ids, el_error *err) {
    char *text = NULL;
    el_text_span *spans = NULL;
    int n_spans = 0;
    el_status st = el_chat_render_spans(c->tmpl, msgs, n, 1, c->bos, c->eos, &text, &spans, &n_spans, err);
    if (st) return st;
    // the template's markers become control tokens, markers typed in a message stay text
    unsigned flags = EL_ENCODE_SPECIAL | (el_tokenizer_add_bos(tok) ? EL_ENCODE_ADD_BOS : 0);
    st = el_tokenizer_encode_spans(tok, text, strlen(text), flags, spans, n_spans, ids, n_ids, err);
    free(text);
    free(spans);
    return st;
}

int tool_chat_emit(el_stopper *s, FILE *out, const el_tokenizer *tok, int prev, int next) {
    char piece[512];
    size_t n = el_tokenizer_decode(tok, prev, next, piece, sizeof piece);
    int r = el_stopper_feed(s, piece, n);
    if (r < 0) return r;
    const char *p;
    size_t k = el_stopper_take(s, 0, &p);
    if (k) {
        fwrite(p, 1, k, out);
        fflush(out);
    }
    return r;
}

void tool_chat_flush(el_stopper *s, FILE *out) {
    const char *p;
    size_t k = el_stopper_take(s, 1, &p);
    if (k) fwrite(p, 1, k, out);
    fflush(out);
}
