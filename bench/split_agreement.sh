#!/usr/bin/env bash
# How much does the activation encoding on the wire cost in accuracy and bytes?
# For each encoding: teacher-forced token agreement with the local model over a
# greedy generation (the fraction of positions where the split run's most
# likely next token equals the local one), the largest logit difference, and
# the bytes sent per decoded token. Prints a Markdown table.
# usage: bench/split_agreement.sh [MODEL TOKENIZER_OR_- CUT STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${EDGELLM:-build/edgellm}
models=${EL_SHARED_DIR:-../shared}/models
model=${1:-$models/aidreams260K.bin}
tok=${2:-$models/tok512.bin}
cut=${3:-2}
steps=${4:-110}
tokargs=()
[ "$tok" != "-" ] && tokargs=(-z "$tok")
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
layers=$("$bin" info "$model" | sed -n 's/.*layers \([0-9]*\),.*/\1/p' | head -1)
"$bin" worker -m "$model" --layers "$cut:$layers" --listen tcp://127.0.0.1:$port --insecure -q &
wpid=$!
trap 'kill $wpid 2>/dev/null; wait $wpid 2>/dev/null; rm -rf "$work"' EXIT
sleep 0.5
"$bin" run -m "$model" "${tokargs[@]}" -p "The dream" -n "$steps" --temp 0 --ignore-eos >"$work/text.txt"
truncate -s -1 "$work/text.txt"  # the final newline run prints
# a random-weight model may emit byte tokens that do not form UTF-8: drop those bytes
python3 -c "import sys; t=open(sys.argv[1],'rb').read().decode('utf-8','ignore'); open(sys.argv[1],'w').write(t)" "$work/text.txt"
"$bin" logits -m "$model" "${tokargs[@]}" -f "$work/text.txt" -o "$work/local.f32" 2>/dev/null
vocab=$("$bin" info "$model" | sed -n 's/.*vocab \([0-9]*\),.*/\1/p' | head -1)
echo "model $(basename "$model"), cut after layer $cut of $layers, $steps greedy steps, teacher-forced"
echo
echo "| activations | bytes sent / token | token agreement | max abs logit diff |"
echo "| --- | --- | --- | --- |"
for act in f32 f16 bf16 q8_0; do
  if ! "$bin" logits -m "$model" "${tokargs[@]}" -f "$work/text.txt" -o "$work/$act.f32" --split "$cut" \
       --via tcp://127.0.0.1:$port --insecure --act "$act" 2>"$work/err"; then
    echo "| $act | - | not supported: $(head -1 "$work/err") | - |"
    continue
  fi
  bytes=$("$bin" run -m "$model" "${tokargs[@]}" -p "The dream" -n 20 --temp 0 --ignore-eos --split "$cut" \
          --via tcp://127.0.0.1:$port --insecure --act "$act" --stats 2>&1 >/dev/null | sed -n 's/^per decoded token.*sent \([0-9]*\) B.*/\1/p')
  python3 - "$work/local.f32" "$work/$act.f32" "$vocab" "$act" "$bytes" <<'PY'
import struct, sys
a = open(sys.argv[1], "rb").read(); b = open(sys.argv[2], "rb").read(); V = int(sys.argv[3])
fa = struct.unpack("<%df" % (len(a) // 4), a); fb = struct.unpack("<%df" % (len(b) // 4), b)
rows = len(fa) // V
agree = 0; diff = 0.0
for r in range(rows):
    ra = fa[r*V:(r+1)*V]; rb = fb[r*V:(r+1)*V]
    agree += max(range(V), key=ra.__getitem__) == max(range(V), key=rb.__getitem__)
    diff = max(diff, max(abs(x - y) for x, y in zip(ra, rb)))
print("| %s | %s | %d/%d (%.1f%%) | %.2g |" % (sys.argv[4], sys.argv[5], agree, rows, 100.0 * agree / rows, diff))
PY
done
