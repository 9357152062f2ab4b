// Moving blocks between stores: a worker answers BLOCK_GET from its blocks
// folder; a fetcher brings a model's missing blocks in chunks, resumable from
// DIR/partial, and keeps a block only when its hash matches (docs/protocol.md,
// "Blocks").
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edgellm/store.h"
#include "store_internal.h"

#define HEX (2 * EL_HASH_BYTES)
#define FETCH_ROUNDS 3
#define REQUEST_TIMEOUT_MS 20000

// ---------------------------------------------------------------- serve

void el_store_serve(el_store *s, const el_wire_msg *m, el_buf *out) {
    el_error e;
    el_wire_block q;
    char text[256];
    if (el_wire_decode_block_get(m, &q, &e)) {
        el_wire_encode_error(out, m->session, m->seq, EL_WERR_PROTOCOL, e.msg);
        return;
    }
    el_hash h;
    memcpy(h.b, q.hash, EL_HASH_BYTES);
    char hex[HEX + 1], p[4096];
    el_hash_hex(&h, hex);
    if (q.max_len == 0 || q.max_len > EL_STORE_CHUNK) {
        snprintf(text, sizeof text, "BLOCK_GET of %u bytes: 1..%u allowed", q.max_len, EL_STORE_CHUNK);
        el_wire_encode_error(out, m->session, m->seq, EL_WERR_LIMIT, text);
        return;
    }
    snprintf(p, sizeof p, "%s/blocks/%s", el_store_dir(s), hex);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
        if (fd >= 0) close(fd);
        snprintf(text, sizeof text, "no block %s here", hex);
        el_wire_encode_error(out, m->session, m->seq, EL_WERR_MISMATCH, text);
        return;
    }
    uint64_t total = (uint64_t)sb.st_size;
    if (q.offset > total) {
        close(fd);
        snprintf(text, sizeof text, "block %s has %llu bytes: offset %llu is past its end", hex,
                 (unsigned long long)total, (unsigned long long)q.offset);
        el_wire_encode_error(out, m->session, m->seq, EL_WERR_MISMATCH, text);
        return;
    }
    uint32_t n = total - q.offset < q.max_len ? (uint32_t)(total - q.offset) : q.max_len;
    if (el_wire_encode_block_data(out, m->session, m->seq, q.hash, q.offset, total, NULL, n)) {
        close(fd);
        el_wire_encode_error(out, m->session, m->seq, EL_WERR_INTERNAL, "out of memory");
        return;
    }
    uint8_t *dst = out->data + EL_WIRE_HEADER + EL_WIRE_BLOCK_DATA_BYTES;
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, dst + done, n - done, (off_t)(q.offset + done));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        done += (size_t)r;
    }
    close(fd);
    if (done < n) {
        snprintf(text, sizeof text, "block %s: read failed at offset %llu", hex,
                 (unsigned long long)(q.offset + done));
        el_wire_encode_error(out, m->session, m->seq, EL_WERR_INTERNAL, text);
    }
}

// ---------------------------------------------------------------- fetch

el_status el_store_hash_file(const char *path, el_hash *out, uint64_t *size, el_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return el_err(err, EL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    uint8_t *buf = malloc(EL_STORE_CHUNK);
    if (!buf) {
        close(fd);
        return el_err(err, EL_ERR_NOMEM, "%s: out of memory", path);
    }
    el_hasher h;
    el_hasher_init(&h);
    uint64_t n = 0;
    el_status st = EL_OK;
    for (;;) {
        ssize_t r = read(fd, buf, EL_STORE_CHUNK);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            st = el_err(err, EL_ERR_IO, "%s: read failed: %s", path, strerror(errno));
            break;
        }
        if (r == 0) break;
        el_hasher_update(&h, buf, (size_t)r);
        n += (uint64_t)r;
    }
    free(buf);
    close(fd);
    el_hasher_final(&h, out);
    if (size) *size = n;
    return st;
}

typedef struct {
    el_store *s;
    const el_store_source *src;
    int n_src;
    el_link_security sec;
    el_link **links;
    int *down;  // 1: unreachable in this fetch, not tried again
    FILE *log;
    el_progress *progress;
    uint64_t done, total;
    uint32_t seq;
    el_buf req, rep;
} fetcher;

static void logf_(fetcher *f, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void logf_(fetcher *f, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    el_vlogf(f->log, NULL, fmt, ap);
    va_end(ap);
}

static el_link *link_to(fetcher *f, int i) {
    if (f->links[i]) return f->links[i];
    if (f->down[i]) return NULL;
    el_link_security sec = f->sec;
    sec.server_key = f->src[i].public_key;
    el_error e;
    if (el_link_connect(f->src[i].endpoint, &sec, 5000, &f->links[i], &e)) {
        logf_(f, "source %s: %s", f->src[i].endpoint, e.msg);
        f->down[i] = 1;
        f->links[i] = NULL;
        return NULL;
    }
    return f->links[i];
}

static void drop_link(fetcher *f, int i) {
    el_link_close(f->links[i]);
    f->links[i] = NULL;
    f->down[i] = 1;
}

// Appends n bytes at offset `at` of the partial file.
static int write_at(int fd, const uint8_t *p, size_t n, uint64_t at) {
    size_t done = 0;
    while (done < n) {
        ssize_t w = pwrite(fd, p + done, n - done, (off_t)(at + done));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        done += (size_t)w;
    }
    return 0;
}

// One attempt to bring block h from source i into DIR/partial/<hex>, then
// into DIR/blocks after its hash is checked. want: the size the manifest
// gives (0: unknown, the manifest itself, at most EL_MANIFEST_MAX_BYTES).
// Returns 0 when the block is in place, 1 when this source failed (logged).
static int fetch_from(fetcher *f, int i, const el_hash *h, uint64_t want, el_error *err) {
    el_link *l = link_to(f, i);
    if (!l) return 1;
    const char *ep = f->src[i].endpoint;
    char hex[HEX + 1], part[4096], final[4096];
    el_hash_hex(h, hex);
    snprintf(part, sizeof part, "%s/partial/%s", el_store_dir(f->s), hex);
    snprintf(final, sizeof final, "%s/blocks/%s", el_store_dir(f->s), hex);
    int fd = open(part, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        el_err(err, EL_ERR_IO, "%s: cannot open: %s", part, strerror(errno));
        return -1;
    }
    struct stat sb;
    uint64_t have = fstat(fd, &sb) ? 0 : (uint64_t)sb.st_size;
    uint64_t cap = want ? want : EL_MANIFEST_MAX_BYTES;
    if (have > cap) {  // longer than the block can be: start again
        if (ftruncate(fd, 0)) have = cap + 1;
        else have = 0;
    }
    if (have > cap) {
        close(fd);
        unlink(part);
        el_err(err, EL_ERR_IO, "%s: cannot truncate", part);
        return -1;
    }
    el_error e;
    for (;;) {
        if (el_wire_encode_block_get(&f->req, ++f->seq, h->b, have, EL_STORE_CHUNK)) {
            close(fd);
            el_err(err, EL_ERR_NOMEM, "out of memory");
            return -1;
        }
        el_wire_msg m;
        el_wire_block d;
        if (el_link_request(l, f->req.data, f->req.len, f->seq, &f->rep, REQUEST_TIMEOUT_MS, &e) ||
            el_wire_parse(f->rep.data, f->rep.len, &m, &e)) {
            logf_(f, "source %s: block %s: %s", ep, hex, e.msg);
            drop_link(f, i);
            close(fd);
            return 1;
        }
        if (m.type == EL_MSG_ERROR) {
            uint32_t code;
            char text[EL_WIRE_MAX_TEXT + 1];
            if (el_wire_decode_error(&m, &code, text, sizeof text, &e)) snprintf(text, sizeof text, "%s", e.msg);
            logf_(f, "source %s: block %s: %s", ep, hex, text);
            close(fd);
            // a manifest's size is not known beforehand: a partial one the source
            // calls too long is dropped rather than kept forever
            if (!want && have) unlink(part);
            return 1;
        }
        if (el_wire_decode_block_data(&m, &d, &e) || memcmp(d.hash, h->b, EL_HASH_BYTES) || d.offset != have) {
            logf_(f, "source %s: block %s: unexpected answer (message type %u) to a request for offset %llu", ep, hex,
                  m.type, (unsigned long long)have);
            close(fd);
            return 1;
        }
        if (d.total > cap || (want && d.total != want)) {
            logf_(f, "refused block %s from %s: %llu bytes, expected %s%llu", hex, ep, (unsigned long long)d.total,
                  want ? "" : "at most ", (unsigned long long)cap);
            close(fd);
            unlink(part);
            return 1;
        }
        if (d.n == 0 && have < d.total) {
            logf_(f, "source %s: block %s: empty answer at offset %llu", ep, hex, (unsigned long long)have);
            close(fd);
            return 1;
        }
        if (d.n && write_at(fd, d.data, d.n, have)) {
            close(fd);
            el_err(err, EL_ERR_IO, "%s: write failed: %s", part, strerror(errno));
            return -1;
        }
        have += d.n;
        f->done += d.n;
        if (f->progress) el_progress_update(f->progress, f->done >> 10, NULL);
        if (have == d.total) break;
    }
    int bad = fsync(fd) != 0;
    bad |= close(fd) != 0;
    if (bad) return el_err(err, EL_ERR_IO, "%s: write failed: %s", part, strerror(errno)), -1;
    el_hash got;
    uint64_t n;
    if (el_store_hash_file(part, &got, &n, err)) return -1;
    if (!el_hash_eq(&got, h)) {
        unlink(part);
        logf_(f, "refused block %s from %s: hash mismatch", hex, ep);
        return 1;
    }
    if (rename(part, final)) {
        el_err(err, EL_ERR_IO, "%s: cannot move into blocks/: %s", part, strerror(errno));
        return -1;
    }
    el_sync_parent_dir(final);
    el_store_mark_verified(f->s, h);
    if (!f->progress) logf_(f, "fetched block %s (%llu bytes) from %s", hex, (unsigned long long)n, ep);
    return 0;
}

// Brings block h from the sources in turn, at most FETCH_ROUNDS rounds.
static el_status fetch_block(fetcher *f, const el_hash *h, uint64_t want, const char *what, el_error *err) {
    for (int k = 0; k < FETCH_ROUNDS * f->n_src; k++) {
        int r = fetch_from(f, k % f->n_src, h, want, err);
        if (r < 0) return err->code;
        if (r == 0) return EL_OK;
        int any = 0;
        for (int i = 0; i < f->n_src; i++) any |= !f->down[i];
        if (!any) break;
    }
    char hex[HEX + 1];
    el_hash_hex(h, hex);
    return el_err(err, EL_ERR_STATE, "block %s (%s) could not be fetched from any of %d source%s", hex, what, f->n_src,
                  f->n_src == 1 ? "" : "s");
}

el_status el_store_fetch_model(el_store *s, const char *name, const el_hash *id, const el_store_source *sources,
                               int n_sources, const el_link_security *sec, el_progress *progress, FILE *log,
                               el_error *err) {
    if (!name || !el_store_name_ok(name))
        return el_err(err, EL_ERR_ARG, "model name '%s' is not 1..%d characters of A-Z a-z 0-9 . _ - (not starting with .)",
                      name ? name : "", EL_STORE_MAX_NAME);
    if (n_sources < 1 || !sources || !sec) return el_err(err, EL_ERR_ARG, "fetch of %s: no sources", name);
    fetcher f = {.s = s, .src = sources, .n_src = n_sources, .sec = *sec, .log = log, .progress = progress};
    f.links = calloc((size_t)n_sources, sizeof *f.links);
    f.down = calloc((size_t)n_sources, sizeof *f.down);
    el_status st = f.links && f.down ? EL_OK : el_err(err, EL_ERR_NOMEM, "out of memory");
    el_model_blocks m = {0};
    char *text = NULL;
    size_t len = 0;
    char p[4096], hex[HEX + 1];
    el_hash_hex(id, hex);
    snprintf(p, sizeof p, "%s/blocks/%s", el_store_dir(s), hex);
    // The manifest, unless held (a held one that does not match its hash is
    // removed and fetched again).
    for (int attempt = 0; !st && attempt < 2; attempt++) {
        if (access(p, F_OK) && (st = fetch_block(&f, id, 0, "manifest", err))) break;
        if ((st = el_read_file(p, EL_MANIFEST_MAX_BYTES, &text, &len, err))) break;
        el_hash got;
        el_hash_bytes(text, len, &got);
        if (el_hash_eq(&got, id)) break;
        unlink(p);
        free(text);
        text = NULL;
        logf_(&f, "removed manifest block %s: it does not match its hash", hex);
        if (attempt) st = el_err(err, EL_ERR_FORMAT, "%s: manifest does not match its hash: removed", p);
    }
    if (!st) st = el_manifest_parse(text, len, p, &m, err);
    if (!st) st = el_store_rescan(s, err);
    if (!st) {
        // Everything missing, the header first: its bytes total sets the progress line.
        for (int i = -1; i < m.n_blocks; i++) {
            const el_hash *h = i < 0 ? &m.header : &m.blocks[i].hash;
            uint64_t b = i < 0 ? m.header_bytes : m.blocks[i].bytes;
            if (!el_store_has_block(s, h, b)) f.total += b;
        }
        f.done = 0;  // the manifest's bytes are not in the total
        if (progress) el_progress_begin(progress, stderr, "fetch", f.total >> 10, "KiB");
        for (int i = -1; !st && i < m.n_blocks; i++) {
            const el_hash *h = i < 0 ? &m.header : &m.blocks[i].hash;
            uint64_t b = i < 0 ? m.header_bytes : m.blocks[i].bytes;
            if (el_store_has_block(s, h, b)) continue;
            char what[400];
            snprintf(what, sizeof what, "%s of model %s", i < 0 ? "header" : m.blocks[i].name, name);
            st = fetch_block(&f, h, b, what, err);
        }
        if (progress) el_progress_end(progress, f.done >> 10, NULL);
    }
    if (!st) st = el_store_write_model(s, name, id, err);
    if (!st) st = el_store_rescan(s, err);
    for (int i = 0; f.links && i < n_sources; i++) el_link_close(f.links[i]);
    free(f.links);
    free(f.down);
    el_buf_free(&f.req);
    el_buf_free(&f.rep);
    free(text);
    el_model_blocks_free(&m);
    return st;
}
