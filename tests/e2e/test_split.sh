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

# one worker, every cut point, logits back and U-shape
for k in 1 2 3; do
  port=$(free_port)
  start_worker "$T/w$k.log" -m "$BIN" --layers $k:4 --listen tcp://127.0.0.1:$port --insecure -t 1 || { fail "worker $k"; continue; }
  got=$("$EDGELLM" run -m "$BIN" -z "$TOK" -p "$PROMPT" -n $N --temp 0 --split $k --via tcp://127.0.0.1:$port --insecure 2>"$T/run$k.err")
  expect_eq "split at $k" "$got" "$local_text"
  got=$("$EDGELLM" run -m "$BIN" -z "$TOK" -p "$PROMPT" -n $N --temp 0 --split $k --via tcp://127.0.0.1:$port --insecure --ushape 2>"$T/runu$k.err")
  expect_eq "split at $k, U-shape" "$got" "$local_text"
  kill $last_pid; wait $last_pid 2>/dev/null
  grep -q "stopping" "$T/w$k.log" && pass || fail "worker $k did not stop cleanly: $(tail -2 "$T/w$k.log")"
done

# a chain of two workers: device 0:1, edge 1:3, cloud 3:4
p2=$(free_port); p1=$(free_port)
start_worker "$T/cloud.log" -m "$BIN" --layers 3:4 --listen tcp://127.0.0.1:$p2 --insecure -t 1 || fail "cloud worker"
start_worker "$T/edge.log" -m "$BIN" --layers 1:3 --listen tcp://127.0.0.1:$p1 --next tcp://127.0.0.1:$p2 --insecure -t 1 || fail "edge worker"
got=$("$EDGELLM" run -m "$BIN" -z "$TOK" -p "$PROMPT" -n $N --temp 0 --split 1,3 --via tcp://127.0.0.1:$p1 --insecure --stats 2>"$T/chain.err")
expect_eq "chain 1,3" "$got" "$local_text"
grep -q "worker1 .* ms, worker2 .* ms" "$T/chain.err" && pass || fail "chain stats lack both workers: $(tail -3 "$T/chain.err")"
got=$("$EDGELLM" run -m "$BIN" -z "$TOK" -p "$PROMPT" -n $N --temp 0 --split 1,3 --via tcp://127.0.0.1:$p1 --insecure --ushape 2>/dev/null)
expect_eq "chain 1,3 U-shape" "$got" "$local_text"
# the edge worker serves 1:3 only
expect_error "this worker serves layers 1:3, the device asked for 2:3" \
  "$EDGELLM" run -m "$BIN" -z "$TOK" -p "$PROMPT" -n 5 --split 2,3 --via tcp://127.0.0.1:$p1 --insecure

# ---- model mismatch: a worker serving a different model
"$EDGELLM" synth --dim 64 --layers 4 --heads 4 --ff 172 --vocab 512 --ctx 128 -o "$T/other.gguf" 2>/dev/null
p3=$(free_port)
start_worker "$T/other.log" -m "$T/other.gguf" --layers 2:4 --listen tcp://127.0.0.1:$p3 --insecure -t 1 || fail "other worker"
expect_error "model mismatch: layers 2:4 of $T/other.gguf have identity" \
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
