// edgellm catalog: the content-addressed blocks of GGUF models (every tensor
// hashed), which blocks they share, and the size of their union.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "edgellm/json.h"
#include "edgellm/store.h"

static const char *usage =
    "usage: edgellm catalog MODEL.gguf... [--json] [-o FILE]\n"
    "\n"
    "Hashes every tensor of each model (BLAKE2b-256), its GGUF header and its manifest\n"
    "(whose hash is the model's id), and lists each model's blocks, the blocks models\n"
    "share, each model's size and the size of the union (each block counted once):\n"
    "what a store holding all of them keeps (docs/formats.md, \"Manifests\").\n"
    "A model's name is its file's base name without .gguf; two files with the same\n"
    "name are refused.\n"
    "\n"
    "  --json           write JSON (the input of edgellm place --catalog)\n"
    "  -o, --output F   write to F instead of standard output\n"
    "  -h, --help       this text\n"
    "\n"
    "example: edgellm catalog base.gguf base-lora.gguf base-q8.gguf --json -o catalog.json\n";

// One distinct block over all models.
typedef struct {
    el_hash hash;
    uint64_t bytes;
    int *models;  // indices of the models holding it, each once
    int n_models;
    char **names;  // tensor names it appears under ("<header>", "<manifest>"), each once
    int n_names;
} ublock;

typedef struct {
    ublock *b;
    int n, cap;
} uset;

static ublock *uget(uset *u, const el_hash *h, uint64_t bytes) {
    for (int i = 0; i < u->n; i++)
        if (el_hash_eq(&u->b[i].hash, h)) return &u->b[i];
    if (u->n == u->cap) {
        u->cap = u->cap ? 2 * u->cap : 256;
        ublock *nb = realloc(u->b, (size_t)u->cap * sizeof *nb);
        if (!nb) return NULL;
        u->b = nb;
    }
    ublock *b = &u->b[u->n++];
    memset(b, 0, sizeof *b);
    b->hash = *h;
    b->bytes = bytes;
    return b;
}

static int uadd(uset *u, const el_hash *h, uint64_t bytes, int model, const char *name) {
    ublock *b = uget(u, h, bytes);
    if (!b) return -1;
    if (!b->n_models || b->models[b->n_models - 1] != model) {
        int *nm = realloc(b->models, (size_t)(b->n_models + 1) * sizeof *nm);
        if (!nm) return -1;
        b->models = nm;
        b->models[b->n_models++] = model;
    }
    for (int i = 0; i < b->n_names; i++)
        if (!strcmp(b->names[i], name)) return 0;
    char **nn = realloc(b->names, (size_t)(b->n_names + 1) * sizeof *nn);
    if (!nn) return -1;
    b->names = nn;
    if (!(b->names[b->n_names] = strdup(name))) return -1;
    b->n_names++;
    return 0;
}

static void jhash(FILE *f, const el_hash *h) {
    char hex[65];
    el_hash_hex(h, hex);
    fprintf(f, "\"%s\"", hex);
}

static void shape_str(const el_block_info *b, char *buf, size_t n) {
    int o = snprintf(buf, n, "[");
    for (int d = 0; d < b->n_dims && o > 0 && (size_t)o < n; d++)
        o += snprintf(buf + o, n - (size_t)o, d ? ", %lld" : "%lld", (long long)b->ne[d]);
    if (o > 0 && (size_t)o < n) snprintf(buf + o, n - (size_t)o, "]");
}

int cmd_catalog(int argc, char **argv) {
    cli c;
    cli_init(&c, "catalog", argc, argv);
    const char *a, *out_path = NULL;
    int opt, json = 0, n = 0;
    const char **paths = calloc((size_t)argc + 1, sizeof *paths);
    if (!paths) return cli_fail(&c, "out of memory");
    while ((a = cli_next(&c, &opt))) {
        if (cli_is(a, "-h", "--help")) { fputs(usage, stdout); free(paths); return 0; }
        else if (cli_is(a, NULL, "--json")) json = 1;
        else if (cli_is(a, "-o", "--output")) out_path = cli_str(&c, a);
        else if (opt) { free(paths); return cli_unknown(&c, a); }
        else paths[n++] = a;
    }
    if (c.failed) { free(paths); return 2; }
    if (!n) { free(paths); return cli_fail(&c, "no model files given (see edgellm catalog --help)"); }

    el_model_blocks *ms = calloc((size_t)n, sizeof *ms);
    uint64_t *man_bytes = calloc((size_t)n, sizeof *man_bytes);
    uset u = {0};
    int rc = 0;
    el_error err;
    for (int i = 0; i < n && !rc; i++) {
        struct stat sb;
        el_progress pr;
        // a progress line only for files that take a while to hash
        int big = !stat(paths[i], &sb) && sb.st_size > (256 << 20);
        if (el_model_blocks_scan(paths[i], big ? &pr : NULL, &ms[i], &err)) {
            rc = cli_error(&err);
            break;
        }
        for (int j = 0; j < i; j++)
            if (!strcmp(ms[j].name, ms[i].name)) {
                fprintf(stderr, "edgellm catalog: %s and %s have the same model name '%s': rename one\n", paths[j],
                        paths[i], ms[i].name);
                rc = 1;
            }
        char *text;
        size_t len;
        if (!rc && el_manifest_encode(&ms[i], &text, &len, &err)) rc = cli_error(&err);
        if (rc) break;
        free(text);
        man_bytes[i] = len;
        int bad = uadd(&u, &ms[i].id, len, i, "<manifest>") || uadd(&u, &ms[i].header, ms[i].header_bytes, i, "<header>");
        for (int k = 0; k < ms[i].n_blocks && !bad; k++)
            bad = uadd(&u, &ms[i].blocks[k].hash, ms[i].blocks[k].bytes, i, ms[i].blocks[k].name);
        if (bad) rc = cli_fail(&c, "out of memory");
    }
    FILE *f = stdout;
    if (!rc && out_path && !(f = fopen(out_path, "w"))) {
        fprintf(stderr, "edgellm catalog: %s: cannot create\n", out_path);
        rc = 1;
    }
    if (!rc) {
        uint64_t total = 0, uni = 0;
        for (int i = 0; i < n; i++) total += man_bytes[i] + ms[i].bytes;
        for (int i = 0; i < u.n; i++) uni += u.b[i].bytes;
        char hex[65], sh[128];
        if (json) {
            fputs("{\"models\":[", f);
            for (int i = 0; i < n; i++) {
                const el_model_blocks *m = &ms[i];
                fputs(i ? ",{\"name\":" : "{\"name\":", f);
                el_json_write_str(f, m->name);
                fputs(",\"path\":", f);
                el_json_write_str(f, m->path);
                fputs(",\"id\":", f);
                jhash(f, &m->id);
                fprintf(f, ",\"file_bytes\":%llu,\"bytes\":%llu,\"manifest\":{\"hash\":", (unsigned long long)m->file_bytes,
                        (unsigned long long)(man_bytes[i] + m->bytes));
                jhash(f, &m->id);
                fprintf(f, ",\"bytes\":%llu},\"header\":{\"hash\":", (unsigned long long)man_bytes[i]);
                jhash(f, &m->header);
                fprintf(f, ",\"bytes\":%llu},\"blocks\":[", (unsigned long long)m->header_bytes);
                for (int k = 0; k < m->n_blocks; k++) {
                    const el_block_info *b = &m->blocks[k];
                    fputs(k ? ",{\"name\":" : "{\"name\":", f);
                    el_json_write_str(f, b->name);
                    fputs(",\"dtype\":", f);
                    el_json_write_str(f, el_dtype_name(b->dtype));
                    fputs(",\"shape\":[", f);
                    for (int d = 0; d < b->n_dims; d++) fprintf(f, d ? ",%lld" : "%lld", (long long)b->ne[d]);
                    fprintf(f, "],\"bytes\":%llu,\"hash\":", (unsigned long long)b->bytes);
                    jhash(f, &b->hash);
                    fputc('}', f);
                }
                fputs("]}", f);
            }
            fputs("],\"shared\":[", f);
            int first = 1;
            for (int i = 0; i < u.n; i++) {
                const ublock *b = &u.b[i];
                if (b->n_models < 2) continue;
                fputs(first ? "{\"hash\":" : ",{\"hash\":", f);
                first = 0;
                jhash(f, &b->hash);
                fprintf(f, ",\"bytes\":%llu,\"models\":[", (unsigned long long)b->bytes);
                for (int k = 0; k < b->n_models; k++) {
                    if (k) fputc(',', f);
                    el_json_write_str(f, ms[b->models[k]].name);
                }
                fputs("],\"names\":[", f);
                for (int k = 0; k < b->n_names; k++) {
                    if (k) fputc(',', f);
                    el_json_write_str(f, b->names[k]);
                }
                fputs("]}", f);
            }
            fprintf(f, "],\"total_bytes\":%llu,\"union_bytes\":%llu}\n", (unsigned long long)total,
                    (unsigned long long)uni);
        } else {
            for (int i = 0; i < n; i++) {
                const el_model_blocks *m = &ms[i];
                el_hash_hex(&m->id, hex);
                fprintf(f, "model %s (%s)\n  id %s\n  %llu bytes in %d blocks + header + manifest (file: %llu bytes)\n",
                        m->name, m->path, hex, (unsigned long long)(man_bytes[i] + m->bytes), m->n_blocks,
                        (unsigned long long)m->file_bytes);
                el_hash_hex(&m->header, hex);
                fprintf(f, "  %-28s %-5s %-16s %12llu  %.12s\n", "<header>", "", "", (unsigned long long)m->header_bytes,
                        hex);
                for (int k = 0; k < m->n_blocks; k++) {
                    const el_block_info *b = &m->blocks[k];
                    el_hash_hex(&b->hash, hex);
                    shape_str(b, sh, sizeof sh);
                    fprintf(f, "  %-28s %-5s %-16s %12llu  %.12s\n", b->name, el_dtype_name(b->dtype), sh,
                            (unsigned long long)b->bytes, hex);
                }
            }
            int n_shared = 0;
            uint64_t shared_bytes = 0;
            for (int i = 0; i < u.n; i++)
                if (u.b[i].n_models > 1) n_shared++, shared_bytes += u.b[i].bytes;
            fprintf(f, "shared blocks: %d (%llu bytes)\n", n_shared, (unsigned long long)shared_bytes);
            for (int i = 0; i < u.n; i++) {
                const ublock *b = &u.b[i];
                if (b->n_models < 2) continue;
                el_hash_hex(&b->hash, hex);
                fprintf(f, "  %.12s %12llu  models:", hex, (unsigned long long)b->bytes);
                for (int k = 0; k < b->n_models; k++) fprintf(f, "%s%s", k ? "," : " ", ms[b->models[k]].name);
                fprintf(f, "  names:");
                for (int k = 0; k < b->n_names; k++) fprintf(f, "%s%s", k ? "," : " ", b->names[k]);
                fputc('\n', f);
            }
            fprintf(f, "bytes per model:\n");
            for (int i = 0; i < n; i++)
                fprintf(f, "  %-28s %14llu\n", ms[i].name, (unsigned long long)(man_bytes[i] + ms[i].bytes));
            fprintf(f, "total %llu bytes, union %llu bytes (%d distinct blocks; sharing saves %.1f%%)\n",
                    (unsigned long long)total, (unsigned long long)uni, u.n,
                    total ? 100.0 * (double)(total - uni) / (double)total : 0.0);
        }
        if (f != stdout && fclose(f)) {
            fprintf(stderr, "edgellm catalog: %s: write failed\n", out_path);
            rc = 1;
        } else if (f == stdout) {
            fflush(stdout);
        }
    }
    for (int i = 0; i < u.n; i++) {
        free(u.b[i].models);
        for (int k = 0; k < u.b[i].n_names; k++) free(u.b[i].names[k]);
        free(u.b[i].names);
    }
    free(u.b);
    for (int i = 0; i < n; i++) el_model_blocks_free(&ms[i]);
    free(ms);
    free(man_bytes);
    free(paths);
    return rc;
}
