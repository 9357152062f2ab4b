#!/usr/bin/env bash
# edgellm linkemu end to end on loopback: the rate each way and a rate change through
# the control port must match the settings within 10%, the delay within -2.5%..+20% one way
# and -1.25%..+17.5% round trip (scheduling only adds time); bad options
# give one error line and exit 2; a refused forward target closes only that
# connection; SIGTERM prints a final stats line and exits 0. Prints what it measured.
source "$(dirname "$0")/lib.sh"
PROBE="$(dirname "$0")/linkemu_probe.py"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT

wait_for() {  # wait_for FILE PATTERN: up to 5 s
  for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  return 1
}

# start_emu NAME ARGS...: runs the emulator on a kernel-chosen port in front of the
# probe server; sets EPID, EPORT and CPORT (the control port, if --control was given).
start_emu() {
  local name=$1; shift
  "$EDGELLM" linkemu --listen tcp://127.0.0.1:0 --forward "tcp://127.0.0.1:$SPORT" "$@" 2>"$T/$name.log" &
  EPID=$!
  pids+=("$EPID")
  wait_for "$T/$name.log" "listening on" || { fail "$name: emulator did not start: $(cat "$T/$name.log")"; return 1; }
  EPORT=$(sed -n 's/.*listening on tcp:\/\/127.0.0.1:\([0-9]*\),.*/\1/p' "$T/$name.log")
  CPORT=$(sed -n 's/.*control on tcp:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$T/$name.log")
}

val() { sed -n "s/^$1 //p" "$2"; }

# within WHAT GOT WANT PERCENT
within() {
  if awk -v g="$2" -v w="$3" -v p="$4" 'BEGIN { d = g - w; if (d < 0) d = -d; exit !(g != "" && d <= w * p / 100) }'; then
    pass
  else
    fail "$1: got '$2', want $3 +-$4%"
  fi
}

# between WHAT GOT LOW HIGH: for a delay, which a loaded machine's scheduling makes only longer
between() {
  if awk -v g="$2" -v lo="$3" -v hi="$4" 'BEGIN { exit !(g != "" && g >= lo && g <= hi) }'; then
    pass
  else
    fail "$1: got '$2', want $3..$4"
  fi
}

# ---- bad options: one line naming the option and the value, exit 2
L="--listen tcp://127.0.0.1:0"
F="--forward tcp://127.0.0.1:9"
expect_error "--rate: 'fast' is not a rate" "$EDGELLM" linkemu $L $F --rate fast
expect_error "--rate: '-5mbit' is not a rate" "$EDGELLM" linkemu $L $F --rate -5mbit
expect_error "--rate: rate '0mbit' is out of range" "$EDGELLM" linkemu $L $F --rate 0mbit
expect_error "--rate: rate '0' is out of range" "$EDGELLM" linkemu $L $F --rate 0
expect_error "--rate-up: '100' has no unit" "$EDGELLM" linkemu $L $F --rate-up 100
expect_error "--delay: '10parsecs': unknown time unit" "$EDGELLM" linkemu $L $F --delay 10parsecs
expect_error "--loss: loss '150%' is out of range" "$EDGELLM" linkemu $L $F --loss 150%
expect_error "--profile: unknown profile '7g'" "$EDGELLM" linkemu $L $F --profile 7g
expect_error "--listen: 'udp://localhost:80' is not an address" "$EDGELLM" linkemu --listen udp://localhost:80 $F
expect_error "--forward: 'tcp://127.0.0.1:99999': port 99999" "$EDGELLM" linkemu $L --forward tcp://127.0.0.1:99999
expect_error "--forward HOST:PORT is required" "$EDGELLM" linkemu $L
expect_error "cannot resolve 'no-such-host.invalid'" "$EDGELLM" linkemu $L --forward tcp://no-such-host.invalid:80
for a in "$EDGELLM linkemu $L $F --rate fast" "$EDGELLM linkemu $L $F --profile 7g"; do
  $a 2>/dev/null; rc=$?
  expect_eq "exit status of '$a'" "$rc" 2
done
"$EDGELLM" linkemu --help | grepq "usage: edgellm linkemu" && pass || fail "linkemu --help"
"$EDGELLM" linkemu --help | grepq "5g-embb  up 50 Mbit/s" && pass || fail "linkemu --help lists the profiles"

# ---- the probe server
python3 "$PROBE" server "$T/server.port" &
pids+=($!)
wait_for "$T/server.port" . || { fail "probe server did not start"; finish; }
SPORT=$(cat "$T/server.port")
expect_error "cannot listen" "$EDGELLM" linkemu --listen "tcp://127.0.0.1:$SPORT" $F

# ---- (a) one-way delay: 20 ms each way, so a round trip of 40 ms
start_emu delay --delay 20ms --stats-every 0.5 --control tcp://127.0.0.1:0
python3 "$PROBE" rtt "$EPORT" 25 >"$T/rtt" || fail "rtt probe"
echo "delay 20ms: rtt $(val rtt_ms "$T/rtt") ms, up $(val up_ms "$T/rtt") ms, down $(val down_ms "$T/rtt") ms (medians of 25)"
# (not +-10%: that leaves 2 ms for a loaded machine's scheduling, which only adds time; a delay
# missing, doubled or applied one way only is still far outside)
between "round trip with --delay 20ms (ms)" "$(val rtt_ms "$T/rtt")" 39.5 47
between "one-way up with --delay 20ms (ms)" "$(val up_ms "$T/rtt")" 19.5 24
between "one-way down with --delay 20ms (ms)" "$(val down_ms "$T/rtt")" 19.5 24

# control port: bad commands get an error line, the emulator keeps going
python3 - "$CPORT" >"$T/ctl" <<'EOF' || fail "control session"
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
f = s.makefile("rb")
for cmd in [b"rate fast", b"frobnicate", b"loss 200%", b"profile lte", b"show", b"stats", b"profile \x1b[2Jlte", b"x" * 600]:
    s.sendall(cmd + b"\n")
    print(f.readline().decode().strip())
EOF
sed -n 1p "$T/ctl" | grepq "^error: rate: 'fast' is not a rate" && pass || fail "control: bad rate: $(sed -n 1p "$T/ctl")"
sed -n 2p "$T/ctl" | grepq "^error: unknown command 'frobnicate'" && pass || fail "control: unknown command: $(sed -n 2p "$T/ctl")"
sed -n 3p "$T/ctl" | grepq "^error: loss: loss '200%' is out of range" && pass || fail "control: bad loss: $(sed -n 3p "$T/ctl")"
sed -n 4p "$T/ctl" | grepq "^ok up 8 Mbit/s delay 20ms jitter 5ms loss 0.01% rto 82ms | down 25 Mbit/s" \
  && pass || fail "control: profile lte: $(sed -n 4p "$T/ctl")"
sed -n 5p "$T/ctl" | grepq "^ok up 8 Mbit/s" && pass || fail "control: show: $(sed -n 5p "$T/ctl")"
sed -n 6p "$T/ctl" | grepq "^ok .* | up 0.00 MB .* pkt 0 lost" && pass || fail "control: stats: $(sed -n 6p "$T/ctl")"
sed -n 7p "$T/ctl" | grepq "^error: command contains control or non-ASCII bytes" && pass || fail "control: escape bytes: $(sed -n 7p "$T/ctl")"
sed -n 8p "$T/ctl" | grepq "^error: line longer than 511 bytes" && pass || fail "control: long line: $(sed -n 8p "$T/ctl")"
grep -q "^linkemu: [0-9.]*s | up .* Mbit/s .* pkt 0 lost | down .* | 1 conns" "$T/delay.log" && pass || fail "periodic stats line: $(cat "$T/delay.log")"

# SIGTERM: final stats line, exit 0 (up: 25 pings, plus the mode byte unless it
# was read together with the first ping)
kill -TERM "$EPID"; wait "$EPID"; rc=$?
expect_eq "exit status after SIGTERM" "$rc" 0
grep -q "final: .* | up 0.00 MB avg .* 2[56] pkt 0 lost | down 0.00 MB avg .* 25 pkt 0 lost | 1 conns (0 open, 0 failed)" \
  "$T/delay.log" && pass || fail "final stats line: $(tail -1 "$T/delay.log")"

# ---- (b) throughput: 3 MB device -> edge at 20 Mbit/s (~1.2 s)
start_emu rate --rate 20mbit
python3 "$PROBE" upload "$EPORT" 3000000 >"$T/up" || fail "upload probe"
echo "rate 20mbit: upload $(val mbit "$T/up") Mbit/s over $(val seconds "$T/up") s"
within "upload at --rate 20mbit (Mbit/s)" "$(val mbit "$T/up")" 20 10
kill -TERM "$EPID"; wait "$EPID"

# ---- asymmetric link: down is edge -> device
start_emu asym --rate-up 40mbit --rate-down 10mbit
python3 "$PROBE" download "$EPORT" 1000000 >"$T/down" || fail "download probe"
python3 "$PROBE" upload "$EPORT" 3000000 >"$T/up2" || fail "upload probe 2"
echo "rate-up 40mbit rate-down 10mbit: download $(val mbit "$T/down") Mbit/s, upload $(val mbit "$T/up2") Mbit/s"
within "download at --rate-down 10mbit (Mbit/s)" "$(val mbit "$T/down")" 10 10
within "upload at --rate-up 40mbit (Mbit/s)" "$(val mbit "$T/up2")" 40 10
kill -TERM "$EPID"; wait "$EPID"

# ---- (c) the control port changes the rate in the middle of a transfer: 2 MB
# leave at 20 Mbit/s in the first 0.8 s, the last ~1 MB at 5 Mbit/s
start_emu switch --rate 20mbit --control tcp://127.0.0.1:0
python3 "$PROBE" switch "$EPORT" "$CPORT" 3000000 0.8 "rate 5mbit" >"$T/sw" || fail "switch probe"
echo "rate 20mbit then 'rate 5mbit' at 0.8 s: before $(val before_mbit "$T/sw") Mbit/s, after $(val after_mbit "$T/sw") Mbit/s" \
  "(over $(val after_seconds "$T/sw") s)"
within "rate before the switch (Mbit/s)" "$(val before_mbit "$T/sw")" 20 10
within "rate after 'rate 5mbit' (Mbit/s)" "$(val after_mbit "$T/sw")" 5 10
val reply "$T/sw" | grepq "^ok up 5 Mbit/s .* | down 5 Mbit/s" && pass || fail "control reply: $(val reply "$T/sw")"
grep -q "control: rate 5mbit -> up 5 Mbit/s" "$T/switch.log" && pass || fail "control change logged"
kill -TERM "$EPID"; wait "$EPID"

# ---- a forward target that refuses: that connection is closed, the emulator runs on
DEAD=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$EDGELLM" linkemu --listen tcp://127.0.0.1:0 --forward "tcp://127.0.0.1:$DEAD" 2>"$T/refused.log" &
EPID=$!
pids+=("$EPID")
wait_for "$T/refused.log" "listening on" || fail "refused: emulator did not start"
EPORT=$(sed -n 's/.*listening on tcp:\/\/127.0.0.1:\([0-9]*\),.*/\1/p' "$T/refused.log")
python3 "$PROBE" refused "$EPORT" | grepq "^closed_s" && pass || fail "refused: the client was not closed"
python3 "$PROBE" refused "$EPORT" | grepq "^closed_s" && pass || fail "refused: second client was not closed"
grep -q "connection 2 from 127.0.0.1:[0-9]*: forward tcp://127.0.0.1:$DEAD: Connection refused; closed" "$T/refused.log" \
  && pass || fail "refused: log line: $(cat "$T/refused.log")"
kill -0 "$EPID" 2>/dev/null && pass || fail "refused: the emulator exited"
kill -TERM "$EPID"; wait "$EPID"; rc=$?
expect_eq "exit status after SIGTERM (refused)" "$rc" 0
grep -q "final: .* 2 conns (0 open, 2 failed)" "$T/refused.log" && pass || fail "refused: final line: $(tail -1 "$T/refused.log")"
finish
