// Link emulation: a byte-stream proxy that makes a TCP path behave like a slower,
// longer, lossy link (rate, one-way delay, jitter, loss) so split runs can be tried on
// "5G" or "LTE" from one machine. The scheduler is pure and clock-injected (unit-
// testable); the proxy (linkemu_net.c) feeds it real time. See docs/linkemu.md.
#ifndef EDGELLM_LINKEMU_H
#define EDGELLM_LINKEMU_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "edgellm/core.h"

#ifdef __cplusplus
extern "C" {
#endif

// Bytes are cut into packets of at most this many bytes (TCP payload per segment
// with timestamps on a 1500-byte Ethernet MTU).
#define EL_LINKEMU_MSS 1448

// Parsing limits: anything outside is refused rather than clamped.
#define EL_LINKEMU_RATE_MIN 1e3        // 1 kbit/s
#define EL_LINKEMU_RATE_MAX 1e12       // 1 Tbit/s
#define EL_LINKEMU_TIME_MAX 60000000000ULL  // 60 s for delays, jitter, rto
#define EL_LINKEMU_LOSS_MAX 0.5

typedef enum { EL_JITTER_UNIFORM = 0, EL_JITTER_NORMAL = 1 } el_jitter_dist;

// One direction of the link.
typedef struct {
    double rate_bps;        // bottleneck rate of TCP payload, bit/s; 0 = unlimited
    uint64_t delay_ns;      // one-way propagation delay
    uint64_t jitter_ns;     // delay varies within +-jitter_ns (never reorders)
    el_jitter_dist dist;    // uniform in +-jitter, or normal (sigma = jitter/2) clipped to +-jitter
    double loss;            // probability a packet is lost and must be retransmitted, [0, 0.5]
    uint64_t rto_ns;        // extra delay of a lost packet (time to detect and resend it)
} el_linkemu_params;

// What the scheduler decided for one packet.
typedef struct {
    uint64_t depart_ns;  // its last bit leaves the bottleneck
    uint64_t arrive_ns;  // it is handed to the receiver, in order within its stream
    int lost;            // 1 if it needed a retransmission (arrive includes rto_ns)
} el_linkemu_pkt;

// The scheduler state of one direction. All connections in that direction share it:
// they queue behind each other at one bottleneck, as on a real link, and the link
// itself never reorders packets.
typedef struct {
    el_linkemu_params p;
    uint64_t busy_until_ns;   // departure of the last packet scheduled
    uint64_t last_link_ns;    // when the last packet reached the far end of the link
    double carry_ns;          // sub-nanosecond serialization time carried forward
    uint64_t rng;
    uint64_t n_packets, n_bytes, n_lost;
} el_linkemu_dir;

// One TCP connection's byte stream in one direction. The receiver's TCP hands bytes
// over in order, so a lost packet holds back later packets of its own stream only:
// head-of-line blocking is per connection, not per link.
typedef struct {
    uint64_t last_arrive_ns;
} el_linkemu_stream;

void el_linkemu_dir_init(el_linkemu_dir *d, const el_linkemu_params *p, uint64_t seed);
// New parameters apply to packets scheduled from now on; queued ones keep their times.
void el_linkemu_dir_set(el_linkemu_dir *d, const el_linkemu_params *p);
// Schedules one packet of stream s (zeroed at connection start) with `bytes` (<=
// EL_LINKEMU_MSS; 0 for a FIN marker, which takes no serialization time and is never
// lost) handed to the link at now_ns.
el_linkemu_pkt el_linkemu_dir_send(el_linkemu_dir *d, el_linkemu_stream *s, uint64_t now_ns, size_t bytes);
// How long the bottleneck stays busy with what is already queued (0 when idle).
uint64_t el_linkemu_dir_backlog_ns(const el_linkemu_dir *d, uint64_t now_ns);

// Default loss-recovery delay for a link with these one-way delays: a tail-loss probe
// fires after two round trips plus 2 ms (Linux/RFC 8985 TLP with >1 segment in flight).
uint64_t el_linkemu_auto_rto(uint64_t delay_up_ns, uint64_t delay_down_ns);

// ---------------------------------------------------------------- parsing
// Each names the value in its message; the caller prefixes the option name.

// "100mbit", "1.5gbit", "800kbit", "64000bit", "20Mbps" (bits per second, like the
// networking convention; tc's byte-based "kbps" is deliberately not followed).
el_status el_linkemu_parse_rate(const char *s, double *bps, el_error *err);
// "20ms", "150us", "1.5s", "800ns"; "0" alone is allowed. At most 60 s.
el_status el_linkemu_parse_duration(const char *s, uint64_t *ns, el_error *err);
// "0.5%" or "0.005"; 0..50%.
el_status el_linkemu_parse_loss(const char *s, double *p, el_error *err);
// Formats a rate as "20 Mbit/s" / "unlimited".
void el_linkemu_format_rate(double bps, char *buf, size_t n);


// ---------------------------------------------------------------- profiles

typedef struct {
    const char *name;
    double rate_up_bps, rate_down_bps;  // up = device -> edge (listen side -> forward side)
    uint64_t delay_ns, jitter_ns;       // one-way, same in both directions
    double loss;
    const char *summary;                // one line: what it stands for
} el_linkemu_profile;

// NULL if unknown.
const el_linkemu_profile *el_linkemu_profile_find(const char *name);
// The table, terminated by an entry whose name is NULL.
const el_linkemu_profile *el_linkemu_profiles(void);

// ---------------------------------------------------------------- the proxy

typedef struct {
    el_addr listen, forward, control;
    int has_control;
    el_linkemu_params up, down;  // up: listen side -> forward side
    int rto_auto;                // recompute rto from the delays whenever they change
    uint64_t seed;
    size_t queue_limit;          // bytes held per direction (all connections); reads stop beyond
    uint64_t buffer_ns;          // bottleneck buffer, in time at the current rate; reads stop beyond
    double stats_every_s;        // 0 = no periodic stats line
    int max_conns;
    FILE *log;                   // stats and events (stderr from the CLI); NULL = silent
} el_linkemu_config;

void el_linkemu_config_default(el_linkemu_config *c);

typedef struct el_linkemu el_linkemu;

typedef struct {
    uint64_t bytes_in, bytes_out, packets, lost;
} el_linkemu_dir_stats;

typedef struct {
    el_linkemu_dir_stats up, down;
    uint64_t conns_total, conns_open, conns_failed;
    double elapsed_s;
} el_linkemu_stats;

// Resolves the addresses and binds the listening sockets (nothing is accepted yet).
el_status el_linkemu_open(const el_linkemu_config *cfg, el_linkemu **out, el_error *err);
// Ports actually bound (useful with port 0).
int el_linkemu_listen_port(const el_linkemu *e);
int el_linkemu_control_port(const el_linkemu *e);
// Runs the proxy until wake_fd becomes readable (e.g. a signal handler wrote to a pipe).
// wake_fd < 0: runs until an error.
el_status el_linkemu_run(el_linkemu *e, int wake_fd, el_error *err);
void el_linkemu_get_stats(const el_linkemu *e, el_linkemu_stats *s);
// The current link settings in one line ("up 20 Mbit/s delay 20ms ... | down ...").
void el_linkemu_describe(const el_linkemu *e, char *buf, size_t n);
// One human line with totals and average rates since start.
void el_linkemu_format_stats(const el_linkemu_stats *s, char *buf, size_t n);
// Closes every socket; accepts NULL.
void el_linkemu_close(el_linkemu *e);

#ifdef __cplusplus
}
#endif
#endif
