// The adapter cache: LoRA adapters loaded on first use and kept within a
// count and a memory budget, least-recently-used first out. Adapters appear
// and disappear at run time as files NAME.gguf are added to or removed from
// the adapter folder; an adapter a request is using is never freed under it.
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "edgellm/serve.h"

typedef struct entry {
    char name[65];
    char *path;         // file it loads from
    int added;          // registered by el_adapter_cache_add (stays listed)
    el_lora *lora;      // NULL when not in memory
    el_lora_set set;    // the set requests use: this adapter at scale 1
    struct timespec mtime;  // of the file when loaded
    int refs;
    uint64_t last_use;
    int stale;          // file changed or vanished: drop once refs reach 0
    struct entry *next;
} entry;

// Whether a file in the folder fits the base, as found when the folder was
// last listed with the file at this mtime and size.
typedef struct verdict {
    char name[65];
    struct timespec mtime;
    off_t size;
    int ok;
    struct verdict *next;
} verdict;
#define MAX_VERDICTS 4096

struct el_adapter_cache {
    const el_model *m;
    char *dir;
    FILE *log;          // one line per adapter that does not fit the base (NULL: quiet)
    verdict *verdicts;
    int n_verdicts;
    int max_adapters;
    size_t budget;
    pthread_mutex_t mu;
    entry *list;
    uint64_t clock;
    el_adapter_stats st;
};

int el_adapter_name_ok(const char *name) { return el_file_name_ok(name, 64); }

el_status el_adapter_cache_new(const el_model *m, const char *dir, int max_adapters, size_t mem_budget,
                               el_adapter_cache **out, el_error *err) {
    *out = NULL;
    if (dir) {
        struct stat sb;
        if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
            return el_err(err, EL_ERR_IO, "%s: adapter folder does not exist or is not a folder", dir);
    }
    el_adapter_cache *c = calloc(1, sizeof *c);
    if (!c) return el_err(err, EL_ERR_NOMEM, "out of memory for the adapter cache");
    c->m = m;
    c->dir = dir ? strdup(dir) : NULL;
    c->max_adapters = max_adapters;
    c->budget = mem_budget;
    pthread_mutex_init(&c->mu, NULL);
    *out = c;
    return EL_OK;
}

static void unload(el_adapter_cache *c, entry *e) {
    if (!e->lora) return;
    c->st.loaded--;
    c->st.bytes -= e->lora->n_params * sizeof(float);
    el_lora_free(e->lora);
    e->lora = NULL;
    e->set.n = 0;
}

static void entry_free(el_adapter_cache *c, entry *e) {
    unload(c, e);
    free(e->path);
    free(e);
}

static void verdicts_clear(el_adapter_cache *c) {
    for (verdict *v = c->verdicts, *next; v; v = next) {
        next = v->next;
        free(v);
    }
    c->verdicts = NULL;
    c->n_verdicts = 0;
}

void el_adapter_cache_set_log(el_adapter_cache *c, FILE *log) { c->log = log; }

void el_adapter_cache_free(el_adapter_cache *c) {
    if (!c) return;
    verdicts_clear(c);
    for (entry *e = c->list, *next; e; e = next) {
        next = e->next;
        entry_free(c, e);
    }
    pthread_mutex_destroy(&c->mu);
    free(c->dir);
    free(c);
}

static entry *find(el_adapter_cache *c, const char *name) {
    for (entry *e = c->list; e; e = e->next)
        if (!strcmp(e->name, name)) return e;
    return NULL;
}

static void unlink_entry(el_adapter_cache *c, entry *e) {
    for (entry **p = &c->list; *p; p = &(*p)->next)
        if (*p == e) {
            *p = e->next;
            return;
        }
}

// Frees least-recently-used unreferenced adapters until one of `need` bytes
// fits; returns 0 when it does.
static int make_room(el_adapter_cache *c, size_t need) {
    for (;;) {
        int count_ok = c->max_adapters <= 0 || c->st.loaded < c->max_adapters;
        int bytes_ok = c->budget == 0 || c->st.bytes + need <= c->budget;
        if (count_ok && bytes_ok) return 0;
        entry *victim = NULL;
        for (entry *e = c->list; e; e = e->next)
            if (e->lora && e->refs == 0 && (!victim || e->last_use < victim->last_use)) victim = e;
        if (!victim) return -1;
        unload(c, victim);
        c->st.evictions++;
    }
}

static int same_time(struct timespec a, struct timespec b) { return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec; }

el_status el_adapter_cache_acquire(el_adapter_cache *c, const char *name, const el_lora_set **out, el_error *err) {
    *out = NULL;
    if (!el_adapter_name_ok(name)) return el_err(err, EL_ERR_ARG, "model '%.64s' is not a valid adapter name", name);
    for (int attempt = 0;; attempt++) {
        pthread_mutex_lock(&c->mu);
        el_status st = EL_OK;
        entry *e = find(c, name);
        char dpath[4200];
        const char *path = NULL;
        int was_added = e && e->added;
        if (was_added) {
            // a copy: the entry (and its path) may be freed below when the file changed
            snprintf(dpath, sizeof dpath, "%s", e->path);
            path = dpath;
        } else if (c->dir) {
            snprintf(dpath, sizeof dpath, "%s/%s.gguf", c->dir, name);
            path = dpath;
        }
        struct stat sb;
        int exists = path && stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
        if (e && e->lora && (!exists || !same_time(e->mtime, sb.st_mtim))) {
            // changed or removed on disk: the old one serves no new requests;
            // a registered adapter whose file changed stays registered
            int keep = exists && e->added;
            if (keep && e->refs == 0) {
                unload(c, e);
            } else {
                e->stale = 1;
                if (e->refs == 0) unload(c, e);
                unlink_entry(c, e);
                if (e->refs == 0) entry_free(c, e);
                else e->added = 0;  // its requests keep it; the registration moves on
                e = NULL;
                if (keep) {
                    if (!(e = calloc(1, sizeof *e)) || !(e->path = strdup(dpath))) {
                        free(e);
                        st = el_err(err, EL_ERR_NOMEM, "out of memory for adapter '%s'", name);
                        goto done;
                    }
                    snprintf(e->name, sizeof e->name, "%s", name);
                    e->added = 1;
                    e->next = c->list;
                    c->list = e;
                }
            }
        }
        if (!exists) {
            st = el_err(err, EL_ERR_ARG, "model '%s' does not exist (no base model or adapter of that name)", name);
            goto done;
        }
        if (e && e->lora) {
            c->st.hits++;
            goto take;
        }
        pthread_mutex_unlock(&c->mu);

        // Read the file with the lock released: a load takes milliseconds to
        // tens of them, and the scheduler takes this lock to release the
        // adapters of finished requests, so a load under it stalled every
        // running request. Requests that miss the same adapter at once each
        // read a copy (one is kept): memory exceeds the budget by those
        // copies for the duration of the load.
        el_lora *l = NULL;
        if ((st = el_lora_load(dpath, c->m, &l, err))) {
            // an adapter for another base is not a model here (404), not a server fault
            if (st == EL_ERR_IO || st == EL_ERR_NOMEM) return st;
            return el_err(err, EL_ERR_ARG, "model '%s' cannot be used with this base: %s", name, err ? err->msg : "");
        }
        size_t bytes = l->n_params * sizeof(float);
        if (c->budget && bytes > c->budget) {
            el_lora_free(l);
            return el_err(err, EL_ERR_NOMEM, "%s: adapter needs %zu bytes, more than the whole adapter budget of %zu",
                          dpath, bytes, c->budget);
        }

        pthread_mutex_lock(&c->mu);
        e = find(c, name);
        if (e && e->lora) {  // another request loaded it meanwhile: use that one
            el_lora_free(l);
            c->st.hits++;
            goto take;
        }
        if ((e && strcmp(e->path, dpath)) || (!e && was_added)) {
            // registered anew, or unregistered, while we read the old file: look again
            el_lora_free(l);
            pthread_mutex_unlock(&c->mu);
            if (attempt < 3) continue;
            return el_err(err, EL_ERR_ARG, "model '%s' kept changing while it loaded; retry", name);
        }
        if (!e) {
            e = calloc(1, sizeof *e);
            if (!e || !(e->path = strdup(dpath))) {
                free(e);
                el_lora_free(l);
                st = el_err(err, EL_ERR_NOMEM, "out of memory for adapter '%s'", name);
                goto done;
            }
            snprintf(e->name, sizeof e->name, "%s", name);
            e->next = c->list;
            c->list = e;
        }
        if (make_room(c, bytes)) {
            el_lora_free(l);
            st = el_err(err, EL_ERR_NOMEM, "adapter budget (%d adapters, %zu bytes) is full of adapters in use; retry later",
                        c->max_adapters, c->budget);
            goto done;
        }
        e->lora = l;
        e->set.n = 1;
        e->set.lora[0] = l;
        e->set.scale[0] = 1.0f;
        e->mtime = sb.st_mtim;
        c->st.misses++;  // a miss is a load that was kept
        c->st.loaded++;
        c->st.bytes += bytes;
    take:
        e->refs++;
        e->last_use = ++c->clock;
        *out = &e->set;
    done:
        pthread_mutex_unlock(&c->mu);
        return st;
    }
}

void el_adapter_cache_release(el_adapter_cache *c, const el_lora_set *set) {
    if (!set) return;
    pthread_mutex_lock(&c->mu);
    // entries that went stale while in use are no longer listed; they are
    // found through the set they own
    entry *e = NULL;
    for (entry *x = c->list; x; x = x->next)
        if (&x->set == set) e = x;
    if (e) {
        e->refs--;
    } else {
        entry *owner = (entry *)((char *)set - offsetof(entry, set));
        if (--owner->refs == 0) entry_free(c, owner);
    }
    pthread_mutex_unlock(&c->mu);
}

el_status el_adapter_cache_add(el_adapter_cache *c, const char *name, const char *path, el_error *err) {
    if (!el_adapter_name_ok(name))
        return el_err(err, EL_ERR_ARG, "adapter name '%.64s' must be 1..64 of A-Z a-z 0-9 . _ - (not starting with '.')", name);
    // Only files under --lora-dir: the endpoint must not become a way to open
    // (and, through error messages, peek into) any file the server can read.
    if (!c->dir) return el_err(err, EL_ERR_ARG, "registering adapters needs the server to run with --lora-dir");
    char real_dir[PATH_MAX], real_path[PATH_MAX];
    if (!realpath(c->dir, real_dir) || !realpath(path, real_path))
        return el_err(err, EL_ERR_ARG, "adapter path '%.200s' does not exist", path);
    size_t dl = strlen(real_dir);
    if (strncmp(real_path, real_dir, dl) != 0 || real_path[dl] != '/')
        return el_err(err, EL_ERR_ARG, "adapter path '%.200s' is not inside --lora-dir", path);
    el_lora *l;
    el_status st = el_lora_load(real_path, c->m, &l, err);  // check it before listing it
    if (st) return st;
    el_lora_free(l);
    pthread_mutex_lock(&c->mu);
    entry *e = find(c, name);
    if (e) {
        unlink_entry(c, e);
        if (e->refs == 0) entry_free(c, e);
        else e->stale = 1;
    }
    e = calloc(1, sizeof *e);
    if (!e || !(e->path = strdup(real_path))) {
        free(e);
        pthread_mutex_unlock(&c->mu);
        return el_err(err, EL_ERR_NOMEM, "out of memory for adapter '%s'", name);
    }
    snprintf(e->name, sizeof e->name, "%s", name);
    e->added = 1;
    e->next = c->list;
    c->list = e;
    pthread_mutex_unlock(&c->mu);
    return EL_OK;
}

// Whether DIR/NAME.gguf is an adapter for this base: loaded once per version
// of the file (mtime, size) when the folder is listed; a file that does not
// fit is logged once and left out of the list, instead of being listed and
// failing on first use.
static int fits_base(el_adapter_cache *c, const char *name) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s.gguf", c->dir, name);
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) return 0;
    pthread_mutex_lock(&c->mu);
    for (verdict *v = c->verdicts; v; v = v->next)
        if (!strcmp(v->name, name) && same_time(v->mtime, sb.st_mtim) && v->size == sb.st_size) {
            int ok = v->ok;
            pthread_mutex_unlock(&c->mu);
            return ok;
        }
    pthread_mutex_unlock(&c->mu);
    el_lora *l = NULL;
    el_error e = {0};
    el_status st = el_lora_load(path, c->m, &l, &e);
    el_lora_free(l);
    // a file caught half-written (or unreadable) is not judged: listed, and looked at again next time
    if (st == EL_ERR_IO || st == EL_ERR_NOMEM) return 1;
    verdict *v = calloc(1, sizeof *v);
    pthread_mutex_lock(&c->mu);
    if (v) {
        if (c->n_verdicts >= MAX_VERDICTS) verdicts_clear(c);
        snprintf(v->name, sizeof v->name, "%s", name);
        v->mtime = sb.st_mtim;
        v->size = sb.st_size;
        v->ok = st == EL_OK;
        v->next = c->verdicts;
        c->verdicts = v;
        c->n_verdicts++;
    }
    if (st && c->log) fprintf(c->log, "serve: adapter '%s' is not listed: %s\n", name, e.msg);
    pthread_mutex_unlock(&c->mu);
    return st == EL_OK;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int el_adapter_cache_list(el_adapter_cache *c, char ***names) {
    *names = NULL;
    size_t n = 0, cap = 0;
    char **v = NULL;
    int oom = 0;
#define PUSH(s)                                                      \
    do {                                                             \
        if (n == cap) {                                              \
            cap = cap ? cap * 2 : 16;                                \
            char **nv = realloc(v, cap * sizeof *v);                 \
            if (!nv) { oom = 1; break; }                             \
            v = nv;                                                  \
        }                                                            \
        if (!(v[n] = strdup(s))) { oom = 1; break; }                 \
        n++;                                                         \
    } while (0)
    if (c->dir) {
        DIR *d = opendir(c->dir);
        struct dirent *de;
        while (d && !oom && (de = readdir(d))) {
            size_t len = strlen(de->d_name);
            if (len <= 5 || strcmp(de->d_name + len - 5, ".gguf")) continue;
            char nm[256];
            snprintf(nm, sizeof nm, "%.*s", (int)(len - 5), de->d_name);
            if (el_adapter_name_ok(nm) && fits_base(c, nm)) PUSH(nm);
        }
        if (d) closedir(d);
    }
    pthread_mutex_lock(&c->mu);
    for (entry *e = c->list; e && !oom; e = e->next)
        if (e->added) PUSH(e->name);
    pthread_mutex_unlock(&c->mu);
#undef PUSH
    if (oom) {
        for (size_t i = 0; i < n; i++) free(v[i]);
        free(v);
        return -1;
    }
    if (n) qsort(v, n, sizeof *v, cmp_str);
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if (w && !strcmp(v[w - 1], v[i])) free(v[i]);
        else v[w++] = v[i];
    }
    *names = v;
    return (int)w;
}

void el_adapter_cache_stats(el_adapter_cache *c, el_adapter_stats *out) {
    pthread_mutex_lock(&c->mu);
    *out = c->st;
    pthread_mutex_unlock(&c->mu);
}
