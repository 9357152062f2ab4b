// edgellm bench: prefill and decode speed of a model on this machine, next to
// the machine's own limits measured in the same run (read bandwidth, peak f32
// FMA and int8 dot-product throughput), so the figures say how close the
// kernels get.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "common.h"
#include "edgellm/kernels.h"
#include "edgellm/model.h"
#include "edgellm/vision.h"

static const char *usage =
    "usage: edgellm bench -m MODEL [-p N] [-n N] [-t THREADS] [-r REPS] [--json]\n"
    "       edgellm bench --mmproj PROJ.gguf [-t THREADS] [-r REPS] [--json]\n"
    "       edgellm bench --peak [-t THREADS] [-r REPS] [--json]\n"
    "\n"
    "Measures prefill (one batch of N prompt tokens) and decode (N single-token\n"
    "steps after it) in tokens/s, mean and standard deviation over REPS runs, after\n"
    "one warm-up run. In the same run it measures the machine's read bandwidth\n"
    "(just before and after every decode: a shared machine's bandwidth drifts)\n"
    "and its peak f32 FMA throughput with the same threads (just before and after\n"
    "every prefill, 0.1 s each: the peak drifts too), and reports:\n"
    "  bytes read per decoded token: the weights (every matrix once per step)\n"
    "    and the cache rows attention reads (every layer's keys and values of\n"
    "    the positions so far, with a sliding window at most the window's; the\n"
    "    mean over the decode's steps)\n"
    "  bandwidth-limited decode = read bandwidth / those bytes, and the ratio\n"
    "    achieved / bandwidth-limited: the median over repetitions of each\n"
    "    repetition's decode against the bandwidth measured around it; and the\n"
    "    same from the median step's time (a step in which the machine took a\n"
    "    CPU away, as a VM over its CPU quota does for 100 ms at a time: the\n"
    "    median step discounts it, the mean does not), with the share of decode\n"
    "    time the steps took past the median\n"
    "  prefill effective GFLOP/s = 2 x the parameters multiplied per prompt token\n"
    "    (every layer's matrices; the head, which runs for the last token only,\n"
    "    divided by N) x prefill tokens/s, and its ratio to the FMA peak (above 1\n"
    "    needs integer dot products): the median over repetitions of each\n"
    "    repetition's prefill against the peak probed around it; the peaks printed\n"
    "    are the medians of those probes, the GFLOP/s come from the mean tokens/s\n"
    "  prefill at the median layer: each layer of a prefill is timed, and the\n"
    "    prefill's time taken as if every layer had run in the median layer's time\n"
    "    (the time outside the layers, embedding and head, as measured); tokens/s\n"
    "    and the ratios above from that, and the share of prefill time the layers\n"
    "    took past the median. Like the median step in decode, it discounts a CPU\n"
    "    taken away mid-prefill (with few layers it discounts less: with 2 or\n"
    "    fewer, the median is their mean)\n"
    "With AVX512-VNNI it also measures (around every prefill, in the same way),\n"
    "and sets prefill against:\n"
    "  the int8 dot-product peak (vpdpbusd chains only), and\n"
    "  the 32-block ceiling: the same with what each 32-element block costs\n"
    "    a Q8_0 or Q4_0 kernel per 16 rows and token on top of its 8 vpdpbusd\n"
    "    (a seed to start the sum from, then convert, multiply the two scales,\n"
    "    FMA; blocks as independent of each other as the kernels' are): the\n"
    "    most a kernel for those types can reach here, whatever its loads and\n"
    "    cache blocking (prefill is set against it for q8_0 and q4_0 models)\n"
    "Tokens are fixed pseudo-random ids; no tokenizer is needed.\n"
    "With --mmproj it times the vision encoder instead: one image (fixed\n"
    "pseudo-random pixels, already preprocessed) through the ViT and projector,\n"
    "REPS times after a warm-up, in GFLOP/s (2 per multiply-add of every matrix\n"
    "product and of attention) against the f32 FMA peak measured in the same run.\n"
    "With --peak it prints only the machine's probes: the f32 FMA peak (the best of\n"
    "REPS probes) on the widest vector level the CPU has, and the int8 dot peak: the\n"
    "same probe code every ratio in the benchmarks takes its peak from (bench/*.sh\n"
    "call it).\n"
    "\n"
    "  -m, --model FILE    GGUF model or llama2.c checkpoint\n"
    "      --mmproj FILE   a projector file: time the image encoder\n"
    "      --isa LEVEL     with --mmproj: the kernel level of its products and attention,\n"
    "                      avx512 (its own tiles; default where the CPU has it) or avx2\n"
    "                      (OpenBLAS sgemm), to compare them\n"
    "  -p, --prompt N      prefill tokens (default 128)\n"
    "  -n, --decode N      decode steps (default 64)\n"
    "                      (both defaults are halved until they fit the model's context; given\n"
    "                      values past it run with a warning, as --ctx does elsewhere)\n"
    "  -t, --threads N     threads (default: all CPUs)\n"
    "  -r, --reps N        measured repetitions (default 3)\n"
    "      --bw-mib N      buffer for the bandwidth probe (default 512 MiB)\n"
    "      --json          one JSON object on stdout instead of the table\n"
    "\n"
    "example: edgellm bench -m tinyllama-q8_0.gguf -p 128 -n 64 -t 2 -r 3\n";

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// median of n values (sorts a copy); 0 when n <= 0, or past 1000 values
// when there is no memory for the copy
static double median(const double *v, int n) {
    double stack[1000], *tmp = n <= 1000 ? stack : malloc((size_t)n * sizeof(double));
    if (n <= 0 || !tmp) return 0;
    memcpy(tmp, v, (size_t)n * sizeof(double));
    qsort(tmp, (size_t)n, sizeof(double), cmp_double);
    double m = n % 2 ? tmp[n / 2] : 0.5 * (tmp[n / 2 - 1] + tmp[n / 2]);
    if (tmp != stack) free(tmp);
    return m;
}

static void mean_sd(const double *v, int n, double *mean, double *sd) {
    double s = 0, ss = 0;
    for (int i = 0; i < n; i++) s += v[i];
    *mean = s / n;
    for (int i = 0; i < n; i++) ss += (v[i] - *mean) * (v[i] - *mean);
    *sd = n > 1 ? sqrt(ss / (n - 1)) : 0;
}

// Parameters that take part in matrix products per token: every layer
// matrix and the output head (the embedding is a row lookup, not a product).
static double matmul_params(const el_model *m) {
    const el_hparams *h = &m->hp;
    double p = (double)el_model_n_params(m);
    if (!h->tied_output) p -= (double)h->vocab * h->dim;  // token_embd lookup
    p -= (double)h->dim * (2.0 * h->n_layers + 1);         // norms
    return p;
}

// What a prefill of n tokens multiplies per token: every layer's matrices for
// each token, the head for the last one only (el_session_forward keeps one
// row of logits). Counting the head for every token (2026-12-05 and before)
// overstated the TinyLlama-shaped model's prefill by 6.3%.
static double prefill_params(const el_model *m, int n) {
    double head = m->has_head ? (double)m->hp.vocab * m->hp.dim : 0;
    return matmul_params(m) - head + head / n;
}

// The cache bytes a decode step of session s reads, the mean over steps at
// positions from..from+n-1: at position p the keys and values of every layer
// it runs (a block's bytes a position) of the p + 1 positions it attends to
// (with a sliding window, at most the window's).
static double kv_read_bytes(const el_session *s, int window, int from, int n) {
    double per_pos = (double)el_session_kv_block_bytes(s) / EL_KV_BLOCK, sum = 0;
    for (int p = from; p < from + n; p++) sum += window && p + 1 > window ? window : p + 1;
    return n > 0 ? per_pos * sum / n : 0;
}

// The compute peaks around one prefill, 0.1 s each: f32 FMA, int8 dot, the
// 32-block ceiling (0 where the CPU lacks them).
static void peaks(el_pool *pool, double out[3]) {
    out[0] = el_probe_fma_gflops(pool, 0.1);
    out[1] = el_probe_dot_gops(pool, 0.1, 0);
    out[2] = el_probe_dot_gops(pool, 0.1, 1);
}

static const char *main_dtype(const el_model *m) {
    return m->hp.n_layers > 0 ? el_dtype_name(m->layers[m->layer_begin].wq.dtype) : "?";
}

// The machine's probes alone, for the benchmark scripts: the f32 FMA peak on
// the widest ISA the CPU has (the best of reps probes), and the int8 dot peak.
static int bench_peak(int threads, int reps, int json) {
    el_pool *pool = el_pool_new(threads);
    if (!pool) {
        fprintf(stderr, "edgellm bench: cannot start %d threads\n", threads);
        return 1;
    }
    double peak = 0, dot = 0;
    for (int r = 0; r < reps; r++) {
        double p = el_probe_fma_gflops(pool, 0.5), d = el_probe_dot_gops(pool, 0.3, 0);
        if (p > peak) peak = p;
        if (d > dot) dot = d;
    }
    int n = el_pool_size(pool);
    el_pool_free(pool);
    const char *isa = el_isa_name(el_cpu_isa());
    if (json)
        printf("{\"threads\": %d, \"isa\": \"%s\", \"reps\": %d, \"fma_peak_gflops\": %.2f, \"int8_dot_peak_gops\": %.2f}\n",
               n, isa, reps, peak, dot);
    else
        printf("machine  f32 FMA peak %.1f GFLOP/s, int8 dot peak %.1f GOP/s (%s, %d threads, best of %d)\n", peak, dot,
               isa, n, reps);
    return 0;
}

// The vision encoder alone: encode time and throughput against the FMA peak.
static int bench_vision(const char *path, int threads, int reps, int json, const char *isa) {
    el_error err = {0};
    el_vision *v = NULL;
    el_pool *pool = NULL;
    float *pixels = NULL, *out = NULL;
    double *t = NULL;
    int rc = 1;
    if (el_vision_open(path, &v, &err)) goto out;
    if (isa) el_vision_set_isa(v, !strcmp(isa, "avx2") ? EL_ISA_AVX2 : EL_ISA_AVX512);
    const el_vision_hparams *h = el_vision_hp(v);
    size_t np = (size_t)3 * h->image_size * h->image_size;
    pool = el_pool_new(threads);
    pixels = malloc(np * sizeof(float));
    out = malloc((size_t)h->n_patches * h->out_dim * sizeof(float));
    t = calloc((size_t)reps, sizeof(double));
    if (!pool || !pixels || !out || !t) {
        el_err(&err, EL_ERR_NOMEM, "out of memory");
        goto out;
    }
    uint64_t rng = 0x9E3779B97F4A7C15ULL;
    for (size_t i = 0; i < np; i++) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        pixels[i] = (float)(rng % 2001) / 1000.0f - 1.0f;
    }
    int nthreads = el_pool_size(pool);
    const char *dt = el_dtype_name(el_vision_dtype(v));
    const char *level = isa && !strcmp(isa, "avx2") ? "avx2: OpenBLAS" : el_isa_name(el_cpu_isa());
    if (!json)
        fprintf(stderr, "bench: %s (%s; image %d, patch %d, width %d, %d of %d blocks, MLP %d; projector %d -> %d -> %d), "
                "%d threads, %s; 1 warm-up + %d encodes\n", path, dt, h->image_size, h->patch_size, h->hidden, h->n_run,
                h->n_blocks, h->ff, h->hidden, h->proj_hidden, h->out_dim, nthreads, level, reps);
    for (int r = -1; r < reps; r++) {
        double t0 = el_time_s();
        if (el_vision_encode(v, pool, pixels, out, &err)) goto out;
        if (r >= 0) t[r] = el_time_s() - t0;
    }
    double peak = el_probe_fma_gflops(pool, 0.5);
    double flops = el_vision_flops(v), m, sd;
    mean_sd(t, reps, &m, &sd);
    double best = t[0];
    for (int r = 1; r < reps; r++) best = t[r] < best ? t[r] : best;
    double gf = flops / m * 1e-9;
    if (json)
        printf("{\"mmproj\": \"%s\", \"dtype\": \"%s\", \"threads\": %d, \"isa\": \"%s\", \"reps\": %d, "
               "\"encode_s\": %.4f, \"encode_s_sd\": %.4f, \"encode_s_best\": %.4f, \"gflop\": %.3f, "
               "\"gflops\": %.2f, \"fma_peak_gflops\": %.2f, \"ratio\": %.4f, \"ratio_best\": %.4f}\n",
               path, dt, nthreads, level, reps, m, sd, best, flops * 1e-9, gf, peak,
               peak > 0 ? gf / peak : 0, peak > 0 ? flops / best * 1e-9 / peak : 0);
    else {
        printf("encode   %.3f ± %.3f s per image (best %.3f), %.1f GFLOP each = %.1f GFLOP/s\n", m, sd, best,
               flops * 1e-9, gf);
        printf("machine  f32 FMA peak %.1f GFLOP/s (%d threads)\n", peak, nthreads);
        printf("ratios   encode / FMA peak = %.2f (mean), %.2f (best)\n", peak > 0 ? gf / peak : 0,
               peak > 0 ? flops / best * 1e-9 / peak : 0);
    }
    rc = 0;
out:
    if (rc) cli_error(&err);
    free(t);
    free(pixels);
    free(out);
    el_pool_free(pool);
    el_vision_close(v);
    return rc;
}

int cmd_bench(int argc, char **argv) {
    cli c;
    cli_init(&c, "bench", argc, argv);
    const char *model_path = NULL, *mmproj = NULL, *isa = NULL, *a;
    int n_prompt = 128, n_decode = 64, threads = 0, reps = 3, json = 0, bw_mib = 512, opt, given = 0, peak_only = 0;
    while ((a = cli_next(&c, &opt))) {
        if (cli_is(a, "-h", "--help")) { fputs(usage, stdout); return 0; }
        else if (cli_is(a, "-m", "--model")) model_path = cli_str(&c, a);
        else if (cli_is(a, NULL, "--mmproj")) mmproj = cli_str(&c, a);
        else if (cli_is(a, NULL, "--isa")) isa = cli_str(&c, a);
        else if (cli_is(a, NULL, "--peak")) peak_only = 1;
        else if (cli_is(a, "-p", "--prompt")) given |= cli_int(&c, a, 1, 1 << 16, &n_prompt);
        else if (cli_is(a, "-n", "--decode")) given |= cli_int(&c, a, 0, 1 << 16, &n_decode);
        else if (cli_is(a, "-t", "--threads")) cli_int(&c, a, 1, 256, &threads);
        else if (cli_is(a, "-r", "--reps")) cli_int(&c, a, 1, 1000, &reps);
        else if (cli_is(a, NULL, "--bw-mib")) cli_int(&c, a, 16, 1 << 16, &bw_mib);
        else if (cli_is(a, NULL, "--json")) json = 1;
        else return cli_unknown(&c, a);
    }
    if (c.failed) return 2;
    if (mmproj && model_path) return cli_fail(&c, "give -m MODEL or --mmproj PROJ.gguf, not both");
    if (isa && (!mmproj || (strcmp(isa, "avx2") && strcmp(isa, "avx512"))))
        return cli_fail(&c, "--isa takes avx2 or avx512, with --mmproj");
    if (peak_only && (mmproj || model_path)) return cli_fail(&c, "--peak measures the machine: no -m or --mmproj");
    if (peak_only) return bench_peak(threads, reps, json);
    if (mmproj) return bench_vision(mmproj, threads, reps, json, isa);
    if (!model_path) return cli_fail(&c, "-m MODEL (or --mmproj PROJ.gguf) is required");

    el_error err = {0};
    el_model *m = NULL;
    el_pool *pool = NULL;
    el_session *s = NULL;
    float *logits = NULL;
    int *tokens = NULL, rc = 1;
    double *pre = NULL, *dec = NULL, *bws = NULL, *ratios = NULL, *pk = NULL, *steps = NULL, *sr = NULL;
    double *lclock = NULL, *lt = NULL, *pml = NULL;
    el_read_probe *probe = NULL;
    el_model_opts mo = {.threads = threads};  // the packed copy striped for the decode's threads
    if (el_model_open(model_path, &mo, &m, &err)) goto out;
    if (!given && n_prompt + n_decode > m->hp.ctx) {
        while (n_prompt + n_decode > m->hp.ctx && n_prompt > 1) n_prompt /= 2, n_decode /= 2;
        fprintf(stderr, "bench: -p %d -n %d to fit %s's context of %d\n", n_prompt, n_decode, model_path, m->hp.ctx);
    }
    int ctx = tool_ctx("bench", m, n_prompt + n_decode);
    pool = el_pool_new(threads);
    el_session_opts so = {.ctx = ctx, .max_batch = n_prompt};
    if (!pool || el_session_new(m, &so, pool, &s, &err)) goto out;
    logits = malloc((size_t)m->hp.vocab * sizeof(float));
    tokens = malloc((size_t)ctx * sizeof(int));
    pre = calloc((size_t)reps, sizeof(double));
    dec = calloc((size_t)reps, sizeof(double));
    bws = calloc((size_t)reps, sizeof(double));
    ratios = calloc((size_t)reps, sizeof(double));
    pk = calloc((size_t)reps * 6, sizeof(double));  // per rep: fma, dot, block peaks; then the three prefill ratios
    steps = calloc((size_t)n_decode + 1, sizeof(double));  // one repetition's step times
    sr = calloc((size_t)reps * 2, sizeof(double));  // per rep: the median step's ratio, the time past it
    int n_layers = m->layer_end - m->layer_begin;
    lclock = calloc((size_t)n_layers + 2, sizeof(double));  // a prefill's clock: before, after each layer, at the end
    lt = calloc((size_t)n_layers + 1, sizeof(double));      // its layers' times
    // per rep, at the median layer: tokens/s, the three prefill ratios, the time past it
    pml = calloc((size_t)reps * 5, sizeof(double));
    if (!logits || !tokens || !pre || !dec || !bws || !ratios || !pk || !steps || !sr || !lclock || !lt || !pml) {
        el_err(&err, EL_ERR_NOMEM, "out of memory");
        goto out;
    }
    uint64_t rng = 0x9E3779B97F4A7C15ULL;
    for (int i = 0; i < ctx; i++) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        tokens[i] = (int)(rng % (uint64_t)m->hp.vocab);
    }
    int nthreads = el_pool_size(pool);
    if (!json)
        fprintf(stderr, "bench: %s (%s), %d threads, %s%s; %d warm-up + %d runs of %d prefill + %d decode tokens\n",
                model_path, main_dtype(m), nthreads, el_isa_name(el_cpu_isa()),
                el_cpu_has_avx512vnni() ? "+vnni" : "", 1, reps, n_prompt, n_decode);
    // The buffer of the bandwidth probe is made once; the probe runs just
    // before and after each decode, so a decode is set against the bandwidth
    // of the same seconds (this kind of VM swings between ~33 and ~55 GB/s).
    probe = el_read_probe_new(pool, (size_t)bw_mib << 20);
    if (!probe)
        fprintf(stderr, "bench: no read-bandwidth probe (%s; %d MiB buffer): bandwidth and decode ratio read 0\n",
                el_cpu_isa() == EL_ISA_SCALAR ? "scalar kernels" : "out of memory", bw_mib);
    size_t wbytes = el_model_weight_bytes(m, 0, m->hp.n_layers, 0, 1);
    double kvbytes = kv_read_bytes(s, m->hp.sliding_window, n_prompt, n_decode), sbytes = (double)wbytes + kvbytes;
    double pre_params = prefill_params(m, n_prompt);
    double *fmas = pk, *dots = pk + reps, *blocks = pk + 2 * reps;
    double *r_fma = pk + 3 * reps, *r_dot = pk + 4 * reps, *r_block = pk + 5 * reps;
    for (int r = -1; r < reps; r++) {  // r = -1: warm-up (pages mapped, caches and pool warm)
        double before[3] = {0};
        if (r >= 0) peaks(pool, before);
        memset(lclock, 0, ((size_t)n_layers + 2) * sizeof(double));
        el_session_clock_layers(s, lclock, n_layers + 2);
        double t0 = el_time_s();
        if (el_session_forward(s, tokens, n_prompt, 0, logits, 0, &err)) goto out;
        double t1 = el_time_s();
        el_session_clock_layers(s, NULL, 0);
        if (r >= 0) {
            double after[3], gflops = 2.0 * pre_params * n_prompt / (t1 - t0) * 1e-9;
            peaks(pool, after);
            fmas[r] = 0.5 * (before[0] + after[0]), dots[r] = 0.5 * (before[1] + after[1]);
            blocks[r] = 0.5 * (before[2] + after[2]);
            r_fma[r] = fmas[r] > 0 ? gflops / fmas[r] : 0, r_dot[r] = dots[r] > 0 ? gflops / dots[r] : 0;
            r_block[r] = blocks[r] > 0 ? gflops / blocks[r] : 0;
            // Every layer at the median layer's time: the prefill's layers
            // have the same shapes, so one the machine took a CPU away in
            // stands out (one prefill step: max_batch is n_prompt).
            if (n_layers > 0 && el_session_max_batch(s) >= n_prompt && lclock[n_layers + 1] > 0) {
                double past = 0;
                for (int i = 0; i < n_layers; i++) lt[i] = lclock[i + 1] - lclock[i];
                double ml = median(lt, n_layers);
                for (int i = 0; i < n_layers; i++) past += lt[i] > ml ? lt[i] - ml : 0;
                double est = (t1 - t0) - (lclock[n_layers] - lclock[0]) + n_layers * ml;
                double g = est > 0 ? 2.0 * pre_params * n_prompt / est * 1e-9 : 0;
                pml[r] = est > 0 ? n_prompt / est : 0;
                pml[reps + r] = fmas[r] > 0 ? g / fmas[r] : 0;
                pml[2 * reps + r] = dots[r] > 0 ? g / dots[r] : 0;
                pml[3 * reps + r] = blocks[r] > 0 ? g / blocks[r] : 0;
                pml[4 * reps + r] = past / (t1 - t0);
            }
        }
        double bw0 = r >= 0 ? el_read_probe_run(probe, 3) : 0;
        double t2 = el_time_s(), ts = t2;
        for (int i = 0; i < n_decode; i++) {
            if (el_session_forward(s, &tokens[n_prompt + i], 1, n_prompt + i, logits, 0, &err)) goto out;
            double te = el_time_s();
            steps[i] = te - ts, ts = te;
        }
        double t3 = ts;
        if (r >= 0) {
            pre[r] = n_prompt / (t1 - t0);
            dec[r] = n_decode ? n_decode / (t3 - t2) : 0;
            bws[r] = 0.5 * (bw0 + el_read_probe_run(probe, 3));
            ratios[r] = bws[r] > 0 ? dec[r] * sbytes / (bws[r] * 1e9) : 0;
            // The median step: it discounts a step the machine took a CPU
            // away in (a VM over its CPU quota takes one for 100 ms at a
            // time; bench/hiccups.c), which the mean above does not.
            double med = n_decode ? median(steps, n_decode) : 0;
            sr[r] = med > 0 && bws[r] > 0 ? sbytes / med / (bws[r] * 1e9) : 0;
            double past = 0;  // the time steps took beyond the median step, as a share of the decode's
            for (int i = 0; med > 0 && i < n_decode; i++) past += steps[i] > med ? steps[i] - med : 0;
            sr[reps + r] = t3 > t2 ? past / (t3 - t2) : 0;
        }
    }
    double peak = median(fmas, reps), dot_peak = median(dots, reps), block_peak = median(blocks, reps);
    double pre_ratio = median(r_fma, reps), dot_ratio = median(r_dot, reps), block_ratio = median(r_block, reps);

    double pre_m, pre_sd, dec_m, dec_sd;
    mean_sd(pre, reps, &pre_m, &pre_sd);
    mean_sd(dec, reps, &dec_m, &dec_sd);
    double bw = median(bws, reps), ratio = median(ratios, reps), step_ratio = median(sr, reps);
    double pre_ml = median(pml, reps), ratio_ml = median(pml + reps, reps), dot_ml = median(pml + 2 * reps, reps);
    double block_ml = median(pml + 3 * reps, reps);
    double bw_limit = bw > 0 ? bw * 1e9 / sbytes : 0;
    double params = matmul_params(m);
    double pre_gflops = 2.0 * pre_params * pre_m * 1e-9;
    if (json) {
        printf("{\"model\": \"%s\", \"dtype\": \"%s\", \"threads\": %d, \"isa\": \"%s\", \"vnni\": %s, "
               "\"prompt_tokens\": %d, \"decode_tokens\": %d, \"reps\": %d, "
               "\"prefill_tok_s\": %.3f, \"prefill_tok_s_sd\": %.3f, \"decode_tok_s\": %.3f, \"decode_tok_s_sd\": %.3f, "
               "\"weight_bytes_per_token\": %zu, \"kv_bytes_per_token\": %.0f, \"read_bandwidth_gb_s\": %.3f, \"bandwidth_limited_tok_s\": %.3f, "
               "\"decode_ratio\": %.4f, \"fma_peak_gflops\": %.2f, \"matmul_params\": %.0f, \"prefill_params_per_token\": %.1f, "
               "\"prefill_gflops\": %.2f, \"prefill_ratio\": %.4f, \"int8_dot_peak_gops\": %.2f, "
               "\"block32_ceiling_gops\": %.2f, \"prefill_dot_ratio\": %.4f, \"prefill_block32_ratio\": %.4f, "
               "\"decode_ratio_median_step\": %.4f, \"prefill_tok_s_median_layer\": %.3f, \"prefill_ratio_median_layer\": %.4f, "
               "\"prefill_dot_ratio_median_layer\": %.4f, \"prefill_block32_ratio_median_layer\": %.4f",
               model_path, main_dtype(m), nthreads, el_isa_name(el_cpu_isa()),
               el_cpu_has_avx512vnni() ? "true" : "false", n_prompt, n_decode, reps, pre_m, pre_sd, dec_m, dec_sd,
               wbytes, kvbytes, bw, bw_limit, ratio, peak, params, pre_params, pre_gflops, pre_ratio, dot_peak, block_peak,
               dot_ratio, block_ratio, step_ratio, pre_ml, ratio_ml, dot_ml, block_ml);
        // per repetition: tokens/s, the peaks and bandwidth probed around them, the decode ratios
        const char *key[] = {"prefill_tok_s_per_rep", "fma_peak_per_rep", "int8_dot_peak_per_rep", "block32_ceiling_per_rep",
                             "decode_tok_s_per_rep", "read_bandwidth_per_rep", "decode_ratio_per_rep",
                             "decode_ratio_median_step_per_rep", "decode_time_past_median_step_per_rep",
                             "prefill_tok_s_median_layer_per_rep", "prefill_ratio_median_layer_per_rep",
                             "prefill_dot_ratio_median_layer_per_rep", "prefill_block32_ratio_median_layer_per_rep",
                             "prefill_time_past_median_layer_per_rep"};
        const double *val[] = {pre, fmas, dots, blocks, dec, bws, ratios, sr, sr + reps,
                               pml, pml + reps, pml + 2 * reps, pml + 3 * reps, pml + 4 * reps};
        for (int i = 0; i < 14; i++) {
            printf(", \"%s\": [", key[i]);
            for (int r = 0; r < reps; r++) printf("%s%.4f", r ? ", " : "", val[i][r]);
            printf("]");
        }
        printf("}\n");
    } else {
        printf("prefill  %8.2f ± %.2f tok/s   %.1f effective GFLOP/s (2 x %.4g params/token) = %.2f x FMA peak\n",
               pre_m, pre_sd, pre_gflops, pre_params, pre_ratio);
        printf("prefill  %8.2f tok/s at the median layer (median of reps)\n", pre_ml);
        printf("decode   %8.2f ± %.2f tok/s   %.1f MiB of weights + %.2f MiB of cache rows/token = %.2f GB/s read\n",
               dec_m, dec_sd, (double)wbytes / 1048576.0, kvbytes / 1048576.0, dec_m * sbytes * 1e-9);
        printf("machine  read bandwidth %.2f GB/s, f32 FMA peak %.1f GFLOP/s (%d threads)\n", bw, peak, nthreads);
        if (dot_peak > 0 && peak > 0)
            printf("machine  int8 dot peak %.1f GOP/s (%.2f x FMA peak), 32-block ceiling %.1f GOP/s (%.2f x)\n",
                   dot_peak, dot_peak / peak, block_peak, block_peak / peak);
        printf("per rep  read bandwidth GB/s:");
        for (int r = 0; r < reps; r++) printf(" %.1f", bws[r]);
        printf(";  decode / bandwidth-limited:");
        for (int r = 0; r < reps; r++) printf(" %.2f", ratios[r]);
        printf("\nper rep  decode / bandwidth-limited at the median step:");
        for (int r = 0; r < reps; r++) printf(" %.2f", sr[r]);
        printf(";  decode time past the median step:");
        for (int r = 0; r < reps; r++) printf(" %.0f%%", 100 * sr[reps + r]);
        printf("\nper rep  f32 FMA peak GFLOP/s:");
        for (int r = 0; r < reps; r++) printf(" %.1f", fmas[r]);
        printf(";  prefill / FMA peak:");
        for (int r = 0; r < reps; r++) printf(" %.2f", r_fma[r]);
        printf("\nper rep  prefill / FMA peak at the median layer:");
        for (int r = 0; r < reps; r++) printf(" %.2f", pml[reps + r]);
        printf(";  prefill time past the median layer:");
        for (int r = 0; r < reps; r++) printf(" %.0f%%", 100 * pml[4 * reps + r]);
        printf("\n");
        const char *dt = main_dtype(m);
        int block_type = !strcmp(dt, "q8_0") || !strcmp(dt, "q4_0");  // the ceiling is these kernels'
        if (dot_peak > 0 && block_type) {
            printf("per rep  32-block ceiling GOP/s:");
            for (int r = 0; r < reps; r++) printf(" %.1f", blocks[r]);
            printf(";  prefill / 32-block ceiling:");
            for (int r = 0; r < reps; r++) printf(" %.2f", r_block[r]);
            printf(", at the median layer:");
            for (int r = 0; r < reps; r++) printf(" %.2f", pml[3 * reps + r]);
            printf("\n");
        }
        printf("ratios   decode / bandwidth-limited (%.2f tok/s) = %.2f (median of reps), %.2f at the median step;  "
               "prefill / FMA peak = %.2f, %.2f at the median layer\n",
               bw_limit, ratio, step_ratio, pre_ratio, ratio_ml);
        if (dot_peak > 0) {
            // the ceiling is the Q8_0/Q4_0 kernels' (32-element blocks, float scales)
            printf("ratios   prefill / int8 dot peak = %.2f (%.2f at the median layer)", dot_ratio, dot_ml);
            if (block_type && block_peak > 0)
                printf(";  prefill / 32-block ceiling = %.2f (%.2f at the median layer; medians of reps)", block_ratio,
                       block_ml);
            printf("\n");
        }
    }
    rc = 0;
out:
    if (rc) cli_error(&err);
    el_read_probe_free(probe);
    free(pre);
    free(dec);
    free(bws);
    free(ratios);
    free(pk);
    free(steps);
    free(sr);
    free(lclock);
    free(lt);
    free(pml);
    free(tokens);
    free(logits);
    el_session_free(s);
    el_pool_free(pool);
    el_model_close(m);
    return rc;
}
