#!/usr/bin/env bash
# Many devices on one edge server: aggregate decode tokens/s, per-token
# latency and rows per worker step for D devices at once, against one worker
# and against a 2-worker chain, all on this machine over loopback.
#
# usage: bench/split_multi.sh [MODEL.gguf] [D list] [tokens per device]
#   MODEL defaults to the TinyLlama-shaped random model quantized to q4_0
#   (dim 2048, 22 layers, 32 heads, 4 kv heads, ff 5632, vocab 32000), made
#   under $EL_BENCH_DIR (default /tmp/el-bench) if missing.
# The device keeps the embedding and layer 0 (cut after layer 1, as the issue
# asks: --split 1), 1 thread each; the worker serves layers 1..21 and the
# head with 2 threads; the chain splits them at layer 11 (1 thread each).
# Figures are taken in the window where every device is decoding: tokens
# finished in it / its length, and the p50/p95 of those tokens' periods.
set -euo pipefail
cd "$(dirname "$0")/.."
EDGELLM=${EDGELLM:-build/edgellm}
DIR=${EL_BENCH_DIR:-/tmp/el-bench}
MODEL=${1:-$DIR/tl-q4_0.gguf}
DS=${2:-"1 2 4 8 16"}
N=${3:-48}
mkdir -p "$DIR"
if [ ! -f "$MODEL" ]; then
  echo "making $MODEL" >&2
  "$EDGELLM" synth --dim 2048 --layers 22 --heads 32 --kv-heads 4 --ff 5632 --vocab 32000 --type f16 -o "$DIR/tl-f16.gguf"
  "$EDGELLM" quantize "$DIR/tl-f16.gguf" "$MODEL" q4_0
  rm -f "$DIR/tl-f16.gguf"
fi
L=$("$EDGELLM" info "$MODEL" | sed -n 's/.*layers \([0-9]*\),.*/\1/p')
MID=$(( (L + 1) / 2 ))
T=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_serving() { for _ in $(seq 1 600); do grep -q serving "$1" && return 0; sleep 0.1; done; echo "worker did not start: $(cat "$1")" >&2; exit 1; }

# start_workers MODE: one worker (2 threads) or a chain of two (1 thread each); sets VIA, CUTS
start_workers() {
  pids=()
  if [ "$1" = one ]; then
    local p; p=$(port)
    "$EDGELLM" worker -m "$MODEL" --layers 1:$L --listen tcp://127.0.0.1:$p --insecure -t 2 2>"$T/w.log" &
    pids+=($!); wait_serving "$T/w.log"
    VIA=tcp://127.0.0.1:$p; CUTS=1; WLOG=$T/w.log
  else
    local p1 p2; p1=$(port); p2=$(port)
    "$EDGELLM" worker -m "$MODEL" --layers $MID:$L --listen tcp://127.0.0.1:$p2 --insecure -t 1 2>"$T/w2.log" &
    pids+=($!); wait_serving "$T/w2.log"
    "$EDGELLM" worker -m "$MODEL" --layers 1:$MID --listen tcp://127.0.0.1:$p1 --next tcp://127.0.0.1:$p2 --insecure -t 1 \
      2>"$T/w.log" &
    pids+=($!); wait_serving "$T/w.log"
    VIA=tcp://127.0.0.1:$p1; CUTS=1,$MID; WLOG=$T/w.log
  fi
}

stop_workers() { kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null || true; pids=(); }

echo "model $MODEL, $N tokens per device, $(nproc) CPUs, loopback, $(date -u +%F)"
printf '| workers | D | aggregate tok/s | x D=1 | p50 ms/token | p95 ms/token | x D=1 (p95) | rows/step |\n'
printf '| --- | --- | --- | --- | --- | --- | --- | --- |\n'
for mode in one chain; do
  base_agg=""; base_p95=""
  for D in $DS; do
    start_workers $mode
    dev=()
    for i in $(seq 1 "$D"); do
      "$EDGELLM" run -m "$MODEL" -p "Once upon a time $i" -n "$N" --temp 0 --ignore-eos -t 1 --split "$CUTS" --via "$VIA" \
        --insecure --json >/dev/null 2>"$T/d$i.json" &
      dev+=($!)
    done
    for p in "${dev[@]}"; do wait "$p" || { echo "a device failed: $(tail -1 "$T"/d*.json)" >&2; exit 1; }; done
    stop_workers
    rps=$(sed -n 's/.*steps of \([0-9.]*\) rows on average.*/\1/p' "$WLOG" | tail -1)
    read -r agg p50 p95 < <(python3 - "$T" "$D" <<'EOF'
import json, sys
T, D = sys.argv[1], int(sys.argv[2])
devs = []
for i in range(1, D + 1):
    line = [l for l in open(f"{T}/d{i}.json") if l.startswith("{")][-1]
    j = json.loads(line)
    t, ends = j["decode_t0"], []
    for ms in j["token_ms"]:
        t += ms / 1000
        ends.append((t, ms))
    devs.append(ends)
lo = max(d[0][0] for d in devs)   # every device has finished its first token
hi = min(d[-1][0] for d in devs)  # no device has finished yet
inside = [ms for d in devs for (t, ms) in d if lo < t <= hi]
if hi <= lo or len(inside) < D:
    inside = [ms for d in devs for (t, ms) in d]
    lo, hi = min(d[0][0] for d in devs), max(d[-1][0] for d in devs)
inside.sort()
q = lambda p: inside[min(len(inside) - 1, int(p * len(inside)))]
print(f"{len(inside) / (hi - lo):.1f} {q(0.5):.1f} {q(0.95):.1f}")
EOF
)
    [ -z "$base_agg" ] && base_agg=$agg && base_p95=$p95
    x=$(python3 -c "print(f'{$agg / $base_agg:.2f}')")
    xp=$(python3 -c "print(f'{$p95 / $base_p95:.2f}')")
    printf '| %s | %d | %s | %s | %s | %s | %s | %s |\n' "$mode" "$D" "$agg" "$x" "$p50" "$p95" "$xp" "${rps:-?}"
  done
done
