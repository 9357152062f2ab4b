#!/usr/bin/env bash
# Images on the device, end to end:
#  - embed-image against an independent numpy reference (tests/e2e/vision_ref.py,
#    written from the format and the architecture) on random-weight projectors of
#    two shapes (CLIP-like with a class token, SigLIP-like without, older MLP
#    names, a feature layer) and three images (PNG, JPEG, non-square), plus the
#    crop fit and a q8_0 projector;
#  - run --image locally and split at two cuts: the same greedy text, and the
#    device's bytes on the wire are exactly its hidden-state messages;
#  - serve --mmproj with a data: URL gives run --chat's text;
#  - bad inputs: one error line each, non-zero exit.
source "$(dirname "$0")/lib.sh"
SRC=${EL_SRC:-$(dirname "$0")/../..}
PY=/usr/bin/python3  # Debian's python3 with python3-numpy (scripts/setup); a pyenv one may lack numpy
REFPY=$SRC/tests/e2e/vision_ref.py
if ! "$PY" -c "import numpy" 2>/dev/null; then
  fail "$PY has no numpy (scripts/setup installs python3-numpy)"
  finish
fi

"$PY" "$REFPY" images "$T" || fail "test images"
IMGS=("$T/a.png" "$T/b.jpg" "$T/c.png")
NPYS=("$T/a.png.npy" "$T/b.jpg.npy" "$T/c.png.npy")

# the language model and a CLIP-like projector of its width (64), and a SigLIP-like one
"$EDGELLM" synth --dim 64 --layers 4 --heads 4 --ff 160 --vocab 600 --ctx 512 --type f16 --seed 5 -o "$T/llm.gguf" \
  --mmproj "$T/clip.gguf" --image-size 32 --patch 8 --vit-dim 64 --vit-heads 4 --vit-ff 160 --vit-blocks 3 \
  --proj-hidden 96 2>/dev/null || fail "synth llm + clip projector"
"$EDGELLM" synth --dim 64 --type f16 --seed 6 --mmproj "$T/siglip.gguf" --style siglip --old-names --feature-layer 2 \
  --image-size 48 --patch 12 --vit-dim 96 --vit-heads 6 --vit-ff 192 --vit-blocks 2 --proj-hidden 128 2>/dev/null \
  || fail "synth siglip projector"
"$EDGELLM" synth --dim 64 --type f16 --seed 7 --mmproj "$T/crop.gguf" --fit crop 2>/dev/null || fail "synth crop projector"

check_ref() {  # PROJ TOL WHAT
  "$EDGELLM" embed-image --mmproj "$1" --image "${IMGS[0]}" --image "${IMGS[1]}" --image "${IMGS[2]}" \
    -o "$T/emb.f32" --pixels "$T/pix.f32" -t 2 2>"$T/emb.err" || { fail "$3: embed-image: $(cat "$T/emb.err")"; return; }
  if "$PY" "$REFPY" check "$1" "$T/emb.f32" "${NPYS[@]}" --pixels "$T/pix.f32" --tol "$2" >"$T/ref.out" 2>&1; then
    pass
  else
    fail "$3 against the numpy reference: $(cat "$T/ref.out")"
  fi
  sed "s|^$T/|  $3: |" "$T/ref.out"
}
check_ref "$T/clip.gguf" 1e-4 "CLIP-like (class token)"
check_ref "$T/siglip.gguf" 1e-4 "SigLIP-like (no class token, older names, feature layer)"
check_ref "$T/crop.gguf" 1e-4 "crop fit"
# q8_0: the matrices' activations are quantized to 8 bits too, so agreement is ~1%
"$EDGELLM" quantize "$T/clip.gguf" "$T/clip-q8.gguf" q8_0 2>/dev/null || fail "quantize the projector"
info=$("$EDGELLM" info "$T/clip-q8.gguf")
[[ "$info" == *"matrices in q8_0"* ]] && pass || fail "info of the q8_0 projector: $info"
"$EDGELLM" embed-image --mmproj "$T/clip-q8.gguf" --image "${IMGS[0]}" --image "${IMGS[1]}" --image "${IMGS[2]}" \
  -o "$T/emb.f32" -t 2 2>/dev/null || fail "embed-image q8_0"
"$PY" "$REFPY" check "$T/clip-q8.gguf" "$T/emb.f32" "${NPYS[@]}" --tol 0.03 >"$T/ref.out" 2>&1 \
  && pass || fail "q8_0 projector: $(cat "$T/ref.out")"

# ---- run --image: local, and split at two cuts with the same text
PROMPT="Look at <image> and <image> then"
RUN=("$EDGELLM" run -m "$T/llm.gguf" --mmproj "$T/clip.gguf" --image "${IMGS[0]}" --image "${IMGS[1]}"
     -p "$PROMPT" -n 40 --temp 0 --ignore-eos -t 1)
local_text=$("${RUN[@]}" 2>"$T/local.err")
# (stdout: the prompt, each image as its marker, then the text; each text piece is
# encoded on its own, so SentencePiece gives it its leading space)
[[ "$local_text" == "Look at <image>"* && ${#local_text} -gt ${#PROMPT} ]] && pass \
  || fail "run --image: '$local_text' $(cat "$T/local.err")"
# the images change the text (they are read, not skipped)
other=$("$EDGELLM" run -m "$T/llm.gguf" --mmproj "$T/clip.gguf" --image "${IMGS[2]}" --image "${IMGS[1]}" \
        -p "$PROMPT" -n 40 --temp 0 --ignore-eos -t 1 2>/dev/null)
[ "$other" != "$local_text" ] && pass || fail "another image gave the same text"

ntok() { "$EDGELLM" tokenize -m "$T/llm.gguf" "$@" | wc -w; }
n1=$(ntok -p "Look at "); n2=$(ntok --no-bos -p " and "); n3=$(ntok --no-bos -p " then"); nx=$(ntok -p "x")
for k in 1 2; do
  port=$(free_port)
  start_worker "$T/w$k.log" -m "$T/llm.gguf" --layers $k:4 --listen tcp://127.0.0.1:$port --insecure -t 1 \
    || { fail "worker $k"; continue; }
  got=$("${RUN[@]}" --split $k --via tcp://127.0.0.1:$port --insecure --stats=tokens 2>"$T/split$k.err")
  expect_eq "run --image split at $k" "$got" "$local_text"
  # what the device sent in the prefill: one FORWARD per run of the prompt (text,
  # image, text, image, text), each a 24-byte header, 12 bytes of fields and its
  # rows as f32 hidden states of width 64: nothing else, so no image bytes. A
  # text-only prompt shows the same accounting: 36 bytes + its rows.
  "$EDGELLM" run -m "$T/llm.gguf" -p x -n 1 --temp 0 -t 1 --split $k --via tcp://127.0.0.1:$port --insecure --stats=tokens \
    2>"$T/text$k.err" >/dev/null
  sent_text=$(grep -m1 '^prefill: device' "$T/text$k.err" | grep -o 'sent [0-9]* B' | awk '{print $2}')
  expect_eq "bytes sent for a text prefill, split at $k" "$sent_text" "$((36 + nx * 256))"
  sent=$(grep -m1 '^prefill: device' "$T/split$k.err" | grep -o 'sent [0-9]* B' | awk '{print $2}')
  rows=$((n1 + 16 + n2 + 16 + n3))
  expect_eq "bytes the device sent in the prefill with two images, split at $k" "$sent" "$((5 * 36 + rows * 256))"
  echo "  split at $k: the prefill sent $sent B = 5 messages x 36 B + $rows rows x 64 x 4 B"
  kill $last_pid; wait $last_pid 2>/dev/null
done

expect_error "--edge-sample cannot take --image" "$EDGELLM" run -m "$T/llm.gguf" --mmproj "$T/clip.gguf" \
  --image "${IMGS[0]}" -p "x" -n 2 --split 1 --via 127.0.0.1:1 --insecure --edge-sample -t 1
expect_error "--draft cannot take --image" "$EDGELLM" run -m "$T/llm.gguf" --mmproj "$T/clip.gguf" \
  --image "${IMGS[0]}" -p "x" -n 2 --draft self:1 -t 1
expect_error "--split 0 would send the image rows themselves" "$EDGELLM" run -m "$T/llm.gguf" --mmproj "$T/clip.gguf" \
  --image "${IMGS[0]}" -p "x" -n 2 --split 0 --via tcp://127.0.0.1:1 --insecure -t 1

# ---- serve --mmproj: a data: URL in a chat message, the text of run --chat
"$EDGELLM" serve -m "$T/llm.gguf" --mmproj "$T/clip.gguf" --listen 127.0.0.1:0 -t 1 -q 2>"$T/serve.log" &
serve_pid=$!
bg_pids+=("$serve_pid")
port=
for _ in $(seq 1 100); do
  port=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$T/serve.log" | grep -o '[0-9]*$')
  [ -n "$port" ] && break
  sleep 0.05
done
[ -n "$port" ] && pass || fail "serve did not start: $(cat "$T/serve.log")"
chat_req() {  # IMAGE_FILE MEDIA_TYPE
  "$PY" - "$1" "$2" <<'PY'
import base64, json, sys
url = "data:%s;base64,%s" % (sys.argv[2], base64.b64encode(open(sys.argv[1], "rb").read()).decode())
print(json.dumps({"model": "llm", "temperature": 0, "max_tokens": 24, "messages": [{"role": "user", "content": [
    {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "\nWhat is this?"}]}]}))
PY
}
chat_req "${IMGS[1]}" image/jpeg >"$T/req.json"
served=$(curl -s "http://127.0.0.1:$port/v1/chat/completions" -d @"$T/req.json" | "$PY" -c \
  'import json,sys; print(json.load(sys.stdin)["choices"][0]["message"]["content"], end="")')
ran=$("$EDGELLM" run -m "$T/llm.gguf" --mmproj "$T/clip.gguf" --image "${IMGS[1]}" -p "<image>
What is this?" --chat -n 24 --temp 0 -t 1 2>/dev/null | "$PY" -c 'import sys; sys.stdout.write(sys.stdin.buffer.read().decode("utf-8", "replace").rstrip("\n"))')
[ ${#ran} -ge 10 ] && pass || fail "run --chat --image gave '$ran'"
expect_eq "serve --mmproj text vs run --chat --image" "$served" "$ran"
# two images side by side, then text: one run of image rows across both, in one batch step
"$PY" - "${IMGS[0]}" "${IMGS[2]}" >"$T/req2.json" <<'PY'
import base64, json, sys
u = ["data:image/png;base64," + base64.b64encode(open(f, "rb").read()).decode() for f in sys.argv[1:3]]
print(json.dumps({"model": "llm", "temperature": 0, "max_tokens": 24, "messages": [{"role": "user", "content": [
    {"type": "image_url", "image_url": {"url": u[0]}}, {"type": "image_url", "image_url": u[1]},
    {"type": "text", "text": "\nCompare them."}]}]}))
PY
served=$(curl -s "http://127.0.0.1:$port/v1/chat/completions" -d @"$T/req2.json" | "$PY" -c \
  'import json,sys; print(json.load(sys.stdin)["choices"][0]["message"]["content"], end="")')
ran=$("$EDGELLM" run -m "$T/llm.gguf" --mmproj "$T/clip.gguf" --image "${IMGS[0]}" --image "${IMGS[2]}" -p "<image><image>
Compare them." --chat -n 24 --temp 0 -t 1 2>/dev/null | "$PY" -c 'import sys; sys.stdout.write(sys.stdin.buffer.read().decode("utf-8", "replace").rstrip("\n"))')
[ ${#ran} -ge 10 ] && pass || fail "run --chat with two images gave '$ran'"
expect_eq "serve --mmproj with two images vs run --chat" "$served" "$ran"
echo "  two images, served: '$served'"
code=$(curl -s -o "$T/r.json" -w '%{http_code}' "http://127.0.0.1:$port/v1/chat/completions" -d \
  '{"model":"llm","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://example.com/cat.png"}}]}]}')
expect_eq "a remote image URL is refused" "$code" "400"
grep -q "remote URLs are not fetched" "$T/r.json" && pass || fail "remote URL message: $(cat "$T/r.json")"
printf 'not an image' >"$T/text.txt"
chat_req "$T/text.txt" image/png >"$T/req.json"
code=$(curl -s -o "$T/r.json" -w '%{http_code}' "http://127.0.0.1:$port/v1/chat/completions" -d @"$T/req.json")
expect_eq "a data: URL that is no image" "$code" "400"
grep -q "not a PNG or JPEG image" "$T/r.json" && pass || fail "non-image message: $(cat "$T/r.json")"
kill $serve_pid; wait $serve_pid 2>/dev/null
"$EDGELLM" serve -m "$T/llm.gguf" --listen 127.0.0.1:0 -t 1 -q 2>"$T/serve2.log" &
serve_pid=$!
bg_pids+=("$serve_pid")
port=
for _ in $(seq 1 100); do
  port=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$T/serve2.log" | grep -o '[0-9]*$')
  [ -n "$port" ] && break
  sleep 0.05
done
chat_req "${IMGS[0]}" image/png >"$T/req.json"
code=$(curl -s -o "$T/r.json" -w '%{http_code}' "http://127.0.0.1:$port/v1/chat/completions" -d @"$T/req.json")
expect_eq "images without --mmproj" "$code" "400"
kill $serve_pid; wait $serve_pid 2>/dev/null

# ---- bad input: one line naming the file, non-zero exit, no crash
head -c 300 "${IMGS[0]}" >"$T/trunc.png"
expect_error "trunc.png: truncated PNG" "$EDGELLM" embed-image --mmproj "$T/clip.gguf" --image "$T/trunc.png" -o "$T/x.f32"
head -c 200 "${IMGS[1]}" >"$T/trunc.jpg"
expect_error "trunc.jpg: truncated JPEG" "$EDGELLM" embed-image --mmproj "$T/clip.gguf" --image "$T/trunc.jpg" -o "$T/x.f32"
"$PY" - "${IMGS[0]}" "$T/corrupt.png" <<'PY'
import sys
d = bytearray(open(sys.argv[1], "rb").read())
d[60] ^= 0xA5  # inside the image data: its chunk's CRC no longer matches
open(sys.argv[2], "wb").write(d)
PY
expect_error "corrupt.png: corrupt PNG" "$EDGELLM" run -m "$T/llm.gguf" --mmproj "$T/clip.gguf" --image "$T/corrupt.png" -p x
"$PY" - "$T/bomb.png" <<'PY'
import struct, sys, zlib
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
raw = zlib.compress(b"\0" * 4096)  # a few bytes that would inflate to nothing like 2.7 GB
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
                              + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
PY
expect_error "bomb.png: the header declares 30000 x 30000 pixels" "$EDGELLM" embed-image --mmproj "$T/clip.gguf" \
  --image "$T/bomb.png" -o "$T/x.f32"
expect_error "text.txt: not a PNG or JPEG image" "$EDGELLM" run -m "$T/llm.gguf" --mmproj "$T/clip.gguf" --image "$T/text.txt" -p x
"$EDGELLM" synth --dim 32 --mmproj "$T/narrow.gguf" 2>/dev/null
expect_error "narrow.gguf: the projector's output width 32 does not match" "$EDGELLM" run -m "$T/llm.gguf" \
  --mmproj "$T/narrow.gguf" --image "${IMGS[0]}" -p x
"$PY" - "$T/clip.gguf" "$T/missing.gguf" <<'PY'
import sys
d = open(sys.argv[1], "rb").read()
old = b"v.blk.1.attn_k.weight"
assert d.count(old) == 1
open(sys.argv[2], "wb").write(d.replace(old, b"v.blk.1.attn_x.weight"))  # the same length: offsets stay valid
PY
expect_error "missing.gguf: missing tensor v.blk.1.attn_k.weight" "$EDGELLM" embed-image --mmproj "$T/missing.gguf" \
  --image "${IMGS[0]}" -o "$T/x.f32"
expect_error "not a projector file" "$EDGELLM" embed-image --mmproj "$T/llm.gguf" --image "${IMGS[0]}" -o "$T/x.f32"
expect_error "--image needs --mmproj" "$EDGELLM" run -m "$T/llm.gguf" --image "${IMGS[0]}" -p x
expect_error "2 image markers" "$EDGELLM" run -m "$T/llm.gguf" --mmproj "$T/clip.gguf" --image "${IMGS[0]}" \
  -p "<image> and <image>"
finish
