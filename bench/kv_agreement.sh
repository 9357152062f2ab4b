#!/usr/bin/env bash
# KV cache precision: bytes per session and teacher-forced agreement.
# For each model, the logits of every position of a text (windows of the
# model's context, 200 positions in all) with the KV cache in f32, f16 and
# q8_0: how often the greedy choice of f16/q8_0 equals f32's, and the largest
# logit difference; and the KV bytes one session of the model's full context
# holds at each precision (layers x 2 x kv heads x head rows, blocks of 16).
# usage: bench/kv_agreement.sh [MODEL [TOKENIZER]]...   (default: aidreams260K and a synth model)
set -euo pipefail
cd "$(dirname "$0")/.."
EDGELLM=${EDGELLM:-build/edgellm}
SHARED=${EL_SHARED_DIR:-../shared}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
TEXT=data/dreams-eval.txt
if [ $# -eq 0 ]; then
  "$EDGELLM" synth --dim 256 --layers 4 --heads 8 --kv-heads 2 --ff 512 --vocab 1024 --ctx 256 --type f16 --seed 3 \
    -o "$T/synth.gguf" 2>/dev/null
  set -- "$SHARED/models/aidreams260K.bin:$SHARED/models/tok512.bin" "$T/synth.gguf"
fi
echo "| model | KV type | bytes per session (full context) | greedy agreement with f32 | max logit difference |"
echo "| --- | --- | --- | --- | --- |"
for spec in "$@"; do
  model=${spec%%:*}
  tok=""
  [ "$spec" != "$model" ] && tok="-z ${spec#*:}"
  ctx=$("$EDGELLM" info "$model" | sed -n 's/.*, ctx \([0-9]*\).*/\1/p')
  # ids of the text, then windows of at most ctx positions, 200 positions in all
  # shellcheck disable=SC2086
  ids=$("$EDGELLM" tokenize -m "$model" $tok -f "$TEXT" | tr ' ' '\n' | head -n 200)
  for kv in f32 f16 q8_0; do
    : >"$T/$kv.f32"
    n=0
    while [ $n -lt 200 ]; do
      w=$(( ctx < 200 - n ? ctx : 200 - n ))
      list=$(echo "$ids" | sed -n "$((n + 1)),$((n + w))p" | paste -sd, -)
      # shellcheck disable=SC2086
      "$EDGELLM" logits -m "$model" --tokens "$list" --kv-type $kv -o "$T/w.f32" 2>/dev/null
      cat "$T/w.f32" >>"$T/$kv.f32"
      n=$((n + w))
    done
  done
  python3 - "$T" "$model" "$ctx" "$("$EDGELLM" info "$model" | sed -n 's/^dim.*layers \([0-9]*\), heads [0-9]*, kv heads \([0-9]*\), head dim \([0-9]*\).*/\1 \2 \3/p')" <<'PY'
import struct, sys
T, model, ctx, shape = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split()
layers, kvh, hd = map(int, shape)
def rows(path):
    data = open(path, "rb").read()
    f = struct.unpack(f"<{len(data) // 4}f", data)
    return f
ref = rows(f"{T}/f32.f32")
n = 200
V = len(ref) // n
def argmax(r, i): 
    row = r[i * V:(i + 1) * V]
    return max(range(V), key=row.__getitem__)
blocks = (ctx + 15) // 16
for kv, row_bytes in (("f32", 4 * hd), ("f16", 2 * hd), ("q8_0", hd + 4 * (hd // 32 if hd % 32 == 0 else 1))):
    per = layers * 2 * kvh * blocks * 16 * row_bytes
    if kv == "f32":
        print(f"| {model.split('/')[-1]} | f32 | {per} | (reference) | 0 |")
        continue
    got = rows(f"{T}/{kv}.f32")
    agree = sum(argmax(got, i) == argmax(ref, i) for i in range(n))
    diff = max(abs(a - b) for a, b in zip(got, ref))
    print(f"| {model.split('/')[-1]} | {kv} | {per} | {agree}/{n} = {agree / n:.1%} | {diff:.4g} |")
PY
done
