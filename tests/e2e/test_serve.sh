#!/usr/bin/env bash
# edgellm serve over HTTP with curl: errors in the OpenAI shape (bad JSON,
# unknown model, over-long prompt, missing key, body too large), concurrent
# requests on mixed adapters give the same greedy text as one at a time and as
# `edgellm run --lora`, streaming equals non-streaming, stop strings, seeds,
# adapters added at run time, a client that never reads, and SIGTERM.
source "$(dirname "$0")/lib.sh"
DATA=${EL_SRC:-$(dirname "$0")/../..}/data/finetune
TOKM=(-m "$MODELS/aidreams260K.bin" -z "$MODELS/tok512.bin")

# ---- command line
"$EDGELLM" serve --help | grepq "v1/chat/completions" && pass || fail "serve --help"
expect_error "-m BASE is required" "$EDGELLM" serve
expect_error "nonexistent.gguf" "$EDGELLM" serve -m "$T/nonexistent.gguf"
expect_error "'nowhere' has no port (HOST:PORT or tcp://HOST:PORT)" "$EDGELLM" serve -m "$MODELS/aidreams260K.bin" --listen nowhere
expect_error "/no/such/dir" "$EDGELLM" serve -m "$MODELS/aidreams260K.bin" -z "$MODELS/tok512.bin" --lora-dir /no/such/dir

# ---- a base and two adapters that change its text
"$EDGELLM" convert "$MODELS/aidreams260K.bin" "$T/aid.gguf" -z "$MODELS/tok512.bin" 2>/dev/null || fail "convert"
mkdir -p "$T/ad"
"$EDGELLM" finetune "${TOKM[@]}" --data "$DATA/pirate-dreams.txt" --steps 20 --batch 8 --lr 3e-3 -t 2 \
  -o "$T/ad/pirate.gguf" 2>/dev/null || fail "finetune pirate"
"$EDGELLM" finetune "${TOKM[@]}" --data "$DATA/pirate-dreams.txt" --steps 10 --rank 2 --targets q,v --lr 1e-2 \
  --seed 3 -t 2 -o "$T/ad/ranger.gguf" 2>/dev/null || fail "finetune ranger"

port=$(free_port)
URL=http://127.0.0.1:$port
"$EDGELLM" serve -m "$T/aid.gguf" --lora-dir "$T/ad" --listen "127.0.0.1:$port" --api-key k1 --api-key k2 \
  --slots 8 --max-body 4096 -t 2 2>"$T/serve.log" &
spid=$!
bg_pids+=("$spid")
for _ in $(seq 1 200); do curl -sf "$URL/health" >/dev/null 2>&1 && break; sleep 0.05; done
expect_eq "health" "$(curl -s "$URL/health")" '{"status":"ok"}'

AUTH=(-H "Authorization: Bearer k2")
# post PATH BODY: prints "STATUS BODY"
post() { curl -s -o "$T/body" -w '%{http_code}' "${AUTH[@]}" -H 'Content-Type: application/json' "$URL$1" -d "$2"; echo " $(cat "$T/body")"; }
# jq-like field access with python: field JSON PYTHON-EXPR
field() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2"; }

# ---- errors in the OpenAI error shape
out=$(curl -s -w ' %{http_code}' "$URL/v1/models")
expect_eq "no key: status" "${out##* }" "401"
expect_eq "no key: code" "$(field "${out% *}" 'd["error"]["code"]')" "invalid_api_key"
out=$(curl -s -w ' %{http_code}' -H "Authorization: Bearer nope" "$URL/v1/models")
expect_eq "wrong key: status" "${out##* }" "401"
out=$(post /v1/completions '{"model":"aid","prompt":')
expect_eq "bad JSON: status" "${out%% *}" "400"
expect_eq "bad JSON: type" "$(field "${out#* }" 'd["error"]["type"]')" "invalid_request_error"
expect_eq "bad JSON: param" "$(field "${out#* }" 'd["error"]["param"]')" "body"
out=$(post /v1/completions '{"model":"nosuch","prompt":"x"}')
expect_eq "unknown model: status" "${out%% *}" "404"
expect_eq "unknown model: code" "$(field "${out#* }" 'd["error"]["code"]')" "model_not_found"
long=$(python3 -c 'print(" ".join(["dream"] * 300))')
out=$(post /v1/completions "{\"model\":\"aid\",\"prompt\":\"$long\"}")
expect_eq "long prompt: status" "${out%% *}" "400"
expect_eq "long prompt: code" "$(field "${out#* }" 'd["error"]["code"]')" "context_length_exceeded"
out=$(post /v1/completions '{"model":"aid","prompt":"The dream","max_tokens":500}')
expect_eq "max_tokens beyond context: param" "$(field "${out#* }" 'd["error"]["param"]')" "max_tokens"
big=$(python3 -c 'print("x" * 6000)')
out=$(post /v1/completions "{\"model\":\"aid\",\"prompt\":\"$big\"}")
expect_eq "body too large" "${out%% *}" "413"
# no key on a POST: refused before its body is read
expect_eq "POST without key" "$(curl -s -o /dev/null -w '%{http_code}' "$URL/v1/completions" -d '{"model":"aid","prompt":"x"}')" "401"
# no Content-Length (chunked): the cap applies while the body arrives
expect_eq "chunked body too large" "$(curl -s -o /dev/null -w '%{http_code}' "${AUTH[@]}" -H 'Transfer-Encoding: chunked' \
  "$URL/v1/completions" --data-binary "{\"model\":\"aid\",\"prompt\":\"$big\"}")" "413"
out=$(post /v1/completions '{"model":"aid","prompt":"x","temperature":7}')
expect_eq "bad temperature: param" "$(field "${out#* }" 'd["error"]["param"]')" "temperature"
expect_eq "unknown endpoint" "$(curl -s -o /dev/null -w '%{http_code}' "$URL/v2/nothing")" "404"
expect_eq "GET on completions" "$(curl -s -o /dev/null -w '%{http_code}' "${AUTH[@]}" "$URL/v1/completions")" "405"

# ---- models
out=$(curl -s "${AUTH[@]}" "$URL/v1/models")
expect_eq "models" "$(field "$out" '",".join(m["id"] for m in d["data"])')" "aid,pirate,ranger"

# ---- one at a time, then all at once: the same greedy text
# the last prompt (about 90 tokens) is prefilled in two chunks between decode steps
longp="The dream of the sea was long and the ship sailed on through the night while the stars watched over the quiet water and the old captain told stories of storms and treasure"
models=(aid pirate ranger pirate aid ranger pirate)
prompts=("The dream" "The dream" "The dream" "I sail" "Once upon" "Stars" "$longp")
ntok=(30 30 30 30 30 30 20)
for i in "${!models[@]}"; do
  post /v1/completions "{\"model\":\"${models[$i]}\",\"prompt\":\"${prompts[$i]}\",\"max_tokens\":${ntok[$i]},\"temperature\":0}" >"$T/seq$i"
done
mval() { curl -s "${AUTH[@]}" "$URL/metrics" | awk -v k="$1" '$1 == k {print $2}'; }
# All seven at once, from one curl process that opens every connection at
# once (-Z --parallel-immediate). This model decodes a request in a few
# milliseconds, so requests sent by separate processes (curl's start-up is
# slow on a busy machine) could take turns, which CI once saw. A burst whose
# requests shared no decode step is sent again, up to five times.
burst() {
  local args=() i
  for i in "${!models[@]}"; do
    [ "$i" -gt 0 ] && args+=(--next)
    args+=(-s "${AUTH[@]}" -H 'Content-Type: application/json' -o "$T/par$i"
           -d "{\"model\":\"${models[$i]}\",\"prompt\":\"${prompts[$i]}\",\"max_tokens\":${ntok[$i]},\"temperature\":0}"
           "$URL/v1/completions")
  done
  curl -Z --parallel-immediate --parallel-max 16 "${args[@]}"
}
# the requests really shared decode steps (more rows than steps), so the
# equality below is about batching, not about requests that took turns
shared() { python3 -c "import sys; s0,r0,s1,r1=map(float,sys.argv[1:]); sys.exit(0 if r1-r0 > s1-s0 > 0 else 1)" "$@"; }
for attempt in 1 2 3 4 5; do
  steps0=$(mval edgellm_decode_steps_total); rows0=$(mval edgellm_decode_rows_total)
  burst
  steps1=$(mval edgellm_decode_steps_total); rows1=$(mval edgellm_decode_rows_total)
  shared "$steps0" "$rows0" "$steps1" "$rows1" && break
done
echo "burst $attempt: decode steps $steps0 -> $steps1, rows $rows0 -> $rows1"
shared "$steps0" "$rows0" "$steps1" "$rows1" && pass \
  || fail "no decode step held two requests in 5 bursts (last: steps $steps0->$steps1, rows $rows0->$rows1)"
for i in "${!models[@]}"; do
  s=$(field "$(cut -d' ' -f2- "$T/seq$i")" 'd["choices"][0]["text"]')
  p=$(field "$(cat "$T/par$i")" 'd["choices"][0]["text"]')
  expect_eq "batched == alone (${models[$i]}, ${prompts[$i]:0:20})" "$p" "$s"
  [ -n "$s" ] && pass || fail "empty text for ${models[$i]}"
done
t_base=$(field "$(cut -d' ' -f2- "$T/seq0")" 'd["choices"][0]["text"]')
t_pirate=$(field "$(cut -d' ' -f2- "$T/seq1")" 'd["choices"][0]["text"]')
t_ranger=$(field "$(cut -d' ' -f2- "$T/seq2")" 'd["choices"][0]["text"]')
[ "$t_base" != "$t_pirate" ] && [ "$t_base" != "$t_ranger" ] && [ "$t_pirate" != "$t_ranger" ] && pass \
  || fail "adapters do not change the text"
run_text() { "$EDGELLM" run -m "$T/aid.gguf" "$@" -p "The dream" -n 30 --temp 0 -t 1 2>/dev/null; }
expect_eq "base == edgellm run" "The dream$t_base" "$(run_text)"
expect_eq "pirate == edgellm run --lora" "The dream$t_pirate" "$(run_text --lora "$T/ad/pirate.gguf")"
expect_eq "ranger == edgellm run --lora" "The dream$t_ranger" "$(run_text --lora "$T/ad/ranger.gguf")"
t_long=$(field "$(cut -d' ' -f2- "$T/seq6")" 'd["choices"][0]["text"]')
r_long=$("$EDGELLM" run -m "$T/aid.gguf" --lora "$T/ad/pirate.gguf" -p "$longp" -n 20 --temp 0 -t 1 2>/dev/null)
expect_eq "chunked prefill == edgellm run" "$longp$t_long" "$r_long"
expect_eq "long prompt tokens" "$(field "$(cut -d' ' -f2- "$T/seq6")" 'd["usage"]["prompt_tokens"] > 64')" "True"
usage=$(field "$(cut -d' ' -f2- "$T/seq0")" 'd["usage"]["completion_tokens"]')
expect_eq "usage" "$usage" "30"

# ---- streaming carries the same text, then [DONE]
curl -sN "${AUTH[@]}" "$URL/v1/completions" \
  -d '{"model":"pirate","prompt":"The dream","max_tokens":30,"temperature":0,"stream":true}' >"$T/sse"
st=$(python3 -c '
import json,sys
text=""; fin=None; lines=[l for l in open(sys.argv[1]).read().split("\n") if l.startswith("data: ")]
for l in lines[:-1]:
    c=json.loads(l[6:])["choices"][0]; text+=c["text"]; fin=c["finish_reason"] or fin
print(json.dumps([text, fin, lines[-1]]))' "$T/sse")
expect_eq "stream text" "$(field "$st" 'd[0]')" "$t_pirate"
expect_eq "stream finish" "$(field "$st" 'd[1]')" "length"
expect_eq "stream end" "$(field "$st" 'd[2]')" "data: [DONE]"

# ---- stop strings, seeds
stop=$(python3 -c 'import sys; t=sys.argv[1]; print(t[3:7])' "$t_base")
out=$(post /v1/completions "{\"model\":\"aid\",\"prompt\":\"The dream\",\"max_tokens\":30,\"temperature\":0,\"stop\":[\"zzz\",\"$stop\"]}")
expect_eq "stop text" "$(field "${out#* }" 'd["choices"][0]["text"]')" "${t_base%%"$stop"*}"
expect_eq "stop reason" "$(field "${out#* }" 'd["choices"][0]["finish_reason"]')" "stop"
a=$(post /v1/completions '{"model":"ranger","prompt":"I","max_tokens":25,"temperature":0.9,"seed":77}')
b=$(post /v1/completions '{"model":"ranger","prompt":"I","max_tokens":25,"temperature":0.9,"seed":77}')
expect_eq "same seed, same text" "$(field "${a#* }" 'd["choices"][0]["text"]')" "$(field "${b#* }" 'd["choices"][0]["text"]')"

# ---- chat
out=$(post /v1/chat/completions '{"model":"pirate","messages":[{"role":"user","content":"Ahoy"}],"max_tokens":8,"temperature":0}')
expect_eq "chat status" "${out%% *}" "200"
expect_eq "chat role" "$(field "${out#* }" 'd["choices"][0]["message"]["role"]')" "assistant"
expect_eq "chat object" "$(field "${out#* }" 'd["object"]')" "chat.completion"

# ---- adapters added and removed at run time
cp "$T/ad/ranger.gguf" "$T/ad/late.gguf"
out=$(post /v1/completions '{"model":"late","prompt":"The dream","max_tokens":30,"temperature":0}')
expect_eq "dropped-in adapter" "$(field "${out#* }" 'd["choices"][0]["text"]')" "$t_ranger"
rm "$T/ad/late.gguf"
out=$(post /v1/completions '{"model":"late","prompt":"The dream","max_tokens":5}')
expect_eq "removed adapter" "${out%% *}" "404"
out=$(post /v1/adapters "{\"name\":\"captain\",\"path\":\"$T/ad/pirate.gguf\"}")
expect_eq "POST /v1/adapters" "${out%% *}" "200"
out=$(post /v1/completions '{"model":"captain","prompt":"The dream","max_tokens":30,"temperature":0}')
expect_eq "registered adapter" "$(field "${out#* }" 'd["choices"][0]["text"]')" "$t_pirate"
out=$(post /v1/adapters '{"name":"bad","path":"/no/such.gguf"}')
expect_eq "POST /v1/adapters bad path" "${out%% *}" "400"

# ---- a client that never reads its stream holds up nobody
python3 - "$port" <<'PY' &
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
body = b'{"model":"aid","prompt":"The dream","max_tokens":100,"stream":true}'
s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k1\r\nContent-Type: application/json\r\n"
          b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
time.sleep(8)
PY
slow=$!
sleep 0.3
out=$(post /v1/completions '{"model":"pirate","prompt":"The dream","max_tokens":30,"temperature":0}')
expect_eq "served beside a stalled client" "$(field "${out#* }" 'd["choices"][0]["text"]')" "$t_pirate"
kill "$slow" 2>/dev/null; wait "$slow" 2>/dev/null

# ---- metrics
m=$(curl -s "$URL/metrics")
grep -q '^edgellm_requests_total{result="ok"} [1-9]' <<<"$m" && pass || fail "metrics: requests"
grep -q '^edgellm_adapter_cache_hits_total [1-9]' <<<"$m" && pass || fail "metrics: adapter hits"
grep -q '^edgellm_completion_tokens_total [1-9]' <<<"$m" && pass || fail "metrics: tokens"
rows=$(sed -n 's/^edgellm_decode_rows_total //p' <<<"$m"); steps=$(sed -n 's/^edgellm_decode_steps_total //p' <<<"$m")
echo "mean decode batch: $rows rows / $steps steps"

# ---- SIGTERM: exit 0
kill -TERM "$spid"
wait "$spid"
expect_eq "exit status after SIGTERM" "$?" "0"
grep -q "serve: stopping" "$T/serve.log" && pass || fail "no stopping line: $(tail -2 "$T/serve.log")"
finish
