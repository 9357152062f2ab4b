#!/usr/bin/env bash
# A cross-architecture split over a CURVE link: the device is the AArch64
# binary under qemu-aarch64 (EDGELLM_ARM), the worker the x86-64 one
# (EDGELLM). At two cuts the greedy text equals the local x86-64 run's byte
# for byte; with the roles swapped (x86-64 device, AArch64 worker) too.
# Run by scripts/test-arm64.
source "$(dirname "$0")/../e2e/lib.sh"
: "${EDGELLM_ARM:?EDGELLM_ARM must point at the AArch64 binary (or a wrapper that runs it under qemu)}"
BIN=$MODELS/aidreams260K.bin
TOK=$MODELS/tok512.bin
PROMPT="The dream"
N=100

local_text=$("$EDGELLM" run -m "$BIN" -z "$TOK" -p "$PROMPT" -n $N --temp 0)
[ -n "$local_text" ] && pass || fail "local x86-64 run"

# keys: the worker's made by the x86-64 binary, the device's by the AArch64 one
"$EDGELLM" keygen -o "$T/keys/edge" >/dev/null 2>&1 || fail "x86-64 keygen"
"$EDGELLM_ARM" keygen -o "$T/keys/dev" >/dev/null 2>&1 || fail "arm64 keygen"
mkdir -p "$T/allow" && cp "$T/keys/dev/public.key" "$T/allow/dev.key"

for k in 1 3; do
  port=$(free_port)
  start_worker "$T/w$k.log" -m "$BIN" --layers $k:4 --listen tcp://127.0.0.1:$port --keys "$T/keys/edge" \
    --allow "$T/allow" -t 1 || { fail "x86-64 worker $k:4"; continue; }
  got=$("$EDGELLM_ARM" run -m "$BIN" -z "$TOK" -p "$PROMPT" -n $N --temp 0 --split $k --via tcp://127.0.0.1:$port \
        --keys "$T/keys/dev" --server-key "$T/keys/edge/public.key" --timeout 60000 2>"$T/run$k.err")
  expect_eq "arm64 device, x86-64 worker, CURVE, cut $k" "$got" "$local_text"
  [ -s "$T/run$k.err" ] && cat "$T/run$k.err" >&2
  kill $last_pid; wait $last_pid 2>/dev/null
done

# the other way round: an x86-64 device and an AArch64 worker
"$EDGELLM_ARM" keygen -o "$T/keys/edge2" >/dev/null 2>&1
"$EDGELLM" keygen -o "$T/keys/dev2" >/dev/null 2>&1
mkdir -p "$T/allow2" && cp "$T/keys/dev2/public.key" "$T/allow2/dev.key"
port=$(free_port)
EDGELLM=$EDGELLM_ARM start_worker "$T/warm.log" -m "$BIN" --layers 2:4 --listen tcp://127.0.0.1:$port \
  --keys "$T/keys/edge2" --allow "$T/allow2" -t 1 || fail "arm64 worker 2:4"
got=$("$EDGELLM" run -m "$BIN" -z "$TOK" -p "$PROMPT" -n $N --temp 0 --split 2 --via tcp://127.0.0.1:$port \
      --keys "$T/keys/dev2" --server-key "$T/keys/edge2/public.key" --timeout 60000 2>"$T/run-rev.err")
expect_eq "x86-64 device, arm64 worker, CURVE, cut 2" "$got" "$local_text"
finish
