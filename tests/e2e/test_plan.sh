#!/usr/bin/env bash
# The planner: profiles, link probes, ranked plans, the device-memory budget,
# and --split auto moving the cut when the emulated link changes while the
# generated text stays exactly the local text.
source "$(dirname "$0")/lib.sh"
# --split auto caches the profile it measures (per model and thread count) under $XDG_CACHE_HOME:
# this test's own, so that one slow measurement on a loaded machine is not reused by later runs
export XDG_CACHE_HOME=$T/cache

"$EDGELLM" synth --dim 512 --layers 8 --heads 8 --kv-heads 4 --ff 1536 --vocab 4096 --ctx 512 --seed 4 \
  -o "$T/m.gguf" 2>/dev/null || fail "synth"
"$EDGELLM" profile -m "$T/m.gguf" -t 1 --ctx 16,64,128 --reps 3 -o "$T/node.json" 2>"$T/profile.err" || fail "profile: $(cat "$T/profile.err")"
grep -q "profile: 12/12 sweeps" "$T/profile.err" && pass || fail "profile progress line"
python3 - "$T/node.json" <<'PY' && pass || fail "profile content"
import json, sys
p = json.load(open(sys.argv[1]))
assert p["format"] == "edgellm-profile-1" and p["n_layers"] == 8 and p["dim"] == 512 and p["vocab"] == 4096
assert p["decode_ctx"] == [16, 64, 128] and len(p["layers"]) == 8
assert all(l["weight_bytes"] == (2 * 512 + 512 * 512 * 2 + 2 * 512 * 256 + 3 * 512 * 1536) * 4 for l in p["layers"]), p["layers"][0]
assert all(0 < d < 1 for l in p["layers"] for d in l["decode_s"]) and p["kv_bytes_per_pos_per_layer"] == 2 * 256 * 4
PY

# plan: a fast link offloads everything, a slow one keeps everything on a 4x slower device (rtt
# 200 ms: under a loaded machine the profile's layers ran up to ~2x slower, and at 40 ms the
# slow link then lost to them: the choice flipped to the edge once, 2026-12-07)
python3 - "$T/node.json" "$T/slow.json" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
for l in p["layers"]:
    l["prefill_s_per_token"] *= 4; l["decode_s"] = [d * 4 for d in l["decode_s"]]
p["embed_s"] *= 4; p["head_s"] *= 4
json.dump(p, open(sys.argv[2], "w"))
PY
fast=$("$EDGELLM" plan --device "$T/slow.json" --edge "$T/node.json" --rate 1gbit --rtt 0.2ms --json)
slow=$("$EDGELLM" plan --device "$T/slow.json" --edge "$T/node.json" --rate-up 8mbit --rate-down 25mbit --rtt 200ms --json)
expect_eq "fast link: chosen cut" "$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['plans'][0]['cut'])" "$fast")" 0
expect_eq "slow link: chosen cut" "$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['plans'][0]['cut'])" "$slow")" 8
# the memory budget: embedding (8 MiB) + head + 3 layers of 12.3 MiB fit in 48 MiB, 4 do not
mem=$("$EDGELLM" plan --device "$T/slow.json" --edge "$T/node.json" --rate-up 8mbit --rate-down 25mbit --rtt 200ms --device-mem 48M --json)
python3 - "$mem" <<'PY' && pass || fail "device memory budget not honoured"
import json, sys
plans = json.loads(sys.argv[1])["plans"]
best = plans[0]
assert best["fits"] and best["cut"] <= 3, best
assert all(p["cut"] <= 3 for p in plans if p["fits"]), [p for p in plans if p["fits"] and p["cut"] > 3]
assert all(not p["fits"] for p in plans if p["cut"] > 3)
print("with 48 MiB the chosen cut is", best["cut"])
PY
# speculative decoding on the chosen plan (the fast link: cut 0), by the cost model of run --draft-k auto:
# a round of k costs k drafts plus the one-row latency plus k extra rows
spec=$("$EDGELLM" plan --device "$T/slow.json" --edge "$T/node.json" --rate 1gbit --rtt 0.2ms --json \
  --draft-alpha 0.9 --draft-ms 0.01)
python3 - "$spec" <<'PY' && pass || fail "plan --draft-alpha: $spec"
import json, sys
d = json.loads(sys.argv[1])
s, best = d["speculative"], d["plans"][0]
a, t_d, fixed, row = s["alpha"], s["draft_ms"], s["verify_fixed_ms"], s["verify_row_ms"]
assert abs(fixed + row - best["decode_ms"]) < 1e-3, (fixed, row, best["decode_ms"])
assert abs(t_d - 0.01) < 1e-9
tps = [(k["k"], k["tokens_per_s"]) for k in s["k"]]
for k, v in tps:
    want = (1 - a ** (k + 1)) / (1 - a) / ((k * t_d + fixed + row * (k + 1)) / 1e3)
    assert abs(v - want) < 1e-3 * want, (k, v, want)
assert s["best_k"] == max(tps, key=lambda kv: kv[1])[0]
PY
expect_error "--draft-alpha needs one of" "$EDGELLM" plan --device "$T/slow.json" --edge "$T/node.json" --rate 1gbit --rtt 1ms --draft-alpha 0.5
"$EDGELLM" plan --device "$T/slow.json" --edge "$T/node.json" --rate 100mbit --rtt 10ms --act all --ushape --svg "$T/plan.svg" >"$T/plan.txt"
grep -q "<- chosen" "$T/plan.txt" && grep -q "<svg" "$T/plan.svg" && grep -q "chosen: K=" "$T/plan.svg" && pass || fail "plan table/svg"
expect_error "\"layers\" must list 8 layers" "$EDGELLM" plan --device <(echo '{"format":"edgellm-profile-1","n_layers":8,"dim":512,"vocab":4096,"threads":1,"prefill_batch":1,"embed_s":0,"head_s":0,"decode_ctx":[16],"layers":[]}') --edge "$T/node.json" --rate 1mbit --rtt 1ms
expect_error ":1:1: unexpected character" "$EDGELLM" plan --device <(echo 'nonsense') --edge "$T/node.json" --rate 1mbit --rtt 1ms

# probe through the emulator: 10 ms each way, 5 Mbit/s (the probe grows its bulk messages from
# 64 KiB until one takes 30 ms more than a round trip: at 20 Mbit/s 64 KiB takes 26 ms, so a few ms
# of scheduling decided whether it stopped there, reading <= 17.5 Mbit/s; at 5 Mbit/s it takes 105 ms)
wport=$(free_port); eport=$(free_port); cport=$(free_port)
start_worker "$T/w.log" -m "$T/m.gguf" --layers 0: --listen tcp://127.0.0.1:$wport --insecure -t 1 || fail "worker"
"$EDGELLM" linkemu --listen tcp://127.0.0.1:$eport --forward tcp://127.0.0.1:$wport --rate 5mbit --delay 10ms \
  --control tcp://127.0.0.1:$cport 2>"$T/emu.log" &
bg_pids+=($!)
# (it logs its control port once both ports listen)
for _ in $(seq 1 100); do grep -q "control on" "$T/emu.log" && break; sleep 0.05; done
grep -q "control on" "$T/emu.log" || fail "emulator did not start: $(cat "$T/emu.log")"
probe=$("$EDGELLM" probe --via tcp://127.0.0.1:$eport --insecure --act-bytes 1024 --json)
echo "probe: $probe"
python3 - "$probe" <<'PY' && pass || fail "probe figures off: $probe"
import json, sys
p = json.loads(sys.argv[1])
assert abs(p["rtt_ms"] - 20) < 4, p
assert abs(p["up_mbit"] - 5) < 1 and abs(p["down_mbit"] - 5) < 1, p
PY

# --split auto on a device 4x slower than the edge: offload while the link is a LAN,
# take everything back when it becomes LTE; the text is the local text
printf 'profile lan\n' | python3 -c "import socket,sys; s=socket.create_connection(('127.0.0.1',$cport)); s.sendall(sys.stdin.buffer.read()); s.recv(4096)"
"$EDGELLM" run -m "$T/m.gguf" -p "abc" -n 160 --ignore-eos --temp 0 -t 1 >"$T/local.txt"
"$EDGELLM" run -m "$T/m.gguf" -p "abc" -n 160 --ignore-eos --temp 0 -t 1 --split auto --via tcp://127.0.0.1:$eport --insecure \
  --device-slowdown 4 --replan-every 16 >"$T/auto.txt" 2>"$T/auto.err" &
dev=$!
# (it first measures its profile: no cache, see XDG_CACHE_HOME above)
for _ in $(seq 1 600); do grep -q "choosing cut" "$T/auto.err" && break; kill -0 $dev 2>/dev/null || break; sleep 0.1; done
grep -q "choosing cut" "$T/auto.err" || fail "no cut chosen within 60 s: $(tail -3 "$T/auto.err")"
# two re-plans on the LAN (32 tokens at cut 0, about what a fixed second gave on an idle machine)
# before the link slows: a loaded machine may not have come that far in a second, a fast one could
# be through much of the 160 tokens
for _ in $(seq 1 300); do
  [ "$(grep -c "edgellm: link rtt" "$T/auto.err")" -ge 3 ] && break
  kill -0 $dev 2>/dev/null || break
  sleep 0.1
done
printf 'profile lte\n' | python3 -c "import socket,sys; s=socket.create_connection(('127.0.0.1',$cport)); s.sendall(sys.stdin.buffer.read()); s.recv(4096)"
wait $dev || fail "auto run failed: $(cat "$T/auto.err")"
cat "$T/auto.err" | grep -E "choosing|moving" >&2
grep -q "choosing cut 8 (all local) -> 0" "$T/auto.err" && pass || fail "did not offload on the LAN"
grep -q "moving cut 0 -> 8" "$T/auto.err" && pass || fail "did not move the cut when the link slowed"
cmp -s "$T/local.txt" "$T/auto.txt" && pass || fail "text changed when the cut moved"
finish
