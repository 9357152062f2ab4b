// Chat helpers shared by `edgellm chat` and `edgellm run --chat`: rendering a
// conversation with the model's template into token ids, and holding back
// generated text that could be the start of the end-of-turn marker.
#ifndef EDGELLM_TOOLS_CHATTURN_H
#define EDGELLM_TOOLS_CHATTURN_H

#include <stdio.h>

#include "edgellm/chat.h"
#include "edgellm/model.h"
#include "edgellm/tokenize.h"

typedef struct {
    el_chat_template tmpl;
    char bos[64], eos[64];  // the tokenizer's BOS/EOS pieces (for templates that write them)
    const char *eot_text;   // text that ends an assistant turn
    int eot_id;             // its token id when the vocabulary has it as one token, else -1
} tool_chat;

// Chooses the template (name, or the model's metadata) and looks up the pieces.
el_status tool_chat_init(tool_chat *c, const el_model *m, const el_tokenizer *tok, const char *name, el_error *err);
// Renders msgs (adding the assistant opening) and encodes them with special
// tokens parsed and the tokenizer's BOS.
el_status tool_chat_encode(const tool_chat *c, const el_tokenizer *tok, const el_chat_msg *msgs, int n, int **ids,
                           int *n_ids, el_error *err);

// Decodes token next (after prev), feeds the piece to the stopper and prints
// what is safe to out. Returns 1 once the end of the turn appeared, 0
// otherwise, -1 when out of memory.
int tool_chat_emit(el_stopper *s, FILE *out, const el_tokenizer *tok, int prev, int next);
// Prints what was held back at the end of a reply.
void tool_chat_flush(el_stopper *s, FILE *out);

#endif
