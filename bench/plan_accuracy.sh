#!/usr/bin/env bash
# How good are the planner's choices? For each emulated link profile: probe the
# link, plan with measured node profiles, then measure every cut for real and
# compare. The device is emulated as SLOWDOWN times slower than the edge (both
# run on this machine, one thread each). Prints a Markdown table.
# usage: bench/plan_accuracy.sh [MODEL] [SLOWDOWN] [STEPS] [PROFILES...]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${EDGELLM:-build/edgellm}
work=$(mktemp -d)
model=${1:-}
slow=${2:-4}
steps=${3:-48}
shift $(( $# < 3 ? $# : 3 ))
profiles=("$@")
[ ${#profiles[@]} -gt 0 ] || profiles=(lan wifi6 5g-embb lte)
if [ -z "$model" ]; then
  model=$work/m.gguf
  "$bin" synth --dim 512 --layers 8 --heads 8 --kv-heads 4 --ff 1536 --vocab 4096 --ctx 512 --seed 4 -o "$model" 2>/dev/null
fi
L=$("$bin" info "$model" | sed -n 's/.*layers \([0-9]*\),.*/\1/p' | head -1)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
pids=()
trap 'for p in "${pids[@]}"; do kill $p 2>/dev/null; done; wait 2>/dev/null; rm -rf "$work"' EXIT
"$bin" profile -m "$model" -t 1 --ctx 16,64,128 -o "$work/edge.json" 2>/dev/null
python3 - "$work/edge.json" "$work/device.json" "$slow" <<'PY'
import json, sys
p = json.load(open(sys.argv[1])); f = float(sys.argv[3])
for l in p["layers"]:
    l["prefill_s_per_token"] *= f; l["decode_s"] = [d * f for d in l["decode_s"]]
p["embed_s"] *= f; p["head_s"] *= f
json.dump(p, open(sys.argv[2], "w"))
PY
wport=$(port)
"$bin" worker -m "$model" --layers 0: --listen tcp://127.0.0.1:$wport --insecure -t 1 -q &
pids+=($!)
sleep 1
echo "model $(basename "$model") ($L layers), device ${slow}x slower than the edge, $steps greedy tokens per measurement"
echo
echo "| link | probed rtt / up / down | chosen cut | predicted ms/token | measured ms/token | error | best measured cut | its ms/token | chosen vs best |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for prof in "${profiles[@]}"; do
  eport=$(port)
  "$bin" linkemu --listen tcp://127.0.0.1:$eport --forward tcp://127.0.0.1:$wport --profile "$prof" 2>/dev/null &
  epid=$!
  sleep 0.3
  vocab=$("$bin" info "$model" | sed -n 's/.*vocab \([0-9]*\),.*/\1/p' | head -1)
  dim=$("$bin" info "$model" | sed -n 's/^dim \([0-9]*\),.*/\1/p' | head -1)
  probe=$("$bin" probe --via tcp://127.0.0.1:$eport --insecure --act-bytes $((dim * 4 + 36)) \
          --reply-bytes $((vocab * 4 + 52)) --json)
  read -r rtt up down < <(python3 -c "import json,sys; p=json.loads(sys.argv[1]); print(p['rtt_ms'], p['up_mbit'], p['down_mbit'])" "$probe")
  plan=$("$bin" plan --device "$work/device.json" --edge "$work/edge.json" --rtt "${rtt}ms" --rate-up "${up}mbit" \
         --rate-down "${down}mbit" --ctx 64 --json)
  read -r cut pred < <(python3 -c "import json,sys; p=json.loads(sys.argv[1])['plans'][0]; print(p['cut'], p['decode_ms'])" "$plan")
  declare -A meas=()
  for k in $(seq 0 "$L"); do
    out=$("$bin" run -m "$model" -p "The dream" -n "$steps" --ignore-eos --temp 0 -t 1 --split "$k" \
          --via tcp://127.0.0.1:$eport --insecure --device-slowdown "$slow" --json 2>&1 >/dev/null | tail -1)
    meas[$k]=$(python3 -c "import json,sys; print(1000 / json.loads(sys.argv[1])['decode_tokens_per_s'])" "$out")
  done
  kill $epid; wait $epid 2>/dev/null || true
  python3 - "$prof" "$rtt" "$up" "$down" "$cut" "$pred" "$(for k in $(seq 0 "$L"); do printf '%s ' "${meas[$k]}"; done)" <<'PY'
import sys
prof, rtt, up, down, cut, pred = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
meas = [float(x) for x in sys.argv[7].split()]
best = min(range(len(meas)), key=meas.__getitem__)
print("| %s | %.1f ms / %.0f / %.0f Mbit/s | %d | %.2f | %.2f | %+.1f%% | %d | %.2f | %+.1f%% |" % (
    prof, rtt, up, down, cut, pred, meas[cut], 100 * (pred - meas[cut]) / meas[cut], best, meas[best],
    100 * (meas[cut] - meas[best]) / meas[best]))
print("   measured per cut:", " ".join("%d:%.1f" % (k, m) for k, m in enumerate(meas)), file=sys.stderr)
PY
  unset meas
done
