// Small helpers shared by the subcommands: option parsing with checked
// numbers, and the common "load model + tokenizer" step.
#ifndef EDGELLM_CLI_H
#define EDGELLM_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "edgellm/core.h"

typedef struct {
    const char *cmd;  // "run", "logits" ... for messages
    int argc;
    char **argv;
    int i;
    int failed;  // set once a message was printed; the command exits 2
} cli;

void cli_init(cli *c, const char *cmd, int argc, char **argv);
// Next argument; NULL at the end. Sets *is_opt when it starts with '-'.
const char *cli_next(cli *c, int *is_opt);
// Matches an option against a short ("-m", may be NULL) and a long name ("--model").
int cli_is(const char *arg, const char *short_name, const char *long_name);
// -c, --ctx or --ctx-size (llama.cpp's spelling).
int cli_is_ctx(const char *arg);
// The value of the option just read; prints an error and returns NULL if missing.
const char *cli_str(cli *c, const char *opt);
int cli_int(cli *c, const char *opt, long lo, long hi, int *out);
int cli_u64(cli *c, const char *opt, uint64_t *out);
int cli_float(cli *c, const char *opt, double lo, double hi, float *out);
int cli_size(cli *c, const char *opt, uint64_t *out);  // accepts K/M/G suffixes
// Prints "edgellm CMD: message" to stderr, marks failure; returns 2.
int cli_fail(cli *c, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
int cli_unknown(cli *c, const char *arg);
// Prints "edgellm: <error message>" and returns 1.
int cli_error(const el_error *e);

#endif
