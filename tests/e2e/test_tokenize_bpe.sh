#!/usr/bin/env bash
# Byte-level BPE through edgellm tokenize: every case of the GGUF ecosystem's
# gpt-2 tokenizer conformance vectors (vocabulary-only GGUF), flags, errors.
source "$(dirname "$0")/lib.sh"
V=$REF/ggml-vocab-gpt-2.gguf

# Split the .inp file into one file per case, byte for byte (whitespace-only
# cases included), exactly as test_tokenize.sh does for llama-spm.
python3 - "$V.inp" "$T" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
cases = data.split(b"\n__ggml_vocab_test__\n")
if cases and cases[-1] == b"": cases.pop()
for i, c in enumerate(cases):
    open("%s/case%03d.txt" % (sys.argv[2], i), "wb").write(c)
PY
n=0
ok=0
while IFS= read -r want; do
  f=$(printf "%s/case%03d.txt" "$T" $n)
  got=$("$EDGELLM" tokenize -m "$V" -f "$f" --no-bos)
  expect_eq "gpt-2 conformance case $n" "$got" "${want# }"
  [ "$got" == "${want# }" ] && ok=$((ok + 1))
  n=$((n + 1))
done <"$V.out"
expect_eq "number of gpt-2 conformance cases" "$n" "$(ls "$T"/case*.txt | wc -l)"
echo "gpt-2 conformance: $ok of $n cases match"

# The gpt-2 vocabulary has no add_bos_token: no BOS unless the metadata asks.
expect_eq "gpt-2 default has no BOS" "$("$EDGELLM" tokenize -m "$V" -p "Hello world")" "15496 995"
# <|endoftext|> (50256, a control token) only with --special.
expect_eq "special off" "$("$EDGELLM" tokenize -m "$V" -p "a<|endoftext|>b")" "64 27 91 437 1659 5239 91 29 65"
expect_eq "special on" "$("$EDGELLM" tokenize -m "$V" -p "a<|endoftext|>b" --special)" "64 50256 65"
# SentencePiece: "<s>" is BOS only with --special; the run after it gets the
# dummy-prefix space, as llama.cpp and Hugging Face's legacy Llama tokenizer do.
L=$REF/ggml-vocab-llama-spm.gguf
expect_eq "spm special off" "$("$EDGELLM" tokenize -m "$L" -p "<s>Hi" --no-bos)" "529 29879 29958 18567"
expect_eq "spm special on" "$("$EDGELLM" tokenize -m "$L" -p "<s>Hi" --no-bos --special)" "1 6324"

# run end to end with a byte-level vocabulary: a tiny random Llama with 50257
# outputs and the gpt-2 vocabulary as its tokenizer. The prompt is printed back
# byte for byte (no BOS: the vocabulary does not ask for one), then the
# generated pieces.
"$EDGELLM" synth --dim 16 --layers 1 --heads 2 --ff 32 --vocab 50257 --ctx 64 -o "$T/m.gguf" 2>/dev/null
prompt="Hello world, caf\xc3\xa9 \xf0\x9f\x98\x81"
prompt=$(printf "$prompt")
"$EDGELLM" run -m "$T/m.gguf" -z "$V" -p "$prompt" -n 8 --temp 0 -t 1 >"$T/run.out" 2>"$T/run.err" || fail "run with the gpt-2 vocabulary: $(cat "$T/run.err")"
nbytes=$(printf "%s" "$prompt" | wc -c)
head -c "$nbytes" "$T/run.out" >"$T/run.head"
printf "%s" "$prompt" | cmp -s - "$T/run.head" && pass || fail "run did not echo the prompt: $(head -c 80 "$T/run.out")"
[ "$(wc -c <"$T/run.out")" -gt "$nbytes" ] && pass || fail "run generated nothing"

# Bad input gives one clear line and a non-zero exit.
printf 'a\xffb' >"$T/bad.txt"
expect_error "not valid UTF-8" "$EDGELLM" tokenize -m "$V" -f "$T/bad.txt"
"$EDGELLM" tokenize --help | grepq -- "--special" && pass || fail "tokenize --help lacks --special"
finish
