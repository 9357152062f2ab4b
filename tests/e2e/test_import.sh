#!/usr/bin/env bash
# Model families and Hugging Face import, end to end:
# - synth --family qwen2|llama3 round-trips through GGUF: info names the family,
#   logits run, quantize keeps the family and its extra tensors;
# - a HF folder written here from a synth GGUF (hf_from_gguf.py: the inverse
#   q/k permutation, HF names, config.json, tokenizer.json) imports to a GGUF
#   whose logits equal the original's bit for bit (f32, f16, bf16, two shards);
# - a folder with the q/k rows left unpermuted gives different logits (the
#   comparison can fail);
# - malformed folders, JSON and safetensors give one clear error line.
source "$(dirname "$0")/lib.sh"
PY=$EL_SRC/tests/e2e/hf_from_gguf.py
DATA=$EL_SRC/data/finetune
TOK=1,7,42,299,3,150,77,5
shape=(--dim 64 --layers 2 --heads 4 --kv-heads 2 --ff 96 --vocab 300 --ctx 256)

same_logits() {  # WHAT A.gguf B.gguf
  "$EDGELLM" logits -m "$2" --tokens $TOK -o "$T/a.f32" 2>/dev/null &&
    "$EDGELLM" logits -m "$3" --tokens $TOK -o "$T/b.f32" 2>/dev/null
  if cmp -s "$T/a.f32" "$T/b.f32" && [ -s "$T/a.f32" ]; then pass; else fail "$1: logits of $2 and $3 differ"; fi
}

# ---- synth families round trip
for fam in qwen2 llama3; do
  "$EDGELLM" synth "${shape[@]}" --family $fam --type f32 -o "$T/$fam.gguf" 2>/dev/null || fail "synth $fam"
  fline=$("$EDGELLM" info "$T/$fam.gguf" | grep '^family:')
  "$EDGELLM" quantize "$T/$fam.gguf" "$T/$fam-q8.gguf" q8_0 2>/dev/null || fail "quantize $fam"
  expect_eq "$fam family kept by quantize" "$("$EDGELLM" info "$T/$fam-q8.gguf" | grep '^family:')" "$fline"
  "$EDGELLM" logits -m "$T/$fam-q8.gguf" -p "hello there" -o "$T/q.f32" 2>/dev/null || fail "logits $fam q8_0"
  expect_eq "$fam q8_0 logits size" "$(stat -c %s "$T/q.f32")" "$(( 4 * 300 * $("$EDGELLM" tokenize -m "$T/$fam.gguf" -p "hello there" 2>/dev/null | wc -w) ))"
done
echo "hello world, some text to train on for one step" >"$T/d.txt"
"$EDGELLM" finetune -m "$T/qwen2.gguf" --data "$T/d.txt" --steps 1 --ctx 8 -o "$T/ad.gguf" >/dev/null 2>&1 &&
  pass || fail "finetune of a qwen2 (neox rope, q/k/v biases) model"
"$EDGELLM" finetune -m "$T/llama3.gguf" --data "$T/d.txt" --steps 1 --ctx 8 -o "$T/ad.gguf" >/dev/null 2>&1 &&
  pass || fail "finetune of a llama3 (rope_freqs) model"
expect_eq "qwen2 family" "$("$EDGELLM" info "$T/qwen2.gguf" | grep '^family:')" "family:        Qwen2 (neox rope, q/k/v biases)"
expect_eq "llama3 family" "$("$EDGELLM" info "$T/llama3.gguf" | grep '^family:')" "family:        Llama 3 (normal rope, rope_freqs scaling)"
expect_eq "qwen2 bias tensors" "$("$EDGELLM" info "$T/qwen2-q8.gguf" | grep -c 'attn_[qkv].bias  *f32')" 6
expect_eq "llama3 rope_freqs kept f32" "$("$EDGELLM" info "$T/llama3-q8.gguf" | grep -c 'rope_freqs.weight  *f32')" 1

# ---- split inference of the families: worker serves layer 1, device the rest; f32 activations give
# the local logits exactly; a worker with the other family's file is refused (identity differs)
for fam in qwen2 llama3; do
  port=$(free_port)
  start_worker "$T/w-$fam.log" -m "$T/$fam.gguf" --layers 1:2 --listen tcp://127.0.0.1:$port --insecure -t 1 || { fail "worker $fam"; continue; }
  "$EDGELLM" logits -m "$T/$fam.gguf" --tokens $TOK -o "$T/local.f32" 2>/dev/null
  "$EDGELLM" logits -m "$T/$fam.gguf" --tokens $TOK -o "$T/split.f32" --split 1 --via tcp://127.0.0.1:$port --insecure 2>"$T/split.err" ||
    fail "split logits $fam: $(cat "$T/split.err")"
  cmp -s "$T/local.f32" "$T/split.f32" && pass || fail "split logits of $fam differ from local"
  other=qwen2; [ $fam = qwen2 ] && other=llama3
  "$EDGELLM" logits -m "$T/$other.gguf" --tokens $TOK -o "$T/x.f32" --split 1 --via tcp://127.0.0.1:$port --insecure 2>/dev/null &&
    fail "a $other device was served by a $fam worker" || pass
done

# ---- HF folder -> import -> same logits
for fam in qwen2 llama3; do
  for dt in f32 f16 bf16; do
    "$EDGELLM" synth "${shape[@]}" --family $fam --type $dt -o "$T/s.gguf" 2>/dev/null
    shards=1; [ $dt = bf16 ] && shards=2
    rm -rf "$T/hf"; python3 "$PY" "$T/s.gguf" "$T/hf" --shards $shards || fail "hf_from_gguf $fam $dt"
    "$EDGELLM" import "$T/hf" -o "$T/imp.gguf" --type $dt 2>"$T/imp.err" || fail "import $fam $dt: $(cat "$T/imp.err")"
    grep -q "^import: .*100%" "$T/imp.err" && pass || fail "import $fam $dt shows no progress line"
    same_logits "import $fam $dt (shards $shards)" "$T/s.gguf" "$T/imp.gguf"
    # an imported checkpoint fine-tunes (its byte-level tokenizer cuts the text
    # otherwise than the synth vocabulary, so the adapter is its own)
    if [ $dt = f32 ]; then
      "$EDGELLM" finetune -m "$T/imp.gguf" --data "$DATA/pirate-dreams.txt" --val "$DATA/pirate-dreams-val.txt" \
        --steps 60 --batch 4 --ctx 64 --lr 1e-2 -t 2 -o "$T/ad-imp.gguf" 2>"$T/ft.err" || fail "finetune imported $fam"
      python3 - "$T/ft.err" <<'PY' && pass || fail "imported $fam: validation loss did not fall by 30%"
import re, sys
m = re.search(r"validation loss ([0-9.]+) -> ([0-9.]+)", open(sys.argv[1]).read())
sys.exit(0 if m and float(m.group(2)) < 0.7 * float(m.group(1)) else 1)
PY
    fi
  done
done
# the imported byte-level tokenizer metadata
"$EDGELLM" synth "${shape[@]}" --family qwen2 -o "$T/s.gguf" 2>/dev/null
rm -rf "$T/hf"; python3 "$PY" "$T/s.gguf" "$T/hf"
"$EDGELLM" import "$T/hf" -o "$T/imp.gguf" 2>/dev/null
info=$("$EDGELLM" info "$T/imp.gguf")
expect_eq "default type f16" "$(grep -c 'attn_q.weight  *f16' <<<"$info")" 2
expect_eq "tokenizer model" "$(grep 'tokenizer.ggml.model ' <<<"$info" | awk '{print $2}')" '"gpt2"'
expect_eq "qwen2 pre" "$(grep 'tokenizer.ggml.pre ' <<<"$info" | awk '{print $2}')" '"qwen2"'
expect_eq "merges as pairs and strings" "$(grep 'tokenizer.ggml.merges' <<<"$info" | grep -o '\[string x [0-9]*\]')" "[string x 16]"
expect_eq "eos from tokenizer_config" "$(grep 'eos_token_id' <<<"$info" | awk '{print $2}')" 298
expect_eq "special token typed control" "$("$EDGELLM" info --all "$T/imp.gguf" | grep 'token_type' | grep -o '3, 3$')" "3, 3"
grep -q 'tokenizer.chat_template' <<<"$info" && pass || fail "chat_template not copied"
"$EDGELLM" synth "${shape[@]}" --family llama3 -o "$T/s.gguf" 2>/dev/null
rm -rf "$T/hf"; python3 "$PY" "$T/s.gguf" "$T/hf"
"$EDGELLM" import "$T/hf" -o "$T/imp.gguf" 2>/dev/null
expect_eq "llama3 pre" "$("$EDGELLM" info "$T/imp.gguf" | grep 'tokenizer.ggml.pre ' | awk '{print $2}')" '"llama-bpe"'

# Mistral with a SentencePiece-style (byte fallback) tokenizer: same logits,
# and the imported tokenizer tokenizes text as the synth one does.
"$EDGELLM" synth "${shape[@]}" --type f32 -o "$T/m.gguf" 2>/dev/null
rm -rf "$T/hf"; python3 "$PY" "$T/m.gguf" "$T/hf" --mistral --spm
"$EDGELLM" import "$T/hf" -o "$T/imp.gguf" --type f32 2>/dev/null || fail "import mistral"
same_logits "import mistral" "$T/m.gguf" "$T/imp.gguf"
expect_eq "mistral family" "$("$EDGELLM" info "$T/imp.gguf" | grep '^family:')" "family:        Mistral (normal rope, sliding window 4096)"
expect_eq "spm tokens" "$("$EDGELLM" tokenize -m "$T/imp.gguf" -p "hello there, ok" 2>/dev/null)" \
  "$("$EDGELLM" tokenize -m "$T/m.gguf" -p "hello there, ok" 2>/dev/null)"

# The comparison notices a wrong folder: q/k rows not un-permuted.
rm -rf "$T/hf"; python3 "$PY" "$T/m.gguf" "$T/hf" --no-unpermute
"$EDGELLM" import "$T/hf" -o "$T/bad.gguf" --type f32 2>/dev/null
"$EDGELLM" logits -m "$T/bad.gguf" --tokens $TOK -o "$T/c.f32" 2>/dev/null
"$EDGELLM" logits -m "$T/m.gguf" --tokens $TOK -o "$T/a.f32" 2>/dev/null
cmp -s "$T/a.f32" "$T/c.f32" && fail "unpermuted q/k gave the same logits" || pass

# ---- malformed inputs: one error line naming the file and the problem
rm -rf "$T/hf"; python3 "$PY" "$T/m.gguf" "$T/hf" --shards 2
H=$T/hf
cp -r "$H" "$T/good"
reset() { rm -rf "$H"; cp -r "$T/good" "$H"; }
expect_error "config.json: cannot open" "$EDGELLM" import "$T/nowhere" -o "$T/x.gguf"
echo '{"architectures": ["LlamaForCausalLM"], "hidden_size": 64,' >"$H/config.json"
expect_error "config.json:2:1: expected a key string" "$EDGELLM" import "$H" -o "$T/x.gguf"
reset; python3 -c "import json,sys; c=json.load(open(sys.argv[1])); del c['hidden_size']; json.dump(c, open(sys.argv[1],'w'))" "$H/config.json"
expect_error "field hidden_size is missing" "$EDGELLM" import "$H" -o "$T/x.gguf"
reset; python3 -c "import json,sys; c=json.load(open(sys.argv[1])); c['architectures']=['GPT2LMHeadModel']; json.dump(c, open(sys.argv[1],'w'))" "$H/config.json"
expect_error "architecture 'GPT2LMHeadModel' is not supported" "$EDGELLM" import "$H" -o "$T/x.gguf"
reset; python3 -c "import json,sys; c=json.load(open(sys.argv[1])); c['intermediate_size']=1e30; json.dump(c, open(sys.argv[1],'w'))" "$H/config.json"
expect_error "intermediate_size is not an integer" "$EDGELLM" import "$H" -o "$T/x.gguf"
reset; python3 -c "import json,sys; c=json.load(open(sys.argv[1])); c['intermediate_size']=128; json.dump(c, open(sys.argv[1],'w'))" "$H/config.json"
expect_error "mlp.gate_proj.weight has shape [96, 64], expected [128, 64]" "$EDGELLM" import "$H" -o "$T/x.gguf"
reset; python3 -c "import json,sys; c=json.load(open(sys.argv[1])); c['rope_scaling']={'type':'yarn','factor':4}; json.dump(c, open(sys.argv[1],'w'))" "$H/config.json"
expect_error "rope_scaling type 'yarn' is not supported" "$EDGELLM" import "$H" -o "$T/x.gguf"
reset; python3 -c "import json,sys; c=json.load(open(sys.argv[1])); c['attention_bias']=True; json.dump(c, open(sys.argv[1],'w'))" "$H/config.json"
expect_error "attention_bias / mlp_bias on a Llama model is not supported" "$EDGELLM" import "$H" -o "$T/x.gguf"
reset; rm "$H/model-00002-of-00002.safetensors"
expect_error "model-00002-of-00002.safetensors: cannot open" "$EDGELLM" import "$H" -o "$T/x.gguf"
reset; python3 -c "import json,sys; c=json.load(open(sys.argv[1])); c['weight_map']['model.norm.weight']='../etc/passwd'; json.dump(c, open(sys.argv[1],'w'))" "$H/model.safetensors.index.json"
expect_error "weight_map entry of model.norm.weight is not a file name" "$EDGELLM" import "$H" -o "$T/x.gguf"
reset; f=$H/model-00001-of-00002.safetensors; head -c 2000 "$f" >"$T/t" && mv "$T/t" "$f"
expect_error "model-00001-of-00002.safetensors: tensor" "$EDGELLM" import "$H" -o "$T/x.gguf"
grep -q "outside the" "$T/err" && pass || fail "truncated shard error: $(cat "$T/err")"
reset; printf '\xff\xff\xff\xff\x00\x00\x00\x00{}' >"$H/model-00001-of-00002.safetensors"
expect_error "header length 4294967295 is over the" "$EDGELLM" import "$H" -o "$T/x.gguf"
reset; python3 - "$H/model-00002-of-00002.safetensors" <<'EOF'
import json, struct, sys
p = sys.argv[1]; d = open(p, "rb").read(); n = struct.unpack("<Q", d[:8])[0]; h = json.loads(d[8:8 + n])
k = [x for x in h if x != "__metadata__"][0]; h[k]["shape"] = [1 << 40, 1 << 40]
b = json.dumps(h).encode(); open(p, "wb").write(struct.pack("<Q", len(b)) + b + d[8 + n:])
EOF
expect_error "absurd shape" "$EDGELLM" import "$H" -o "$T/x.gguf"
reset; python3 - "$H/model-00002-of-00002.safetensors" <<'EOF'
import json, struct, sys
p = sys.argv[1]; d = open(p, "rb").read(); n = struct.unpack("<Q", d[:8])[0]; h = json.loads(d[8:8 + n])
k = [x for x in h if x != "__metadata__"][0]; h[k]["dtype"] = "F8_E4M3"
b = json.dumps(h).encode(); open(p, "wb").write(struct.pack("<Q", len(b)) + b + d[8 + n:])
EOF
expect_error "dtype 'F8_E4M3'" "$EDGELLM" import "$H" -o "$T/x.gguf"
reset; python3 -c "
import json,sys; t=json.load(open(sys.argv[1])); t['model']['byte_fallback']=False
t['pre_tokenizer']={'type':'Sequence','pretokenizers':[{'type':'Split','pattern':{'Regex':'[a-z]+'}},{'type':'ByteLevel'}]}
json.dump(t, open(sys.argv[1],'w'))" "$H/tokenizer.json"
expect_error "pre-tokenizer regex '[a-z]+...' is not the GPT-2, Llama 3 or Qwen2 one" "$EDGELLM" import "$H" -o "$T/x.gguf"
reset; python3 -c "
import json,sys; t=json.load(open(sys.argv[1])); t['pre_tokenizer']['pretokenizers'][0]['pattern']={'String':' '}
json.dump(t, open(sys.argv[1],'w'))" "$H/tokenizer.json"
expect_error "pre-tokenizer type 'Split without a Regex pattern' is not supported" "$EDGELLM" import "$H" -o "$T/x.gguf"
reset; python3 -c "
import json,sys; t=json.load(open(sys.argv[1])); t['pre_tokenizer']['pretokenizers'][1]['add_prefix_space']=True
json.dump(t, open(sys.argv[1],'w'))" "$H/tokenizer.json"
expect_error "'ByteLevel with add_prefix_space' is not supported" "$EDGELLM" import "$H" -o "$T/x.gguf"
# a merge of pieces the vocabulary lacks would make a GGUF that does not load
reset; python3 -c "
import json,sys; t=json.load(open(sys.argv[1])); t['model']['merges'].append('zz yy')
json.dump(t, open(sys.argv[1],'w'))" "$H/tokenizer.json"
expect_error '"zz" is not in the vocabulary' "$EDGELLM" import "$H" -o "$T/x.gguf"
grep -q "tokenizer.json" "$T/err" && pass || fail "bad merge error does not name tokenizer.json: $(cat "$T/err")"
# Llama 3 asks for BOS through its post-processor; named chat templates pick "default"
reset; python3 -c "
import json,sys; t=json.load(open(sys.argv[1]))
t['post_processor']={'type':'TemplateProcessing','single':[{'SpecialToken':{'id':'<|im_start|>','type_id':0}},{'Sequence':{'id':'A','type_id':0}}]}
json.dump(t, open(sys.argv[1],'w'))
c=json.load(open(sys.argv[2])); c['bos_token']='<|im_start|>'
c['chat_template']=[{'name':'tool_use','template':'{{ tools }}'},{'name':'default','template':'<|start_header_id|>{{ x }}<|eot_id|>'}]
json.dump(c, open(sys.argv[2],'w'))" "$H/tokenizer.json" "$H/tokenizer_config.json"
"$EDGELLM" import "$H" -o "$T/pp.gguf" 2>/dev/null || fail "import with a post-processor"
"$EDGELLM" info "$T/pp.gguf" >"$T/pp.info" 2>&1
grep -q "tokenizer.ggml.add_bos_token.*true" "$T/pp.info" && pass || fail "add_bos_token not taken from the post-processor: $(grep -i bos "$T/pp.info")"
grep -q "tokenizer.chat_template.*start_header_id" "$T/pp.info" && pass || fail "the default named chat template was not taken: $(grep chat_template "$T/pp.info")"
# f16 cannot hold a weight of 1e6: refused, not turned into inf
reset; python3 - "$H/model-00001-of-00002.safetensors" <<'PYEOF'
import json, struct, sys
p = sys.argv[1]; d = bytearray(open(p, "rb").read()); n = struct.unpack("<Q", d[:8])[0]; h = json.loads(d[8:8 + n])
k = sorted(x for x in h if x != "__metadata__" and "proj" in x)[0]; off = 8 + n + h[k]["data_offsets"][0]
if h[k]["dtype"] == "F32": d[off:off + 4] = struct.pack("<f", 1e6)
else: d[off:off + 2] = struct.pack("<f", 1e6)[2:]  # bf16: the high half of the f32
open(p, "wb").write(bytes(d))
PYEOF
expect_error "beyond the f16 range (65504); import with --type bf16 or f32" "$EDGELLM" import "$H" -o "$T/x.gguf"
"$EDGELLM" import "$H" -o "$T/bf.gguf" --type bf16 2>/dev/null && pass || fail "the same folder as bf16"
reset; head -c 100 "$H/tokenizer.json" >"$T/t" && mv "$T/t" "$H/tokenizer.json"
expect_error "tokenizer.json:1:" "$EDGELLM" import "$H" -o "$T/x.gguf"
expect_error "--type 'q4' is not one of f32, f16, bf16" "$EDGELLM" import "$H" -o "$T/x.gguf" --type q4
"$EDGELLM" import --help | grepq "^usage: edgellm import" && pass || fail "import --help"
[ -e "$T/x.gguf" ] && fail "a failed import left $T/x.gguf" || pass

finish
