// Chat templates: turning a list of {role, content} messages into the prompt
// text a chat-tuned model expects. Models ship their template as Jinja source
// in the GGUF key tokenizer.chat_template; we do not run Jinja. We recognise
// the common families by their markers and render them with C code, and refuse
// a template we do not recognise (unless the user names one with --template).
//
// The rendered text contains the family's special-token pieces ("<|im_start|>",
// "<|eot_id|>", "[INST]" ...). Encode it with special-token parsing on so those
// pieces become their control tokens rather than plain text, but only the
// template's own: el_chat_render_spans says where the messages' contents are,
// and el_tokenizer_encode_spans keeps markers written there as text (a user who
// types "</s>" or "<|im_end|><|im_start|>system" gets those characters, not
// control tokens).
#ifndef EDGELLM_CHAT_H
#define EDGELLM_CHAT_H

#include <stddef.h>

#include "edgellm/core.h"
#include "edgellm/gguf.h"
#include "edgellm/tokenize.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    EL_CHAT_UNKNOWN = 0,
    EL_CHAT_LLAMA2,  // <s>[INST] <<SYS>>\n...\n<</SYS>>\n\nuser [/INST] answer </s>
    EL_CHAT_LLAMA3,  // <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>
    EL_CHAT_CHATML,  // <|im_start|>role\ncontent<|im_end|>\n   (Qwen2, SmolLM2, ...)
    EL_CHAT_ZEPHYR,  // <|role|>\ncontent</s>\n
    EL_CHAT_MISTRAL, // [INST] user [/INST]answer</s>  (one BOS, no <<SYS>>)
    EL_CHAT_N_TEMPLATES
} el_chat_template;

typedef struct {
    const char *role;  // "system", "user" or "assistant"
    const char *content;
} el_chat_msg;

// "llama2", "llama3", "chatml", "zephyr", "mistral" (NULL for EL_CHAT_UNKNOWN).
const char *el_chat_template_name(el_chat_template t);
// The template named name, or an error listing the known names.
el_status el_chat_template_from_name(const char *name, el_chat_template *out, el_error *err);
// Recognises Jinja template source by its markers; EL_CHAT_UNKNOWN if none match.
el_chat_template el_chat_template_detect(const char *jinja, size_t len);

// The template for a model: name if given (user's choice), else recognised
// from g's tokenizer.chat_template, else ChatML when g (or NULL) has no
// template at all. A template that is present but unrecognised is an error
// naming the file and suggesting --template.
el_status el_chat_template_for_model(const el_gguf *g, const char *path, const char *name, el_chat_template *out,
                                     el_error *err);

// Renders msgs[0..n) with template t. add_assistant appends the opening of an
// assistant turn so the model answers next. The BOS piece is not written when
// the tokenizer adds BOS itself (the encoder's add_bos); templates that repeat
// BOS between turns (llama2) write bos_piece there. *out is NUL-terminated,
// allocated (free with free()). Roles other than system/user/assistant, and a
// NULL content, are errors naming the message index.
el_status el_chat_render(el_chat_template t, const el_chat_msg *msgs, int n, int add_assistant,
                         const char *bos_piece, const char *eos_piece, char **out, el_error *err);

// The same, with *spans (allocated, free with free(); *n_spans of them) the
// byte ranges of *out that are the messages' contents.
el_status el_chat_render_spans(el_chat_template t, const el_chat_msg *msgs, int n, int add_assistant,
                               const char *bos_piece, const char *eos_piece, char **out, el_text_span **spans,
                               int *n_spans, el_error *err);

// The text that ends an assistant turn for t ("<|im_end|>", "<|eot_id|>",
// "</s>"); generation stops when it is produced (as text or as its token).
const char *el_chat_end_of_turn(el_chat_template t, const char *eos_piece);

// ---------------------------------------------------------------- stop strings

// Collects generated text and finds stop strings in it, holding back the
// bytes that could still turn out to be the start of one, so a streaming
// client never sees part of a stop string. Stop strings are borrowed.
typedef struct {
    const char *const *stops;
    int n_stops;
    size_t max_stop;  // longest stop string
    char *text;       // all text so far (NUL-terminated); cut before the stop string once found
    size_t len, cap;
    size_t taken;  // bytes already handed out by el_stopper_take
    int stopped;   // index+1 of the stop string found, 0 while none
} el_stopper;

void el_stopper_init(el_stopper *s, const char *const *stops, int n_stops);
// Appends bytes. Returns 1 once a stop string has appeared (the text is cut
// where it begins; later calls do nothing), 0 otherwise, -1 when out of memory.
int el_stopper_feed(el_stopper *s, const char *bytes, size_t n);
// The bytes that are now certain to be output and were not taken before.
// At the end of generation call with final = 1 to release the held-back tail.
size_t el_stopper_take(el_stopper *s, int final, const char **bytes);
void el_stopper_free(el_stopper *s);

#ifdef __cplusplus
}
#endif
#endif
