#!/usr/bin/env bash
# The real `openai` npm client (pinned in tests/e2e/openai, installed by
# scripts/setup) against edgellm serve: model listing, completions, chat,
# streaming of both, and error classes. Expected texts come from edgellm run.
source "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
DATA=${EL_SRC:-$HERE/../..}/data/finetune
if [ ! -f "$HERE/openai/node_modules/openai/package.json" ]; then
  echo "FAIL: $HERE/openai/node_modules is missing (run scripts/setup)" >&2
  exit 1
fi

"$EDGELLM" convert "$MODELS/aidreams260K.bin" "$T/aid.gguf" -z "$MODELS/tok512.bin" 2>/dev/null || fail "convert"
mkdir -p "$T/ad"
"$EDGELLM" finetune -m "$MODELS/aidreams260K.bin" -z "$MODELS/tok512.bin" --data "$DATA/pirate-dreams.txt" \
  --steps 20 --batch 8 --lr 3e-3 -t 2 -o "$T/ad/pirate.gguf" 2>/dev/null || fail "finetune"

# expected texts, computed without the server
pirate=$("$EDGELLM" run -m "$T/aid.gguf" --lora "$T/ad/pirate.gguf" -p "The dream" -n 30 --temp 0 -t 1 2>/dev/null)
# the model has no chat template, so the server uses ChatML
chat_prompt=$'<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n'
chat=$("$EDGELLM" run -m "$T/aid.gguf" -p "$chat_prompt" -n 8 --temp 0 -t 1 2>/dev/null; echo x)
chat=${chat%x}; chat=${chat%$'\n'}  # keep the model's newlines, drop the one run adds

port=$(free_port)
"$EDGELLM" serve -m "$T/aid.gguf" --lora-dir "$T/ad" --listen "127.0.0.1:$port" --api-key k1 -t 2 -q 2>"$T/serve.log" &
spid=$!
bg_pids+=("$spid")
for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.05; done

SERVE_URL=http://127.0.0.1:$port EXPECT_PIRATE="${pirate#The dream}" EXPECT_CHAT="${chat#"$chat_prompt"}" \
  node "$HERE/openai/client_test.mjs" && pass || fail "openai client checks"
kill -TERM "$spid"
wait "$spid"
expect_eq "exit status after SIGTERM" "$?" "0"
finish
