#!/usr/bin/env bash
# Content-addressed blocks end to end: aidreams260K as GGUF, a LoRA-merged
# variant (adapter on the attention projections only) and its q8_0 copy.
# catalog must show exactly the blocks they share and the union's bytes;
# store import must hold each block once; bad input fails with one line.
source "$(dirname "$0")/lib.sh"
DATA=${EL_SRC:-$(dirname "$0")/../..}/data/finetune/pirate-dreams.txt

"$EDGELLM" convert "$MODELS/aidreams260K.bin" "$T/base.gguf" -z "$MODELS/tok512.bin" 2>/dev/null || fail "convert"
"$EDGELLM" finetune -m "$T/base.gguf" --data "$DATA" --targets q,k,v,o --steps 3 --batch 2 --ctx 32 -t 2 \
  -o "$T/adapter.gguf" >/dev/null 2>"$T/ft.err" || fail "finetune: $(tail -1 "$T/ft.err")"
"$EDGELLM" export-lora -m "$T/base.gguf" --lora "$T/adapter.gguf" -o "$T/merged.gguf" 2>/dev/null || fail "export-lora"
"$EDGELLM" quantize "$T/base.gguf" "$T/q8.gguf" q8_0 -t 2 2>/dev/null || fail "quantize"

"$EDGELLM" catalog "$T/base.gguf" "$T/merged.gguf" "$T/q8.gguf" --json -o "$T/catalog.json" 2>"$T/cat.err" \
  && pass || fail "catalog --json: $(cat "$T/cat.err")"
"$EDGELLM" catalog "$T/base.gguf" "$T/merged.gguf" "$T/q8.gguf" >"$T/catalog.txt" 2>&1 && pass || fail "catalog (text)"
grep -q "^total [0-9]* bytes, union [0-9]* bytes" "$T/catalog.txt" && pass || fail "text output lacks the totals: $(tail -1 "$T/catalog.txt")"

# Every check on the JSON: prints one line per failed check (nothing when all hold).
python3 - "$T/catalog.json" "$T" >"$T/py.out" 2>&1 <<'PY'
import json, os, sys
cat = json.load(open(sys.argv[1]))
T = sys.argv[2]
bad = []
def check(ok, what):
    if not ok: bad.append(what)
m = {x["name"]: x for x in cat["models"]}
check(sorted(m) == ["base", "merged", "q8"], "model names %s" % sorted(m))
base, merged, q8 = m["base"], m["merged"], m["q8"]
for x in cat["models"]:
    check(x["file_bytes"] == os.path.getsize(x["path"]), "%s file_bytes" % x["name"])
    check(x["bytes"] == x["manifest"]["bytes"] + x["header"]["bytes"] + sum(b["bytes"] for b in x["blocks"]),
          "%s bytes is not manifest + header + blocks" % x["name"])
    check(x["id"] == x["manifest"]["hash"] and len(x["id"]) == 64, "%s id" % x["name"])
# the merged variant: every tensor the same block as the base's, except exactly
# the attention projections of every layer
n_layers = 1 + max(int(b["name"].split(".")[1]) for b in base["blocks"] if b["name"].startswith("blk."))
proj = {"blk.%d.attn_%s.weight" % (l, p) for l in range(n_layers) for p in ("q", "k", "v", "output")}
bh = {b["name"]: b["hash"] for b in base["blocks"]}
differ = {b["name"] for b in merged["blocks"] if bh.get(b["name"]) != b["hash"]}
check(differ == proj, "merged differs in %s, expected the %d attention projections" % (sorted(differ ^ proj), len(proj)))
check(len(merged["blocks"]) == len(base["blocks"]), "merged tensor count")
# the shared list says the same
def shared_names(a, b):
    return {n for s in cat["shared"] if a in s["models"] and b in s["models"] for n in s["names"] if not n.startswith("<")}
check(shared_names("base", "merged") == set(bh) - proj, "shared(base, merged) is not every tensor but the projections")
# the q8_0 copy shares exactly the tensors quantize left in f32 (the norms)
kept = {b["name"] for b in q8["blocks"] if b["dtype"] == "f32"}
check(kept and all(n.endswith("norm.weight") for n in kept), "q8_0 copy kept %s in f32" % sorted(kept))
check(shared_names("base", "q8") == kept, "shared(base, q8) %s != f32 tensors %s" % (sorted(shared_names("base", "q8")), sorted(kept)))
# the rest is q8_0, but for ffn_down (172 columns, not whole q8_0 blocks: f16)
check(all(b["dtype"] == ("f16" if "ffn_down" in b["name"] else "q8_0") for b in q8["blocks"] if b["name"] not in kept),
      "q8 dtypes %s" % sorted({b["dtype"] for b in q8["blocks"]}))
# union = every distinct block once; total = the sum of the models
blocks = {}
for x in cat["models"]:
    blocks[x["manifest"]["hash"]] = x["manifest"]["bytes"]
    blocks[x["header"]["hash"]] = x["header"]["bytes"]
    for b in x["blocks"]:
        blocks[b["hash"]] = b["bytes"]
check(cat["union_bytes"] == sum(blocks.values()), "union_bytes %d != %d" % (cat["union_bytes"], sum(blocks.values())))
check(cat["total_bytes"] == sum(x["bytes"] for x in cat["models"]), "total_bytes")
check(cat["union_bytes"] < cat["total_bytes"], "no saving")
for s in cat["shared"]:
    check(len(s["models"]) >= 2 and blocks.get(s["hash"]) == s["bytes"], "shared entry %s" % s["hash"][:12])
open(T + "/union", "w").write(str(cat["union_bytes"]))
open(T + "/union2", "w").write(str(sum(v for k, v in blocks.items()
                                     if k in {base["manifest"]["hash"], merged["manifest"]["hash"], base["header"]["hash"], merged["header"]["hash"]}
                                     or any(b["hash"] == k for b in base["blocks"] + merged["blocks"]))))
for b in bad: print(b)
PY
[ -s "$T/py.out" ] && fail "catalog JSON: $(cat "$T/py.out")" || pass

# the store keeps the union of two models: its bytes equal catalog's union of the two
"$EDGELLM" store import "$T/store" "$T/base.gguf" "$T/merged.gguf" >"$T/imp.out" 2>"$T/imp.err" \
  && pass || fail "store import: $(cat "$T/imp.err")"
"$EDGELLM" catalog "$T/base.gguf" "$T/merged.gguf" --json -o "$T/cat2.json" 2>/dev/null || fail "catalog of two"
want=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['union_bytes'])" "$T/cat2.json")
expect_eq "union of base+merged (catalog of two vs computed from three)" "$want" "$(cat "$T/union2")"
got=$(find "$T/store/blocks" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
expect_eq "store bytes" "$got" "$want"
"$EDGELLM" store list "$T/store" >"$T/list.out" 2>&1 || fail "store list"
grep -q "^2 models, [0-9]* blocks, $want bytes$" "$T/list.out" && pass || fail "store list: $(tail -1 "$T/list.out")"
# importing the q8 copy adds only what base and merged lack
"$EDGELLM" store import "$T/store" "$T/q8.gguf" --name q8 >/dev/null 2>&1 || fail "import q8"
got=$(find "$T/store/blocks" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
expect_eq "store bytes of all three = catalog union" "$got" "$(cat "$T/union")"
"$EDGELLM" store verify "$T/store" >/dev/null 2>&1 && pass || fail "store verify of a good store"
# a block altered on disk: verify removes it and says so
victim=$(ls "$T/store/blocks" | head -1)
chmod u+w "$T/store/blocks/$victim"; printf 'x' | dd of="$T/store/blocks/$victim" bs=1 seek=3 conv=notrunc 2>/dev/null
"$EDGELLM" store verify "$T/store" >"$T/ver.out" 2>"$T/ver.err"
[ $? -eq 1 ] && grep -q "removed block $victim" "$T/ver.err" && [ ! -e "$T/store/blocks/$victim" ] \
  && pass || fail "verify of an altered block: $(cat "$T/ver.err")"

# bad input: one line naming the file
expect_error "missing.gguf" "$EDGELLM" catalog "$T/missing.gguf"
echo "not gguf" >"$T/text.gguf"
expect_error "text.gguf" "$EDGELLM" catalog "$T/base.gguf" "$T/text.gguf"
mkdir -p "$T/other" && cp "$T/base.gguf" "$T/other/base.gguf"
expect_error "same model name 'base'" "$EDGELLM" catalog "$T/base.gguf" "$T/other/base.gguf"
expect_error "model name '../x'" "$EDGELLM" store import "$T/store" "$T/base.gguf" --name ../x
expect_error "unknown action" "$EDGELLM" store frobnicate "$T/store"
"$EDGELLM" catalog --help | grepq "^usage: edgellm catalog" && pass || fail "catalog --help"
"$EDGELLM" store --help | grepq "^usage: edgellm store" && pass || fail "store --help"

rm -rf "$T"
finish
