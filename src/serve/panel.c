// A read-only HTTP panel for a node that is not an HTTP server itself (the
// edge worker): the page at / and its figures at /metrics, nothing else.
#include <microhttpd.h>
#include <stdlib.h>
#include <string.h>

#include "edgellm/serve.h"
#include "web.h"

struct el_panel {
    struct MHD_Daemon *daemon;
    el_panel_metrics_fn fn;
    void *ctx;
    int port;
};

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls) {
    (void)version, (void)upload_data, (void)con_cls;
    el_panel *p = cls;
    el_sbuf b = {0};
    if (*upload_data_size) {  // read-only: a body is never read
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
        el_sbuf_puts(&b, "read-only panel: use GET\n");
        return el_web_send(c, 405, "text/plain", &b);
    }
    enum MHD_Result page;
    if (el_web_serve(c, url, &page)) return page;
    if (!strcmp(url, "/metrics")) {
        p->fn(p->ctx, &b);
        return el_web_send(c, 200, "text/plain; version=0.0.4", &b);
    }
    el_sbuf_puts(&b, "not found (the panel has / and /metrics)\n");
    return el_web_send(c, 404, "text/plain", &b);
}

el_status el_panel_start(const char *host, int port, el_panel_metrics_fn fn, void *ctx, el_panel **out, el_error *err) {
    *out = NULL;
    el_panel *p = calloc(1, sizeof *p);
    if (!p) return el_err(err, EL_ERR_NOMEM, "out of memory for the panel");
    p->fn = fn;
    p->ctx = ctx;
    struct sockaddr_storage ss;
    // one polling thread: a panel sees a browser or two, and must not take
    // threads from the compute
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD;
    el_status st = el_web_listen_addr(host, port, &ss, &flags, err);
    if (st) {
        free(p);
        return st;
    }
    p->daemon = MHD_start_daemon(flags, 0, NULL, NULL, handle, p, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                                 MHD_OPTION_CONNECTION_LIMIT, 16u, MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
    if (!p->daemon) {
        free(p);
        return el_err(err, EL_ERR_IO, "panel: cannot listen on %s port %d (in use, or not allowed)", host, port);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(p->daemon, MHD_DAEMON_INFO_BIND_PORT);
    p->port = info ? info->port : port;
    *out = p;
    return EL_OK;
}

int el_panel_port(const el_panel *p) { return p->port; }

void el_panel_stop(el_panel *p) {
    if (!p) return;
    MHD_stop_daemon(p->daemon);
    free(p);
}
