// ZeroMQ links with CURVE security. The worker side runs a ZAP handler thread
// that admits only allow-listed client keys; the client side watches the
// socket's monitor events so that a failed handshake is reported as such.
#include "edgellm/link.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#define MAX_ALLOWED 4096

// ---------------------------------------------------------------- keys

// A key file, created with its mode from the start (never chmod-ed after
// the secret is on disk), synced, and renamed into place.
static el_status write_key(const char *path, const char *key, unsigned mode, el_error *err) {
    char line[64];
    int n = snprintf(line, sizeof line, "%s\n", key);
    return el_write_file_atomic_mode(path, line, (size_t)n, mode, err);
}

// mkdir -p
static int make_dirs(const char *dir) {
    char path[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof path) return -1;
    memcpy(path, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (path[i] != '/' && path[i] != 0) continue;
        char c = path[i];
        path[i] = 0;
        if (mkdir(path, 0700) && errno != EEXIST) return -1;
        path[i] = c;
    }
    return 0;
}

el_status el_keys_generate(const char *dir, int overwrite, el_keypair *out, el_error *err) {
    char path[4096];
    // devices pinned the old public key: replacing it silently would lock them out
    for (int i = 0; i < 2 && !overwrite; i++) {
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, i ? "public.key" : "secret.key");
        if (lstat(path, &st) == 0)
            return el_err(err, EL_ERR_STATE,
                          "%s already exists; devices and workers that pinned its key would be locked out (--force "
                          "replaces it)", path);
    }
    if (make_dirs(dir)) return el_err(err, EL_ERR_IO, "%s: cannot create: %s", dir, strerror(errno));
    el_keypair k;
    if (zmq_curve_keypair(k.public_key, k.secret_key))
        return el_err(err, EL_ERR_UNSUPPORTED, "this ZeroMQ build cannot make CURVE keys (no libsodium?)");
    el_status s;
    snprintf(path, sizeof path, "%s/secret.key", dir);
    if ((s = write_key(path, k.secret_key, 0600, err))) return s;
    snprintf(path, sizeof path, "%s/public.key", dir);
    if ((s = write_key(path, k.public_key, 0644, err))) return s;
    if (out) *out = k;
    return EL_OK;
}

static el_status read_z85(const char *path, char out[41], el_error *err) {
    char *data;
    size_t n;
    el_status s = el_read_file(path, 4096, &data, &n, err);
    if (s) return s;
    size_t a = 0, b = n;
    while (a < b && isspace((unsigned char)data[a])) a++;
    while (b > a && isspace((unsigned char)data[b - 1])) b--;
    uint8_t bin[32];
    int ok = b - a == 40;
    if (ok) {
        memcpy(out, data + a, 40);
        out[40] = 0;
        ok = zmq_z85_decode(bin, out) != NULL;
    }
    free(data);
    if (!ok) return el_err(err, EL_ERR_FORMAT, "%s: not a CURVE key (expected 40 Z85 characters)", path);
    return EL_OK;
}

el_status el_key_load_public(const char *path, char out[41], el_error *err) { return read_z85(path, out, err); }

el_status el_keys_load(const char *dir, el_keypair *out, el_error *err) {
    char path[4096];
    el_status s;
    snprintf(path, sizeof path, "%s/public.key", dir);
    if ((s = read_z85(path, out->public_key, err))) return s;
    snprintf(path, sizeof path, "%s/secret.key", dir);
    return read_z85(path, out->secret_key, err);
}

// The endpoint as ZeroMQ wants it: ipc:// and inproc:// as given, HOST:PORT and
// tcp://HOST:PORT parsed and written back as tcp://HOST:PORT (brackets for IPv6).
typedef struct {
    char zmq[300];
    int tcp, ipv6, loopback;
} zmq_endpoint;

static el_status parse_endpoint(const char *e, int bind, zmq_endpoint *out, el_error *err) {
    memset(out, 0, sizeof *out);
    if (!strncmp(e, "ipc://", 6) || !strncmp(e, "inproc://", 9)) {
        snprintf(out->zmq, sizeof out->zmq, "%s", e);
        out->loopback = 1;
        return EL_OK;
    }
    el_addr a;
    el_status st = el_addr_parse(e, &a, err);
    if (st) return st;
    if (!bind && (!strcmp(a.host, "*") || a.port == 0))
        return el_err(err, EL_ERR_ARG, "'%s': a worker's address needs a host and a port other than 0", e);
    el_addr_format(&a, bind, out->zmq, sizeof out->zmq);
    out->tcp = 1;
    out->ipv6 = el_addr_is_ipv6(&a);
    out->loopback = el_addr_is_loopback(&a);
    return EL_OK;
}

int el_endpoint_is_loopback(const char *e) {
    zmq_endpoint ep;
    return parse_endpoint(e, 0, &ep, NULL) == EL_OK && ep.loopback;
}

static el_status check_security(const char *name, const zmq_endpoint *ep, const el_link_security *sec, el_error *err) {
    if (sec->insecure) {
        if (!sec->insecure_anywhere && !ep->loopback)
            return el_err(err, EL_ERR_ARG,
                          "%s: plaintext links are allowed only on loopback; use keys, or --insecure-anywhere", name);
        return EL_OK;
    }
    if (!sec->keys) return el_err(err, EL_ERR_ARG, "%s: CURVE keys are required (or --insecure on loopback)", name);
    return EL_OK;
}

// ---------------------------------------------------------------- server

struct el_link_server {
    void *ctx, *sock, *zap;
    pthread_t zap_thread;
    int zap_running;
    atomic_int stop;
    int n_allowed;
    uint8_t (*allowed)[32];
    char endpoint[256];
};

static void zap_send(void *sock, const char *s, size_t n, int more) { zmq_send(sock, s, n, more ? ZMQ_SNDMORE : 0); }

// Answers ZAP requests: admit CURVE clients whose public key is allow-listed.
static void *zap_main(void *arg) {
    el_link_server *s = arg;
    while (!atomic_load(&s->stop)) {
        zmq_pollitem_t it = {s->zap, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 200) <= 0) continue;
        // frames: version, request id, domain, address, identity, mechanism, credentials...
        char frames[7][64];
        size_t lens[7] = {0};
        int n = 0, more = 1;
        while (more) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, s->zap, 0) < 0) { zmq_msg_close(&m); break; }
            if (n < 7) {
                size_t len = zmq_msg_size(&m);
                lens[n] = len < 64 ? len : 64;
                memcpy(frames[n], zmq_msg_data(&m), lens[n]);
            }
            n++;
            more = zmq_msg_more(&m);
            zmq_msg_close(&m);
        }
        if (n < 6) continue;
        int ok = 0;
        if (n >= 7 && lens[5] == 5 && !memcmp(frames[5], "CURVE", 5) && lens[6] == 32)
            for (int i = 0; i < s->n_allowed && !ok; i++) ok = !memcmp(s->allowed[i], frames[6], 32);
        // the user id every message of this peer will carry: its key, in Z85
        char user[41] = "";
        if (ok) zmq_z85_encode(user, (const uint8_t *)frames[6], 32);
        zap_send(s->zap, "1.0", 3, 1);
        zap_send(s->zap, frames[1], lens[1], 1);
        zap_send(s->zap, ok ? "200" : "400", 3, 1);
        zap_send(s->zap, ok ? "OK" : "client key not on the allow-list", ok ? 2 : 32, 1);
        zap_send(s->zap, user, strlen(user), 1);
        zap_send(s->zap, "", 0, 0);
    }
    return NULL;
}

static el_status load_allow_list(el_link_server *s, const char *dir, el_error *err) {
    DIR *d = opendir(dir);
    if (!d) return el_err(err, EL_ERR_IO, "%s: cannot open the allow-list folder: %s", dir, strerror(errno));
    s->allowed = calloc(MAX_ALLOWED, 32);
    if (!s->allowed) { closedir(d); return el_err(err, EL_ERR_NOMEM, "out of memory"); }
    struct dirent *e;
    el_status st = EL_OK;
    while ((e = readdir(d)) && !st) {
        size_t n = strlen(e->d_name);
        if (e->d_name[0] == '.' || n < 4 || strcmp(e->d_name + n - 4, ".key") || !strcmp(e->d_name, "secret.key"))
            continue;
        char path[4096], z85[41];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if ((st = read_z85(path, z85, err))) break;
        if (s->n_allowed == MAX_ALLOWED) { st = el_err(err, EL_ERR_RANGE, "%s: more than %d keys", dir, MAX_ALLOWED); break; }
        zmq_z85_decode(s->allowed[s->n_allowed++], z85);
    }
    closedir(d);
    if (!st && s->n_allowed == 0) st = el_err(err, EL_ERR_ARG, "%s: no client keys (*.key) in the allow-list folder", dir);
    return st;
}

el_status el_link_server_open(const char *endpoint, const el_link_security *sec, el_link_server **out, el_error *err) {
    *out = NULL;
    zmq_endpoint ep;
    el_status st = parse_endpoint(endpoint, 1, &ep, err);
    if (st) return st;
    if ((st = check_security(endpoint, &ep, sec, err))) return st;
    if (st) return st;
    if (!sec->insecure && !sec->allow_dir)
        return el_err(err, EL_ERR_ARG, "%s: an allow-list of client keys is required (--allow DIR)", endpoint);
    el_link_server *s = calloc(1, sizeof *s);
    if (!s) return el_err(err, EL_ERR_NOMEM, "out of memory");
    snprintf(s->endpoint, sizeof s->endpoint, "%s", endpoint);
    s->ctx = zmq_ctx_new();
    if (!s->ctx) { free(s); return el_err(err, EL_ERR_IO, "cannot create a ZeroMQ context"); }
    if (!sec->insecure) {
        if ((st = load_allow_list(s, sec->allow_dir, err))) goto fail;
        s->zap = zmq_socket(s->ctx, ZMQ_REP);
        if (!s->zap || zmq_bind(s->zap, "inproc://zeromq.zap.01")) {
            st = el_err(err, EL_ERR_IO, "cannot start the authentication handler: %s", zmq_strerror(zmq_errno()));
            goto fail;
        }
        if (pthread_create(&s->zap_thread, NULL, zap_main, s)) {
            st = el_err(err, EL_ERR_IO, "cannot start the authentication thread");
            goto fail;
        }
        s->zap_running = 1;
    }
    s->sock = zmq_socket(s->ctx, ZMQ_ROUTER);
    int64_t maxmsg = EL_WIRE_MAX_FRAME;
    int zero = 0, one = 1;
    zmq_setsockopt(s->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    zmq_setsockopt(s->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s->sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    if (sec->send_hwm > 0) zmq_setsockopt(s->sock, ZMQ_SNDHWM, &sec->send_hwm, sizeof sec->send_hwm);
    if (ep.ipv6) zmq_setsockopt(s->sock, ZMQ_IPV6, &one, sizeof one);
    if (!sec->insecure) {
        zmq_setsockopt(s->sock, ZMQ_CURVE_SERVER, &one, sizeof one);
        zmq_setsockopt(s->sock, ZMQ_CURVE_SECRETKEY, sec->keys->secret_key, 40);
        zmq_setsockopt(s->sock, ZMQ_ZAP_DOMAIN, "edgellm", 7);
    }
    if (zmq_bind(s->sock, ep.zmq)) {
        st = el_err(err, EL_ERR_IO, "%s: cannot listen: %s", endpoint, zmq_strerror(zmq_errno()));
        goto fail;
    }
    *out = s;
    return EL_OK;
fail:
    el_link_server_close(s);
    return st;
}

void el_link_server_close(el_link_server *s) {
    if (!s) return;
    atomic_store(&s->stop, 1);
    if (s->zap_running) pthread_join(s->zap_thread, NULL);
    if (s->sock) zmq_close(s->sock);
    if (s->zap) zmq_close(s->zap);
    if (s->ctx) zmq_ctx_term(s->ctx);
    free(s->allowed);
    free(s);
}

int el_link_server_n_allowed(const el_link_server *s) { return s->n_allowed; }

static el_status msg_to_buf(zmq_msg_t *m, el_buf *b, el_error *err) {
    size_t n = zmq_msg_size(m);
    b->len = 0;
    if (n > b->cap) {
        uint8_t *d = realloc(b->data, n);
        if (!d) return el_err(err, EL_ERR_NOMEM, "out of memory for a %zu-byte message", n);
        b->data = d;
        b->cap = n;
    }
    if (n) memcpy(b->data, zmq_msg_data(m), n);
    b->len = n;
    return EL_OK;
}

el_status el_link_server_recv(el_link_server *s, int timeout_ms, el_peer *peer, el_buf *msg, el_error *err) {
    zmq_pollitem_t it = {s->sock, 0, ZMQ_POLLIN, 0};
    // Poll without sleeping for a moment first: in a generation the next
    // request follows within a millisecond or two, and a core that went idle
    // comes back with cold caches and a low clock (measured: +15-20% on the
    // next step's compute).
    int r = 0;
    uint64_t spin_until = el_time_ns() + (uint64_t)(timeout_ms < 2 ? timeout_ms : 2) * 1000000ULL;
    while ((r = zmq_poll(&it, 1, 0)) == 0 && el_time_ns() < spin_until) {}
    if (r == 0) r = zmq_poll(&it, 1, timeout_ms);
    if (r < 0 && zmq_errno() != EINTR) return el_err(err, EL_ERR_IO, "%s: poll failed: %s", s->endpoint, zmq_strerror(zmq_errno()));
    if (r <= 0) return EL_ERR_STATE;
    // ROUTER: [routing id][payload] — anything else is drained and ignored.
    zmq_msg_t id, body;
    zmq_msg_init(&id);
    if (zmq_msg_recv(&id, s->sock, ZMQ_DONTWAIT) < 0) { zmq_msg_close(&id); return EL_ERR_STATE; }
    size_t idlen = zmq_msg_size(&id);
    peer->len = idlen < sizeof peer->id ? idlen : sizeof peer->id;
    memcpy(peer->id, zmq_msg_data(&id), peer->len);
    int more = zmq_msg_more(&id);
    zmq_msg_close(&id);
    if (!more) return EL_ERR_STATE;
    zmq_msg_init(&body);
    if (zmq_msg_recv(&body, s->sock, 0) < 0) { zmq_msg_close(&body); return EL_ERR_STATE; }
    const char *user = zmq_msg_gets(&body, "User-Id");
    if (user && *user) {
        snprintf(peer->client, sizeof peer->client, "%s", user);
    } else {  // plaintext: one client per connection
        int k = snprintf(peer->client, sizeof peer->client, "conn:");
        for (size_t i = 0; i < peer->len && k + 3 < (int)sizeof peer->client; i++)
            k += snprintf(peer->client + k, sizeof peer->client - (size_t)k, "%02x", peer->id[i]);
    }
    el_status st = msg_to_buf(&body, msg, err);
    more = zmq_msg_more(&body);
    zmq_msg_close(&body);
    while (more) {  // extra frames: drain
        zmq_msg_t extra;
        zmq_msg_init(&extra);
        if (zmq_msg_recv(&extra, s->sock, 0) < 0) more = 0;
        else more = zmq_msg_more(&extra);
        zmq_msg_close(&extra);
    }
    return st;
}

// A counted message's bytes, freed (and uncounted) when ZeroMQ is done with them.
typedef struct {
    atomic_size_t *held;
    size_t n;
} held_hint;

static void free_counted(void *data, void *hint) {
    held_hint *h = hint;
    atomic_size_t *held = h->held;
    size_t n = h->n;
    free(data);
    free(h);
    atomic_fetch_sub(held, n);  // the last touch: once it reads 0 the counter may go
}

el_status el_link_server_send_counted(el_link_server *s, const el_peer *peer, const void *data, size_t n,
                                      atomic_size_t *held, el_error *err) {
    if (!held) return el_link_server_send(s, peer, data, n, err);
    void *copy = malloc(n ? n : 1);
    held_hint *h = malloc(sizeof *h);
    if (!copy || !h) {
        free(copy);
        free(h);
        return el_err(err, EL_ERR_NOMEM, "%s: out of memory for a %zu-byte reply", s->endpoint, n);
    }
    if (n) memcpy(copy, data, n);
    *h = (held_hint){held, n};
    atomic_fetch_add(held, n);
    zmq_msg_t m;
    zmq_msg_init_data(&m, copy, n, free_counted, h);  // ZeroMQ frees it (and the count) from now on
    if (zmq_send(s->sock, peer->id, peer->len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        int e = zmq_errno();
        zmq_msg_close(&m);
        return el_err(err, e == EAGAIN ? EL_ERR_STATE : EL_ERR_IO, "%s: cannot reply to a peer (%s): %s", s->endpoint,
                      e == EAGAIN ? "it does not read its replies" : "gone", zmq_strerror(e));
    }
    if (zmq_msg_send(&m, s->sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&m);
        return el_err(err, EL_ERR_IO, "%s: cannot reply to a peer: %s", s->endpoint, zmq_strerror(zmq_errno()));
    }
    return EL_OK;
}

el_status el_link_server_send(el_link_server *s, const el_peer *peer, const void *data, size_t n, el_error *err) {
    // With ROUTER_MANDATORY the routing frame fails at once (EHOSTUNREACH) for
    // a peer that is gone, and (EAGAIN) for one whose queue is full.
    if (zmq_send(s->sock, peer->id, peer->len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        int e = zmq_errno();
        return el_err(err, e == EAGAIN ? EL_ERR_STATE : EL_ERR_IO, "%s: cannot reply to a peer (%s): %s", s->endpoint,
                      e == EAGAIN ? "it does not read its replies" : "gone", zmq_strerror(e));
    }
    if (zmq_send(s->sock, data, n, ZMQ_DONTWAIT) < 0)  // after an accepted routing frame this only fails if the pipe broke
        return el_err(err, EL_ERR_IO, "%s: cannot reply to a peer: %s", s->endpoint, zmq_strerror(zmq_errno()));
    return EL_OK;
}

// ---------------------------------------------------------------- client

struct el_link {
    void *ctx, *sock, *mon;
    char endpoint[256];
    int secure;
    int tcp_connected, handshake_ok, auth_failed, proto_failed, dropped;
    uint32_t proto_error;  // ZMQ_PROTOCOL_ERROR_* of the last failed handshake
    uint64_t sent, received;
};

static void drain_monitor(el_link *l) {
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, l->mon, ZMQ_DONTWAIT) < 0) { zmq_msg_close(&m); return; }
        if (zmq_msg_size(&m) >= 6) {
            uint16_t ev;
            uint32_t value;
            memcpy(&ev, zmq_msg_data(&m), 2);
            memcpy(&value, (const char *)zmq_msg_data(&m) + 2, 4);
            if (ev == ZMQ_EVENT_CONNECTED) l->tcp_connected = 1;
            if (ev == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) l->handshake_ok = 1;
            if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) l->auth_failed = 1;
            if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL || ev == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
                l->proto_failed = 1;
                l->proto_error = ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ? value : 0;
            }
            // closed by the peer before the handshake finished
            if (ev == ZMQ_EVENT_DISCONNECTED && !l->handshake_ok) l->dropped = 1;
        }
        int more = zmq_msg_more(&m);
        zmq_msg_close(&m);
        while (more) {
            zmq_msg_t x;
            zmq_msg_init(&x);
            more = zmq_msg_recv(&x, l->mon, 0) >= 0 && zmq_msg_more(&x);
            zmq_msg_close(&x);
        }
    }
}

// The handshake went wrong in a way that waiting will not mend: say why. The
// worker usually just closes the connection, so a client learns only that it
// failed; which side's settings make it fail is what the message says.
static el_status handshake_failure(el_link *l, el_error *err) {
    if (l->auth_failed)
        return el_err(err, EL_ERR_IO, "%s: the worker refused our key (not on its allow-list)", l->endpoint);
    if (!l->proto_failed && !l->dropped) return EL_OK;
    if (l->proto_failed && l->proto_error == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
        return el_err(err, EL_ERR_IO, "%s: handshake failed: %s", l->endpoint,
                      l->secure ? "the worker runs --insecure and we use CURVE keys"
                                : "the worker uses CURVE keys and we run --insecure (give --keys and --server-key)");
    if (l->secure)
        return el_err(err, EL_ERR_IO,
                      "%s: CURVE handshake failed: the worker could not prove it holds the pinned server key "
                      "(wrong --server-key?), or it runs --insecure", l->endpoint);
    return el_err(err, EL_ERR_IO,
                  "%s: handshake failed: the worker uses CURVE keys and we run --insecure (give --keys and "
                  "--server-key), or it is not an edgellm worker", l->endpoint);
}

static el_status explain_silence(el_link *l, int timeout_ms, el_error *err) {
    drain_monitor(l);
    el_status st = handshake_failure(l, err);
    if (st) return st;
    if (!l->tcp_connected)
        return el_err(err, EL_ERR_IO, "%s: cannot reach the worker within %d ms (not running? wrong port?)", l->endpoint,
                      timeout_ms);
    if (!l->handshake_ok)
        return el_err(err, EL_ERR_IO, "%s: no handshake within %d ms (not an edgellm worker? keys vs --insecure?)",
                      l->endpoint, timeout_ms);
    return el_err(err, EL_ERR_IO, "%s: no answer within %d ms", l->endpoint, timeout_ms);
}

// Waits until the connection is up and its handshake done, reporting a refused
// key, a mismatch of security settings or nobody listening as soon as the
// monitor says so (or at the deadline), instead of after a request's timeout.
static el_status wait_up(el_link *l, int timeout_ms, el_error *err) {
    uint64_t deadline = el_time_ns() + (uint64_t)timeout_ms * 1000000ULL;
    for (;;) {
        drain_monitor(l);
        if (l->handshake_ok) return EL_OK;
        el_status st = handshake_failure(l, err);
        if (st) return st;
        int64_t left = (int64_t)(deadline - el_time_ns()) / 1000000;
        if (left <= 0) return explain_silence(l, timeout_ms, err);
        zmq_pollitem_t it = {l->mon, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, (long)left) < 0 && zmq_errno() == EINTR)
            return el_err(err, EL_ERR_STATE, "%s: interrupted", l->endpoint);
    }
}

el_status el_link_connect(const char *endpoint, const el_link_security *sec, int timeout_ms, el_link **out,
                          el_error *err) {
    *out = NULL;
    zmq_endpoint ep;
    el_status st = parse_endpoint(endpoint, 0, &ep, err);
    if (st) return st;
    if ((st = check_security(endpoint, &ep, sec, err))) return st;
    if (!sec->insecure && !sec->server_key)
        return el_err(err, EL_ERR_ARG, "%s: the worker's public key is required (--server-key FILE)", endpoint);
    int connect_ms = sec->connect_timeout_ms > 0 ? sec->connect_timeout_ms : EL_LINK_CONNECT_TIMEOUT_MS;
    if (timeout_ms > 0 && timeout_ms < connect_ms) connect_ms = timeout_ms;
    el_link *l = calloc(1, sizeof *l);
    if (!l) return el_err(err, EL_ERR_NOMEM, "out of memory");
    snprintf(l->endpoint, sizeof l->endpoint, "%s", endpoint);
    l->secure = !sec->insecure;
    l->ctx = zmq_ctx_new();
    l->sock = l->ctx ? zmq_socket(l->ctx, ZMQ_DEALER) : NULL;
    if (!l->sock) { el_link_close(l); return el_err(err, EL_ERR_IO, "cannot create a ZeroMQ socket"); }
    int zero = 0, one = 1, hs = connect_ms, reconnect = 100;
    int64_t maxmsg = EL_WIRE_MAX_FRAME;
    zmq_setsockopt(l->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(l->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    zmq_setsockopt(l->sock, ZMQ_HANDSHAKE_IVL, &hs, sizeof hs);
    zmq_setsockopt(l->sock, ZMQ_RECONNECT_IVL, &reconnect, sizeof reconnect);
    if (ep.ipv6) zmq_setsockopt(l->sock, ZMQ_IPV6, &one, sizeof one);
    if (l->secure) {
        zmq_setsockopt(l->sock, ZMQ_CURVE_SERVERKEY, sec->server_key, 40);
        zmq_setsockopt(l->sock, ZMQ_CURVE_PUBLICKEY, sec->keys->public_key, 40);
        zmq_setsockopt(l->sock, ZMQ_CURVE_SECRETKEY, sec->keys->secret_key, 40);
    }
    char mon_ep[64];
    snprintf(mon_ep, sizeof mon_ep, "inproc://mon-%p", (void *)l);
    zmq_socket_monitor(l->sock, mon_ep, ZMQ_EVENT_ALL);
    l->mon = zmq_socket(l->ctx, ZMQ_PAIR);
    if (!l->mon || zmq_connect(l->mon, mon_ep)) {
        el_link_close(l);
        return el_err(err, EL_ERR_IO, "cannot monitor the link");
    }
    if (zmq_connect(l->sock, ep.zmq)) {
        st = el_err(err, EL_ERR_ARG, "%s: cannot connect: %s", endpoint, zmq_strerror(zmq_errno()));
        el_link_close(l);
        return st;
    }
    if ((st = wait_up(l, connect_ms, err))) {
        el_link_close(l);
        return st;
    }
    // Prove the path works end to end with a PING (the worker may be busy: the
    // request's full timeout).
    el_buf b = {0}, reply = {0};
    st = el_wire_encode_ping(&b, EL_MSG_PING, 0xFFFFFFFFu, "hello", 5);
    if (!st) st = el_link_request(l, b.data, b.len, 0xFFFFFFFFu, &reply, timeout_ms, err);
    if (!st) {
        el_wire_msg m;
        if (el_wire_parse(reply.data, reply.len, &m, err) || m.type != EL_MSG_PONG)
            st = el_err(err, EL_ERR_FORMAT, "%s: the peer does not speak the edgellm protocol", endpoint);
    }
    el_buf_free(&b);
    el_buf_free(&reply);
    if (st) {
        el_link_close(l);
        return st;
    }
    *out = l;
    return EL_OK;
}

void el_link_close_linger(el_link *l, int ms) {
    if (!l) return;
    if (l->sock) zmq_setsockopt(l->sock, ZMQ_LINGER, &ms, sizeof ms);
    el_link_close(l);
}

void el_link_close(el_link *l) {
    if (!l) return;
    if (l->sock) {
        zmq_socket_monitor(l->sock, NULL, 0);
        zmq_close(l->sock);
    }
    if (l->mon) zmq_close(l->mon);
    if (l->ctx) zmq_ctx_term(l->ctx);
    free(l);
}

el_status el_link_request(el_link *l, const void *data, size_t n, uint32_t seq, el_buf *reply, int timeout_ms,
                          el_error *err) {
    if (zmq_send(l->sock, data, n, ZMQ_DONTWAIT) < 0) {
        // not connected yet: DEALER queues only after a connection exists; block with timeout
        int to = timeout_ms;
        zmq_setsockopt(l->sock, ZMQ_SNDTIMEO, &to, sizeof to);
        if (zmq_send(l->sock, data, n, 0) < 0) return explain_silence(l, timeout_ms, err);
    }
    l->sent += n;
    uint64_t deadline = el_time_ns() + (uint64_t)timeout_ms * 1000000ULL;
    for (;;) {
        int64_t left = (int64_t)(deadline - el_time_ns()) / 1000000;
        if (left <= 0) return explain_silence(l, timeout_ms, err);
        zmq_pollitem_t items[2] = {{l->sock, 0, ZMQ_POLLIN, 0}, {l->mon, 0, ZMQ_POLLIN, 0}};
        int r = zmq_poll(items, 2, (long)left);
        if (r < 0) {
            if (zmq_errno() == EINTR) return el_err(err, EL_ERR_STATE, "%s: interrupted", l->endpoint);
            return el_err(err, EL_ERR_IO, "%s: poll failed: %s", l->endpoint, zmq_strerror(zmq_errno()));
        }
        if (items[1].revents & ZMQ_POLLIN) {
            drain_monitor(l);
            if (l->auth_failed) return explain_silence(l, timeout_ms, err);
        }
        if (!(items[0].revents & ZMQ_POLLIN)) continue;
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, l->sock, 0) < 0) { zmq_msg_close(&m); continue; }
        el_status st = msg_to_buf(&m, reply, err);
        zmq_msg_close(&m);
        if (st) return st;
        l->received += reply->len;
        el_wire_msg wm;
        if (el_wire_parse(reply->data, reply->len, &wm, NULL) == EL_OK && wm.seq != seq) continue;  // stale reply
        return EL_OK;
    }
}

const char *el_link_endpoint(const el_link *l) { return l->endpoint; }

void el_link_counters(const el_link *l, uint64_t *sent, uint64_t *received) {
    *sent = l->sent;
    *received = l->received;
}

el_status el_link_send(el_link *l, const void *data, size_t n, el_error *err) {
    if (zmq_send(l->sock, data, n, ZMQ_DONTWAIT) < 0)
        return el_err(err, EL_ERR_STATE, "%s: cannot send now: %s", l->endpoint, zmq_strerror(zmq_errno()));
    l->sent += n;
    return EL_OK;
}

el_status el_link_recv(el_link *l, int timeout_ms, el_buf *msg, el_error *err) {
    if (timeout_ms > 0) {
        zmq_pollitem_t it = {l->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, timeout_ms) <= 0) return EL_ERR_STATE;
    }
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, l->sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&m);
        return EL_ERR_STATE;
    }
    el_status st = msg_to_buf(&m, msg, err);
    zmq_msg_close(&m);
    if (!st) l->received += msg->len;
    if (l->mon) drain_monitor(l);
    return st;
}

int el_link_wait(el_link_server *s, el_link *l, int timeout_ms, int spin) {
    zmq_pollitem_t items[2];
    int n = 0, is = -1, il = -1;
    if (s) is = n, items[n++] = (zmq_pollitem_t){s->sock, 0, ZMQ_POLLIN, 0};
    if (l) il = n, items[n++] = (zmq_pollitem_t){l->sock, 0, ZMQ_POLLIN, 0};
    if (!n) return 0;
    int r = 0;
    uint64_t spin_until = el_time_ns() + (uint64_t)(spin ? (timeout_ms < 2 ? timeout_ms : 2) : 0) * 1000000ULL;
    while ((r = zmq_poll(items, n, 0)) == 0 && el_time_ns() < spin_until) {}
    if (r == 0 && timeout_ms > 0) r = zmq_poll(items, n, timeout_ms);
    if (r <= 0) return 0;
    return (is >= 0 && (items[is].revents & ZMQ_POLLIN) ? 1 : 0) | (il >= 0 && (items[il].revents & ZMQ_POLLIN) ? 2 : 0);
}
