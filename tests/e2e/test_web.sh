#!/usr/bin/env bash
# The page of `edgellm serve` in Debian's headless Chromium (tests/e2e/browser.py
# drives it through chromedriver): a message gets a streamed reply and the live
# panel counts the request; a wrong API key is reported and no chat request
# runs; markup in a model's id and in generated text shows as text and runs
# nothing; a worker's --http panel shows its figures. The page is embedded in
# the binary and loads nothing from elsewhere.
source "$(dirname "$0")/lib.sh"
BIN=$MODELS/aidreams260K.bin
TOK=$MODELS/tok512.bin
PY="python3 $(dirname "$0")/browser.py"
command -v chromium >/dev/null && command -v chromedriver >/dev/null ||
  { fail "chromium and chromedriver are missing (run scripts/setup)"; finish; }

# start_serve LOG ARGS...: edgellm serve ARGS on a free port; sets $url and $spid
start_serve() {
  local log=$1; shift
  "$EDGELLM" serve "$@" --listen 127.0.0.1:0 -q -t 1 2>"$log" &
  spid=$!
  bg_pids+=("$spid")
  for _ in $(seq 1 200); do grep -q "listening on" "$log" && break; sleep 0.05; done
  url=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$log")
}
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])$2)" "$1"; }
metric() { curl -s "$url/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }

start_serve "$T/serve.log" -m "$BIN" -z "$TOK" --template llama2 --api-key secret
[ -n "$url" ] || { fail "serve did not start: $(cat "$T/serve.log")"; finish; }
# the page and its files, with a policy that allows no inline script and nothing from elsewhere
curl -s -D "$T/h" "$url/" -o "$T/index.html"
grep -qi "^content-type: text/html" "$T/h" && grep -qi "^content-security-policy: default-src 'none'; script-src 'self'" "$T/h" &&
  pass || fail "the page's headers: $(cat "$T/h")"
for f in app.js app.css; do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/$f")" = 200 ] && pass || fail "/$f"
done
cat "$T/index.html" <(curl -s "$url/app.js") <(curl -s "$url/app.css") | grep -Eq "https?://" &&
  fail "the page refers to another site" || pass

# ---- a message, a streamed reply, the panel counts it
want=$(curl -s "$url/v1/chat/completions" -H 'Authorization: Bearer secret' \
  -d '{"model":"aidreams260K","messages":[{"role":"user","content":"Tell me a dream"}],"max_tokens":24,"temperature":0}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["choices"][0]["message"]["content"])')
out=$($PY "$url/" chat --key secret --screenshot "$T/chat.png") || fail "browser chat: $out"
expect_eq "reply streamed into the page" "$(field "$out" '["reply"]')" "$want"
[ -n "$want" ] && pass || fail "the reply is empty"
grep -q "24 tokens in" <<<"$(field "$out" '["stats"]')" && pass || fail "reply stats: $out"
[ "$(field "$out" '["panel_requests"]')" -gt "$(field "$out" '["panel_before"]')" ] && pass ||
  fail "the panel did not count the request: $out"
[ "$(field "$out" '["screenshot_bytes"]')" -gt 10000 ] && pass || fail "no screenshot: $out"
if [ -n "${EL_WEB_SCREENSHOT:-}" ]; then cp "$T/chat.png" "$EL_WEB_SCREENSHOT"; fi

# ---- a wrong key: a clear error, and no chat request runs
before="$(metric 'edgellm_requests_total{result="ok"}') $(metric 'edgellm_completion_tokens_total')"
out=$($PY "$url/" badkey --key wrong) || fail "browser badkey: $out"
grep -q "The API key was refused (401" <<<"$(field "$out" '["notice"]')" && pass || fail "no key error shown: $out"
expect_eq "messages shown with a wrong key" "$(field "$out" '["messages"]')" 0
expect_eq "requests run and tokens made with a wrong key" \
  "$(metric 'edgellm_requests_total{result="ok"}') $(metric 'edgellm_completion_tokens_total')" "$before"
kill "$spid"; wait "$spid"

# ---- markup in the model's id and in the generated text stays text
# A tokenizer for aidreams260K whose merged pieces are markup: whatever the
# model generates is HTML and script (the byte tokens stay, for the prompt).
python3 - "$T/evil.bin" <<'PY'
import struct, sys
evil = ['<script>window.__xss=1</script>', '<img src=x onerror="window.__xss=2">', '<b>bold</b>', '&amp;lt;']
toks = [(b"<unk>", 0.0), (b"\n<s>\n", 0.0), (b"\n</s>\n", 0.0)]
toks += [(("<0x%02X>" % i).encode(), 0.0) for i in range(256)]
while len(toks) < 512:
    toks.append((evil[len(toks) % len(evil)].encode() + b" %d" % len(toks), -float(len(toks))))
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<i", max(len(t) for t, _ in toks)))
    for t, s in toks:
        f.write(struct.pack("<fi", s, len(t)) + t)
PY
start_serve "$T/evil.log" -m "$BIN" -z "$T/evil.bin" --template llama2 --model-id '<img src=x onerror=window.__xss=3>dreams'
out=$($PY "$url/" xss --say '<script>window.__xss=4</script>') || fail "browser xss: $out"
grep -q "<script>window.__xss=\|<img src=x onerror\|<b>bold</b>" <<<"$(field "$out" '["reply"]')" && pass ||
  fail "the reply holds no markup (the test shows nothing): $out"
expect_eq "script ran" "$(field "$out" '["xss_ran"]')" False
expect_eq "elements made from the reply" "$(field "$out" '["elements_in_log"]')" 0
expect_eq "elements made from the model id" "$(field "$out" '["elements_in_picker"]')" 0
grep -q "<img src=x onerror=window.__xss=3>dreams  (base)" <<<"$(field "$out" '["models"][0]')" && pass ||
  fail "the model id is not shown as text: $out"
expect_eq "the user's markup shown as text" "$(field "$out" '["user"]')" '<script>window.__xss=4</script>'
kill "$spid"; wait "$spid"

# ---- a worker's read-only panel
p=$(free_port)
"$EDGELLM" worker -m "$BIN" --layers 2:4 --listen "127.0.0.1:$p" --insecure -t 1 --http 127.0.0.1:0 2>"$T/w.log" &
wpid=$!
bg_pids+=("$wpid")
for _ in $(seq 1 200); do grep -q "serving" "$T/w.log" && break; sleep 0.05; done
purl=$(sed -n 's/.*panel on \(http:[^ ]*\)\/.*/\1/p' "$T/w.log")
"$EDGELLM" run -m "$BIN" -z "$TOK" -p "The dream" -n 20 --temp 0 --split 2 --via "127.0.0.1:$p" --insecure >/dev/null 2>&1 ||
  fail "split run against the worker"
curl -s "$purl/metrics" | grepq "^edgellm_worker_requests_total [1-9]" && pass || fail "worker /metrics: $(curl -s "$purl/metrics")"
[ "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$purl/metrics")" = 405 ] && pass || fail "the panel is not read-only"
out=$($PY "$purl/" panel) || fail "browser panel: $out"
[ "$(field "$out" '["requests"]')" -ge 20 ] && pass || fail "panel requests: $out"
expect_eq "chat hidden on a worker's panel" "$(field "$out" '["chat_hidden"]')" True
finish
