// Serves the embedded page (web/index.html, app.js, app.css).
#include "web.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

extern const unsigned char el_web_index_html[], el_web_app_js[], el_web_app_css[];
extern const size_t el_web_index_html_len, el_web_app_js_len, el_web_app_css_len;

int el_web_serve(struct MHD_Connection *c, const char *url, enum MHD_Result *ret) {
    const unsigned char *data;
    size_t len;
    const char *type;
    if (!strcmp(url, "/") || !strcmp(url, "/index.html"))
        data = el_web_index_html, len = el_web_index_html_len, type = "text/html; charset=utf-8";
    else if (!strcmp(url, "/app.js"))
        data = el_web_app_js, len = el_web_app_js_len, type = "text/javascript; charset=utf-8";
    else if (!strcmp(url, "/app.css"))
        data = el_web_app_css, len = el_web_app_css_len, type = "text/css; charset=utf-8";
    else
        return 0;
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_PERSISTENT);
    if (!r) {
        *ret = MHD_NO;
        return 1;
    }
    MHD_add_response_header(r, "Content-Type", type);
    // even text that escaped the page's escaping could not run: no inline
    // script, nothing from other origins
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                            "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    *ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return 1;
}

el_status el_web_listen_addr(const char *host, int port, struct sockaddr_storage *ss, unsigned *flags, el_error *err) {
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (!strcmp(host, "localhost")) host = "127.0.0.1";
    if (!strcmp(host, "*")) host = "0.0.0.0";
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *flags |= MHD_USE_IPv6;
    } else {
        return el_err(err, EL_ERR_ARG, "listen address '%s' is not an IPv4 or IPv6 address (or localhost, *)", host);
    }
    return EL_OK;
}

enum MHD_Result el_web_send(struct MHD_Connection *c, unsigned code, const char *type, el_sbuf *b) {
    if (b->oom) {
        el_sbuf_free(b);
        return MHD_NO;
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(b->len, b->data ? b->data : (char *)"", MHD_RESPMEM_MUST_COPY);
    el_sbuf_free(b);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}
