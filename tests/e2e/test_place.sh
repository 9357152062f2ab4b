#!/usr/bin/env bash
# edgellm place: the three algorithms on a small hand-made instance (two
# fine-tunes sharing a base block fit together only when shared blocks are
# counted once), the JSON output checked exactly, simulated instances, and
# one-line errors for malformed or missing inputs.
source "$(dirname "$0")/lib.sh"

h() { printf '%064x' "$1"; }
blk() { printf '{"name": "%s", "hash": "%s", "bytes": %s}' "$1" "$(h "$2")" "$3"; }
# model NAME ID BLOCKS-JSON: a 1-byte manifest and header of its own
model() { printf '{"name": "%s", "id": "%s", "manifest": %s, "header": %s, "blocks": [%s]}' \
  "$1" "$(h "$2")" "$(blk manifest "$2" 1)" "$(blk header $(($2 + 1)) 1)" "$3"; }
cat >"$T/catalog.json" <<JSON
{"models": [
  $(model A1 10 "$(blk base 1000 100), $(blk a1 1001 10)"),
  $(model A2 20 "$(blk base 1000 100), $(blk a2 1002 10)"),
  $(model C 30 "$(blk c 1003 105)")],
 "shared": [], "total_bytes": 331, "union_bytes": 221}
JSON
echo '[{"name": "s0", "storage_bytes": 125}, {"name": "s1", "storage_bytes": 125}]' >"$T/servers.json"
cat >"$T/users.json" <<'JSON'
[{"name": "u0", "reach": ["s0"], "requests": {"A1": 0.4, "A2": 0.4}},
 {"name": "u1", "reach": ["s1"], "requests": {"C": 0.5, "A1": 0.5}}]
JSON
args=(--catalog "$T/catalog.json" --servers "$T/servers.json" --users "$T/users.json")

for algo in trim independent exact; do
  "$EDGELLM" place "${args[@]}" --algo $algo --json >"$T/$algo.json" 2>"$T/$algo.err" || fail "place --algo $algo: $(cat "$T/$algo.err")"
done
python3 - "$T" <<'PY' && pass || fail "place JSON"
import json, sys
t = sys.argv[1]
out = {a: json.load(open(f"{t}/{a}.json")) for a in ("trim", "independent", "exact")}
for a, o in out.items():
    assert set(o) == {"placement", "hit_ratio", "bytes_used"}, o
assert out["trim"]["placement"] == {"s0": ["A1", "A2"], "s1": ["C"]}, out["trim"]
assert out["trim"]["bytes_used"] == {"s0": 124, "s1": 107}, out["trim"]
# exact: C or A1 on s1 serve 0.5 alike
x = out["exact"]
assert x["placement"]["s0"] == ["A1", "A2"] and x["placement"]["s1"] in (["C"], ["A1"]), x
assert x["bytes_used"]["s0"] == 124 and x["bytes_used"]["s1"] == {"C": 107, "A1": 112}[x["placement"]["s1"][0]], x
for a in ("trim", "exact"):
    assert abs(out[a]["hit_ratio"] - 1.3 / 1.8) < 1e-12, out[a]
i = out["independent"]
assert i["placement"] == {"s0": ["A1"], "s1": ["C"]}, i
assert i["bytes_used"] == {"s0": 112, "s1": 107} and abs(i["hit_ratio"] - 0.5) < 1e-12, i
print("trim", out["trim"]["hit_ratio"], "independent", i["hit_ratio"])
PY
# the text table
"$EDGELLM" place "${args[@]}" >"$T/table.txt"
grep -q "^s0 .*124 B  A1, A2$" "$T/table.txt" && grep -q "^hit ratio 0.722222 (trim" "$T/table.txt" && pass || fail "table: $(cat "$T/table.txt")"
"$EDGELLM" place --help | grepq "usage: edgellm place" && pass || fail "place --help"

# simulated instances: trim never below independent, storage respected
python3 - "$EDGELLM" <<'PY' && pass || fail "simulated instances"
import json, subprocess, sys
for spec in ("sharing=0.9,storage=1", "sharing=0.5,storage=2,models=15", "sharing=0,storage=1.5"):
    r = {}
    for a in ("trim", "independent"):
        o = json.loads(subprocess.check_output([sys.argv[1], "place", "--simulate", spec, "--seed", "3", "--algo", a, "--json"]))
        assert len(o["placement"]) == 10 and all(o["bytes_used"][s] >= 0 for s in o["placement"]), o
        r[a] = o["hit_ratio"]
    assert r["trim"] >= r["independent"] - 1e-12, (spec, r)
    print(spec, r)
PY

# bad input: one line naming the file and the value, non-zero exit
echo '{"models": [' >"$T/bad.json"
expect_error "$T/bad.json:2:1:" "$EDGELLM" place --catalog "$T/bad.json" --servers "$T/servers.json" --users "$T/users.json"
expect_error "$T/missing.json: cannot open" "$EDGELLM" place --catalog "$T/missing.json" --servers "$T/servers.json" --users "$T/users.json"
echo '[{"name": "u3", "reach": ["s9"], "requests": {}}]' >"$T/u_bad.json"
expect_error "u_bad.json: user \"u3\": reach names unknown server \"s9\"" "$EDGELLM" place --catalog "$T/catalog.json" --servers "$T/servers.json" --users "$T/u_bad.json"
echo '[{"name": "u3", "reach": ["s0"], "requests": {"A1": 0.7, "C": 0.7}}]' >"$T/u_sum.json"
expect_error "u_sum.json: user \"u3\": request probabilities sum to 1.4, more than 1" "$EDGELLM" place --catalog "$T/catalog.json" --servers "$T/servers.json" --users "$T/u_sum.json"
echo '[{"name": "u3", "reach": ["s0"], "requests": {"A1": -1}}]' >"$T/u_neg.json"
expect_error "probability of model \"A1\" must be a number in [0, 1]" "$EDGELLM" place --catalog "$T/catalog.json" --servers "$T/servers.json" --users "$T/u_neg.json"
echo '[{"name": "s0", "storage_bytes": "lots"}]' >"$T/s_bad.json"
expect_error "s_bad.json: server \"s0\": \"storage_bytes\" must be a whole number" "$EDGELLM" place --catalog "$T/catalog.json" --servers "$T/s_bad.json" --users "$T/users.json"
expect_error "exact: 10 servers x 30 models give" "$EDGELLM" place --simulate storage=2 --algo exact
expect_error "--algo: 'best' is not trim" "$EDGELLM" place "${args[@]}" --algo best
expect_error "--apply needs --keys DIR" "$EDGELLM" place "${args[@]}" --apply tcp://127.0.0.1:7000
expect_error "--keys, --controller-key and --insecure go with --apply" "$EDGELLM" place "${args[@]}" --insecure
# nobody listens there: the error names the controller
nobody=$(free_port)
expect_error "127.0.0.1:$nobody" "$EDGELLM" place "${args[@]}" --apply 127.0.0.1:$nobody --insecure
expect_error "--simulate: unknown key 'colour'" "$EDGELLM" place --simulate colour=3
expect_error "are required" "$EDGELLM" place --catalog "$T/catalog.json"
finish
