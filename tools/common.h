// Loading steps shared by the subcommands.
#ifndef EDGELLM_TOOLS_COMMON_H
#define EDGELLM_TOOLS_COMMON_H

#include "edgellm/model.h"
#include "edgellm/tokenize.h"

// Opens a tokenizer file on its own (GGUF vocab or llama2.c tokenizer file).
el_status tool_open_tokenizer_file(const char *path, el_tokenizer **out, el_error *err);
// Reads a prompt from -p text or -f file; checks it is valid UTF-8.
el_status tool_check_prompt(const char *text, size_t len, const char *what, int allow_empty, el_error *err);
// Prints what a token stands for, as llama2.c prints it (skips control bytes).
void tool_print_piece(FILE *out, const el_tokenizer *tok, int prev, int id);

#endif
