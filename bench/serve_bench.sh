#!/usr/bin/env bash
# Throughput of edgellm serve (a benchmark: prints figures, never fails on
# time). A random-weight Llama-shaped model, 16 rank-8 adapters on all seven
# projections; tokens/s with 1, 4 and 16 concurrent clients on the base, and
# 16 clients all on one adapter versus each on its own adapter.
# Each scenario runs REPS times, interleaved with the others, and the table
# shows the best and the median, since other work on a shared machine only
# ever slows a run down.
# Usage: bench/serve_bench.sh [THREADS] [MAX_TOKENS] [REQUESTS_PER_CLIENT] [REPS]
set -euo pipefail
cd "$(dirname "$0")/.."
EDGELLM=${EDGELLM:-build/edgellm}
threads=${1:-2}
max_tokens=${2:-64}
reqs=${3:-4}
reps=${4:-3}
W=$(mktemp -d /tmp/serve_bench.XXXXXX)
trap 'kill $spid 2>/dev/null; wait $spid 2>/dev/null; rm -rf "$W"' EXIT
spid=

shape=(--dim 512 --layers 8 --heads 8 --ff 1376 --vocab 4096 --ctx 512)
"$EDGELLM" synth "${shape[@]}" --seed 1 -o "$W/base.gguf" 2>/dev/null
mkdir -p "$W/ad"
echo "making 16 adapters (rank 8, all targets, one training step each so B is non-zero)..." >&2
for i in $(seq 1 16); do
  "$EDGELLM" finetune -m "$W/base.gguf" --data data/finetune/pirate-dreams.txt --steps 1 --batch 1 --ctx 64 \
    --rank 8 --targets all --lr 1e-2 --seed "$i" -t "$threads" -o "$W/ad/a$i.gguf" 2>/dev/null
done

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$EDGELLM" serve -m "$W/base.gguf" --model-id base --lora-dir "$W/ad" --slots 16 --listen "127.0.0.1:$port" \
  -t "$threads" -q 2>"$W/serve.log" &
spid=$!
for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.05; done

client() { node bench/serve_client.mjs --url "http://127.0.0.1:$port" --max-tokens "$max_tokens" "$@"; }
tps() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["tok_per_s"], d["failed"], d["tokens"])' "$1"; }
all16=$(seq -s, -f 'a%g' 1 16)
client --clients 16 --requests 1 --models "$all16" >/dev/null  # load every adapter once (warm cache)

echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $threads compute threads," \
  "model dim 512 x 8 layers (f32, $(du -m "$W/base.gguf" | cut -f1) MB), $max_tokens tokens per request," \
  "$reqs requests per client, greedy, best and median of $reps interleaved runs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
labels=(one four sixteen same diff)
declare -A n_of models_of desc_of runs
n_of=([one]=1 [four]=4 [sixteen]=16 [same]=16 [diff]=16)
models_of=([one]=base [four]=base [sixteen]=base [same]=a1 [diff]=$all16)
desc_of=([one]=base [four]=base [sixteen]=base [same]="all on adapter a1" [diff]="16 different adapters")
for r in $(seq 1 "$reps"); do
  for l in "${labels[@]}"; do
    out=$(client --clients "${n_of[$l]}" --requests "$reqs" --models "${models_of[$l]}")
    read -r t f k <<<"$(tps "$out")"
    [ "$f" = 0 ] || echo "warning: $f failed requests: $out" >&2
    runs[$l]="${runs[$l]:-} $t"
  done
done
stat() { python3 -c 'import statistics,sys; v=list(map(float,sys.argv[1:])); print(f"{max(v):.1f} {statistics.median(v):.1f}")' $1; }
printf '| clients | model(s) | best tokens/s | median tokens/s |\n| --- | --- | --- | --- |\n'
declare -A best med
for l in "${labels[@]}"; do
  read -r b m <<<"$(stat "${runs[$l]}")"
  best[$l]=$b; med[$l]=$m
  printf '| %s | %s | %s | %s |\n' "${n_of[$l]}" "${desc_of[$l]}" "$b" "$m"
done
python3 -c 'import sys; s,d,sm,dm=map(float,sys.argv[1:]); print(f"16 different / 16 same adapter: {d/s:.2f} best, {dm/sm:.2f} median (target >= 0.80)")' \
  "${best[same]}" "${best[diff]}" "${med[same]}" "${med[diff]}"
curl -s "http://127.0.0.1:$port/metrics" | grep -E '^edgellm_(decode_rows|decode_steps|adapter_cache_(hits|misses|evictions))_total'
