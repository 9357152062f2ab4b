// llama2.c checkpoint reader: validates the header against the file size
// before anything is mapped into tensor views.
#include "edgellm/llama2c.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_DIM (1 << 20)

el_status el_llama2c_parse(const void *data, size_t size, const char *name, el_llama2c *c, el_error *err) {
    memset(c, 0, sizeof *c);
    if (size < 28) return el_err(err, EL_ERR_FORMAT, "%s: too small for a llama2.c checkpoint (%zu bytes)", name, size);
    int32_t h[7];
    memcpy(h, data, sizeof h);
    const char *field[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
    c->shared_classifier = h[5] > 0;
    if (h[5] < 0) {
        if (h[5] == INT32_MIN) return el_err(err, EL_ERR_FORMAT, "%s: vocab_size %d is invalid", name, h[5]);
        h[5] = -h[5];
    }
    for (int i = 0; i < 7; i++)
        if (h[i] <= 0 || h[i] > MAX_DIM)
            return el_err(err, EL_ERR_FORMAT, "%s: header field %s = %d is out of range (1..%d)", name, field[i], h[i],
                          MAX_DIM);
    c->dim = h[0], c->hidden_dim = h[1], c->n_layers = h[2], c->n_heads = h[3], c->n_kv_heads = h[4];
    c->vocab_size = h[5], c->seq_len = h[6];
    if (c->n_layers > 4096) return el_err(err, EL_ERR_FORMAT, "%s: n_layers %d is absurd", name, c->n_layers);
    if (c->dim % c->n_heads)
        return el_err(err, EL_ERR_FORMAT, "%s: dim %d is not a multiple of n_heads %d", name, c->dim, c->n_heads);
    if (c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads)
        return el_err(err, EL_ERR_FORMAT, "%s: n_kv_heads %d does not divide n_heads %d", name, c->n_kv_heads,
                      c->n_heads);
    int head = c->dim / c->n_heads;
    if (head % 2) return el_err(err, EL_ERR_FORMAT, "%s: head size %d is odd", name, head);
    // All sizes below are at most 2^20 * 2^20 * 2^12 = 2^52: no overflow in 64-bit.
    size_t dim = (size_t)c->dim, L = (size_t)c->n_layers, kv = (size_t)c->n_kv_heads * head;
    size_t hid = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
    size_t o = 7;  // the header is 7 int32 = 7 floats wide
    c->off_embed = o, o += V * dim;
    c->off_rms_att = o, o += L * dim;
    c->off_wq = o, o += L * dim * dim;
    c->off_wk = o, o += L * dim * kv;
    c->off_wv = o, o += L * dim * kv;
    c->off_wo = o, o += L * dim * dim;
    c->off_rms_ffn = o, o += L * dim;
    c->off_w1 = o, o += L * hid * dim;
    c->off_w2 = o, o += L * dim * hid;
    c->off_w3 = o, o += L * hid * dim;
    c->off_rms_final = o, o += dim;
    o += (size_t)c->seq_len * head;  // freq_cis_real + freq_cis_imag, unused
    c->off_wcls = c->shared_classifier ? c->off_embed : o;
    if (!c->shared_classifier) o += V * dim;
    if (o > SIZE_MAX / 4 || o * 4 != size)
        return el_err(err, EL_ERR_FORMAT,
                      "%s: file has %zu bytes but its header (dim %d, hidden %d, layers %d, heads %d/%d, vocab %d, "
                      "seq_len %d) needs %zu",
                      name, size, c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size,
                      c->seq_len, o * 4);
    return EL_OK;
}

el_status el_llama2c_open(const char *path, el_llama2c *c, el_error *err) {
    memset(c, 0, sizeof *c);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return el_err(err, EL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        close(fd);
        return el_err(err, EL_ERR_IO, "%s: not a regular file", path);
    }
    size_t size = (size_t)st.st_size;
    if (size < 28) {
        close(fd);
        return el_err(err, EL_ERR_FORMAT, "%s: too small for a llama2.c checkpoint (%zu bytes)", path, size);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return el_err(err, EL_ERR_IO, "%s: mmap failed: %s", path, strerror(errno));
    el_status s = el_llama2c_parse(map, size, path, c, err);
    if (s) {
        munmap(map, size);
        return s;
    }
    c->map = map;
    c->size = size;
    return EL_OK;
}

void el_llama2c_close(el_llama2c *c) {
    if (c && c->map) munmap(c->map, c->size);
    if (c) c->map = NULL;
}
