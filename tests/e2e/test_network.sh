#!/usr/bin/env bash
# The edge network, all CURVE: a controller, an origin worker whose store holds
# aidreams260K and a LoRA-merged variant of it, two workers with empty stores,
# and devices. A placement (edgellm place --apply) gives the empty workers
# models: their blocks arrive from the origin, verified. Devices get routes
# from the controller and their greedy texts equal their local runs; a worker
# killed mid-run makes the device re-route (--retry) with its text unchanged.
# A block altered on a worker's disk is refused and fetched again; a source
# whose bytes do not match their hash is refused and the block comes from the
# next source. A worker whose key is not on the controller's allow-list cannot
# announce itself, and bad inputs get one-line errors.
source "$(dirname "$0")/lib.sh"
BIN=$MODELS/aidreams260K.bin
TOK=$MODELS/tok512.bin
DATA=${EL_SRC:-$(dirname "$0")/../..}/data/finetune

# ---- the models: the base as GGUF, and a variant merged from an attention-only adapter
"$EDGELLM" convert "$BIN" "$T/tiny.gguf" -z "$TOK" >/dev/null 2>&1 || fail "convert"
"$EDGELLM" finetune -m "$T/tiny.gguf" --data "$DATA/pirate-dreams.txt" --steps 4 --batch 4 --ctx 64 --lr 2e-2 \
  --targets q,k,v,o --seed 3 -t 1 -o "$T/ad.gguf" >/dev/null 2>"$T/ft.err" || fail "finetune: $(tail -2 "$T/ft.err")"
"$EDGELLM" export-lora -m "$T/tiny.gguf" --lora "$T/ad.gguf" -o "$T/pirate.gguf" >/dev/null 2>&1 || fail "export-lora"
PROMPT="Once upon a time"
for m in tiny pirate; do
  "$EDGELLM" run -m "$T/$m.gguf" -p "$PROMPT" -n 60 --temp 0 >"$T/local-$m.txt" 2>/dev/null || fail "local run $m"
done
cmp -s "$T/local-tiny.txt" "$T/local-pirate.txt" && fail "the merged adapter did not change the text"

# ---- keys: every worker, device and the planner on the allow-list; "rogue" is not
mkdir -p "$T/allow"
for k in ctl origin w1 w2 w3 dev dev2 planner rogue; do
  "$EDGELLM" keygen -o "$T/keys/$k" >/dev/null || fail "keygen $k"
  [ $k != rogue ] && [ $k != ctl ] && cp "$T/keys/$k/public.key" "$T/allow/$k.key"
done
CK=$T/keys/ctl/public.key
PC=$(free_port)
"$EDGELLM" controller --listen 127.0.0.1:$PC --keys "$T/keys/ctl" --allow "$T/allow" --dead-ms 1500 2>"$T/ctl.log" &
bg_pids+=($!)

# start_node NAME PORT ARGS...: a worker with its own store, announcing to the controller
declare -A port pid
start_node() {
  local name=$1 p=$2; shift 2
  port[$name]=$p
  "$EDGELLM" worker --store "$T/$name.store" --listen 127.0.0.1:$p --keys "$T/keys/$name" --allow "$T/allow" \
    --controller 127.0.0.1:$PC --controller-key "$CK" --name "$name" --heartbeat 200 -t 1 "$@" 2>>"$T/$name.log" &
  pid[$name]=$!
  bg_pids+=($!)
}
# wait_for FILE PATTERN [TENTHS]: until FILE has a line matching PATTERN
wait_for() {
  for _ in $(seq 1 "${3:-200}"); do
    grep -q -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
start_node origin "$(free_port)" -m "$T/tiny.gguf" -m "$T/pirate.gguf"
wait_for "$T/origin.log" "serving pirate" || fail "origin did not start: $(cat "$T/origin.log")"
start_node w1 "$(free_port)"
start_node w2 "$(free_port)"
wait_for "$T/ctl.log" "worker w2 at" && wait_for "$T/ctl.log" "worker w1 at" || fail "workers did not join: $(cat "$T/ctl.log")"

# ---- a worker whose key the controller does not allow cannot announce itself
"$EDGELLM" worker -m "$T/tiny.gguf" --layers 0: --listen 127.0.0.1:"$(free_port)" --keys "$T/keys/rogue" \
  --allow "$T/allow" --controller 127.0.0.1:$PC --controller-key "$CK" --name rogue --heartbeat 200 -t 1 \
  2>"$T/rogue.log" &
rogue=$!
bg_pids+=($rogue)
wait_for "$T/rogue.log" "refused" 100 || fail "the rogue worker was not refused: $(cat "$T/rogue.log")"
grep -q "rogue" "$T/ctl.log" && fail "the controller took the rogue's heartbeat: $(grep rogue "$T/ctl.log")"
kill $rogue 2>/dev/null
pass

# ---- placement: catalog, servers with room for one model (w1) or both (w2), users
"$EDGELLM" catalog --json "$T/tiny.gguf" "$T/pirate.gguf" >"$T/catalog.json" 2>"$T/cat.err" \
  || fail "catalog: $(cat "$T/cat.err")"
python3 - "$T" <<'EOF' || fail "could not write the placement inputs"
import json, sys
t = sys.argv[1]
cat = json.load(open(t + "/catalog.json"))
size = {m["name"]: m["bytes"] for m in cat["models"]}
# w1 fits tiny only; w2 fits both thanks to the blocks they share; the origin keeps its own
servers = [{"name": "origin", "storage_bytes": 0}, {"name": "w1", "storage_bytes": size["tiny"] + 1000},
           {"name": "w2", "storage_bytes": cat["union_bytes"] + 1000}]
users = [{"name": "u1", "reach": ["w1"], "requests": {"tiny": 1.0}},
         {"name": "u2", "reach": ["w2"], "requests": {"tiny": 0.5, "pirate": 0.5}}]
json.dump(servers, open(t + "/servers.json", "w"))
json.dump(users, open(t + "/users.json", "w"))
EOF
"$EDGELLM" place --catalog "$T/catalog.json" --servers "$T/servers.json" --users "$T/users.json" --json \
  >"$T/placement.json" 2>"$T/place.err" || fail "place: $(cat "$T/place.err")"
got=$(python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))["placement"]; print(sorted(p.get("w1",[])), sorted(p.get("w2",[])))' "$T/placement.json")
expect_eq "placement" "$got" "['tiny'] ['pirate', 'tiny']"
"$EDGELLM" place --catalog "$T/catalog.json" --servers "$T/servers.json" --users "$T/users.json" \
  --apply 127.0.0.1:$PC --keys "$T/keys/planner" --controller-key "$CK" >/dev/null 2>"$T/apply.err" \
  || fail "place --apply: $(cat "$T/apply.err")"
wait_for "$T/w1.log" "serving tiny" 300 || fail "w1 did not get tiny: $(cat "$T/w1.log")"
wait_for "$T/w2.log" "serving pirate" 300 && wait_for "$T/w2.log" "serving tiny" 300 \
  || fail "w2 did not get both models: $(cat "$T/w2.log")"
for w in w1 w2; do
  "$EDGELLM" store verify "$T/$w.store" >"$T/verify-$w.txt" 2>&1 || fail "store verify $w: $(cat "$T/verify-$w.txt")"
done
# w2 holds both models with their shared blocks once: its blocks are the catalog's union
# (manifests, headers and tensors, each distinct hash once)
w2_bytes=$(find "$T/w2.store/blocks" -type f -printf '%s\n' | awk '{s += $1} END {print s}')
union=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["union_bytes"])' "$T/catalog.json")
expect_eq "w2's block bytes (the union)" "$w2_bytes" "$union"

# ---- two devices (their own keys) at once get routes; their texts equal their local runs
devs=()
for m in tiny pirate; do
  key=dev; [ $m = pirate ] && key=dev2
  "$EDGELLM" run -m "$T/$m.gguf" -p "$PROMPT" -n 60 --temp 0 --split 2 --controller 127.0.0.1:$PC \
    --controller-key "$CK" --keys "$T/keys/$key" >"$T/dev-$m.txt" 2>"$T/dev-$m.err" &
  devs+=($!)
done
for i in 0 1; do
  m=tiny; [ $i = 1 ] && m=pirate
  wait "${devs[$i]}" || fail "device $m: $(tail -2 "$T/dev-$m.err")"
  grep -q "route: worker" "$T/dev-$m.err" || fail "device $m was not routed: $(cat "$T/dev-$m.err")"
  cmp -s "$T/local-$m.txt" "$T/dev-$m.txt" && pass || fail "device $m: '$(cat "$T/dev-$m.txt")'"
done
grep -q "route: worker w2\|route: worker origin" "$T/dev-pirate.err" || fail "pirate routed to a worker without it"

# ---- a worker killed mid-run: the device asks again and its text is unchanged
"$EDGELLM" run -m "$T/tiny.gguf" -p "$PROMPT" -n 60 --temp 0 --split 2 --controller 127.0.0.1:$PC \
  --controller-key "$CK" --keys "$T/keys/dev" --retry 2 --timeout 2000 --device-slowdown 1000 \
  >"$T/dev-kill.txt" 2>"$T/dev-kill.err" &
dev=$!
wait_for "$T/dev-kill.err" "route: worker" 100 || fail "no route for the device to be cut off"
victim=$(grep -o "route: worker [a-z0-9]*" "$T/dev-kill.err" | head -1 | awk '{print $3}')
for _ in $(seq 1 100); do [ "$(wc -c <"$T/dev-kill.txt")" -gt 20 ] && break; sleep 0.05; done
kill -9 "${pid[$victim]}" 2>/dev/null
wait $dev || fail "device after killing $victim: $(tail -3 "$T/dev-kill.err")"
cmp -s "$T/local-tiny.txt" "$T/dev-kill.txt" && pass || fail "re-routed device: '$(cat "$T/dev-kill.txt")'"
n_routes=$(grep -c "route: worker" "$T/dev-kill.err")
[ "$n_routes" -ge 2 ] && pass || fail "the device did not re-route: $(cat "$T/dev-kill.err")"
grep "route: worker" "$T/dev-kill.err" | tail -1 | grepq "worker $victim " && fail "re-routed to the dead $victim"
start_node "$victim" "${port[$victim]}"  # back, for what follows

# ---- a block altered on w1's disk: refused when w1 opens the model, fetched again
wait_for "$T/w1.log" "serving tiny" 300 || fail "w1 is not serving tiny"
kill "${pid[w1]}"; wait "${pid[w1]}" 2>/dev/null
victim_block=$(ls -S "$T/w1.store/blocks" | head -1)
printf '\x5a' | dd of="$T/w1.store/blocks/$victim_block" bs=1 seek=100 conv=notrunc 2>/dev/null
: >"$T/w1.log"
start_node w1 "${port[w1]}"
wait_for "$T/w1.log" "$victim_block\|${victim_block:0:16}" 100 || fail "w1 did not name the altered block: $(cat "$T/w1.log")"
wait_for "$T/w1.log" "serving tiny" 300 || fail "w1 did not fetch the altered block again: $(cat "$T/w1.log")"
"$EDGELLM" store verify "$T/w1.store" >"$T/verify-w1b.txt" 2>&1 || fail "w1's store after the refetch: $(cat "$T/verify-w1b.txt")"

# ---- a source whose bytes do not match their hash: the origin's copy altered behind its back
# (CURVE authenticates every byte on the link, so this is the way a peer sends wrong bytes)
big=$(python3 -c '
import json,sys
c=json.load(open(sys.argv[1])); t=[m for m in c["models"] if m["name"]=="tiny"][0]
print(max(t["blocks"], key=lambda b: b["bytes"])["hash"])' "$T/catalog.json")
printf '\x33' | dd of="$T/origin.store/blocks/$big" bs=1 seek=7 conv=notrunc 2>/dev/null
# w3 joins with an empty store and the placement grows to give it tiny; its
# sources come least loaded first, ties by name: the (idle) origin first
start_node w3 "$(free_port)"
wait_for "$T/ctl.log" "worker w3 at" || fail "w3 did not join"
python3 - "$T" <<'EOF'
import json, sys
t = sys.argv[1]
servers = json.load(open(t + "/servers.json")) + [{"name": "w3", "storage_bytes": json.load(open(t + "/catalog.json"))["union_bytes"]}]
users = json.load(open(t + "/users.json")) + [{"name": "u3", "reach": ["w3"], "requests": {"tiny": 1.0}}]
json.dump(servers, open(t + "/servers.json", "w"))
json.dump(users, open(t + "/users.json", "w"))
EOF
"$EDGELLM" place --catalog "$T/catalog.json" --servers "$T/servers.json" --users "$T/users.json" \
  --apply 127.0.0.1:$PC --keys "$T/keys/planner" --controller-key "$CK" >/dev/null 2>"$T/apply.err" \
  || fail "place --apply (with w3): $(cat "$T/apply.err")"
wait_for "$T/w3.log" "serving tiny" 300 || fail "w3 did not get tiny: $(cat "$T/w3.log")"
grep -q "refused block $big from 127.0.0.1:${port[origin]}: hash mismatch" "$T/w3.log" && pass \
  || fail "w3 did not refuse the origin's altered block $big: $(cat "$T/w3.log")"
"$EDGELLM" store verify "$T/w3.store" >"$T/verify-w3.txt" 2>&1 || fail "w3's store: $(cat "$T/verify-w3.txt")"
"$EDGELLM" run -m "$T/tiny.gguf" -p "$PROMPT" -n 60 --temp 0 --split 1 --controller 127.0.0.1:$PC \
  --controller-key "$CK" --keys "$T/keys/dev" >"$T/dev-end.txt" 2>"$T/dev-end.err" || fail "last device run"
cmp -s "$T/local-tiny.txt" "$T/dev-end.txt" && pass || fail "last device: '$(cat "$T/dev-end.txt")'"

# ---- bad input: one line each, naming the problem
expect_error "no-such.json" "$EDGELLM" controller --listen 127.0.0.1:"$(free_port)" --insecure --placement "$T/no-such.json"
echo '{"placement": {"w1": "tiny"}}' >"$T/bad-placement.json"
expect_error "server \"w1\"" "$EDGELLM" controller --listen 127.0.0.1:"$(free_port)" --insecure --placement "$T/bad-placement.json"
expect_error "--controller-key" "$EDGELLM" run -m "$T/tiny.gguf" -p x --split 2 --controller 127.0.0.1:$PC --keys "$T/keys/dev"
expect_error "no worker serves model \"nobody\"" "$EDGELLM" run -m "$T/tiny.gguf" -p x --split 2 --controller 127.0.0.1:$PC \
  --controller-key "$CK" --keys "$T/keys/dev" --model-name nobody
expect_error "refused" "$EDGELLM" run -m "$T/tiny.gguf" -p x --split 2 --controller 127.0.0.1:$PC \
  --controller-key "$CK" --keys "$T/keys/rogue"
finish
