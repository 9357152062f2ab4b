// Core services every module uses: status codes with human-readable errors,
// a fixed-size thread pool, monotonic time, progress lines and CPU features.
#ifndef EDGELLM_CORE_H
#define EDGELLM_CORE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------- errors

typedef enum {
    EL_OK = 0,
    EL_ERR_IO,        // open/read/write/mmap failed
    EL_ERR_FORMAT,    // input is malformed (bad magic, truncated, bad offsets)
    EL_ERR_RANGE,     // a value is out of the accepted range (absurd dimension ...)
    EL_ERR_NOMEM,     // allocation failed or would exceed a cap
    EL_ERR_ARG,       // caller passed an invalid argument
    EL_ERR_UNSUPPORTED,
    EL_ERR_STATE,     // operation not valid in the current state
} el_status;

// An error carries one line of text naming the file/peer and the bad value.
typedef struct {
    el_status code;
    char msg[512];
} el_error;

// One log line: prefix (NULL: none), the message, a newline, flushed; f NULL: nothing.
void el_vlogf(FILE *f, const char *prefix, const char *fmt, va_list ap);

// Fill err (may be NULL) with code and a printf-style message; returns code.
// Control bytes in the result (from quoted file or peer data) become '?', so
// the message is always one line.
el_status el_err(el_error *err, el_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
const char *el_status_str(el_status s);

// Checked size arithmetic: returns 0 and sets *out, or returns -1 on overflow.
int el_mul_size(size_t a, size_t b, size_t *out);
int el_add_size(size_t a, size_t b, size_t *out);

// Allocation helpers: NULL on failure or overflow. el_calloc zero-fills.
void *el_malloc(size_t n);
void *el_calloc(size_t count, size_t size);
void *el_malloc_aligned(size_t n);  // 64-byte aligned, release with el_free_aligned
// count x size bytes, zeroed as calloc zeroes them (large ones on pages the
// kernel maps in only when touched: a session's scratch costs memory only
// for the rows it uses), 64-byte aligned; release with el_calloc_free. For
// buffers a product writes, whose rows then start on a cache line (the packed
// kernels stream large outputs past the caches only then).
void *el_calloc_aligned(size_t count, size_t size);
void el_calloc_free(void *p);
void el_free_aligned(void *p);
// n bytes on huge pages where the kernel gives them: from 2 MiB on, 2 MiB-aligned
// and advised MADV_HUGEPAGE over the whole rounded size (an advice over n alone
// leaves the last partial 2 MiB on 4 KiB pages); below, page-aligned. Release
// with el_free_aligned.
void *el_malloc_huge(size_t n);

// ---------------------------------------------------------------- time

uint64_t el_time_ns(void);  // monotonic nanoseconds
double el_time_s(void);     // monotonic seconds

// Peak resident set size of this process in bytes (0 if unknown).
size_t el_peak_rss(void);
// Current resident set size in bytes (0 if unknown).
size_t el_current_rss(void);

// ---------------------------------------------------------------- progress

// A one-line progress indicator on a stream (stderr normally), redrawn in place
// when the stream is a terminal and printed at most every few seconds otherwise.
typedef struct {
    FILE *out;
    const char *label;
    uint64_t total;     // units of work (0 = unknown)
    const char *unit;   // "tensors", "MiB", "tok"
    double t_start;
    double t_last;
    int tty;
    int printed;
} el_progress;

void el_progress_begin(el_progress *p, FILE *out, const char *label, uint64_t total, const char *unit);
// done = units completed so far; extra = optional short text appended (may be NULL).
void el_progress_update(el_progress *p, uint64_t done, const char *extra);
void el_progress_end(el_progress *p, uint64_t done, const char *extra);

// ---------------------------------------------------------------- threads

typedef struct el_pool el_pool;

// Runs fn(ctx, i, n) for i in [0, n) across the pool's threads (the caller's
// thread takes part). Tasks are handed out in contiguous chunks.
typedef void (*el_task_fn)(void *ctx, int i, int n);

// The number of online CPUs (at least 1).
int el_cpu_online(void);
// n_threads <= 0 means el_cpu_online().
el_pool *el_pool_new(int n_threads);
void el_pool_free(el_pool *pool);
int el_pool_size(const el_pool *pool);
// Run n tasks; returns when all are done. pool may be NULL (runs serially).
void el_pool_run(el_pool *pool, el_task_fn fn, void *ctx, int n);
// The calling thread's place in the pool it works for: worker i of a pool is
// i + 1; any other thread (a pool's caller) 0. Tasks that want the same
// thread to take the same share of every job (matmul.c's stripes) ask it.
int el_pool_slot(void);

// ---------------------------------------------------------------- cpu

// Kernel levels. Each architecture has its own, ordered within it; scalar
// runs everywhere. A level of the other architecture is never available:
// asking for it gives the scalar kernels on AArch64, this CPU's best on x86-64
// (its levels all sit below AArch64's).
typedef enum {
    EL_ISA_SCALAR = 0,
    EL_ISA_AVX2 = 1,     // x86-64: AVX2 + FMA + F16C
    EL_ISA_AVX512 = 2,   // x86-64: AVX-512 F/BW/VL/DQ (+ VNNI for the int8 tiles)
    EL_ISA_NEON = 3,     // AArch64: Advanced SIMD (every AArch64 CPU)
    EL_ISA_DOTPROD = 4,  // AArch64: + SDOT (Armv8.2 dotprod)
    EL_ISA_I8MM = 5,     // AArch64: + SMMLA (Armv8.6 i8mm)
} el_isa;
// The highest level of any architecture: "the best this CPU (and EL_ISA) allows".
#define EL_ISA_BEST EL_ISA_I8MM

// The best level this CPU supports, lowered by EL_ISA=scalar|avx2|avx512 on
// x86-64 and EL_ISA=scalar|neon|dotprod|i8mm on AArch64 (other names: ignored).
// Detected, and EL_ISA read, once: at the first call.
el_isa el_cpu_isa(void);
int el_cpu_has_avx512vnni(void);
const char *el_isa_name(el_isa isa);
// Bytes of one core's L2 cache as the C library reports it; 0 if it does not.
size_t el_cpu_l2_bytes(void);
// 1 on an AMD x86-64 CPU (cpuid vendor "AuthenticAMD"), else 0. Kernels whose
// best form differs between AMD's and Intel's vector ports ask it.
int el_cpu_is_amd(void);

// ---------------------------------------------------------------- addresses

// A TCP address, written HOST:PORT or tcp://HOST:PORT by every command that
// listens or connects. HOST is a name, an IPv4 address, [IPv6] (brackets
// required) or * (any interface, for listening).
typedef struct {
    char host[256];  // without brackets
    int port;        // 0..65535; 0 lets the kernel pick when listening
} el_addr;

el_status el_addr_parse(const char *s, el_addr *a, el_error *err);
// 1 if the host is this machine only, however it is spelled: localhost,
// 127.0.0.0/8, ::1 (0:0:0:0:0:0:0:1 ...), ::ffff:127.x.y.z.
int el_addr_is_loopback(const el_addr *a);
int el_addr_is_ipv6(const el_addr *a);
// "tcp://HOST:PORT" ("tcp://[::1]:PORT" for IPv6). for_bind turns localhost
// into 127.0.0.1, since ZeroMQ binds to addresses and interfaces, not names.
void el_addr_format(const el_addr *a, int for_bind, char *buf, size_t n);

// ---------------------------------------------------------------- misc

// 64-bit FNV-1a, for identity hashes of models and stages.
uint64_t el_fnv1a(uint64_t h, const void *data, size_t n);
#define EL_FNV_INIT 0xcbf29ce484222325ULL

// Returns 1 if s[0..n) is valid UTF-8 (no overlongs, no surrogates).
int el_utf8_valid(const char *s, size_t n);
// Offset of the first byte that starts an invalid sequence, or n if all valid.
size_t el_utf8_check(const char *s, size_t n);

// Read a whole file into memory (NUL-terminated for convenience). Caps at max_bytes.
el_status el_read_file(const char *path, size_t max_bytes, char **data, size_t *len, el_error *err);
// Writes data to path + ".tmp", syncs it and renames it over path, then syncs
// the folder so the rename survives a crash.
el_status el_write_file_atomic(const char *path, const void *data, size_t n, el_error *err);
// The same with the file created (exclusively, never through a symlink)
// with the given permissions, e.g. 0600 for a secret.
el_status el_write_file_atomic_mode(const char *path, const void *data, size_t n, unsigned mode, el_error *err);
// fsync of the folder holding path (best effort: some file systems refuse).
void el_sync_parent_dir(const char *path);
// 1 if name (a peer's or a request's) is safe as one file name in a folder:
// 1..max bytes of letters, digits, '.', '_' and '-', not starting with '.'.
int el_file_name_ok(const char *name, size_t max);

#ifdef __cplusplus
}
#endif
#endif
