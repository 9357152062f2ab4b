// edgellm keygen: make a CURVE key pair for a device or a worker.
#include <stdio.h>

#include "cli.h"
#include "edgellm/link.h"

static const char *usage =
    "usage: edgellm keygen -o DIR [--force]\n"
    "\n"
    "Writes a CURVE key pair: DIR/public.key (share it) and DIR/secret.key (mode 0600,\n"
    "keep it). A worker admits devices whose public.key is copied into its --allow\n"
    "folder; a device pins the worker's public.key with --server-key.\n"
    "\n"
    "  -o, --output DIR   where to write the pair (created if missing)\n"
    "      --force        replace an existing pair (whoever pinned or allow-listed the old\n"
    "                     public key must be given the new one)\n"
    "  -h, --help         this text\n"
    "\n"
    "example: edgellm keygen -o keys/device && edgellm keygen -o keys/edge\n";

int cmd_keygen(int argc, char **argv) {
    cli c;
    cli_init(&c, "keygen", argc, argv);
    const char *dir = NULL, *a;
    int opt, force = 0;
    while ((a = cli_next(&c, &opt))) {
        if (cli_is(a, "-h", "--help")) { fputs(usage, stdout); return 0; }
        else if (cli_is(a, "-o", "--output")) dir = cli_str(&c, a);
        else if (cli_is(a, NULL, "--force")) force = 1;
        else return cli_unknown(&c, a);
    }
    if (c.failed) return 2;
    if (!dir) return cli_fail(&c, "-o DIR is required");
    el_error err;
    el_keypair k;
    if (el_keys_generate(dir, force, &k, &err)) return cli_error(&err);
    printf("%s\n", k.public_key);
    fprintf(stderr, "wrote %s/public.key and %s/secret.key\n", dir, dir);
    return 0;
}
