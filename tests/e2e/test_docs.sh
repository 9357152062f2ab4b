#!/usr/bin/env bash
# Every shell block of the README and docs/ runs as shown (tests/e2e/doc_blocks.py
# turns a file's ```sh blocks into one script): from a checkout-shaped folder
# (build/, data/, examples/ and ../shared as in a clone), with `edgellm` on the
# PATH, one fresh folder per file. Blocks fenced ```sh nocheck need more than the
# shared model (the two commands themselves, other machines, big models) and are
# only shown. Also checks the statements issue 22 found stale stay gone.
source "$(dirname "$0")/lib.sh"
build=$(dirname "$EDGELLM")
mkdir -p "$T/bin"
ln -s "$EDGELLM" "$T/bin/edgellm"

for doc in $(cd "$EL_SRC" && echo README.md docs/*.md); do
  name=$(basename "$doc" .md)
  root=$T/$name
  mkdir -p "$root/work"
  ln -s "$EL_SHARED" "$root/shared"
  for d in data examples; do ln -s "$EL_SRC/$d" "$root/work/$d"; done
  ln -s "$build" "$root/work/build"
  python3 "$(dirname "$0")/doc_blocks.py" "$EL_SRC/$doc" $(for _ in 1 2 3 4 5 6; do free_port; done) >"$root/run.sh" ||
    { fail "$doc: cannot extract its blocks"; continue; }
  grep -q "^BLOCK=" "$root/run.sh" || continue  # no runnable blocks
  (cd "$root/work" && PATH="$T/bin:$PATH" timeout 300 bash "$root/run.sh" >"$root/out" 2>"$root/err")
  rc=$?
  if [ $rc -eq 0 ]; then pass; else fail "$doc: exit $rc: $(grep -- '^--- \|FAILED' "$root/err" | tail -2) $(tail -3 "$root/err")"; fi
  echo "$doc: $(grep -c '^--- ' "$root/err") blocks"
done

# outputs the README shows
grep -q "The dream align, as I seep into the void" "$T/README/out" && pass || fail "README: local run text"
grep -q "^ok up 5 Mbit/s" "$T/linkemu/out" && pass || fail "linkemu.md: control port answer: $(tail -3 "$T/linkemu/out")"

# the stale statements of issue 22 stay gone
! grep -rq "nc -q1" "$EL_SRC/docs" "$EL_SRC/README.md" && pass || fail "docs use nc -q1 (not installed by setup)"
# libstb-dev only while something includes stb (src/vision decodes images with it)
{ ! grep -q "libstb-dev" "$EL_SRC/scripts/setup" || grep -rq "#include <stb" "$EL_SRC/src"; } && pass ||
  fail "setup installs libstb-dev, which nothing uses"
! grep -q "twin" "$EL_SRC/docs/architecture.md" && pass || fail "architecture.md speaks to its authors"
grep -q "^| 500 |" "$EL_SRC/docs/serve.md" && pass || fail "serve.md has no 500 row"
grep -q "any tail of it" "$EL_SRC/docs/protocol.md" && pass || fail "protocol.md: the range a worker serves"
grep -q "| type | AVX-512 (VNNI) | AVX2 | scalar |" "$EL_SRC/docs/performance.md" && pass ||
  fail "the perplexity table does not name its instruction sets"
! grep -q "next section" "$EL_SRC/docs/performance.md" && pass || fail "a pointer to the 'next section'"
[ "$(grep -c '' "$EL_SRC/README.md")" -le 160 ] && pass || fail "README has $(grep -c '' "$EL_SRC/README.md") lines"
# the README says what --stats prints, and run does that
grep -q -- "--stats. adds a summary" "$EL_SRC/README.md" && pass || fail "README on --stats"
finish
