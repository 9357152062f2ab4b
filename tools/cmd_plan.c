// edgellm profile / probe / plan: measure nodes and links, and choose a cut.
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "common.h"
#include "edgellm/linkemu.h"
#include "edgellm/plan.h"
#include "edgellm/spec.h"

// ---------------------------------------------------------------- profile

static const char *profile_usage =
    "usage: edgellm profile -m MODEL -o NODE.json [-t THREADS] [--ctx N[,N...]] [--reps R] [--batch B]\n"
    "\n"
    "Measures, on this node, each layer's decode time (one token) at a few context\n"
    "lengths and its prefill time per token in a batch, plus the embedding and the\n"
    "head; records per-layer weight bytes, KV bytes per position and the memory\n"
    "available. Every node writes the same format; `edgellm plan` reads it.\n"
    "\n"
    "  --ctx N,...   context lengths for decode (default 16,ctx/4,ctx/2 of the model)\n"
    "  --reps R      repetitions, median kept (default 5)\n"
    "  --batch B     prefill batch (default 64)\n"
    "\n"
    "example: edgellm profile -m model.gguf -t 2 -o device.json\n";

int cmd_profile(int argc, char **argv) {
    cli c;
    cli_init(&c, "profile", argc, argv);
    const char *model = NULL, *out = NULL, *ctxs = NULL, *a;
    el_profile_opts po = {.reps = 5, .prefill_batch = 64, .progress = stderr};
    int opt;
    while ((a = cli_next(&c, &opt))) {
        if (cli_is(a, "-h", "--help")) { fputs(profile_usage, stdout); return 0; }
        else if (cli_is(a, "-m", "--model")) model = cli_str(&c, a);
        else if (cli_is(a, "-o", "--output")) out = cli_str(&c, a);
        else if (cli_is(a, "-t", "--threads")) cli_int(&c, a, 1, 256, &po.threads);
        else if (cli_is(a, NULL, "--ctx")) ctxs = cli_str(&c, a);
        else if (cli_is(a, NULL, "--reps")) cli_int(&c, a, 1, 16, &po.reps);
        else if (cli_is(a, NULL, "--batch")) cli_int(&c, a, 1, 4096, &po.prefill_batch);
        else return cli_unknown(&c, a);
    }
    if (c.failed) return 2;
    if (!model || !out) return cli_fail(&c, "-m MODEL and -o NODE.json are required");
    if (ctxs) {
        const char *p = ctxs;
        while (*p) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p || v < 1 || v > (1 << 24) || po.n_ctx == EL_PROFILE_MAX_CTX ||
                (po.n_ctx && v <= po.ctx[po.n_ctx - 1]))
                return cli_fail(&c, "--ctx: '%s' is not an increasing list of up to %d lengths", ctxs, EL_PROFILE_MAX_CTX);
            po.ctx[po.n_ctx++] = (int)v;
            p = *end == ',' ? end + 1 : end;
            if (*end && *end != ',') return cli_fail(&c, "--ctx: '%s' is not a list of lengths", ctxs);
        }
    }
    el_error err;
    el_model *m;
    el_model_opts mo = {.threads = po.threads};  // striped for the threads it measures (0: all CPUs)
    if (el_model_open(model, &mo, &m, &err)) return cli_error(&err);
    if (!po.n_ctx) {
        int c4 = m->hp.ctx / 4 > 17 ? m->hp.ctx / 4 : 17, c2 = m->hp.ctx / 2 > c4 ? m->hp.ctx / 2 : c4 + 1;
        po.ctx[0] = 16, po.ctx[1] = c4, po.ctx[2] = c2;
        po.n_ctx = 3;
    }
    el_pool *pool = el_pool_new(po.threads);
    el_profile p;
    int rc = 1;
    if (!el_profile_measure(m, pool, &po, &p, &err)) {
        if (!el_profile_save(&p, out, &err)) {
            double dec = 0;
            for (int l = 0; l < p.n_layers; l++) dec += el_profile_decode(&p, l, p.ctx[0]);
            fprintf(stderr, "wrote %s: %d layers, decode %.3f ms/token at ctx %d (layers only), threads %d\n", out,
                    p.n_layers, dec * 1e3, p.ctx[0], p.threads);
            rc = 0;
        }
        el_profile_free(&p);
    }
    if (rc) cli_error(&err);
    el_pool_free(pool);
    el_model_close(m);
    return rc;
}

// ---------------------------------------------------------------- probe

static const char *probe_usage =
    "usage: edgellm probe --via HOST:PORT (--keys DIR --server-key FILE | --insecure) [--act-bytes N]\n"
    "                     [--reply-bytes N] [--json]\n"
    "\n"
    "Measures a live link to a worker with real messages: the throughput each way\n"
    "(bulk messages sized so that their transfer dominates the round trip) and the\n"
    "round trip of a decode step's messages (--act-bytes up, --reply-bytes back,\n"
    "default the same), less their serialisation.\n"
    "\n"
    "example: edgellm probe --via 127.0.0.1:7001 --insecure --act-bytes 4096\n";

int cmd_probe(int argc, char **argv) {
    cli c;
    cli_init(&c, "probe", argc, argv);
    tool_split ts;
    tool_split_init(&ts);
    int act_bytes = 4096, reply_bytes = 0, json = 0, opt;
    const char *a;
    while ((a = cli_next(&c, &opt))) {
        if (cli_is(a, "-h", "--help")) { fputs(probe_usage, stdout); return 0; }
        else if (cli_is(a, NULL, "--act-bytes")) cli_int(&c, a, 1, 1 << 26, &act_bytes);
        else if (cli_is(a, NULL, "--reply-bytes")) cli_int(&c, a, 1, 1 << 26, &reply_bytes);
        else if (cli_is(a, NULL, "--json")) json = 1;
        else if (tool_split_option(&c, a, &ts)) continue;
        else return cli_unknown(&c, a);
    }
    if (c.failed) return 2;
    if (!ts.o.via) return cli_fail(&c, "--via HOST:PORT is required");
    ts.enabled = 1;
    if (!ts.o.n_cuts) ts.o.n_cuts = 1;
    if (tool_split_check(&c, &ts)) return 2;
    el_error err;
    el_model_opts mo = {0};
    if (tool_split_prepare(&ts, &mo, &err)) return cli_error(&err);
    el_link *l;
    if (el_link_connect(ts.o.via, &ts.o.sec, ts.o.timeout_ms > 0 ? ts.o.timeout_ms : 10000, &l, &err))
        return cli_error(&err);
    el_link_profile lp;
    el_status st = el_link_probe(l, (size_t)act_bytes, (size_t)(reply_bytes ? reply_bytes : act_bytes), &lp, &err);
    el_link_close(l);
    if (st) return cli_error(&err);
    if (json)
        printf("{\"rtt_ms\": %.4f, \"up_mbit\": %.3f, \"down_mbit\": %.3f, \"act_bytes\": %d}\n", lp.rtt_s * 1e3,
               lp.up_bps / 1e6, lp.down_bps / 1e6, act_bytes);
    else
        printf("%s: round trip %.3f ms, up %.2f Mbit/s, down %.2f Mbit/s (activation messages of %d bytes)\n", ts.o.via,
               lp.rtt_s * 1e3, lp.up_bps / 1e6, lp.down_bps / 1e6, act_bytes);
    return 0;
}

// ---------------------------------------------------------------- plan

static const char *plan_usage =
    "usage: edgellm plan --device DEVICE.json --edge EDGE.json (--rate R | --rate-up R --rate-down R) --rtt T\n"
    "                    [--edge2 EDGE2.json (--rate2 R | --rate2-up R --rate2-down R) --rtt2 T]\n"
    "                    [--device-mem BYTES] [--objective latency|device-energy|bytes] [--act f32|f16|bf16|q8_0|all]\n"
    "                    [--ushape] [--ctx N] [--prompt N] [--svg FILE] [--json]\n"
    "                    [--draft-alpha A (--draft-layers L | --draft-ms T)]\n"
    "\n"
    "Evaluates every cut (device keeps layers 0..K-1; K = layers means all local) and\n"
    "activation encoding with an additive model of the measured per-layer times,\n"
    "the round trip and the serialisation of each message, and prints a ranked\n"
    "table: predicted per-token decode latency with its parts, time to first token,\n"
    "bytes per token and device memory. Plans over the memory budget rank last.\n"
    "\n"
    "  --rate R          link rate both ways (e.g. 100mbit); --rate-up / --rate-down separately\n"
    "  --rtt T           round trip (e.g. 10ms)\n"
    "  --edge2 F         a second edge (e.g. a cloud) behind the first: plans cut the model in three\n"
    "                    (device 0..K-1, edge K..M-1, edge2 M..); --rate2/--rtt2 describe the edge-edge2 link\n"
    "  --device-mem B    device memory budget (e.g. 512M; default: the device profile's)\n"
    "  --objective O     latency (default), device-energy (device compute + radio), bytes\n"
    "  --act A           encodings to consider (default f32; 'all' = f32,f16,bf16,q8_0)\n"
    "  --ushape          also consider keeping the head on the device\n"
    "  --ctx N           context for decode costs (default 128); --prompt N for TTFT (default 32)\n"
    "  --svg FILE        draw predicted latency against the cut, the chosen cut marked\n"
    "  --draft-alpha A   speculative decoding on the chosen plan with acceptance rate A (0..1): the\n"
    "                    predicted tokens/s for k = 1..8 drafted tokens per round and the best k, by\n"
    "                    the model run --draft-k auto uses (a round: k draft tokens, then one pass of\n"
    "                    k+1 rows: the one-token latency plus each extra row's compute and bytes)\n"
    "  --draft-layers L  the draft is the model's first L layers + head on the device (self:L): its\n"
    "                    time per token from the device profile\n"
    "  --draft-ms T      or a separate draft model taking T ms per token on the device\n"
    "\n"
    "example: edgellm plan --device dev.json --edge edge.json --rate 100mbit --rtt 10ms --act all\n";

static void write_svg(const char *path, const el_plan_row *rows, int n, int L, const el_plan_row *best, el_error *err) {
    // best decode latency per cut
    double *lat = calloc((size_t)L + 1, sizeof(double));
    if (!lat) return;
    double maxv = 0;
    for (int k = 0; k <= L; k++) lat[k] = -1;
    for (int i = 0; i < n; i++) {
        int k = rows[i].cut;
        if (lat[k] < 0 || rows[i].decode_s < lat[k]) lat[k] = rows[i].decode_s;
    }
    for (int k = 0; k <= L; k++)
        if (lat[k] > maxv) maxv = lat[k];
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    int W = 640, H = 360, x0 = 60, y0 = 20, w = W - 80, h = H - 70;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"11\">\n", W, H);
    fprintf(f, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", x0, y0 + h, x0 + w, y0 + h);
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", x0, y0, x0, y0 + h);
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">cut K (device keeps layers 0..K-1)</text>\n", x0 + w / 2, H - 10);
    fprintf(f, "<text x=\"14\" y=\"%d\" transform=\"rotate(-90 14 %d)\" text-anchor=\"middle\">predicted ms / token</text>\n", y0 + h / 2, y0 + h / 2);
    for (int t = 0; t <= 4; t++) {
        double v = maxv * t / 4;
        int y = y0 + h - (int)(h * t / 4);
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%.2f</text>\n", x0 - 4, y + 4, v * 1e3);
    }
    fprintf(f, "<polyline fill=\"none\" stroke=\"steelblue\" stroke-width=\"2\" points=\"");
    for (int k = 0; k <= L; k++)
        if (lat[k] >= 0) fprintf(f, "%.1f,%.1f ", x0 + (double)w * k / L, y0 + h - h * lat[k] / (maxv > 0 ? maxv : 1));
    fprintf(f, "\"/>\n");
    for (int k = 0; k <= L; k++) {
        if (lat[k] < 0) continue;
        double x = x0 + (double)w * k / L, y = y0 + h - h * lat[k] / (maxv > 0 ? maxv : 1);
        int chosen = k == best->cut;
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%d\" fill=\"%s\"/>\n", x, y, chosen ? 6 : 3, chosen ? "crimson" : "steelblue");
        if (k % (L > 16 ? 4 : 1) == 0 || chosen)
            fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%d</text>\n", x, y0 + h + 14, k);
        if (chosen) fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" fill=\"crimson\">chosen: K=%d, %.2f ms</text>\n", x + 8, y - 8, k, lat[k] * 1e3);
    }
    fprintf(f, "</svg>\n");
    fclose(f);
    el_write_file_atomic(path, buf, len, err);
    free(buf);
    free(lat);
}

// Speculative decoding on plan r: the cost of a round of k drafted tokens
// from the profiles, and the k that run --draft-k auto would settle on.
static void plan_speculative(const el_plan_row *r, const el_plan_opts *po, double alpha, int draft_layers,
                             double draft_ms, int json) {
    const el_profile *dev = po->device, *edge = po->edge, *edge2 = po->edge2;
    el_spec_cost c = {.alpha = alpha};
    if (draft_layers > 0) {
        c.draft_s = dev->embed_s + dev->head_s;
        for (int l = 0; l < draft_layers; l++) c.draft_s += el_profile_decode(dev, l, po->ctx);
    } else {
        c.draft_s = draft_ms * 1e-3;
    }
    // one row costs the plan's latency; each further row its prefill-rate compute on every
    // node and its bytes (the one-row link time without the round trip)
    int L = dev->n_layers, cut2 = r->cut2 ? r->cut2 : L;
    double row = 0;
    for (int l = 0; l < L; l++) {
        const el_profile *p = l < r->cut ? dev : l < cut2 || !edge2 ? edge : edge2;
        row += p->prefill_s[l];
    }
    double bytes_s = r->link_s - po->link.rtt_s - (edge2 && cut2 < L ? po->link2.rtt_s : 0);
    c.verify_fixed_s = r->decode_s;
    c.verify_row_s = row + (bytes_s > 0 ? bytes_s : 0);
    c.verify_fixed_s -= c.verify_row_s;  // decode_s is already one row
    if (c.verify_fixed_s < 0) c.verify_fixed_s = 0;
    double best_tps;
    int best = el_spec_best_k(&c, 8, &best_tps);
    if (json) {
        printf("\"speculative\": {\"alpha\": %.4f, \"draft_ms\": %.4f, \"verify_fixed_ms\": %.4f, \"verify_row_ms\": %.4f, "
               "\"plain_tokens_per_s\": %.3f, \"best_k\": %d, \"k\": [", alpha, c.draft_s * 1e3, c.verify_fixed_s * 1e3,
               c.verify_row_s * 1e3, 1 / r->decode_s, best);
        for (int k = 1; k <= 8; k++)
            printf("%s{\"k\": %d, \"tokens_per_round\": %.4f, \"tokens_per_s\": %.3f}", k > 1 ? ", " : "", k,
                   el_spec_expected_tokens(alpha, k), el_spec_predict(&c, k));
        printf("]}");
        return;
    }
    printf("\nspeculative decoding on the chosen plan (cut %d): acceptance %.2f, draft %.3f ms/token, a round of k\n"
           "drafts verified in %.3f ms + %.3f ms per row; plain split %.1f tokens/s\n",
           r->cut, alpha, c.draft_s * 1e3, c.verify_fixed_s * 1e3, c.verify_row_s * 1e3, 1 / r->decode_s);
    printf("%4s %16s %12s %14s\n", "k", "tokens/round", "tokens/s", "vs plain");
    for (int k = 1; k <= 8; k++)
        printf("%4d %16.3f %12.1f %13.2fx%s\n", k, el_spec_expected_tokens(alpha, k), el_spec_predict(&c, k),
               el_spec_predict(&c, k) * r->decode_s, k == best ? "  <- best" : "");
}

int cmd_plan(int argc, char **argv) {
    cli c;
    cli_init(&c, "plan", argc, argv);
    const char *dev_path = NULL, *edge_path = NULL, *svg = NULL, *acts = "f32", *objective = "latency", *a;
    const char *rate = NULL, *rate_up = NULL, *rate_down = NULL, *rtt = NULL, *edge2_path = NULL;
    const char *rate2 = NULL, *rate2_up = NULL, *rate2_down = NULL, *rtt2 = NULL;
    float draft_alpha = -1, draft_ms = -1;
    int draft_layers = 0;
    uint64_t mem = 0;
    int json = 0, opt;
    el_plan_opts po = {.ctx = 128, .prompt_tokens = 32};
    while ((a = cli_next(&c, &opt))) {
        if (cli_is(a, "-h", "--help")) { fputs(plan_usage, stdout); return 0; }
        else if (cli_is(a, NULL, "--device")) dev_path = cli_str(&c, a);
        else if (cli_is(a, NULL, "--edge")) edge_path = cli_str(&c, a);
        else if (cli_is(a, NULL, "--rate")) rate = cli_str(&c, a);
        else if (cli_is(a, NULL, "--rate-up")) rate_up = cli_str(&c, a);
        else if (cli_is(a, NULL, "--rate-down")) rate_down = cli_str(&c, a);
        else if (cli_is(a, NULL, "--rtt")) rtt = cli_str(&c, a);
        else if (cli_is(a, NULL, "--edge2")) edge2_path = cli_str(&c, a);
        else if (cli_is(a, NULL, "--rate2")) rate2 = cli_str(&c, a);
        else if (cli_is(a, NULL, "--rate2-up")) rate2_up = cli_str(&c, a);
        else if (cli_is(a, NULL, "--rate2-down")) rate2_down = cli_str(&c, a);
        else if (cli_is(a, NULL, "--rtt2")) rtt2 = cli_str(&c, a);
        else if (cli_is(a, NULL, "--device-mem")) cli_size(&c, a, &mem);
        else if (cli_is(a, NULL, "--objective")) objective = cli_str(&c, a);
        else if (cli_is(a, NULL, "--act")) acts = cli_str(&c, a);
        else if (cli_is(a, NULL, "--ushape")) po.allow_ushape = 1;
        else if (cli_is(a, NULL, "--ctx")) cli_int(&c, a, 1, 1 << 24, &po.ctx);
        else if (cli_is(a, NULL, "--prompt")) cli_int(&c, a, 1, 1 << 24, &po.prompt_tokens);
        else if (cli_is(a, NULL, "--svg")) svg = cli_str(&c, a);
        else if (cli_is(a, NULL, "--draft-alpha")) cli_float(&c, a, 0, 1, &draft_alpha);
        else if (cli_is(a, NULL, "--draft-layers")) cli_int(&c, a, 1, 1 << 20, &draft_layers);
        else if (cli_is(a, NULL, "--draft-ms")) cli_float(&c, a, 0, 1e6, &draft_ms);
        else if (cli_is(a, NULL, "--json")) json = 1;
        else return cli_unknown(&c, a);
    }
    if (c.failed) return 2;
    if (!dev_path || !edge_path) return cli_fail(&c, "--device and --edge profiles are required");
    if (draft_alpha >= 0 && (draft_layers > 0) == (draft_ms >= 0))
        return cli_fail(&c, "--draft-alpha needs one of --draft-layers L or --draft-ms T");
    if (draft_alpha < 0 && (draft_layers > 0 || draft_ms >= 0)) return cli_fail(&c, "--draft-layers and --draft-ms need --draft-alpha");
    if (!rtt || (!rate && !(rate_up && rate_down))) return cli_fail(&c, "--rtt and --rate (or --rate-up and --rate-down) are required");
    if (!strcmp(objective, "latency")) po.objective = EL_OBJ_LATENCY;
    else if (!strcmp(objective, "device-energy")) po.objective = EL_OBJ_DEVICE_ENERGY;
    else if (!strcmp(objective, "bytes")) po.objective = EL_OBJ_BYTES;
    else return cli_fail(&c, "--objective '%s' is not latency, device-energy or bytes", objective);
    if (!strcmp(acts, "all")) acts = "f32,f16,bf16,q8_0";
    for (const char *p = acts; *p;) {
        size_t n = strcspn(p, ",");
        char name[16];
        snprintf(name, sizeof name, "%.*s", (int)(n < 15 ? n : 15), p);
        int dt = el_dtype_from_name(name);
        if (dt < 0 || !el_wire_act_supported(dt) || po.n_acts == 4) return cli_fail(&c, "--act: '%s' is not a supported encoding", name);
        po.acts[po.n_acts++] = dt;
        p += n + (p[n] == ',');
    }
    el_error err;
    uint64_t rtt_ns;
    if (el_linkemu_parse_duration(rtt, &rtt_ns, &err)) return cli_fail(&c, "--rtt: %s", err.msg);
    po.link.rtt_s = rtt_ns * 1e-9;
    const char *ru = rate_up ? rate_up : rate, *rd = rate_down ? rate_down : rate;
    if (!ru || !rd) return cli_fail(&c, "give --rate, or both --rate-up and --rate-down");
    if (el_linkemu_parse_rate(ru, &po.link.up_bps, &err) || po.link.up_bps <= 0) return cli_fail(&c, "--rate-up: '%s' is not a rate", ru);
    if (el_linkemu_parse_rate(rd, &po.link.down_bps, &err) || po.link.down_bps <= 0) return cli_fail(&c, "--rate-down: '%s' is not a rate", rd);
    if (edge2_path) {
        if (!rtt2 || (!rate2 && !(rate2_up && rate2_down))) return cli_fail(&c, "--edge2 needs --rtt2 and --rate2 (or --rate2-up and --rate2-down)");
        if (el_linkemu_parse_duration(rtt2, &rtt_ns, &err)) return cli_fail(&c, "--rtt2: %s", err.msg);
        po.link2.rtt_s = rtt_ns * 1e-9;
        const char *r2u = rate2_up ? rate2_up : rate2, *r2d = rate2_down ? rate2_down : rate2;
        if (el_linkemu_parse_rate(r2u, &po.link2.up_bps, &err) || po.link2.up_bps <= 0) return cli_fail(&c, "--rate2-up: '%s' is not a rate", r2u);
        if (el_linkemu_parse_rate(r2d, &po.link2.down_bps, &err) || po.link2.down_bps <= 0) return cli_fail(&c, "--rate2-down: '%s' is not a rate", r2d);
    }
    po.device_mem = (size_t)mem;
    el_profile dev, edge, edge2 = {0};
    if (el_profile_load(dev_path, &dev, &err)) return cli_error(&err);
    if (el_profile_load(edge_path, &edge, &err)) {
        el_profile_free(&dev);
        return cli_error(&err);
    }
    int rc = 1;
    if (edge2_path && el_profile_load(edge2_path, &edge2, &err)) goto out;
    const el_profile *others[2] = {&edge, &edge2};
    const char *other_paths[2] = {edge_path, edge2_path};
    for (int i = 0; i < (edge2_path ? 2 : 1); i++)
        if (dev.n_layers != others[i]->n_layers || dev.dim != others[i]->dim || dev.vocab != others[i]->vocab) {
            el_err(&err, EL_ERR_ARG, "%s and %s describe different models (%d vs %d layers)", dev_path, other_paths[i],
                   dev.n_layers, others[i]->n_layers);
            goto out;
        }
    po.device = &dev;
    po.edge = &edge;
    if (edge2_path) po.edge2 = &edge2;
    int max_rows = (dev.n_layers + 1) * (dev.n_layers + 1) * 8;
    el_plan_row *rows = calloc((size_t)max_rows, sizeof *rows);
    if (!rows) { el_err(&err, EL_ERR_NOMEM, "out of memory"); goto out; }
    int n = el_plan(&po, rows, max_rows);
    if (draft_alpha >= 0 && draft_layers > dev.n_layers) {
        el_err(&err, EL_ERR_ARG, "--draft-layers %d: the model has %d layers", draft_layers, dev.n_layers);
        free(rows);
        goto out;
    }
    if (json) {
        printf("{\"objective\": \"%s\", \"rtt_ms\": %.4f, \"up_mbit\": %.3f, \"down_mbit\": %.3f, \"plans\": [\n", objective,
               po.link.rtt_s * 1e3, po.link.up_bps / 1e6, po.link.down_bps / 1e6);
        for (int i = 0; i < n; i++) {
            const el_plan_row *r = &rows[i];
            printf("  {\"cut\": %d, \"cut2\": %d, \"act\": \"%s\", \"ushape\": %s, \"decode_ms\": %.4f, \"device_ms\": %.4f, "
                   "\"link_ms\": %.4f, \"edge_ms\": %.4f, \"edge2_ms\": %.4f, \"ttft_ms\": %.4f, \"bytes_per_token\": %.0f, "
                   "\"device_mem\": %zu, \"fits\": %s}%s\n",
                   r->cut, r->cut2, el_dtype_name(r->act_dtype), r->ushape ? "true" : "false", r->decode_s * 1e3,
                   r->device_s * 1e3, r->link_s * 1e3, r->edge_s * 1e3, r->edge2_s * 1e3, r->ttft_s * 1e3,
                   r->bytes_per_token, r->device_mem, r->fits ? "true" : "false", i + 1 < n ? "," : "");
        }
        printf("]");
        if (draft_alpha >= 0 && n > 0) {
            printf(", ");
            plan_speculative(&rows[0], &po, draft_alpha, draft_layers, draft_ms, 1);
        }
        printf("}\n");
    } else {
        printf("link: rtt %.3f ms, up %.2f Mbit/s, down %.2f Mbit/s; objective %s; decode at ctx %d, TTFT for %d prompt tokens\n",
               po.link.rtt_s * 1e3, po.link.up_bps / 1e6, po.link.down_bps / 1e6, objective, po.ctx, po.prompt_tokens);
        printf("%4s %4s%s %5s %6s %10s %9s %9s %9s%s %10s %10s %11s %s\n", "rank", "cut", edge2_path ? " cut2" : "", "act",
               "ushape", "ms/token", "device", "link", "edge", edge2_path ? "     edge2" : "", "TTFT ms", "bytes/tok",
               "device MiB", "");
        for (int i = 0; i < n; i++) {
            const el_plan_row *r = &rows[i];
            char c2[16] = "", e2[16] = "";
            if (edge2_path) {
                snprintf(c2, sizeof c2, " %4d", r->cut2);
                snprintf(e2, sizeof e2, " %9.3f", r->edge2_s * 1e3);
            }
            printf("%4d %4d%s %5s %6s %10.3f %9.3f %9.3f %9.3f%s %10.2f %10.0f %11.2f %s\n", i + 1, r->cut, c2,
                   r->cut == dev.n_layers ? "-" : el_dtype_name(r->act_dtype), r->ushape ? "yes" : "no", r->decode_s * 1e3,
                   r->device_s * 1e3, r->link_s * 1e3, r->edge_s * 1e3, e2, r->ttft_s * 1e3, r->bytes_per_token,
                   r->device_mem / 1048576.0, r->fits ? (i == 0 ? "<- chosen" : "") : "over the memory budget");
        }
    }
    if (svg && n > 0) write_svg(svg, rows, n, dev.n_layers, &rows[0], &err);
    if (draft_alpha >= 0 && n > 0 && !json) plan_speculative(&rows[0], &po, draft_alpha, draft_layers, draft_ms, 0);
    free(rows);
    rc = 0;
out:
    if (rc) cli_error(&err);
    el_profile_free(&dev);
    el_profile_free(&edge);
    el_profile_free(&edge2);
    return rc;
}
