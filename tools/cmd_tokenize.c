// edgellm tokenize: print the token ids of a text.
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "common.h"
#include "edgellm/model.h"

static const char *usage =
    "usage: edgellm tokenize (-m MODEL | -z TOKENIZER) (-p TEXT | -f FILE) [--no-bos] [--special] [--pieces]\n"
    "       edgellm tokenize --pretok NAME (-p TEXT | -f FILE)\n"
    "\n"
    "Prints the token ids of TEXT, space-separated, on one line. -f reads the file\n"
    "byte for byte (newlines included). BOS is prepended when the model asks for it\n"
    "(tokenizer.ggml.add_bos_token; SentencePiece vocabularies by default, byte-level\n"
    "BPE ones only when the metadata says so), never with --no-bos.\n"
    "--special turns control pieces written in the text (\"<s>\", \"<|im_start|>\") into\n"
    "their tokens; without it they are encoded as plain text. User-defined pieces\n"
    "are always taken whole.\n"
    "With both -m and -z, -z is the tokenizer and -m only gives the vocabulary size.\n"
    "-m may be a vocabulary-only GGUF (no tensors). -f - reads standard input.\n"
    "--pieces prints one token a line instead: its id and the text it stands for,\n"
    "quoted, with bytes that are not printable as \\xNN (pieces concatenate to the text);\n"
    "control tokens (BOS ...) show their name unquoted.\n"
    "--pretok NAME prints where byte-level BPE pre-tokenizer NAME (a tokenizer.ggml.pre\n"
    "value: gpt-2, llama-bpe, qwen2, smollm, ...) cuts the text: the end byte offset of\n"
    "each piece, space-separated; no model is needed.\n"
    "\n"
    "example: edgellm tokenize -z ../shared/models/llama2-tokenizer.bin -p \"Hello world\"\n";

// Bytes as text a reader can see: quotes and backslashes escaped, control
// bytes as \xNN.
static void print_escaped(const char *p, size_t n) {
    for (size_t j = 0; j < n; j++) {
        unsigned char ch = (unsigned char)p[j];
        if (ch == '\'' || ch == '\\') printf("\\%c", ch);
        else if (ch < 0x20 || ch == 0x7f) printf("\\x%02x", ch);
        else putchar(ch);
    }
}

static int is_gguf(const char *path) {
    FILE *f = fopen(path, "rb");
    char magic[4] = {0};
    size_t got = f ? fread(magic, 1, 4, f) : 0;
    if (f) fclose(f);
    return got == 4 && memcmp(magic, "GGUF", 4) == 0;
}

int cmd_tokenize(int argc, char **argv) {
    cli c;
    cli_init(&c, "tokenize", argc, argv);
    const char *model_path = NULL, *tok_path = NULL, *text = NULL, *file = NULL, *pretok = NULL;
    int bos = 1, special = 0, pieces = 0;
    const char *a;
    int opt;
    while ((a = cli_next(&c, &opt))) {
        if (cli_is(a, "-h", "--help")) { fputs(usage, stdout); return 0; }
        else if (cli_is(a, "-m", "--model")) model_path = cli_str(&c, a);
        else if (cli_is(a, "-z", "--tokenizer")) tok_path = cli_str(&c, a);
        else if (cli_is(a, "-p", "--prompt")) text = cli_str(&c, a);
        else if (cli_is(a, "-f", "--file")) file = cli_str(&c, a);
        else if (cli_is(a, NULL, "--no-bos")) bos = 0;
        else if (cli_is(a, NULL, "--special")) special = 1;
        else if (cli_is(a, NULL, "--pieces")) pieces = 1;
        else if (cli_is(a, NULL, "--pretok")) pretok = cli_str(&c, a);
        else return cli_unknown(&c, a);
    }
    if (c.failed) return 2;
    if (!model_path && !tok_path && !pretok) return cli_fail(&c, "-m MODEL or -z TOKENIZER is required");
    if (!text == !file) return cli_fail(&c, "give one of -p TEXT or -f FILE");

    el_error err = {0};
    el_model *m = NULL;
    el_tokenizer *tok = NULL;
    char *file_text = NULL;
    int *ids = NULL, n = 0, rc = 1;
    size_t len;
    if (tool_load_prompt(text, file, 1, 0, &file_text, &text, &len, &err)) goto out;
    if (pretok) {
        el_pretok pre = el_pretok_from_name(pretok, strlen(pretok));
        size_t *ends = NULL, n_ends = 0;
        if (pre == EL_PRETOK_NONE) {
            el_err(&err, EL_ERR_ARG, "--pretok: unknown pre-tokenizer \"%s\" (known: gpt-2, default, llama-bpe, llama3, "
                   "qwen2, smollm)", pretok);
            goto out;
        }
        if (el_pretok_split(pre, text, len, &ends, &n_ends, &err)) goto out;
        for (size_t i = 0; i < n_ends; i++) printf(i ? " %zu" : "%zu", ends[i]);
        printf("\n");
        free(ends);
        rc = 0;
        goto out;
    }
    if (model_path && !tok_path && is_gguf(model_path)) {
        // The tokenizer is all this needs, so a vocabulary-only GGUF will do.
        if (tool_open_tokenizer_file(model_path, &tok, &err)) goto out;
    } else if (model_path) {
        el_model_opts mo = {.layer_begin = 0, .layer_end = 0, .no_head = 1};
        if (el_model_open(model_path, &mo, &m, &err)) goto out;
        if (el_model_tokenizer(m, tok_path, &tok, &err)) goto out;
    } else if (tool_open_tokenizer_file(tok_path, &tok, &err)) {
        goto out;
    }
    unsigned flags = (bos && el_tokenizer_add_bos(tok) ? EL_ENCODE_ADD_BOS : 0) | (special ? EL_ENCODE_SPECIAL : 0);
    if (el_tokenizer_encode_ex(tok, text, len, flags, &ids, &n, &err)) goto out;
    if (pieces) {
        for (int i = 0; i < n; i++) {
            char buf[256];
            size_t k = el_tokenizer_decode(tok, i ? ids[i - 1] : -1, ids[i], buf, sizeof buf), plen;
            const char *piece = el_tokenizer_piece(tok, ids[i], &plen);
            printf("%d ", ids[i]);
            if (k == 0 && piece) {  // a control token (BOS ...): its name, unquoted
                print_escaped(piece, plen < 64 ? plen : 64);
                putchar('\n');
                continue;
            }
            putchar('\'');
            print_escaped(buf, k);
            printf("'\n");
        }
    } else {
        for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
    }
    rc = 0;
out:
    if (rc) cli_error(&err);
    free(ids);
    free(file_text);
    el_tokenizer_free(tok);
    el_model_close(m);
    return rc;
}
