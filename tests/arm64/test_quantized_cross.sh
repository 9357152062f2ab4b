#!/usr/bin/env bash
# Quantized forward passes through every AArch64 kernel level under qemu,
# against the x86-64 binary on the same files: the logits of each level
# within 1e-4 of the x86-64 run's (only the order of float additions
# differs), and the scalar reference bit for bit the same on both
# architectures. The files cover Q8_0 and Q4_0 with rows that fall back to
# f16 per tensor (aidreams260K: 172-element rows), Q4_K and Q6_K with rows
# that fall back to Q8_0 (a synthetic model with 544-element rows), and f16
# and bf16 weights. Run by scripts/test-arm64.
source "$(dirname "$0")/../e2e/lib.sh"
: "${EDGELLM_ARM:?EDGELLM_ARM must point at the AArch64 binary (or a wrapper that runs it under qemu)}"
TOKENS=1,50,60,70,80,90,100,110,120

"$EDGELLM" convert "$MODELS/aidreams260K.bin" "$T/aid.gguf" -z "$MODELS/tok512.bin" 2>/dev/null || fail "convert"
"$EDGELLM" synth --dim 256 --layers 2 --heads 4 --kv-heads 2 --ff 544 --vocab 300 --ctx 64 --seed 5 -o "$T/syn.gguf" \
  2>/dev/null || fail "synth"
for t in q8_0 q4_0; do "$EDGELLM" quantize "$T/aid.gguf" "$T/aid-$t.gguf" $t 2>/dev/null || fail "quantize $t"; done
for t in q4_k q6_k f16 bf16; do "$EDGELLM" quantize "$T/syn.gguf" "$T/syn-$t.gguf" $t 2>/dev/null || fail "quantize $t"; done

for m in aid-q8_0 aid-q4_0 syn-q4_k syn-q6_k syn-f16 syn-bf16; do
  "$EDGELLM" logits -m "$T/$m.gguf" --tokens $TOKENS -o "$T/x86-$m.f32" 2>/dev/null || fail "x86-64 logits $m"
  EL_ISA=scalar "$EDGELLM" logits -m "$T/$m.gguf" --tokens $TOKENS -o "$T/x86-scalar-$m.f32" 2>/dev/null \
    || fail "x86-64 scalar logits $m"
  line="$m:"
  for isa in scalar neon dotprod i8mm; do
    EL_ISA=$isa "$EDGELLM_ARM" logits -m "$T/$m.gguf" --tokens $TOKENS -o "$T/arm-$isa-$m.f32" 2>"$T/err" \
      || { fail "arm64 $isa logits $m: $(cat "$T/err")"; continue; }
    if [ $isa = scalar ]; then
      cmp -s "$T/arm-$isa-$m.f32" "$T/x86-scalar-$m.f32" && pass || fail "$m: scalar logits differ between arm64 and x86-64"
    fi
    d=$(python3 - "$T/arm-$isa-$m.f32" "$T/x86-$m.f32" <<'PY'
import struct, sys
a = open(sys.argv[1], "rb").read(); b = open(sys.argv[2], "rb").read()
assert len(a) == len(b) and len(a) > 0, (len(a), len(b))
fa = struct.unpack("<%df" % (len(a) // 4), a); fb = struct.unpack("<%df" % (len(b) // 4), b)
print("%.3g" % max(abs(x - y) for x, y in zip(fa, fb)))
PY
)
    python3 -c "import sys; sys.exit(0 if float('$d') <= 1e-4 else 1)" && pass || fail "$m arm64 $isa: logits $d from x86-64's"
    line+=" $isa $d"
  done
  echo "$line (max abs logit difference from x86-64)"
done
finish
