# Helpers for the end-to-end tests. Each test sources this file; ctest passes
# EDGELLM (the binary), EL_SHARED (the shared/ folder) and EL_TMP.
set -uo pipefail
: "${EDGELLM:?EDGELLM must point at the edgellm binary}"
: "${EL_SHARED:?EL_SHARED must point at the shared folder}"
MODELS=$EL_SHARED/models
REF=$MODELS/reference
T=$(mktemp -d "${EL_TMP:-/tmp}/e2e.XXXXXX" 2>/dev/null || mktemp -d)
trap 'rm -rf "$T"' EXIT
failures=0
checks=0

pass() { checks=$((checks + 1)); }
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
