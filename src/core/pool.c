// A fixed-size thread pool for data-parallel kernels. Workers spin briefly
// waiting for work (kernels in decode are short, a condition-variable wake-up
// would cost more than the work) and then sleep on a condition variable.
// The caller takes tasks too and waits only for tasks already claimed, never
// for a worker to show up: on a shared machine a descheduled worker would
// otherwise stall every one of the ~155 matmuls of a decode step.
#include "edgellm/core.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

typedef struct {
    struct el_pool *p;
    int slot;
} worker_arg;

struct el_pool {
    int n_threads;  // including the caller
    pthread_t *threads;
    worker_arg *args;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    // (generation << 32) | (task count << 16) | next task index. A task is
    // claimed with a compare-and-swap on the whole word, so a worker that wakes
    // up late (descheduled on a busy machine) can take a task only while its
    // job is still running: the count travels with the claim, and fn and ctx
    // are read only after the swap succeeded. (Reading the count from a
    // separate variable let a late worker pair an old, exhausted claim with
    // the next job's larger count and run one of its tasks twice, the second
    // time before the job was published, so the caller could return while a
    // task still wrote its output.)
    _Atomic uint64_t claim;
    atomic_int done;  // tasks of the current job finished
    atomic_int stop;
    // written by el_pool_run before it publishes the claim word (release),
    // read by a worker after its claim succeeded (acquire)
    _Atomic(el_task_fn) fn;
    _Atomic(void *) ctx;
};

#define TASK_BITS 16
#define MAX_TASKS ((1 << TASK_BITS) - 1)

// Runs tasks of generation gen until none are left (or the job is over).
static void run_tasks(el_pool *p, uint32_t gen) {
    uint64_t c = atomic_load_explicit(&p->claim, memory_order_acquire);
    for (;;) {
        if ((uint32_t)(c >> 32) != gen) return;
        int n = (int)((c >> TASK_BITS) & MAX_TASKS), i = (int)(c & MAX_TASKS);
        if (i >= n) return;
        if (!atomic_compare_exchange_weak_explicit(&p->claim, &c, c + 1, memory_order_acq_rel, memory_order_acquire))
            continue;  // c was reloaded
        // The swap read the word el_pool_run published for this job (or a
        // later claim of it), so fn and ctx are this job's; the caller cannot
        // start another job before this task reports done.
        el_task_fn fn = atomic_load_explicit(&p->fn, memory_order_relaxed);
        void *ctx = atomic_load_explicit(&p->ctx, memory_order_relaxed);
        fn(ctx, i, n);
        atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
        c = atomic_load_explicit(&p->claim, memory_order_acquire);
    }
}

static uint32_t generation(el_pool *p) { return (uint32_t)(atomic_load_explicit(&p->claim, memory_order_acquire) >> 32); }

static _Thread_local int pool_slot;
int el_pool_slot(void) { return pool_slot; }

static void *worker(void *arg) {
    worker_arg *wa = arg;
    el_pool *p = wa->p;
    pool_slot = wa->slot;
    // Generation 0 is the pool's state at creation: a job published before
    // this thread got to run (a pool used at once) is still joined.
    uint32_t seen = 0;
    for (;;) {
        uint32_t g;
        int spins = 0;
        while ((g = generation(p)) == seen && !atomic_load(&p->stop)) {
            if (++spins < 20000) { cpu_relax(); continue; }
            pthread_mutex_lock(&p->mu);
            while (generation(p) == seen && !atomic_load(&p->stop)) pthread_cond_wait(&p->cv, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) return NULL;
        seen = g;
        run_tasks(p, g);
    }
}

el_pool *el_pool_new(int n_threads) {
    if (n_threads <= 0) n_threads = el_cpu_online();
    if (n_threads > 256) n_threads = 256;
    el_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (n_threads > 1) {
        p->threads = calloc((size_t)n_threads - 1, sizeof *p->threads);
        p->args = calloc((size_t)n_threads - 1, sizeof *p->args);
        if (!p->threads || !p->args) {
            free(p->threads);
            free(p->args);
            free(p);
            return NULL;
        }
        for (int i = 0; i < n_threads - 1; i++) {
            p->args[i] = (worker_arg){p, i + 1};
            if (pthread_create(&p->threads[i], NULL, worker, &p->args[i])) {
                p->n_threads = i + 1;  // keep the ones that started
                break;
            }
        }
    }
    return p;
}

void el_pool_free(el_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_threads - 1; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->threads);
    free(p->args);
    free(p);
}

int el_cpu_online(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 && n < 1 << 20 ? (int)n : 1;
}

int el_pool_size(const el_pool *p) { return p ? p->n_threads : 1; }

// Jobs of more than MAX_TASKS tasks run as MAX_TASKS-or-fewer chunks of
// consecutive indices, each calling the caller's function with the real i, n.
typedef struct {
    el_task_fn fn;
    void *ctx;
    int n, per;
} chunked;

static void chunk_task(void *ctx, int t, int nt) {
    (void)nt;
    const chunked *c = ctx;
    int64_t begin = (int64_t)t * c->per, end = begin + c->per < c->n ? begin + c->per : c->n;
    for (int64_t i = begin; i < end; i++) c->fn(c->ctx, (int)i, c->n);
}

void el_pool_run(el_pool *p, el_task_fn fn, void *ctx, int n) {
    if (n <= 0) return;
    if (!p || p->n_threads == 1 || n == 1) {
        for (int i = 0; i < n; i++) fn(ctx, i, n);
        return;
    }
    if (n > MAX_TASKS) {
        chunked c = {fn, ctx, n, (n + MAX_TASKS - 1) / MAX_TASKS};
        el_pool_run(p, chunk_task, &c, (n + c.per - 1) / c.per);
        return;
    }
    // Every task of the previous job is done, so no worker still reads these.
    atomic_store_explicit(&p->fn, fn, memory_order_relaxed);
    atomic_store_explicit(&p->ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    uint32_t gen = generation(p) + 1;
    pthread_mutex_lock(&p->mu);
    atomic_store_explicit(&p->claim, (uint64_t)gen << 32 | (uint64_t)n << TASK_BITS, memory_order_release);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    run_tasks(p, gen);
    // Only tasks a worker has claimed can still be running. If that worker was
    // preempted (a shared machine), give the CPU up rather than spin against it.
    for (int spins = 0; atomic_load_explicit(&p->done, memory_order_acquire) < n; spins++) {
        if (spins < 2000) cpu_relax();
        else sched_yield();
    }
}
