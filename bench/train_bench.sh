#!/usr/bin/env bash
# LoRA training throughput on a ~125M-parameter Llama-shaped synth model
# (dim 768, 12 layers, 12 heads, 4 kv heads, ff 2048, vocab 32000) at ctx CTX (256),
# rank 8 on all seven projections: tokens/s, peak memory and achieved GFLOP/s
# (4·N FLOP per token: forward + input gradients through the frozen base)
# against the f32 FMA peak of this machine measured in the same run, by the
# library's probe on the widest vector level the CPU has (edgellm bench --peak:
# the one definition of the peak every ratio uses).
# Prints figures; never fails on time.
#
# On a machine shared with other jobs every figure is the best of REPS runs
# (other load only ever slows a run down), and the peak is the best of a
# probe before every training run and one after them all.
#
# usage: bench/train_bench.sh [THREADS] [STEPS] [REPS] [CTX]     (env EDGELLM, BENCH_TMP)
set -uo pipefail
cd "$(dirname "$0")/.."
EDGELLM=${EDGELLM:-build/edgellm}
THREADS=${1:-2}
STEPS=${2:-6}
REPS=${3:-2}
CTX=${4:-256}
TMP=${BENCH_TMP:-/tmp/edgellm-train-bench}
mkdir -p "$TMP"
DATA=data/finetune/pirate-dreams.txt
SHAPE=(--dim 768 --layers 12 --heads 12 --kv-heads 4 --ff 2048 --vocab 32000 --ctx 1024)

# probe_peak REPS: the best f32 FMA peak of REPS probes (GFLOP/s)
probe_peak() {
  local j
  j=$("$EDGELLM" bench --peak -t "$THREADS" -r "$1" --json) || { echo "edgellm bench --peak failed" >&2; exit 1; }
  python3 -c 'import json,sys; print(json.loads(sys.argv[1])["fma_peak_gflops"])' "$j"
}
peak=$(probe_peak 2)
isa=$("$EDGELLM" bench --peak -t "$THREADS" -r 1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["isa"])')
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
results=()
for type in f32 f16 q8_0; do
  model=$TMP/m125-$type.gguf
  if [ ! -f "$model" ]; then
    if ! "$EDGELLM" synth "${SHAPE[@]}" --type $type -o "$model" 2>/dev/null &&
       ! { "$EDGELLM" synth "${SHAPE[@]}" -o "$TMP/m125-f32.gguf" 2>/dev/null &&
           "$EDGELLM" quantize "$TMP/m125-f32.gguf" "$model" $type -t "$THREADS" 2>/dev/null; }; then
      rm -f "$model"
      results+=("$type - -")
      continue
    fi
  fi
  best=0 mem=0
  for rep in $(seq 1 "$REPS"); do
    p=$(probe_peak 1)
    peak=$(python3 -c "import sys; print(max(float(sys.argv[1]), float(sys.argv[2])))" "$peak" "$p")
    log=$TMP/ft-$type.log
    "$EDGELLM" finetune -m "$model" --data "$DATA" --ctx "$CTX" --batch 1 --rank 8 --targets all --steps "$STEPS" \
      -t "$THREADS" -o "$TMP/adapter-$type.gguf" 2>"$log" || { echo "$type: finetune failed: $(tail -1 "$log")"; continue; }
    read -r tps m <<<"$(sed -nE 's/.*; ([0-9.]+) tokens\/s after the first step\), peak memory ([0-9.]+) MiB.*/\1 \2/p' "$log")"
    if python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > float(sys.argv[2]) else 1)" "$tps" "$best"; then
      best=$tps mem=$m
    fi
  done
  results+=("$type $best $mem")
done
peak2=$(probe_peak 2)
peak=$(python3 -c "import sys; print(max(float(sys.argv[1]), float(sys.argv[2])))" "$peak" "$peak2")
n=$(sed -nE 's/^model: ([0-9.]+)M parameters.*/\1/p' "$TMP/ft-f32.log")
echo "f32 FMA peak ($isa), $THREADS threads: $peak GFLOP/s (best of the probes); N = ${n}M parameters; best of $REPS runs; ctx $CTX"
printf "%-6s %8s %10s %9s %10s %12s %7s\n" base "tok/s" "peak MiB" "GFLOP/s" "% of peak" "matmul-only" "step s"
for r in "${results[@]}"; do
  python3 - $r "$peak" "$n" "$CTX" <<'PY'
import sys
t, tps, mem, peak, n, ctx = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]) * 1e6, int(sys.argv[6])
if tps == "-":
    print("%-6s (this build cannot write %s models yet)" % (t, t)); sys.exit()
tps, mem = float(tps), float(mem)
gf = tps * 4 * n / 1e9
gm = tps * 4 * (n - 32000 * 768) / 1e9  # without the embedding table, which is only looked up
print("%-6s %8.1f %10.1f %9.1f %9.1f%% %11.1f%% %7.2f" % (t, tps, mem, gf, 100 * gf / peak, 100 * gm / peak, ctx / tps))
PY
done
echo "(GFLOP/s = 4·N·tok/s with N = all 124.7M parameters; matmul-only: 4·(N - 24.6M embedding entries,"
echo " which are looked up, not multiplied) as a share of the peak;"
echo " tok/s excludes the first step; $(grep -o 'blas .*' "$TMP/ft-f32.log" 2>/dev/null))"
