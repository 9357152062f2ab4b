#!/usr/bin/env bash
# Split inference on loopback: for every cut point the split output equals the
# local output byte for byte (f32 activations), also with a two-worker chain
# and with U-shape; and the worker refuses what it must refuse.
source "$(dirname "$0")/lib.sh"
BIN=$MODELS/aidreams260K.bin
TOK=$MODELS/tok512.bin
PROMPT="The dream"
N=100

local_text=$("$EDGELLM" run -m "$BIN" -z "$TOK" -p "$PROMPT" -n $N --temp 0)
[ -n "$local_text" ] && pass || fail "local run"

# one worker, every cut point (0: the device runs only the embedding), logits back and U-shape
for k in 0 1 2 3; do
  port=$(free_port)
  start_worker "$T/w$k.log" -m "$BIN" --layers $k:4 --listen tcp://127.0.0.1:$port --insecure -t 1 || { fail "worker $k"; continue; }
  got=$("$EDGELLM" run -m "$BIN" -z "$TOK" -p "$PROMPT" -n $N --temp 0 --split $k --via tcp://127.0.0.1:$port --insecure 2>"$T/run$k.err")
  expect_eq "split at $k" "$got" "$local_text"
  got=$("$EDGELLM" run -m "$BIN" -z "$TOK" -p "$PROMPT" -n $N --temp 0 --split $k --via tcp://127.0.0.1:$port --insecure --ushape 2>"$T/runu$k.err")
  expect_eq "split at $k, U-shape" "$got" "$local_text"
  kill $last_pid; wait $last_pid 2>/dev/null
  grep -q "stopping" "$T/w$k.log" && pass || fail "worker $k did not stop cleanly: $(tail -2 "$T/w$k.log")"
done

# a synthetic model with grouped-query attention: every cut of its 6 layers
"$EDGELLM" synth --dim 128 --layers 6 --heads 8 --kv-heads 2 --ff 256 --vocab 700 --ctx 256 --type f16 --seed 11 \
  -o "$T/syn6.gguf" 2>/dev/null || fail "synth"
syn_local=$("$EDGELLM" run -m "$T/syn6.gguf" -p "abc def" -n 150 --ignore-eos --temp 0)
for k in 1 2 3 4 5; do
  port=$(free_port)
  start_worker "$T/s$k.log" -m "$T/syn6.gguf" --layers $k:6 --listen tcp://127.0.0.1:$port --insecure -t 1 || { fail "synth worker $k"; continue; }
  got=$("$EDGELLM" run -m "$T/syn6.gguf" -p "abc def" -n 150 --ignore-eos --temp 0 --split $k --via tcp://127.0.0.1:$port --insecure)
  expect_eq "synth split at $k" "$got" "$syn_local"
  got=$("$EDGELLM" run -m "$T/syn6.gguf" -p "abc def" -n 150 --ignore-eos --temp 0 --split $k --via tcp://127.0.0.1:$port --insecure --ushape)
  expect_eq "synth split at $k, U-shape" "$got" "$syn_local"
  if [ $k = 1 ]; then
    # the device holds the embedding and layer 0, not the head the worker runs (f16: 700 x 128 x 2
    # bytes of embedding; per layer 2 norms of 128 f32, 128 x (128 + 32 + 32 + 128 + 3 x 256) f16)
    "$EDGELLM" run -m "$T/syn6.gguf" -p "abc def" -n 4 --temp 0 --split 1 --via tcp://127.0.0.1:$port --insecure \
      --json >/dev/null 2>"$T/s1.json"
    expect_eq "device weights at cut 1" "$(sed -n 's/.*"device_weight_bytes": \([0-9]*\).*/\1/p' "$T/s1.json")" \
      $((700 * 128 * 2 + 2 * 128 * 4 + 128 * (128 + 32 + 32 + 128 + 3 * 256) * 2))
  fi
  kill $last_pid; wait $last_pid 2>/dev/null
done

# a worker maps and touches only its own layers: resident memory shrinks with the range
"$EDGELLM" synth --dim 512 --layers 8 --heads 8 --ff 1024 --vocab 300 --ctx 64 --seed 2 -o "$T/big.gguf" 2>/dev/null
port=$(free_port)
start_worker "$T/all.log" -m "$T/big.gguf" --layers 0:8 --listen tcp://127.0.0.1:$port --insecure -t 1 || fail "worker 0:8"
kill $last_pid; wait $last_pid 2>/dev/null
start_worker "$T/part.log" -m "$T/big.gguf" --layers 6:8 --listen tcp://127.0.0.1:$port --insecure -t 1 || fail "worker 6:8"
kill $last_pid; wait $last_pid 2>/dev/null
rss_all=$(grep -o "resident [0-9.]* MiB" "$T/all.log" | awk '{print $2}')
rss_part=$(grep -o "resident [0-9.]* MiB" "$T/part.log" | awk '{print $2}')
echo "resident memory: layers 0:8 $rss_all MiB, layers 6:8 $rss_part MiB"
python3 -c "import sys; a, p = float('$rss_all'), float('$rss_part'); sys.exit(0 if a - p > 50 else 1)" \
  && pass || fail "resident memory did not shrink with the range: $rss_all vs $rss_part MiB"

# a chain of two workers: device 0:1, edge 1:3, cloud 3:4
p2=$(free_port); p1=$(free_port)
start_worker "$T/cloud.log" -m "$BIN" --layers 3:4 --listen tcp://127.0.0.1:$p2 --insecure -t 1 || fail "cloud worker"
start_worker "$T/edge.log" -m "$BIN" --layers 1:3 --listen tcp://127.0.0.1:$p1 --next tcp://127.0.0.1:$p2 --insecure -t 1 || fail "edge worker"
got=$("$EDGELLM" run -m "$BIN" -z "$TOK" -p "$PROMPT" -n $N --temp 0 --split 1,3 --via tcp://127.0.0.1:$p1 --insecure --stats 2>"$T/chain.err")
expect_eq "chain 1,3" "$got" "$local_text"
grep -q "worker1 .* ms, worker2 .* ms" "$T/chain.err" && pass || fail "chain stats lack both workers: $(tail -3 "$T/chain.err")"
got=$("$EDGELLM" run -m "$BIN" -z "$TOK" -p "$PROMPT" -n $N --temp 0 --split 1,3 --via tcp://127.0.0.1:$p1 --insecure --ushape 2>/dev/null)
expect_eq "chain 1,3 U-shape" "$got" "$local_text"
# the edge worker serves 1:3 or a tail of it (2:3), never a range ending elsewhere
got=$("$EDGELLM" run -m "$BIN" -z "$TOK" -p "$PROMPT" -n $N --temp 0 --split 2,3 --via tcp://127.0.0.1:$p1 --insecure 2>/dev/null)
expect_eq "chain 2,3 on workers serving 1:3 and 3:4" "$got" "$local_text"
expect_error "the device asked for 1:2" \
  "$EDGELLM" run -m "$BIN" -z "$TOK" -p "$PROMPT" -n 5 --split 1,2 --via tcp://127.0.0.1:$p1 --insecure
expect_error "the device asked for 0:3" \
  "$EDGELLM" run -m "$BIN" -z "$TOK" -p "$PROMPT" -n 5 --split 0,3 --via tcp://127.0.0.1:$p1 --insecure

# ---- model mismatch: a worker serving a different model
"$EDGELLM" synth --dim 64 --layers 4 --heads 4 --ff 172 --vocab 512 --ctx 128 -o "$T/other.gguf" 2>/dev/null
p3=$(free_port)
start_worker "$T/other.log" -m "$T/other.gguf" --layers 2:4 --listen tcp://127.0.0.1:$p3 --insecure -t 1 || fail "other worker"
expect_error "model mismatch: layers 2:4 of $T/other.gguf (identity" \
  "$EDGELLM" run -m "$BIN" -z "$TOK" -p "$PROMPT" -n 5 --split 2 --via tcp://127.0.0.1:$p3 --insecure

# ---- security: keys, allow-list, pinned server key
"$EDGELLM" keygen -o "$T/keys/edge" >/dev/null 2>&1
"$EDGELLM" keygen -o "$T/keys/dev" >/dev/null 2>&1
"$EDGELLM" keygen -o "$T/keys/stranger" >/dev/null 2>&1
"$EDGELLM" keygen -o "$T/keys/impostor" >/dev/null 2>&1
[ "$(stat -c %a "$T/keys/dev/secret.key")" = 600 ] && pass || fail "secret key is not mode 600"
mkdir -p "$T/allow" && cp "$T/keys/dev/public.key" "$T/allow/dev.key"
p4=$(free_port)
start_worker "$T/secure.log" -m "$BIN" --layers 2:4 --listen tcp://127.0.0.1:$p4 --keys "$T/keys/edge" --allow "$T/allow" -t 1 \
  || fail "secure worker"
got=$("$EDGELLM" run -m "$BIN" -z "$TOK" -p "$PROMPT" -n $N --temp 0 --split 2 --via tcp://127.0.0.1:$p4 \
      --keys "$T/keys/dev" --server-key "$T/keys/edge/public.key" 2>"$T/secure.err")
expect_eq "CURVE split" "$got" "$local_text"
expect_error "the worker refused our key (not on its allow-list)" \
  "$EDGELLM" run -m "$BIN" -z "$TOK" -p "$PROMPT" -n 5 --split 2 --via tcp://127.0.0.1:$p4 --timeout 3000 \
  --keys "$T/keys/stranger" --server-key "$T/keys/edge/public.key"
expect_error "CURVE handshake failed" \
  "$EDGELLM" run -m "$BIN" -z "$TOK" -p "$PROMPT" -n 5 --split 2 --via tcp://127.0.0.1:$p4 --timeout 3000 \
  --keys "$T/keys/dev" --server-key "$T/keys/impostor/public.key"
expect_error "split inference needs --keys DIR and --server-key FILE" \
  "$EDGELLM" run -m "$BIN" -z "$TOK" -p "$PROMPT" --split 2 --via tcp://127.0.0.1:$p4
# plaintext is refused off loopback
expect_error "plaintext links are allowed only on loopback" \
  "$EDGELLM" run -m "$BIN" -z "$TOK" -p "$PROMPT" --split 2 --via tcp://10.0.0.1:$p4 --insecure
expect_error "plaintext links are allowed only on loopback" \
  "$EDGELLM" worker -m "$BIN" --layers 2:4 --listen tcp://0.0.0.0:$p4 --insecure
expect_error "cannot reach the worker" \
  "$EDGELLM" run -m "$BIN" -z "$TOK" -p "$PROMPT" --split 2 --via tcp://127.0.0.1:$(free_port) --insecure --timeout 1000
finish
