#!/usr/bin/env bash
# The JSON parser's memory per input byte and speed on what it parses: the
# fuzz corpora (seeds, plus what earlier fuzz runs found in build-fuzz/), a
# tokenizer.json made from the GPT-2 vocabulary in ../shared (50257 tokens,
# 50000 merges), a chat request with a long message, a dense array of small
# numbers (the worst case for memory per byte) and a deeply nested config.
# Compares with cJSON when its headers are installed (libcjson-dev).
# Usage: bench/json_bench.sh [BUILD_DIR]   (default build/, which must be built)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shared=${EL_SHARED_DIR:-../shared}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

python3 - "$shared/models/reference/ggml-vocab-gpt-2.gguf" "$tmp" <<'EOF'
import json, os, struct, sys
data, pos, kv = open(sys.argv[1], "rb").read(), 24, {}
def take(fmt):
    global pos
    v = struct.unpack_from(fmt, data, pos)[0]
    pos += struct.calcsize(fmt)
    return v
def string():
    global pos
    n = take("<Q")
    pos += n
    return data[pos - n:pos].decode("utf-8", "surrogateescape")
SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
def value(t):
    if t == 8:
        return string()
    if t == 9:
        at, n = take("<I"), take("<Q")
        return [value(at) for _ in range(n)]
    return take(SCALAR[t])
n_kv = struct.unpack_from("<Q", data, 16)[0]
for _ in range(n_kv):
    k = string()
    kv[k] = value(take("<I"))
out = sys.argv[2]
toks = kv["tokenizer.ggml.tokens"]
merges = kv["tokenizer.ggml.merges"]
tok = {"version": "1.0", "added_tokens": [{"id": 50256, "content": "<|endoftext|>", "special": True}],
       "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False},
       "model": {"type": "BPE", "vocab": {t: i for i, t in enumerate(toks)}, "merges": merges}}
json.dump(tok, open(os.path.join(out, "gpt2-tokenizer.json"), "w"), ensure_ascii=False)
msg = ("The dream of a machine that reads and answers. " * 4000).strip()
req = {"model": "base", "messages": [{"role": "system", "content": "Answer briefly."},
                                     {"role": "user", "content": msg}], "max_tokens": 64, "stream": True}
json.dump(req, open(os.path.join(out, "chat-request.json"), "w"))
open(os.path.join(out, "dense-numbers.json"), "w").write("[" + ",".join("0" for _ in range(500000)) + "]")
d = {"a": 1}
for i in range(30):
    d = {"k%d" % i: [d, i, "x"]}
json.dump(d, open(os.path.join(out, "nested.json"), "w"))
EOF

extra=()
libs=$(pkg-config --libs libzmq libmicrohttpd)
pkg-config --exists openblas && libs="$libs $(pkg-config --libs openblas)"
if [ -f /usr/include/cjson/cJSON.h ]; then
  extra=(-DWITH_CJSON)
  libs="$libs -lcjson"
fi
cc -O2 -D_GNU_SOURCE -Iinclude -I"$build/include" "${extra[@]}" bench/json_bench.c "$build/libedgellm.a" \
  -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=free $libs -lm -pthread -o "$tmp/json_bench"

files=()
for d in json jsonl hf serve_request; do
  for f in tests/fuzz/corpus/$d/* build-fuzz/fuzz-work/$d/corpus/*; do
    [ -f "$f" ] && files+=("$f")
  done
done
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
"$tmp/json_bench" "$tmp"/gpt2-tokenizer.json "$tmp"/chat-request.json "$tmp"/dense-numbers.json "$tmp"/nested.json
echo "fuzz corpora (json, jsonl, hf, serve_request):"
"$tmp/json_bench" --sum "${files[@]}"
