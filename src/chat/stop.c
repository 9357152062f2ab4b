// Stop strings over streamed text (see el_stopper in chat.h).
#include <stdlib.h>
#include <string.h>

#include "edgellm/chat.h"

void el_stopper_init(el_stopper *s, const char *const *stops, int n_stops) {
    memset(s, 0, sizeof *s);
    s->stops = stops;
    s->n_stops = stops ? n_stops : 0;
    for (int i = 0; i < s->n_stops; i++) {
        size_t l = stops[i] ? strlen(stops[i]) : 0;
        if (l > s->max_stop) s->max_stop = l;
    }
}

int el_stopper_feed(el_stopper *s, const char *bytes, size_t n) {
    if (s->stopped) return 1;
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap < s->len + n + 1) {
            if (cap > ((size_t)1 << 40)) return -1;
            cap *= 2;
        }
        char *t = realloc(s->text, cap);
        if (!t) return -1;
        s->text = t;
        s->cap = cap;
    }
    memcpy(s->text + s->len, bytes, n);
    s->len += n;
    s->text[s->len] = 0;
    // Nothing before `taken` can start a stop string (it was released only
    // once no stop string could begin there), so search from there; the
    // earliest match wins.
    size_t best = (size_t)-1;
    int which = 0;
    for (int k = 0; k < s->n_stops; k++) {
        const char *st = s->stops[k];
        size_t l = st ? strlen(st) : 0;
        if (l == 0) continue;
        for (size_t i = s->taken; i + l <= s->len && i < best; i++)
            if (s->text[i] == st[0] && memcmp(s->text + i, st, l) == 0) {
                best = i;
                which = k + 1;
                break;
            }
    }
    if (which) {
        s->len = best;
        s->text[s->len] = 0;
        s->stopped = which;
        return 1;
    }
    return 0;
}

// Bytes at the end of the text that are a proper prefix of some stop string.
static size_t held_back(const el_stopper *s) {
    size_t hold = 0;
    for (int k = 0; k < s->n_stops; k++) {
        const char *st = s->stops[k];
        size_t l = st ? strlen(st) : 0;
        size_t max = l ? l - 1 : 0;
        if (max > s->len - s->taken) max = s->len - s->taken;
        for (size_t m = max; m > hold; m--)
            if (memcmp(s->text + s->len - m, st, m) == 0) {
                hold = m;
                break;
            }
    }
    return hold;
}

size_t el_stopper_take(el_stopper *s, int final, const char **bytes) {
    size_t safe = (final || s->stopped) ? s->len : s->len - held_back(s);
    *bytes = s->text ? s->text + s->taken : "";
    size_t n = safe > s->taken ? safe - s->taken : 0;
    s->taken += n;
    return n;
}

void el_stopper_free(el_stopper *s) {
    free(s->text);
    memset(s, 0, sizeof *s);
}
