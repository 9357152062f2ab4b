#!/usr/bin/env bash
# Byte-level BPE encoding speed with the gpt-2 vocabulary: 1 MiB of mixed text
# (English, code, digits, CJK, emoji), and two worst cases for the merge loop
# and pre-tokenizer: 1 MiB that is one word ("abab...") and 1 MiB of digits
# (one GPT-2 pre-token). Prints seconds and MB/s per file (best of REPS runs,
# including the ~0.04 s vocabulary load); never fails on time.
#
# usage: bench/tokenize_bench.sh [REPS]     (env EDGELLM, EL_SHARED, BENCH_TMP)
set -uo pipefail
cd "$(dirname "$0")/.."
EDGELLM=${EDGELLM:-build/edgellm}
V=${EL_SHARED:-../shared}/models/reference/ggml-vocab-gpt-2.gguf
REPS=${1:-3}
TMP=${BENCH_TMP:-/tmp/edgellm-tokenize-bench}
mkdir -p "$TMP"
python3 - "$TMP" <<'PY'
import random, sys
r = random.Random(1)
words = ("the quick brown fox jumps over lazy dog I'm you're 12345 3.14 caf\u00e9 na\u00efve "
         "\u4f60\u597d\u4e16\u754c \U0001F601 \n\n  int main(void) { return 0; }").split(" ")
out, n = [], 0
while n < 1 << 20:
    w = r.choice(words); out.append(w); n += len(w.encode()) + 1
open(sys.argv[1] + "/mixed.txt", "wb").write(" ".join(out).encode()[: 1 << 20].decode("utf-8", "ignore").encode())
open(sys.argv[1] + "/one-word.txt", "wb").write(b"ab" * (1 << 19))
open(sys.argv[1] + "/digits.txt", "wb").write(b"7" * (1 << 20))
PY
echo "machine: $(nproc) CPUs, $(uname -m); vocabulary: $V"
for f in mixed one-word digits; do
  best=
  for r in $(seq "$REPS"); do
    t0=$(date +%s.%N)
    n=$("$EDGELLM" tokenize -m "$V" -f "$TMP/$f.txt" --no-bos | wc -w)
    t1=$(date +%s.%N)
    s=$(echo "$t1 - $t0" | bc -l)
    if [ -z "$best" ] || [ "$(echo "$s < $best" | bc -l)" = 1 ]; then best=$s; fi
  done
  printf "%-9s %8d bytes -> %7d tokens  %.3f s  %.1f MB/s\n" "$f" "$(wc -c <"$TMP/$f.txt")" "$n" "$best" \
    "$(echo "$(wc -c <"$TMP/$f.txt") / $best / 1000000" | bc -l)"
done
