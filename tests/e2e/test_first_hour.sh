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

# ---- llama.cpp's habits: -c/--ctx-size, -s/--seed, --n-predict, -f -, -e
a=$("$EDGELLM" run -m "$BIN" -z "$TOK" -p "The dream" --n-predict 30 -s 5 -c 100 2>/dev/null)
b=$("$EDGELLM" run -m "$BIN" -z "$TOK" -p "The dream" -n 30 --seed 5 --ctx-size 100 2>/dev/null)
expect_eq "--n-predict -s -c equal -n --seed --ctx-size" "$a" "$b"
c=$(printf 'The dream' | "$EDGELLM" run -m "$BIN" -z "$TOK" -f - -n 30 --seed 5 --ctx 100 2>/dev/null)
expect_eq "-f - reads the prompt from standard input" "$c" "$a"
# -e: \n in the prompt is a newline; without -e it is the two characters
"$EDGELLM" tokenize -z "$TOK" -p 'a\nb' >"$T/raw.ids"
printf 'a\nb' >"$T/nl.txt"
"$EDGELLM" tokenize -z "$TOK" -f "$T/nl.txt" >"$T/nl.ids"
"$EDGELLM" run -m "$BIN" -z "$TOK" -p 'a\nb' -e -n 0 >"$T/e.out" 2>/dev/null
expect_eq "-e turns \\n into a newline" "$(cat "$T/e.out")" "$(printf 'a\nb')"
[ "$(cat "$T/raw.ids")" != "$(cat "$T/nl.ids")" ] && pass || fail "without -e, \\n stays two characters"
# the defaults are one set, the same in run, chat and serve (docs/cli.md)
for cmd in run chat; do
  "$EDGELLM" help $cmd >"$T/help" || fail "help $cmd"
  grep -q "temperature; 0 = greedy (default 0.8)" "$T/help" && grep -q "(default 40; 0 = off)" "$T/help" &&
    grep -q "(default 0.95; 1 = off)" "$T/help" && grep -q "(default 0.05; 0 = off)" "$T/help" && pass ||
    fail "$cmd --help does not show the one set of sampling defaults"
done
"$EDGELLM" help run >"$T/help" && head -1 "$T/help" | grepq "^usage: edgellm run" && pass || fail "edgellm help run"
"$EDGELLM" --version | grep -Eq "^edgellm [0-9]+\.[0-9]+\.[0-9]+$" && pass || fail "--version: $("$EDGELLM" --version)"

# ---- context honesty
"$EDGELLM" run -m "$BIN" -z "$TOK" -p "The dream" -n 500 --temp 0 --ignore-eos >"$T/long.out" 2>"$T/long.err"
grep -q "stopped at the end of the context (128 positions) after 122 of the 500 tokens asked for" "$T/long.err" && pass ||
  fail "no context-end notice: $(cat "$T/long.err")"
[ "$(tail -c 1 "$T/long.out" | od -An -c | tr -d ' ')" = '\n' ] && pass || fail "run output does not end with a newline"
# past the trained context: one policy, a warning, in every command
warn="warning: context 256 is longer than the 128 positions"
"$EDGELLM" run -m "$BIN" -z "$TOK" -p "The" -n 2 -c 256 2>"$T/w.err" >/dev/null && grep -q "$warn" "$T/w.err" && pass ||
  fail "run -c 256: $(cat "$T/w.err")"
echo "hi" | "$EDGELLM" chat -m "$BIN" -z "$TOK" -n 2 -c 256 2>"$T/w.err" >/dev/null && grep -q "$warn" "$T/w.err" && pass ||
  fail "chat -c 256: $(cat "$T/w.err")"
"$EDGELLM" perplexity -m "$BIN" -z "$TOK" -f "$EL_SRC/data/dreams-eval.txt" -c 256 2>"$T/w.err" >/dev/null &&
  grep -q "$warn" "$T/w.err" && pass || fail "perplexity -c 256: $(cat "$T/w.err")"
"$EDGELLM" serve -m "$BIN" -z "$TOK" -c 256 --listen 127.0.0.1:0 -q 2>"$T/serve-ctx.err" &
sp=$!
for _ in $(seq 1 100); do grep -q "listening on" "$T/serve-ctx.err" && break; sleep 0.05; done
kill $sp; wait $sp
grep -q "$warn" "$T/serve-ctx.err" && pass || fail "serve -c 256: $(cat "$T/serve-ctx.err")"
pw2=$(free_port)
start_worker "$T/wctx.log" -m "$BIN" --layers 2:4 --listen "127.0.0.1:$pw2" --insecure -t 1 --ctx 256 || fail "worker --ctx 256"
grep -q "$warn" "$T/wctx.log" && pass || fail "worker --ctx 256: $(cat "$T/wctx.log")"
# bench fits its defaults to the model (ctx 128: -p 64 -n 32)
"$EDGELLM" bench -m "$BIN" -t 1 -r 1 --json >"$T/bench.json" 2>"$T/bench.err" && pass || fail "bench defaults: $(cat "$T/bench.err")"
grep -q "bench: -p 64 -n 32 to fit" "$T/bench.err" && grep -q '"prompt_tokens": 64, "decode_tokens": 32' "$T/bench.json" &&
  pass || fail "bench did not fit: $(cat "$T/bench.err") $(cat "$T/bench.json")"

# ---- quieter statistics: --stats is a summary, --stats=tokens adds a line per token
"$EDGELLM" run -m "$BIN" -z "$TOK" -p "The dream" -n 20 --temp 0 --stats >/dev/null 2>"$T/s.err"
grep -q "^decode: 20 tokens" "$T/s.err" && ! grep -q "^token " "$T/s.err" && pass || fail "--stats: $(cat "$T/s.err")"
"$EDGELLM" run -m "$BIN" -z "$TOK" -p "The dream" -n 20 --temp 0 --stats=tokens >/dev/null 2>"$T/s.err"
[ "$(grep -c "^token [0-9]*: device" "$T/s.err")" -eq 19 ] && grep -q "^decode: 20 tokens" "$T/s.err" && pass ||
  fail "--stats=tokens: $(cat "$T/s.err")"

# ---- hints: info's type summary and file type, tokenize --pieces
"$EDGELLM" convert "$BIN" "$T/aid.gguf" -z "$TOK" >/dev/null 2>&1
"$EDGELLM" quantize "$T/aid.gguf" "$T/aid-q4km.gguf" q4_k_m >/dev/null 2>&1
"$EDGELLM" info "$T/aid-q4km.gguf" >"$T/info"
grep -q "^tensor types: q8_0 25 tensors (0.19 MiB), f16 4 (0.08 MiB), f32 9 (0.00 MiB)$" "$T/info" && pass ||
  fail "info type summary: $(grep 'tensor types' "$T/info")"
grep -q "general.file_type *15 (mostly Q4_K_M)" "$T/info" && pass || fail "info file type: $(grep file_type "$T/info")"
"$EDGELLM" tokenize -z "$MODELS/llama2-tokenizer.bin" -p "Hello world's" --pieces >"$T/pieces"
expect_eq "tokenize --pieces" "$(tail -n +2 "$T/pieces")" "$(printf "15043 'Hello'\n3186 ' world'\n29915 '\\\\''\n29879 's'")"

# ---- serve lists only adapters that fit its base
"$EDGELLM" synth --dim 64 --layers 4 --heads 4 --ff 96 --vocab 512 -o "$T/other-base.gguf" 2>/dev/null
mkdir -p "$T/ad"
"$EDGELLM" finetune -m "$BIN" -z "$TOK" --data "$EL_SRC/data/finetune/pirate-dreams.txt" --steps 1 -t 1 \
  -o "$T/ad/pirate.gguf" >/dev/null 2>&1 || fail "finetune pirate"
"$EDGELLM" serve -m "$T/other-base.gguf" --lora-dir "$T/ad" --listen 127.0.0.1:0 -q 2>"$T/serve.err" &
sp=$!
for _ in $(seq 1 100); do grep -q "listening on" "$T/serve.err" && break; sleep 0.05; done
url=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$T/serve.err")
grep -q "serve: adapter 'pirate' is not listed: " "$T/serve.err" && pass || fail "no adapter mismatch log: $(cat "$T/serve.err")"
curl -s "$url/v1/models" | grepq pirate && fail "an adapter for another base is listed" || pass
code=$(curl -s -o "$T/r.json" -w '%{http_code}' "$url/v1/completions" -d '{"model":"pirate","prompt":"a","max_tokens":2}')
expect_eq "request naming an adapter for another base" "$code" 404
grep -q "cannot be used with this base" "$T/r.json" && pass || fail "404 without the reason: $(cat "$T/r.json")"
kill $sp; wait $sp

# ---- split fine-tuning names its outputs X.gguf, X.device.gguf, X.worker.gguf
pt=$(free_port)
start_worker "$T/train.log" -m "$BIN" --layers 2:4 --listen "127.0.0.1:$pt" --insecure --train -t 1 || fail "training worker"
"$EDGELLM" finetune -m "$BIN" -z "$TOK" --data "$EL_SRC/data/finetune/pirate-dreams.txt" --steps 2 -t 1 \
  --split 2 --via "127.0.0.1:$pt" --insecure -o "$T/sp.gguf" >/dev/null 2>"$T/sp.err" || fail "split finetune: $(cat "$T/sp.err")"
[ -f "$T/sp.gguf" ] && [ -f "$T/sp.device.gguf" ] && [ -f "$T/sp.worker.gguf" ] && [ ! -e "$T/sp.gguf.device.gguf" ] && pass ||
  fail "split finetune outputs: $(ls "$T" | grep sp)"

# ---- Ctrl-C in chat stops the reply, keeps the conversation, a second one quits
"$EDGELLM" synth --dim 256 --layers 4 --heads 4 --ff 512 --vocab 2000 --ctx 4096 -o "$T/long.gguf" 2>/dev/null
mkfifo "$T/in"
"$EDGELLM" chat -m "$T/long.gguf" -n 3000 -t 1 --temp 0 --show-prompt <"$T/in" >"$T/chat.out" 2>"$T/chat.err" &
cp=$!
exec 3>"$T/in"
echo "hello there" >&3
for _ in $(seq 1 200); do [ -s "$T/chat.out" ] && break; sleep 0.05; done
kill -INT $cp
for _ in $(seq 1 100); do grep -q "reply stopped" "$T/chat.err" && break; sleep 0.05; done
grep -q "chat: reply stopped (Ctrl-C); Ctrl-C again quits" "$T/chat.err" && pass || fail "no stop notice: $(cat "$T/chat.err")"
kill -0 $cp 2>/dev/null && pass || fail "chat ended on the first Ctrl-C"
echo "again" >&3
for _ in $(seq 1 200); do grep -q "^again<|im_end|>" "$T/chat.err" && break; sleep 0.05; done
# the second turn's prompt holds the first turn and the part of the reply that was written
awk '/prompt \([0-9]+ tokens\)/{n++} n==2' "$T/chat.err" >"$T/turn2"
grep -q "^hello there<|im_end|>" "$T/turn2" && grep -q "^again<|im_end|>" "$T/turn2" &&
  [ "$(grep -c '<|im_start|>assistant' "$T/turn2")" -eq 2 ] && pass || fail "history after Ctrl-C: $(cat "$T/turn2")"
# Ctrl-C again until it quits, every 0.2 s, up to 10 s (one that lands after chat's last check and
# before it blocks reading the prompt waits for the next; a single one used to hang the test until
# ctest's timeout)
for _ in $(seq 1 50); do
  kill -INT $cp 2>/dev/null
  sleep 0.2
  kill -0 $cp 2>/dev/null || break
done
kill -0 $cp 2>/dev/null && { fail "chat did not quit on Ctrl-C within 10 s: $(tail -2 "$T/chat.err")"; kill -9 $cp; }
wait $cp
rc=$?
exec 3>&-
expect_eq "chat exit status after a second Ctrl-C" "$rc" 0

finish
