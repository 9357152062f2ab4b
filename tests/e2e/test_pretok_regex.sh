#!/usr/bin/env bash
# The hand-written pre-tokenizers (edgellm tokenize --pretok) against the
# regular expressions themselves, run by Python's `regex` module, on random
# text built from characters whose Unicode classes have not changed for many
# versions (so our 14.0 tables and the module's newer ones agree).
source "$(dirname "$0")/lib.sh"
if ! python3 -c "import regex" 2>/dev/null; then
  echo "SKIP: python3 regex module not installed"
  exit 0
fi

python3 - "$T" <<'PY'
import random, sys, regex
GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3 = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
QWEN2 = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

def ends(pattern, text):
    out, pos = [], 0
    for m in regex.finditer(pattern, text):
        assert m.start() == pos, "regex left a gap"
        pos = m.end()
        out.append(len(text[:pos].encode()))
    assert pos == len(text)
    return out

def smollm(text):
    out, seg, base = [], "", 0
    for ch in text + "\0":
        if ch == "\0" or regex.match(r"\p{N}", ch):
            if seg:
                out += [base + e for e in ends(GPT2, seg)]
                base += len(seg.encode())
                seg = ""
            if ch != "\0":
                base += len(ch.encode())
                out.append(base)
        else:
            seg += ch
    return out

pools = [
    " " * 8 + "\t\n\r\n\x0b\x0c" + "'" * 6 + "sStTrReEvVmMlLdD" + "abcxyzABC" + "0123456789" + "!?.,;:-_()[]<>|\"",
    "".join(map(chr, range(0xA0, 0x100))) + "\u017f\u0085\u2028\u2029\u3000\u2000\u2009\u200b\u00a0",
    "".join(map(chr, range(0x300, 0x340))) + "".join(map(chr, range(0x660, 0x66a))) + "\u00bd\u2160\u2161",
    "".join(map(chr, range(0x4E00, 0x4E40))) + "".join(map(chr, range(0xAC00, 0xAC20))) + "".join(map(chr, range(0x3040, 0x3090))),
    "".join(map(chr, range(0x1F600, 0x1F640))) + "\u2705\u200d\ufe0f",
    "".join(map(chr, range(0x410, 0x450))) + "".join(map(chr, range(0x5D0, 0x5EA))),
]
rng = random.Random(20261126)
n = 0
for i in range(150):
    k = rng.randrange(1, 40)
    text = "".join(rng.choice(rng.choice(pools) if rng.random() < 0.5 else pools[0]) for _ in range(k))
    open("%s/t%03d.txt" % (sys.argv[1], i), "wb").write(text.encode())
    with open("%s/t%03d.want" % (sys.argv[1], i), "w") as f:
        for name, e in (("gpt-2", ends(GPT2, text)), ("llama-bpe", ends(LLAMA3, text)),
                        ("qwen2", ends(QWEN2, text)), ("smollm", smollm(text))):
            f.write("%s\t%s\n" % (name, " ".join(map(str, e))))
    n += 1
print(n, "texts")
PY

for want in "$T"/t*.want; do
  f=${want%.want}.txt
  while IFS=$'\t' read -r pre ends; do
    got=$("$EDGELLM" tokenize --pretok "$pre" -f "$f")
    expect_eq "$pre split of $(basename "$f") ($(od -An -c "$f" | tr -s ' ' | head -c 200))" "$got" "$ends"
  done <"$want"
done
finish
