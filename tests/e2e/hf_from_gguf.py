#!/usr/bin/env python3
"""Writes a Hugging Face model folder holding the same weights as a GGUF made
by `edgellm synth` (f32, f16 or bf16), for the import test. Standard library
only: a minimal GGUF reader, the inverse of the llama q/k row permutation
(GGUF row h*hd + 2i + e came from HF row h*hd + e*hd/2 + i), safetensors
writing (optionally in two shards with an index), config.json and a small
tokenizer.json.

usage: hf_from_gguf.py IN.gguf OUT_DIR [--shards 2] [--mistral] [--spm] [--no-unpermute]
(--no-unpermute leaves llama q/k rows in GGUF order: a deliberately wrong
folder, to show the logits comparison notices.)
Also checks a llama3 GGUF's rope_freqs.weight against the Llama 3.1 formula
computed here (exit 1 on mismatch)."""
import json
import math
import os
import struct
import sys

SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
DT = {0: ("F32", 4), 1: ("F16", 2), 30: ("BF16", 2)}


def read_gguf(path):
    data = open(path, "rb").read()
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, data, pos)[0]
        pos += struct.calcsize(fmt)
        return v

    def string():
        nonlocal pos
        n = take("<Q")
        s = data[pos:pos + n]
        pos += n
        return s.decode("utf-8", "surrogateescape")

    def value(t):
        if t == 8:
            return string()
        if t == 9:
            at, n = take("<I"), take("<Q")
            return [value(at) for _ in range(n)]
        return take(SCALAR[t])

    assert data[:4] == b"GGUF", path
    pos = 4
    take("<I")
    n_t, n_kv = take("<Q"), take("<Q")
    kv = {}
    for _ in range(n_kv):
        k = string()
        kv[k] = value(take("<I"))
    infos = []
    for _ in range(n_t):
        name = string()
        nd = take("<I")
        ne = [take("<Q") for _ in range(nd)]
        dt = take("<I")
        off = take("<Q")
        infos.append((name, ne, dt, off))
    align = kv.get("general.alignment", 32)
    base = (pos + align - 1) // align * align
    tensors = {}
    for name, ne, dt, off in infos:
        esz = DT[dt][1]
        n = 1
        for d in ne:
            n *= d
        tensors[name] = (ne, dt, data[base + off: base + off + n * esz])
    return kv, tensors


def unpermute(raw, rows, cols, heads, esz):
    """HF row order from GGUF's interleaved rope order."""
    hd = rows // heads
    row = cols * esz
    out = bytearray(len(raw))
    for h in range(heads):
        for i in range(hd // 2):
            for e in range(2):
                src = h * hd + 2 * i + e
                dst = h * hd + e * (hd // 2) + i
                out[dst * row:(dst + 1) * row] = raw[src * row:(src + 1) * row]
    return bytes(out)


def write_safetensors(path, items):
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, dtype, shape, raw in items:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


REGEX = {
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "llama3": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}


def byte_level_tokenizer(vocab_size, regex):
    """256 byte tokens, merges up to vocab_size - 2, then two special tokens."""
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    merges = []
    words = ["Ġt", "he", "Ġthe", "in", "er", "an", "on", "Ġa", "re", "at", "en", "or", "ed", "is", "it", "Ġs"]
    pairs = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("e", "r"), ("a", "n"), ("o", "n"), ("Ġ", "a"),
             ("r", "e"), ("a", "t"), ("e", "n"), ("o", "r"), ("e", "d"), ("i", "s"), ("i", "t"), ("Ġ", "s")]
    for w, p in zip(words, pairs):
        if len(vocab) >= vocab_size - 2:
            break
        vocab[w] = len(vocab)
        merges.append(p if len(merges) % 2 else " ".join(p))  # both spellings of a merge
    while len(vocab) < vocab_size - 2:
        vocab["x%d" % len(vocab)] = len(vocab)
    added = [{"id": vocab_size - 2, "content": "<|endoftext|>", "special": True},
             {"id": vocab_size - 1, "content": "<|im_start|>", "special": True}]
    pre = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}
    return {"version": "1.0", "added_tokens": added, "pre_tokenizer": pre,
            "model": {"type": "BPE", "vocab": vocab, "merges": merges, "byte_fallback": False}}


def spm_tokenizer(kv):
    toks = kv["tokenizer.ggml.tokens"]
    types = kv["tokenizer.ggml.token_type"]
    vocab = {t: i for i, t in enumerate(toks) if types[i] != 3}
    added = [{"id": i, "content": t, "special": True} for i, t in enumerate(toks) if types[i] == 3]
    return {"version": "1.0", "added_tokens": added, "pre_tokenizer": None,
            "model": {"type": "BPE", "vocab": vocab, "merges": [], "byte_fallback": True, "unk_token": "<unk>"}}


def llama3_divisors(hd, theta, factor=8.0, low=1.0, high=4.0, orig=8192):
    out = []
    for i in range(hd // 2):
        wavelen = 2 * math.pi / theta ** (-2.0 * i / hd)
        if wavelen < orig / high:
            out.append(1.0)
        elif wavelen > orig / low:
            out.append(factor)
        else:
            s = (orig / wavelen - low) / (high - low)
            out.append(1 / ((1 - s) / factor + s))
    return out


def main():
    src, out = sys.argv[1], sys.argv[2]
    shards = int(sys.argv[sys.argv.index("--shards") + 1]) if "--shards" in sys.argv else 1
    kv, t = read_gguf(src)
    arch = kv["general.architecture"]
    g = lambda k: kv["%s.%s" % (arch, k)]
    dim, layers, heads, kvh = g("embedding_length"), g("block_count"), g("attention.head_count"), g("attention.head_count_kv")
    hd = dim // heads
    vocab = t["token_embd.weight"][0][1]
    llama3 = "rope_freqs.weight" in t
    if llama3:
        ne, dt, raw = t["rope_freqs.weight"]
        got = struct.unpack("<%df" % ne[0], raw)
        want = llama3_divisors(hd, g("rope.freq_base"))
        if any(abs(a - b) > 1e-5 * b for a, b in zip(got, want)):
            print("rope_freqs.weight %s differs from the Llama 3.1 formula %s" % (got, want), file=sys.stderr)
            sys.exit(1)
    os.makedirs(out, exist_ok=True)
    items = []

    def put(hf, gg, permute_heads=0):
        ne, dt, raw = t[gg]
        name, esz = DT[dt]
        shape = [ne[1], ne[0]] if len(ne) == 2 else [ne[0]]
        if permute_heads and "--no-unpermute" not in sys.argv:
            raw = unpermute(raw, ne[1], ne[0], permute_heads, esz)
        items.append((hf, name, shape, raw))

    put("model.embed_tokens.weight", "token_embd.weight")
    for l in range(layers):
        p, b = "model.layers.%d." % l, "blk.%d." % l
        put(p + "input_layernorm.weight", b + "attn_norm.weight")
        put(p + "self_attn.q_proj.weight", b + "attn_q.weight", 0 if arch == "qwen2" else heads)
        put(p + "self_attn.k_proj.weight", b + "attn_k.weight", 0 if arch == "qwen2" else kvh)
        put(p + "self_attn.v_proj.weight", b + "attn_v.weight")
        if arch == "qwen2":
            for x in "qkv":
                put(p + "self_attn.%s_proj.bias" % x, b + "attn_%s.bias" % x)
        put(p + "self_attn.o_proj.weight", b + "attn_output.weight")
        put(p + "post_attention_layernorm.weight", b + "ffn_norm.weight")
        put(p + "mlp.gate_proj.weight", b + "ffn_gate.weight")
        put(p + "mlp.up_proj.weight", b + "ffn_up.weight")
        put(p + "mlp.down_proj.weight", b + "ffn_down.weight")
    put("model.norm.weight", "output_norm.weight")
    put("lm_head.weight", "output.weight")
    if shards == 1:
        write_safetensors(os.path.join(out, "model.safetensors"), items)
    else:
        per = (len(items) + shards - 1) // shards
        wm = {}
        for s in range(shards):
            fn = "model-%05d-of-%05d.safetensors" % (s + 1, shards)
            part = items[s * per:(s + 1) * per]
            write_safetensors(os.path.join(out, fn), part)
            wm.update({it[0]: fn for it in part})
        json.dump({"metadata": {}, "weight_map": wm}, open(os.path.join(out, "model.safetensors.index.json"), "w"))
    name = {"qwen2": "Qwen2ForCausalLM"}.get(arch, "MistralForCausalLM" if "--mistral" in sys.argv else "LlamaForCausalLM")
    cfg = {"architectures": [name], "model_type": name[:-len("ForCausalLM")].lower(), "hidden_size": dim,
           "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kvh,
           "intermediate_size": g("feed_forward_length"), "vocab_size": vocab,
           "max_position_embeddings": g("context_length"), "rms_norm_eps": g("attention.layer_norm_rms_epsilon"),
           "rope_theta": g("rope.freq_base"), "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": [2, 3],
           "torch_dtype": "float32", "hidden_act": "silu"}
    if llama3:
        cfg["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 8192}
    if "--mistral" in sys.argv:
        cfg["sliding_window"] = 4096
    if arch == "qwen2":
        cfg.update({"sliding_window": 4096, "use_sliding_window": False})
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
    if "--spm" in sys.argv:
        tok = spm_tokenizer(kv)
        tc = {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True}
    else:
        tok = byte_level_tokenizer(vocab, REGEX["qwen2" if arch == "qwen2" else "llama3"])
        tc = {"bos_token": None, "eos_token": {"content": "<|endoftext|>"},
              "chat_template": "{% for m in messages %}<|im_start|>{{ m['content'] }}{% endfor %}"}
    json.dump(tok, open(os.path.join(out, "tokenizer.json"), "w"), ensure_ascii=False)
    json.dump(tc, open(os.path.join(out, "tokenizer_config.json"), "w"))


main()
