#!/usr/bin/env bash
# Block store speeds on one model file: catalog (hash every block), b2sum of
# the whole file and a plain read for comparison, store import, store verify,
# and a fetch of everything over a loopback link, plaintext and CURVE.
# Usage: bench/store_bench.sh MODEL.gguf [BUILD_DIR]   (default build/, which must be built)
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?usage: bench/store_bench.sh MODEL.gguf [BUILD_DIR]}
build=${2:-build}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
libs=$(pkg-config --libs libzmq libmicrohttpd libsodium)
pkg-config --exists openblas && libs="$libs $(pkg-config --libs openblas)"
cc -O2 -D_GNU_SOURCE -Iinclude -I"$build/include" bench/store_fetch.c "$build/libedgellm.a" $libs -lm -pthread \
  -o "$tmp/store_fetch"

echo "machine: $(nproc) CPUs, $(uname -m), $(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed "s/^ //"); model: $model ($(stat -c %s "$model") bytes)"
cat "$model" >/dev/null  # in the page cache: every figure below is CPU and fsync, not the disk
t() { local s; s=$(date +%s.%N); "$@" >/dev/null 2>&1; python3 -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$s" "$(date +%s.%N)"; }
mib=$(python3 -c "import sys; print(int(sys.argv[1]) / 1048576)" "$(stat -c %s "$model")")
rate() { python3 -c "import sys; print('%6.1f MiB/s' % (float(sys.argv[1]) / float(sys.argv[2])))" "$mib" "$1"; }
s=$(t cat "$model");                              echo "read (cat)         $s s  $(rate "$s")"
s=$(t b2sum -l 256 "$model");                     echo "b2sum -l 256       $s s  $(rate "$s")  (1 thread)"
s=$(t "$build/edgellm" catalog "$model");          echo "catalog            $s s  $(rate "$s")  (all CPUs)"
s=$(t "$build/edgellm" store import "$tmp/origin" "$model" --name m); echo "store import       $s s  $(rate "$s")  (+ fsync per block)"
s=$(t "$build/edgellm" store verify "$tmp/origin"); echo "store verify       $s s  $(rate "$s")  (1 thread, reads)"
"$tmp/store_fetch" "$tmp/origin" m "$tmp/plain" plain "$tmp/keys"
"$tmp/store_fetch" "$tmp/origin" m "$tmp/curve" curve "$tmp/keys"
