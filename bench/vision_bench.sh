#!/usr/bin/env bash
# Encode time of the vision encoder for ViT-B/16- and ViT-L/14-336-shaped
# random-weight projectors (LLaVA-style: CLIP ViT + two-layer MLP projector
# into a 4096-wide language model) at f16 and q8_0, as GFLOP/s against the
# f32 FMA peak that `edgellm bench` measures in the same run.
# Usage: bench/vision_bench.sh [THREADS] [REPS] [BUILD_DIR]
# The projectors are made once under ${EL_BENCH_DIR:-/tmp/el-vision-bench}.
set -euo pipefail
threads=${1:-2}
reps=${2:-3}
build=${3:-build}
E=$build/edgellm
dir=${EL_BENCH_DIR:-/tmp/el-vision-bench}
mkdir -p "$dir"
for shape in vit-b16 vit-l14-336; do
  f16=$dir/$shape-f16.gguf
  [ -f "$f16" ] || "$E" synth --dim 4096 --mmproj "$f16" --vit $shape --type f16 >/dev/null
  [ -f "$dir/$shape-q8_0.gguf" ] || "$E" quantize "$f16" "$dir/$shape-q8_0.gguf" q8_0 -t "$threads" 2>/dev/null
done
printf "%-12s %-5s %10s %10s %9s %12s %12s %8s\n" shape type GFLOP "s/image" best "GFLOP/s" "FMA peak" ratio
for shape in vit-b16 vit-l14-336; do
  for type in f16 q8_0; do
    "$E" bench --mmproj "$dir/$shape-$type.gguf" -t "$threads" -r "$reps" --json 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
print("%-12s %-5s %10.1f %10.3f %9.3f %12.1f %12.1f %8.2f" % (sys.argv[1], sys.argv[2], d["gflop"], d["encode_s"],
      d["encode_s_best"], d["gflops"], d["fma_peak_gflops"], d["ratio"]))' "$shape" "$type"
  done
done
