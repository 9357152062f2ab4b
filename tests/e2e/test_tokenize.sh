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
finish
