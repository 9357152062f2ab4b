// edgellm store: a block store folder (store.h): import GGUF files into it,
// list what it holds, verify every block against its hash.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "edgellm/store.h"

static const char *usage =
    "usage: edgellm store import DIR MODEL.gguf... [--name N]\n"
    "       edgellm store list DIR\n"
    "       edgellm store verify DIR\n"
    "\n"
    "A store keeps each block (a tensor, a GGUF header, a manifest) once by its\n"
    "BLAKE2b-256 hash, however many models use it (docs/formats.md, \"Block stores\").\n"
    "\n"
    "  import   hash each file and add the blocks the store lacks; the model is named\n"
    "           after its file (without .gguf) unless --name N is given (one file only).\n"
    "           Names: 1..128 of A-Z a-z 0-9 . _ -, not starting with '.'\n"
    "  list     the models held (complete), their ids, and the store's blocks and bytes\n"
    "  verify   hash every block; those that do not match their name are removed\n"
    "           (exit 1 when any was), so that a fetch brings them again\n"
    "  -h, --help   this text\n"
    "\n"
    "example: edgellm store import origin/ base.gguf base-q8.gguf && edgellm store list origin/\n";

static int do_import(cli *c, const char *dir, const char **files, int n, const char *name) {
    if (!n) return cli_fail(c, "import: no model files given");
    if (name && n > 1) return cli_fail(c, "import: --name names one model, %d files given", n);
    el_error err;
    el_store *s;
    if (el_store_open(dir, &s, &err)) return cli_error(&err);
    uint64_t before = el_store_bytes(s);
    for (int i = 0; i < n; i++) {
        el_hash id;
        el_progress pr;
        struct stat sb;
        int big = !stat(files[i], &sb) && sb.st_size > (256 << 20);
        double t0 = el_time_s();
        if (el_store_import(s, files[i], name, big ? &pr : NULL, &id, &err)) {
            el_store_close(s);
            return cli_error(&err);
        }
        char hex[65];
        el_hash_hex(&id, hex);
        fprintf(stderr, "imported %s as %s (id %s) in %.2f s\n", files[i], name ? name : "its file name", hex,
                el_time_s() - t0);
    }
    printf("%s: %d models, %d blocks, %llu bytes (%llu new)\n", dir, el_store_n_models(s), el_store_n_blocks(s),
           (unsigned long long)el_store_bytes(s), (unsigned long long)(el_store_bytes(s) - before));
    el_store_close(s);
    return 0;
}

// Opens a store folder that must exist already (list and verify make none).
static el_store *open_existing(const char *dir) {
    el_error err;
    el_store *s;
    struct stat sb;
    if (stat(dir, &sb) || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "edgellm store: %s: no such store folder\n", dir);
        return NULL;
    }
    if (el_store_open(dir, &s, &err)) {
        cli_error(&err);
        return NULL;
    }
    return s;
}

static int do_list(const char *dir) {
    el_store *s = open_existing(dir);
    if (!s) return 1;
    for (int i = 0; i < el_store_n_models(s); i++) {
        el_hash id;
        char hex[65];
        el_store_model_id(s, el_store_model_name(s, i), &id);
        el_hash_hex(&id, hex);
        printf("%-32s %s\n", el_store_model_name(s, i), hex);
    }
    printf("%d models, %d blocks, %llu bytes\n", el_store_n_models(s), el_store_n_blocks(s),
           (unsigned long long)el_store_bytes(s));
    el_store_close(s);
    return 0;
}

static int do_verify(const char *dir) {
    el_error err;
    el_store *s = open_existing(dir);
    if (!s) return 1;
    int n = el_store_n_blocks(s), bad = 0;
    el_progress pr;
    if (el_store_verify(s, &pr, stderr, &bad, &err)) {
        el_store_close(s);
        return cli_error(&err);
    }
    printf("%s: %d blocks checked, %d bad; %d models complete\n", dir, n, bad, el_store_n_models(s));
    el_store_close(s);
    return bad ? 1 : 0;
}

int cmd_store(int argc, char **argv) {
    cli c;
    cli_init(&c, "store", argc, argv);
    const char *a, *name = NULL, *verb = NULL, *dir = NULL;
    int opt, n = 0;
    const char **files = calloc((size_t)argc + 1, sizeof *files);
    if (!files) return cli_fail(&c, "out of memory");
    while ((a = cli_next(&c, &opt))) {
        if (cli_is(a, "-h", "--help")) { fputs(usage, stdout); free(files); return 0; }
        else if (cli_is(a, NULL, "--name")) name = cli_str(&c, a);
        else if (opt) { free(files); return cli_unknown(&c, a); }
        else if (!verb) verb = a;
        else if (!dir) dir = a;
        else files[n++] = a;
    }
    int rc;
    if (c.failed) rc = 2;
    else if (!verb || !dir) rc = cli_fail(&c, "expected import|list|verify and a store folder (see edgellm store --help)");
    else if (!strcmp(verb, "import")) rc = do_import(&c, dir, files, n, name);
    else if (n || name) rc = cli_fail(&c, "%s takes only the store folder", verb);
    else if (!strcmp(verb, "list")) rc = do_list(dir);
    else if (!strcmp(verb, "verify")) rc = do_verify(dir);
    else rc = cli_fail(&c, "unknown action '%s' (import, list or verify)", verb);
    free(files);
    return rc;
}
