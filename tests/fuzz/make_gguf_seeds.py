#!/usr/bin/env python3
"""Writes the tiny GGUF seed files in corpus/gguf/ for fuzz_gguf.

Built byte by byte here rather than with our own writer, so the seeds also
check that the reader accepts files it did not produce. Run from anywhere:
    python3 tests/fuzz/make_gguf_seeds.py
"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "gguf")

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
FMT = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", BOOL: "B", U64: "Q", I64: "q", F64: "d"}


def s(x):
    b = x.encode() if isinstance(x, str) else x
    return struct.pack("<Q", len(b)) + b


def value(t, v):
    if t == STR:
        return s(v)
    if t == ARR:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(value(et, i) for i in items)
    return struct.pack("<" + FMT[t], v)


def gguf(kvs, tensors=(), version=3, align=32):
    """kvs: [(key, type, value)]; tensors: [(name, ne, dtype, data bytes)]."""
    infos, blob = b"", b""
    for name, ne, dtype, data in tensors:
        blob += b"\0" * (-len(blob) % align)
        infos += s(name) + struct.pack("<I", len(ne)) + struct.pack("<%dQ" % len(ne), *ne)
        infos += struct.pack("<IQ", dtype, len(blob))
        blob += data
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    out += b"".join(s(k) + struct.pack("<I", t) + value(t, v) for k, t, v in kvs)
    out += infos
    if tensors:
        out += b"\0" * (-len(out) % align) + blob
    return out


seeds = {
    "empty.gguf": gguf([]),
    "all-types-v2.gguf": gguf([
        ("u8", U8, 200), ("i8", I8, -100), ("u16", U16, 60000), ("i16", I16, -30000),
        ("u32", U32, 4000000000), ("i32", I32, -2000000000), ("f32", F32, 1.5), ("bool", BOOL, 1),
        ("str", STR, "h\u00e9"), ("nested", ARR, (ARR, [(U16, [1, 2]), (STR, ["x"]), (ARR, [(I8, [])])])),
        ("u64", U64, 2**63 + 5), ("i64", I64, -2**62), ("f64", F64, -0.1),
    ], version=2),
    "vocab.gguf": gguf([
        ("general.architecture", STR, "llama"),
        ("tokenizer.ggml.model", STR, "llama"),
        ("tokenizer.ggml.tokens", ARR, (STR, ["<unk>", "<s>", "</s>", "", "\u2581the", "\U0001f999"])),
        ("tokenizer.ggml.scores", ARR, (F32, [0.0, 0.0, 0.0, -1.0, -2.5, -9.0])),
        ("tokenizer.ggml.token_type", ARR, (I32, [2, 3, 3, 1, 1, 1])),
        ("tokenizer.ggml.add_bos_token", BOOL, 1),
        ("tokenizer.ggml.bos_token_id", U32, 1),
        ("flags", ARR, (BOOL, [0, 1, 1])),
    ]),
    "tensors.gguf": gguf(
        [("general.architecture", STR, "llama"), ("llama.block_count", U32, 1)],
        [("token_embd.weight", [4, 2], 0, struct.pack("<8f", *range(8))),
         ("blk.0.attn_q.weight", [32, 1], 8, bytes(range(34))),
         ("output_norm.weight", [3], 1, b"\x00\x3c\x00\x40\x00\x42")]),
    "align64.gguf": gguf(
        [("general.alignment", U32, 64)],
        [("a", [2, 1, 1, 2], 0, struct.pack("<4f", 1, 2, 3, 4)), ("b", [1], 26, b"\x07\0\0\0")],
        align=64),
}

os.makedirs(OUT, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
    print("%s: %d bytes" % (name, len(data)))
