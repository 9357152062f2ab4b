#!/usr/bin/env bash
# Split inference under load and faults: eight devices at once on one worker,
# a device that disappears, a worker that restarts (with and without --retry).
source "$(dirname "$0")/lib.sh"
BIN=$MODELS/aidreams260K.bin
TOK=$MODELS/tok512.bin

# ---- eight concurrent devices, each must get exactly its local text
port=$(free_port)
start_worker "$T/w.log" -m "$BIN" --layers 2:4 --listen tcp://127.0.0.1:$port --insecure -t 1 || fail "worker"
prompts=("The dream" "I" "A whisper" "Vectors" "In the silence" "Classification" "Once" "The tapestry")
for i in "${!prompts[@]}"; do
  "$EDGELLM" run -m "$BIN" -z "$TOK" -p "${prompts[$i]}" -n 100 --temp 0 -t 1 >"$T/local$i.txt"
  "$EDGELLM" run -m "$BIN" -z "$TOK" -p "${prompts[$i]}" -n 100 --temp 0 -t 1 \
    --split 2 --via tcp://127.0.0.1:$port --insecure >"$T/split$i.txt" 2>"$T/split$i.err" &
  pids[$i]=$!
done
for i in "${!prompts[@]}"; do
  wait ${pids[$i]} || fail "device $i failed: $(cat "$T/split$i.err")"
  cmp -s "$T/local$i.txt" "$T/split$i.txt" && pass || fail "device $i text differs from local"
done
opened=$(grep -c "opened" "$T/w.log")
[ "$opened" -ge 8 ] && pass || fail "worker saw $opened sessions, expected 8"
# sessions of different devices were served interleaved, not one after another
python3 - "$T/w.log" <<'PY' && pass || fail "sessions were not interleaved"
import sys
lines = [l for l in open(sys.argv[1]) if "opened" in l or "closed" in l]
# with 8 devices started together, some session opens after another opened and before it closed
depth = maxd = 0
for l in lines:
    depth += 1 if "opened" in l else -1
    maxd = max(maxd, depth)
print("max concurrent sessions:", maxd)
sys.exit(0 if maxd >= 2 else 1)
PY
kill $last_pid; wait $last_pid 2>/dev/null

# ---- limits: a worker with room for one session refuses a second device
port=$(free_port)
start_worker "$T/w1.log" -m "$BIN" --layers 2:4 --listen tcp://127.0.0.1:$port --insecure -t 1 --max-sessions 1 \
  --ctx 100 || fail "worker max-sessions"
"$EDGELLM" run -m "$BIN" -z "$TOK" -p "The dream" -n 5 -c 100 --split 2 --via tcp://127.0.0.1:$port --insecure >/dev/null 2>&1 \
  && pass || fail "first device on a one-session worker"
# (a context within the model's 128, so that the worker's limit is the only complaint)
expect_error "context 128 / batch" \
  "$EDGELLM" run -m "$BIN" -z "$TOK" -p "The dream" -n 5 --ctx 128 --split 2 --via tcp://127.0.0.1:$port --insecure
kill $last_pid; wait $last_pid 2>/dev/null

# ---- a bigger random model so that a generation lasts long enough to interrupt
# opened LOG N: wait until the worker logged N opened sessions (a device is generating: a fixed
# sleep could see one not started yet on a loaded machine, or already done on a fast one)
opened() {
  for _ in $(seq 1 200); do [ "$(grep -c 'session [0-9a-f]* opened' "$1")" -ge "$2" ] && return 0; sleep 0.05; done
  fail "no device session $2 opened in 10 s: $(tail -3 "$1")"
  return 1
}
"$EDGELLM" synth --dim 256 --layers 4 --heads 8 --kv-heads 4 --ff 512 --vocab 1024 --ctx 4096 --seed 5 -o "$T/syn.gguf" 2>/dev/null
port=$(free_port)
# (the idle timeout applies to the live devices too: 2 s, not 1, so that a loaded machine's pause
# between two of a device's requests does not end its session)
start_worker "$T/w2.log" -m "$T/syn.gguf" --layers 2:4 --listen tcp://127.0.0.1:$port --insecure -t 1 --idle-timeout 2 \
  || fail "worker 2"
# a device that disappears mid-generation: its session is freed by the idle timeout
"$EDGELLM" run -m "$T/syn.gguf" -p "abc" -n 4000 --ignore-eos --temp 0 -t 1 --split 2 --via tcp://127.0.0.1:$port --insecure \
  >/dev/null 2>&1 &
dev=$!
opened "$T/w2.log" 1; sleep 0.1
kill -9 $dev; wait $dev 2>/dev/null
# (or sooner: a reply the worker sends once the device is gone fails, and that frees it too)
freed='closed (\(idle timeout\|its device does not take replies\)), 0 left'
for _ in $(seq 1 100); do grep -q "$freed" "$T/w2.log" && break; sleep 0.1; done
grep -q "$freed" "$T/w2.log" && pass || fail "vanished device's session not freed: $(tail -3 "$T/w2.log")"

# Ctrl-C on the device: it stops generating, closes its session and exits 0
"$EDGELLM" run -m "$T/syn.gguf" -p "abc" -n 4000 --ignore-eos --temp 0 -t 1 --split 2 --via tcp://127.0.0.1:$port --insecure \
  >"$T/int.out" 2>"$T/int.err" &
dev=$!
opened "$T/w2.log" 2; sleep 0.1
kill -INT $dev
wait $dev
expect_eq "device exit status after SIGINT" "$?" "0"
for _ in $(seq 1 100); do grep -q "closed by the device" "$T/w2.log" && break; sleep 0.05; done
grep -q "closed (closed by the device)" "$T/w2.log" && pass || fail "interrupted device did not close its session"

# a worker restart: without --retry the device fails with a clear message ...
"$EDGELLM" run -m "$T/syn.gguf" -p "abc" -n 4000 --ignore-eos --temp 0 -t 1 --split 2 --via tcp://127.0.0.1:$port --insecure \
  --timeout 2000 >/dev/null 2>"$T/noretry.err" &
dev=$!
opened "$T/w2.log" 3; sleep 0.1
kill $last_pid; wait $last_pid 2>/dev/null
start_worker "$T/w3.log" -m "$T/syn.gguf" --layers 2:4 --listen tcp://127.0.0.1:$port --insecure -t 1 || fail "worker 3"
wait $dev
rc=$?
[ $rc -ne 0 ] && [ $rc -lt 128 ] && pass || fail "device without --retry: exit $rc"
grep -q "unknown or expired session\|no answer within" "$T/noretry.err" && pass || fail "no clear error: $(cat "$T/noretry.err")"

# ... and with --retry it re-opens the session, re-sends the prefix, and the text is unchanged
"$EDGELLM" run -m "$T/syn.gguf" -p "abc" -n 1500 --ignore-eos --temp 0 -t 1 >"$T/syn-local.txt"
"$EDGELLM" run -m "$T/syn.gguf" -p "abc" -n 1500 --ignore-eos --temp 0 -t 1 --split 2 --via tcp://127.0.0.1:$port --insecure \
  --timeout 2000 --retry 3 >"$T/syn-split.txt" 2>"$T/retry.err" &
dev=$!
opened "$T/w3.log" 1; sleep 0.1
kill $last_pid; wait $last_pid 2>/dev/null
start_worker "$T/w4.log" -m "$T/syn.gguf" --layers 2:4 --listen tcp://127.0.0.1:$port --insecure -t 1 || fail "worker 4"
wait $dev || fail "device with --retry failed: $(cat "$T/retry.err")"
grep -q "re-opening the session (retry 1 of 3)" "$T/retry.err" && pass || fail "no retry notice: $(cat "$T/retry.err")"
cmp -s "$T/syn-local.txt" "$T/syn-split.txt" && pass || fail "text after a worker restart differs from local"
finish
