#!/usr/bin/env bash
# Greedy generation and logits of the real model equal llama2.c's, from the
# llama2.c checkpoint and from its GGUF conversion.
source "$(dirname "$0")/lib.sh"

"$EDGELLM" convert "$MODELS/aidreams260K.bin" "$T/aid.gguf" -z "$MODELS/tok512.bin" 2>"$T/convert.err" \
  || fail "convert: $(cat "$T/convert.err")"

for variant in bin gguf; do
  if [ $variant = bin ]; then args=(-m "$MODELS/aidreams260K.bin" -z "$MODELS/tok512.bin"); else args=(-m "$T/aid.gguf"); fi
  while IFS=$'\t' read -r prompt want; do
    got=$("$EDGELLM" run "${args[@]}" -p "$prompt" -n 120 --temp 0 -t 2 | tr '\n' ' ')
    want=${want% }  # the reference's last character is llama2.c's final newline
    if [[ "$got" == "$want"* ]]; then pass; else fail "$variant greedy '$prompt': got '$got' want prefix '$want'"; fi
  done <"$REF/aidreams260K-greedy.tsv"

  "$EDGELLM" logits "${args[@]}" -p "The dream" -o "$T/logits-$variant.f32" 2>/dev/null || fail "$variant logits failed"
  python3 - "$T/logits-$variant.f32" "$REF/aidreams260K-logits-the-dream.f32" <<'PY' && pass || fail "$variant logits differ"
import struct, sys
a = open(sys.argv[1], "rb").read(); b = open(sys.argv[2], "rb").read()
assert len(a) == len(b) == 7 * 512 * 4, (len(a), len(b))
fa = struct.unpack("<%df" % (len(a) // 4), a); fb = struct.unpack("<%df" % (len(b) // 4), b)
d = max(abs(x - y) for x, y in zip(fa, fb))
print("max abs logit difference: %.3g" % d)
sys.exit(0 if d < 1e-4 else 1)
PY
done

# The two paths agree with each other exactly (same weights, same kernels).
cmp -s "$T/logits-bin.f32" "$T/logits-gguf.f32" && pass || fail "bin and gguf logits are not identical"
finish
