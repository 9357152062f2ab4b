#!/usr/bin/env bash
# Per-token latency and bytes per token, local vs split, over emulated links.
# A worker and the device run on this machine (one thread each), joined by
# `edgellm linkemu` with each named profile. Prints a Markdown table.
# usage: bench/split_profiles.sh MODEL [CUT] [STEPS] [ACT] [PROFILES...]   (USHAPE=1: head on the device)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${EDGELLM:-build/edgellm}
model=${1:?usage: bench/split_profiles.sh MODEL [CUT] [STEPS] [ACT] [PROFILES...]}
cut=${2:-4}
steps=${3:-32}
act=${4:-f16}
shift $(( $# < 4 ? $# : 4 ))
profiles=("$@")
[ ${#profiles[@]} -gt 0 ] || profiles=(lan wifi6 5g-embb lte)
layers=$("$bin" info "$model" | sed -n 's/.*layers \([0-9]*\),.*/\1/p' | head -1)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
pids=()
trap 'for p in "${pids[@]}"; do kill $p 2>/dev/null; done; wait 2>/dev/null' EXIT
wport=$(port)
"$bin" worker -m "$model" --layers "$cut:$layers" --listen tcp://127.0.0.1:$wport --insecure -t 1 -q &
pids+=($!)
sleep 2
json() { sed -n 's/.*"'"$2"'": \([0-9.]*\).*/\1/p' <<<"$1"; }
echo "model $(basename "$model"), $layers layers, device keeps 0:$cut${USHAPE:+ and the head (U-shape)}, activations $act, $steps tokens, 1 thread per node"
echo
echo "| link | per-token latency | device | link | edge | bytes sent / token | bytes received / token | tokens/s |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
out=$("$bin" run -m "$model" -p "The dream" -n "$steps" --ignore-eos --temp 0 -t 1 --json 2>&1 >/dev/null | tail -1)
tps=$(json "$out" decode_tokens_per_s)
printf "| local (no split) | %.1f ms | %.1f ms | - | - | 0 | 0 | %.2f |\n" "$(python3 -c "print(1000/$tps)")" \
  "$(json "$out" device_ms)" "$tps"
for prof in "${profiles[@]}"; do
  eport=$(port)
  "$bin" linkemu --listen tcp://127.0.0.1:$eport --forward tcp://127.0.0.1:$wport --profile "$prof" 2>/dev/null &
  epid=$!
  sleep 0.3
  out=$("$bin" run -m "$model" -p "The dream" -n "$steps" --ignore-eos --temp 0 -t 1 --split "$cut" \
        --via tcp://127.0.0.1:$eport --insecure --act "$act" ${USHAPE:+--ushape} --json 2>&1 >/dev/null | tail -1)
  kill $epid; wait $epid 2>/dev/null || true
  tps=$(json "$out" decode_tokens_per_s)
  w=$(sed -n 's/.*"worker_ms": \[\([0-9.]*\).*/\1/p' <<<"$out")
  printf "| %s | %.1f ms | %.1f ms | %.1f ms | %.1f ms | %s | %s | %.2f |\n" "$prof" "$(python3 -c "print(1000/$tps)")" \
    "$(json "$out" device_ms)" "$(json "$out" link_ms)" "$w" "$(json "$out" bytes_sent)" "$(json "$out" bytes_received)" "$tps"
done
