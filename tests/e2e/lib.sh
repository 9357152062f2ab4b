# Helpers for the end-to-end tests. Each test sources this file; ctest passes
# EDGELLM (the binary), EL_SHARED (the shared/ folder) and EL_TMP.
set -uo pipefail
: "${EDGELLM:?EDGELLM must point at the edgellm binary}"
: "${EL_SHARED:?EL_SHARED must point at the shared folder}"
MODELS=$EL_SHARED/models
REF=$MODELS/reference
T=$(mktemp -d "${EL_TMP:-/tmp}/e2e.XXXXXX" 2>/dev/null || mktemp -d)

failures=0
checks=0

pass() { checks=$((checks + 1)); }

# grepq ARGS...: `grep -q ARGS` that reads its input to the end. Under
# pipefail, `cmd | grep -q` fails when grep exits at its first match and cmd
# then dies of SIGPIPE writing the rest, which depends on timing.
grepq() { grep -q "$@"; local rc=$?; cat >/dev/null; return $rc; }
fail() { checks=$((checks + 1)); failures=$((failures + 1)); echo "FAIL: $*" >&2; }

# expect_error PATTERN CMD...: CMD must exit non-zero, not crash (exit < 128),
# print exactly one line to stderr, and that line must contain PATTERN.
expect_error() {
  local pattern=$1; shift
  "$@" >"$T/out" 2>"$T/err"
  local rc=$?
  local lines
  lines=$(grep -c '' "$T/err")
  if [ $rc -eq 0 ]; then fail "expected failure: $*"; return; fi
  if [ $rc -ge 128 ]; then fail "crashed (exit $rc): $*"; cat "$T/err" >&2; return; fi
  if [ "$lines" -ne 1 ]; then fail "expected one error line, got $lines: $*"; cat "$T/err" >&2; return; fi
  if ! grep -qF -- "$pattern" "$T/err"; then fail "error for '$*' lacks '$pattern': $(cat "$T/err")"; return; fi
  pass
}

# expect_eq WHAT GOT WANT
expect_eq() {
  if [ "$2" == "$3" ]; then pass; else fail "$1: got '$2', want '$3'"; fi
}

finish() {
  echo "$checks checks, $failures failed"
  [ $failures -eq 0 ]
  exit $?
}

# ---- background processes (workers, emulators), all stopped at exit
bg_pids=()
cleanup_bg() {
  for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${bg_pids[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$T"
}
trap cleanup_bg EXIT

# free_port: prints a TCP port nobody listens on right now
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start_worker LOG ARGS...: starts `edgellm worker ARGS` in the background and
# waits until it logs that it is serving. Sets $last_pid.
start_worker() {
  local log=$1; shift
  "$EDGELLM" worker "$@" 2>"$log" &
  last_pid=$!
  bg_pids+=("$last_pid")
  for _ in $(seq 1 200); do
    grep -q "serving" "$log" 2>/dev/null && return 0
    kill -0 "$last_pid" 2>/dev/null || { echo "worker exited: $(cat "$log")" >&2; return 1; }
    sleep 0.05
  done
  echo "worker did not start: $(cat "$log")" >&2
  return 1
}
