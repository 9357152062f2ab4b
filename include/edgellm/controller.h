// The edge network (issue 16): a controller that knows which worker holds
// which model, and workers ("nodes") that announce themselves to it, serve
// every model of their block store on one socket, and fetch the models a
// placement gives them from their peers. Everything the controller knows is
// soft state rebuilt from heartbeats: a restarted controller loses nothing
// the next heartbeats do not bring back. Messages are JSON bodies in wire
// frames (EL_MSG_ANNOUNCE ... EL_MSG_PLACE); docs/protocol.md has their fields.
#ifndef EDGELLM_CONTROLLER_H
#define EDGELLM_CONTROLLER_H

#include <signal.h>
#include <stdio.h>

#include "edgellm/json.h"
#include "edgellm/link.h"
#include "edgellm/split.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EL_CTL_MAX_BODY (256u << 10)  // largest JSON body accepted
#define EL_CTL_MAX_MODELS 64          // models one worker announces
#define EL_CTL_MAX_NAME 128           // worker and model names (bytes, without the NUL)
#define EL_CTL_MAX_ROUTE 4            // candidates in a route
#define EL_CTL_NAMES_PER_KEY 2        // workers one key may announce at once

// ---------------------------------------------------------------- controller

typedef struct {
    const char *listen;     // NULL: no socket (tests and fuzzing use el_controller_handle)
    el_link_security sec;   // the controller's keys; allow_dir: workers, devices and planners
    int dead_ms;            // a worker silent this long is dropped (default 3000)
    int max_workers;        // default 1024
    const char *placement;  // a placement file to apply from the start (place --json output), or NULL
    volatile sig_atomic_t *stop;
    FILE *log;
} el_controller_opts;

typedef struct el_controller el_controller;

el_status el_controller_new(const el_controller_opts *o, el_controller **out, el_error *err);
void el_controller_free(el_controller *c);
// One message from a peer (a whole frame); the reply frame is written to out.
// now_s: the clock (el_time_s), passed in so that tests can move it.
void el_controller_handle(el_controller *c, const el_peer *peer, const void *frame, size_t n, double now_s,
                          el_buf *out);
// Drops workers silent for longer than dead_ms.
void el_controller_tick(el_controller *c, double now_s);
// Replaces the placement: {"placement": {server: [model names]}, ...}.
el_status el_controller_set_placement(el_controller *c, const el_json *doc, const char *name, el_error *err);
int el_controller_n_workers(const el_controller *c);
// Serves until *stop.
el_status el_controller_run(const el_controller_opts *o, el_error *err);

// ---------------------------------------------------------------- node

typedef struct {
    el_worker_opts w;            // the socket, security, limits, threads, log and stop of every model served
    const char *store_dir;       // serve every model of this block store (NULL: w.model_path only)
    const char *const *imports;  // GGUF files imported into the store at start
    int n_imports;
    const char *name;            // the name announced (default: the advertised endpoint)
    const char *advertise;       // the endpoint devices are told (default: w.listen)
    const char *controller;      // the controller's endpoint (NULL: none)
    el_link_security ctl_sec;    // our keys and the controller's key
    int heartbeat_ms;            // default 1000
} el_node_opts;

// Serves until *o->w.stop.
el_status el_node_run(const el_node_opts *o, el_error *err);

// ---------------------------------------------------------------- clients

// One candidate worker of a route.
typedef struct {
    char worker[EL_CTL_MAX_NAME + 1];
    char endpoint[256];
    char public_key[41];
    int layer_begin, layer_end;  // the range it serves (any tail of it)
    double cost_ms;              // the controller's load estimate for one more device
} el_route_stage;

typedef struct {
    char model[EL_CTL_MAX_NAME + 1];
    char id[65];
    int n_layers;
    int n;                                  // candidates, best first
    el_route_stage cand[EL_CTL_MAX_ROUTE];
} el_route;

// Asks the controller at endpoint for workers that hold `model` and serve
// layers from `cut` (-1: any) to the last; endpoints in exclude[0..n_exclude)
// are left out (workers that failed us).
el_status el_route_ask(const char *endpoint, const el_link_security *sec, const char *model, int cut,
                       const char *const *exclude, int n_exclude, int timeout_ms, el_route *out, el_error *err);
// Sends a placement document (JSON text) to the controller.
el_status el_placement_send(const char *endpoint, const el_link_security *sec, const char *json, size_t len,
                            int timeout_ms, el_error *err);

#ifdef __cplusplus
}
#endif
#endif
