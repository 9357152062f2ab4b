#!/usr/bin/env bash
# A non-streaming client that hangs up is cancelled: its slot and compute go
# to others instead of generating the whole answer for nobody.
source "$(dirname "$0")/lib.sh"

# slow enough (about 10 ms a token) that 800 tokens take seconds
"$EDGELLM" synth --dim 1024 --layers 8 --heads 16 --ff 2048 --vocab 512 --ctx 1024 --type f16 -o "$T/slow.gguf" \
  2>/dev/null || fail "synth"
port=$(free_port)
"$EDGELLM" serve -m "$T/slow.gguf" --model-id slow --listen "127.0.0.1:$port" -t 2 2>"$T/serve.log" &
pid=$!
bg_pids+=("$pid")
for _ in $(seq 1 400); do grep -q listening "$T/serve.log" && break; sleep 0.05; done
grep -q listening "$T/serve.log" || fail "serve did not listen within 20 s: $(tail -2 "$T/serve.log")"

python3 - "$port" >"$T/out" <<'PY'
import json, socket, sys, time, urllib.request
port = int(sys.argv[1])
body = json.dumps({"model": "slow", "prompt": "abc def", "max_tokens": 800, "temperature": 0}).encode()
for _ in range(3):  # ask, then hang up at once
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body)
    time.sleep(0.2)
    s.close()
for _ in range(100):  # until the server has given up on all three
    m = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port).read().decode()
    v = {l.split()[0]: float(l.split()[1]) for l in m.splitlines() if l and not l.startswith("#")}
    if v['edgellm_requests_total{result="failed"}'] + v['edgellm_requests_total{result="ok"}'] >= 3:
        break
    time.sleep(0.1)
print(int(v['edgellm_requests_total{result="failed"}']), int(v['edgellm_requests_total{result="ok"}']),
      int(v["edgellm_completion_tokens_total"]))
PY
read -r failed ok tokens <"$T/out"
expect_eq "requests cancelled" "$failed" "3"
expect_eq "requests completed" "$ok" "0"
[ "${tokens:-2400}" -lt 1200 ] && pass || fail "generated $tokens tokens for clients that had gone (3 x 800 if never cancelled)"
kill -TERM "$pid"; wait "$pid"
expect_eq "exit status after SIGTERM" "$?" "0"
finish
