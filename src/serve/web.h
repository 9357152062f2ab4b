// The page's files (web/, embedded at build time) over HTTP, for serve and
// for the worker's read-only panel.
#ifndef EL_SERVE_WEB_H
#define EL_SERVE_WEB_H

#include <microhttpd.h>
#include <sys/socket.h>

#include "edgellm/core.h"
#include "edgellm/serve.h"

// If url is one of the page's files ("/", "/index.html", "/app.js",
// "/app.css"), queues it with its type and a Content-Security-Policy that
// allows only the page's own script, style and requests, sets *ret and
// returns 1; returns 0 otherwise.
int el_web_serve(struct MHD_Connection *c, const char *url, enum MHD_Result *ret);

// Queues b (freed here) as a response of that status and Content-Type;
// MHD_NO when b ran out of memory or the response could not be made.
enum MHD_Result el_web_send(struct MHD_Connection *c, unsigned code, const char *type, el_sbuf *b);

// The socket address for listening on host (an IPv4 or IPv6 address,
// localhost or *) and port; adds MHD_USE_IPv6 to *flags when needed.
el_status el_web_listen_addr(const char *host, int port, struct sockaddr_storage *ss, unsigned *flags, el_error *err);

#endif
