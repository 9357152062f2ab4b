// Fetch speed of a block store: an origin store served by a thread on a
// loopback TCP link (plaintext or CURVE), everything fetched into an empty
// store (chunks of EL_STORE_CHUNK, each block fsynced and hashed).
// Usage: store_fetch ORIGIN_DIR MODEL DEST_DIR plain|curve KEYS_TMP_DIR
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/store.h"

static el_store *origin;
static atomic_int stop;
static el_link_security server_sec;
static const char *endpoint = "tcp://127.0.0.1:7391";

static void *serve(void *arg) {
    (void)arg;
    el_error e;
    el_link_server *srv;
    if (el_link_server_open(endpoint, &server_sec, &srv, &e)) {
        fprintf(stderr, "store_fetch: %s\n", e.msg);
        exit(1);
    }
    el_buf msg = {0}, out = {0};
    while (!atomic_load(&stop)) {
        el_peer p;
        el_wire_msg m;
        if (el_link_server_recv(srv, 50, &p, &msg, &e) || el_wire_parse(msg.data, msg.len, &m, &e)) continue;
        if (m.type == EL_MSG_PING) el_wire_encode_ping(&out, EL_MSG_PONG, m.seq, m.body, m.body_len);
        else el_store_serve(origin, &m, &out);
        el_link_server_send(srv, &p, out.data, out.len, &e);
    }
    el_buf_free(&msg);
    el_buf_free(&out);
    el_link_server_close(srv);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: store_fetch ORIGIN_DIR MODEL DEST_DIR plain|curve KEYS_TMP_DIR\n");
        return 2;
    }
    el_error e;
    el_hash id;
    el_store *dest;
    if (el_store_open(argv[1], &origin, &e) || el_store_open(argv[3], &dest, &e)) {
        fprintf(stderr, "store_fetch: %s\n", e.msg);
        return 1;
    }
    if (!el_store_model_id(origin, argv[2], &id)) {
        fprintf(stderr, "store_fetch: %s holds no model %s\n", argv[1], argv[2]);
        return 1;
    }
    int curve = !strcmp(argv[4], "curve");
    el_keypair ks, kc;
    el_link_security client_sec = {.insecure = 1};
    server_sec = (el_link_security){.insecure = 1};
    char sdir[1024], cdir[1024], adir[1024], cmd[4200];
    if (curve) {
        snprintf(sdir, sizeof sdir, "%s/server", argv[5]);
        snprintf(cdir, sizeof cdir, "%s/client", argv[5]);
        snprintf(adir, sizeof adir, "%s/allow", argv[5]);
        if (el_keys_generate(sdir, 1, &ks, &e) || el_keys_generate(cdir, 1, &kc, &e)) {
            fprintf(stderr, "store_fetch: %s\n", e.msg);
            return 1;
        }
        snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp '%s/public.key' '%s/client.key'", adir, cdir, adir);
        if (system(cmd)) return 1;
        server_sec = (el_link_security){.keys = &ks, .allow_dir = adir};
        client_sec = (el_link_security){.keys = &kc};
    }
    pthread_t t;
    pthread_create(&t, NULL, serve, NULL);
    el_store_source src = {endpoint, curve ? ks.public_key : NULL};
    double t0 = el_time_s();
    el_status st = el_store_fetch_model(dest, argv[2], &id, &src, 1, &client_sec, NULL, NULL, &e);
    double dt = el_time_s() - t0;
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    if (st) {
        fprintf(stderr, "store_fetch: %s\n", e.msg);
        return 1;
    }
    double mib = (double)el_store_bytes(dest) / 1048576.0;
    printf("fetch %-5s %8.1f MiB in %6.2f s = %6.1f MiB/s (%d blocks)\n", argv[4], mib, dt, mib / dt,
           el_store_n_blocks(dest));
    el_store_close(dest);
    el_store_close(origin);
    return 0;
}
