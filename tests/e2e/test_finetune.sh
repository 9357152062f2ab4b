#!/usr/bin/env bash
# LoRA fine-tuning end to end: the loss falls and generations change style,
# run --lora == export-lora, SIGKILL + --resume ends bit for bit where an
# uninterrupted run does, completion-only jsonl, an f16 base, and bad input.
source "$(dirname "$0")/lib.sh"
DATA=${EL_SRC:-$(dirname "$0")/../..}/data/finetune
BASE=(-m "$MODELS/aidreams260K.bin" -z "$MODELS/tok512.bin")

# ---- training lowers the validation loss and the adapter changes the style
"$EDGELLM" finetune "${BASE[@]}" --data "$DATA/pirate-dreams.txt" --val "$DATA/pirate-dreams-val.txt" \
  --epochs 4 --batch 8 --lr 3e-3 -t 2 -o "$T/pirate.gguf" 2>"$T/ft.err" || fail "finetune (exit $?): $(tail -3 "$T/ft.err")"
line=$(grep "^validation loss" "$T/ft.err")
read -r before after <<<"$(echo "$line" | sed -E 's/validation loss ([0-9.]+) -> ([0-9.]+).*/\1 \2/')"
python3 -c "import sys; b,a=float(sys.argv[1]),float(sys.argv[2]); sys.exit(0 if a < 0.7*b else 1)" "$before" "$after" \
  && pass || fail "validation loss did not fall by 30%: $line"
grep -q "step   train loss   val loss" "$T/ft.err" && pass || fail "no loss table"
grep -q "^memory: base" "$T/ft.err" && pass || fail "no memory report"
out=$("$EDGELLM" run "${BASE[@]}" --lora "$T/pirate.gguf" -p "The dream" -n 60 --temp 0 -t 1)
if grep -Eq "matey|arr|o' |Aye|anchor|ship" <<<"$out"; then pass; else fail "no pirate style: $out"; fi
base_out=$("$EDGELLM" run "${BASE[@]}" -p "The dream" -n 60 --temp 0 -t 1)
zero_out=$("$EDGELLM" run "${BASE[@]}" --lora "$T/pirate.gguf:0" -p "The dream" -n 60 --temp 0 -t 1)
expect_eq "scale 0 is the base" "$zero_out" "$base_out"

# ---- export-lora merges to the same model
"$EDGELLM" convert "$MODELS/aidreams260K.bin" "$T/aid.gguf" -z "$MODELS/tok512.bin" 2>/dev/null
"$EDGELLM" export-lora -m "$T/aid.gguf" --lora "$T/pirate.gguf" -o "$T/merged.gguf" 2>/dev/null || fail "export-lora"
merged_out=$("$EDGELLM" run -m "$T/merged.gguf" -p "The dream" -n 60 --temp 0 -t 1)
expect_eq "merged == --lora" "$merged_out" "$out"

# ---- SIGKILL after step 7 (checkpoint at 5), resume: identical adapter
common=(--data "$DATA/pirate-dreams.txt" --steps 12 --batch 4 --lr 2e-3 -t 2 --checkpoint-every 5 --seed 9)
"$EDGELLM" finetune "${BASE[@]}" "${common[@]}" -o "$T/full.gguf" 2>/dev/null || fail "uninterrupted run"
EL_TEST_KILL_AT_STEP=7 "$EDGELLM" finetune "${BASE[@]}" "${common[@]}" -o "$T/resumed.gguf" 2>/dev/null
rc=$?
expect_eq "killed run exit status" "$rc" "137"
[ -f "$T/resumed.gguf.ckpt" ] && pass || fail "no checkpoint after the kill"
[ -f "$T/resumed.gguf" ] && fail "adapter written by a killed run" || pass
"$EDGELLM" finetune "${BASE[@]}" "${common[@]}" -o "$T/resumed.gguf" --resume 2>"$T/resume.err" || fail "resume: $(cat "$T/resume.err")"
grep -q "resuming from .* at step 5" "$T/resume.err" && pass || fail "did not resume at step 5: $(head -2 "$T/resume.err")"
cmp -s "$T/full.gguf" "$T/resumed.gguf" && pass || fail "resumed adapter differs from the uninterrupted one"

# ---- the adapter over split inference: the worker chain receives its layers'
# matrices (LORA) and the text equals the local run's, for one worker at every
# cut, U-shape, a two-worker chain, and two adapters at once
for k in 0 2 3; do
  port=$(free_port)
  start_worker "$T/lw$k.log" -m "$MODELS/aidreams260K.bin" --layers $k:4 --listen tcp://127.0.0.1:$port --insecure -t 1 \
    || { fail "worker $k"; continue; }
  got=$("$EDGELLM" run "${BASE[@]}" --lora "$T/pirate.gguf" -p "The dream" -n 60 --temp 0 -t 1 --split $k \
    --via tcp://127.0.0.1:$port --insecure 2>"$T/lsplit$k.err")
  expect_eq "--lora with --split $k" "$got" "$out"
  got=$("$EDGELLM" run "${BASE[@]}" --lora "$T/pirate.gguf" -p "The dream" -n 60 --temp 0 -t 1 --split $k --ushape \
    --via tcp://127.0.0.1:$port --insecure 2>/dev/null)
  expect_eq "--lora with --split $k, U-shape" "$got" "$out"
  kill $last_pid; wait $last_pid 2>/dev/null
  grep -q "adapter 1 with $((7 * (4 - k))) matrices here" "$T/lw$k.log" && pass || fail "worker $k log: $(grep adapter "$T/lw$k.log")"
done
p2=$(free_port); p1=$(free_port)
start_worker "$T/lcloud.log" -m "$MODELS/aidreams260K.bin" --layers 3:4 --listen tcp://127.0.0.1:$p2 --insecure -t 1 || fail "cloud worker"
cloud_pid=$last_pid
start_worker "$T/ledge.log" -m "$MODELS/aidreams260K.bin" --layers 1:3 --listen tcp://127.0.0.1:$p1 --next tcp://127.0.0.1:$p2 \
  --insecure -t 1 || fail "edge worker"
got=$("$EDGELLM" run "${BASE[@]}" --lora "$T/pirate.gguf" -p "The dream" -n 60 --temp 0 -t 1 --split 1,3 \
  --via tcp://127.0.0.1:$p1 --insecure 2>"$T/lchain.err")
expect_eq "--lora with a chain 1,3" "$got" "$out"
two=$("$EDGELLM" run "${BASE[@]}" --lora "$T/pirate.gguf:0.7" --lora "$T/full.gguf:0.5" -p "The dream" -n 60 --temp 0 -t 1 2>/dev/null)
got=$("$EDGELLM" run "${BASE[@]}" --lora "$T/pirate.gguf:0.7" --lora "$T/full.gguf:0.5" -p "The dream" -n 60 --temp 0 -t 1 \
  --split 1,3 --via tcp://127.0.0.1:$p1 --insecure 2>/dev/null)
expect_eq "two adapters over a chain" "$got" "$two"
[ "$two" != "$out" ] && pass || fail "the second adapter changed nothing"
grep -q "adapter 2 with 14 matrices here" "$T/ledge.log" && grep -q "adapter 2 with 7 matrices here" "$T/lcloud.log" \
  && pass || fail "chain logs: $(grep adapter "$T/ledge.log" "$T/lcloud.log")"
kill $last_pid $cloud_pid; wait $last_pid $cloud_pid 2>/dev/null
# an adapter counts against the worker's memory budget (with the KV blocks):
# room for a KV block (2 layers x 16 positions x 64 x 2 x 4 bytes) but not
# for the adapter's half (78080 bytes)
port=$(free_port)
start_worker "$T/lsmall.log" -m "$MODELS/aidreams260K.bin" --layers 2:4 --listen tcp://127.0.0.1:$port --insecure -t 1 \
  --max-kv 40K --client-mem 40K || fail "small worker"
expect_error "memory budget exhausted (0 of 40960 bytes in use, 78080 needed)" "$EDGELLM" run "${BASE[@]}" --lora "$T/pirate.gguf" \
  -p "The dream" -n 10 --temp 0 -t 1 --split 2 --via tcp://127.0.0.1:$port --insecure
kill $last_pid; wait $last_pid 2>/dev/null
EL_TEST_KILL_AT_STEP=6 "$EDGELLM" finetune "${BASE[@]}" "${common[@]}" -o "$T/other.gguf" 2>/dev/null
expect_error "different --lr" "$EDGELLM" finetune "${BASE[@]}" "${common[@]}" --lr 1e-3 -o "$T/other.gguf" --resume

# ---- Ctrl-C writes a checkpoint after the current step; --resume finishes identically
long=(--data "$DATA/pirate-dreams.txt" --steps 150 --batch 2 --lr 2e-3 -t 2 --seed 4)
"$EDGELLM" finetune "${BASE[@]}" "${long[@]}" -o "$T/int.gguf" 2>"$T/int.err" &
pid=$!
for _ in $(seq 1 100); do grep -q "steps" "$T/int.err" 2>/dev/null && break; sleep 0.05; done
sleep 0.3
kill -INT $pid
wait $pid
expect_eq "exit status after Ctrl-C" "$?" "130"
if grep -q "interrupted at step" "$T/int.err" && [ -f "$T/int.gguf.ckpt" ]; then
  pass
  "$EDGELLM" finetune "${BASE[@]}" "${long[@]}" -o "$T/int.gguf" --resume 2>/dev/null || fail "resume after Ctrl-C"
  "$EDGELLM" finetune "${BASE[@]}" "${long[@]}" -o "$T/int-full.gguf" 2>/dev/null || fail "uninterrupted long run"
  cmp -s "$T/int.gguf" "$T/int-full.gguf" && pass || fail "adapter after Ctrl-C + resume differs"
  [ -f "$T/int.gguf.ckpt" ] && fail "checkpoint left after the run completed" || pass
else
  fail "no checkpoint after Ctrl-C: $(tail -2 "$T/int.err")"
fi

# ---- completion-only jsonl
"$EDGELLM" finetune "${BASE[@]}" --data "$DATA/pirate-dreams.jsonl" --steps 20 --batch 8 --lr 3e-3 -t 2 \
  -o "$T/jl.gguf" 2>"$T/jl.err" || fail "jsonl finetune: $(tail -2 "$T/jl.err")"
grep -q "60 train samples" "$T/jl.err" && pass || fail "jsonl sample count: $(head -1 "$T/jl.err")"

# ---- QLoRA-style: a frozen f16 base
"$EDGELLM" synth --dim 64 --layers 2 --heads 4 --kv-heads 2 --ff 128 --vocab 512 --ctx 64 --type f16 \
  -o "$T/f16.gguf" 2>/dev/null
"$EDGELLM" finetune -m "$T/f16.gguf" --data "$DATA/pirate-dreams.txt" --val "$DATA/pirate-dreams-val.txt" \
  --steps 30 --batch 4 --ctx 64 --lr 1e-2 -t 2 -o "$T/f16-lora.gguf" 2>"$T/f16.err" || fail "f16 finetune: $(tail -2 "$T/f16.err")"
line=$(grep "^validation loss" "$T/f16.err")
grep -q "(-" <<<"$line" && pass || fail "f16 base: validation loss did not fall: $line"

# ---- QLoRA on a q8_0 base (when this build can quantize)
if "$EDGELLM" quantize --help >/dev/null 2>&1; then
  "$EDGELLM" quantize "$T/aid.gguf" "$T/aid-q8_0.gguf" q8_0 2>/dev/null || fail "quantize q8_0"
  "$EDGELLM" finetune -m "$T/aid-q8_0.gguf" --data "$DATA/pirate-dreams.txt" --val "$DATA/pirate-dreams-val.txt" \
    --epochs 4 --batch 8 --lr 3e-3 -t 2 -o "$T/pirate-q8.gguf" 2>"$T/q8.err" || fail "q8_0 finetune: $(tail -2 "$T/q8.err")"
  line=$(grep "^validation loss" "$T/q8.err")
  read -r before after <<<"$(echo "$line" | sed -E 's/validation loss ([0-9.]+) -> ([0-9.]+).*/\1 \2/')"
  python3 -c "import sys; b,a=float(sys.argv[1]),float(sys.argv[2]); sys.exit(0 if a < 0.7*b else 1)" "$before" "$after" \
    && pass || fail "q8_0 base: validation loss did not fall by 30%: $line"
  out=$("$EDGELLM" run -m "$T/aid-q8_0.gguf" --lora "$T/pirate-q8.gguf" -p "The dream" -n 60 --temp 0 -t 1)
  if grep -Eq "matey|arr|o' |Aye|anchor|ship" <<<"$out"; then pass; else fail "q8_0: no pirate style: $out"; fi
fi

# ---- bad input: one clear line, non-zero exit
printf '{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": 3}\n' >"$T/bad.jsonl"
expect_error "bad.jsonl:2:" "$EDGELLM" finetune "${BASE[@]}" --data "$T/bad.jsonl" -o "$T/x.gguf"
printf '\n\n' >"$T/empty.txt"
expect_error "empty" "$EDGELLM" finetune "${BASE[@]}" --data "$T/empty.txt" -o "$T/x.gguf"
# past the trained context: allowed with a warning, as in every command
"$EDGELLM" finetune "${BASE[@]}" --data "$DATA/pirate-dreams.txt" --ctx 256 --steps 1 -o "$T/x.gguf" 2>"$T/ctx.err" \
  && pass || fail "finetune --ctx 256: $(cat "$T/ctx.err")"
grep -q "warning: context 256 is longer than the 128 positions" "$T/ctx.err" && pass || fail "no context warning: $(cat "$T/ctx.err")"
"$EDGELLM" synth --dim 64 --layers 4 --heads 4 --ff 96 --vocab 512 -o "$T/other-base.gguf" 2>/dev/null
expect_error "blk.0.ffn_gate.weight.lora_a" "$EDGELLM" run -m "$T/other-base.gguf" --lora "$T/pirate.gguf" -p hi -n 2
expect_error "blk.0.ffn_gate.weight.lora_a" "$EDGELLM" export-lora -m "$T/other-base.gguf" --lora "$T/pirate.gguf" -o "$T/x.gguf"
expect_error "not a LoRA adapter" "$EDGELLM" run "${BASE[@]}" --lora "$T/aid.gguf" -p hi -n 2
expect_error "pirate.gguf:x2: cannot open" "$EDGELLM" run "${BASE[@]}" --lora "$T/pirate.gguf:x2" -p hi -n 2
finish
