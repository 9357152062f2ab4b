#!/usr/bin/env bash
# edgellm tokenize against llama2.c's encoder output and the GGUF ecosystem's
# tokenizer conformance vectors.
source "$(dirname "$0")/lib.sh"

while IFS=$'\t' read -r text want; do
  got=$("$EDGELLM" tokenize -z "$MODELS/llama2-tokenizer.bin" -p "$text")
  expect_eq "llama2 tokenize '$text'" "$got" "$want"
done <"$REF/llama2-tokenizer-encode.tsv"

# Split the .inp file into one file per case, byte for byte.
python3 - "$REF/ggml-vocab-llama-spm.gguf.inp" "$T" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
cases = data.split(b"\n__ggml_vocab_test__\n")
if cases and cases[-1] == b"": cases.pop()
for i, c in enumerate(cases):
    open("%s/case%03d.txt" % (sys.argv[2], i), "wb").write(c)
print(len(cases))
PY
n=0
while IFS= read -r want; do
  f=$(printf "%s/case%03d.txt" "$T" $n)
  got=$("$EDGELLM" tokenize -z "$REF/ggml-vocab-llama-spm.gguf" -f "$f" --no-bos)
  expect_eq "spm conformance case $n" "$got" "${want# }"
  n=$((n + 1))
done <"$REF/ggml-vocab-llama-spm.gguf.out"
expect_eq "number of conformance cases" "$n" "$(ls "$T"/case*.txt | wc -l)"

# The same tokenizer read from a converted model.
"$EDGELLM" convert "$MODELS/aidreams260K.bin" "$T/aid.gguf" -z "$MODELS/tok512.bin" 2>/dev/null
expect_eq "tok512 'The dream'" "$("$EDGELLM" tokenize -z "$MODELS/tok512.bin" -p "The dream")" "1 368 430 281 269 435 447"
expect_eq "gguf 'The dream'" "$("$EDGELLM" tokenize -m "$T/aid.gguf" -p "The dream")" "1 368 430 281 269 435 447"
expect_eq "empty text" "$("$EDGELLM" tokenize -m "$T/aid.gguf" -p "" --no-bos)" ""

# The Llama 2 vocabulary through the GGUF path: a tiny llama2.c checkpoint with
# a 32000-token vocabulary, converted together with llama2-tokenizer.bin.
python3 - "$T/tiny32k.bin" <<'PY'
import struct, sys
dim, hidden, layers, heads, kv, vocab, seq = 8, 8, 1, 1, 1, 32000, 8
n = vocab*dim + layers*dim + layers*dim*dim*4 + layers*dim + layers*hidden*dim*3 + dim + seq*dim
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<7i", dim, hidden, layers, heads, kv, vocab, seq))
    f.write(struct.pack("<f", 0.01) * n)
PY
"$EDGELLM" convert "$T/tiny32k.bin" "$T/tiny32k.gguf" -z "$MODELS/llama2-tokenizer.bin" 2>/dev/null || fail "convert tiny32k"
while IFS=$'\t' read -r text want; do
  got=$("$EDGELLM" tokenize -m "$T/tiny32k.gguf" -p "$text")
  expect_eq "llama2 tokenize via GGUF '$text'" "$got" "$want"
done <"$REF/llama2-tokenizer-encode.tsv"
n=0
while IFS= read -r want; do
  f=$(printf "%s/case%03d.txt" "$T" $n)
  got=$("$EDGELLM" tokenize -m "$T/tiny32k.gguf" -f "$f" --no-bos)
  expect_eq "spm conformance case $n via converted llama2 vocabulary" "$got" "${want# }"
  n=$((n + 1))
done <"$REF/ggml-vocab-llama-spm.gguf.out"
finish
