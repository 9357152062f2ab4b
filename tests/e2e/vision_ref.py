#!/usr/bin/python3
"""An independent reference for edgellm's vision path, written from the GGUF
format, the LLaVA/CLIP/SigLIP architecture and docs/vision.md (the
preprocessing), never from edgellm's code. numpy only (Debian's python3-numpy).

  vision_ref.py images DIR
      writes test images with known pixels: a.png (40x40 noise), b.jpg (48x32,
      baseline JPEG written here), c.png (50x30 noise, non-square); beside
      each, NAME.npy holds its RGB pixels [h][w][3].
  vision_ref.py check PROJ.gguf EMB.f32 IMG.npy [IMG.npy ...] [--pixels PIX.f32] [--tol T]
      encodes each image in float64 and compares with edgellm embed-image's
      output (max |diff| / max |ref| per image); exit 1 above the tolerance.
"""
import math
import random
import struct
import sys
import zlib

import numpy as np

# ---------------------------------------------------------------- GGUF


class Gguf:
    """GGUF v2/v3: header, key/values, tensor infos, aligned data section."""

    def __init__(self, path):
        self.b = open(path, 'rb').read()
        self.o = 0
        magic, = self.u('<I')
        assert magic == 0x46554747, 'not a GGUF file'
        self.version, = self.u('<I')
        n_tensors, n_kv = self.u('<QQ')
        self.kv = {}
        for _ in range(n_kv):
            k = self.s()
            t, = self.u('<I')
            self.kv[k] = self.val(t)
        infos = []
        for _ in range(n_tensors):
            name = self.s()
            nd, = self.u('<I')
            ne = list(self.u('<%dQ' % nd))
            t, off = self.u('<IQ')
            infos.append((name, ne, t, off))
        align = self.kv.get('general.alignment', 32)
        base = (self.o + align - 1) // align * align
        self.t = {name: (ne, t, base + off) for name, ne, t, off in infos}

    def u(self, fmt):
        v = struct.unpack_from(fmt, self.b, self.o)
        self.o += struct.calcsize(fmt)
        return v

    def s(self):
        n, = self.u('<Q')
        v = self.b[self.o:self.o + n].decode()
        self.o += n
        return v

    SCALAR = {0: '<B', 1: '<b', 2: '<H', 3: '<h', 4: '<I', 5: '<i', 6: '<f', 7: '<?', 10: '<Q', 11: '<q', 12: '<d'}

    def val(self, t):
        if t == 8:
            return self.s()
        if t == 9:
            at, n = self.u('<IQ')
            return [self.val(at) for _ in range(n)]
        return self.u(self.SCALAR[t])[0]

    def tensor(self, name):
        """float64 array in numpy order (reversed GGUF ne: slowest first)."""
        ne, t, off = self.t[name]
        n = int(np.prod(ne))
        if t == 0:
            a = np.frombuffer(self.b, np.float32, n, off)
        elif t == 1:
            a = np.frombuffer(self.b, np.float16, n, off)
        elif t == 30:  # bf16: the high half of an f32
            a = (np.frombuffer(self.b, np.uint16, n, off).astype(np.uint32) << 16).view(np.float32)
        elif t == 8:  # q8_0: blocks of f16 scale + 32 int8
            blk = np.frombuffer(self.b, np.uint8, n // 32 * 34, off).reshape(-1, 34)
            d = blk[:, :2].copy().view(np.float16).astype(np.float64)
            q = blk[:, 2:].copy().view(np.int8).astype(np.float64)
            a = (d * q).reshape(-1)
        else:
            raise ValueError('dtype %d of %s' % (t, name))
        return a.astype(np.float64).reshape(list(reversed(ne)))

    def has(self, name):
        return name in self.t

# ---------------------------------------------------------------- images


def png_bytes(rgb):
    h, w, _ = rgb.shape
    raw = b''.join(b'\x00' + rgb[y].tobytes() for y in range(h))

    def chunk(t, d):
        return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0)) +
            chunk(b'IDAT', zlib.compress(raw, 9)) + chunk(b'IEND', b''))


class Bits:
    def __init__(self):
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def put(self, code, length):
        for i in range(length - 1, -1, -1):
            self.acc = self.acc << 1 | (code >> i & 1)
            self.n += 1
            if self.n == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:
                    self.out.append(0)  # byte stuffing
                self.acc = self.n = 0

    def flush(self):
        while self.n:
            self.put(1, 1)  # pad with ones
        return bytes(self.out)


def huff_codes(bits, vals):
    """Canonical Huffman codes from the JPEG table form (counts per length)."""
    codes, code, k = {}, 0, 0
    for length in range(1, 17):
        for _ in range(bits[length - 1]):
            codes[vals[k]] = (code, length)
            code += 1
            k += 1
        code <<= 1
    return codes


def jpeg_blocks(w, h, seed):
    """Flat 8x8 blocks: a DC-only JPEG decodes to the same pixels in every
    conforming decoder (no IDCT rounding), and the colours are chosen so that
    the YCbCr -> RGB conversion is at least 0.15 away from a rounding edge."""
    r = random.Random(seed)
    blocks, rgb = [], np.zeros((h, w, 3), np.uint8)
    for by in range(h // 8):
        for bx in range(w // 8):
            while True:
                y, cb, cr = r.randrange(32, 224), r.randrange(64, 192), r.randrange(64, 192)
                f = [y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128), y + 1.772 * (cb - 128)]
                if all(0 <= v <= 255 and abs(v - math.floor(v) - 0.5) > 0.15 for v in f):
                    break
            blocks.append((y, cb, cr))
            rgb[by * 8:by * 8 + 8, bx * 8:bx * 8 + 8] = [int(math.floor(v + 0.5)) for v in f]
    return blocks, rgb


def jpeg_bytes(w, h, blocks):
    dc_bits = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    dc_vals = list(range(12))
    dc = huff_codes(dc_bits, dc_vals)

    def seg(m, payload):
        return bytes([0xFF, m]) + struct.pack('>H', len(payload) + 2) + payload
    out = b'\xff\xd8'
    out += seg(0xE0, b'JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00')
    out += seg(0xDB, b'\x00' + bytes([1] * 64))  # quantisation table 0: all ones
    out += seg(0xC0, struct.pack('>BHHB', 8, h, w, 3) + bytes([1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0]))
    out += seg(0xC4, b'\x00' + bytes(dc_bits) + bytes(dc_vals))  # DC table 0
    out += seg(0xC4, b'\x10' + bytes([1] + [0] * 15) + b'\x00')  # AC table 0: only EOB, code "0"
    out += seg(0xDA, bytes([3, 1, 0x00, 2, 0x00, 3, 0x00, 0, 63, 0]))
    bits, pred = Bits(), [0, 0, 0]
    for blk in blocks:  # 4:4:4: an MCU is one block of each component
        for c in range(3):
            coef = 8 * (blk[c] - 128)  # DC of a flat block of value v is 8(v - 128)
            diff = coef - pred[c]
            pred[c] = coef
            cat = 0 if diff == 0 else abs(diff).bit_length()
            code, length = dc[cat]
            bits.put(code, length)
            if cat:
                bits.put(diff if diff > 0 else diff + (1 << cat) - 1, cat)
            bits.put(0, 1)  # EOB
    return out + bits.flush() + b'\xff\xd9'


def make_images(d):
    r = np.random.default_rng(7)
    a = r.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    open(d + '/a.png', 'wb').write(png_bytes(a))
    np.save(d + '/a.png.npy', a)
    blocks, b = jpeg_blocks(48, 32, 11)
    open(d + '/b.jpg', 'wb').write(jpeg_bytes(48, 32, blocks))
    np.save(d + '/b.jpg.npy', b)
    c = r.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    open(d + '/c.png', 'wb').write(png_bytes(c))
    np.save(d + '/c.png.npy', c)

# ---------------------------------------------------------------- preprocessing


def cubic(x):
    a = -0.5
    if x < 0:
        x = -x
    if x < 1:
        return ((a + 2) * x - (a + 3)) * x * x + 1
    if x < 2:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def taps(in_size, out_size, off, n):
    """Per output: first input and normalised weights (docs/vision.md)."""
    scale = in_size / out_size
    fs = scale if scale > 1 else 1.0
    support, ss = 2.0 * fs, 1.0 / fs
    res = []
    for i in range(n):
        center = (i + off + 0.5) * scale
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), in_size)
        w = [cubic((x + lo - center + 0.5) * ss) for x in range(hi - lo)]
        total = 0.0
        for v in w:
            total += v
        if total != 0:
            w = [v / total for v in w]
        res.append((lo, w))
    return res


def resample(src, tw, th, cx, cy, nw, nh):
    """The picture resized to tw x th; the window [cx, cx+nw) x [cy, cy+nh)
    of it, rounded to 8 bits (docs/vision.md): horizontal pass into float32
    rows, then vertical, taps summed in order in float64."""
    h, w, _ = src.shape
    src = src.astype(np.float64)
    tx, ty = taps(w, tw, cx, nw), taps(h, th, cy, nh)
    tmp = np.zeros((h, nw, 3), np.float64)
    for o, (lo, wt) in enumerate(tx):
        acc = np.zeros((h, 3))
        for t, k in enumerate(wt):
            acc = acc + k * src[:, lo + t, :]
        tmp[:, o, :] = acc
    tmp = tmp.astype(np.float32).astype(np.float64)  # the intermediate is stored as f32
    out = np.zeros((nh, nw, 3), np.float64)
    for o, (lo, wt) in enumerate(ty):
        acc = np.zeros((nw, 3))
        for t, k in enumerate(wt):
            acc = acc + k * tmp[lo + t, :, :]
        out[o] = acc
    return np.clip(np.floor(out + 0.5), 0, 255)


def preprocess(rgb, n, mean, std, pad):
    h, w, _ = rgb.shape
    if pad:  # fit n x n keeping the shape, centred on a square of the mean colour (truncated to 8 bits)
        scale = min(n / w, n / h)
        nw, nh = max(min(math.ceil(w * scale), n), 1), max(min(math.ceil(h * scale), n), 1)
        canvas = np.empty((n, n, 3), np.float64)
        canvas[:, :] = [min(max(int(float(m) * 255.0), 0), 255) for m in mean]
        ox, oy = (n - nw) // 2, (n - nh) // 2
        canvas[oy:oy + nh, ox:ox + nw] = resample(rgb, nw, nh, 0, 0, nw, nh)
    else:  # short side to n, then the middle n x n
        if w <= h:
            tw, th = n, int(n * h / w)
        else:
            th, tw = n, int(n * w / h)
        canvas = resample(rgb, tw, th, (tw - n) // 2, (th - n) // 2, n, n)
    u8 = canvas.astype(np.float32)
    m, s = np.array(mean, np.float32), np.array(std, np.float32)
    x = (u8 / np.float32(255.0) - m) / s  # float32 arithmetic, as specified
    return x.transpose(2, 0, 1).astype(np.float64)  # [3][n][n]

# ---------------------------------------------------------------- the encoder


def layernorm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def gelu_quick(x):
    return x / (1 + np.exp(-1.702 * x))


def encode(g, pixels):
    kv = g.kv
    n, p = kv['clip.vision.image_size'], kv['clip.vision.patch_size']
    hid, heads = kv['clip.vision.embedding_length'], kv['clip.vision.attention.head_count']
    ff, eps = kv['clip.vision.feed_forward_length'], kv['clip.vision.attention.layer_norm_epsilon']
    blocks = kv['clip.vision.block_count']
    act = gelu if kv.get('clip.use_gelu', False) else gelu_quick
    fl = kv.get('clip.vision.feature_layer')
    n_run = blocks - 1 if fl is None else (fl[0] if isinstance(fl, list) else fl)
    side = n // p
    # patch embedding: a stride-P convolution, kernel [out][channel][ky][kx]
    k = g.tensor('v.patch_embd.weight')
    patches = pixels.reshape(3, side, p, side, p).transpose(1, 3, 0, 2, 4).reshape(side * side, 3 * p * p)
    x = patches @ k.reshape(hid, -1).T
    if g.has('v.patch_embd.bias'):
        x = x + g.tensor('v.patch_embd.bias')
    cls = g.has('v.class_embd')
    if cls:
        x = np.vstack([g.tensor('v.class_embd')[None, :], x])
    x = x + g.tensor('v.position_embd.weight')
    if g.has('v.pre_ln.weight'):
        x = layernorm(x, g.tensor('v.pre_ln.weight'), g.tensor('v.pre_ln.bias'), eps)
    up0 = g.tensor('v.blk.0.ffn_up.weight')
    swapped = up0.shape[-1] != hid  # fc1 maps hidden -> ff: its rows are hidden long
    fc1n, fc2n = ('ffn_down', 'ffn_up') if swapped else ('ffn_up', 'ffn_down')
    hd = hid // heads
    for l in range(n_run):
        def t(name):
            return g.tensor('v.blk.%d.%s' % (l, name))
        y = layernorm(x, t('ln1.weight'), t('ln1.bias'), eps)
        q = y @ t('attn_q.weight').T + t('attn_q.bias')
        kk = y @ t('attn_k.weight').T + t('attn_k.bias')
        v = y @ t('attn_v.weight').T + t('attn_v.bias')
        att = np.zeros_like(q)
        for h in range(heads):
            sl = slice(h * hd, (h + 1) * hd)
            s = q[:, sl] @ kk[:, sl].T / math.sqrt(hd)
            s = np.exp(s - s.max(-1, keepdims=True))
            att[:, sl] = (s / s.sum(-1, keepdims=True)) @ v[:, sl]
        x = x + att @ t('attn_out.weight').T + t('attn_out.bias')
        y = layernorm(x, t('ln2.weight'), t('ln2.bias'), eps)
        y = act(y @ t(fc1n + '.weight').T + t(fc1n + '.bias'))
        x = x + y @ t(fc2n + '.weight').T + t(fc2n + '.bias')
    if g.has('v.post_ln.weight'):
        x = layernorm(x, g.tensor('v.post_ln.weight'), g.tensor('v.post_ln.bias'), eps)
    if cls:
        x = x[1:]
    y = gelu(x @ g.tensor('mm.0.weight').T + g.tensor('mm.0.bias'))
    return y @ g.tensor('mm.2.weight').T + g.tensor('mm.2.bias')


def check(argv):
    tol, pix_path, files = 1e-4, None, []
    i = 0
    while i < len(argv):
        if argv[i] == '--tol':
            tol = float(argv[i + 1])
            i += 2
        elif argv[i] == '--pixels':
            pix_path = argv[i + 1]
            i += 2
        else:
            files.append(argv[i])
            i += 1
    proj, emb_path, imgs = files[0], files[1], files[2:]
    g = Gguf(proj)
    kv = g.kv
    n = kv['clip.vision.image_size']
    pad = kv.get('clip.vision.image_aspect_ratio', 'pad') == 'pad'
    mean, std = kv['clip.vision.image_mean'], kv['clip.vision.image_std']
    emb = np.fromfile(emb_path, '<f4').astype(np.float64)
    pix = np.fromfile(pix_path, '<f4').astype(np.float64) if pix_path else None
    rows = (n // kv['clip.vision.patch_size']) ** 2
    out_dim = g.t['mm.2.weight'][0][1]
    assert emb.size == len(imgs) * rows * out_dim, 'embeddings: %d values, expected %d' % (
        emb.size, len(imgs) * rows * out_dim)
    worst, pix_bad = 0.0, False
    for i, path in enumerate(imgs):
        x = preprocess(np.load(path), n, mean, std, pad)
        if pix is not None:
            got = pix[i * 3 * n * n:(i + 1) * 3 * n * n].reshape(3, n, n)
            dp = np.abs(got - x).max()
            print('%s: preprocessed input max |diff| %.3g' % (path, dp))
            pix_bad = pix_bad or dp > 1e-6  # the same float32 operations: equal, or an 8-bit step apart
        ref = encode(g, x)
        got = emb[i * rows * out_dim:(i + 1) * rows * out_dim].reshape(rows, out_dim)
        rel = np.abs(got - ref).max() / np.abs(ref).max()
        print('%s: %d x %d embeddings, max |diff| / max |ref| = %.3g (max |ref| %.3g)' % (
            path, rows, out_dim, rel, np.abs(ref).max()))
        worst = max(worst, rel)
    if pix_bad or not worst <= tol:
        print('FAIL: %s' % ('preprocessed inputs differ' if pix_bad else 'above the tolerance %g' % tol))
        return 1
    return 0


if __name__ == '__main__':
    if len(sys.argv) >= 3 and sys.argv[1] == 'images':
        make_images(sys.argv[2])
    elif len(sys.argv) >= 5 and sys.argv[1] == 'check':
        sys.exit(check(sys.argv[2:]))
    else:
        print(__doc__)
        sys.exit(2)
