// Monotonic clocks, resident-memory readings and progress lines.
#include "edgellm/core.h"

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

uint64_t el_time_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

double el_time_s(void) { return (double)el_time_ns() * 1e-9; }

size_t el_peak_rss(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru)) return 0;
    return (size_t)ru.ru_maxrss * 1024;  // Linux reports KiB
}

size_t el_current_rss(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long size = 0, resident = 0;
    int ok = fscanf(f, "%lu %lu", &size, &resident) == 2;
    fclose(f);
    return ok ? (size_t)resident * (size_t)sysconf(_SC_PAGESIZE) : 0;
}

void el_progress_begin(el_progress *p, FILE *out, const char *label, uint64_t total, const char *unit) {
    memset(p, 0, sizeof *p);
    p->out = out;
    p->label = label;
    p->total = total;
    p->unit = unit;
    p->t_start = p->t_last = el_time_s();
    p->tty = out && isatty(fileno(out));
}

static void fmt_eta(char *buf, size_t n, double s) {
    if (s < 0 || s > 1e7) { snprintf(buf, n, "?"); return; }
    int sec = (int)(s + 0.5);
    if (sec >= 3600) snprintf(buf, n, "%dh%02dm", sec / 3600, sec / 60 % 60);
    else if (sec >= 60) snprintf(buf, n, "%dm%02ds", sec / 60, sec % 60);
    else snprintf(buf, n, "%ds", sec);
}

static void draw(el_progress *p, uint64_t done, const char *extra, int final) {
    double now = el_time_s(), el = now - p->t_start;
    double rate = el > 0 ? (double)done / el : 0;
    char eta[32] = "";
    if (p->total && !final) {
        double left = rate > 0 ? (double)(p->total - (done < p->total ? done : p->total)) / rate : -1;
        fmt_eta(eta, sizeof eta, left);
    }
    if (p->tty) fputc('\r', p->out);
    if (p->total)
        fprintf(p->out, "%s: %llu/%llu %s (%.0f%%), %.1f %s/s", p->label, (unsigned long long)done,
                (unsigned long long)p->total, p->unit, 100.0 * (double)done / (double)p->total, rate, p->unit);
    else
        fprintf(p->out, "%s: %llu %s, %.1f %s/s", p->label, (unsigned long long)done, p->unit, rate, p->unit);
    if (final) fprintf(p->out, ", %.1fs", el);
    else if (eta[0]) fprintf(p->out, ", ETA %s", eta);
    if (extra && extra[0]) fprintf(p->out, ", %s", extra);
    if (p->tty) fputs(final ? "\033[K\n" : "\033[K", p->out);
    else fputc('\n', p->out);
    fflush(p->out);
    p->printed = 1;
}

void el_progress_update(el_progress *p, uint64_t done, const char *extra) {
    if (!p->out) return;
    double now = el_time_s();
    double every = p->tty ? 0.2 : 5.0;
    if (now - p->t_last < every) return;
    p->t_last = now;
    draw(p, done, extra, 0);
}

void el_progress_end(el_progress *p, uint64_t done, const char *extra) {
    if (!p->out) return;
    draw(p, done, extra, 1);
}
