#!/bin/sh
# Runs an already built libFuzzer binary for a bounded time on a scratch corpus
# seeded from tests/fuzz/corpus/<target>/ (target = binary name without "fuzz_").
# Usage: tests/fuzz/run.sh build-fuzz/fuzz_gguf 60 [extra libFuzzer flags]
# The scratch corpus and any crash artifacts go to $EL_FUZZ_WORK (default:
# fuzz-work/<target> beside the binary), so new inputs accumulate across runs.
set -eu
if [ $# -lt 2 ]; then
    echo "usage: $0 FUZZER SECONDS [libFuzzer flags...]" >&2
    exit 2
fi
fuzzer=$1
secs=$2
shift 2
[ -x "$fuzzer" ] || { echo "$0: $fuzzer is not an executable (build with -DEL_FUZZ=ON)" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
target=$(basename "$fuzzer")
target=${target#fuzz_}
work=${EL_FUZZ_WORK:-$(cd "$(dirname "$fuzzer")" && pwd)/fuzz-work/$target}
mkdir -p "$work/corpus" "$work/artifacts"
if [ -d "$here/corpus/$target" ]; then
    for f in "$here/corpus/$target"/*; do
        case $f in *.py) continue ;; esac
        [ -f "$f" ] && cp "$f" "$work/corpus/"
    done
fi
dict=
[ -f "$here/$target.dict" ] && dict="-dict=$here/$target.dict"
# shellcheck disable=SC2086
exec "$fuzzer" -max_total_time="$secs" -print_final_stats=1 -artifact_prefix="$work/artifacts/" $dict "$@" "$work/corpus"
