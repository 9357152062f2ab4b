// Links between nodes: ZeroMQ sockets (ROUTER on workers, DEALER on devices),
// CURVE-encrypted and authenticated unless explicitly insecure on loopback.
// Workers accept only client public keys on their allow-list (a ZAP handler);
// clients pin the worker's public key.
#ifndef EDGELLM_LINK_H
#define EDGELLM_LINK_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "edgellm/core.h"
#include "edgellm/wire.h"

#ifdef __cplusplus
extern "C" {
#endif

// Z85-encoded CURVE keys (40 characters + NUL).
typedef struct {
    char public_key[41];
    char secret_key[41];
} el_keypair;

// Writes DIR/public.key and DIR/secret.key (mode 0600), creating DIR. An
// existing pair is refused (EL_ERR_STATE) unless overwrite is set.
el_status el_keys_generate(const char *dir, int overwrite, el_keypair *out, el_error *err);
// Reads DIR/public.key and DIR/secret.key.
el_status el_keys_load(const char *dir, el_keypair *out, el_error *err);
// Reads one Z85 public key from a file (surrounding whitespace ignored).
el_status el_key_load_public(const char *path, char out[41], el_error *err);

// Endpoints are HOST:PORT or tcp://HOST:PORT (see el_addr_parse), or ipc:// and
// inproc:// ZeroMQ endpoints.
// 1 if an endpoint stays on this machine (127.0.0.0/8, localhost, ::1 in any
// spelling, ipc, inproc).
int el_endpoint_is_loopback(const char *endpoint);

// How long a client waits for the connection and its handshake by default.
#define EL_LINK_CONNECT_TIMEOUT_MS 3000

typedef struct {
    int insecure;           // plaintext (only allowed on loopback unless insecure_anywhere)
    int insecure_anywhere;  // allow plaintext on any address
    const el_keypair *keys;       // this node's key pair (required unless insecure)
    const char *allow_dir;        // server: folder of allowed client public keys
    const char *server_key;       // client: the worker's Z85 public key (pinned)
    int send_hwm;                 // server: messages queued per peer before sends to it fail (0: ZeroMQ's 1000)
    int connect_timeout_ms;       // client: connection + handshake (0: EL_LINK_CONNECT_TIMEOUT_MS)
} el_link_security;

// ---------------------------------------------------------------- server

typedef struct el_link_server el_link_server;

// A peer: its connection (an opaque ZeroMQ routing id) and who it is, the
// client its limits are counted against: the Z85 public key it proved with
// CURVE, or, on a plaintext link (which has no identity), "conn:" and its
// routing id in hex, one client per connection.
typedef struct {
    uint8_t id[256];
    size_t len;
    char client[72];
} el_peer;

el_status el_link_server_open(const char *endpoint, const el_link_security *sec, el_link_server **out, el_error *err);
void el_link_server_close(el_link_server *s);
// Waits up to timeout_ms for a message. Returns EL_OK with the message in msg
// (reset first), EL_ERR_STATE on timeout or interruption, another code on error.
el_status el_link_server_recv(el_link_server *s, int timeout_ms, el_peer *peer, el_buf *msg, el_error *err);
// Never blocks: a peer that is gone (EL_ERR_IO) or does not read its replies,
// so that its queue is full (EL_ERR_STATE), gets nothing, and the caller
// decides what that peer loses.
el_status el_link_server_send(el_link_server *s, const el_peer *peer, const void *data, size_t n, el_error *err);
// The same, counting the bytes in *held from now until ZeroMQ has handed
// them to the network (or dropped them): what a peer that does not read
// makes this process hold. *held must outlive those bytes (it is decremented
// from ZeroMQ's I/O thread; when it reads 0, nothing refers to it any more).
el_status el_link_server_send_counted(el_link_server *s, const el_peer *peer, const void *data, size_t n,
                                      atomic_size_t *held, el_error *err);
// Number of client keys on the allow-list (0 when insecure).
int el_link_server_n_allowed(const el_link_server *s);

// ---------------------------------------------------------------- client

typedef struct el_link el_link;

// Connects, waits for the handshake (at most sec->connect_timeout_ms, failing
// at once when the monitor reports a refused key or differing security
// settings), then checks the worker answers a PING within timeout_ms. On
// failure the error says whether the worker was unreachable, refused our key,
// runs with other security settings, or could not prove it holds the pinned
// server key.
el_status el_link_connect(const char *endpoint, const el_link_security *sec, int timeout_ms, el_link **out,
                          el_error *err);
void el_link_close(el_link *l);
// Closes after up to ms milliseconds spent sending what is still queued.
void el_link_close_linger(el_link *l, int ms);
// Sends one message and waits for its reply (matched by seq; stale replies of
// earlier, timed-out requests are dropped). reply is reset first.
el_status el_link_request(el_link *l, const void *data, size_t n, uint32_t seq, el_buf *reply, int timeout_ms,
                          el_error *err);
const char *el_link_endpoint(const el_link *l);

// Asynchronous use, for a worker that must keep serving while the next one
// computes: send without waiting (EL_ERR_STATE if it cannot be queued now),
// and take a message if one has arrived (timeout_ms 0: do not wait;
// EL_ERR_STATE when none).
el_status el_link_send(el_link *l, const void *data, size_t n, el_error *err);
el_status el_link_recv(el_link *l, int timeout_ms, el_buf *msg, el_error *err);
// Waits up to timeout_ms until the server or the link (either may be NULL)
// has a message waiting; returns a mask: 1 the server, 2 the link (0: none).
// With spin, the first 2 ms are spent polling, not sleeping: in a generation
// the next request follows within a millisecond or two, and a core that went
// idle comes back with cold caches and a low clock.
int el_link_wait(el_link_server *s, el_link *l, int timeout_ms, int spin);
// Bytes this link has sent and received (message payloads).
void el_link_counters(const el_link *l, uint64_t *sent, uint64_t *received);

#ifdef __cplusplus
}
#endif
#endif
