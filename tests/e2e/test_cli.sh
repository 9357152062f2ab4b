#!/usr/bin/env bash
# Every subcommand: --help, a normal run with checked output, and bad input
# that must give one clear error line and a non-zero exit, never a crash.
source "$(dirname "$0")/lib.sh"
BIN=$MODELS/aidreams260K.bin
TOK=$MODELS/tok512.bin

# --help everywhere
"$EDGELLM" --help | grepq "usage: edgellm SUBCOMMAND" && pass || fail "edgellm --help"
for cmd in run logits tokenize info convert synth; do
  "$EDGELLM" $cmd --help >"$T/help" 2>&1 && grep -q "usage: edgellm $cmd" "$T/help" && pass || fail "$cmd --help"
done
expect_error "unknown subcommand 'frobnicate'" "$EDGELLM" frobnicate

# info on both formats
"$EDGELLM" info "$BIN" >"$T/info" || fail "info bin"
grep -q "dim 64, layers 4, heads 4, kv heads 4, head dim 16, ff 172, vocab 512, ctx 128" "$T/info" && pass || fail "info hparams"
grep -q "blk.3.ffn_down.weight *f32 *\[172, 64\] *44032 bytes" "$T/info" && pass || fail "info tensor line"
"$EDGELLM" convert "$BIN" "$T/aid.gguf" -z "$TOK" 2>/dev/null || fail "convert"
[ ! -e "$T/aid.gguf.tmp" ] && pass || fail "convert left its temporary file"
"$EDGELLM" info "$T/aid.gguf" >"$T/info2" || fail "info gguf"
grep -q 'general.architecture *"llama"' "$T/info2" && pass || fail "gguf architecture key"
grep -q 'tokenizer.ggml.tokens *\[string x 512\]' "$T/info2" && pass || fail "gguf tokens key"
grep -q "llama.attention.head_count_kv *4" "$T/info2" && pass || fail "gguf head_count_kv"
grep -q "output_norm.weight *f32 *\[64\]" "$T/info2" && pass || fail "gguf output_norm"

# run: stdout is exactly the prompt plus generated text; --stats goes to stderr
"$EDGELLM" run -m "$BIN" -z "$TOK" -p "The dream" -n 20 --temp 0 --stats >"$T/run.out" 2>"$T/run.err" || fail "run"
head -c 9 "$T/run.out" | grepq "^The dream" && pass || fail "run stdout starts with the prompt"
grep -q "prefill: 7 tokens" "$T/run.err" && grep -q "decode: 20 tokens" "$T/run.err" && grep -q "peak memory" "$T/run.err" \
  && pass || fail "run --stats: $(cat "$T/run.err")"
# sampling is reproducible with a seed and differs between seeds
a=$("$EDGELLM" run -m "$BIN" -z "$TOK" -p "I" -n 40 --temp 1 --top-p 0.95 --seed 7)
b=$("$EDGELLM" run -m "$BIN" -z "$TOK" -p "I" -n 40 --temp 1 --top-p 0.95 --seed 7)
c=$("$EDGELLM" run -m "$BIN" -z "$TOK" -p "I" -n 40 --temp 1 --top-p 0.95 --seed 8)
expect_eq "same seed same text" "$a" "$b"
[ "$a" != "$c" ] && pass || fail "different seeds gave the same text"
"$EDGELLM" run -m "$BIN" -z "$TOK" -p "I" -n 30 --temp 0.7 --top-k 20 --min-p 0.05 --repeat-penalty 1.3 --seed 1 >/dev/null \
  && pass || fail "run with all samplers"
# threads do not change greedy output
t1=$("$EDGELLM" run -m "$BIN" -z "$TOK" -p "I" -n 60 --temp 0 -t 1)
t2=$("$EDGELLM" run -m "$BIN" -z "$TOK" -p "I" -n 60 --temp 0 -t 2)
expect_eq "threads 1 vs 2" "$t1" "$t2"

# synth: a small model with GQA in f16, then info and run on it
"$EDGELLM" synth --dim 128 --layers 3 --heads 8 --kv-heads 2 --ff 320 --vocab 600 --ctx 256 --type f16 --seed 3 \
  -o "$T/syn.gguf" 2>"$T/synth.err" || fail "synth: $(cat "$T/synth.err")"
grep -q "synth:" "$T/synth.err" && pass || fail "synth progress line"
"$EDGELLM" info "$T/syn.gguf" | grepq "dim 128, layers 3, heads 8, kv heads 2, head dim 16, ff 320, vocab 600, ctx 256" \
  && pass || fail "synth info"
"$EDGELLM" run -m "$T/syn.gguf" -p "abc" -n 10 --temp 0 >/dev/null && pass || fail "run on synth model"
"$EDGELLM" synth --dim 128 --layers 3 --heads 8 --kv-heads 2 --ff 320 --vocab 600 --ctx 256 --type f16 --seed 3 \
  -o "$T/syn2.gguf" 2>/dev/null
cmp -s "$T/syn.gguf" "$T/syn2.gguf" && pass || fail "synth is not deterministic"

# ---- bad input
expect_error "-m MODEL is required" "$EDGELLM" run -p hi
expect_error "--temp: 'hot' is not a number" "$EDGELLM" run -m "$BIN" -z "$TOK" -p hi --temp hot
expect_error "unknown option '--bogus'" "$EDGELLM" run -m "$BIN" --bogus
expect_error "the prompt is empty" "$EDGELLM" run -m "$BIN" -z "$TOK" -p ""
expect_error "not valid UTF-8" "$EDGELLM" run -m "$BIN" -z "$TOK" -p $'abc\xff'
expect_error "/nonexistent/model.bin: cannot open" "$EDGELLM" run -m /nonexistent/model.bin -z "$TOK" -p hi
expect_error "pass one with -z" "$EDGELLM" run -m "$BIN" -p hi
# truncated llama2.c checkpoint
head -c 500000 "$BIN" >"$T/trunc.bin"
expect_error "$T/trunc.bin: file has 500000 bytes" "$EDGELLM" run -m "$T/trunc.bin" -z "$TOK" -p hi
# absurd dimensions
python3 -c "import struct,sys; sys.stdout.buffer.write(struct.pack('<7i', 1<<30, 8, 1, 1, 1, 8, 8))" >"$T/absurd.bin"
expect_error "$T/absurd.bin: header field dim = 1073741824 is out of range" "$EDGELLM" info "$T/absurd.bin"
: >"$T/empty.bin"
expect_error "$T/empty.bin: too small" "$EDGELLM" info "$T/empty.bin"
# wrong magic for GGUF-looking data
printf 'GGUF\x07\x00\x00\x00' >"$T/v7.gguf"
expect_error "$T/v7.gguf" "$EDGELLM" info "$T/v7.gguf"
# neither GGUF nor llama2.c
printf 'hello world, this is not a model at all\n' >"$T/text.bin"
expect_error "(not GGUF either: magic bytes 68 65 6c 6c)" "$EDGELLM" info "$T/text.bin"
# truncated GGUF, and a GGUF cut inside its tensor data
head -c 1000 "$T/aid.gguf" >"$T/trunc.gguf"
expect_error "$T/trunc.gguf" "$EDGELLM" info "$T/trunc.gguf"
size=$(stat -c %s "$T/aid.gguf")
head -c $((size - 100)) "$T/aid.gguf" >"$T/cut.gguf"
expect_error "$T/cut.gguf" "$EDGELLM" run -m "$T/cut.gguf" -p hi
# tokenizer file that does not belong to the model
expect_error "tokenizer has 32000 tokens but model" "$EDGELLM" run -m "$BIN" -z "$MODELS/llama2-tokenizer.bin" -p hi
head -c 3000 "$TOK" >"$T/trunc.tok"
expect_error "$T/trunc.tok" "$EDGELLM" run -m "$BIN" -z "$T/trunc.tok" -p hi
# a vocabulary-only GGUF is not a model
expect_error "token_embd.weight is missing" "$EDGELLM" run -m "$REF/ggml-vocab-llama-spm.gguf" -p hi
# prompt longer than the context
python3 -c "print('dream ' * 200)" >"$T/long.txt"
expect_error "more than the context" "$EDGELLM" run -m "$BIN" -z "$TOK" -f "$T/long.txt" -n 5
expect_error "is not one of f32, f16, bf16" "$EDGELLM" synth --dim 64 --layers 1 --heads 4 --ff 64 --vocab 300 --type q9 -o "$T/x.gguf"
expect_error "IN.bin and OUT.gguf are required" "$EDGELLM" convert "$BIN"
expect_error "is already GGUF" "$EDGELLM" convert "$T/aid.gguf" "$T/again.gguf" -z "$TOK"
finish
