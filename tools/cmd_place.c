// edgellm place: which edge server holds which model (src/place).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "edgellm/controller.h"
#include "edgellm/place.h"

static const char *place_usage =
    "usage: edgellm place --catalog CATALOG.json --servers SERVERS.json --users USERS.json\n"
    "                     [--algo trim|independent|exact|trim-plain] [--json]\n"
    "                     [--apply HOST:PORT (--keys DIR --controller-key FILE | --insecure)]\n"
    "       edgellm place --simulate SPEC [--seed N] [--algo ...] [--json]\n"
    "\n"
    "Chooses which edge server holds which model so that the most requests are\n"
    "hits: a request is a hit when a server the user reaches holds the model.\n"
    "  hit ratio = sum over users u and models m of p(u,m) [hit] / sum of p(u,m)\n"
    "A server's storage holds the union of its models' blocks: a block several\n"
    "models share (same BLAKE2b hash in the catalog) is stored once.\n"
    "\n"
    "  --catalog F     edgellm catalog --json output: models as sets of blocks\n"
    "  --servers F     [{\"name\": ..., \"storage_bytes\": N}]\n"
    "  --users F       [{\"name\": ..., \"reach\": [server names], \"requests\": {model: probability}}]\n"
    "  --algo A        trim (default): the TrimCaching greedy, shared blocks counted once, best of\n"
    "                  two rules and several starts, never below independent (docs/network.md)\n"
    "                  independent: the same search counting every model whole (the baseline)\n"
    "                  exact: exhaustive search, for small instances (at most 24 server-model pairs)\n"
    "                  trim-plain: the paper's greedy alone (largest hit-ratio gain first)\n"
    "  --json          print {\"placement\": {server: [models]}, \"hit_ratio\": x, \"bytes_used\": {server: n}}\n"
    "  --apply EP      send the placement to the controller at EP (edgellm controller), which\n"
    "                  tells each worker what to fetch; --keys DIR is our key pair (on the\n"
    "                  controller's --allow list), --controller-key FILE its public key,\n"
    "                  --insecure plaintext on loopback\n"
    "  --simulate SPEC a random instance instead of the files: KEY=VALUE,... over the defaults\n"
    "                  servers=10,users=100,models=30,bases=3,blocks=16,sharing=0.5,storage=1.5,\n"
    "                  radius=0.3,zipf=0.8,block_bytes=67108864 (docs/network.md)\n"
    "  --seed N        the simulated instance's seed (default 1)\n"
    "\n"
    "example: edgellm place --catalog catalog.json --servers servers.json --users users.json --json\n";

static void print_bytes(char *buf, size_t n, uint64_t b) {
    if (b >= (1ull << 30))
        snprintf(buf, n, "%.2f GiB", (double)b / (1ull << 30));
    else if (b >= (1ull << 20))
        snprintf(buf, n, "%.2f MiB", (double)b / (1ull << 20));
    else
        snprintf(buf, n, "%llu B", (unsigned long long)b);
}

static void print_table(const el_place_problem *p, const el_placement *pl, el_place_algo algo, double secs) {
    int w = 6;
    for (int s = 0; s < p->n_servers; s++) {
        int l = (int)strlen(p->servers[s].name);
        if (l > w) w = l < 40 ? l : 40;
    }
    printf("%-*s  %12s  %12s  %s\n", w, "server", "storage", "used", "models");
    for (int s = 0; s < p->n_servers; s++) {
        char cap[32], used[32];
        print_bytes(cap, sizeof cap, p->servers[s].storage_bytes);
        print_bytes(used, sizeof used, pl->bytes_used[s]);
        printf("%-*s  %12s  %12s  ", w, p->servers[s].name, cap, used);
        int n = 0;
        for (int m = 0; m < p->n_models; m++)
            if (pl->x[(size_t)s * p->n_models + m]) printf("%s%s", n++ ? ", " : "", p->models[m].name);
        printf("%s\n", n ? "" : "-");
    }
    char starts[48] = "";
    if (algo == EL_PLACE_TRIM || algo == EL_PLACE_INDEPENDENT)
        snprintf(starts, sizeof starts, ", %d single-pair starts", pl->seeds);
    printf("hit ratio %.6f (%s%s; %d servers, %d users, %d models, %d blocks; solved in %.3f ms%s)\n", pl->hit_ratio,
           el_place_algo_name(algo), pl->extended ? ": independent's placement extended" : "", p->n_servers,
           p->n_users, p->n_models, p->n_blocks, secs * 1e3, starts);
}

int cmd_place(int argc, char **argv) {
    cli c;
    cli_init(&c, "place", argc, argv);
    const char *catalog = NULL, *servers = NULL, *users = NULL, *algo_name = "trim", *apply = NULL, *sim = NULL, *a;
    const char *keys_dir = NULL, *ctl_key_file = NULL;
    el_link_security sec = {0};
    uint64_t seed = 1;
    int json = 0, opt;
    while ((a = cli_next(&c, &opt))) {
        if (cli_is(a, "-h", "--help")) { fputs(place_usage, stdout); return 0; }
        else if (cli_is(a, NULL, "--catalog")) catalog = cli_str(&c, a);
        else if (cli_is(a, NULL, "--servers")) servers = cli_str(&c, a);
        else if (cli_is(a, NULL, "--users")) users = cli_str(&c, a);
        else if (cli_is(a, NULL, "--algo")) algo_name = cli_str(&c, a);
        else if (cli_is(a, NULL, "--json")) json = 1;
        else if (cli_is(a, NULL, "--apply")) apply = cli_str(&c, a);
        else if (cli_is(a, NULL, "--keys")) keys_dir = cli_str(&c, a);
        else if (cli_is(a, NULL, "--controller-key")) ctl_key_file = cli_str(&c, a);
        else if (cli_is(a, NULL, "--insecure")) sec.insecure = 1;
        else if (cli_is(a, NULL, "--simulate")) sim = cli_str(&c, a);
        else if (cli_is(a, NULL, "--seed")) cli_u64(&c, a, &seed);
        else return cli_unknown(&c, a);
    }
    if (c.failed) return 2;
    int algo = el_place_algo_parse(algo_name);
    if (algo < 0) return cli_fail(&c, "--algo: '%s' is not trim, independent, exact or trim-plain", algo_name);
    if (sim && (catalog || servers || users)) return cli_fail(&c, "--simulate replaces --catalog, --servers and --users");
    if (!sim && (!catalog || !servers || !users))
        return cli_fail(&c, "--catalog, --servers and --users are required (or --simulate SPEC)");
    if (!apply && (keys_dir || ctl_key_file || sec.insecure))
        return cli_fail(&c, "--keys, --controller-key and --insecure go with --apply");
    if (apply && !sec.insecure && (!keys_dir || !ctl_key_file))
        return cli_fail(&c, "--apply needs --keys DIR and --controller-key FILE (or --insecure on loopback)");
    el_error err;
    el_keypair keys;
    char ctl_key[41];
    if (keys_dir) {
        if (el_keys_load(keys_dir, &keys, &err)) return cli_error(&err);
        sec.keys = &keys;
    }
    if (ctl_key_file) {
        if (el_key_load_public(ctl_key_file, ctl_key, &err)) return cli_error(&err);
        sec.server_key = ctl_key;
    }
    el_place_problem *p;
    if (sim) {
        el_place_sim s;
        if (el_place_sim_parse(sim, &s, &err) || el_place_simulate(&s, seed, &p, &err)) return cli_error(&err);
    } else if (el_place_load(catalog, servers, users, &p, &err)) {
        return cli_error(&err);
    }
    el_placement pl;
    double t0 = el_time_s();
    el_status st = el_place_solve(p, (el_place_algo)algo, &pl, &err);
    double secs = el_time_s() - t0;
    if (st) {
        el_place_problem_free(p);
        return cli_error(&err);
    }
    int rc = 0;
    if (apply) {
        char *j = el_place_to_json(p, &pl);
        if (!j) rc = cli_fail(&c, "out of memory");
        else if (el_placement_send(apply, &sec, j, strlen(j), 30000, &err)) rc = cli_error(&err);
        else fprintf(stderr, "place: placement sent to the controller at %s (hit ratio %.6f)\n", apply, pl.hit_ratio);
        free(j);
        if (rc) {
            el_placement_free(&pl);
            el_place_problem_free(p);
            return rc;
        }
    }
    if (json) {
        char *j = el_place_to_json(p, &pl);
        if (j) fputs(j, stdout);
        else rc = cli_fail(&c, "out of memory");
        free(j);
    } else {
        print_table(p, &pl, (el_place_algo)algo, secs);
    }
    el_placement_free(&pl);
    el_place_problem_free(p);
    return rc;
}
