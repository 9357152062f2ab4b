#!/usr/bin/env python3
"""Writes the GGUF seeds for fuzz_tokenizer_gguf: tiny "gpt2" and "llama"
vocabularies. Run: python3 tests/fuzz/corpus/tokenizer_gguf/make_seeds.py"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
U32, I32, BOOL, STR, ARR = 4, 5, 7, 8, 9


def s(x):
    b = x.encode() if isinstance(x, str) else x
    return struct.pack("<Q", len(b)) + b


def kv(key, t, v):
    out = s(key) + struct.pack("<I", t)
    if t == STR:
        return out + s(v)
    if t == ARR:
        et, items = v
        out += struct.pack("<IQ", et, len(items))
        for i in items:
            out += s(i) if et == STR else struct.pack("<i", i)
        return out
    if t == BOOL:
        return out + struct.pack("<B", v)
    return out + struct.pack("<I", v)


def gguf(kvs):
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kv(*x) for x in kvs)


def byte_chars():
    out, extra = [], 0
    for b in range(256):
        if 33 <= b <= 126 or 161 <= b <= 172 or b >= 174:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return out


chars = byte_chars()
toks = chars + ["\u0120t", "he", "\u0120the", "<|endoftext|>"]
types = [1] * (len(toks) - 1) + [3]
merges = ["\u0120 t", "h e", "\u0120t he"]
for pre in ("gpt-2", "llama-bpe", "qwen2", "smollm"):
    with open(os.path.join(HERE, "gpt2-%s.gguf" % pre), "wb") as f:
        f.write(gguf([
            ("tokenizer.ggml.model", STR, "gpt2"),
            ("tokenizer.ggml.pre", STR, pre),
            ("tokenizer.ggml.tokens", ARR, (STR, toks)),
            ("tokenizer.ggml.token_type", ARR, (I32, types)),
            ("tokenizer.ggml.merges", ARR, (STR, merges)),
            ("tokenizer.ggml.bos_token_id", U32, len(toks) - 1),
            ("tokenizer.ggml.eos_token_id", U32, len(toks) - 1),
            ("tokenizer.ggml.add_bos_token", BOOL, 1),
        ]))
spm = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)] + ["\u2581", "a", "\u2581a"]
with open(os.path.join(HERE, "llama.gguf"), "wb") as f:
    f.write(gguf([
        ("tokenizer.ggml.model", STR, "llama"),
        ("tokenizer.ggml.tokens", ARR, (STR, spm)),
        ("tokenizer.ggml.token_type", ARR, (I32, [2, 3, 3] + [6] * 256 + [1, 1, 1])),
        ("tokenizer.ggml.bos_token_id", U32, 1),
        ("tokenizer.ggml.eos_token_id", U32, 2),
    ]))
