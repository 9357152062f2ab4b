// Loading steps shared by the subcommands.
#ifndef EDGELLM_TOOLS_COMMON_H
#define EDGELLM_TOOLS_COMMON_H

#include "cli.h"
#include "edgellm/lora.h"
#include "edgellm/model.h"
#include "edgellm/sample.h"
#include "edgellm/spec.h"
#include "edgellm/split.h"
#include "edgellm/tokenize.h"

// Opens a tokenizer file on its own (GGUF vocab or llama2.c tokenizer file).
el_status tool_open_tokenizer_file(const char *path, el_tokenizer **out, el_error *err);
// Checks a prompt is valid UTF-8 (and not empty unless allow_empty).
el_status tool_check_prompt(const char *text, size_t len, const char *what, int allow_empty, el_error *err);
// Reads a whole file, or standard input when path is "-" (as -f - in llama.cpp).
el_status tool_read_input(const char *path, size_t max_bytes, char **data, size_t *len, el_error *err);
// The prompt of -p TEXT or -f FILE (read whole, into *owned which the caller
// frees), checked as above. *text and *len receive it. With escapes (-e),
// \n \t \r \\ \' \" \a \b \f \v \0 \xHH in it become the bytes they name.
el_status tool_load_prompt(const char *arg, const char *file, int allow_empty, int escapes, char **owned,
                           const char **text, size_t *len, el_error *err);
// Replaces escape sequences in s[0..n) in place (see tool_load_prompt); returns the new length.
size_t tool_unescape(char *s, size_t n);
// Prints what a token stands for, as llama2.c prints it (skips control bytes).
void tool_print_piece(FILE *out, const el_tokenizer *tok, int prev, int id);

// Splits a --lora argument "path[:scale]" (scale default 1); 0 if the scale is malformed.
int tool_parse_lora_arg(const char *arg, char *path, size_t cap, float *scale);

// Sampling options shared by run and chat: --temp --top-k --top-p --min-p
// --repeat-penalty --repeat-last-n -s/--seed. Returns 1 if a was one of them
// (its value parsed through c); *have_seed is set by --seed. The defaults are
// el_sampler_defaults() (docs/cli.md).
int tool_sampler_option(cli *c, const char *a, el_sampler_params *sp, int *have_seed);
#define TOOL_SAMPLER_HELP \
    "      --temp T            temperature; 0 = greedy (default 0.8)\n" \
    "      --top-k K           keep the K most likely tokens (default 40; 0 = off)\n" \
    "      --top-p P           nucleus sampling threshold (default 0.95; 1 = off)\n" \
    "      --min-p P           drop tokens below P x the top probability (default 0.05; 0 = off)\n" \
    "      --repeat-penalty R  penalise recent tokens (default 1.0 = off)\n" \
    "      --repeat-last-n N   how many recent tokens the penalty looks at (default 64)\n" \
    "  -s, --seed S            random seed (default: from the clock)\n"


// --kv-type f32|f16|q8_0 (run, chat, worker, serve). Returns 1 if a was it.
int tool_kv_option(cli *c, const char *a, int *kv_type);
#define TOOL_KV_HELP "      --kv-type T         KV cache: f32 (default), f16 or q8_0 (half and ~a quarter of the memory)\n"

// The context a command uses: requested, or the model's when 0. Past the
// context the model was trained on, the command goes on with a warning on
// stderr (the one policy of run, chat, perplexity, finetune, bench, serve and
// worker, through el_model_ctx_warning).
int tool_ctx(const char *cmd, const el_model *m, int requested);

// Inference adapters of run and chat: --lora FILE[:S], repeatable.
typedef struct {
    int n;
    char paths[EL_LORA_MAX_SET][4096];
    el_lora *loras[EL_LORA_MAX_SET];
    el_lora_set set;  // scales filled by the option, adapters by tool_loras_load
} tool_loras;
// Returns 1 if a was --lora (a bad value or one too many is reported through c).
int tool_lora_option(cli *c, const char *a, tool_loras *l);
el_status tool_loras_load(tool_loras *l, const el_model *m, el_error *err);
void tool_loras_free(tool_loras *l);

// Speculative decoding options of run and chat: --draft FILE|self:L, --draft-k N|auto.
typedef struct {
    const char *arg;    // NULL: no draft
    int k;              // 0: auto
    int self_layers;    // L of self:L (0: a draft file)
    el_model *m;        // the draft file's model (NULL for self:L)
    el_drafter *d;
} tool_draft;
#define TOOL_DRAFT_HELP \
    "      --draft FILE|self:L speculative decoding: FILE (a small model with the same vocabulary)\n" \
    "                          or the model's own first L layers + head drafts tokens on this\n" \
    "                          device; the model verifies them in one pass (one round trip split)\n" \
    "      --draft-k N|auto    tokens drafted per round, 1..16, or auto (default): chosen each round\n" \
    "                          from the acceptance rate, draft time, round trip and verify time\n"
// Returns 1 if a was one of the options (a bad value is reported through c).
int tool_draft_option(cli *c, const char *a, tool_draft *d);
// Opens the draft (a file: its vocabulary must be the target's; self:L: L
// within the target's layers) and its session: before any other work.
el_status tool_draft_load(tool_draft *d, const el_model *target, int ctx, el_pool *pool, el_error *err);
void tool_draft_free(tool_draft *d);

// Split-inference options shared by run and logits.
typedef struct {
    int enabled;
    int autoplan;  // --split auto: profile, probe, plan, and re-plan while generating
    const char *device_profile, *edge_profile;
    int replan_every;
    float replan_gain;
    uint64_t device_mem;
    el_split_opts o;
    const char *keys_dir, *server_key_file, *act;
    el_keypair keys;
    char server_key[41];
    // --controller: the route's worker, and the workers that failed us
    const char *controller, *controller_key_file, *model_name;
    char controller_key[41];
    char route_via[256];
    char *excluded[16];
    int n_excluded;
    int allow_controller;  // set by the commands that call tool_split_route
} tool_split;

extern const char *tool_split_help;
void tool_split_init(tool_split *ts);
// Consumes option a if it is a split option: returns 1 (0 if not one of ours).
int tool_split_option(cli *c, const char *a, tool_split *ts);
// Checks the combination; returns 0, or 2 after printing the problem.
int tool_split_check(cli *c, tool_split *ts);
// Loads keys; fills the model options so that the device maps only its part.
el_status tool_split_prepare(tool_split *ts, el_model_opts *mo, el_error *err);
// With one fixed cut below the model's last layer (and no U-shape) the
// device never computes logits: the head stays unbound (mo->no_head). Reads
// only model_path's header.
el_status tool_split_drop_head(const tool_split *ts, const char *model_path, el_model_opts *mo, el_error *err);
// --controller: asks for a route and sets the first worker (before the
// pipeline is made; on a retry the pipeline asks again without the worker
// that failed).
el_status tool_split_route(tool_split *ts, const char *model_path, el_error *err);
void tool_split_free(tool_split *ts);
// After the model is open: the cuts must lie inside it.
el_status tool_split_check_model(const tool_split *ts, const el_model *m, el_error *err);

#endif
