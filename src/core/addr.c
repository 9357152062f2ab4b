// TCP addresses as users type them: HOST:PORT or tcp://HOST:PORT, one syntax
// for every command that listens or connects.
#include "edgellm/core.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <strings.h>
#include <string.h>

static int host_char_ok(char c, int in_brackets) {
    if (isalnum((unsigned char)c) || c == '.' || c == '-' || c == '_') return 1;
    return in_brackets && (c == ':' || c == '%');
}

el_status el_addr_parse(const char *s, el_addr *a, el_error *err) {
    static const char form[] = "HOST:PORT or tcp://HOST:PORT";
    if (!s || !*s) return el_err(err, EL_ERR_ARG, "the address is empty (%s)", form);
    const char *h = s;
    if (!strncmp(h, "tcp://", 6)) h += 6;
    else if (strstr(h, "://")) return el_err(err, EL_ERR_ARG, "'%s' is not an address of the form %s", s, form);
    const char *colon;
    size_t hl;
    if (*h == '[') {
        const char *close = strchr(h, ']');
        if (!close || close[1] != ':') return el_err(err, EL_ERR_ARG, "'%s': expected [IPV6]:PORT", s);
        h++;
        hl = (size_t)(close - h);
        colon = close + 1;
        for (size_t i = 0; i < hl; i++)
            if (!host_char_ok(h[i], 1)) return el_err(err, EL_ERR_ARG, "'%s': bad character in host", s);
    } else {
        colon = strrchr(h, ':');
        if (!colon) return el_err(err, EL_ERR_ARG, "'%s' has no port (%s)", s, form);
        hl = (size_t)(colon - h);
        if (memchr(h, ':', hl)) return el_err(err, EL_ERR_ARG, "'%s': an IPv6 host needs brackets, [%.*s]:PORT", s, (int)hl, h);
        if (!(hl == 1 && h[0] == '*'))
            for (size_t i = 0; i < hl; i++)
                if (!host_char_ok(h[i], 0)) return el_err(err, EL_ERR_ARG, "'%s': bad character in host", s);
    }
    if (hl == 0) return el_err(err, EL_ERR_ARG, "'%s' has no host (%s)", s, form);
    if (hl >= sizeof a->host) return el_err(err, EL_ERR_ARG, "'%s': host name is too long", s);
    const char *p = colon + 1;
    long port = 0;
    size_t nd = 0;
    for (; p[nd]; nd++) {
        if (!isdigit((unsigned char)p[nd]) || nd >= 5)
            return el_err(err, EL_ERR_ARG, "'%s': port '%s' is not a number in 0..65535", s, p);
        port = port * 10 + (p[nd] - '0');
    }
    if (nd == 0) return el_err(err, EL_ERR_ARG, "'%s' has no port (%s)", s, form);
    if (port > 65535) return el_err(err, EL_ERR_RANGE, "'%s': port %ld is not in 0..65535", s, port);
    memcpy(a->host, h, hl);
    a->host[hl] = 0;
    a->port = (int)port;
    return EL_OK;
}

int el_addr_is_ipv6(const el_addr *a) { return strchr(a->host, ':') != NULL; }

int el_addr_is_loopback(const el_addr *a) {
    const char *h = a->host;
    if (!strcasecmp(h, "localhost") || !strcasecmp(h, "localhost.") || !strcasecmp(h, "ip6-localhost")) return 1;
    unsigned char b[16];
    if (inet_pton(AF_INET, h, b) == 1) return b[0] == 127;
    char v6[sizeof a->host];
    snprintf(v6, sizeof v6, "%s", h);
    char *zone = strchr(v6, '%');  // fe80::1%eth0: the zone does not make it local
    if (zone) *zone = 0;
    if (inet_pton(AF_INET6, v6, b) != 1) return 0;
    static const unsigned char one[16] = {[15] = 1}, mapped[12] = {[10] = 0xff, [11] = 0xff};
    if (!memcmp(b, one, 16)) return 1;               // ::1, 0:0:0:0:0:0:0:1 ...
    return !memcmp(b, mapped, 12) && b[12] == 127;  // ::ffff:127.0.0.1
}

void el_addr_format(const el_addr *a, int for_bind, char *buf, size_t n) {
    const char *h = a->host;
    // ZeroMQ binds to interfaces and addresses, not names
    if (for_bind && (!strcasecmp(h, "localhost") || !strcasecmp(h, "localhost."))) h = "127.0.0.1";
    if (for_bind && !strcasecmp(h, "ip6-localhost")) h = "::1";
    snprintf(buf, n, strchr(h, ':') ? "tcp://[%s]:%d" : "tcp://%s:%d", h, a->port);
}
