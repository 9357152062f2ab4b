// edgellm worker: serve a range of layers to devices (an edge or cloud node).
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "common.h"
#include "edgellm/controller.h"
#include "edgellm/serve.h"
#include "edgellm/split.h"

static const char *usage =
    "usage: edgellm worker -m MODEL --layers A:B --listen HOST:PORT [--next HOST:PORT]\n"
    "                      (--keys DIR --allow CLIENT_KEYS_DIR | --insecure) [options]\n"
    "       edgellm worker --store DIR [-m MODEL...] --listen HOST:PORT [--controller HOST:PORT\n"
    "                      --controller-key FILE] (--keys DIR --allow DIR | --insecure) [options]\n"
    "\n"
    "Serves layers A..B-1 of MODEL to devices. The last stage (B = number of layers)\n"
    "also holds the final norm and output head, unless a device asks for U-shape.\n"
    "Only the tensors of the range are mapped; the resident memory is printed at start.\n"
    "\n"
    "  -m, --model FILE          model (GGUF or llama2.c checkpoint)\n"
    "      --layers A:B          layer range (B may be omitted: to the last layer)\n"
    "      --listen HOST:PORT    where devices connect, e.g. 127.0.0.1:7001 or *:7001 (also tcp://HOST:PORT)\n"
    "      --next HOST:PORT      the next worker in a chain (for layers B..)\n"
    "      --keys DIR            this worker's CURVE key pair (edgellm keygen -o DIR)\n"
    "      --allow DIR           folder of client public keys (*.key) allowed to connect\n"
    "      --next-server-key F   the next worker's public key (with --keys: we authenticate with our key)\n"
    "      --insecure            plaintext, loopback only (also towards --next)\n"
    "      --insecure-anywhere   allow plaintext on any address (testing only)\n"
    "      --max-sessions N      concurrent sessions (default 64; training: --clients N, default 8)\n"
    "      --max-kv SIZE         KV caches and LoRA adapters over all sessions (default 2G); KV is taken\n"
    "                            in blocks of 16 positions as sessions grow and returned when they end\n"
    "      --kv-type T           KV cache: f32 (default), f16 or q8_0\n"
    "      --client-sessions N   sessions of one client (a device key; on --insecure, a connection), default\n"
    "                            half of --max-sessions\n"
    "      --client-mem SIZE     memory of one client's sessions: KV, adapters, queued requests, training\n"
    "                            (default half of --max-kv)\n"
    "      --client-inflight SIZE  replies one client has not read yet before it loses its sessions\n"
    "                            (default 64M; no single reply is larger than a quarter of it)\n"
    "      --max-batch-tokens N  rows per step over all sessions (default 128): every session's decode\n"
    "                            row, and long prefills in chunks, so no device waits behind another\n"
    "      --ctx N               longest session context (default: the model's)\n"
    "      --idle-timeout SEC    free sessions idle this long (default 120)\n"
    "      --timeout MS          wait on the next worker (default 30000)\n"
    "      --connect-timeout MS  connection and handshake to the next worker (default 3000)\n"
    "  -t, --threads N           compute threads (default: all CPUs)\n"
    "  -q, --quiet               no event log on stderr\n"
    "      --stats-every SEC     print sessions, rows per step (mean, max), queue wait, step time and\n"
    "                            KV bytes in use every SEC seconds (stderr)\n"
    "      --json                those lines as JSON objects\n"
    "      --http HOST:PORT      a read-only web panel of this worker's figures (requests, busy\n"
    "                            share, sessions, KV cache) at http://HOST:PORT/, and /metrics\n"
    "                            (Prometheus text); port 0 picks a free one (printed)\n"
    "split fine-tuning (edgellm finetune --split on the devices):\n"
    "      --train               also accept training sessions (this worker must be the last stage)\n"
    "      --per-client          one worker-side adapter per device (default: one shared by all)\n"
    "      --avg-timeout SEC     a federated averaging round waits this long for missing devices (default 30)\n"
    "      --train-out DIR       save each device's worker-side adapter here when the device fetches it\n"
    "      --trace FILE          log every training message received (type, rows, whether labels came)\n"
    "the edge network (docs/network.md):\n"
    "      --store DIR           serve every model of this block store (all layers; devices pick the\n"
    "                            cut), answer other workers' block requests, and fetch the models a\n"
    "                            placement gives us; -m FILE (repeatable) imports files into it first\n"
    "      --controller HOST:PORT  announce ourselves (models, blocks, layers, free memory, load) to\n"
    "                            the controller every --heartbeat MS (default 1000)\n"
    "      --controller-key F    the controller's public key (we authenticate with --keys)\n"
    "      --name NAME           the name announced (a server of the placement; default: the endpoint)\n"
    "      --advertise HOST:PORT the endpoint devices are told (default: --listen)\n"
    "\n"
    "Stop with Ctrl-C (SIGINT) or SIGTERM: sessions are freed and the worker exits 0.\n"
    "\n"
    "example: edgellm worker -m model.gguf --layers 2:4 --listen 127.0.0.1:7001 --insecure\n";

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) {
    (void)sig;
    stop_flag = 1;
}

int parse_layers(const char *s, int *a, int *b);
int parse_layers(const char *s, int *a, int *b) {
    char *end;
    long x = strtol(s, &end, 10);
    if (end == s || *end != ':' || x < 0 || x > 100000) return 0;
    const char *t = end + 1;
    long y = 0;
    if (*t) {
        y = strtol(t, &end, 10);
        if (end == t || *end || y <= x || y > 100000) return 0;
    }
    *a = (int)x;
    *b = (int)y;
    return 1;
}

// /metrics of the panel: the worker's running figures as Prometheus text.
static void panel_metrics(void *ctx, el_sbuf *b) {
    el_worker_figures f;
    el_worker_stats_read(ctx, &f);
    el_sbuf_printf(b,
                   "# HELP edgellm_worker_requests_total Messages handled.\n# TYPE edgellm_worker_requests_total counter\n"
                   "edgellm_worker_requests_total %llu\n"
                   "# HELP edgellm_worker_bytes_received_total Payload bytes received.\n"
                   "# TYPE edgellm_worker_bytes_received_total counter\nedgellm_worker_bytes_received_total %llu\n"
                   "# HELP edgellm_worker_busy_seconds_total Time spent handling messages.\n"
                   "# TYPE edgellm_worker_busy_seconds_total counter\nedgellm_worker_busy_seconds_total %.6f\n"
                   "# HELP edgellm_worker_sessions Sessions open.\n# TYPE edgellm_worker_sessions gauge\n"
                   "edgellm_worker_sessions %d\n"
                   "# HELP edgellm_worker_kv_bytes KV caches and adapters held.\n# TYPE edgellm_worker_kv_bytes gauge\n"
                   "edgellm_worker_kv_bytes %llu\n"
                   "# HELP edgellm_resident_bytes Resident set size.\n# TYPE edgellm_resident_bytes gauge\n"
                   "edgellm_resident_bytes %zu\n",
                   (unsigned long long)f.requests, (unsigned long long)f.bytes_received, f.busy_ns / 1e9, f.sessions,
                   (unsigned long long)f.kv_bytes, el_current_rss());
}

int cmd_worker(int argc, char **argv) {
    cli c;
    cli_init(&c, "worker", argc, argv);
    el_worker_opts o = {0};
    const char *keys_dir = NULL, *layers = NULL, *next_key_file = NULL, *a;
    int opt, idle_s = 120, quiet = 0, avg_s = 30, connect_ms = 0, kv_type = 0, json = 0;
    float stats_every = 0;
    const char *trace = NULL, *http = NULL, *ctl_key_file = NULL;
    el_node_opts no = {0};
    const char *imports[EL_CTL_MAX_MODELS];
    uint64_t max_kv = 0, client_mem = 0, client_inflight = 0;
    while ((a = cli_next(&c, &opt))) {
        if (cli_is(a, "-h", "--help")) { fputs(usage, stdout); return 0; }
        else if (cli_is(a, "-m", "--model")) {
            o.model_path = cli_str(&c, a);
            if (no.n_imports == EL_CTL_MAX_MODELS) return cli_fail(&c, "-m: at most %d files", EL_CTL_MAX_MODELS);
            imports[no.n_imports++] = o.model_path;
        }
        else if (cli_is(a, NULL, "--store")) no.store_dir = cli_str(&c, a);
        else if (cli_is(a, NULL, "--controller")) no.controller = cli_str(&c, a);
        else if (cli_is(a, NULL, "--controller-key")) ctl_key_file = cli_str(&c, a);
        else if (cli_is(a, NULL, "--name")) no.name = cli_str(&c, a);
        else if (cli_is(a, NULL, "--advertise")) no.advertise = cli_str(&c, a);
        else if (cli_is(a, NULL, "--heartbeat")) cli_int(&c, a, 50, 600000, &no.heartbeat_ms);
        else if (cli_is(a, NULL, "--layers")) layers = cli_str(&c, a);
        else if (cli_is(a, NULL, "--listen")) o.listen = cli_str(&c, a);
        else if (cli_is(a, NULL, "--next")) o.next = cli_str(&c, a);
        else if (cli_is(a, NULL, "--keys")) keys_dir = cli_str(&c, a);
        else if (cli_is(a, NULL, "--allow")) o.sec.allow_dir = cli_str(&c, a);
        else if (cli_is(a, NULL, "--next-server-key")) next_key_file = cli_str(&c, a);
        else if (cli_is(a, NULL, "--insecure")) o.sec.insecure = 1;
        else if (cli_is(a, NULL, "--insecure-anywhere")) o.sec.insecure = o.sec.insecure_anywhere = 1;
        else if (cli_is(a, NULL, "--max-sessions") || cli_is(a, NULL, "--clients")) cli_int(&c, a, 1, 100000, &o.max_sessions);
        else if (cli_is(a, NULL, "--max-kv")) cli_size(&c, a, &max_kv);
        else if (cli_is(a, NULL, "--ctx")) cli_int(&c, a, 1, 1 << 20, &o.max_ctx);
        else if (cli_is(a, NULL, "--idle-timeout")) cli_int(&c, a, 1, 1 << 20, &idle_s);
        else if (cli_is(a, NULL, "--timeout")) cli_int(&c, a, 1, 1 << 30, &o.timeout_ms);
        else if (cli_is(a, NULL, "--connect-timeout")) cli_int(&c, a, 1, 1 << 30, &connect_ms);
        else if (cli_is(a, "-t", "--threads")) cli_int(&c, a, 1, 256, &o.threads);
        else if (cli_is(a, "-q", "--quiet")) quiet = 1;
        else if (tool_kv_option(&c, a, &kv_type)) continue;
        else if (cli_is(a, NULL, "--client-sessions")) cli_int(&c, a, 1, 100000, &o.client_sessions);
        else if (cli_is(a, NULL, "--client-mem")) cli_size(&c, a, &client_mem);
        else if (cli_is(a, NULL, "--client-inflight")) cli_size(&c, a, &client_inflight);
        else if (cli_is(a, NULL, "--max-batch-tokens")) cli_int(&c, a, 1, 65536, &o.max_batch_tokens);
        else if (cli_is(a, NULL, "--stats-every")) cli_float(&c, a, 0.01, 1e6, &stats_every);
        else if (cli_is(a, NULL, "--json")) json = 1;
        else if (cli_is(a, NULL, "--http")) http = cli_str(&c, a);
        else if (cli_is(a, NULL, "--train")) o.train = 1;
        else if (cli_is(a, NULL, "--per-client")) o.train_per_client = 1;
        else if (cli_is(a, NULL, "--avg-timeout")) cli_int(&c, a, 1, 1 << 20, &avg_s);
        else if (cli_is(a, NULL, "--train-out")) o.train_out = cli_str(&c, a);
        else if (cli_is(a, NULL, "--trace")) trace = cli_str(&c, a);
        else return cli_unknown(&c, a);
    }
    if (c.failed) return 2;
    int node = no.store_dir || no.controller;
    if (!o.model_path && !no.store_dir) return cli_fail(&c, "-m MODEL (or --store DIR) is required");
    if (no.n_imports > 1 && !no.store_dir) return cli_fail(&c, "several -m files need --store DIR");
    if (no.store_dir && layers) return cli_fail(&c, "--layers: a --store worker serves every layer of its models");
    if (!layers && !no.store_dir) return cli_fail(&c, "--layers A:B is required");
    if (layers && !parse_layers(layers, &o.layer_begin, &o.layer_end)) return cli_fail(&c, "--layers: '%s' is not A:B with A < B", layers);
    if (node && (o.next || o.train || http))
        return cli_fail(&c, "--store and --controller do not go with --next, --train or --http (yet)");
    if (no.controller && !o.sec.insecure && !ctl_key_file)
        return cli_fail(&c, "--controller-key FILE is required with --controller and keys");
    if (!o.listen) return cli_fail(&c, "--listen HOST:PORT is required");
    if (!o.sec.insecure && (!keys_dir || !o.sec.allow_dir))
        return cli_fail(&c, "--keys DIR and --allow DIR are required (or --insecure on loopback)");
    el_error err = {0};
    el_keypair keys;
    char next_key[41];
    if (keys_dir) {
        if (el_keys_load(keys_dir, &keys, &err)) return cli_error(&err);
        o.sec.keys = &keys;
    }
    o.next_sec = o.sec;
    o.next_sec.allow_dir = NULL;
    o.next_sec.connect_timeout_ms = connect_ms;
    if (o.next && !o.sec.insecure) {
        if (!next_key_file) return cli_fail(&c, "--next-server-key FILE is required with --next and keys");
        if (el_key_load_public(next_key_file, next_key, &err)) return cli_error(&err);
        o.next_sec.server_key = next_key;
    }
    o.max_kv_bytes = (size_t)max_kv;
    o.client_mem = (size_t)client_mem;
    o.client_inflight = (size_t)client_inflight;
    o.train_avg_timeout_ms = avg_s * 1000;
    if (trace) {
        o.trace = fopen(trace, "w");
        if (!o.trace) return cli_fail(&c, "--trace: cannot create '%s'", trace);
    }
    o.idle_timeout_ms = idle_s * 1000;
    o.kv_type = kv_type;
    if (json && stats_every <= 0) return cli_fail(&c, "--json goes with --stats-every SEC");
    if (stats_every > 0) {
        o.stats_out = stderr;
        o.stats_every_s = stats_every;
        o.stats_json = json;
    }
    o.stop = &stop_flag;
    o.log = quiet ? NULL : stderr;
    char ctl_key[41];
    if (node) {
        no.w = o;
        no.imports = no.store_dir ? imports : NULL;
        no.n_imports = no.store_dir ? no.n_imports : 0;
        no.ctl_sec = o.next_sec;
        if (ctl_key_file) {
            if (el_key_load_public(ctl_key_file, ctl_key, &err)) return cli_error(&err);
            no.ctl_sec.server_key = ctl_key;
        }
        struct sigaction sa = {0};
        sa.sa_handler = on_signal;
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        el_status st = el_node_run(&no, &err);
        if (o.trace) fclose(o.trace);
        return st ? cli_error(&err) : 0;
    }
    el_panel *panel = NULL;
    if (http) {
        el_addr pa;
        el_error ae;
        if (el_addr_parse(http, &pa, &ae)) return cli_fail(&c, "--http: %s", ae.msg);
        if (!(o.stats = el_worker_stats_new())) return cli_fail(&c, "out of memory");
        if (el_panel_start(pa.host, pa.port, panel_metrics, o.stats, &panel, &err)) {
            el_worker_stats_free(o.stats);
            return cli_error(&err);
        }
        fprintf(stderr, el_addr_is_ipv6(&pa) ? "worker: panel on http://[%s]:%d/\n" : "worker: panel on http://%s:%d/\n",
                pa.host, el_panel_port(panel));
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    el_status st = el_worker_run(&o, &err);
    el_panel_stop(panel);
    el_worker_stats_free(o.stats);
    if (o.trace) fclose(o.trace);
    if (st) return cli_error(&err);
    return 0;
}
