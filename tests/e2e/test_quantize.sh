#!/usr/bin/env bash
# Quantized files end to end: aidreams -> each type -> run and perplexity; the
# per-tensor fallback for ffn_down (172 columns); corrupt and truncated files.
source "$(dirname "$0")/lib.sh"
TEXT=${EL_SRC:-$(dirname "$0")/../..}/data/dreams-eval.txt

"$EDGELLM" convert "$MODELS/aidreams260K.bin" "$T/aid.gguf" -z "$MODELS/tok512.bin" 2>/dev/null || fail "convert"
ppl() { "$EDGELLM" perplexity -m "$1" -f "$TEXT" -t 2 2>/dev/null | awk '{print $2}'; }
base=$(ppl "$T/aid.gguf")
[ -n "$base" ] && pass || fail "f32 perplexity failed"

for type in f16 bf16 q8_0 q4_0 q4_k q6_k q4_k_m; do
  "$EDGELLM" quantize "$T/aid.gguf" "$T/aid-$type.gguf" "$type" -t 2 2>"$T/q.err" || { fail "quantize $type: $(cat "$T/q.err")"; continue; }
  [ ! -e "$T/aid-$type.gguf.tmp" ] && pass || fail "$type: temporary file left behind"
  out=$("$EDGELLM" run -m "$T/aid-$type.gguf" -p "The dream" -n 20 --temp 0 -t 2 2>/dev/null)
  [[ "$out" == "The dream"* && ${#out} -gt 30 ]] && pass || fail "$type: run printed '$out'"
  p=$(ppl "$T/aid-$type.gguf")
  # every type stays within 5% of f32 on this model; q8_0 within 1%
  python3 -c "import sys; b,p,tol=float('$base'),float('$p'),(0.01 if '$type'=='q8_0' else 0.05); sys.exit(0 if abs(p-b)/b<tol else 1)" \
    && pass || fail "$type: perplexity $p vs f32 $base"
  ftype=$("$EDGELLM" info "$T/aid-$type.gguf" | awk '$1=="general.file_type"{print $2}')
  case $type in f16) want=1;; bf16) want=32;; q8_0) want=7;; q4_0) want=2;; q4_k) want=14;; q6_k) want=18;; q4_k_m) want=15;; esac
  expect_eq "$type general.file_type" "$ftype" "$want"
  if [ "$type" = q4_0 ]; then
    grep -q "4 tensors stored as f16 instead of q4_0: rows of 172 elements are not a multiple of 32 (blk.0.ffn_down.weight" "$T/q.err" \
      && pass || fail "q4_0 fallback message: $(cat "$T/q.err")"
    dt=$("$EDGELLM" info "$T/aid-q4_0.gguf" | awk '$1=="blk.2.ffn_down.weight"{print $2} $1=="blk.2.attn_q.weight"{print $2}' | tr '\n' ' ')
    expect_eq "q4_0 tensor dtypes (ffn_down, attn_q)" "$dt" "q4_0 f16 "
  fi
  if [ "$type" = q4_k ]; then
    grep -q "stored as f16 instead of q4_k: rows of 172 elements are not a multiple of 256 nor of 32" "$T/q.err" \
      && pass || fail "q4_k fallback message: $(cat "$T/q.err")"
  fi
done

expect_error "is not one of f16, bf16" "$EDGELLM" quantize "$T/aid.gguf" "$T/x.gguf" q3_k
expect_error "OUT.gguf must differ" "$EDGELLM" quantize "$T/aid.gguf" "$T/aid.gguf" q8_0

# A NaN scale in the last block of blk.1.attn_q.weight is named at load time.
python3 - "$T/aid-q8_0.gguf" "$T/nan.gguf" <<'PY'
import struct, sys
data = bytearray(open(sys.argv[1], "rb").read())
# walk the GGUF header to the tensor infos
off = 4 + 4; n_t, n_kv = struct.unpack_from("<QQ", data, off); off += 16
def skip_val(t, off):
    if t in (0, 1, 7): return off + 1
    if t in (2, 3): return off + 2
    if t in (4, 5, 6): return off + 4
    if t in (10, 11, 12): return off + 8
    if t == 8: (n,) = struct.unpack_from("<Q", data, off); return off + 8 + n
    if t == 9:
        (at, n) = struct.unpack_from("<IQ", data, off); off += 12
        for _ in range(n): off = skip_val(at, off)
        return off
    raise SystemExit("bad type %d" % t)
align = 32
for _ in range(n_kv):
    (kl,) = struct.unpack_from("<Q", data, off); key = data[off + 8:off + 8 + kl].decode(); off += 8 + kl
    (t,) = struct.unpack_from("<I", data, off); off += 4
    if key == "general.alignment": (align,) = struct.unpack_from("<I", data, off)
    off = skip_val(t, off)
infos = []
for _ in range(n_t):
    (nl,) = struct.unpack_from("<Q", data, off); name = data[off + 8:off + 8 + nl].decode(); off += 8 + nl
    (nd,) = struct.unpack_from("<I", data, off); off += 4
    ne = struct.unpack_from("<%dQ" % nd, data, off); off += 8 * nd
    dt, toff = struct.unpack_from("<IQ", data, off); off += 12
    infos.append((name, ne, dt, toff))
base = (off + align - 1) // align * align
for name, ne, dt, toff in infos:
    if name == "blk.1.attn_q.weight":
        assert dt == 8, dt
        nblocks = ne[0] * ne[1] // 32
        struct.pack_into("<H", data, base + toff + (nblocks - 1) * 34, 0x7E00)
open(sys.argv[2], "wb").write(data)
PY
expect_error "tensor blk.1.attn_q.weight block 127 has a NaN or infinite scale" "$EDGELLM" run -m "$T/nan.gguf" -p "The" -n 2
expect_error "blk.1.attn_q.weight block 127 has a NaN" "$EDGELLM" quantize "$T/nan.gguf" "$T/x.gguf" q4_0

# A truncated quantized file names the tensor that runs past the end.
size=$(stat -c %s "$T/aid-q4_0.gguf")
head -c $((size - 100)) "$T/aid-q4_0.gguf" >"$T/trunc.gguf"
expect_error "output_norm.weight' data" "$EDGELLM" run -m "$T/trunc.gguf" -p "The" -n 2

# A tokenizer that adds no BOS (GPT-2's vocabulary, as Qwen2's): perplexity
# puts no BOS in front, takes the text's first token as context only, and in
# one window its value is the one computed from the model's raw logits.
VOCAB=$MODELS/reference/ggml-vocab-gpt-2.gguf
"$EDGELLM" synth --dim 32 --layers 2 --heads 2 --ff 64 --vocab 50257 --ctx 512 -o "$T/g2.gguf" 2>/dev/null || fail "synth g2"
head -c 600 "$TEXT" >"$T/short.txt"
ids=$("$EDGELLM" tokenize -z "$VOCAB" -f "$T/short.txt")
"$EDGELLM" logits -m "$T/g2.gguf" --tokens "$(echo $ids | tr ' ' ',')" -o "$T/g2.f32" 2>/dev/null || fail "logits g2"
out=$("$EDGELLM" perplexity -m "$T/g2.gguf" -z "$VOCAB" -f "$T/short.txt" --ctx 512 -t 2 2>/dev/null)
python3 - "$T/g2.f32" "$out" $ids <<'PY' && pass || fail "no-BOS perplexity: $out"
import array, math, re, sys
ids = [int(t) for t in sys.argv[3:]]
V = 50257
l = array.array("f", open(sys.argv[1], "rb").read())
assert len(l) == len(ids) * V and ids[0] != 50256, (len(l), ids[:3])
nll = []
for i in range(len(ids) - 1):  # position i predicts token i + 1
    row = l[i * V:(i + 1) * V]
    mx = max(row)
    nll.append(math.log(sum(math.exp(x - mx) for x in row)) + mx - row[ids[i + 1]])
m = re.match(r"perplexity ([0-9.]+) .*\((\d+) tokens scored in 1 windows", sys.argv[2])
assert m and int(m.group(2)) == len(ids) - 1, sys.argv[2]
want = math.exp(sum(nll) / len(nll))
assert abs(float(m.group(1)) - want) <= 1e-3 * want, (m.group(1), want)
PY
out=$("$EDGELLM" perplexity -m "$T/g2.gguf" -z "$VOCAB" -f "$T/short.txt" --ctx 40 -t 2 2>/dev/null)
n=$(echo $ids | wc -w)
[[ "$out" == *"($((n - 1)) tokens scored in $(((n - 1 + 38) / 39)) windows of 40"* ]] && pass || fail "no-BOS windows: $out"

# bench --json: the figures it derives agree with the ones it measured, and
# the counts it reports are this model's (4 layers of dim 64, ff 172, vocab
# 512; q4_0 except the f16 ffn_down and the f32 norms). No speed is asserted.
"$EDGELLM" bench -m "$T/aid-q4_0.gguf" -p 16 -n 8 -r 2 -t 2 --bw-mib 32 --json >"$T/bench.json" 2>"$T/bench.err" \
  || fail "bench: $(cat "$T/bench.err")"
python3 - "$T/bench.json" <<'PY' && pass || fail "bench --json: $(cat "$T/bench.json")"
import json, sys
b = json.load(open(sys.argv[1]))
close = lambda a, e: abs(a - e) <= 1e-3 * abs(e) + 0.02
params = 4 * (4 * 64 * 64 + 3 * 172 * 64) + 512 * 64
assert b["matmul_params"] == params, b["matmul_params"]
wq, w13, w2, head, norms = 64 * 64 // 32 * 18, 172 * 2 * 18, 64 * 172 * 2, 512 * 2 * 18, (2 * 4 + 1) * 64 * 4
assert b["weight_bytes_per_token"] == 4 * (4 * wq + 2 * w13 + w2) + head + norms, b["weight_bytes_per_token"]
# a decode step also reads the f32 cache rows of the positions so far: 4 layers' keys and values of
# 4 kv heads of 16; positions 16..23 read 17..24 rows, 20.5 on average
kv = 4 * 2 * 64 * 4 * 20.5
assert b["kv_bytes_per_token"] == kv, b["kv_bytes_per_token"]
step_bytes = b["weight_bytes_per_token"] + kv
assert b["prefill_tok_s"] > 0 and b["decode_tok_s"] > 0
# the head (512 x 64) runs for the last of the 16 prompt tokens only
per_token = params - 512 * 64 + 512 * 64 / 16
assert close(b["prefill_params_per_token"], per_token), b["prefill_params_per_token"]
assert close(b["prefill_gflops"], 2 * per_token * b["prefill_tok_s"] * 1e-9)
assert close(b["bandwidth_limited_tok_s"], b["read_bandwidth_gb_s"] * 1e9 / step_bytes)
# the probes run at the kernels' level: none for scalar, the int8 ones only with AVX512-VNNI
assert (b["fma_peak_gflops"] > 0) == (b["isa"] != "scalar"), b
# each repetition is set against the peaks probed around it; the figures are medians
# (this checks the JSON against itself: that the probes bracket each prefill is cmd_bench.c's)
med = lambda v: sorted(v)[len(v) // 2] if len(v) % 2 else 0.5 * (sorted(v)[len(v) // 2 - 1] + sorted(v)[len(v) // 2])
for key in ("prefill_tok_s_per_rep", "fma_peak_per_rep", "int8_dot_peak_per_rep", "block32_ceiling_per_rep"):
    assert len(b[key]) == b["reps"], (key, b[key])
assert close(b["prefill_tok_s"], sum(b["prefill_tok_s_per_rep"]) / b["reps"])
gf = [2 * per_token * t * 1e-9 for t in b["prefill_tok_s_per_rep"]]
for ratio, peak, per_rep in (("prefill_ratio", "fma_peak_gflops", "fma_peak_per_rep"),
                             ("prefill_dot_ratio", "int8_dot_peak_gops", "int8_dot_peak_per_rep"),
                             ("prefill_block32_ratio", "block32_ceiling_gops", "block32_ceiling_per_rep")):
    assert close(b[peak], med(b[per_rep])), (peak, b)
    want = med([g / p if p > 0 else 0 for g, p in zip(gf, b[per_rep])])
    assert abs(b[ratio] - want) <= 1e-3 * want + 1e-4, (ratio, want, b)
# decode: each repetition against the bandwidth probed around it, from its mean step and from its median step
for key in ("decode_tok_s_per_rep", "read_bandwidth_per_rep", "decode_ratio_per_rep",
            "decode_ratio_median_step_per_rep", "decode_time_past_median_step_per_rep"):
    assert len(b[key]) == b["reps"], (key, b[key])
assert close(b["decode_tok_s"], sum(b["decode_tok_s_per_rep"]) / b["reps"])
assert close(b["read_bandwidth_gb_s"], med(b["read_bandwidth_per_rep"]))
# (no read probe at the scalar level: no bandwidth, every decode ratio 0)
probe = b["isa"] != "scalar"
assert all((bw > 0) == probe for bw in b["read_bandwidth_per_rep"]), b
for d, bw, r in zip(b["decode_tok_s_per_rep"], b["read_bandwidth_per_rep"], b["decode_ratio_per_rep"]):
    want = d * step_bytes / (bw * 1e9) if probe else 0
    assert abs(r - want) <= 1e-3 * r + 1e-4, (d, bw, r, b)
assert abs(b["decode_ratio"] - med(b["decode_ratio_per_rep"])) <= 1e-4, b
assert abs(b["decode_ratio_median_step"] - med(b["decode_ratio_median_step_per_rep"])) <= 1e-4, b
assert all(0 <= p < 1 for p in b["decode_time_past_median_step_per_rep"]), b
# the steps' total is at most n median steps plus the time past the median:
# mean step x (1 - past) <= median step, so median-step ratio x (1 - past) <= mean ratio
for r, rs, p in zip(b["decode_ratio_per_rep"], b["decode_ratio_median_step_per_rep"], b["decode_time_past_median_step_per_rep"]):
    assert (0 < rs if probe else rs == 0) and rs * (1 - p) <= r * (1 + 1e-3) + rs * 1e-4 + 2e-4, (r, rs, p)
# prefill with every layer at the median layer's time: the same ratios from
# those tokens/s; the layers' total is at most n median layers plus the time
# past the median, so that speed x (1 - past) <= the prefill's own
ml = "prefill_tok_s_median_layer_per_rep"
for key in (ml, "prefill_ratio_median_layer_per_rep", "prefill_dot_ratio_median_layer_per_rep",
            "prefill_block32_ratio_median_layer_per_rep", "prefill_time_past_median_layer_per_rep"):
    assert len(b[key]) == b["reps"], (key, b[key])
assert close(b["prefill_tok_s_median_layer"], med(b[ml])), b
for ratio, per_rep in (("prefill_ratio", "fma_peak_per_rep"), ("prefill_dot_ratio", "int8_dot_peak_per_rep"),
                       ("prefill_block32_ratio", "block32_ceiling_per_rep")):
    got = b[ratio + "_median_layer_per_rep"]
    for t, p, r in zip(b[ml], b[per_rep], got):
        want = 2 * per_token * t * 1e-9 / p if p > 0 else 0
        assert abs(r - want) <= 1e-3 * want + 2e-4, (ratio, t, p, r, b)
    assert abs(b[ratio + "_median_layer"] - med(got)) <= 1e-4, (ratio, b)
for t, tm, p in zip(b["prefill_tok_s_per_rep"], b[ml], b["prefill_time_past_median_layer_per_rep"]):
    # (p is printed to 4 places: where a gap fills one layer, tm is many times t)
    assert 0 <= p < 1 and 0 < tm and tm * (1 - p) <= t * (1 + 1e-3) + tm * 1e-4 + 0.01, (t, tm, p, b)
vnni = b["vnni"] and b["isa"] == "avx512"
assert (b["int8_dot_peak_gops"] > 0) == vnni and (b["block32_ceiling_gops"] > 0) == vnni, b
PY
finish
