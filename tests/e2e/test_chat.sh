#!/usr/bin/env bash
# edgellm chat and run --chat on the real model: a single turn through either
# command gives the same reply; a later turn that reuses the KV cache gives the
# reply a full re-evaluation gives; the end-of-turn text is never printed; bad
# options and templates are refused.
source "$(dirname "$0")/lib.sh"

# The story model has no template of its own; after ChatML markup it only
# prints newlines, after Llama 2's [INST] markup it writes words.
args=(-m "$MODELS/aidreams260K.bin" -z "$MODELS/tok512.bin" --temp 0 -n 24 -t 2 --template llama2)

# One turn: chat and run --chat agree (same template, same tokens, greedy).
printf 'Once upon a time there was a dragon.\n' |
  "$EDGELLM" chat "${args[@]}" >"$T/chat1.out" 2>"$T/chat1.err" || fail "chat: $(cat "$T/chat1.err")"
reply1=$(head -n 1 "$T/chat1.out")
[ -n "$reply1" ] && pass || fail "chat printed no reply: $(cat "$T/chat1.err")"
grep -q "template llama2" "$T/chat1.err" && pass || fail "--template llama2 not taken: $(cat "$T/chat1.err")"
printf 'Hi\n' | "$EDGELLM" chat -m "$MODELS/aidreams260K.bin" -z "$MODELS/tok512.bin" -n 2 >/dev/null 2>"$T/def.err"
grep -q "template chatml" "$T/def.err" && pass || fail "the default template is not chatml: $(cat "$T/def.err")"
"$EDGELLM" run "${args[@]}" --chat -p 'Once upon a time there was a dragon.' >"$T/run1.out" 2>"$T/run1.err" \
  || fail "run --chat: $(cat "$T/run1.err")"
expect_eq "run --chat equals chat's first reply" "$(head -n 1 "$T/run1.out")" "$reply1"

# The same through a split pipeline: the device renders and samples, the worker
# runs the layers.
port=$(free_port)
if start_worker "$T/worker.log" -m "$MODELS/aidreams260K.bin" --layers 2:4 -t 1 --listen "tcp://127.0.0.1:$port" --insecure; then
  "$EDGELLM" run "${args[@]}" --chat -p 'Once upon a time there was a dragon.' --split 2 \
    --via "tcp://127.0.0.1:$port" --insecure >"$T/split1.out" 2>"$T/split1.err" || fail "split run --chat: $(cat "$T/split1.err")"
  expect_eq "split run --chat equals the local reply" "$(head -n 1 "$T/split1.out")" "$reply1"
else
  fail "worker did not start"
fi

# Two turns: the second reuses the cached positions of the first; it must give
# what evaluating the whole conversation afresh gives.
turns=$'Tom had a red ball.\nWhat did Tom do next?\n'
printf '%s' "$turns" | "$EDGELLM" chat "${args[@]}" --system "Tell short stories." >"$T/c.out" 2>"$T/c.err" \
  || fail "chat, two turns: $(cat "$T/c.err")"
printf '%s' "$turns" | "$EDGELLM" chat "${args[@]}" --system "Tell short stories." --no-cache >"$T/n.out" 2>"$T/n.err" \
  || fail "chat --no-cache: $(cat "$T/n.err")"
[ "$(grep -c '' "$T/c.out")" -ge 4 ] && pass || fail "expected two replies, got: $(cat "$T/c.out")"
cmp -s "$T/c.out" "$T/n.out" && pass || fail "cached and uncached conversations differ: $(diff "$T/c.out" "$T/n.out")"

# /reset forgets: the turn after it is answered as a first turn.
printf 'Tom had a red ball.\n/reset\nOnce upon a time there was a dragon.\n' |
  "$EDGELLM" chat "${args[@]}" >"$T/r.out" 2>"$T/r.err" || fail "chat /reset: $(cat "$T/r.err")"
expect_eq "reply after /reset" "$(sed -n 3p "$T/r.out")" "$reply1"

# Templates render the special pieces; with --show-prompt the prompt is shown.
printf 'Hi\n' | "$EDGELLM" chat "${args[@]}" --template llama3 --show-prompt -n 2 >/dev/null 2>"$T/l3.err" \
  || fail "chat --template llama3: $(cat "$T/l3.err")"
grep -qF '<|start_header_id|>user<|end_header_id|>' "$T/l3.err" && pass || fail "llama3 prompt not shown: $(cat "$T/l3.err")"

# A line that is not UTF-8 is refused on stderr and the conversation goes on.
printf 'a\xffb\nOnce upon a time there was a dragon.\n' | "$EDGELLM" chat "${args[@]}" >"$T/u.out" 2>"$T/u.err"
expect_eq "chat after a bad line: exit status" "$?" "0"
grep -q "not valid UTF-8" "$T/u.err" && pass || fail "bad line not reported: $(cat "$T/u.err")"
expect_eq "reply after a bad line" "$(head -n 1 "$T/u.out")" "$reply1"

# A model whose replies are bytes that are not text (random weights, byte
# tokens), over more turns than its context holds: every turn is answered, the
# earlier turns are forgotten when they no longer fit, and chat ends cleanly.
"$EDGELLM" synth --dim 64 --layers 2 --heads 4 --kv-heads 2 --ff 96 --vocab 300 --ctx 64 --family qwen2 \
  -o "$T/q2.gguf" 2>/dev/null || fail "synth qwen2"
printf 'hi\nmore\nand more\n' | "$EDGELLM" chat -m "$T/q2.gguf" -n 5 --temp 0 -t 1 >"$T/q.out" 2>"$T/q.err"
expect_eq "chat with byte replies: exit status" "$?" "0"
expect_eq "three replies" "$(grep -c '^$' "$T/q.out")" "3"
grep -q "forgetting the earlier turns" "$T/q.err" && pass || fail "no context overflow handling: $(cat "$T/q.err")"

# Refusals
expect_error "'vicuna'" "$EDGELLM" chat "${args[@]}" --template vicuna
expect_error "need --chat" "$EDGELLM" run -m "$MODELS/aidreams260K.bin" -z "$MODELS/tok512.bin" -p hi --system "x"
expect_error "-m MODEL is required" "$EDGELLM" chat
expect_error "nonexistent.gguf" "$EDGELLM" chat -m "$T/nonexistent.gguf"
"$EDGELLM" chat --help >"$T/help" 2>&1 && grep -q "usage: edgellm chat" "$T/help" && pass || fail "chat --help"
finish
