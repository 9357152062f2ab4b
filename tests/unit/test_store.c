// Unit tests for src/store: block hashes against b2sum, manifests, a store
// that keeps shared blocks once, models assembled from blocks giving the
// same logits as from their files, corrupt blocks refused, and fetches over
// links (tampered sources refused, interrupted fetches resumed).
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edgellm/gguf.h"
#include "edgellm/json.h"
#include "edgellm/quant.h"
#include "edgellm/store.h"
#include "testutil.h"

// ---------------------------------------------------------------- helpers

// Writes aidreams260K as GGUF: matrices in mat_dtype (f32 or q8_0), the
// embedding and norms f32; bump != 0 adds it to blk.0.attn_q.weight[0] (a
// variant that differs in exactly one tensor).
static void write_dream_gguf(const char *path, int mat_dtype, float bump) {
    el_error err;
    el_model *m;
    el_model_opts o = {.no_pack = 1};
    assert_int_equal(el_model_open(tu_model_path("aidreams260K.bin"), &o, &m, &err), EL_OK);
    const el_hparams *h = &m->hp;
    el_gguf_writer *w = el_gguf_writer_new();
    el_gguf_add_str(w, "general.architecture", "llama");
    el_gguf_add_u32(w, "llama.embedding_length", (uint32_t)h->dim);
    el_gguf_add_u32(w, "llama.block_count", (uint32_t)h->n_layers);
    el_gguf_add_u32(w, "llama.feed_forward_length", (uint32_t)h->ff);
    el_gguf_add_u32(w, "llama.attention.head_count", (uint32_t)h->n_heads);
    el_gguf_add_u32(w, "llama.attention.head_count_kv", (uint32_t)h->n_kv_heads);
    el_gguf_add_u32(w, "llama.context_length", (uint32_t)h->ctx);
    el_gguf_add_f32(w, "llama.attention.layer_norm_rms_epsilon", h->rms_eps);
    void *bufs[64];
    int nb = 0;
    const el_tensor *ts[64];
    int nt = 0;
    ts[nt++] = &m->tok_embd;
    ts[nt++] = &m->output_norm;
    for (int l = 0; l < h->n_layers; l++) {
        const el_layer *L = &m->layers[l];
        const el_tensor *lt[] = {&L->attn_norm, &L->wq, &L->wk, &L->wv, &L->wo, &L->ffn_norm, &L->w_gate, &L->w_down, &L->w_up};
        for (int i = 0; i < 9; i++) ts[nt++] = lt[i];
    }
    for (int i = 0; i < nt; i++) {
        const el_tensor *t = ts[i];
        int mat = t->n_dims == 2 && t != &m->tok_embd;
        // rows that are not whole q8_0 blocks (ffn_down: 172 columns) stay f32, as quantize leaves them
        int dt = mat && t->ne[0] % el_dtype_info(mat_dtype)->block_size == 0 ? mat_dtype : EL_DTYPE_F32;
        const float *src = t->data;
        float *tmp = NULL;
        if (bump != 0 && !strcmp(t->name, "blk.0.attn_q.weight")) {
            tmp = malloc(t->nbytes);
            memcpy(tmp, src, t->nbytes);
            tmp[0] += bump;
            src = tmp;
            bufs[nb++] = tmp;
        }
        const void *data = src;
        if (dt == EL_DTYPE_Q8_0) {
            size_t row = el_dtype_row_size(dt, t->ne[0]);
            uint8_t *q = malloc(row * (size_t)t->ne[1]);
            for (int64_t r = 0; r < t->ne[1]; r++) el_quantize_row_q8_0(src + r * t->ne[0], q + (size_t)r * row, t->ne[0]);
            bufs[nb++] = q;
            data = q;
        }
        assert_int_equal(el_gguf_add_tensor(w, t->name, dt, t->n_dims, t->ne, data), EL_OK);
    }
    assert_int_equal(el_gguf_write(w, path, NULL, NULL, NULL, &err), EL_OK);
    el_gguf_writer_free(w);
    for (int i = 0; i < nb; i++) free(bufs[i]);
    el_model_close(m);
}

static const char *g_base, *g_variant, *g_q8;
static char base_path[1024], variant_path[1024], q8_path[1024];

static int setup_models(void **st) {
    (void)st;
    snprintf(base_path, sizeof base_path, "%s", tu_tmp_path("store_dream.gguf"));
    write_dream_gguf(base_path, EL_DTYPE_F32, 0);
    snprintf(variant_path, sizeof variant_path, "%s", tu_tmp_path("store_dream_var.gguf"));
    write_dream_gguf(variant_path, EL_DTYPE_F32, 0.25f);
    snprintf(q8_path, sizeof q8_path, "%s", tu_tmp_path("store_dream_q8.gguf"));
    write_dream_gguf(q8_path, EL_DTYPE_Q8_0, 0);
    g_base = base_path, g_variant = variant_path, g_q8 = q8_path;
    return 0;
}

static const char *fresh_dir(const char *name) {
    static char buf[1024];
    snprintf(buf, sizeof buf, "%s", tu_tmp_path(name));
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", buf);
    assert_int_equal(system(cmd), 0);
    return buf;
}

static int count_files(const char *dir, const char *sub, uint64_t *bytes) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "find '%s/%s' -type f -printf '%%s\\n'", dir, sub);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    int n = 0;
    unsigned long long b, sum = 0;
    while (fscanf(p, "%llu", &b) == 1) n++, sum += b;
    pclose(p);
    if (bytes) *bytes = sum;
    return n;
}

static const int dream[] = {1, 368, 430, 281, 269, 435, 447};
#define N_DREAM 7

// Logits of every prompt position (malloc'ed).
static float *logits_of(const el_model *m) {
    el_error err;
    el_session *s;
    el_session_opts so = {.max_batch = 8};
    assert_int_equal(el_session_new(m, &so, NULL, &s, &err), EL_OK);
    float *out = malloc(N_DREAM * 512 * sizeof(float));
    assert_int_equal(el_session_forward(s, dream, N_DREAM, 0, out, 1, &err), EL_OK);
    el_session_free(s);
    return out;
}

static void assert_same_logits(el_model *a, el_model *b) {
    float *la = logits_of(a), *lb = logits_of(b);
    assert_memory_equal(la, lb, N_DREAM * 512 * sizeof(float));
    free(la);
    free(lb);
}

static void file_logits_equal_store(el_store *s, const char *name, const char *path) {
    el_error err;
    el_model *a, *b;
    assert_int_equal(el_model_open(path, NULL, &a, &err), EL_OK);
    el_status st = el_store_open_model(s, name, NULL, &b, &err);
    if (st) fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(st, EL_OK);
    assert_same_logits(a, b);
    el_model_close(a);
    el_model_close(b);
}

// ---------------------------------------------------------------- hashing

static void test_hash_vectors(void **st) {
    (void)st;
    // from `printf abc | b2sum -l 256` and `printf '' | b2sum -l 256` (GNU coreutils 9.1)
    el_hash h, want;
    char hex[65];
    el_hash_bytes("abc", 3, &h);
    el_hash_hex(&h, hex);
    assert_string_equal(hex, "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319");
    el_hash_bytes("", 0, &h);
    el_hash_hex(&h, hex);
    assert_string_equal(hex, "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8");
    assert_true(el_hash_parse("0E5751C026E543B2E8AB2EB06099DAA1D1E5DF47778F7787FAAB45CDF12FE3A8", &want));
    assert_true(el_hash_eq(&h, &want));
    assert_false(el_hash_parse("0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a", &want));   // 63
    assert_false(el_hash_parse("0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a80", &want)); // 65
    assert_false(el_hash_parse("0g5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8", &want));
    assert_false(el_hash_parse(NULL, &want));
}

// ---------------------------------------------------------------- catalog

static void test_scan_and_manifest(void **st) {
    (void)st;
    el_error err;
    el_model_blocks a, b, q;
    assert_int_equal(el_model_blocks_scan(g_base, NULL, &a, &err), EL_OK);
    assert_int_equal(el_model_blocks_scan(g_variant, NULL, &b, &err), EL_OK);
    assert_int_equal(el_model_blocks_scan(g_q8, NULL, &q, &err), EL_OK);
    size_t nl = strlen(a.name);  // the file's base name without .gguf
    assert_true(nl >= 11 && !strcmp(a.name + nl - 11, "store_dream") && !strchr(a.name, '/'));
    assert_int_equal(a.n_blocks, 2 + 4 * 9);
    // the block of a tensor is the hash of exactly its bytes in the file
    el_gguf *g;
    assert_int_equal(el_gguf_open(g_base, &g, &err), EL_OK);
    uint64_t sum = a.header_bytes;
    for (int i = 0; i < a.n_blocks; i++) {
        el_hash h;
        el_hash_bytes(g->tensors[i].data, g->tensors[i].nbytes, &h);
        assert_true(el_hash_eq(&h, &a.blocks[i].hash));
        assert_string_equal(a.blocks[i].name, g->tensors[i].name);
        sum += a.blocks[i].bytes;
    }
    el_hash h;
    el_hash_bytes(g->map, g->data_offset, &h);
    assert_true(el_hash_eq(&h, &a.header));
    assert_int_equal(a.header_bytes, g->data_offset);
    assert_int_equal(a.bytes, sum);
    el_gguf_close(g);
    // the variant differs in blk.0.attn_q.weight only; same header (same names, types, offsets)
    assert_true(el_hash_eq(&a.header, &b.header));
    for (int i = 0; i < a.n_blocks; i++)
        assert_int_equal(el_hash_eq(&a.blocks[i].hash, &b.blocks[i].hash), strcmp(a.blocks[i].name, "blk.0.attn_q.weight") != 0);
    assert_false(el_hash_eq(&a.id, &b.id));
    // q8_0 copy: shares the f32 tensors (embedding, norms) only
    for (int i = 0; i < a.n_blocks; i++)
        assert_int_equal(el_hash_eq(&a.blocks[i].hash, &q.blocks[i].hash), q.blocks[i].dtype == EL_DTYPE_F32);

    // manifest round trip: parse(encode(a)) == a, and its hash is the id
    char *text;
    size_t len;
    assert_int_equal(el_manifest_encode(&a, &text, &len, &err), EL_OK);
    assert_memory_equal(text, "{\"format\":\"edgellm-manifest-1\",\"header\":{\"hash\":\"", 49);
    el_model_blocks p;
    assert_int_equal(el_manifest_parse(text, len, "m", &p, &err), EL_OK);
    assert_true(el_hash_eq(&p.id, &a.id));
    assert_int_equal(p.n_blocks, a.n_blocks);
    assert_int_equal(p.bytes, a.bytes);
    for (int i = 0; i < a.n_blocks; i++) {
        assert_string_equal(p.blocks[i].name, a.blocks[i].name);
        assert_int_equal(p.blocks[i].dtype, a.blocks[i].dtype);
        assert_int_equal(p.blocks[i].ne[1], a.blocks[i].ne[1]);
    }
    el_model_blocks_free(&p);
    // not canonical: a space, upper-case hex, a wrong byte count, a bad dtype
    char *bad = malloc(len + 2);
    bad[0] = ' ';
    memcpy(bad + 1, text, len);
    assert_int_equal(el_manifest_parse(bad, len + 1, "m", &p, &err), EL_ERR_FORMAT);
    memcpy(bad, text, len);
    char *hx = strstr(bad, "\"hash\":\"") + 8;
    for (int i = 0; i < 64; i++)
        if (hx[i] >= 'a') hx[i] = (char)(hx[i] - 32);
    assert_int_equal(el_manifest_parse(bad, len, "m", &p, &err), EL_ERR_FORMAT);
    memcpy(bad, text, len);
    char *by = strstr(bad, "\"dtype\":\"f32\"");
    memcpy(by, "\"dtype\":\"f16\"", 13);  // f16 is 2 bytes per value: bytes no longer match
    assert_int_equal(el_manifest_parse(bad, len, "m", &p, &err), EL_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "bytes"));
    memcpy(bad, text, len);
    by = strstr(bad, "\"dtype\":\"f32\"");
    memcpy(by, "\"dtype\":\"x32\"", 13);
    assert_int_equal(el_manifest_parse(bad, len, "m", &p, &err), EL_ERR_FORMAT);
    free(bad);
    free(text);
    el_model_blocks_free(&a);
    el_model_blocks_free(&b);
    el_model_blocks_free(&q);
}

// ---------------------------------------------------------------- store

static void test_import_shares_blocks(void **st) {
    (void)st;
    el_error err;
    const char *dir = fresh_dir("store_a");
    el_store *s;
    assert_int_equal(el_store_open(dir, &s, &err), EL_OK);
    el_hash ida, idb;
    assert_int_equal(el_store_import(s, g_base, "base", NULL, &ida, &err), EL_OK);
    assert_int_equal(el_store_import(s, g_variant, "variant", NULL, &idb, &err), EL_OK);
    // bad names are refused: they become file names
    assert_int_equal(el_store_import(s, g_base, "../x", NULL, NULL, &err), EL_ERR_ARG);
    assert_int_equal(el_store_import(s, g_base, ".hidden", NULL, NULL, &err), EL_ERR_ARG);
    assert_int_equal(el_store_import(s, g_base, "", NULL, NULL, &err), EL_ERR_ARG);
    el_model_blocks a, b;
    assert_int_equal(el_model_blocks_scan(g_base, NULL, &a, &err), EL_OK);
    assert_int_equal(el_model_blocks_scan(g_variant, NULL, &b, &err), EL_OK);
    assert_true(el_hash_eq(&a.id, &ida));
    assert_true(el_hash_eq(&b.id, &idb));
    // expected: the distinct blocks of both (each counted once) and both manifests
    el_hash seen[256];
    uint64_t want_bytes = 0;
    int n = 0;
    const el_model_blocks *ms[] = {&a, &b};
    for (int k = 0; k < 2; k++)
        for (int i = -1; i < ms[k]->n_blocks; i++) {
            const el_hash *h = i < 0 ? &ms[k]->header : &ms[k]->blocks[i].hash;
            int dup = 0;
            for (int j = 0; j < n; j++) dup |= el_hash_eq(&seen[j], h);
            if (dup) continue;
            seen[n++] = *h;
            want_bytes += i < 0 ? ms[k]->header_bytes : ms[k]->blocks[i].bytes;
        }
    assert_int_equal(n, 1 + a.n_blocks + 1);  // one header, the base's tensors, the variant's attn_q
    char *t1, *t2;
    size_t l1, l2;
    assert_int_equal(el_manifest_encode(&a, &t1, &l1, &err), EL_OK);
    assert_int_equal(el_manifest_encode(&b, &t2, &l2, &err), EL_OK);
    want_bytes += l1 + l2;
    free(t1), free(t2);
    uint64_t bytes;
    assert_int_equal(count_files(dir, "blocks", &bytes), n + 2);
    assert_int_equal(bytes, want_bytes);
    assert_int_equal(el_store_n_blocks(s), n + 2);
    assert_int_equal(el_store_bytes(s), want_bytes);
    assert_true(want_bytes < a.bytes + b.bytes);
    // a second import writes nothing new
    assert_int_equal(el_store_import(s, g_base, "again", NULL, NULL, &err), EL_OK);
    assert_int_equal(count_files(dir, "blocks", &bytes), n + 2);
    assert_int_equal(el_store_n_models(s), 3);
    assert_string_equal(el_store_model_name(s, 0), "again");
    el_hash id;
    assert_true(el_store_model_id(s, "base", &id));
    assert_true(el_hash_eq(&id, &ida));
    assert_false(el_store_model_id(s, "nothing", &id));
    // the models file is one line of hex
    char p[1200], line[80] = "";
    snprintf(p, sizeof p, "%s/models/variant", dir);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof line, f));
    fclose(f);
    char hex[65];
    el_hash_hex(&idb, hex);
    assert_int_equal(strlen(line), 65);
    assert_memory_equal(line, hex, 64);
    el_model_blocks_free(&a);
    el_model_blocks_free(&b);
    el_store_close(s);
}

static void test_open_from_store_equals_file(void **st) {
    (void)st;
    el_error err;
    const char *dir = fresh_dir("store_b");
    el_store *s;
    assert_int_equal(el_store_open(dir, &s, &err), EL_OK);
    assert_int_equal(el_store_import(s, g_base, "f32", NULL, NULL, &err), EL_OK);
    assert_int_equal(el_store_import(s, g_q8, "q8", NULL, NULL, &err), EL_OK);
    el_store_close(s);
    // a fresh handle: every block is hashed on first use
    assert_int_equal(el_store_open(dir, &s, &err), EL_OK);
    assert_int_equal(el_store_n_models(s), 2);
    file_logits_equal_store(s, "f32", g_base);
    file_logits_equal_store(s, "q8", g_q8);
    // a layer range works as from the file
    el_model *m;
    el_model_opts o = {.layer_begin = 1, .layer_end = 3, .no_embed = 1, .no_head = 1};
    assert_int_equal(el_store_open_model(s, "q8", &o, &m, &err), EL_OK);
    assert_int_equal(m->layer_begin, 1);
    assert_int_equal(m->layer_end, 3);
    el_model_close(m);
    assert_int_equal(el_store_open_model(s, "missing", NULL, &m, &err), EL_ERR_ARG);
    assert_non_null(strstr(err.msg, "missing"));
    el_store_close(s);
}

static void flip_byte(const char *path, long at) {
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, at, SEEK_SET);
    int c = fgetc(f);
    fseek(f, at, SEEK_SET);
    fputc(c ^ 0x40, f);
    fclose(f);
}

static void test_corrupt_blocks_refused(void **st) {
    (void)st;
    el_error err;
    const char *dir0 = fresh_dir("store_c");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", dir0);
    el_store *s;
    assert_int_equal(el_store_open(dir, &s, &err), EL_OK);
    assert_int_equal(el_store_import(s, g_q8, "q8", NULL, NULL, &err), EL_OK);
    el_store_close(s);
    el_model_blocks a;
    assert_int_equal(el_model_blocks_scan(g_q8, NULL, &a, &err), EL_OK);
    char hex[65], p[1200];
    // a flipped byte in blk.2.ffn_up.weight
    int k = 0;
    while (strcmp(a.blocks[k].name, "blk.2.ffn_up.weight")) k++;
    el_hash_hex(&a.blocks[k].hash, hex);
    snprintf(p, sizeof p, "%s/blocks/%s", dir, hex);
    flip_byte(p, 100);
    assert_int_equal(el_store_open(dir, &s, &err), EL_OK);
    assert_int_equal(el_store_n_models(s), 1);  // the size is right: only the hash tells
    // importing again leaves a block of the right size alone, and does not vouch for it
    assert_int_equal(el_store_import(s, g_q8, "q8", NULL, NULL, &err), EL_OK);
    el_model *m;
    assert_int_equal(el_store_open_model(s, "q8", NULL, &m, &err), EL_ERR_FORMAT);
    assert_non_null(strstr(err.msg, hex));
    assert_non_null(strstr(err.msg, "q8"));
    assert_int_not_equal(access(p, F_OK), 0);  // removed
    assert_int_equal(el_store_n_models(s), 0);  // no longer complete
    el_store_close(s);
    // put it back by importing again, then truncate the header block
    assert_int_equal(el_store_open(dir, &s, &err), EL_OK);
    assert_int_equal(el_store_import(s, g_q8, "q8", NULL, NULL, &err), EL_OK);
    assert_int_equal(access(p, F_OK), 0);
    el_store_close(s);
    el_hash_hex(&a.header, hex);
    snprintf(p, sizeof p, "%s/blocks/%s", dir, hex);
    assert_int_equal(truncate(p, (off_t)a.header_bytes - 7), 0);
    assert_int_equal(el_store_open(dir, &s, &err), EL_OK);
    assert_int_equal(el_store_open_model(s, "q8", NULL, &m, &err), EL_ERR_FORMAT);
    assert_non_null(strstr(err.msg, hex));
    assert_int_not_equal(access(p, F_OK), 0);
    el_store_close(s);
    el_model_blocks_free(&a);
}

// ---------------------------------------------------------------- transfer

typedef struct {
    el_store *store;
    char endpoint[512];
    pthread_t th;
    atomic_int stop;
    atomic_int ready;
    pthread_mutex_t mu;
    int n_gets;
    el_hash get_hash[512];
    uint64_t get_off[512];
} test_server;

static void *serve_main(void *arg) {
    test_server *t = arg;
    el_error err;
    el_link_security sec = {.insecure = 1};
    el_link_server *srv;
    if (el_link_server_open(t->endpoint, &sec, &srv, &err)) {
        fprintf(stderr, "server: %s\n", err.msg);
        atomic_store(&t->ready, -1);
        return NULL;
    }
    atomic_store(&t->ready, 1);
    el_buf msg = {0}, out = {0};
    while (!atomic_load(&t->stop)) {
        el_peer peer;
        if (el_link_server_recv(srv, 50, &peer, &msg, &err)) continue;
        el_wire_msg m;
        if (el_wire_parse(msg.data, msg.len, &m, &err)) continue;
        if (m.type == EL_MSG_PING) {
            el_wire_encode_ping(&out, EL_MSG_PONG, m.seq, m.body, m.body_len);
        } else {
            el_wire_block q;
            if (!el_wire_decode_block_get(&m, &q, &err)) {
                pthread_mutex_lock(&t->mu);
                if (t->n_gets < 512) {
                    memcpy(t->get_hash[t->n_gets].b, q.hash, 32);
                    t->get_off[t->n_gets++] = q.offset;
                }
                pthread_mutex_unlock(&t->mu);
            }
            el_store_serve(t->store, &m, &out);
        }
        el_link_server_send(srv, &peer, out.data, out.len, &err);
    }
    el_buf_free(&msg);
    el_buf_free(&out);
    el_link_server_close(srv);
    return NULL;
}

static void server_start(test_server *t, el_store *s, const char *name) {
    memset(t, 0, sizeof *t);
    t->store = s;
    snprintf(t->endpoint, sizeof t->endpoint, "ipc://%s", tu_tmp_path(name));
    pthread_mutex_init(&t->mu, NULL);
    assert_int_equal(pthread_create(&t->th, NULL, serve_main, t), 0);
    while (!atomic_load(&t->ready)) usleep(1000);
    assert_int_equal(atomic_load(&t->ready), 1);
}

static void server_stop(test_server *t) {
    atomic_store(&t->stop, 1);
    pthread_join(t->th, NULL);
    pthread_mutex_destroy(&t->mu);
}

static el_store *origin_with(const char *dirname, const char *path, const char *name, el_hash *id) {
    el_error err;
    el_store *s;
    assert_int_equal(el_store_open(fresh_dir(dirname), &s, &err), EL_OK);
    assert_int_equal(el_store_import(s, path, name, NULL, id, &err), EL_OK);
    return s;
}

static void test_serve_refuses(void **st) {
    (void)st;
    el_hash id;
    el_store *s = origin_with("store_srv", g_base, "base", &id);
    el_buf req = {0}, out = {0};
    el_wire_msg m, r;
    el_error err;
    uint32_t code;
    char text[300];
    // unknown hash
    el_hash other;
    el_hash_bytes("x", 1, &other);
    el_wire_encode_block_get(&req, 5, other.b, 0, 1000);
    assert_int_equal(el_wire_parse(req.data, req.len, &m, &err), EL_OK);
    el_store_serve(s, &m, &out);
    assert_int_equal(el_wire_parse(out.data, out.len, &r, &err), EL_OK);
    assert_int_equal(r.type, EL_MSG_ERROR);
    assert_int_equal(r.seq, 5);
    assert_int_equal(el_wire_decode_error(&r, &code, text, sizeof text, &err), EL_OK);
    assert_non_null(strstr(text, "no block"));
    // the manifest: offset past the end, a chunk too large, then a real read
    el_model_blocks a;
    assert_int_equal(el_model_blocks_scan(g_base, NULL, &a, &err), EL_OK);
    char *mt;
    size_t ml;
    assert_int_equal(el_manifest_encode(&a, &mt, &ml, &err), EL_OK);
    el_wire_encode_block_get(&req, 6, id.b, ml + 1, 1000);
    el_wire_parse(req.data, req.len, &m, &err);
    el_store_serve(s, &m, &out);
    el_wire_parse(out.data, out.len, &r, &err);
    assert_int_equal(r.type, EL_MSG_ERROR);
    el_wire_encode_block_get(&req, 7, id.b, 0, EL_STORE_CHUNK + 1);
    el_wire_parse(req.data, req.len, &m, &err);
    el_store_serve(s, &m, &out);
    el_wire_parse(out.data, out.len, &r, &err);
    assert_int_equal(r.type, EL_MSG_ERROR);
    el_wire_encode_block_get(&req, 8, id.b, 10, 20);
    el_wire_parse(req.data, req.len, &m, &err);
    el_store_serve(s, &m, &out);
    el_wire_parse(out.data, out.len, &r, &err);
    el_wire_block d;
    assert_int_equal(el_wire_decode_block_data(&r, &d, &err), EL_OK);
    assert_int_equal(r.seq, 8);
    assert_int_equal(d.offset, 10);
    assert_int_equal(d.total, ml);
    assert_int_equal(d.n, 20);
    assert_memory_equal(d.data, mt + 10, 20);
    // the end: offset == total gives an empty chunk
    el_wire_encode_block_get(&req, 9, id.b, ml, 20);
    el_wire_parse(req.data, req.len, &m, &err);
    el_store_serve(s, &m, &out);
    el_wire_parse(out.data, out.len, &r, &err);
    assert_int_equal(el_wire_decode_block_data(&r, &d, &err), EL_OK);
    assert_int_equal(d.n, 0);
    free(mt);
    el_model_blocks_free(&a);
    el_buf_free(&req);
    el_buf_free(&out);
    el_store_close(s);
}

static char *read_log(FILE *f) {
    fflush(f);
    long n = ftell(f);
    rewind(f);
    char *s = calloc(1, (size_t)n + 1);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    return s;
}

static void test_fetch_verified_and_resumed(void **st) {
    (void)st;
    el_error err;
    el_hash id;
    el_store *good = origin_with("store_good", g_q8, "q8", &id);
    el_store *bad = origin_with("store_bad", g_q8, "q8", NULL);
    el_model_blocks a;
    assert_int_equal(el_model_blocks_scan(g_q8, NULL, &a, &err), EL_OK);
    // the bad source serves blk.1.attn_k.weight with a byte flipped
    int k = 0;
    while (strcmp(a.blocks[k].name, "blk.1.attn_k.weight")) k++;
    char hexk[65], p[1200];
    el_hash_hex(&a.blocks[k].hash, hexk);
    snprintf(p, sizeof p, "%s/blocks/%s", el_store_dir(bad), hexk);
    flip_byte(p, 33);
    // token_embd arrives half-fetched already
    int e = 0;
    while (strcmp(a.blocks[e].name, "token_embd.weight")) e++;
    char hexe[65];
    el_hash_hex(&a.blocks[e].hash, hexe);
    uint64_t half = a.blocks[e].bytes / 2;

    test_server sb, sg;
    server_start(&sb, bad, "store_bad.ipc");
    server_start(&sg, good, "store_good.ipc");
    el_store *s;
    const char *dir = fresh_dir("store_fetch");
    assert_int_equal(el_store_open(dir, &s, &err), EL_OK);
    {
        el_model *m;
        snprintf(p, sizeof p, "%s/models/%s", el_store_dir(good), "q8");
        assert_int_equal(el_store_open_model(good, "q8", NULL, &m, &err), EL_OK);
        el_model_close(m);
        // the first half of token_embd.weight, as an interrupted fetch leaves it
        el_gguf *g;
        assert_int_equal(el_gguf_open(g_q8, &g, &err), EL_OK);
        snprintf(p, sizeof p, "%s/partial/%s", dir, hexe);
        FILE *f = fopen(p, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(g->tensors[e].data, 1, half, f), half);
        fclose(f);
        el_gguf_close(g);
    }
    char down_ep[600];
    snprintf(down_ep, sizeof down_ep, "ipc://%s", tu_tmp_path("store_nobody.ipc"));
    el_store_source src[] = {{down_ep, NULL}, {sb.endpoint, NULL}, {sg.endpoint, NULL}};
    // the connect timeout is also the handshake deadline of the two live sources: 2 s, so that a slow
    // handshake (ASan, qemu, a loaded machine) does not skip a good source; the dead one costs it once
    el_link_security sec = {.insecure = 1, .connect_timeout_ms = 2000};
    FILE *log = tmpfile();
    el_status rc = el_store_fetch_model(s, "q8", &id, src, 3, &sec, NULL, log, &err);
    char *text = read_log(log);
    fclose(log);
    if (rc) fprintf(stderr, "%s\n%s", err.msg, text);
    assert_int_equal(rc, EL_OK);
    server_stop(&sb);
    server_stop(&sg);
    // the tampered block was refused from the bad source, then taken from the good one
    char want[800];
    snprintf(want, sizeof want, "refused block %s from %s: hash mismatch", hexk, sb.endpoint);
    assert_non_null(strstr(text, want));
    snprintf(want, sizeof want, "fetched block %s (%llu bytes) from %s", hexk, (unsigned long long)a.blocks[k].bytes,
             sg.endpoint);
    assert_non_null(strstr(text, want));
    // the resumed block: asked for from its half only, never from 0
    int asked_half = 0, asked_zero = 0;
    for (int i = 0; i < sb.n_gets; i++)
        if (el_hash_eq(&sb.get_hash[i], &a.blocks[e].hash)) {
            asked_half += sb.get_off[i] == half;
            asked_zero += sb.get_off[i] == 0;
        }
    assert_int_equal(asked_half, 1);
    assert_int_equal(asked_zero, 0);
    free(text);
    // everything present, each block once, nothing partial left
    assert_int_equal(count_files(dir, "partial", NULL), 0);
    assert_int_equal(el_store_n_models(s), 1);
    assert_int_equal(el_store_bytes(s), el_store_bytes(good));
    el_store_close(s);
    assert_int_equal(el_store_open(dir, &s, &err), EL_OK);
    file_logits_equal_store(s, "q8", g_q8);
    // the model's id names it: fetching a second name costs no block
    assert_int_equal(el_store_n_blocks(s), el_store_n_blocks(good));
    el_store_close(s);
    el_store_close(good);
    el_store_close(bad);
    el_model_blocks_free(&a);
}

static void test_fetch_fails_naming_block(void **st) {
    (void)st;
    el_error err;
    el_hash id;
    el_store *bad = origin_with("store_bad2", g_base, "base", &id);
    el_model_blocks a;
    assert_int_equal(el_model_blocks_scan(g_base, NULL, &a, &err), EL_OK);
    char hex[65], p[1200];
    el_hash_hex(&a.blocks[3].hash, hex);
    snprintf(p, sizeof p, "%s/blocks/%s", el_store_dir(bad), hex);
    flip_byte(p, 0);
    test_server sb;
    server_start(&sb, bad, "store_bad2.ipc");
    el_store *s;
    assert_int_equal(el_store_open(fresh_dir("store_fetch2"), &s, &err), EL_OK);
    el_store_source src[] = {{sb.endpoint, NULL}};
    el_link_security sec = {.insecure = 1};
    FILE *log = tmpfile();
    assert_int_equal(el_store_fetch_model(s, "base", &id, src, 1, &sec, NULL, log, &err), EL_ERR_STATE);
    assert_non_null(strstr(err.msg, hex));
    char *text = read_log(log);
    fclose(log);
    // three rounds, three refusals
    int n = 0;
    for (char *q = text; (q = strstr(q, "hash mismatch")); q++) n++;
    assert_int_equal(n, 3);
    free(text);
    server_stop(&sb);
    assert_int_equal(el_store_n_models(s), 0);
    el_store_close(s);
    el_store_close(bad);
    el_model_blocks_free(&a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_vectors),
        cmocka_unit_test(test_scan_and_manifest),
        cmocka_unit_test(test_import_shares_blocks),
        cmocka_unit_test(test_open_from_store_equals_file),
        cmocka_unit_test(test_corrupt_blocks_refused),
        cmocka_unit_test(test_serve_refuses),
        cmocka_unit_test(test_fetch_verified_and_resumed),
        cmocka_unit_test(test_fetch_fails_naming_block),
    };
    return cmocka_run_group_tests(tests, setup_models, NULL);
}
