#!/usr/bin/env bash
# Speculative decoding: with --draft the greedy text is byte-identical to the
# model alone, locally, split at two cuts, through a 2-worker chain and with
# self-drafting; for aidreams260K with a q4_0 draft of it and for a synth
# pair. A draft with another vocabulary is refused before any work.
source "$(dirname "$0")/lib.sh"
BIN=$MODELS/aidreams260K.bin
TOK=$MODELS/tok512.bin

"$EDGELLM" convert "$BIN" "$T/aid.gguf" -z "$TOK" >/dev/null 2>&1 || fail "convert"
"$EDGELLM" quantize "$T/aid.gguf" "$T/aid-q4_0.gguf" q4_0 >/dev/null 2>&1 || fail "quantize the draft"
"$EDGELLM" synth --dim 128 --layers 4 --heads 4 --ff 320 --vocab 600 --ctx 256 --seed 3 -o "$T/syn.gguf" \
  >/dev/null 2>&1 || fail "synth"
"$EDGELLM" quantize "$T/syn.gguf" "$T/syn-q4_0.gguf" q4_0 >/dev/null 2>&1 || fail "quantize the synth draft"
"$EDGELLM" synth --dim 64 --layers 2 --heads 4 --ff 160 --vocab 700 --seed 4 -o "$T/other-vocab.gguf" \
  >/dev/null 2>&1 || fail "synth with another vocabulary"

# check_same TAG ARGS...: the text of `run ARGS` equals $T/plain.txt, and --json counts its rounds
check_same() {
  local tag=$1; shift
  "$EDGELLM" run "$@" --json >"$T/$tag.txt" 2>"$T/$tag.err" || { fail "$tag: $(tail -2 "$T/$tag.err")"; return; }
  if cmp -s "$T/plain.txt" "$T/$tag.txt"; then pass; else
    fail "$tag: '$(cat "$T/$tag.txt")' differs from the model alone: '$(cat "$T/plain.txt")'"; fi
  local rt acc dr
  rt=$(grep -o '"round_trips": [0-9]*' "$T/$tag.err" | awk '{print $2}')
  acc=$(grep -o '"accepted": [0-9]*' "$T/$tag.err" | awk '{print $2}')
  dr=$(grep -o '"drafted": [0-9]*' "$T/$tag.err" | awk '{print $2}')
  [ -n "$rt" ] && [ "$rt" -gt 0 ] && [ -n "$acc" ] && [ "$acc" -le "$dr" ] && pass \
    || fail "$tag: --json lacks drafted/accepted/round_trips: $(tail -1 "$T/$tag.err")"
}

A=(-m "$BIN" -z "$TOK" -p "Once upon a time" -n 80 --temp 0 -t 1)
"$EDGELLM" run "${A[@]}" >"$T/plain.txt" 2>/dev/null || fail "plain run"
check_same local-q4 "${A[@]}" --draft "$T/aid-q4_0.gguf"
check_same local-k3 "${A[@]}" --draft "$T/aid-q4_0.gguf" --draft-k 3
check_same local-self1 "${A[@]}" --draft self:1
# the q4_0 copy agrees with the model nearly always: most rounds of 3 drafts
# accept all of them (4 tokens), so 80 tokens take few more than 20 rounds
rt=$(grep -o '"round_trips": [0-9]*' "$T/local-k3.err" | awk '{print $2}')
[ -n "$rt" ] && [ "$rt" -le 28 ] && pass || fail "q4_0 draft, k 3: $rt verification rounds for 80 tokens"

for k in 1 3; do
  port=$(free_port)
  start_worker "$T/w$k.log" -m "$BIN" --layers $k:4 --listen tcp://127.0.0.1:$port --insecure -t 1 || { fail "worker $k"; continue; }
  wpid=$last_pid
  check_same split$k-q4 "${A[@]}" --draft "$T/aid-q4_0.gguf" --split $k --via 127.0.0.1:$port --insecure
  check_same split$k-self1 "${A[@]}" --draft self:1 --split $k --via 127.0.0.1:$port --insecure
  kill "$wpid" 2>/dev/null
done
# a chain: device 0:1, edge 1:3, next 3:4
p1=$(free_port); p2=$(free_port)
start_worker "$T/c2.log" -m "$BIN" --layers 3:4 --listen tcp://127.0.0.1:$p2 --insecure -t 1 || fail "chain worker 2"
start_worker "$T/c1.log" -m "$BIN" --layers 1:3 --listen tcp://127.0.0.1:$p1 --next tcp://127.0.0.1:$p2 --insecure -t 1 \
  || fail "chain worker 1"
check_same chain-q4 "${A[@]}" --draft "$T/aid-q4_0.gguf" --split 1,3 --via 127.0.0.1:$p1 --insecure
check_same chain-self2 "${A[@]}" --draft self:2 --split 1,3 --via 127.0.0.1:$p1 --insecure

# the synth pair, local and split
S=(-m "$T/syn.gguf" -p "The quick brown fox" -n 60 --temp 0 -t 1)
"$EDGELLM" run "${S[@]}" >"$T/plain.txt" 2>/dev/null || fail "plain synth run"
check_same synth-local "${S[@]}" --draft "$T/syn-q4_0.gguf"
port=$(free_port)
start_worker "$T/ws.log" -m "$T/syn.gguf" --layers 2:4 --listen tcp://127.0.0.1:$port --insecure -t 1 || fail "synth worker"
check_same synth-split "${S[@]}" --draft "$T/syn-q4_0.gguf" --split 2 --via 127.0.0.1:$port --insecure
check_same synth-split-self "${S[@]}" --draft self:1 --draft-k 2 --split 2 --via 127.0.0.1:$port --insecure

# sampling (temperature > 0) runs too, and --stats reports the rounds
"$EDGELLM" run -m "$BIN" -z "$TOK" -p "Once" -n 40 --temp 0.8 --seed 5 -t 1 --draft "$T/aid-q4_0.gguf" --stats \
  >"$T/t.txt" 2>"$T/t.err" || fail "sampled speculative run: $(tail -1 "$T/t.err")"
grep -q "speculative: drafted [0-9]*, accepted [0-9]* (acceptance" "$T/t.err" && pass || fail "--stats: $(cat "$T/t.err")"
grep -q "predicted [0-9.]* tokens/s" "$T/t.err" && pass || fail "--stats lacks the prediction"

# bad input: refused before any work, one line, non-zero
expect_error "vocabulary of 700 tokens" "$EDGELLM" run "${A[@]}" --draft "$T/other-vocab.gguf"
expect_error "--draft-k" "$EDGELLM" run "${A[@]}" --draft self:1 --draft-k 0
expect_error "--draft self:9" "$EDGELLM" run "${A[@]}" --draft self:9
expect_error "excludes --edge-sample" "$EDGELLM" run "${A[@]}" --draft self:1 --split 2 --via 127.0.0.1:1 --insecure --edge-sample
expect_error "no-such.gguf" "$EDGELLM" run "${A[@]}" --draft "$T/no-such.gguf"
finish
