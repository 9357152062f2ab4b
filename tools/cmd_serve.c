// edgellm serve: one base model serving many LoRA adapters at once behind an
// OpenAI-compatible HTTP API (see docs/serve.md).
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "common.h"
#include "edgellm/serve.h"

static const char *usage =
    "usage: edgellm serve -m BASE [-z TOKENIZER] [--lora-dir DIR] [options]\n"
    "\n"
    "Serves BASE and every adapter DIR/NAME.gguf (model id NAME) over HTTP with the OpenAI API:\n"
    "POST /v1/completions, POST /v1/chat/completions (\"stream\": true for server-sent events),\n"
    "GET /v1/models, POST /v1/adapters {\"name\",\"path\"}, GET /health, GET /metrics (Prometheus).\n"
    "Requests are decoded together (continuous batching), each with its own adapter.\n"
    "\n"
    "  -m, --model FILE        base model (GGUF or llama2.c checkpoint)\n"
    "  -z, --tokenizer FILE    tokenizer (default: the model's own)\n"
    "      --model-id ID       the base's id in the API (default: file name without extension)\n"
    "      --lora-dir DIR      adapters, NAME.gguf; files may be added or removed while serving\n"
    "      --max-adapters N    adapters kept in memory (default 0 = no limit)\n"
    "      --adapter-mem SIZE  memory for adapters, e.g. 256M (default 0 = no limit); least recently used go first\n"
    "      --slots S           sequences decoded together (default 16)\n"
    "      --max-batch-tokens N  rows per step: a decode row per running sequence plus prompt chunks\n"
    "                          (default slots + 64)\n"
    "      --max-kv SIZE       KV cache over all sequences, taken as they grow (default: slots x ctx worth)\n"
    "      --client-queue N    requests one client (API key, or address without keys) may have waiting\n"
    "                          (default half of --max-queue)\n"
    "      --client-adapters N distinct adapters one client's requests may hold (default half of --max-adapters)\n"
    TOOL_KV_HELP
    TOOL_DRAFT_HELP
    "                          (serve: each sequence drafts; its k+1 rows join the step's batch)\n"
    "  -c, --ctx N             context per sequence (default: the model's; also --ctx-size); longer\n"
    "                          than the model was trained on is allowed, with a warning\n"
    "      --listen HOST:PORT  address and port, also tcp://HOST:PORT, [IPv6]:PORT, *:PORT (default\n"
    "                          127.0.0.1:8080; port 0 = any free port)\n"
    "      --api-key KEY       require Authorization: Bearer KEY (repeatable: any listed key)\n"
    "      --max-body SIZE     largest request body (default 1M; 32M with --mmproj)\n"
    "      --mmproj FILE       a LLaVA-style projector: chat messages may carry image_url parts as\n"
    "                          data: URLs (base64 PNG or JPEG; remote URLs are refused)\n"
    "      --max-queue N       requests waiting for a slot before 503 (default 256)\n"
    "      --template NAME     chat template (llama2, llama3, chatml, zephyr ...; default: from the model)\n"
    "  -t, --threads N         compute threads (default: all CPUs)\n"
    "  -q, --quiet             no status line\n"
    "  -h, --help              this text\n"
    "\n"
    "The chosen port is printed to stderr as 'serve: listening on http://HOST:PORT'.\n"
    "Stop with SIGTERM or Ctrl-C: requests in flight are ended, everything is freed, exit 0.\n"
    "\n"
    "example: edgellm serve -m model.gguf --lora-dir adapters/ --listen 127.0.0.1:8080 --api-key secret\n"
    "         curl -s localhost:8080/v1/completions -H 'Authorization: Bearer secret' \\\n"
    "              -d '{\"model\":\"pirate\",\"prompt\":\"The dream\",\"max_tokens\":32}'\n";

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) {
    (void)sig;
    stop_flag = 1;
}

int cmd_serve(int argc, char **argv);
int cmd_serve(int argc, char **argv) {
    tool_draft dr = {0};
    cli c;
    cli_init(&c, "serve", argc, argv);
    el_serve_opts o = {0};
    const char *listen = "127.0.0.1:8080";
    const char *keys[64];
    int n_keys = 0, quiet = 0;
    uint64_t adapter_mem = 0, max_body = 0, max_kv = 0;
    const char *a;
    int opt;
    while ((a = cli_next(&c, &opt))) {
        if (cli_is(a, "-h", "--help")) { fputs(usage, stdout); return 0; }
        else if (cli_is(a, "-m", "--model")) o.model_path = cli_str(&c, a);
        else if (cli_is(a, "-z", "--tokenizer")) o.tok_path = cli_str(&c, a);
        else if (cli_is(a, NULL, "--model-id")) o.model_id = cli_str(&c, a);
        else if (cli_is(a, NULL, "--lora-dir")) o.lora_dir = cli_str(&c, a);
        else if (cli_is(a, NULL, "--max-adapters")) cli_int(&c, a, 0, 1 << 20, &o.max_adapters);
        else if (cli_is(a, NULL, "--adapter-mem")) cli_size(&c, a, &adapter_mem);
        else if (cli_is(a, NULL, "--slots")) cli_int(&c, a, 1, 1024, &o.slots);
        else if (cli_is(a, NULL, "--max-batch-tokens")) cli_int(&c, a, 1, 65536, &o.max_batch_tokens);
        else if (cli_is(a, NULL, "--max-kv")) cli_size(&c, a, &max_kv);
        else if (cli_is(a, NULL, "--client-queue")) cli_int(&c, a, 1, 1 << 20, &o.client_queue);
        else if (cli_is(a, NULL, "--client-adapters")) cli_int(&c, a, 1, 1 << 20, &o.client_adapters);
        else if (tool_kv_option(&c, a, &o.kv_type)) continue;
        else if (tool_draft_option(&c, a, &dr)) continue;
        else if (cli_is_ctx(a)) cli_int(&c, a, 2, 1 << 20, &o.ctx);
        else if (cli_is(a, NULL, "--listen")) listen = cli_str(&c, a);
        else if (cli_is(a, NULL, "--api-key")) {
            const char *k = cli_str(&c, a);
            if (k && n_keys == 64) return cli_fail(&c, "--api-key: at most 64 keys");
            if (k && !*k) return cli_fail(&c, "--api-key: the key is empty");
            if (k) keys[n_keys++] = k;
        } else if (cli_is(a, NULL, "--max-body")) cli_size(&c, a, &max_body);
        else if (cli_is(a, NULL, "--max-queue")) cli_int(&c, a, 1, 1 << 20, &o.max_queue);
        else if (cli_is(a, NULL, "--template")) o.chat_template = cli_str(&c, a);
        else if (cli_is(a, NULL, "--mmproj")) o.mmproj = cli_str(&c, a);
        else if (cli_is(a, "-t", "--threads")) cli_int(&c, a, 1, 256, &o.threads);
        else if (cli_is(a, "-q", "--quiet")) quiet = 1;
        else return cli_unknown(&c, a);
    }
    if (c.failed) return 2;
    if (!o.model_path) return cli_fail(&c, "-m BASE is required");
    if (max_body == 0) max_body = o.mmproj ? 32u << 20 : 1u << 20;
    if (max_body < 64 || max_body > (1u << 30)) return cli_fail(&c, "--max-body %llu is outside 64..1G", (unsigned long long)max_body);
    el_addr addr;
    el_error aerr;
    if (el_addr_parse(listen, &addr, &aerr)) return cli_fail(&c, "--listen: %s", aerr.msg);
    o.host = addr.host;
    o.port = addr.port;
    o.adapter_mem = (size_t)adapter_mem;
    o.max_body = (size_t)max_body;
    o.max_kv = (size_t)max_kv;
    o.api_keys = keys;
    o.n_api_keys = n_keys;
    if (dr.arg) {
        o.draft_path = dr.self_layers ? NULL : dr.arg;
        o.draft_layers = dr.self_layers;
        o.draft_k = dr.k;
    }

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);  // a client closing mid-stream must not end the server

    el_error err;
    el_server *s;
    if (el_server_start(&o, &s, &err)) return cli_error(&err);
    char shown[300];
    snprintf(shown, sizeof shown, el_addr_is_ipv6(&addr) ? "[%s]" : "%s", addr.host);
    fprintf(stderr, "serve: listening on http://%s:%d (%s, %d slots, KV cache budget %.1f MiB%s%s)\n", shown, el_server_port(s),
            o.model_path, o.slots ? o.slots : 16, (double)el_server_kv_budget(s) / (1 << 20), o.lora_dir ? ", adapters in " : "",
            o.lora_dir ? o.lora_dir : "");
    el_progress p;
    if (!quiet) el_progress_begin(&p, stderr, "serve", 0, "tok");
    while (!stop_flag) {
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
        if (!quiet) {
            uint64_t req, tok;
            int active, queued;
            el_server_stats(s, &req, &tok, &active, &queued);
            char extra[96];
            snprintf(extra, sizeof extra, "%llu requests, %d running, %d waiting", (unsigned long long)req, active, queued);
            el_progress_update(&p, tok, extra);
        }
    }
    if (!quiet) {
        uint64_t req, tok;
        int active, queued;
        el_server_stats(s, &req, &tok, &active, &queued);
        el_progress_end(&p, tok, "stopping");
    }
    fprintf(stderr, "serve: stopping\n");
    el_server_stop(s);
    return 0;
}
