"""A representative clipprompt session for the leak checkers (valgrind memcheck / LeakSanitizer): every part's
success paths and error paths, a few times each, on tiny models. Run through tests/leakcheck/run_valgrind.sh."""
import json
import os
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
from hardening_util import minilm_vocab, write_tiny_clip, write_tiny_minilm  # noqa: E402

import clipprompt as cp  # noqa: E402

ROUNDS = int(os.environ.get("LEAKCHECK_ROUNDS", "3"))


def expect(exc, fn, *a, **kw):
    try:
        fn(*a, **kw)
    except exc:
        return
    raise AssertionError(f"{fn} did not raise {exc}")


def main():
    tmp = tempfile.mkdtemp(prefix="cp-leak-")
    texts = ["A photo of a cat &amp; ＦＵＬＬ", "我来到北京清华大学", "今日は良い天気ですね。", "ﬁne " * 50]
    for _ in range(ROUNDS):
        # text
        for t in texts:
            cp.normalize(t, lowercase=True)
            cp.clip_clean(t)
            cp.segment(t)
        cp.normalize_batch(texts)
        cp.segment_batch(texts)
        expect(cp.EmptyPromptError, cp.normalize, "   ")
        expect(cp.TokenizerError, cp.normalize, b"\xff")
        expect(cp.InvalidArgumentError, cp.segment, "x", lang="xx")
        if not hasattr(cp, "ClipTokenizer"):
            continue
        tok = cp.ClipTokenizer()
        tok(texts)
        tok.decode(tok.encode(texts[0]))
        expect(cp.TokenizerError, tok, ["word " * 100], truncate=False)
        vocab = minilm_vocab()
        wp = cp.WordPieceTokenizer(vocab)
        wp(texts, max_length=32)
        # encoders
        clip = cp.ClipTextEncoder.from_pretrained(write_tiny_clip(os.path.join(tmp, "clip")))
        v = clip.encode(texts)
        clip.hidden_states(texts[:2], layer=-2)
        d = write_tiny_minilm(os.path.join(tmp, "mini"))
        small = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *list("abcdefghijklmnopqrstuvwxyz")]
        small += ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"] + [".", ",", "&", "photo", "cat", "of", "a"]
        Path(os.path.join(d, "vocab.txt")).write_text("\n".join(small[:64]) + "\n")
        mini = cp.MiniLMEncoder.from_pretrained(d)
        mini.encode(texts)
        bad = os.path.join(tmp, "bad")
        os.makedirs(bad, exist_ok=True)
        Path(os.path.join(bad, "config.json")).write_text(json.dumps({"hidden_size": 10**12}))
        Path(os.path.join(bad, "model.safetensors")).write_bytes(struct.pack("<Q", 2**63) + b"{}")
        expect(cp.ModelFormatError, cp.ClipTextEncoder.from_pretrained, bad)
        expect(cp.ModelFormatError, cp.MiniLMEncoder.from_pretrained, bad)
        raw = Path(os.path.join(tmp, "clip", "model.safetensors")).read_bytes()
        Path(os.path.join(bad, "model.safetensors")).write_bytes(raw[: len(raw) // 2])
        Path(os.path.join(bad, "config.json")).write_text(json.dumps(clip.config | {"hidden_act": "quick_gelu"}))
        expect(cp.ModelFormatError, cp.ClipTextEncoder.from_pretrained, bad)
        # cache
        cache = cp.PromptCache(capacity_bytes=4096)
        for i in range(40):
            cache.put(clip.fingerprint, f"t{i}", v[i % len(v)])
            cache.get(clip.fingerprint, f"t{i // 2}")
        cache.get_or_encode(clip, [*texts, "new prompt"])
        expect(cp.InvalidArgumentError, cache.put, "fp", "nan", np.array([np.nan], np.float32))
        p = os.path.join(tmp, "c.cpc")
        cache.save(p)
        cp.PromptCache.load(p).stats()
        with open(p, "r+b") as f:
            f.write(b"XXXX")
        expect(cp.IndexStateError, cp.PromptCache.load, p)
        expect(cp.FileAccessError, cache.save, os.path.join(tmp, "no", "dir"))
        # index
        for dt in ("float32", "float16"):
            ix = cp.FlatIPIndex(clip.dim, dtype=dt)
            ix.add(v)
            ix.add(v, ids=np.arange(100, 100 + len(v), dtype=np.int64))
            ix.search(v, 3)
            ix.search(v[:1], 50)
            ix.remove_ids(np.array([1, 100], np.int64))
            ix.reconstruct(2)
            expect(cp.InvalidArgumentError, ix.add, np.full((1, clip.dim), np.nan, np.float32))
            expect(cp.IndexStateError, ix.reconstruct, 999)
            q = os.path.join(tmp, "i.cpi")
            ix.save(q)
            cp.FlatIPIndex.load(q).search(v, 2)
            data = Path(q).read_bytes()
            Path(q).write_bytes(data[:-3])
            expect(cp.IndexStateError, cp.FlatIPIndex.load, q)
            ix.reset()
    print("representative session done")


if __name__ == "__main__":
    main()
