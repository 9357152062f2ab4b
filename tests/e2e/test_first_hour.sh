#!/usr/bin/env bash
# The first hour of a newcomer: mistakes are reported fast and say why,
# addresses have one syntax, keys are not overwritten, llama.cpp's habits work,
# limits are announced (issue 22).
source "$(dirname "$0")/lib.sh"
BIN=$MODELS/aidreams260K.bin
TOK=$MODELS/tok512.bin

# elapsed_ms CMD...: runs CMD (stdout to $T/out, stderr to $T/err), prints the milliseconds it took
elapsed_ms() {
  local t0 t1
  t0=$(date +%s%N)
  "$@" >"$T/out" 2>"$T/err"
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000000))
}

# ---- split mistakes fail within seconds, with the cause
ms=$(elapsed_ms "$EDGELLM" run -m "$BIN" -z "$TOK" -p "The" -n 4 --split 2 --via "127.0.0.1:$(free_port)" --insecure)
[ "$ms" -lt 5000 ] && pass || fail "run against a closed port took $ms ms"
grep -q "cannot reach the worker within 3000 ms" "$T/err" && pass || fail "closed port: $(cat "$T/err")"
ms=$(elapsed_ms "$EDGELLM" run -m "$BIN" -z "$TOK" -p "The" -n 4 --split 2 --via "127.0.0.1:$(free_port)" --insecure \
  --connect-timeout 500)
[ "$ms" -lt 2500 ] && pass || fail "--connect-timeout 500 took $ms ms"
grep -q "within 500 ms" "$T/err" && pass || fail "--connect-timeout: $(cat "$T/err")"

"$EDGELLM" keygen -o "$T/keys/edge" >/dev/null 2>&1
"$EDGELLM" keygen -o "$T/keys/dev" >/dev/null 2>&1
mkdir -p "$T/allow" && cp "$T/keys/dev/public.key" "$T/allow/dev.key"
pk=$(free_port)
# HOST:PORT without tcp:// for a CURVE worker (it used to say "cannot listen: Invalid argument")
start_worker "$T/secure.log" -m "$BIN" --layers 2:4 --listen "127.0.0.1:$pk" --keys "$T/keys/edge" --allow "$T/allow" -t 1 \
  || fail "CURVE worker on 127.0.0.1:PORT"
ms=$(elapsed_ms "$EDGELLM" run -m "$BIN" -z "$TOK" -p "The" -n 4 --split 2 --via "tcp://127.0.0.1:$pk" --insecure)
[ "$ms" -lt 5000 ] && pass || fail "--insecure against a CURVE worker took $ms ms"
grep -q "handshake failed: the worker uses CURVE keys and we run --insecure" "$T/err" && pass ||
  fail "--insecure against CURVE: $(cat "$T/err")"
"$EDGELLM" keygen -o "$T/keys/impostor" >/dev/null 2>&1
ms=$(elapsed_ms "$EDGELLM" run -m "$BIN" -z "$TOK" -p "The" -n 4 --split 2 --via "localhost:$pk" \
  --keys "$T/keys/dev" --server-key "$T/keys/impostor/public.key")
[ "$ms" -lt 5000 ] && pass || fail "a wrong --server-key took $ms ms"
grep -q "wrong --server-key?" "$T/err" && pass || fail "wrong --server-key: $(cat "$T/err")"
local_text=$("$EDGELLM" run -m "$BIN" -z "$TOK" -p "The" -n 8 --temp 0 2>/dev/null)
got=$("$EDGELLM" run -m "$BIN" -z "$TOK" -p "The" -n 8 --temp 0 --split 2 --via "localhost:$pk" \
  --keys "$T/keys/dev" --server-key "$T/keys/edge/public.key" 2>"$T/err")
expect_eq "CURVE split through localhost:PORT" "$got" "$local_text"

# ---- one address syntax: a plaintext worker on 127.0.0.1:PORT is loopback
pw=$(free_port)
start_worker "$T/plain.log" -m "$BIN" --layers 2:4 --listen "127.0.0.1:$pw" --insecure -t 1 || fail "worker --listen 127.0.0.1:PORT"
got=$("$EDGELLM" run -m "$BIN" -z "$TOK" -p "The" -n 8 --temp 0 --split 2 --via "127.0.0.1:$pw" --insecure 2>"$T/err")
expect_eq "split through HOST:PORT" "$got" "$local_text"
"$EDGELLM" probe --via "127.0.0.1:$pw" --insecure --json >"$T/probe.json" 2>"$T/err" && pass || fail "probe HOST:PORT: $(cat "$T/err")"
expect_error "plaintext links are allowed only on loopback" \
  "$EDGELLM" worker -m "$BIN" --layers 2:4 --listen "10.1.2.3:$(free_port)" --insecure
expect_error "an IPv6 host needs brackets" "$EDGELLM" worker -m "$BIN" --layers 2:4 --listen "::1:7000" --insecure

# ---- keygen refuses to overwrite a key pair
before=$(cat "$T/keys/edge/secret.key")
expect_error "already exists" "$EDGELLM" keygen -o "$T/keys/edge"
expect_eq "secret key unchanged after a refused keygen" "$(cat "$T/keys/edge/secret.key")" "$before"
"$EDGELLM" keygen -o "$T/keys/edge" --force >/dev/null 2>&1 && pass || fail "keygen --force"
[ "$(cat "$T/keys/edge/secret.key")" != "$before" ] && pass || fail "keygen --force kept the old key"

finish
