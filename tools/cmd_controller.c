// edgellm controller: knows which worker holds which model, applies
// placements, and routes devices.
#include <signal.h>
#include <stdio.h>

#include "cli.h"
#include "edgellm/controller.h"

static const char *usage =
    "usage: edgellm controller --listen HOST:PORT (--keys DIR --allow DIR | --insecure) [options]\n"
    "\n"
    "The edge network's controller. Workers (edgellm worker --controller) announce the\n"
    "models, blocks and layer ranges they hold, their free memory and load, every\n"
    "second; the controller keeps only that soft state, so a restarted controller knows\n"
    "everything again after one round of heartbeats. A placement (edgellm place --apply,\n"
    "or --placement FILE) tells each worker which models to fetch from the workers that\n"
    "hold them. Devices (edgellm run --controller) get a route: the workers that serve\n"
    "their model, least loaded first.\n"
    "\n"
    "      --listen HOST:PORT   where workers, devices and planners connect\n"
    "      --keys DIR           the controller's CURVE key pair (edgellm keygen -o DIR)\n"
    "      --allow DIR          public keys (*.key) of the workers, devices and planners allowed\n"
    "      --insecure           plaintext, loopback only\n"
    "      --placement FILE     apply this placement from the start (edgellm place --json output)\n"
    "      --dead-ms MS         drop a worker silent this long (default 3000)\n"
    "  -q, --quiet              no event log on stderr\n"
    "  -h, --help               this text\n"
    "\n"
    "Stop with Ctrl-C (SIGINT) or SIGTERM.\n"
    "\n"
    "example: edgellm controller --listen 127.0.0.1:7000 --keys keys/ctl --allow keys/allowed\n";

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) {
    (void)sig;
    stop_flag = 1;
}

int cmd_controller(int argc, char **argv) {
    cli c;
    cli_init(&c, "controller", argc, argv);
    el_controller_opts o = {0};
    const char *keys_dir = NULL, *a;
    int opt, quiet = 0;
    while ((a = cli_next(&c, &opt))) {
        if (cli_is(a, "-h", "--help")) { fputs(usage, stdout); return 0; }
        else if (cli_is(a, NULL, "--listen")) o.listen = cli_str(&c, a);
        else if (cli_is(a, NULL, "--keys")) keys_dir = cli_str(&c, a);
        else if (cli_is(a, NULL, "--allow")) o.sec.allow_dir = cli_str(&c, a);
        else if (cli_is(a, NULL, "--insecure")) o.sec.insecure = 1;
        else if (cli_is(a, NULL, "--placement")) o.placement = cli_str(&c, a);
        else if (cli_is(a, NULL, "--dead-ms")) cli_int(&c, a, 100, 1 << 30, &o.dead_ms);
        else if (cli_is(a, "-q", "--quiet")) quiet = 1;
        else return cli_unknown(&c, a);
    }
    if (c.failed) return 2;
    if (!o.listen) return cli_fail(&c, "--listen HOST:PORT is required");
    if (!o.sec.insecure && (!keys_dir || !o.sec.allow_dir))
        return cli_fail(&c, "--keys DIR and --allow DIR are required (or --insecure on loopback)");
    el_error err = {0};
    el_keypair keys;
    if (keys_dir) {
        if (el_keys_load(keys_dir, &keys, &err)) return cli_error(&err);
        o.sec.keys = &keys;
    }
    o.log = quiet ? NULL : stderr;
    o.stop = &stop_flag;
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (el_controller_run(&o, &err)) return cli_error(&err);
    return 0;
}
