// edgellm lora-join: one adapter for the whole model from the parts that
// split fine-tuning leaves on the device and on the worker.
#include <stdio.h>

#include "cli.h"
#include "edgellm/lora.h"
#include "edgellm/model.h"

static const char *usage =
    "usage: edgellm lora-join -m BASE PART.gguf PART.gguf [...] -o OUT.gguf\n"
    "\n"
    "Combines LoRA adapters that cover different layers of BASE (the device-side and\n"
    "worker-side adapters of `edgellm finetune --split`) into one adapter that\n"
    "`edgellm run --lora` and other GGUF tools can apply. A layer's projection may\n"
    "come from one part only; all parts must have the same alpha.\n"
    "\n"
    "example: edgellm lora-join -m model.gguf out.gguf.device.gguf worker-1234.gguf -o joined.gguf\n";

int cmd_lora_join(int argc, char **argv) {
    cli c;
    cli_init(&c, "lora-join", argc, argv);
    const char *model = NULL, *out = NULL, *parts[16], *a;
    int n = 0, opt;
    while ((a = cli_next(&c, &opt))) {
        if (cli_is(a, "-h", "--help")) { fputs(usage, stdout); return 0; }
        else if (cli_is(a, "-m", "--model")) model = cli_str(&c, a);
        else if (cli_is(a, "-o", "--output")) out = cli_str(&c, a);
        else if (opt) return cli_unknown(&c, a);
        else if (n == 16) return cli_fail(&c, "at most 16 parts");
        else parts[n++] = a;
    }
    if (c.failed) return 2;
    if (!model || !out) return cli_fail(&c, "-m BASE and -o OUT.gguf are required");
    if (n < 1) return cli_fail(&c, "give the adapters to join");
    el_error err;
    el_model *m = NULL;
    el_lora *loras[16] = {0}, *joined = NULL;
    int rc = 1;
    if (el_model_open(model, NULL, &m, &err)) goto out;
    for (int i = 0; i < n; i++)
        if (el_lora_load(parts[i], m, &loras[i], &err)) goto out;
    if (el_lora_join(m, (const el_lora *const *)loras, n, &joined, &err) || el_lora_save(joined, out, &err)) goto out;
    fprintf(stderr, "joined %d adapters (%zu parameters) into %s\n", n, joined->n_params, out);
    rc = 0;
out:
    if (rc) cli_error(&err);
    for (int i = 0; i < n; i++) el_lora_free(loras[i]);
    el_lora_free(joined);
    el_model_close(m);
    return rc;
}
