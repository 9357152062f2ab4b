#!/usr/bin/env bash
# Throughput of edgellm serve (a benchmark: prints figures, never fails on
# time). A random-weight Llama-shaped model, 16 rank-8 adapters on all seven
# projections; tokens/s with 1, 4 and 16 concurrent clients on the base, and
# 16 clients all on one adapter versus each on its own adapter.
# Usage: bench/serve_bench.sh [THREADS] [MAX_TOKENS] [REQUESTS_PER_CLIENT]
set -euo pipefail
cd "$(dirname "$0")/.."
EDGELLM=${EDGELLM:-build/edgellm}
threads=${1:-2}
max_tokens=${2:-64}
reqs=${3:-4}
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
  "$reqs requests per client, greedy"
printf '| clients | model(s) | tokens | tokens/s |\n| --- | --- | --- | --- |\n'
declare -A res
run() {
  local label=$1 n=$2 models=$3
  local out; out=$(client --clients "$n" --requests "$reqs" --models "$models")
  read -r t f k <<<"$(tps "$out")"
  [ "$f" = 0 ] || echo "warning: $f failed requests: $out" >&2
  res[$label]=$t
  printf '| %s | %s | %s | %s |\n' "$n" "$4" "$k" "$t"
}
run one 1 base "base"
run four 4 base "base"
run sixteen 16 base "base"
run same 16 a1 "all on adapter a1"
run diff 16 "$all16" "16 different adapters"
python3 -c 'import sys; s,d=map(float,sys.argv[1:]); print(f"16 different / 16 same adapter: {d/s:.2f} (target >= 0.80)")' \
  "${res[same]}" "${res[diff]}"
curl -s "http://127.0.0.1:$port/metrics" | grep -E '^edgellm_(decode_rows|decode_steps|adapter_cache_(hits|misses|evictions))_total'
