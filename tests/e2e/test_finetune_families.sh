#!/usr/bin/env bash
# Fine-tuning every family the layer runs (src/model/layer.c, one definition
# for inference and training): synth qwen2 (neox rope, q/k/v biases, GQA 4)
# and llama3 (Llama 3.1 rope scaling, GQA 2) models learn the shipped pirate
# data (validation loss -30%), their adapters change the greedy text, agree
# with export-lora, record the base's architecture, and split fine-tuning of
# the qwen2 model with f32 on the wire writes the local run's adapter byte for byte.
source "$(dirname "$0")/lib.sh"
DATA=${EL_SRC:-$(dirname "$0")/../..}/data/finetune

"$EDGELLM" synth --dim 64 --layers 3 --heads 4 --kv-heads 1 --ff 128 --vocab 512 --ctx 128 --family qwen2 --seed 1 \
  -o "$T/qwen2.gguf" 2>/dev/null || fail "synth qwen2"
"$EDGELLM" synth --dim 64 --layers 3 --heads 4 --kv-heads 2 --ff 128 --vocab 512 --ctx 128 --family llama3 --seed 1 \
  -o "$T/llama3.gguf" 2>/dev/null || fail "synth llama3"
"$EDGELLM" synth --dim 64 --layers 3 --heads 4 --kv-heads 1 --ff 128 --vocab 512 --ctx 128 --seed 1 \
  -o "$T/llama.gguf" 2>/dev/null || fail "synth llama"
train=(--data "$DATA/pirate-dreams.txt" --steps 60 --batch 4 --ctx 64 --lr 1e-2 -t 2 --seed 2)

for f in qwen2 llama3; do
  M=$T/$f.gguf
  "$EDGELLM" finetune -m "$M" "${train[@]}" --val "$DATA/pirate-dreams-val.txt" -o "$T/$f-lora.gguf" 2>"$T/$f.err" \
    || { fail "$f finetune (exit $?): $(tail -1 "$T/$f.err")"; continue; }
  line=$(grep "^validation loss" "$T/$f.err")
  read -r before after <<<"$(echo "$line" | sed -E 's/validation loss ([0-9.]+) -> ([0-9.]+).*/\1 \2/')"
  python3 -c "import sys; b,a=float(sys.argv[1]),float(sys.argv[2]); sys.exit(0 if a < 0.7*b else 1)" "$before" "$after" \
    && pass || fail "$f: validation loss did not fall by 30%: $line"
  base=$("$EDGELLM" run -m "$M" -p "The dream" -n 40 --temp 0 -t 1 2>/dev/null)
  tuned=$("$EDGELLM" run -m "$M" --lora "$T/$f-lora.gguf" -p "The dream" -n 40 --temp 0 -t 1 2>/dev/null)
  [ -n "$tuned" ] && [ "$tuned" != "$base" ] && pass || fail "$f: --lora did not change the greedy text: $tuned"
  # the adapter learnt the data's words (the base is random)
  grep -Eq "o'|arr|the|and" <<<"$tuned" && pass || fail "$f: the adapter's text has none of the data's words: $tuned"
  zero=$("$EDGELLM" run -m "$M" --lora "$T/$f-lora.gguf:0" -p "The dream" -n 40 --temp 0 -t 1 2>/dev/null)
  expect_eq "$f: scale 0 is the base" "$zero" "$base"
  "$EDGELLM" export-lora -m "$M" --lora "$T/$f-lora.gguf" -o "$T/$f-merged.gguf" 2>/dev/null || fail "$f export-lora"
  merged=$("$EDGELLM" run -m "$T/$f-merged.gguf" -p "The dream" -n 40 --temp 0 -t 1 2>/dev/null)
  expect_eq "$f: export-lora == --lora" "$merged" "$tuned"
done
# QLoRA: a q8_0 qwen2 base (its forward on the packed integer kernels) learns as well
"$EDGELLM" quantize "$T/qwen2.gguf" "$T/qwen2-q8.gguf" q8_0 2>/dev/null || fail "quantize qwen2"
"$EDGELLM" finetune -m "$T/qwen2-q8.gguf" "${train[@]}" --val "$DATA/pirate-dreams-val.txt" -o "$T/q8-lora.gguf" \
  2>"$T/q8.err" || fail "qwen2 q8_0 finetune: $(tail -1 "$T/q8.err")"
line=$(grep "^validation loss" "$T/q8.err")
read -r before after <<<"$(echo "$line" | sed -E 's/validation loss ([0-9.]+) -> ([0-9.]+).*/\1 \2/')"
python3 -c "import sys; b,a=float(sys.argv[1]),float(sys.argv[2]); sys.exit(0 if a < 0.7*b else 1)" "$before" "$after" \
  && pass || fail "qwen2 q8_0: validation loss did not fall by 30%: $line"
# the adapter names its base's architecture (Llama 3's is llama): a llama
# model of the qwen2 model's shapes refuses the qwen2 adapter
expect_error "adapter is for architecture 'qwen2', the model is 'llama'" \
  "$EDGELLM" run -m "$T/llama.gguf" --lora "$T/qwen2-lora.gguf" -p hi -n 2

# ---- split fine-tuning of qwen2, f32 on the wire: the local adapter byte for byte
split=(-m "$T/qwen2.gguf" --data "$DATA/pirate-dreams.txt" --steps 6 --batch 2 --ctx 64 --lr 3e-3 -t 1 --seed 3)
"$EDGELLM" finetune "${split[@]}" -o "$T/local.gguf" 2>"$T/local.err" || fail "qwen2 local: $(tail -1 "$T/local.err")"
port=$(free_port)
start_worker "$T/w.log" -m "$T/qwen2.gguf" --layers 0: --listen tcp://127.0.0.1:$port --insecure -t 1 --train \
  || fail "qwen2 training worker"
for k in 1 2; do
  for u in "" --ushape; do
    "$EDGELLM" finetune "${split[@]}" -o "$T/split$k$u.gguf" --split $k --via tcp://127.0.0.1:$port --insecure \
      --act f32 --grad f32 $u 2>"$T/split$k$u.err" || { fail "qwen2 split $k $u: $(tail -1 "$T/split$k$u.err")"; continue; }
    cmp -s "$T/split$k$u.gguf" "$T/local.gguf" && pass || fail "qwen2 split $k $u adapter differs from the local one"
  done
done
"$EDGELLM" lora-join -m "$T/qwen2.gguf" "$T/split2.device.gguf" "$T/split2.worker.gguf" -o "$T/joined.gguf" 2>/dev/null \
  && cmp -s "$T/joined.gguf" "$T/local.gguf" && pass || fail "qwen2: lora-join does not give the local adapter"
kill $last_pid
wait $last_pid 2>/dev/null
finish
