#!/usr/bin/env bash
# Speculative split inference over emulated wireless links, CURVE on: plain
# split decode against --draft with k = 1..8 and auto, for aidreams260K with a
# q4_0 draft of itself and for a synth pair 8x its size (a random f32 model and
# its q4_0 copy). One worker (layers CUT:) and the device on this machine, one
# thread each, joined by `edgellm linkemu --profile P`. Greedy decoding (the
# text equals plain split's), --ignore-eos. Prints one Markdown table per
# model and profile: tokens/s and its ratio to plain split, acceptance rate,
# round trips per generated token, and the tokens/s the cost model predicted.
# usage: bench/speculative.sh [STEPS] [PROFILES...]     (EDGELLM=path/to/edgellm)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${EDGELLM:-build/edgellm}
steps=${1:-100}
shift $(( $# < 1 ? $# : 1 ))
profiles=("$@")
[ ${#profiles[@]} -gt 0 ] || profiles=(lte 5g-embb)
models=${EL_SHARED:-../shared}/models
work=$(mktemp -d "${TMPDIR:-/tmp}/el-spec.XXXXXX")
pids=()
trap 'for p in "${pids[@]}"; do kill $p 2>/dev/null; done; wait 2>/dev/null; rm -rf "$work"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
json() { sed -n 's/.*"'"$2"'": \([0-9.]*\).*/\1/p' <<<"$1" | head -1; }

# the models: aidreams260K (llama2.c) with its q4_0 copy; a synth 8x the size with its q4_0 copy
"$bin" convert "$models/aidreams260K.bin" "$work/aid.gguf" -z "$models/tok512.bin" >/dev/null 2>&1
"$bin" quantize "$work/aid.gguf" "$work/aid-q4_0.gguf" q4_0 >/dev/null 2>&1
"$bin" synth --dim 160 --layers 6 --heads 5 --ff 432 --vocab 512 --ctx 256 --seed 11 -o "$work/syn8x.gguf" >/dev/null 2>&1
"$bin" quantize "$work/syn8x.gguf" "$work/syn8x-q4_0.gguf" q4_0 >/dev/null 2>&1
# CURVE: the worker admits the device's key, the device pins the worker's
"$bin" keygen -o "$work/wkeys" >/dev/null
"$bin" keygen -o "$work/dkeys" >/dev/null
mkdir -p "$work/allow" && cp "$work/dkeys/public.key" "$work/allow/device.key"
sec_w=(--keys "$work/wkeys" --allow "$work/allow")
sec_d=(--keys "$work/dkeys" --server-key "$work/wkeys/public.key")

echo "machine: $(nproc) cores, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1); $steps tokens per run, greedy"
bench_model() {  # NAME TARGET DRAFT CUT [run args...]
  local name=$1 target=$2 draft=$3 cut=$4
  shift 4
  local layers
  layers=$("$bin" info "$target" | sed -n 's/.*layers \([0-9]*\),.*/\1/p' | head -1)
  local wport
  wport=$(port)
  "$bin" worker -m "$target" --layers "$cut:$layers" --listen tcp://127.0.0.1:$wport "${sec_w[@]}" -t 1 -q &
  local wpid=$!
  pids+=($wpid)
  sleep 1
  for prof in "${profiles[@]}"; do
    local eport
    eport=$(port)
    "$bin" linkemu --listen tcp://127.0.0.1:$eport --forward tcp://127.0.0.1:$wport --profile "$prof" 2>/dev/null &
    local epid=$!
    sleep 0.3
    local base=(run -m "$target" "$@" -n "$steps" --ignore-eos --temp 0 -t 1 --split "$cut"
                --via tcp://127.0.0.1:$eport "${sec_d[@]}" --json)
    local out tps0
    out=$("$bin" "${base[@]}" 2>&1 >"$work/plain.txt" | tail -1)
    tps0=$(json "$out" decode_tokens_per_s)
    echo
    echo "### $name over $prof (device layers 0:$cut, edge $cut:$layers)"
    echo
    printf "plain split: %.1f tokens/s, 1.00 round trips per token\n\n" "$tps0"
    echo "| k | tokens/s | vs plain split | acceptance | round trips / token | predicted tokens/s | same text |"
    echo "| --- | --- | --- | --- | --- | --- | --- |"
    for k in 1 2 3 4 5 6 7 8 auto; do
      out=$("$bin" "${base[@]}" --draft "$draft" --draft-k $k 2>&1 >"$work/spec.txt" | tail -1)
      local tps gen rt dr acc pred same=yes
      tps=$(json "$out" decode_tokens_per_s)
      gen=$(json "$out" generated)
      rt=$(json "$out" round_trips)
      dr=$(json "$out" drafted)
      acc=$(json "$out" accepted)
      pred=$(json "$out" predicted_tokens_per_s)
      cmp -s "$work/plain.txt" "$work/spec.txt" || same=NO
      [ "$k" = auto ] && k="auto (mean $(json "$out" k_mean))"
      printf "| %s | %.1f | %.2fx | %.1f%% | %.3f | %.1f | %s |\n" "$k" "$tps" "$(python3 -c "print($tps/$tps0)")" \
        "$(python3 -c "print(100*$acc/max($dr,1))")" "$(python3 -c "print($rt/$gen)")" "$pred" "$same"
    done
    kill $epid
    wait $epid 2>/dev/null || true
  done
  kill $wpid
  wait $wpid 2>/dev/null || true
}
bench_model "aidreams260K, q4_0 draft" "$models/aidreams260K.bin" "$work/aid-q4_0.gguf" 2 -z "$models/tok512.bin" -p "Once upon a time"
bench_model "synth 8x (2.0M parameters), q4_0 draft" "$work/syn8x.gguf" "$work/syn8x-q4_0.gguf" 3 -p "The quick brown fox"
