#!/usr/bin/env bash
# Work per weight block of each AArch64 kernel level against the scalar
# reference: instructions executed per 32 weights x 1 token, counted under
# qemu-aarch64 (-singlestep -d exec,nochain logs one line per executed
# instruction; Debian's static qemu loads no TCG plugins). bench/block_cost.c
# runs one tile kernel REPS times; the count of REPS=2 minus REPS=1 is one
# call's, and the difference of that between K1 and K2 columns, divided by
# the blocks added and by rows x tokens, is the cost of one more block: the
# calls' fixed costs drop out. Instruction counts are no speed: absolute
# speed needs real hardware.
# Usage: bench/arm64_block_cost.sh [BUILD_DIR]   (default build-arm64, from scripts/build-arm64)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi
B=${1:-build-arm64}
[ -f "$B/libedgellm.a" ] || { echo "arm64_block_cost: $B/libedgellm.a not found (run scripts/build-arm64)" >&2; exit 1; }
bin=$B/block_cost
aarch64-linux-gnu-gcc -O2 -std=c11 -D_GNU_SOURCE -Iinclude bench/block_cost.c "$B/libedgellm.a" -lm -pthread -static -o "$bin"
K1=512 K2=1024

count() {  # ARGS of block_cost -> instructions executed by the whole run
  qemu-aarch64-static -singlestep -d exec,nochain -D /dev/stdout "$bin" "$@" | grep -c '^Trace'
}

per_block() {  # DTYPE ISA ROWS TOKS [packed] -> instructions per 32 weights x 1 token
  local c1 c2
  c1=$(( $(count "$1" "$2" $K1 "$3" "$4" 2 ${5:-}) - $(count "$1" "$2" $K1 "$3" "$4" 1 ${5:-}) ))
  c2=$(( $(count "$1" "$2" $K2 "$3" "$4" 2 ${5:-}) - $(count "$1" "$2" $K2 "$3" "$4" 1 ${5:-}) ))
  awk -v d=$((c2 - c1)) -v b=$(((K2 - K1) / 32)) -v n=$(($3 * $4)) 'BEGIN { printf "%.1f", d / b / n }'
}

echo "instructions per 32-element weight block and token (qemu-aarch64 -cpu max, gcc $(aarch64-linux-gnu-gcc -dumpversion) -O2)"
for shape in "decode 2 1" "prefill 4 2"; do
  set -- $shape
  echo
  echo "$1 tile ($2 rows x $3 token(s)):"
  printf "| %-5s | %7s | %7s | %7s | %7s |\n" dtype scalar neon dotprod i8mm
  printf "|-------|---------|---------|---------|---------|\n"
  for dt in q8_0 q4_0 q4_k q6_k f16 bf16; do
    row=$(printf "| %-5s |" $dt)
    for isa in scalar neon dotprod i8mm; do
      if [[ $dt == f16 || $dt == bf16 ]] && [[ $isa == dotprod || $isa == i8mm ]]; then v="(neon)"; else v=$(per_block $dt $isa $2 $3); fi
      row+=$(printf " %7s |" "$v")
    done
    echo "$row"
  done
  # the row-pair copy made at load time (pack.c), 32 rows
  for dt in q8_0 q4_0; do
    row=$(printf "| %-5s |" "${dt}p")
    for isa in scalar neon dotprod i8mm; do
      if [ $isa = scalar ] || [ $isa = neon ]; then v="-"; else v=$(per_block $dt $isa 32 $3 packed); fi
      row+=$(printf " %7s |" "$v")
    done
    echo "$row"
  done
done
echo
echo "q8_0p, q4_0p: on the packed row pairs (32 rows per tile; -: the level reads the file layout)."
echo "(neon): that level's kernel serves the higher ones; i8mm's K-quant, decode and odd-token kernels are dotprod's."
