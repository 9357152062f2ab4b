#!/usr/bin/env bash
# LoRA training throughput on a ~125M-parameter Llama-shaped synth model
# (dim 768, 12 layers, 12 heads, 4 kv heads, ff 2048, vocab 32000) at ctx 256,
# rank 8 on all seven projections: tokens/s, peak memory and achieved GFLOP/s
# (4·N FLOP per token: forward + input gradients through the frozen base)
# against the f32 FMA peak of this machine measured in the same run.
# Prints figures; never fails on time.
#
# usage: bench/train_bench.sh [THREADS] [STEPS]     (env EDGELLM, BENCH_TMP)
set -uo pipefail
cd "$(dirname "$0")/.."
EDGELLM=${EDGELLM:-build/edgellm}
THREADS=${1:-2}
STEPS=${2:-6}
TMP=${BENCH_TMP:-/tmp/edgellm-train-bench}
mkdir -p "$TMP"
DATA=data/finetune/pirate-dreams.txt
SHAPE=(--dim 768 --layers 12 --heads 12 --kv-heads 4 --ff 2048 --vocab 32000 --ctx 1024)

cc -O2 -mavx2 -mfma -pthread bench/fma_peak.c -o "$TMP/fma_peak" || { echo "cannot build bench/fma_peak.c"; exit 1; }
peak=$("$TMP/fma_peak" "$THREADS" 2)
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "f32 FMA peak, $THREADS threads: $peak GFLOP/s"
printf "%-6s %8s %10s %9s %10s %12s %7s\n" base "tok/s" "peak MiB" "GFLOP/s" "% of peak" "matmul-only" "step s"
for type in f32 f16 q8_0; do
  model=$TMP/m125-$type.gguf
  if [ ! -f "$model" ]; then
    if ! "$EDGELLM" synth "${SHAPE[@]}" --type $type -o "$model" 2>/dev/null &&
       ! { "$EDGELLM" synth "${SHAPE[@]}" -o "$TMP/m125-f32.gguf" 2>/dev/null &&
           "$EDGELLM" quantize "$TMP/m125-f32.gguf" "$model" $type -t "$THREADS" 2>/dev/null; }; then
      rm -f "$model"
      printf "%-6s (this build cannot write %s models yet)\n" $type $type
      continue
    fi
  fi
  log=$TMP/ft-$type.log
  "$EDGELLM" finetune -m "$model" --data "$DATA" --ctx 256 --batch 1 --rank 8 --targets all --steps "$STEPS" \
    -t "$THREADS" -o "$TMP/adapter-$type.gguf" 2>"$log" || { echo "$type: finetune failed: $(tail -1 "$log")"; continue; }
  python3 - "$log" "$peak" "$type" <<'PY'
import re, sys
log = open(sys.argv[1]).read(); peak = float(sys.argv[2])
n = float(re.search(r"model: ([0-9.]+)M parameters", log).group(1)) * 1e6
m = re.search(r"\(([0-9.]+) tokens/s; ([0-9.]+) tokens/s after the first step\), peak memory ([0-9.]+) MiB", log)
tps = float(m.group(2)); mem = float(m.group(3))
gf = tps * 4 * n / 1e9
gm = tps * 4 * (n - 32000 * 768) / 1e9  # without the embedding table, which is only looked up
print("%-6s %8.1f %10.1f %9.1f %9.1f%% %11.1f%% %7.2f" % (sys.argv[3], tps, mem, gf, 100 * gf / peak, 100 * gm / peak,
                                                         256 / tps))
PY
done
echo "(GFLOP/s = 4·N·tok/s with N = all 124.7M parameters; matmul-only: 4·(N - 24.6M embedding entries,"
echo " which are looked up, not multiplied) as a share of the peak;"
echo " tok/s excludes the first step; BLAS: $(grep -o 'blas [a-z]*' "$TMP/ft-f32.log" 2>/dev/null))"
