#!/usr/bin/env bash
# Placement on simulated topologies (src/place, docs/network.md "Placement"):
# hit ratio of trim against independent caching and the paper's greedy alone,
# swept over storage per server (1..5 x the mean model size), the number of
# models (15, 30, 60, from 3 bases) and the degree of sharing (0, 0.5, 0.9),
# on 10 servers and 100 users; SEEDS instances per row (default 5).
# Usage: bench/placement.sh [BUILD_DIR] [SEEDS]   (BUILD_DIR default build/, built)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
seeds=${2:-5}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
[ -f "$build/libedgellm.a" ] || { echo "placement.sh: $build/libedgellm.a not found (scripts/build first)" >&2; exit 2; }
libs=$(pkg-config --libs libzmq libmicrohttpd libsodium)
pkg-config --exists openblas && libs="$libs $(pkg-config --libs openblas)"
# shellcheck disable=SC2086
cc -O2 -D_GNU_SOURCE -Iinclude -I"$build/include" bench/placement.c "$build/libedgellm.a" $libs -lm -pthread -o "$tmp/placement"
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
"$tmp/placement" "$seeds"
