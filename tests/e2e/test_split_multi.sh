#!/usr/bin/env bash
# Many devices on one edge: 8 devices at once against one worker and against a
# 2-worker chain, with different prompt lengths (prefills cut in chunks by a
# small --max-batch-tokens, batched with the others' decode rows), two with
# their own LoRA adapters, one with U-shape and one sampling on the edge: each
# device's text is byte-identical to its local run. A device killed in the
# middle of its generation changes nobody's text, and the worker's KV bytes
# return to their level before it joined. Bad requests get a clear ERROR.
source "$(dirname "$0")/lib.sh"
BIN=$MODELS/aidreams260K.bin
TOK=$MODELS/tok512.bin
DATA=${EL_SRC:-$(dirname "$0")/../..}/data/finetune

# two adapters that change the text
for a in 1 2; do
  "$EDGELLM" finetune -m "$BIN" -z "$TOK" --data "$DATA/pirate-dreams.txt" --steps $((3 * a)) --batch 4 --ctx 64 \
    --lr 1e-2 --seed $a -t 1 -o "$T/ad$a.gguf" >/dev/null 2>"$T/ft$a.err" || fail "finetune $a: $(tail -2 "$T/ft$a.err")"
done

prompts=("The dream" "I" "Once upon a time, in a quiet village by the sea, there lived"
         "Lights" "The stars whispered to the moon about" "A" "Deep in the forest" "Sleep")
# per device: extra flags for both runs (local and split), extra flags for the split run only
extra=("" "" "--lora $T/ad1.gguf" "--lora $T/ad2.gguf" "" "--temp 0.8 --seed 7 --repeat-penalty 1.1" "" "")
split_only=("" "" "" "" "--ushape" "--edge-sample" "" "")
N=60
for i in 0 1 2 3 4 5 6 7; do
  # shellcheck disable=SC2086
  "$EDGELLM" run -m "$BIN" -z "$TOK" -p "${prompts[$i]}" -n $N --temp 0 ${extra[$i]} >"$T/local$i.txt" 2>"$T/local$i.err" \
    || fail "local run $i: $(cat "$T/local$i.err")"
done
cmp -s "$T/local0.txt" "$T/local2.txt" && fail "adapter 1 did not change the text"
[ "$(head -c 20 "$T/local2.txt")" != "$(head -c 20 "$T/local3.txt")" ] || pass

# kv_bytes of the worker's latest --stats-every line
# (the number's comma: a line the worker is still writing is not read)
kv_now() { grep -o '"kv_bytes": [0-9]*,' "$1" | tail -1 | tr -dc '0-9'; }

# run_devices VIA CUTS TAG: the 8 devices at once (device 7 is killed half way), then checks
run_devices() {
  local via=$1 cuts=$2 tag=$3 pids=() i
  for i in 0 1 2 3 4 5 6 7; do
    local slow=""
    [ $i -eq 7 ] && slow="--device-slowdown 400 -n 120"
    # shellcheck disable=SC2086
    "$EDGELLM" run -m "$BIN" -z "$TOK" -p "${prompts[$i]}" -n $N --temp 0 ${extra[$i]} ${split_only[$i]} $slow \
      --split "$cuts" --via "$via" --insecure >"$T/$tag$i.txt" 2>"$T/$tag$i.err" &
    pids+=($!)
  done
  # device 7 dies (SIGKILL: no CLOSE) once it has printed a few tokens
  for _ in $(seq 1 200); do
    [ "$(wc -c <"$T/${tag}7.txt")" -gt 20 ] && break
    sleep 0.05
  done
  kill -9 "${pids[7]}" 2>/dev/null
  for i in 0 1 2 3 4 5 6; do
    wait "${pids[$i]}" 2>/dev/null || fail "$tag device $i: $(tail -2 "$T/$tag$i.err")"
    if cmp -s "$T/local$i.txt" "$T/$tag$i.txt"; then pass; else
      fail "$tag device $i: text differs from its local run: '$(cat "$T/$tag$i.txt")' vs '$(cat "$T/local$i.txt")'"; fi
  done
  wait "${pids[7]}" 2>/dev/null
}

# ---- one worker, prefills in chunks of at most 8 rows
port=$(free_port)
start_worker "$T/w.log" -m "$BIN" --layers 2:4 --listen tcp://127.0.0.1:$port --insecure -t 2 --max-batch-tokens 8 \
  --idle-timeout 2 --stats-every 0.2 --json || fail "worker"
# its first stats line (a fixed 0.3 s could come before it on a loaded machine): up to 5 s
for _ in $(seq 1 100); do [ -n "$(kv_now "$T/w.log")" ] && break; sleep 0.05; done
kv0=$(kv_now "$T/w.log")
expect_eq "KV in use before any device" "$kv0" "0"
run_devices tcp://127.0.0.1:$port 2 one
# steps really carried several devices' rows, and never more than 8
max_rows=$(grep -o '"max_rows_per_step": [0-9]*' "$T/w.log" | awk '{print $2}' | sort -n | tail -1)
[ "${max_rows:-0}" -ge 3 ] && [ "${max_rows:-0}" -le 8 ] && pass || fail "rows per step: max ${max_rows:-none} (want 3..8)"
# the killed device's session is freed by the idle timeout: KV back to its level before it joined
for _ in $(seq 1 100); do
  grep -q "idle timeout" "$T/w.log" && [ "$(kv_now "$T/w.log")" = "$kv0" ] && break
  sleep 0.1
done
grep -q "closed (idle timeout)" "$T/w.log" && pass || fail "the killed device's session was not reclaimed"
expect_eq "KV in use after the devices left" "$(kv_now "$T/w.log")" "$kv0"

# ---- bad requests on a live worker: one device's problem is its own
python3 "$(dirname "$0")/wire_client.py" "$port" >"$T/bad.out" 2>&1 || fail "raw client: $(cat "$T/bad.out")"
grep -q "^ok" "$T/bad.out" && pass || fail "raw client checks: $(cat "$T/bad.out")"
kill "$last_pid"; wait "$last_pid" 2>/dev/null
port=$(free_port)
# room for one block of 16 positions (2 layers x K,V x 4 kv heads x 16 x 16 floats = 16K) and a
# request's rows and logits: a long prompt cannot get its second block
start_worker "$T/small.log" -m "$BIN" --layers 2:4 --listen tcp://127.0.0.1:$port --insecure -t 1 --max-kv 24K \
  --client-mem 24K || fail "small worker"
expect_error "memory budget exhausted" "$EDGELLM" run -m "$BIN" -z "$TOK" -p "${prompts[2]} ${prompts[4]}" -n 5 \
  --temp 0 --split 2 --via tcp://127.0.0.1:$port --insecure
got=$("$EDGELLM" run -m "$BIN" -z "$TOK" -p "Sleep" -n 8 --temp 0 --split 2 --via tcp://127.0.0.1:$port --insecure 2>&1)
expect_eq "a short request still fits after another device was refused" "$got" "$("$EDGELLM" run -m "$BIN" -z "$TOK" -p "Sleep" -n 8 --temp 0)"
kill "$last_pid"; wait "$last_pid" 2>/dev/null

# ---- a client that asks for big replies and never reads them: the worker holds at most its
# in-flight budget (64 MiB by default) for it, and an honest device is not slowed down
port=$(free_port)
start_worker "$T/flood.log" -m "$BIN" --layers 2:4 --listen tcp://127.0.0.1:$port --insecure -t 1 || fail "flood worker"
wpid=$last_pid
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
honest() { "$EDGELLM" run -m "$BIN" -z "$TOK" -p "The dream" -n 100 --temp 0 --split 2 --via tcp://127.0.0.1:$port \
  --insecure --json 2>"$T/honest.json"; }
quiet_text=$(honest); quiet_ms=$(python3 -c 'import json,sys; j=json.loads(open(sys.argv[1]).read().splitlines()[-1]); print(j["decode_s"] / max(1, j["generated"] - 1) * 1e3)' "$T/honest.json")
rss0=$(rss_kib $wpid)
python3 "$(dirname "$0")/wire_client.py" $port flood $((64 << 20)) 10 3 >"$T/flood64.out" 2>&1 &
f1=$!
python3 "$(dirname "$0")/wire_client.py" $port flood $((16 << 20)) 10 6 >"$T/flood16.out" 2>&1 &
f2=$!
sleep 2
busy_text=$(honest); busy_ms=$(python3 -c 'import json,sys; j=json.loads(open(sys.argv[1]).read().splitlines()[-1]); print(j["decode_s"] / max(1, j["generated"] - 1) * 1e3)' "$T/honest.json")
rss1=$(rss_kib $wpid)
wait $f1 $f2
echo "worker RSS $rss0 KiB before the floods, $rss1 KiB during; honest device $quiet_ms ms/token alone, $busy_ms during"
expect_eq "honest text during the floods" "$busy_text" "$quiet_text"
[ $((rss1 - rss0)) -lt $(((64 + 24) << 10)) ] && pass || fail "the worker held $(((rss1 - rss0) >> 10)) MiB for a client that does not read"
# (loose on purpose: CI machines are shared. With two busy loops beside it on 2 cores, 12 runs
# measured 0.18-1.82 ms/token during the floods against 0.26-0.68 alone, one of them 0.2 ms from
# the old bound of 4x + 1 ms. A worker stalled by a client that does not read would stall the
# honest device for seconds.)
python3 -c "import sys; sys.exit(0 if float('$busy_ms') < 4 * float('$quiet_ms') + 5.0 else 1)" && pass \
  || fail "the honest device slowed from $quiet_ms to $busy_ms ms/token"
grep -q "exceeds this worker's reply limit" "$T/flood.log" && pass || fail "64 MiB probes were not refused: $(tail -3 "$T/flood.log")"
grep -q "does not read its replies" "$T/flood.log" && pass || fail "the non-reading client was not stopped: $(tail -3 "$T/flood.log")"
kill "$wpid"; wait "$wpid" 2>/dev/null

# ---- a chain of two workers (device 0:1, edge 1:3, cloud 3:4), pipelined
p2=$(free_port); p1=$(free_port)
start_worker "$T/cloud.log" -m "$BIN" --layers 3:4 --listen tcp://127.0.0.1:$p2 --insecure -t 1 --max-batch-tokens 8 \
  --idle-timeout 2 --stats-every 0.2 --json || fail "cloud worker"
cloud_pid=$last_pid
# (--timeout 3000: a reply the cloud never sends for the killed device, e.g. a request it
# got after that device's session there idled out, is given up after 3 s, not the default 30)
start_worker "$T/edge.log" -m "$BIN" --layers 1:3 --listen tcp://127.0.0.1:$p1 --next tcp://127.0.0.1:$p2 --insecure -t 1 \
  --max-batch-tokens 8 --idle-timeout 2 --timeout 3000 --stats-every 0.2 --json || fail "edge worker"
edge_pid=$last_pid
run_devices tcp://127.0.0.1:$p1 1,3 chain
# both back to 0, and still 0 a second later (about five statistics lines each)
zeros=0
for _ in $(seq 1 250); do
  if [ "$(kv_now "$T/edge.log")" = 0 ] && [ "$(kv_now "$T/cloud.log")" = 0 ]; then zeros=$((zeros + 1)); else zeros=0; fi
  [ $zeros -ge 10 ] && break
  sleep 0.1
done
expect_eq "edge KV after the devices left" "$(kv_now "$T/edge.log")" 0
expect_eq "cloud KV after the devices left" "$(kv_now "$T/cloud.log")" 0
if [ "$(kv_now "$T/edge.log")" != 0 ] || [ "$(kv_now "$T/cloud.log")" != 0 ]; then
  for w in edge cloud; do  # what the workers said, for the record
    pid=${w}_pid
    kill -0 "${!pid}" 2>/dev/null && alive="running" || alive="NOT running"
    echo "--- $w.log (the worker is $alive at $(date +%s.%N); its events, then its last statistics line)" >&2
    grep -v '"kv_bytes"' "$T/$w.log" | tail -25 >&2
    grep '"kv_bytes"' "$T/$w.log" | tail -1 >&2
  done
  [ -n "${EL_KEEP:-}" ] && cp -r "$T" "$EL_KEEP"
fi
finish
