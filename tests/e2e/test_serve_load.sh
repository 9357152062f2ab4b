#!/usr/bin/env bash
# Load: 64 concurrent streaming clients for about 20 s on loopback. No request
# may fail, resident memory must not grow between the start and the end of
# the steady phase (sampled from /proc), and SIGTERM in the middle of a second
# burst must end the server with exit status 0.
source "$(dirname "$0")/lib.sh"
SRC=${EL_SRC:-$(dirname "$0")/../..}
"$EDGELLM" convert "$MODELS/aidreams260K.bin" "$T/aid.gguf" -z "$MODELS/tok512.bin" 2>/dev/null || fail "convert"
mkdir -p "$T/ad"
"$EDGELLM" finetune -m "$MODELS/aidreams260K.bin" -z "$MODELS/tok512.bin" --data "$SRC/data/finetune/pirate-dreams.txt" \
  --steps 2 --rank 4 --lr 1e-2 -t 2 -o "$T/ad/pirate.gguf" 2>/dev/null || fail "finetune"
port=$(free_port)
"$EDGELLM" serve -m "$T/aid.gguf" --lora-dir "$T/ad" --slots 64 --listen "127.0.0.1:$port" -t 2 -q 2>"$T/serve.log" &
spid=$!
bg_pids+=("$spid")
for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.05; done
rss() { awk '/^VmRSS/ {print $2}' "/proc/$spid/status"; }  # KiB

client=(node "$SRC/bench/serve_client.mjs" --url "http://127.0.0.1:$port" --clients 64 --stream 1 --max-tokens 48
        --models aid,pirate --prompt "The dream")
"${client[@]}" --seconds 20 >"$T/load.json" &
cpid=$!
sleep 5
rss_start=$(rss)
sleep 13
rss_end=$(rss)
wait "$cpid"
cat "$T/load.json"
read -r ok failed tokens <<<"$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["requests"], d["failed"], d["tokens"])' "$T/load.json")"
expect_eq "failed requests under load" "$failed" "0"
[ "${ok:-0}" -ge 64 ] && pass || fail "only $ok requests finished"
[ "${tokens:-0}" -gt 0 ] && pass || fail "no tokens"
echo "RSS at the start and end of the steady phase: $rss_start KiB, $rss_end KiB"
# stable: no more than 2 MiB or 5% more (allocator noise), whichever is larger
python3 -c 'import sys; a,b=map(int,sys.argv[1:]); sys.exit(0 if b <= a + max(2048, a*0.05) else 1)' "$rss_start" "$rss_end" \
  && pass || fail "RSS grew from $rss_start to $rss_end KiB"

# SIGTERM while 64 streams are running: exit 0, streams end
"${client[@]}" --seconds 10 >"$T/cut.json" &
cpid=$!
sleep 2
kill -TERM "$spid"
wait "$spid"
expect_eq "exit status after SIGTERM under load" "$?" "0"
wait "$cpid"
grep -q '"requests"' "$T/cut.json" && pass || fail "client did not finish after the server stopped"
finish
