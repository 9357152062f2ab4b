// edgellm finetune: train a LoRA adapter on a text or JSON-lines dataset,
// with validation loss, checkpoints and an exact resume.
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "common.h"
#include "edgellm/lora.h"
#include "edgellm/model.h"
#include "edgellm/splittrain.h"
#include "edgellm/train.h"

static const char *usage =
    "usage: edgellm finetune -m BASE [-z TOK] --data FILE -o ADAPTER.gguf [options]\n"
    "\n"
    "Trains a LoRA adapter for BASE (f32, f16, bf16 or any quantized type the\n"
    "build can read: QLoRA) and writes it in the GGUF LoRA adapter format.\n"
    "The base stays frozen; only the adapter's A and B matrices learn.\n"
    "\n"
    "  -m, --model FILE        base model (GGUF or llama2.c checkpoint)\n"
    "  -z, --tokenizer FILE    tokenizer (default: the model's own)\n"
    "      --data FILE         training data\n"
    "      --format text|jsonl text: paragraphs (blank-line separated) cut into windows;\n"
    "                          jsonl: {\"prompt\": ..., \"completion\": ...} per line, loss on\n"
    "                          the completion only (default: from the extension)\n"
    "      --val FILE          validation data (same format)\n"
    "  -o, --output FILE       adapter to write\n"
    "      --rank R            LoRA rank (default 8)\n"
    "      --alpha A           LoRA alpha; the update is scaled by alpha/rank (default 16)\n"
    "      --targets LIST      projections to adapt: q,k,v,o,gate,up,down or all (default all)\n"
    "      --lr LR             peak learning rate (default 1e-3); linear warm-up, cosine decay to 10%\n"
    "      --warmup N          warm-up steps (default: 5% of the steps, at most 100)\n"
    "      --weight-decay W    AdamW decoupled weight decay (default 0)\n"
    "      --clip C            gradient-norm clip (default 1; 0 = off)\n"
    "      --epochs N          passes over the data (default 1)\n"
    "      --steps N           optimizer steps (overrides --epochs)\n"
    "      --batch B           sequences per micro-batch (default 4)\n"
    "      --grad-accum G      micro-batches per optimizer step (default 1)\n"
    "      --ctx N             tokens per sequence (default: min(model's, 256))\n"
    "      --seed S            initialisation and shuffling seed (default 1)\n"
    "      --eval-every N      validation loss every N steps (default: 10 evaluations a run)\n"
    "      --val-samples N     validation samples per evaluation (default 256)\n"
    "      --checkpoint-every N  write ADAPTER.gguf.ckpt every N steps (default 0 = off)\n"
    "      --resume            continue from ADAPTER.gguf.ckpt: ends bit for bit where an\n"
    "                          uninterrupted run would (same options and threads). Ctrl-C\n"
    "                          writes that checkpoint after the current step and exits 130\n"
    "  -t, --threads N         threads (default: all CPUs)\n"
    "\n"
    "split fine-tuning (the device keeps the data; a worker started with --train trains the rest):\n"
    "      --split K           the device trains the embedding and layers 0..K-1 (K >= 1)\n"
    "      --via HOST:PORT      the worker; --keys DIR --server-key FILE (CURVE) or --insecure (loopback)\n"
    "      --ushape            the device also keeps the head and the loss: labels never leave it\n"
    "      --act f32|f16|bf16  activations sent to the worker (default f32)\n"
    "      --grad f32|f16|bf16 gradients sent back (default f32)\n"
    "      --fed-every N       every N steps, average the device-side adapter with the other\n"
    "                          devices training against the same worker (federated, weighted by samples)\n"
    "      --timeout MS        per request (default 120000)\n"
    "      --stats             per step: device compute, link time, worker compute, bytes each way\n"
    "      --json              the run's totals as one JSON object on stderr at the end\n"
    "  The output is the joined adapter for the whole model; ADAPTER.device.gguf and\n"
    "  ADAPTER.worker.gguf hold the two halves (see edgellm lora-join).\n"
    "\n"
    "  -h, --help              this text\n"
    "\n"
    "example: edgellm finetune -m ../shared/models/aidreams260K.bin -z ../shared/models/tok512.bin \\\n"
    "           --data data/finetune/pirate-dreams.txt --val data/finetune/pirate-dreams-val.txt \\\n"
    "           --epochs 8 --lr 3e-3 -o pirate.gguf\n"
    "         edgellm finetune ... --split 2 --via edge:7001 --keys keys/phone --server-key edge.key --ushape\n";

typedef struct {
    int n;
    uint64_t seed;
    uint64_t epoch;
    int *perm;
} order;

// The sample order of an epoch: a Fisher-Yates shuffle seeded by (seed, epoch),
// so the order at any position is recomputed exactly on resume.
static int order_at(order *o, uint64_t pos) {
    uint64_t e = pos / (uint64_t)o->n;
    if (e != o->epoch) {
        o->epoch = e;
        for (int i = 0; i < o->n; i++) o->perm[i] = i;
        uint64_t x = (o->seed ^ 0xA0761D6478BD642FULL) * 0x9E3779B97F4A7C15ULL + e * 0xE7037ED1A0B428DBULL + 1;
        for (int i = o->n - 1; i > 0; i--) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            int j = (int)(x % (uint64_t)(i + 1));
            int t = o->perm[i];
            o->perm[i] = o->perm[j];
            o->perm[j] = t;
        }
    }
    return o->perm[pos % (uint64_t)o->n];
}

static float lr_at(uint64_t step, uint64_t total, int warmup, float peak) {
    if (warmup > 0 && step < (uint64_t)warmup) return peak * (float)(step + 1) / (float)warmup;
    double span = total > (uint64_t)warmup ? (double)(total - warmup) : 1.0;
    double p = (double)(step - warmup) / span;
    if (p > 1) p = 1;
    return (float)(peak * (0.1 + 0.9 * 0.5 * (1 + cos(M_PI * p))));
}

typedef struct {
    el_train_stage *st;
    el_split_trainer *split;  // non-NULL: the rest of the model trains on a worker
    int rows, T, B, dim;
    int *tokens, *targets;
    float *mask, *x;
} batch_buf;

// Loads samples[first .. first+B) (wrapping through ord when given, else in
// order and masked out past the end) into the batch.
static void fill_batch(batch_buf *b, const el_dataset *d, order *ord, uint64_t pos) {
    for (int s = 0; s < b->B; s++) {
        int idx;
        if (ord) idx = order_at(ord, pos + (uint64_t)s);
        else idx = (int)(pos + (uint64_t)s);
        int *tk = b->tokens + (size_t)s * b->T, *tg = b->targets + (size_t)s * b->T;
        float *mk = b->mask + (size_t)s * b->T;
        if (idx >= el_dataset_size(d)) {
            for (int t = 0; t < b->T; t++) tk[t] = 0, tg[t] = -1, mk[t] = 0;
            continue;
        }
        el_dataset_get(d, idx, tk, tg, mk);
    }
}

static el_status eval_loss(batch_buf *b, const el_dataset *d, int max_samples, double *loss, el_error *err) {
    int n = el_dataset_size(d);
    if (n > max_samples) n = max_samples;
    double sum = 0, tok = 0;
    for (int at = 0; at < n; at += b->B) {
        fill_batch(b, d, NULL, (uint64_t)at);
        for (int s = 0; s < b->B; s++)
            if (at + s >= n)
                for (int t = 0; t < b->T; t++) b->mask[(size_t)s * b->T + t] = 0;
        double l, nt;
        el_status st;
        if (b->split) {
            if ((st = el_split_trainer_eval(b->split, b->tokens, b->targets, b->mask, &l, &nt, err))) return st;
        } else if ((st = el_train_embed(b->st, b->tokens, b->x, err)) || (st = el_train_layers_forward(b->st, b->x, err)) ||
                   (st = el_train_head(b->st, b->x, b->targets, b->mask, &l, &nt, NULL, 1, NULL, err))) {
            return st;
        }
        sum += l * nt;
        tok += nt;
    }
    *loss = tok > 0 ? sum / tok : NAN;
    return EL_OK;
}

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

int cmd_finetune(int argc, char **argv) {
    cli c;
    cli_init(&c, "finetune", argc, argv);
    const char *model_path = NULL, *tok_path = NULL, *data_path = NULL, *val_path = NULL, *out_path = NULL;
    const char *format = NULL, *targets_s = "all", *a;
    int rank = 8, epochs = 1, steps = 0, batch = 4, accum = 1, ctx = 0, threads = 0, resume = 0, warmup = -1;
    int ckpt_every = 0, eval_every = 0, val_samples = 256, opt;
    float alpha = 16, lr = 1e-3f, wd = 0, clip = 1;
    uint64_t seed = 1;
    tool_split ts;
    tool_split_init(&ts);
    const char *grad_s = NULL;
    int fed_every = 0, stats = 0, json = 0;
    while ((a = cli_next(&c, &opt))) {
        if (cli_is(a, "-h", "--help")) { fputs(usage, stdout); return 0; }
        else if (cli_is(a, "-m", "--model")) model_path = cli_str(&c, a);
        else if (cli_is(a, "-z", "--tokenizer")) tok_path = cli_str(&c, a);
        else if (cli_is(a, NULL, "--data")) data_path = cli_str(&c, a);
        else if (cli_is(a, NULL, "--val")) val_path = cli_str(&c, a);
        else if (cli_is(a, NULL, "--format")) format = cli_str(&c, a);
        else if (cli_is(a, "-o", "--output")) out_path = cli_str(&c, a);
        else if (cli_is(a, NULL, "--rank")) cli_int(&c, a, 1, 4096, &rank);
        else if (cli_is(a, NULL, "--alpha")) cli_float(&c, a, 1e-6, 1e6, &alpha);
        else if (cli_is(a, NULL, "--targets")) targets_s = cli_str(&c, a);
        else if (cli_is(a, NULL, "--lr")) cli_float(&c, a, 0, 10, &lr);
        else if (cli_is(a, NULL, "--warmup")) cli_int(&c, a, 0, 1 << 30, &warmup);
        else if (cli_is(a, NULL, "--weight-decay")) cli_float(&c, a, 0, 10, &wd);
        else if (cli_is(a, NULL, "--clip")) cli_float(&c, a, 0, 1e6, &clip);
        else if (cli_is(a, NULL, "--epochs")) cli_int(&c, a, 1, 1 << 20, &epochs);
        else if (cli_is(a, NULL, "--steps")) cli_int(&c, a, 1, 1 << 30, &steps);
        else if (cli_is(a, NULL, "--batch")) cli_int(&c, a, 1, 4096, &batch);
        else if (cli_is(a, NULL, "--grad-accum")) cli_int(&c, a, 1, 4096, &accum);
        else if (cli_is_ctx(a)) cli_int(&c, a, 1, 1 << 20, &ctx);
        else if (cli_is(a, NULL, "--seed")) cli_u64(&c, a, &seed);
        else if (cli_is(a, NULL, "--eval-every")) cli_int(&c, a, 1, 1 << 30, &eval_every);
        else if (cli_is(a, NULL, "--val-samples")) cli_int(&c, a, 1, 1 << 24, &val_samples);
        else if (cli_is(a, NULL, "--checkpoint-every")) cli_int(&c, a, 0, 1 << 30, &ckpt_every);
        else if (cli_is(a, NULL, "--resume")) resume = 1;
        else if (cli_is(a, "-t", "--threads")) cli_int(&c, a, 1, 256, &threads);
        else if (cli_is(a, NULL, "--grad")) grad_s = cli_str(&c, a);
        else if (cli_is(a, NULL, "--fed-every")) cli_int(&c, a, 1, 1 << 30, &fed_every);
        else if (cli_is(a, NULL, "--stats")) stats = 1;
        else if (cli_is(a, NULL, "--json")) json = 1;
        else if (tool_split_option(&c, a, &ts)) continue;
        else return cli_unknown(&c, a);
    }
    if (c.failed) return 2;
    if (!model_path) return cli_fail(&c, "-m MODEL is required");
    if (!data_path) return cli_fail(&c, "--data FILE is required");
    if (!out_path) return cli_fail(&c, "-o ADAPTER.gguf is required");
    if (tool_split_check(&c, &ts)) return 2;
    int split = ts.enabled, grad_dtype = EL_DTYPE_F32;
    if (split && (ts.autoplan || ts.o.n_cuts != 1)) return cli_fail(&c, "--split takes one cut point K for finetune");
    if (grad_s && ((grad_dtype = el_dtype_from_name(grad_s)) < 0 || !el_wire_act_supported(grad_dtype) ||
                   grad_dtype == EL_DTYPE_Q8_0))
        return cli_fail(&c, "--grad: '%s' is not f32, f16 or bf16", grad_s);
    if (split && resume) return cli_fail(&c, "--resume is not supported with --split yet");
    if (fed_every && !split) return cli_fail(&c, "--fed-every needs --split");
    el_data_format fmt = EL_DATA_TEXT;
    if (format) {
        if (!strcmp(format, "jsonl")) fmt = EL_DATA_JSONL;
        else if (strcmp(format, "text")) return cli_fail(&c, "--format must be text or jsonl, not '%s'", format);
    } else if (ends_with(data_path, ".jsonl")) {
        fmt = EL_DATA_JSONL;
    }

    el_error err = {0};
    el_model *m = NULL;
    el_tokenizer *tok = NULL;
    el_dataset *train = NULL, *val = NULL;
    el_lora *lora = NULL;
    el_pool *pool = NULL;
    el_train_stage *st = NULL;
    el_split_trainer *trainer = NULL;
    el_lora *worker_part = NULL, *joined = NULL;
    el_model *full = NULL;
    float *mom = NULL, *vel = NULL;
    batch_buf b = {0};
    order ord = {0};
    int rc = 1;
    char ckpt_path[4096];
    snprintf(ckpt_path, sizeof ckpt_path, "%s.ckpt", out_path);
    unsigned targets;
    if (el_lora_parse_targets(targets_s, &targets, &err)) goto out;
    el_model_opts mo = {.no_pack = 1};  // training reads the file's rows (el_tensor_row_f32)
    if (tool_split_prepare(&ts, &mo, &err)) goto out;
    if (el_model_open(model_path, &mo, &m, &err)) goto out;
    if (tool_split_check_model(&ts, m, &err)) goto out;
    if (split && ts.o.cuts[0] == 0) {
        el_err(&err, EL_ERR_ARG, "--split 0: the device must train at least one layer with its embedding (use --split 1 or more)");
        goto out;
    }
    if (split && ts.o.cuts[0] >= m->hp.n_layers) {
        el_err(&err, EL_ERR_ARG, "--split %d leaves no layers to the worker (%s has %d)", ts.o.cuts[0], model_path,
               m->hp.n_layers);
        goto out;
    }
    ctx = tool_ctx("finetune", m, ctx ? ctx : m->hp.ctx < 256 ? m->hp.ctx : 256);
    if (el_model_tokenizer(m, tok_path, &tok, &err)) goto out;
    if (el_dataset_load(data_path, fmt, tok, ctx, &train, &err)) goto out;
    if (val_path && el_dataset_load(val_path, fmt, tok, ctx, &val, &err)) goto out;
    int n_train = el_dataset_size(train);
    uint64_t per_step = (uint64_t)batch * accum;
    uint64_t total = steps ? (uint64_t)steps : ((uint64_t)n_train * epochs + per_step - 1) / per_step;
    if (warmup < 0) warmup = (int)(total / 20 < 100 ? total / 20 : 100);
    if (!eval_every) eval_every = total >= 10 ? (int)(total / 10) : 1;

    int cut = split ? ts.o.cuts[0] : m->hp.n_layers;
    if (split ? el_lora_new_layers(m, 0, cut, rank, alpha, targets, seed, &lora, &err)
              : el_lora_new(m, rank, alpha, targets, seed, &lora, &err))
        goto out;
    pool = el_pool_new(threads);
    el_train_opts to = {0, cut, batch, ctx, 0};
    if (!pool || el_train_stage_new(m, lora, &to, pool, &st, &err)) goto out;
    if (split) {
        el_split_train_opts so = {.via = ts.o.via, .sec = ts.o.sec, .timeout_ms = ts.o.timeout_ms, .ushape = ts.o.ushape,
                                  .act_dtype = ts.o.act_dtype, .grad_dtype = grad_dtype, .shared = 1};
        so.open = (el_wire_train_open){.n_layers = (uint32_t)m->hp.n_layers, .dim = (uint32_t)m->hp.dim,
                                       .vocab = (uint32_t)m->hp.vocab, .layer_begin = (uint32_t)cut,
                                       .layer_end = (uint32_t)m->hp.n_layers, .batch = (uint32_t)batch, .T = (uint32_t)ctx,
                                       .rank = (uint32_t)rank, .alpha = alpha, .targets = targets, .seed = seed,
                                       .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = wd, .clip = clip};
        if (el_split_trainer_new(m, st, &so, &trainer, &err)) goto out;
        fprintf(stderr, "split: this device trains the embedding and layers 0:%d%s; %s trains layers %d:%d%s\n", cut,
                ts.o.ushape ? " and the head (labels stay here)" : "", ts.o.via, cut, m->hp.n_layers,
                ts.o.ushape ? "" : " and the head");
    }
    mom = el_calloc(lora->n_params, sizeof(float));
    vel = el_calloc(lora->n_params, sizeof(float));
    size_t rows = (size_t)batch * ctx;
    b = (batch_buf){st, trainer, (int)rows, ctx, batch, m->hp.dim, malloc(rows * sizeof(int)), malloc(rows * sizeof(int)),
                    malloc(rows * sizeof(float)), malloc(rows * (size_t)m->hp.dim * sizeof(float))};
    ord = (order){n_train, seed, UINT64_MAX, el_calloc((size_t)n_train, sizeof(int))};
    if (!mom || !vel || !b.tokens || !b.targets || !b.mask || !b.x || !ord.perm) {
        el_err(&err, EL_ERR_NOMEM, "out of memory");
        goto out;
    }

    el_ckpt_meta meta = {0};
    meta.seed = seed, meta.identity = el_model_identity(m, 0, m->hp.n_layers), meta.total_steps = total;
    meta.rank = rank, meta.batch = batch, meta.T = ctx, meta.accum = accum, meta.targets = targets;
    meta.alpha = alpha, meta.lr = lr;
    if (resume) {
        struct stat sb;
        if (stat(ckpt_path, &sb)) {
            el_err(&err, EL_ERR_IO, "%s: no checkpoint to resume from", ckpt_path);
            goto out;
        }
        el_ckpt_meta got;
        if (el_checkpoint_load(ckpt_path, lora, mom, vel, &got, &err)) goto out;
        const char *diff = got.identity != meta.identity ? "base model"
                           : got.seed != seed            ? "--seed"
                           : got.rank != rank            ? "--rank"
                           : got.alpha != alpha          ? "--alpha"
                           : got.targets != targets      ? "--targets"
                           : got.batch != batch          ? "--batch"
                           : got.T != ctx                ? "--ctx"
                           : got.accum != accum          ? "--grad-accum"
                           : got.lr != lr                ? "--lr"
                           : got.total_steps != total    ? "--steps/--epochs"
                                                         : NULL;
        if (diff) {
            el_err(&err, EL_ERR_ARG, "%s: the checkpoint was made with a different %s; resume needs the same options",
                   ckpt_path, diff);
            goto out;
        }
        meta = got;
        fprintf(stderr, "resuming from %s at step %llu\n", ckpt_path, (unsigned long long)meta.step);
    }

    size_t P = lora->n_params * sizeof(float);
    fprintf(stderr,
            "finetune: %s, %d train samples (%llu target tokens), ctx %d, batch %d x %d, %llu steps, rank %d, "
            "alpha %g, targets %s, %d threads, blas %s\n",
            model_path, n_train, (unsigned long long)el_dataset_tokens(train), ctx, batch, accum,
            (unsigned long long)total, rank, alpha, targets_s, el_pool_size(pool), el_blas_name());
    if (el_dataset_truncated(train))
        fprintf(stderr, "note: %d of %d examples are longer than --ctx %d + 1 tokens and were cut short\n",
                el_dataset_truncated(train), n_train, ctx);
    fprintf(stderr, "model: %.1fM parameters (%s weights); adapter: %.2fM parameters\n", el_model_n_params(m) / 1e6,
            el_dtype_name(m->layers[0].wq.dtype), lora->n_params / 1e6);
    fprintf(stderr, "memory: base %.1f MiB, activations %.1f MiB, adapter %.2f MiB + gradients %.2f MiB, optimizer %.2f MiB\n",
            el_model_weight_bytes(m, 0, m->hp.n_layers, 1, 1) / 1048576.0, el_train_activation_bytes(st) / 1048576.0,
            P / 1048576.0, P / 1048576.0, 2 * P / 1048576.0);

    el_adamw_opts ao = {lr, 0.9f, 0.999f, 1e-8f, wd, clip};
    if (meta.step == 0 && meta.n_rows == 0 && val) {
        double vl;
        if (eval_loss(&b, val, val_samples, &vl, &err)) goto out;
        meta.row_step[0] = 0, meta.row_loss[0] = NAN, meta.row_val[0] = (float)vl;
        meta.n_rows = 1;
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    el_progress pr;
    el_progress_begin(&pr, stderr, "finetune", total - meta.step, "steps");
    double last_val = meta.n_rows ? meta.row_val[meta.n_rows - 1] : NAN, loss_sum = 0, t_start = el_time_s();
    uint64_t tokens_done = 0, loss_n = 0, first = meta.step;
    double t_first = 0;  // end of the first step: steady-state rate excludes warm-up costs
    const char *kill_at = getenv("EL_TEST_KILL_AT_STEP");  // fault injection for the resume test
    while (meta.step < total) {
        el_train_zero_grads(st);
        double step_loss = 0, t_step = el_time_s();
        el_split_train_stats before = {0};
        if (trainer) before = *el_split_trainer_stats(trainer);
        for (int g = 0; g < accum; g++) {
            fill_batch(&b, train, &ord, meta.sample_pos);
            meta.sample_pos += (uint64_t)batch;
            double l, nt;
            if (trainer) {
                if (el_split_trainer_micro(trainer, b.tokens, b.targets, b.mask, 1.0f / accum, &l, &nt, &err)) goto out;
            } else if (el_train_embed(st, b.tokens, b.x, &err) || el_train_layers_forward(st, b.x, &err) ||
                       el_train_head(st, b.x, b.targets, b.mask, &l, &nt, b.x, 1.0f / accum, NULL, &err) ||
                       el_train_layers_backward(st, b.x, &err)) {
                goto out;
            }
            step_loss += l / accum;
            tokens_done += (uint64_t)rows;
        }
        float cur_lr = lr_at(meta.step, total, warmup, lr);
        if (trainer) {
            double norm;
            if (el_split_trainer_step(trainer, meta.step + 1, cur_lr, lora->params, mom, vel, lora->n_params, &ao, &norm, &err))
                goto out;
        } else {
            el_adamw_step(lora->params, el_train_grads(st), mom, vel, lora->n_params, meta.step + 1, &ao, cur_lr);
        }
        meta.step++;
        if (trainer && stats) {
            const el_split_train_stats *now = el_split_trainer_stats(trainer);
            double wall = el_time_s() - t_step, link = now->link_s - before.link_s, work = now->worker_s - before.worker_s;
            fprintf(stderr, "step %llu: device %.2f ms, link %.2f ms, worker %.2f ms, sent %llu B, received %llu B\n",
                    (unsigned long long)meta.step, (wall - link - work) * 1e3, link * 1e3, work * 1e3,
                    (unsigned long long)(now->bytes_sent - before.bytes_sent),
                    (unsigned long long)(now->bytes_received - before.bytes_received));
        }
        if (trainer && fed_every && meta.step % (uint64_t)fed_every == 0 &&
            el_split_trainer_average(trainer, lora->params, lora->n_params, (double)fed_every * per_step, &err))
            goto out;
        if (meta.step == first + 1) t_first = el_time_s();
        loss_sum += step_loss;
        loss_n++;
        if (!isfinite(step_loss)) {
            el_err(&err, EL_ERR_RANGE, "the loss became %g at step %llu; lower --lr", step_loss,
                   (unsigned long long)meta.step);
            goto out;
        }
        if (meta.step % (uint64_t)eval_every == 0 || meta.step == total) {
            if (val && eval_loss(&b, val, val_samples, &last_val, &err)) goto out;
            if (meta.n_rows < EL_CKPT_MAX_ROWS) {
                meta.row_step[meta.n_rows] = (float)meta.step;
                meta.row_loss[meta.n_rows] = (float)(loss_sum / loss_n);
                meta.row_val[meta.n_rows] = val ? (float)last_val : NAN;
                meta.n_rows++;
            }
            loss_sum = 0, loss_n = 0;
        }
        char extra[160];
        double el = el_time_s() - t_start;
        char vbuf[32] = "-";
        if (!isnan(last_val)) snprintf(vbuf, sizeof vbuf, "%.4f", last_val);
        snprintf(extra, sizeof extra, "step %llu/%llu, loss %.4f, val %s, %.0f tok/s", (unsigned long long)meta.step,
                 (unsigned long long)total, step_loss, vbuf, el > 0 ? tokens_done / el : 0.0);
        el_progress_update(&pr, meta.step - first, extra);
        if (ckpt_every && meta.step % (uint64_t)ckpt_every == 0 && meta.step < total &&
            el_checkpoint_save(ckpt_path, lora, mom, vel, &meta, &err))
            goto out;
        if (kill_at && meta.step == strtoull(kill_at, NULL, 10)) raise(SIGKILL);
        if (interrupted && meta.step < total) {
            // Ctrl-C: keep the work done so far as a checkpoint to --resume from
            el_progress_end(&pr, meta.step - first, NULL);
            if (el_checkpoint_save(ckpt_path, lora, mom, vel, &meta, &err)) goto out;
            fprintf(stderr, "interrupted at step %llu/%llu; wrote %s: rerun the same command with --resume\n",
                    (unsigned long long)meta.step, (unsigned long long)total, ckpt_path);
            rc = 130;
            goto out;
        }
    }
    el_progress_end(&pr, meta.step - first, NULL);
    if (trainer) {
        // Both parts: ours, the worker's, and the joined adapter for the whole model.
        // X.gguf -> X.device.gguf and X.worker.gguf
        char part[4200], stem[4096];
        size_t ol = strlen(out_path);
        int stem_len = ol > 5 && !strcmp(out_path + ol - 5, ".gguf") ? (int)(ol - 5) : (int)ol;
        snprintf(stem, sizeof stem, "%.*s", stem_len, out_path);
        el_model_opts fo = {.no_pack = 1};  // for the adapter's shapes only
        if (el_model_open(model_path, &fo, &full, &err) ||
            el_lora_new_layers(full, cut, full->hp.n_layers, rank, alpha, targets, seed, &worker_part, &err) ||
            el_split_trainer_fetch(trainer, worker_part->params, worker_part->n_params, &err))
            goto out;
        snprintf(part, sizeof part, "%s.device.gguf", stem);
        if (el_lora_save(lora, part, &err)) goto out;
        snprintf(part, sizeof part, "%s.worker.gguf", stem);
        if (el_lora_save(worker_part, part, &err)) goto out;
        const el_lora *parts[2] = {lora, worker_part};
        if (el_lora_join(full, parts, 2, &joined, &err) || el_lora_save(joined, out_path, &err)) goto out;
        const el_split_train_stats *ss = el_split_trainer_stats(trainer);
        fprintf(stderr, "split: sent %.1f KiB/step, received %.1f KiB/step, link %.1f ms/step, worker %.1f ms/step; "
                "wrote %s.device.gguf, %s.worker.gguf and the joined %s\n",
                ss->bytes_sent / 1024.0 / (double)(meta.step - first), ss->bytes_received / 1024.0 / (double)(meta.step - first),
                ss->link_s * 1e3 / (double)(meta.step - first), ss->worker_s * 1e3 / (double)(meta.step - first),
                stem, stem, out_path);
    } else if (el_lora_save(lora, out_path, &err)) {
        goto out;
    }
    remove(ckpt_path);  // the run is complete: the adapter supersedes any checkpoint
    double el = el_time_s() - t_start;
    fprintf(stderr, "\n  step   train loss   val loss\n");
    for (int i = 0; i < meta.n_rows; i++) {
        fprintf(stderr, "%6.0f   ", meta.row_step[i]);
        if (isnan(meta.row_loss[i])) fprintf(stderr, "%10s", "-");
        else fprintf(stderr, "%10.4f", meta.row_loss[i]);
        if (isnan(meta.row_val[i])) fprintf(stderr, "   %8s\n", "-");
        else fprintf(stderr, "   %8.4f\n", meta.row_val[i]);
    }
    if (val && meta.n_rows > 1 && meta.row_step[0] == 0)
        fprintf(stderr, "validation loss %.4f -> %.4f (%+.1f%%)\n", meta.row_val[0], meta.row_val[meta.n_rows - 1],
                100.0 * (meta.row_val[meta.n_rows - 1] - meta.row_val[0]) / meta.row_val[0]);
    uint64_t steady_steps = meta.step - first - 1;
    double steady = steady_steps && t_first > 0 ? (double)steady_steps * rows * accum / (el_time_s() - t_first) : 0;
    fprintf(stderr, "trained %llu steps in %.1f s (%.1f tokens/s; %.1f tokens/s after the first step), peak memory "
            "%.1f MiB; wrote %s\n", (unsigned long long)(meta.step - first), el, el > 0 ? tokens_done / el : 0.0,
            steady, el_peak_rss() / 1048576.0, out_path);
    if (json) {
        double wall = el_time_s() - t_start, n_steps = (double)(meta.step - first);
        const el_split_train_stats *ss = trainer ? el_split_trainer_stats(trainer) : NULL;
        fprintf(stderr, "{\"steps\": %.0f, \"seconds\": %.4f, \"tokens_per_s\": %.2f, \"final_train_loss\": %.6f, "
                "\"final_val_loss\": %.6f, \"split\": %s, \"per_step\": {\"device_ms\": %.4f, \"link_ms\": %.4f, "
                "\"worker_ms\": %.4f, \"bytes_sent\": %.1f, \"bytes_received\": %.1f}, \"peak_rss_bytes\": %zu}\n",
                n_steps, wall, wall > 0 ? tokens_done / wall : 0.0, meta.n_rows && !isnan(meta.row_loss[meta.n_rows - 1]) ? meta.row_loss[meta.n_rows - 1] : -1.0,
                isnan(last_val) ? -1.0 : last_val, trainer ? "true" : "false",
                n_steps > 0 ? (wall - (ss ? ss->link_s + ss->worker_s : 0)) * 1e3 / n_steps : 0.0,
                ss && n_steps > 0 ? ss->link_s * 1e3 / n_steps : 0.0, ss && n_steps > 0 ? ss->worker_s * 1e3 / n_steps : 0.0,
                ss && n_steps > 0 ? ss->bytes_sent / n_steps : 0.0, ss && n_steps > 0 ? ss->bytes_received / n_steps : 0.0,
                el_peak_rss());
    }
    rc = 0;
out:
    if (rc == 1) cli_error(&err);
    free(b.tokens), free(b.targets), free(b.mask), free(b.x), free(ord.perm), free(mom), free(vel);
    el_split_trainer_free(trainer);
    el_train_stage_free(st);
    el_pool_free(pool);
    el_lora_free(lora);
    el_lora_free(worker_part);
    el_lora_free(joined);
    el_model_close(full);
    el_dataset_free(train);
    el_dataset_free(val);
    el_tokenizer_free(tok);
    el_model_close(m);
    return rc;
}
